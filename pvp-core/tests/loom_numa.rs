//! Loom models of the NUMA allocator's cross-thread free path: blocks freed on other threads
//! travel back to their pool through `RemoteFreeList` (CAS pushes of whole chains, one `swap`
//! that takes everything). Run with
//! `RUSTFLAGS="--cfg pvp_loom" cargo test --release -p pvp-core --test loom_numa`.
#![cfg(pvp_loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicPtr, Ordering};
use loom::thread;
use pvp_core::numa::remote::{FreeLink, RemoteFreeList};

/// A freed block: its link plus the bytes its last user wrote.
struct Block {
    next: AtomicPtr<Block>,
    payload: UnsafeCell<u64>,
}

impl FreeLink for Block {
    fn link(&self) -> &AtomicPtr<Self> {
        &self.next
    }
}

fn block(v: u64) -> *mut Block {
    Box::into_raw(Box::new(Block { next: AtomicPtr::new(std::ptr::null_mut()), payload: UnsafeCell::new(v) }))
}

/// Frees `values` as one chain (what a thread cache does when its list is full).
fn free_chain(list: &RemoteFreeList<Block>, values: &[u64]) {
    let blocks: Vec<*mut Block> = values.iter().map(|&v| block(v)).collect();
    for pair in blocks.windows(2) {
        // SAFETY: the blocks are ours until pushed.
        unsafe { (*pair[0]).next.store(pair[1], Ordering::Relaxed) };
    }
    for &b in &blocks {
        // The last user's write, which the owner must see after taking the block.
        // SAFETY: the block is ours until pushed.
        unsafe { (*b).payload.with_mut(|p| *p += 1000) };
    }
    // SAFETY: a chain of blocks we own and give up.
    unsafe { list.push_chain(blocks[0], *blocks.last().unwrap()) };
}

/// Takes everything and reads each block (what a refill does); returns the payloads.
fn drain(list: &RemoteFreeList<Block>) -> Vec<u64> {
    let mut out = Vec::new();
    let mut b = list.take_all();
    while !b.is_null() {
        // SAFETY: take_all handed the chain to us alone.
        unsafe {
            out.push((*b).payload.with(|p| *p));
            let next = (*b).next.load(Ordering::Relaxed);
            drop(Box::from_raw(b));
            b = next;
        }
    }
    out
}

#[test]
fn two_freeing_threads_and_the_owner_lose_nothing() {
    loom::model(|| {
        let list = Arc::new(RemoteFreeList::<Block>::new());
        let a = {
            let list = list.clone();
            thread::spawn(move || free_chain(&list, &[1, 2]))
        };
        let b = {
            let list = list.clone();
            thread::spawn(move || free_chain(&list, &[3]))
        };
        // The owner refills while the others free.
        let mut seen = drain(&list);
        a.join().unwrap();
        b.join().unwrap();
        seen.extend(drain(&list));
        seen.sort_unstable();
        assert_eq!(seen, vec![1001, 1002, 1003]);
    });
}

#[test]
fn two_takers_split_chains_without_sharing_a_block() {
    loom::model(|| {
        let list = Arc::new(RemoteFreeList::<Block>::new());
        let pusher = {
            let list = list.clone();
            thread::spawn(move || {
                free_chain(&list, &[1]);
                free_chain(&list, &[2, 3]);
            })
        };
        let taker = {
            let list = list.clone();
            thread::spawn(move || drain(&list))
        };
        let mut seen = drain(&list);
        pusher.join().unwrap();
        seen.extend(taker.join().unwrap());
        seen.extend(drain(&list));
        seen.sort_unstable();
        assert_eq!(seen, vec![1001, 1002, 1003]);
    });
}
