//! baton: an embedded, sharded, lock-free in-memory store for per-request rotating
//! API tokens.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod base64;
mod chacha;
mod clock;
mod codec;
mod config;
mod credentials;
pub mod decision;
mod error;
mod index;
mod keystream;
pub mod model;
mod rng;
mod session;
mod state;
mod stats;
mod store;
mod sync;

pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::{ClientId, Token, CLIENT_ID_LEN, MAX_UID_LEN, TOKEN_LEN};
pub use config::{
    Builder, ConfigError, ReplayPolicy, MAX_CLIENTS_PER_USER, MAX_SESSION_AGE, MAX_SHARDS,
};
pub use credentials::{Authenticated, Credentials, SessionInfo};
pub use error::{InputError, Rejection};
pub use keystream::REPLAY_DEPTH;
pub use stats::Stats;
pub use store::Store;
#[cfg(loom)]
#[doc(hidden)]
pub use sync::faults;
