//! Deterministic three-region simulations: kr, jp, sg with the design's RTTs, lossy links,
//! partitions, crashes and restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use pvp_core::{PlayerId, RegionId};
use pvp_global::crdt::Scalar;
use pvp_global::leaderboard::{GameMode, ScoreOperator};
use pvp_global::sync::msg::{self, Body, Message};
use pvp_global::sync::{
    CrossRegionSync, Key, LinkConfig, SimCluster, SnapshotError, SnapshotStore, StrongStatus, SyncConfig,
    SyncError, SyncEvent, Value, WriteOp, WriteReceipt,
};

const KR: usize = 0;

const JP: usize = 1;

const SG: usize = 2;

const T0: Duration = Duration::from_secs(1_700_000_000);

const KILLS: GameMode = GameMode(1);

const BEST: GameMode = GameMode(2);

fn regions() -> [RegionId; 3] {
    [RegionId::new("kr").unwrap(), RegionId::new("jp").unwrap(), RegionId::new("sg").unwrap()]
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cluster(seed: u64, loss: f64, full_state: bool) -> SimCluster {
    let [kr, jp, sg] = regions();
    let link = LinkConfig::new(ms(35)).jitter(ms(3)).loss(loss).duplicate(0.01).reorder(0.05);
    let mut c =
        SimCluster::new(seed, &regions(), link, T0, |cfg| cfg.full_state_shipping = full_state).unwrap();
    c.net().set_rtt(kr, jp, ms(30));
    c.net().set_rtt(kr, sg, ms(70));
    c.net().set_rtt(jp, sg, ms(70));
    for i in 0..3 {
        let n = c.node_mut(i).unwrap();
        n.define_mode(KILLS, ScoreOperator::Incr).unwrap();
        n.define_mode(BEST, ScoreOperator::Best).unwrap();
    }
    c
}

fn counter_value(n: &CrossRegionSync, key: Key, field: &str) -> i64 {
    match n.profile(match key {
        Key::Profile(p) => p,
        _ => unreachable!(),
    }) {
        Some(p) => match p.get(&field.to_string()) {
            Some(pvp_global::crdt::ProfileField::Counter(c)) => c.value(),
            _ => 0,
        },
        None => 0,
    }
}

#[derive(Default)]
struct Expected {
    wins: BTreeMap<u64, i64>,
    kills: BTreeMap<u64, i64>,
    best: BTreeMap<u64, i64>,
    bans: BTreeSet<u64>,
    friends: BTreeMap<u64, BTreeSet<u64>>,
}

/// Writes in every region every 10 ms from `from` to `to`; records what must survive.
fn write_load(c: &mut SimCluster, exp: &mut Expected, from: Duration, to: Duration, salt: u64) {
    let mut t = from;
    let mut k = salt;
    while t < to {
        c.run_until(t);
        for r in 0..3 {
            k = k.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let player = (k >> 33) % 50;
            let now = c.now();
            let n = c.node_mut(r).unwrap();
            n.write(
                Key::Profile(PlayerId::new(player)),
                WriteOp::ProfileAdd { field: "wins".into(), delta: 1 },
                now,
            )
            .unwrap();
            *exp.wins.entry(player).or_default() += 1;
            n.submit_score(KILLS, PlayerId::new(player), 3, now).unwrap();
            *exp.kills.entry(player).or_default() += 3;
            let best = ((k >> 20) % 1000) as i64;
            n.submit_score(BEST, PlayerId::new(player), best, now).unwrap();
            let e = exp.best.entry(player).or_insert(i64::MIN);
            *e = (*e).max(best);
            let friend = (k >> 40) % 50;
            n.add_friend(PlayerId::new(player), PlayerId::new(friend), now).unwrap();
            exp.friends.entry(player).or_default().insert(friend);
            if (k >> 50) % 10 == 0 {
                let banned = 1000 + (k >> 8) % 100;
                n.ban(PlayerId::new(banned), now).unwrap();
                exp.bans.insert(banned);
            }
        }
        t += ms(10);
    }
}

fn assert_all_present(c: &SimCluster, exp: &Expected) {
    for r in 0..3 {
        let n = c.node(r).unwrap();
        for (p, w) in &exp.wins {
            assert_eq!(
                counter_value(n, Key::Profile(PlayerId::new(*p)), "wins"),
                *w,
                "region {r} wins of {p}"
            );
        }
        let kills = n.leaderboards().mode(KILLS).unwrap();
        for (p, s) in &exp.kills {
            assert_eq!(kills.score(PlayerId::new(*p)), Some(*s), "region {r} kills of {p}");
        }
        let best = n.leaderboards().mode(BEST).unwrap();
        for (p, s) in &exp.best {
            assert_eq!(best.score(PlayerId::new(*p)), Some(*s), "region {r} best of {p}");
        }
        for b in &exp.bans {
            assert!(n.is_banned(PlayerId::new(*b)), "region {r} lost ban {b}");
        }
        for (p, fs) in &exp.friends {
            let got: BTreeSet<u64> = n.friends(PlayerId::new(*p)).iter().map(|f| f.get()).collect();
            assert_eq!(&got, fs, "region {r} friends of {p}");
        }
    }
}

#[test]
fn kr_partitioned_then_healed_loses_nothing() {
    let [kr, jp, sg] = regions();
    let mut c = cluster(42, 0.01, false);
    let mut exp = Expected::default();
    write_load(&mut c, &mut exp, T0, T0 + ms(1000), 1);
    c.net().partition(kr, jp);
    c.net().partition(kr, sg);
    // A STRONG ban in cut-off kr cannot reach a majority...
    let now = c.now();
    let WriteReceipt::Pending(kr_ban) = c.node_mut(KR).unwrap().ban(PlayerId::new(7777), now).unwrap() else {
        panic!("bans are STRONG by default")
    };
    exp.bans.insert(7777);
    // ...while one in jp can (jp + sg).
    let WriteReceipt::Pending(jp_ban) = c.node_mut(JP).unwrap().ban(PlayerId::new(8888), now).unwrap() else {
        panic!("bans are STRONG by default")
    };
    exp.bans.insert(8888);
    let now = c.now();
    write_load(&mut c, &mut exp, now, T0 + ms(3500), 2);
    assert!(!c.converged(), "kr is cut off; it cannot have the others' writes");
    assert_eq!(
        c.node(KR).unwrap().strong_status(kr_ban),
        StrongStatus::Failed(SyncError::StrongTimeout { acked: 1, needed: 2 })
    );
    assert_eq!(c.node(JP).unwrap().strong_status(jp_ban), StrongStatus::Committed);
    assert!(!c.node(JP).unwrap().is_banned(PlayerId::new(7777)));
    c.net().heal();
    let now = c.now();
    write_load(&mut c, &mut exp, now, T0 + ms(4500), 3);
    c.run_for(ms(3000));
    assert!(c.converged(), "replicas differ after heal");
    assert_all_present(&c, &exp);
    // The failed STRONG ban was not rolled back: it is in force everywhere now.
    assert!(c.node(SG).unwrap().is_banned(PlayerId::new(7777)));
    // Leaderboards agree on every rank.
    let top: Vec<_> =
        (0..3).map(|r| c.node(r).unwrap().leaderboards().mode(KILLS).unwrap().top(50)).collect();
    assert_eq!(top[0], top[1]);
    assert_eq!(top[1], top[2]);
    assert!(c.node(KR).unwrap().stats().retransmits > 0);
}

#[test]
fn full_state_shipping_baseline_also_converges() {
    let mut c = cluster(5, 0.01, true);
    let mut exp = Expected::default();
    write_load(&mut c, &mut exp, T0, T0 + ms(1000), 9);
    c.run_for(ms(2500));
    assert!(c.converged());
    assert_all_present(&c, &exp);
}

#[test]
fn strong_ban_is_in_force_in_a_majority_when_committed() {
    let mut c = cluster(3, 0.0, false);
    let now = c.now();
    let WriteReceipt::Pending(id) = c.node_mut(SG).unwrap().ban(PlayerId::new(5), now).unwrap() else {
        panic!("STRONG expected")
    };
    let mut committed_at = None;
    for _ in 0..500 {
        c.run_for(ms(1));
        if let Some(ev) = c.node_mut(SG).unwrap().poll_event() {
            assert_eq!(ev, SyncEvent::StrongCommitted { id });
            committed_at = Some(c.now());
            let in_force = (0..3).filter(|&r| c.node(r).unwrap().is_banned(PlayerId::new(5))).count();
            assert!(in_force >= 2, "committed while only {in_force} regions enforce the ban");
            break;
        }
    }
    let at = committed_at.expect("ban never committed");
    // sg's nearest peer is 70 ms RTT away: a commit takes at least one round trip.
    assert!(at - now >= ms(70), "committed after {:?}", at - now);
}

#[test]
fn garbage_is_counted_and_dropped() {
    let [kr, jp, _] = regions();
    let mut n = CrossRegionSync::new(SyncConfig::new(kr, vec![jp]).unwrap(), T0);
    n.handle_datagram(T0, jp, &[]);
    n.handle_datagram(T0, jp, &[99, 1, 2, 3]);
    n.handle_datagram(T0, jp, &[msg::PROTOCOL_VERSION, 0xff, 0xff, 0xff]);
    n.handle_datagram(T0, jp, &vec![msg::PROTOCOL_VERSION; 70_000]);
    let s = n.stats();
    assert_eq!(s.version_dropped, 2);
    assert_eq!(s.malformed_dropped, 1);
    assert_eq!(s.oversized_dropped, 1);

    // A well-formed message from a region that is not a peer, or claiming another name.
    let mut other =
        CrossRegionSync::new(SyncConfig::new(RegionId::new("eu").unwrap(), vec![kr]).unwrap(), T0);
    other.write(Key::Custom(1), WriteOp::CounterAdd(5), T0).unwrap();
    other.handle_timeout(T0 + ms(100));
    let tx = other.poll_transmit().unwrap();
    n.handle_datagram(T0, RegionId::new("eu").unwrap(), &tx.payload);
    n.handle_datagram(T0, jp, &tx.payload);
    assert_eq!(n.stats().unknown_peer_dropped, 2);
    assert!(n.is_empty(), "nothing from a dropped datagram may be applied");

    // A stamp far in the future.
    let far = pvp_core::hlc::HlcStamp::new((T0 + Duration::from_secs(60)).as_millis() as u64, 0, jp);
    let m = Message {
        from: jp,
        incarnation: 1,
        stamp: far,
        body: Body::Digest { buckets: vec![0; msg::DIGEST_BUCKETS] },
    };
    let mut buf = Vec::new();
    msg::encode(&m, &mut buf).unwrap();
    n.handle_datagram(T0, jp, &buf);
    assert_eq!(n.stats().clock_rejected, 1);

    // A key holding a value of the wrong kind is malformed.
    let bad = Message {
        from: jp,
        incarnation: 1,
        stamp: pvp_core::hlc::HlcStamp::new(0, 0, jp),
        body: Body::Repair {
            entries: vec![(Key::Ban(PlayerId::new(1)), Value::Counter(Default::default()))],
        },
    };
    msg::encode(&bad, &mut buf).unwrap();
    n.handle_datagram(T0, jp, &buf);
    assert_eq!(n.stats().malformed_dropped, 2);
    assert!(n.is_empty());
}

#[test]
fn write_errors_are_typed() {
    let [kr, jp, _] = regions();
    let mut n = CrossRegionSync::new(SyncConfig::new(kr, vec![jp]).unwrap(), T0);
    assert_eq!(
        n.submit_score(GameMode(9), PlayerId::new(1), 5, T0),
        Err(SyncError::UnknownMode(GameMode(9)))
    );
    n.define_mode(GameMode(9), ScoreOperator::Best).unwrap();
    assert!(matches!(n.define_mode(GameMode(9), ScoreOperator::Set), Err(SyncError::ModeConflict { .. })));
    assert_eq!(
        n.write(Key::Ban(PlayerId::new(1)), WriteOp::CounterAdd(1), T0),
        Err(SyncError::TypeMismatch(Key::Ban(PlayerId::new(1))))
    );
    n.write(Key::Custom(3), WriteOp::CounterAdd(1), T0).unwrap();
    assert_eq!(n.write(Key::Custom(3), WriteOp::SetAdd(1), T0), Err(SyncError::TypeMismatch(Key::Custom(3))));
    let long = "x".repeat(300);
    assert_eq!(
        n.write(Key::Custom(4), WriteOp::RegisterSet(Scalar::Text(long)), T0),
        Err(SyncError::TooLarge(Key::Custom(4)))
    );
    assert!(SyncConfig::new(kr, vec![kr]).is_err());
    assert!(SyncConfig::new(kr, vec![jp, jp]).is_err());
}

#[test]
fn restart_from_snapshot_loses_at_most_the_snapshot_interval() {
    let dir = tempfile::tempdir().unwrap();
    let [kr, ..] = regions();
    let store = SnapshotStore::new(dir.path(), kr).unwrap();
    let mut c = cluster(11, 0.0, false);
    let [_, jp, sg] = regions();
    // Cut kr off so that its own writes exist only in kr: the snapshot is all that keeps them.
    c.net().partition(kr, jp);
    c.net().partition(kr, sg);
    let interval = ms(500);
    let mut next_snap = T0 + interval;
    let mut written = Vec::new(); // (time, counter key)
    for i in 0..230u64 {
        c.run_until(T0 + ms(10 * i));
        let now = c.now();
        c.node_mut(KR).unwrap().write(Key::Custom(i), WriteOp::CounterAdd(1), now).unwrap();
        written.push((now, i));
        if now >= next_snap {
            store.save_node(c.node(KR).unwrap()).unwrap();
            next_snap = now + interval;
        }
    }
    let crash_at = c.now();
    c.crash(KR);
    let snap = store.load().unwrap().expect("a snapshot was saved");
    c.restart(KR, Some(snap));
    let n = c.node(KR).unwrap();
    for (t, key) in &written {
        let present = matches!(n.get(&Key::Custom(*key)), Some(Value::Counter(v)) if v.value() == 1);
        if crash_at - *t > interval {
            assert!(present, "write {key} from {:?} before the crash was lost", crash_at - *t);
        }
    }
    // The new incarnation never reuses the old counters: a fresh increment adds.
    let now = c.now();
    c.node_mut(KR).unwrap().write(Key::Custom(0), WriteOp::CounterAdd(1), now).unwrap();
    assert!(matches!(c.node(KR).unwrap().get(&Key::Custom(0)), Some(Value::Counter(v)) if v.value() == 2));
    c.net().heal();
    c.run_for(ms(3000));
    assert!(c.converged());
}

#[test]
fn corrupt_snapshot_is_detected_and_region_recovers_from_peers() {
    let dir = tempfile::tempdir().unwrap();
    let [kr, ..] = regions();
    let store = SnapshotStore::new(dir.path(), kr).unwrap();
    let mut c = cluster(12, 0.01, false);
    let mut exp = Expected::default();
    write_load(&mut c, &mut exp, T0, T0 + ms(800), 4);
    c.run_for(ms(1500));
    store.save(&c.node(KR).unwrap().snapshot()).unwrap();
    let copied = std::fs::read(store.path()).unwrap();
    store.save_node(c.node(KR).unwrap()).unwrap();
    assert_eq!(std::fs::read(store.path()).unwrap(), copied, "save_node writes what save(snapshot()) does");
    c.crash(KR);
    // Tear the file: flip one byte in the middle, then truncate another copy.
    let path = store.path();
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(store.load(), Err(SnapshotError::Corrupt(_))));
    std::fs::write(&path, &bytes[..mid]).unwrap();
    assert!(matches!(store.load(), Err(SnapshotError::Corrupt(_))));
    c.restart(KR, None);
    assert!(c.node(KR).unwrap().is_empty());
    c.run_for(ms(2000));
    assert!(c.converged());
    assert_all_present(&c, &exp);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Random seeds, loss, duplication and partition windows: replicas always converge after heal.
    #[test]
    fn replicas_converge_under_random_faults(
        seed in any::<u64>(),
        loss in 0.0f64..0.2,
        cut in 0usize..3,
        cut_ms in 0u64..1500,
    ) {
        let regions = regions();
        let mut c = cluster(seed, loss, false);
        let mut exp = Expected::default();
        write_load(&mut c, &mut exp, T0, T0 + ms(300), seed);
        for (i, r) in regions.iter().enumerate() {
            if i != cut {
                c.net().partition(regions[cut], *r);
            }
        }
        let now = c.now();
    write_load(&mut c, &mut exp, now, T0 + ms(300 + cut_ms), seed ^ 1);
        c.net().heal();
        c.run_for(ms(6000));
        prop_assert!(c.converged());
        assert_all_present(&c, &exp);
    }
}

#[test]
fn peer_that_fell_off_the_delta_log_is_repaired_by_anti_entropy() {
    let [kr, jp, sg] = regions();
    let link = LinkConfig::new(ms(20));
    let mut c = SimCluster::new(21, &regions(), link, T0, |cfg| cfg.max_delta_log = 16).unwrap();
    c.net().partition(kr, jp);
    c.net().partition(kr, sg);
    for i in 0..200u64 {
        let now = c.now();
        c.node_mut((i % 3) as usize)
            .unwrap()
            .write(Key::Custom(i % 37), WriteOp::CounterAdd(1), now)
            .unwrap();
        c.run_for(ms(5));
    }
    assert!(c.node(JP).unwrap().stats().log_overflows > 0);
    c.net().heal();
    c.run_for(ms(4000));
    assert!(c.converged());
    let total: i64 = (0..37)
        .map(|k| match c.node(KR).unwrap().get(&Key::Custom(k)) {
            Some(Value::Counter(v)) => v.value(),
            _ => 0,
        })
        .sum();
    assert_eq!(total, 200, "every increment exactly once");
    assert!(
        c.node(KR).unwrap().stats().repair_entries_sent > 0
            || c.node(JP).unwrap().stats().repair_entries_sent > 0
    );
}

/// Convergence in virtual time at 1% loss: every write reaches all three regions, p99 under 1 s.
#[test]
fn eventual_writes_converge_within_a_second_at_one_percent_loss() {
    let mut c = cluster(77, 0.01, false);
    let mut lags = Vec::new();
    let mut pending: Vec<(Duration, u64)> = Vec::new();
    for w in 0..400u64 {
        let now = c.now();
        c.node_mut((w % 3) as usize)
            .unwrap()
            .add_friend(PlayerId::new(w % 25), PlayerId::new(10_000 + w), now)
            .unwrap();
        pending.push((now, w));
        for _ in 0..10 {
            c.run_for(ms(1));
            let now = c.now();
            pending.retain(|(at, w)| {
                let all = (0..3).all(|r| {
                    c.node(r).unwrap().friends(PlayerId::new(w % 25)).contains(&PlayerId::new(10_000 + w))
                });
                if all {
                    lags.push(now - *at);
                }
                !all
            });
        }
    }
    for _ in 0..2000 {
        if pending.is_empty() {
            break;
        }
        c.run_for(ms(1));
        let now = c.now();
        pending.retain(|(at, w)| {
            let all = (0..3).all(|r| {
                c.node(r).unwrap().friends(PlayerId::new(w % 25)).contains(&PlayerId::new(10_000 + w))
            });
            if all {
                lags.push(now - *at);
            }
            !all
        });
    }
    assert!(pending.is_empty(), "{} writes never converged", pending.len());
    lags.sort();
    let p99 = lags[lags.len() * 99 / 100];
    assert!(p99 <= ms(1000), "p99 {p99:?}");
    // And not trivially: the farthest pair is 70 ms RTT apart.
    assert!(lags[lags.len() / 2] >= ms(35));
}

#[test]
fn concurrent_adds_past_the_write_limit_still_replicate() {
    let [kr, jp, sg] = regions();
    let mut c = SimCluster::new(8, &regions(), LinkConfig::new(ms(20)), T0, |_| {}).unwrap();
    c.net().partition(kr, jp);
    c.net().partition(kr, sg);
    let p = PlayerId::new(1);
    let half = pvp_global::sync::MAX_SET_LEN as u64 - 10;
    for f in 0..half {
        let now = c.now();
        c.node_mut(KR).unwrap().add_friend(p, PlayerId::new(f), now).unwrap();
        c.node_mut(JP).unwrap().add_friend(p, PlayerId::new(100_000 + f), now).unwrap();
    }
    c.run_for(ms(500));
    c.net().heal();
    c.run_for(ms(3000));
    assert!(c.converged());
    assert_eq!(c.node(SG).unwrap().friends(p).len() as u64, 2 * half);
    // A local write past the limit is refused with a typed error.
    let now = c.now();
    assert_eq!(
        c.node_mut(SG).unwrap().add_friend(p, PlayerId::new(999_999), now),
        Err(SyncError::TooLarge(Key::Friends(p)))
    );
}

#[test]
fn a_lone_region_commits_strong_writes_at_once() {
    let [kr, ..] = regions();
    let mut n = CrossRegionSync::new(SyncConfig::new(kr, vec![]).unwrap(), Duration::ZERO);
    assert_eq!(n.majority(), 1);
    let WriteReceipt::Pending(id) = n.ban(PlayerId::new(3), Duration::ZERO).unwrap() else {
        panic!("bans are STRONG")
    };
    assert_eq!(n.strong_status(id), StrongStatus::Committed);
    assert_eq!(n.poll_event(), Some(SyncEvent::StrongCommitted { id }));
    assert!(n.is_banned(PlayerId::new(3)));
    assert_eq!(n.unban(PlayerId::new(3), ms(1)).map(|_| n.is_banned(PlayerId::new(3))), Ok(false));
    assert_eq!(n.strong_status(id + 100), StrongStatus::Unknown);
}
