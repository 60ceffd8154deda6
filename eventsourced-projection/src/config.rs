//! The tunable settings of a projection, loadable from configuration files.

use crate::ErrorStrategy;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The settings of a projection (kebab-case keys, human-readable durations),
/// applied with [`ProjectionBuilder::config`](crate::ProjectionBuilder::config).
///
/// ```
/// use eventsourced_projection::{ErrorStrategy, ProjectionConfig};
/// use std::time::Duration;
///
/// let config: ProjectionConfig = serde_json::from_str(r#"{
///     "batch-size": 500,
///     "max-wait": "20ms",
///     "error-strategy": { "kind": "retry", "max-retries": 3, "then": "skip" }
/// }"#).unwrap();
/// assert_eq!(config.batch_size, 500);
/// assert_eq!(config.max_wait, Duration::from_millis(20));
/// assert!(matches!(config.error_strategy, ErrorStrategy::Retry(p) if p.max_retries == 3));
/// assert_eq!(config.restart_max_backoff, Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct ProjectionConfig {
    /// At most this many events per batch (one transaction); default 100.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How long a batch waits to fill after its first event; default 50 ms.
    #[serde(default = "default_max_wait", with = "humantime_serde")]
    pub max_wait: Duration,
    /// What to do when the handler fails on an event; default stop.
    #[serde(default)]
    pub error_strategy: ErrorStrategy,
    /// The first backoff after an infrastructure error; default 100 ms.
    #[serde(default = "default_restart_min_backoff", with = "humantime_serde")]
    pub restart_min_backoff: Duration,
    /// The longest backoff after infrastructure errors; default 5 s.
    #[serde(default = "default_restart_max_backoff", with = "humantime_serde")]
    pub restart_max_backoff: Duration,
}

pub(crate) fn default_batch_size() -> usize {
    100
}

pub(crate) fn default_max_wait() -> Duration {
    Duration::from_millis(50)
}

pub(crate) fn default_restart_min_backoff() -> Duration {
    Duration::from_millis(100)
}

pub(crate) fn default_restart_max_backoff() -> Duration {
    Duration::from_secs(5)
}

impl Default for ProjectionConfig {
    fn default() -> Self {
        ProjectionConfig {
            batch_size: default_batch_size(),
            max_wait: default_max_wait(),
            error_strategy: ErrorStrategy::default(),
            restart_min_backoff: default_restart_min_backoff(),
            restart_max_backoff: default_restart_max_backoff(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Exhausted, RetryPolicy};

    #[test]
    fn round_trips_and_refuses_unknown_keys() {
        let config = ProjectionConfig {
            error_strategy: ErrorStrategy::Retry(RetryPolicy {
                then: Exhausted::Skip,
                ..RetryPolicy::default()
            }),
            ..ProjectionConfig::default()
        };
        let json = serde_json::to_string(&config).unwrap();
        assert!(json.contains(r#""max-wait":"50ms""#), "{json}");
        let back: ProjectionConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
        let empty: ProjectionConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, ProjectionConfig::default());
        for bad in [
            r#"{"batch_size": 1}"#,
            r#"{"error-strategy": {"kind": "retry", "max-retry": 1}}"#,
            r#"{"error-strategy": {"kind": "sometimes"}}"#,
            r#"{"max-wait": "soon"}"#,
        ] {
            assert!(
                serde_json::from_str::<ProjectionConfig>(bad).is_err(),
                "{bad}"
            );
        }
        let skip: ProjectionConfig =
            serde_json::from_str(r#"{"error-strategy": {"kind": "skip"}}"#).unwrap();
        assert_eq!(skip.error_strategy, ErrorStrategy::Skip);
    }
}
