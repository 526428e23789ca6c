//! RegionHealthTracker: policy validation (NaN, unordered, out of range; the smallest accepted
//! values), silence and error-rate thresholds (minimum samples, windows ageing out), the
//! recovery hold and flapping, late heartbeats, time going backwards, repeated inputs, unknown
//! regions typed and counted, and extreme inputs.

use std::time::Duration;

use pvp_core::ids::RegionId;
use pvp_global::coord::ChangeKind;
use pvp_global::failover::{
    FailoverDecision, FailoverError, HealthPolicy, LatencyMatrix, PlannerConfig, RegionFailover,
    RegionHealth, RegionHealthTracker,
};

use super::r;
use crate::common::{drain, ms, planner};

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
