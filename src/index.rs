//! One shard's index: an open-addressing table of session pointers with lock-free
//! lookups and writers serialised by a mutex.
//!
//! Readers pin an epoch, load the table, and probe linearly from the uid's hash until
//! an empty slot; they never write. Writers (sign-in, sign-out, sweep) hold the shard's
//! mutex and change one slot at a time with a release store, so a reader sees each slot
//! either before or after a change, never torn. A removed slot becomes a tombstone
//! (probes go past it); a rebuilt table is published with one pointer store. Removed
//! sessions and replaced tables are freed by crossbeam-epoch once no pinned reader can
//! still hold them: no reader ever waits, and no pause is global.
//!
//! All sessions of one uid start their probe at the same slot, so one walk finds them
//! all: sign-in counts them for the client cap without any per-user structure.
//!
//! Invariants, under the writer lock:
//! - every session is reachable from the current table or has been retired, never both;
//! - the table is at most half full (sessions plus tombstones), so probes end.
//!
//! This is one of the crate's two modules allowed `unsafe` (the other is the ChaCha20
//! block's dispatch): dereferencing epoch-protected pointers and retiring them.
#![allow(unsafe_code)]

use crate::session::Session;
use crate::sync::epoch::{self, Atomic, Guard, Owned, Shared};
use crate::sync::{lock, Mutex, MutexGuard, Ordering};
use crate::token::CLIENT_BYTES;

const TOMBSTONE: usize = 1;
const MIN_CAPACITY: usize = 8;

struct Table {
    mask: usize,
    slots: Box<[Atomic<Session>]>,
}

impl Table {
    fn with_capacity(capacity: usize) -> Self {
        debug_assert!(capacity.is_power_of_two());
        Table {
            mask: capacity - 1,
            slots: (0..capacity).map(|_| Atomic::null()).collect(),
        }
    }
}

/// Writer-side bookkeeping of a shard.
struct Books {
    /// Slots holding a session or a tombstone.
    used: usize,
    /// Where the incremental sweep resumes.
    cursor: usize,
    /// The next session's stream, before the shard's bits are added.
    next_stream: u64,
}

pub(crate) struct Shard {
    table: Atomic<Table>,
    books: Mutex<Books>,
}

impl Shard {
    pub(crate) fn new() -> Self {
        Shard {
            table: Atomic::new(Table::with_capacity(MIN_CAPACITY)),
            books: Mutex::new(Books {
                used: 0,
                cursor: 0,
                next_stream: 0,
            }),
        }
    }

    #[inline]
    fn table<'g>(&self, guard: &'g Guard) -> &'g Table {
        // Acquire pairs with the Release that published the table: its slots are
        // initialised before we probe them.
        let t = self.table.load(Ordering::Acquire, guard);
        // SAFETY: the table pointer is never null (set in `new`, replaced only by
        // `rebuild` with another table), and a replaced table is retired with
        // `defer_destroy`, so it outlives every guard pinned while it was reachable.
        unsafe { t.deref() }
    }

    /// The session `(uid, client)`, dead or alive, if the table holds it.
    #[inline]
    pub(crate) fn find<'g>(
        &self,
        hash: u64,
        uid: &str,
        client: &[u8; CLIENT_BYTES],
        guard: &'g Guard,
    ) -> Option<&'g Session> {
        let mut found = None;
        self.probe(hash, guard, |_, s| {
            if s.is(uid, client) {
                found = Some(s);
                false
            } else {
                true
            }
        });
        found
    }

    /// Every session of `uid` the table holds, dead or alive, in probe order.
    pub(crate) fn of_user<'g>(&self, hash: u64, uid: &str, guard: &'g Guard) -> Vec<&'g Session> {
        let mut out = Vec::new();
        self.probe(hash, guard, |_, s| {
            if s.uid == uid {
                out.push(s);
            }
            true
        });
        out
    }

    /// Calls `visit` on every session the current table holds, dead or alive (a
    /// durable store's checkpoint). Lock-free, like every read.
    #[cfg_attr(not(feature = "persist"), allow(dead_code))]
    pub(crate) fn for_each<'g>(&self, guard: &'g Guard, mut visit: impl FnMut(&'g Session)) {
        let t = self.table(guard);
        for slot in t.slots.iter() {
            // Acquire pairs with the Release store that published the session.
            let p = slot.load(Ordering::Acquire, guard);
            if !p.is_null() {
                // SAFETY: as in `probe`: a non-null slot of a table loaded while
                // pinned points to a session not yet freed.
                visit(unsafe { p.deref() });
            }
        }
    }

    /// Calls `visit` on each session of the probe chain of `hash`, with its slot,
    /// until it returns false.
    #[inline]
    fn probe<'g>(
        &self,
        hash: u64,
        guard: &'g Guard,
        mut visit: impl FnMut(Slot, &'g Session) -> bool,
    ) {
        let t = self.table(guard);
        let mut i = hash as usize & t.mask;
        for _ in 0..=t.mask {
            // Acquire pairs with the Release store that published the session.
            let p = t.slots[i].load(Ordering::Acquire, guard);
            if p.is_null() {
                if p.tag() != TOMBSTONE {
                    return;
                }
            } else {
                // SAFETY: a non-null slot points to a live allocation: sessions are
                // retired with `defer_destroy` only after their slot was cleared, and we
                // are pinned, so none we can load here has been freed.
                let s = unsafe { p.deref() };
                if !visit(Slot(i), s) {
                    return;
                }
            }
            i = (i + 1) & t.mask;
        }
    }

    /// Tombstones `slot` and retires its session. Only the writer-lock holder calls
    /// it (through `Writer`), so no other thread retires the same session.
    fn retire(&self, slot: Slot, guard: &Guard) {
        let t = self.table(guard);
        // Release: a reader that sees the tombstone sees it after the session died.
        let old = t.slots[slot.0].swap(Shared::null().with_tag(TOMBSTONE), Ordering::AcqRel, guard);
        debug_assert!(!old.is_null(), "removed an empty slot");
        if !old.is_null() {
            // SAFETY: not retired yet (this call retires it), and we are pinned.
            unsafe { old.deref() }.unlinked();
            // SAFETY: the slot no longer points to the session, it is in no other
            // current slot, and earlier tables that still point to it were retired
            // before now, so only readers pinned before this call can hold it.
            unsafe { guard.defer_destroy(old) };
        }
    }

    /// Takes the shard's writer lock. Lookups never wait for it. `hash` is the
    /// store's slot hash of a uid, needed to rebuild the table.
    pub(crate) fn write<'s>(&'s self, hash: &'s dyn Fn(&str) -> u64) -> Writer<'s> {
        Writer {
            shard: self,
            books: lock(&self.books),
            hash,
        }
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no reader or writer can reach this shard any more. The
        // current table owns every session it holds (retired ones are not in it).
        unsafe {
            let guard = epoch::unprotected();
            let table = self.table.load(Ordering::Relaxed, guard).into_owned();
            for slot in table.slots.iter() {
                let p = slot.load(Ordering::Relaxed, guard);
                if !p.is_null() {
                    drop(p.into_owned());
                }
            }
        }
    }
}

/// A shard with its writer lock held.
pub(crate) struct Writer<'s> {
    shard: &'s Shard,
    books: MutexGuard<'s, Books>,
    hash: &'s dyn Fn(&str) -> u64,
}

/// Where a session sits in the current table, for `Writer::remove`.
#[derive(Clone, Copy)]
pub(crate) struct Slot(usize);

impl<'s> Writer<'s> {
    /// The next stream number of this shard.
    pub(crate) fn next_stream(&mut self) -> u64 {
        let n = self.books.next_stream;
        self.books.next_stream += 1;
        n
    }

    /// Makes every later stream number at least `floor` (restored sessions keep the
    /// streams they were saved with, so new ones must start above them).
    #[cfg_attr(not(feature = "persist"), allow(dead_code))]
    pub(crate) fn raise_next_stream(&mut self, floor: u64) {
        self.books.next_stream = self.books.next_stream.max(floor);
    }

    /// The sessions of `uid` with their slots, dead or alive, in probe order.
    pub(crate) fn of_user<'g>(
        &self,
        hash: u64,
        uid: &str,
        guard: &'g Guard,
    ) -> Vec<(Slot, &'g Session)> {
        let mut out = Vec::new();
        self.shard.probe(hash, guard, |slot, s| {
            if s.uid == uid {
                out.push((slot, s));
            }
            true
        });
        out
    }

    /// Walks the sessions of `uid` in probe order and removes each one `end` returns
    /// true for (it must have killed it). One pass and no allocation: removing leaves
    /// a tombstone, so the chain being walked keeps its shape.
    pub(crate) fn remove_of_user(
        &mut self,
        hash: u64,
        uid: &str,
        guard: &Guard,
        mut end: impl FnMut(&Session) -> bool,
    ) {
        let shard = self.shard;
        shard.probe(hash, guard, |slot, s| {
            if s.uid == uid && end(s) {
                shard.retire(slot, guard);
            }
            true
        });
    }

    /// Removes the dead session at `slot` and retires it.
    pub(crate) fn remove(&mut self, slot: Slot, guard: &Guard) {
        self.shard.retire(slot, guard);
    }

    /// Finds `target` in the current table, if it is still there.
    pub(crate) fn slot_of(&self, hash: u64, target: &Session, guard: &Guard) -> Option<Slot> {
        self.of_user(hash, &target.uid, guard)
            .into_iter()
            .find(|(_, s)| std::ptr::eq(*s, target))
            .map(|(slot, _)| slot)
    }

    /// Adds a session, rebuilding the table first if it would be over half full.
    pub(crate) fn insert(&mut self, hash: u64, session: Session, guard: &Guard) {
        let capacity = self.shard.table(guard).slots.len();
        if (self.books.used + 1) * 2 > capacity {
            self.rebuild(guard);
        }
        let t = self.shard.table(guard);
        let mut i = hash as usize & t.mask;
        loop {
            let p = t.slots[i].load(Ordering::Relaxed, guard);
            if p.is_null() {
                if p.tag() != TOMBSTONE {
                    self.books.used += 1;
                }
                // Release: the session's fields are written before a reader can see it.
                t.slots[i].store(Owned::new(session), Ordering::Release);
                return;
            }
            i = (i + 1) & t.mask;
        }
    }

    /// Copies the live sessions into a fresh table sized for them, drops the dead
    /// ones and all tombstones, and publishes it.
    fn rebuild(&mut self, guard: &Guard) {
        let old_shared = self.shard.table.load(Ordering::Acquire, guard);
        // SAFETY: never null, and we hold the lock, so nobody retires it under us.
        let old = unsafe { old_shared.deref() };
        let mut keep = Vec::new();
        let mut drop_later = Vec::new();
        for slot in old.slots.iter() {
            let p = slot.load(Ordering::Acquire, guard);
            if p.is_null() {
                continue;
            }
            // SAFETY: as in `Shard::probe`.
            let s = unsafe { p.deref() };
            if s.is_dead() {
                drop_later.push(p);
            } else {
                keep.push(p);
            }
        }
        let capacity = ((keep.len() + 1) * 4).next_power_of_two().max(MIN_CAPACITY);
        let fresh = Table::with_capacity(capacity);
        for p in &keep {
            // SAFETY: as in `Shard::probe`.
            let s = unsafe { p.deref() };
            let mut i = (self.hash)(&s.uid) as usize & fresh.mask;
            while !fresh.slots[i].load(Ordering::Relaxed, guard).is_null() {
                i = (i + 1) & fresh.mask;
            }
            fresh.slots[i].store(*p, Ordering::Relaxed);
        }
        self.books.used = keep.len();
        self.books.cursor = 0;
        // Release: the new table's slots are filled before a reader can load it.
        self.shard.table.store(Owned::new(fresh), Ordering::Release);
        // SAFETY: replaced just above; readers pinned before may still probe it, and
        // it frees only the slot array, never the sessions it points to.
        unsafe { guard.defer_destroy(old_shared) };
        for p in drop_later {
            // SAFETY: not retired yet (this loop retires it), and we are pinned.
            unsafe { p.deref() }.unlinked();
            // SAFETY: the dead session is in no current table: the new one skipped it
            // and the old one, just retired, is reachable only by readers pinned before.
            unsafe { guard.defer_destroy(p) };
        }
    }

    /// Visits up to `steps` slots from where the last sweep stopped and removes the
    /// sessions for which `dead` (which may kill them) returns true. Returns how many.
    pub(crate) fn sweep(
        &mut self,
        steps: usize,
        guard: &Guard,
        mut dead: impl FnMut(&Session) -> bool,
    ) -> usize {
        let t = self.shard.table(guard);
        let mut removed = 0;
        for _ in 0..steps.min(t.slots.len()) {
            let i = self.books.cursor & t.mask;
            self.books.cursor = (i + 1) & t.mask;
            let p = t.slots[i].load(Ordering::Acquire, guard);
            if p.is_null() {
                continue;
            }
            // SAFETY: as in `Shard::probe`.
            let s = unsafe { p.deref() };
            if dead(s) {
                self.remove(Slot(i), guard);
                removed += 1;
            }
        }
        removed
    }

    /// The number of slots in the current table.
    pub(crate) fn capacity(&self, guard: &Guard) -> usize {
        self.shard.table(guard).slots.len()
    }
}
