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
