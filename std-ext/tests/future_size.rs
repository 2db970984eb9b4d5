//! The size of a facade call future for a trivial operation: printed (run
//! with `--nocapture`) and bounded, so that growth is noticed.

use core::mem::size_of_val;

use recourse::{AttemptInfo, Executor};

fn trivial(_: AttemptInfo) -> core::future::Ready<Result<u32, ()>> {
    core::future::ready(Ok(1))
}

#[test]
fn facade_call_future_size() {
    let exec = Executor::new();
    let call = exec.call("svc.Get", trivial);
    let facade = recourse::do_value("svc.Get", trivial);
    let (c, f) = (size_of_val(&call), size_of_val(&facade));
    println!("executor call future {c} bytes, facade do_value future {f} bytes");
    // 1376 / 1400 bytes before issue 13; containing the operation's panics
    // (a watch on each attempt's future, one around the driver, the call's
    // panic flags) added 48: 1424 / 1448. The breaker permit carrying its
    // key's hash (one search per store use, issue 16) added 8: 1432 / 1456.
    // Counting a budget's `settle` panic of a call dropped mid-attempt
    // (issue 17: a guard that counts when the call's future drops, two
    // references) added 8 to each: 1440 / 1464. Issue 16's target is far
    // below (512 for the facade): see its note.
    assert!(c <= 1440, "executor call future grew to {c} bytes");
    assert!(f <= 1464, "facade call future grew to {f} bytes");
}
