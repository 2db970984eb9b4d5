//! Where a call future's bytes go: the size of every part, printed as
//! tables (run `cargo test -p recourse-core layout -- --nocapture`), each
//! table checked to account for its struct's every byte, and the parts
//! bounded so that growth is noticed.

use core::future::IntoFuture;
use core::mem::{size_of, size_of_val};
use core::time::Duration;
use std::vec::Vec;

use super::driver::{VSleep, VTimer};
use crate::backoff::{Backoff, BackoffSpec};
use crate::driver::{InFlight, Width};
use crate::key::PolicyKey;
use crate::machine::staged::PolicySettings;
use crate::machine::{CallMachine, Limits, NoHedging, Staged, State, Verdict};
use crate::outcome::Outcome;
use crate::policy::Policy;
use crate::record::{AttemptInfo, AttemptRecord};
use crate::time::Instant;
use crate::{call, AttemptId};

const KEY: PolicyKey<'static> = PolicyKey::new("svc", "Get");

/// The call future's full machine for `W`'s width (its hedging room
/// none for one slot).
type Machine<W> = <W as Width>::Machine<&'static Policy>;
type Machine1 = Machine<InFlight<1>>;
type Machine2 = Machine<InFlight<2>>;

/// The benches' timer for the core driver: it never sleeps.
struct NoSleep;

impl crate::Timer for NoSleep {
    type Sleep = core::future::Ready<()>;
    fn now(&self) -> Instant {
        Instant::ZERO
    }
    fn sleep_until(&self, _: Instant) -> Self::Sleep {
        core::future::ready(())
    }
}

/// Prints `name`'s fields, by offset, with the padding between them and
/// after the last; asserts that fields and padding add up to `total`.
/// Returns the padding.
fn table(name: &str, total: usize, fields: &[(&str, usize, usize)]) -> usize {
    std::println!("{name}: {total} B");
    let mut end = 0;
    let mut padding = 0;
    let mut sum = 0;
    for &(field, offset, size) in fields {
        if offset > end {
            std::println!("    {:<26} {:>4} B  (padding)", "", offset - end);
            padding += offset - end;
        }
        std::println!("    {field:<26} {size:>4} B  @{offset}");
        end = end.max(offset + size);
        sum += size;
    }
    if total > end {
        std::println!("    {:<26} {:>4} B  (padding at the end)", "", total - end);
        padding += total - end;
    }
    assert_eq!(
        sum + padding,
        total,
        "{name}: fields overlap or are missing"
    );
    padding
}

fn machine<const N: usize>() -> CallMachine<N> {
    CallMachine::new(
        &Policy::DEFAULT,
        Limits::DEFAULT,
        fastrand::Rng::with_seed(1),
    )
}

#[test]
fn layout_of_the_call_future() {
    std::println!("\n== parts ==");
    let mut parts: Vec<(&str, usize)> = std::vec![
        ("Instant", size_of::<Instant>()),
        ("Duration", size_of::<Duration>()),
        ("Option<Duration>", size_of::<Option<Duration>>()),
        ("Option<Instant>", size_of::<Option<Instant>>()),
        ("AttemptId", size_of::<AttemptId>()),
        ("AttemptInfo", size_of::<AttemptInfo>()),
        ("Outcome", size_of::<Outcome>()),
        ("Option<Outcome>", size_of::<Option<Outcome>>()),
        ("AttemptRecord", size_of::<AttemptRecord>()),
        (
            "Option<(AttemptRecord, bool)>",
            size_of::<Option<(AttemptRecord, bool)>>()
        ),
        ("Verdict", size_of::<Verdict>()),
        ("BackoffSpec", size_of::<BackoffSpec>()),
        ("Backoff", size_of::<Backoff>()),
        ("fastrand::Rng", size_of::<fastrand::Rng>()),
        ("Option<fastrand::Rng>", size_of::<Option<fastrand::Rng>>()),
        ("Limits", size_of::<Limits>()),
        ("PolicyKey", size_of::<PolicyKey<'_>>()),
        ("Policy", size_of::<Policy>()),
        ("VSleep (the timer's sleep)", size_of::<VSleep>()),
        ("Option<VSleep>", size_of::<Option<VSleep>>()),
        ("CallMachine<1>", size_of::<CallMachine<1>>()),
        ("CallMachine<2>", size_of::<CallMachine<2>>()),
        ("CallMachine<4>", size_of::<CallMachine<4>>()),
        (
            "PolicySettings<&Policy>",
            size_of::<PolicySettings<&Policy>>()
        ),
        (
            "Staged<&Policy, Machine1>",
            size_of::<Staged<&Policy, Machine1>>()
        ),
        (
            "Staged<&Policy, Machine2>",
            size_of::<Staged<&Policy, Machine2>>()
        ),
        (
            "Staged<Policy, Machine1>",
            size_of::<Staged<Policy, Machine1>>()
        ),
    ];
    parts.extend(crate::machine::part_sizes());
    for (name, size) in &parts {
        std::println!("    {name:<34} {size:>4} B");
    }

    std::println!("\n== the full machine ==");
    let m1 = machine::<1>();
    table("CallMachine<1>", size_of_val(&m1), &m1.layout());
    let state1 = m1.core_layout();
    table(
        "State<1> (CallMachine<1>'s)",
        size_of::<State<1>>(),
        &state1,
    );
    let call1 = State::<1, NoHedging>::new(fastrand::Rng::with_seed(1));
    table(
        "State<1, NoHedging> (the 1-slot call future's full machine)",
        size_of_val(&call1),
        &call1.layout(),
    );
    let m2 = machine::<2>();
    table("CallMachine<2>", size_of_val(&m2), &m2.layout());
    table("State<2>", size_of::<State<2>>(), &m2.core_layout());

    std::println!("\n== the compact stage ==");
    let policy = Policy::DEFAULT;
    let (size, fields) = Staged::<&Policy, CallMachine<1>>::first_layout();
    table("First (compact stage)", size, &fields);
    let staged = Staged::<&Policy, Machine1>::new(&policy, Limits::DEFAULT, None);
    table(
        "Staged<&Policy, Machine1> (the call future's machine)",
        size_of_val(&staged),
        &staged.layout(),
    );

    std::println!("\n== the call future (VTimer, a trivial async operation) ==");
    let t = VTimer::default();
    let op = |_: AttemptInfo| async { Ok::<u32, ()>(1) };
    let one = call(KEY, &policy, t.clone(), op).into_future();
    table("Call, &Policy, 1 slot", size_of_val(&one), &one.layout());
    let two = call(KEY, &policy, t.clone(), op).slots::<2>().into_future();
    table("Call, &Policy, 2 slots", size_of_val(&two), &two.layout());
    let owned = call(KEY, Policy::DEFAULT, t.clone(), op).into_future();
    table(
        "Call, owned Policy, 1 slot",
        size_of_val(&owned),
        &owned.layout(),
    );
    // The benches' `success/recourse-core` future (`BENCHMARKS.md`'s
    // "future bytes"): a timer that never sleeps, an operation that is
    // ready at once with a `Result<u32, &str>`.
    let ready = |_: AttemptInfo| core::future::ready(Ok::<u32, &'static str>(1));
    let bench = call(KEY, &policy, NoSleep, ready).into_future();
    table(
        "Call, &Policy, 1 slot, the benches' core future",
        size_of_val(&bench),
        &bench.layout(),
    );

    // Bounds: the sizes measured after issue 16's layout work, plus 16
    // bytes (before it: 528, 600, 640 and 720).
    assert!(size_of::<CallMachine<1>>() <= 432, "CallMachine<1> grew");
    assert!(size_of::<CallMachine<2>>() <= 480, "CallMachine<2> grew");
    assert!(size <= 104, "the compact stage grew");
    assert!(size_of_val(&one) <= 536, "the 1-slot call future grew");
    assert!(size_of_val(&two) <= 592, "the 2-slot call future grew");
    // Issue 16's second round: the call future's full machine is a
    // `State` (no pending record, no copy of the policy's numbers; deadlines
    // and the hedge check as instants with the epoch for none, the group's
    // start in the phase) beside the policy the call holds. Measured: the
    // compact stage 56, `State<1>` 200, `State<2>` 240, the staged machine
    // 240, the call futures 336 and 384; the public `CallMachine<1>` (its
    // state, copied settings and pending record) 400, `<2>` 440.
    assert!(size <= 56, "the compact stage grew");
    assert!(size_of::<State<1>>() <= 200, "State<1> grew");
    assert!(size_of::<State<2>>() <= 240, "State<2> grew");
    assert!(size_of_val(&staged) <= 240, "the staged machine grew");
    assert!(size_of_val(&one) <= 336, "the 1-slot call future grew");
    assert!(size_of_val(&two) <= 384, "the 2-slot call future grew");
    assert!(size_of::<CallMachine<1>>() <= 400, "CallMachine<1> grew");
    assert!(size_of::<CallMachine<2>>() <= 440, "CallMachine<2> grew");
    // Issue 16's third round (r25): the settings' retry-after ceiling as
    // seconds and nanoseconds beside the hedge ceiling (8 bytes off the
    // staged machine), and the driver's one room for the winner's and the
    // last failure's result (the size of a result off the call future).
    // Measured: the staged machine 232, the call futures 320 and 368.
    // (Tried and left out: the two backoffs in nanoseconds, 16 bytes off
    // the state, cost the Cortex-M3 example's successful call 215
    // instructions and 40 bytes of stack; the stage's tag in a niche of
    // the state, 8 bytes off, cost its call site 180 bytes of flash.)
    assert!(size_of_val(&staged) <= 232, "the staged machine grew");
    assert!(size_of_val(&one) <= 320, "the 1-slot call future grew");
    assert!(size_of_val(&two) <= 368, "the 2-slot call future grew");
    // Issue 16's fourth round (r25, core2): one room for the running
    // group's backoff and the next group's (the record of the attempt
    // that fails a group takes its backoff before the next is drawn).
    // Measured: `State<1>` 184, `State<2>` 224, the staged machine 216,
    // the call futures 304 and 352 (`CallMachine` as before: its pending
    // record keeps the backoff).
    assert!(size_of::<State<1>>() <= 184, "State<1> grew");
    assert!(size_of::<State<2>>() <= 224, "State<2> grew");
    assert!(size_of_val(&staged) <= 216, "the staged machine grew");
    assert!(size_of_val(&one) <= 304, "the 1-slot call future grew");
    assert!(size_of_val(&two) <= 352, "the 2-slot call future grew");
    // Issue 16, r26 (size): the call future's machine of one slot keeps no
    // hedging (`State<1, NoHedging>`: no hedge check, hedge count, stop
    // flag or held terminal outcome, 16 bytes), and every machine keeps
    // its group's backoff as seconds and nanoseconds apart (8 bytes; the
    // state's fields in a fixed order, see `State`). Measured: `State<1>`
    // of the call future 160 (`CallMachine<1>`'s 176), `State<2>` 216,
    // the staged machine 192, the call futures 280 and 344 (the benches'
    // core future 304, was 328), `CallMachine<1>` 392, `<2>` 432.
    assert!(
        size_of::<State<1, NoHedging>>() <= 160,
        "State<1, NoHedging> grew"
    );
    assert!(size_of::<State<1>>() <= 176, "State<1> grew");
    assert!(size_of::<State<2>>() <= 216, "State<2> grew");
    assert!(size_of_val(&staged) <= 192, "the staged machine grew");
    assert!(size_of_val(&one) <= 280, "the 1-slot call future grew");
    assert!(size_of_val(&two) <= 344, "the 2-slot call future grew");
    assert!(size_of_val(&bench) <= 304, "the benches' core future grew");
    assert!(size_of::<CallMachine<1>>() <= 392, "CallMachine<1> grew");
    assert!(size_of::<CallMachine<2>>() <= 432, "CallMachine<2> grew");
    // Issue 16, r27 (size): a call without an observer keeps no key (the
    // key is told to the observer only; `KeyRoom`): 32 bytes off. Measured:
    // the call futures 248 and 312, the benches' core future 272.
    assert!(size_of_val(&one) <= 248, "the 1-slot call future grew");
    assert!(size_of_val(&two) <= 312, "the 2-slot call future grew");
    assert!(size_of_val(&bench) <= 272, "the benches' core future grew");
    let heard = call(KEY, &policy, NoSleep, ready)
        .observer(())
        .into_future();
    table(
        "Call, &Policy, 1 slot, the benches' core future with an observer",
        size_of_val(&heard),
        &heard.layout(),
    );
    assert!(size_of_val(&heard) <= 304, "the observed core future grew");
    // Issue 16, r27 (size): the machine of one slot keeps its slot and
    // its last failure in one room (`Shared`: the last failure is read
    // only with nothing in flight), 40 bytes off. Measured: `State<1,
    // NoHedging>` 120, the staged machine 152, the call futures 208 and
    // 312, the benches' core future 232 (264 with an observer).
    assert!(
        size_of::<State<1, NoHedging>>() <= 120,
        "State<1, NoHedging> grew"
    );
    assert!(size_of_val(&staged) <= 152, "the staged machine grew");
    assert!(size_of_val(&one) <= 208, "the 1-slot call future grew");
    assert!(size_of_val(&bench) <= 232, "the benches' core future grew");
    assert!(size_of_val(&heard) <= 264, "the observed core future grew");
    // Tried in r25 (core2) and left out, each 8 bytes off the state (the
    // staged machine 224, the call futures 312 and 360), measured against
    // main's callgrind (hedge core 1,910, executor retry1 1,500, executor
    // hedge 2,783) and the Cortex-M3 call site's flash (11,868 B):
    // - no stored overall deadline, recomputed from the start and the
    //   policy at each read: 1,958 / 1,551 / 2,844, 11,920 B;
    // - one instant for the start and the deadline (the deadline when the
    //   call has one, else the start; a flag in the padding; the start,
    //   read once at the end, the deadline less the timeout), exact for a
    //   deadline that saturates: 1,945-1,947 / 1,525-1,535 /
    //   2,803-2,816, 12,084-12,152 B. Without the saturated case (a flag
    //   of two states) 1,930 / 1,508 / 2,784 and 11,936 B, but the start
    //   of a call whose deadline saturates is lost, which the staged and
    //   invariant tests catch.
}
