//! Client ids: ChaCha20 seeded from the operating system, one generator per thread,
//! so sign-ins on different threads share no lock and no cache line.

use std::cell::RefCell;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::codec::CLIENT_BYTES;

thread_local! {
    static RNG: RefCell<ChaCha20Rng> = RefCell::new(ChaCha20Rng::from_entropy());
}

/// 96 fresh unpredictable bits.
pub(crate) fn client_bytes() -> [u8; CLIENT_BYTES] {
    let mut out = [0u8; CLIENT_BYTES];
    RNG.with(|r| r.borrow_mut().fill_bytes(&mut out));
    out
}
