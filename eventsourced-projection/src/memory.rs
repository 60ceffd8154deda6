//! In-memory offsets and lag for the in-memory log.

use crate::{OffsetStore, ProjectionError, lag::LagSource};
use eventsourced::{EventLog, MemoryEventLog, Position, event_log::BoxError};
use futures::{FutureExt, StreamExt, future::BoxFuture};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

/// Offsets in memory, shared by clones; gone when the process exits. With it,
/// a projection is at least once (and rebuilt from zero on every start).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), eventsourced_projection::ProjectionError> {
/// use eventsourced::Position;
/// use eventsourced_projection::{MemoryOffsetStore, OffsetStore};
///
/// let store = MemoryOffsetStore::default();
/// store.save("totals", Position::new(7)).await?;
/// assert_eq!(store.load("totals").await?, Some(Position::new(7)));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryOffsetStore {
    offsets: Arc<Mutex<HashMap<String, Position>>>,
}

impl MemoryOffsetStore {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Position>> {
        // Every update is one insert or remove: a poisoned map is consistent.
        self.offsets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl OffsetStore for MemoryOffsetStore {
    async fn load(&self, name: &str) -> Result<Option<Position>, ProjectionError> {
        Ok(self.lock().get(name).copied())
    }

    async fn save(&self, name: &str, offset: Position) -> Result<(), ProjectionError> {
        self.lock().insert(name.to_owned(), offset);
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<(), ProjectionError> {
        self.lock().remove(name);
        Ok(())
    }
}

/// Lag for a [`MemoryEventLog`]: counts the events after the offset that its
/// `events_by_type` yields without waiting.
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
#[derive(Debug, Clone)]
pub struct MemoryLag(pub MemoryEventLog);

impl LagSource for MemoryLag {
    fn events_after(
        &self,
        type_name: &str,
        offset: Option<Position>,
    ) -> BoxFuture<'_, Result<u64, BoxError>> {
        let from = offset.map_or(Position::START, Position::next);
        let mut events = Box::pin(self.0.events_by_type(type_name, from));
        async move {
            let mut n = 0u64;
            // The memory log yields stored events without waiting; the first
            // poll that would wait means the head is reached.
            while let Some(Some(item)) = events.next().now_or_never() {
                item?;
                n += 1;
            }
            Ok(n)
        }
        .boxed()
    }
}
