//! The workload's counter: the reference counter of the core's testkit
//! (`Increase`/`Decrease` emit serde_json events, `Get` replies without
//! events), and the command sequence every sender follows.

pub(crate) use eventsourced::testkit::counter::{
    Counter, CounterError, CounterEvent, Decrease, Get, Increase,
};

/// The workload's i-th command of one sender (0-based) increases by 2 when `i`
/// is even and decreases by 1 when it is odd, so a sender that awaits each
/// reply never drives the counter below zero and every prefix has a known sum.
pub(crate) fn event_for(i: u64) -> CounterEvent {
    if i.is_multiple_of(2) {
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
    use eventsourced::EventSourced;

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
