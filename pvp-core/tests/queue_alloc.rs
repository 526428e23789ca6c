//! `UnboundedQueue::with_block_reuse` allocates nothing once running while the queue stays
//! shorter than a block; `UnboundedQueue::new` allocates a block per `BLOCK_CAPACITY` values. Counted with
//! a global allocator wrapper, in its own test binary so no other test's allocations count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use pvp_core::queue::UnboundedQueue;

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
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
    for _ in 0..1_000 {
        round(q);
    }
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
