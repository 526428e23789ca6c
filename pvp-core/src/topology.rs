//! The machine's NUMA layout: nodes, their CPUs and memory, cores and processing units (PUs).
//!
//! A [`Topology`] comes from the running machine ([`Topology::detect`]: hwloc with the `hwloc`
//! feature, else Linux sysfs), from a sysfs tree somewhere else ([`Topology::from_sysfs`]), or
//! from an hwloc-style synthetic description ([`Topology::synthetic`]) so code can be tested as
//! if it ran on a 2- or 4-node server:
//!
//! ```
//! use pvp_core::topology::{NodeId, Topology};
//!
//! let topo = Topology::synthetic("pack:2 [numa] core:2 pu:2")?;
//! assert_eq!(topo.node_count(), 2);
//! assert_eq!(topo.core_count(), 4);
//! assert_eq!(topo.pu_count(), 8);
//! assert_eq!(topo.node(NodeId::new(1))?.cpus(), &[4, 5, 6, 7]);
//! assert_eq!(topo.node_of_cpu(5), Some(NodeId::new(1)));
//! # Ok::<(), pvp_core::topology::TopologyError>(())
//! ```

use core::fmt;
use std::path::{Path, PathBuf};

use crate::sys;

/// An OS NUMA node number (what `numactl --hardware` and sysfs call node N).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(u32);

impl NodeId {
    /// The node with OS number `id`.
    pub const fn new(id: u32) -> Self {
        Self(id)
    }

    /// The OS number of this node.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node{}", self.0)
    }
}

/// One NUMA node: a set of CPUs (PUs) and the memory closest to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaNode {
    id: NodeId,
    cpus: Vec<usize>,
    memory_bytes: u64,
}

impl NumaNode {
    /// The node's OS number.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// OS numbers of the node's PUs (logical CPUs), ascending.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// The node's memory in bytes; 0 where the source does not say.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }
}

/// Where a [`Topology`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopologySource {
    /// Read from a Linux sysfs tree.
    Sysfs,
    /// Discovered by hwloc on the running machine.
    Hwloc,
    /// Built from a synthetic description.
    Synthetic,
}

/// Why a topology could not be built, or a node or CPU request does not fit it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// A sysfs file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A sysfs file held something other than what the kernel writes there.
    #[error("cannot parse {path}")]
    Parse {
        /// The file.
        path: PathBuf,
    },
    /// A synthetic description is malformed.
    #[error("bad synthetic topology description at token {token:?}: {reason}")]
    Synthetic {
        /// The offending token ("" for the description as a whole).
        token: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The topology has no NUMA node with this number.
    #[error("{node} does not exist in this topology ({count} nodes)")]
    NoSuchNode {
        /// The node asked for.
        node: NodeId,
        /// How many nodes the topology has.
        count: usize,
    },
    /// The kernel refused to pin the thread to the node's CPUs.
    #[error("cannot bind the thread to {node}'s CPUs: {source}")]
    Affinity {
        /// The node asked for.
        node: NodeId,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// hwloc failed to build or describe the topology.
    #[error("hwloc failed: {0}")]
    Hwloc(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// NUMA nodes, cores and PUs of a machine. Nodes are kept in ascending [`NodeId`] order; the
/// position of a node in [`Topology::nodes`] is its *index* (`0..node_count()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    nodes: Vec<NumaNode>,
    cores: usize,
    pus: usize,
    source: TopologySource,
}

impl Topology {
    /// The running machine's topology: hwloc when the `hwloc` feature is on (falling back to
    /// sysfs if hwloc fails), else sysfs; a machine without NUMA support in sysfs is one node 0
    /// holding every online CPU.
    pub fn detect() -> Result<Self, TopologyError> {
        #[cfg(feature = "hwloc")]
        if let Ok(t) = Self::from_hwloc() {
            return Ok(t);
        }
        Self::from_sysfs("/sys/devices/system")
    }

    /// Reads the topology from a sysfs tree rooted at `root` (normally `/sys/devices/system`):
    /// `node/nodeN/cpulist`, `node/nodeN/meminfo`, `cpu/online` and
    /// `cpu/cpuN/topology/{physical_package_id,core_id}`.
    pub fn from_sysfs(root: impl AsRef<Path>) -> Result<Self, TopologyError> {
        let root = root.as_ref();
        let mut nodes = Vec::new();
        let node_dir = root.join("node");
        if let Ok(entries) = std::fs::read_dir(&node_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(id) =
                    name.to_str().and_then(|n| n.strip_prefix("node")).and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                let dir = entry.path();
                let cpulist = dir.join("cpulist");
                let cpus =
                    parse_cpu_list(&read(&cpulist)?).ok_or(TopologyError::Parse { path: cpulist.clone() })?;
                let meminfo = dir.join("meminfo");
                let memory_bytes = match std::fs::read_to_string(&meminfo) {
                    Ok(text) => parse_meminfo_total(&text).unwrap_or(0),
                    Err(_) => 0,
                };
                nodes.push(NumaNode { id: NodeId(id), cpus, memory_bytes });
            }
        }
        let online_path = root.join("cpu").join("online");
        let online = match std::fs::read_to_string(&online_path) {
            Ok(text) => parse_cpu_list(&text).ok_or(TopologyError::Parse { path: online_path })?,
            Err(_) => nodes.iter().flat_map(|n| n.cpus.iter().copied()).collect(),
        };
        if nodes.is_empty() {
            if online.is_empty() {
                return Err(TopologyError::Io {
                    path: node_dir,
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                });
            }
            nodes.push(NumaNode { id: NodeId(0), cpus: online.clone(), memory_bytes: 0 });
        }
        nodes.sort_by_key(|n| n.id);
        let mut pu_set: Vec<usize> = nodes.iter().flat_map(|n| n.cpus.iter().copied()).collect();
        pu_set.sort_unstable();
        pu_set.dedup();
        let mut core_keys: Vec<(u64, u64)> = Vec::new();
        for &cpu in &pu_set {
            let topo = root.join("cpu").join(format!("cpu{cpu}")).join("topology");
            let pkg = read_u64(&topo.join("physical_package_id"));
            let core = read_u64(&topo.join("core_id"));
            match (pkg, core) {
                (Some(p), Some(c)) => core_keys.push((p, c)),
                // Unknown sibling layout: count the PU as its own core.
                _ => core_keys.push((u64::MAX, cpu as u64)),
            }
        }
        core_keys.sort_unstable();
        core_keys.dedup();
        Ok(Self {
            nodes,
            cores: core_keys.len().max(1),
            pus: pu_set.len().max(1),
            source: TopologySource::Sysfs,
        })
    }

    /// Builds a topology from an hwloc synthetic description such as
    /// `"pack:2 [numa] core:2 pu:1"` (2 packages, one NUMA node each, 2 cores of 1 PU per
    /// package) or `"numa:4 core:4 pu:2"`.
    ///
    /// Supported: levels `machine`, `pack`/`package`/`socket`, `die`, `group`, caches (`l1`..`l5`,
    /// `l1i`, `l3cache`, ...), `core`, `pu`, `numa`/`node`/`numanode` as `type:count`, each
    /// optionally followed by `(attr=...)`; a memory attachment `[numa]` or
    /// `[numa(memory=SIZE)]` after a level gives each object of that level one NUMA node
    /// (`SIZE` in bytes or with a `KB`/`MB`/`GB`/`TB` suffix). Without any NUMA node the machine
    /// is one node. PUs and nodes are numbered in order, as hwloc does. The parser is pvp-core's
    /// own, so this works without the `hwloc` feature.
    pub fn synthetic(description: &str) -> Result<Self, TopologyError> {
        let bad =
            |token: &str, reason: &'static str| TopologyError::Synthetic { token: token.to_owned(), reason };
        // (count, is_core) per level; numa attachment: (level index, memory) where index -1 is
        // the machine.
        let mut levels: Vec<(usize, bool)> = Vec::new();
        let mut numa_at: Option<(isize, u64)> = None;
        let mut seen_pu = false;
        for token in description.split_whitespace() {
            if let Some(inner) = token.strip_prefix('[') {
                let inner = inner
                    .strip_suffix(']')
                    .ok_or_else(|| bad(token, "memory attachment must end with ']'"))?;
                let (kind, attrs) = split_attrs(inner).ok_or_else(|| bad(token, "unbalanced ()"))?;
                if !is_numa_name(kind) {
                    return Err(bad(token, "only [numa] memory attachments are supported"));
                }
                if numa_at.is_some() {
                    return Err(bad(token, "NUMA nodes at more than one level"));
                }
                let memory = parse_memory_attr(attrs).ok_or_else(|| bad(token, "bad memory="))?;
                numa_at = Some((levels.len() as isize - 1, memory));
                continue;
            }
            let (level, attrs) = split_attrs(token).ok_or_else(|| bad(token, "unbalanced ()"))?;
            let (kind, count) =
                level.split_once(':').ok_or_else(|| bad(token, "a level is written type:count"))?;
            let count: usize = count.parse().map_err(|_| bad(token, "count is not a number"))?;
            if count == 0 || count > 4096 {
                return Err(bad(token, "count must be 1..=4096"));
            }
            let kind = kind.to_ascii_lowercase();
            if is_numa_name(&kind) {
                if seen_pu {
                    return Err(bad(token, "pu must be the last level"));
                }
                if numa_at.is_some() {
                    return Err(bad(token, "NUMA nodes at more than one level"));
                }
                let memory = parse_memory_attr(attrs).ok_or_else(|| bad(token, "bad memory="))?;
                levels.push((count, false));
                numa_at = Some((levels.len() as isize - 1, memory));
                continue;
            }
            let known = matches!(
                kind.as_str(),
                "machine" | "pack" | "package" | "socket" | "die" | "group" | "core" | "pu"
            ) || is_cache_name(&kind);
            if !known {
                return Err(bad(token, "unknown object type"));
            }
            if kind == "machine" {
                if !levels.is_empty() || count != 1 {
                    return Err(bad(token, "machine must be the first level, with count 1"));
                }
                continue;
            }
            if seen_pu {
                return Err(bad(token, "pu must be the last level"));
            }
            seen_pu = kind == "pu";
            levels.push((count, kind == "core"));
        }
        if !seen_pu {
            return Err(bad("", "the last level must be pu:N"));
        }
        let pus = levels
            .iter()
            .try_fold(1usize, |acc, &(c, _)| acc.checked_mul(c))
            .filter(|&n| n <= 65_536)
            .ok_or_else(|| bad("", "more than 65536 PUs"))?;
        let cores = match levels.iter().position(|&(_, is_core)| is_core) {
            Some(i) => levels[..=i].iter().map(|&(c, _)| c).product(),
            None => pus,
        };
        let (numa_level, memory) = numa_at.unwrap_or((-1, 0));
        let node_count: usize = levels[..(numa_level + 1) as usize].iter().map(|&(c, _)| c).product();
        if node_count > 1024 {
            return Err(bad("", "more than 1024 NUMA nodes"));
        }
        let per_node = pus / node_count;
        let nodes = (0..node_count)
            .map(|n| NumaNode {
                id: NodeId(n as u32),
                cpus: (n * per_node..(n + 1) * per_node).collect(),
                memory_bytes: memory,
            })
            .collect();
        Ok(Self { nodes, cores, pus, source: TopologySource::Synthetic })
    }

    /// A one-node topology (node 0) holding `cpus` (sorted, duplicates removed; an empty list
    /// means CPU 0); what a machine without NUMA looks like.
    pub fn single_node(cpus: impl IntoIterator<Item = usize>) -> Self {
        let mut cpus: Vec<usize> = cpus.into_iter().collect();
        cpus.sort_unstable();
        cpus.dedup();
        if cpus.is_empty() {
            cpus.push(0);
        }
        let pus = cpus.len();
        Self {
            nodes: vec![NumaNode { id: NodeId(0), cpus, memory_bytes: 0 }],
            cores: pus,
            pus,
            source: TopologySource::Sysfs,
        }
    }

    /// The NUMA nodes, ascending by [`NodeId`]; never empty.
    pub fn nodes(&self) -> &[NumaNode] {
        &self.nodes
    }

    /// How many NUMA nodes there are (at least 1).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// How many cores there are.
    pub fn core_count(&self) -> usize {
        self.cores
    }

    /// How many PUs (logical CPUs) there are.
    pub fn pu_count(&self) -> usize {
        self.pus
    }

    /// Where this topology came from.
    pub fn source(&self) -> TopologySource {
        self.source
    }

    /// The node with OS number `id`, or [`TopologyError::NoSuchNode`].
    pub fn node(&self, id: NodeId) -> Result<&NumaNode, TopologyError> {
        self.index_of(id).map(|i| &self.nodes[i])
    }

    /// The position of node `id` in [`Topology::nodes`], or [`TopologyError::NoSuchNode`].
    pub fn index_of(&self, id: NodeId) -> Result<usize, TopologyError> {
        self.nodes
            .binary_search_by_key(&id, |n| n.id)
            .map_err(|_| TopologyError::NoSuchNode { node: id, count: self.nodes.len() })
    }

    /// The node whose CPU list holds `cpu`.
    pub fn node_of_cpu(&self, cpu: usize) -> Option<NodeId> {
        self.nodes.iter().find(|n| n.cpus.binary_search(&cpu).is_ok()).map(|n| n.id)
    }

    /// The node of the CPU the calling thread runs on now; the first node if that CPU is not in
    /// this topology (a synthetic one) or `getcpu` fails. A thread not pinned with
    /// [`Topology::bind_thread_to_node`] may move to another node at any time.
    pub fn current_node(&self) -> NodeId {
        match sys::getcpu() {
            Ok((cpu, node)) => self
                .node_of_cpu(cpu as usize)
                .or_else(|| self.index_of(NodeId(node)).ok().map(|i| self.nodes[i].id))
                .unwrap_or(self.nodes[0].id),
            Err(_) => self.nodes[0].id,
        }
    }

    /// Pins the calling thread to the CPUs of `node` (`sched_setaffinity`). Fails with
    /// [`TopologyError::NoSuchNode`] for a node not in this topology and
    /// [`TopologyError::Affinity`] when the kernel refuses (e.g. the CPUs of a synthetic node do
    /// not exist here); on failure the thread's affinity is unchanged.
    pub fn bind_thread_to_node(&self, node: NodeId) -> Result<(), TopologyError> {
        let n = self.node(node)?;
        sys::set_thread_affinity(&n.cpus).map_err(|e| TopologyError::Affinity { node, source: e.io() })
    }

    /// The running machine's topology as hwloc sees it.
    #[cfg(feature = "hwloc")]
    pub fn from_hwloc() -> Result<Self, TopologyError> {
        let topo = hwlocality::Topology::new().map_err(|e| TopologyError::Hwloc(Box::new(e)))?;
        Ok(Self::from_hwloc_topology(&topo, TopologySource::Hwloc))
    }

    /// Builds a topology with hwloc's own synthetic backend (the full hwloc synthetic syntax).
    #[cfg(feature = "hwloc")]
    pub fn from_hwloc_synthetic(description: &str) -> Result<Self, TopologyError> {
        let topo = hwlocality::Topology::builder()
            .from_synthetic(description)
            .map_err(|e| TopologyError::Hwloc(Box::new(e)))?
            .build()
            .map_err(|e| TopologyError::Hwloc(Box::new(e)))?;
        Ok(Self::from_hwloc_topology(&topo, TopologySource::Synthetic))
    }

    #[cfg(feature = "hwloc")]
    fn from_hwloc_topology(topo: &hwlocality::Topology, source: TopologySource) -> Self {
        use hwlocality::object::types::ObjectType;
        let mut nodes: Vec<NumaNode> = topo
            .objects_with_type(ObjectType::NUMANode)
            .map(|obj| {
                let mut cpus: Vec<usize> =
                    obj.cpuset().map(|set| set.iter_set().map(usize::from).collect()).unwrap_or_default();
                cpus.sort_unstable();
                let memory_bytes = obj.total_memory();
                NumaNode { id: NodeId(obj.os_index().map_or(0, |i| i as u32)), cpus, memory_bytes }
            })
            .collect();
        nodes.sort_by_key(|n| n.id);
        let pus = topo.objects_with_type(ObjectType::PU).count().max(1);
        let cores = topo.objects_with_type(ObjectType::Core).count();
        if nodes.is_empty() {
            nodes.push(NumaNode { id: NodeId(0), cpus: (0..pus).collect(), memory_bytes: 0 });
        }
        Self { nodes, cores: if cores == 0 { pus } else { cores }, pus, source }
    }
}

fn read(path: &Path) -> Result<String, TopologyError> {
    std::fs::read_to_string(path).map_err(|source| TopologyError::Io { path: path.to_owned(), source })
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Parses a kernel CPU list such as `"0-3,8,10-11"` (empty means no CPUs).
pub(crate) fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let text = text.trim();
    let mut cpus = Vec::new();
    if text.is_empty() {
        return Some(cpus);
    }
    for part in text.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().ok()?;
                let b: usize = b.trim().parse().ok()?;
                if b < a || b - a > 65_536 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.contains("MemTotal:"))?;
    let mut words = line.split_whitespace().rev();
    let unit = words.next()?;
    let value: u64 = words.next()?.parse().ok()?;
    Some(if unit.eq_ignore_ascii_case("kb") { value * 1024 } else { value })
}

fn split_attrs(token: &str) -> Option<(&str, &str)> {
    match token.find('(') {
        Some(i) => {
            let attrs = token[i + 1..].strip_suffix(')')?;
            Some((&token[..i], attrs))
        }
        None => Some((token, "")),
    }
}

fn is_numa_name(kind: &str) -> bool {
    matches!(kind.to_ascii_lowercase().as_str(), "numa" | "node" | "numanode")
}

fn is_cache_name(kind: &str) -> bool {
    let Some(rest) = kind.strip_prefix('l') else {
        return false;
    };
    let rest = rest
        .strip_suffix("cache")
        .or_else(|| rest.strip_suffix("icache"))
        .or_else(|| rest.strip_suffix('i'))
        .or_else(|| rest.strip_suffix('d'))
        .unwrap_or(rest);
    matches!(rest, "1" | "2" | "3" | "4" | "5")
}

/// `memory=SIZE` among comma-separated attributes; 0 when absent.
fn parse_memory_attr(attrs: &str) -> Option<u64> {
    for attr in attrs.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        if let Some(v) = attr.strip_prefix("memory=") {
            let upper = v.to_ascii_uppercase();
            let (digits, mult) = [("TB", 1u64 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)]
                .iter()
                .find_map(|&(s, m)| upper.strip_suffix(s).map(|d| (d.to_owned(), m)))
                .unwrap_or((upper.clone(), 1));
            let n: u64 = digits.trim().parse().ok()?;
            return n.checked_mul(mult);
        }
    }
    Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn meminfo() {
        let t = "Node 0 MemTotal:       16318868 kB\nNode 0 MemFree: 1 kB\n";
        assert_eq!(parse_meminfo_total(t), Some(16318868 * 1024));
    }

    #[test]
    fn synthetic_shapes() {
        let t = Topology::synthetic("pack:2 [numa] core:2 pu:1").unwrap();
        assert_eq!((t.node_count(), t.core_count(), t.pu_count()), (2, 4, 4));
        assert_eq!(t.nodes()[1].cpus(), &[2, 3]);
        let t = Topology::synthetic("numa:4 core:2 pu:2").unwrap();
        assert_eq!((t.node_count(), t.core_count(), t.pu_count()), (4, 8, 16));
        let t = Topology::synthetic("core:4 pu:2").unwrap();
        assert_eq!(t.node_count(), 1);
        assert_eq!(t.nodes()[0].cpus().len(), 8);
        let t = Topology::synthetic("pack:1 [numa(memory=2GB)] l3:1 core:2 pu:1").unwrap();
        assert_eq!(t.nodes()[0].memory_bytes(), 2 << 30);
        for bad in ["", "pack:2", "pack:x pu:1", "pack:0 pu:1", "bogus:2 pu:1", "pack:2 [numa pu:1"] {
            assert!(Topology::synthetic(bad).is_err(), "{bad:?} accepted");
        }
    }
}
