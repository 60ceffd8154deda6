use super::{ODD_IDS, unique_type_name};
use crate::{SeqNo, SnapshotStore, SnapshotStoreError};
use bytes::Bytes;

/// Runs every snapshot store check against `store`; panics on the first failure.
///
/// ```
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 4)]
/// # async fn main() {
/// use eventsourced::{MemorySnapshotStore, testkit::check_snapshot_store};
///
/// // In a backend's tests, e.g. a `#[tokio::test(flavor = "multi_thread")]`:
/// // returns if the store keeps the contract, panics with the broken rule if not.
/// check_snapshot_store(MemorySnapshotStore::new()).await;
/// # }
/// ```
pub async fn check_snapshot_store<S: SnapshotStore>(store: S) {
    missing_is_none(&store).await;
    round_trip_binary(&store).await;
    newer_replaces_older_never(&store).await;
    types_are_isolated(&store).await;
    odd_ids_round_trip(&store).await;
    edge_states_and_seq_nos(&store).await;
    concurrent_saves_keep_the_newest(&store).await;
}

async fn missing_is_none<S: SnapshotStore>(store: &S) {
    let type_name = unique_type_name("snap-missing");
    let loaded = store.load(&type_name, "nobody").await;
    assert!(
        matches!(loaded, Ok(None)),
        "load of a never-saved snapshot must be Ok(None), got {loaded:?}"
    );
}

async fn round_trip_binary<S: SnapshotStore>(store: &S) {
    let type_name = unique_type_name("snap-round-trip");
    let bytes: Bytes = (0..=255u8).collect::<Vec<_>>().into();
    store
        .save(&type_name, "a", SeqNo::new(7), bytes.clone())
        .await
        .expect("save must succeed");
    let loaded = store
        .load(&type_name, "a")
        .await
        .expect("load must succeed");
    assert_eq!(
        loaded,
        Some((SeqNo::new(7), bytes)),
        "a saved snapshot (all 256 byte values) must load unchanged"
    );
}

async fn newer_replaces_older_never<S: SnapshotStore>(store: &S) {
    let type_name = unique_type_name("snap-replace");
    for (seq_no, state) in [(10, "ten"), (20, "twenty")] {
        store
            .save(&type_name, "a", SeqNo::new(seq_no), Bytes::from(state))
            .await
            .expect("save must succeed");
    }
    let loaded = store
        .load(&type_name, "a")
        .await
        .expect("load must succeed");
    assert_eq!(
        loaded,
        Some((SeqNo::new(20), Bytes::from("twenty"))),
        "a newer snapshot must replace the older one"
    );
    store
        .save(&type_name, "a", SeqNo::new(15), Bytes::from("fifteen"))
        .await
        .expect("save of an older snapshot must succeed (and be ignored)");
    let loaded = store
        .load(&type_name, "a")
        .await
        .expect("load must succeed");
    assert_eq!(
        loaded,
        Some((SeqNo::new(20), Bytes::from("twenty"))),
        "a late save of an older snapshot must not replace a newer one"
    );
}

async fn types_are_isolated<S: SnapshotStore>(store: &S) {
    let type_a = unique_type_name("snap-type-a");
    let type_b = unique_type_name("snap-type-b");
    store
        .save(&type_a, "same", SeqNo::new(1), Bytes::from("a"))
        .await
        .expect("save must succeed");
    let loaded = store
        .load(&type_b, "same")
        .await
        .expect("load must succeed");
    assert_eq!(
        loaded, None,
        "entities of different types with the same id must not share a snapshot"
    );
    // Type and id are not joined into one key without escaping: (t, "y.z")
    // and (t.y, "z") are different entities, as are (t, "y z") and (t y, "z").
    for separator in [".", " ", "/", ":"] {
        let short = unique_type_name("snap-join");
        let long = format!("{short}{separator}y");
        store
            .save(
                &short,
                &format!("y{separator}z"),
                SeqNo::new(1),
                Bytes::from("short"),
            )
            .await
            .expect("save must succeed");
        let loaded = store.load(&long, "z").await.expect("load must succeed");
        assert_eq!(
            loaded, None,
            "({long:?}, \"z\") must not load the snapshot of ({short:?}, \"y{separator}z\")"
        );
    }
}

async fn odd_ids_round_trip<S: SnapshotStore>(store: &S) {
    let type_name = unique_type_name("snap-odd-ids");
    let mut stored = Vec::new();
    for (n, id) in (1..).zip(ODD_IDS) {
        let state = Bytes::from(format!("state of {id}"));
        match store
            .save(&type_name, id, SeqNo::new(n), state.clone())
            .await
        {
            Ok(()) => stored.push((*id, SeqNo::new(n), state)),
            Err(SnapshotStoreError::InvalidId { .. }) => {
                let loaded = store.load(&type_name, id).await;
                assert!(
                    matches!(loaded, Ok(None) | Err(SnapshotStoreError::InvalidId { .. })),
                    "a refused id {id:?} must have nothing stored, got {loaded:?}"
                );
            }
            Err(other) => {
                panic!("save for id {id:?} must succeed or be refused as InvalidId, got {other}")
            }
        }
    }
    // Loaded after all were saved: an id whose key collides with a later
    // one's would load the later snapshot.
    for (id, seq_no, state) in stored {
        let loaded = store.load(&type_name, id).await.expect("load must succeed");
        assert_eq!(
            loaded,
            Some((seq_no, state)),
            "the snapshot of id {id:?} must round-trip and not collide with another id"
        );
    }
}

/// seq_no 0 and an empty state are snapshots like any other, and a save with
/// the stored seq_no replaces the stored state (only an older one is ignored).
async fn edge_states_and_seq_nos<S: SnapshotStore>(store: &S) {
    let type_name = unique_type_name("snap-edges");
    store
        .save(&type_name, "a", SeqNo::ZERO, Bytes::new())
        .await
        .expect("a save at seq_no 0 with an empty state must succeed");
    assert_eq!(
        store
            .load(&type_name, "a")
            .await
            .expect("load must succeed"),
        Some((SeqNo::ZERO, Bytes::new())),
        "an empty state at seq_no 0 must load as saved"
    );
    for state in ["first", "second"] {
        store
            .save(&type_name, "a", SeqNo::new(5), Bytes::from(state))
            .await
            .expect("save must succeed");
    }
    assert_eq!(
        store
            .load(&type_name, "a")
            .await
            .expect("load must succeed"),
        Some((SeqNo::new(5), Bytes::from("second"))),
        "a save with the stored seq_no must replace the stored state"
    );
}

/// Saves of one entity racing from clones of the store, in no particular
/// order, all succeed and leave the newest snapshot.
async fn concurrent_saves_keep_the_newest<S: SnapshotStore>(store: &S) {
    const SAVES: u64 = 50;
    let type_name = unique_type_name("snap-concurrent");
    // A fixed shuffle of 1..=SAVES (37 is coprime with 50).
    let saves: Vec<_> = (0..SAVES)
        .map(|i| {
            let seq_no = (i * 37) % SAVES + 1;
            let (store, type_name) = (store.clone(), type_name.clone());
            tokio::spawn(async move {
                store
                    .save(
                        &type_name,
                        "a",
                        SeqNo::new(seq_no),
                        Bytes::from(seq_no.to_string()),
                    )
                    .await
            })
        })
        .collect();
    for save in saves {
        save.await
            .expect("a save task must not panic")
            .unwrap_or_else(|e| panic!("a concurrent save must succeed: {e}"));
    }
    assert_eq!(
        store
            .load(&type_name, "a")
            .await
            .expect("load must succeed"),
        Some((SeqNo::new(SAVES), Bytes::from(SAVES.to_string()))),
        "after concurrent saves the newest snapshot must be stored"
    );
}
