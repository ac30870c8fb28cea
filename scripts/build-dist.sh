#!/usr/bin/env bash
# Builds the agentsup that the container image ships and the benchmarks measure,
# into target/build-dist/agentsup.
#
#   scripts/build-dist.sh            # static PIE, full RELRO, code laid out (below)
#   scripts/build-dist.sh --no-pie   # opt-in: static non-PIE, 0.2 MB less RSS, no ASLR
#
# On x86-64 Linux with glibc (lld, Rust's default linker there since 1.90):
# 1. `cargo build --profile dist` (fat LTO, opt-level "s"), linked statically
#    (`crt-static`): no dynamic loader, no shared libc to map.
# 2. A training run (scripts/layout/train.sh) under valgrind's callgrind records
#    which functions `agentsup run` executes; scripts/layout/order.py lists them.
# 3. The binary is built again with that list as lld's symbol ordering, so the
#    code a supervisor runs sits together and the rest is never mapped; order.py
#    checks that it did.
# On any other platform it is a plain `cargo build --profile dist`, and says so.
#
# A PIE by default, with full RELRO and BIND_NOW (scripts/check-elf.sh checks the
# result): ASLR then places the binary's own code and data, including the
# redactor that reaches every secret (redact::GLOBAL), at a random address. A
# non-PIE (--no-pie) keeps them at fixed addresses, as Go builds its Linux
# binaries: relocated pointers no longer dirty their pages at start-up, so with
# 200 workers agentsup and its guard take 4.9 MB of RSS instead of 5.1 MB (PSS the
# same, 4.4 MB; a PIE with unpacked relocations took 5.4 MB; plain `cargo build
# --profile dist`, dynamic and not laid out: 9.4 MB). That trade is the
# operator's to make, not the default.
#
# Needs: cargo, gcc, python3, valgrind, nm and readelf (binutils). About 5 minutes
# on 2 cores (3 with --no-pie); the training run only lays code out, it measures
# nothing.
set -euo pipefail
# This script sets RUSTFLAGS itself (cargo would prefer the encoded form).
unset CARGO_ENCODED_RUSTFLAGS
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
pie=1
case "${1:-}" in
  --no-pie) pie=0 ;;
  --pie | "") ;;  # --pie: the default, still accepted
  *) echo "usage: scripts/build-dist.sh [--no-pie]" >&2; exit 2 ;;
esac
out="$root/target/build-dist/agentsup"
mkdir -p "$(dirname "$out")"
host="$(rustc -vV | sed -n 's/^host: //p')"

if [ "$host" != x86_64-unknown-linux-gnu ]; then
  echo "build-dist: $host: no static layout here (it needs glibc's static libc and lld); plain cargo build --profile dist" >&2
  cargo build --profile dist --locked --bin agentsup --quiet
  cp target/dist/agentsup "$out"
  echo "build-dist: $out" >&2
  exit 0
fi
for tool in valgrind nm python3; do
  command -v "$tool" > /dev/null || { echo "build-dist: $tool is needed (apt-get install valgrind binutils python3)" >&2; exit 1; }
done

# The training build and its layout are always the non-PIE one: callgrind
# reports the addresses a PIE ran at, not the ones nm lists. Symbol names are
# the same in both, so the order carries over to the PIE.
static="-C target-feature=+crt-static"
train_dir="target/x86_64-unknown-linux-gnu/dist"
echo "build-dist: cargo build --profile dist --target $host (static)" >&2
RUSTFLAGS="$static -C relocation-model=static" \
  cargo build --profile dist --locked --target "$host" --bin agentsup --quiet
trained="$root/$train_dir/agentsup-trained"
cp "$train_dir/agentsup" "$trained"

echo "build-dist: training run under callgrind" >&2
runs="$(mktemp -d)"; trap 'rm -rf "$runs"' EXIT
# --dump-before: a dump at the fork that starts the guard splits agentsup's start-up
# from what the guard runs after it (a forked child inherits the costs so far).
bash scripts/layout/train.sh "$trained" valgrind --tool=callgrind --dump-instr=yes \
  --compress-pos=no --compress-strings=no --dump-before='*fork' \
  --callgrind-out-file="$runs/cg.%p" -q
python3 scripts/layout/order.py "$trained" "$runs"/cg.* > "$runs/order.txt"
# Named by its content: cargo reruns the link only when its arguments change, and
# a new order under the same name would leave the last layout in place.
order="$root/target/build-dist/order-$(sha256sum "$runs/order.txt" | cut -c1-16).txt"
mv "$runs/order.txt" "$order"

# `cargo rustc` passes the link arguments to the binary only, so the dependencies
# are not rebuilt; fat LTO makes the binary's own step the long one anyway.
link=(-C "link-arg=-Wl,--symbol-ordering-file=$order" -C link-arg=-Wl,--no-warn-symbol-ordering)
if [ "$pie" -eq 1 ]; then
  echo "build-dist: building again as a static PIE, with the code a supervisor runs placed together" >&2
  # Relative relocations packed (DT_RELR, glibc >= 2.36, which the static link
  # carries along): a table of a few KB to apply at start-up instead of 24 bytes
  # per pointer, mapped and read by every start.
  RUSTFLAGS="$static" CARGO_TARGET_DIR="$root/target/build-dist/pie" \
    cargo rustc --profile dist --locked --target "$host" --bin agentsup --quiet -- "${link[@]}" \
    -C link-arg=-Wl,-z,pack-relative-relocs
  built="$root/target/build-dist/pie/$host/dist/agentsup"
else
  echo "build-dist: building again with the code a supervisor runs placed together" >&2
  RUSTFLAGS="$static -C relocation-model=static" \
    cargo rustc --profile dist --locked --target "$host" --bin agentsup --quiet -- "${link[@]}"
  built="$root/$train_dir/agentsup"
fi
python3 scripts/layout/order.py --verify "$built" "$order"
if [ "$pie" -eq 1 ]; then
  scripts/check-elf.sh "$built"
fi
cp "$built" "$out"
echo "build-dist: $out" >&2
