//! The lock-free list through which freed blocks travel back to the pool that owns them.
//!
//! Any thread may push (one block or a whole chain) with a CAS on the head; the owner empties
//! the list in one `swap`. Neither operation ever reads a node it does not own yet, so the list
//! has no ABA problem and needs no hazard pointers or epochs: a pushed chain belongs to the
//! list until a `take_all` hands the whole of it to exactly one taker.
//!
//! `tests/loom_numa.rs` model-checks these two operations under `--cfg pvp_loom`.

use crate::primitive::sync::atomic::{AtomicPtr, Ordering};

/// A node that can sit in a [`RemoteFreeList`]: it owns the link to the next node.
pub trait FreeLink: Sized {
    /// The node's link to the next node of its chain.
    fn link(&self) -> &AtomicPtr<Self>;
}

/// A multi-producer list that its owner drains all at once (mimalloc's "thread free" list).
#[derive(Debug)]
pub struct RemoteFreeList<N> {
    head: AtomicPtr<N>,
}

// SAFETY: the list only holds raw pointers and hands each chain to exactly one taker.
unsafe impl<N> Send for RemoteFreeList<N> {}
// SAFETY: all shared access goes through the atomic head.
unsafe impl<N> Sync for RemoteFreeList<N> {}

impl<N: FreeLink> RemoteFreeList<N> {
    /// An empty list.
    #[cfg(not(pvp_loom))]
    pub const fn new() -> Self {
        Self { head: AtomicPtr::new(core::ptr::null_mut()) }
    }

    /// An empty list.
    #[cfg(pvp_loom)]
    pub fn new() -> Self {
        Self { head: AtomicPtr::new(core::ptr::null_mut()) }
    }

    /// Pushes the chain `first ..= last` (linked through [`FreeLink::link`]; `last`'s link is
    /// overwritten).
    ///
    /// # Safety
    /// `first` reaches `last` through the links; the caller owns every node of the chain and
    /// gives them up: nothing else may touch them until a [`RemoteFreeList::take_all`] returns
    /// them.
    pub unsafe fn push_chain(&self, first: *mut N, last: *mut N) {
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: the caller owns `last` until the CAS below publishes it.
            unsafe { (*last).link().store(head, Ordering::Relaxed) };
            // Release: the chain's contents (and links) are visible to whoever takes it.
            match self.head.compare_exchange_weak(head, first, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => head = actual,
            }
        }
    }

    /// Takes every node pushed so far, as a chain ending in null (null when empty).
    pub fn take_all(&self) -> *mut N {
        if self.head.load(Ordering::Relaxed).is_null() {
            return core::ptr::null_mut();
        }
        // Acquire pairs with the Release of every push in the chain.
        self.head.swap(core::ptr::null_mut(), Ordering::Acquire)
    }
}

impl<N: FreeLink> Default for RemoteFreeList<N> {
    fn default() -> Self {
        Self::new()
    }
}
