//! What a projection does when its handler fails on an event.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a projection does when its handler fails on an event (or the event
/// cannot be decoded). The events before the failing one are committed first,
/// so the strategy concerns exactly one event.
///
/// ```
/// use eventsourced_projection::{ErrorStrategy, RetryPolicy, Exhausted};
/// use std::time::Duration;
///
/// let strategy = ErrorStrategy::Retry(RetryPolicy {
///     max_retries: 5,
///     min_backoff: Duration::from_millis(100),
///     max_backoff: Duration::from_secs(10),
///     then: Exhausted::Skip,
/// });
/// assert_eq!(strategy.to_string(), "retry up to 5 times (backoff 100ms..10s), then skip");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", from = "StrictStrategy")]
#[non_exhaustive]
pub enum ErrorStrategy {
    /// Stop the projection; its state shows the error and the failing position.
    /// Run it again once the cause is fixed. The default.
    #[default]
    Stop,
    /// Skip the event (logged with `tracing::warn!`, counted in the state) and go on.
    Skip,
    /// Retry the event with exponential backoff, then stop or skip.
    Retry(RetryPolicy),
}

/// How an [`ErrorStrategy`] is read: its unit kinds as struct variants, so
/// that `deny_unknown_fields` refuses extra keys there too (serde lets them
/// pass for unit variants of an internally tagged enum), e.g. a
/// `max-retries` given with `kind: stop`.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
enum StrictStrategy {
    Stop {},
    Skip {},
    Retry(RetryPolicy),
}

impl From<StrictStrategy> for ErrorStrategy {
    fn from(strategy: StrictStrategy) -> Self {
        match strategy {
            StrictStrategy::Stop {} => ErrorStrategy::Stop,
            StrictStrategy::Skip {} => ErrorStrategy::Skip,
            StrictStrategy::Retry(retry) => ErrorStrategy::Retry(retry),
        }
    }
}

/// Retries with exponential backoff: `min_backoff`, doubled after each
/// attempt, at most `max_backoff`.
///
/// ```
/// use eventsourced_projection::{Exhausted, RetryPolicy};
/// use std::time::Duration;
///
/// let policy = RetryPolicy::default();
/// assert_eq!((policy.max_retries, policy.then), (5, Exhausted::Stop));
/// assert_eq!(policy.min_backoff, Duration::from_millis(100));
/// assert_eq!(policy.max_backoff, Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt; default 5.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// The wait before the first retry; default 100 ms.
    #[serde(default = "default_min_backoff", with = "humantime_serde")]
    pub min_backoff: Duration,
    /// The longest wait between retries; default 10 s.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// What to do when the retries are used up; default stop.
    #[serde(default)]
    pub then: Exhausted,
}

fn default_max_retries() -> u32 {
    5
}

fn default_min_backoff() -> Duration {
    Duration::from_millis(100)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(10)
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: default_max_retries(),
            min_backoff: default_min_backoff(),
            max_backoff: default_max_backoff(),
            then: Exhausted::default(),
        }
    }
}

/// What to do when the retries of a [`RetryPolicy`] are used up.
///
/// ```
/// use eventsourced_projection::{Exhausted, RetryPolicy};
///
/// let policy: RetryPolicy = serde_json::from_str(r#"{ "then": "skip" }"#).unwrap();
/// assert_eq!(policy.then, Exhausted::Skip);
/// assert_eq!(Exhausted::default(), Exhausted::Stop);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exhausted {
    /// Stop the projection.
    #[default]
    Stop,
    /// Skip the event.
    Skip,
}

/// What the engine does after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Retry(Duration),
    Skip,
    Stop,
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based).
    ///
    /// ```
    /// use eventsourced_projection::RetryPolicy;
    /// use std::time::Duration;
    ///
    /// let policy = RetryPolicy { max_backoff: Duration::from_millis(500), ..RetryPolicy::default() };
    /// let waits: Vec<u128> = (1..=5).map(|r| policy.backoff(r).as_millis()).collect();
    /// assert_eq!(waits, [100, 200, 400, 500, 500]);
    /// ```
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.min_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
            .max(self.min_backoff.min(self.max_backoff))
    }
}

impl ErrorStrategy {
    /// The decision after `attempts` failed attempts; `retryable` is false for
    /// failures that cannot change (an undecodable event).
    pub(crate) fn decide(&self, attempts: u32, retryable: bool) -> Decision {
        match self {
            ErrorStrategy::Stop => Decision::Stop,
            ErrorStrategy::Skip => Decision::Skip,
            ErrorStrategy::Retry(policy) => {
                if retryable && attempts <= policy.max_retries {
                    Decision::Retry(policy.backoff(attempts))
                } else {
                    match policy.then {
                        Exhausted::Stop => Decision::Stop,
                        Exhausted::Skip => Decision::Skip,
                    }
                }
            }
        }
    }
}

impl std::fmt::Display for ErrorStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorStrategy::Stop => write!(f, "stop"),
            ErrorStrategy::Skip => write!(f, "skip"),
            ErrorStrategy::Retry(p) => write!(
                f,
                "retry up to {} times (backoff {:?}..{:?}), then {}",
                p.max_retries,
                p.min_backoff,
                p.max_backoff,
                match p.then {
                    Exhausted::Stop => "stop",
                    Exhausted::Skip => "skip",
                }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_max() {
        let p = RetryPolicy {
            max_retries: 10,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            then: Exhausted::Stop,
        };
        let waits: Vec<_> = (1..=5).map(|r| p.backoff(r).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        assert_eq!(p.backoff(u32::MAX), Duration::from_millis(500));
    }

    #[test]
    fn retry_then_skip_or_stop() {
        let mut p = RetryPolicy {
            max_retries: 2,
            ..RetryPolicy::default()
        };
        let s = ErrorStrategy::Retry(p);
        assert!(matches!(s.decide(1, true), Decision::Retry(_)));
        assert!(matches!(s.decide(2, true), Decision::Retry(_)));
        assert_eq!(s.decide(3, true), Decision::Stop);
        assert_eq!(s.decide(1, false), Decision::Stop);
        p.then = Exhausted::Skip;
        assert_eq!(ErrorStrategy::Retry(p).decide(3, true), Decision::Skip);
        assert_eq!(ErrorStrategy::Skip.decide(1, true), Decision::Skip);
        assert_eq!(ErrorStrategy::Stop.decide(1, true), Decision::Stop);
    }
}
