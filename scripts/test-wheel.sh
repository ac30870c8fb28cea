#!/usr/bin/env bash
# Builds the wheel and checks it the way a user meets it: a fresh venv, `pip
# install` of the wheel, no Rust toolchain and no source tree on PATH/PYTHONPATH.
# Then `agentsup --version`, `python -m agentsup --version`, `agentsup check` on the
# demo, and a worker that uses `agentsup.exit_on_auth_error()` with the real openai
# SDK against the demo's fake provider must exit 77 on a revoked key.
# Run by .ci/run; takes a release build (a few minutes on 2 cores).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/build-wheel.sh" >/dev/null
wheel="$(ls -t "$root"/target/wheels/agentsup-*.whl | head -1)"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel" "openai==3.54.0"
clean=(env -i "PATH=$work/venv/bin:/usr/bin:/bin" "HOME=$work" "LANG=C.UTF-8")
if "${clean[@]}" sh -c 'command -v cargo' >/dev/null; then
  echo "test-wheel: cargo is on the clean PATH; the test would not prove anything" >&2; exit 1
fi
echo "wheel: $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB)"
"$root/scripts/check-elf.sh" "$work/venv/bin/agentsup"
"${clean[@]}" agentsup --version
"${clean[@]}" python -m agentsup --version
(cd "$root" && "${clean[@]}" agentsup check >/dev/null) || { echo "test-wheel: agentsup check on the demo failed" >&2; exit 1; }
echo "agentsup check on the demo: ok"

# A revoked key: the fake provider accepts only the key in its key file.
mkdir -p "$work/provider"
echo "sk-proj-TheAcceptedKey0TheAcceptedKey0TheAcc" > "$work/provider/key"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
FAKE_PROVIDER_KEY_FILE="$work/provider/key" FAKE_PROVIDER_PORT="$port" \
  python3 "$root/examples/demo/fake_provider.py" >"$work/provider.log" 2>&1 &
for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null && break; sleep 0.1; done
cat > "$work/worker.py" <<'PY'
import threading, time, openai, agentsup
agentsup.exit_on_auth_error()
def call():
    openai.OpenAI(max_retries=0).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "ping"}])
threading.Thread(target=call).start()
time.sleep(60)
PY
set +e
(cd "$work" && "${clean[@]}" OPENAI_API_KEY=sk-proj-RevokedKey0RevokedKey0RevokedKey0Rev \
  OPENAI_BASE_URL="http://127.0.0.1:$port/v1" python worker.py >"$work/worker.log" 2>&1)
status=$?
set -e
if [ "$status" != 77 ]; then
  echo "test-wheel: the worker exited $status, not 77:" >&2; cat "$work/worker.log" >&2; exit 1
fi
echo "worker with agentsup.exit_on_auth_error() on a revoked key: exit 77"
