//! baton: an embedded, sharded, lock-free in-memory store for per-request rotating
//! API tokens.
//!
//! Every authenticated request retires the token it presented and hands back a fresh
//! one; concurrent "batch" requests sent with the same token all succeed and all
//! receive the same new token. It is what Rails' devise_token_auth does with a database
//! row, a bcrypt hash and a row lock per request, done with one compare-and-swap.
//!
//! ```
//! use baton::{Authenticated, Rejection, Store};
//!
//! let store = Store::new(); // SPEC's defaults: 5 s batch window, 14-day tokens, ...
//! let signed_in = store.issue("alice@example.com")?;
//! let (client, token) = (signed_in.client().as_str(), signed_in.token().as_str());
//!
//! // A request: check the credentials, and send back the ones to use next.
//! let next = match store.authenticate("alice@example.com", client, token) {
//!     Ok(Authenticated::Rotated(next)) | Ok(Authenticated::Batched(next)) => next,
//!     Err(reason) => panic!("401 ({reason})"),
//! };
//! assert_ne!(next.token().as_str(), token);
//!
//! // A second request of the same batch, sent with the same token, converges.
//! let again = store.authenticate("alice@example.com", client, token).unwrap();
//! assert_eq!(again.credentials().token(), next.token());
//!
//! store.revoke("alice@example.com", client)?; // sign-out
//! assert_eq!(
//!     store.authenticate("alice@example.com", client, next.token().as_str()),
//!     Err(Rejection::UnknownSession)
//! );
//! # Ok::<(), baton::InputError>(())
//! ```
//!
//! # Features
//!
//! All off by default: the bare store depends on no runtime and no web stack.
//! - `redis`: `RedisStore`, the same decision table inside Redis for services on
//!   several nodes.
//! - `http`: devise_token_auth's header codec over `http::HeaderMap` (module `http`).
//! - `tower`: `http::BatonLayer`, SPEC §4's middleware over any [`Backend`].
//! - `axum`: `http::Session` as an extractor, sign-in and sign-out as response parts.
//! - `persist`: `PersistentStore`, the embedded store with its sessions in a redb file,
//!   so a restart logs nobody out (below, and SPEC §5).
//!
//! # Where things are
//!
//! | file | holds |
//! |---|---|
//! | `decision.rs` | the decision table: one pure function of a session's state, the presented token's match and the time; imports nothing of the crate |
//! | `session/word.rs` | the state word's bit layout: generation, rotation time, "used", "dead" in one `u64` |
//! | `session/state.rs`, `session/mod.rs` | the atomic word's one compare-and-swap loop, and every transition through it: the table applied to a session, sign-out, expiry, eviction |
//! | `index.rs` | the shard index: lock-free lookups, epoch-based reclamation |
//! | `token/` | `keystream.rs` derives `T(g)` (`chacha.rs`, the ChaCha20 block); `codec.rs` and `base64.rs` put tokens and client ids on the wire |
//! | `store.rs`, `config.rs` | the public [`Store`] over the index, and its [`Builder`] |
//! | `sync.rs` | every atomic, lock and epoch type, `std` or loom, and loom's no-op-outside-loom hooks |
//! | `model.rs` | a plain sequential model of the whole store, for tests |
//! | `backend.rs`, `redis/` | the [`Backend`] trait, and the Redis backend (feature `redis`) |
//! | `http/` | the devise header codec, the tower layer and the axum extractors (features `http`, `tower`, `axum`) |
//! | `persist/` | the durable store (feature `persist`): the redb file and its checks (`file.rs`), the one writer thread with group commit and checkpoints (`committer.rs`), the secret (`secret.rs`) |
//!
//! # Durable sessions (feature `persist`)
//!
//! | event | durable when |
//! |---|---|
//! | sign-in (with any eviction it makes) | before `issue` returns the credentials; concurrent sign-ins share one commit and fsync |
//! | sign-out, `revoke_user` | before they return |
//! | rotation | at the next checkpoint (every `checkpoint_interval`, 1 s by default, one transaction), and at once when a session's generation reaches a multiple of `CHECKPOINT_AHEAD` (256); `authenticate` never writes or waits |
//! | `close` or drop of the store | a final checkpoint: after a restart every token answers exactly as before; then the file is compacted (best effort: a crash or failure during it leaves the file whole) |
//!
//! Decisions where SPEC is silent:
//! - **The lag bound is [`MAX_AHEAD`] = 1 024.** A genuine token `T(g+k)`, `1 <= k <= 1 024`,
//!   continues the session from `g+k` (it rotates to `g+k+1`, even inside
//!   `min_rotation_interval`, since `g+k`'s rotation time was lost). This row holds for every
//!   session, restored or not: only the store mints tokens, so a genuine token ahead
//!   exists only where rotations were lost, and nobody can forge one. A token older than
//!   the session's generation stays `Replayed`; one further ahead is `InvalidToken`. The
//!   check costs one ChaCha20 block whatever `k` is (the token carries its generation).
//!   Since a session is checkpointed within one checkpoint cycle of reaching a multiple of
//!   256 generations, the bound holds unless a client rotates more than 768 times during
//!   one checkpoint write.
//! - After a crash, a restored session's expiry and rotation time are its checkpoint's
//!   until its client's next request, so an `expiry` a client saw may go down once then
//!   (never after a clean restart); the `used` flag is the checkpoint's too (the recovery
//!   window may honour `T(g-1)` once more).
//! - A sign-in whose commit fails (full or read-only disk) is undone and answers
//!   `BackendError::Unavailable` (the layer's and the demo's 503); signed-in sessions keep
//!   rotating in memory. A sign-out whose commit fails is already in effect in memory and
//!   answers `Unavailable`; the next checkpoint that commits removes it from the file.
//! - The token key derives from a `Secret` (at least 32 bytes) by HMAC-SHA256 and is
//!   never written; the file records an HMAC check value, so a wrong secret is refused.
//!   The directory is created `0700`, the file `0600`. A damaged, truncated, foreign,
//!   newer-format or already-open file is refused with a `PersistError`, never loaded in
//!   part; a panic inside redb on a hostile file is caught and refused the same way.
//! - The file records the highest stream ever issued, so a restart never mints a
//!   signed-out session's tokens again.
//!
//! # The decision table
//!
//! `authenticate(uid, client, token)` is one atomic step; `now` is the store's
//! [`Clock`], `g` the session's generation, `T(g)` its current token.
//!
//! | presented | condition | answer | state change |
//! |---|---|---|---|
//! | any | no such session (never issued, revoked, evicted, swept) | `UnknownSession` | none |
//! | any | now >= expiry | `Expired` | the session is removed |
//! | `T(g)` | rotation off, or now < rotated_at + `min_rotation_interval` | `Batched(T(g))` | none |
//! | `T(g)` | otherwise | `Rotated(T(g+1))` | g+1, rotated_at = now, expiry = now + lifespan (capped by `max_age`) |
//! | `T(g-1)` | now < rotated_at + `batch_window` | `Batched(T(g))` | none |
//! | `T(g-1)` | now < rotated_at + `recovery_window`, `T(g)` never presented | `Batched(T(g))` | none |
//! | `T(g-1)` | otherwise | `Replayed` | per [`ReplayPolicy`] |
//! | `T(g-2)`, `T(g-3)`, ... any older genuine token | | `Replayed` | per [`ReplayPolicy`] |
//! | `T(g+k)`, a genuine token ahead, `1 <= k <=` [`MAX_AHEAD`], rotation on | | `Rotated(T(g+k+1))` | g+k+1, rotated_at = now (a restored session continues its chain) |
//! | a genuine token further ahead | | `InvalidToken` | none |
//! | anything else (wrong, malformed, empty, huge) | | `InvalidToken` | none |
//!
//! The table is one pure function, `baton::decision::decide`; `baton::model::Model` is
//! a plain sequential reference of the whole store that the tests compare against.
//! Both modules are public so that tests, benches and fuzz targets outside the crate
//! drive the very code the store runs, but hidden from these docs and outside the
//! stable API: they change whenever the store's internals do. Hidden rather than
//! behind a feature, so `cargo test` needs no flag and no build differs from the one
//! that ships. The settings the table reads are [`Policy`] (stable, re-exported here).
//! Decisions this crate made where SPEC is silent:
//! - An expired session that a sweep removed before anyone presented it answers
//!   `UnknownSession` (it is gone), not `Expired`.
//! - `revoke` reports whether the session was live; an expired one is removed and
//!   reported as `false`.
//! - Eviction ties (same expiry, same rotation time) go to the oldest session.
//! - Limits of the packed state: a session lives at most [`MAX_SESSION_AGE`] (about 795
//!   days) and 2^26 - 1 rotations (67 million); the rotation past that ends it
//!   (`Expired`) rather than ever reuse a token.
//! - A uid or client id that cannot name any session is refused as
//!   [`Rejection::BadInput`] before any lookup.
//! - Expiry is judged against the clock as read: if the wall clock steps back, an expired
//!   session that no sweep has removed yet is live again until its expiry passes again
//!   (as with any store that compares against `now`); a swept one stays gone.
//! - Linearizability is per session: `sessions(uid)` and `revoke_user(uid)` visit a
//!   user's sessions one at a time, so a sign-in racing them may or may not be seen.
//! - [`Authenticated`] is exhaustive (a credential rotated or it did not); the types
//!   that may grow ([`Rejection`], [`InputError`], [`Policy`], [`SessionInfo`],
//!   [`Stats`], [`ReplayPolicy`]) are `#[non_exhaustive]`.
//!
//! # A stolen token, under each replay policy
//!
//! A token is 27 characters: 128 unpredictable bits and, in the clear, the generation
//! it belongs to, so the store recognises a genuine token of any age (one ChaCha20
//! block) and tells a reuse from garbage however many rotations ago the token retired.
//! A thief who copies a token can never derive another session's tokens, a later
//! token of this one, or the key (ChaCha20 is a PRF), and rewriting the generation
//! gives a token that matches nothing. What the thief can do:
//!
//! | the thief holds | [`ReplayPolicy::Reject`] (the default) | [`ReplayPolicy::RevokeSession`] |
//! |---|---|---|
//! | `T(g)`, or `T(g-1)` inside the window | the session: its requests rotate it as the victim's would | the same, until someone presents a retired token after the window |
//! | `T(g)`, and uses it first | the victim's next request (after `W`) is `Replayed`: the victim is signed out, the thief keeps the session until it expires or is revoked | the victim's next request (after `W`) is `Replayed` and revokes the session: the thief is cut off too |
//! | a retired token, after the window | nothing: `Replayed`, the session lives on | sign the victim out (the session is revoked), but gain nothing |
//!
//! A thief and the victim alternating inside the batch window share the session and
//! neither is told: `T(g-1)` inside `W` is a batch, not a reuse. That is the price of
//! batch convergence (concurrent requests with one token must all succeed), bounded by
//! `W`; the recovery window extends it while `T(g)` is unused. RFC 9700 §4.14.2 (refresh
//! token rotation) asks that a reuse of an invalidated token, by either party, revoke
//! the active one, since the server cannot tell who is the thief: that is
//! `RevokeSession` with the window taken as part of one request. `Reject` is
//! devise_token_auth's behaviour and does not meet it.
//!
//! # Consistency
//!
//! - **One rotation per batch.** A session's whole mutable state (generation, rotation
//!   time, "successor used", "dead") is one `AtomicU64`; tokens are derived from the
//!   generation (ChaCha20 keystream under a per-store key, at the session's own stream
//!   and offset `16 g`, followed by `g`), so a rotation is one compare-and-swap that publishes
//!   everything. Of concurrent callers presenting `T(g)`, exactly one CAS succeeds; the
//!   others fail, re-read generation `g+1`, find their token is `T(g-1)` inside the
//!   window and compute the same `T(g+1)`.
//! - **Linearizable per session.** Every state change is one CAS on that word, made
//!   by the one loop in `session/state.rs` that decides on the word it replaces and
//!   decides again if the CAS loses; an answer that changes nothing is linearized at
//!   the load it read. Revocation sets the
//!   word's dead bit by CAS, so any `authenticate` that starts after `revoke` returns
//!   reads a dead session. A successful CAS (AcqRel) happens-before every answer that
//!   carries the token it minted.
//! - **Expiry never goes down**: the rotation time only moves forward, even if the
//!   clock steps back.
//! - No token value is minted twice: streams are unique per store and generations never
//!   wrap.
//!
//! # Performance
//!
//! `authenticate` takes no lock, never allocates, and never waits for another thread:
//! an epoch pin, one hash probe, one ChaCha20 block (one rotation in four, two computed
//! together), a constant-time comparison and one CAS. Shards are cache-padded and
//! picked by the top bits of a keyed hash of the uid; stats counters are striped by
//! thread, so threads write no shared cache line but the session words they both
//! rotate. Sign-in and sign-out take their shard's mutex; lookups never wait for it.
//!
//! Rotation state design, measured (`cargo bench --bench compare`, `BENCHMARKS.md`): the
//! packed `AtomicU64` with derived tokens is 1.4 to 3.8 times as fast as an `ArcSwap` of
//! an immutable state per session (CPU per rotation at 1 000 sessions, 1 / 2 / 4 threads:
//! 207 / 214 / 204 ns against 417 / 587 / 628 ns), allocates nothing where the `ArcSwap`
//! allocates about 104 bytes per rotation, and takes a third of the memory. Kept.
//! A rotation is about 2 000 instructions; its largest part is the ChaCha20 block, a
//! serial chain of 320 steps, shortest with AVX-512VL's rotate (the block function picks
//! AVX-512VL, SSSE3 or SSE2 at run time). Memory: 81.4 bytes resident per live
//! session at one million sessions with 20-byte uids, index included
//! (`tests/alloc.rs`). Sessions live in pages each shard maps itself, and its larger
//! tables in mappings of their own; what empties goes back to the system (a page
//! that keeps a few sessions keeps only their system pages), so memory freed by a
//! mass expiry leaves the process, whatever the global allocator
//! ([`Store::mapped_bytes`]).
//!
//! # Safety and how it is verified
//!
//! The crate root denies `unsafe_code`; two places allow it, so this list cannot go
//! stale: the index, `index.rs`, `index/pool.rs` and `index/memory.rs`
//! (dereferencing epoch-protected pointers, retiring unlinked sessions and tables,
//! the sessions' slots and pages, the mappings they and the tables live in),
//! and, in `token/chacha.rs`, the two dispatch functions that call the ChaCha20
//! block's `#[target_feature]` versions after run-time detection.
//! Each `unsafe` block carries a `// SAFETY:` argument; Miri runs over both
//! (`.ci/miri.sh`). Loom's lifetime witness, `unsafe impl Sync` of an empty cell,
//! exists only in loom builds. Checked by:
//! - unit tests of every row, every builder error, the state word's edges, the codecs
//!   (against `base64ct`) and the block function (against `rand_chacha` and RFC 7539);
//! - a property test comparing random operation sequences against [`model::Model`];
//! - real-thread tests: batches of 8, revoke racing authenticate, churn, a million
//!   tokens without a repeat, and a counting allocator proving `authenticate`
//!   allocates nothing;
//! - loom models of every atomic protocol, a linearizability checker over recorded
//!   concurrent histories, and cargo-fuzz targets (see the repository's README).
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod backend;
mod clock;
mod config;
mod credentials;
#[doc(hidden)]
pub mod decision;
mod error;
#[cfg(feature = "http")]
pub mod http;
mod index;
#[doc(hidden)]
pub mod model;
#[cfg(feature = "persist")]
mod persist;
#[cfg(feature = "redis")]
mod redis;
mod rng;
mod session;
mod stats;
mod store;
mod sync;
mod token;

#[cfg(feature = "redis")]
pub use self::redis::{RedisBuildError, RedisBuilder, RedisStore, MIN_SECRET_LEN};
pub use backend::{AuthResult, Backend, BackendError, BoxFuture, DynBackend, Unavailable};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Builder, ConfigError, MAX_CLIENTS_PER_USER, MAX_SESSION_AGE, MAX_SHARDS};
pub use credentials::{Authenticated, Credentials, SessionInfo};
pub use decision::{Policy, ReplayPolicy, MAX_AHEAD};
pub use error::{InputError, Rejection, MAX_UID_LEN};
#[cfg(feature = "persist")]
pub use persist::{PersistError, PersistOptions, PersistentStore, Secret, CHECKPOINT_AHEAD};
// The same 32 bytes as the Redis backend's secret, exported once.
#[cfg(all(feature = "persist", not(feature = "redis")))]
pub use persist::MIN_SECRET_LEN;
pub use stats::Stats;
pub use store::Store;
#[doc(hidden)]
pub use sync::faults;
pub use token::{ClientId, Token, CLIENT_ID_LEN, TOKEN_LEN};

/// The README's examples run as doctests. One is an axum service, so they need the
/// `axum` feature, which `cargo test --workspace` (CI's command) turns on through the
/// demo crate.
#[cfg(all(doctest, feature = "axum"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
