//! `Mutex<HashMap>`, `RwLock<HashMap>` and the hand-rolled sharded `RwLock<HashMap>`:
//! one type, `Locked`, over a lock and a shard count.
//!
//! With an `RwLock`, `authenticate` first decides under the read lock and retakes the
//! write lock only when the table changes state (a rotation), deciding again there:
//! that is the point of choosing an `RwLock`, and it lets batched answers share it.

use std::sync::{Mutex, PoisonError, RwLock};

use baton::decision::Policy;
use baton::Clock;
use crossbeam_utils::CachePadded;

use super::hand::{self, Users};
use super::{Answer, Contender, Creds, Reason};

/// The shard count of `sharded-rwlock`: baton's default, so both spread alike.
pub const SHARDS: usize = 64;

pub trait Lock: Send + Sync {
    /// Whether readers can share the lock (worth deciding under it first).
    const SHARED: bool;
    fn new(users: Users) -> Self;
    fn read<R>(&self, f: impl FnOnce(&Users) -> R) -> R;
    fn write<R>(&self, f: impl FnOnce(&mut Users) -> R) -> R;
}

// A panicking holder cannot leave a `Users` torn (every change is one push, swap or
// remove), so a poisoned lock is taken as it is.
impl Lock for Mutex<Users> {
    const SHARED: bool = false;
    fn new(users: Users) -> Self {
        Mutex::new(users)
    }
    fn read<R>(&self, f: impl FnOnce(&Users) -> R) -> R {
        f(&self.lock().unwrap_or_else(PoisonError::into_inner))
    }
    fn write<R>(&self, f: impl FnOnce(&mut Users) -> R) -> R {
        f(&mut self.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Lock for RwLock<Users> {
    const SHARED: bool = true;
    fn new(users: Users) -> Self {
        RwLock::new(users)
    }
    fn read<R>(&self, f: impl FnOnce(&Users) -> R) -> R {
        f(&self.read().unwrap_or_else(PoisonError::into_inner))
    }
    fn write<R>(&self, f: impl FnOnce(&mut Users) -> R) -> R {
        f(&mut self.write().unwrap_or_else(PoisonError::into_inner))
    }
}

pub struct Locked<L, C> {
    name: &'static str,
    shards: Box<[CachePadded<L>]>,
    /// Picks the shard; each map hashes again with its own state, as a hand-rolled
    /// sharded map does.
    shard_hasher: ahash::RandomState,
    policy: Policy,
    max_clients: usize,
    clock: C,
}

impl<L: Lock, C: Clock> Locked<L, C> {
    pub fn new(
        name: &'static str,
        shards: usize,
        policy: Policy,
        max_clients: usize,
        clock: C,
        capacity: usize,
    ) -> Self {
        assert!(shards.is_power_of_two());
        let per_shard = capacity.div_ceil(shards);
        Locked {
            name,
            shards: (0..shards)
                .map(|_| {
                    CachePadded::new(L::new(Users::with_capacity_and_hasher(
                        per_shard,
                        ahash::RandomState::new(),
                    )))
                })
                .collect(),
            shard_hasher: ahash::RandomState::new(),
            policy,
            max_clients,
            clock,
        }
    }

    fn shard(&self, uid: &str) -> &L {
        if self.shards.len() == 1 {
            return &self.shards[0];
        }
        let h = self.shard_hasher.hash_one(uid);
        &self.shards[(h >> 32) as usize & (self.shards.len() - 1)]
    }
}

impl<L: Lock, C: Clock> Contender for Locked<L, C> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn issue(&self, uid: &str) -> Creds {
        let now = self.clock.now_ms();
        self.shard(uid).write(|users| {
            let user = match users.get_mut(uid) {
                Some(u) => u,
                None => users.entry(uid.into()).or_default(),
            };
            hand::issue_in(user, &self.policy, self.max_clients, now)
        })
    }

    fn authenticate(&self, uid: &str, client: &str, token: &str) -> Answer {
        let client = hand::check_input(uid, client)?;
        let presented = hand::decode_token(token);
        let shard = self.shard(uid);
        let now = self.clock.now_ms();
        if L::SHARED {
            let peeked = shard.read(|users| match users.get(uid) {
                None => Some(Err(Reason::UnknownSession)),
                Some(user) => hand::peek_in(user, &self.policy, &client, presented.as_ref(), now),
            });
            if let Some(answer) = peeked {
                return answer;
            }
        }
        shard.write(|users| {
            let Some(user) = users.get_mut(uid) else {
                return Err(Reason::UnknownSession);
            };
            let answer =
                hand::authenticate_in(user, &self.policy, &client, presented.as_ref(), now);
            if user.is_empty() {
                users.remove(uid);
            }
            answer
        })
    }

    fn revoke(&self, uid: &str, client: &str) -> bool {
        let Ok(client) = hand::check_input(uid, client) else {
            return false;
        };
        let now = self.clock.now_ms();
        self.shard(uid).write(|users| {
            let Some(user) = users.get_mut(uid) else {
                return false;
            };
            let live = hand::revoke_in(user, &self.policy, &client, now);
            if user.is_empty() {
                users.remove(uid);
            }
            live
        })
    }
}
