#!/usr/bin/env bash
# One command for the whole suite: bench/run.sh [--quick] [run.py options]
# Prints the table of medians and ratios; writes bench/results.json.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/setup.sh"
exec python3 "$here/run.py" "$@"
