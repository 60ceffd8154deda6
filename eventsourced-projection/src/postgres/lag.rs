use crate::LagSource;
use deadpool_postgres::Pool;
use eventsourced::{Position, event_log::BoxError};
use futures::{FutureExt, future::BoxFuture};
use std::fmt;

/// Lag from a PostgreSQL query that counts the events of a type after an
/// offset, for event logs stored in PostgreSQL.
///
/// The query gets the type name as `$1` (text) and the offset as `$2`
/// (bigint, `-1` for "no offset") and returns one bigint:
///
/// ```no_run
/// # fn f(pool: deadpool_postgres::Pool) {
/// use eventsourced_projection::postgres::PostgresLag;
/// let lag = PostgresLag::with_query(
///     pool,
///     "SELECT count(*) FROM events WHERE type_name = $1 AND position > $2",
/// );
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresLag {
    pool: Pool,
    query: String,
}

impl fmt::Debug for PostgresLag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresLag")
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

impl PostgresLag {
    /// Lag of projections over `log`: counts its events table, on its pool.
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
    /// # let schema = format!("doc_lag_{}_{nanos}", std::process::id());
    /// # let mut config = eventsourced_postgres::PostgresConfig::from_url(&url).unwrap();
    /// # config.schema = schema.clone();
    /// # let log = eventsourced_postgres::PostgresEventLog::new(config).await.unwrap();
    /// # log.setup().await.unwrap();
    /// # use eventsourced::{Binarize, EventLog, SeqNo, SerdeJson};
    /// # let e = SerdeJson.encode(&1i64).unwrap();
    /// use eventsourced_projection::{LagSource, postgres::PostgresLag};
    ///
    /// // `log`: a PostgresEventLog.
    /// log.append("counter", "a", SeqNo::ZERO, &[e.clone(), e]).await.unwrap();
    /// let lag = PostgresLag::for_log(&log);
    /// assert_eq!(lag.events_after("counter", None).await.unwrap(), 2);
    /// # pool.get().await.unwrap().batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.unwrap();
    /// # }
    /// ```
    pub fn for_log(log: &eventsourced_postgres::PostgresEventLog) -> Self {
        Self::with_query(
            log.pool().clone(),
            format!(
                "SELECT count(*) FROM {} WHERE type_name = $1 AND position > $2",
                log.tables().events()
            ),
        )
    }

    /// Lag from `query` run on `pool`.
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
    /// # let schema = format!("doc_lagq_{}_{nanos}", std::process::id());
    /// use eventsourced::Position;
    /// use eventsourced_projection::{LagSource, postgres::PostgresLag};
    ///
    /// // A stand-in for an events table: three events at positions 1, 2, 3.
    /// let query = "SELECT count(*) FROM (VALUES (1::bigint), (2), (3)) AS e(p) WHERE $1::text = 'counter' AND p > $2";
    /// let lag = PostgresLag::with_query(pool.clone(), query);
    /// assert_eq!(lag.events_after("counter", Some(Position::new(1))).await.unwrap(), 2);
    /// # pool.get().await.unwrap().batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.unwrap();
    /// # }
    /// ```
    pub fn with_query(pool: Pool, query: impl Into<String>) -> Self {
        PostgresLag {
            pool,
            query: query.into(),
        }
    }
}

impl LagSource for PostgresLag {
    fn events_after(
        &self,
        type_name: &str,
        offset: Option<Position>,
    ) -> BoxFuture<'_, Result<u64, BoxError>> {
        let type_name = type_name.to_owned();
        async move {
            let offset = match offset {
                None => -1,
                Some(p) => p.to_i64().ok_or("the offset does not fit a bigint")?,
            };
            let client = self.pool.get().await?;
            let n: i64 = client
                .query_one(&self.query, &[&type_name, &offset])
                .await?
                .try_get(0)?;
            Ok(u64::try_from(n)?)
        }
        .boxed()
    }
}
