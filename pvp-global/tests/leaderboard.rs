//! The leaderboard: score cells following Nakama's operators (`set`, `best`, `incr`, `decr`),
//! ranks, ties and edges against a BTreeMap model, an empty board and out-of-range queries,
//! sticky declarations, and the operators merged across regions (`set` converges to the newest
//! write, `best` never goes backwards, `incr` never double-counts, even through partitions and
//! duplication).

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use pvp_core::hlc::HlcStamp;
use pvp_core::{PlayerId, RegionId};
use pvp_global::crdt::{Actor, Crdt};
use pvp_global::leaderboard::{GameMode, GlobalLeaderboard, Leaderboard, ScoreCell, ScoreOperator};
use pvp_global::sync::{LinkConfig, SimCluster};

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

// ---------------------------------------------------------------------------------------------
// One board

#[test]
fn an_empty_board_answers_every_query_without_panicking() {
    let mut b = Leaderboard::new();
    let p = PlayerId::new(1);
    assert!(b.is_empty());
    assert_eq!(b.rank(p), None);
    assert_eq!(b.score(p), None);
    assert_eq!(b.remove(p), None);
    assert!(b.top(0).is_empty());
    assert!(b.top(usize::MAX).is_empty());
    assert!(b.range(usize::MAX, usize::MAX).is_empty());
    assert!(b.around(p, usize::MAX, usize::MAX).is_empty());
    let c = Leaderboard::with_capacity(1000);
    assert!(c.is_empty());
}

#[test]
fn extreme_scores_ties_and_out_of_range_queries() {
    let mut b = Leaderboard::new();
    let id = PlayerId::new;
    assert_eq!(b.update(id(5), i64::MIN), Some(1));
    assert_eq!(b.update(id(4), i64::MAX), Some(1));
    assert_eq!(b.update(id(3), 0), Some(2));
    assert_eq!(b.update(id(u64::MAX), 0), Some(3));
    assert_eq!(b.update(id(0), 0), Some(2)); // tie: lower id first
    assert_eq!(b.rank(id(5)), Some(5));
    // Same score again: nothing moves.
    assert_eq!(b.update(id(3), 0), Some(3));
    assert!(b.set_score(id(3), 0));
    assert_eq!(b.len(), 5);
    let order: Vec<(u64, i64)> = b.top(usize::MAX).iter().map(|e| (e.player.get(), e.score)).collect();
    assert_eq!(order, [(4, i64::MAX), (0, 0), (3, 0), (u64::MAX, 0), (5, i64::MIN)]);
    let ranks: Vec<u64> = b.top(10).iter().map(|e| e.rank).collect();
    assert_eq!(ranks, [1, 2, 3, 4, 5]);
    assert!(b.top(0).is_empty());
    assert_eq!(b.top(2).len(), 2);
    assert!(b.range(5, 10).is_empty());
    assert!(b.range(usize::MAX, 1).is_empty());
    assert!(b.range(0, 0).is_empty());
    assert_eq!(b.range(4, usize::MAX).iter().map(|e| e.rank).collect::<Vec<_>>(), [5]);
    // around at both ends, and with zero context.
    let top = b.around(id(4), 3, 1);
    assert_eq!(top.iter().map(|e| e.player.get()).collect::<Vec<_>>(), [4, 0]);
    let bottom = b.around(id(5), 1, 3);
    assert_eq!(bottom.iter().map(|e| e.player.get()).collect::<Vec<_>>(), [u64::MAX, 5]);
    let me = b.around(id(3), 0, 0);
    assert_eq!(me.len(), 1);
    assert_eq!(me[0].rank, 3);
    assert!(b.around(id(77), 1, 1).is_empty());
    let all = b.around(id(3), usize::MAX, usize::MAX);
    assert_eq!(all.len(), 5);
    // Removing twice: the second is None and changes nothing.
    assert_eq!(b.remove(id(0)), Some(0));
    assert_eq!(b.remove(id(0)), None);
    assert_eq!(b.len(), 4);
    assert_eq!(b.rank(id(3)), Some(2));
    assert_eq!(b.rank(id(0)), None);
    // Moving a player updates their rank both ways.
    assert_eq!(b.update(id(5), i64::MAX), Some(2)); // tie with 4, lower id ranks first
    assert_eq!(b.rank(id(4)), Some(1));
    assert_eq!(b.update(id(5), -1), Some(4));
}

#[test]
fn global_leaderboard_declarations_are_sticky() {
    use pvp_global::leaderboard::GameMode as BoardMode;
    let mut g = GlobalLeaderboard::new();
    assert_eq!(g.operator(BoardMode(1)), None);
    assert!(g.mode(BoardMode(1)).is_none());
    assert!(g.define(BoardMode(1), ScoreOperator::Best));
    assert!(g.define(BoardMode(1), ScoreOperator::Best));
    assert!(!g.define(BoardMode(1), ScoreOperator::Incr));
    assert_eq!(g.operator(BoardMode(1)), Some(ScoreOperator::Best));
    assert!(g.mode(BoardMode(1)).is_some_and(Leaderboard::is_empty));
    assert_eq!(g.modes().collect::<Vec<_>>(), [(BoardMode(1), ScoreOperator::Best)]);
}

fn region_at(i: usize) -> RegionId {
    RegionId::new(["kr", "jp", "sg", "us", "eu"][i]).unwrap()
}

fn actor_at(i: usize) -> Actor {
    Actor::new(region_at(i), 1)
}

proptest! {
    #[test]
    fn score_cell_operators_follow_nakama(
        op in prop_oneof![Just(ScoreOperator::Best), Just(ScoreOperator::Set), Just(ScoreOperator::Incr), Just(ScoreOperator::Decr)],
        subs in proptest::collection::vec((0usize..3, -1_000i64..1_000), 1..30),
    ) {
        let mut cell: Option<ScoreCell> = None;
        let mut remote: Option<ScoreCell> = None;
        let mut model: Option<i64> = None;
        for (i, (a, v)) in subs.iter().enumerate() {
            let stamp = HlcStamp::new(100 + i as u64, 0, region_at(*a));
            let (delta, merged) = ScoreCell::submit(cell.as_ref(), op, *v, actor_at(*a), stamp);
            prop_assert!(merged.fits(op));
            cell = Some(merged);
            match remote.as_mut() {
                Some(r) => r.merge(&delta),
                None => remote = Some(delta),
            }
            model = Some(match (op, model) {
                (ScoreOperator::Best, m) => m.map_or(*v, |m| m.max(*v)),
                (ScoreOperator::Set, _) => *v,
                (ScoreOperator::Incr, m) => m.unwrap_or(0) + v,
                (ScoreOperator::Decr, m) => m.unwrap_or(0) - v,
            });
            prop_assert_eq!(cell.as_ref().map(ScoreCell::score), model);
            prop_assert_eq!(remote.as_ref().map(ScoreCell::score), model, "deltas rebuild the state");
        }
    }
}

#[test]
fn leaderboard_ties_edges_and_removal() {
    let mut b = Leaderboard::new();
    assert!(b.top(5).is_empty());
    assert!(b.range(0, 0).is_empty());
    assert_eq!(b.rank(PlayerId::new(1)), None);
    assert!(b.around(PlayerId::new(1), 3, 3).is_empty());
    for (p, s) in [(5u64, 10i64), (3, 10), (9, 20), (1, -5), (7, 10)] {
        assert!(b.update(PlayerId::new(p), s).is_some());
    }
    let order: Vec<u64> = b.top(usize::MAX).iter().map(|e| e.player.get()).collect();
    assert_eq!(order, [9, 3, 5, 7, 1]);
    let ranks: Vec<u64> = b.top(10).iter().map(|e| e.rank).collect();
    assert_eq!(ranks, [1, 2, 3, 4, 5], "ties take distinct positions");
    // Edges: past the end, at the end, around the first and the last.
    assert!(b.range(5, 3).is_empty());
    assert!(b.range(usize::MAX, usize::MAX).is_empty());
    assert_eq!(b.range(4, 100).len(), 1);
    let first: Vec<u64> = b.around(PlayerId::new(9), 10, 1).iter().map(|e| e.player.get()).collect();
    assert_eq!(first, [9, 3]);
    let last: Vec<u64> = b.around(PlayerId::new(1), 1, 10).iter().map(|e| e.player.get()).collect();
    assert_eq!(last, [7, 1]);
    let all = b.around(PlayerId::new(5), usize::MAX, usize::MAX);
    assert_eq!(all.len(), 5);
    // Update moves the rank; an unchanged score keeps it.
    assert_eq!(b.update(PlayerId::new(1), 100), Some(1));
    assert_eq!(b.update(PlayerId::new(1), 100), Some(1));
    assert_eq!(b.rank(PlayerId::new(9)), Some(2));
    assert_eq!(b.remove(PlayerId::new(1)), Some(100));
    assert_eq!(b.remove(PlayerId::new(1)), None);
    assert_eq!(b.rank(PlayerId::new(9)), Some(1));
    assert_eq!(b.len(), 4);
    // Extreme scores order correctly.
    b.update(PlayerId::new(2), i64::MIN);
    b.update(PlayerId::new(4), i64::MAX);
    assert_eq!(b.rank(PlayerId::new(4)), Some(1));
    assert_eq!(b.rank(PlayerId::new(2)), Some(6));
}

#[derive(Debug, Clone)]
enum BoardOp {
    Update(u64, i64),
    Remove(u64),
    Range(usize, usize),
    Around(u64, usize, usize),
}

fn board_op() -> impl Strategy<Value = BoardOp> {
    prop_oneof![
        4 => (0u64..30, -20i64..20).prop_map(|(p, s)| BoardOp::Update(p, s)),
        1 => (0u64..30).prop_map(BoardOp::Remove),
        1 => (0usize..35, 0usize..35).prop_map(|(s, c)| BoardOp::Range(s, c)),
        1 => (0u64..30, 0usize..8, 0usize..8).prop_map(|(p, a, b)| BoardOp::Around(p, a, b)),
    ]
}

proptest! {
    #[test]
    fn leaderboard_matches_a_btreemap_model(ops in proptest::collection::vec(board_op(), 1..200)) {
        let mut b = Leaderboard::with_capacity(4);
        let mut model: BTreeMap<u64, i64> = BTreeMap::new();
        let sorted = |m: &BTreeMap<u64, i64>| {
            let mut v: Vec<(u64, i64)> = m.iter().map(|(p, s)| (*p, *s)).collect();
            v.sort_by(|a, c| c.1.cmp(&a.1).then(a.0.cmp(&c.0)));
            v
        };
        for op in ops {
            match op {
                BoardOp::Update(p, s) => {
                    model.insert(p, s);
                    let want = sorted(&model).iter().position(|x| x.0 == p).map(|i| i as u64 + 1);
                    prop_assert_eq!(b.update(PlayerId::new(p), s), want);
                }
                BoardOp::Remove(p) => prop_assert_eq!(b.remove(PlayerId::new(p)), model.remove(&p)),
                BoardOp::Range(s, c) => {
                    let v = sorted(&model);
                    let want: Vec<(u64, u64, i64)> = v.iter().enumerate().skip(s).take(c)
                        .map(|(i, (p, sc))| (i as u64 + 1, *p, *sc)).collect();
                    let got: Vec<(u64, u64, i64)> = b.range(s, c).iter()
                        .map(|e| (e.rank, e.player.get(), e.score)).collect();
                    prop_assert_eq!(got, want);
                }
                BoardOp::Around(p, before, after) => {
                    let v = sorted(&model);
                    let want: Vec<u64> = match v.iter().position(|x| x.0 == p) {
                        Some(i) => v[i.saturating_sub(before)..(i + after + 1).min(v.len())].iter().map(|x| x.0).collect(),
                        None => Vec::new(),
                    };
                    let got: Vec<u64> = b.around(PlayerId::new(p), before, after).iter().map(|e| e.player.get()).collect();
                    prop_assert_eq!(got, want);
                }
            }
            prop_assert_eq!(b.len(), model.len());
            prop_assert_eq!(b.is_empty(), model.is_empty());
        }
    }
}
