#!/usr/bin/env bash
# Checks the npm packages the way a Node user meets them: `npm install` of the two
# tarballs (scripts/build-npm.sh) into a fresh project, offline, with an empty npm
# cache and no Rust toolchain on PATH; then `npx agentsup --version`, `npx agentsup
# check` on the demo, exit statuses passed through, a SIGTERM to the launcher
# stopping `agentsup run` cleanly, and `import {key} from "agentsup"`.
# Run by .ci/run after scripts/test-wheel.sh, whose wheel (and static build) it
# reuses: about 20 s when that build is up to date.
# Usage: scripts/test-npm.sh [build-npm.sh args: --wheel FILE | --binary FILE]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/build-npm.sh" "$@"
version="$(node -p 'require(process.argv[1]).version' "$root/node/agentsup/package.json")"
main_tgz="$root/target/npm/agentsup-$version.tgz"
plat_tgz="$(ls "$root"/target/npm/agentsup-linux-*-"$version".tgz | head -1)"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/project"

# No cargo, no ~/.cargo, no source tree on the way: only node/npm and the system.
node_dir="$(dirname "$(command -v node)")"
clean=(env -i "PATH=$node_dir:/usr/bin:/bin" "HOME=$work" "LANG=C.UTF-8"
  "npm_config_cache=$work/npm-cache" "npm_config_update_notifier=false")
if "${clean[@]}" sh -c 'command -v cargo' >/dev/null; then
  echo "test-npm: cargo is on the clean PATH; the test would not prove anything" >&2; exit 1
fi
cd "$work/project"
"${clean[@]}" npm init -y >/dev/null
# --offline with an empty cache: nothing may come from a registry. The platform
# package satisfies the launcher package's optional dependency on it; the other
# platforms' packages are skipped (optional, and not for this cpu).
"${clean[@]}" npm install --offline --no-audit --no-fund --loglevel=error "$plat_tgz" "$main_tgz"

got="$("${clean[@]}" npx --offline agentsup --version)"
echo "npx agentsup --version: $got"
[ "$got" = "agentsup $version" ] || { echo "test-npm: expected 'agentsup $version'" >&2; exit 1; }
"${clean[@]}" npx --offline agentsup check -c "$root/supervisor.toml" >"$work/check.txt" \
  || { cat "$work/check.txt" >&2; echo "test-npm: agentsup check on the demo failed" >&2; exit 1; }
grep -q "^ok: " "$work/check.txt" || { cat "$work/check.txt" >&2; exit 1; }
echo "npx agentsup check on the demo: ok"

# Exit statuses come through the launcher: 78 for a config that fails its checks.
printf '[[worker]]\nname = "w"\ncomand = ["true"]\n' > "$work/bad.toml"
set +e
"${clean[@]}" npx --offline agentsup check -c "$work/bad.toml" >/dev/null 2>"$work/bad.txt"
status=$?
set -e
[ "$status" = 78 ] || { cat "$work/bad.txt" >&2; echo "test-npm: bad config exited $status, not 78" >&2; exit 1; }
echo "npx agentsup check on a bad config: exit 78"

# A SIGTERM to the launcher (what docker stop or systemd send to the main pid)
# reaches agentsup, which stops its worker and exits 0.
printf '[[worker]]\nname = "w"\ncommand = ["sh", "-c", "echo worker-up; exec sleep 60"]\n' > "$work/run.toml"
"${clean[@]}" node node_modules/.bin/agentsup run --no-color -c "$work/run.toml" >"$work/run.txt" 2>&1 &
launcher=$!
for _ in $(seq 300); do grep -q worker-up "$work/run.txt" && break; sleep 0.1; done
grep -q worker-up "$work/run.txt" || { cat "$work/run.txt" >&2; echo "test-npm: the worker never started" >&2; exit 1; }
kill -TERM "$launcher"
set +e
wait "$launcher"
status=$?
set -e
if [ "$status" != 0 ] || ! grep -q "all workers stopped" "$work/run.txt"; then
  cat "$work/run.txt" >&2; echo "test-npm: SIGTERM to the launcher: exit $status" >&2; exit 1
fi
echo "SIGTERM to the launcher: agentsup stopped its worker, exit 0"

# The helpers: ESM import by package name, from the installed tarball.
"${clean[@]}" OPENAI_API_KEY=sk-test-from-env node --input-type=module -e '
import { key, worker, exitOnAuthError, AUTH_EXIT_CODE } from "agentsup";
if (key("OPENAI_API_KEY") !== "sk-test-from-env") throw new Error("key() did not read the environment");
if (worker() !== null || AUTH_EXIT_CODE !== 77 || typeof exitOnAuthError !== "function") throw new Error("helpers");
console.log("import {key} from \"agentsup\": ok");
'
echo "npm packages: $(basename "$main_tgz") $(du -k "$main_tgz" | cut -f1) KiB, $(basename "$plat_tgz") $(du -k "$plat_tgz" | cut -f1) KiB"
