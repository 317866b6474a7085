//! What a handler sees of the request's session, and how it signs in and out.

use std::fmt;

use http::header::{HeaderMap, HeaderValue, CACHE_CONTROL};
use http::Response;

use super::headers::AuthHeaders;
use crate::{Authenticated, Backend, BackendError, ClientId, Credentials, InputError};

/// The session a request was authenticated for, which the layer puts in the request's
/// extensions before the inner service runs. It holds no token: a handler cannot leak
/// one. The uid is shared with the answer's `uid` header, so it costs no allocation.
#[derive(Clone)]
pub struct Session {
    uid: HeaderValue,
    client: ClientId,
    expiry: u64,
    rotated: bool,
}

impl Session {
    /// The session `answer` says the request may use, with the header values the
    /// answer will carry.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn accepted(answer: &Authenticated<'_>, headers: &AuthHeaders) -> Session {
        let c = answer.credentials();
        Session {
            uid: headers.uid().clone(),
            client: *c.client(),
            expiry: c.expiry(),
            rotated: answer.is_rotated(),
        }
    }

    /// The user.
    pub fn uid(&self) -> &str {
        // The value was built from the uid's own bytes (`AuthHeaders`), so it is UTF-8.
        std::str::from_utf8(self.uid.as_bytes()).unwrap_or_default()
    }

    /// The device.
    pub fn client(&self) -> &ClientId {
        &self.client
    }

    /// When the session expires, whole seconds since the Unix epoch (the `expiry` header
    /// of the answer).
    pub fn expiry(&self) -> u64 {
        self.expiry
    }

    /// Whether this request rotated the token; `false` when it was answered as part of
    /// a batch (or rotation is off or throttled).
    pub fn rotated(&self) -> bool {
        self.rotated
    }

    /// Signs this session out: revokes it on `backend` and marks the answer so that the
    /// layer sends no token headers for it. [`SignedOut::was_live`] is `false` if the
    /// session had ended meanwhile (a concurrent sign-out); devise answers that with a
    /// 404.
    pub async fn sign_out<B: Backend + ?Sized>(
        &self,
        backend: &B,
    ) -> Result<SignedOut, BackendError<InputError>> {
        let live = match backend.revoke_now(self.uid(), self.client.as_str()) {
            Some(answer) => answer,
            None => backend.revoke(self.uid(), self.client.as_str()).await,
        }?;
        Ok(SignedOut { live })
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Holds no token, so there is nothing to redact but this says so.
        f.debug_struct("Session")
            .field("uid", &self.uid())
            .field("client", &self.client)
            .field("expiry", &self.expiry)
            .field("rotated", &self.rotated)
            .field("token", &"<not held>")
            .finish()
    }
}

/// What a response carries, in its extensions, to tell the layer a handler took care
/// of the credential headers itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Handled {
    /// A new session's headers are on the response: leave them.
    SignedIn,
    /// The session ended: no token headers.
    SignedOut,
}

/// A session ended by [`Session::sign_out`]. Put it on the answer (axum: return it as
/// part of the response; otherwise [`mark`](Self::mark)) so the layer sends no token
/// headers: the client has nothing left to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "the answer must carry it, or the layer sends the ended session's headers"]
pub struct SignedOut {
    live: bool,
}

impl SignedOut {
    /// Whether the session was live when revoked.
    pub fn was_live(&self) -> bool {
        self.live
    }

    /// Marks `response` as a sign-out's and sets `Cache-Control: no-store`.
    pub fn mark<T>(self, response: &mut Response<T>) {
        no_store(response.headers_mut());
        response.extensions_mut().insert(Handled::SignedOut);
    }
}

pub(crate) fn no_store(headers: &mut HeaderMap) {
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// A new session from [`sign_in`]: its five headers for the handler's answer (axum:
/// return it as part of the response; otherwise [`apply`](Self::apply)). The layer,
/// if the request passed one, leaves them as they are. `Debug` redacts the token.
#[derive(Clone, Debug)]
#[must_use = "the answer must carry the new session's headers"]
pub struct SignedIn {
    pub(crate) headers: AuthHeaders,
    client: ClientId,
    expiry: u64,
}

impl SignedIn {
    /// The new session's device.
    pub fn client(&self) -> &ClientId {
        &self.client
    }

    /// When the new session expires, whole seconds since the Unix epoch.
    pub fn expiry(&self) -> u64 {
        self.expiry
    }

    /// Puts the five headers and `Cache-Control: no-store` on `response`.
    pub fn apply<T>(self, response: &mut Response<T>) {
        self.headers.apply(response.headers_mut());
        response.extensions_mut().insert(Handled::SignedIn);
    }
}

/// Why [`sign_in`] issued no session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignInError {
    /// The backend refused or could not answer (see [`BackendError`]).
    Backend(BackendError<InputError>),
    /// The uid cannot be sent as a header value (it holds a control character); no
    /// session was issued.
    UidNotAHeader,
}

impl fmt::Display for SignInError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignInError::Backend(e) => e.fmt(f),
            SignInError::UidNotAHeader => f.write_str("uid cannot be sent as a header value"),
        }
    }
}

impl std::error::Error for SignInError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SignInError::Backend(e) => std::error::Error::source(e),
            SignInError::UidNotAHeader => None,
        }
    }
}

/// Signs `uid` in on a new device: one call that issues the session and gives the
/// handler its five headers. The password check is the caller's, before this.
pub async fn sign_in<B: Backend + ?Sized>(backend: &B, uid: &str) -> Result<SignedIn, SignInError> {
    // Checked first, so that no session is issued that could never be sent.
    if HeaderValue::from_bytes(uid.as_bytes()).is_err() {
        return Err(SignInError::UidNotAHeader);
    }
    let c: Credentials<'_> = backend.issue(uid).await.map_err(SignInError::Backend)?;
    let headers = AuthHeaders::new(&c).ok_or(SignInError::UidNotAHeader)?;
    Ok(SignedIn {
        headers,
        client: *c.client(),
        expiry: c.expiry(),
    })
}
