//! The bare planner simulation: kr, jp and sg as agents holding `LocalCoordinator` leases
//! (keep-alives every 500 ms, a 2 s TTL) and sending heartbeats every 250 ms to a
//! [`RegionHealthTracker`] that feeds a [`FailoverPlanner`]; players arrive with per-region
//! latency limits, take reconnect offers and leave. kr is partitioned 20-21 s in for 20 s under
//! match load, then healed; its catch-up is modelled as a 0.5-3 s delay after the planner asks.
//!
//! One seed = one run; the same seed replays exactly. Nothing sleeps: time is a `Duration`
//! advanced in [`STEP`]s. [`run`] returns what the run observed ([`SimReport`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::coord::{ChangeKind, CoordError, LeaseId, LocalCoordinator, WatchScope};
use crate::failover::{
    FailoverDecision, FailoverPlanner, HealthPolicy, LatencyMatrix, PlannerConfig, PlayerSession,
    RegionAvailability, RegionHealthTracker,
};
use pvp_core::ids::{PlayerId, RegionId, ServerId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Virtual time advanced per simulation step.
pub const STEP: Duration = Duration::from_millis(50);
/// Lease TTL of every region.
pub const LEASE_TTL: Duration = Duration::from_secs(2);
/// How often a region keeps its lease alive.
pub const KEEP_ALIVE_EVERY: Duration = Duration::from_millis(500);
/// How often a region sends a data-plane heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);
const JOB: &str = "leaderboard";

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// What one run observed.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// The seed of the run.
    pub seed: u64,
    /// When kr was partitioned.
    pub partition_at: Duration,
    /// When the partition healed.
    pub heal_at: Duration,
    /// Partition -> planner's RegionDown(kr).
    pub detection: Option<Duration>,
    /// Partition -> default route of kr players moved off kr.
    pub reroute: Option<Duration>,
    /// Partition -> last kr session offered a reconnect (or stranded).
    pub evacuation: Option<Duration>,
    /// When the catch-up signal was fed in.
    pub caught_up_at: Option<Duration>,
    /// When routing returned to kr.
    pub restored_at: Option<Duration>,
    /// New matches placed.
    pub placements: u64,
    /// Placements over the player's latency limit (must be 0).
    pub over_limit: u64,
    /// kr placements after the partition and before its detection.
    pub kr_placements_before_detection: u64,
    /// kr placements between detection and restore (must be 0).
    pub kr_placements_while_unavailable: u64,
    /// kr placements after the restore.
    pub kr_placements_after_restore: u64,
    /// Reconnect offers made.
    pub offers: u64,
    /// Reconnect offers to a region over the player's latency limit (must be 0).
    pub offers_over_limit: u64,
    /// Players told that no region fits.
    pub stranded: u64,
    /// Reconnect offers taken by their client.
    pub reconnects_completed: u64,
    /// Tickets that waited over 60 s without a region and gave up.
    pub abandoned_tickets: u64,
    /// Sessions on kr at detection that were neither offered a move nor stranded (must be 0).
    pub unhandled_kr_sessions: u64,
    /// Steps in which two agents believed they led the global job (must be 0).
    pub split_brain_steps: u64,
    /// Times the global job changed leader.
    pub leader_changes: u64,
}

struct Agent {
    region: RegionId,
    lease: Option<LeaseId>,
    /// Send time of the last acknowledged keep-alive: the agent's own belief in its lease.
    believed_until: Duration,
    leads: bool,
    next_keep_alive: Duration,
    next_heartbeat: Duration,
}

struct Ticket {
    player: PlayerId,
    origin: RegionId,
    limit: Duration,
    since: Duration,
}

/// kr, jp and sg.
pub fn regions() -> [RegionId; 3] {
    ["kr", "jp", "sg"].map(|r| RegionId::new(r).expect("valid"))
}

/// RTTs between the regions: 8 ms inside one, kr-jp 35 ms, kr-sg 75 ms, jp-sg 70 ms.
pub fn latency() -> LatencyMatrix {
    let [kr, jp, sg] = regions();
    let mut m = LatencyMatrix::default();
    m.set(kr, kr, ms(8));
    m.set(jp, jp, ms(8));
    m.set(sg, sg, ms(8));
    m.set_symmetric(kr, jp, ms(35));
    m.set_symmetric(kr, sg, ms(75));
    m.set_symmetric(jp, sg, ms(70));
    m
}

/// Runs one seeded scenario: steady load, kr partitioned ~20 s in for 20 s, then healed.
pub fn run(seed: u64) -> SimReport {
    let mut rng = SmallRng::seed_from_u64(seed);
    let [kr, jp, sg] = regions();
    let all = [kr, jp, sg];
    let matrix = latency();
    let partition_at = ms(20_000 + rng.random_range(0..1000));
    let heal_at = partition_at + ms(20_000);
    let end = heal_at + ms(20_000);
    let mut report = SimReport { seed, partition_at, heal_at, ..Default::default() };

    let mut coord = LocalCoordinator::default();
    let watch = coord.watch(&WatchScope::Regions).expect("watch");
    let mut health = RegionHealthTracker::new(HealthPolicy::default()).expect("policy");
    let mut planner = FailoverPlanner::new(PlannerConfig::default(), matrix.clone());
    let mut now = Duration::ZERO;
    let mut agents: Vec<Agent> = all
        .iter()
        .map(|&region| Agent {
            region,
            lease: None,
            believed_until: Duration::ZERO,
            leads: false,
            next_keep_alive: ms(rng.random_range(0..500)),
            next_heartbeat: ms(rng.random_range(0..250)),
        })
        .collect();
    for a in &mut agents {
        let lease = coord.grant_lease(now, LEASE_TTL).expect("lease");
        coord.announce_region(now, a.region, lease).expect("announce");
        a.lease = Some(lease);
        a.believed_until = now + LEASE_TTL;
        health.add_region(now, a.region).expect("add");
        planner.add_region(a.region).expect("add");
    }
    // kr leads the global job first.
    if let Some(l) = agents[0].lease {
        agents[0].leads = coord.campaign(now, JOB, kr, l).expect("campaign").won;
    }

    let mut next_player = 1u64;
    let mut waiting: VecDeque<Ticket> = VecDeque::new();
    let mut ends: BTreeMap<Duration, Vec<PlayerId>> = BTreeMap::new();
    let mut in_flight_heartbeats: Vec<(Duration, RegionId)> = Vec::new();
    let mut pending_reconnects: Vec<(Duration, PlayerId, RegionId)> = Vec::new();
    let mut catch_up_due: Option<Duration> = None;
    let mut kr_sessions_at_risk: BTreeSet<PlayerId> = BTreeSet::new();
    let mut handled: BTreeSet<PlayerId> = BTreeSet::new();
    let mut last_leader: Option<RegionId> = Some(kr);

    while now < end {
        now += STEP;
        let partitioned = |r: RegionId, t: Duration| r == kr && t >= partition_at && t < heal_at;

        // Region agents: keep-alives to the coordinator, heartbeats to the observers.
        for a in &mut agents {
            if now >= a.next_keep_alive {
                a.next_keep_alive += KEEP_ALIVE_EVERY;
                if !partitioned(a.region, now) {
                    let renewed = a.lease.map(|l| coord.keep_alive(now, l));
                    match renewed {
                        Some(Ok(ttl)) => a.believed_until = now + ttl,
                        Some(Err(CoordError::LeaseNotFound(_))) | None => {
                            a.leads = false;
                            let lease = coord.grant_lease(now, LEASE_TTL).expect("lease");
                            coord.announce_region(now, a.region, lease).expect("announce");
                            a.lease = Some(lease);
                            a.believed_until = now + LEASE_TTL;
                        }
                        Some(Err(e)) => panic!("keep-alive: {e}"),
                    }
                    if let Some(l) = a.lease {
                        a.leads = coord.campaign(now, JOB, a.region, l).expect("campaign").won;
                    }
                }
            }
            if now >= a.next_heartbeat {
                a.next_heartbeat += HEARTBEAT_EVERY;
                if !partitioned(a.region, now) {
                    in_flight_heartbeats.push((now + ms(rng.random_range(0..40)), a.region));
                }
            }
        }
        // No split brain: at most one agent believes it leads with a valid lease.
        let believers = agents.iter().filter(|a| a.leads && now < a.believed_until).count();
        if believers > 1 {
            report.split_brain_steps += 1;
        }
        let leader = coord.leader(now, JOB).expect("leader");
        if leader != last_leader && leader.is_some() {
            report.leader_changes += 1;
        }
        last_leader = leader;

        // Observers: heartbeats, request outcomes, lease changes.
        in_flight_heartbeats.retain(|&(at, region)| {
            if at <= now {
                health.handle_heartbeat(now, region).expect("tracked");
                false
            } else {
                true
            }
        });
        for r in all {
            let n = rng.random_range(2..6u64);
            let failed = if partitioned(r, now) { n } else { u64::from(rng.random_bool(0.01)) };
            health.handle_requests(now, r, n - failed.min(n), failed.min(n)).expect("tracked");
        }
        coord.handle_timeout(now);
        while let Some(change) = coord.poll_change(watch) {
            let change = change.expect("watch keeps up");
            health.handle_change(now, &change);
            debug_assert!(matches!(change.kind, ChangeKind::RegionUp(_) | ChangeKind::RegionDown(_)));
        }
        health.handle_timeout(now);
        while let Some(t) = health.poll_transition() {
            planner.handle_health(now, t.region, t.to).expect("tracked");
        }
        if catch_up_due.is_some_and(|due| now >= due) {
            catch_up_due = None;
            if planner.handle_caught_up(now, kr).is_ok() {
                report.caught_up_at = Some(now);
            }
        }

        // Planner decisions.
        while let Some(d) = planner.poll_decision() {
            match d {
                FailoverDecision::RegionDown { region, at }
                    if region == kr && report.detection.is_none() && at >= partition_at =>
                {
                    report.detection = Some(at - partition_at);
                    kr_sessions_at_risk = planner_sessions_in(&planner, &ends, kr);
                }
                FailoverDecision::RouteChanged { origin, to }
                    if origin == kr && to != Some(kr) && report.reroute.is_none() && now >= partition_at =>
                {
                    report.reroute = Some(now - partition_at);
                }
                FailoverDecision::RegionRestored { region, at } if region == kr => {
                    report.restored_at = Some(at);
                }
                FailoverDecision::OfferReconnect { player, from, to, .. } => {
                    report.offers += 1;
                    if let Some(s) = planner.session(player) {
                        if matrix.rtt(s.origin, to).is_none_or(|rtt| rtt > s.latency_limit) {
                            report.offers_over_limit += 1;
                        }
                    }
                    if from == kr && now >= partition_at && now < heal_at {
                        handled.insert(player);
                        report.evacuation = Some(now - partition_at);
                    }
                    pending_reconnects.push((now + ms(rng.random_range(100..1000)), player, to));
                }
                FailoverDecision::PlayerStranded { player, region } => {
                    report.stranded += 1;
                    if region == kr && now < heal_at {
                        handled.insert(player);
                        report.evacuation = Some(now - partition_at);
                    }
                }
                FailoverDecision::AwaitingCatchUp { region } if region == kr => {
                    // Anti-entropy with kr takes 0.5 to 3 s after it asked.
                    catch_up_due = Some(now + ms(rng.random_range(500..3000)));
                }
                _ => {}
            }
        }

        // Clients take reconnect offers.
        pending_reconnects.retain(|&(at, player, to)| {
            if at > now {
                return true;
            }
            if let Some(s) = planner.session(player) {
                if planner.availability(to) == Some(RegionAvailability::Serving) {
                    let moved = PlayerSession {
                        server: ServerId::new(region_index(to) * 1000 + rng.random_range(0..100)),
                        region: to,
                        ..s
                    };
                    planner.handle_session_placed(moved).expect("place");
                    report.reconnects_completed += 1;
                }
            }
            false
        });

        // Session ends.
        let due: Vec<Duration> = ends.range(..=now).map(|(t, _)| *t).collect();
        for t in due {
            for p in ends.remove(&t).unwrap_or_default() {
                let _ = planner.handle_session_ended(p);
            }
        }

        // New tickets, then matchmaking over everything waiting.
        for _ in 0..rng.random_range(0..6) {
            let origin = match rng.random_range(0..10) {
                0..4 => kr,
                4..8 => jp,
                _ => sg,
            };
            let limit = ms([30, 50, 80, 120][rng.random_range(0..4)]);
            waiting.push_back(Ticket { player: PlayerId::new(next_player), origin, limit, since: now });
            next_player += 1;
        }
        let mut still_waiting = VecDeque::new();
        while let Some(t) = waiting.pop_front() {
            match planner.route(t.origin, t.limit) {
                Some(region) => {
                    report.placements += 1;
                    if matrix.rtt(t.origin, region).is_none_or(|rtt| rtt > t.limit) {
                        report.over_limit += 1;
                    }
                    if region == kr {
                        if now >= partition_at && report.detection.is_none() {
                            report.kr_placements_before_detection += 1;
                        } else if report.detection.is_some() && report.restored_at.is_none() {
                            report.kr_placements_while_unavailable += 1;
                        } else if report.restored_at.is_some() {
                            report.kr_placements_after_restore += 1;
                        }
                    }
                    let session = PlayerSession {
                        player: t.player,
                        server: ServerId::new(region_index(region) * 1000 + rng.random_range(0..100)),
                        region,
                        origin: t.origin,
                        latency_limit: t.limit,
                    };
                    planner.handle_session_placed(session).expect("place");
                    ends.entry(now + ms(rng.random_range(5_000..30_000))).or_default().push(t.player);
                }
                None if now - t.since > ms(60_000) => report.abandoned_tickets += 1,
                None => still_waiting.push_back(t),
            }
        }
        waiting = still_waiting;
    }
    report.unhandled_kr_sessions = kr_sessions_at_risk.iter().filter(|p| !handled.contains(p)).count() as u64;
    report
}

fn region_index(r: RegionId) -> u64 {
    match r.as_str() {
        "kr" => 1,
        "jp" => 2,
        _ => 3,
    }
}

fn planner_sessions_in(
    planner: &FailoverPlanner,
    ends: &BTreeMap<Duration, Vec<PlayerId>>,
    region: RegionId,
) -> BTreeSet<PlayerId> {
    ends.values()
        .flatten()
        .copied()
        .filter(|p| planner.session(*p).is_some_and(|s| s.region == region))
        .collect()
}

/// p-th percentile (0..=100) of `values` (nearest rank).
pub fn percentile(values: &mut [Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort();
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}
