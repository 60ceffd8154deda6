//! Spawning an entity and the entity loop: the heart of the runtime.
//!
//! An entity is a tokio task that owns its state. Commands arrive through a
//! bounded mailbox. The loop takes one command, drains what is already queued
//! (up to `max_batch`), handles each command against the state as changed by the
//! ones before it, appends all their events in ONE [`EventLog::append`], and only
//! then sends the replies. If the append fails, every command of the batch gets
//! the cause and the entity stops; its handles report that cause from then on.

use crate::{
    Binarize, Command, EntityRef, EventLog, EventSourced, HandleCommandError, SeqNo, SnapshotStore,
    binarize::BinarizeError,
    entity_ref::Shared,
    event_log::{EventLogError, validate_id},
    event_sourced::{Effect, Events, MakeReply},
    snapshot_store::SnapshotStoreError,
};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use std::{
    fmt,
    num::{NonZeroU64, NonZeroUsize},
    panic::AssertUnwindSafe,
    sync::{Arc, OnceLock},
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Span, debug, warn};

/// How many times the entity yields after a batch at most, waiting for the
/// senders it just answered to send again.
const LINGER_TURNS: usize = 8;

/// The largest mailbox tokio's bounded channel can hold.
const MAX_MAILBOX_SIZE: usize = tokio::sync::Semaphore::MAX_PERMITS;

/// The sending side of an entity's mailbox.
pub(crate) type Mailbox<E> = mpsc::Sender<Box<dyn Message<E>>>;

/// Extension methods for [`EventSourced`] types.
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
/// assert_eq!(counter.handle_command(Add(2)).await?, Ok(2));
/// # Ok(()) }
/// ```
pub trait EventSourcedExt: EventSourced {
    /// Starts building an entity with `self` as the state before any event.
    fn entity(self) -> EntityBuilder<Self> {
        EntityBuilder {
            initial_state: self,
            options: EntityOptions::default(),
        }
    }
}

impl<E: EventSourced> EventSourcedExt for E {}

/// Options of a spawned entity.
///
/// ```
/// use eventsourced::EntityOptions;
/// let options = EntityOptions::default();
/// assert_eq!(options.snapshot_every, None);
/// assert_eq!(options.mailbox_size, 256);
/// assert_eq!(options.max_batch, 256);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityOptions {
    /// Save a snapshot whenever the seq_no crosses a multiple of this number;
    /// `None` never saves one.
    pub snapshot_every: Option<NonZeroU64>,
    /// Commands that can wait in the mailbox before senders wait too (at
    /// least 1, at most `2^61 - 1`).
    pub mailbox_size: usize,
    /// The most commands handled in one batch (one append).
    pub max_batch: usize,
}

impl Default for EntityOptions {
    fn default() -> Self {
        EntityOptions {
            snapshot_every: None,
            mailbox_size: 256,
            max_batch: 256,
        }
    }
}

/// An entity to be spawned, with its options; see [`EventSourcedExt::entity`].
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
/// use eventsourced::{EventSourcedExt, MemoryEventLog, MemorySnapshotStore, SerdeJson};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (log, snapshots) = (MemoryEventLog::default(), MemorySnapshotStore::default());
/// let counter = Counter::default()
///     .entity()
///     .snapshot_every(100) // a snapshot at seq_no 100, 200, ...
///     .mailbox_size(1024)  // commands that may queue before senders wait
///     .max_batch(512)      // commands handled per append
///     .spawn("c-1".to_owned(), log, snapshots, SerdeJson)
///     .await?;
/// assert_eq!(counter.handle_command(Add(1)).await?, Ok(1));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct EntityBuilder<E> {
    initial_state: E,
    options: EntityOptions,
}

impl<E: EventSourced> EntityBuilder<E> {
    /// Saves a snapshot whenever the seq_no crosses a multiple of `n`; 0 never.
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
    /// use eventsourced::{EventSourcedExt, MemoryEventLog, MemorySnapshotStore, SeqNo, SerdeJson, SnapshotStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let snapshots = MemorySnapshotStore::new();
    /// let counter = Counter::default()
    ///     .entity()
    ///     .snapshot_every(2)
    ///     .spawn("c-1".to_owned(), MemoryEventLog::new(), snapshots.clone(), SerdeJson)
    ///     .await?;
    /// counter.handle_command(Add(3)).await??;
    /// counter.handle_command(Add(4)).await??; // seq_no 2: a snapshot is due
    /// // Snapshots are saved on a task of their own, shortly after the append.
    /// let mut snapshot = None;
    /// for _ in 0..1000 {
    ///     snapshot = snapshots.load("counter", "c-1").await?;
    ///     if snapshot.is_some() {
    ///         break;
    ///     }
    ///     tokio::task::yield_now().await;
    /// }
    /// assert_eq!(snapshot, Some((SeqNo::new(2), "7".into())));
    /// # Ok(()) }
    /// ```
    pub fn snapshot_every(mut self, n: u64) -> Self {
        self.options.snapshot_every = NonZeroU64::new(n);
        self
    }

    /// How many commands can wait in the mailbox (at least 1, at most
    /// `2^61 - 1`, tokio's limit for a bounded channel).
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
    /// use eventsourced::{EventSourcedExt, MemoryEventLog, NoopSnapshotStore, SerdeJson, SpawnError};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let counter = Counter::default()
    ///     .entity()
    ///     .mailbox_size(1) // a second sender waits until the first command is taken
    ///     .spawn("c-1".to_owned(), MemoryEventLog::new(), NoopSnapshotStore, SerdeJson)
    ///     .await?;
    /// assert_eq!(counter.handle_command(Add(1)).await?, Ok(1));
    ///
    /// let empty = Counter::default().entity().mailbox_size(0);
    /// let error = empty.spawn("c-2".to_owned(), MemoryEventLog::new(), NoopSnapshotStore, SerdeJson).await;
    /// assert!(matches!(error, Err(SpawnError::InvalidOptions(_))));
    /// # Ok(()) }
    /// ```
    pub fn mailbox_size(mut self, n: usize) -> Self {
        self.options.mailbox_size = n;
        self
    }

    /// The most commands handled in one batch (at least 1).
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
    ///     .max_batch(1) // one append per command
    ///     .spawn("c-1".to_owned(), MemoryEventLog::new(), NoopSnapshotStore, SerdeJson)
    ///     .await?;
    /// assert_eq!(counter.handle_command(Add(1)).await?, Ok(1));
    ///
    /// let none = Counter::default().entity().max_batch(0);
    /// let error = none.spawn("c-2".to_owned(), MemoryEventLog::new(), NoopSnapshotStore, SerdeJson).await;
    /// assert_eq!(error.unwrap_err().to_string(), "invalid entity options: max_batch must be at least 1");
    /// # Ok(()) }
    /// ```
    pub fn max_batch(mut self, n: usize) -> Self {
        self.options.max_batch = n;
        self
    }

    /// Replaces all options at once.
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
    /// use eventsourced::{EntityOptions, EventSourcedExt, MemoryEventLog, NoopSnapshotStore, SerdeJson};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // E.g. options read from a configuration file.
    /// let options = EntityOptions { mailbox_size: 16, max_batch: 8, ..EntityOptions::default() };
    /// let counter = Counter::default()
    ///     .entity()
    ///     .options(options)
    ///     .spawn("c-1".to_owned(), MemoryEventLog::new(), NoopSnapshotStore, SerdeJson)
    ///     .await?;
    /// assert_eq!(counter.handle_command(Add(2)).await?, Ok(2));
    /// # Ok(()) }
    /// ```
    pub fn options(mut self, options: EntityOptions) -> Self {
        self.options = options;
        self
    }

    /// Recovers the entity `id` from the latest snapshot and the events after
    /// it, then spawns its task on the current tokio runtime.
    ///
    /// Spawn each entity once: a second live instance of the same entity gets
    /// a conflict on its next append and stops.
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
    /// use eventsourced::{EventSourcedExt, MemoryEventLog, MemorySnapshotStore, SerdeJson};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (log, snapshots) = (MemoryEventLog::default(), MemorySnapshotStore::default());
    /// let first = Counter::default()
    ///     .entity()
    ///     .spawn("c-1".to_owned(), log.clone(), snapshots.clone(), SerdeJson)
    ///     .await?;
    /// first.handle_command(Add(5)).await??;
    /// drop(first); // the task ends with its last handle
    ///
    /// // Respawned: the state comes back from the log.
    /// let again = Counter::default()
    ///     .entity()
    ///     .spawn("c-1".to_owned(), log, snapshots, SerdeJson)
    ///     .await?;
    /// assert_eq!(again.handle_command(Add(1)).await?, Ok(6));
    /// # Ok(()) }
    /// ```
    pub async fn spawn<L, S, B>(
        self,
        id: E::Id,
        event_log: L,
        snapshot_store: S,
        binarize: B,
    ) -> Result<EntityRef<E>, SpawnError>
    where
        L: EventLog,
        S: SnapshotStore,
        B: Binarize<E::Event> + Binarize<E>,
    {
        let EntityBuilder {
            initial_state,
            options,
        } = self;
        let max_batch = NonZeroUsize::new(options.max_batch)
            .ok_or(SpawnError::InvalidOptions("max_batch must be at least 1"))?;
        let mailbox_size = NonZeroUsize::new(options.mailbox_size)
            .filter(|n| n.get() <= MAX_MAILBOX_SIZE)
            .ok_or(SpawnError::InvalidOptions(
                "mailbox_size must be at least 1 and at most 2^61 - 1",
            ))?;

        let runtime = tokio::runtime::Handle::try_current().map_err(|_| SpawnError::NoRuntime)?;

        let id_string = id.to_string();
        let entity: Arc<str> = format!("{}/{}", E::TYPE_NAME, id_string).into();
        // Refused now rather than by the first append, which would stop the
        // entity; a backend's own limits come with its first read below.
        validate_id(E::TYPE_NAME, &id_string).map_err(|source| SpawnError::InvalidId {
            entity: entity.clone(),
            source,
        })?;
        let (last_seq_no, state) = recover(
            &entity,
            &id_string,
            initial_state,
            &event_log,
            &snapshot_store,
            &binarize,
        )
        .await?;
        debug!(%entity, %last_seq_no, "entity recovered");

        let (mailbox, inbox) = mpsc::channel(mailbox_size.get());
        let shared = Arc::new(Shared {
            entity,
            stopped: OnceLock::new(),
        });
        let entity = Entity {
            id: id.clone(),
            id_string,
            last_seq_no,
            event_log,
            binarize,
            snapshots: Snapshots {
                every: options.snapshot_every,
                store: snapshot_store,
                saver: None,
            },
            max_batch: max_batch.get(),
            shared: shared.clone(),
        };
        runtime.spawn(entity.run(state, inbox));
        Ok(EntityRef {
            id,
            mailbox,
            shared,
        })
    }
}

/// Rebuilds the state: latest snapshot, then every event after it, checking
/// that seq_nos continue without gaps up to the log's last one.
async fn recover<E, L, S, B>(
    entity: &Arc<str>,
    id: &str,
    initial_state: E,
    event_log: &L,
    snapshot_store: &S,
    binarize: &B,
) -> Result<(SeqNo, E), SpawnError>
where
    E: EventSourced,
    L: EventLog,
    S: SnapshotStore,
    B: Binarize<E::Event> + Binarize<E>,
{
    // The snapshot and the log's last seq_no are independent reads: one
    // round trip of waiting instead of two.
    let (snapshot, log_last) = futures::join!(
        snapshot_store.load(E::TYPE_NAME, id),
        event_log.last_seq_no(E::TYPE_NAME, id)
    );
    let snapshot = snapshot.map_err(|source| SpawnError::LoadSnapshot {
        entity: entity.clone(),
        source,
    })?;
    let (mut seq_no, mut state) = match snapshot {
        Some((seq_no, bytes)) => {
            let state = binarize
                .decode(bytes)
                .map_err(|source| SpawnError::DecodeSnapshot {
                    entity: entity.clone(),
                    seq_no,
                    source,
                })?;
            (seq_no, state)
        }
        None => (SeqNo::ZERO, initial_state),
    };

    let read_error = |source| match source {
        EventLogError::InvalidId { .. } => SpawnError::InvalidId {
            entity: entity.clone(),
            source,
        },
        source => SpawnError::ReadEvents {
            entity: entity.clone(),
            source,
        },
    };
    let mut log_last = log_last.map_err(read_error)?;
    if seq_no > log_last {
        // The two reads ran at once: another writer may have appended and
        // snapshotted in between. Its append came before its snapshot, so a
        // read of the log after the snapshot's shows it.
        log_last = event_log
            .last_seq_no(E::TYPE_NAME, id)
            .await
            .map_err(read_error)?;
    }
    if seq_no > log_last {
        return Err(SpawnError::SnapshotAheadOfLog {
            entity: entity.clone(),
            snapshot_seq_no: seq_no,
            log_seq_no: log_last,
        });
    }

    let mut events = std::pin::pin!(event_log.events_by_id(E::TYPE_NAME, id, seq_no.next()));
    while let Some(event) = events.next().await {
        let (event_seq_no, bytes) = event.map_err(read_error)?;
        if event_seq_no != seq_no.next() {
            return Err(SpawnError::Gap {
                entity: entity.clone(),
                expected: seq_no.next(),
                found: Some(event_seq_no),
            });
        }
        let event = binarize
            .decode(bytes)
            .map_err(|source| SpawnError::DecodeEvent {
                entity: entity.clone(),
                seq_no: event_seq_no,
                source,
            })?;
        state = state.handle_event(event);
        seq_no = event_seq_no;
    }
    if seq_no < log_last {
        return Err(SpawnError::Gap {
            entity: entity.clone(),
            expected: seq_no.next(),
            found: None,
        });
    }
    Ok((seq_no, state))
}

/// A running entity: everything its task owns besides the state, which the
/// loop holds by value because `handle_event` takes it by value.
struct Entity<E: EventSourced, L, S, B> {
    id: E::Id,
    /// The id as the log sees it, computed once.
    id_string: String,
    last_seq_no: SeqNo,
    event_log: L,
    binarize: B,
    snapshots: Snapshots<S>,
    max_batch: usize,
    shared: Arc<Shared>,
}

impl<E, L, S, B> Entity<E, L, S, B>
where
    E: EventSourced,
    L: EventLog,
    S: SnapshotStore,
    B: Binarize<E::Event> + Binarize<E>,
{
    /// The entity task: the entity loop, then, if the loop stopped on a
    /// failed append or a panic, the cause for every command still coming.
    async fn run(mut self, state: E, mut inbox: mpsc::Receiver<Box<dyn Message<E>>>) {
        // Records a cause if the task is dropped, e.g. as the runtime shuts down.
        let _guard = RecordEndOnDrop(self.shared.clone());
        let served = AssertUnwindSafe(self.serve(state, &mut inbox))
            .catch_unwind()
            .await;
        let cause = match served {
            Ok(None) => return, // Every handle is gone.
            Ok(Some(cause)) => cause,
            Err(_panic) => {
                // The panic hook has reported it; the handles report this.
                let cause = HandleCommandError::TaskEnded {
                    entity: self.shared.entity.clone(),
                };
                let _ = self.shared.stopped.set(cause.clone());
                inbox.close();
                cause
            }
        };
        // A send that took mailbox capacity just before the close puts its
        // command in afterwards; dropping the mailbox would leave it
        // unanswered for good. `recv` returns those, and `None` only once no
        // send is under way.
        while let Some(message) = inbox.recv().await {
            message.complete(Err(cause.clone()));
        }
    }

    /// The entity loop. Returns `None` when every handle is dropped, or the
    /// cause after a failed append (recorded for every handle, the mailbox
    /// closed).
    async fn serve(
        &mut self,
        mut state: E,
        inbox: &mut mpsc::Receiver<Box<dyn Message<E>>>,
    ) -> Option<HandleCommandError> {
        let mut batch = Vec::new();
        let mut events = Vec::new();
        let mut encoded = Vec::new();

        while let Some(first) = inbox.recv().await {
            // 1. Take what is already queued, up to max_batch.
            batch.push(first);
            while batch.len() < self.max_batch {
                match inbox.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }

            // 2. Handle each command against the state changed by the earlier ones.
            for message in &mut batch {
                state = self.handle(message.as_mut(), state, &mut events, &mut encoded);
            }

            // 3. Persist all events of the batch in one append, then reply.
            if encoded.is_empty() {
                batch.drain(..).for_each(|message| message.complete(Ok(())));
                continue;
            }
            let appended = self
                .event_log
                .append(E::TYPE_NAME, &self.id_string, self.last_seq_no, &encoded)
                .await;
            encoded.clear();
            match appended {
                Ok(seq_no) => {
                    let previous = self.last_seq_no;
                    self.last_seq_no = seq_no;
                    let answered = batch.len();
                    batch.drain(..).for_each(|message| message.complete(Ok(())));
                    self.snapshot_if_due(previous, &state);
                    // Let the senders just answered queue their next commands,
                    // so the next batch takes them all instead of alternating
                    // between a few commands and many: a durable append costs
                    // about the same for 10 events as for 60. A few scheduler
                    // turns at most; a sender that is done costs only those.
                    let expected = answered.min(self.max_batch);
                    for _ in 0..LINGER_TURNS {
                        tokio::task::yield_now().await;
                        if inbox.len() >= expected {
                            break;
                        }
                    }
                }
                Err(cause) => {
                    warn!(entity = %self.shared.entity, error = %cause, "append failed, entity stops");
                    let error = HandleCommandError::AppendFailed {
                        entity: self.shared.entity.clone(),
                        cause: Arc::new(cause),
                    };
                    // Record the cause before anyone can see the mailbox closed.
                    let _ = self.shared.stopped.set(error.clone());
                    inbox.close();
                    batch
                        .drain(..)
                        .for_each(|message| message.complete(Err(error.clone())));
                    return Some(error);
                }
            }
        }
        None
    }

    /// Runs one command's handler, encodes its events and applies them to the
    /// state. Encoding happens first, so a command whose event cannot be
    /// encoded leaves the state untouched.
    fn handle(
        &self,
        message: &mut dyn Message<E>,
        mut state: E,
        events: &mut Vec<E::Event>,
        encoded: &mut Vec<Bytes>,
    ) -> E {
        let _span = message.span().clone().entered();
        message.handle(&self.id, &state, events);
        if events.is_empty() {
            // A command that emitted an empty list is answered with the state
            // as it is (a reply or rejection is already done).
            message.applied(&state);
            return state;
        }
        let start = encoded.len();
        for event in events.iter() {
            match self.binarize.encode(event) {
                Ok(bytes) => encoded.push(bytes),
                Err(cause) => {
                    encoded.truncate(start);
                    events.clear();
                    message.reject_technically(HandleCommandError::EncodeEvent {
                        entity: self.shared.entity.clone(),
                        cause: Arc::new(cause),
                    });
                    return state;
                }
            }
        }
        for event in events.drain(..) {
            state = state.handle_event(event);
        }
        message.applied(&state);
        state
    }

    /// Saves a snapshot when the seq_no crossed a multiple of `snapshot_every`.
    fn snapshot_if_due(&mut self, previous: SeqNo, state: &E) {
        let Some(every) = self.snapshots.every else {
            return;
        };
        if previous.get() / every.get() == self.last_seq_no.get() / every.get() {
            return;
        }
        match self.binarize.encode(state) {
            Ok(bytes) => self.snapshots.save(
                &self.shared.entity,
                &self.id_string,
                E::TYPE_NAME,
                self.last_seq_no,
                bytes,
            ),
            Err(error) => {
                warn!(entity = %self.shared.entity, seq_no = %self.last_seq_no, %error, "cannot encode snapshot")
            }
        }
    }
}

/// Saves snapshots on a task of their own, so that a slow store never blocks
/// command handling. Only the newest pending snapshot is kept: a save that
/// fails is logged, and the next multiple of `every` tries again.
struct Snapshots<S> {
    every: Option<NonZeroU64>,
    store: S,
    /// Spawned at the first snapshot; ends when the entity ends.
    saver: Option<watch::Sender<Option<(SeqNo, Bytes)>>>,
}

impl<S: SnapshotStore> Snapshots<S> {
    fn save(
        &mut self,
        entity: &Arc<str>,
        id: &str,
        type_name: &'static str,
        seq_no: SeqNo,
        state: Bytes,
    ) {
        let saver = self.saver.get_or_insert_with(|| {
            let (sender, mut pending) = watch::channel(None);
            let store = self.store.clone();
            let (entity, id) = (entity.clone(), id.to_owned());
            tokio::spawn(async move {
                // `changed` reports a pending value before it reports the closed
                // channel, so the last snapshot is saved even as the entity ends.
                while pending.changed().await.is_ok() {
                    let Some((seq_no, state)) = pending.borrow_and_update().clone() else {
                        continue;
                    };
                    // A store that panics fails this save, not every later one.
                    let saved = AssertUnwindSafe(store.save(type_name, &id, seq_no, state))
                        .catch_unwind()
                        .await;
                    match saved {
                        Ok(Ok(())) => debug!(%entity, %seq_no, "snapshot saved"),
                        Ok(Err(error)) => warn!(%entity, %seq_no, %error, "cannot save snapshot, retrying at the next interval"),
                        Err(_) => warn!(%entity, %seq_no, "the snapshot store panicked while saving, retrying at the next interval"),
                    }
                }
            });
            sender
        });
        saver.send_replace(Some((seq_no, state)));
    }
}

/// Records [`HandleCommandError::TaskEnded`] when the entity task ends without
/// a cause recorded earlier, e.g. because a handler panicked.
struct RecordEndOnDrop(Arc<Shared>);

impl Drop for RecordEndOnDrop {
    fn drop(&mut self) {
        let _ = self.0.stopped.set(HandleCommandError::TaskEnded {
            entity: self.0.entity.clone(),
        });
    }
}

/// A command on its way through the mailbox, with its type erased so one
/// mailbox carries every command type of the entity. It carries its reply
/// channel and its tracing span.
pub(crate) trait Message<E: EventSourced>: Send {
    /// Runs the command handler; pushes emitted events to `events`.
    fn handle(&mut self, id: &E::Id, state: &E, events: &mut Vec<E::Event>);

    /// The command's events, if any, were applied: a command that emitted
    /// events computes its reply from `state`; any other is left as it is.
    fn applied(&mut self, state: &E);

    /// The command failed before its events reached the batch.
    fn reject_technically(&mut self, error: HandleCommandError);

    /// Sends the prepared outcome, or `error` if the batch's append failed.
    fn complete(self: Box<Self>, append: Result<(), HandleCommandError>);

    /// The span of the `handle_command` call that sent this command.
    fn span(&self) -> &Span;
}

type ReplyTo<C, E> = oneshot::Sender<
    Result<Result<<C as Command<E>>::Reply, <C as Command<E>>::Error>, HandleCommandError>,
>;

/// The one [`Message`] implementation: a command and where its reply goes.
pub(crate) struct CommandMessage<E: EventSourced, C: Command<E>> {
    progress: Progress<E, C>,
    reply_to: ReplyTo<C, E>,
    span: Span,
}

enum Progress<E: EventSourced, C: Command<E>> {
    Received(C),
    Applying(MakeReply<E, C::Reply>),
    Done(Result<Result<C::Reply, C::Error>, HandleCommandError>),
    /// Only while moving between the states above.
    Moving,
}

impl<E: EventSourced, C: Command<E>> CommandMessage<E, C> {
    pub(crate) fn new(command: C, reply_to: ReplyTo<C, E>, span: Span) -> Self {
        CommandMessage {
            progress: Progress::Received(command),
            reply_to,
            span,
        }
    }
}

impl<E: EventSourced, C: Command<E>> Message<E> for CommandMessage<E, C> {
    fn handle(&mut self, id: &E::Id, state: &E, events: &mut Vec<E::Event>) {
        let Progress::Received(command) = std::mem::replace(&mut self.progress, Progress::Moving)
        else {
            return;
        };
        self.progress = match command.handle_command(id, state).0 {
            Effect::Emit {
                events: emitted,
                make_reply,
            } => {
                match emitted {
                    Events::One(event) => events.push(event),
                    Events::Many(emitted) => events.extend(emitted),
                }
                Progress::Applying(make_reply)
            }
            Effect::Reply(reply) => Progress::Done(Ok(Ok(reply))),
            Effect::Reject(error) => Progress::Done(Ok(Err(error))),
        };
    }

    fn applied(&mut self, state: &E) {
        self.progress = match std::mem::replace(&mut self.progress, Progress::Moving) {
            Progress::Applying(make_reply) => Progress::Done(Ok(Ok(make_reply(state)))),
            other => other,
        };
    }

    fn reject_technically(&mut self, error: HandleCommandError) {
        self.progress = Progress::Done(Err(error));
    }

    fn complete(self: Box<Self>, append: Result<(), HandleCommandError>) {
        let outcome = match (append, self.progress) {
            (Err(error), _) => Err(error),
            (Ok(()), Progress::Done(outcome)) => outcome,
            // Unreachable by construction: `Entity::handle` leaves every
            // message Done, whether it emitted events, none, or failed to
            // encode them.
            (Ok(()), _) => return,
        };
        // The caller may have stopped waiting; that is not the entity's problem.
        let _ = self.reply_to.send(outcome);
    }

    fn span(&self) -> &Span {
        &self.span
    }
}

/// A technical error when spawning an entity: it names the entity and, where it
/// applies, the seq_no.
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
/// use eventsourced::{EventLog, EventSourcedExt, MemoryEventLog, NoopSnapshotStore, SeqNo, SerdeJson, SpawnError};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let log = MemoryEventLog::default();
/// // Bytes that are not a JSON number cannot become a `u64` event.
/// log.append("counter", "c-1", SeqNo::ZERO, &["not json".into()]).await?;
/// let error = Counter::default()
///     .entity()
///     .spawn("c-1".to_owned(), log, NoopSnapshotStore, SerdeJson)
///     .await
///     .expect_err("undecodable event");
/// assert!(matches!(error, SpawnError::DecodeEvent { .. }));
/// assert!(error.to_string().contains("counter/c-1"), "names the entity: {error}");
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// An option is out of range.
    #[error("invalid entity options: {0}")]
    InvalidOptions(&'static str),

    /// `spawn` was awaited outside a tokio runtime, which the entity's task
    /// needs.
    #[error(
        "cannot spawn an entity outside a tokio runtime: await spawn inside one (e.g. #[tokio::main])"
    )]
    NoRuntime,

    /// The id (or the entity type's name) is one the log cannot store, e.g.
    /// empty, or beyond a backend's limits.
    #[error("invalid id for entity {entity}: {source}")]
    InvalidId {
        /// `type_name/id`.
        entity: Arc<str>,
        /// The log's [`EventLogError::InvalidId`].
        #[source]
        source: EventLogError,
    },

    /// The snapshot store failed.
    #[error("cannot load the snapshot of entity {entity}: {source}")]
    LoadSnapshot {
        /// `type_name/id`.
        entity: Arc<str>,
        /// The store's error.
        #[source]
        source: SnapshotStoreError,
    },

    /// The snapshot's bytes do not decode.
    #[error("cannot decode the snapshot of entity {entity} at seq_no {seq_no}: {source}")]
    DecodeSnapshot {
        /// `type_name/id`.
        entity: Arc<str>,
        /// The snapshot's seq_no.
        seq_no: SeqNo,
        /// The decoding error.
        #[source]
        source: BinarizeError,
    },

    /// The snapshot claims events that the log does not have.
    #[error(
        "the snapshot of entity {entity} is at seq_no {snapshot_seq_no}, but its log ends at {log_seq_no}: snapshot store and event log do not belong together"
    )]
    SnapshotAheadOfLog {
        /// `type_name/id`.
        entity: Arc<str>,
        /// The snapshot's seq_no.
        snapshot_seq_no: SeqNo,
        /// The log's last seq_no.
        log_seq_no: SeqNo,
    },

    /// Reading the events failed.
    #[error("cannot read the events of entity {entity}: {source}")]
    ReadEvents {
        /// `type_name/id`.
        entity: Arc<str>,
        /// The log's error.
        #[source]
        source: EventLogError,
    },

    /// The log is missing an event.
    #[error("the events of entity {entity} have a gap: expected seq_no {expected}, found {}", found.map_or_else(|| "the end of the log".to_owned(), |s| s.to_string()))]
    Gap {
        /// `type_name/id`.
        entity: Arc<str>,
        /// The seq_no that should have come next.
        expected: SeqNo,
        /// What came instead (`None`: the stream ended early).
        found: Option<SeqNo>,
    },

    /// An event's bytes do not decode.
    #[error("cannot decode event {seq_no} of entity {entity}: {source}")]
    DecodeEvent {
        /// `type_name/id`.
        entity: Arc<str>,
        /// The event's seq_no.
        seq_no: SeqNo,
        /// The decoding error.
        #[source]
        source: BinarizeError,
    },
}

impl<E: EventSourced, C: Command<E>> fmt::Debug for CommandMessage<E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandMessage")
            .field("command", &std::any::type_name::<C>())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    //! A send that has taken mailbox capacity but puts its command in only
    //! after the entity stopped: what a sender preempted at the wrong moment
    //! does. Its command must get the cause, not wait forever.

    use super::CommandMessage;
    use crate::testkit::counter::{Counter, CounterError, CounterEvent, Increase};
    use crate::{
        Binarize, Command, CommandEffect, EntityRef, EventLog, EventSourcedExt, HandleCommandError,
        MemoryEventLog, NoopSnapshotStore, SeqNo, SerdeJson,
    };
    use std::time::Duration;
    use tokio::sync::oneshot;

    /// Puts `Increase(1)` in through `permit` and returns the answer.
    async fn put_in_late(
        permit: tokio::sync::mpsc::Permit<'_, Box<dyn super::Message<Counter>>>,
    ) -> Result<Result<u64, CounterError>, HandleCommandError> {
        let (reply_to, reply) = oneshot::channel();
        permit.send(Box::new(CommandMessage::new(
            Increase(1),
            reply_to,
            tracing::Span::none(),
        )));
        tokio::time::timeout(Duration::from_secs(5), reply)
            .await
            .expect("a command put in after the entity stopped was never answered")
            .expect("the entity dropped the command without an answer")
    }

    async fn spawn(log: MemoryEventLog) -> EntityRef<Counter> {
        Counter::default()
            .entity()
            .spawn("c".to_owned(), log, NoopSnapshotStore, SerdeJson)
            .await
            .expect("spawn")
    }

    #[tokio::test]
    async fn a_command_put_in_after_a_failed_append_gets_the_cause() {
        let log = MemoryEventLog::new();
        let entity = spawn(log.clone()).await;
        let permit = entity.mailbox.reserve().await.expect("capacity");
        // Another writer appends first: the entity's next append conflicts.
        let event = SerdeJson.encode(&CounterEvent::Increased(5)).unwrap();
        log.append("counter", "c", SeqNo::ZERO, &[event])
            .await
            .unwrap();
        let stopped = entity.handle_command(Increase(1)).await.unwrap_err();
        assert!(stopped.is_conflict(), "{stopped}");
        // Let the entity task run on past its stop.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let late = put_in_late(permit).await.unwrap_err();
        assert!(late.is_conflict(), "{late}");
    }

    /// Panics: a bug in a command handler.
    struct Panic;

    impl Command<Counter> for Panic {
        type Reply = u64;
        type Error = CounterError;

        fn handle_command(
            self,
            _: &String,
            _: &Counter,
        ) -> CommandEffect<Counter, u64, CounterError> {
            panic!("a bug in the command handler")
        }
    }

    #[tokio::test]
    async fn a_command_put_in_after_a_panic_gets_an_error() {
        let entity = spawn(MemoryEventLog::new()).await;
        let permit = entity.mailbox.reserve().await.expect("capacity");
        let ended = entity.handle_command(Panic).await.unwrap_err();
        assert!(
            matches!(ended, HandleCommandError::TaskEnded { .. }),
            "{ended}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let late = put_in_late(permit).await.unwrap_err();
        assert!(
            matches!(late, HandleCommandError::TaskEnded { .. }),
            "{late}"
        );
    }
}
