#![doc = include_str!("../README.md")]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![deny(unused_must_use)]
#![forbid(unsafe_code)]

pub mod binarize;
mod entity;
mod entity_ref;
pub mod event_log;
mod event_sourced;
mod seq;
pub mod snapshot_store;
#[cfg(feature = "testkit")]
pub mod testkit;

#[cfg(feature = "prost")]
pub use binarize::Prost;
#[cfg(feature = "serde_json")]
pub use binarize::SerdeJson;
pub use binarize::{Binarize, BinarizeError};
pub use entity::{EntityBuilder, EntityOptions, EventSourcedExt, SpawnError};
pub use entity_ref::{EntityRef, HandleCommandError};
pub use event_log::{EventEnvelope, EventLog, EventLogError, MemoryEventLog};
pub use event_sourced::{Command, CommandEffect, EventSourced};
pub use seq::{Position, SeqNo};
pub use snapshot_store::{
    MemorySnapshotStore, NoopSnapshotStore, SnapshotStore, SnapshotStoreError,
};
