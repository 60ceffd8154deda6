//! [`NatsEventLog`]: the event log on one JetStream stream.

use crate::{
    NatsConfig, NatsError,
    connection::{self, Connections},
    error::BoxError,
    frame::{self, MAX_EVENTS_PER_APPEND, len_u64},
    subject::{self, Subjects},
};
use async_nats::{
    HeaderMap,
    datetime::DateTime,
    jetstream::{
        self, ErrorCode,
        consumer::{
            DeliverPolicy,
            pull::{OrderedConfig, OrderedError},
        },
        context::{
            CreateStreamErrorKind, GetStreamErrorKind, PublishErrorKind, RequestError,
            RequestErrorKind,
        },
        stream::{DirectGetErrorKind, DiscardPolicy, LastRawMessageErrorKind, RetentionPolicy},
    },
};
use bytes::Bytes;
use eventsourced::{EventEnvelope, EventLog, EventLogError, Position, SeqNo};
use futures::{Stream, StreamExt, TryStreamExt, stream};
use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};
use tracing::debug;

const BACKEND: &str = "nats";

/// Bits of a [`Position`] that hold the event's index within its message.
const INDEX_BITS: u32 = 16;

/// How long a live reader waits for a message before it asks whether its
/// stream is still there: the consumer of a deleted stream waits forever.
const STREAM_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// How many entities' last stream sequences are remembered before the memo
/// is cleared (a miss costs one request, never correctness).
const MEMO_CAPACITY: usize = 100_000;

/// Reading an entity from seq_no `from`: with more events than this before
/// it, binary-search the stream for the message holding `from` instead of
/// reading (and dropping) every earlier message.
const SEARCH_AFTER_EVENTS: u64 = 128;

/// Reading an entity's last few events (fewer than this many): follow the
/// chain of messages backwards from the last one (each message's
/// `Nats-Expected-Last-Subject-Sequence` is its predecessor's stream
/// sequence) with direct gets instead of starting a consumer.
const WALK_BACK_EVENTS: u64 = 32;

/// How often an append retries after JetStream reported a wrong last sequence
/// while the entity's last seq_no matched the expectation (stale memo).
const STALE_RETRIES: usize = 3;

/// An [`EventLog`] on a NATS JetStream stream.
///
/// Each append is ONE message on the entity's subject carrying the whole batch
/// (atomic), published with `Nats-Expected-Last-Subject-Sequence`, so the
/// server refuses it if another writer appended first: a typed
/// [`EventLogError::Conflict`], also for the first event. Appends of many
/// entities are pipelined on the one connection. See the crate docs for the
/// subject mapping, positions and durability.
///
/// Cheap to clone: clones share the connection.
///
/// ```no_run
/// use eventsourced::{EventLog, SeqNo};
/// use eventsourced_nats::{NatsConfig, NatsEventLog};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let log = NatsEventLog::new(NatsConfig::from_url("nats://127.0.0.1:4222")).await?;
/// log.setup().await?;
/// let last = log.append("counter", "a.b", SeqNo::ZERO, &["1".into()]).await?;
/// assert_eq!(last, SeqNo::new(1));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct NatsEventLog {
    inner: Arc<Inner>,
}

struct Inner {
    config: NatsConfig,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    stream: jetstream::stream::Stream<()>,
    subjects: Subjects,
    /// Changes when the client (re)connects; `None` for a client of the user's.
    connections: Option<Connections>,
    /// Entity subject -> its last message as last seen by this process.
    memo: Mutex<HashMap<String, Last>>,
}

/// The last message of an entity's subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Last {
    seq_no: SeqNo,
    stream_seq: u64,
}

impl fmt::Debug for NatsEventLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsEventLog")
            .field("servers", &self.inner.config.servers_for_display())
            .field("stream", &self.inner.config.stream)
            .field("subject_prefix", &self.inner.config.subject_prefix)
            .finish_non_exhaustive()
    }
}

impl NatsEventLog {
    /// Connects as `config` says. Does not create the stream: call
    /// [`setup`](NatsEventLog::setup) once (it is idempotent) or create it
    /// with your own tooling.
    ///
    /// ```no_run
    /// use eventsourced_nats::{NatsConfig, NatsEventLog};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut config = NatsConfig::from_url("nats://127.0.0.1:4222");
    /// config.stream = "orders".to_owned();
    /// config.subject_prefix = "orders.events".to_owned();
    /// let log = NatsEventLog::new(config).await?;
    /// log.setup().await?;
    /// assert_eq!(log.config().stream, "orders");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn new(config: NatsConfig) -> Result<Self, NatsError> {
        let (client, connections) = connection::connect(&config).await?;
        Self::build(client, config, Some(connections)).await
    }

    /// Uses an existing client (e.g. shared with a [`NatsSnapshotStore`](crate::NatsSnapshotStore));
    /// the connection fields of `config` are ignored.
    ///
    /// Live readers ([`events_by_type`](EventLog::events_by_type)) of a log
    /// made by [`new`](NatsEventLog::new) restart their consumer as soon as
    /// the client reconnects; with a client of your own they notice a
    /// restarted server only by missed heartbeats (after about 30 s).
    ///
    /// ```no_run
    /// use eventsourced_nats::{NatsConfig, NatsEventLog, NatsSnapshotStore};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
    /// let log = NatsEventLog::with_client(client.clone(), NatsConfig::default()).await?;
    /// let snapshots = NatsSnapshotStore::with_client(client, NatsConfig::default()).await?;
    /// assert_eq!(log.config().stream, "eventsourced");
    /// assert_eq!(snapshots.config().bucket, "eventsourced-snapshots");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn with_client(
        client: async_nats::Client,
        config: NatsConfig,
    ) -> Result<Self, NatsError> {
        Self::build(client, config, None).await
    }

    async fn build(
        client: async_nats::Client,
        config: NatsConfig,
        connections: Option<Connections>,
    ) -> Result<Self, NatsError> {
        config.validate()?;
        connection::check_server(&client, &config)?;
        let jetstream = connection::jetstream(client.clone(), &config);
        // No request: only checks the name.
        let stream = jetstream
            .get_stream_no_info(&config.stream)
            .await
            .map_err(|e| NatsError::Config {
                field: "stream",
                reason: e.to_string(),
            })?;
        Ok(NatsEventLog {
            inner: Arc::new(Inner {
                subjects: Subjects::new(&config.subject_prefix),
                config,
                client,
                jetstream,
                stream,
                connections,
                memo: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Creates the stream, or updates the settings this crate relies on if it
    /// exists. The stream stores `<subject-prefix>.>`, refuses appends when
    /// full instead of discarding events, and denies deleting or purging
    /// messages.
    ///
    /// An existing stream must already store the prefix: one of its subjects
    /// must cover `<subject-prefix>.>` (it may be wider, e.g. `orders.>` for
    /// the prefix `orders.events`). Otherwise the stream belongs to another
    /// log or application, and this is [`NatsError::StreamSubjects`]:
    /// replacing its subjects would make the other log's appends fail. Only
    /// the settings the log relies on are updated (retention, discard, limits,
    /// storage, replicas, acks, direct gets, denying deletes, purges and
    /// rollups); the stream's subjects, description, duplicate window,
    /// placement and the like stay as they are.
    ///
    /// ```no_run
    /// use eventsourced::{EventLog, SeqNo};
    /// use eventsourced_nats::{NatsConfig, NatsEventLog};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let log = NatsEventLog::new(NatsConfig::default()).await?;
    /// log.setup().await?;
    /// log.setup().await?; // idempotent
    /// let last = log.append("counter", "a", SeqNo::ZERO, &["1".into()]).await?;
    /// assert_eq!(last, SeqNo::new(1));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn setup(&self) -> Result<(), NatsError> {
        let config = &self.inner.config;
        let wanted = self.inner.subjects.all();
        let setup_error = |source: BoxError| NatsError::Setup {
            what: format!("stream {:?} (subjects {wanted:?})", config.stream),
            source,
        };
        let unavailable = || NatsError::JetStreamUnavailable {
            servers: config.servers_for_display(),
        };
        let existing = match self.inner.jetstream.get_stream(&config.stream).await {
            Ok(stream) => Some(stream.cached_info().config.clone()),
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(error)
                    if error.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    None
                }
                GetStreamErrorKind::JetStream(error)
                    if [
                        ErrorCode::JETSTREAM_NOT_ENABLED,
                        ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT,
                    ]
                    .contains(&error.error_code()) =>
                {
                    return Err(unavailable());
                }
                GetStreamErrorKind::Request if no_responders(&e) => return Err(unavailable()),
                _ => return Err(setup_error(Box::new(e))),
            },
        };
        let result = match existing {
            Some(existing) => {
                if !existing
                    .subjects
                    .iter()
                    .any(|s| subject::covers(s, &wanted))
                {
                    return Err(NatsError::StreamSubjects {
                        stream: config.stream.clone(),
                        subjects: existing.subjects,
                        prefix: config.subject_prefix.clone(),
                    });
                }
                self.inner
                    .jetstream
                    .update_stream(self.owned_settings(existing))
                    .await
                    .map(|_| ())
            }
            // Should another process create the stream in between with other
            // settings, the server refuses this create ("stream name already
            // in use with a different configuration"): a `Setup` error.
            None => self
                .inner
                .jetstream
                .create_stream(self.owned_settings(jetstream::stream::Config {
                    name: config.stream.clone(),
                    description: Some("eventsourced event log".to_owned()),
                    subjects: vec![wanted.clone()],
                    ..Default::default()
                }))
                .await
                .map(|_| ()),
        };
        result.map_err(|e| match e.kind() {
            CreateStreamErrorKind::JetStreamUnavailable => unavailable(),
            _ => setup_error(Box::new(e)),
        })
    }

    /// `stream_config` with the settings the log's guarantees rest on, the
    /// only ones `setup` changes on an existing stream: limits retention with
    /// discard new, `max-bytes`, no count or age limit (events are never
    /// dropped), `storage`, `replicas`, publish acks on, direct gets on, and
    /// no deletes, purges or rollups (events are immutable).
    fn owned_settings(
        &self,
        mut stream_config: jetstream::stream::Config,
    ) -> jetstream::stream::Config {
        let config = &self.inner.config;
        stream_config.retention = RetentionPolicy::Limits;
        stream_config.discard = DiscardPolicy::New;
        stream_config.max_bytes = config
            .max_bytes
            .and_then(|b| i64::try_from(b).ok())
            .unwrap_or(-1);
        stream_config.max_messages = -1;
        stream_config.max_messages_per_subject = -1;
        stream_config.max_age = std::time::Duration::ZERO;
        stream_config.storage = config.storage.to_nats();
        stream_config.num_replicas = config.replicas;
        stream_config.no_ack = false;
        stream_config.allow_direct = true;
        stream_config.deny_delete = true;
        stream_config.deny_purge = true;
        stream_config.allow_rollup = false;
        stream_config
    }

    /// The config this log was created with.
    ///
    /// ```no_run
    /// use eventsourced_nats::{NatsConfig, NatsEventLog};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut config = NatsConfig::default();
    /// config.subject_prefix = "shop.events".to_owned();
    /// let log = NatsEventLog::new(config).await?;
    /// assert_eq!(log.config().subject_prefix, "shop.events");
    /// # Ok(())
    /// # }
    /// ```
    pub fn config(&self) -> &NatsConfig {
        &self.inner.config
    }

    /// The underlying client, e.g. to share the connection with
    /// [`NatsSnapshotStore::with_client`](crate::NatsSnapshotStore::with_client).
    ///
    /// ```no_run
    /// use eventsourced_nats::{NatsConfig, NatsEventLog, NatsSnapshotStore};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let log = NatsEventLog::new(NatsConfig::default()).await?;
    /// // One connection for both:
    /// let snapshots = NatsSnapshotStore::with_client(log.client().clone(), log.config().clone()).await?;
    /// snapshots.setup().await?;
    /// assert_eq!(log.client().connection_state(), async_nats::connection::State::Connected);
    /// # Ok(())
    /// # }
    /// ```
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// The subject filter matching the messages of every entity of
    /// `type_name` in this log's stream (`<subject-prefix>.<type-token>.*`),
    /// for tools that read the stream directly, e.g. to count a projection's
    /// lag. A type name the log would refuse is an `InvalidId` error.
    ///
    /// ```no_run
    /// # async fn demo(log: eventsourced_nats::NatsEventLog) {
    /// let filter = log.type_subjects("counter").unwrap();
    /// assert!(filter.ends_with(".*"));
    /// # }
    /// ```
    pub fn type_subjects(&self, type_name: &str) -> Result<String, EventLogError> {
        subject::validate_type(type_name)?;
        Ok(self.inner.subjects.entity_type(type_name))
    }

    fn remember(&self, subject: &str, last: Last, force: bool) {
        let mut memo = self
            .inner
            .memo
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if memo.len() >= MEMO_CAPACITY && !memo.contains_key(subject) {
            memo.clear();
        }
        match memo.get_mut(subject) {
            Some(known) => {
                if force || last.seq_no >= known.seq_no {
                    *known = last;
                }
            }
            None => {
                memo.insert(subject.to_owned(), last);
            }
        }
    }

    fn forget(&self, subject: &str) {
        self.inner
            .memo
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(subject);
    }

    fn remembered(&self, subject: &str) -> Option<Last> {
        self.inner
            .memo
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(subject)
            .copied()
    }

    /// The last message of `subject` from the stream leader, if any.
    async fn fetch_last_message(
        &self,
        subject: &str,
        operation: &'static str,
    ) -> Result<Option<(Last, jetstream::message::StreamMessage)>, EventLogError> {
        match self
            .inner
            .stream
            .get_last_raw_message_by_subject(subject)
            .await
        {
            Ok(message) => {
                let seq_no = frame::last_seq_no(Some(&message.headers))
                    .map_err(|reason| self.corrupt(subject, message.sequence, reason))?;
                let last = Last {
                    seq_no,
                    stream_seq: message.sequence,
                };
                self.remember(subject, last, true);
                Ok(Some((last, message)))
            }
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => {
                self.forget(subject);
                Ok(None)
            }
            Err(e) => Err(EventLogError::backend(
                BACKEND,
                operation,
                format!(
                    "cannot read the last message of subject {subject} from stream {:?}: {e}{}",
                    self.inner.config.stream,
                    self.setup_hint(&e.to_string())
                ),
            )),
        }
    }

    async fn fetch_last(
        &self,
        subject: &str,
        operation: &'static str,
    ) -> Result<Option<Last>, EventLogError> {
        Ok(self
            .fetch_last_message(subject, operation)
            .await?
            .map(|(last, _)| last))
    }

    fn setup_hint(&self, error: &str) -> String {
        if error.contains("stream not found") || error.contains("no responders") {
            format!(
                " (create the stream with NatsEventLog::setup: stream {:?}, subjects {:?})",
                self.inner.config.stream,
                self.inner.subjects.all()
            )
        } else {
            String::new()
        }
    }

    fn corrupt(&self, subject: &str, stream_seq: u64, reason: String) -> EventLogError {
        EventLogError::Corrupt {
            backend: BACKEND,
            location: format!(
                "stream {:?}, sequence {stream_seq}, subject {subject}",
                self.inner.config.stream
            ),
            reason,
        }
    }

    /// Publishes one message and waits for its acknowledgement; returns the
    /// message's stream sequence.
    async fn publish(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<u64, async_nats::jetstream::context::PublishError> {
        let ack = self
            .inner
            .jetstream
            .publish_with_headers(subject.to_owned(), headers, payload)
            .await?
            .await?;
        Ok(ack.sequence)
    }

    async fn append_batch(
        &self,
        type_name: &str,
        id: &str,
        expected: SeqNo,
        events: &[Bytes],
    ) -> Result<SeqNo, EventLogError> {
        subject::validate(type_name, id)?;
        if events.len() > MAX_EVENTS_PER_APPEND {
            return Err(EventLogError::backend(
                BACKEND,
                "append",
                format!(
                    "an append of {} events exceeds the NATS backend's limit of {MAX_EVENTS_PER_APPEND} events per append; split the command",
                    events.len()
                ),
            ));
        }
        let subject = self.inner.subjects.entity(type_name, id);
        let conflict = |actual: SeqNo| EventLogError::Conflict {
            type_name: type_name.to_owned(),
            id: id.to_owned(),
            expected,
            actual,
        };
        let fits = expected.get().checked_add(len_u64(events.len())).is_some();
        if events.is_empty() || !fits {
            let actual = self
                .fetch_last(&subject, "append")
                .await?
                .map_or(SeqNo::ZERO, |l| l.seq_no);
            return match (actual == expected, fits) {
                (false, _) => Err(conflict(actual)),
                (true, true) => Ok(actual),
                (true, false) => Err(EventLogError::backend(
                    BACKEND,
                    "append",
                    format!(
                        "{expected} + {} events exceeds the largest seq_no",
                        events.len()
                    ),
                )),
            };
        }
        let mut known = if expected == SeqNo::ZERO {
            Some(Last {
                seq_no: SeqNo::ZERO,
                stream_seq: 0,
            })
        } else {
            self.remembered(&subject).filter(|l| l.seq_no == expected)
        };
        let new_last = expected.add(len_u64(events.len()));
        for _ in 0..STALE_RETRIES {
            let last = match known {
                Some(last) => last,
                None => match self.fetch_last(&subject, "append").await? {
                    Some(last) if last.seq_no == expected => last,
                    other => return Err(conflict(other.map_or(SeqNo::ZERO, |l| l.seq_no))),
                },
            };
            let (headers, payload) = frame::encode(expected.next(), events, last.stream_seq);
            let size = payload.len();
            match self.publish(&subject, headers, payload).await {
                Ok(stream_seq) => {
                    self.remember(
                        &subject,
                        Last {
                            seq_no: new_last,
                            stream_seq,
                        },
                        false,
                    );
                    return Ok(new_last);
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    // Another writer appended first, or the memo is stale.
                    let actual = self.fetch_last(&subject, "append").await?;
                    let actual_seq_no = actual.map_or(SeqNo::ZERO, |l| l.seq_no);
                    if actual_seq_no != expected {
                        return Err(conflict(actual_seq_no));
                    }
                    debug!(subject, "stale last stream sequence; retrying the append");
                    known = Some(actual.unwrap_or(Last {
                        seq_no: SeqNo::ZERO,
                        stream_seq: 0,
                    }));
                }
                Err(e) => return Err(self.publish_error(&subject, events.len(), size, e)),
            }
        }
        Err(EventLogError::backend(
            BACKEND,
            "append",
            format!(
                "JetStream kept reporting a wrong last sequence on subject {subject} although the entity's last seq_no is {expected}; was stream {:?} changed outside eventsourced?",
                self.inner.config.stream
            ),
        ))
    }

    fn publish_error(
        &self,
        subject: &str,
        count: usize,
        size: usize,
        e: async_nats::jetstream::context::PublishError,
    ) -> EventLogError {
        let message = match e.kind() {
            PublishErrorKind::StreamNotFound => format!(
                "no JetStream stream stores subject {subject}{}",
                self.setup_hint("stream not found")
            ),
            PublishErrorKind::TimedOut => format!(
                "no acknowledgement for subject {subject} within {:?} (server down, unreachable or overloaded); the events may or may not be stored: recover the entity before retrying",
                self.inner.config.request_timeout
            ),
            PublishErrorKind::MaxPayloadExceeded => format!(
                "the message of {count} events ({size} bytes of payload) exceeds the server's max_payload: {e}; raise max_payload in the server config or emit smaller events"
            ),
            _ => format!("publishing to subject {subject} failed: {e}"),
        };
        EventLogError::backend(BACKEND, "append", message)
    }

    /// An ordered consumer over `filter` starting at stream sequence `start`
    /// (0: from the beginning).
    async fn ordered(
        &self,
        filter: String,
        start: u64,
        name: Option<String>,
        operation: &'static str,
    ) -> Result<(jetstream::consumer::pull::Ordered, String), EventLogError> {
        let deliver_policy = if start == 0 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: start,
            }
        };
        let config = OrderedConfig {
            name,
            filter_subject: filter.clone(),
            deliver_policy,
            ..Default::default()
        };
        let timeout = self.inner.config.request_timeout;
        let fail = |what: String| {
            EventLogError::backend(
                BACKEND,
                operation,
                format!(
                    "cannot start reading {filter} from stream {:?}: {what}{}",
                    self.inner.config.stream,
                    self.setup_hint(&what)
                ),
            )
        };
        let consumer = tokio::time::timeout(timeout, self.inner.stream.create_consumer(config))
            .await
            .map_err(|_| fail(format!("no reply within {timeout:?}")))?
            .map_err(|e| fail(e.to_string()))?;
        let name = consumer.cached_info().name.clone();
        let messages = tokio::time::timeout(timeout, consumer.messages())
            .await
            .map_err(|_| fail(format!("no reply within {timeout:?}")))?
            .map_err(|e| fail(e.to_string()))?;
        Ok((messages, name))
    }

    /// The creation time of the log's stream, which tells it apart from a
    /// stream of the same name created after it was deleted; and its last
    /// stream sequence.
    async fn stream_identity(
        &self,
        operation: &'static str,
    ) -> Result<(DateTime, u64), EventLogError> {
        let timeout = self.inner.config.request_timeout;
        let info = tokio::time::timeout(timeout, self.inner.stream.get_info())
            .await
            .map_err(|_| format!("no reply within {timeout:?}"))
            .and_then(|info| info.map_err(|e| e.to_string()))
            .map_err(|what| {
                EventLogError::backend(
                    BACKEND,
                    operation,
                    format!(
                        "cannot read the info of stream {:?}: {what}{}",
                        self.inner.config.stream,
                        self.setup_hint(&what)
                    ),
                )
            })?;
        Ok((info.created, info.state.last_sequence))
    }

    /// Whether the stream a live reader started on, created at `created`,
    /// is still there: `Ok` if so, `Err(Some(_))` if it was deleted (and
    /// perhaps created again), `Err(None)` if the server did not say.
    async fn check_stream(&self, created: DateTime) -> Result<(), Option<EventLogError>> {
        let stream = &self.inner.config.stream;
        let gone = |what: String| {
            Some(EventLogError::backend(
                BACKEND,
                "read events by type",
                format!(
                    "stream {stream:?} {what} while it was read: positions start again in a new stream, so nothing can resume from a position of the old one; rebuild what was read from it (e.g. projections) from the start"
                ),
            ))
        };
        let timeout = self.inner.config.request_timeout;
        match tokio::time::timeout(timeout, self.inner.stream.get_info()).await {
            Ok(Ok(info)) if info.created == created => Ok(()),
            Ok(Ok(info)) => Err(gone(format!(
                "was deleted and created again (now created at {}, before at {created})",
                info.created
            ))),
            Ok(Err(e))
                if std::error::Error::source(&e)
                    .and_then(|source| source.downcast_ref::<jetstream::Error>())
                    .is_some_and(|error| error.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
            {
                Err(gone(format!(
                    "was deleted{}",
                    self.setup_hint("stream not found")
                )))
            }
            Ok(Err(_)) | Err(_) => Err(None),
        }
    }

    /// The stream sequence and first seq_no of the entity's last message
    /// whose first seq_no is at most `from`, searched below stream sequence
    /// `end` with "next message by subject" direct gets. `None` (read from the
    /// start) if there is none or the search fails: it only saves work.
    async fn find_start(&self, subject: &str, from: SeqNo, end: u64) -> Option<(u64, SeqNo)> {
        let (mut lo, mut hi) = (1u64, end.checked_sub(1)?);
        let mut found = None;
        while lo <= hi {
            let mid = lo + (hi - lo) / 2;
            let message = match self
                .inner
                .stream
                .direct_get_next_for_subject(subject, Some(mid))
                .await
            {
                Ok(message) => message,
                Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => {
                    hi = mid - 1;
                    continue;
                }
                Err(e) => {
                    debug!(subject, error = %e, "search failed; reading from the start");
                    return None;
                }
            };
            if message.sequence > hi {
                hi = mid - 1;
                continue;
            }
            let (first, _) = frame::header_numbers(Some(&message.headers)).ok()?;
            if first <= from {
                found = Some((message.sequence, first));
                lo = message.sequence + 1;
            } else {
                hi = mid - 1;
            }
        }
        found
    }

    /// The events `>= from` of the entity whose last message is `last`
    /// (decoded: `last_batch`), read by following each message's predecessor
    /// link. `None` if a link is missing or unreadable: read with a consumer.
    async fn walk_back(
        &self,
        subject: &str,
        last: &jetstream::message::StreamMessage,
        last_batch: frame::Batch,
        from: SeqNo,
    ) -> Result<Option<Vec<(SeqNo, Bytes)>>, EventLogError> {
        let mut batches = vec![last_batch];
        let mut previous = previous_seq(&last.headers);
        loop {
            let first = batches.last().map_or(SeqNo::ZERO, |b| b.first);
            if first <= from {
                break;
            }
            let Some(seq) = previous.filter(|seq| *seq > 0) else {
                return Ok(None);
            };
            let message = match self.inner.stream.direct_get(seq).await {
                Ok(message) if message.subject.as_str() == subject => message,
                Ok(_) => return Ok(None),
                Err(e) => {
                    debug!(subject, seq, error = %e, "walking back failed; using a consumer");
                    return Ok(None);
                }
            };
            let batch = frame::decode(Some(&message.headers), &message.payload)
                .map_err(|reason| self.corrupt(subject, message.sequence, reason))?;
            if batch.last().next() != first {
                return Err(self.corrupt(
                    subject,
                    message.sequence,
                    format!(
                        "the message ends at seq_no {} but the next one starts at {first}",
                        batch.last()
                    ),
                ));
            }
            previous = previous_seq(&message.headers);
            batches.push(batch);
        }
        Ok(Some(
            batches
                .into_iter()
                .rev()
                .flat_map(|batch| select(batch, from))
                .collect(),
        ))
    }

    /// Deletes a finished read's consumer in the background (best effort: the
    /// server removes it anyway 30 s after the read stopped).
    fn delete_consumer(&self, name: String) {
        let stream = self.inner.stream.clone();
        tokio::spawn(async move {
            if let Err(e) = stream.delete_consumer(&name).await {
                debug!(consumer = name, error = %e, "cannot delete a finished read consumer");
            }
        });
    }

    /// The events of one message at or after `from`.
    fn decode_message(
        &self,
        message: &jetstream::Message,
        operation: &'static str,
    ) -> Result<(u64, frame::Batch), EventLogError> {
        let stream_seq = message
            .info()
            .map_err(|e| {
                EventLogError::backend(
                    BACKEND,
                    operation,
                    format!("a delivered message has no JetStream metadata: {e}"),
                )
            })?
            .stream_sequence;
        let batch = frame::decode(message.headers.as_ref(), &message.payload)
            .map_err(|reason| self.corrupt(message.subject.as_str(), stream_seq, reason))?;
        Ok((stream_seq, batch))
    }
}

/// A stream of batches, flattened.
fn flatten<T: Send + 'static>(
    batches: impl Stream<Item = Result<Vec<T>, EventLogError>> + Send + 'static,
) -> impl Stream<Item = Result<T, EventLogError>> + Send + 'static {
    batches
        .map_ok(|batch| stream::iter(batch.into_iter().map(Ok)))
        .try_flatten()
}

enum ById {
    Start {
        log: NatsEventLog,
        type_name: String,
        id: String,
        from: SeqNo,
    },
    Reading {
        log: NatsEventLog,
        consumer: String,
        subject: String,
        messages: Box<jetstream::consumer::pull::Ordered>,
        from: SeqNo,
        next: SeqNo,
        end_stream_seq: u64,
    },
    Done,
}

enum ByType {
    Start {
        log: NatsEventLog,
        type_name: String,
        from: Position,
    },
    Reading {
        log: NatsEventLog,
        filter: String,
        messages: Box<jetstream::consumer::pull::Ordered>,
        /// The consumer delivering `messages`: async-nats recreates it under
        /// a new name when it sees the consumer lost, also on a new stream.
        consumer: String,
        /// When the stream read was created.
        created: DateTime,
        from: Position,
        connections: Option<Connections>,
    },
}

async fn by_id_step(state: ById) -> Result<Option<(Vec<(SeqNo, Bytes)>, ById)>, EventLogError> {
    match state {
        ById::Done => Ok(None),
        ById::Start {
            log,
            type_name,
            id,
            from,
        } => {
            subject::validate(&type_name, &id)?;
            let from = from.max(SeqNo::new(1));
            let subject = log.inner.subjects.entity(&type_name, &id);
            let Some((last, message)) = log.fetch_last_message(&subject, "read events").await?
            else {
                return Ok(None);
            };
            if last.seq_no < from {
                return Ok(None);
            }
            let batch = frame::decode(Some(&message.headers), &message.payload)
                .map_err(|reason| log.corrupt(&subject, message.sequence, reason))?;
            if batch.first <= from {
                // Everything asked for is in the last message: no consumer.
                return Ok(Some((select(batch, from), ById::Done)));
            }
            if last.seq_no.get() - from.get() < WALK_BACK_EVENTS
                && let Some(events) = log.walk_back(&subject, &message, batch, from).await?
            {
                return Ok(Some((events, ById::Done)));
            }
            let (start, next) = if from.get() > SEARCH_AFTER_EVENTS {
                log.find_start(&subject, from, last.stream_seq)
                    .await
                    .unwrap_or((0, SeqNo::new(1)))
            } else {
                (0, SeqNo::new(1))
            };
            // Named, so that it can be deleted as soon as the read is done.
            let inbox = log.inner.client.new_inbox();
            let consumer = format!("es-{}", inbox.rsplit('.').next().unwrap_or(&inbox));
            let (messages, _) = log
                .ordered(
                    subject.clone(),
                    start,
                    Some(consumer.clone()),
                    "read events",
                )
                .await?;
            Ok(Some((
                Vec::new(),
                ById::Reading {
                    log,
                    consumer,
                    subject,
                    messages: Box::new(messages),
                    from,
                    next,
                    end_stream_seq: last.stream_seq,
                },
            )))
        }
        ById::Reading {
            log,
            consumer,
            subject,
            mut messages,
            from,
            next,
            end_stream_seq,
        } => {
            let timeout = log.inner.config.request_timeout.saturating_mul(2);
            let message = match tokio::time::timeout(timeout, messages.next()).await {
                Err(_) => {
                    return Err(EventLogError::backend(
                        BACKEND,
                        "read events",
                        format!(
                            "no message of subject {subject} within {timeout:?} (server down or unreachable)"
                        ),
                    ));
                }
                Ok(None) => {
                    return Err(EventLogError::backend(
                        BACKEND,
                        "read events",
                        format!("the consumer of subject {subject} ended early"),
                    ));
                }
                Ok(Some(Err(e))) => {
                    return Err(EventLogError::backend(
                        BACKEND,
                        "read events",
                        format!("reading subject {subject} failed: {e}"),
                    ));
                }
                Ok(Some(Ok(message))) => message,
            };
            let (stream_seq, batch) = log.decode_message(&message, "read events")?;
            if batch.first != next {
                return Err(log.corrupt(
                    &subject,
                    stream_seq,
                    format!(
                        "the message starts at seq_no {} but {next} was expected (events missing from the stream)",
                        batch.first
                    ),
                ));
            }
            let next = batch.last().next();
            let done = stream_seq >= end_stream_seq;
            let events = select(batch, from);
            let state = if done {
                log.delete_consumer(consumer);
                ById::Done
            } else {
                ById::Reading {
                    log,
                    consumer,
                    subject,
                    messages,
                    from,
                    next,
                    end_stream_seq,
                }
            };
            Ok(Some((events, state)))
        }
    }
}

/// The stream sequence of the entity's previous message, as the append sent
/// it in `Nats-Expected-Last-Subject-Sequence`.
fn previous_seq(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE)
        .and_then(|v| v.as_str().parse().ok())
}

/// The events of `batch` with seq_no `>= from`.
fn select(batch: frame::Batch, from: SeqNo) -> Vec<(SeqNo, Bytes)> {
    let first = batch.first;
    batch
        .events
        .into_iter()
        .enumerate()
        .map(|(i, e)| (first.add(len_u64(i)), e))
        .filter(|(s, _)| *s >= from)
        .collect()
}

async fn by_type_step(
    state: ByType,
) -> Result<Option<(Vec<EventEnvelope>, ByType)>, EventLogError> {
    match state {
        ByType::Start {
            log,
            type_name,
            from,
        } => {
            subject::validate_type(&type_name)?;
            let start = from.get() >> INDEX_BITS;
            let filter = log.inner.subjects.entity_type(&type_name);
            let mut connections = log.inner.connections.clone();
            if let Some(connections) = &mut connections {
                connections.borrow_and_update();
            }
            let (created, last) = log.stream_identity("read events by type").await?;
            if start > last.saturating_add(1) {
                return Err(EventLogError::backend(
                    BACKEND,
                    "read events by type",
                    format!(
                        "position {from} is beyond the end of stream {:?} (last sequence {last}): it is a position of another stream, e.g. of one deleted and created again under this name; rebuild what was read from it (e.g. projections) from the start",
                        log.inner.config.stream
                    ),
                ));
            }
            let (messages, consumer) = log
                .ordered(filter.clone(), start, None, "read events by type")
                .await?;
            Ok(Some((
                Vec::new(),
                ByType::Reading {
                    log,
                    filter,
                    messages: Box::new(messages),
                    consumer,
                    created,
                    from,
                    connections,
                },
            )))
        }
        ByType::Reading {
            log,
            filter,
            mut messages,
            mut consumer,
            created,
            from,
            mut connections,
        } => {
            enum Woken {
                Message(Box<Option<Result<jetstream::Message, OrderedError>>>),
                Reconnected,
                Idle,
            }
            let woken = {
                let reconnected = async {
                    if let Some(connections) = &mut connections
                        && connections.changed().await.is_ok()
                    {
                        return;
                    }
                    // No signal (or never again): wait for messages only.
                    std::future::pending::<()>().await;
                };
                tokio::select! {
                    next = messages.next() => Woken::Message(Box::new(next)),
                    () = reconnected => Woken::Reconnected,
                    () = tokio::time::sleep(STREAM_CHECK_INTERVAL) => Woken::Idle,
                }
            };
            let next = match woken {
                Woken::Message(next) => *next,
                Woken::Reconnected => {
                    // A restarted server has lost the ephemeral consumer:
                    // start a new one after the last message handled.
                    debug!(filter, %from, "reconnected; restarting the live consumer");
                    let (messages, consumer) = log
                        .ordered(
                            filter.clone(),
                            from.get() >> INDEX_BITS,
                            None,
                            "read events by type",
                        )
                        .await?;
                    return Ok(Some((
                        Vec::new(),
                        ByType::Reading {
                            log,
                            filter,
                            messages: Box::new(messages),
                            consumer,
                            created,
                            from,
                            connections,
                        },
                    )));
                }
                Woken::Idle => {
                    // No message for a while: is the stream still there? The
                    // consumer would wait (and recreate itself) forever.
                    if let Err(Some(gone)) = log.check_stream(created).await {
                        return Err(gone);
                    }
                    return Ok(Some((
                        Vec::new(),
                        ByType::Reading {
                            log,
                            filter,
                            messages,
                            consumer,
                            created,
                            from,
                            connections,
                        },
                    )));
                }
            };
            let message = match next {
                None => {
                    return Err(EventLogError::backend(
                        BACKEND,
                        "read events by type",
                        "the live consumer ended; resume from the last position",
                    ));
                }
                Some(Err(e)) => {
                    return Err(EventLogError::backend(
                        BACKEND,
                        "read events by type",
                        format!("the live consumer failed: {e}; resume from the last position"),
                    ));
                }
                Some(Ok(message)) => message,
            };
            let delivered_by = message
                .info()
                .map(|info| info.consumer.to_owned())
                .unwrap_or_default();
            if delivered_by != consumer {
                // async-nats recreated the consumer after the last message
                // handled, by stream sequence: on a stream created again under
                // the same name, that skips the new stream's first messages.
                match log.check_stream(created).await {
                    Ok(()) => consumer = delivered_by,
                    Err(Some(gone)) => return Err(gone),
                    Err(None) => {
                        return Err(EventLogError::backend(
                            BACKEND,
                            "read events by type",
                            format!(
                                "the live consumer was replaced and stream {:?} did not answer whether it is still the one read; resume from the last position",
                                log.inner.config.stream
                            ),
                        ));
                    }
                }
            }
            let (stream_seq, batch) = log.decode_message(&message, "read events by type")?;
            let subject = message.subject.as_str();
            let id = log
                .inner
                .subjects
                .id_of(subject)
                .map_err(|reason| log.corrupt(subject, stream_seq, reason))?;
            let base = stream_seq
                .checked_mul(1 << INDEX_BITS)
                .filter(|_| stream_seq < 1 << (64 - INDEX_BITS))
                .ok_or_else(|| {
                    log.corrupt(
                        subject,
                        stream_seq,
                        "the stream sequence is too large to form a position".to_owned(),
                    )
                })?;
            let first = batch.first;
            let envelopes = batch
                .events
                .into_iter()
                .enumerate()
                .map(|(i, event)| EventEnvelope {
                    position: Position::new(base + len_u64(i)),
                    id: id.clone(),
                    seq_no: first.add(len_u64(i)),
                    event,
                })
                .filter(|e| e.position >= from)
                .collect();
            // Everything of this message is handled: resume after it.
            let from = from.max(Position::new(base.saturating_add(1 << INDEX_BITS)));
            Ok(Some((
                envelopes,
                ByType::Reading {
                    log,
                    filter,
                    messages,
                    consumer,
                    created,
                    from,
                    connections,
                },
            )))
        }
    }
}

impl EventLog for NatsEventLog {
    fn append(
        &self,
        type_name: &str,
        id: &str,
        expected_last: SeqNo,
        events: &[Bytes],
    ) -> impl Future<Output = Result<SeqNo, EventLogError>> + Send {
        self.append_batch(type_name, id, expected_last, events)
    }

    async fn last_seq_no(&self, type_name: &str, id: &str) -> Result<SeqNo, EventLogError> {
        subject::validate(type_name, id)?;
        let subject = self.inner.subjects.entity(type_name, id);
        Ok(self
            .fetch_last(&subject, "read the last seq_no")
            .await?
            .map_or(SeqNo::ZERO, |l| l.seq_no))
    }

    fn events_by_id(
        &self,
        type_name: &str,
        id: &str,
        from: SeqNo,
    ) -> impl Stream<Item = Result<(SeqNo, Bytes), EventLogError>> + Send + 'static + use<> {
        let start = ById::Start {
            log: self.clone(),
            type_name: type_name.to_owned(),
            id: id.to_owned(),
            from,
        };
        flatten(stream::try_unfold(start, by_id_step))
    }

    fn events_by_type(
        &self,
        type_name: &str,
        from: Position,
    ) -> impl Stream<Item = Result<EventEnvelope, EventLogError>> + Send + 'static + use<> {
        let start = ByType::Start {
            log: self.clone(),
            type_name: type_name.to_owned(),
            from,
        };
        flatten(stream::try_unfold(start, by_type_step))
    }
}

/// Whether a stream info request failed because nothing answers JetStream API
/// requests: a server without JetStream.
fn no_responders(error: &(dyn std::error::Error + 'static)) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<RequestError>())
        .is_some_and(|request| request.kind() == RequestErrorKind::NoResponders)
}
