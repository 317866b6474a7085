//! Token derivation: `T(g)` is 16 bytes of the ChaCha20 keystream under the store's
//! secret key, at stream `s` (the session's own, never reused) and offset `16 g`.
//!
//! So a session stores no token at all: any thread that reads generation `g` computes
//! `T(g)` itself, which is what lets one compare-and-swap on the state word rotate a
//! session with no allocation and no second write. ChaCha20 is a PRF: a token reveals
//! nothing of the key, of other generations, or of other sessions, and distinct
//! (stream, generation) pairs give independent 128-bit values.
//!
//! One ChaCha20 call yields 4 blocks = 16 tokens, so one call serves every comparison
//! and the successor of an `authenticate`: the window starts at a block boundary at or
//! below `g - REPLAY_DEPTH - 1` and so always reaches `g + 1`.

use std::fmt;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use subtle::ConstantTimeEq;

use crate::codec::TOKEN_BYTES;
use crate::decision::Presented;

/// How many generations older than `T(g-1)` the store still recognises as genuine
/// (and answers `Replayed`); older ones are indistinguishable from garbage.
pub const REPLAY_DEPTH: u64 = 8;

const TOKENS_PER_BLOCK: u64 = 4;
const WINDOW: usize = 16;

/// The store's token key. Never printed.
pub(crate) struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// A fresh key from the operating system.
    pub(crate) fn from_os() -> Self {
        let mut key = [0u8; 32];
        rand_chacha::rand_core::OsRng.fill_bytes(&mut key);
        MasterKey(key)
    }

    /// 16 consecutive tokens of `stream` that include `g - REPLAY_DEPTH - 1 ..= g + 1`
    /// (clipped at 0).
    #[inline]
    pub(crate) fn window(&self, stream: u64, g: u64) -> Window {
        let low = g.saturating_sub(REPLAY_DEPTH + 1);
        let first = low - low % TOKENS_PER_BLOCK;
        let mut rng = ChaCha20Rng::from_seed(self.0);
        rng.set_stream(stream);
        // 4 words per token; a block-aligned position makes the 256-byte read below
        // exactly one 4-block refill.
        rng.set_word_pos(u128::from(first) * 4);
        let mut bytes = [0u8; WINDOW * TOKEN_BYTES];
        rng.fill_bytes(&mut bytes);
        Window { first, bytes }
    }

    /// `T(g)` alone.
    pub(crate) fn token(&self, stream: u64, g: u64) -> [u8; TOKEN_BYTES] {
        *self.window(stream, g).get(g)
    }
}

/// Tokens `first .. first + 16` of one session.
pub(crate) struct Window {
    first: u64,
    bytes: [u8; WINDOW * TOKEN_BYTES],
}

impl Window {
    /// Whether this window serves a session at generation `g`.
    #[inline]
    pub(crate) fn serves(&self, g: u64) -> bool {
        let low = g.saturating_sub(REPLAY_DEPTH + 1);
        low >= self.first && g + 1 < self.first + WINDOW as u64
    }

    /// `T(g)`; `g` must be inside the window.
    #[inline]
    pub(crate) fn get(&self, g: u64) -> &[u8; TOKEN_BYTES] {
        let i = (g - self.first) as usize * TOKEN_BYTES;
        self.bytes[i..i + TOKEN_BYTES]
            .try_into()
            .expect("a window slice is one token long")
    }

    /// Which token of a session at generation `g` the presented bytes are. Each
    /// comparison is constant-time; which ones run depends only on public facts
    /// (the generation and whether an earlier one matched).
    #[inline]
    pub(crate) fn classify(&self, presented: &[u8; TOKEN_BYTES], g: u64) -> Presented {
        if bool::from(self.get(g).ct_eq(presented)) {
            return Presented::Current;
        }
        if g >= 1 && bool::from(self.get(g - 1).ct_eq(presented)) {
            return Presented::Previous;
        }
        let oldest = g.saturating_sub(REPLAY_DEPTH + 1);
        let mut older = subtle::Choice::from(0);
        for k in oldest..g.saturating_sub(1) {
            older |= self.get(k).ct_eq(presented);
        }
        if bool::from(older) {
            Presented::Older
        } else {
            Presented::Unrecognised
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey([9u8; 32])
    }

    #[test]
    fn every_window_serves_its_generation_and_agrees_with_the_others() {
        let k = key();
        let reference: Vec<[u8; TOKEN_BYTES]> = (0..40).map(|g| *k.window(3, g).get(g)).collect();
        for g in 0..30u64 {
            let w = k.window(3, g);
            assert!(w.serves(g), "window for {g} does not serve it");
            for t in g.saturating_sub(REPLAY_DEPTH + 1)..=g + 1 {
                assert_eq!(w.get(t), &reference[t as usize], "g={g} t={t}");
            }
        }
    }

    #[test]
    fn streams_and_generations_give_distinct_tokens() {
        let k = key();
        let mut seen = std::collections::HashSet::new();
        for stream in 0..50 {
            for g in 0..50 {
                assert!(seen.insert(k.token(stream, g)), "repeat at {stream}/{g}");
            }
        }
    }

    #[test]
    fn classify_names_each_generation() {
        let k = key();
        let g = 20;
        let w = k.window(1, g);
        assert_eq!(w.classify(&k.token(1, g), g), Presented::Current);
        assert_eq!(w.classify(&k.token(1, g - 1), g), Presented::Previous);
        for old in g - 1 - REPLAY_DEPTH..g - 1 {
            assert_eq!(
                w.classify(&k.token(1, old), g),
                Presented::Older,
                "old={old}"
            );
        }
        assert_eq!(
            w.classify(&k.token(1, g - 2 - REPLAY_DEPTH), g),
            Presented::Unrecognised
        );
        assert_eq!(w.classify(&k.token(1, g + 1), g), Presented::Unrecognised);
        assert_eq!(w.classify(&k.token(2, g), g), Presented::Unrecognised);
        let w0 = k.window(1, 0);
        assert_eq!(w0.classify(&k.token(1, 0), 0), Presented::Current);
        assert_eq!(w0.classify(&k.token(1, 1), 0), Presented::Unrecognised);
    }
}
