//! CrossRegionSync: each region holds a replica of the shared game state (bans, friends,
//! profiles, leaderboard scores) as CRDTs and keeps it in step with its peers.
//!
//! [`CrossRegionSync`] is a sans-IO state machine. Call it in this order:
//! 1. writes: [`CrossRegionSync::write`] (or the helpers [`CrossRegionSync::ban`], [`CrossRegionSync::submit_score`],
//!    ...), applied locally at once;
//! 2. [`CrossRegionSync::handle_datagram`] for every datagram a [`Transport`] received;
//! 3. [`CrossRegionSync::handle_timeout`] when [`CrossRegionSync::poll_timeout`] is due;
//! 4. drain [`CrossRegionSync::poll_transmit`] into the transport and [`CrossRegionSync::poll_event`] for
//!    STRONG write outcomes.
//!
//! # Strategies
//! - [`Strategy::Eventual`]: the write's delta joins the delta log; every `flush_interval` the
//!   log is batched per peer (deltas of one key joined), sent, acknowledged, and resent after
//!   `retransmit_after` without an ack. Lag is a flush interval plus one-way latency.
//! - [`Strategy::Strong`]: the delta is also sent at once as a STRONG write; the write is
//!   committed when a majority of regions (this one included) has applied it, reported by
//!   [`SyncEvent::StrongCommitted`], or fails with [`SyncError::StrongTimeout`] after
//!   `strong_timeout`. A failed STRONG write is *not* rolled back (a CRDT write cannot be):
//!   it stays applied locally and still reaches the others eventually.
//!
//! Anti-entropy: every `anti_entropy_interval` a region sends each quiet peer a digest (a hash
//! per bucket of keys); the peer answers mismatched buckets with their states and asks for ours,
//! so a region that was cut off, restarted or lost its snapshot catches up without shipping the
//! whole state. [`CrossRegionSync::peer_progress`] tells how far each peer has acknowledged this
//! region's writes ([`PeerProgress`]); failover reads it to decide when a returning region
//! has caught up, and [`CrossRegionSync::request_anti_entropy`] starts a digest round at once.
//!
//! ```
//! use pvp_global::sync::{SyncConfig, CrossRegionSync, SyncEvent, WriteReceipt};
//! use pvp_core::{PlayerId, RegionId};
//! use std::time::Duration;
//!
//! let kr = RegionId::new("kr")?;
//! let jp = RegionId::new("jp")?;
//! let t0 = Duration::from_secs(1_000);
//! let mut a = CrossRegionSync::new(SyncConfig::new(kr, vec![jp])?, t0);
//! let mut b = CrossRegionSync::new(SyncConfig::new(jp, vec![kr])?, t0);
//!
//! // A ban is STRONG by default: pending until a majority (2 of 2 here) has it.
//! let WriteReceipt::Pending(id) = a.ban(PlayerId::new(7), t0)? else { unreachable!() };
//! let mut now = t0;
//! for _ in 0..10 {
//!     now += Duration::from_millis(10);
//!     a.handle_timeout(now);
//!     b.handle_timeout(now);
//!     while let Some(t) = a.poll_transmit() { b.handle_datagram(now, kr, &t.payload); }
//!     while let Some(t) = b.poll_transmit() { a.handle_datagram(now, jp, &t.payload); }
//! }
//! assert!(b.is_banned(PlayerId::new(7)));
//! assert_eq!(a.poll_event(), Some(SyncEvent::StrongCommitted { id }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod anti_entropy;
mod config;
pub mod driver;
mod error;
mod model;
pub mod msg;
mod replication;
pub mod sim;
pub mod snapshot;
mod stats;
mod strong;
pub mod transport;
pub mod udp;
mod write;

pub use config::SyncConfig;
pub use driver::SyncDriver;
pub use error::{ConfigError, SyncError};
pub use model::{
    DataClass, Key, MAX_PROFILE_FIELDS, MAX_SET_LEN, MAX_TEXT, Strategy, StrongId, StrongStatus, SyncEvent,
    Transmit, Value, WriteOp, WriteReceipt,
};
pub use msg::{Body, DecodeError, Message};
pub use replication::PeerProgress;
pub use sim::{LinkConfig, SimCluster, SimNetwork};
pub use snapshot::{Snapshot, SnapshotError, SnapshotStore};
pub use stats::SyncStats;
pub use transport::{Transport, TransportError};
pub use udp::UdpTransport;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use pvp_core::hlc::{Hlc, HlcError, HlcStamp};
use pvp_core::{PlayerId, RegionId};

use crate::crdt::{Actor, Profile};
use crate::leaderboard::{GameMode, GlobalLeaderboard, ScoreOperator};
use anti_entropy::bucket_of;
use msg::DIGEST_BUCKETS;
use replication::PeerState;
use stats::Counter;
use strong::PendingStrong;

/// The name this type had before 0.2; kept so that code written against it still builds.
#[deprecated(since = "0.2.0", note = "renamed to `CrossRegionSync`, the name the docs use")]
pub type SyncNode = CrossRegionSync;

/// Datagrams queued for [`CrossRegionSync::poll_transmit`]; past it new ones are dropped and
/// counted (the protocol retransmits what matters).
const MAX_OUTBOX: usize = 65_536;

/// One region's replica of the shared game state and its side of the sync protocol (sans-IO).
/// See the [module docs](self).
#[derive(Debug)]
pub struct CrossRegionSync {
    cfg: SyncConfig,
    actor: Actor,
    hlc: Hlc,
    buckets: Vec<BTreeMap<Key, Value>>,
    key_hashes: HashMap<Key, u64>,
    bucket_hashes: Vec<u64>,
    dirty: BTreeSet<Key>,
    boards: GlobalLeaderboard,
    log: VecDeque<(u64, Key, Value)>,
    next_seq: u64,
    peers: Vec<PeerState>,
    strong: BTreeMap<StrongId, PendingStrong>,
    strong_done: BTreeMap<StrongId, StrongStatus>,
    next_strong: StrongId,
    outbox: VecDeque<Transmit>,
    events: VecDeque<SyncEvent>,
    next_flush: Duration,
    next_anti_entropy: Duration,
    stats: SyncStats,
}

/// Milliseconds of `d`, saturating (the HLC's unit).
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl CrossRegionSync {
    /// A fresh, empty replica. `now` is the time since the epoch shared by all regions (the UNIX
    /// epoch in production); it also becomes this run's incarnation.
    pub fn new(cfg: SyncConfig, now: Duration) -> Self {
        Self::build(cfg, now, ms(now).max(1), None)
    }

    /// A replica restored from `snap`, in a new incarnation (so no counter or dot of the lost
    /// tail of writes is ever reused). It exchanges digests with every peer at once to catch up.
    pub fn restore(cfg: SyncConfig, snap: Snapshot, now: Duration) -> Self {
        let inc = ms(now).max(snap.incarnation.saturating_add(1));
        let mut node = Self::build(cfg, now, inc, Some(snap.hlc_last));
        for (mode, op) in snap.modes {
            node.boards.define(mode, op);
        }
        for (k, mut v) in snap.entries {
            if k.accepts(&v) && v.is_valid() {
                v.normalize();
                node.merge_entry(k, &v);
            }
        }
        node
    }

    /// An empty replica that asks its peers for their whole state (for a region whose snapshot
    /// was missing, torn or corrupt).
    pub fn recover_from_peers(cfg: SyncConfig, now: Duration) -> Self {
        let mut node = Self::new(cfg, now);
        let all: Vec<u16> = (0..DIGEST_BUCKETS as u16).collect();
        for i in 0..node.peers.len() {
            let to = node.peers[i].region;
            for chunk in all.chunks(64) {
                node.send(to, Body::RepairRequest { buckets: chunk.to_vec() });
            }
        }
        node
    }

    fn build(cfg: SyncConfig, now: Duration, incarnation: u64, hlc_last: Option<HlcStamp>) -> Self {
        let drift = ms(cfg.max_clock_drift);
        let mut hlc = match hlc_last {
            Some(last) => Hlc::resume(cfg.region, drift, last),
            None => Hlc::new(cfg.region, drift),
        };
        hlc.now(ms(now));
        let peers = cfg.peers.iter().map(|&region| PeerState::new(region, now)).collect();
        Self {
            actor: Actor::new(cfg.region, incarnation),
            hlc,
            buckets: vec![BTreeMap::new(); DIGEST_BUCKETS],
            key_hashes: HashMap::new(),
            bucket_hashes: vec![0; DIGEST_BUCKETS],
            dirty: BTreeSet::new(),
            boards: GlobalLeaderboard::new(),
            log: VecDeque::new(),
            next_seq: 1,
            peers,
            strong: BTreeMap::new(),
            strong_done: BTreeMap::new(),
            next_strong: 1,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            next_flush: now.saturating_add(cfg.flush_interval),
            // First digest soon after start so a restarted region catches up quickly.
            next_anti_entropy: now.saturating_add(cfg.flush_interval),
            stats: SyncStats::default(),
            cfg,
        }
    }

    /// This region.
    pub const fn region(&self) -> RegionId {
        self.cfg.region
    }

    /// This run's writer identity.
    pub const fn actor(&self) -> Actor {
        self.actor
    }

    /// The configuration.
    pub const fn config(&self) -> &SyncConfig {
        &self.cfg
    }

    /// The latest HLC stamp this node issued or observed.
    pub const fn hlc_last(&self) -> HlcStamp {
        self.hlc.last()
    }

    /// Counters.
    pub const fn stats(&self) -> SyncStats {
        self.stats
    }

    /// The value under `key`.
    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.buckets[bucket_of(key)].get(key)
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.key_hashes.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.key_hashes.is_empty()
    }

    /// Every key and value, in bucket then key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Value)> {
        self.buckets.iter().flat_map(|b| b.iter())
    }

    /// Whether `player` is banned in this region's replica.
    pub fn is_banned(&self, player: PlayerId) -> bool {
        matches!(self.get(&Key::Ban(player)), Some(Value::Set(s)) if s.contains(&0))
    }

    /// `player`'s friends.
    pub fn friends(&self, player: PlayerId) -> Vec<PlayerId> {
        match self.get(&Key::Friends(player)) {
            Some(Value::Set(s)) => s.iter().map(|&f| PlayerId::new(f)).collect(),
            _ => Vec::new(),
        }
    }

    /// `player`'s profile.
    pub fn profile(&self, player: PlayerId) -> Option<&Profile> {
        match self.get(&Key::Profile(player)) {
            Some(Value::Profile(p)) => Some(p),
            _ => None,
        }
    }

    /// The leaderboards, as merged from every region.
    pub const fn leaderboards(&self) -> &GlobalLeaderboard {
        &self.boards
    }

    /// Declares a leaderboard mode. Every region must declare it the same way; a score arriving
    /// for an undeclared mode is indexed with the operator its CRDT implies.
    pub fn define_mode(&mut self, mode: GameMode, op: ScoreOperator) -> Result<(), SyncError> {
        if self.boards.define(mode, op) {
            Ok(())
        } else {
            Err(SyncError::ModeConflict { mode, existing: self.boards.operator(mode).unwrap_or(op) })
        }
    }

    /// A snapshot of the replicated state for [`SnapshotStore::save`].
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            region: self.cfg.region,
            incarnation: self.actor.incarnation,
            hlc_last: self.hlc.last(),
            modes: self.boards.modes().collect(),
            entries: self.iter().map(|(k, v)| (*k, v.clone())).collect(),
        }
    }

    fn peer_index(&self, r: RegionId) -> Option<usize> {
        self.peers.iter().position(|p| p.region == r)
    }

    fn send(&mut self, to: RegionId, body: Body) {
        let is_delta = matches!(body, Body::Deltas { .. });
        let msg = Message {
            from: self.cfg.region,
            incarnation: self.actor.incarnation,
            stamp: self.hlc.last(),
            body,
        };
        let mut payload = Vec::new();
        if msg::encode(&msg, &mut payload).is_err() || payload.len() > self.cfg.max_message_bytes {
            self.stats.add(Counter::OversizedEntries, 1);
            return;
        }
        if self.outbox.len() >= MAX_OUTBOX {
            self.stats.add(Counter::OutboxDropped, 1);
            return;
        }
        self.stats.add(Counter::MessagesSent, 1);
        self.stats.add(Counter::BytesSent, payload.len() as u64);
        if is_delta {
            self.stats.add(Counter::DeltaBytesSent, payload.len() as u64);
        }
        self.outbox.push_back(Transmit { to, payload });
    }

    /// Feeds one datagram received from `from` at `now`. Malformed, oversized, stale or
    /// unauthenticated-looking datagrams are counted in [`SyncStats`] and dropped, never applied.
    pub fn handle_datagram(&mut self, now: Duration, from: RegionId, bytes: &[u8]) {
        let msg = match msg::decode(bytes, self.cfg.max_message_bytes) {
            Ok(m) => m,
            Err(e) => {
                let counter = match e {
                    DecodeError::Oversized { .. } => Counter::OversizedDropped,
                    DecodeError::Version(_) => Counter::VersionDropped,
                    DecodeError::Malformed => Counter::MalformedDropped,
                };
                self.stats.add(counter, 1);
                return;
            }
        };
        let Some(pi) = self.peer_index(from).filter(|_| msg.from == from) else {
            self.stats.add(Counter::UnknownPeerDropped, 1);
            return;
        };
        if let Err(HlcError::TooFarInFuture { .. } | HlcError::LogicalOverflow) = self.check_clock(&msg, now)
        {
            self.stats.add(Counter::ClockRejected, 1);
            return;
        }
        if !self.on_incarnation(pi, msg.incarnation, now) {
            self.stats.add(Counter::StaleDropped, 1);
            return;
        }
        let _ = self.hlc.update(msg.stamp, ms(now));
        self.stats.add(Counter::MessagesReceived, 1);
        let theirs = msg.incarnation;
        match msg.body {
            Body::Deltas { floor, first, last, entries } => {
                self.on_deltas(pi, theirs, (floor, first, last), &entries)
            }
            Body::DeltaAck { incarnation, upto } => self.on_delta_ack(pi, incarnation, upto, now),
            Body::Digest { buckets } => self.on_digest(pi, &buckets, now),
            Body::RepairRequest { buckets } => self.on_repair_request(pi, &buckets),
            Body::Repair { entries } => self.on_repair(&entries),
            Body::Strong { id, entries } => self.on_strong(pi, theirs, id, &entries),
            Body::StrongAck { id, incarnation } => self.on_strong_ack(pi, id, incarnation),
        }
    }

    fn check_clock(&self, msg: &Message, now: Duration) -> Result<(), HlcError> {
        let now_ms = ms(now);
        self.hlc.check(msg.stamp, now_ms)?;
        let entries = match &msg.body {
            Body::Deltas { entries, .. } | Body::Repair { entries } | Body::Strong { entries, .. } => entries,
            _ => return Ok(()),
        };
        for (_, v) in entries {
            if let Some(s) = v.max_stamp() {
                self.hlc.check(s, now_ms)?;
            }
        }
        Ok(())
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Duration {
        let t = self.next_flush.min(self.next_anti_entropy);
        self.next_strong_timer().map_or(t, |s| t.min(s))
    }

    /// Runs the timers due at `now`: delta flush and retransmission, STRONG retries and
    /// timeouts, anti-entropy digests.
    pub fn handle_timeout(&mut self, now: Duration) {
        if now >= self.next_flush {
            self.flush(now);
            self.next_flush = now.saturating_add(self.cfg.flush_interval);
        }
        self.strong_timers(now);
        if now >= self.next_anti_entropy {
            self.anti_entropy_round(now);
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    /// The next STRONG write outcome.
    pub fn poll_event(&mut self) -> Option<SyncEvent> {
        self.events.pop_front()
    }
}
