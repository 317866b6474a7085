//! The floor: the least work any rotation must do. A prebuilt read-only hash map finds
//! the session, one compare-and-swap claims the rotation, and one fresh token is
//! generated (thread-local ChaCha20) and encoded (with baton's own encoder). It checks
//! no token and keeps no previous one, so it is not a contender in the table's sense:
//! it answers `Rotated` to whatever it is shown, and runs only the rotate workloads
//! without churn.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use baton::decision::Policy;
use baton::Clock;

use super::hand;
use super::{Answer, Contender, Creds, Granted, Kind, Reason, CLIENT_LEN};

struct FloorSession {
    client: [u8; CLIENT_LEN],
    generation: AtomicU64,
}

pub struct Floor<C> {
    map: HashMap<Box<str>, FloorSession, ahash::RandomState>,
    policy: Policy,
    clock: C,
}

impl<C: Clock> Floor<C> {
    pub fn new(policy: Policy, clock: C) -> Self {
        Floor {
            map: HashMap::default(),
            policy,
            clock,
        }
    }
}

impl<C: Clock> Contender for Floor<C> {
    fn name(&self) -> &'static str {
        "floor"
    }

    fn issue(&self, _uid: &str) -> Creds {
        unimplemented!("the floor's map is built once, by populate")
    }

    fn populate(&mut self, uids: &[String]) -> Vec<Creds> {
        uids.iter()
            .map(|uid| {
                let creds = Creds {
                    client: hand::encode_client(&hand::fresh_client()),
                    token: hand::encode_token(&hand::fresh_token()),
                };
                self.map.insert(
                    uid.as_str().into(),
                    FloorSession {
                        client: creds.client,
                        generation: AtomicU64::new(0),
                    },
                );
                creds
            })
            .collect()
    }

    fn authenticate(&self, uid: &str, client: &str, _token: &str) -> Answer {
        let s = self.map.get(uid).ok_or(Reason::UnknownSession)?;
        if s.client != client.as_bytes() {
            return Err(Reason::UnknownSession);
        }
        let now = self.clock.now_ms();
        let mut g = s.generation.load(Ordering::Relaxed);
        // Relaxed: the word orders nothing else here; the CAS alone makes one winner.
        while let Err(seen) =
            s.generation
                .compare_exchange_weak(g, g + 1, Ordering::Relaxed, Ordering::Relaxed)
        {
            g = seen;
        }
        Ok(Granted {
            kind: Kind::Rotated,
            // baton's own base64: a bound on the work of a rotation should not pay for
            // a slower codec than the store it bounds (`base64ct`, which the
            // hand-written contenders use, costs about 370 instructions to encode a
            // token, this about 100).
            token: *baton::Token::from_bytes(&hand::fresh_token()).as_bytes(),
            expiry: now.saturating_add(self.policy.token_lifespan_ms) / 1000,
        })
    }

    fn revoke(&self, _uid: &str, _client: &str) -> bool {
        unimplemented!("the floor's map is read-only")
    }

    fn is_complete(&self) -> bool {
        false
    }
}
