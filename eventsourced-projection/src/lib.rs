#![doc = include_str!("../README.md")]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![deny(unused_must_use)]
#![forbid(unsafe_code)]

mod config;
mod error;
mod event;
pub mod lag;
mod lease;
mod memory;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "postgres")]
pub mod postgres;
mod projection;
mod sink;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod state;
mod strategy;

pub use config::ProjectionConfig;
pub use error::{HandlerError, ProjectionError};
pub use event::ProjectedEvent;
pub use lag::LagSource;
pub use lease::{InProcessLease, Lease, LeaseGuard};
pub use memory::{MemoryLag, MemoryOffsetStore};
pub use projection::{MAX_NAME_BYTES, Projection, ProjectionBuilder};
pub use sink::{AtLeastOnce, Batch, BatchError, Delivery, Handler, OffsetStore, ProjectionSink};
pub use state::{ErrorAction, LastError, Phase, ProjectionState};
pub use strategy::{ErrorStrategy, Exhausted, RetryPolicy};
