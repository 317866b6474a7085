//! The endpoints of SPEC §3 as an axum app: baton's layer in front of every protected
//! route, SPEC §3's CORS around everything.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete_service, get, get_service, post};
use axum::Router;
use http::header::HeaderValue;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use tower::Layer;

use baton::http::{Session, ALLOWED_HEADERS};
use baton::{Backend, BackendError};

use crate::app::AppState;
use crate::cors::{Cors, CorsRules, CorsService};
use crate::metrics::{self, ServerCounters};
use crate::page;
use crate::reply::{self, Reply};
use crate::users::User;

mod sign_in;
use sign_in::sign_in;

pub(crate) const NOT_SIGNED_IN: &str = "You need to sign in or sign up before continuing.";
const INVALID_TOKEN: &str = "Invalid login credentials";
const SIGN_OUT_UNKNOWN: &str = "User was not found or was not logged in.";
pub(crate) const UNAVAILABLE: &str = "The session store is unavailable. Please try again shortly.";

/// [`CREDENTIAL_HEADERS`] as the `Access-Control-Expose-Headers` value, written out
/// so that it is a static value (its clone on every answer copies no reference count);
/// a test checks it against the list.
const EXPOSED: &str = "access-token, token-type, client, expiry, uid";

const ITEMS: [(u64, &str); 3] = [(1, "baton"), (2, "relay shoes"), (3, "stopwatch")];

type Shared<B> = Arc<AppState<B>>;

/// A router inside the CORS rules ([`CorsService`]): they wrap the router once, where
/// `Router::layer` would wrap (and box) every route on its own, costing every request
/// another boxed service and future.
pub type App = CorsService<Router>;

/// The whole API: what [`serve`](crate::serve) answers every request with. Public for
/// servers that wrap it (`baton-load`'s echoing server does, to measure the protocol's
/// bytes alone).
pub fn app<B: Backend + 'static>(state: Shared<B>) -> App {
    let layer = state
        .layer
        .clone()
        .unavailable_body(devise_failure(UNAVAILABLE));
    let validate = layer.clone().refusal_body(devise_failure(INVALID_TOKEN));
    // devise answers a sign-out without a session (none sent, or refused) with 404.
    let sign_out_layer = layer
        .clone()
        .optional()
        .refusal_status(StatusCode::NOT_FOUND)
        .refusal_body(devise_failure(SIGN_OUT_UNKNOWN));
    // The layer wraps each protected handler itself, inside its method's route: a
    // wrong method is a 405 before any authentication, as before the layer, and the
    // request passes one boxed route, as an unprotected one does (`route_layer` would
    // box the layered route once more).
    let api = get_service(layer.layer(api::<B>.with_state(Arc::clone(&state))));
    let router = Router::new()
        .route("/", get(page_reply::<B>))
        .route("/auth/sign_in", post(sign_in::<B>))
        .route(
            "/auth/validate_token",
            get_service(validate.layer(validate_token::<B>.with_state(Arc::clone(&state)))),
        )
        .route(
            "/auth/sign_out",
            delete_service(sign_out_layer.layer(sign_out::<B>.with_state(Arc::clone(&state)))),
        )
        .route("/public/items", get(items))
        // The two resources by name (no path parameters to extract), and every other
        // `/api/...` path through the same handler.
        .route("/api/me", api.clone())
        .route("/api/items", api.clone())
        .route("/api/", api.clone())
        .route("/api/{*rest}", api)
        .fallback(|| async { reply::failure(StatusCode::NOT_FOUND, "no such path") })
        .method_not_allowed_fallback(|| async {
            reply::failure(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .with_state(Arc::clone(&state));
    CorsService::new(router, cors(&state.cors))
}

/// What [`serve`](crate::serve) answers a request whose head is over
/// [`Limits::max_header_bytes`](crate::Limits) with, before anything reads its headers:
/// a JSON 431 with the CORS headers every answer carries. A router of its own, so that
/// the API's requests pay for no middleware that only this case needs.
pub(crate) fn head_too_large(origins: &Cors) -> App {
    let router = Router::new().fallback(|| async {
        reply::failure(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers are too large",
        )
    });
    CorsService::new(router, cors(origins))
}

/// SPEC §3's CORS from the `--allowed-origins` setting and baton's name lists, outside
/// everything else so that refusals carry it too and preflights never reach the layer.
fn cors(origins: &Cors) -> CorsRules {
    CorsRules::new(
        origins.clone(),
        &[
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ],
        &ALLOWED_HEADERS,
        HeaderValue::from_static(EXPOSED),
        std::time::Duration::from_secs(600),
    )
}

/// The request line and headers as hyper received them, near enough: what a client
/// made the server hold in memory.
pub(crate) fn head_size<B>(req: &http::Request<B>) -> usize {
    let uri = req.uri();
    let uri = uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len() + 8);
    req.headers()
        .iter()
        .fold(uri + 16, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

/// devise_token_auth's error shape for its own endpoints, as a layer's body.
fn devise_failure(message: &str) -> String {
    json!({ "success": false, "errors": [message] }).to_string()
}

pub(crate) fn user_json(user: &User) -> Value {
    json!({
        "id": user.id,
        "email": user.email,
        "uid": user.email,
        "provider": "email",
        "allow_password_change": false,
    })
}

/// The store could not answer: 503 in devise_token_auth's error shape, without token
/// headers, so that clients keep the credentials they hold. Never a 401, which would
/// make them sign the user out.
pub(crate) fn unavailable<B: Backend>(
    state: &AppState<B>,
    what: &str,
    u: &dyn std::fmt::Display,
) -> Reply {
    ServerCounters::bump(&state.counters.store_unavailable);
    // The detail names the failure (refused, timed out), never a credential.
    log::warn!("{what}: {u}");
    let mut r = reply::failure(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE);
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

async fn validate_token<B: Backend>(State(state): State<Shared<B>>, session: Session) -> Reply {
    match state.users.find(session.uid()) {
        Some(user) => reply::json(
            StatusCode::OK,
            &json!({ "success": true, "data": user_json(user) }),
        ),
        // Users are never removed while serving: a session is always a user's.
        None => reply::failure(StatusCode::UNAUTHORIZED, INVALID_TOKEN),
    }
}

async fn sign_out<B: Backend>(
    State(state): State<Shared<B>>,
    session: Option<Session>,
) -> Response {
    // Authenticated first by the layer (a stolen client id alone signs no one out).
    let Some(session) = session else {
        return reply::failure(StatusCode::NOT_FOUND, SIGN_OUT_UNKNOWN).into_response();
    };
    match session.sign_out(&*state.store).await {
        Ok(out) if out.was_live() => (
            out,
            reply::json(StatusCode::OK, &json!({ "success": true })),
        )
            .into_response(),
        Ok(out) => (out, reply::failure(StatusCode::NOT_FOUND, SIGN_OUT_UNKNOWN)).into_response(),
        Err(BackendError::Refused(_)) => {
            reply::failure(StatusCode::NOT_FOUND, SIGN_OUT_UNKNOWN).into_response()
        }
        Err(e) => unavailable(&state, "sign-out", &e).into_response(),
    }
}

/// Every `GET /api/...` path, authenticated before routing, so that an unknown
/// resource is a 404 that still carries the next credentials.
async fn api<B: Backend>(State(state): State<Shared<B>>, session: Session, req: Request) -> Reply {
    let Some(user) = state.users.find(session.uid()) else {
        return reply::errors(StatusCode::UNAUTHORIZED, NOT_SIGNED_IN);
    };
    let item = |(id, name): (u64, &str)| json!({ "id": id, "name": name });
    match req.uri().path().trim_end_matches('/') {
        "/api/me" => reply::json(StatusCode::OK, &json!({ "data": user_json(user) })),
        "/api/items" => items().await,
        p => match p
            .strip_prefix("/api/items/")
            .and_then(|id| id.parse::<u64>().ok())
            .and_then(|id| ITEMS.iter().copied().find(|(i, _)| *i == id))
        {
            Some(found) => reply::json(StatusCode::OK, &json!({ "data": item(found) })),
            None => reply::errors(StatusCode::NOT_FOUND, "not found"),
        },
    }
}

/// The item list; also served without authentication at `/public/items`, the load
/// test's baseline, so that the two differ by the authentication step alone.
async fn items() -> Reply {
    let item = |(id, name): (u64, &str)| json!({ "id": id, "name": name });
    reply::json(
        StatusCode::OK,
        &json!({ "data": ITEMS.iter().copied().map(item).collect::<Vec<_>>() }),
    )
}

/// The metrics listener's app: `GET /metrics` and nothing else, readable by scripts of
/// the API listener's own origin (`api_origin`) only.
pub fn metrics_app<B: Backend + 'static>(state: Shared<B>, api_origin: HeaderValue) -> App {
    let router = Router::new()
        .route("/metrics", get(metrics_reply::<B>))
        .fallback(|| async { reply::failure(StatusCode::NOT_FOUND, "no such path") })
        .method_not_allowed_fallback(|| async {
            reply::failure(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .with_state(state);
    CorsService::new(router, CorsRules::only(api_origin))
}

/// Always 200 while the server runs: a scrape that failed with the store would lose
/// the counters too. When the store cannot count its sessions, `baton_store_up` is 0
/// and `baton_sessions` is left out rather than reported as 0.
async fn metrics_reply<B: Backend>(State(state): State<Shared<B>>) -> Reply {
    let live = match state.store.live().await {
        Ok(n) => Some(n),
        Err(u) => {
            ServerCounters::bump(&state.counters.store_unavailable);
            log::warn!("metrics: {u}");
            None
        }
    };
    let text = metrics::render(
        &state.store.stats(),
        live,
        &state.counters,
        &state.layer.stats(),
    );
    let mut r = http::Response::new(text.into());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// The demo's own page (`crate::page`), on the API's origin: the counters are read
/// from the metrics listener ([`AppState::metrics_url`]), whose CORS allows this
/// origin, and the demo user is prefilled only when the server added it itself
/// ([`AppState::demo_user`]), never for a user who merely has its address.
async fn page_reply<B: Backend>(State(state): State<Shared<B>>) -> Reply {
    let config = page::PageConfig {
        metrics_url: state.metrics_url.as_deref(),
        batch_window_ms: state.store.policy().batch_window_ms,
        demo_user: state.demo_user.then_some(crate::cli::DEMO_USER),
    };
    let mut r = http::Response::new(page::index(&config).into());
    r.headers_mut().extend(page::headers(&config));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton::http::CREDENTIAL_HEADERS;

    #[test]
    fn the_exposed_value_lists_the_credential_headers() {
        let listed: Vec<&str> = EXPOSED.split(',').map(str::trim).collect();
        let headers = CREDENTIAL_HEADERS;
        let names: Vec<&str> = headers.iter().map(|n| n.as_str()).collect();
        assert_eq!(listed, names);
    }
}
