#!/usr/bin/env bash
# Builds the PyPI wheel (binary + the Python helper package) into target/wheels/.
# Usage: scripts/build-wheel.sh [extra maturin build args...]
# Needs only Rust and python3: maturin is installed into target/wheel-venv.
#
# Portability: the binary is linked with a static C runtime (as the dist build is),
# so it needs no particular glibc and the wheel is tagged manylinux2014. On a
# musl host (Alpine) the same wheel runs too; see docs/install.md.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/wheel-venv"
if [ ! -x "$venv/bin/maturin" ]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "maturin>=1.9,<2"
fi
target="$(rustc -vV | sed -n 's/^host: //p')"
extra=()
case "$target" in
  x86_64-unknown-linux-gnu|aarch64-unknown-linux-gnu)
    # Static C runtime: no glibc version requirement, so manylinux2014 holds.
    export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"
    extra+=(--compatibility manylinux2014 --target "$target")
    ;;
esac
cd "$root/python"
"$venv/bin/maturin" build --release --out "$root/target/wheels" "${extra[@]}" "$@"
ls -l "$root"/target/wheels/agentsup-*.whl
