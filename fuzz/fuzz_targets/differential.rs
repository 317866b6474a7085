//! The store against `baton::model::Model`: one policy and a sequence of operations and
//! clock moves per input, every answer checked by the model the moment it is given.
//!
//! Run: `cargo +nightly fuzz run differential` (from `fuzz/`; see the README).
//!
//! Token values and the shard a uid lands on come from the operating system's
//! randomness, so an input fixes the store's behaviour but not its secrets: a crash
//! reproduces by its sequence of answers, not by its token texts.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use baton::model::{Answer, Issued, Model};
use baton::{Authenticated, Clock, ManualClock, Rejection, ReplayPolicy, Stats, Store};
use libfuzzer_sys::fuzz_target;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Windows short enough that a few clock moves cross every boundary of the table.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Span {
    Zero,
    OneSecond,
    FiveSeconds,
}

impl Span {
    fn ms(self) -> u64 {
        match self {
            Span::Zero => 0,
            Span::OneSecond => 1_000,
            Span::FiveSeconds => 5_000,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Cap {
    One,
    Two,
    Three,
}

#[derive(Arbitrary, Debug)]
struct Settings {
    batch_window: Span,
    min_rotation_interval: Span,
    rotation: bool,
    /// An 8 s recovery window, longer than every batch window, so both rows are reached.
    recovery: bool,
    /// 30 s instead of 10 s.
    long_lifespan: bool,
    /// A 20 s `max_age`: below the long lifespan, so it caps rotations.
    max_age: bool,
    cap: Cap,
    revoke_on_replay: bool,
    two_shards: bool,
}

impl Settings {
    fn build(&self, clock: ManualClock) -> Store<ManualClock> {
        let ms = Duration::from_millis;
        Store::builder()
            .batch_window(ms(self.batch_window.ms()))
            .min_rotation_interval(ms(self.min_rotation_interval.ms()))
            .rotation(self.rotation)
            .recovery_window(ms(if self.recovery { 8_000 } else { 0 }))
            .token_lifespan(ms(if self.long_lifespan { 30_000 } else { 10_000 }))
            .max_age(self.max_age.then(|| ms(20_000)))
            .max_clients_per_user(match self.cap {
                Cap::One => 1,
                Cap::Two => 2,
                Cap::Three => 3,
            })
            .replay_policy(if self.revoke_on_replay {
                ReplayPolicy::RevokeSession
            } else {
                ReplayPolicy::Reject
            })
            .shards(if self.two_shards { 2 } else { 1 })
            .clock(clock)
            .build()
            .expect("every generated setting is in range")
    }
}

/// A few users, including the longest uid and a non-ASCII one, so uid hashing and
/// byte lengths are exercised alongside e-mail-like ids.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum User {
    Alice,
    Bob,
    Carol,
    Longest,
    Unicode,
}

impl User {
    fn uid(self) -> String {
        match self {
            User::Alice => "alice@example.com".into(),
            User::Bob => "bob@example.com".into(),
            User::Carol => "carol@example.org".into(),
            User::Longest => "l".repeat(baton::MAX_UID_LEN),
            User::Unicode => "zoë@exämple.com".into(),
        }
    }
}

const USERS: [User; 5] = [
    User::Alice,
    User::Bob,
    User::Carol,
    User::Longest,
    User::Unicode,
];

/// Which token an `authenticate` presents, relative to the chosen session.
#[derive(Arbitrary, Debug)]
enum Pick {
    Current,
    Previous,
    /// `k + 2` generations back (the oldest token when the session is younger).
    Older(u8),
    /// Another session's current token.
    Foreign,
    /// The current token with one character replaced (possibly by itself).
    Mutated {
        at: u8,
        to: u8,
    },
    Garbage(String),
    Empty,
    Huge,
}

#[derive(Arbitrary, Debug)]
enum Step {
    /// Under 2 s: inside and just past the batch and rotation windows.
    Small(u16),
    /// Under 2 minutes: past every lifespan.
    Large(u32),
    /// The clock stepping back (NTP), under 10 s.
    Back(u16),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Issue(User),
    Authenticate {
        user: User,
        client: u8,
        token: Pick,
    },
    /// A well-formed client id nobody was issued, with a token of the user's.
    AuthenticateUnknown {
        user: User,
        client: [u8; 12],
        token: Pick,
    },
    Revoke {
        user: User,
        client: u8,
    },
    RevokeUnknown {
        user: User,
        client: [u8; 12],
    },
    RevokeUser(User),
    Sessions(User),
    SweepAndCount,
    Advance(Step),
    /// An empty or 256-byte uid into every operation that takes one.
    BadUid(bool),
}

#[derive(Arbitrary, Debug)]
struct Case {
    settings: Settings,
    ops: Vec<Op>,
}

/// What the answers observed so far say the counters must read.
#[derive(Default)]
struct Tally {
    issued: u64,
    rotated: u64,
    batched: u64,
    unknown_session: u64,
    expired: u64,
    replayed: u64,
    invalid_token: u64,
    bad_input: u64,
}

impl Tally {
    fn count(&mut self, a: &Answer) {
        let n = match a {
            Answer::Rotated { .. } => &mut self.rotated,
            Answer::Batched { .. } => &mut self.batched,
            Answer::Rejected(Rejection::UnknownSession) => &mut self.unknown_session,
            Answer::Rejected(Rejection::Expired) => &mut self.expired,
            Answer::Rejected(Rejection::Replayed) => &mut self.replayed,
            Answer::Rejected(Rejection::InvalidToken) => &mut self.invalid_token,
            Answer::Rejected(Rejection::BadInput(_)) => &mut self.bad_input,
            Answer::Rejected(other) => panic!("a rejection the harness does not know: {other:?}"),
        };
        *n += 1;
    }

    fn check(&self, s: &Stats) {
        let expected = (
            self.issued,
            self.rotated,
            self.batched,
            self.unknown_session,
            self.expired,
            self.replayed,
            self.invalid_token,
            self.bad_input,
        );
        let got = (
            s.issued,
            s.rotated,
            s.batched,
            s.unknown_session,
            s.expired,
            s.replayed,
            s.invalid_token,
            s.bad_input,
        );
        assert_eq!(
            expected, got,
            "stats disagree with the answers given (issued, rotated, batched, unknown, \
             expired, replayed, invalid, bad input): {s:?}"
        );
    }
}

struct Run {
    store: Store<ManualClock>,
    clock: ManualClock,
    model: Model,
    tally: Tally,
}

impl Run {
    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The model's session `(uid, pick)`, by index among the user's clients.
    fn client_of(&self, uid: &str, pick: u8) -> Option<String> {
        let clients = self.model.clients(uid);
        (!clients.is_empty()).then(|| clients[pick as usize % clients.len()].clone())
    }

    fn token(&self, uid: &str, client: Option<&str>, pick: &Pick) -> String {
        let tokens = client
            .and_then(|c| self.model.tokens(uid, c))
            .map(<[String]>::to_vec)
            .unwrap_or_default();
        let back = |k: usize| {
            tokens
                .len()
                .checked_sub(1 + k)
                .or_else(|| tokens.len().checked_sub(1))
                .map(|i| tokens[i].clone())
                .unwrap_or_default()
        };
        match pick {
            Pick::Current => back(0),
            Pick::Previous => back(1),
            Pick::Older(k) => back(2 + usize::from(*k)),
            Pick::Foreign => self.foreign_token(uid, client),
            Pick::Mutated { at, to } => {
                let mut t = back(0).into_bytes();
                if !t.is_empty() {
                    let i = usize::from(*at) % t.len();
                    t[i] = ALPHABET[usize::from(*to) % ALPHABET.len()];
                }
                String::from_utf8(t).expect("the alphabet is ASCII")
            }
            Pick::Garbage(s) => s.clone(),
            Pick::Empty => String::new(),
            Pick::Huge => "A".repeat(10_000),
        }
    }

    fn foreign_token(&self, uid: &str, client: Option<&str>) -> String {
        USERS
            .iter()
            .map(|u| u.uid())
            .flat_map(|u| {
                self.model
                    .clients(&u)
                    .into_iter()
                    .map(move |c| (u.clone(), c))
            })
            .find(|(u, c)| !(u == uid && Some(c.as_str()) == client))
            .and_then(|(u, c)| self.model.tokens(&u, &c)?.last().cloned())
            .unwrap_or_default()
    }

    fn authenticate(&mut self, uid: &str, client: &str, token: &str) {
        let now = self.now();
        let result = self.store.authenticate(uid, client, token);
        if let Ok(a) = &result {
            let c = a.credentials();
            assert_eq!(c.uid(), uid, "answered for another uid");
            assert_eq!(c.client().as_str(), client, "answered for another client");
            if let Authenticated::Batched(_) = a {
                // SPEC: a batched answer carries the current token, never a blank one.
                assert!(!c.token().as_str().is_empty());
            }
        }
        let answer = Answer::of(&result);
        self.tally.count(&answer);
        if let Err(e) = self.model.authenticate(uid, client, token, now, &answer) {
            panic!("authenticate({uid:?}, {client:?}, {token:?}) at t={now}: {e}");
        }
    }

    fn apply(&mut self, op: &Op) {
        let now = self.now();
        match op {
            Op::Issue(user) => self.issue(&user.uid()),
            Op::Authenticate {
                user,
                client,
                token,
            } => {
                let uid = user.uid();
                let Some(client) = self.client_of(&uid, *client) else {
                    return;
                };
                let token = self.token(&uid, Some(&client), token);
                self.authenticate(&uid, &client, &token);
            }
            Op::AuthenticateUnknown {
                user,
                client,
                token,
            } => {
                let uid = user.uid();
                let known = self.client_of(&uid, 0);
                let token = self.token(&uid, known.as_deref(), token);
                self.authenticate(&uid, &URL_SAFE_NO_PAD.encode(client), &token);
            }
            Op::Revoke { user, client } => {
                let uid = user.uid();
                let Some(client) = self.client_of(&uid, *client) else {
                    return;
                };
                self.revoke(&uid, &client);
            }
            Op::RevokeUnknown { user, client } => {
                self.revoke(&user.uid(), &URL_SAFE_NO_PAD.encode(client));
            }
            Op::RevokeUser(user) => self.revoke_user(&user.uid()),
            Op::Sessions(user) => {
                let uid = user.uid();
                if let Err(e) = self.model.sessions(&uid, now, &self.store.sessions(&uid)) {
                    panic!("sessions({uid:?}) at t={now}: {e}");
                }
            }
            Op::SweepAndCount => {
                self.store.sweep();
                assert_eq!(
                    self.store.len(),
                    self.model.live(now),
                    "live sessions after sweep at t={now}"
                );
            }
            Op::Advance(step) => match step {
                Step::Small(ms) => self
                    .clock
                    .advance(Duration::from_millis(u64::from(*ms % 2_000))),
                Step::Large(ms) => self
                    .clock
                    .advance(Duration::from_millis(u64::from(*ms % 120_000))),
                Step::Back(ms) => {
                    self.forget_expired();
                    self.clock.set(now.saturating_sub(u64::from(*ms % 10_000)));
                }
            },
            Op::BadUid(long) => {
                let uid = if *long {
                    "x".repeat(baton::MAX_UID_LEN + 1)
                } else {
                    String::new()
                };
                self.issue(&uid);
                self.authenticate(&uid, "AAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAA");
                self.revoke(&uid, "AAAAAAAAAAAAAAAA");
                self.revoke_user(&uid);
                let got = self.store.sessions(&uid);
                if let Err(e) = self.model.sessions(&uid, now, &got) {
                    panic!("sessions({uid:?}) at t={now}: {e}");
                }
            }
        }
    }

    /// Signs out, in store and model alike, every session expired now.
    ///
    /// The store sweeps expired sessions whenever it likes, and a swept session stays
    /// gone even if the clock then steps back to before its expiry; the model keeps
    /// them until an operation on them, so without this the two would disagree about
    /// sessions the clock revives (whether the store had swept them is luck).
    fn forget_expired(&mut self) {
        let now = self.now();
        for user in USERS {
            let uid = user.uid();
            let listed = self.store.sessions(&uid);
            if let Err(e) = self.model.sessions(&uid, now, &listed) {
                panic!("sessions({uid:?}) at t={now}: {e}");
            }
            let live: Vec<String> = listed
                .expect("a valid uid")
                .iter()
                .map(|s| s.client.as_str().to_owned())
                .collect();
            for client in self.model.clients(&uid) {
                if !live.contains(&client) {
                    self.revoke(&uid, &client);
                }
            }
        }
    }

    fn issue(&mut self, uid: &str) {
        let now = self.now();
        let got = self.store.issue(uid);
        if let Ok(c) = &got {
            assert_eq!(c.uid(), uid, "issued for another uid");
            self.tally.issued += 1;
        }
        let got = got.map(|c| Issued::of(&c));
        if let Err(e) = self.model.issue(uid, now, &got) {
            panic!("issue({uid:?}) at t={now}: {e}");
        }
    }

    fn revoke(&mut self, uid: &str, client: &str) {
        let now = self.now();
        let got = self.store.revoke(uid, client);
        if let Err(e) = self.model.revoke(uid, client, now, &got) {
            panic!("revoke({uid:?}, {client:?}) at t={now}: {e}");
        }
    }

    fn revoke_user(&mut self, uid: &str) {
        let now = self.now();
        let got = self.store.revoke_user(uid);
        if let Err(e) = self.model.revoke_user(uid, now, &got) {
            panic!("revoke_user({uid:?}) at t={now}: {e}");
        }
    }
}

fuzz_target!(|case: Case| {
    let clock = ManualClock::default();
    let store = case.settings.build(clock.clone());
    let model = Model::of(&store);
    let mut run = Run {
        store,
        clock,
        model,
        tally: Tally::default(),
    };
    for op in &case.ops {
        run.apply(op);
    }
    run.tally.check(&run.store.stats());
});
