//! Shared helpers of the core tests: the reference counter entity and event
//! logs that count or fail appends.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use eventsourced::{
    Command, CommandEffect, EventEnvelope, EventLog, EventLogError, EventSourced, MemoryEventLog,
    Position, SeqNo,
};
use futures::Stream;
use serde::{Deserialize, Serialize};
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

/// The reference counter.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counter(pub u64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CounterEvent {
    Increased(u64),
    Decreased(u64),
}

impl EventSourced for Counter {
    type Id = String;
    type Event = CounterEvent;
    const TYPE_NAME: &'static str = "counter";

    fn handle_event(self, event: CounterEvent) -> Self {
        match event {
            CounterEvent::Increased(n) => Counter(self.0 + n),
            CounterEvent::Decreased(n) => Counter(self.0 - n),
        }
    }
}

#[derive(Debug)]
pub struct Increase(pub u64);

#[derive(Debug)]
pub struct Decrease(pub u64);

#[derive(Debug)]
pub struct Get;

/// Increases by each amount, atomically.
#[derive(Debug)]
pub struct IncreaseAll(pub Vec<u64>);

#[derive(Debug, PartialEq, Eq)]
pub enum CounterError {
    Overflow,
    Underflow,
}

impl Command<Counter> for Increase {
    type Reply = u64;
    type Error = CounterError;

    fn handle_command(
        self,
        _id: &String,
        state: &Counter,
    ) -> CommandEffect<Counter, u64, CounterError> {
        if u64::MAX - state.0 < self.0 {
            CommandEffect::reject(CounterError::Overflow)
        } else {
            CommandEffect::emit_and_reply(CounterEvent::Increased(self.0), |state: &Counter| {
                state.0
            })
        }
    }
}

impl Command<Counter> for Decrease {
    type Reply = u64;
    type Error = CounterError;

    fn handle_command(
        self,
        _id: &String,
        state: &Counter,
    ) -> CommandEffect<Counter, u64, CounterError> {
        if state.0 < self.0 {
            CommandEffect::reject(CounterError::Underflow)
        } else {
            CommandEffect::emit_and_reply(CounterEvent::Decreased(self.0), |state: &Counter| {
                state.0
            })
        }
    }
}

impl Command<Counter> for Get {
    type Reply = u64;
    type Error = std::convert::Infallible;

    fn handle_command(
        self,
        _id: &String,
        state: &Counter,
    ) -> CommandEffect<Counter, u64, Self::Error> {
        CommandEffect::reply(state.0)
    }
}

impl Command<Counter> for IncreaseAll {
    type Reply = u64;
    type Error = CounterError;

    fn handle_command(
        self,
        _id: &String,
        _state: &Counter,
    ) -> CommandEffect<Counter, u64, CounterError> {
        CommandEffect::emit_all_and_reply(
            self.0.into_iter().map(CounterEvent::Increased),
            |state: &Counter| state.0,
        )
    }
}

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
    ) -> impl Stream<Item = Result<(SeqNo, Bytes), EventLogError>> + Send + 'static {
        self.inner.events_by_id(type_name, id, from)
    }

    fn events_by_type(
        &self,
        type_name: &str,
        from: Position,
    ) -> impl Stream<Item = Result<EventEnvelope, EventLogError>> + Send + 'static {
        self.inner.events_by_type(type_name, from)
    }
}
