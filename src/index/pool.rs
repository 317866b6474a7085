//! A shard's sessions, kept in pages of the shard's own (writer lock only).
//!
//! Why not the global allocator: a mass expiry frees most of a million sessions at
//! once, and glibc's malloc keeps the freed chunks resident (only `malloc_trim`
//! gives back free pages in the middle of its heap), so the resident set stayed near
//! its peak. Here every page is a [`Memory`] of its own (an anonymous mapping), set
//! aside when its last session is freed and unmapped with its neighbours soon after
//! ([`EmptyPages`]: at the end of a sweep, or a batch at a time by sign-ins and
//! sign-outs), with no trim and whatever the global allocator.
//!
//! A page holds [`SLOTS`] sessions. Which slots are free is a bitmap beside the page,
//! never in the slots themselves, and a sign-in takes the page's lowest free slot: a
//! page's memory is touched only as it fills, and the survivors of an expiry sit
//! low in their page. Sign-ins fill the current page; when it is full they take the
//! most recent page that got a slot back, else a new one. Sessions signed in together
//! share pages, so sessions that expire together (the usual mass expiry) empty whole
//! pages. A page emptied while it is the current one is kept, so a shard that signs
//! in and out around a page boundary does not map and unmap each time.
//!
//! A page that keeps a few sessions keeps only their system pages: a system page
//! (4 KiB) whose slots are all free is given back with `madvise(MADV_DONTNEED)`, in
//! the same batches as empty pages (`Pool::give_back`), and reads as zero when a
//! sign-in next takes a slot in it. Nothing reads a free slot, so nothing misses
//! what was discarded.
//!
//! A slot is handed out only after its previous session was freed, which the index
//! does only once no reader can hold it (the seals of `index.rs`); memory is
//! unmapped or discarded only where no session is. So readers never see a reused
//! slot or a missing page.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::mem::size_of;
use std::ptr::NonNull;

use super::memory::{Memory, Owner, SYSTEM_PAGE};
use crate::session::Session;

/// Bytes a page maps: a small multiple of the system's page, so a shard's partly
/// used last page costs little, and few enough mappings that ten million sessions
/// (about 10 000 pages) stay far below Linux's default limit of 65 530.
const PAGE_BYTES: usize = 64 * 1024;
/// Sessions per page.
const SLOTS: usize = PAGE_BYTES / size_of::<Session>();
/// Words of a page's free-slot bitmap.
const WORDS: usize = SLOTS.div_ceil(64);
/// System pages per page.
const SUBPAGES: usize = PAGE_BYTES / SYSTEM_PAGE;

const _: () = assert!(SLOTS >= 16 && SUBPAGES <= 32 && PAGE_BYTES.is_multiple_of(SYSTEM_PAGE));

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
    /// Bit `i % 64` of word `i / 64` set: slot `i` is free. Bits past `SLOTS` clear.
    free: [u64; WORDS],
    /// Sessions in the page.
    used: u32,
    /// Bit `k` set: system page `k` was touched since it was last discarded.
    touched: u32,
    /// Whether the pool's `open` list holds this page.
    listed: bool,
    /// Whether the pool's `trim` list holds this page.
    trimmable: bool,
}

/// The system pages slot `i` spans.
fn subpages_of(i: usize) -> std::ops::RangeInclusive<usize> {
    let at = i * size_of::<Session>();
    at / SYSTEM_PAGE..=(at + size_of::<Session>() - 1) / SYSTEM_PAGE
}

impl Page {
    fn new(memory: Memory) -> Page {
        let mut free = [u64::MAX; WORDS];
        if !SLOTS.is_multiple_of(64) {
            free[WORDS - 1] = (1 << (SLOTS % 64)) - 1;
        }
        Page {
            memory,
            free,
            used: 0,
            touched: 0,
            listed: false,
            trimmable: false,
        }
    }

    fn has_room(&self) -> bool {
        self.used < SLOTS as u32
    }

    fn slot(&self, i: usize) -> NonNull<Session> {
        debug_assert!(i < SLOTS);
        // SAFETY: in bounds: `i < SLOTS` slots of `size_of::<Session>()` fit in the
        // page, whose base is aligned to the system page.
        unsafe { self.memory.base.add(i * size_of::<Session>()) }.cast()
    }

    fn is_free(&self, i: usize) -> bool {
        self.free[i / 64] & (1 << (i % 64)) != 0
    }

    /// Whether no session overlaps system page `k`: its slots' bits all set, a
    /// word at a time (one word when a session is 64 bytes).
    fn subpage_free(&self, k: usize) -> bool {
        let first = k * SYSTEM_PAGE / size_of::<Session>();
        let last = (((k + 1) * SYSTEM_PAGE - 1) / size_of::<Session>()).min(SLOTS - 1);
        (first / 64..=last / 64).all(|w| {
            let from = if w == first / 64 { first % 64 } else { 0 };
            let to = if w == last / 64 { last % 64 } else { 63 };
            let mask = (u64::MAX >> (63 - to)) & (u64::MAX << from);
            self.free[w] & mask == mask
        })
    }

    /// Whether freeing slot `i` left a touched system page with no session.
    fn emptied_a_subpage(&self, i: usize) -> bool {
        subpages_of(i).any(|k| self.touched & (1 << k) != 0 && self.subpage_free(k))
    }
}

/// The page at index `i` of a pool's slab, if one is there (a free function, so
/// the caller can still use the pool's other fields).
fn page_at(pages: &mut [Option<Page>], i: usize) -> Option<&mut Page> {
    pages.get_mut(i).and_then(Option::as_mut)
}

/// One shard's pages. Its owner (the index, under the shard's writer lock) frees a
/// session only when no reader can still reach it.
///
/// Pages sit in a slab, so a sign-in reaches the current page without a search; a
/// free finds its session's page by address (`by_base`).
pub(super) struct Pool {
    /// The pages; `None` where one was given back (its index is reused first).
    pages: Vec<Option<Page>>,
    /// Indices of `pages` that hold no page.
    vacant: Vec<usize>,
    /// Each page's index, by base address.
    by_base: BTreeMap<usize, usize>,
    /// Pages that got a slot back while not current, most recent last. May hold
    /// indices of pages given back since, or of pages mapped there later, which are
    /// skipped unless listed (`Page::listed`).
    open: Vec<usize>,
    /// The page sign-ins fill.
    current: Option<usize>,
    /// Pages emptied and not yet given back (`Pool::give_back`).
    empty: Vec<Memory>,
    /// Pages with a touched system page that holds no session, to discard
    /// (`Pool::give_back`); may hold stale indices, as `open` does.
    trim: Vec<usize>,
    /// Touched system pages of the pages in `pages`.
    touched: usize,
}

// SAFETY: the pool owns its pages and the sessions in them, and `Session` is `Send`
// and `Sync`; only the holder of the shard's writer lock touches the pool.
unsafe impl Send for Pool {}

impl Pool {
    pub(super) fn new() -> Self {
        Pool {
            pages: Vec::new(),
            vacant: Vec::new(),
            by_base: BTreeMap::new(),
            open: Vec::new(),
            current: None,
            empty: Vec::new(),
            trim: Vec::new(),
            touched: 0,
        }
    }

    /// Bytes of pages the pool may hold resident: the touched system pages of its
    /// pages, and the emptied pages not given back yet.
    pub(super) fn bytes(&self) -> usize {
        self.touched * SYSTEM_PAGE + self.empty.len() * PAGE_BYTES
    }

    /// Moves `session` into the lowest free slot of the current page.
    pub(super) fn alloc(&mut self, session: Session) -> NonNull<Session> {
        let page = self.page_with_room();
        let Some(w) = page.free.iter().position(|&w| w != 0) else {
            unreachable!("a page with room has a free slot")
        };
        let i = w * 64 + page.free[w].trailing_zeros() as usize;
        page.free[w] &= page.free[w] - 1;
        page.used += 1;
        let mut touched = 0;
        for k in subpages_of(i) {
            if page.touched & (1 << k) == 0 {
                page.touched |= 1 << k;
                touched += 1;
            }
        }
        let p = page.slot(i);
        // SAFETY: `p` is an aligned, free slot of a live page.
        unsafe { p.write(session) };
        self.touched += touched;
        p
    }

    /// The current page, or another with room made current.
    fn page_with_room(&mut self) -> &mut Page {
        let i = match self.current {
            Some(i) if self.pages[i].as_ref().is_some_and(Page::has_room) => i,
            _ => self.reopen().unwrap_or_else(|| self.map()),
        };
        self.current = Some(i);
        match page_at(&mut self.pages, i) {
            Some(page) => page,
            // `i` holds a page: checked above, or just mapped.
            None => unreachable!("the current page is mapped"),
        }
    }

    /// The most recent page that got room back.
    fn reopen(&mut self) -> Option<usize> {
        while let Some(i) = self.open.pop() {
            if let Some(page) = page_at(&mut self.pages, i) {
                if page.listed {
                    page.listed = false;
                    if page.has_room() {
                        return Some(i);
                    }
                }
            }
        }
        None
    }

    fn map(&mut self) -> usize {
        // Only writers touch a slot before its session is published: no populate.
        let memory = Memory::zeroed(PAGE_BYTES, false);
        let base = memory.base.as_ptr() as usize;
        let page = Some(Page::new(memory));
        let i = match self.vacant.pop() {
            Some(i) => {
                self.pages[i] = page;
                i
            }
            None => {
                self.pages.push(page);
                self.pages.len() - 1
            }
        };
        self.by_base.insert(base, i);
        i
    }

    /// Moves the pages emptied since the last call into `into`, which gives them back
    /// to the system when dropped, and discards the system pages that lost their last
    /// session, up to `pages` pages' worth (the rest wait for the next call).
    pub(super) fn give_back(&mut self, into: &mut EmptyPages, pages: usize) {
        into.0.append(&mut self.empty);
        for _ in 0..pages {
            let Some(i) = self.trim.pop() else {
                break;
            };
            let Some(page) = page_at(&mut self.pages, i) else {
                continue;
            };
            page.trimmable = false;
            let mut k = 0;
            while k < SUBPAGES {
                let run = (k..SUBPAGES)
                    .take_while(|&j| page.touched & (1 << j) != 0 && page.subpage_free(j))
                    .count();
                // SAFETY: no session overlaps these system pages, so nothing reads
                // them until `alloc` writes a session there, and no reference into
                // them exists (free slots are never borrowed).
                if run > 0 && unsafe { page.memory.discard(k * SYSTEM_PAGE, run * SYSTEM_PAGE) } {
                    page.touched &= !(((1u64 << run) - 1) << k) as u32;
                    self.touched -= run;
                }
                k += run.max(1);
            }
        }
    }

    /// Pages emptied, and pages with system pages to discard, not given back yet.
    pub(super) fn to_give_back(&self) -> usize {
        self.empty.len() + self.trim.len()
    }

    /// Drops the session at `p` and takes its slot back; sets its page aside to give
    /// back (`give_back`) if that was the page's last session and the page is not
    /// the current one, or else its system page if that was its last session.
    ///
    /// # Safety
    /// `p` came from this pool's `alloc`, is not freed yet, and nobody else can reach
    /// it any more.
    pub(super) unsafe fn free(&mut self, p: NonNull<Session>) {
        // SAFETY: the caller's promise: a live session nobody else holds.
        unsafe { p.as_ptr().drop_in_place() };
        let addr = p.as_ptr() as usize;
        let Some((&base, &at)) = self.by_base.range(..=addr).next_back() else {
            debug_assert!(false, "a session from another pool");
            return;
        };
        let Some(page) = page_at(&mut self.pages, at) else {
            debug_assert!(false, "a page's index outlived it");
            return;
        };
        let i = (addr - base) / size_of::<Session>();
        debug_assert!(
            i < SLOTS && page.used > 0 && !page.is_free(i),
            "a session from another pool"
        );
        page.free[i / 64] |= 1 << (i % 64);
        page.used -= 1;
        if page.used == 0 && self.current != Some(at) {
            // No session is left in it, so no reader can reach it: given back with
            // the next `give_back`.
            if let Some(page) = self.pages[at].take() {
                self.touched -= page.touched.count_ones() as usize;
                self.empty.push(page.memory);
            }
            self.by_base.remove(&base);
            self.vacant.push(at);
            if self.open.len() + self.trim.len() > 2 * self.by_base.len() + 16 {
                let pages = &self.pages;
                let holds = |i: usize, f: fn(&Page) -> bool| pages[i].as_ref().is_some_and(f);
                self.open.retain(|&i| holds(i, |page| page.listed));
                self.trim.retain(|&i| holds(i, |page| page.trimmable));
            }
            return;
        }
        if !page.trimmable && page.emptied_a_subpage(i) {
            page.trimmable = true;
            self.trim.push(at);
        }
        if self.current != Some(at) && !page.listed {
            page.listed = true;
            self.open.push(at);
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

    /// Frees `ps` (each allocated from `pool` and not freed yet).
    fn free_all(pool: &mut Pool, ps: &[NonNull<Session>]) {
        for &p in ps {
            // SAFETY: the caller's promise.
            unsafe { pool.free(p) };
        }
    }

    #[test]
    fn slots_are_reused_lowest_first_and_empty_pages_given_back() {
        let mut pool = Pool::new();
        let ps: Vec<_> = (0..3 * SLOTS).map(|i| pool.alloc(session(i))).collect();
        assert_eq!(pool.bytes(), 3 * PAGE_BYTES);
        for (i, p) in ps.iter().enumerate() {
            // SAFETY: allocated above, not freed.
            assert_eq!(unsafe { p.as_ref() }.stream, i as u64);
        }
        // Free the first two pages whole: both go back; the third is current.
        free_all(&mut pool, &ps[..2 * SLOTS]);
        assert_eq!(pool.bytes(), 3 * PAGE_BYTES, "emptied, not yet given back");
        let mut back = EmptyPages::default();
        pool.give_back(&mut back, usize::MAX);
        assert_eq!((back.0.len(), pool.bytes()), (2, PAGE_BYTES));
        drop(back);
        // Free two slots of the third: they are reused lowest first, no new page.
        let third = &ps[2 * SLOTS..];
        free_all(&mut pool, &[third[7], third[3]]);
        assert_eq!(pool.alloc(session(0)), third[3]);
        assert_eq!(pool.alloc(session(0)), third[7]);
        assert_eq!(pool.bytes(), PAGE_BYTES);
        // Full: the next session takes a new page, touching one system page of it.
        let next = pool.alloc(session(0));
        assert_eq!(pool.bytes(), PAGE_BYTES + SYSTEM_PAGE);
        free_all(&mut pool, third);
        free_all(&mut pool, &[next]);
        // The current page stays mapped when it empties, its memory discarded (on
        // Linux); the other goes.
        pool.give_back(&mut EmptyPages::default(), usize::MAX);
        let discards = cfg!(all(target_os = "linux", not(miri)));
        assert_eq!(
            pool.bytes(),
            if discards { 0 } else { SYSTEM_PAGE },
            "only the current page is left"
        );
        assert_eq!(pool.by_base.len(), 1);
    }

    #[test]
    fn a_system_page_is_free_when_every_slot_over_it_is() {
        let mut page = Page::new(Memory::zeroed(PAGE_BYTES, false));
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..if cfg!(miri) { 4 } else { 200 } {
            // Random bitmaps, mostly free, with words one slot short of free, so
            // both answers come up often and the edges of each word are tried.
            for w in page.free.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *w = match x % 4 {
                    0 => x,
                    1 => !(1 << ((x >> 8) % 64)),
                    _ => u64::MAX,
                };
            }
            for k in 0..SUBPAGES {
                let naive = (0..SLOTS)
                    .filter(|&i| subpages_of(i).contains(&k))
                    .all(|i| page.is_free(i));
                assert_eq!(page.subpage_free(k), naive, "system page {k}");
            }
        }
    }

    /// Whether each system page of `page` is resident (`mincore`).
    #[cfg(all(target_os = "linux", not(miri)))]
    fn resident(pool: &Pool, page: usize) -> Vec<bool> {
        let mut vec = vec![0u8; SUBPAGES];
        // SAFETY: `page` is the base of one of the pool's mappings, PAGE_BYTES long,
        // and `vec` has a byte for each of its system pages.
        let r = unsafe { libc::mincore(page as *mut libc::c_void, PAGE_BYTES, vec.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore");
        assert!(pool.by_base.contains_key(&page));
        vec.iter().map(|b| b & 1 == 1).collect()
    }

    #[test]
    #[cfg(all(target_os = "linux", not(miri)))]
    fn survivors_keep_only_their_system_pages() {
        let mut pool = Pool::new();
        let ps: Vec<_> = (0..SLOTS + 1).map(|i| pool.alloc(session(i))).collect();
        let first = ps[0].as_ptr() as usize;
        assert_eq!(resident(&pool, first), vec![true; SUBPAGES]);
        // Keep the sessions of one system page in the middle of the (not current)
        // first page: the others' system pages go back, theirs stays.
        let per = SYSTEM_PAGE / size_of::<Session>();
        let keep = 5 * per..6 * per;
        let (before, rest) = ps[..SLOTS].split_at(keep.start);
        let (kept, after) = rest.split_at(per);
        free_all(&mut pool, before);
        free_all(&mut pool, after);
        assert_eq!(pool.bytes(), PAGE_BYTES + SYSTEM_PAGE, "not given back yet");
        pool.give_back(&mut EmptyPages::default(), usize::MAX);
        assert_eq!(
            pool.bytes(),
            2 * SYSTEM_PAGE,
            "one system page in each page"
        );
        let want: Vec<bool> = (0..SUBPAGES).map(|k| k == 5).collect();
        assert_eq!(resident(&pool, first), want);
        for (p, i) in kept.iter().zip(keep.clone()) {
            // SAFETY: allocated above, not freed.
            assert_eq!(unsafe { p.as_ref() }.stream, i as u64, "a survivor lost");
        }
        // The current page's last session goes: its system page is discarded too,
        // and used again as if fresh.
        let second = ps[SLOTS].as_ptr() as usize;
        free_all(&mut pool, &ps[SLOTS..]);
        pool.give_back(&mut EmptyPages::default(), usize::MAX);
        assert_eq!(resident(&pool, second), vec![false; SUBPAGES]);
        assert_eq!(pool.bytes(), SYSTEM_PAGE);
        let again: Vec<_> = (0..per).map(|i| pool.alloc(session(1000 + i))).collect();
        for (i, p) in again.iter().enumerate() {
            // SAFETY: allocated above, not freed.
            assert_eq!(unsafe { p.as_ref() }.stream, 1000 + i as u64);
        }
        assert_eq!(again[0].as_ptr() as usize, second, "lowest slot first");
        assert!(resident(&pool, second)[0]);
        assert_eq!(pool.bytes(), 2 * SYSTEM_PAGE);
        free_all(&mut pool, kept);
        free_all(&mut pool, &again);
    }
}
