//! The PostgreSQL log and snapshot store: a schema of its own for every run,
//! dropped afterwards.

use super::{Backend, Fresh};
use crate::{BoxError, Scale, raw, report::Record};
use eventsourced_postgres::{PostgresConfig, PostgresEventLog, PostgresSnapshotStore};

/// The PostgreSQL backend on one server.
#[derive(Debug)]
pub(crate) struct Postgres {
    url: String,
}

impl Postgres {
    pub(crate) fn new(url: &str) -> Self {
        Postgres {
            url: url.to_owned(),
        }
    }
}

impl Backend for Postgres {
    type Log = PostgresEventLog;
    type Snapshots = PostgresSnapshotStore;
    const NAME: &'static str = "postgres";

    async fn fresh(&self, run: &str) -> Result<Fresh<Self::Log, Self::Snapshots>, BoxError> {
        let mut config = PostgresConfig::from_url(&self.url)?;
        config.schema = run.to_owned();
        let log = PostgresEventLog::new(config).await?;
        log.setup().await?;
        let snapshots = PostgresSnapshotStore::from_log(&log);
        snapshots.setup().await?;
        Ok(Fresh {
            log,
            snapshots,
            place: format!("schema {run}"),
        })
    }

    async fn cleanup(&self, fresh: Fresh<Self::Log, Self::Snapshots>) -> Result<(), BoxError> {
        let schema = fresh.log.tables().schema().to_owned();
        drop(fresh);
        // A connection of our own: the log's pool may still be closing.
        let client = raw::postgres::connect(&self.url).await?;
        client
            .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .await?;
        Ok(())
    }

    async fn raw(&self, scale: &Scale) -> Result<Vec<Record>, BoxError> {
        raw::postgres::ceilings(&self.url, scale).await
    }
}
