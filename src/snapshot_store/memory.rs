use crate::{SeqNo, SnapshotStore, SnapshotStoreError};
use bytes::Bytes;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

/// A [`SnapshotStore`] in memory, shared by its clones.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), eventsourced::SnapshotStoreError> {
/// use eventsourced::{MemorySnapshotStore, SeqNo, SnapshotStore};
///
/// let store = MemorySnapshotStore::default();
/// store.save("counter", "a", SeqNo::new(21), "21".into()).await?;
/// assert_eq!(store.load("counter", "a").await?, Some((SeqNo::new(21), "21".into())));
/// assert_eq!(store.load("other", "a").await?, None);
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct MemorySnapshotStore {
    snapshots: Arc<Mutex<Snapshots>>,
}

/// type name → id → (seq_no, state).
type Snapshots = HashMap<String, HashMap<String, (SeqNo, Bytes)>>;

impl MemorySnapshotStore {
    /// A new, empty store.
    ///
    /// ```
    /// use eventsourced::{MemorySnapshotStore, SeqNo, SnapshotStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = MemorySnapshotStore::new();
    /// assert_eq!(store.load("counter", "a").await?, None);
    /// // Clones share the snapshots.
    /// store.clone().save("counter", "a", SeqNo::new(3), "3".into()).await?;
    /// assert_eq!(store.load("counter", "a").await?, Some((SeqNo::new(3), "3".into())));
    /// # Ok(()) }
    /// ```
    pub fn new() -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for MemorySnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySnapshotStore")
            .finish_non_exhaustive()
    }
}

impl SnapshotStore for MemorySnapshotStore {
    async fn save(
        &self,
        type_name: &str,
        id: &str,
        seq_no: SeqNo,
        state: Bytes,
    ) -> Result<(), SnapshotStoreError> {
        let mut snapshots = self
            .snapshots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let slot = snapshots
            .entry(type_name.to_owned())
            .or_default()
            .entry(id.to_owned())
            .or_insert((seq_no, Bytes::new()));
        if seq_no >= slot.0 {
            *slot = (seq_no, state);
        }
        Ok(())
    }

    async fn load(
        &self,
        type_name: &str,
        id: &str,
    ) -> Result<Option<(SeqNo, Bytes)>, SnapshotStoreError> {
        let snapshots = self
            .snapshots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(snapshots
            .get(type_name)
            .and_then(|ids| ids.get(id))
            .cloned())
    }
}

/// A [`SnapshotStore`] that keeps nothing: entities always recover from the full
/// event log.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), eventsourced::SnapshotStoreError> {
/// use eventsourced::{NoopSnapshotStore, SeqNo, SnapshotStore};
///
/// NoopSnapshotStore.save("counter", "a", SeqNo::new(1), "1".into()).await?;
/// assert_eq!(NoopSnapshotStore.load("counter", "a").await?, None);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopSnapshotStore;

impl SnapshotStore for NoopSnapshotStore {
    async fn save(
        &self,
        _type_name: &str,
        _id: &str,
        _seq_no: SeqNo,
        _state: Bytes,
    ) -> Result<(), SnapshotStoreError> {
        Ok(())
    }

    async fn load(
        &self,
        _type_name: &str,
        _id: &str,
    ) -> Result<Option<(SeqNo, Bytes)>, SnapshotStoreError> {
        Ok(None)
    }
}
