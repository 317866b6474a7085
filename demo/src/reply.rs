//! Building responses: JSON bodies, the error shapes, and the five credential headers.

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
    ///
    /// `client_header` and `uid_header` are the request's own values, if it sent them
    /// as separate headers: when they are the session's, the answer repeats them
    /// (sharing the request's buffer) instead of copying and checking them again. This
    /// runs on every request.
    pub fn new(
        c: &baton::Credentials<'_>,
        client_header: Option<&HeaderValue>,
        uid_header: Option<&HeaderValue>,
    ) -> Option<AuthHeaders> {
        let reuse = |sent: Option<&HeaderValue>, value: &str| match sent {
            Some(sent) if sent.as_bytes() == value.as_bytes() => Some(sent.clone()),
            _ => HeaderValue::from_str(value).ok(),
        };
        let mut token = HeaderValue::from_str(c.token().as_str()).ok()?;
        token.set_sensitive(true);
        Some(AuthHeaders {
            token,
            client: reuse(client_header, c.client().as_str())?,
            expiry: HeaderValue::from(c.expiry()),
            uid: reuse(uid_header, c.uid())?,
        })
    }

    /// Puts the five headers and `Cache-Control: no-store` on a response.
    pub fn apply(self, headers: &mut HeaderMap) {
        headers.insert(ACCESS_TOKEN, self.token);
        headers.insert(TOKEN_TYPE, HeaderValue::from_static("Bearer"));
        headers.insert(CLIENT, self.client);
        headers.insert(EXPIRY, self.expiry);
        headers.insert(UID, self.uid);
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_response(headers: AuthHeaders) -> HeaderMap {
        let mut map = HeaderMap::new();
        headers.apply(&mut map);
        map
    }

    #[test]
    fn repeats_the_request_values_only_when_they_are_the_sessions() {
        let store = baton::Store::new();
        let c = store.issue("a@example.com").unwrap();
        let (client, uid) = (c.client().as_str(), c.uid());
        let sent_client = HeaderValue::from_str(client).unwrap();
        let sent_uid = HeaderValue::from_static("someone-else@example.com");
        let headers = AuthHeaders::new(&c, Some(&sent_client), Some(&sent_uid)).unwrap();
        assert!(!format!("{headers:?}").contains(c.token().as_str()));
        let map = on_response(headers);
        assert_eq!(map[&ACCESS_TOKEN], c.token().as_str());
        assert!(map[&ACCESS_TOKEN].is_sensitive());
        assert_eq!(map[&TOKEN_TYPE], "Bearer");
        assert_eq!(map[&CLIENT], client);
        // The same bytes: the request's value itself, not a copy.
        assert_eq!(
            map[&CLIENT].as_bytes().as_ptr(),
            sent_client.as_bytes().as_ptr()
        );
        assert_eq!(
            map[&UID], uid,
            "a uid other than the session's is not repeated"
        );
        assert_eq!(map[&EXPIRY], c.expiry().to_string().as_str());
        assert_eq!(map[&CACHE_CONTROL], "no-store");
        assert_eq!(
            on_response(AuthHeaders::new(&c, None, None).unwrap())[&UID],
            uid
        );
    }
}
