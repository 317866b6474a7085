//! Token derivation: `T(g)` is 16 bytes of the ChaCha20 keystream under the store's
//! secret key, at stream `s` (the session's own, never reused) and offset `16 g`,
//! followed by `g` itself (4 bytes, little-endian) in the clear.
//!
//! So a session stores no token at all: any thread that reads generation `g` computes
//! `T(g)` itself, which is what lets one compare-and-swap on the state word rotate a
//! session with no allocation and no second write. ChaCha20 is a PRF: a token reveals
//! nothing of the key, of other generations, or of other sessions, and distinct
//! (stream, generation) pairs give independent 128-bit values.
//!
//! The generation a token carries says which keystream quarter to compare against, so
//! a genuine token of any age is recognised with one block, and a forged one costs at
//! most one block too (no CPU amplification by garbage). It is not encrypted: it only
//! counts the session's rotations, which the token's holder already knows and which
//! nobody else learns without the token (a token is a secret as a whole), and a clear
//! generation costs nothing to read, so a restored session can also recognise genuine
//! tokens ahead of its own generation ([`TokenMatch::Ahead`]). The secret bytes bind
//! the generation: changing it without the key gives a token that matches nothing.
//!
//! `T(g)` is keystream block `g / 4`, quarter `g % 4`. Verifying a token and minting
//! its successor takes one block, or in one rotation of four two blocks computed
//! together (`chacha::blocks2`).

use std::fmt;

use rand_chacha::rand_core::RngCore;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use super::chacha;
use super::codec::{SECRET_BYTES, TOKEN_BYTES};
use crate::decision::TokenMatch;

const TOKENS_PER_BLOCK: u64 = 4;

/// The generation's place in a token's bytes.
const GENERATION_AT: usize = SECRET_BYTES;

/// The store's token key. Never printed; cleared from memory when dropped.
pub(crate) struct MasterKey([u32; 8]);

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

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
        let master = MasterKey::from_bytes(&key);
        key.zeroize();
        master
    }

    /// The key of these 32 bytes (the caller clears its copy).
    pub(crate) fn from_bytes(key: &[u8; 32]) -> Self {
        MasterKey(chacha::key_words(key))
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

/// Constant-time equality of two tokens' secret bytes, as two 64-bit words: `subtle`'s
/// byte-slice comparison runs a guarded loop per byte (about 150 instructions for 16
/// bytes).
#[inline]
fn same(a: &[u8; SECRET_BYTES], b: &[u8; SECRET_BYTES]) -> bool {
    let word = |t: &[u8; SECRET_BYTES], i: usize| {
        u64::from_le_bytes(t[8 * i..8 * i + 8].try_into().expect("8 bytes"))
    };
    (word(a, 0) ^ word(b, 0) | word(a, 1) ^ word(b, 1))
        .ct_eq(&0)
        .into()
}

/// The generation a token claims (not yet checked against its secret bytes).
#[inline]
fn claimed(token: &[u8; TOKEN_BYTES]) -> u64 {
    let g: [u8; 4] = token[GENERATION_AT..].try_into().expect("4 bytes");
    u64::from(u32::from_le_bytes(g))
}

/// No block: a claimed generation is below 2^32, so block indices never reach it.
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
    /// `T(g)`: its secret bytes, then `g`.
    #[inline]
    pub(crate) fn get(&mut self, g: u64) -> [u8; TOKEN_BYTES] {
        let mut out = [0u8; TOKEN_BYTES];
        out[..SECRET_BYTES].copy_from_slice(&self.secret(g));
        // Generations stop below 2^26 (the state word's field), so `g` fits.
        out[GENERATION_AT..].copy_from_slice(&(g as u32).to_le_bytes());
        out
    }

    /// The secret bytes of `T(g)`.
    #[inline]
    fn secret(&mut self, g: u64) -> [u8; SECRET_BYTES] {
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
        let quarter = (g % TOKENS_PER_BLOCK) as usize * SECRET_BYTES;
        let mut out = [0u8; SECRET_BYTES];
        out.copy_from_slice(&self.blocks[slot][quarter..quarter + SECRET_BYTES]);
        out
    }

    /// Makes `T(g)` and `T(g + 1)` cached: what a rotation verifies and hands out, or
    /// what a batch on the previous token verifies and hands out. When they lie in
    /// different blocks (one time in four), both blocks are computed together, for
    /// little more than the cost of one.
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

    /// The generation of `presented` if it is a genuine token of this session, of any
    /// age: the generation it claims picks the one keystream quarter to compare with,
    /// so any input costs one block (two computed together when the claimed token and
    /// its successor, which a rotation hands out, lie in different blocks). The
    /// comparison is constant-time; which blocks are computed depends only on the
    /// claimed generation, which is not secret.
    #[inline]
    pub(crate) fn generation_of(&mut self, presented: &[u8; TOKEN_BYTES]) -> Option<u64> {
        let k = claimed(presented);
        let secret: &[u8; SECRET_BYTES] = presented[..SECRET_BYTES].try_into().expect("16");
        self.prepare(k);
        same(&self.secret(k), secret).then_some(k)
    }

    /// Which token of a session at generation `g` the presented bytes are.
    #[inline]
    pub(crate) fn classify(&mut self, presented: &[u8; TOKEN_BYTES], g: u64) -> TokenMatch {
        match self.generation_of(presented) {
            None => TokenMatch::Unrecognised,
            Some(k) if k == g => TokenMatch::Current,
            Some(k) if k + 1 == g => TokenMatch::Previous,
            Some(k) if k < g => TokenMatch::Older,
            Some(k) => TokenMatch::Ahead { by: k - g },
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
            let mut expected = [0u8; SECRET_BYTES];
            rng.fill_bytes(&mut expected);
            assert_eq!(tokens.get(g)[..SECRET_BYTES], expected, "g={g}");
            assert_eq!(claimed(&tokens.get(g)), g);
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
    fn classify_names_each_generation_at_any_age() {
        let k = key();
        for g in [0u64, 1, 2, 3, 4, 7, 8, 9, 10, 11, 20, 23, 24, 1_000, 4_003] {
            let mut t = k.tokens(1);
            assert_eq!(t.classify(&k.token(1, g), g), TokenMatch::Current, "g={g}");
            // What a rotation hands out next, from the blocks classify cached.
            assert_eq!(t.get(g + 1), k.token(1, g + 1), "g={g}");
            if g >= 1 {
                assert_eq!(t.classify(&k.token(1, g - 1), g), TokenMatch::Previous);
            }
            for old in [0, 1, g / 2, g.saturating_sub(10), g.saturating_sub(2)] {
                if old + 1 < g {
                    let got = t.classify(&k.token(1, old), g);
                    assert_eq!(got, TokenMatch::Older, "g={g} old={old}");
                }
            }
            for by in [1, 2, 7] {
                let ahead = k.token(1, g + by);
                assert_eq!(t.classify(&ahead, g), TokenMatch::Ahead { by }, "g={g}");
            }
            assert_eq!(t.classify(&k.token(2, g), g), TokenMatch::Unrecognised);
        }
    }

    #[test]
    fn a_token_carries_its_generation_bound_to_its_secret() {
        let k = key();
        let t = k.token(5, 300);
        assert_eq!(claimed(&t), 300);
        // The generation rewritten without the key: a token of no generation.
        for g in [0u64, 299, 301, 302, 5_000] {
            let mut forged = t;
            forged[GENERATION_AT..].copy_from_slice(&(g as u32).to_le_bytes());
            assert_eq!(k.tokens(5).classify(&forged, 301), TokenMatch::Unrecognised);
        }
        // The highest generation a token can claim costs one block like any other.
        let mut top = t;
        top[GENERATION_AT..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(k.tokens(5).classify(&top, 301), TokenMatch::Unrecognised);
    }
}
