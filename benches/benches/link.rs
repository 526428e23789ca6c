//! What sealing an inter-region link costs: `pvp_global::link::SealedLinks` seal + open of one
//! sync datagram (XChaCha20-Poly1305, replay window) against handing the same bytes over
//! unsealed (a copy into the send buffer and one out of the receive buffer: what the sync
//! path did before), at a heartbeat's size and at the sync protocol's largest datagram.
//!
//! `cargo bench -p pvp-benches --bench link`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pvp_core::ids::RegionId;
use pvp_global::link::{LinkKey, SealedLinks};
use std::hint::black_box;

fn seal_open(c: &mut Criterion) {
    let (kr, jp): (RegionId, RegionId) = ("kr".parse().unwrap(), "jp".parse().unwrap());
    let key = LinkKey::derive(b"bench secret", kr, jp, "sync");
    let mut g = c.benchmark_group("link/datagram");
    for size in [64usize, 1_400] {
        let plain = vec![7u8; size];
        g.throughput(Throughput::Elements(1));
        let (mut a, mut b) = (SealedLinks::new(kr, 1), SealedLinks::new(jp, 2));
        a.add_peer(jp, key.clone());
        b.add_peer(kr, key.clone());
        let (mut wire, mut out) = (Vec::with_capacity(2_048), Vec::with_capacity(2_048));
        g.bench_function(BenchmarkId::new("sealed", size), |bch| {
            bch.iter(|| {
                a.seal(jp, black_box(&plain), &mut wire).unwrap();
                black_box(b.open(black_box(&wire), &mut out).unwrap());
            })
        });
        g.bench_function(BenchmarkId::new("plain", size), |bch| {
            bch.iter(|| {
                wire.clear();
                wire.extend_from_slice(black_box(&plain));
                out.clear();
                out.extend_from_slice(black_box(&wire));
                black_box(&out);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, seal_open);
criterion_main!(benches);
