//! The contenders: SPEC's decision table, [`baton::decision::decide`], run under each
//! concurrency scheme a user might pick, so only the scheme differs.
//!
//! Every contender takes the same text inputs a devise_token_auth header carries and
//! answers with the same [`Answer`]; `tests/contenders.rs` checks each one against
//! baton on a scripted sequence, so none can win by skipping work.
//!
//! The hand-written contenders (`locked`, `dashmap_map`, `papaya_map`, `scc_map`,
//! `arc_swap_cell`) keep sessions the way a user would: per uid, a list of sessions
//! holding the current and previous token bytes (see `hand`). The floor does the least
//! any rotation must do and is not a full implementation.

#![allow(dead_code)]

pub mod arc_swap_cell;
pub mod baton_store;
pub mod dashmap_map;
pub mod floor;
pub mod hand;
pub mod locked;
pub mod papaya_map;
pub mod scc_map;

use std::time::Duration;

use baton::decision::Policy;
use baton::{Clock, ManualClock, ReplayPolicy, Store};

/// Characters of a client id and of a token on the wire (baton's, and everyone's here).
pub const CLIENT_LEN: usize = baton::CLIENT_ID_LEN;
pub const TOKEN_LEN: usize = baton::TOKEN_LEN;

/// What `issue` hands back: the client id and first token, as header text.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Creds {
    pub client: [u8; CLIENT_LEN],
    pub token: [u8; TOKEN_LEN],
}

impl Creds {
    pub fn client(&self) -> &str {
        std::str::from_utf8(&self.client).expect("base64 is ascii")
    }

    pub fn token(&self) -> &str {
        std::str::from_utf8(&self.token).expect("base64 is ascii")
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Rotated,
    Batched,
}

/// SPEC's rejection reasons, one to one with [`baton::Rejection`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Reason {
    UnknownSession,
    Expired,
    Replayed,
    InvalidToken,
    BadInput,
}

/// A successful answer: rotated or batched, the token to present next, and the expiry
/// header (whole seconds).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Granted {
    pub kind: Kind,
    pub token: [u8; TOKEN_LEN],
    pub expiry: u64,
}

pub type Answer = Result<Granted, Reason>;

/// One concurrency scheme running the decision table. Shared by reference between the
/// benchmark's threads.
pub trait Contender: Send + Sync {
    fn name(&self) -> &'static str;

    /// Signs `uid` in on a new device, under the per-user cap.
    fn issue(&self, uid: &str) -> Creds;

    /// The decision table for one presented credential, as one atomic step.
    fn authenticate(&self, uid: &str, client: &str, token: &str) -> Answer;

    /// Sign-out; whether the session was live.
    fn revoke(&self, uid: &str, client: &str) -> bool;

    /// Signs in one session per uid before the clock starts. The floor overrides it to
    /// build its read-only map.
    fn populate(&mut self, uids: &[String]) -> Vec<Creds> {
        uids.iter().map(|u| self.issue(u)).collect()
    }

    /// Whether this contender implements the whole table (the floor does not: it
    /// rotates whatever it is shown, and cannot sign anyone in after `populate`).
    fn is_complete(&self) -> bool {
        true
    }
}

/// The settings every contender runs with: SPEC's defaults (rotate on every request,
/// W = 5 s, 14-day lifespan, 10 clients per user, replays rejected).
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub batch_window: Duration,
    pub min_rotation_interval: Duration,
    pub recovery_window: Duration,
    pub replay_policy: ReplayPolicy,
    pub max_clients_per_user: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            batch_window: Duration::from_secs(5),
            min_rotation_interval: Duration::ZERO,
            recovery_window: Duration::ZERO,
            replay_policy: ReplayPolicy::Reject,
            max_clients_per_user: 10,
        }
    }
}

impl Settings {
    pub fn builder<C: Clock>(&self, clock: C) -> baton::Builder<C> {
        Store::builder()
            .clock(clock)
            .batch_window(self.batch_window)
            .min_rotation_interval(self.min_rotation_interval)
            .recovery_window(self.recovery_window)
            .replay_policy(self.replay_policy)
            .max_clients_per_user(self.max_clients_per_user)
    }

    /// The policy baton derives from these settings: the contenders take it from baton
    /// so the two can never drift apart.
    pub fn policy(&self) -> Policy {
        *self
            .builder(ManualClock::default())
            .build()
            .expect("settings in range")
            .policy()
    }
}

/// The contenders' names, in the order `all` builds them.
pub const NAMES: [&str; 9] = [
    "baton",
    "mutex",
    "rwlock",
    "sharded-rwlock",
    "dashmap",
    "papaya",
    "scc",
    "arc-swap",
    "floor",
];

/// Builds the contender called `name` over `clock`; `capacity` is a sizing hint.
pub fn build<C: Clock + Clone + 'static>(
    name: &str,
    settings: &Settings,
    clock: C,
    capacity: usize,
) -> Box<dyn Contender> {
    let max = settings.max_clients_per_user;
    let policy = settings.policy();
    match name {
        "baton" => Box::new(baton_store::Baton::new(settings, clock)),
        "mutex" => Box::new(locked::Locked::<std::sync::Mutex<hand::Users>, C>::new(
            "mutex", 1, policy, max, clock, capacity,
        )),
        "rwlock" => Box::new(locked::Locked::<std::sync::RwLock<hand::Users>, C>::new(
            "rwlock", 1, policy, max, clock, capacity,
        )),
        "sharded-rwlock" => Box::new(locked::Locked::<std::sync::RwLock<hand::Users>, C>::new(
            "sharded-rwlock",
            locked::SHARDS,
            policy,
            max,
            clock,
            capacity,
        )),
        "dashmap" => Box::new(dashmap_map::Dash::new(policy, max, clock, capacity)),
        "papaya" => Box::new(papaya_map::Papaya::new(policy, max, clock, capacity)),
        "scc" => Box::new(scc_map::Scc::new(policy, max, clock, capacity)),
        "arc-swap" => Box::new(arc_swap_cell::ArcSwapCells::new(
            policy, max, clock, capacity,
        )),
        "floor" => Box::new(floor::Floor::new(policy, clock)),
        _ => panic!("no contender {name}"),
    }
}
