//! Fresh random bytes (client ids, and the Redis backend's token candidates): ChaCha20
//! seeded from the operating system, one generator per thread, so sign-ins on
//! different threads share no lock and no cache line.
//!
//! A forked child inherits its parent's generators, state and all, and would draw the
//! very bytes its parent draws next (the same client ids). So each generator keeps the
//! id of the process that seeded it, and a draw in any other process seeds afresh: one
//! `getpid` per draw, on sign-ins only, never on `authenticate`'s embedded path.

use std::cell::RefCell;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::token::CLIENT_BYTES;

/// A generator and the process it was seeded in.
struct Seeded {
    pid: u32,
    rng: ChaCha20Rng,
}

thread_local! {
    static RNG: RefCell<Option<Seeded>> = const { RefCell::new(None) };
}

/// `N` fresh unpredictable bytes.
pub(crate) fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    let pid = std::process::id();
    RNG.with(|r| {
        let mut r = r.borrow_mut();
        let seeded = match &mut *r {
            Some(s) if s.pid == pid => s,
            // First use on this thread, or a fork's child: never the parent's stream.
            other => other.insert(Seeded {
                pid,
                rng: ChaCha20Rng::from_entropy(),
            }),
        };
        seeded.rng.fill_bytes(&mut out);
    });
    out
}

/// 96 fresh unpredictable bits: a client id.
pub(crate) fn client_bytes() -> [u8; CLIENT_BYTES] {
    bytes()
}
