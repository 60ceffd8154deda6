//! The queryable state of a projection.

use crate::{Delivery, ErrorStrategy};
use eventsourced::{Position, SeqNo};

/// A snapshot of a projection's state, from [`Projection::state`](crate::Projection::state).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # use eventsourced::{Binarize, EventLog, MemoryEventLog, Position, SeqNo, SerdeJson};
/// # use eventsourced_projection::*;
/// # use std::time::Duration;
/// # struct Noop;
/// # impl Handler for Noop {
/// #     type Event = i64;
/// #     async fn handle(&mut self, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> { Ok(()) }
/// # }
/// # let log = MemoryEventLog::default();
/// # let e = SerdeJson.encode(&1i64).unwrap();
/// # log.append("counter", "a", SeqNo::ZERO, &[e.clone(), e]).await.unwrap();
/// # let sink = AtLeastOnce::new(MemoryOffsetStore::default(), Noop);
/// let projection = Projection::builder("state-struct-doc", "counter", log, SerdeJson, sink).build().unwrap();
/// projection.run().await;
/// let state = projection.wait_for(|s| s.handled == 2, Duration::from_secs(10)).await.expect("handled");
/// assert_eq!(state.name, "state-struct-doc");
/// assert_eq!(state.delivery, Delivery::AtLeastOnce);
/// assert_eq!((state.offset, state.skipped, state.last_error), (Some(Position::new(2)), 0, None));
/// projection.stop().await;
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProjectionState {
    /// The projection's name.
    pub name: String,
    /// What it is doing.
    pub phase: Phase,
    /// Whether its task runs (waiting for the lease, handling, or backing off).
    pub running: bool,
    /// The last committed offset: the position of the last handled event.
    /// While the instance waits for the lease, the offset stored by the one
    /// that holds it, read again every second; `None` before it is read.
    pub offset: Option<Position>,
    /// Events of the type after the offset, if the projection has a lag source
    /// and the query succeeded.
    pub lag: Option<u64>,
    /// Exactly once or at least once, from the sink.
    pub delivery: Delivery,
    /// The error strategy.
    pub error_strategy: ErrorStrategy,
    /// The last error, if any (kept after recovery, for inspection).
    pub last_error: Option<LastError>,
    /// Events committed since this handle was created.
    pub handled: u64,
    /// Events skipped since this handle was created.
    pub skipped: u64,
}

/// What a projection is doing.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # use eventsourced::{Binarize, EventLog, MemoryEventLog, Position, SeqNo, SerdeJson};
/// # use eventsourced_projection::*;
/// # use std::time::Duration;
/// # struct Noop;
/// # impl Handler for Noop {
/// #     type Event = i64;
/// #     async fn handle(&mut self, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> { Ok(()) }
/// # }
/// # let log = MemoryEventLog::default();
/// # let e = SerdeJson.encode(&1i64).unwrap();
/// # log.append("counter", "a", SeqNo::ZERO, &[e.clone(), e]).await.unwrap();
/// # let sink = AtLeastOnce::new(MemoryOffsetStore::default(), Noop);
/// let projection = Projection::builder("phase-doc", "counter", log, SerdeJson, sink).build().unwrap();
/// assert_eq!(projection.state().await.phase, Phase::Stopped);
/// projection.run().await;
/// let running = projection.wait_for(|s| s.phase == Phase::Running, Duration::from_secs(10)).await;
/// assert!(running.is_some());
/// projection.stop().await;
/// assert_eq!(projection.state().await.phase, Phase::Stopped);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Not started, or stopped with [`Projection::stop`](crate::Projection::stop).
    Stopped,
    /// Waiting for the lease (another instance holds it).
    WaitingForLease,
    /// Holding the lease, following the log.
    Running,
    /// Waiting to retry a failed event (see [`LastError`]).
    Retrying,
    /// An infrastructure error (log, offset store, lease): reopening after a backoff.
    Restarting,
    /// Stopped by its error strategy; [`ProjectionState::last_error`] says why.
    Failed,
}

/// The last error of a projection and what was done about it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # use eventsourced::{Binarize, EventLog, MemoryEventLog, Position, SeqNo, SerdeJson};
/// # use eventsourced_projection::*;
/// # use std::time::Duration;
/// # struct Noop;
/// # impl Handler for Noop {
/// #     type Event = i64;
/// #     async fn handle(&mut self, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> { Err(HandlerError::msg("boom")) }
/// # }
/// # let log = MemoryEventLog::default();
/// # let e = SerdeJson.encode(&1i64).unwrap();
/// # log.append("counter", "a", SeqNo::ZERO, &[e.clone(), e]).await.unwrap();
/// # let sink = AtLeastOnce::new(MemoryOffsetStore::default(), Noop);
/// // The handler fails with "boom"; the default strategy stops.
/// let projection = Projection::builder("last-error-doc", "counter", log, SerdeJson, sink).build().unwrap();
/// projection.run().await;
/// let state = projection.wait_for(|s| s.phase == Phase::Failed, Duration::from_secs(10)).await.expect("failed");
/// let last = state.last_error.unwrap();
/// assert_eq!((last.message.as_str(), last.id.as_deref()), ("boom", Some("a")));
/// assert_eq!((last.position, last.attempts), (Some(Position::new(1)), 1));
/// assert_eq!(last.action, ErrorAction::Stopped);
/// projection.stop().await;
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LastError {
    /// The error, displayed.
    pub message: String,
    /// The position of the failing event, if an event failed.
    pub position: Option<Position>,
    /// The id of the failing event's entity.
    pub id: Option<String>,
    /// The failing event's seq_no.
    pub seq_no: Option<SeqNo>,
    /// Failed attempts on that event so far.
    pub attempts: u32,
    /// What the projection did.
    pub action: ErrorAction,
}

/// What a projection did about an error.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # use eventsourced::{Binarize, EventLog, MemoryEventLog, Position, SeqNo, SerdeJson};
/// # use eventsourced_projection::*;
/// # use std::time::Duration;
/// # struct Noop;
/// # impl Handler for Noop {
/// #     type Event = i64;
/// #     async fn handle(&mut self, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> { Err(HandlerError::msg("boom")) }
/// # }
/// # let log = MemoryEventLog::default();
/// # let e = SerdeJson.encode(&1i64).unwrap();
/// # log.append("counter", "a", SeqNo::ZERO, &[e.clone(), e]).await.unwrap();
/// # let sink = AtLeastOnce::new(MemoryOffsetStore::default(), Noop);
/// // The handler fails with "boom" on every event.
/// let projection = Projection::builder("error-action-doc", "counter", log, SerdeJson, sink).error_strategy(ErrorStrategy::Skip).build().unwrap();
/// projection.run().await;
/// let state = projection.wait_for(|s| s.skipped == 2, Duration::from_secs(10)).await.expect("skipped");
/// assert_eq!(state.last_error.unwrap().action, ErrorAction::Skipped);
/// assert_eq!(state.handled, 0);
/// projection.stop().await;
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorAction {
    /// The event is retried after a backoff.
    Retrying,
    /// The event was skipped.
    Skipped,
    /// The projection stopped.
    Stopped,
    /// The projection reopens the log (and the lease) after a backoff.
    Restarting,
}
