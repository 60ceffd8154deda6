//! The reference counter: the entity of the core's scenario tests and of the
//! benchmark, so both exercise the same thing.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use eventsourced::testkit::counter::{Counter, CounterError, Decrease, Get, Increase};
//! use eventsourced::{EventSourcedExt, MemoryEventLog, NoopSnapshotStore, SerdeJson};
//!
//! let counter = Counter::default()
//!     .entity()
//!     .spawn("c-1".to_owned(), MemoryEventLog::default(), NoopSnapshotStore, SerdeJson)
//!     .await?;
//! assert_eq!(counter.handle_command(Increase(2)).await?, Ok(2));
//! assert_eq!(counter.handle_command(Decrease(3)).await?, Err(CounterError::Underflow));
//! assert_eq!(counter.handle_command(Get).await?, Ok(2));
//! # Ok(()) }
//! ```

use crate::{Command, CommandEffect, EventSourced};
use serde::{Deserialize, Serialize};

/// A counter that never goes below zero or above `u64::MAX`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter(pub u64);

/// The counter's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CounterEvent {
    /// The value went up by this much.
    Increased(u64),
    /// The value went down by this much.
    Decreased(u64),
}

impl EventSourced for Counter {
    type Id = String;
    type Event = CounterEvent;
    const TYPE_NAME: &'static str = "counter";

    fn handle_event(self, event: CounterEvent) -> Self {
        // The commands never emit an event that over- or underflows; a log
        // written by hand must not make replay panic either.
        match event {
            CounterEvent::Increased(n) => Counter(self.0.saturating_add(n)),
            CounterEvent::Decreased(n) => Counter(self.0.saturating_sub(n)),
        }
    }
}

/// Why a counter command was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterError {
    /// The value would exceed `u64::MAX`.
    Overflow,
    /// The value would go below zero.
    Underflow,
}

/// Adds to the counter; replies with the new value.
#[derive(Debug)]
pub struct Increase(pub u64);

/// Subtracts from the counter; replies with the new value.
#[derive(Debug)]
pub struct Decrease(pub u64);

/// Replies with the current value; emits nothing.
#[derive(Debug)]
pub struct Get;

/// Adds each amount as its own event, all appended atomically; replies with
/// the value after the last.
#[derive(Debug)]
pub struct IncreaseAll(pub Vec<u64>);

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
    type Error = CounterError;

    fn handle_command(
        self,
        _id: &String,
        state: &Counter,
    ) -> CommandEffect<Counter, u64, CounterError> {
        CommandEffect::reply(state.0)
    }
}

impl Command<Counter> for IncreaseAll {
    type Reply = u64;
    type Error = CounterError;

    fn handle_command(
        self,
        _id: &String,
        state: &Counter,
    ) -> CommandEffect<Counter, u64, CounterError> {
        let total = self
            .0
            .iter()
            .try_fold(state.0, |value, &n| value.checked_add(n));
        if total.is_none() {
            return CommandEffect::reject(CounterError::Overflow);
        }
        CommandEffect::emit_all_and_reply(
            self.0.into_iter().map(CounterEvent::Increased),
            |state: &Counter| state.0,
        )
    }
}
