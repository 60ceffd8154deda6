use crate::{Lease, LeaseGuard, ProjectionError};
use futures::{FutureExt, future::BoxFuture};
use std::{fmt, sync::Arc, time::Duration};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_postgres::{Client, NoTls};
use tracing::debug;

/// A lease across processes: a session-level PostgreSQL advisory lock
/// (`pg_try_advisory_lock`) on a dedicated connection.
///
/// A second instance retries every `retry_interval` and takes over as soon as
/// the holder releases it: when the holder stops, or dies (its connection
/// closes and the server frees the lock). The holder checks its connection
/// every `check_interval`; if the connection breaks, the lease counts as lost
/// and the projection stops handling until it acquires the lease again.
///
/// The lock key is a 64-bit FNV-1a hash of the lease's
/// [`scope`](PostgresLease::scope) and the projection's name (see
/// [`key`](PostgresLease::key)), so that projections of the same name kept
/// in different schemas of one database do not exclude each other. The
/// scope is the log's schema with [`for_log`](PostgresLease::for_log), and
/// `public` otherwise; instances that must exclude each other need the same
/// scope.
/// [`for_log`](PostgresLease::for_log) connects as the log does, TLS
/// included; [`new`](PostgresLease::new) and
/// [`from_url`](PostgresLease::from_url) connect without TLS (for servers on
/// a trusted network).
///
/// ```no_run
/// use eventsourced_projection::postgres::PostgresLease;
/// let lease = PostgresLease::from_url("postgres://postgres@127.0.0.1:5432/test").unwrap();
/// ```
#[derive(Clone)]
pub struct PostgresLease {
    server: Server,
    scope: String,
    retry_interval: Duration,
    check_interval: Duration,
}

/// Where and how the lease connects.
#[derive(Clone)]
enum Server {
    /// Without TLS.
    Plain(Box<tokio_postgres::Config>),
    /// As the event log of this config does, TLS as its `tls_mode` says.
    Log(Box<eventsourced_postgres::PostgresConfig>),
}

impl fmt::Debug for PostgresLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Both configs redact the password in their Debug output.
        let server: &dyn fmt::Debug = match &self.server {
            Server::Plain(config) => config,
            Server::Log(config) => config,
        };
        f.debug_struct("PostgresLease")
            .field("server", server)
            .field("scope", &self.scope)
            .field("retry_interval", &self.retry_interval)
            .field("check_interval", &self.check_interval)
            .finish()
    }
}

impl PostgresLease {
    /// A lease on the server of `config`, in the scope `public`; retries
    /// every 500 ms, checks every 1 s. Without a connect timeout in
    /// `config`, connecting gives up after 10 s.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use deadpool_postgres::{Manager, Pool};
    /// # use eventsourced_projection::postgres::tokio_postgres::NoTls;
    /// # let url = std::env::var("DATABASE_URL")
    /// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    /// # let pool = Pool::builder(Manager::new(url.parse().unwrap(), NoTls)).max_size(2).build().unwrap();
    /// # let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    /// # let schema = format!("doc_leasenew_{}_{nanos}", std::process::id());
    /// use eventsourced_projection::{Lease, postgres::PostgresLease};
    ///
    /// let lease = PostgresLease::new(url.parse().unwrap());
    /// let guard = lease.acquire(&schema).await.unwrap();
    /// guard.release().await;
    /// let again = tokio::time::timeout(std::time::Duration::from_secs(10), lease.acquire(&schema)).await;
    /// assert!(again.expect("free again").is_ok());
    /// # pool.get().await.unwrap().batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.unwrap();
    /// # }
    /// ```
    pub fn new(mut config: tokio_postgres::Config) -> Self {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        PostgresLease {
            server: Server::Plain(Box::new(config)),
            scope: "public".to_owned(),
            retry_interval: Duration::from_millis(500),
            check_interval: Duration::from_secs(1),
        }
    }

    /// A lease on the server of `log`, with its connection settings (host,
    /// port, user, password, database, connect timeout, TLS) and an
    /// `application_name` of `<its application name>-lease`, in the scope of
    /// the log's schema (where [`PostgresOffsetStore::for_log`] keeps the
    /// offsets).
    ///
    /// [`PostgresOffsetStore::for_log`]: crate::postgres::PostgresOffsetStore::for_log
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use deadpool_postgres::{Manager, Pool};
    /// # use eventsourced_projection::postgres::tokio_postgres::NoTls;
    /// # let url = std::env::var("DATABASE_URL")
    /// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    /// # let pool = Pool::builder(Manager::new(url.parse().unwrap(), NoTls)).max_size(2).build().unwrap();
    /// # let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    /// # let schema = format!("doc_leaselog_{}_{nanos}", std::process::id());
    /// # let mut config = eventsourced_postgres::PostgresConfig::from_url(&url).unwrap();
    /// # config.schema = schema.clone();
    /// # let log = eventsourced_postgres::PostgresEventLog::new(config).await.unwrap();
    /// # log.setup().await.unwrap();
    /// use eventsourced_projection::{Lease, postgres::PostgresLease};
    ///
    /// // `log`: a PostgresEventLog; the lease connects to its server.
    /// let lease = PostgresLease::for_log(&log);
    /// let guard = lease.acquire(&schema).await.unwrap();
    /// guard.release().await;
    /// # log.pool().get().await.unwrap().batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.unwrap();
    /// # }
    /// ```
    pub fn for_log(log: &eventsourced_postgres::PostgresEventLog) -> Self {
        let mut config = log.config().clone();
        config.application_name = format!("{}-lease", config.application_name);
        PostgresLease {
            scope: config.schema.clone(),
            server: Server::Log(Box::new(config)),
            ..Self::new(tokio_postgres::Config::new())
        }
    }

    /// A lease on the server of a `postgres://` URL or key=value string.
    ///
    /// ```
    /// use eventsourced_projection::{ProjectionError, postgres::PostgresLease};
    ///
    /// assert!(PostgresLease::from_url("host=127.0.0.1 user=postgres dbname=test").is_ok());
    /// let error = PostgresLease::from_url("postgres://127.0.0.1:not-a-port/test").unwrap_err();
    /// assert!(matches!(error, ProjectionError::InvalidConfig { .. }));
    /// ```
    pub fn from_url(url: &str) -> Result<Self, ProjectionError> {
        let config =
            url.parse::<tokio_postgres::Config>()
                .map_err(|e| ProjectionError::InvalidConfig {
                    what: "postgres lease url",
                    reason: e.to_string(),
                })?;
        Ok(Self::new(config))
    }

    /// The scope of the lock keys, `public` unless set: usually the schema
    /// of the projection's offsets. Leases in different scopes never exclude
    /// each other, whatever the projection names.
    ///
    /// ```
    /// use eventsourced_projection::postgres::PostgresLease;
    ///
    /// let lease = PostgresLease::from_url("postgres://postgres@127.0.0.1/test").unwrap();
    /// assert!(format!("{lease:?}").contains(r#"scope: "public""#));
    /// let lease = lease.scope("billing");
    /// assert!(format!("{lease:?}").contains(r#"scope: "billing""#));
    /// ```
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = scope.into();
        self
    }

    /// How often a waiting instance tries to take the lock.
    ///
    /// ```
    /// use eventsourced_projection::postgres::PostgresLease;
    /// use std::time::Duration;
    ///
    /// let lease = PostgresLease::from_url("postgres://postgres@127.0.0.1/test").unwrap();
    /// let lease = lease.retry_interval(Duration::from_millis(200));
    /// assert!(format!("{lease:?}").contains("retry_interval: 200ms"));
    /// ```
    pub fn retry_interval(mut self, d: Duration) -> Self {
        self.retry_interval = d;
        self
    }

    /// How often the holder checks its connection.
    ///
    /// ```
    /// use eventsourced_projection::postgres::PostgresLease;
    /// use std::time::Duration;
    ///
    /// let lease = PostgresLease::from_url("postgres://postgres@127.0.0.1/test").unwrap();
    /// let lease = lease.check_interval(Duration::from_secs(3));
    /// assert!(format!("{lease:?}").contains("check_interval: 3s"));
    /// ```
    pub fn check_interval(mut self, d: Duration) -> Self {
        self.check_interval = d;
        self
    }

    /// The advisory lock key of the projection `name` in `scope`: the
    /// FNV-1a hash of `eventsourced-projection/<scope length>:<scope>/<name>`
    /// (the length keeps scope `a/b` with name `c` apart from scope `a` with
    /// name `b/c`).
    ///
    /// ```
    /// use eventsourced_projection::postgres::PostgresLease;
    ///
    /// assert_eq!(PostgresLease::key("public", "totals"), PostgresLease::key("public", "totals"));
    /// assert_ne!(PostgresLease::key("public", "totals"), PostgresLease::key("public", "balances"));
    /// assert_ne!(PostgresLease::key("public", "totals"), PostgresLease::key("billing", "totals"));
    /// ```
    pub fn key(scope: &str, name: &str) -> i64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let prefix = format!("eventsourced-projection/{}:{scope}/", scope.len());
        for byte in prefix.bytes().chain(name.bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        i64::from_ne_bytes(hash.to_ne_bytes())
    }

    async fn try_acquire(&self, name: &str) -> Result<LeaseGuard, ProjectionError> {
        let lease_err = |reason: String| ProjectionError::Lease {
            name: name.to_owned(),
            reason,
        };
        let (client, connection) = match &self.server {
            Server::Plain(config) => config
                .connect(NoTls)
                .await
                .map(|(client, connection)| (client, connection.boxed()))
                .map_err(|e| lease_err(format!("cannot connect: {}", crate::error::chain(&e))))?,
            Server::Log(config) => config
                .connect_session()
                .await
                .map_err(|e| lease_err(format!("cannot connect: {e}")))?,
        };
        let (lost_tx, mut lost_rx) = mpsc::channel::<String>(2);
        let connection_lost = lost_tx.clone();
        let connection_task = AbortOnDrop(tokio::spawn(async move {
            let reason = match connection.await {
                Ok(()) => "the lease connection closed".to_owned(),
                Err(e) => format!("the lease connection failed: {}", crate::error::chain(&e)),
            };
            let _ = connection_lost.send(reason).await;
        }));
        let key = Self::key(&self.scope, name);
        loop {
            let locked: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                .await
                .map_err(|e| {
                    lease_err(format!(
                        "cannot take the advisory lock: {}",
                        crate::error::chain(&e)
                    ))
                })?
                .get(0);
            if locked {
                break;
            }
            tokio::time::sleep(self.retry_interval).await;
        }
        debug!(
            projection = name,
            scope = self.scope,
            key,
            "advisory lock taken"
        );
        let client = Arc::new(client);
        let check_interval = self.check_interval;
        let checker = client.clone();
        let check_task = AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(check_interval).await;
                let check = tokio::time::timeout(
                    check_interval.max(Duration::from_secs(1)) * 5,
                    checker.simple_query("SELECT 1"),
                )
                .await;
                let reason = match check {
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => {
                        format!("the lease connection failed: {}", crate::error::chain(&e))
                    }
                    Err(_) => "the lease connection does not answer".to_owned(),
                };
                let _ = lost_tx.send(reason).await;
                return;
            }
        }));
        let hold = Hold {
            check_task,
            client,
            _connection_task: connection_task,
            key,
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

/// Dropped in field order: the check task first (it holds a client clone),
/// then the client (closing the connection, which frees the lock once the
/// server notices).
struct Hold {
    check_task: AbortOnDrop,
    client: Arc<Client>,
    _connection_task: AbortOnDrop,
    key: i64,
}

impl Hold {
    /// Unlocks, so that the lock is free when this returns (unless the
    /// connection is gone, which frees it too), then closes the connection.
    async fn release(self) {
        self.check_task.0.abort();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.client
                .execute("SELECT pg_advisory_unlock($1)", &[&self.key]),
        )
        .await;
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Lease for PostgresLease {
    fn acquire<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<LeaseGuard, ProjectionError>> {
        self.try_acquire(name).boxed()
    }

    fn check(&self) -> Result<(), String> {
        if self.retry_interval.is_zero() || self.check_interval.is_zero() {
            return Err(
                "the PostgreSQL lease's retry and check intervals must be above zero".to_owned(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_stable_and_distinct() {
        let key = super::PostgresLease::key;
        let a = key("s", "a");
        assert_eq!(a, key("s", "a"));
        assert_ne!(a, key("s", "b"));
        assert_ne!(a, key("t", "a"));
        assert_ne!(key("a/b", "c"), key("a", "b/c"));
    }
}
