//! Group commit: one task per log drains the queued append requests and writes
//! them in one transaction and one round trip, on a connection of its own.
//!
//! Positions are taken under a transaction-scoped advisory lock held until
//! COMMIT, so the positions a transaction takes (the positions row's last
//! value plus one, two, ...) become visible in position order. A reply is sent
//! only once the commit is durable.
//!
//! When every request's predecessor event is known to be stored, the batch is
//! one statement in a transaction of its own that takes the lock and makes a
//! plain insert; a stale request fails it on the primary key (nothing is
//! written). Otherwise, and after such a failure, the transaction is
//! pipelined as three messages, `BEGIN; SELECT pg_advisory_xact_lock(..)`,
//! the checking statement and `COMMIT`, whose answers are read together: each
//! request is checked against its entity's last seq_no inside the statement,
//! a request whose expectation does not hold writes nothing and gets a
//! `Conflict`, the others of the batch are written. Two requests for the
//! same entity never share a batch (the later one waits for the next). If the
//! statement fails for a reason the server reports (say a unique violation
//! from a writer that does not take the lock), the requests are retried one by
//! one, so one bad request cannot fail its neighbours.
//!
//! Appends that come one at a time (the writer's last batch held a single
//! request and found the connection idle) need no group commit: such an
//! append, with no other append in flight and its predecessor known, takes
//! the writer's idle connection itself and runs the one-statement path on the
//! caller's task ([`append_alone`]). That saves the hop to the writer task
//! and back, which on this project's 2-core VM cost a third of a sequential
//! append. Anything else, a conflict included, goes to the writer. The caller
//! owns the connection while it appends, and no lock is held: if its future
//! stalls (kept but not polled), the writer takes a second connection from
//! its pool instead of waiting; if the future is dropped mid-statement, a
//! task waits for the statement to end, then wakes followers as the writer
//! would (the statement may have committed) and gives the connection back.

use crate::{PostgresError, event_log::Shared};
use bytes::Bytes;
use deadpool_postgres::{Object, Pool};
use eventsourced::{EventLogError, SeqNo};
use futures::{FutureExt, future::BoxFuture};
use std::{
    collections::{HashSet, VecDeque},
    hash::{DefaultHasher, Hash, Hasher},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_postgres::{error::SqlState, types::ToSql};
use tracing::{debug, warn};

/// Most events in one group commit (a request is never split).
const MAX_BATCH_EVENTS: usize = 20_000;

/// How many times the writer yields to let callers catch up when a batch is
/// much smaller than the one before.
const LINGER_TURNS: usize = 8;

/// One caller's append, waiting for the writer.
pub(crate) struct AppendRequest {
    pub(crate) type_name: String,
    pub(crate) id: String,
    pub(crate) expected: SeqNo,
    pub(crate) events: Vec<Bytes>,
    pub(crate) reply: oneshot::Sender<Result<SeqNo, EventLogError>>,
}

impl AppendRequest {
    fn entity_key(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        (&self.type_name, &self.id).hash(&mut hasher);
        hasher.finish()
    }
}

/// Why a group commit failed.
enum WriteError {
    /// The server rejected the statement and the connection is still usable:
    /// retrying requests one by one may succeed for most of them.
    Rejected(PostgresError),
    /// Anything else (connection lost, timeout): the outcome is unknown.
    Failed(PostgresError),
}

/// What the writer shares with the log's handles.
pub(crate) struct Link {
    /// The writer's pool: one connection, and a second only while a caller
    /// appending alone holds the first.
    pool: Pool,
    /// The writer's connection while nobody uses it: taken by the writer for
    /// each batch, or by a caller appending alone (never held across an await).
    idle: Mutex<Option<Object>>,
    /// Signalled when a connection is put into `idle`, for a writer waiting
    /// on the pool (which does not see the slot) while both are out.
    filled: Notify,
    /// Whether appends come one at a time: the writer's last batch held one
    /// request and found the connection idle.
    alone: AtomicBool,
    /// Appends in flight on all handles of the log.
    in_flight: AtomicUsize,
    /// Asks the notifier for a `NOTIFY`; full means one is pending already.
    announce: mpsc::Sender<()>,
}

/// Starts the writer task (and its notifier) on `pool`, the writer's pool of
/// two connections (see [`Link`]), with `first`, one of them configured by
/// [`session`]; both run until every handle of the log is dropped.
pub(crate) fn start(
    shared: &Arc<Shared>,
    pool: Pool,
    first: Object,
) -> (mpsc::Sender<AppendRequest>, Arc<Link>) {
    let (announce, announcements) = mpsc::channel(1);
    tokio::spawn(notifier(Arc::clone(shared), announcements));
    let link = Arc::new(Link {
        pool,
        idle: Mutex::new(Some(first)),
        filled: Notify::new(),
        alone: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
        announce,
    });
    let (writer, requests) = mpsc::channel(QUEUE);
    tokio::spawn(run(Arc::clone(shared), Arc::clone(&link), requests));
    (writer, link)
}

impl Link {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Option<Object>> {
        // A take or a put per lock: a poisoned slot is consistent.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The writer's connection; whether it was idle (else the pool opens or
    /// lends another when it is used).
    fn check_out(self: &Arc<Self>) -> (Connection, bool) {
        let client = self.lock_idle().take();
        let idle = client.is_some();
        let connection = Connection {
            link: Arc::clone(self),
            client,
        };
        (connection, idle)
    }

    /// A connection with the [`SESSION`] settings for a writer that found the
    /// slot empty: a new one from the pool, or the idle one if it is given
    /// back first (the pool counts it as taken, so with both connections out
    /// its wait would last the statement timeout although one came back).
    async fn connect(&self, shared: &Shared) -> Result<Object, PostgresError> {
        let filled = self.filled.notified();
        tokio::pin!(filled);
        loop {
            filled.as_mut().enable();
            if let Some(client) = self.lock_idle().take() {
                return Ok(client);
            }
            tokio::select! {
                client = session(shared, &self.pool) => return client,
                () = &mut filled => filled.set(self.filled.notified()),
            }
        }
    }

    /// Gives a connection back: it becomes the idle one, or goes back to the
    /// pool if another took that place meanwhile.
    fn check_in(&self, client: Option<Object>) {
        if let Some(client) = client {
            let mut idle = self.lock_idle();
            if idle.is_none() {
                *idle = Some(client);
                drop(idle);
                self.filled.notify_waiters();
            }
        }
    }

    /// Counts an append in flight until the guard is dropped; also returns
    /// how many other appends are in flight.
    pub(crate) fn enter(&self) -> (InFlight<'_>, usize) {
        let others = self.in_flight.fetch_add(1, Ordering::Relaxed);
        (InFlight(&self.in_flight), others)
    }
}

/// One append in flight, counted by [`Link::enter`].
pub(crate) struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Queued append requests before callers wait for the writer.
const QUEUE: usize = 8192;

/// Appends `request` on the caller's task when appends come one at a time
/// (see the module's documentation): its answer is then on its `reply`
/// channel. Gives the request back when the writer must handle it: appends
/// are not alone (the writer's last batch held several, or `busy`: another
/// append is in flight or queued), the connection is taken, the entity's
/// predecessor is not known to be stored, or an event already exists (a
/// conflict, which the writer's checking statement reports). Appends of
/// several callers at once thus always meet in the writer's group commit.
///
/// If the caller stops waiting, the statement may still commit, as with the
/// writer: [`Direct`] then wakes the followers once it has ended. The known
/// seq_nos stay behind, which only makes the next append of that entity take
/// the checking path.
pub(crate) async fn append_alone(
    shared: &Arc<Shared>,
    link: &Arc<Link>,
    busy: bool,
    request: AppendRequest,
) -> Option<AppendRequest> {
    if busy
        || !link.alone.load(Ordering::Relaxed)
        || !shared.predecessor_known(&request.type_name, &request.id, request.expected)
    {
        return Some(request);
    }
    let (connection, true) = link.check_out() else {
        return Some(request);
    };
    let mut direct = Direct { shared, connection };
    let batch = std::slice::from_ref(&request);
    let written = write_once(shared, &mut direct.connection, batch, fast_only).await;
    direct.finish();
    match written {
        Ok(Some(actuals)) => {
            if reply_all(shared, vec![request], actuals) {
                let _ = link.announce.try_send(());
            }
            None
        }
        Ok(None) => Some(request),
        Err(WriteError::Rejected(error) | WriteError::Failed(error)) => {
            warn!(%error, "append failed");
            let _ = request.reply.send(Err(backend(Arc::new(error))));
            None
        }
    }
}

/// The connection of an append running on its caller's task.
struct Direct<'a> {
    shared: &'a Arc<Shared>,
    /// Its client is taken when the statement ended and it was given back.
    connection: Connection,
}

impl Direct<'_> {
    /// The statement ended: the connection goes back to the writer.
    fn finish(mut self) {
        let client = self.connection.client.take();
        self.connection.link.check_in(client);
    }
}

impl Drop for Direct<'_> {
    /// The caller stopped waiting before the statement ended: it runs on in
    /// the server and may commit. A task waits for it to end (a query queued
    /// behind it on the same connection returns after it), then wakes the
    /// followers, here and by `NOTIFY`, and gives the connection back.
    fn drop(&mut self) {
        let Some(client) = self.connection.client.take() else {
            return;
        };
        let (shared, link) = (Arc::clone(self.shared), Arc::clone(&self.connection.link));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(settle(shared, link, client))),
            // No runtime (it is shutting down): wake what can be woken.
            Err(_) => announce(&shared, &link),
        }
    }
}

/// Waits until the statement of an abandoned direct append ended, then
/// announces it as a commit and gives the connection back.
async fn settle(shared: Arc<Shared>, link: Arc<Link>, client: Object) {
    let timeout = shared.config.statement_timeout;
    let client = match tokio::time::timeout(timeout, client.batch_execute("")).await {
        Ok(Ok(())) => Some(client),
        // Do not keep a connection whose statement is stuck or broke.
        _ => {
            drop(Object::take(client));
            None
        }
    };
    announce(&shared, &link);
    link.check_in(client);
}

/// Wakes the followers of this process and asks for a `NOTIFY`.
fn announce(shared: &Shared, link: &Link) {
    shared.wake.send_modify(|n| *n = n.wrapping_add(1));
    // Full means an announcement is pending already: coalesced.
    let _ = link.announce.try_send(());
}

/// The writer task: runs until every handle of the log is dropped.
async fn run(shared: Arc<Shared>, link: Arc<Link>, mut requests: mpsc::Receiver<AppendRequest>) {
    let mut deferred: VecDeque<AppendRequest> = VecDeque::new();
    let max_batch = shared.config.max_batch;
    let mut previous = 0;
    loop {
        let mut batch: Vec<AppendRequest> = Vec::new();
        let mut keys: HashSet<u64> = HashSet::new();
        let mut events = 0;
        let mut later: VecDeque<AppendRequest> = VecDeque::new();
        let mut admit = |request: AppendRequest, batch: &mut Vec<AppendRequest>| {
            let fits = batch.is_empty()
                || (batch.len() < max_batch && events + request.events.len() <= MAX_BATCH_EVENTS);
            // A key is taken by the first request of its entity seen in this
            // round, admitted or not, so an entity's requests keep their order.
            if keys.insert(request.entity_key()) && fits {
                events += request.events.len();
                batch.push(request);
            } else {
                later.push_back(request);
            }
        };
        while let Some(request) = deferred.pop_front() {
            admit(request, &mut batch);
        }
        if batch.is_empty() {
            match requests.recv().await {
                Some(request) => admit(request, &mut batch),
                None => return,
            }
        }
        // When the last batch was much larger, its callers are likely about
        // to send again (their replies just went out): give them a few
        // scheduler turns instead of paying a commit for a handful.
        let mut turns = 0;
        loop {
            while batch.len() < max_batch {
                match requests.try_recv() {
                    Ok(request) => admit(request, &mut batch),
                    Err(_) => break,
                }
            }
            if turns == LINGER_TURNS || batch.len() * 2 > previous || batch.len() >= max_batch {
                break;
            }
            turns += 1;
            tokio::task::yield_now().await;
        }
        previous = batch.len();
        deferred = later;
        let (mut connection, idle) = link.check_out();
        let written = write(&shared, &mut connection, batch).await;
        link.check_in(connection.client);
        link.alone.store(
            previous == 1 && idle && deferred.is_empty(),
            Ordering::Relaxed,
        );
        if written {
            // Full means an announcement is pending already: coalesced.
            let _ = link.announce.try_send(());
        }
    }
}

/// The writer's session settings, set on each connection it takes; the
/// connection is its own (see `PostgresConfig::log_pools`), so they reach no
/// caller's query.
///
/// Generic plans: the append statements take their rows as arrays, and for a
/// concrete array PostgreSQL estimates `unnest` far cheaper than in the
/// generic plan, so in the default `plan_cache_mode` it never switches to the
/// generic plan and plans them anew on every execution (in
/// `pg_prepared_statements`: `custom_plans` grows, `generic_plans` stays 0),
/// which costs more than running them. Their plans are the same for any
/// arrays. READ COMMITTED whatever the server's default: the single-statement
/// append relies on its UPDATE continuing from the latest row version.
const SESSION: &str = "SET plan_cache_mode = force_generic_plan; \
     SET default_transaction_isolation = 'read committed'";

/// The writer's connection, from a pool of its own; taken again, with the
/// [`SESSION`] settings, after it is lost (or while a caller appending alone
/// holds the other one).
struct Connection {
    link: Arc<Link>,
    client: Option<Object>,
}

/// Sends `NOTIFY` for commits, off the writers' critical path: at most one in
/// flight, and at most about one per millisecond; ends with the writer.
async fn notifier(shared: Arc<Shared>, mut announcements: mpsc::Receiver<()>) {
    let sql = shared.tables.notify_sql();
    while announcements.recv().await.is_some() {
        let sent = async {
            let client = shared.get().await?;
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| PostgresError::query("notify", &shared.tables.events(), e))
        };
        if let Ok(Err(error)) = tokio::time::timeout(shared.config.statement_timeout, sent).await {
            debug!(%error, "NOTIFY failed; followers in other processes poll");
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// Writes one batch and answers every request of it; whether events were
/// written.
async fn write(shared: &Shared, connection: &mut Connection, batch: Vec<AppendRequest>) -> bool {
    let started = std::time::Instant::now();
    match write_once(shared, connection, &batch, transaction).await {
        Ok(actuals) => {
            tracing::trace!(
                requests = batch.len(),
                events = batch.iter().map(|r| r.events.len()).sum::<usize>(),
                micros = started.elapsed().as_micros(),
                "group commit"
            );
            reply_all(shared, batch, actuals)
        }
        Err(WriteError::Rejected(error)) if batch.len() > 1 => {
            debug!(%error, requests = batch.len(), "group commit rejected; retrying one by one");
            let mut written = false;
            for request in batch {
                let batch = std::slice::from_ref(&request);
                match write_once(shared, connection, batch, transaction).await {
                    Ok(actuals) => written |= reply_all(shared, vec![request], actuals),
                    Err(WriteError::Rejected(error) | WriteError::Failed(error)) => {
                        let _ = request.reply.send(Err(backend(Arc::new(error))));
                    }
                }
            }
            written
        }
        Err(WriteError::Rejected(error) | WriteError::Failed(error)) => {
            warn!(%error, requests = batch.len(), "group commit failed");
            let error = Arc::new(error);
            for request in batch {
                let _ = request.reply.send(Err(backend(Arc::clone(&error))));
            }
            false
        }
    }
}

fn backend(error: Arc<PostgresError>) -> EventLogError {
    EventLogError::backend("postgres", "append", error)
}

/// Answers each request from the actual last seq_no its entity had; whether
/// any was written.
fn reply_all(shared: &Shared, batch: Vec<AppendRequest>, actuals: Vec<Actual>) -> bool {
    let mut written = false;
    for (request, actual) in batch.into_iter().zip(actuals) {
        let actual = match actual {
            Ok(actual) => actual,
            Err(stored) => {
                let _ = request.reply.send(Err(EventLogError::Corrupt {
                    backend: "postgres",
                    location: format!(
                        "table {}, entity {}/{}",
                        shared.tables.events(),
                        request.type_name,
                        request.id
                    ),
                    reason: format!(
                        "its last stored seq_no is {stored}; seq_nos start at 1 (nothing was written)"
                    ),
                }));
                continue;
            }
        };
        let result = if actual == request.expected {
            written = true;
            let last = request.expected.add(request.events.len() as u64);
            shared.learn(&request.type_name, &request.id, last);
            Ok(last)
        } else {
            shared.learn(&request.type_name, &request.id, actual);
            Err(EventLogError::Conflict {
                type_name: request.type_name,
                id: request.id,
                expected: request.expected,
                actual,
            })
        };
        let _ = request.reply.send(result);
    }
    if written {
        shared.wake.send_modify(|n| *n = n.wrapping_add(1));
    }
    written
}

/// A request's entity's last stored seq_no before the write (the request
/// was written iff it equals the expected one), or the stored value if it is
/// not a seq_no (below 0: a row written behind the log's back).
type Actual = Result<SeqNo, i64>;

/// The statements of one write: [`transaction`] or [`fast_only`].
type Statements<T> = for<'a> fn(
    &'a Shared,
    &'a Object,
    &'a [AppendRequest],
) -> BoxFuture<'a, Result<T, tokio_postgres::Error>>;

/// A connection of the writer's `pool` with the [`SESSION`] settings.
pub(crate) async fn session(shared: &Shared, pool: &Pool) -> Result<Object, PostgresError> {
    let timeout = shared.config.statement_timeout;
    let client = pool
        .get()
        .await
        .map_err(|e| PostgresError::connect(shared.config.place(), e))?;
    let operation = "configure the writer's session";
    match tokio::time::timeout(timeout, client.batch_execute(SESSION)).await {
        Ok(Ok(())) => Ok(client),
        failed => {
            drop(Object::take(client));
            Err(match failed {
                Ok(Err(error)) => PostgresError::query(operation, &shared.tables.events(), error),
                _ => PostgresError::Timeout { operation, timeout },
            })
        }
    }
}

/// Runs `statements` for `batch` on the writer's connection (taken from the
/// pool, with the [`SESSION`] settings, if it has none), within the
/// statement timeout, and sorts out what a failure means.
async fn write_once<T>(
    shared: &Shared,
    connection: &mut Connection,
    batch: &[AppendRequest],
    statements: Statements<T>,
) -> Result<T, WriteError> {
    let timeout = shared.config.statement_timeout;
    if connection.client.as_ref().is_some_and(|c| c.is_closed()) {
        connection.client = None;
    }
    let client = match &mut connection.client {
        Some(client) => client,
        None => {
            let client = connection
                .link
                .connect(shared)
                .await
                .map_err(WriteError::Failed)?;
            connection.client.insert(client)
        }
    };
    let result = tokio::time::timeout(timeout, statements(shared, client, batch)).await;
    match result {
        Ok(Ok(actuals)) => Ok(actuals),
        Ok(Err(error)) => {
            let closed = client.is_closed();
            if closed {
                connection.client = None;
            } else {
                // Leave no transaction open behind a failed pipeline.
                let _ = tokio::time::timeout(timeout, client.batch_execute("ROLLBACK")).await;
            }
            let rejected = !closed && error.as_db_error().is_some();
            let table = shared.tables.events();
            let error = PostgresError::query("append", &table, error);
            Err(if rejected {
                WriteError::Rejected(error)
            } else {
                WriteError::Failed(error)
            })
        }
        Err(_) => {
            if let Some(client) = connection.client.take() {
                drop(Object::take(client));
            }
            Err(WriteError::Failed(PostgresError::Timeout {
                operation: "append",
                timeout,
            }))
        }
    }
}

/// The batch's transaction: the fast path when every request's predecessor
/// is known to be stored, the checking statement otherwise (or when the fast
/// path met an existing event, i.e. a conflict).
///
/// Returns each request's actual last seq_no before the append (the request
/// was written iff it equals expected).
fn transaction<'a>(
    shared: &'a Shared,
    client: &'a Object,
    batch: &'a [AppendRequest],
) -> BoxFuture<'a, Result<Vec<Actual>, tokio_postgres::Error>> {
    async move {
        match fast_path(shared, client, batch).await? {
            Some(actuals) => Ok(actuals),
            None => checking_transaction(shared, client, batch).await,
        }
    }
    .boxed()
}

/// The fast path alone: the actual last seq_nos as [`transaction`] returns
/// them, or `None` (nothing written) when some request's predecessor is not
/// known or an event already exists.
fn fast_only<'a>(
    shared: &'a Shared,
    client: &'a Object,
    batch: &'a [AppendRequest],
) -> BoxFuture<'a, Result<Option<Vec<Actual>>, tokio_postgres::Error>> {
    fast_path(shared, client, batch).boxed()
}

/// [`fast_only`] unboxed, for [`transaction`] to await inside its own box.
async fn fast_path(
    shared: &Shared,
    client: &Object,
    batch: &[AppendRequest],
) -> Result<Option<Vec<Actual>>, tokio_postgres::Error> {
    let all_known = batch
        .iter()
        .all(|r| shared.predecessor_known(&r.type_name, &r.id, r.expected));
    if !all_known {
        return Ok(None);
    }
    match fast_transaction(shared, client, batch).await {
        Ok(()) => Ok(Some(batch.iter().map(|r| Ok(r.expected)).collect())),
        Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) && !client.is_closed() => {
            debug!(%error, "an event already exists: the checking statement decides");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// One statement in its own transaction: the lock and a plain insert, one
/// round trip. Any stale request violates the primary key and fails the whole
/// statement, writing nothing. `execute` returns at ReadyForQuery, which the
/// server sends after the commit is durable.
async fn fast_transaction(
    shared: &Shared,
    client: &Object,
    batch: &[AppendRequest],
) -> Result<(), tokio_postgres::Error> {
    let statement = client.prepare_cached(&shared.sql.append_fast).await?;
    let total: usize = batch.iter().map(|r| r.events.len()).sum();
    let mut types: Vec<&str> = Vec::with_capacity(total);
    let mut ids: Vec<&str> = Vec::with_capacity(total);
    let mut bytes: Vec<&[u8]> = Vec::with_capacity(total);
    let mut seq_nos: Vec<i64> = Vec::with_capacity(total);
    for request in batch {
        for (seq_no, event) in event_seq_nos(request).zip(&request.events) {
            types.push(&request.type_name);
            ids.push(&request.id);
            bytes.push(event.as_ref());
            seq_nos.push(seq_no);
        }
    }
    let params: [&(dyn ToSql + Sync); 4] = [&types, &ids, &bytes, &seq_nos];
    let inserted = client.execute(&statement, &params).await?;
    if usize::try_from(inserted).ok() != Some(total) {
        warn!(
            inserted,
            total, "fast group commit inserted an unexpected number of rows"
        );
    }
    Ok(())
}

/// The seq_nos of a request's events, from expected + 1 on; `append` checked
/// that the last one fits an i64, so the zip with the events ends first.
///
/// Bounded at i64::MAX: an unbounded `first..` computes the value after the
/// one it returns, which overflows (a panic with overflow checks, and the
/// writer task with it) when the last event's seq_no is i64::MAX.
fn event_seq_nos(request: &AppendRequest) -> std::ops::RangeInclusive<i64> {
    let first = request
        .expected
        .to_i64()
        .unwrap_or(i64::MAX)
        .saturating_add(1);
    first..=i64::MAX
}

async fn checking_transaction(
    shared: &Shared,
    client: &Object,
    batch: &[AppendRequest],
) -> Result<Vec<Actual>, tokio_postgres::Error> {
    let statement = client.prepare_cached(&shared.sql.append).await?;
    let types: Vec<&str> = batch.iter().map(|r| r.type_name.as_str()).collect();
    let ids: Vec<&str> = batch.iter().map(|r| r.id.as_str()).collect();
    let mut expected: Vec<i64> = Vec::with_capacity(batch.len());
    let total: usize = batch.iter().map(|r| r.events.len()).sum();
    let mut ev_req: Vec<i32> = Vec::with_capacity(total);
    let mut ev_seq: Vec<i64> = Vec::with_capacity(total);
    let mut ev_bytes: Vec<&[u8]> = Vec::with_capacity(total);
    let mut ev_types: Vec<&str> = Vec::with_capacity(total);
    let mut ev_ids: Vec<&str> = Vec::with_capacity(total);
    for (request_no, request) in (1_i32..).zip(batch) {
        // `append` checked that expected + events fits an i64.
        expected.push(request.expected.to_i64().unwrap_or(i64::MAX));
        for (seq_no, event) in event_seq_nos(request).zip(&request.events) {
            ev_req.push(request_no);
            ev_seq.push(seq_no);
            ev_bytes.push(event.as_ref());
            ev_types.push(&request.type_name);
            ev_ids.push(&request.id);
        }
    }
    let params: [&(dyn ToSql + Sync); 8] = [
        &types, &ids, &expected, &ev_req, &ev_seq, &ev_bytes, &ev_types, &ev_ids,
    ];
    let (begin, row, commit) = futures::join!(
        client.batch_execute(&shared.sql.begin_append),
        client.query_one(&statement, &params),
        client.batch_execute("COMMIT"),
    );
    begin?;
    let row = row?;
    commit?;
    let actuals: Vec<i64> = row.try_get(0)?;
    let inserted: i64 = row.try_get(1)?;
    let mut expected_rows = 0_i64;
    let mut result = Vec::with_capacity(actuals.len());
    for (request, &actual) in batch.iter().zip(&actuals) {
        // Compared as the statement compared them: a negative stored seq_no
        // is no match for any expected one, and not a seq_no.
        if Some(actual) == request.expected.to_i64() {
            expected_rows += i64::try_from(request.events.len()).unwrap_or(i64::MAX);
        }
        result.push(SeqNo::from_i64(actual).ok_or(actual));
    }
    if actuals.len() != batch.len() || inserted != expected_rows {
        // Cannot happen with the statement above; refuse to guess if it does.
        warn!(
            inserted,
            expected_rows, "group commit inserted an unexpected number of rows"
        );
    }
    Ok(result)
}
