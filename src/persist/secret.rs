//! The secret a durable store's token key comes from. The key is never written to
//! the session file: a stolen file without the secret yields no working token.

use std::fmt;
use std::path::Path;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use super::PersistError;
use crate::token::MasterKey;

/// The shortest secret a durable store accepts, in bytes: 256 bits (the Redis
/// backend's too; the crate root exports it once as `MIN_SECRET_LEN`).
pub const MIN_SECRET_LEN: usize = 32;

/// Each derivation's own label: no input of one can be an input of the other.
const TOKEN_KEY_LABEL: &[u8] = b"baton persist token key\0";
const KEY_CHECK_LABEL: &[u8] = b"baton persist key check\0";

/// The secret a durable store derives its token key from, at least
/// [`MIN_SECRET_LEN`] bytes. Never printed; cleared from memory when dropped.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// A secret of these bytes (the embedding application's).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, PersistError> {
        let bytes = Zeroizing::new(bytes.into());
        if bytes.len() < MIN_SECRET_LEN {
            return Err(PersistError::SecretTooShort);
        }
        Ok(Secret(bytes))
    }

    /// The secret in a file, less one trailing newline (`\n` or `\r\n`), so a file
    /// written by `echo` or an editor works.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, PersistError> {
        let mut bytes =
            Zeroizing::new(std::fs::read(path).map_err(PersistError::io("read the secret file"))?);
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        Secret::new(std::mem::take(&mut *bytes))
    }

    fn mac(&self, label: &[u8]) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes a key of any length");
        m.update(label);
        m.finalize().into_bytes().into()
    }

    /// The token key.
    pub(crate) fn token_key(&self) -> MasterKey {
        let mut key = self.mac(TOKEN_KEY_LABEL);
        let master = MasterKey::from_bytes(&key);
        key.zeroize();
        master
    }

    /// What the file records to tell a wrong secret from the right one: an HMAC of a
    /// label, which reveals nothing of the key.
    pub(crate) fn key_check(&self) -> [u8; 32] {
        self.mac(KEY_CHECK_LABEL)
    }

    /// Whether `recorded` is this secret's key check, in constant time.
    pub(crate) fn matches(&self, recorded: &[u8]) -> bool {
        recorded.len() == 32 && bool::from(self.key_check().ct_eq(recorded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secrets_are_refused_and_debug_is_redacted() {
        assert!(matches!(
            Secret::new(vec![1u8; MIN_SECRET_LEN - 1]),
            Err(PersistError::SecretTooShort)
        ));
        let s = Secret::new(vec![7u8; MIN_SECRET_LEN]).unwrap();
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn the_check_tells_secrets_apart_and_differs_from_the_key() {
        let a = Secret::new(vec![1u8; 40]).unwrap();
        let b = Secret::new(vec![2u8; 40]).unwrap();
        assert!(a.matches(&a.key_check()));
        assert!(!a.matches(&b.key_check()));
        assert!(!a.matches(&a.key_check()[..31]));
        assert_ne!(a.mac(TOKEN_KEY_LABEL), a.key_check());
        assert_eq!(
            a.token_key().token(3, 4),
            Secret::new(vec![1u8; 40]).unwrap().token_key().token(3, 4)
        );
        assert_ne!(a.token_key().token(3, 4), b.token_key().token(3, 4));
    }

    #[test]
    fn a_file_loses_one_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("baton-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s");
        std::fs::write(&p, [b"x".repeat(32), b"\r\n".to_vec()].concat()).unwrap();
        let from_file = Secret::from_file(&p).unwrap();
        assert!(from_file.matches(&Secret::new(b"x".repeat(32)).unwrap().key_check()));
        std::fs::write(&p, b"x".repeat(31)).unwrap();
        assert!(matches!(
            Secret::from_file(&p),
            Err(PersistError::SecretTooShort)
        ));
        assert!(matches!(
            Secret::from_file(dir.join("missing")),
            Err(PersistError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
