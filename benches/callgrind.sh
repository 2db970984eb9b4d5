#!/usr/bin/env bash
# Instructions per call of recourse, backon and tower, counted by callgrind:
# stable on a noisy machine, where nanoseconds are not.
#
#   bash benches/callgrind.sh            # every variant, 10,000 calls each
#   CALLS=100000 bash benches/callgrind.sh success/recourse-facade
#
# Builds examples/instr.rs (release, with line tables for callgrind_annotate,
# in its own target directory), then runs each variant under
# `valgrind --tool=callgrind --toggle-collect='*instr_measured*'`: only the
# CALLS calls made after a warm-up of as many are collected, so the count
# divided by CALLS is one call's instructions (plus the loop's two or
# three). Prints one markdown table per path with ratios to the direct call
# and to backon (tower on the hedge path, where backon has nothing), and
# leaves in $CALLGRIND_DIR (default target/callgrind), per variant, the
# callgrind output (<path>_<lib>.out), callgrind_annotate's report (.txt:
# self cost, then inclusive), every function's self and
# inclusive cost (.self.txt, .inclusive.txt)
# and the top functions and source files by self
# instructions per call (.top.md), and summary.tsv (variant, instructions
# per call) for benches/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

calls="${CALLS:-10000}"
dir="${CALLGRIND_DIR:-target/callgrind}"
mkdir -p "$dir"

if ! command -v valgrind >/dev/null; then
    echo "valgrind missing: installing it (Debian package valgrind)" >&2
    apt-get update -qq >&2
    apt-get install -y -qq valgrind >&2
fi

# Line tables do not change the code generated; a separate target directory
# keeps them out of everyone's release builds.
# INSTR=path runs an instr binary built before (a baseline kept aside)
# instead of building one.
if [ -n "${INSTR:-}" ]; then
    instr="$INSTR"
else
    CARGO_TARGET_DIR="$dir/build" CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
        cargo build --release --quiet -p recourse-benches --example instr >&2
    instr="$dir/build/release/examples/instr"
fi

if [ "$#" -gt 0 ]; then
    variants=("$@")
else
    mapfile -t variants < <("$instr" | cut -f1)
fi

# The top functions and source files by self cost per call, and the top
# recourse functions by inclusive cost per call, from callgrind_annotate's
# lists of every function (a function's rows for code inlined from other
# files are summed).
top() { # self-list inclusive-list calls
    python3 - "$1" "$2" "$3" <<'PY'
import re, sys
from collections import Counter
calls = int(sys.argv[3])
row = re.compile(r"^\s*([\d,]+) \([\s\d.]+%\)\s+(.*?):(\S.*?)(?: \[.*\])?$")
def read(path):
    funcs, files = Counter(), Counter()
    for line in open(path):
        m = row.match(line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        ir, file, func = int(m[1].replace(",", "")), m[2], m[3]
        file = re.sub(r"^/rustc/[0-9a-f]+/library/", "rust:", file)
        file = re.sub(r"^.*/registry/src/[^/]+/", "", file)
        file = re.sub(r"^\./.*/", "libc:", file)
        funcs[func] += ir
        files[file] += ir
    return funcs, files
funcs, files = read(sys.argv[1])
total = sum(funcs.values())
def table(title, counter, n):
    print(f"| {title} | instructions/call | share |")
    print("|---|---:|---:|")
    for name, ir in counter.most_common(n):
        name = name if len(name) <= 110 else name[:107] + "..."
        name = name.replace("|", "\\|")
        print(f"| `{name}` | {ir / calls:.0f} | {100 * ir / total:.1f} % |")
    print()
table("function (self cost)", funcs, 15)
table("source file (self cost)", files, 10)
# Inclusive rows of one function split by inlined file overlap: keep the
# largest row per function rather than their sum.
best = Counter()
for line in open(sys.argv[2]):
    m = row.match(line)
    if m and "recourse" in m[3]:
        best[m[3]] = max(best[m[3]], int(m[1].replace(",", "")))
table("recourse function (inclusive cost)", best, 15)
PY
}

declare -A ir
: >"$dir/summary.tsv"
for v in "${variants[@]}"; do
    name="${v//\//_}"
    out="$dir/$name.out"
    valgrind --tool=callgrind --callgrind-out-file="$out" \
        --toggle-collect='*instr_measured*' "$instr" "$v" "$calls" \
        2>"$dir/$name.log" >/dev/null
    total=$(awk '/^(summary|totals):/ { print $2; exit }' "$out")
    ir[$v]=$((total / calls))
    {
        callgrind_annotate --threshold=99 "$out"
        callgrind_annotate --threshold=99 --inclusive=yes "$out"
    } 2>/dev/null >"$dir/$name.txt"
    callgrind_annotate --threshold=100 --auto=no "$out" 2>/dev/null \
        >"$dir/$name.self.txt"
    callgrind_annotate --threshold=100 --auto=no --inclusive=yes "$out" \
        2>/dev/null >"$dir/$name.inclusive.txt"
    top "$dir/$name.self.txt" "$dir/$name.inclusive.txt" "$calls" \
        >"$dir/$name.top.md"
    printf '%s\t%s\n' "$v" "${ir[$v]}" >>"$dir/summary.tsv"
    echo "$v: $total instructions / $calls calls" >&2
done

ratio() { # a / b with two decimals, or "-"
    if [ -n "${2:-}" ] && [ "$2" -gt 0 ]; then
        awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'
    else
        echo "-"
    fi
}

echo "Instructions per call (callgrind, $calls calls after a warm-up)"
for path in success retry retry1 hedge; do
    ref=backon
    [ "$path" = hedge ] && ref=tower
    rows=()
    for v in "${variants[@]}"; do
        [ "${v%%/*}" = "$path" ] && rows+=("$v")
    done
    [ "${#rows[@]}" -gt 0 ] || continue
    echo
    echo "| $path | instructions/call | × direct | × $ref |"
    echo "|---|---:|---:|---:|"
    for v in "${rows[@]}"; do
        printf '| %s | %s | %s | %s |\n' "${v#*/}" "${ir[$v]}" \
            "$(ratio "${ir[$v]}" "${ir[$path/direct]:-}")" \
            "$(ratio "${ir[$v]}" "${ir[$path/$ref]:-}")"
    done
done
echo
echo "callgrind_annotate reports: $dir/<path>_<variant>.txt"
