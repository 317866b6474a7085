//! The command line: flags, their defaults, and turning them into an [`AppState`].

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use baton::{
    Builder, ConfigError, RedisBuildError, RedisStore, ReplayPolicy, Store, SystemClock,
    MIN_SECRET_LEN,
};
use clap::{Parser, ValueEnum};

use crate::app::AppState;
use crate::cors::Cors;
use crate::users::{HashCost, Users};

/// The address and password of the user added when no `--user` is given.
pub const DEMO_USER: (&str, &str) = ("demo@example.com", "demo-password");

/// The environment variable read for the Redis secret when `--redis-secret-file` is
/// not given.
pub const SECRET_ENV: &str = "BATON_REDIS_SECRET";

const AFTER_HELP: &str = "\
With --store redis://HOST:PORT/DB, every server started on the same Redis, with the
same secret and prefix, shares the sessions: a token rotated through one is stale on
all, and a sign-out through one ends the session on all. The secret (at least 32
bytes, e.g. `openssl rand -hex 32`) comes from --redis-secret-file or the
BATON_REDIS_SECRET environment variable; it is never logged. Redis must answer at
start; afterwards, while it does not, requests get 503 (never 401) and the server
recovers by itself when it is back.";

/// A devise_token_auth-compatible server over a baton store.
#[derive(Debug, Parser)]
#[command(name = "baton-demo", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Address `/metrics` is served on: its own listener, loopback by default, never the
    /// API's (per-reason counters would tell clients what the uniform 401 hides).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_listen: SocketAddr,
    /// Where sessions live: `memory` (this process only) or `redis://HOST:PORT/DB`
    /// (shared by every server on that Redis).
    #[arg(long, value_name = "memory|redis://HOST:PORT/DB", default_value = "memory", value_parser = StoreArg::parse)]
    pub store: StoreArg,
    /// A file holding the secret shared by every server on one Redis (at least 32
    /// bytes; one trailing newline is ignored). Default: the BATON_REDIS_SECRET
    /// environment variable.
    #[arg(long, value_name = "PATH")]
    pub redis_secret_file: Option<PathBuf>,
    /// Prepended to every Redis key; servers sharing sessions use the same one.
    #[arg(long, default_value = "baton")]
    pub redis_prefix: String,
    /// The longest one Redis call may take before the request gets a 503, in ms.
    #[arg(long, default_value_t = 1000)]
    pub redis_timeout_ms: u64,
    /// How long a retired token still answers with the current one (batch window), in ms.
    #[arg(long, default_value_t = 5000)]
    pub batch_window_ms: u64,
    /// A current token presented sooner than this after a rotation does not rotate, in ms.
    #[arg(long, default_value_t = 0)]
    pub min_rotation_interval_ms: u64,
    /// How long a retired token stays usable while its successor was never presented, in ms (0: off).
    #[arg(long, default_value_t = 0)]
    pub recovery_window_ms: u64,
    /// A session expires this long after its last rotation, in seconds.
    #[arg(long, default_value_t = 14 * 24 * 3600)]
    pub token_lifespan_secs: u64,
    /// Sessions one user may hold; signing in past it ends the one expiring first.
    #[arg(long, default_value_t = 10)]
    pub max_clients_per_user: usize,
    /// What a replayed retired token does to its session.
    #[arg(long, value_enum, default_value_t = Replay::Reject)]
    pub replay_policy: Replay,
    /// A user who may sign in, as EMAIL:PASSWORD (repeatable). Given any, no demo user is added.
    #[arg(long = "user", value_name = "EMAIL:PASSWORD", value_parser = parse_user)]
    pub users: Vec<UserArg>,
    /// Origins allowed to read responses (CORS), comma-separated; `*` for any.
    #[arg(long, default_value = "*", value_parser = Cors::parse)]
    pub allowed_origins: Cors,
    /// Log each refused credential's reason (never the credential) to stderr.
    #[arg(long, short)]
    pub verbose: bool,
}

/// `--store`.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreArg {
    /// The embedded store.
    Memory,
    /// A Redis URL.
    Redis(String),
}

impl StoreArg {
    fn parse(s: &str) -> Result<StoreArg, String> {
        if s == "memory" {
            Ok(StoreArg::Memory)
        } else if s.starts_with("redis://") || s.starts_with("rediss://") {
            Ok(StoreArg::Redis(s.to_owned()))
        } else {
            Err("expected `memory` or `redis://HOST:PORT/DB`".to_owned())
        }
    }
}

impl fmt::Debug for StoreArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreArg::Memory => f.write_str("Memory"),
            // The URL may carry a password.
            StoreArg::Redis(url) => match url.rsplit_once('@') {
                Some((_, host)) => write!(f, "Redis(<redacted>@{host})"),
                None => write!(f, "Redis({url})"),
            },
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
        state.cors = self.allowed_origins.clone();
        Ok(state)
    }

    /// Connects to the Redis at `url` (`--store`) and builds the users. Fails if a
    /// flag is out of range, the secret is missing or short, or Redis does not answer
    /// within `--redis-timeout-ms`.
    pub async fn redis_state(
        &self,
        url: &str,
        cost: HashCost,
    ) -> Result<AppState<RedisStore>, FlagError> {
        let users = self.users(cost)?;
        let secret = self.redis_secret()?;
        let store = RedisStore::builder(url)
            // Checked before connecting, so a bad flag is reported as such.
            .settings(self.settings())
            .secret(&secret)
            .prefix(&self.redis_prefix)
            .timeout(Duration::from_millis(self.redis_timeout_ms))
            .connect()
            .await
            .map_err(|e| {
                let flag = match &e {
                    RedisBuildError::Config(c) => flag_of(c),
                    RedisBuildError::Secret => "--redis-secret-file",
                    RedisBuildError::Prefix => "--redis-prefix",
                    RedisBuildError::Connections => "--redis-timeout-ms",
                    _ => "--store",
                };
                FlagError {
                    flag,
                    message: e.to_string(),
                }
            })?;
        let mut state = AppState::with_backend(store, users);
        state.cors = self.allowed_origins.clone();
        Ok(state)
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

    /// The users who may sign in, passwords hashed.
    fn users(&self, cost: HashCost) -> Result<Users, FlagError> {
        let mut users = Users::new(cost);
        let given: Vec<(&str, &str)> = if self.users.is_empty() {
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
