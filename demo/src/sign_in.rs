//! `POST /auth/sign_in`, the one endpoint that does expensive work (a password hash):
//! read the body, parse it, verify the password, issue the session.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use baton::http::SignInError;
use baton::{Backend, BackendError};

use crate::app::AppState;
use crate::body;
use crate::metrics::ServerCounters;
use crate::reply;
use crate::routes::{unavailable, user_json};

const BAD_LOGIN: &str = "Invalid login credentials. Please try again.";

/// Signs a user in: 200 with devise's `data` and the five headers; a wrong address or
/// password 401; an unreadable body 400 (413, 408 past the limits); the store down 503.
pub async fn sign_in<B: Backend>(State(state): State<Arc<AppState<B>>>, req: Request) -> Response {
    let (parts, incoming) = req.into_parts();
    let bytes = match body::read(&parts.headers, incoming, &state.limits).await {
        Ok(b) => b,
        Err(e) => return reply::failure(e.status, e.message).into_response(),
    };
    let form = match body::parse_sign_in(&parts.headers, &bytes) {
        Ok(f) => f,
        Err(message) => return reply::failure(StatusCode::BAD_REQUEST, message).into_response(),
    };
    let (Some(email), Some(password)) = (form.email, form.password) else {
        ServerCounters::bump(&state.counters.sign_in_failures);
        return reply::failure(StatusCode::UNAUTHORIZED, BAD_LOGIN).into_response();
    };
    let Some(user) = state.users.verify(&email, &password) else {
        ServerCounters::bump(&state.counters.sign_in_failures);
        log::debug!("sign-in refused");
        return reply::failure(StatusCode::UNAUTHORIZED, BAD_LOGIN).into_response();
    };
    match baton::http::sign_in(&*state.store, &user.email).await {
        Ok(signed_in) => (
            signed_in,
            reply::json(StatusCode::OK, &json!({ "data": user_json(user) })),
        )
            .into_response(),
        Err(SignInError::Backend(BackendError::Unavailable(u))) => {
            unavailable(&state, "sign-in", &u).into_response()
        }
        // Users are checked to be valid uids when added, so this is unreachable; a
        // refusal is still better than a crash.
        Err(_) => reply::failure(StatusCode::UNAUTHORIZED, BAD_LOGIN).into_response(),
    }
}
