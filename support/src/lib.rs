//! What baton's tests and benches share that is no part of the library: a counting
//! global allocator, one copy for every binary that measures allocations.
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: baton_support::Counting = baton_support::Counting;
//!
//! fn main() {
//!     let before = baton_support::allocations();
//!     let held = baton_support::net_bytes();
//!     let v = std::hint::black_box(vec![7u8; 100]);
//!     assert_eq!(baton_support::allocations(), before + 1);
//!     assert_eq!(baton_support::net_bytes(), held + 100);
//!     drop(v);
//!     assert_eq!(baton_support::net_bytes(), held);
//! }
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

/// The system allocator, counting: allocation calls per thread, and bytes held
/// process-wide. Install it with `#[global_allocator]`; the counters read zero growth
/// if it is not installed.
pub struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}
static NET_BYTES: AtomicIsize = AtomicIsize::new(0);

/// Allocation calls (`alloc`, `alloc_zeroed`, `realloc`) made by the calling thread
/// so far: per thread, so tests running beside it do not count.
pub fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Bytes allocated and not yet freed, by every thread of the process.
pub fn net_bytes() -> isize {
    NET_BYTES.load(Ordering::Relaxed)
}

fn count(bytes: isize) {
    ALLOCATIONS.with(|c| c.set(c.get() + 1));
    // Relaxed: a sum read after the threads that changed it have been joined.
    NET_BYTES.fetch_add(bytes, Ordering::Relaxed);
}

// SAFETY: forwards every call to `System` unchanged; the bookkeeping touches only a
// const-initialised thread-local `Cell` (no allocation, no destructor) and an atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        NET_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout`, per the caller.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: as for `dealloc` and `alloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
