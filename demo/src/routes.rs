//! The endpoints of SPEC §3 and the one authentication step in front of them.

use http::header::{HeaderValue, ALLOW, ORIGIN};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use baton::{Backend, BackendError};

use crate::app::AppState;
use crate::body;
use crate::cors::Cors;
use crate::credentials;
use crate::metrics::{self, ServerCounters};
use crate::page;
use crate::reply::{self, AuthHeaders, Reply};
use crate::signin;
use crate::users::User;

const BAD_LOGIN: &str = "Invalid login credentials. Please try again.";
const NOT_SIGNED_IN: &str = "You need to sign in or sign up before continuing.";
const INVALID_TOKEN: &str = "Invalid login credentials";
const SIGN_OUT_UNKNOWN: &str = "User was not found or was not logged in.";
const UNAVAILABLE: &str = "The session store is unavailable. Please try again shortly.";

const ITEMS: [(u64, &str); 3] = [(1, "baton"), (2, "relay shoes"), (3, "stopwatch")];

/// Answers one request as the server does: every answer, errors included, carries
/// the CORS headers. [`serve`](crate::serve) calls it for each request; it is public
/// for servers that wrap it (`baton-load` does, to measure the protocol's bytes alone).
pub async fn handle<B: Backend>(state: &AppState<B>, req: Request<Incoming>) -> Reply {
    let origin = req.headers().get(ORIGIN).cloned();
    let mut reply = route(state, req).await;
    state.cors.apply(origin.as_ref(), reply.headers_mut());
    reply
}

async fn route<B: Backend>(state: &AppState<B>, req: Request<Incoming>) -> Reply {
    if head_size(&req) > state.limits.max_header_bytes {
        return reply::failure(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers are too large",
        );
    }
    let method = req.method().clone();
    if method == Method::OPTIONS {
        let mut r = reply::json(StatusCode::NO_CONTENT, &Value::Null);
        *r.body_mut() = Default::default();
        r.headers_mut().remove(http::header::CONTENT_TYPE);
        Cors::preflight(r.headers_mut());
        return r;
    }
    let path = req.uri().path().to_owned();
    let allowed = match path.as_str() {
        "/auth/sign_in" => Method::POST,
        "/auth/sign_out" => Method::DELETE,
        "/" | "/auth/validate_token" | "/metrics" | "/public/items" => Method::GET,
        p if p.starts_with("/api/") => Method::GET,
        _ => return reply::failure(StatusCode::NOT_FOUND, "no such path"),
    };
    if method != allowed {
        let mut r = reply::failure(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        r.headers_mut().insert(
            ALLOW,
            HeaderValue::from_str(allowed.as_str()).unwrap_or(HeaderValue::from_static("GET")),
        );
        return r;
    }
    match path.as_str() {
        "/auth/sign_in" => sign_in(state, req).await,
        "/auth/sign_out" => sign_out(state, &req).await,
        "/" => page_reply(state),
        "/metrics" => metrics_reply(state).await,
        "/public/items" => items(),
        "/auth/validate_token" => {
            authenticated(state, &req, INVALID_TOKEN, true, |user| {
                reply::json(
                    StatusCode::OK,
                    &json!({ "success": true, "data": user_json(user) }),
                )
            })
            .await
        }
        _ => authenticated(state, &req, NOT_SIGNED_IN, false, |user| api(&path, user)).await,
    }
}

/// The request line and headers as hyper received them, near enough: what a client
/// made the server hold in memory.
fn head_size<B>(req: &Request<B>) -> usize {
    let uri = req.uri();
    let uri = uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len() + 8);
    req.headers()
        .iter()
        .fold(uri + 16, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

fn user_json(user: &User) -> Value {
    json!({
        "id": user.id,
        "email": user.email,
        "uid": user.email,
        "provider": "email",
        "allow_password_change": false,
    })
}

async fn sign_in<B: Backend>(state: &AppState<B>, req: Request<Incoming>) -> Reply {
    let (mut parts, incoming) = req.into_parts();
    let bytes = match body::read(&parts.headers, incoming, &state.limits).await {
        Ok(b) => b,
        Err(e) => return reply::failure(e.status, e.message),
    };
    let form = match body::parse_sign_in(&parts.headers, &bytes) {
        Ok(f) => f,
        Err(message) => return reply::failure(StatusCode::BAD_REQUEST, message),
    };
    let (Some(email), Some(password)) = (form.email, form.password) else {
        ServerCounters::bump(&state.counters.sign_in_failures);
        return reply::failure(StatusCode::UNAUTHORIZED, BAD_LOGIN);
    };
    // The peer address the accept loop put there; without one (a server that did
    // not), every client shares the unspecified address's allowance.
    let addr = parts.extensions.get::<std::net::SocketAddr>().map_or(
        std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        std::net::SocketAddr::ip,
    );
    let user = match state
        .sign_in
        .attempt(&state.users, addr, email, password)
        .await
    {
        Ok(user) => user,
        Err(refused) => {
            // From here the request only waits: its connection may be closed to make room.
            drop(parts.extensions.remove::<crate::conn_limit::InFlight>());
            return sign_in_refused(state, refused).await;
        }
    };
    let Some(user) = user else {
        ServerCounters::bump(&state.counters.sign_in_failures);
        log::debug!("sign-in refused");
        return reply::failure(StatusCode::UNAUTHORIZED, BAD_LOGIN);
    };
    let user = &user;
    let headers = match state.store.issue(&user.email).await {
        Ok(c) => AuthHeaders::new(&c, None, None),
        Err(BackendError::Refused(_)) => None,
        Err(e) => return unavailable(state, "sign-in", &e),
    };
    let Some(headers) = headers else {
        // Users are checked to be valid uids when added, so this is unreachable; a
        // refusal is still better than a crash.
        return reply::failure(StatusCode::UNAUTHORIZED, BAD_LOGIN);
    };
    let mut r = reply::json(StatusCode::OK, &json!({ "data": user_json(user) }));
    headers.apply(r.headers_mut());
    r
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
            std::time::Duration::ZERO,
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

/// The store could not answer: 503 in devise_token_auth's error shape, without token
/// headers, so that clients keep the credentials they hold. Never a 401, which would
/// make them sign the user out.
fn unavailable<B: Backend>(state: &AppState<B>, what: &str, u: &dyn std::fmt::Display) -> Reply {
    ServerCounters::bump(&state.counters.store_unavailable);
    // The detail names the failure (refused, timed out), never a credential.
    log::warn!("{what}: {u}");
    let mut r = reply::failure(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE);
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Checks and rotates the request's credentials once, runs `handler`, and puts the
/// session's next credentials on whatever it answers. A refusal is the same 401
/// whatever the reason; the reason goes to the metrics and a debug line only. A store
/// that cannot answer gets a 503 instead, and the handler does not run.
async fn authenticated<B: Backend>(
    state: &AppState<B>,
    req: &Request<Incoming>,
    refusal: &str,
    devise_shape: bool,
    handler: impl FnOnce(&User) -> Reply,
) -> Reply {
    let refuse = || {
        if devise_shape {
            reply::failure(StatusCode::UNAUTHORIZED, refusal)
        } else {
            reply::errors(StatusCode::UNAUTHORIZED, refusal)
        }
    };
    match check(state, req).await {
        Ok(ok) => {
            let mut r = handler(ok.user);
            ok.headers.apply(r.headers_mut());
            r
        }
        Err(Failed::Refused) => refuse(),
        Err(Failed::Unavailable(u)) => unavailable(state, req.uri().path(), &u),
    }
}

/// A request that passed the authentication step.
struct Checked<'s, 'r> {
    headers: AuthHeaders,
    user: &'s User,
    client: std::borrow::Cow<'r, str>,
}

/// Why the authentication step let a request through no further.
enum Failed {
    /// The credentials were refused (already counted and logged): 401.
    Refused,
    /// The store could not answer (what went wrong, for the log): 503.
    Unavailable(String),
}

/// The one authentication step.
async fn check<'s, 'r, B: Backend>(
    state: &'s AppState<B>,
    req: &'r Request<Incoming>,
) -> Result<Checked<'s, 'r>, Failed> {
    let presented = match credentials::read(req.headers()) {
        Ok(c) => c,
        Err(e) => {
            let counter = match e {
                credentials::CredentialError::Missing => &state.counters.missing_credentials,
                _ => &state.counters.malformed_credentials,
            };
            ServerCounters::bump(counter);
            log::debug!("{} {}: refused: {e}", req.method(), req.uri().path());
            return Err(Failed::Refused);
        }
    };
    let credentials::Presented {
        credentials: sent,
        client_header,
        uid_header,
    } = presented;
    match state
        .store
        .authenticate(&sent.uid, &sent.client, &sent.token)
        .await
    {
        Ok(ok) => {
            let headers = AuthHeaders::new(ok.credentials(), client_header, uid_header)
                .ok_or(Failed::Refused)?;
            let user = state.users.find(&sent.uid).ok_or(Failed::Refused)?;
            Ok(Checked {
                headers,
                user,
                client: sent.client,
            })
        }
        Err(BackendError::Refused(rejection)) => {
            log::debug!(
                "{} {}: refused: {}",
                req.method(),
                req.uri().path(),
                rejection.reason()
            );
            Err(Failed::Refused)
        }
        // `Unavailable`, and any failure `BackendError` may add: none of them says
        // the credential is bad, so none is a 401.
        Err(e) => Err(Failed::Unavailable(e.to_string())),
    }
}

async fn sign_out<B: Backend>(state: &AppState<B>, req: &Request<Incoming>) -> Reply {
    // Authenticating first means a stolen client id alone cannot sign anyone out.
    let ended = match check(state, req).await {
        Ok(ok) => match state.store.revoke(&ok.user.email, &ok.client).await {
            Ok(live) => live,
            Err(BackendError::Refused(_)) => false,
            Err(e) => return unavailable(state, "sign-out", &e),
        },
        Err(Failed::Refused) => false,
        Err(Failed::Unavailable(u)) => return unavailable(state, "sign-out", &u),
    };
    if ended {
        let mut r = reply::json(StatusCode::OK, &json!({ "success": true }));
        r.headers_mut().insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        r
    } else {
        reply::failure(StatusCode::NOT_FOUND, SIGN_OUT_UNKNOWN)
    }
}

fn api(path: &str, user: &User) -> Reply {
    let item = |(id, name): (u64, &str)| json!({ "id": id, "name": name });
    match path.trim_end_matches('/') {
        "/api/me" => reply::json(StatusCode::OK, &json!({ "data": user_json(user) })),
        "/api/items" => items(),
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
fn items() -> Reply {
    let item = |(id, name): (u64, &str)| json!({ "id": id, "name": name });
    reply::json(
        StatusCode::OK,
        &json!({ "data": ITEMS.iter().copied().map(item).collect::<Vec<_>>() }),
    )
}

/// Always 200 while the server runs: a scrape that failed with the store would lose
/// the counters too. When the store cannot count its sessions, `baton_store_up` is 0
/// and `baton_sessions` is left out rather than reported as 0.
async fn metrics_reply<B: Backend>(state: &AppState<B>) -> Reply {
    let live = match state.store.live().await {
        Ok(n) => Some(n),
        Err(u) => {
            ServerCounters::bump(&state.counters.store_unavailable);
            log::warn!("metrics: {u}");
            None
        }
    };
    let text = metrics::render(&state.store.stats(), live, &state.counters);
    let mut r = http::Response::new(text.into());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// The demo's own page (`crate::page`). The counters are on this port for now. The demo
/// user is prefilled when the user table has its address: added without `--user`, or
/// named by one (its password then differs, and the page's sign-in says so with a 401).
fn page_reply<B: Backend>(state: &AppState<B>) -> Reply {
    let config = page::PageConfig {
        metrics_url: Some("/metrics"),
        batch_window_ms: state.store.policy().batch_window_ms,
        demo_user: state
            .users
            .find(crate::cli::DEMO_USER.0)
            .map(|_| crate::cli::DEMO_USER),
    };
    let mut r = http::Response::new(page::index(&config).into());
    r.headers_mut().extend(page::headers(&config));
    r
}
