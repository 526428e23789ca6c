//! API-contract audit: every public item of pvp-global does what its docs say, bad input gets a
//! typed error (counted where the docs say so) and leaves state unchanged, boundary values and
//! repeated calls behave. Written the way an outside game backend uses the crate; sans-IO, `now`
//! is always passed explicitly.

#[path = "shared_support/mod.rs"]
mod support;

use std::time::Duration;

use pvp_core::hlc::HlcStamp;
use pvp_core::ids::{MatchId, PlayerId, RegionId, ServerId};
use pvp_global::cluster::{
    ClusterError, ConfigError, FleetConfig, JP, KR, MAX_PLAYERS_PER_SERVER, RegionCluster, RegionConfig,
    RegionHealth, SG, ServerState,
};
use pvp_global::crdt::{Actor, Crdt, CrdtMap, GCounter, LwwRegister, MaxRegister, OrSet, PnCounter};
use pvp_global::leaderboard::{GlobalLeaderboard, Leaderboard, ScoreOperator};
use pvp_global::matchmaking::{
    BackfillRequest, GameMode, GameModeId, GlobalMatchmaking, MatchError, MatchOutcome, MatchRequest,
    MatchmakingConfig, PlayerRating, RatingBook, RatingError, RatingSystem, RegionObjective, RequestError,
};
use pvp_global::sync::msg::{self, Body, DecodeError, Message, PROTOCOL_VERSION};
use pvp_global::sync::{CrossRegionSync, SyncConfig};
use support::{T0, backfill_of, mm, mm_with, ms, ready, small};

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

// ---------------------------------------------------------------------------------------------
// RegionConfig / FleetConfig

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
// RegionCluster

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

// ---------------------------------------------------------------------------------------------
// GlobalMatchmaking

/// A 1v1 request measured to every reference region.
fn duel(id: u64, rating: f64, lat: [u64; 3]) -> MatchRequest {
    MatchRequest::new(PlayerId::new(id), rating, KR, GameMode::ONE_V_ONE)
        .latency(KR, ms(lat[0]))
        .latency(JP, ms(lat[1]))
        .latency(SG, ms(lat[2]))
}

#[test]
fn matchmaking_config_rejects_every_out_of_range_field() {
    let check = |f: &dyn Fn(&mut MatchmakingConfig), field: &str| {
        let mut c = MatchmakingConfig::default();
        f(&mut c);
        let err = c.validate().unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidMatchmaking { field: got } if *got == field),
            "{field}: {err:?}"
        );
        assert!(GlobalMatchmaking::new(FleetConfig::reference(), c, T0).is_err());
    };
    for v in [f64::NAN, -1.0, f64::INFINITY] {
        check(&|c| c.skill_window = v, "skill_window");
        check(&|c| c.skill_window_step = v, "skill_window_step");
        check(&|c| c.skill_window_max = v, "skill_window_max");
    }
    check(&|c| c.expansion_interval = Duration::ZERO, "expansion_interval");
    check(&|c| c.lookahead = 0, "lookahead");
    check(&|c| c.max_queued_players = 0, "max_queued_players");
    check(&|c| c.modes.clear(), "modes");
    check(&|c| c.objective = RegionObjective::Percentile(0), "objective");
    check(&|c| c.objective = RegionObjective::Percentile(101), "objective");
    let mode = |id: u16, team_size: u8, teams: u8| GameMode {
        id: GameModeId(id),
        name: "m".into(),
        team_size,
        teams,
    };
    for (m, id) in
        [(mode(9, 0, 2), 9), (mode(9, 1, 1), 9), (mode(9, 7, 2), 9), (mode(9, 3, 5), 9), (mode(1, 2, 2), 1)]
    {
        let c = MatchmakingConfig { modes: vec![GameMode::one_v_one(), m], ..MatchmakingConfig::default() };
        assert!(matches!(c.validate(), Err(ConfigError::InvalidGameMode { mode }) if mode == id));
    }
    // Boundaries that are fine: 6v6, 3 teams of 4, percentile 1 and 100, zero windows.
    for objective in
        [RegionObjective::Percentile(1), RegionObjective::Percentile(100), RegionObjective::Average]
    {
        let c = MatchmakingConfig {
            modes: vec![mode(6, 6, 2), mode(3, 4, 3)],
            objective,
            skill_window: 0.0,
            skill_window_step: 0.0,
            skill_window_max: 0.0,
            ..MatchmakingConfig::default()
        };
        c.validate().unwrap();
    }
}

#[test]
fn extreme_but_valid_settings_never_panic() {
    let config = MatchmakingConfig {
        lookahead: usize::MAX,
        grant_ttl: Duration::MAX,
        queue_timeout: None,
        expansion_interval: Duration::MAX,
        latency_step: Duration::MAX,
        match_id_base: u64::MAX,
        max_queued_players: usize::MAX,
        ..MatchmakingConfig::default()
    };
    let mut mm = mm_with(config);
    let a = mm.find_match(duel(1, 1500.0, [10, 40, 90]), T0).unwrap();
    let b = mm.find_match(duel(2, 1500.0, [10, 40, 90]).widen_latency_to(Duration::MAX), T0).unwrap();
    let far = Duration::MAX - Duration::from_secs(1);
    mm.heartbeat_all(far);
    let report = mm.tick(far);
    assert_eq!(report.matches, 1);
    let m = a.try_result().unwrap().unwrap();
    assert_eq!(b.try_result().unwrap().unwrap().match_id(), m.match_id());
    assert!(m.connect_grant().expires_at >= m.formed_at());
    // Backfill with a huge lookahead and TTL.
    let bf = backfill_of(&m, GameMode::ONE_V_ONE, 0, 1, 1500.0);
    let h = mm.backfill(bf, far).unwrap();
    mm.tick(far);
    assert!(h.try_result().is_none());
    assert!(h.cancel());
}

#[test]
fn requests_with_bad_input_are_typed_counted_and_leave_the_queue_unchanged() {
    let mut mm = mm();
    let regions = ["aa", "ab", "ac", "ad", "ae", "af", "ag", "ah", "ai"];
    let nine =
        regions.iter().fold(MatchRequest::new(PlayerId::new(2), 1500.0, KR, GameMode::ONE_V_ONE), |r, n| {
            r.latency(region(n), ms(5))
        });
    assert!(matches!(mm.find_match(nine, T0), Err(RequestError::TooManyLatencies)));
    // The leader listed in their own party.
    let own = MatchRequest::new(PlayerId::new(3), 1500.0, KR, GameMode::FIVE_V_FIVE)
        .latency(KR, ms(5))
        .party_member(PlayerId::new(3), 1500.0);
    assert_eq!(mm.find_match(own, T0).unwrap_err(), RequestError::DuplicatePartyMember(PlayerId::new(3)));
    // A party of ten (leader + 9) reports its real size.
    let ten = (10..19)
        .fold(MatchRequest::new(PlayerId::new(4), 1500.0, KR, GameMode::FIVE_V_FIVE), |r, i| {
            r.party_member(PlayerId::new(i), 1500.0)
        });
    assert_eq!(mm.find_match(ten, T0).unwrap_err(), RequestError::PartyTooLarge { size: 10, team_size: 5 });
    assert_eq!(
        mm.find_match(duel(5, -0.0001, [1, 1, 1]), T0).unwrap_err(),
        RequestError::InvalidRating { player: PlayerId::new(5), rating: -0.0001 }
    );
    // Rating zero and a latency limit equal to the ceiling are accepted.
    mm.find_match(duel(6, 0.0, [1, 1, 1]).max_latency(ms(50)).widen_latency_to(ms(50)), T0).unwrap();
    let r = mm.stats().rejected;
    assert_eq!(r.too_many_latencies, 1);
    assert_eq!(r.already_queued, 1);
    assert_eq!(r.party_too_large, 1);
    assert_eq!(r.invalid_rating, 1);
    assert_eq!(mm.stats().accepted, 1);
    assert_eq!(mm.queued_players(), 1);
    for p in [2, 3, 4, 5, 10, 18] {
        assert!(!mm.is_queued(PlayerId::new(p)), "player {p}");
    }
}

#[test]
fn latencies_are_last_value_wins_and_unmeasured_regions_are_never_chosen() {
    let req = duel(1, 1500.0, [10, 40, 90]).latency(KR, ms(99)).latency(KR, ms(80));
    assert_eq!(req.latency_to(KR), Some(ms(80)));
    assert_eq!(req.latency_to(JP), Some(ms(40)));
    assert_eq!(req.size(), 1);
    assert_eq!(req.party(), &[]);
    let mut mm = mm();
    // Neither player measured anything: they never meet, and stay queued.
    let a = mm.find_match(MatchRequest::new(PlayerId::new(1), 1500.0, KR, GameMode::ONE_V_ONE), T0).unwrap();
    let b = mm.find_match(MatchRequest::new(PlayerId::new(2), 1500.0, KR, GameMode::ONE_V_ONE), T0).unwrap();
    assert_eq!(mm.tick(T0).matches, 0);
    assert!(a.try_result().is_none() && b.try_result().is_none());
    assert_eq!(mm.queued_players(), 2);
    // Measured only to sg, both meet in sg even though they prefer kr.
    assert!(mm.cancel(PlayerId::new(1)));
    assert!(mm.cancel(PlayerId::new(2)));
    let a = mm.find_match(
        MatchRequest::new(PlayerId::new(1), 1500.0, KR, GameMode::ONE_V_ONE).latency(SG, ms(90)),
        T0,
    );
    let b = mm.find_match(
        MatchRequest::new(PlayerId::new(2), 1500.0, KR, GameMode::ONE_V_ONE).latency(SG, ms(80)),
        T0,
    );
    mm.tick(T0);
    let m = a.unwrap().try_result().unwrap().unwrap();
    assert_eq!(m.region(), SG);
    assert_eq!(b.unwrap().try_result().unwrap().unwrap().region(), SG);
}

#[test]
fn cancel_is_idempotent_from_both_sides() {
    let mut mm = mm();
    let p = PlayerId::new(1);
    assert!(!mm.cancel(p)); // never queued
    let h = mm.find_match(duel(1, 1500.0, [10, 40, 90]), T0).unwrap();
    assert_eq!(h.player(), Some(p));
    assert!(mm.is_queued(p));
    assert!(h.cancel());
    assert!(!mm.is_queued(p));
    assert!(!h.cancel());
    assert!(!mm.cancel(p));
    assert_eq!(h.try_result(), Some(Err(MatchError::Cancelled)));
    assert!(h.is_finished());
    assert_eq!(h.wait(), Err(MatchError::Cancelled));
    assert_eq!(h.wait_timeout(Duration::ZERO), Some(Err(MatchError::Cancelled)));
    let report = mm.tick(T0);
    assert_eq!(report.cancelled, 1);
    assert_eq!(mm.stats().cancelled, 1);
    assert_eq!(mm.queued_players(), 0);
    // Queue again, cancel through the matchmaker this time.
    let h2 = mm.find_match(duel(1, 1500.0, [10, 40, 90]), T0).unwrap();
    assert!(mm.cancel(p));
    assert!(!mm.cancel(p));
    assert!(!h2.cancel());
    assert_eq!(h2.try_result(), Some(Err(MatchError::Cancelled)));
    assert_eq!(mm.stats().cancelled, 2);
    assert_eq!(mm.queued_players(), 0);
    // The old handle is not affected by the new ticket.
    assert_eq!(h.try_result(), Some(Err(MatchError::Cancelled)));
}

#[test]
fn a_party_member_cancels_the_whole_party() {
    let mut mm = mm();
    let req = MatchRequest::new(PlayerId::new(1), 1500.0, KR, GameMode::FIVE_V_FIVE)
        .latency(KR, ms(10))
        .party_member(PlayerId::new(2), 1400.0)
        .party_member(PlayerId::new(3), 1600.0);
    let h = mm.find_match(req, T0).unwrap();
    assert_eq!(mm.queued_players(), 3);
    assert!(mm.is_queued(PlayerId::new(3)));
    assert!(mm.cancel(PlayerId::new(3)));
    assert_eq!(mm.queued_players(), 0);
    for p in 1..=3 {
        assert!(!mm.is_queued(PlayerId::new(p)));
    }
    assert_eq!(h.try_result(), Some(Err(MatchError::Cancelled)));
}

#[test]
fn a_matched_ticket_cannot_be_cancelled_and_results_poll_once() {
    let mut mm = mm();
    let a = mm.find_match(duel(1, 1500.0, [10, 40, 90]), T0).unwrap();
    let b = mm.find_match(duel(2, 1550.0, [10, 40, 90]), T0).unwrap();
    let report = mm.tick(T0);
    assert_eq!((report.matches, report.matched_players, report.tickets), (1, 2, 2));
    assert!(!a.cancel());
    assert!(!mm.cancel(PlayerId::new(2)));
    let m = b.try_result().unwrap().unwrap();
    assert_eq!(a.try_result().unwrap().unwrap(), m);
    assert_eq!(m.region(), KR);
    assert_eq!(m.players().len(), 2);
    assert_eq!(m.team(0).count(), 1);
    assert_eq!(m.team(1).count(), 1);
    assert!(!m.is_backfill());
    assert_eq!(mm.poll_match().as_ref(), Some(&m));
    assert_eq!(mm.poll_match(), None);
    assert_eq!(mm.queued_players(), 0);
    // The players may queue again at once.
    mm.find_match(duel(1, 1500.0, [10, 40, 90]), T0).unwrap();
    // The match holds server slots until released; releasing twice is refused.
    assert_eq!(mm.cluster(KR).unwrap().current_player_count(), 2);
    mm.release_match(KR, m.match_id()).unwrap();
    assert_eq!(mm.release_match(KR, m.match_id()), Err(ClusterError::UnknownMatch(m.match_id())));
    assert_eq!(mm.release_match(region("us"), m.match_id()), Err(ClusterError::UnknownMatch(m.match_id())));
    assert_eq!(mm.cluster(KR).unwrap().current_player_count(), 0);
}

#[test]
fn down_regions_are_avoided_and_tickets_wait_for_a_usable_region() {
    let mut mm = mm();
    assert_eq!(mm.mark_region_down(region("us")), Err(RequestError::UnknownRegion(region("us"))));
    assert_eq!(mm.region_health(region("us")), None);
    for r in [KR, JP, SG] {
        mm.mark_region_down(r).unwrap();
        assert_eq!(mm.region_health(r), Some(RegionHealth::Down));
    }
    let a = mm.find_match(duel(1, 1500.0, [10, 40, 90]), T0).unwrap();
    let b = mm.find_match(duel(2, 1500.0, [10, 40, 90]), T0).unwrap();
    assert_eq!(mm.tick(T0).matches, 0);
    assert!(a.try_result().is_none());
    assert_eq!(mm.queued_players(), 2);
    mm.mark_region_up(SG).unwrap();
    mm.heartbeat_all(ms(1));
    assert_eq!(mm.tick(ms(1)).matches, 1);
    assert_eq!(a.try_result().unwrap().unwrap().region(), SG);
    assert_eq!(b.try_result().unwrap().unwrap().region(), SG);
    assert_eq!(mm.region_summaries(ms(1)).len(), 3);
}

#[test]
fn full_regions_count_no_capacity_and_keep_the_tickets() {
    let fleet =
        FleetConfig { regions: vec![RegionConfig { latency_ms: Default::default(), ..small(1, 1, 2) }] };
    let mut mm = GlobalMatchmaking::new(fleet, MatchmakingConfig::default(), T0).unwrap();
    mm.heartbeat_all(T0);
    let ask = |id| MatchRequest::new(PlayerId::new(id), 1500.0, KR, GameMode::ONE_V_ONE).latency(KR, ms(10));
    let a = mm.find_match(ask(1), T0).unwrap();
    mm.find_match(ask(2), T0).unwrap();
    assert_eq!(mm.tick(T0).matches, 1);
    let c = mm.find_match(ask(3), T0).unwrap();
    let d = mm.find_match(ask(4), T0).unwrap();
    mm.heartbeat_all(ms(1));
    assert_eq!(mm.tick(ms(1)).matches, 0);
    assert_eq!(mm.stats().no_capacity, 1);
    assert!(c.try_result().is_none() && d.try_result().is_none());
    assert_eq!(mm.queued_players(), 2);
    // Free the server: the waiting pair is placed on the next tick.
    let m = a.try_result().unwrap().unwrap();
    mm.release_match(KR, m.match_id()).unwrap();
    mm.heartbeat_all(ms(2));
    assert_eq!(mm.tick(ms(2)).matches, 1);
    assert!(c.try_result().unwrap().is_ok());
}

#[test]
fn queue_timeout_is_exclusive_and_counted() {
    let mut mm =
        mm_with(MatchmakingConfig { queue_timeout: Some(ms(1_000)), ..MatchmakingConfig::default() });
    let h = mm.find_match(duel(1, 1500.0, [10, 40, 90]), T0).unwrap();
    mm.heartbeat_all(ms(1_000));
    assert_eq!(mm.tick(ms(1_000)).timed_out, 0);
    assert!(h.try_result().is_none());
    mm.heartbeat_all(ms(1_001));
    assert_eq!(mm.tick(ms(1_001)).timed_out, 1);
    assert_eq!(h.try_result(), Some(Err(MatchError::TimedOut)));
    assert!(!h.cancel());
    assert_eq!(mm.stats().timed_out, 1);
    assert_eq!(mm.queued_players(), 0);
    assert!(!mm.is_queued(PlayerId::new(1)));
}

#[test]
fn dropping_the_matchmaker_ends_waiting_tickets() {
    let mut mm = mm();
    let h = mm.find_match(duel(1, 1500.0, [10, 40, 90]), T0).unwrap();
    drop(mm);
    assert_eq!(h.try_result(), Some(Err(MatchError::Shutdown)));
    assert_eq!(h.wait(), Err(MatchError::Shutdown));
}

#[test]
fn bad_backfills_are_typed_and_counted() {
    let mut mm = mm();
    let a = mm.find_match(duel(1, 1500.0, [10, 40, 90]), T0).unwrap();
    mm.find_match(duel(2, 1500.0, [10, 40, 90]), T0).unwrap();
    mm.tick(T0);
    let m = a.try_result().unwrap().unwrap();
    let ok = BackfillRequest {
        match_id: m.match_id(),
        region: KR,
        mode: GameMode::ONE_V_ONE,
        team: 1,
        slots: 1,
        rating: 1500.0,
    };
    let cases: Vec<(BackfillRequest, RequestError)> = vec![
        (BackfillRequest { slots: 0, ..ok }, RequestError::BadBackfill),
        (BackfillRequest { slots: 2, ..ok }, RequestError::BadBackfill),
        (BackfillRequest { team: 2, ..ok }, RequestError::BadBackfill),
        (BackfillRequest { rating: f64::NAN, ..ok }, RequestError::BadBackfill),
        (BackfillRequest { rating: -1.0, ..ok }, RequestError::BadBackfill),
        (BackfillRequest { match_id: MatchId::new(999_999), ..ok }, RequestError::UnknownMatch),
        (BackfillRequest { region: JP, ..ok }, RequestError::UnknownMatch),
        (BackfillRequest { region: region("us"), ..ok }, RequestError::UnknownRegion(region("us"))),
        (BackfillRequest { mode: GameModeId(42), ..ok }, RequestError::UnknownMode(GameModeId(42))),
    ];
    for (req, want) in cases {
        assert_eq!(mm.backfill(req, T0).unwrap_err(), want, "{req:?}");
    }
    let r = mm.stats().rejected;
    assert_eq!(r.bad_backfill, 7);
    assert_eq!(r.unknown_region, 1);
    assert_eq!(r.unknown_mode, 1);
    // A valid backfill ends Cancelled when its match is released first.
    let h = mm.backfill(ok, T0).unwrap();
    assert_eq!(h.player(), None);
    mm.release_match(KR, m.match_id()).unwrap();
    mm.heartbeat_all(ms(1));
    mm.tick(ms(1));
    assert_eq!(h.try_result(), Some(Err(MatchError::Cancelled)));
}

#[test]
fn ratings_refuse_bad_input_without_changing_the_book() {
    let mut book = RatingBook::new(RatingSystem::Glicko2);
    let p = PlayerId::new(1);
    let default = book.rating(p);
    assert_eq!(book.default_rating(), default);
    assert!(matches!(
        book.set(p, PlayerRating::Elo(skillratings::elo::EloRating { rating: 1600.0 })),
        Err(RatingError::WrongSystem { book: RatingSystem::Glicko2, given: RatingSystem::Elo })
    ));
    let g = |rating: f64, deviation: f64, volatility: f64| {
        PlayerRating::Glicko2(skillratings::glicko2::Glicko2Rating { rating, deviation, volatility })
    };
    for bad in [g(f64::NAN, 350.0, 0.06), g(1500.0, f64::NAN, 0.06), g(1500.0, 350.0, f64::INFINITY)] {
        assert_eq!(book.set(p, bad), Err(RatingError::NotFinite));
    }
    assert_eq!(book.rating(p), default);
    let q = PlayerId::new(2);
    assert_eq!(book.record(&[], &[q], MatchOutcome::Draw), Err(RatingError::EmptyTeam));
    assert_eq!(book.record(&[p], &[], MatchOutcome::Draw), Err(RatingError::EmptyTeam));
    assert_eq!(book.record(&[p, q], &[p], MatchOutcome::Draw), Err(RatingError::DuplicatePlayer(p)));
    assert_eq!(book.rating(p), default);
    assert_eq!(book.rating(q), default);
    book.record(&[p], &[q], MatchOutcome::FirstTeamWon).unwrap();
    assert!(book.matchmaking_rating(p) > book.matchmaking_rating(q));
    for system in [RatingSystem::Elo, RatingSystem::TrueSkill, RatingSystem::WengLin] {
        let mut b = RatingBook::new(system);
        b.record(&[p], &[q], MatchOutcome::SecondTeamWon).unwrap();
        assert!(b.matchmaking_rating(q) > b.matchmaking_rating(p), "{system:?}");
        let before = (b.rating(p), b.rating(q));
        assert!(b.record(&[q], &[q], MatchOutcome::Draw).is_err());
        assert_eq!((b.rating(p), b.rating(q)), before);
    }
}

#[test]
fn report_outcome_updates_ratings_and_frees_the_server() {
    let mut mm = mm();
    let a = mm.find_match(duel(1, 1500.0, [10, 40, 90]), T0).unwrap();
    mm.find_match(duel(2, 1500.0, [10, 40, 90]), T0).unwrap();
    mm.tick(T0);
    let m = a.try_result().unwrap().unwrap();
    let winner = m.team(0).next().unwrap().player();
    let loser = m.team(1).next().unwrap().player();
    mm.report_outcome(&m, MatchOutcome::FirstTeamWon).unwrap();
    assert!(mm.ratings().matchmaking_rating(winner) > mm.ratings().matchmaking_rating(loser));
    assert_eq!(mm.cluster(m.region()).unwrap().current_player_count(), 0);
    assert_eq!(mm.release_match(m.region(), m.match_id()), Err(ClusterError::UnknownMatch(m.match_id())));
}

// ---------------------------------------------------------------------------------------------
// CRDTs

fn actor(name: &str, inc: u64) -> Actor {
    Actor::new(region(name), inc)
}

fn joined<T: Crdt + Clone>(a: &T, b: &T) -> T {
    let mut x = a.clone();
    x.merge(b);
    x
}

#[test]
fn gcounter_saturates_and_merges_by_max() {
    let (kr, jp) = (actor("kr", 1), actor("jp", 1));
    let mut g = GCounter::new();
    assert_eq!(g.value(), 0);
    assert_eq!(g.count_of(&kr), 0);
    assert!(g.entries().is_empty());
    g.incr(kr, u64::MAX - 1);
    let d = g.incr(kr, 5);
    assert_eq!(g.count_of(&kr), u64::MAX);
    assert_eq!(d.count_of(&kr), u64::MAX);
    g.incr(jp, 7);
    assert_eq!(g.value(), u64::MAX);
    g.incr(jp, 0);
    assert_eq!(g.count_of(&jp), 7);
    // Merge keeps each actor's max; merging an older state changes nothing.
    let mut old = GCounter::new();
    old.incr(jp, 3);
    let before = g.clone();
    g.merge(&old);
    assert_eq!(g, before);
    assert_eq!(joined(&old, &g), g);
    assert_eq!(joined(&g, &GCounter::new()), g);
    assert_eq!(joined(&g, &g), g);
    // Entries are in actor order.
    let actors: Vec<Actor> = g.entries().iter().map(|e| e.0).collect();
    let mut sorted = actors.clone();
    sorted.sort();
    assert_eq!(actors, sorted);
}

#[test]
fn gcounter_from_untrusted_bytes_is_canonical() {
    let (kr, jp) = (actor("kr", 1), actor("jp", 1));
    let mut ok = GCounter::new();
    ok.incr(kr, 5);
    ok.incr(jp, 2);
    let json = serde_json::to_value(&ok).unwrap();
    let entries = json["entries"].as_array().unwrap().clone();
    // Reversed, with a duplicate of a smaller count for kr.
    let mut hostile = entries.clone();
    hostile.reverse();
    let mut dup = entries.iter().find(|e| e[1] == 5).unwrap().clone();
    dup[1] = serde_json::json!(1);
    hostile.push(dup);
    let g: GCounter = serde_json::from_value(serde_json::json!({ "entries": hostile })).unwrap();
    assert_eq!(g, ok);
    assert_eq!(g.count_of(&kr), 5);
    assert_eq!(g.value(), 7);
}

#[test]
fn pncounter_extremes_clamp_to_i64() {
    let (kr, jp) = (actor("kr", 1), actor("jp", 1));
    let mut c = PnCounter::new();
    assert_eq!(c.value(), 0);
    c.add(kr, i64::MIN);
    assert_eq!(c.value(), i64::MIN);
    c.add(jp, i64::MIN);
    assert_eq!(c.value(), i64::MIN);
    let mut up = PnCounter::new();
    up.add(kr, i64::MAX);
    up.add(kr, i64::MAX);
    up.add(kr, i64::MAX);
    assert_eq!(up.value(), i64::MAX);
    up.add(jp, -5);
    assert_eq!(up.value(), i64::MAX);
    let mut z = PnCounter::new();
    z.add(kr, 0);
    assert_eq!(z.value(), 0);
    let mut m = PnCounter::new();
    let d1 = m.add(kr, 10);
    let d2 = m.add(kr, -3);
    assert_eq!(m.value(), 7);
    let mut r = PnCounter::new();
    r.merge(&d2);
    r.merge(&d1);
    r.merge(&d1);
    assert_eq!(r.value(), 7);
    assert_eq!(r, m);
}

#[test]
fn registers_follow_their_documented_order() {
    let s = |wall: u64, logical: u32, r: &str| HlcStamp::new(wall, logical, region(r));
    let mut reg = LwwRegister::new(5i64, s(10, 0, "kr"));
    reg.set(1, s(9, 0, "kr"));
    assert_eq!(*reg.value(), 5);
    reg.set(1, s(10, 0, "kr")); // equal stamp: larger value wins, 5 stays
    assert_eq!(*reg.value(), 5);
    reg.set(9, s(10, 0, "kr")); // equal stamp: 9 > 5
    assert_eq!(*reg.value(), 9);
    reg.set(-1, s(10, 1, "kr"));
    assert_eq!((*reg.value(), reg.stamp()), (-1, s(10, 1, "kr")));
    let a = LwwRegister::new(1i64, s(10, 0, "kr"));
    let b = LwwRegister::new(2i64, s(10, 0, "jp"));
    assert_eq!(joined(&a, &b), joined(&b, &a));
    let mut m = MaxRegister::new(i64::MIN);
    assert_eq!(m.offer(-5).value(), -5);
    m.offer(-9);
    assert_eq!(m.value(), -5);
    m.offer(i64::MAX);
    m.merge(&MaxRegister::new(0));
    assert_eq!(m.value(), i64::MAX);
}

#[test]
fn orset_remove_of_absent_elements_and_repeats() {
    let kr = actor("kr", 1);
    let mut s: OrSet<u64> = OrSet::new();
    assert!(s.is_empty());
    assert_eq!(s.len(), 0);
    assert!(s.remove(&1).is_none());
    assert!(s.remove_delta(&1).is_none());
    assert_eq!(s, OrSet::new());
    s.add(kr, 1);
    s.add(kr, 1); // re-adding replaces the dot, the set holds it once
    assert_eq!(s.len(), 1);
    assert!(s.remove(&1).is_some());
    assert!(s.remove(&1).is_none());
    assert!(!s.contains(&1));
    assert!(s.is_empty());
    // Merging the empty set is the identity; merging is idempotent.
    s.add(kr, 2);
    s.add(kr, 3);
    let before = s.clone();
    s.merge(&OrSet::new());
    assert_eq!(s, before);
    s.merge(&before);
    assert_eq!(s, before);
    assert_eq!(s.iter().copied().collect::<Vec<_>>(), [2, 3]);
    // A removal delta applied to a replica that never saw the add does not resurrect it later.
    let mut other: OrSet<u64> = OrSet::new();
    let add = other.add(actor("jp", 1), 9);
    let mut third: OrSet<u64> = OrSet::new();
    third.merge(&add);
    let rm = third.remove(&9).unwrap();
    let mut late: OrSet<u64> = OrSet::new();
    late.merge(&rm);
    late.merge(&add);
    assert!(!late.contains(&9));
    // add_delta does not apply.
    let d = s.add_delta(kr, 4);
    assert!(!s.contains(&4));
    s.merge(&d);
    assert!(s.contains(&4));
}

#[test]
fn crdt_map_merges_key_by_key() {
    let (kr, jp) = (actor("kr", 1), actor("jp", 1));
    let mut a: CrdtMap<String, GCounter> = CrdtMap::new();
    assert!(a.is_empty());
    assert!(a.get(&"wins".to_owned()).is_none());
    let mut g = GCounter::new();
    let d = a.apply("wins".to_owned(), g.incr(kr, 2));
    let mut b: CrdtMap<String, GCounter> = CrdtMap::new();
    b.apply("wins".to_owned(), GCounter::new().incr(jp, 3));
    b.apply("losses".to_owned(), GCounter::new().incr(jp, 1));
    let ab = joined(&a, &b);
    assert_eq!(ab, joined(&b, &a));
    assert_eq!(ab.len(), 2);
    assert_eq!(ab.get(&"wins".to_owned()).map(GCounter::value), Some(5));
    assert_eq!(joined(&ab, &d), ab);
    assert_eq!(ab.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["losses", "wins"]);
}

// ---------------------------------------------------------------------------------------------
// Leaderboard

#[test]
fn an_empty_board_answers_every_query_without_panicking() {
    let mut b = Leaderboard::new();
    let p = PlayerId::new(1);
    assert!(b.is_empty());
    assert_eq!(b.rank(p), None);
    assert_eq!(b.score(p), None);
    assert_eq!(b.remove(p), None);
    assert!(b.top(0).is_empty());
    assert!(b.top(usize::MAX).is_empty());
    assert!(b.range(usize::MAX, usize::MAX).is_empty());
    assert!(b.around(p, usize::MAX, usize::MAX).is_empty());
    let c = Leaderboard::with_capacity(1000);
    assert!(c.is_empty());
}

#[test]
fn extreme_scores_ties_and_out_of_range_queries() {
    let mut b = Leaderboard::new();
    let id = PlayerId::new;
    assert_eq!(b.update(id(5), i64::MIN), Some(1));
    assert_eq!(b.update(id(4), i64::MAX), Some(1));
    assert_eq!(b.update(id(3), 0), Some(2));
    assert_eq!(b.update(id(u64::MAX), 0), Some(3));
    assert_eq!(b.update(id(0), 0), Some(2)); // tie: lower id first
    assert_eq!(b.rank(id(5)), Some(5));
    // Same score again: nothing moves.
    assert_eq!(b.update(id(3), 0), Some(3));
    assert!(b.set_score(id(3), 0));
    assert_eq!(b.len(), 5);
    let order: Vec<(u64, i64)> = b.top(usize::MAX).iter().map(|e| (e.player.get(), e.score)).collect();
    assert_eq!(order, [(4, i64::MAX), (0, 0), (3, 0), (u64::MAX, 0), (5, i64::MIN)]);
    let ranks: Vec<u64> = b.top(10).iter().map(|e| e.rank).collect();
    assert_eq!(ranks, [1, 2, 3, 4, 5]);
    assert!(b.top(0).is_empty());
    assert_eq!(b.top(2).len(), 2);
    assert!(b.range(5, 10).is_empty());
    assert!(b.range(usize::MAX, 1).is_empty());
    assert!(b.range(0, 0).is_empty());
    assert_eq!(b.range(4, usize::MAX).iter().map(|e| e.rank).collect::<Vec<_>>(), [5]);
    // around at both ends, and with zero context.
    let top = b.around(id(4), 3, 1);
    assert_eq!(top.iter().map(|e| e.player.get()).collect::<Vec<_>>(), [4, 0]);
    let bottom = b.around(id(5), 1, 3);
    assert_eq!(bottom.iter().map(|e| e.player.get()).collect::<Vec<_>>(), [u64::MAX, 5]);
    let me = b.around(id(3), 0, 0);
    assert_eq!(me.len(), 1);
    assert_eq!(me[0].rank, 3);
    assert!(b.around(id(77), 1, 1).is_empty());
    let all = b.around(id(3), usize::MAX, usize::MAX);
    assert_eq!(all.len(), 5);
    // Removing twice: the second is None and changes nothing.
    assert_eq!(b.remove(id(0)), Some(0));
    assert_eq!(b.remove(id(0)), None);
    assert_eq!(b.len(), 4);
    assert_eq!(b.rank(id(3)), Some(2));
    assert_eq!(b.rank(id(0)), None);
    // Moving a player updates their rank both ways.
    assert_eq!(b.update(id(5), i64::MAX), Some(2)); // tie with 4, lower id ranks first
    assert_eq!(b.rank(id(4)), Some(1));
    assert_eq!(b.update(id(5), -1), Some(4));
}

#[test]
fn global_leaderboard_declarations_are_sticky() {
    use pvp_global::leaderboard::GameMode as BoardMode;
    let mut g = GlobalLeaderboard::new();
    assert_eq!(g.operator(BoardMode(1)), None);
    assert!(g.mode(BoardMode(1)).is_none());
    assert!(g.define(BoardMode(1), ScoreOperator::Best));
    assert!(g.define(BoardMode(1), ScoreOperator::Best));
    assert!(!g.define(BoardMode(1), ScoreOperator::Incr));
    assert_eq!(g.operator(BoardMode(1)), Some(ScoreOperator::Best));
    assert!(g.mode(BoardMode(1)).is_some_and(Leaderboard::is_empty));
    assert_eq!(g.modes().collect::<Vec<_>>(), [(BoardMode(1), ScoreOperator::Best)]);
}

// ---------------------------------------------------------------------------------------------
// Sync messages

fn message(body: Body) -> Message {
    Message { from: KR, incarnation: 1, stamp: HlcStamp::new(1, 0, KR), body }
}

#[test]
fn decode_refuses_garbage_with_typed_errors() {
    assert_eq!(msg::decode(&[], 100), Err(DecodeError::Version(None)));
    assert_eq!(
        msg::decode(&[PROTOCOL_VERSION + 1, 0, 0], 100),
        Err(DecodeError::Version(Some(PROTOCOL_VERSION + 1)))
    );
    assert_eq!(
        msg::decode(&[PROTOCOL_VERSION; 101], 100),
        Err(DecodeError::Oversized { len: 101, max: 100 })
    );
    assert_eq!(msg::decode(&[PROTOCOL_VERSION], 100), Err(DecodeError::Malformed));
    assert_eq!(
        msg::decode(&[PROTOCOL_VERSION, 0xff, 0xff, 0xff, 0xff, 0xff], 100),
        Err(DecodeError::Malformed)
    );
    // Every prefix of a valid message and every one-byte corruption decodes or errs, never panics.
    let mut buf = Vec::new();
    msg::encode(&message(Body::DeltaAck { incarnation: 3, upto: 9 }), &mut buf).unwrap();
    assert_eq!(msg::decode(&buf, 1000), Ok(message(Body::DeltaAck { incarnation: 3, upto: 9 })));
    assert_eq!(msg::encoded_len(&message(Body::DeltaAck { incarnation: 3, upto: 9 })), buf.len());
    for n in 1..buf.len() {
        assert!(msg::decode(&buf[..n], 1000).is_err(), "prefix {n}");
    }
    let mut trailing = buf.clone();
    trailing.push(0);
    assert_eq!(msg::decode(&trailing, 1000), Err(DecodeError::Malformed));
    for i in 1..buf.len() {
        for x in [0u8, 1, 0x7f, 0x80, 0xff] {
            let mut b = buf.clone();
            b[i] = x;
            let _ = msg::decode(&b, 1000);
        }
    }
    // Bodies that parse but break their own rules.
    let bad = [
        Body::Deltas { floor: 0, first: 5, last: 4, entries: vec![] },
        Body::Deltas { floor: 6, first: 5, last: 5, entries: vec![] },
        Body::Digest { buckets: vec![0; 3] },
        Body::RepairRequest { buckets: vec![256] },
    ];
    for body in bad {
        msg::encode(&message(body.clone()), &mut buf).unwrap();
        assert_eq!(msg::decode(&buf, 100_000), Err(DecodeError::Malformed), "{body:?}");
    }
    msg::encode(&message(Body::RepairRequest { buckets: vec![0, 255] }), &mut buf).unwrap();
    assert!(msg::decode(&buf, 100_000).is_ok());
}

#[test]
fn a_node_counts_and_drops_bad_datagrams_without_changing_state() {
    let cfg = SyncConfig::new(KR, vec![JP]).unwrap();
    let mut node = CrossRegionSync::new(cfg, ms(1_000));
    node.add_friend(PlayerId::new(1), PlayerId::new(2), ms(1_000)).unwrap();
    let len = node.len();
    let before = node.stats();
    node.handle_datagram(ms(1_001), JP, &[]);
    node.handle_datagram(ms(1_001), JP, &[9, 9, 9]);
    node.handle_datagram(ms(1_001), JP, &[PROTOCOL_VERSION, 0xff, 0xff]);
    node.handle_datagram(ms(1_001), JP, &vec![PROTOCOL_VERSION; 70_000]);
    let after = node.stats();
    assert_eq!(after.version_dropped, before.version_dropped + 2);
    assert_eq!(after.malformed_dropped, before.malformed_dropped + 1);
    assert_eq!(after.oversized_dropped, before.oversized_dropped + 1);
    assert_eq!(node.len(), len);
    assert_eq!(node.friends(PlayerId::new(1)), [PlayerId::new(2)]);
}

#[test]
fn sync_config_rejects_bad_peers_and_ranges() {
    assert!(SyncConfig::new(KR, vec![KR]).is_err());
    assert!(SyncConfig::new(KR, vec![JP, JP]).is_err());
    let mut cfg = SyncConfig::new(KR, vec![JP, SG]).unwrap();
    cfg.max_message_bytes = 100;
    assert!(cfg.validate().is_err());
    let mut cfg = SyncConfig::new(KR, vec![]).unwrap();
    cfg.strong_timeout = Duration::ZERO;
    assert!(cfg.validate().is_err());
}

#[test]
fn huge_timeouts_and_times_never_overflow_in_sync() {
    let mut cfg = SyncConfig::new(KR, vec![JP]).unwrap();
    cfg.strong_timeout = Duration::MAX;
    cfg.strong_retry = Duration::MAX;
    cfg.flush_interval = Duration::MAX;
    cfg.anti_entropy_interval = Duration::MAX;
    cfg.validate().unwrap();
    let now = ms(1_000);
    let mut node = CrossRegionSync::new(cfg, now);
    node.ban(PlayerId::new(1), now).unwrap();
    assert!(node.is_banned(PlayerId::new(1)));
    node.handle_timeout(now);
    node.handle_timeout(Duration::MAX);
    while node.poll_transmit().is_some() {}
    assert!(node.poll_timeout() >= now);
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

#[test]
fn hostile_delta_sequence_numbers_do_not_panic_the_receiver() {
    let cfg = SyncConfig::new(KR, vec![JP]).unwrap();
    let now = ms(5_000);
    let mut node = CrossRegionSync::new(cfg, now);
    let from_jp = |body: Body| {
        let m = Message { from: JP, incarnation: 7, stamp: HlcStamp::new(5_000, 0, JP), body };
        let mut buf = Vec::new();
        msg::encode(&m, &mut buf).unwrap();
        buf
    };
    let before = node.stats().messages_received;
    for _ in 0..3 {
        let bytes = from_jp(Body::Deltas { floor: 0, first: 0, last: u64::MAX, entries: vec![] });
        node.handle_datagram(now, JP, &bytes);
    }
    let bytes = from_jp(Body::Deltas { floor: u64::MAX, first: u64::MAX, last: u64::MAX, entries: vec![] });
    node.handle_datagram(now, JP, &bytes);
    assert_eq!(node.stats().messages_received, before + 4);
    // A datagram claiming to come from another region than its sender is dropped.
    let bytes = from_jp(Body::DeltaAck { incarnation: 1, upto: u64::MAX });
    node.handle_datagram(now, SG, &bytes);
    assert_eq!(node.stats().messages_received, before + 4);
    assert_eq!(node.stats().unknown_peer_dropped, 1);
    // An ack beyond our log head is harmless.
    let bytes = from_jp(Body::DeltaAck { incarnation: node.actor().incarnation, upto: u64::MAX });
    node.handle_datagram(now, JP, &bytes);
    node.add_friend(PlayerId::new(1), PlayerId::new(2), now).unwrap();
    node.handle_timeout(now + ms(100));
    assert_eq!(node.friends(PlayerId::new(1)), [PlayerId::new(2)]);
}

#[test]
fn sync_writes_refuse_bad_input_without_changing_state() {
    use pvp_global::crdt::Scalar;
    use pvp_global::leaderboard::GameMode as BoardMode;
    use pvp_global::sync::{Key, MAX_SET_LEN, MAX_TEXT, SyncError, WriteOp, WriteReceipt};
    let now = ms(1_000);
    let mut node = CrossRegionSync::new(SyncConfig::new(KR, vec![]).unwrap(), now);
    let p = PlayerId::new(1);
    // Removing what is absent is an applied no-op, twice.
    assert_eq!(node.remove_friend(p, PlayerId::new(2), now), Ok(WriteReceipt::Applied));
    assert_eq!(node.remove_friend(p, PlayerId::new(2), now), Ok(WriteReceipt::Applied));
    assert!(node.is_empty());
    assert_eq!(node.submit_score(BoardMode(3), p, 10, now), Err(SyncError::UnknownMode(BoardMode(3))));
    node.define_mode(BoardMode(3), ScoreOperator::Best).unwrap();
    node.define_mode(BoardMode(3), ScoreOperator::Best).unwrap();
    assert_eq!(
        node.define_mode(BoardMode(3), ScoreOperator::Set),
        Err(SyncError::ModeConflict { mode: BoardMode(3), existing: ScoreOperator::Best })
    );
    node.submit_score(BoardMode(3), p, 10, now).unwrap();
    node.submit_score(BoardMode(3), p, 4, now).unwrap();
    assert_eq!(node.leaderboards().mode(BoardMode(3)).and_then(|b| b.score(p)), Some(10));
    let score_key = Key::Score(BoardMode(3), p);
    assert_eq!(node.write(score_key, WriteOp::SetAdd(1), now), Err(SyncError::TypeMismatch(score_key)));
    node.add_friend(p, PlayerId::new(2), now).unwrap();
    let friends = Key::Friends(p);
    assert_eq!(node.write(friends, WriteOp::CounterAdd(1), now), Err(SyncError::TypeMismatch(friends)));
    assert_eq!(node.write(friends, WriteOp::Score(1), now), Err(SyncError::TypeMismatch(friends)));
    let long = "x".repeat(MAX_TEXT + 1);
    let custom = Key::Custom(9);
    assert_eq!(
        node.write(custom, WriteOp::RegisterSet(Scalar::Text(long.clone())), now),
        Err(SyncError::TooLarge(custom))
    );
    node.write(custom, WriteOp::RegisterSet(Scalar::Text("x".repeat(MAX_TEXT))), now).unwrap();
    let profile = Key::Profile(p);
    let field = "f".repeat(33);
    assert_eq!(
        node.write(profile, WriteOp::ProfileSet { field, value: Scalar::Int(1) }, now),
        Err(SyncError::TooLarge(profile))
    );
    node.write(profile, WriteOp::ProfileAdd { field: "wins".into(), delta: 2 }, now).unwrap();
    assert_eq!(
        node.write(profile, WriteOp::ProfileSet { field: "wins".into(), value: Scalar::Int(1) }, now),
        Err(SyncError::TypeMismatch(profile))
    );
    // A set stops growing at MAX_SET_LEN (re-adding a member still works).
    let big = Key::Custom(10);
    for e in 0..MAX_SET_LEN as u64 {
        node.write(big, WriteOp::SetAdd(e), now).unwrap();
    }
    assert_eq!(node.write(big, WriteOp::SetAdd(u64::MAX), now), Err(SyncError::TooLarge(big)));
    node.write(big, WriteOp::SetAdd(0), now).unwrap();
    assert_eq!(node.friends(p), [PlayerId::new(2)]);
    assert_eq!(node.len(), 5);
}
