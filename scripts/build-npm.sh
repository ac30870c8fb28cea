#!/usr/bin/env bash
# Builds the npm packages into target/npm/, with `npm pack`:
#   agentsup-<version>.tgz              node/agentsup: the `agentsup` command (a small
#                                       launcher, bin/agentsup.cjs) and the worker-side
#                                       helpers (`import {key} from "agentsup"`)
#   agentsup-linux-<cpu>-<version>.tgz  @agentsup/linux-<cpu>: the binary alone, with
#                                       `os`/`cpu` set, so npm installs it only there
# `npm install agentsup` pulls the platform package in as an optional dependency
# (esbuild's and biome's layout); the launcher finds it and runs its binary.
#
# The binary is the wheel's (scripts/build-wheel.sh: a static C runtime, stripped),
# taken out of the wheel, so pip and npm users run the same bytes and CI builds it
# once. It needs no particular libc, so the platform package has no `libc` field:
# one package serves glibc and musl (Alpine) alike.
#
# Usage: scripts/build-npm.sh [--wheel FILE | --binary FILE]
#   (default: scripts/build-wheel.sh, which does nothing costly when up to date)
# Needs python3 and npm (no network).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/target/npm"
wheel="" binary=""
case "${1:-}" in
  --wheel) wheel="$2" ;;
  --binary) binary="$2" ;;
  "") ;;
  *) echo "usage: scripts/build-npm.sh [--wheel FILE | --binary FILE]" >&2; exit 2 ;;
esac
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -1)"
pkg_version="$(node -p 'require(process.argv[1]).version' "$root/node/agentsup/package.json")"
if [ "$pkg_version" != "$version" ]; then
  echo "build-npm: node/agentsup/package.json is version $pkg_version, Cargo.toml $version; make them equal" >&2
  exit 1
fi

rm -rf "$out/stage"
mkdir -p "$out/stage"
if [ -z "$binary" ]; then
  if [ -z "$wheel" ]; then
    "$root/scripts/build-wheel.sh" >/dev/null
    wheel="$(ls -t "$root"/target/wheels/agentsup-"$version"-*.whl | head -1)"
  fi
  binary="$out/stage/agentsup-from-wheel"
  python3 - "$wheel" "agentsup-$version.data/scripts/agentsup" "$binary" <<'PY'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
fi
# The package is named after the binary's machine, read from its ELF header.
cpu="$(python3 - "$binary" <<'PY'
import sys
with open(sys.argv[1], "rb") as f:
    head = f.read(20)
if head[:4] != b"\x7fELF":
    sys.exit("build-npm: %s is not an ELF binary" % sys.argv[1])
machine = int.from_bytes(head[18:20], "little")
print({0x3E: "x64", 0xB7: "arm64"}.get(machine) or sys.exit("build-npm: unknown ELF machine %#x" % machine))
PY
)"
platform_name="@agentsup/linux-$cpu"
plat="$out/stage/linux-$cpu"
mkdir -p "$plat/bin"
install -m 0755 "$binary" "$plat/bin/agentsup"
node - "$plat/package.json" "$platform_name" "$version" "$cpu" <<'JS'
const [file, name, version, cpu] = process.argv.slice(2);
const pkg = {
  name,
  version,
  description: `The agentsup binary for Linux ${cpu} (statically linked: glibc or musl). Installed by the agentsup package; not used directly.`,
  license: 'MIT OR Apache-2.0',
  os: ['linux'],
  cpu: [cpu],
  files: ['bin/agentsup'],
  preferUnplugged: true,
};
require('node:fs').writeFileSync(file, JSON.stringify(pkg, null, 2) + '\n');
JS

main="$out/stage/agentsup"
mkdir -p "$main/bin"
cp "$root"/node/agentsup/{package.json,index.mjs,index.d.ts,README.md} "$main/"
install -m 0755 "$root/node/agentsup/bin/agentsup.cjs" "$main/bin/agentsup.cjs"

rm -f "$out"/*.tgz
for dir in "$plat" "$main"; do
  (cd "$dir" && npm pack --silent --pack-destination "$out" >/dev/null)
done
rm -rf "$out/stage"
for t in "$out"/*.tgz; do
  echo "build-npm: $t ($(du -k "$t" | cut -f1) KiB)"
done
