//! API-contract audit of the NUMA allocator, its typed containers and the topology, on
//! synthetic multi-node topologies (the build machine has one real node).

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pvp_core::PlayerId;
use pvp_core::numa::{MemPolicy, NodeBox, NodePlacement, NodeShardedStore, NumaAllocator};
use pvp_core::topology::{NodeId, Topology};

fn alloc_with(nodes: usize) -> NumaAllocator {
    NumaAllocator::new(Topology::synthetic(&format!("numa:{nodes} core:1 pu:1")).unwrap()).unwrap()
}

fn fill(p: NonNull<u8>, len: usize, tag: u8) {
    // SAFETY: `p` is a live block of at least `len` bytes owned by the test.
    unsafe { core::ptr::write_bytes(p.as_ptr(), tag, len) };
}

fn check(p: NonNull<u8>, len: usize, tag: u8) -> bool {
    // SAFETY: as in `fill`.
    let s = unsafe { core::slice::from_raw_parts(p.as_ptr(), len) };
    s.iter().all(|&b| b == tag)
}

#[test]
fn every_path_hands_out_disjoint_memory_that_keeps_its_fill() {
    let alloc = alloc_with(3);
    let sizes = [1usize, 8, 24, 64, 200, 4096, 32 * 1024, 40 * 1024, 300 * 1024];
    let mut live: Vec<(NonNull<u8>, Layout, u8)> = Vec::new();
    let mut tag = 1u8;
    for round in 0..4 {
        for &size in &sizes {
            let layout = Layout::from_size_align(size, 8).unwrap();
            let node = NodeId::new((round % 3) as u32);
            let ps = [
                alloc.allocate_local(layout).unwrap(),
                alloc.allocate_on_node(node, layout).unwrap(),
                alloc.allocate_interleaved(layout).unwrap(),
                alloc.allocate_with_policy(layout, MemPolicy::Bind(node)).unwrap(),
                alloc.allocate_with_policy(layout, MemPolicy::Preferred(node)).unwrap(),
                alloc.allocate_with_policy(layout, MemPolicy::Interleave).unwrap(),
            ];
            for p in ps {
                assert_eq!(p.as_ptr() as usize % layout.align(), 0);
                fill(p, size, tag);
                live.push((p, layout, tag));
                tag = tag.wrapping_add(1).max(1);
            }
        }
    }
    for &(p, l, t) in &live {
        assert!(check(p, l.size(), t), "block of {} bytes lost its fill", l.size());
    }
    // Free half, reallocate, and check the survivors still hold their patterns.
    let mut kept = Vec::new();
    for (i, (p, l, t)) in live.into_iter().enumerate() {
        if i % 2 == 0 {
            // SAFETY: allocated by `alloc` with `l`, freed once.
            unsafe { alloc.deallocate(p, l) };
        } else {
            kept.push((p, l, t));
        }
    }
    let mut again = Vec::new();
    for &size in &sizes {
        let layout = Layout::from_size_align(size, 8).unwrap();
        for _ in 0..6 {
            let p = alloc.allocate_local(layout).unwrap();
            fill(p, size, 0);
            again.push((p, layout));
        }
    }
    for &(p, l, t) in &kept {
        assert!(check(p, l.size(), t), "reallocation overwrote a live block of {} bytes", l.size());
    }
    for (p, l, _) in kept {
        // SAFETY: as above.
        unsafe { alloc.deallocate(p, l) };
    }
    for (p, l) in again {
        // SAFETY: as above.
        unsafe { alloc.deallocate(p, l) };
    }
}

#[test]
fn large_block_counters_move_exactly_per_node_and_back() {
    let alloc = alloc_with(2);
    let layout = Layout::from_size_align(256 * 1024, 8).unwrap();
    let before = alloc.stats();
    let a = alloc.allocate_on_node(NodeId::new(1), layout).unwrap();
    let b = alloc.allocate_with_policy(layout, MemPolicy::Preferred(NodeId::new(0))).unwrap();
    let c = alloc.allocate_interleaved(layout).unwrap();
    let mid = alloc.stats();
    assert_eq!(mid.nodes.len(), 2);
    assert_eq!(mid.nodes[0].node, Some(NodeId::new(0)));
    assert_eq!(mid.nodes[1].node, Some(NodeId::new(1)));
    assert_eq!(mid.interleaved.node, None);
    assert_eq!(mid.nodes[1].large_allocations, before.nodes[1].large_allocations + 1);
    assert_eq!(mid.nodes[0].large_allocations, before.nodes[0].large_allocations + 1);
    assert_eq!(mid.interleaved.large_allocations, before.interleaved.large_allocations + 1);
    assert!(mid.large_live_bytes >= before.large_live_bytes + 3 * layout.size() as u64);
    assert_eq!(mid.large_frees, before.large_frees);
    for p in [a, b, c] {
        // SAFETY: allocated by `alloc` with `layout`, freed once.
        unsafe { alloc.deallocate(p, layout) };
    }
    let after = alloc.stats();
    assert_eq!(after.large_frees, before.large_frees + 3);
    assert_eq!(after.large_live_bytes, before.large_live_bytes);
    assert_eq!(
        after.policy_fallbacks(),
        after.nodes.iter().map(|n| n.policy_fallbacks).sum::<u64>() + after.interleaved.policy_fallbacks
    );
}

#[test]
fn small_blocks_never_count_as_large() {
    let alloc = alloc_with(2);
    let layout = Layout::from_size_align(32 * 1024, 8).unwrap();
    let p = alloc.allocate_on_node(NodeId::new(1), layout).unwrap();
    let s = alloc.stats();
    assert_eq!(s.nodes[1].large_allocations, 0, "32 KiB is a pool block");
    assert!(s.nodes[1].segments >= 1 && s.nodes[1].refills >= 1);
    assert_eq!(s.nodes[0].segments, 0, "nothing was asked of node 0");
    assert_eq!(s.large_live_bytes, 0);
    // SAFETY: allocated by `alloc` with `layout`, freed once.
    unsafe { alloc.deallocate(p, layout) };
}

#[test]
fn blocks_freed_on_another_thread_return_to_their_own_node() {
    let alloc = alloc_with(2);
    let layout = Layout::from_size_align(96, 16).unwrap();
    const N: usize = 200;
    let a2 = alloc.clone();
    let blocks: Vec<usize> = std::thread::spawn(move || {
        let v: Vec<usize> = (0..N)
            .map(|i| {
                let p = a2.allocate_on_node(NodeId::new(1), layout).unwrap();
                fill(p, layout.size(), (i % 251) as u8 + 1);
                p.as_ptr() as usize
            })
            .collect();
        a2.release_thread_cache();
        v
    })
    .join()
    .unwrap();
    let before = alloc.stats();
    let a3 = alloc.clone();
    std::thread::spawn(move || {
        for (i, &addr) in blocks.iter().enumerate() {
            let p = NonNull::new(addr as *mut u8).unwrap();
            assert!(check(p, layout.size(), (i % 251) as u8 + 1));
            // SAFETY: allocated by a clone of `a3` with `layout`, freed once.
            unsafe { a3.deallocate(p, layout) };
        }
        a3.release_thread_cache();
    })
    .join()
    .unwrap();
    let after = alloc.stats();
    assert_eq!(after.nodes[1].blocks_returned - before.nodes[1].blocks_returned, N as u64);
    assert_eq!(after.nodes[0].blocks_returned, before.nodes[0].blocks_returned, "node 0 got none");
    assert_eq!(after.interleaved.blocks_returned, before.interleaved.blocks_returned);
}

#[test]
fn release_thread_cache_hands_cached_blocks_back_and_allocation_goes_on() {
    let alloc = alloc_with(2);
    let layout = Layout::from_size_align(48, 8).unwrap();
    let ps: Vec<_> = (0..10).map(|_| alloc.allocate_on_node(NodeId::new(0), layout).unwrap()).collect();
    for p in ps {
        // SAFETY: allocated by `alloc` with `layout`, freed once.
        unsafe { alloc.deallocate(p, layout) };
    }
    let before = alloc.stats();
    alloc.release_thread_cache();
    let after = alloc.stats();
    assert!(
        after.nodes[0].blocks_returned >= before.nodes[0].blocks_returned + 10,
        "the ten freed blocks were cached and must go back to node 0"
    );
    alloc.release_thread_cache(); // twice is harmless
    assert_eq!(alloc.stats().nodes[0].blocks_returned, after.nodes[0].blocks_returned);
    let p = alloc.allocate_local(layout).unwrap();
    fill(p, 48, 7);
    assert!(check(p, 48, 7));
    // SAFETY: as above.
    unsafe { alloc.deallocate(p, layout) };
}

#[test]
fn home_node_follows_set_home_node_and_local_allocation_uses_it() {
    let alloc = alloc_with(4);
    let layout = Layout::from_size_align(512 * 1024, 8).unwrap();
    alloc.set_home_node(NodeId::new(3)).unwrap();
    assert_eq!(alloc.home_node(), NodeId::new(3));
    let before = alloc.stats();
    let p = alloc.allocate_local(layout).unwrap();
    let after = alloc.stats();
    assert_eq!(after.nodes[3].large_allocations, before.nodes[3].large_allocations + 1);
    // SAFETY: allocated by `alloc` with `layout`, freed once.
    unsafe { alloc.deallocate(p, layout) };
    let b = NodeBox::new_local(&alloc, 5u64).unwrap();
    assert_eq!(b.node(), NodeId::new(3));
    // The free function reports an OS node; this machine has node 0 only as far as we know.
    let os = pvp_core::numa::current_node();
    assert!(Topology::detect().unwrap().index_of(os).is_ok());
}

#[derive(Debug)]
struct Counted(Arc<AtomicUsize>, u64);
impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn node_box_drops_its_value_exactly_once_on_any_thread() {
    let alloc = alloc_with(2);
    let drops = Arc::new(AtomicUsize::new(0));
    let boxes: Vec<_> = (0..50)
        .map(|i| NodeBox::new_on(&alloc, NodeId::new(i % 2), Counted(drops.clone(), u64::from(i))).unwrap())
        .collect();
    for (i, b) in boxes.iter().enumerate() {
        assert_eq!(b.1, i as u64);
        assert_eq!(b.node(), NodeId::new((i % 2) as u32));
    }
    let mut boxes = boxes;
    let taken = NodeBox::into_inner(boxes.pop().unwrap());
    assert_eq!(drops.load(Ordering::SeqCst), 0, "into_inner must not drop the value");
    drop(taken);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    std::thread::spawn(move || drop(boxes)).join().unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 50);
    // A rejected value comes back alive, not dropped.
    let r = NodeBox::new_on(&alloc, NodeId::new(9), Counted(drops.clone(), 99)).unwrap_err();
    assert_eq!(drops.load(Ordering::SeqCst), 50);
    assert_eq!(r.into_value().1, 99);
    assert_eq!(drops.load(Ordering::SeqCst), 51);
}

#[test]
fn placement_is_key_modulo_node_count_over_topology_order() {
    let topo = Topology::synthetic("numa:3 core:2 pu:1").unwrap();
    let p = NodePlacement::new(&topo);
    let ids: Vec<NodeId> = topo.nodes().iter().map(|n| n.id()).collect();
    assert_eq!(p.nodes(), &ids[..]);
    for key in [0u64, 1, 2, 3, 4, 5, 1000, u64::MAX, u64::MAX - 1] {
        let i = (key % 3) as usize;
        assert_eq!(p.index_for_key(key), i);
        assert_eq!(p.node_for_key(key), ids[i]);
        assert_eq!(p.node_for_player(PlayerId::new(key)), ids[i]);
    }
}

#[test]
fn sharded_store_routes_every_key_and_loses_nothing_under_threads() {
    let alloc = alloc_with(4);
    let store = Arc::new(NodeShardedStore::new(alloc));
    const PER: u64 = 250;
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let s = store.clone();
            std::thread::spawn(move || {
                for k in t * PER..(t + 1) * PER {
                    assert!(s.insert(PlayerId::new(k), k * 3).unwrap().is_none());
                    s.update(PlayerId::new(k), |v| *v += 1);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(store.len(), (4 * PER) as usize);
    for n in 0..4u32 {
        let node = NodeId::new(n);
        assert_eq!(store.len_on(node), PER as usize);
        let mut seen = 0;
        store.for_each_on(node, |id, v| {
            assert_eq!(store.placement().node_for_player(id), node);
            assert_eq!(*v, id.get() * 3 + 1);
            seen += 1;
        });
        assert_eq!(seen, PER as usize);
    }
    assert_eq!(store.len_on(NodeId::new(17)), 0);
    let mut visited = false;
    store.for_each_on(NodeId::new(17), |_, _| visited = true);
    assert!(!visited);
    for k in 0..4 * PER {
        assert_eq!(store.node_of(PlayerId::new(k)), NodeId::new((k % 4) as u32));
        assert_eq!(store.get(PlayerId::new(k), |v| *v), Some(k * 3 + 1));
    }
    assert_eq!(store.insert(PlayerId::new(5), 0).unwrap(), Some(16), "insert returns the replaced value");
    assert_eq!(store.len(), (4 * PER) as usize);
    for k in 0..4 * PER {
        assert!(store.remove(PlayerId::new(k)).is_some());
    }
    assert!(store.is_empty());
    assert_eq!(store.remove(PlayerId::new(1)), None);
    assert_eq!(store.update(PlayerId::new(1), |v| *v), None);
}

#[test]
fn store_values_are_dropped_once_on_replace_remove_and_store_drop() {
    let drops = Arc::new(AtomicUsize::new(0));
    let store = NodeShardedStore::new(alloc_with(2));
    for k in 0..10 {
        store.insert(PlayerId::new(k), Counted(drops.clone(), k)).unwrap();
    }
    let old = store.insert(PlayerId::new(3), Counted(drops.clone(), 33)).unwrap().unwrap();
    assert_eq!(old.1, 3);
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(old);
    drop(store.remove(PlayerId::new(4)));
    assert_eq!(drops.load(Ordering::SeqCst), 2);
    drop(store);
    assert_eq!(drops.load(Ordering::SeqCst), 11);
}

#[test]
fn synthetic_topology_cpus_partition_over_nodes() {
    let t = Topology::synthetic("pack:2 [numa] core:3 pu:2").unwrap();
    assert_eq!(t.node_count(), 2);
    assert_eq!(t.pu_count(), 12);
    let mut all = Vec::new();
    for (i, n) in t.nodes().iter().enumerate() {
        assert_eq!(t.index_of(n.id()).unwrap(), i);
        assert_eq!(t.node(n.id()).unwrap().cpus(), n.cpus());
        for &c in n.cpus() {
            assert_eq!(t.node_of_cpu(c), Some(n.id()));
            all.push(c);
        }
    }
    all.sort_unstable();
    assert_eq!(all, (0..12).collect::<Vec<_>>());
    assert_eq!(t.node_of_cpu(12), None);
    let s = Topology::single_node([3, 1, 3]);
    assert_eq!(s.nodes()[0].cpus(), &[1, 3]);
    assert_eq!(s.current_node(), NodeId::new(0));
}

#[test]
fn a_fifth_allocator_on_a_thread_hands_the_oldest_cache_back() {
    std::thread::spawn(|| {
        let allocs: Vec<NumaAllocator> = (0..5).map(|_| alloc_with(2)).collect();
        let layout = Layout::from_size_align(64, 8).unwrap();
        // Touch the first four: each gets a cache slot on this thread holding freed blocks.
        for a in &allocs[..4] {
            let ps: Vec<_> = (0..8).map(|_| a.allocate_on_node(NodeId::new(1), layout).unwrap()).collect();
            for p in ps {
                // SAFETY: allocated by `a` with `layout`, freed once.
                unsafe { a.deallocate(p, layout) };
            }
        }
        let oldest_before = allocs[0].stats().nodes[1].blocks_returned;
        let newest_before: Vec<u64> =
            allocs[1..4].iter().map(|a| a.stats().nodes[1].blocks_returned).collect();
        let p = allocs[4].allocate_on_node(NodeId::new(1), layout).unwrap();
        assert!(
            allocs[0].stats().nodes[1].blocks_returned >= oldest_before + 8,
            "the oldest allocator's cached blocks go back when a fifth is used"
        );
        let newest_after: Vec<u64> =
            allocs[1..4].iter().map(|a| a.stats().nodes[1].blocks_returned).collect();
        assert_eq!(newest_before, newest_after, "the three newer caches stay");
        // The evicted allocator still works and attaches a cache again.
        let q = allocs[0].allocate_local(layout).unwrap();
        fill(q, 64, 3);
        assert!(check(q, 64, 3));
        // SAFETY: as above.
        unsafe {
            allocs[0].deallocate(q, layout);
            allocs[4].deallocate(p, layout);
        }
    })
    .join()
    .unwrap();
}

#[test]
fn over_aligned_blocks_are_aligned_and_disjoint() {
    let alloc = alloc_with(2);
    let mut live = Vec::new();
    for (i, align) in [32usize, 64, 256, 4096, 8192].into_iter().enumerate() {
        for size in [1usize, align, 3 * align, 40 * 1024] {
            let layout = Layout::from_size_align(size, align).unwrap();
            for p in [
                alloc.allocate_on_node(NodeId::new(1), layout).unwrap(),
                alloc.allocate_interleaved(layout).unwrap(),
            ] {
                assert_eq!(p.as_ptr() as usize % align, 0, "align {align} size {size}");
                let tag = (live.len() % 250) as u8 + 1 + i as u8;
                fill(p, size, tag);
                live.push((p, layout, tag));
            }
        }
    }
    for &(p, l, t) in &live {
        assert!(check(p, l.size(), t));
    }
    for (p, l, _) in live {
        // SAFETY: allocated by `alloc` with `l`, freed once.
        unsafe { alloc.deallocate(p, l) };
    }
    assert_eq!(alloc.stats().large_live_bytes, 0);
}

#[test]
fn zero_sized_node_boxes_drop_their_value_once_and_keep_the_node() {
    #[derive(Debug)]
    struct Zst;
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    impl Drop for Zst {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::SeqCst);
        }
    }
    let alloc = alloc_with(2);
    let before = alloc.stats();
    let b = NodeBox::new_on(&alloc, NodeId::new(1), Zst).unwrap();
    assert_eq!(b.node(), NodeId::new(1));
    drop(b);
    assert_eq!(DROPS.load(Ordering::SeqCst), 1);
    let c = NodeBox::new_on(&alloc, NodeId::new(0), Zst).unwrap();
    let z = NodeBox::into_inner(c);
    assert_eq!(DROPS.load(Ordering::SeqCst), 1);
    drop(z);
    assert_eq!(DROPS.load(Ordering::SeqCst), 2);
    assert_eq!(alloc.stats(), before, "zero-sized values take no memory");
}

#[test]
fn release_thread_cache_and_home_node() {
    std::thread::spawn(|| {
        let alloc = alloc_with(4);
        let default_home = alloc.home_node();
        alloc.set_home_node(NodeId::new(3)).unwrap();
        assert_eq!(alloc.home_node(), NodeId::new(3));
        alloc.release_thread_cache();
        assert_eq!(alloc.home_node(), default_home, "documented: releasing the cache forgets the home node");
        alloc.set_home_node(NodeId::new(2)).unwrap();
        assert_eq!(alloc.home_node(), NodeId::new(2), "and it can be set again");
    })
    .join()
    .unwrap();
}

#[test]
fn small_blocks_come_from_the_pool_the_policy_names() {
    let layout = Layout::from_size_align(128, 8).unwrap();
    let cases: [(MemPolicy, Option<usize>); 3] = [
        (MemPolicy::Interleave, None),
        (MemPolicy::Preferred(NodeId::new(1)), Some(1)),
        (MemPolicy::Bind(NodeId::new(2)), Some(2)),
    ];
    for (policy, pool) in cases {
        let alloc = alloc_with(3);
        let p = alloc.allocate_with_policy(layout, policy).unwrap();
        let s = alloc.stats();
        for (i, n) in s.nodes.iter().enumerate() {
            let expect = pool == Some(i);
            assert_eq!(n.segments >= 1, expect, "{policy:?}: node {i} segments {}", n.segments);
            assert_eq!(n.refills >= 1, expect, "{policy:?}: node {i} refills {}", n.refills);
            assert_eq!(n.large_allocations, 0);
        }
        assert_eq!(s.interleaved.segments >= 1, pool.is_none(), "{policy:?}");
        // SAFETY: allocated by `alloc` with `layout`, freed once.
        unsafe { alloc.deallocate(p, layout) };
    }
}

#[test]
fn a_failed_bind_changes_nothing() {
    std::thread::spawn(|| {
        // Node 1's CPUs (64..128) do not exist on the build machine, so pinning fails.
        let alloc = NumaAllocator::new(Topology::synthetic("numa:2 core:64 pu:1").unwrap()).unwrap();
        if std::thread::available_parallelism().map_or(0, |n| n.get()) > 64 {
            eprintln!("note: machine has more than 64 CPUs; skipping the failed-bind check");
            return;
        }
        alloc.set_home_node(NodeId::new(0)).unwrap();
        assert!(alloc.bind_thread_to_node(NodeId::new(1)).is_err());
        assert_eq!(alloc.home_node(), NodeId::new(0), "on error the home node stays");
        let bad = NodeId::new(1000);
        match pvp_core::numa::bind_thread_to_node(bad) {
            Err(pvp_core::numa::NumaError::NoSuchNode { node, count }) => {
                assert_eq!(node, bad);
                assert_eq!(count, Topology::detect().unwrap().node_count());
            }
            other => panic!("expected NoSuchNode, got {other:?}"),
        }
    })
    .join()
    .unwrap();
}
