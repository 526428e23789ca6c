//! A thin shared wrapper putting [`LocalCoordinator`] behind the [`Coordinator`] trait.

use std::fmt;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use pvp_core::ids::RegionId;

use super::{
    CasOutcome, Change, ChangeFeed, CoordError, CoordStats, Coordinator, Expected, Leadership, LeaseId,
    LocalCoordinator, VersionedRecord, WatchId, WatchScope,
};

/// Where a [`SharedLocalCoordinator`] reads `now` from.
pub trait Clock: Clone + Send + Sync + 'static {
    /// Time since this clock's start.
    fn now(&self) -> Duration;
}

/// The wall clock (monotonic), counting from its creation.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    start: Instant,
}

impl WallClock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self { start: Instant::now() }
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for WallClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Virtual time for simulations: it moves only when told to. Clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use pvp_global::coord::{Clock, ManualClock};
///
/// let clock = ManualClock::default();
/// let seen_by_coordinator = clock.clone();
/// clock.advance(Duration::from_millis(250));
/// assert_eq!(seen_by_coordinator.now(), Duration::from_millis(250));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// Moves time forward by `by` (saturating at about 584 years).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self.nanos.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| Some(n.saturating_add(by)));
    }

    /// Sets time to `to` if that is later than now (time never goes back).
    pub fn set(&self, to: Duration) {
        let to = u64::try_from(to.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_max(to, Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }
}

/// A [`LocalCoordinator`] shared between tasks and threads, reading time from a [`Clock`]; it
/// implements [`Coordinator`]. Clones share the same coordinator.
///
/// Lease expiries are applied at each call. A watcher waiting in
/// [`ChangeFeed::next_change`] for a `RegionDown` caused by expiry alone (no other call) is
/// woken by the next call or by [`SharedLocalCoordinator::tick`]; a driver runs `tick` at
/// [`SharedLocalCoordinator::next_deadline`].
///
/// ```
/// use std::time::Duration;
/// use pvp_core::ids::RegionId;
/// use pvp_global::coord::{Coordinator, ManualClock, SharedLocalCoordinator};
///
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
/// let clock = ManualClock::default();
/// let coord = SharedLocalCoordinator::new(Default::default(), clock.clone());
/// let jp = RegionId::new("jp")?;
/// block_on(async {
///     let lease = coord.grant_lease(Duration::from_secs(2)).await?;
///     coord.announce_region(jp, lease).await?;
///     assert_eq!(coord.live_regions().await?, vec![jp]);
///     clock.advance(Duration::from_secs(2));
///     assert!(!coord.lease_believed_valid(lease));
///     assert!(coord.live_regions().await?.is_empty());
///     Ok::<(), pvp_global::coord::CoordError>(())
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SharedLocalCoordinator<K: Clock = WallClock> {
    inner: Arc<Mutex<LocalCoordinator>>,
    clock: K,
}

impl<K: Clock> Clone for SharedLocalCoordinator<K> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner), clock: self.clock.clone() }
    }
}

impl<K: Clock + fmt::Debug> fmt::Debug for SharedLocalCoordinator<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedLocalCoordinator").field("clock", &self.clock).finish_non_exhaustive()
    }
}

impl<K: Clock> SharedLocalCoordinator<K> {
    /// Wraps `coordinator`, reading time from `clock`.
    pub fn new(coordinator: LocalCoordinator, clock: K) -> Self {
        Self { inner: Arc::new(Mutex::new(coordinator)), clock }
    }

    /// Runs `f` on the inner coordinator with the clock's `now`.
    pub fn with<R>(&self, f: impl FnOnce(&mut LocalCoordinator, Duration) -> R) -> R {
        let now = self.clock.now();
        f(&mut self.lock(), now)
    }

    /// Applies lease expiries due by now (wakes watchers of the changes they cause).
    pub fn tick(&self) {
        self.with(|c, now| c.handle_timeout(now));
    }

    /// When the next lease expires, as time of the clock.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.lock().poll_timeout()
    }

    /// Counters of the inner coordinator.
    pub fn stats(&self) -> CoordStats {
        self.lock().stats()
    }

    fn lock(&self) -> MutexGuard<'_, LocalCoordinator> {
        // A panic inside a call cannot leave a half-applied change behind (each change is
        // applied by one insert or remove), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The change stream of a [`SharedLocalCoordinator`]; dropping it cancels the watch.
pub struct LocalChangeFeed<K: Clock = WallClock> {
    coordinator: SharedLocalCoordinator<K>,
    id: WatchId,
}

impl<K: Clock> fmt::Debug for LocalChangeFeed<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalChangeFeed").field("id", &self.id).finish_non_exhaustive()
    }
}

impl<K: Clock> LocalChangeFeed<K> {
    /// The next change if one is queued, without waiting.
    pub fn try_next_change(&mut self) -> Option<Result<Change, CoordError>> {
        let id = self.id;
        self.coordinator.with(|c, now| {
            c.handle_timeout(now);
            c.poll_change(id)
        })
    }
}

impl<K: Clock> Drop for LocalChangeFeed<K> {
    fn drop(&mut self) {
        self.coordinator.lock().cancel_watch(self.id);
    }
}

impl<K: Clock> ChangeFeed for LocalChangeFeed<K> {
    async fn next_change(&mut self) -> Result<Change, CoordError> {
        let id = self.id;
        poll_fn(|cx| {
            self.coordinator.with(|c, now| {
                c.handle_timeout(now);
                match c.poll_change(id) {
                    Some(r) => Poll::Ready(r),
                    None => {
                        c.set_waker(id, cx.waker());
                        Poll::Pending
                    }
                }
            })
        })
        .await
    }
}

impl<K: Clock> Coordinator for SharedLocalCoordinator<K> {
    type Feed = LocalChangeFeed<K>;

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, CoordError> {
        self.with(|c, now| c.grant_lease(now, ttl))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, CoordError> {
        self.with(|c, now| c.keep_alive(now, lease))
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), CoordError> {
        self.with(|c, now| c.revoke_lease(now, lease))
    }

    fn lease_believed_valid(&self, lease: LeaseId) -> bool {
        self.with(|c, now| c.lease_alive(now, lease))
    }

    async fn announce_region(&self, region: RegionId, lease: LeaseId) -> Result<(), CoordError> {
        self.with(|c, now| c.announce_region(now, region, lease))
    }

    async fn live_regions(&self) -> Result<Vec<RegionId>, CoordError> {
        self.with(|c, now| c.live_regions(now))
    }

    async fn campaign(
        &self,
        job: &str,
        candidate: RegionId,
        lease: LeaseId,
    ) -> Result<Leadership, CoordError> {
        self.with(|c, now| c.campaign(now, job, candidate, lease))
    }

    async fn leader(&self, job: &str) -> Result<Option<RegionId>, CoordError> {
        self.with(|c, now| c.leader(now, job))
    }

    async fn resign(&self, job: &str, lease: LeaseId) -> Result<bool, CoordError> {
        self.with(|c, now| c.resign(now, job, lease))
    }

    async fn read_record(&self, name: &str) -> Result<Option<VersionedRecord>, CoordError> {
        self.with(|c, now| c.read_record(now, name))
    }

    async fn compare_and_set(
        &self,
        name: &str,
        expected: Expected,
        value: Vec<u8>,
    ) -> Result<CasOutcome, CoordError> {
        self.with(|c, now| c.compare_and_set(now, name, expected, value))
    }

    async fn delete_record(&self, name: &str, expected: Expected) -> Result<bool, CoordError> {
        self.with(|c, now| c.delete_record(now, name, expected))
    }

    async fn watch(&self, scope: WatchScope) -> Result<Self::Feed, CoordError> {
        let id = self.with(|c, _| c.watch(&scope))?;
        Ok(LocalChangeFeed { coordinator: self.clone(), id })
    }
}
