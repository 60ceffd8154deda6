//! The Counter entity of the reference workload: `Increase`/`Decrease`
//! commands emit serde_json events, `Get` replies without events.

use eventsourced::{Command, CommandEffect, EventSourced};
use serde::{Deserialize, Serialize};

/// A counter that never goes below zero.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counter(pub(crate) u64);

/// The counter's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum CounterEvent {
    Increased(u64),
    Decreased(u64),
}

impl EventSourced for Counter {
    type Id = String;
    type Event = CounterEvent;
    const TYPE_NAME: &'static str = "bench-counter";

    fn handle_event(self, event: CounterEvent) -> Self {
        match event {
            CounterEvent::Increased(n) => Counter(self.0.saturating_add(n)),
            CounterEvent::Decreased(n) => Counter(self.0.saturating_sub(n)),
        }
    }
}

/// Rejections of the counter's commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CounterError {
    Overflow,
    Underflow,
}

/// Adds to the counter; replies with the new value.
#[derive(Debug)]
pub(crate) struct Increase(pub(crate) u64);

/// Subtracts from the counter; replies with the new value.
#[derive(Debug)]
pub(crate) struct Decrease(pub(crate) u64);

/// Replies with the current value; emits nothing.
#[derive(Debug)]
pub(crate) struct Get;

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

/// The workload's i-th command of one sender (0-based) increases by 2 when `i`
/// is even and decreases by 1 when it is odd, so a sender that awaits each
/// reply never drives the counter below zero and every prefix has a known sum.
pub(crate) fn event_for(i: u64) -> CounterEvent {
    if i % 2 == 0 {
        CounterEvent::Increased(2)
    } else {
        CounterEvent::Decreased(1)
    }
}

/// The counter's value after a sender's first `n` commands (see [`event_for`]).
pub(crate) fn value_after(n: u64) -> u64 {
    let increases = n.div_ceil(2);
    let decreases = n / 2;
    2 * increases - decreases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_after_matches_applying_the_events() {
        let mut state = Counter::default();
        for i in 0..101 {
            assert_eq!(state.0, value_after(i));
            state = state.handle_event(event_for(i));
        }
        assert_eq!(state.0, value_after(101));
    }
}
