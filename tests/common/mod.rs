//! Shared by the black-box tests: random operations on a store, checked against
//! `baton::model::Model`. Backend-neutral: anything that implements [`Subject`]
//! (the in-memory store here, the Redis backend in its own test) runs the same ops.
#![allow(dead_code)]

use std::time::Duration;

use baton::decision::Policy;
use baton::model::{Answer, Issued, Model};
use baton::{Builder, InputError, ManualClock, ReplayPolicy, SessionInfo, Store, SystemClock};
use proptest::prelude::*;

/// The settings a property case runs with.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub batch_window_ms: u64,
    pub min_rotation_interval_ms: u64,
    pub rotation: bool,
    pub recovery_window_ms: u64,
    pub token_lifespan_ms: u64,
    pub max_age_ms: Option<u64>,
    pub max_clients_per_user: usize,
    pub replay_policy: ReplayPolicy,
    pub shards: usize,
}

impl Settings {
    pub fn builder(&self) -> Builder<SystemClock> {
        Store::builder()
            .batch_window(Duration::from_millis(self.batch_window_ms))
            .min_rotation_interval(Duration::from_millis(self.min_rotation_interval_ms))
            .rotation(self.rotation)
            .recovery_window(Duration::from_millis(self.recovery_window_ms))
            .token_lifespan(Duration::from_millis(self.token_lifespan_ms))
            .max_age(self.max_age_ms.map(Duration::from_millis))
            .max_clients_per_user(self.max_clients_per_user)
            .replay_policy(self.replay_policy)
            .shards(self.shards)
    }
}

/// Settings with short windows, so a few clock steps cross every boundary.
pub fn settings() -> impl Strategy<Value = Settings> {
    (
        prop_oneof![Just(0u64), Just(1000), Just(5000)],
        prop_oneof![3 => Just(0u64), 1 => Just(1000), 1 => Just(5000)],
        prop_oneof![4 => Just(true), 1 => Just(false)],
        prop_oneof![2 => Just(0u64), 1 => Just(8000)],
        prop_oneof![Just(10_000u64), Just(30_000)],
        prop_oneof![3 => Just(None), 1 => Just(Some(20_000u64))],
        1usize..=3,
        prop_oneof![
            Just(ReplayPolicy::Reject),
            Just(ReplayPolicy::RevokeSession)
        ],
        prop_oneof![Just(1usize), Just(2), Just(64)],
    )
        .prop_map(
            |(w, min, rotation, recovery, lifespan, max_age, cap, replay, shards)| Settings {
                batch_window_ms: w,
                min_rotation_interval_ms: min,
                rotation,
                recovery_window_ms: recovery,
                token_lifespan_ms: lifespan,
                max_age_ms: max_age,
                max_clients_per_user: cap,
                replay_policy: replay,
                shards,
            },
        )
}

/// Which token an `authenticate` presents.
#[derive(Debug, Clone, Copy)]
pub enum Pick {
    Current,
    Previous,
    /// `k` generations before the current one (2 and up).
    Older(u8),
    /// A well-formed token no session issued.
    Stranger,
    /// Another session's current token.
    Foreign,
    Empty,
    NotBase64,
    Huge,
}

/// One operation. Users and clients are indices, resolved against what the model
/// knows at run time, so shrinking keeps cases meaningful.
#[derive(Debug, Clone)]
pub enum Op {
    Issue(u8),
    Authenticate {
        user: u8,
        client: u8,
        token: Pick,
    },
    /// A valid-looking client id that was never issued.
    AuthenticateUnknown(u8),
    Revoke {
        user: u8,
        client: u8,
    },
    RevokeUser(u8),
    Sessions(u8),
    Advance(u32),
    SweepAndCount,
    BadUid(u8),
    /// A clean restart (a durable store closes and reopens; others ignore it).
    Restart,
}

pub const USERS: u8 = 3;

pub fn op() -> impl Strategy<Value = Op> {
    let user = 0..USERS;
    let pick = prop_oneof![
        6 => Just(Pick::Current),
        3 => Just(Pick::Previous),
        1 => (2u8..12).prop_map(Pick::Older),
        1 => Just(Pick::Stranger),
        1 => Just(Pick::Foreign),
        1 => Just(Pick::Empty),
        1 => Just(Pick::NotBase64),
        1 => Just(Pick::Huge),
    ];
    prop_oneof![
        3 => user.clone().prop_map(Op::Issue),
        12 => (user.clone(), any::<u8>(), pick).prop_map(|(user, client, token)| Op::Authenticate { user, client, token }),
        1 => user.clone().prop_map(Op::AuthenticateUnknown),
        1 => (user.clone(), any::<u8>()).prop_map(|(user, client)| Op::Revoke { user, client }),
        1 => user.clone().prop_map(Op::RevokeUser),
        1 => user.clone().prop_map(Op::Sessions),
        4 => prop_oneof![0u32..1500, 1500u32..12_000].prop_map(Op::Advance),
        1 => Just(Op::SweepAndCount),
        1 => (0u8..2).prop_map(Op::BadUid),
    ]
}

/// [`op`], with clean restarts among them: for a durable store.
pub fn op_or_restart() -> impl Strategy<Value = Op> {
    prop_oneof![12 => op(), 1 => Just(Op::Restart)]
}

/// A store, or anything that answers like one.
pub trait Subject {
    fn now(&self) -> u64;
    fn advance(&self, ms: u64);
    fn issue(&self, uid: &str) -> Result<Issued, InputError>;
    fn authenticate(&self, uid: &str, client: &str, token: &str) -> Answer;
    fn revoke(&self, uid: &str, client: &str) -> Result<bool, InputError>;
    fn revoke_user(&self, uid: &str) -> Result<usize, InputError>;
    fn sessions(&self, uid: &str) -> Result<Vec<SessionInfo>, InputError>;
    /// Removes expired sessions, then counts what is held.
    fn live_after_sweep(&self) -> usize;
    /// Closes and reopens a durable store, which must then answer exactly as before.
    fn restart(&self) {}
}

/// The in-memory store on a hand-driven clock.
pub struct Memory {
    pub store: Store<ManualClock>,
    pub clock: ManualClock,
}

impl Memory {
    pub fn new(s: &Settings) -> Self {
        let clock = ManualClock::default();
        let store = s
            .builder()
            .clock(clock.clone())
            .build()
            .expect("generated settings are in range");
        Memory { store, clock }
    }

    pub fn policy(&self) -> Policy {
        *self.store.policy()
    }
}

impl Subject for Memory {
    fn now(&self) -> u64 {
        use baton::Clock;
        self.clock.now_ms()
    }
    fn advance(&self, ms: u64) {
        self.clock.advance(Duration::from_millis(ms));
    }
    fn issue(&self, uid: &str) -> Result<Issued, InputError> {
        self.store.issue(uid).map(|c| Issued::of(&c))
    }
    fn authenticate(&self, uid: &str, client: &str, token: &str) -> Answer {
        Answer::of(&self.store.authenticate(uid, client, token))
    }
    fn revoke(&self, uid: &str, client: &str) -> Result<bool, InputError> {
        self.store.revoke(uid, client)
    }
    fn revoke_user(&self, uid: &str) -> Result<usize, InputError> {
        self.store.revoke_user(uid)
    }
    fn sessions(&self, uid: &str) -> Result<Vec<SessionInfo>, InputError> {
        self.store.sessions(uid)
    }
    fn live_after_sweep(&self) -> usize {
        self.store.sweep();
        self.store.len()
    }
}

pub fn uid(user: u8) -> String {
    format!("user{user}@example.com")
}

/// Runs `ops` on `subject` and `model`, failing at the first answer the model refuses.
pub fn run(subject: &impl Subject, model: &mut Model, ops: &[Op]) -> Result<(), String> {
    let mut strangers = 0u32;
    for (i, op) in ops.iter().enumerate() {
        let now = subject.now();
        let at = |e: String| format!("op {i} {op:?} at t={now}: {e}");
        match op {
            Op::Issue(u) => {
                let uid = uid(*u);
                model.issue(&uid, now, &subject.issue(&uid)).map_err(at)?;
            }
            Op::Authenticate {
                user,
                client,
                token,
            } => {
                let uid = uid(*user);
                let clients = model.clients(&uid);
                if clients.is_empty() {
                    continue;
                }
                let client = &clients[*client as usize % clients.len()];
                let tokens = model.tokens(&uid, client).expect("listed client").to_vec();
                let g = tokens.len() - 1;
                let presented = match token {
                    Pick::Current => tokens[g].clone(),
                    Pick::Previous => tokens[g.saturating_sub(1)].clone(),
                    Pick::Older(k) => tokens[g.saturating_sub(*k as usize)].clone(),
                    Pick::Stranger => {
                        strangers += 1;
                        format!("{strangers:0>22}")
                    }
                    Pick::Foreign => (0..USERS)
                        .flat_map(|u| {
                            let other = self::uid(u);
                            model
                                .clients(&other)
                                .into_iter()
                                .map(move |c| (other.clone(), c))
                        })
                        .find(|(u, c)| !(u == &uid && c == client))
                        .and_then(|(u, c)| model.tokens(&u, &c).and_then(|t| t.last().cloned()))
                        .unwrap_or_default(),
                    Pick::Empty => String::new(),
                    Pick::NotBase64 => "!!!!!!!!!!!!!!!!!!!!!!".into(),
                    Pick::Huge => "A".repeat(10_000),
                };
                let got = subject.authenticate(&uid, client, &presented);
                model
                    .authenticate(&uid, client, &presented, now, &got)
                    .map_err(at)?;
            }
            Op::AuthenticateUnknown(u) => {
                let uid = uid(*u);
                let client = "AAAAAAAAAAAAAAAA";
                let got = subject.authenticate(&uid, client, "AAAAAAAAAAAAAAAAAAAAAA");
                model
                    .authenticate(&uid, client, "AAAAAAAAAAAAAAAAAAAAAA", now, &got)
                    .map_err(at)?;
            }
            Op::Revoke { user, client } => {
                let uid = uid(*user);
                let clients = model.clients(&uid);
                let client = if clients.is_empty() {
                    "AAAAAAAAAAAAAAAA".to_owned()
                } else {
                    clients[*client as usize % clients.len()].clone()
                };
                model
                    .revoke(&uid, &client, now, &subject.revoke(&uid, &client))
                    .map_err(at)?;
            }
            Op::RevokeUser(u) => {
                let uid = uid(*u);
                model
                    .revoke_user(&uid, now, &subject.revoke_user(&uid))
                    .map_err(at)?;
            }
            Op::Sessions(u) => {
                let uid = uid(*u);
                model
                    .sessions(&uid, now, &subject.sessions(&uid))
                    .map_err(at)?;
            }
            Op::Advance(ms) => subject.advance(u64::from(*ms)),
            Op::Restart => subject.restart(),
            Op::SweepAndCount => {
                let got = subject.live_after_sweep();
                let expected = model.live(now);
                if got != expected {
                    return Err(at(format!(
                        "live after sweep: expected {expected}, store holds {got}"
                    )));
                }
            }
            Op::BadUid(kind) => {
                let bad = if *kind == 0 {
                    String::new()
                } else {
                    "x".repeat(256)
                };
                model.issue(&bad, now, &subject.issue(&bad)).map_err(at)?;
                let got = subject.authenticate(&bad, "AAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAA");
                model
                    .authenticate(
                        &bad,
                        "AAAAAAAAAAAAAAAA",
                        "AAAAAAAAAAAAAAAAAAAAAA",
                        now,
                        &got,
                    )
                    .map_err(at)?;
                model
                    .revoke_user(&bad, now, &subject.revoke_user(&bad))
                    .map_err(at)?;
            }
        }
    }
    Ok(())
}
