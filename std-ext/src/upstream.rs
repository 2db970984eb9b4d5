//! Layers that know about each other: how many attempts the callers above
//! already made for the request this code is serving.
//!
//! A request that passes through three services each allowing 3 attempts
//! becomes up to 27 attempts at the bottom. Each attempt therefore tells
//! the next layer how many attempts were made above it for the same
//! request, in the protocol's own header:
//!
//! - gRPC: [`GRPC_HEADER`] (`grpc-previous-rpc-attempts`, gRFC A6's);
//! - HTTP: [`HTTP_HEADER`] (`recourse-attempt`): a plain decimal, the
//!   attempts made for this request before this one, by every layer above
//!   (0 on a first attempt all the way up).
//!
//! On the server side, [`UpstreamLayer`](crate::integrations::tower::UpstreamLayer)
//! (features `tower` + `http`) reads the header of each inbound request and
//! runs the handler inside [`scope`]; every executor call the handler makes
//! reads the count with [`current`], and the policy's
//! [`amplification.upstream_retry`](recourse_core::policy::UpstreamRetry)
//! says what it does with it: retry as usual, not retry a request that is
//! itself a retry, or count it against the key's amplification ledger so
//! that every layer shares one allowance. On the client side the tower,
//! reqwest and tonic integrations write the header on every attempt: the
//! count read here plus the attempts this call sent before
//! ([`outbound_attempts`]).
//!
//! A header value that is not a plain decimal up to
//! [`MAX_UPSTREAM_ATTEMPTS`] (garbage, negative, huge) is treated as
//! absent, and counted by the layer that read it; never a panic.
//!
//! The count lives in a thread-local set while the scoped future is polled,
//! so it follows the handler's own future and everything it awaits, but
//! not a task the handler spawns: wrap such a task in
//! `scope(current(), task)`.

use core::cell::Cell;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

pub use recourse_core::amplification::{
    outbound_attempts, parse_upstream_attempts, upstream_effect, UpstreamEffect,
    MAX_UPSTREAM_ATTEMPTS,
};
pub use recourse_core::policy::UpstreamRetry;

/// The HTTP header carrying the upstream attempt count.
pub const HTTP_HEADER: &str = "recourse-attempt";
/// The gRPC header carrying it (gRFC A6's `grpc-previous-rpc-attempts`).
pub const GRPC_HEADER: &str = "grpc-previous-rpc-attempts";

/// Timeline attribute: the upstream attempt count the call was made with.
pub const UPSTREAM_ATTEMPTS: &str = "upstream_attempts";
/// Timeline attribute: what the policy did with it, when anything:
/// `single_attempt` (`not_when_retry`), `shared` or
/// `shared_first_is_extra` (`shared_allowance`; see
/// [`UpstreamEffect::as_str`]).
pub const UPSTREAM_EFFECT: &str = "upstream_effect";

std::thread_local! {
    static CURRENT: Cell<Option<u32>> = const { Cell::new(None) };
}

/// The upstream attempt count of the request being served on this thread:
/// the innermost [`scope`] being polled, `None` outside any (or when the
/// request carried no valid count).
pub fn current() -> Option<u32> {
    CURRENT.with(Cell::get)
}

/// `f()`, run with [`current`] returning `upstream` (for work done
/// outside a future, such as a tower service's `call`).
pub fn with_current<R>(upstream: Option<u32>, f: impl FnOnce() -> R) -> R {
    let _restore = Restore(CURRENT.with(|c| c.replace(upstream)));
    f()
}

/// `fut`, polled with [`current`] returning `upstream`.
pub fn scope<F: Future>(upstream: Option<u32>, fut: F) -> Scoped<F> {
    Scoped {
        inner: fut,
        upstream,
    }
}

pin_project_lite::pin_project! {
    /// A future polled inside a [`scope`].
    #[derive(Debug)]
    pub struct Scoped<F> {
        #[pin]
        inner: F,
        upstream: Option<u32>,
    }
}

/// Puts the previous count back when dropped, also during an unwind.
struct Restore(Option<u32>);

impl Drop for Restore {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _restore = Restore(CURRENT.with(|c| c.replace(*this.upstream)));
        this.inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_restore() {
        assert_eq!(current(), None);
        let got = async_io::block_on(scope(Some(2), async {
            let outer = current();
            let inner = scope(Some(5), async { current() }).await;
            (outer, inner, current())
        }));
        assert_eq!(got, (Some(2), Some(5), Some(2)));
        assert_eq!(current(), None);
        let caught = std::panic::catch_unwind(|| {
            async_io::block_on(scope(Some(1), async { panic!("in scope") }))
        });
        assert!(caught.is_err());
        assert_eq!(current(), None, "restored during the unwind");
        assert_eq!(with_current(Some(3), current), Some(3));
        assert_eq!(current(), None);
    }
}
