//! Coalesced point reads: concurrent lookups by (type, id) (the last seq_no,
//! a snapshot) that arrive while a query runs are answered together by the
//! next query. Spawning many entities at once thus costs a few queries
//! instead of one per entity.

use crate::PostgresError;
use futures::{FutureExt, future::BoxFuture};
use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};
use tokio::sync::{mpsc, oneshot};

/// Most keys per coalesced query.
const MAX_KEYS: usize = 1024;
/// Queued lookups before callers wait.
const QUEUE: usize = 4096;

type Reply<R> = oneshot::Sender<Result<R, Arc<PostgresError>>>;

/// One caller's lookup.
pub(crate) struct Lookup<R> {
    type_name: String,
    id: String,
    reply: Reply<R>,
}

/// The handle of a lookup task.
pub(crate) struct Lookups<R> {
    sender: mpsc::Sender<Lookup<R>>,
    /// The task until the first lookup spawns it: a handle may be made
    /// outside a tokio runtime (e.g. `PostgresSnapshotStore::from_log`).
    task: Mutex<Option<BoxFuture<'static, ()>>>,
    started: AtomicBool,
}

impl<R: Send + 'static> Lookups<R> {
    /// The task, started by the first lookup; `query` answers a batch of keys,
    /// one result per key in order. The task ends when this handle is dropped.
    pub(crate) fn new<F, Fut>(query: F) -> Self
    where
        F: Fn(Vec<(String, String)>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<R>, PostgresError>> + Send,
    {
        let (sender, mut receiver) = mpsc::channel::<Lookup<R>>(QUEUE);
        let task = async move {
            while let Some(first) = receiver.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_KEYS {
                    match receiver.try_recv() {
                        Ok(lookup) => batch.push(lookup),
                        Err(_) => break,
                    }
                }
                let keys = batch
                    .iter()
                    .map(|l| (l.type_name.clone(), l.id.clone()))
                    .collect();
                match query(keys).await {
                    Ok(results) if results.len() == batch.len() => {
                        for (lookup, result) in batch.into_iter().zip(results) {
                            let _ = lookup.reply.send(Ok(result));
                        }
                    }
                    Ok(results) => {
                        let error = Arc::new(PostgresError::OutOfRange {
                            what: "the number of lookup results",
                            value: format!("{} for {} keys", results.len(), batch.len()),
                        });
                        for lookup in batch {
                            let _ = lookup.reply.send(Err(Arc::clone(&error)));
                        }
                    }
                    Err(error) => {
                        let error = Arc::new(error);
                        for lookup in batch {
                            let _ = lookup.reply.send(Err(Arc::clone(&error)));
                        }
                    }
                }
            }
        };
        Lookups {
            sender,
            task: Mutex::new(Some(task.boxed())),
            started: AtomicBool::new(false),
        }
    }

    /// Looks up one key.
    pub(crate) async fn get(&self, type_name: &str, id: &str) -> Result<R, Arc<PostgresError>> {
        let (reply, answer) = oneshot::channel();
        let lookup = Lookup {
            type_name: type_name.to_owned(),
            id: id.to_owned(),
            reply,
        };
        if !self.started.load(Ordering::Acquire) {
            let task = self
                .task
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            if let Some(task) = task {
                tokio::spawn(task);
            }
            self.started.store(true, Ordering::Release);
        }
        let stopped = || Arc::new(PostgresError::Stopped);
        self.sender.send(lookup).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// A statement over two text arrays (type names, ids), run on a pooled
/// connection within a time limit.
pub(crate) struct KeyQuery {
    pub(crate) pool: deadpool_postgres::Pool,
    pub(crate) sql: String,
    pub(crate) timeout: std::time::Duration,
    pub(crate) table: String,
    pub(crate) place: String,
    pub(crate) operation: &'static str,
}

impl KeyQuery {
    /// The rows for `keys`, in key order.
    pub(crate) async fn rows(
        &self,
        keys: Vec<(String, String)>,
    ) -> Result<Vec<tokio_postgres::Row>, PostgresError> {
        let (types, ids): (Vec<String>, Vec<String>) = keys.into_iter().unzip();
        let (types, ids) = (Arc::new(types), Arc::new(ids));
        let target = crate::pooled::Target {
            pool: &self.pool,
            place: &self.place,
            timeout: self.timeout,
            operation: self.operation,
            table: &self.table,
        };
        let (_client, rows) = crate::pooled::run(&target, |client| {
            let (sql, types, ids) = (self.sql.clone(), Arc::clone(&types), Arc::clone(&ids));
            Box::pin(async move {
                let statement = client.prepare_cached(&sql).await?;
                client.query(&statement, &[&*types, &*ids]).await
            })
        })
        .await?;
        Ok(rows)
    }
}
