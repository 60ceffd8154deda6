use crate::{EventEnvelope, EventLog, EventLogError, Position, SeqNo, event_log::validate_id};
use bytes::Bytes;
use futures::{Stream, stream};
use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};
use tokio::sync::watch;

/// How many events a live `events_by_type` stream takes per lock.
const READ_CHUNK: usize = 1024;

/// An [`EventLog`] in memory: complete (live streams, optimistic concurrency),
/// fast, and gone when the process exits. For tests, demos, and entities whose
/// history need not outlive the process.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), eventsourced::EventLogError> {
/// use eventsourced::{EventLog, MemoryEventLog, SeqNo};
/// use bytes::Bytes;
///
/// let log = MemoryEventLog::default();
/// let last = log.append("counter", "a", SeqNo::ZERO, &[Bytes::from("e1"), Bytes::from("e2")]).await?;
/// assert_eq!(last, SeqNo::new(2));
/// // A writer that expects an older state is refused:
/// assert!(log.append("counter", "a", SeqNo::new(1), &[Bytes::from("x")]).await.unwrap_err().is_conflict());
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct MemoryEventLog {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// The last position written; live streams wait for it to change.
    head: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    last_position: u64,
    /// type name → id → the entity's events; seq_no = index + 1.
    entities: HashMap<String, HashMap<String, Vec<Bytes>>>,
    /// type name → its events in position order.
    by_type: HashMap<String, Vec<Stored>>,
}

/// An event of `by_type`; the id is shared by all events of its entity.
struct Stored {
    position: Position,
    id: Arc<str>,
    seq_no: SeqNo,
    event: Bytes,
}

impl Stored {
    fn envelope(&self) -> EventEnvelope {
        EventEnvelope {
            position: self.position,
            id: self.id.to_string(),
            seq_no: self.seq_no,
            event: self.event.clone(),
        }
    }
}

/// The entry for `key`, allocating an owned key only when it is missing.
fn entry<'m, V: Default>(map: &'m mut HashMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

impl std::fmt::Debug for MemoryEventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryEventLog")
            .field("last_position", &self.lock().last_position)
            .finish()
    }
}

impl MemoryEventLog {
    /// A new, empty log.
    ///
    /// ```
    /// use eventsourced::{EventLog, MemoryEventLog, SeqNo};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let log = MemoryEventLog::new();
    /// assert_eq!(log.last_seq_no("counter", "a").await?, SeqNo::ZERO);
    /// // Clones share the events.
    /// log.clone().append("counter", "a", SeqNo::ZERO, &["+1".into()]).await?;
    /// assert_eq!(log.last_seq_no("counter", "a").await?, SeqNo::new(1));
    /// # Ok(()) }
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated (every
        // update is a push after all checks), so a poisoned lock is still usable.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read_by_type(&self, type_name: &str, from: Position) -> VecDeque<EventEnvelope> {
        let state = self.lock();
        let Some(events) = state.by_type.get(type_name) else {
            return VecDeque::new();
        };
        let start = events.partition_point(|e| e.position < from);
        events[start..]
            .iter()
            .take(READ_CHUNK)
            .map(Stored::envelope)
            .collect()
    }
}

impl EventLog for MemoryEventLog {
    async fn append(
        &self,
        type_name: &str,
        id: &str,
        expected_last: SeqNo,
        events: &[Bytes],
    ) -> Result<SeqNo, EventLogError> {
        validate_id(type_name, id)?;
        let mut guard = self.lock();
        let state = &mut *guard;
        let stored = state
            .entities
            .get(type_name)
            .and_then(|ids| ids.get(id))
            .map_or(0, Vec::len);
        let actual = SeqNo::new(stored as u64);
        if actual != expected_last {
            return Err(EventLogError::Conflict {
                type_name: type_name.to_owned(),
                id: id.to_owned(),
                expected: expected_last,
                actual,
            });
        }
        if events.is_empty() {
            return Ok(actual);
        }
        let entity = entry(entry(&mut state.entities, type_name), id);
        let by_type = entry(&mut state.by_type, type_name);
        let shared_id: Arc<str> = match by_type.last() {
            Some(last) if &*last.id == id => last.id.clone(),
            _ => id.into(),
        };
        for (seq_no, event) in (expected_last.get() + 1..).zip(events) {
            state.last_position += 1;
            entity.push(event.clone());
            by_type.push(Stored {
                position: Position::new(state.last_position),
                id: shared_id.clone(),
                seq_no: SeqNo::new(seq_no),
                event: event.clone(),
            });
        }
        let last_position = state.last_position;
        drop(guard);
        self.shared.head.send_replace(last_position);
        Ok(expected_last.add(events.len() as u64))
    }

    async fn last_seq_no(&self, type_name: &str, id: &str) -> Result<SeqNo, EventLogError> {
        let state = self.lock();
        let stored = state
            .entities
            .get(type_name)
            .and_then(|ids| ids.get(id))
            .map_or(0, Vec::len);
        Ok(SeqNo::new(stored as u64))
    }

    fn events_by_id(
        &self,
        type_name: &str,
        id: &str,
        from: SeqNo,
    ) -> impl Stream<Item = Result<(SeqNo, Bytes), EventLogError>> + Send + 'static + use<> {
        let state = self.lock();
        let events: Vec<_> = state
            .entities
            .get(type_name)
            .and_then(|ids| ids.get(id))
            .map(|events| {
                let skip = usize::try_from(from.get().saturating_sub(1)).unwrap_or(usize::MAX);
                (1..)
                    .zip(events)
                    .skip(skip)
                    .map(|(seq_no, e)| Ok((SeqNo::new(seq_no), e.clone())))
                    .collect()
            })
            .unwrap_or_default();
        stream::iter(events)
    }

    fn events_by_type(
        &self,
        type_name: &str,
        from: Position,
    ) -> impl Stream<Item = Result<EventEnvelope, EventLogError>> + Send + 'static + use<> {
        struct Follower {
            log: MemoryEventLog,
            type_name: String,
            next: Position,
            head: watch::Receiver<u64>,
            buffer: VecDeque<EventEnvelope>,
        }
        let follower = Follower {
            log: self.clone(),
            type_name: type_name.to_owned(),
            next: from,
            head: self.shared.head.subscribe(),
            buffer: VecDeque::new(),
        };
        stream::unfold(follower, |mut f| async move {
            loop {
                if let Some(envelope) = f.buffer.pop_front() {
                    f.next = envelope.position.next();
                    return Some((Ok(envelope), f));
                }
                // Mark the head as seen before reading, so an append after the
                // read wakes `changed` below.
                f.head.borrow_and_update();
                f.buffer = f.log.read_by_type(&f.type_name, f.next);
                if f.buffer.is_empty() {
                    // The sender lives as long as `f.log`, so this cannot fail.
                    f.head.changed().await.ok()?;
                }
            }
        })
    }
}
