//! API contract of pvp-core's ids, hybrid logical clock, topology and NUMA allocator: what the
//! rustdoc promises, at the edges and on bad input (typed errors, never a panic, nothing
//! changed by a refused call).

use core::alloc::Layout;

use pvp_core::hlc::{Hlc, HlcError, HlcStamp};
use pvp_core::ids::{IdError, MAX_NAME_LEN, MatchId, PlayerId, RegionId, ServerId, ZoneId};
use pvp_core::numa::{MemPolicy, NodeBox, NumaAllocator, NumaError};
use pvp_core::topology::{NodeId, Topology, TopologyError};

fn region(s: &str) -> RegionId {
    RegionId::new(s).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Ids

#[test]
fn name_ids_refuse_empty_long_and_foreign_bytes() {
    assert_eq!(RegionId::new(""), Err(IdError::Empty));
    assert_eq!(ZoneId::new(""), Err(IdError::Empty));
    let max = "a".repeat(MAX_NAME_LEN);
    assert_eq!(RegionId::new(&max).unwrap().as_str(), max);
    let long = "a".repeat(MAX_NAME_LEN + 1);
    assert_eq!(RegionId::new(&long), Err(IdError::TooLong { len: MAX_NAME_LEN + 1, max: MAX_NAME_LEN }));
    assert_eq!(ZoneId::new(&"z".repeat(1000)), Err(IdError::TooLong { len: 1000, max: MAX_NAME_LEN }));
    let cases: [(&str, u8, usize); 8] = [
        (" kr", b' ', 0),
        ("kr ", b' ', 2),
        ("k r", b' ', 1),
        ("KR", b'K', 0),
        ("kr\n", b'\n', 2),
        ("kr\0", 0, 2),
        ("ü", 0xC3, 0),
        ("kr.a", b'.', 2),
    ];
    for (name, byte, index) in cases {
        assert_eq!(RegionId::new(name), Err(IdError::InvalidByte { byte, index }), "{name:?}");
        assert_eq!(name.parse::<ZoneId>(), Err(IdError::InvalidByte { byte, index }), "{name:?}");
        assert_eq!(RegionId::try_from(name), Err(IdError::InvalidByte { byte, index }), "{name:?}");
    }
    // Multi-byte text: the length is counted in bytes.
    let wide = "é".repeat(8);
    assert_eq!(RegionId::new(&wide), Err(IdError::TooLong { len: 16, max: MAX_NAME_LEN }));
    // Errors render as text.
    assert!(IdError::Empty.to_string().contains("empty"));
}

#[test]
fn name_ids_round_trip_through_display_fromstr_and_asref() {
    for name in ["kr", "kr-a", "a", "0", "-", "_", "us-east_1", "abcdefghijklmno"] {
        let r: RegionId = name.parse().unwrap();
        assert_eq!(r.as_str(), name);
        assert_eq!(r.as_ref(), name);
        assert_eq!(r.to_string(), name);
        assert_eq!(r.to_string().parse::<RegionId>().unwrap(), r);
        assert_eq!(format!("{r:?}"), format!("RegionId({name:?})"));
        let z = ZoneId::try_from(name).unwrap();
        assert_eq!(z.to_string(), name);
        assert_eq!(format!("{z:?}"), format!("ZoneId({name:?})"));
    }
    // Usable in const context.
    const KR: Result<RegionId, IdError> = RegionId::new("kr");
    assert_eq!(KR.unwrap(), region("kr"));
}

#[test]
fn name_ids_order_hash_and_compare_like_their_strings() {
    let names = ["kr-a", "kr", "a", "zz", "kr-", "k", "jp_1", "0"];
    let mut ids: Vec<RegionId> = names.iter().map(|n| region(n)).collect();
    let mut strs = names.to_vec();
    ids.sort();
    strs.sort();
    assert_eq!(ids.iter().map(|r| r.as_str()).collect::<Vec<_>>(), strs);
    let set: std::collections::HashSet<RegionId> = ["kr", "kr", "jp"].iter().map(|n| region(n)).collect();
    assert_eq!(set.len(), 2);
    assert_ne!(region("kr"), region("kr-a"));
}

#[test]
fn numeric_ids_round_trip_through_display_and_fromstr() {
    for raw in [0, 1, 7, u64::MAX] {
        let p = PlayerId::new(raw);
        assert_eq!(p.get(), raw);
        assert_eq!(u64::from(p), raw);
        assert_eq!(PlayerId::from(raw), p);
        assert_eq!(p.to_string(), raw.to_string());
        assert_eq!(p.to_string().parse::<PlayerId>().unwrap(), p);
        assert_eq!(MatchId::new(raw).to_string().parse::<MatchId>().unwrap(), MatchId::new(raw));
        assert_eq!(ServerId::new(raw).to_string().parse::<ServerId>().unwrap(), ServerId::new(raw));
    }
    for bad in ["", "-1", " 1", "1 ", "18446744073709551616", "0x10", "one"] {
        assert!(bad.parse::<PlayerId>().is_err(), "{bad:?}");
        assert!(bad.parse::<MatchId>().is_err(), "{bad:?}");
        assert!(bad.parse::<ServerId>().is_err(), "{bad:?}");
    }
    assert!(PlayerId::new(1) < PlayerId::new(2));
    assert_eq!(PlayerId::default().get(), 0);
}

#[cfg(feature = "serde")]
#[test]
fn serde_uses_plain_strings_and_numbers_and_validates_names() {
    let r = region("kr-a");
    assert_eq!(serde_json::to_string(&r).unwrap(), "\"kr-a\"");
    assert_eq!(serde_json::from_str::<RegionId>("\"kr-a\"").unwrap(), r);
    assert_eq!(serde_json::from_str::<ZoneId>("\"kr-a\"").unwrap(), ZoneId::new("kr-a").unwrap());
    for bad in ["\"\"", "\"KR\"", "\"abcdefghijklmnop\"", "7", "null", "[\"kr\"]", "\"k r\""] {
        assert!(serde_json::from_str::<RegionId>(bad).is_err(), "{bad}");
        assert!(serde_json::from_str::<ZoneId>(bad).is_err(), "{bad}");
    }
    // An owned (escaped) string takes the same path as a borrowed one.
    assert_eq!(serde_json::from_str::<RegionId>("\"k\\u0072\"").unwrap(), region("kr"));
    assert_eq!(serde_json::to_string(&PlayerId::new(42)).unwrap(), "42");
    assert_eq!(serde_json::from_str::<MatchId>("42").unwrap(), MatchId::new(42));
    assert!(serde_json::from_str::<ServerId>("-1").is_err());
    let s = HlcStamp::new(123, 4, r);
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<HlcStamp>(&json).unwrap(), s);
}

// ---------------------------------------------------------------------------------------------
// Hybrid logical clock

#[test]
fn stamps_keep_their_fields_and_order_by_wall_logical_region() {
    let s = HlcStamp::new(5, 9, region("kr"));
    assert_eq!((s.wall_ms, s.logical, s.region), (5, 9, region("kr")));
    assert_eq!(format!("{s:?}"), "5.9@kr");
    assert!(HlcStamp::new(5, 9, region("kr")) < HlcStamp::new(6, 0, region("a")));
    assert!(HlcStamp::new(5, 9, region("kr")) < HlcStamp::new(5, 10, region("a")));
    assert!(HlcStamp::new(5, 9, region("jp")) < HlcStamp::new(5, 9, region("kr")));
    assert_eq!(HlcStamp::new(5, 9, region("kr")).cmp(&s), core::cmp::Ordering::Equal);
}

#[test]
fn now_is_strictly_monotonic_whatever_the_wall_clock_does() {
    let mut c = Hlc::new(region("kr"), 100);
    assert_eq!(c.region(), region("kr"));
    assert_eq!(c.max_drift_ms(), 100);
    let mut prev = c.last();
    for wall in [0, 0, 10, 5, 5, 1_000, 0, u64::MAX - 1, 3, u64::MAX, u64::MAX, 0] {
        let s = c.now(wall);
        assert!(s > prev, "{s:?} after {prev:?} at wall {wall}");
        assert_eq!(s.region, region("kr"));
        assert_eq!(c.last(), s);
        prev = s;
    }
    // The wall part follows a wall clock that moves forward, with a fresh counter.
    let mut c = Hlc::new(region("kr"), 100);
    c.now(10);
    c.now(10);
    assert_eq!(c.now(11), HlcStamp::new(11, 0, region("kr")));
}

#[test]
fn a_full_logical_counter_moves_the_wall_part_on() {
    let mut c = Hlc::resume(region("kr"), 100, HlcStamp::new(1_000, u32::MAX, region("jp")));
    assert_eq!(c.last(), HlcStamp::new(1_000, u32::MAX, region("kr")), "resume takes our own region");
    let s = c.now(1_000);
    assert_eq!(s, HlcStamp::new(1_001, 0, region("kr")));
    // At the very end of the stamp space the clock stays put rather than going back.
    let end = HlcStamp::new(u64::MAX, u32::MAX, region("kr"));
    let mut c = Hlc::resume(region("kr"), 100, end);
    assert_eq!(c.now(u64::MAX), end);
    assert_eq!(c.now(0), end);
    assert!(c.last() >= end);
}

#[test]
fn update_refuses_stamps_beyond_the_drift_and_leaves_the_clock_alone() {
    let mut c = Hlc::new(region("kr"), 50);
    let before = c.now(1_000);
    let far = HlcStamp::new(1_051, 0, region("jp"));
    assert_eq!(
        c.update(far, 1_000),
        Err(HlcError::TooFarInFuture { stamp_ms: 1_051, ahead_ms: 51, max_drift_ms: 50 })
    );
    assert_eq!(c.check(far, 1_000), c.update(far, 1_000));
    assert_eq!(c.last(), before);
    // Exactly at the drift limit is fine, and later stamps order after it.
    let edge = HlcStamp::new(1_050, 3, region("jp"));
    assert_eq!(c.check(edge, 1_000), Ok(()));
    assert_eq!(c.last(), before, "check does not observe");
    c.update(edge, 1_000).unwrap();
    assert!(c.last() > edge);
    assert!(c.now(1_000) > edge);
    // A stamp from the past is observed without moving the clock back.
    let last = c.last();
    c.update(HlcStamp::new(1, 0, region("sg")), 1_000).unwrap();
    assert!(c.last() > last);
    // Zero drift: only stamps at or behind our wall clock.
    let mut strict = Hlc::new(region("kr"), 0);
    assert!(strict.update(HlcStamp::new(11, 0, region("jp")), 10).is_err());
    assert!(strict.update(HlcStamp::new(10, 0, region("jp")), 10).is_ok());
    // Huge stamps against a huge drift do not overflow.
    let mut lax = Hlc::new(region("kr"), u64::MAX);
    lax.update(HlcStamp::new(u64::MAX, 0, region("jp")), 0).unwrap();
    assert_eq!(lax.last(), HlcStamp::new(u64::MAX, 1, region("kr")));
}

#[test]
fn update_reports_a_logical_overflow_and_leaves_the_clock_alone() {
    let mut c = Hlc::new(region("kr"), 100);
    let before = c.now(1_000);
    let full = HlcStamp::new(1_000, u32::MAX, region("jp"));
    assert_eq!(c.update(full, 1_000), Err(HlcError::LogicalOverflow));
    assert_eq!(c.last(), before);
    // A later wall clock makes room again.
    c.update(full, 1_001).unwrap();
    assert_eq!(c.last(), HlcStamp::new(1_001, 0, region("kr")));
}

// ---------------------------------------------------------------------------------------------
// Topology

fn synthetic_err(desc: &str) -> (String, &'static str) {
    match Topology::synthetic(desc) {
        Err(TopologyError::Synthetic { token, reason }) => (token, reason),
        other => panic!("{desc:?}: {other:?}"),
    }
}

#[test]
fn malformed_synthetic_descriptions_are_typed_errors_naming_the_token() {
    let cases: [(&str, &str); 17] = [
        ("", ""),
        ("   ", ""),
        ("core:2", ""),
        ("pu:0", "pu:0"),
        ("pu:4097", "pu:4097"),
        ("pu:-1", "pu:-1"),
        ("core:x pu:1", "core:x"),
        ("core pu:1", "core"),
        ("pu:2 core:2", "core:2"),
        ("pu:2 numa:2", "numa:2"),
        ("blade:2 pu:1", "blade:2"),
        ("pack:2 [numa pu:1", "[numa"),
        ("[l3] pu:1", "[l3]"),
        ("pack:2 [numa(memory=lots)] pu:1", "[numa(memory=lots)]"),
        ("pack:2 [numa] numa:2 pu:1", "numa:2"),
        ("core:2 machine:1 pu:1", "machine:1"),
        ("core:2(foo pu:1", "core:2(foo"),
    ];
    for (desc, token) in cases {
        let (got, reason) = synthetic_err(desc);
        assert_eq!(got, token, "{desc:?}: {reason}");
        assert!(!reason.is_empty());
    }
    // Size limits: too many PUs overall, too many nodes.
    assert_eq!(synthetic_err("pack:4096 core:4096 pu:1").0, "");
    assert_eq!(synthetic_err("numa:2048 pu:1").0, "");
    assert_eq!(synthetic_err("pack:2 [numa(memory=99999999999TB)] pu:1").0, "[numa(memory=99999999999TB)]");
}

#[test]
fn synthetic_shapes_number_pus_and_nodes_in_order() {
    let t = Topology::synthetic("numa:4 core:4 pu:2").unwrap();
    assert_eq!((t.node_count(), t.core_count(), t.pu_count()), (4, 16, 32));
    assert_eq!(t.node(NodeId::new(3)).unwrap().cpus(), (24..32).collect::<Vec<_>>());
    assert_eq!(t.node_of_cpu(31), Some(NodeId::new(3)));
    assert_eq!(t.node_of_cpu(32), None);
    assert_eq!(t.index_of(NodeId::new(2)).unwrap(), 2);

    let t = Topology::synthetic("Machine:1 Pack:2 [NUMA(memory=2GB)] L3:1 core:2 pu:1").unwrap();
    assert_eq!(t.node_count(), 2);
    assert!(t.nodes().iter().all(|n| n.memory_bytes() == 2 << 30));
    assert_eq!(t.nodes()[1].cpus(), &[2, 3]);

    let t = Topology::synthetic("pack:2 core:3 pu:2").unwrap();
    assert_eq!((t.node_count(), t.core_count(), t.pu_count()), (1, 6, 12), "no NUMA level: one node");
    assert_eq!(t.nodes()[0].id(), NodeId::new(0));
    assert_eq!(t.nodes()[0].memory_bytes(), 0);
}

#[test]
fn unknown_nodes_are_no_such_node() {
    let t = Topology::synthetic("pack:2 [numa] core:1 pu:1").unwrap();
    for bad in [2, 99, u32::MAX] {
        match t.node(NodeId::new(bad)) {
            Err(TopologyError::NoSuchNode { node, count }) => {
                assert_eq!((node, count), (NodeId::new(bad), 2))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(t.index_of(NodeId::new(bad)), Err(TopologyError::NoSuchNode { .. })));
        assert!(matches!(t.bind_thread_to_node(NodeId::new(bad)), Err(TopologyError::NoSuchNode { .. })));
    }
    assert_eq!(NodeId::new(7).to_string(), "node7");
    assert_eq!(NodeId::new(7).get(), 7);
}

#[test]
fn single_node_sorts_dedups_and_is_never_empty() {
    let t = Topology::single_node([3, 1, 1, 2]);
    assert_eq!(t.node_count(), 1);
    assert_eq!(t.nodes()[0].cpus(), &[1, 2, 3]);
    assert_eq!(t.pu_count(), 3);
    let empty = Topology::single_node([]);
    assert_eq!(empty.nodes()[0].cpus(), &[0]);
    assert_eq!(empty.node_count(), 1);
}

// ---------------------------------------------------------------------------------------------
// NUMA allocator

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
