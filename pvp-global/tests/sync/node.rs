//! What CrossRegionSync promises: strong writes need a majority of all regions (time out when cut
//! off, survive the loss of a minority, a full backlog refuses without applying), eventual writes
//! converge under loss, duplication and reordering within a flush interval plus the one-way
//! latency, delivery is not claimed early, snapshots restore the same digest, anti-entropy heals
//! an old replica and confirms catch-up after a log overflow, batches respect the message size,
//! and bans: an unban lifts the bans it observed, a concurrent ban wins.

use std::time::Duration;

use pvp_core::{PlayerId, RegionId};
use pvp_global::leaderboard::{GameMode, Leaderboard, ScoreOperator};
use pvp_global::sync::{
    CrossRegionSync, LinkConfig, SimCluster, StrongStatus, SyncConfig, SyncError, SyncEvent, WriteReceipt,
};

const T0: Duration = Duration::from_secs(1_700_000_000);

fn region(i: usize) -> RegionId {
    RegionId::new(["kr", "jp", "sg", "us", "eu"][i]).unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cluster(seed: u64, n: usize, link: LinkConfig) -> SimCluster {
    let regions: Vec<RegionId> = (0..n).map(region).collect();
    let mut c = SimCluster::new(seed, &regions, link, T0, |_| {}).unwrap();
    for i in 0..n {
        let node = c.node_mut(i).unwrap();
        node.define_mode(GameMode(1), ScoreOperator::Decr).unwrap();
        node.define_mode(GameMode(2), ScoreOperator::Set).unwrap();
    }
    c
}

#[test]
fn strong_write_cut_off_from_the_majority_times_out_and_still_reaches_peers_later() {
    let mut c = cluster(11, 3, LinkConfig::new(ms(10)));
    let others = [region(1), region(2)];
    c.net().isolate(region(0), &others);
    let start = c.now();
    let WriteReceipt::Pending(id) = c.node_mut(0).unwrap().ban(PlayerId::new(42), start).unwrap() else {
        panic!("bans are STRONG by default");
    };
    let mut failed = None;
    for _ in 0..300 {
        c.run_for(ms(10));
        if let Some(ev) = c.node_mut(0).unwrap().poll_event() {
            failed = Some((ev, c.now()));
            break;
        }
    }
    let (ev, at) = failed.expect("no outcome for the STRONG write");
    assert_eq!(ev, SyncEvent::StrongFailed { id, error: SyncError::StrongTimeout { acked: 1, needed: 2 } });
    assert!(at - start >= ms(2_000), "failed before strong_timeout: {:?}", at - start);
    assert!(matches!(c.node(0).unwrap().strong_status(id), StrongStatus::Failed(_)));
    // Not rolled back: applied locally, and reaches the others once the partition heals.
    assert!(c.node(0).unwrap().is_banned(PlayerId::new(42)));
    assert!(!c.node(1).unwrap().is_banned(PlayerId::new(42)));
    c.net().heal();
    c.run_for(ms(3_000));
    for i in 0..3 {
        assert!(c.node(i).unwrap().is_banned(PlayerId::new(42)), "region {i} missed the ban");
    }
}

#[test]
fn committed_strong_write_survives_the_loss_of_a_minority() {
    let mut c = cluster(12, 3, LinkConfig::new(ms(10)));
    let now = c.now();
    let WriteReceipt::Pending(id) = c.node_mut(0).unwrap().ban(PlayerId::new(8), now).unwrap() else {
        panic!("STRONG expected");
    };
    let mut committed = false;
    for _ in 0..200 {
        c.run_for(ms(5));
        if c.node(0).unwrap().strong_status(id) == StrongStatus::Committed {
            committed = true;
            break;
        }
    }
    assert!(committed);
    // The writer (a minority of one) crashes and never returns with its state.
    let lost = c.crash(0).expect("node 0 was running");
    assert!(lost.is_banned(PlayerId::new(8)));
    c.run_for(ms(2_000));
    let holders = (1..3).filter(|&i| c.node(i).unwrap().is_banned(PlayerId::new(8))).count();
    assert_eq!(holders, 2, "a committed STRONG write must survive on the majority");
}

#[test]
fn eventual_writes_converge_under_loss_duplication_and_reordering() {
    let link = LinkConfig::new(ms(30)).jitter(ms(5)).loss(0.2).duplicate(0.2).reorder(0.3);
    let mut c = cluster(13, 3, link);
    let mut expected_decr = 0i64;
    for step in 0..30u64 {
        let now = c.now();
        let w = (step % 3) as usize;
        c.node_mut(w).unwrap().submit_score(GameMode(1), PlayerId::new(1), step as i64, now).unwrap();
        expected_decr -= step as i64;
        c.node_mut(w).unwrap().add_friend(PlayerId::new(2), PlayerId::new(step), now).unwrap();
        c.run_for(ms(7));
    }
    let now = c.now();
    c.node_mut(1).unwrap().remove_friend(PlayerId::new(2), PlayerId::new(0), now).unwrap();
    c.run_for(ms(5_000));
    assert!(c.converged());
    for i in 0..3 {
        let n = c.node(i).unwrap();
        let board = n.leaderboards().mode(GameMode(1)).unwrap();
        assert_eq!(board.score(PlayerId::new(1)), Some(expected_decr), "region {i}");
        let friends = n.friends(PlayerId::new(2));
        assert_eq!(friends.len(), 29, "region {i}");
        assert!(!friends.contains(&PlayerId::new(0)));
    }
}

#[test]
fn snapshot_restore_gives_the_same_digest_and_state() {
    let mut c = cluster(14, 2, LinkConfig::new(ms(10)));
    let now = c.now();
    let n = c.node_mut(0).unwrap();
    n.submit_score(GameMode(2), PlayerId::new(3), 77, now).unwrap();
    n.add_friend(PlayerId::new(3), PlayerId::new(4), now).unwrap();
    n.ban(PlayerId::new(5), now).unwrap();
    let snap = n.snapshot();
    let want = n.digest();
    let cfg = SyncConfig::new(region(0), vec![region(1)]).unwrap();
    let mut restored = CrossRegionSync::restore(cfg, snap.clone(), now + ms(1));
    assert_eq!(restored.digest(), want);
    assert_eq!(restored.snapshot().entries, snap.entries);
    assert!(restored.is_banned(PlayerId::new(5)));
    assert_eq!(restored.leaderboards().mode(GameMode(2)).and_then(|b| b.score(PlayerId::new(3))), Some(77));
    assert_eq!(restored.leaderboards().operator(GameMode(2)), Some(ScoreOperator::Set));
}

#[test]
fn delivered_is_not_claimed_while_the_peer_lacks_the_writes() {
    // `PeerProgress::delivered` gates failover: it must never say that writes reached a peer
    // that does not hold them, even when the peer fell off the delta log and the digest that
    // starts its repair was lost.
    let regions = [region(0), region(1)];
    let mut c =
        SimCluster::new(15, &regions, LinkConfig::new(ms(20)), T0, |cfg| cfg.max_delta_log = 4).unwrap();
    c.net().partition(region(0), region(1));
    for f in 0..10u64 {
        let now = c.now();
        c.node_mut(0).unwrap().add_friend(PlayerId::new(1), PlayerId::new(100 + f), now).unwrap();
        c.run_for(ms(5));
    }
    let mut checks = 0;
    for step in 0..600 {
        if step == 300 {
            c.net().heal();
        }
        c.run_for(ms(10));
        let kr = c.node(0).unwrap();
        let head = kr.head_seq();
        let p = kr.peer_progress(region(1)).unwrap();
        let has_all = c.node(1).unwrap().friends(PlayerId::new(1)).len() == 10;
        if p.delivered(head) {
            assert!(has_all, "delivered({head}) at step {step} while jp lacks writes: {p:?}");
            checks += 1;
        }
    }
    assert!(checks > 0, "jp was never reported caught up after the partition healed");
    assert!(c.converged());
}

#[test]
fn eventual_lag_is_at_most_a_flush_interval_plus_one_way_latency() {
    let latency = ms(30);
    let mut c = cluster(16, 2, LinkConfig::new(latency));
    c.run_for(ms(3)); // write between two flushes
    let flush = c.node(0).unwrap().config().flush_interval;
    for k in 0..5u64 {
        let at = c.now();
        c.node_mut(0).unwrap().submit_score(GameMode(2), PlayerId::new(k), k as i64 * 10, at).unwrap();
        assert_eq!(
            c.node(1).unwrap().leaderboards().mode(GameMode(2)).and_then(|b| b.score(PlayerId::new(k))),
            None
        );
        c.run_until(at + flush + latency);
        let got = c.node(1).unwrap().leaderboards().mode(GameMode(2)).and_then(|b| b.score(PlayerId::new(k)));
        assert_eq!(got, Some(k as i64 * 10), "write {k} not there after flush + latency");
        c.run_for(ms(7));
    }
}

#[test]
fn strong_needs_a_majority_of_all_regions() {
    // Five regions: majority 3. With one reachable peer the write times out, with two it commits.
    let mut c = cluster(17, 5, LinkConfig::new(ms(10)));
    assert_eq!(c.node(0).unwrap().majority(), 3);
    c.net().isolate(region(0), &[region(2), region(3), region(4)]);
    let now = c.now();
    let WriteReceipt::Pending(id) = c.node_mut(0).unwrap().ban(PlayerId::new(1), now).unwrap() else {
        panic!("STRONG expected");
    };
    c.run_for(ms(1_000));
    assert_eq!(
        c.node(0).unwrap().strong_status(id),
        StrongStatus::Pending,
        "1 peer + self is no majority of 5"
    );
    c.run_for(ms(1_100));
    assert_eq!(
        c.node(0).unwrap().strong_status(id),
        StrongStatus::Failed(SyncError::StrongTimeout { acked: 2, needed: 3 })
    );
    c.net().heal_link(region(0), region(2));
    let now = c.now();
    let WriteReceipt::Pending(id2) = c.node_mut(0).unwrap().ban(PlayerId::new(2), now).unwrap() else {
        panic!("STRONG expected");
    };
    c.run_for(ms(200));
    assert_eq!(c.node(0).unwrap().strong_status(id2), StrongStatus::Committed);
    assert_eq!(c.node(0).unwrap().strong_status(id2 + 1000), StrongStatus::Unknown);
    let holders = (0..5).filter(|&i| c.node(i).unwrap().is_banned(PlayerId::new(2))).count();
    assert!(holders >= 3, "committed while only {holders} regions hold it");
}

#[test]
fn strong_backlog_full_refuses_without_applying() {
    let mut c = SimCluster::new(18, &[region(0), region(1)], LinkConfig::new(ms(10)), T0, |cfg| {
        cfg.max_pending_strong = 2;
    })
    .unwrap();
    c.net().partition(region(0), region(1));
    let now = c.now();
    let n = c.node_mut(0).unwrap();
    assert!(matches!(n.ban(PlayerId::new(1), now), Ok(WriteReceipt::Pending(_))));
    assert!(matches!(n.ban(PlayerId::new(2), now), Ok(WriteReceipt::Pending(_))));
    assert_eq!(n.ban(PlayerId::new(3), now), Err(SyncError::StrongBacklogFull(2)));
    assert!(!n.is_banned(PlayerId::new(3)), "a refused write must not be applied");
    assert!(n.is_banned(PlayerId::new(1)) && n.is_banned(PlayerId::new(2)));
}

#[test]
fn concurrent_set_scores_converge_to_the_newest_hlc_write() {
    let mut c = cluster(19, 2, LinkConfig::new(ms(10)));
    c.net().partition(region(0), region(1));
    let t = c.now();
    c.node_mut(0).unwrap().submit_score(GameMode(2), PlayerId::new(1), 500, t).unwrap();
    c.node_mut(1).unwrap().submit_score(GameMode(2), PlayerId::new(1), 100, t + ms(5)).unwrap();
    // Decr mode: each region subtracts once; both count after the heal.
    c.node_mut(0).unwrap().submit_score(GameMode(1), PlayerId::new(1), 3, t).unwrap();
    c.node_mut(1).unwrap().submit_score(GameMode(1), PlayerId::new(1), 4, t).unwrap();
    c.run_for(ms(100));
    c.net().heal();
    c.run_for(ms(3_000));
    for i in 0..2 {
        let b = c.node(i).unwrap().leaderboards();
        assert_eq!(b.mode(GameMode(2)).and_then(|m| m.score(PlayerId::new(1))), Some(100), "region {i}");
        assert_eq!(b.mode(GameMode(1)).and_then(|m| m.score(PlayerId::new(1))), Some(-7), "region {i}");
    }
}

#[test]
fn anti_entropy_heals_a_replica_restored_from_an_old_snapshot() {
    let mut c = cluster(20, 3, LinkConfig::new(ms(15)));
    let old = c.node(2).unwrap().snapshot();
    for p in 0..20u64 {
        let now = c.now();
        let w = (p % 2) as usize;
        c.node_mut(w).unwrap().submit_score(GameMode(2), PlayerId::new(p), p as i64, now).unwrap();
        c.node_mut(w).unwrap().add_friend(PlayerId::new(p), PlayerId::new(p + 1), now).unwrap();
    }
    c.run_for(ms(500));
    assert!(c.converged());
    c.crash(2).unwrap();
    c.restart(2, Some(old));
    assert!(c.node(2).unwrap().is_empty(), "the old snapshot predates the writes");
    let mut gated = 0;
    for step in 0..300 {
        c.run_for(ms(10));
        let kr = c.node(0).unwrap();
        let (head, p) = (kr.head_seq(), kr.peer_progress(region(2)).unwrap());
        if p.delivered(head) {
            // Every write of kr must then be in sg (kr wrote the even players).
            let sg = c.node(2).unwrap();
            for q in (0..20u64).step_by(2) {
                assert!(sg.friends(PlayerId::new(q)).contains(&PlayerId::new(q + 1)), "step {step}: {p:?}");
            }
            gated += 1;
        }
    }
    assert!(gated > 0, "kr never saw sg caught up");
    assert!(c.converged(), "anti-entropy did not heal the restored replica");
    let d0 = c.node_mut(0).unwrap().digest();
    assert_eq!(c.node_mut(2).unwrap().digest(), d0);
    assert_eq!(c.node(2).unwrap().leaderboards().mode(GameMode(2)).map(Leaderboard::len), Some(20));
}

#[test]
fn snapshot_store_save_and_save_node_round_trip_to_the_same_digest() {
    use pvp_global::sync::SnapshotStore;
    let mut c = cluster(21, 2, LinkConfig::new(ms(10)));
    let now = c.now();
    let n = c.node_mut(0).unwrap();
    n.submit_score(GameMode(1), PlayerId::new(9), 4, now).unwrap();
    n.submit_score(GameMode(2), PlayerId::new(9), -4, now).unwrap();
    n.add_friend(PlayerId::new(9), PlayerId::new(10), now).unwrap();
    n.add_friend(PlayerId::new(9), PlayerId::new(11), now).unwrap();
    n.remove_friend(PlayerId::new(9), PlayerId::new(10), now).unwrap();
    n.ban(PlayerId::new(12), now).unwrap();
    let want = n.digest();
    let snap = n.snapshot();
    let dir = tempfile::tempdir().unwrap();
    let a = SnapshotStore::new(dir.path().join("a"), region(0)).unwrap();
    let b = SnapshotStore::new(dir.path().join("b"), region(0)).unwrap();
    assert_eq!(a.load().unwrap(), None);
    let na = a.save(&snap).unwrap();
    let nb = b.save_node(c.node(0).unwrap()).unwrap();
    assert_eq!(na, nb, "save and save_node must write the same format");
    assert_eq!(std::fs::read(a.path()).unwrap(), std::fs::read(b.path()).unwrap());
    let loaded = a.load().unwrap().expect("saved");
    assert_eq!(loaded, snap);
    let cfg = SyncConfig::new(region(0), vec![region(1)]).unwrap();
    let mut r = CrossRegionSync::restore(cfg, loaded, now + ms(2));
    assert_eq!(r.digest(), want);
    assert!(r.actor().incarnation > snap.incarnation, "a restore takes a new incarnation");
    assert_eq!(r.friends(PlayerId::new(9)), vec![PlayerId::new(11)]);
    assert_eq!(r.leaderboards().mode(GameMode(1)).and_then(|m| m.score(PlayerId::new(9))), Some(-4));
}

#[test]
fn batches_respect_max_message_bytes_and_still_deliver_everything() {
    for cap in [4_096, 16_000] {
        batches_within(cap);
    }
}

fn batches_within(cap: usize) {
    let cfg_for = |me: usize| {
        let mut cfg = SyncConfig::new(region(me), vec![region(1 - me)]).unwrap();
        cfg.max_message_bytes = cap;
        cfg.validate().unwrap();
        cfg
    };
    let mut a = CrossRegionSync::new(cfg_for(0), T0);
    let mut b = CrossRegionSync::new(cfg_for(1), T0);
    a.define_mode(GameMode(2), ScoreOperator::Set).unwrap();
    b.define_mode(GameMode(2), ScoreOperator::Set).unwrap();
    for p in 0..2_000u64 {
        a.submit_score(GameMode(2), PlayerId::new(p), p as i64, T0).unwrap();
        a.add_friend(PlayerId::new(p % 7), PlayerId::new(p), T0).unwrap();
    }
    let mut now = T0;
    let mut sent = 0usize;
    for _ in 0..400 {
        now += ms(10);
        a.handle_timeout(now);
        b.handle_timeout(now);
        while let Some(t) = a.poll_transmit() {
            assert!(t.payload.len() <= cap, "sent {} bytes > {cap}", t.payload.len());
            sent += 1;
            b.handle_datagram(now, region(0), &t.payload);
        }
        while let Some(t) = b.poll_transmit() {
            assert!(t.payload.len() <= cap);
            a.handle_datagram(now, region(1), &t.payload);
        }
    }
    assert!(sent > 10, "2,000 writes cannot fit in {sent} datagrams of {cap} bytes");
    assert_eq!(b.leaderboards().mode(GameMode(2)).map(Leaderboard::len), Some(2_000));
    let friends: usize = (0..7).map(|p| b.friends(PlayerId::new(p)).len()).sum();
    assert_eq!(friends, 2_000);
    if cap >= 16_000 {
        // Every key's full state fits one message: anti-entropy skips nothing.
        assert_eq!(a.stats().oversized_entries, 0);
    }
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.peer_progress(region(1)).map(|p| p.delivered(a.head_seq())), Some(true));
}

#[test]
fn unban_lifts_observed_bans_and_a_concurrent_ban_wins() {
    let mut c = cluster(22, 3, LinkConfig::new(ms(10)));
    let p = PlayerId::new(77);
    let now = c.now();
    assert_eq!(c.node_mut(1).unwrap().unban(p, now), Ok(WriteReceipt::Applied), "nothing to lift");
    let WriteReceipt::Pending(_) = c.node_mut(0).unwrap().ban(p, now).unwrap() else { panic!("STRONG") };
    c.run_for(ms(300));
    assert!((0..3).all(|i| c.node(i).unwrap().is_banned(p)));
    // Observed ban lifted from another region: lifted everywhere.
    let now = c.now();
    let WriteReceipt::Pending(id) = c.node_mut(1).unwrap().unban(p, now).unwrap() else { panic!("STRONG") };
    c.run_for(ms(300));
    assert_eq!(c.node(1).unwrap().strong_status(id), StrongStatus::Committed);
    assert!((0..3).all(|i| !c.node(i).unwrap().is_banned(p)));
    // Ban again, then concurrently: sg lifts the ban it saw while kr bans anew.
    let now = c.now();
    c.node_mut(0).unwrap().ban(p, now).unwrap();
    c.run_for(ms(300));
    c.net().isolate(region(2), &[region(0), region(1)]);
    let now = c.now();
    c.node_mut(2).unwrap().unban(p, now).unwrap();
    c.node_mut(0).unwrap().ban(p, now).unwrap();
    assert!(!c.node(2).unwrap().is_banned(p));
    c.run_for(ms(100));
    c.net().heal();
    c.run_for(ms(3_000));
    assert!(c.converged());
    assert!((0..3).all(|i| c.node(i).unwrap().is_banned(p)), "add-wins: the concurrent ban stays");
}

#[test]
fn catch_up_after_log_overflow_is_confirmed_even_while_both_sides_keep_writing() {
    // The repair confirmation must not need a quiet moment: both regions write every 15 ms.
    let regions = [region(0), region(1)];
    let link = LinkConfig::new(ms(20)).jitter(ms(3));
    let mut c = SimCluster::new(23, &regions, link, T0, |cfg| cfg.max_delta_log = 4).unwrap();
    c.net().partition(region(0), region(1));
    for f in 0..10u64 {
        let now = c.now();
        c.node_mut(0).unwrap().add_friend(PlayerId::new(1), PlayerId::new(100 + f), now).unwrap();
        c.run_for(ms(5));
    }
    c.run_for(ms(2_000));
    c.net().heal();
    let mut confirmed_at = None;
    for step in 0..1_000u64 {
        let now = c.now();
        let w = (step % 2) as usize;
        c.node_mut(w).unwrap().add_friend(PlayerId::new(2 + step % 50), PlayerId::new(step), now).unwrap();
        c.run_for(ms(15));
        if c.node(0).unwrap().peer_progress(region(1)).unwrap().delivered(10) {
            assert_eq!(c.node(1).unwrap().friends(PlayerId::new(1)).len(), 10, "step {step}");
            confirmed_at = Some(step);
            break;
        }
    }
    let step = confirmed_at.expect("catch-up never confirmed under continuous writes");
    assert!(step < 500, "confirmed only after {step} steps");
}
