//! The bounded MPMC ring: [`BoundedQueue`].
//!
//! # Algorithm
//!
//! A ring of slots, each with a *stamp*, indexed by two monotonically increasing positions,
//! `head` (next to pop) and `tail` (next to push). A position is `lap | index` where `index`
//! is the slot (`< cap`) and `lap` a multiple of `one_lap`, the smallest power of two above
//! `cap`, so a slot's index is one mask away and laps never alias.
//!
//! A slot's stamp says what the slot waits for:
//! - `stamp == pos`: empty, ready for the producer of position `pos`;
//! - `stamp == pos + 1`: holds the value pushed at `pos`, ready for its consumer.
//!
//! A producer claims position `tail` by CAS once the slot's stamp shows it empty, writes, and
//! publishes with `stamp = tail + 1` (release). A consumer claims `head` once the stamp shows it
//! full, reads, and hands the slot to the next lap's producer with `stamp = head + one_lap`.
//! This is D. Vyukov's bounded MPMC queue; `force_push` follows crossbeam's way of taking the
//! oldest value by moving `head` first.
//!
//! The batch operations are where this ring pays off for a game server: a producer checks the
//! stamps of up to `n` consecutive slots and claims all of them with one CAS on `tail`, then
//! fills them; a consumer does the same on `head`. One synchronisation moves a whole batch of
//! I/O completions or tick inputs, and the cache lines holding them travel once.

use core::fmt;
use core::mem::MaybeUninit;
use core::ptr;

use crossbeam_utils::CachePadded;

use super::QueueError;
use crate::primitive::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use crate::primitive::{Backoff, UnsafeCell, full_fence, spin_loop};

/// How many times `push` / `pop` re-read a slot that looks full / empty before they read the
/// other side's index to decide. Reading `head` from a producer (or `tail` from a consumer)
/// moves that cache line away from the threads that write it on every operation; the re-reads
/// cut the lines crossing cores per value, which wins where crossing cores is expensive (see
/// BENCHMARKS.md, "What decided the earlier design (A/B, scratch harness run beside the bench)").
///
/// The wait only pays when the other side is running on another core. After a `pop` that found
/// the queue empty (or a `push` that found it full), the next one does not wait until one
/// succeeds (the `idle` flag of [`End`]), so a consumer polling an idle queue pays for the wait
/// once, not on every poll (see BENCHMARKS.md, "What this session changed, and what each change
/// measured (dev box, 2026-11-26)").
#[cfg(not(pvp_loom))]
const SLOT_WAIT: u32 = 4;
/// Loom explores every interleaving of each spin: one re-read keeps the models small.
#[cfg(pvp_loom)]
const SLOT_WAIT: u32 = 1;

/// One end of the ring: its position and whether the last operation at that end found the
/// queue idle (`pop`: empty; `push`: full). The flag is a hint that decides only whether the
/// next operation waits on a slot before reading the other end's position (see `SLOT_WAIT`),
/// never what it returns. It shares the position's cache line, which the operation reads
/// anyway, so checking it costs no extra line.
struct End {
    pos: AtomicUsize,
    idle: AtomicBool,
}

impl End {
    fn new() -> Self {
        Self { pos: AtomicUsize::new(0), idle: AtomicBool::new(false) }
    }

    /// Records that an operation at this end succeeded, if the flag said otherwise. The line
    /// was just written by the claiming CAS, so the load hits this core's cache.
    #[inline(always)]
    fn busy(&self) {
        if self.idle.load(Ordering::Relaxed) {
            self.idle.store(false, Ordering::Relaxed);
        }
    }
}

impl core::ops::Deref for End {
    type Target = AtomicUsize;

    #[inline(always)]
    fn deref(&self) -> &AtomicUsize {
        &self.pos
    }
}

/// One ring slot: a stamp and room for one value, packed (not padded to a cache line: see
/// docs/ARCHITECTURE.md for the measurement that decided it).
struct Slot<T> {
    stamp: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// A bounded, lock-free, multi-producer multi-consumer FIFO queue.
///
/// Built for the hand-off between a game server's network threads and its game loop:
/// - no allocation after [`new`](Self::new), whatever the traffic;
/// - [`push`] hands the value back when the queue is full, so the caller decides what to drop;
/// - [`force_push`] overwrites the oldest value instead (a ring of recent events);
/// - [`push_batch`] / [`pop_batch`] move many values per synchronisation;
/// - `head` and `tail` live on separate cache lines; slots are packed, four `u64`-sized
///   values and their stamps to a line (faster than one slot per line: see BENCHMARKS.md,
///   "What decided the earlier design (A/B, scratch harness run beside the bench)").
///
/// Values pushed by one producer are popped in the order they were pushed.
///
/// [`push`]: Self::push
/// [`force_push`]: Self::force_push
/// [`push_batch`]: Self::push_batch
/// [`pop_batch`]: Self::pop_batch
///
/// # Examples
///
/// ```
/// use pvp_core::queue::BoundedQueue;
///
/// let q = BoundedQueue::new(2)?;
/// assert_eq!(q.push("move"), Ok(()));
/// assert_eq!(q.push("shoot"), Ok(()));
/// assert_eq!(q.push("jump"), Err("jump")); // full: the value comes back
/// assert_eq!(q.pop(), Some("move"));
///
/// let mut inputs = vec!["a", "b", "c"];
/// assert_eq!(q.push_batch(&mut inputs), 1); // one free slot
/// assert_eq!(inputs, ["b", "c"]);          // what did not fit stays with the caller
///
/// let mut tick = Vec::with_capacity(32);
/// assert_eq!(q.pop_batch(&mut tick, 32), 2);
/// assert_eq!(tick, ["shoot", "a"]);
/// # Ok::<(), pvp_core::queue::QueueError>(())
/// ```
pub struct BoundedQueue<T> {
    /// Position of the next value to pop.
    head: CachePadded<End>,
    /// Position of the next free slot to push into.
    tail: CachePadded<End>,
    buffer: Box<[Slot<T>]>,
    cap: usize,
    /// Smallest power of two greater than `cap`; `one_lap - 1` masks a position's index.
    one_lap: usize,
}

// SAFETY: values move between threads through the queue, so `T: Send` is all that is needed to
// send the queue itself or share it; the queue never hands out `&T`, so `T: Sync` is not.
unsafe impl<T: Send> Send for BoundedQueue<T> {}
// SAFETY: every shared access to a slot's value is guarded by the stamp protocol above: a
// position is claimed by exactly one thread (CAS on head/tail) before its value is touched.
unsafe impl<T: Send> Sync for BoundedQueue<T> {}

impl<T> BoundedQueue<T> {
    /// Creates a queue that holds at most `capacity` values.
    ///
    /// All memory is allocated here; no later operation allocates.
    ///
    /// # Errors
    /// [`QueueError::ZeroCapacity`] for `capacity == 0`, [`QueueError::CapacityTooLarge`] when
    /// `capacity` slots do not fit in the address space.
    pub fn new(capacity: usize) -> Result<Self, QueueError> {
        if capacity == 0 {
            return Err(QueueError::ZeroCapacity);
        }
        let one_lap = capacity
            .checked_add(1)
            .and_then(usize::checked_next_power_of_two)
            .filter(|_| capacity.checked_mul(size_of::<Slot<T>>()).is_some_and(|b| b <= isize::MAX as usize))
            .ok_or(QueueError::CapacityTooLarge { requested: capacity })?;
        let buffer = (0..capacity)
            .map(|i| Slot { stamp: AtomicUsize::new(i), value: UnsafeCell::new(MaybeUninit::uninit()) })
            .collect();
        Ok(Self {
            head: CachePadded::new(End::new()),
            tail: CachePadded::new(End::new()),
            buffer,
            cap: capacity,
            one_lap,
        })
    }

    #[inline(always)]
    fn slot(&self, pos: usize) -> &Slot<T> {
        let index = pos & (self.one_lap - 1);
        debug_assert!(index < self.cap);
        // SAFETY: every position ever stored in head/tail or derived by `advance` has an index
        // below `cap` (see `advance`), and the buffer holds exactly `cap` slots.
        unsafe { self.buffer.get_unchecked(index) }
    }

    /// The position `k` steps after `pos`, `k <= cap`.
    #[inline(always)]
    fn advance(&self, pos: usize, k: usize) -> usize {
        debug_assert!(k <= self.cap);
        let index = (pos & (self.one_lap - 1)) + k;
        if index < self.cap {
            pos + k
        } else {
            (pos & !(self.one_lap - 1)).wrapping_add(self.one_lap) + (index - self.cap)
        }
    }

    /// Whether the slot at `tail`, found holding last lap's value, means the queue is full.
    #[inline]
    fn full_at(&self, tail: usize) -> bool {
        full_fence();
        self.head.load(Ordering::Relaxed).wrapping_add(self.one_lap) == tail
    }

    /// Whether the slot at `head`, found empty, means the queue is empty (not a producer that
    /// claimed it and is still writing).
    #[inline]
    fn empty_at(&self, head: usize) -> bool {
        full_fence();
        self.tail.load(Ordering::Relaxed) == head
    }

    /// The push loop `push` and `force_push` share: claims the slot at `tail` once it is free
    /// and writes `value` there. When the slot still holds last lap's value, `on_full(value,
    /// tail, slot, backoff)` decides: `Ok(value)` to try again (after waiting as it sees fit),
    /// `Err(r)` to return `r`.
    #[inline(always)]
    fn push_or_else<R>(
        &self,
        mut value: T,
        mut on_full: impl FnMut(T, usize, &Slot<T>, &mut Backoff) -> Result<T, R>,
    ) -> Result<(), R> {
        let mut backoff = Backoff::default();
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            let slot = self.slot(tail);
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == tail {
                let next = self.advance(tail, 1);
                match self.tail.compare_exchange_weak(tail, next, Ordering::SeqCst, Ordering::Relaxed) {
                    Ok(_) => {
                        // SAFETY: the CAS gave this thread position `tail`; the stamp showed
                        // the slot empty, so no one reads or writes its value until the stamp
                        // store below publishes it.
                        slot.value.with_mut(|p| unsafe { p.write(MaybeUninit::new(value)) });
                        slot.stamp.store(tail + 1, Ordering::Release);
                        return Ok(());
                    }
                    Err(current) => {
                        tail = current;
                        backoff.spin();
                    }
                }
            } else if stamp.wrapping_add(self.one_lap) == tail + 1 {
                // The slot still holds last lap's value.
                value = on_full(value, tail, slot, &mut backoff)?;
                tail = self.tail.load(Ordering::Relaxed);
            } else {
                // Another producer took this position, or a consumer is still reading it; it
                // may have been descheduled mid-operation, so this wait may yield.
                backoff.snooze();
                tail = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    /// Appends `value` at the back of the queue.
    ///
    /// # Errors
    /// Hands `value` back when the queue is full.
    #[inline]
    pub fn push(&self, value: T) -> Result<(), T> {
        // As in `pop`: a slot that still holds last lap's value is usually about to be freed
        // by a consumer; watch it before reading `head`.
        let mut waited = 0;
        // Whether the last push found the queue full; read at the first full-looking slot.
        let mut was_full = None;
        let result = self.push_or_else(value, |value, tail, _, _| {
            if *was_full.get_or_insert_with(|| self.tail.idle.load(Ordering::Relaxed)) {
                // It was full last time: likely still, so read `head` now rather than wait.
                waited = SLOT_WAIT;
            }
            if waited < SLOT_WAIT {
                waited += 1;
                spin_loop();
                Ok(value)
            } else if self.full_at(tail) {
                Err(value)
            } else {
                // A consumer has claimed the slot and is a few instructions from freeing it.
                spin_loop();
                Ok(value)
            }
        });
        if result.is_err() {
            if was_full == Some(false) {
                self.tail.idle.store(true, Ordering::Relaxed);
            }
        } else {
            self.tail.busy();
        }
        result
    }

    /// Appends `value`, overwriting and returning the oldest value if the queue is full.
    ///
    /// Never fails: a ring of the most recent `capacity` values.
    ///
    /// ```
    /// use pvp_core::queue::BoundedQueue;
    ///
    /// let recent = BoundedQueue::new(2)?;
    /// assert_eq!(recent.force_push(1), None);
    /// assert_eq!(recent.force_push(2), None);
    /// assert_eq!(recent.force_push(3), Some(1));
    /// assert_eq!(recent.pop(), Some(2));
    /// # Ok::<(), pvp_core::queue::QueueError>(())
    /// ```
    pub fn force_push(&self, value: T) -> Option<T> {
        let taken = self.push_or_else(value, |value, tail, slot, backoff| {
            // Full at this slot: take the oldest value by moving head past it first, so no
            // consumer can claim it, then move tail over the same slot.
            full_fence();
            let next = self.advance(tail, 1);
            let head = tail.wrapping_sub(self.one_lap);
            let new_head = next.wrapping_sub(self.one_lap);
            if self.head.compare_exchange_weak(head, new_head, Ordering::SeqCst, Ordering::Relaxed).is_err() {
                backoff.spin();
                return Ok(value);
            }
            self.tail.store(next, Ordering::SeqCst);
            // SAFETY: moving head past position `head` took it from every consumer, and the
            // slot's stamp (still "full") keeps every other producer out until the store
            // below, so this thread alone touches the value. The value was initialised by the
            // push that set the stamp we acquired.
            let old = slot.value.with_mut(|p| unsafe { p.replace(MaybeUninit::new(value)).assume_init() });
            slot.stamp.store(tail + 1, Ordering::Release);
            Err(old)
        });
        taken.err()
    }

    /// Removes the value at the front of the queue, or returns `None` if it is empty.
    #[inline]
    pub fn pop(&self) -> Option<T> {
        // The uncontended case inline: the slot at `head` holds a value and the first claim
        // wins.
        let head = self.head.load(Ordering::Relaxed);
        let slot = self.slot(head);
        if slot.stamp.load(Ordering::Acquire) == head + 1
            && self
                .head
                .compare_exchange_weak(head, self.advance(head, 1), Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
        {
            // SAFETY: the CAS gave this thread position `head`, and the acquired stamp shows
            // the value pushed there is fully written.
            return Some(unsafe { self.take(slot, head) });
        }
        self.pop_contended()
    }

    /// Moves the value out of the slot at position `head` and hands the slot to the next
    /// lap's producer.
    ///
    /// # Safety
    /// The calling thread claimed `head` (CAS on `head`) after acquiring the slot's stamp as
    /// `head + 1` (value written).
    #[inline(always)]
    unsafe fn take(&self, slot: &Slot<T>, head: usize) -> T {
        // SAFETY: per the caller, this thread alone owns the written value at `head`.
        let value = slot.value.with(|p| unsafe { p.read().assume_init() });
        slot.stamp.store(head.wrapping_add(self.one_lap), Ordering::Release);
        self.head.busy();
        value
    }

    /// `pop` past its first try: an empty-looking slot, a lost race or a slot still being
    /// written. Out of line, so the inlined fast path stays small (`push` split the same way
    /// measured worse, so it is not; see BENCHMARKS.md, "What this session changed, and what
    /// each change measured (dev box, 2026-11-26)").
    #[inline(never)]
    fn pop_contended(&self) -> Option<T> {
        let mut waited = 0;
        // Whether the last pop found the queue empty; read at the first empty-looking slot.
        let mut was_empty = None;
        let mut backoff = Backoff::default();
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            let slot = self.slot(head);
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == head + 1 {
                let next = self.advance(head, 1);
                match self.head.compare_exchange_weak(head, next, Ordering::SeqCst, Ordering::Relaxed) {
                    Ok(_) => {
                        // SAFETY: the CAS gave this thread position `head`, and the acquired
                        // stamp shows the value pushed there is fully written.
                        return Some(unsafe { self.take(slot, head) });
                    }
                    Err(current) => {
                        head = current;
                        backoff.spin();
                    }
                }
            } else if stamp == head {
                // Most often a producer is about to publish into this very slot: watch the
                // slot a little before reading `tail`, which would pull the producers' cache
                // line away from them (see `SLOT_WAIT`).
                if *was_empty.get_or_insert_with(|| self.head.idle.load(Ordering::Relaxed)) {
                    // It was empty last time: likely still, so read `tail` now rather than wait.
                    waited = SLOT_WAIT;
                }
                if waited < SLOT_WAIT {
                    waited += 1;
                    spin_loop();
                    continue;
                }
                if self.empty_at(head) {
                    if was_empty == Some(false) {
                        self.head.idle.store(true, Ordering::Relaxed);
                    }
                    return None;
                }
                // A producer has claimed the slot and is a few instructions from publishing.
                spin_loop();
                head = self.head.load(Ordering::Relaxed);
            } else {
                backoff.snooze();
                head = self.head.load(Ordering::Relaxed);
            }
        }
    }

    /// Moves as many values as fit from the front of `items` to the back of the queue, in
    /// order, with one synchronisation per run of free slots. Returns how many were moved;
    /// they are removed from `items`, and what did not fit stays there, in order.
    ///
    /// `items` keeps its allocation, so a caller can refill and reuse it without allocating.
    pub fn push_batch(&self, items: &mut Vec<T>) -> usize {
        let want = items.len().min(self.cap);
        if want == 0 {
            return 0;
        }
        let mut backoff = Backoff::default();
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            let mut ready = 0;
            let mut pos = tail;
            while ready < want && self.slot(pos).stamp.load(Ordering::Acquire) == pos {
                ready += 1;
                pos = self.advance(pos, 1);
            }
            if ready == 0 {
                let stamp = self.slot(tail).stamp.load(Ordering::Acquire);
                if stamp.wrapping_add(self.one_lap) == tail + 1 && self.full_at(tail) {
                    return 0;
                }
                backoff.snooze();
                tail = self.tail.load(Ordering::Relaxed);
                continue;
            }
            // Slots that showed "empty for this lap" stay so until their position is claimed,
            // and only a CAS from `tail` can claim them: if it succeeds, all `ready` are ours.
            match self.tail.compare_exchange_weak(tail, pos, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => {
                    let rest = items.len() - ready;
                    let src = items.as_mut_ptr();
                    // SAFETY: `set_len(0)` first so that `items` never owns a moved-out value;
                    // the first `ready` values are moved into the claimed slots (each written
                    // once, then published), the remaining `rest` are moved to the front, and
                    // the length restored to them. Nothing in between can panic.
                    unsafe {
                        items.set_len(0);
                        let mut pos = tail;
                        for i in 0..ready {
                            let v = src.add(i).read();
                            self.slot(pos).value.with_mut(|p| p.write(MaybeUninit::new(v)));
                            pos = self.advance(pos, 1);
                        }
                        ptr::copy(src.add(ready), src, rest);
                        items.set_len(rest);
                    }
                    // Publish after all the writes: a consumer polling the run then finds it
                    // ready at once, instead of taking it value by value while its cache lines
                    // are still being written.
                    let mut pos = tail;
                    for _ in 0..ready {
                        self.slot(pos).stamp.store(pos + 1, Ordering::Release);
                        pos = self.advance(pos, 1);
                    }
                    return ready;
                }
                Err(current) => {
                    tail = current;
                    backoff.spin();
                }
            }
        }
    }

    /// Moves up to `max` values from the front of the queue to the end of `out`, in order,
    /// with one synchronisation per run of ready values. Returns how many were moved (0 when
    /// the queue is empty).
    ///
    /// Reserve room in `out` beforehand to keep this allocation-free; otherwise `out` grows
    /// by up to `max.min(capacity)` first.
    pub fn pop_batch(&self, out: &mut Vec<T>, max: usize) -> usize {
        let want = max.min(self.cap);
        if want == 0 {
            return 0;
        }
        out.reserve(want);
        let mut backoff = Backoff::default();
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            let mut ready = 0;
            let mut pos = head;
            while ready < want && self.slot(pos).stamp.load(Ordering::Acquire) == pos + 1 {
                ready += 1;
                pos = self.advance(pos, 1);
            }
            if ready == 0 {
                let stamp = self.slot(head).stamp.load(Ordering::Acquire);
                if stamp == head && self.empty_at(head) {
                    return 0;
                }
                backoff.snooze();
                head = self.head.load(Ordering::Relaxed);
                continue;
            }
            match self.head.compare_exchange_weak(head, pos, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => {
                    let len = out.len();
                    let dst = out.as_mut_ptr();
                    let mut pos = head;
                    for i in 0..ready {
                        let slot = self.slot(pos);
                        // SAFETY: the CAS gave this thread positions `head..pos`, each stamp
                        // acquired "full", so each value is initialised and read exactly once;
                        // `out` has room for `want >= ready` more values (reserved above).
                        unsafe { dst.add(len + i).write(slot.value.with(|p| p.read().assume_init())) };
                        pos = self.advance(pos, 1);
                    }
                    // SAFETY: the `ready` values after `len` were initialised just above.
                    unsafe { out.set_len(len + ready) };
                    let mut pos = head;
                    for _ in 0..ready {
                        self.slot(pos).stamp.store(pos.wrapping_add(self.one_lap), Ordering::Release);
                        pos = self.advance(pos, 1);
                    }
                    return ready;
                }
                Err(current) => {
                    head = current;
                    backoff.spin();
                }
            }
        }
    }

    /// How many values the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// How many values the queue holds right now (a snapshot: other threads may change it).
    pub fn len(&self) -> usize {
        loop {
            let tail = self.tail.load(Ordering::SeqCst);
            let head = self.head.load(Ordering::SeqCst);
            if self.tail.load(Ordering::SeqCst) == tail {
                return self.distance(head, tail);
            }
            spin_loop();
        }
    }

    fn distance(&self, head: usize, tail: usize) -> usize {
        let hix = head & (self.one_lap - 1);
        let tix = tail & (self.one_lap - 1);
        if hix < tix {
            tix - hix
        } else if hix > tix {
            self.cap - hix + tix
        } else if tail == head {
            0
        } else {
            self.cap
        }
    }

    /// Whether the queue holds no value right now.
    pub fn is_empty(&self) -> bool {
        let head = self.head.load(Ordering::SeqCst);
        let tail = self.tail.load(Ordering::SeqCst);
        tail == head
    }

    /// Whether the queue holds `capacity` values right now.
    pub fn is_full(&self) -> bool {
        let tail = self.tail.load(Ordering::SeqCst);
        let head = self.head.load(Ordering::SeqCst);
        head.wrapping_add(self.one_lap) == tail
    }
}

impl<T> Drop for BoundedQueue<T> {
    fn drop(&mut self) {
        if !core::mem::needs_drop::<T>() {
            return;
        }
        // `&mut self`: no other thread can touch the queue, relaxed loads see the final state.
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        let mut pos = head;
        for _ in 0..self.distance(head, tail) {
            // SAFETY: every position from head up to tail holds a pushed, unpopped value.
            self.slot(pos).value.with_mut(|p| unsafe { (*p).assume_init_drop() });
            pos = self.advance(pos, 1);
        }
    }
}

impl<T> fmt::Debug for BoundedQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedQueue").field("len", &self.len()).field("capacity", &self.cap).finish()
    }
}
