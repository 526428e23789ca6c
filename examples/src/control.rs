//! The control plane: matchmaking, the fleet controller, failover, autoscaling and SLOs,
//! run by one thread (the matchmaking leader's, in a multi-process session) as a loop of
//! passes, one every `matchmaking_interval_ms`.
//!
//! Each pass of [`ControlPlane::run`] runs these phases, in this order:
//!
//! 1. [`handle_events`](ControlPlane::handle_events): the bots' tickets (refused when the
//!    player is banned or the session drains), finished and aborted matches (ratings, void
//!    seats), and the sync nodes' progress for failover.
//! 2. [`read_heartbeats`](ControlPlane::read_heartbeats): the game servers' heartbeats off
//!    the fleet socket, into the matchmaker's cluster records.
//! 3. [`run_failover`](ControlPlane::run_failover): region health from the sync links,
//!    failover decisions (acted-on reconnect offers), routing applied to the matchmaker.
//! 4. The matchmaker's tick (not while draining): the clusters' own ticks (a silent server
//!    turns Unhealthy) and one matchmaking pass.
//! 5. [`reconcile_fleet`](ControlPlane::reconcile_fleet): real endpoints started and stopped
//!    to follow the records, and the matches on servers found dead aborted.
//! 6. [`place_matches`](ControlPlane::place_matches): every new match gets connect tokens for
//!    its players and a `Host` command for its region.
//! 7. [`every_second`](ControlPlane::every_second): autoscaling, SLO evaluation and the
//!    leaderboard watch, once a second.
//! 8. [`publish_view`](ControlPlane::publish_view): the counters the outside reads
//!    (progress lines, chaos checks).
//!
//! When the session stops, [`finish`](ControlPlane::finish) turns the counters into a
//! [`ControlOutcome`] for the report.
//!
//! The fleet controller learns the game servers' state only from their heartbeats (UDP, as
//! they would arrive over a network): where a server listens, that it is alive and Ready.
//! A server that stops sending (crashed, partitioned) is found by its silence, never by
//! asking the region that runs it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pvp_core::ids::{MatchId, PlayerId, RegionId, ServerId};
use pvp_global::cluster::ServerCounts;
use pvp_global::failover::{
    FailoverDecision, HealthPolicy, LatencyMatrix, PlannerConfig, RegionAvailability, RegionFailover,
    RegionHealth,
};
use pvp_global::matchmaking::{GlobalMatchmaking, MatchOutcome, MatchRequest, MatchResult, RequestError};
use pvp_net::netcode::{IssuerConfig, SessionGrant, SessionUserData, TokenIssuer};
use pvp_ops::metrics::MetricsRegistry;
use pvp_ops::scale::{AutoScaler, FleetStatus, ScalingPolicy, TargetTracking};
use pvp_ops::slo::{MonitorConfig, RegistrySli, SloMonitor, seed_slos};

use crate::bots::home_of;
use crate::config::GAME_MODE;
use crate::fleet::{FleetKey, Heartbeat, ServerPhase};

/// The SLO monitor's source: the registry, with each reading of the in-region latency SLI
/// (one per 1 s evaluation) noted for the report's slice-by-slice view, so the histogram is
/// read once per slice.
struct SliceLog {
    inner: RegistrySli,
    /// Session time of the evaluation in progress.
    at: Duration,
    /// (slices with data, slices over the SLI's threshold, worst p99 and when).
    slices: (u64, u64, Option<(f64, f64)>),
    /// The latency SLI was read before.
    started: bool,
}

impl pvp_ops::SliSource for SliceLog {
    fn read_sli(
        &mut self,
        sli: &pvp_ops::slo::Sli,
    ) -> Result<pvp_ops::slo::SliReading, pvp_ops::SourceError> {
        let r = self.inner.read_sli(sli);
        if let (
            pvp_ops::slo::Sli::QuantileBelow { histogram, threshold, .. },
            Ok(pvp_ops::slo::SliReading::Quantile(Some(q))),
        ) = (sli, &r)
        {
            // The first reading covers everything before it, not a slice: the monitor weighs
            // it zero seconds, and this view skips it.
            let first = histogram == pvp_ops::slo::names::LATENCY_SECONDS
                && !std::mem::replace(&mut self.started, true);
            if histogram == pvp_ops::slo::names::LATENCY_SECONDS && !first {
                let (total, bad, worst) = &mut self.slices;
                *total += 1;
                if q > threshold {
                    *bad += 1;
                }
                if worst.is_none_or(|(w, _)| *q > w) {
                    *worst = Some((*q, self.at.as_secs_f64()));
                }
            }
        }
        r
    }
}

/// A heartbeat sent longer ago than this proves nothing about the server now (replays,
/// clock skew between hosts is far below it).
const HEARTBEAT_MAX_AGE: Duration = Duration::from_secs(5);
use crate::region::hist;
use crate::report::SloLine;
use crate::session::{BotCommand, ControlEvent, RegionCommand, Shared, TicketAsk, lock};

/// What the control plane hands back when it stops.
#[derive(Debug)]
pub(crate) struct ControlOutcome {
    /// Tickets of bots still seated in a running match (refused; they ask again).
    pub(crate) tickets_while_seated: u64,
    /// The latency SLO's 1-second slices: (slices with data, slices over 20 ms, the worst
    /// slice's p99 in seconds and when it was, seconds into the session).
    pub(crate) latency_slices: (u64, u64, Option<(f64, f64)>),
    pub(crate) mm: pvp_global::matchmaking::MatchmakingStats,
    pub(crate) mm_wait_ms: Histogram<u64>,
    pub(crate) matches_made: Vec<u64>,
    pub(crate) cross_region: u64,
    pub(crate) over_limit: u64,
    pub(crate) finished: u64,
    pub(crate) aborted_crash: u64,
    pub(crate) aborted_no_show: u64,
    pub(crate) ticket_errors: u64,
    /// Second tickets of players already queued, after a takeover (elected leaders only).
    pub(crate) duplicate_tickets: u64,
    pub(crate) scale_up: Vec<u64>,
    pub(crate) scale_down: Vec<u64>,
    pub(crate) servers: Vec<ServerCounts>,
    pub(crate) slo: Vec<SloLine>,
    pub(crate) ratings_updated: u64,
    pub(crate) top_changes: u64,
    pub(crate) reconnect_offers: u64,
    pub(crate) stranded: u64,
    pub(crate) failover_rejected: u64,
    /// Datagrams on the fleet socket that were not heartbeats of a started server.
    pub(crate) fleet_dropped: u64,
    /// Tickets refused because the player is banned.
    pub(crate) bans_refused_tickets: u64,
    /// Reconnect offers turned into a void assignment a bot acted on.
    pub(crate) reconnects_sent: u64,
    /// Well-formed heartbeats of servers not (or no longer) in the fleet.
    pub(crate) stale_heartbeats: u64,
    pub(crate) servers_started: Vec<u64>,
    pub(crate) servers_stopped: Vec<u64>,
    /// Spearman correlation of hidden skill and final rating over every bot that played.
    pub(crate) skill_spearman: Option<f64>,
}

/// The control plane's state between passes; [`ControlPlane::run`] is the thread's body.
pub(crate) struct ControlPlane {
    sh: Arc<Shared>,
    /// The regions' ids, in config order (index = region index everywhere else).
    ids: Vec<RegionId>,
    interval: Duration,
    max_latency: Duration,
    mm: GlobalMatchmaking,
    /// Where the game servers' heartbeats arrive (non-blocking).
    fleet: std::net::UdpSocket,
    hb_buf: [u8; 64],
    /// What server heartbeats must be sealed with.
    fleet_key: FleetKey,
    /// Per server: the send time of the newest heartbeat taken (older ones are replays).
    hb_last: HashMap<ServerId, u64>,
    /// Issues the netcode connect tokens of placed players.
    issuer: TokenIssuer,
    /// `None` with a single region: nothing to fail over to.
    failover: Option<RegionFailover>,
    last_health: Vec<Option<RegionHealth>>,
    /// Per region: the latest `heard_ms` any other region reported for it.
    last_heard: Vec<u64>,
    scalers: Vec<Option<AutoScaler>>,
    slo: SloMonitor,
    sli: SliceLog,
    out: ControlOutcome,
    /// Matches placed and not yet finished or aborted.
    running: HashMap<MatchId, MatchResult>,
    /// Every player that was placed in a match that finished.
    played: HashSet<PlayerId>,
    // The fleet controller: which servers were started (so each record gets one real
    // endpoint), where each listens (learnt from its heartbeats), and what it last said.
    launched: Vec<HashSet<ServerId>>,
    /// Players seated in a running match: a ticket from one of them is refused (one match
    /// at a time), until the match ends or failover moves them.
    seated: HashMap<PlayerId, MatchId>,
    server_addrs: HashMap<ServerId, SocketAddr>,
    /// Per home region: tickets queued and not yet placed (autoscaling demand).
    queued_home: Vec<i64>,
    /// The event buffer, reused every pass.
    events: Vec<ControlEvent>,
    last_slow: Instant,
    /// The leaderboard's top 10 at the last once-a-second pass.
    top: Vec<PlayerId>,
    wait_metric: metrics::Histogram,
    /// An elected leader's right to act ([`crate::election`]): the passes stop as soon as it
    /// no longer holds. `None`: a fixed leader.
    fence: Option<Arc<crate::election::Fence>>,
}

impl ControlPlane {
    /// Everything the control plane sets up before its first pass.
    pub(crate) fn new(
        sh: Arc<Shared>,
        mut mm: GlobalMatchmaking,
        fleet: std::net::UdpSocket,
        registry: MetricsRegistry,
    ) -> Self {
        let cfg = &sh.config;
        let n = cfg.regions.len();
        let ids: Vec<RegionId> = cfg.regions.iter().map(|r| r.id).collect();
        let interval = Duration::from_millis(cfg.matchmaking_interval_ms);
        let max_latency = Duration::from_millis(u64::from(cfg.max_latency_ms));
        mm.reserve(cfg.players as usize);
        // Failover runs on the wall clock (Unix time), which every process of a session shares.
        let wall0 = Duration::from_millis(sh.unix_ms(Instant::now()));
        let mut latency = LatencyMatrix::default();
        for o in &cfg.regions {
            for (t, ms) in &o.player_rtt_ms {
                latency.set(o.id, *t, Duration::from_millis(u64::from(*ms)));
            }
        }
        let mut planner = PlannerConfig::default();
        planner.default_latency_limit = max_latency;
        let mut failover =
            RegionFailover::new(HealthPolicy::default(), planner, latency).ok().filter(|_| n > 1);
        if let Some(f) = failover.as_mut() {
            for r in &ids {
                let _ = f.add_region(wall0, *r);
            }
        }
        let last_health: Vec<Option<RegionHealth>> = vec![Some(RegionHealth::Healthy); n];
        let last_heard = vec![0u64; n];
        let scalers: Vec<Option<AutoScaler>> = (0..n)
            .map(|_| {
                AutoScaler::new(
                    ScalingPolicy::TargetTracking(TargetTracking::new(cfg.target_players_per_server)),
                    cfg.min_servers,
                    cfg.max_servers,
                )
                .ok()
            })
            .collect();
        let mut slo = SloMonitor::new(MonitorConfig::default());
        for s in seed_slos() {
            let _ = slo.add_slo(s);
        }
        let sli = SliceLog {
            inner: RegistrySli::new(registry),
            at: Duration::ZERO,
            slices: (0, 0, None),
            started: false,
        };
        let out = ControlOutcome {
            tickets_while_seated: 0,
            latency_slices: (0, 0, None),
            mm: mm.stats(),
            mm_wait_ms: hist(),
            matches_made: vec![0; n],
            cross_region: 0,
            over_limit: 0,
            finished: 0,
            aborted_crash: 0,
            aborted_no_show: 0,
            ticket_errors: 0,
            duplicate_tickets: 0,
            scale_up: vec![0; n],
            scale_down: vec![0; n],
            servers: Vec::new(),
            slo: Vec::new(),
            ratings_updated: 0,
            top_changes: 0,
            reconnect_offers: 0,
            stranded: 0,
            failover_rejected: 0,
            fleet_dropped: 0,
            bans_refused_tickets: 0,
            reconnects_sent: 0,
            stale_heartbeats: 0,
            servers_started: vec![0; n],
            servers_stopped: vec![0; n],
            skill_spearman: None,
        };
        let _ = fleet.set_nonblocking(true);
        let issuer = {
            let mut c = IssuerConfig::new(sh.protocol_id, sh.server_key.clone());
            c.token_lifetime = mm.config().grant_ttl;
            // A session silent this long is over (a crashed server): the bot queues again.
            c.timeout_seconds = 3;
            TokenIssuer::new(c)
        };
        let last_slow = Instant::now();
        let wait_metric = metrics::histogram!(pvp_ops::slo::names::MATCHMAKING_WAIT_SECONDS);
        ControlPlane {
            ids,
            interval,
            max_latency,
            mm,
            fleet,
            hb_buf: [0u8; 64],
            fleet_key: FleetKey::derive(&sh.link_secret),
            hb_last: HashMap::new(),
            issuer,
            failover,
            last_health,
            last_heard,
            scalers,
            slo,
            sli,
            out,
            running: HashMap::new(),
            played: HashSet::new(),
            launched: vec![HashSet::new(); n],
            seated: HashMap::new(),
            server_addrs: HashMap::new(),
            queued_home: vec![0i64; n],
            events: Vec::new(),
            last_slow,
            top: Vec::new(),
            wait_metric,
            fence: None,
            sh,
        }
    }

    /// Makes this an elected leader's control plane: its matches carry the fence's term, and
    /// it stops at the first pass where the fence no longer holds (the lease may be gone, so
    /// another region may lead).
    pub(crate) fn with_fence(mut self, fence: Arc<crate::election::Fence>) -> Self {
        self.fence = Some(fence);
        self
    }

    /// Runs passes until the session's `control_stop`, then hands back the outcome.
    pub(crate) fn run(mut self) -> ControlOutcome {
        while !self.sh.control_stop.load(Ordering::Acquire) {
            if self.fence.as_ref().is_some_and(|f| !f.holds()) {
                break;
            }
            let tick_start = Instant::now();
            let now = tick_start.duration_since(self.sh.start);
            let draining = self.sh.draining.load(Ordering::Acquire);
            self.handle_events(now, draining);
            // Heartbeats carry their servers' clock: compare with this host's, not the session's.
            let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            self.read_heartbeats(now, wall);
            self.run_failover(now, Duration::from_millis(self.sh.unix_ms(tick_start)));
            if !draining {
                self.mm.tick(now);
            }
            self.reconcile_fleet();
            // Checked again right before handing out seats: a pass can outlive the lease.
            if self.fence.as_ref().is_some_and(|f| !f.holds()) {
                break;
            }
            self.place_matches(self.sh.unix_ms(tick_start));
            self.every_second(now, tick_start);
            self.publish_view();
            let spent = tick_start.elapsed();
            if spent < self.interval {
                std::thread::sleep(self.interval - spent);
            }
        }
        self.finish()
    }

    /// Every event the bots, regions and sync nodes sent since the last pass, in order.
    fn handle_events(&mut self, now: Duration, draining: bool) {
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        self.sh.to_control.pop_batch(&mut events, usize::MAX);
        for e in events.drain(..) {
            match e {
                ControlEvent::Ticket(ask) => self.on_ticket(ask, now, draining),
                ControlEvent::Cancel { player } => {
                    self.mm.cancel(player);
                }
                ControlEvent::SyncProgress(p) => {
                    if let Some(f) = self.failover.as_mut() {
                        let _ =
                            f.handle_sync_progress(Duration::from_millis(self.sh.unix_ms(Instant::now())), p);
                    }
                }
                ControlEvent::MatchFinished { match_id, winner, .. } => {
                    self.on_match_finished(match_id, winner)
                }
                ControlEvent::MatchAborted { region, match_id, crashed } => {
                    self.on_match_aborted(region, match_id, crashed);
                }
            }
        }
        self.events = events;
    }

    /// A bot's ticket: refused, or queued with the matchmaker.
    fn on_ticket(&mut self, ask: TicketAsk, now: Duration, draining: bool) {
        let sh = &self.sh;
        // Bans are enforced at the front: any region's applied ban list refuses.
        if sh.banned.iter().any(|b| lock(b).contains(&ask.player)) {
            self.out.bans_refused_tickets += 1;
            sh.deliver(ask.player, BotCommand::TicketFailed { player: ask.player });
            return;
        }
        if draining {
            sh.deliver(ask.player, BotCommand::TicketFailed { player: ask.player });
            return;
        }
        if self.seated.contains_key(&ask.player) {
            // Still seated in a running match (an outside client asking again, or a bot
            // whose match's end has not reached this pass yet): refused; it may ask again.
            if crate::front::is_external(ask.player) {
                self.sh.front.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            } else {
                self.out.tickets_while_seated += 1;
            }
            sh.deliver(ask.player, BotCommand::TicketFailed { player: ask.player });
            return;
        }
        let rating = self.mm.ratings().matchmaking_rating(ask.player);
        let mut req = MatchRequest::new(ask.player, rating, self.ids[ask.home], GAME_MODE)
            .max_latency(self.max_latency);
        for (r, rtt) in &ask.rtt {
            req = req.latency(*r, *rtt);
        }
        match self.mm.find_match(req, now) {
            // Bots' queued tickets count toward their region's demand (outside clients' tickets
            // are too few to matter and have no home in the bot id space).
            Ok(_) if !crate::front::is_external(ask.player) => self.queued_home[ask.home] += 1,
            Ok(_) => {}
            // After a takeover a follower forwards the tickets it held while its bridge was
            // down, and its lobby asks again for every queued player: the second ticket of a
            // player already queued changes nothing (the first one is answered).
            Err(RequestError::AlreadyQueued(_))
                if self.fence.is_some() && !crate::front::is_external(ask.player) =>
            {
                self.out.duplicate_tickets += 1;
            }
            Err(_) => {
                // Refused by the matchmaker's own checks (bounds, duplicate): an outside
                // client's bad request, or a bot that queued twice.
                if crate::front::is_external(ask.player) {
                    self.sh.front.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                } else {
                    self.out.ticket_errors += 1;
                }
                sh.deliver(ask.player, BotCommand::TicketFailed { player: ask.player });
            }
        }
    }

    /// The server decided the fight: the players' ratings move.
    fn on_match_finished(&mut self, match_id: MatchId, winner: Option<u8>) {
        if let Some(r) = self.running.remove(&match_id) {
            self.played
                .extend(r.players().iter().map(|p| p.player()).filter(|p| !crate::front::is_external(*p)));
            self.end_sessions(&r);
            let o = match winner {
                Some(0) => MatchOutcome::FirstTeamWon,
                Some(_) => MatchOutcome::SecondTeamWon,
                None => MatchOutcome::Draw,
            };
            if self.mm.report_outcome(&r, o).is_ok() {
                self.out.ratings_updated += r.players().len() as u64;
                // The new ratings go into the players' profiles, written where the match ran.
                let players = r
                    .players()
                    .iter()
                    .map(|p| (p.player(), self.mm.ratings().matchmaking_rating(p.player()).round() as i64))
                    .collect();
                if let Some(ri) = self.ids.iter().position(|x| *x == r.region()) {
                    self.sh.to_region[ri].push(RegionCommand::Ratings { players });
                }
            }
        }
        self.out.finished += 1;
    }

    /// The region dropped the match (its server crashed, or players never came).
    fn on_match_aborted(&mut self, region: usize, match_id: MatchId, crashed: bool) {
        self.sh.record(crate::history::Event::Aborted { match_id: match_id.get() });
        if let Some(r) = self.running.remove(&match_id) {
            void_seats(&self.sh, &r);
            self.end_sessions(&r);
        }
        let _ = self.mm.release_match(self.ids[region], match_id);
        if crashed {
            self.out.aborted_crash += 1;
        } else {
            self.out.aborted_no_show += 1;
        }
    }

    /// Tells failover that the players of `r` are no longer in a match.
    fn end_sessions(&mut self, r: &MatchResult) {
        for p in r.players() {
            if self.seated.get(&p.player()) == Some(&r.match_id()) {
                self.seated.remove(&p.player());
            }
        }
        if let Some(f) = self.failover.as_mut() {
            for p in r.players() {
                let _ = f.handle_session_ended(p.player());
            }
        }
    }

    /// Server heartbeats, as they arrive over the network; a server that stops sending
    /// (crashed, partitioned) turns Unhealthy in the cluster's own tick.
    fn read_heartbeats(&mut self, now: Duration, wall: Duration) {
        let n = self.ids.len();
        for _ in 0..4_096 {
            let Ok((len, _)) = self.fleet.recv_from(&mut self.hb_buf) else { break };
            // Not sealed with the fleet key (junk, a forgery, a stranger's fleet): dropped input.
            let Some((hb, sent)) = Heartbeat::open(&self.hb_buf[..len], &self.fleet_key)
                .ok()
                .filter(|(h, _)| usize::from(h.region) < n)
            else {
                self.out.fleet_dropped += 1;
                continue;
            };
            let ri = usize::from(hb.region);
            if !self.launched[ri].contains(&hb.server) {
                // A server this controller let go (its last heartbeats), or never started.
                self.out.stale_heartbeats += 1;
                continue;
            }
            // A replay (or one overtaken on the way) says nothing new; one sent more than
            // HEARTBEAT_MAX_AGE ago is not evidence the server is alive now.
            let wall_ms = wall.as_millis() as u64;
            if self.hb_last.get(&hb.server).is_some_and(|&t| sent <= t)
                || sent.saturating_add(HEARTBEAT_MAX_AGE.as_millis() as u64) < wall_ms
            {
                self.out.stale_heartbeats += 1;
                continue;
            }
            self.hb_last.insert(hb.server, sent);
            self.server_addrs.insert(hb.server, SocketAddr::V4(hb.addr));
            if hb.phase != ServerPhase::Shutdown {
                if let Some(c) = self.mm.cluster_mut(self.ids[ri]) {
                    let _ = c.heartbeat(hb.server, now);
                }
            }
        }
    }

    /// Region health from the sync links: a region is heard when any other region heard it.
    /// RegionFailover turns health and sync progress into routing, and marks the
    /// matchmaker's regions Down / back (a returning region first catches up).
    fn run_failover(&mut self, now: Duration, wall: Duration) {
        let n = self.ids.len();
        let Some(f) = self.failover.as_mut() else { return };
        for j in 0..n {
            let heard = (0..n)
                .filter(|i| *i != j)
                .map(|i| self.sh.heard_ms[i][j].load(Ordering::Relaxed))
                .max()
                .unwrap_or(0);
            if heard > self.last_heard[j] {
                self.last_heard[j] = heard;
                let _ = f.handle_heartbeat(wall, self.ids[j]);
            }
        }
        f.handle_timeout(wall);
        while let Some(d) = self.failover.as_mut().and_then(RegionFailover::poll_decision) {
            if let Some(w) = self.on_decision(&d) {
                lock(&self.sh.view).decisions.push((now, w));
            }
        }
        let Some(f) = self.failover.as_mut() else { return };
        let _ = f.apply_to(&mut self.mm);
        let mut v = lock(&self.sh.view);
        for (j, r) in self.ids.iter().enumerate() {
            let h = f.health(*r);
            if h != self.last_health[j] {
                if let (Some(from), Some(to)) = (self.last_health[j], h) {
                    v.transitions.push((now, *r, from, to));
                }
                self.last_health[j] = h;
            }
        }
        v.serving =
            self.ids.iter().map(|r| f.availability(*r) == Some(RegionAvailability::Serving)).collect();
    }

    /// Acts on one failover decision; returns the line for the view's decision log, if any.
    fn on_decision(&mut self, d: &FailoverDecision) -> Option<String> {
        match d {
            FailoverDecision::RegionDown { region, .. } => {
                Some(format!("{region} down: new matches routed away"))
            }
            FailoverDecision::AwaitingCatchUp { region } => Some(format!("{region} back, catching up")),
            FailoverDecision::RegionRestored { region, .. } => {
                Some(format!("{region} restored: caught up, takes matches again"))
            }
            FailoverDecision::RouteChanged { origin, to } => Some(format!(
                "default route of {origin} players -> {}",
                to.map_or("none".into(), |t| t.to_string())
            )),
            &FailoverDecision::OfferReconnect { player, .. } => {
                // Acted on: the player leaves the match in the region that went down
                // and queues again; the matchmaker routes it to a serving region.
                self.out.reconnect_offers += 1;
                let seat =
                    self.running.iter().find(|(_, r)| r.players().iter().any(|p| p.player() == player));
                if let Some((m, _)) = seat {
                    self.sh.deliver(player, BotCommand::AssignmentVoid { player, match_id: *m });
                    self.out.reconnects_sent += 1;
                    // Free to queue again, into a serving region.
                    self.seated.remove(&player);
                }
                None
            }
            FailoverDecision::PlayerStranded { .. } => {
                self.out.stranded += 1;
                None
            }
        }
    }

    /// Makes the real fleet follow the records, then aborts the matches on servers the
    /// controller found dead.
    fn reconcile_fleet(&mut self) {
        self.reconcile();
        self.abort_matches_on_dead_servers();
    }

    /// Makes the real fleet follow the records: every server record without an endpoint gets
    /// one started (it stays Starting until its first heartbeat), and every endpoint whose
    /// record is gone (scaled down, or Unhealthy and removed) is stopped.
    fn reconcile(&mut self) {
        for (i, r) in self.ids.iter().enumerate() {
            let Some(c) = self.mm.cluster(*r) else { continue };
            for s in c.servers() {
                if self.launched[i].insert(s.id()) {
                    self.out.servers_started[i] += 1;
                    self.sh.to_region[i].push(RegionCommand::StartServer { server: s.id() });
                }
            }
            let gone: Vec<ServerId> =
                self.launched[i].iter().copied().filter(|id| c.server(*id).is_none()).collect();
            for id in gone {
                self.launched[i].remove(&id);
                self.server_addrs.remove(&id);
                self.out.servers_stopped[i] += 1;
                self.sh.to_region[i].push(RegionCommand::StopServer { server: id });
            }
        }
    }

    /// Matches on servers the controller found dead (Unhealthy, or already removed).
    fn abort_matches_on_dead_servers(&mut self) {
        if !self.running.values().any(|r| !server_alive(&self.mm, r)) {
            return;
        }
        let dead: Vec<MatchId> =
            self.running.iter().filter(|(_, r)| !server_alive(&self.mm, r)).map(|(m, _)| *m).collect();
        for m in dead {
            if let Some(r) = self.running.remove(&m) {
                self.sh.record(crate::history::Event::Aborted { match_id: m.get() });
                void_seats(&self.sh, &r);
                self.end_sessions(&r);
                let _ = self.mm.release_match(r.region(), m);
                self.out.aborted_crash += 1;
            }
        }
    }

    /// Every match the matchmaker made: seats, connect tokens, and the region told to host.
    fn place_matches(&mut self, unix_ms: u64) {
        while let Some(r) = self.mm.poll_match() {
            self.place(r, unix_ms);
        }
    }

    /// Places one match: each player gets a connect token for the server, the region a
    /// `Host` command.
    fn place(&mut self, r: MatchResult, unix_ms: u64) {
        let sh = &self.sh;
        let (ids, max_latency) = (&self.ids, self.max_latency);
        let n = ids.len();
        let Some(ri) = ids.iter().position(|x| *x == r.region()) else { return };
        self.out.matches_made[ri] += 1;
        let mut cross = false;
        let mut all_home_w = true;
        let watch = lock(&sh.view).reroute_watch;
        let server = r.server();
        // The address the server reported itself (it is Ready, so it has heartbeated).
        let Some(&server_addr) = self.server_addrs.get(&server.id) else {
            let _ = self.mm.release_match(ids[ri], r.match_id());
            self.out.ticket_errors += 1;
            return;
        };
        let unix_now = Duration::from_millis(unix_ms);
        let mut seats = Vec::with_capacity(r.players().len());
        for p in r.players() {
            let (home, _) = home_of(p.player());
            cross |= home != ri;
            if p.latency() > max_latency {
                self.out.over_limit += 1;
            }
            let _ = self.out.mm_wait_ms.record((p.waited().as_millis() as u64).max(1));
            self.wait_metric.record(p.waited().as_secs_f64());
            if let Some((w, _)) = watch {
                all_home_w &= home == w;
            }
            if let Some(q) = self.queued_home.get_mut(home) {
                *q -= 1;
            }
            seats.push((p.player(), p.team(), p.latency()));
            let grant = SessionGrant {
                client_id: p.player().get(),
                server_addresses: vec![server_addr],
                user_data: SessionUserData {
                    match_id: r.match_id(),
                    player: p.player(),
                    team: p.team(),
                    layered: false,
                    game_data: Vec::new(),
                },
            };
            let token = self.issuer.token(unix_now, &grant).ok().and_then(|t| t.to_bytes().ok());
            match token {
                Some(token) => sh.deliver(
                    p.player(),
                    BotCommand::Assigned {
                        player: p.player(),
                        match_id: r.match_id(),
                        region: ri,
                        server: server_addr,
                        token: token as Box<[u8]>,
                    },
                ),
                None => self.out.ticket_errors += 1,
            }
        }
        if cross {
            self.out.cross_region += 1;
        }
        // Rerouted: a match of only the watched region's players, placed elsewhere.
        if watch.is_some_and(|(w, _)| all_home_w && ri != w) {
            let mut v = lock(&sh.view);
            if v.reroute_after.is_none() {
                if let Some((_, since)) = v.reroute_watch {
                    v.reroute_after = Some(since.elapsed());
                }
            }
        }
        if let Some(f) = self.failover.as_mut() {
            // Each player's origin is their home region; their limit the session's.
            let _ = f.handle_match(&r, |p| Some((ids[home_of(p).0.min(n - 1)], max_latency)));
        }
        let term = self.fence.as_ref().map_or(0, |f| f.term());
        sh.record(crate::history::Event::Assign {
            term,
            region: ids[ri].to_string(),
            match_id: r.match_id().get(),
            players: seats.iter().map(|s| s.0.get()).collect(),
        });
        sh.to_region[ri].push(RegionCommand::Host {
            term,
            match_id: r.match_id(),
            server: server.id,
            players: seats,
        });
        for p in r.players() {
            self.seated.insert(p.player(), r.match_id());
        }
        self.running.insert(r.match_id(), r);
    }

    /// Once a second: autoscaling, SLOs, the leaderboard watch.
    fn every_second(&mut self, now: Duration, tick_start: Instant) {
        if tick_start.duration_since(self.last_slow) < Duration::from_secs(1) {
            return;
        }
        self.last_slow = tick_start;
        let t = Instant::now();
        self.autoscale(now, t);
        self.sli.at = now;
        self.slo.evaluate(t, &mut self.sli);
        self.watch_leaderboard();
    }

    /// Each region's autoscaler sizes its fleet records for the players in matches and the
    /// tickets queued from that region; `reconcile` starts and stops the real servers.
    fn autoscale(&mut self, now: Duration, t: Instant) {
        for (i, r) in self.ids.iter().enumerate() {
            let Some(c) = self.mm.cluster_mut(*r) else { continue };
            let counts = c.server_counts();
            let fleet = FleetStatus::new(counts.ready, counts.allocated, counts.starting);
            let demand = c.current_player_count() as f64 + self.queued_home[i].max(0) as f64;
            let Some(s) = self.scalers[i].as_mut() else { continue };
            if let Ok(Some(d)) = s.handle_total(t, demand, fleet) {
                if d.to > d.from {
                    let added = c.scale_up(d.to - d.from, now);
                    if added > 0 {
                        self.out.scale_up[i] += 1;
                    }
                } else if d.remove_ready > 0 {
                    let removed = c.scale_down(d.remove_ready);
                    if removed > 0 {
                        self.out.scale_down[i] += 1;
                    }
                }
            }
            metrics::gauge!("pvp_examples_servers", "region" => r.to_string())
                .set(f64::from(counts.starting + counts.ready + counts.allocated + counts.draining));
        }
    }

    /// Leaderboard moves: the top 10 by rating changed.
    fn watch_leaderboard(&mut self) {
        let mut best: Vec<(PlayerId, f64)> = Vec::new();
        for (home, count) in self.sh.config.bots_per_region().iter().enumerate() {
            for i in (0..*count as usize).step_by(((*count as usize) / 200).max(1)) {
                let p = crate::bots::player_id(home, i);
                best.push((p, self.mm.ratings().matchmaking_rating(p)));
            }
        }
        best.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let new_top: Vec<PlayerId> = best.iter().take(10).map(|x| x.0).collect();
        if new_top != self.top {
            self.out.top_changes += 1;
            self.top = new_top;
        }
    }

    /// What the outside reads between passes (progress lines, chaos checks).
    fn publish_view(&self) {
        let mut v = lock(&self.sh.view);
        v.servers = self.ids.iter().filter_map(|r| self.mm.cluster(*r).map(|c| c.server_counts())).collect();
        v.health = self.ids.iter().map(|r| self.failover.as_ref().and_then(|f| f.health(*r))).collect();
        v.matches_made = self.out.matches_made.clone();
        v.running = self.running.len() as u64;
        v.queued = self.mm.queued_players() as u64;
        v.finished_results = self.out.finished;
        v.aborted_crash = self.out.aborted_crash;
    }

    /// The outcome: the matchmaker's and failover's stats, the skill/rating correlation,
    /// the final fleet and the SLOs' state.
    fn finish(self) -> ControlOutcome {
        if self.fence.is_some() {
            // An elected leader's term ended: what it published is no longer anyone's view
            // (a session that drains must not wait for this term's matches).
            let mut v = lock(&self.sh.view);
            v.running = 0;
            v.queued = 0;
            v.health.clear();
        }
        let mut out = self.out;
        out.latency_slices = self.sli.slices;
        let mm = self.mm;
        let slo = self.slo;
        out.mm = mm.stats();
        out.failover_rejected = self.failover.as_ref().map_or(0, |f| f.stats().rejected);
        // How well ratings track the skill the game servers never saw.
        let (skills, ratings): (Vec<f64>, Vec<f64>) = self
            .played
            .iter()
            .map(|p| {
                (crate::bots::hidden_skill(self.sh.config.seed, *p), mm.ratings().matchmaking_rating(*p))
            })
            .unzip();
        out.skill_spearman = crate::report::spearman(&skills, &ratings);
        out.servers = self.ids.iter().filter_map(|r| mm.cluster(*r).map(|c| c.server_counts())).collect();
        let t = Instant::now();
        out.slo = slo
            .slos()
            .map(|s| s.name().to_string())
            .collect::<Vec<_>>()
            .into_iter()
            .map(|name| {
                let st = slo.status(&name, t);
                SloLine {
                    budget_remaining: st.as_ref().and_then(|s| s.budget_remaining),
                    firing: st.as_ref().map_or(0, |s| s.firing.len()),
                    name,
                }
            })
            .collect();
        out
    }
}

/// Tells every player of `r` that its seat is void.
fn void_seats(sh: &Shared, r: &MatchResult) {
    for p in r.players() {
        let player = p.player();
        sh.deliver(player, BotCommand::AssignmentVoid { player, match_id: r.match_id() });
    }
}

/// Whether the server hosting `r` is still usable in the controller's view.
fn server_alive(mm: &GlobalMatchmaking, r: &MatchResult) -> bool {
    mm.cluster(r.region())
        .and_then(|c| c.server(r.server().id))
        .is_some_and(|s| s.state() != pvp_global::cluster::ServerState::Unhealthy)
}
