//! The events a projection hands to its handler.

use eventsourced::{Position, SeqNo};

/// A decoded event of the projected entity type, with where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectedEvent<E> {
    /// Its position in the log; the offset stored after handling it.
    pub position: Position,
    /// The id of the entity that emitted it.
    pub id: String,
    /// Its seq_no within that entity.
    pub seq_no: SeqNo,
    /// The event, decoded with the projection's `Binarize`.
    pub event: E,
}
