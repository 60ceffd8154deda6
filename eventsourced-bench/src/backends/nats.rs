//! The NATS JetStream log and key-value snapshot store: a stream and a bucket
//! of their own for every run, deleted afterwards.

use super::{Backend, Fresh};
use crate::{BoxError, Scale, nats_server::NatsServer, raw, report::Record};
use async_nats::jetstream;
use eventsourced_nats::{NatsConfig, NatsEventLog, NatsSnapshotStore};

/// The NATS backend on one server.
#[derive(Debug)]
pub(crate) struct Nats {
    server: NatsServer,
}

impl Nats {
    pub(crate) fn new(server: NatsServer) -> Self {
        Nats { server }
    }
}

impl Backend for Nats {
    type Log = NatsEventLog;
    type Snapshots = NatsSnapshotStore;
    const NAME: &'static str = "nats";

    async fn fresh(&self, run: &str) -> Result<Fresh<Self::Log, Self::Snapshots>, BoxError> {
        let mut config = NatsConfig::from_url(&self.server.url);
        config.stream = run.to_owned();
        config.subject_prefix = run.to_owned();
        config.bucket = run.to_owned();
        let log = NatsEventLog::new(config.clone()).await?;
        log.setup().await?;
        let snapshots = NatsSnapshotStore::with_client(log.client().clone(), config).await?;
        snapshots.setup().await?;
        Ok(Fresh {
            log,
            snapshots,
            place: format!("stream and bucket {run}"),
        })
    }

    async fn cleanup(&self, fresh: Fresh<Self::Log, Self::Snapshots>) -> Result<(), BoxError> {
        let config = fresh.log.config();
        let context = jetstream::new(fresh.log.client().clone());
        context.delete_stream(&config.stream).await?;
        context.delete_key_value(&config.bucket).await?;
        Ok(())
    }

    async fn raw(&self, scale: &Scale) -> Result<Vec<Record>, BoxError> {
        raw::nats::ceilings(&self.server.url, scale).await
    }
}
