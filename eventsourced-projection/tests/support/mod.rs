//! Shared helpers of the integration tests.
#![allow(dead_code, unreachable_pub)]

use eventsourced::{Binarize, EventLog, Position, SeqNo, SerdeJson};
use eventsourced_projection::{Handler, HandlerError, ProjectedEvent};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

/// Bound for every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// A unique name for this test run.
pub fn unique(prefix: &str) -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// Appends `values` as events of entity `id`, after its last seq_no.
pub async fn append<L: EventLog>(log: &L, type_name: &str, id: &str, values: &[i64]) -> SeqNo {
    let last = log.last_seq_no(type_name, id).await.expect("last_seq_no");
    let events: Vec<_> = values
        .iter()
        .map(|v| SerdeJson.encode(v).expect("encode"))
        .collect();
    log.append(type_name, id, last, &events)
        .await
        .expect("append")
}

/// What a [`Recorder`] saw, shared with the test.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every handled event, in order (duplicates included).
    pub events: Vec<(Position, String, SeqNo, i64)>,
    /// Remaining failures per position.
    pub fail: HashMap<Position, u32>,
    /// Attempts per position.
    pub attempts: HashMap<Position, u32>,
    /// Number of resets.
    pub resets: u32,
}

impl Seen {
    pub fn totals(&self) -> HashMap<String, i64> {
        let mut totals = HashMap::new();
        for (_, id, _, v) in &self.events {
            *totals.entry(id.clone()).or_default() += v;
        }
        totals
    }

    pub fn positions(&self) -> Vec<u64> {
        self.events.iter().map(|e| e.0.get()).collect()
    }
}

/// An in-memory handler that records events and fails on demand.
#[derive(Debug, Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Seen>>);

impl Recorder {
    pub fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.0.lock().expect("lock")
    }

    /// The handler fails `times` times on the event at `position`.
    pub fn fail_at(&self, position: u64, times: u32) {
        self.seen().fail.insert(Position::new(position), times);
    }
}

impl Handler for Recorder {
    type Event = i64;

    async fn handle(&mut self, e: &ProjectedEvent<i64>) -> Result<(), HandlerError> {
        let mut seen = self.seen();
        *seen.attempts.entry(e.position).or_default() += 1;
        if let Some(n) = seen.fail.get_mut(&e.position)
            && *n > 0
        {
            *n -= 1;
            return Err(HandlerError::msg(format!(
                "planned failure at {}",
                e.position
            )));
        }
        seen.events
            .push((e.position, e.id.clone(), e.seq_no, e.event));
        Ok(())
    }

    async fn reset(&mut self) -> Result<(), HandlerError> {
        let mut seen = self.seen();
        seen.events.clear();
        seen.resets += 1;
        Ok(())
    }
}

/// The database URL of the PostgreSQL tests; fails loudly when the server is
/// not reachable (the tests need it).
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

#[cfg(feature = "postgres")]
pub mod pg;

#[cfg(feature = "sqlite")]
pub mod sq;

/// The NATS crate's own test server support (`nats_url`, `TestServer`):
/// one implementation for both crates' tests.
#[cfg(feature = "nats")]
#[path = "../../../eventsourced-nats/tests/support/mod.rs"]
pub mod nats;
