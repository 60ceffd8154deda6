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
///
/// ```
/// # use eventsourced::{Position, SeqNo};
/// # use eventsourced_projection::*;
/// # use std::sync::Arc;
/// # let event = |n: u64| ProjectedEvent { position: Position::new(n), id: "a".to_owned(), seq_no: SeqNo::new(n), event: n as i64 };
/// # #[derive(Default)]
/// # struct Count(usize);
/// # impl Handler for Count {
/// #     type Event = i64;
/// #     async fn handle(&mut self, e: &ProjectedEvent<i64>) -> Result<(), HandlerError> {
/// #         if e.event == 2 { return Err(HandlerError::msg("two")); }
/// #         self.0 += 1;
/// #         Ok(())
/// #     }
/// # }
/// let sink = AtLeastOnce::new(MemoryOffsetStore::default(), Count::default());
/// assert_eq!(sink.delivery(), Delivery::AtLeastOnce);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Read-model writes and the offset commit in one transaction.
    ExactlyOnce,
    /// The offset is stored after the handler's writes: after a crash, the
    /// events since the last stored offset are handled again.
    AtLeastOnce,
}

/// A group of events handled together, then committed with `offset`.
///
/// ```
/// # use eventsourced::{Position, SeqNo};
/// # use eventsourced_projection::*;
/// # use std::sync::Arc;
/// # let event = |n: u64| ProjectedEvent { position: Position::new(n), id: "a".to_owned(), seq_no: SeqNo::new(n), event: n as i64 };
/// # #[derive(Default)]
/// # struct Count(usize);
/// # impl Handler for Count {
/// #     type Event = i64;
/// #     async fn handle(&mut self, e: &ProjectedEvent<i64>) -> Result<(), HandlerError> {
/// #         if e.event == 2 { return Err(HandlerError::msg("two")); }
/// #         self.0 += 1;
/// #         Ok(())
/// #     }
/// # }
/// let events: Arc<[ProjectedEvent<i64>]> = (1..=3).map(event).collect();
/// let batch = Batch::new(events, 1..3, Position::new(3));
/// let positions: Vec<u64> = batch.events().iter().map(|e| e.position.get()).collect();
/// assert_eq!(positions, [2, 3]);
/// assert_eq!(batch.offset(), Position::new(3));
/// ```
#[derive(Debug)]
pub struct Batch<E> {
    pub(crate) events: Arc<[ProjectedEvent<E>]>,
    pub(crate) range: Range<usize>,
    pub(crate) offset: Position,
}

impl<E> Batch<E> {
    /// The events `events[range]`, to be committed with `offset` (for tests
    /// of sinks; the engine builds batches itself).
    ///
    /// ```
    /// # use eventsourced::{Position, SeqNo};
    /// # use eventsourced_projection::*;
    /// # use std::sync::Arc;
    /// # let event = |n: u64| ProjectedEvent { position: Position::new(n), id: "a".to_owned(), seq_no: SeqNo::new(n), event: n as i64 };
    /// # #[derive(Default)]
    /// # struct Count(usize);
    /// # impl Handler for Count {
    /// #     type Event = i64;
    /// #     async fn handle(&mut self, e: &ProjectedEvent<i64>) -> Result<(), HandlerError> {
    /// #         if e.event == 2 { return Err(HandlerError::msg("two")); }
    /// #         self.0 += 1;
    /// #         Ok(())
    /// #     }
    /// # }
    /// let events: Arc<[ProjectedEvent<i64>]> = (1..=3).map(event).collect();
    /// let batch = Batch::new(events, 0..3, Position::new(3));
    /// assert_eq!(batch.events().len(), 3);
    /// ```
    pub fn new(events: Arc<[ProjectedEvent<E>]>, range: Range<usize>, offset: Position) -> Self {
        Batch {
            events,
            range,
            offset,
        }
    }

    /// The events to handle, in order (empty when an event is skipped: then
    /// only the offset moves).
    ///
    /// ```
    /// # use eventsourced::{Position, SeqNo};
    /// # use eventsourced_projection::*;
    /// # use std::sync::Arc;
    /// # let event = |n: u64| ProjectedEvent { position: Position::new(n), id: "a".to_owned(), seq_no: SeqNo::new(n), event: n as i64 };
    /// # #[derive(Default)]
    /// # struct Count(usize);
    /// # impl Handler for Count {
    /// #     type Event = i64;
    /// #     async fn handle(&mut self, e: &ProjectedEvent<i64>) -> Result<(), HandlerError> {
    /// #         if e.event == 2 { return Err(HandlerError::msg("two")); }
    /// #         self.0 += 1;
    /// #         Ok(())
    /// #     }
    /// # }
    /// let events: Arc<[ProjectedEvent<i64>]> = (1..=3).map(event).collect();
    /// assert_eq!(Batch::new(events.clone(), 0..2, Position::new(2)).events()[1].event, 2);
    /// // A skipped event: no events, only the offset.
    /// assert!(Batch::new(events, 0..0, Position::new(3)).events().is_empty());
    /// ```
    pub fn events(&self) -> &[ProjectedEvent<E>] {
        self.events.get(self.range.clone()).unwrap_or(&[])
    }

    /// The offset to store with the handler's work: the position of the last
    /// event of the batch (or of the skipped event).
    ///
    /// ```
    /// # use eventsourced::{Position, SeqNo};
    /// # use eventsourced_projection::*;
    /// # use std::sync::Arc;
    /// # let event = |n: u64| ProjectedEvent { position: Position::new(n), id: "a".to_owned(), seq_no: SeqNo::new(n), event: n as i64 };
    /// # #[derive(Default)]
    /// # struct Count(usize);
    /// # impl Handler for Count {
    /// #     type Event = i64;
    /// #     async fn handle(&mut self, e: &ProjectedEvent<i64>) -> Result<(), HandlerError> {
    /// #         if e.event == 2 { return Err(HandlerError::msg("two")); }
    /// #         self.0 += 1;
    /// #         Ok(())
    /// #     }
    /// # }
    /// let events: Arc<[ProjectedEvent<i64>]> = (1..=3).map(event).collect();
    /// let batch = Batch::new(events, 0..2, Position::new(2));
    /// assert_eq!(batch.offset(), batch.events().last().unwrap().position);
    /// ```
    pub fn offset(&self) -> Position {
        self.offset
    }

    /// The events, shared, with the range of this batch (for sinks that move
    /// the work to another thread).
    ///
    /// ```
    /// # use eventsourced::{Position, SeqNo};
    /// # use eventsourced_projection::*;
    /// # use std::sync::Arc;
    /// # let event = |n: u64| ProjectedEvent { position: Position::new(n), id: "a".to_owned(), seq_no: SeqNo::new(n), event: n as i64 };
    /// # #[derive(Default)]
    /// # struct Count(usize);
    /// # impl Handler for Count {
    /// #     type Event = i64;
    /// #     async fn handle(&mut self, e: &ProjectedEvent<i64>) -> Result<(), HandlerError> {
    /// #         if e.event == 2 { return Err(HandlerError::msg("two")); }
    /// #         self.0 += 1;
    /// #         Ok(())
    /// #     }
    /// # }
    /// let events: Arc<[ProjectedEvent<i64>]> = (1..=3).map(event).collect();
    /// let (all, range) = Batch::new(events, 1..3, Position::new(3)).shared();
    /// assert_eq!((all.len(), range), (3, 1..3));
    /// ```
    pub fn shared(&self) -> (Arc<[ProjectedEvent<E>]>, Range<usize>) {
        (self.events.clone(), self.range.clone())
    }
}

/// Why a batch was not (fully) committed.
///
/// ```
/// use eventsourced_projection::{BatchError, ProjectionError};
///
/// let error: BatchError = ProjectionError::offset_store("memory", "store an offset", "disk full").into();
/// assert!(matches!(error, BatchError::Store(ProjectionError::OffsetStore { backend: "memory", .. })));
/// ```
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
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # use eventsourced::{Position, SeqNo};
/// # use eventsourced_projection::*;
/// # use std::sync::Arc;
/// # let event = |n: u64| ProjectedEvent { position: Position::new(n), id: "a".to_owned(), seq_no: SeqNo::new(n), event: n as i64 };
/// # #[derive(Default)]
/// # struct Count(usize);
/// # impl Handler for Count {
/// #     type Event = i64;
/// #     async fn handle(&mut self, e: &ProjectedEvent<i64>) -> Result<(), HandlerError> {
/// #         if e.event == 2 { return Err(HandlerError::msg("two")); }
/// #         self.0 += 1;
/// #         Ok(())
/// #     }
/// # }
/// let mut sink = AtLeastOnce::new(MemoryOffsetStore::default(), Count::default());
/// assert_eq!(sink.load_offset("totals").await.unwrap(), None);
/// let events: Arc<[ProjectedEvent<i64>]> = [event(1)].into();
/// sink.handle_batch("totals", Batch::new(events, 0..1, Position::new(1))).await.unwrap();
/// assert_eq!(sink.load_offset("totals").await.unwrap(), Some(Position::new(1)));
/// sink.reset("totals").await.unwrap();
/// assert_eq!(sink.load_offset("totals").await.unwrap(), None);
/// # }
/// ```
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
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), eventsourced_projection::ProjectionError> {
/// use eventsourced::Position;
/// use eventsourced_projection::{MemoryOffsetStore, OffsetStore};
///
/// let store = MemoryOffsetStore::default();
/// store.save("totals", Position::new(3)).await?;
/// store.delete("totals").await?;
/// assert_eq!(store.load("totals").await?, None);
/// # Ok(()) }
/// ```
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
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # use eventsourced::{Position, SeqNo};
/// # use eventsourced_projection::*;
/// # use std::sync::Arc;
/// # let event = |n: u64| ProjectedEvent { position: Position::new(n), id: "a".to_owned(), seq_no: SeqNo::new(n), event: n as i64 };
/// # #[derive(Default)]
/// # struct Count(usize);
/// # impl Handler for Count {
/// #     type Event = i64;
/// #     async fn handle(&mut self, e: &ProjectedEvent<i64>) -> Result<(), HandlerError> {
/// #         if e.event == 2 { return Err(HandlerError::msg("two")); }
/// #         self.0 += 1;
/// #         Ok(())
/// #     }
/// # }
/// // The handler fails on the event 2: event 1 is committed before it.
/// let mut sink = AtLeastOnce::new(MemoryOffsetStore::default(), Count::default());
/// let events: Arc<[ProjectedEvent<i64>]> = (1..=3).map(event).collect();
/// let result = sink.handle_batch("totals", Batch::new(events, 0..3, Position::new(3))).await;
/// assert!(matches!(result, Err(BatchError::Handler { index: 1, committed_before: true, .. })));
/// assert_eq!(sink.load_offset("totals").await.unwrap(), Some(Position::new(1)));
/// # }
/// ```
#[derive(Debug)]
pub struct AtLeastOnce<S, H> {
    store: S,
    handler: H,
}

impl<S: OffsetStore, H: Handler> AtLeastOnce<S, H> {
    /// A sink storing offsets in `store` after `handler` handled a batch.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use eventsourced::{Position, SeqNo};
    /// # use eventsourced_projection::*;
    /// # use std::sync::Arc;
    /// # let event = |n: u64| ProjectedEvent { position: Position::new(n), id: "a".to_owned(), seq_no: SeqNo::new(n), event: n as i64 };
    /// # #[derive(Default)]
    /// # struct Count(usize);
    /// # impl Handler for Count {
    /// #     type Event = i64;
    /// #     async fn handle(&mut self, e: &ProjectedEvent<i64>) -> Result<(), HandlerError> {
    /// #         if e.event == 2 { return Err(HandlerError::msg("two")); }
    /// #         self.0 += 1;
    /// #         Ok(())
    /// #     }
    /// # }
    /// let store = MemoryOffsetStore::default();
    /// let mut sink = AtLeastOnce::new(store.clone(), Count::default());
    /// let events: Arc<[ProjectedEvent<i64>]> = [event(1)].into();
    /// sink.handle_batch("totals", Batch::new(events, 0..1, Position::new(1))).await.unwrap();
    /// assert_eq!(store.load("totals").await.unwrap(), Some(Position::new(1)));
    /// # }
    /// ```
    pub fn new(store: S, handler: H) -> Self {
        AtLeastOnce { store, handler }
    }

    /// The handler, e.g. to read an in-memory read model.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use eventsourced::{Position, SeqNo};
    /// # use eventsourced_projection::*;
    /// # use std::sync::Arc;
    /// # let event = |n: u64| ProjectedEvent { position: Position::new(n), id: "a".to_owned(), seq_no: SeqNo::new(n), event: n as i64 };
    /// # #[derive(Default)]
    /// # struct Count(usize);
    /// # impl Handler for Count {
    /// #     type Event = i64;
    /// #     async fn handle(&mut self, e: &ProjectedEvent<i64>) -> Result<(), HandlerError> {
    /// #         if e.event == 2 { return Err(HandlerError::msg("two")); }
    /// #         self.0 += 1;
    /// #         Ok(())
    /// #     }
    /// # }
    /// let mut sink = AtLeastOnce::new(MemoryOffsetStore::default(), Count::default());
    /// let events: Arc<[ProjectedEvent<i64>]> = [event(1), event(3)].into();
    /// sink.handle_batch("totals", Batch::new(events, 0..2, Position::new(3))).await.unwrap();
    /// assert_eq!(sink.handler().0, 2);
    /// # }
    /// ```
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
