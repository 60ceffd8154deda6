//! Reads: a small pool of read connections, used on tokio's blocking threads.
//! In WAL mode readers see the last committed state and never block the
//! writer (nor does the writer block them).

use crate::{
    SqliteConfig,
    schema::{self, Location, OpenedFile},
};
use eventsourced::{EventLogError, SnapshotStoreError};
use rusqlite::Connection;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// The read side of one open database.
pub(crate) struct Readers {
    location: Location,
    config: SqliteConfig,
    /// For `:memory:`: the writer's connection, the only one that sees the data.
    shared: Option<Arc<Mutex<Connection>>>,
    idle: Mutex<Vec<Connection>>,
    /// Bounds the connections open at once: a permit is held for as long as
    /// its blocking read runs, even if the caller's future is dropped.
    permits: Arc<Semaphore>,
    /// The files the writer opened; `None` for `:memory:`. A read that finds
    /// a path naming another file (or none) fails rather than answer from
    /// a file that no one else will see again.
    opened: Option<OpenedFile>,
}

/// A read could not run at all.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// A read connection could not be opened.
    Open(String, rusqlite::Error),
    /// The blocking task panicked or was cancelled.
    Task(String, tokio::task::JoinError),
    /// The database file, its write-ahead log or the log's index was removed
    /// or replaced since the log opened it.
    Replaced(String, String),
}

impl std::fmt::Display for ReadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadFailure::Open(file, e) => write!(f, "cannot open a read connection to {file}: {e}"),
            ReadFailure::Task(file, e) => write!(f, "a read of {file} did not complete: {e}"),
            ReadFailure::Replaced(file, reason) => write!(f, "{file}: {reason}"),
        }
    }
}

impl std::error::Error for ReadFailure {}

impl From<ReadFailure> for EventLogError {
    fn from(failure: ReadFailure) -> Self {
        EventLogError::backend("sqlite", "read", failure)
    }
}

impl From<ReadFailure> for SnapshotStoreError {
    fn from(failure: ReadFailure) -> Self {
        SnapshotStoreError::backend("sqlite", "load", failure)
    }
}

impl Readers {
    pub(crate) fn new(
        location: Location,
        config: SqliteConfig,
        shared: Option<Arc<Mutex<Connection>>>,
        opened: Option<OpenedFile>,
    ) -> Self {
        let permits = Arc::new(Semaphore::new(config.read_connections));
        Readers {
            location,
            config,
            shared,
            idle: Mutex::new(Vec::new()),
            permits,
            opened,
        }
    }

    /// Closes the idle read connections, so that the writer's connection,
    /// closed last, checkpoints the write-ahead log into the file.
    pub(crate) fn close_idle(&self) {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }

    /// Runs `f` with a read connection on a blocking thread.
    pub(crate) async fn read<T, E>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection, &Location) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<ReadFailure> + Send + 'static,
    {
        // The semaphore is never closed, so this is always a permit.
        let permit = Arc::clone(&self.permits).acquire_owned().await;
        let this = Arc::clone(self);
        let describe = || self.location.describe();
        tokio::task::spawn_blocking(move || {
            // Released when the read is done, not when the caller stops waiting.
            let _permit = permit;
            this.read_blocking(f)
        })
        .await
        .map_err(|e| E::from(ReadFailure::Task(describe(), e)))?
    }

    fn read_blocking<T, E: From<ReadFailure>>(
        &self,
        f: impl FnOnce(&Connection, &Location) -> Result<T, E>,
    ) -> Result<T, E> {
        if let Some(shared) = &self.shared {
            let conn = shared
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            return f(&conn, &self.location);
        }
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let Location::File(path) = &self.location else {
                    // `shared` is always set for `:memory:`.
                    return Err(E::from(ReadFailure::Open(
                        self.location.describe(),
                        rusqlite::Error::InvalidPath(":memory:".into()),
                    )));
                };
                schema::open_reader(path, &self.config)
                    .map_err(|e| E::from(ReadFailure::Open(self.location.describe(), e)))?
            }
        };
        let result = f(&conn, &self.location);
        // Checked after the read: what it returned came from the opened file
        // only if the path still names that file now.
        if let Some(Err(reason)) = self.opened.as_ref().map(OpenedFile::check) {
            return Err(E::from(ReadFailure::Replaced(
                self.location.describe(),
                reason,
            )));
        }
        // A read never leaves a transaction open, so the connection is reusable.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(conn);
        result
    }
}
