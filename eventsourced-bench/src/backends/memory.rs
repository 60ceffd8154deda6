//! The in-memory log and snapshot store of the core crate.

use super::{Backend, Fresh};
use crate::{BoxError, Scale, report::Record};
use eventsourced::{MemoryEventLog, MemorySnapshotStore};

/// [`MemoryEventLog`] and [`MemorySnapshotStore`]: no server, so no raw ceiling.
#[derive(Debug, Default)]
pub(crate) struct Memory;

impl Backend for Memory {
    type Log = MemoryEventLog;
    type Snapshots = MemorySnapshotStore;
    const NAME: &'static str = "memory";

    async fn fresh(&self, run: &str) -> Result<Fresh<Self::Log, Self::Snapshots>, BoxError> {
        Ok(Fresh {
            log: MemoryEventLog::default(),
            snapshots: MemorySnapshotStore::default(),
            place: run.to_owned(),
        })
    }

    async fn cleanup(&self, _fresh: Fresh<Self::Log, Self::Snapshots>) -> Result<(), BoxError> {
        Ok(())
    }

    async fn raw(&self, _scale: &Scale) -> Result<Vec<Record>, BoxError> {
        Ok(Vec::new())
    }
}
