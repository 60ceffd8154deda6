//! Shared test helpers: a fresh schema per test on the real server.
#![allow(dead_code, unreachable_pub)]

use eventsourced_postgres::{PostgresConfig, PostgresEventLog, PostgresSnapshotStore};
use std::time::Duration;
use tokio_postgres::NoTls;

/// The server every test talks to: DATABASE_URL, or the local default.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// An event whose bytes are `s`.
pub fn ev(s: &str) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(s.as_bytes())
}

/// A unique schema name for this test, e.g. `es_test_4f2a...`.
pub fn unique_schema() -> String {
    format!("es_test_{:016x}", rand::random::<u64>())
}

/// A config pointing at a fresh schema; the schema is dropped when the
/// returned guard is dropped (also when the test panics).
pub struct TestDb {
    pub config: PostgresConfig,
}

impl TestDb {
    pub fn new() -> Self {
        let mut config = PostgresConfig::from_url(&database_url())
            .expect("DATABASE_URL must be a valid PostgreSQL URL");
        config.schema = unique_schema();
        config.application_name = config.schema.clone();
        config.statement_timeout = Duration::from_secs(20);
        config.poll_interval = Duration::from_millis(200);
        // Tests run in parallel on a shared server: small pools.
        config.pool_size = 4;
        TestDb { config }
    }

    /// A log on this schema with its table set up; fails loudly without a server.
    pub async fn log(&self) -> PostgresEventLog {
        let log = PostgresEventLog::new(self.config.clone())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "these tests need PostgreSQL at DATABASE_URL ({}): {e}",
                    database_url()
                )
            });
        log.setup().await.expect("setup must succeed");
        log
    }

    pub async fn snapshots(&self) -> PostgresSnapshotStore {
        let store = PostgresSnapshotStore::new(self.config.clone())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "these tests need PostgreSQL at DATABASE_URL ({}): {e}",
                    database_url()
                )
            });
        store.setup().await.expect("setup must succeed");
        store
    }

    /// A plain driver connection to the same database.
    pub async fn raw(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&database_url(), NoTls)
            .await
            .expect("connect to DATABASE_URL");
        tokio::spawn(connection);
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let schema = self.config.schema.clone();
        // Drop the schema from a thread of its own: Drop cannot await.
        block_on_own_thread(async move {
            let url = database_url();
            let connect = tokio_postgres::connect(&url, NoTls);
            if let Ok(Ok((client, connection))) =
                tokio::time::timeout(Duration::from_secs(10), connect).await
            {
                tokio::spawn(connection);
                let _ = tokio::time::timeout(
                    Duration::from_secs(20),
                    client.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")),
                )
                .await;
            }
        });
    }
}

/// Runs `future` to its end on a thread and a runtime of its own, and waits
/// for it: for `Drop`, which cannot await. Does nothing if no runtime can be
/// built.
pub fn block_on_own_thread(future: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(future);
    })
    .join();
}
