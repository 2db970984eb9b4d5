//! The random draws made ahead of their use: on the simulating thread in
//! small batches, or on a helper thread in blocks
//! ([`Scenario::draw_thread`](super::Scenario::draw_thread)).
//!
//! The arrivals and the backend each draw from a random source of their
//! own, one draw after another whatever else happens (a draw's value does
//! not depend on when it is made, nor on anything the calls do), so both
//! streams can be made ahead of their use, and by another thread, in the
//! same order: the simulation sees the same numbers either way.

use core::time::Duration;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::{self, Thread};

use super::backend::{Arrivals, AttemptDraws, Draw};
use super::report::Buckets;

/// Draws made at a time on the simulating thread (see [`Ahead`]).
pub(super) const AHEAD: usize = 32;

/// Draws per block the helper thread hands over.
const BLOCK: usize = 4096;

/// Blocks of each stream the helper thread may be ahead by (besides the
/// one it holds while the stream is full).
const BLOCKS_AHEAD: usize = 4;

/// Draws made ahead of their use and handed out in the order they were
/// made: on the simulating thread, [`AHEAD`] at a time (one at a time,
/// each waited for its logarithm, cosine and exponential in turn; made in
/// a batch, the draws' libm calls, each waiting on the one before it in
/// its own draw and not on another draw's, overlap), or received in blocks
/// from the helper thread ([`Ahead::fed`]).
pub(super) struct Ahead<T> {
    made: Vec<T>,
    /// The next one to hand out; `made.len()` when none is left.
    next: usize,
    /// Where the blocks come from, when the helper thread makes them.
    feed: Option<Feed<T>>,
}

/// Blocks of draws from the helper thread.
struct Feed<T> {
    blocks: Receiver<Vec<T>>,
    /// Woken after each block taken: it has room to make another.
    helper: Thread,
}

impl<T: Copy + Default> Ahead<T> {
    /// Draws made on this thread, [`AHEAD`] at a time.
    pub(super) fn local() -> Self {
        Self {
            made: vec![T::default(); AHEAD],
            next: AHEAD,
            feed: None,
        }
    }

    /// Draws received in blocks from `helper`.
    fn fed(blocks: Receiver<Vec<T>>, helper: Thread) -> Self {
        Self {
            made: Vec::new(),
            next: 0,
            feed: Some(Feed { blocks, helper }),
        }
    }

    /// The next draw: from the batch made last, or (when none is left)
    /// the first of the next batch, made with `make` or received from the
    /// helper thread.
    #[inline(always)]
    pub(super) fn next(&mut self, make: impl FnMut() -> T) -> T {
        if let Some(&draw) = self.made.get(self.next) {
            self.next += 1;
            return draw;
        }
        self.refill(make)
    }

    #[inline(never)]
    fn refill(&mut self, mut make: impl FnMut() -> T) -> T {
        match &self.feed {
            Some(feed) => {
                // The helper makes draws until this end of the stream is
                // dropped (it has no other way to end), so a block always
                // comes; a helper that panicked ends the run with its
                // panic.
                let block = feed
                    .blocks
                    .recv()
                    .expect("the draw thread makes draws until the run ends");
                feed.helper.unpark();
                self.made = block;
            }
            None => {
                // In place: `AHEAD` of them, as `local` made the list.
                for slot in &mut self.made {
                    *slot = make();
                }
            }
        }
        self.next = 1;
        self.made[0]
    }
}

/// The two streams of draws a run makes: the backend's (each attempt's
/// latency and failure) and the arrivals' (the gaps between calls).
pub(super) struct Streams {
    pub(super) draw: Draw,
    pub(super) backend_rng: fastrand::Rng,
    pub(super) arrivals: Arrivals,
    pub(super) arrival_rng: fastrand::Rng,
}

/// Runs `run` with the draws of `streams` made by a helper thread, handed
/// to it as its attempts' draws and arrival gaps, while the helper also
/// puts the blocks of call latencies `latencies` brings into [`Buckets`]
/// (the report's sort's first pass; `run` ends that stream before it
/// returns): `run`'s result and the buckets, or `None` (and `run` not run)
/// when no thread could be started. A panic of the helper's is resumed
/// here.
pub(super) fn with_helper<R>(
    streams: Streams,
    latencies: Receiver<Vec<u32>>,
    run: impl FnOnce(Ahead<AttemptDraws>, Ahead<u64>) -> R,
) -> Option<(R, Buckets)> {
    thread::scope(|scope| {
        let (attempts_tx, attempts) = mpsc::sync_channel(BLOCKS_AHEAD);
        let (gaps_tx, gaps) = mpsc::sync_channel(BLOCKS_AHEAD);
        let helper = thread::Builder::new()
            .name("recourse-sim-draws".into())
            .spawn_scoped(scope, move || {
                make(streams, &attempts_tx, &gaps_tx, &latencies)
            })
            .ok()?;
        let woken = helper.thread().clone();
        let result = run(
            Ahead::fed(attempts, woken.clone()),
            Ahead::fed(gaps, woken.clone()),
        );
        // `run` dropped the receiving ends and ended the latencies' stream:
        // the helper, woken, finds them gone, finishes its buckets and
        // ends.
        woken.unpark();
        // The latencies it took are in its buckets: a panic there is the
        // run's.
        let buckets = helper
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        Some((result, buckets))
    })
}

/// The helper thread: makes blocks of both streams while either has room,
/// and sleeps while neither has (woken when a block is taken), until the
/// simulating thread drops its end of the backend's stream; puts the
/// latencies it is handed into buckets as they come (each time it wakes),
/// and returns them once their stream has ended.
fn make(
    mut s: Streams,
    attempts: &SyncSender<Vec<AttemptDraws>>,
    gaps: &SyncSender<Vec<u64>>,
    latencies: &Receiver<Vec<u32>>,
) -> Buckets {
    let mut held_attempts: Option<Vec<AttemptDraws>> = None;
    let mut held_gaps: Option<Vec<u64>> = None;
    let mut gaps_open = true;
    let mut buckets = Buckets::new();
    loop {
        while let Ok(block) = latencies.try_recv() {
            buckets.take(&block);
        }
        let mut sent = false;
        let block = held_attempts.take().unwrap_or_else(|| {
            (0..BLOCK)
                .map(|_| AttemptDraws::draw(&s.draw, &mut s.backend_rng))
                .collect()
        });
        match attempts.try_send(block) {
            Ok(()) => sent = true,
            Err(TrySendError::Full(block)) => held_attempts = Some(block),
            Err(TrySendError::Disconnected(_)) => {
                // The run is over: the last latencies (until the
                // simulating thread has ended their stream).
                for block in latencies {
                    buckets.take(&block);
                }
                return buckets;
            }
        }
        if gaps_open {
            let block = held_gaps.take().unwrap_or_else(|| {
                (0..BLOCK)
                    .map(|_| s.arrivals.gap_nanos(&mut s.arrival_rng))
                    .collect()
            });
            match gaps.try_send(block) {
                Ok(()) => sent = true,
                Err(TrySendError::Full(block)) => held_gaps = Some(block),
                Err(TrySendError::Disconnected(_)) => gaps_open = false,
            }
        }
        if !sent {
            // Both streams are full: wait for a block to be taken (the
            // timeout only bounds a wake-up lost to a bug).
            thread::park_timeout(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Ahead, AHEAD};

    /// Draws made ahead come out in the order they were made, across
    /// refills, and none is made before the last batch is used up.
    #[test]
    fn draws_made_ahead_come_out_in_order() {
        let mut ahead = Ahead::local();
        let mut made = 0u64;
        for want in 0..(5 * AHEAD as u64 + 3) {
            assert_eq!(
                ahead.next(|| {
                    made += 1;
                    made - 1
                }),
                want
            );
            assert_eq!(made, (want / AHEAD as u64 + 1) * AHEAD as u64);
        }
    }
}
