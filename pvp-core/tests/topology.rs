//! Topology discovery: a fake sysfs tree, synthetic descriptions (and malformed ones as typed
//! errors naming the token), unknown nodes, the running machine, and (with the `hwloc`
//! feature) agreement with hwloc.

use std::path::{Path, PathBuf};

use pvp_core::topology::{NodeId, Topology, TopologyError, TopologySource};

struct TempTree(PathBuf);

impl TempTree {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pvp-topo-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn two_node_sysfs_tree() {
    let t = TempTree::new("two");
    t.write("node/node0/cpulist", "0-1,4-5\n");
    t.write("node/node0/meminfo", "Node 0 MemTotal:  1048576 kB\n");
    t.write("node/node1/cpulist", "2-3,6-7\n");
    t.write("node/node1/meminfo", "Node 1 MemTotal:  2097152 kB\n");
    t.write("node/possible", "0-1\n");
    t.write("cpu/online", "0-7\n");
    for cpu in 0..8 {
        // Two hyperthreads per core: cpu N and N+4 are siblings.
        t.write(&format!("cpu/cpu{cpu}/topology/physical_package_id"), &format!("{}\n", (cpu % 4) / 2));
        t.write(&format!("cpu/cpu{cpu}/topology/core_id"), &format!("{}\n", cpu % 2));
    }
    let topo = Topology::from_sysfs(t.path()).unwrap();
    assert_eq!(topo.source(), TopologySource::Sysfs);
    assert_eq!(topo.node_count(), 2);
    assert_eq!(topo.pu_count(), 8);
    assert_eq!(topo.core_count(), 4);
    let n1 = topo.node(NodeId::new(1)).unwrap();
    assert_eq!(n1.cpus(), &[2, 3, 6, 7]);
    assert_eq!(n1.memory_bytes(), 2 << 30);
    assert_eq!(topo.node_of_cpu(6), Some(NodeId::new(1)));
    assert_eq!(topo.node_of_cpu(9), None);
    assert_eq!(topo.index_of(NodeId::new(1)).unwrap(), 1);
}

#[test]
fn sparse_node_numbers_keep_their_os_ids() {
    let t = TempTree::new("sparse");
    t.write("node/node0/cpulist", "0\n");
    t.write("node/node2/cpulist", "1\n");
    let topo = Topology::from_sysfs(t.path()).unwrap();
    let ids: Vec<u32> = topo.nodes().iter().map(|n| n.id().get()).collect();
    assert_eq!(ids, vec![0, 2]);
    assert!(matches!(topo.node(NodeId::new(1)), Err(TopologyError::NoSuchNode { count: 2, .. })));
    // No core information: each PU counts as a core.
    assert_eq!(topo.core_count(), 2);
}

#[test]
fn kernel_without_numa_is_one_node() {
    let t = TempTree::new("flat");
    t.write("cpu/online", "0-3\n");
    let topo = Topology::from_sysfs(t.path()).unwrap();
    assert_eq!(topo.node_count(), 1);
    assert_eq!(topo.nodes()[0].id(), NodeId::new(0));
    assert_eq!(topo.nodes()[0].cpus(), &[0, 1, 2, 3]);
}

#[test]
fn garbage_sysfs_is_a_typed_error() {
    let t = TempTree::new("garbage");
    t.write("node/node0/cpulist", "zero-one\n");
    assert!(matches!(Topology::from_sysfs(t.path()), Err(TopologyError::Parse { .. })));
    let empty = TempTree::new("empty");
    assert!(matches!(Topology::from_sysfs(empty.path()), Err(TopologyError::Io { .. })));
}

#[test]
fn the_running_machine() {
    let topo = Topology::detect().unwrap();
    assert!(topo.node_count() >= 1);
    assert!(topo.pu_count() >= topo.core_count());
    let all: usize = topo.nodes().iter().map(|n| n.cpus().len()).sum();
    assert_eq!(all, topo.pu_count());
    let here = topo.current_node();
    assert!(topo.node(here).is_ok());
    let sysfs = Topology::from_sysfs("/sys/devices/system").unwrap();
    assert_eq!(sysfs.node_count(), topo.node_count());
}

#[test]
fn synthetic_machines_of_two_and_four_nodes() {
    let t = Topology::synthetic("pack:2 [numa] core:2 pu:1").unwrap();
    assert_eq!((t.node_count(), t.core_count(), t.pu_count()), (2, 4, 4));
    assert_eq!(t.source(), TopologySource::Synthetic);
    let t = Topology::synthetic("pack:2 [numa(memory=1GB)] l3:1 core:4 pu:2").unwrap();
    assert_eq!(t.node(NodeId::new(0)).unwrap().memory_bytes(), 1 << 30);
    assert_eq!(t.node(NodeId::new(1)).unwrap().cpus(), &(8..16).collect::<Vec<_>>()[..]);
    let t = Topology::synthetic("pack:2 group:2 [numa] core:2 pu:2").unwrap();
    assert_eq!(t.node_count(), 4);
    assert_eq!(t.node_of_cpu(13), Some(NodeId::new(3)));
    assert!(matches!(Topology::synthetic("pack:2 [numa] [numa] pu:1"), Err(TopologyError::Synthetic { .. })));
    assert!(Topology::synthetic("pu:2 core:2").is_err());
}

#[cfg(feature = "hwloc")]
#[test]
fn our_synthetic_parser_agrees_with_hwloc() {
    for desc in [
        "pack:2 [numa] core:2 pu:1",
        "pack:4 [numa] core:2 pu:2",
        "pack:2 l3:2 [numa] core:2 pu:1",
        "core:4 pu:2",
    ] {
        let ours = Topology::synthetic(desc).unwrap();
        let theirs = Topology::from_hwloc_synthetic(desc).unwrap();
        assert_eq!(ours.node_count(), theirs.node_count(), "{desc}");
        assert_eq!(ours.core_count(), theirs.core_count(), "{desc}");
        assert_eq!(ours.pu_count(), theirs.pu_count(), "{desc}");
        for (a, b) in ours.nodes().iter().zip(theirs.nodes()) {
            assert_eq!(a.id(), b.id(), "{desc}");
            assert_eq!(a.cpus(), b.cpus(), "{desc}");
        }
    }
    assert!(Topology::from_hwloc_synthetic("not a topology").is_err());
}

#[cfg(feature = "hwloc")]
#[test]
fn hwloc_and_sysfs_agree_on_this_machine() {
    let hw = Topology::from_hwloc().unwrap();
    let fs = Topology::from_sysfs("/sys/devices/system").unwrap();
    assert_eq!(hw.source(), TopologySource::Hwloc);
    assert_eq!(hw.node_count(), fs.node_count());
    assert_eq!(hw.pu_count(), fs.pu_count());
    for (a, b) in hw.nodes().iter().zip(fs.nodes()) {
        assert_eq!(a.id(), b.id());
        assert_eq!(a.cpus(), b.cpus());
    }
}

proptest::proptest! {
    #[test]
    fn synthetic_parser_never_panics(desc in "[a-z0-9:\\[\\]()= ,]{0,40}") {
        if let Ok(t) = Topology::synthetic(&desc) {
            let cpus: usize = t.nodes().iter().map(|n| n.cpus().len()).sum();
            proptest::prop_assert_eq!(cpus, t.pu_count());
            proptest::prop_assert!(t.core_count() <= t.pu_count());
        }
    }

    #[test]
    fn synthetic_shapes_multiply_out(packs in 1usize..5, cores in 1usize..5, pus in 1usize..3) {
        let t = Topology::synthetic(&format!("pack:{packs} [numa] core:{cores} pu:{pus}")).unwrap();
        proptest::prop_assert_eq!(t.node_count(), packs);
        proptest::prop_assert_eq!(t.core_count(), packs * cores);
        proptest::prop_assert_eq!(t.pu_count(), packs * cores * pus);
    }
}

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
