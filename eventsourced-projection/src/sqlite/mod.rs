//! SQLite: offsets and exactly-once handlers (cargo feature `sqlite`).
//!
//! SQLite work is blocking, so it runs on tokio's blocking threads and the
//! handler is a plain (non-async) [`SqliteHandler`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! # let dir = tempfile::tempdir().unwrap();
//! use eventsourced::Position;
//! use eventsourced_projection::{OffsetStore, sqlite::SqliteOffsetStore};
//!
//! let store = SqliteOffsetStore::open(dir.path().join("read.db")).await.unwrap();
//! store.save("totals", Position::new(4)).await.unwrap();
//! assert_eq!(store.load("totals").await.unwrap(), Some(Position::new(4)));
//! # }
//! ```

use crate::{
    Batch, BatchError, Delivery, HandlerError, OffsetStore, ProjectedEvent, ProjectionError,
    ProjectionSink,
};
use eventsourced::Position;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

mod lease;

pub use lease::SqliteLease;
pub use rusqlite;

const BACKEND: &str = "sqlite";

/// How long a statement waits for another connection's write lock before it
/// fails (and the projection restarts): short enough that `stop()` is not
/// held up for long by a lock someone else holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether a handler's error is SQLite failing, not the handler refusing the
/// event: a full disk, an I/O error, a lock held past the busy timeout, a
/// read-only file. The batch is then tried again after a restart; the error
/// strategy, which may skip the event, does not apply.
fn storage_failed(error: &HandlerError) -> bool {
    use rusqlite::ErrorCode;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error.as_error());
    while let Some(error) = next {
        if let Some(code) = error
            .downcast_ref::<rusqlite::Error>()
            .and_then(rusqlite::Error::sqlite_error_code)
            && matches!(
                code,
                ErrorCode::DiskFull
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::ReadOnly
                    | ErrorCode::CannotOpen
                    | ErrorCode::OutOfMemory
            )
        {
            return true;
        }
        next = error.source();
    }
    false
}

/// Set when the future of a batch is dropped (a stop gave up waiting): the
/// blocking transaction, which goes on regardless, then rolls back instead
/// of committing behind the stopped projection's back.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn sql_err(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> ProjectionError {
    move |e| ProjectionError::offset_store(BACKEND, operation, e)
}

fn position_param(position: Position) -> Result<i64, ProjectionError> {
    position.to_i64().ok_or_else(|| {
        ProjectionError::offset_store(
            BACKEND,
            "store an offset",
            format!("position {position} does not fit an INTEGER"),
        )
    })
}

fn load_offset(conn: &Connection, name: &str) -> Result<Option<Position>, ProjectionError> {
    let n: Option<i64> = conn
        .query_row(
            "SELECT position FROM projection_offsets WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql_err("load an offset"))?;
    n.map(|n| {
        Position::from_i64(n).ok_or_else(|| {
            ProjectionError::offset_store(
                BACKEND,
                "load an offset",
                format!("stored offset {n} is negative"),
            )
        })
    })
    .transpose()
}

/// Offsets in the table `projection_offsets` of a SQLite file (WAL mode), on a
/// connection of their own.
///
/// On its own (as an [`OffsetStore`]) it is at least once; with
/// [`exactly_once`](Self::exactly_once) the handler writes its read model in
/// the transaction that stores the offset, in the same file. The file may be
/// the one of the SQLite event log (`eventsourced-sqlite`): open the log
/// first, since it refuses to adopt a file it did not create.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let dir = tempfile::tempdir().unwrap();
/// use eventsourced::Position;
/// use eventsourced_projection::{OffsetStore, sqlite::SqliteOffsetStore};
///
/// let store = SqliteOffsetStore::open(dir.path().join("read.db")).await.unwrap();
/// assert_eq!(store.load("totals").await.unwrap(), None);
/// store.save("totals", Position::new(9)).await.unwrap();
/// store.delete("totals").await.unwrap();
/// assert_eq!(store.load("totals").await.unwrap(), None);
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteOffsetStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl fmt::Debug for SqliteOffsetStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteOffsetStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteOffsetStore {
    /// Opens (or creates) the file at `path` and the offsets table.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use eventsourced::Position;
    /// use eventsourced_projection::{OffsetStore, sqlite::SqliteOffsetStore};
    ///
    /// let path = dir.path().join("read.db");
    /// SqliteOffsetStore::open(&path).await.unwrap().save("totals", Position::new(2)).await.unwrap();
    /// // Opened again, the file still holds the offset.
    /// let store = SqliteOffsetStore::open(&path).await.unwrap();
    /// assert_eq!(store.load("totals").await.unwrap(), Some(Position::new(2)));
    /// # }
    /// ```
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, ProjectionError> {
        let path = path.as_ref().to_owned();
        let open_path = path.clone();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, ProjectionError> {
            let conn = Connection::open(&open_path).map_err(sql_err("open the file"))?;
            conn.busy_timeout(BUSY_TIMEOUT)
                .map_err(sql_err("set the busy timeout"))?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(sql_err("enable WAL"))?;
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS projection_offsets (
                     name TEXT PRIMARY KEY, position INTEGER NOT NULL)",
            )
            .map_err(sql_err("create the offsets table"))?;
            Ok(conn)
        })
        .await
        .map_err(|e| ProjectionError::offset_store(BACKEND, "open the file", e))??;
        Ok(SqliteOffsetStore {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// The file.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use eventsourced_projection::sqlite::SqliteOffsetStore;
    ///
    /// let store = SqliteOffsetStore::open(dir.path().join("read.db")).await.unwrap();
    /// assert_eq!(store.path(), dir.path().join("read.db"));
    /// # }
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A sink where `handler` writes in the offset's transaction: exactly once.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use eventsourced_projection::{Delivery, ProjectionSink, sqlite::{SqliteHandler, SqliteOffsetStore}};
    /// # use eventsourced_projection::{HandlerError, ProjectedEvent, sqlite::rusqlite::Transaction};
    /// # struct Totals;
    /// # impl SqliteHandler for Totals {
    /// #     type Event = i64;
    /// #     fn handle(&mut self, _: &Transaction<'_>, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> { Ok(()) }
    /// # }
    ///
    /// let store = SqliteOffsetStore::open(dir.path().join("read.db")).await.unwrap();
    /// let sink = store.exactly_once(Totals); // Totals: a SqliteHandler
    /// assert_eq!(sink.delivery(), Delivery::ExactlyOnce);
    /// # }
    /// ```
    pub fn exactly_once<H: SqliteHandler>(self, handler: H) -> SqliteExactlyOnce<H> {
        SqliteExactlyOnce {
            store: self,
            handler: Arc::new(Mutex::new(handler)),
            expected: None,
        }
    }

    /// Runs `f` with the store's connection on a blocking thread, e.g. to
    /// create or read the read model.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use eventsourced_projection::sqlite::SqliteOffsetStore;
    ///
    /// let store = SqliteOffsetStore::open(dir.path().join("read.db")).await.unwrap();
    /// store.with_connection(|c| c.execute_batch("CREATE TABLE totals (id TEXT PRIMARY KEY, total INTEGER)")).await.unwrap();
    /// let tables: i64 = store
    ///     .with_connection(|c| c.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'totals'", [], |r| r.get(0)))
    ///     .await
    ///     .unwrap();
    /// assert_eq!(tables, 1);
    /// # }
    /// ```
    pub async fn with_connection<R, F>(&self, f: F) -> Result<R, ProjectionError>
    where
        F: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&conn)))
            .await
            .map_err(|e| ProjectionError::offset_store(BACKEND, "run a query", e))?
            .map_err(sql_err("run a query"))
    }

    async fn blocking<R, F>(&self, operation: &'static str, f: F) -> Result<R, ProjectionError>
    where
        F: FnOnce(&mut Connection) -> Result<R, ProjectionError> + Send + 'static,
        R: Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&conn)))
            .await
            .map_err(|e| ProjectionError::offset_store(BACKEND, operation, e))?
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking handler leaves an open transaction that rolls back when
    // dropped: the connection stays usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl OffsetStore for SqliteOffsetStore {
    async fn load(&self, name: &str) -> Result<Option<Position>, ProjectionError> {
        let name = name.to_owned();
        self.blocking("load an offset", move |c| load_offset(c, &name))
            .await
    }

    async fn save(&self, name: &str, offset: Position) -> Result<(), ProjectionError> {
        let name = name.to_owned();
        let offset = position_param(offset)?;
        self.blocking("store an offset", move |c| {
            c.execute(
                "INSERT INTO projection_offsets (name, position) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                params![name, offset],
            )
            .map_err(sql_err("store an offset"))?;
            Ok(())
        })
        .await
    }

    async fn delete(&self, name: &str) -> Result<(), ProjectionError> {
        let name = name.to_owned();
        self.blocking("delete an offset", move |c| {
            c.execute(
                "DELETE FROM projection_offsets WHERE name = ?1",
                params![name],
            )
            .map_err(sql_err("delete an offset"))?;
            Ok(())
        })
        .await
    }
}

/// A handler that writes its read model in the SQLite transaction that stores
/// the projection's offset: exactly once with
/// [`SqliteOffsetStore::exactly_once`]. It runs on a blocking thread.
///
/// ```
/// use eventsourced_projection::{HandlerError, ProjectedEvent};
/// use eventsourced_projection::sqlite::{SqliteHandler, rusqlite::{Transaction, params}};
///
/// struct Totals;
///
/// impl SqliteHandler for Totals {
///     type Event = i64;
///     fn handle(&mut self, tx: &Transaction<'_>, e: &ProjectedEvent<i64>) -> Result<(), HandlerError> {
///         tx.execute(
///             "INSERT INTO totals (id, total) VALUES (?1, ?2)
///              ON CONFLICT (id) DO UPDATE SET total = total + excluded.total",
///             params![e.id, e.event],
///         )?;
///         Ok(())
///     }
/// }
/// ```
pub trait SqliteHandler: Send + 'static {
    /// The decoded event type.
    type Event: Send + Sync + 'static;

    /// Handles one event, writing with `tx`.
    fn handle(
        &mut self,
        tx: &Transaction<'_>,
        event: &ProjectedEvent<Self::Event>,
    ) -> Result<(), HandlerError>;

    /// Clears the read model before a rebuild, in the transaction that deletes
    /// the offset; does nothing by default.
    fn reset(&mut self, tx: &Transaction<'_>) -> Result<(), HandlerError> {
        let _ = tx;
        Ok(())
    }
}

/// A [`SqliteHandler`] with a [`SqliteOffsetStore`]: each batch's writes and
/// its offset commit in one transaction, with the same fenced offset update as
/// the PostgreSQL sink ([`ProjectionError::OffsetConflict`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # use eventsourced::{Binarize, EventLog, MemoryEventLog, SeqNo, SerdeJson};
/// # use eventsourced_projection::{HandlerError, ProjectedEvent, Projection};
/// # use eventsourced_projection::sqlite::rusqlite::{Transaction, params};
/// # use std::time::Duration;
/// use eventsourced_projection::sqlite::{SqliteHandler, SqliteOffsetStore};
/// # struct Totals;
/// # impl SqliteHandler for Totals {
/// #     type Event = i64;
/// #     fn handle(&mut self, tx: &Transaction<'_>, e: &ProjectedEvent<i64>) -> Result<(), HandlerError> {
/// #         tx.execute(
/// #             "INSERT INTO totals VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET total = total + excluded.total",
/// #             params![e.id, e.event],
/// #         )?;
/// #         Ok(())
/// #     }
/// # }
/// # let log = MemoryEventLog::default();
/// # let events = [SerdeJson.encode(&2i64).unwrap(), SerdeJson.encode(&3i64).unwrap()];
/// # log.append("counter", "a", SeqNo::ZERO, &events).await.unwrap();
/// # let dir = tempfile::tempdir().unwrap();
///
/// // Totals adds each event to its entity's row in `totals`; "a" has events 2 and 3.
/// let store = SqliteOffsetStore::open(dir.path().join("read.db")).await.unwrap();
/// store.with_connection(|c| c.execute_batch("CREATE TABLE totals (id TEXT PRIMARY KEY, total INTEGER)")).await.unwrap();
/// let sink = store.clone().exactly_once(Totals);
/// let projection = Projection::builder("sqlite-totals-doc", "counter", log, SerdeJson, sink).build().unwrap();
/// projection.run().await;
/// projection.wait_for(|s| s.handled == 2, Duration::from_secs(10)).await.expect("handled");
/// projection.stop().await;
/// let total: i64 = store
///     .with_connection(|c| c.query_row("SELECT total FROM totals WHERE id = 'a'", [], |r| r.get(0)))
///     .await
///     .unwrap();
/// assert_eq!(total, 5);
/// # }
/// ```
pub struct SqliteExactlyOnce<H> {
    store: SqliteOffsetStore,
    handler: Arc<Mutex<H>>,
    expected: Option<Position>,
}

impl<H> fmt::Debug for SqliteExactlyOnce<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteExactlyOnce")
            .field("store", &self.store)
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

fn store_offset_checked(
    tx: &Transaction<'_>,
    name: &str,
    expected: Option<Position>,
    offset: Position,
) -> Result<(), ProjectionError> {
    let new = position_param(offset)?;
    let rows = match expected {
        None => tx.execute(
            "INSERT INTO projection_offsets (name, position) VALUES (?1, ?2)
             ON CONFLICT (name) DO NOTHING",
            params![name, new],
        ),
        Some(expected) => tx.execute(
            "UPDATE projection_offsets SET position = ?2 WHERE name = ?1 AND position = ?3",
            params![name, new, position_param(expected)?],
        ),
    }
    .map_err(sql_err("store an offset"))?;
    if rows == 1 {
        return Ok(());
    }
    Err(ProjectionError::OffsetConflict {
        name: name.to_owned(),
        expected,
        actual: load_offset(tx, name)?,
    })
}

impl<H: SqliteHandler> ProjectionSink for SqliteExactlyOnce<H> {
    type Event = H::Event;

    fn delivery(&self) -> Delivery {
        Delivery::ExactlyOnce
    }

    async fn load_offset(&mut self, name: &str) -> Result<Option<Position>, ProjectionError> {
        let offset = self.store.load(name).await?;
        self.expected = offset;
        Ok(offset)
    }

    async fn handle_batch(
        &mut self,
        name: &str,
        batch: Batch<Self::Event>,
    ) -> Result<(), BatchError> {
        let (conn, handler) = (self.store.conn.clone(), self.handler.clone());
        let (name, expected, offset) = (name.to_owned(), self.expected, batch.offset());
        let cancelled = Arc::new(AtomicBool::new(false));
        let guard = CancelOnDrop(cancelled.clone());
        let abandoned = || {
            BatchError::Store(ProjectionError::offset_store(
                BACKEND,
                "handle a batch",
                "the projection stopped waiting for the batch; rolled back",
            ))
        };
        let handled = tokio::task::spawn_blocking(move || -> Result<(), BatchError> {
            let mut conn = lock(&conn);
            let mut handler = lock(&handler);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_err("begin a transaction"))?;
            // Dropping the transaction rolls it back.
            for (index, event) in batch.events().iter().enumerate() {
                if cancelled.load(Ordering::SeqCst) {
                    return Err(abandoned());
                }
                if let Err(error) = handler.handle(&tx, event) {
                    if storage_failed(&error) {
                        return Err(BatchError::Store(ProjectionError::offset_store(
                            BACKEND,
                            "handle a batch",
                            format!(
                                "SQLite failed in the handler, so nothing of the batch is committed: {}",
                                crate::error::chain(error.as_error())
                            ),
                        )));
                    }
                    return Err(BatchError::Handler {
                        index,
                        error,
                        committed_before: false,
                    });
                }
            }
            store_offset_checked(&tx, &name, expected, offset)?;
            if cancelled.load(Ordering::SeqCst) {
                return Err(abandoned());
            }
            tx.commit().map_err(sql_err("commit"))?;
            Ok(())
        })
        .await;
        drop(guard);
        handled.map_err(|e| ProjectionError::offset_store(BACKEND, "handle a batch", e))??;
        self.expected = Some(offset);
        Ok(())
    }

    async fn reset(&mut self, name: &str) -> Result<(), ProjectionError> {
        let (conn, handler) = (self.store.conn.clone(), self.handler.clone());
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || -> Result<(), ProjectionError> {
            let mut conn = lock(&conn);
            let mut handler = lock(&handler);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_err("begin a transaction"))?;
            tx.execute(
                "DELETE FROM projection_offsets WHERE name = ?1",
                params![name],
            )
            .map_err(sql_err("delete an offset"))?;
            handler.reset(&tx).map_err(|e| ProjectionError::Reset {
                name: name.clone(),
                source: e.into_inner(),
            })?;
            tx.commit().map_err(sql_err("commit"))
        })
        .await
        .map_err(|e| ProjectionError::offset_store(BACKEND, "reset", e))??;
        self.expected = None;
        Ok(())
    }
}

/// Lag from a SQLite query that counts the events of a type after an offset,
/// run on the connection of a [`SqliteOffsetStore`] (whose file must hold the
/// event log's table, or `ATTACH` it).
///
/// The query gets the type name as `?1` and the offset as `?2` (`-1` for "no
/// offset") and returns one integer:
///
/// ```no_run
/// # async fn f(store: eventsourced_projection::sqlite::SqliteOffsetStore) {
/// use eventsourced_projection::sqlite::SqliteLag;
/// let lag = SqliteLag::with_query(&store, "SELECT count(*) FROM events WHERE type_name = ?1 AND position > ?2");
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteLag {
    conn: Arc<Mutex<Connection>>,
    query: Arc<str>,
}

impl fmt::Debug for SqliteLag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteLag")
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

impl SqliteLag {
    /// The query for the `events` table of `eventsourced-sqlite`'s log.
    ///
    /// ```
    /// use eventsourced_projection::sqlite::SqliteLag;
    ///
    /// assert!(SqliteLag::EVENT_LOG_QUERY.contains("FROM events"));
    /// ```
    pub const EVENT_LOG_QUERY: &'static str =
        "SELECT count(*) FROM events WHERE type_name = ?1 AND position > ?2";

    /// Lag from `query` on a read-only connection of its own to the file at
    /// `path`, e.g. the file of the SQLite event log with
    /// [`EVENT_LOG_QUERY`](Self::EVENT_LOG_QUERY).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # use eventsourced::{Binarize, EventLog, SeqNo, SerdeJson};
    /// # let e = SerdeJson.encode(&1i64).unwrap();
    /// use eventsourced_projection::{LagSource, sqlite::SqliteLag};
    ///
    /// let path = dir.path().join("events.db");
    /// let log = eventsourced_sqlite::SqliteEventLog::open(&path).unwrap();
    /// log.append("counter", "a", SeqNo::ZERO, &[e.clone(), e]).await.unwrap();
    /// let lag = SqliteLag::open(&path, SqliteLag::EVENT_LOG_QUERY).await.unwrap();
    /// assert_eq!(lag.events_after("counter", None).await.unwrap(), 2);
    /// # }
    /// ```
    pub async fn open(
        path: impl AsRef<Path>,
        query: impl Into<String>,
    ) -> Result<Self, ProjectionError> {
        let path = path.as_ref().to_owned();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, ProjectionError> {
            let conn = Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(sql_err("open the file for lag queries"))?;
            conn.busy_timeout(BUSY_TIMEOUT)
                .map_err(sql_err("set the busy timeout"))?;
            Ok(conn)
        })
        .await
        .map_err(|e| {
            ProjectionError::offset_store(BACKEND, "open the file for lag queries", e)
        })??;
        Ok(SqliteLag {
            conn: Arc::new(Mutex::new(conn)),
            query: query.into().into(),
        })
    }

    /// Lag from `query` on the connection of `store`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let dir = tempfile::tempdir().unwrap();
    /// use eventsourced::Position;
    /// use eventsourced_projection::{LagSource, sqlite::{SqliteLag, SqliteOffsetStore}};
    ///
    /// let store = SqliteOffsetStore::open(dir.path().join("read.db")).await.unwrap();
    /// // A stand-in for an events table: three events at positions 1, 2, 3.
    /// let query = "SELECT count(*) FROM (VALUES (1), (2), (3)) WHERE ?1 = 'counter' AND column1 > ?2";
    /// let lag = SqliteLag::with_query(&store, query);
    /// assert_eq!(lag.events_after("counter", Some(Position::new(1))).await.unwrap(), 2);
    /// # }
    /// ```
    pub fn with_query(store: &SqliteOffsetStore, query: impl Into<String>) -> Self {
        SqliteLag {
            conn: store.conn.clone(),
            query: query.into().into(),
        }
    }
}

impl crate::LagSource for SqliteLag {
    fn events_after(
        &self,
        type_name: &str,
        offset: Option<Position>,
    ) -> futures::future::BoxFuture<'_, Result<u64, eventsourced::event_log::BoxError>> {
        use futures::FutureExt;
        let (conn, query, type_name) =
            (self.conn.clone(), self.query.clone(), type_name.to_owned());
        async move {
            let offset = match offset {
                None => -1,
                Some(p) => p.to_i64().ok_or("the offset does not fit an INTEGER")?,
            };
            let n: i64 = tokio::task::spawn_blocking(move || {
                lock(&conn).query_row(&query, params![type_name, offset], |r| r.get(0))
            })
            .await??;
            Ok(u64::try_from(n)?)
        }
        .boxed()
    }
}
