#!/usr/bin/env bash
# Idempotent: creates target/test-venv from tests/requirements.txt and runs `npm ci`
# for the Node examples. Called by .ci/run and, on first use, by the tests
# themselves (tests/support: `test_venv_python()`), so `cargo test` alone works on a
# fresh machine. Re-runs only when a requirements or lock file changed.
set -euo pipefail
shopt -s nullglob
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/test-venv"
stamp="$venv/.stamp"
want="$(cat "$root/tests/requirements.txt" "$root"/examples/*/requirements.txt | sha256sum | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup-deps: creating $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/tests/requirements.txt" >&2
  for req in "$root"/examples/*/requirements.txt; do
    [ -f "$req" ] && "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
  done
  echo "$want" > "$stamp"
fi
# redis-server for the Celery hook's test (python/tests/test_celery.py).
if ! command -v redis-server >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup-deps: installing redis-server (apt-get)" >&2
    apt-get install -y -q redis-server >&2 || { apt-get update -q >&2 && apt-get install -y -q redis-server >&2; }
  else
    echo "setup-deps: redis-server is missing; install it (Debian/Ubuntu: sudo apt-get install redis-server)" >&2
    exit 1
  fi
fi
for lock in "$root"/examples/*/package-lock.json; do
  [ -f "$lock" ] || continue
  dir="$(dirname "$lock")"
  lstamp="$dir/node_modules/.stamp"
  lwant="$(sha256sum "$lock" | cut -d' ' -f1)"
  if [ "$(cat "$lstamp" 2>/dev/null)" != "$lwant" ]; then
    echo "setup-deps: npm ci in $dir" >&2
    (cd "$dir" && npm ci --silent --no-audit --no-fund >&2)
    echo "$lwant" > "$lstamp"
  fi
done
