//! The serde configuration shared by [`NatsEventLog`](crate::NatsEventLog) and
//! [`NatsSnapshotStore`](crate::NatsSnapshotStore).

use crate::{NatsError, subject};
use async_nats::ServerAddr;
use serde::{Deserialize, Deserializer, Serialize};
use std::{fmt, path::PathBuf, time::Duration};

/// How to reach NATS and where to keep events and snapshots.
///
/// Deserializes from kebab-case keys; every key is optional:
///
/// ```
/// use eventsourced_nats::{NatsAuth, NatsConfig, Storage};
///
/// let config: NatsConfig = serde_json::from_str(
///     r#"{
///         "servers": ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"],
///         "auth": { "method": "user-password", "user": "app", "password": "s3cret" },
///         "stream": "orders",
///         "subject-prefix": "orders.events",
///         "bucket": "orders-snapshots",
///         "storage": "file",
///         "replicas": 3,
///         "max-bytes": 10000000000,
///         "request-timeout": "3s"
///     }"#,
/// )
/// .unwrap();
/// assert_eq!(config.replicas, 3);
/// assert!(matches!(config.auth, NatsAuth::UserPassword { .. }));
/// assert!(!format!("{config:?}").contains("s3cret"));
///
/// let default = NatsConfig::default();
/// assert_eq!(default.servers, vec!["nats://127.0.0.1:4222".to_owned()]);
/// assert_eq!(default.stream, "eventsourced");
/// assert_eq!(default.bucket, "eventsourced-snapshots");
/// assert_eq!(default.storage, Storage::File);
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URLs (`nats://host:port`, `tls://host:port`); the client picks one
    /// and fails over to the others. Deserializes from a list or from one
    /// string of comma-separated URLs. Credentials in a URL (everything up to
    /// the last `@`) are redacted in `Debug` and in errors; percent-encode
    /// `/ ? # @ :` in a user name or password.
    #[serde(
        default = "default_servers",
        deserialize_with = "one_or_many",
        alias = "url"
    )]
    pub servers: Vec<String>,

    /// How the client authenticates.
    #[serde(default)]
    pub auth: NatsAuth,

    /// TLS settings; `None` uses TLS only if the URL or the server asks for it.
    #[serde(default)]
    pub tls: Option<TlsConfig>,

    /// The JetStream stream holding the events: `A-Z a-z 0-9 - _`, 1 to 200
    /// characters, not beginning with `KV_` or `OBJ_` (JetStream keeps those
    /// names for the streams of key-value buckets and object stores).
    #[serde(default = "default_stream")]
    pub stream: String,

    /// The first subject tokens of every event: the stream stores
    /// `<subject-prefix>.>`. Dot-separated tokens of `A-Z a-z 0-9 - _`, at
    /// most 256 bytes, the first token not `_INBOX` (the client's replies and
    /// publish acks travel there, and the stream would store them all).
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,

    /// The key-value bucket holding the snapshots: `A-Z a-z 0-9 - _`.
    #[serde(default = "default_bucket")]
    pub bucket: String,

    /// Where the server keeps the stream and the bucket.
    #[serde(default)]
    pub storage: Storage,

    /// Copies of the stream and the bucket in a cluster (1 to 5). With 3, an
    /// acknowledged append survives the loss of one server.
    #[serde(default = "default_replicas")]
    pub replicas: usize,

    /// The most bytes the stream (and, separately, the bucket) may hold;
    /// `None` is unlimited. A full stream refuses appends; it never discards
    /// old events.
    #[serde(default)]
    pub max_bytes: Option<u64>,

    /// How long to wait for a publish acknowledgement or a JetStream API reply.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,

    /// How long to wait for the TCP (and TLS) connection to a server.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,

    /// The connection name the server shows in its monitoring.
    #[serde(default)]
    pub client_name: Option<String>,
}

/// The default server: a local nats-server.
fn default_servers() -> Vec<String> {
    vec!["nats://127.0.0.1:4222".to_owned()]
}
fn default_stream() -> String {
    "eventsourced".to_owned()
}
fn default_subject_prefix() -> String {
    "eventsourced".to_owned()
}
fn default_bucket() -> String {
    "eventsourced-snapshots".to_owned()
}
fn default_replicas() -> usize {
    1
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            servers: default_servers(),
            auth: NatsAuth::default(),
            tls: None,
            stream: default_stream(),
            subject_prefix: default_subject_prefix(),
            bucket: default_bucket(),
            storage: Storage::default(),
            replicas: default_replicas(),
            max_bytes: None,
            request_timeout: default_request_timeout(),
            connect_timeout: default_connect_timeout(),
            client_name: None,
        }
    }
}

impl NatsConfig {
    /// The defaults with the servers of `url`: one URL or several separated by
    /// commas, e.g. the value of `NATS_URL`.
    ///
    /// ```
    /// let config = eventsourced_nats::NatsConfig::from_url("nats://a:4222, nats://b:4222");
    /// assert_eq!(config.servers, vec!["nats://a:4222", "nats://b:4222"]);
    /// ```
    pub fn from_url(url: &str) -> Self {
        NatsConfig {
            servers: split_urls(url),
            ..NatsConfig::default()
        }
    }

    /// Checks every field; [`NatsEventLog::new`](crate::NatsEventLog::new) and
    /// [`NatsSnapshotStore::new`](crate::NatsSnapshotStore::new) call it.
    ///
    /// ```
    /// let mut config = eventsourced_nats::NatsConfig::default();
    /// config.stream = "has.dots".to_owned();
    /// let error = config.validate().unwrap_err();
    /// assert!(error.to_string().contains("stream"));
    /// ```
    pub fn validate(&self) -> Result<(), NatsError> {
        self.server_addrs()?;
        check_name("stream", &self.stream)?;
        check_stream_not_reserved(&self.stream)?;
        check_name("bucket", &self.bucket)?;
        subject::check_prefix(&self.subject_prefix).map_err(|reason| NatsError::Config {
            field: "subject-prefix",
            reason,
        })?;
        if !(1..=5).contains(&self.replicas) {
            return Err(NatsError::Config {
                field: "replicas",
                reason: format!("is {}; JetStream supports 1 to 5", self.replicas),
            });
        }
        if let Some(max) = self.max_bytes
            && (i64::try_from(max).is_err() || max == 0)
        {
            return Err(NatsError::Config {
                field: "max-bytes",
                reason: format!("is {max}; use 1 to {} or leave it unset", i64::MAX),
            });
        }
        for (field, value) in [
            ("request-timeout", self.request_timeout),
            ("connect-timeout", self.connect_timeout),
        ] {
            if value.is_zero() {
                return Err(NatsError::Config {
                    field,
                    reason: "must be longer than zero".to_owned(),
                });
            }
        }
        if let Some(tls) = &self.tls
            && tls.cert_file.is_some() != tls.key_file.is_some()
        {
            return Err(NatsError::Config {
                field: "tls",
                reason: "cert-file and key-file go together: set both or neither".to_owned(),
            });
        }
        match &self.auth {
            NatsAuth::UserPassword { user, .. } if user.is_empty() => Err(NatsError::Config {
                field: "auth.user",
                reason: "must not be empty".to_owned(),
            }),
            NatsAuth::Token { token } if token.expose().is_empty() => Err(NatsError::Config {
                field: "auth.token",
                reason: "must not be empty".to_owned(),
            }),
            NatsAuth::Nkey { seed } if seed.expose().is_empty() => Err(NatsError::Config {
                field: "auth.seed",
                reason: "must not be empty".to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// The parsed server URLs.
    pub(crate) fn server_addrs(&self) -> Result<Vec<ServerAddr>, NatsError> {
        if self.servers.is_empty() {
            return Err(NatsError::Config {
                field: "servers",
                reason: "no server URL given; e.g. nats://127.0.0.1:4222".to_owned(),
            });
        }
        self.servers
            .iter()
            .map(|url| {
                url.parse::<ServerAddr>().map_err(|e| NatsError::Config {
                    field: "servers",
                    // Redacted: an unparsable URL is often one whose password
                    // holds a character that ends the authority.
                    reason: format!(
                        "{} is not a NATS URL: {e}{}",
                        redact_url(url),
                        if url.contains('@') {
                            "; percent-encode `/ ? # @ :` in a user name or password (e.g. `/` as %2F)"
                        } else {
                            ""
                        }
                    ),
                })
            })
            .collect()
    }

    /// The server URLs without credentials, for messages.
    pub(crate) fn servers_for_display(&self) -> String {
        self.servers
            .iter()
            .map(|url| redact_url(url))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let servers: Vec<String> = self.servers.iter().map(|s| redact_url(s)).collect();
        f.debug_struct("NatsConfig")
            .field("servers", &servers)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .field("bucket", &self.bucket)
            .field("storage", &self.storage)
            .field("replicas", &self.replicas)
            .field("max_bytes", &self.max_bytes)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("client_name", &self.client_name)
            .finish()
    }
}

/// How the client authenticates to the server.
///
/// In config files: `{ "method": "token", "token": "..." }`,
/// `{ "method": "user-password", "user": "...", "password": "..." }`,
/// `{ "method": "credentials-file", "path": "/etc/nats/app.creds" }`,
/// `{ "method": "nkey", "seed": "SU..." }` or `{ "method": "none" }`.
///
/// ```
/// use eventsourced_nats::NatsAuth;
///
/// let auth: NatsAuth = serde_json::from_str(r#"{ "method": "token", "token": "t0ken" }"#)?;
/// let NatsAuth::Token { token } = &auth else { panic!("not a token: {auth:?}") };
/// assert_eq!(token.expose(), "t0ken");
/// assert!(!format!("{auth:?}").contains("t0ken"));
/// assert_eq!(NatsAuth::default(), NatsAuth::None);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub enum NatsAuth {
    /// No credentials (or credentials in the server URL).
    #[default]
    None,
    /// A user name and password.
    UserPassword {
        /// The user name.
        user: String,
        /// The password.
        password: Secret,
    },
    /// A token.
    Token {
        /// The token.
        token: Secret,
    },
    /// A `.creds` file with a user JWT and its nkey seed (NATS decentralized auth).
    CredentialsFile {
        /// The file's path.
        path: PathBuf,
    },
    /// An nkey seed (`SU...`); the server knows the public key.
    Nkey {
        /// The seed.
        seed: Secret,
    },
}

impl NatsConfig {
    /// How the client authenticates, for messages: with no `auth`, the
    /// credentials in a server URL (`nats://user:pass@host`) if there are.
    pub(crate) fn auth_method(&self) -> &'static str {
        match self.auth {
            NatsAuth::None if self.servers.iter().any(|url| url.contains('@')) => {
                "credentials in the server URL"
            }
            _ => self.auth.method(),
        }
    }
}

impl NatsAuth {
    /// The method's name, for messages.
    pub(crate) fn method(&self) -> &'static str {
        match self {
            NatsAuth::None => "no credentials",
            NatsAuth::UserPassword { .. } => "user and password",
            NatsAuth::Token { .. } => "token",
            NatsAuth::CredentialsFile { .. } => "credentials file",
            NatsAuth::Nkey { .. } => "nkey",
        }
    }
}

/// A secret string: `Debug` and serialization print `"[redacted]"`, never
/// the value (so a config dumped to a log shows no secret; like
/// `PostgresConfig`'s password, a secret does not survive serializing).
///
/// ```
/// let secret = eventsourced_nats::Secret::new("hunter2");
/// assert_eq!(format!("{secret:?}"), "\"[redacted]\"");
/// assert_eq!(serde_json::to_string(&secret).unwrap(), "\"[redacted]\"");
/// assert_eq!(secret.expose(), "hunter2");
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

impl Secret {
    /// Wraps a secret.
    ///
    /// ```
    /// use eventsourced_nats::{NatsAuth, NatsConfig, Secret};
    ///
    /// let mut config = NatsConfig::default();
    /// config.auth = NatsAuth::Token { token: Secret::new("t0ken") };
    /// assert!(!format!("{config:?}").contains("t0ken"));
    /// ```
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret itself, to hand to the client.
    ///
    /// ```
    /// let secret = eventsourced_nats::Secret::new(String::from("hunter2"));
    /// assert_eq!(secret.expose(), "hunter2");
    /// ```
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"[redacted]\"")
    }
}

/// TLS settings.
///
/// Each file given is read before connecting: one that cannot be read is a
/// [`NatsError::TlsFile`] naming its field (`tls.ca-file`, `tls.cert-file`,
/// `tls.key-file`) and path.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use eventsourced_nats::{NatsConfig, NatsError, NatsEventLog};
///
/// let config: NatsConfig = serde_json::from_str(
///     r#"{ "tls": { "required": true, "ca-file": "/nonexistent/ca.pem" } }"#,
/// )?;
/// assert!(config.tls.as_ref().is_some_and(|tls| tls.required));
/// // The missing file is reported before connecting:
/// let error = NatsEventLog::new(config).await.unwrap_err();
/// assert!(matches!(error, NatsError::TlsFile { field: "tls.ca-file", .. }));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TlsConfig {
    /// Refuse to talk to a server without TLS.
    #[serde(default)]
    pub required: bool,
    /// A PEM file of CA certificates to trust besides the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate (mutual TLS); needs `key-file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The PEM private key of `cert-file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Start TLS before the server's INFO (servers with `handshake_first`).
    #[serde(default)]
    pub handshake_first: bool,
}

/// Where JetStream keeps the stream and the bucket.
///
/// ```
/// use eventsourced_nats::{NatsConfig, Storage};
///
/// assert_eq!(Storage::default(), Storage::File);
/// let config: NatsConfig = serde_json::from_str(r#"{ "storage": "memory" }"#)?;
/// assert_eq!(config.storage, Storage::Memory);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Storage {
    /// On disk (survives a server restart).
    #[default]
    File,
    /// In memory (lost when the server stops): for tests.
    Memory,
}

impl Storage {
    pub(crate) fn to_nats(self) -> async_nats::jetstream::stream::StorageType {
        match self {
            Storage::File => async_nats::jetstream::stream::StorageType::File,
            Storage::Memory => async_nats::jetstream::stream::StorageType::Memory,
        }
    }
}

fn check_name(field: &'static str, name: &str) -> Result<(), NatsError> {
    if name.is_empty() || name.len() > 200 {
        return Err(NatsError::Config {
            field,
            reason: format!("{name:?} must be 1 to 200 characters long"),
        });
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(NatsError::Config {
            field,
            reason: format!("{name:?} contains {bad:?}; use only A-Z a-z 0-9 - _"),
        });
    }
    Ok(())
}

/// Refuses the stream names JetStream gives to the streams of key-value
/// buckets (`KV_<bucket>`) and object stores (`OBJ_<bucket>`): `setup` on such
/// a name would take over a bucket's stream, e.g. the snapshots' own.
fn check_stream_not_reserved(name: &str) -> Result<(), NatsError> {
    match ["KV_", "OBJ_"]
        .into_iter()
        .find(|reserved| name.starts_with(reserved))
    {
        Some(reserved) => Err(NatsError::Config {
            field: "stream",
            reason: format!(
                "{name:?} begins with {reserved:?}, which JetStream reserves for the streams of key-value buckets and object stores; choose another name"
            ),
        }),
        None => Ok(()),
    }
}

fn split_urls(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(urls) => split_urls(&urls),
        OneOrMany::Many(urls) => urls,
    })
}

/// A URL with any `user:password@` replaced by `[redacted]@`.
///
/// Everything between `://` (or the start) and the **last** `@` is redacted,
/// wherever a `/`, `?`, `#` or `@` stands before it: a password pasted without
/// percent-encoding may hold any of them, and a URL that cannot be parsed is
/// still shown (in the config error) through this function. Cutting at the
/// first `/` instead would leave `pa/ss@` of `nats://app:pa/ss@host` in
/// plain sight. A NATS URL has no path, so nothing useful is lost when an `@`
/// further right hides more than the credentials.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let redacted = match rest.rfind('@') {
        Some(at) => format!("[redacted]@{}", &rest[at + 1..]),
        None => rest.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{redacted}"),
        None => redacted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_credentials_are_redacted() {
        assert_eq!(
            redact_url("nats://app:s3cret@host:4222"),
            "nats://[redacted]@host:4222"
        );
        assert_eq!(redact_url("tok@host"), "[redacted]@host");
        assert_eq!(redact_url("nats://host:4222"), "nats://host:4222");
        for url in [
            "nats://app:pa/ss@host:4222",
            "nats://app:pa?ss@host:4222",
            "nats://app:pa#ss@host:4222",
            "nats://app:pa@ss@host:4222",
        ] {
            assert_eq!(redact_url(url), "nats://[redacted]@host:4222", "{url}");
        }
        let config = NatsConfig {
            auth: NatsAuth::Token {
                token: Secret::new("tok-123"),
            },
            ..NatsConfig::from_url("nats://u:pw-456@h:1")
        };
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("pw-456") && !debug.contains("tok-123"),
            "{debug}"
        );
        assert!(!config.servers_for_display().contains("pw-456"));
    }

    #[test]
    fn invalid_fields_name_themselves() {
        let cases: Vec<(&str, NatsConfig)> = vec![
            (
                "servers",
                NatsConfig {
                    servers: vec![],
                    ..NatsConfig::default()
                },
            ),
            ("servers", NatsConfig::from_url("http://x:1")),
            (
                "stream",
                NatsConfig {
                    stream: "KV_eventsourced-snapshots".to_owned(),
                    ..NatsConfig::default()
                },
            ),
            (
                "stream",
                NatsConfig {
                    stream: "OBJ_files".to_owned(),
                    ..NatsConfig::default()
                },
            ),
            (
                "subject-prefix",
                NatsConfig {
                    subject_prefix: "_INBOX.app".to_owned(),
                    ..NatsConfig::default()
                },
            ),
            (
                "subject-prefix",
                NatsConfig {
                    subject_prefix: "p".repeat(257),
                    ..NatsConfig::default()
                },
            ),
            (
                "bucket",
                NatsConfig {
                    bucket: "a.b".to_owned(),
                    ..NatsConfig::default()
                },
            ),
            (
                "subject-prefix",
                NatsConfig {
                    subject_prefix: "a.*".to_owned(),
                    ..NatsConfig::default()
                },
            ),
            (
                "replicas",
                NatsConfig {
                    replicas: 0,
                    ..NatsConfig::default()
                },
            ),
            (
                "max-bytes",
                NatsConfig {
                    max_bytes: Some(u64::MAX),
                    ..NatsConfig::default()
                },
            ),
        ];
        for (field, config) in cases {
            match config.validate() {
                Err(NatsError::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected a config error, got {other:?}"),
            }
        }
        assert!(NatsConfig::default().validate().is_ok());
    }

    #[test]
    fn servers_deserialize_from_a_string_or_a_list() {
        let one: NatsConfig =
            serde_json::from_str(r#"{"url": "nats://a:1,nats://b:2"}"#).expect("deserializes");
        assert_eq!(one.servers, vec!["nats://a:1", "nats://b:2"]);
        let many: NatsConfig =
            serde_json::from_str(r#"{"servers": ["nats://a:1"], "storage": "memory"}"#)
                .expect("deserializes");
        assert_eq!(many.servers, vec!["nats://a:1"]);
        assert_eq!(many.storage, Storage::Memory);
        assert!(serde_json::from_str::<NatsConfig>(r#"{"unknown": 1}"#).is_err());
        let round_trip: NatsConfig =
            serde_json::from_str(&serde_json::to_string(&NatsConfig::default()).expect("ser"))
                .expect("de");
        assert_eq!(round_trip, NatsConfig::default());
    }
}
