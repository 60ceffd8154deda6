//! Connection and table settings: [`PostgresConfig`].

use crate::{PostgresError, tables::Tables};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use serde::{Deserialize, Serialize};
use std::{fmt, path::PathBuf, str::FromStr, time::Duration};
use tokio_postgres::config::{Host, SslMode};

/// How to connect to PostgreSQL, which tables to use, and how to batch.
///
/// Deserializes from kebab-case keys; every key is optional. The password is
/// never shown by `Debug` and never serialized.
///
/// ```
/// use eventsourced_postgres::PostgresConfig;
///
/// let config: PostgresConfig = serde_json::from_str(
///     r#"{ "host": "127.0.0.1", "password": "s3cret", "schema": "app", "pool-size": 4 }"#,
/// )
/// .unwrap();
/// assert_eq!(config.port, 5432);
/// assert!(!format!("{config:?}").contains("s3cret"));
///
/// let from_url = PostgresConfig::from_url("postgres://me:pw@127.0.0.1:5433/shop").unwrap();
/// assert_eq!((from_url.user.as_str(), from_url.port, from_url.dbname.as_str()), ("me", 5433, "shop"));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PostgresConfig {
    /// Host name or IP address (or a Unix socket directory starting with `/`).
    #[serde(default = "default_host")]
    pub host: String,
    /// TCP port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// User name.
    #[serde(default = "default_user")]
    pub user: String,
    /// Password, if the server asks for one. Never logged, never serialized.
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    /// Database name.
    #[serde(default = "default_dbname")]
    pub dbname: String,
    /// Schema holding the tables (created by `setup`). A lowercase identifier.
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Table of the event log. A lowercase identifier of at most 40 bytes.
    #[serde(default = "default_events_table")]
    pub events_table: String,
    /// Table of the snapshot store. A lowercase identifier of at most 40 bytes.
    #[serde(default = "default_snapshots_table")]
    pub snapshots_table: String,
    /// Connections in the pool, all opened by `new` (at least 2, at most
    /// 10 000). One is held by the group-commit writer, which opens one more,
    /// beyond these, only while a direct append (stalled, or abandoned and still
    /// running) holds its own.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Whether to use TLS and how to check the server (see [`TlsMode`]).
    #[serde(default)]
    pub tls_mode: TlsMode,
    /// A PEM file of the CA certificates trusted by `verify-ca` and
    /// `verify-full` (like libpq's `sslrootcert`); unset, the system's roots.
    #[serde(default)]
    pub tls_root_cert: Option<PathBuf>,
    /// How long to wait for a new connection.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long one statement may take before the call fails with a technical
    /// error (the connection is then discarded); also how long a call waits
    /// for a free connection of the pool.
    #[serde(default = "default_statement_timeout", with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// How often a live `events_by_type` stream polls when no notification
    /// arrives (the fallback for lost notifications).
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The most append requests written together in one group commit.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Rows fetched per query by `events_by_type` while catching up.
    #[serde(default = "default_fetch_size")]
    pub fetch_size: u32,
    /// The `application_name` of every connection (shown in `pg_stat_activity`).
    #[serde(default = "default_application_name")]
    pub application_name: String,
}

/// Whether connections use TLS, and what they check of the server's
/// certificate. The modes mean what libpq's `sslmode` values mean.
///
/// ```
/// use eventsourced_postgres::{PostgresConfig, TlsMode};
///
/// assert_eq!(TlsMode::default(), TlsMode::Disable);
/// let config = PostgresConfig::from_url("postgres://app@db.internal/shop?sslmode=require")?;
/// assert_eq!(config.tls_mode, TlsMode::Require);
/// let mode: TlsMode = serde_json::from_str(r#""verify-full""#)?;
/// assert_eq!(mode, TlsMode::VerifyFull);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum TlsMode {
    /// Plain TCP (the default; right for loopback and private networks).
    #[default]
    Disable,
    /// TLS if the server offers it, else plain TCP; the certificate is not
    /// checked.
    Prefer,
    /// Only TLS; the connection is encrypted but the certificate is not
    /// checked (protects against eavesdropping, not against impersonation).
    Require,
    /// Only TLS, with a certificate signed by a trusted CA (`tls-root-cert`,
    /// else the system's roots); the host name is not checked.
    VerifyCa,
    /// Only TLS, with a trusted certificate issued for `host`.
    VerifyFull,
}

impl TlsMode {
    /// Parses a libpq `sslmode` value (`allow` is taken as `prefer`).
    fn from_sslmode(value: &str) -> Option<Self> {
        match value {
            "disable" => Some(TlsMode::Disable),
            "allow" | "prefer" => Some(TlsMode::Prefer),
            "require" => Some(TlsMode::Require),
            "verify-ca" => Some(TlsMode::VerifyCa),
            "verify-full" => Some(TlsMode::VerifyFull),
            _ => None,
        }
    }
}

fn default_host() -> String {
    "127.0.0.1".to_owned()
}
fn default_port() -> u16 {
    5432
}
fn default_user() -> String {
    "postgres".to_owned()
}
fn default_dbname() -> String {
    "test".to_owned()
}
fn default_schema() -> String {
    "public".to_owned()
}
fn default_events_table() -> String {
    "events".to_owned()
}
fn default_snapshots_table() -> String {
    "snapshots".to_owned()
}
/// The most connections in a pool: far beyond what a server allows
/// (`max_connections` is 100 by default), still small enough to allocate.
const MAX_POOL_SIZE: usize = 10_000;

fn default_pool_size() -> usize {
    8
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_statement_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_max_batch() -> usize {
    512
}
fn default_fetch_size() -> u32 {
    5000
}
fn default_application_name() -> String {
    "eventsourced".to_owned()
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            host: default_host(),
            port: default_port(),
            user: default_user(),
            password: None,
            dbname: default_dbname(),
            schema: default_schema(),
            events_table: default_events_table(),
            snapshots_table: default_snapshots_table(),
            pool_size: default_pool_size(),
            tls_mode: TlsMode::default(),
            tls_root_cert: None,
            connect_timeout: default_connect_timeout(),
            statement_timeout: default_statement_timeout(),
            poll_interval: default_poll_interval(),
            max_batch: default_max_batch(),
            fetch_size: default_fetch_size(),
            application_name: default_application_name(),
        }
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("schema", &self.schema)
            .field("events_table", &self.events_table)
            .field("snapshots_table", &self.snapshots_table)
            .field("pool_size", &self.pool_size)
            .field("tls_mode", &self.tls_mode)
            .field("tls_root_cert", &self.tls_root_cert)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("poll_interval", &self.poll_interval)
            .field("max_batch", &self.max_batch)
            .field("fetch_size", &self.fetch_size)
            .field("application_name", &self.application_name)
            .finish()
    }
}

impl PostgresConfig {
    /// Reads host, port, user, password, database, `sslmode` and
    /// `sslrootcert` from a URL like
    /// `postgres://user:password@host:5432/dbname?sslmode=verify-full` (or a
    /// `key=value` connection string); everything else keeps its default.
    /// Without `sslmode`, connections are plain TCP (unlike libpq, whose
    /// `prefer` default can be silently downgraded anyway).
    ///
    /// The error never repeats the URL, since it may hold a password.
    ///
    /// ```
    /// use eventsourced_postgres::{PostgresConfig, TlsMode};
    ///
    /// let config = PostgresConfig::from_url(
    ///     "postgres://app@db.internal/shop?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem",
    /// )
    /// .unwrap();
    /// assert_eq!(config.tls_mode, TlsMode::VerifyFull);
    /// assert_eq!(config.tls_root_cert.as_deref(), Some("/etc/ssl/db-ca.pem".as_ref()));
    /// ```
    pub fn from_url(url: &str) -> Result<Self, PostgresError> {
        let (rest, tls_params) = split_tls_params(url);
        let parsed =
            tokio_postgres::Config::from_str(&rest).map_err(|e| PostgresError::InvalidUrl {
                reason: e.to_string(),
            })?;
        let mut config = PostgresConfig::default();
        for (key, value) in tls_params {
            match key.as_str() {
                "sslmode" => {
                    config.tls_mode =
                        TlsMode::from_sslmode(&value).ok_or_else(|| PostgresError::InvalidUrl {
                            reason: format!(
                                "sslmode {value:?} is not one of disable, allow, prefer, \
                                 require, verify-ca, verify-full"
                            ),
                        })?;
                }
                _ => config.tls_root_cert = Some(PathBuf::from(value)),
            }
        }
        match parsed.get_hosts() {
            [] => {}
            [Host::Tcp(host)] => config.host.clone_from(host),
            [Host::Unix(path)] => {
                config.host =
                    path.to_str()
                        .map(str::to_owned)
                        .ok_or_else(|| PostgresError::InvalidUrl {
                            reason: "the Unix socket path is not valid UTF-8".to_owned(),
                        })?;
            }
            _ => {
                return Err(PostgresError::InvalidUrl {
                    reason: "several hosts are not supported; name one".to_owned(),
                });
            }
        }
        match parsed.get_ports() {
            [] => {}
            [port] => config.port = *port,
            _ => {
                return Err(PostgresError::InvalidUrl {
                    reason: "several ports are not supported; name one".to_owned(),
                });
            }
        }
        if let Some(user) = parsed.get_user() {
            config.user = user.to_owned();
        }
        if let Some(password) = parsed.get_password() {
            config.password = Some(String::from_utf8(password.to_vec()).map_err(|_| {
                PostgresError::InvalidUrl {
                    reason: "the password is not valid UTF-8".to_owned(),
                }
            })?);
        }
        if let Some(dbname) = parsed.get_dbname() {
            config.dbname = dbname.to_owned();
        }
        if let Some(timeout) = parsed.get_connect_timeout() {
            config.connect_timeout = *timeout;
        }
        Ok(config)
    }

    /// [`from_url`](Self::from_url) with the `DATABASE_URL` environment
    /// variable, or the [`Default`] config (127.0.0.1:5432, user `postgres`,
    /// database `test`) when it is not set.
    ///
    /// ```
    /// # use eventsourced_postgres::PostgresConfig;
    /// let config = PostgresConfig::from_env().expect("DATABASE_URL must be a valid URL if set");
    /// # let _ = config;
    /// ```
    pub fn from_env() -> Result<Self, PostgresError> {
        match std::env::var("DATABASE_URL") {
            Ok(url) => Self::from_url(&url),
            Err(std::env::VarError::NotPresent) => Ok(Self::default()),
            Err(std::env::VarError::NotUnicode(_)) => Err(PostgresError::InvalidUrl {
                reason: "DATABASE_URL is not valid UTF-8".to_owned(),
            }),
        }
    }

    /// The validated table names of this config.
    pub(crate) fn tables(&self) -> Result<Tables, PostgresError> {
        Tables::new(&self.schema, &self.events_table, &self.snapshots_table)
    }

    /// Checks the settings that do not need a server.
    pub(crate) fn validate(&self) -> Result<Tables, PostgresError> {
        let invalid = |field: &'static str, reason: &str| PostgresError::InvalidConfig {
            field,
            reason: reason.to_owned(),
        };
        if self.host.is_empty() {
            return Err(invalid("host", "must not be empty"));
        }
        // The protocol's strings end at NUL: the driver could not send it,
        // and would blame the connection.
        for (field, value) in [
            ("host", self.host.as_str()),
            ("user", &self.user),
            ("dbname", &self.dbname),
            ("application-name", &self.application_name),
            ("password", self.password.as_deref().unwrap_or_default()),
        ] {
            if value.contains('\0') {
                return Err(invalid(field, "must not contain a NUL character (\\0)"));
            }
        }
        if self.user.is_empty() {
            return Err(invalid("user", "must not be empty"));
        }
        if self.dbname.is_empty() {
            return Err(invalid("dbname", "must not be empty"));
        }
        if !(2..=MAX_POOL_SIZE).contains(&self.pool_size) {
            return Err(invalid(
                "pool-size",
                "must be at least 2 (the group-commit writer holds one connection) and at most 10000",
            ));
        }
        if self.max_batch == 0 {
            return Err(invalid("max-batch", "must be at least 1"));
        }
        if self.fetch_size == 0 || self.fetch_size > 1_000_000 {
            return Err(invalid("fetch-size", "must be between 1 and 1000000"));
        }
        for (field, duration) in [
            ("connect-timeout", self.connect_timeout),
            ("statement-timeout", self.statement_timeout),
            ("poll-interval", self.poll_interval),
        ] {
            if duration.is_zero() {
                return Err(invalid(field, "must be longer than zero"));
            }
        }
        self.tls()?;
        self.tables()
    }

    /// The driver's config: connection settings only.
    pub(crate) fn pg_config(&self) -> tokio_postgres::Config {
        let mut pg = tokio_postgres::Config::new();
        pg.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name(&self.application_name)
            .connect_timeout(self.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .ssl_mode(match self.tls_mode {
                TlsMode::Disable => SslMode::Disable,
                TlsMode::Prefer => SslMode::Prefer,
                TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
            });
        if let Some(password) = &self.password {
            pg.password(password.as_bytes());
        }
        pg
    }

    /// Opens one connection of its own with these settings, TLS as
    /// [`tls_mode`](Self::tls_mode) says, outside any pool: for a session that
    /// must stay on one connection, such as a projection's advisory-lock
    /// lease. Returns the client and the connection's future, which the
    /// caller spawns (the client works while it runs).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), eventsourced_postgres::PostgresError> {
    /// let config = eventsourced_postgres::PostgresConfig::from_url("postgres://postgres@127.0.0.1/test")?;
    /// let (client, connection) = config.connect_session().await?;
    /// tokio::spawn(connection);
    /// client.simple_query("SELECT 1").await.ok();
    /// # Ok(()) }
    /// ```
    pub async fn connect_session(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            futures::future::BoxFuture<'static, Result<(), tokio_postgres::Error>>,
        ),
        PostgresError,
    > {
        use futures::FutureExt;
        let failed = |e: tokio_postgres::Error| PostgresError::Connect {
            place: self.place(),
            reason: crate::error::error_chain(&e),
        };
        let pg = self.pg_config();
        if self.tls_mode == TlsMode::Disable {
            let (client, connection) = pg.connect(tokio_postgres::NoTls).await.map_err(failed)?;
            Ok((client, connection.boxed()))
        } else {
            let (client, connection) = pg.connect(self.tls()?).await.map_err(failed)?;
            Ok((client, connection.boxed()))
        }
    }

    /// The TLS connector for [`tls_mode`](Self::tls_mode): it checks the
    /// certificate chain and host name only as far as the mode asks.
    pub(crate) fn tls(&self) -> Result<MakeTlsConnector, PostgresError> {
        let invalid =
            |field: &'static str, reason: String| PostgresError::InvalidConfig { field, reason };
        let mut builder = SslConnector::builder(SslMethod::tls_client())
            .map_err(|e| invalid("tls-mode", format!("cannot set up OpenSSL: {e}")))?;
        let verify = matches!(self.tls_mode, TlsMode::VerifyCa | TlsMode::VerifyFull);
        if verify {
            if let Some(path) = &self.tls_root_cert {
                builder.set_ca_file(path).map_err(|e| {
                    invalid(
                        "tls-root-cert",
                        format!("cannot read CA certificates from {}: {e}", path.display()),
                    )
                })?;
            }
        } else {
            builder.set_verify(SslVerifyMode::NONE);
        }
        let mut connector = MakeTlsConnector::new(builder.build());
        let check_host = self.tls_mode == TlsMode::VerifyFull;
        connector.set_callback(move |connect, _domain| {
            connect.set_verify_hostname(check_host);
            Ok(())
        });
        Ok(connector)
    }

    /// A pool of [`pool_size`](Self::pool_size) connections over
    /// [`pg_config`](Self::pg_config); connects lazily.
    pub(crate) fn pool(&self) -> Result<Pool, PostgresError> {
        self.pool_of(self.pool_size)
    }

    /// The pools of an event log: `pool_size - 1` connections for reads and
    /// the caller's queries, and one of its own for the group-commit writer,
    /// whose session settings (see the writer) reach no caller's query. The
    /// writer's pool may open a second connection, only while a caller that
    /// appends alone holds the first (see the writer).
    pub(crate) fn log_pools(&self) -> Result<(Pool, Pool), PostgresError> {
        Ok((
            self.pool_of(self.pool_size.saturating_sub(1).max(1))?,
            self.pool_of(2)?,
        ))
    }

    fn pool_of(&self, size: usize) -> Result<Pool, PostgresError> {
        let manager = Manager::from_config(
            self.pg_config(),
            self.tls()?,
            ManagerConfig {
                // No round trip per checkout: a connection that died
                // unnoticed is found by the statement, and reads run again on
                // another one (see `pooled`).
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(self.statement_timeout))
            .create_timeout(Some(self.connect_timeout))
            .recycle_timeout(Some(self.connect_timeout))
            .build()
            .map_err(|e| PostgresError::InvalidConfig {
                field: "pool-size",
                reason: e.to_string(),
            })
    }

    /// Where the server is, for error messages (never the password).
    pub(crate) fn place(&self) -> String {
        format!(
            "{}:{} (database {:?}, user {:?})",
            self.host, self.port, self.dbname, self.user
        )
    }
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query or a `key=value`
/// string (the driver does not know every value of them) and returns the
/// rest and those pairs, in order.
fn split_tls_params(url: &str) -> (String, Vec<(String, String)>) {
    let is_tls = |key: &str| key == "sslmode" || key == "sslrootcert";
    let mut taken = Vec::new();
    let mut keep = |pair: &str| match pair.split_once('=') {
        Some((key, value)) if is_tls(key) => {
            taken.push((key.to_owned(), value.to_owned()));
            false
        }
        _ => true,
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_owned(), taken);
        };
        let kept: Vec<&str> = query.split('&').filter(|pair| keep(pair)).collect();
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        (rest, taken)
    } else {
        // Cut the taken pairs out of the string by their place, leaving the
        // rest (quoted values with spaces included) exactly as written.
        let mut rest = url.to_owned();
        for (range, key, value) in key_value_pairs(url).into_iter().rev() {
            if is_tls(&key) {
                rest.replace_range(range, "");
                taken.push((key, value));
            }
        }
        taken.reverse();
        (rest, taken)
    }
}

/// The pairs of a libpq `key=value` string as libpq reads them: spaces
/// around `=` allowed, values in single quotes may hold spaces, a backslash
/// escapes the next character. Each with its byte range in `s`, its key and
/// its unquoted value. Parsing stops at anything else (the driver reports it).
fn key_value_pairs(s: &str) -> Vec<(std::ops::Range<usize>, String, String)> {
    let mut pairs = Vec::new();
    let mut chars = s.char_indices().peekable();
    let skip_spaces = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_spaces(&mut chars);
        let Some(&(start, _)) = chars.peek() else {
            return pairs;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        skip_spaces(&mut chars);
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return pairs;
        }
        skip_spaces(&mut chars);
        let mut value = String::new();
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        let mut end = s.len();
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '\'' if quoted => {
                    end = at + 1;
                    break;
                }
                c if c.is_whitespace() && !quoted => {
                    end = at;
                    break;
                }
                c => value.push(c),
            }
        }
        pairs.push((start..end, key, value));
    }
}
