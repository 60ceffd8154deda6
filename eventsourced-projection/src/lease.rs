//! Leases: only one instance of a named projection runs at a time.

use crate::ProjectionError;
use futures::{
    FutureExt,
    future::{BoxFuture, Fuse},
};
use std::{
    any::Any,
    collections::HashSet,
    fmt,
    future::Future,
    sync::{Arc, Mutex, MutexGuard, OnceLock},
};
use tokio::sync::Notify;

/// Grants the right to run a named projection to one instance at a time.
///
/// [`acquire`](Lease::acquire) waits until the lease is free. The returned
/// [`LeaseGuard`] holds it until dropped and tells when it is lost (e.g. the
/// database connection holding it broke); the projection then stops handling
/// and waits to acquire it again.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use eventsourced_projection::{InProcessLease, Lease};
/// use futures::FutureExt;
///
/// let lease = InProcessLease::default();
/// let guard = lease.acquire("totals").await.unwrap();
/// assert!(lease.acquire("totals").now_or_never().is_none(), "held: a second acquire waits");
/// guard.release().await;
/// assert!(lease.acquire("totals").now_or_never().is_some());
/// # }
/// ```
pub trait Lease: Send + Sync + fmt::Debug + 'static {
    /// Waits for and takes the lease of the projection `name`.
    fn acquire<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<LeaseGuard, ProjectionError>>;

    /// Why the lease's settings cannot work, if they cannot; checked when the
    /// projection is built, so that they are not found out by a projection
    /// that restarts forever. The default accepts any.
    ///
    /// ```
    /// use eventsourced_projection::{Lease, sqlite::SqliteLease};
    /// use std::time::Duration;
    ///
    /// let lease = SqliteLease::new("leases.db").ttl(Duration::from_millis(5));
    /// assert!(lease.check().unwrap_err().contains("ttl"));
    /// ```
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A held lease: released by [`release`](LeaseGuard::release), which the
/// projection awaits before `stop()` returns, or when dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use eventsourced_projection::{InProcessLease, Lease};
/// use futures::FutureExt;
///
/// let lease = InProcessLease::default();
/// let mut guard = lease.acquire("totals").await.unwrap();
/// assert!(guard.lost().now_or_never().is_none(), "an in-process lease is never lost");
/// drop(guard); // released
/// assert!(lease.acquire("totals").now_or_never().is_some());
/// # }
/// ```
pub struct LeaseGuard {
    lost: Fuse<BoxFuture<'static, String>>,
    hold: Held,
}

/// The release function of a lease that must be awaited to be released.
type ReleaseFn = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send + Sync>;

enum Held {
    /// Released when dropped.
    Dropped(Box<dyn Any + Send + Sync>),
    /// Released once the future it makes completes; dropped unawaited, it
    /// releases as its parts drop.
    Released(ReleaseFn),
}

impl LeaseGuard {
    /// A guard that keeps `hold` alive while held (dropping it releases the
    /// lease) and that is lost when `lost` completes with the reason.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use eventsourced_projection::LeaseGuard;
    /// use std::sync::Arc;
    ///
    /// let hold = Arc::new(()); // stands for a connection holding a lock
    /// let guard = LeaseGuard::new(hold.clone(), futures::future::pending());
    /// assert_eq!(Arc::strong_count(&hold), 2);
    /// guard.release().await;
    /// assert_eq!(Arc::strong_count(&hold), 1);
    /// # }
    /// ```
    pub fn new(
        hold: impl Any + Send + Sync,
        lost: impl Future<Output = String> + Send + 'static,
    ) -> Self {
        LeaseGuard {
            lost: lost.boxed().fuse(),
            hold: Held::Dropped(Box::new(hold)),
        }
    }

    /// A guard whose lease is given up by the future that `release` makes:
    /// for a lease that other processes see free only once a round trip has
    /// completed (a row deleted, a lock unlocked). If the guard is dropped
    /// without [`release`](LeaseGuard::release), `release` is dropped unrun,
    /// and whatever it owns must then release the lease as it drops.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use eventsourced_projection::LeaseGuard;
    /// use futures::FutureExt;
    /// use std::sync::{Arc, atomic::{AtomicBool, Ordering}};
    ///
    /// let released = Arc::new(AtomicBool::new(false));
    /// let flag = released.clone();
    /// let guard = LeaseGuard::with_release(
    ///     move || async move { flag.store(true, Ordering::SeqCst) }.boxed(),
    ///     futures::future::pending(),
    /// );
    /// guard.release().await;
    /// assert!(released.load(Ordering::SeqCst));
    /// # }
    /// ```
    pub fn with_release(
        release: impl FnOnce() -> BoxFuture<'static, ()> + Send + Sync + 'static,
        lost: impl Future<Output = String> + Send + 'static,
    ) -> Self {
        LeaseGuard {
            lost: lost.boxed().fuse(),
            hold: Held::Released(Box::new(release)),
        }
    }

    /// Gives the lease up, and returns once other instances can take it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use eventsourced_projection::{InProcessLease, Lease};
    /// use futures::FutureExt;
    ///
    /// let lease = InProcessLease::default();
    /// let guard = lease.acquire("totals").await.unwrap();
    /// guard.release().await;
    /// assert!(lease.acquire("totals").now_or_never().is_some());
    /// # }
    /// ```
    pub async fn release(self) {
        match self.hold {
            Held::Dropped(hold) => drop(hold),
            Held::Released(release) => release().await,
        }
    }

    /// Completes with the reason when the lease is lost (and never completes
    /// again after that).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use eventsourced_projection::LeaseGuard;
    /// use futures::FutureExt;
    ///
    /// let mut guard = LeaseGuard::new((), async { "connection closed".to_owned() });
    /// assert_eq!(guard.lost().await, "connection closed");
    /// assert!(guard.lost().now_or_never().is_none());
    /// # }
    /// ```
    pub async fn lost(&mut self) -> String {
        (&mut self.lost).await
    }
}

impl fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseGuard").finish_non_exhaustive()
    }
}

/// A lease within one process: a second projection with the same name (on the
/// same `InProcessLease`) waits until the first stops. It does not coordinate
/// processes: use `PostgresLease` for that. [`InProcessLease::global`] is the
/// default of every projection.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use eventsourced_projection::{InProcessLease, Lease};
/// use futures::FutureExt;
///
/// let lease = InProcessLease::default();
/// let _held = lease.acquire("totals").await.unwrap();
/// assert!(lease.clone().acquire("totals").now_or_never().is_none(), "clones share");
/// assert!(InProcessLease::default().acquire("totals").now_or_never().is_some(), "others do not");
/// # }
/// ```
#[derive(Clone, Default)]
pub struct InProcessLease {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    held: Mutex<HashSet<String>>,
    released: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashSet<String>> {
        // One insert or remove per update: a poisoned set is consistent.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl InProcessLease {
    /// The process-wide lease that projections use unless told otherwise.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use eventsourced_projection::{InProcessLease, Lease};
    /// use futures::FutureExt;
    ///
    /// let _held = InProcessLease::global().acquire("global-doc").await.unwrap();
    /// assert!(InProcessLease::global().acquire("global-doc").now_or_never().is_none());
    /// # }
    /// ```
    pub fn global() -> Self {
        static GLOBAL: OnceLock<InProcessLease> = OnceLock::new();
        GLOBAL.get_or_init(InProcessLease::default).clone()
    }
}

impl fmt::Debug for InProcessLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InProcessLease")
            .field("held", &self.shared.lock().len())
            .finish()
    }
}

struct Release {
    shared: Arc<Shared>,
    name: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.shared.lock().remove(&self.name);
        self.shared.released.notify_waiters();
    }
}

impl Lease for InProcessLease {
    fn acquire<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<LeaseGuard, ProjectionError>> {
        async move {
            loop {
                let released = self.shared.released.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                if self.shared.lock().insert(name.to_owned()) {
                    let release = Release {
                        shared: self.shared.clone(),
                        name: name.to_owned(),
                    };
                    return Ok(LeaseGuard::new(release, futures::future::pending()));
                }
                released.await;
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn second_holder_waits_for_the_first() {
        let lease = InProcessLease::default();
        let first = lease.acquire("p").await.unwrap();
        let other = lease.acquire("q").await.unwrap();
        let waiting = lease.acquire("p");
        tokio::pin!(waiting);
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(second.unwrap().is_ok());
        drop(other);
    }
}
