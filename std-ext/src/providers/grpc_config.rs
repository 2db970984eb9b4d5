//! gRPC service config ingest: the JSON that gRPC clients already read
//! (`methodConfig` with `retryPolicy` or `hedgingPolicy`, `timeout`, and
//! `retryThrottling`), as recourse policies, gRPC classifiers and a
//! [`GrpcThrottle`] budget.
//!
//! Why: a team moving from grpc-go or grpc-java has its retry settings in
//! this file already; it should bring the file, not translate it by hand.
//! The rules are gRFC A6's:
//!
//! - `retryPolicy`: `maxAttempts` > 1 (above 5 it is 5), `initialBackoff`
//!   and `maxBackoff` > 0, `backoffMultiplier` > 0, `retryableStatusCodes`
//!   non-empty; backoff is randomized as gRPC does (full jitter). The
//!   retryable codes become a [`GrpcClassifier`] named `grpc-retry-<i>`
//!   (`i`: the methodConfig's index).
//! - `hedgingPolicy`: `maxAttempts` > 1 (above 5 it is 5) — the first
//!   attempt and `maxAttempts - 1` hedges, `hedgingDelay` apart (default 0,
//!   which recourse raises to its 10 ms floor and reports);
//!   `nonFatalStatusCodes` become the classifier's retryable set and any
//!   other code ends the call. A method config has at most one of the two.
//! - `retryThrottling`: `maxTokens` in 1..=1000, `tokenRatio` > 0 with at
//!   most 3 decimals: a [`GrpcThrottle`] named [`THROTTLE_BUDGET`] gating
//!   every retry and hedge.
//! - `name`: `{"service": s, "method": m}` matches the key `s/m`;
//!   `{"service": s}` every method of `s`; `{}` (or an empty service) is the
//!   default. A name listed twice is an error.
//! - `timeout` is the call's overall timeout.
//!
//! Unknown fields of the service config and of a method config are ignored
//! (the file has load-balancing and size settings recourse does not use);
//! unknown fields inside `retryPolicy`, `hedgingPolicy`, `retryThrottling`
//! and `name` are errors, as are values outside the rules above, each naming
//! the field.

// A `DocumentError` is big, and produced only when a config is rejected.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;

use recourse_core::budget::GrpcThrottle;
use recourse_core::policy::{ChangedFields, Jitter, Normalized, Policy};
use recourse_core::policy_serde::parse_duration;
use recourse_core::PolicyKey;
use serde::Deserialize;
use tonic::Code;

use crate::classify::ClassifierRegistry;
use crate::grpc::GrpcClassifier;
use crate::provider::{PolicyLookup, PolicyProvider, PolicySource, ProviderError};
use crate::providers::document::{de_json_pub, DocumentError};

/// The budget name of `retryThrottling`.
pub const THROTTLE_BUDGET: &str = "grpc-throttle";

/// gRFC A6: `maxAttempts` above this is treated as this.
pub const MAX_ATTEMPTS_CAP: u32 = 5;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceConfig {
    #[serde(default)]
    method_config: Vec<MethodConfig>,
    retry_throttling: Option<RetryThrottling>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MethodConfig {
    #[serde(default)]
    name: Vec<Name>,
    timeout: Option<String>,
    retry_policy: Option<RetryPolicy>,
    hedging_policy: Option<HedgingPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Name {
    #[serde(default)]
    service: String,
    #[serde(default)]
    method: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: String,
    max_backoff: String,
    backoff_multiplier: f64,
    retryable_status_codes: Vec<StatusCode>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HedgingPolicy {
    max_attempts: u32,
    #[serde(default)]
    hedging_delay: Option<String>,
    #[serde(default)]
    non_fatal_status_codes: Vec<StatusCode>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RetryThrottling {
    max_tokens: u32,
    token_ratio: f64,
}

/// A status code by name (`"UNAVAILABLE"`) or number (`14`).
#[derive(Deserialize)]
#[serde(untagged)]
enum StatusCode {
    Number(i32),
    Name(String),
}

const CODES: [(&str, Code); 17] = [
    ("OK", Code::Ok),
    ("CANCELLED", Code::Cancelled),
    ("UNKNOWN", Code::Unknown),
    ("INVALID_ARGUMENT", Code::InvalidArgument),
    ("DEADLINE_EXCEEDED", Code::DeadlineExceeded),
    ("NOT_FOUND", Code::NotFound),
    ("ALREADY_EXISTS", Code::AlreadyExists),
    ("PERMISSION_DENIED", Code::PermissionDenied),
    ("RESOURCE_EXHAUSTED", Code::ResourceExhausted),
    ("FAILED_PRECONDITION", Code::FailedPrecondition),
    ("ABORTED", Code::Aborted),
    ("OUT_OF_RANGE", Code::OutOfRange),
    ("UNIMPLEMENTED", Code::Unimplemented),
    ("INTERNAL", Code::Internal),
    ("UNAVAILABLE", Code::Unavailable),
    ("DATA_LOSS", Code::DataLoss),
    ("UNAUTHENTICATED", Code::Unauthenticated),
];

impl StatusCode {
    fn code(&self) -> Option<Code> {
        match self {
            Self::Number(n) => CODES.get(usize::try_from(*n).ok()?).map(|(_, c)| *c),
            Self::Name(s) => CODES
                .iter()
                .find(|(name, _)| s.eq_ignore_ascii_case(name))
                .map(|(_, c)| *c),
        }
    }
}

/// A gRPC service config, read and validated.
pub struct GrpcServiceConfig {
    /// Answers lookups by `service/method` key.
    pub provider: GrpcConfigProvider,
    /// The classifiers the policies name, to register for your result type
    /// ([`GrpcServiceConfig::register_classifiers`]).
    pub classifiers: Vec<(String, GrpcClassifier)>,
    /// `retryThrottling`, to register as [`THROTTLE_BUDGET`].
    pub throttle: Option<GrpcThrottle>,
    /// Keys whose policy normalization clamped, with the fields; and A6's
    /// caps (`maxAttempts` above 5) as `retry.max_attempts` /
    /// `hedge.max_hedges`.
    pub clamped: Vec<(String, ChangedFields)>,
    /// Keys whose `maxAttempts` A6 capped at 5.
    pub capped: Vec<String>,
}

impl core::fmt::Debug for GrpcServiceConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GrpcServiceConfig")
            .field("classifiers", &self.classifiers)
            .field("throttle", &self.throttle)
            .field("capped", &self.capped)
            .finish_non_exhaustive()
    }
}

impl GrpcServiceConfig {
    /// Reads a service config.
    ///
    /// # Errors
    ///
    /// Malformed JSON, a wrong type, a value outside A6's rules, a name
    /// listed twice; the error names the field path
    /// (`methodConfig.0.retryPolicy.maxAttempts`).
    pub fn from_json(text: &str) -> Result<Self, DocumentError> {
        let config: ServiceConfig = de_json_pub(text)?;
        let mut exact = HashMap::new();
        let mut services = HashMap::new();
        let mut default = None;
        let mut classifiers = Vec::new();
        let mut clamped = Vec::new();
        let mut capped = Vec::new();
        let throttle = match &config.retry_throttling {
            None => None,
            Some(t) => Some(throttle(t)?),
        };
        for (i, mc) in config.method_config.iter().enumerate() {
            let at = |field: &str| format!("methodConfig.{i}.{field}");
            let (policy, classifier, was_capped) = method_policy(mc, i, throttle.is_some(), &at)?;
            let normalized = Arc::new(crate::static_provider::normalize(policy).map_err(|e| {
                let mut err = DocumentError::from_message(e.to_string());
                err.field = Some(at(e.field));
                err
            })?);
            if let Some(c) = classifier {
                classifiers.push(c);
            }
            for (j, name) in mc.name.iter().enumerate() {
                let (key, slot) = if name.service.is_empty() {
                    if !name.method.is_empty() {
                        return Err(field_error(
                            at(&format!("name.{j}.method")),
                            "a method without a service",
                            "a method needs its service",
                        ));
                    }
                    ("<default>".to_owned(), &mut default)
                } else if name.method.is_empty() {
                    let key = name.service.clone();
                    let slot = services.entry(key.clone()).or_insert(None);
                    (key, slot)
                } else {
                    let key = format!("{}/{}", name.service, name.method);
                    let slot = exact.entry(key.clone()).or_insert(None);
                    (key, slot)
                };
                if slot.is_some() {
                    return Err(field_error(
                        at(&format!("name.{j}")),
                        &format!("`{key}` is named by more than one method config"),
                        "each name at most once",
                    ));
                }
                *slot = Some(Arc::clone(&normalized));
                if !normalized.changed.is_empty() {
                    clamped.push((key.clone(), normalized.changed));
                }
                if was_capped {
                    capped.push(key);
                }
            }
        }
        let flatten = |m: HashMap<String, Option<Arc<Normalized>>>| {
            m.into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect::<HashMap<_, _>>()
        };
        Ok(Self {
            provider: GrpcConfigProvider {
                exact: flatten(exact),
                services: flatten(services),
                default,
            },
            classifiers,
            throttle,
            clamped,
            capped,
        })
    }

    /// Registers the classifiers for calls returning `Result<T,
    /// tonic::Status>`.
    pub fn register_classifiers<T: 'static>(&self, registry: &mut ClassifierRegistry) {
        for (name, c) in &self.classifiers {
            registry.register::<T, tonic::Status, _>(name.clone(), *c);
        }
    }
}

fn field_error(field: String, message: &str, allowed: &'static str) -> DocumentError {
    let mut e = DocumentError::from_message(message.to_owned());
    e.field = Some(field);
    e.allowed = Some(allowed);
    e
}

fn throttle(t: &RetryThrottling) -> Result<GrpcThrottle, DocumentError> {
    if t.max_tokens == 0 || t.max_tokens > 1000 {
        return Err(field_error(
            "retryThrottling.maxTokens".into(),
            &format!("invalid value: {}", t.max_tokens),
            "an integer 1..=1000",
        ));
    }
    let milli = t.token_ratio * 1000.0;
    if !(t.token_ratio.is_finite() && t.token_ratio > 0.0 && milli <= f64::from(u32::MAX)) {
        return Err(field_error(
            "retryThrottling.tokenRatio".into(),
            &format!("invalid value: {}", t.token_ratio),
            "a number > 0 with at most 3 decimal places",
        ));
    }
    // A6: at most 3 decimal places; more are dropped.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ratio_milli = (milli.floor() as u32).max(1);
    Ok(GrpcThrottle::new(t.max_tokens, ratio_milli))
}

fn proto_duration(
    s: &str,
    field: String,
    positive: bool,
) -> Result<core::time::Duration, DocumentError> {
    let allowed = if positive {
        "a duration > 0 such as \"0.1s\""
    } else {
        "a duration such as \"0.5s\""
    };
    match parse_duration(s) {
        Ok(d) if !positive || !d.is_zero() => Ok(d),
        Ok(_) => Err(field_error(field, "invalid value: zero", allowed)),
        Err(e) => Err(field_error(
            field,
            &format!("invalid value: {s:?}: {}", e.problem()),
            allowed,
        )),
    }
}

fn codes(list: &[StatusCode], field: String) -> Result<Vec<Code>, DocumentError> {
    list.iter()
        .enumerate()
        .map(|(k, c)| {
            c.code().ok_or_else(|| {
                let shown = match c {
                    StatusCode::Number(n) => n.to_string(),
                    StatusCode::Name(s) => format!("{s:?}"),
                };
                field_error(
                    format!("{field}.{k}"),
                    &format!("unknown status code {shown}"),
                    "a gRPC status code name such as \"UNAVAILABLE\", or its number 0..=16",
                )
            })
        })
        .collect()
}

type MethodPolicy = (Policy, Option<(String, GrpcClassifier)>, bool);

fn method_policy(
    mc: &MethodConfig,
    i: usize,
    throttled: bool,
    at: &dyn Fn(&str) -> String,
) -> Result<MethodPolicy, DocumentError> {
    let mut p = Policy::DEFAULT;
    if let Some(t) = &mc.timeout {
        p.retry.overall_timeout = Some(proto_duration(t, at("timeout"), true)?);
    }
    if throttled {
        p.retry.budget.name = recourse_core::policy::name("retry.budget.name", THROTTLE_BUDGET)
            .map_err(|e| DocumentError::from_message(e.to_string()))?;
        p.hedge.budget.name.clone_from(&p.retry.budget.name);
    }
    let class_name = format!("grpc-retry-{i}");
    let named = |p: &mut Policy| {
        p.retry.classifier = recourse_core::policy::name("retry.classifier", &class_name)
            .map_err(|e| DocumentError::from_message(e.to_string()))?;
        Ok::<_, DocumentError>(())
    };
    match (&mc.retry_policy, &mc.hedging_policy) {
        (Some(_), Some(_)) => Err(field_error(
            at("hedgingPolicy"),
            "a method config with both retryPolicy and hedgingPolicy",
            "at most one of retryPolicy and hedgingPolicy",
        )),
        (None, None) => {
            // No retries configured: gRPC makes one attempt.
            p.retry.max_attempts = 1;
            Ok((p, None, false))
        }
        (Some(r), None) => {
            if r.max_attempts < 2 {
                return Err(field_error(
                    at("retryPolicy.maxAttempts"),
                    &format!("invalid value: {}", r.max_attempts),
                    "an integer > 1 (above 5 is treated as 5)",
                ));
            }
            if !(r.backoff_multiplier.is_finite() && r.backoff_multiplier > 0.0) {
                return Err(field_error(
                    at("retryPolicy.backoffMultiplier"),
                    &format!("invalid value: {}", r.backoff_multiplier),
                    "a number > 0",
                ));
            }
            if r.retryable_status_codes.is_empty() {
                return Err(field_error(
                    at("retryPolicy.retryableStatusCodes"),
                    "empty",
                    "a non-empty list of status codes",
                ));
            }
            let codes = codes(
                &r.retryable_status_codes,
                at("retryPolicy.retryableStatusCodes"),
            )?;
            p.retry.max_attempts = r.max_attempts.min(MAX_ATTEMPTS_CAP);
            p.retry.initial_backoff =
                proto_duration(&r.initial_backoff, at("retryPolicy.initialBackoff"), true)?;
            p.retry.max_backoff =
                proto_duration(&r.max_backoff, at("retryPolicy.maxBackoff"), true)?;
            p.retry.backoff_multiplier = r.backoff_multiplier;
            p.retry.jitter = Jitter::Full;
            named(&mut p)?;
            Ok((
                p,
                Some((class_name.clone(), GrpcClassifier::with_retryable(&codes))),
                r.max_attempts > MAX_ATTEMPTS_CAP,
            ))
        }
        (None, Some(h)) => {
            if h.max_attempts < 2 {
                return Err(field_error(
                    at("hedgingPolicy.maxAttempts"),
                    &format!("invalid value: {}", h.max_attempts),
                    "an integer > 1 (above 5 is treated as 5)",
                ));
            }
            let codes = codes(
                &h.non_fatal_status_codes,
                at("hedgingPolicy.nonFatalStatusCodes"),
            )?;
            let delay = match &h.hedging_delay {
                Some(d) => proto_duration(d, at("hedgingPolicy.hedgingDelay"), false)?,
                None => core::time::Duration::ZERO,
            };
            p.retry.max_attempts = 1;
            p.hedge.enabled = true;
            p.hedge.max_hedges = h.max_attempts.min(MAX_ATTEMPTS_CAP) - 1;
            // Zero is "all at once" in gRPC; recourse's floor is 10 ms
            // (normalization raises it and reports hedge.hedge_delay).
            p.hedge.hedge_delay = if delay.is_zero() {
                core::time::Duration::from_nanos(1)
            } else {
                delay
            };
            p.hedge.cancel_on_first_terminal = true;
            named(&mut p)?;
            Ok((
                p,
                Some((class_name.clone(), GrpcClassifier::with_retryable(&codes))),
                h.max_attempts > MAX_ATTEMPTS_CAP,
            ))
        }
    }
}

/// Policies from a gRPC service config: the key `service/method` (for
/// example `"helloworld.Greeter/SayHello"`), else the service's policy,
/// else the default (source `default`).
#[derive(Debug, Clone)]
pub struct GrpcConfigProvider {
    exact: HashMap<String, Arc<Normalized>>,
    services: HashMap<String, Arc<Normalized>>,
    default: Option<Arc<Normalized>>,
}

impl PolicyProvider for GrpcConfigProvider {
    fn policy(&self, key: PolicyKey<'_>) -> Result<PolicyLookup, ProviderError> {
        let joined = crate::providers::joined_key(key);
        let full: &str = &joined;
        let found = self.exact.get(full).or_else(|| {
            let service = full.split_once('/').map_or(full, |(s, _)| s);
            self.services.get(service)
        });
        if let Some(p) = found {
            return Ok(PolicyLookup {
                policy: Arc::clone(p),
                source: PolicySource::Static,
            });
        }
        match &self.default {
            Some(p) => Ok(PolicyLookup {
                policy: Arc::clone(p),
                source: PolicySource::Default,
            }),
            None => Err(ProviderError::NotFound),
        }
    }

    /// Fixed when built: always the same generation.
    fn generation(&self) -> Option<u64> {
        Some(0)
    }
}
