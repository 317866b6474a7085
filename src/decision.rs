//! The decision table of `authenticate`, as one pure function.
//!
//! The store, the benchmark's contenders and the test models all call [`decide`], so
//! they differ only in how they keep state and match tokens, never in what they answer.
//! Rows, in the order SPEC §2 lists them:
//!
//! | presented | condition | decision |
//! |---|---|---|
//! | any | now >= expiry | [`Decision::Expired`] (remove the session) |
//! | `T(g)` | rotation off, or now < rotated_at + min_rotation_interval | [`Decision::Batch`] |
//! | `T(g)` | otherwise | [`Decision::Rotate`] |
//! | `T(g-1)` | now < rotated_at + batch_window | [`Decision::Batch`] |
//! | `T(g-1)` | now < rotated_at + recovery_window and `T(g)` never presented | [`Decision::Batch`] |
//! | `T(g-1)` or older (any age) | otherwise | [`Decision::Replayed`] |
//! | `T(g+k)`, 1 <= k <= [`MAX_AHEAD`], rotation on | | [`Decision::Rotate`] to `g+k+1` (continues a chain a restart lost) |
//! | `T(g+k)`, any other k | | [`Decision::InvalidToken`] |
//! | anything else | | [`Decision::InvalidToken`] |
//!
//! "No such session" is the caller's row: it needs no state to decide.
//!
//! A leaf: it imports nothing of the crate, so the table can be read, tested and
//! reused (by the model, the benchmark's contenders, the fuzz targets) on its own.

/// How far ahead of a session's generation a genuine token may be and still be
/// accepted: `T(g+k)` for `1 <= k <= MAX_AHEAD` continues the session from `g+k`.
///
/// Only the store mints tokens, so a genuine token ahead of the session exists only
/// when the store lost rotations: a durable store restored from a checkpoint that
/// lagged its clients (SPEC §5). Nobody else can produce one (tokens are a PRF of a
/// secret key), so the bound costs nothing in security, and checking costs one block
/// whatever `k` is (the token carries its generation). A durable store checkpoints a
/// session long before it runs this far ahead (see the `persist` feature's docs).
pub const MAX_AHEAD: u64 = 1024;

/// What a replayed token (`T(g-1)` after its window, or an older genuine one) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ReplayPolicy {
    /// Answer `Replayed`; the session lives on (devise_token_auth's behaviour).
    #[default]
    Reject,
    /// Answer `Replayed` and revoke the session: a replay is taken as a stolen token.
    RevokeSession,
}

/// The settings the table reads, in milliseconds: what
/// [`Store::policy`](crate::Store::policy) reports. Built only by the
/// [`Builder`](crate::Builder), which checks the ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Policy {
    /// How long after a rotation the retired token still batches (`W`).
    pub batch_window_ms: u64,
    /// A current token presented sooner than this after the last rotation batches.
    pub min_rotation_interval_ms: u64,
    /// Whether a current token ever rotates.
    pub rotation: bool,
    /// How long the retired token is honoured while its successor is unused (0: off).
    pub recovery_window_ms: u64,
    /// Expiry is the last rotation plus this.
    pub token_lifespan_ms: u64,
    /// Expiry never passes creation plus this.
    pub max_age_ms: u64,
    /// What a replayed token does to its session.
    pub replay_policy: ReplayPolicy,
}

/// What the table needs to know of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionState {
    /// `g`: how many rotations the session has had.
    pub generation: u64,
    /// When the session was issued, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// When the current token was minted, ms since the Unix epoch.
    pub rotated_at_ms: u64,
    /// Whether `T(g)` has been presented since it was minted.
    pub successor_used: bool,
}

/// Which of the session's tokens the presented one is (the token matched against
/// the session's chain, not the request's credentials).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMatch {
    /// `T(g)`.
    Current,
    /// `T(g-1)`.
    Previous,
    /// A genuine token older than `T(g-1)`, of any age.
    Older,
    /// A genuine token `by` generations ahead of `T(g)`: refused as invalid today; a
    /// session restored from an older checkpoint would accept a small `by`.
    Ahead {
        /// How many generations ahead.
        by: u64,
    },
    /// Not a token of this session, or not a token at all.
    Unrecognised,
}

/// What to answer and how the session changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Answer `Expired` and remove the session.
    Expired,
    /// Answer `Rotated(T(g+1))` and move the session to this state.
    Rotate(SessionState),
    /// Answer `Batched(T(g))`. With `mark_used`, first record that `T(g)` has been
    /// presented (only the recovery window reads that).
    Batch {
        /// Set the session's successor-used flag.
        mark_used: bool,
    },
    /// Answer `Replayed`; with `revoke`, the session is revoked too.
    Replayed {
        /// Revoke the session (the `RevokeSession` replay policy).
        revoke: bool,
    },
    /// Answer `InvalidToken`; nothing changes.
    InvalidToken,
}

impl Policy {
    /// The instant the session expires, ms since the Unix epoch.
    #[inline]
    pub fn expiry_ms(&self, s: &SessionState) -> u64 {
        s.rotated_at_ms
            .saturating_add(self.token_lifespan_ms)
            .min(s.created_at_ms.saturating_add(self.max_age_ms))
    }
}

/// The decision table: one session, one presented token, one instant.
#[inline]
pub fn decide(policy: &Policy, s: &SessionState, presented: TokenMatch, now_ms: u64) -> Decision {
    if now_ms >= policy.expiry_ms(s) {
        return Decision::Expired;
    }
    let since_rotation = now_ms.saturating_sub(s.rotated_at_ms);
    let replayed = Decision::Replayed {
        revoke: policy.replay_policy == ReplayPolicy::RevokeSession,
    };
    match presented {
        TokenMatch::Current => {
            if !policy.rotation || since_rotation < policy.min_rotation_interval_ms {
                Decision::Batch {
                    mark_used: policy.recovery_window_ms > 0 && !s.successor_used,
                }
            } else {
                Decision::Rotate(SessionState {
                    generation: s.generation + 1,
                    created_at_ms: s.created_at_ms,
                    // A clock that stepped back never moves the rotation (or expiry) back.
                    rotated_at_ms: now_ms.max(s.rotated_at_ms),
                    successor_used: false,
                })
            }
        }
        TokenMatch::Previous if since_rotation < policy.batch_window_ms => {
            Decision::Batch { mark_used: false }
        }
        TokenMatch::Previous if since_rotation < policy.recovery_window_ms && !s.successor_used => {
            Decision::Batch { mark_used: false }
        }
        TokenMatch::Previous | TokenMatch::Older => replayed,
        // The chain went on past what this state knows: continue from `T(g+by)` as if
        // it were current, and rotate even inside `min_rotation_interval`, since the
        // rotation time of `g+by` was lost with it.
        TokenMatch::Ahead { by } if by <= MAX_AHEAD && policy.rotation => {
            Decision::Rotate(SessionState {
                generation: s.generation + by + 1,
                created_at_ms: s.created_at_ms,
                rotated_at_ms: now_ms.max(s.rotated_at_ms),
                successor_used: false,
            })
        }
        TokenMatch::Ahead { .. } | TokenMatch::Unrecognised => Decision::InvalidToken,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1000;

    fn policy() -> Policy {
        Policy {
            batch_window_ms: 5 * SEC,
            min_rotation_interval_ms: 0,
            rotation: true,
            recovery_window_ms: 0,
            token_lifespan_ms: 100 * SEC,
            max_age_ms: u64::MAX,
            replay_policy: ReplayPolicy::Reject,
        }
    }

    fn state(g: u64, rotated: u64) -> SessionState {
        SessionState {
            generation: g,
            created_at_ms: 0,
            rotated_at_ms: rotated,
            successor_used: false,
        }
    }

    #[test]
    fn expiry_is_checked_before_the_token() {
        let p = policy();
        for presented in [TokenMatch::Current, TokenMatch::Unrecognised] {
            assert_eq!(
                decide(&p, &state(3, 0), presented, 100 * SEC),
                Decision::Expired
            );
        }
        assert_ne!(
            decide(&p, &state(3, 0), TokenMatch::Current, 100 * SEC - 1),
            Decision::Expired
        );
    }

    #[test]
    fn expiry_is_capped_by_max_age() {
        let p = Policy {
            max_age_ms: 30 * SEC,
            ..policy()
        };
        assert_eq!(p.expiry_ms(&state(1, 20 * SEC)), 30 * SEC);
        assert_eq!(p.expiry_ms(&state(1, 0)), 30 * SEC);
        let long = Policy {
            max_age_ms: 1000 * SEC,
            ..policy()
        };
        assert_eq!(long.expiry_ms(&state(1, 20 * SEC)), 120 * SEC);
    }

    #[test]
    fn current_rotates_and_keeps_rotation_time_monotonic() {
        let p = policy();
        let Decision::Rotate(next) = decide(&p, &state(4, 10 * SEC), TokenMatch::Current, 12 * SEC)
        else {
            panic!("expected a rotation");
        };
        assert_eq!((next.generation, next.rotated_at_ms), (5, 12 * SEC));
        // The clock stepped back: the rotation time stays where it was.
        let Decision::Rotate(back) = decide(&p, &state(4, 10 * SEC), TokenMatch::Current, 9 * SEC)
        else {
            panic!("expected a rotation");
        };
        assert_eq!(back.rotated_at_ms, 10 * SEC);
    }

    #[test]
    fn current_batches_inside_min_interval_or_with_rotation_off() {
        let p = Policy {
            min_rotation_interval_ms: 5 * SEC,
            ..policy()
        };
        assert_eq!(
            decide(&p, &state(1, 10 * SEC), TokenMatch::Current, 14_999),
            Decision::Batch { mark_used: false }
        );
        assert!(matches!(
            decide(&p, &state(1, 10 * SEC), TokenMatch::Current, 15 * SEC),
            Decision::Rotate(_)
        ));
        let off = Policy {
            rotation: false,
            ..policy()
        };
        assert_eq!(
            decide(&off, &state(1, 0), TokenMatch::Current, 50 * SEC),
            Decision::Batch { mark_used: false }
        );
        let recovering = Policy {
            rotation: false,
            recovery_window_ms: SEC,
            ..policy()
        };
        assert_eq!(
            decide(&recovering, &state(1, 0), TokenMatch::Current, 50 * SEC),
            Decision::Batch { mark_used: true }
        );
    }

    #[test]
    fn previous_batches_inside_the_window_then_is_replayed() {
        let p = policy();
        assert_eq!(
            decide(&p, &state(2, 10 * SEC), TokenMatch::Previous, 14_999),
            Decision::Batch { mark_used: false }
        );
        assert_eq!(
            decide(&p, &state(2, 10 * SEC), TokenMatch::Previous, 15 * SEC),
            Decision::Replayed { revoke: false }
        );
        let revoking = Policy {
            replay_policy: ReplayPolicy::RevokeSession,
            ..policy()
        };
        assert_eq!(
            decide(&revoking, &state(2, 10 * SEC), TokenMatch::Older, 11 * SEC),
            Decision::Replayed { revoke: true }
        );
    }

    #[test]
    fn recovery_window_honours_previous_only_while_successor_unused() {
        let p = Policy {
            recovery_window_ms: 60 * SEC,
            ..policy()
        };
        let unused = state(2, 10 * SEC);
        let used = SessionState {
            successor_used: true,
            ..unused
        };
        assert_eq!(
            decide(&p, &unused, TokenMatch::Previous, 69_999),
            Decision::Batch { mark_used: false }
        );
        assert_eq!(
            decide(&p, &unused, TokenMatch::Previous, 70 * SEC),
            Decision::Replayed { revoke: false }
        );
        assert_eq!(
            decide(&p, &used, TokenMatch::Previous, 20 * SEC),
            Decision::Replayed { revoke: false }
        );
        // Inside W the successor's use does not matter.
        assert_eq!(
            decide(&p, &used, TokenMatch::Previous, 12 * SEC),
            Decision::Batch { mark_used: false }
        );
    }

    #[test]
    fn unrecognised_and_far_ahead_are_invalid() {
        for presented in [
            TokenMatch::Unrecognised,
            TokenMatch::Ahead { by: MAX_AHEAD + 1 },
            TokenMatch::Ahead {
                by: u64::from(u32::MAX),
            },
        ] {
            assert_eq!(
                decide(&policy(), &state(0, 0), presented, 1),
                Decision::InvalidToken
            );
        }
        let off = Policy {
            rotation: false,
            ..policy()
        };
        assert_eq!(
            decide(&off, &state(0, 0), TokenMatch::Ahead { by: 1 }, 1),
            Decision::InvalidToken
        );
    }

    #[test]
    fn ahead_within_the_bound_continues_from_there() {
        let p = Policy {
            min_rotation_interval_ms: 50 * SEC,
            ..policy()
        };
        for by in [1, 2, MAX_AHEAD] {
            let Decision::Rotate(next) =
                decide(&p, &state(7, 10 * SEC), TokenMatch::Ahead { by }, 11 * SEC)
            else {
                panic!("expected a rotation for by={by}");
            };
            assert_eq!(next.generation, 7 + by + 1);
            assert_eq!(next.rotated_at_ms, 11 * SEC);
            assert!(!next.successor_used);
        }
        // Still expired first.
        assert_eq!(
            decide(&p, &state(7, 0), TokenMatch::Ahead { by: 1 }, 100 * SEC),
            Decision::Expired
        );
    }
}
