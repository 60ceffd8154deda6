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
pub const SCHEMA_VERSION: i32 = schema::SCHEMA_VERSION;

/// The `PRAGMA application_id` of every database this crate creates ("ESLG").
pub const APPLICATION_ID: i32 = schema::APPLICATION_ID;
