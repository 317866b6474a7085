//! Zeroed memory the index owns directly: an anonymous mapping of its own, so what
//! the index frees leaves the process at once whatever the global allocator keeps,
//! or the global allocator's if the system refuses the mapping (too many mappings,
//! say), so a refusal costs only the early return of memory, never a sign-in.
//!
//! Session pages (`pool.rs`) and the larger tables (`index.rs`) live here. Both were
//! on the heap once, where glibc keeps freed chunks in the middle of its heap
//! resident, so a mass expiry's memory stayed with the process.
#![allow(unsafe_code)]

use std::alloc::{handle_alloc_error, Layout};
use std::ptr::NonNull;

use memmap2::{MmapMut, MmapOptions};

/// The system page the index assumes when it gives part of a mapping back
/// (`Memory::discard`); on systems with larger pages nothing is discarded.
pub(super) const SYSTEM_PAGE: usize = 4096;

/// `len` zeroed bytes, aligned to [`SYSTEM_PAGE`].
///
/// `base` is taken once, when the memory is made: every pointer into it derives from
/// it, so no later borrow of the mapping invalidates pointers readers hold.
pub(super) struct Memory {
    pub(super) base: NonNull<u8>,
    pub(super) owner: Owner,
}

pub(super) enum Owner {
    Mapped(MmapMut),
    /// Held for its `Drop`, which frees it.
    #[allow(dead_code)]
    Heap(HeapBlock),
}

/// A block from the global allocator, freed when dropped.
pub(super) struct HeapBlock(NonNull<u8>, Layout);

impl Drop for HeapBlock {
    fn drop(&mut self) {
        // SAFETY: allocated in `Memory::zeroed` with this layout, freed only here.
        unsafe { std::alloc::dealloc(self.0.as_ptr(), self.1) }
    }
}

impl Memory {
    /// `len` zeroed bytes (`len > 0`), their system pages faulted in now if
    /// `populate`.
    ///
    /// Populate what readers may read before a writer writes it (a table): a read of
    /// an untouched page maps the shared zero page, and the writer's first write then
    /// replaces it, which interrupts every core running the process to flush its TLB.
    /// Readers felt that as a 10x p99.9 during a sweep that shrank 64 tables.
    pub(super) fn zeroed(len: usize, populate: bool) -> Memory {
        debug_assert!(len > 0);
        let mut options = MmapOptions::new();
        options.len(len);
        if populate {
            options.populate();
        }
        if let Ok(mut m) = options.map_anon() {
            if let Some(base) = NonNull::new(m.as_mut_ptr()) {
                return Memory {
                    base,
                    owner: Owner::Mapped(m),
                };
            }
        }
        let layout = match Layout::from_size_align(len, SYSTEM_PAGE) {
            Ok(layout) => layout,
            Err(_) => handle_alloc_error(Layout::new::<[u8; SYSTEM_PAGE]>()),
        };
        // SAFETY: the layout's size is not zero.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        match NonNull::new(p) {
            Some(base) => Memory {
                base,
                owner: Owner::Heap(HeapBlock(base, layout)),
            },
            None => handle_alloc_error(layout),
        }
    }

    /// Its length in bytes.
    #[cfg_attr(loom, allow(dead_code))]
    pub(super) fn len(&self) -> usize {
        match &self.owner {
            Owner::Mapped(m) => m.len(),
            Owner::Heap(h) => h.1.size(),
        }
    }

    /// Gives the system pages of `offset..offset + len` back, which read as zero
    /// afterwards (and cost a page fault when next touched). Returns whether it did:
    /// only a mapping's memory, on Linux with 4 KiB pages, outside Miri.
    ///
    /// # Safety
    /// Nothing in the range is needed any more (its contents are lost), and nobody holds
    /// a reference into it. `offset` and `len` are multiples of [`SYSTEM_PAGE`].
    pub(super) unsafe fn discard(&self, offset: usize, len: usize) -> bool {
        debug_assert!(offset.is_multiple_of(SYSTEM_PAGE) && len.is_multiple_of(SYSTEM_PAGE));
        #[cfg(all(target_os = "linux", not(miri)))]
        if let Owner::Mapped(m) = &self.owner {
            if system_page() == SYSTEM_PAGE && offset + len <= m.len() {
                // SAFETY: inside our own private anonymous mapping (in bounds, just
                // checked); the caller promises nothing there is needed. On Linux,
                // MADV_DONTNEED on such a mapping drops the pages now (the resident
                // set falls at once, unlike MADV_FREE), and they come back zeroed.
                let r = unsafe {
                    m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
                };
                return r.is_ok();
            }
        }
        let _ = (offset, len);
        false
    }
}

#[cfg(all(target_os = "linux", not(miri)))]
fn system_page() -> usize {
    use std::sync::OnceLock;
    static PAGE: OnceLock<usize> = OnceLock::new();
    // SAFETY: no preconditions.
    *PAGE.get_or_init(|| usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0))
}
