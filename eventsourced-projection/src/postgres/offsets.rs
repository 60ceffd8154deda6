use super::validate_identifier;
use crate::{
    Batch, BatchError, Delivery, HandlerError, OffsetStore, ProjectedEvent, ProjectionError,
    ProjectionSink,
};
use deadpool_postgres::Pool;
use eventsourced::Position;
use std::{fmt, future::Future};
use tokio_postgres::{GenericClient, Transaction};

const BACKEND: &str = "postgres";

/// The error with the server's message (tokio-postgres alone says `db error`).
fn pg_err(operation: &'static str) -> impl FnOnce(tokio_postgres::Error) -> ProjectionError {
    move |e| ProjectionError::offset_store(BACKEND, operation, crate::error::chain(&e))
}

/// Whether a handler's error says that the batch's transaction is gone,
/// not that the handler refused an event: the connection was lost, or the
/// server aborted the transaction (shutdown, deadlock, serialization
/// failure). Trying the batch again is right; the error strategy, which may
/// skip the event or stop the projection, is not.
fn transaction_lost(error: &(dyn std::error::Error + 'static)) -> bool {
    use tokio_postgres::error::SqlState;
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(pg) = error.downcast_ref::<tokio_postgres::Error>()
            && (pg.is_closed()
                || pg.code().is_some_and(|code| {
                    code.code().starts_with("08")
                        || [
                            SqlState::ADMIN_SHUTDOWN,
                            SqlState::CRASH_SHUTDOWN,
                            SqlState::CANNOT_CONNECT_NOW,
                            SqlState::T_R_SERIALIZATION_FAILURE,
                            SqlState::T_R_DEADLOCK_DETECTED,
                        ]
                        .contains(code)
                }))
        {
            return true;
        }
        next = error.source();
    }
    false
}

fn position_param(position: Position) -> Result<i64, ProjectionError> {
    position.to_i64().ok_or_else(|| {
        ProjectionError::offset_store(
            BACKEND,
            "store an offset",
            format!("position {position} does not fit a bigint"),
        )
    })
}

fn position_column(n: i64) -> Result<Position, ProjectionError> {
    Position::from_i64(n).ok_or_else(|| {
        ProjectionError::offset_store(
            BACKEND,
            "load an offset",
            format!("stored offset {n} is negative"),
        )
    })
}

/// Offsets in a PostgreSQL table `<schema>.projection_offsets (name text
/// primary key, position bigint)`.
///
/// On its own (as an [`OffsetStore`] in an [`AtLeastOnce`](crate::AtLeastOnce)
/// sink) it is at least once; with [`exactly_once`](Self::exactly_once) the
/// handler writes in the transaction that stores the offset.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # use deadpool_postgres::{Manager, Pool};
/// # use eventsourced_projection::postgres::tokio_postgres::NoTls;
/// # let url = std::env::var("DATABASE_URL")
/// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
/// # let pool = Pool::builder(Manager::new(url.parse().unwrap(), NoTls)).max_size(2).build().unwrap();
/// # let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
/// # let schema = format!("doc_store_{}_{nanos}", std::process::id());
/// use eventsourced::Position;
/// use eventsourced_projection::{OffsetStore, postgres::PostgresOffsetStore};
///
/// let store = PostgresOffsetStore::new(pool.clone(), &schema).unwrap();
/// store.setup().await.unwrap();
/// store.save("totals", Position::new(5)).await.unwrap();
/// assert_eq!(store.load("totals").await.unwrap(), Some(Position::new(5)));
/// # pool.get().await.unwrap().batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.unwrap();
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresOffsetStore {
    pool: Pool,
    schema: String,
    table: String,
}

impl fmt::Debug for PostgresOffsetStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOffsetStore")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl PostgresOffsetStore {
    /// An offset store in `schema` (a plain identifier, e.g. `"public"`) using
    /// `pool`, e.g. the pool of the PostgreSQL event log. Call
    /// [`setup`](Self::setup) once to create the table.
    ///
    /// ```
    /// use deadpool_postgres::{Manager, Pool};
    /// use eventsourced_projection::postgres::{PostgresOffsetStore, tokio_postgres::NoTls};
    ///
    /// let config = "postgres://postgres@127.0.0.1:5432/test".parse().unwrap();
    /// let pool = Pool::builder(Manager::new(config, NoTls)).build().unwrap(); // connects lazily
    /// assert!(PostgresOffsetStore::new(pool.clone(), "read_models").is_ok());
    /// assert!(PostgresOffsetStore::new(pool, "read-models; --").is_err());
    /// ```
    pub fn new(pool: Pool, schema: &str) -> Result<Self, ProjectionError> {
        validate_identifier("schema", schema)?;
        Ok(PostgresOffsetStore {
            pool,
            schema: schema.to_owned(),
            table: format!("\"{schema}\".\"projection_offsets\""),
        })
    }

    /// An offset store in the schema of `log`, on its pool: read models can
    /// then live in the log's database. Call [`setup`](Self::setup) once.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use deadpool_postgres::{Manager, Pool};
    /// # use eventsourced_projection::postgres::tokio_postgres::NoTls;
    /// # let url = std::env::var("DATABASE_URL")
    /// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    /// # let pool = Pool::builder(Manager::new(url.parse().unwrap(), NoTls)).max_size(2).build().unwrap();
    /// # let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    /// # let schema = format!("doc_forlog_{}_{nanos}", std::process::id());
    /// # let mut config = eventsourced_postgres::PostgresConfig::from_url(&url).unwrap();
    /// # config.schema = schema.clone();
    /// # let log = eventsourced_postgres::PostgresEventLog::new(config).await.unwrap();
    /// # log.setup().await.unwrap();
    /// use eventsourced::Position;
    /// use eventsourced_projection::{OffsetStore, postgres::PostgresOffsetStore};
    ///
    /// // `log`: a PostgresEventLog with its tables in `schema`.
    /// let store = PostgresOffsetStore::for_log(&log).unwrap();
    /// store.setup().await.unwrap();
    /// store.save("totals", Position::new(1)).await.unwrap();
    /// let client = log.pool().get().await.unwrap();
    /// let sql = format!("SELECT count(*) FROM {schema}.projection_offsets");
    /// assert_eq!(client.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0), 1);
    /// # pool.get().await.unwrap().batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.unwrap();
    /// # }
    /// ```
    pub fn for_log(log: &eventsourced_postgres::PostgresEventLog) -> Result<Self, ProjectionError> {
        Self::new(log.pool().clone(), log.tables().schema())
    }

    /// Creates the schema and the offsets table if they do not exist.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use deadpool_postgres::{Manager, Pool};
    /// # use eventsourced_projection::postgres::tokio_postgres::NoTls;
    /// # let url = std::env::var("DATABASE_URL")
    /// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    /// # let pool = Pool::builder(Manager::new(url.parse().unwrap(), NoTls)).max_size(2).build().unwrap();
    /// # let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    /// # let schema = format!("doc_setup_{}_{nanos}", std::process::id());
    /// use eventsourced_projection::{OffsetStore, postgres::PostgresOffsetStore};
    ///
    /// let store = PostgresOffsetStore::new(pool.clone(), &schema).unwrap();
    /// store.setup().await.unwrap();
    /// store.setup().await.unwrap(); // again: nothing to do
    /// assert_eq!(store.load("totals").await.unwrap(), None);
    /// # pool.get().await.unwrap().batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.unwrap();
    /// # }
    /// ```
    pub async fn setup(&self) -> Result<(), ProjectionError> {
        let client = self.client().await?;
        let sql = format!(
            "CREATE SCHEMA IF NOT EXISTS \"{}\"; \
             CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, position bigint NOT NULL)",
            self.schema, self.table
        );
        // Concurrent CREATE ... IF NOT EXISTS can race on the catalog; retry once.
        if client.batch_execute(&sql).await.is_err() {
            client.batch_execute(&sql).await.map_err(pg_err("set up"))?;
        }
        Ok(())
    }

    /// The pool, e.g. to query a read model.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use deadpool_postgres::{Manager, Pool};
    /// # use eventsourced_projection::postgres::tokio_postgres::NoTls;
    /// # let url = std::env::var("DATABASE_URL")
    /// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    /// # let pool = Pool::builder(Manager::new(url.parse().unwrap(), NoTls)).max_size(2).build().unwrap();
    /// # let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    /// # let schema = format!("doc_pool_{}_{nanos}", std::process::id());
    /// use eventsourced::Position;
    /// use eventsourced_projection::{OffsetStore, postgres::PostgresOffsetStore};
    ///
    /// let store = PostgresOffsetStore::new(pool.clone(), &schema).unwrap();
    /// store.setup().await.unwrap();
    /// store.save("totals", Position::new(3)).await.unwrap();
    /// let client = store.pool().get().await.unwrap();
    /// let sql = format!("SELECT position FROM {schema}.projection_offsets WHERE name = 'totals'");
    /// assert_eq!(client.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0), 3);
    /// # pool.get().await.unwrap().batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.unwrap();
    /// # }
    /// ```
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A sink where `handler` writes in the offset's transaction: exactly once.
    ///
    /// ```
    /// use deadpool_postgres::{Manager, Pool};
    /// use eventsourced_projection::{Delivery, ProjectionSink};
    /// use eventsourced_projection::postgres::{PostgresHandler, PostgresOffsetStore, tokio_postgres::NoTls};
    /// # use eventsourced_projection::{HandlerError, ProjectedEvent, postgres::tokio_postgres::Transaction};
    /// # struct Totals;
    /// # impl PostgresHandler for Totals {
    /// #     type Event = i64;
    /// #     async fn handle(&mut self, _: &Transaction<'_>, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> { Ok(()) }
    /// # }
    ///
    /// let config = "postgres://postgres@127.0.0.1:5432/test".parse().unwrap();
    /// let pool = Pool::builder(Manager::new(config, NoTls)).build().unwrap();
    /// let sink = PostgresOffsetStore::new(pool, "public").unwrap().exactly_once(Totals);
    /// assert_eq!(sink.delivery(), Delivery::ExactlyOnce);
    /// ```
    pub fn exactly_once<H: PostgresHandler>(self, handler: H) -> PostgresExactlyOnce<H> {
        PostgresExactlyOnce {
            store: self,
            handler,
            expected: None,
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, ProjectionError> {
        self.pool
            .get()
            .await
            .map_err(|e| ProjectionError::offset_store(BACKEND, "get a connection", e))
    }

    async fn load_with(
        &self,
        client: &impl GenericClient,
        name: &str,
    ) -> Result<Option<Position>, ProjectionError> {
        let sql = format!("SELECT position FROM {} WHERE name = $1", self.table);
        let row = client
            .query_opt(&sql, &[&name])
            .await
            .map_err(pg_err("load an offset"))?;
        row.map(|r| position_column(r.get(0))).transpose()
    }
}

impl OffsetStore for PostgresOffsetStore {
    async fn load(&self, name: &str) -> Result<Option<Position>, ProjectionError> {
        let client = self.client().await?;
        self.load_with(&**client, name).await
    }

    async fn save(&self, name: &str, offset: Position) -> Result<(), ProjectionError> {
        let client = self.client().await?;
        let sql = format!(
            "INSERT INTO {} (name, position) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position",
            self.table
        );
        client
            .execute(&sql, &[&name, &position_param(offset)?])
            .await
            .map_err(pg_err("store an offset"))?;
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<(), ProjectionError> {
        let client = self.client().await?;
        let sql = format!("DELETE FROM {} WHERE name = $1", self.table);
        client
            .execute(&sql, &[&name])
            .await
            .map_err(pg_err("delete an offset"))?;
        Ok(())
    }
}

/// A handler that writes its read model in the transaction that stores the
/// projection's offset: with [`PostgresOffsetStore::exactly_once`], each event
/// changes the read model exactly once, whatever crashes.
///
/// ```
/// use eventsourced_projection::{HandlerError, ProjectedEvent};
/// use eventsourced_projection::postgres::{PostgresHandler, tokio_postgres::Transaction};
///
/// struct Totals;
///
/// impl PostgresHandler for Totals {
///     type Event = i64;
///     async fn handle(&mut self, tx: &Transaction<'_>, e: &ProjectedEvent<i64>) -> Result<(), HandlerError> {
///         tx.execute(
///             "INSERT INTO totals (id, total) VALUES ($1, $2) \
///              ON CONFLICT (id) DO UPDATE SET total = totals.total + EXCLUDED.total",
///             &[&e.id, &e.event],
///         ).await?;
///         Ok(())
///     }
///     async fn reset(&mut self, tx: &Transaction<'_>) -> Result<(), HandlerError> {
///         tx.execute("DELETE FROM totals", &[]).await?;
///         Ok(())
///     }
/// }
/// ```
pub trait PostgresHandler: Send + 'static {
    /// The decoded event type.
    type Event: Send + Sync + 'static;

    /// Handles one event, writing with `tx`.
    fn handle(
        &mut self,
        tx: &Transaction<'_>,
        event: &ProjectedEvent<Self::Event>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Clears the read model before a rebuild, in the transaction that deletes
    /// the offset; does nothing by default.
    fn reset(
        &mut self,
        tx: &Transaction<'_>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = tx;
        async { Ok(()) }
    }
}

/// A [`PostgresHandler`] with a [`PostgresOffsetStore`]: each batch's writes
/// and its offset commit in one transaction. The offset update is checked
/// against the offset this instance committed last, so an instance that lost
/// its lease cannot commit over another one ([`ProjectionError::OffsetConflict`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # use deadpool_postgres::{Manager, Pool};
/// # use eventsourced_projection::postgres::tokio_postgres::NoTls;
/// # let url = std::env::var("DATABASE_URL")
/// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
/// # let pool = Pool::builder(Manager::new(url.parse().unwrap(), NoTls)).max_size(2).build().unwrap();
/// # let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
/// # let schema = format!("doc_exactly_{}_{nanos}", std::process::id());
/// # use eventsourced::{Binarize, EventLog, MemoryEventLog, SeqNo, SerdeJson};
/// # use eventsourced_projection::{HandlerError, ProjectedEvent, Projection};
/// # use eventsourced_projection::postgres::tokio_postgres::Transaction;
/// # use std::time::Duration;
/// use eventsourced_projection::postgres::{PostgresHandler, PostgresOffsetStore};
/// # struct Totals(String);
/// # impl PostgresHandler for Totals {
/// #     type Event = i64;
/// #     async fn handle(&mut self, tx: &Transaction<'_>, e: &ProjectedEvent<i64>) -> Result<(), HandlerError> {
/// #         let sql = format!("INSERT INTO {}.totals VALUES ($1, $2) \
/// #             ON CONFLICT (id) DO UPDATE SET total = totals.total + EXCLUDED.total", self.0);
/// #         tx.execute(&sql, &[&e.id, &e.event]).await?;
/// #         Ok(())
/// #     }
/// # }
/// # let log = MemoryEventLog::default();
/// # let events = [SerdeJson.encode(&2i64).unwrap(), SerdeJson.encode(&3i64).unwrap()];
/// # log.append("counter", "a", SeqNo::ZERO, &events).await.unwrap();
///
/// // Totals adds each event to its entity's row in `<schema>.totals`; "a" has events 2 and 3.
/// let store = PostgresOffsetStore::new(pool.clone(), &schema).unwrap();
/// store.setup().await.unwrap();
/// let client = pool.get().await.unwrap();
/// client.batch_execute(&format!("CREATE TABLE {schema}.totals (id text PRIMARY KEY, total bigint)")).await.unwrap();
/// let sink = store.exactly_once(Totals(schema.clone()));
/// let projection = Projection::builder("pg-totals-doc", "counter", log, SerdeJson, sink).build().unwrap();
/// projection.run().await;
/// projection.wait_for(|s| s.handled == 2, Duration::from_secs(10)).await.expect("handled");
/// projection.stop().await;
/// let row = client.query_one(&format!("SELECT total FROM {schema}.totals WHERE id = 'a'"), &[]).await.unwrap();
/// assert_eq!(row.get::<_, i64>(0), 5);
/// # pool.get().await.unwrap().batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.unwrap();
/// # }
/// ```
pub struct PostgresExactlyOnce<H> {
    store: PostgresOffsetStore,
    handler: H,
    expected: Option<Position>,
}

impl<H> fmt::Debug for PostgresExactlyOnce<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresExactlyOnce")
            .field("store", &self.store)
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl<H: PostgresHandler> PostgresExactlyOnce<H> {
    /// The handler.
    ///
    /// ```
    /// use deadpool_postgres::{Manager, Pool};
    /// use eventsourced_projection::postgres::{PostgresHandler, PostgresOffsetStore, tokio_postgres::NoTls};
    /// # use eventsourced_projection::{HandlerError, ProjectedEvent, postgres::tokio_postgres::Transaction};
    /// # struct Totals { table: &'static str }
    /// # impl PostgresHandler for Totals {
    /// #     type Event = i64;
    /// #     async fn handle(&mut self, _: &Transaction<'_>, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> { Ok(()) }
    /// # }
    ///
    /// let config = "postgres://postgres@127.0.0.1:5432/test".parse().unwrap();
    /// let pool = Pool::builder(Manager::new(config, NoTls)).build().unwrap();
    /// let sink = PostgresOffsetStore::new(pool, "public").unwrap().exactly_once(Totals { table: "totals" });
    /// assert_eq!(sink.handler().table, "totals");
    /// ```
    pub fn handler(&self) -> &H {
        &self.handler
    }
}

impl PostgresOffsetStore {
    /// Stores `offset` in `tx` if the stored offset is `expected`.
    async fn store_offset_checked(
        &self,
        tx: &Transaction<'_>,
        name: &str,
        expected: Option<Position>,
        offset: Position,
    ) -> Result<(), ProjectionError> {
        let table = &self.table;
        let new = position_param(offset)?;
        let rows = match expected {
            None => {
                let sql = format!(
                    "INSERT INTO {table} (name, position) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING"
                );
                tx.execute(&sql, &[&name, &new]).await
            }
            Some(expected) => {
                let sql =
                    format!("UPDATE {table} SET position = $2 WHERE name = $1 AND position = $3");
                tx.execute(&sql, &[&name, &new, &position_param(expected)?])
                    .await
            }
        }
        .map_err(pg_err("store an offset"))?;
        if rows == 1 {
            return Ok(());
        }
        let actual = self.load_with(tx, name).await?;
        Err(ProjectionError::OffsetConflict {
            name: name.to_owned(),
            expected,
            actual,
        })
    }
}

impl<H: PostgresHandler> ProjectionSink for PostgresExactlyOnce<H> {
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
        let mut client = self.store.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(pg_err("begin a transaction"))?;
        for (index, event) in batch.events().iter().enumerate() {
            if let Err(error) = self.handler.handle(&tx, event).await {
                // Dropping the transaction rolls it back.
                drop(tx);
                if client.is_closed() || transaction_lost(error.as_error()) {
                    return Err(BatchError::Store(ProjectionError::offset_store(
                        BACKEND,
                        "handle a batch",
                        format!(
                            "the batch's transaction was lost, nothing of it is committed: {}",
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
        self.store
            .store_offset_checked(&tx, name, self.expected, batch.offset())
            .await?;
        tx.commit().await.map_err(pg_err("commit"))?;
        self.expected = Some(batch.offset());
        Ok(())
    }

    async fn reset(&mut self, name: &str) -> Result<(), ProjectionError> {
        let mut client = self.store.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(pg_err("begin a transaction"))?;
        let sql = format!("DELETE FROM {} WHERE name = $1", self.store.table);
        tx.execute(&sql, &[&name])
            .await
            .map_err(pg_err("delete an offset"))?;
        self.handler
            .reset(&tx)
            .await
            .map_err(|e| ProjectionError::Reset {
                name: name.to_owned(),
                source: e.into_inner(),
            })?;
        tx.commit().await.map_err(pg_err("commit"))?;
        self.expected = None;
        Ok(())
    }
}
