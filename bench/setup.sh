#!/usr/bin/env bash
# Idempotent set-up for the benchmark suite (issue 7). Safe to re-run: each step is
# skipped when its inputs have not changed.
#   1. bench/.venv: supervisord, honcho, circus and W6's openai/langgraph/
#      langchain-openai, pinned by bench/requirements.txt (a pip freeze of
#      bench/requirements.in).
#   2. PM2 in bench/node_modules from bench/package-lock.json (npm ci).
#   3. The floor launcher and the workers (C, gcc) into bench/.build/.
#   4. scripts/build-dist.sh: the static, laid-out build the container image ships
#      (target/build-dist/agentsup), rebuilt when the sources or the toolchain
#      changed. It needs valgrind, installed with apt-get here when missing (as
#      root or with sudo), and nm (binutils).
# Needs python3 (>= 3.9) with venv, node + npm, gcc, cargo (Rust >= 1.90).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
py="${PYTHON:-python3}"

venv="$here/.venv"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating $venv" >&2
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
  echo "$want" > "$venv/.stamp"
fi

lwant="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"
if [ ! -x "$here/node_modules/.bin/pm2-runtime" ] || [ "$(cat "$here/node_modules/.stamp" 2>/dev/null)" != "$lwant" ]; then
  echo "setup: npm ci in $here (pm2)" >&2
  (cd "$here" && npm ci --silent --no-audit --no-fund >&2)
  echo "$lwant" > "$here/node_modules/.stamp"
fi

mkdir -p "$here/.build"
build_c() { # out src: rebuilt when the source's hash differs from the last build's
  local want
  want="$(sha256sum "$here/$2" | cut -d' ' -f1)"
  if [ ! -x "$here/.build/$1" ] || [ "$(cat "$here/.build/$1.stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: gcc $2" >&2
    gcc -O2 -Wall -Wextra -o "$here/.build/$1" "$here/$2"
    echo "$want" > "$here/.build/$1.stamp"
  fi
}
build_c floor floor/floor.c
build_c ready workers/ready.c
build_c flood workers/flood.c

if ! command -v valgrind > /dev/null; then
  echo "setup: apt-get install valgrind (for scripts/build-dist.sh)" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >&2
  $sudo apt-get install -y -qq valgrind >&2
fi
bin="$root/target/build-dist/agentsup"
dwant="$(cd "$root" && { rustc -vV; find Cargo.toml Cargo.lock src scripts -type f -print0 | sort -z | xargs -0 sha256sum; } | sha256sum | cut -d' ' -f1)"
if [ ! -x "$bin" ] || [ "$(cat "$bin.stamp" 2>/dev/null)" != "$dwant" ]; then
  echo "setup: scripts/build-dist.sh" >&2
  "$root/scripts/build-dist.sh"
  echo "$dwant" > "$bin.stamp"
fi
echo "setup: done; now run bench/run.sh --quick (or bench/run.sh for the full suite)" >&2
