//! The string parsers a policy file or a control plane feeds: trigger
//! names, policy keys and jitter kinds. None may panic, and each answer must
//! follow its documented rules.

use recourse_core::hedge::Trigger;
use recourse_core::policy::Problem;
use recourse_core::{Jitter, PolicyKey};

/// Checks [`Trigger::parse`], [`PolicyKey::parse`] and `Jitter::from_str`
/// on `s`; panics naming the rule that broke.
pub fn check_parse(s: &str) {
    check_trigger(s);
    check_key(s);
    check_jitter(s);
}

fn check_trigger(s: &str) {
    match Trigger::parse(s) {
        None => {}
        Some(Trigger::FixedDelay) => assert!(
            matches!(s, "" | "fixed" | "fixed_delay"),
            "{s:?} parsed as the fixed-delay trigger"
        ),
        Some(t @ Trigger::Quantile { permille }) => {
            assert!(
                (500..=999).contains(&permille),
                "{s:?} parsed as quantile {permille} ‰, outside p50..=p99.9"
            );
            assert!(
                s.starts_with('p') || (s.starts_with("max_extra_load:") && s.ends_with('%')),
                "{s:?} parsed as {t:?}"
            );
            let canonical = format!("p{}.{}", permille / 10, permille % 10);
            assert_eq!(Trigger::parse(&canonical), Some(t), "{canonical:?}");
            assert_eq!(t.quantile(), Some(permille));
        }
    }
}

fn check_key(s: &str) {
    let k = PolicyKey::parse(s);
    let within = |part: &str| {
        let (start, end) = (s.as_ptr() as usize, s.as_ptr() as usize + s.len());
        let p = part.as_ptr() as usize;
        part.is_empty() || (start <= p && p + part.len() <= end)
    };
    assert!(
        within(k.namespace) && within(k.name),
        "{s:?}: {k:?} borrows outside the input"
    );
    assert_eq!(
        k.namespace,
        k.namespace.trim(),
        "{s:?}: namespace untrimmed"
    );
    assert_eq!(k.name, k.name.trim(), "{s:?}: name untrimmed");
    assert!(
        !k.namespace.contains('.'),
        "{s:?}: the split is at the first dot, namespace {:?}",
        k.namespace
    );
    assert_eq!(
        k.is_empty(),
        s.trim().is_empty(),
        "{s:?}: only a blank string is the empty key, got {k:?}"
    );
    assert!(
        k.namespace.is_empty() || !k.name.is_empty(),
        "{s:?}: a namespace without a name: {k:?}"
    );
    let shown = k.to_string();
    let want = match (k.namespace.is_empty(), k.name.is_empty()) {
        (false, false) => format!("{}.{}", k.namespace, k.name),
        (false, true) => k.namespace.to_owned(),
        _ => k.name.to_owned(),
    };
    assert_eq!(shown, want, "{s:?}: Display of {k:?}");
    // Display and parse agree, except for a dotted name without namespace
    // (`.a.b` is the key {"", "a.b"}, displayed `a.b`, which is {"a", "b"}).
    if !k.namespace.is_empty() || !k.name.contains('.') {
        assert_eq!(
            PolicyKey::parse(&shown),
            k,
            "{s:?}: Display does not parse back"
        );
    }
}

fn check_jitter(s: &str) {
    let names = [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ];
    let t = s.trim();
    let want = if t.is_empty() {
        Some(Jitter::None)
    } else {
        names
            .into_iter()
            .find(|j| t.eq_ignore_ascii_case(j.as_str()))
    };
    match (s.parse::<Jitter>(), want) {
        (Ok(j), Some(w)) => assert_eq!(j, w, "{s:?}"),
        (Err(e), None) => {
            assert_eq!(
                (e.field, e.problem),
                ("retry.jitter", Problem::UnknownJitter),
                "{s:?}"
            );
            assert!(e.to_string().contains("retry.jitter"));
        }
        (got, want) => panic!("{s:?} parsed as {got:?}, expected {want:?}"),
    }
    for j in names {
        assert_eq!(j.as_str().parse::<Jitter>(), Ok(j));
        assert_eq!(j.to_string(), j.as_str());
    }
}
