//! The NUMA allocator through its public API, on the running machine and on synthetic
//! multi-node topologies (a build machine often has one real node): placement read back from
//! the kernel, typed errors for unknown nodes and impossible layouts, disjoint memory on every
//! path, per-node counters, thread caches and cross-thread frees, node-local containers, and
//! the debug-build checks.

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::collections::HashSet;
use std::sync::{Arc, mpsc};

use pvp_core::ids::PlayerId;
use pvp_core::numa::{
    MemPolicy, NodeBox, NodePlacement, NodeShardedStore, NumaAllocator, NumaError, page_node, page_nodes,
};
use pvp_core::topology::{NodeId, Topology, TopologyError};

// ---------------------------------------------------------------------------------------------
// Allocation and placement

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

fn two_nodes() -> NumaAllocator {
    NumaAllocator::new(Topology::synthetic("pack:2 [numa] core:1 pu:1").unwrap()).unwrap()
}

#[test]
fn more_nodes_than_supported_is_a_typed_error() {
    let t = Topology::synthetic("numa:300 pu:1").unwrap();
    match NumaAllocator::new(t) {
        Err(NumaError::TooManyNodes { count, max }) => {
            assert_eq!(count, 300);
            assert!(max < 300);
        }
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn unknown_nodes_in_every_allocation_path_are_typed_errors() {
    let alloc = two_nodes();
    let layout = Layout::new::<[u8; 64]>();
    let big = Layout::from_size_align(1 << 20, 8).unwrap();
    let bad = NodeId::new(5);
    for l in [layout, big] {
        assert!(
            matches!(alloc.allocate_on_node(bad, l), Err(NumaError::NoSuchNode { node, count: 2 }) if node == bad)
        );
        assert!(matches!(
            alloc.allocate_with_policy(l, MemPolicy::Bind(bad)),
            Err(NumaError::NoSuchNode { .. })
        ));
        assert!(matches!(
            alloc.allocate_with_policy(l, MemPolicy::Preferred(bad)),
            Err(NumaError::NoSuchNode { .. })
        ));
    }
    let home = alloc.home_node();
    assert!(matches!(alloc.set_home_node(bad), Err(NumaError::NoSuchNode { .. })));
    assert!(matches!(alloc.bind_thread_to_node(bad), Err(NumaError::NoSuchNode { .. })));
    assert_eq!(alloc.home_node(), home, "a refused call changes nothing");
    alloc.set_home_node(NodeId::new(1)).unwrap();
    assert_eq!(alloc.home_node(), NodeId::new(1));
    // A rejected NodeBox hands its value back.
    let rejected = NodeBox::new_on(&alloc, bad, String::from("player state")).unwrap_err();
    assert!(matches!(rejected.error(), NumaError::NoSuchNode { .. }));
    assert_eq!(rejected.into_value(), "player state");
    let zst = NodeBox::new_on(&alloc, bad, ()).unwrap_err();
    assert!(matches!(zst.error(), NumaError::NoSuchNode { .. }), "zero-sized values check the node too");
}

#[test]
fn zero_sized_large_aligned_and_impossible_layouts() {
    let alloc = two_nodes();
    for align in [1usize, 8, 64, 4096] {
        let zero = Layout::from_size_align(0, align).unwrap();
        let p = alloc.allocate_on_node(NodeId::new(1), zero).unwrap();
        assert_eq!(p.as_ptr() as usize % align, 0);
        // SAFETY: allocated above with this layout, not used after.
        unsafe { alloc.deallocate(p, zero) };
    }
    // Alignment beyond a page for a small block.
    for align in [1usize << 13, 1 << 21] {
        let l = Layout::from_size_align(24, align).unwrap();
        let p = alloc.allocate_local(l).unwrap();
        assert_eq!(p.as_ptr() as usize % align, 0, "align {align}");
        // SAFETY: the block is 24 bytes long and ours.
        unsafe {
            p.as_ptr().write_bytes(0x5A, 24);
            assert_eq!(*p.as_ptr().add(23), 0x5A);
            alloc.deallocate(p, l);
        }
    }
    // Sizes no machine has: a typed error, no mapping left behind.
    let huge = Layout::from_size_align(isize::MAX as usize - 4096, 8).unwrap();
    assert!(matches!(alloc.allocate_on_node(NodeId::new(0), huge), Err(NumaError::OutOfMemory { .. })));
    assert!(matches!(
        alloc.allocate_with_policy(huge, MemPolicy::Interleave),
        Err(NumaError::OutOfMemory { .. })
    ));
    let huge_align = Layout::from_size_align(8, 1 << 62).unwrap();
    assert!(matches!(alloc.allocate_local(huge_align), Err(NumaError::OutOfMemory { .. })));
    assert_eq!(alloc.stats().large_live_bytes, 0);
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

#[test]
fn zero_sized_layouts_with_huge_alignment_are_dangling_too() {
    let alloc = two_nodes();
    for align in [1usize << 16, 1 << 21, 1 << 30] {
        let zero = Layout::from_size_align(0, align).unwrap();
        let paths = [
            alloc.allocate_local(zero),
            alloc.allocate_on_node(NodeId::new(0), zero),
            alloc.allocate_interleaved(zero),
            alloc.allocate_with_policy(zero, MemPolicy::Preferred(NodeId::new(1))),
        ];
        for p in paths {
            let p = p.unwrap();
            assert_eq!(p.as_ptr() as usize % align, 0, "align {align}");
            // SAFETY: allocated above with this layout, never dereferenced.
            unsafe { alloc.deallocate(p, zero) };
        }
    }
    let stats = alloc.stats();
    assert_eq!(stats.large_live_bytes, 0);
    assert!(stats.nodes.iter().all(|n| n.large_allocations == 0), "no memory mapped for nothing");
    // Unknown nodes are still refused for zero-sized requests.
    let zero = Layout::from_size_align(0, 1 << 21).unwrap();
    assert!(matches!(alloc.allocate_on_node(NodeId::new(9), zero), Err(NumaError::NoSuchNode { .. })));
}

#[test]
fn page_queries_on_unmapped_addresses_are_errors_not_crashes() {
    use pvp_core::numa::{page_node, page_nodes, resident_memory_bytes};
    assert!(matches!(page_node(core::ptr::null()), Err(NumaError::PageQuery(_))));
    assert!(page_nodes(&[]).unwrap().is_empty());
    match page_nodes(&[core::ptr::null()]) {
        // Per page: no such page.
        Ok(v) => {
            assert_eq!(v.len(), 1);
            assert!(matches!(v[0], Err(NumaError::PageQuery(_))));
        }
        // Or the whole query is refused (move_pages forbidden in some containers).
        Err(e) => assert!(matches!(e, NumaError::PageQuery(_))),
    }
    assert!(resident_memory_bytes().unwrap() > 0);
}

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

// ---------------------------------------------------------------------------------------------
// Thread caches and frees from other threads

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

// ---------------------------------------------------------------------------------------------
// Node-local containers

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

// ---------------------------------------------------------------------------------------------
// Debug-build checks

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
