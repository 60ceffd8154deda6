#![doc = include_str!("../README.md")]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![deny(unused_must_use)]
#![forbid(unsafe_code)]

mod config;
mod connection;
mod error;
mod event_log;
mod frame;
mod snapshot_store;
mod subject;

pub use config::{NatsAuth, NatsConfig, Secret, Storage, TlsConfig};
pub use error::NatsError;
pub use event_log::NatsEventLog;
pub use snapshot_store::NatsSnapshotStore;
