//! The one thread that writes the session file: group commit for sign-ins and
//! sign-outs, and the background checkpoint of rotated sessions.
//!
//! Callers queue their changes with a reply channel and block on it; the thread takes
//! everything queued, writes it in one transaction with one fsync, and answers each
//! caller. So concurrent sign-ins share a commit, and nothing else ever writes the
//! file (redb allows one writer; here there is never a second one waiting).
//!
//! A checkpoint compares every live session's state word with the word last written
//! for its stream and writes those that differ; streams on disk that are no longer
//! live in memory (swept, expired, or whose deletion failed to commit) are deleted.
//! Memory is the truth and the file converges on it. Within one transaction the
//! checkpoint's writes go first and the queued changes after, so a sign-out queued
//! while a checkpoint read its session still wins.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use redb::Database;

use super::file::{self, SESSIONS};
use super::{PersistError, Secret};
use crate::clock::Clock;
use crate::store::Store;

/// The most sessions one background checkpoint transaction writes, so a sign-in
/// queued behind a checkpoint of a million rotated sessions waits for one chunk, not
/// for all of them. The rest follow in the next transactions, at once.
pub(crate) const CHUNK: usize = 100_000;

/// How often the thread looks at the "a session runs ahead" flag while idle.
const POLL: Duration = Duration::from_millis(10);

/// One change to the file.
pub(crate) enum Op {
    Put {
        stream: u64,
        record: Vec<u8>,
        bits: u64,
    },
    Delete {
        stream: u64,
    },
    /// A stream was handed out: the file's high-water mark must cover it, so no later
    /// run reuses it even after its session is gone.
    Issued {
        stream: u64,
    },
}

/// What a caller waits for: its changes committed, or why not.
pub(crate) type Reply = SyncSender<Result<(), Arc<PersistError>>>;

enum Job {
    Write(Vec<Op>, Reply),
    /// Write every rotated session now, in as many chunks as it takes.
    Checkpoint(Reply),
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    stop: bool,
    /// Stop at once, writing nothing more (a crash, for tests).
    crash: bool,
}

/// What callers share with the thread.
pub(crate) struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
        }
    }

    fn push(&self, job: Job) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.stop {
            return false;
        }
        q.jobs.push(job);
        drop(q);
        self.wake.notify_one();
        true
    }

    /// Queues `ops` and waits until they are durable.
    pub(crate) fn write(&self, ops: Vec<Op>) -> Result<(), Arc<PersistError>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if !self.push(Job::Write(ops, tx)) {
            return Err(Arc::new(PersistError::Closed));
        }
        rx.recv().unwrap_or(Err(Arc::new(PersistError::Closed)))
    }

    /// Checkpoints every rotated session and waits until that is durable.
    pub(crate) fn checkpoint(&self) -> Result<(), Arc<PersistError>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if !self.push(Job::Checkpoint(tx)) {
            return Err(Arc::new(PersistError::Closed));
        }
        rx.recv().unwrap_or(Err(Arc::new(PersistError::Closed)))
    }

    /// Asks the thread to write a final checkpoint and end.
    pub(crate) fn stop(&self) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        self.wake.notify_one();
    }

    /// Asks the thread to end at once without writing anything more, leaving the file
    /// as a crash would (only what was committed).
    pub(crate) fn crash(&self) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).crash = true;
        self.wake.notify_one();
    }
}

/// The thread's own state.
pub(crate) struct Committer<C: Clock + 'static> {
    pub(crate) store: Arc<Store<C>>,
    pub(crate) shared: Arc<Shared>,
    /// `None` after a failed commit: redb refuses every later transaction on a
    /// database whose I/O failed, so the next attempt reopens (and repairs) it.
    pub(crate) db: Option<Database>,
    pub(crate) dir: PathBuf,
    pub(crate) secret: Secret,
    pub(crate) interval: Duration,
    /// The state word last committed for each stream on disk, and the scan it was
    /// last seen live in.
    pub(crate) on_disk: HashMap<u64, (u64, u32)>,
    /// The highest stream ever handed out, as the file records it.
    pub(crate) max_stream: Option<u64>,
    pub(crate) scan: u32,
    /// The last error the thread met writing in the background, for `close`.
    pub(crate) last_error: Arc<Mutex<Option<Arc<PersistError>>>>,
}

impl<C: Clock + 'static> Committer<C> {
    /// Whether a checkpoint is asked for sooner than the interval: a session reached
    /// a multiple of `CHECKPOINT_AHEAD` rotations (the store's `ahead` cue).
    fn take_ahead(&self) -> bool {
        // Relaxed: a hint; the checkpoint reads each session's word with Acquire.
        let ahead = &self.store.ahead;
        ahead.load(Ordering::Relaxed) && ahead.swap(false, Ordering::Relaxed)
    }

    pub(crate) fn run(mut self) {
        let mut next_checkpoint = Instant::now() + self.interval;
        let mut more = false;
        loop {
            let (jobs, stop) = {
                let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if q.crash {
                        for job in std::mem::take(&mut q.jobs) {
                            let (Job::Write(_, tx) | Job::Checkpoint(tx)) = job;
                            let _ = tx.send(Err(Arc::new(PersistError::Closed)));
                        }
                        return;
                    }
                    if !q.jobs.is_empty() || q.stop || more {
                        break;
                    }
                    let now = Instant::now();
                    if now >= next_checkpoint || self.take_ahead() {
                        more = true;
                        break;
                    }
                    let wait = (next_checkpoint - now).min(POLL);
                    q = self
                        .shared
                        .wake
                        .wait_timeout(q, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                (std::mem::take(&mut q.jobs), q.stop)
            };
            let full = stop || jobs.iter().any(|j| matches!(j, Job::Checkpoint(_)));
            let limit = if full { usize::MAX } else { CHUNK };
            let checkpoint = more || full;
            if checkpoint {
                next_checkpoint = Instant::now() + self.interval;
            }
            let result = self.commit(checkpoint, limit, &jobs);
            more = matches!(result, Ok(true));
            let reply = result.map(|_| ()).map_err(Arc::new);
            if let Err(e) = &reply {
                more = false;
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
            }
            for job in jobs {
                let (Job::Write(_, tx) | Job::Checkpoint(tx)) = job;
                let _ = tx.send(reply.clone());
            }
            if stop {
                // Anyone who queued after the final checkpoint is told it is closed.
                let q = std::mem::take(
                    &mut self
                        .shared
                        .queue
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .jobs,
                );
                for job in q {
                    let (Job::Write(_, tx) | Job::Checkpoint(tx)) = job;
                    let _ = tx.send(Err(Arc::new(PersistError::Closed)));
                }
                if reply.is_ok() {
                    self.compact();
                }
                return;
            }
        }
    }

    /// Gives the file's free pages back after the final checkpoint: redb's copy-on-write
    /// B-tree leaves them behind every small commit (sizes in BENCHMARKS.md). Best
    /// effort: compaction is a series of redb's two-phase commits of what is already
    /// durable, so a failure or a crash part-way leaves the file whole, only larger.
    fn compact(&mut self) {
        if let Some(db) = self.db.as_mut() {
            let _ = db.compact(redb::CompactionMode::Balanced);
        }
    }

    /// One transaction: a checkpoint of up to `limit` rotated sessions (if asked),
    /// then the queued changes. Returns whether rotated sessions were left over.
    fn commit(
        &mut self,
        checkpoint: bool,
        limit: usize,
        jobs: &[Job],
    ) -> Result<bool, PersistError> {
        if self.db.is_none() {
            self.db = Some(file::open_database(&self.dir, &self.secret)?);
        }
        let mut writes: BTreeMap<u64, Option<(Vec<u8>, u64)>> = BTreeMap::new();
        let mut left_over = false;
        let mut max_stream = self.max_stream;
        if checkpoint {
            left_over = self.scan(limit, &mut writes);
        }
        for job in jobs {
            if let Job::Write(ops, _) = job {
                for op in ops {
                    match op {
                        Op::Put {
                            stream,
                            record,
                            bits,
                        } => {
                            writes.insert(*stream, Some((record.clone(), *bits)));
                        }
                        Op::Delete { stream } => {
                            writes.insert(*stream, None);
                        }
                        Op::Issued { stream } => {
                            max_stream = Some(max_stream.map_or(*stream, |m| m.max(*stream)));
                        }
                    }
                }
            }
        }
        let new_max = max_stream.filter(|_| max_stream != self.max_stream);
        if writes.is_empty() && new_max.is_none() {
            return Ok(left_over);
        }
        let db = self.db.as_ref().expect("opened above");
        let written = (|| -> Result<(), PersistError> {
            let tx = db.begin_write()?;
            if let Some(m) = new_max {
                tx.open_table(file::META)?
                    .insert(file::MAX_STREAM, m.to_le_bytes().as_slice())?;
            }
            {
                let mut table = tx.open_table(SESSIONS)?;
                for (stream, w) in &writes {
                    match w {
                        Some((record, _)) => {
                            table.insert(*stream, record.as_slice())?;
                        }
                        None => {
                            table.remove(*stream)?;
                        }
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })();
        if let Err(e) = written {
            self.db = None;
            return Err(e);
        }
        self.max_stream = max_stream;
        for (stream, w) in writes {
            match w {
                Some((_, bits)) => {
                    self.on_disk.insert(stream, (bits, self.scan));
                }
                None => {
                    self.on_disk.remove(&stream);
                }
            }
        }
        Ok(left_over)
    }

    /// Adds to `writes` each live session whose word differs from the one on disk (at
    /// most `limit`), and a deletion for each stream on disk no longer live.
    fn scan(&mut self, limit: usize, writes: &mut BTreeMap<u64, Option<(Vec<u8>, u64)>>) -> bool {
        self.scan = self.scan.wrapping_add(1);
        let scan = self.scan;
        let mut left_over = false;
        let on_disk = &mut self.on_disk;
        let mut puts = 0usize;
        self.store.for_each_session(|s| {
            let Some(bits) = s.live_bits() else { return };
            if let Some((saved, seen)) = on_disk.get_mut(&s.stream) {
                *seen = scan;
                if *saved == bits {
                    return;
                }
            }
            if puts >= limit {
                left_over = true;
                return;
            }
            puts += 1;
            writes.insert(
                s.stream,
                Some((file::encode(bits, s.created_ms, &s.client, &s.uid), bits)),
            );
        });
        for (&stream, &(_, seen)) in on_disk.iter() {
            if seen != scan && !writes.contains_key(&stream) {
                writes.insert(stream, None);
            }
        }
        left_over
    }
}
