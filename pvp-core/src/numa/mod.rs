//! NUMA-aware allocation: node-local pools with per-thread caches, node-placed large blocks,
//! typed node-local containers and a global allocator.
//!
//! - [`NumaAllocator`]: `allocate_local`, `allocate_on_node`, `allocate_interleaved`,
//!   `allocate_with_policy`, `deallocate`. Blocks up to 32 KiB come from per-node pools through
//!   a per-thread cache (no lock, no syscall on the fast path); a block freed on another thread
//!   goes back to its own node's pool. Larger blocks are mapped with `mmap` and given a memory
//!   policy (`mbind`: bind, preferred or interleave).
//! - [`NodeBox`] and [`NodeShardedStore`]: values placed on a chosen node, players kept on the
//!   node of the thread that simulates them ([`NodePlacement`]).
//! - [`NumaGlobalAlloc`]: the same pools behind `#[global_allocator]`.
//! - [`page_node`] / [`page_nodes`]: where the kernel actually put a page.
//!
//! On a one-node machine every request is served from node 0. Where the kernel refuses a
//! memory policy (EPERM in containers, ENOSYS, a node the kernel does not have) the allocator
//! uses plain pages, counts it in [`NodeStats::policy_fallbacks`] and logs it once; it never
//! aborts.
//!
//! ```
//! use core::alloc::Layout;
//! use pvp_core::numa::NumaAllocator;
//! use pvp_core::topology::{NodeId, Topology};
//!
//! // A 2-node machine, whatever this one is.
//! let alloc = NumaAllocator::new(Topology::synthetic("pack:2 [numa] core:2 pu:1")?)?;
//! let layout = Layout::new::<[u64; 4]>();
//! let p = alloc.allocate_on_node(NodeId::new(1), layout)?;
//! // SAFETY: `p` came from this allocator with this layout and is not used after.
//! unsafe { alloc.deallocate(p, layout) };
//! assert!(alloc.allocate_on_node(NodeId::new(7), layout).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cache;
mod classes;
mod global;
mod node_box;
mod pool;
#[cfg(pvp_loom)]
#[doc(hidden)]
pub mod remote;
#[cfg(not(pvp_loom))]
#[allow(unreachable_pub)]
mod remote;

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;
use std::sync::Arc;

pub use global::NumaGlobalAlloc;
pub use node_box::{NodeBox, NodePlacement, NodeShardedStore, Rejected};

use crate::sys;
use crate::topology::{NodeId, Topology, TopologyError};
use cache::CACHES;
use classes::class_of;
use pool::{MAX_NODES, Policy, Shared};

/// Why an allocation or a node request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NumaError {
    /// The allocator's topology has no such node.
    #[error("{node} does not exist ({count} NUMA nodes)")]
    NoSuchNode {
        /// The node asked for.
        node: NodeId,
        /// How many nodes the topology has.
        count: usize,
    },
    /// The kernel had no memory for the request.
    #[error("out of memory allocating {size} bytes")]
    OutOfMemory {
        /// Requested size in bytes.
        size: usize,
    },
    /// The topology has more nodes than the allocator handles.
    #[error("{count} NUMA nodes, at most {max} are supported")]
    TooManyNodes {
        /// Nodes in the topology.
        count: usize,
        /// Most nodes supported.
        max: usize,
    },
    /// A topology operation (such as pinning a thread) failed.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// The kernel could not say where a page lives.
    #[error("cannot query the node of a page: {0}")]
    PageQuery(#[source] std::io::Error),
}

/// A memory policy for [`NumaAllocator::allocate_with_policy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemPolicy {
    /// Pages only on this node (`MPOL_BIND`) for large blocks.
    Bind(NodeId),
    /// Pages on this node while it has memory, elsewhere after (`MPOL_PREFERRED`).
    Preferred(NodeId),
    /// Pages spread round-robin over all nodes (`MPOL_INTERLEAVE`).
    Interleave,
}

/// Counters of one node's pools (or of the interleaved pool).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// The node; `None` for the interleaved pool.
    pub node: Option<NodeId>,
    /// 1 MiB pool segments mapped for this node.
    pub segments: u64,
    /// Times a thread cache refilled from this node's pools.
    pub refills: u64,
    /// Blocks handed back to this node's pools by thread caches and by threads without one
    /// (this is how memory freed on another thread comes home).
    pub blocks_returned: u64,
    /// Mappings for this node whose memory policy the kernel refused (plain pages used).
    pub policy_fallbacks: u64,
    /// Large (mmap) blocks allocated for this node.
    pub large_allocations: u64,
}

/// A snapshot of an allocator's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AllocatorStats {
    /// One entry per NUMA node, in topology order.
    pub nodes: Vec<NodeStats>,
    /// The interleaved pool.
    pub interleaved: NodeStats,
    /// Large blocks freed.
    pub large_frees: u64,
    /// Bytes of large blocks currently mapped.
    pub large_live_bytes: u64,
}

impl AllocatorStats {
    /// Policy refusals over all nodes and the interleaved pool.
    pub fn policy_fallbacks(&self) -> u64 {
        self.nodes.iter().map(|n| n.policy_fallbacks).sum::<u64>() + self.interleaved.policy_fallbacks
    }

    fn collect(shared: &Shared, node_ids: impl Fn(usize) -> NodeId) -> Self {
        let node = |i: usize, id: Option<NodeId>| {
            let c = &shared.node(i).counters;
            NodeStats {
                node: id,
                segments: c.segments.load(Ordering::Relaxed),
                refills: c.refills.load(Ordering::Relaxed),
                blocks_returned: c.blocks_returned.load(Ordering::Relaxed),
                policy_fallbacks: c.policy_fallbacks.load(Ordering::Relaxed),
                large_allocations: c.large_allocations.load(Ordering::Relaxed),
            }
        };
        let n = shared.node_count();
        Self {
            nodes: (0..n).map(|i| node(i, Some(node_ids(i)))).collect(),
            interleaved: node(n, None),
            large_frees: shared.large_frees.load(Ordering::Relaxed),
            large_live_bytes: shared.large_live_bytes.load(Ordering::Relaxed) as u64,
        }
    }
}

pub(crate) struct Inner {
    shared: NonNull<Shared>,
    topology: Topology,
}

// SAFETY: Shared is Sync and Send (atomics and mutexes); the topology is plain data.
unsafe impl Send for Inner {}
// SAFETY: as above.
unsafe impl Sync for Inner {}

impl Inner {
    #[inline(always)]
    fn shared(&self) -> &Shared {
        // SAFETY: the state lives until Inner drops.
        unsafe { self.shared.as_ref() }
    }

    pub(crate) fn shared_ptr(&self) -> *const Shared {
        self.shared.as_ptr()
    }

    /// The node index of the CPU the thread runs on now.
    pub(crate) fn default_home(&self) -> usize {
        let node = self.topology.current_node();
        self.topology.index_of(node).unwrap_or(0)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // SAFETY: the last handle and the last thread cache are gone; blocks still out are the
        // caller's broken promise (deallocate needs a live allocator).
        unsafe { Shared::destroy(self.shared.as_ptr()) };
    }
}

/// A NUMA-aware allocator over a [`Topology`]. Cheap to clone (a shared handle); every clone
/// serves and frees the same memory, from any thread.
///
/// Blocks of at most 32 KiB (after rounding up to the alignment when it exceeds 16) come from
/// the per-node pools; each thread caches free blocks per node and size class. Larger blocks
/// are mapped and unmapped one by one with the requested policy.
///
/// Each thread caches blocks of up to four allocators at once (the oldest is handed back when
/// a fifth is used); a thread's cache keeps its allocator's memory mapped until the thread
/// exits or calls [`NumaAllocator::release_thread_cache`].
#[derive(Clone)]
pub struct NumaAllocator {
    inner: Arc<Inner>,
    /// `inner.shared`, one load closer for the fast paths.
    shared: NonNull<Shared>,
}

// SAFETY: `shared` is owned by `inner`, which is Send + Sync.
unsafe impl Send for NumaAllocator {}
// SAFETY: as above.
unsafe impl Sync for NumaAllocator {}

impl core::fmt::Debug for NumaAllocator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NumaAllocator")
            .field("nodes", &self.inner.topology.node_count())
            .finish_non_exhaustive()
    }
}

impl NumaAllocator {
    /// An allocator for `topology`'s nodes.
    pub fn new(topology: Topology) -> Result<Self, NumaError> {
        let count = topology.node_count();
        if count > MAX_NODES || topology.nodes().iter().any(|n| n.id().get() >= 1024) {
            return Err(NumaError::TooManyNodes { count, max: MAX_NODES });
        }
        let ids: Vec<u32> = topology.nodes().iter().map(|n| n.id().get()).collect();
        let shared = NonNull::new(Shared::create(&ids, true)).ok_or(NumaError::OutOfMemory { size: 0 })?;
        Ok(Self { inner: Arc::new(Inner { shared, topology }), shared })
    }

    /// An allocator for the running machine ([`Topology::detect`]).
    pub fn detect() -> Result<Self, NumaError> {
        Self::new(Topology::detect()?)
    }

    /// The topology the allocator places memory on.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    fn index_of(&self, node: NodeId) -> Result<usize, NumaError> {
        self.inner
            .topology
            .index_of(node)
            .map_err(|_| NumaError::NoSuchNode { node, count: self.inner.topology.node_count() })
    }

    /// Allocates on the calling thread's home node (see [`NumaAllocator::home_node`]); large
    /// blocks get `MPOL_PREFERRED` for it. A zero-sized layout gets a dangling, aligned pointer.
    #[inline(always)]
    pub fn allocate_local(&self, layout: Layout) -> Result<NonNull<u8>, NumaError> {
        // Fast path: a small block from this thread's list; no lock, no syscall, no atomic RMW.
        if let Some(class) = classes::small_class_fast(layout) {
            // SAFETY: the state lives as long as `inner`.
            let shared = unsafe { self.shared.as_ref() };
            if let Ok(Some(p)) = CACHES.try_with(|c| {
                c.find(shared)
                    // SAFETY: the slot belongs to this state; the class is in range.
                    .and_then(|slot| NonNull::new(unsafe { slot.try_pop_home(shared, class) }))
            }) {
                return Ok(p);
            }
        }
        self.allocate_local_slow(layout)
    }

    #[inline(never)]
    fn allocate_local_slow(&self, layout: Layout) -> Result<NonNull<u8>, NumaError> {
        // Before the class: a zero-sized layout aligned beyond the pools would go to the
        // large path and map (then unmap) a block for nothing.
        if layout.size() == 0 {
            return Ok(dangling(layout));
        }
        let Some(class) = class_of(layout) else {
            let home = self.home_index();
            return self.large(layout, Policy::Preferred(home), home);
        };
        let shared = self.inner.shared();
        let p = CACHES
            .try_with(|c| match c.instance_slot(&self.inner) {
                // SAFETY: the slot belongs to this allocator's state.
                Some(slot) => unsafe { slot.alloc(shared, slot.home(), class) },
                None => shared.alloc_uncached(self.inner.default_home(), class),
            })
            .unwrap_or_else(|_| shared.alloc_uncached(self.inner.default_home(), class));
        NonNull::new(p).ok_or(NumaError::OutOfMemory { size: layout.size() })
    }

    /// Allocates on `node`; large blocks get `MPOL_BIND` for it. Small blocks come from the
    /// node's pool, whose pages prefer the node (`MPOL_PREFERRED`).
    pub fn allocate_on_node(&self, node: NodeId, layout: Layout) -> Result<NonNull<u8>, NumaError> {
        let index = self.index_of(node)?;
        self.allocate_in(index, layout, Policy::Bind(index))
    }

    /// Allocates memory whose pages are spread over all nodes (`MPOL_INTERLEAVE`). Small blocks
    /// come from an interleaved pool, so consecutive small blocks share pages.
    pub fn allocate_interleaved(&self, layout: Layout) -> Result<NonNull<u8>, NumaError> {
        let n = self.inner.shared().node_count();
        self.allocate_in(n, layout, Policy::Interleave)
    }

    /// Allocates with an explicit memory policy. Large blocks get exactly `policy`; small blocks
    /// come from the pool of the policy's node (or the interleaved pool).
    pub fn allocate_with_policy(&self, layout: Layout, policy: MemPolicy) -> Result<NonNull<u8>, NumaError> {
        match policy {
            MemPolicy::Bind(node) => self.allocate_on_node(node, layout),
            MemPolicy::Preferred(node) => {
                let index = self.index_of(node)?;
                self.allocate_in(index, layout, Policy::Preferred(index))
            }
            MemPolicy::Interleave => self.allocate_interleaved(layout),
        }
    }

    fn allocate_in(&self, pool: usize, layout: Layout, large: Policy) -> Result<NonNull<u8>, NumaError> {
        if layout.size() == 0 {
            return Ok(dangling(layout));
        }
        let Some(class) = class_of(layout) else {
            return self.large(layout, large, pool);
        };
        let shared = self.inner.shared();
        let p = CACHES
            .try_with(|c| match c.instance_slot(&self.inner) {
                // SAFETY: the slot belongs to this allocator's state.
                Some(slot) => unsafe { slot.alloc(shared, pool, class) },
                None => shared.alloc_uncached(pool, class),
            })
            .unwrap_or_else(|_| shared.alloc_uncached(pool, class));
        NonNull::new(p).ok_or(NumaError::OutOfMemory { size: layout.size() })
    }

    #[cold]
    fn large(&self, layout: Layout, policy: Policy, node: usize) -> Result<NonNull<u8>, NumaError> {
        let p = self.inner.shared().alloc_large(layout, policy, node);
        NonNull::new(p).ok_or(NumaError::OutOfMemory { size: layout.size() })
    }

    /// Frees a block. Any thread may free any block; it goes back to the pool of the node it
    /// came from.
    ///
    /// # Safety
    /// `ptr` was returned by an `allocate_*` method of this allocator (or a clone) with this
    /// `layout`, and is not used (or freed) again. Debug builds panic on double frees, on
    /// foreign pointers and on a layout of another size class.
    #[inline(always)]
    pub unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if let Some(class) = classes::small_class_fast(layout) {
            // SAFETY: the state lives as long as `inner`.
            let shared = unsafe { self.shared.as_ref() };
            let pushed = CACHES.try_with(|c| match c.find(shared) {
                // SAFETY: per the caller, a block of this state and class, given up.
                Some(slot) => unsafe { slot.try_push(shared, ptr.as_ptr(), class) },
                None => false,
            });
            if pushed == Ok(true) {
                return;
            }
        }
        // SAFETY: forwarded.
        unsafe { self.deallocate_slow(ptr, layout) }
    }

    #[inline(never)]
    unsafe fn deallocate_slow(&self, ptr: NonNull<u8>, layout: Layout) {
        // Zero-sized blocks are dangling pointers, whatever their alignment.
        if layout.size() == 0 {
            return;
        }
        let Some(class) = class_of(layout) else {
            // SAFETY: per the caller, a large block of ours with this layout.
            unsafe { self.inner.shared().free_large(ptr.as_ptr(), layout) };
            return;
        };
        let shared = self.inner.shared();
        let done = CACHES.try_with(|c| match c.instance_slot(&self.inner) {
            // SAFETY: per the caller, a block of this state and class, given up.
            Some(slot) => unsafe { slot.free(shared, ptr.as_ptr(), class) },
            None => {
                shared.debug_track(ptr.as_ptr(), class, false);
                // SAFETY: as above.
                unsafe { shared.free_uncached(ptr.as_ptr(), class) }
            }
        });
        if done.is_err() {
            shared.debug_track(ptr.as_ptr(), class, false);
            // SAFETY: as above.
            unsafe { shared.free_uncached(ptr.as_ptr(), class) }
        }
    }

    fn home_index(&self) -> usize {
        CACHES
            .try_with(|c| c.instance_slot(&self.inner).map(|s| s.home()))
            .ok()
            .flatten()
            .unwrap_or_else(|| self.inner.default_home())
    }

    /// The node `allocate_local` serves the calling thread from: the node the thread ran on
    /// when it first used this allocator, or the one last given to
    /// [`NumaAllocator::bind_thread_to_node`] / [`NumaAllocator::set_home_node`].
    ///
    /// The home node is kept in the thread's cache for this allocator: once that cache is
    /// detached ([`NumaAllocator::release_thread_cache`], or handed back because the thread
    /// used four other allocators since), the home node is again the node the thread runs on
    /// at its next use; set it again after a release.
    pub fn home_node(&self) -> NodeId {
        self.inner.topology.nodes()[self.home_index()].id()
    }

    /// The node of the CPU the calling thread runs on now ([`Topology::current_node`]).
    pub fn current_node(&self) -> NodeId {
        self.inner.topology.current_node()
    }

    /// Pins the calling thread to `node`'s CPUs and makes `node` its home node. On error
    /// nothing changes.
    pub fn bind_thread_to_node(&self, node: NodeId) -> Result<(), NumaError> {
        self.index_of(node)?;
        self.inner.topology.bind_thread_to_node(node)?;
        self.set_home_node(node)
    }

    /// Makes `node` the calling thread's home node without pinning the thread (for threads
    /// pinned some other way, or a synthetic topology whose CPUs do not exist here).
    pub fn set_home_node(&self, node: NodeId) -> Result<(), NumaError> {
        let index = self.index_of(node)?;
        let _ = CACHES.try_with(|c| {
            if let Some(slot) = c.instance_slot(&self.inner) {
                slot.set_home(index);
            }
        });
        Ok(())
    }

    /// Hands every block the calling thread caches for this allocator back to the node pools
    /// and detaches the thread's cache (the next allocation attaches a new one). The thread's
    /// home node for this allocator is forgotten with it (see [`NumaAllocator::home_node`]).
    pub fn release_thread_cache(&self) {
        let _ = CACHES.try_with(|c| c.release(self.inner.shared_ptr()));
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> AllocatorStats {
        let topo = &self.inner.topology;
        AllocatorStats::collect(self.inner.shared(), |i| topo.nodes()[i].id())
    }
}

fn dangling(layout: Layout) -> NonNull<u8> {
    // A non-zero multiple of the alignment, never dereferenced.
    NonNull::new(layout.align() as *mut u8).unwrap_or(NonNull::dangling())
}

/// The OS NUMA node of the CPU the calling thread runs on now (`getcpu`); node 0 when the
/// kernel does not say. For a node of a particular [`Topology`], use
/// [`Topology::current_node`].
pub fn current_node() -> NodeId {
    sys::getcpu().map_or(NodeId::new(0), |(_, node)| NodeId::new(node))
}

/// Pins the calling thread to the CPUs of `node` of the running machine
/// ([`Topology::detect`]). For an allocator's home node as well, use
/// [`NumaAllocator::bind_thread_to_node`].
pub fn bind_thread_to_node(node: NodeId) -> Result<(), NumaError> {
    let topology = Topology::detect()?;
    topology.index_of(node).map_err(|_| NumaError::NoSuchNode { node, count: topology.node_count() })?;
    topology.bind_thread_to_node(node)?;
    Ok(())
}

/// The NUMA node the kernel placed the page holding `ptr` on (`get_mempolicy` with
/// `MPOL_F_NODE | MPOL_F_ADDR`), faulting the page in if it was never touched. `ptr` must
/// point into memory mapped in this process.
pub fn page_node(ptr: *const u8) -> Result<NodeId, NumaError> {
    sys::node_of_address(ptr).map(NodeId::new).map_err(|e| NumaError::PageQuery(e.io()))
}

/// Where each page in `pages` lives, through a `move_pages` query (moving nothing); a page not
/// faulted in yet (or not mapped) gives an error for that entry.
pub fn page_nodes(pages: &[*const u8]) -> Result<Vec<Result<NodeId, NumaError>>, NumaError> {
    let mut status = vec![0i32; pages.len()];
    sys::query_page_nodes(pages, &mut status).map_err(|e| NumaError::PageQuery(e.io()))?;
    Ok(status
        .into_iter()
        .map(|s| {
            if s >= 0 {
                Ok(NodeId::new(s as u32))
            } else {
                Err(NumaError::PageQuery(std::io::Error::from_raw_os_error(-s)))
            }
        })
        .collect())
}

/// Resident memory of this process in bytes (`/proc/self/statm`), for growth reports.
pub fn resident_memory_bytes() -> Result<u64, NumaError> {
    sys::resident_bytes().map_err(|e| NumaError::PageQuery(e.io()))
}
