//! The builder: every setting, its default, and the ranges `build()` enforces.
//!
//! Validation is split by who reads a setting: [`Settings`], the decision table's and
//! the per-user cap, which every backend runs with, and the embedded store's own shard
//! count. The Redis backend validates the first alone and never builds a `Store`.

use std::fmt;
use std::time::Duration;

use crate::clock::{millis, Clock, SystemClock};
use crate::decision::{Policy, ReplayPolicy};
use crate::session::MAX_OFFSET_MS;

/// A setting out of range: which one, and what range it must be in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    setting: &'static str,
    requirement: String,
}

impl ConfigError {
    fn new(setting: &'static str, requirement: impl Into<String>) -> Self {
        Self {
            setting,
            requirement: requirement.into(),
        }
    }

    /// The builder method whose value is out of range, such as `"batch_window"`.
    pub fn setting(&self) -> &'static str {
        self.setting
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.setting, self.requirement)
    }
}

impl std::error::Error for ConfigError {}

/// The longest a session can live: its rotation time is packed into 36 bits of
/// milliseconds (about 795 days). With no `max_age`, sessions end there.
pub const MAX_SESSION_AGE: Duration = Duration::from_millis(MAX_OFFSET_MS);

/// The most sessions one user may hold: all of a user's sessions sit in one probe
/// chain, which sign-in walks.
pub const MAX_CLIENTS_PER_USER: usize = 256;

/// The most shards a store may have.
pub const MAX_SHARDS: usize = 1 << 16;

/// Configures a [`Store`](crate::Store). Every setting has SPEC's default (devise_token_auth's where
/// it has one):
///
/// | setting | default | range |
/// |---|---|---|
/// | [`batch_window`](Self::batch_window) | 5 s | 0 ..= `token_lifespan` |
/// | [`min_rotation_interval`](Self::min_rotation_interval) | 0 (rotate every request) | 0 ..= `token_lifespan` |
/// | [`rotation`](Self::rotation) | on | |
/// | [`recovery_window`](Self::recovery_window) | 0 (off) | 0 ..= `token_lifespan` |
/// | [`token_lifespan`](Self::token_lifespan) | 14 days | 1 s ..= [`MAX_SESSION_AGE`] |
/// | [`max_age`](Self::max_age) | none ([`MAX_SESSION_AGE`]) | 1 s ..= [`MAX_SESSION_AGE`] |
/// | [`max_clients_per_user`](Self::max_clients_per_user) | 10 | 1 ..= [`MAX_CLIENTS_PER_USER`] |
/// | [`replay_policy`](Self::replay_policy) | [`ReplayPolicy::Reject`] | |
/// | [`shards`](Self::shards) | 64 | a power of two, 1 ..= [`MAX_SHARDS`] |
///
/// Durations are kept to whole milliseconds.
#[derive(Debug, Clone)]
#[must_use]
pub struct Builder<C = SystemClock> {
    batch_window: Duration,
    min_rotation_interval: Duration,
    rotation: bool,
    recovery_window: Duration,
    token_lifespan: Duration,
    max_age: Option<Duration>,
    max_clients_per_user: usize,
    replay_policy: ReplayPolicy,
    shards: usize,
    clock: C,
}

impl Default for Builder<SystemClock> {
    fn default() -> Self {
        Self {
            batch_window: Duration::from_secs(5),
            min_rotation_interval: Duration::ZERO,
            rotation: true,
            recovery_window: Duration::ZERO,
            token_lifespan: Duration::from_secs(14 * 24 * 3600),
            max_age: None,
            max_clients_per_user: 10,
            replay_policy: ReplayPolicy::Reject,
            shards: 64,
            clock: SystemClock,
        }
    }
}

impl<C: Clock> Builder<C> {
    /// How long after a rotation the token it retired still answers `Batched`.
    pub fn batch_window(mut self, w: Duration) -> Self {
        self.batch_window = w;
        self
    }

    /// A current token presented sooner than this after the last rotation batches
    /// instead of rotating. Setting it to the batch window reproduces devise_token_auth.
    pub fn min_rotation_interval(mut self, d: Duration) -> Self {
        self.min_rotation_interval = d;
        self
    }

    /// Whether tokens rotate at all. Off, every valid request answers `Batched`.
    pub fn rotation(mut self, on: bool) -> Self {
        self.rotation = on;
        self
    }

    /// How long the retired token is still honoured while its successor has never been
    /// presented: a client whose response was lost can carry on. 0 turns it off.
    pub fn recovery_window(mut self, d: Duration) -> Self {
        self.recovery_window = d;
        self
    }

    /// A session expires this long after its last rotation.
    pub fn token_lifespan(mut self, d: Duration) -> Self {
        self.token_lifespan = d;
        self
    }

    /// A session never lives longer than this after sign-in, however often it rotates.
    pub fn max_age(mut self, d: Option<Duration>) -> Self {
        self.max_age = d;
        self
    }

    /// How many live sessions one user may hold. Signing in past it revokes the one
    /// that expires first (ties: the least recently rotated, then the oldest).
    pub fn max_clients_per_user(mut self, n: usize) -> Self {
        self.max_clients_per_user = n;
        self
    }

    /// What a replayed token does to its session.
    pub fn replay_policy(mut self, p: ReplayPolicy) -> Self {
        self.replay_policy = p;
        self
    }

    /// How many independent shards the index has (a power of two). Users are spread
    /// over shards by a keyed hash of the uid; sign-ins of one shard serialise.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n;
        self
    }

    /// Reads time from `clock` instead of the system clock.
    pub fn clock<D: Clock>(self, clock: D) -> Builder<D> {
        Builder {
            batch_window: self.batch_window,
            min_rotation_interval: self.min_rotation_interval,
            rotation: self.rotation,
            recovery_window: self.recovery_window,
            token_lifespan: self.token_lifespan,
            max_age: self.max_age,
            max_clients_per_user: self.max_clients_per_user,
            replay_policy: self.replay_policy,
            shards: self.shards,
            clock,
        }
    }

    /// The clock, for `build` (in `store.rs`).
    pub(crate) fn into_clock(self) -> C {
        self.clock
    }

    /// Checks every setting the embedded store reads.
    pub(crate) fn validate(&self) -> Result<Config, ConfigError> {
        let settings = self.check_settings()?;
        if !self.shards.is_power_of_two() || self.shards > MAX_SHARDS {
            return Err(ConfigError::new(
                "shards",
                format!(
                    "must be a power of two between 1 and {MAX_SHARDS} (got {})",
                    self.shards
                ),
            ));
        }
        Ok(Config {
            settings,
            shards: self.shards,
        })
    }

    /// Checks the settings every backend reads: the decision table's and the
    /// per-user cap (not the shard count or the clock, which only the embedded store
    /// has).
    pub(crate) fn check_settings(&self) -> Result<Settings, ConfigError> {
        let limit = MAX_OFFSET_MS;
        let ms = millis;
        let lifespan = ms(self.token_lifespan);
        if !(1000..=limit).contains(&lifespan) {
            return Err(ConfigError::new(
                "token_lifespan",
                format!(
                    "must be between 1 s and {} days (got {:?})",
                    limit / 86_400_000,
                    self.token_lifespan
                ),
            ));
        }
        let within_lifespan = |setting: &'static str, d: Duration| {
            if ms(d) > lifespan {
                Err(ConfigError::new(
                    setting,
                    format!(
                        "must be at most token_lifespan {:?} (got {:?})",
                        self.token_lifespan, d
                    ),
                ))
            } else {
                Ok(ms(d))
            }
        };
        let batch_window_ms = within_lifespan("batch_window", self.batch_window)?;
        let min_rotation_interval_ms =
            within_lifespan("min_rotation_interval", self.min_rotation_interval)?;
        let recovery_window_ms = within_lifespan("recovery_window", self.recovery_window)?;
        let max_age_ms = match self.max_age {
            None => limit,
            Some(d) if (1000..=limit).contains(&ms(d)) => ms(d),
            Some(d) => {
                return Err(ConfigError::new(
                    "max_age",
                    format!(
                        "must be between 1 s and {} days (got {d:?})",
                        limit / 86_400_000
                    ),
                ))
            }
        };
        if !(1..=MAX_CLIENTS_PER_USER).contains(&self.max_clients_per_user) {
            return Err(ConfigError::new(
                "max_clients_per_user",
                format!(
                    "must be between 1 and {MAX_CLIENTS_PER_USER} (got {})",
                    self.max_clients_per_user
                ),
            ));
        }
        Ok(Settings {
            policy: Policy {
                batch_window_ms,
                min_rotation_interval_ms,
                rotation: self.rotation,
                recovery_window_ms,
                token_lifespan_ms: lifespan,
                max_age_ms,
                replay_policy: self.replay_policy,
            },
            max_clients_per_user: self.max_clients_per_user,
        })
    }
}

/// Validated settings every backend runs with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) policy: Policy,
    pub(crate) max_clients_per_user: usize,
}

/// Validated settings of the embedded store.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub(crate) settings: Settings,
    pub(crate) shards: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(b: Builder) -> ConfigError {
        b.validate()
            .expect_err("the builder accepted an out-of-range setting")
    }

    #[test]
    fn defaults_are_specs() {
        let c = Builder::default().validate().unwrap();
        let p = c.settings.policy;
        assert_eq!(p.batch_window_ms, 5000);
        assert_eq!(p.min_rotation_interval_ms, 0);
        assert!(p.rotation);
        assert_eq!(p.recovery_window_ms, 0);
        assert_eq!(p.token_lifespan_ms, 14 * 86_400_000);
        assert_eq!(p.max_age_ms, MAX_OFFSET_MS);
        assert_eq!(p.replay_policy, ReplayPolicy::Reject);
        assert_eq!(c.settings.max_clients_per_user, 10);
        assert_eq!(c.shards, 64);
    }

    #[test]
    fn each_out_of_range_setting_is_named() {
        let b = Builder::default;
        let day = Duration::from_secs(86_400);
        let cases = [
            (
                err(b().token_lifespan(Duration::from_millis(999))),
                "token_lifespan",
            ),
            (err(b().token_lifespan(day * 800)), "token_lifespan"),
            (
                err(b().token_lifespan(day).batch_window(day * 2)),
                "batch_window",
            ),
            (
                err(b().token_lifespan(day).min_rotation_interval(day * 2)),
                "min_rotation_interval",
            ),
            (
                err(b().token_lifespan(day).recovery_window(day * 2)),
                "recovery_window",
            ),
            (err(b().max_age(Some(Duration::ZERO))), "max_age"),
            (err(b().max_age(Some(day * 800))), "max_age"),
            (err(b().max_clients_per_user(0)), "max_clients_per_user"),
            (
                err(b().max_clients_per_user(MAX_CLIENTS_PER_USER + 1)),
                "max_clients_per_user",
            ),
            (err(b().shards(0)), "shards"),
            (err(b().shards(48)), "shards"),
            (err(b().shards(MAX_SHARDS * 2)), "shards"),
        ];
        for (e, setting) in cases {
            assert_eq!(e.setting(), setting, "{e}");
            assert!(e.to_string().starts_with(setting), "{e}");
            assert!(e.to_string().contains("must be"), "{e}");
        }
    }

    #[test]
    fn backend_settings_ignore_the_shard_count() {
        let b = Builder::default().shards(3);
        assert!(b.check_settings().is_ok());
        assert_eq!(b.validate().unwrap_err().setting(), "shards");
        let bad = Builder::default().shards(3).max_clients_per_user(0);
        assert_eq!(
            bad.check_settings().unwrap_err().setting(),
            "max_clients_per_user"
        );
    }

    #[test]
    fn edges_are_accepted() {
        let day = Duration::from_secs(86_400);
        Builder::default()
            .token_lifespan(day)
            .batch_window(day)
            .min_rotation_interval(day)
            .recovery_window(day)
            .max_age(Some(Duration::from_secs(1)))
            .max_clients_per_user(MAX_CLIENTS_PER_USER)
            .shards(1)
            .validate()
            .unwrap();
        Builder::default()
            .token_lifespan(MAX_SESSION_AGE)
            .shards(MAX_SHARDS)
            .validate()
            .unwrap();
    }
}
