//! [`PostgresEventLog`]: the event log on PostgreSQL.

use crate::{
    PostgresConfig, PostgresError, listener,
    lookup::{KeyQuery, Lookups},
    pooled, shape,
    tables::Tables,
    writer::{self, AppendRequest},
};
use bytes::Bytes;
use deadpool_postgres::{Object, Pool};
use eventsourced::{
    EventEnvelope, EventLog, EventLogError, Position, SeqNo, event_log::validate_id,
};
use futures::{Stream, StreamExt, TryStreamExt, stream};
use std::{
    collections::{HashMap, VecDeque},
    fmt,
    sync::{Arc, Mutex},
};
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};
use tokio_postgres::{Row, types::ToSql};

/// The longest entity id (in bytes) the log accepts; longer ones would not fit
/// the primary key index.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use eventsourced::{EventLog, EventLogError, SeqNo};
/// use eventsourced_postgres::{MAX_ID_LEN, PostgresConfig, PostgresEventLog};
///
/// # let url = std::env::var("DATABASE_URL")
/// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
/// let mut config = PostgresConfig::from_url(&url)?;
/// # config.pool_size = 2;
/// config.schema = "doc_max_id_len".to_owned();
/// let log = PostgresEventLog::new(config).await?;
/// let too_long = "x".repeat(MAX_ID_LEN + 1);
/// let refused = log.append("counter", &too_long, SeqNo::ZERO, &["+1".into()]).await;
/// assert!(matches!(refused, Err(EventLogError::InvalidId { .. })));
/// # Ok(()) }
/// ```
pub const MAX_ID_LEN: usize = 1024;
/// The longest entity type name (in bytes) the log accepts.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use eventsourced::{EventLog, EventLogError, SeqNo};
/// use eventsourced_postgres::{MAX_TYPE_NAME_LEN, PostgresConfig, PostgresEventLog};
///
/// # let url = std::env::var("DATABASE_URL")
/// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
/// let mut config = PostgresConfig::from_url(&url)?;
/// # config.pool_size = 2;
/// config.schema = "doc_max_type_name_len".to_owned();
/// let log = PostgresEventLog::new(config).await?;
/// let too_long = "t".repeat(MAX_TYPE_NAME_LEN + 1);
/// let refused = log.append(&too_long, "c-1", SeqNo::ZERO, &["+1".into()]).await;
/// assert!(matches!(refused, Err(EventLogError::InvalidId { .. })));
/// # Ok(()) }
/// ```
pub const MAX_TYPE_NAME_LEN: usize = 255;

/// SQL text built once from the validated table names.
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) begin_append: String,
    pub(crate) append: String,
    pub(crate) append_fast: String,
    events_by_id: String,
    events_by_type: String,
}

/// What the writer task, the listener and the streams share.
pub(crate) struct Shared {
    pub(crate) config: PostgresConfig,
    pub(crate) tables: Tables,
    pub(crate) pool: Pool,
    pub(crate) sql: Sql,
    /// Bumped after every local commit and every notification.
    pub(crate) wake: watch::Sender<u64>,
    /// Per entity (`type\0id`), a seq_no known to be stored: events are never
    /// deleted, so an append expecting at most this seq_no needs no check that
    /// its predecessor exists (see the writer's fast path).
    known: Mutex<HashMap<String, u64>>,
}

/// Entries of [`Shared::known`] before it is cleared.
const MAX_KNOWN: usize = 1_000_000;

fn known_key(type_name: &str, id: &str) -> String {
    // NUL cannot occur in either (refused by `validate`): the key is unambiguous.
    format!("{type_name}\0{id}")
}

impl Shared {
    /// Records that `seq_no` of the entity is stored.
    pub(crate) fn learn(&self, type_name: &str, id: &str, seq_no: SeqNo) {
        if seq_no == SeqNo::ZERO {
            return;
        }
        if let Ok(mut known) = self.known.lock() {
            if known.len() >= MAX_KNOWN {
                known.clear();
            }
            let entry = known.entry(known_key(type_name, id)).or_default();
            *entry = (*entry).max(seq_no.get());
        }
    }

    /// Whether the event `expected` of the entity is known to be stored (or
    /// is 0, i.e. no predecessor is needed).
    pub(crate) fn predecessor_known(&self, type_name: &str, id: &str, expected: SeqNo) -> bool {
        expected == SeqNo::ZERO
            || self.known.lock().is_ok_and(|known| {
                known
                    .get(&known_key(type_name, id))
                    .is_some_and(|stored| *stored >= expected.get())
            })
    }

    /// A pooled connection, with a typed error naming the server.
    pub(crate) async fn get(&self) -> Result<Object, PostgresError> {
        self.pool
            .get()
            .await
            .map_err(|e| PostgresError::connect(self.config.place(), e))
    }
}

struct Inner {
    shared: Arc<Shared>,
    writer: mpsc::Sender<AppendRequest>,
    link: Arc<writer::Link>,
    last_seq_nos: Lookups<i64>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    /// Starts the `LISTEN` task unless it runs; called on a live stream's
    /// first poll, inside a runtime (the stream may be made outside one).
    fn ensure_listener(&self) {
        if let Ok(mut listener) = self.listener.lock()
            && listener.as_ref().is_none_or(JoinHandle::is_finished)
        {
            *listener = Some(tokio::spawn(listener::run(Arc::clone(&self.shared))));
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut listener) = self.listener.lock()
            && let Some(task) = listener.take()
        {
            task.abort();
        }
    }
}

/// An [`EventLog`] on PostgreSQL.
///
/// - Appends of all entities are group-committed by one writer task: the
///   requests queued while a transaction runs are written together in the
///   next one (one round trip, one fsync), each with its own conflict check.
///   An append that comes alone (no other in flight) runs on the caller's
///   task instead, on the writer's connection, saving the hop to the writer.
/// - Positions are assigned under a transaction-scoped advisory lock held
///   until COMMIT, so they become visible in position order and a live
///   `events_by_type` never skips an event that commits late.
/// - Live streams wake on local commits, on `NOTIFY` from other processes,
///   and poll every `poll-interval` in case a notification is lost.
///
/// Cheap to clone; clones share the pool and the writer.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use eventsourced::{EventLog, SeqNo};
/// use eventsourced_postgres::{PostgresConfig, PostgresEventLog};
///
/// let config = PostgresConfig::from_url("postgres://postgres@127.0.0.1:5432/test")?;
/// let log = PostgresEventLog::new(config).await?;
/// log.setup().await?;
/// let last = log.append("counter", "c-1", SeqNo::ZERO, &["+1".into()]).await?;
/// assert_eq!(last, SeqNo::new(1));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresEventLog {
    inner: Arc<Inner>,
}

impl fmt::Debug for PostgresEventLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresEventLog")
            .field("config", &self.inner.shared.config)
            .field("table", &self.inner.shared.tables.events())
            .finish_non_exhaustive()
    }
}

impl PostgresEventLog {
    /// Validates `config`, connects (failing fast with a typed error when the
    /// server is unreachable or refuses the login) and starts the writer task
    /// on the current tokio runtime. Call [`setup`](Self::setup) once to
    /// create the tables.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use eventsourced_postgres::{PostgresConfig, PostgresError, PostgresEventLog};
    ///
    /// # let url = std::env::var("DATABASE_URL")
    /// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    /// let mut config = PostgresConfig::from_url(&url)?;
    /// # config.pool_size = 2;
    /// config.schema = "doc_log_new".to_owned();
    /// let log = PostgresEventLog::new(config.clone()).await?;
    /// assert_eq!(log.config(), &config);
    ///
    /// config.port = 1; // nothing listens there
    /// let refused = PostgresEventLog::new(config).await;
    /// assert!(matches!(refused, Err(PostgresError::Connect { .. })));
    /// # Ok(()) }
    /// ```
    pub async fn new(config: PostgresConfig) -> Result<Self, PostgresError> {
        let tables = config.validate()?;
        let (pool, writer_pool) = config.log_pools()?;
        let sql = Sql {
            begin_append: tables.begin_append_sql(),
            append: tables.append_sql(),
            append_fast: tables.append_fast_sql(),
            events_by_id: tables.events_by_id_sql(),
            events_by_type: tables.events_by_type_sql(),
        };
        let (wake, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            config,
            tables,
            pool,
            sql,
            wake,
            known: Mutex::new(HashMap::new()),
        });
        // Fail fast, and open the whole pool now rather than during the
        // first burst of work (a new PostgreSQL connection forks a backend).
        warm(&shared.pool, &shared.config).await?;
        // The writer's first connection; its second is opened only if needed.
        let first = writer::session(&shared, &writer_pool).await?;
        let (writer, link) = writer::start(&shared, writer_pool, first);
        let query = Arc::new(KeyQuery {
            pool: shared.pool.clone(),
            sql: shared.tables.last_seq_nos_sql(),
            timeout: shared.config.statement_timeout,
            table: shared.tables.events(),
            place: shared.config.place(),
            operation: "read the last seq_no",
        });
        let last_seq_nos = Lookups::new(move |keys| {
            let query = Arc::clone(&query);
            async move {
                let rows = query.rows(keys).await?;
                rows.iter()
                    .map(|row| {
                        row.try_get::<_, i64>(0)
                            .map_err(|e| PostgresError::query(query.operation, &query.table, e))
                    })
                    .collect()
            }
        });
        Ok(PostgresEventLog {
            inner: Arc::new(Inner {
                shared,
                writer,
                link,
                last_seq_nos,
                listener: Mutex::new(None),
            }),
        })
    }

    /// Creates the schema, the event table and its indexes if they do not
    /// exist. Safe to run concurrently and repeatedly.
    ///
    /// An existing table of the configured name is kept only if it has the
    /// columns and keys the log relies on, checked in the catalog; otherwise
    /// this returns [`PostgresError::IncompatibleTable`] listing what
    /// differs, and changes nothing. (Without the primary key, a stale append
    /// would write a second event with the same seq_no and succeed.)
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use eventsourced::{EventLog, SeqNo};
    /// use eventsourced_postgres::{PostgresConfig, PostgresEventLog};
    ///
    /// # let url = std::env::var("DATABASE_URL")
    /// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    /// let mut config = PostgresConfig::from_url(&url)?;
    /// # config.pool_size = 2;
    /// config.schema = "doc_log_setup".to_owned();
    /// let log = PostgresEventLog::new(config).await?;
    /// log.setup().await?;
    /// log.setup().await?; // idempotent
    /// let last = log.append("counter", "c-1", SeqNo::ZERO, &["+1".into()]).await?;
    /// assert_eq!(last, SeqNo::new(1));
    /// # log.pool().get().await?.batch_execute("DROP SCHEMA doc_log_setup CASCADE").await?;
    /// # Ok(()) }
    /// ```
    pub async fn setup(&self) -> Result<(), PostgresError> {
        let shared = &self.inner.shared;
        setup_events(shared.get().await?, &shared.tables).await
    }

    /// The connection pool, to run queries in the same database (e.g. a
    /// projection's read model).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use eventsourced::{EventLog, SeqNo};
    /// use eventsourced_postgres::{PostgresConfig, PostgresEventLog};
    ///
    /// # let url = std::env::var("DATABASE_URL")
    /// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    /// let mut config = PostgresConfig::from_url(&url)?;
    /// # config.pool_size = 2;
    /// config.schema = "doc_log_pool".to_owned();
    /// let log = PostgresEventLog::new(config).await?;
    /// log.setup().await?;
    /// log.append("counter", "c-1", SeqNo::ZERO, &["+1".into(), "+2".into()]).await?;
    /// let client = log.pool().get().await?;
    /// let sql = format!("SELECT count(*) FROM {}", log.tables().events());
    /// let count: i64 = client.query_one(&sql, &[]).await?.get(0);
    /// assert_eq!(count, 2);
    /// # drop(client);
    /// # log.pool().get().await?.batch_execute("DROP SCHEMA doc_log_pool CASCADE").await?;
    /// # Ok(()) }
    /// ```
    pub fn pool(&self) -> &Pool {
        &self.inner.shared.pool
    }

    /// The validated schema and table names.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use eventsourced_postgres::{PostgresConfig, PostgresEventLog};
    ///
    /// # let url = std::env::var("DATABASE_URL")
    /// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    /// let mut config = PostgresConfig::from_url(&url)?;
    /// # config.pool_size = 2;
    /// config.schema = "doc_log_tables".to_owned();
    /// config.events_table = "orders".to_owned();
    /// let log = PostgresEventLog::new(config).await?;
    /// assert_eq!(log.tables().events(), r#""doc_log_tables"."orders""#);
    /// # Ok(()) }
    /// ```
    pub fn tables(&self) -> &Tables {
        &self.inner.shared.tables
    }

    /// The config this log was made with.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use eventsourced_postgres::{PostgresConfig, PostgresEventLog};
    ///
    /// # let url = std::env::var("DATABASE_URL")
    /// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    /// let mut config = PostgresConfig::from_url(&url)?;
    /// # config.pool_size = 2;
    /// config.schema = "doc_log_config".to_owned();
    /// config.max_batch = 64;
    /// let log = PostgresEventLog::new(config).await?;
    /// assert_eq!(log.config().max_batch, 64);
    /// assert_eq!(log.config().schema, "doc_log_config");
    /// # Ok(()) }
    /// ```
    pub fn config(&self) -> &PostgresConfig {
        &self.inner.shared.config
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    async fn read_last_seq_no(&self, type_name: &str, id: &str) -> Result<SeqNo, EventLogError> {
        let last = self
            .inner
            .last_seq_nos
            .get(type_name, id)
            .await
            .map_err(|e| EventLogError::backend("postgres", "read the last seq_no", e))?;
        let last = SeqNo::from_i64(last)
            .ok_or_else(|| corrupt(self.shared(), type_name, id, "a negative seq_no"))?;
        self.shared().learn(type_name, id, last);
        Ok(last)
    }
}

/// Opens every connection of `pool` (a typed error if one cannot be made).
pub(crate) async fn warm(pool: &Pool, config: &PostgresConfig) -> Result<(), PostgresError> {
    let first = pool
        .get()
        .await
        .map_err(|e| PostgresError::connect(config.place(), e))?;
    let rest = futures::future::try_join_all((1..pool.status().max_size).map(|_| pool.get()))
        .await
        .map_err(|e| PostgresError::connect(config.place(), e))?;
    drop((first, rest));
    Ok(())
}

/// Runs `sql` in one transaction, serialized with other `setup` runs by an
/// advisory lock so concurrent setups do not race on the catalog, and then
/// refuses the table if it is not of `shape` ([`crate::shape`]).
pub(crate) async fn setup(
    mut client: Object,
    lock_key: i64,
    sql: &str,
    shape: &shape::Shape,
) -> Result<(), PostgresError> {
    let setup_error = |source| PostgresError::Setup {
        table: shape.table.clone(),
        source,
    };
    let transaction = client.transaction().await.map_err(setup_error)?;
    transaction
        .batch_execute(&format!("SELECT pg_advisory_xact_lock({lock_key}); {sql}"))
        .await
        .map_err(setup_error)?;
    shape::check(&transaction, shape).await?;
    transaction.commit().await.map_err(setup_error)
}

/// [`setup`] for the event log: creates what is missing, then, in the same
/// transaction and under the same lock, refuses an existing event or position
/// table that differs from what it creates ([`crate::shape`]), and gives a new
/// position table its one row. The check runs once here, so the append path
/// can rely on the keys without a query of its own.
async fn setup_events(mut client: Object, tables: &Tables) -> Result<(), PostgresError> {
    let table = tables.events();
    let setup_error = |source| PostgresError::Setup {
        table: table.clone(),
        source,
    };
    let transaction = client.transaction().await.map_err(setup_error)?;
    transaction
        .batch_execute(&format!(
            "SELECT pg_advisory_xact_lock({}); {}",
            tables.setup_lock_key(),
            tables.setup_events_sql()
        ))
        .await
        .map_err(setup_error)?;
    for shape in [tables.events_shape(), tables.positions_shape()] {
        shape::check(&transaction, &shape).await?;
    }
    transaction
        .batch_execute(&tables.seed_positions_sql())
        .await
        .map_err(setup_error)?;
    // The key on `only_row` allows a second row whose `only_row` is false
    // where the CHECK is missing; the append statements update every row.
    let rows: i64 = transaction
        .query_one(&format!("SELECT count(*) FROM {}", tables.positions()), &[])
        .await
        .map_err(setup_error)?
        .get(0);
    if rows != 1 {
        return Err(PostgresError::IncompatibleTable {
            table: tables.positions(),
            differences: vec![format!(
                "it holds {rows} rows; the log keeps exactly one (only_row = true)"
            )],
        });
    }
    transaction.commit().await.map_err(setup_error)
}

fn read_error(operation: &'static str, error: PostgresError) -> EventLogError {
    EventLogError::backend("postgres", operation, error)
}

/// A seq_no read from the events table: 1 or more.
fn stored_seq_no(seq_no: Option<i64>) -> Result<SeqNo, String> {
    match seq_no {
        None => Err("a NULL seq_no".to_owned()),
        Some(n) if n < 1 => Err(format!("seq_no {n}; seq_nos start at 1")),
        Some(n) => SeqNo::from_i64(n).ok_or_else(|| format!("seq_no {n}")),
    }
}

fn corrupt(shared: &Shared, type_name: &str, id: &str, reason: &str) -> EventLogError {
    EventLogError::Corrupt {
        backend: "postgres",
        location: format!(
            "table {}, entity {type_name}/{id:?}",
            shared.tables.events()
        ),
        reason: reason.to_owned(),
    }
}

/// The core's id rules plus PostgreSQL's: no NUL characters (TEXT cannot hold
/// them) and a length that fits the primary key index.
fn validate(type_name: &str, id: &str) -> Result<(), EventLogError> {
    validate_id(type_name, id)?;
    // The type name's problem, reported with the id that came with it.
    validate_type(type_name).map_err(|error| match error {
        EventLogError::InvalidId { reason, .. } => EventLogError::InvalidId {
            id: id.to_owned(),
            reason,
        },
        other => other,
    })?;
    let refuse = |reason: String| EventLogError::InvalidId {
        id: id.to_owned(),
        reason,
    };
    if id.contains('\0') {
        return Err(refuse(
            "PostgreSQL text cannot hold NUL characters (\\0) in ids".to_owned(),
        ));
    }
    if id.len() > MAX_ID_LEN {
        return Err(refuse(format!(
            "ids are limited to {MAX_ID_LEN} bytes in the PostgreSQL log"
        )));
    }
    Ok(())
}

/// The type-name rules of [`validate`] alone, for `events_by_type`, which has
/// no id: the core has no type-name variant, so, as the NATS backend does, it
/// is an `InvalidId` with an empty id (never an invented one) whose reason
/// names the type name and what is wrong with it.
fn validate_type(type_name: &str) -> Result<(), EventLogError> {
    let refuse = |reason: String| EventLogError::InvalidId {
        id: String::new(),
        reason,
    };
    if type_name.is_empty() {
        return Err(refuse("the entity type name is empty".to_owned()));
    }
    if type_name.contains('\0') {
        return Err(refuse(format!(
            "the entity type name {type_name:?} contains a NUL character (\\0), which \
             PostgreSQL text cannot hold"
        )));
    }
    if type_name.len() > MAX_TYPE_NAME_LEN {
        return Err(refuse(format!(
            "the entity type name is {} bytes long; the PostgreSQL log allows at most \
             {MAX_TYPE_NAME_LEN}",
            type_name.len()
        )));
    }
    Ok(())
}

/// Ends a stream after its first error.
fn until_error<T, S>(stream: S) -> impl Stream<Item = Result<T, EventLogError>> + Send + 'static
where
    S: Stream<Item = Result<T, EventLogError>> + Send + 'static,
    T: Send + 'static,
{
    stream.scan(false, |failed, item| {
        let next = if *failed {
            None
        } else {
            *failed = item.is_err();
            Some(item)
        };
        futures::future::ready(next)
    })
}

impl EventLog for PostgresEventLog {
    async fn append(
        &self,
        type_name: &str,
        id: &str,
        expected_last: SeqNo,
        events: &[Bytes],
    ) -> Result<SeqNo, EventLogError> {
        validate(type_name, id)?;
        if events.is_empty() {
            let last = self.read_last_seq_no(type_name, id).await?;
            return if last == expected_last {
                Ok(last)
            } else {
                Err(EventLogError::Conflict {
                    type_name: type_name.to_owned(),
                    id: id.to_owned(),
                    expected: expected_last,
                    actual: last,
                })
            };
        }
        let fits = expected_last
            .get()
            .checked_add(events.len() as u64)
            .and_then(|last| SeqNo::new(last).to_i64())
            .is_some();
        if !fits {
            return Err(EventLogError::backend(
                "postgres",
                "append",
                PostgresError::OutOfRange {
                    what: "the new last seq_no",
                    value: format!("{expected_last} + {}", events.len()),
                },
            ));
        }
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest {
            type_name: type_name.to_owned(),
            id: id.to_owned(),
            expected: expected_last,
            events: events.to_vec(),
            reply,
        };
        let stopped = || EventLogError::backend("postgres", "append", PostgresError::Stopped);
        let writer = &self.inner.writer;
        let (_in_flight, others) = self.inner.link.enter();
        let busy = others > 0 || writer.capacity() < writer.max_capacity();
        let alone = writer::append_alone(&self.inner.shared, &self.inner.link, busy, request);
        if let Some(request) = alone.await {
            writer.send(request).await.map_err(|_| stopped())?;
        }
        answer.await.map_err(|_| stopped())?
    }

    async fn last_seq_no(&self, type_name: &str, id: &str) -> Result<SeqNo, EventLogError> {
        validate(type_name, id)?;
        self.read_last_seq_no(type_name, id).await
    }

    fn events_by_id(
        &self,
        type_name: &str,
        id: &str,
        from: SeqNo,
    ) -> impl Stream<Item = Result<(SeqNo, Bytes), EventLogError>> + Send + 'static + use<> {
        let shared = Arc::clone(self.shared());
        let (type_name, id) = (type_name.to_owned(), id.to_owned());
        let rows = async move {
            validate(&type_name, &id)?;
            let op = "read events by id";
            // Stored seq_nos are BIGINTs: none is at or above a `from` beyond
            // i64::MAX (clamping it to i64::MAX would yield one below `from`).
            let Some(from) = from.to_i64() else {
                return Ok(stream::empty().left_stream());
            };
            let table = shared.tables.events();
            let place = shared.config.place();
            let target = pooled::Target {
                pool: &shared.pool,
                place: &place,
                timeout: shared.config.statement_timeout,
                operation: op,
                table: &table,
            };
            let (client, rows) = pooled::run(&target, |client| {
                let (shared, type_name, id) = (Arc::clone(&shared), type_name.clone(), id.clone());
                Box::pin(async move {
                    let statement = client.prepare_cached(&shared.sql.events_by_id).await?;
                    let params: [&(dyn ToSql + Sync); 3] = [&type_name, &id, &from];
                    client.query_raw(&statement, params).await
                })
            })
            .await
            .map_err(|e| read_error(op, e))?;
            // The connection stays checked out until the stream ends.
            Ok::<_, EventLogError>(
                rows.map(move |row| {
                    let _keep = &client;
                    let row =
                        row.map_err(|e| read_error(op, PostgresError::query(op, &table, e)))?;
                    let seq_no: Option<i64> = row
                        .try_get(0)
                        .map_err(|e| read_error(op, PostgresError::query(op, &table, e)))?;
                    let event: Option<&[u8]> = row
                        .try_get(1)
                        .map_err(|e| read_error(op, PostgresError::query(op, &table, e)))?;
                    let seq_no = stored_seq_no(seq_no)
                        .map_err(|reason| corrupt(&shared, &type_name, &id, &reason))?;
                    let event = event.ok_or_else(|| {
                        let reason = format!("the event at seq_no {seq_no} is NULL");
                        corrupt(&shared, &type_name, &id, &reason)
                    })?;
                    Ok((seq_no, Bytes::copy_from_slice(event)))
                })
                .right_stream(),
            )
        };
        until_error(stream::once(rows).try_flatten())
    }

    fn events_by_type(
        &self,
        type_name: &str,
        from: Position,
    ) -> impl Stream<Item = Result<EventEnvelope, EventLogError>> + Send + 'static + use<> {
        let follower = Follower {
            inner: Arc::clone(&self.inner),
            wake: self.inner.shared.wake.subscribe(),
            type_name: type_name.to_owned(),
            // From the start: rows at positions below 1 (written behind the
            // log's back) come up as corrupt instead of being passed over.
            next: if from == Position::START {
                Some(i64::MIN)
            } else {
                from.to_i64()
            },
            buffer: VecDeque::new(),
            checked: false,
        };
        until_error(stream::try_unfold(follower, Follower::next))
    }
}

/// The state of a live `events_by_type` stream.
struct Follower {
    inner: Arc<Inner>,
    wake: watch::Receiver<u64>,
    type_name: String,
    /// The next position to read; `None` when no storable position can
    /// follow (`from` was beyond i64::MAX, or an event at i64::MAX was
    /// read): the stream then waits without querying, rather than read
    /// i64::MAX again and yield it twice or below `from`.
    next: Option<i64>,
    buffer: VecDeque<EventEnvelope>,
    checked: bool,
}

impl Follower {
    async fn next(mut self) -> Result<Option<(EventEnvelope, Self)>, EventLogError> {
        if !self.checked {
            validate_type(&self.type_name)?;
            self.checked = true;
            self.inner.ensure_listener();
        }
        loop {
            if let Some(envelope) = self.buffer.pop_front() {
                return Ok(Some((envelope, self)));
            }
            // Mark what we have seen before reading, so a commit that lands
            // after the read wakes the wait below.
            self.wake.borrow_and_update();
            let fetched = self.fetch().await?;
            if fetched {
                continue;
            }
            let poll = self.inner.shared.config.poll_interval;
            let _ = tokio::time::timeout(poll, self.wake.changed()).await;
        }
    }

    /// Reads the next page; whether it held anything.
    async fn fetch(&mut self) -> Result<bool, EventLogError> {
        let Some(next) = self.next else {
            return Ok(false);
        };
        let shared = &self.inner.shared;
        let op = "read events by type";
        let table = shared.tables.events();
        let limit = i64::from(shared.config.fetch_size);
        let place = shared.config.place();
        let target = pooled::Target {
            pool: &shared.pool,
            place: &place,
            timeout: shared.config.statement_timeout,
            operation: op,
            table: &table,
        };
        let (client, rows): (_, Vec<Row>) = pooled::run(&target, |client| {
            let (shared, type_name) = (Arc::clone(shared), self.type_name.clone());
            Box::pin(async move {
                let statement = client.prepare_cached(&shared.sql.events_by_type).await?;
                client.query(&statement, &[&type_name, &next, &limit]).await
            })
        })
        .await
        .map_err(|e| read_error(op, e))?;
        drop(client);
        for row in &rows {
            let get = |e| read_error(op, PostgresError::query(op, &table, e));
            // The query reads positions in order and never a NULL one.
            let position: i64 = row.try_get(0).map_err(get)?;
            let id: Option<String> = row.try_get(1).map_err(get)?;
            let seq_no: Option<i64> = row.try_get(2).map_err(get)?;
            let event: Option<&[u8]> = row.try_get(3).map_err(get)?;
            let at = |reason: String| {
                let id = id.as_deref().unwrap_or("<NULL>");
                corrupt(
                    shared,
                    &self.type_name,
                    id,
                    &format!("position {position}: {reason}"),
                )
            };
            let pos = Position::from_i64(position)
                .filter(|p| *p > Position::START)
                .ok_or_else(|| at("positions start at 1".to_owned()))?;
            let seq = stored_seq_no(seq_no).map_err(at)?;
            let (Some(id), Some(event)) = (id.clone(), event) else {
                return Err(at("the id or the event is NULL".to_owned()));
            };
            self.next = position.checked_add(1);
            self.buffer.push_back(EventEnvelope {
                position: pos,
                id,
                seq_no: seq,
                event: Bytes::copy_from_slice(event),
            });
        }
        Ok(!rows.is_empty())
    }
}
