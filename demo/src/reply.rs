//! Building responses: JSON bodies, the error shapes, and the five credential headers.

use std::io::Write as _;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

/// Every response the server writes.
pub type Reply = Response<Full<Bytes>>;

/// A JSON response.
pub fn json(status: StatusCode, body: &Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    // Room for the credential and CORS headers up front: growing the map rehashes it.
    r.headers_mut().reserve(12);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// devise_token_auth's error shape for its own endpoints: `{"success": false, "errors": [..]}`.
pub fn failure(status: StatusCode, message: &str) -> Reply {
    json(status, &json!({ "success": false, "errors": [message] }))
}

/// The error shape of devise's `authenticate_user!`, used by the `/api` resources.
pub fn errors(status: StatusCode, message: &str) -> Reply {
    json(status, &json!({ "errors": [message] }))
}

/// The credential headers' names, built once: a name from a string is parsed, and a
/// non-standard one allocated, on every use.
pub const ACCESS_TOKEN: HeaderName = HeaderName::from_static("access-token");
/// `token-type`.
pub const TOKEN_TYPE: HeaderName = HeaderName::from_static("token-type");
/// `client`.
pub const CLIENT: HeaderName = HeaderName::from_static("client");
/// `expiry`.
pub const EXPIRY: HeaderName = HeaderName::from_static("expiry");
/// `uid`.
pub const UID: HeaderName = HeaderName::from_static("uid");

/// A session's next credentials as header values, made once and put on the response
/// whatever the handler answers.
#[derive(Clone)]
pub struct AuthHeaders {
    token: HeaderValue,
    client: HeaderValue,
    expiry: HeaderValue,
    uid: HeaderValue,
}

impl std::fmt::Debug for AuthHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthHeaders")
            .field("client", &self.client)
            .field("uid", &self.uid)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl AuthHeaders {
    /// `None` only if the uid cannot be a header value, which the store never returns
    /// for uids the server signed in (they are checked when users are added).
    pub fn new(c: &baton::Credentials<'_>) -> Option<AuthHeaders> {
        // One allocation for the four values, sliced: this runs on every request.
        let (token, client, uid) = (c.token().as_str(), c.client().as_str(), c.uid());
        let mut all = Vec::with_capacity(token.len() + client.len() + uid.len() + 20);
        for part in [token, client, uid] {
            all.extend_from_slice(part.as_bytes());
        }
        let before = all.len();
        // Writing to a Vec cannot fail.
        let _ = write!(all, "{}", c.expiry());
        let expiry_len = all.len() - before;
        let all = Bytes::from(all);
        let mut at = 0;
        let mut next = |len: usize| {
            let value = HeaderValue::from_maybe_shared(all.slice(at..at + len)).ok();
            at += len;
            value
        };
        let mut token_value = next(token.len())?;
        token_value.set_sensitive(true);
        Some(AuthHeaders {
            token: token_value,
            client: next(client.len())?,
            uid: next(uid.len())?,
            expiry: next(expiry_len)?,
        })
    }

    /// Puts the five headers and `Cache-Control: no-store` on a response.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(ACCESS_TOKEN, self.token.clone());
        headers.insert(TOKEN_TYPE, HeaderValue::from_static("Bearer"));
        headers.insert(CLIENT, self.client.clone());
        headers.insert(EXPIRY, self.expiry.clone());
        headers.insert(UID, self.uid.clone());
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}
