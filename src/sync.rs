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
    #[cfg(not(loom))]
    pub(crate) use crossbeam_epoch::pin;
    pub(crate) use crossbeam_epoch::{unprotected, Atomic, Guard, Owned, Shared};

    /// Under loom, every pin registers afresh with a collector that lives for one
    /// execution, instead of using a thread-local participant of the global one:
    /// when a model fails, loom tears the execution down first and the thread-locals
    /// after, and a participant's destructor then touches loom atomics with no
    /// execution, panics during the unwind and aborts the whole test binary. Garbage
    /// also reaches the shared queue at every unpin, so models see it collected.
    #[cfg(loom)]
    pub(crate) fn pin() -> Guard {
        loom::lazy_static! {
            static ref COLLECTOR: crossbeam_epoch::Collector = crossbeam_epoch::Collector::new();
        }
        COLLECTOR.register().pin()
    }
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

/// Deliberate bugs a loom model switches on to show that it catches them. A model
/// that passes with its bug injected proves nothing, so each model has a twin that
/// injects one and must panic.
///
/// The switch is thread-local: loom runs every thread of a model as a coroutine on
/// the test's own OS thread, so the model sees it and tests running beside it do not.
#[cfg(loom)]
pub mod faults {
    use std::cell::Cell;

    /// One deliberate bug.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Fault {
        /// `Session::cas` loads, compares and stores instead of compare-and-swapping.
        SplitCas,
        /// A `Batched` answer re-reads the state word after deciding, and hands out
        /// the token of what it read.
        TornSnapshot,
        /// An unlinked session counts as freed at once, as if retired without waiting
        /// for readers to unpin.
        EarlyFree,
    }

    std::thread_local! {
        static ACTIVE: Cell<Option<Fault>> = const { Cell::new(None) };
    }

    /// Switches `fault` on (or every fault off) for models run from this thread.
    pub fn inject(fault: Option<Fault>) {
        ACTIVE.with(|a| a.set(fault));
    }

    pub(crate) fn active(fault: Fault) -> bool {
        ACTIVE.with(|a| a.get() == Some(fault))
    }
}

/// Loom's witness of a session's lifetime: every read of the session is a read of
/// `cell`, freeing it is a write, so loom reports a read that does not happen before
/// the free; `track` reports a session never freed at all.
#[cfg(loom)]
pub(crate) struct Witness {
    cell: loom::cell::UnsafeCell<()>,
    _track: loom::alloc::Track<()>,
}

// SAFETY: the cell holds `()`, so there is no data to race on; its accesses only
// record, for loom to check, who touched the session when.
#[cfg(loom)]
unsafe impl Sync for Witness {}

#[cfg(loom)]
impl Witness {
    pub(crate) fn new() -> Self {
        Witness {
            cell: loom::cell::UnsafeCell::new(()),
            _track: loom::alloc::Track::new(()),
        }
    }

    pub(crate) fn read(&self) {
        self.cell.with(|_| ());
    }

    pub(crate) fn free(&self) {
        self.cell.with_mut(|_| ());
    }
}
