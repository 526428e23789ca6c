//! Typed node-local containers, so callers rarely touch raw pointers.

use core::alloc::Layout;
use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use std::collections::HashMap;
use std::sync::Mutex;

use super::{NumaAllocator, NumaError};
use crate::ids::PlayerId;
use crate::topology::{NodeId, Topology};

/// A value that could not be placed, handed back with the reason.
///
/// Converts into [`NumaError`] with `?` when the value is not needed back.
#[derive(thiserror::Error)]
#[error("cannot place the value: {error}")]
pub struct Rejected<T> {
    error: NumaError,
    value: T,
}

impl<T> Rejected<T> {
    /// Why the value was not placed.
    pub fn error(&self) -> &NumaError {
        &self.error
    }

    /// The value, unharmed.
    pub fn into_value(self) -> T {
        self.value
    }

    /// The reason and the value.
    pub fn into_parts(self) -> (NumaError, T) {
        (self.error, self.value)
    }
}

impl<T> fmt::Debug for Rejected<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejected").field("error", &self.error).finish_non_exhaustive()
    }
}

impl<T> From<Rejected<T>> for NumaError {
    fn from(r: Rejected<T>) -> Self {
        r.error
    }
}

/// A `Box` whose value lives on a chosen NUMA node. Dropping it (on any thread) frees the memory
/// back to that node's pool.
///
/// ```
/// use pvp_core::numa::{NodeBox, NumaAllocator};
/// use pvp_core::topology::{NodeId, Topology};
///
/// let alloc = NumaAllocator::new(Topology::synthetic("numa:2 core:1 pu:1")?)?;
/// let mut hp = NodeBox::new_on(&alloc, NodeId::new(1), 100u32)?;
/// *hp -= 30;
/// assert_eq!(*hp, 70);
/// assert_eq!(hp.node(), NodeId::new(1));
/// assert_eq!(NodeBox::into_inner(hp), 70);
/// # Ok::<(), pvp_core::numa::NumaError>(())
/// ```
pub struct NodeBox<T> {
    ptr: NonNull<T>,
    node: NodeId,
    alloc: NumaAllocator,
    _owns: PhantomData<T>,
}

// SAFETY: a NodeBox owns its T like a Box does; the allocator handle is Send + Sync.
unsafe impl<T: Send> Send for NodeBox<T> {}
// SAFETY: shared access only hands out &T.
unsafe impl<T: Sync> Sync for NodeBox<T> {}

impl<T> NodeBox<T> {
    /// Moves `value` into memory on `node`. A node the allocator does not have
    /// ([`NumaError::NoSuchNode`]) or no memory ([`NumaError::OutOfMemory`]) hands the value
    /// back in [`Rejected`].
    pub fn new_on(alloc: &NumaAllocator, node: NodeId, value: T) -> Result<Self, Rejected<T>> {
        let layout = Layout::new::<T>();
        let placed = if layout.size() == 0 {
            alloc.index_of(node).map(|_| NonNull::dangling())
        } else {
            alloc.allocate_on_node(node, layout).map(NonNull::cast::<T>)
        };
        let ptr = match placed {
            Ok(p) => p,
            Err(error) => return Err(Rejected { error, value }),
        };
        // SAFETY: fresh memory sized and aligned for T (or a dangling pointer for a ZST).
        unsafe { ptr.as_ptr().write(value) };
        Ok(Self { ptr, node, alloc: alloc.clone(), _owns: PhantomData })
    }

    /// Moves `value` onto the calling thread's home node ([`NumaAllocator::home_node`]).
    pub fn new_local(alloc: &NumaAllocator, value: T) -> Result<Self, Rejected<T>> {
        Self::new_on(alloc, alloc.home_node(), value)
    }

    /// The node the value was placed on.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Takes the value out, freeing the node memory.
    pub fn into_inner(this: Self) -> T {
        let this = core::mem::ManuallyDrop::new(this);
        // SAFETY: the value is initialised and read exactly once; the memory is freed below
        // and the box is not dropped (ManuallyDrop).
        let value = unsafe { this.ptr.as_ptr().read() };
        // SAFETY: the allocator handle is moved out exactly once.
        let alloc = unsafe { core::ptr::read(&this.alloc) };
        let layout = Layout::new::<T>();
        if layout.size() != 0 {
            // SAFETY: allocated by `alloc` with this layout; the value has been moved out.
            unsafe { alloc.deallocate(this.ptr.cast(), layout) };
        }
        value
    }
}

impl<T> Deref for NodeBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the value is initialised and owned by the box.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for NodeBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above, and `&mut self` makes the access unique.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for NodeBox<T> {
    fn drop(&mut self) {
        // SAFETY: the value is initialised and dropped exactly once.
        unsafe { core::ptr::drop_in_place(self.ptr.as_ptr()) };
        let layout = Layout::new::<T>();
        if layout.size() != 0 {
            // SAFETY: allocated by this allocator with this layout, not used after.
            unsafe { self.alloc.deallocate(self.ptr.cast(), layout) };
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for NodeBox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeBox").field("node", &self.node).field("value", &**self).finish()
    }
}

/// Maps players (or any `u64` key) to NUMA nodes the way the seed's `NUMAGameServer` does:
/// key modulo the number of nodes, so players spread evenly and a player's node never changes
/// while the topology stays the same.
///
/// ```
/// use pvp_core::numa::NodePlacement;
/// use pvp_core::topology::{NodeId, Topology};
/// use pvp_core::PlayerId;
///
/// let placement = NodePlacement::new(&Topology::synthetic("numa:4 core:1 pu:1")?);
/// assert_eq!(placement.node_for_player(PlayerId::new(6)), NodeId::new(2));
/// assert_eq!(placement.node_for_key(7), NodeId::new(3));
/// # Ok::<(), pvp_core::topology::TopologyError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlacement {
    nodes: Vec<NodeId>,
}

impl NodePlacement {
    /// A placement over every node of `topology`.
    pub fn new(topology: &Topology) -> Self {
        Self { nodes: topology.nodes().iter().map(|n| n.id()).collect() }
    }

    /// The node for `key`.
    pub fn node_for_key(&self, key: u64) -> NodeId {
        self.nodes[self.index_for_key(key)]
    }

    /// The node for `player`.
    pub fn node_for_player(&self, player: PlayerId) -> NodeId {
        self.node_for_key(player.get())
    }

    /// The node's position (`0..node_count`) for `key`.
    pub fn index_for_key(&self, key: u64) -> usize {
        (key % self.nodes.len() as u64) as usize
    }

    /// The nodes, in placement order.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }
}

/// Player data sharded by NUMA node: each player's value lives in a [`NodeBox`] on the node
/// [`NodePlacement`] gives the player, in that node's shard (one lock per node), so the thread
/// simulating a node's players touches only local memory and contends only with its own node.
///
/// ```
/// use pvp_core::numa::{NodeShardedStore, NumaAllocator};
/// use pvp_core::topology::{NodeId, Topology};
/// use pvp_core::PlayerId;
///
/// let alloc = NumaAllocator::new(Topology::synthetic("numa:2 core:1 pu:1")?)?;
/// let store = NodeShardedStore::new(alloc);
/// store.insert(PlayerId::new(3), 1500u32)?;
/// assert_eq!(store.node_of(PlayerId::new(3)), NodeId::new(1));
/// store.update(PlayerId::new(3), |mmr| *mmr += 25);
/// assert_eq!(store.get(PlayerId::new(3), |mmr| *mmr), Some(1525));
/// assert_eq!(store.remove(PlayerId::new(3)), Some(1525));
/// assert!(store.is_empty());
/// # Ok::<(), pvp_core::numa::NumaError>(())
/// ```
pub struct NodeShardedStore<V> {
    alloc: NumaAllocator,
    placement: NodePlacement,
    shards: Vec<Mutex<HashMap<PlayerId, NodeBox<V>>>>,
}

impl<V: fmt::Debug> fmt::Debug for NodeShardedStore<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeShardedStore")
            .field("nodes", &self.placement.nodes())
            .field("len", &self.len())
            .finish()
    }
}

impl<V> NodeShardedStore<V> {
    /// An empty store with one shard per node of `alloc`'s topology.
    pub fn new(alloc: NumaAllocator) -> Self {
        let placement = NodePlacement::new(alloc.topology());
        let shards = (0..placement.nodes().len()).map(|_| Mutex::new(HashMap::new())).collect();
        Self { alloc, placement, shards }
    }

    /// The placement the store uses.
    pub fn placement(&self) -> &NodePlacement {
        &self.placement
    }

    /// The node holding `player`'s data (whether or not the player is stored).
    pub fn node_of(&self, player: PlayerId) -> NodeId {
        self.placement.node_for_player(player)
    }

    fn shard(&self, player: PlayerId) -> std::sync::MutexGuard<'_, HashMap<PlayerId, NodeBox<V>>> {
        self.shards[self.placement.index_for_key(player.get())].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `value` for `player` on the player's node; returns the value it replaces. When no
    /// memory is left the value comes back in [`Rejected`] and the store is unchanged.
    pub fn insert(&self, player: PlayerId, value: V) -> Result<Option<V>, Rejected<V>> {
        let boxed = NodeBox::new_on(&self.alloc, self.node_of(player), value)?;
        Ok(self.shard(player).insert(player, boxed).map(NodeBox::into_inner))
    }

    /// Reads `player`'s value through `f`.
    pub fn get<R>(&self, player: PlayerId, f: impl FnOnce(&V) -> R) -> Option<R> {
        self.shard(player).get(&player).map(|b| f(b))
    }

    /// Changes `player`'s value in place through `f`.
    pub fn update<R>(&self, player: PlayerId, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        self.shard(player).get_mut(&player).map(|b| f(b))
    }

    /// Removes and returns `player`'s value.
    pub fn remove(&self, player: PlayerId) -> Option<V> {
        self.shard(player).remove(&player).map(NodeBox::into_inner)
    }

    /// Players stored on `node` (0 for a node the topology lacks).
    pub fn len_on(&self, node: NodeId) -> usize {
        self.placement
            .nodes()
            .iter()
            .position(|&n| n == node)
            .map_or(0, |i| self.shards[i].lock().unwrap_or_else(|e| e.into_inner()).len())
    }

    /// Players stored.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }

    /// Whether no player is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `f` on every player stored on `node`, under that node's lock (for the thread that
    /// simulates the node's players).
    pub fn for_each_on(&self, node: NodeId, mut f: impl FnMut(PlayerId, &mut V)) {
        if let Some(i) = self.placement.nodes().iter().position(|&n| n == node) {
            let mut shard = self.shards[i].lock().unwrap_or_else(|e| e.into_inner());
            for (&id, value) in shard.iter_mut() {
                f(id, value);
            }
        }
    }
}
