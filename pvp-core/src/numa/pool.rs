//! Node pools: the memory behind a [`Shared`] allocator state, and every slow path.
//!
//! One [`Shared`] lives in its own anonymous mapping (never on the Rust heap, so the global
//! allocator can build one while it serves an allocation). It holds, per NUMA node plus one
//! interleaved pseudo-node, a [`ClassPool`] per size class. A class pool owns 1 MiB segments
//! (aligned to their size, header first) mapped with the node's memory policy, carves fresh
//! blocks from them, and takes freed blocks back through a lock-free [`RemoteFreeList`].

use core::alloc::Layout;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::classes::{CLASS_COUNT, CLASS_SIZE, carve_batch};
use super::remote::{FreeLink, RemoteFreeList};
use crate::primitive::sync::atomic::AtomicPtr;
use crate::sys;

/// Size and alignment of a pool segment.
pub(crate) const SEGMENT: usize = 1 << 20;
/// Most nodes an allocator handles (OS node numbers must also be below 1024).
pub(crate) const MAX_NODES: usize = 256;
const MAGIC: usize = 0x7076_705f_6e75_6d61; // "pvp_numa"

/// A free block: its first word links to the next free block.
#[repr(C)]
pub(crate) struct FreeBlock {
    next: AtomicPtr<FreeBlock>,
}

impl FreeLink for FreeBlock {
    #[inline(always)]
    fn link(&self) -> &AtomicPtr<Self> {
        &self.next
    }
}

/// Reads the link of a free block.
///
/// # Safety
/// `block` is a free block the caller owns.
#[inline(always)]
pub(crate) unsafe fn next_of(block: *mut FreeBlock) -> *mut FreeBlock {
    // SAFETY: per the caller, `block` is a live free block.
    unsafe { (*block).next.load(Ordering::Relaxed) }
}

/// Sets the link of a free block.
///
/// # Safety
/// `block` points to at least 16 bytes the caller owns, aligned to 16.
#[inline(always)]
pub(crate) unsafe fn set_next(block: *mut FreeBlock, next: *mut FreeBlock) {
    // SAFETY: per the caller, the first word of `block` is ours to write.
    unsafe { (*block).next.store(next, Ordering::Relaxed) }
}

/// The header at the start of every segment.
#[repr(C)]
pub(crate) struct SegmentHeader {
    magic: usize,
    owner: *const Shared,
    /// Pool index: node index, or `node_count` for the interleaved pool.
    pub(crate) pool: u32,
    pub(crate) class: u32,
    next_segment: *mut SegmentHeader,
    data_start: usize,
    /// Debug builds: one bit per block, set while the block is handed out.
    #[cfg(debug_assertions)]
    live: [AtomicU64; SEGMENT / 16 / 64],
}

/// The segment header of a pool block.
#[inline(always)]
pub(crate) fn header_of(block: *const u8) -> *const SegmentHeader {
    (block as usize & !(SEGMENT - 1)) as *const SegmentHeader
}

/// Counters of one node (or of the interleaved pool).
#[derive(Default)]
pub(crate) struct NodeCounters {
    pub(crate) segments: AtomicU64,
    pub(crate) refills: AtomicU64,
    pub(crate) blocks_returned: AtomicU64,
    pub(crate) policy_fallbacks: AtomicU64,
    pub(crate) large_allocations: AtomicU64,
}

struct PoolState {
    /// Blocks taken from the remote list by threads without a cache.
    central: *mut FreeBlock,
    bump: usize,
    end: usize,
    block_size: usize,
    segments: *mut SegmentHeader,
}

// SAFETY: the raw pointers refer to segments this pool owns; the mutex serialises access.
unsafe impl Send for PoolState {}

/// One size class of one node.
#[repr(align(64))]
pub(crate) struct ClassPool {
    pub(crate) remote: RemoteFreeList<FreeBlock>,
    state: Mutex<PoolState>,
}

/// All classes of one node.
pub(crate) struct NodePools {
    pub(crate) classes: [ClassPool; CLASS_COUNT],
    pub(crate) counters: NodeCounters,
}

/// How pool segments and large blocks of a pool index get their pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Policy {
    Preferred(usize),
    Bind(usize),
    Interleave,
}

/// An allocator's state. Lives in its own mapping; see the module docs.
pub(crate) struct Shared {
    node_count: usize,
    os_ids: [u32; MAX_NODES],
    pools: *mut NodePools,
    mapping_len: usize,
    /// Whether slow paths may log and report metrics (not inside the global allocator).
    pub(crate) instrumented: bool,
    fallback_logged: AtomicBool,
    pub(crate) large_frees: AtomicU64,
    pub(crate) large_live_bytes: AtomicUsize,
}

// SAFETY: every mutable part of Shared is atomic or behind a mutex.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

fn round_up(n: usize, to: usize) -> usize {
    (n + to - 1) & !(to - 1)
}

impl Shared {
    /// Maps and initialises a state for nodes with OS numbers `os_ids` (1..=MAX_NODES of them,
    /// each below 1024). Returns null when the mapping fails.
    pub(crate) fn create(os_ids: &[u32], instrumented: bool) -> *mut Shared {
        let n = os_ids.len().clamp(1, MAX_NODES);
        let pools_off = round_up(size_of::<Shared>(), align_of::<NodePools>());
        let len = round_up(pools_off + (n + 1) * size_of::<NodePools>(), sys::page_size());
        let Ok(base) = sys::map(len) else {
            return ptr::null_mut();
        };
        let mut ids = [0u32; MAX_NODES];
        for (slot, &id) in ids.iter_mut().zip(os_ids.iter().take(n)) {
            *slot = id;
        }
        let pools = base.wrapping_add(pools_off).cast::<NodePools>();
        for i in 0..=n {
            let node = NodePools {
                classes: core::array::from_fn(|c| ClassPool {
                    remote: RemoteFreeList::new(),
                    state: Mutex::new(PoolState {
                        central: ptr::null_mut(),
                        bump: 0,
                        end: 0,
                        block_size: CLASS_SIZE[c],
                        segments: ptr::null_mut(),
                    }),
                }),
                counters: NodeCounters::default(),
            };
            // SAFETY: the mapping is fresh, large enough and aligned for `n + 1` NodePools.
            unsafe { pools.add(i).write(node) };
        }
        let shared = base.cast::<Shared>();
        // SAFETY: the mapping starts with room for a Shared, page aligned.
        unsafe {
            shared.write(Shared {
                node_count: n,
                os_ids: ids,
                pools,
                mapping_len: len,
                instrumented,
                fallback_logged: AtomicBool::new(false),
                large_frees: AtomicU64::new(0),
                large_live_bytes: AtomicUsize::new(0),
            })
        };
        shared
    }

    /// Unmaps every segment and the state itself.
    ///
    /// # Safety
    /// `this` came from [`Shared::create`], no block of it is used any more and no thread will
    /// touch it again.
    pub(crate) unsafe fn destroy(this: *mut Shared) {
        // SAFETY: per the caller, `this` is a live state nobody else uses.
        let s = unsafe { &*this };
        for i in 0..=s.node_count {
            for class in &s.node(i).classes {
                let state = class.state.lock().unwrap_or_else(|e| e.into_inner());
                let mut seg = state.segments;
                while !seg.is_null() {
                    // SAFETY: each segment was mapped by `new_segment` and is unmapped once.
                    unsafe {
                        let next = (*seg).next_segment;
                        sys::unmap(seg.cast(), SEGMENT);
                        seg = next;
                    }
                }
            }
            // SAFETY: drops the pools' mutexes in place; nothing uses them afterwards.
            unsafe { ptr::drop_in_place(s.pools.add(i)) };
        }
        let len = s.mapping_len;
        // SAFETY: the state's own mapping, made in `create`.
        unsafe { sys::unmap(this.cast(), len) };
    }

    /// Number of real NUMA nodes (the interleaved pool is index `node_count()`).
    #[inline(always)]
    pub(crate) fn node_count(&self) -> usize {
        self.node_count
    }

    /// OS node number of node index `i`.
    pub(crate) fn os_id(&self, i: usize) -> u32 {
        self.os_ids[i]
    }

    /// Node index of OS node `os`, if this state has it.
    pub(crate) fn index_of_os(&self, os: u32) -> Option<usize> {
        self.os_ids[..self.node_count].iter().position(|&id| id == os)
    }

    /// The pools of node index `i` (`0..=node_count`).
    #[inline(always)]
    pub(crate) fn node(&self, i: usize) -> &NodePools {
        debug_assert!(i <= self.node_count);
        // SAFETY: `pools` holds `node_count + 1` initialised NodePools for the life of self.
        unsafe { &*self.pools.add(i) }
    }

    #[inline(always)]
    pub(crate) fn pool(&self, node: usize, class: usize) -> &ClassPool {
        &self.node(node).classes[class]
    }

    fn mask(&self, policy: Policy) -> sys::NodeMask {
        let mut mask = [0; sys::NODE_MASK_WORDS];
        let mut set = |os: u32| {
            let os = os as usize;
            if os < sys::NODE_MASK_WORDS * 64 {
                mask[os / 64] |= 1 << (os % 64);
            }
        };
        match policy {
            Policy::Preferred(i) | Policy::Bind(i) => set(self.os_ids[i]),
            Policy::Interleave => self.os_ids[..self.node_count].iter().for_each(|&id| set(id)),
        }
        mask
    }

    /// Applies `policy` to a fresh mapping; a refusal leaves plain pages, counted and logged
    /// once.
    pub(crate) fn apply_policy(&self, addr: *mut u8, len: usize, policy: Policy, counter_node: usize) {
        let mode = match policy {
            Policy::Preferred(_) => sys::MPOL_PREFERRED,
            Policy::Bind(_) => sys::MPOL_BIND,
            Policy::Interleave => sys::MPOL_INTERLEAVE,
        };
        if let Err(errno) = sys::mbind(addr, len, mode, &self.mask(policy)) {
            self.node(counter_node).counters.policy_fallbacks.fetch_add(1, Ordering::Relaxed);
            if self.instrumented {
                metrics::counter!("pvp_numa_policy_fallbacks_total").increment(1);
                if !self.fallback_logged.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "pvp-core numa: the kernel refused memory policy {policy:?} ({}); using \
                         plain pages from now on where it refuses (counted in stats)",
                        errno.io()
                    );
                }
            }
        }
    }

    fn policy_of_pool(&self, pool: usize) -> Policy {
        if pool == self.node_count { Policy::Interleave } else { Policy::Preferred(pool) }
    }

    fn new_segment(&self, node: usize, class: usize, state: &mut PoolState) -> bool {
        let Ok(seg) = sys::map_aligned(SEGMENT, SEGMENT) else {
            return false;
        };
        self.apply_policy(seg, SEGMENT, self.policy_of_pool(node), node);
        let size = CLASS_SIZE[class];
        let class_align = size & size.wrapping_neg();
        let data_start = round_up(size_of::<SegmentHeader>(), class_align);
        let header = seg.cast::<SegmentHeader>();
        // SAFETY: the fresh, zeroed segment starts with room for its header. The debug bitmap
        // is atomics, for which all-zero is a valid value, so it is left as mapped.
        unsafe {
            ptr::addr_of_mut!((*header).magic).write(MAGIC);
            ptr::addr_of_mut!((*header).owner).write(self as *const Shared);
            ptr::addr_of_mut!((*header).pool).write(node as u32);
            ptr::addr_of_mut!((*header).class).write(class as u32);
            ptr::addr_of_mut!((*header).next_segment).write(state.segments);
            ptr::addr_of_mut!((*header).data_start).write(data_start);
        }
        state.segments = header;
        state.bump = seg as usize + data_start;
        state.end = seg as usize + SEGMENT;
        self.node(node).counters.segments.fetch_add(1, Ordering::Relaxed);
        if self.instrumented {
            metrics::counter!("pvp_numa_segments_mapped_total").increment(1);
        }
        true
    }

    /// Carves up to `want` fresh blocks into a chain; returns (head, count).
    fn carve(
        &self,
        node: usize,
        class: usize,
        state: &mut PoolState,
        want: usize,
    ) -> (*mut FreeBlock, usize) {
        let size = state.block_size;
        if state.bump + size > state.end && !self.new_segment(node, class, state) {
            return (ptr::null_mut(), 0);
        }
        let n = want.min((state.end - state.bump) / size).max(1);
        let first = state.bump as *mut FreeBlock;
        for k in 0..n {
            let block = (state.bump + k * size) as *mut FreeBlock;
            let next =
                if k + 1 == n { ptr::null_mut() } else { (state.bump + (k + 1) * size) as *mut FreeBlock };
            // SAFETY: the block lies in the unused tail of a segment this pool owns.
            unsafe { set_next(block, next) };
        }
        state.bump += n * size;
        (first, n)
    }

    /// Refills an empty thread-cache list: the pool's remote list if anything came back, else
    /// fresh blocks. Returns (head, a lower bound of the chain's length); head is null when
    /// memory is exhausted.
    ///
    /// A chain taken from the remote list is not walked: its blocks were last written by other
    /// threads, and walking them would stall on one cache miss after another; the pops that
    /// follow take those misses one at a time, overlapped with the caller's work.
    #[inline(never)]
    pub(crate) fn refill(&self, node: usize, class: usize) -> (*mut FreeBlock, usize) {
        let pool = self.pool(node, class);
        self.node(node).counters.refills.fetch_add(1, Ordering::Relaxed);
        let taken = pool.remote.take_all();
        if !taken.is_null() {
            return (taken, 1);
        }
        let mut state = pool.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.central.is_null() {
            let head = core::mem::replace(&mut state.central, ptr::null_mut());
            return (head, 1);
        }
        self.carve(node, class, &mut state, carve_batch(class))
    }

    /// One block without a thread cache (thread teardown, uncached nodes); null when the
    /// kernel has no memory.
    pub(crate) fn alloc_uncached(&self, node: usize, class: usize) -> *mut u8 {
        let block = self.pop_uncached(node, class);
        if !block.is_null() {
            self.debug_track(block, class, true);
        }
        block
    }

    fn pop_uncached(&self, node: usize, class: usize) -> *mut u8 {
        let pool = self.pool(node, class);
        let mut state = pool.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.central.is_null() {
            state.central = pool.remote.take_all();
        }
        if !state.central.is_null() {
            let b = state.central;
            // SAFETY: the central chain belongs to the pool; we hold its lock.
            state.central = unsafe { next_of(b) };
            return b.cast();
        }
        self.carve(node, class, &mut state, 1).0.cast()
    }

    /// Hands the chain `first..=last` (`count` blocks) back to its pool.
    ///
    /// # Safety
    /// The chain's blocks belong to pool (`node`, `class`) of this state and the caller gives
    /// them up.
    #[inline]
    pub(crate) unsafe fn give_back(
        &self,
        node: usize,
        class: usize,
        first: *mut FreeBlock,
        last: *mut FreeBlock,
        count: usize,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { self.pool(node, class).remote.push_chain(first, last) };
        self.node(node).counters.blocks_returned.fetch_add(count as u64, Ordering::Relaxed);
    }

    /// Maps a large block with `policy`; null when the kernel has no memory.
    pub(crate) fn alloc_large(&self, layout: Layout, policy: Policy, counter_node: usize) -> *mut u8 {
        let page = sys::page_size();
        let Some(len) = layout.size().checked_add(page - 1).map(|n| n & !(page - 1)) else {
            return ptr::null_mut();
        };
        let Ok(p) = sys::map_aligned(len, layout.align().max(page)) else {
            return ptr::null_mut();
        };
        self.apply_policy(p, len, policy, counter_node);
        self.node(counter_node).counters.large_allocations.fetch_add(1, Ordering::Relaxed);
        self.large_live_bytes.fetch_add(len, Ordering::Relaxed);
        if self.instrumented {
            metrics::counter!("pvp_numa_large_allocations_total").increment(1);
        }
        p
    }

    /// Unmaps a large block.
    ///
    /// # Safety
    /// `ptr` came from [`Shared::alloc_large`] with this `layout` and is not used any more.
    pub(crate) unsafe fn free_large(&self, ptr: *mut u8, layout: Layout) {
        let page = sys::page_size();
        let len = (layout.size() + page - 1) & !(page - 1);
        // SAFETY: per the caller, the block's whole mapping is ours to unmap.
        unsafe { sys::unmap(ptr, len) };
        self.large_frees.fetch_add(1, Ordering::Relaxed);
        self.large_live_bytes.fetch_sub(len, Ordering::Relaxed);
    }

    /// Debug builds: checks `block` is a block of this state of `class`, and flips its
    /// handed-out bit (`live`: being handed out, else being freed), catching double frees and
    /// foreign pointers.
    #[cfg(debug_assertions)]
    pub(crate) fn debug_track(&self, block: *const u8, class: usize, live: bool) {
        let header = header_of(block);
        assert!(
            live || sys::is_mapped(header.cast()),
            "pvp-core numa: freeing {block:p}, which no NumaAllocator handed out"
        );
        // SAFETY: the segment's first page is mapped (checked above); reading it is harmless
        // even when it is not ours, and the magic tells whether it is.
        let h = unsafe { &*header };
        assert!(
            h.magic == MAGIC && ptr::eq(h.owner, self),
            "pvp-core numa: {block:p} was not handed out by this allocator"
        );
        assert_eq!(
            h.class as usize, class,
            "pvp-core numa: {block:p} freed with a layout of another size class"
        );
        let offset = block as usize - header as usize - h.data_start;
        let size = CLASS_SIZE[class];
        assert!(offset % size == 0, "pvp-core numa: {block:p} is not the start of a block");
        let index = offset / size;
        let bit = 1u64 << (index % 64);
        let word = &h.live[index / 64];
        if live {
            let old = word.fetch_or(bit, Ordering::Relaxed);
            debug_assert!(old & bit == 0, "pvp-core numa: block {block:p} handed out twice");
        } else {
            let old = word.fetch_and(!bit, Ordering::Relaxed);
            assert!(old & bit != 0, "pvp-core numa: double free of {block:p}");
        }
    }

    /// Release builds check nothing.
    #[cfg(not(debug_assertions))]
    #[inline(always)]
    pub(crate) fn debug_track(&self, _block: *const u8, _class: usize, _live: bool) {}

    /// The pool index a block of this state belongs to.
    ///
    /// # Safety
    /// `block` is a pool block of this state.
    #[inline(always)]
    pub(crate) unsafe fn pool_of(block: *const u8) -> usize {
        // SAFETY: per the caller, the block's segment starts with a live header.
        unsafe { (*header_of(block)).pool as usize }
    }

    /// Returns a block to its pool from a thread without a cache.
    ///
    /// # Safety
    /// `block` is a pool block of class `class` of this state, not used any more.
    pub(crate) unsafe fn free_uncached(&self, block: *mut u8, class: usize) {
        // SAFETY: per the caller.
        let node = unsafe { Self::pool_of(block) };
        let b = block.cast::<FreeBlock>();
        // SAFETY: a single-block chain we own.
        unsafe { self.give_back(node, class, b, b, 1) };
    }
}
