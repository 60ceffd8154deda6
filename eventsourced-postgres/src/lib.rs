#![doc = include_str!("../README.md")]

mod config;
mod error;
mod event_log;
mod listener;
mod lookup;
mod pooled;
mod shape;
mod snapshot_store;
mod tables;
mod writer;

pub use config::{PostgresConfig, TlsMode};
pub use error::PostgresError;
pub use event_log::{MAX_ID_LEN, MAX_TYPE_NAME_LEN, PostgresEventLog};
pub use snapshot_store::PostgresSnapshotStore;
pub use tables::Tables;

/// The pool type handed out by [`PostgresEventLog::pool`], re-exported so users
/// need no direct dependency on deadpool-postgres.
pub use deadpool_postgres::Pool;
