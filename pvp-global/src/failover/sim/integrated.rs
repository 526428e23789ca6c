//! The integrated failover simulation: kr, jp and sg with the real layers.
//!
//! - coordination: `LocalCoordinator` leases in virtual time (keep-alives, a watch);
//! - failure detection and failover: `RegionFailover` (health tracker + planner);
//! - matchmaking: `GlobalMatchmaking` on the reference fleet, fed tickets from players with
//!   per-region latencies and latency limits; `RegionFailover::apply_to` steers it;
//! - sync: one `CrossRegionSync` per region on a `SimCluster` (SimNetwork), every match result recorded
//!   as a replicated write in the region that hosted the match (a per-match counter key and a
//!   leaderboard point for the winner); the caught-up gate reads `SyncProgress` reports.
//!
//! kr is cut off (coordinator, heartbeats, sync network, progress reports) 20–21 s in for 20 s
//! under match load, then healed. One seed = one run ([`run`], [`IntegratedReport`]); the same
//! seed replays exactly.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::cluster::{FleetConfig, JP, KR, RegionHealth as ClusterHealth, SG};
use crate::coord::{CoordError, LeaseId, LocalCoordinator, WatchScope};
use crate::failover::{
    FailoverDecision, HealthPolicy, LatencyMatrix, PlannerConfig, RegionFailover, SyncProgress,
};
use crate::leaderboard::{GameMode as BoardMode, ScoreOperator};
use crate::matchmaking::{GameMode, GlobalMatchmaking, MatchRequest, MatchmakingConfig};
use crate::sync::{Key, LinkConfig, SimCluster, Value, WriteOp};
use pvp_core::ids::{MatchId, PlayerId, RegionId};
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
/// Sync nodes run on an epoch clock; simulation time 0 is this instant on it.
pub const EPOCH: Duration = Duration::from_secs(1_000);
/// Leaderboard of match wins, replicated with the results.
pub const WINS: BoardMode = BoardMode(1);
const REGIONS: [RegionId; 3] = [KR, JP, SG];

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// What one run observed.
#[derive(Debug, Clone, Default)]
pub struct IntegratedReport {
    /// The seed of the run.
    pub seed: u64,
    /// When kr was cut off.
    pub partition_at: Duration,
    /// When kr's coordinator, heartbeats and progress reports were restored.
    pub heal_at: Duration,
    /// When the sync network to kr healed (heal_at + 0..5 s).
    pub sync_heal_at: Duration,
    /// Partition -> `RegionDown(kr)` from the failover.
    pub detection: Option<Duration>,
    /// Partition -> matchmaking has kr marked Down (no new match can go there).
    pub reroute: Option<Duration>,
    /// Partition -> first match of a Korean player formed outside kr.
    pub first_rerouted_match: Option<Duration>,
    /// When kr came back and its catch-up started.
    pub catch_up_started: Option<Duration>,
    /// When routing returned to kr (`RegionRestored`).
    pub restored_at: Option<Duration>,
    /// Matches formed.
    pub matches: u64,
    /// Players placed in those matches.
    pub players_placed: u64,
    /// Players placed over their latency limit (must be 0).
    pub over_limit: u64,
    /// Matches of Korean players hosted outside kr while kr was out.
    pub korean_matches_rerouted: u64,
    /// kr-hosted matches formed after partition and before matchmaking skipped kr.
    pub kr_matches_before_reroute: u64,
    /// kr-hosted matches formed between the reroute and the restore (must be 0).
    pub kr_matches_while_out: u64,
    /// kr-hosted matches formed after the restore.
    pub kr_matches_after_restore: u64,
    /// Match results recorded as replicated writes.
    pub results_recorded: u64,
    /// Results recorded in kr while it was cut off.
    pub results_recorded_in_kr_while_cut: u64,
    /// At restore: results recorded elsewhere before the catch-up started that kr lacked, plus
    /// results recorded in kr before then that jp or sg lacked (must be 0).
    pub missing_at_restore: u64,
    /// After the final convergence: (result, replica) pairs missing or not exactly 1 (must be 0).
    pub lost_results: u64,
    /// Whether every replica held the same wins leaderboard and the same state at the end.
    pub converged: bool,
    /// Reconnect offers made.
    pub reconnect_offers: u64,
    /// Reconnect offers to a region over the player's latency limit (must be 0).
    pub offers_over_limit: u64,
    /// Players told that no region fits.
    pub stranded: u64,
    /// Ticks in which matchmaking found no server (must be 0: the load fits).
    pub no_capacity: u64,
    /// Delta-log overflows over all replicas (must be 0: the gate is exact only without).
    pub log_overflows: u64,
}

struct Agent {
    region: RegionId,
    lease: Option<LeaseId>,
    next_keep_alive: Duration,
    next_heartbeat: Duration,
}

#[derive(Clone, Copy)]
struct Player {
    origin: RegionId,
    limit: Duration,
    latency: [Duration; 3],
}

struct Running {
    match_id: MatchId,
    region: RegionId,
    players: Vec<PlayerId>,
    winner: PlayerId,
}

fn index(r: RegionId) -> usize {
    REGIONS.iter().position(|x| *x == r).unwrap_or(0)
}

/// Base RTT from players in `origin` to servers in `target` (jitter is added per player).
pub fn base_rtt(origin: RegionId, target: RegionId) -> Duration {
    match (index(origin), index(target)) {
        (a, b) if a == b => ms(8),
        (0, 1) | (1, 0) => ms(35),
        (0, 2) | (2, 0) => ms(75),
        _ => ms(70),
    }
}

/// The planner's matrix: the worst RTT a player of an origin can have (base + 10 ms jitter).
pub fn latency() -> LatencyMatrix {
    let mut m = LatencyMatrix::default();
    for o in REGIONS {
        for t in REGIONS {
            m.set(o, t, base_rtt(o, t) + ms(10));
        }
    }
    m
}

/// Runs one seeded scenario.
pub fn run(seed: u64) -> IntegratedReport {
    let mut rng = SmallRng::seed_from_u64(seed);
    let partition_at = ms(20_000 + rng.random_range(0..1000));
    let heal_at = partition_at + ms(20_000);
    // Sync traffic takes another path that heals up to 5 s later: the catch-up gate must wait.
    let sync_heal_at = heal_at + ms(rng.random_range(0..5000));
    let end = heal_at + ms(20_000);
    let mut report = IntegratedReport { seed, partition_at, heal_at, sync_heal_at, ..Default::default() };
    let cut = |r: RegionId, t: Duration| r == KR && t >= partition_at && t < heal_at;

    // Sync: one replica per region on a simulated network with the regions' RTTs.
    let link = LinkConfig::new(ms(17)).jitter(ms(3)).loss(0.01);
    let mut sync = SimCluster::new(seed, &REGIONS, link, EPOCH, |_| {}).expect("sync config");
    sync.net().set_rtt(KR, SG, ms(75));
    sync.net().set_rtt(JP, SG, ms(70));
    for i in 0..REGIONS.len() {
        sync.node_mut(i).expect("node").define_mode(WINS, ScoreOperator::Incr).expect("mode");
    }

    let mut coord = LocalCoordinator::default();
    let watch = coord.watch(&WatchScope::Regions).expect("watch");
    let mut failover =
        RegionFailover::new(HealthPolicy::default(), PlannerConfig::default(), latency()).expect("failover");
    let config = MatchmakingConfig { match_id_base: seed << 32, ..MatchmakingConfig::default() };
    let mut mm = GlobalMatchmaking::new(FleetConfig::reference(), config, Duration::ZERO).expect("mm");
    let mut now = Duration::ZERO;
    // Room for the whole load in one region (an autoscaler's job; not what is tested here).
    for r in REGIONS {
        mm.cluster_mut(r).expect("reference region").scale_up(9, now);
    }
    mm.heartbeat_all(now);
    let mut agents: Vec<Agent> = REGIONS
        .iter()
        .map(|&region| Agent {
            region,
            lease: None,
            next_keep_alive: ms(rng.random_range(0..500)),
            next_heartbeat: ms(rng.random_range(0..250)),
        })
        .collect();
    for a in &mut agents {
        let lease = coord.grant_lease(now, LEASE_TTL).expect("lease");
        coord.announce_region(now, a.region, lease).expect("announce");
        a.lease = Some(lease);
        failover.add_region(now, a.region).expect("add");
    }

    let mut players: HashMap<PlayerId, Player> = HashMap::new();
    let mut next_player = 1u64;
    let mut ends: BTreeMap<Duration, Vec<Running>> = BTreeMap::new();
    let mut heartbeats: Vec<(Duration, RegionId)> = Vec::new();
    // (match, region that recorded it, sim time recorded)
    let mut results: Vec<(MatchId, RegionId, Duration)> = Vec::new();
    let mut kr_down_in_mm = false;

    while now < end {
        now += STEP;
        if now >= partition_at && now < partition_at + STEP {
            sync.net().isolate(KR, &[JP, SG]);
        }
        if now >= sync_heal_at && now < sync_heal_at + STEP {
            sync.net().heal();
        }

        // Region agents: keep-alives to the coordinator, heartbeats to the failover.
        for a in &mut agents {
            if now >= a.next_keep_alive {
                a.next_keep_alive += KEEP_ALIVE_EVERY;
                if !cut(a.region, now) {
                    match a.lease.map(|l| coord.keep_alive(now, l)) {
                        Some(Ok(_)) => {}
                        Some(Err(CoordError::LeaseNotFound(_))) | None => {
                            let lease = coord.grant_lease(now, LEASE_TTL).expect("lease");
                            coord.announce_region(now, a.region, lease).expect("announce");
                            a.lease = Some(lease);
                        }
                        Some(Err(e)) => panic!("keep-alive: {e}"),
                    }
                }
            }
            if now >= a.next_heartbeat {
                a.next_heartbeat += HEARTBEAT_EVERY;
                if !cut(a.region, now) {
                    heartbeats.push((now + ms(rng.random_range(0..40)), a.region));
                }
            }
        }
        heartbeats.retain(|&(at, region)| {
            if at <= now {
                failover.handle_heartbeat(now, region).expect("tracked");
                false
            } else {
                true
            }
        });
        coord.handle_timeout(now);
        while let Some(change) = coord.poll_change(watch) {
            failover.handle_change(now, &change.expect("watch keeps up"));
        }

        // Sync: advance the replicas to now, then report progress (kr's reports are cut too).
        sync.run_until(EPOCH + now);
        for (i, &r) in REGIONS.iter().enumerate() {
            if !cut(r, now) {
                let node = sync.node(i).expect("node");
                failover.handle_sync_progress(now, SyncProgress::of(node, now)).expect("tracked");
            }
        }
        failover.handle_timeout(now);

        // Failover decisions.
        while let Some(d) = failover.poll_decision() {
            match d {
                FailoverDecision::RegionDown { region, at } if region == KR && at >= partition_at => {
                    report.detection.get_or_insert(at - partition_at);
                }
                FailoverDecision::AwaitingCatchUp { region } if region == KR => {
                    report.catch_up_started.get_or_insert(now);
                    // Ask for an anti-entropy round both ways at once.
                    for (i, &r) in REGIONS.iter().enumerate() {
                        let node = sync.node_mut(i).expect("node");
                        if r == KR {
                            for p in [JP, SG] {
                                node.request_anti_entropy(p, EPOCH + now);
                            }
                        } else {
                            node.request_anti_entropy(KR, EPOCH + now);
                        }
                    }
                }
                FailoverDecision::RegionRestored { region, at } if region == KR => {
                    report.restored_at.get_or_insert(at);
                    let since = report.catch_up_started.unwrap_or(at);
                    report.missing_at_restore += missing_at(&sync, &results, since);
                }
                FailoverDecision::OfferReconnect { player, to, .. } => {
                    report.reconnect_offers += 1;
                    // The offered region must be within the player's own measured limit.
                    if players.get(&player).is_none_or(|p| p.latency[index(to)] > p.limit) {
                        report.offers_over_limit += 1;
                    }
                }
                FailoverDecision::PlayerStranded { .. } => report.stranded += 1,
                _ => {}
            }
        }
        failover.apply_to(&mut mm).expect("regions known to matchmaking");
        let kr_down = mm.region_health(KR) == Some(ClusterHealth::Down);
        if kr_down && !kr_down_in_mm && now >= partition_at && report.reroute.is_none() {
            report.reroute = Some(now - partition_at);
        }
        kr_down_in_mm = kr_down;

        // Matches that end now: results recorded in the region that hosted them.
        let due: Vec<Duration> = ends.range(..=now).map(|(t, _)| *t).collect();
        for t in due {
            for m in ends.remove(&t).unwrap_or_default() {
                let i = index(m.region);
                let node = sync.node_mut(i).expect("node");
                let at = EPOCH + now;
                node.write(Key::Custom(m.match_id.get()), WriteOp::CounterAdd(1), at).expect("result");
                node.submit_score(WINS, m.winner, 1, at).expect("score");
                results.push((m.match_id, m.region, now));
                report.results_recorded += 1;
                if cut(m.region, now) {
                    report.results_recorded_in_kr_while_cut += 1;
                }
                let _ = mm.release_match(m.region, m.match_id);
                for p in m.players {
                    let _ = failover.handle_session_ended(p);
                }
            }
        }

        // New tickets (about 50 players a second), then one matchmaking pass.
        mm.heartbeat_all(now);
        for _ in 0..rng.random_range(0..6) {
            let origin = REGIONS[match rng.random_range(0..10) {
                0..4 => 0,
                4..8 => 1,
                _ => 2,
            }];
            let limit = ms([30, 50, 80, 120][rng.random_range(0..4)]);
            let latency = REGIONS.map(|t| base_rtt(origin, t) + ms(rng.random_range(0..=10)));
            let id = PlayerId::new(next_player);
            next_player += 1;
            let mut req =
                MatchRequest::new(id, rng.random_range(1400.0..1600.0), origin, GameMode::ONE_V_ONE)
                    .max_latency(limit);
            for (t, rtt) in REGIONS.iter().zip(latency) {
                req = req.latency(*t, rtt);
            }
            players.insert(id, Player { origin, limit, latency });
            // The handle is not needed: results are drained with poll_match.
            drop(mm.find_match(req, now).expect("valid request"));
        }
        mm.tick(now);
        while let Some(m) = mm.poll_match() {
            report.matches += 1;
            let region = m.region();
            let mut korean = false;
            for p in m.players() {
                report.players_placed += 1;
                let info = players.get(&p.player()).copied();
                let Some(info) = info else { continue };
                let own = info.latency[index(region)];
                if p.latency() > info.limit || own > info.limit {
                    report.over_limit += 1;
                }
                korean |= info.origin == KR;
            }
            let out = report.reroute.is_some() && report.restored_at.is_none();
            if region == KR {
                if now >= partition_at && report.reroute.is_none() {
                    report.kr_matches_before_reroute += 1;
                } else if out {
                    report.kr_matches_while_out += 1;
                } else if report.restored_at.is_some() {
                    report.kr_matches_after_restore += 1;
                }
            } else if korean && now >= partition_at && report.restored_at.is_none() {
                report.korean_matches_rerouted += 1;
                report.first_rerouted_match.get_or_insert(now - partition_at);
            }
            failover
                .handle_match(&m, |p| players.get(&p).map(|i| (i.origin, i.limit)))
                .expect("session table has room");
            let ids: Vec<PlayerId> = m.players().iter().map(|p| p.player()).collect();
            let winner = ids[rng.random_range(0..ids.len())];
            let ends_at = now + ms(rng.random_range(3_000..15_000));
            ends.entry(ends_at).or_default().push(Running {
                match_id: m.match_id(),
                region,
                players: ids,
                winner,
            });
        }
    }

    // Let the network settle (no new writes; bounded), then check every result everywhere.
    for _ in 0..600 {
        if sync.converged() {
            break;
        }
        now += STEP;
        sync.run_until(EPOCH + now);
    }
    report.converged = sync.converged() && boards_equal(&sync, results.len());
    for (id, _, _) in &results {
        for i in 0..REGIONS.len() {
            let node = sync.node(i).expect("node");
            if !matches!(node.get(&Key::Custom(id.get())), Some(Value::Counter(c)) if c.value() == 1) {
                report.lost_results += 1;
            }
        }
    }
    report.no_capacity = mm.stats().no_capacity;
    report.log_overflows =
        (0..REGIONS.len()).map(|i| sync.node(i).map_or(0, |n| n.stats().log_overflows)).sum();
    report
}

/// Results that the catch-up gate should have waited for: recorded before `since` in a peer
/// and absent from kr, or recorded in kr and absent from a peer.
fn missing_at(sync: &SimCluster, results: &[(MatchId, RegionId, Duration)], since: Duration) -> u64 {
    let mut missing = 0;
    for (id, region, _) in results.iter().filter(|(_, _, at)| *at < since) {
        let key = Key::Custom(id.get());
        let holders: Vec<usize> = if *region == KR { vec![1, 2] } else { vec![0] };
        for i in holders {
            if sync.node(i).and_then(|n| n.get(&key)).is_none() {
                missing += 1;
            }
        }
    }
    missing
}

/// Every replica's wins add up to one point per recorded result.
fn boards_equal(sync: &SimCluster, results: usize) -> bool {
    let total = i64::try_from(results).unwrap_or(i64::MAX);
    (0..sync.len()).all(|i| {
        sync.node(i).is_some_and(|n| n.iter().filter_map(|(k, v)| score_of(k, v)).sum::<i64>() == total)
    })
}

fn score_of(k: &Key, v: &Value) -> Option<i64> {
    match (k, v) {
        (Key::Score(WINS, _), Value::Score(s)) => Some(s.score()),
        _ => None,
    }
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
