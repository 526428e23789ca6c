//! FailoverPlanner edge cases through its public API.

#[path = "shared_support/mod.rs"]
mod support;

use std::time::Duration;

use pvp_core::ids::{PlayerId, RegionId, ServerId};
use pvp_global::failover::{
    FailoverDecision, FailoverError, FailoverPlanner, LatencyMatrix, PlannerConfig, RegionAvailability,
    RegionHealth,
};
use support::{drain, ms, planner, session};

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

#[test]
fn tracker_survives_extreme_inputs() {
    use pvp_global::failover::{HealthPolicy, RegionHealthTracker};
    let kr = RegionId::new("kr").unwrap();
    let mut policy = HealthPolicy::default();
    policy.down_error_rate = f64::NAN;
    assert_eq!(RegionHealthTracker::new(policy).err(), Some(FailoverError::InvalidPolicy));
    let mut h = RegionHealthTracker::new(HealthPolicy::default()).unwrap();
    h.add_region(Duration::ZERO, kr).unwrap();
    h.handle_requests(Duration::MAX, kr, u64::MAX, u64::MAX).unwrap();
    h.handle_requests(Duration::MAX, kr, u64::MAX, u64::MAX).unwrap();
    h.handle_timeout(Duration::MAX);
    assert_eq!(h.health(kr), Some(RegionHealth::Down));
    assert_eq!(h.poll_timeout(), None);
}
