//! The in-process coordinator: a sans-IO state machine, time is an argument.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::task::Waker;
use std::time::Duration;

use pvp_core::ids::RegionId;

use super::{
    CasOutcome, Change, CoordError, CoordStats, Expected, LEADERS_PREFIX, Leadership, LeaseId,
    RECORDS_PREFIX, REGIONS_PREFIX, VersionedRecord, WatchScope, check_name, check_ttl, check_value,
    classify, decode_region, scope_prefix,
};

/// Bounds of a [`LocalCoordinator`]; every structure an outsider can grow is capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LocalCoordinatorConfig {
    /// Most live leases.
    pub max_leases: usize,
    /// Most stored keys (regions, leaders and control records together).
    pub max_keys: usize,
    /// Most open watches.
    pub max_watchers: usize,
    /// Most undelivered changes per watch; beyond it the watch reports
    /// [`CoordError::WatchLagged`] once and drops what it held.
    pub max_pending_changes: usize,
}

impl Default for LocalCoordinatorConfig {
    fn default() -> Self {
        Self { max_leases: 4096, max_keys: 16_384, max_watchers: 256, max_pending_changes: 4096 }
    }
}

/// Identifies a watch opened with [`LocalCoordinator::watch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatchId(u64);

#[derive(Debug)]
struct LeaseEntry {
    ttl: Duration,
    expires_at: Duration,
    keys: BTreeSet<String>,
}

#[derive(Debug)]
struct KeyEntry {
    value: Vec<u8>,
    mod_revision: u64,
    lease: Option<LeaseId>,
}

#[derive(Debug)]
struct Watcher {
    prefix: String,
    queue: VecDeque<Change>,
    lagged: bool,
    waker: Option<Waker>,
}

/// In-process coordinator: membership leases, leader election, versioned control records and
/// watches, with every call taking `now` (time since any fixed start).
///
/// Deterministic: the same calls with the same `now` give the same results. Time never goes
/// backwards inside: a `now` older than one already seen counts as the newest seen. Leases
/// expire lazily at the next call whose `now` is at or past their deadline, or at
/// [`LocalCoordinator::handle_timeout`]; [`LocalCoordinator::poll_timeout`] says when that is.
///
/// See the [module docs](super) for an example.
#[derive(Debug)]
pub struct LocalCoordinator {
    config: LocalCoordinatorConfig,
    now: Duration,
    revision: u64,
    next_lease: i64,
    next_watch: u64,
    leases: BTreeMap<LeaseId, LeaseEntry>,
    keys: BTreeMap<String, KeyEntry>,
    watchers: BTreeMap<WatchId, Watcher>,
    stats: CoordStats,
}

impl Default for LocalCoordinator {
    fn default() -> Self {
        Self::new(LocalCoordinatorConfig::default())
    }
}

impl LocalCoordinator {
    /// An empty coordinator with these bounds.
    pub fn new(config: LocalCoordinatorConfig) -> Self {
        Self {
            config,
            now: Duration::ZERO,
            revision: 0,
            next_lease: 1,
            next_watch: 1,
            leases: BTreeMap::new(),
            keys: BTreeMap::new(),
            watchers: BTreeMap::new(),
            stats: CoordStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> CoordStats {
        self.stats
    }

    /// The current revision (number of changes applied so far).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// When the next lease expires, if any lease is live.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.leases.values().map(|l| l.expires_at).min()
    }

    /// Expires every lease whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.advance(now);
    }

    /// Grants a lease that expires `ttl` after `now` unless kept alive.
    pub fn grant_lease(&mut self, now: Duration, ttl: Duration) -> Result<LeaseId, CoordError> {
        self.advance(now);
        if let Err(e) = check_ttl(ttl) {
            return Err(self.reject(e));
        }
        if self.leases.len() >= self.config.max_leases {
            return Err(self.reject(CoordError::CapacityExceeded("leases")));
        }
        let id = LeaseId(self.next_lease);
        self.next_lease += 1;
        self.leases
            .insert(id, LeaseEntry { ttl, expires_at: self.now.saturating_add(ttl), keys: BTreeSet::new() });
        self.stats.leases_granted += 1;
        metrics::counter!("pvp_global_coord_leases_granted_total").increment(1);
        Ok(id)
    }

    /// Renews `lease` until `now` + its TTL; returns the TTL.
    pub fn keep_alive(&mut self, now: Duration, lease: LeaseId) -> Result<Duration, CoordError> {
        self.advance(now);
        let now = self.now;
        match self.leases.get_mut(&lease) {
            Some(entry) => {
                entry.expires_at = now.saturating_add(entry.ttl);
                Ok(entry.ttl)
            }
            None => Err(self.reject(CoordError::LeaseNotFound(lease))),
        }
    }

    /// Whether `lease` is live at `now`.
    pub fn lease_alive(&mut self, now: Duration, lease: LeaseId) -> bool {
        self.advance(now);
        self.leases.contains_key(&lease)
    }

    /// Revokes `lease` and deletes everything attached to it.
    pub fn revoke_lease(&mut self, now: Duration, lease: LeaseId) -> Result<(), CoordError> {
        self.advance(now);
        if self.leases.contains_key(&lease) {
            self.drop_lease(lease);
            Ok(())
        } else {
            Err(self.reject(CoordError::LeaseNotFound(lease)))
        }
    }

    /// Announces `region` as live while `lease` lives (re-announcing moves it to this lease).
    pub fn announce_region(
        &mut self,
        now: Duration,
        region: RegionId,
        lease: LeaseId,
    ) -> Result<(), CoordError> {
        self.advance(now);
        if !self.leases.contains_key(&lease) {
            return Err(self.reject(CoordError::LeaseNotFound(lease)));
        }
        let key = format!("{REGIONS_PREFIX}{region}");
        let same = self
            .keys
            .get(&key)
            .is_some_and(|k| k.lease == Some(lease) && k.value == region.as_str().as_bytes());
        if !same {
            self.put(key, region.as_str().as_bytes().to_vec(), Some(lease))?;
        }
        Ok(())
    }

    /// Live regions, sorted.
    pub fn live_regions(&mut self, now: Duration) -> Result<Vec<RegionId>, CoordError> {
        self.advance(now);
        self.keys
            .range::<str, _>((std::ops::Bound::Included(REGIONS_PREFIX), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(REGIONS_PREFIX))
            .map(|(_, v)| decode_region(&v.value))
            .collect()
    }

    /// Tries to become the leader of `job` under `lease`.
    pub fn campaign(
        &mut self,
        now: Duration,
        job: &str,
        candidate: RegionId,
        lease: LeaseId,
    ) -> Result<Leadership, CoordError> {
        self.advance(now);
        if let Err(e) = check_name(job) {
            return Err(self.reject(e));
        }
        if !self.leases.contains_key(&lease) {
            return Err(self.reject(CoordError::LeaseNotFound(lease)));
        }
        let key = format!("{LEADERS_PREFIX}{job}");
        let result = match self.keys.get(&key) {
            Some(holder) => {
                let leader = decode_region(&holder.value)?;
                Leadership { leader, won: leader == candidate && holder.lease == Some(lease) }
            }
            None => {
                self.put(key, candidate.as_str().as_bytes().to_vec(), Some(lease))?;
                Leadership { leader: candidate, won: true }
            }
        };
        if result.won {
            self.stats.campaigns_won += 1;
        } else {
            self.stats.campaigns_lost += 1;
        }
        Ok(result)
    }

    /// The leader of `job` at `now`.
    pub fn leader(&mut self, now: Duration, job: &str) -> Result<Option<RegionId>, CoordError> {
        self.advance(now);
        if let Err(e) = check_name(job) {
            return Err(self.reject(e));
        }
        match self.keys.get(&format!("{LEADERS_PREFIX}{job}")) {
            Some(k) => Ok(Some(decode_region(&k.value)?)),
            None => Ok(None),
        }
    }

    /// Gives up `job` if `lease` holds it; returns whether it did.
    pub fn resign(&mut self, now: Duration, job: &str, lease: LeaseId) -> Result<bool, CoordError> {
        self.advance(now);
        if let Err(e) = check_name(job) {
            return Err(self.reject(e));
        }
        let key = format!("{LEADERS_PREFIX}{job}");
        if self.keys.get(&key).is_some_and(|k| k.lease == Some(lease)) {
            self.delete(&key);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Reads control record `name`.
    pub fn read_record(&mut self, now: Duration, name: &str) -> Result<Option<VersionedRecord>, CoordError> {
        self.advance(now);
        if let Err(e) = check_name(name) {
            return Err(self.reject(e));
        }
        Ok(self
            .keys
            .get(&format!("{RECORDS_PREFIX}{name}"))
            .map(|k| VersionedRecord { value: k.value.clone(), version: k.mod_revision }))
    }

    /// Stores `value` under `name` if the record matches `expected`.
    pub fn compare_and_set(
        &mut self,
        now: Duration,
        name: &str,
        expected: Expected,
        value: Vec<u8>,
    ) -> Result<CasOutcome, CoordError> {
        self.advance(now);
        if let Err(e) = check_name(name).and_then(|()| check_value(&value)) {
            return Err(self.reject(e));
        }
        let key = format!("{RECORDS_PREFIX}{name}");
        let current =
            self.keys.get(&key).map(|k| VersionedRecord { value: k.value.clone(), version: k.mod_revision });
        let matches = match (&current, expected) {
            (None, Expected::Absent) => true,
            (Some(c), Expected::Version(v)) => c.version == v,
            _ => false,
        };
        if !matches {
            self.stats.cas_conflicts += 1;
            metrics::counter!("pvp_global_coord_cas_conflicts_total").increment(1);
            return Ok(CasOutcome::Conflict { current });
        }
        let version = self.put(key, value, None)?;
        self.stats.cas_applied += 1;
        Ok(CasOutcome::Applied { version })
    }

    /// Deletes control record `name` if it matches `expected`; returns whether it did.
    pub fn delete_record(
        &mut self,
        now: Duration,
        name: &str,
        expected: Expected,
    ) -> Result<bool, CoordError> {
        self.advance(now);
        if let Err(e) = check_name(name) {
            return Err(self.reject(e));
        }
        let key = format!("{RECORDS_PREFIX}{name}");
        let matches = match (self.keys.get(&key), expected) {
            (Some(k), Expected::Version(v)) => k.mod_revision == v,
            _ => false,
        };
        if matches {
            self.delete(&key);
        }
        Ok(matches)
    }

    /// Opens a watch on `scope`; changes from now on queue up for
    /// [`LocalCoordinator::poll_change`].
    pub fn watch(&mut self, scope: &WatchScope) -> Result<WatchId, CoordError> {
        let prefix = match scope_prefix(scope) {
            Ok(p) => p,
            Err(e) => return Err(self.reject(e)),
        };
        if self.watchers.len() >= self.config.max_watchers {
            return Err(self.reject(CoordError::CapacityExceeded("watchers")));
        }
        let id = WatchId(self.next_watch);
        self.next_watch += 1;
        self.watchers.insert(id, Watcher { prefix, queue: VecDeque::new(), lagged: false, waker: None });
        Ok(id)
    }

    /// The next queued change of watch `id`: `None` when nothing is queued,
    /// `Some(Err(WatchLagged))` once after changes were dropped, `Some(Err(WatchClosed))` for a
    /// cancelled or unknown watch.
    pub fn poll_change(&mut self, id: WatchId) -> Option<Result<Change, CoordError>> {
        let Some(w) = self.watchers.get_mut(&id) else {
            return Some(Err(CoordError::WatchClosed));
        };
        if w.lagged {
            w.lagged = false;
            return Some(Err(CoordError::WatchLagged));
        }
        w.queue.pop_front().map(Ok)
    }

    /// Closes watch `id`; returns whether it was open.
    pub fn cancel_watch(&mut self, id: WatchId) -> bool {
        self.watchers.remove(&id).is_some()
    }

    pub(crate) fn set_waker(&mut self, id: WatchId, waker: &Waker) {
        if let Some(w) = self.watchers.get_mut(&id) {
            w.waker = Some(waker.clone());
        }
    }

    fn reject(&mut self, e: CoordError) -> CoordError {
        self.stats.rejected += 1;
        metrics::counter!("pvp_global_coord_rejected_total").increment(1);
        e
    }

    fn advance(&mut self, now: Duration) {
        if now > self.now {
            self.now = now;
        }
        let now = self.now;
        let expired: Vec<LeaseId> =
            self.leases.iter().filter(|(_, l)| l.expires_at <= now).map(|(id, _)| *id).collect();
        for id in expired {
            self.stats.leases_expired += 1;
            metrics::counter!("pvp_global_coord_leases_expired_total").increment(1);
            self.drop_lease(id);
        }
    }

    fn drop_lease(&mut self, id: LeaseId) {
        if let Some(entry) = self.leases.remove(&id) {
            for key in entry.keys {
                if self.keys.get(&key).is_some_and(|k| k.lease == Some(id)) {
                    self.delete(&key);
                }
            }
        }
    }

    fn put(&mut self, key: String, value: Vec<u8>, lease: Option<LeaseId>) -> Result<u64, CoordError> {
        if !self.keys.contains_key(&key) && self.keys.len() >= self.config.max_keys {
            return Err(self.reject(CoordError::CapacityExceeded("keys")));
        }
        self.revision += 1;
        let revision = self.revision;
        if let Some(old) = self.keys.get(&key).and_then(|k| k.lease) {
            if Some(old) != lease {
                if let Some(l) = self.leases.get_mut(&old) {
                    l.keys.remove(&key);
                }
            }
        }
        if let Some(l) = lease.and_then(|l| self.leases.get_mut(&l)) {
            l.keys.insert(key.clone());
        }
        self.notify(&key, Some((&value, revision)), revision);
        self.keys.insert(key, KeyEntry { value, mod_revision: revision, lease });
        Ok(revision)
    }

    fn delete(&mut self, key: &str) {
        if let Some(old) = self.keys.remove(key) {
            if let Some(l) = old.lease.and_then(|l| self.leases.get_mut(&l)) {
                l.keys.remove(key);
            }
            self.revision += 1;
            let revision = self.revision;
            self.notify(key, None, revision);
        }
    }

    fn notify(&mut self, key: &str, value: Option<(&[u8], u64)>, revision: u64) {
        if self.watchers.is_empty() {
            return;
        }
        let Some(change) = classify(key, value, revision) else {
            return;
        };
        let cap = self.config.max_pending_changes;
        let mut dropped = 0u64;
        for w in self.watchers.values_mut() {
            if !key.starts_with(&w.prefix) {
                continue;
            }
            if w.queue.len() >= cap {
                dropped += w.queue.len() as u64 + 1;
                w.queue.clear();
                w.lagged = true;
            } else {
                w.queue.push_back(change.clone());
            }
            if let Some(waker) = w.waker.take() {
                waker.wake();
            }
        }
        if dropped > 0 {
            self.stats.watch_dropped += dropped;
            metrics::counter!("pvp_global_coord_watch_dropped_total").increment(dropped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::ChangeKind;

    fn r(s: &str) -> RegionId {
        RegionId::new(s).unwrap()
    }

    #[test]
    fn lease_expiry_removes_region_and_leadership_and_notifies() {
        let mut c = LocalCoordinator::default();
        let t = Duration::from_millis;
        let w = c.watch(&WatchScope::Regions).unwrap();
        let l = c.grant_lease(t(0), Duration::from_secs(2)).unwrap();
        c.announce_region(t(0), r("kr"), l).unwrap();
        c.campaign(t(0), "job", r("kr"), l).unwrap();
        assert_eq!(c.keep_alive(t(1500), l).unwrap(), Duration::from_secs(2));
        assert_eq!(c.live_regions(t(3400)).unwrap(), vec![r("kr")]);
        assert_eq!(c.poll_timeout(), Some(t(3500)));
        c.handle_timeout(t(3500));
        assert!(c.live_regions(t(3500)).unwrap().is_empty());
        assert_eq!(c.leader(t(3500), "job").unwrap(), None);
        assert!(matches!(c.poll_change(w), Some(Ok(Change { kind: ChangeKind::RegionUp(_), .. }))));
        assert!(matches!(c.poll_change(w), Some(Ok(Change { kind: ChangeKind::RegionDown(_), .. }))));
        assert!(c.poll_change(w).is_none());
        assert!(matches!(c.keep_alive(t(3600), l), Err(CoordError::LeaseNotFound(_))));
        assert_eq!(c.stats().leases_expired, 1);
    }

    #[test]
    fn time_going_backwards_is_clamped() {
        let mut c = LocalCoordinator::default();
        let l = c.grant_lease(Duration::from_secs(10), Duration::from_secs(2)).unwrap();
        // An older `now` must not resurrect or extend beyond the newest time seen.
        c.keep_alive(Duration::from_secs(1), l).unwrap();
        assert!(!c.lease_alive(Duration::from_secs(12), l));
    }

    #[test]
    fn watch_overflow_reports_lag_once() {
        let mut c =
            LocalCoordinator::new(LocalCoordinatorConfig { max_pending_changes: 2, ..Default::default() });
        let w = c.watch(&WatchScope::Records(String::new())).unwrap();
        for i in 0..3u8 {
            let v = c.read_record(Duration::ZERO, "x").unwrap().map(|r| r.version);
            let exp = v.map_or(Expected::Absent, Expected::Version);
            c.compare_and_set(Duration::ZERO, "x", exp, vec![i]).unwrap();
        }
        assert!(matches!(c.poll_change(w), Some(Err(CoordError::WatchLagged))));
        assert!(c.poll_change(w).is_none());
        assert_eq!(c.stats().watch_dropped, 3);
    }
}
