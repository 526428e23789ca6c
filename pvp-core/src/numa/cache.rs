//! Per-thread caches: the allocator's fast path.
//!
//! Each thread has a few slots, each tied to one allocator state: slot 0 to the global
//! allocator, the others to [`NumaAllocator`](super::NumaAllocator) instances. A slot keeps, per
//! pool (node) and size class, a list of free blocks. Allocation pops from the list and freeing
//! pushes to the list of the block's own node, with no lock, no atomic read-modify-write and no
//! syscall; only an empty list (refill from the node pool) or a full one (hand the list back to
//! the node pool's remote list) leaves the fast path.

use core::cell::{Cell, UnsafeCell};
use core::ptr;
use std::sync::Arc;

use super::Inner;
use super::classes::{CLASS_COUNT, cache_limit};
use super::pool::{FreeBlock, Shared, next_of, set_next};

/// Pools (node indices) a slot caches; blocks of higher indices take the uncached path.
pub(crate) const CACHED_NODES: usize = 4;
/// Slots per thread; slot 0 belongs to the global allocator.
const SLOTS: usize = 5;

/// A thread's blocks of one (node, class), in two lists as mimalloc keeps them: allocation
/// pops from `alloc`, freeing pushes onto `freed`. An alloc-free-alloc loop therefore never
/// waits for the block it just freed (no store-to-load chain through one list head), and the
/// freed list's exact length and tail make handing it back one CAS with no walk.
#[derive(Clone, Copy)]
struct ClassList {
    alloc: *mut FreeBlock,
    freed: *mut FreeBlock,
    /// The last block of `freed` (meaningless while `freed` is null).
    freed_tail: *mut FreeBlock,
    freed_count: usize,
}

const EMPTY_LIST: ClassList =
    ClassList { alloc: ptr::null_mut(), freed: ptr::null_mut(), freed_tail: ptr::null_mut(), freed_count: 0 };

/// One thread's cache for one allocator state.
pub(crate) struct Slot {
    shared: Cell<*const Shared>,
    /// The instance whose strong count this slot holds (null for the global allocator).
    owner: Cell<*const Inner>,
    home: Cell<usize>,
    busy: Cell<bool>,
    lists: UnsafeCell<[[ClassList; CLASS_COUNT]; CACHED_NODES]>,
}

/// Pushes `block` onto the freed list.
///
/// # Safety
/// `block` is a free block the thread owns.
#[inline(always)]
unsafe fn push_freed(list: &mut ClassList, block: *mut FreeBlock) {
    if list.freed.is_null() {
        list.freed_tail = block;
    }
    // SAFETY: per the caller.
    unsafe { set_next(block, list.freed) };
    list.freed = block;
    list.freed_count += 1;
}

impl Slot {
    const fn new() -> Self {
        Self {
            shared: Cell::new(ptr::null()),
            owner: Cell::new(ptr::null()),
            home: Cell::new(0),
            busy: Cell::new(false),
            lists: UnsafeCell::new([[EMPTY_LIST; CLASS_COUNT]; CACHED_NODES]),
        }
    }

    /// The free list of (`node`, `class`).
    ///
    /// # Safety
    /// `node < CACHED_NODES`, `class < CLASS_COUNT`, and no other reference to this list is
    /// alive (the lists are only touched by their thread; re-entrant calls use other slots).
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    unsafe fn list(&self, node: usize, class: usize) -> &mut ClassList {
        debug_assert!(node < CACHED_NODES && class < CLASS_COUNT);
        // SAFETY: in bounds and unaliased per the caller.
        unsafe { (*self.lists.get()).get_unchecked_mut(node).get_unchecked_mut(class) }
    }

    /// The node index `allocate_local` uses on this thread.
    #[inline(always)]
    pub(crate) fn home(&self) -> usize {
        self.home.get()
    }

    pub(crate) fn set_home(&self, node: usize) {
        self.home.set(node);
    }

    /// Pops a block of `class` from pool `node` (a node index `< node_count + 1`).
    ///
    /// # Safety
    /// `shared` is this slot's state.
    #[inline(always)]
    pub(crate) unsafe fn alloc(&self, shared: &Shared, node: usize, class: usize) -> *mut u8 {
        if node >= CACHED_NODES {
            return shared.alloc_uncached(node, class);
        }
        debug_assert!(class < CLASS_COUNT);
        // SAFETY: node checked above, class from `class_of`; see `list`.
        let list = unsafe { self.list(node, class) };
        let block = list.alloc;
        if block.is_null() {
            // SAFETY: forwarded.
            return unsafe { self.alloc_slow(shared, node, class) };
        }
        // SAFETY: blocks on a thread's list are free blocks the thread owns.
        list.alloc = unsafe { next_of(block) };
        shared.debug_track(block.cast(), class, true);
        block.cast()
    }

    /// Pops a block of `class` from the home node's list; null (and no change) when the list
    /// is empty or the home node is not cached.
    ///
    /// # Safety
    /// `shared` is this slot's state; `class < CLASS_COUNT`.
    #[inline(always)]
    pub(crate) unsafe fn try_pop_home(&self, shared: &Shared, class: usize) -> *mut u8 {
        let node = self.home.get();
        if node >= CACHED_NODES {
            return ptr::null_mut();
        }
        // SAFETY: bounds checked / per the caller; see `list`.
        let list = unsafe { self.list(node, class) };
        let block = list.alloc;
        if !block.is_null() {
            // SAFETY: blocks on a thread's list are free blocks the thread owns.
            list.alloc = unsafe { next_of(block) };
            shared.debug_track(block.cast(), class, true);
        }
        block.cast()
    }

    /// Pushes a freed block onto its node's freed list if that needs no flush; false (and no
    /// change) otherwise.
    ///
    /// # Safety
    /// As for [`Slot::free`]; `class < CLASS_COUNT`.
    #[inline(always)]
    pub(crate) unsafe fn try_push(&self, shared: &Shared, block: *mut u8, class: usize) -> bool {
        // SAFETY: per the caller, `block` is a pool block of `shared`.
        let node = unsafe { Shared::pool_of(block) };
        if node >= CACHED_NODES {
            return false;
        }
        // SAFETY: bounds checked / per the caller; see `list`.
        let list = unsafe { self.list(node, class) };
        if list.freed_count + 1 >= cache_limit(class) {
            return false;
        }
        shared.debug_track(block, class, false);
        // SAFETY: the block is ours again.
        unsafe { push_freed(list, block.cast()) };
        true
    }

    #[inline(never)]
    unsafe fn alloc_slow(&self, shared: &Shared, node: usize, class: usize) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let list = unsafe { self.list(node, class) };
        let head = if !list.freed.is_null() {
            // What this thread freed is the cheapest memory to reuse.
            list.freed_count = 0;
            core::mem::replace(&mut list.freed, ptr::null_mut())
        } else {
            self.busy.set(true);
            let (head, _) = shared.refill(node, class);
            self.busy.set(false);
            head
        };
        if head.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: as in `alloc` (re-borrowed: refill may have re-entered other slots).
        let list = unsafe { self.list(node, class) };
        // SAFETY: the chain is ours.
        list.alloc = unsafe { next_of(head) };
        shared.debug_track(head.cast(), class, true);
        head.cast()
    }

    /// Frees a pool block of `class` into this thread's list for the block's own node.
    ///
    /// # Safety
    /// `shared` is this slot's state; `block` is a block of `class` it handed out, not used any
    /// more.
    #[inline(always)]
    pub(crate) unsafe fn free(&self, shared: &Shared, block: *mut u8, class: usize) {
        shared.debug_track(block, class, false);
        // SAFETY: per the caller, `block` is a pool block of `shared`.
        let node = unsafe { Shared::pool_of(block) };
        if node >= CACHED_NODES {
            let b = block.cast::<FreeBlock>();
            // SAFETY: a one-block chain we own.
            unsafe { shared.give_back(node, class, b, b, 1) };
            return;
        }
        // SAFETY: as in `alloc`.
        let list = unsafe { self.list(node, class) };
        // SAFETY: the block is ours again.
        unsafe { push_freed(list, block.cast()) };
        if list.freed_count >= cache_limit(class) {
            // SAFETY: forwarded.
            unsafe { self.flush_freed(shared, node, class) };
        }
    }

    /// Hands the whole freed list back to the pool: one CAS, no walk.
    #[inline(never)]
    unsafe fn flush_freed(&self, shared: &Shared, node: usize, class: usize) {
        // SAFETY: as in `alloc`.
        let list = unsafe { self.list(node, class) };
        let head = core::mem::replace(&mut list.freed, ptr::null_mut());
        if head.is_null() {
            return;
        }
        let count = core::mem::replace(&mut list.freed_count, 0);
        // SAFETY: the chain head..=freed_tail holds blocks of pool (node, class) we give up.
        unsafe { shared.give_back(node, class, head, list.freed_tail, count) };
    }

    /// Hands both lists of (`node`, `class`) back to the pool.
    unsafe fn flush_list(&self, shared: &Shared, node: usize, class: usize) {
        // SAFETY: forwarded.
        unsafe { self.flush_freed(shared, node, class) };
        // SAFETY: as in `alloc`.
        let list = unsafe { self.list(node, class) };
        let head = core::mem::replace(&mut list.alloc, ptr::null_mut());
        if head.is_null() {
            return;
        }
        let mut tail = head;
        let mut count = 1;
        loop {
            // SAFETY: the list's blocks are ours.
            let next = unsafe { next_of(tail) };
            if next.is_null() {
                break;
            }
            tail = next;
            count += 1;
        }
        // SAFETY: the chain head..=tail holds blocks of pool (node, class) that we give up.
        unsafe { shared.give_back(node, class, head, tail, count) };
    }

    /// Hands every cached block back to its pool.
    fn flush_all(&self) {
        let shared = self.shared.get();
        if shared.is_null() {
            return;
        }
        // SAFETY: a slot's state outlives the slot's use of it (the slot holds a strong count,
        // or the state is the never-freed global one).
        let shared = unsafe { &*shared };
        for node in 0..CACHED_NODES.min(shared.node_count() + 1) {
            for class in 0..CLASS_COUNT {
                // SAFETY: this slot's own lists.
                unsafe { self.flush_list(shared, node, class) };
            }
        }
    }

    /// Flushes and detaches the slot, releasing the instance it kept alive.
    fn clear(&self) {
        self.flush_all();
        self.shared.set(ptr::null());
        let owner = self.owner.replace(ptr::null());
        if !owner.is_null() {
            // SAFETY: the slot took one strong count of this Arc when it was attached.
            unsafe { Arc::decrement_strong_count(owner) };
        }
    }
}

/// A thread's slots. Deliberately without `Drop`: a thread-local without a destructor is a
/// plain TLS access with no state check, which keeps the fast path short. Thread exit is
/// handled by [`ExitGuard`], touched only on the slow path that attaches a slot.
pub(crate) struct ThreadCaches {
    slots: [Slot; SLOTS],
    next_evict: Cell<usize>,
    /// Set once the thread's exit guard ran: nothing may be cached any more.
    dead: Cell<bool>,
}

impl ThreadCaches {
    const fn new() -> Self {
        Self { slots: [const { Slot::new() }; SLOTS], next_evict: Cell::new(1), dead: Cell::new(false) }
    }

    /// This thread's slot for an instance, attaching one (and evicting the least recently
    /// attached idle slot if all are taken). `None` when every slot is busy.
    #[inline(always)]
    pub(crate) fn instance_slot(&self, inner: &Arc<Inner>) -> Option<&Slot> {
        let shared = inner.shared_ptr();
        for slot in &self.slots[1..] {
            if ptr::eq(slot.shared.get(), shared) {
                return Some(slot);
            }
        }
        self.attach(inner)
    }

    /// This thread's slot for an instance if one is attached.
    #[inline(always)]
    pub(crate) fn find(&self, shared: *const Shared) -> Option<&Slot> {
        self.slots[1..].iter().find(|s| ptr::eq(s.shared.get(), shared))
    }

    /// Whether slots may be attached: the thread is not exiting, and its exit guard (which
    /// flushes the caches) is registered.
    fn may_attach(&self) -> bool {
        !self.dead.get() && EXIT_GUARD.try_with(|_| ()).is_ok()
    }

    #[inline(never)]
    fn attach(&self, inner: &Arc<Inner>) -> Option<&Slot> {
        if !self.may_attach() {
            return None;
        }
        let slot = match self.slots[1..].iter().find(|s| s.shared.get().is_null()) {
            Some(s) => s,
            None => {
                let start = self.next_evict.get();
                let pick = (0..SLOTS - 1)
                    .map(|k| 1 + (start - 1 + k) % (SLOTS - 1))
                    .find(|&i| !self.slots[i].busy.get())?;
                self.next_evict.set(1 + pick % (SLOTS - 1));
                let s = &self.slots[pick];
                s.busy.set(true);
                s.clear();
                s.busy.set(false);
                s
            }
        };
        // SAFETY: `inner` is a live Arc; the slot keeps one strong count until `clear`.
        unsafe { Arc::increment_strong_count(Arc::as_ptr(inner)) };
        slot.owner.set(Arc::as_ptr(inner));
        slot.home.set(inner.default_home());
        slot.shared.set(inner.shared_ptr());
        Some(slot)
    }

    /// Slot 0 if it is attached to the global state.
    #[inline(always)]
    pub(crate) fn global_slot_if_attached(&self) -> Option<&Slot> {
        let slot = &self.slots[0];
        (!slot.shared.get().is_null()).then_some(slot)
    }

    /// Slot 0, attached to the global allocator state `shared`; `None` while the thread
    /// exits.
    #[inline]
    pub(crate) fn global_slot(&self, shared: &'static Shared) -> Option<&Slot> {
        let slot = &self.slots[0];
        if slot.shared.get().is_null() {
            if !self.may_attach() {
                return None;
            }
            slot.home.set(super::global::default_home(shared));
            slot.shared.set(shared);
        }
        Some(slot)
    }

    /// Detaches this thread's slot for `shared`, if any.
    pub(crate) fn release(&self, shared: *const Shared) {
        if let Some(slot) = self.find(shared) {
            if !slot.busy.get() {
                slot.clear();
            }
        }
    }
}

/// Flushes the thread's caches back to the node pools when the thread exits.
pub(crate) struct ExitGuard;

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let _ = CACHES.try_with(|c| {
            c.dead.set(true);
            for slot in &c.slots {
                if !slot.busy.get() {
                    slot.clear();
                }
            }
        });
    }
}

thread_local! {
    pub(crate) static CACHES: ThreadCaches = const { ThreadCaches::new() };
    static EXIT_GUARD: ExitGuard = const { ExitGuard };
}
