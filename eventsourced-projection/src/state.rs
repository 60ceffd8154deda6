//! The queryable state of a projection.

use crate::{Delivery, ErrorStrategy};
use eventsourced::{Position, SeqNo};

/// A snapshot of a projection's state, from [`Projection::state`](crate::Projection::state).
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
