//! The store: shards of sessions, and the operations of SPEC §2.

use std::fmt;

use crossbeam_utils::CachePadded;

use crate::clock::{Clock, SystemClock};
use crate::codec::{check_uid, ClientId, Token, CLIENT_BYTES};
use crate::config::{Builder, Config};
use crate::credentials::{Authenticated, Credentials, SessionInfo};
use crate::decision::{decide, Decision, Policy, Presented, SessionState};
use crate::error::{InputError, Rejection};
use crate::index::{Shard, Slot, Writer};
use crate::keystream::MasterKey;
use crate::session::Session;
use crate::state::Word;
use crate::stats::{bump, ended, Counters, Stats, Striped};
use crate::sync::epoch::{self, Guard};

/// Slots the incremental sweep visits per sign-in or sign-out.
const SWEEP_STEP: usize = 8;

struct ShardSlot {
    index: CachePadded<Shard>,
}

/// An in-memory store of rotating sessions. Share it by reference or `Arc`; every
/// method takes `&self`.
///
/// See the [crate docs](crate) for the decision table and the guarantees.
pub struct Store<C: Clock = SystemClock> {
    shards: Box<[ShardSlot]>,
    /// `64 - log2(shards)`: a uid's shard is the top bits of its hash, its first slot
    /// the low bits, so the two are independent.
    shard_shift: u32,
    hasher: ahash::RandomState,
    key: MasterKey,
    counters: Striped,
    config: Config,
    clock: C,
}

impl<C: Clock> fmt::Debug for Store<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Store<SystemClock> {
    /// A builder with SPEC's defaults.
    pub fn builder() -> Builder<SystemClock> {
        Builder::default()
    }

    /// A store with every default.
    pub fn new() -> Self {
        Builder::default()
            .build()
            .expect("the defaults are in range")
    }
}

impl Default for Store<SystemClock> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Clock> Store<C> {
    pub(crate) fn from_config(config: Config, clock: C) -> Self {
        let shards = (0..config.shards)
            .map(|_| ShardSlot {
                index: CachePadded::new(Shard::new()),
            })
            .collect();
        Store {
            shards,
            shard_shift: 64 - config.shards.trailing_zeros(),
            #[cfg(not(loom))]
            hasher: ahash::RandomState::new(),
            // Loom replays executions and needs each to probe the same slots.
            #[cfg(loom)]
            hasher: ahash::RandomState::with_seeds(1, 2, 3, 4),
            key: MasterKey::from_os(),
            counters: Striped::new(),
            config,
            clock,
        }
    }

    #[inline]
    fn hash(&self, uid: &str) -> u64 {
        self.hasher.hash_one(uid)
    }

    #[inline]
    fn shard(&self, hash: u64) -> (usize, &ShardSlot) {
        // A shift by 64 (one shard) is not allowed on u64; `checked_shr` makes it 0.
        let i = hash.checked_shr(self.shard_shift).unwrap_or(0) as usize;
        (i, &self.shards[i])
    }

    #[inline]
    fn expiry_ms(&self, s: &SessionState) -> u64 {
        self.config.policy.expiry_ms(s)
    }

    fn credentials<'a>(
        &self,
        uid: &'a str,
        client: ClientId,
        session: &Session,
        token: &[u8; 16],
        word: Word,
    ) -> Credentials<'a> {
        Credentials {
            uid,
            // The parsed id: equal to the session's, and already encoded.
            client,
            token: Token::encode(token),
            expiry: self.expiry_ms(&word.unpack(session.created_ms)) / 1000,
        }
    }

    /// Signs `uid` in on a new device: a new session with a fresh client id and token.
    ///
    /// If the user already holds `max_clients_per_user` live sessions, the one that
    /// expires first (ties: least recently rotated, then oldest) is revoked in the same
    /// step. Takes the shard's writer lock; lookups do not wait for it.
    pub fn issue<'a>(&self, uid: &'a str) -> Result<Credentials<'a>, InputError> {
        check_uid(uid)?;
        let hash = self.hash(uid);
        let (shard_no, shard) = self.shard(hash);
        let c = self.counters.mine();
        let guard = epoch::pin();
        let now = self.clock.now_ms();
        let hasher = |u: &str| self.hash(u);
        let mut w = shard.index.write(&hasher);

        let taken = loop {
            let chain = w.of_user(hash, uid, &guard);
            let mut live = Vec::with_capacity(chain.len());
            let mut raced = false;
            for &(slot, s) in &chain {
                match self.settle(&mut w, slot, s, now, c, &guard) {
                    Settled::Live(word) => live.push((s, word)),
                    Settled::Removed => {}
                    Settled::Raced => raced = true,
                }
            }
            if raced {
                continue;
            }
            if live.len() < self.config.max_clients_per_user {
                break live;
            }
            let (victim, word) = live
                .iter()
                .copied()
                .min_by_key(|(s, word)| {
                    let st = word.unpack(s.created_ms);
                    (self.expiry_ms(&st), st.rotated_at_ms, s.stream)
                })
                .expect("the cap is at least 1");
            // The victim must still be in the state we ranked it by; if it rotated
            // meanwhile, rank again.
            if victim.cas(word, word.dead()).is_ok() {
                bump(&c.evicted);
                ended(c);
                if let Some(slot) = w.slot_of(hash, victim, &guard) {
                    w.remove(slot, &guard);
                }
            }
        };

        let client = loop {
            let candidate = crate::rng::client_bytes();
            if taken.iter().all(|(s, _)| s.client != candidate) {
                break candidate;
            }
        };
        let stream = (w.next_stream() << (64 - self.shard_shift)) | shard_no as u64;
        w.insert(hash, Session::new(uid, client, stream, now), &guard);
        bump(&c.issued);
        c.live.fetch_add(1, crate::sync::Ordering::Relaxed);
        self.sweep_step(&mut w, now, c, &guard);
        drop(w);

        let token = self.key.token(stream, 0);
        Ok(Credentials {
            uid,
            client: ClientId::from_raw(client),
            token: Token::encode(&token),
            expiry: self.expiry_ms(&Word::FRESH.unpack(now)) / 1000,
        })
    }

    /// Checks a presented credential and rotates the session as SPEC's decision table
    /// says, in one atomic step.
    ///
    /// Lock-free and allocation-free: one lookup, one ChaCha20 block computation, and
    /// at most one compare-and-swap per attempt (retried only when another thread
    /// changed the same session meanwhile).
    pub fn authenticate<'a>(
        &self,
        uid: &'a str,
        client: &str,
        token: &str,
    ) -> Result<Authenticated<'a>, Rejection> {
        let (hash, client) = match check_uid(uid).and_then(|()| ClientId::parse(client)) {
            Ok(client) => (self.hash(uid), client),
            Err(e) => {
                bump(&self.counters.mine().bad_input);
                return Err(Rejection::BadInput(e));
            }
        };
        let (_, shard) = self.shard(hash);
        let c = self.counters.mine();
        let guard = epoch::pin();
        let Some(session) = shard.index.find(hash, uid, client.raw(), &guard) else {
            bump(&c.unknown_session);
            return Err(Rejection::UnknownSession);
        };
        // Decoded only once a session is found: an unknown session answers the same
        // whatever the token, so decoding it first would be wasted work.
        let presented = Token::decode(token);
        let now = self.clock.now_ms();
        let policy = &self.config.policy;
        let mut word = session.load();
        let mut tokens = self.key.tokens(session.stream);
        loop {
            if word.is_dead() {
                bump(&c.unknown_session);
                return Err(Rejection::UnknownSession);
            }
            let st = word.unpack(session.created_ms);
            let g = st.generation;
            let kind = match &presented {
                None => Presented::Unrecognised,
                Some(bytes) => tokens.classify(bytes, g),
            };
            let decision = decide(policy, &st, kind, now);
            // Out of generations (`pack` refuses): the session ends rather than mint a
            // token twice.
            let next = match decision {
                Decision::Rotate(next) => Word::pack(&next),
                _ => None,
            };
            match (decision, next) {
                (Decision::Expired, _) | (Decision::Rotate(_), None) => {
                    if let Err(now_word) = session.cas(word, word.dead()) {
                        word = now_word;
                        continue;
                    }
                    ended(c);
                    bump(&c.expired);
                    return Err(Rejection::Expired);
                }
                (Decision::Rotate(_), Some(next_word)) => {
                    if let Err(now_word) = session.cas(word, next_word) {
                        word = now_word;
                        continue;
                    }
                    bump(&c.rotated);
                    let token = tokens.get(g + 1);
                    return Ok(Authenticated::Rotated(
                        self.credentials(uid, client, session, &token, next_word),
                    ));
                }
                (Decision::Batch { mark_used }, _) => {
                    if mark_used {
                        if let Err(now_word) = session.cas(word, word.used()) {
                            word = now_word;
                            continue;
                        }
                    }
                    bump(&c.batched);
                    #[cfg(loom)]
                    let (g, word) =
                        if crate::sync::faults::active(crate::sync::faults::Fault::TornSnapshot) {
                            let again = session.load();
                            (again.generation(), again)
                        } else {
                            (g, word)
                        };
                    let token = tokens.get(g);
                    return Ok(Authenticated::Batched(
                        self.credentials(uid, client, session, &token, word),
                    ));
                }
                (Decision::Replayed { revoke }, _) => {
                    if revoke {
                        if let Err(now_word) = session.cas(word, word.dead()) {
                            word = now_word;
                            continue;
                        }
                        ended(c);
                        bump(&c.revoked);
                    }
                    bump(&c.replayed);
                    return Err(Rejection::Replayed);
                }
                (Decision::InvalidToken, _) => {
                    bump(&c.invalid_token);
                    return Err(Rejection::InvalidToken);
                }
            }
        }
    }

    /// Ends one session (sign-out). Returns whether it was live; an expired session
    /// is removed too, and reported as not live.
    pub fn revoke(&self, uid: &str, client: &str) -> Result<bool, InputError> {
        check_uid(uid)?;
        let client = ClientId::parse(client)?;
        self.end_sessions(uid, Some(client.raw())).map(|n| n > 0)
    }

    /// Ends every session of `uid`. Returns how many were live.
    pub fn revoke_user(&self, uid: &str) -> Result<usize, InputError> {
        check_uid(uid)?;
        self.end_sessions(uid, None)
    }

    fn end_sessions(
        &self,
        uid: &str,
        client: Option<&[u8; CLIENT_BYTES]>,
    ) -> Result<usize, InputError> {
        let hash = self.hash(uid);
        let (_, shard) = self.shard(hash);
        let c = self.counters.mine();
        let guard = epoch::pin();
        let now = self.clock.now_ms();
        let hasher = |u: &str| self.hash(u);
        let mut w = shard.index.write(&hasher);
        let mut ended_live = 0;
        w.remove_of_user(hash, uid, &guard, |s| {
            if client.is_some_and(|cl| *cl != s.client) {
                return false;
            }
            if let Some(word) = s.kill() {
                ended(c);
                if now >= self.expiry_ms(&word.unpack(s.created_ms)) {
                    bump(&c.swept);
                } else {
                    bump(&c.revoked);
                    ended_live += 1;
                }
            }
            true
        });
        // No sweep step here: a sign-out adds nothing to the table, and sign-ins
        // sweep enough to keep expired sessions from piling up.
        Ok(ended_live)
    }

    /// The live sessions of `uid`, oldest first. Lock-free.
    pub fn sessions(&self, uid: &str) -> Result<Vec<SessionInfo>, InputError> {
        check_uid(uid)?;
        let hash = self.hash(uid);
        let (_, shard) = self.shard(hash);
        let guard = epoch::pin();
        let now = self.clock.now_ms();
        let mut out: Vec<(u64, SessionInfo)> = shard
            .index
            .of_user(hash, uid, &guard)
            .into_iter()
            .filter_map(|s| {
                let word = s.load();
                let st = word.unpack(s.created_ms);
                let expires_at_ms = self.expiry_ms(&st);
                (!word.is_dead() && now < expires_at_ms).then(|| {
                    (
                        s.stream,
                        SessionInfo {
                            client: ClientId::from_raw(s.client),
                            generation: st.generation,
                            created_at_ms: st.created_at_ms,
                            rotated_at_ms: st.rotated_at_ms,
                            expires_at_ms,
                        },
                    )
                })
            })
            .collect();
        out.sort_by_key(|(stream, _)| *stream);
        Ok(out.into_iter().map(|(_, info)| info).collect())
    }

    /// The decision table's settings this store runs with.
    pub fn policy(&self) -> &Policy {
        &self.config.policy
    }

    /// The most live sessions one user may hold.
    pub fn max_clients_per_user(&self) -> usize {
        self.config.max_clients_per_user
    }

    /// The store's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Sessions held (see [`Stats::live`]). Sums one counter per shard.
    pub fn len(&self) -> usize {
        self.stats().live as usize
    }

    /// Whether the store holds no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The counters, summed over threads' stripes.
    pub fn stats(&self) -> Stats {
        self.counters.sum()
    }

    /// Removes every expired session and frees what removed sessions left behind,
    /// one shard at a time (lookups never wait). Sign-ins already sweep a few slots
    /// each; call this periodically if sessions expire without any.
    /// Returns how many expired sessions it removed.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now_ms();
        let hasher = |u: &str| self.hash(u);
        let mut removed = 0;
        for shard in self.shards.iter() {
            let guard = epoch::pin();
            let mut w = shard.index.write(&hasher);
            let steps = w.capacity(&guard);
            removed += self.sweep_with(&mut w, steps, now, self.counters.mine(), &guard);
        }
        removed
    }

    fn sweep_step(&self, w: &mut Writer<'_>, now: u64, c: &Counters, guard: &Guard) {
        self.sweep_with(w, SWEEP_STEP, now, c, guard);
    }

    fn sweep_with(
        &self,
        w: &mut Writer<'_>,
        steps: usize,
        now: u64,
        c: &Counters,
        guard: &Guard,
    ) -> usize {
        let mut expired = 0;
        w.sweep(steps, guard, |s| {
            let word = s.load();
            if word.is_dead() {
                return true;
            }
            if now < self.expiry_ms(&word.unpack(s.created_ms)) {
                return false;
            }
            // A rotation may win the race and keep the session alive.
            if s.cas(word, word.dead()).is_ok() {
                ended(c);
                bump(&c.swept);
                expired += 1;
                true
            } else {
                false
            }
        });
        expired
    }

    /// Classifies a live session found by a writer: already dead, just expired, or live.
    fn settle(
        &self,
        w: &mut Writer<'_>,
        slot: Slot,
        s: &Session,
        now: u64,
        c: &Counters,
        guard: &Guard,
    ) -> Settled {
        let word = s.load();
        if word.is_dead() {
            w.remove(slot, guard);
            return Settled::Removed;
        }
        if now < self.expiry_ms(&word.unpack(s.created_ms)) {
            return Settled::Live(word);
        }
        match s.cas(word, word.dead()) {
            Ok(()) => {
                ended(c);
                bump(&c.swept);
                w.remove(slot, guard);
                Settled::Removed
            }
            Err(_) => Settled::Raced,
        }
    }
}

enum Settled {
    Live(Word),
    Removed,
    Raced,
}
