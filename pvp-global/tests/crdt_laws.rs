//! Lattice laws of every CRDT (commutative, associative, idempotent merges) and convergence of
//! replicas that receive the same deltas in any order, any number of times.

use proptest::prelude::*;
use pvp_core::RegionId;
use pvp_core::hlc::HlcStamp;
use pvp_global::crdt::{
    Actor, Crdt, GCounter, LwwRegister, MaxRegister, OrSet, PnCounter, Profile, ProfileField, Scalar,
};
use pvp_global::leaderboard::{ScoreCell, ScoreOperator};
use std::fmt::Debug;

const REGIONS: [&str; 3] = ["kr", "jp", "sg"];

fn actor(i: usize) -> Actor {
    Actor::new(RegionId::new(REGIONS[i % 3]).unwrap(), 1 + (i / 3) as u64)
}

fn join<T: Crdt + Clone>(a: &T, b: &T) -> T {
    let mut x = a.clone();
    x.merge(b);
    x
}

fn check_laws<T: Crdt + Clone + PartialEq + Debug>(a: &T, b: &T, c: &T) -> Result<(), TestCaseError> {
    prop_assert_eq!(join(a, b), join(b, a), "commutative");
    prop_assert_eq!(join(&join(a, b), c), join(a, &join(b, c)), "associative");
    prop_assert_eq!(join(a, a), a.clone(), "idempotent");
    let ab = join(a, b);
    prop_assert_eq!(join(&ab, b), ab.clone(), "absorbs what it holds");
    Ok(())
}

/// Replays `deltas` in the order of `order` (indices may repeat: duplicates) onto `start`.
fn replay<T: Crdt + Clone>(start: &T, deltas: &[T], order: &[usize]) -> T {
    let mut x = start.clone();
    for &i in order {
        if let Some(d) = deltas.get(i % deltas.len().max(1)) {
            x.merge(d);
        }
    }
    // every delta at least once
    for d in deltas {
        x.merge(d);
    }
    x
}

#[derive(Debug, Clone)]
enum SetOp {
    Add(usize, u64),
    Remove(usize, u64),
    Sync(usize, usize),
}

fn set_ops() -> impl Strategy<Value = Vec<SetOp>> {
    proptest::collection::vec(
        prop_oneof![
            (0usize..3, 0u64..6).prop_map(|(r, e)| SetOp::Add(r, e)),
            (0usize..3, 0u64..6).prop_map(|(r, e)| SetOp::Remove(r, e)),
            (0usize..3, 0usize..3).prop_map(|(a, b)| SetOp::Sync(a, b)),
        ],
        0..40,
    )
}

/// Runs a set history on 3 replicas; returns the replicas and every delta produced.
fn run_set_history(ops: &[SetOp]) -> (Vec<OrSet<u64>>, Vec<OrSet<u64>>) {
    let mut reps = vec![OrSet::new(); 3];
    let mut deltas = Vec::new();
    for op in ops {
        match *op {
            SetOp::Add(r, e) => deltas.push(reps[r].add(actor(r), e)),
            SetOp::Remove(r, e) => deltas.extend(reps[r].remove(&e)),
            SetOp::Sync(a, b) => {
                let src = reps[a].clone();
                reps[b].merge(&src);
            }
        }
    }
    (reps, deltas)
}

fn stamp() -> impl Strategy<Value = HlcStamp> {
    (0u64..20, 0u32..3, 0usize..3)
        .prop_map(|(w, l, r)| HlcStamp::new(w, l, RegionId::new(REGIONS[r]).unwrap()))
}

fn gcounter() -> impl Strategy<Value = GCounter> {
    proptest::collection::vec((0usize..5, 0u64..100), 0..8).prop_map(|incs| {
        let mut g = GCounter::new();
        for (a, n) in incs {
            g.incr(actor(a), n);
        }
        g
    })
}

fn pncounter() -> impl Strategy<Value = PnCounter> {
    proptest::collection::vec((0usize..5, -100i64..100), 0..8).prop_map(|incs| {
        let mut c = PnCounter::new();
        for (a, n) in incs {
            c.add(actor(a), n);
        }
        c
    })
}

fn profile() -> impl Strategy<Value = Profile> {
    proptest::collection::vec((0u8..4, 0usize..5, -50i64..50, stamp()), 0..8).prop_map(|ops| {
        let mut p = Profile::new();
        for (field, a, v, s) in ops {
            let name = format!("f{field}");
            // fields 0,1 registers; 2,3 counters (kinds fixed per name, as a schema would)
            let f = if field < 2 {
                ProfileField::Register(LwwRegister::new(Scalar::Int(v), s))
            } else {
                let mut c = PnCounter::new();
                ProfileField::Counter(c.add(actor(a), v))
            };
            p.apply(name, f);
        }
        p
    })
}

fn score_cell() -> impl Strategy<Value = ScoreCell> {
    (0u8..3, -100i64..100, 0usize..5, stamp()).prop_map(|(k, v, a, s)| match k {
        0 => ScoreCell::submit(None, ScoreOperator::Best, v, actor(a), s).1,
        1 => ScoreCell::submit(None, ScoreOperator::Set, v, actor(a), s).1,
        _ => ScoreCell::submit(None, ScoreOperator::Incr, v, actor(a), s).1,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn lww_laws(a in (any::<i64>(), stamp()), b in (any::<i64>(), stamp()), c in (any::<i64>(), stamp())) {
        let (a, b, c) = (LwwRegister::new(a.0, a.1), LwwRegister::new(b.0, b.1), LwwRegister::new(c.0, c.1));
        check_laws(&a, &b, &c)?;
        // the newest stamp wins
        let j = join(&join(&a, &b), &c);
        prop_assert_eq!(j.stamp(), a.stamp().max(b.stamp()).max(c.stamp()));
    }

    #[test]
    fn max_laws(a in any::<i64>(), b in any::<i64>(), c in any::<i64>()) {
        check_laws(&MaxRegister::new(a), &MaxRegister::new(b), &MaxRegister::new(c))?;
        prop_assert_eq!(join(&MaxRegister::new(a), &MaxRegister::new(b)).value(), a.max(b));
    }

    #[test]
    fn gcounter_laws(a in gcounter(), b in gcounter(), c in gcounter()) {
        check_laws(&a, &b, &c)?;
    }

    #[test]
    fn pncounter_laws(a in pncounter(), b in pncounter(), c in pncounter()) {
        check_laws(&a, &b, &c)?;
    }

    #[test]
    fn profile_laws(a in profile(), b in profile(), c in profile()) {
        check_laws(&a, &b, &c)?;
    }

    #[test]
    fn score_cell_laws(a in score_cell(), b in score_cell(), c in score_cell()) {
        check_laws(&a, &b, &c)?;
    }

    #[test]
    fn orset_laws_and_convergence(ops in set_ops(), order in proptest::collection::vec(0usize..1000, 0..80)) {
        let (reps, deltas) = run_set_history(&ops);
        check_laws(&reps[0], &reps[1], &reps[2])?;
        if deltas.len() >= 3 {
            check_laws(&deltas[0], &deltas[1], &deltas[2])?;
        }
        // Everything every replica saw, joined.
        let all = join(&join(&reps[0], &reps[1]), &reps[2]);
        // A fresh replica fed all deltas in a random order with duplicates reaches it...
        let fresh = replay(&OrSet::new(), &deltas, &order);
        prop_assert_eq!(&fresh, &all);
        // ...and so does each replica fed the deltas it may have missed, in any order.
        for r in &reps {
            prop_assert_eq!(&replay(r, &deltas, &order), &all);
        }
    }

    #[test]
    fn counters_converge_without_double_counting(
        incs in proptest::collection::vec((0usize..3, 1i64..50), 1..30),
        order in proptest::collection::vec(0usize..1000, 0..90),
    ) {
        let mut reps = vec![PnCounter::new(); 3];
        let mut deltas = Vec::new();
        for (r, n) in &incs {
            deltas.push(reps[*r].add(actor(*r), *n));
        }
        let expected: i64 = incs.iter().map(|(_, n)| n).sum();
        let fresh = replay(&PnCounter::new(), &deltas, &order);
        prop_assert_eq!(fresh.value(), expected, "each increment counted exactly once");
        for r in &reps {
            prop_assert_eq!(replay(r, &deltas, &order).value(), expected);
        }
    }
}

#[test]
fn add_wins_over_concurrent_remove() {
    let (mut kr, mut jp) = (OrSet::new(), OrSet::new());
    jp.merge(&kr.add(actor(0), 9u64));
    let rm = jp.remove(&9).unwrap();
    let add = kr.add(actor(0), 9);
    kr.merge(&rm);
    jp.merge(&add);
    assert!(kr.contains(&9) && jp.contains(&9));
    // A remove that has seen the add does remove it.
    let rm2 = jp.remove(&9).unwrap();
    kr.merge(&rm2);
    assert!(!kr.contains(&9));
}
