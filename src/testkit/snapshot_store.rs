use super::{ODD_IDS, unique_type_name};
use crate::{SeqNo, SnapshotStore, SnapshotStoreError};
use bytes::Bytes;

/// Runs every snapshot store check against `store`; panics on the first failure.
pub async fn check_snapshot_store<S: SnapshotStore>(store: S) {
    missing_is_none(&store).await;
    round_trip_binary(&store).await;
    newer_replaces_older_never(&store).await;
    types_are_isolated(&store).await;
    odd_ids_round_trip(&store).await;
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
}

async fn odd_ids_round_trip<S: SnapshotStore>(store: &S) {
    let type_name = unique_type_name("snap-odd-ids");
    for (n, id) in (1..).zip(ODD_IDS) {
        let state = Bytes::from(format!("state of {id}"));
        match store
            .save(&type_name, id, SeqNo::new(n), state.clone())
            .await
        {
            Ok(()) => {
                let loaded = store.load(&type_name, id).await.expect("load must succeed");
                assert_eq!(
                    loaded,
                    Some((SeqNo::new(n), state)),
                    "the snapshot of id {id:?} must round-trip and not collide with another id"
                );
            }
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
}
