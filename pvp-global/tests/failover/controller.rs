//! RegionFailover: unknown regions refused and counted, sessions counted up to a refusal, and
//! the catch-up gate (a returning region serves only after its writes reached its peers and a
//! fresh progress report says so; progress round-trips through postcard; `apply_to` marks
//! drained and unknown regions and clears only its own marks).

use std::time::Duration;

use pvp_core::ids::PlayerId;
use pvp_global::cluster::{JP, KR, SG};
use pvp_global::coord::ChangeKind;
use pvp_global::failover::{
    FailoverError, HealthPolicy, LatencyMatrix, PlannerConfig, RegionAvailability, RegionFailover,
    SyncProgress,
};
use pvp_global::sync::{CrossRegionSync, Key, SyncConfig, WriteOp};

use super::{ms, r};

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

const EPOCH: Duration = Duration::from_secs(1_000);

fn exchange(a: &mut CrossRegionSync, b: &mut CrossRegionSync, from: Duration, rounds: u64) {
    for i in 1..=rounds {
        let now = EPOCH + from + ms(10 * i);
        a.handle_timeout(now);
        b.handle_timeout(now);
        while let Some(t) = a.poll_transmit() {
            b.handle_datagram(now, a.region(), &t.payload);
        }
        while let Some(t) = b.poll_transmit() {
            a.handle_datagram(now, b.region(), &t.payload);
        }
    }
}

/// kr returns with a result its peer never received: it stays out of routing until sync
/// delivered it, then comes back.
#[test]
fn returning_region_serves_only_after_its_writes_reached_its_peer() {
    let mut latency = LatencyMatrix::default();
    latency.set_symmetric(KR, JP, ms(35));
    latency.set(KR, KR, ms(8));
    latency.set(JP, JP, ms(8));
    let mut f = RegionFailover::new(HealthPolicy::default(), PlannerConfig::default(), latency).unwrap();
    f.add_region(ms(0), KR).unwrap();
    f.add_region(ms(0), JP).unwrap();
    let mut a = CrossRegionSync::new(SyncConfig::new(KR, vec![JP]).unwrap(), EPOCH);
    let mut b = CrossRegionSync::new(SyncConfig::new(JP, vec![KR]).unwrap(), EPOCH);
    exchange(&mut a, &mut b, ms(0), 5);

    for t in (250..=2000).step_by(250) {
        f.handle_heartbeat(ms(t), JP).unwrap();
        f.handle_timeout(ms(t));
    }
    assert_eq!(f.availability(KR), Some(RegionAvailability::Down));
    // kr records a match result while cut off; nothing is delivered.
    a.write(Key::Custom(7), WriteOp::CounterAdd(1), EPOCH + ms(2100)).unwrap();
    a.handle_timeout(EPOCH + ms(2200));
    while a.poll_transmit().is_some() {}

    for t in (2250..=4500).step_by(250) {
        f.handle_heartbeat(ms(t), KR).unwrap();
        f.handle_heartbeat(ms(t), JP).unwrap();
        f.handle_timeout(ms(t));
    }
    assert_eq!(f.availability(KR), Some(RegionAvailability::CatchingUp));
    for n in [&a, &b] {
        f.handle_sync_progress(ms(4600), SyncProgress::of(n, ms(4600))).unwrap();
    }
    assert_eq!(f.availability(KR), Some(RegionAvailability::CatchingUp));
    let status = f.catch_up(KR).expect("catching up");
    assert!(status.waiting_on.contains(&KR), "{status:?}");
    assert_eq!(f.route(KR, ms(50)), Some(JP));

    // The sync path heals: the result reaches jp, and the gate opens.
    exchange(&mut a, &mut b, ms(4600), 30);
    assert!(b.get(&Key::Custom(7)).is_some());
    for n in [&a, &b] {
        f.handle_sync_progress(ms(5000), SyncProgress::of(n, ms(5000))).unwrap();
    }
    assert_eq!(f.availability(KR), Some(RegionAvailability::Serving));
    assert_eq!(f.route(KR, ms(50)), Some(KR));
    assert_eq!(f.stats().catch_ups_completed, 1);
}

#[test]
fn progress_round_trips_through_postcard() {
    let mut node = CrossRegionSync::new(SyncConfig::new(KR, vec![JP, SG]).unwrap(), EPOCH);
    node.write(Key::Custom(1), WriteOp::CounterAdd(1), EPOCH).unwrap();
    let p = SyncProgress::of(&node, ms(5));
    assert_eq!((p.head, p.towards(JP).map(|x| x.unacked())), (1, Some(1)));
    let bytes = postcard::to_allocvec(&p).unwrap();
    assert_eq!(postcard::from_bytes::<SyncProgress>(&bytes).unwrap(), p);
}

#[test]
fn apply_to_marks_drained_and_unknown_regions_and_clears_only_its_own_marks() {
    use pvp_core::ids::RegionId;
    use pvp_global::cluster::{FleetConfig, RegionHealth as ClusterHealth};
    use pvp_global::matchmaking::{GlobalMatchmaking, MatchmakingConfig};

    let xx = RegionId::new("xx").unwrap();
    let mut f =
        RegionFailover::new(HealthPolicy::default(), PlannerConfig::default(), LatencyMatrix::default())
            .unwrap();
    for r in [KR, JP, xx] {
        f.add_region(ms(0), r).unwrap();
    }
    let mut mm =
        GlobalMatchmaking::new(FleetConfig::reference(), MatchmakingConfig::default(), ms(0)).unwrap();
    mm.set_region_health(SG, Some(ClusterHealth::Degraded)).unwrap(); // someone else's override
    f.handle_drain(JP, true).unwrap();
    // xx is unknown to the matchmaker: refused, but jp was still marked.
    assert_eq!(f.apply_to(&mut mm), Err(FailoverError::UnknownRegion(xx)));
    assert_eq!(mm.cluster(JP).unwrap().health_override(), Some(ClusterHealth::Down));
    assert_eq!(mm.cluster(KR).unwrap().health_override(), None);
    f.handle_drain(JP, false).unwrap();
    assert_eq!(f.apply_to(&mut mm), Err(FailoverError::UnknownRegion(xx)));
    assert_eq!(mm.cluster(JP).unwrap().health_override(), None);
    assert_eq!(mm.cluster(SG).unwrap().health_override(), Some(ClusterHealth::Degraded));
    assert_eq!(f.stats().matchmaking_updates, 2);
}

#[test]
fn reports_from_unknown_regions_are_refused_and_counted() {
    let mut f =
        RegionFailover::new(HealthPolicy::default(), PlannerConfig::default(), LatencyMatrix::default())
            .unwrap();
    f.add_region(ms(0), KR).unwrap();
    let node = CrossRegionSync::new(SyncConfig::new(SG, vec![KR]).unwrap(), EPOCH);
    let err = f.handle_sync_progress(ms(1), SyncProgress::of(&node, ms(1))).unwrap_err();
    assert_eq!(err, FailoverError::UnknownRegion(SG));
    assert_eq!(f.stats().rejected, 1);
    assert_eq!(f.handle_heartbeat(ms(2), SG), Err(FailoverError::UnknownRegion(SG)));
}
