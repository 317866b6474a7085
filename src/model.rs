//! A plain sequential model of the store, written straight from SPEC's table, that
//! checks a store's observed answers one operation at a time.
//!
//! The model cannot predict token values (they are secret and random), so it learns
//! them from the answers it checks: an issued or rotated token must be one never seen
//! before, a batched token must be the session's current one. Everything else
//! (which answer, which expiry, which session is evicted, what a revoke returns) the
//! model decides itself and compares. The property tests, the fuzz targets and the
//! linearizability checker all drive this one model. It is `Clone`, so a checker can
//! try an operation and back out.

use std::collections::{HashMap, HashSet};

use crate::clock::Clock;
use crate::credentials::{Authenticated, Credentials, SessionInfo};
use crate::decision::{decide, Decision, Policy, SessionState, TokenMatch};
use crate::error::{check_uid, InputError, Rejection};
use crate::store::Store;
use crate::token::ClientId;

/// An owned copy of what `authenticate` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `Rotated` with this token and expiry.
    Rotated {
        /// The new token's text.
        token: String,
        /// The `expiry` header value.
        expiry: u64,
    },
    /// `Batched` with this token and expiry.
    Batched {
        /// The current token's text.
        token: String,
        /// The `expiry` header value.
        expiry: u64,
    },
    /// A rejection.
    Rejected(Rejection),
}

impl Answer {
    /// Copies a store's answer.
    pub fn of(r: &Result<Authenticated<'_>, Rejection>) -> Answer {
        match r {
            Ok(Authenticated::Rotated(c)) => Answer::Rotated {
                token: c.token().as_str().to_owned(),
                expiry: c.expiry(),
            },
            Ok(Authenticated::Batched(c)) => Answer::Batched {
                token: c.token().as_str().to_owned(),
                expiry: c.expiry(),
            },
            Err(e) => Answer::Rejected(*e),
        }
    }
}

/// An owned copy of what `issue` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The new client id's text.
    pub client: String,
    /// The first token's text.
    pub token: String,
    /// The `expiry` header value.
    pub expiry: u64,
}

impl Issued {
    /// Copies a store's answer.
    pub fn of(c: &Credentials<'_>) -> Issued {
        Issued {
            client: c.client().as_str().to_owned(),
            token: c.token().as_str().to_owned(),
            expiry: c.expiry(),
        }
    }
}

#[derive(Debug, Clone)]
struct Session {
    tokens: Vec<String>,
    created: u64,
    rotated: u64,
    used: bool,
    order: u64,
}

impl Session {
    fn state(&self) -> SessionState {
        SessionState {
            generation: self.tokens.len() as u64 - 1,
            created_at_ms: self.created,
            rotated_at_ms: self.rotated,
            successor_used: self.used,
        }
    }
}

/// The sequential model. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Model {
    policy: Policy,
    max_clients: usize,
    /// Live sessions (expired ones stay until an operation notices them), by (uid, client).
    sessions: HashMap<(String, String), Session>,
    seen: HashSet<String>,
    next_order: u64,
}

type Check = Result<(), String>;

fn expect<T: PartialEq + std::fmt::Debug>(what: &str, expected: T, got: T) -> Check {
    if expected == got {
        Ok(())
    } else {
        Err(format!(
            "{what}: expected {expected:?}, store answered {got:?}"
        ))
    }
}

impl Model {
    /// A model of `store`'s settings, holding no session.
    pub fn of<C: Clock>(store: &Store<C>) -> Self {
        Model::new(*store.policy(), store.max_clients_per_user())
    }

    /// A model of a store built with `policy` and `max_clients_per_user`.
    pub fn new(policy: Policy, max_clients_per_user: usize) -> Self {
        Model {
            policy,
            max_clients: max_clients_per_user,
            sessions: HashMap::new(),
            seen: HashSet::new(),
            next_order: 0,
        }
    }

    fn expiry(&self, s: &Session) -> u64 {
        self.policy.expiry_ms(&s.state())
    }

    fn fresh(&mut self, token: &str) -> Check {
        if self.seen.insert(token.to_owned()) {
            Ok(())
        } else {
            Err(format!("token minted twice: {token}"))
        }
    }

    /// Forgets the expired sessions of `uid` (the store removes them lazily; no answer
    /// depends on when).
    fn drop_expired(&mut self, uid: &str, now: u64) {
        let policy = self.policy;
        self.sessions
            .retain(|(u, _), s| u != uid || now < policy.expiry_ms(&s.state()));
    }

    /// Checks `issue(uid)` at `now`.
    pub fn issue(&mut self, uid: &str, now: u64, got: &Result<Issued, InputError>) -> Check {
        if let Err(e) = check_uid(uid) {
            return expect("issue of a bad uid", Err(e), got.clone().map(|_| ()));
        }
        let got = got
            .as_ref()
            .map_err(|e| format!("issue refused a valid uid: {e}"))?;
        self.drop_expired(uid, now);
        let mut mine: Vec<(&(String, String), &Session)> = self
            .sessions
            .iter()
            .filter(|((u, _), _)| u == uid)
            .collect();
        if mine.len() >= self.max_clients {
            mine.sort_by_key(|(_, s)| (self.expiry(s), s.rotated, s.order));
            let victim = mine[0].0.clone();
            self.sessions.remove(&victim);
        }
        if ClientId::parse(&got.client).is_err() {
            return Err(format!("issued a malformed client id {:?}", got.client));
        }
        if self
            .sessions
            .contains_key(&(uid.to_owned(), got.client.clone()))
        {
            return Err("issued a client id the user already holds".into());
        }
        self.fresh(&got.token)?;
        let s = Session {
            tokens: vec![got.token.clone()],
            created: now,
            rotated: now,
            used: false,
            order: self.next_order,
        };
        self.next_order += 1;
        expect("issue expiry", self.expiry(&s) / 1000, got.expiry)?;
        self.sessions
            .insert((uid.to_owned(), got.client.clone()), s);
        Ok(())
    }

    /// Checks `authenticate(uid, client, token)` at `now`.
    pub fn authenticate(
        &mut self,
        uid: &str,
        client: &str,
        token: &str,
        now: u64,
        got: &Answer,
    ) -> Check {
        if let Err(e) = check_uid(uid).and_then(|()| ClientId::parse(client).map(|_| ())) {
            return expect(
                "authenticate with bad input",
                &Answer::Rejected(Rejection::BadInput(e)),
                got,
            );
        }
        let key = (uid.to_owned(), client.to_owned());
        let Some(s) = self.sessions.get(&key) else {
            return expect(
                "authenticate",
                &Answer::Rejected(Rejection::UnknownSession),
                got,
            );
        };
        let st = s.state();
        let g = st.generation as usize;
        let presented = match s.tokens.iter().rposition(|t| t == token) {
            Some(k) if k == g => TokenMatch::Current,
            Some(k) if k + 1 == g => TokenMatch::Previous,
            // Any older one: the model keeps them all (it mints none ahead of `g`).
            Some(_) => TokenMatch::Older,
            _ => TokenMatch::Unrecognised,
        };
        match decide(&self.policy, &st, presented, now) {
            Decision::Expired => {
                self.sessions.remove(&key);
                // Sweeps remove expired sessions at times of the store's choosing; one
                // already swept is simply gone.
                match got {
                    Answer::Rejected(Rejection::Expired | Rejection::UnknownSession) => Ok(()),
                    _ => Err(format!("authenticate: expected Expired (or UnknownSession once swept), store answered {got:?}")),
                }
            }
            Decision::InvalidToken => expect(
                "authenticate",
                &Answer::Rejected(Rejection::InvalidToken),
                got,
            ),
            Decision::Replayed { revoke } => {
                if revoke {
                    self.sessions.remove(&key);
                }
                expect("authenticate", &Answer::Rejected(Rejection::Replayed), got)
            }
            Decision::Batch { mark_used } => {
                let expected = Answer::Batched {
                    token: s.tokens[g].clone(),
                    expiry: self.expiry(s) / 1000,
                };
                expect("authenticate", &expected, got)?;
                if mark_used {
                    if let Some(s) = self.sessions.get_mut(&key) {
                        s.used = true;
                    }
                }
                Ok(())
            }
            Decision::Rotate(next) => {
                let Answer::Rotated { token: new, expiry } = got else {
                    return Err(format!(
                        "authenticate: expected Rotated, store answered {got:?}"
                    ));
                };
                let expected_expiry = self.policy.expiry_ms(&next) / 1000;
                expect("rotated expiry", expected_expiry, *expiry)?;
                self.fresh(new)?;
                let s = self.sessions.get_mut(&key).expect("looked up above");
                s.tokens.push(new.clone());
                s.rotated = next.rotated_at_ms;
                s.used = false;
                Ok(())
            }
        }
    }

    /// Checks `revoke(uid, client)` at `now`.
    pub fn revoke(
        &mut self,
        uid: &str,
        client: &str,
        now: u64,
        got: &Result<bool, InputError>,
    ) -> Check {
        if let Err(e) = check_uid(uid).and_then(|()| ClientId::parse(client).map(|_| ())) {
            return expect("revoke with bad input", &Err(e), got);
        }
        let live = match self.sessions.remove(&(uid.to_owned(), client.to_owned())) {
            Some(s) => now < self.expiry(&s),
            None => false,
        };
        expect("revoke", &Ok(live), got)
    }

    /// Checks `revoke_user(uid)` at `now`.
    pub fn revoke_user(&mut self, uid: &str, now: u64, got: &Result<usize, InputError>) -> Check {
        if let Err(e) = check_uid(uid) {
            return expect("revoke_user with bad input", &Err(e), got);
        }
        self.drop_expired(uid, now);
        let before = self.sessions.len();
        self.sessions.retain(|(u, _), _| u != uid);
        expect("revoke_user", &Ok(before - self.sessions.len()), got)
    }

    /// Checks `sessions(uid)` at `now`.
    pub fn sessions(
        &self,
        uid: &str,
        now: u64,
        got: &Result<Vec<SessionInfo>, InputError>,
    ) -> Check {
        if let Err(e) = check_uid(uid) {
            return expect("sessions with bad input", Err(e), got.clone().map(|_| ()));
        }
        let mut mine: Vec<(&(String, String), &Session)> = self
            .sessions
            .iter()
            .filter(|((u, _), s)| u == uid && now < self.expiry(s))
            .collect();
        mine.sort_by_key(|(_, s)| s.order);
        let expected: Vec<(String, u64, u64, u64, u64)> = mine
            .iter()
            .map(|((_, c), s)| {
                (
                    c.clone(),
                    s.tokens.len() as u64 - 1,
                    s.created,
                    s.rotated,
                    self.expiry(s),
                )
            })
            .collect();
        let got: Vec<(String, u64, u64, u64, u64)> = got
            .as_ref()
            .map_err(|e| format!("sessions refused a valid uid: {e}"))?
            .iter()
            .map(|i| {
                (
                    i.client.as_str().to_owned(),
                    i.generation,
                    i.created_at_ms,
                    i.rotated_at_ms,
                    i.expires_at_ms,
                )
            })
            .collect();
        expect("sessions", expected, got)
    }

    /// Sessions live at `now`: what the store's `len()` reads right after `sweep()`.
    pub fn live(&self, now: u64) -> usize {
        self.sessions
            .values()
            .filter(|s| now < self.expiry(s))
            .count()
    }

    /// The tokens of the session `(uid, client)` from the first, oldest, to the current.
    pub fn tokens(&self, uid: &str, client: &str) -> Option<&[String]> {
        self.sessions
            .get(&(uid.to_owned(), client.to_owned()))
            .map(|s| s.tokens.as_slice())
    }

    /// The clients the model holds for `uid` (expired ones included), in issue order.
    pub fn clients(&self, uid: &str) -> Vec<String> {
        let mut mine: Vec<(&(String, String), &Session)> = self
            .sessions
            .iter()
            .filter(|((u, _), _)| u == uid)
            .collect();
        mine.sort_by_key(|(_, s)| s.order);
        mine.into_iter().map(|((_, c), _)| c.clone()).collect()
    }
}
