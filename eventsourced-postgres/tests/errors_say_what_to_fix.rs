//! Bad config, unreachable servers, refused logins and missing tables give
//! typed errors whose messages say what to fix; passwords never show.

mod support;

use bytes::Bytes;
use eventsourced::{EventLog, EventLogError, Position, SeqNo, SnapshotStore, SnapshotStoreError};
use eventsourced_postgres::{
    PostgresConfig, PostgresError, PostgresEventLog, PostgresSnapshotStore, TlsMode,
};
use futures::{StreamExt, TryStreamExt};
use std::{error::Error as _, time::Duration};
use support::TestDb;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn an_unreachable_server_is_a_connect_error() {
    let mut config = TestDb::new().config.clone();
    config.port = 1; // nothing listens on 127.0.0.1:1
    config.password = Some("hunter2-secret".to_owned());
    config.connect_timeout = Duration::from_secs(2);
    let error = timeout(WAIT, PostgresEventLog::new(config))
        .await
        .expect("connecting must not hang")
        .expect_err("port 1 must not accept connections");
    assert!(
        matches!(error, PostgresError::Connect { .. }),
        "got {error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(":1 "),
        "the message names the place: {message}"
    );
    assert!(
        message.contains("`port`"),
        "the message says what to check: {message}"
    );
    assert!(
        !message.contains("hunter2"),
        "no password in messages: {message}"
    );
}

#[tokio::test]
async fn an_unknown_user_is_an_authentication_error() {
    let mut config = TestDb::new().config.clone();
    config.user = "no_such_role_es_test".to_owned();
    config.password = Some("hunter2-secret".to_owned());
    let error = timeout(WAIT, PostgresEventLog::new(config))
        .await
        .expect("connecting must not hang")
        .expect_err("an unknown role must be refused");
    assert!(
        matches!(error, PostgresError::Authentication { .. }),
        "got {error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("`password`") && message.contains("`user`"),
        "{message}"
    );
    assert!(
        !message.contains("hunter2"),
        "no password in messages: {message}"
    );
    assert!(!format!("{error:?}").contains("hunter2"));
}

#[tokio::test]
async fn a_missing_database_is_named() {
    let mut config = TestDb::new().config.clone();
    config.dbname = "no_such_database_es_test".to_owned();
    let error = timeout(WAIT, PostgresSnapshotStore::new(config))
        .await
        .expect("connecting must not hang")
        .expect_err("a missing database must be refused");
    assert!(
        matches!(error, PostgresError::DatabaseMissing { .. }),
        "got {error:?}"
    );
    assert!(error.to_string().contains("no_such_database_es_test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_tells_to_run_setup() {
    let db = TestDb::new();
    let log = PostgresEventLog::new(db.config.clone())
        .await
        .expect("connect");
    // No setup.
    let error = timeout(WAIT, log.append("t", "a", SeqNo::ZERO, &[Bytes::from("x")]))
        .await
        .expect("must not hang")
        .expect_err("append without setup must fail");
    let EventLogError::Backend { source, .. } = &error else {
        panic!("expected a backend error, got {error:?}");
    };
    let cause = source
        .downcast_ref::<std::sync::Arc<PostgresError>>()
        .map(|e| &**e)
        .or_else(|| source.downcast_ref::<PostgresError>())
        .expect("the source is a PostgresError");
    assert!(
        matches!(cause, PostgresError::NotSetUp { .. }),
        "got {cause:?}"
    );
    assert!(error.to_string().contains("setup()"), "{error}");

    let last = timeout(WAIT, log.last_seq_no("t", "a"))
        .await
        .expect("must not hang");
    assert!(
        last.as_ref()
            .is_err_and(|e| e.to_string().contains("setup()")),
        "{last:?}"
    );
    let by_type = timeout(
        WAIT,
        Box::pin(log.events_by_type("t", Position::START)).next(),
    )
    .await
    .expect("must not hang");
    assert!(
        matches!(&by_type, Some(Err(e)) if e.to_string().contains("setup()")),
        "{by_type:?}"
    );

    let store = PostgresSnapshotStore::from_log(&log);
    let loaded = store.load("t", "a").await;
    assert!(
        matches!(&loaded, Err(SnapshotStoreError::Backend { .. }))
            && loaded.as_ref().is_err_and(|e| e
                .source()
                .is_some_and(|s| s.to_string().contains("setup()"))),
        "{loaded:?}"
    );
}

#[tokio::test]
async fn invalid_config_is_refused_before_connecting() {
    let base = TestDb::new().config.clone();
    let cases: Vec<(PostgresConfig, &str)> = vec![
        (
            PostgresConfig {
                schema: "Robert'); DROP TABLE students;--".to_owned(),
                ..base.clone()
            },
            "schema",
        ),
        (
            PostgresConfig {
                events_table: "events\"x".to_owned(),
                ..base.clone()
            },
            "events-table",
        ),
        (
            PostgresConfig {
                snapshots_table: "".to_owned(),
                ..base.clone()
            },
            "snapshots-table",
        ),
        (
            PostgresConfig {
                pool_size: 1,
                ..base.clone()
            },
            "pool-size",
        ),
        // More than a pool can allocate: refused, not a panic.
        (
            PostgresConfig {
                pool_size: usize::MAX,
                ..base.clone()
            },
            "pool-size",
        ),
        // The snapshot table must not take a name of the log's relations.
        (
            PostgresConfig {
                snapshots_table: base.events_table.clone(),
                ..base.clone()
            },
            "snapshots-table",
        ),
        (
            PostgresConfig {
                snapshots_table: format!("{}_position", base.events_table),
                ..base.clone()
            },
            "snapshots-table",
        ),
    ];
    for (config, field) in cases {
        let error = PostgresEventLog::new(config.clone())
            .await
            .expect_err("invalid config must be refused");
        match error {
            PostgresError::InvalidConfig { field: f, .. } => assert_eq!(f, field),
            other => panic!("expected InvalidConfig for {field}, got {other:?}"),
        }
        let error = PostgresSnapshotStore::new(config)
            .await
            .expect_err("invalid config must be refused by the snapshot store too");
        match error {
            PostgresError::InvalidConfig { field: f, .. } => assert_eq!(f, field),
            other => panic!("expected InvalidConfig for {field}, got {other:?}"),
        }
    }
    let missing_ca = PostgresEventLog::new(PostgresConfig {
        tls_mode: TlsMode::VerifyFull,
        tls_root_cert: Some("/nonexistent/ca.pem".into()),
        ..base
    })
    .await
    .expect_err("an unreadable CA file is refused");
    match missing_ca {
        PostgresError::InvalidConfig { field, reason } => {
            assert_eq!(field, "tls-root-cert");
            assert!(reason.contains("/nonexistent/ca.pem"), "{reason}");
        }
        other => panic!("expected InvalidConfig for tls-root-cert, got {other:?}"),
    }
}

#[test]
fn urls_parse_and_passwords_stay_secret() {
    let config =
        PostgresConfig::from_url("postgres://alice:s3cr%40t@db.local:6543/shop?sslmode=disable")
            .expect("valid URL");
    assert_eq!(config.host, "db.local");
    assert_eq!(config.port, 6543);
    assert_eq!(config.user, "alice");
    assert_eq!(config.password.as_deref(), Some("s3cr@t"));
    assert_eq!(config.dbname, "shop");
    assert_eq!(config.tls_mode, TlsMode::Disable);
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cr"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
    let json = serde_json::to_string(&config).expect("serialize");
    assert!(!json.contains("s3cr"), "{json}");
    assert!(json.contains("\"events-table\""), "kebab-case keys: {json}");

    let error = PostgresConfig::from_url("postgres://bob:topsecret@host:notaport/db")
        .expect_err("a bad port must be refused");
    assert!(
        matches!(error, PostgresError::InvalidUrl { .. }),
        "{error:?}"
    );
    assert!(!error.to_string().contains("topsecret"), "{error}");

    let defaults: PostgresConfig = serde_json::from_str("{}").expect("all keys optional");
    assert_eq!(defaults, PostgresConfig::default());
    assert_eq!(
        (
            defaults.host.as_str(),
            defaults.port,
            defaults.user.as_str(),
            defaults.dbname.as_str()
        ),
        ("127.0.0.1", 5432, "postgres", "test")
    );
    assert!(serde_json::from_str::<PostgresConfig>(r#"{"no-such-key": 1}"#).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_postgres_cannot_store_are_refused_before_writing() {
    let db = TestDb::new();
    let log = db.log().await;
    for id in [
        "nul\0byte".to_owned(),
        "x".repeat(eventsourced_postgres::MAX_ID_LEN + 1),
    ] {
        let result = log.append("t", &id, SeqNo::ZERO, &[Bytes::from("x")]).await;
        assert!(
            matches!(result, Err(EventLogError::InvalidId { .. })),
            "{result:?}"
        );
    }
    // A refused id in the same moment as good ones does not fail them.
    let ok = log
        .append("t", "fine", SeqNo::ZERO, &[Bytes::from("x")])
        .await;
    assert_eq!(ok.expect("a good id succeeds"), SeqNo::new(1));
    let store = PostgresSnapshotStore::from_log(&log);
    store.setup().await.expect("setup");
    let saved = store.save("t", "nul\0", SeqNo::new(1), Bytes::new()).await;
    assert!(
        matches!(saved, Err(SnapshotStoreError::InvalidId { .. })),
        "{saved:?}"
    );
}

/// A read the server rejects (here: a column of the log's table was renamed
/// behind its back) names the table it read, for `last_seq_no`,
/// `events_by_id` and `events_by_type` alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_errors_name_the_table() {
    let db = TestDb::new();
    let log = db.log().await;
    let table = log.tables().events();
    db.raw()
        .await
        .batch_execute(&format!("ALTER TABLE {table} RENAME COLUMN seq_no TO seq"))
        .await
        .expect("rename a column");
    let errors = [
        timeout(WAIT, log.last_seq_no("t", "x"))
            .await
            .expect("must not hang")
            .map(|_| ()),
        timeout(
            WAIT,
            log.events_by_id("t", "x", SeqNo::ZERO)
                .try_collect::<Vec<_>>(),
        )
        .await
        .expect("must not hang")
        .map(|_| ()),
        timeout(
            WAIT,
            Box::pin(log.events_by_type("t", Position::START)).next(),
        )
        .await
        .expect("must not hang")
        .expect("an item")
        .map(|_| ()),
    ];
    for error in errors {
        let error = error.expect_err("the column is gone").to_string();
        assert!(
            error.contains(&format!("on {table}")) && error.contains("seq_no"),
            "the error must name the table {table}: {error}"
        );
    }
}

/// A type name `events_by_type` cannot read (empty, with a NUL character,
/// too long) is refused as `InvalidId` that speaks of the type name, with no
/// id (the caller gave none), not as a bad id "-".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_type_name_in_events_by_type_is_reported_as_a_type_name() {
    let db = TestDb::new();
    let log = db.log().await;
    let too_long = "t".repeat(eventsourced_postgres::MAX_TYPE_NAME_LEN + 1);
    for (type_name, says) in [
        ("", "the entity type name is empty".to_owned()),
        (
            "a\0b",
            "the entity type name \"a\\0b\" contains a NUL".to_owned(),
        ),
        (
            too_long.as_str(),
            format!(
                "the entity type name is {} bytes long",
                eventsourced_postgres::MAX_TYPE_NAME_LEN + 1
            ),
        ),
    ] {
        let error = Box::pin(log.events_by_type(type_name, Position::START))
            .next()
            .await
            .expect("an item")
            .expect_err("refused");
        let EventLogError::InvalidId { id, reason } = &error else {
            panic!("expected InvalidId, got {error:?}");
        };
        assert!(
            id.is_empty() && reason.starts_with(&says),
            "events_by_type({type_name:.20?}) refused with: {error}"
        );
    }
}
