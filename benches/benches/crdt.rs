//! CRDT merge throughput (ours vs the `crdts` crate on the same data), bytes per delta vs full
//! state, and leaderboard update / rank query at 1,000,000 players (ours vs a `BTreeSet` scan).
//!
//! `cargo bench -p pvp-benches --bench crdt`

use crdts::{CmRDT, CvRDT};
use criterion::{BenchmarkId, Criterion, Throughput};
use pvp_core::hlc::HlcStamp;
use pvp_core::{PlayerId, RegionId};
use pvp_global::crdt::{Actor, Crdt, GCounter, LwwRegister, OrSet, PnCounter, Profile, ProfileField, Scalar};
use pvp_global::leaderboard::Leaderboard;
use std::collections::BTreeSet;
use std::hint::black_box;

const N: usize = 1024;

fn actors() -> [Actor; 3] {
    ["kr", "jp", "sg"].map(|r| Actor::new(RegionId::new(r).expect("valid"), 1))
}

/// Tiny deterministic generator so both sides get identical data.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn merges(c: &mut Criterion) {
    let a = actors();
    let mut rng = Lcg(1);

    // --- G-counter: N remote states over 3 actors, counts growing.
    let mut ours_g = Vec::new();
    let mut theirs_g = Vec::new();
    for i in 0..N as u64 {
        let mut g = GCounter::new();
        let mut t = crdts::GCounter::<Actor>::new();
        for act in a {
            let n = i * 3 + rng.next() % 5;
            g.incr(act, n);
            t.apply(t.inc_many(act, n));
        }
        ours_g.push(g);
        theirs_g.push(t);
    }
    let mut g = c.benchmark_group("crdt_merge/gcounter");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("pvp_global", |b| {
        let mut acc = GCounter::new();
        b.iter(|| {
            for s in &ours_g {
                acc.merge(black_box(s));
            }
        })
    });
    g.bench_function("pvp_global_owned_clone", |b| {
        let mut acc = GCounter::new();
        b.iter(|| {
            for s in &ours_g {
                acc.merge(&black_box(s.clone()));
            }
        })
    });
    g.bench_function("crdts", |b| {
        let mut acc = crdts::GCounter::<Actor>::new();
        b.iter(|| {
            for s in &theirs_g {
                acc.merge(black_box(s.clone()));
            }
        })
    });
    g.finish();

    // --- PN-counter.
    let mut ours_pn = Vec::new();
    let mut theirs_pn = Vec::new();
    for i in 0..N as u64 {
        let mut p = PnCounter::new();
        let mut t = crdts::PNCounter::<Actor>::new();
        for act in a {
            let up = i * 3 + rng.next() % 5;
            let down = i + rng.next() % 3;
            p.add(act, up as i64);
            p.add(act, -(down as i64));
            t.apply(t.inc_many(act, up));
            t.apply(t.dec_many(act, down));
        }
        ours_pn.push(p);
        theirs_pn.push(t);
    }
    let mut g = c.benchmark_group("crdt_merge/pncounter");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("pvp_global", |b| {
        let mut acc = PnCounter::new();
        b.iter(|| {
            for s in &ours_pn {
                acc.merge(black_box(s));
            }
        })
    });
    g.bench_function("pvp_global_owned_clone", |b| {
        let mut acc = PnCounter::new();
        b.iter(|| {
            for s in &ours_pn {
                acc.merge(&black_box(s.clone()));
            }
        })
    });
    g.bench_function("crdts", |b| {
        let mut acc = crdts::PNCounter::<Actor>::new();
        b.iter(|| {
            for s in &theirs_pn {
                acc.merge(black_box(s.clone()));
            }
        })
    });
    g.finish();

    // --- LWW register (HLC stamps as the marker on both sides).
    let regions = a.map(|x| x.region);
    let stamps: Vec<(i64, HlcStamp)> = (0..N as u64)
        .map(|i| {
            (
                rng.next() as i64,
                HlcStamp::new(1_000 + i / 2, (rng.next() % 3) as u32, regions[(i % 3) as usize]),
            )
        })
        .collect();
    let ours_l: Vec<_> = stamps.iter().map(|(v, s)| LwwRegister::new(*v, *s)).collect();
    let theirs_l: Vec<_> = stamps.iter().map(|(v, s)| crdts::LWWReg { val: *v, marker: *s }).collect();
    let mut g = c.benchmark_group("crdt_merge/lww_register");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("pvp_global", |b| {
        let mut acc = LwwRegister::new(0i64, HlcStamp::new(0, 0, regions[0]));
        b.iter(|| {
            for s in &ours_l {
                acc.merge(black_box(s));
            }
        })
    });
    g.bench_function("crdts", |b| {
        let mut acc = crdts::LWWReg { val: 0i64, marker: HlcStamp::new(0, 0, regions[0]) };
        b.iter(|| {
            for s in &theirs_l {
                acc.merge(black_box(s.clone()));
            }
        })
    });
    g.finish();

    // --- OR-set: one add reaching a replica of 1,000 elements (delta join vs crdts op apply).
    let mut ours_set = OrSet::new();
    let mut theirs_set = crdts::Orswot::<u64, Actor>::new();
    for e in 0..1000u64 {
        let act = a[(e % 3) as usize];
        ours_set.add(act, e);
        let ctx = theirs_set.read_ctx().derive_add_ctx(act);
        theirs_set.apply(theirs_set.add(e, ctx));
    }
    let mut src = ours_set.clone();
    let ours_deltas: Vec<_> = (0..N as u64).map(|i| src.add(a[0], 5000 + i)).collect();
    let mut tsrc = theirs_set.clone();
    let theirs_ops: Vec<_> = (0..N as u64)
        .map(|i| {
            let ctx = tsrc.read_ctx().derive_add_ctx(a[0]);
            let op = tsrc.add(5000 + i, ctx);
            tsrc.apply(op.clone());
            op
        })
        .collect();
    let mut g = c.benchmark_group("crdt_merge/orset_add_into_1000");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("pvp_global_delta", |b| {
        b.iter_batched(
            || ours_set.clone(),
            |mut acc| {
                for d in &ours_deltas {
                    acc.merge(black_box(d));
                }
                acc
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function("crdts_orswot_op", |b| {
        b.iter_batched(
            || theirs_set.clone(),
            |mut acc| {
                for op in &theirs_ops {
                    acc.apply(black_box(op.clone()));
                }
                acc
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn print_delta_sizes() {
    let a = actors();
    let enc = |x: &dyn erased::Enc| x.bytes();
    let mut rows: Vec<(&str, usize, usize)> = Vec::new();

    let mut g = PnCounter::new();
    for act in a {
        g.add(act, 100);
    }
    let d = g.add(a[0], 1);
    rows.push(("pn_counter, 3 regions, +1", enc(&d), enc(&g)));

    let mut set = OrSet::new();
    for e in 0..200u64 {
        set.add(a[(e % 3) as usize], e);
    }
    let d = set.add(a[1], 9_999);
    rows.push(("or_set (friends), 200 elems, add 1", enc(&d), enc(&set)));
    let d = set.remove(&5).unwrap_or_default();
    rows.push(("or_set (friends), 200 elems, remove 1", enc(&d), enc(&set)));

    let mut p = Profile::new();
    let st = HlcStamp::new(1_700_000_000_000, 0, a[0].region);
    for f in 0..10 {
        p.apply(format!("field{f}"), ProfileField::Register(LwwRegister::new(Scalar::Int(f), st)));
    }
    for f in 0..5 {
        let mut c = PnCounter::new();
        p.apply(format!("count{f}"), ProfileField::Counter(c.add(a[f % 3], 50)));
    }
    let mut c = PnCounter::new();
    c.add(a[0], 50);
    let d = p.apply("count0".into(), ProfileField::Counter(c.add(a[0], 1)));
    rows.push(("profile, 15 fields, wins += 1", enc(&d), enc(&p)));

    println!("\nbytes per delta vs full state (postcard):");
    println!("{:<40} {:>8} {:>8} {:>7}", "object / write", "delta", "full", "ratio");
    for (name, d, f) in rows {
        println!("{name:<40} {d:>8} {f:>8} {:>6.1}x", f as f64 / d.max(1) as f64);
    }
}

mod erased {
    pub(crate) trait Enc {
        fn bytes(&self) -> usize;
    }
    impl<T: serde::Serialize> Enc for T {
        fn bytes(&self) -> usize {
            postcard::to_stdvec(self).map_or(0, |v| v.len())
        }
    }
}

fn leaderboard(c: &mut Criterion) {
    const PLAYERS: u64 = 1_000_000;
    let mut rng = Lcg(7);
    let scores: Vec<i64> = (0..PLAYERS).map(|_| (rng.next() % 100_000) as i64).collect();
    let mut ours = Leaderboard::with_capacity(PLAYERS as usize);
    let mut peer: BTreeSet<(std::cmp::Reverse<i64>, u64)> = BTreeSet::new();
    let mut peer_scores = vec![0i64; PLAYERS as usize];
    for (p, s) in scores.iter().enumerate() {
        ours.set_score(PlayerId::new(p as u64), *s);
        peer.insert((std::cmp::Reverse(*s), p as u64));
        peer_scores[p] = *s;
    }
    let mut g = c.benchmark_group("leaderboard_1m");
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("update", "pvp_global_treap"), |b| {
        let mut r = Lcg(11);
        b.iter(|| {
            let p = r.next() % PLAYERS;
            ours.set_score(PlayerId::new(p), (r.next() % 100_000) as i64)
        })
    });
    g.bench_function(BenchmarkId::new("update", "btreeset"), |b| {
        let mut r = Lcg(11);
        b.iter(|| {
            let p = r.next() % PLAYERS;
            let s = (r.next() % 100_000) as i64;
            peer.remove(&(std::cmp::Reverse(peer_scores[p as usize]), p));
            peer.insert((std::cmp::Reverse(s), p));
            peer_scores[p as usize] = s;
        })
    });
    g.bench_function(BenchmarkId::new("rank", "pvp_global_treap"), |b| {
        let mut r = Lcg(13);
        b.iter(|| ours.rank(PlayerId::new(r.next() % PLAYERS)))
    });
    g.bench_function(BenchmarkId::new("rank", "btreeset_scan"), |b| {
        let mut r = Lcg(13);
        b.iter(|| {
            let p = r.next() % PLAYERS;
            let key = (std::cmp::Reverse(peer_scores[p as usize]), p);
            peer.range(..key).count() + 1
        })
    });
    g.bench_function(BenchmarkId::new("top100", "pvp_global_treap"), |b| b.iter(|| ours.top(100)));
    g.bench_function(BenchmarkId::new("around_10_10", "pvp_global_treap"), |b| {
        let mut r = Lcg(17);
        b.iter(|| ours.around(PlayerId::new(r.next() % PLAYERS), 10, 10))
    });
    g.finish();
}

criterion::criterion_group! {
    name = benches;
    config = pvp_benches::quick_criterion();
    targets = merges, leaderboard
}

fn main() {
    print_delta_sizes();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
