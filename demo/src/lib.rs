//! A devise_token_auth-compatible HTTP server over a [`baton`] store: the wire
//! protocol of SPEC §3, so that existing front-end client libraries work unchanged.
//!
//! An axum app on baton's tower layer (`baton::http::BatonLayer`), served by hyper
//! with hyper-util's connection settings (header read timeout, read buffer, keep-alive,
//! graceful shutdown). The binary (`src/main.rs`) parses flags with [`Cli`] and calls
//! [`serve`] and [`serve_metrics`]; tests build an [`AppState`] around a store of their
//! own (one on [`baton::ManualClock`] to move time by hand) and serve it on port 0.
//! [`app()`] is the API's router and [`serve_with`] serves a wrapper of it, for servers
//! that wrap the routes (the load test's echoing server, `src/bin/baton-load.rs`, does).
//!
//! # Stores
//! The server is generic over [`baton::Backend`]. `--store memory` (the default) keeps
//! sessions in the process, in a [`baton::Store`] swept of expired sessions every
//! 30 s. `--store redis://HOST:PORT/DB` keeps them in a [`baton::RedisStore`] shared
//! by every server on that Redis with the same secret (`--redis-secret-file` or
//! `BATON_REDIS_SECRET`, at least 32 bytes, never logged) and `--redis-prefix`: a
//! token rotated through one server is stale through all, and a sign-out through one
//! ends the session on all. Redis expires sessions by TTL, so nothing is swept. Redis
//! must answer when the server starts (else it exits naming `--store`).
//!
//! # Decisions where SPEC is silent
//! - Every refused credential, whatever the reason, gets the endpoint's one 401 body
//!   (the layer's, configured per route); the reason goes only to `/metrics` and a
//!   `tracing` event of target `baton`.
//! - Credentials that cannot be read (missing, too long, not UTF-8, bad
//!   `Authorization`) are refused like a wrong token, counted as
//!   `missing_credentials` or `malformed_credentials`.
//! - `sign_out` authenticates first (rotating like any request), then revokes; without
//!   a session (none sent, or refused) it answers devise's 404.
//! - `/metrics` is served on its own listener (`--metrics-listen`, 127.0.0.1:9464 by
//!   default) and never on the API's, which answers 404 there. Its answers allow the
//!   API listener's own origin (`http://` and its address) and no other.
//! - `GET /` on the API listener is the demo's own page ([`page`]), which reads the
//!   counters from the metrics listener's absolute URL ([`AppState::metrics_url`]) and
//!   prefills the demo user only when the server added it itself.
//! - Sign-in is throttled per address and per account before any hash and hashed on a
//!   bounded pool off the runtime ([`signin`]); open connections are capped, the
//!   longest-idle closed to make room ([`conn_limit`]), one cap for both listeners.
//! - CORS is the demo's own small service ([`cors::CorsService`]) outside everything,
//!   doing what tower-http's `CorsLayer` did here at a fraction of its cost: with
//!   `--allowed-origins`, an origin not listed gets no `Access-Control-Allow-Origin` at
//!   all (so its browser refuses the answer), and `Access-Control-Expose-Headers` is
//!   sent on actual answers, where Fetch reads it, not on preflights.
//! - Any `GET /api/...` path is authenticated before routing, so an unknown resource
//!   is a 404 that still carries the next credentials. A wrong method is a 405 before
//!   any authentication (the layer sits on each method's route).
//! - A request head over [`Limits::max_header_bytes`] gets a JSON 431; one over
//!   hyper's 64 KiB read buffer, or with more than 100 headers, gets hyper's bare 431,
//!   and a request hyper cannot parse at all its bare 400 (hyper answers those before
//!   any handler runs, so they carry no CORS headers either).
//! - `/public/items` serves the item list without authentication: the load test's
//!   baseline (`src/bin/baton-load.rs`).
//! - A store that cannot answer (Redis down, slow past `--redis-timeout-ms`, or
//!   restarting) is not a refusal: sign-in, authenticated requests and sign-out then
//!   answer 503 `{"success": false, "errors": [..]}` with `Retry-After: 1` and no
//!   credential headers, never a 401 that would make clients sign the user out. The
//!   connections come back by themselves when Redis does.
//! - `/metrics` answers 200 even then, so the counters are still scraped:
//!   `baton_store_up` is 0 and `baton_sessions` is left out rather than reported as
//!   0. Over Redis, `baton_sessions` counts every live session (from counts the
//!   scripts keep: no walk over the users), and the other counters count this
//!   server's answers only.

pub mod app;
mod body;
pub mod cli;
pub mod conn_limit;
pub mod cors;
mod metrics;
pub mod page;
mod reply;
mod routes;
mod server;
pub mod signin;
pub mod users;
pub mod users_file;

pub use app::{AppState, Limits};
pub use baton::http::{ACCESS_TOKEN, CLIENT, EXPIRY, TOKEN_TYPE, UID};
pub use cli::Cli;
pub use routes::{app, metrics_app, App};
pub use server::{call, serve, serve_metrics, serve_with};
