//! Leaderboard operators merged across regions: `set` converges to the newest write, `best`
//! never goes backwards, `incr` never double-counts, even through partitions and duplication.

use pvp_core::{PlayerId, RegionId};
use pvp_global::leaderboard::{GameMode, ScoreOperator};
use pvp_global::sync::{LinkConfig, SimCluster};
use std::time::Duration;

const T0: Duration = Duration::from_secs(1_700_000_000);

fn cluster(seed: u64) -> (SimCluster, [RegionId; 3]) {
    let rs = ["kr", "jp", "sg"].map(|r| RegionId::new(r).unwrap());
    let link = LinkConfig::new(Duration::from_millis(20)).loss(0.05).duplicate(0.3).reorder(0.2);
    let mut c = SimCluster::new(seed, &rs, link, T0, |_| {}).unwrap();
    for i in 0..3 {
        let n = c.node_mut(i).unwrap();
        n.define_mode(GameMode(1), ScoreOperator::Set).unwrap();
        n.define_mode(GameMode(2), ScoreOperator::Best).unwrap();
        n.define_mode(GameMode(3), ScoreOperator::Incr).unwrap();
        n.define_mode(GameMode(4), ScoreOperator::Decr).unwrap();
    }
    (c, rs)
}

#[test]
fn operators_converge_through_a_partition() {
    let (mut c, rs) = cluster(9);
    let p = PlayerId::new(1);
    c.net().partition(rs[0], rs[1]);
    c.net().partition(rs[0], rs[2]);
    let now = c.now();
    c.node_mut(1).unwrap().submit_score(GameMode(1), p, 10, now).unwrap();
    c.node_mut(0).unwrap().submit_score(GameMode(2), p, 500, now).unwrap();
    c.node_mut(1).unwrap().submit_score(GameMode(2), p, 300, now).unwrap();
    for i in 0..3 {
        for _ in 0..4 {
            let now = c.now();
            c.node_mut(i).unwrap().submit_score(GameMode(3), p, 5, now).unwrap();
            c.node_mut(i).unwrap().submit_score(GameMode(4), p, 2, now).unwrap();
        }
    }
    c.run_for(Duration::from_millis(50));
    // kr writes `set` later than jp did: kr's value must win everywhere.
    let now = c.now();
    c.node_mut(0).unwrap().submit_score(GameMode(1), p, 7, now).unwrap();
    c.run_for(Duration::from_millis(500));
    c.net().heal();
    c.run_for(Duration::from_secs(3));
    assert!(c.converged());
    for i in 0..3 {
        let b = c.node(i).unwrap().leaderboards();
        assert_eq!(b.mode(GameMode(1)).unwrap().score(p), Some(7), "set: newest write wins");
        assert_eq!(b.mode(GameMode(2)).unwrap().score(p), Some(500), "best never goes backwards");
        assert_eq!(b.mode(GameMode(3)).unwrap().score(p), Some(60), "12 increments of 5, each once");
        assert_eq!(b.mode(GameMode(4)).unwrap().score(p), Some(-24), "12 decrements of 2");
    }
    // A lower `best` submission changes nothing.
    let now = c.now();
    c.node_mut(2).unwrap().submit_score(GameMode(2), p, 1, now).unwrap();
    assert_eq!(c.node(2).unwrap().leaderboards().mode(GameMode(2)).unwrap().score(p), Some(500));
}

#[test]
fn ranks_agree_across_regions() {
    let (mut c, _) = cluster(4);
    for k in 0..300u64 {
        let now = c.now();
        c.node_mut((k % 3) as usize)
            .unwrap()
            .submit_score(GameMode(3), PlayerId::new(k % 40), (k % 7) as i64, now)
            .unwrap();
        if k % 30 == 0 {
            c.run_for(Duration::from_millis(5));
        }
    }
    c.run_for(Duration::from_secs(2));
    let boards: Vec<_> =
        (0..3).map(|i| c.node(i).unwrap().leaderboards().mode(GameMode(3)).unwrap().top(40)).collect();
    assert_eq!(boards[0].len(), 40);
    assert_eq!(boards[0], boards[1]);
    assert_eq!(boards[0], boards[2]);
    // Sorted by score, ties by player id.
    for w in boards[0].windows(2) {
        assert!(w[0].score > w[1].score || (w[0].score == w[1].score && w[0].player < w[1].player));
    }
}
