//! Errors of projections and of their handlers.

use eventsourced::{BinarizeError, EventLogError, Position, SeqNo, event_log::BoxError};
use std::fmt;

/// What can go wrong when running a projection.
///
/// ```
/// use eventsourced::{MemoryEventLog, SerdeJson};
/// use eventsourced_projection::{AtLeastOnce, MemoryOffsetStore, Projection, ProjectionError};
/// # use eventsourced_projection::{Handler, HandlerError, ProjectedEvent};
/// # struct Noop;
/// # impl Handler for Noop {
/// #     type Event = i64;
/// #     async fn handle(&mut self, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> { Ok(()) }
/// # }
///
/// let sink = AtLeastOnce::new(MemoryOffsetStore::default(), Noop);
/// let error = Projection::builder("totals", "", MemoryEventLog::default(), SerdeJson, sink)
///     .build()
///     .unwrap_err();
/// assert!(matches!(error, ProjectionError::InvalidConfig { what: "type_name", .. }));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// Reading `events_by_type` failed; the projection reopens the stream from
    /// its stored offset after a backoff.
    #[error("projection {name}: reading events failed: {source}")]
    EventLog {
        /// The projection's name.
        name: String,
        /// The log's error.
        #[source]
        source: EventLogError,
    },

    /// An event's bytes could not be decoded into the projection's event type.
    #[error("projection {name}: cannot decode the event at position {position}: {source}")]
    Decode {
        /// The projection's name.
        name: String,
        /// The position of the event.
        position: Position,
        /// The decoding error.
        #[source]
        source: BinarizeError,
    },

    /// The handler failed on an event and the error strategy says stop.
    #[error(
        "projection {name}: the handler failed on event {id}/{seq_no} at position {position} after {attempts} attempt(s): {source}"
    )]
    Handler {
        /// The projection's name.
        name: String,
        /// The position of the failing event.
        position: Position,
        /// The id of the entity that emitted it.
        id: String,
        /// Its seq_no.
        seq_no: SeqNo,
        /// How many times it was tried.
        attempts: u32,
        /// The handler's error.
        #[source]
        source: BoxError,
    },

    /// The offset store failed (connection lost, I/O error, SQL error).
    #[error("{backend} offset store failed to {operation}: {source}")]
    OffsetStore {
        /// The backend, e.g. "postgres".
        backend: &'static str,
        /// What was attempted.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },

    /// The stored offset is not the one this instance committed last: another
    /// instance committed in between (the lease was lost or bypassed). Nothing
    /// was committed; the projection reloads its offset and goes on from there.
    #[error(
        "projection {name}: the stored offset is {actual:?}, this instance expected {expected:?}; another instance committed in between"
    )]
    OffsetConflict {
        /// The projection's name.
        name: String,
        /// The offset this instance committed or loaded last.
        expected: Option<Position>,
        /// The offset found in the store.
        actual: Option<Position>,
    },

    /// Taking or keeping the lease failed.
    #[error("projection {name}: lease failed: {reason}")]
    Lease {
        /// The projection's name.
        name: String,
        /// What happened.
        reason: String,
    },

    /// Resetting the read model for a rebuild failed; the offset is unchanged
    /// where the sink is transactional.
    #[error("projection {name}: resetting the read model failed: {source}")]
    Reset {
        /// The projection's name.
        name: String,
        /// The handler's error.
        #[source]
        source: BoxError,
    },

    /// A configuration value is invalid.
    #[error("invalid projection configuration: {what}: {reason}")]
    InvalidConfig {
        /// The setting.
        what: &'static str,
        /// Why it is refused and what to use instead.
        reason: String,
    },
}

impl ProjectionError {
    /// Wraps an offset store backend error.
    ///
    /// ```
    /// use eventsourced_projection::ProjectionError;
    ///
    /// let error = ProjectionError::offset_store("redis", "load an offset", "connection refused");
    /// assert_eq!(error.to_string(), "redis offset store failed to load an offset: connection refused");
    /// ```
    pub fn offset_store(
        backend: &'static str,
        operation: &'static str,
        source: impl Into<BoxError>,
    ) -> Self {
        ProjectionError::OffsetStore {
            backend,
            operation,
            source: source.into(),
        }
    }
}

/// An error returned by a handler; any error type converts into it with `?`.
///
/// ```
/// use eventsourced_projection::HandlerError;
/// let e: HandlerError = std::io::Error::other("disk full").into();
/// assert_eq!(e.to_string(), "disk full");
/// let e = HandlerError::msg("negative total");
/// assert_eq!(e.to_string(), "negative total");
/// ```
pub struct HandlerError(BoxError);

impl HandlerError {
    /// A handler error with a message.
    ///
    /// ```
    /// use eventsourced_projection::HandlerError;
    ///
    /// let error = HandlerError::msg(format_args!("total {} below zero", -3));
    /// assert_eq!(error.to_string(), "total -3 below zero");
    /// ```
    pub fn msg(message: impl fmt::Display) -> Self {
        HandlerError(message.to_string().into())
    }

    /// The underlying error.
    ///
    /// ```
    /// use eventsourced_projection::HandlerError;
    ///
    /// let error: HandlerError = std::io::Error::other("disk full").into();
    /// let io = error.into_inner().downcast::<std::io::Error>().unwrap();
    /// assert_eq!(io.kind(), std::io::ErrorKind::Other);
    /// ```
    pub fn into_inner(self) -> BoxError {
        self.0
    }

    /// The underlying error, borrowed (for sinks that look at its sources).
    pub(crate) fn as_error(&self) -> &(dyn std::error::Error + 'static) {
        &*self.0
    }
}

impl<E> From<E> for HandlerError
where
    E: Into<BoxError>,
{
    fn from(e: E) -> Self {
        HandlerError(e.into())
    }
}

/// An error and its sources, joined by ": " (a source whose text is already
/// there is left out), so that a wrapper like tokio-postgres's `db error`
/// shows the server's message too.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The handler's error with its sources (see [`chain`]): what
/// `LastError::message` shows.
impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&chain(self.0.as_ref()))
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}
