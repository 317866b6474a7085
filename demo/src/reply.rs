//! Building responses: JSON bodies and the error shapes. The five credential headers
//! are the library's (`baton::http::AuthHeaders`).

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
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
