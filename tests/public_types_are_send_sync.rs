//! Compile-time check: the types users share between tasks are Send + Sync.

mod support;

use eventsourced::*;

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn public_types_are_send_and_sync() {
    assert_send_sync::<EntityRef<support::Counter>>();
    assert_send_sync::<HandleCommandError>();
    assert_send_sync::<SpawnError>();
    assert_send_sync::<EventLogError>();
    assert_send_sync::<SnapshotStoreError>();
    assert_send_sync::<BinarizeError>();
    assert_send_sync::<MemoryEventLog>();
    assert_send_sync::<MemorySnapshotStore>();
    assert_send_sync::<NoopSnapshotStore>();
    assert_send_sync::<EventEnvelope>();
    assert_send_sync::<SeqNo>();
    assert_send_sync::<Position>();
    assert_send_sync::<SerdeJson>();
    assert_send_sync::<Prost>();
    assert_send_sync::<EntityOptions>();
}

/// `EntityRef` is `Clone` and `Debug` although the entity type is neither.
#[test]
fn entity_ref_needs_nothing_of_the_entity() {
    struct Opaque;
    impl EventSourced for Opaque {
        type Id = u32;
        type Event = ();
        const TYPE_NAME: &'static str = "opaque";
        fn handle_event(self, _: ()) -> Self {
            self
        }
    }
    fn assert_clone_debug<T: Clone + std::fmt::Debug>() {}
    assert_clone_debug::<EntityRef<Opaque>>();
}
