//! Setup helpers shared by several pvp-global test binaries: time units, small clusters,
//! matchmakers with their requests, and a three-region failover planner.
// Each test binary includes this module but uses only a subset of it.
#![allow(dead_code)]

use std::time::Duration;

use pvp_core::ids::{PlayerId, RegionId, ServerId};
use pvp_global::cluster::{FleetConfig, RegionCluster, RegionConfig};
use pvp_global::failover::{FailoverDecision, FailoverPlanner, LatencyMatrix, PlannerConfig, PlayerSession};
use pvp_global::matchmaking::{
    BackfillRequest, GameModeId, GlobalMatchmaking, MatchResult, MatchmakingConfig, TickReport,
};

pub(crate) const T0: Duration = Duration::ZERO;

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(crate) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---------------------------------------------------------------------------------------------
// RegionCluster

pub(crate) fn small(min: u32, max: u32, per: u32) -> RegionConfig {
    RegionConfig {
        min_servers: min,
        max_servers: max,
        players_per_server: per,
        ..RegionConfig::reference_kr()
    }
}

/// A cluster whose initial servers have all heartbeated at `T0`.
pub(crate) fn ready(cfg: RegionConfig) -> RegionCluster {
    let mut c = RegionCluster::new(cfg, T0).unwrap();
    let ids: Vec<ServerId> = c.servers().map(|s| s.id()).collect();
    for id in ids {
        c.heartbeat(id, T0).unwrap();
    }
    c
}

// ---------------------------------------------------------------------------------------------
// GlobalMatchmaking

pub(crate) fn mm_with(config: MatchmakingConfig) -> GlobalMatchmaking {
    let mut mm = GlobalMatchmaking::new(FleetConfig::reference(), config, T0).unwrap();
    mm.heartbeat_all(T0);
    mm
}

pub(crate) fn mm() -> GlobalMatchmaking {
    mm_with(MatchmakingConfig::default())
}

/// Servers heartbeat, then the matchmaker ticks (as a driver does).
pub(crate) fn tick(mm: &mut GlobalMatchmaking, now: Duration) -> TickReport {
    mm.heartbeat_all(now);
    mm.tick(now)
}

/// A backfill of `slots` places on `team` of the running match `m`.
pub(crate) fn backfill_of(
    m: &MatchResult,
    mode: GameModeId,
    team: u8,
    slots: u8,
    rating: f64,
) -> BackfillRequest {
    BackfillRequest { match_id: m.match_id(), region: m.region(), mode, team, slots, rating }
}

// ---------------------------------------------------------------------------------------------
// FailoverPlanner

/// A planner over kr, jp and sg (8 ms inside each; kr-jp 35, kr-sg 75, jp-sg 70 ms), all regions
/// added and the resulting decisions drained.
pub(crate) fn planner() -> (FailoverPlanner, [RegionId; 3]) {
    let regions = ["kr", "jp", "sg"].map(|r| RegionId::new(r).unwrap());
    let [kr, jp, sg] = regions;
    let mut m = LatencyMatrix::default();
    for x in regions {
        m.set(x, x, ms(8));
    }
    m.set_symmetric(kr, jp, ms(35));
    m.set_symmetric(kr, sg, ms(75));
    m.set_symmetric(jp, sg, ms(70));
    let mut p = FailoverPlanner::new(PlannerConfig::default(), m);
    for x in regions {
        p.add_region(x).unwrap();
    }
    while p.poll_decision().is_some() {}
    (p, regions)
}

/// A session of `player` on server `player * 10`.
pub(crate) fn session(player: u64, region: RegionId, origin: RegionId, limit: u64) -> PlayerSession {
    PlayerSession {
        player: PlayerId::new(player),
        server: ServerId::new(player * 10),
        region,
        origin,
        latency_limit: ms(limit),
    }
}

/// Every pending decision (bounded, so a planner that never runs dry fails instead of hanging).
pub(crate) fn drain(p: &mut FailoverPlanner) -> Vec<FailoverDecision> {
    std::iter::from_fn(|| p.poll_decision()).take(10_000).collect()
}
