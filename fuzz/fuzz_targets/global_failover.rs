//! Routing-table records decode or fail cleanly and round-trip; any sequence of health,
//! catch-up, drain and session inputs leaves the failover planner consistent: no panic, and
//! `route` never picks a region over the latency limit or one that is not serving.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pvp_core::ids::{PlayerId, RegionId, ServerId};
use pvp_global::failover::{
    FailoverDecision, FailoverPlanner, LatencyMatrix, PlannerConfig, PlayerSession, RegionAvailability,
    RegionHealth, RoutingTable,
};

#[derive(Debug, Arbitrary)]
enum Op {
    Health { region: u8, health: u8 },
    CaughtUp { region: u8 },
    Drain { region: u8, drained: bool },
    Place { player: u8, region: u8, origin: u8, limit_ms: u8 },
    End { player: u8 },
    Route { origin: u8, limit_ms: u8 },
}

#[derive(Debug, Arbitrary)]
struct Input {
    record: Vec<u8>,
    rtts: [[u8; 4]; 4],
    ops: Vec<Op>,
}

const NAMES: [&str; 4] = ["kr", "jp", "sg", "us"];

fuzz_target!(|input: Input| {
    if let Ok(table) = RoutingTable::decode(&input.record) {
        assert_eq!(RoutingTable::decode(&table.encode()).ok(), Some(table));
    }
    let regions = NAMES.map(|n| RegionId::new(n).expect("valid"));
    let r = |i: u8| regions[usize::from(i) % 4];
    let mut latency = LatencyMatrix::default();
    for (i, row) in input.rtts.iter().enumerate() {
        for (j, rtt) in row.iter().enumerate() {
            latency.set(regions[i], regions[j], Duration::from_millis(u64::from(*rtt)));
        }
    }
    let mut planner = FailoverPlanner::new(PlannerConfig::default(), latency.clone());
    for region in &regions[..3] {
        planner.add_region(*region).expect("room");
    }
    for (step, op) in input.ops.into_iter().take(256).enumerate() {
        let now = Duration::from_millis(step as u64 * 100);
        match op {
            Op::Health { region, health } => {
                let h = [RegionHealth::Healthy, RegionHealth::Degraded, RegionHealth::Down]
                    [usize::from(health) % 3];
                let _ = planner.handle_health(now, r(region), h);
            }
            Op::CaughtUp { region } => {
                let _ = planner.handle_caught_up(now, r(region));
            }
            Op::Drain { region, drained } => {
                let _ = planner.handle_drain(r(region), drained);
            }
            Op::Place { player, region, origin, limit_ms } => {
                let _ = planner.handle_session_placed(PlayerSession {
                    player: PlayerId::new(u64::from(player)),
                    server: ServerId::new(u64::from(player)),
                    region: r(region),
                    origin: r(origin),
                    latency_limit: Duration::from_millis(u64::from(limit_ms)),
                });
            }
            Op::End { player } => {
                let _ = planner.handle_session_ended(PlayerId::new(u64::from(player)));
            }
            Op::Route { origin, limit_ms } => {
                let limit = Duration::from_millis(u64::from(limit_ms));
                if let Some(to) = planner.route(r(origin), limit) {
                    assert!(latency.rtt(r(origin), to).is_some_and(|rtt| rtt <= limit));
                    assert_eq!(planner.availability(to), Some(RegionAvailability::Serving));
                }
            }
        }
        while let Some(d) = planner.poll_decision() {
            if let FailoverDecision::OfferReconnect { player, to, .. } = d {
                let s = planner.session(player).expect("offers are for tracked players");
                assert!(latency.rtt(s.origin, to).is_some_and(|rtt| rtt <= s.latency_limit));
            }
        }
    }
});
