//! `NumaGlobalAlloc` installed as this test binary's global allocator: every allocation of the
//! test harness, std and the tests goes through the node pools. Its own test binary, since a
//! `#[global_allocator]` is process-wide.

use std::collections::HashMap;
use std::sync::mpsc;

use pvp_core::numa::{NumaGlobalAlloc, page_node};

#[global_allocator]
static ALLOC: NumaGlobalAlloc = NumaGlobalAlloc::new();

#[test]
fn std_collections_work_on_the_node_pools() {
    let mut map: HashMap<u64, String> = HashMap::new();
    for i in 0..10_000u64 {
        map.insert(i, format!("player-{i}"));
    }
    assert_eq!(map.len(), 10_000);
    assert_eq!(map[&4242], "player-4242");
    let mut v: Vec<u8> = Vec::new();
    for i in 0..(3 << 20) {
        v.push(i as u8);
    }
    assert_eq!(v[(3 << 20) - 1], ((3 << 20) - 1) as u8);
    v.truncate(10);
    v.shrink_to_fit();
    assert_eq!(v, (0..10).collect::<Vec<u8>>());
    let stats = ALLOC.stats().expect("the global allocator served this test");
    assert!(stats.nodes.iter().map(|n| n.segments).sum::<u64>() > 0);
    assert!(stats.nodes.iter().map(|n| n.large_allocations).sum::<u64>() > 0);
}

#[test]
fn memory_freed_on_other_threads_comes_back() {
    let before = ALLOC.stats().map_or(0, |s| s.nodes.iter().map(|n| n.blocks_returned).sum());
    let (tx, rx) = mpsc::channel::<Box<[u64; 16]>>();
    let consumer = std::thread::spawn(move || {
        let mut sum = 0;
        for b in rx {
            sum += b.iter().sum::<u64>();
        }
        sum
    });
    let producer = std::thread::spawn(move || {
        for i in 0..5_000u64 {
            tx.send(Box::new([i; 16])).unwrap();
        }
    });
    producer.join().unwrap();
    let sum = consumer.join().unwrap();
    assert_eq!(sum, 16 * (0..5_000u64).sum::<u64>());
    // Both threads have exited, so their caches went back to the pools.
    let after: u64 = ALLOC.stats().unwrap().nodes.iter().map(|n| n.blocks_returned).sum();
    assert!(after >= before + 5_000, "before {before}, after {after}");
}

#[test]
fn realloc_keeps_contents_across_classes_and_sizes() {
    let mut s = String::new();
    for i in 0..50_000 {
        s.push(char::from(b'a' + (i % 26) as u8));
        if i % 997 == 0 {
            s.shrink_to_fit();
        }
    }
    assert!(s.bytes().enumerate().all(|(i, b)| b == b'a' + (i % 26) as u8));
    let v = vec![0xABu8; 1 << 16];
    if let Ok(node) = page_node(v.as_ptr()) {
        let nodes = ALLOC.stats().unwrap().nodes;
        assert!(nodes.iter().any(|n| n.node == Some(node)));
    }
}
