//! How far a projection is behind the head of the log.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! # use eventsourced::{Binarize, EventLog, SeqNo, SerdeJson};
//! use eventsourced::{MemoryEventLog, Position};
//! use eventsourced_projection::{LagSource, MemoryLag};
//!
//! let log = MemoryEventLog::default();
//! # let e = SerdeJson.encode(&1i64).unwrap();
//! # log.append("counter", "a", SeqNo::ZERO, &[e.clone(), e.clone(), e]).await.unwrap();
//! // ... three events of type "counter" appended ...
//! let lag = MemoryLag(log);
//! assert_eq!(lag.events_after("counter", None).await.unwrap(), 3);
//! assert_eq!(lag.events_after("counter", Some(Position::new(2))).await.unwrap(), 1);
//! # }
//! ```

use eventsourced::{Position, event_log::BoxError};
use futures::future::BoxFuture;

/// Counts the events of an entity type after an offset: the lag of a
/// projection at that offset. The core `EventLog` has no head query, so each
/// backend provides its own (`MemoryLag`, `PostgresLag`, `SqliteLag`,
/// `NatsLag`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # use eventsourced::{Binarize, EventLog, SeqNo, SerdeJson};
/// use eventsourced::{MemoryEventLog, Position};
/// use eventsourced_projection::{LagSource, MemoryLag};
///
/// let log = MemoryEventLog::default();
/// # let e = SerdeJson.encode(&1i64).unwrap();
/// # log.append("counter", "a", SeqNo::ZERO, &[e.clone(), e.clone(), e]).await.unwrap();
/// // ... three events of type "counter" appended ...
/// let lag = MemoryLag(log);
/// assert_eq!(lag.events_after("counter", None).await.unwrap(), 3);
/// assert_eq!(lag.events_after("counter", Some(Position::new(2))).await.unwrap(), 1);
/// # }
/// ```
pub trait LagSource: Send + Sync + std::fmt::Debug + 'static {
    /// The number of events of `type_name` with a position after `offset`
    /// (all of them for `None`).
    fn events_after(
        &self,
        type_name: &str,
        offset: Option<Position>,
    ) -> BoxFuture<'_, Result<u64, BoxError>>;
}
