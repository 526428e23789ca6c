//! The unbounded MPMC queue: [`UnboundedQueue`].
//!
//! # Algorithm
//!
//! A linked list of blocks of [`BLOCK_CAP`] slots. `head` and `tail` are each a position plus
//! the block that position lives in. A producer claims a position by CAS on the tail position;
//! the one that claims a block's last slot links a new block (allocated *before* its CAS, so no
//! one waits on an allocation) and moves `tail` into it. Consumers claim positions the same
//! way. Each slot carries three state bits: `WRITE` (value written), `READ` (value taken) and
//! `DESTROY` (the block is being retired and the reader of this slot must finish retiring it).
//!
//! # Reclamation
//!
//! No epochs and no hazard pointers: a block is retired only when every one of its slots has
//! been read, and the last reader retires it. The reader of the block's last slot starts the
//! walk; a slot still being read is marked `DESTROY` and its reader continues the walk when
//! done. A thread dereferences a block only after a successful CAS on a position inside it,
//! and a block with an unread position is never retired, so there is no use-after-free; a
//! position never repeats, so there is no ABA.
//!
//! A retired block is freed, or, for a queue made with [`UnboundedQueue::with_block_reuse`],
//! cleared and kept in a one-block spare slot for the next producer that needs a block, so that
//! a queue in a steady state allocates nothing. Reuse is not the default: the reused block's
//! cache lines are still held by the consumer that retired it, and pulling them over to the
//! producer cost more than an allocation (see BENCHMARKS.md, "What decided the earlier design
//! (A/B, scratch harness run beside the bench)").

use core::fmt;
use core::mem::MaybeUninit;
use core::ptr;

use crossbeam_utils::CachePadded;

use crate::primitive::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use crate::primitive::{Backoff, UnsafeCell, full_fence, spin_loop};

/// Slots per block. 127 rather than crossbeam `SegQueue`'s 31: a block switch is the one point
/// where every producer (and, at the other end, every consumer) waits for one thread, and each
/// block costs an allocation, a free and a walk over its slots, so four times fewer switches
/// win (see BENCHMARKS.md, "What this session changed, and what each change measured (dev box,
/// 2026-11-26)"); a block of `u64`s is 2 KiB instead of 0.5 KiB.
#[cfg(not(pvp_loom))]
const BLOCK_CAP: usize = 127;
/// Positions per block: one more than its slots, the extra one meaning "moving to next block".
#[cfg(not(pvp_loom))]
const LAP: usize = 128;
// Loom explores every interleaving: tiny blocks let a small model cross block boundaries.
#[cfg(pvp_loom)]
const BLOCK_CAP: usize = 3;
#[cfg(pvp_loom)]
const LAP: usize = 4;
/// Position values are shifted by this many bits; the low bit of the head position says
/// whether the head block is known to have a successor.
const SHIFT: usize = 1;
const HAS_NEXT: usize = 1;

const WRITE: usize = 1;
const READ: usize = 2;
const DESTROY: usize = 4;

struct Slot<T> {
    value: UnsafeCell<MaybeUninit<T>>,
    state: AtomicUsize,
}

impl<T> Slot<T> {
    /// Writes `value` and publishes it to the slot's reader.
    ///
    /// # Safety
    /// The calling thread claimed this slot's position (CAS on the tail index) and its block
    /// is not retired before the slot is read.
    #[inline(always)]
    unsafe fn write(&self, value: T) {
        // SAFETY: per the caller, this thread alone writes this slot, once.
        self.value.with_mut(|p| unsafe { p.write(MaybeUninit::new(value)) });
        self.state.fetch_or(WRITE, Ordering::Release);
    }

    fn wait_write(&self) {
        let mut backoff = Backoff::default();
        while self.state.load(Ordering::Acquire) & WRITE == 0 {
            backoff.snooze();
        }
    }
}

struct Block<T> {
    next: AtomicPtr<Block<T>>,
    slots: [Slot<T>; BLOCK_CAP],
}

impl<T> Block<T> {
    /// A fresh block: zeroed memory straight from the allocator, rather than a block built on
    /// the stack and copied (2 KiB for `u64` values).
    #[cfg(not(pvp_loom))]
    fn new() -> Box<Self> {
        let layout = std::alloc::Layout::new::<Self>();
        // SAFETY: `layout` is not zero-sized (a block holds at least its `next` pointer).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<Self>();
        if raw.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        // SAFETY: `raw` is a fresh allocation of `Self`'s layout from the global allocator, as
        // `Box` expects, and all zero bytes are a valid `Block`: a null `next`, every state 0
        // (the atomics have the layout of their integers) and values that are `MaybeUninit`.
        unsafe { Box::from_raw(raw) }
    }

    /// Loom's atomics are not plain integers: build each one.
    #[cfg(pvp_loom)]
    fn new() -> Box<Self> {
        Box::new(Self {
            next: AtomicPtr::new(ptr::null_mut()),
            slots: core::array::from_fn(|_| Slot {
                value: UnsafeCell::new(MaybeUninit::uninit()),
                state: AtomicUsize::new(0),
            }),
        })
    }

    fn wait_next(&self) -> *mut Self {
        let mut backoff = Backoff::default();
        loop {
            let next = self.next.load(Ordering::Acquire);
            if !next.is_null() {
                return next;
            }
            backoff.snooze();
        }
    }
}

struct Position<T> {
    index: AtomicUsize,
    block: AtomicPtr<Block<T>>,
}

/// An unbounded, lock-free, multi-producer multi-consumer FIFO queue.
///
/// For producers that must never block and never drop: [`push`](Self::push) always succeeds.
/// Memory grows in blocks of [`BLOCK_CAPACITY`](Self::BLOCK_CAPACITY) values as needed and is
/// reclaimed safely (no leak, no ABA, no use-after-free) as blocks are drained: a drained block
/// is freed, or, with [`with_block_reuse`](Self::with_block_reuse), kept for the next block so
/// that a short queue allocates nothing in its steady state. Prefer the bounded
/// [`BoundedQueue`](super::BoundedQueue) wherever a full queue can be handled: it bounds
/// memory.
///
/// Values pushed by one producer are popped in the order they were pushed.
///
/// ```
/// use pvp_core::queue::UnboundedQueue;
///
/// let q = UnboundedQueue::new();
/// for i in 0..100 {
///     q.push(i);
/// }
/// assert_eq!(q.len(), 100);
/// assert_eq!(q.pop(), Some(0));
/// let mut out = Vec::new();
/// assert_eq!(q.pop_batch(&mut out, 10), 10);
/// assert_eq!(out, (1..11).collect::<Vec<_>>());
/// ```
pub struct UnboundedQueue<T> {
    head: CachePadded<Position<T>>,
    tail: CachePadded<Position<T>>,
    /// One retired block kept for reuse.
    spare: CachePadded<AtomicPtr<Block<T>>>,
    /// Whether retired blocks go to `spare` (see [`Self::with_block_reuse`]).
    reuse: bool,
}

// SAFETY: values move between threads through the queue; `T: Send` suffices, as for channels.
unsafe impl<T: Send> Send for UnboundedQueue<T> {}
// SAFETY: every access to a slot's value follows a successful CAS that gives one thread that
// position (see the module docs), and blocks are retired only after all their reads.
unsafe impl<T: Send> Sync for UnboundedQueue<T> {}

impl<T> Default for UnboundedQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> UnboundedQueue<T> {
    /// Values per block: memory is allocated and freed in blocks of this many values (127),
    /// each value with one word of slot state beside it, plus one pointer per block.
    ///
    /// ```
    /// use pvp_core::queue::UnboundedQueue;
    ///
    /// assert_eq!(UnboundedQueue::<u64>::BLOCK_CAPACITY, 127);
    /// ```
    pub const BLOCK_CAPACITY: usize = BLOCK_CAP;

    /// Creates an empty queue with its first block allocated. Drained blocks are freed; see
    /// [`with_block_reuse`](Self::with_block_reuse) for a queue that allocates nothing in a
    /// steady state.
    pub fn new() -> Self {
        Self::build(false)
    }

    /// Creates an empty queue that keeps one drained block and reuses it, so a queue whose
    /// length stays below one block's worth between pushes and pops allocates nothing once
    /// running (for a process that must not call the allocator on its hot path). Throughput
    /// is lower across cores than with [`new`](Self::new): the reused block's cache lines
    /// move from the consumer that drained it to the producer (see BENCHMARKS.md,
    /// "What decided the earlier design (A/B, scratch harness run beside the bench)").
    ///
    /// ```
    /// use pvp_core::queue::UnboundedQueue;
    ///
    /// let q = UnboundedQueue::with_block_reuse();
    /// for round in 0..100 {
    ///     for i in 0..20 {
    ///         q.push(round * 20 + i);
    ///     }
    ///     for i in 0..20 {
    ///         assert_eq!(q.pop(), Some(round * 20 + i));
    ///     }
    /// }
    /// assert_eq!(q.pop(), None);
    /// ```
    pub fn with_block_reuse() -> Self {
        Self::build(true)
    }

    fn build(reuse: bool) -> Self {
        let first = Box::into_raw(Block::new());
        Self {
            head: CachePadded::new(Position { index: AtomicUsize::new(0), block: AtomicPtr::new(first) }),
            tail: CachePadded::new(Position { index: AtomicUsize::new(0), block: AtomicPtr::new(first) }),
            spare: CachePadded::new(AtomicPtr::new(ptr::null_mut())),
            reuse,
        }
    }

    /// A block ready to link: the spare one, cleared, or a fresh allocation.
    fn take_block(&self) -> *mut Block<T> {
        if !self.reuse {
            return Box::into_raw(Block::new());
        }
        let spare = self.spare.swap(ptr::null_mut(), Ordering::Acquire);
        if spare.is_null() {
            return Box::into_raw(Block::new());
        }
        // A block reaches `spare` only after `retire` cleared it, and the swap gave it to this
        // thread alone.
        spare
    }

    /// Retires a block nobody can reach any more: keep it as the spare, or free it.
    ///
    /// # Safety
    /// `block` came from `take_block`/`new`, and no thread holds or can gain a claim on it.
    unsafe fn retire(&self, block: *mut Block<T>) {
        if !self.reuse {
            // SAFETY: nobody holds or can gain a claim on `block` (the caller's contract), so
            // this is its only owner.
            drop(unsafe { Box::from_raw(block) });
            return;
        }
        // Cleared here, by the thread that retires it: its cache lines are already local to
        // this consumer, whereas clearing them in `take_block` made the producer pull every
        // line across (that cost 0.5-0.7x SegQueue's throughput; see BENCHMARKS.md).
        // SAFETY: no thread holds or can gain a claim on `block` (the caller's contract).
        let cleared = unsafe { &*block };
        cleared.next.store(ptr::null_mut(), Ordering::Relaxed);
        for slot in &cleared.slots {
            slot.state.store(0, Ordering::Relaxed);
        }
        let old = self.spare.swap(block, Ordering::AcqRel);
        if !old.is_null() {
            // SAFETY: `old` was retired earlier and only the spare slot referred to it; the
            // swap took it out, so this is its only owner.
            drop(unsafe { Box::from_raw(old) });
        }
    }

    /// Retires `block` once all its slots from `start` on are read, or leaves the rest of the
    /// walk to the reader of the first slot still being read.
    ///
    /// # Safety
    /// Called once per block walk, by the reader of the last slot (`start == 0`) or by the
    /// reader of slot `start - 1` that found `DESTROY` set.
    unsafe fn destroy(&self, block: *mut Block<T>, start: usize) {
        // The last slot's reader is the one running the walk from 0, so it is skipped.
        for i in start..BLOCK_CAP - 1 {
            // SAFETY: the block is not retired while any of its slots is unread.
            let slot = unsafe { &(*block).slots[i] };
            if slot.state.load(Ordering::Acquire) & READ == 0
                && slot.state.fetch_or(DESTROY, Ordering::AcqRel) & READ == 0
            {
                // That slot's reader sees DESTROY and carries on from `i + 1`.
                return;
            }
        }
        // SAFETY: every slot has been read and every reader has left: nobody refers to it.
        unsafe { self.retire(block) };
    }

    /// Appends `value` at the back of the queue. Never fails.
    #[inline]
    pub fn push(&self, value: T) {
        // The common case inline: a slot inside the tail block (not its last, whose producer
        // links the next block) and a first claim that wins.
        let tail = self.tail.index.load(Ordering::Acquire);
        let block = self.tail.block.load(Ordering::Acquire);
        let offset = (tail >> SHIFT) % LAP;
        if offset + 1 < BLOCK_CAP
            && self
                .tail
                .index
                .compare_exchange_weak(tail, tail + (1 << SHIFT), Ordering::SeqCst, Ordering::Acquire)
                .is_ok()
        {
            // SAFETY: as in `push_contended`: the CAS claimed position `tail` inside `block`,
            // which is not retired before this slot is read.
            unsafe { (*block).slots[offset].write(value) };
            return;
        }
        self.push_contended(value);
    }

    /// `push` past its first try: a block switch, a lost race. Out of line, so the inlined
    /// fast path stays small.
    #[inline(never)]
    fn push_contended(&self, value: T) {
        let mut tail = self.tail.index.load(Ordering::Acquire);
        let mut block = self.tail.block.load(Ordering::Acquire);
        let mut next_block: *mut Block<T> = ptr::null_mut();
        let mut backoff = Backoff::default();
        loop {
            let offset = (tail >> SHIFT) % LAP;
            if offset == BLOCK_CAP {
                // Another producer is linking the next block.
                backoff.snooze();
                tail = self.tail.index.load(Ordering::Acquire);
                block = self.tail.block.load(Ordering::Acquire);
                continue;
            }
            if offset + 1 == BLOCK_CAP && next_block.is_null() {
                next_block = self.take_block();
            }
            let new_tail = tail + (1 << SHIFT);
            match self.tail.index.compare_exchange_weak(tail, new_tail, Ordering::SeqCst, Ordering::Acquire) {
                Ok(_) => {
                    // SAFETY: the CAS claimed position `tail` inside `block` (the tail block
                    // was read after the index, and a changed block means a changed index), so
                    // the block cannot be retired before this slot is read.
                    unsafe {
                        if offset + 1 == BLOCK_CAP {
                            let next = next_block;
                            let next_index = new_tail.wrapping_add(1 << SHIFT);
                            self.tail.block.store(next, Ordering::Release);
                            self.tail.index.store(next_index, Ordering::Release);
                            (*block).next.store(next, Ordering::Release);
                        } else if !next_block.is_null() {
                            // Prepared for a block switch someone else made.
                            self.retire(next_block);
                        }
                        (*block).slots[offset].write(value);
                    }
                    return;
                }
                Err(current) => {
                    tail = current;
                    block = self.tail.block.load(Ordering::Acquire);
                    backoff.spin();
                }
            }
        }
    }

    /// Removes the value at the front of the queue, or returns `None` if it is empty.
    pub fn pop(&self) -> Option<T> {
        let mut head = self.head.index.load(Ordering::Acquire);
        let mut block = self.head.block.load(Ordering::Acquire);
        let mut backoff = Backoff::default();
        loop {
            let offset = (head >> SHIFT) % LAP;
            if offset == BLOCK_CAP {
                // Another consumer is moving head to the next block.
                backoff.snooze();
                head = self.head.index.load(Ordering::Acquire);
                block = self.head.block.load(Ordering::Acquire);
                continue;
            }
            let mut new_head = head + (1 << SHIFT);
            if new_head & HAS_NEXT == 0 {
                full_fence();
                let tail = self.tail.index.load(Ordering::Relaxed);
                if head >> SHIFT == tail >> SHIFT {
                    return None;
                }
                if (head >> SHIFT) / LAP != (tail >> SHIFT) / LAP {
                    new_head |= HAS_NEXT;
                }
            }
            match self.head.index.compare_exchange_weak(head, new_head, Ordering::SeqCst, Ordering::Acquire) {
                Ok(_) => {
                    // SAFETY: the CAS claimed position `head` inside `block`; the block is not
                    // retired before this thread marks its slot READ.
                    unsafe {
                        if offset + 1 == BLOCK_CAP {
                            let next = (*block).wait_next();
                            let mut next_index = (new_head & !HAS_NEXT).wrapping_add(1 << SHIFT);
                            if !(*next).next.load(Ordering::Relaxed).is_null() {
                                next_index |= HAS_NEXT;
                            }
                            self.head.block.store(next, Ordering::Release);
                            self.head.index.store(next_index, Ordering::Release);
                        }
                        let slot = &(*block).slots[offset];
                        slot.wait_write();
                        let value = slot.value.with(|p| p.read().assume_init());
                        if offset + 1 == BLOCK_CAP {
                            self.destroy(block, 0);
                        } else if slot.state.fetch_or(READ, Ordering::AcqRel) & DESTROY != 0 {
                            self.destroy(block, offset + 1);
                        }
                        return Some(value);
                    }
                }
                Err(current) => {
                    head = current;
                    block = self.head.block.load(Ordering::Acquire);
                    backoff.spin();
                }
            }
        }
    }

    /// Moves every value of `items` to the back of the queue, in order, leaving `items` empty
    /// with its allocation kept. Returns how many were moved.
    pub fn push_batch(&self, items: &mut Vec<T>) -> usize {
        let n = items.len();
        for v in items.drain(..) {
            self.push(v);
        }
        n
    }

    /// Moves up to `max` values from the front of the queue to the end of `out`. Returns how
    /// many were moved (0 when the queue is empty).
    pub fn pop_batch(&self, out: &mut Vec<T>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            match self.pop() {
                Some(v) => out.push(v),
                None => break,
            }
            n += 1;
        }
        n
    }

    /// How many values the queue holds right now (a snapshot: other threads may change it).
    pub fn len(&self) -> usize {
        loop {
            let tail = self.tail.index.load(Ordering::SeqCst);
            let head = self.head.index.load(Ordering::SeqCst);
            if self.tail.index.load(Ordering::SeqCst) == tail {
                return count_between(head, tail);
            }
            spin_loop();
        }
    }

    /// Whether the queue holds no value right now.
    pub fn is_empty(&self) -> bool {
        let head = self.head.index.load(Ordering::SeqCst);
        let tail = self.tail.index.load(Ordering::SeqCst);
        head >> SHIFT == tail >> SHIFT
    }
}

/// Values between two positions, skipping each block's "next block" position.
fn count_between(head: usize, tail: usize) -> usize {
    let mut head = head >> SHIFT;
    let mut tail = tail >> SHIFT;
    if head % LAP == BLOCK_CAP {
        head = head.wrapping_add(1);
    }
    if tail % LAP == BLOCK_CAP {
        tail = tail.wrapping_add(1);
    }
    let lap_start = (head / LAP) * LAP;
    let head = head - lap_start;
    let tail = tail.wrapping_sub(lap_start);
    tail - tail / LAP - head
}

impl<T> Drop for UnboundedQueue<T> {
    fn drop(&mut self) {
        // `&mut self`: no other thread can touch the queue.
        let mut head = self.head.index.load(Ordering::Relaxed) & !HAS_NEXT;
        let tail = self.tail.index.load(Ordering::Relaxed) & !HAS_NEXT;
        let mut block = self.head.block.load(Ordering::Relaxed);
        // SAFETY: with exclusive access, every position from head to tail holds a written,
        // unread value, and every block on the way is owned by the queue.
        unsafe {
            while head != tail {
                let offset = (head >> SHIFT) % LAP;
                if offset < BLOCK_CAP {
                    (*block).slots[offset].value.with_mut(|p| (*p).assume_init_drop());
                } else {
                    let next = (*block).next.load(Ordering::Relaxed);
                    drop(Box::from_raw(block));
                    block = next;
                }
                head = head.wrapping_add(1 << SHIFT);
            }
            if !block.is_null() {
                drop(Box::from_raw(block));
            }
            let spare = self.spare.load(Ordering::Relaxed);
            if !spare.is_null() {
                drop(Box::from_raw(spare));
            }
        }
    }
}

impl<T> fmt::Debug for UnboundedQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnboundedQueue").field("len", &self.len()).finish()
    }
}
