//! The single writer: one thread that owns the write connection and merges
//! all queued requests into one transaction (group commit).
//!
//! Each request runs inside its own SAVEPOINT, so a request that fails rolls
//! back alone; a conflict is detected before anything is written. Replies are
//! sent only after COMMIT returned, i.e. after the transaction is durable as
//! the configured [`Durability`](crate::Durability) defines it.

use crate::schema::{Location, OpenedFile, is_corruption};
use bytes::Bytes;
use eventsourced::{EventLogError, SeqNo, SnapshotStoreError};
use rusqlite::{Connection, OptionalExtension, params};
use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

/// The longest the writer waits for more requests before it commits.
const MAX_LINGER: Duration = Duration::from_millis(2);
/// How long the writer sleeps at a time while it waits for more requests.
const LINGER_STEP: Duration = Duration::from_micros(50);
/// A pause after which the writer does not wait for more requests.
const IDLE: Duration = Duration::from_millis(20);
/// How long a passed check of the files vouches for them before the next
/// batch (see [`OpenedFile`]). Batches that follow one another closely are
/// checked once, after each commit; a batch after a pause is checked before
/// it is written too, so that one sent after the files went away is refused
/// without writing anything.
const RECHECK_AFTER: Duration = Duration::from_millis(1);
/// The most entities whose last seq_no the writer remembers.
const SEQ_NO_CACHE: usize = 100_000;

/// The last seq_no of recently written entities, so that the conflict check
/// needs no read. Valid only while no other connection writes the file:
/// cleared when `PRAGMA data_version` shows another writer, and when a
/// transaction fails.
#[derive(Default)]
struct SeqNoCache {
    /// type name → id → last seq_no.
    entries: HashMap<String, HashMap<String, SeqNo>>,
    len: usize,
    data_version: Option<i64>,
}

impl SeqNoCache {
    fn get(&self, type_name: &str, id: &str) -> Option<SeqNo> {
        self.entries.get(type_name)?.get(id).copied()
    }

    fn set(&mut self, type_name: &str, id: &str, seq_no: SeqNo) {
        if let Some(slot) = self
            .entries
            .get_mut(type_name)
            .and_then(|ids| ids.get_mut(id))
        {
            *slot = seq_no;
            return;
        }
        if self.len >= SEQ_NO_CACHE {
            self.entries.clear();
            self.len = 0;
        }
        self.entries
            .entry(type_name.to_owned())
            .or_default()
            .insert(id.to_owned(), seq_no);
        self.len += 1;
    }

    fn forget(&mut self, type_name: &str, id: &str) {
        if let Some(ids) = self.entries.get_mut(type_name)
            && ids.remove(id).is_some()
        {
            self.len -= 1;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.len = 0;
        self.data_version = None;
    }

    /// Clears the cache if another connection committed since the last
    /// check; call inside the write transaction.
    fn check(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let version: i64 = conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |row| row.get(0))?;
        if self.data_version != Some(version) {
            self.entries.clear();
            self.len = 0;
            self.data_version = Some(version);
        }
        Ok(())
    }
}
use tokio::sync::{oneshot, watch};

/// What the writer does for a caller.
pub(crate) enum Request {
    Append(Append),
    SaveSnapshot(SaveSnapshot),
}

impl Request {
    /// How many rows the request writes.
    fn rows(&self) -> usize {
        match self {
            Request::Append(append) => append.events.len(),
            Request::SaveSnapshot(_) => 1,
        }
    }
}

pub(crate) struct Append {
    pub(crate) type_name: String,
    pub(crate) id: String,
    pub(crate) expected: SeqNo,
    pub(crate) events: Vec<Bytes>,
    pub(crate) reply: oneshot::Sender<Result<SeqNo, EventLogError>>,
}

pub(crate) struct SaveSnapshot {
    pub(crate) type_name: String,
    pub(crate) id: String,
    pub(crate) seq_no: SeqNo,
    pub(crate) state: Bytes,
    pub(crate) reply: oneshot::Sender<Result<(), SnapshotStoreError>>,
}

/// The result of one request inside the transaction, sent after COMMIT.
enum Outcome {
    Appended(SeqNo),
    Saved,
    /// Decided without writing (a conflict, an invalid value): valid whether or
    /// not the transaction commits.
    Refused(EventLogError),
    /// This request failed: rolled back alone, or with its whole batch.
    Failed(Failure),
}

/// Why a request failed, kept cheap to clone for a whole failed batch.
#[derive(Clone)]
struct Failure {
    reason: String,
    corrupt: bool,
}

impl Failure {
    fn new(error: &rusqlite::Error) -> Self {
        Failure {
            reason: error.to_string(),
            corrupt: is_corruption(error),
        }
    }
}

pub(crate) const LAST_SEQ_NO: &str =
    "SELECT max(seq_no) FROM events WHERE type_name = ?1 AND entity_id = ?2";
const INSERT_EVENT: &str = "INSERT INTO events (type_name, entity_id, seq_no, position, event) \
     VALUES (?1, ?2, ?3, ?4, ?5)";
pub(crate) const LAST_POSITION: &str = "SELECT last_position FROM log_head WHERE id = 0";
const SET_LAST_POSITION: &str = "UPDATE log_head SET last_position = ?1 WHERE id = 0";
/// Keeps the newer snapshot; a damaged row (a seq_no that is not a
/// non-negative integer, or a state that is not a blob, which `load` reports
/// as `Corrupt`) is replaced: SQLite orders text and blobs above every
/// number, so a plain comparison would keep it forever.
const SAVE_SNAPSHOT: &str = "INSERT INTO snapshots (type_name, entity_id, seq_no, state) \
     VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (type_name, entity_id) DO UPDATE \
     SET seq_no = excluded.seq_no, state = excluded.state \
     WHERE typeof(snapshots.seq_no) <> 'integer' OR snapshots.seq_no < 0 \
        OR typeof(snapshots.state) <> 'blob' OR excluded.seq_no >= snapshots.seq_no";

/// Runs the writer until every sender is gone.
pub(crate) fn run(
    conn: Arc<Mutex<Connection>>,
    requests: mpsc::Receiver<Request>,
    head: watch::Sender<u64>,
    max_batch: usize,
    location: Location,
    opened: Option<OpenedFile>,
) {
    let mut batch = Vec::with_capacity(max_batch.min(4096));
    let mut next = Vec::with_capacity(max_batch.min(4096));
    let mut outcomes = Vec::with_capacity(max_batch.min(4096));
    // Callers that were just answered usually send again at once. So the
    // writer estimates how many callers are active (those it answered last
    // time plus those that queued meanwhile) and lingers, at most as long as
    // its last commit took, until that many requests are queued, instead of
    // committing the first one alone. This also merges two groups of callers
    // that would otherwise take turns, each waiting for the other's commit.
    let mut active = 0;
    let mut last_commit = Duration::ZERO;
    let mut seq_nos = SeqNoCache::default();
    // When the files last passed the check.
    let mut checked: Option<Instant> = None;
    loop {
        if batch.is_empty() {
            let waiting = Instant::now();
            let Ok(first) = requests.recv() else { break };
            if waiting.elapsed() > IDLE {
                active = 0; // After a pause, nobody is about to send again.
            }
            batch.push(first);
        }
        let target = active.clamp(1, max_batch);
        let deadline = Instant::now() + last_commit.min(MAX_LINGER);
        loop {
            drain(&requests, &mut batch, max_batch);
            let now = Instant::now();
            if batch.len() >= target || now >= deadline {
                break;
            }
            // Sleeping (rather than blocking on the channel) lets senders
            // queue without waking the writer for each request.
            std::thread::sleep((deadline - now).min(LINGER_STEP));
        }
        let committing = batch.len();
        let started = Instant::now();
        let conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Before: a batch for files that went away is refused unwritten.
        // After, before any reply: a file may go away during the commit too,
        // and only this check keeps such a commit from being acknowledged.
        let vouched = checked
            .take()
            .is_some_and(|at| at.elapsed() < RECHECK_AFTER);
        let committed = (if vouched {
            Ok(())
        } else {
            check_files(opened.as_ref())
        })
        .and_then(|()| {
            commit(&conn, &batch, &mut outcomes, &location, &mut seq_nos)
                .map_err(|error| Failure::new(&error))
        })
        .and_then(|position| {
            let at = Instant::now();
            check_files(opened.as_ref())?;
            checked = Some(at);
            Ok(position)
        });
        drop(conn);
        last_commit = started.elapsed();
        // Callers that queued during the commit are active too. Count them
        // before replying: a caller answered now may send again before the
        // next drain, and counting it twice would make the writer wait for
        // a request that cannot come.
        drain(&requests, &mut next, max_batch);
        active = committing + next.len();
        match committed {
            Ok(last_position) => {
                if let Some(position) = last_position {
                    head.send_if_modified(|head| {
                        let advanced = position > *head;
                        *head = (*head).max(position);
                        advanced
                    });
                }
                for (request, outcome) in batch.drain(..).zip(outcomes.drain(..)) {
                    reply(request, outcome, &location);
                }
            }
            Err(failure) => {
                seq_nos.clear();
                tracing::error!(file = %location.describe(), error = %failure.reason, "sqlite group commit failed");
                // Followers read again now, and so find out if the file is gone.
                head.send_modify(|_| {});
                outcomes.clear();
                for request in batch.drain(..) {
                    reply(request, Outcome::Failed(failure.clone()), &location);
                }
            }
        }
        // What queued during the commit, and since, starts the next batch.
        std::mem::swap(&mut batch, &mut next);
        drain(&requests, &mut batch, max_batch);
    }
}

/// `Err` if a path no longer names the file the writer opened.
fn check_files(opened: Option<&OpenedFile>) -> Result<(), Failure> {
    match opened.map(OpenedFile::check) {
        Some(Err(reason)) => Err(Failure {
            reason,
            corrupt: false,
        }),
        _ => Ok(()),
    }
}

/// Moves queued requests into `batch`, up to `max_batch`.
fn drain(requests: &mpsc::Receiver<Request>, batch: &mut Vec<Request>, max_batch: usize) {
    while batch.len() < max_batch {
        match requests.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
}

/// Applies every request in one transaction. On `Ok`, `outcomes` has one entry
/// per request and the transaction is committed; returns the highest position
/// written. On `Err`, nothing of the batch is written.
fn commit(
    conn: &Connection,
    batch: &[Request],
    outcomes: &mut Vec<Outcome>,
    location: &Location,
    seq_nos: &mut SeqNoCache,
) -> Result<Option<u64>, rusqlite::Error> {
    outcomes.clear();
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let mut start = 0;
    let mut position = 0;
    let result = (|| {
        seq_nos.check(conn)?;
        start = conn
            .prepare_cached(LAST_POSITION)?
            .query_row([], |row| row.get::<_, i64>(0))?;
        position = start;
        for request in batch {
            let before = position;
            // One INSERT is atomic on its own; a request of several rows runs
            // in a savepoint so that a failure rolls back all of its rows.
            let savepoint = request.rows() > 1;
            if savepoint {
                conn.prepare_cached("SAVEPOINT request")?.execute([])?;
            }
            match apply(conn, request, location, &mut position, seq_nos) {
                Ok(outcome) => {
                    outcomes.push(outcome);
                    if savepoint {
                        conn.prepare_cached("RELEASE request")?.execute([])?;
                    }
                }
                Err(error) => {
                    if conn.is_autocommit() {
                        // SQLite rolled back the whole transaction.
                        return Err(error);
                    }
                    if savepoint {
                        conn.prepare_cached("ROLLBACK TO request")?.execute([])?;
                        conn.prepare_cached("RELEASE request")?.execute([])?;
                    }
                    position = before;
                    if let Request::Append(append) = request {
                        seq_nos.forget(&append.type_name, &append.id);
                    }
                    tracing::warn!(file = %location.describe(), %error, "sqlite request rolled back");
                    outcomes.push(Outcome::Failed(Failure::new(&error)));
                }
            }
        }
        if position != start {
            conn.prepare_cached(SET_LAST_POSITION)?
                .execute([position])?;
        }
        conn.execute_batch("COMMIT")
    })();
    match result {
        Ok(()) => Ok((position != start)
            .then(|| u64::try_from(position).ok())
            .flatten()),
        Err(error) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            outcomes.clear();
            Err(error)
        }
    }
}

/// Applies one request; `position` is the last position assigned so far.
fn apply(
    conn: &Connection,
    request: &Request,
    location: &Location,
    position: &mut i64,
    seq_nos: &mut SeqNoCache,
) -> rusqlite::Result<Outcome> {
    match request {
        Request::Append(append) => {
            let cached = seq_nos.get(&append.type_name, &append.id);
            let stored: Option<i64> = match cached {
                Some(_) => None,
                None => conn
                    .prepare_cached(LAST_SEQ_NO)?
                    .query_row(params![append.type_name, append.id], |row| row.get(0))
                    .optional()?
                    .flatten(),
            };
            let actual = match (cached, stored.map(SeqNo::from_i64)) {
                (Some(seq_no), _) => seq_no,
                (None, None) => SeqNo::ZERO,
                (None, Some(Some(seq_no))) => seq_no,
                (None, Some(None)) => {
                    return Ok(Outcome::Refused(EventLogError::Corrupt {
                        backend: "sqlite",
                        location: format!(
                            "{}, entity {}/{}",
                            location.describe(),
                            append.type_name,
                            append.id
                        ),
                        reason: format!("the last seq_no is negative: {stored:?}"),
                    }));
                }
            };
            if cached.is_none() {
                seq_nos.set(&append.type_name, &append.id, actual);
            }
            if actual != append.expected {
                return Ok(Outcome::Refused(EventLogError::Conflict {
                    type_name: append.type_name.clone(),
                    id: append.id.clone(),
                    expected: append.expected,
                    actual,
                }));
            }
            let count = u64::try_from(append.events.len()).unwrap_or(u64::MAX);
            let last = actual.add(count);
            if last.to_i64().is_none() {
                return Ok(Outcome::Refused(EventLogError::Backend {
                    backend: "sqlite",
                    operation: "append",
                    source: format!("seq_no {last} exceeds the largest storable seq_no").into(),
                }));
            }
            let last_position = i64::try_from(count)
                .ok()
                .and_then(|count| position.checked_add(count));
            if last_position.is_none() {
                return Ok(Outcome::Refused(EventLogError::Backend {
                    backend: "sqlite",
                    operation: "append",
                    source: "the log has reached the largest storable position".into(),
                }));
            }
            let mut insert = conn.prepare_cached(INSERT_EVENT)?;
            let mut seq_no = actual;
            for event in &append.events {
                seq_no = seq_no.next();
                *position += 1;
                // Checked above: every seq_no up to `last` fits.
                let seq = seq_no.to_i64().unwrap_or(i64::MAX);
                insert.execute(params![
                    append.type_name,
                    append.id,
                    seq,
                    *position,
                    &event[..]
                ])?;
            }
            seq_nos.set(&append.type_name, &append.id, last);
            Ok(Outcome::Appended(last))
        }
        Request::SaveSnapshot(save) => {
            let Some(seq_no) = save.seq_no.to_i64() else {
                return Ok(Outcome::Refused(EventLogError::Backend {
                    backend: "sqlite",
                    operation: "save a snapshot",
                    source: format!("seq_no {} exceeds the largest storable seq_no", save.seq_no)
                        .into(),
                }));
            };
            conn.prepare_cached(SAVE_SNAPSHOT)?.execute(params![
                save.type_name,
                save.id,
                seq_no,
                &save.state[..]
            ])?;
            Ok(Outcome::Saved)
        }
    }
}

fn reply(request: Request, outcome: Outcome, location: &Location) {
    match request {
        Request::Append(append) => {
            let result = match outcome {
                Outcome::Appended(last) => Ok(last),
                Outcome::Refused(error) => Err(error),
                Outcome::Saved => Err(EventLogError::backend(
                    "sqlite",
                    "append",
                    std::io::Error::other("internal error: an append was answered as a snapshot"),
                )),
                Outcome::Failed(Failure {
                    reason,
                    corrupt: true,
                }) => Err(EventLogError::Corrupt {
                    backend: "sqlite",
                    location: format!(
                        "{}, entity {}/{}",
                        location.describe(),
                        append.type_name,
                        append.id
                    ),
                    reason,
                }),
                Outcome::Failed(Failure { reason, .. }) => Err(EventLogError::backend(
                    "sqlite",
                    "append",
                    std::io::Error::other(format!("{}: {reason}", location.describe())),
                )),
            };
            // The caller may have stopped waiting; the outcome stands anyway.
            let _ = append.reply.send(result);
        }
        Request::SaveSnapshot(save) => {
            let result = match outcome {
                Outcome::Saved => Ok(()),
                Outcome::Appended(_) => Err(SnapshotStoreError::backend(
                    "sqlite",
                    "save",
                    std::io::Error::other("internal error: a snapshot was answered as an append"),
                )),
                Outcome::Refused(error) => {
                    Err(SnapshotStoreError::backend("sqlite", "save", error))
                }
                Outcome::Failed(Failure {
                    reason,
                    corrupt: true,
                }) => Err(SnapshotStoreError::Corrupt {
                    backend: "sqlite",
                    location: format!(
                        "{}, entity {}/{}",
                        location.describe(),
                        save.type_name,
                        save.id
                    ),
                    reason,
                }),
                Outcome::Failed(Failure { reason, .. }) => Err(SnapshotStoreError::backend(
                    "sqlite",
                    "save",
                    std::io::Error::other(format!("{}: {reason}", location.describe())),
                )),
            };
            let _ = save.reply.send(result);
        }
    }
}

/// Maps an SQLite error of a read to the event log's error.
pub(crate) fn read_error(
    location: &Location,
    what: impl FnOnce() -> String,
    operation: &'static str,
    error: rusqlite::Error,
) -> EventLogError {
    if is_corruption(&error) {
        EventLogError::Corrupt {
            backend: "sqlite",
            location: format!("{}, {}", location.describe(), what()),
            reason: error.to_string(),
        }
    } else {
        EventLogError::Backend {
            backend: "sqlite",
            operation,
            source: Box::new(ReadError {
                at: format!("{}, {}", location.describe(), what()),
                source: error,
            }),
        }
    }
}

/// A failed read, with the file and what was read.
#[derive(Debug)]
struct ReadError {
    at: String,
    source: rusqlite::Error,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.source)
    }
}

impl std::error::Error for ReadError {}
