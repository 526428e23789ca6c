//! CrossRegionSync with three regions over real UDP sockets on loopback, each on its own
//! thread. Its own test binary: its wall-clock timeouts stay clear of the CPU-bound simulations
//! in `sync`.

use pvp_core::{PlayerId, RegionId};
use pvp_global::sync::driver::{DriverError, wall_now};
use pvp_global::sync::{CrossRegionSync, Key, SyncConfig, SyncDriver, SyncError, UdpTransport, WriteOp};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn regions() -> [RegionId; 3] {
    [RegionId::new("kr").unwrap(), RegionId::new("jp").unwrap(), RegionId::new("sg").unwrap()]
}

fn drivers(strong_timeout: Duration) -> Vec<SyncDriver<UdpTransport>> {
    let rs = regions();
    let mut ts: Vec<UdpTransport> =
        rs.iter().map(|_| UdpTransport::bind("127.0.0.1:0".parse().unwrap()).unwrap()).collect();
    let addrs: Vec<_> = ts.iter().map(|t| t.local_addr().unwrap()).collect();
    for (i, t) in ts.iter_mut().enumerate() {
        for (j, r) in rs.iter().enumerate() {
            if i != j {
                t.add_peer(*r, addrs[j]);
            }
        }
    }
    ts.into_iter()
        .enumerate()
        .map(|(i, t)| {
            let peers = rs.iter().copied().filter(|r| *r != rs[i]).collect();
            let mut cfg = SyncConfig::new(rs[i], peers).unwrap();
            cfg.strong_timeout = strong_timeout;
            SyncDriver::new(CrossRegionSync::new(cfg, wall_now()), t)
        })
        .collect()
}

#[test]
fn strong_ban_and_eventual_writes_over_udp() {
    let mut ds = drivers(Duration::from_secs(3));
    let sg = ds.pop().unwrap();
    let jp = ds.pop().unwrap();
    let mut kr = ds.pop().unwrap();
    let stop = AtomicBool::new(false);
    let player = PlayerId::new(99);
    std::thread::scope(|s| {
        let followers: Vec<_> = [jp, sg]
            .into_iter()
            .map(|mut d| {
                let stop = &stop;
                s.spawn(move || {
                    // Each follower stops once it holds both writes (or kr gave up).
                    d.run_until(Duration::from_secs(20), |n| {
                        stop.load(Ordering::Acquire)
                            || (n.is_banned(player) && n.friends(player) == [PlayerId::new(5)])
                    })
                    .unwrap();
                    d
                })
            })
            .collect();
        kr.write_blocking(Key::Ban(player), WriteOp::SetAdd(0)).expect("majority reachable on loopback");
        kr.write_blocking(Key::Friends(player), WriteOp::SetAdd(5)).unwrap();
        assert_eq!(kr.node().stats().strong_committed, 1);
        // Keep kr flushing until both followers are done, bounded.
        let deadline = wall_now() + Duration::from_secs(10);
        while wall_now() < deadline && !followers.iter().all(|f| f.is_finished()) {
            kr.step(Duration::from_millis(5)).unwrap();
        }
        stop.store(true, Ordering::Release);
        for f in followers {
            let d = f.join().unwrap();
            assert!(d.node().is_banned(player), "{} lacks the ban", d.node().region());
            assert_eq!(d.node().friends(player), vec![PlayerId::new(5)], "{}", d.node().region());
        }
    });
}

#[test]
fn strong_write_without_majority_times_out_with_a_typed_error() {
    let mut ds = drivers(Duration::from_millis(200));
    let mut kr = ds.remove(0); // jp and sg sockets exist but nobody reads them
    let err = kr.write_blocking(Key::Ban(PlayerId::new(1)), WriteOp::SetAdd(0)).unwrap_err();
    assert!(matches!(err, DriverError::Sync(SyncError::StrongTimeout { acked: 1, needed: 2 })), "{err:?}");
    // Applied locally all the same.
    assert!(kr.node().is_banned(PlayerId::new(1)));
}
