//! The CRDTs: lattice laws of every type (commutative, associative, idempotent merges) and
//! convergence of replicas that receive the same deltas in any order, any number of times; the
//! documented semantics (register order and ties broken by region, max registers, counters that
//! saturate and clamp, add-wins OR-sets and re-adds, maps merging key by key) and canonical
//! decoding of untrusted bytes.

use std::fmt::Debug;

use proptest::prelude::*;
use pvp_core::RegionId;
use pvp_core::hlc::HlcStamp;
use pvp_global::crdt::{
    Actor, Crdt, CrdtMap, GCounter, LwwRegister, MaxRegister, OrSet, PnCounter, Profile, ProfileField, Scalar,
};
use pvp_global::leaderboard::{ScoreCell, ScoreOperator};

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

// ---------------------------------------------------------------------------------------------
// Counters

fn region(name: &str) -> RegionId {
    RegionId::new(name).unwrap()
}

fn named_actor(name: &str, inc: u64) -> Actor {
    Actor::new(region(name), inc)
}

fn joined<T: Crdt + Clone>(a: &T, b: &T) -> T {
    let mut x = a.clone();
    x.merge(b);
    x
}

#[test]
fn gcounter_saturates_and_merges_by_max() {
    let (kr, jp) = (named_actor("kr", 1), named_actor("jp", 1));
    let mut g = GCounter::new();
    assert_eq!(g.value(), 0);
    assert_eq!(g.count_of(&kr), 0);
    assert!(g.entries().is_empty());
    g.incr(kr, u64::MAX - 1);
    let d = g.incr(kr, 5);
    assert_eq!(g.count_of(&kr), u64::MAX);
    assert_eq!(d.count_of(&kr), u64::MAX);
    g.incr(jp, 7);
    assert_eq!(g.value(), u64::MAX);
    g.incr(jp, 0);
    assert_eq!(g.count_of(&jp), 7);
    // Merge keeps each actor's max; merging an older state changes nothing.
    let mut old = GCounter::new();
    old.incr(jp, 3);
    let before = g.clone();
    g.merge(&old);
    assert_eq!(g, before);
    assert_eq!(joined(&old, &g), g);
    assert_eq!(joined(&g, &GCounter::new()), g);
    assert_eq!(joined(&g, &g), g);
    // Entries are in actor order.
    let actors: Vec<Actor> = g.entries().iter().map(|e| e.0).collect();
    let mut sorted = actors.clone();
    sorted.sort();
    assert_eq!(actors, sorted);
}

#[test]
fn gcounter_from_untrusted_bytes_is_canonical() {
    let (kr, jp) = (named_actor("kr", 1), named_actor("jp", 1));
    let mut ok = GCounter::new();
    ok.incr(kr, 5);
    ok.incr(jp, 2);
    let json = serde_json::to_value(&ok).unwrap();
    let entries = json["entries"].as_array().unwrap().clone();
    // Reversed, with a duplicate of a smaller count for kr.
    let mut hostile = entries.clone();
    hostile.reverse();
    let mut dup = entries.iter().find(|e| e[1] == 5).unwrap().clone();
    dup[1] = serde_json::json!(1);
    hostile.push(dup);
    let g: GCounter = serde_json::from_value(serde_json::json!({ "entries": hostile })).unwrap();
    assert_eq!(g, ok);
    assert_eq!(g.count_of(&kr), 5);
    assert_eq!(g.value(), 7);
}

#[test]
fn pncounter_extremes_clamp_to_i64() {
    let (kr, jp) = (named_actor("kr", 1), named_actor("jp", 1));
    let mut c = PnCounter::new();
    assert_eq!(c.value(), 0);
    c.add(kr, i64::MIN);
    assert_eq!(c.value(), i64::MIN);
    c.add(jp, i64::MIN);
    assert_eq!(c.value(), i64::MIN);
    let mut up = PnCounter::new();
    up.add(kr, i64::MAX);
    up.add(kr, i64::MAX);
    up.add(kr, i64::MAX);
    assert_eq!(up.value(), i64::MAX);
    up.add(jp, -5);
    assert_eq!(up.value(), i64::MAX);
    let mut z = PnCounter::new();
    z.add(kr, 0);
    assert_eq!(z.value(), 0);
    let mut m = PnCounter::new();
    let d1 = m.add(kr, 10);
    let d2 = m.add(kr, -3);
    assert_eq!(m.value(), 7);
    let mut r = PnCounter::new();
    r.merge(&d2);
    r.merge(&d1);
    r.merge(&d1);
    assert_eq!(r.value(), 7);
    assert_eq!(r, m);
}

fn region_at(i: usize) -> RegionId {
    RegionId::new(["kr", "jp", "sg", "us", "eu"][i]).unwrap()
}

fn actor_at(i: usize) -> Actor {
    Actor::new(region_at(i), 1)
}

// ---------------------------------------------------------------------------------------------
// Registers

#[test]
fn registers_follow_their_documented_order() {
    let s = |wall: u64, logical: u32, r: &str| HlcStamp::new(wall, logical, region(r));
    let mut reg = LwwRegister::new(5i64, s(10, 0, "kr"));
    reg.set(1, s(9, 0, "kr"));
    assert_eq!(*reg.value(), 5);
    reg.set(1, s(10, 0, "kr")); // equal stamp: larger value wins, 5 stays
    assert_eq!(*reg.value(), 5);
    reg.set(9, s(10, 0, "kr")); // equal stamp: 9 > 5
    assert_eq!(*reg.value(), 9);
    reg.set(-1, s(10, 1, "kr"));
    assert_eq!((*reg.value(), reg.stamp()), (-1, s(10, 1, "kr")));
    let a = LwwRegister::new(1i64, s(10, 0, "kr"));
    let b = LwwRegister::new(2i64, s(10, 0, "jp"));
    assert_eq!(joined(&a, &b), joined(&b, &a));
    let mut m = MaxRegister::new(i64::MIN);
    assert_eq!(m.offer(-5).value(), -5);
    m.offer(-9);
    assert_eq!(m.value(), -5);
    m.offer(i64::MAX);
    m.merge(&MaxRegister::new(0));
    assert_eq!(m.value(), i64::MAX);
}

#[test]
fn lww_equal_hlc_time_is_broken_by_region_in_either_merge_order() {
    let a = LwwRegister::new(1i64, HlcStamp::new(10, 0, region_at(0))); // "kr"
    let b = LwwRegister::new(2i64, HlcStamp::new(10, 0, region_at(1))); // "jp"
    let (winner, loser) = if region_at(0) > region_at(1) { (&a, &b) } else { (&b, &a) };
    let mut x = a.clone();
    x.merge(&b);
    let mut y = b.clone();
    y.merge(&a);
    assert_eq!(x, y);
    assert_eq!(x.value(), winner.value());
    assert_ne!(x.value(), loser.value());
    // The logical counter outranks the region; the wall clock outranks both.
    let c = LwwRegister::new(3i64, HlcStamp::new(10, 1, region_at(0).min(region_at(1))));
    let mut z = x.clone();
    z.merge(&c);
    assert_eq!(*z.value(), 3);
    let mut w = c.clone();
    w.merge(&LwwRegister::new(4i64, HlcStamp::new(11, 0, region_at(0).min(region_at(1)))));
    assert_eq!(*w.value(), 4);
}

#[test]
fn lww_set_ignores_equal_or_older_stamps_and_equal_stamps_keep_the_larger_value() {
    let s = HlcStamp::new(50, 2, region_at(0));
    let mut r = LwwRegister::new(5i64, s);
    r.set(9, HlcStamp::new(49, 9, region_at(4)));
    assert_eq!(*r.value(), 5);
    r.set(3, s);
    assert_eq!(*r.value(), 5, "equal stamp with a smaller value must not replace");
    r.set(7, s);
    assert_eq!(*r.value(), 7, "equal stamp falls back to the larger value");
    assert_eq!(r.stamp(), s);
}

proptest! {
    #[test]
    fn max_register_offer_keeps_the_maximum(vals in proptest::collection::vec(any::<i64>(), 1..20)) {
        let mut m = MaxRegister::new(vals[0]);
        let mut other = MaxRegister::new(vals[0]);
        for v in &vals[1..] {
            let d = m.offer(*v);
            prop_assert_eq!(d.value(), *v);
            other.merge(&d);
        }
        let max = *vals.iter().max().unwrap();
        prop_assert_eq!(m.value(), max);
        prop_assert_eq!(other.value(), max);
    }

    #[test]
    fn pn_counter_value_is_the_sum_and_deltas_rebuild_it(
        ops in proptest::collection::vec((0usize..4, -1_000i64..1_000), 0..40),
        order in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let mut c = PnCounter::new();
        let mut deltas = Vec::new();
        for (a, d) in &ops {
            deltas.push(c.add(actor_at(*a), *d));
        }
        prop_assert_eq!(c.value(), ops.iter().map(|(_, d)| d).sum::<i64>());
        // Deltas delivered in any order, some twice, give the full state.
        let mut r = PnCounter::new();
        let mut idx: Vec<usize> = (0..deltas.len()).collect();
        for (i, o) in order.iter().enumerate() {
            if !idx.is_empty() {
                let n = idx.len();
                idx.swap(i % n, o % n);
            }
        }
        for &i in idx.iter().chain(order.iter().filter_map(|o| idx.get(o % idx.len().max(1)))) {
            r.merge(&deltas[i]);
        }
        prop_assert_eq!(&r, &c);
        prop_assert_eq!(r.value(), c.value());
    }
}

// ---------------------------------------------------------------------------------------------
// OR-set and maps

#[test]
fn orset_remove_of_absent_elements_and_repeats() {
    let kr = named_actor("kr", 1);
    let mut s: OrSet<u64> = OrSet::new();
    assert!(s.is_empty());
    assert_eq!(s.len(), 0);
    assert!(s.remove(&1).is_none());
    assert!(s.remove_delta(&1).is_none());
    assert_eq!(s, OrSet::new());
    s.add(kr, 1);
    s.add(kr, 1); // re-adding replaces the dot, the set holds it once
    assert_eq!(s.len(), 1);
    assert!(s.remove(&1).is_some());
    assert!(s.remove(&1).is_none());
    assert!(!s.contains(&1));
    assert!(s.is_empty());
    // Merging the empty set is the identity; merging is idempotent.
    s.add(kr, 2);
    s.add(kr, 3);
    let before = s.clone();
    s.merge(&OrSet::new());
    assert_eq!(s, before);
    s.merge(&before);
    assert_eq!(s, before);
    assert_eq!(s.iter().copied().collect::<Vec<_>>(), [2, 3]);
    // A removal delta applied to a replica that never saw the add does not resurrect it later.
    let mut other: OrSet<u64> = OrSet::new();
    let add = other.add(named_actor("jp", 1), 9);
    let mut third: OrSet<u64> = OrSet::new();
    third.merge(&add);
    let rm = third.remove(&9).unwrap();
    let mut late: OrSet<u64> = OrSet::new();
    late.merge(&rm);
    late.merge(&add);
    assert!(!late.contains(&9));
    // add_delta does not apply.
    let d = s.add_delta(kr, 4);
    assert!(!s.contains(&4));
    s.merge(&d);
    assert!(s.contains(&4));
}

#[test]
fn crdt_map_merges_key_by_key() {
    let (kr, jp) = (named_actor("kr", 1), named_actor("jp", 1));
    let mut a: CrdtMap<String, GCounter> = CrdtMap::new();
    assert!(a.is_empty());
    assert!(a.get(&"wins".to_owned()).is_none());
    let mut g = GCounter::new();
    let d = a.apply("wins".to_owned(), g.incr(kr, 2));
    let mut b: CrdtMap<String, GCounter> = CrdtMap::new();
    b.apply("wins".to_owned(), GCounter::new().incr(jp, 3));
    b.apply("losses".to_owned(), GCounter::new().incr(jp, 1));
    let ab = joined(&a, &b);
    assert_eq!(ab, joined(&b, &a));
    assert_eq!(ab.len(), 2);
    assert_eq!(ab.get(&"wins".to_owned()).map(GCounter::value), Some(5));
    assert_eq!(joined(&ab, &d), ab);
    assert_eq!(ab.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["losses", "wins"]);
}

#[test]
fn orset_remove_after_observed_add_is_absent_everywhere() {
    let mut a = OrSet::<u64>::new();
    let add = a.add(actor_at(0), 7);
    let mut b = OrSet::new();
    b.merge(&add);
    let rm = b.remove(&7).expect("b observed the add");
    assert!(!b.contains(&7));
    a.merge(&rm);
    assert!(!a.contains(&7));
    // The old add arriving again (duplicate) does not resurrect it.
    a.merge(&add);
    b.merge(&add);
    assert!(!a.contains(&7) && !b.contains(&7));
    assert!(a.is_empty() && b.is_empty());
    assert!(b.remove(&7).is_none(), "removing an absent element has no delta");
}

#[test]
fn orset_concurrent_add_and_remove_add_wins_and_readd_works() {
    let mut a = OrSet::<u64>::new();
    let add1 = a.add(actor_at(0), 1);
    let mut b = OrSet::new();
    b.merge(&add1);
    // Concurrently: b removes 1, a re-adds 1.
    let rm = b.remove(&1).unwrap();
    let add2 = a.add(actor_at(0), 1);
    let mut x = a.clone();
    x.merge(&rm);
    let mut y = b.clone();
    y.merge(&add2);
    assert!(x.contains(&1) && y.contains(&1), "add wins over a concurrent remove");
    assert_eq!(x.iter().collect::<Vec<_>>(), y.iter().collect::<Vec<_>>());
    // Re-add after an observed remove brings it back.
    let mut c = OrSet::<u64>::new();
    c.add(actor_at(1), 5);
    c.remove(&5).unwrap();
    assert!(!c.contains(&5));
    let readd = c.add(actor_at(1), 5);
    assert!(c.contains(&5));
    let mut d = OrSet::new();
    d.merge(&readd);
    assert!(d.contains(&5));
    assert_eq!(d.len(), 1);
}

fn set_op() -> impl Strategy<Value = SetOp> {
    prop_oneof![
        (0usize..3, 0u64..5).prop_map(|(r, e)| SetOp::Add(r, e)),
        (0usize..3, 0u64..5).prop_map(|(r, e)| SetOp::Remove(r, e)),
        (0usize..3, 0usize..3).prop_map(|(a, b)| SetOp::Sync(a, b)),
    ]
}

proptest! {
    /// Three replicas, each shipping deltas: a replica that merges every delta (in any order)
    /// equals the full-state join; the sequential add-wins model holds for one replica.
    #[test]
    fn orset_deltas_equal_full_state_and_match_add_wins_model(ops in proptest::collection::vec(set_op(), 1..60)) {
        let mut reps: Vec<OrSet<u64>> = vec![OrSet::new(); 3];
        let mut deltas: Vec<OrSet<u64>> = Vec::new();
        for op in &ops {
            match *op {
                SetOp::Add(r, e) => {
                    deltas.push(reps[r].add(actor_at(r), e));
                    prop_assert!(reps[r].contains(&e));
                }
                SetOp::Remove(r, e) => {
                    let had = reps[r].contains(&e);
                    match reps[r].remove(&e) {
                        Some(d) => { prop_assert!(had); deltas.push(d); }
                        None => prop_assert!(!had),
                    }
                    prop_assert!(!reps[r].contains(&e));
                }
                SetOp::Sync(a, b) => {
                    let s = reps[a].clone();
                    reps[b].merge(&s);
                }
            }
        }
        let mut full = OrSet::new();
        for r in &reps {
            full.merge(r);
        }
        let mut from_deltas = OrSet::new();
        for d in deltas.iter().rev() {
            from_deltas.merge(d);
        }
        let mut fwd = OrSet::new();
        for d in &deltas {
            fwd.merge(d);
        }
        prop_assert_eq!(full.iter().collect::<Vec<_>>(), from_deltas.iter().collect::<Vec<_>>());
        prop_assert_eq!(full.iter().collect::<Vec<_>>(), fwd.iter().collect::<Vec<_>>());
        // Idempotent and commutative on the replicas too.
        let mut twice = full.clone();
        twice.merge(&full);
        prop_assert_eq!(twice.iter().collect::<Vec<_>>(), full.iter().collect::<Vec<_>>());
        let mut ab = reps[0].clone();
        ab.merge(&reps[1]);
        let mut ba = reps[1].clone();
        ba.merge(&reps[0]);
        prop_assert_eq!(ab.iter().collect::<Vec<_>>(), ba.iter().collect::<Vec<_>>());
    }
}
