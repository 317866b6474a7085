//! Durable sessions (feature `persist`, SPEC §5): a [`Store`] whose sessions survive a
//! restart, kept in a [redb](https://docs.rs/redb) file.
//!
//! | event | durable when |
//! |---|---|
//! | sign-in ([`PersistentStore::issue`]), with any eviction it makes | before it returns the credentials |
//! | sign-out ([`revoke`](PersistentStore::revoke), [`revoke_user`](PersistentStore::revoke_user)) | before it returns |
//! | rotation | at the next checkpoint: every `checkpoint_interval` (1 s by default), and at once when a session reaches a multiple of [`CHECKPOINT_AHEAD`] generations; `authenticate` never writes or waits |
//! | [`close`](PersistentStore::close) or drop | a final checkpoint: after a restart every token answers exactly as before; then the file is compacted (best effort: a crash or failure during it leaves the file whole) |
//!
//! Concurrent sign-ins and sign-outs share one transaction and one fsync (group
//! commit, one writer thread). After a crash, a session restored from a checkpoint
//! behind its client accepts the client's token as long as it is at most
//! [`MAX_AHEAD`](crate::MAX_AHEAD) (1 024) generations ahead, and continues from it
//! (the decision table's `Ahead` row, open to every session: only the store mints
//! tokens, so a genuine token ahead exists only where rotations were lost). A session
//! is checkpointed within one checkpoint cycle of reaching a multiple of
//! `CHECKPOINT_AHEAD` (256), so the bound holds unless a client rotates more than
//! 768 times during one checkpoint write. Checking a garbage token against a
//! restored session costs one ChaCha20 block, as against any session.
//!
//! After a crash: no confirmed sign-in is lost and no confirmed sign-out comes back. A
//! rotation lost with the crash is recovered by the row above; its expiry is the
//! checkpoint's until the client's next request rotates it (so an `expiry` a client
//! saw may go down once, after a crash, never after a clean restart). A sign-in or
//! sign-out that returned an error (the disk is full or read-only) took effect in
//! memory only: a failed sign-in is undone, a failed sign-out stays signed out here
//! and the next checkpoint that commits deletes it on disk.
//!
//! The token key is derived from a [`Secret`] (at least 32 bytes, from a file or the
//! embedding application) and never written: the file records only an HMAC check
//! value, so a wrong secret is [`PersistError::WrongKey`] and a stolen file yields no
//! token. The directory is created `0700`, the file `0600`. A file that is damaged,
//! foreign, of a newer format, or opened by another store is refused with a clear
//! [`PersistError`]; loading builds a fresh store and hands it out only whole.
//!
//! On a full or read-only disk, sign-ins fail with [`BackendError::Unavailable`] (the
//! HTTP layer and the demo answer 503), existing sessions keep rotating in memory, and
//! the writer reopens the file on the next attempt, so sign-ins work again once space
//! is back. Memory: the writer keeps the last state word written for each stream (a
//! `HashMap<u64, (u64, u32)>`, about 32 bytes per session).

mod committer;
mod error;
mod file;
mod secret;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::backend::{BackendError, Unavailable};
use crate::clock::{Clock, SystemClock};
use crate::config::Builder;
use crate::credentials::{Authenticated, Credentials, SessionInfo};
use crate::error::{InputError, Rejection};
use crate::store::{Change, Store};
use crate::token::ClientId;

use committer::{Committer, Op, Shared};
pub use error::PersistError;
pub use secret::{Secret, MIN_SECRET_LEN};

/// A session is checkpointed at once (not at the next interval) when its generation
/// reaches a multiple of this: far below [`MAX_AHEAD`](crate::MAX_AHEAD), the most a
/// restored session may lag its client.
pub const CHECKPOINT_AHEAD: u64 = 256;

/// Where and how a [`PersistentStore`] keeps its sessions.
#[derive(Debug, Clone)]
pub struct PersistOptions {
    dir: PathBuf,
    secret: Secret,
    checkpoint_interval: Duration,
}

impl PersistOptions {
    /// Sessions in `dir` (created `0700` if missing), tokens keyed by `secret`.
    /// Checkpoints every second.
    pub fn new(dir: impl Into<PathBuf>, secret: Secret) -> Self {
        PersistOptions {
            dir: dir.into(),
            secret,
            checkpoint_interval: Duration::from_secs(1),
        }
    }

    /// How often rotated sessions are written (one transaction each time; at least
    /// 1 ms).
    pub fn checkpoint_interval(mut self, every: Duration) -> Self {
        self.checkpoint_interval = every.max(Duration::from_millis(1));
        self
    }
}

/// A [`Store`] whose sessions survive restarts: see the [crate docs](crate#durable-sessions-feature-persist).
///
/// `authenticate`, `sessions` and the reads are the in-memory store's (lock-free, no
/// disk); `issue`, `revoke` and `revoke_user` wait for their commit. Dropping it (or
/// [`close`](Self::close)) writes a final checkpoint; do that after the last
/// `authenticate`, so the checkpoint holds its rotation.
pub struct PersistentStore<C: Clock + 'static = SystemClock> {
    store: Arc<Store<C>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    last_error: Arc<Mutex<Option<Arc<PersistError>>>>,
}

impl<C: Clock + 'static> std::fmt::Debug for PersistentStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistentStore")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: &PersistError) -> Unavailable {
    let mut detail = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        detail.push_str(": ");
        detail.push_str(&c.to_string());
        cause = c.source();
    }
    Unavailable::new(detail)
}

impl<C: Clock + 'static> PersistentStore<C> {
    /// Opens the session file in `options`' directory (creating it if there is none)
    /// and loads every session into a store built by `builder`. The file is refused
    /// whole, with a clear error, if anything in it is wrong.
    pub fn open(builder: Builder<C>, options: PersistOptions) -> Result<Self, PersistError> {
        let PersistOptions {
            dir,
            secret,
            checkpoint_interval,
        } = options;
        let store = Arc::new(builder.build_keyed(secret.token_key())?);
        // redb is not written against hostile files: a panic inside it on a damaged
        // one is a refusal of the file, never a crash of the embedding process. Only
        // redb's calls run under the catch; the records are decoded outside it.
        let (db, rows) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let db = file::open_database(&dir, &secret)?;
            match file::read_all(&db) {
                Ok(rows) => Ok((db, rows)),
                Err(e) => {
                    // Before the error is returned: see `file::then_drop`.
                    drop(db);
                    Err(e)
                }
            }
        }))
        .unwrap_or_else(|_| {
            Err(PersistError::Corrupt(
                "the database engine failed on this file".into(),
            ))
        })?;
        let saved = file::restore(&rows, &store)?;
        let max_stream = rows.max_stream;
        drop(rows);
        let shared = Arc::new(Shared::new());
        let last_error = Arc::new(Mutex::new(None));
        let committer = Committer {
            store: store.clone(),
            shared: shared.clone(),
            db: Some(db),
            dir,
            secret,
            interval: checkpoint_interval,
            on_disk: saved.into_iter().map(|(s, bits)| (s, (bits, 0))).collect(),
            scan: 0,
            max_stream,
            last_error: last_error.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("baton-persist".into())
            .spawn(move || committer.run())
            .map_err(PersistError::io("start the writer thread"))?;
        Ok(PersistentStore {
            store,
            shared,
            thread: Some(thread),
            last_error,
        })
    }

    /// The in-memory store (for its reads: stats, policy, clock). Changing sessions
    /// through it bypasses durability, so its `issue` and `revoke` are not durable.
    pub fn store(&self) -> &Store<C> {
        &self.store
    }

    /// Signs `uid` in: [`Store::issue`], durable before it returns. A failed commit
    /// (full or read-only disk) undoes the sign-in and answers `Unavailable`.
    pub fn issue<'a>(&self, uid: &'a str) -> Result<Credentials<'a>, BackendError<InputError>> {
        let mut ops = Vec::with_capacity(2);
        let mut client = None;
        let creds = self
            .store
            .issue_noting(uid, |change| match change {
                Change::Issued {
                    uid,
                    client: c,
                    stream,
                    created_ms,
                } => {
                    client = Some(*c);
                    ops.push(Op::Issued { stream });
                    ops.push(Op::Put {
                        stream,
                        record: file::encode(0, created_ms, c, uid),
                        bits: 0,
                    })
                }
                Change::Ended { stream } => ops.push(Op::Delete { stream }),
            })
            .map_err(BackendError::Refused)?;
        match self.shared.write(ops) {
            Ok(()) => Ok(creds),
            Err(e) => {
                if let Some(c) = client {
                    // Nobody holds its token yet: ending it answers as if never issued.
                    let _ = self.store.end_sessions(uid, Some(&c), |_| {});
                }
                Err(BackendError::Unavailable(unavailable(&e)))
            }
        }
    }

    /// [`Store::authenticate`]: lock-free, no disk; the rotation is checkpointed later.
    #[inline]
    pub fn authenticate<'a>(
        &self,
        uid: &'a str,
        client: &str,
        token: &str,
    ) -> Result<Authenticated<'a>, Rejection> {
        self.store.authenticate(uid, client, token)
    }

    /// Ends one session: [`Store::revoke`], durable before it returns.
    pub fn revoke(&self, uid: &str, client: &str) -> Result<bool, BackendError<InputError>> {
        crate::error::check_uid(uid).map_err(BackendError::Refused)?;
        let client = ClientId::parse(client).map_err(BackendError::Refused)?;
        self.end(uid, Some(client.raw())).map(|n| n > 0)
    }

    /// Ends every session of `uid`: [`Store::revoke_user`], durable before it returns.
    pub fn revoke_user(&self, uid: &str) -> Result<usize, BackendError<InputError>> {
        crate::error::check_uid(uid).map_err(BackendError::Refused)?;
        self.end(uid, None)
    }

    fn end(
        &self,
        uid: &str,
        client: Option<&[u8; crate::token::CLIENT_BYTES]>,
    ) -> Result<usize, BackendError<InputError>> {
        let mut ops = Vec::new();
        let n = self
            .store
            .end_sessions(uid, client, |stream| ops.push(Op::Delete { stream }))
            .map_err(BackendError::Refused)?;
        if ops.is_empty() {
            return Ok(n);
        }
        self.shared
            .write(ops)
            .map_err(|e| BackendError::Unavailable(unavailable(&e)))?;
        Ok(n)
    }

    /// [`Store::sessions`].
    pub fn sessions(&self, uid: &str) -> Result<Vec<SessionInfo>, InputError> {
        self.store.sessions(uid)
    }

    /// Writes every session rotated since its last checkpoint, now, and waits.
    pub fn checkpoint(&self) -> Result<(), PersistError> {
        self.shared.checkpoint().map_err(|e| clone_error(&e))
    }

    /// Writes a final checkpoint, compacts the file and closes it; the error of that
    /// checkpoint, if it failed. Compaction is best effort and never the error: it only
    /// rewrites what is already durable, in ordinary commits, so a crash or a failure
    /// during it (a full disk) leaves the file whole. Dropping the store does the same
    /// and discards the error.
    pub fn close(mut self) -> Result<(), PersistError> {
        self.shut();
        match self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some(e) => Err(clone_error(&e)),
            None => Ok(()),
        }
    }

    /// Ends the writer without a final checkpoint, leaving the file as a crash at this
    /// instant would: for tests of recovery. Not part of the stable API.
    #[doc(hidden)]
    pub fn crash(mut self) {
        if let Some(t) = self.thread.take() {
            self.shared.crash();
            let _ = t.join();
        }
    }

    fn shut(&mut self) {
        if let Some(t) = self.thread.take() {
            *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
            self.shared.stop();
            let _ = t.join();
        }
    }
}

/// An owned copy of a shared error, for callers that return `PersistError` by value.
fn clone_error(e: &PersistError) -> PersistError {
    match e {
        PersistError::Closed => PersistError::Closed,
        e => PersistError::Io {
            what: "write the session file",
            source: std::io::Error::other(unavailable(e).detail().to_owned()),
        },
    }
}

impl<C: Clock + 'static> Drop for PersistentStore<C> {
    fn drop(&mut self) {
        self.shut();
    }
}
