//! `POST /auth/sign_in`, the one endpoint that does expensive work (a password hash):
//! read the body, parse it, pass the throttle, verify the password on the hashing pool
//! ([`Gate::attempt`](crate::signin::Gate::attempt)), issue the session.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use serde_json::json;

use baton::http::SignInError;
use baton::{Backend, BackendError};

use crate::app::AppState;
use crate::body;
use crate::metrics::ServerCounters;
use crate::reply::{self, Reply};
use crate::routes::{unavailable, user_json};
use crate::server::Connection;
use crate::signin;

const BAD_LOGIN: &str = "Invalid login credentials. Please try again.";

/// Signs a user in: 200 with devise's `data` and the five headers; a wrong address or
/// password 401; an unreadable body 400 (413, 408 past the limits); past the sign-in
/// throttle 429, held back up to [`Gate::hold`](signin::Gate::hold); a full hashing
/// queue or the store down 503.
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
    // The peer address the accept loop put there; without one (a server that did
    // not), every client shares the unspecified address's allowance.
    let connection = parts.extensions.get::<Connection>();
    let addr = connection.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.peer.ip());
    let user = match state
        .sign_in
        .attempt(&state.users, addr, email, password)
        .await
    {
        Ok(user) => user,
        Err(refused) => {
            // From here the request only waits: its connection may be closed to make room.
            let _idle = connection.map(|c| c.requests.idle());
            return sign_in_refused(&state, refused).await.into_response();
        }
    };
    let Some(user) = user else {
        ServerCounters::bump(&state.counters.sign_in_failures);
        log::debug!("sign-in refused");
        return reply::failure(StatusCode::UNAUTHORIZED, BAD_LOGIN).into_response();
    };
    match baton::http::sign_in(&*state.store, &user.email).await {
        Ok(signed_in) => (
            signed_in,
            reply::json(StatusCode::OK, &json!({ "data": user_json(&user) })),
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

/// A sign-in throttled (429, before any hash, held back up to `Gate::hold`) or
/// refused for a full hashing queue (503, at once), in devise's error shape with
/// `Retry-After`, and counted.
async fn sign_in_refused<B: Backend>(state: &AppState<B>, refused: signin::Refused) -> Reply {
    let (status, message, counter, secs, hold) = match refused {
        signin::Refused::Throttled(t) => (
            StatusCode::TOO_MANY_REQUESTS,
            signin::THROTTLED,
            match t.scope {
                signin::Scope::Address => &state.counters.sign_in_throttled_address,
                signin::Scope::Account => &state.counters.sign_in_throttled_account,
            },
            t.retry_after_secs(),
            state.sign_in.hold_for(&t),
        ),
        signin::Refused::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            signin::BUSY,
            &state.counters.sign_in_busy,
            1,
            Duration::ZERO,
        ),
    };
    ServerCounters::bump(counter);
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    log::debug!("sign-in refused: {status}");
    let mut r = reply::failure(status, message);
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    r
}
