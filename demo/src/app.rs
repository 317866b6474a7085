//! What the server holds: the store, the users, its limits and guards, and what the
//! page shows.

use std::sync::Arc;
use std::time::Duration;

use baton::http::BatonLayer;
use baton::{Backend, Clock, Store, SystemClock};

use crate::conn_limit::ConnLimit;
use crate::cors::Cors;
use crate::metrics::ServerCounters;
use crate::signin::Gate;
use crate::users::Users;

/// Bounds on what one request may cost the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus headers, in bytes; past it the answer is 431.
    pub max_header_bytes: usize,
    /// Request body, in bytes; past it the answer is 413.
    pub max_body_bytes: usize,
    /// Time to receive a request's headers, from its first byte (hyper's
    /// `header_read_timeout`); past it the connection is closed.
    pub header_read_timeout: Duration,
    /// Time to receive a request's body once its handler asks for it; past it, 408.
    pub body_read_timeout: Duration,
    /// How long shutdown waits for in-flight requests before dropping them.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 16 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Everything a request handler reads. Built once, shared by `Arc`.
///
/// Generic over the session store: the embedded [`Store`] (tests hand in one built on
/// [`baton::ManualClock`] to move time by hand) or a shared one such as
/// [`baton::RedisStore`].
#[derive(Debug)]
pub struct AppState<B: Backend = Store<SystemClock>> {
    /// The sessions, shared with the authentication layer.
    pub store: Arc<B>,
    /// The authentication layer every protected route goes through (each route with
    /// its own refusal shape); its clones share one set of refusal counters, which
    /// `/metrics` reports.
    pub layer: BatonLayer<B>,
    /// Who may sign in.
    pub users: Users,
    /// Which origins may read responses.
    pub cors: Cors,
    /// Bounds on requests.
    pub limits: Limits,
    /// How often [`sweep`](Self::sweep) runs.
    pub sweep_interval: Duration,
    /// Removes expired sessions from the store, returning how many: set for the
    /// embedded store, `None` for Redis, which expires keys by their TTL.
    pub sweep: Option<fn(&B) -> usize>,
    /// Failed sign-ins, and store outages outside the layer.
    pub counters: ServerCounters,
    /// Sign-in's throttle and hashing pool.
    pub sign_in: Gate,
    /// The cap on open connections, shared by the API's and the metrics listener.
    pub connections: ConnLimit,
    /// Where the page (`GET /`) reads the counters: the metrics listener's absolute
    /// URL (`http://127.0.0.1:9464/metrics`), whose CORS allows the API's origin;
    /// `None` when there is none (the page then says the counters are off).
    pub metrics_url: Option<String>,
    /// Whether the server added the built-in demo user ([`DEMO_USER`](crate::cli::DEMO_USER))
    /// itself, so that the page prefills it. A user given by flag or file who has its
    /// address is not prefilled: its password is not the demo's.
    pub demo_user: bool,
}

impl<C: Clock> AppState<Store<C>> {
    /// A state over the embedded store, with default CORS (any origin), limits, and
    /// a sweep of expired sessions every 30 s.
    pub fn new(store: Store<C>, users: Users) -> Self {
        let mut state = AppState::with_backend(store, users);
        state.sweep = Some(Store::sweep);
        state
    }
}

impl<B: Backend> AppState<B> {
    /// A state over any backend, with default CORS (any origin) and limits, and no
    /// sweep: a shared backend reclaims expired sessions by itself.
    pub fn with_backend(store: B, users: Users) -> Self {
        let store = Arc::new(store);
        AppState {
            layer: BatonLayer::new(Arc::clone(&store)),
            store,
            users,
            cors: Cors::default(),
            limits: Limits::default(),
            sweep_interval: Duration::from_secs(30),
            sweep: None,
            counters: ServerCounters::default(),
            sign_in: Gate::default(),
            connections: ConnLimit::new(crate::conn_limit::DEFAULT_MAX),
            metrics_url: None,
            demo_user: false,
        }
    }
}
