//! `papaya::HashMap` as the index, in its idiom: lock-free lookups into values that
//! carry their own interior mutability (papaya's values are shared, never `&mut`),
//! here one `Mutex` per user, held only for that user's decision.

use std::sync::{Mutex, PoisonError};

use baton::decision::Policy;
use baton::Clock;

use super::hand::{self, User};
use super::{Answer, Contender, Creds, Reason};

/// One user's sessions; `dead` once the entry has been unlinked, so a sign-in that
/// found it just before retries on the map's current entry.
#[derive(Default)]
pub struct Slot {
    inner: Mutex<(bool, User)>,
}

pub struct Papaya<C> {
    map: papaya::HashMap<Box<str>, Slot, ahash::RandomState>,
    policy: Policy,
    max_clients: usize,
    clock: C,
}

impl<C: Clock> Papaya<C> {
    pub fn new(policy: Policy, max_clients: usize, clock: C, capacity: usize) -> Self {
        Papaya {
            map: papaya::HashMap::with_capacity_and_hasher(capacity, ahash::RandomState::new()),
            policy,
            max_clients,
            clock,
        }
    }

    /// Unlinks `uid` if its sessions are gone; called with none of its locks held.
    fn unlink_if_empty(
        &self,
        uid: &str,
        slot: &Slot,
        map: &papaya::HashMapRef<'_, Box<str>, Slot, ahash::RandomState, impl papaya::Guard>,
    ) {
        let mut g = slot.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if g.1.is_empty() && !g.0 {
            g.0 = true;
            drop(g);
            let _ = map.remove_if(uid, |_, v| std::ptr::eq(v, slot));
        }
    }
}

impl<C: Clock> Contender for Papaya<C> {
    fn name(&self) -> &'static str {
        "papaya"
    }

    fn issue(&self, uid: &str) -> Creds {
        let now = self.clock.now_ms();
        let map = self.map.pin();
        loop {
            let slot = match map.get(uid) {
                Some(s) => s,
                None => map.get_or_insert_with(uid.into(), Slot::default),
            };
            let mut g = slot.inner.lock().unwrap_or_else(PoisonError::into_inner);
            if !g.0 {
                return hand::issue_in(&mut g.1, &self.policy, self.max_clients, now);
            }
        }
    }

    fn authenticate(&self, uid: &str, client: &str, token: &str) -> Answer {
        let client = hand::check_input(uid, client)?;
        let presented = hand::decode_token(token);
        let now = self.clock.now_ms();
        let map = self.map.pin();
        let slot = map.get(uid).ok_or(Reason::UnknownSession)?;
        let (answer, emptied) = {
            let mut g = slot.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let a = hand::authenticate_in(&mut g.1, &self.policy, &client, presented.as_ref(), now);
            (a, g.1.is_empty())
        };
        if emptied {
            self.unlink_if_empty(uid, slot, &map);
        }
        answer
    }

    fn revoke(&self, uid: &str, client: &str) -> bool {
        let Ok(client) = hand::check_input(uid, client) else {
            return false;
        };
        let now = self.clock.now_ms();
        let map = self.map.pin();
        let Some(slot) = map.get(uid) else {
            return false;
        };
        let (live, emptied) = {
            let mut g = slot.inner.lock().unwrap_or_else(PoisonError::into_inner);
            (
                hand::revoke_in(&mut g.1, &self.policy, &client, now),
                g.1.is_empty(),
            )
        };
        if emptied {
            self.unlink_if_empty(uid, slot, &map);
        }
        live
    }
}
