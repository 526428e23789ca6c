//! FailoverPlanner: stranded players offered a region as soon as one fits, offers replaced when
//! their region goes down, healthy regions over closer degraded ones, degraded and drained
//! regions avoided for new matches only, every region down and restore needing catch-up, the
//! session table's bounds and unknown inputs, too many regions, and the routing table's round
//! trip.

use std::time::Duration;

use pvp_core::ids::{PlayerId, RegionId, ServerId};
use pvp_global::failover::{
    FailoverDecision, FailoverError, FailoverPlanner, HealthPolicy, LatencyMatrix, PlannerConfig,
    RegionAvailability, RegionHealth, RegionHealthTracker, RoutingTable,
};

use super::r;
use crate::common::{drain, ms, planner, session};

#[test]
fn stranded_player_is_offered_a_region_as_soon_as_one_fits() {
    let (mut p, [kr, jp, _]) = planner();
    p.handle_session_placed(session(1, kr, kr, 20)).unwrap(); // only kr within 20 ms
    p.handle_session_placed(session(2, kr, kr, 50)).unwrap();
    p.handle_health(ms(100), kr, RegionHealth::Down).unwrap();
    let d = drain(&mut p);
    assert!(d.contains(&FailoverDecision::PlayerStranded { player: PlayerId::new(1), region: kr }));
    assert!(d.contains(&FailoverDecision::OfferReconnect {
        player: PlayerId::new(2),
        from_server: ServerId::new(20),
        from: kr,
        to: jp
    }));
    assert!(d.contains(&FailoverDecision::RouteChanged { origin: kr, to: Some(jp) }));
    // Never placed over the limit: nobody within 20 ms now.
    assert_eq!(p.route(kr, ms(20)), None);

    // A catch-up report before kr is back proves nothing.
    assert_eq!(p.handle_caught_up(ms(200), kr), Err(FailoverError::NotCatchingUp(kr)));
    p.handle_health(ms(5000), kr, RegionHealth::Healthy).unwrap();
    assert_eq!(drain(&mut p), vec![FailoverDecision::AwaitingCatchUp { region: kr }]);
    assert_eq!(p.availability(kr), Some(RegionAvailability::CatchingUp));
    assert_eq!(p.route(kr, ms(20)), None);
    // Down again while catching up: back to Down, catch-up needed anew.
    p.handle_health(ms(5100), kr, RegionHealth::Down).unwrap();
    p.handle_health(ms(6000), kr, RegionHealth::Healthy).unwrap();
    p.handle_caught_up(ms(7000), kr).unwrap();
    assert_eq!(p.route(kr, ms(20)), Some(kr));
    let d = drain(&mut p);
    assert!(d.contains(&FailoverDecision::RegionRestored { region: kr, at: ms(7000) }));
    assert_eq!(p.stats().rejected, 1);
}

#[test]
fn degraded_and_drained_regions_are_avoided_for_new_matches_only() {
    let (mut p, [kr, jp, sg]) = planner();
    p.handle_session_placed(session(1, kr, kr, 100)).unwrap();
    p.handle_health(ms(1), kr, RegionHealth::Degraded).unwrap();
    assert_eq!(p.route(kr, ms(100)), Some(jp));
    assert_eq!(p.route(kr, ms(20)), Some(kr)); // only kr fits: Degraded beats nothing
    assert!(!drain(&mut p).iter().any(|d| matches!(d, FailoverDecision::OfferReconnect { .. })));
    p.handle_drain(jp, true).unwrap();
    assert_eq!(p.route(kr, ms(100)), Some(sg));
    assert_eq!(p.route(jp, ms(60)), Some(kr));
    assert_eq!(p.routing_table().routes.get(&kr), Some(&Some(sg)));
    assert_eq!(
        p.handle_drain(RegionId::new("eu").unwrap(), true),
        Err(FailoverError::UnknownRegion(RegionId::new("eu").unwrap()))
    );
}

#[test]
fn session_bounds_and_unknowns() {
    let regions = ["kr", "jp"].map(|r| RegionId::new(r).unwrap());
    let mut config = PlannerConfig::default();
    config.max_sessions = 1;
    let mut p = FailoverPlanner::new(config, LatencyMatrix::default());
    p.add_region(regions[0]).unwrap();
    p.handle_session_placed(session(1, regions[0], regions[0], 50)).unwrap();
    // Re-placing the same player is not a new session.
    p.handle_session_placed(session(1, regions[0], regions[0], 60)).unwrap();
    assert_eq!(
        p.handle_session_placed(session(2, regions[0], regions[0], 50)),
        Err(FailoverError::TooManySessions)
    );
    assert_eq!(
        p.handle_session_placed(session(3, regions[1], regions[0], 50)),
        Err(FailoverError::UnknownRegion(regions[1]))
    );
    assert_eq!(p.handle_session_ended(PlayerId::new(9)), Err(FailoverError::UnknownPlayer(PlayerId::new(9))));
    p.handle_session_ended(PlayerId::new(1)).unwrap();
    assert_eq!(p.session_count(), 0);
    // Unknown latency pairs are never routed.
    assert_eq!(p.route(regions[0], ms(1000)), None);
}

// ---------------------------------------------------------------- planner

// `planner()`, `session()` and `drain()` come from the shared support module.

#[test]
fn all_regions_down_strands_players_and_restore_needs_catch_up() {
    let (mut p, [kr, jp, sg]) = planner();
    p.handle_session_placed(session(1, kr, kr, 80)).unwrap();
    for (i, x) in [kr, jp, sg].into_iter().enumerate() {
        p.handle_health(ms(100 * i as u64), x, RegionHealth::Down).unwrap();
    }
    for x in [kr, jp, sg] {
        assert_eq!(p.route(x, Duration::MAX), None);
        assert_eq!(p.availability(x), Some(RegionAvailability::Down));
        assert_eq!(p.routing_table().routes.get(&x), Some(&None));
    }
    let d = drain(&mut p);
    assert!(d.contains(&FailoverDecision::PlayerStranded { player: PlayerId::new(1), region: kr }));
    assert_eq!(p.stats().regions_down, 3);
    // A report of catch-up before the region returned proves nothing.
    assert_eq!(p.handle_caught_up(ms(500), jp), Err(FailoverError::NotCatchingUp(jp)));
    p.handle_health(ms(600), jp, RegionHealth::Healthy).unwrap();
    assert_eq!(p.availability(jp), Some(RegionAvailability::CatchingUp));
    assert_eq!(p.route(kr, ms(80)), None, "no matches before catch-up");
    assert_eq!(drain(&mut p), vec![FailoverDecision::AwaitingCatchUp { region: jp }]);
    p.handle_caught_up(ms(700), jp).unwrap();
    assert_eq!(p.handle_caught_up(ms(701), jp), Err(FailoverError::NotCatchingUp(jp)));
    assert_eq!(p.route(kr, ms(80)), Some(jp));
    let d = drain(&mut p);
    assert!(d.contains(&FailoverDecision::RegionRestored { region: jp, at: ms(700) }));
    assert!(d.contains(&FailoverDecision::OfferReconnect {
        player: PlayerId::new(1),
        from_server: ServerId::new(10),
        from: kr,
        to: jp,
    }));
    assert_eq!(p.stats().regions_restored, 1);
    assert_eq!(p.handle_caught_up(ms(800), r("xx")), Err(FailoverError::UnknownRegion(r("xx"))));
}

#[test]
fn an_offer_to_a_region_that_then_goes_down_is_replaced() {
    let (mut p, [kr, jp, sg]) = planner();
    p.handle_session_placed(session(1, kr, kr, 80)).unwrap();
    p.handle_session_placed(session(2, kr, kr, 40)).unwrap();
    p.handle_health(ms(100), kr, RegionHealth::Down).unwrap();
    let d = drain(&mut p);
    for player in [1, 2] {
        assert!(d.contains(&FailoverDecision::OfferReconnect {
            player: PlayerId::new(player),
            from_server: ServerId::new(player * 10),
            from: kr,
            to: jp,
        }));
    }
    // jp dies before the players reconnected: player 1 (80 ms) goes to sg, player 2 (40 ms)
    // has nowhere to go and is stranded.
    p.handle_health(ms(200), jp, RegionHealth::Down).unwrap();
    let d = drain(&mut p);
    assert!(
        d.contains(&FailoverDecision::OfferReconnect {
            player: PlayerId::new(1),
            from_server: ServerId::new(10),
            from: kr,
            to: sg,
        }),
        "{d:?}"
    );
    assert!(d.contains(&FailoverDecision::PlayerStranded { player: PlayerId::new(2), region: kr }), "{d:?}");
}

#[test]
fn only_healthy_region_wins_over_a_closer_degraded_one() {
    let (mut p, [kr, jp, _sg]) = planner();
    p.handle_health(ms(1), kr, RegionHealth::Degraded).unwrap();
    assert_eq!(p.route(kr, ms(100)), Some(jp));
    // Degraded still serves when nothing healthy is within the limit.
    assert_eq!(p.route(kr, ms(10)), Some(kr));
    // Drained regions take no new matches.
    p.handle_drain(jp, true).unwrap();
    assert_eq!(p.route(kr, ms(100)), Some(r("sg")));
    assert_eq!(p.route(kr, ms(60)), Some(kr));
    p.handle_drain(jp, false).unwrap();
    assert_eq!(p.route(kr, ms(100)), Some(jp));
    assert_eq!(p.handle_drain(r("xx"), true), Err(FailoverError::UnknownRegion(r("xx"))));
    // Unknown latency pairs are never routed.
    assert_eq!(p.route(r("xx"), Duration::MAX), None);
}

#[test]
fn session_table_limits_and_unknown_inputs_are_typed_errors() {
    let regions = ["kr", "jp"].map(r);
    let mut cfg = PlannerConfig::default();
    cfg.max_sessions = 1;
    let mut p = FailoverPlanner::new(cfg, LatencyMatrix::default());
    for x in regions {
        p.add_region(x).unwrap();
        p.add_region(x).unwrap();
    }
    let [kr, jp] = regions;
    p.handle_session_placed(session(1, kr, kr, 50)).unwrap();
    assert_eq!(p.handle_session_placed(session(2, kr, kr, 50)), Err(FailoverError::TooManySessions));
    // Re-placing the tracked player fits.
    p.handle_session_placed(session(1, jp, kr, 50)).unwrap();
    assert_eq!(p.session(PlayerId::new(1)).map(|s| s.region), Some(jp));
    assert_eq!(p.session_count(), 1);
    assert_eq!(
        p.handle_session_placed(session(3, r("xx"), kr, 50)),
        Err(FailoverError::UnknownRegion(r("xx")))
    );
    assert_eq!(p.handle_session_ended(PlayerId::new(9)), Err(FailoverError::UnknownPlayer(PlayerId::new(9))));
    p.handle_session_ended(PlayerId::new(1)).unwrap();
    assert_eq!(p.handle_session_ended(PlayerId::new(1)), Err(FailoverError::UnknownPlayer(PlayerId::new(1))));
    assert_eq!(
        p.handle_health(ms(0), r("xx"), RegionHealth::Down),
        Err(FailoverError::UnknownRegion(r("xx")))
    );
    assert_eq!(p.stats().rejected, 5);
    let mut zero = PlannerConfig::default();
    zero.max_sessions = 0;
    let mut p = FailoverPlanner::new(zero, LatencyMatrix::default());
    p.add_region(kr).unwrap();
    assert_eq!(p.handle_session_placed(session(1, kr, kr, 50)), Err(FailoverError::TooManySessions));
}

#[test]
fn routing_table_round_trips_and_refuses_garbage() {
    let mut t = RoutingTable::default();
    assert_eq!(RoutingTable::decode(&t.encode()).unwrap(), t);
    t.routes.insert(r("kr"), Some(r("jp")));
    t.routes.insert(r("jp"), None);
    assert_eq!(RoutingTable::decode(&t.encode()).unwrap(), t);
    // A region may be named `-`: it must not read back as "no route".
    let dash = r("-");
    t.routes.insert(dash, Some(dash));
    t.routes.insert(r("sg"), Some(dash));
    assert_eq!(RoutingTable::decode(&t.encode()).unwrap(), t);
    assert_eq!(RoutingTable::decode(b"kr=\n").unwrap().routes.get(&r("kr")), Some(&None));
    for bad in [&b"kr"[..], b"=", b"kr=jp=sg", b"kr=jp\nkr=", b"\xff\xfe", b"KR=jp"] {
        assert_eq!(RoutingTable::decode(bad), Err(FailoverError::BadRoutingTable), "{bad:?}");
    }
}

#[test]
fn too_many_regions_is_a_typed_error() {
    let mut h = RegionHealthTracker::new(HealthPolicy::default()).unwrap();
    let mut p = FailoverPlanner::new(PlannerConfig::default(), LatencyMatrix::default());
    for i in 0..pvp_global::failover::MAX_REGIONS {
        let x = r(&format!("r{i}"));
        h.add_region(ms(0), x).unwrap();
        p.add_region(x).unwrap();
    }
    let extra = r("extra");
    assert_eq!(h.add_region(ms(0), extra), Err(FailoverError::TooManyRegions));
    assert_eq!(p.add_region(extra), Err(FailoverError::TooManyRegions));
    assert_eq!(h.health(extra), None);
    assert_eq!(p.availability(extra), None);
    // Re-adding a tracked region at the limit is still fine.
    assert!(h.add_region(ms(0), r("r0")).is_ok());
    assert!(p.add_region(r("r0")).is_ok());
}
