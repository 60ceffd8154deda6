//! [`SqliteSnapshotStore`]: snapshots in the event log's database.

use crate::{
    SqliteConfig, SqliteError, SqliteEventLog,
    event_log::Inner,
    schema::is_corruption,
    writer::{Request, SaveSnapshot},
};
use bytes::Bytes;
use eventsourced::{SeqNo, SnapshotStore, SnapshotStoreError, event_log::validate_id};
use rusqlite::{OptionalExtension, params, types::ValueRef};
use std::{fmt, path::Path, sync::Arc};
use tokio::sync::oneshot;

/// A [`SnapshotStore`] in the `snapshots` table of an event log's SQLite
/// file. Saves go through the log's writer, so they share its group commits
/// and its durability; a save never replaces a snapshot of a higher seq_no.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use eventsourced::{SeqNo, SnapshotStore};
/// use eventsourced_sqlite::SqliteEventLog;
///
/// let dir = tempfile::tempdir()?;
/// let log = SqliteEventLog::open(dir.path().join("events.db"))?;
/// let snapshots = log.snapshot_store();
/// snapshots.save("counter", "a", SeqNo::new(10), "10".into()).await?;
/// assert_eq!(snapshots.load("counter", "a").await?, Some((SeqNo::new(10), "10".into())));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteSnapshotStore {
    pub(crate) inner: Arc<Inner>,
}

impl SqliteSnapshotStore {
    /// Opens the snapshot store of the database at `path` with the default
    /// configuration; the same as `SqliteEventLog::open(path)?.snapshot_store()`.
    /// If the file is already open in this process, the store shares its writer.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use eventsourced::{SeqNo, SnapshotStore};
    /// use eventsourced_sqlite::SqliteSnapshotStore;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let snapshots = SqliteSnapshotStore::open(dir.path().join("events.db"))?;
    /// snapshots.save("counter", "a", SeqNo::new(2), "2".into()).await?;
    /// assert_eq!(snapshots.load("counter", "a").await?, Some((SeqNo::new(2), "2".into())));
    /// # Ok(()) }
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteSnapshotStore, SqliteError> {
        Ok(SqliteEventLog::open(path)?.snapshot_store())
    }

    /// Opens the snapshot store of the database at `path` with `config`.
    ///
    /// ```
    /// use eventsourced_sqlite::{Durability, SqliteConfig, SqliteSnapshotStore};
    ///
    /// let mut config = SqliteConfig::default();
    /// config.durability = Durability::Fast;
    /// let snapshots = SqliteSnapshotStore::open_with(":memory:", config)?;
    /// assert_eq!(snapshots.event_log().config().durability, Durability::Fast);
    /// # Ok::<(), eventsourced_sqlite::SqliteError>(())
    /// ```
    pub fn open_with(
        path: impl AsRef<Path>,
        config: SqliteConfig,
    ) -> Result<SqliteSnapshotStore, SqliteError> {
        Ok(SqliteEventLog::open_with(path, config)?.snapshot_store())
    }

    /// The event log of the same database.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use bytes::Bytes;
    /// use eventsourced::{EventLog, SeqNo};
    /// use eventsourced_sqlite::SqliteSnapshotStore;
    ///
    /// let snapshots = SqliteSnapshotStore::open(":memory:")?;
    /// let log = snapshots.event_log();
    /// log.append("counter", "a", SeqNo::ZERO, &[Bytes::from("e1")]).await?;
    /// assert_eq!(log.last_seq_no("counter", "a").await?, SeqNo::new(1));
    /// # Ok(()) }
    /// ```
    pub fn event_log(&self) -> SqliteEventLog {
        SqliteEventLog {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl fmt::Debug for SqliteSnapshotStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteSnapshotStore")
            .field("location", &self.inner.location.describe())
            .finish()
    }
}

fn invalid_id(error: eventsourced::EventLogError) -> SnapshotStoreError {
    match error {
        eventsourced::EventLogError::InvalidId { id, reason } => {
            SnapshotStoreError::InvalidId { id, reason }
        }
        other => SnapshotStoreError::backend("sqlite", "check the id", other),
    }
}

impl SnapshotStore for SqliteSnapshotStore {
    async fn save(
        &self,
        type_name: &str,
        id: &str,
        seq_no: SeqNo,
        state: Bytes,
    ) -> Result<(), SnapshotStoreError> {
        validate_id(type_name, id).map_err(invalid_id)?;
        let (reply, replied) = oneshot::channel();
        let stopped = |cause: String| SnapshotStoreError::backend("sqlite", "save", cause);
        self.inner
            .send(Request::SaveSnapshot(SaveSnapshot {
                type_name: type_name.to_owned(),
                id: id.to_owned(),
                seq_no,
                state,
                reply,
            }))
            .map_err(stopped)?;
        replied
            .await
            .map_err(|_| stopped(self.inner.writer_stopped()))?
    }

    async fn load(
        &self,
        type_name: &str,
        id: &str,
    ) -> Result<Option<(SeqNo, Bytes)>, SnapshotStoreError> {
        const SQL: &str =
            "SELECT seq_no, state FROM snapshots WHERE type_name = ?1 AND entity_id = ?2";
        let (type_name, id) = (type_name.to_owned(), id.to_owned());
        self.inner
            .readers
            .read(move |conn, location| {
                let at = || {
                    format!(
                        "{}, snapshot of entity {type_name}/{id}",
                        location.describe()
                    )
                };
                let corrupt = |reason: String| SnapshotStoreError::Corrupt {
                    backend: "sqlite",
                    location: at(),
                    reason,
                };
                let failed = |e: rusqlite::Error| {
                    if is_corruption(&e) {
                        corrupt(e.to_string())
                    } else {
                        SnapshotStoreError::backend("sqlite", "load", e)
                    }
                };
                let mut statement = conn.prepare_cached(SQL).map_err(failed)?;
                statement
                    .query_row(params![type_name, id], |row| {
                        let seq_no = match row.get_ref(0)? {
                            ValueRef::Integer(n) => SeqNo::from_i64(n),
                            _ => None,
                        };
                        let state = match row.get_ref(1)? {
                            ValueRef::Blob(blob) => Some(Bytes::copy_from_slice(blob)),
                            _ => None,
                        };
                        Ok((seq_no, state))
                    })
                    .optional()
                    .map_err(failed)?
                    .map(|row| match row {
                        (Some(seq_no), Some(state)) => Ok((seq_no, state)),
                        (None, _) => Err(corrupt(
                            "the seq_no is not a non-negative integer".to_owned(),
                        )),
                        (_, None) => Err(corrupt("the state is not a blob".to_owned())),
                    })
                    .transpose()
            })
            .await
    }
}
