//! `JsonSchema` for the wrappers and for [`Policy`].
extern crate alloc;
use alloc::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

use super::sections::PolicyDoc;
use super::values::{Dur, NameW, OptDur, Permille};
use crate::policy::{Jitter, Policy, UpstreamRetry, NAME_CAPACITY};

const DURATION_PATTERN: &str = r"^\s*([0-9]+(\.[0-9]{1,9})?|\.[0-9]{1,9})(ns|us|µs|ms|s|m|h)(([0-9]+(\.[0-9]{1,9})?|\.[0-9]{1,9})(ns|us|µs|ms|s|m|h))*\s*$";

impl JsonSchema for Dur {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration with a unit (ns, us, ms, s, m, h), such as \"250ms\", \"2s\" or \"1m30s\".",
            "examples": ["250ms", "2s"]
        })
    }
}

impl JsonSchema for OptDur {
    fn schema_name() -> Cow<'static, str> {
        "OptionalDuration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration such as \"2s\", or \"off\" (or null) for none.",
            "anyOf": [
                { "type": "string", "pattern": DURATION_PATTERN },
                { "const": "off" },
                { "type": "null" }
            ]
        })
    }
}

impl JsonSchema for NameW {
    fn schema_name() -> Cow<'static, str> {
        "Name".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": NAME_CAPACITY,
            "description": "A name of at most 32 bytes; empty means the default."
        })
    }
}

impl JsonSchema for Permille {
    fn schema_name() -> Cow<'static, str> {
        "Permille".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Permille (500 = half), or a percentage such as \"50%\" or \"0.5%\".",
            "anyOf": [
                { "type": "integer", "minimum": 0, "maximum": u32::MAX },
                { "type": "string", "pattern": r"^\s*[0-9]{1,7}(\.[0-9])?\s*%$" }
            ]
        })
    }
}

impl JsonSchema for Jitter {
    fn schema_name() -> Cow<'static, str> {
        "Jitter".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "How each backoff is randomized.",
            "enum": ["none", "full", "equal", "decorrelated"]
        })
    }
}

impl JsonSchema for UpstreamRetry {
    fn schema_name() -> Cow<'static, str> {
        "UpstreamRetry".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "What a layer does when the request it serves is itself a retry or a hedge upstream.",
            "enum": ["always", "not_when_retry", "shared_allowance"]
        })
    }
}

impl JsonSchema for Policy {
    fn schema_name() -> Cow<'static, str> {
        "Policy".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        PolicyDoc::json_schema(generator)
    }
}
