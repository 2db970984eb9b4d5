#!/usr/bin/env bash
# Instructions each observer adds per call (callgrind), for BENCHMARKS.md:
#
#   bash benches/observer_cost.sh        # 10,000 calls per variant
#
# Builds examples/observer_cost.rs (release) and runs each variant under
# `valgrind --tool=callgrind --toggle-collect='*instr_measured*'`; prints
# instructions per call and the difference to the `none` variant.
set -euo pipefail
cd "$(dirname "$0")/.."
calls="${CALLS:-10000}"
dir="${CALLGRIND_DIR:-target/callgrind}/observers"
mkdir -p "$dir"
command -v valgrind >/dev/null || { echo "valgrind missing (Debian package valgrind)" >&2; exit 1; }
CARGO_TARGET_DIR="target/callgrind/build" cargo build --release --quiet -p recourse-benches --example observer_cost >&2
bin=target/callgrind/build/release/examples/observer_cost
echo "| observer | instructions/call | added per call |"
echo "|---|---|---|"
base=""
for v in $("$bin"); do
    valgrind --tool=callgrind --toggle-collect='*instr_measured*' \
        --callgrind-out-file="$dir/$v.out" "$bin" "$v" "$calls" 2>"$dir/$v.log"
    total=$(sed -n 's/^summary: //p' "$dir/$v.out")
    per=$((total / calls))
    [ -z "$base" ] && base=$per
    echo "| \`$v\` | $per | $((per - base)) |"
done
