//! LockFreeQueue and UnboundedQueue against crossbeam's ArrayQueue / SegQueue,
//! concurrent-queue and flume, moving the same u64 messages with the same thread layouts.
//!
//! `cargo bench -p pvp-benches --bench queue`

use std::hint::black_box;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pvp_core::queue::{LockFreeQueue, UnboundedQueue};

/// Messages moved per measured iteration.
const MSGS: u64 = 200_000;
/// Bounded capacity used by every bounded queue.
const CAP: usize = 1024;
const BATCH: usize = 32;

/// The two operations every queue under test offers, non-blocking.
trait Queue: Sync {
    fn push(&self, v: u64) -> Result<(), u64>;
    fn pop(&self) -> Option<u64>;
}

impl Queue for LockFreeQueue<u64> {
    fn push(&self, v: u64) -> Result<(), u64> {
        LockFreeQueue::push(self, v)
    }
    fn pop(&self) -> Option<u64> {
        LockFreeQueue::pop(self)
    }
}
impl Queue for UnboundedQueue<u64> {
    fn push(&self, v: u64) -> Result<(), u64> {
        UnboundedQueue::push(self, v);
        Ok(())
    }
    fn pop(&self) -> Option<u64> {
        UnboundedQueue::pop(self)
    }
}
impl Queue for crossbeam_queue::ArrayQueue<u64> {
    fn push(&self, v: u64) -> Result<(), u64> {
        crossbeam_queue::ArrayQueue::push(self, v)
    }
    fn pop(&self) -> Option<u64> {
        crossbeam_queue::ArrayQueue::pop(self)
    }
}
impl Queue for crossbeam_queue::SegQueue<u64> {
    fn push(&self, v: u64) -> Result<(), u64> {
        crossbeam_queue::SegQueue::push(self, v);
        Ok(())
    }
    fn pop(&self) -> Option<u64> {
        crossbeam_queue::SegQueue::pop(self)
    }
}
impl Queue for concurrent_queue::ConcurrentQueue<u64> {
    fn push(&self, v: u64) -> Result<(), u64> {
        concurrent_queue::ConcurrentQueue::push(self, v).map_err(|e| e.into_inner())
    }
    fn pop(&self) -> Option<u64> {
        concurrent_queue::ConcurrentQueue::pop(self).ok()
    }
}
struct Flume(flume::Sender<u64>, flume::Receiver<u64>);
impl Queue for Flume {
    fn push(&self, v: u64) -> Result<(), u64> {
        self.0.try_send(v).map_err(|e| e.into_inner())
    }
    fn pop(&self) -> Option<u64> {
        self.1.try_recv().ok()
    }
}

/// Spins briefly, then yields: the same waiting policy for every queue, so a full or empty
/// queue costs each of them the same.
#[inline]
fn wait(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        thread::yield_now();
    }
}

/// The wall time of one transfer: from the first thread's start to the last thread's end,
/// each taken by the worker threads themselves, so a main thread that is scheduled late (on a
/// machine with fewer cores than threads) cannot shorten the measured interval.
fn span(handles: Vec<thread::ScopedJoinHandle<'_, (Instant, Instant)>>) -> Duration {
    let times: Vec<(Instant, Instant)> =
        handles.into_iter().map(|h| h.join().expect("bench thread")).collect();
    let start = times.iter().map(|t| t.0).min().expect("threads");
    let end = times.iter().map(|t| t.1).max().expect("threads");
    end - start
}

/// `producers` threads push MSGS values in all, `consumers` threads pop them all; returns the
/// wall time from the first thread's start to the last pop.
fn transfer<Q: Queue>(q: &Q, producers: usize, consumers: usize) -> Duration {
    let per_p = MSGS / producers as u64;
    let per_c = MSGS / consumers as u64;
    let barrier = Barrier::new(producers + consumers);
    thread::scope(|s| {
        let mut handles = Vec::new();
        for _ in 0..producers {
            handles.push(s.spawn(|| {
                barrier.wait();
                let start = Instant::now();
                for i in 0..per_p {
                    let mut v = i;
                    let mut spins = 0;
                    while let Err(back) = q.push(v) {
                        v = back;
                        wait(&mut spins);
                    }
                }
                (start, Instant::now())
            }));
        }
        for _ in 0..consumers {
            handles.push(s.spawn(|| {
                barrier.wait();
                let start = Instant::now();
                let mut got = 0;
                while got < per_c {
                    let mut spins = 0;
                    loop {
                        if let Some(v) = q.pop() {
                            black_box(v);
                            break;
                        }
                        wait(&mut spins);
                    }
                    got += 1;
                }
                (start, Instant::now())
            }));
        }
        span(handles)
    })
}

/// The batch path of LockFreeQueue: 32 values per push_batch / pop_batch.
fn transfer_batched(q: &LockFreeQueue<u64>, producers: usize, consumers: usize) -> Duration {
    let per_p = MSGS / producers as u64;
    let per_c = MSGS / consumers as u64;
    let barrier = Barrier::new(producers + consumers);
    thread::scope(|s| {
        let mut handles = Vec::new();
        for _ in 0..producers {
            handles.push(s.spawn(|| {
                let mut buf = Vec::with_capacity(BATCH);
                barrier.wait();
                let start = Instant::now();
                let mut i = 0;
                while i < per_p {
                    while buf.len() < BATCH && i < per_p {
                        buf.push(i);
                        i += 1;
                    }
                    let mut spins = 0;
                    while !buf.is_empty() {
                        if q.push_batch(&mut buf) == 0 {
                            wait(&mut spins);
                        }
                    }
                }
                (start, Instant::now())
            }));
        }
        for _ in 0..consumers {
            handles.push(s.spawn(|| {
                let mut buf = Vec::with_capacity(BATCH);
                barrier.wait();
                let start = Instant::now();
                let mut got = 0;
                while got < per_c {
                    buf.clear();
                    let mut spins = 0;
                    let want = BATCH.min((per_c - got) as usize);
                    loop {
                        let n = q.pop_batch(&mut buf, want);
                        if n > 0 {
                            got += n as u64;
                            black_box(&buf);
                            break;
                        }
                        wait(&mut spins);
                    }
                }
                (start, Instant::now())
            }));
        }
        span(handles)
    })
}

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
        let ours = LockFreeQueue::<u64>::new(CAP).unwrap();
        g.bench_function("pvp_LockFreeQueue", |b| b.iter_custom(|n| timed(n, || transfer(&ours, p, cs))));
        g.bench_function("pvp_LockFreeQueue_batch32", |b| {
            b.iter_custom(|n| timed(n, || transfer_batched(&ours, p, cs)))
        });
        let cb = crossbeam_queue::ArrayQueue::<u64>::new(CAP);
        g.bench_function("crossbeam_ArrayQueue", |b| b.iter_custom(|n| timed(n, || transfer(&cb, p, cs))));
        let cq = concurrent_queue::ConcurrentQueue::<u64>::bounded(CAP);
        g.bench_function("concurrent_queue_bounded", |b| {
            b.iter_custom(|n| timed(n, || transfer(&cq, p, cs)))
        });
        let (tx, rx) = flume::bounded(CAP);
        let fl = Flume(tx, rx);
        g.bench_function("flume_bounded", |b| b.iter_custom(|n| timed(n, || transfer(&fl, p, cs))));
        g.finish();
    }
}

fn unbounded(c: &mut Criterion) {
    for (p, cs) in pairs().into_iter().map(|n| (n, n)) {
        let mut g = c.benchmark_group(format!("unbounded_{p}p{cs}c"));
        g.throughput(Throughput::Elements(MSGS));
        let ours = UnboundedQueue::<u64>::new();
        g.bench_function("pvp_UnboundedQueue", |b| b.iter_custom(|n| timed(n, || transfer(&ours, p, cs))));
        let seg = crossbeam_queue::SegQueue::<u64>::new();
        g.bench_function("crossbeam_SegQueue", |b| b.iter_custom(|n| timed(n, || transfer(&seg, p, cs))));
        let cq = concurrent_queue::ConcurrentQueue::<u64>::unbounded();
        g.bench_function("concurrent_queue_unbounded", |b| {
            b.iter_custom(|n| timed(n, || transfer(&cq, p, cs)))
        });
        let (tx, rx) = flume::unbounded();
        let fl = Flume(tx, rx);
        g.bench_function("flume_unbounded", |b| b.iter_custom(|n| timed(n, || transfer(&fl, p, cs))));
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
    let ours = LockFreeQueue::<u64>::new(CAP).unwrap();
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

/// `pop` on an empty queue: what polling an idle queue costs (LockFreeQueue re-reads the slot
/// a few times before it answers; see `SLOT_WAIT` in pvp-core).
fn empty_pop(c: &mut Criterion) {
    let mut g = c.benchmark_group("empty_pop");
    g.throughput(Throughput::Elements(1));
    let ours = LockFreeQueue::<u64>::new(CAP).unwrap();
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
