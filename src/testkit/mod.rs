//! Conformance suites for [`EventLog`](crate::EventLog) and
//! [`SnapshotStore`](crate::SnapshotStore) implementations (cargo feature
//! `testkit`).
//!
//! A backend runs the whole contract with one call from its own tests:
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 4)]
//! # async fn main() {
//! use eventsourced::{MemoryEventLog, MemorySnapshotStore, testkit};
//!
//! testkit::check_event_log(MemoryEventLog::default()).await;
//! testkit::check_snapshot_store(MemorySnapshotStore::default()).await;
//! # }
//! ```
//!
//! Every check uses entity type names of its own ([`unique_type_name`]), so the
//! suites can run against a shared, persistent database again and again. A
//! failed check panics with a message that says what was expected. The
//! suites need a multi-thread tokio runtime.

pub mod counter;
mod event_log;
mod snapshot_store;
pub mod writers;

pub use event_log::check_event_log;
pub use snapshot_store::check_snapshot_store;

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

/// Entity ids that are awkward for backends: separators, wildcards, spaces and
/// unicode. Each must round-trip, or be refused with an `InvalidId` error.
///
/// ```
/// use eventsourced::{EventLog, MemoryEventLog, SeqNo, testkit::ODD_IDS};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let log = MemoryEventLog::new();
/// for id in ODD_IDS {
///     // A backend that maps two of these ids to one entity fails here with a conflict.
///     log.append("counter", id, SeqNo::ZERO, &[id.to_string().into()]).await?;
/// }
/// for id in ODD_IDS {
///     assert_eq!(log.last_seq_no("counter", id).await?, SeqNo::new(1), "{id:?}");
/// }
/// # Ok(()) }
/// ```
pub const ODD_IDS: &[&str] = &[
    "a.b",
    "a b",
    "*",
    ">",
    "a.*.>",
    "a/b",
    "..",
    " ",
    "tab\tid",
    "line\nbreak",
    "a:b;c,d",
    "%2F",
    "'quoted' \"double\"",
    "ünïcødé-✓",
    "emoji 🎉",
    "日本語",
    // What a backend that escapes separators might map the ids above to: each
    // must stay an entity of its own.
    "a_b",
    "a%20b",
    "a%2Eb",
    "a\\.b",
    "a~b",
    "A b",
];

/// A type name no other call of this process or of another process uses:
/// `label`, the process id, the time and a counter.
///
/// ```
/// let a = eventsourced::testkit::unique_type_name("t");
/// let b = eventsourced::testkit::unique_type_name("t");
/// assert_ne!(a, b);
/// ```
pub fn unique_type_name(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{label}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
