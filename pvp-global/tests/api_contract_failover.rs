//! API-contract tests of coordination and failover, written as an outside game backend would
//! use them: every public promise in the rustdoc, including the edge cases.

#[path = "shared_support/mod.rs"]
mod support;

use std::time::Duration;

use pvp_core::ids::{PlayerId, RegionId, ServerId};
use pvp_global::coord::{
    CasOutcome, ChangeKind, CoordError, Coordinator, Expected, LeaseId, LocalCoordinator,
    LocalCoordinatorConfig, MAX_LEASE_TTL, MAX_NAME_LEN, MAX_VALUE_LEN, MIN_LEASE_TTL, ManualClock,
    SharedLocalCoordinator, WatchScope,
};
use pvp_global::failover::{
    FailoverDecision, FailoverError, FailoverPlanner, HealthPolicy, LatencyMatrix, PlannerConfig,
    RegionAvailability, RegionFailover, RegionHealth, RegionHealthTracker, RoutingTable,
};
use support::{drain, planner, session};

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn r(s: &str) -> RegionId {
    RegionId::new(s).unwrap()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    // Every SharedLocalCoordinator call completes on its first poll; bound the loop anyway.
    for _ in 0..1000 {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("future did not complete");
}

// ---------------------------------------------------------------- leases

#[test]
fn lease_expires_exactly_at_its_deadline_and_keep_alive_renews_from_now() {
    let mut c = LocalCoordinator::default();
    let l = c.grant_lease(ms(0), Duration::from_secs(2)).unwrap();
    assert_eq!(c.poll_timeout(), Some(ms(2000)));
    assert!(c.lease_alive(ms(1999), l));
    assert_eq!(c.keep_alive(ms(1999), l).unwrap(), Duration::from_secs(2));
    assert_eq!(c.poll_timeout(), Some(ms(3999)));
    assert!(c.lease_alive(ms(3998), l));
    assert!(!c.lease_alive(ms(3999), l), "a lease is gone at its deadline");
    assert!(matches!(c.keep_alive(ms(3999), l), Err(CoordError::LeaseNotFound(x)) if x == l));
    assert_eq!(c.poll_timeout(), None);
    assert_eq!(c.stats().leases_expired, 1);
    assert_eq!(c.stats().leases_granted, 1);
}

#[test]
fn lease_ttl_outside_range_is_a_typed_error_and_counted() {
    let mut c = LocalCoordinator::default();
    for bad in [
        Duration::ZERO,
        MIN_LEASE_TTL - Duration::from_nanos(1),
        MAX_LEASE_TTL + Duration::from_nanos(1),
        Duration::MAX,
    ] {
        assert!(matches!(c.grant_lease(ms(0), bad), Err(CoordError::TtlOutOfRange(t)) if t == bad));
    }
    assert_eq!(c.stats().rejected, 4);
    assert_eq!(c.stats().leases_granted, 0);
    let short = c.grant_lease(ms(0), MIN_LEASE_TTL).unwrap();
    let long = c.grant_lease(ms(0), MAX_LEASE_TTL).unwrap();
    assert_ne!(short, long);
    assert_eq!(c.poll_timeout(), Some(MIN_LEASE_TTL));
    // A lease granted near the end of time does not overflow.
    let late = c.grant_lease(Duration::MAX - ms(1), MAX_LEASE_TTL).unwrap();
    assert!(c.lease_alive(Duration::MAX - ms(1), late));
}

#[test]
fn revoke_twice_and_unknown_leases_are_lease_not_found() {
    let mut c = LocalCoordinator::default();
    let kr = r("kr");
    let l = c.grant_lease(ms(0), Duration::from_secs(5)).unwrap();
    c.announce_region(ms(0), kr, l).unwrap();
    assert!(c.campaign(ms(0), "jobs/lb", kr, l).unwrap().won);
    c.revoke_lease(ms(10), l).unwrap();
    assert!(c.live_regions(ms(10)).unwrap().is_empty());
    assert_eq!(c.leader(ms(10), "jobs/lb").unwrap(), None);
    assert!(matches!(c.revoke_lease(ms(20), l), Err(CoordError::LeaseNotFound(_))));
    let unknown = LeaseId(987_654);
    assert!(matches!(c.keep_alive(ms(20), unknown), Err(CoordError::LeaseNotFound(_))));
    assert!(matches!(c.announce_region(ms(20), kr, unknown), Err(CoordError::LeaseNotFound(_))));
    assert!(matches!(c.campaign(ms(20), "jobs/lb", kr, unknown), Err(CoordError::LeaseNotFound(_))));
    assert!(!c.lease_alive(ms(20), unknown));
    assert_eq!(c.stats().rejected, 4);
    // Revocation is not an expiry.
    assert_eq!(c.stats().leases_expired, 0);
}

#[test]
fn lease_capacity_is_a_typed_error_and_frees_on_expiry() {
    let mut cfg = LocalCoordinatorConfig::default();
    cfg.max_leases = 1;
    let mut c = LocalCoordinator::new(cfg);
    let _a = c.grant_lease(ms(0), Duration::from_secs(1)).unwrap();
    assert!(matches!(c.grant_lease(ms(0), Duration::from_secs(1)), Err(CoordError::CapacityExceeded(_))));
    // Expired at 1 s: room again.
    assert!(c.grant_lease(ms(1000), Duration::from_secs(1)).is_ok());
}

#[test]
fn key_capacity_is_a_typed_error_and_overwrites_still_fit() {
    let mut cfg = LocalCoordinatorConfig::default();
    cfg.max_keys = 1;
    let mut c = LocalCoordinator::new(cfg);
    let v = match c.compare_and_set(ms(0), "a", Expected::Absent, b"1".to_vec()).unwrap() {
        CasOutcome::Applied { version } => version,
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        c.compare_and_set(ms(0), "b", Expected::Absent, b"1".to_vec()),
        Err(CoordError::CapacityExceeded(_))
    ));
    assert!(matches!(
        c.compare_and_set(ms(0), "a", Expected::Version(v), b"2".to_vec()),
        Ok(CasOutcome::Applied { .. })
    ));
    assert_eq!(c.read_record(ms(0), "b").unwrap(), None);
    assert_eq!(c.read_record(ms(0), "a").unwrap().unwrap().value, b"2");
}

#[test]
fn time_going_backwards_never_extends_a_lease() {
    let mut c = LocalCoordinator::default();
    let l = c.grant_lease(Duration::from_secs(10), Duration::from_secs(2)).unwrap();
    // An older `now` counts as the newest seen (10 s): renewed to 12 s, not to 7 s or beyond.
    c.keep_alive(Duration::from_secs(5), l).unwrap();
    assert_eq!(c.poll_timeout(), Some(Duration::from_secs(12)));
    assert!(c.lease_alive(ms(11_999), l));
    assert!(!c.lease_alive(ms(12_000), l));
    assert!(!c.lease_alive(ms(1), l), "after expiry an old `now` does not resurrect it");
}

// ---------------------------------------------------------------- leader election

#[test]
fn one_leader_at_a_time_with_handover_on_expiry_and_resign() {
    let mut c = LocalCoordinator::default();
    let (kr, jp) = (r("kr"), r("jp"));
    let a = c.grant_lease(ms(0), Duration::from_secs(2)).unwrap();
    let b = c.grant_lease(ms(0), Duration::from_secs(2)).unwrap();
    let won = c.campaign(ms(0), "lb", kr, a).unwrap();
    assert_eq!((won.leader, won.won), (kr, true));
    let lost = c.campaign(ms(1), "lb", jp, b).unwrap();
    assert_eq!((lost.leader, lost.won), (kr, false));
    // Re-campaign by the holder: a no-op that reports won.
    assert!(c.campaign(ms(2), "lb", kr, a).unwrap().won);
    // The right region under the wrong lease does not lead.
    assert!(!c.campaign(ms(3), "lb", kr, b).unwrap().won);
    assert_eq!(c.stats().campaigns_won, 2);
    assert_eq!(c.stats().campaigns_lost, 2);
    // Resign needs the holding lease; resigning twice returns false.
    assert!(!c.resign(ms(4), "lb", b).unwrap());
    assert!(c.resign(ms(5), "lb", a).unwrap());
    assert!(!c.resign(ms(6), "lb", a).unwrap());
    assert_eq!(c.leader(ms(6), "lb").unwrap(), None);
    // Re-election, then handover when the leader's lease expires while jp keeps its own alive.
    assert!(c.campaign(ms(7), "lb", kr, a).unwrap().won);
    c.keep_alive(ms(1900), b).unwrap();
    assert_eq!(c.leader(ms(1999), "lb").unwrap(), Some(kr));
    assert_eq!(c.leader(ms(2000), "lb").unwrap(), None);
    let jp_wins = c.campaign(ms(2000), "lb", jp, b).unwrap();
    assert_eq!((jp_wins.leader, jp_wins.won), (jp, true));
    assert!(matches!(c.campaign(ms(2001), "lb", kr, a), Err(CoordError::LeaseNotFound(_))));
}

#[test]
fn re_announcing_moves_the_region_to_the_new_lease() {
    let mut c = LocalCoordinator::default();
    let kr = r("kr");
    let a = c.grant_lease(ms(0), Duration::from_secs(2)).unwrap();
    let b = c.grant_lease(ms(0), Duration::from_secs(10)).unwrap();
    c.announce_region(ms(0), kr, a).unwrap();
    let rev = c.revision();
    c.announce_region(ms(1), kr, a).unwrap();
    assert_eq!(c.revision(), rev, "announcing the same thing again changes nothing");
    c.announce_region(ms(2), kr, b).unwrap();
    c.revoke_lease(ms(3), a).unwrap();
    assert_eq!(c.live_regions(ms(3)).unwrap(), vec![kr]);
    assert_eq!(c.live_regions(ms(9_999)).unwrap(), vec![kr]);
    assert!(c.live_regions(ms(10_000)).unwrap().is_empty());
}

// ---------------------------------------------------------------- names, values, records

#[test]
fn bad_names_and_values_are_typed_errors_without_side_effects() {
    let mut c = LocalCoordinator::default();
    let kr = r("kr");
    let l = c.grant_lease(ms(0), Duration::from_secs(5)).unwrap();
    let long = "a".repeat(MAX_NAME_LEN + 1);
    for bad in ["", "Upper", "sp ace", "ü", "a\0b", long.as_str()] {
        assert!(matches!(c.read_record(ms(0), bad), Err(CoordError::InvalidName)), "{bad:?}");
        assert!(matches!(
            c.compare_and_set(ms(0), bad, Expected::Absent, vec![1]),
            Err(CoordError::InvalidName)
        ));
        assert!(matches!(c.delete_record(ms(0), bad, Expected::Version(1)), Err(CoordError::InvalidName)));
        assert!(matches!(c.campaign(ms(0), bad, kr, l), Err(CoordError::InvalidName)));
        assert!(matches!(c.leader(ms(0), bad), Err(CoordError::InvalidName)));
        assert!(matches!(c.resign(ms(0), bad, l), Err(CoordError::InvalidName)));
    }
    assert!(matches!(c.watch(&WatchScope::Records("BAD".into())), Err(CoordError::InvalidName)));
    assert_eq!(c.revision(), 0);
    let longest = "a".repeat(MAX_NAME_LEN);
    assert!(c.compare_and_set(ms(0), &longest, Expected::Absent, vec![0; MAX_VALUE_LEN]).is_ok());
    assert!(matches!(
        c.compare_and_set(ms(0), "big", Expected::Absent, vec![0; MAX_VALUE_LEN + 1]),
        Err(CoordError::ValueTooLarge(n)) if n == MAX_VALUE_LEN + 1
    ));
    assert_eq!(c.read_record(ms(0), "big").unwrap(), None);
    assert!(c.watch(&WatchScope::Records(String::new())).is_ok());
}

#[test]
fn cas_and_delete_follow_versions_which_only_grow() {
    let mut c = LocalCoordinator::default();
    let applied = |o: CasOutcome| match o {
        CasOutcome::Applied { version } => version,
        other => panic!("{other:?}"),
    };
    let v1 = applied(c.compare_and_set(ms(0), "drain/kr", Expected::Absent, b"1".to_vec()).unwrap());
    assert_eq!(c.read_record(ms(0), "drain/kr").unwrap().unwrap().version, v1);
    // A stale version conflicts and reports what is there.
    match c.compare_and_set(ms(0), "drain/kr", Expected::Version(v1 + 100), b"x".to_vec()).unwrap() {
        CasOutcome::Conflict { current: Some(cur) } => {
            assert_eq!((cur.value, cur.version), (b"1".to_vec(), v1))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.compare_and_set(ms(0), "other", Expected::Version(v1), b"x".to_vec()).unwrap(),
        CasOutcome::Conflict { current: None }
    ));
    assert!(!c.delete_record(ms(0), "drain/kr", Expected::Absent).unwrap());
    assert!(!c.delete_record(ms(0), "drain/kr", Expected::Version(v1 + 1)).unwrap());
    assert!(c.delete_record(ms(0), "drain/kr", Expected::Version(v1)).unwrap());
    assert!(!c.delete_record(ms(0), "drain/kr", Expected::Version(v1)).unwrap(), "deleting twice");
    assert!(!c.delete_record(ms(0), "never", Expected::Absent).unwrap());
    let v2 = applied(c.compare_and_set(ms(0), "drain/kr", Expected::Absent, b"2".to_vec()).unwrap());
    assert!(v2 > v1, "a record created again gets a larger version");
    assert_eq!(c.stats().cas_applied, 2);
    assert_eq!(c.stats().cas_conflicts, 2);
}

#[test]
fn shared_coordinator_watch_reports_region_up_and_down_on_expiry() {
    let clock = ManualClock::default();
    let coord = SharedLocalCoordinator::new(LocalCoordinator::default(), clock.clone());
    let kr = r("kr");
    let mut feed = block_on(coord.watch(WatchScope::Regions)).unwrap();
    assert!(feed.try_next_change().is_none());
    let l = block_on(coord.grant_lease(Duration::from_secs(1))).unwrap();
    block_on(coord.announce_region(kr, l)).unwrap();
    clock.advance(ms(999));
    assert!(coord.lease_believed_valid(l));
    clock.advance(ms(1));
    assert!(!coord.lease_believed_valid(l));
    let up = feed.try_next_change().unwrap().unwrap();
    let down = feed.try_next_change().unwrap().unwrap();
    assert_eq!(up.kind, ChangeKind::RegionUp(kr));
    assert_eq!(down.kind, ChangeKind::RegionDown(kr));
    assert!(down.revision > up.revision);
    assert!(feed.try_next_change().is_none());
    assert!(matches!(block_on(coord.keep_alive(l)), Err(CoordError::LeaseNotFound(_))));
}

// ---------------------------------------------------------------- health

#[test]
fn health_policy_validation_refuses_nan_unordered_and_out_of_range() {
    let base = HealthPolicy::default();
    assert!(base.validate().is_ok());
    let mut bad = Vec::new();
    for rate in [f64::NAN, -0.1, 1.1, f64::INFINITY] {
        let mut p = base;
        p.degraded_error_rate = rate;
        bad.push(p);
        let mut p = base;
        p.down_error_rate = rate;
        bad.push(p);
    }
    let mut p = base;
    p.degraded_error_rate = 0.6;
    p.down_error_rate = 0.5;
    bad.push(p);
    let mut p = base;
    p.degraded_after_silence = ms(2000);
    p.down_after_silence = ms(1000);
    bad.push(p);
    let mut p = base;
    p.error_window = Duration::ZERO;
    bad.push(p);
    let mut p = base;
    p.degraded_after_silence = Duration::ZERO;
    bad.push(p);
    let mut p = base;
    p.degraded_after_silence = Duration::ZERO;
    p.down_after_silence = Duration::ZERO;
    bad.push(p);
    for p in bad {
        assert_eq!(p.validate(), Err(FailoverError::InvalidPolicy), "{p:?}");
        assert!(matches!(RegionHealthTracker::new(p), Err(FailoverError::InvalidPolicy)));
        assert!(matches!(
            RegionFailover::new(p, PlannerConfig::default(), LatencyMatrix::default()),
            Err(FailoverError::InvalidPolicy)
        ));
    }
}

#[test]
fn duration_max_policy_never_goes_down_from_silence_and_does_not_overflow() {
    let mut p = HealthPolicy::default();
    p.degraded_after_silence = Duration::MAX;
    p.down_after_silence = Duration::MAX;
    p.error_window = Duration::MAX;
    p.recovery_hold = Duration::MAX;
    let kr = r("kr");
    let mut h = RegionHealthTracker::new(p).unwrap();
    h.add_region(ms(0), kr).unwrap();
    h.handle_timeout(Duration::from_secs(1_000_000_000));
    assert_eq!(h.health(kr), Some(RegionHealth::Healthy));
    assert!(h.poll_transition().is_none());
    // Every deadline saturates at Duration::MAX, which is still in the future.
    assert_eq!(h.poll_timeout(), Some(Duration::MAX));
    // Lease loss still downs it, and a hold of Duration::MAX never lets it recover.
    h.handle_lease(Duration::from_secs(1_000_000_001), kr, false).unwrap();
    h.handle_lease(Duration::from_secs(1_000_000_002), kr, true).unwrap();
    h.handle_timeout(Duration::MAX);
    assert_eq!(h.health(kr), Some(RegionHealth::Down));
}

#[test]
fn zero_error_rate_thresholds_need_min_samples_before_they_count() {
    let mut p = HealthPolicy::default();
    p.degraded_error_rate = 0.0;
    p.down_error_rate = 0.0;
    p.min_samples = 10;
    let kr = r("kr");
    let mut h = RegionHealthTracker::new(p).unwrap();
    h.add_region(ms(0), kr).unwrap();
    h.handle_heartbeat(ms(100), kr).unwrap();
    h.handle_requests(ms(100), kr, 3, 0).unwrap();
    // 3 requests < min_samples: the error rate does not count yet.
    assert_eq!(h.health(kr), Some(RegionHealth::Healthy));
    assert!(h.poll_transition().is_none());
    h.handle_requests(ms(200), kr, 7, 0).unwrap();
    // 10 requests: a rate of 0 meets a threshold of 0.
    assert_eq!(h.health(kr), Some(RegionHealth::Down));
}

#[test]
fn unknown_regions_are_typed_errors_and_counted() {
    let (kr, xx) = (r("kr"), r("xx"));
    let mut h = RegionHealthTracker::new(HealthPolicy::default()).unwrap();
    h.add_region(ms(0), kr).unwrap();
    assert_eq!(h.handle_heartbeat(ms(1), xx), Err(FailoverError::UnknownRegion(xx)));
    assert_eq!(h.handle_requests(ms(1), xx, 1, 1), Err(FailoverError::UnknownRegion(xx)));
    assert_eq!(h.handle_lease(ms(1), xx, false), Err(FailoverError::UnknownRegion(xx)));
    assert_eq!(h.stats().unknown_region, 3);
    assert_eq!(h.health(xx), None);
    let change = pvp_global::coord::Change { revision: 1, kind: ChangeKind::RegionDown(xx) };
    assert!(!h.handle_change(ms(2), &change));
    let other =
        pvp_global::coord::Change { revision: 2, kind: ChangeKind::RecordDeleted { name: "x".into() } };
    assert!(!h.handle_change(ms(2), &other));
    let ours = pvp_global::coord::Change { revision: 3, kind: ChangeKind::RegionDown(kr) };
    assert!(h.handle_change(ms(3), &ours));
    assert_eq!(h.health(kr), Some(RegionHealth::Down));
    // Adding again changes nothing (still Down).
    h.add_region(ms(4), kr).unwrap();
    assert_eq!(h.health(kr), Some(RegionHealth::Down));
}

#[test]
fn recovery_hold_boundary_and_flapping() {
    let kr = r("kr");
    let policy = HealthPolicy::default(); // hold 2 s
    let mut h = RegionHealthTracker::new(policy).unwrap();
    h.add_region(ms(0), kr).unwrap();
    h.handle_lease(ms(100), kr, false).unwrap();
    // Flapping: the lease comes and goes every 500 ms for 4.5 s; never recovers, one Down.
    let mut alive = true;
    for t in (200..=4700).step_by(500) {
        h.handle_heartbeat(ms(t), kr).unwrap();
        h.handle_lease(ms(t), kr, alive).unwrap();
        alive = !alive;
    }
    assert_eq!(h.health(kr), Some(RegionHealth::Down));
    // Stable from 5700 on: better since 5700, healthy exactly at 7700 and not before.
    h.handle_lease(ms(5700), kr, true).unwrap();
    let mut t = 5700;
    while t < 7700 {
        h.handle_heartbeat(ms(t), kr).unwrap();
        assert_eq!(h.health(kr), Some(RegionHealth::Down), "at {t} ms");
        t += 250;
    }
    h.handle_heartbeat(ms(7699), kr).unwrap();
    assert_eq!(h.health(kr), Some(RegionHealth::Down));
    h.handle_heartbeat(ms(7700), kr).unwrap();
    assert_eq!(h.health(kr), Some(RegionHealth::Healthy));
    let all: Vec<_> = std::iter::from_fn(|| h.poll_transition()).collect();
    assert_eq!(all.iter().map(|t| t.to).collect::<Vec<_>>(), [RegionHealth::Down, RegionHealth::Healthy]);
    assert_eq!(all[1].at, ms(7700));
    assert_eq!(h.stats().downs, 1);
}

#[test]
fn time_going_backwards_does_not_undo_silence() {
    let kr = r("kr");
    let mut h = RegionHealthTracker::new(HealthPolicy::default()).unwrap();
    h.add_region(ms(0), kr).unwrap();
    h.handle_timeout(ms(2000));
    assert_eq!(h.health(kr), Some(RegionHealth::Down));
    // A late-arriving heartbeat stamped in the past counts at the newest time seen.
    h.handle_heartbeat(ms(100), kr).unwrap();
    let ts: Vec<_> = std::iter::from_fn(|| h.poll_transition()).map(|t| t.at).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]));
    assert!(h.poll_timeout().is_none_or(|t| t > ms(2000)));
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
fn region_failover_refuses_unknown_regions_and_counts() {
    let mut f =
        RegionFailover::new(HealthPolicy::default(), PlannerConfig::default(), LatencyMatrix::default())
            .unwrap();
    let kr = r("kr");
    f.add_region(ms(0), kr).unwrap();
    f.add_region(ms(0), kr).unwrap();
    let xx = r("xx");
    assert_eq!(f.handle_heartbeat(ms(1), xx), Err(FailoverError::UnknownRegion(xx)));
    assert_eq!(f.handle_requests(ms(1), xx, 1, 0), Err(FailoverError::UnknownRegion(xx)));
    assert_eq!(f.handle_drain(xx, true), Err(FailoverError::UnknownRegion(xx)));
    assert_eq!(f.handle_session_ended(PlayerId::new(1)), Err(FailoverError::UnknownPlayer(PlayerId::new(1))));
    assert_eq!(f.stats().rejected, 4);
    assert_eq!(f.health(xx), None);
    assert_eq!(f.availability(kr), Some(RegionAvailability::Serving));
    assert!(f.catch_up(kr).is_none());
}

#[test]
fn smallest_accepted_policy_values_behave() {
    let mut p = HealthPolicy::default();
    p.degraded_after_silence = Duration::from_nanos(1);
    p.down_after_silence = Duration::from_nanos(1);
    p.recovery_hold = Duration::ZERO;
    p.min_samples = 0;
    p.error_window = Duration::from_nanos(1);
    assert!(p.validate().is_ok());
    let kr = r("kr");
    let mut h = RegionHealthTracker::new(p).unwrap();
    h.add_region(ms(0), kr).unwrap();
    // At the heartbeat's instant there is no silence yet.
    h.handle_heartbeat(ms(5), kr).unwrap();
    assert_eq!(h.health(kr), Some(RegionHealth::Healthy));
    h.handle_timeout(ms(5) + Duration::from_nanos(1));
    assert_eq!(h.health(kr), Some(RegionHealth::Down));
    // No hold: the next heartbeat restores it at once.
    h.handle_heartbeat(ms(6), kr).unwrap();
    assert_eq!(h.health(kr), Some(RegionHealth::Healthy));
    // min_samples 0: one failed request is a rate of 1.
    h.handle_requests(ms(6), kr, 0, 1).unwrap();
    assert_eq!(h.health(kr), Some(RegionHealth::Down));
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

#[test]
fn watches_lag_close_and_count() {
    let mut cfg = LocalCoordinatorConfig::default();
    cfg.max_watchers = 1;
    cfg.max_pending_changes = 1;
    let mut c = LocalCoordinator::new(cfg);
    let w = c.watch(&WatchScope::Records("drain/".into())).unwrap();
    assert!(matches!(c.watch(&WatchScope::Regions), Err(CoordError::CapacityExceeded(_))));
    // Outside the prefix: not delivered, not counted.
    c.compare_and_set(ms(0), "other", Expected::Absent, vec![1]).unwrap();
    assert!(c.poll_change(w).is_none());
    c.compare_and_set(ms(0), "drain/kr", Expected::Absent, vec![1]).unwrap();
    c.compare_and_set(ms(0), "drain/jp", Expected::Absent, vec![1]).unwrap();
    assert!(matches!(c.poll_change(w), Some(Err(CoordError::WatchLagged))));
    assert!(c.poll_change(w).is_none());
    assert_eq!(c.stats().watch_dropped, 2);
    assert!(c.cancel_watch(w));
    assert!(!c.cancel_watch(w));
    assert!(matches!(c.poll_change(w), Some(Err(CoordError::WatchClosed))));
    assert!(c.watch(&WatchScope::Leaders).is_ok(), "a cancelled watch frees its slot");
}

#[test]
fn handle_match_counts_the_sessions_registered_before_a_refusal() {
    use pvp_global::cluster::{FleetConfig, JP, KR, SG};
    use pvp_global::matchmaking::{GameMode, GlobalMatchmaking, MatchRequest, MatchmakingConfig};

    let mut mm =
        GlobalMatchmaking::new(FleetConfig::reference(), MatchmakingConfig::default(), ms(0)).unwrap();
    mm.heartbeat_all(ms(0));
    let duel = |id: u64| {
        MatchRequest::new(PlayerId::new(id), 1500.0, KR, GameMode::ONE_V_ONE)
            .max_latency(ms(100))
            .latency(KR, ms(10))
            .latency(JP, ms(40))
            .latency(SG, ms(90))
    };
    let a = mm.find_match(duel(1), ms(0)).unwrap();
    let _b = mm.find_match(duel(2), ms(0)).unwrap();
    mm.tick(ms(0));
    let m = a.try_result().unwrap().unwrap();
    let mut latency = LatencyMatrix::default();
    for x in [KR, JP, SG] {
        latency.set(x, x, ms(8));
    }
    let mut cfg = PlannerConfig::default();
    cfg.max_sessions = 1;
    let mut f = RegionFailover::new(HealthPolicy::default(), cfg, latency).unwrap();
    for x in [KR, JP, SG] {
        f.add_region(ms(0), x).unwrap();
    }
    let info = |_| Some((KR, ms(100)));
    assert_eq!(f.handle_match(&m, info), Err(FailoverError::TooManySessions));
    assert_eq!(f.planner().session_count(), 1);
    assert_eq!(f.stats().sessions_placed, 1, "the registered session is counted");
    assert_eq!(f.stats().rejected, 1);
    // Players it does not know are skipped, not refused.
    let mut g =
        RegionFailover::new(HealthPolicy::default(), PlannerConfig::default(), LatencyMatrix::default())
            .unwrap();
    g.add_region(ms(0), m.region()).unwrap();
    assert_eq!(g.handle_match(&m, |_| None), Ok(0));
    assert_eq!(g.handle_match(&m, info), Ok(2));
    assert_eq!(g.stats().sessions_placed, 2);
}

#[test]
fn a_late_heartbeat_still_counts_the_silence_it_ends() {
    let kr = r("kr");
    let mut h = RegionHealthTracker::new(HealthPolicy::default()).unwrap();
    h.add_region(ms(0), kr).unwrap();
    // 1.6 s of silence with no tick in between: the region was Down for that time.
    h.handle_heartbeat(ms(1600), kr).unwrap();
    assert_eq!(h.health(kr), Some(RegionHealth::Down));
    let t = h.poll_transition().unwrap();
    assert_eq!((t.from, t.to, t.at), (RegionHealth::Healthy, RegionHealth::Down, ms(1600)));
    // The same as a caller that ticked would see; recovery after the 2 s hold of steady
    // heartbeats.
    for t in (1850..=3350).step_by(250) {
        h.handle_heartbeat(ms(t), kr).unwrap();
    }
    h.handle_heartbeat(ms(3599), kr).unwrap();
    assert_eq!(h.health(kr), Some(RegionHealth::Down));
    h.handle_heartbeat(ms(3600), kr).unwrap();
    assert_eq!(h.health(kr), Some(RegionHealth::Healthy));
    // A heartbeat within the degraded threshold changes nothing.
    h.handle_heartbeat(ms(4000), kr).unwrap();
    assert_eq!(h.health(kr), Some(RegionHealth::Healthy));
    assert!(h.poll_transition().is_some() && h.poll_transition().is_none());
}

#[test]
fn repeated_inputs_are_idempotent() {
    let (mut p, [kr, jp, _sg]) = planner();
    p.handle_health(ms(1), kr, RegionHealth::Down).unwrap();
    let first = drain(&mut p);
    p.handle_health(ms(2), kr, RegionHealth::Down).unwrap();
    assert!(drain(&mut p).is_empty(), "a second Down changes nothing");
    assert_eq!(first.iter().filter(|d| matches!(d, FailoverDecision::RegionDown { .. })).count(), 1);
    assert_eq!(p.stats().regions_down, 1);
    p.handle_health(ms(3), kr, RegionHealth::Healthy).unwrap();
    p.handle_health(ms(4), kr, RegionHealth::Healthy).unwrap();
    assert_eq!(drain(&mut p), vec![FailoverDecision::AwaitingCatchUp { region: kr }]);
    p.handle_drain(jp, true).unwrap();
    let n = p.stats().route_changes;
    p.handle_drain(jp, true).unwrap();
    assert_eq!(p.stats().route_changes, n);
    let h = RegionHealthTracker::new(HealthPolicy::default()).unwrap();
    assert_eq!(h.poll_timeout(), None, "no regions, no timers");
}

#[test]
fn live_regions_are_sorted_like_region_ids() {
    let mut c = LocalCoordinator::default();
    let l = c.grant_lease(ms(0), Duration::from_secs(5)).unwrap();
    let names = ["sg", "kr", "a", "a-", "a_", "jp", "z9", "0"];
    for n in names {
        c.announce_region(ms(0), r(n), l).unwrap();
    }
    let mut want: Vec<RegionId> = names.iter().map(|n| r(n)).collect();
    want.sort();
    assert_eq!(c.live_regions(ms(1)).unwrap(), want);
}

#[test]
fn the_only_returning_region_is_restored_only_after_a_fresh_progress_report() {
    use pvp_global::coord::Change;
    use pvp_global::failover::SyncProgress;

    let regions = ["kr", "jp", "sg"].map(r);
    let [kr, jp, sg] = regions;
    let mut latency = LatencyMatrix::default();
    for x in regions {
        latency.set(x, x, ms(8));
    }
    let mut f = RegionFailover::new(HealthPolicy::default(), PlannerConfig::default(), latency).unwrap();
    for x in regions {
        f.add_region(ms(0), x).unwrap();
    }
    let change = |rev, kind| Change { revision: rev, kind };
    for (i, x) in regions.into_iter().enumerate() {
        assert!(f.handle_change(ms(100), &change(i as u64, ChangeKind::RegionDown(x))));
    }
    for x in regions {
        assert_eq!(f.availability(x), Some(RegionAvailability::Down));
        assert_eq!(f.route(x, Duration::MAX), None);
    }
    // A report from before kr returned proves nothing.
    let report = |at| SyncProgress { region: kr, at, head: 7, peers: Vec::new() };
    f.handle_sync_progress(ms(150), report(ms(150))).unwrap();
    assert!(f.handle_change(ms(200), &change(10, ChangeKind::RegionUp(kr))));
    let mut t = 200;
    while f.availability(kr) == Some(RegionAvailability::Down) && t <= 10_000 {
        f.handle_heartbeat(ms(t), kr).unwrap();
        f.handle_timeout(ms(t));
        t += 250;
    }
    assert_eq!(f.availability(kr), Some(RegionAvailability::CatchingUp));
    let since = f.catch_up(kr).unwrap().since;
    assert!(since >= ms(2200), "not before the 2 s hold: {since:?}");
    assert!(f.catch_up(kr).unwrap().waiting_on.contains(&kr));
    f.handle_timeout(ms(t + 1000));
    assert_eq!(f.availability(kr), Some(RegionAvailability::CatchingUp));
    assert_eq!(f.route(kr, Duration::MAX), None);
    // A stale report (read before the return) still does not open the gate.
    f.handle_sync_progress(ms(t + 1000), report(since - ms(1))).unwrap();
    assert_eq!(f.availability(kr), Some(RegionAvailability::CatchingUp));
    f.handle_sync_progress(ms(t + 1000), report(since)).unwrap();
    assert_eq!(f.availability(kr), Some(RegionAvailability::Serving));
    assert!(f.catch_up(kr).is_none());
    assert_eq!(f.route(kr, Duration::MAX), Some(kr));
    assert_eq!(f.route(jp, Duration::MAX), None, "no latency known from jp");
    assert_eq!(f.availability(sg), Some(RegionAvailability::Down));
    assert_eq!(f.stats().catch_ups_started, 1);
    assert_eq!(f.stats().catch_ups_completed, 1);
    let foreign = SyncProgress { region: r("xx"), at: ms(0), head: 0, peers: Vec::new() };
    assert_eq!(f.handle_sync_progress(ms(t + 1001), foreign), Err(FailoverError::UnknownRegion(r("xx"))));
}

#[test]
fn driving_by_poll_timeout_alone_sees_every_threshold_on_time() {
    let kr = r("kr");
    let mut h = RegionHealthTracker::new(HealthPolicy::default()).unwrap();
    h.add_region(ms(0), kr).unwrap();
    let mut seen = Vec::new();
    for _ in 0..10 {
        let Some(t) = h.poll_timeout() else { break };
        h.handle_timeout(t);
        seen.extend(std::iter::from_fn(|| h.poll_transition()).map(|x| (x.to, x.at)));
        if h.health(kr) == Some(RegionHealth::Down) {
            break;
        }
    }
    assert_eq!(seen, [(RegionHealth::Degraded, ms(750)), (RegionHealth::Down, ms(1500))]);
}

#[test]
fn errors_age_out_after_two_windows_then_the_hold_applies() {
    let kr = r("kr");
    let mut h = RegionHealthTracker::new(HealthPolicy::default()).unwrap();
    h.add_region(ms(0), kr).unwrap();
    h.handle_requests(ms(10), kr, 0, 100).unwrap();
    assert_eq!(h.health(kr), Some(RegionHealth::Down));
    let mut healthy_at = None;
    for t in (250..=8000).step_by(250) {
        h.handle_heartbeat(ms(t), kr).unwrap();
        if healthy_at.is_none() && h.health(kr) == Some(RegionHealth::Healthy) {
            healthy_at = Some(t);
        }
    }
    // Failures at 10 ms count in their window (0..2 s) and the next (2..4 s); from 4 s the
    // region looks healthy, and after the 2 s hold it is.
    assert_eq!(healthy_at, Some(6000));
    assert_eq!(h.stats().downs, 1);
}

#[test]
fn a_waiting_change_feed_is_woken_by_tick_when_a_lease_expires() {
    use pvp_global::coord::ChangeFeed;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let clock = ManualClock::default();
    let coord = SharedLocalCoordinator::new(LocalCoordinator::default(), clock.clone());
    let kr = r("kr");
    let l = block_on(coord.grant_lease(Duration::from_secs(1))).unwrap();
    block_on(coord.announce_region(kr, l)).unwrap();
    let mut feed = block_on(coord.watch(WatchScope::Regions)).unwrap();
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let waker = Waker::from(Arc::clone(&count));
    let mut cx = Context::from_waker(&waker);
    {
        let mut next = std::pin::pin!(feed.next_change());
        assert!(next.as_mut().poll(&mut cx).is_pending());
        assert_eq!(coord.next_deadline(), Some(Duration::from_secs(1)));
        clock.advance(ms(999));
        coord.tick();
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "nothing expired yet");
        clock.advance(ms(1));
        coord.tick();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        match next.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(c)) => assert_eq!(c.kind, ChangeKind::RegionDown(kr)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(coord.next_deadline(), None);
    assert_eq!(coord.stats().leases_expired, 1);
    // Dropping the feed cancels its watch (its slot is free again).
    drop(feed);
    let mut cfg = LocalCoordinatorConfig::default();
    cfg.max_watchers = 1;
    let one = SharedLocalCoordinator::new(LocalCoordinator::new(cfg), clock.clone());
    let first = block_on(one.watch(WatchScope::Leaders)).unwrap();
    assert!(matches!(block_on(one.watch(WatchScope::Leaders)), Err(CoordError::CapacityExceeded(_))));
    drop(first);
    assert!(block_on(one.watch(WatchScope::Leaders)).is_ok());
}

#[test]
fn manual_clock_saturates_and_never_goes_back() {
    use pvp_global::coord::Clock;
    let clock = ManualClock::default();
    let other = clock.clone();
    clock.set(ms(500));
    clock.set(ms(100));
    assert_eq!(other.now(), ms(500));
    clock.advance(Duration::MAX);
    clock.advance(ms(1));
    assert_eq!(other.now(), Duration::from_nanos(u64::MAX));
    // A coordinator at the end of the clock still grants and expires leases without overflow.
    let coord = SharedLocalCoordinator::new(LocalCoordinator::default(), clock.clone());
    let l = block_on(coord.grant_lease(Duration::from_secs(1))).unwrap();
    assert!(coord.lease_believed_valid(l));
    assert!(block_on(coord.keep_alive(l)).is_ok());
}
