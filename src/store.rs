//! The store: shards of sessions, and the operations of SPEC §2.

use std::fmt;

use crossbeam_utils::CachePadded;

use crate::clock::{Clock, SystemClock};
use crate::config::{Builder, Config, ConfigError, Settings};
use crate::credentials::{Authenticated, Credentials, SessionInfo};
use crate::decision::{Policy, SessionState, TokenMatch};
use crate::error::{check_uid, InputError, Rejection};
use crate::index::{EmptyPages, Shard, SweepAt, Writer};
use crate::session::{Liveness, Session, Verdict};
use crate::stats::{bump, ended, Counters, Stats, Striped};
use crate::sync::epoch::{self, Guard};
use crate::sync::AtomicU64;
use crate::token::{ClientId, MasterKey, Token, CLIENT_BYTES, TOKEN_BYTES};

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
    settings: Settings,
    clock: C,
    /// Raised (relaxed, a hint) when a rotation reaches a multiple of
    /// [`CHECKPOINT_AHEAD`](crate::CHECKPOINT_AHEAD) generations: a durable store's cue
    /// to checkpoint a session running ahead. Here rather than in the durable store so
    /// that both run the one `authenticate`; a bare store raises it and nobody reads it.
    #[cfg(feature = "persist")]
    pub(crate) ahead: CachePadded<std::sync::atomic::AtomicBool>,
}

impl<C: Clock> fmt::Debug for Store<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("settings", &self.settings)
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

// `build` lives here rather than in `config.rs`, so the settings module does not
// depend on the store it configures.
impl<C: Clock> Builder<C> {
    /// Checks every setting and builds the store.
    pub fn build(self) -> Result<Store<C>, ConfigError> {
        let config = self.validate()?;
        Ok(Store::from_config(
            config,
            self.into_clock(),
            MasterKey::from_os(),
        ))
    }

    /// [`build`](Self::build) with a token key of the caller's (a durable store's).
    #[cfg(feature = "persist")]
    pub(crate) fn build_keyed(self, key: MasterKey) -> Result<Store<C>, ConfigError> {
        let config = self.validate()?;
        Ok(Store::from_config(config, self.into_clock(), key))
    }
}

/// What a sign-in changed, told to a durable store before the call returns (the bare
/// store's observer ignores it, and the compiler removes it).
#[cfg_attr(not(feature = "persist"), allow(dead_code))]
pub(crate) enum Change<'a> {
    /// A new session, in its fresh state.
    Issued {
        uid: &'a str,
        client: &'a [u8; CLIENT_BYTES],
        stream: u64,
        created_ms: u64,
    },
    /// The session of this stream ended (evicted, revoked or found expired).
    Ended { stream: u64 },
}

/// Why a saved session cannot be restored.
#[cfg(feature = "persist")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RestoreError {
    /// The uid is empty or too long.
    Uid,
    /// The state word is dead or does not fit its creation time.
    Word,
    /// Another restored session has the same (uid, client) or stream.
    Duplicate,
}

impl<C: Clock> Store<C> {
    fn from_config(config: Config, clock: C, key: MasterKey) -> Self {
        let shards = (0..config.shards)
            .map(|_| ShardSlot {
                index: CachePadded::new(Shard::new()),
            })
            .collect();
        Store {
            shards,
            shard_shift: 64 - config.shards.trailing_zeros(),
            hasher: crate::sync::uid_hasher(),
            key,
            counters: Striped::new(),
            settings: config.settings,
            clock,
            #[cfg(feature = "persist")]
            ahead: CachePadded::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Raises [`ahead`](Self::ahead) when `generation` is a multiple of
    /// `CHECKPOINT_AHEAD`. Read before written, so a busy store does not bounce the
    /// flag's cache line between cores.
    #[cfg(feature = "persist")]
    #[inline]
    fn cue(&self, generation: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        if generation.is_multiple_of(crate::CHECKPOINT_AHEAD) && !self.ahead.load(Relaxed) {
            self.ahead.store(true, Relaxed);
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

    /// What the client must send next: `token`, and the expiry of state `st`.
    #[inline]
    fn credentials<'a>(
        &self,
        uid: &'a str,
        client: ClientId,
        token: &[u8; TOKEN_BYTES],
        st: &SessionState,
    ) -> Credentials<'a> {
        Credentials {
            uid,
            client,
            token: Token::encode(token),
            expiry: self.policy().expiry_ms(st) / 1000,
        }
    }

    /// Signs `uid` in on a new device: a new session with a fresh client id and token.
    ///
    /// If the user already holds `max_clients_per_user` live sessions, the one that
    /// expires first (ties: least recently rotated, then oldest) is revoked in the same
    /// step. Takes the shard's writer lock; lookups do not wait for it.
    pub fn issue<'a>(&self, uid: &'a str) -> Result<Credentials<'a>, InputError> {
        self.issue_noting(uid, |_| {})
    }

    /// [`issue`](Self::issue), telling `note` every change it makes, under the shard's
    /// lock (so a durable store records them in the order they happened).
    #[inline(always)]
    pub(crate) fn issue_noting<'a>(
        &self,
        uid: &'a str,
        mut note: impl FnMut(Change<'_>),
    ) -> Result<Credentials<'a>, InputError> {
        check_uid(uid)?;
        let hash = self.hash(uid);
        let (shard_no, shard) = self.shard(hash);
        let c = self.counters.mine();
        let guard = epoch::pin();
        let now = self.clock.now_ms();
        let hasher = |u: &str| self.hash(u);
        let mut w = shard.index.write(&hasher, &guard);
        let policy = self.policy();

        let taken = loop {
            let chain = w.of_user(hash, uid, &guard);
            let mut live = Vec::with_capacity(chain.len());
            for &(slot, s) in &chain {
                match s.expire(policy, now) {
                    Liveness::Live { seen, state } => live.push((s, seen, state)),
                    Liveness::Dead => w.remove(slot, &guard),
                    Liveness::Expired => {
                        ended(c);
                        bump(&c.swept);
                        w.remove(slot, &guard);
                    }
                }
            }
            if live.len() < self.settings.max_clients_per_user {
                break live;
            }
            let &(victim, seen, _) = live
                .iter()
                .min_by_key(|(s, _, st)| (policy.expiry_ms(st), st.rotated_at_ms, s.stream))
                .expect("the cap is at least 1");
            // If the victim rotated since it was ranked, rank again.
            if victim.evict(seen) {
                bump(&c.evicted);
                ended(c);
                note(Change::Ended {
                    stream: victim.stream,
                });
                if let Some(slot) = w.slot_of(hash, victim, &guard) {
                    w.remove(slot, &guard);
                }
            }
        };

        let client = loop {
            let candidate = crate::rng::client_bytes();
            if taken.iter().all(|(s, ..)| s.client != candidate) {
                break candidate;
            }
        };
        let stream = (w.next_stream() << (64 - self.shard_shift)) | shard_no as u64;
        w.insert(hash, Session::new(uid, client, stream, now), &guard);
        note(Change::Issued {
            uid,
            client: &client,
            stream,
            created_ms: now,
        });
        bump(&c.issued);
        c.live.fetch_add(1, crate::sync::Ordering::Relaxed);
        self.sweep_step(&mut w, now, c, &guard);
        drop(w);

        let token = self.key.token(stream, 0);
        Ok(self.credentials(
            uid,
            ClientId::from_raw(client),
            &token,
            &Session::fresh_state(now),
        ))
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
        let c = self.counters.mine();
        let client = match check_uid(uid).and_then(|()| ClientId::parse(client)) {
            Ok(client) => client,
            Err(e) => return reject(&c.bad_input, Rejection::BadInput(e)),
        };
        let hash = self.hash(uid);
        let guard = epoch::pin();
        let (_, shard) = self.shard(hash);
        let Some(session) = shard.index.find(hash, uid, client.raw(), &guard) else {
            return reject(&c.unknown_session, Rejection::UnknownSession);
        };
        // Decoded only once a session is found: an unknown session answers the same
        // whatever the token, so decoding it first would be wasted work.
        let presented = Token::decode(token);
        let mut tokens = self.key.tokens(session.stream);
        let verdict =
            session.authenticate(self.policy(), self.clock.now_ms(), |g| match &presented {
                Some(bytes) => tokens.classify(bytes, g),
                None => TokenMatch::Unrecognised,
            });
        match verdict {
            Verdict::Rotated(st) => {
                bump(&c.rotated);
                #[cfg(feature = "persist")]
                self.cue(st.generation);
                let token = tokens.get(st.generation);
                Ok(Authenticated::Rotated(
                    self.credentials(uid, client, &token, &st),
                ))
            }
            Verdict::Batched(st) => {
                bump(&c.batched);
                let token = tokens.get(st.generation);
                Ok(Authenticated::Batched(
                    self.credentials(uid, client, &token, &st),
                ))
            }
            Verdict::Unknown => reject(&c.unknown_session, Rejection::UnknownSession),
            Verdict::Expired => {
                ended(c);
                reject(&c.expired, Rejection::Expired)
            }
            Verdict::Replayed { revoked } => {
                if revoked {
                    ended(c);
                    bump(&c.revoked);
                }
                reject(&c.replayed, Rejection::Replayed)
            }
            Verdict::InvalidToken => reject(&c.invalid_token, Rejection::InvalidToken),
        }
    }

    /// Ends one session (sign-out). Returns whether it was live; an expired session
    /// is removed too, and reported as not live.
    pub fn revoke(&self, uid: &str, client: &str) -> Result<bool, InputError> {
        check_uid(uid)?;
        let client = ClientId::parse(client)?;
        self.end_sessions(uid, Some(client.raw()), |_| {})
            .map(|n| n > 0)
    }

    /// Ends every session of `uid`. Returns how many were live.
    pub fn revoke_user(&self, uid: &str) -> Result<usize, InputError> {
        check_uid(uid)?;
        self.end_sessions(uid, None, |_| {})
    }

    /// Ends the sessions of `uid` (of one client, or all), calling `killed` with the
    /// stream of each one it ended, under the shard's lock.
    pub(crate) fn end_sessions(
        &self,
        uid: &str,
        client: Option<&[u8; CLIENT_BYTES]>,
        mut killed: impl FnMut(u64),
    ) -> Result<usize, InputError> {
        let hash = self.hash(uid);
        let (_, shard) = self.shard(hash);
        let c = self.counters.mine();
        let guard = epoch::pin();
        let now = self.clock.now_ms();
        let hasher = |u: &str| self.hash(u);
        let mut w = shard.index.write(&hasher, &guard);
        let mut ended_live = 0;
        w.remove_of_user(hash, uid, &guard, |s| {
            if client.is_some_and(|cl| *cl != s.client) {
                return false;
            }
            if let Some(st) = s.kill() {
                killed(s.stream);
                ended(c);
                if now >= self.policy().expiry_ms(&st) {
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
                let st = s.read()?;
                let expires_at_ms = self.policy().expiry_ms(&st);
                (now < expires_at_ms).then(|| {
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
        &self.settings.policy
    }

    /// The most live sessions one user may hold.
    pub fn max_clients_per_user(&self) -> usize {
        self.settings.max_clients_per_user
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

    /// Bytes of memory the store maps itself, as each shard's last writer left it:
    /// the pages its sessions live in and its larger tables. Outside the global
    /// allocator (a counting allocator does not see them), and resident where
    /// touched: the pages count only their system pages that may hold a session, as
    /// the tables count whole (they are faulted in when made, below a MiB each).
    /// Each goes back to the system soon after it empties: a sweep's at the sweep's
    /// end.
    pub fn mapped_bytes(&self) -> usize {
        self.shards.iter().map(|s| s.index.mapped_bytes()).sum()
    }

    /// The counters, summed over threads' stripes.
    pub fn stats(&self) -> Stats {
        self.counters.sum()
    }

    /// Removes every expired session and frees what removed sessions left behind,
    /// one shard at a time (lookups never wait). Sign-ins already sweep a few slots
    /// each; call this periodically if sessions expire without any.
    /// Returns how many expired sessions it removed.
    ///
    /// Works in chunks: it takes a shard's writer lock for at most
    /// [`SWEEP_CHUNK`](Self::SWEEP_CHUNK) slot visits (each may remove a session, or
    /// move one while the shard migrates) and as many frees of sessions removed
    /// earlier, then releases it, so a sign-in on that shard waits for one chunk at
    /// most. Each chunk pins afresh, so the epoch moves on while it runs. The
    /// memory the removed sessions held goes back to the system before it returns
    /// (see [`mapped_bytes`](Self::mapped_bytes)), the free system pages of at most
    /// 64 pages per hold.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now_ms();
        let hasher = |u: &str| self.hash(u);
        let mut removed = 0;
        let mut previous: Option<&ShardSlot> = None;
        for shard in self.shards.iter() {
            // Free what the previous shard's sweep left waiting on its seals, which
            // have mostly passed by now, so that only two shards' removed sessions
            // wait at once: kept waiting until the end, 64 shards' worth (limbos of
            // up to 98 KB each at a million) grew the heap, which kept about 3 MB of
            // it as free chunks after they were freed.
            if let Some(p) = previous.replace(shard) {
                for _ in 0..Self::DRAIN_HOLDS {
                    let guard = epoch::pin();
                    if p.index.write(&hasher, &guard).drain(Self::SWEEP_CHUNK) {
                        break;
                    }
                }
            }
            let mut at = Some(SweepAt::default());
            while let Some(here) = at {
                let guard = epoch::pin();
                let mut w = shard.index.write(&hasher, &guard);
                let c = self.counters.mine();
                let policy = self.policy();
                let (_, next) = w.sweep_chunk(here, Self::SWEEP_CHUNK, &guard, |s| {
                    expired_or_dead(s, policy, now, c, &mut removed)
                });
                at = next;
            }
        }
        // Free what the sweep removed here, not in the sign-ins after it: each round
        // frees what the epoch has released and seals the rest, a chunk per lock hold.
        // The pages that empties go back to the system together, at the end.
        let mut pages = EmptyPages::default();
        for _ in 0..Self::DRAIN_ROUNDS {
            let mut empty = true;
            for shard in self.shards.iter() {
                let guard = epoch::pin();
                let mut w = shard.index.write(&hasher, &guard);
                if w.drain(Self::SWEEP_CHUNK) {
                    // Nothing left to free here: give back the free parts of the
                    // pages that kept a session, once each, some pages a hold.
                    empty &= w.give_back(&mut pages);
                } else {
                    empty = false;
                    w.take_empty(&mut pages);
                }
            }
            if empty {
                break;
            }
            std::thread::yield_now();
        }
        removed
    }

    /// Rounds over the shards `sweep` makes at most to free what it removed (under
    /// loom, two: a model's other threads need not run meanwhile, and loom would see
    /// the rounds as a spin loop).
    #[cfg(not(loom))]
    const DRAIN_ROUNDS: usize = 64;
    #[cfg(loom)]
    const DRAIN_ROUNDS: usize = 2;

    /// Holds of the previous shard's lock `sweep` takes to free what its sweep left,
    /// before it moves on (a hold frees up to a chunk; under loom one, as with
    /// `DRAIN_ROUNDS`).
    #[cfg(not(loom))]
    const DRAIN_HOLDS: usize = 8;
    #[cfg(loom)]
    const DRAIN_HOLDS: usize = 1;

    /// The most slots [`sweep`](Self::sweep) visits per hold of a shard's lock.
    pub const SWEEP_CHUNK: usize = 1024;

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
        let policy = self.policy();
        let mut expired = 0;
        w.sweep(steps, guard, |s| {
            expired_or_dead(s, policy, now, c, &mut expired)
        });
        expired
    }
}

/// Whether a sweep removes `s`: dead already, or expired at `now` (then this ends it
/// and counts it, in `expired` too).
fn expired_or_dead(
    s: &Session,
    policy: &Policy,
    now: u64,
    c: &Counters,
    expired: &mut usize,
) -> bool {
    match s.expire(policy, now) {
        Liveness::Dead => true,
        Liveness::Live { .. } => false,
        Liveness::Expired => {
            ended(c);
            bump(&c.swept);
            *expired += 1;
            true
        }
    }
}

/// A durable store's access to the sessions: restore, visit, tell streams apart.
#[cfg(feature = "persist")]
impl<C: Clock> Store<C> {
    /// Puts a saved session back. Only while the store is being loaded, before anyone
    /// else can reach it; the caller raises the stream floor afterwards.
    pub(crate) fn restore(
        &self,
        uid: &str,
        client: [u8; CLIENT_BYTES],
        stream: u64,
        created_ms: u64,
        bits: u64,
    ) -> Result<(), RestoreError> {
        check_uid(uid).map_err(|_| RestoreError::Uid)?;
        let session =
            Session::restored(uid, client, stream, created_ms, bits).ok_or(RestoreError::Word)?;
        let hash = self.hash(uid);
        let (_, shard) = self.shard(hash);
        let guard = epoch::pin();
        if shard.index.find(hash, uid, &client, &guard).is_some() {
            return Err(RestoreError::Duplicate);
        }
        let hasher = |u: &str| self.hash(u);
        let mut w = shard.index.write(&hasher, &guard);
        w.insert(hash, session, &guard);
        self.counters
            .mine()
            .live
            .fetch_add(1, crate::sync::Ordering::Relaxed);
        Ok(())
    }

    /// Makes every stream issued from now on differ from every one in `restored`.
    pub(crate) fn raise_streams(&self, restored: impl Iterator<Item = u64>) {
        // A stream is (n << log2(shards)) | shard: new ones start above every restored
        // n, whatever shard count the saved store had.
        let bits = 64 - self.shard_shift;
        let floor = restored.map(|s| (s >> bits) + 1).max().unwrap_or(0);
        let hasher = |u: &str| self.hash(u);
        let guard = epoch::pin();
        for shard in self.shards.iter() {
            shard.index.write(&hasher, &guard).raise_next_stream(floor);
        }
    }

    /// Calls `visit` on every session the store holds, dead or alive, one shard at a
    /// time. Lock-free.
    pub(crate) fn for_each_session(&self, mut visit: impl FnMut(&Session)) {
        for shard in self.shards.iter() {
            let guard = epoch::pin();
            shard.index.for_each(&guard, &mut visit);
        }
    }
}

/// Counts a rejection and returns it.
#[inline]
fn reject<T>(counter: &AtomicU64, why: Rejection) -> Result<T, Rejection> {
    bump(counter);
    Err(why)
}
