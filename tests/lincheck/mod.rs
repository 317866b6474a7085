//! A small linearizability checker (Wing & Gong's search, with Lowe's memo of
//! visited states), shared by the real-thread test and the loom models.
//!
//! A history is a set of completed calls, each with the instants it was invoked and
//! returned on one global counter. The checker looks for an order of all of them that
//! respects real time (a call that returned before another was invoked comes first)
//! and in which `baton::model::Model` accepts every answer. `Model: Clone` is what
//! lets the search try a call and back out.
#![allow(dead_code)]

use std::collections::HashSet;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use baton::model::{Answer, Issued, Model};
use baton::{Clock, InputError, SessionInfo, Store};

/// One call to the store.
#[derive(Debug, Clone)]
pub enum Call {
    Issue {
        uid: String,
    },
    Authenticate {
        uid: String,
        client: String,
        token: String,
    },
    Revoke {
        uid: String,
        client: String,
    },
    RevokeUser {
        uid: String,
    },
    Sessions {
        uid: String,
    },
}

/// What the store answered, owned.
#[derive(Debug, Clone)]
pub enum Ret {
    Issue(Result<Issued, InputError>),
    Authenticate(Answer),
    Revoke(Result<bool, InputError>),
    RevokeUser(Result<usize, InputError>),
    Sessions(Result<Vec<SessionInfo>, InputError>),
}

/// One completed call.
#[derive(Debug, Clone)]
pub struct Event {
    pub thread: usize,
    pub call: Call,
    pub ret: Ret,
    /// The store's clock during the call; histories move it only while no call runs.
    pub now: u64,
    pub invoked: u64,
    pub returned: u64,
}

/// A global instant: SeqCst, so an instant taken after another thread's return
/// instant was taken compares greater, which is all real-time order needs.
pub fn instant() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

/// Makes `call` on `store` and records it.
pub fn perform<C: Clock>(store: &Store<C>, thread: usize, call: Call) -> Event {
    let now = store.clock().now_ms();
    let invoked = instant();
    let ret = match &call {
        Call::Issue { uid } => Ret::Issue(store.issue(uid).map(|c| Issued::of(&c))),
        Call::Authenticate { uid, client, token } => {
            Ret::Authenticate(Answer::of(&store.authenticate(uid, client, token)))
        }
        Call::Revoke { uid, client } => Ret::Revoke(store.revoke(uid, client)),
        Call::RevokeUser { uid } => Ret::RevokeUser(store.revoke_user(uid)),
        Call::Sessions { uid } => Ret::Sessions(store.sessions(uid)),
    };
    let returned = instant();
    Event {
        thread,
        call,
        ret,
        now,
        invoked,
        returned,
    }
}

/// Checks one event against `model` and applies it.
pub fn apply(model: &mut Model, e: &Event) -> Result<(), String> {
    let now = e.now;
    match (&e.call, &e.ret) {
        (Call::Issue { uid }, Ret::Issue(got)) => model.issue(uid, now, got),
        (Call::Authenticate { uid, client, token }, Ret::Authenticate(got)) => {
            model.authenticate(uid, client, token, now, got)
        }
        (Call::Revoke { uid, client }, Ret::Revoke(got)) => model.revoke(uid, client, now, got),
        (Call::RevokeUser { uid }, Ret::RevokeUser(got)) => model.revoke_user(uid, now, got),
        (Call::Sessions { uid }, Ret::Sessions(got)) => model.sessions(uid, now, got),
        _ => Err(format!(
            "event {e:?} pairs a call with another call's answer"
        )),
    }
}

/// An order of `history` (indices into it) that respects real time and that the
/// model accepts from `initial`, or `None` if there is none.
pub fn linearize(initial: &Model, history: &[Event]) -> Option<Vec<usize>> {
    assert!(
        history.len() <= 128,
        "the search keeps its set of done calls in a u128"
    );
    let mut search = Search {
        history,
        seen: HashSet::new(),
        order: Vec::with_capacity(history.len()),
    };
    search.go(0, initial).then_some(search.order)
}

struct Search<'h> {
    history: &'h [Event],
    /// (calls done, model fingerprint) pairs already explored without success: the
    /// rest of the search from there depends on nothing else.
    seen: HashSet<(u128, u64)>,
    order: Vec<usize>,
}

impl Search<'_> {
    fn go(&mut self, done: u128, model: &Model) -> bool {
        let pending = || (0..self.history.len()).filter(move |i| done & (1 << i) == 0);
        let Some(first_return) = pending().map(|i| self.history[i].returned).min() else {
            return true;
        };
        // A call may go next only if no pending call returned before it was invoked.
        let candidates: Vec<usize> = pending()
            .filter(|&i| self.history[i].invoked < first_return)
            .collect();
        for i in candidates {
            let mut next = model.clone();
            if apply(&mut next, &self.history[i]).is_err() {
                continue;
            }
            let done = done | (1 << i);
            if !self.seen.insert((done, fingerprint(&next))) {
                continue;
            }
            self.order.push(i);
            if self.go(done, &next) {
                return true;
            }
            self.order.pop();
        }
        false
    }
}

/// The model's state as a hash of its `Debug` text. Equal states can print
/// differently (hash-map order), which costs only a revisit; a false match needs a
/// 64-bit collision.
fn fingerprint(model: &Model) -> u64 {
    let mut h = DefaultHasher::new();
    format!("{model:?}").hash(&mut h);
    h.finish()
}

/// The history, one call a line in invocation order, for a failure message.
pub struct Show<'h>(pub &'h [Event]);

impl fmt::Display for Show<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut events: Vec<&Event> = self.0.iter().collect();
        events.sort_by_key(|e| e.invoked);
        for e in events {
            writeln!(
                f,
                "  [{:>5} .. {:>5}] thread {} now={} {:?}\n      -> {:?}",
                e.invoked, e.returned, e.thread, e.now, e.call, e.ret
            )?;
        }
        Ok(())
    }
}
