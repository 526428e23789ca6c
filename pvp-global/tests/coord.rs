//! The in-process coordinator through the `Coordinator` trait with virtual time and through the
//! sans-IO core: leases (exact expiry, renewal from now, TTL range, capacity, revoke, time going
//! backwards), leader election with handover, region announcements, compare-and-set and delete
//! by version, typed errors without side effects, watches (lag, close, wake-ups on expiry), the
//! shared coordinator and its manual clock.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use pvp_core::ids::RegionId;
use pvp_global::coord::{
    CasOutcome, ChangeFeed, ChangeKind, CoordError, Coordinator, Expected, LeaseId, LocalCoordinator,
    LocalCoordinatorConfig, MAX_LEASE_TTL, MAX_NAME_LEN, MAX_VALUE_LEN, MIN_LEASE_TTL, ManualClock,
    SharedLocalCoordinator, WatchScope,
};

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Polls a future that must complete without waiting (the local coordinator never blocks).
fn now_or_never<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("local coordinator call did not complete at once"),
    }
}

fn region(s: &str) -> RegionId {
    RegionId::new(s).unwrap()
}

#[test]
fn trait_contract_with_virtual_time() {
    let clock = ManualClock::default();
    let c = SharedLocalCoordinator::new(LocalCoordinator::default(), clock.clone());
    let (kr, jp) = (region("kr"), region("jp"));
    let lk = now_or_never(c.grant_lease(Duration::from_secs(2))).unwrap();
    let lj = now_or_never(c.grant_lease(Duration::from_secs(3))).unwrap();
    now_or_never(c.announce_region(kr, lk)).unwrap();
    now_or_never(c.announce_region(jp, lj)).unwrap();
    assert_eq!(now_or_never(c.live_regions()).unwrap(), vec![jp, kr]);

    assert!(now_or_never(c.campaign("lb", kr, lk)).unwrap().won);
    let l = now_or_never(c.campaign("lb", jp, lj)).unwrap();
    assert_eq!((l.leader, l.won), (kr, false));
    // Same region, other lease: not the holder.
    assert!(!now_or_never(c.campaign("lb", kr, lj)).unwrap().won);

    clock.advance(Duration::from_millis(1500));
    now_or_never(c.keep_alive(lj)).unwrap();
    clock.advance(Duration::from_millis(600)); // kr: 2.1 s without keep-alive
    assert!(!c.lease_believed_valid(lk));
    assert!(c.lease_believed_valid(lj));
    assert_eq!(now_or_never(c.leader("lb")).unwrap(), None);
    assert!(now_or_never(c.campaign("lb", jp, lj)).unwrap().won);
    assert!(matches!(now_or_never(c.keep_alive(lk)), Err(CoordError::LeaseNotFound(_))));
    assert!(now_or_never(c.resign("lb", lj)).unwrap());
    assert!(!now_or_never(c.resign("lb", lj)).unwrap());
    assert_eq!(c.stats().leases_expired, 1);
}

#[test]
fn watch_wakes_a_waiting_feed_on_lease_expiry_tick() {
    let clock = ManualClock::default();
    let c = SharedLocalCoordinator::new(LocalCoordinator::default(), clock.clone());
    let kr = region("kr");
    let mut feed = now_or_never(c.watch(WatchScope::Regions)).unwrap();
    let lease = now_or_never(c.grant_lease(Duration::from_secs(1))).unwrap();
    now_or_never(c.announce_region(kr, lease)).unwrap();
    assert_eq!(now_or_never(feed.next_change()).unwrap().kind, ChangeKind::RegionUp(kr));

    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    {
        let mut next = pin!(feed.next_change());
        assert!(next.as_mut().poll(&mut cx).is_pending());
        clock.advance(Duration::from_secs(1));
        assert_eq!(c.next_deadline(), Some(Duration::from_secs(1)));
        c.tick();
        assert!(flag.0.load(Ordering::SeqCst), "expiry did not wake the watcher");
        match next.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(ch)) => assert_eq!(ch.kind, ChangeKind::RegionDown(kr)),
            other => panic!("expected RegionDown, got {other:?}"),
        }
    }
    assert!(feed.try_next_change().is_none());
}

#[test]
fn bad_inputs_are_typed_errors_and_counted() {
    let mut config = LocalCoordinatorConfig::default();
    config.max_leases = 1;
    let mut c = LocalCoordinator::new(config);
    let t = Duration::ZERO;
    assert!(matches!(c.grant_lease(t, Duration::from_millis(10)), Err(CoordError::TtlOutOfRange(_))));
    let l = c.grant_lease(t, Duration::from_secs(5)).unwrap();
    assert!(matches!(c.grant_lease(t, Duration::from_secs(5)), Err(CoordError::CapacityExceeded("leases"))));
    for bad in ["", "UPPER", "sp ace", &"x".repeat(200)] {
        assert!(matches!(c.read_record(t, bad), Err(CoordError::InvalidName)), "{bad:?}");
        assert!(matches!(c.campaign(t, bad, region("kr"), l), Err(CoordError::InvalidName)));
    }
    assert!(matches!(
        c.compare_and_set(t, "big", Expected::Absent, vec![0; MAX_VALUE_LEN + 1]),
        Err(CoordError::ValueTooLarge(_))
    ));
    assert!(matches!(c.watch(&WatchScope::Records("No".into())), Err(CoordError::InvalidName)));
    assert!(matches!(
        c.announce_region(t, region("kr"), pvp_global::coord::LeaseId(99)),
        Err(CoordError::LeaseNotFound(_))
    ));
    assert_eq!(c.stats().rejected, 13);
    // Nothing was stored by the refused calls.
    assert_eq!(c.revision(), 0);
}

#[test]
fn cas_versions_grow_and_deletes_need_the_version() {
    let mut c = LocalCoordinator::default();
    let t = Duration::ZERO;
    let mut feed = c.watch(&WatchScope::Records("drain/".into())).unwrap();
    let v1 = match c.compare_and_set(t, "drain/kr", Expected::Absent, b"1".to_vec()).unwrap() {
        CasOutcome::Applied { version } => version,
        other => panic!("{other:?}"),
    };
    let stale = c.compare_and_set(t, "drain/kr", Expected::Version(v1 + 7), b"0".to_vec()).unwrap();
    assert!(matches!(stale, CasOutcome::Conflict { current: Some(ref r) } if r.version == v1));
    assert!(!c.delete_record(t, "drain/kr", Expected::Absent).unwrap());
    assert!(c.delete_record(t, "drain/kr", Expected::Version(v1)).unwrap());
    let v2 = match c.compare_and_set(t, "drain/kr", Expected::Absent, b"2".to_vec()).unwrap() {
        CasOutcome::Applied { version } => version,
        other => panic!("{other:?}"),
    };
    assert!(v2 > v1);
    // Unwatched prefix: not seen by this feed.
    c.compare_and_set(t, "routing", Expected::Absent, b"kr=jp".to_vec()).unwrap();
    let kinds: Vec<_> = std::iter::from_fn(|| c.poll_change(feed)).map(|c| c.unwrap().kind).collect();
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    assert!(matches!(kinds[1], ChangeKind::RecordDeleted { ref name } if name == "drain/kr"));
    assert!(c.cancel_watch(feed));
    assert!(matches!(c.poll_change(feed), Some(Err(CoordError::WatchClosed))));
    feed = c.watch(&WatchScope::Leaders).unwrap();
    assert!(c.poll_change(feed).is_none());
}

#[test]
fn extreme_times_do_not_panic() {
    let mut c = LocalCoordinator::default();
    let near_end = Duration::MAX - Duration::from_secs(1);
    let l = c.grant_lease(near_end, Duration::from_secs(5)).unwrap();
    // The deadline saturates at the end of time instead of overflowing.
    assert_eq!(c.poll_timeout(), Some(Duration::MAX));
    assert!(c.lease_alive(near_end, l));
    c.handle_timeout(Duration::MAX);
    assert!(!c.lease_alive(Duration::MAX, l));
    assert!(matches!(c.keep_alive(Duration::MAX, l), Err(CoordError::LeaseNotFound(_))));
}

// ---------------------------------------------------------------------------------------------
// Leases, leaders and records

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

// ---------------------------------------------------------------------------------------------
// Watches and the shared coordinator

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
