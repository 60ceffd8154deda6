//! A projection's configuration is refused by the key a config file spells,
//! whatever kind of error strategy it holds; a PostgreSQL lease made for a
//! log connects as the log does (TLS included) and never shows the password.

mod support;

use eventsourced::{MemoryEventLog, SerdeJson};
use eventsourced_projection::{
    AtLeastOnce, ErrorStrategy, MemoryOffsetStore, Projection, ProjectionConfig, ProjectionError,
};
use support::Recorder;

const SECRET: &str = "s3cretPW";

fn build(config: ProjectionConfig) -> Result<(), ProjectionError> {
    Projection::builder(
        "p",
        "counter",
        MemoryEventLog::default(),
        SerdeJson,
        AtLeastOnce::new(MemoryOffsetStore::default(), Recorder::default()),
    )
    .config(config)
    .build()
    .map(|_| ())
}

/// A config read from a file is refused with the key as spelled in the file.
#[test]
fn invalid_config_errors_name_the_kebab_case_key() {
    let config: ProjectionConfig = serde_json::from_str(r#"{"batch-size": 0}"#).unwrap();
    let error = build(config).expect_err("batch-size 0");
    assert!(error.to_string().contains("batch-size"), "{error}");

    let config: ProjectionConfig =
        serde_json::from_str(r#"{"restart-min-backoff": "10s", "restart-max-backoff": "1s"}"#)
            .unwrap();
    let error = build(config).expect_err("min > max");
    let text = error.to_string();
    assert!(
        text.contains("restart-min-backoff") && text.contains("restart-max-backoff"),
        "{text}"
    );
}

/// Keys that belong to `retry`, given with another kind, are refused (they
/// are typos in effect), as unknown keys are everywhere else in the config.
#[test]
fn unknown_keys_of_any_error_strategy_kind_are_refused() {
    for json in [
        r#"{"error-strategy": {"kind": "stop", "max-retries": 3}}"#,
        r#"{"error-strategy": {"kind": "skip", "then": "stop"}}"#,
        r#"{"error-strategy": {"kind": "skip", "whatever": 1}}"#,
    ] {
        let parsed = serde_json::from_str::<ProjectionConfig>(json);
        assert!(parsed.is_err(), "{json} was accepted as {parsed:?}");
    }
}

/// A retry policy whose min-backoff exceeds max-backoff is refused, as the
/// same mistake in restart-min/max-backoff is (it would ignore min-backoff).
#[test]
fn a_retry_policy_with_min_above_max_is_refused() {
    let config: ProjectionConfig = serde_json::from_str(
        r#"{"error-strategy": {"kind": "retry", "min-backoff": "10s", "max-backoff": "1s"}}"#,
    )
    .unwrap();
    let ErrorStrategy::Retry(policy) = config.error_strategy else {
        unreachable!()
    };
    assert_eq!(policy.backoff(1), std::time::Duration::from_secs(1));
    assert!(
        build(config).is_err(),
        "min-backoff 10s > max-backoff 1s was accepted"
    );
}

/// The lease's Debug and URL errors never show the password.
#[test]
fn a_postgres_lease_hides_the_password() {
    use eventsourced_projection::postgres::PostgresLease;
    let lease = PostgresLease::from_url(&format!("postgres://u:{SECRET}@127.0.0.1/test")).unwrap();
    let debug = format!("{lease:?}");
    assert!(!debug.contains(SECRET), "{debug}");
    for url in [
        format!("postgres://u:{SECRET}@127.0.0.1:x/test"),
        format!("host=h password={SECRET} port=x"),
        format!("host=h password='{SECRET}"),
        format!("postgres://u:{SECRET}%zz@h/test"),
    ] {
        if let Err(e) = PostgresLease::from_url(&url) {
            let text = format!("{e} {e:?}");
            assert!(!text.contains(SECRET), "{url}: {text}");
        }
    }
}

/// `PostgresLease::for_log` connects as the log does: with a log configured
/// `tls-mode: require`, the lease's connection is encrypted too (seen in
/// `pg_stat_ssl`), not plain TCP carrying the login.
#[tokio::test]
async fn a_lease_for_a_log_connects_with_the_logs_tls() {
    use eventsourced_projection::{Lease, postgres::PostgresLease};
    let app = format!("leasetls{:x}", std::process::id());
    let json = format!(
        r#"{{"host": "127.0.0.1", "user": "postgres", "dbname": "test", "pool-size": 2,
             "tls-mode": "require", "application-name": "{app}"}}"#
    );
    let log = eventsourced_projection::postgres::PostgresEventLog::new(
        serde_json::from_str(&json).expect("config"),
    )
    .await
    .expect("the server offers TLS (SHOW ssl = on)");
    let lease = PostgresLease::for_log(&log);
    let _guard = lease.acquire("tls-lease").await.expect("lease");
    let (raw, connection) = tokio_postgres::connect(
        "host=127.0.0.1 user=postgres dbname=test",
        tokio_postgres::NoTls,
    )
    .await
    .expect("raw connection");
    tokio::spawn(connection);
    let rows = raw
        .query(
            "SELECT a.application_name, s.ssl FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) WHERE a.application_name LIKE $1",
            &[&format!("{app}%")],
        )
        .await
        .expect("query");
    let seen: Vec<(String, bool)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(
        seen.iter().any(|(name, _)| name == &app),
        "the log's own sessions are listed: {seen:?}"
    );
    assert!(
        seen.iter().all(|(_, ssl)| *ssl),
        "every session of a tls-mode=require log, the lease's too, is encrypted: {seen:?}"
    );
}
