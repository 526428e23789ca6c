//! EtcdCoordinator against a real 3-member etcd cluster on loopback, started and stopped here.
//! Skips itself (with a note) when no etcd binary is installed. Its own test binary (feature
//! `etcd`): it starts and stops a real etcd cluster.
#![cfg(feature = "etcd")]

use std::time::{Duration, Instant};

use pvp_core::ids::RegionId;
use pvp_global::coord::{
    CasOutcome, ChangeFeed, ChangeKind, CoordError, Coordinator, EtcdCoordinator, EtcdCoordinatorConfig,
    Expected, LoopbackEtcdCluster, WatchScope,
};

const TTL: Duration = Duration::from_secs(2);

fn region(s: &str) -> RegionId {
    RegionId::new(s).expect("valid region")
}

async fn start_cluster() -> Option<LoopbackEtcdCluster> {
    if !LoopbackEtcdCluster::available() {
        eprintln!("NOTE: skipping etcd test, no etcd binary (apt-get install etcd-server)");
        return None;
    }
    let cluster = LoopbackEtcdCluster::start(3).expect("start etcd");
    LoopbackEtcdCluster::wait_healthy(&cluster.client_urls(), Duration::from_secs(30))
        .await
        .expect("etcd healthy");
    Some(cluster)
}

async fn client(cluster: &LoopbackEtcdCluster, ns: &str) -> EtcdCoordinator {
    let config = EtcdCoordinatorConfig::new(cluster.client_urls())
        .with_namespace(ns)
        .with_op_timeout(Duration::from_millis(800));
    EtcdCoordinator::connect(config).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_contract_membership_election_cas_watch() {
    let Some(cluster) = start_cluster().await else {
        return;
    };
    let a = client(&cluster, "/t1/").await;
    let b = client(&cluster, "/t1/").await;
    let (kr, jp) = (region("kr"), region("jp"));

    let mut regions = b.watch(WatchScope::Regions).await.unwrap();
    let la = a.grant_lease(TTL).await.unwrap();
    let lb = b.grant_lease(TTL).await.unwrap();
    assert!(a.lease_believed_valid(la));
    a.announce_region(kr, la).await.unwrap();
    b.announce_region(jp, lb).await.unwrap();
    assert_eq!(a.live_regions().await.unwrap(), vec![jp, kr]);
    let first = tokio::time::timeout(Duration::from_secs(5), regions.next_change()).await;
    assert!(matches!(first, Ok(Ok(c)) if c.kind == ChangeKind::RegionUp(kr)));

    // Election: first wins, second loses, re-campaign is idempotent, resign hands over.
    assert!(a.campaign("leaderboard", kr, la).await.unwrap().won);
    let lost = b.campaign("leaderboard", jp, lb).await.unwrap();
    assert_eq!((lost.leader, lost.won), (kr, false));
    assert!(a.campaign("leaderboard", kr, la).await.unwrap().won);
    assert!(!b.resign("leaderboard", lb).await.unwrap());
    assert!(a.resign("leaderboard", la).await.unwrap());
    assert!(b.campaign("leaderboard", jp, lb).await.unwrap().won);
    assert_eq!(a.leader("leaderboard").await.unwrap(), Some(jp));

    // Compare-and-set.
    let v1 = match a.compare_and_set("drain/kr", Expected::Absent, b"1".to_vec()).await.unwrap() {
        CasOutcome::Applied { version } => version,
        other => panic!("expected applied, got {other:?}"),
    };
    let conflict = b.compare_and_set("drain/kr", Expected::Absent, b"0".to_vec()).await.unwrap();
    assert!(matches!(conflict, CasOutcome::Conflict { current: Some(ref r) } if r.version == v1));
    let read = b.read_record("drain/kr").await.unwrap().unwrap();
    assert_eq!((read.value.as_slice(), read.version), (&b"1"[..], v1));
    assert!(matches!(
        b.compare_and_set("drain/kr", Expected::Version(v1), b"0".to_vec()).await.unwrap(),
        CasOutcome::Applied { version } if version > v1
    ));
    assert!(!a.delete_record("drain/kr", Expected::Version(v1)).await.unwrap());
    assert!(matches!(
        a.compare_and_set("Bad Name", Expected::Absent, vec![]).await,
        Err(CoordError::InvalidName)
    ));

    // Liveness: kr stops keeping alive; its announcement and nothing else goes away.
    let deadline = Instant::now() + Duration::from_secs(10);
    let down = loop {
        assert!(Instant::now() < deadline, "kr never went down");
        b.keep_alive(lb).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(500), regions.next_change()).await {
            Ok(Ok(c)) if c.kind == ChangeKind::RegionDown(kr) => break c,
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => panic!("watch failed: {e}"),
        }
    };
    assert!(down.revision > 0);
    assert!(!a.lease_believed_valid(la));
    let ka = a.keep_alive(la).await;
    assert!(matches!(ka, Err(CoordError::LeaseNotFound(_))), "{ka:?}");
    assert_eq!(b.live_regions().await.unwrap(), vec![jp]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_quorum_loss_no_split_brain_and_recovery() {
    let Some(mut cluster) = start_cluster().await else {
        return;
    };
    let a = client(&cluster, "/t2/").await;
    let b = client(&cluster, "/t2/").await;
    let (kr, jp) = (region("kr"), region("jp"));
    let mut la = a.grant_lease(TTL).await.unwrap();
    let mut lb = b.grant_lease(TTL).await.unwrap();
    assert!(a.campaign("matchmaker", kr, la).await.unwrap().won);
    assert!(!b.campaign("matchmaker", jp, lb).await.unwrap().won);
    let (mut a_won, mut b_won) = (true, false);
    // Two regions never both believe they lead with valid leases.
    let check = |a_won: bool, b_won: bool, a: &EtcdCoordinator, b: &EtcdCoordinator, la, lb| {
        let a_leads = a_won && a.lease_believed_valid(la);
        let b_leads = b_won && b.lease_believed_valid(lb);
        assert!(!(a_leads && b_leads), "split brain: both believe they lead");
        (a_leads, b_leads)
    };

    // One member down: coordination continues.
    cluster.kill(0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut cas_done = false;
    loop {
        let ka = a.keep_alive(la).await;
        let kb = b.keep_alive(lb).await;
        if !cas_done {
            let cas = b.compare_and_set("routing", Expected::Absent, b"kr>kr".to_vec()).await;
            // A timed-out attempt may still have been applied: then it reads as a conflict.
            cas_done = matches!(cas, Ok(CasOutcome::Applied { .. }))
                || matches!(cas, Ok(CasOutcome::Conflict { current: Some(ref r) }) if r.value == b"kr>kr");
        }
        check(a_won, b_won, &a, &b, la, lb);
        assert!(Instant::now() < deadline, "no progress with 2 of 3 members: {ka:?} {kb:?}");
        if ka.is_ok() && kb.is_ok() && cas_done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.leader("matchmaker").await.unwrap(), Some(kr));

    // Two members down: typed NoQuorum within the op timeout, beliefs run out, no split brain.
    cluster.kill(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut saw_no_quorum = false;
    loop {
        assert!(Instant::now() < deadline, "no NoQuorum / lease belief never ran out");
        let started = Instant::now();
        let _ = a.keep_alive(la).await;
        match b.campaign("matchmaker", jp, lb).await {
            Err(CoordError::NoQuorum { .. }) => saw_no_quorum = true,
            Ok(l) => b_won = l.won,
            Err(_) => {}
        }
        // Every call is bounded: keep-alive + campaign within 2 op timeouts (+ slack).
        assert!(started.elapsed() < Duration::from_secs(3), "a call hung without quorum");
        let (a_leads, _) = check(a_won, b_won, &a, &b, la, lb);
        if saw_no_quorum && !a_leads {
            break;
        }
    }
    assert!(!b_won, "jp won an election without quorum");
    let cas = a.compare_and_set("routing", Expected::Absent, vec![]).await;
    assert!(matches!(cas, Err(CoordError::NoQuorum { .. })), "{cas:?}");

    // Restart: the cluster recovers and exactly one region leads again.
    cluster.restart(0).unwrap();
    cluster.restart(1).unwrap();
    LoopbackEtcdCluster::wait_healthy(&cluster.client_urls(), Duration::from_secs(30)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no leader after recovery");
        for (c, lease, won, me) in [(&a, &mut la, &mut a_won, kr), (&b, &mut lb, &mut b_won, jp)] {
            if c.keep_alive(*lease).await.is_err() {
                *won = false;
                if let Ok(l) = c.grant_lease(TTL).await {
                    *lease = l;
                }
            }
            if let Ok(l) = c.campaign("matchmaker", me, *lease).await {
                *won = l.won;
            }
        }
        let (a_leads, b_leads) = check(a_won, b_won, &a, &b, la, lb);
        if a_leads || b_leads {
            let leader = a.leader("matchmaker").await.unwrap();
            assert_eq!(leader, Some(if a_leads { kr } else { jp }));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = a.read_record("routing").await.unwrap().expect("record kept across the outage");
    assert_eq!(r.value, b"kr>kr");
}
