#!/usr/bin/env bash
# Runs agentsup through what a supervisor does all day, under a wrapper that
# records which machine code runs (scripts/build-dist.sh passes valgrind's
# callgrind). Used only to lay the binary's code out; never for timing.
#
#   scripts/layout/train.sh AGENTSUP_BIN [WRAPPER ARGS...]
#
# Every run ends with SIGTERM, so agentsup stops its workers and exits normally.
set -euo pipefail
bin="$(realpath "$1")"; shift
wrap=("$@")
dir="$(mktemp -d)"; trap 'rm -rf "$dir"' EXIT
cd "$dir"

# run_until MAX_SECONDS CONDITION [agentsup run options]: runs agentsup on
# supervisor.toml until the shell test CONDITION holds (or MAX_SECONDS pass),
# then stops it.
run_until() {
  local max="$1" cond="$2"; shift 2
  "${wrap[@]}" "$bin" run -c supervisor.toml --no-color "$@" > out.log 2>&1 &
  local pid=$! t=0
  while ! eval "$cond" && [ "$t" -lt "$((max * 10))" ]; do sleep 0.1; t=$((t + 1)); done
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || true
  echo "train: $(grep -c . out.log) lines of output after $((t / 10)) s" >&2
}

mkdir secrets
keys=""
head='[env]
inherit = ["PATH", "HOME", "LANG"]

[[source]]
type = "dir"
path = "secrets"
'
for i in 0 1 2 3 4 5 6 7 8 9; do
  printf 'sk-train%02d-%s\n' "$i" "$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')" > "secrets/KEY_$i"
  head+="
[keys.KEY_$i]
secret = true
"
  keys+="${keys:+, }\"KEY_$i\""
done

# 1. Fan-out: 200 sleeping workers, all running, then stopped.
printf '%s\n[[worker]]\nname = "w"\ncommand = ["sleep", "1000"]\nreplicas = 200\n' \
  "$head" > supervisor.toml
run_until 120 '[ "$(grep -c -- "-> running" out.log)" -ge 200 ]'

# 2. Log flood in both formats, redacting: 4 workers x 20,000 lines, one line
#    holding two secrets, then a marker; they sleep until stopped.
cat > flood.sh <<'SH'
#!/bin/sh
echo "token $KEY_3 and $KEY_7 end"
yes "$1 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789" | head -n 20000
echo "$1 END"
exec sleep 1000
SH
chmod +x flood.sh
printf '%s\n[[worker]]\nname = "flood"\ncommand = ["./flood.sh", "f"]\nreplicas = 4\nkeys = [%s]\n' \
  "$head" "$keys" > supervisor.toml
for fmt in pretty json; do
  run_until 120 '[ "$(grep -c "f END" out.log)" -ge 4 ]' --log-format "$fmt"
done

# 3. Restarts: a crash loop at the smallest delay, and a worker whose key is
#    rejected (an auth failure, so the secrets are re-read and it backs off).
cat > reject.sh <<'SH'
#!/bin/sh
echo "openai.AuthenticationError: Error code: 401 - {'error': {'message': 'Incorrect API key provided', 'code': 'invalid_api_key'}}" >&2
exit 1
SH
chmod +x reject.sh
printf '%s\n[[worker]]\nname = "crash"\ncommand = ["sh", "-c", "sleep 0.05; exit 1"]\nreplicas = 4\nbackoff = { initial = "0s", max = "0s", multiplier = 1.0, jitter = 0.0 }\nmax_restarts = 0\n\n[[worker]]\nname = "auth"\ncommand = ["./reject.sh"]\nkeys = ["KEY_0"]\n' \
  "$head" > supervisor.toml
run_until 5 'false'
