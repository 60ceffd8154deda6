//! Connection strings are read as libpq reads them: an `sslmode` is a key,
//! never text inside a value; quoted values keep their spaces; a NUL in a
//! config string is refused naming the field.

mod support;

use eventsourced_postgres::{PostgresConfig, PostgresError, PostgresEventLog, TlsMode};
use std::time::Duration;
use support::TestDb;

/// A URL without `sslmode` means plain TCP, even when a password or
/// database name merely contains the letters "sslmode".
#[test]
fn sslmode_inside_another_value_is_not_an_sslmode() {
    for url in [
        "postgres://app:my-sslmode-pw@127.0.0.1/test",
        "postgres://app@127.0.0.1/sslmode_test",
        "host=127.0.0.1 user=app password=nosslmode dbname=test",
    ] {
        let config = PostgresConfig::from_url(url).expect("valid URL");
        assert_eq!(
            config.tls_mode,
            TlsMode::Disable,
            "no sslmode option was given in {url:?}"
        );
    }
}

/// In key=value form, the `sslmode=...` pair is cut out where it stands, not
/// at the first place its text occurs (which may be inside another value).
#[test]
fn the_sslmode_pair_is_cut_where_it_stands() {
    let config = PostgresConfig::from_url(
        "host=127.0.0.1 user=app password=xsslmode=disable sslmode=disable dbname=test",
    )
    .expect("valid connection string");
    assert_eq!(config.password.as_deref(), Some("xsslmode=disable"));
    assert_eq!(config.tls_mode, TlsMode::Disable);
}

/// A quoted value may hold spaces and "sslmode=...", as libpq allows.
#[test]
fn quoted_values_keep_their_spaces_and_text() {
    let config =
        PostgresConfig::from_url("host=127.0.0.1 password='pa ss sslmode=require' dbname=test")
            .expect("valid connection string (libpq accepts it)");
    assert_eq!(config.password.as_deref(), Some("pa ss sslmode=require"));
    assert_eq!(config.tls_mode, TlsMode::Disable);
}

/// A NUL byte in a config string cannot be sent to the server: the error
/// names the field rather than blame host and port.
#[tokio::test]
async fn a_nul_in_a_config_string_names_the_field() {
    let mut wrong = Vec::new();
    for field in ["user", "dbname", "application-name"] {
        let mut config = TestDb::new().config.clone();
        config.connect_timeout = Duration::from_secs(3);
        match field {
            "user" => config.user = "post\0gres".to_owned(),
            "dbname" => config.dbname = "te\0st".to_owned(),
            _ => config.application_name = "a\0b".to_owned(),
        }
        match PostgresEventLog::new(config).await {
            Ok(_) => wrong.push(format!("{field}: accepted")),
            Err(error) => {
                let text = error.to_string();
                if !(matches!(error, PostgresError::InvalidConfig { .. }) && text.contains(field)) {
                    wrong.push(format!("{field}: {text}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
