//! What an application implements: the entity's state and event handler
//! ([`EventSourced`]) and its commands ([`Command`]).

use std::fmt;

/// State and event handling of an event-sourced entity.
///
/// The state is rebuilt by applying events in order, so `handle_event` must be
/// deterministic and must not fail: validation belongs in the command handler.
///
/// ```
/// use eventsourced::EventSourced;
///
/// #[derive(Debug, Default)]
/// struct Counter(u64);
///
/// #[derive(Debug)]
/// enum CounterEvent {
///     Increased(u64),
///     Decreased(u64),
/// }
///
/// impl EventSourced for Counter {
///     type Id = String;
///     type Event = CounterEvent;
///     const TYPE_NAME: &'static str = "counter";
///
///     fn handle_event(self, event: CounterEvent) -> Self {
///         // Saturating: a replayed log edited by hand must not panic.
///         match event {
///             CounterEvent::Increased(n) => Counter(self.0.saturating_add(n)),
///             CounterEvent::Decreased(n) => Counter(self.0.saturating_sub(n)),
///         }
///     }
/// }
///
/// let counter = Counter::default().handle_event(CounterEvent::Increased(2));
/// assert_eq!(counter.0, 2);
/// ```
pub trait EventSourced: Sized + Send + 'static {
    /// The entity's id; it reaches the event log as its `Display` string.
    type Id: fmt::Display + fmt::Debug + Clone + Send + Sync + 'static;

    /// The entity's events.
    type Event: Send + 'static;

    /// The entity type's name in the event log; keep it stable once events exist.
    const TYPE_NAME: &'static str;

    /// Applies an event to the state.
    fn handle_event(self, event: Self::Event) -> Self;
}

/// A command for an entity of type `E`: handled against the current state, it
/// emits events and replies, replies without events, or is rejected.
///
/// ```
/// use eventsourced::{Command, CommandEffect, EventSourced};
/// # #[derive(Debug, Default)] struct Counter(u64);
/// # #[derive(Debug)] enum CounterEvent { Increased(u64), Decreased(u64) }
/// # impl EventSourced for Counter {
/// #     type Id = String; type Event = CounterEvent; const TYPE_NAME: &'static str = "counter";
/// #     fn handle_event(self, event: CounterEvent) -> Self { match event {
/// #         CounterEvent::Increased(n) => Counter(self.0.saturating_add(n)), CounterEvent::Decreased(n) => Counter(self.0.saturating_sub(n)) } }
/// # }
///
/// #[derive(Debug)]
/// struct Decrease(u64);
///
/// #[derive(Debug, PartialEq)]
/// struct Underflow;
///
/// impl Command<Counter> for Decrease {
///     type Reply = u64;
///     type Error = Underflow;
///
///     fn handle_command(self, _id: &String, state: &Counter) -> CommandEffect<Counter, u64, Underflow> {
///         if state.0 < self.0 {
///             CommandEffect::reject(Underflow)
///         } else {
///             CommandEffect::emit_and_reply(CounterEvent::Decreased(self.0), |state: &Counter| state.0)
///         }
///     }
/// }
/// ```
pub trait Command<E: EventSourced>: Send + 'static {
    /// The reply to an accepted command.
    type Reply: Send + 'static;

    /// The error of a rejected command.
    type Error: Send + 'static;

    /// Decides what the command does, given the entity's id and current state.
    fn handle_command(self, id: &E::Id, state: &E) -> CommandEffect<E, Self::Reply, Self::Error>;
}

/// The result of [`Command::handle_command`].
///
/// Replies are sent only after the events are durably appended, so a reply
/// never reveals state that could still be lost.
///
/// ```
/// # use eventsourced::EventSourced;
/// # #[derive(Debug, Default)] struct Counter(u64);
/// # impl EventSourced for Counter {
/// #     type Id = String; type Event = u64; const TYPE_NAME: &'static str = "counter";
/// #     fn handle_event(self, n: u64) -> Self { Counter(self.0 + n) } }
/// use eventsourced::CommandEffect;
///
/// let emit: CommandEffect<Counter, u64, &str> = CommandEffect::emit_and_reply(1, |c: &Counter| c.0);
/// let reply: CommandEffect<Counter, u64, &str> = CommandEffect::reply(0);
/// let reject: CommandEffect<Counter, u64, &str> = CommandEffect::reject("overflow");
/// assert_eq!(format!("{emit:?}"), "Emit { events: 1 }");
/// assert_eq!(format!("{reply:?}"), "Reply(0)");
/// assert_eq!(format!("{reject:?}"), "Reject(\"overflow\")");
/// ```
pub struct CommandEffect<E: EventSourced, Reply, Error>(pub(crate) Effect<E, Reply, Error>);

/// A reply computed from the state after the command's events.
pub(crate) type MakeReply<E, Reply> = Box<dyn FnOnce(&E) -> Reply + Send>;

pub(crate) enum Effect<E: EventSourced, Reply, Error> {
    Emit {
        events: Events<E::Event>,
        make_reply: MakeReply<E, Reply>,
    },
    Reply(Reply),
    Reject(Error),
}

/// One event without allocating a `Vec`, or several.
pub(crate) enum Events<T> {
    One(T),
    Many(Vec<T>),
}

impl<E: EventSourced, Reply, Error> CommandEffect<E, Reply, Error> {
    /// Emits one event, then replies with `make_reply` applied to the new state.
    /// (A closure that captures nothing costs no allocation.)
    ///
    /// ```
    /// # use eventsourced::EventSourced;
    /// # #[derive(Debug, Default, serde::Serialize, serde::Deserialize)] struct Counter(u64);
    /// # impl EventSourced for Counter {
    /// #     type Id = String; type Event = u64; const TYPE_NAME: &'static str = "counter";
    /// #     fn handle_event(self, n: u64) -> Self { Counter(self.0 + n) } }
    /// use eventsourced::{Command, CommandEffect, EventSourcedExt, MemoryEventLog, NoopSnapshotStore, SerdeJson};
    /// use std::convert::Infallible;
    ///
    /// struct Add(u64);
    ///
    /// impl Command<Counter> for Add {
    ///     type Reply = u64;
    ///     type Error = Infallible;
    ///
    ///     fn handle_command(self, _id: &String, _state: &Counter) -> CommandEffect<Counter, u64, Infallible> {
    ///         CommandEffect::emit_and_reply(self.0, |state: &Counter| state.0) // the state after the event
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let counter = Counter(40).entity().spawn("c-1".to_owned(), MemoryEventLog::new(), NoopSnapshotStore, SerdeJson).await?;
    /// assert_eq!(counter.handle_command(Add(2)).await?, Ok(42));
    /// # Ok(()) }
    /// ```
    pub fn emit_and_reply(
        event: E::Event,
        make_reply: impl FnOnce(&E) -> Reply + Send + 'static,
    ) -> Self {
        CommandEffect(Effect::Emit {
            events: Events::One(event),
            make_reply: Box::new(make_reply),
        })
    }

    /// Emits several events, persisted atomically (all or none), then replies
    /// with `make_reply` applied to the state after the last of them.
    ///
    /// ```
    /// # use eventsourced::{CommandEffect, EventSourced};
    /// # #[derive(Debug, Default)] struct Counter(u64);
    /// # impl EventSourced for Counter {
    /// #     type Id = String; type Event = u64; const TYPE_NAME: &'static str = "counter";
    /// #     fn handle_event(self, n: u64) -> Self { Counter(self.0 + n) } }
    /// let effect: CommandEffect<Counter, u64, ()> =
    ///     CommandEffect::emit_all_and_reply([1, 2, 3], |state: &Counter| state.0);
    /// ```
    pub fn emit_all_and_reply(
        events: impl IntoIterator<Item = E::Event>,
        make_reply: impl FnOnce(&E) -> Reply + Send + 'static,
    ) -> Self {
        CommandEffect(Effect::Emit {
            events: Events::Many(events.into_iter().collect()),
            make_reply: Box::new(make_reply),
        })
    }

    /// Replies without emitting events.
    ///
    /// ```
    /// # use eventsourced::{Command, CommandEffect, EventSourced};
    /// # #[derive(Debug, Default)] struct Counter(u64);
    /// # impl EventSourced for Counter {
    /// #     type Id = String; type Event = u64; const TYPE_NAME: &'static str = "counter";
    /// #     fn handle_event(self, n: u64) -> Self { Counter(self.0 + n) } }
    /// struct Get;
    ///
    /// impl Command<Counter> for Get {
    ///     type Reply = u64;
    ///     type Error = std::convert::Infallible;
    ///
    ///     fn handle_command(self, _id: &String, state: &Counter) -> CommandEffect<Counter, u64, Self::Error> {
    ///         CommandEffect::reply(state.0) // no events, answered at once
    ///     }
    /// }
    /// ```
    pub fn reply(reply: Reply) -> Self {
        CommandEffect(Effect::Reply(reply))
    }

    /// Rejects the command with its error; nothing is emitted.
    ///
    /// ```
    /// # use eventsourced::{CommandEffect, EventSourced};
    /// # #[derive(Debug, Default)] struct Counter(u64);
    /// # impl EventSourced for Counter {
    /// #     type Id = String; type Event = u64; const TYPE_NAME: &'static str = "counter";
    /// #     fn handle_event(self, n: u64) -> Self { Counter(self.0 + n) } }
    /// #[derive(Debug)]
    /// struct Overflow;
    ///
    /// fn increase(state: &Counter, n: u64) -> CommandEffect<Counter, u64, Overflow> {
    ///     match state.0.checked_add(n) {
    ///         Some(_) => CommandEffect::emit_and_reply(n, |state: &Counter| state.0),
    ///         None => CommandEffect::reject(Overflow), // the sender gets Ok(Err(Overflow))
    ///     }
    /// }
    /// # let _ = increase(&Counter(u64::MAX), 1);
    /// ```
    pub fn reject(error: Error) -> Self {
        CommandEffect(Effect::Reject(error))
    }
}

impl<E: EventSourced, Reply: fmt::Debug, Error: fmt::Debug> fmt::Debug
    for CommandEffect<E, Reply, Error>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Effect::Emit { events, .. } => {
                let count = match events {
                    Events::One(_) => 1,
                    Events::Many(events) => events.len(),
                };
                f.debug_struct("Emit").field("events", &count).finish()
            }
            Effect::Reply(reply) => f.debug_tuple("Reply").field(reply).finish(),
            Effect::Reject(error) => f.debug_tuple("Reject").field(error).finish(),
        }
    }
}
