//! gRPC classification: what a `tonic::Status` means for the call.
//!
//! Why a gRPC classifier: a gRPC status code already says whether a retry can
//! help, and the gRPC retry design ([gRFC A6]) makes that a configured set,
//! `retryableStatusCodes`, rather than "retry every error". `UNAVAILABLE`
//! (the server is restarting, the connection dropped) and
//! `RESOURCE_EXHAUSTED` (a quota, a full queue) are worth another try;
//! `INVALID_ARGUMENT` or `NOT_FOUND` will fail the same way every time.
//! Servers can also push back: the `grpc-retry-pushback-ms` trailer tells the
//! client how long to wait, or (negative) not to retry at all.
//!
//! Default rules:
//!
//! | result | kind | reason |
//! | --- | --- | --- |
//! | `Ok(_)` | success | `success` |
//! | `UNAVAILABLE` | retryable | `grpc_Unavailable` |
//! | `RESOURCE_EXHAUSTED` | retryable | `grpc_ResourceExhausted` |
//! | `DEADLINE_EXCEEDED` | retryable | `context_deadline_exceeded` |
//! | `CANCELLED` | abort | `context_canceled` |
//! | any other code | non-retryable | `grpc_<Code>`, e.g. `grpc_InvalidArgument` |
//!
//! The reason depends only on the code; the kind depends on the retryable
//! set, which [`GrpcClassifier::with_retryable`] replaces as a service
//! config's `retryableStatusCodes` would. A code outside the set is
//! non-retryable, except `CANCELLED`, which is an abort. A6 lets a service
//! list `CANCELLED` (a server or proxy that cancels the stream), and
//! recourse honours that: listed, it is retryable. A caller's own
//! cancellation never reaches the classifier (it drops the call's future),
//! so this is only ever the server's `CANCELLED`. `OK` as an error status
//! is never retryable.
//!
//! Pushback, on an outcome that would be retried (A6, "Pushback"): one
//! `grpc-retry-pushback-ms` value that is a non-negative integer becomes the
//! retry-after hint, in milliseconds; a negative, unparseable or repeated
//! value means "do not retry", a non-retryable `grpc_pushback_stop`. On other
//! outcomes pushback is ignored.
//!
//! ```
//! use recourse::grpc::GrpcClassifier;
//! use recourse::{Classifier, OutcomeKind};
//! use tonic::{Code, Status};
//!
//! let c = GrpcClassifier::new();
//! let outcome = Classifier::<(), _>::classify(&c, &Err(Status::unavailable("restarting")));
//! assert_eq!((outcome.kind, outcome.reason), (OutcomeKind::Retryable, "grpc_Unavailable"));
//!
//! // Retry only UNAVAILABLE, as a service config with
//! // `"retryableStatusCodes": ["UNAVAILABLE"]` would.
//! let c = GrpcClassifier::with_retryable(&[Code::Unavailable]);
//! let outcome = Classifier::<(), _>::classify(&c, &Err(Status::resource_exhausted("quota")));
//! assert_eq!(outcome.kind, OutcomeKind::NonRetryable);
//! ```
//!
//! [gRFC A6]: https://github.com/grpc/proposal/blob/master/A6-client-retries.md

use core::time::Duration;

use recourse_core::{Classifier, Outcome};
use tonic::{Code, Status};

/// The gRPC classifier's reason codes: one per status code, and pushback.
pub mod reason {
    /// The call returned `Ok`.
    pub const SUCCESS: &str = recourse_core::outcome::reason::SUCCESS;
    /// `OK` as an error status.
    pub const OK: &str = "grpc_Ok";
    /// `CANCELLED`.
    pub const CANCELLED: &str = "context_canceled";
    /// `UNKNOWN`.
    pub const UNKNOWN: &str = "grpc_Unknown";
    /// `INVALID_ARGUMENT`.
    pub const INVALID_ARGUMENT: &str = "grpc_InvalidArgument";
    /// `DEADLINE_EXCEEDED`.
    pub const DEADLINE_EXCEEDED: &str = "context_deadline_exceeded";
    /// `NOT_FOUND`.
    pub const NOT_FOUND: &str = "grpc_NotFound";
    /// `ALREADY_EXISTS`.
    pub const ALREADY_EXISTS: &str = "grpc_AlreadyExists";
    /// `PERMISSION_DENIED`.
    pub const PERMISSION_DENIED: &str = "grpc_PermissionDenied";
    /// `RESOURCE_EXHAUSTED`.
    pub const RESOURCE_EXHAUSTED: &str = "grpc_ResourceExhausted";
    /// `FAILED_PRECONDITION`.
    pub const FAILED_PRECONDITION: &str = "grpc_FailedPrecondition";
    /// `ABORTED`.
    pub const ABORTED: &str = "grpc_Aborted";
    /// `OUT_OF_RANGE`.
    pub const OUT_OF_RANGE: &str = "grpc_OutOfRange";
    /// `UNIMPLEMENTED`.
    pub const UNIMPLEMENTED: &str = "grpc_Unimplemented";
    /// `INTERNAL`.
    pub const INTERNAL: &str = "grpc_Internal";
    /// `UNAVAILABLE`.
    pub const UNAVAILABLE: &str = "grpc_Unavailable";
    /// `DATA_LOSS`.
    pub const DATA_LOSS: &str = "grpc_DataLoss";
    /// `UNAUTHENTICATED`.
    pub const UNAUTHENTICATED: &str = "grpc_Unauthenticated";
    /// A retryable status whose `grpc-retry-pushback-ms` said not to retry
    /// (negative, unparseable or repeated).
    pub const PUSHBACK_STOP: &str = "grpc_pushback_stop";
}

/// The metadata key of the server's pushback, in milliseconds.
pub const PUSHBACK_KEY: &str = "grpc-retry-pushback-ms";

/// The reason code of a status `code`.
pub const fn code_reason(code: Code) -> &'static str {
    match code {
        Code::Ok => reason::OK,
        Code::Cancelled => reason::CANCELLED,
        Code::Unknown => reason::UNKNOWN,
        Code::InvalidArgument => reason::INVALID_ARGUMENT,
        Code::DeadlineExceeded => reason::DEADLINE_EXCEEDED,
        Code::NotFound => reason::NOT_FOUND,
        Code::AlreadyExists => reason::ALREADY_EXISTS,
        Code::PermissionDenied => reason::PERMISSION_DENIED,
        Code::ResourceExhausted => reason::RESOURCE_EXHAUSTED,
        Code::FailedPrecondition => reason::FAILED_PRECONDITION,
        Code::Aborted => reason::ABORTED,
        Code::OutOfRange => reason::OUT_OF_RANGE,
        Code::Unimplemented => reason::UNIMPLEMENTED,
        Code::Internal => reason::INTERNAL,
        Code::Unavailable => reason::UNAVAILABLE,
        Code::DataLoss => reason::DATA_LOSS,
        Code::Unauthenticated => reason::UNAUTHENTICATED,
    }
}

/// Classifies `Result<T, tonic::Status>` by status code and pushback; see the
/// [module docs](self) for the rules.
///
/// A small `Copy` value (the retryable set is a bit set), so one classifier
/// can be shared by every call of a method, or made per call.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct GrpcClassifier {
    /// Bit `code as i32` set: that code is retryable.
    retryable: u32,
}

impl GrpcClassifier {
    /// The default retryable set: `UNAVAILABLE`, `RESOURCE_EXHAUSTED`,
    /// `DEADLINE_EXCEEDED`.
    pub const DEFAULT_RETRYABLE: &'static [Code] = &[
        Code::Unavailable,
        Code::ResourceExhausted,
        Code::DeadlineExceeded,
    ];

    /// The classifier with the default retryable set
    /// ([`DEFAULT_RETRYABLE`](Self::DEFAULT_RETRYABLE)).
    pub const fn new() -> Self {
        Self::with_retryable(Self::DEFAULT_RETRYABLE)
    }

    /// A classifier that retries exactly `codes`, like A6's
    /// `retryableStatusCodes` (which A6 requires to be non-empty; an empty
    /// set here retries nothing). `OK` in `codes` is ignored; `CANCELLED`
    /// in `codes` makes it retryable instead of an abort.
    pub const fn with_retryable(codes: &[Code]) -> Self {
        let mut retryable = 0;
        let mut i = 0;
        while i < codes.len() {
            if !matches!(codes[i], Code::Ok) {
                retryable |= bit(codes[i]);
            }
            i += 1;
        }
        Self { retryable }
    }

    /// Whether an error status with `code` is retried (before pushback).
    pub const fn is_retryable(&self, code: Code) -> bool {
        self.retryable & bit(code) != 0
    }

    /// The outcome of an error `status`: its code's kind and reason, then
    /// pushback if the outcome is retryable.
    pub fn classify_status(&self, status: &Status) -> Outcome {
        let code = status.code();
        let reason = code_reason(code);
        if !self.is_retryable(code) {
            return match code {
                Code::Cancelled => Outcome::abort(reason),
                _ => Outcome::non_retryable(reason),
            };
        }
        let outcome = Outcome::retryable(reason);
        match pushback(status) {
            Pushback::None => outcome,
            Pushback::After(delay) => outcome.with_retry_after(delay),
            Pushback::Stop => Outcome::non_retryable(reason::PUSHBACK_STOP),
        }
    }
}

impl Default for GrpcClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Classifier<T, Status> for GrpcClassifier {
    fn classify(&self, result: &Result<T, Status>) -> Outcome {
        match result {
            Ok(_) => Outcome::SUCCESS,
            Err(status) => self.classify_status(status),
        }
    }
}

/// The code's bit in the retryable set. Codes are 0..=16.
const fn bit(code: Code) -> u32 {
    1 << (code as u32)
}

/// What the server's pushback says.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Pushback {
    /// No pushback: the usual backoff.
    None,
    /// Wait this long, then retry.
    After(Duration),
    /// Do not retry.
    Stop,
}

/// Reads `grpc-retry-pushback-ms` from the status's metadata (tonic puts the
/// response trailers there). As in grpc-go: exactly one value, parsed as a
/// signed integer; negative or invalid means stop, and so does more than one
/// value.
fn pushback(status: &Status) -> Pushback {
    let mut values = status.metadata().get_all(PUSHBACK_KEY).iter();
    let Some(value) = values.next() else {
        return Pushback::None;
    };
    if values.next().is_some() {
        return Pushback::Stop;
    }
    let ms = value
        .to_str()
        .ok()
        .and_then(|s| s.trim_matches([' ', '\t']).parse::<i64>().ok());
    match ms.and_then(|ms| u64::try_from(ms).ok()) {
        Some(ms) => Pushback::After(Duration::from_millis(ms)),
        None => Pushback::Stop,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use recourse_core::OutcomeKind::{self, Abort, NonRetryable, Retryable, Success};
    use tonic::metadata::{MetadataMap, MetadataValue};

    const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    fn classify(c: &GrpcClassifier, status: Status) -> Outcome {
        Classifier::<(), _>::classify(c, &Err(status))
    }

    fn with_pushback(code: Code, values: &[&str]) -> Status {
        let mut md = MetadataMap::new();
        for v in values {
            md.append(PUSHBACK_KEY, MetadataValue::try_from(*v).unwrap());
        }
        Status::with_metadata(code, "msg", md)
    }

    #[test]
    fn default_rules_for_every_code() {
        let table = [
            (Code::Ok, NonRetryable, "grpc_Ok"),
            (Code::Cancelled, Abort, "context_canceled"),
            (Code::Unknown, NonRetryable, "grpc_Unknown"),
            (Code::InvalidArgument, NonRetryable, "grpc_InvalidArgument"),
            (
                Code::DeadlineExceeded,
                Retryable,
                "context_deadline_exceeded",
            ),
            (Code::NotFound, NonRetryable, "grpc_NotFound"),
            (Code::AlreadyExists, NonRetryable, "grpc_AlreadyExists"),
            (
                Code::PermissionDenied,
                NonRetryable,
                "grpc_PermissionDenied",
            ),
            (Code::ResourceExhausted, Retryable, "grpc_ResourceExhausted"),
            (
                Code::FailedPrecondition,
                NonRetryable,
                "grpc_FailedPrecondition",
            ),
            (Code::Aborted, NonRetryable, "grpc_Aborted"),
            (Code::OutOfRange, NonRetryable, "grpc_OutOfRange"),
            (Code::Unimplemented, NonRetryable, "grpc_Unimplemented"),
            (Code::Internal, NonRetryable, "grpc_Internal"),
            (Code::Unavailable, Retryable, "grpc_Unavailable"),
            (Code::DataLoss, NonRetryable, "grpc_DataLoss"),
            (Code::Unauthenticated, NonRetryable, "grpc_Unauthenticated"),
        ];
        assert_eq!(table.len(), ALL.len());
        for c in [GrpcClassifier::new(), GrpcClassifier::default()] {
            for (code, kind, reason) in table {
                let o = classify(&c, Status::new(code, "msg"));
                assert_eq!((o.kind, o.reason, o.retry_after), (kind, reason, None));
                assert_eq!(code_reason(code), reason);
            }
        }
    }

    #[test]
    fn ok_is_success_for_any_value() {
        let c = GrpcClassifier::new();
        assert_eq!(c.classify(&Ok::<_, Status>(42)), Outcome::SUCCESS);
        assert_eq!(c.classify(&Ok::<_, Status>("x")).kind, Success);
    }

    #[test]
    fn configurable_retryable_set() {
        let cases: &[(&[Code], &[Code])] = &[
            (&[Code::Unavailable], &[Code::Unavailable]),
            (
                &[Code::Internal, Code::Aborted, Code::Unknown],
                &[Code::Internal, Code::Aborted, Code::Unknown],
            ),
            // Duplicates are harmless; OK is never retryable.
            (
                &[Code::Unavailable, Code::Unavailable, Code::Ok],
                &[Code::Unavailable],
            ),
            (&[], &[]),
            (&ALL, &ALL[1..]),
        ];
        for &(set, retried) in cases {
            let c = GrpcClassifier::with_retryable(set);
            for code in ALL {
                let o = classify(&c, Status::new(code, "msg"));
                assert_eq!(o.reason, code_reason(code), "{set:?} {code:?}");
                let want = if retried.contains(&code) {
                    Retryable
                } else if code == Code::Cancelled {
                    Abort
                } else {
                    NonRetryable
                };
                assert_eq!(o.kind, want, "{set:?} {code:?}");
                assert_eq!(c.is_retryable(code), want == Retryable);
            }
        }
        assert_eq!(
            GrpcClassifier::with_retryable(GrpcClassifier::DEFAULT_RETRYABLE),
            GrpcClassifier::new()
        );
    }

    #[test]
    fn pushback_on_retryable_codes() {
        let ms = |n: u64| Some(Duration::from_millis(n));
        /// Pushback values, kind, reason (`None`: the code's), hint.
        type Row = (
            &'static [&'static str],
            OutcomeKind,
            Option<&'static str>,
            Option<Duration>,
        );
        let table: &[Row] = &[
            (&[], Retryable, None, None),
            (&["0"], Retryable, None, ms(0)),
            (&["250"], Retryable, None, ms(250)),
            (&[" 1500 "], Retryable, None, ms(1500)),
            (&["+30"], Retryable, None, ms(30)),
            (
                &["9223372036854775807"],
                Retryable,
                None,
                ms(i64::MAX as u64),
            ),
            (&["-1"], NonRetryable, Some("grpc_pushback_stop"), None),
            (&["-9999"], NonRetryable, Some("grpc_pushback_stop"), None),
            (&["soon"], NonRetryable, Some("grpc_pushback_stop"), None),
            (&[""], NonRetryable, Some("grpc_pushback_stop"), None),
            (&["1.5"], NonRetryable, Some("grpc_pushback_stop"), None),
            (&["10ms"], NonRetryable, Some("grpc_pushback_stop"), None),
            (
                &["99999999999999999999"],
                NonRetryable,
                Some("grpc_pushback_stop"),
                None,
            ),
            (
                &["10", "20"],
                NonRetryable,
                Some("grpc_pushback_stop"),
                None,
            ),
        ];
        let c = GrpcClassifier::new();
        for code in [
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::DeadlineExceeded,
        ] {
            for &(values, kind, reason, hint) in table {
                let o = classify(&c, with_pushback(code, values));
                let reason = reason.unwrap_or(code_reason(code));
                assert_eq!(
                    (o.kind, o.reason, o.retry_after),
                    (kind, reason, hint),
                    "{code:?} {values:?}"
                );
            }
        }
    }

    #[test]
    fn pushback_is_ignored_on_other_outcomes() {
        let c = GrpcClassifier::new();
        for values in [&["-1"][..], &["100"], &["junk"]] {
            let o = classify(&c, with_pushback(Code::InvalidArgument, values));
            assert_eq!(
                (o.kind, o.reason, o.retry_after),
                (NonRetryable, "grpc_InvalidArgument", None)
            );
            let o = classify(&c, with_pushback(Code::Cancelled, values));
            assert_eq!(
                (o.kind, o.reason, o.retry_after),
                (Abort, "context_canceled", None)
            );
        }
        // A code made retryable takes pushback like the default ones.
        let c = GrpcClassifier::with_retryable(&[Code::Internal]);
        let o = classify(&c, with_pushback(Code::Internal, &["40"]));
        assert_eq!(o.retry_after, Some(Duration::from_millis(40)));
    }

    #[test]
    fn non_ascii_pushback_stops() {
        let mut md = MetadataMap::new();
        md.insert(
            PUSHBACK_KEY,
            MetadataValue::try_from(&b"1\xe9"[..]).unwrap(),
        );
        let o = classify(
            &GrpcClassifier::new(),
            Status::with_metadata(Code::Unavailable, "", md),
        );
        assert_eq!(o.reason, "grpc_pushback_stop");
    }
}
