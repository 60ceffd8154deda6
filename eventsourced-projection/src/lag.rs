//! How far a projection is behind the head of the log.

use eventsourced::{Position, event_log::BoxError};
use futures::future::BoxFuture;

/// Counts the events of an entity type after an offset: the lag of a
/// projection at that offset. The core `EventLog` has no head query, so each
/// backend provides its own (`MemoryLag`, `PostgresLag`, `SqliteLag`,
/// `NatsLag`).
pub trait LagSource: Send + Sync + std::fmt::Debug + 'static {
    /// The number of events of `type_name` with a position after `offset`
    /// (all of them for `None`).
    fn events_after(
        &self,
        type_name: &str,
        offset: Option<Position>,
    ) -> BoxFuture<'_, Result<u64, BoxError>>;
}
