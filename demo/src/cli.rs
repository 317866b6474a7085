//! The command line: flags, their defaults, and turning them into an [`AppState`].

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use baton::{
    Builder, ConfigError, RedisBuildError, RedisStore, ReplayPolicy, Store, SystemClock,
    MIN_SECRET_LEN,
};
use clap::{Parser, ValueEnum};

use crate::app::AppState;
use crate::conn_limit::{self, ConnLimit};
use crate::cors::Cors;
use crate::signin::{Allowance, Gate, HashPool, SignInGuard, ThrottlePolicy};
use crate::users::{HashCost, Users};
use crate::users_file;

/// The address and password of the user added when no `--user` or `--users-file` is
/// given and the server listens on a loopback address.
pub const DEMO_USER: (&str, &str) = ("demo@example.com", "demo-password");

/// The environment variable read for the Redis secret when `--redis-secret-file` is
/// not given.
pub const SECRET_ENV: &str = "BATON_REDIS_SECRET";

/// The environment variable read for the durable store's secret when `--secret-file`
/// is not given.
pub const PERSIST_SECRET_ENV: &str = "BATON_SECRET";

const AFTER_HELP: &str = "\
--store takes one of:
  memory                                   this process only (the default)
  redis://[USER:PASS@]HOST:PORT[/DB]       one Redis server
  rediss://[USER:PASS@]HOST:PORT[/DB]      one Redis server over TLS
  redis+cluster://[USER:PASS@]H1:P1,H2:P2,...
                                           Redis Cluster, through any of its nodes
                                           (seeds: the client finds the others)
  rediss+cluster://[USER:PASS@]H1:P1,...   Redis Cluster over TLS
A password in the URL is never logged or shown: logs name only the hosts. Over TLS
the server's certificate must chain to --redis-ca-file (default: the system's roots)
and name the host in the URL; if it does not, the server does not start (there is
no fallback to plain text).

With a redis store, every server started on the same Redis (or cluster), with the
same secret and prefix, shares the sessions: a token rotated through one is stale on
all, and a sign-out through one ends the session on all. The secret (at least 32
bytes, e.g. `openssl rand -hex 32`) comes from --redis-secret-file or the
BATON_REDIS_SECRET environment variable; it is never logged. Redis need not answer
at start: until it does, the server answers 503 (with Retry-After, never 401) and
its log says so, then serves as soon as Redis answers, with no restart; the same
holds while Redis is gone later. A Redis that answers but refuses the server (wrong
password, certificate mismatch) stops it at start.

Failover: Redis copies writes to replicas after answering them. With
--redis-replicas 0 (the default), a primary that dies takes with it the writes of
its last moments that had not reached a replica, and the replica promoted in its
place answers as if they never happened: a lost rotation leaves the previous token
current again, so the client's newest token is refused (401, signed out); a lost
sign-out brings the session back; a lost sign-in leaves the client a session Redis
never kept (401). With --redis-replicas N, every write (sign-in, rotation,
sign-out, revocation on replay) waits for N replicas to acknowledge it (Redis's
WAIT) before it is answered, so nothing that was answered 2xx is lost when one of
them takes over, at the price of one replica round trip per write. If N replicas do
not acknowledge within --redis-timeout-ms, the request answers 503 and the client
keeps the token it sent (should the write stand after all, a retry inside the batch
or recovery window is answered with its result).

With --data-dir PATH, the embedded store keeps its sessions in PATH/sessions.redb
(created owner-only): sign-ins and sign-outs are on disk before they are answered,
rotations are checkpointed every second, SIGTERM and SIGINT write a final checkpoint,
and a restart logs nobody out. The token key derives from --secret-file or the
BATON_SECRET environment variable (at least 32 bytes), never stored in the file. While
the disk is full or read-only, sign-ins get 503 and signed-in clients keep working.

Sign-in is throttled before any password hash: each client address (an IPv6 one by
its /64) gets --sign-in-address-burst attempts, then one more every
--sign-in-address-refill-ms; each account, known or not, gets
--sign-in-account-burst, then one every --sign-in-account-refill-ms, charged only for
attempts its address was allowed. Past either: 429 with Retry-After, a delay that
ends by itself, never a lockout. A flood from one address thus leaves the account to
its owner elsewhere. Hashing runs on --hash-workers threads with --hash-queue waiting;
past that: 503 with Retry-After.

";

/// `AFTER_HELP` and the users file's format.
fn after_help() -> String {
    format!("{AFTER_HELP}{}", users_file::FORMAT)
}

/// A devise_token_auth-compatible server over a baton store.
#[derive(Debug, Parser)]
// Negative numbers reach the flags' parsers, which refuse them by name, instead of
// being taken for unknown flags.
#[command(
    name = "baton-demo",
    version,
    about,
    after_help = after_help(),
    allow_negative_numbers = true
)]
pub struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Address `/metrics` is served on: its own listener, loopback by default, never the
    /// API's (per-reason counters would tell clients what the uniform 401 hides).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_listen: SocketAddr,
    /// Where sessions live: `memory` (this process only), or one Redis
    /// (`redis://HOST:PORT/DB`, `rediss://` for TLS) or a Redis Cluster
    /// (`redis+cluster://H1:P1,H2:P2,...`, `rediss+cluster://` for TLS) shared by every
    /// server on it (forms below).
    #[arg(long, value_name = "STORE", default_value = "memory", value_parser = StoreArg::parse)]
    pub store: StoreArg,
    /// A PEM file of the certificate authorities to trust for `rediss://` and
    /// `rediss+cluster://` instead of the system's roots.
    #[arg(long, value_name = "PATH")]
    pub redis_ca_file: Option<PathBuf>,
    /// Replicas that must acknowledge every write before it is answered (Redis's
    /// WAIT, within --redis-timeout-ms; fewer: 503). 0: off, and a failover may lose
    /// the last moments' rotations, sign-ins and sign-outs (see below).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = count::<0, 100>)]
    pub redis_replicas: usize,
    /// A file holding the secret shared by every server on one Redis (at least 32
    /// bytes; one trailing newline is ignored). Default: the BATON_REDIS_SECRET
    /// environment variable.
    #[arg(long, value_name = "PATH")]
    pub redis_secret_file: Option<PathBuf>,
    /// Keep the embedded store's sessions in this directory, so restarts log nobody
    /// out (created 0700 if missing). Needs --secret-file or BATON_SECRET.
    #[arg(long, value_name = "PATH")]
    pub data_dir: Option<PathBuf>,
    /// A file holding the secret the durable store's tokens derive from (at least 32
    /// bytes; one trailing newline is ignored). Default: the BATON_SECRET environment
    /// variable.
    #[arg(long, value_name = "PATH")]
    pub secret_file: Option<PathBuf>,
    /// Prepended to every Redis key; servers sharing sessions use the same one.
    #[arg(long, default_value = "baton")]
    pub redis_prefix: String,
    /// The longest one Redis call may take before the request gets a 503, in ms.
    #[arg(long, default_value_t = 1000, value_parser = number::<1, 3_600_000>)]
    pub redis_timeout_ms: u64,
    /// How long a retired token still answers with the current one (batch window), in ms.
    #[arg(long, default_value_t = 5000, value_parser = number::<0, { u64::MAX }>)]
    pub batch_window_ms: u64,
    /// A current token presented sooner than this after a rotation does not rotate, in ms.
    #[arg(long, default_value_t = 0, value_parser = number::<0, { u64::MAX }>)]
    pub min_rotation_interval_ms: u64,
    /// How long a retired token stays usable while its successor was never presented, in ms (0: off).
    #[arg(long, default_value_t = 0, value_parser = number::<0, { u64::MAX }>)]
    pub recovery_window_ms: u64,
    /// A session expires this long after its last rotation, in seconds.
    #[arg(long, default_value_t = 14 * 24 * 3600, value_parser = number::<0, { u64::MAX }>)]
    pub token_lifespan_secs: u64,
    /// Sessions one user may hold; signing in past it ends the one expiring first.
    #[arg(long, default_value_t = 10, value_parser = count::<0, { usize::MAX }>)]
    pub max_clients_per_user: usize,
    /// What a replayed retired token does to its session.
    #[arg(long, value_enum, default_value_t = Replay::Reject)]
    pub replay_policy: Replay,
    /// A user who may sign in, as EMAIL:PASSWORD (repeatable; for local use, as the
    /// password shows in the process list: prefer --users-file).
    #[arg(long = "user", value_name = "EMAIL:PASSWORD", value_parser = parse_user)]
    pub users: Vec<UserArg>,
    /// A file of users who may sign in, one EMAIL:PASSWORD or EMAIL:$argon2id$... a line
    /// (format below). With neither this nor --user, a demo user is added if --listen
    /// is a loopback address, and the server refuses to start otherwise.
    #[arg(long, value_name = "PATH")]
    pub users_file: Option<PathBuf>,
    /// Sign-in attempts one client address may make back to back.
    #[arg(long, default_value_t = 10, value_parser = count::<1, { u32::MAX as usize }>)]
    pub sign_in_address_burst: usize,
    /// Time for one spent address attempt to come back, in ms.
    #[arg(long, default_value_t = 6000, value_parser = number::<1, 86_400_000>)]
    pub sign_in_address_refill_ms: u64,
    /// Sign-in attempts one account may receive back to back, from all addresses.
    #[arg(long, default_value_t = 30, value_parser = count::<1, { u32::MAX as usize }>)]
    pub sign_in_account_burst: usize,
    /// Time for one spent account attempt to come back, in ms.
    #[arg(long, default_value_t = 2000, value_parser = number::<1, 86_400_000>)]
    pub sign_in_account_refill_ms: u64,
    /// Addresses, and accounts, the throttle tracks one by one (about 32 bytes each);
    /// past it new ones share one allowance until old ones refill.
    #[arg(long, default_value_t = 100_000, value_parser = count::<2, 100_000_000>)]
    pub sign_in_throttle_keys: usize,
    /// How long a throttled sign-in's 429 is held back, at most, in ms (never past its
    /// Retry-After): a guessing client then waits for each answer, instead of getting
    /// as many 429s as the machine can send.
    #[arg(long, default_value_t = 1000, value_parser = number::<0, 60_000>)]
    pub sign_in_throttle_hold_ms: u64,
    /// Threads hashing passwords at once [default: one fewer than the cores, at least 1].
    #[arg(long, value_parser = count::<1, 1024>)]
    pub hash_workers: Option<usize>,
    /// Sign-ins that may wait for a hashing thread; past it, 503.
    #[arg(long, default_value_t = crate::signin::DEFAULT_QUEUE, value_parser = count::<0, 1_000_000>)]
    pub hash_queue: usize,
    /// Open connections at most; past it the longest-idle one is closed to make room
    /// (lowered to fit the open-files limit, which is raised to its hard limit).
    #[arg(long, default_value_t = conn_limit::DEFAULT_MAX, value_parser = count::<1, 10_000_000>)]
    pub max_connections: usize,
    /// Origins allowed to read responses (CORS), comma-separated; `*` for any.
    #[arg(long, default_value = "*", value_parser = Cors::parse)]
    pub allowed_origins: Cors,
    /// Log each refused credential's reason (never the credential) to stderr.
    #[arg(long, short)]
    pub verbose: bool,
}

/// A whole number from `MIN` to `MAX`; the message says which, and that it is not
/// negative when it was.
fn number<const MIN: u64, const MAX: u64>(s: &str) -> Result<u64, String> {
    in_range(s, MIN, MAX)
}

/// [`number`] as a `usize`.
fn count<const MIN: usize, const MAX: usize>(s: &str) -> Result<usize, String> {
    // `as`: usize is at most 64 bits on every target the demo builds for.
    let n = in_range(s, MIN as u64, MAX as u64)?;
    usize::try_from(n).map_err(|_| format!("expected a whole number from {MIN} to {MAX}"))
}

fn in_range(s: &str, min: u64, max: u64) -> Result<u64, String> {
    let range = || {
        if max == u64::MAX {
            format!("expected a whole number, {min} or more")
        } else {
            format!("expected a whole number from {min} to {max}")
        }
    };
    if s.trim_start().starts_with('-') {
        return Err(format!("must not be negative ({})", range()));
    }
    match s.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(range()),
    }
}

/// `--store`.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreArg {
    /// The embedded store.
    Memory,
    /// A Redis URL: one server or a cluster, plain or TLS (see [`REDIS_SCHEMES`]).
    Redis(String),
}

/// The URL schemes `--store` takes for Redis.
pub const REDIS_SCHEMES: [&str; 4] = [
    "redis://",
    "rediss://",
    "redis+cluster://",
    "rediss+cluster://",
];

impl StoreArg {
    fn parse(s: &str) -> Result<StoreArg, String> {
        if s == "memory" {
            Ok(StoreArg::Memory)
        } else if REDIS_SCHEMES.iter().any(|scheme| s.starts_with(scheme)) {
            Ok(StoreArg::Redis(s.to_owned()))
        } else {
            Err(
                "expected `memory`, `redis://HOST:PORT/DB`, `rediss://HOST:PORT/DB`, \
                 `redis+cluster://HOST:PORT,HOST:PORT,...` or `rediss+cluster://...`"
                    .to_owned(),
            )
        }
    }
}

/// Where a Redis URL points, for logs: scheme, hosts and database, without the
/// `USER:PASS@` part or a query string (either may carry a password).
pub fn redis_location(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    // The last `@`: a password may hold one (and `/`, `,`), a host never does.
    let rest = rest.rsplit_once('@').map_or(rest, |(_, hosts)| hosts);
    let rest = rest.split_once('?').map_or(rest, |(before, _)| before);
    format!("{scheme}://{rest}")
}

impl fmt::Debug for StoreArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreArg::Memory => f.write_str("Memory"),
            // The URL may carry a password, before the hosts or in its query.
            StoreArg::Redis(url) => {
                let location = redis_location(url);
                let (scheme, hosts) = location.split_once("://").unwrap_or(("redis", &location));
                let user = if url.contains('@') { "<redacted>@" } else { "" };
                let query = if url.contains('?') { "?<redacted>" } else { "" };
                write!(f, "Redis({scheme}://{user}{hosts}{query})")
            }
        }
    }
}

/// `--replay-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Replay {
    /// Refuse the request; the session lives on.
    Reject,
    /// Refuse the request and end the session: a replay is taken as a theft.
    Revoke,
}

/// One `--user`. The password is dropped once hashed; `Debug` never shows it.
#[derive(Clone)]
pub struct UserArg {
    /// The address.
    pub email: String,
    password: String,
}

impl fmt::Debug for UserArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserArg({}:<redacted>)", self.email)
    }
}

fn parse_user(s: &str) -> Result<UserArg, String> {
    // Split at the first colon: addresses have none, passwords may.
    match s.split_once(':') {
        Some((email, password)) if !email.is_empty() && !password.is_empty() => Ok(UserArg {
            email: email.to_owned(),
            password: password.to_owned(),
        }),
        _ => Err("expected EMAIL:PASSWORD, both non-empty".to_owned()),
    }
}

/// How often a Redis that did not answer at start is asked again, until it answers.
pub const PING_INTERVAL: Duration = Duration::from_millis(500);

/// Pings `store` every [`PING_INTERVAL`] until it answers, then logs that it does.
/// Requests do not wait for it: each one tries Redis by itself (and gets 503 while
/// it is away); this only tells the operator when the outage at start is over.
async fn log_when_redis_answers(store: Arc<RedisStore>, location: String) {
    let mut every = tokio::time::interval(PING_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if store.ping().await.is_ok() {
            log::info!("redis answers at {location}: serving");
            return;
        }
    }
}

/// A flag whose value the store or the user table refused.
#[derive(Debug)]
pub struct FlagError {
    /// The flag, such as `--batch-window-ms`.
    pub flag: &'static str,
    /// What is wrong with its value.
    pub message: String,
}

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid value for {}: {}", self.flag, self.message)
    }
}

impl std::error::Error for FlagError {}

/// The flag that sets a store setting, so errors name what the user typed.
fn flag_of(e: &ConfigError) -> &'static str {
    match e.setting() {
        "batch_window" => "--batch-window-ms",
        "min_rotation_interval" => "--min-rotation-interval-ms",
        "recovery_window" => "--recovery-window-ms",
        "token_lifespan" => "--token-lifespan-secs",
        "max_clients_per_user" => "--max-clients-per-user",
        // Settings the demo does not expose; not reachable from its flags.
        _ => "a store setting",
    }
}

impl Cli {
    /// Builds the embedded store and the users, whatever `--store` says. Hashing costs
    /// `cost` per password.
    pub fn state(&self, cost: HashCost) -> Result<AppState, FlagError> {
        let store = self.settings().build().map_err(|e| FlagError {
            flag: flag_of(&e),
            message: e.to_string(),
        })?;
        let mut state = AppState::new(store, self.users(cost)?);
        self.guards(&mut state);
        Ok(state)
    }

    /// Connects to the Redis at `url` (`--store`) and builds the users. Fails if a
    /// flag is out of range, the secret is missing or short, the CA file is unusable,
    /// or Redis answers but refuses the server (a password, a certificate). A Redis
    /// that does not answer within `--redis-timeout-ms` is not an error: the log says
    /// so, requests get 503 until it answers, and a task pings it every
    /// [`PING_INTERVAL`] and logs when it does.
    pub async fn redis_state(
        &self,
        url: &str,
        cost: HashCost,
    ) -> Result<AppState<RedisStore>, FlagError> {
        let users = self.users(cost)?;
        let secret = self.redis_secret()?;
        let builder = || {
            let b = RedisStore::builder(url)
                // Checked before connecting, so a bad flag is reported as such.
                .settings(self.settings())
                .secret(&secret)
                .prefix(&self.redis_prefix)
                .timeout(Duration::from_millis(self.redis_timeout_ms))
                .replicas(self.redis_replicas);
            match &self.redis_ca_file {
                Some(path) => b.ca_file(path),
                None => b,
            }
        };
        let location = redis_location(url);
        let (store, waiting) = match builder().connect().await {
            Ok(store) => (store, false),
            Err(RedisBuildError::Unavailable(_)) => {
                log::warn!("redis at {location} not reachable yet: answering 503 until it answers");
                // The same checks passed a moment ago; this touches no network.
                let store = builder()
                    .connect_lazily()
                    .map_err(|e| self.redis_flag_error(e))?;
                (store, true)
            }
            Err(e) => return Err(self.redis_flag_error(e)),
        };
        let mut state = AppState::with_backend(store, users);
        self.guards(&mut state);
        if waiting {
            tokio::spawn(log_when_redis_answers(Arc::clone(&state.store), location));
        }
        Ok(state)
    }

    /// A refusal of the Redis builder, naming the flag that set what it refused.
    fn redis_flag_error(&self, e: RedisBuildError) -> FlagError {
        let flag = match &e {
            RedisBuildError::Config(c) => flag_of(c),
            RedisBuildError::Secret => "--redis-secret-file",
            RedisBuildError::Prefix => "--redis-prefix",
            RedisBuildError::Connections => "--redis-timeout-ms",
            RedisBuildError::Tls(_) => "--redis-ca-file",
            // A certificate the CA file does not vouch for is the CA file's flag's
            // business; a refused password is the URL's. The library tells them
            // apart only in its message (rustls names the certificate).
            RedisBuildError::Rejected(why)
                if self.redis_ca_file.is_some() && why.to_lowercase().contains("certificate") =>
            {
                "--redis-ca-file"
            }
            _ => "--store",
        };
        FlagError {
            flag,
            message: e.to_string(),
        }
    }

    /// Opens the durable store in `dir` (`--data-dir`), loading every saved session,
    /// and builds the users. Fails if a flag is out of range, the secret is missing,
    /// short or not the file's, or the file is damaged.
    pub fn persistent_state(
        &self,
        dir: &std::path::Path,
        cost: HashCost,
    ) -> Result<AppState<baton::PersistentStore>, FlagError> {
        let users = self.users(cost)?;
        let fail = |flag: &'static str, message: String| FlagError { flag, message };
        let secret = match &self.secret_file {
            Some(path) => baton::Secret::from_file(path)
                .map_err(|e| fail("--secret-file", format!("{}: {e}", path.display())))?,
            None => match std::env::var_os(PERSIST_SECRET_ENV) {
                Some(v) => {
                    let mut bytes = v.into_encoded_bytes();
                    if bytes.ends_with(b"\n") {
                        bytes.pop();
                    }
                    baton::Secret::new(bytes)
                        .map_err(|e| fail("--secret-file", format!("{PERSIST_SECRET_ENV}: {e}")))?
                }
                None => {
                    return Err(fail(
                        "--secret-file",
                        format!(
                            "--data-dir needs a secret: give --secret-file PATH or set \
                             {PERSIST_SECRET_ENV} (at least {MIN_SECRET_LEN} bytes)"
                        ),
                    ))
                }
            },
        };
        let store =
            baton::PersistentStore::open(self.settings(), baton::PersistOptions::new(dir, secret))
                .map_err(|e| {
                    let flag = match &e {
                        baton::PersistError::Config(c) => flag_of(c),
                        baton::PersistError::WrongKey | baton::PersistError::SecretTooShort => {
                            "--secret-file"
                        }
                        _ => "--data-dir",
                    };
                    let mut message = e.to_string();
                    if let Some(cause) = std::error::Error::source(&e) {
                        message.push_str(&format!(": {cause}"));
                    }
                    fail(flag, message)
                })?;
        let mut state = AppState::with_backend(store, users);
        state.sweep = Some(|s: &baton::PersistentStore| s.store().sweep());
        self.guards(&mut state);
        Ok(state)
    }

    /// CORS, the sign-in throttle and pool, the connection cap from the flags, and
    /// whether the demo user was added.
    fn guards<B: baton::Backend>(&self, state: &mut AppState<B>) {
        state.cors = self.allowed_origins.clone();
        // `users` added it exactly when this holds.
        state.demo_user = self.demo_user();
        state.sign_in = Gate {
            guard: SignInGuard::new(self.throttle_policy()),
            pool: HashPool::new(
                self.hash_workers.unwrap_or_else(HashPool::default_workers),
                self.hash_queue,
            ),
            hold: Duration::from_millis(self.sign_in_throttle_hold_ms),
        };
        let max = conn_limit::fit(self.max_connections, conn_limit::open_files_limit());
        if max < self.max_connections {
            log::warn!(
                "--max-connections lowered to {max} to fit the open-files limit (ulimit -n)"
            );
        }
        state.connections = ConnLimit::new(max);
    }

    /// The sign-in throttle's policy from the flags.
    pub fn throttle_policy(&self) -> ThrottlePolicy {
        // The parsers keep bursts within 1..=u32::MAX.
        let burst = |n: usize| {
            NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN)
        };
        ThrottlePolicy {
            per_address: Allowance {
                burst: burst(self.sign_in_address_burst),
                refill: Duration::from_millis(self.sign_in_address_refill_ms),
            },
            per_account: Allowance {
                burst: burst(self.sign_in_account_burst),
                refill: Duration::from_millis(self.sign_in_account_refill_ms),
            },
            max_keys: self.sign_in_throttle_keys,
        }
    }

    /// Whether the built-in demo user is added: no user given, and a loopback
    /// `--listen`, so it never exists on a reachable server.
    pub fn demo_user(&self) -> bool {
        self.users.is_empty() && self.users_file.is_none() && self.listen.ip().is_loopback()
    }

    /// The secret from `--redis-secret-file`, else from `BATON_REDIS_SECRET`. Errors
    /// never show it.
    fn redis_secret(&self) -> Result<Vec<u8>, FlagError> {
        let fail = |message: String| FlagError {
            flag: "--redis-secret-file",
            message,
        };
        let mut secret = match &self.redis_secret_file {
            Some(path) => std::fs::read(path)
                .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?,
            None => match std::env::var_os(SECRET_ENV) {
                Some(v) => v.into_encoded_bytes(),
                None => {
                    return Err(fail(format!(
                        "a redis store needs a secret: give --redis-secret-file PATH \
                         or set {SECRET_ENV} (at least {MIN_SECRET_LEN} bytes, \
                         the same on every server)"
                    )))
                }
            },
        };
        // `echo secret > file` adds a newline that is not part of the secret.
        if secret.ends_with(b"\n") {
            secret.pop();
            if secret.ends_with(b"\r") {
                secret.pop();
            }
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(fail(format!(
                "the secret (from {}) is {} bytes; it must be at least {MIN_SECRET_LEN}",
                if self.redis_secret_file.is_some() {
                    "the file"
                } else {
                    SECRET_ENV
                },
                secret.len()
            )));
        }
        Ok(secret)
    }

    /// The decision table's settings from the flags, not yet checked.
    fn settings(&self) -> Builder<SystemClock> {
        Store::builder()
            .batch_window(Duration::from_millis(self.batch_window_ms))
            .min_rotation_interval(Duration::from_millis(self.min_rotation_interval_ms))
            .recovery_window(Duration::from_millis(self.recovery_window_ms))
            .token_lifespan(Duration::from_secs(self.token_lifespan_secs))
            .max_clients_per_user(self.max_clients_per_user)
            .replay_policy(match self.replay_policy {
                Replay::Reject => ReplayPolicy::Reject,
                Replay::Revoke => ReplayPolicy::RevokeSession,
            })
    }

    /// The users who may sign in, passwords hashed: `--users-file`'s, then `--user`'s,
    /// or the demo user (see [`Cli::demo_user`]).
    fn users(&self, cost: HashCost) -> Result<Users, FlagError> {
        let mut users = Users::new(cost);
        if let Some(path) = &self.users_file {
            let fail = |message: String| FlagError {
                flag: "--users-file",
                message: format!("{}: {message}", path.display()),
            };
            let (_, shared) =
                users_file::load(&mut users, path).map_err(|e| fail(e.to_string()))?;
            if shared {
                log::warn!(
                    "--users-file {}: readable by group or others; chmod 600 it",
                    path.display()
                );
            }
        }
        let given: Vec<(&str, &str)> = if self.demo_user() {
            vec![DEMO_USER]
        } else {
            self.users
                .iter()
                .map(|u| (u.email.as_str(), u.password.as_str()))
                .collect()
        };
        for (email, password) in given {
            users.add(email, password).map_err(|e| FlagError {
                flag: "--user",
                message: format!("{email}: {e}"),
            })?;
        }
        if users.is_empty() {
            return Err(FlagError {
                flag: "--users-file",
                message: format!(
                    "no users: give --users-file PATH or --user EMAIL:PASSWORD (the demo \
                     user is added only when --listen is a loopback address, not {})",
                    self.listen
                ),
            });
        }
        for user in users.iter().filter(|u| users.cost_differs(u)) {
            log::warn!(
                "{}: hash parameters differ from the server's ({} KiB, {} passes): its \
                 sign-ins take another time than an unknown address's",
                user.email,
                cost.memory_kib,
                cost.iterations
            );
        }
        Ok(users)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_debug_and_the_demo_user_is_only_a_fallback() {
        let cli = Cli::try_parse_from(["baton-demo", "--user", "a@example.com:s3cret:with:colons"])
            .unwrap();
        let shown = format!("{cli:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        let state = cli.state(HashCost::FAST).unwrap();
        assert!(state
            .users
            .verify("a@example.com", "s3cret:with:colons")
            .is_some());
        assert!(state.users.find(DEMO_USER.0).is_none());
        assert!(!format!("{state:?}").contains("s3cret"));

        let state = Cli::try_parse_from(["baton-demo"])
            .unwrap()
            .state(HashCost::FAST)
            .unwrap();
        assert!(state.users.verify(DEMO_USER.0, DEMO_USER.1).is_some());
    }
}
