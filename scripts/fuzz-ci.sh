#!/usr/bin/env bash
# Builds every fuzz target (fuzz/, cargo-fuzz + libFuzzer) and runs each for a few
# seconds from its committed corpus. Needs a nightly toolchain; installs cargo-fuzz
# when nightly is there but cargo-fuzz is not. Without nightly it says plainly that
# it skipped, and exits 0: the stable build and tests do not depend on it.
#
#   scripts/fuzz-ci.sh                 # 5 s per target
#   FUZZ_SECONDS=60 scripts/fuzz-ci.sh
#
# New inputs go to a temporary directory, never into fuzz/corpus; a crash is kept
# under $FUZZ_ARTIFACTS (default: a temporary directory) and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${FUZZ_SECONDS:-5}"
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz-ci: SKIPPED: no nightly Rust toolchain here, so the fuzz targets were neither built nor run"
    echo "fuzz-ci: (rustup toolchain install nightly; see fuzz/README.md)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz-ci: nightly found but no cargo-fuzz; installing it"
    cargo install cargo-fuzz --locked
fi

start=$(date +%s)
# `-s none`: no sanitizer. The code is safe Rust; libFuzzer's coverage guidance,
# the targets' own assertions and the RSS limit are what find bugs here, and the
# address sanitizer would halve the executions.
cargo +nightly fuzz build -s none
built=$(date +%s)

artifacts="${FUZZ_ARTIFACTS:-$(mktemp -d)}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in $(cargo +nightly fuzz list); do
    mkdir -p "$work/$t" "$artifacts/$t"
    if cargo +nightly fuzz run -s none "$t" "$work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=512 -print_final_stats=1 \
        -artifact_prefix="$artifacts/$t/" >"$work/$t.log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$work/$t.log" | grep -o '[0-9]*$' || true)
        echo "fuzz-ci: $t ok (${runs:-?} executions in ${secs} s)"
    else
        echo "fuzz-ci: $t FAILED; the input is under $artifacts/$t/; the end of its log:"
        tail -n 30 "$work/$t.log"
        failed+=("$t")
    fi
done
end=$(date +%s)
echo "fuzz-ci: build $((built - start)) s, runs $((end - built)) s"
if ((${#failed[@]})); then
    echo "fuzz-ci: FAILED: ${failed[*]}"
    exit 1
fi
