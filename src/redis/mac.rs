//! What Redis holds instead of tokens: HMAC-SHA256 of each token under a secret the
//! nodes share, so a dump of Redis (or a replica, or a backup) hands nobody a token
//! that works. And the tokens themselves, minted here in Rust, never by Redis.

use std::fmt;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::token::TOKEN_BYTES;

/// The shortest secret [`RedisBuilder::secret`](crate::RedisBuilder::secret) accepts, in bytes: 256 bits.
pub const MIN_SECRET_LEN: usize = 32;

/// Bytes of one keyed hash as stored (the scripts slice by this length).
pub(crate) const HASH_LEN: usize = 32;

/// 128 fresh unpredictable bits: a candidate token, from the same per-thread
/// generator as client ids.
pub(crate) fn token_bytes() -> [u8; TOKEN_BYTES] {
    crate::rng::bytes()
}

/// The keyed hash. Never printed; its key is cleared from memory when dropped.
///
/// It keeps the secret rather than HMAC's keyed state, which `hmac` 0.12 cannot clear;
/// the state is rebuilt per hash (two SHA-256 blocks, next to a network round trip) and
/// lives on the stack only for that call.
#[derive(Clone)]
pub(crate) struct TokenMac {
    /// The secret as HMAC pads it: itself (or its SHA-256, when longer than a block),
    /// then zeros to SHA-256's 64-byte block.
    block: Zeroizing<[u8; 64]>,
}

impl fmt::Debug for TokenMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenMac(<redacted>)")
    }
}

impl TokenMac {
    /// `None` when the secret is shorter than [`MIN_SECRET_LEN`].
    pub(crate) fn new(secret: &[u8]) -> Option<Self> {
        if secret.len() < MIN_SECRET_LEN {
            return None;
        }
        let mut block = Zeroizing::new([0u8; 64]);
        if secret.len() > block.len() {
            block[..32].copy_from_slice(&Sha256::digest(secret));
        } else {
            block[..secret.len()].copy_from_slice(secret);
        }
        Some(TokenMac { block })
    }

    /// The keyed hash of a token's bytes.
    pub(crate) fn hash(&self, token: &[u8; TOKEN_BYTES]) -> [u8; HASH_LEN] {
        let mut m = <Hmac<Sha256> as KeyInit>::new(&(*self.block).into());
        m.update(token);
        m.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secrets_are_refused() {
        assert!(TokenMac::new(&[1u8; MIN_SECRET_LEN - 1]).is_none());
        assert!(TokenMac::new(&[1u8; MIN_SECRET_LEN]).is_some());
    }

    #[test]
    fn hashes_depend_on_key_and_token_and_are_not_the_token() {
        let a = TokenMac::new(&[1u8; 32]).unwrap();
        let b = TokenMac::new(&[2u8; 32]).unwrap();
        let t = [7u8; TOKEN_BYTES];
        assert_eq!(a.hash(&t), a.hash(&t));
        assert_ne!(a.hash(&t), b.hash(&t));
        assert_ne!(a.hash(&t), a.hash(&[8u8; TOKEN_BYTES]));
        assert!(!a.hash(&t).windows(TOKEN_BYTES).any(|w| w == t));
        assert_eq!(format!("{a:?}"), "TokenMac(<redacted>)");
    }

    #[test]
    fn the_padded_key_is_hmacs_own_padding() {
        for len in [32, 64, 65, 200] {
            let secret: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut reference = <Hmac<Sha256> as Mac>::new_from_slice(&secret).unwrap();
            let t = [3u8; TOKEN_BYTES];
            reference.update(&t);
            let expected: [u8; HASH_LEN] = reference.finalize().into_bytes().into();
            assert_eq!(TokenMac::new(&secret).unwrap().hash(&t), expected, "{len}");
        }
    }

    #[test]
    fn candidates_do_not_repeat() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(token_bytes()));
        }
    }
}
