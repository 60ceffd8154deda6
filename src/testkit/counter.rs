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
///
/// ```
/// use eventsourced::EventSourced;
/// use eventsourced::testkit::counter::{Counter, CounterEvent};
///
/// let counter = Counter::default().handle_event(CounterEvent::Increased(3));
/// assert_eq!(counter, Counter(3));
/// // Replaying a log edited by hand saturates instead of panicking.
/// assert_eq!(counter.handle_event(CounterEvent::Decreased(5)), Counter(0));
/// ```
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter(pub u64);

/// The counter's events.
///
/// ```
/// use eventsourced::testkit::counter::CounterEvent;
/// use eventsourced::{Binarize, SerdeJson};
///
/// // How the events look in the log with `SerdeJson`:
/// let bytes = SerdeJson.encode(&CounterEvent::Increased(2)).unwrap();
/// assert_eq!(&bytes[..], br#"{"Increased":2}"#);
/// let back: CounterEvent = SerdeJson.decode(bytes).unwrap();
/// assert_eq!(back, CounterEvent::Increased(2));
/// ```
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
///
/// ```
/// use eventsourced::testkit::counter::{Counter, CounterError, Decrease, Get, Increase};
/// use eventsourced::{EventSourcedExt, MemoryEventLog, NoopSnapshotStore, SerdeJson};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let counter = Counter(u64::MAX)
///     .entity()
///     .spawn("c-1".to_owned(), MemoryEventLog::new(), NoopSnapshotStore, SerdeJson)
///     .await?;
/// assert_eq!(counter.handle_command(Increase(1)).await?, Err(CounterError::Overflow));
/// // A rejected command changes nothing; the entity keeps running.
/// assert_eq!(counter.handle_command(Get).await?, Ok(u64::MAX));
/// assert_eq!(counter.handle_command(Decrease(u64::MAX)).await?, Ok(0));
/// assert_eq!(counter.handle_command(Decrease(1)).await?, Err(CounterError::Underflow));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterError {
    /// The value would exceed `u64::MAX`.
    Overflow,
    /// The value would go below zero.
    Underflow,
}

/// Adds to the counter; replies with the new value.
///
/// ```
/// use eventsourced::Command;
/// use eventsourced::testkit::counter::{Counter, Increase};
///
/// let id = "c-1".to_owned();
/// let effect = Increase(2).handle_command(&id, &Counter(1));
/// assert_eq!(format!("{effect:?}"), "Emit { events: 1 }");
/// let effect = Increase(2).handle_command(&id, &Counter(u64::MAX - 1));
/// assert_eq!(format!("{effect:?}"), "Reject(Overflow)");
/// ```
#[derive(Debug)]
pub struct Increase(pub u64);

/// Subtracts from the counter; replies with the new value.
///
/// ```
/// use eventsourced::Command;
/// use eventsourced::testkit::counter::{Counter, Decrease};
///
/// let id = "c-1".to_owned();
/// let effect = Decrease(2).handle_command(&id, &Counter(2));
/// assert_eq!(format!("{effect:?}"), "Emit { events: 1 }");
/// let effect = Decrease(3).handle_command(&id, &Counter(2));
/// assert_eq!(format!("{effect:?}"), "Reject(Underflow)");
/// ```
#[derive(Debug)]
pub struct Decrease(pub u64);

/// Replies with the current value; emits nothing.
///
/// ```
/// use eventsourced::Command;
/// use eventsourced::testkit::counter::{Counter, Get};
///
/// let effect = Get.handle_command(&"c-1".to_owned(), &Counter(5));
/// assert_eq!(format!("{effect:?}"), "Reply(5)"); // no events to append
/// ```
#[derive(Debug)]
pub struct Get;

/// Adds each amount as its own event, all appended atomically; replies with
/// the value after the last.
///
/// ```
/// use eventsourced::testkit::counter::{Counter, IncreaseAll};
/// use eventsourced::{EventLog, EventSourcedExt, MemoryEventLog, NoopSnapshotStore, SeqNo, SerdeJson};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let log = MemoryEventLog::new();
/// let counter = Counter::default()
///     .entity()
///     .spawn("c-1".to_owned(), log.clone(), NoopSnapshotStore, SerdeJson)
///     .await?;
/// assert_eq!(counter.handle_command(IncreaseAll(vec![1, 2, 3])).await?, Ok(6));
/// assert_eq!(log.last_seq_no("counter", "c-1").await?, SeqNo::new(3)); // three events
/// # Ok(()) }
/// ```
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
