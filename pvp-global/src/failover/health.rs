//! Region health from lease liveness and data-plane signals, with hysteresis.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use pvp_core::ids::RegionId;

use crate::coord::{Change, ChangeKind};

use super::FailoverError;

/// How healthy a region looks from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RegionHealth {
    /// Heartbeats on time, errors rare, lease live.
    Healthy,
    /// Late heartbeats or elevated errors: keep its players, prefer others for new matches.
    Degraded,
    /// Lease lost, heartbeats silent for too long, or most requests failing: fail over.
    Down,
}

/// Thresholds of a [`RegionHealthTracker`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct HealthPolicy {
    /// Heartbeat silence after which a region is Degraded.
    pub degraded_after_silence: Duration,
    /// Heartbeat silence after which a region is Down.
    pub down_after_silence: Duration,
    /// Length of the error-rate window (the rate covers the current and the previous window).
    pub error_window: Duration,
    /// Fewest requests in the window before the error rate counts (0 counts as 1: with no
    /// requests there is no rate).
    pub min_samples: u64,
    /// Error rate (0..=1) at which a region is Degraded.
    pub degraded_error_rate: f64,
    /// Error rate (0..=1) at which a region is Down.
    pub down_error_rate: f64,
    /// How long a region must look better without interruption before its health improves
    /// (worsening is immediate). This is the hysteresis that stops flapping.
    pub recovery_hold: Duration,
}

impl Default for HealthPolicy {
    /// Tuned for heartbeats every 250 ms and a failover goal of 5 s.
    fn default() -> Self {
        Self {
            degraded_after_silence: Duration::from_millis(750),
            down_after_silence: Duration::from_millis(1500),
            error_window: Duration::from_secs(2),
            min_samples: 20,
            degraded_error_rate: 0.05,
            down_error_rate: 0.5,
            recovery_hold: Duration::from_secs(2),
        }
    }
}

impl HealthPolicy {
    /// Checks that thresholds are ordered (`degraded_after_silence <= down_after_silence`,
    /// `degraded_error_rate <= down_error_rate`), rates within 0..=1 (NaN refused), and that
    /// `degraded_after_silence` and `error_window` are not zero (a zero silence threshold would
    /// hold every region Degraded even at the instant of its heartbeat). Any other value,
    /// [`Duration::MAX`] included, is accepted.
    pub fn validate(&self) -> Result<(), FailoverError> {
        let rates_ok = (0.0..=1.0).contains(&self.degraded_error_rate)
            && (0.0..=1.0).contains(&self.down_error_rate)
            && self.degraded_error_rate <= self.down_error_rate;
        let silence_ok =
            !self.degraded_after_silence.is_zero() && self.degraded_after_silence <= self.down_after_silence;
        if rates_ok && silence_ok && !self.error_window.is_zero() {
            Ok(())
        } else {
            Err(FailoverError::InvalidPolicy)
        }
    }
}

/// A region's health changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthTransition {
    /// The region.
    pub region: RegionId,
    /// Health before.
    pub from: RegionHealth,
    /// Health now.
    pub to: RegionHealth,
    /// When the change was decided.
    pub at: Duration,
}

/// Counters of a [`RegionHealthTracker`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthStats {
    /// Heartbeats received.
    pub heartbeats: u64,
    /// Health transitions emitted.
    pub transitions: u64,
    /// Transitions to Down.
    pub downs: u64,
    /// Signals for regions not being tracked.
    pub unknown_region: u64,
}

#[derive(Debug, Clone)]
struct Signals {
    last_heartbeat: Duration,
    lease_alive: bool,
    window_start: Duration,
    cur: (u64, u64),
    prev: (u64, u64),
    health: RegionHealth,
    better_since: Option<Duration>,
}

/// Most regions one tracker follows.
pub const MAX_REGIONS: usize = 256;

/// Combines lease liveness (from a [`Coordinator`](crate::coord::Coordinator) watch) and
/// data-plane signals (heartbeats, request outcomes) into a [`RegionHealth`] per region.
///
/// Sans-IO: feed `handle_*` with `now`, call [`RegionHealthTracker::handle_timeout`] at
/// [`RegionHealthTracker::poll_timeout`] (or on every tick), then drain
/// [`RegionHealthTracker::poll_transition`].
///
/// ```
/// use std::time::Duration;
/// use pvp_core::ids::RegionId;
/// use pvp_global::failover::{HealthPolicy, RegionHealth, RegionHealthTracker};
///
/// let kr = RegionId::new("kr")?;
/// let ms = Duration::from_millis;
/// let mut health = RegionHealthTracker::new(HealthPolicy::default())?;
/// health.add_region(ms(0), kr)?;
/// health.handle_heartbeat(ms(250), kr)?;
/// health.handle_timeout(ms(1800)); // 1.55 s of silence
/// let t = health.poll_transition().expect("kr went down");
/// assert_eq!((t.from, t.to), (RegionHealth::Healthy, RegionHealth::Down));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RegionHealthTracker {
    policy: HealthPolicy,
    regions: BTreeMap<RegionId, Signals>,
    transitions: VecDeque<HealthTransition>,
    now: Duration,
    stats: HealthStats,
}

impl RegionHealthTracker {
    /// A tracker with this policy (checked by [`HealthPolicy::validate`]).
    pub fn new(policy: HealthPolicy) -> Result<Self, FailoverError> {
        policy.validate()?;
        Ok(Self {
            policy,
            regions: BTreeMap::new(),
            transitions: VecDeque::new(),
            now: Duration::ZERO,
            stats: HealthStats::default(),
        })
    }

    /// Starts tracking `region` as Healthy with a live lease, as if it had just sent a
    /// heartbeat. Adding a tracked region again changes nothing.
    pub fn add_region(&mut self, now: Duration, region: RegionId) -> Result<(), FailoverError> {
        let now = self.clamp(now);
        if self.regions.contains_key(&region) {
            return Ok(());
        }
        if self.regions.len() >= MAX_REGIONS {
            return Err(FailoverError::TooManyRegions);
        }
        self.regions.insert(
            region,
            Signals {
                last_heartbeat: now,
                lease_alive: true,
                window_start: now,
                cur: (0, 0),
                prev: (0, 0),
                health: RegionHealth::Healthy,
                better_since: None,
            },
        );
        Ok(())
    }

    /// The current health of `region`.
    pub fn health(&self, region: RegionId) -> Option<RegionHealth> {
        self.regions.get(&region).map(|s| s.health)
    }

    /// Counters so far.
    pub fn stats(&self) -> HealthStats {
        self.stats
    }

    /// A data-plane heartbeat from `region` arrived. The silence it ends counts first: a
    /// heartbeat after `down_after_silence` of silence finds the region Down (and it then needs
    /// the `recovery_hold`) even when no [`RegionHealthTracker::handle_timeout`] ran in between.
    pub fn handle_heartbeat(&mut self, now: Duration, region: RegionId) -> Result<(), FailoverError> {
        let now = self.clamp(now);
        self.signals(region)?;
        self.evaluate(now);
        let s = self.signals(region)?;
        s.last_heartbeat = s.last_heartbeat.max(now);
        self.stats.heartbeats += 1;
        self.evaluate(now);
        Ok(())
    }

    /// The coordinator reports `region`'s lease alive (announced) or gone.
    pub fn handle_lease(
        &mut self,
        now: Duration,
        region: RegionId,
        alive: bool,
    ) -> Result<(), FailoverError> {
        let now = self.clamp(now);
        self.signals(region)?.lease_alive = alive;
        self.evaluate(now);
        Ok(())
    }

    /// Feeds a coordinator change: `RegionUp` / `RegionDown` of a tracked region set its lease
    /// state; other changes and untracked regions are ignored. Returns whether it applied.
    pub fn handle_change(&mut self, now: Duration, change: &Change) -> bool {
        let (region, alive) = match change.kind {
            ChangeKind::RegionUp(r) => (r, true),
            ChangeKind::RegionDown(r) => (r, false),
            _ => return false,
        };
        self.regions.contains_key(&region) && self.handle_lease(now, region, alive).is_ok()
    }

    /// `ok` requests to `region` succeeded and `failed` failed since the last report.
    pub fn handle_requests(
        &mut self,
        now: Duration,
        region: RegionId,
        ok: u64,
        failed: u64,
    ) -> Result<(), FailoverError> {
        let now = self.clamp(now);
        let window = self.policy.error_window;
        let s = self.signals(region)?;
        roll(s, now, window);
        s.cur.0 = s.cur.0.saturating_add(ok);
        s.cur.1 = s.cur.1.saturating_add(failed);
        self.evaluate(now);
        Ok(())
    }

    /// Re-evaluates every region at `now` (silence grows with time alone).
    pub fn handle_timeout(&mut self, now: Duration) {
        let now = self.clamp(now);
        self.evaluate(now);
    }

    /// The next instant at which health can change without new input, if any.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let p = &self.policy;
        self.regions
            .values()
            .flat_map(|s| {
                [
                    Some(s.last_heartbeat.saturating_add(p.degraded_after_silence)),
                    Some(s.last_heartbeat.saturating_add(p.down_after_silence)),
                    s.better_since.map(|b| b.saturating_add(p.recovery_hold)),
                    Some(s.window_start.saturating_add(p.error_window)),
                ]
            })
            .flatten()
            .filter(|t| *t > self.now)
            .min()
    }

    /// The next health change, oldest first.
    pub fn poll_transition(&mut self) -> Option<HealthTransition> {
        self.transitions.pop_front()
    }

    fn clamp(&mut self, now: Duration) -> Duration {
        self.now = self.now.max(now);
        self.now
    }

    fn signals(&mut self, region: RegionId) -> Result<&mut Signals, FailoverError> {
        match self.regions.get_mut(&region) {
            Some(s) => Ok(s),
            None => {
                self.stats.unknown_region += 1;
                metrics::counter!("pvp_global_health_unknown_region_total").increment(1);
                Err(FailoverError::UnknownRegion(region))
            }
        }
    }

    fn observed(p: &HealthPolicy, s: &Signals, now: Duration) -> RegionHealth {
        let silence = now.saturating_sub(s.last_heartbeat);
        let (ok, failed) = (s.cur.0.saturating_add(s.prev.0), s.cur.1.saturating_add(s.prev.1));
        let total = ok.saturating_add(failed);
        // Below `min_samples` the rate does not count at all (not even against a threshold of 0).
        let rate = (total >= p.min_samples.max(1)).then(|| failed as f64 / total as f64);
        let rate_at = |threshold: f64| rate.is_some_and(|r| r >= threshold);
        if !s.lease_alive || silence >= p.down_after_silence || rate_at(p.down_error_rate) {
            RegionHealth::Down
        } else if silence >= p.degraded_after_silence || rate_at(p.degraded_error_rate) {
            RegionHealth::Degraded
        } else {
            RegionHealth::Healthy
        }
    }

    fn evaluate(&mut self, now: Duration) {
        let p = self.policy;
        for (region, s) in &mut self.regions {
            roll(s, now, p.error_window);
            let seen = Self::observed(&p, s, now);
            let next = if seen > s.health {
                s.better_since = None;
                Some(seen)
            } else if seen < s.health {
                let since = *s.better_since.get_or_insert(now);
                (now.saturating_sub(since) >= p.recovery_hold).then_some(seen)
            } else {
                s.better_since = None;
                None
            };
            if let Some(to) = next {
                s.better_since = None;
                let t = HealthTransition { region: *region, from: s.health, to, at: now };
                s.health = to;
                self.stats.transitions += 1;
                if to == RegionHealth::Down {
                    self.stats.downs += 1;
                    metrics::counter!("pvp_global_region_down_total").increment(1);
                }
                self.transitions.push_back(t);
            }
        }
    }
}

fn roll(s: &mut Signals, now: Duration, window: Duration) {
    let elapsed = now.saturating_sub(s.window_start);
    if elapsed >= window {
        s.prev = if elapsed >= window.saturating_mul(2) { (0, 0) } else { s.cur };
        s.cur = (0, 0);
        s.window_start = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn hysteresis_needs_a_continuous_hold_to_recover() {
        let kr = RegionId::new("kr").unwrap();
        let mut h = RegionHealthTracker::new(HealthPolicy::default()).unwrap();
        h.add_region(ms(0), kr).unwrap();
        h.handle_lease(ms(100), kr, false).unwrap();
        assert_eq!(h.health(kr), Some(RegionHealth::Down));
        h.handle_lease(ms(200), kr, true).unwrap();
        h.handle_heartbeat(ms(200), kr).unwrap();
        // A relapse at 1 s restarts the 2 s hold.
        h.handle_lease(ms(1000), kr, false).unwrap();
        h.handle_lease(ms(1100), kr, true).unwrap();
        for t in (1100..=3000).step_by(100) {
            h.handle_heartbeat(ms(t), kr).unwrap();
        }
        assert_eq!(h.health(kr), Some(RegionHealth::Down));
        h.handle_heartbeat(ms(3100), kr).unwrap();
        assert_eq!(h.health(kr), Some(RegionHealth::Healthy));
        let all: Vec<_> = std::iter::from_fn(|| h.poll_transition()).map(|t| t.to).collect();
        assert_eq!(all, [RegionHealth::Down, RegionHealth::Healthy]);
    }

    #[test]
    fn error_rate_degrades_then_downs() {
        let jp = RegionId::new("jp").unwrap();
        let mut h = RegionHealthTracker::new(HealthPolicy::default()).unwrap();
        h.add_region(ms(0), jp).unwrap();
        h.handle_requests(ms(10), jp, 90, 10).unwrap();
        assert_eq!(h.health(jp), Some(RegionHealth::Degraded));
        h.handle_requests(ms(20), jp, 0, 200).unwrap();
        assert_eq!(h.health(jp), Some(RegionHealth::Down));
        assert!(matches!(
            h.handle_heartbeat(ms(30), RegionId::new("xx").unwrap()),
            Err(FailoverError::UnknownRegion(_))
        ));
        assert_eq!(h.stats().unknown_region, 1);
    }
}
