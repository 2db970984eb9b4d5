//! What each observer adds to a call, in instructions (callgrind).
//!
//! `bash benches/observer_cost.sh` runs every variant under callgrind; by
//! hand: `cargo run --release -p recourse-benches --example observer_cost --
//! tracing 10000`.
//!
//! Every variant makes the same successful single-attempt call through an
//! executor on the default timer (outside a runtime: async-io's clock), with
//! a different observer. The calls after a warm-up of as many run inside
//! [`instr_measured`], the one function callgrind collects
//! (`--toggle-collect`), so a variant's count minus the `none` variant's is
//! what its observer costs per call.
//!
//! | variant | observer | telemetry backend installed |
//! |---|---|---|
//! | `none` | — | — |
//! | `tracing-off` | `TracingObserver` | no subscriber |
//! | `tracing` | `TracingObserver`, call span from `call_span` | `tracing_subscriber::registry()` |
//! | `metrics` | `MetricsObserver` | metrics-exporter-prometheus's recorder |
//! | `opentelemetry` | `OtelMetricsObserver` | OTel SDK meter provider, periodic reader |

use core::future::Future;
use core::hint::black_box;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use recourse::observers::metrics::MetricsObserver;
use recourse::observers::opentelemetry::OtelMetricsObserver;
use recourse::observers::tracing::{call_span, TracingObserver};
use recourse::Executor;
use tracing::Instrument;

const VARIANTS: [&str; 5] = ["none", "tracing-off", "tracing", "metrics", "opentelemetry"];

/// Polls a future that completes without waiting.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the call waited"),
    }
}

fn one(exec: &Executor, span: bool) -> bool {
    let call = exec.call("svc.Get", |_| async { Ok::<u32, ()>(1) });
    let result = if span {
        ready(call.instrument(call_span("svc.Get")))
    } else {
        ready(call)
    };
    result.is_ok()
}

#[inline(never)]
fn warm_up(exec: &Executor, span: bool, calls: u64) {
    for _ in 0..calls {
        black_box(one(exec, span));
    }
}

/// `calls` calls; callgrind collects only here.
#[inline(never)]
fn instr_measured(exec: &Executor, span: bool, calls: u64) -> u64 {
    let mut ok = 0;
    for _ in 0..calls {
        ok += u64::from(black_box(one(black_box(exec), span)));
    }
    ok
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(variant) = args.next() else {
        for v in VARIANTS {
            println!("{v}");
        }
        return;
    };
    let calls: u64 = args
        .next()
        .map_or(10_000, |n| n.parse().expect("a number of calls"));
    let builder = Executor::builder();
    let mut _keep_provider = None;
    let (exec, span) = match variant.as_str() {
        "none" => (builder.build(), false),
        "tracing-off" => (builder.observer(TracingObserver::new()).build(), false),
        "tracing" => {
            tracing::subscriber::set_global_default(tracing_subscriber::registry())
                .expect("first subscriber");
            (builder.observer(TracingObserver::new()).build(), true)
        }
        "metrics" => {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .expect("first recorder");
            (builder.observer(MetricsObserver::new()).build(), false)
        }
        "opentelemetry" => {
            use opentelemetry::metrics::MeterProvider;
            // The SDK's periodic reader (every 60 s: it never fires here)
            // over its in-memory exporter.
            let exporter = opentelemetry_sdk::metrics::InMemoryMetricExporter::default();
            let reader = opentelemetry_sdk::metrics::PeriodicReader::builder(exporter).build();
            let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
                .with_reader(reader)
                .build();
            let meter = provider.meter("recourse");
            _keep_provider = Some(provider);
            (
                builder.observer(OtelMetricsObserver::new(&meter)).build(),
                false,
            )
        }
        other => panic!("no variant {other}"),
    };
    warm_up(&exec, span, calls);
    let ok = instr_measured(&exec, span, calls);
    assert_eq!(ok, calls, "every call returned Ok");
}
