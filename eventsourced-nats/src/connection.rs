//! Connecting to NATS with a [`NatsConfig`].

use crate::{NatsAuth, NatsConfig, NatsError, TlsConfig};
use async_nats::{ConnectErrorKind, ConnectOptions, Event, jetstream};
use tokio::sync::watch;
use tracing::{info, warn};

/// Counts the client's (re)connections: live readers restart their consumer
/// when it changes, since a restarted server has lost ephemeral consumers.
pub(crate) type Connections = watch::Receiver<u64>;

/// Connects a client as the config says; the client reconnects on its own
/// (without limit) after the connection is lost.
pub(crate) async fn connect(
    config: &NatsConfig,
) -> Result<(async_nats::Client, Connections), NatsError> {
    config.validate()?;
    let servers = config.server_addrs()?;
    let shown = config.servers_for_display();
    let mut options = match &config.auth {
        NatsAuth::None => ConnectOptions::new(),
        NatsAuth::UserPassword { user, password } => {
            ConnectOptions::with_user_and_password(user.clone(), password.expose().to_owned())
        }
        NatsAuth::Token { token } => ConnectOptions::with_token(token.expose().to_owned()),
        NatsAuth::CredentialsFile { path } => ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|source| NatsError::CredentialsFile {
                path: path.clone(),
                source,
            })?,
        NatsAuth::Nkey { seed } => ConnectOptions::with_nkey(seed.expose().to_owned()),
    };
    if let Some(tls) = &config.tls {
        check_tls_files(tls).await?;
        options = options.require_tls(tls.required);
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if tls.handshake_first {
            options = options.tls_first();
        }
    }
    if let Some(name) = &config.client_name {
        options = options.name(name);
    }
    let events_for = shown.clone();
    let (connections_tx, connections) = watch::channel(0u64);
    let connections_tx = std::sync::Arc::new(connections_tx);
    options = options
        .connection_timeout(config.connect_timeout)
        .request_timeout(Some(config.request_timeout))
        .max_reconnects(None)
        .event_callback(move |event| {
            let servers = events_for.clone();
            let connections_tx = connections_tx.clone();
            async move {
                match event {
                    Event::Connected => {
                        connections_tx.send_modify(|n| *n += 1);
                        info!(%servers, "connected to NATS");
                    }
                    Event::Disconnected => {
                        warn!(%servers, "disconnected from NATS; reconnecting")
                    }
                    other => warn!(%servers, event = %other, "NATS connection event"),
                }
            }
        });
    let client = options.connect(servers).await.map_err(|source| {
        let kind = source.kind();
        match kind {
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                NatsError::Unauthorized {
                    servers: shown,
                    method: config.auth_method(),
                    source,
                }
            }
            ConnectErrorKind::Tls => NatsError::Tls {
                servers: shown,
                source,
            },
            _ => NatsError::Unreachable {
                servers: shown,
                source,
            },
        }
    })?;
    Ok((client, connections))
}

/// Reads each TLS file the config names, so that a missing or unreadable one
/// is a [`NatsError::TlsFile`] naming the field and the path. The client would
/// only report "TLS error: No such file or directory", without saying which
/// file, and only once a connection is attempted.
async fn check_tls_files(tls: &TlsConfig) -> Result<(), NatsError> {
    for (field, path) in [
        ("tls.ca-file", &tls.ca_file),
        ("tls.cert-file", &tls.cert_file),
        ("tls.key-file", &tls.key_file),
    ] {
        if let Some(path) = path {
            // `read`, not `metadata`: a directory or a file without read
            // permission is refused here too. PEM files are small.
            tokio::fs::read(path)
                .await
                .map_err(|source| NatsError::TlsFile {
                    field,
                    path: path.clone(),
                    source,
                })?;
        }
    }
    Ok(())
}

/// The oldest server version supported.
const MIN_SERVER: (u32, u32) = (2, 10);

/// Refuses servers older than 2.10 (key-value buckets and the JetStream
/// settings used here need it). A version that cannot be parsed is allowed.
pub(crate) fn check_server(
    client: &async_nats::Client,
    config: &NatsConfig,
) -> Result<(), NatsError> {
    let Some(info) = client.try_server_info() else {
        return Ok(());
    };
    match major_minor(&info.version) {
        Some(version) if version < MIN_SERVER => Err(NatsError::UnsupportedServer {
            servers: config.servers_for_display(),
            version: info.version,
        }),
        _ => Ok(()),
    }
}

/// `(major, minor)` of a version such as "2.10.4" or "v2.11.0-beta".
fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

/// A JetStream context whose API requests and acks wait at most the config's
/// request timeout.
pub(crate) fn jetstream(client: async_nats::Client, config: &NatsConfig) -> jetstream::Context {
    jetstream::context::ContextBuilder::new()
        .timeout(config.request_timeout)
        .build(client)
}

#[cfg(test)]
mod tests {
    use super::major_minor;

    #[test]
    fn versions_parse() {
        assert_eq!(major_minor("2.10.4"), Some((2, 10)));
        assert_eq!(major_minor("v2.11.0-beta.1"), Some((2, 11)));
        assert_eq!(major_minor("2.9.10"), Some((2, 9)));
        assert!(major_minor("2.9.10") < Some(super::MIN_SERVER));
        assert_eq!(major_minor("weird"), None);
    }
}
