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
//! ```

mod handle;
mod request;
mod result;
mod skill;

pub use handle::{MatchError, MatchHandle};
pub use request::{
    GameMode, GameModeId, MAX_MATCH_PLAYERS, MAX_PARTY_SIZE, MAX_REGIONS, MatchRequest, RequestError,
};
pub use result::{ConnectGrant, MatchResult, MatchedPlayer};
pub use skill::{MatchOutcome, PlayerRating, RatingBook, RatingError, RatingSystem};

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pvp_core::ids::{MatchId, PlayerId, RegionId};
use serde::{Deserialize, Serialize};

use crate::cluster::{
    AllocatedServer, ClusterError, ConfigError, FleetConfig, RegionCluster, RegionHealth, RegionSummary,
};
use handle::{CancelInbox, Slot};

/// How the region of a match is chosen among those every member accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub enum RegionObjective {
    /// Lowest worst-player latency (the default: nobody is badly off).
    #[default]
    MinMax,
    /// Lowest mean latency.
    Average,
    /// Lowest latency at this percentile of the match's players (1..=100).
    Percentile(u8),
}

/// Matchmaking settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MatchmakingConfig {
    /// Game modes requests may name.
    pub modes: Vec<GameMode>,
    /// How the match's region is chosen.
    pub objective: RegionObjective,
    /// Whether players whose preferred regions differ may meet (in any region they all
    /// accept). When off, each region's queue matches alone and hosts its own matches.
    pub cross_region: bool,
    /// Rating window at enqueue: members' ratings differ by at most this.
    pub skill_window: f64,
    /// Added to the window every `expansion_interval` of waiting.
    pub skill_window_step: f64,
    /// Widest window.
    pub skill_window_max: f64,
    /// Waiting time between two expansions (of skill window and latency limit).
    pub expansion_interval: Duration,
    /// Added to a request's latency limit every interval, up to its ceiling
    /// ([`MatchRequest::widen_latency_to`]); requests without a ceiling never widen.
    pub latency_step: Duration,
    /// Tickets older than this end with [`MatchError::TimedOut`]; `None` waits forever.
    pub queue_timeout: Option<Duration>,
    /// Most queued players (parties count each member); more are refused. A ticket cancelled
    /// through its handle gives its place back at once.
    pub max_queued_players: usize,
    /// How far ahead in rating order a ticket looks for partners.
    pub lookahead: usize,
    /// How long a connect grant stays valid after the match forms.
    pub grant_ttl: Duration,
    /// Rating system of [`GlobalMatchmaking::ratings`].
    pub rating_system: RatingSystem,
    /// Match ids are `match_id_base + n`; give each matchmaker instance its own base.
    pub match_id_base: u64,
    /// Most results kept for [`GlobalMatchmaking::poll_match`]; older ones are dropped
    /// (counted) when the driver does not poll. `0` keeps none: every result is dropped (and
    /// counted), and only the handles carry matches.
    pub max_pending_results: usize,
}

impl MatchmakingConfig {
    /// Checks ranges and game modes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field| Err(ConfigError::InvalidMatchmaking { field });
        let ok = |x: f64| x.is_finite() && x >= 0.0;
        if !ok(self.skill_window) {
            return bad("skill_window");
        }
        if !ok(self.skill_window_step) {
            return bad("skill_window_step");
        }
        if !ok(self.skill_window_max) {
            return bad("skill_window_max");
        }
        if self.expansion_interval.is_zero() {
            return bad("expansion_interval");
        }
        if self.lookahead == 0 {
            return bad("lookahead");
        }
        if self.max_queued_players == 0 {
            return bad("max_queued_players");
        }
        if self.modes.is_empty() || self.modes.len() > 255 {
            return bad("modes");
        }
        if let RegionObjective::Percentile(p) = self.objective {
            if p == 0 || p > 100 {
                return bad("objective");
            }
        }
        for (i, m) in self.modes.iter().enumerate() {
            let malformed = m.team_size == 0 || m.teams < 2 || m.players() > MAX_MATCH_PLAYERS;
            if malformed || self.modes[..i].iter().any(|o| o.id == m.id) {
                return Err(ConfigError::InvalidGameMode { mode: m.id.0 });
            }
        }
        Ok(())
    }
}

impl Default for MatchmakingConfig {
    fn default() -> Self {
        Self {
            modes: vec![GameMode::one_v_one(), GameMode::five_v_five()],
            objective: RegionObjective::MinMax,
            cross_region: true,
            skill_window: 100.0,
            skill_window_step: 50.0,
            skill_window_max: 400.0,
            expansion_interval: Duration::from_secs(5),
            latency_step: Duration::from_millis(10),
            queue_timeout: Some(Duration::from_secs(300)),
            max_queued_players: 1_000_000,
            lookahead: 64,
            grant_ttl: Duration::from_secs(30),
            rating_system: RatingSystem::Elo,
            match_id_base: 0,
            max_pending_results: 1_000_000,
        }
    }
}

/// Refused requests, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejections {
    /// NaN, infinite or negative ratings.
    pub invalid_rating: u64,
    /// Unknown regions.
    pub unknown_region: u64,
    /// Zero latency limit or a ceiling below it.
    pub bad_latency_limit: u64,
    /// Unknown game modes.
    pub unknown_mode: u64,
    /// Players already queued (or twice in a party).
    pub already_queued: u64,
    /// Parties larger than a team.
    pub party_too_large: u64,
    /// Too many region latencies.
    pub too_many_latencies: u64,
    /// Full queue.
    pub queue_full: u64,
    /// Bad backfill requests.
    pub bad_backfill: u64,
}

/// Matchmaker counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MatchmakingStats {
    /// Players queued now.
    pub queued_players: u64,
    /// Tickets accepted.
    pub accepted: u64,
    /// Refused requests.
    pub rejected: Rejections,
    /// Matches formed.
    pub matches: u64,
    /// Players placed in new matches.
    pub matched_players: u64,
    /// Players placed by backfill.
    pub backfilled_players: u64,
    /// Tickets (and backfill requests) cancelled.
    pub cancelled: u64,
    /// Tickets timed out.
    pub timed_out: u64,
    /// Groups that found no region with room.
    pub no_capacity: u64,
    /// Results dropped because the driver did not poll.
    pub results_dropped: u64,
    /// Passes run.
    pub passes: u64,
}

/// What one [`GlobalMatchmaking::tick`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TickReport {
    /// Tickets considered.
    pub tickets: u32,
    /// Matches formed.
    pub matches: u32,
    /// Players placed in new matches.
    pub matched_players: u32,
    /// Players placed by backfill.
    pub backfilled_players: u32,
    /// Tickets timed out.
    pub timed_out: u32,
    /// Tickets (and backfill requests) removed after cancellation through their handles.
    pub cancelled: u32,
}

/// A request to fill open slots of a running match.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackfillRequest {
    /// The running match.
    pub match_id: MatchId,
    /// Its region.
    pub region: RegionId,
    /// Its mode.
    pub mode: GameModeId,
    /// The team with open slots.
    pub team: u8,
    /// Open slots on that team.
    pub slots: u8,
    /// The match's mean rating: newcomers must be within their window of it.
    pub rating: f64,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

const NO_LATENCY: u32 = u32::MAX;

/// A queued request. `repr(C)` keeps what forming a match reads (the first 88 bytes) ahead of
/// the party list, so the pass prefetches two cache lines per ticket.
#[derive(Debug)]
#[repr(C)]
struct Ticket {
    slot: Arc<Slot>,
    player: PlayerId,
    rating: f64,
    leader_rating: f64,
    enqueued: Duration,
    lat_us: [u32; MAX_REGIONS],
    max_lat_us: u32,
    ceiling_us: u32,
    size: u8,
    mode: u8,
    home: u8,
    party_len: u8,
    party: [(PlayerId, f64); MAX_PARTY_SIZE],
}

/// Bytes at the front of a [`Ticket`] that forming a match reads.
const TICKET_HOT_BYTES: usize = std::mem::offset_of!(Ticket, party);

#[derive(Debug, Clone, Copy)]
struct Cand {
    seg: u32,
    rating: f64,
    window: f64,
    idx: u32,
    mask: u8,
    size: u8,
    used: bool,
}

#[derive(Debug)]
struct Backfill {
    req: BackfillRequest,
    mode: u8,
    region: u8,
    remaining: u8,
    slot: Arc<Slot>,
    result: MatchResult,
}

/// How windows widen with waiting time (the scalar part of the config, copied per pass).
#[derive(Debug, Clone, Copy)]
struct Expansion {
    window: f64,
    step: f64,
    max: f64,
    interval_ns: u128,
    latency_step_us: u32,
}

impl Expansion {
    fn of(cfg: &MatchmakingConfig) -> Self {
        Self {
            window: cfg.skill_window,
            step: cfg.skill_window_step,
            max: cfg.skill_window_max,
            interval_ns: cfg.expansion_interval.as_nanos().max(1),
            latency_step_us: dur_us(cfg.latency_step),
        }
    }

    /// A ticket's skill window and latency limit (µs) at `now`.
    fn at(&self, t: &Ticket, now: Duration) -> (f64, u32) {
        let waited = now.saturating_sub(t.enqueued);
        let steps = (waited.as_nanos() / self.interval_ns).min(u128::from(u32::MAX)) as u32;
        let window = (self.window + f64::from(steps) * self.step).min(self.max.max(self.window));
        let limit = t
            .max_lat_us
            .saturating_add(self.latency_step_us.saturating_mul(steps))
            .min(t.ceiling_us.max(t.max_lat_us));
        (window, limit)
    }
}

fn dur_us(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX - 1)) as u32
}

/// The cross-region matchmaker. See the [module docs](self).
#[derive(Debug)]
pub struct GlobalMatchmaking {
    config: MatchmakingConfig,
    regions: Vec<RegionCluster>,
    available: [bool; MAX_REGIONS],
    tickets: Vec<Option<Ticket>>,
    free_tickets: Vec<u32>,
    by_player: FastMap<PlayerId, u32>,
    cands: Vec<Cand>,
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
        let r = &mut self.stats.rejected;
        let reason = match &err {
            RequestError::InvalidRating { .. } => {
                r.invalid_rating += 1;
                "invalid_rating"
            }
            RequestError::UnknownRegion(_) => {
                r.unknown_region += 1;
                "unknown_region"
            }
            RequestError::ZeroMaxLatency | RequestError::CeilingBelowLimit { .. } => {
                r.bad_latency_limit += 1;
                "bad_latency_limit"
            }
            RequestError::UnknownMode(_) => {
                r.unknown_mode += 1;
                "unknown_mode"
            }
            RequestError::AlreadyQueued(_) | RequestError::DuplicatePartyMember(_) => {
                r.already_queued += 1;
                "already_queued"
            }
            RequestError::PartyTooLarge { .. } => {
                r.party_too_large += 1;
                "party_too_large"
            }
            RequestError::TooManyLatencies => {
                r.too_many_latencies += 1;
                "too_many_latencies"
            }
            RequestError::QueueFull(_) => {
                r.queue_full += 1;
                "queue_full"
            }
            RequestError::UnknownMatch | RequestError::BadBackfill => {
                r.bad_backfill += 1;
                "bad_backfill"
            }
        };
        metrics::counter!("pvp_global_mm_rejected_total", "reason" => reason).increment(1);
        err
    }

    fn check(&self, req: &MatchRequest) -> Result<(u8, u8, [u32; MAX_REGIONS]), RequestError> {
        let mode = self
            .config
            .modes
            .iter()
            .position(|m| m.id == req.mode)
            .ok_or(RequestError::UnknownMode(req.mode))?;
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
        let Some(t) = self.tickets.get_mut(idx as usize).and_then(Option::take) else {
            return;
        };
        self.by_player.remove(&t.player);
        for (p, _) in &t.party[..usize::from(t.party_len)] {
            self.by_player.remove(p);
        }
        self.stats.queued_players -= u64::from(t.size);
        self.free_tickets.push(idx);
    }

    /// Asks to fill `slots` open places of `team` in a running match placed by this
    /// matchmaker. Each tick places fitting queued tickets; the returned handle completes,
    /// with every newcomer listed, once all slots are filled, or with
    /// [`MatchError::Cancelled`] if the match ends first.
    pub fn backfill(&mut self, req: BackfillRequest, _now: Duration) -> Result<MatchHandle, RequestError> {
        let checked = (|| {
            let mode = self
                .config
                .modes
                .iter()
                .position(|m| m.id == req.mode)
                .ok_or(RequestError::UnknownMode(req.mode))?;
            let region = self.region_index(req.region).ok_or(RequestError::UnknownRegion(req.region))?;
            let m = &self.config.modes[mode];
            if req.slots == 0 || req.slots > m.team_size || req.team >= m.teams {
                return Err(RequestError::BadBackfill);
            }
            if !req.rating.is_finite() || req.rating < 0.0 {
                return Err(RequestError::BadBackfill);
            }
            let server = self.regions[region].match_server(req.match_id).ok_or(RequestError::UnknownMatch)?;
            Ok((mode, region, server))
        })();
        let (mode, region, server) = match checked {
            Ok(v) => v,
            Err(e) => return Err(self.reject(e)),
        };
        let slot = Slot::new();
        let expires = _now.saturating_add(self.config.grant_ttl);
        let result = MatchResult::new(req.match_id, req.mode, req.region, server, _now, expires, true);
        self.backfills.push(Backfill {
            req,
            mode: mode as u8,
            region: region as u8,
            remaining: req.slots,
            slot: slot.clone(),
            result,
        });
        Ok(MatchHandle::new_backfill(slot, self.cancels.clone()))
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

    fn build_candidates(&mut self, now: Duration, report: &mut TickReport) {
        let exp = Expansion::of(&self.config);
        let (cross_region, queue_timeout) = (self.config.cross_region, self.config.queue_timeout);
        let n_regions = self.regions.len();
        let mut cands = std::mem::take(&mut self.cands);
        cands.clear();
        let mut expired = 0u32;
        for idx in 0..self.tickets.len() {
            // A ticket cancelled through its handle since the inbox drained fails its claim
            // below; not reading its slot here spares the pass a cache miss per ticket.
            let Some(t) = &self.tickets[idx] else {
                continue;
            };
            let waited = now.saturating_sub(t.enqueued);
            if queue_timeout.is_some_and(|limit| waited > limit) {
                if t.slot.fail(MatchError::TimedOut) {
                    expired += 1;
                    self.remove_ticket(idx as u32);
                }
                continue;
            }
            let (window, limit) = exp.at(t, now);
            let mut mask = 0u8;
            for r in 0..n_regions {
                let allowed = cross_region || r == usize::from(t.home);
                if allowed && self.available[r] && t.lat_us[r] <= limit {
                    mask |= 1 << r;
                }
            }
            let seg = if cross_region {
                u32::from(t.mode) << 8
            } else {
                u32::from(t.mode) << 8 | u32::from(t.home)
            };
            cands.push(Cand {
                seg,
                rating: t.rating,
                window,
                idx: idx as u32,
                mask,
                size: t.size,
                used: mask == 0,
            });
        }
        cands.sort_unstable_by(|a, b| {
            a.seg.cmp(&b.seg).then(a.rating.total_cmp(&b.rating)).then(a.idx.cmp(&b.idx))
        });
        report.tickets = cands.len() as u32;
        report.timed_out = expired;
        self.stats.timed_out += u64::from(expired);
        self.cands = cands;
    }

    fn run_backfills(&mut self, now: Duration, report: &mut TickReport) {
        if self.backfills.is_empty() {
            return;
        }
        let mut backfills = std::mem::take(&mut self.backfills);
        let mut cands = std::mem::take(&mut self.cands);
        for bf in &mut backfills {
            if self.regions[usize::from(bf.region)].match_server(bf.req.match_id).is_none() {
                // The match ended (or its server was lost): nothing left to fill.
                bf.slot.fail(MatchError::Cancelled);
                continue;
            }
            let seg_lo = if self.config.cross_region {
                u32::from(bf.mode) << 8
            } else {
                u32::from(bf.mode) << 8 | u32::from(bf.region)
            };
            // The widest window any ticket can have (`skill_window` wins over a smaller max).
            let widest = self.config.skill_window_max.max(self.config.skill_window);
            let lo_rating = bf.req.rating - widest;
            let start = cands.partition_point(|c| (c.seg, c.rating) < (seg_lo, lo_rating));
            let end = start.saturating_add(self.config.lookahead.max(1).saturating_mul(4)).min(cands.len());
            for cand in &mut cands[start..end] {
                if bf.remaining == 0 {
                    break;
                }
                let c = *cand;
                if c.seg != seg_lo || c.rating > bf.req.rating + widest {
                    break;
                }
                if c.used || c.size > bf.remaining || c.mask & (1 << bf.region) == 0 {
                    continue;
                }
                if (c.rating - bf.req.rating).abs() > c.window {
                    continue;
                }
                let Some(t) = self.tickets[c.idx as usize].as_ref() else {
                    continue;
                };
                let lat = t.lat_us[usize::from(bf.region)];
                let lat_sum = Duration::from_micros(u64::from(lat) * u64::from(t.size));
                if !t.slot.claim() {
                    cand.used = true;
                    continue;
                }
                let (slot, player, leader_rating, party, party_len, enqueued) =
                    (t.slot.clone(), t.player, t.leader_rating, t.party, t.party_len, t.enqueued);
                if self.regions[usize::from(bf.region)]
                    .add_players(bf.req.match_id, u32::from(c.size), lat_sum)
                    .is_err()
                {
                    slot.unclaim();
                    continue;
                }
                let mut own = MatchResult::new(
                    bf.req.match_id,
                    bf.req.mode,
                    bf.req.region,
                    bf.result.server,
                    now,
                    now.saturating_add(self.config.grant_ttl),
                    true,
                );
                let waited = now.saturating_sub(enqueued);
                let lat_d = Duration::from_micros(u64::from(lat));
                let mut add = |p: MatchedPlayer| {
                    own.push(p);
                    bf.result.push(p);
                };
                add(MatchedPlayer::new(player, bf.req.team, leader_rating, lat_d, waited));
                for (p, r) in &party[..usize::from(party_len)] {
                    add(MatchedPlayer::new(*p, bf.req.team, *r, lat_d, waited));
                }
                slot.deliver(Ok(own.clone()));
                self.push_result(own);
                bf.remaining -= c.size;
                cand.used = true;
                report.backfilled_players += u32::from(c.size);
                self.stats.backfilled_players += u64::from(c.size);
                self.remove_ticket(c.idx);
            }
            if bf.remaining == 0 && bf.slot.claim() {
                bf.slot.deliver(Ok(bf.result.clone()));
            }
        }
        backfills.retain(|b| b.remaining > 0 && b.slot.is_queued());
        self.backfills = backfills;
        self.cands = cands;
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

    fn sweep(&mut self, now: Duration, report: &mut TickReport) {
        let mut cands = std::mem::take(&mut self.cands);
        let mut group = std::mem::take(&mut self.group);
        let lookahead = self.config.lookahead.max(1);
        let n = cands.len();
        for a in 0..n {
            // Tickets are visited in rating order, random in memory: fetch the ticket 16
            // candidates ahead, and the handle slot of the one 8 ahead (its ticket is cached
            // by now), so forming a match rarely waits on memory.
            if let Some(c) = cands.get(a + 16) {
                let t = self.tickets.as_ptr().wrapping_add(c.idx as usize).cast::<u8>();
                // The hot bytes span at most two cache lines: the first and the last byte's.
                crate::sys::prefetch(t);
                crate::sys::prefetch(t.wrapping_add(TICKET_HOT_BYTES - 1));
            }
            if let Some(Some(t)) = cands.get(a + 8).and_then(|c| self.tickets.get(c.idx as usize)) {
                crate::sys::prefetch(Arc::as_ptr(&t.slot));
            }
            if cands[a].used {
                continue;
            }
            let head = cands[a];
            let Some(mode) = self.config.modes.get((head.seg >> 8) as usize) else {
                continue;
            };
            let need = mode.players();
            group.clear();
            group.push(a);
            let mut total = usize::from(head.size);
            let mut mask = head.mask;
            let mut window = head.window;
            let end = (a + 1).saturating_add(lookahead).min(n);
            for (b, c) in cands.iter().enumerate().take(end).skip(a + 1) {
                if total == need {
                    break;
                }
                if c.seg != head.seg || c.rating - head.rating > window {
                    break;
                }
                if c.used || c.rating - head.rating > c.window || total + usize::from(c.size) > need {
                    continue;
                }
                let m = mask & c.mask;
                if m == 0 {
                    continue;
                }
                group.push(b);
                total += usize::from(c.size);
                mask = m;
                window = window.min(c.window);
            }
            if total != need {
                continue;
            }
            if self.form_match(&mut cands, &group, mask, mode.team_size, mode.teams, now) {
                report.matches += 1;
                report.matched_players += need as u32;
            }
        }
        self.group = group;
        self.cands = cands;
    }

    /// Balances, claims, places and delivers one match; false (nothing changed but `used`
    /// marks of cancelled tickets) when it cannot be formed.
    fn form_match(
        &mut self,
        cands: &mut [Cand],
        group: &[usize],
        mask: u8,
        team_size: u8,
        teams: u8,
        now: Duration,
    ) -> bool {
        let Some(team_of) = Self::balance(cands, group, team_size, teams) else {
            return false;
        };
        // Claim every member: a ticket cancelled through its handle fails the claim.
        for (k, &ci) in group.iter().enumerate() {
            let claimed = self.tickets[cands[ci].idx as usize].as_ref().is_some_and(|t| t.slot.claim());
            if !claimed {
                cands[ci].used = true;
                for &cj in &group[..k] {
                    if let Some(t) = &self.tickets[cands[cj].idx as usize] {
                        t.slot.unclaim();
                    }
                }
                return false;
            }
        }
        let Some((region, server, match_id)) = self.place(cands, group, mask, now) else {
            for &ci in group {
                if let Some(t) = &self.tickets[cands[ci].idx as usize] {
                    t.slot.unclaim();
                }
            }
            self.stats.no_capacity += 1;
            return false;
        };
        let mut result = MatchResult::new(
            match_id,
            self.config.modes[(cands[group[0]].seg >> 8) as usize].id,
            self.regions[region].region(),
            server,
            now,
            now.saturating_add(self.config.grant_ttl),
            false,
        );
        for (k, &ci) in group.iter().enumerate() {
            let Some(t) = &self.tickets[cands[ci].idx as usize] else {
                continue;
            };
            let lat = Duration::from_micros(u64::from(t.lat_us[region]));
            let waited = now.saturating_sub(t.enqueued);
            let team = team_of[k];
            result.push(MatchedPlayer::new(t.player, team, t.leader_rating, lat, waited));
            for (p, r) in &t.party[..usize::from(t.party_len)] {
                result.push(MatchedPlayer::new(*p, team, *r, lat, waited));
            }
        }
        for &ci in group {
            cands[ci].used = true;
            let idx = cands[ci].idx;
            if let Some(t) = &self.tickets[idx as usize] {
                t.slot.deliver(Ok(result.clone()));
            }
            self.remove_ticket(idx);
        }
        self.stats.matches += 1;
        self.stats.matched_players += u64::from(result.len);
        self.push_result(result);
        true
    }

    /// Picks the region by the objective (ties: more members preferring it, then more free
    /// slots) and allocates a server there.
    fn place(
        &mut self,
        cands: &[Cand],
        group: &[usize],
        mask: u8,
        _now: Duration,
    ) -> Option<(usize, AllocatedServer, MatchId)> {
        let players: u32 = group.iter().map(|&ci| u32::from(cands[ci].size)).sum();
        let mut best: Option<(u64, u32, u64, usize)> = None;
        for r in 0..self.regions.len() {
            if mask & (1 << r) == 0 || !self.regions[r].can_fit(players) {
                continue;
            }
            let mut lats = [0u32; MAX_MATCH_PLAYERS];
            let mut n = 0;
            let mut prefer = 0u32;
            for &ci in group {
                let Some(t) = &self.tickets[cands[ci].idx as usize] else {
                    continue;
                };
                for _ in 0..t.size {
                    if let Some(l) = lats.get_mut(n) {
                        *l = t.lat_us[r];
                        n += 1;
                    }
                }
                if usize::from(t.home) == r {
                    prefer += u32::from(t.size);
                }
            }
            let lats = &mut lats[..n];
            let score = match self.config.objective {
                RegionObjective::MinMax => u64::from(lats.iter().copied().max().unwrap_or(0)),
                RegionObjective::Average => lats.iter().map(|&l| u64::from(l)).sum::<u64>() / n.max(1) as u64,
                RegionObjective::Percentile(p) => {
                    lats.sort_unstable();
                    let p = usize::from(p.clamp(1, 100));
                    let rank = (p * n).div_ceil(100).max(1) - 1;
                    u64::from(lats.get(rank).copied().unwrap_or(0))
                }
            };
            let free = self.regions[r].free_slots();
            let better = match best {
                None => true,
                Some((s, pr, f, _)) => {
                    (score, std::cmp::Reverse(prefer), std::cmp::Reverse(free))
                        < (s, std::cmp::Reverse(pr), std::cmp::Reverse(f))
                }
            };
            if better {
                best = Some((score, prefer, free, r));
            }
        }
        let (_, _, _, region) = best?;
        let match_id = MatchId::new(self.config.match_id_base.wrapping_add(self.next_match));
        let lat_sum: u64 = group
            .iter()
            .filter_map(|&ci| self.tickets[cands[ci].idx as usize].as_ref())
            .map(|t| u64::from(t.lat_us[region]) * u64::from(t.size))
            .sum();
        let server =
            self.regions[region].allocate(match_id, players, Duration::from_micros(lat_sum), _now).ok()?;
        self.next_match += 1;
        Some((region, server, match_id))
    }

    /// Splits the group's tickets into teams (parties whole), balancing rating sums.
    /// Returns each group member's team.
    fn balance(cands: &[Cand], group: &[usize], team_size: u8, teams: u8) -> Option<[u8; MAX_MATCH_PLAYERS]> {
        let mut team_of = [0u8; MAX_MATCH_PLAYERS];
        let n = group.len();
        let mut sizes = [0u8; MAX_MATCH_PLAYERS];
        let mut sums = [0f64; MAX_MATCH_PLAYERS];
        for (k, &ci) in group.iter().enumerate() {
            sizes[k] = cands[ci].size;
            sums[k] = cands[ci].rating * f64::from(cands[ci].size);
        }
        if n == 2 && teams == 2 {
            // Two units filling two teams exactly (a duel, or two full parties).
            team_of[1] = 1;
            return (sizes[0] == team_size && sizes[1] == team_size).then_some(team_of);
        }
        if teams == 2 && n <= 12 {
            // Exhaustive: member 0 on team 0; every subset of the others filling team 0.
            let total: f64 = sums[..n].iter().sum();
            let mut best: Option<(f64, u32)> = None;
            for subset in 0u32..(1 << (n - 1)) {
                let set = subset << 1 | 1;
                let mut size = 0u32;
                let mut sum = 0.0;
                for k in 0..n {
                    if set & (1 << k) != 0 {
                        size += u32::from(sizes[k]);
                        sum += sums[k];
                    }
                }
                if size != u32::from(team_size) {
                    continue;
                }
                let diff = (total - 2.0 * sum).abs();
                if best.is_none_or(|(d, _)| diff < d) {
                    best = Some((diff, set));
                }
            }
            let (_, set) = best?;
            for (k, t) in team_of.iter_mut().enumerate().take(n) {
                *t = u8::from(set & (1 << k) == 0);
            }
            return Some(team_of);
        }
        // Greedy: largest units first, each to the team with the lowest sum that has room.
        let mut order = [0usize; MAX_MATCH_PLAYERS];
        for (k, o) in order.iter_mut().enumerate().take(n) {
            *o = k;
        }
        order[..n].sort_unstable_by(|&x, &y| sizes[y].cmp(&sizes[x]).then(sums[y].total_cmp(&sums[x])));
        let mut fill = [0u8; MAX_MATCH_PLAYERS];
        let mut tsum = [0f64; MAX_MATCH_PLAYERS];
        for &k in &order[..n] {
            let t = (0..usize::from(teams))
                .filter(|&t| fill[t] + sizes[k] <= team_size)
                .min_by(|&x, &y| tsum[x].total_cmp(&tsum[y]))?;
            fill[t] += sizes[k];
            tsum[t] += sums[k];
            team_of[k] = t as u8;
        }
        Some(team_of)
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
