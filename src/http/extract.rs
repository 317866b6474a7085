//! The session as an axum extractor, and the sign-in and sign-out answers as
//! response parts.

use std::convert::Infallible;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, IntoResponseParts, Response, ResponseParts};
use http::request::Parts;
use http::StatusCode;

use super::layer::PassedWithoutSession;
use super::session::{no_store, Handled, Session, SignInError, SignedIn, SignedOut};
use crate::BackendError;

/// The request reached a handler that asks for a [`Session`] without passing through
/// a [`BatonLayer`](super::BatonLayer): a mistake in the service's routing, so a 500
/// that says so, never a 401 that would sign the client out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingLayer;

impl std::fmt::Display for MissingLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no baton session on this request: the route is missing baton's BatonLayer")
    }
}

impl std::error::Error for MissingLayer {}

impl IntoResponse for MissingLayer {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = MissingLayer;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(MissingLayer)
    }
}

/// `Option<Session>`: `None` for a request an optional layer let through without
/// credentials; still the 500 if no layer ran at all.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Session {
    type Rejection = MissingLayer;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        match parts.extensions.get::<Session>() {
            Some(session) => Ok(Some(session.clone())),
            None if parts.extensions.get::<PassedWithoutSession>().is_some() => Ok(None),
            None => Err(MissingLayer),
        }
    }
}

impl IntoResponseParts for SignedIn {
    type Error = Infallible;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        self.headers.apply(res.headers_mut());
        res.extensions_mut().insert(Handled::SignedIn);
        Ok(res)
    }
}

impl IntoResponseParts for SignedOut {
    type Error = Infallible;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        no_store(res.headers_mut());
        res.extensions_mut().insert(Handled::SignedOut);
        Ok(res)
    }
}

/// A failed sign-in as devise answers it: 503 with `Retry-After` while the store is
/// unavailable (the client may simply retry), 400 for a uid that can never be signed
/// in. Both in devise's `{"success": false, "errors": [...]}` shape.
impl IntoResponse for SignInError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            SignInError::Backend(BackendError::Unavailable(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "The session store is unavailable. Please try again shortly.",
            ),
            _ => (StatusCode::BAD_REQUEST, "This account cannot sign in."),
        };
        let body = serde_json::json!({ "success": false, "errors": [message] }).to_string();
        let mut r = (
            status,
            [(
                http::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )],
            body,
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
        }
        r
    }
}
