//! The database file: checking that it is ours, creating the schema, opening
//! connections.

use crate::{Durability, SqliteConfig, SqliteError};
use rusqlite::{Connection, ErrorCode, OpenFlags, config::DbConfig};
use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
};

/// `PRAGMA application_id` of every file this crate creates: "ESLG".
pub(crate) const APPLICATION_ID: i32 = 0x4553_4c47;

/// `PRAGMA user_version`: the schema version this crate writes and reads.
pub(crate) const SCHEMA_VERSION: i32 = 1;

/// Schema version 1. Events are clustered by entity (a WITHOUT ROWID table
/// keyed by type, id and seq_no), so replaying an entity reads consecutive
/// rows. Positions come from `log_head`, advanced by the single writer inside
/// its write transaction, so they commit in increasing order without gaps.
const SCHEMA_V1: &str = "
CREATE TABLE events (
    type_name TEXT    NOT NULL,
    entity_id TEXT    NOT NULL,
    seq_no    INTEGER NOT NULL,
    position  INTEGER NOT NULL,
    event     BLOB    NOT NULL,
    PRIMARY KEY (type_name, entity_id, seq_no)
) WITHOUT ROWID;
CREATE UNIQUE INDEX events_by_type ON events (type_name, position);
CREATE TABLE log_head (
    id            INTEGER PRIMARY KEY CHECK (id = 0),
    last_position INTEGER NOT NULL
);
INSERT INTO log_head (id, last_position) VALUES (0, 0);
CREATE TABLE snapshots (
    type_name TEXT    NOT NULL,
    entity_id TEXT    NOT NULL,
    seq_no    INTEGER NOT NULL,
    state     BLOB    NOT NULL,
    PRIMARY KEY (type_name, entity_id)
) WITHOUT ROWID;
";

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Location {
    /// A file, by its absolute path.
    File(PathBuf),
    /// A private in-memory database.
    Memory,
}

impl Location {
    /// Resolves `path`: `:memory:` or a file whose directory is created if
    /// missing; the result is absolute so that two spellings of one file
    /// compare equal.
    pub(crate) fn resolve(path: &Path) -> Result<Location, SqliteError> {
        if path.as_os_str() == ":memory:" {
            return Ok(Location::Memory);
        }
        let io = |operation, path: &Path| {
            let path = path.to_owned();
            move |source| SqliteError::Io {
                operation,
                path,
                source,
            }
        };
        let file_name = path.file_name().ok_or_else(|| SqliteError::Io {
            operation: "open the database file",
            path: path.to_owned(),
            source: std::io::Error::other("the path names no file"),
        })?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir).map_err(io("create the directory", &dir))?;
        let dir = fs::canonicalize(&dir).map_err(io("resolve the directory", &dir))?;
        let file = dir.join(file_name);
        // An existing file by its real path, symlinks resolved, as SQLite
        // resolves them: so that a link and its target are one database
        // here too, and its write-ahead log is looked for where SQLite keeps it.
        match fs::canonicalize(&file) {
            Ok(real) => Ok(Location::File(real)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Location::File(file)),
            Err(e) => Err(io("resolve the path", &file)(e)),
        }
    }

    /// For errors and logs.
    pub(crate) fn describe(&self) -> String {
        match self {
            Location::File(path) => path.display().to_string(),
            Location::Memory => ":memory:".to_owned(),
        }
    }

    fn path_buf(&self) -> PathBuf {
        match self {
            Location::File(path) => path.clone(),
            Location::Memory => PathBuf::from(":memory:"),
        }
    }
}

/// Opens the connection of the writer: checks the file is a database of this
/// crate (or new), then sets WAL mode and the durability and creates the
/// schema if needed. A rejected file is not modified.
pub(crate) fn open_writer(
    location: &Location,
    config: &SqliteConfig,
) -> Result<Connection, SqliteError> {
    let path = location.path_buf();
    let sqlite = |operation| {
        let path = path.clone();
        move |source| classify(operation, &path, source)
    };
    let conn = match location {
        Location::File(file) => {
            check_header(file)?;
            Connection::open_with_flags(
                file,
                OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(sqlite("open"))?
        }
        Location::Memory => Connection::open_in_memory().map_err(sqlite("open"))?,
    };
    conn.busy_timeout(config.busy_timeout)
        .map_err(sqlite("set the busy timeout of"))?;

    // Read-only checks first: nothing is written to a file we reject.
    let fresh = check_identity(&conn, &path)?;

    if let Location::File(_) = location {
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(sqlite("switch to WAL mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(SqliteError::Io {
                operation: "switch to WAL mode",
                path,
                source: std::io::Error::other(format!(
                    "the journal mode stayed {mode:?} (is the file system read-only or without shared memory?)"
                )),
            });
        }
    }
    let synchronous = match config.durability {
        Durability::Full => "FULL",
        Durability::Fast => "NORMAL",
    };
    conn.execute_batch(&format!("PRAGMA synchronous = {synchronous};"))
        .map_err(sqlite("set the durability of"))?;
    if cfg!(target_vendor = "apple") && config.durability == Durability::Full {
        // On macOS, fsync does not reach the platter; F_FULLFSYNC does.
        conn.execute_batch("PRAGMA fullfsync = ON; PRAGMA checkpoint_fullfsync = ON;")
            .map_err(sqlite("set fullfsync on"))?;
    }
    if fresh {
        create_schema(&conn, &path)?;
    }
    tune(&conn).map_err(sqlite("configure"))?;
    Ok(conn)
}

/// The files as the writer opened them: the database file and, beside it, the
/// write-ahead log (`-wal`) and the shared-memory index of that log (`-shm`).
///
/// SQLite goes on committing to a file that was removed (or replaced by a
/// rename) while it is open, and no one else sees those commits. A removed
/// database file takes them along when the process closes it; a removed
/// write-ahead log holds every commit not yet checkpointed, lost in a crash
/// and invisible to other processes, which start a log of their own at the
/// path; a removed index lets another process rebuild one of its own and
/// overwrite this writer's frames. So the writer checks, before each batch
/// and after each commit before it replies, that each path still names the
/// file it opened, and readers check after each read.
///
/// SQLite itself never removes or replaces the `-wal` and `-shm` files of a
/// database that a connection has open: every connection to a database in
/// WAL mode holds a shared lock on the database file as long as it is open,
/// and only a connection that gets an exclusive lock (the last one, as it
/// closes) deletes them. Checkpoints, `journal_size_limit` and
/// `wal_checkpoint(TRUNCATE)` rewind or truncate the log in place.
#[derive(Debug, Clone)]
pub(crate) struct OpenedFile {
    path: PathBuf,
    id: FileId,
    wal: Companion,
    shm: Companion,
}

/// A file SQLite keeps beside the database file while it is in WAL mode.
#[derive(Debug, Clone)]
struct Companion {
    path: PathBuf,
    id: FileId,
    /// What the file is, for errors.
    what: &'static str,
    /// What a commit after it was removed or replaced would come to.
    harm: &'static str,
}

impl Companion {
    fn of(
        database: &Path,
        suffix: &str,
        what: &'static str,
        harm: &'static str,
    ) -> Result<Companion, SqliteError> {
        let path = companion(database, suffix);
        let metadata = fs::metadata(&path).map_err(|source| SqliteError::Io {
            operation: "read the metadata of",
            path: path.clone(),
            source,
        })?;
        Ok(Companion {
            id: file_id(&metadata),
            path,
            what,
            harm,
        })
    }

    fn check(&self) -> Result<(), String> {
        let changed = match fs::metadata(&self.path) {
            Ok(metadata) if file_id(&metadata) == self.id => return Ok(()),
            Ok(_) => "replaced",
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "removed",
            Err(e) => {
                return Err(format!(
                    "cannot check that the {} {} is still there: {e}",
                    self.what,
                    self.path.display()
                ));
            }
        };
        Err(format!(
            "the {} {} was {changed} since the log opened it; {}: close every handle of the log and open it anew",
            self.what,
            self.path.display(),
            self.harm
        ))
    }
}

/// The path of the file SQLite keeps beside `database` with `suffix`.
fn companion(database: &Path, suffix: &str) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// What tells two files apart: device and inode on Unix; elsewhere only
/// whether the path exists.
type FileId = (u64, u64);

#[cfg(unix)]
fn file_id(metadata: &fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (metadata.dev(), metadata.ino())
}

#[cfg(not(unix))]
fn file_id(_metadata: &fs::Metadata) -> FileId {
    (0, 0)
}

impl OpenedFile {
    /// The files at `location` now; `None` for an in-memory database. Call
    /// once the writer's connection has read the database in WAL mode, so
    /// that it has its write-ahead log and index open.
    pub(crate) fn of(location: &Location) -> Result<Option<OpenedFile>, SqliteError> {
        let Location::File(path) = location else {
            return Ok(None);
        };
        let metadata = fs::metadata(path).map_err(|source| SqliteError::Io {
            operation: "read the metadata of",
            path: path.clone(),
            source,
        })?;
        Ok(Some(OpenedFile {
            path: path.clone(),
            id: file_id(&metadata),
            wal: Companion::of(
                path,
                "-wal",
                "write-ahead log",
                "commits would go to a file that other processes do not see and a crash loses",
            )?,
            shm: Companion::of(
                path,
                "-shm",
                "write-ahead log index",
                "other processes would not see commits and could overwrite them",
            )?,
        }))
    }

    /// Whether `location` names this same file (by another hard link, say).
    pub(crate) fn is_at(&self, location: &Location) -> bool {
        let Location::File(path) = location else {
            return false;
        };
        fs::metadata(path).is_ok_and(|metadata| file_id(&metadata) == self.id)
    }

    /// `Err` with the reason if the path no longer names the opened
    /// database file.
    pub(crate) fn check_database(&self) -> Result<(), String> {
        match fs::metadata(&self.path) {
            Ok(metadata) if file_id(&metadata) == self.id => Ok(()),
            Ok(_) => Err(
                "the database file was replaced since the log opened it; commits went to the old file, which no one can open again: open the log anew"
                    .to_owned(),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(
                "the database file was removed since the log opened it; commits went to the unlinked file and are lost when the process closes it: open the log anew"
                    .to_owned(),
            ),
            Err(e) => Err(format!("cannot check that the database file is still there: {e}")),
        }
    }

    /// `Err` with the reason if a path no longer names the opened file: the
    /// database file, its write-ahead log or the log's index. Three `stat`
    /// calls, no file opened (closing a descriptor of a file would release
    /// the locks SQLite holds on it in this process).
    pub(crate) fn check(&self) -> Result<(), String> {
        self.check_database()?;
        self.wal.check()?;
        self.shm.check()
    }
}

/// Opens a connection for reads of a file the writer has opened.
pub(crate) fn open_reader(path: &Path, config: &SqliteConfig) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(config.busy_timeout)?;
    conn.execute_batch("PRAGMA query_only = ON;")?;
    tune(&conn)?;
    Ok(conn)
}

/// Settings of every connection for the statements of this crate.
fn tune(conn: &Connection) -> rusqlite::Result<()> {
    // Without the query planner stability guarantee, SQLite re-plans a
    // cached statement whenever a bound value changes (for ORDER BY, LIMIT
    // and min/max on bound parameters), which costs more than running it.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(())
}

/// Rejects, without SQLite, a file that is not an SQLite database or that is
/// shorter than its header says.
fn check_header(path: &Path) -> Result<(), SqliteError> {
    let io = |operation| {
        move |source| SqliteError::Io {
            operation,
            path: path.to_owned(),
            source,
        }
    };
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("open")(e)),
    };
    let len = file.metadata().map_err(io("read the size of"))?.len();
    if len == 0 {
        return Ok(()); // SQLite treats an empty file as an empty database.
    }
    let mut header = [0u8; 100];
    if len < 100 {
        return Err(SqliteError::NotADatabase {
            path: path.to_owned(),
        });
    }
    file.read_exact(&mut header)
        .map_err(io("read the header of"))?;
    if &header[..16] != b"SQLite format 3\0" {
        return Err(SqliteError::NotADatabase {
            path: path.to_owned(),
        });
    }
    // While a write-ahead log holds frames, the main file may legitimately be
    // shorter than its header says (a checkpoint was interrupted); SQLite
    // completes it. Without one, the header's size is the truth.
    let wal_len = fs::metadata(companion(path, "-wal")).map_or(0, |m| m.len());
    let be32 = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    let pages = u64::from(be32(28));
    let size_is_valid = pages != 0 && be32(24) == be32(92);
    if wal_len == 0 && size_is_valid {
        let expected = pages.saturating_mul(page_size);
        if len < expected {
            return Err(SqliteError::Truncated {
                path: path.to_owned(),
                expected,
                actual: len,
            });
        }
    }
    Ok(())
}

/// Reads the application id, schema version and table count. Returns whether
/// the database is empty (a schema must be created).
fn check_identity(conn: &Connection, path: &Path) -> Result<bool, SqliteError> {
    let read = |sql: &str| -> Result<i64, SqliteError> {
        conn.query_row(sql, [], |row| row.get(0))
            .map_err(|e| classify("read the schema of", path, e))
    };
    let application_id = read("PRAGMA application_id")?;
    let version = read("PRAGMA user_version")?;
    let tables = read("SELECT count(*) FROM sqlite_schema")?;
    verdict(path, application_id, version, tables)
}

fn verdict(
    path: &Path,
    application_id: i64,
    version: i64,
    tables: i64,
) -> Result<bool, SqliteError> {
    // Both pragmas are 32-bit in the file header.
    let application_id = i32::try_from(application_id).unwrap_or(i32::MIN);
    let version = i32::try_from(version).unwrap_or(i32::MIN);
    if application_id == 0 && version == 0 && tables == 0 {
        return Ok(true);
    }
    if application_id != APPLICATION_ID {
        return Err(SqliteError::NotOurDatabase {
            path: path.to_owned(),
            application_id,
            tables,
        });
    }
    if version > SCHEMA_VERSION {
        return Err(SqliteError::NewerSchema {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version != SCHEMA_VERSION {
        return Err(SqliteError::UnknownSchema {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(false)
}

/// Creates schema version 1 in one transaction, unless another process did it
/// since the check.
fn create_schema(conn: &Connection, path: &Path) -> Result<(), SqliteError> {
    let create = || -> Result<(), SqliteError> {
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| classify("lock", path, e))?;
        if !check_identity(conn, path)? {
            return Ok(());
        }
        conn.execute_batch(SCHEMA_V1)
            .map_err(|e| classify("create the schema in", path, e))?;
        conn.execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
        ))
        .map_err(|e| classify("write the schema version of", path, e))?;
        Ok(())
    };
    match create() {
        Ok(()) => conn
            .execute_batch("COMMIT")
            .map_err(|e| classify("commit the schema of", path, e)),
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            Err(e)
        }
    }
}

/// Turns an SQLite error while opening into the variant a caller acts on.
pub(crate) fn classify(
    operation: &'static str,
    path: &Path,
    source: rusqlite::Error,
) -> SqliteError {
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => SqliteError::NotADatabase {
            path: path.to_owned(),
        },
        Some(ErrorCode::DatabaseCorrupt) => SqliteError::Corrupt {
            path: path.to_owned(),
            source,
        },
        _ => SqliteError::Sqlite {
            operation,
            path: path.to_owned(),
            source,
        },
    }
}

/// Whether an SQLite error means the file is damaged.
pub(crate) fn is_corruption(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let p = Path::new("x.db");
        assert!(verdict(p, 0, 0, 0).unwrap());
        assert!(!verdict(p, i64::from(APPLICATION_ID), 1, 4).unwrap());
        assert!(matches!(
            verdict(p, 0, 0, 3),
            Err(SqliteError::NotOurDatabase { tables: 3, .. })
        ));
        assert!(matches!(
            verdict(p, 7, 1, 3),
            Err(SqliteError::NotOurDatabase {
                application_id: 7,
                ..
            })
        ));
        assert!(matches!(
            verdict(p, i64::from(APPLICATION_ID), 2, 4),
            Err(SqliteError::NewerSchema {
                found: 2,
                supported: 1,
                ..
            })
        ));
        assert!(matches!(
            verdict(p, i64::from(APPLICATION_ID), 0, 4),
            Err(SqliteError::UnknownSchema { found: 0, .. })
        ));
    }
}
