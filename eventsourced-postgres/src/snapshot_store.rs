//! [`PostgresSnapshotStore`]: the latest snapshot per entity in one table.

use crate::{
    PostgresConfig, PostgresError,
    event_log::setup,
    lookup::{KeyQuery, Lookups},
    tables::Tables,
};
use bytes::Bytes;
use deadpool_postgres::{Object, Pool};
use eventsourced::{SeqNo, SnapshotStore, SnapshotStoreError};
use std::{fmt, sync::Arc};

/// A stored row's seq_no and state (NULL only in a damaged table), or `None`.
type Loaded = Option<(Option<i64>, Option<Bytes>)>;

struct Inner {
    config: PostgresConfig,
    tables: Tables,
    pool: Pool,
    save: String,
    loads: Lookups<Loaded>,
}

/// A [`SnapshotStore`] on PostgreSQL: one row per entity; a save replaces the
/// row unless the stored snapshot has a higher seq_no.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use eventsourced_postgres::{PostgresConfig, PostgresSnapshotStore};
///
/// let store = PostgresSnapshotStore::new(PostgresConfig::default()).await?;
/// store.setup().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresSnapshotStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for PostgresSnapshotStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSnapshotStore")
            .field("config", &self.inner.config)
            .field("table", &self.inner.tables.snapshots())
            .finish_non_exhaustive()
    }
}

impl PostgresSnapshotStore {
    /// Validates `config` and connects (failing fast with a typed error).
    /// Call [`setup`](Self::setup) once to create the table.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use eventsourced_postgres::{PostgresConfig, PostgresSnapshotStore};
    ///
    /// # let url = std::env::var("DATABASE_URL")
    /// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    /// let mut config = PostgresConfig::from_url(&url)?;
    /// # config.pool_size = 2;
    /// config.schema = "doc_snapshots_new".to_owned();
    /// let store = PostgresSnapshotStore::new(config).await?;
    /// assert_eq!(store.tables().snapshots(), r#""doc_snapshots_new"."snapshots""#);
    /// # Ok(()) }
    /// ```
    pub async fn new(config: PostgresConfig) -> Result<Self, PostgresError> {
        let tables = config.validate()?;
        let pool = config.pool()?;
        let store = Self::with_pool(config, tables, pool);
        crate::event_log::warm(store.pool(), &store.inner.config).await?;
        Ok(store)
    }

    /// A store sharing the pool of an event log (same database and config).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use eventsourced::{SeqNo, SnapshotStore};
    /// use eventsourced_postgres::{PostgresConfig, PostgresEventLog, PostgresSnapshotStore};
    ///
    /// # let url = std::env::var("DATABASE_URL")
    /// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    /// let mut config = PostgresConfig::from_url(&url)?;
    /// # config.pool_size = 2;
    /// config.schema = "doc_snapshots_from_log".to_owned();
    /// let log = PostgresEventLog::new(config).await?;
    /// let store = PostgresSnapshotStore::from_log(&log);
    /// store.setup().await?;
    /// store.save("counter", "c-1", SeqNo::new(5), "5".into()).await?;
    /// assert_eq!(store.load("counter", "c-1").await?, Some((SeqNo::new(5), "5".into())));
    /// # log.pool().get().await?.batch_execute("DROP SCHEMA doc_snapshots_from_log CASCADE").await?;
    /// # Ok(()) }
    /// ```
    pub fn from_log(log: &crate::PostgresEventLog) -> Self {
        Self::with_pool(
            log.config().clone(),
            log.tables().clone(),
            log.pool().clone(),
        )
    }

    fn with_pool(config: PostgresConfig, tables: Tables, pool: Pool) -> Self {
        let query = Arc::new(KeyQuery {
            pool: pool.clone(),
            sql: tables.load_snapshots_sql(),
            timeout: config.statement_timeout,
            table: tables.snapshots(),
            place: config.place(),
            operation: "load a snapshot",
        });
        let loads = Lookups::new(move |keys| {
            let query = Arc::clone(&query);
            async move {
                let rows = query.rows(keys).await?;
                rows.iter()
                    .map(|row| {
                        let found: bool = row.try_get(0)?;
                        let seq_no: Option<i64> = row.try_get(1)?;
                        let state: Option<&[u8]> = row.try_get(2)?;
                        Ok(found.then(|| (seq_no, state.map(Bytes::copy_from_slice))))
                    })
                    .collect::<Result<Vec<Loaded>, tokio_postgres::Error>>()
                    .map_err(|e| PostgresError::query(query.operation, &query.table, e))
            }
        });
        PostgresSnapshotStore {
            inner: Arc::new(Inner {
                save: tables.save_snapshot_sql(),
                loads,
                config,
                tables,
                pool,
            }),
        }
    }

    /// Creates the schema and the snapshot table if they do not exist.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use eventsourced::{SeqNo, SnapshotStore};
    /// use eventsourced_postgres::{PostgresConfig, PostgresSnapshotStore};
    ///
    /// # let url = std::env::var("DATABASE_URL")
    /// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    /// let mut config = PostgresConfig::from_url(&url)?;
    /// # config.pool_size = 2;
    /// config.schema = "doc_snapshots_setup".to_owned();
    /// let store = PostgresSnapshotStore::new(config).await?;
    /// store.setup().await?;
    /// store.setup().await?; // idempotent
    /// assert_eq!(store.load("counter", "c-1").await?, None);
    /// # store.pool().get().await?.batch_execute("DROP SCHEMA doc_snapshots_setup CASCADE").await?;
    /// # Ok(()) }
    /// ```
    pub async fn setup(&self) -> Result<(), PostgresError> {
        let tables = &self.inner.tables;
        setup(
            self.get().await?,
            tables.setup_lock_key(),
            &tables.setup_snapshots_sql(),
            &tables.snapshots_shape(),
        )
        .await
    }

    /// The connection pool.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use eventsourced_postgres::{PostgresConfig, PostgresSnapshotStore};
    ///
    /// # let url = std::env::var("DATABASE_URL")
    /// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    /// let mut config = PostgresConfig::from_url(&url)?;
    /// # config.pool_size = 2;
    /// config.schema = "doc_snapshots_pool".to_owned();
    /// let store = PostgresSnapshotStore::new(config.clone()).await?;
    /// let client = store.pool().get().await?;
    /// let dbname: String = client.query_one("SELECT current_database()", &[]).await?.get(0);
    /// assert_eq!(dbname, config.dbname);
    /// # Ok(()) }
    /// ```
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The validated schema and table names.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use eventsourced_postgres::{PostgresConfig, PostgresSnapshotStore};
    ///
    /// # let url = std::env::var("DATABASE_URL")
    /// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    /// let mut config = PostgresConfig::from_url(&url)?;
    /// # config.pool_size = 2;
    /// config.schema = "doc_snapshots_tables".to_owned();
    /// config.snapshots_table = "order_snapshots".to_owned();
    /// let store = PostgresSnapshotStore::new(config).await?;
    /// assert_eq!(store.tables().schema(), "doc_snapshots_tables");
    /// assert_eq!(store.tables().snapshots(), r#""doc_snapshots_tables"."order_snapshots""#);
    /// # Ok(()) }
    /// ```
    pub fn tables(&self) -> &Tables {
        &self.inner.tables
    }

    async fn get(&self) -> Result<Object, PostgresError> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| PostgresError::connect(self.inner.config.place(), e))
    }
}

fn validate(type_name: &str, id: &str) -> Result<(), SnapshotStoreError> {
    let refuse = |reason: &str| SnapshotStoreError::InvalidId {
        id: id.to_owned(),
        reason: reason.to_owned(),
    };
    if type_name.is_empty() || id.is_empty() {
        return Err(refuse("ids and type names must not be empty"));
    }
    if type_name.contains('\0') || id.contains('\0') {
        return Err(refuse("PostgreSQL text cannot hold NUL characters (\\0)"));
    }
    if id.len() > crate::MAX_ID_LEN || type_name.len() > crate::MAX_TYPE_NAME_LEN {
        return Err(refuse(
            "the id or type name is too long for the PostgreSQL store",
        ));
    }
    Ok(())
}

impl SnapshotStore for PostgresSnapshotStore {
    async fn save(
        &self,
        type_name: &str,
        id: &str,
        seq_no: SeqNo,
        state: Bytes,
    ) -> Result<(), SnapshotStoreError> {
        validate(type_name, id)?;
        let operation = "save a snapshot";
        let seq_no = seq_no.to_i64().ok_or_else(|| {
            SnapshotStoreError::backend(
                "postgres",
                operation,
                PostgresError::OutOfRange {
                    what: "the snapshot seq_no",
                    value: seq_no.to_string(),
                },
            )
        })?;
        let (table, place) = (self.inner.tables.snapshots(), self.inner.config.place());
        let target = crate::pooled::Target {
            pool: &self.inner.pool,
            place: &place,
            timeout: self.inner.config.statement_timeout,
            operation,
            table: &table,
        };
        // The upsert is idempotent: running it again after a lost connection is safe.
        let (_client, _rows) = crate::pooled::run(&target, |client| {
            let (inner, type_name, id, state) = (
                Arc::clone(&self.inner),
                type_name.to_owned(),
                id.to_owned(),
                state.clone(),
            );
            Box::pin(async move {
                let statement = client.prepare_cached(&inner.save).await?;
                client
                    .execute(&statement, &[&type_name, &id, &seq_no, &state.as_ref()])
                    .await
            })
        })
        .await
        .map_err(|e| SnapshotStoreError::backend("postgres", operation, e))?;
        Ok(())
    }

    async fn load(
        &self,
        type_name: &str,
        id: &str,
    ) -> Result<Option<(SeqNo, Bytes)>, SnapshotStoreError> {
        validate(type_name, id)?;
        let loaded = self
            .inner
            .loads
            .get(type_name, id)
            .await
            .map_err(|e| SnapshotStoreError::backend("postgres", "load a snapshot", e))?;
        let Some((seq_no, state)) = loaded else {
            return Ok(None);
        };
        let corrupt = |reason: String| SnapshotStoreError::Corrupt {
            backend: "postgres",
            location: format!(
                "table {}, entity {type_name}/{id:?}",
                self.inner.tables.snapshots()
            ),
            reason,
        };
        let (Some(seq_no), Some(state)) = (seq_no, state) else {
            return Err(corrupt("the seq_no or the state is NULL".to_owned()));
        };
        let seq_no =
            SeqNo::from_i64(seq_no).ok_or_else(|| corrupt(format!("negative seq_no {seq_no}")))?;
        Ok(Some((seq_no, state)))
    }
}
