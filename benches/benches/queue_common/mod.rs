//! What the queue benchmarks share: one `Queue` trait over every queue under test, and the
//! transfers that move the same messages through each with the same thread layouts.

use std::hint::black_box;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use pvp_core::queue::{BoundedQueue, UnboundedQueue};

/// Messages moved per transfer.
pub(crate) const MSGS: u64 = 200_000;
/// Bounded capacity used by every bounded queue.
pub(crate) const CAP: usize = 1024;
/// Values per `push_batch` / `pop_batch`.
pub(crate) const BATCH: usize = 32;

/// The two operations every queue under test offers, non-blocking.
pub(crate) trait Queue: Sync {
    fn push(&self, v: u64) -> Result<(), u64>;
    fn pop(&self) -> Option<u64>;
}

impl Queue for BoundedQueue<u64> {
    fn push(&self, v: u64) -> Result<(), u64> {
        BoundedQueue::push(self, v)
    }
    fn pop(&self) -> Option<u64> {
        BoundedQueue::pop(self)
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
pub(crate) struct Flume(pub(crate) flume::Sender<u64>, pub(crate) flume::Receiver<u64>);
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

/// Runs `produce` on `producers` threads and `consume` on `consumers` threads, all released
/// together by a barrier; returns the wall time from the first thread's start to the last
/// thread's end, each taken by the thread itself (see `span`).
fn run<P, C>(producers: usize, consumers: usize, produce: P, consume: C) -> Duration
where
    P: Fn() + Sync,
    C: Fn() + Sync,
{
    let barrier = Barrier::new(producers + consumers);
    let timed = |work: &(dyn Fn() + Sync)| {
        barrier.wait();
        let start = Instant::now();
        work();
        (start, Instant::now())
    };
    thread::scope(|s| {
        let mut handles = Vec::new();
        for _ in 0..producers {
            handles.push(s.spawn(|| timed(&produce)));
        }
        for _ in 0..consumers {
            handles.push(s.spawn(|| timed(&consume)));
        }
        span(handles)
    })
}

/// `producers` threads push `msgs` values in all, `consumers` threads pop them all; returns the
/// wall time from the first thread's start to the last pop.
pub(crate) fn transfer<Q: Queue>(q: &Q, msgs: u64, producers: usize, consumers: usize) -> Duration {
    let per_p = msgs / producers as u64;
    let per_c = msgs / consumers as u64;
    let produce = || {
        for i in 0..per_p {
            let mut v = i;
            let mut spins = 0;
            while let Err(back) = q.push(v) {
                v = back;
                wait(&mut spins);
            }
        }
    };
    let consume = || {
        for _ in 0..per_c {
            let mut spins = 0;
            loop {
                if let Some(v) = q.pop() {
                    black_box(v);
                    break;
                }
                wait(&mut spins);
            }
        }
    };
    run(producers, consumers, produce, consume)
}

/// The batch path of BoundedQueue: 32 values per push_batch / pop_batch.
pub(crate) fn transfer_batched(
    q: &BoundedQueue<u64>,
    msgs: u64,
    producers: usize,
    consumers: usize,
) -> Duration {
    let per_p = msgs / producers as u64;
    let per_c = msgs / consumers as u64;
    let produce = || {
        let mut buf = Vec::with_capacity(BATCH);
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
    };
    let consume = || {
        let mut buf = Vec::with_capacity(BATCH);
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
    };
    run(producers, consumers, produce, consume)
}
