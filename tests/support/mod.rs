//! Shared helpers of the core tests: the reference counter entity (from the
//! testkit) and event logs that count or fail appends.
#![allow(dead_code, unreachable_pub, unused_imports)]

use bytes::Bytes;
use eventsourced::{EventEnvelope, EventLog, EventLogError, MemoryEventLog, Position, SeqNo};
use futures::Stream;
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

pub use eventsourced::testkit::counter::{
    Counter, CounterError, CounterEvent, Decrease, Get, Increase, IncreaseAll,
};

/// Encodes events the way `SerdeJson` does, for writing logs by hand.
pub fn encode(event: &CounterEvent) -> Bytes {
    serde_json::to_vec(event).unwrap().into()
}

/// A memory log that counts appends and can be told to fail the Nth one.
#[derive(Debug, Clone, Default)]
pub struct InstrumentedLog {
    pub inner: MemoryEventLog,
    pub appends: Arc<AtomicUsize>,
    /// Append number (1-based) that fails; 0 never.
    pub fail_at: Arc<AtomicUsize>,
}

impl InstrumentedLog {
    pub fn appends(&self) -> usize {
        self.appends.load(Ordering::SeqCst)
    }

    pub fn failing_at(n: usize) -> Self {
        let log = Self::default();
        log.fail_at.store(n, Ordering::SeqCst);
        log
    }
}

impl EventLog for InstrumentedLog {
    async fn append(
        &self,
        type_name: &str,
        id: &str,
        expected_last: SeqNo,
        events: &[Bytes],
    ) -> Result<SeqNo, EventLogError> {
        let n = self.appends.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_at.load(Ordering::SeqCst) {
            return Err(EventLogError::backend(
                "instrumented",
                "append",
                std::io::Error::other("disk on fire"),
            ));
        }
        self.inner
            .append(type_name, id, expected_last, events)
            .await
    }

    async fn last_seq_no(&self, type_name: &str, id: &str) -> Result<SeqNo, EventLogError> {
        self.inner.last_seq_no(type_name, id).await
    }

    fn events_by_id(
        &self,
        type_name: &str,
        id: &str,
        from: SeqNo,
    ) -> impl Stream<Item = Result<(SeqNo, Bytes), EventLogError>> + Send + 'static + use<> {
        self.inner.events_by_id(type_name, id, from)
    }

    fn events_by_type(
        &self,
        type_name: &str,
        from: Position,
    ) -> impl Stream<Item = Result<EventEnvelope, EventLogError>> + Send + 'static + use<> {
        self.inner.events_by_type(type_name, from)
    }
}
