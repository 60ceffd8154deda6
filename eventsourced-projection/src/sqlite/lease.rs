use super::{lock, sql_err};
use crate::{Lease, LeaseGuard, ProjectionError};
use futures::{FutureExt, future::BoxFuture};
use rusqlite::{Connection, params};
use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::debug;

/// How long releasing the lease waits for its row to be deleted.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(1);

/// A lease across processes sharing a SQLite file: a row in
/// `projection_leases` with an owner and an expiry time.
///
/// The holder renews the row every `ttl / 3`; a waiting instance retries every
/// `retry_interval` and takes the row once it has expired. When the holder
/// stops, it deletes the row (a waiting instance takes over at its next try);
/// when it dies, the row expires after at most `ttl`. A holder none of whose
/// renewals succeeded for four fifths of the ttl (a stuck disk, a writer
/// holding the file's lock) counts the lease as lost and stops handling,
/// before its row expires and another instance may take it.
/// Expiry uses the system clock: all instances must run on one machine (or on
/// synchronised clocks), which is what a SQLite file implies.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let dir = tempfile::tempdir().unwrap();
/// use eventsourced_projection::{Lease, sqlite::SqliteLease};
/// use std::time::Duration;
///
/// let path = dir.path().join("leases.db");
/// let (one, other) = (SqliteLease::new(&path), SqliteLease::new(&path));
/// let guard = one.acquire("totals").await.unwrap();
/// let waiting = tokio::time::timeout(Duration::from_millis(300), other.acquire("totals")).await;
/// assert!(waiting.is_err(), "held by the first");
/// guard.release().await;
/// let taken = tokio::time::timeout(Duration::from_secs(10), other.acquire("totals")).await;
/// assert!(taken.expect("taken over").is_ok());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteLease {
    path: PathBuf,
    ttl: Duration,
    retry_interval: Duration,
}

impl SqliteLease {
    /// A lease in the file at `path` (created if missing); ttl 5 s, retry every 250 ms.
    ///
    /// ```
    /// use eventsourced_projection::{Lease, sqlite::SqliteLease};
    ///
    /// let lease = SqliteLease::new("leases.db"); // opens the file only to acquire
    /// assert!(lease.check().is_ok());
    /// assert!(format!("{lease:?}").contains("ttl: 5s"));
    /// ```
    pub fn new(path: impl AsRef<Path>) -> Self {
        SqliteLease {
            path: path.as_ref().to_owned(),
            ttl: Duration::from_secs(5),
            retry_interval: Duration::from_millis(250),
        }
    }

    /// How long the lease survives its holder without renewal.
    ///
    /// ```
    /// use eventsourced_projection::{Lease, sqlite::SqliteLease};
    /// use std::time::Duration;
    ///
    /// assert!(SqliteLease::new("leases.db").ttl(Duration::from_secs(30)).check().is_ok());
    /// assert!(SqliteLease::new("leases.db").ttl(Duration::from_millis(5)).check().is_err());
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How often a waiting instance tries to take the lease.
    ///
    /// ```
    /// use eventsourced_projection::{Lease, sqlite::SqliteLease};
    /// use std::time::Duration;
    ///
    /// let lease = SqliteLease::new("leases.db").retry_interval(Duration::from_millis(100));
    /// assert!(lease.check().is_ok());
    /// assert!(SqliteLease::new("leases.db").retry_interval(Duration::ZERO).check().is_err());
    /// ```
    pub fn retry_interval(mut self, d: Duration) -> Self {
        self.retry_interval = d;
        self
    }

    async fn try_acquire(&self, name: &str) -> Result<LeaseGuard, ProjectionError> {
        let lease_err = |reason: String| ProjectionError::Lease {
            name: name.to_owned(),
            reason,
        };
        self.check().map_err(lease_err)?;
        let path = self.path.clone();
        let ttl = self.ttl;
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, ProjectionError> {
            let conn = Connection::open(&path).map_err(sql_err("open the lease file"))?;
            // A renewal that waits longer for a lock than the lease lasts is moot.
            conn.busy_timeout((ttl / 5).min(Duration::from_secs(5)))
                .map_err(sql_err("set the busy timeout"))?;
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS projection_leases (
                     name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at INTEGER NOT NULL)",
            )
            .map_err(sql_err("create the lease table"))?;
            Ok(conn)
        })
        .await
        .map_err(|e| lease_err(e.to_string()))??;
        let conn = Arc::new(Mutex::new(conn));
        let owner = new_owner();
        let ttl_ms = millis(self.ttl);
        let taken_at = loop {
            let (c, n, o) = (conn.clone(), name.to_owned(), owner.clone());
            let attempted_at = Instant::now();
            let taken = tokio::task::spawn_blocking(move || {
                let now = now_ms();
                lock(&c).execute(
                    "INSERT INTO projection_leases (name, owner, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
                     WHERE projection_leases.expires_at < ?4 OR projection_leases.owner = excluded.owner",
                    params![n, o, now.saturating_add(ttl_ms), now],
                )
            })
            .await
            .map_err(|e| lease_err(e.to_string()))?
            .map_err(|e| lease_err(format!("cannot take the lease row: {e}")))?;
            if taken == 1 {
                break attempted_at;
            }
            tokio::time::sleep(self.retry_interval).await;
        };
        debug!(projection = name, owner, "sqlite lease taken");
        let (lost_tx, mut lost_rx) = mpsc::channel::<String>(1);
        let renew = tokio::spawn(renew(
            conn.clone(),
            name.to_owned(),
            owner.clone(),
            self.ttl,
            taken_at,
            lost_tx,
        ));
        let hold = Hold {
            renew,
            conn,
            name: name.to_owned(),
            owner,
            released: false,
        };
        let lost = async move {
            lost_rx
                .recv()
                .await
                .unwrap_or_else(|| "the lease was released".to_owned())
        };
        Ok(LeaseGuard::with_release(
            move || hold.release().boxed(),
            lost,
        ))
    }
}

/// Renews the row every `ttl / 3` until the guard drops, and reports the
/// lease lost when a renewal finds another owner, or when none has succeeded
/// within four fifths of `ttl` from the last successful one's start. That
/// deadline runs on this process's clock, whatever a write costs: the row's
/// expiry is computed no earlier than the attempt started, so the holder gives
/// the lease up a fifth of the ttl before a waiting instance can take the row.
async fn renew(
    conn: Arc<Mutex<Connection>>,
    name: String,
    owner: String,
    ttl: Duration,
    taken_at: Instant,
    lost: mpsc::Sender<String>,
) {
    let ttl_ms = millis(ttl);
    let held_for = ttl - ttl / 5;
    // A ttl beyond what an Instant can hold means no deadline in practice.
    let until = |start: Instant| start.checked_add(held_for).unwrap_or_else(far_future);
    let mut valid_until = until(taken_at);
    let mut last_error = None;
    let reason = loop {
        let attempt = async {
            tokio::time::sleep(ttl / 3).await;
            let (c, n, o) = (conn.clone(), name.clone(), owner.clone());
            let started = Instant::now();
            let renewed = tokio::task::spawn_blocking(move || {
                lock(&c).execute(
                    "UPDATE projection_leases SET expires_at = ?3 WHERE name = ?1 AND owner = ?2",
                    params![n, o, now_ms().saturating_add(ttl_ms)],
                )
            })
            .await;
            (started, renewed)
        };
        let (started, renewed) = tokio::select! {
            biased;
            () = tokio::time::sleep_until(valid_until.into()) => {
                break match last_error.take() {
                    Some(e) => format!("cannot renew the lease within {held_for:?} (4/5 of its ttl): {e}"),
                    None => format!("no renewal of the lease finished within {held_for:?} (4/5 of its ttl)"),
                };
            }
            attempt = attempt => attempt,
        };
        match renewed {
            Ok(Ok(1)) => {
                valid_until = until(started);
                last_error = None;
            }
            Ok(Ok(_)) => break "another instance took the expired lease".to_owned(),
            Ok(Err(e)) => last_error = Some(e),
            Err(e) => break format!("cannot renew the lease: {e}"),
        }
    };
    let _ = lost.send(reason).await;
}

/// About thirty years from now: later than any lease runs.
fn far_future() -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_secs(30 * 365 * 24 * 3600))
        .unwrap_or(now)
}

/// `d` in whole milliseconds, saturating.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

fn new_owner() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        now_ms(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Stops renewing and deletes the row: awaited by [`Hold::release`], or in
/// the background when dropped unreleased.
struct Hold {
    renew: JoinHandle<()>,
    conn: Arc<Mutex<Connection>>,
    name: String,
    owner: String,
    released: bool,
}

impl Hold {
    /// Deletes the row, returning once it is gone (or the delete failed, and
    /// the row expires after the ttl).
    async fn release(mut self) {
        self.renew.abort();
        let delete = self.delete();
        // Bounded: a lock someone else holds must not hold up `stop()`; the
        // row expires after the ttl if the delete does not get through.
        let _ = tokio::time::timeout(RELEASE_TIMEOUT, tokio::task::spawn_blocking(delete)).await;
        self.released = true;
    }

    fn delete(&self) -> impl FnOnce() + Send + 'static {
        let (conn, name, owner) = (self.conn.clone(), self.name.clone(), self.owner.clone());
        move || {
            // Best effort: if this fails, the row expires after the ttl.
            let _ = lock(&conn).execute(
                "DELETE FROM projection_leases WHERE name = ?1 AND owner = ?2",
                params![name, owner],
            );
        }
    }
}

impl fmt::Debug for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hold").field("owner", &self.owner).finish()
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.renew.abort();
        if self.released {
            return;
        }
        let release = self.delete();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(release)),
            Err(_) => release(),
        }
    }
}

impl Lease for SqliteLease {
    fn acquire<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<LeaseGuard, ProjectionError>> {
        self.try_acquire(name).boxed()
    }

    fn check(&self) -> Result<(), String> {
        if self.ttl < Duration::from_millis(30) {
            return Err(format!(
                "the SQLite lease's ttl must be at least 30 ms, not {:?}",
                self.ttl
            ));
        }
        if self.retry_interval.is_zero() {
            return Err("the SQLite lease's retry interval must be above zero".to_owned());
        }
        Ok(())
    }
}
