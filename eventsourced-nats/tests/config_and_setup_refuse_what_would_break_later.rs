//! A config that would break something later (leak a password, take over
//! another log's stream or a bucket's stream, store the client's inboxes,
//! build subjects the server cannot take, point at a missing TLS file) is
//! refused up front, by `validate`, `new` or `setup`, with an error naming the
//! field and what to fix.

mod support;

use async_nats::jetstream;
use bytes::Bytes;
use eventsourced::{EventLog, SeqNo, SnapshotStore, testkit::unique_type_name};
use eventsourced_nats::{NatsConfig, NatsError, NatsEventLog, NatsSnapshotStore, TlsConfig};
use futures::TryStreamExt;
use std::time::Duration;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);

/// A name no other test (or test binary on a shared server) uses, valid as a
/// stream name, a bucket name and a subject token.
fn unique(name: &str) -> String {
    unique_type_name(name).replace(|c: char| !c.is_ascii_alphanumeric(), "-")
}

/// A config of the shared test server with its own stream and prefix.
fn config_of_own(name: &str) -> NatsConfig {
    let mut config = NatsConfig::from_url(&support::nats_url());
    config.stream = unique(name);
    config.subject_prefix = config.stream.clone();
    config
}

fn jetstream_of(log: &NatsEventLog) -> jetstream::Context {
    jetstream::new(log.client().clone())
}

fn config_field(error: &NatsError) -> Option<&'static str> {
    match error {
        NatsError::Config { field, .. } => Some(field),
        _ => None,
    }
}

/// A password holding `/`, `?`, `#` or `@` (pasted without percent-encoding)
/// appears neither in `Debug` of the config nor in the config error about the
/// unparsable URL; the error still shows the host and says to percent-encode.
#[test]
fn a_password_with_url_delimiters_is_redacted_in_debug_and_in_the_config_error() {
    for url in [
        "nats://app:pa/ss-SECRET@127.0.0.1:4222",
        "nats://app:pa?ss-SECRET@127.0.0.1:4222",
        "nats://app:pa#ss-SECRET@127.0.0.1:4222",
        "nats://app:pa@ss-SECRET@127.0.0.1:4222",
        "nats://127.0.0.1:1,nats://app:pa/ss-SECRET@127.0.0.1:4222",
    ] {
        let config = NatsConfig::from_url(url);
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("SECRET"),
            "Debug leaks the password: {debug}"
        );
        assert!(debug.contains("127.0.0.1:4222"), "{debug}");
        match config.validate() {
            Ok(()) => {}
            Err(error) => {
                let message = error.to_string();
                assert!(
                    !message.contains("SECRET"),
                    "the error leaks the password: {message}"
                );
                assert_eq!(config_field(&error), Some("servers"), "{message}");
                assert!(
                    message.contains("[redacted]@127.0.0.1:4222")
                        && message.contains("percent-encode"),
                    "the error must show the host and the fix: {message}"
                );
            }
        }
    }
    let error = NatsConfig::from_url("nats://app:pa/ss-SECRET@127.0.0.1:4222")
        .validate()
        .expect_err("the '/' ends the authority: the URL does not parse");
    assert_eq!(config_field(&error), Some("servers"), "{error}");
}

/// A second log naming an existing stream with another subject prefix gets
/// `NatsError::StreamSubjects` (naming the stream's subjects and the prefix)
/// from `setup`; the stream keeps its subjects and the first log keeps
/// appending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_refuses_a_stream_that_stores_another_prefix_and_the_first_log_keeps_working() {
    let config = config_of_own("owner");
    let first = NatsEventLog::new(config.clone()).await.expect("connect");
    first.setup().await.expect("setup");
    first
        .append("counter", "x", SeqNo::ZERO, &[Bytes::from("1")])
        .await
        .expect("first append");

    let mut other = config.clone();
    other.subject_prefix = unique("other");
    let second = NatsEventLog::new(other.clone()).await.expect("connect");
    let error = timeout(LIMIT, second.setup())
        .await
        .expect("in time")
        .expect_err("the stream stores another prefix");
    match &error {
        NatsError::StreamSubjects {
            stream,
            subjects,
            prefix,
        } => {
            assert_eq!(stream, &config.stream);
            assert_eq!(subjects, &vec![format!("{}.>", config.subject_prefix)]);
            assert_eq!(prefix, &other.subject_prefix);
        }
        other => panic!("expected StreamSubjects, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains(&config.subject_prefix) && message.contains(&other.subject_prefix),
        "{message}"
    );

    let info = jetstream_of(&first)
        .get_stream(&config.stream)
        .await
        .expect("stream")
        .cached_info()
        .clone();
    assert_eq!(
        info.config.subjects,
        vec![format!("{}.>", config.subject_prefix)],
        "the stream's subjects are unchanged"
    );
    let last = timeout(
        LIMIT,
        first.append("counter", "x", SeqNo::new(1), &[Bytes::from("2")]),
    )
    .await
    .expect("in time")
    .expect("the first log still appends");
    assert_eq!(last, SeqNo::new(2));
    jetstream_of(&first)
        .delete_stream(&config.stream)
        .await
        .expect("delete");
}

/// On an existing stream whose subjects cover the prefix (here a wider
/// `<name>.>` for the prefix `<name>.events`), `setup` succeeds and changes
/// only the settings the log relies on: the subjects, description and
/// duplicate window stay; an age limit is removed and direct gets, deny
/// delete and deny purge are turned on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_changes_only_the_settings_the_log_relies_on() {
    let name = unique("wide");
    let mut config = NatsConfig::from_url(&support::nats_url());
    config.stream = name.clone();
    config.subject_prefix = format!("{name}.events");
    let log = NatsEventLog::new(config.clone()).await.expect("connect");
    let jetstream = jetstream_of(&log);
    jetstream
        .create_stream(jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.>")],
            description: Some("made by the operator".to_owned()),
            duplicate_window: Duration::from_secs(30),
            max_age: Duration::from_secs(3600),
            allow_direct: false,
            ..Default::default()
        })
        .await
        .expect("create the stream elsewhere");
    log.setup().await.expect("setup of a covering stream");
    let info = jetstream
        .get_stream(&name)
        .await
        .expect("stream")
        .cached_info()
        .clone();
    assert_eq!(info.config.subjects, vec![format!("{name}.>")]);
    assert_eq!(
        info.config.description.as_deref(),
        Some("made by the operator")
    );
    assert_eq!(info.config.duplicate_window, Duration::from_secs(30));
    assert_eq!(info.config.max_age, Duration::ZERO, "events never expire");
    assert!(info.config.allow_direct && info.config.deny_delete && info.config.deny_purge);
    assert_eq!(info.config.discard, jetstream::stream::DiscardPolicy::New);
    let last = log
        .append("counter", "a", SeqNo::ZERO, &[Bytes::from("1")])
        .await
        .expect("append");
    assert_eq!(last, SeqNo::new(1));
    let read: Vec<_> = log
        .events_by_id("counter", "a", SeqNo::new(1))
        .try_collect()
        .await
        .expect("events");
    assert_eq!(read, vec![(SeqNo::new(1), Bytes::from("1"))]);
    jetstream.delete_stream(&name).await.expect("delete");
}

/// A stream name beginning with `KV_` or `OBJ_` (JetStream's names for the
/// streams of key-value buckets and object stores) is a `Config` error on
/// `stream`, from `validate` and `new`, so the log never takes over the
/// snapshot bucket's stream; the bucket keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_name_reserved_for_buckets_is_refused_and_the_bucket_keeps_working() {
    let mut store_config = NatsConfig::from_url(&support::nats_url());
    store_config.bucket = unique("snapshots");
    let store = NatsSnapshotStore::new(store_config.clone())
        .await
        .expect("store");
    store.setup().await.expect("store setup");
    store
        .save("counter", "a", SeqNo::new(1), Bytes::from("snap"))
        .await
        .expect("save");

    for stream in [
        format!("KV_{}", store_config.bucket),
        "OBJ_files".to_owned(),
    ] {
        let mut config = store_config.clone();
        config.stream = stream.clone();
        let error = config.validate().expect_err("a reserved stream name");
        assert_eq!(config_field(&error), Some("stream"), "{error}");
        assert!(
            error
                .to_string()
                .contains(&stream[..stream.find('_').expect("_") + 1]),
            "the error names the reserved beginning: {error}"
        );
        let error = NatsEventLog::new(config)
            .await
            .expect_err("new validates the config");
        assert_eq!(config_field(&error), Some("stream"), "{error}");
    }

    store
        .save("counter", "a", SeqNo::new(2), Bytes::from("snap2"))
        .await
        .expect("the bucket still saves");
    assert_eq!(
        store.load("counter", "a").await.expect("load"),
        Some((SeqNo::new(2), Bytes::from("snap2")))
    );
}

/// A subject prefix whose first token is `_INBOX` (where the client receives
/// request replies and publish acks) is a `Config` error on `subject-prefix`,
/// from `validate` and `new`, before any stream exists that would store them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_subject_prefix_is_refused_before_a_stream_exists() {
    for prefix in ["_INBOX", "_INBOX.events"] {
        let mut config = config_of_own("inbox");
        config.subject_prefix = prefix.to_owned();
        let error = config.validate().expect_err("an inbox prefix");
        assert_eq!(config_field(&error), Some("subject-prefix"), "{error}");
        assert!(error.to_string().contains("_INBOX"), "{error}");
        let error = NatsEventLog::new(config.clone())
            .await
            .expect_err("new validates the config");
        assert_eq!(config_field(&error), Some("subject-prefix"), "{error}");
        let client = async_nats::connect(support::nats_url())
            .await
            .expect("connect");
        assert!(
            jetstream::new(client)
                .get_stream(&config.stream)
                .await
                .is_err(),
            "no stream was created"
        );
    }
}

/// A subject prefix longer than 256 bytes is a `Config` error on
/// `subject-prefix`; a prefix of 256 bytes works with the longest type name
/// (256 bytes) and id (1024 bytes): the append is stored and read back, its
/// subject inside the server's 4 KiB control line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_prefix_over_256_bytes_is_refused_and_256_bytes_work_with_the_longest_ids() {
    let base = config_of_own("long");
    for prefix in [
        format!("{}.{}", base.subject_prefix, "p".repeat(256)),
        vec!["p".repeat(60); 40].join("."),
    ] {
        let mut config = base.clone();
        config.subject_prefix = prefix;
        let error = config.validate().expect_err("too long a prefix");
        assert_eq!(config_field(&error), Some("subject-prefix"), "{error}");
        assert!(error.to_string().contains("256"), "{error}");
        let error = NatsEventLog::new(config)
            .await
            .expect_err("new validates the config");
        assert_eq!(config_field(&error), Some("subject-prefix"), "{error}");
    }

    let mut config = base.clone();
    let head = format!("{}.", base.subject_prefix);
    config.subject_prefix = format!("{head}{}", "p".repeat(256 - head.len()));
    assert_eq!(config.subject_prefix.len(), 256);
    config.request_timeout = Duration::from_secs(5);
    let log = NatsEventLog::new(config.clone()).await.expect("connect");
    log.setup().await.expect("setup");
    let type_name = "t".repeat(256);
    let id = "i".repeat(1024);
    let last = timeout(
        LIMIT,
        log.append(&type_name, &id, SeqNo::ZERO, &[Bytes::from("1")]),
    )
    .await
    .expect("in time")
    .expect("the longest valid subject is accepted");
    assert_eq!(last, SeqNo::new(1));
    assert_eq!(
        log.last_seq_no(&type_name, &id).await.expect("last"),
        SeqNo::new(1)
    );
    let read: Vec<_> = log
        .events_by_id(&type_name, &id, SeqNo::new(1))
        .try_collect()
        .await
        .expect("events");
    assert_eq!(read, vec![(SeqNo::new(1), Bytes::from("1"))]);
    jetstream_of(&log)
        .delete_stream(&config.stream)
        .await
        .expect("delete");
}

/// Each configured TLS file that cannot be read (missing, or a directory) is
/// a `NatsError::TlsFile` naming its field and path, before connecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_tls_file_is_named_with_its_field_and_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let present = dir.path().join("present.pem");
    std::fs::write(&present, "not checked further").expect("write");
    let missing = std::path::PathBuf::from("/nonexistent/eventsourced/tls.pem");
    let cases = [
        (
            "tls.ca-file",
            missing.clone(),
            TlsConfig {
                required: true,
                ca_file: Some(missing.clone()),
                ..Default::default()
            },
        ),
        (
            "tls.ca-file",
            dir.path().to_owned(),
            TlsConfig {
                required: true,
                ca_file: Some(dir.path().to_owned()),
                ..Default::default()
            },
        ),
        (
            "tls.cert-file",
            missing.clone(),
            TlsConfig {
                cert_file: Some(missing.clone()),
                key_file: Some(present.clone()),
                ..Default::default()
            },
        ),
        (
            "tls.key-file",
            missing.clone(),
            TlsConfig {
                cert_file: Some(present.clone()),
                key_file: Some(missing.clone()),
                ..Default::default()
            },
        ),
    ];
    for (want_field, want_path, tls) in cases {
        let mut config = NatsConfig::from_url(&support::nats_url());
        config.tls = Some(tls);
        let error = timeout(LIMIT, NatsEventLog::new(config))
            .await
            .expect("in time")
            .expect_err("an unreadable TLS file");
        match &error {
            NatsError::TlsFile { field, path, .. } => {
                assert_eq!(*field, want_field, "{error}");
                assert_eq!(path, &want_path, "{error}");
            }
            other => panic!("{want_field}: expected TlsFile, got {other:?}"),
        }
        let message = error.to_string();
        assert!(
            message.contains(want_field) && message.contains(&*want_path.to_string_lossy()),
            "{message}"
        );
    }
}
