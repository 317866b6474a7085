//! One `ArcSwap` per session: each state is an immutable value holding the current and
//! previous token bytes, and a change allocates its successor and swaps it in with one
//! compare-and-swap. This is the design baton chose against (a packed `AtomicU64` with
//! tokens derived from the generation), so the two differ only there: the index here is
//! lock-free too (papaya, copy-on-write per-user lists changed only by sign-in and
//! sign-out), and a rotation is one CAS in both.
//!
//! Racing sign-ins of one user may briefly hold one session more than the cap; the
//! benchmark's workloads never race them.

use std::sync::Arc;

use arc_swap::ArcSwap;
use baton::decision::{decide, Decision, Policy};
use baton::Clock;

use super::hand::{self, Sess, CLIENT_BYTES};
use super::{Answer, Contender, Creds, Kind, Reason};

struct State {
    sess: Sess,
    dead: bool,
}

pub struct Cell {
    client: [u8; CLIENT_BYTES],
    state: ArcSwap<State>,
}

impl Cell {
    /// Marks the cell dead; the state it ended, or `None` if it already was.
    fn kill(&self) -> Option<Arc<State>> {
        let mut cur = self.state.load_full();
        loop {
            if cur.dead {
                return None;
            }
            let dead = Arc::new(State {
                sess: cur.sess.clone(),
                dead: true,
            });
            let seen = self.state.compare_and_swap(&cur, dead);
            if Arc::ptr_eq(&seen, &cur) {
                return Some(cur);
            }
            cur = arc_swap::Guard::into_inner(seen);
        }
    }
}

type Cells = Vec<Arc<Cell>>;

pub struct ArcSwapCells<C> {
    map: papaya::HashMap<Box<str>, Cells, ahash::RandomState>,
    policy: Policy,
    max_clients: usize,
    clock: C,
}

impl<C: Clock> ArcSwapCells<C> {
    pub fn new(policy: Policy, max_clients: usize, clock: C, capacity: usize) -> Self {
        ArcSwapCells {
            map: papaya::HashMap::with_capacity_and_hasher(capacity, ahash::RandomState::new()),
            policy,
            max_clients,
            clock,
        }
    }

    fn live(&self, cell: &Cell, now: u64) -> bool {
        let st = cell.state.load();
        !st.dead && now < self.policy.expiry_ms(&st.sess.state)
    }

    /// Drops dead and expired cells from `uid`'s list.
    fn prune(&self, uid: &str, now: u64) {
        let map = self.map.pin();
        map.update(uid.into(), |cells| {
            cells
                .iter()
                .filter(|c| self.live(c, now))
                .cloned()
                .collect()
        });
        let _ = map.remove_if(uid, |_, cells| cells.is_empty());
    }
}

impl<C: Clock> Contender for ArcSwapCells<C> {
    fn name(&self) -> &'static str {
        "arc-swap"
    }

    fn issue(&self, uid: &str) -> Creds {
        let now = self.clock.now_ms();
        let map = self.map.pin();
        let mut taken: Vec<[u8; CLIENT_BYTES]> = Vec::new();
        if let Some(cells) = map.get(uid) {
            let live: Vec<&Arc<Cell>> = cells.iter().filter(|c| self.live(c, now)).collect();
            taken = live.iter().map(|c| c.client).collect();
            if live.len() >= self.max_clients {
                let victim = live
                    .iter()
                    .min_by_key(|c| {
                        let st = &c.state.load().sess.state;
                        (
                            self.policy.expiry_ms(st),
                            st.rotated_at_ms,
                            st.created_at_ms,
                        )
                    })
                    .expect("the cap is at least 1");
                victim.kill();
            }
        }
        let client = loop {
            let c = hand::fresh_client();
            if !taken.contains(&c) {
                break c;
            }
        };
        let (sess, token) = Sess::new(client, now);
        let cell = Arc::new(Cell {
            client,
            state: ArcSwap::from_pointee(State { sess, dead: false }),
        });
        map.update_or_insert_with(
            uid.into(),
            |cells| {
                cells
                    .iter()
                    .filter(|c| self.live(c, now))
                    .cloned()
                    .chain(std::iter::once(cell.clone()))
                    .collect()
            },
            || vec![cell.clone()],
        );
        Creds {
            client: hand::encode_client(&client),
            token: hand::encode_token(&token),
        }
    }

    fn authenticate(&self, uid: &str, client: &str, token: &str) -> Answer {
        let client = hand::check_input(uid, client)?;
        let presented = hand::decode_token(token);
        let now = self.clock.now_ms();
        let map = self.map.pin();
        let cells = map.get(uid).ok_or(Reason::UnknownSession)?;
        let cell = cells
            .iter()
            .find(|c| c.client == client)
            .ok_or(Reason::UnknownSession)?;
        let mut cur = cell.state.load_full();
        loop {
            if cur.dead {
                return Err(Reason::UnknownSession);
            }
            let s = &cur.sess;
            let decision = decide(&self.policy, &s.state, s.classify(presented.as_ref()), now);
            let (next, answer) = match decision {
                Decision::Batch { mark_used: false } => {
                    return Ok(s.granted(&self.policy, Kind::Batched))
                }
                Decision::Replayed { revoke: false } => return Err(Reason::Replayed),
                Decision::InvalidToken => return Err(Reason::InvalidToken),
                Decision::Expired | Decision::Replayed { revoke: true } => {
                    let answer = if decision == Decision::Expired {
                        Err(Reason::Expired)
                    } else {
                        Err(Reason::Replayed)
                    };
                    let dead = State {
                        sess: s.clone(),
                        dead: true,
                    };
                    (dead, answer)
                }
                Decision::Rotate(next) => {
                    let mut sess = s.clone();
                    sess.previous = Some(sess.current);
                    sess.current = hand::fresh_token();
                    sess.state = next;
                    let answer = Ok(sess.granted(&self.policy, Kind::Rotated));
                    (State { sess, dead: false }, answer)
                }
                Decision::Batch { mark_used: true } => {
                    let mut sess = s.clone();
                    sess.state.successor_used = true;
                    let answer = Ok(sess.granted(&self.policy, Kind::Batched));
                    (State { sess, dead: false }, answer)
                }
            };
            let ended = next.dead;
            let seen = cell.state.compare_and_swap(&cur, Arc::new(next));
            if Arc::ptr_eq(&seen, &cur) {
                if ended {
                    self.prune(uid, now);
                }
                return answer;
            }
            cur = arc_swap::Guard::into_inner(seen);
        }
    }

    fn revoke(&self, uid: &str, client: &str) -> bool {
        let Ok(client) = hand::check_input(uid, client) else {
            return false;
        };
        let now = self.clock.now_ms();
        let killed = {
            let map = self.map.pin();
            let Some(cells) = map.get(uid) else {
                return false;
            };
            let Some(cell) = cells.iter().find(|c| c.client == client) else {
                return false;
            };
            cell.kill()
        };
        self.prune(uid, now);
        killed.is_some_and(|st| now < self.policy.expiry_ms(&st.sess.state))
    }
}
