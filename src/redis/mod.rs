//! The Redis backend (feature `redis`); see [`RedisStore`].

mod keys;
mod mac;

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{
    Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture, Script, ScriptInvocation, Value,
};
use tokio::sync::OnceCell;

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
    count: Script,
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
            count: with_common(include_str!("count.lua")),
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
    /// The [`ca_file`](RedisBuilder::ca_file) cannot be read or holds no PEM certificate.
    Tls(String),
    /// Redis answered but refused this client: a wrong password or user, or a TLS
    /// certificate that does not chain to the trusted roots or does not name the host.
    /// Waiting does not fix it (the connection is never downgraded to plain text).
    Rejected(String),
    /// Redis did not answer within the timeout: down, not started yet, or unreachable.
    /// Waiting may fix it; [`RedisBuilder::connect_lazily`] serves meanwhile.
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
            RedisBuildError::Tls(e) => write!(f, "tls: {e}"),
            RedisBuildError::Rejected(e) => write!(f, "redis refused this client: {e}"),
            RedisBuildError::Unavailable(e) => e.fmt(f),
        }
    }
}

// Display says everything (the inner error's text included): no `source`, so a
// report that walks the chain names each cause once.
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
/// | [`ca_file`](Self::ca_file) | the system's roots (for `rediss`) |
/// | [`replicas`](Self::replicas) | 0: answer once the primary has the write |
#[must_use]
pub struct RedisBuilder {
    url: String,
    ca_file: Option<PathBuf>,
    replicas: usize,
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
            .field("ca_file", &self.ca_file)
            .field("replicas", &self.replicas)
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

    /// The PEM file of the certificate authorities to trust for `rediss://` instead
    /// of the system's roots (a private CA, a self-signed server). A server
    /// certificate that does not chain to one of them, or does not name the host in
    /// the URL, fails [`connect`](Self::connect) with [`RedisBuildError::Rejected`].
    pub fn ca_file(mut self, path: impl AsRef<Path>) -> Self {
        self.ca_file = Some(path.as_ref().to_owned());
        self
    }

    /// Waits for `n` replicas to acknowledge every write (a sign-in, a rotation, a
    /// sign-out, a revocation on replay) before answering it: Redis's `WAIT`, sent
    /// to the primary that took the write. If fewer acknowledge within the
    /// [`timeout`](Self::timeout), the call answers [`Unavailable`] (the write may
    /// still stand: a client that retries with its token gets the batch or recovery
    /// window's answer).
    ///
    /// What a failover loses: replication is asynchronous, so with `n = 0` a primary
    /// that dies takes with it the writes of its last moments that no replica had
    /// yet. A lost rotation makes the previous token current again, so the client's
    /// newest token answers `InvalidToken` (signed out); a lost sign-out brings the
    /// session back; a lost sign-in leaves a token that was never stored. With
    /// `n >= 1`, nothing answered as done is lost while one of the `n` replicas that
    /// acknowledged it is promoted (Redis Cluster promotes the most up-to-date one),
    /// at the cost of one replica round trip per write. A batched answer (the current
    /// token, rotated by another call) waits too, so a primary cut off from its
    /// replicas never hands out a rotation they do not have. Run the cluster with
    /// `cluster-require-full-coverage no`, or one failing primary stops every shard.
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// Checks the settings, opens the connections and asks Redis a `PING`. Fails with
    /// [`RedisBuildError::Unavailable`] if Redis does not answer within the timeout,
    /// and with [`RedisBuildError::Rejected`] if it answers but refuses this client.
    pub async fn connect(self) -> Result<RedisStore, RedisBuildError> {
        let store = self.connect_lazily()?;
        // One plain attempt first: the connection manager and the cluster client
        // retry a failed connect (a refusal included) and wrap its error, which would
        // turn a wrong password or certificate into a timeout.
        store.target.probe(store.timeout).await?;
        match tokio::time::timeout(store.timeout, store.open()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(classify(&e)),
            Err(_) => {
                return Err(RedisBuildError::Unavailable(Unavailable::new(format!(
                    "no answer from redis within {:?}",
                    store.timeout
                ))))
            }
        }
        store.ping().await.map_err(RedisBuildError::Unavailable)?;
        Ok(store)
    }

    /// Checks the settings and reads the [`ca_file`](Self::ca_file), touching no
    /// network: the first call connects. Until Redis answers, every call answers
    /// [`BackendError::Unavailable`] within the [`timeout`](Self::timeout), so a
    /// service can start before its Redis does. Must be called inside a Tokio runtime
    /// only if [`connect`](Self::connect) would be.
    pub fn connect_lazily(self) -> Result<RedisStore, RedisBuildError> {
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
        let target = Target::new(&self.url, self.ca_file.as_deref(), self.timeout)?;
        Ok(RedisStore {
            target,
            conns: RwLock::new(Arc::new(OnceCell::new())),
            connections: self.connections,
            next: AtomicUsize::new(0),
            scripts: Scripts::new(),
            prefix: self.prefix,
            mac,
            policy,
            max_clients_per_user,
            clock: self.clock,
            grace_ms: millis(self.ttl_grace),
            timeout: self.timeout,
            replicas: self.replicas,
            counters: Counters::default(),
        })
    }
}

/// Where the store connects: one server, or a cluster through its seed nodes.
enum Target {
    One(redis::Client, ConnectionManagerConfig),
    /// The cluster client, and a plain client per seed node for [`Target::probe`].
    Cluster(ClusterClient, Vec<redis::Client>),
}

impl Target {
    fn new(url: &str, ca_file: Option<&Path>, timeout: Duration) -> Result<Self, RedisBuildError> {
        let bad_url = |e: &dyn fmt::Display| RedisBuildError::Url(e.to_string());
        let (cluster, tls, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
            (true, false, rest)
        } else if let Some(rest) = url.strip_prefix("rediss+cluster://") {
            (true, true, rest)
        } else {
            (false, url.starts_with("rediss://"), url)
        };
        let certs = match ca_file {
            None => None,
            Some(_) if !tls => {
                return Err(RedisBuildError::Tls(
                    "a CA file is given but the URL is not rediss:// (no TLS)".into(),
                ))
            }
            Some(path) => Some(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(read_pem(path)?),
            }),
        };
        if !cluster {
            if !(url.starts_with("redis://") || tls) {
                return Err(bad_url(
                    &"expected redis://, rediss://, redis+cluster:// or rediss+cluster://",
                ));
            }
            let client = match certs {
                Some(certs) => redis::Client::build_with_tls(url, certs),
                None => redis::Client::open(url),
            }
            .map_err(|e| bad_url(&e))?;
            // Reconnects in the background after an I/O error; every attempt and
            // every reply is bounded, and the call itself is bounded again.
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout)
                .set_number_of_retries(1)
                .set_factor(10)
                .set_max_delay(millis(timeout));
            return Ok(Target::One(client, config));
        }
        let seeds = cluster_seeds(rest, tls).map_err(|e| bad_url(&e))?;
        let probes = seeds
            .iter()
            .map(|seed| match &certs {
                Some(certs) => redis::Client::build_with_tls(seed.as_str(), certs.clone()),
                None => redis::Client::open(seed.as_str()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad_url(&e))?;
        let mut builder = redis::cluster::ClusterClientBuilder::new(seeds)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            // MOVED, ASK and a failover are retried (the client refreshes its slot
            // map); the call as a whole stays bounded by `timeout`.
            .retries(4)
            .min_retry_wait(10)
            .max_retry_wait(millis(timeout).max(10));
        if let Some(certs) = certs {
            builder = builder.certs(certs);
        }
        Ok(Target::Cluster(
            builder.build().map_err(|e| bad_url(&e))?,
            probes,
        ))
    }

    /// One connection and `PING` to the server, or to each seed node in turn until
    /// one answers, with no retry: a refusal (password, ACL, certificate) is final and
    /// named, a node that does not answer passes the turn to the next seed.
    /// Each seed has an equal share of `limit`.
    async fn probe(&self, limit: Duration) -> Result<(), RedisBuildError> {
        let clients = match self {
            Target::One(client, _) => std::slice::from_ref(client),
            Target::Cluster(_, seeds) => &seeds[..],
        };
        let share = limit / clients.len().max(1) as u32;
        let mut last = None;
        for client in clients {
            let attempt = async {
                let mut con = client.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async::<String>(&mut con).await
            };
            match tokio::time::timeout(share, attempt).await {
                Ok(Ok(_)) => return Ok(()),
                Err(_) => {
                    last = Some(RedisBuildError::Unavailable(Unavailable::new(format!(
                        "no answer from redis within {share:?}"
                    ))))
                }
                Ok(Err(e)) => match classify(&e) {
                    refused @ RedisBuildError::Rejected(_) => return Err(refused),
                    other => last = Some(other),
                },
            }
        }
        Err(last.unwrap_or_else(|| {
            RedisBuildError::Unavailable(Unavailable::new("no redis node to ask"))
        }))
    }
}

/// `[user:pass@]h1:p1,h2:p2[/0]` as one URL per seed node.
fn cluster_seeds(rest: &str, tls: bool) -> Result<Vec<String>, &'static str> {
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (Some(auth), hosts),
        None => (None, rest),
    };
    let (hosts, db) = hosts.split_once('/').unwrap_or((hosts, ""));
    if !matches!(db, "" | "0") {
        return Err("a cluster has database 0 only");
    }
    let scheme = if tls { "rediss" } else { "redis" };
    let seeds: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| match auth {
            Some(a) => format!("{scheme}://{a}@{h}"),
            None => format!("{scheme}://{h}"),
        })
        .collect();
    if seeds.is_empty() {
        return Err("a cluster URL names at least one seed node, HOST:PORT[,HOST:PORT...]");
    }
    Ok(seeds)
}

fn read_pem(path: &Path) -> Result<Vec<u8>, RedisBuildError> {
    let pem = std::fs::read(path)
        .map_err(|e| RedisBuildError::Tls(format!("cannot read {}: {e}", path.display())))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(RedisBuildError::Tls(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(pem)
}

/// Whether a failure to connect is Redis refusing this client (a password, an ACL,
/// a certificate: waiting will not help) or Redis not answering.
fn classify(e: &RedisError) -> RedisBuildError {
    if is_refusal(e) {
        RedisBuildError::Rejected(e.to_string())
    } else {
        RedisBuildError::Unavailable(Unavailable::new(format!("redis: {e}")))
    }
}

/// Redis refused this client: a password or ACL answer, or a TLS error anywhere in
/// the error's `source()` chain.
fn is_refusal(e: &RedisError) -> bool {
    if matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
        || matches!(
            e.kind(),
            redis::ErrorKind::AuthenticationFailed | redis::ErrorKind::InvalidClientConfig
        )
    {
        return true;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        let tls_io = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<rustls::Error>());
        if c.is::<rustls::Error>() || tls_io {
            return true;
        }
        cause = c.source();
    }
    false
}

/// A connection to one server or to a whole cluster; both multiplex concurrent calls.
#[derive(Clone)]
enum Conn {
    One(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::One(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::One(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::One(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
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
/// scripts read the server's `TIME`, one clock for all nodes. A user's keys and the
/// live-session set of the user's bucket share one hash tag (the bucket), so every
/// script touches one slot and stays one atomic step on Redis Cluster too.
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
/// (in its key names and its live-set entries, the same on every node: it links a
/// user's sessions, it does not name the user) and its bucket (the hash's first ten
/// bits); per session, its client id, generation, sign-in and
/// rotation times, whether its current token has been presented, and its TTL; per call,
/// the same plus the policy's settings, this node's clock when one is set, and the
/// generation the presented token has if it is genuine (so an observer learns whether
/// a request carried a working or a retired token, not the token). No token, no part of
/// one, no uid and no key: with all of Redis and the client ids one still cannot
/// compute a token without the secret. The secret is what must stay off Redis's hosts:
/// with it, a uid and a client id, anyone computes that session's tokens. Client ids
/// are minted here, never by Redis. Expiry is a Redis TTL, so Redis reclaims dead
/// sessions by itself (a user's index and a bucket's live set are kept one token
/// lifespan past their newest session, so that a rotation need not extend them: a
/// rotation costs Redis `TIME`, `GET`, `SET ... PX` and `ZADD`); a key of the wrong
/// type or form where a user's key belongs is removed, not left to block that user.
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
/// and with persistence if sign-ins should survive a Redis restart. [`live`](Self::live)
/// costs 1024 small script calls, whatever the number of users;
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
    target: Target,
    /// Opened by the first call (or by `connect`), then kept: each reconnects by itself.
    /// Swapped for a fresh cell when Redis refuses a connection (see `refused`).
    conns: RwLock<Arc<OnceCell<Box<[Conn]>>>>,
    connections: usize,
    next: AtomicUsize,
    scripts: Scripts,
    prefix: String,
    mac: TokenMac,
    policy: Policy,
    max_clients_per_user: usize,
    clock: Option<Arc<dyn Clock>>,
    grace_ms: u64,
    timeout: Duration,
    replicas: usize,
    /// One set for the whole store: a network round trip costs far more than the
    /// shared cache line these increments touch.
    counters: Counters,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("cluster", &matches!(self.target, Target::Cluster(..)))
            .field("connections", &self.connections)
            .field("replicas", &self.replicas)
            .field("policy", &self.policy)
            .field("max_clients_per_user", &self.max_clients_per_user)
            .field("timeout", &self.timeout)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A builder for a store on the Redis at `url`:
    ///
    /// - `redis://[USER:PASSWORD@]HOST:PORT[/DB]`: one server;
    /// - `rediss://...`: the same over TLS (rustls; see [`ca_file`](RedisBuilder::ca_file));
    /// - `redis+cluster://[USER:PASSWORD@]HOST:PORT,HOST:PORT,...`: Redis Cluster
    ///   (or Valkey's), from any of these seed nodes; the client follows `MOVED` and
    ///   `ASK`, slot migrations and failovers;
    /// - `rediss+cluster://...`: a cluster over TLS.
    pub fn builder(url: &str) -> RedisBuilder {
        RedisBuilder {
            url: url.to_owned(),
            ca_file: None,
            replicas: 0,
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
        UserKeys::new(&self.prefix, self.mac.user_tag(uid))
    }

    /// The current set of connections (opened, or to be opened by the first call).
    fn cell(&self) -> Arc<OnceCell<Box<[Conn]>>> {
        self.conns.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Opens the connections unless they are open; a failed attempt is retried
    /// by the next call.
    async fn open(&self) -> redis::RedisResult<()> {
        self.cell().get_or_try_init(|| self.open_all()).await?;
        Ok(())
    }

    async fn open_all(&self) -> redis::RedisResult<Box<[Conn]>> {
        let mut conns = Vec::with_capacity(self.connections);
        for _ in 0..self.connections {
            conns.push(match &self.target {
                Target::One(client, config) => Conn::One(
                    client
                        .get_connection_manager_with_config(config.clone())
                        .await?,
                ),
                Target::Cluster(client, _) => Conn::Cluster(client.get_async_connection().await?),
            });
        }
        Ok(conns.into_boxed_slice())
    }

    async fn conn(&self) -> redis::RedisResult<Conn> {
        let cell = self.cell();
        let conns = cell.get_or_try_init(|| self.open_all()).await?;
        // Relaxed: any spread over the connections will do.
        let i = self.next.fetch_add(1, Ordering::Relaxed) % conns.len().max(1);
        conns
            .get(i)
            .cloned()
            .ok_or_else(|| RedisError::from((redis::ErrorKind::ClientError, "no connection")))
    }

    /// Notes a failed call: after a refusal (the password changed, an ACL), the
    /// connections are dropped and the next call opens new ones. The connection
    /// manager reconnects by itself after an I/O error only, so one whose reconnect
    /// was refused would stay refused after the password is set back.
    fn refused(&self, e: &RedisError) {
        if is_refusal(e) {
            *self.conns.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(OnceCell::new());
        }
    }

    /// `call`, with a refusal noted (see `refused`).
    async fn noted<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        let r = call.await;
        if let Err(e) = &r {
            self.refused(e);
        }
        r
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

    /// Runs a script that only reads (or whose writes need no replica), connecting
    /// first if need be, all within the timeout.
    async fn run<T: FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> Result<T, Unavailable> {
        bounded(
            self.timeout,
            self.noted(async {
                let mut con = self.conn().await?;
                inv.invoke_async(&mut con).await
            }),
        )
        .await
    }

    /// Runs a script that writes `keys`' slot, then, if [`replicas`](RedisBuilder::replicas)
    /// asks for it, waits for that many replicas of the primary that took it.
    /// `wrote` says from the answer whether anything was written.
    async fn run_write<T: FromRedisValue>(
        &self,
        inv: &ScriptInvocation<'_>,
        keys: &UserKeys,
        wrote: impl FnOnce(&T) -> bool,
    ) -> Result<T, Unavailable> {
        let (answer, mut con) = bounded(
            self.timeout,
            self.noted(async {
                let mut con = self.conn().await?;
                let answer: T = inv.invoke_async(&mut con).await?;
                Ok((answer, con))
            }),
        )
        .await?;
        if self.replicas == 0 || !wrote(&answer) {
            return Ok(answer);
        }
        let mut wait = redis::cmd("WAIT");
        wait.arg(self.replicas).arg(millis(self.timeout));
        // WAIT counts the replicas that have every write this connection sent to
        // that node, ours included: on a cluster it must go to the slot's primary.
        let acked: i64 = bounded(self.timeout + Duration::from_millis(200), async {
            match &mut con {
                Conn::One(c) => wait.query_async(c).await,
                Conn::Cluster(c) => {
                    let route = Route::new(keys.slot(), SlotAddr::Master);
                    let at = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                    redis::from_redis_value(&c.route_command(&wait, at).await?)
                }
            }
        })
        .await?;
        if acked < self.replicas as i64 {
            return Err(Unavailable::new(format!(
                "{acked} of {} replicas acknowledged the write within {:?}",
                self.replicas, self.timeout
            )));
        }
        Ok(answer)
    }

    /// One round trip (to every primary of a cluster), connecting first if need be:
    /// `Ok` once Redis answers.
    pub async fn ping(&self) -> Result<(), Unavailable> {
        bounded(
            self.timeout,
            self.noted(async {
                let mut con = self.conn().await?;
                redis::cmd("PING").query_async::<String>(&mut con).await
            }),
        )
        .await
        .map(drop)
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
                .key(&keys.live)
                .arg(&keys.base)
                .arg(self.max_clients_per_user)
                .arg(client.as_str())
                .arg(&keys.tag);
            let (code, expiry_ms, evicted): (i64, u64, i64) = self
                .run_write(&inv, &keys, |&(code, _, _): &(i64, u64, i64)| code == 1)
                .await?;
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
            .key(&keys.live)
            .arg(p.batch_window_ms)
            .arg(p.min_rotation_interval_ms)
            .arg(u8::from(p.rotation))
            .arg(p.recovery_window_ms)
            .arg(u8::from(p.replay_policy == ReplayPolicy::RevokeSession));
        match genuine {
            Some(k) => inv.arg(k),
            None => inv.arg(""),
        };
        let acked = self.replicas > 0;
        inv.arg(client.as_str()).arg(&keys.tag).arg(u8::from(acked));
        let revokes = p.replay_policy == ReplayPolicy::RevokeSession;
        // A rotation, and a revocation on replay, are what a failover must not undo;
        // a batch hands out another call's rotation, which the script's write (when
        // acked) lets this WAIT cover.
        let (code, expiry_ms, g): (i64, u64, u64) = self
            .run_write(&inv, &keys, |&(code, _, _): &(i64, u64, u64)| {
                code == 1 || (code == -2 && revokes) || (code == 3 && acked)
            })
            .await?;
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
            .key(&keys.live)
            .arg(client.as_str())
            .arg(&keys.tag);
        let live: i64 = self.run_write(&inv, &keys, |&live| live == 1).await?;
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
        inv.key(keys.index())
            .key(&keys.live)
            .arg(&keys.base)
            .arg(&keys.tag);
        let n: u64 = self.run_write(&inv, &keys, |&n| n > 0).await?;
        self.counters
            .revoked
            .fetch_add(n, crate::sync::Ordering::Relaxed);
        Ok(n as usize)
    }

    /// The live sessions of `uid`, in sign-in order, as
    /// [`Store::sessions`](crate::Store::sessions).
    pub async fn sessions(&self, uid: &str) -> Result<Vec<SessionInfo>, BackendError<InputError>> {
        check_uid(uid).map_err(BackendError::Refused)?;
        let keys = self.user_keys(uid);
        let mut inv = self.invocation(&self.scripts.sessions);
        inv.key(keys.index())
            .key(&keys.live)
            .arg(&keys.base)
            .arg(&keys.tag);
        let rows: Vec<(String, u64, u64, u64, u64)> = self.run(&inv).await?;
        rows.into_iter()
            .map(|(client, generation, created, rotated, expires)| {
                Ok(SessionInfo {
                    client: ClientId::parse(&client).map_err(|_| {
                        BackendError::Unavailable(Unavailable::new(
                            "redis holds a malformed client id",
                        ))
                    })?,
                    generation,
                    created_at_ms: created,
                    rotated_at_ms: rotated,
                    expires_at_ms: expires,
                })
            })
            .collect()
    }

    /// How many sessions are live under this prefix, exactly, on every node: the sum
    /// of the [`BUCKETS`](keys::BUCKETS) (1024) live-session sets the scripts keep,
    /// one small script per set, spread over a cluster's primaries as the sets are.
    /// Its cost does not grow with the number of users (no `SCAN`).
    pub async fn live(&self) -> Result<u64, Unavailable> {
        use futures_util::stream::{self, StreamExt, TryStreamExt};
        stream::iter(0..keys::BUCKETS)
            .map(|bucket| async move {
                let mut inv = self.invocation(&self.scripts.count);
                inv.key(keys::live_key(&self.prefix, bucket));
                self.run::<u64>(&inv).await
            })
            .buffer_unordered(32)
            .try_fold(0u64, |sum, n| async move { Ok(sum + n) })
            .await
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
    fn cluster_urls_name_their_seeds() {
        assert_eq!(
            cluster_seeds(":pw@a:1,b:2/0", true).unwrap(),
            ["rediss://:pw@a:1", "rediss://:pw@b:2"]
        );
        assert_eq!(cluster_seeds("a:1,", false).unwrap(), ["redis://a:1"]);
        assert!(cluster_seeds("a:1/3", false).is_err());
        assert!(cluster_seeds("", false).is_err());
        assert!(cluster_seeds("u:p@", false).is_err());
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
