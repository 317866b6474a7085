//! Building responses: JSON bodies, the error shapes, and the five credential headers.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

/// Every response the server writes.
pub type Reply = Response<Full<Bytes>>;

/// A JSON response.
pub fn json(status: StatusCode, body: &Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
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
        let mut token = HeaderValue::from_str(c.token().as_str()).ok()?;
        token.set_sensitive(true);
        Some(AuthHeaders {
            token,
            client: HeaderValue::from_str(c.client().as_str()).ok()?,
            expiry: HeaderValue::from(c.expiry()),
            uid: HeaderValue::from_bytes(c.uid().as_bytes()).ok()?,
        })
    }

    /// Puts the five headers and `Cache-Control: no-store` on a response.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert("access-token", self.token.clone());
        headers.insert("token-type", HeaderValue::from_static("Bearer"));
        headers.insert("client", self.client.clone());
        headers.insert("expiry", self.expiry.clone());
        headers.insert("uid", self.uid.clone());
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}
