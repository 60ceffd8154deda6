//! [`SqliteEventLog`]: the [`EventLog`] over one SQLite file.

use crate::{
    SqliteConfig, SqliteError, SqliteSnapshotStore,
    reader::Readers,
    schema::{self, Location, OpenedFile},
    writer::{self, Append, Request},
};
use bytes::Bytes;
use eventsourced::{
    EventEnvelope, EventLog, EventLogError, Position, SeqNo, event_log::validate_id,
};
use futures::{Stream, stream};
use rusqlite::{
    Connection, params,
    types::{Value, ValueRef},
};
use std::{
    collections::VecDeque,
    fmt,
    future::Future,
    path::Path,
    sync::{Arc, Mutex, OnceLock, Weak, mpsc},
    thread::JoinHandle,
};
use tokio::sync::{oneshot, watch};

/// How many events one read takes from the database.
const READ_CHUNK: usize = 4096;

/// An [`EventLog`] in one SQLite file (WAL mode, bundled SQLite): durable,
/// embedded, no server.
///
/// One writer thread owns the write connection and merges the appends of all
/// entities that are waiting into one transaction and one fsync (group
/// commit); each append is still atomic and checked against its expected
/// seq_no on its own. Reads use a small pool of read connections on tokio's
/// blocking threads and never block the writer.
///
/// A handle is cheap to clone; the file is closed when the last clone (and
/// the last stream and snapshot store made from it) is dropped. Opening the
/// same file again in the same process returns a handle to the same writer.
/// Reads and live streams need a tokio runtime with the time driver
/// (`#[tokio::main]` has it).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bytes::Bytes;
/// use eventsourced::{EventLog, SeqNo};
/// use eventsourced_sqlite::SqliteEventLog;
///
/// let dir = tempfile::tempdir()?;
/// let log = SqliteEventLog::open(dir.path().join("events.db"))?;
/// let last = log.append("counter", "a", SeqNo::ZERO, &[Bytes::from("e1")]).await?;
/// assert_eq!(last, SeqNo::new(1));
/// assert_eq!(log.last_seq_no("counter", "a").await?, SeqNo::new(1));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteEventLog {
    pub(crate) inner: Arc<Inner>,
}

/// What all handles to one open database share.
pub(crate) struct Inner {
    pub(crate) location: Location,
    pub(crate) config: SqliteConfig,
    requests: Option<mpsc::Sender<Request>>,
    pub(crate) readers: Arc<Readers>,
    /// The highest position committed by this process's writer.
    head: watch::Receiver<u64>,
    /// The file the writer opened; `None` for `:memory:`.
    opened: Option<OpenedFile>,
    /// Why the writer thread ended early, if it did.
    writer_failure: Arc<OnceLock<String>>,
    writer: Option<JoinHandle<()>>,
}

/// Files open in this process, so that each has one writer.
static OPEN: Mutex<Vec<(Location, Weak<Inner>)>> = Mutex::new(Vec::new());

impl SqliteEventLog {
    /// Opens (or creates) the database at `path` with the default
    /// [`SqliteConfig`] (full durability). `":memory:"` opens a private
    /// in-memory database.
    ///
    /// Opening is synchronous and quick (it checks the file header and the
    /// schema version); it may be called inside or outside a tokio runtime.
    /// The file's directory is created if missing. A file that is not a
    /// database of this crate, or of a newer schema version, is refused with a
    /// [`SqliteError`] and left as it is.
    ///
    /// ```
    /// use eventsourced_sqlite::{Durability, SqliteEventLog};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let log = SqliteEventLog::open(dir.path().join("data/events.db"))?;
    /// assert_eq!(log.config().durability, Durability::Full);
    /// assert!(dir.path().join("data/events.db").exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteEventLog, SqliteError> {
        Self::open_with(path, SqliteConfig::default())
    }

    /// Opens (or creates) the database at `path` with `config`; see
    /// [`open`](SqliteEventLog::open).
    ///
    /// ```
    /// use eventsourced_sqlite::{Durability, SqliteConfig, SqliteEventLog};
    ///
    /// let mut config = SqliteConfig::default();
    /// config.durability = Durability::Fast;
    /// let log = SqliteEventLog::open_with(":memory:", config)?;
    /// # Ok::<(), eventsourced_sqlite::SqliteError>(())
    /// ```
    pub fn open_with(
        path: impl AsRef<Path>,
        config: SqliteConfig,
    ) -> Result<SqliteEventLog, SqliteError> {
        config.validate()?;
        let location = Location::resolve(path.as_ref())?;
        if location == Location::Memory {
            return Ok(SqliteEventLog {
                inner: Arc::new(Inner::open(location, config)?),
            });
        }
        // Holding the lock while opening keeps concurrent opens of one file
        // from starting two writers.
        let mut open = OPEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        open.retain(|(_, inner)| inner.strong_count() > 0);
        // One file is one writer, whichever path (or hard link) names it. A
        // file removed or replaced since it was opened is another file now:
        // its writer refuses every commit, and this open gets a writer of its own.
        // A log whose write-ahead log or index was removed still writes this
        // file; a second writer here would share SQLite's in-process state of
        // the removed index. So this open gets that log, which refuses every
        // commit until all its handles are dropped.
        if let Some(inner) = open
            .iter()
            .filter_map(|(open_location, inner)| Some((open_location, inner.upgrade()?)))
            .find(|(open_location, inner)| {
                let same_file = **open_location == location
                    || inner.opened.as_ref().is_some_and(|f| f.is_at(&location));
                same_file
                    && inner
                        .opened
                        .as_ref()
                        .is_none_or(|f| f.check_database().is_ok())
            })
            .map(|(_, inner)| inner)
        {
            if inner.config == config {
                return Ok(SqliteEventLog { inner });
            }
            drop(open); // `inner` may be the last handle: drop it unlocked.
            drop(inner);
            return Err(SqliteError::OpenWithOtherConfig {
                path: path.as_ref().to_owned(),
            });
        }
        let inner = Arc::new(Inner::open(location.clone(), config)?);
        open.retain(|(open_location, _)| *open_location != location);
        open.push((location, Arc::downgrade(&inner)));
        Ok(SqliteEventLog { inner })
    }

    /// A snapshot store in the same database, sharing this log's writer (its
    /// saves join the same group commits).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use eventsourced::{SeqNo, SnapshotStore};
    /// use eventsourced_sqlite::SqliteEventLog;
    ///
    /// let log = SqliteEventLog::open(":memory:")?;
    /// let snapshots = log.snapshot_store();
    /// snapshots.save("counter", "a", SeqNo::new(3), "3".into()).await?;
    /// assert_eq!(snapshots.load("counter", "a").await?, Some((SeqNo::new(3), "3".into())));
    /// # Ok(()) }
    /// ```
    pub fn snapshot_store(&self) -> SqliteSnapshotStore {
        SqliteSnapshotStore {
            inner: Arc::clone(&self.inner),
        }
    }

    /// The database file, or `None` for `:memory:`.
    ///
    /// ```
    /// use eventsourced_sqlite::SqliteEventLog;
    ///
    /// assert_eq!(SqliteEventLog::open(":memory:")?.path(), None);
    /// let dir = tempfile::tempdir()?;
    /// let log = SqliteEventLog::open(dir.path().join("events.db"))?;
    /// assert!(log.path().is_some_and(|path| path.ends_with("events.db")));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn path(&self) -> Option<&Path> {
        match &self.inner.location {
            Location::File(path) => Some(path),
            Location::Memory => None,
        }
    }

    /// The configuration the database was opened with.
    ///
    /// ```
    /// use eventsourced_sqlite::{Durability, SqliteConfig, SqliteEventLog};
    ///
    /// let mut config = SqliteConfig::default();
    /// config.durability = Durability::Fast;
    /// let log = SqliteEventLog::open_with(":memory:", config.clone())?;
    /// assert_eq!(log.config(), &config);
    /// # Ok::<(), eventsourced_sqlite::SqliteError>(())
    /// ```
    pub fn config(&self) -> &SqliteConfig {
        &self.inner.config
    }

    /// The number of events in the log (all entity types).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use bytes::Bytes;
    /// use eventsourced::{EventLog, SeqNo};
    /// use eventsourced_sqlite::SqliteEventLog;
    ///
    /// let log = SqliteEventLog::open(":memory:")?;
    /// assert_eq!(log.event_count().await?, 0);
    /// log.append("counter", "a", SeqNo::ZERO, &[Bytes::from("e1"), Bytes::from("e2")]).await?;
    /// log.append("timer", "b", SeqNo::ZERO, &[Bytes::from("e1")]).await?;
    /// assert_eq!(log.event_count().await?, 3);
    /// # Ok(()) }
    /// ```
    pub async fn event_count(&self) -> Result<u64, EventLogError> {
        self.inner
            .readers
            .read(|conn, location| {
                let count: i64 = conn
                    .prepare_cached("SELECT count(*) FROM events")
                    .and_then(|mut s| s.query_row([], |row| row.get(0)))
                    .map_err(|e| {
                        writer::read_error(location, || "events".to_owned(), "count events", e)
                    })?;
                Ok(u64::try_from(count).unwrap_or(0))
            })
            .await
    }
}

impl fmt::Debug for SqliteEventLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteEventLog")
            .field("location", &self.inner.location.describe())
            .field("durability", &self.inner.config.durability)
            .field("last_position", &*self.inner.head.borrow())
            .finish()
    }
}

impl Inner {
    fn open(location: Location, config: SqliteConfig) -> Result<Inner, SqliteError> {
        let conn = schema::open_writer(&location, &config)?;
        let head = last_position(&conn).map_err(|source| {
            schema::classify(
                "read the last position of",
                Path::new(&location.describe()),
                source,
            )
        })?;
        // After a read in WAL mode: the connection has its write-ahead log
        // and index open, and keeps them as long as it lives.
        let opened = OpenedFile::of(&location)?;
        let conn = Arc::new(Mutex::new(conn));
        let (requests, receiver) = mpsc::channel();
        let (head_sender, head) = watch::channel(head);
        let writer_failure = Arc::new(OnceLock::new());
        let writer = {
            let (conn, writer_location, writer_opened, failure) = (
                Arc::clone(&conn),
                location.clone(),
                opened.clone(),
                Arc::clone(&writer_failure),
            );
            let max_batch = config.max_batch;
            std::thread::Builder::new()
                .name("eventsourced-sqlite-writer".to_owned())
                .spawn(move || {
                    let run = std::panic::AssertUnwindSafe(|| {
                        writer::run(
                            conn,
                            receiver,
                            head_sender,
                            max_batch,
                            writer_location,
                            writer_opened,
                        )
                    });
                    if let Err(panic) = std::panic::catch_unwind(run) {
                        let message = panic
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "unknown panic".to_owned());
                        let _ = failure.set(message);
                    }
                })
                .map_err(|source| SqliteError::Io {
                    operation: "start the writer thread for",
                    path: location.describe().into(),
                    source,
                })?
        };
        let shared = (location == Location::Memory).then_some(conn);
        let readers = Arc::new(Readers::new(
            location.clone(),
            config.clone(),
            shared,
            opened.clone(),
        ));
        Ok(Inner {
            location,
            config,
            requests: Some(requests),
            readers,
            head,
            opened,
            writer_failure,
            writer: Some(writer),
        })
    }

    /// Hands `request` to the writer; `Err` if the writer has stopped.
    pub(crate) fn send(&self, request: Request) -> Result<(), String> {
        match &self.requests {
            Some(requests) => requests.send(request).map_err(|_| self.writer_stopped()),
            None => Err(self.writer_stopped()),
        }
    }

    /// Why requests cannot be written.
    pub(crate) fn writer_stopped(&self) -> String {
        let cause = self.writer_failure.get().map_or("it ended", String::as_str);
        format!(
            "the writer thread of {} stopped ({cause}); reopen the database",
            self.location.describe()
        )
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.readers.close_idle();
        // Closing the channel ends the writer after the requests already sent.
        self.requests = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn last_position(conn: &Connection) -> rusqlite::Result<u64> {
    let last: i64 = conn.query_row(writer::LAST_POSITION, [], |row| row.get(0))?;
    Ok(u64::try_from(last).unwrap_or(0))
}

impl EventLog for SqliteEventLog {
    async fn append(
        &self,
        type_name: &str,
        id: &str,
        expected_last: SeqNo,
        events: &[Bytes],
    ) -> Result<SeqNo, EventLogError> {
        validate_id(type_name, id)?;
        let (reply, replied) = oneshot::channel();
        let stopped = |cause: String| EventLogError::backend("sqlite", "append", cause);
        self.inner
            .send(Request::Append(Append {
                type_name: type_name.to_owned(),
                id: id.to_owned(),
                expected: expected_last,
                events: events.to_vec(),
                reply,
            }))
            .map_err(stopped)?;
        replied
            .await
            .map_err(|_| stopped(self.inner.writer_stopped()))?
    }

    async fn last_seq_no(&self, type_name: &str, id: &str) -> Result<SeqNo, EventLogError> {
        let (type_name, id) = (type_name.to_owned(), id.to_owned());
        self.inner
            .readers
            .read(move |conn, location| {
                let entity = || format!("entity {type_name}/{id}");
                let corrupt = |reason: String| EventLogError::Corrupt {
                    backend: "sqlite",
                    location: format!("{}, {}", location.describe(), entity()),
                    reason,
                };
                let stored = conn
                    .prepare_cached(writer::LAST_SEQ_NO)
                    .and_then(|mut s| {
                        s.query_row(params![type_name, id], |row| row.get::<_, Value>(0))
                    })
                    .map_err(|e| writer::read_error(location, entity, "read the last seq_no", e))?;
                match stored {
                    Value::Null => Ok(SeqNo::ZERO),
                    Value::Integer(n) => {
                        SeqNo::from_i64(n).ok_or_else(|| corrupt(format!("negative seq_no {n}")))
                    }
                    other => Err(corrupt(format!(
                        "the last seq_no is {:?}, not an integer",
                        other.data_type()
                    ))),
                }
            })
            .await
    }

    fn events_by_id(
        &self,
        type_name: &str,
        id: &str,
        from: SeqNo,
    ) -> impl Stream<Item = Result<(SeqNo, Bytes), EventLogError>> + Send + 'static + use<> {
        type Chunk = Result<VecDeque<(SeqNo, Bytes)>, EventLogError>;
        struct Cursor {
            readers: Arc<Readers>,
            type_name: Arc<str>,
            id: Arc<str>,
            next: SeqNo,
            buffer: VecDeque<(SeqNo, Bytes)>,
            /// The next chunk, read while the caller handles this one.
            prefetch: Option<tokio::task::JoinHandle<Chunk>>,
            done: bool,
        }
        impl Cursor {
            fn read(&self) -> impl Future<Output = Chunk> + Send + 'static {
                let (readers, type_name, id, from) = (
                    Arc::clone(&self.readers),
                    Arc::clone(&self.type_name),
                    Arc::clone(&self.id),
                    self.next,
                );
                async move {
                    readers
                        .read(move |conn, location| {
                            read_by_id(conn, location, &type_name, &id, from)
                        })
                        .await
                }
            }
        }
        let cursor = Cursor {
            readers: Arc::clone(&self.inner.readers),
            type_name: type_name.into(),
            id: id.into(),
            next: from,
            buffer: VecDeque::new(),
            prefetch: None,
            // A seq_no beyond i64 cannot be stored, so nothing follows it.
            done: from.to_i64().is_none(),
        };
        stream::unfold(cursor, |mut c| async move {
            loop {
                if let Some(item) = c.buffer.pop_front() {
                    return Some((Ok(item), c));
                }
                if c.done {
                    return None;
                }
                let chunk = match c.prefetch.take() {
                    Some(prefetched) => prefetched.await.unwrap_or_else(|e| {
                        Err(EventLogError::backend("sqlite", "read events", e))
                    }),
                    None => c.read().await,
                };
                match chunk {
                    Ok(chunk) => {
                        c.done = chunk.len() < READ_CHUNK;
                        if let Some((last, _)) = chunk.back() {
                            c.next = last.next();
                        }
                        if !c.done {
                            c.prefetch = Some(tokio::spawn(c.read()));
                        }
                        c.buffer = chunk;
                    }
                    Err(error) => {
                        c.done = true;
                        return Some((Err(error), c));
                    }
                }
            }
        })
    }

    fn events_by_type(
        &self,
        type_name: &str,
        from: Position,
    ) -> impl Stream<Item = Result<EventEnvelope, EventLogError>> + Send + 'static + use<> {
        struct Follower {
            inner: Arc<Inner>,
            type_name: Arc<str>,
            next: Position,
            head: watch::Receiver<u64>,
            buffer: VecDeque<EventEnvelope>,
            failed: bool,
        }
        let follower = Follower {
            inner: Arc::clone(&self.inner),
            type_name: type_name.into(),
            next: from,
            head: self.inner.head.clone(),
            buffer: VecDeque::new(),
            failed: false,
        };
        stream::unfold(follower, |mut f| async move {
            loop {
                if let Some(envelope) = f.buffer.pop_front() {
                    f.next = envelope.position.next();
                    return Some((Ok(envelope), f));
                }
                if f.failed {
                    return None;
                }
                // Mark the head as seen before reading, so that a commit after
                // the read wakes `changed` below.
                f.head.borrow_and_update();
                let (type_name, from) = (Arc::clone(&f.type_name), f.next);
                let chunk = f
                    .inner
                    .readers
                    .read(move |conn, location| read_by_type(conn, location, &type_name, from))
                    .await;
                match chunk {
                    Ok(chunk) => f.buffer = chunk,
                    Err(error) => {
                        f.failed = true;
                        return Some((Err(error), f));
                    }
                }
                if f.buffer.is_empty() {
                    // Woken by this process's commits; the timeout catches
                    // commits of other processes on the same file.
                    let poll = f.inner.config.follow_poll_interval;
                    if let Ok(Err(_)) = tokio::time::timeout(poll, f.head.changed()).await {
                        f.failed = true;
                        let cause = f.inner.writer_stopped();
                        return Some((Err(EventLogError::backend("sqlite", "follow", cause)), f));
                    }
                }
            }
        })
    }
}

/// Reads up to [`READ_CHUNK`] events of one entity from seq_no `from`. The
/// event bytes of the whole chunk share one allocation.
fn read_by_id(
    conn: &Connection,
    location: &Location,
    type_name: &str,
    id: &str,
    from: SeqNo,
) -> Result<VecDeque<(SeqNo, Bytes)>, EventLogError> {
    const SQL: &str = "SELECT seq_no, event FROM events \
         WHERE type_name = ?1 AND entity_id = ?2 AND seq_no >= ?3 \
         ORDER BY seq_no LIMIT ?4";
    let entity = |seq_no: Option<i64>| match seq_no {
        Some(seq_no) => format!("entity {type_name}/{id}, seq_no {seq_no}"),
        None => format!("entity {type_name}/{id}"),
    };
    let corrupt = |seq_no: Option<i64>, reason: String| EventLogError::Corrupt {
        backend: "sqlite",
        location: format!("{}, {}", location.describe(), entity(seq_no)),
        reason,
    };
    let failed = |e| writer::read_error(location, || entity(None), "read events", e);
    let from = from.to_i64().unwrap_or(i64::MAX);
    let limit = i64::try_from(READ_CHUNK).unwrap_or(i64::MAX);
    let mut statement = conn.prepare_cached(SQL).map_err(failed)?;
    let mut rows = statement
        .query(params![type_name, id, from, limit])
        .map_err(failed)?;
    let mut seq_nos = Vec::new();
    let mut ends = Vec::new();
    let mut bytes = Vec::new();
    while let Some(row) = rows.next().map_err(failed)? {
        let seq_no = match row.get_ref(0).map_err(failed)? {
            ValueRef::Integer(n) => n,
            other => {
                return Err(corrupt(
                    None,
                    format!(
                        "a seq_no after {:?} is {:?}",
                        seq_nos.last(),
                        other.data_type()
                    ),
                ));
            }
        };
        let seq = SeqNo::from_i64(seq_no)
            .ok_or_else(|| corrupt(Some(seq_no), "the seq_no is negative".to_owned()))?;
        match row.get_ref(1).map_err(failed)? {
            ValueRef::Blob(blob) => bytes.extend_from_slice(blob),
            other => {
                return Err(corrupt(
                    Some(seq_no),
                    format!("the event is {:?}, not a blob", other.data_type()),
                ));
            }
        }
        seq_nos.push(seq);
        ends.push(bytes.len());
    }
    let bytes = Bytes::from(bytes);
    let mut start = 0;
    Ok(seq_nos
        .into_iter()
        .zip(ends)
        .map(|(seq_no, end)| {
            let event = bytes.slice(start..end);
            start = end;
            (seq_no, event)
        })
        .collect())
}

/// Reads up to [`READ_CHUNK`] events of one entity type from position `from`.
fn read_by_type(
    conn: &Connection,
    location: &Location,
    type_name: &str,
    from: Position,
) -> Result<VecDeque<EventEnvelope>, EventLogError> {
    const SQL: &str = "SELECT position, entity_id, seq_no, event FROM events \
         WHERE type_name = ?1 AND position >= ?2 ORDER BY position LIMIT ?3";
    let at = |position: i64| format!("entity type {type_name}, position {position}");
    let corrupt = |position: i64, reason: String| EventLogError::Corrupt {
        backend: "sqlite",
        location: format!("{}, {}", location.describe(), at(position)),
        reason,
    };
    let failed = |e| {
        writer::read_error(
            location,
            || format!("entity type {type_name}"),
            "read events",
            e,
        )
    };
    let Some(from) = from.to_i64() else {
        return Ok(VecDeque::new());
    };
    let limit = i64::try_from(READ_CHUNK).unwrap_or(i64::MAX);
    let mut statement = conn.prepare_cached(SQL).map_err(failed)?;
    let mut rows = statement
        .query(params![type_name, from, limit])
        .map_err(failed)?;
    let mut envelopes = VecDeque::new();
    while let Some(row) = rows.next().map_err(failed)? {
        let position = match row.get_ref(0).map_err(failed)? {
            ValueRef::Integer(n) => n,
            other => {
                return Err(EventLogError::Corrupt {
                    backend: "sqlite",
                    location: format!(
                        "{}, entity type {type_name}, after position {:?}",
                        location.describe(),
                        envelopes.back().map(|e: &EventEnvelope| e.position.get())
                    ),
                    reason: format!("a position is {:?}, not an integer", other.data_type()),
                });
            }
        };
        let id = match row.get_ref(1).map_err(failed)? {
            ValueRef::Text(text) => std::str::from_utf8(text)
                .map_err(|e| corrupt(position, format!("the entity id is not UTF-8: {e}")))?
                .to_owned(),
            other => {
                return Err(corrupt(
                    position,
                    format!("the entity id is {:?}, not text", other.data_type()),
                ));
            }
        };
        let seq_no = match row.get_ref(2).map_err(failed)? {
            ValueRef::Integer(n) => SeqNo::from_i64(n),
            _ => None,
        }
        .ok_or_else(|| corrupt(position, "the seq_no is not a positive integer".to_owned()))?;
        let event = match row.get_ref(3).map_err(failed)? {
            ValueRef::Blob(blob) => Bytes::copy_from_slice(blob),
            other => {
                return Err(corrupt(
                    position,
                    format!("the event is {:?}, not a blob", other.data_type()),
                ));
            }
        };
        envelopes.push_back(EventEnvelope {
            position: Position::from_i64(position)
                .ok_or_else(|| corrupt(position, "the position is negative".to_owned()))?,
            id,
            seq_no,
            event,
        });
    }
    Ok(envelopes)
}
