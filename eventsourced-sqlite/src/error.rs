//! [`SqliteError`]: what can go wrong opening a database file.

use std::path::PathBuf;

/// Why a database could not be opened. When one of these is returned, the
/// file was not modified.
///
/// Failures of [`EventLog`](eventsourced::EventLog) and
/// [`SnapshotStore`](eventsourced::SnapshotStore) operations are reported as
/// [`EventLogError`](eventsourced::EventLogError) and
/// [`SnapshotStoreError`](eventsourced::SnapshotStoreError).
///
/// ```
/// use eventsourced_sqlite::{SqliteError, SqliteEventLog};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("notes.txt");
/// std::fs::write(&path, "plain text, certainly not an SQLite database\n")?;
/// let error = SqliteEventLog::open(&path).unwrap_err();
/// assert!(matches!(error, SqliteError::NotADatabase { .. }));
/// // The file was left as it was.
/// assert!(std::fs::read_to_string(&path)?.starts_with("plain text"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// The configuration is invalid.
    #[error("invalid sqlite configuration: {0}")]
    InvalidConfig(String),

    /// A file system operation failed (creating the directory, reading the
    /// file header).
    #[error("cannot {operation} {}: {source}", path.display())]
    Io {
        /// What was attempted.
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// The file exists but is not an SQLite database at all.
    #[error(
        "{} is not an SQLite database (wrong file header); point the event log at a new file or at one it created",
        path.display()
    )]
    NotADatabase {
        /// The file.
        path: PathBuf,
    },

    /// The file is an SQLite database of another application: it has tables
    /// but not this crate's application id.
    #[error(
        "{} is an SQLite database of another application (application_id {application_id:#x}, {tables} tables); the event log only opens files it created",
        path.display()
    )]
    NotOurDatabase {
        /// The file.
        path: PathBuf,
        /// Its `PRAGMA application_id`.
        application_id: i32,
        /// How many tables, indexes and views it has.
        tables: i64,
    },

    /// The file was written by a newer version of this crate.
    #[error(
        "{} has schema version {found}, newer than {supported}, the newest this version of eventsourced-sqlite knows; upgrade eventsourced-sqlite",
        path.display()
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// The version stored in the file.
        found: i32,
        /// The newest version this crate knows.
        supported: i32,
    },

    /// The file carries this crate's application id but a schema version it
    /// never wrote.
    #[error(
        "{} has unknown schema version {found} (this crate writes {supported}); the file was not created by eventsourced-sqlite or was altered",
        path.display()
    )]
    UnknownSchema {
        /// The file.
        path: PathBuf,
        /// The version stored in the file.
        found: i32,
        /// The version this crate writes.
        supported: i32,
    },

    /// The file is shorter than its header says: it was truncated.
    #[error(
        "{} is truncated: its header promises {expected} bytes but the file has {actual}; restore it from a backup",
        path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The size the header promises.
        expected: u64,
        /// The file's size.
        actual: u64,
    },

    /// SQLite reports the file as corrupt.
    #[error("{} is corrupt: {source}; restore it from a backup", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// SQLite's report.
        #[source]
        source: rusqlite::Error,
    },

    /// The file is already open in this process with a different
    /// configuration.
    #[error(
        "{} is already open in this process with a different configuration; clone the open SqliteEventLog or open it with the same SqliteConfig",
        path.display()
    )]
    OpenWithOtherConfig {
        /// The file.
        path: PathBuf,
    },

    /// Another SQLite failure while opening.
    #[error("cannot {operation} {}: {source}", path.display())]
    Sqlite {
        /// What was attempted.
        operation: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
}
