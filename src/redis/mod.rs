//! The Redis backend (feature `redis`); see [`RedisStore`].

mod keys;
mod mac;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Script, ScriptInvocation};

use crate::backend::{AuthResult, Backend, BackendError, Unavailable};
use crate::clock::{millis, Clock, SystemClock};
use crate::config::{Builder, ConfigError, Settings};
use crate::credentials::{Authenticated, Credentials, SessionInfo};
use crate::decision::{Policy, ReplayPolicy};
use crate::error::{check_uid, InputError, Rejection};
use crate::stats::{bump, Counters, Stats};
use crate::token::{ClientId, Token};

use keys::UserKeys;
use mac::TokenMac;

pub use mac::MIN_SECRET_LEN;

const COMMON: &str = include_str!("common.lua");

/// The scripts, each prefixed with the shared preamble. `Script` keeps the SHA1 and
/// `invoke_async` runs `EVALSHA`, loading the script once on `NOSCRIPT`.
struct Scripts {
    issue: Script,
    authenticate: Script,
    revoke: Script,
    revoke_user: Script,
    sessions: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_common = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        Scripts {
            issue: with_common(include_str!("issue.lua")),
            authenticate: with_common(include_str!("authenticate.lua")),
            revoke: with_common(include_str!("revoke.lua")),
            revoke_user: with_common(include_str!("revoke_user.lua")),
            sessions: with_common(include_str!("sessions.lua")),
        }
    }
}

/// Why [`RedisBuilder::connect`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisBuildError {
    /// A setting of the decision table is out of range.
    Config(ConfigError),
    /// No secret was given, or it is shorter than [`MIN_SECRET_LEN`] bytes.
    Secret,
    /// The prefix is empty, longer than 64 bytes, or holds characters other than
    /// ASCII letters, digits and `-_.:`.
    Prefix,
    /// `connections` is not between 1 and 256, or `timeout` is zero.
    Connections,
    /// The URL is not a Redis URL.
    Url(String),
    /// Redis did not answer.
    Unavailable(Unavailable),
}

impl fmt::Display for RedisBuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisBuildError::Config(e) => e.fmt(f),
            RedisBuildError::Secret => {
                write!(f, "secret must be at least {MIN_SECRET_LEN} bytes")
            }
            RedisBuildError::Prefix => {
                f.write_str("prefix must be 1 to 64 ascii letters, digits or '-', '_', '.', ':'")
            }
            RedisBuildError::Connections => {
                f.write_str("connections must be between 1 and 256 and timeout must be positive")
            }
            RedisBuildError::Url(e) => write!(f, "bad redis url: {e}"),
            RedisBuildError::Unavailable(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RedisBuildError {}

/// Configures a [`RedisStore`].
///
/// | setting | default |
/// |---|---|
/// | [`settings`](Self::settings): the decision table's, as for [`Store`](crate::Store) | SPEC's defaults |
/// | [`secret`](Self::secret) | none: required, the same on every node |
/// | [`prefix`](Self::prefix) | `baton` |
/// | [`connections`](Self::connections) | 4 (each one multiplexes many calls) |
/// | [`timeout`](Self::timeout) | 1 s per call, then [`Unavailable`] |
/// | [`clock`](Self::clock) | the Redis server's `TIME` |
/// | [`ttl_grace`](Self::ttl_grace) | 0 |
#[must_use]
pub struct RedisBuilder {
    url: String,
    settings: Builder<SystemClock>,
    secret: Option<TokenMac>,
    prefix: String,
    connections: usize,
    timeout: Duration,
    clock: Option<Arc<dyn Clock>>,
    ttl_grace: Duration,
}

impl fmt::Debug for RedisBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password.
        f.debug_struct("RedisBuilder")
            .field("settings", &self.settings)
            .field("secret", &"<redacted>")
            .field("prefix", &self.prefix)
            .field("connections", &self.connections)
            .field("timeout", &self.timeout)
            .field("server_clock", &self.clock.is_none())
            .field("ttl_grace", &self.ttl_grace)
            .finish_non_exhaustive()
    }
}

impl RedisBuilder {
    /// The decision table's settings and the per-user cap, from the embedded store's
    /// builder. Its shard count and clock do not apply here and are neither checked
    /// nor used (see [`clock`](Self::clock) for this backend's).
    pub fn settings(mut self, settings: Builder<SystemClock>) -> Self {
        self.settings = settings;
        self
    }

    /// The key of the keyed hashes that stand in for tokens in Redis: at least
    /// [`MIN_SECRET_LEN`] random bytes, the same on every node, never logged. Changing
    /// it makes every issued token invalid.
    pub fn secret(mut self, secret: &[u8]) -> Self {
        self.secret = TokenMac::new(secret);
        self
    }

    /// Prepended to every key, so several services can share one Redis database.
    pub fn prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// How many connections to open. Each multiplexes concurrent calls, so a few
    /// suffice; more spread the client-side work over more tasks.
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n;
        self
    }

    /// The longest one call may take, connecting included, before it answers
    /// [`Unavailable`].
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Passes `clock`'s time into the scripts instead of reading the server's `TIME`:
    /// for tests that drive time by hand. With several nodes, leave the server's clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// How long Redis keeps a session's keys after they stop mattering. The scripts
    /// decide every answer by the clock, so this only delays reclaiming memory (and
    /// lets an expired session answer `Expired` a while rather than `UnknownSession`).
    /// Tests on a hand-driven [`clock`](Self::clock) need it: Redis expires keys by
    /// its own real time.
    pub fn ttl_grace(mut self, d: Duration) -> Self {
        self.ttl_grace = d;
        self
    }

    /// Checks the settings and opens the connections; fails if Redis does not
    /// answer within the timeout.
    pub async fn connect(self) -> Result<RedisStore, RedisBuildError> {
        let Settings {
            policy,
            max_clients_per_user,
        } = self
            .settings
            .check_settings()
            .map_err(RedisBuildError::Config)?;
        let mac = self.secret.ok_or(RedisBuildError::Secret)?;
        if !keys::valid_prefix(&self.prefix) {
            return Err(RedisBuildError::Prefix);
        }
        if !(1..=256).contains(&self.connections) || self.timeout.is_zero() {
            return Err(RedisBuildError::Connections);
        }
        let client = redis::Client::open(self.url.as_str())
            .map_err(|e| RedisBuildError::Url(e.to_string()))?;
        // Reconnects in the background after an I/O error; every attempt and every
        // reply is bounded, and the call itself is bounded again by `timeout`.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1)
            .set_factor(10)
            .set_max_delay(millis(self.timeout));
        let mut conns = Vec::with_capacity(self.connections);
        for _ in 0..self.connections {
            let open = client.get_connection_manager_with_config(manager_config.clone());
            let con = bounded(self.timeout, open)
                .await
                .map_err(RedisBuildError::Unavailable)?;
            conns.push(con);
        }
        Ok(RedisStore {
            conns: conns.into_boxed_slice(),
            next: AtomicUsize::new(0),
            scripts: Scripts::new(),
            prefix: self.prefix,
            mac,
            policy,
            max_clients_per_user,
            clock: self.clock,
            grace_ms: millis(self.ttl_grace),
            timeout: self.timeout,
            counters: Counters::default(),
        })
    }
}

/// Runs a Redis call for at most `limit`.
async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, Unavailable> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(v)) => Ok(v),
        // Redis errors name the failure (refused, reset, NOSCRIPT...) and never echo
        // a command's arguments, so no token reaches the message.
        Ok(Err(e)) => Err(Unavailable::new(format!("redis: {e}"))),
        Err(_) => Err(Unavailable::new(format!(
            "no answer from redis within {limit:?}"
        ))),
    }
}

/// Sessions in Redis (feature `redis`), with the same operations and answers as the
/// embedded [`Store`](crate::Store): SPEC's decision table run inside Redis, so every
/// node of a service sees the same sessions. A token rotated through one node is stale
/// on all of them; a sign-out through one ends the session everywhere.
///
/// **Atomicity.** Each operation is one Lua script, so one atomic step on the server
/// (no read-then-write across round trips): loaded once, run by its SHA, loaded again
/// when Redis has forgotten it (`NOSCRIPT`, after a restart or `SCRIPT FLUSH`). The
/// scripts read the server's `TIME`, one clock for all nodes. All keys of a user share
/// one hash tag, so the client cap and `revoke_user` stay atomic on Redis Cluster too.
///
/// **No token material in Redis.** Tokens are derived on the nodes exactly as the
/// embedded store derives them: `T(g)` is the ChaCha20 keystream at offset `16 g`
/// (then `g`), under a key per session that every node derives from the shared
/// [`secret`](RedisBuilder::secret), the uid and the client id (HMAC-SHA256). A node
/// checks a presented token itself, with one block, and sends Redis only the generation
/// of a genuine one (or nothing); the scripts decide on generations and times alone,
/// and a node computes the token an answer carries from the generation Redis returns.
/// So every older genuine token answers `Replayed`, at any age, as in memory.
///
/// **What Redis sees.** A dump, a replica, the append-only file, `MONITOR` or
/// `SLOWLOG`, or a `redis://` wire show, per user, a 128-bit keyed hash of the uid
/// (the `{tag}` in its key names, the same on every node: it links a user's sessions,
/// it does not name the user); per session, its client id, generation, sign-in and
/// rotation times, whether its current token has been presented, and its TTL; per call,
/// the same plus the policy's settings, this node's clock when one is set, and the
/// generation the presented token has if it is genuine (so an observer learns whether
/// a request carried a working or a retired token, not the token). No token, no part of
/// one, no uid and no key: with all of Redis and the client ids one still cannot
/// compute a token without the secret. The secret is what must stay off Redis's hosts:
/// with it, a uid and a client id, anyone computes that session's tokens. Client ids
/// are minted here, never by Redis. Expiry is a Redis TTL, so Redis reclaims dead
/// sessions by itself; a key of the wrong type where a user's key belongs is removed,
/// not left to block that user.
///
/// **Failures.** A call that Redis does not answer within the
/// [`timeout`](RedisBuilder::timeout) (down, paused, restarting) returns
/// [`BackendError::Unavailable`]: answer 503, not 401. The connections reconnect by
/// themselves when Redis is back. A rotation that happened but whose answer was lost
/// leaves the client with the previous token, which the batch window (or the recovery
/// window) still honours.
///
/// **Deployment.** Every node needs the same secret and [`prefix`](RedisBuilder::prefix).
/// Run Redis with `maxmemory-policy noeviction` (an evicting policy signs users out),
/// and with persistence if sign-ins should survive a Redis restart. [`live`](Self::live) walks every user;
/// [`stats`](Self::stats) counts this node's answers only.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use baton::{RedisStore, Store};
/// use std::time::Duration;
///
/// let store = RedisStore::builder("redis://127.0.0.1:6379/0")
///     .secret(&std::fs::read("/etc/baton/secret")?)
///     .settings(Store::builder().batch_window(Duration::from_secs(5)))
///     .connect()
///     .await?;
/// let signed_in = store.issue("alice@example.com").await?;
/// # Ok(()) }
/// ```
pub struct RedisStore {
    conns: Box<[ConnectionManager]>,
    next: AtomicUsize,
    scripts: Scripts,
    prefix: String,
    mac: TokenMac,
    policy: Policy,
    max_clients_per_user: usize,
    clock: Option<Arc<dyn Clock>>,
    grace_ms: u64,
    timeout: Duration,
    /// One set for the whole store: a network round trip costs far more than the
    /// shared cache line these increments touch.
    counters: Counters,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("connections", &self.conns.len())
            .field("policy", &self.policy)
            .field("max_clients_per_user", &self.max_clients_per_user)
            .field("timeout", &self.timeout)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A builder for a store on the Redis at `url` (`redis://HOST:PORT/DB`, or
    /// `rediss://` with TLS support compiled into `redis`).
    pub fn builder(url: &str) -> RedisBuilder {
        RedisBuilder {
            url: url.to_owned(),
            settings: Builder::default(),
            secret: None,
            prefix: "baton".to_owned(),
            connections: 4,
            timeout: Duration::from_secs(1),
            clock: None,
            ttl_grace: Duration::ZERO,
        }
    }

    /// The key names of `uid`'s sessions, under its tag.
    fn user_keys(&self, uid: &str) -> UserKeys {
        UserKeys::new(&self.prefix, &self.mac.user_tag(uid))
    }

    fn conn(&self) -> ConnectionManager {
        // Relaxed: any spread over the connections will do.
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }

    /// Starts a call of `script` with the arguments every script takes.
    fn invocation<'s>(&self, script: &'s Script) -> ScriptInvocation<'s> {
        let p = &self.policy;
        let mut inv = script.prepare_invoke();
        match &self.clock {
            Some(c) => inv.arg(c.now_ms()),
            None => inv.arg(""),
        };
        inv.arg(p.token_lifespan_ms)
            .arg(p.max_age_ms)
            .arg(self.grace_ms);
        inv
    }

    async fn run<T: FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> Result<T, Unavailable> {
        let mut con = self.conn();
        bounded(self.timeout, inv.invoke_async(&mut con)).await
    }

    /// Signs `uid` in on a new device, evicting one session if the user is at the
    /// cap, as [`Store::issue`](crate::Store::issue).
    pub async fn issue<'a>(
        &self,
        uid: &'a str,
    ) -> Result<Credentials<'a>, BackendError<InputError>> {
        check_uid(uid).map_err(BackendError::Refused)?;
        let keys = self.user_keys(uid);
        loop {
            let client = ClientId::from_raw(crate::rng::client_bytes());
            let mut inv = self.invocation(&self.scripts.issue);
            inv.key(keys.index())
                .arg(&keys.base)
                .arg(self.max_clients_per_user)
                .arg(client.as_str());
            let (code, expiry_ms, evicted): (i64, u64, i64) = self.run(&inv).await?;
            // 0: the user already holds this client id (2^-96 odds); draw again.
            if code == 1 {
                bump(&self.counters.issued);
                if evicted == 1 {
                    bump(&self.counters.evicted);
                }
                let first = self.mac.session_key(uid, client.raw()).token(0, 0);
                return Ok(Credentials {
                    uid,
                    client,
                    token: Token::encode(&first),
                    expiry: expiry_ms / 1000,
                });
            }
        }
    }

    /// Checks a presented credential and rotates the session as SPEC's decision
    /// table says, in one atomic step on the server, as
    /// [`Store::authenticate`](crate::Store::authenticate).
    pub async fn authenticate<'a>(
        &self,
        uid: &'a str,
        client: &str,
        token: &str,
    ) -> Result<Authenticated<'a>, BackendError<Rejection>> {
        let c = &self.counters;
        let client = match check_uid(uid).and_then(|()| ClientId::parse(client)) {
            Ok(client) => client,
            Err(e) => {
                bump(&c.bad_input);
                return Err(BackendError::Refused(Rejection::BadInput(e)));
            }
        };
        // The token is checked here, against the session's own key: Redis is told
        // only the generation of a genuine one. A malformed or forged token still runs
        // the table: an expired session answers Expired whatever was presented.
        let session_key = self.mac.session_key(uid, client.raw());
        let mut tokens = session_key.tokens(0);
        let genuine = Token::decode(token).and_then(|b| tokens.generation_of(&b));
        let keys = self.user_keys(uid);
        let p = &self.policy;
        let mut inv = self.invocation(&self.scripts.authenticate);
        inv.key(keys.session(client.as_str()))
            .key(keys.index())
            .arg(p.batch_window_ms)
            .arg(p.min_rotation_interval_ms)
            .arg(u8::from(p.rotation))
            .arg(p.recovery_window_ms)
            .arg(u8::from(p.replay_policy == ReplayPolicy::RevokeSession));
        match genuine {
            Some(k) => inv.arg(k),
            None => inv.arg(""),
        };
        inv.arg(client.as_str());
        let (code, expiry_ms, g): (i64, u64, u64) = self.run(&inv).await?;
        let mut answer = |token_generation: u64| {
            let token = Token::encode(&tokens.get(token_generation));
            Credentials {
                uid,
                client,
                token,
                expiry: expiry_ms / 1000,
            }
        };
        let refuse = |counter, why| {
            bump(counter);
            Err(BackendError::Refused(why))
        };
        // What each answer says of the generation must match the presented token's.
        let presented_is = |k: u64| genuine == Some(k);
        match code {
            1 if g >= 1 && presented_is(g - 1) => {
                bump(&c.rotated);
                Ok(Authenticated::Rotated(answer(g)))
            }
            2 if presented_is(g) => {
                bump(&c.batched);
                Ok(Authenticated::Batched(answer(g)))
            }
            3 if g >= 1 && presented_is(g - 1) => {
                bump(&c.batched);
                Ok(Authenticated::Batched(answer(g)))
            }
            1..=3 => Err(corrupt("a generation the presented token does not have")),
            0 => refuse(&c.unknown_session, Rejection::UnknownSession),
            -1 => refuse(&c.expired, Rejection::Expired),
            -2 => refuse(&c.replayed, Rejection::Replayed),
            -3 => refuse(&c.invalid_token, Rejection::InvalidToken),
            _ => Err(corrupt("an unknown answer code")),
        }
    }

    /// Ends one session (sign-out), as [`Store::revoke`](crate::Store::revoke).
    pub async fn revoke(&self, uid: &str, client: &str) -> Result<bool, BackendError<InputError>> {
        check_uid(uid).map_err(BackendError::Refused)?;
        let client = ClientId::parse(client).map_err(BackendError::Refused)?;
        let keys = self.user_keys(uid);
        let mut inv = self.invocation(&self.scripts.revoke);
        inv.key(keys.session(client.as_str()))
            .key(keys.index())
            .arg(client.as_str());
        let live: i64 = self.run(&inv).await?;
        if live == 1 {
            bump(&self.counters.revoked);
        }
        Ok(live == 1)
    }

    /// Ends every session of `uid`, as [`Store::revoke_user`](crate::Store::revoke_user).
    pub async fn revoke_user(&self, uid: &str) -> Result<usize, BackendError<InputError>> {
        check_uid(uid).map_err(BackendError::Refused)?;
        let keys = self.user_keys(uid);
        let mut inv = self.invocation(&self.scripts.revoke_user);
        inv.key(keys.index()).arg(&keys.base);
        let n: u64 = self.run(&inv).await?;
        self.counters
            .revoked
            .fetch_add(n, crate::sync::Ordering::Relaxed);
        Ok(n as usize)
    }

    /// The live sessions of `uid`, in sign-in order, as
    /// [`Store::sessions`](crate::Store::sessions).
    pub async fn sessions(&self, uid: &str) -> Result<Vec<SessionInfo>, BackendError<InputError>> {
        check_uid(uid).map_err(BackendError::Refused)?;
        Ok(self.sessions_at(&self.user_keys(uid).index()).await?)
    }

    async fn sessions_at(&self, index: &str) -> Result<Vec<SessionInfo>, Unavailable> {
        let base = index.strip_suffix('i').unwrap_or(index);
        let mut inv = self.invocation(&self.scripts.sessions);
        inv.key(index).arg(base);
        let rows: Vec<(String, u64, u64, u64, u64)> = self.run(&inv).await?;
        rows.into_iter()
            .map(|(client, generation, created, rotated, expires)| {
                Ok(SessionInfo {
                    client: ClientId::parse(&client)
                        .map_err(|_| Unavailable::new("redis holds a malformed client id"))?,
                    generation,
                    created_at_ms: created,
                    rotated_at_ms: rotated,
                    expires_at_ms: expires,
                })
            })
            .collect()
    }

    /// Live sessions of every user under this prefix, removing expired ones on the
    /// way. Walks every user (`SCAN`, then one script per user): for admin pages, not
    /// for every metrics scrape of a large deployment.
    pub async fn live(&self) -> Result<u64, Unavailable> {
        let mut con = self.conn();
        let pattern = keys::index_pattern(&self.prefix);
        let mut cursor = 0u64;
        let mut live = 0u64;
        loop {
            let (next, indexes): (u64, Vec<String>) = bounded(
                self.timeout,
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut con),
            )
            .await?;
            for index in indexes {
                live += self.sessions_at(&index).await?.len() as u64;
            }
            if next == 0 {
                return Ok(live);
            }
            cursor = next;
        }
    }

    /// This process's counters of answers given (other nodes count their own);
    /// [`Stats::live`] is 0: see [`live`](Self::live).
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        s.add(&self.counters);
        s.live = 0;
        s
    }

    /// The decision table's settings this store runs with.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The most live sessions one user may hold.
    pub fn max_clients_per_user(&self) -> usize {
        self.max_clients_per_user
    }
}

fn corrupt<E>(what: &str) -> BackendError<E> {
    BackendError::Unavailable(Unavailable::new(format!(
        "redis answered {what}: is another version of baton sharing the prefix?"
    )))
}

impl Backend for RedisStore {
    fn issue<'u>(
        &self,
        uid: &'u str,
    ) -> impl Future<Output = Result<Credentials<'u>, BackendError<InputError>>> + Send {
        RedisStore::issue(self, uid)
    }

    fn authenticate<'u>(
        &self,
        uid: &'u str,
        client: &str,
        token: &str,
    ) -> impl Future<Output = AuthResult<'u>> + Send {
        RedisStore::authenticate(self, uid, client, token)
    }

    fn revoke(
        &self,
        uid: &str,
        client: &str,
    ) -> impl Future<Output = Result<bool, BackendError<InputError>>> + Send {
        RedisStore::revoke(self, uid, client)
    }

    fn revoke_user(
        &self,
        uid: &str,
    ) -> impl Future<Output = Result<usize, BackendError<InputError>>> + Send {
        RedisStore::revoke_user(self, uid)
    }

    fn sessions(
        &self,
        uid: &str,
    ) -> impl Future<Output = Result<Vec<SessionInfo>, BackendError<InputError>>> + Send {
        RedisStore::sessions(self, uid)
    }

    fn live(&self) -> impl Future<Output = Result<u64, Unavailable>> + Send {
        RedisStore::live(self)
    }

    /// Redis expires a session's keys by their TTL: nothing to sweep.
    fn sweep(&self) -> usize {
        0
    }

    fn stats(&self) -> Stats {
        RedisStore::stats(self)
    }

    fn policy(&self) -> &Policy {
        RedisStore::policy(self)
    }

    fn max_clients_per_user(&self) -> usize {
        RedisStore::max_clients_per_user(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_carries_the_preamble() {
        let s = Scripts::new();
        for script in [
            &s.issue,
            &s.authenticate,
            &s.revoke,
            &s.revoke_user,
            &s.sessions,
        ] {
            assert_eq!(script.get_hash().len(), 40);
        }
        assert_ne!(s.issue.get_hash(), s.authenticate.get_hash());
    }

    #[test]
    fn builder_debug_hides_the_secret_and_the_url() {
        let b = RedisStore::builder("redis://:hunter2@127.0.0.1/0").secret(&[42u8; 32]);
        let shown = format!("{b:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn bad_settings_are_named_before_connecting() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Port 9 (discard) is never a Redis: reaching it would fail differently.
        let url = "redis://127.0.0.1:9/0";
        let err = |b: RedisBuilder| rt.block_on(b.connect()).unwrap_err();
        assert_eq!(err(RedisStore::builder(url)), RedisBuildError::Secret);
        assert_eq!(
            err(RedisStore::builder(url).secret(&[1u8; 31])),
            RedisBuildError::Secret
        );
        let ok = || RedisStore::builder(url).secret(&[1u8; 32]);
        assert_eq!(err(ok().prefix("a{b}")), RedisBuildError::Prefix);
        assert_eq!(err(ok().connections(0)), RedisBuildError::Connections);
        assert_eq!(
            err(ok().timeout(Duration::ZERO)),
            RedisBuildError::Connections
        );
        assert!(matches!(
            err(ok().settings(crate::Store::builder().max_clients_per_user(0))),
            RedisBuildError::Config(e) if e.setting() == "max_clients_per_user"
        ));
        // The shard count is the embedded store's: not asked of this backend, so a
        // value the store would refuse gets as far as connecting (and port 9 fails).
        assert!(matches!(
            err(ok().settings(crate::Store::builder().shards(3))),
            RedisBuildError::Unavailable(_)
        ));
        assert!(matches!(
            err(RedisStore::builder("http://x").secret(&[1u8; 32])),
            RedisBuildError::Url(_)
        ));
    }
}
