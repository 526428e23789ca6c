//! The NUMA allocator through its public API: placement read back from the kernel, typed
//! errors, cross-thread frees, node-local containers.

use core::alloc::Layout;
use std::collections::HashSet;
use std::sync::mpsc;

use pvp_core::PlayerId;
use pvp_core::numa::{
    MemPolicy, NodeBox, NodePlacement, NodeShardedStore, NumaAllocator, NumaError, page_node, page_nodes,
};
use pvp_core::topology::{NodeId, Topology, TopologyError};

fn real() -> NumaAllocator {
    NumaAllocator::detect().expect("allocator for this machine")
}

fn synthetic(nodes: usize) -> NumaAllocator {
    let topo = Topology::synthetic(&format!("pack:{nodes} [numa] core:2 pu:1")).unwrap();
    NumaAllocator::new(topo).unwrap()
}

/// The node the kernel reports for `p`, or `None` where the kernel will not say (seccomp).
fn kernel_node(p: *const u8) -> Option<NodeId> {
    match page_node(p) {
        Ok(n) => Some(n),
        Err(NumaError::PageQuery(e)) => {
            eprintln!("get_mempolicy refused ({e}); placement not checked");
            None
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn fill_and_check(p: *mut u8, len: usize, seed: u8) {
    // SAFETY: the test owns `len` bytes at `p`.
    unsafe {
        for i in 0..len {
            p.add(i).write(seed.wrapping_add(i as u8));
        }
        for i in 0..len {
            assert_eq!(p.add(i).read(), seed.wrapping_add(i as u8));
        }
    }
}

#[test]
fn local_allocations_are_aligned_usable_and_on_the_machines_node() {
    let alloc = real();
    let machine_nodes: Vec<NodeId> = alloc.topology().nodes().iter().map(|n| n.id()).collect();
    let mut live = Vec::new();
    for (size, align) in [
        (1, 1),
        (8, 8),
        (24, 8),
        (100, 4),
        (256, 16),
        (48, 64),
        (4000, 4096),
        (32 * 1024, 8),
        (40 * 1024, 8),
        (3 << 20, 1 << 16),
    ] {
        let layout = Layout::from_size_align(size, align).unwrap();
        let p = alloc.allocate_local(layout).unwrap();
        assert_eq!(p.as_ptr() as usize % align, 0, "size {size} align {align}");
        fill_and_check(p.as_ptr(), size, size as u8);
        if let Some(node) = kernel_node(p.as_ptr()) {
            assert!(machine_nodes.contains(&node));
            if machine_nodes.len() == 1 {
                assert_eq!(node, NodeId::new(0));
            }
        }
        live.push((p, layout));
    }
    let addrs: HashSet<usize> = live.iter().map(|(p, _)| p.as_ptr() as usize).collect();
    assert_eq!(addrs.len(), live.len(), "two live blocks share an address");
    for (p, layout) in live {
        // SAFETY: allocated above with this layout.
        unsafe { alloc.deallocate(p, layout) };
    }
    assert_eq!(alloc.stats().large_live_bytes, 0);
}

#[test]
fn every_node_of_the_machine_gets_its_own_pages() {
    let alloc = real();
    let nodes: Vec<NodeId> = alloc.topology().nodes().iter().map(|n| n.id()).collect();
    for &node in &nodes {
        for layout in
            [Layout::from_size_align(64, 8).unwrap(), Layout::from_size_align(2 << 20, 4096).unwrap()]
        {
            let p = alloc.allocate_on_node(node, layout).unwrap();
            fill_and_check(p.as_ptr(), layout.size(), 7);
            let pages: Vec<*const u8> = (0..layout.size())
                .step_by(4096)
                .map(|off| p.as_ptr().wrapping_add(off).cast_const())
                .collect();
            let fallbacks = alloc.stats().policy_fallbacks();
            if let Ok(found) = page_nodes(&pages) {
                for f in found {
                    // Placement holds unless the kernel refused the policy (counted).
                    if fallbacks == 0 {
                        assert_eq!(f.unwrap(), node);
                    }
                }
            }
            if let (Some(kn), 0) = (kernel_node(p.as_ptr()), fallbacks) {
                assert_eq!(kn, node);
            }
            // SAFETY: allocated above with this layout.
            unsafe { alloc.deallocate(p, layout) };
        }
    }
}

#[test]
fn unknown_nodes_are_typed_errors() {
    let alloc = synthetic(2);
    let layout = Layout::new::<u64>();
    for bad in [NodeId::new(2), NodeId::new(1000)] {
        match alloc.allocate_on_node(bad, layout) {
            Err(NumaError::NoSuchNode { node, count }) => {
                assert_eq!((node, count), (bad, 2));
            }
            other => panic!("expected NoSuchNode, got {other:?}"),
        }
        assert!(matches!(
            alloc.allocate_with_policy(layout, MemPolicy::Preferred(bad)),
            Err(NumaError::NoSuchNode { .. })
        ));
        assert!(matches!(alloc.bind_thread_to_node(bad), Err(NumaError::NoSuchNode { .. })));
        assert!(alloc.set_home_node(bad).is_err());
        let rejected = NodeBox::new_on(&alloc, bad, String::from("kept")).unwrap_err();
        assert!(matches!(rejected.error(), NumaError::NoSuchNode { .. }));
        assert_eq!(rejected.into_value(), "kept");
    }
    assert!(matches!(alloc.topology().node(NodeId::new(9)), Err(TopologyError::NoSuchNode { .. })));
}

#[test]
fn synthetic_nodes_get_separate_pools_and_refused_policies_are_counted() {
    let alloc = synthetic(4);
    let layout = Layout::from_size_align(200, 8).unwrap();
    let mut blocks = Vec::new();
    for n in 0..4 {
        let p = alloc.allocate_on_node(NodeId::new(n), layout).unwrap();
        fill_and_check(p.as_ptr(), 200, n as u8);
        blocks.push(p);
    }
    let stats = alloc.stats();
    for n in 0..4 {
        assert_eq!(stats.nodes[n].node, Some(NodeId::new(n as u32)));
        assert_eq!(stats.nodes[n].segments, 1, "node {n}");
    }
    let kernel_nodes = Topology::detect().unwrap().node_count();
    // Nodes this machine lacks: the kernel refuses the policy, plain pages are used.
    let missing = 4usize.saturating_sub(kernel_nodes) as u64;
    let refused: u64 = stats.nodes.iter().map(|n| n.policy_fallbacks).sum();
    assert!(refused >= missing, "refused {refused}, missing {missing}");
    // Blocks of different nodes never share a segment.
    let segments: HashSet<usize> = blocks.iter().map(|p| p.as_ptr() as usize >> 20).collect();
    assert_eq!(segments.len(), 4);
    for p in blocks {
        // SAFETY: allocated above with this layout.
        unsafe { alloc.deallocate(p, layout) };
    }
}

#[test]
fn home_node_drives_local_allocation() {
    let alloc = synthetic(4);
    alloc.set_home_node(NodeId::new(2)).unwrap();
    assert_eq!(alloc.home_node(), NodeId::new(2));
    let layout = Layout::new::<[u8; 96]>();
    let p = alloc.allocate_local(layout).unwrap();
    let stats = alloc.stats();
    assert_eq!(stats.nodes[2].segments, 1);
    assert_eq!(
        stats.nodes.iter().enumerate().filter(|&(i, _)| i != 2).map(|(_, n)| n.segments).sum::<u64>(),
        0
    );
    // SAFETY: allocated above with this layout.
    unsafe { alloc.deallocate(p, layout) };
}

#[test]
fn bind_thread_to_a_real_node() {
    let alloc = real();
    let node = alloc.topology().nodes()[0].id();
    std::thread::scope(|s| {
        s.spawn(|| {
            match alloc.bind_thread_to_node(node) {
                Ok(()) => {
                    assert_eq!(alloc.current_node(), node);
                    assert_eq!(alloc.home_node(), node);
                }
                // Containers may forbid changing affinity; that must be a typed error.
                Err(NumaError::Topology(TopologyError::Affinity { .. })) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        });
    });
}

#[test]
fn free_functions_for_the_running_machine() {
    let topo = Topology::detect().unwrap();
    let here = pvp_core::numa::current_node();
    assert!(topo.node(here).is_ok());
    assert!(matches!(
        pvp_core::numa::bind_thread_to_node(NodeId::new(999)),
        Err(NumaError::NoSuchNode { .. })
    ));
    let node0 = topo.nodes()[0].id();
    std::thread::scope(|s| {
        s.spawn(|| match pvp_core::numa::bind_thread_to_node(node0) {
            Ok(()) => assert_eq!(pvp_core::numa::current_node(), node0),
            Err(NumaError::Topology(TopologyError::Affinity { .. })) => {}
            Err(e) => panic!("unexpected {e}"),
        });
    });
}

#[test]
fn interleaved_memory_is_usable_and_separate() {
    let alloc = synthetic(2);
    let small = Layout::new::<[u64; 8]>();
    let big = Layout::from_size_align(1 << 20, 4096).unwrap();
    let a = alloc.allocate_interleaved(small).unwrap();
    let b = alloc.allocate_with_policy(big, MemPolicy::Interleave).unwrap();
    fill_and_check(a.as_ptr(), small.size(), 1);
    fill_and_check(b.as_ptr(), big.size(), 2);
    let stats = alloc.stats();
    assert_eq!(stats.interleaved.node, None);
    assert_eq!(stats.interleaved.segments, 1);
    assert_eq!(stats.interleaved.large_allocations, 1);
    assert!(stats.large_live_bytes >= big.size() as u64);
    // SAFETY: allocated above with these layouts.
    unsafe {
        alloc.deallocate(a, small);
        alloc.deallocate(b, big);
    }
    assert_eq!(alloc.stats().large_live_bytes, 0);
    assert_eq!(alloc.stats().large_frees, 1);
}

#[test]
fn impossible_sizes_are_typed_errors() {
    let alloc = real();
    let layout = Layout::from_size_align(1 << 60, 8).unwrap();
    assert!(matches!(
        alloc.allocate_local(layout),
        Err(NumaError::OutOfMemory { size }) if size == 1 << 60
    ));
    assert!(matches!(alloc.allocate_interleaved(layout), Err(NumaError::OutOfMemory { .. })));
    assert_eq!(alloc.stats().large_live_bytes, 0);
}

#[test]
fn nodes_beyond_the_thread_cache_work_across_threads() {
    // Eight nodes: a thread caches four per allocator; the rest take the uncached path.
    let alloc = NumaAllocator::new(Topology::synthetic("numa:8 core:1 pu:1").unwrap()).unwrap();
    let layout = Layout::new::<[u64; 3]>();
    let blocks: Vec<SendPtr> = (0..8u32)
        .flat_map(|n| (0..50).map(move |_| n))
        .map(|n| SendPtr(alloc.allocate_on_node(NodeId::new(n), layout).unwrap().as_ptr()))
        .collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            for SendPtr(p) in blocks {
                // SAFETY: each block allocated above with `layout`, freed once.
                unsafe { alloc.deallocate(core::ptr::NonNull::new(p).unwrap(), layout) };
            }
            alloc.release_thread_cache();
        });
    });
    let stats = alloc.stats();
    for n in 0..8 {
        assert_eq!(stats.nodes[n].blocks_returned, 50, "node {n}");
        assert_eq!(stats.nodes[n].segments, 1, "node {n}");
    }
    alloc.set_home_node(NodeId::new(7)).unwrap();
    let p = alloc.allocate_local(layout).unwrap();
    assert_eq!(alloc.stats().nodes[7].segments, 1, "reused, not a new segment");
    // SAFETY: allocated just above.
    unsafe { alloc.deallocate(p, layout) };
}

#[test]
fn zero_sized_requests_need_no_memory() {
    let alloc = real();
    let layout = Layout::from_size_align(0, 8).unwrap();
    let p = alloc.allocate_local(layout).unwrap();
    assert_eq!(p.as_ptr() as usize % 8, 0);
    // SAFETY: a zero-sized block from this allocator.
    unsafe { alloc.deallocate(p, layout) };
    let b = NodeBox::new_local(&alloc, ()).unwrap();
    drop(b);
    assert_eq!(alloc.stats().nodes[0].segments, 0);
}

struct SendPtr(*mut u8);
// SAFETY: the test hands each block to exactly one other thread.
unsafe impl Send for SendPtr {}

#[test]
fn blocks_freed_on_another_thread_go_back_to_their_own_node() {
    let alloc = synthetic(2);
    let layout = Layout::from_size_align(64, 8).unwrap();
    const N: usize = 300;
    let (tx, rx) = mpsc::channel::<SendPtr>();
    let sent: HashSet<usize> = std::thread::scope(|s| {
        let producer = s.spawn(|| {
            let mut sent = HashSet::new();
            for i in 0..N {
                let p = alloc.allocate_on_node(NodeId::new(1), layout).unwrap();
                fill_and_check(p.as_ptr(), 64, i as u8);
                sent.insert(p.as_ptr() as usize);
                tx.send(SendPtr(p.as_ptr())).unwrap();
            }
            drop(tx);
            sent
        });
        s.spawn(|| {
            for SendPtr(p) in rx {
                // SAFETY: each block arrives once, allocated with `layout`.
                unsafe { alloc.deallocate(core::ptr::NonNull::new(p).unwrap(), layout) };
            }
            alloc.release_thread_cache();
        });
        producer.join().unwrap()
    });
    let stats = alloc.stats();
    assert!(stats.nodes[1].blocks_returned >= N as u64, "node 1 got {} back", stats.nodes[1].blocks_returned);
    assert_eq!(stats.nodes[0].blocks_returned, 0);
    assert_eq!(stats.nodes[0].segments, 0);
    // A third thread allocating as many blocks on node 1 is served from the memory already
    // there (the returned blocks, and whatever the producer's cache had left), not new memory.
    // Which blocks come first depends on whether the producer's cache or the consumer's frees
    // reached the pool last, so the check is on memory, not on particular addresses.
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut again = Vec::with_capacity(N);
            for _ in 0..N {
                again.push(alloc.allocate_on_node(NodeId::new(1), layout).unwrap());
            }
            let distinct: HashSet<usize> = again.iter().map(|p| p.as_ptr() as usize).collect();
            assert_eq!(distinct.len(), N);
            for p in again {
                // SAFETY: allocated just above with `layout`.
                unsafe { alloc.deallocate(p, layout) };
            }
        });
    });
    assert_eq!(sent.len(), N);
    assert_eq!(alloc.stats().nodes[1].segments, 1);
}

#[test]
fn many_threads_many_sizes_keep_their_contents() {
    let alloc = synthetic(2);
    let threads = 4;
    let rounds = 2_000;
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..threads).map(|_| mpsc::channel::<(SendPtr, usize, u8)>()).unzip();
    std::thread::scope(|s| {
        for (t, rx) in rxs.into_iter().enumerate() {
            let txs = txs.clone();
            let alloc = &alloc;
            s.spawn(move || {
                alloc.set_home_node(NodeId::new((t % 2) as u32)).unwrap();
                for i in 0..rounds {
                    let size = 8 + (i * 37 + t * 11) % 3000;
                    let layout = Layout::from_size_align(size, 8).unwrap();
                    let p = alloc.allocate_local(layout).unwrap();
                    let tag = (i + t) as u8;
                    // SAFETY: fresh block of `size` bytes.
                    unsafe { core::ptr::write_bytes(p.as_ptr(), tag, size) };
                    txs[(t + i) % threads].send((SendPtr(p.as_ptr()), size, tag)).unwrap();
                }
                drop(txs);
                for (SendPtr(p), size, tag) in rx {
                    // SAFETY: each block arrives once, allocated with this size and align 8.
                    unsafe {
                        assert!((0..size).all(|k| p.add(k).read() == tag));
                        alloc.deallocate(
                            core::ptr::NonNull::new(p).unwrap(),
                            Layout::from_size_align(size, 8).unwrap(),
                        );
                    }
                }
            });
        }
        drop(txs);
    });
}

#[test]
fn more_allocators_than_cache_slots_on_one_thread() {
    let allocs: Vec<NumaAllocator> = (0..7).map(|_| synthetic(2)).collect();
    let layout = Layout::new::<[u32; 10]>();
    for round in 0..3 {
        for (i, a) in allocs.iter().enumerate() {
            let p = a.allocate_on_node(NodeId::new((i % 2) as u32), layout).unwrap();
            fill_and_check(p.as_ptr(), layout.size(), (round + i) as u8);
            // SAFETY: allocated just above.
            unsafe { a.deallocate(p, layout) };
        }
    }
    for a in &allocs {
        a.release_thread_cache();
    }
}

#[test]
fn node_boxes_live_on_their_node() {
    let alloc = real();
    let node = alloc.topology().nodes()[0].id();
    let b = NodeBox::new_on(&alloc, node, [7u64; 512]).unwrap();
    assert_eq!(b.node(), node);
    assert_eq!(b.iter().sum::<u64>(), 7 * 512);
    if let (Some(kn), 0) = (kernel_node((&*b as *const [u64; 512]).cast()), alloc.stats().policy_fallbacks())
    {
        assert_eq!(kn, node);
    }
    let moved = std::thread::scope(|s| s.spawn(move || NodeBox::into_inner(b)).join().unwrap());
    assert_eq!(moved[511], 7);
}

#[test]
fn sharded_store_places_players_by_node() {
    let alloc = synthetic(4);
    let store = NodeShardedStore::new(alloc.clone());
    let placement = NodePlacement::new(alloc.topology());
    for id in 0..100u64 {
        assert_eq!(store.insert(PlayerId::new(id), id * 10).unwrap(), None);
    }
    assert_eq!(store.insert(PlayerId::new(5), 1).unwrap(), Some(50));
    assert_eq!(store.len(), 100);
    for n in 0..4u32 {
        assert_eq!(store.len_on(NodeId::new(n)), 25);
        let mut seen = 0;
        store.for_each_on(NodeId::new(n), |id, v| {
            assert_eq!(placement.node_for_player(id), NodeId::new(n));
            *v += 1;
            seen += 1;
        });
        assert_eq!(seen, 25);
    }
    assert_eq!(store.len_on(NodeId::new(9)), 0);
    assert_eq!(store.get(PlayerId::new(7), |v| *v), Some(71));
    assert_eq!(store.update(PlayerId::new(7), |v| std::mem::replace(v, 0)), Some(71));
    assert_eq!(store.remove(PlayerId::new(7)), Some(0));
    assert_eq!(store.remove(PlayerId::new(7)), None);
    assert_eq!(store.get(PlayerId::new(1000), |v| *v), None);
    let stats = alloc.stats();
    assert!(stats.nodes.iter().all(|n| n.segments == 1));
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "double free")]
fn double_free_is_caught_in_debug_builds() {
    let alloc = real();
    let layout = Layout::new::<u64>();
    let p = alloc.allocate_local(layout).unwrap();
    // SAFETY: deliberately wrong: the second call must panic before touching any state.
    unsafe {
        alloc.deallocate(p, layout);
        alloc.deallocate(p, layout);
    }
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "pvp-core numa")]
fn foreign_pointers_are_caught_in_debug_builds() {
    let alloc = real();
    let layout = Layout::new::<[u8; 64]>();
    let foreign = Box::into_raw(Box::new([0u8; 64]));
    // SAFETY: deliberately wrong: the call must panic before touching any state.
    unsafe { alloc.deallocate(core::ptr::NonNull::new(foreign.cast()).unwrap(), layout) };
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "not handed out by this allocator")]
fn blocks_of_another_allocator_are_caught_in_debug_builds() {
    let a = real();
    let b = real();
    let layout = Layout::new::<u64>();
    let p = a.allocate_local(layout).unwrap();
    // SAFETY: deliberately wrong: the call must panic before touching any state.
    unsafe { b.deallocate(p, layout) };
}
