//! Newtypes for the numbers the runtime is built on.

use std::fmt;

/// The sequence number of an event within one entity: the first event is 1, and
/// every append continues without gaps. [`SeqNo::ZERO`] means "no events yet".
///
/// ```
/// use eventsourced::SeqNo;
/// let last = SeqNo::ZERO;
/// assert_eq!(last.next(), SeqNo::new(1));
/// assert_eq!(SeqNo::new(41).get() + 1, 42);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde_json", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde_json", serde(transparent))]
pub struct SeqNo(u64);

impl SeqNo {
    /// No events: the expected last seq_no for an entity's first append.
    ///
    /// ```
    /// use eventsourced::SeqNo;
    /// assert_eq!(SeqNo::ZERO, SeqNo::default());
    /// assert_eq!(SeqNo::ZERO.next(), SeqNo::new(1)); // the first event
    /// ```
    pub const ZERO: SeqNo = SeqNo(0);

    /// Wraps a raw sequence number.
    ///
    /// ```
    /// use eventsourced::SeqNo;
    /// const FIRST: SeqNo = SeqNo::new(1);
    /// assert_eq!(FIRST.get(), 1);
    /// assert_eq!(FIRST.to_string(), "1");
    /// ```
    pub const fn new(n: u64) -> Self {
        SeqNo(n)
    }

    /// The raw number.
    ///
    /// ```
    /// use eventsourced::SeqNo;
    /// assert_eq!(SeqNo::new(42).get(), 42);
    /// assert_eq!(SeqNo::ZERO.get(), 0);
    /// ```
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The sequence number after this one.
    ///
    /// ```
    /// use eventsourced::SeqNo;
    /// let last = SeqNo::new(41);
    /// assert_eq!(last.next(), SeqNo::new(42));
    /// assert!(last < last.next());
    /// ```
    pub const fn next(self) -> Self {
        SeqNo(self.0 + 1)
    }

    /// This number plus `n`, e.g. the last seq_no after appending `n` events.
    ///
    /// ```
    /// use eventsourced::SeqNo;
    /// let last = SeqNo::new(5);
    /// assert_eq!(last.add(3), SeqNo::new(8)); // after appending 3 events
    /// assert_eq!(last.add(0), last);
    /// ```
    pub const fn add(self, n: u64) -> Self {
        SeqNo(self.0 + n)
    }

    /// Converts a number read from a signed database column; `None` if negative.
    ///
    /// ```
    /// use eventsourced::SeqNo;
    /// assert_eq!(SeqNo::from_i64(7), Some(SeqNo::new(7)));
    /// assert_eq!(SeqNo::from_i64(-1), None);
    /// ```
    pub fn from_i64(n: i64) -> Option<Self> {
        u64::try_from(n).ok().map(SeqNo)
    }

    /// Converts to a signed database column; `None` if larger than `i64::MAX`.
    ///
    /// ```
    /// use eventsourced::SeqNo;
    /// assert_eq!(SeqNo::new(7).to_i64(), Some(7));
    /// assert_eq!(SeqNo::new(u64::MAX).to_i64(), None);
    /// ```
    pub fn to_i64(self) -> Option<i64> {
        i64::try_from(self.0).ok()
    }
}

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The position of an event in the whole log: totally ordered, increasing with
/// commit order as seen by `events_by_type`, not necessarily contiguous.
/// A consumer that handled position `p` resumes from `p.next()`.
///
/// ```
/// use eventsourced::Position;
/// assert!(Position::START < Position::new(1));
/// assert_eq!(Position::new(9).next(), Position::new(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde_json", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde_json", serde(transparent))]
pub struct Position(u64);

impl Position {
    /// The beginning of the log: reading from here yields every event.
    ///
    /// ```
    /// use eventsourced::Position;
    /// assert_eq!(Position::START, Position::default());
    /// assert!(Position::START < Position::new(1)); // before every stored event
    /// ```
    pub const START: Position = Position(0);

    /// Wraps a raw position.
    ///
    /// ```
    /// use eventsourced::Position;
    /// const SAVED: Position = Position::new(17);
    /// assert_eq!(SAVED.get(), 17);
    /// assert_eq!(SAVED.to_string(), "17");
    /// ```
    pub const fn new(n: u64) -> Self {
        Position(n)
    }

    /// The raw number.
    ///
    /// ```
    /// use eventsourced::Position;
    /// assert_eq!(Position::new(17).get(), 17);
    /// assert_eq!(Position::START.get(), 0);
    /// ```
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The position after this one: where to resume after handling this one.
    ///
    /// ```
    /// use eventsourced::Position;
    /// let last_handled = Position::new(9);
    /// let resume_from = last_handled.next();
    /// assert_eq!(resume_from, Position::new(10));
    /// ```
    pub const fn next(self) -> Self {
        Position(self.0 + 1)
    }

    /// Converts a number read from a signed database column; `None` if negative.
    ///
    /// ```
    /// use eventsourced::Position;
    /// assert_eq!(Position::from_i64(3), Some(Position::new(3)));
    /// assert_eq!(Position::from_i64(-3), None);
    /// ```
    pub fn from_i64(n: i64) -> Option<Self> {
        u64::try_from(n).ok().map(Position)
    }

    /// Converts to a signed database column; `None` if larger than `i64::MAX`.
    ///
    /// ```
    /// use eventsourced::Position;
    /// assert_eq!(Position::new(3).to_i64(), Some(3));
    /// ```
    pub fn to_i64(self) -> Option<i64> {
        i64::try_from(self.0).ok()
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
