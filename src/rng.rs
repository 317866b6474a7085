//! Fresh random bytes (client ids, and the Redis backend's token candidates): ChaCha20
//! seeded from the operating system, one generator per thread, so sign-ins on
//! different threads share no lock and no cache line.

use std::cell::RefCell;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::token::CLIENT_BYTES;

thread_local! {
    static RNG: RefCell<ChaCha20Rng> = RefCell::new(ChaCha20Rng::from_entropy());
}

/// `N` fresh unpredictable bytes.
pub(crate) fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    RNG.with(|r| r.borrow_mut().fill_bytes(&mut out));
    out
}

/// 96 fresh unpredictable bits: a client id.
pub(crate) fn client_bytes() -> [u8; CLIENT_BYTES] {
    bytes()
}
