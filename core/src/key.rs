//! Policy keys: the low-cardinality name of a call site, such as
//! `"user-service.GetUser"`.
//!
//! A key picks the policy envelope for a call. Everything keyed by it (latency
//! trackers, breakers, caches) is bounded, so a key must name an operation,
//! never a request: `payments.Charge` is a key, `GET /users/123` is not.

use core::fmt;

/// A parsed policy key: `namespace.name`, borrowed from the string it came
/// from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PolicyKey<'a> {
    /// The part before the first dot (a service), possibly empty.
    pub namespace: &'a str,
    /// The part after the first dot (an operation), or the whole key.
    pub name: &'a str,
}

impl<'a> PolicyKey<'a> {
    /// A key from its two parts, taken as they are.
    pub const fn new(namespace: &'a str, name: &'a str) -> Self {
        Self { namespace, name }
    }

    /// Parses `"svc.Method"`.
    ///
    /// The string is trimmed; an empty string is the empty key; without a dot
    /// the whole string is the name; otherwise it is split at the **first** dot
    /// and both parts are trimmed. An empty name part makes the whole
    /// (trimmed) string the name.
    ///
    /// ```
    /// use recourse_core::PolicyKey;
    /// assert_eq!(PolicyKey::parse("user-service.GetUser"), PolicyKey::new("user-service", "GetUser"));
    /// assert_eq!(PolicyKey::parse("db.Users.Query"), PolicyKey::new("db", "Users.Query"));
    /// assert_eq!(PolicyKey::parse(" health "), PolicyKey::new("", "health"));
    /// assert_eq!(PolicyKey::parse("svc."), PolicyKey::new("", "svc."));
    /// ```
    pub fn parse(s: &'a str) -> Self {
        let s = trim(s);
        match s.split_once('.') {
            None => Self::new("", s),
            Some((ns, name)) => {
                let name = trim(name);
                if name.is_empty() {
                    Self::new("", s)
                } else {
                    Self::new(trim(ns), name)
                }
            }
        }
    }

    /// Whether both parts are empty.
    pub const fn is_empty(&self) -> bool {
        self.namespace.is_empty() && self.name.is_empty()
    }
}

/// `s.trim()`, without decoding characters when `s` starts and ends with
/// printable ASCII (every well-formed key does): parsing runs on every call.
fn trim(s: &str) -> &str {
    let printable = |b: Option<&u8>| b.is_some_and(|b| (0x21..0x7f).contains(b));
    let bytes = s.as_bytes();
    if printable(bytes.first()) && printable(bytes.last()) {
        s
    } else {
        s.trim()
    }
}

impl fmt::Display for PolicyKey<'_> {
    /// `ns.name`, or whichever part is non-empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.namespace.is_empty(), self.name.is_empty()) {
            (false, false) => write!(f, "{}.{}", self.namespace, self.name),
            (false, true) => f.write_str(self.namespace),
            _ => f.write_str(self.name),
        }
    }
}

impl<'a> From<&'a str> for PolicyKey<'a> {
    fn from(s: &'a str) -> Self {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn parse_rules() {
        assert_eq!(PolicyKey::parse(""), PolicyKey::default());
        assert_eq!(PolicyKey::parse("   "), PolicyKey::default());
        assert_eq!(PolicyKey::parse("a . b "), PolicyKey::new("a", "b"));
        assert_eq!(PolicyKey::parse(".b"), PolicyKey::new("", "b"));
        assert_eq!(PolicyKey::parse("name"), PolicyKey::new("", "name"));
        // Unicode whitespace is trimmed too (the slow path).
        assert_eq!(
            PolicyKey::parse("\u{a0}svc\u{2003}.\tGet\u{3000}"),
            PolicyKey::new("svc", "Get")
        );
        assert_eq!(PolicyKey::parse("é.Ü"), PolicyKey::new("é", "Ü"));
    }

    #[test]
    fn display_round_trips() {
        for s in ["svc.Method", "db.Users.Query", "solo"] {
            assert_eq!(PolicyKey::parse(s).to_string(), s);
        }
        assert_eq!(PolicyKey::new("ns", "").to_string(), "ns");
    }
}
