//! Shared by the tests: a small entity whose replies say which event they
//! acknowledge.

#![allow(dead_code, unreachable_pub)]

use eventsourced::{Command, CommandEffect, EventSourced};
use serde::{Deserialize, Serialize};

/// How many events it has seen and their sum; after its `n`th event, `count`
/// is `n`, so a reply names the seq_no of the event it acknowledges.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub count: u64,
    pub sum: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Added(pub u64);

impl EventSourced for Tally {
    type Id = String;
    type Event = Added;
    const TYPE_NAME: &'static str = "tally";

    fn handle_event(self, Added(n): Added) -> Self {
        Tally {
            count: self.count + 1,
            sum: self.sum + n,
        }
    }
}

/// Adds `n`; replies with the state after its event.
pub struct Add(pub u64);

impl Command<Tally> for Add {
    type Reply = Tally;
    type Error = std::convert::Infallible;

    fn handle_command(
        self,
        _id: &String,
        _state: &Tally,
    ) -> CommandEffect<Tally, Tally, Self::Error> {
        CommandEffect::emit_and_reply(Added(self.0), |state: &Tally| *state)
    }
}

/// Replies with the state.
pub struct Get;

impl Command<Tally> for Get {
    type Reply = Tally;
    type Error = std::convert::Infallible;

    fn handle_command(
        self,
        _id: &String,
        state: &Tally,
    ) -> CommandEffect<Tally, Tally, Self::Error> {
        CommandEffect::reply(*state)
    }
}

/// Decodes a stored event the way the entity runtime does.
pub fn decode(bytes: &[u8]) -> Added {
    serde_json::from_slice(bytes).expect("stored events decode")
}
