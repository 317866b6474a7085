//! Why a durable store could not open, or could not make a change durable.

use std::fmt;
use std::io;

use crate::config::ConfigError;

/// Why [`PersistentStore::open`](crate::PersistentStore::open) refused, or a durable
/// step failed. No variant ever holds a token or the secret.
#[derive(Debug)]
#[non_exhaustive]
pub enum PersistError {
    /// The store's settings are out of range.
    Config(ConfigError),
    /// The secret is shorter than [`MIN_SECRET_LEN`](crate::persist::MIN_SECRET_LEN) bytes.
    SecretTooShort,
    /// A file or directory could not be created, read or written; `what` says which.
    Io {
        /// What was being done.
        what: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// Another process (or another store in this one) has the file open.
    InUse,
    /// The file is not a baton session file (another redb database, or nothing yet).
    Foreign,
    /// The file was written by a newer baton, in a format this one cannot read.
    NewerVersion(u32),
    /// The secret is not the one the file was written with.
    WrongKey,
    /// The file is damaged: a record or the database structure does not parse.
    Corrupt(String),
    /// The database engine failed (a full or read-only disk, an I/O error).
    Database(redb::Error),
    /// The store was closed.
    Closed,
}

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PersistError::Config(_) => f.write_str("invalid store settings"),
            PersistError::SecretTooShort => write!(
                f,
                "the secret is shorter than {} bytes",
                super::MIN_SECRET_LEN
            ),
            PersistError::Io { what, .. } => write!(f, "could not {what}"),
            PersistError::InUse => f.write_str("the session file is open in another store"),
            PersistError::Foreign => f.write_str("not a baton session file"),
            PersistError::NewerVersion(v) => {
                write!(
                    f,
                    "session file format {v} is newer than this baton reads ({})",
                    super::file::FORMAT
                )
            }
            PersistError::WrongKey => {
                f.write_str("the secret does not match the one the session file was written with")
            }
            PersistError::Corrupt(what) => write!(f, "the session file is corrupted: {what}"),
            PersistError::Database(_) => f.write_str("the session database failed"),
            PersistError::Closed => f.write_str("the durable store is closed"),
        }
    }
}

impl std::error::Error for PersistError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PersistError::Config(e) => Some(e),
            PersistError::Io { source, .. } => Some(source),
            PersistError::Database(e) => Some(e),
            _ => None,
        }
    }
}

impl PersistError {
    pub(crate) fn io(what: &'static str) -> impl FnOnce(io::Error) -> PersistError {
        move |source| PersistError::Io { what, source }
    }
}

impl From<redb::Error> for PersistError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::DatabaseAlreadyOpen => PersistError::InUse,
            redb::Error::Corrupted(what) => PersistError::Corrupt(what),
            redb::Error::UpgradeRequired(v) => {
                PersistError::Corrupt(format!("redb file format {v} needs an upgrade"))
            }
            e => PersistError::Database(e),
        }
    }
}

/// Every redb error type converts into `redb::Error`, then into ours.
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for PersistError {
            fn from(e: $t) -> Self {
                PersistError::from(redb::Error::from(e))
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<ConfigError> for PersistError {
    fn from(e: ConfigError) -> Self {
        PersistError::Config(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_send_sync_static_and_says_each_cause_once() {
        fn check<T: Send + Sync + 'static>() {}
        check::<PersistError>();
        let e = PersistError::Io {
            what: "create the data directory",
            source: io::Error::other("no space left"),
        };
        assert_eq!(e.to_string(), "could not create the data directory");
        assert_eq!(
            std::error::Error::source(&e).unwrap().to_string(),
            "no space left"
        );
        assert_eq!(
            PersistError::NewerVersion(9).to_string(),
            "session file format 9 is newer than this baton reads (1)"
        );
    }
}
