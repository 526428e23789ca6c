//! Public API of the queues: semantics, drops, ZSTs, and a multi-threaded stress check.
#![cfg(not(pvp_loom))]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use pvp_core::queue::{BoundedQueue, QueueError, UnboundedQueue};

#[test]
fn zero_capacity_is_a_typed_error() {
    assert_eq!(BoundedQueue::<u8>::new(0).unwrap_err(), QueueError::ZeroCapacity);
    assert!(matches!(BoundedQueue::<u64>::new(usize::MAX), Err(QueueError::CapacityTooLarge { .. })));
}

#[test]
fn push_pop_fifo_and_full_hands_value_back() {
    for cap in [1, 2, 3, 5, 8, 100] {
        let q = BoundedQueue::new(cap).unwrap();
        assert_eq!(q.capacity(), cap);
        assert!(q.is_empty());
        for round in 0..3 {
            for i in 0..cap {
                assert_eq!(q.push(round * 1000 + i), Ok(()));
                assert_eq!(q.len(), i + 1);
            }
            assert!(q.is_full());
            assert_eq!(q.push(usize::MAX), Err(usize::MAX));
            assert_eq!(q.len(), cap);
            for i in 0..cap {
                assert_eq!(q.pop(), Some(round * 1000 + i));
            }
            assert_eq!(q.pop(), None);
            assert!(q.is_empty() && !q.is_full());
        }
    }
}

#[test]
fn force_push_overwrites_oldest() {
    let q = BoundedQueue::new(3).unwrap();
    for i in 0..3 {
        assert_eq!(q.force_push(i), None);
    }
    assert_eq!(q.force_push(3), Some(0));
    assert_eq!(q.force_push(4), Some(1));
    assert_eq!(q.len(), 3);
    assert_eq!(q.pop(), Some(2));
    assert_eq!(q.force_push(5), None);
    let mut out = Vec::new();
    assert_eq!(q.pop_batch(&mut out, 10), 3);
    assert_eq!(out, [3, 4, 5]);
}

#[test]
fn batches_move_what_fits_and_keep_the_rest() {
    let q = BoundedQueue::new(5).unwrap();
    let mut items: Vec<u32> = (0..8).collect();
    assert_eq!(q.push_batch(&mut items), 5);
    assert_eq!(items, [5, 6, 7]);
    assert_eq!(q.push_batch(&mut items), 0);
    assert_eq!(items, [5, 6, 7]);
    let mut out = vec![100];
    assert_eq!(q.pop_batch(&mut out, 2), 2);
    assert_eq!(out, [100, 0, 1]);
    assert_eq!(q.push_batch(&mut items), 2);
    assert_eq!(items, [7]);
    assert_eq!(q.pop_batch(&mut out, 0), 0);
    assert_eq!(q.pop_batch(&mut out, usize::MAX), 5);
    assert_eq!(out, [100, 0, 1, 2, 3, 4, 5, 6]);
    assert_eq!(q.pop_batch(&mut out, 4), 0);
    let mut empty: Vec<u32> = Vec::new();
    assert_eq!(q.push_batch(&mut empty), 0);
}

#[test]
fn batches_wrap_around_the_ring() {
    let q = BoundedQueue::new(7).unwrap();
    let mut out = Vec::new();
    let mut next = 0u64;
    let mut expect = 0u64;
    for step in 0..200usize {
        let mut items: Vec<u64> = (0..(step % 9) as u64).map(|i| next + i).collect();
        let n = q.push_batch(&mut items);
        next += n as u64;
        assert_eq!(items.len(), (step % 9) - n);
        out.clear();
        let got = q.pop_batch(&mut out, step % 4);
        for v in &out[..got] {
            assert_eq!(*v, expect);
            expect += 1;
        }
    }
    while let Some(v) = q.pop() {
        assert_eq!(v, expect);
        expect += 1;
    }
    assert_eq!(expect, next);
}

struct Counted(Arc<AtomicUsize>);
impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn drop_releases_what_is_left() {
    let drops = Arc::new(AtomicUsize::new(0));
    {
        let q = BoundedQueue::new(4).unwrap();
        for _ in 0..6 {
            let _ = q.force_push(Counted(drops.clone()));
        }
        // two overwritten values were handed back and dropped here
        assert_eq!(drops.load(Ordering::Relaxed), 2);
        drop(q.pop());
        assert_eq!(drops.load(Ordering::Relaxed), 3);
    }
    assert_eq!(drops.load(Ordering::Relaxed), 6);

    for reuse in [false, true] {
        let drops = Arc::new(AtomicUsize::new(0));
        {
            let q = if reuse { UnboundedQueue::with_block_reuse() } else { UnboundedQueue::new() };
            for _ in 0..100 {
                q.push(Counted(drops.clone()));
            }
            for _ in 0..40 {
                drop(q.pop());
            }
            assert_eq!(drops.load(Ordering::Relaxed), 40);
        }
        assert_eq!(drops.load(Ordering::Relaxed), 100, "reuse: {reuse}");
    }
}

#[test]
fn zero_sized_types_work() {
    let q = BoundedQueue::new(3).unwrap();
    assert_eq!(q.push(()), Ok(()));
    assert_eq!(q.push(()), Ok(()));
    assert_eq!(q.push(()), Ok(()));
    assert_eq!(q.push(()), Err(()));
    assert_eq!(q.len(), 3);
    assert_eq!(q.pop(), Some(()));
    let u = UnboundedQueue::new();
    for _ in 0..100 {
        u.push(());
    }
    assert_eq!(u.len(), 100);
    assert_eq!(u.pop_batch(&mut Vec::new(), 1000), 100);
    assert_eq!(u.pop(), None);
}

#[test]
fn unbounded_counts_across_blocks() {
    let q = UnboundedQueue::new();
    assert!(q.is_empty());
    for i in 0..1000 {
        q.push(i);
        assert_eq!(q.len(), i + 1);
    }
    for i in 0..1000 {
        assert_eq!(q.pop(), Some(i));
        assert_eq!(q.len(), 999 - i);
    }
    assert_eq!(q.pop(), None);
    let mut v: Vec<usize> = (0..100).collect();
    assert_eq!(q.push_batch(&mut v), 100);
    assert!(v.is_empty());
    assert_eq!(q.len(), 100);
}

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn queues_are_send_and_sync_for_send_values() {
    assert_send_sync::<BoundedQueue<std::cell::Cell<u8>>>();
    assert_send_sync::<UnboundedQueue<std::cell::Cell<u8>>>();
}

/// Which queue and which operations the stress run uses.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Single,
    Batch,
    Unbounded,
    /// The unbounded queue made with `with_block_reuse`.
    UnboundedReuse,
}

/// P producers push (producer, seq) tags, C consumers pop; checks nothing lost or duplicated and
/// that every consumer sees each producer's values in increasing order.
fn stress(mode: Mode, producers: usize, consumers: usize, per_producer: u64, cap: usize) {
    let bounded = Arc::new(BoundedQueue::new(cap).unwrap());
    let unbounded = Arc::new(if matches!(mode, Mode::UnboundedReuse) {
        UnboundedQueue::with_block_reuse()
    } else {
        UnboundedQueue::new()
    });
    let remaining = Arc::new(AtomicUsize::new(producers * per_producer as usize));
    let mut handles = Vec::new();
    for p in 0..producers {
        let (bq, uq) = (bounded.clone(), unbounded.clone());
        handles.push(thread::spawn(move || {
            let mut seq = 0u64;
            let mut batch = Vec::with_capacity(32);
            while seq < per_producer {
                match mode {
                    Mode::Single => {
                        let mut v = (p as u64, seq);
                        while let Err(back) = bq.push(v) {
                            v = back;
                            thread::yield_now();
                        }
                        seq += 1;
                    }
                    Mode::Batch => {
                        while batch.len() < 32 && seq < per_producer {
                            batch.push((p as u64, seq));
                            seq += 1;
                        }
                        while !batch.is_empty() {
                            if bq.push_batch(&mut batch) == 0 {
                                thread::yield_now();
                            }
                        }
                    }
                    Mode::Unbounded | Mode::UnboundedReuse => {
                        uq.push((p as u64, seq));
                        seq += 1;
                    }
                }
            }
            Vec::new()
        }));
    }
    for _ in 0..consumers {
        let (bq, uq, remaining) = (bounded.clone(), unbounded.clone(), remaining.clone());
        handles.push(thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = Vec::with_capacity(32);
            while remaining.load(Ordering::Relaxed) > 0 {
                buf.clear();
                let n = match mode {
                    Mode::Single => bq.pop().map(|v| buf.push(v)).is_some() as usize,
                    Mode::Batch => bq.pop_batch(&mut buf, 32),
                    Mode::Unbounded | Mode::UnboundedReuse => {
                        uq.pop().map(|v| buf.push(v)).is_some() as usize
                    }
                };
                if n == 0 {
                    thread::yield_now();
                    continue;
                }
                remaining.fetch_sub(n, Ordering::Relaxed);
                seen.extend_from_slice(&buf);
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        let seen = h.join().unwrap();
        let mut last = vec![None::<u64>; producers];
        for &(p, s) in &seen {
            let l = &mut last[p as usize];
            assert!(l.is_none_or(|l| l < s), "{mode:?}: producer {p} out of order: {l:?} then {s}");
            *l = Some(s);
        }
        all.extend(seen);
    }
    assert_eq!(all.len(), producers * per_producer as usize, "{mode:?}: values lost or duplicated");
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), producers * per_producer as usize, "{mode:?}: duplicated values");
    assert!(bounded.is_empty() && unbounded.is_empty());
}

#[test]
fn stress_bounded_single() {
    stress(Mode::Single, 3, 3, 20_000, 8);
}

#[test]
fn stress_bounded_batch() {
    stress(Mode::Batch, 3, 3, 20_000, 64);
}

#[test]
fn stress_unbounded() {
    stress(Mode::Unbounded, 3, 3, 20_000, 1);
}

#[test]
fn stress_unbounded_with_block_reuse() {
    stress(Mode::UnboundedReuse, 3, 3, 20_000, 1);
}

/// 10^8 operations in all (pushes plus pops):
/// `cargo test --release -p pvp-core --test queue -- --ignored`.
#[test]
#[ignore = "long: 10^8 queue operations"]
fn stress_long() {
    stress(Mode::Single, 4, 4, 4_200_000, 64);
    stress(Mode::Batch, 4, 4, 4_200_000, 256);
    stress(Mode::Unbounded, 4, 4, 4_200_000, 1);
    stress(Mode::UnboundedReuse, 4, 4, 4_200_000, 1);
}

#[test]
fn capacity_one_and_odd_capacities_keep_len_and_order_over_many_laps() {
    for cap in [1usize, 3, 5, 1000] {
        let q = BoundedQueue::new(cap).unwrap();
        let mut model = std::collections::VecDeque::new();
        let mut next = 0u32;
        // A fixed pattern of pushes, force_pushes and pops over many laps of the ring.
        for step in 0..(cap * 7 + 50) {
            match step % 5 {
                0 | 1 => {
                    let r = q.push(next);
                    if model.len() < cap {
                        assert_eq!(r, Ok(()));
                        model.push_back(next);
                    } else {
                        assert_eq!(r, Err(next));
                    }
                    next += 1;
                }
                2 => {
                    let old = q.force_push(next);
                    if model.len() == cap {
                        assert_eq!(old, model.pop_front());
                    } else {
                        assert_eq!(old, None);
                    }
                    model.push_back(next);
                    next += 1;
                }
                _ => assert_eq!(q.pop(), model.pop_front()),
            }
            assert_eq!(q.len(), model.len(), "cap {cap} step {step}");
            assert_eq!(q.is_empty(), model.is_empty());
            assert_eq!(q.is_full(), model.len() == cap);
        }
    }
}

#[test]
fn empty_batches_and_zero_max_change_nothing() {
    let q = BoundedQueue::new(4).unwrap();
    q.push(1u8).unwrap();
    let mut none: Vec<u8> = Vec::new();
    assert_eq!(q.push_batch(&mut none), 0);
    let mut out = vec![9u8];
    assert_eq!(q.pop_batch(&mut out, 0), 0);
    assert_eq!(out, [9]);
    assert_eq!(q.len(), 1);
    assert_eq!(q.pop(), Some(1));
    assert_eq!(q.pop_batch(&mut out, 4), 0);
    assert_eq!(out, [9]);

    let u = UnboundedQueue::with_block_reuse();
    let mut items: Vec<u8> = Vec::new();
    assert_eq!(u.push_batch(&mut items), 0);
    assert_eq!(u.pop_batch(&mut out, 0), 0);
    assert!(u.is_empty());
    for i in 0..100u8 {
        u.push(i);
    }
    assert_eq!(u.len(), 100);
    assert_eq!(u.pop_batch(&mut out, 1000), 100);
    assert_eq!(out.len(), 101);
    assert!(out[1..].iter().copied().eq(0..100u8));
    assert!(u.is_empty() && u.pop().is_none());
}

/// `pop` and `push` remember that the queue was empty / full to skip a wait next time; that
/// memory must never change an answer: every later call still sees exactly what is there.
#[test]
fn answers_after_empty_and_full_reflect_the_queue_not_the_last_answer() {
    let q = BoundedQueue::new(2).unwrap();
    for round in 0..50u32 {
        assert_eq!(q.pop(), None, "round {round}");
        assert_eq!(q.pop(), None);
        assert_eq!(q.push(round), Ok(()));
        assert_eq!(q.pop(), Some(round), "a value pushed after two empty answers is there");
        assert_eq!(q.push(1), Ok(()));
        assert_eq!(q.push(2), Ok(()));
        assert_eq!(q.push(3), Err(3));
        assert_eq!(q.push(4), Err(4), "still full");
        assert_eq!(q.pop(), Some(1));
        assert_eq!(q.push(5), Ok(()), "room made after two full answers is used");
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), Some(5));
        // The same, with the other end's answers interleaved from another thread.
        thread::scope(|s| {
            s.spawn(|| assert_eq!(q.pop(), None));
        });
        assert_eq!(q.len(), 0);
    }
}
