//! `DashMap` as the index, in its idiom: `get_mut` takes the entry's shard for writing
//! and the decision is made and applied under it.

use baton::decision::Policy;
use baton::Clock;
use dashmap::DashMap;

use super::hand::{self, User};
use super::{Answer, Contender, Creds, Reason};

pub struct Dash<C> {
    map: DashMap<Box<str>, User, ahash::RandomState>,
    policy: Policy,
    max_clients: usize,
    clock: C,
}

impl<C: Clock> Dash<C> {
    pub fn new(policy: Policy, max_clients: usize, clock: C, capacity: usize) -> Self {
        Dash {
            map: DashMap::with_capacity_and_hasher(capacity, ahash::RandomState::new()),
            policy,
            max_clients,
            clock,
        }
    }
}

impl<C: Clock> Contender for Dash<C> {
    fn name(&self) -> &'static str {
        "dashmap"
    }

    fn issue(&self, uid: &str) -> Creds {
        let now = self.clock.now_ms();
        let mut user = self.map.entry(uid.into()).or_default();
        hand::issue_in(&mut user, &self.policy, self.max_clients, now)
    }

    fn authenticate(&self, uid: &str, client: &str, token: &str) -> Answer {
        let client = hand::check_input(uid, client)?;
        let presented = hand::decode_token(token);
        let now = self.clock.now_ms();
        let (answer, emptied) = {
            let Some(mut user) = self.map.get_mut(uid) else {
                return Err(Reason::UnknownSession);
            };
            let a =
                hand::authenticate_in(&mut user, &self.policy, &client, presented.as_ref(), now);
            (a, user.is_empty())
        };
        if emptied {
            self.map.remove_if(uid, |_, u| u.is_empty());
        }
        answer
    }

    fn revoke(&self, uid: &str, client: &str) -> bool {
        let Ok(client) = hand::check_input(uid, client) else {
            return false;
        };
        let now = self.clock.now_ms();
        let (live, emptied) = {
            let Some(mut user) = self.map.get_mut(uid) else {
                return false;
            };
            let live = hand::revoke_in(&mut user, &self.policy, &client, now);
            (live, user.is_empty())
        };
        if emptied {
            self.map.remove_if(uid, |_, u| u.is_empty());
        }
        live
    }
}
