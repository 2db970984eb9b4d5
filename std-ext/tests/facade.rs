//! The facade on the global default executor, and on an explicit one.

mod common;

use std::sync::Arc;

use common::{attempts, one, Counting};
use recourse::{Error, Executor};

#[tokio::test(start_paused = true)]
async fn the_default_executor_can_be_installed_once_and_is_used() {
    let provider = Arc::new(Counting::new(one("svc.A", attempts(2))));
    let installed =
        recourse::set_default_executor(Executor::builder().provider(Arc::clone(&provider)).build());
    assert!(installed.is_ok());
    // A second install is refused and hands the executor back.
    let again = recourse::set_default_executor(Executor::new());
    assert!(again.is_err());

    let result = recourse::do_value("svc.A", |_| async { Err::<(), _>("boom") }).await;
    assert_eq!(
        result,
        Err(Error::RetriesExhausted {
            last: Some("boom"),
            attempts: 2
        })
    );
    assert_eq!(provider.lookups(), 1);

    let (result, timeline) =
        recourse::do_value_with_timeline("svc.A", |_| async { Ok::<_, ()>(7) }).await;
    assert_eq!(result, Ok(7));
    assert_eq!(timeline.attribute("policy_source"), Some("static"));
    assert_eq!(provider.lookups(), 2);
    assert_eq!(
        recourse::default_executor().missing_policy_mode(),
        Default::default()
    );
}

#[tokio::test(start_paused = true)]
async fn explicit_executor_variants() {
    let exec = Executor::builder()
        .provider(one("svc.B", attempts(4)))
        .build();
    let result = recourse::do_value_with(&exec, "svc.B", |_| async { Err::<(), _>("boom") }).await;
    assert!(matches!(
        result,
        Err(Error::RetriesExhausted { attempts: 4, .. })
    ));
    let (result, timeline) =
        recourse::do_value_with_timeline_with(&exec, "svc.B", |_| async { Err::<(), _>("x") })
            .await;
    assert!(result.is_err());
    assert_eq!(timeline.attempts.len(), 4);
}
