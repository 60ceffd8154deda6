//! Persistence for snapshots: the [`SnapshotStore`] contract.
//!
//! A snapshot is an entity's state as bytes together with the seq_no of the last
//! event it includes. Recovery loads the latest snapshot and replays only the
//! events after it.
//!
//! ```
//! use eventsourced::snapshot_store::{MemorySnapshotStore, SnapshotStore};
//! use eventsourced::SeqNo;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemorySnapshotStore::new();
//! store.save("counter", "c-1", SeqNo::new(10), "10".into()).await?;
//! let (seq_no, state) = store.load("counter", "c-1").await?.expect("saved");
//! assert_eq!(state, "10");
//! // Recovery decodes `state`, then replays the events from here on.
//! assert_eq!(seq_no.next(), SeqNo::new(11));
//! # Ok(()) }
//! ```

mod memory;

pub use memory::{MemorySnapshotStore, NoopSnapshotStore};

use crate::{SeqNo, event_log::BoxError};
use bytes::Bytes;
use std::future::Future;

/// A pluggable store keeping the latest snapshot per entity.
///
/// # Contract
///
/// - [`save`](SnapshotStore::save) replaces the entity's snapshot, unless the
///   stored one has a higher seq_no (a late, older save never wins).
/// - [`load`](SnapshotStore::load) returns the latest saved snapshot or `None`.
/// - Entities of different types with the same id never share a snapshot.
///
/// The conformance suite `testkit::snapshot_store` (cargo feature `testkit`)
/// checks all of this.
///
/// ```
/// use eventsourced::{MemorySnapshotStore, SeqNo, SnapshotStore};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemorySnapshotStore::default();
/// store.save("counter", "c-1", SeqNo::new(200), "{\"value\":7}".into()).await?;
/// store.save("counter", "c-1", SeqNo::new(100), "older".into()).await?; // ignored
/// let (seq_no, _state) = store.load("counter", "c-1").await?.expect("saved");
/// assert_eq!(seq_no, SeqNo::new(200));
/// # Ok(()) }
/// ```
pub trait SnapshotStore: Clone + Send + Sync + 'static {
    /// Saves the state of entity `type_name`/`id` as of `seq_no`.
    fn save(
        &self,
        type_name: &str,
        id: &str,
        seq_no: SeqNo,
        state: Bytes,
    ) -> impl Future<Output = Result<(), SnapshotStoreError>> + Send;

    /// Loads the latest snapshot of entity `type_name`/`id`.
    fn load(
        &self,
        type_name: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<(SeqNo, Bytes)>, SnapshotStoreError>> + Send;
}

/// What can go wrong with a [`SnapshotStore`] operation.
///
/// ```
/// use eventsourced::SnapshotStoreError;
///
/// // How a backend reports a snapshot that it cannot read back:
/// let error = SnapshotStoreError::Corrupt {
///     backend: "sqlite",
///     location: "table snapshots, counter/c-1".to_owned(),
///     reason: "negative seq_no".to_owned(),
/// };
/// assert_eq!(
///     error.to_string(),
///     "corrupt snapshot in sqlite store at table snapshots, counter/c-1: negative seq_no"
/// );
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotStoreError {
    /// The backend cannot store this id; nothing was written.
    #[error("invalid entity id {id:?} for the snapshot store: {reason}")]
    InvalidId {
        /// The refused id.
        id: String,
        /// Why it was refused.
        reason: String,
    },

    /// Stored data that cannot be read back.
    #[error("corrupt snapshot in {backend} store at {location}: {reason}")]
    Corrupt {
        /// The backend, e.g. "sqlite".
        backend: &'static str,
        /// Where: a file, table, entity.
        location: String,
        /// What is wrong.
        reason: String,
    },

    /// The backend failed.
    #[error("{backend} snapshot store failed to {operation}: {source}")]
    Backend {
        /// The backend, e.g. "postgres".
        backend: &'static str,
        /// What was attempted, e.g. "save".
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

impl SnapshotStoreError {
    /// Wraps a backend error.
    ///
    /// ```
    /// use eventsourced::SnapshotStoreError;
    /// let e = SnapshotStoreError::backend("nats", "load", std::io::Error::other("timed out"));
    /// assert_eq!(e.to_string(), "nats snapshot store failed to load: timed out");
    /// ```
    pub fn backend(
        backend: &'static str,
        operation: &'static str,
        source: impl Into<BoxError>,
    ) -> Self {
        SnapshotStoreError::Backend {
            backend,
            operation,
            source: source.into(),
        }
    }
}
