//! The one door to atomics, locks, epochs and loom's checks: `std` normally, `loom`
//! under `cfg(loom)`, with the same API in both builds.
//!
//! Production code imports every atomic, lock and epoch type from here, so a loom
//! model exercises exactly the orderings the real store uses. What only a model needs
//! (the [`Witness`] of a session's lifetime, the [`faults`] a model injects to show it
//! can fail) is a no-op outside loom, so no production path carries `cfg(loom)`.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};

pub(crate) use witness::Witness;

/// Epoch-based reclamation. crossbeam-epoch switches itself to loom when built with
/// `--cfg crossbeam_loom` and its `loom` feature, which `Cargo.toml` enables under `cfg(loom)`.
pub(crate) mod epoch {
    #[cfg(not(loom))]
    pub(crate) use crossbeam_epoch::pin;
    pub(crate) use crossbeam_epoch::Guard;

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

/// `n` null atomic pointers. Outside loom the memory comes zeroed from the allocator
/// (`calloc`: fresh pages for a large table), so a table of millions of slots costs no
/// pass over it when created; its pages are touched as slots fill.
#[cfg(not(loom))]
#[allow(unsafe_code)]
pub(crate) fn null_ptrs<T>(n: usize) -> Box<[AtomicPtr<T>]> {
    use std::alloc::{alloc_zeroed, handle_alloc_error, Layout};
    if n == 0 {
        return Box::new([]);
    }
    let layout = Layout::array::<AtomicPtr<T>>(n).expect("a table that fits in memory");
    // SAFETY: the layout's size is not zero (n > 0, and an AtomicPtr is not a ZST).
    let p = unsafe { alloc_zeroed(layout) }.cast::<AtomicPtr<T>>();
    if p.is_null() {
        handle_alloc_error(layout);
    }
    // SAFETY: `p` is a fresh allocation of the global allocator with the layout of
    // `[AtomicPtr<T>; n]`, which a boxed slice of that length frees with; an
    // `AtomicPtr<T>` has the size and bit validity of `*mut T`, and all-zero bits
    // are the null pointer, a valid value.
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, n)) }
}

#[cfg(loom)]
pub(crate) fn null_ptrs<T>(n: usize) -> Box<[AtomicPtr<T>]> {
    (0..n)
        .map(|_| AtomicPtr::new(std::ptr::null_mut()))
        .collect()
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

/// The keyed hash that places uids in shards and slots: randomly keyed per store, so
/// nobody outside can aim uids at one probe chain. Under loom it is fixed, because
/// loom replays executions and needs each to probe the same slots.
pub(crate) fn uid_hasher() -> ahash::RandomState {
    #[cfg(not(loom))]
    {
        ahash::RandomState::new()
    }
    #[cfg(loom)]
    {
        ahash::RandomState::with_seeds(1, 2, 3, 4)
    }
}

/// Deliberate bugs a loom model switches on to show that it catches them. A model
/// that passes with its bug injected proves nothing, so each model has a twin that
/// injects one and must panic.
///
/// Outside loom no fault is ever active: `inject` does nothing and `active` is a
/// constant `false` the compiler folds away. The crate root re-exports this module,
/// hidden, so `tests/loom.rs` can reach it; it is no part of the API.
///
/// The switch is thread-local: loom runs every thread of a model as a coroutine on
/// the test's own OS thread, so the model sees it and tests running beside it do not.
pub mod faults {
    /// One deliberate bug.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Fault {
        /// A session's compare-and-swap loads, compares and stores instead.
        SplitCas,
        /// A `Batched` answer re-reads the state word after deciding, and hands out
        /// the token of what it read.
        TornSnapshot,
        /// An unlinked session counts as freed at once, as if retired without waiting
        /// for readers to unpin.
        EarlyFree,
        /// A migration publishes the new table before naming the old one, so a
        /// reader can see the new table with no old one while sessions are unmoved.
        TableBeforeOld,
    }

    #[cfg(loom)]
    std::thread_local! {
        static ACTIVE: std::cell::Cell<Option<Fault>> = const { std::cell::Cell::new(None) };
    }

    /// Switches `fault` on (or every fault off) for models run from this thread.
    /// Has no effect outside loom.
    pub fn inject(fault: Option<Fault>) {
        #[cfg(loom)]
        ACTIVE.with(|a| a.set(fault));
        #[cfg(not(loom))]
        let _ = fault;
    }

    /// Whether `fault` is switched on; always `false` outside loom.
    #[inline(always)]
    pub(crate) fn active(fault: Fault) -> bool {
        #[cfg(loom)]
        {
            ACTIVE.with(|a| a.get() == Some(fault))
        }
        #[cfg(not(loom))]
        {
            let _ = fault;
            false
        }
    }
}

/// Loom's witness of a session's lifetime: every read of the session is a read of
/// `cell`, freeing it is a write, so loom reports a read that does not happen before
/// the free; `track` reports a session never freed at all. Outside loom it is empty
/// and every method is a no-op.
#[cfg(loom)]
mod witness {
    use super::faults::{self, Fault};

    pub(crate) struct Witness {
        cell: loom::cell::UnsafeCell<()>,
        _track: loom::alloc::Track<()>,
    }

    // SAFETY: the cell holds `()`, so there is no data to race on; its accesses only
    // record, for loom to check, who touched the session when.
    #[allow(unsafe_code)]
    unsafe impl Sync for Witness {}

    impl Witness {
        pub(crate) fn new() -> Self {
            Witness {
                cell: loom::cell::UnsafeCell::new(()),
                _track: loom::alloc::Track::new(()),
            }
        }

        /// The session is read.
        pub(crate) fn read(&self) {
            self.cell.with(|_| ());
        }

        /// The index unlinked the session; under the `EarlyFree` fault it counts as
        /// freed right here.
        pub(crate) fn unlinked(&self) {
            if faults::active(Fault::EarlyFree) {
                self.free();
            }
        }

        fn free(&self) {
            self.cell.with_mut(|_| ());
        }
    }

    impl Drop for Witness {
        fn drop(&mut self) {
            if !faults::active(Fault::EarlyFree) {
                self.free();
            }
        }
    }
}

#[cfg(not(loom))]
mod witness {
    /// Outside loom: nothing to record.
    pub(crate) struct Witness;

    impl Witness {
        #[inline(always)]
        pub(crate) fn new() -> Self {
            Witness
        }

        #[inline(always)]
        pub(crate) fn read(&self) {}

        #[inline(always)]
        pub(crate) fn unlinked(&self) {}
    }
}
