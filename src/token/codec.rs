//! Tokens and client ids on the wire: URL-safe base64 without padding, fixed lengths,
//! encoded and decoded in constant time and without allocating.

use std::fmt;

use subtle::ConstantTimeEq;

use super::base64;

use crate::error::InputError;

/// Unpredictable bytes in a token: 128 bits.
pub(crate) const SECRET_BYTES: usize = 16;
/// Bytes in a token: the secret, then its generation (4 bytes, not secret).
pub(crate) const TOKEN_BYTES: usize = SECRET_BYTES + 4;
/// Characters in an encoded token (SPEC allows at most 64).
pub const TOKEN_LEN: usize = 27;
/// Random bytes in a client id: 96 bits.
pub(crate) const CLIENT_BYTES: usize = 12;
/// Characters in an encoded client id.
pub const CLIENT_ID_LEN: usize = 16;

/// A session's secret: 27 characters of URL-safe base64 carrying 128 unpredictable bits
/// and, beside them, the generation the token belongs to (not secret: it lets the store
/// recognise a genuine token of any age with one ChaCha20 block).
///
/// `Debug` prints `Token(<redacted>)` and there is no `Display`, so a token reaches a
/// log only through an explicit [`as_str`](Self::as_str). Equality is constant-time.
#[derive(Clone, Copy)]
pub struct Token {
    text: [u8; TOKEN_LEN],
}

impl Token {
    #[inline]
    pub(crate) fn encode(bytes: &[u8; TOKEN_BYTES]) -> Self {
        Token {
            text: base64::encode(bytes),
        }
    }

    /// The encoding of `bytes`, for benchmarks that encode as baton does (the floor
    /// contender). Not part of the stable API: a token's bytes come from the store.
    #[doc(hidden)]
    #[inline]
    pub fn from_bytes(bytes: &[u8; TOKEN_BYTES]) -> Self {
        Token::encode(bytes)
    }

    /// Decodes presented text; `None` unless it is exactly the encoding of 20 bytes.
    #[inline]
    pub(crate) fn decode(text: &str) -> Option<[u8; TOKEN_BYTES]> {
        base64::decode::<TOKEN_LEN, TOKEN_BYTES>(text.as_bytes())
    }

    /// Checks that `text` has the form of a token (not that any session issued it).
    pub fn parse(text: &str) -> Result<Token, InputError> {
        Token::decode(text)
            .map(|b| Token::encode(&b))
            .ok_or(InputError::MalformedToken)
    }

    /// The token's text, to hand to the client (the `access-token` header).
    #[inline]
    pub fn as_str(&self) -> &str {
        // base64 output is ASCII.
        std::str::from_utf8(&self.text).unwrap_or_default()
    }

    /// The same text as bytes (always ASCII), without `as_str`'s UTF-8 check: what
    /// a header value or a response buffer takes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8; TOKEN_LEN] {
        &self.text
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.text.ct_eq(&other.text).into()
    }
}

impl Eq for Token {}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// One signed-in device of a user: 16 characters of URL-safe base64 carrying 96
/// random bits. Not a secret on its own (it travels beside the token), but unguessable.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId {
    raw: [u8; CLIENT_BYTES],
    text: [u8; CLIENT_ID_LEN],
}

impl ClientId {
    #[inline]
    pub(crate) fn from_raw(raw: [u8; CLIENT_BYTES]) -> Self {
        ClientId {
            raw,
            text: base64::encode(&raw),
        }
    }

    #[inline]
    pub(crate) fn raw(&self) -> &[u8; CLIENT_BYTES] {
        &self.raw
    }

    /// Parses a client id as the store writes it.
    #[inline]
    pub fn parse(text: &str) -> Result<ClientId, InputError> {
        // A decodable text is canonical (12 bytes fill 16 characters exactly), so the
        // text is kept as given rather than encoded again.
        match base64::decode::<CLIENT_ID_LEN, CLIENT_BYTES>(text.as_bytes()) {
            Some(raw) => Ok(ClientId {
                raw,
                text: text
                    .as_bytes()
                    .try_into()
                    .map_err(|_| InputError::MalformedClient)?,
            }),
            None => Err(InputError::MalformedClient),
        }
    }

    /// The id's text, as written to the `client` header.
    #[inline]
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.text).unwrap_or_default()
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_rejects_non_canonical_text() {
        let bytes = [0xA5u8; TOKEN_BYTES];
        let t = Token::encode(&bytes);
        assert_eq!(t.as_str().len(), TOKEN_LEN);
        assert_eq!(t.as_bytes(), t.as_str().as_bytes());
        assert_eq!(Token::decode(t.as_str()), Some(bytes));
        // The last character carries 4 data bits and 2 spare ones; setting a spare
        // bit writes the same bytes another way, and is refused.
        let mut s = t.as_str().to_string();
        let last = s.pop().unwrap();
        assert_eq!(last, 'U', "0x5 then two zero bits");
        s.push('V');
        assert_eq!(Token::decode(&s), None, "{s}");
        for bad in [
            "",
            "short",
            "+/+/+/+/+/+/+/+/+/+/+/+/+/+",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "AAAAAAAAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "ÄAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(Token::decode(bad), None, "{bad:?}");
            assert_eq!(Token::parse(bad), Err(InputError::MalformedToken));
        }
    }

    #[test]
    fn token_debug_is_redacted() {
        let t = Token::encode(&[7u8; TOKEN_BYTES]);
        let shown = format!("{t:?}");
        assert_eq!(shown, "Token(<redacted>)");
        assert!(!shown.contains(t.as_str()));
    }

    #[test]
    fn client_round_trips_and_rejects_bad_forms() {
        let c = ClientId::from_raw([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 255]);
        assert_eq!(c.as_str().len(), CLIENT_ID_LEN);
        assert_eq!(ClientId::parse(c.as_str()), Ok(c));
        assert_eq!(c.to_string(), c.as_str());
        for bad in [
            "",
            "AAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAA=",
            "AAAAAAAA+AAAAAAA",
            "AAAAAAAAAAAAAAAé",
        ] {
            assert_eq!(
                ClientId::parse(bad),
                Err(InputError::MalformedClient),
                "{bad:?}"
            );
        }
    }
}
