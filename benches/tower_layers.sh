#!/usr/bin/env bash
# recourse's tower layer next to tower::retry + tower::timeout and
# tower::hedge over the same in-process service (benches/tower_layers.rs,
# criterion); prints the BENCHMARKS.md section (markdown) on stdout.
#
#   bash benches/tower_layers.sh     # about 30 s from a warm build
#
# Environment: MEASUREMENT_TIME and WARM_UP_TIME (criterion, seconds per
# benchmark; default 1 and 0.5).
set -euo pipefail
cd "$(dirname "$0")/.."
meas="${MEASUREMENT_TIME:-1}"
warm="${WARM_UP_TIME:-0.5}"
load=$(cut -d' ' -f1-3 /proc/loadavg)
cargo bench -p recourse-benches --bench tower_layers -- \
    --warm-up-time "$warm" --measurement-time "$meas" >&2
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
python3 - "$target_dir/criterion" "$meas" "$warm" "$load" <<'PY'
import json, os, sys

crit, meas, warm, load = sys.argv[1:5]
def ns(path, lib):
    f = os.path.join(crit, f"tower_layers_{path}", lib, "new", "estimates.json")
    return json.load(open(f))["median"]["point_estimate"]
def fmt(x):
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"

print(f"""
## The tower layer next to tower's own layers

`RecourseLayer` next to `tower::retry::Retry` over `tower::timeout::Timeout`
(success, one failure) and `tower::hedge::Hedge` (hedge), over the same
in-process service: no network, so the rows measure the layers. From
`bash benches/tower_layers.sh` (`benches/benches/tower_layers.rs`, criterion,
{meas} s of measurement after {warm} s of warm-up per benchmark; load average
{load} when it started). Every call is `poll_ready` then `call` under
`block_on` of a current-thread tokio runtime with a paused clock, so waits
cost the timer's work, not their duration.

- **success**: the service answers at once; recourse with retries and a 1 s
  per-attempt timeout, tower with two retries and a 1 s `Timeout`.
- **one_failure**: the first attempt fails, the second succeeds after a 1 ms
  backoff on both sides (recourse's smallest normalized backoff; tower's
  policy sleeps 1 ms on tokio).
- **hedge**: the first attempt never answers; both hedge after 10 ms
  (recourse's smallest normalized hedge delay; tower's latency histogram is
  seeded with one 10 ms sample) and the hedge answers at once.

| path | variant | ns/call | × tower |
|---|---|---:|---:|""")
for path in ["success", "one_failure", "hedge"]:
    tower = ns(path, "tower")
    libs = (["direct"] if path == "success" else []) + ["recourse", "tower"]
    for lib in libs:
        t = ns(path, lib)
        name = {"direct": "the bare service", "recourse": "`RecourseLayer`",
                "tower": "`Retry<Timeout<_>>`" if path != "hedge" else "`Hedge`"}[lib]
        print(f"| {path} | {lib}: {name} | {fmt(t)} | {t / tower:.2f} |")
print("""
What recourse does on top of tower's pair here: it parses the key and
looks up the policy on every call, runs the executor's gate (budgets,
breaker, latency tracking — all idle here) and reads the clock at the
call's start and at each attempt's end; its call future is boxed per call
(`ResponseFuture`). The nanoseconds move with the machine's load.""")
PY
