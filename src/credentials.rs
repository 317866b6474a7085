//! What a successful call hands back: the credentials the client must send next.

use crate::token::{ClientId, Token};

/// The five values of devise_token_auth's headers (`token-type` is always `Bearer`).
/// Borrows the uid from the call that produced it, so producing it never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials<'a> {
    pub(crate) uid: &'a str,
    pub(crate) client: ClientId,
    pub(crate) token: Token,
    pub(crate) expiry: u64,
}

impl<'a> Credentials<'a> {
    /// The user (`uid` header).
    pub fn uid(&self) -> &'a str {
        self.uid
    }

    /// The session's device (`client` header).
    pub fn client(&self) -> &ClientId {
        &self.client
    }

    /// The token to present next (`access-token` header). Secret.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// When the session expires, whole seconds since the Unix epoch, rounded down
    /// (`expiry` header). It never goes down for a session.
    pub fn expiry(&self) -> u64 {
        self.expiry
    }
}

/// A successful `authenticate`. Exhaustive on purpose: a credential is either
/// rotated or not, and callers match both arms without a wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authenticated<'a> {
    /// The presented token was retired; these carry its successor.
    Rotated(Credentials<'a>),
    /// No rotation: these carry the session's current token (the one presented, or
    /// the successor a concurrent request of the same batch minted).
    Batched(Credentials<'a>),
}

impl<'a> Authenticated<'a> {
    /// The credentials for the client's next request.
    pub fn credentials(&self) -> &Credentials<'a> {
        match self {
            Authenticated::Rotated(c) | Authenticated::Batched(c) => c,
        }
    }

    /// Whether this call rotated the session.
    pub fn is_rotated(&self) -> bool {
        matches!(self, Authenticated::Rotated(_))
    }
}

/// One live session of a user, for admin pages. Holds no token. Built by the store
/// only; more fields may come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The device.
    pub client: ClientId,
    /// Rotations so far.
    pub generation: u64,
    /// Sign-in time, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// Last rotation, ms since the Unix epoch.
    pub rotated_at_ms: u64,
    /// Expiry, ms since the Unix epoch.
    pub expires_at_ms: u64,
}
