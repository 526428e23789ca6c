//! Loom models of the lock-free queues.
//!
//! `RUSTFLAGS="--cfg pvp_loom" cargo test --release -p pvp-core --test loom`
//!
//! Each model is small (two producers, two consumers, a handful of values) because loom
//! explores every interleaving; `LOOM_MAX_PREEMPTIONS` (CI sets 1) bounds the search.
#![cfg(pvp_loom)]

use loom::sync::Arc;
use loom::thread;
use pvp_core::queue::{BoundedQueue, UnboundedQueue};

/// Collects every value the consumers got plus what is left, and checks it is exactly
/// `expected`, each once.
fn check_all(mut got: Vec<u32>, expected: &[u32]) {
    got.sort_unstable();
    assert_eq!(got, expected);
}

/// Two producers push `0` and `1` (retrying while full), two consumers pop once each; returns
/// everything the consumers got plus what was left in the queue.
fn two_by_two<Q: Send + Sync + 'static>(
    q: Arc<Q>,
    push: fn(&Q, u32) -> Result<(), u32>,
    pop: fn(&Q) -> Option<u32>,
) -> Vec<u32> {
    let producers: Vec<_> = (0..2u32)
        .map(|p| {
            let q = q.clone();
            thread::spawn(move || {
                let mut v = p;
                while let Err(back) = push(&q, v) {
                    v = back;
                    thread::yield_now();
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let q = q.clone();
            thread::spawn(move || pop(&q))
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let mut got: Vec<u32> = consumers.into_iter().filter_map(|c| c.join().unwrap()).collect();
    while let Some(v) = pop(&q) {
        got.push(v);
    }
    got
}

#[test]
fn bounded_2p2c_push_pop() {
    loom::model(|| {
        let q = Arc::new(BoundedQueue::new(2).unwrap());
        check_all(two_by_two(q, BoundedQueue::push, BoundedQueue::pop), &[0, 1]);
    });
}

#[test]
fn bounded_full_queue_hands_value_back() {
    loom::model(|| {
        let q = Arc::new(BoundedQueue::new(1).unwrap());
        let a = {
            let q = q.clone();
            thread::spawn(move || q.push(1u32))
        };
        let b = {
            let q = q.clone();
            thread::spawn(move || q.push(2u32))
        };
        let c = {
            let q = q.clone();
            thread::spawn(move || q.pop())
        };
        let ra = a.join().unwrap();
        let rb = b.join().unwrap();
        let popped = c.join().unwrap();
        let mut got: Vec<u32> = popped.into_iter().collect();
        got.extend(q.pop());
        // Whatever failed came back to its caller; nothing was lost or duplicated.
        got.extend(ra.err());
        got.extend(rb.err());
        check_all(got, &[1, 2]);
        assert!(q.is_empty());
    });
}

#[test]
fn bounded_batches() {
    loom::model(|| {
        let q = Arc::new(BoundedQueue::new(3).unwrap());
        let producers: Vec<_> = [vec![1u32, 2], vec![3, 4]]
            .into_iter()
            .map(|mut items| {
                let q = q.clone();
                thread::spawn(move || {
                    let first = items[0];
                    q.push_batch(&mut items);
                    // What did not fit stays with the producer, in order.
                    if let Some(&f) = items.first() {
                        assert!(f >= first);
                    }
                    items
                })
            })
            .collect();
        let consumer = {
            let q = q.clone();
            thread::spawn(move || {
                let mut out = Vec::new();
                q.pop_batch(&mut out, 2);
                out
            })
        };
        let mut got: Vec<u32> = Vec::new();
        for p in producers {
            got.extend(p.join().unwrap());
        }
        let popped = consumer.join().unwrap();
        // One producer's values come out in the order it pushed them.
        for w in popped.windows(2) {
            if (w[0] <= 2) == (w[1] <= 2) {
                assert!(w[0] < w[1]);
            }
        }
        got.extend(popped);
        let mut rest = Vec::new();
        q.pop_batch(&mut rest, 4);
        got.extend(rest);
        check_all(got, &[1, 2, 3, 4]);
    });
}

#[test]
fn bounded_force_push() {
    loom::model(|| {
        let q = Arc::new(BoundedQueue::new(1).unwrap());
        q.push(0u32).unwrap();
        let a = {
            let q = q.clone();
            thread::spawn(move || q.force_push(1))
        };
        let b = {
            let q = q.clone();
            thread::spawn(move || q.force_push(2))
        };
        let c = {
            let q = q.clone();
            thread::spawn(move || q.pop())
        };
        let mut got: Vec<u32> = Vec::new();
        got.extend(a.join().unwrap());
        got.extend(b.join().unwrap());
        got.extend(c.join().unwrap());
        got.extend(q.pop());
        check_all(got, &[0, 1, 2]);
    });
}

#[test]
fn unbounded_2p2c_across_segment_handover() {
    handover(UnboundedQueue::new);
}

/// The same hand-over on a queue that reuses its drained block: the retired first block goes
/// to the spare slot, cleared, while producers may be taking it for the next block.
#[test]
fn unbounded_2p2c_handover_with_block_reuse() {
    handover(UnboundedQueue::with_block_reuse);
}

fn handover(make: fn() -> UnboundedQueue<u32>) {
    loom::model(move || {
        let q = Arc::new(make());
        // Under loom a block holds 3 values: leave one slot of the first block free so the
        // model's pushes cross into the second block and its pops retire the first one.
        for i in 0..2u32 {
            q.push(100 + i);
        }
        q.pop().unwrap();
        let got = two_by_two(q, |q, v| Ok(q.push(v)), UnboundedQueue::pop);
        check_all(got, &[0, 1, 101]);
    });
}
