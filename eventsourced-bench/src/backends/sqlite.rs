//! The embedded SQLite log and snapshot store: a new database file for every
//! run, removed afterwards.

use super::{Backend, Fresh, unique};
use crate::{BoxError, Scale, raw, report::Record};
use eventsourced_sqlite::{SqliteEventLog, SqliteSnapshotStore};
use std::path::{Path, PathBuf};

/// The SQLite backend, writing its files into one directory.
#[derive(Debug)]
pub(crate) struct Sqlite {
    dir: PathBuf,
    /// The default directory, removed when the bench ends.
    _temp: Option<tempfile::TempDir>,
}

impl Sqlite {
    /// Uses `dir`, or a new temporary directory.
    pub(crate) fn new(dir: Option<&Path>) -> Result<Self, BoxError> {
        match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|error| {
                    format!("cannot create --sqlite-dir {}: {error}", dir.display())
                })?;
                Ok(Sqlite {
                    dir: dir.to_owned(),
                    _temp: None,
                })
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("eventsourced-bench-")
                    .tempdir()?;
                Ok(Sqlite {
                    dir: temp.path().to_owned(),
                    _temp: Some(temp),
                })
            }
        }
    }
}

/// Removes a database file with its write-ahead log and shared-memory files.
fn remove_database(file: &Path) -> Result<(), BoxError> {
    std::fs::remove_file(file)
        .map_err(|error| format!("cannot remove {}: {error}", file.display()))?;
    for suffix in ["-wal", "-shm"] {
        let mut companion = file.as_os_str().to_owned();
        companion.push(suffix);
        // They exist only while a connection is open or after a crash.
        let _ = std::fs::remove_file(companion);
    }
    Ok(())
}

impl Backend for Sqlite {
    type Log = SqliteEventLog;
    type Snapshots = SqliteSnapshotStore;
    const NAME: &'static str = "sqlite";

    async fn fresh(&self, run: &str) -> Result<Fresh<Self::Log, Self::Snapshots>, BoxError> {
        let file = self.dir.join(format!("{run}.db"));
        let log = SqliteEventLog::open(&file)?;
        let snapshots = log.snapshot_store();
        Ok(Fresh {
            log,
            snapshots,
            place: file.display().to_string(),
        })
    }

    async fn cleanup(&self, fresh: Fresh<Self::Log, Self::Snapshots>) -> Result<(), BoxError> {
        drop(fresh.log);
        drop(fresh.snapshots);
        remove_database(Path::new(&fresh.place))
    }

    async fn raw(&self, scale: &Scale) -> Result<Vec<Record>, BoxError> {
        let file = self.dir.join(format!("{}.db", unique("bench_raw")));
        let records = raw::sqlite::ceilings(&file, scale).await;
        remove_database(&file)?;
        records
    }
}
