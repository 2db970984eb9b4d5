//! The policy document: many keys plus a default, in TOML or JSON.
//!
//! Why validate a whole document before any of it is used: a document is one
//! edit by one operator. If one key of it is wrong, serving the other keys'
//! new values next to the old value of the broken one would be a state
//! nobody wrote. So [`PolicyDocument::validate`] normalizes every policy
//! first and only then builds the [`StaticProvider`] that answers lookups;
//! a provider swaps that in whole, or keeps what it had.
//!
//! ```toml
//! [default.retry]
//! max_attempts = 3
//!
//! [policies."user-service.GetUser".retry]
//! max_attempts = 5
//! initial_backoff = "20ms"
//! jitter = "full"
//! overall_timeout = "2s"
//!
//! [policies."user-service.GetUser".circuit]
//! enabled = true
//! failure_ratio_permille = "50%"
//! ```
//!
//! Every error names the file, the policy key, the dotted field path (as in
//! `policy_clamped_fields`), the bad value and what is allowed there, with
//! line and column where the format gives them (see [`DocumentError`]).

// A `DocumentError` is big (it names file, key, field and position) and is
// returned only when a document is rejected, never on a call's path.
#![allow(clippy::result_large_err)]

use core::fmt;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use recourse_core::policy::{ChangedFields, Policy};
use recourse_core::policy_serde::allowed;
use serde::{Deserialize, Serialize};

use crate::static_provider::StaticProvider;

/// Most bytes a policy key may have in a document.
pub const MAX_KEY_LEN: usize = 128;

/// A policy document: a default and policies per key. Fields not written
/// take the reference defaults ([`Policy::DEFAULT`]); unknown fields are
/// errors.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    /// The policy for keys without their own (source `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Policy>,
    /// Policies by key, such as `"user-service.GetUser"`.
    #[serde(default)]
    pub policies: BTreeMap<String, Policy>,
}

/// The two formats a document may be written in.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// TOML (the default for any extension other than `.json`).
    Toml,
    /// JSON.
    Json,
}

impl Format {
    /// JSON for a `.json` file, TOML otherwise.
    pub fn of_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("json") => Self::Json,
            _ => Self::Toml,
        }
    }
}

/// A document that failed to read or validate: nothing of it took effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentError {
    /// The file, when the document came from one.
    pub file: Option<PathBuf>,
    /// The policy key (`"default"` for the default), when the error is in one.
    pub key: Option<String>,
    /// The dotted field path inside the policy, such as
    /// `retry.initial_backoff`, when the error is in a field.
    pub field: Option<String>,
    /// Line (1-based), when the format gives it.
    pub line: Option<usize>,
    /// Column (1-based, in characters), when the format gives it.
    pub column: Option<usize>,
    /// What is wrong, with the bad value where there is one.
    pub message: String,
    /// What the field allows, when the error is in a known field.
    pub allowed: Option<&'static str>,
}

impl DocumentError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            file: None,
            key: None,
            field: None,
            line: None,
            column: None,
            message: message.into(),
            allowed: None,
        }
    }

    /// An error with only a message (an I/O failure, say).
    pub fn from_message(message: impl Into<String>) -> Self {
        Self::new(message)
    }

    /// The same error, naming `file`.
    pub fn in_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.file = Some(file.into());
        self
    }
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(p) => write!(f, "{}", p.display())?,
            None => f.write_str("<policy document>")?,
        }
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "policy `{key}`: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(allowed) = self.allowed {
            write!(f, " (allowed: {allowed})")?;
        }
        Ok(())
    }
}

impl core::error::Error for DocumentError {}

/// The budget, classifier and trigger names a document may use. A list
/// left `None` is not checked (any name is accepted; the executor's
/// missing-budget/classifier/trigger modes decide at call time).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnownNames {
    /// Budget names (`retry.budget.name`, `hedge.budget.name`).
    pub budgets: Option<Vec<String>>,
    /// Classifier names (`retry.classifier`).
    pub classifiers: Option<Vec<String>>,
    /// Hedge trigger names (`hedge.trigger`).
    pub triggers: Option<Vec<String>>,
}

impl KnownNames {
    /// Checks the names `policy` uses; an empty name (the default) is
    /// always known.
    ///
    /// # Errors
    ///
    /// An unknown name; the error names the key, the field and the known
    /// names.
    pub fn check(&self, key: &str, policy: &Policy) -> Result<(), DocumentError> {
        let checks: [(&str, &str, &Option<Vec<String>>); 4] = [
            (
                "retry.budget.name",
                &policy.retry.budget.name,
                &self.budgets,
            ),
            (
                "hedge.budget.name",
                &policy.hedge.budget.name,
                &self.budgets,
            ),
            (
                "retry.classifier",
                &policy.retry.classifier,
                &self.classifiers,
            ),
            ("hedge.trigger", &policy.hedge.trigger, &self.triggers),
        ];
        for (field, name, known) in checks {
            let Some(known) = known else { continue };
            if name.is_empty() || known.iter().any(|k| k == name) {
                continue;
            }
            let mut e = DocumentError::new(format!(
                "unknown name `{name}`; known: {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ));
            e.key = Some(key.to_owned());
            e.field = Some(field.to_owned());
            e.allowed = allowed(field);
            return Err(e);
        }
        Ok(())
    }
}

/// A validated document: every policy normalized, ready to serve.
#[derive(Clone, Debug)]
pub struct ValidDocument {
    /// Answers lookups (source `static` for a key's own policy; providers
    /// built on it say where it came from).
    pub provider: StaticProvider,
    /// The keys (`"default"` for the default) whose policy normalization
    /// changed, with the fields it clamped (as `policy_clamped_fields`).
    pub clamped: Vec<(String, ChangedFields)>,
}

impl PolicyDocument {
    /// Reads a document in `format`.
    ///
    /// # Errors
    ///
    /// Malformed text, a value of the wrong type, an unknown field; the error
    /// names the key, the field, the line and the column.
    pub fn parse(text: &str, format: Format) -> Result<Self, DocumentError> {
        match format {
            Format::Toml => Self::from_toml(text),
            Format::Json => Self::from_json(text),
        }
    }

    /// Reads a TOML document.
    ///
    /// # Errors
    ///
    /// As for [`PolicyDocument::parse`].
    pub fn from_toml(text: &str) -> Result<Self, DocumentError> {
        de_toml(text)
    }

    /// Reads a JSON document.
    ///
    /// # Errors
    ///
    /// As for [`PolicyDocument::parse`].
    pub fn from_json(text: &str) -> Result<Self, DocumentError> {
        de_json(text)
    }

    /// Reads and validates the file at `path` (JSON for `.json`, TOML
    /// otherwise).
    ///
    /// # Errors
    ///
    /// The file cannot be read, or its document is invalid; the error names
    /// the file.
    pub fn load(path: &Path) -> Result<ValidDocument, DocumentError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| DocumentError::new(format!("cannot read the file: {e}")).in_file(path))?;
        Self::parse(&text, Format::of_path(path))
            .and_then(Self::validate)
            .map_err(|e| e.in_file(path))
    }

    /// Checks every key and normalizes every policy; builds nothing unless
    /// all of them are valid.
    ///
    /// # Errors
    ///
    /// An empty or oversized key ([`MAX_KEY_LEN`]), or a value normalization
    /// cannot read (a NaN multiplier); the error names the key and field.
    pub fn validate(self) -> Result<ValidDocument, DocumentError> {
        self.validate_with(&KnownNames::default())
    }

    /// [`PolicyDocument::validate`], and every budget, classifier and
    /// trigger name must be in `known`.
    ///
    /// # Errors
    ///
    /// As for [`PolicyDocument::validate`], and an unknown name.
    pub fn validate_with(self, known: &KnownNames) -> Result<ValidDocument, DocumentError> {
        if let Some(default) = &self.default {
            known.check("default", default)?;
        }
        for (key, policy) in &self.policies {
            known.check(key, policy)?;
        }
        let mut builder = StaticProvider::builder();
        let mut clamped = Vec::new();
        if let Some(default) = self.default {
            let n = crate::static_provider::normalize(default.clone())
                .map_err(|e| policy_error("default", e))?;
            if !n.changed.is_empty() {
                clamped.push(("default".to_owned(), n.changed));
            }
            builder = builder
                .default_policy(default)
                .map_err(|e| policy_error("default", e))?;
        }
        for (key, policy) in self.policies {
            check_key(&key)?;
            let n = crate::static_provider::normalize(policy.clone())
                .map_err(|e| policy_error(&key, e))?;
            if !n.changed.is_empty() {
                clamped.push((key.clone(), n.changed));
            }
            builder = builder
                .policy(&key, policy)
                .map_err(|e| policy_error(&key, e))?;
        }
        Ok(ValidDocument {
            provider: builder.build(),
            clamped,
        })
    }
}

/// Reads one policy (a value in etcd, say): JSON when it starts with `{`,
/// TOML otherwise. Not yet normalized.
///
/// # Errors
///
/// As for [`PolicyDocument::parse`]; the field path starts at the policy
/// (`retry.max_attempts`).
pub fn parse_policy(text: &str) -> Result<Policy, DocumentError> {
    if text.trim_start().starts_with('{') {
        de_json(text)
    } else {
        de_toml(text)
    }
}

/// Normalizes `policy` as providers store it, naming `key` in an error.
///
/// # Errors
///
/// A value normalization cannot read (a NaN multiplier).
pub fn normalize_policy(
    key: &str,
    policy: Policy,
) -> Result<recourse_core::policy::Normalized, DocumentError> {
    check_key(key)?;
    crate::static_provider::normalize(policy).map_err(|e| policy_error(key, e))
}

fn de_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, DocumentError> {
    let de = toml::Deserializer::parse(text).map_err(|e| toml_error(text, &e, None))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().clone();
        toml_error(text, e.inner(), Some(&path))
    })
}

/// Reads JSON into `T` with errors as [`PolicyDocument::from_json`]'s.
#[cfg_attr(not(feature = "grpc-config"), allow(dead_code))]
pub(crate) fn de_json_pub<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, DocumentError> {
    de_json(text)
}

fn de_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, DocumentError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let mut err = with_path(DocumentError::new(json_message(e.inner())), e.path());
        if e.inner().line() > 0 {
            err.line = Some(e.inner().line());
            err.column = Some(e.inner().column());
        }
        err
    })?;
    de.end().map_err(|e| {
        let mut err = DocumentError::new(json_message(&e));
        err.line = Some(e.line());
        err.column = Some(e.column());
        err
    })?;
    Ok(value)
}

/// An empty key, or one longer than [`MAX_KEY_LEN`] bytes, is an error.
pub(crate) fn check_key(key: &str) -> Result<(), DocumentError> {
    let mut err = if key.trim().is_empty() {
        DocumentError::new("empty policy key")
    } else if key.len() > MAX_KEY_LEN {
        DocumentError::new(format!(
            "policy key of {} bytes is too long (allowed: at most {MAX_KEY_LEN} bytes)",
            key.len()
        ))
    } else {
        return Ok(());
    };
    err.key = Some(key.chars().take(MAX_KEY_LEN).collect());
    Err(err)
}

fn policy_error(key: &str, e: recourse_core::PolicyError) -> DocumentError {
    let mut err = DocumentError::new(e.to_string());
    err.key = Some(key.to_owned());
    err.field = Some(e.field.to_owned());
    err.allowed = allowed(e.field);
    err
}

/// Splits a serde path such as `policies.user-service.GetUser.retry.jitter`
/// into key and field (a key may itself contain dots, so by segments).
fn with_path(mut err: DocumentError, path: &serde_path_to_error::Path) -> DocumentError {
    use serde_path_to_error::Segment;
    let segs: Vec<String> = path
        .iter()
        .filter_map(|s| match s {
            Segment::Map { key } => Some(key.clone()),
            Segment::Enum { variant } => Some(variant.clone()),
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Unknown => None,
            #[allow(unreachable_patterns)]
            _ => None,
        })
        .collect();
    let rest = match segs.first().map(String::as_str) {
        Some("policies") if segs.len() >= 2 => {
            err.key = Some(segs[1].clone());
            &segs[2..]
        }
        Some("default") => {
            err.key = Some("default".to_owned());
            &segs[1..]
        }
        _ => &segs[..],
    };
    if !rest.is_empty() {
        let field = rest.join(".");
        err.allowed = allowed(&field);
        err.field = Some(field);
    }
    err
}

fn toml_error(
    text: &str,
    e: &toml::de::Error,
    path: Option<&serde_path_to_error::Path>,
) -> DocumentError {
    let mut err = DocumentError::new(e.message().trim_end().to_owned());
    if let Some(path) = path {
        err = with_path(err, path);
    }
    if let Some(span) = e.span() {
        let (line, column) = line_col(text, span.start);
        err.line = Some(line);
        err.column = Some(column);
    }
    err
}

/// serde_json appends " at line L column C" to its messages; the error
/// carries them as fields instead.
fn json_message(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The document's JSON Schema, generated from the types (feature
/// `json-schema`); the repository checks it in as
/// `schemas/policy-document.schema.json` for editors.
#[cfg(feature = "json-schema")]
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(PolicyDocument);
    let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
    s.push('\n');
    s
}
