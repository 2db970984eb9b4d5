//! The atomics the budgets keep their state in: `portable_atomic`'s in
//! every build, `loom`'s under `cfg(loom)`, so the model checker in
//! `core/tests/loom_budgets.rs` explores every interleaving of the budgets'
//! real code (`RUSTFLAGS="--cfg loom"`; never set for a normal build).
//!
//! loom's atomics have no `const fn new` and exist only inside a model run,
//! while the budgets are `const`-constructible (they live in `static`s). So
//! under `cfg(loom)` each atomic is a `const` shell holding its initial value
//! and creates its loom atomic on first use (inside the model run that uses
//! it); every method is loom's, through `Deref`. The loom tests touch every
//! atomic before spawning threads, so each one is created, with its initial
//! value, before any thread could race for it — as with a real constructor.

// Only where the budgets that use them exist (budget/mod.rs): a target
// without compare-and-swap has them with the `critical-section` feature.
#[cfg(all(not(loom), any(target_has_atomic = "32", feature = "critical-section")))]
pub(crate) use portable_atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

#[cfg(loom)]
pub(crate) use loom_shell::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

#[cfg(loom)]
mod loom_shell {
    extern crate std;

    use core::fmt;
    use core::ops::Deref;
    use std::sync::OnceLock;

    pub(crate) use loom::sync::atomic::Ordering;

    macro_rules! shell {
        ($name:ident, $prim:ty) => {
            /// A `const`-constructible loom atomic (see the module docs).
            pub(crate) struct $name {
                init: $prim,
                cell: OnceLock<loom::sync::atomic::$name>,
            }

            impl $name {
                pub(crate) const fn new(value: $prim) -> Self {
                    Self {
                        init: value,
                        cell: OnceLock::new(),
                    }
                }
            }

            impl Deref for $name {
                type Target = loom::sync::atomic::$name;

                fn deref(&self) -> &Self::Target {
                    self.cell
                        .get_or_init(|| loom::sync::atomic::$name::new(self.init))
                }
            }

            impl fmt::Debug for $name {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    fmt::Debug::fmt(&**self, f)
                }
            }
        };
    }

    shell!(AtomicU32, u32);
    shell!(AtomicU64, u64);
    shell!(AtomicUsize, usize);
}
