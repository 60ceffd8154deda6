//! An append is acknowledged only once its transaction has committed. The
//! common append is one statement in a transaction of its own, so its commit
//! happens after the statement's own answer: a failure at commit time must
//! still reach the caller, and nothing of the batch may be stored.

mod support;

use bytes::Bytes;
use eventsourced::{EventLog, SeqNo};
use futures::TryStreamExt;
use support::TestDb;

#[tokio::test]
async fn a_failure_at_commit_time_fails_the_append_and_stores_nothing() {
    let db = TestDb::new();
    let log = db.log().await;
    let table = log.tables().events();
    let raw = db.raw().await;

    // Warm up the fast path: the first append's predecessor is known (none).
    let first = log
        .append("commit-test", "c-1", SeqNo::ZERO, &[Bytes::from("e1")])
        .await
        .expect("the first append is stored");
    assert_eq!(first, SeqNo::new(1));

    // A constraint trigger checked at COMMIT that refuses the event "poison".
    let schema = &db.config.schema;
    raw.batch_execute(&format!(
        "CREATE FUNCTION {schema}.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.event = 'poison'::bytea THEN
                 RAISE EXCEPTION 'refused at commit';
             END IF;
             RETURN NULL;
         END $$;
         CREATE CONSTRAINT TRIGGER refuse_poison AFTER INSERT ON {table}
             DEFERRABLE INITIALLY DEFERRED
             FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_poison();"
    ))
    .await
    .expect("create the deferred trigger");

    let refused = log
        .append(
            "commit-test",
            "c-1",
            SeqNo::new(1),
            &[Bytes::from("e2"), Bytes::from("poison")],
        )
        .await
        .expect_err("a commit that fails must fail the append");
    assert!(
        refused.to_string().contains("refused at commit"),
        "the error names the server's reason: {refused}"
    );

    let stored: Vec<(SeqNo, Bytes)> = log
        .events_by_id("commit-test", "c-1", SeqNo::new(1))
        .try_collect()
        .await
        .expect("read back");
    assert_eq!(stored, vec![(SeqNo::new(1), Bytes::from("e1"))]);
    assert_eq!(
        log.last_seq_no("commit-test", "c-1").await.expect("last"),
        SeqNo::new(1)
    );

    // The log still works afterwards.
    let next = log
        .append("commit-test", "c-1", SeqNo::new(1), &[Bytes::from("e2")])
        .await
        .expect("a good append after the failed one");
    assert_eq!(next, SeqNo::new(2));
}

/// The writer forces generic plans on its own connection only (see
/// `PostgresConfig`): connections handed to callers keep the server default.
#[tokio::test]
async fn pooled_connections_keep_the_server_plan_cache_mode() {
    let db = TestDb::new();
    let log = db.log().await;
    log.append("plan-test", "p-1", SeqNo::ZERO, &[Bytes::from("e1")])
        .await
        .expect("append");
    let raw = db.raw().await;
    let default: String = raw
        .query_one("SHOW plan_cache_mode", &[])
        .await
        .expect("show on a plain connection")
        .get(0);
    // Held at once, so that every connection of the pool is checked.
    let pool = log.pool();
    let clients = futures::future::try_join_all((0..pool.status().max_size).map(|_| pool.get()))
        .await
        .expect("every pooled connection");
    for client in &clients {
        let mode: String = client
            .query_one("SHOW plan_cache_mode", &[])
            .await
            .expect("show")
            .get(0);
        assert_eq!(
            mode, default,
            "a pooled connection has the writer's settings"
        );
    }
}
