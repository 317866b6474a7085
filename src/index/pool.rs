//! A shard's sessions, kept in pages of the shard's own (writer lock only).
//!
//! Why not the global allocator: a mass expiry frees most of a million sessions at
//! once, and glibc's malloc keeps the freed chunks resident (only `malloc_trim`
//! gives back free pages in the middle of its heap), so the resident set stayed near
//! its peak. Here every page is an anonymous mapping of its own, set aside when its
//! last session is freed and unmapped with its neighbours soon after ([`EmptyPages`]:
//! at the end of a sweep, or a batch at a time by sign-ins and sign-outs), with no
//! trim and whatever the global allocator.
//!
//! A page holds [`SLOTS`] sessions. Its free slots form a list threaded through the
//! slots themselves, and slots never used yet are taken in order, so a page's memory
//! is touched only as it fills. Sign-ins fill the current page; when it is full they
//! take the most recent page that got a slot back, else a new one. Sessions signed in
//! together share pages, so sessions that expire together (the usual mass expiry)
//! empty whole pages. A page emptied while it is the current one is kept, so a shard
//! that signs in and out around a page boundary does not map and unmap each time.
//!
//! A slot is handed out only after its previous session was freed, which the index
//! does only once no reader can hold it (the seals of `index.rs`); pages are
//! unmapped only when they hold no session. So readers never see a reused slot or a
//! missing page.
#![allow(unsafe_code)]

use std::alloc::{handle_alloc_error, Layout};
use std::collections::BTreeMap;
use std::mem::{align_of, size_of};
use std::ptr::NonNull;

use memmap2::MmapMut;

use crate::session::Session;

/// Bytes a page maps: a small multiple of the system's page, so a shard's partly
/// used last page costs little, and few enough mappings that ten million sessions
/// (about 10 000 pages) stay far below Linux's default limit of 65 530.
const PAGE_BYTES: usize = 64 * 1024;
/// Sessions per page.
const SLOTS: u32 = (PAGE_BYTES / size_of::<Session>()) as u32;
/// The end of a page's free list.
const END: u32 = u32::MAX;

const _: () = assert!(SLOTS >= 16 && align_of::<Session>() >= align_of::<u32>());

/// A page's memory: a mapping of its own, or the global allocator's if the system
/// refused the mapping (too many mappings, say), so a refusal costs only the early
/// return of memory, never a sign-in.
///
/// `base` is taken once, when the page is made: every slot pointer derives from it,
/// so no later borrow of the mapping invalidates pointers readers hold.
struct Memory {
    base: NonNull<u8>,
    owner: Owner,
}

enum Owner {
    Mapped(MmapMut),
    /// Held for its `Drop`, which frees the page.
    #[allow(dead_code)]
    Heap(HeapPage),
}

/// A page from the global allocator, freed when dropped.
struct HeapPage(NonNull<u8>);

impl Drop for HeapPage {
    fn drop(&mut self) {
        // SAFETY: allocated in `Memory::new` with this layout, freed only here.
        unsafe { std::alloc::dealloc(self.0.as_ptr(), HEAP_PAGE) }
    }
}

/// The layout of a page taken from the global allocator.
const HEAP_PAGE: Layout = match Layout::from_size_align(PAGE_BYTES, 4096) {
    Ok(layout) => layout,
    Err(_) => panic!("a page is a power of two"),
};

impl Memory {
    fn new() -> Memory {
        if let Ok(mut m) = MmapMut::map_anon(PAGE_BYTES) {
            if let Some(base) = NonNull::new(m.as_mut_ptr()) {
                return Memory {
                    base,
                    owner: Owner::Mapped(m),
                };
            }
        }
        // SAFETY: the layout's size is not zero.
        let p = unsafe { std::alloc::alloc(HEAP_PAGE) };
        match NonNull::new(p) {
            Some(base) => Memory {
                base,
                owner: Owner::Heap(HeapPage(base)),
            },
            None => handle_alloc_error(HEAP_PAGE),
        }
    }
}

/// Emptied pages, given back to the system when this drops: adjacent mappings with
/// one `munmap` each run. Each unmapping interrupts the other cores running the
/// process to flush their TLBs, which readers felt as a 10x p99.9 when a sweep
/// unmapped pages one by one; a sweep's empty pages mostly lie side by side (pages
/// are mapped in turn, across shards), so a run is one interruption.
#[derive(Default)]
pub(crate) struct EmptyPages(Vec<Memory>);

impl Drop for EmptyPages {
    fn drop(&mut self) {
        #[cfg(all(unix, not(miri)))]
        {
            let mut mapped: Vec<usize> = Vec::new();
            for m in self.0.drain(..) {
                match m.owner {
                    Owner::Mapped(map) => {
                        mapped.push(m.base.as_ptr() as usize);
                        // Unmapped below, with its neighbours.
                        std::mem::forget(map);
                    }
                    heap => drop(heap),
                }
            }
            mapped.sort_unstable();
            let mut runs = mapped.into_iter().peekable();
            while let Some(start) = runs.next() {
                let mut end = start + PAGE_BYTES;
                while runs.next_if_eq(&end).is_some() {
                    end += PAGE_BYTES;
                }
                // SAFETY: `start..end` is a run of whole mappings of PAGE_BYTES each,
                // made by `map_anon` and forgotten above, holding no session; nothing
                // refers to them any more.
                let _ = unsafe { libc::munmap(start as *mut libc::c_void, end - start) };
            }
        }
    }
}

struct Page {
    memory: Memory,
    /// The first slot of the free list, or `END`.
    free: u32,
    /// Slots from this one on were never used.
    fresh: u32,
    /// Sessions in the page.
    used: u32,
    /// Whether the pool's `open` list holds this page.
    listed: bool,
}

impl Page {
    fn has_room(&self) -> bool {
        self.free != END || self.fresh < SLOTS
    }

    fn slot(&self, i: u32) -> NonNull<Session> {
        debug_assert!(i < SLOTS);
        // SAFETY: in bounds: `i < SLOTS` slots of `size_of::<Session>()` fit in the
        // page, whose base is aligned to the system page.
        unsafe { self.memory.base.add(i as usize * size_of::<Session>()) }.cast()
    }
}

/// One shard's pages. Its owner (the index, under the shard's writer lock) frees a
/// session only when no reader can still reach it.
pub(super) struct Pool {
    /// By base address, to find a freed session's page.
    pages: BTreeMap<usize, Page>,
    /// Pages that got a slot back while not current, most recent last. May hold
    /// addresses of pages unmapped since, which are skipped (`Page::listed`).
    open: Vec<usize>,
    /// The page sign-ins fill.
    current: Option<usize>,
    /// Pages emptied and not yet given back (`Pool::take_empty`).
    empty: Vec<Memory>,
}

// SAFETY: the pool owns its pages and the sessions in them, and `Session` is `Send`
// and `Sync`; only the holder of the shard's writer lock touches the pool.
unsafe impl Send for Pool {}

impl Pool {
    pub(super) fn new() -> Self {
        Pool {
            pages: BTreeMap::new(),
            open: Vec::new(),
            current: None,
            empty: Vec::new(),
        }
    }

    /// Bytes of pages held, the emptied ones not yet given back included.
    pub(super) fn bytes(&self) -> usize {
        (self.pages.len() + self.empty.len()) * PAGE_BYTES
    }

    /// Moves `session` into a free slot.
    pub(super) fn alloc(&mut self, session: Session) -> NonNull<Session> {
        let page = self.page_with_room();
        let i = if page.free != END {
            let i = page.free;
            // SAFETY: a free slot holds the next free slot's index (`free` wrote it).
            page.free = unsafe { page.slot(i).cast::<u32>().read() };
            i
        } else {
            page.fresh += 1;
            page.fresh - 1
        };
        page.used += 1;
        let p = page.slot(i);
        // SAFETY: `p` is an aligned, unused slot of a live page.
        unsafe { p.write(session) };
        p
    }

    /// The current page, or another with room made current.
    fn page_with_room(&mut self) -> &mut Page {
        let current = self
            .current
            .filter(|b| self.pages.get(b).is_some_and(Page::has_room));
        let base = match current {
            Some(b) => b,
            None => self.reopen().unwrap_or_else(|| self.map()),
        };
        self.current = Some(base);
        match self.pages.get_mut(&base) {
            Some(page) => page,
            // `base` is in `pages`: found there above, or just inserted.
            None => unreachable!("the current page is mapped"),
        }
    }

    /// The most recent page that got room back.
    fn reopen(&mut self) -> Option<usize> {
        while let Some(b) = self.open.pop() {
            if let Some(page) = self.pages.get_mut(&b) {
                if page.listed {
                    page.listed = false;
                    if page.has_room() {
                        return Some(b);
                    }
                }
            }
        }
        None
    }

    fn map(&mut self) -> usize {
        let memory = Memory::new();
        let base = memory.base.as_ptr() as usize;
        let page = Page {
            memory,
            free: END,
            fresh: 0,
            used: 0,
            listed: false,
        };
        self.pages.insert(base, page);
        base
    }

    /// Moves the pages emptied since the last call into `into`, which gives them back
    /// to the system when dropped.
    pub(super) fn take_empty(&mut self, into: &mut EmptyPages) {
        into.0.append(&mut self.empty);
    }

    /// Pages emptied and not given back yet.
    pub(super) fn emptied(&self) -> usize {
        self.empty.len()
    }

    /// Drops the session at `p` and takes its slot back; sets its page aside to give
    /// back (`take_empty`) if that was the page's last session and the page is not
    /// the current one.
    ///
    /// # Safety
    /// `p` came from this pool's `alloc`, is not freed yet, and nobody else can reach
    /// it any more.
    pub(super) unsafe fn free(&mut self, p: NonNull<Session>) {
        // SAFETY: the caller's promise: a live session nobody else holds.
        unsafe { p.as_ptr().drop_in_place() };
        let addr = p.as_ptr() as usize;
        let Some((&base, page)) = self.pages.range_mut(..=addr).next_back() else {
            debug_assert!(false, "a session from another pool");
            return;
        };
        let i = ((addr - base) / size_of::<Session>()) as u32;
        debug_assert!(i < SLOTS && page.used > 0, "a session from another pool");
        // SAFETY: the slot is ours again (its session dropped above), aligned for a u32.
        unsafe { page.slot(i).cast::<u32>().write(page.free) };
        page.free = i;
        page.used -= 1;
        if self.current == Some(base) {
            return;
        }
        if page.used == 0 {
            // No session is left in it, so no reader can reach it: given back with
            // the next `take_empty`.
            if let Some(page) = self.pages.remove(&base) {
                self.empty.push(page.memory);
            }
            if self.open.len() > 2 * self.pages.len() + 16 {
                let pages = &self.pages;
                self.open
                    .retain(|b| pages.get(b).is_some_and(|page| page.listed));
            }
        } else if !page.listed {
            page.listed = true;
            self.open.push(base);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn session(i: usize) -> Session {
        Session::new(
            &format!("u{i}"),
            [0; crate::token::CLIENT_BYTES],
            i as u64,
            0,
        )
    }

    #[test]
    fn slots_are_reused_and_empty_pages_given_back() {
        let mut pool = Pool::new();
        let n = 3 * SLOTS as usize;
        let ps: Vec<_> = (0..n).map(|i| pool.alloc(session(i))).collect();
        assert_eq!(pool.bytes(), 3 * PAGE_BYTES);
        for (i, p) in ps.iter().enumerate() {
            // SAFETY: allocated above, not freed.
            assert_eq!(unsafe { p.as_ref() }.stream, i as u64);
        }
        // Free the first two pages whole: both go back; the third is current.
        for &p in &ps[..2 * SLOTS as usize] {
            // SAFETY: allocated above, freed once.
            unsafe { pool.free(p) };
        }
        assert_eq!(pool.bytes(), 3 * PAGE_BYTES, "emptied, not yet given back");
        let mut back = EmptyPages::default();
        pool.take_empty(&mut back);
        assert_eq!((back.0.len(), pool.bytes()), (2, PAGE_BYTES));
        drop(back);
        // Free every other session of the third: its slots are reused, no new page.
        for &p in ps[2 * SLOTS as usize..].iter().step_by(2) {
            // SAFETY: as above.
            unsafe { pool.free(p) };
        }
        let again: Vec<_> = (0..SLOTS as usize / 2)
            .map(|i| pool.alloc(session(i)))
            .collect();
        assert_eq!(pool.bytes(), PAGE_BYTES);
        let next = pool.alloc(session(0));
        assert_eq!(pool.bytes(), 2 * PAGE_BYTES);
        for p in again
            .into_iter()
            .chain([next])
            .chain(ps[2 * SLOTS as usize..].iter().skip(1).step_by(2).copied())
        {
            // SAFETY: each allocated and not yet freed.
            unsafe { pool.free(p) };
        }
        // The current page stays mapped when it empties; the other goes.
        pool.take_empty(&mut EmptyPages::default());
        assert_eq!(pool.bytes(), PAGE_BYTES);
    }
}
