//! BoundedQueue and UnboundedQueue against crossbeam's ArrayQueue / SegQueue,
//! concurrent-queue and flume, moving the same u64 messages with the same thread layouts.
//!
//! `cargo bench -p pvp-benches --bench queue`

mod queue_common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pvp_core::queue::{BoundedQueue, UnboundedQueue};

use queue_common::{BATCH, CAP, Flume, MSGS, Queue, transfer, transfer_batched};

/// Producer/consumer pairs to measure: `PVP_QUEUE_PAIRS=1,2,4,8` on a bigger machine; 1 and 2
/// by default (this project's reference box has 2 cores).
fn pairs() -> Vec<usize> {
    std::env::var("PVP_QUEUE_PAIRS")
        .ok()
        .map(|v| v.split(',').filter_map(|p| p.trim().parse().ok()).filter(|&p| p > 0).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![1, 2])
}

fn timed(iters: u64, mut f: impl FnMut() -> Duration) -> Duration {
    (0..iters).map(|_| f()).sum()
}

fn bounded(c: &mut Criterion) {
    for (p, cs) in pairs().into_iter().map(|n| (n, n)) {
        let mut g = c.benchmark_group(format!("bounded_{p}p{cs}c"));
        g.throughput(Throughput::Elements(MSGS));
        let ours = BoundedQueue::<u64>::new(CAP).unwrap();
        g.bench_function("pvp_LockFreeQueue", |b| {
            b.iter_custom(|n| timed(n, || transfer(&ours, MSGS, p, cs)))
        });
        g.bench_function("pvp_LockFreeQueue_batch32", |b| {
            b.iter_custom(|n| timed(n, || transfer_batched(&ours, MSGS, p, cs)))
        });
        let cb = crossbeam_queue::ArrayQueue::<u64>::new(CAP);
        g.bench_function("crossbeam_ArrayQueue", |b| {
            b.iter_custom(|n| timed(n, || transfer(&cb, MSGS, p, cs)))
        });
        let cq = concurrent_queue::ConcurrentQueue::<u64>::bounded(CAP);
        g.bench_function("concurrent_queue_bounded", |b| {
            b.iter_custom(|n| timed(n, || transfer(&cq, MSGS, p, cs)))
        });
        let (tx, rx) = flume::bounded(CAP);
        let fl = Flume(tx, rx);
        g.bench_function("flume_bounded", |b| b.iter_custom(|n| timed(n, || transfer(&fl, MSGS, p, cs))));
        g.finish();
    }
}

fn unbounded(c: &mut Criterion) {
    for (p, cs) in pairs().into_iter().map(|n| (n, n)) {
        let mut g = c.benchmark_group(format!("unbounded_{p}p{cs}c"));
        g.throughput(Throughput::Elements(MSGS));
        let ours = UnboundedQueue::<u64>::new();
        g.bench_function("pvp_UnboundedQueue", |b| {
            b.iter_custom(|n| timed(n, || transfer(&ours, MSGS, p, cs)))
        });
        let seg = crossbeam_queue::SegQueue::<u64>::new();
        g.bench_function("crossbeam_SegQueue", |b| {
            b.iter_custom(|n| timed(n, || transfer(&seg, MSGS, p, cs)))
        });
        let cq = concurrent_queue::ConcurrentQueue::<u64>::unbounded();
        g.bench_function("concurrent_queue_unbounded", |b| {
            b.iter_custom(|n| timed(n, || transfer(&cq, MSGS, p, cs)))
        });
        let (tx, rx) = flume::unbounded();
        let fl = Flume(tx, rx);
        g.bench_function("flume_unbounded", |b| b.iter_custom(|n| timed(n, || transfer(&fl, MSGS, p, cs))));
        g.finish();
    }
}

/// One thread, push then pop: the uncontended cost of one round trip through the queue.
fn single_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("single_thread_push_pop");
    const N: u64 = 512;
    g.throughput(Throughput::Elements(N));
    /// N pushes then N pops through one queue, via the shared `Queue` trait.
    fn round_trip<Q: Queue>(q: &Q) {
        for i in 0..N {
            let _ = q.push(black_box(i));
        }
        for _ in 0..N {
            black_box(q.pop());
        }
    }
    let ours = BoundedQueue::<u64>::new(CAP).unwrap();
    g.bench_function(BenchmarkId::new("pvp_LockFreeQueue", N), |b| b.iter(|| round_trip(&ours)));
    let mut buf = Vec::with_capacity(BATCH);
    g.bench_function(BenchmarkId::new("pvp_LockFreeQueue_batch32", N), |b| {
        b.iter(|| {
            for chunk in 0..N / BATCH as u64 {
                buf.extend((0..BATCH as u64).map(|i| black_box(chunk * 32 + i)));
                ours.push_batch(&mut buf);
            }
            for _ in 0..N / BATCH as u64 {
                buf.clear();
                ours.pop_batch(&mut buf, BATCH);
                black_box(&buf);
            }
        })
    });
    let cb = crossbeam_queue::ArrayQueue::<u64>::new(CAP);
    g.bench_function(BenchmarkId::new("crossbeam_ArrayQueue", N), |b| b.iter(|| round_trip(&cb)));
    let ub = UnboundedQueue::<u64>::new();
    g.bench_function(BenchmarkId::new("pvp_UnboundedQueue", N), |b| b.iter(|| round_trip(&ub)));
    let seg = crossbeam_queue::SegQueue::<u64>::new();
    g.bench_function(BenchmarkId::new("crossbeam_SegQueue", N), |b| b.iter(|| round_trip(&seg)));
    g.finish();
}

/// `pop` on an empty queue: what polling an idle queue costs (BoundedQueue re-reads the slot
/// a few times before it answers; see `SLOT_WAIT` in pvp-core).
fn empty_pop(c: &mut Criterion) {
    let mut g = c.benchmark_group("empty_pop");
    g.throughput(Throughput::Elements(1));
    let ours = BoundedQueue::<u64>::new(CAP).unwrap();
    g.bench_function("pvp_LockFreeQueue", |b| b.iter(|| black_box(ours.pop())));
    let cb = crossbeam_queue::ArrayQueue::<u64>::new(CAP);
    g.bench_function("crossbeam_ArrayQueue", |b| b.iter(|| black_box(cb.pop())));
    let ub = UnboundedQueue::<u64>::new();
    g.bench_function("pvp_UnboundedQueue", |b| b.iter(|| black_box(ub.pop())));
    let seg = crossbeam_queue::SegQueue::<u64>::new();
    g.bench_function("crossbeam_SegQueue", |b| b.iter(|| black_box(seg.pop())));
    g.finish();
}

criterion_group! {
    name = benches;
    config = pvp_benches::quick_criterion();
    targets = single_thread, empty_pop, bounded, unbounded
}
criterion_main!(benches);
