//! Everything a node derives from the secret the nodes share: each session's token key
//! (so Redis never holds or sees a token: a node computes `T(g)` from the generation
//! Redis keeps) and each user's key-name tag (so Redis never holds or sees a uid).

use std::fmt;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::token::{MasterKey, CLIENT_BYTES};

/// The shortest secret [`RedisBuilder::secret`](crate::RedisBuilder::secret) accepts, in bytes: 256 bits.
pub const MIN_SECRET_LEN: usize = 32;

/// Bytes of a user's tag: 128 bits, so two uids never share keys.
const TAG_BYTES: usize = 16;

/// Each derivation's own label: no input of one can be an input of another.
const SESSION_LABEL: &[u8] = b"baton redis session key\0";
const TAG_LABEL: &[u8] = b"baton redis user tag\0";

/// HMAC-SHA256 under the shared secret. Never printed; its key is cleared from memory
/// when dropped.
///
/// It keeps the secret as HMAC pads it rather than HMAC's keyed state, which `hmac`
/// 0.12 cannot clear; the state is rebuilt per call (two SHA-256 blocks, next to a
/// network round trip) and lives on the stack only for that call.
#[derive(Clone)]
pub(crate) struct TokenMac {
    /// The secret (or its SHA-256, when longer than a block), then zeros to SHA-256's
    /// 64-byte block.
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

    fn keyed(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new(&(*self.block).into())
    }

    /// The token key of the session `(uid, client)`: its tokens are this key's
    /// keystream, as the embedded store's are its key's at the session's stream.
    ///
    /// A key per session rather than a stream per session: a node must know the
    /// session's tokens before it asks Redis anything, and a 64-bit stream derived
    /// from `(uid, client)` would collide between two sessions after about 2^32 of
    /// them, where 256-bit keys never do. Client ids are 96 random bits and unique
    /// per user while live, so a key is never reused.
    pub(crate) fn session_key(&self, uid: &str, client: &[u8; CLIENT_BYTES]) -> MasterKey {
        let mut m = self.keyed();
        m.update(SESSION_LABEL);
        m.update(client);
        // The uid last and unframed is unambiguous: the client id is of fixed length.
        m.update(uid.as_bytes());
        let mut key: [u8; 32] = m.finalize().into_bytes().into();
        let master = MasterKey::from_bytes(&key);
        key.zeroize();
        master
    }

    /// The tag naming `uid`'s keys: 128 bits of a keyed hash, in hex. Stable for a
    /// secret (every node finds the same keys), and without the secret it tells
    /// nothing of the uid.
    pub(crate) fn user_tag(&self, uid: &str) -> String {
        let mut m = self.keyed();
        m.update(TAG_LABEL);
        m.update(uid.as_bytes());
        let full = m.finalize().into_bytes();
        full[..TAG_BYTES]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secrets_are_refused() {
        assert!(TokenMac::new(&[1u8; MIN_SECRET_LEN - 1]).is_none());
        assert!(TokenMac::new(&[1u8; MIN_SECRET_LEN]).is_some());
        assert_eq!(
            format!("{:?}", TokenMac::new(&[1u8; 32]).unwrap()),
            "TokenMac(<redacted>)"
        );
    }

    #[test]
    fn the_padded_key_is_hmacs_own_padding() {
        for len in [32, 64, 65, 200] {
            let secret: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut reference = <Hmac<Sha256> as Mac>::new_from_slice(&secret).unwrap();
            reference.update(TAG_LABEL);
            reference.update(b"a@example.com");
            let expected = reference.finalize().into_bytes();
            let hex: String = expected[..TAG_BYTES]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let mac = TokenMac::new(&secret).unwrap();
            assert_eq!(mac.user_tag("a@example.com"), hex, "{len}");
        }
    }

    #[test]
    fn session_keys_differ_by_secret_uid_and_client() {
        let a = TokenMac::new(&[1u8; 32]).unwrap();
        let b = TokenMac::new(&[2u8; 32]).unwrap();
        let t = |m: &TokenMac, uid: &str, client: u8| {
            m.session_key(uid, &[client; CLIENT_BYTES]).token(0, 5)
        };
        let base = t(&a, "u@example.com", 1);
        assert_eq!(
            base,
            t(&a, "u@example.com", 1),
            "every node derives the same"
        );
        assert_ne!(base, t(&b, "u@example.com", 1));
        assert_ne!(base, t(&a, "v@example.com", 1));
        assert_ne!(base, t(&a, "u@example.com", 2));
    }

    #[test]
    fn tags_hide_the_uid_and_name_one_user() {
        let a = TokenMac::new(&[1u8; 32]).unwrap();
        let tag = a.user_tag("alice@example.com");
        assert_eq!(tag.len(), 2 * TAG_BYTES);
        assert!(tag.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(tag, a.user_tag("alice@example.com"));
        assert_ne!(tag, a.user_tag("alice@example.co"));
        assert_ne!(
            tag,
            TokenMac::new(&[2u8; 32])
                .unwrap()
                .user_tag("alice@example.com")
        );
        assert!(!tag.contains("616c696365"), "the uid's hex");
    }
}
