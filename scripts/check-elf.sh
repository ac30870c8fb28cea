#!/usr/bin/env bash
# Checks that an ELF binary keeps the hardening agentsup ships with (issue 12):
#   - a position-independent executable (ELF type DYN), so ASLR places its code
#     and data, redact::GLOBAL included, at a random address;
#   - full RELRO: a GNU_RELRO segment and BIND_NOW (DT_BIND_NOW or DF_1_NOW), so
#     the relocated pointers are read-only once the program runs.
#
#   scripts/check-elf.sh target/build-dist/agentsup
#
# Needs readelf (binutils). Exit 0 when every property holds, 1 otherwise (each
# missing one is named), 2 on a usage error.
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: scripts/check-elf.sh BINARY" >&2
  exit 2
fi
bin="$1"
command -v readelf > /dev/null || { echo "check-elf: readelf is needed (apt-get install binutils)" >&2; exit 2; }
[ -f "$bin" ] || { echo "check-elf: $bin: no such file" >&2; exit 2; }
header="$(LC_ALL=C readelf -h "$bin")" || { echo "check-elf: $bin: not an ELF file" >&2; exit 2; }
failed=0
type="$(sed -n 's/^ *Type: *\([A-Z]*\).*/\1/p' <<< "$header")"
if [ "$type" != DYN ]; then
  echo "check-elf: $bin: ELF type is ${type:-unknown}, not DYN: not a PIE (its code and data sit at fixed addresses)" >&2
  failed=1
fi
if ! LC_ALL=C readelf -lW "$bin" | grep -q '^ *GNU_RELRO'; then
  echo "check-elf: $bin: no GNU_RELRO segment (link with -z relro)" >&2
  failed=1
fi
dynamic="$(LC_ALL=C readelf -dW "$bin")"
if ! grep -Eq '\(BIND_NOW\)|\(FLAGS\).*BIND_NOW|\(FLAGS_1\).*NOW' <<< "$dynamic"; then
  echo "check-elf: $bin: no BIND_NOW (link with -z now): RELRO is only partial" >&2
  failed=1
fi
if [ "$failed" -eq 0 ]; then
  echo "check-elf: $bin: PIE, full RELRO, BIND_NOW" >&2
fi
exit "$failed"
