//! The one door to atomics and locks: `std` normally, `loom` under `cfg(loom)`.
//!
//! Production code imports every atomic, lock and epoch type from here, so a loom
//! model exercises exactly the orderings the real store uses.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};

/// Epoch-based reclamation. crossbeam-epoch switches itself to loom when built with
/// `--cfg crossbeam_loom` and its `loom` feature, which `Cargo.toml` enables under `cfg(loom)`.
pub(crate) mod epoch {
    pub(crate) use crossbeam_epoch::{pin, unprotected, Atomic, Guard, Owned, Shared};
}

/// Locks a writer mutex. A panic while holding it cannot leave a shard torn (every
/// writer step publishes with single atomic stores), so a poisoned lock is still usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    #[cfg(not(loom))]
    {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    #[cfg(loom)]
    {
        m.lock().unwrap()
    }
}
