//! Sign-in that cannot take the server down: attempts are throttled per address and
//! per account before any hash ([`SignInGuard`]), and the hash runs off the runtime on
//! a bounded pool ([`HashPool`]). [`Gate::attempt`] is the whole step a route takes
//! between reading the body and issuing a session.
//!
//! # Decisions where SPEC and the issue are silent
//! - The client address is the TCP peer's; `X-Forwarded-For` is not read, since any
//!   client can write it. Behind a proxy every client shares the proxy's allowance.
//! - An account is the address as typed, hashed with a per-process key: a guessed
//!   address that exists and one that does not are throttled alike, and the table
//!   holds no addresses. Account keys are only made for attempts their client address
//!   was allowed, so filling the account table takes many addresses.
//! - Throttled attempts are answered 429 only after a hold ([`Gate::hold`]); a full
//!   pool's 503 is answered at once, with `Retry-After: 1`.
//! - The pool's default is one worker fewer than the cores, so a burst of hashes
//!   always leaves a core to the runtime; its queue holds 16.

mod pool;
mod throttle;

use std::net::IpAddr;
use std::time::Duration;

pub use pool::{Busy, HashPool};
pub use throttle::{Allowance, Scope, SignInGuard, ThrottlePolicy, Throttled};

use crate::users::{User, Users};

/// The 429's message, in devise's error shape.
pub const THROTTLED: &str = "Too many sign-in attempts. Please try again later.";
/// The 503's message when the hashing queue is full.
pub const BUSY: &str = "Too many sign-ins at once. Please try again shortly.";

/// The throttle and the pool, shared by every sign-in.
#[derive(Debug)]
pub struct Gate {
    /// Admits attempts.
    pub guard: SignInGuard,
    /// Checks passwords.
    pub pool: HashPool,
    /// How long a throttled attempt's 429 is held back, at most (and never past its
    /// `Retry-After`). A guessing client waits for each answer before its next guess,
    /// so this caps each of its connections at one guess per hold instead of as many
    /// 429s as the machine can answer; the held request does not count as busy for
    /// the connection cap.
    pub hold: Duration,
}

/// The default [`Gate::hold`].
pub const DEFAULT_HOLD: Duration = Duration::from_secs(1);

impl Default for Gate {
    /// [`ThrottlePolicy::default`], a pool of [`HashPool::default_workers`] with
    /// [`DEFAULT_QUEUE`] places to wait, and 429s held [`DEFAULT_HOLD`].
    fn default() -> Self {
        Gate {
            guard: SignInGuard::default(),
            pool: HashPool::new(HashPool::default_workers(), DEFAULT_QUEUE),
            hold: DEFAULT_HOLD,
        }
    }
}

/// Sign-ins that may wait for a hashing worker: at tens of ms a hash, a wait well
/// under a second on one worker.
pub const DEFAULT_QUEUE: usize = 16;

/// Why an attempt got no answer on its password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Past an allowance: 429 with `Retry-After`; no hash was computed.
    Throttled(Throttled),
    /// The hashing queue is full: 503 with `Retry-After`.
    Busy,
}

impl Gate {
    /// How long to hold back the 429 of `t`.
    pub fn hold_for(&self, t: &Throttled) -> Duration {
        self.hold.min(t.retry_after)
    }

    /// Admits the attempt from `addr` on `email`, then checks the password on the
    /// pool: the user if it is theirs, `None` if not (an unknown address costs and
    /// throttles exactly as a known one).
    pub async fn attempt(
        &self,
        users: &Users,
        addr: IpAddr,
        email: String,
        password: String,
    ) -> Result<Option<User>, Refused> {
        self.guard.admit(&email, addr).map_err(Refused::Throttled)?;
        self.pool
            .verify(users, email, password)
            .await
            .map_err(|Busy| Refused::Busy)
    }
}
