//! The public contract of the in-process coordinator, through the `Coordinator` trait with
//! virtual time, and through the sans-IO core.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use pvp_core::ids::RegionId;
use pvp_global::coord::{
    CasOutcome, ChangeFeed, ChangeKind, CoordError, Coordinator, Expected, LocalCoordinator,
    LocalCoordinatorConfig, MAX_VALUE_LEN, ManualClock, SharedLocalCoordinator, WatchScope,
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
