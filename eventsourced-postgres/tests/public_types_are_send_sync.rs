//! Every public type can cross threads and be cloned and debugged.

use eventsourced_postgres::{
    PostgresConfig, PostgresError, PostgresEventLog, PostgresSnapshotStore, Tables, TlsMode,
};
use std::fmt::Debug;

fn send_sync<T: Send + Sync + 'static>() {}
fn clone_debug<T: Clone + Debug>() {}

#[test]
fn public_types_are_send_sync_clone_debug() {
    send_sync::<PostgresConfig>();
    send_sync::<PostgresError>();
    send_sync::<PostgresEventLog>();
    send_sync::<PostgresSnapshotStore>();
    send_sync::<Tables>();
    send_sync::<TlsMode>();
    clone_debug::<PostgresConfig>();
    clone_debug::<PostgresEventLog>();
    clone_debug::<PostgresSnapshotStore>();
    clone_debug::<Tables>();
    clone_debug::<TlsMode>();
}
