//! A deterministic in-memory network for tests and simulations: seeded RNG, per-link latency,
//! jitter, loss, duplication and reordering, and partitions that can be cut and healed.
//!
//! ```
//! use pvp_global::sync::{LinkConfig, SimNetwork, Transport};
//! use pvp_core::RegionId;
//! use std::time::Duration;
//!
//! let (kr, jp) = (RegionId::new("kr")?, RegionId::new("jp")?);
//! let net = SimNetwork::new(7, LinkConfig::new(Duration::from_millis(15)));
//! let mut a = net.endpoint(kr);
//! let mut b = net.endpoint(jp);
//! a.send(Duration::ZERO, jp, b"hi")?;
//! let mut buf = Vec::new();
//! assert_eq!(b.recv(Duration::from_millis(10), &mut buf)?, None); // still in flight
//! assert_eq!(b.recv(Duration::from_millis(15), &mut buf)?, Some(kr));
//! assert_eq!(buf, b"hi");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::transport::{Transport, TransportError};
use pvp_core::RegionId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::rc::Rc;
use std::time::Duration;

/// Behaviour of one direction of a link.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct LinkConfig {
    /// One-way base latency (half the RTT).
    pub latency: Duration,
    /// Uniform extra delay in `0..=jitter`.
    pub jitter: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back by up to one extra latency (reordering it).
    pub reorder: f64,
}

impl LinkConfig {
    /// A perfect link with one-way `latency`.
    pub const fn new(latency: Duration) -> Self {
        Self { latency, jitter: Duration::ZERO, loss: 0.0, duplicate: 0.0, reorder: 0.0 }
    }

    /// Sets jitter.
    pub const fn jitter(mut self, j: Duration) -> Self {
        self.jitter = j;
        self
    }

    /// Sets the loss probability.
    pub const fn loss(mut self, p: f64) -> Self {
        self.loss = p;
        self
    }

    /// Sets the duplication probability.
    pub const fn duplicate(mut self, p: f64) -> Self {
        self.duplicate = p;
        self
    }

    /// Sets the reordering probability.
    pub const fn reorder(mut self, p: f64) -> Self {
        self.reorder = p;
        self
    }
}

/// Datagram counters of a [`SimNetwork`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimStats {
    /// Datagrams sent.
    pub sent: u64,
    /// Lost by the loss probability.
    pub lost: u64,
    /// Dropped by a partition.
    pub partitioned: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Delivered.
    pub delivered: u64,
    /// Bytes sent.
    pub bytes: u64,
}

type InFlight = Reverse<(Duration, u64, RegionId, RegionId, Vec<u8>)>;

#[derive(Debug)]
struct Inner {
    rng: ChaCha8Rng,
    default: LinkConfig,
    links: HashMap<(RegionId, RegionId), LinkConfig>,
    cut: BTreeSet<(RegionId, RegionId)>,
    queue: BinaryHeap<InFlight>,
    seq: u64,
    stats: SimStats,
}

/// The shared simulated network; cheap to clone (a handle).
#[derive(Debug, Clone)]
pub struct SimNetwork {
    inner: Rc<RefCell<Inner>>,
}

impl SimNetwork {
    /// A network where every link behaves as `default`, with RNG seed `seed`.
    pub fn new(seed: u64, default: LinkConfig) -> Self {
        Self {
            inner: Rc::new(RefCell::new(Inner {
                rng: ChaCha8Rng::seed_from_u64(seed),
                default,
                links: HashMap::new(),
                cut: BTreeSet::new(),
                queue: BinaryHeap::new(),
                seq: 0,
                stats: SimStats::default(),
            })),
        }
    }

    /// Sets both directions of the link `a`–`b`.
    pub fn set_link(&self, a: RegionId, b: RegionId, cfg: LinkConfig) {
        let mut i = self.inner.borrow_mut();
        i.links.insert((a, b), cfg);
        i.links.insert((b, a), cfg);
    }

    /// Sets the RTT of `a`–`b` (one-way latency is half), keeping the other settings of the
    /// default link.
    pub fn set_rtt(&self, a: RegionId, b: RegionId, rtt: Duration) {
        let mut cfg = self.inner.borrow().default;
        cfg.latency = rtt / 2;
        self.set_link(a, b, cfg);
    }

    /// Cuts the link `a`–`b` both ways: datagrams sent while cut are dropped.
    pub fn partition(&self, a: RegionId, b: RegionId) {
        let mut i = self.inner.borrow_mut();
        i.cut.insert((a, b));
        i.cut.insert((b, a));
    }

    /// Cuts every link of `region` to the `others`.
    pub fn isolate(&self, region: RegionId, others: &[RegionId]) {
        for o in others {
            if *o != region {
                self.partition(region, *o);
            }
        }
    }

    /// Heals the link `a`–`b` (both ways).
    pub fn heal_link(&self, a: RegionId, b: RegionId) {
        let mut i = self.inner.borrow_mut();
        i.cut.remove(&(a, b));
        i.cut.remove(&(b, a));
    }

    /// Whether the link `a` → `b` is cut.
    pub fn is_cut(&self, a: RegionId, b: RegionId) -> bool {
        self.inner.borrow().cut.contains(&(a, b))
    }

    /// Heals every cut link.
    pub fn heal(&self) {
        self.inner.borrow_mut().cut.clear();
    }

    /// A transport endpoint for `region`.
    pub fn endpoint(&self, region: RegionId) -> SimEndpoint {
        SimEndpoint { net: self.clone(), region }
    }

    /// When the next in-flight datagram lands.
    pub fn next_delivery(&self) -> Option<Duration> {
        self.inner.borrow().queue.peek().map(|Reverse(d)| d.0)
    }

    /// Number of datagrams in flight.
    pub fn in_flight(&self) -> usize {
        self.inner.borrow().queue.len()
    }

    /// Counters.
    pub fn stats(&self) -> SimStats {
        self.inner.borrow().stats
    }

    fn send(&self, now: Duration, from: RegionId, to: RegionId, payload: &[u8]) {
        let mut i = self.inner.borrow_mut();
        i.stats.sent += 1;
        i.stats.bytes += payload.len() as u64;
        if i.cut.contains(&(from, to)) {
            i.stats.partitioned += 1;
            return;
        }
        let cfg = i.links.get(&(from, to)).copied().unwrap_or(i.default);
        if i.rng.random_bool(cfg.loss.clamp(0.0, 1.0)) {
            i.stats.lost += 1;
            return;
        }
        let copies = if i.rng.random_bool(cfg.duplicate.clamp(0.0, 1.0)) {
            i.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = if cfg.jitter.is_zero() {
                Duration::ZERO
            } else {
                Duration::from_nanos(
                    i.rng.random_range(0..=u64::try_from(cfg.jitter.as_nanos()).unwrap_or(u64::MAX)),
                )
            };
            let hold = if i.rng.random_bool(cfg.reorder.clamp(0.0, 1.0)) {
                Duration::from_nanos(
                    i.rng.random_range(0..=u64::try_from(cfg.latency.as_nanos()).unwrap_or(u64::MAX)),
                )
            } else {
                Duration::ZERO
            };
            let at = now + cfg.latency + jitter + hold;
            let seq = i.seq;
            i.seq += 1;
            i.queue.push(Reverse((at, seq, to, from, payload.to_vec())));
        }
    }

    /// Takes every datagram due by `now`, as `(to, from, payload)`, in delivery order.
    pub fn deliver_due(&self, now: Duration) -> Vec<(RegionId, RegionId, Vec<u8>)> {
        let mut i = self.inner.borrow_mut();
        let mut out = Vec::new();
        while i.queue.peek().is_some_and(|Reverse(d)| d.0 <= now) {
            if let Some(Reverse((_, _, to, from, p))) = i.queue.pop() {
                i.stats.delivered += 1;
                out.push((to, from, p));
            }
        }
        out
    }

    fn recv_for(&self, now: Duration, region: RegionId, buf: &mut Vec<u8>) -> Option<RegionId> {
        let mut i = self.inner.borrow_mut();
        // Small simulations: scan for the earliest due datagram addressed to `region`.
        let mut held = Vec::new();
        let mut found = None;
        while let Some(Reverse(d)) = i.queue.peek() {
            if d.0 > now {
                break;
            }
            let Some(Reverse(d)) = i.queue.pop() else {
                break;
            };
            if d.2 == region {
                found = Some(d);
                break;
            }
            held.push(Reverse(d));
        }
        for h in held {
            i.queue.push(h);
        }
        let (_, _, _, from, p) = found?;
        i.stats.delivered += 1;
        buf.clear();
        buf.extend_from_slice(&p);
        Some(from)
    }
}

/// One region's end of a [`SimNetwork`].
#[derive(Debug, Clone)]
pub struct SimEndpoint {
    net: SimNetwork,
    region: RegionId,
}

impl Transport for SimEndpoint {
    fn send(&mut self, now: Duration, to: RegionId, payload: &[u8]) -> Result<(), TransportError> {
        self.net.send(now, self.region, to, payload);
        Ok(())
    }

    fn recv(&mut self, now: Duration, buf: &mut Vec<u8>) -> Result<Option<RegionId>, TransportError> {
        Ok(self.net.recv_for(now, self.region, buf))
    }
}

/// Several regions' [`CrossRegionSync`](super::CrossRegionSync)s on one [`SimNetwork`], driven in virtual time: the harness
/// shared by tests, simulations and the convergence benchmark. Deterministic for a given seed.
#[derive(Debug)]
pub struct SimCluster {
    net: SimNetwork,
    nodes: Vec<Option<super::CrossRegionSync>>,
    configs: Vec<super::SyncConfig>,
    endpoints: Vec<SimEndpoint>,
    now: Duration,
    buf: Vec<u8>,
}

impl SimCluster {
    /// Nodes for `regions` (full mesh), all links `link`, starting at time `start`. `configure`
    /// adjusts each region's config.
    pub fn new(
        seed: u64,
        regions: &[RegionId],
        link: LinkConfig,
        start: Duration,
        configure: impl Fn(&mut super::SyncConfig),
    ) -> Result<Self, super::ConfigError> {
        let net = SimNetwork::new(seed, link);
        let mut nodes = Vec::new();
        let mut configs = Vec::new();
        let mut endpoints = Vec::new();
        for &r in regions {
            let peers = regions.iter().copied().filter(|p| *p != r).collect();
            let mut cfg = super::SyncConfig::new(r, peers)?;
            configure(&mut cfg);
            cfg.validate()?;
            nodes.push(Some(super::CrossRegionSync::new(cfg.clone(), start)));
            configs.push(cfg);
            endpoints.push(net.endpoint(r));
        }
        Ok(Self { net, nodes, configs, endpoints, now: start, buf: Vec::new() })
    }

    /// The network (to set links, partition, heal).
    pub const fn net(&self) -> &SimNetwork {
        &self.net
    }

    /// Current virtual time.
    pub const fn now(&self) -> Duration {
        self.now
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no regions.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`, or `None` while it is crashed.
    pub fn node(&self, i: usize) -> Option<&super::CrossRegionSync> {
        self.nodes.get(i).and_then(Option::as_ref)
    }

    /// Node `i`, mutably.
    pub fn node_mut(&mut self, i: usize) -> Option<&mut super::CrossRegionSync> {
        self.nodes.get_mut(i).and_then(Option::as_mut)
    }

    /// Crashes node `i` (its state is gone; datagrams to it are dropped) and returns it.
    pub fn crash(&mut self, i: usize) -> Option<super::CrossRegionSync> {
        self.nodes.get_mut(i).and_then(Option::take)
    }

    /// Starts node `i` again, from `snapshot` or, without one, recovering from its peers.
    pub fn restart(&mut self, i: usize, snapshot: Option<super::Snapshot>) {
        let Some(cfg) = self.configs.get(i).cloned() else {
            return;
        };
        let node = match snapshot {
            Some(s) => super::CrossRegionSync::restore(cfg, s, self.now),
            None => super::CrossRegionSync::recover_from_peers(cfg, self.now),
        };
        self.nodes[i] = Some(node);
    }

    /// Advances virtual time to `t`, processing every delivery and timer on the way in order.
    pub fn run_until(&mut self, t: Duration) {
        let mut guard = 0u64;
        while self.now < t && guard < 10_000_000 {
            guard += 1;
            let mut next = t;
            if let Some(d) = self.net.next_delivery() {
                next = next.min(d);
            }
            for n in self.nodes.iter().flatten() {
                next = next.min(n.poll_timeout());
            }
            self.now = next.max(self.now);
            self.process();
            if self.now >= t {
                break;
            }
        }
        self.process();
    }

    /// Advances virtual time by `d`.
    pub fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    fn process(&mut self) {
        let now = self.now;
        // Deliveries first (possibly to crashed nodes: dropped), then timers, then sends.
        for i in 0..self.nodes.len() {
            while let Ok(Some(from)) = self.endpoints[i].recv(now, &mut self.buf) {
                if let Some(n) = self.nodes[i].as_mut() {
                    n.handle_datagram(now, from, &self.buf);
                }
            }
        }
        for i in 0..self.nodes.len() {
            let Some(n) = self.nodes[i].as_mut() else {
                continue;
            };
            if now >= n.poll_timeout() {
                n.handle_timeout(now);
            }
            while let Some(tx) = n.poll_transmit() {
                let _ = self.endpoints[i].send(now, tx.to, &tx.payload);
            }
        }
    }

    /// Whether every running node holds exactly the same keys and values.
    pub fn converged(&self) -> bool {
        let mut running = self.nodes.iter().flatten();
        let Some(first) = running.next() else {
            return true;
        };
        running.all(|n| n.len() == first.len() && n.iter().eq(first.iter()))
    }
}
