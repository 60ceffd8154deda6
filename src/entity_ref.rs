//! [`EntityRef`]: the cloneable handle through which commands reach an entity.

use crate::{
    Command, EventSourced,
    binarize::BinarizeError,
    entity::{CommandMessage, Mailbox},
    event_log::EventLogError,
};
use std::{
    fmt,
    sync::{Arc, OnceLock},
};
use tokio::sync::oneshot;

/// A handle to a spawned entity: cheap to clone, `Send + Sync`, and usable from
/// any task. Dropping the last clone stops the entity.
///
/// ```
/// # use eventsourced::{Command, CommandEffect, EventSourced};
/// # #[derive(Debug, Default, serde::Serialize, serde::Deserialize)] struct Counter(u64);
/// # impl EventSourced for Counter {
/// #     type Id = String; type Event = u64; const TYPE_NAME: &'static str = "counter";
/// #     fn handle_event(self, n: u64) -> Self { Counter(self.0 + n) }
/// # }
/// # struct Add(u64);
/// # impl Command<Counter> for Add {
/// #     type Reply = u64; type Error = std::convert::Infallible;
/// #     fn handle_command(self, _: &String, _: &Counter) -> CommandEffect<Counter, u64, Self::Error> {
/// #         CommandEffect::emit_and_reply(self.0, |c: &Counter| c.0)
/// #     }
/// # }
/// use eventsourced::{EventSourcedExt, MemoryEventLog, NoopSnapshotStore, SerdeJson};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let counter = Counter::default()
///     .entity()
///     .spawn("c-1".to_owned(), MemoryEventLog::default(), NoopSnapshotStore, SerdeJson)
///     .await?;
/// // Clones share the entity; send from as many tasks as you like.
/// let tasks: Vec<_> = (0..10)
///     .map(|_| {
///         let counter = counter.clone();
///         tokio::spawn(async move { counter.handle_command(Add(1)).await })
///     })
///     .collect();
/// for task in tasks {
///     task.await??.expect("Add is never rejected");
/// }
/// assert_eq!(counter.handle_command(Add(0)).await?, Ok(10));
/// assert_eq!(counter.id(), "c-1");
/// # Ok(()) }
/// ```
pub struct EntityRef<E: EventSourced> {
    pub(crate) id: E::Id,
    pub(crate) mailbox: Mailbox<E>,
    pub(crate) shared: Arc<Shared>,
}

/// What the entity task and all its handles share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// `type_name/id`, for errors.
    pub(crate) entity: Arc<str>,
    /// Why the entity stopped, set once by the entity task before it ends.
    pub(crate) stopped: OnceLock<HandleCommandError>,
}

impl<E: EventSourced> EntityRef<E> {
    /// The entity's id.
    ///
    /// ```
    /// # use eventsourced::{Command, CommandEffect, EventSourced};
    /// # #[derive(Debug, Default, serde::Serialize, serde::Deserialize)] struct Counter(u64);
    /// # impl EventSourced for Counter {
    /// #     type Id = String; type Event = u64; const TYPE_NAME: &'static str = "counter";
    /// #     fn handle_event(self, n: u64) -> Self { Counter(self.0 + n) }
    /// # }
    /// # struct Add(u64);
    /// # impl Command<Counter> for Add {
    /// #     type Reply = u64; type Error = std::convert::Infallible;
    /// #     fn handle_command(self, _: &String, _: &Counter) -> CommandEffect<Counter, u64, Self::Error> {
    /// #         CommandEffect::emit_and_reply(self.0, |c: &Counter| c.0)
    /// #     }
    /// # }
    /// use eventsourced::{EventSourcedExt, MemoryEventLog, NoopSnapshotStore, SerdeJson};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let counter = Counter::default()
    ///     .entity()
    ///     .spawn("c-1".to_owned(), MemoryEventLog::new(), NoopSnapshotStore, SerdeJson)
    ///     .await?;
    /// assert_eq!(counter.id(), "c-1");
    /// assert_eq!(counter.clone().id(), "c-1"); // clones address the same entity
    /// # Ok(()) }
    /// ```
    pub fn id(&self) -> &E::Id {
        &self.id
    }

    /// Sends a command and waits for its result: `Ok(Ok(reply))` when accepted
    /// (its events are durable), `Ok(Err(error))` when the command handler
    /// rejected it, `Err(_)` for a technical failure that says why.
    ///
    /// See the crate documentation for a complete example.
    ///
    /// ```
    /// # use eventsourced::{Command, CommandEffect, EventSourced};
    /// # #[derive(Debug, Default, serde::Serialize, serde::Deserialize)] struct Counter(u64);
    /// # impl EventSourced for Counter {
    /// #     type Id = String; type Event = u64; const TYPE_NAME: &'static str = "counter";
    /// #     fn handle_event(self, n: u64) -> Self { Counter(self.0 + n) }
    /// # }
    /// # struct Add(u64);
    /// # impl Command<Counter> for Add {
    /// #     type Reply = u64; type Error = std::convert::Infallible;
    /// #     fn handle_command(self, _: &String, _: &Counter) -> CommandEffect<Counter, u64, Self::Error> {
    /// #         CommandEffect::emit_and_reply(self.0, |c: &Counter| c.0)
    /// #     }
    /// # }
    /// use eventsourced::{EventSourcedExt, MemoryEventLog, NoopSnapshotStore, SerdeJson};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let counter = Counter::default()
    ///     .entity()
    ///     .spawn("c-1".to_owned(), MemoryEventLog::default(), NoopSnapshotStore, SerdeJson)
    ///     .await?;
    /// match counter.handle_command(Add(2)).await {
    ///     Ok(Ok(value)) => assert_eq!(value, 2),            // accepted and durable
    ///     Ok(Err(rejected)) => match rejected {},           // the command's own error
    ///     Err(technical) => return Err(technical.into()),   // e.g. the log failed
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn handle_command<C>(
        &self,
        command: C,
    ) -> Result<Result<C::Reply, C::Error>, HandleCommandError>
    where
        C: Command<E>,
    {
        let (reply_to, reply) = oneshot::channel();
        let span = tracing::debug_span!(
            "handle_command",
            entity_type = E::TYPE_NAME,
            entity_id = %self.id,
            command = std::any::type_name::<C>(),
        );
        let message = Box::new(CommandMessage::new(command, reply_to, span));
        if self.mailbox.send(message).await.is_err() {
            return Err(self.stopped_error());
        }
        // A dropped reply sender means the entity stopped before answering.
        reply.await.unwrap_or_else(|_| Err(self.stopped_error()))
    }

    /// Why the entity stopped, or `None` while it is running.
    ///
    /// ```
    /// # use eventsourced::{Command, CommandEffect, EventSourced};
    /// # #[derive(Debug, Default, serde::Serialize, serde::Deserialize)] struct Counter(u64);
    /// # impl EventSourced for Counter {
    /// #     type Id = String; type Event = u64; const TYPE_NAME: &'static str = "counter";
    /// #     fn handle_event(self, n: u64) -> Self { Counter(self.0 + n) }
    /// # }
    /// # struct Add(u64);
    /// # impl Command<Counter> for Add {
    /// #     type Reply = u64; type Error = std::convert::Infallible;
    /// #     fn handle_command(self, _: &String, _: &Counter) -> CommandEffect<Counter, u64, Self::Error> {
    /// #         CommandEffect::emit_and_reply(self.0, |c: &Counter| c.0)
    /// #     }
    /// # }
    /// use eventsourced::{EventLog, EventSourcedExt, MemoryEventLog, NoopSnapshotStore, SeqNo, SerdeJson};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let log = MemoryEventLog::default();
    /// let counter = Counter::default()
    ///     .entity()
    ///     .spawn("c-1".to_owned(), log.clone(), NoopSnapshotStore, SerdeJson)
    ///     .await?;
    /// assert!(counter.stopped().is_none());
    ///
    /// // Another writer appends to the same entity: the next append conflicts.
    /// log.append("counter", "c-1", SeqNo::ZERO, &["1".into()]).await?;
    /// let error = counter.handle_command(Add(1)).await.expect_err("conflict");
    /// assert!(error.is_conflict());
    /// assert!(counter.stopped().is_some_and(|cause| cause.is_conflict()));
    /// # Ok(()) }
    /// ```
    pub fn stopped(&self) -> Option<HandleCommandError> {
        if self.mailbox.is_closed() {
            Some(self.stopped_error())
        } else {
            None
        }
    }

    fn stopped_error(&self) -> HandleCommandError {
        self.shared
            .stopped
            .get()
            .cloned()
            .unwrap_or_else(|| HandleCommandError::TaskEnded {
                entity: self.shared.entity.clone(),
            })
    }
}

impl<E: EventSourced> Clone for EntityRef<E> {
    fn clone(&self) -> Self {
        EntityRef {
            id: self.id.clone(),
            mailbox: self.mailbox.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<E: EventSourced> fmt::Debug for EntityRef<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityRef")
            .field("type_name", &E::TYPE_NAME)
            .field("id", &self.id)
            .field("running", &!self.mailbox.is_closed())
            .finish()
    }
}

/// A technical failure of [`EntityRef::handle_command`]: the command's outcome is
/// not known to have been persisted. Cheap to clone; every handle of a stopped
/// entity reports the same cause.
///
/// ```
/// # use eventsourced::{Command, CommandEffect, EventSourced};
/// # #[derive(Debug, Default, serde::Serialize, serde::Deserialize)] struct Counter(u64);
/// # impl EventSourced for Counter {
/// #     type Id = String; type Event = u64; const TYPE_NAME: &'static str = "counter";
/// #     fn handle_event(self, n: u64) -> Self { Counter(self.0 + n) }
/// # }
/// # struct Add(u64);
/// # impl Command<Counter> for Add {
/// #     type Reply = u64; type Error = std::convert::Infallible;
/// #     fn handle_command(self, _: &String, _: &Counter) -> CommandEffect<Counter, u64, Self::Error> {
/// #         CommandEffect::emit_and_reply(self.0, |c: &Counter| c.0)
/// #     }
/// # }
/// use eventsourced::{EventLog, EventSourcedExt, HandleCommandError, MemoryEventLog, NoopSnapshotStore, SeqNo, SerdeJson};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let log = MemoryEventLog::new();
/// let counter = Counter::default()
///     .entity()
///     .spawn("c-1".to_owned(), log.clone(), NoopSnapshotStore, SerdeJson)
///     .await?;
/// log.append("counter", "c-1", SeqNo::ZERO, &["1".into()]).await?; // another writer
/// match counter.handle_command(Add(1)).await {
///     Err(HandleCommandError::AppendFailed { entity, cause }) => {
///         assert_eq!(&*entity, "counter/c-1");
///         assert!(cause.is_conflict());
///     }
///     other => panic!("expected a failed append, got {other:?}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HandleCommandError {
    /// Appending events failed, so the entity stopped: its in-memory state may
    /// be ahead of the log. Spawn it again to recover from the log.
    #[error("entity {entity} stopped because appending its events failed: {cause}")]
    AppendFailed {
        /// `type_name/id` of the entity.
        entity: Arc<str>,
        /// The event log's error, e.g. a [`EventLogError::Conflict`] when another
        /// writer appended to the same entity.
        #[source]
        cause: Arc<EventLogError>,
    },

    /// An event of this command could not be encoded; the command had no effect
    /// and the entity keeps running.
    #[error("entity {entity} cannot encode an event, the command had no effect: {cause}")]
    EncodeEvent {
        /// `type_name/id` of the entity.
        entity: Arc<str>,
        /// The encoding error.
        #[source]
        cause: Arc<BinarizeError>,
    },

    /// The entity task ended without a recorded cause: a panic in a command or
    /// event handler, or the tokio runtime shutting down.
    #[error(
        "entity {entity} is not running: its task ended (a panic in a command or event handler, or the runtime shut down)"
    )]
    TaskEnded {
        /// `type_name/id` of the entity.
        entity: Arc<str>,
    },
}

impl HandleCommandError {
    /// The event log error that stopped the entity, if that is the cause.
    ///
    /// ```
    /// # use eventsourced::{Command, CommandEffect, EventSourced};
    /// # #[derive(Debug, Default, serde::Serialize, serde::Deserialize)] struct Counter(u64);
    /// # impl EventSourced for Counter {
    /// #     type Id = String; type Event = u64; const TYPE_NAME: &'static str = "counter";
    /// #     fn handle_event(self, n: u64) -> Self { Counter(self.0 + n) }
    /// # }
    /// # struct Add(u64);
    /// # impl Command<Counter> for Add {
    /// #     type Reply = u64; type Error = std::convert::Infallible;
    /// #     fn handle_command(self, _: &String, _: &Counter) -> CommandEffect<Counter, u64, Self::Error> {
    /// #         CommandEffect::emit_and_reply(self.0, |c: &Counter| c.0)
    /// #     }
    /// # }
    /// use eventsourced::{EventLog, EventLogError, EventSourcedExt, MemoryEventLog, NoopSnapshotStore, SeqNo, SerdeJson};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let log = MemoryEventLog::new();
    /// let counter = Counter::default()
    ///     .entity()
    ///     .spawn("c-1".to_owned(), log.clone(), NoopSnapshotStore, SerdeJson)
    ///     .await?;
    /// log.append("counter", "c-1", SeqNo::ZERO, &["1".into()]).await?; // another writer
    /// let error = counter.handle_command(Add(1)).await.expect_err("the append conflicts");
    /// let cause = error.append_error().expect("the append failed");
    /// assert!(matches!(cause, EventLogError::Conflict { actual, .. } if *actual == SeqNo::new(1)));
    /// # Ok(()) }
    /// ```
    pub fn append_error(&self) -> Option<&EventLogError> {
        match self {
            HandleCommandError::AppendFailed { cause, .. } => Some(cause),
            _ => None,
        }
    }

    /// Whether the entity stopped because another writer appended to the same
    /// entity (optimistic concurrency conflict).
    ///
    /// ```
    /// # use eventsourced::{Command, CommandEffect, EventSourced};
    /// # #[derive(Debug, Default, serde::Serialize, serde::Deserialize)] struct Counter(u64);
    /// # impl EventSourced for Counter {
    /// #     type Id = String; type Event = u64; const TYPE_NAME: &'static str = "counter";
    /// #     fn handle_event(self, n: u64) -> Self { Counter(self.0 + n) }
    /// # }
    /// # struct Add(u64);
    /// # impl Command<Counter> for Add {
    /// #     type Reply = u64; type Error = std::convert::Infallible;
    /// #     fn handle_command(self, _: &String, _: &Counter) -> CommandEffect<Counter, u64, Self::Error> {
    /// #         CommandEffect::emit_and_reply(self.0, |c: &Counter| c.0)
    /// #     }
    /// # }
    /// use eventsourced::{EventLog, EventSourcedExt, MemoryEventLog, NoopSnapshotStore, SeqNo, SerdeJson};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let log = MemoryEventLog::new();
    /// # let counter = Counter::default().entity().spawn("c-1".to_owned(), log.clone(), NoopSnapshotStore, SerdeJson).await?;
    /// log.append("counter", "c-1", SeqNo::ZERO, &["1".into()]).await?; // another writer
    /// let error = counter.handle_command(Add(1)).await.expect_err("the append conflicts");
    /// assert!(error.is_conflict());
    ///
    /// // Spawned again, the entity recovers the other writer's event.
    /// drop(counter);
    /// let counter = Counter::default()
    ///     .entity()
    ///     .spawn("c-1".to_owned(), log, NoopSnapshotStore, SerdeJson)
    ///     .await?;
    /// assert_eq!(counter.handle_command(Add(1)).await?, Ok(2));
    /// # Ok(()) }
    /// ```
    pub fn is_conflict(&self) -> bool {
        self.append_error().is_some_and(EventLogError::is_conflict)
    }
}
