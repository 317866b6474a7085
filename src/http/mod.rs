//! baton in a Rust web service: devise_token_auth's header protocol over
//! [`http`](https://docs.rs/http) types (feature `http`), as a tower layer (feature
//! `tower`) and as axum extractors (feature `axum`). All three are off by default: the
//! bare store depends on none of this.
//!
//! # `http`: the header codec
//!
//! [`read_credentials`] reads what a request presents, once and in one pass: the
//! `access-token`, `client` and `uid` headers (names case-insensitive), or, for each
//! one missing, the `Authorization: Bearer <base64 of JSON>` form (standard base64 with
//! padding as devise_token_auth writes it, and the URL-safe alphabet, padded or not).
//! It is total: any bytes, any size, duplicate headers get a [`CredentialError`], never
//! a panic, and a value over its limit is refused before any of it is decoded.
//! [`AuthHeaders`] writes the five headers back (the token marked sensitive, so HTTP/2
//! never indexes it). [`names`] is the workspace's one table of header names, with the
//! lists a CORS layer must expose ([`CREDENTIAL_HEADERS`]) and allow
//! ([`ALLOWED_HEADERS`]).
//!
//! # `tower`: the layer
//!
//! [`BatonLayer`] runs SPEC §4's table on every request:
//!
//! | request | what the layer does |
//! |---|---|
//! | `OPTIONS` | passes it to the inner service untouched |
//! | no credentials | 401 `{"errors": [...]}`, or in [optional](BatonLayer::optional) mode the inner service with no session |
//! | credentials unreadable | the same 401 |
//! | refused by the store, any reason | the same 401; the reason to a `tracing` event (target `baton`) and [`LayerStats`], never the token |
//! | store unavailable | 503 with `Retry-After`, no token headers: the client keeps its token |
//! | accepted | the inner service runs with a [`Session`] in the request's extensions; its answer, whatever its status, gets the five headers and `Cache-Control: no-store` |
//! | accepted, and the handler signs out ([`Session::sign_out`]) | the session is revoked; no token headers |
//!
//! Credentials are read once and authenticated once, before the inner service; the
//! handler sees uid, client, expiry and whether the request rotated, never the token.
//! [`sign_in`] issues a session and gives the handler its headers in one call. The
//! layer adds no header but those six: what it answers itself (401, 503) carries a JSON
//! `Content-Type` too. Its error type is the inner service's; an inner error has no
//! response to put headers on and passes through as it is.
//!
//! Over the embedded [`Store`](crate::Store) (and an `Arc<dyn DynBackend>` holding one)
//! the layer allocates nothing but the headers' values and the session's slot in the
//! extensions: the store answers through
//! [`Backend::authenticate_now`](crate::Backend::authenticate_now), so no future is
//! built. A backend that must wait ([`RedisStore`](crate::RedisStore)) is asked through
//! one boxed future holding copies of the credentials.
//!
//! **Where it sits among tower-http's layers**: inside `CorsLayer` (so that 401s and
//! 503s carry CORS headers and preflights never reach it), and inside tracing,
//! timeouts and request-size limits, which should see and bound every request; outside
//! compression (it adds headers, not body) and the handlers. Put it only on the routes
//! that need a session (or make it optional), since it answers 401 to anything without
//! credentials.
//!
//! # `axum`: extractors
//!
//! [`Session`] and `Option<Session>` are extractors reading what the layer left in the
//! request's extensions; without the layer they answer a 500 that names it
//! ([`MissingLayer`]), never a 401. [`SignedIn`] and [`SignedOut`] are response parts.

// The docs describe every feature; built with fewer, links to the absent ones dangle.
#![cfg_attr(
    not(all(feature = "axum", feature = "redis")),
    allow(rustdoc::broken_intra_doc_links)
)]

mod credentials;
#[cfg(feature = "axum")]
mod extract;
mod headers;
#[cfg(feature = "tower")]
mod layer;
pub mod names;
mod session;

pub use credentials::{
    read_credentials, CredentialError, RequestCredentials, MAX_AUTHORIZATION_LEN, MAX_SECRET_LEN,
    MAX_UID_LEN,
};
#[cfg(feature = "axum")]
pub use extract::MissingLayer;
pub use headers::AuthHeaders;
#[cfg(feature = "tower")]
pub use layer::{BatonLayer, BatonService, LayerStats, ResponseFuture};
pub use names::{
    ACCESS_TOKEN, ALLOWED_HEADERS, CLIENT, CREDENTIAL_HEADERS, EXPIRY, TOKEN_TYPE, UID,
};
pub use session::{sign_in, Session, SignInError, SignedIn, SignedOut};
