//! One session as the index holds it, and every way its state changes.
//!
//! - `word.rs`: the state word's bit layout (generation, rotation time, flags).
//! - `state.rs`: the atomic cell and the one compare-and-swap loop, `transition`.
//! - here: the transitions, each a closure handed to that loop: the decision table
//!   applied to the session ([`Session::authenticate`]), sign-out ([`Session::kill`]),
//!   expiry found by a writer ([`Session::expire`]) and eviction ([`Session::evict`]).
//!
//! Every change of a session's state is one successful CAS on its word, and each
//! transition decides on the very word it replaces, so each is atomic, and the word
//! only moves forward: `generation` and the rotation time never decrease, `dead` is
//! final, and `used` is cleared only by the rotation that bumps `generation`.

mod state;
mod word;

use compact_str::CompactString;

use crate::decision::{decide, Decision, Policy, SessionState, TokenMatch};
use crate::sync::faults::{self, Fault};
use crate::token::CLIENT_BYTES;

use state::State;
use word::Word;
pub(crate) use word::MAX_OFFSET_MS;

/// A session. Everything but `state` is written once, before the index publishes the
/// session with a release store, and never again.
pub(crate) struct Session {
    state: State,
    /// Issue time, ms since the Unix epoch.
    pub(crate) created_ms: u64,
    /// The keystream this session's tokens come from; unique in the store, and in
    /// issue order within a shard.
    pub(crate) stream: u64,
    pub(crate) client: [u8; CLIENT_BYTES],
    /// Inline up to 24 bytes, so a typical e-mail uid costs no second allocation.
    pub(crate) uid: CompactString,
}

/// What [`Session::authenticate`] did, with the state the answer is computed from.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The session is dead (revoked, evicted, expired or replayed away).
    Unknown,
    /// This call ended the session: expired, or out of generations (the rotation
    /// past the word's last generation ends it rather than mint a token twice).
    Expired,
    /// This call rotated the session into this state: hand out its `T(g)`.
    Rotated(SessionState),
    /// Hand out `T(g)` of this state (marked used if the table said so).
    Batched(SessionState),
    /// A retired token; with `revoked`, this call ended the session for it.
    Replayed {
        /// The replay policy revoked the session.
        revoked: bool,
    },
    /// Not a token of this session.
    InvalidToken,
}

/// What a writer found when it checked a session for expiry ([`Session::expire`]).
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// Dead already: the writer only unlinks it.
    Dead,
    /// Live, in this state; `seen` is the word to evict it by.
    Live {
        /// The word it was live in.
        seen: Seen,
        /// The same, unpacked.
        state: SessionState,
    },
    /// Expired, and this call ended it.
    Expired,
}

/// A state word as a writer saw it, for [`Session::evict`] to act on only if it is
/// still that word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen(Word);

impl Session {
    pub(crate) fn new(uid: &str, client: [u8; CLIENT_BYTES], stream: u64, created_ms: u64) -> Self {
        Session {
            state: State::new(Word::FRESH),
            created_ms,
            stream,
            client,
            uid: CompactString::new(uid),
        }
    }

    /// A session restored from its state word as a durable store saved it; `None` if
    /// the word is dead (a saved session is live) or its rotation time overflows.
    #[cfg_attr(not(feature = "persist"), allow(dead_code))]
    pub(crate) fn restored(
        uid: &str,
        client: [u8; CLIENT_BYTES],
        stream: u64,
        created_ms: u64,
        bits: u64,
    ) -> Option<Self> {
        let word = Word::from_bits(bits);
        if word.is_dead() || created_ms.checked_add(MAX_OFFSET_MS).is_none() {
            return None;
        }
        Some(Session {
            state: State::new(word),
            created_ms,
            stream,
            client,
            uid: CompactString::new(uid),
        })
    }

    /// The state word's bits if the session is live: what a durable store saves.
    #[inline]
    #[cfg_attr(not(feature = "persist"), allow(dead_code))]
    pub(crate) fn live_bits(&self) -> Option<u64> {
        let word = self.state.load();
        (!word.is_dead()).then(|| word.bits())
    }

    /// The state a fresh session has, created at `created_ms`.
    #[inline]
    pub(crate) fn fresh_state(created_ms: u64) -> SessionState {
        Word::FRESH.unpack(created_ms)
    }

    /// The current state, or `None` if the session is dead. A plain read.
    #[inline]
    pub(crate) fn read(&self) -> Option<SessionState> {
        let word = self.state.load();
        (!word.is_dead()).then(|| word.unpack(self.created_ms))
    }

    /// Whether the session is dead. A plain read.
    #[inline]
    pub(crate) fn is_dead(&self) -> bool {
        self.state.load().is_dead()
    }

    /// The decision table applied to this session at `now_ms`, as one atomic step.
    /// `classify` names the presented token against a generation; it is called once
    /// per attempt, and again only if another thread changed the session meanwhile.
    #[inline]
    pub(crate) fn authenticate(
        &self,
        policy: &Policy,
        now_ms: u64,
        mut classify: impl FnMut(u64) -> TokenMatch,
    ) -> Verdict {
        let verdict = self.state.transition(|word| {
            if word.is_dead() {
                return (Verdict::Unknown, None);
            }
            let st = word.unpack(self.created_ms);
            match decide(policy, &st, classify(st.generation), now_ms) {
                Decision::Expired => (Verdict::Expired, Some(word.dead())),
                Decision::Rotate(next) => match Word::pack(&next) {
                    Some(next_word) => (Verdict::Rotated(next), Some(next_word)),
                    None => (Verdict::Expired, Some(word.dead())),
                },
                Decision::Batch { mark_used } => {
                    (Verdict::Batched(st), mark_used.then(|| word.used()))
                }
                Decision::Replayed { revoke } => (
                    Verdict::Replayed { revoked: revoke },
                    revoke.then(|| word.dead()),
                ),
                Decision::InvalidToken => (Verdict::InvalidToken, None),
            }
        });
        match verdict {
            // The bug a loom model must catch: answering from a second read.
            Verdict::Batched(_) if faults::active(Fault::TornSnapshot) => {
                Verdict::Batched(self.state.load().unpack(self.created_ms))
            }
            v => v,
        }
    }

    /// Marks the session dead (sign-out). Returns the state it ended, or `None` if
    /// it was dead already.
    #[must_use]
    pub(crate) fn kill(&self) -> Option<SessionState> {
        self.state.transition(|word| {
            if word.is_dead() {
                (None, None)
            } else {
                (Some(word.unpack(self.created_ms)), Some(word.dead()))
            }
        })
    }

    /// Ends the session if it has expired at `now_ms`. A rotation that wins the race
    /// keeps it alive.
    pub(crate) fn expire(&self, policy: &Policy, now_ms: u64) -> Liveness {
        self.state.transition(|word| {
            if word.is_dead() {
                return (Liveness::Dead, None);
            }
            let state = word.unpack(self.created_ms);
            if now_ms < policy.expiry_ms(&state) {
                let seen = Seen(word);
                (Liveness::Live { seen, state }, None)
            } else {
                (Liveness::Expired, Some(word.dead()))
            }
        })
    }

    /// Ends the session if its word is still `seen` (eviction: the victim must still
    /// be in the state it was ranked by). Returns whether it did.
    #[must_use]
    pub(crate) fn evict(&self, seen: Seen) -> bool {
        self.state.transition(|word| {
            if word == seen.0 {
                (true, Some(word.dead()))
            } else {
                (false, None)
            }
        })
    }

    #[inline]
    pub(crate) fn is(&self, uid: &str, client: &[u8; CLIENT_BYTES]) -> bool {
        self.state.witness().read();
        self.client == *client && self.uid == uid
    }

    /// Called when the index unlinks this session (for loom's lifetime witness).
    #[inline]
    pub(crate) fn unlinked(&self) {
        self.state.witness().unlinked();
    }
}
