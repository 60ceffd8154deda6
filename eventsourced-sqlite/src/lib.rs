#![doc = include_str!("../README.md")]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![deny(unused_must_use)]
#![forbid(unsafe_code)]

mod config;
mod error;
mod event_log;
mod reader;
mod schema;
mod snapshot_store;
mod writer;

pub use config::{Durability, SqliteConfig};
pub use error::SqliteError;
pub use event_log::SqliteEventLog;
pub use snapshot_store::SqliteSnapshotStore;

/// The schema version this crate writes (`PRAGMA user_version`).
///
/// ```
/// use eventsourced_sqlite::{SCHEMA_VERSION, SqliteEventLog};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("events.db");
/// let _log = SqliteEventLog::open(&path)?;
/// let conn = rusqlite::Connection::open(&path)?;
/// let version: i32 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
/// assert_eq!(version, SCHEMA_VERSION);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const SCHEMA_VERSION: i32 = schema::SCHEMA_VERSION;

/// The `PRAGMA application_id` of every database this crate creates ("ESLG").
///
/// ```
/// use eventsourced_sqlite::{APPLICATION_ID, SqliteEventLog};
///
/// assert_eq!(APPLICATION_ID.to_be_bytes(), *b"ESLG");
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("events.db");
/// let _log = SqliteEventLog::open(&path)?;
/// let conn = rusqlite::Connection::open(&path)?;
/// let id: i32 = conn.query_row("PRAGMA application_id", [], |row| row.get(0))?;
/// assert_eq!(id, APPLICATION_ID);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const APPLICATION_ID: i32 = schema::APPLICATION_ID;
