//! Persistence for events: the [`EventLog`] contract every backend implements.
//!
//! The log works with bytes; turning events into bytes is the runtime's job (see
//! [`Binarize`](crate::Binarize)). Entities are addressed by their type name
//! ([`EventSourced::TYPE_NAME`](crate::EventSourced::TYPE_NAME)) and their id as a
//! string.
//!
//! ```
//! use eventsourced::event_log::{EventLog, EventLogError, MemoryEventLog};
//! use eventsourced::SeqNo;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), EventLogError> {
//! let log = MemoryEventLog::new();
//! // Events are bytes, addressed by type name and id.
//! log.append("counter", "c-1", SeqNo::ZERO, &["+1".into()]).await?;
//! assert_eq!(log.last_seq_no("counter", "c-1").await?, SeqNo::new(1));
//! assert_eq!(log.last_seq_no("counter", "c-2").await?, SeqNo::ZERO);
//! assert_eq!(log.last_seq_no("invoice", "c-1").await?, SeqNo::ZERO);
//! # Ok(()) }
//! ```

mod memory;

pub use memory::MemoryEventLog;

use crate::{Position, SeqNo};
use bytes::Bytes;
use futures::Stream;
use std::{error::Error as StdError, future::Future};

/// A boxed error from a backend, kept as the `source` of [`EventLogError::Backend`].
///
/// ```
/// use eventsourced::{EventLogError, event_log::BoxError};
/// use std::error::Error;
///
/// let cause: BoxError = std::io::Error::other("disk full").into();
/// let error = EventLogError::backend("sqlite", "append", cause);
/// let source = error.source().expect("a backend error keeps its cause");
/// assert_eq!(source.to_string(), "disk full");
/// ```
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A pluggable, append-only log of events.
///
/// # Contract
///
/// - [`append`](EventLog::append) is atomic: all events or none. It succeeds only
///   if the entity's last seq_no equals `expected_last`; otherwise it writes nothing
///   and returns [`EventLogError::Conflict`]. Seq_nos start at 1 and have no gaps.
///   Appending no events writes nothing: it returns the last seq_no when it equals
///   `expected_last` and a conflict otherwise (a pure optimistic check).
/// - [`events_by_id`](EventLog::events_by_id) is finite and in seq_no order.
/// - [`events_by_type`](EventLog::events_by_type) is live: it catches up, then
///   follows new appends. Positions are totally ordered; resuming from
///   `last_handled.next()` yields every later event exactly once, in order, even
///   when transactions commit out of order.
/// - Any id a user can write round-trips, or is refused with
///   [`EventLogError::InvalidId`] before anything is written.
/// - A stream item that is an error ends the stream; resume from the last position.
///
/// Implementations are cheap to clone (a handle over shared state).
/// The conformance suite `testkit::event_log` (cargo feature `testkit`)
/// checks all of this.
///
/// ```
/// use eventsourced::{EventLog, EventLogError, MemoryEventLog, SeqNo};
/// use futures::TryStreamExt;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), EventLogError> {
/// let log = MemoryEventLog::default();
/// let last = log.append("counter", "c-1", SeqNo::ZERO, &["+1".into(), "+2".into()]).await?;
/// assert_eq!(last, SeqNo::new(2));
///
/// // A writer that expects an older last seq_no gets a typed conflict.
/// let stale = log.append("counter", "c-1", SeqNo::new(1), &["+3".into()]).await;
/// assert!(stale.is_err_and(|e| e.is_conflict()));
///
/// let events: Vec<_> = log.events_by_id("counter", "c-1", SeqNo::new(2)).try_collect().await?;
/// assert_eq!(events, vec![(SeqNo::new(2), "+2".into())]);
/// # Ok(()) }
/// ```
pub trait EventLog: Clone + Send + Sync + 'static {
    /// Appends `events` atomically after `expected_last`; returns the new last seq_no.
    fn append(
        &self,
        type_name: &str,
        id: &str,
        expected_last: SeqNo,
        events: &[Bytes],
    ) -> impl Future<Output = Result<SeqNo, EventLogError>> + Send;

    /// The seq_no of the entity's last event, [`SeqNo::ZERO`] if it has none.
    fn last_seq_no(
        &self,
        type_name: &str,
        id: &str,
    ) -> impl Future<Output = Result<SeqNo, EventLogError>> + Send;

    /// The entity's events with seq_no `>= from`, in order; the stream ends at the
    /// last event stored when it reaches it.
    fn events_by_id(
        &self,
        type_name: &str,
        id: &str,
        from: SeqNo,
    ) -> impl Stream<Item = Result<(SeqNo, Bytes), EventLogError>> + Send + 'static + use<Self>;

    /// All events of an entity type with position `>= from`, in position order,
    /// then live: the stream waits for and yields new events and never ends on
    /// its own (only with an error).
    ///
    /// The stream borrows neither the log nor the arguments (`use<Self>`), so
    /// it can outlive them, e.g. be returned for a type name built on the spot:
    ///
    /// ```
    /// use eventsourced::{EventEnvelope, EventLog, EventLogError, MemoryEventLog, Position};
    /// use futures::Stream;
    ///
    /// fn follow<L: EventLog>(
    ///     log: &L,
    ///     tenant: &str,
    /// ) -> impl Stream<Item = Result<EventEnvelope, EventLogError>> + use<L> {
    ///     let type_name = format!("{tenant}-counter");
    ///     log.events_by_type(&type_name, Position::START)
    /// }
    ///
    /// let _events = follow(&MemoryEventLog::default(), "acme");
    /// ```
    fn events_by_type(
        &self,
        type_name: &str,
        from: Position,
    ) -> impl Stream<Item = Result<EventEnvelope, EventLogError>> + Send + 'static + use<Self>;
}

/// An event as delivered by [`EventLog::events_by_type`].
///
/// ```
/// use eventsourced::{EventLog, MemoryEventLog, Position, SeqNo};
/// use futures::{StreamExt, TryStreamExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let log = MemoryEventLog::new();
/// log.append("counter", "a", SeqNo::ZERO, &["+1".into()]).await?;
/// log.append("counter", "b", SeqNo::ZERO, &["+2".into()]).await?;
/// // The stream is live: take the two stored events, it would wait for more.
/// let events: Vec<_> = log.events_by_type("counter", Position::START).take(2).try_collect().await?;
/// let last = &events[1];
/// assert_eq!((last.id.as_str(), last.seq_no), ("b", SeqNo::new(1)));
/// assert_eq!(last.event, "+2");
/// assert!(events[0].position < last.position); // resume from `last.position.next()`
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEnvelope {
    /// Its position in the log: resume from `position.next()`.
    pub position: Position,
    /// The id of the entity that emitted it.
    pub id: String,
    /// Its seq_no within that entity.
    pub seq_no: SeqNo,
    /// The event's bytes, as produced by [`Binarize`](crate::Binarize).
    pub event: Bytes,
}

/// What can go wrong with an [`EventLog`] operation.
///
/// ```
/// use eventsourced::{EventLog, EventLogError, MemoryEventLog, SeqNo};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let log = MemoryEventLog::new();
/// match log.append("counter", "a", SeqNo::new(3), &["+1".into()]).await {
///     Err(EventLogError::Conflict { expected, actual, .. }) => {
///         assert_eq!((expected, actual), (SeqNo::new(3), SeqNo::ZERO));
///     }
///     other => panic!("expected a conflict, got {other:?}"),
/// }
/// let invalid = log.append("counter", "", SeqNo::ZERO, &["+1".into()]).await;
/// assert!(matches!(invalid, Err(EventLogError::InvalidId { .. })));
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventLogError {
    /// Another writer appended first: the log holds `actual`, the caller expected
    /// `expected`. Nothing was written.
    #[error(
        "conflict appending to entity {type_name}/{id}: expected last seq_no {expected}, but the log holds {actual}"
    )]
    Conflict {
        /// The entity type name.
        type_name: String,
        /// The entity id.
        id: String,
        /// The last seq_no the caller expected.
        expected: SeqNo,
        /// The last seq_no actually in the log.
        actual: SeqNo,
    },

    /// The backend cannot store this id (or type name); nothing was written.
    #[error("invalid entity id {id:?}: {reason}")]
    InvalidId {
        /// The refused id.
        id: String,
        /// Why it was refused.
        reason: String,
    },

    /// Stored data that the backend cannot read back (truncated, wrong shape).
    #[error("corrupt data in {backend} log at {location}: {reason}")]
    Corrupt {
        /// The backend, e.g. "sqlite".
        backend: &'static str,
        /// Where: a file, table, entity and seq_no.
        location: String,
        /// What is wrong.
        reason: String,
    },

    /// The backend failed: connection lost, I/O error, server error.
    #[error("{backend} event log failed to {operation}: {source}")]
    Backend {
        /// The backend, e.g. "postgres".
        backend: &'static str,
        /// What was attempted, e.g. "append".
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

impl EventLogError {
    /// Wraps a backend error.
    ///
    /// ```
    /// use eventsourced::EventLogError;
    /// let e = EventLogError::backend("sqlite", "append", std::io::Error::other("disk full"));
    /// assert_eq!(e.to_string(), "sqlite event log failed to append: disk full");
    /// ```
    pub fn backend(
        backend: &'static str,
        operation: &'static str,
        source: impl Into<BoxError>,
    ) -> Self {
        EventLogError::Backend {
            backend,
            operation,
            source: source.into(),
        }
    }

    /// Whether this is a [`Conflict`](EventLogError::Conflict).
    ///
    /// ```
    /// use eventsourced::{EventLog, EventLogError, MemoryEventLog, SeqNo};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let log = MemoryEventLog::new();
    /// log.append("counter", "a", SeqNo::ZERO, &["+1".into()]).await?;
    /// // A second writer that has not seen the first event:
    /// let stale = log.append("counter", "a", SeqNo::ZERO, &["+2".into()]).await.unwrap_err();
    /// assert!(stale.is_conflict());
    /// assert!(!EventLogError::backend("sqlite", "append", "disk full").is_conflict());
    /// # Ok(()) }
    /// ```
    pub fn is_conflict(&self) -> bool {
        matches!(self, EventLogError::Conflict { .. })
    }
}

/// Checks the id rules every backend shares: an id (and a type name) must not be
/// empty. Backends add their own limits on top.
///
/// ```
/// use eventsourced::event_log::validate_id;
/// assert!(validate_id("counter", "a.b c*>/ü").is_ok());
/// assert!(validate_id("counter", "").is_err());
/// ```
pub fn validate_id(type_name: &str, id: &str) -> Result<(), EventLogError> {
    if type_name.is_empty() {
        return Err(EventLogError::InvalidId {
            id: id.to_owned(),
            reason: "the entity type name is empty".to_owned(),
        });
    }
    if id.is_empty() {
        return Err(EventLogError::InvalidId {
            id: id.to_owned(),
            reason: format!("ids of entity type {type_name} must not be empty"),
        });
    }
    Ok(())
}
