//! The backends under test: each makes fresh, empty storage for every run,
//! cleans it up afterwards, and measures its server's raw write ceilings.

pub(crate) mod memory;
pub(crate) mod nats;
pub(crate) mod postgres;
pub(crate) mod sqlite;

use crate::{BoxError, Scale, report::Record};
use eventsourced::{EventLog, SnapshotStore};
use std::future::Future;

/// Storage that no other run uses: an event log and a snapshot store, and
/// what to remove afterwards.
#[derive(Debug)]
pub(crate) struct Fresh<L, S> {
    pub(crate) log: L,
    pub(crate) snapshots: S,
    /// The schema, stream or file that holds this run's data.
    pub(crate) place: String,
}

/// A backend under test.
pub(crate) trait Backend {
    /// Its event log.
    type Log: EventLog;
    /// Its snapshot store.
    type Snapshots: SnapshotStore;

    /// The name in results: memory, sqlite, postgres or nats.
    const NAME: &'static str;

    /// Fresh, empty storage for one run named `run`.
    fn fresh(
        &self,
        run: &str,
    ) -> impl Future<Output = Result<Fresh<Self::Log, Self::Snapshots>, BoxError>>;

    /// Removes what [`fresh`](Backend::fresh) created.
    fn cleanup(
        &self,
        fresh: Fresh<Self::Log, Self::Snapshots>,
    ) -> impl Future<Output = Result<(), BoxError>>;

    /// The server's write ceilings, without the runtime; empty without a server.
    fn raw(&self, scale: &Scale) -> impl Future<Output = Result<Vec<Record>, BoxError>>;
}

/// A name no earlier run used: the process id and a counter.
pub(crate) fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}_{}_{n}_{nanos:x}", std::process::id())
}
