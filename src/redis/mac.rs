//! What Redis holds instead of tokens: HMAC-SHA256 of each token under a secret the
//! nodes share, so a dump of Redis (or a replica, or a backup) hands nobody a token
//! that works. And the tokens themselves, minted here in Rust, never by Redis.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

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

/// The keyed hash. Never printed.
#[derive(Clone)]
pub(crate) struct TokenMac {
    keyed: Hmac<Sha256>,
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
        // HMAC takes keys of any length; the check above is ours.
        let keyed = Hmac::<Sha256>::new_from_slice(secret).ok()?;
        Some(TokenMac { keyed })
    }

    /// The keyed hash of a token's bytes.
    pub(crate) fn hash(&self, token: &[u8; TOKEN_BYTES]) -> [u8; HASH_LEN] {
        // Cloning the keyed state skips re-hashing the key on every call.
        let mut m = self.keyed.clone();
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
    fn candidates_do_not_repeat() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(token_bytes()));
        }
    }
}
