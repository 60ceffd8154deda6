//! TLS against the real server: each mode connects (or is refused) as
//! libpq's `sslmode` of the same name would, and the session really is
//! encrypted when the mode says so (`pg_stat_ssl`).
//!
//! The server's `ssl` setting decides what is expected: with TLS on (Debian's
//! default, with its self-signed "snakeoil" certificate), `require` must
//! encrypt and `verify-full` must refuse the untrusted certificate; with TLS
//! off, `require` must fail with a typed TLS error.

mod support;

use eventsourced::{EventLog, SeqNo};
use eventsourced_postgres::{PostgresConfig, PostgresError, PostgresEventLog, TlsMode};
use futures::TryStreamExt;
use support::TestDb;

/// Whether the server offers TLS (`SHOW ssl`).
async fn server_offers_tls(db: &TestDb) -> bool {
    let raw = db.raw().await;
    let row = raw.query_one("SHOW ssl", &[]).await.expect("SHOW ssl");
    row.get::<_, String>(0) == "on"
}

/// Whether the pool's sessions are encrypted.
async fn encrypted(log: &PostgresEventLog) -> bool {
    let client = log.pool().get().await.expect("a pooled connection");
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    row.get(0)
}

fn with_mode(db: &TestDb, mode: TlsMode) -> PostgresConfig {
    PostgresConfig {
        tls_mode: mode,
        ..db.config.clone()
    }
}

/// Appends and reads back through `log`: the mode works end to end.
async fn round_trip(log: &PostgresEventLog) {
    log.setup().await.expect("setup over this connection");
    let last = log
        .append("tls", "t-1", SeqNo::ZERO, &["a".into(), "b".into()])
        .await
        .expect("append");
    assert_eq!(last, SeqNo::new(2));
    let events: Vec<_> = log
        .events_by_id("tls", "t-1", SeqNo::new(1))
        .try_collect()
        .await
        .expect("read back");
    assert_eq!(events.len(), 2);
}

#[tokio::test]
async fn disable_is_plain_and_prefer_encrypts_when_offered() {
    let db = TestDb::new();
    let offered = server_offers_tls(&db).await;

    let plain = PostgresEventLog::new(with_mode(&db, TlsMode::Disable))
        .await
        .expect("disable connects");
    round_trip(&plain).await;
    assert!(!encrypted(&plain).await, "disable must not use TLS");

    let preferred = PostgresEventLog::new(with_mode(&db, TlsMode::Prefer))
        .await
        .expect("prefer connects either way");
    assert_eq!(
        encrypted(&preferred).await,
        offered,
        "prefer uses TLS exactly when the server offers it"
    );
}

#[tokio::test]
async fn require_encrypts_or_fails_with_a_typed_tls_error() {
    let db = TestDb::new();
    let result = PostgresEventLog::new(with_mode(&db, TlsMode::Require)).await;
    if server_offers_tls(&db).await {
        let log = result.expect("require connects to a server with TLS");
        round_trip(&log).await;
        assert!(encrypted(&log).await, "require must encrypt");
    } else {
        let error = result.expect_err("require cannot connect without TLS");
        assert!(matches!(error, PostgresError::Tls { .. }), "{error:?}");
    }
}

#[tokio::test]
async fn verify_full_refuses_a_certificate_it_does_not_trust() {
    let db = TestDb::new();
    // The system roots do not hold a self-signed server certificate, and a
    // server without TLS fails too: either way a typed TLS error.
    let error = PostgresEventLog::new(with_mode(&db, TlsMode::VerifyFull))
        .await
        .expect_err("an untrusted certificate must be refused");
    match &error {
        PostgresError::Tls { reason, .. } => assert!(!reason.is_empty()),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("tls-mode"),
        "says what to check: {message}"
    );
}

#[tokio::test]
async fn verify_ca_trusts_the_servers_own_certificate_as_root() {
    let db = TestDb::new();
    if !server_offers_tls(&db).await {
        return assert!(
            PostgresEventLog::new(with_mode(&db, TlsMode::VerifyCa))
                .await
                .is_err(),
            "verify-ca cannot connect without TLS"
        );
    }
    // The server's certificate file, read through the server itself so the
    // test needs no access to its file system.
    let raw = db.raw().await;
    let pem: String = raw
        .query_one("SELECT pg_read_file(current_setting('ssl_cert_file'))", &[])
        .await
        .expect("read the server certificate (needs superuser)")
        .get(0);
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = dir.path().join("server.pem");
    std::fs::write(&ca, pem).expect("write the CA file");

    // Trusted as a root: the chain verifies; the host name is not checked.
    let log = PostgresEventLog::new(PostgresConfig {
        tls_root_cert: Some(ca.clone()),
        ..with_mode(&db, TlsMode::VerifyCa)
    })
    .await
    .expect("verify-ca with the server's certificate as root connects");
    round_trip(&log).await;
    assert!(encrypted(&log).await);

    // verify-full also checks the name: the certificate names the machine's
    // host name, not the address the test connects to.
    let host = &db.config.host;
    let names_host = pem_names(&ca, host);
    let full = PostgresEventLog::new(PostgresConfig {
        tls_root_cert: Some(ca),
        ..with_mode(&db, TlsMode::VerifyFull)
    })
    .await;
    if names_host {
        full.expect("verify-full connects when the certificate names the host");
    } else {
        let error = full.expect_err("verify-full must refuse a certificate for another name");
        assert!(matches!(error, PostgresError::Tls { .. }), "{error:?}");
        println!("{error}");
    }
}

/// Whether the certificate in `pem` is issued for `host`.
fn pem_names(pem: &std::path::Path, host: &str) -> bool {
    let pem = std::fs::read(pem).expect("read the certificate");
    let cert = openssl::x509::X509::from_pem(&pem).expect("a PEM certificate");
    let in_san = cert.subject_alt_names().is_some_and(|names| {
        names.iter().any(|name| {
            name.dnsname() == Some(host)
                || name.ipaddress().is_some_and(|ip| {
                    host.parse::<std::net::IpAddr>().is_ok_and(|h| match h {
                        std::net::IpAddr::V4(v4) => ip == v4.octets(),
                        std::net::IpAddr::V6(v6) => ip == v6.octets(),
                    })
                })
        })
    });
    let in_cn = cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .any(|cn| cn.data().as_slice() == host.as_bytes());
    in_san || in_cn
}

#[test]
fn sslmode_and_sslrootcert_come_from_urls() {
    let url =
        "postgres://u@127.0.0.1/test?sslmode=verify-ca&application_name=x&sslrootcert=/tmp/ca.pem";
    let config = PostgresConfig::from_url(url).expect("valid URL");
    assert_eq!(config.tls_mode, TlsMode::VerifyCa);
    assert_eq!(
        config.tls_root_cert.as_deref(),
        Some(std::path::Path::new("/tmp/ca.pem"))
    );
    for (mode, expected) in [
        ("disable", TlsMode::Disable),
        ("prefer", TlsMode::Prefer),
        ("require", TlsMode::Require),
        ("verify-full", TlsMode::VerifyFull),
    ] {
        let url = format!("host=127.0.0.1 user=u sslmode={mode}");
        let config = PostgresConfig::from_url(&url).expect("valid key=value string");
        assert_eq!(config.tls_mode, expected, "{url}");
    }
    let spaced = PostgresConfig::from_url("host=127.0.0.1 sslmode = require user=u")
        .expect("valid key = value string");
    assert_eq!(
        spaced.tls_mode,
        TlsMode::Require,
        "spaces around = keep the mode"
    );
    let quoted =
        PostgresConfig::from_url("host=127.0.0.1 password='a  b' sslmode=verify-full user=u")
            .expect("valid key=value string with a quoted value");
    assert_eq!(
        quoted.password.as_deref(),
        Some("a  b"),
        "quoted spaces survive"
    );
    assert_eq!(quoted.tls_mode, TlsMode::VerifyFull);
    assert_eq!(
        PostgresConfig::from_url("postgres://u@h/d")
            .expect("valid URL")
            .tls_mode,
        TlsMode::Disable,
        "no sslmode: plain TCP"
    );
    let bad = PostgresConfig::from_url("postgres://u@h/d?sslmode=always").expect_err("refused");
    assert!(matches!(bad, PostgresError::InvalidUrl { .. }), "{bad:?}");
}
