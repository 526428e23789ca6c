//! RegionCluster and its configuration through the public API: the reference fleet, TOML round
//! trips and errors (every region and fleet rule has its typed error, CIDRs never panic),
//! server lifecycle, bin packing, scaling within min / max in every call, heartbeats and health
//! (unknown or unhealthy servers refused and counted, a clock going backwards), draining, health
//! overrides, and refused calls leaving the cluster unchanged.

mod common;

use std::time::Duration;

use pvp_core::ids::{MatchId, RegionId, ServerId};
use pvp_global::cluster::{
    ClusterError, ConfigError, FleetConfig, JP, KR, MAX_PLAYERS_PER_SERVER, RegionCluster, RegionConfig,
    RegionHealth, RegionSummary, SG, ServerState,
};

use common::{T0, ms, ready, small};

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

// ---------------------------------------------------------------------------------------------
// Configuration

fn region(name: &str) -> RegionId {
    RegionId::new(name).unwrap()
}

fn region_toml(extra: &str) -> String {
    format!(
        r#"
        id = "kr"
        display_name = "Korea"
        zones = ["kr-a", "kr-b"]
        min_servers = 1
        max_servers = 4
        players_per_server = 10
        vpc_cidr = "10.1.0.0/24"
        {extra}
        "#
    )
}

#[test]
fn region_toml_defaults_and_round_trip() {
    let cfg = RegionConfig::from_toml_str(&region_toml("")).unwrap();
    assert_eq!(cfg.game_port, 7777);
    assert_eq!(cfg.heartbeat_timeout(), ms(5_000));
    assert_eq!(cfg.startup_timeout(), ms(60_000));
    assert!(cfg.latency_ms.is_empty());
    assert_eq!(cfg.rtt_to(KR), Some(Duration::ZERO));
    assert_eq!(cfg.rtt_to(JP), None);
    let text = toml::to_string(&cfg).unwrap();
    assert_eq!(RegionConfig::from_toml_str(&text).unwrap(), cfg);
}

#[test]
fn malformed_toml_and_unknown_fields_are_toml_errors() {
    for text in
        ["", "id = ", "this is not toml", &region_toml("colour = \"red\""), &region_toml("min_servers = -1")]
    {
        let err = RegionConfig::from_toml_str(text).unwrap_err();
        assert!(matches!(err, ConfigError::Toml(_)), "{text:?} gave {err:?}");
    }
    // A region id that is not a valid id is a schema error too, never a panic.
    let bad_id = region_toml("").replace("id = \"kr\"", "id = \"this-region-name-is-far-too-long\"");
    assert!(matches!(RegionConfig::from_toml_str(&bad_id), Err(ConfigError::Toml(_))));
    assert!(matches!(FleetConfig::from_toml_str("regions = 3"), Err(ConfigError::Toml(_))));
}

#[test]
fn every_region_rule_has_its_typed_error() {
    let check = |f: &dyn Fn(&mut RegionConfig), want: &dyn Fn(&ConfigError) -> bool| {
        let mut c = small(1, 4, 10);
        f(&mut c);
        let err = c.validate().unwrap_err();
        assert!(want(&err), "got {err:?}");
        // The same config never builds a cluster.
        assert!(RegionCluster::new(c, T0).is_err());
    };
    check(&|c| c.zones.clear(), &|e| matches!(e, ConfigError::NoZones { .. }));
    check(&|c| c.zones = vec!["jp-a".parse().unwrap()], &|e| matches!(e, ConfigError::UnknownZone { .. }));
    check(&|c| c.zones = vec!["krx-a".parse().unwrap()], &|e| matches!(e, ConfigError::UnknownZone { .. }));
    check(&|c| c.zones = vec!["kr-".parse().unwrap()], &|e| matches!(e, ConfigError::UnknownZone { .. }));
    check(&|c| c.zones = vec!["kr".parse().unwrap()], &|e| matches!(e, ConfigError::UnknownZone { .. }));
    check(&|c| c.zones = vec!["kr-a".parse().unwrap(), "kr-a".parse().unwrap()], &|e| {
        matches!(e, ConfigError::DuplicateZone { .. })
    });
    check(&|c| c.min_servers = 5, &|e| matches!(e, ConfigError::MinAboveMax { min: 5, max: 4, .. }));
    check(&|c| c.max_servers = 0, &|e| matches!(e, ConfigError::ZeroCapacity { .. }));
    check(&|c| c.players_per_server = 0, &|e| matches!(e, ConfigError::ZeroCapacity { .. }));
    check(
        &|c| c.players_per_server = MAX_PLAYERS_PER_SERVER + 1,
        &|e| matches!(e, ConfigError::TooManyPlayersPerServer { value, .. } if *value == MAX_PLAYERS_PER_SERVER + 1),
    );
    check(
        &|c| {
            c.latency_ms.insert(KR, 1);
        },
        &|e| matches!(e, ConfigError::LatencyToSelf { .. }),
    );
    check(&|c| c.heartbeat_timeout_ms = 0, &|e| {
        matches!(e, ConfigError::ZeroDuration { field: "heartbeat_timeout_ms", .. })
    });
    check(&|c| c.startup_timeout_ms = 0, &|e| {
        matches!(e, ConfigError::ZeroDuration { field: "startup_timeout_ms", .. })
    });
    for ratio in [f64::NAN, -0.1, 1.000_001, f64::INFINITY, f64::NEG_INFINITY] {
        check(&|c| c.degraded_spare_ratio = ratio, &|e| matches!(e, ConfigError::BadSpareRatio { .. }));
    }
    // Inclusive bounds.
    for ratio in [0.0, 1.0] {
        let c = RegionConfig { degraded_spare_ratio: ratio, ..small(1, 4, 10) };
        c.validate().unwrap();
    }
    let c = RegionConfig { players_per_server: MAX_PLAYERS_PER_SERVER, ..small(0, 1, 1) };
    c.validate().unwrap();
    let c = small(4, 4, 10);
    c.validate().unwrap();
}

#[test]
fn cidr_validation_never_panics() {
    for cidr in [
        "",
        "10.0.0.0",
        "10.0.0.0/",
        "10.0.0.0/31",
        "10.0.0.0/32",
        "10.0.0.0/33",
        "10.0.0/16",
        "x/16",
        "10.0.0.0/-1",
        "::1/64",
        "10.0.0.0/16/1",
        "300.0.0.0/8",
    ] {
        let c = RegionConfig { vpc_cidr: cidr.to_owned(), ..small(1, 1, 10) };
        let err = c.validate().unwrap_err();
        assert!(matches!(err, ConfigError::BadCidr { .. }), "{cidr:?} gave {err:?}");
    }
    // A /30 holds 4 addresses, all reserved: too small, even at the top of the address space.
    for cidr in ["10.0.0.0/30", "255.255.255.252/30", "255.255.255.255/30"] {
        let c = RegionConfig { vpc_cidr: cidr.to_owned(), ..small(1, 1, 10) };
        let err = c.validate().unwrap_err();
        assert!(
            matches!(err, ConfigError::CidrTooSmall { hosts: 0, needed: 1, .. }),
            "{cidr:?} gave {err:?}"
        );
    }
    // A /29 offers 8 - 2 - RESERVED_HOSTS = 3 server addresses.
    let c = RegionConfig { vpc_cidr: "255.255.255.248/29".to_owned(), ..small(3, 3, 10) };
    c.validate().unwrap();
    let c = RegionConfig { vpc_cidr: "10.0.0.0/29".to_owned(), ..small(1, 4, 10) };
    assert!(matches!(c.validate(), Err(ConfigError::CidrTooSmall { hosts: 3, needed: 4, .. })));
    // The whole IPv4 space is fine.
    let c = RegionConfig { vpc_cidr: "0.0.0.0/0".to_owned(), ..small(1, 4, 10) };
    c.validate().unwrap();
}

#[test]
fn server_addresses_are_distinct_and_inside_the_vpc() {
    let cfg = RegionConfig { vpc_cidr: "255.255.255.248/29".to_owned(), ..small(3, 3, 10) };
    let c = RegionCluster::new(cfg, T0).unwrap();
    let mut addrs: Vec<_> = c.servers().map(|s| s.addr()).collect();
    assert_eq!(addrs.len(), 3);
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 3);
    for a in addrs {
        let std::net::SocketAddr::V4(v4) = a else { panic!("not IPv4: {a}") };
        let ip = u32::from(*v4.ip());
        assert!((0xFFFF_FFF8..0xFFFF_FFFF).contains(&ip), "{a} outside the VPC or on its broadcast");
        assert_eq!(v4.port(), 7777);
    }
}

#[test]
fn every_fleet_rule_has_its_typed_error() {
    let fleet = |regions: Vec<RegionConfig>| FleetConfig { regions };
    assert!(matches!(fleet(vec![]).validate(), Err(ConfigError::NoRegions)));
    assert!(matches!(FleetConfig::from_toml_str("regions = []"), Err(ConfigError::NoRegions)));
    let kr = RegionConfig::reference_kr();
    let (jp, sg) = (RegionConfig::reference_jp(), RegionConfig::reference_sg());
    assert!(matches!(
        fleet(vec![kr.clone(), jp.clone(), sg.clone(), kr.clone()]).validate(),
        Err(ConfigError::DuplicateRegion { region }) if region == KR
    ));
    // kr lists jp and sg: with sg missing, its latency names an unknown region.
    assert!(matches!(
        fleet(vec![kr.clone(), RegionConfig { latency_ms: [(KR, 30)].into(), ..jp.clone() }]).validate(),
        Err(ConfigError::UnknownRegion { from, to }) if from == KR && to == SG
    ));
    let mut jp_off = jp.clone();
    jp_off.latency_ms.insert(KR, 31);
    assert!(matches!(
        fleet(vec![kr.clone(), jp_off, sg.clone()]).validate(),
        Err(ConfigError::AsymmetricLatency { ab: 30, ba: 31, .. })
    ));
    // An invalid region inside the fleet is reported with its own error.
    let bad = RegionConfig { max_servers: 0, ..sg.clone() };
    assert!(matches!(
        fleet(vec![kr.clone(), jp.clone(), bad]).validate(),
        Err(ConfigError::ZeroCapacity { .. })
    ));
    // Too many regions for the matchmaker.
    let many: Vec<RegionConfig> = (0..9)
        .map(|i| {
            let id = region(&format!("r{i}"));
            RegionConfig {
                id,
                zones: vec![format!("r{i}-a").parse().unwrap()],
                latency_ms: Default::default(),
                ..small(0, 1, 10)
            }
        })
        .collect();
    assert!(matches!(fleet(many.clone()).validate(), Err(ConfigError::TooManyRegions { count: 9, max: 8 })));
    fleet(many[..8].to_vec()).validate().unwrap();
    // A one-sided latency entry is allowed (only disagreeing pairs are refused).
    let jp_silent = RegionConfig { latency_ms: Default::default(), ..jp };
    let sg_no_jp = RegionConfig { latency_ms: [(KR, 70)].into(), ..sg };
    fleet(vec![kr, jp_silent, sg_no_jp]).validate().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Allocation, heartbeats, scaling and drain

#[test]
fn a_fleet_without_servers_is_down_and_refuses_matches_counted() {
    let mut c = RegionCluster::new(small(0, 4, 10), T0).unwrap();
    assert_eq!(c.servers().count(), 0);
    assert_eq!(c.health(), RegionHealth::Down);
    assert_eq!(c.free_slots(), 0);
    assert_eq!(c.average_latency(), None);
    assert!(!c.can_fit(1));
    assert!(!c.can_fit(0));
    assert!(matches!(
        c.allocate(MatchId::new(1), 2, ms(10), T0),
        Err(ClusterError::NoCapacity { players: 2 })
    ));
    assert_eq!(c.stats().allocation_failures, 1);
    assert_eq!(c.stats().allocations, 0);
    let t = c.tick(ms(1));
    assert_eq!(t.started, 0);
    let s = c.summary(ms(1));
    assert_eq!((s.capacity, s.players, s.matches, s.average_latency_us), (0, 0, 0, None));
    assert_eq!(s.at, ms(1));
}

#[test]
fn allocation_errors_leave_the_cluster_unchanged() {
    let mut c = ready(small(2, 4, 10));
    let free = c.free_slots();
    assert_eq!(free, 20);
    let bad_sizes = [0u32, 11, u32::MAX];
    for players in bad_sizes {
        let err = c.allocate(MatchId::new(1), players, ms(1), T0).unwrap_err();
        assert_eq!(err, ClusterError::BadMatchSize { players, per_server: 10 });
    }
    assert!(!c.can_fit(11));
    assert!(c.can_fit(10));
    assert_eq!(c.free_slots(), free);
    assert_eq!(c.current_player_count(), 0);
    c.allocate(MatchId::new(1), 4, ms(40), T0).unwrap();
    assert_eq!(c.allocate(MatchId::new(1), 2, ms(1), T0), Err(ClusterError::DuplicateMatch(MatchId::new(1))));
    assert_eq!(c.free_slots(), free - 4);
    assert_eq!(c.current_player_count(), 4);
    assert_eq!(c.summary(T0).matches, 1);
    assert_eq!(c.stats().allocations, 1);
}

#[test]
fn release_and_add_players_are_checked_and_idempotent() {
    let mut c = ready(small(1, 1, 10));
    let m = MatchId::new(7);
    let placed = c.allocate(m, 4, ms(40), T0).unwrap();
    assert_eq!(c.match_server(m), Some(placed));
    // Backfill beyond the server's room is refused, even with an absurd count.
    for players in [7u32, u32::MAX, u32::MAX - 3] {
        assert_eq!(c.add_players(m, players, ms(1)), Err(ClusterError::NoCapacity { players }));
    }
    assert_eq!(c.current_player_count(), 4);
    assert_eq!(c.free_slots(), 6);
    c.add_players(m, 6, ms(60)).unwrap();
    assert_eq!(c.free_slots(), 0);
    assert_eq!(c.current_player_count(), 10);
    assert_eq!(c.average_latency(), Some(ms(10)));
    assert!(!c.can_fit(1));
    assert_eq!(c.add_players(MatchId::new(8), 1, ms(1)), Err(ClusterError::UnknownMatch(MatchId::new(8))));
    c.release(m).unwrap();
    assert_eq!(c.release(m), Err(ClusterError::UnknownMatch(m)));
    assert_eq!(c.add_players(m, 1, ms(1)), Err(ClusterError::UnknownMatch(m)));
    assert_eq!(c.match_server(m), None);
    assert_eq!(c.current_player_count(), 0);
    assert_eq!(c.free_slots(), 10);
    assert_eq!(c.server(placed.id).map(|s| s.state()), Some(ServerState::Ready));
    assert_eq!(c.average_latency(), None);
}

#[test]
fn huge_latency_sums_do_not_overflow() {
    let mut c = ready(small(1, 1, 10));
    c.allocate(MatchId::new(1), 2, Duration::MAX, T0).unwrap();
    c.allocate(MatchId::new(2), 2, Duration::MAX, T0).unwrap();
    c.add_players(MatchId::new(2), 2, Duration::MAX).unwrap();
    let avg = c.average_latency().unwrap();
    assert!(avg >= Duration::from_secs(1_000_000), "{avg:?}");
    c.release(MatchId::new(1)).unwrap();
    c.release(MatchId::new(2)).unwrap();
    assert_eq!(c.average_latency(), None);
    c.allocate(MatchId::new(3), 2, ms(80), T0).unwrap();
    assert_eq!(c.average_latency(), Some(ms(40)));
    assert_eq!(c.summary(T0).average_latency_us, Some(40_000));
}

#[test]
fn heartbeats_of_unknown_or_unhealthy_servers_are_refused_and_counted() {
    let mut c = ready(small(1, 2, 10));
    let ghost = ServerId::new(u64::MAX);
    assert_eq!(c.heartbeat(ghost, T0), Err(ClusterError::UnknownServer(ghost)));
    assert_eq!(c.drain(ghost), Err(ClusterError::UnknownServer(ghost)));
    assert_eq!(c.stats().rejected_heartbeats, 1);
    let id = c.servers().next().unwrap().id();
    // Time going backwards in a heartbeat never moves the last heartbeat back.
    c.heartbeat(id, ms(100)).unwrap();
    c.heartbeat(id, ms(50)).unwrap();
    assert_eq!(c.server(id).unwrap().last_heartbeat(), Some(ms(100)));
    let hb = c.config().heartbeat_timeout();
    let t = c.tick(ms(100) + hb + ms(1));
    assert_eq!(t.became_unhealthy, 1);
    assert_eq!(c.server(id).map(|s| s.state()), Some(ServerState::Unhealthy));
    assert_eq!(c.heartbeat(id, ms(100) + hb + ms(2)), Err(ClusterError::ServerUnhealthy(id)));
    assert_eq!(c.stats().rejected_heartbeats, 2);
    // Next tick removes it and keeps min_servers.
    let t = c.tick(ms(100) + hb + ms(3));
    assert_eq!(t.shut_down, 1);
    assert!(c.server(id).is_none());
    assert_eq!(c.heartbeat(id, ms(100) + hb + ms(4)), Err(ClusterError::UnknownServer(id)));
    assert_eq!(c.servers().count(), 1);
}

#[test]
fn a_clock_going_backwards_marks_nobody_unhealthy() {
    let mut c = RegionCluster::new(small(2, 2, 10), ms(10_000)).unwrap();
    let ids: Vec<ServerId> = c.servers().map(|s| s.id()).collect();
    for id in &ids {
        c.heartbeat(*id, ms(10_000)).unwrap();
    }
    let t = c.tick(T0);
    assert_eq!(t.became_unhealthy, 0);
    assert_eq!(c.health(), RegionHealth::Healthy);
}

#[test]
fn scaling_respects_min_and_max_in_every_call() {
    let mut c = RegionCluster::new(small(2, 5, 10), T0).unwrap();
    assert_eq!(c.servers().count(), 2);
    assert_eq!(c.scale_up(0, T0), 0);
    assert_eq!(c.scale_up(u32::MAX, T0), 3);
    assert_eq!(c.scale_up(1, T0), 0);
    assert_eq!(c.servers().count(), 5);
    assert_eq!(c.stats().started, 5);
    // Zones stay balanced (two zones in this config).
    let in_a = c.servers().filter(|s| s.zone().as_str() == "kr-a").count();
    assert!((2..=3).contains(&in_a), "{in_a} of 5 in kr-a");
    assert_eq!(c.scale_down(0), 0);
    assert_eq!(c.scale_down(u32::MAX), 3);
    assert_eq!(c.scale_down(1), 0);
    assert_eq!(c.servers().count(), 2);
    // Server ids are never reused.
    let ids: Vec<ServerId> = c.servers().map(|s| s.id()).collect();
    c.scale_up(3, T0);
    let all: Vec<ServerId> = c.servers().map(|s| s.id()).collect();
    let mut dedup = all.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), all.len());
    assert!(ids.iter().all(|id| all.contains(id)));
}

#[test]
fn drain_shuts_down_empty_servers_at_once_and_busy_ones_when_empty() {
    let mut c = ready(small(2, 2, 10));
    let placed = c.allocate(MatchId::new(1), 2, ms(20), T0).unwrap();
    let idle = c.servers().map(|s| s.id()).find(|id| *id != placed.id).unwrap();
    c.drain(idle).unwrap();
    assert!(c.server(idle).is_none());
    assert_eq!(c.drain(idle), Err(ClusterError::UnknownServer(idle)));
    c.drain(placed.id).unwrap();
    assert_eq!(c.server(placed.id).map(|s| s.state()), Some(ServerState::Draining));
    // Draining takes no new match.
    assert!(matches!(c.allocate(MatchId::new(2), 2, ms(1), T0), Err(ClusterError::NoCapacity { .. })));
    // Draining twice is harmless.
    c.drain(placed.id).unwrap();
    assert_eq!(c.server_counts().draining, 1);
    c.release(MatchId::new(1)).unwrap();
    assert!(c.server(placed.id).is_none());
    assert_eq!(c.servers().count(), 0);
    assert_eq!(c.server_counts().draining, 0);
}

#[test]
fn health_override_steers_allocation_and_is_reversible() {
    let mut c = ready(small(1, 1, 10));
    c.set_health_override(Some(RegionHealth::Down));
    assert_eq!(c.health(), RegionHealth::Down);
    assert_eq!(c.health_override(), Some(RegionHealth::Down));
    assert_eq!(c.allocate(MatchId::new(1), 2, ms(1), T0), Err(ClusterError::RegionDown));
    assert_eq!(c.stats().allocation_failures, 1);
    assert_eq!(c.current_player_count(), 0);
    c.set_health_override(Some(RegionHealth::Degraded));
    assert_eq!(c.summary(T0).health, RegionHealth::Degraded);
    c.allocate(MatchId::new(1), 2, ms(1), T0).unwrap();
    c.set_health_override(None);
    assert_eq!(c.health_override(), None);
    assert_eq!(c.health(), RegionHealth::Healthy);
    // Spare ratio: 10 slots, ratio 0.1 → degraded below 1 free slot.
    c.add_players(MatchId::new(1), 7, ms(1)).unwrap();
    assert_eq!(c.health(), RegionHealth::Healthy);
    c.add_players(MatchId::new(1), 0, ms(0)).unwrap();
    assert_eq!(c.current_player_count(), 9);
    assert_eq!(c.health(), RegionHealth::Healthy);
    c.add_players(MatchId::new(1), 1, ms(0)).unwrap();
    assert_eq!(c.health(), RegionHealth::Degraded);
}

#[test]
fn draining_an_unhealthy_server_removes_it_without_counting_it_twice() {
    let mut c = ready(small(1, 2, 10));
    let placed = c.allocate(MatchId::new(1), 4, ms(10), T0).unwrap();
    let late = c.config().heartbeat_timeout() + ms(1);
    let t = c.tick(late);
    assert_eq!((t.became_unhealthy, t.matches_lost), (1, 1));
    assert_eq!(c.server(placed.id).map(|s| s.state()), Some(ServerState::Unhealthy));
    c.drain(placed.id).unwrap();
    assert!(c.server(placed.id).is_none());
    assert_eq!(c.server_counts().unhealthy, 0);
    assert_eq!(c.server_counts().draining, 0);
    let t = c.tick(late + ms(1));
    assert_eq!(t.became_unhealthy, 0);
    assert_eq!(c.stats().unhealthy, 1);
    assert_eq!(c.release(MatchId::new(1)), Err(ClusterError::UnknownMatch(MatchId::new(1))));
    assert_eq!(c.current_player_count(), 0);
}
