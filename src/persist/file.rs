//! The session file: a redb database with two tables, opened owner-only, checked
//! against the secret, and read whole into a fresh store (never half-loaded).
//!
//! - `meta`: `magic` (what the file is), `format` (u32 LE; newer is refused) and
//!   `key_check` (an HMAC of a fixed label under the secret: a wrong secret is a clear
//!   error, and the file holds nothing a token can be derived from), and `max_stream`,
//!   the highest stream ever handed out (a signed-out session's stream is gone from
//!   `sessions`, but its tokens were handed out: no later run may mint them again).
//! - `sessions`: stream (u64) -> record: the state word (u64 LE), creation time
//!   (ms, u64 LE), the client id's bytes, then the uid's UTF-8.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use redb::backends::FileBackend;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{PersistError, Secret};
use crate::clock::Clock;
use crate::store::{RestoreError, Store};
use crate::token::CLIENT_BYTES;

/// The file format this baton writes and reads.
pub(crate) const FORMAT: u32 = 1;
const MAGIC: &[u8] = b"baton sessions";
pub(crate) const FILE_NAME: &str = "sessions.redb";
/// The `meta` key of the highest stream ever handed out (u64 LE).
pub(crate) const MAX_STREAM: &str = "max_stream";

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const SESSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("sessions");

const HEAD: usize = 16 + CLIENT_BYTES;

/// A saved session's record.
pub(crate) fn encode(
    bits: u64,
    created_ms: u64,
    client: &[u8; CLIENT_BYTES],
    uid: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD + uid.len());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(&created_ms.to_le_bytes());
    out.extend_from_slice(client);
    out.extend_from_slice(uid.as_bytes());
    out
}

/// A record's fields: (state word, creation time, client, uid).
pub(crate) fn decode(record: &[u8]) -> Option<(u64, u64, [u8; CLIENT_BYTES], &str)> {
    if record.len() <= HEAD {
        return None;
    }
    let bits = u64::from_le_bytes(record[..8].try_into().ok()?);
    let created = u64::from_le_bytes(record[8..16].try_into().ok()?);
    let client: [u8; CLIENT_BYTES] = record[16..HEAD].try_into().ok()?;
    let uid = std::str::from_utf8(&record[HEAD..]).ok()?;
    Some((bits, created, client, uid))
}

/// Opens (or creates) the session file in `dir`, owner-only.
pub(crate) fn open_database(dir: &Path, secret: &Secret) -> Result<Database, PersistError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(PersistError::io("create the data directory"))?;
    let path = dir.join(FILE_NAME);
    if !path.exists() {
        create(dir, &path, secret)?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(PersistError::io("open the session file"))?;
    if file
        .metadata()
        .map_err(PersistError::io("read the session file's metadata"))?
        .len()
        == 0
    {
        // redb would initialise an empty file as a new database: an emptied file must
        // not silently become a store with nobody signed in.
        return Err(PersistError::Foreign);
    }
    let db = Database::builder().create_with_backend(FileBackend::new(file))?;
    match check_meta(&db, secret) {
        Ok(()) => Ok(db),
        Err(e) => {
            // Before the error is returned: see `then_drop`.
            drop(db);
            Err(e)
        }
    }
}

/// Runs `f` on `handle`, then drops the handle before handing back `f`'s result.
///
/// On a damaged file a redb handle's `Drop` may panic (the caller catches it). Rust
/// does not drop a function's return value when a local's destructor panics after the
/// value is made (rust-lang/rust#47949), so an error returned past a live handle would
/// leak. Here the result is a plain local while the handle drops, and unwinding frees it.
fn then_drop<H, T>(mut handle: H, f: impl FnOnce(&mut H) -> T) -> T {
    let out = f(&mut handle);
    drop(handle);
    out
}

/// Writes a new file under a temporary name and renames it into place, so a crash
/// never leaves a file without its `meta` table.
fn create(dir: &Path, path: &Path, secret: &Secret) -> Result<(), PersistError> {
    let tmp: PathBuf = dir.join(format!("{FILE_NAME}.new"));
    let _ = fs::remove_file(&tmp);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(PersistError::io("create the session file"))?;
    // The mode is filtered by the umask; owner-only must not depend on it.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(PersistError::io("make the session file owner-only"))?;
    {
        let db = Database::builder().create_with_backend(FileBackend::new(file))?;
        let tx = db.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            meta.insert("magic", MAGIC)?;
            meta.insert("format", FORMAT.to_le_bytes().as_slice())?;
            meta.insert("key_check", secret.key_check().as_slice())?;
            tx.open_table(SESSIONS)?;
        }
        tx.commit()?;
    }
    fs::rename(&tmp, path).map_err(PersistError::io("move the new session file into place"))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(PersistError::io("sync the data directory"))?;
    Ok(())
}

fn check_meta(db: &Database, secret: &Secret) -> Result<(), PersistError> {
    // Every redb handle is dropped through `then_drop`, never past an error.
    then_drop(db.begin_read()?, |tx| {
        let meta = match tx.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Err(PersistError::Foreign),
            Err(redb::TableError::TableTypeMismatch { .. }) => return Err(PersistError::Foreign),
            Err(e) => return Err(e.into()),
        };
        then_drop(meta, |meta| {
            let get = |k: &str| -> Result<Option<Vec<u8>>, PersistError> {
                let value = meta.get(k)?;
                Ok(value.map(|v| then_drop(v, |v| v.value().to_vec())))
            };
            if get("magic")?.as_deref() != Some(MAGIC) {
                return Err(PersistError::Foreign);
            }
            let format = get("format")?
                .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
                .map(u32::from_le_bytes)
                .ok_or_else(|| PersistError::Corrupt("no format number".into()))?;
            if format > FORMAT {
                return Err(PersistError::NewerVersion(format));
            }
            if format < 1 {
                return Err(PersistError::Corrupt(format!("format {format}")));
            }
            let check =
                get("key_check")?.ok_or_else(|| PersistError::Corrupt("no key check".into()))?;
            if !secret.matches(&check) {
                return Err(PersistError::WrongKey);
            }
            Ok(())
        })
    })
}

/// Every saved record, as the database holds it: read apart from decoding, so that
/// only the database engine's own code runs under the caller's `catch_unwind`.
pub(crate) struct Rows {
    /// `max_stream`, if any session was ever issued.
    pub(crate) max_stream: Option<u64>,
    /// The records, one after another.
    bytes: Vec<u8>,
    /// Each record's stream and where it ends in `bytes`.
    ends: Vec<(u64, usize)>,
}

/// Reads every record of the `sessions` table.
pub(crate) fn read_all(db: &Database) -> Result<Rows, PersistError> {
    // Every redb handle is dropped through `then_drop`, never past an error.
    then_drop(db.begin_read()?, |tx| {
        let max_stream = then_drop(tx.open_table(META)?, |meta| {
            let value = meta.get(MAX_STREAM)?;
            let Some(v) = value else {
                return Ok(None);
            };
            then_drop(v, |v| match <[u8; 8]>::try_from(v.value()) {
                Ok(b) => Ok(Some(u64::from_le_bytes(b))),
                Err(_) => Err(PersistError::Corrupt(
                    "the stream high-water mark does not parse".into(),
                )),
            })
        })?;
        let table = match tx.open_table(SESSIONS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                return Err(PersistError::Corrupt("no sessions table".into()))
            }
            Err(e) => return Err(e.into()),
        };
        then_drop(table, |table| {
            let mut rows = Rows {
                max_stream,
                bytes: Vec::new(),
                ends: Vec::new(),
            };
            then_drop(table.iter()?, |iter| {
                for row in iter {
                    let (k, v) = row?;
                    rows.bytes.extend_from_slice(v.value());
                    rows.ends.push((k.value(), rows.bytes.len()));
                }
                Ok::<_, PersistError>(())
            })?;
            Ok(rows)
        })
    })
}

/// Puts every record into `store` (fresh, reachable by nobody else yet) and returns
/// (stream, state word) of each. Any bad record refuses the whole file.
pub(crate) fn restore<C: Clock>(
    rows: &Rows,
    store: &Store<C>,
) -> Result<Vec<(u64, u64)>, PersistError> {
    let mut saved = Vec::with_capacity(rows.ends.len());
    let mut start = 0;
    for &(stream, end) in &rows.ends {
        let record = &rows.bytes[start..end];
        start = end;
        let (bits, created, client, uid) = decode(record).ok_or_else(|| {
            PersistError::Corrupt(format!("session record {stream} does not parse"))
        })?;
        store
            .restore(uid, client, stream, created, bits)
            .map_err(|e| {
                PersistError::Corrupt(match e {
                    RestoreError::Uid => format!("session record {stream} has an invalid uid"),
                    RestoreError::Word => format!("session record {stream} has an invalid state"),
                    RestoreError::Duplicate => format!("session record {stream} repeats a session"),
                })
            })?;
        saved.push((stream, bits));
    }
    store.raise_streams(saved.iter().map(|&(s, _)| s).chain(rows.max_stream));
    Ok(saved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_short_ones_are_refused() {
        let r = encode(u64::MAX >> 2, 17, &[3; CLIENT_BYTES], "a@b");
        assert_eq!(
            decode(&r),
            Some((u64::MAX >> 2, 17, [3; CLIENT_BYTES], "a@b"))
        );
        assert_eq!(decode(&r[..HEAD]), None, "an empty uid");
        assert_eq!(decode(&[]), None);
        let mut bad = r.clone();
        bad.push(0xff);
        assert_eq!(decode(&bad), None, "a uid that is not UTF-8");
    }
}
