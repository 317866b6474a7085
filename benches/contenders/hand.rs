//! A session as a user would hand-write it: the current and previous token bytes, the
//! fields SPEC's table reads, new tokens from a thread-local ChaCha20, base64url text,
//! constant-time comparison. Every hand-written contender keeps these; they differ
//! only in how they share them between threads.

use std::cell::RefCell;

use base64ct::{Base64UrlUnpadded, Encoding};
use baton::decision::{decide, Decision, Policy, SessionState, TokenMatch};
use baton::ReplayPolicy;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use subtle::ConstantTimeEq;

use super::{Answer, Creds, Granted, Kind, Reason, CLIENT_LEN, TOKEN_LEN};

pub const TOKEN_BYTES: usize = 20;
pub const CLIENT_BYTES: usize = 12;

thread_local! {
    static RNG: RefCell<ChaCha20Rng> = RefCell::new(ChaCha20Rng::from_entropy());
}

pub fn fresh_token() -> [u8; TOKEN_BYTES] {
    let mut t = [0u8; TOKEN_BYTES];
    RNG.with(|r| r.borrow_mut().fill_bytes(&mut t));
    t
}

pub fn fresh_client() -> [u8; CLIENT_BYTES] {
    let mut c = [0u8; CLIENT_BYTES];
    RNG.with(|r| r.borrow_mut().fill_bytes(&mut c));
    c
}

pub fn encode_token(bytes: &[u8; TOKEN_BYTES]) -> [u8; TOKEN_LEN] {
    let mut out = [0u8; TOKEN_LEN];
    Base64UrlUnpadded::encode(bytes, &mut out).expect("27 characters hold 20 bytes");
    out
}

pub fn encode_client(bytes: &[u8; CLIENT_BYTES]) -> [u8; CLIENT_LEN] {
    let mut out = [0u8; CLIENT_LEN];
    Base64UrlUnpadded::encode(bytes, &mut out).expect("16 characters hold 12 bytes");
    out
}

/// `None` for anything that is not exactly the encoding of 20 bytes.
pub fn decode_token(text: &str) -> Option<[u8; TOKEN_BYTES]> {
    if text.len() != TOKEN_LEN {
        return None;
    }
    let mut out = [0u8; TOKEN_BYTES];
    match Base64UrlUnpadded::decode(text, &mut out) {
        Ok(b) if b.len() == TOKEN_BYTES => Some(out),
        _ => None,
    }
}

pub fn decode_client(text: &str) -> Option<[u8; CLIENT_BYTES]> {
    if text.len() != CLIENT_LEN {
        return None;
    }
    let mut out = [0u8; CLIENT_BYTES];
    match Base64UrlUnpadded::decode(text, &mut out) {
        Ok(b) if b.len() == CLIENT_BYTES => Some(out),
        _ => None,
    }
}

/// The checks baton makes before any lookup: a uid of 1 to 255 bytes and a
/// well-formed client id.
pub fn check_input(uid: &str, client: &str) -> Result<[u8; CLIENT_BYTES], Reason> {
    if uid.is_empty() || uid.len() > baton::MAX_UID_LEN {
        return Err(Reason::BadInput);
    }
    decode_client(client).ok_or(Reason::BadInput)
}

#[derive(Clone)]
pub struct Sess {
    pub client: [u8; CLIENT_BYTES],
    pub current: [u8; TOKEN_BYTES],
    pub previous: Option<[u8; TOKEN_BYTES]>,
    pub state: SessionState,
}

/// What an exclusive-access `apply` leaves behind.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum After {
    Keep,
    /// The session ended (expired, or revoked by the replay policy): remove it.
    Remove,
}

impl Sess {
    pub fn new(client: [u8; CLIENT_BYTES], now: u64) -> (Self, [u8; TOKEN_BYTES]) {
        let token = fresh_token();
        let s = Sess {
            client,
            current: token,
            previous: None,
            state: SessionState {
                generation: 0,
                created_at_ms: now,
                rotated_at_ms: now,
                successor_used: false,
            },
        };
        (s, token)
    }

    /// Constant-time per comparison, like baton; which comparisons run depends only on
    /// whether an earlier one matched.
    pub fn classify(&self, presented: Option<&[u8; TOKEN_BYTES]>) -> TokenMatch {
        let Some(p) = presented else {
            return TokenMatch::Unrecognised;
        };
        if bool::from(self.current.ct_eq(p)) {
            return TokenMatch::Current;
        }
        match &self.previous {
            Some(prev) if bool::from(prev.ct_eq(p)) => TokenMatch::Previous,
            _ => TokenMatch::Unrecognised,
        }
    }

    pub fn granted(&self, policy: &Policy, kind: Kind) -> Granted {
        Granted {
            kind,
            token: encode_token(&self.current),
            expiry: policy.expiry_ms(&self.state) / 1000,
        }
    }

    /// Under a shared lock: the answer if the table changes nothing, else `None` (the
    /// caller retakes the session exclusively and calls `apply`).
    pub fn peek(
        &self,
        policy: &Policy,
        presented: Option<&[u8; TOKEN_BYTES]>,
        now: u64,
    ) -> Option<Answer> {
        match decide(policy, &self.state, self.classify(presented), now) {
            Decision::Batch { mark_used: false } => Some(Ok(self.granted(policy, Kind::Batched))),
            Decision::Replayed { revoke: false } => Some(Err(Reason::Replayed)),
            Decision::InvalidToken => Some(Err(Reason::InvalidToken)),
            _ => None,
        }
    }

    /// Under exclusive access: decides and applies.
    pub fn apply(
        &mut self,
        policy: &Policy,
        presented: Option<&[u8; TOKEN_BYTES]>,
        now: u64,
    ) -> (Answer, After) {
        match decide(policy, &self.state, self.classify(presented), now) {
            Decision::Expired => (Err(Reason::Expired), After::Remove),
            Decision::Rotate(next) => {
                self.previous = Some(self.current);
                self.current = fresh_token();
                self.state = next;
                (Ok(self.granted(policy, Kind::Rotated)), After::Keep)
            }
            Decision::Batch { mark_used } => {
                self.state.successor_used |= mark_used;
                (Ok(self.granted(policy, Kind::Batched)), After::Keep)
            }
            Decision::Replayed { revoke } => (
                Err(Reason::Replayed),
                if revoke { After::Remove } else { After::Keep },
            ),
            Decision::InvalidToken => (Err(Reason::InvalidToken), After::Keep),
        }
    }
}

/// One user's sessions. devise_token_auth keeps a user's tokens together the same way,
/// and the per-user cap needs them together.
pub type User = Vec<Sess>;

/// The index of the lock-based contenders, keyed by uid.
pub type Users = std::collections::HashMap<Box<str>, User, ahash::RandomState>;

/// Authenticates against one user's sessions with exclusive access; removes the
/// session if the table ended it.
pub fn authenticate_in(
    user: &mut User,
    policy: &Policy,
    client: &[u8; CLIENT_BYTES],
    presented: Option<&[u8; TOKEN_BYTES]>,
    now: u64,
) -> Answer {
    let Some(i) = user.iter().position(|s| s.client == *client) else {
        return Err(Reason::UnknownSession);
    };
    let (answer, after) = user[i].apply(policy, presented, now);
    if after == After::Remove {
        user.swap_remove(i);
    }
    answer
}

/// The shared-access half of the read-then-write idiom: `None` means "retake it
/// exclusively".
pub fn peek_in(
    user: &User,
    policy: &Policy,
    client: &[u8; CLIENT_BYTES],
    presented: Option<&[u8; TOKEN_BYTES]>,
    now: u64,
) -> Option<Answer> {
    match user.iter().find(|s| s.client == *client) {
        None => Some(Err(Reason::UnknownSession)),
        Some(s) => s.peek(policy, presented, now),
    }
}

/// Adds a session to `user`, first dropping expired ones and, at the cap, the one
/// that expires first (ties: least recently rotated), as SPEC's `issue` says.
pub fn issue_in(user: &mut User, policy: &Policy, max_clients: usize, now: u64) -> Creds {
    user.retain(|s| now < policy.expiry_ms(&s.state));
    if user.len() >= max_clients {
        let victim = (0..user.len())
            .min_by_key(|&i| {
                let st = &user[i].state;
                (policy.expiry_ms(st), st.rotated_at_ms, st.created_at_ms)
            })
            .expect("the cap is at least 1");
        user.swap_remove(victim);
    }
    let client = loop {
        let c = fresh_client();
        if user.iter().all(|s| s.client != c) {
            break c;
        }
    };
    let (s, token) = Sess::new(client, now);
    user.push(s);
    Creds {
        client: encode_client(&client),
        token: encode_token(&token),
    }
}

/// Removes `client`'s session; whether it was live.
pub fn revoke_in(user: &mut User, policy: &Policy, client: &[u8; CLIENT_BYTES], now: u64) -> bool {
    match user.iter().position(|s| s.client == *client) {
        Some(i) => {
            let live = now < policy.expiry_ms(&user[i].state);
            user.swap_remove(i);
            live
        }
        None => false,
    }
}

/// What the replay policy asks of a rejection; only `RevokeSession` changes state.
pub fn revokes(policy: &Policy) -> bool {
    policy.replay_policy == ReplayPolicy::RevokeSession
}
