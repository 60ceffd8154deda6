//! [`PostgresError`]: what can go wrong, and what to do about it.

use std::time::Duration;
use tokio_postgres::error::SqlState;

/// Errors of this crate: config, connection, setup and queries.
///
/// Event log and snapshot store operations return the core's
/// [`EventLogError`](eventsourced::EventLogError) /
/// [`SnapshotStoreError`](eventsourced::SnapshotStoreError), with a
/// `PostgresError` as the source of their `Backend` variant.
///
/// ```
/// use eventsourced_postgres::{PostgresConfig, PostgresError};
///
/// let error = PostgresConfig::from_url("postgres://me:s3cret@db:not-a-port/shop").unwrap_err();
/// assert!(matches!(error, PostgresError::InvalidUrl { .. }));
/// // The message says what to fix, and never repeats the password.
/// assert!(!error.to_string().contains("s3cret"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// A config value is out of range or not a valid identifier.
    #[error("invalid PostgreSQL config `{field}`: {reason}")]
    InvalidConfig {
        /// The kebab-case config key.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },

    /// A connection URL could not be parsed. The URL itself is not repeated,
    /// since it may hold a password.
    #[error(
        "invalid PostgreSQL URL: {reason} (expected postgres://user[:password]@host[:port]/dbname)"
    )]
    InvalidUrl {
        /// What is wrong.
        reason: String,
    },

    /// The TLS handshake failed: the server does not offer TLS, or its
    /// certificate is not trusted or not issued for `host`.
    #[error(
        "TLS with PostgreSQL at {place} failed: {reason}; check `tls-mode` (sslmode), \
         `tls-root-cert` (sslrootcert) and that the server's certificate names `host`"
    )]
    Tls {
        /// Host, port, database and user.
        place: String,
        /// What failed, as OpenSSL says it.
        reason: String,
    },

    /// The server refused the user or password.
    #[error(
        "PostgreSQL at {place} refused the login: {}; check `user` and `password` \
         (or the user:password part of DATABASE_URL) and the server's pg_hba.conf",
        error_chain(.source)
    )]
    Authentication {
        /// Host, port, database and user (never the password).
        place: String,
        /// The server's answer.
        #[source]
        source: tokio_postgres::Error,
    },

    /// The database does not exist.
    #[error(
        "PostgreSQL at {place}: the database does not exist: {}; create it \
         (createdb) or set `dbname`",
        error_chain(.source)
    )]
    DatabaseMissing {
        /// Host, port, database and user.
        place: String,
        /// The server's answer.
        #[source]
        source: tokio_postgres::Error,
    },

    /// No connection could be made (server down, wrong host or port, timeout).
    #[error(
        "cannot connect to PostgreSQL at {place}: {reason}; check that the server runs \
         and that `host` and `port` are right"
    )]
    Connect {
        /// Host, port, database and user.
        place: String,
        /// What failed.
        reason: String,
    },

    /// A table is missing: `setup` was not run for this schema and table name.
    #[error(
        "table {table} does not exist: run setup() (PostgresEventLog::setup / \
         PostgresSnapshotStore::setup) once, or fix `schema` / the table name in the config"
    )]
    NotSetUp {
        /// The qualified table name.
        table: String,
        /// The server's answer.
        #[source]
        source: tokio_postgres::Error,
    },

    /// `setup` failed.
    #[error("setup of {table} failed: {}", error_chain(.source))]
    Setup {
        /// The qualified table name.
        table: String,
        /// The server's answer.
        #[source]
        source: tokio_postgres::Error,
    },

    /// `setup` found a table of the configured name that is not one it
    /// creates: a column is missing or has another type, nullability or
    /// collation, or a key the log relies on is missing. The log detects a
    /// stale append through the primary key, so it refuses a table without it
    /// rather than let a stale append write a second event with the same
    /// seq_no. Nothing was changed.
    #[error(
        "table {table} exists but is not the table setup() creates: {}; drop or \
         rename it, or set `schema` / the table name in the config to another",
        .differences.join("; ")
    )]
    IncompatibleTable {
        /// The qualified table name.
        table: String,
        /// Each difference from the expected shape, e.g. `no column "seq_no"`.
        differences: Vec<String>,
    },

    /// A statement on `table` failed (server error or lost connection).
    #[error("PostgreSQL failed to {operation} on {table}: {}", error_chain(.source))]
    Query {
        /// What was attempted.
        operation: &'static str,
        /// The qualified table the statement worked on: a server error such
        /// as `column "id" does not exist` does not say which table it means.
        table: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// The server did not answer in time; the connection was dropped and the
    /// outcome of a write is unknown.
    #[error(
        "PostgreSQL did not answer within {timeout:?} (statement-timeout) while trying to \
         {operation}; the connection was dropped and the outcome is unknown"
    )]
    Timeout {
        /// What was attempted.
        operation: &'static str,
        /// The limit that passed.
        timeout: Duration,
    },

    /// A background task (the group-commit writer, a lookup task) is gone:
    /// the tokio runtime it ran on shut down, or (a bug) the task panicked.
    #[error(
        "a background task of the PostgreSQL event log or snapshot store has stopped \
         (its tokio runtime shut down, or the task panicked); create the log or store again"
    )]
    Stopped,

    /// A number does not fit PostgreSQL's BIGINT, or a stored one is negative.
    #[error("{what} is out of range: {value}")]
    OutOfRange {
        /// Which number.
        what: &'static str,
        /// Its value.
        value: String,
    },
}

impl PostgresError {
    /// Classifies a failed connection attempt.
    pub(crate) fn connect(place: String, error: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match error {
            PoolError::Backend(source) => match source.code() {
                Some(code)
                    if *code == SqlState::INVALID_PASSWORD
                        || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
                {
                    PostgresError::Authentication { place, source }
                }
                Some(code) if *code == SqlState::INVALID_CATALOG_NAME => {
                    PostgresError::DatabaseMissing { place, source }
                }
                _ if is_tls_failure(&source) => PostgresError::Tls {
                    place,
                    reason: error_chain(&source),
                },
                _ => PostgresError::Connect {
                    place,
                    reason: source.to_string(),
                },
            },
            PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => PostgresError::Connect {
                place,
                reason: "timed out (statement-timeout) waiting for a free pooled connection: all were in use".to_owned(),
            },
            PoolError::Timeout(_) => PostgresError::Connect {
                place,
                reason: "timed out (connect-timeout) waiting for a connection".to_owned(),
            },
            other => PostgresError::Connect {
                place,
                reason: other.to_string(),
            },
        }
    }

    /// Classifies a failed statement on `table`.
    pub(crate) fn query(
        operation: &'static str,
        table: &str,
        source: tokio_postgres::Error,
    ) -> Self {
        match source.code() {
            Some(code)
                if *code == SqlState::UNDEFINED_TABLE || *code == SqlState::INVALID_SCHEMA_NAME =>
            {
                // A statement may touch several tables: name the one the
                // server says is missing (`relation "s.t" does not exist`).
                let missing = source
                    .as_db_error()
                    .filter(|db| *db.code() == SqlState::UNDEFINED_TABLE)
                    .and_then(|db| db.message().split('"').nth(1).map(quoted));
                PostgresError::NotSetUp {
                    table: missing.unwrap_or_else(|| table.to_owned()),
                    source,
                }
            }
            _ => PostgresError::Query {
                operation,
                table: table.to_owned(),
                source,
            },
        }
    }
}

/// `s.t` as the tables' names are shown: `"s"."t"`.
fn quoted(name: &str) -> String {
    let parts: Vec<String> = name.split('.').map(|part| format!("\"{part}\"")).collect();
    parts.join(".")
}

/// Whether a connection error came from the TLS layer (OpenSSL), or the
/// server refused TLS that the mode requires.
fn is_tls_failure(error: &tokio_postgres::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if current.is::<openssl::ssl::Error>() || current.is::<openssl::error::ErrorStack>() {
            return true;
        }
        source = current.source();
    }
    // tokio-postgres's own TLS errors ("server does not support TLS") carry
    // no OpenSSL source; its error kind is private, its text is not.
    error
        .to_string()
        .starts_with("error performing TLS handshake")
}

/// An error and its sources, joined by `: `.
pub(crate) fn error_chain(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(current) = source {
        let part = current.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = current.source();
    }
    text
}
