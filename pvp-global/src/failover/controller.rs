//! [`RegionFailover`]: the failover planner wired to matchmaking and cross-region sync.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use pvp_core::ids::{PlayerId, RegionId};

use crate::coord::Change;
use crate::matchmaking::{GlobalMatchmaking, MatchResult};
use crate::sync::{CrossRegionSync, PeerProgress};

use super::{
    FailoverDecision, FailoverError, FailoverPlanner, HealthPolicy, LatencyMatrix, PlannerConfig,
    PlannerStats, PlayerSession, RegionAvailability, RegionHealth, RegionHealthTracker,
};

/// One region's cross-region sync progress at one instant: how far each peer has received
/// the region's local writes. Read it from the region's [`CrossRegionSync`] with
/// [`SyncProgress::of`] and carry it to the [`RegionFailover`] (e.g. in the region's
/// heartbeat); it is plain data (serde, e.g. postcard).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncProgress {
    /// The reporting region.
    pub region: RegionId,
    /// When the report was read from the node (same clock as the failover's `now`).
    pub at: Duration,
    /// Sequence number of the region's latest local write.
    pub head: u64,
    /// Progress towards each peer.
    pub peers: Vec<PeerProgress>,
}

impl SyncProgress {
    /// Reads `node`'s progress at `now`.
    pub fn of(node: &CrossRegionSync, now: Duration) -> Self {
        Self { region: node.region(), at: now, head: node.head_seq(), peers: node.peers_progress().collect() }
    }

    /// Progress towards `peer`, if it is one.
    pub fn towards(&self, peer: RegionId) -> Option<&PeerProgress> {
        self.peers.iter().find(|p| p.peer == peer)
    }
}

/// Where a returning region's catch-up stands; see [`RegionFailover::catch_up`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CatchUpStatus {
    /// When the region came back (health no longer Down) and started catching up.
    pub since: Duration,
    /// Per region (the returning one and each serving peer): the head of its local writes
    /// in its first [`SyncProgress`] read at or after `since`. Everything up to it must reach
    /// the other side before the region takes matches.
    pub watermarks: BTreeMap<RegionId, u64>,
    /// Regions whose writes up to their watermark have not all been acknowledged by the other
    /// side yet (or whose report is still missing).
    pub waiting_on: BTreeSet<RegionId>,
}

/// Counters of a [`RegionFailover`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegionFailoverStats {
    /// Sync progress reports taken.
    pub progress_reports: u64,
    /// Catch-ups started (a Down region came back).
    pub catch_ups_started: u64,
    /// Catch-ups completed (the region was handed back to routing).
    pub catch_ups_completed: u64,
    /// Region overrides changed in matchmaking by [`RegionFailover::apply_to`].
    pub matchmaking_updates: u64,
    /// Sessions registered from match results.
    pub sessions_placed: u64,
    /// Inputs refused (unknown region or player, full session table).
    pub rejected: u64,
}

#[derive(Debug, Clone)]
struct CatchUp {
    since: Duration,
    watermarks: BTreeMap<RegionId, u64>,
}

/// Region failover for a running game backend: a [`RegionHealthTracker`] and a
/// [`FailoverPlanner`] driven together, with two integrations the bare planner leaves to its
/// caller:
///
/// - **matchmaking**: [`RegionFailover::apply_to`] marks every region that is not serving
///   (Down, catching up, or drained) Down in a [`GlobalMatchmaking`], and clears the mark once
///   it serves again, so new matches only go to serving regions within each ticket's latency
///   limit (the matchmaker never places a player over their limit);
/// - **cross-region sync**: a returning region is handed back to routing only once it has
///   caught up, judged from [`SyncProgress`] reports of every region: each region's local writes
///   up to a watermark taken after the return were acknowledged by the other side (the
///   returning region has every peer's writes, and every peer has the returning region's), and
///   no anti-entropy repair is owed either way. [`FailoverDecision::AwaitingCatchUp`] is the
///   moment to ask sync for an anti-entropy round
///   ([`CrossRegionSync::request_anti_entropy`]).
///
/// Sans-IO: every input takes `now` (one clock for all inputs); outputs are
/// [`RegionFailover::poll_decision`] and the state read by [`RegionFailover::apply_to`].
/// Call [`RegionFailover::handle_timeout`] at [`RegionFailover::poll_timeout`] or on every tick.
///
/// ```
/// use std::time::Duration;
/// use pvp_global::cluster::{FleetConfig, JP, KR, SG, RegionHealth as ClusterHealth};
/// use pvp_global::failover::*;
/// use pvp_global::matchmaking::{GlobalMatchmaking, MatchmakingConfig};
/// use pvp_global::sync::{SyncConfig, CrossRegionSync};
///
/// let ms = Duration::from_millis;
/// let mut latency = LatencyMatrix::default();
/// for r in [KR, JP, SG] { latency.set(r, r, ms(8)); }
/// latency.set_symmetric(KR, JP, ms(35));
/// latency.set_symmetric(KR, SG, ms(75));
/// latency.set_symmetric(JP, SG, ms(70));
/// let mut failover = RegionFailover::new(HealthPolicy::default(), PlannerConfig::default(), latency)?;
/// let t0 = ms(0);
/// for r in [KR, JP, SG] { failover.add_region(t0, r)?; }
/// let mut mm = GlobalMatchmaking::new(FleetConfig::reference(), MatchmakingConfig::default(), t0)?;
///
/// // jp and sg keep heartbeating, kr falls silent: Down after 1.5 s, and matchmaking skips it.
/// for t in (250..=2000).step_by(250) {
///     for r in [JP, SG] { failover.handle_heartbeat(ms(t), r)?; }
///     failover.handle_timeout(ms(t));
/// }
/// failover.apply_to(&mut mm)?;
/// assert_eq!(failover.availability(KR), Some(RegionAvailability::Down));
/// assert_eq!(mm.region_health(KR), Some(ClusterHealth::Down)); // no new match goes there
///
/// // kr heartbeats again: after the 2 s hold it is back, but catching up.
/// for t in (2250..=4500).step_by(250) {
///     for r in [KR, JP, SG] { failover.handle_heartbeat(ms(t), r)?; }
///     failover.handle_timeout(ms(t));
/// }
/// assert_eq!(failover.availability(KR), Some(RegionAvailability::CatchingUp));
///
/// // Sync progress from every region: nothing owed either way, so kr has caught up.
/// let base = Duration::from_secs(1_000); // sync nodes run on the shared epoch clock
/// for r in [KR, JP, SG] {
///     let peers = [KR, JP, SG].into_iter().filter(|p| *p != r).collect();
///     let mut node = CrossRegionSync::new(SyncConfig::new(r, peers)?, base);
///     node.handle_timeout(base + ms(20)); // first digests sent: no repair owed
///     failover.handle_sync_progress(ms(4600), SyncProgress::of(&node, ms(4600)))?;
/// }
/// assert_eq!(failover.availability(KR), Some(RegionAvailability::Serving));
/// failover.apply_to(&mut mm)?;
/// assert_eq!(mm.cluster(KR).map(|c| c.health_override()), Some(None)); // computed health again
/// let restored = std::iter::from_fn(|| failover.poll_decision())
///     .any(|d| matches!(d, FailoverDecision::RegionRestored { region, .. } if region == KR));
/// assert!(restored);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RegionFailover {
    health: RegionHealthTracker,
    planner: FailoverPlanner,
    regions: BTreeSet<RegionId>,
    progress: BTreeMap<RegionId, SyncProgress>,
    catch_ups: BTreeMap<RegionId, CatchUp>,
    drained: BTreeSet<RegionId>,
    marked_down: BTreeSet<RegionId>,
    decisions: VecDeque<FailoverDecision>,
    now: Duration,
    stats: RegionFailoverStats,
}

impl RegionFailover {
    /// A failover with no regions yet. Refuses an invalid `policy` ([`HealthPolicy::validate`]).
    pub fn new(
        policy: HealthPolicy,
        config: PlannerConfig,
        latency: LatencyMatrix,
    ) -> Result<Self, FailoverError> {
        Ok(Self {
            health: RegionHealthTracker::new(policy)?,
            planner: FailoverPlanner::new(config, latency),
            regions: BTreeSet::new(),
            progress: BTreeMap::new(),
            catch_ups: BTreeMap::new(),
            drained: BTreeSet::new(),
            marked_down: BTreeSet::new(),
            decisions: VecDeque::new(),
            now: Duration::ZERO,
            stats: RegionFailoverStats::default(),
        })
    }

    /// Tracks `region` as Healthy and serving (adding it again changes nothing).
    pub fn add_region(&mut self, now: Duration, region: RegionId) -> Result<(), FailoverError> {
        self.health.add_region(now, region).map_err(|e| self.reject(e))?;
        self.planner.add_region(region).map_err(|e| self.reject(e))?;
        self.regions.insert(region);
        self.pump(now);
        Ok(())
    }

    /// A data-plane heartbeat from `region` arrived.
    pub fn handle_heartbeat(&mut self, now: Duration, region: RegionId) -> Result<(), FailoverError> {
        self.health.handle_heartbeat(now, region).map_err(|e| self.reject(e))?;
        self.pump(now);
        Ok(())
    }

    /// `ok` requests to `region` succeeded and `failed` failed since the last report.
    pub fn handle_requests(
        &mut self,
        now: Duration,
        region: RegionId,
        ok: u64,
        failed: u64,
    ) -> Result<(), FailoverError> {
        self.health.handle_requests(now, region, ok, failed).map_err(|e| self.reject(e))?;
        self.pump(now);
        Ok(())
    }

    /// Feeds a coordinator watch change (region leases); returns whether it applied
    /// (see [`RegionHealthTracker::handle_change`]).
    pub fn handle_change(&mut self, now: Duration, change: &Change) -> bool {
        let applied = self.health.handle_change(now, change);
        self.pump(now);
        applied
    }

    /// A region's [`SyncProgress`] arrived. Refused for untracked regions.
    pub fn handle_sync_progress(&mut self, now: Duration, report: SyncProgress) -> Result<(), FailoverError> {
        if self.planner.availability(report.region).is_none() {
            return Err(self.reject(FailoverError::UnknownRegion(report.region)));
        }
        self.stats.progress_reports += 1;
        for c in self.catch_ups.values_mut() {
            if report.at >= c.since {
                c.watermarks.entry(report.region).or_insert(report.head);
            }
        }
        let newer = self.progress.get(&report.region).is_none_or(|old| old.at <= report.at);
        if newer {
            self.progress.insert(report.region, report);
        }
        self.pump(now);
        Ok(())
    }

    /// Registers every player of a new match as a session on its server, so that they are
    /// offered a reconnect if its region goes Down. `player_info` gives each player's origin
    /// region (row of the [`LatencyMatrix`]) and latency limit; players it does not know are
    /// skipped. Returns how many sessions were registered; a refused session (full table,
    /// region not tracked) stops the registration there with its error.
    pub fn handle_match(
        &mut self,
        result: &MatchResult,
        mut player_info: impl FnMut(PlayerId) -> Option<(RegionId, Duration)>,
    ) -> Result<usize, FailoverError> {
        let mut placed = 0;
        for p in result.players() {
            let Some((origin, latency_limit)) = player_info(p.player()) else {
                continue;
            };
            let session = PlayerSession {
                player: p.player(),
                server: result.server().id,
                region: result.region(),
                origin,
                latency_limit,
            };
            if let Err(e) = self.planner.handle_session_placed(session) {
                // The sessions registered before the refused one stay registered: count them
                // and pass on their decisions.
                self.stats.sessions_placed += placed as u64;
                self.drain_planner();
                return Err(self.reject(e));
            }
            placed += 1;
        }
        self.stats.sessions_placed += placed as u64;
        self.drain_planner();
        Ok(placed)
    }

    /// Matchmaking placed (or re-placed after a reconnect) a player.
    pub fn handle_session_placed(&mut self, session: PlayerSession) -> Result<(), FailoverError> {
        self.planner.handle_session_placed(session).map_err(|e| self.reject(e))?;
        self.stats.sessions_placed += 1;
        self.drain_planner();
        Ok(())
    }

    /// A player's session ended.
    pub fn handle_session_ended(&mut self, player: PlayerId) -> Result<(), FailoverError> {
        self.planner.handle_session_ended(player).map_err(|e| self.reject(e))
    }

    /// Drains `region` for maintenance (no new matches) or undrains it.
    pub fn handle_drain(&mut self, region: RegionId, drained: bool) -> Result<(), FailoverError> {
        self.planner.handle_drain(region, drained).map_err(|e| self.reject(e))?;
        if drained {
            self.drained.insert(region);
        } else {
            self.drained.remove(&region);
        }
        self.drain_planner();
        Ok(())
    }

    /// Re-evaluates health at `now` (silence grows with time alone) and the catch-up gates.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.health.handle_timeout(now);
        self.pump(now);
    }

    /// The next instant at which health can change without new input, if any.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.health.poll_timeout()
    }

    /// The next decision, oldest first (the planner's, in order).
    pub fn poll_decision(&mut self) -> Option<FailoverDecision> {
        self.decisions.pop_front()
    }

    /// Brings `mm`'s region overrides in line: every tracked region that is not serving
    /// (Down, catching up, drained) is marked Down there; a region this failover marked
    /// Down and that serves again is cleared (its computed health applies). Overrides this
    /// failover did not set are left alone. Returns how many regions changed; regions the
    /// matchmaker does not know are skipped and reported as
    /// [`FailoverError::UnknownRegion`] after the others were applied.
    pub fn apply_to(&mut self, mm: &mut GlobalMatchmaking) -> Result<usize, FailoverError> {
        let mut changed = 0;
        let mut missing = None;
        let regions: Vec<(RegionId, RegionAvailability)> = self.availabilities().collect();
        for (region, availability) in regions {
            if mm.cluster(region).is_none() {
                missing = missing.or(Some(region));
                continue;
            }
            let down = availability != RegionAvailability::Serving || self.drained.contains(&region);
            let result = if down && !self.marked_down.contains(&region) {
                mm.mark_region_down(region).map(|()| self.marked_down.insert(region))
            } else if !down && self.marked_down.contains(&region) {
                mm.mark_region_up(region).map(|()| self.marked_down.remove(&region))
            } else {
                Ok(false)
            };
            match result {
                Ok(true) => changed += 1,
                Ok(false) => {}
                Err(_) => missing = missing.or(Some(region)),
            }
        }
        self.stats.matchmaking_updates += changed as u64;
        match missing {
            Some(r) => Err(self.reject(FailoverError::UnknownRegion(r))),
            None => Ok(changed),
        }
    }

    /// The region for a new match of a player from `origin` with `latency_limit`
    /// ([`FailoverPlanner::route`]).
    pub fn route(&self, origin: RegionId, latency_limit: Duration) -> Option<RegionId> {
        self.planner.route(origin, latency_limit)
    }

    /// Whether `region` takes matches, if tracked.
    pub fn availability(&self, region: RegionId) -> Option<RegionAvailability> {
        self.planner.availability(region)
    }

    /// Observed health of `region`, if tracked.
    pub fn health(&self, region: RegionId) -> Option<RegionHealth> {
        self.health.health(region)
    }

    /// Where `region`'s catch-up stands, while it is catching up.
    pub fn catch_up(&self, region: RegionId) -> Option<CatchUpStatus> {
        let c = self.catch_ups.get(&region)?;
        Some(CatchUpStatus {
            since: c.since,
            watermarks: c.watermarks.clone(),
            waiting_on: self.waiting_on(region, c),
        })
    }

    /// The planner (sessions, routing table, its counters).
    pub fn planner(&self) -> &FailoverPlanner {
        &self.planner
    }

    /// The health tracker (its counters and timers).
    pub fn tracker(&self) -> &RegionHealthTracker {
        &self.health
    }

    /// Counters so far.
    pub fn stats(&self) -> RegionFailoverStats {
        self.stats
    }

    /// The planner's counters.
    pub fn planner_stats(&self) -> PlannerStats {
        self.planner.stats()
    }

    fn availabilities(&self) -> impl Iterator<Item = (RegionId, RegionAvailability)> + '_ {
        self.regions.iter().filter_map(|&r| Some((r, self.planner.availability(r)?)))
    }

    fn reject(&mut self, e: FailoverError) -> FailoverError {
        self.stats.rejected += 1;
        metrics::counter!("pvp_global_failover_controller_rejected_total").increment(1);
        e
    }

    /// Health transitions into the planner, planner decisions out, then the catch-up gates
    /// (and the decisions a restore produced).
    fn pump(&mut self, now: Duration) {
        self.now = self.now.max(now);
        let now = self.now;
        while let Some(t) = self.health.poll_transition() {
            // Transitions only name tracked regions.
            let _ = self.planner.handle_health(t.at, t.region, t.to);
        }
        self.drain_planner_at(now);
        let ready: Vec<RegionId> = self
            .catch_ups
            .iter()
            .filter(|(r, c)| self.waiting_on(**r, c).is_empty())
            .map(|(r, _)| *r)
            .collect();
        for region in ready {
            if self.planner.handle_caught_up(now, region).is_ok() {
                self.catch_ups.remove(&region);
                self.stats.catch_ups_completed += 1;
                metrics::counter!("pvp_global_failover_catch_ups_completed_total").increment(1);
            }
        }
        self.drain_planner_at(now);
    }

    fn drain_planner(&mut self) {
        self.drain_planner_at(self.now);
    }

    fn drain_planner_at(&mut self, now: Duration) {
        while let Some(d) = self.planner.poll_decision() {
            match &d {
                FailoverDecision::AwaitingCatchUp { region } => {
                    let mut watermarks = BTreeMap::new();
                    // A report read at this very instant already counts.
                    for (r, p) in &self.progress {
                        if p.at >= now {
                            watermarks.insert(*r, p.head);
                        }
                    }
                    self.catch_ups.insert(*region, CatchUp { since: now, watermarks });
                    self.stats.catch_ups_started += 1;
                    metrics::counter!("pvp_global_failover_catch_ups_started_total").increment(1);
                }
                FailoverDecision::RegionDown { region, .. } => {
                    self.catch_ups.remove(region);
                }
                _ => {}
            }
            self.decisions.push_back(d);
        }
    }

    /// Regions whose writes up to their watermark have not yet reached the other side of
    /// `region`'s catch-up (empty: caught up).
    fn waiting_on(&self, region: RegionId, c: &CatchUp) -> BTreeSet<RegionId> {
        let mut waiting = BTreeSet::new();
        let peers: Vec<RegionId> = self
            .availabilities()
            .filter(|(r, a)| *r != region && *a == RegionAvailability::Serving)
            .map(|(r, _)| r)
            .collect();
        let mine = self.progress.get(&region);
        let my_mark = c.watermarks.get(&region);
        for peer in peers {
            // The returning region's writes reached the peer ...
            let out = match (mine, my_mark) {
                (Some(p), Some(&w)) => p.towards(peer).is_some_and(|pp| pp.delivered(w)),
                _ => false,
            };
            if !out {
                waiting.insert(region);
            }
            // ... and the peer's writes reached the returning region.
            let theirs = self.progress.get(&peer);
            let inbound = match (theirs, c.watermarks.get(&peer)) {
                (Some(p), Some(&w)) => p.towards(region).is_some_and(|pp| pp.delivered(w)),
                _ => false,
            };
            if !inbound {
                waiting.insert(peer);
            }
        }
        // With no serving peer there is nobody to catch up from; still require a report from
        // the returning region read after its return, so the gate never opens on stale data.
        if mine.is_none() || my_mark.is_none() {
            waiting.insert(region);
        }
        waiting
    }
}
