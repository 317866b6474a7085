//! Token derivation: `T(g)` is 16 bytes of the ChaCha20 keystream under the store's
//! secret key, at stream `s` (the session's own, never reused) and offset `16 g`.
//!
//! So a session stores no token at all: any thread that reads generation `g` computes
//! `T(g)` itself, which is what lets one compare-and-swap on the state word rotate a
//! session with no allocation and no second write. ChaCha20 is a PRF: a token reveals
//! nothing of the key, of other generations, or of other sessions, and distinct
//! (stream, generation) pairs give independent 128-bit values.
//!
//! `T(g)` is keystream block `g / 4`, quarter `g % 4`. Verifying a token and minting
//! its successor takes one block, or in one rotation of four two blocks computed
//! together (`chacha::blocks2`); the older generations a replay check compares
//! against are computed only when the presented token is neither `T(g)` nor `T(g-1)`.

use std::fmt;

use rand_chacha::rand_core::RngCore;
use subtle::ConstantTimeEq;

use super::chacha;
use super::codec::TOKEN_BYTES;
use crate::decision::TokenMatch;

/// How many generations older than `T(g-1)` the store still recognises as genuine
/// (and answers `Replayed`); older ones are indistinguishable from garbage.
pub const REPLAY_DEPTH: u64 = 8;

const TOKENS_PER_BLOCK: u64 = 4;

/// The store's token key. Never printed.
pub(crate) struct MasterKey([u32; 8]);

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
        MasterKey(chacha::key_words(&key))
    }

    /// The tokens of one session.
    #[inline]
    pub(crate) fn tokens(&self, stream: u64) -> Tokens<'_> {
        Tokens {
            key: self,
            stream,
            index: [EMPTY; 2],
            blocks: [[0; 64]; 2],
            older: 0,
        }
    }

    /// `T(g)` of `stream`.
    pub(crate) fn token(&self, stream: u64, g: u64) -> [u8; TOKEN_BYTES] {
        self.tokens(stream).get(g)
    }
}

/// Constant-time equality of two tokens, as two 64-bit words: `subtle`'s byte-slice
/// comparison runs a guarded loop per byte (about 150 instructions for 16 bytes).
#[inline]
fn same(a: &[u8; TOKEN_BYTES], b: &[u8; TOKEN_BYTES]) -> subtle::Choice {
    let word = |t: &[u8; TOKEN_BYTES], i: usize| {
        u64::from_le_bytes(t[8 * i..8 * i + 8].try_into().expect("8 bytes"))
    };
    (word(a, 0) ^ word(b, 0) | word(a, 1) ^ word(b, 1)).ct_eq(&0)
}

/// No block: generations stop at 2^26, so block indices never reach it.
const EMPTY: u64 = u64::MAX;

/// One session's tokens, each keystream block computed at most once while the two
/// most recent are kept.
pub(crate) struct Tokens<'k> {
    key: &'k MasterKey,
    stream: u64,
    /// Which block each slot holds, or `EMPTY`.
    index: [u64; 2],
    blocks: [[u8; 64]; 2],
    /// The slot to overwrite next.
    older: usize,
}

impl Tokens<'_> {
    /// `T(g)`.
    #[inline]
    pub(crate) fn get(&mut self, g: u64) -> [u8; TOKEN_BYTES] {
        let index = g / TOKENS_PER_BLOCK;
        let slot = match self.index.iter().position(|&i| i == index) {
            Some(slot) => slot,
            None => {
                let slot = self.older;
                self.blocks[slot] = chacha::block(&self.key.0, self.stream, index);
                self.index[slot] = index;
                self.older = 1 - slot;
                slot
            }
        };
        let quarter = (g % TOKENS_PER_BLOCK) as usize * TOKEN_BYTES;
        let mut out = [0u8; TOKEN_BYTES];
        out.copy_from_slice(&self.blocks[slot][quarter..quarter + TOKEN_BYTES]);
        out
    }

    /// Makes `T(g)` and `T(g + 1)`, what a rotation verifies and hands out, cached.
    /// When they lie in different blocks (one rotation in four), both blocks are
    /// computed together, for little more than the cost of one.
    #[inline]
    fn prepare(&mut self, g: u64) {
        let index = g / TOKENS_PER_BLOCK;
        if g % TOKENS_PER_BLOCK == TOKENS_PER_BLOCK - 1
            && !self.index.contains(&index)
            && !self.index.contains(&(index + 1))
        {
            self.blocks = chacha::blocks2(&self.key.0, self.stream, index);
            self.index = [index, index + 1];
            self.older = 0;
        }
    }

    /// Which token of a session at generation `g` the presented bytes are. Each
    /// comparison is constant-time; which ones run depends only on public facts
    /// (the generation and whether an earlier one matched).
    #[inline]
    pub(crate) fn classify(&mut self, presented: &[u8; TOKEN_BYTES], g: u64) -> TokenMatch {
        self.prepare(g);
        if bool::from(same(&self.get(g), presented)) {
            return TokenMatch::Current;
        }
        if g >= 1 && bool::from(same(&self.get(g - 1), presented)) {
            return TokenMatch::Previous;
        }
        let oldest = g.saturating_sub(REPLAY_DEPTH + 1);
        let mut older = subtle::Choice::from(0);
        for k in oldest..g.saturating_sub(1) {
            older |= same(&self.get(k), presented);
        }
        if bool::from(older) {
            TokenMatch::Older
        } else {
            TokenMatch::Unrecognised
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn key() -> MasterKey {
        MasterKey(chacha::key_words(&[9u8; 32]))
    }

    #[test]
    fn tokens_are_rand_chachas_keystream_at_16_g() {
        let k = key();
        let mut rng = ChaCha20Rng::from_seed([9u8; 32]);
        rng.set_stream(3);
        let mut tokens = k.tokens(3);
        for g in 0..40 {
            let mut expected = [0u8; TOKEN_BYTES];
            rng.fill_bytes(&mut expected);
            assert_eq!(tokens.get(g), expected, "g={g}");
        }
        // Out of order, across the cache.
        for g in [39u64, 0, 17, 16, 3, 38] {
            assert_eq!(tokens.get(g), k.token(3, g));
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
        for g in [0u64, 1, 2, 3, 4, 7, 8, 9, 10, 11, 20, 23, 24] {
            let mut t = k.tokens(1);
            assert_eq!(t.classify(&k.token(1, g), g), TokenMatch::Current, "g={g}");
            // What a rotation hands out next, from the blocks classify cached.
            assert_eq!(t.get(g + 1), k.token(1, g + 1), "g={g}");
            if g >= 1 {
                assert_eq!(t.classify(&k.token(1, g - 1), g), TokenMatch::Previous);
            }
            for old in g.saturating_sub(REPLAY_DEPTH + 1)..g.saturating_sub(1) {
                assert_eq!(
                    t.classify(&k.token(1, old), g),
                    TokenMatch::Older,
                    "g={g} old={old}"
                );
            }
            if g >= REPLAY_DEPTH + 2 {
                assert_eq!(
                    t.classify(&k.token(1, g - REPLAY_DEPTH - 2), g),
                    TokenMatch::Unrecognised
                );
            }
            assert_eq!(t.classify(&k.token(1, g + 1), g), TokenMatch::Unrecognised);
            assert_eq!(t.classify(&k.token(2, g), g), TokenMatch::Unrecognised);
        }
    }
}
