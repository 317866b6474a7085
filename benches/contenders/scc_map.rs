//! `scc::HashMap` as the index, in its idiom: `update` runs the decision under the
//! entry's bucket lock, and `entry` inserts.

use baton::decision::Policy;
use baton::Clock;

use super::hand::{self, User};
use super::{Answer, Contender, Creds, Reason};

pub struct Scc<C> {
    map: scc::HashMap<Box<str>, User, ahash::RandomState>,
    policy: Policy,
    max_clients: usize,
    clock: C,
}

impl<C: Clock> Scc<C> {
    pub fn new(policy: Policy, max_clients: usize, clock: C, capacity: usize) -> Self {
        Scc {
            map: scc::HashMap::with_capacity_and_hasher(capacity, ahash::RandomState::new()),
            policy,
            max_clients,
            clock,
        }
    }
}

impl<C: Clock> Contender for Scc<C> {
    fn name(&self) -> &'static str {
        "scc"
    }

    fn issue(&self, uid: &str) -> Creds {
        let now = self.clock.now_ms();
        let mut user = self.map.entry(uid.into()).or_default();
        hand::issue_in(user.get_mut(), &self.policy, self.max_clients, now)
    }

    fn authenticate(&self, uid: &str, client: &str, token: &str) -> Answer {
        let client = hand::check_input(uid, client)?;
        let presented = hand::decode_token(token);
        let now = self.clock.now_ms();
        let (answer, emptied) = self
            .map
            .update(uid, |_, user| {
                let a = hand::authenticate_in(user, &self.policy, &client, presented.as_ref(), now);
                (a, user.is_empty())
            })
            .ok_or(Reason::UnknownSession)?;
        if emptied {
            self.map.remove_if(uid, |u| u.is_empty());
        }
        answer
    }

    fn revoke(&self, uid: &str, client: &str) -> bool {
        let Ok(client) = hand::check_input(uid, client) else {
            return false;
        };
        let now = self.clock.now_ms();
        let Some((live, emptied)) = self.map.update(uid, |_, user| {
            (
                hand::revoke_in(user, &self.policy, &client, now),
                user.is_empty(),
            )
        }) else {
            return false;
        };
        if emptied {
            self.map.remove_if(uid, |u| u.is_empty());
        }
        live
    }
}
