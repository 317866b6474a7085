//! What the server holds: the store, the users, and its limits.

use std::time::Duration;

use baton::{Clock, Store, SystemClock};

use crate::cors::Cors;
use crate::metrics::ServerCounters;
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
/// Generic over the store's clock so that tests can hand in a store built on
/// [`baton::ManualClock`] and move time by hand.
#[derive(Debug)]
pub struct AppState<C: Clock = SystemClock> {
    /// The sessions.
    pub store: Store<C>,
    /// Who may sign in.
    pub users: Users,
    /// Which origins may read responses.
    pub cors: Cors,
    /// Bounds on requests.
    pub limits: Limits,
    /// How often expired sessions are swept out of the store.
    pub sweep_interval: Duration,
    /// Rejections made before the store sees a credential.
    pub counters: ServerCounters,
}

impl<C: Clock> AppState<C> {
    /// A state with default CORS (any origin), limits, and a 30 s sweep.
    pub fn new(store: Store<C>, users: Users) -> Self {
        AppState {
            store,
            users,
            cors: Cors::default(),
            limits: Limits::default(),
            sweep_interval: Duration::from_secs(30),
            counters: ServerCounters::default(),
        }
    }
}
