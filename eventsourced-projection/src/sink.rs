//! Where handled events go: a handler plus the store of the offset.
//!
//! [`ProjectionSink`] is what the engine drives. The crate provides:
//! - [`AtLeastOnce`]: any [`OffsetStore`] with any [`Handler`]; the offset is
//!   stored after the handler's work, so a crash in between replays events.
//! - `PostgresExactlyOnce` and `SqliteExactlyOnce` (cargo features `postgres`,
//!   `sqlite`): the handler writes in the transaction that stores the offset.

use crate::{HandlerError, ProjectedEvent, ProjectionError};
use eventsourced::Position;
use std::{future::Future, ops::Range, sync::Arc};

/// Whether a read model sees each event exactly once or at least once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Read-model writes and the offset commit in one transaction.
    ExactlyOnce,
    /// The offset is stored after the handler's writes: after a crash, the
    /// events since the last stored offset are handled again.
    AtLeastOnce,
}

/// A group of events handled together, then committed with `offset`.
#[derive(Debug)]
pub struct Batch<E> {
    pub(crate) events: Arc<[ProjectedEvent<E>]>,
    pub(crate) range: Range<usize>,
    pub(crate) offset: Position,
}

impl<E> Batch<E> {
    /// The events `events[range]`, to be committed with `offset` (for tests
    /// of sinks; the engine builds batches itself).
    pub fn new(events: Arc<[ProjectedEvent<E>]>, range: Range<usize>, offset: Position) -> Self {
        Batch {
            events,
            range,
            offset,
        }
    }

    /// The events to handle, in order (empty when an event is skipped: then
    /// only the offset moves).
    pub fn events(&self) -> &[ProjectedEvent<E>] {
        self.events.get(self.range.clone()).unwrap_or(&[])
    }

    /// The offset to store with the handler's work: the position of the last
    /// event of the batch (or of the skipped event).
    pub fn offset(&self) -> Position {
        self.offset
    }

    /// The events, shared, with the range of this batch (for sinks that move
    /// the work to another thread).
    pub fn shared(&self) -> (Arc<[ProjectedEvent<E>]>, Range<usize>) {
        (self.events.clone(), self.range.clone())
    }
}

/// Why a batch was not (fully) committed.
#[derive(Debug)]
#[non_exhaustive]
pub enum BatchError {
    /// The handler failed on `events()[index]`.
    Handler {
        /// The index of the failing event in [`Batch::events`].
        index: usize,
        /// The handler's error.
        error: HandlerError,
        /// Whether the events before `index` are committed with their offset
        /// (at-least-once sinks) or rolled back (transactional sinks).
        committed_before: bool,
    },
    /// Storing the offset (or the transaction) failed; nothing is committed.
    Store(ProjectionError),
}

impl From<ProjectionError> for BatchError {
    fn from(e: ProjectionError) -> Self {
        BatchError::Store(e)
    }
}

/// What a projection writes to: a handler and the store of its offset.
///
/// The engine calls [`load_offset`](ProjectionSink::load_offset) when it takes
/// the lease, then [`handle_batch`](ProjectionSink::handle_batch) for each group
/// of events. A sink that stores offsets with a check ("the stored offset is the
/// one I committed last", see [`ProjectionError::OffsetConflict`]) fences off a
/// second instance that runs without the lease.
pub trait ProjectionSink: Send + 'static {
    /// The decoded event type.
    type Event: Send + Sync + 'static;

    /// Exactly once or at least once.
    fn delivery(&self) -> Delivery;

    /// The offset stored for the projection `name`: the last handled position.
    fn load_offset(
        &mut self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Position>, ProjectionError>> + Send;

    /// Handles the batch's events in order and stores its offset.
    fn handle_batch(
        &mut self,
        name: &str,
        batch: Batch<Self::Event>,
    ) -> impl Future<Output = Result<(), BatchError>> + Send;

    /// Deletes the stored offset and resets the read model (the handler's
    /// `reset`), together where the sink is transactional: a rebuild.
    fn reset(&mut self, name: &str) -> impl Future<Output = Result<(), ProjectionError>> + Send;
}

/// A handler without a transaction, for [`AtLeastOnce`] sinks.
///
/// ```
/// use eventsourced_projection::{Handler, HandlerError, ProjectedEvent};
/// use std::collections::HashMap;
///
/// #[derive(Default)]
/// struct Totals(HashMap<String, i64>);
///
/// impl Handler for Totals {
///     type Event = i64;
///     async fn handle(&mut self, event: &ProjectedEvent<i64>) -> Result<(), HandlerError> {
///         *self.0.entry(event.id.clone()).or_default() += event.event;
///         Ok(())
///     }
///     async fn reset(&mut self) -> Result<(), HandlerError> {
///         self.0.clear();
///         Ok(())
///     }
/// }
/// ```
pub trait Handler: Send + 'static {
    /// The decoded event type.
    type Event: Send + Sync + 'static;

    /// Handles one event.
    fn handle(
        &mut self,
        event: &ProjectedEvent<Self::Event>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Clears the read model before a rebuild; does nothing by default.
    fn reset(&mut self) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async { Ok(()) }
    }
}

/// Stores offsets on their own, without a handler transaction.
pub trait OffsetStore: Send + Sync + 'static {
    /// The stored offset of `name`.
    fn load(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Position>, ProjectionError>> + Send;

    /// Stores `offset` for `name`.
    fn save(
        &self,
        name: &str,
        offset: Position,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send;

    /// Deletes the offset of `name`.
    fn delete(&self, name: &str) -> impl Future<Output = Result<(), ProjectionError>> + Send;
}

/// Any [`OffsetStore`] with any [`Handler`]: at least once. The offset is
/// stored after each batch's handler work, so after a crash (or a lost lease)
/// the events since the last stored offset are handled again; make the handler
/// idempotent (e.g. keep the last seq_no per entity in the read model).
#[derive(Debug)]
pub struct AtLeastOnce<S, H> {
    store: S,
    handler: H,
}

impl<S: OffsetStore, H: Handler> AtLeastOnce<S, H> {
    /// A sink storing offsets in `store` after `handler` handled a batch.
    pub fn new(store: S, handler: H) -> Self {
        AtLeastOnce { store, handler }
    }

    /// The handler, e.g. to read an in-memory read model.
    pub fn handler(&self) -> &H {
        &self.handler
    }
}

impl<S: OffsetStore, H: Handler> ProjectionSink for AtLeastOnce<S, H> {
    type Event = H::Event;

    fn delivery(&self) -> Delivery {
        Delivery::AtLeastOnce
    }

    async fn load_offset(&mut self, name: &str) -> Result<Option<Position>, ProjectionError> {
        self.store.load(name).await
    }

    async fn handle_batch(
        &mut self,
        name: &str,
        batch: Batch<Self::Event>,
    ) -> Result<(), BatchError> {
        for (index, event) in batch.events().iter().enumerate() {
            if let Err(error) = self.handler.handle(event).await {
                let committed_before = match index.checked_sub(1) {
                    Some(prev) => {
                        let prev = batch.events()[prev].position;
                        self.store.save(name, prev).await.is_ok()
                    }
                    None => false,
                };
                return Err(BatchError::Handler {
                    index,
                    error,
                    committed_before,
                });
            }
        }
        self.store.save(name, batch.offset()).await?;
        Ok(())
    }

    async fn reset(&mut self, name: &str) -> Result<(), ProjectionError> {
        self.store.delete(name).await?;
        self.handler
            .reset()
            .await
            .map_err(|e| ProjectionError::Reset {
                name: name.to_owned(),
                source: e.into_inner(),
            })
    }
}
