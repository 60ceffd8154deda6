//! Secrets stay secret and config errors name their field: passwords,
//! tokens and seeds appear in no error, Debug output or serialized config;
//! a refused login says which credentials were used.

mod support;

use eventsourced::{EventLog, SeqNo};
use eventsourced_nats::{NatsAuth, NatsConfig, NatsError, NatsEventLog, Secret};
use std::time::Duration;
use support::TestServer;

const SECRET: &str = "s3cretPW";

fn chain(error: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = vec![error.to_string()];
    let mut source = error.source();
    while let Some(s) = source {
        out.push(s.to_string());
        source = s.source();
    }
    out
}

fn shown(error: &NatsError) -> String {
    format!("{error} / {error:?} / {:?}", chain(error))
}

/// An unreachable server whose URL holds credentials: no password anywhere.
#[tokio::test]
async fn unreachable_with_credentials_in_url_hides_password() {
    let mut config = NatsConfig::from_url(&format!("nats://app:{SECRET}@127.0.0.1:1"));
    config.connect_timeout = Duration::from_secs(2);
    let error = NatsEventLog::new(config)
        .await
        .expect_err("nothing on port 1");
    let text = shown(&error);
    assert!(!text.contains(SECRET), "{text}");
}

/// Wrong token: no token anywhere.
#[tokio::test]
async fn unauthorized_token_hidden() {
    let server = TestServer::start(&["--auth", "right-token"]);
    let mut config = NatsConfig::from_url(&server.url());
    config.auth = NatsAuth::Token {
        token: Secret::new(SECRET),
    };
    let error = NatsEventLog::new(config).await.expect_err("wrong token");
    let text = shown(&error);
    assert!(!text.contains(SECRET), "{text}");
}

/// Huge durations from config must not panic.
#[tokio::test]
async fn huge_durations_do_not_panic() {
    let mut config: NatsConfig = serde_json::from_str(
        r#"{"request-timeout": "1000000000000h", "connect-timeout": "1000000000000h"}"#,
    )
    .expect("parses");
    config.servers = vec![support::nats_url()];
    let name = format!("zzaudit-{:x}", std::process::id());
    config.stream = name.clone();
    config.subject_prefix = name.clone();
    config.storage = eventsourced_nats::Storage::Memory;
    let log = NatsEventLog::new(config).await.expect("connects");
    log.setup().await.expect("setup");
    log.append("t", "a", SeqNo::ZERO, &["x".into()])
        .await
        .expect("append");
}

/// Serde: unknown keys refused, naming the key; bad values name the field.
#[test]
fn serde_names_fields() {
    for (json, needle) in [
        (r#"{"subject_prefix": "x"}"#, "subject_prefix"),
        (r#"{"replicas": -1}"#, "-1"),
        (r#"{"auth": {"method": "token", "tokn": "x"}}"#, "tokn"),
        (r#"{"tls": {"ca_file": "x"}}"#, "ca_file"),
    ] {
        let e = serde_json::from_str::<NatsConfig>(json).unwrap_err();
        assert!(e.to_string().contains(needle), "{json}: {e}");
    }
}

/// A serde error on a secret must not echo the secret.
#[test]
fn serde_error_on_auth_does_not_echo_secret() {
    for json in [
        format!(
            r#"{{"auth": {{"method": "user-password", "user": "app", "password": "{SECRET}", "x": 1}}}}"#
        ),
        format!(r#"{{"auth": {{"method": "tokenn", "token": "{SECRET}"}}}}"#),
        format!(r#"{{"servers": 5, "auth": {{"method": "token", "token": "{SECRET}"}}}}"#),
        format!(r#"{{"auth": {{"method": "user-password", "user": 7, "password": "{SECRET}"}}}}"#),
    ] {
        if let Err(e) = serde_json::from_str::<NatsConfig>(&json) {
            assert!(!e.to_string().contains(SECRET), "{json}: {e}");
        }
    }
}

/// A bad server URL error never shows the password.
#[test]
fn validate_bad_urls_hide_password() {
    for url in [
        format!("nats://app:{SECRET}@127.0.0.1:notaport"),
        format!("http://app:{SECRET}@127.0.0.1:4222"),
        format!("nats://app:{SECRET}@"),
        format!("nats://app:{SECRET}@host:4222/"),
        format!("app:{SECRET}@host:4222"),
        format!("nats://app:{SECRET}%zz@host:4222"),
        format!("nats://app@{SECRET}@host:99999"),
    ] {
        let config = NatsConfig::from_url(&url);
        let debug = format!("{config:?}");
        assert!(!debug.contains(SECRET), "{url}: {debug}");
        if let Err(e) = config.validate() {
            let text = shown(&e);
            assert!(!text.contains(SECRET), "{url}: {text}");
        }
    }
}

/// A login refused with credentials given in the server URL says so (not
/// "no credentials", which would point at the wrong fix).
#[tokio::test]
async fn a_refused_login_with_url_credentials_says_so() {
    let server = TestServer::start(&["--user", "app", "--pass", "right-password"]);
    let url = server
        .url()
        .replace("nats://", &format!("nats://app:{SECRET}@"));
    let error = NatsEventLog::new(NatsConfig::from_url(&url))
        .await
        .expect_err("wrong password");
    let text = error.to_string();
    assert!(
        !text.contains("(no credentials)"),
        "a user and password were sent in the URL: {text}"
    );
}

/// A malformed credentials file or nkey seed: the error never echoes the
/// secret material.
#[tokio::test]
async fn bad_creds_file_and_seed_not_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.creds");
    std::fs::write(
        &path,
        format!(
            "-----BEGIN NATS USER JWT-----\n{SECRET}jwt\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\nSU{SECRET}SEED\n------END USER NKEY SEED------\n"
        ),
    )
    .unwrap();
    let mut texts = Vec::new();
    let mut config = NatsConfig::from_url(&support::nats_url());
    config.connect_timeout = Duration::from_secs(3);
    config.auth = NatsAuth::CredentialsFile { path };
    if let Err(e) = NatsEventLog::new(config.clone()).await {
        texts.push(shown(&e));
    }
    config.auth = NatsAuth::Nkey {
        seed: Secret::new(format!("SU{SECRET}")),
    };
    if let Err(e) = NatsEventLog::new(config).await {
        texts.push(shown(&e));
    }
    for text in &texts {
        assert!(!text.contains(SECRET), "{text}");
    }
}

/// A config dumped as JSON (a common startup log line) shows no password,
/// token or seed, as `PostgresConfig` shows no password.
#[test]
fn a_serialized_config_shows_no_secret() {
    let config = NatsConfig {
        auth: NatsAuth::Token {
            token: Secret::new(SECRET),
        },
        ..NatsConfig::default()
    };
    let json = serde_json::to_string(&config).unwrap();
    assert!(!json.contains(SECRET), "{json}");
}
