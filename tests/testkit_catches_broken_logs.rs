//! The conformance suite fails a log with the reference's defect: an in-memory
//! log that ignores the expected seq_no.

use bytes::Bytes;
use eventsourced::{
    EventEnvelope, EventLog, EventLogError, MemoryEventLog, Position, SeqNo, testkit,
};
use futures::{FutureExt, Stream};
use std::panic::AssertUnwindSafe;

#[derive(Debug, Clone, Default)]
struct IgnoresExpected(MemoryEventLog);

impl EventLog for IgnoresExpected {
    async fn append(
        &self,
        type_name: &str,
        id: &str,
        _expected_last: SeqNo,
        events: &[Bytes],
    ) -> Result<SeqNo, EventLogError> {
        let actual = self.0.last_seq_no(type_name, id).await?;
        self.0.append(type_name, id, actual, events).await
    }
    async fn last_seq_no(&self, type_name: &str, id: &str) -> Result<SeqNo, EventLogError> {
        self.0.last_seq_no(type_name, id).await
    }
    fn events_by_id(
        &self,
        type_name: &str,
        id: &str,
        from: SeqNo,
    ) -> impl Stream<Item = Result<(SeqNo, Bytes), EventLogError>> + Send + 'static {
        self.0.events_by_id(type_name, id, from)
    }
    fn events_by_type(
        &self,
        type_name: &str,
        from: Position,
    ) -> impl Stream<Item = Result<EventEnvelope, EventLogError>> + Send + 'static {
        self.0.events_by_type(type_name, from)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_rejects_a_log_that_ignores_the_expected_seq_no() {
    let outcome = AssertUnwindSafe(testkit::check_event_log(IgnoresExpected::default()))
        .catch_unwind()
        .await;
    assert!(
        outcome.is_err(),
        "the suite must fail a log without optimistic concurrency"
    );
}
