//! A devise_token_auth-compatible HTTP server over a [`baton`] store: the wire
//! protocol of SPEC §3, so that existing front-end client libraries work unchanged.
//!
//! The binary (`src/main.rs`) parses flags with [`Cli`] and calls [`serve`]; tests
//! build an [`AppState`] around a store of their own (one on [`baton::ManualClock`]
//! to move time by hand) and serve it on port 0.
//!
//! # Decisions where SPEC is silent
//! - Every refused credential, whatever the reason, gets the endpoint's one 401 body;
//!   the reason goes only to `/metrics` and a debug log line.
//! - Credentials that cannot be read (missing, too long, not UTF-8, bad
//!   `Authorization`) are refused like a wrong token, counted as
//!   `missing_credentials` or `malformed_credentials`.
//! - `sign_out` authenticates first (rotating like any request), then revokes.
//! - Any `GET /api/...` path is authenticated before routing, so an unknown resource
//!   is a 404 that still carries the next credentials.
//! - A request head over [`Limits::max_header_bytes`] gets a JSON 431; one over
//!   hyper's 64 KiB read buffer, or with more than 100 headers, gets hyper's bare 431,
//!   and a request hyper cannot parse at all its bare 400 (hyper answers those before
//!   any handler runs, so they carry no CORS headers either).
//! - `/public/items` serves the item list without authentication: the load test's
//!   baseline (`src/bin/baton-load.rs`).

pub mod app;
mod body;
pub mod cli;
pub mod cors;
pub mod credentials;
mod metrics;
mod reply;
mod routes;
mod server;
pub mod users;

pub use app::{AppState, Limits};
pub use cli::Cli;
pub use server::serve;
