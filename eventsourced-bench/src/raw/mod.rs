//! Raw write ceilings: the same writes as the runtime's, straight to each
//! server, so that the runtime's numbers have something to be judged by.

pub(crate) mod nats;
pub(crate) mod postgres;
pub(crate) mod sqlite;

/// The event every raw write stores: what the runtime's `Counter` stores for
/// `Increase(2)`, encoded by serde_json.
pub(crate) const EVENT: &[u8] = br#"{"Increased":2}"#;

/// The entity type of the raw writes (the reads use types of their own).
pub(crate) const TYPE_NAME: &str = "bench-counter";
