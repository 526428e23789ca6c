//! Cross-region matchmaking: tickets in, matches on allocated servers out.
//!
//! [`GlobalMatchmaking`] is sans-IO. [`find_match`](GlobalMatchmaking::find_match) queues a
//! [`MatchRequest`] and returns a [`MatchHandle`]; the driver calls
//! [`tick`](GlobalMatchmaking::tick) with the current time, which runs one matchmaking pass,
//! completes the handles of matched players and queues each [`MatchResult`] for
//! [`poll_match`](GlobalMatchmaking::poll_match) (where the assembling code signs connect
//! tokens and tells servers who comes).
//!
//! The pass, per game mode (and per home region unless cross-region matching is on):
//! 1. every queued ticket gets its current skill window and latency limit (both widen in steps
//!    with waiting time) and the set of regions it accepts (measured latency within its limit,
//!    region not Down);
//! 2. tickets are sorted by rating; each unmatched ticket, lowest first, gathers the nearest
//!    following tickets whose rating is within every member's window and whose accepted regions
//!    still overlap, until the match is full (parties count as one unit of their size);
//! 3. teams are balanced (parties stay together), the region is picked by the objective among
//!    the shared accepted regions with room, and a server is allocated there (best fit).
//!
//! The pass allocates nothing per ticket once its buffers have grown to the queue's size.
//!
//! ```
//! use std::time::Duration;
//! use pvp_core::ids::PlayerId;
//! use pvp_global::cluster::{FleetConfig, JP, KR, SG};
//! use pvp_global::matchmaking::{GameMode, GlobalMatchmaking, MatchRequest, MatchmakingConfig};
//!
//! let t0 = Duration::ZERO;
//! let mut mm = GlobalMatchmaking::new(FleetConfig::reference(), MatchmakingConfig::default(), t0)?;
//! mm.heartbeat_all(t0); // every server reports in (a real driver forwards server heartbeats)
//! let ask = |id, rating, kr_ms, jp_ms| {
//!     MatchRequest::new(PlayerId::new(id), rating, KR, GameMode::ONE_V_ONE)
//!         .max_latency(Duration::from_millis(60))
//!         .latency(KR, Duration::from_millis(kr_ms))
//!         .latency(JP, Duration::from_millis(jp_ms))
//!         .latency(SG, Duration::from_millis(90))
//! };
//! let a = mm.find_match(ask(1, 1500.0, 10, 40), t0)?;
//! let b = mm.find_match(ask(2, 1520.0, 50, 20), t0)?;
//! mm.tick(t0);
//! let m = a.try_result().expect("matched")?;
//! assert_eq!(m.players().len(), 2);
//! assert_eq!(m.region(), JP); // worst latency 40 ms in jp beats 50 ms in kr
//! assert_eq!(b.wait()?.match_id(), m.match_id());
//! assert_eq!(mm.poll_match().map(|r| r.match_id()), Some(m.match_id()));
//! # Ok::<(), Box<dyn std::error::Error>>(())

mod backfill;
mod config;
mod handle;
mod pass;
mod request;
mod result;
mod skill;
mod stats;

pub use backfill::BackfillRequest;
pub use config::{MatchmakingConfig, RegionObjective};
pub use handle::{MatchError, MatchHandle};
pub use request::{
    GameMode, GameModeId, MAX_MATCH_PLAYERS, MAX_PARTY_SIZE, MAX_REGIONS, MatchRequest, RequestError,
};
pub use result::{ConnectGrant, MatchResult, MatchedPlayer};
pub use skill::{MatchOutcome, PlayerRating, RatingBook, RatingError, RatingSystem};
pub use stats::{MatchmakingStats, Rejections, TickReport};

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pvp_core::ids::{MatchId, PlayerId, RegionId};

use crate::cluster::{ClusterError, ConfigError, FleetConfig, RegionCluster, RegionHealth, RegionSummary};
use backfill::Backfill;
use handle::{CancelInbox, Slot};
use pass::{Candidate, SortScratch, Ticket, dur_us};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// A region the request gave no latency for: never acceptable.
const NO_LATENCY: u32 = u32::MAX;

/// The cross-region matchmaker. See the [module docs](self).
#[derive(Debug)]
pub struct GlobalMatchmaking {
    config: MatchmakingConfig,
    regions: Vec<RegionCluster>,
    available: [bool; MAX_REGIONS],
    tickets: Vec<Option<Ticket>>,
    free_tickets: Vec<u32>,
    by_player: FastMap<PlayerId, u32>,
    cands: Vec<Candidate>,
    sort_scratch: SortScratch,
    group: Vec<usize>,
    results: VecDeque<MatchResult>,
    backfills: Vec<Backfill>,
    cancels: CancelInbox,
    cancel_buf: Vec<PlayerId>,
    next_match: u64,
    ratings: RatingBook,
    stats: MatchmakingStats,
}

impl GlobalMatchmaking {
    /// A matchmaker over the fleet's regions (each gets a [`RegionCluster`] started at `now`).
    pub fn new(fleet: FleetConfig, config: MatchmakingConfig, now: Duration) -> Result<Self, ConfigError> {
        fleet.validate()?;
        config.validate()?;
        let regions =
            fleet.regions.into_iter().map(|r| RegionCluster::new(r, now)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            ratings: RatingBook::new(config.rating_system),
            config,
            regions,
            available: [false; MAX_REGIONS],
            tickets: Vec::new(),
            free_tickets: Vec::new(),
            by_player: FastMap::default(),
            cands: Vec::new(),
            sort_scratch: SortScratch::default(),
            group: Vec::with_capacity(MAX_MATCH_PLAYERS),
            results: VecDeque::new(),
            backfills: Vec::new(),
            cancels: Arc::new(Mutex::new(Vec::new())),
            cancel_buf: Vec::new(),
            next_match: 1,
            stats: MatchmakingStats::default(),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &MatchmakingConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> MatchmakingStats {
        self.stats
    }

    /// The rating book (update it with [`report_outcome`](Self::report_outcome)).
    pub fn ratings(&self) -> &RatingBook {
        &self.ratings
    }

    /// The rating book, to load stored ratings.
    pub fn ratings_mut(&mut self) -> &mut RatingBook {
        &mut self.ratings
    }

    /// Reserves room for `tickets` queued tickets, so that queueing them allocates nothing
    /// but their handles.
    pub fn reserve(&mut self, tickets: usize) {
        self.tickets.reserve(tickets);
        self.by_player.reserve(tickets);
        self.cands.reserve(tickets);
    }

    fn region_index(&self, region: RegionId) -> Option<usize> {
        self.regions.iter().position(|c| c.region() == region)
    }

    /// The cluster of `region`.
    pub fn cluster(&self, region: RegionId) -> Option<&RegionCluster> {
        self.regions.iter().find(|c| c.region() == region)
    }

    /// The cluster of `region`, to feed heartbeats and scale it.
    pub fn cluster_mut(&mut self, region: RegionId) -> Option<&mut RegionCluster> {
        self.regions.iter_mut().find(|c| c.region() == region)
    }

    /// Every region's cluster.
    pub fn clusters(&self) -> impl Iterator<Item = &RegionCluster> {
        self.regions.iter()
    }

    /// Records a heartbeat from every live server of every region (simulations and tests; a
    /// real driver forwards each server's own heartbeats to [`cluster_mut`](Self::cluster_mut)).
    pub fn heartbeat_all(&mut self, now: Duration) {
        for c in &mut self.regions {
            let ids: Vec<_> = c.servers().map(|s| s.id()).collect();
            for id in ids {
                // Unhealthy servers refuse heartbeats by design; they are replaced on tick.
                let _ = c.heartbeat(id, now);
            }
        }
    }

    /// Overrides a region's health (`Some(Down)` routes every new match away from it;
    /// `None` returns to its computed health). This is how failover steers matchmaking.
    pub fn set_region_health(
        &mut self,
        region: RegionId,
        health: Option<RegionHealth>,
    ) -> Result<(), RequestError> {
        let c = self.cluster_mut(region).ok_or(RequestError::UnknownRegion(region))?;
        c.set_health_override(health);
        Ok(())
    }

    /// Marks a region Down: no new match goes there.
    pub fn mark_region_down(&mut self, region: RegionId) -> Result<(), RequestError> {
        self.set_region_health(region, Some(RegionHealth::Down))
    }

    /// Clears a Down mark: the region's computed health applies again.
    pub fn mark_region_up(&mut self, region: RegionId) -> Result<(), RequestError> {
        self.set_region_health(region, None)
    }

    /// A region's health, if known.
    pub fn region_health(&self, region: RegionId) -> Option<RegionHealth> {
        self.cluster(region).map(RegionCluster::health)
    }

    /// Every region's summary, for the global layer.
    pub fn region_summaries(&self, now: Duration) -> Vec<RegionSummary> {
        self.regions.iter().map(|c| c.summary(now)).collect()
    }

    /// Players queued now (party members included). A ticket cancelled through its
    /// [`MatchHandle`] still counts here until the next [`tick`](Self::tick) (or the next
    /// [`find_match`](Self::find_match) by one of its players, or one that finds the queue
    /// full) drops it.
    pub fn queued_players(&self) -> usize {
        self.stats.queued_players as usize
    }

    /// Whether `player` is queued (alone or in a party) and still waiting: false once their
    /// ticket was cancelled (through the matchmaker or the handle), timed out or matched.
    pub fn is_queued(&self, player: PlayerId) -> bool {
        self.by_player
            .get(&player)
            .and_then(|&idx| self.tickets.get(idx as usize))
            .is_some_and(|t| t.as_ref().is_some_and(|t| t.slot.is_queued()))
    }

    fn reject(&mut self, err: RequestError) -> RequestError {
        self.stats.rejected.count(&err);
        err
    }

    /// The index of game mode `id` in the configured modes.
    fn mode_index(&self, id: GameModeId) -> Result<usize, RequestError> {
        self.config.modes.iter().position(|m| m.id == id).ok_or(RequestError::UnknownMode(id))
    }

    fn check(&self, req: &MatchRequest) -> Result<(u8, u8, [u32; MAX_REGIONS]), RequestError> {
        let mode = self.mode_index(req.mode)?;
        let team_size = usize::from(self.config.modes[mode].team_size);
        let bad_rating = |r: f64| !r.is_finite() || r < 0.0;
        if bad_rating(req.rating) {
            return Err(RequestError::InvalidRating { player: req.player, rating: req.rating });
        }
        for (p, r) in req.party() {
            if bad_rating(*r) {
                return Err(RequestError::InvalidRating { player: *p, rating: *r });
            }
        }
        if req.max_latency.is_zero() {
            return Err(RequestError::ZeroMaxLatency);
        }
        if let Some(c) = req.max_latency_ceiling {
            if c < req.max_latency {
                return Err(RequestError::CeilingBelowLimit { limit: req.max_latency, ceiling: c });
            }
        }
        if req.latency_overflow {
            return Err(RequestError::TooManyLatencies);
        }
        let home = self
            .region_index(req.preferred_region)
            .ok_or(RequestError::UnknownRegion(req.preferred_region))?;
        let mut lat = [NO_LATENCY; MAX_REGIONS];
        for (region, rtt) in &req.latencies[..req.latency_len] {
            let i = self.region_index(*region).ok_or(RequestError::UnknownRegion(*region))?;
            lat[i] = dur_us(*rtt);
        }
        if req.party_overflow > 0 || req.size() > team_size {
            return Err(RequestError::PartyTooLarge {
                size: req.size().saturating_add(req.party_overflow),
                team_size,
            });
        }
        let members = req.party();
        for (i, (p, _)) in members.iter().enumerate() {
            if *p == req.player || members[..i].iter().any(|(q, _)| q == p) {
                return Err(RequestError::DuplicatePartyMember(*p));
            }
        }
        if let Some(p) =
            std::iter::once(req.player).chain(members.iter().map(|m| m.0)).find(|p| self.is_queued(*p))
        {
            return Err(RequestError::AlreadyQueued(p));
        }
        if self.queued_players() + req.size() > self.config.max_queued_players {
            return Err(RequestError::QueueFull(self.config.max_queued_players));
        }
        Ok((mode as u8, home as u8, lat))
    }

    /// Queues a request. Refused requests leave the queue unchanged and are counted.
    pub fn find_match(&mut self, req: MatchRequest, now: Duration) -> Result<MatchHandle, RequestError> {
        // A ticket cancelled through its handle leaves the queue at the next tick; a player who
        // queues again before that must not be refused as already queued.
        for p in std::iter::once(req.player).chain(req.party().iter().map(|m| m.0)) {
            if let Some(&idx) = self.by_player.get(&p) {
                if self.tickets[idx as usize].as_ref().is_some_and(|t| !t.slot.is_queued()) {
                    self.remove_ticket(idx);
                    self.stats.cancelled += 1;
                }
            }
        }
        // Tickets cancelled through their handles no longer hold a place in a full queue.
        if self.queued_players().saturating_add(req.size()) > self.config.max_queued_players {
            self.drain_cancels(&mut TickReport::default());
        }
        let (mode, home, lat_us) = match self.check(&req) {
            Ok(v) => v,
            Err(e) => return Err(self.reject(e)),
        };
        let slot = Slot::new();
        let size = req.size();
        let rating_sum = req.rating + req.party().iter().map(|p| p.1).sum::<f64>();
        let ticket = Ticket {
            player: req.player,
            rating: rating_sum / size as f64,
            leader_rating: req.rating,
            size: size as u8,
            mode,
            home,
            lat_us,
            max_lat_us: dur_us(req.max_latency),
            ceiling_us: dur_us(req.max_latency_ceiling.unwrap_or(req.max_latency)),
            enqueued: now,
            party: req.party,
            party_len: req.party_len as u8,
            slot: slot.clone(),
        };
        let idx = match self.free_tickets.pop() {
            Some(i) => {
                self.tickets[i as usize] = Some(ticket);
                i
            }
            None => {
                self.tickets.push(Some(ticket));
                (self.tickets.len() - 1) as u32
            }
        };
        self.by_player.insert(req.player, idx);
        for (p, _) in req.party() {
            self.by_player.insert(*p, idx);
        }
        self.stats.queued_players += size as u64;
        self.stats.accepted += 1;
        Ok(MatchHandle::new(req.player, slot, self.cancels.clone()))
    }

    /// Cancels `player`'s ticket (or their party's). True if it was queued.
    pub fn cancel(&mut self, player: PlayerId) -> bool {
        let Some(&idx) = self.by_player.get(&player) else {
            return false;
        };
        let cancelled =
            self.tickets[idx as usize].as_ref().is_some_and(|t| t.slot.fail(MatchError::Cancelled));
        if cancelled {
            self.remove_ticket(idx);
            self.stats.cancelled += 1;
        }
        cancelled
    }

    fn remove_ticket(&mut self, idx: u32) {
        // Read in place and cleared in place: moving the ticket out copied its ~240 bytes for
        // every matched player.
        let Self { tickets, by_player, .. } = self;
        let Some(entry) = tickets.get_mut(idx as usize) else {
            return;
        };
        let Some(t) = entry.as_ref() else {
            return;
        };
        by_player.remove(&t.player);
        for (p, _) in &t.party[..usize::from(t.party_len)] {
            by_player.remove(p);
        }
        self.stats.queued_players -= u64::from(t.size);
        *entry = None;
        self.free_tickets.push(idx);
    }

    /// Ends a match: frees its server slots.
    pub fn release_match(&mut self, region: RegionId, match_id: MatchId) -> Result<(), ClusterError> {
        let c = self.cluster_mut(region).ok_or(ClusterError::UnknownMatch(match_id))?;
        c.release(match_id)
    }

    /// Records a finished two-team match's outcome in the rating book and frees its server.
    /// Teams 0 and 1 are rated (players of any further team are not); a refused update
    /// ([`RatingError`], e.g. [`EmptyTeam`](RatingError::EmptyTeam) for a backfill result,
    /// which lists only newcomers) leaves the book unchanged and the server allocated.
    pub fn report_outcome(&mut self, result: &MatchResult, outcome: MatchOutcome) -> Result<(), RatingError> {
        let mut a = [PlayerId::new(0); MAX_MATCH_PLAYERS];
        let mut b = [PlayerId::new(0); MAX_MATCH_PLAYERS];
        let (mut na, mut nb) = (0, 0);
        for p in result.players() {
            match p.team() {
                0 => {
                    a[na] = p.player();
                    na += 1;
                }
                1 => {
                    b[nb] = p.player();
                    nb += 1;
                }
                _ => {}
            }
        }
        self.ratings.record(&a[..na], &b[..nb], outcome)?;
        // The match may already be released (or its server lost); the ratings still count.
        let _ = self.release_match(result.region(), result.match_id());
        Ok(())
    }

    /// The next formed match, oldest first, for the assembling code (sign its connect
    /// grant, tell the server who comes).
    pub fn poll_match(&mut self) -> Option<MatchResult> {
        self.results.pop_front()
    }

    fn push_result(&mut self, r: MatchResult) {
        if self.config.max_pending_results == 0 {
            // Nothing is kept for `poll_match`: every result is dropped, and counted as such.
            self.stats.results_dropped += 1;
            return;
        }
        if self.results.len() >= self.config.max_pending_results {
            self.results.pop_front();
            self.stats.results_dropped += 1;
        }
        self.results.push_back(r);
    }

    /// Runs the clusters' ticks and one matchmaking pass at `now`.
    pub fn tick(&mut self, now: Duration) -> TickReport {
        let mut report = TickReport::default();
        for c in &mut self.regions {
            c.tick(now);
        }
        self.drain_cancels(&mut report);
        for (i, c) in self.regions.iter().enumerate() {
            self.available[i] = c.health() != RegionHealth::Down;
        }
        self.build_candidates(now, &mut report);
        self.run_backfills(now, &mut report);
        self.sweep(now, &mut report);
        self.stats.passes += 1;
        metrics::counter!("pvp_global_mm_matches_total").increment(u64::from(report.matches));
        metrics::counter!("pvp_global_mm_matched_players_total").increment(u64::from(report.matched_players));
        metrics::counter!("pvp_global_mm_timed_out_total").increment(u64::from(report.timed_out));
        metrics::gauge!("pvp_global_mm_queued_players").set(self.stats.queued_players as f64);
        report
    }

    fn drain_cancels(&mut self, report: &mut TickReport) {
        std::mem::swap(&mut *handle::lock(&self.cancels), &mut self.cancel_buf);
        let mut buf = std::mem::take(&mut self.cancel_buf);
        for p in buf.drain(..) {
            if let Some(&idx) = self.by_player.get(&p) {
                if self.tickets[idx as usize].as_ref().is_some_and(|t| !t.slot.is_queued()) {
                    self.remove_ticket(idx);
                    self.stats.cancelled += 1;
                    report.cancelled += 1;
                }
            }
        }
        self.cancel_buf = buf;
        let before = self.backfills.len();
        self.backfills.retain(|b| b.slot.is_queued());
        let dropped = before - self.backfills.len();
        report.cancelled += dropped as u32;
        self.stats.cancelled += dropped as u64;
    }
}

impl Drop for GlobalMatchmaking {
    fn drop(&mut self) {
        for t in self.tickets.iter().flatten() {
            t.slot.fail(MatchError::Shutdown);
        }
        for b in &self.backfills {
            b.slot.fail(MatchError::Shutdown);
        }
    }
}
