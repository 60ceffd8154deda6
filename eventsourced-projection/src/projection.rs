//! The projection engine: follows `events_by_type` and drives a sink.

use crate::{
    Batch, BatchError, Delivery, ErrorAction, ErrorStrategy, HandlerError, InProcessLease,
    LastError, Lease, LeaseGuard, Phase, ProjectedEvent, ProjectionConfig, ProjectionError,
    ProjectionSink, ProjectionState, lag::LagSource, strategy::Decision,
};
use eventsourced::{Binarize, EventEnvelope, EventLog, Position};
use futures::{FutureExt, Stream, StreamExt};
use std::{fmt, panic::AssertUnwindSafe, pin::Pin, sync::Arc, time::Duration};
use tokio::{
    sync::{Mutex, OwnedMutexGuard, watch},
    task::JoinHandle,
    time::Instant,
};
use tracing::{Instrument, debug, warn};

/// The longest projection name, in bytes (see [`ProjectionBuilder::build`]).
///
/// ```
/// assert_eq!(eventsourced_projection::MAX_NAME_BYTES, 255);
/// ```
pub const MAX_NAME_BYTES: usize = 255;

/// A named read model kept up to date from the events of one entity type.
///
/// It follows [`EventLog::events_by_type`] from the offset stored by its sink,
/// decodes events with a [`Binarize`], and hands them in batches to the sink
/// (handler plus offset store). It runs in a background task once
/// [`run`](Projection::run) is called, until [`stop`](Projection::stop) or its
/// [`ErrorStrategy`] stops it, or until the last clone of the handle is
/// dropped. Clones share the projection.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use eventsourced::{EventLog, MemoryEventLog, SerdeJson, SeqNo, Binarize};
/// use eventsourced_projection::{
///     AtLeastOnce, Handler, HandlerError, MemoryOffsetStore, MemoryLag, ProjectedEvent, Projection,
/// };
/// use std::{collections::HashMap, sync::{Arc, Mutex}, time::Duration};
///
/// #[derive(Clone, Default)]
/// struct Totals(Arc<Mutex<HashMap<String, i64>>>);
///
/// impl Handler for Totals {
///     type Event = i64;
///     async fn handle(&mut self, e: &ProjectedEvent<i64>) -> Result<(), HandlerError> {
///         *self.0.lock().unwrap().entry(e.id.clone()).or_default() += e.event;
///         Ok(())
///     }
/// }
///
/// let log = MemoryEventLog::default();
/// let events = [SerdeJson.encode(&2i64).unwrap(), SerdeJson.encode(&3i64).unwrap()];
/// log.append("counter", "a", SeqNo::ZERO, &events).await.unwrap();
///
/// let totals = Totals::default();
/// let projection = Projection::builder(
///     "counter-totals", "counter", log.clone(), SerdeJson,
///     AtLeastOnce::new(MemoryOffsetStore::default(), totals.clone()),
/// )
/// .lag_source(MemoryLag(log))
/// .build()
/// .unwrap();
/// projection.run().await;
/// let state = projection.wait_for(|s| s.handled == 2, Duration::from_secs(5)).await.unwrap();
/// assert_eq!(state.offset, Some(eventsourced::Position::new(2)));
/// assert_eq!(totals.0.lock().unwrap()["a"], 5);
/// assert_eq!(projection.state().await.lag, Some(0));
/// projection.stop().await;
/// # }
/// ```
pub struct Projection<L, B, S>
where
    S: ProjectionSink,
{
    inner: Arc<Inner<L, B, S>>,
    /// Dropped with the last handle: the running task then stops.
    alive: Arc<watch::Sender<()>>,
}

impl<L, B, S: ProjectionSink> Clone for Projection<L, B, S> {
    fn clone(&self) -> Self {
        Projection {
            inner: self.inner.clone(),
            alive: self.alive.clone(),
        }
    }
}

impl<L, B, S: ProjectionSink> fmt::Debug for Projection<L, B, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Projection")
            .field("name", &self.inner.config.name)
            .field("type_name", &self.inner.config.type_name)
            .finish_non_exhaustive()
    }
}

struct Config {
    name: String,
    type_name: String,
    batch_size: usize,
    max_wait: Duration,
    strategy: ErrorStrategy,
    restart_min_backoff: Duration,
    restart_max_backoff: Duration,
}

struct Inner<L, B, S> {
    config: Config,
    log: L,
    binarize: B,
    lease: Arc<dyn Lease>,
    lag: Option<Arc<dyn LagSource>>,
    sink: Arc<Mutex<S>>,
    status: watch::Sender<ProjectionState>,
    control: Mutex<Option<Running>>,
    /// Closed when the last [`Projection`] handle is dropped.
    gone: watch::Receiver<()>,
}

struct Running {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// Configures a [`Projection`]; from [`Projection::builder`].
///
/// Settings chain; [`build`](ProjectionBuilder::build) checks them all at once.
///
/// ```
/// # use eventsourced::{MemoryEventLog, SerdeJson};
/// # use eventsourced_projection::{AtLeastOnce, Handler, HandlerError, MemoryOffsetStore, ProjectedEvent, Projection};
/// # struct Count(u64);
/// # impl Handler for Count {
/// #     type Event = i64;
/// #     async fn handle(&mut self, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> { self.0 += 1; Ok(()) }
/// # }
/// # let sink = AtLeastOnce::new(MemoryOffsetStore::default(), Count(0));
/// use eventsourced_projection::ProjectionBuilder;
/// use std::time::Duration;
/// let builder: ProjectionBuilder<_, _, _> =
///     Projection::builder("totals", "counter", MemoryEventLog::default(), SerdeJson, sink);
/// let builder = builder.batch_size(500).max_wait(Duration::from_millis(20));
/// assert!(format!("{builder:?}").contains("batch_size: 500"), "{builder:?}");
/// let projection = builder.build().unwrap();
/// assert_eq!(projection.name(), "totals");
/// ```
pub struct ProjectionBuilder<L, B, S> {
    name: String,
    type_name: String,
    log: L,
    binarize: B,
    sink: S,
    config: ProjectionConfig,
    lease: Arc<dyn Lease>,
    lag: Option<Arc<dyn LagSource>>,
}

impl<L, B, S> fmt::Debug for ProjectionBuilder<L, B, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProjectionBuilder")
            .field("name", &self.name)
            .field("type_name", &self.type_name)
            .field("config", &self.config)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl<L, B, S> ProjectionBuilder<L, B, S>
where
    L: EventLog,
    S: ProjectionSink,
    B: Binarize<S::Event>,
{
    /// At most this many events per batch (one transaction); default 100.
    ///
    /// ```
    /// # use eventsourced::{MemoryEventLog, SerdeJson};
    /// # use eventsourced_projection::{AtLeastOnce, Handler, HandlerError, MemoryOffsetStore, ProjectedEvent, Projection};
    /// # struct Count(u64);
    /// # impl Handler for Count {
    /// #     type Event = i64;
    /// #     async fn handle(&mut self, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> { self.0 += 1; Ok(()) }
    /// # }
    /// # let sink = || AtLeastOnce::new(MemoryOffsetStore::default(), Count(0));
    /// # let builder = || Projection::builder("totals", "counter", MemoryEventLog::default(), SerdeJson, sink());
    /// assert!(builder().batch_size(500).build().is_ok());
    /// let refused = builder().batch_size(0).build().unwrap_err();
    /// assert!(refused.to_string().contains("batch-size"), "{refused}");
    /// ```
    pub fn batch_size(mut self, n: usize) -> Self {
        self.config.batch_size = n;
        self
    }

    /// How long a batch waits to fill after its first event; default 50 ms.
    ///
    /// ```
    /// # use eventsourced::{MemoryEventLog, SerdeJson};
    /// # use eventsourced_projection::{AtLeastOnce, Handler, HandlerError, MemoryOffsetStore, ProjectedEvent, Projection};
    /// # struct Count(u64);
    /// # impl Handler for Count {
    /// #     type Event = i64;
    /// #     async fn handle(&mut self, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> { self.0 += 1; Ok(()) }
    /// # }
    /// # let sink = || AtLeastOnce::new(MemoryOffsetStore::default(), Count(0));
    /// # let builder = || Projection::builder("totals", "counter", MemoryEventLog::default(), SerdeJson, sink());
    /// use std::time::Duration;
    /// // No waiting: every batch is what the log has delivered so far.
    /// assert!(builder().max_wait(Duration::ZERO).build().is_ok());
    /// // No deadline: a batch waits until it holds batch_size events.
    /// assert!(builder().max_wait(Duration::MAX).build().is_ok());
    /// ```
    pub fn max_wait(mut self, d: Duration) -> Self {
        self.config.max_wait = d;
        self
    }

    /// What to do when the handler fails on an event; default
    /// [`ErrorStrategy::Stop`].
    ///
    /// ```
    /// # use eventsourced::{MemoryEventLog, SerdeJson};
    /// # use eventsourced_projection::{AtLeastOnce, Handler, HandlerError, MemoryOffsetStore, ProjectedEvent, Projection};
    /// # struct Count(u64);
    /// # impl Handler for Count {
    /// #     type Event = i64;
    /// #     async fn handle(&mut self, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> { self.0 += 1; Ok(()) }
    /// # }
    /// # let sink = || AtLeastOnce::new(MemoryOffsetStore::default(), Count(0));
    /// # let builder = || Projection::builder("totals", "counter", MemoryEventLog::default(), SerdeJson, sink());
    /// use eventsourced_projection::{ErrorStrategy, RetryPolicy};
    /// use std::time::Duration;
    /// assert!(builder().error_strategy(ErrorStrategy::Skip).build().is_ok());
    /// let backwards = RetryPolicy {
    ///     min_backoff: Duration::from_secs(5),
    ///     max_backoff: Duration::from_secs(1),
    ///     ..RetryPolicy::default()
    /// };
    /// assert!(builder().error_strategy(ErrorStrategy::Retry(backwards)).build().is_err());
    /// ```
    pub fn error_strategy(mut self, s: ErrorStrategy) -> Self {
        self.config.error_strategy = s;
        self
    }

    /// The lease that makes this projection run once across instances;
    /// default [`InProcessLease::global`].
    ///
    /// ```
    /// # use eventsourced::{MemoryEventLog, SerdeJson};
    /// # use eventsourced_projection::{AtLeastOnce, Handler, HandlerError, MemoryOffsetStore, ProjectedEvent, Projection};
    /// # struct Count(u64);
    /// # impl Handler for Count {
    /// #     type Event = i64;
    /// #     async fn handle(&mut self, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> { self.0 += 1; Ok(()) }
    /// # }
    /// # let sink = || AtLeastOnce::new(MemoryOffsetStore::default(), Count(0));
    /// # let builder = || Projection::builder("totals", "counter", MemoryEventLog::default(), SerdeJson, sink());
    /// use eventsourced_projection::InProcessLease;
    /// // A lease of its own: instances sharing it run one at a time.
    /// let lease = InProcessLease::default();
    /// let projection = builder().lease(lease.clone()).build().unwrap();
    /// assert_eq!(projection.name(), "totals");
    /// ```
    pub fn lease(mut self, lease: impl Lease) -> Self {
        self.lease = Arc::new(lease);
        self
    }

    /// Where [`ProjectionState::lag`] comes from; without it, lag is `None`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use eventsourced::{Binarize, EventLog, MemoryEventLog, Position, SeqNo, SerdeJson};
    /// # use eventsourced_projection::*;
    /// # use std::time::Duration;
    /// # struct Noop;
    /// # impl Handler for Noop {
    /// #     type Event = i64;
    /// #     async fn handle(&mut self, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> { Ok(()) }
    /// # }
    /// # let log = MemoryEventLog::default();
    /// # let e = SerdeJson.encode(&1i64).unwrap();
    /// # log.append("counter", "a", SeqNo::ZERO, &[e.clone(), e.clone(), e]).await.unwrap();
    /// # let sink = || AtLeastOnce::new(MemoryOffsetStore::default(), Noop);
    /// // ... three events of type "counter" appended ...
    /// let plain = Projection::builder("lag-doc", "counter", log.clone(), SerdeJson, sink());
    /// assert_eq!(plain.build().unwrap().state().await.lag, None);
    /// let lagging = Projection::builder("lag-doc", "counter", log.clone(), SerdeJson, sink())
    ///     .lag_source(MemoryLag(log))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(lagging.state().await.lag, Some(3)); // nothing handled yet
    /// # }
    /// ```
    pub fn lag_source(mut self, lag: impl LagSource) -> Self {
        self.lag = Some(Arc::new(lag));
        self
    }

    /// The backoff after an infrastructure error (log, offset store, lease)
    /// before reopening: `min`, doubled up to `max`; default 100 ms..5 s.
    ///
    /// ```
    /// # use eventsourced::{MemoryEventLog, SerdeJson};
    /// # use eventsourced_projection::{AtLeastOnce, Handler, HandlerError, MemoryOffsetStore, ProjectedEvent, Projection};
    /// # struct Count(u64);
    /// # impl Handler for Count {
    /// #     type Event = i64;
    /// #     async fn handle(&mut self, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> { self.0 += 1; Ok(()) }
    /// # }
    /// # let sink = || AtLeastOnce::new(MemoryOffsetStore::default(), Count(0));
    /// # let builder = || Projection::builder("totals", "counter", MemoryEventLog::default(), SerdeJson, sink());
    /// use std::time::Duration;
    /// let (min, max) = (Duration::from_millis(50), Duration::from_secs(10));
    /// assert!(builder().restart_backoff(min, max).build().is_ok());
    /// assert!(builder().restart_backoff(max, min).build().is_err()); // min above max
    /// assert!(builder().restart_backoff(Duration::ZERO, max).build().is_err()); // a busy loop
    /// ```
    pub fn restart_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.config.restart_min_backoff = min;
        self.config.restart_max_backoff = max;
        self
    }

    /// Replaces every setting at once, e.g. with a [`ProjectionConfig`] read
    /// from a configuration file.
    ///
    /// ```
    /// # use eventsourced::{MemoryEventLog, SerdeJson};
    /// # use eventsourced_projection::{AtLeastOnce, Handler, HandlerError, MemoryOffsetStore, ProjectedEvent, Projection};
    /// # struct Count(u64);
    /// # impl Handler for Count {
    /// #     type Event = i64;
    /// #     async fn handle(&mut self, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> { self.0 += 1; Ok(()) }
    /// # }
    /// # let sink = || AtLeastOnce::new(MemoryOffsetStore::default(), Count(0));
    /// # let builder = || Projection::builder("totals", "counter", MemoryEventLog::default(), SerdeJson, sink());
    /// use eventsourced_projection::ProjectionConfig;
    /// let config: ProjectionConfig =
    ///     serde_json::from_str(r#"{ "batch-size": 500, "max-wait": "20ms" }"#).unwrap();
    /// assert!(builder().config(config).build().is_ok());
    /// ```
    pub fn config(mut self, config: ProjectionConfig) -> Self {
        self.config = config;
        self
    }

    /// Checks the configuration and builds the projection (not yet running).
    ///
    /// ```
    /// # use eventsourced::{MemoryEventLog, SerdeJson};
    /// # use eventsourced_projection::{AtLeastOnce, Handler, HandlerError, MemoryOffsetStore, ProjectedEvent, Projection};
    /// # struct Count(u64);
    /// # impl Handler for Count {
    /// #     type Event = i64;
    /// #     async fn handle(&mut self, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> { self.0 += 1; Ok(()) }
    /// # }
    /// # let sink = || AtLeastOnce::new(MemoryOffsetStore::default(), Count(0));
    /// # let builder = || Projection::builder("totals", "counter", MemoryEventLog::default(), SerdeJson, sink());
    /// assert!(builder().build().is_ok());
    /// let unnamed = Projection::builder("", "counter", MemoryEventLog::default(), SerdeJson, sink());
    /// assert!(unnamed.build().is_err());
    /// ```
    pub fn build(self) -> Result<Projection<L, B, S>, ProjectionError> {
        if self.name.is_empty() {
            return Err(ProjectionError::InvalidConfig {
                what: "name",
                reason: "a projection name must not be empty".to_owned(),
            });
        }
        // Offset stores and leases key rows by the name: PostgreSQL text
        // cannot hold NUL, and its index rows hold at most ~2.7 KB.
        if self.name.len() > MAX_NAME_BYTES || self.name.chars().any(char::is_control) {
            return Err(ProjectionError::InvalidConfig {
                what: "name",
                reason: format!(
                    "a projection name must be at most {MAX_NAME_BYTES} bytes without control \
                     characters (NUL, newline, ...), not {:?}",
                    self.name.chars().take(80).collect::<String>()
                ),
            });
        }
        self.lease
            .check()
            .map_err(|reason| ProjectionError::InvalidConfig {
                what: "lease",
                reason,
            })?;
        if self.type_name.is_empty() {
            return Err(ProjectionError::InvalidConfig {
                what: "type_name",
                reason: "the entity type name must not be empty".to_owned(),
            });
        }
        let config = self.config;
        if config.batch_size == 0 {
            return Err(ProjectionError::InvalidConfig {
                what: "batch-size",
                reason: "must be at least 1".to_owned(),
            });
        }
        if config.restart_min_backoff > config.restart_max_backoff {
            return Err(ProjectionError::InvalidConfig {
                what: "restart-min-backoff",
                reason: "must not exceed restart-max-backoff".to_owned(),
            });
        }
        if let ErrorStrategy::Retry(retry) = config.error_strategy
            && retry.min_backoff > retry.max_backoff
        {
            return Err(ProjectionError::InvalidConfig {
                what: "error-strategy",
                reason: format!(
                    "min-backoff {:?} must not exceed max-backoff {:?}",
                    retry.min_backoff, retry.max_backoff
                ),
            });
        }
        if config.restart_min_backoff.is_zero() {
            return Err(ProjectionError::InvalidConfig {
                what: "restart-min-backoff",
                reason: "min must be above zero: a failing store would be retried in a busy loop"
                    .to_owned(),
            });
        }
        let state = ProjectionState {
            name: self.name.clone(),
            phase: Phase::Stopped,
            running: false,
            offset: None,
            lag: None,
            delivery: self.sink.delivery(),
            error_strategy: config.error_strategy,
            last_error: None,
            handled: 0,
            skipped: 0,
        };
        let (alive, gone) = watch::channel(());
        Ok(Projection {
            alive: Arc::new(alive),
            inner: Arc::new(Inner {
                config: Config {
                    name: self.name,
                    type_name: self.type_name,
                    batch_size: config.batch_size,
                    max_wait: config.max_wait,
                    strategy: config.error_strategy,
                    restart_min_backoff: config.restart_min_backoff,
                    restart_max_backoff: config.restart_max_backoff,
                },
                log: self.log,
                binarize: self.binarize,
                lease: self.lease,
                lag: self.lag,
                sink: Arc::new(Mutex::new(self.sink)),
                status: watch::channel(state).0,
                control: Mutex::new(None),
                gone,
            }),
        })
    }
}

impl<L, B, S> Projection<L, B, S>
where
    L: EventLog,
    S: ProjectionSink,
    B: Binarize<S::Event>,
{
    /// Starts configuring the projection `name` over the events of the entity
    /// type `type_name` in `log`, decoded with `binarize`, handled by `sink`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use eventsourced::{Binarize, EventLog, MemoryEventLog, Position, SeqNo, SerdeJson};
    /// # use eventsourced_projection::*;
    /// # use std::time::Duration;
    /// # struct Noop;
    /// # impl Handler for Noop {
    /// #     type Event = i64;
    /// #     async fn handle(&mut self, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> { Ok(()) }
    /// # }
    /// # let log = MemoryEventLog::default();
    /// # let e = SerdeJson.encode(&1i64).unwrap();
    /// # log.append("other", "x", SeqNo::ZERO, &[e.clone()]).await.unwrap();
    /// # log.append("counter", "a", SeqNo::ZERO, &[e]).await.unwrap();
    /// // ... an event of type "other" at position 1, one of type "counter" at 2 ...
    /// let sink = AtLeastOnce::new(MemoryOffsetStore::default(), Noop);
    /// let projection = Projection::builder("builder-doc", "counter", log, SerdeJson, sink)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(projection.name(), "builder-doc");
    /// projection.run().await;
    /// let state = projection.wait_for(|s| s.offset.is_some(), Duration::from_secs(5)).await;
    /// let state = state.expect("the counter event handled");
    /// assert_eq!((state.handled, state.offset), (1, Some(Position::new(2)))); // not "other"
    /// projection.stop().await;
    /// # }
    /// ```
    pub fn builder(
        name: impl Into<String>,
        type_name: impl Into<String>,
        log: L,
        binarize: B,
        sink: S,
    ) -> ProjectionBuilder<L, B, S> {
        ProjectionBuilder {
            name: name.into(),
            type_name: type_name.into(),
            log,
            binarize,
            sink,
            config: ProjectionConfig::default(),
            lease: Arc::new(InProcessLease::global()),
            lag: None,
        }
    }

    /// The projection's name.
    ///
    /// ```
    /// # use eventsourced::{MemoryEventLog, SerdeJson};
    /// # use eventsourced_projection::{AtLeastOnce, Handler, HandlerError, MemoryOffsetStore, ProjectedEvent, Projection};
    /// # struct Count(u64);
    /// # impl Handler for Count {
    /// #     type Event = i64;
    /// #     async fn handle(&mut self, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> { self.0 += 1; Ok(()) }
    /// # }
    /// # let sink = || AtLeastOnce::new(MemoryOffsetStore::default(), Count(0));
    /// # let builder = || Projection::builder("totals", "counter", MemoryEventLog::default(), SerdeJson, sink());
    /// let projection = builder().build().unwrap();
    /// assert_eq!(projection.name(), "totals");
    /// assert_eq!(projection.clone().name(), "totals"); // clones share the projection
    /// ```
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// Starts the projection in a background task, unless it runs already. It
    /// waits for the lease, loads its offset and follows the log.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use eventsourced::{Binarize, EventLog, MemoryEventLog, SeqNo, SerdeJson};
    /// # use eventsourced_projection::*;
    /// # use std::{sync::{Arc, Mutex}, time::Duration};
    /// # #[derive(Clone, Default)]
    /// # struct Seen(Arc<Mutex<Vec<i64>>>);
    /// # impl Handler for Seen {
    /// #     type Event = i64;
    /// #     async fn handle(&mut self, e: &ProjectedEvent<i64>) -> Result<(), HandlerError> {
    /// #         self.0.lock().unwrap().push(e.event);
    /// #         Ok(())
    /// #     }
    /// # }
    /// # let log = MemoryEventLog::default();
    /// # log.append("counter", "a", SeqNo::ZERO, &[SerdeJson.encode(&1i64).unwrap()]).await.unwrap();
    /// let seen = Seen::default();
    /// let sink = AtLeastOnce::new(MemoryOffsetStore::default(), seen.clone());
    /// let projection =
    ///     Projection::builder("run-doc", "counter", log.clone(), SerdeJson, sink).build().unwrap();
    /// projection.run().await;
    /// projection.wait_for(|s| s.handled == 1, Duration::from_secs(5)).await.expect("handled");
    /// projection.stop().await;
    /// # log.append("counter", "b", SeqNo::ZERO, &[SerdeJson.encode(&2i64).unwrap()]).await.unwrap();
    /// // ... one more event appended while stopped ...
    /// let resumed = tokio::time::timeout(Duration::from_secs(5), projection.run());
    /// resumed.await.expect("run returns"); // again, from the stored offset
    /// projection.wait_for(|s| s.handled == 2, Duration::from_secs(5)).await.expect("handled");
    /// assert_eq!(*seen.0.lock().unwrap(), [1, 2]); // the first event is not handled again
    /// projection.stop().await;
    /// # }
    /// ```
    pub async fn run(&self) {
        self.start(false).await;
    }

    /// Stops the projection and waits until its task ended: the batch in
    /// progress is committed or rolled back, the lease released. A
    /// transactional batch (exactly-once sinks) that has not committed 2 s
    /// after the stop is rolled back, so that a server that stopped answering
    /// cannot hold the stop up; an at-least-once handler is always let finish.
    ///
    /// Calls on several handles at once all wait for the task: the control
    /// lock is held until it ended.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use eventsourced::{Binarize, EventLog, MemoryEventLog, Position, SeqNo, SerdeJson};
    /// # use eventsourced_projection::*;
    /// # use std::time::Duration;
    /// # struct Noop;
    /// # impl Handler for Noop {
    /// #     type Event = i64;
    /// #     async fn handle(&mut self, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> { Ok(()) }
    /// # }
    /// # let log = MemoryEventLog::default();
    /// # log.append("counter", "a", SeqNo::ZERO, &[SerdeJson.encode(&1i64).unwrap()]).await.unwrap();
    /// # let sink = || AtLeastOnce::new(MemoryOffsetStore::default(), Noop);
    /// # let t = Duration::from_secs(5);
    /// let projection = Projection::builder("stop-doc", "counter", log.clone(), SerdeJson, sink());
    /// let projection = projection.build().unwrap();
    /// projection.run().await;
    /// projection.wait_for(|s| s.handled == 1, t).await.expect("handled");
    /// tokio::time::timeout(t, projection.stop()).await.expect("stop returns");
    /// let state = projection.state().await;
    /// assert_eq!((state.running, state.phase), (false, Phase::Stopped));
    /// // The lease is released: another instance of the projection takes it.
    /// let other = Projection::builder("stop-doc", "counter", log, SerdeJson, sink()).build().unwrap();
    /// other.run().await;
    /// assert!(other.wait_for(|s| s.phase == Phase::Running, t).await.is_some());
    /// other.stop().await;
    /// # }
    /// ```
    pub async fn stop(&self) {
        let mut control = self.inner.control.lock().await;
        Self::stop_locked(&mut control).await;
    }

    /// Stops the task of `control`, if any, and waits until it ended. If the
    /// caller stops waiting, the task stays recorded (told to stop) for the
    /// next `stop` or `start` to wait for.
    async fn stop_locked(control: &mut Option<Running>) {
        if let Some(running) = control.as_mut() {
            running.stop.send_replace(true);
            // A panicking task already reported itself in the state.
            let _ = (&mut running.handle).await;
            *control = None;
        }
    }

    /// Rebuilds the read model from zero: stops, then runs again with a reset
    /// first (offset deleted and the handler's `reset`, in one transaction
    /// where the sink is transactional), once the lease is held. No `run` or
    /// `stop` of another handle comes in between.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use eventsourced::{Binarize, EventLog, MemoryEventLog, SeqNo, SerdeJson};
    /// use eventsourced_projection::{
    ///     AtLeastOnce, Handler, HandlerError, MemoryOffsetStore, ProjectedEvent, Projection,
    /// };
    /// use std::{sync::{Arc, Mutex}, time::Duration};
    ///
    /// #[derive(Clone, Default)]
    /// struct Seen(Arc<Mutex<Vec<i64>>>);
    /// impl Handler for Seen {
    ///     type Event = i64;
    ///     async fn handle(&mut self, e: &ProjectedEvent<i64>) -> Result<(), HandlerError> {
    ///         self.0.lock().unwrap().push(e.event);
    ///         Ok(())
    ///     }
    ///     async fn reset(&mut self) -> Result<(), HandlerError> {
    ///         self.0.lock().unwrap().clear();
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let log = MemoryEventLog::default();
    /// let events = [SerdeJson.encode(&1i64).unwrap(), SerdeJson.encode(&2i64).unwrap()];
    /// log.append("counter", "a", SeqNo::ZERO, &events).await.unwrap();
    /// let seen = Seen::default();
    /// let sink = AtLeastOnce::new(MemoryOffsetStore::default(), seen.clone());
    /// let projection = Projection::builder("seen", "counter", log, SerdeJson, sink).build().unwrap();
    /// projection.run().await;
    /// projection.wait_for(|s| s.handled == 2, Duration::from_secs(5)).await.unwrap();
    ///
    /// projection.rebuild().await; // reset, then every event again
    /// projection.wait_for(|s| s.handled == 4, Duration::from_secs(5)).await.unwrap();
    /// assert_eq!(*seen.0.lock().unwrap(), [1, 2]);
    /// projection.stop().await;
    /// assert!(!projection.state().await.running);
    /// # }
    /// ```
    pub async fn rebuild(&self) {
        let mut control = self.inner.control.lock().await;
        Self::stop_locked(&mut control).await;
        self.start_locked(&mut control, true).await;
    }

    /// The current state, with the lag queried from the lag source. If the
    /// lag source fails or does not answer within 2 s, `lag` is `None`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use eventsourced::{Binarize, EventLog, MemoryEventLog, Position, SeqNo, SerdeJson};
    /// # use eventsourced_projection::*;
    /// # use std::time::Duration;
    /// # struct Noop;
    /// # impl Handler for Noop {
    /// #     type Event = i64;
    /// #     async fn handle(&mut self, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> { Ok(()) }
    /// # }
    /// # let log = MemoryEventLog::default();
    /// # let e = SerdeJson.encode(&1i64).unwrap();
    /// # log.append("counter", "a", SeqNo::ZERO, &[e.clone(), e]).await.unwrap();
    /// # let sink = AtLeastOnce::new(MemoryOffsetStore::default(), Noop);
    /// // ... two events of type "counter" appended ...
    /// let projection = Projection::builder("state-doc", "counter", log.clone(), SerdeJson, sink)
    ///     .lag_source(MemoryLag(log))
    ///     .build()
    ///     .unwrap();
    /// let before = projection.state().await;
    /// assert_eq!((before.running, before.offset, before.lag), (false, None, Some(2)));
    /// projection.run().await;
    /// projection.wait_for(|s| s.handled == 2, Duration::from_secs(5)).await.expect("handled");
    /// let after = projection.state().await;
    /// assert_eq!((after.running, after.offset, after.lag), (true, Some(Position::new(2)), Some(0)));
    /// projection.stop().await;
    /// # }
    /// ```
    pub async fn state(&self) -> ProjectionState {
        let mut state = self.inner.status.borrow().clone();
        if let Some(lag) = &self.inner.lag {
            let query = lag.events_after(&self.inner.config.type_name, state.offset);
            match tokio::time::timeout(LAG_TIMEOUT, query).await {
                Ok(Ok(n)) => state.lag = Some(n),
                Ok(Err(e)) => debug!(projection = %state.name, error = %e, "lag query failed"),
                Err(_) => debug!(projection = %state.name, "lag query timed out"),
            }
        }
        state
    }

    /// Waits until the state (without lag) satisfies `condition`, at most
    /// `timeout`; returns the state, or `None` on timeout.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use eventsourced::{Binarize, EventLog, MemoryEventLog, Position, SeqNo, SerdeJson};
    /// # use eventsourced_projection::*;
    /// # use std::time::Duration;
    /// # struct Noop;
    /// # impl Handler for Noop {
    /// #     type Event = i64;
    /// #     async fn handle(&mut self, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> { Ok(()) }
    /// # }
    /// # let log = MemoryEventLog::default();
    /// # let e = SerdeJson.encode(&1i64).unwrap();
    /// # log.append("counter", "a", SeqNo::ZERO, &[e.clone(), e]).await.unwrap();
    /// # let sink = AtLeastOnce::new(MemoryOffsetStore::default(), Noop);
    /// // ... two events of type "counter" appended ...
    /// let projection = Projection::builder("wait-for-doc", "counter", log, SerdeJson, sink);
    /// let projection = projection.build().unwrap();
    /// projection.run().await;
    /// let state = projection.wait_for(|s| s.handled == 2, Duration::from_secs(5)).await;
    /// assert_eq!(state.expect("both handled").offset, Some(Position::new(2)));
    /// // A condition that does not hold in time: `None`.
    /// let never = projection.wait_for(|s| s.handled > 2, Duration::from_millis(50));
    /// assert!(tokio::time::timeout(Duration::from_secs(5), never).await.unwrap().is_none());
    /// projection.stop().await;
    /// # }
    /// ```
    pub async fn wait_for(
        &self,
        mut condition: impl FnMut(&ProjectionState) -> bool,
        timeout: Duration,
    ) -> Option<ProjectionState> {
        let mut rx = self.inner.status.subscribe();
        let found = tokio::time::timeout(timeout, rx.wait_for(|s| condition(s))).await;
        match found {
            Ok(Ok(state)) => Some(state.clone()),
            _ => None,
        }
    }

    async fn start(&self, reset: bool) {
        let mut control = self.inner.control.lock().await;
        self.start_locked(&mut control, reset).await;
    }

    /// Starts the task unless `control` holds one that runs.
    async fn start_locked(&self, control: &mut Option<Running>, reset: bool) {
        if let Some(running) = control.as_mut() {
            let told_to_stop = *running.stop.borrow();
            if self.inner.status.borrow().running && !running.handle.is_finished() && !told_to_stop
            {
                return;
            }
            // The task has stopped itself (its error strategy) and is ending,
            // or a `stop` that was given up on told it to.
            let _ = (&mut running.handle).await;
            *control = None;
        }
        // A finished task has released the sink, or does so right away.
        let sink = self.inner.sink.clone().lock_owned().await;
        let (stop, stop_rx) = watch::channel(false);
        self.inner.status.send_modify(|s| {
            s.phase = Phase::WaitingForLease;
            s.running = true;
        });
        let inner = self.inner.clone();
        let gone = self.inner.gone.clone();
        let handle = tokio::spawn(async move {
            let status = inner.status.clone();
            let worker = Worker {
                inner,
                sink,
                stop: StopSignal {
                    stop: stop_rx,
                    gone,
                },
                reset,
                restarts: 0,
            };
            let span = tracing::info_span!("projection", name = %worker.inner.config.name);
            let outcome = AssertUnwindSafe(worker.run().instrument(span))
                .catch_unwind()
                .await;
            if outcome.is_err() {
                status.send_modify(|s| {
                    s.phase = Phase::Failed;
                    s.running = false;
                    s.last_error = Some(LastError {
                        message: "the projection task panicked (see the log)".to_owned(),
                        position: None,
                        id: None,
                        seq_no: None,
                        attempts: 0,
                        action: ErrorAction::Stopped,
                    });
                });
            }
        });
        *control = Some(Running { stop, handle });
    }
}

/// How often an instance waiting for the lease reads the offset that the
/// instance holding it stores.
const STANDBY_OFFSET_REFRESH: Duration = Duration::from_secs(1);

/// How long a stop waits for a transactional batch in flight before it drops
/// the batch (rolling its transaction back).
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How long [`Projection::state`] waits for its lag source; the lag is `None`
/// when it does not answer in time.
const LAG_TIMEOUT: Duration = Duration::from_secs(2);

/// Tells the task to stop: `stop()` was called or every handle is gone.
struct StopSignal {
    stop: watch::Receiver<bool>,
    gone: watch::Receiver<()>,
}

impl StopSignal {
    async fn requested(&mut self) {
        tokio::select! {
            // A dropped sender also means stop.
            _ = self.stop.wait_for(|s| *s) => {}
            // Nothing is ever sent: this completes when the last handle is dropped.
            _ = self.gone.changed() => {}
        }
    }
}

/// How a session (one lease holding) ended.
enum Outcome {
    /// Stop requested.
    Stopped,
    /// The error strategy stopped the projection.
    Failed(ProjectionError, LastError),
    /// An infrastructure error: back off and start a new session.
    Restart(ProjectionError),
}

struct Worker<L, B, S: ProjectionSink> {
    inner: Arc<Inner<L, B, S>>,
    sink: OwnedMutexGuard<S>,
    stop: StopSignal,
    reset: bool,
    restarts: u32,
}

type EventStream =
    Pin<Box<dyn Stream<Item = Result<EventEnvelope, eventsourced::EventLogError>> + Send>>;

impl<L, B, S> Worker<L, B, S>
where
    L: EventLog,
    S: ProjectionSink,
    B: Binarize<S::Event>,
{
    fn name(&self) -> &str {
        &self.inner.config.name
    }

    fn set_phase(&self, phase: Phase) {
        self.inner.status.send_modify(|s| {
            s.phase = phase;
            s.running = !matches!(phase, Phase::Stopped | Phase::Failed);
        });
    }

    fn set_error(&self, error: LastError) {
        self.inner
            .status
            .send_modify(|s| s.last_error = Some(error));
    }

    async fn stop_requested(stop: &mut StopSignal) {
        stop.requested().await;
    }

    async fn run(mut self) {
        loop {
            self.set_phase(Phase::WaitingForLease);
            let name = self.inner.config.name.clone();
            let lease = self.inner.lease.clone();
            let acquire = lease.acquire(&name);
            tokio::pin!(acquire);
            // While another instance holds the lease, the state shows the
            // offset stored (so its lag too), refreshed now and then.
            let mut refresh = tokio::time::interval(STANDBY_OFFSET_REFRESH);
            let acquired = loop {
                tokio::select! {
                    biased;
                    () = Self::stop_requested(&mut self.stop) => break None,
                    acquired = &mut acquire => break Some(acquired),
                    _ = refresh.tick() => {}
                }
                tokio::select! {
                    biased;
                    () = Self::stop_requested(&mut self.stop) => break None,
                    offset = self.sink.load_offset(&name) => match offset {
                        Ok(offset) => self.inner.status.send_modify(|s| s.offset = offset),
                        Err(e) => debug!(projection = %name, error = %e, "cannot read the stored offset"),
                    },
                }
            };
            let outcome = match acquired {
                None => Outcome::Stopped,
                Some(Err(e)) => Outcome::Restart(e),
                Some(Ok(mut guard)) => {
                    debug!(projection = %name, "lease acquired");
                    self.set_phase(Phase::Running);
                    let outcome = self.session(&mut guard).await;
                    guard.release().await;
                    outcome
                }
            };
            match outcome {
                Outcome::Stopped => {
                    self.set_phase(Phase::Stopped);
                    return;
                }
                Outcome::Failed(error, last) => {
                    warn!(projection = %name, %error, "projection stopped by its error strategy");
                    self.set_error(last);
                    self.set_phase(Phase::Failed);
                    return;
                }
                Outcome::Restart(error) => {
                    self.restarts = self.restarts.saturating_add(1);
                    let c = &self.inner.config;
                    let backoff = c
                        .restart_min_backoff
                        .saturating_mul(2u32.saturating_pow(self.restarts - 1))
                        .min(c.restart_max_backoff);
                    warn!(projection = %name, %error, ?backoff, "projection restarts after an error");
                    self.set_error(LastError {
                        message: error.to_string(),
                        position: None,
                        id: None,
                        seq_no: None,
                        attempts: self.restarts,
                        action: ErrorAction::Restarting,
                    });
                    self.set_phase(Phase::Restarting);
                    tokio::select! {
                        biased;
                        () = Self::stop_requested(&mut self.stop) => {
                            self.set_phase(Phase::Stopped);
                            return;
                        }
                        () = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
    }

    /// Handles events while the lease is held.
    async fn session(&mut self, guard: &mut LeaseGuard) -> Outcome {
        let name = self.name().to_owned();
        if self.reset {
            if let Err(e) = self.sink.reset(&name).await {
                return Outcome::Restart(e);
            }
            self.reset = false;
            self.inner.status.send_modify(|s| s.offset = None);
            debug!(projection = %name, "read model and offset reset");
        }
        let offset = match self.sink.load_offset(&name).await {
            Ok(offset) => offset,
            Err(e) => return Outcome::Restart(e),
        };
        self.inner.status.send_modify(|s| s.offset = offset);
        let from = offset.map_or(Position::START, Position::next);
        let mut events: EventStream = Box::pin(
            self.inner
                .log
                .events_by_type(&self.inner.config.type_name, from),
        );
        loop {
            let first = tokio::select! {
                biased;
                () = Self::stop_requested(&mut self.stop) => return Outcome::Stopped,
                reason = guard.lost() => return Outcome::Restart(self.lease_lost(reason)),
                first = events.next() => first,
            };
            let mut envelopes = Vec::new();
            let mut stream_error = None;
            match first {
                Some(Ok(envelope)) => envelopes.push(envelope),
                Some(Err(e)) => return Outcome::Restart(self.log_error(e)),
                None => return Outcome::Restart(self.stream_ended()),
            }
            // A max_wait beyond what an Instant can hold means no deadline.
            let deadline = Instant::now().checked_add(self.inner.config.max_wait);
            while envelopes.len() < self.inner.config.batch_size {
                let next = async {
                    match deadline {
                        Some(deadline) => tokio::time::timeout_at(deadline, events.next()).await,
                        None => Ok(events.next().await),
                    }
                };
                // Nothing of the batch is committed yet: on stop or a lost
                // lease its events are delivered again by the next session.
                let next = tokio::select! {
                    biased;
                    () = Self::stop_requested(&mut self.stop) => return Outcome::Stopped,
                    reason = guard.lost() => return Outcome::Restart(self.lease_lost(reason)),
                    next = next => next,
                };
                match next {
                    Ok(Some(Ok(envelope))) => envelopes.push(envelope),
                    Ok(Some(Err(e))) => {
                        stream_error = Some(self.log_error(e));
                        break;
                    }
                    Ok(None) => {
                        stream_error = Some(self.stream_ended());
                        break;
                    }
                    Err(_elapsed) => break,
                }
            }
            if let Some(reason) = guard.lost().now_or_never() {
                return Outcome::Restart(self.lease_lost(reason));
            }
            if let Err(outcome) = self.process(envelopes, guard).await {
                return outcome;
            }
            if let Some(e) = stream_error {
                return Outcome::Restart(e);
            }
        }
    }

    fn lease_lost(&self, reason: String) -> ProjectionError {
        ProjectionError::Lease {
            name: self.name().to_owned(),
            reason: format!("lease lost: {reason}"),
        }
    }

    fn log_error(&self, source: eventsourced::EventLogError) -> ProjectionError {
        ProjectionError::EventLog {
            name: self.name().to_owned(),
            source,
        }
    }

    fn stream_ended(&self) -> ProjectionError {
        self.log_error(eventsourced::EventLogError::backend(
            "projection",
            "follow events_by_type",
            "the live stream ended without an error",
        ))
    }

    /// Decodes and handles a batch of envelopes, applying the error strategy.
    async fn process(
        &mut self,
        envelopes: Vec<EventEnvelope>,
        guard: &mut LeaseGuard,
    ) -> Result<(), Outcome> {
        let mut envelopes = envelopes.into_iter().peekable();
        while envelopes.peek().is_some() {
            let mut decoded = Vec::new();
            let mut undecodable = None;
            for envelope in envelopes.by_ref() {
                match self.inner.binarize.decode(envelope.event.clone()) {
                    Ok(event) => decoded.push(ProjectedEvent {
                        position: envelope.position,
                        id: envelope.id,
                        seq_no: envelope.seq_no,
                        event,
                    }),
                    Err(e) => {
                        undecodable = Some((envelope, e));
                        break;
                    }
                }
            }
            if !decoded.is_empty() {
                self.handle_events(decoded.into(), guard).await?;
            }
            if let Some((envelope, source)) = undecodable {
                let error = ProjectionError::Decode {
                    name: self.name().to_owned(),
                    position: envelope.position,
                    source,
                };
                let mut last = LastError {
                    message: error.to_string(),
                    position: Some(envelope.position),
                    id: Some(envelope.id.clone()),
                    seq_no: Some(envelope.seq_no),
                    attempts: 1,
                    action: ErrorAction::Stopped,
                };
                match self.inner.config.strategy.decide(1, false) {
                    Decision::Skip => {
                        last.action = ErrorAction::Skipped;
                        self.skip(envelope.position, last, guard).await?;
                    }
                    Decision::Stop | Decision::Retry(_) => {
                        return Err(Outcome::Failed(error, last));
                    }
                }
            }
        }
        Ok(())
    }

    /// Handles decoded events in batches; a failing event is isolated (the
    /// events before it committed) and handled by the error strategy.
    async fn handle_events(
        &mut self,
        events: Arc<[ProjectedEvent<S::Event>]>,
        guard: &mut LeaseGuard,
    ) -> Result<(), Outcome> {
        let name = self.name().to_owned();
        let len = events.len();
        let (mut start, mut end, mut attempts) = (0, len, 0u32);
        // The handler error of the event at this index, met in a transaction
        // that also held events before it: they are committed first, then the
        // strategy applies to this attempt (which is not made again).
        let mut deferred: Option<(usize, HandlerError)> = None;
        while start < len {
            let error = if let Some((_, error)) = deferred.take_if(|(index, _)| *index == start) {
                error
            } else {
                let offset = events[end - 1].position;
                let batch = Batch {
                    events: events.clone(),
                    range: start..end,
                    offset,
                };
                match self.hand_to_sink(&name, batch, guard).await? {
                    Ok(()) => {
                        self.committed(offset, end - start, 0);
                        start = end;
                        end = len;
                        attempts = 0;
                        continue;
                    }
                    Err(BatchError::Store(e)) => return Err(Outcome::Restart(e)),
                    Err(BatchError::Handler {
                        index,
                        error,
                        committed_before,
                    }) => {
                        deferred = None;
                        let failing = start + index;
                        if committed_before && index > 0 {
                            self.committed(events[failing - 1].position, index, 0);
                            start = failing;
                            attempts = 0;
                        }
                        if failing > start {
                            // Commit the events before the failing one first.
                            deferred = Some((failing, error));
                            end = failing;
                            continue;
                        }
                        error
                    }
                }
            };
            attempts = attempts.saturating_add(1);
            let event = &events[start];
            let decision = self.inner.config.strategy.decide(attempts, true);
            let mut last = LastError {
                message: error.to_string(),
                position: Some(event.position),
                id: Some(event.id.clone()),
                seq_no: Some(event.seq_no),
                attempts,
                action: ErrorAction::Retrying,
            };
            match decision {
                Decision::Retry(backoff) => {
                    warn!(projection = %name, position = %event.position, id = %event.id,
                                seq_no = %event.seq_no, attempts, %error, ?backoff,
                                "handler failed, retrying");
                    self.set_error(last);
                    self.set_phase(Phase::Retrying);
                    tokio::select! {
                        biased;
                        () = Self::stop_requested(&mut self.stop) => return Err(Outcome::Stopped),
                        reason = guard.lost() => return Err(Outcome::Restart(self.lease_lost(reason))),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    self.set_phase(Phase::Running);
                    end = start + 1;
                }
                Decision::Skip => {
                    last.action = ErrorAction::Skipped;
                    self.skip(event.position, last, guard).await?;
                    start += 1;
                    end = len;
                    attempts = 0;
                }
                Decision::Stop => {
                    last.action = ErrorAction::Stopped;
                    let error = ProjectionError::Handler {
                        name: name.clone(),
                        position: event.position,
                        id: event.id.clone(),
                        seq_no: event.seq_no,
                        attempts,
                        source: error.into_inner(),
                    };
                    return Err(Outcome::Failed(error, last));
                }
            }
        }
        Ok(())
    }

    /// Hands `batch` to the sink. A transactional sink's batch is dropped,
    /// which rolls its transaction back, when the lease is lost meanwhile, or
    /// when it has not finished [`STOP_GRACE`] after a stop was requested: its
    /// server may never answer. Other sinks' handlers always run to the end,
    /// as cancelling them midway could leave their writes half done.
    async fn hand_to_sink(
        &mut self,
        name: &str,
        batch: Batch<S::Event>,
        guard: &mut LeaseGuard,
    ) -> Result<Result<(), BatchError>, Outcome> {
        if self.sink.delivery() != Delivery::ExactlyOnce {
            return Ok(self.sink.handle_batch(name, batch).await);
        }
        let handling = self.sink.handle_batch(name, batch);
        tokio::pin!(handling);
        let lost = tokio::select! {
            biased;
            result = &mut handling => return Ok(result),
            reason = guard.lost() => reason,
            () = Self::stop_requested(&mut self.stop) => {
                return match tokio::time::timeout(STOP_GRACE, handling).await {
                    Ok(result) => Ok(result),
                    Err(_) => Err(Outcome::Stopped),
                };
            }
        };
        Err(Outcome::Restart(ProjectionError::Lease {
            name: name.to_owned(),
            reason: format!("lease lost: {lost}"),
        }))
    }

    /// Commits the offset of a skipped event, without handling it.
    async fn skip(
        &mut self,
        position: Position,
        last: LastError,
        guard: &mut LeaseGuard,
    ) -> Result<(), Outcome> {
        warn!(projection = %self.name(), %position, error = %last.message, "skipping the event");
        self.set_error(last);
        let name = self.name().to_owned();
        let batch = Batch {
            events: Arc::from(Vec::new()),
            range: 0..0,
            offset: position,
        };
        match self.hand_to_sink(&name, batch, guard).await? {
            Ok(()) => {
                self.committed(position, 0, 1);
                Ok(())
            }
            Err(BatchError::Store(e)) => Err(Outcome::Restart(e)),
            Err(BatchError::Handler { error, .. }) => Err(Outcome::Restart(
                ProjectionError::offset_store("sink", "commit a skipped event", error.into_inner()),
            )),
        }
    }

    fn committed(&mut self, offset: Position, handled: usize, skipped: u64) {
        self.restarts = 0;
        let handled = u64::try_from(handled).unwrap_or(u64::MAX);
        self.inner.status.send_modify(|s| {
            s.offset = Some(offset);
            s.handled = s.handled.saturating_add(handled);
            s.skipped = s.skipped.saturating_add(skipped);
        });
    }
}
