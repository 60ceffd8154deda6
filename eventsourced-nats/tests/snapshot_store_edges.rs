//! The NATS key-value snapshot store at its edges: the whole seq_no range,
//! values written by someone else, and a server that goes away and comes
//! back. (What every store must do is in the shared suite, run by
//! `conformance.rs`.)

mod support;

use bytes::Bytes;
use eventsourced::{SeqNo, SnapshotStore, SnapshotStoreError, testkit::unique_type_name};
use eventsourced_nats::{NatsConfig, NatsSnapshotStore};
use std::time::Duration;
use tokio::time::timeout;

fn unique_bucket(label: &str) -> String {
    unique_type_name(label).replace('.', "-")
}

async fn store_at(url: &str, bucket: &str) -> NatsSnapshotStore {
    let mut config = NatsConfig::from_url(url);
    config.bucket = bucket.to_owned();
    config.request_timeout = Duration::from_secs(2);
    let store = NatsSnapshotStore::new(config).await.expect("connect");
    store.setup().await.expect("setup");
    store
}

async fn store() -> NatsSnapshotStore {
    store_at(&support::nats_url(), &unique_bucket("snapshots")).await
}

/// The store holds any seq_no of the u64 range (0 and u64::MAX
/// included), and an empty state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_seq_no_and_an_empty_state_round_trip() {
    let store = store().await;
    let t = unique_type_name("edges");
    for n in [
        0,
        1,
        i64::MAX.unsigned_abs(),
        i64::MAX.unsigned_abs() + 1,
        u64::MAX,
    ] {
        let id = format!("id-{n}");
        store
            .save(&t, &id, SeqNo::new(n), Bytes::from("s"))
            .await
            .expect("save");
        assert_eq!(
            store.load(&t, &id).await.expect("load"),
            Some((SeqNo::new(n), Bytes::from("s")))
        );
    }
    // empty state
    store
        .save(&t, "empty", SeqNo::new(3), Bytes::new())
        .await
        .expect("save");
    assert_eq!(
        store.load(&t, "empty").await.expect("load"),
        Some((SeqNo::new(3), Bytes::new()))
    );
}

/// Values in the bucket that this store did not write (empty, truncated, of
/// an unknown format) load as `Corrupt`, and a save replaces them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_values_are_corrupt_and_a_save_replaces_them() {
    let bucket = unique_bucket("foreign");
    let store = store_at(&support::nats_url(), &bucket).await;
    let js = async_nats::jetstream::new(store.client().clone());
    let kv = js.get_key_value(bucket.clone()).await.expect("bucket");
    let t = "counter";
    let key = |id: &str| {
        use base64::Engine;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}", e.encode(t), e.encode(id))
    };
    for (id, value) in [
        ("empty", Bytes::new()),
        ("short", Bytes::from_static(b"\x01abc")),
        ("format", Bytes::from_static(b"\x09aaaaaaaaxx")),
    ] {
        kv.put(key(id), value).await.expect("raw put");
        let loaded = store.load(t, id).await;
        assert!(
            matches!(loaded, Err(SnapshotStoreError::Corrupt { .. })),
            "{id}: {loaded:?}"
        );
        store
            .save(t, id, SeqNo::new(5), Bytes::from("ok"))
            .await
            .expect("save over corrupt");
        assert_eq!(
            store.load(t, id).await.expect("load"),
            Some((SeqNo::new(5), Bytes::from("ok")))
        );
    }
    // A deleted or purged key loads as None and can be saved again, even
    // with a lower seq_no.
    store
        .save(t, "del", SeqNo::new(9), Bytes::from("nine"))
        .await
        .expect("save");
    kv.delete(key("del")).await.expect("delete");
    assert_eq!(store.load(t, "del").await.expect("load"), None);
    store
        .save(t, "del", SeqNo::new(2), Bytes::from("two"))
        .await
        .expect("save after delete");
    assert_eq!(
        store.load(t, "del").await.expect("load"),
        Some((SeqNo::new(2), Bytes::from("two")))
    );
    kv.purge(key("del")).await.expect("purge");
    assert_eq!(store.load(t, "del").await.expect("load"), None);
    store
        .save(t, "del", SeqNo::new(1), Bytes::from("one"))
        .await
        .expect("save after purge");
    assert_eq!(
        store.load(t, "del").await.expect("load"),
        Some((SeqNo::new(1), Bytes::from("one")))
    );
}

/// A killed server makes saves and loads fail within the request timeout
/// instead of hanging; after its restart the store works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_away_is_an_error_not_a_hang_and_the_store_recovers() {
    let mut server = support::TestServer::start(&[]);
    let store = store_at(&server.url(), &unique_bucket("down")).await;
    store
        .save("t", "a", SeqNo::new(1), Bytes::from("x"))
        .await
        .expect("save");
    server.kill();
    let saved = timeout(
        Duration::from_secs(20),
        store.save("t", "a", SeqNo::new(2), Bytes::from("y")),
    )
    .await
    .expect("a save against a dead server must end");
    assert!(saved.is_err());
    let loaded = timeout(Duration::from_secs(20), store.load("t", "a"))
        .await
        .expect("a load against a dead server must end");
    assert!(loaded.is_err());
    server.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut last = None;
    while std::time::Instant::now() < deadline {
        match timeout(
            Duration::from_secs(5),
            store.save("t", "a", SeqNo::new(3), Bytes::from("z")),
        )
        .await
        {
            Ok(Ok(())) => {
                last = None;
                break;
            }
            other => last = Some(format!("{other:?}")),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        last.is_none(),
        "save never worked again after restart: {last:?}"
    );
    assert_eq!(
        store.load("t", "a").await.expect("load"),
        Some((SeqNo::new(3), Bytes::from("z")))
    );
}
