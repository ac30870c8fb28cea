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
dir="$(realpath "$(mktemp -d)")"
pid=""
cleanup() {
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
cd "$dir"

# Waits (up to 60 s) until no process runs in this directory any more: the guard
# outlives agentsup by a moment, and under valgrind it writes its profile then.
settle() {
  local t=0 busy
  while [ "$t" -lt 600 ]; do
    busy=0
    for cwd in /proc/[0-9]*/cwd; do
      [ "$(readlink "$cwd" 2>/dev/null)" = "$dir" ] && [ "$cwd" != "/proc/$$/cwd" ] && busy=1 && break
    done
    [ "$busy" -eq 0 ] && return
    sleep 0.1; t=$((t + 1))
  done
  echo "train: processes still running in $dir after 60 s" >&2
}

# run_until MAX_SECONDS CONDITION [agentsup run options]: runs agentsup on
# supervisor.toml until the shell test CONDITION holds, then stops it. Fails
# when agentsup exits first or CONDITION does not hold within MAX_SECONDS;
# CONDITION "false" just runs it for MAX_SECONDS.
run_until() {
  local max="$1" cond="$2"; shift 2
  : > out.log
  "${wrap[@]}" "$bin" run -c supervisor.toml --no-color "$@" > out.log 2>&1 &
  pid=$!
  local t=0
  while ! eval "$cond" && [ "$t" -lt "$((max * 10))" ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "train: agentsup exited before [$cond] held; its output:" >&2
      tail -n 20 out.log >&2
      exit 1
    fi
    sleep 0.1; t=$((t + 1))
  done
  if [ "$cond" != false ] && ! eval "$cond"; then
    echo "train: [$cond] did not hold within $max s; agentsup's output:" >&2
    tail -n 20 out.log >&2
    exit 1
  fi
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || true
  pid=""
  settle
  echo "train: $(grep -c . out.log) lines of output after $((t / 10)) s" >&2
}

# The configs use the keys a real supervisor.toml holds (the training only finds
# the code it runs: parsing a key it never saw maps another 64 KiB at start-up).
mkdir secrets
printf 'LOG_FORMAT_HINT=plain\n' > .env
keys=""
head='[supervisor]
shutdown_timeout = "20s"
on_give_up = "keep"
on_rotation = "restart"

[env]
inherit = ["PATH", "HOME", "LANG", "LC_*", "TZ"]
vars = { LOG_LEVEL = "info" }

[[source]]
type = "dotenv"
path = ".env"
optional = true

[[source]]
type = "dir"
path = "secrets"
'
for i in 0 1 2 3 4 5 6 7 8 9; do
  printf 'sk-train%02d-%s\n' "$i" "$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')" > "secrets/KEY_$i"
  head+="
[keys.KEY_$i]
secret = true
provider = \"none\"
pattern = '^sk-train'
"
  keys+="${keys:+, }\"KEY_$i\""
done
worker='restart = "always"
stop_signal = "SIGTERM"
stop_timeout = "10s"
max_restarts = 10
backoff = { initial = "0s", max = "1s", multiplier = 2.0, jitter = 0.1, reset_after = "30s" }
auth = { exit_codes = [77], max_delay = "5m" }
vars = { AGENT_ROLE = "train" }'

# 1. Fan-out: 200 sleeping workers, all running, then stopped.
printf '%s\n[[worker]]\nname = "w"\ncommand = ["sleep", "1000"]\nreplicas = 200\nkeys = ["KEY_1", "KEY_*"]\n%s\n' \
  "$head" "$worker" > supervisor.toml
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
printf '%s\n[[worker]]\nname = "flood"\ncommand = ["./flood.sh", "f"]\nreplicas = 4\nkeys = [%s]\n%s\n' \
  "$head" "$keys" "$worker" > supervisor.toml
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
printf '%s\n[[worker]]\nname = "crash"\ncommand = ["sh", "-c", "sleep 0.05; exit 1"]\nreplicas = 4\nbackoff = { initial = "0s", max = "0s", multiplier = 1.0, jitter = 0.0 }\nmax_restarts = 0\n\n[[worker]]\nname = "auth"\ncommand = ["./reject.sh"]\nkeys = ["KEY_0"]\n%s\n' \
  "$head" "$worker" > supervisor.toml
run_until 5 'false'
