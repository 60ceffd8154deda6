//! [`SqliteConfig`]: how a database file is opened and written.

use crate::SqliteError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How hard a commit works to survive crashes; see the crate README for the
/// exact trade-off.
///
/// ```
/// use eventsourced_sqlite::Durability;
/// assert_eq!(Durability::default(), Durability::Full);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Durability {
    /// `synchronous = FULL` (and `fullfsync` on macOS): an append is
    /// acknowledged only after its transaction is in the write-ahead log *and*
    /// that log is fsync'd. Acknowledged events survive a process crash, an OS
    /// crash and a power cut.
    #[default]
    Full,
    /// `synchronous = NORMAL`: an append is acknowledged once its transaction
    /// is written to the write-ahead log, which is fsync'd only at checkpoints.
    /// Acknowledged events survive a crash of the process. An OS crash or a
    /// power cut can lose the transactions committed since the last
    /// checkpoint, although their replies were sent; the database is never
    /// corrupted and each lost transaction is lost whole (no gaps in seq_nos).
    Fast,
}

/// Options for [`SqliteEventLog::open_with`](crate::SqliteEventLog::open_with).
///
/// Serde uses kebab-case and durations in human form (`"5s"`, `"250ms"`);
/// every field has a default, so `{}` is a valid configuration.
///
/// ```
/// use eventsourced_sqlite::{Durability, SqliteConfig};
/// use std::time::Duration;
///
/// let mut config = SqliteConfig::default();
/// config.durability = Durability::Fast;
/// config.busy_timeout = Duration::from_secs(10);
/// assert_eq!(config.max_batch, 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// What a commit survives; [`Durability::Full`] by default.
    #[serde(default)]
    pub durability: Durability,

    /// How long a write or read waits for a lock held by another process
    /// using the same file before it fails (default 5 s, at most ~24.8 days).
    #[serde(default = "default_busy_timeout", with = "humantime_serde")]
    pub busy_timeout: Duration,

    /// The most requests (appends and snapshot saves) the writer merges into
    /// one transaction and one fsync (default 1024, at least 1).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,

    /// The most read connections used at once (default 4, at least 1); more
    /// concurrent reads wait for one of them.
    #[serde(default = "default_read_connections")]
    pub read_connections: usize,

    /// How often a live `events_by_type` stream with nothing new looks for
    /// events committed by *another process* on the same file (default 1 s).
    /// Commits of this process wake followers at once, without polling.
    #[serde(default = "default_follow_poll_interval", with = "humantime_serde")]
    pub follow_poll_interval: Duration,
}

/// The longest `busy_timeout` SQLite takes: `i32::MAX` milliseconds, ~24.8 days.
const MAX_BUSY_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// The most read connections: tokio's limit for the semaphore that hands them out.
const MAX_READ_CONNECTIONS: usize = tokio::sync::Semaphore::MAX_PERMITS;

fn default_busy_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_max_batch() -> usize {
    1024
}

fn default_read_connections() -> usize {
    4
}

fn default_follow_poll_interval() -> Duration {
    Duration::from_secs(1)
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            durability: Durability::default(),
            busy_timeout: default_busy_timeout(),
            max_batch: default_max_batch(),
            read_connections: default_read_connections(),
            follow_poll_interval: default_follow_poll_interval(),
        }
    }
}

impl SqliteConfig {
    /// Checks the values; called by `open_with`.
    pub(crate) fn validate(&self) -> Result<(), SqliteError> {
        if self.max_batch == 0 {
            return Err(SqliteError::InvalidConfig(
                "max-batch must be at least 1".to_owned(),
            ));
        }
        if self.read_connections == 0 || self.read_connections > MAX_READ_CONNECTIONS {
            return Err(SqliteError::InvalidConfig(format!(
                "read-connections must be at least 1 and at most {MAX_READ_CONNECTIONS}, not {}",
                self.read_connections
            )));
        }
        if self.busy_timeout > MAX_BUSY_TIMEOUT {
            return Err(SqliteError::InvalidConfig(format!(
                "busy-timeout must be at most {} (SQLite counts it in an i32 of milliseconds), not {}",
                humantime_serde::re::humantime::format_duration(MAX_BUSY_TIMEOUT),
                humantime_serde::re::humantime::format_duration(self.busy_timeout)
            )));
        }
        if self.follow_poll_interval.is_zero() {
            return Err(SqliteError::InvalidConfig(
                "follow-poll-interval must be longer than zero".to_owned(),
            ));
        }
        Ok(())
    }
}
