//! A fixed array of pinned, optional futures: the attempts a hedged call
//! runs at once, polled inside the call's own future without a heap.
//!
//! This is recourse's one `unsafe` module (as in `embassy-futures`' `join`
//! and `select_array`): `pin-project-lite` projects struct fields, not array
//! elements, so reaching a pinned element of a pinned array takes one
//! `Pin::map_unchecked_mut`. Everything else in the crate denies
//! `unsafe_code`; the tests that reach this module run under Miri in CI.
#![allow(unsafe_code)]

use core::pin::Pin;

/// `N` slots, each empty or holding a future that stays where it is until it
/// is dropped in place.
#[derive(Debug)]
pub struct PinnedSlots<F, const N: usize> {
    slots: [Option<F>; N],
}

impl<F, const N: usize> Default for PinnedSlots<F, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F, const N: usize> PinnedSlots<F, N> {
    /// All slots empty.
    pub(crate) fn new() -> Self {
        Self {
            slots: core::array::from_fn(|_| None),
        }
    }

    /// Slot `i`, pinned; panics when `i >= N`.
    pub(crate) fn get(self: Pin<&mut Self>, i: usize) -> Pin<&mut Option<F>> {
        // SAFETY: the elements of `slots` are structurally pinned, which
        // holds because this type never moves one out of a pinned `Self`:
        // - the only access to an element of a pinned `Self` is this
        //   method, which hands it out pinned again, so callers can only
        //   replace it with `Pin::set` (dropping the old future in place)
        //   or poll it;
        // - there is no `Drop` impl that could move an element out, and the
        //   array's own drop glue drops every element in place;
        // - `Self: Unpin` only when `F: Unpin` (the auto trait follows the
        //   array), so a `!Unpin` future is never unpinned by moving `Self`;
        // - indexing a fixed array returns the element at its fixed
        //   address (it panics, never moves, on a bad index).
        unsafe { self.map_unchecked_mut(|s| &mut s.slots[i]) }
    }
}

#[cfg(test)]
mod tests {
    use super::PinnedSlots;
    use core::cell::Cell;
    use core::future::Future;
    use core::marker::PhantomPinned;
    use core::pin::{pin, Pin};
    use core::task::{Context, Poll};
    use std::rc::Rc;

    /// A `!Unpin` future that checks it never moved between polls and
    /// counts its drops.
    struct Pinned {
        at: Option<usize>,
        polls: u32,
        ready_after: u32,
        drops: Rc<Cell<u32>>,
        _pin: PhantomPinned,
    }

    impl Future for Pinned {
        type Output = u32;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<u32> {
            // SAFETY: test-only; no field is moved out.
            #[allow(unsafe_code)]
            let this = unsafe { self.get_unchecked_mut() };
            let here = core::ptr::from_ref(this) as usize;
            assert_eq!(*this.at.get_or_insert(here), here, "moved while pinned");
            this.polls += 1;
            if this.polls > this.ready_after {
                Poll::Ready(this.polls)
            } else {
                Poll::Pending
            }
        }
    }

    impl Drop for Pinned {
        fn drop(&mut self) {
            self.drops.set(self.drops.get() + 1);
        }
    }

    fn fut(ready_after: u32, drops: &Rc<Cell<u32>>) -> Pinned {
        Pinned {
            at: None,
            polls: 0,
            ready_after,
            drops: drops.clone(),
            _pin: PhantomPinned,
        }
    }

    #[test]
    fn slots_poll_in_place_and_drop_exactly_once() {
        let drops = Rc::new(Cell::new(0));
        {
            let mut slots = pin!(PinnedSlots::<Pinned, 3>::new());
            let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
            slots.as_mut().get(0).set(Some(fut(2, &drops)));
            slots.as_mut().get(2).set(Some(fut(0, &drops)));
            for _ in 0..2 {
                let f = slots.as_mut().get(0).as_pin_mut().unwrap();
                assert!(f.poll(&mut cx).is_pending());
            }
            let f = slots.as_mut().get(2).as_pin_mut().unwrap();
            assert_eq!(f.poll(&mut cx), Poll::Ready(1));
            // Replacing drops the old future in place.
            slots.as_mut().get(2).set(None);
            assert_eq!(drops.get(), 1);
            let f = slots.as_mut().get(0).as_pin_mut().unwrap();
            assert_eq!(f.poll(&mut cx), Poll::Ready(3));
            slots.as_mut().get(1).set(Some(fut(5, &drops)));
            let f = slots.as_mut().get(1).as_pin_mut().unwrap();
            assert!(f.poll(&mut cx).is_pending());
        }
        // The two left in their slots dropped with the array.
        assert_eq!(drops.get(), 3);
    }

    #[test]
    #[should_panic(expected = "index out of bounds")]
    fn a_bad_index_panics() {
        let mut slots = pin!(PinnedSlots::<Pinned, 2>::new());
        let _ = slots.as_mut().get(2);
    }
}
