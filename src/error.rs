//! Why a call was refused, and the one check of a uid.

use std::fmt;

/// The longest uid, in bytes.
pub const MAX_UID_LEN: usize = 255;

/// Checks a uid: 1 to [`MAX_UID_LEN`] bytes of UTF-8.
#[inline]
pub(crate) fn check_uid(uid: &str) -> Result<(), InputError> {
    match uid.len() {
        0 => Err(InputError::EmptyUid),
        len if len > MAX_UID_LEN => Err(InputError::UidTooLong { len }),
        _ => Ok(()),
    }
}

/// Input that can never name a session or a token: refused before any lookup, with
/// nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputError {
    /// The uid is empty.
    EmptyUid,
    /// The uid is longer than [`MAX_UID_LEN`] bytes.
    UidTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The client id is not 16 characters of URL-safe base64.
    MalformedClient,
    /// The token is not 27 characters of canonical URL-safe base64.
    MalformedToken,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::EmptyUid => f.write_str("uid is empty"),
            InputError::UidTooLong { len } => {
                write!(f, "uid is {len} bytes, more than {}", MAX_UID_LEN)
            }
            InputError::MalformedClient => {
                f.write_str("client id is not 16 characters of url-safe base64")
            }
            InputError::MalformedToken => {
                f.write_str("token is not 27 characters of url-safe base64")
            }
        }
    }
}

impl std::error::Error for InputError {}

/// Why `authenticate` refused a credential. The embedding application logs and
/// counts the reason; an HTTP layer answers every one of them with the same 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// No such session: never issued, revoked, evicted or already removed.
    UnknownSession,
    /// The session had expired; it is removed.
    Expired,
    /// A genuine but retired token, presented too late. Under
    /// [`ReplayPolicy::RevokeSession`](crate::ReplayPolicy::RevokeSession) the session is revoked.
    Replayed,
    /// Not a token of this session (wrong, malformed, empty or oversized).
    InvalidToken,
    /// The uid or client id cannot name any session.
    BadInput(InputError),
}

impl Rejection {
    /// A short stable name for metrics labels: `unknown_session`, `expired`,
    /// `replayed`, `invalid_token` or `bad_input`.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::UnknownSession => "unknown_session",
            Rejection::Expired => "expired",
            Rejection::Replayed => "replayed",
            Rejection::InvalidToken => "invalid_token",
            Rejection::BadInput(_) => "bad_input",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::UnknownSession => f.write_str("unknown session"),
            Rejection::Expired => f.write_str("session expired"),
            Rejection::Replayed => f.write_str("retired token replayed"),
            Rejection::InvalidToken => f.write_str("invalid token"),
            // What was wrong with it is the `source()`, so a chain printer says it once.
            Rejection::BadInput(_) => f.write_str("bad input"),
        }
    }
}

impl std::error::Error for Rejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Rejection::BadInput(e) => Some(e),
            _ => None,
        }
    }
}

impl From<InputError> for Rejection {
    fn from(e: InputError) -> Self {
        Rejection::BadInput(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_limits() {
        assert_eq!(check_uid(""), Err(InputError::EmptyUid));
        assert_eq!(check_uid(&"a".repeat(255)), Ok(()));
        assert_eq!(
            check_uid(&"a".repeat(256)),
            Err(InputError::UidTooLong { len: 256 })
        );
        assert_eq!(check_uid("ü"), Ok(()));
    }
}
