//! RegionCluster and its configuration, through the public API.

#[path = "shared_support/mod.rs"]
mod support;

use std::time::Duration;

use pvp_core::ids::{MatchId, ServerId};
use pvp_global::cluster::{
    ClusterError, ConfigError, FleetConfig, JP, KR, RegionCluster, RegionConfig, RegionHealth, RegionSummary,
    SG, ServerState,
};
use support::{T0, ms, ready, small};

#[test]
fn reference_fleet_has_the_latency_matrix() {
    let fleet = FleetConfig::reference();
    fleet.validate().unwrap();
    let ids: Vec<_> = fleet.regions.iter().map(|r| r.id).collect();
    assert_eq!(ids, [KR, JP, SG]);
    let kr = &fleet.regions[0];
    assert_eq!(kr.zones.iter().map(|z| z.as_str()).collect::<Vec<_>>(), ["kr-a", "kr-b", "kr-c"]);
    assert_eq!(kr.rtt_to(JP), Some(ms(30)));
    assert_eq!(kr.rtt_to(SG), Some(ms(70)));
    assert_eq!(fleet.regions[1].rtt_to(SG), Some(ms(70)));
    assert_eq!(kr.rtt_to(KR), Some(Duration::ZERO));
}

#[test]
fn toml_round_trip() {
    let fleet = FleetConfig::reference();
    let text = toml::to_string(&fleet).unwrap();
    assert_eq!(FleetConfig::from_toml_str(&text).unwrap(), fleet);
}

#[test]
fn config_errors_are_typed() {
    let check = |f: &dyn Fn(&mut RegionConfig)| {
        let mut c = RegionConfig::reference_kr();
        f(&mut c);
        c.validate().unwrap_err()
    };
    assert!(matches!(check(&|c| c.zones.clear()), ConfigError::NoZones { .. }));
    assert!(matches!(check(&|c| c.zones.push("jp-a".parse().unwrap())), ConfigError::UnknownZone { .. }));
    assert!(matches!(check(&|c| c.zones.push("kr".parse().unwrap())), ConfigError::UnknownZone { .. }));
    assert!(matches!(check(&|c| c.zones.push("kr-a".parse().unwrap())), ConfigError::DuplicateZone { .. }));
    assert!(matches!(check(&|c| c.min_servers = c.max_servers + 1), ConfigError::MinAboveMax { .. }));
    assert!(matches!(check(&|c| c.players_per_server = 0), ConfigError::ZeroCapacity { .. }));
    assert!(matches!(
        check(&|c| c.players_per_server = u32::MAX),
        ConfigError::TooManyPlayersPerServer { .. }
    ));
    assert!(matches!(
        check(&|c| {
            c.max_servers = 0;
            c.min_servers = 0
        }),
        ConfigError::ZeroCapacity { .. }
    ));
    assert!(matches!(
        check(&|c| {
            c.latency_ms.insert(KR, 1);
        }),
        ConfigError::LatencyToSelf { .. }
    ));
    assert!(matches!(check(&|c| c.vpc_cidr = "10.1.0.0".into()), ConfigError::BadCidr { .. }));
    assert!(matches!(check(&|c| c.vpc_cidr = "10.1.0.0/33".into()), ConfigError::BadCidr { .. }));
    assert!(matches!(check(&|c| c.vpc_cidr = "10.1.0.0/28".into()), ConfigError::CidrTooSmall { .. }));
    assert!(matches!(check(&|c| c.heartbeat_timeout_ms = 0), ConfigError::ZeroDuration { .. }));
    assert!(matches!(check(&|c| c.degraded_spare_ratio = f64::NAN), ConfigError::BadSpareRatio { .. }));

    let mut fleet = FleetConfig::reference();
    fleet.regions[0].latency_ms.insert(JP, 31);
    assert!(matches!(fleet.validate(), Err(ConfigError::AsymmetricLatency { .. })));
    let mut fleet = FleetConfig::reference();
    fleet.regions.pop();
    assert!(matches!(fleet.validate(), Err(ConfigError::UnknownRegion { .. })));
    let mut fleet = FleetConfig::reference();
    fleet.regions.push(RegionConfig::reference_kr());
    assert!(matches!(fleet.validate(), Err(ConfigError::DuplicateRegion { .. })));
    assert!(matches!(FleetConfig { regions: vec![] }.validate(), Err(ConfigError::NoRegions)));
    assert!(matches!(FleetConfig::from_toml_str("regions = 3"), Err(ConfigError::Toml(_))));
    assert!(matches!(RegionConfig::from_toml_str("id = \"KR\""), Err(ConfigError::Toml(_))));
}

#[test]
fn lifecycle_starting_ready_allocated_ready() {
    let mut c = RegionCluster::new(small(3, 6, 10), T0).unwrap();
    assert_eq!(c.server_counts().starting, 3);
    // One server per zone.
    let mut zones: Vec<_> = c.servers().map(|s| s.zone()).collect();
    zones.sort();
    zones.dedup();
    assert_eq!(zones.len(), 3);
    assert_eq!(c.health(), RegionHealth::Down);
    assert!(matches!(c.allocate(MatchId::new(1), 2, ms(10), T0), Err(ClusterError::NoCapacity { .. })));
    let id = c.servers().next().unwrap().id();
    c.heartbeat(id, T0).unwrap();
    assert_eq!(c.server(id).unwrap().state(), ServerState::Ready);
    let placed = c.allocate(MatchId::new(1), 2, ms(10), T0).unwrap();
    assert_eq!(placed.id, id);
    assert_eq!(c.server(id).unwrap().state(), ServerState::Allocated);
    assert!(matches!(c.allocate(MatchId::new(1), 2, ms(10), T0), Err(ClusterError::DuplicateMatch(_))));
    c.release(MatchId::new(1)).unwrap();
    assert_eq!(c.server(id).unwrap().state(), ServerState::Ready);
    assert!(matches!(c.release(MatchId::new(1)), Err(ClusterError::UnknownMatch(_))));
    assert!(matches!(c.heartbeat(ServerId::new(12345), T0), Err(ClusterError::UnknownServer(_))));
    assert_eq!(c.stats().rejected_heartbeats, 1);
}

#[test]
fn bin_packing_fills_the_fullest_server_first() {
    let mut c = ready(small(3, 6, 10));
    let a = c.allocate(MatchId::new(1), 4, ms(10), T0).unwrap();
    // Next matches go to the same server while it has room.
    let b = c.allocate(MatchId::new(2), 4, ms(10), T0).unwrap();
    assert_eq!(a.id, b.id);
    // 2 free there: a 2-player match fits exactly, a 4-player one goes elsewhere.
    let d = c.allocate(MatchId::new(3), 4, ms(10), T0).unwrap();
    assert_ne!(d.id, a.id);
    let e = c.allocate(MatchId::new(4), 2, ms(10), T0).unwrap();
    assert_eq!(e.id, a.id);
    assert_eq!(c.current_player_count(), 14);
    assert_eq!(c.free_slots(), 30 - 14);
    assert_eq!(c.available_servers().count(), 2);
    assert!(matches!(c.allocate(MatchId::new(9), 11, ms(1), T0), Err(ClusterError::BadMatchSize { .. })));
    assert!(matches!(c.allocate(MatchId::new(9), 0, ms(1), T0), Err(ClusterError::BadMatchSize { .. })));
}

#[test]
fn scale_within_bounds_never_stops_allocated() {
    let mut c = ready(small(2, 5, 10));
    assert_eq!(c.scale_up(10, T0), 3);
    assert_eq!(c.servers().count(), 5);
    assert_eq!(c.scale_up(1, T0), 0);
    // Zones stay balanced: 5 servers over 3 zones -> 2/2/1.
    let mut per_zone = std::collections::HashMap::new();
    for s in c.servers() {
        *per_zone.entry(s.zone()).or_insert(0) += 1;
    }
    assert!(per_zone.values().all(|&n| n == 1 || n == 2), "{per_zone:?}");
    let busy = c.allocate(MatchId::new(1), 2, ms(5), T0).unwrap();
    // Down to min, the allocated server survives.
    assert_eq!(c.scale_down(10), 3);
    assert_eq!(c.servers().count(), 2);
    assert_eq!(c.server(busy.id).unwrap().state(), ServerState::Allocated);
    let mut c2 = ready(small(0, 3, 10));
    assert_eq!(c2.scale_up(3, T0), 3);
    let ids: Vec<_> = c2.servers().map(|s| s.id()).collect();
    for id in &ids {
        c2.heartbeat(*id, T0).unwrap();
    }
    for (i, _) in ids.iter().enumerate() {
        c2.allocate(MatchId::new(i as u64 + 1), 10, ms(5), T0).unwrap();
    }
    assert_eq!(c2.scale_down(3), 0, "every server is allocated");
    // Draining finishes the match, then shuts down.
    c2.drain(ids[0]).unwrap();
    assert_eq!(c2.server(ids[0]).unwrap().state(), ServerState::Draining);
    assert!(c2.allocate(MatchId::new(99), 1, ms(1), T0).is_err());
    c2.release(MatchId::new(1)).unwrap();
    assert!(c2.server(ids[0]).is_none());
}

#[test]
fn missed_heartbeats_make_servers_unhealthy_and_are_replaced() {
    let mut c = ready(small(3, 6, 10));
    let m = c.allocate(MatchId::new(1), 2, ms(5), T0).unwrap();
    let others: Vec<_> = c.servers().map(|s| s.id()).filter(|id| *id != m.id).collect();
    let t1 = ms(4_000);
    for id in &others {
        c.heartbeat(*id, t1).unwrap();
    }
    let t2 = ms(6_000);
    let out = c.tick(t2);
    assert_eq!(out.became_unhealthy, 1);
    assert_eq!(out.matches_lost, 1);
    assert_eq!(out.started, 1, "a replacement keeps min_servers usable");
    assert_eq!(c.server(m.id).unwrap().state(), ServerState::Unhealthy);
    assert_eq!(c.health(), RegionHealth::Degraded);
    assert!(matches!(c.heartbeat(m.id, t2), Err(ClusterError::ServerUnhealthy(_))));
    assert_eq!(c.current_player_count(), 0);
    let out = c.tick(ms(6_100));
    assert_eq!(out.shut_down, 1);
    assert_eq!(out.started, 0);
    assert!(c.server(m.id).is_none());
}

#[test]
fn health_and_summary() {
    let mut c = ready(small(3, 3, 10));
    assert_eq!(c.health(), RegionHealth::Healthy);
    // Fill to 28 of 30: spare 2 < 10% of 30 -> Degraded.
    for i in 0..14 {
        c.allocate(MatchId::new(i + 1), 2, ms(20), T0).unwrap();
    }
    assert_eq!(c.health(), RegionHealth::Degraded);
    assert_eq!(c.average_latency(), Some(ms(10)));
    c.set_health_override(Some(RegionHealth::Down));
    assert_eq!(c.health(), RegionHealth::Down);
    assert!(matches!(c.allocate(MatchId::new(99), 2, ms(1), T0), Err(ClusterError::RegionDown)));
    let s = c.summary(ms(42));
    assert_eq!(s.health, RegionHealth::Down);
    assert_eq!(s.players, 28);
    assert_eq!(s.free_slots, 2);
    assert_eq!(s.matches, 14);
    assert_eq!(s.average_latency_us, Some(10_000));
    let json = serde_json::to_string(&s).unwrap();
    let back: RegionSummary = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    c.set_health_override(None);
    assert_eq!(c.health(), RegionHealth::Degraded);
}

#[test]
fn startup_timeout_marks_silent_servers_unhealthy() {
    let mut c = RegionCluster::new(small(1, 2, 10), T0).unwrap();
    let id = c.servers().next().unwrap().id();
    assert_eq!(c.tick(ms(59_000)).became_unhealthy, 0);
    assert_eq!(c.tick(ms(61_000)).became_unhealthy, 1);
    assert_eq!(c.server(id).unwrap().state(), ServerState::Unhealthy);
}
