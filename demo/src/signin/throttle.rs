//! The sign-in throttle: how many password guesses an address and an account get.
//!
//! Two GCRA limiters (`governor`), checked in order before any hash is computed:
//!
//! 1. **per client address** (an IPv6 address by its /64, which one host usually owns
//!    whole): strict, since one attacker's machine is one address;
//! 2. **per account** (the address typed, whether or not such a user exists, so a 429
//!    does not tell which accounts do): looser, and only charged for attempts the
//!    address limit let through.
//!
//! So a flood from one address spends its own allowance and never the account's: the
//! real user, signing in from elsewhere, still gets in. A flood from many addresses
//! drains the account's allowance too; the real user is then delayed, one refill
//! period at most per attempt, for as long as the flood lasts, and never longer: each
//! limiter is a delay (a token bucket refilling steadily), not a lockout.
//!
//! Memory: a limiter keeps one 8-byte hash per key, not the key, and drops keys whose
//! bucket has refilled (`retain_recent`, at most once a second while the table is over
//! half full, else once a minute). At [`ThrottlePolicy::max_keys`] keys, new keys
//! share one overflow bucket until old ones refill: a flood of distinct addresses or
//! accounts costs bounded memory and throttles itself, not the keys already known.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, MonotonicClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{HashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::StateStore;
use governor::{Quota, RateLimiter};

/// One limiter's allowance: `burst` attempts at once, then one more every `refill`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// Attempts allowed back to back.
    pub burst: NonZeroU32,
    /// Time for one spent attempt to come back.
    pub refill: Duration,
}

impl Allowance {
    /// Sustained attempts per minute.
    pub fn per_minute(self) -> f64 {
        60.0 / self.refill.as_secs_f64()
    }

    fn quota(self) -> Quota {
        // `refill` is checked non-zero when the policy is built; a zero one would
        // mean no limit, so fall back to one a second rather than none.
        Quota::with_period(self.refill)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(self.burst)
    }
}

/// Both limiters' allowances and the table size, as the flags set them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Per client address.
    pub per_address: Allowance,
    /// Per account.
    pub per_account: Allowance,
    /// Keys each limiter tracks one by one before new ones share a bucket.
    pub max_keys: usize,
}

impl Default for ThrottlePolicy {
    /// 10 guesses per address at once then 10 a minute; 30 per account at once then 30
    /// a minute; 100 000 keys each (about 3 MiB).
    fn default() -> Self {
        ThrottlePolicy {
            per_address: Allowance {
                burst: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
                refill: Duration::from_secs(6),
            },
            per_account: Allowance {
                burst: NonZeroU32::new(30).unwrap_or(NonZeroU32::MIN),
                refill: Duration::from_secs(2),
            },
            max_keys: 100_000,
        }
    }
}

/// A sign-in refused before any hash: come back after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// When the next attempt would be admitted, at the earliest.
    pub retry_after: Duration,
    /// Which limiter refused.
    pub scope: Scope,
}

/// Which allowance a throttled sign-in exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The client address's.
    Address,
    /// The account's.
    Account,
}

impl Throttled {
    /// `Retry-After` in whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

impl std::fmt::Display for Throttled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let by = match self.scope {
            Scope::Address => "address",
            Scope::Account => "account",
        };
        write!(f, "too many sign-ins for this {by}")
    }
}

impl std::error::Error for Throttled {}

/// Admits or throttles sign-in attempts. Shared by every request; `Sync`.
#[derive(Debug)]
pub struct SignInGuard<C: Clock = MonotonicClock> {
    addresses: Keyed<C>,
    accounts: Keyed<C>,
    /// Keys are hashed with a per-process random key, so nobody can aim collisions.
    hasher: RandomState,
    policy: ThrottlePolicy,
}

impl SignInGuard {
    /// A guard on the monotonic clock.
    pub fn new(policy: ThrottlePolicy) -> Self {
        SignInGuard::with_clock(policy, MonotonicClock)
    }
}

impl Default for SignInGuard {
    fn default() -> Self {
        SignInGuard::new(ThrottlePolicy::default())
    }
}

impl<C: Clock + Clone> SignInGuard<C> {
    /// A guard on `clock` (tests use governor's `FakeRelativeClock`).
    pub fn with_clock(policy: ThrottlePolicy, clock: C) -> Self {
        SignInGuard {
            addresses: Keyed::new(policy.per_address, policy.max_keys, clock.clone()),
            accounts: Keyed::new(policy.per_account, policy.max_keys, clock),
            hasher: RandomState::new(),
            policy,
        }
    }

    /// Charges one attempt to `addr` and then to `account`, or says how long to wait.
    /// An attempt the address limit refuses costs the account nothing.
    pub fn admit(&self, account: &str, addr: IpAddr) -> Result<(), Throttled> {
        self.addresses
            .check(self.hasher.hash_one(address_key(addr)))
            .map_err(|retry_after| Throttled {
                retry_after,
                scope: Scope::Address,
            })?;
        self.accounts
            .check(self.hasher.hash_one(account))
            .map_err(|retry_after| Throttled {
                retry_after,
                scope: Scope::Account,
            })
    }

    /// The policy it enforces.
    pub fn policy(&self) -> ThrottlePolicy {
        self.policy
    }

    /// Keys tracked now, per address and per account (the overflow bucket included).
    pub fn tracked(&self) -> (usize, usize) {
        (self.addresses.limiter.len(), self.accounts.limiter.len())
    }
}

/// An IPv4 address whole (an IPv4-mapped IPv6 one as IPv4), an IPv6 one by its /64.
fn address_key(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            // Bit 0 set keeps IPv6 keys apart from IPv4 ones, whose low 64 bits vary.
            None => (u128::from(v6) & !u128::from(u64::MAX)) | 1,
        },
    }
}

/// One keyed limiter over a table of bounded size.
#[derive(Debug)]
struct Keyed<C: Clock> {
    limiter: RateLimiter<u64, Capped, C, NoOpMiddleware<C::Instant>>,
    clock: C,
    /// When the table was last swept, in ns from `start`.
    swept_at: AtomicU64,
    start: C::Instant,
    max_keys: usize,
}

/// At most once a second while the table is over half full, else once a minute.
const SWEEP_BUSY: Duration = Duration::from_secs(1);
const SWEEP_IDLE: Duration = Duration::from_secs(60);

impl<C: Clock + Clone> Keyed<C> {
    fn new(allowance: Allowance, max_keys: usize, clock: C) -> Self {
        let start = clock.now();
        Keyed {
            limiter: RateLimiter::new(
                allowance.quota(),
                Capped {
                    map: HashMapStateStore::default(),
                    max_keys,
                },
                clock.clone(),
            ),
            clock,
            swept_at: AtomicU64::new(0),
            start,
            max_keys,
        }
    }

    fn check(&self, key: u64) -> Result<(), Duration> {
        self.maybe_sweep();
        self.limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    fn maybe_sweep(&self) {
        let now = self.clock.now().duration_since(self.start).as_u64();
        let last = self.swept_at.load(Ordering::Relaxed);
        let every = if self.limiter.len() > self.max_keys / 2 {
            SWEEP_BUSY
        } else {
            SWEEP_IDLE
        };
        // Relaxed: the stamp only spaces sweeps out; the table has its own lock. The
        // exchange lets one caller sweep when several find it due.
        if now.saturating_sub(last) >= Nanos::from(every).as_u64()
            && self
                .swept_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.limiter.retain_recent();
        }
    }
}

/// governor's `HashMap` state store with a cap: a key not in a full table is measured
/// in the shared [`OVERFLOW`] slot. The cap can be passed by the few callers racing
/// between the check and the insert, no more.
#[derive(Debug)]
struct Capped {
    map: HashMapStateStore<u64>,
    max_keys: usize,
}

/// The shared slot of keys that found the table full. Real keys never take it:
/// [`Capped::slot`] moves a hash that lands on it.
const OVERFLOW: u64 = 0;

impl Capped {
    fn slot(&self, key: u64) -> u64 {
        let key = key.max(1);
        let map = self.map.lock();
        // The overflow slot is one of the `max_keys`.
        if map.len() >= self.max_keys.saturating_sub(1) && !map.contains_key(&key) {
            OVERFLOW
        } else {
            key
        }
    }
}

impl StateStore for Capped {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let slot = self.slot(*key);
        self.map.measure_and_replace(&slot, f)
    }
}

impl ShrinkableKeyedStateStore<u64> for Capped {
    fn retain_recent(&self, drop_below: Nanos) {
        self.map.retain_recent(drop_below);
    }

    fn shrink_to_fit(&self) {
        self.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn policy(addr: (u32, u64), account: (u32, u64), max_keys: usize) -> ThrottlePolicy {
        let a = |(burst, secs): (u32, u64)| Allowance {
            burst: NonZeroU32::new(burst).unwrap(),
            refill: Duration::from_secs(secs),
        };
        ThrottlePolicy {
            per_address: a(addr),
            per_account: a(account),
            max_keys,
        }
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
    }

    #[test]
    fn past_the_burst_an_address_waits_one_refill_and_never_longer() {
        let clock = FakeRelativeClock::default();
        let guard = SignInGuard::with_clock(policy((3, 6), (100, 1), 100), clock.clone());
        for _ in 0..3 {
            guard.admit("ann", ip(1)).unwrap();
        }
        let t = guard.admit("ann", ip(1)).unwrap_err();
        assert_eq!(t.scope, Scope::Address);
        assert_eq!(t.retry_after, Duration::from_secs(6));
        assert_eq!(t.retry_after_secs(), 6);
        // Refused attempts do not push the wait further out: a delay, not a lockout.
        for _ in 0..50 {
            assert!(guard.admit("ann", ip(1)).is_err());
        }
        clock.advance(Duration::from_secs(6));
        guard.admit("ann", ip(1)).unwrap();
        assert!(guard.admit("ann", ip(1)).is_err());
    }

    #[test]
    fn a_flood_from_one_address_leaves_the_account_to_its_owner() {
        let clock = FakeRelativeClock::default();
        let guard = SignInGuard::with_clock(policy((5, 6), (20, 2), 100), clock.clone());
        // A minute of guessing from one address, as fast as it likes.
        let mut accepted = 0;
        for _ in 0..60 {
            for _ in 0..100 {
                accepted += u32::from(guard.admit("ann", ip(1)).is_ok());
            }
            clock.advance(Duration::from_secs(1));
        }
        assert_eq!(
            accepted,
            5 + 9,
            "the burst, then one at each of 6 s, 12 s, .. 54 s"
        );
        // The owner, from elsewhere, is admitted at once, several times.
        for _ in 0..5 {
            guard.admit("ann", ip(2)).unwrap();
        }
    }

    #[test]
    fn many_addresses_are_held_to_the_account_allowance_and_unknown_accounts_alike() {
        let clock = FakeRelativeClock::default();
        let guard = SignInGuard::with_clock(policy((5, 6), (20, 2), 1000), clock.clone());
        for account in ["ann", "nobody-by-this-name"] {
            let mut accepted = 0;
            for n in 0..200u8 {
                accepted += u32::from(guard.admit(account, ip(n)).is_ok());
            }
            assert_eq!(accepted, 20, "{account}");
            let t = guard.admit(account, ip(250)).unwrap_err();
            assert_eq!(t.scope, Scope::Account);
            assert_eq!(t.retry_after, Duration::from_secs(2));
        }
    }

    #[test]
    fn threads_racing_on_one_account_get_exactly_the_allowance() {
        let clock = FakeRelativeClock::default();
        let guard = SignInGuard::with_clock(policy((1000, 60), (25, 60), 10_000), clock);
        let accepted = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let (guard, accepted) = (&guard, &accepted);
                s.spawn(move || {
                    for _ in 0..500 {
                        if guard.admit("ann", ip(t)).is_ok() {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(accepted.into_inner(), 25);
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_and_mapped_ipv4_as_ipv4() {
        let clock = FakeRelativeClock::default();
        let guard = SignInGuard::with_clock(policy((2, 60), (100, 1), 100), clock);
        let v6 = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, last));
        guard.admit("a", v6(1)).unwrap();
        guard.admit("b", v6(2)).unwrap();
        assert!(guard.admit("c", v6(3)).is_err(), "same /64");
        guard
            .admit(
                "d",
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1)),
            )
            .unwrap();
        let v4 = Ipv4Addr::new(192, 0, 2, 1);
        guard.admit("e", IpAddr::V4(v4)).unwrap();
        guard.admit("f", IpAddr::V6(v4.to_ipv6_mapped())).unwrap();
        assert!(
            guard.admit("g", IpAddr::V4(v4)).is_err(),
            "mapped is the same host"
        );
    }

    #[test]
    fn a_flood_of_distinct_keys_keeps_the_table_bounded_and_known_keys_their_buckets() {
        let clock = FakeRelativeClock::default();
        let guard = SignInGuard::with_clock(policy((2, 1), (2, 1), 64), clock.clone());
        guard.admit("ann", ip(1)).unwrap();
        let mut overflowed = 0;
        for n in 0..10_000u32 {
            let addr = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + n));
            overflowed += u32::from(guard.admit(&format!("x{n}"), addr).is_err());
            let (a, b) = guard.tracked();
            assert!(a <= 64 && b <= 64, "{a} {b}");
        }
        assert!(
            overflowed > 9_000,
            "new keys shared one bucket: {overflowed}"
        );
        // ann's bucket was kept: one attempt left of her burst.
        guard.admit("ann", ip(1)).unwrap();
        assert!(guard.admit("ann", ip(1)).is_err());
        // Once the flood's buckets have refilled, a sweep frees their places.
        clock.advance(SWEEP_IDLE);
        guard.admit("bob", ip(2)).unwrap();
        let (a, b) = guard.tracked();
        assert!(a <= 2 && b <= 2, "swept: {a} {b}");
        guard.admit("carol", ip(3)).unwrap();
        guard.admit("carol", ip(3)).unwrap();
    }
}
