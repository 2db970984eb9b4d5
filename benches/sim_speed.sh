#!/usr/bin/env bash
# The simulator's speed on the Tail-at-Scale scenario (issue 16: at least
# 5 M calls/s and 10,000x real time on one core), as a markdown section for
# BENCHMARKS.md (benches/run.sh appends it).
#
#   bash benches/sim_speed.sh
#
# Runs `benches/examples/sim_speed.rs` (release): SIM_CALLS calls (default
# 1,000,000), best of 3 runs, for calls/s and the real-time factor, on one
# thread and with the draws made on a helper thread
# (`Scenario::draw_thread`; the same report, which the example checks);
# then the same scenario with SIM_CG_CALLS calls (default 100,000) on one
# thread under callgrind (`--toggle-collect='*sim_measured*'`: the run
# only), for instructions per call and where they go. The callgrind output stays in
# $CALLGRIND_DIR (default target/callgrind) as sim_speed.out and
# sim_speed.txt (callgrind_annotate's report).
set -euo pipefail
cd "$(dirname "$0")/.."

calls="${SIM_CALLS:-1000000}"
cg_calls="${SIM_CG_CALLS:-100000}"
dir="${CALLGRIND_DIR:-target/callgrind}"
mkdir -p "$dir"

# Built as benches/callgrind.sh builds: with line tables (they do not
# change the code generated; callgrind's table then names the source
# files of inlined code) in the target directory kept for it.
CARGO_TARGET_DIR="$dir/build" CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
    cargo build --release --quiet -p recourse-benches --example sim_speed >&2
bin="$dir/build/release/examples/sim_speed"

load=$(cut -d' ' -f1-3 /proc/loadavg)
echo "==> simulator: $calls calls, best of 3, one thread then with the draw thread" >&2
"$bin" "$calls" 3 | tail -n1 >"$dir/sim_speed.tsv"
echo "==> simulator under callgrind: $cg_calls calls" >&2
valgrind --tool=callgrind --callgrind-out-file="$dir/sim_speed.out" \
    --toggle-collect='*sim_measured*' "$bin" "$cg_calls" 1 one >"$dir/sim_speed.cg.tsv" 2>/dev/null
callgrind_annotate --auto=no --threshold=99 "$dir/sim_speed.out" >"$dir/sim_speed.txt" 2>/dev/null
# With the draw thread: the simulating thread's instructions only (thread
# 1's part; the helper threads run outside the toggled function).
echo "==> simulator with the draw thread under callgrind: $cg_calls calls" >&2
rm -f "$dir"/sim_speed_dt.out*
valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$dir/sim_speed_dt.out" \
    --toggle-collect='*with_draw_thread*' "$bin" "$cg_calls" 1 two >/dev/null 2>&1
callgrind_annotate --auto=no --threshold=99 "$dir/sim_speed_dt.out-01" >"$dir/sim_speed_dt.txt" 2>/dev/null

python3 - "$dir" "$calls" "$cg_calls" "$load" <<'PY'
import re, sys
from collections import Counter

d, calls, cg_calls, load = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
(n, attempts, simulated, wall, per_s, realtime, digest, cpu, cpu_per_s, cpu_realtime,
 dt_wall, dt_per_s, dt_realtime, dt_cpu, dt_cpu_per_s, dt_cpu_realtime) = \
    open(f"{d}/sim_speed.tsv").read().split()
per_s, realtime = float(per_s), float(realtime)
cpu_per_s, cpu_realtime = float(cpu_per_s), float(cpu_realtime)
dt_per_s, dt_realtime = float(dt_per_s), float(dt_realtime)
dt_cpu_per_s, dt_cpu_realtime = float(dt_cpu_per_s), float(dt_cpu_realtime)
cg_digest = open(f"{d}/sim_speed.cg.tsv").read().splitlines()[-1].split("\t")[6]
fns, total = Counter(), 0
dt_total = 0
for line in open(f"{d}/sim_speed_dt.txt"):
    m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+PROGRAM TOTALS", line)
    if m:
        dt_total = int(m[1].replace(",", ""))
for line in open(f"{d}/sim_speed.txt"):
    m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)$", line)
    if not m:
        continue
    ir, what = int(m[1].replace(",", "")), m[2]
    if "PROGRAM TOTALS" in what:
        total = ir
        continue
    # "file:function [object]": sum a function's rows (inlined code is
    # reported per source file when there are line tables).
    what = re.sub(r" \[[^\]]*\]$", "", what)
    fn = what.split(":", 1)[1] if ":" in what else what
    fns[fn] += ir

def verdict(ok):
    return "**met**" if ok else "**not met**"

print(f"""
## Simulator speed

The Tail-at-Scale scenario (`recourse::sim::scenarios::tail_at_scale`,
the one of `std-ext/examples/hedging.rs`: log-normal
~10 ms latencies with 1 % stragglers of 0.8–1.2 s, Poisson arrivals at
1,000/s, a hedge once an attempt outlives the key's recent p95, seed 2013,
no warm-up), run by `benches/examples/sim_speed.rs` from `bash
benches/sim_speed.sh`: {calls:,} calls ({int(attempts):,} attempts,
{float(simulated):,.0f} s of simulated time), best of 3 runs,
load average {load} when it started. The real-time factor is simulated
time over the time taken; at 1,000 calls/s, 10,000× real time is 10 M
calls/s. Both are given by wall-clock time and by the thread's CPU time
(`/proc/thread-self/schedstat`), which leaves out the time other processes
had the core (on a loaded machine, most of the difference between runs);
the one-thread verdicts go by CPU time. With the draw thread
(`Scenario::draw_thread(true)`: the backend's and the arrivals' random
draws made on a second thread and handed over in blocks in the order
they are made; the calls' latencies handed to that thread in blocks as
they come, which puts them in buckets by their top digit while the run
goes on, and the buckets sorted on two threads at the end; the
same report, byte for byte, which the example checks), the calls still
run on one thread: its CPU time is the simulating thread's, and the
wall-clock time needs a second core free (on a loaded machine it is
not). Report digest `{digest}` (FNV-1a of its text: the same whenever
the results are).

| target | one thread, CPU time | one thread, wall-clock | draw thread, simulating thread's CPU time | draw thread, wall-clock | verdict (one thread / draw thread by the simulating thread's CPU) |
|---|---|---|---|---|---|
| ≥ 5 M calls/s | {cpu_per_s / 1e6:.2f} M calls/s ({float(cpu):.3f} s) | {per_s / 1e6:.2f} M calls/s ({float(wall):.3f} s) | {dt_cpu_per_s / 1e6:.2f} M calls/s ({float(dt_cpu):.3f} s) | {dt_per_s / 1e6:.2f} M calls/s ({float(dt_wall):.3f} s) | {verdict(cpu_per_s >= 5e6)} / {verdict(dt_cpu_per_s >= 5e6)} |
| ≥ 10,000× real time | {cpu_realtime:,.0f}× | {realtime:,.0f}× | {dt_cpu_realtime:,.0f}× | {dt_realtime:,.0f}× | {verdict(cpu_realtime >= 10_000)} / {verdict(dt_cpu_realtime >= 10_000)} |

callgrind, {cg_calls:,} calls on one thread (the run only): **{total / cg_calls:,.0f}
instructions per call** (report digest `{cg_digest}`); with the draw
thread, the simulating thread runs **{dt_total / cg_calls:,.0f}** per call
(half of the sort's buckets included). Where they go, self
cost per call by function, code inlined into a function counted as that
function's: the simulator feeds each call's machine with
`CallMachine::feed`, which carries out its launches and cancels through
the simulator's sink as it decides them, with the gate inlined; the simulator's
`run_with` (its `Sim::run` inlined) holds the event queue, the restart of
each call's machine in its slot (`CallMachine::restart_from`), the
backend's failure decision and the report's tally; libm's `log`, `cos`
and `exp` are the latency and arrival draws (made 32 at a time ahead of
their use, so that they overlap: they cost time less than their
instructions say), and `Ahead::refill` the rest of them (`Draw::nanos`
and `gap_nanos` inlined): with the draw thread, these go to the helper
thread, with the report's sort's first pass, and about half of
`sort_bucket` (the rest of the sort) to a second one at the end.

| function | instructions/call |
|---|---:|""")
for fn, ir in fns.most_common(15):
    print(f"| `{fn}` | {ir / cg_calls:,.0f} |")
print(f"| everything else | {(total - sum(ir for _, ir in fns.most_common(15))) / cg_calls:,.0f} |")
PY
