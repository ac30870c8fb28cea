#!/usr/bin/env bash
# Builds the agentsup that the container image ships and the benchmarks measure:
#
#   target/x86_64-unknown-linux-gnu/dist/agentsup
#
# 1. `cargo build --profile dist` (fat LTO, opt-level "s"), linked statically
#    (`crt-static`, no PIE): no dynamic loader, no shared libc to map, no
#    relocations to write at start-up. Linux x86-64, glibc.
# 2. A training run (scripts/layout/train.sh) under valgrind's callgrind records
#    which functions `agentsup run` executes; scripts/layout/order.py lists them.
# 3. The binary is linked again with that list as lld's symbol ordering, so the
#    code a supervisor runs sits together and the rest is never mapped.
#
# Measured with 200 workers (bench/README.md): RSS of agentsup and its guard
# 9.4 MB with a plain `cargo build --profile dist`, 5.0 MB built here. Speed
# is the same (the same code, placed differently).
#
# Needs: cargo (Rust >= 1.90, whose x86-64 Linux linker is lld), gcc, python3,
# valgrind, nm (binutils). Takes about 4 minutes on 2 cores.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
target=x86_64-unknown-linux-gnu
out="$root/target/$target/dist/agentsup"
export RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static"

for tool in valgrind nm python3; do
  command -v "$tool" > /dev/null || { echo "build-dist: $tool is needed (apt-get install valgrind binutils python3)" >&2; exit 1; }
done

echo "build-dist: cargo build --profile dist --target $target (static)" >&2
cargo build --profile dist --locked --target "$target" --bin agentsup --quiet

echo "build-dist: training run under callgrind" >&2
runs="$(mktemp -d)"; trap 'rm -rf "$runs"' EXIT
bash scripts/layout/train.sh "$out" valgrind --tool=callgrind --dump-instr=yes \
  --compress-pos=no --compress-strings=no --zero-before="*guard_main*" \
  --callgrind-out-file="$runs/cg.%p" -q
python3 scripts/layout/order.py "$out" "$runs"/cg.* > target/$target/dist/order.txt

echo "build-dist: linking with the code a supervisor runs placed together" >&2
cargo rustc --profile dist --locked --target "$target" --bin agentsup --quiet -- \
  -C link-arg=-Wl,--symbol-ordering-file="$root/target/$target/dist/order.txt" \
  -C link-arg=-Wl,--no-warn-symbol-ordering
echo "build-dist: $out" >&2
