//! `UnboundedQueue::with_block_reuse` allocates nothing once running while the queue stays
//! shorter than a block; `UnboundedQueue::new` allocates a block per `BLOCK_CAPACITY` values. Counted with
//! a global allocator wrapper that counts only the measuring thread's allocations: the test
//! harness's own thread allocates while it waits for the result (its channel registers a
//! waiter), and counted process-wide that raced into the measured window on a slow machine.
//! Its own test binary: the counting wrapper is the process's `#[global_allocator]`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use pvp_core::queue::UnboundedQueue;

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set on the thread whose allocations are counted (const-initialised: reading it never
    /// allocates).
    static TRACKED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if TRACKED.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on as is.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this `layout` (via `alloc` above).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Rounds of 20 pushes then 20 pops; returns allocations during the measured rounds.
fn allocations_in_steady_state(q: &UnboundedQueue<u64>) -> usize {
    let mut next = 0u64;
    let mut expect = 0u64;
    let mut round = |q: &UnboundedQueue<u64>| {
        for _ in 0..20 {
            q.push(next);
            next += 1;
        }
        for _ in 0..20 {
            assert_eq!(q.pop(), Some(expect));
            expect += 1;
        }
    };
    for _ in 0..10 {
        round(q);
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    TRACKED.with(|t| t.set(true));
    for _ in 0..1_000 {
        round(q);
    }
    TRACKED.with(|t| t.set(false));
    ALLOCS.load(Ordering::Relaxed) - before
}

#[test]
fn block_reuse_allocates_nothing_once_running_and_new_allocates_per_block() {
    let reuse = UnboundedQueue::with_block_reuse();
    assert_eq!(allocations_in_steady_state(&reuse), 0);
    let fresh = UnboundedQueue::new();
    // 20,000 values through blocks of BLOCK_CAPACITY: one allocation per block, no more.
    let blocks = 20_000 / UnboundedQueue::<u64>::BLOCK_CAPACITY;
    let n = allocations_in_steady_state(&fresh);
    assert!((blocks..=blocks + 2).contains(&n), "{n} allocations for {blocks} blocks");
    assert_eq!(reuse.pop(), None);
    assert_eq!(fresh.pop(), None);
}
