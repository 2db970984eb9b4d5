#!/usr/bin/env bash
# Regenerates BENCHMARKS.md: recourse next to backon and tower on the
# success, retry and hedge paths — time per call (criterion), heap
# allocations and future size per call (examples/allocs.rs), instructions
# per call (callgrind) — with ratios and the verdict on each target; then
# the sections of benches/observer_cost.sh, benches/tower_layers.sh and
# benches/sim_speed.sh (the simulator's calls/s and real-time factor), and
# the embedded section (examples/embedded/size.sh: qemu, thumbv7m).
#
#   bash benches/run.sh     # about 2 minutes from a warm build, 4 from cold
#
# Environment: MEASUREMENT_TIME and WARM_UP_TIME (criterion, seconds per
# benchmark; default 1 and 0.5), CALLS (callgrind calls per variant, default
# 10000), OUT (default BENCHMARKS.md at the workspace root). Intermediate
# results stay in target/peers and target/callgrind.
set -euo pipefail
cd "$(dirname "$0")/.."

out="${OUT:-BENCHMARKS.md}"
work=target/peers
mkdir -p "$work"
# Other work on the machine slows the timings (not the instruction counts).
load=$(cut -d' ' -f1-3 /proc/loadavg)

echo "==> criterion: benches/peers.rs" >&2
cargo bench -p recourse-benches --bench peers -- \
    --warm-up-time "${WARM_UP_TIME:-0.5}" \
    --measurement-time "${MEASUREMENT_TIME:-1}" | tee "$work/criterion.txt" >&2

echo "==> heap allocations and future sizes: examples/allocs.rs" >&2
cargo run --release --quiet -p recourse-benches --example allocs | tee "$work/allocs.tsv" >&2

echo "==> instructions: benches/callgrind.sh" >&2
CALLGRIND_DIR=target/callgrind CALLS="${CALLS:-10000}" bash benches/callgrind.sh |
    tee "$work/callgrind.md" >&2

target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
{
    echo "nproc=$(nproc)"
    echo "model=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)"
    echo "hypervisor=$(lscpu | sed -n 's/^Hypervisor vendor: *//p' | head -n1)"
    echo "rustc=$(rustc --version)"
    echo "valgrind=$(valgrind --version)"
    echo "date=$(date -u +%Y-%m-%d)"
    echo "load=$load"
} >"$work/machine.txt"

python3 - "$target_dir/criterion" "$work" target/callgrind "${CALLS:-10000}" \
    "${MEASUREMENT_TIME:-1}" "${WARM_UP_TIME:-0.5}" >"$out" <<'PY'
import json, os, re, sys

crit, work, cg, calls, meas, warm = sys.argv[1:7]
machine = dict(l.rstrip("\n").split("=", 1) for l in open(f"{work}/machine.txt"))
lock = open("Cargo.lock").read()
def version(name):
    m = re.search(r'\[\[package\]\]\nname = "%s"\nversion = "([^"]+)"' % re.escape(name), lock)
    return m[1] if m else "?"

allocs, labels, order = {}, {}, []
for line in open(f"{work}/allocs.tsv").read().splitlines()[1:]:
    v, n, b, size, label = line.split("\t")
    allocs[v] = (float(n), float(b), int(size))
    labels[v] = label
    order.append(v)
instr = dict(
    (v, int(n)) for v, n in (l.split("\t") for l in open(f"{cg}/summary.tsv").read().splitlines())
)
def ns(v):
    path = os.path.join(crit, *v.split("/"), "new", "estimates.json")
    return json.load(open(path))["median"]["point_estimate"]
time = {v: ns(v) for v in order}

def fmt_ns(x):
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"
def ratio(a, b):
    return f"{a / b:.2f}" if b else "-"
def num(x):
    return f"{x:g}"

def table(path, ref):
    rows = [v for v in order if v.startswith(path + "/")]
    d, r = f"{path}/direct", f"{path}/{ref}"
    print(f"| variant | ns/call | × direct | × {ref} | instructions/call | × direct | × {ref} "
          "| allocations/call | bytes/call | future bytes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for v in rows:
        n, b, size = allocs[v]
        print(f"| {v.split('/')[1]}: {labels[v]} | {fmt_ns(time[v])} | {ratio(time[v], time[d])} "
              f"| {ratio(time[v], time[r])} | {instr[v]} | {ratio(instr[v], instr[d])} "
              f"| {ratio(instr[v], instr[r])} | {num(n)} | {num(b)} | {size} |")
    print()

def top(v):
    return open(f"{cg}/{v.replace('/', '_')}.top.md").read().strip()

# The targets.
zero_core = ["success/recourse-core", "retry/recourse-core", "hedge/recourse-core"]
zero_facade = ["success/recourse-facade", "success/recourse-exec-virtual",
               "retry/recourse-exec-virtual"]
def allocs_row(name, vs):
    got = ", ".join(f"{v}: {num(allocs[v][0])}" for v in vs)
    ok = all(allocs[v][0] == 0 for v in vs)
    return f"| {name} | {got} | {'**met**' if ok else '**not met**'} |"
def instr_row(v, why=""):
    a, b = instr[v], instr["success/backon"]
    verdict = "**met**" if a <= b else f"**not met**: {a / b:.2f}× backon's, {a - b} instructions over"
    return f"| success-path instructions per call no more than backon's ({b}): {v.split('/')[1]} " \
           f"| {a} ({a / b:.2f}×) | {verdict}{why} |"
# Issue 16's targets (the hot path), each as (what, measured, bound).
def i16_row(what, got, bound, unit="instructions"):
    over = got - bound
    verdict = "**met**" if over <= 0 else f"**not met**: {over:g} {unit if over != 1 else unit[:-1]} over"
    return f"| issue 16: {what} | {got:g} (bound {bound:g}) | {verdict} |"
def i16_rows():
    backon_retry1 = instr["retry1/backon"]
    rows = [i16_row("core success ≤ 100", instr["success/recourse-core"], 100)]
    for v in ("success/recourse-exec-virtual", "success/recourse-exec-key",
              "success/recourse-facade", "success/recourse-facade-key"):
        if v in instr:
            rows.append(i16_row(f"{v.split('/')[1]} success ≤ 2× backon (350)", instr[v], 350))
    rows.append(i16_row("breaker on ≤ 100 over breaker off (exec-guarded − exec-virtual)",
                        instr["success/recourse-exec-guarded"] - instr["success/recourse-exec-virtual"], 100))
    rows.append(i16_row(f"core retry, one failure ≤ backon ({backon_retry1})",
                        instr["retry1/recourse-core"], backon_retry1))
    rows.append(i16_row(f"executor retry, one failure ≤ 2× backon ({2 * backon_retry1})",
                        instr["retry1/recourse-exec-virtual"], 2 * backon_retry1))
    fixed = instr["hedge/recourse-exec-virtual"]
    rows.append(i16_row(f"`p95` hedge ≤ fixed-delay hedge ({fixed}) + 10 %",
                        instr["hedge/recourse-exec-guarded"], round(fixed * 1.1)))
    rows.append(i16_row("core call future ≤ 256 bytes", allocs["success/recourse-core"][2], 256, "bytes"))
    rows.append(i16_row("facade call future ≤ 512 bytes", allocs["success/recourse-facade"][2], 512, "bytes"))
    return "\n".join(rows)

# Inclusive cost (the largest row: a self-cost row, if any, is smaller).
clock_reads = max(
    (int(n) for n in re.findall(
        r"\| `<recourse::timer::DefaultCallTimer as recourse_core::time::Timer>::now` \| (\d+) \|",
        top("success/recourse-facade"))),
    default=0,
)
clock_note = f" (its two reads of tokio's clock alone take {clock_reads})" if clock_reads else ""

print(f"""# Benchmarks: recourse next to backon and tower

<!-- Generated by `bash benches/run.sh`; edit the script, not this file. -->

Regenerate everything — criterion, heap allocations, callgrind, this file —
with one command from the workspace root (about two minutes from a warm
build, four from a cold one):

```sh
bash benches/run.sh
```

It runs `cargo bench -p recourse-benches --bench peers` (criterion,
{meas} s of measurement after {warm} s of warm-up per benchmark),
`cargo run --release -p recourse-benches --example allocs` and
`bash benches/callgrind.sh` ({calls} calls per variant), then writes this
file. Every variant is defined once, in `benches/shared/peers.rs`, which the
three binaries include, so all three measure the same futures.

Generated on {machine['date']}: {machine['nproc']} CPUs (`nproc`), model
name "{machine['model']}" (`lscpu`){', ' + machine['hypervisor'] + ' guest' if machine['hypervisor'] else ''};
{machine['rustc']}; {machine['valgrind']}; backon {version('backon')}, tower
{version('tower')}, tokio {version('tokio')}, criterion {version('criterion')}.
Load average when the run started: {machine['load']} (1, 5, 15 min) —
the nanoseconds move with it, the instruction counts do not.

## Targets

| target | measured (allocations per call) | verdict |
|---|---|---|
{allocs_row("zero heap allocations per call on the core driver", zero_core)}
{allocs_row("zero heap allocations per call on the facade without a timeline (and `Executor::call`, the same path)", zero_facade)}

| target | measured (instructions per call) | verdict |
|---|---|---|
{instr_row("success/recourse-core")}
{instr_row("success/recourse-facade", clock_note)}
{i16_rows()}

Where the success path stands. The core driver is within backon's cost
(and within issue 16's 100); three things got it there:

- the machine's **compact stage** (`recourse_core::driver`, module
  docs): the call future holds its machine staged, and a first attempt
  that cannot hedge is decided by a compact stage inlined into the
  future's poll (the gate's admission, the launch, the record, the
  finish), which grows into the full call machine only when the call
  needs it; a call whose first attempt succeeds at its first poll ends
  there, as straight-line code;
- making a call **copies nothing from its policy**: the call borrows it
  (`recourse_core::call` takes any `Borrow<Policy>`) and reads it when it
  starts, and copies what the full machine needs only when it grows one;
- the call future lays out its **state last** (`#[repr(C)]`), so making
  one writes the few fields it sets and copies none of the uninitialized
  room its state keeps for a machine (with the default layout LLVM copied
  328 bytes of it into every new future);
- the executor makes its call's builder where it makes the call future
  (in each arm of its width's `match`, the gate last): a builder made
  once before the arms lived in a stack slot of its own, and the gate's
  uninitialized inline reservation slots were copied out of it into every
  call future (a 272-byte `memcpy`, 64 instructions, about 95 per call in
  all), and the wrapper that contains the operation's panics is inlined
  into the call's future (about 18 more): `success/recourse-exec-virtual`
  1,439 → 1,326, `retry/recourse-exec-virtual` 3,579 → 3,432,
  `success/recourse-facade` 1,555 → 1,533 (`bash benches/callgrind.sh`).

The driver reads its timer's clock once when the call starts (its first
attempt's start), once when each attempt ends (the next attempt, launched
at once, starts at that instant: no read at a launch) and once when a
sleep ends (a backoff, a hedge delay, a deadline: a timer that wakes late
must not let the machine launch at an instant already past);
`recourse-core`'s `tests::clock_reads` counts them.

The facade does more than any peer on every call: it parses the key,
looks up the policy, runs the executor's gate (budgets, circuit
breakers, latency) and observers, and reads tokio's clock twice (the
start and the end of the attempt, for records, latency and breakers) —
those two reads alone cost more instructions than backon's whole call,
which reads no clock. Its per-call cost is itemized at the end of this
file.

A hedged call on the executor allocates one block per call (hedge table
below): its attempts' futures, boxed so that calls that do not hedge stay
small (`std-ext/src/executor.rs`, as documented in `recourse::hedging`).
The core driver keeps hedges inline (`.slots::<N>()`) and allocates nothing.

## How each call is driven

Every call is made inside an `async` block that awaits it
(`async {{ make().await }}`, pinned where it stands): what
`call(...).await` in an async fn does, where the future is built in the
awaiting future's state and never moved. (Making the future first and
then pinning it would copy all of it once per call — 168 bytes for backon,
656 for the core driver — which no caller that awaits in place pays.)

- **success**, **retry** and **retry1**: that block is polled **once** with a no-op
  waker (`Waker::noop()`); every variant completes in that poll (the
  harness panics otherwise). Polling happens inside the context of a
  current-thread tokio runtime with a real clock, so the facade's default
  timer is tokio's. No runtime scheduling is measured.
- **hedge**: each call runs under `block_on` of a current-thread tokio
  runtime whose clock is **paused**, for every variant. `tower::hedge`
  waits for its hedge delay on a `tokio::time::Sleep`, which completes only
  after the runtime's time driver turns, even for a 0 ms delay; with the
  clock paused the runtime advances to the deadline instead of sleeping.
  recourse's executor on tokio's timer waits its hedge delay (10 ms, the
  smallest a normalized policy allows) the same way. That runtime is made
  only after the success and retry paths have run: once any tokio clock is
  paused, every `tokio::time::Instant::now()` of the process (tokio's
  `test-util` feature is on in this crate, for `examples/tower_hedge.rs`)
  goes through the runtime's clock behind a mutex.

Same operation for everyone: a ready future of `Result<u32, &str>` (the
success path), an operation that fails twice then succeeds with zero
backoff and at most three attempts everywhere (retry; once then succeeds:
retry1, issue 16's one-failure row), a primary that never completes and a
hedge that answers at once (hedge).

- **direct**: the operation itself (success), a hand-written loop (retry),
  a hand-written select of primary then hedge (hedge): the harness's floor.
- **recourse-core**: `recourse_core::call(KEY, &policy, timer, op)` (the
  builder, awaited), default
  classifier, no observer, open gate; `KEY` a constant
  `PolicyKey::new("svc", "Get")`, the way a no_std program names its call
  sites (the facade and the executor take `&str` keys and parse them on
  every call, which their rows include); the timer `NoSleep` (clock at zero,
  every sleep ready) on the success and retry paths, where the policy has
  zero backoff (not normalized); on the hedge path a virtual clock whose
  sleeps jump to their deadline, `.slots::<2>()`, one hedge after 10 ms.
- **recourse-facade**: `recourse::do_value(key, op)` on the default
  executor (no policies: the fallback policy, no observer, no timeline).
- **recourse-exec-virtual**: `Executor::call` on an executor whose timer is
  the virtual clock (normalized policies have at least 1 ms of backoff,
  which the virtual clock skips); the success path uses the fallback policy
  like the facade, so the two differ only by the timer.
- **recourse-exec-tokio**: `Executor::call` on the default timer (tokio's).
- **recourse-exec-guarded**: recourse-exec-virtual with the circuit breaker
  on (success path: the per-key breaker store on every call) or the `p95`
  hedge trigger (hedge path: the per-key latency tracker on every hedge
  decision and attempt end).
- **recourse-exec-key**, **recourse-facade-key**: recourse-exec-virtual and
  recourse-facade with a `static` `CallKey` (`Executor::call_key`,
  `recourse::do_value_key`): the key's answer is kept in the handle, so the
  call skips the per-thread key cache's lookup.
- **backon**: `op.retry(ExponentialBuilder::default().with_min_delay(0)
  .with_max_times(2)).sleep(|_| ready(()))`, backon with its default
  features.
- **tower**: `tower::retry::Retry` with a policy allowing two retries whose
  backoff is a ready future (success, retry); `tower::hedge::Hedge` with
  `min_data_points` 0 and its p50 latency as the delay, which is 0 ms while
  its read histogram is empty, with a period of 2^30 s so that it never
  rotates (hedge). Each request is `poll_ready` then `call`.

Columns: **ns/call** is the median of criterion's samples; **instructions
/call** is callgrind's count over {calls} calls after a warm-up, divided by
{calls} (it includes the harness loop: see the direct rows), the same
from run to run within a few tenths of a percent where nanoseconds on this
machine are not; **allocations/call**
and **bytes/call** are counted by `allocation-counter` over 10,000 calls
after a warm-up; **future bytes** is `size_of_val` of the call's future
before its first poll. Ratios divide by the direct row and by backon
(success, retry) or tower (hedge).

The direct rows are the harness's floor, a handful of instructions, so
ratios to them are large; the direct success call's nanoseconds are mostly a
store-forwarding stall (the ready future is written, then read back 16 bytes
at once). tower's `Retry` on the success path compiles down to a few
instructions: its policy and service are `Copy`, and a success needs no
bookkeeping, so the optimizer folds it away.

## Success path
""")
table("success", "backon")
print("## Retry path (two failures, then success)\n")
table("retry", "backon")
print("## Retry path, one failure (one failure, then success)\n")
table("retry1", "backon")
print("## Hedge path (the primary hangs, the hedge wins)\n")
table("hedge", "tower")
print(f"""callgrind counts instructions in user space only: the system clock read
(`clock_gettime`, which valgrind turns into a system call) and tokio's
`epoll_wait` on the hedge path cost time but no counted instructions.

## Where recourse's success-path instructions go

Self cost per call from `callgrind_annotate` (code inlined into a function
counts as that function's: `instr::peers::Env::call` holds the inlined
`async` bodies of `do_value`, `Executor::call` and `Executor::run`, and the
making of each call), by
source file, and recourse's functions by inclusive cost. Full reports:
`target/callgrind/success_recourse-core.txt` and
`success_recourse-facade.txt` after a run.

### recourse-core driver, no-op timer ({instr['success/recourse-core']} instructions per call)

{top("success/recourse-core")}

### recourse facade `do_value`, tokio timer ({instr['success/recourse-facade']} instructions per call)

{top("success/recourse-facade")}
""")
PY
# --- issue 15: what each observer adds per call ---
echo "==> observers: benches/observer_cost.sh" >&2
{
    echo
    echo "## What each observer adds per call"
    echo
    echo "Instructions per successful single-attempt call through an executor on"
    echo "the default timer, by observer, from \`bash benches/observer_cost.sh\`"
    echo "(callgrind, ${CALLS:-10000} calls after as many of warm-up;"
    echo "\`benches/examples/observer_cost.rs\` says what each variant installs)."
    echo "\`tracing-off\` is the tracing observer with no subscriber; \`tracing\`"
    echo "has \`tracing_subscriber::registry()\` and the call span; \`metrics\`"
    echo "records into metrics-exporter-prometheus's recorder; \`opentelemetry\`"
    echo "into the OTel SDK's meter provider."
    echo
    CALLS="${CALLS:-10000}" bash benches/observer_cost.sh
} >>"$out"
# --- end of issue 15 ---
# --- issue 15 gaps: the tower layer next to tower's own layers ---
echo "==> tower layers: benches/tower_layers.sh" >&2
MEASUREMENT_TIME="${MEASUREMENT_TIME:-1}" WARM_UP_TIME="${WARM_UP_TIME:-0.5}" \
    bash benches/tower_layers.sh >>"$out"
# --- end of issue 15 gaps ---
# --- issue 16: the simulator's speed (calls/s, real-time factor, callgrind) ---
echo "==> simulator: benches/sim_speed.sh" >&2
CALLGRIND_DIR=target/callgrind bash benches/sim_speed.sh >>"$out"

# --- issue 16: two threads next to one ---
echo "==> threads: examples/threads.rs" >&2
{
    echo
    echo "## Two threads next to one"
    echo
    echo "CPU time per successful call of tasks on a tokio multi-thread runtime"
    echo "with two worker threads: one task (one thread busy), then two at once,"
    echo "from \`cargo run --release -p recourse-benches --example threads\`"
    echo "(each task counts its own thread's CPU time over 200,000 calls; median"
    echo "of 5 rounds; \`benches/examples/threads.rs\` says what each row calls)."
    echo "Equal columns: nothing shared slows a call down. Issue 16's target:"
    echo "two threads within 1.3× of one. On a busy machine the two tasks may"
    echo "not always run at the same instant (load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "when it started): the last column says how much of the two-thread"
    echo "rounds they ran side by side (from their CPU times and wall-clock"
    echo "span); a ratio measured with little overlap says little about sharing."
    echo
    cargo run --release --quiet -p recourse-benches --example threads
} >>"$out"
# --- end of issue 16 ---
# Measured by hand (needs etcd): see the file.
cat benches/control_plane.md >> "$out"
# --- issue 18: embedded sizes (needs qemu-system-arm and thumbv7m-none-eabi) ---
# Flash and RAM over an empty baseline, call future sizes, peak stack and
# instructions per call, measured on the Cortex-M3 example under qemu; fails
# the run (set -e) if qemu or the target is missing rather than leave the
# section out.
echo "==> embedded: examples/embedded/size.sh" >&2
{
    echo
    bash examples/embedded/size.sh --print
} >>"$out"
# --- end of issue 18 ---
echo "==> wrote $out" >&2
