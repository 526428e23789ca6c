//! Small-object allocation: pvp-core's `NumaAllocator` (and `NumaGlobalAlloc` called directly)
//! against the system allocator and mimalloc, same inputs, one run.
//!
//! - `same_thread/<size>`: one alloc + free of `size` bytes per iteration.
//! - `same_thread_batch64/<size>`: 64 allocs then 64 frees per iteration.
//! - `cross_thread/<size>`: a producer allocates, a consumer frees; pointers travel through a
//!   pvp-core's `BoundedQueue`.
//!
//! `cargo bench -p pvp-benches --bench numa_alloc`

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mimalloc::MiMalloc;
use pvp_core::numa::{NumaAllocator, NumaGlobalAlloc};
use pvp_core::queue::BoundedQueue;

/// The contenders, each a pair of alloc / free functions.
trait Contender: Sync {
    fn alloc(&self, layout: Layout) -> *mut u8;
    /// # Safety
    /// `p` came from `alloc` with `layout`.
    unsafe fn free(&self, p: *mut u8, layout: Layout);
}

struct Global<A: GlobalAlloc>(A);

impl<A: GlobalAlloc + Sync> Contender for Global<A> {
    #[inline(always)]
    fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: benchmark layouts are non-zero sized.
        unsafe { self.0.alloc(layout) }
    }
    #[inline(always)]
    unsafe fn free(&self, p: *mut u8, layout: Layout) {
        // SAFETY: forwarded.
        unsafe { self.0.dealloc(p, layout) }
    }
}

struct Numa(NumaAllocator);

impl Contender for Numa {
    #[inline(always)]
    fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.0.allocate_local(layout) {
            Ok(p) => p.as_ptr(),
            Err(_) => std::ptr::null_mut(),
        }
    }
    #[inline(always)]
    unsafe fn free(&self, p: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(p) {
            // SAFETY: forwarded.
            unsafe { self.0.deallocate(p, layout) }
        }
    }
}

const SIZES: [usize; 4] = [8, 64, 128, 256];

fn same_thread_one<C: Contender>(c: &C, layout: Layout) {
    let p = black_box(c.alloc(layout));
    // SAFETY: just allocated with `layout`.
    unsafe { c.free(p, layout) };
}

fn same_thread_batch<C: Contender>(c: &C, layout: Layout, slots: &mut [*mut u8; 64]) {
    for s in slots.iter_mut() {
        *s = c.alloc(layout);
    }
    black_box(&slots);
    for &p in slots.iter() {
        // SAFETY: allocated above with `layout`.
        unsafe { c.free(p, layout) };
    }
}

struct SendPtr(*mut u8);
// SAFETY: each pointer goes to exactly one consumer.
unsafe impl Send for SendPtr {}

fn cross_thread<C: Contender>(c: &C, layout: Layout, iters: u64) -> Duration {
    // Deep enough that on a busy 2-core machine the threads rarely wait on each other, so the
    // figure is allocator work rather than scheduler hand-offs.
    let queue = BoundedQueue::<SendPtr>::new(1 << 16).expect("non-zero capacity");
    std::thread::scope(|s| {
        let start = Instant::now();
        s.spawn(|| {
            let mut freed = 0;
            let mut idle = 0u32;
            while freed < iters {
                match queue.pop() {
                    Some(SendPtr(p)) => {
                        // SAFETY: allocated by the producer with `layout`, sent once.
                        unsafe { c.free(p, layout) };
                        freed += 1;
                        idle = 0;
                    }
                    None if idle < 64 => {
                        idle += 1;
                        std::hint::spin_loop();
                    }
                    None => std::thread::yield_now(),
                }
            }
        });
        for _ in 0..iters {
            let mut p = SendPtr(c.alloc(layout));
            while let Err(back) = queue.push(p) {
                p = back;
                std::thread::yield_now();
            }
        }
        // Scope end joins the consumer: the time covers every free.
        start
    })
    .elapsed()
}

fn bench(c: &mut Criterion) {
    let numa = Numa(NumaAllocator::detect().expect("NUMA allocator"));
    let global = Global(NumaGlobalAlloc::new());
    let system = Global(System);
    let mimalloc = Global(MiMalloc);

    let mut g = c.benchmark_group("numa_alloc/same_thread");
    g.throughput(Throughput::Elements(1));
    for size in SIZES {
        let layout = Layout::from_size_align(size, 8).expect("layout");
        g.bench_with_input(BenchmarkId::new("pvp_numa", size), &layout, |b, &l| {
            b.iter(|| same_thread_one(&numa, l))
        });
        g.bench_with_input(BenchmarkId::new("pvp_numa_global", size), &layout, |b, &l| {
            b.iter(|| same_thread_one(&global, l))
        });
        g.bench_with_input(BenchmarkId::new("mimalloc", size), &layout, |b, &l| {
            b.iter(|| same_thread_one(&mimalloc, l))
        });
        g.bench_with_input(BenchmarkId::new("system", size), &layout, |b, &l| {
            b.iter(|| same_thread_one(&system, l))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("numa_alloc/same_thread_batch64");
    g.throughput(Throughput::Elements(64));
    for size in SIZES {
        let layout = Layout::from_size_align(size, 8).expect("layout");
        let mut slots = [std::ptr::null_mut(); 64];
        g.bench_with_input(BenchmarkId::new("pvp_numa", size), &layout, |b, &l| {
            b.iter(|| same_thread_batch(&numa, l, &mut slots))
        });
        g.bench_with_input(BenchmarkId::new("mimalloc", size), &layout, |b, &l| {
            b.iter(|| same_thread_batch(&mimalloc, l, &mut slots))
        });
        g.bench_with_input(BenchmarkId::new("system", size), &layout, |b, &l| {
            b.iter(|| same_thread_batch(&system, l, &mut slots))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("numa_alloc/cross_thread");
    g.throughput(Throughput::Elements(1));
    for size in [64usize, 256] {
        let layout = Layout::from_size_align(size, 8).expect("layout");
        g.bench_with_input(BenchmarkId::new("pvp_numa", size), &layout, |b, &l| {
            b.iter_custom(|iters| cross_thread(&numa, l, iters))
        });
        g.bench_with_input(BenchmarkId::new("mimalloc", size), &layout, |b, &l| {
            b.iter_custom(|iters| cross_thread(&mimalloc, l, iters))
        });
        g.bench_with_input(BenchmarkId::new("system", size), &layout, |b, &l| {
            b.iter_custom(|iters| cross_thread(&system, l, iters))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = pvp_benches::quick_criterion();
    targets = bench
}
criterion_main!(benches);
