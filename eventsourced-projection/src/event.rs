//! The events a projection hands to its handler.

use eventsourced::{Position, SeqNo};

/// A decoded event of the projected entity type, with where it comes from.
///
/// ```
/// use eventsourced::{Position, SeqNo};
/// use eventsourced_projection::ProjectedEvent;
///
/// let event = ProjectedEvent { position: Position::new(7), id: "a".to_owned(), seq_no: SeqNo::new(3), event: 42i64 };
/// let doubled = ProjectedEvent { event: event.event * 2, ..event.clone() };
/// assert_eq!((doubled.position, doubled.event), (event.position, 84));
/// ```
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
