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
        if let Some(key) = Self::parse_plain(s) {
            return key;
        }
        let s = s.trim();
        match s.split_once('.') {
            None => Self::new("", s),
            Some((ns, name)) => {
                let name = name.trim();
                if name.is_empty() {
                    Self::new("", s)
                } else {
                    Self::new(ns.trim(), name)
                }
            }
        }
    }

    /// [`PolicyKey::parse`] of a well-formed key: printable ASCII at both
    /// ends and on both sides of its first dot (or no dot), so that nothing
    /// needs trimming. One pass over the bytes, none decoded: keys are
    /// parsed on every call. `None` sends the string to the general rules.
    #[inline]
    fn parse_plain(s: &'a str) -> Option<Self> {
        let bytes = s.as_bytes();
        if !graphic(bytes.first()) || !graphic(bytes.last()) {
            return None;
        }
        let Some(dot) = bytes.iter().position(|&b| b == b'.') else {
            return Some(Self::new("", s));
        };
        let (ns, name) = (&bytes[..dot], &bytes[dot + 1..]);
        if name.is_empty() {
            // `svc.`: an empty name makes the whole string the name.
            return Some(Self::new("", s));
        }
        if !graphic(name.first()) || !(ns.is_empty() || graphic(ns.last())) {
            return None;
        }
        // Split at an ASCII dot: both halves are whole strings.
        let (ns, name) = s.split_at(dot);
        Some(Self::new(ns, &name[1..]))
    }

    /// Whether both parts are empty.
    pub const fn is_empty(&self) -> bool {
        self.namespace.is_empty() && self.name.is_empty()
    }
}

/// Whether `b` is a printable, non-space ASCII byte: nothing to trim.
#[inline(always)]
fn graphic(b: Option<&u8>) -> bool {
    b.is_some_and(u8::is_ascii_graphic)
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

    /// The one-pass parse of well-formed keys agrees with the general
    /// rules (`str::trim` and `split_once`) on every string it takes.
    #[test]
    fn the_plain_parse_agrees_with_the_general_rules() {
        fn general(s: &str) -> PolicyKey<'_> {
            let s = s.trim();
            match s.split_once('.') {
                None => PolicyKey::new("", s),
                Some((_, name)) if name.trim().is_empty() => PolicyKey::new("", s),
                Some((ns, name)) => PolicyKey::new(ns.trim(), name.trim()),
            }
        }
        let alphabet = [" ", ".", "a", "\t", "é", "\u{a0}", "-", "_"];
        let mut strings = std::vec![std::string::String::new()];
        // Every string of up to 5 of these (3 under Miri, which interprets).
        for _ in 0..if cfg!(miri) { 3 } else { 5 } {
            let longer: std::vec::Vec<_> = strings
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| std::format!("{s}{c}")))
                .collect();
            strings.extend(longer);
            strings.dedup();
        }
        let mut plain = 0;
        for s in &strings {
            assert_eq!(PolicyKey::parse(s), general(s), "{s:?}");
            plain += usize::from(PolicyKey::parse_plain(s).is_some());
        }
        assert!(
            plain > strings.len() / 20,
            "the one-pass parse took only {plain} strings"
        );
    }

    #[test]
    fn display_round_trips() {
        for s in ["svc.Method", "db.Users.Query", "solo"] {
            assert_eq!(PolicyKey::parse(s).to_string(), s);
        }
        assert_eq!(PolicyKey::new("ns", "").to_string(), "ns");
    }
}
