//! Counters, striped by thread on their own cache lines, summed only when read.

use std::cell::Cell;

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicU64, Ordering};

/// One stripe's counters. Increments are Relaxed: they order nothing, and a reader
/// summing them gets each counter exactly, though not all at one instant.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) issued: AtomicU64,
    pub(crate) rotated: AtomicU64,
    pub(crate) batched: AtomicU64,
    pub(crate) unknown_session: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) invalid_token: AtomicU64,
    pub(crate) bad_input: AtomicU64,
    pub(crate) revoked: AtomicU64,
    pub(crate) evicted: AtomicU64,
    pub(crate) swept: AtomicU64,
    /// Sessions added minus sessions ended; wraps per stripe, exact in sum.
    pub(crate) live: AtomicU64,
}

/// A store's counters, one stripe per thread (threads beyond the stripe count share).
///
/// Striped by thread, not by shard: threads answering for one session (a batch storm,
/// a hot user) would otherwise pass one counter's cache line between cores on every
/// answer. Increments stay atomic, so sharing a stripe loses nothing.
pub(crate) struct Striped {
    stripes: Box<[CachePadded<Counters>]>,
}

impl Striped {
    pub(crate) fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(8, |n| n.get());
        let n = (2 * cores).next_power_of_two().clamp(4, 128);
        Striped {
            stripes: (0..n)
                .map(|_| CachePadded::new(Counters::default()))
                .collect(),
        }
    }

    /// The calling thread's stripe.
    #[inline]
    pub(crate) fn mine(&self) -> &Counters {
        &self.stripes[thread_slot() & (self.stripes.len() - 1)]
    }

    /// Every stripe summed.
    pub(crate) fn sum(&self) -> Stats {
        let mut s = Stats::default();
        for c in self.stripes.iter() {
            s.add(c);
        }
        s
    }
}

/// A number for the calling thread, handed out in turn at its first use, so the
/// first threads of a process get distinct stripes.
#[inline]
fn thread_slot() -> usize {
    // Plain std atomics and thread-locals: which stripe a thread uses is no part of
    // any protocol a loom model checks.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    std::thread_local! {
        static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SLOT.with(|slot| {
        let mut s = slot.get();
        if s == usize::MAX {
            s = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            slot.set(s);
        }
        s
    })
}

#[inline]
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[inline]
pub(crate) fn ended(c: &Counters) {
    c.live.fetch_sub(1, Ordering::Relaxed);
}

/// A snapshot of a store's counters since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Sessions issued (sign-ins).
    pub issued: u64,
    /// `Rotated` answers.
    pub rotated: u64,
    /// `Batched` answers.
    pub batched: u64,
    /// `UnknownSession` answers.
    pub unknown_session: u64,
    /// `Expired` answers (each also removed its session).
    pub expired: u64,
    /// `Replayed` answers.
    pub replayed: u64,
    /// `InvalidToken` answers.
    pub invalid_token: u64,
    /// Calls refused for a malformed uid or client id.
    pub bad_input: u64,
    /// Sessions ended by `revoke`, `revoke_user` or the revoking replay policy.
    pub revoked: u64,
    /// Sessions ended to make room under `max_clients_per_user`.
    pub evicted: u64,
    /// Expired sessions removed by a sweep or a sign-in before anyone presented them.
    pub swept: u64,
    /// Sessions held: issued and not yet ended. A session that expired but was never
    /// presented again counts until a sweep removes it.
    pub live: u64,
}

impl Stats {
    pub(crate) fn add(&mut self, c: &Counters) {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.issued += r(&c.issued);
        self.rotated += r(&c.rotated);
        self.batched += r(&c.batched);
        self.unknown_session += r(&c.unknown_session);
        self.expired += r(&c.expired);
        self.replayed += r(&c.replayed);
        self.invalid_token += r(&c.invalid_token);
        self.bad_input += r(&c.bad_input);
        self.revoked += r(&c.revoked);
        self.evicted += r(&c.evicted);
        self.swept += r(&c.swept);
        self.live = self.live.wrapping_add(r(&c.live));
    }

    /// All rejections: unknown, expired, replayed, invalid and bad input.
    pub fn rejected(&self) -> u64 {
        self.unknown_session + self.expired + self.replayed + self.invalid_token + self.bad_input
    }
}
