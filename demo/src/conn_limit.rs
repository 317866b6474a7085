//! A cap on open connections, and the open-files limit it lives within.
//!
//! Past [`ConnLimit::max`] open connections, a new one closes the connection idle the
//! longest (no request in its handler; one that sent half a head and stalled counts as
//! idle since it was accepted) to make room, so a crowd of idle or slow clients cannot
//! keep a fresh request out or delay it. Only when every connection is mid-request is
//! the new one refused (closed at once). A connection is never closed while its
//! handler runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::Notify;

/// The default `--max-connections`.
pub const DEFAULT_MAX: usize = 10_000;

/// File descriptors kept free of connections: the listeners, the store's sockets,
/// files, the hashing threads' needs.
pub const RESERVED_FDS: u64 = 256;

/// Raises the soft open-files limit to the hard one and returns the new soft limit,
/// or `None` where there is no such limit or it cannot be read.
pub fn raise_open_files_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

/// The soft open-files limit now, where there is one.
pub fn open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The connections a process with `open_files` descriptors can hold, at most `wanted`.
pub fn fit(wanted: usize, open_files: Option<u64>) -> usize {
    match open_files {
        Some(n) => {
            wanted.min(usize::try_from(n.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX))
        }
        None => wanted,
    }
    .max(1)
}

/// Counts open connections and makes room past the cap. Cheap to share by `&`.
#[derive(Debug)]
pub struct ConnLimit {
    max: usize,
    open: Arc<Mutex<Open>>,
    epoch: Instant,
}

#[derive(Debug, Default)]
struct Open {
    next_id: u64,
    slots: HashMap<u64, Arc<Slot>>,
}

#[derive(Debug)]
struct Slot {
    /// Requests in their handler now.
    busy: AtomicUsize,
    /// When the connection last went idle (accepted, or a request ended), in µs from
    /// the limit's epoch.
    idle_since: AtomicU64,
    close: Notify,
}

impl ConnLimit {
    /// At most `max` open connections (0 is taken as 1).
    pub fn new(max: usize) -> Self {
        ConnLimit {
            max: max.max(1),
            open: Arc::default(),
            epoch: Instant::now(),
        }
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().slots.len()
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        // The map is consistent after every statement: a panic elsewhere leaves it usable.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Registers a new connection. At the cap, first closes the one idle the longest;
    /// `None` (refuse it) only if every open connection is mid-request. Either counts
    /// one in `shed`.
    pub fn admit(&self, shed: &AtomicU64) -> Option<Ticket> {
        let now = self.now_us();
        let mut open = self.lock();
        if open.slots.len() >= self.max {
            // Relaxed: a counter, ordering nothing.
            shed.fetch_add(1, Ordering::Relaxed);
            // Relaxed: a request starting while this looks cannot be told from one
            // starting just after the close; either way that one connection ends.
            let oldest = open
                .slots
                .iter()
                .filter(|(_, s)| s.busy.load(Ordering::Relaxed) == 0)
                .min_by_key(|(_, s)| s.idle_since.load(Ordering::Relaxed))
                .map(|(&id, _)| id)?;
            if let Some(evicted) = open.slots.remove(&oldest) {
                evicted.close.notify_one();
            }
        }
        let id = open.next_id;
        open.next_id += 1;
        let slot = Arc::new(Slot {
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now),
            close: Notify::new(),
        });
        open.slots.insert(id, Arc::clone(&slot));
        Some(Ticket {
            id,
            slot,
            open: Arc::clone(&self.open),
            epoch: self.epoch,
        })
    }
}

/// One open connection's place; dropping it frees the place.
#[derive(Debug)]
pub struct Ticket {
    id: u64,
    slot: Arc<Slot>,
    open: Arc<Mutex<Open>>,
    epoch: Instant,
}

impl Ticket {
    /// Completes when the connection was closed to make room: drop its future then.
    pub async fn closed(&self) {
        self.slot.close.notified().await;
    }

    /// A handle the connection's service marks its requests with.
    pub fn requests(&self) -> Requests {
        Requests {
            slot: Arc::clone(&self.slot),
            epoch: self.epoch,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.slots.remove(&self.id);
    }
}

/// Marks a connection's requests as in their handler, so it is not closed meanwhile.
#[derive(Debug, Clone)]
pub struct Requests {
    slot: Arc<Slot>,
    epoch: Instant,
}

impl Requests {
    /// The connection counts as busy until the returned guard drops.
    pub fn start(&self) -> InFlight {
        // Relaxed: a count read by the eviction scan, ordering nothing else.
        self.slot.busy.fetch_add(1, Ordering::Relaxed);
        InFlight {
            slot: Arc::clone(&self.slot),
            epoch: self.epoch,
        }
    }

    /// For a request that from here on only waits: takes back one [`InFlight`]'s
    /// mark until the returned guard drops, so that the connection, if nothing else
    /// is in flight on it, counts as idle since now and may be closed to make room
    /// (which drops the waiting request with it). With no mark to take back it takes
    /// none.
    pub fn idle(&self) -> Idle {
        let taken = self
            .slot
            .busy
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if taken {
            let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.slot.idle_since.store(now, Ordering::Relaxed);
        }
        Idle {
            slot: Arc::clone(&self.slot),
            taken,
        }
    }
}

/// A request waiting without counting as in flight ([`Requests::idle`]); dropping it
/// gives the mark back.
#[derive(Debug)]
pub struct Idle {
    slot: Arc<Slot>,
    taken: bool,
}

impl Drop for Idle {
    fn drop(&mut self) {
        if self.taken {
            self.slot.busy.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One request in its handler. The accept loop holds it for the whole of the
/// request's service call (axum drops a request's extensions once its extractors ran,
/// before the handler's own awaits), and puts the connection's [`Requests`] in the
/// request's extensions: a handler that only waits from here on (a throttled sign-in
/// held back) calls [`Requests::idle`], and its connection may then be closed to make
/// room like any idle one.
#[derive(Debug)]
pub struct InFlight {
    slot: Arc<Slot>,
    epoch: Instant,
}

impl Clone for InFlight {
    /// Another mark on the same connection: it stays busy until both drop.
    fn clone(&self) -> Self {
        self.slot.busy.fetch_add(1, Ordering::Relaxed);
        InFlight {
            slot: Arc::clone(&self.slot),
            epoch: self.epoch,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.slot.idle_since.store(now, Ordering::Relaxed);
        self.slot.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn at_the_cap_the_longest_idle_is_closed_and_busy_ones_never() {
        let limit = ConnLimit::new(3);
        let shed = AtomicU64::new(0);
        let admit = || limit.admit(&shed);
        let a = admit().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let b = admit().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let c = admit().unwrap();
        assert_eq!(limit.open(), 3);
        // `a` is mid-request; `b` is then the longest idle.
        let in_a = a.requests().start();
        let d = admit().unwrap();
        assert_eq!(limit.open(), 3);
        tokio::time::timeout(Duration::from_secs(5), b.closed())
            .await
            .expect("b was told to close");
        // `c` ends a request now, so `d` (idle since it was accepted) is older. The
        // clock is in microseconds: without the pause `c`'s "now" could equal `d`'s
        // accept time, and the tie went to `c` (a CI run timed out waiting on `d`).
        std::thread::sleep(Duration::from_millis(2));
        drop(c.requests().start());
        let _e = admit().unwrap();
        tokio::time::timeout(Duration::from_secs(5), d.closed())
            .await
            .expect("d was told to close");
        drop(b);
        drop(d);
        assert_eq!(limit.open(), 3);
        // Every connection busy: refused.
        let in_c = c.requests().start();
        let in_e = _e.requests().start();
        assert!(admit().is_none());
        drop((in_a, in_c, in_e));
        assert!(admit().is_some());
        assert_eq!(shed.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn a_request_gone_idle_lets_its_connection_be_closed_and_takes_its_mark_back() {
        let limit = ConnLimit::new(1);
        let shed = AtomicU64::new(0);
        let a = limit.admit(&shed).unwrap();
        let requests = a.requests();
        let in_a = requests.start();
        // Busy: a second connection is refused.
        assert!(limit.admit(&shed).is_none());
        let idle = requests.idle();
        drop(idle);
        // The mark is back: still busy.
        assert!(limit.admit(&shed).is_none());
        let _idle = requests.idle();
        let b = limit.admit(&shed).expect("an idle connection makes room");
        tokio::time::timeout(Duration::from_secs(5), a.closed())
            .await
            .expect("a was told to close");
        drop(in_a);
        // Nothing in flight on `b`: taking a mark takes none, and gives none back.
        drop(b.requests().idle());
        assert!(!b.requests().idle().taken);
        let in_b = b.requests().start();
        assert!(limit.admit(&shed).is_none(), "b is busy, a is gone");
        drop(in_b);
    }

    #[test]
    fn threads_admitting_and_closing_never_pass_the_cap_and_free_every_place() {
        let limit = ConnLimit::new(8);
        let shed = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let mut held = Vec::new();
                    for i in 0..2000 {
                        if let Some(t) = limit.admit(&shed) {
                            held.push(t);
                        }
                        assert!(limit.open() <= 8);
                        // Up to 10 held by each thread: past the cap even alone.
                        if i % 10 == 0 {
                            held.clear();
                        }
                    }
                });
            }
        });
        assert_eq!(limit.open(), 0);
        assert!(shed.load(Ordering::Relaxed) > 0, "the cap was reached");
    }

    #[test]
    fn dropping_a_ticket_frees_its_place_and_the_cap_fits_the_fd_limit() {
        let limit = ConnLimit::new(0);
        assert_eq!(limit.max(), 1);
        let t = limit.admit(&AtomicU64::new(0)).unwrap();
        drop(t);
        assert_eq!(limit.open(), 0);
        assert_eq!(fit(10_000, Some(1024)), 1024 - RESERVED_FDS as usize);
        assert_eq!(fit(10_000, Some(1 << 20)), 10_000);
        assert_eq!(fit(10_000, Some(10)), 1);
        assert_eq!(fit(500, None), 500);
    }
}
