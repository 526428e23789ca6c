//! CrossRegionSync: each region holds a replica of the shared game state (bans, friends,
//! profiles, leaderboard scores) as CRDTs and keeps it in step with its peers.
//!
//! [`SyncNode`] is a sans-IO state machine. Call it in this order:
//! 1. writes: [`SyncNode::write`] (or the helpers [`SyncNode::ban`], [`SyncNode::submit_score`],
//!    ...), applied locally at once;
//! 2. [`SyncNode::handle_datagram`] for every datagram a [`Transport`] received;
//! 3. [`SyncNode::handle_timeout`] when [`SyncNode::poll_timeout`] is due;
//! 4. drain [`SyncNode::poll_transmit`] into the transport and [`SyncNode::poll_event`] for
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
//! whole state. [`SyncNode::peer_progress`] tells how far each peer has acknowledged this
//! region's writes ([`PeerProgress`]); failover reads it to decide when a returning region
//! has caught up, and [`SyncNode::request_anti_entropy`] starts a digest round at once.
//!
//! ```
//! use pvp_global::sync::{SyncConfig, SyncNode, SyncEvent, WriteReceipt};
//! use pvp_core::{PlayerId, RegionId};
//! use std::time::Duration;
//!
//! let kr = RegionId::new("kr")?;
//! let jp = RegionId::new("jp")?;
//! let t0 = Duration::from_secs(1_000);
//! let mut a = SyncNode::new(SyncConfig::new(kr, vec![jp])?, t0);
//! let mut b = SyncNode::new(SyncConfig::new(jp, vec![kr])?, t0);
//!
//! // A ban is STRONG by default: pending until a majority (2 of 2 here) has it.
//! let WriteReceipt::Pending(id) = a.ban(PlayerId::new(7), t0)? else { unreachable!() };
//! let mut now = t0;
//! for _ in 0..10 {
//!     now += Duration::from_millis(10);
//!     a.handle_timeout(now);
//!     b.handle_timeout(now);
//!     while let Some(t) = a.poll_transmit() { b.handle_datagram(kr, &t.payload, now); }
//!     while let Some(t) = b.poll_transmit() { a.handle_datagram(jp, &t.payload, now); }
//! }
//! assert!(b.is_banned(PlayerId::new(7)));
//! assert_eq!(a.poll_event(), Some(SyncEvent::StrongCommitted { id }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod driver;
pub mod msg;
pub mod sim;
pub mod snapshot;
pub mod transport;
pub mod udp;

pub use driver::SyncDriver;
pub use msg::{Body, DecodeError, Message};
pub use sim::{LinkConfig, SimCluster, SimNetwork};
pub use snapshot::{Snapshot, SnapshotError, SnapshotStore};
pub use transport::{Transport, TransportError};
pub use udp::UdpTransport;

use crate::crdt::{
    Actor, Crdt, LwwRegister, MAX_FIELD_NAME, OrSet, PnCounter, Profile, ProfileField, Scalar,
};
use crate::leaderboard::{GameMode, GlobalLeaderboard, ScoreCell, ScoreOperator};
use msg::DIGEST_BUCKETS;
use pvp_core::hlc::{Hlc, HlcError, HlcStamp};
use pvp_core::{PlayerId, RegionId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::Hasher;
use std::time::Duration;

/// Longest text a [`Scalar::Text`] may hold, in bytes.
pub const MAX_TEXT: usize = 256;
/// Most elements a local write may grow one replicated set (friends, a profile set) to.
/// Concurrent adds in several regions can overshoot it after a merge; received values are not
/// refused for that (refusing them would stop convergence), only bounded by the message size.
pub const MAX_SET_LEN: usize = 512;
/// Most fields a local write may grow a profile to (overshoot as for [`MAX_SET_LEN`]).
pub const MAX_PROFILE_FIELDS: usize = 64;

/// The address of one replicated object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Key {
    /// Whether a player is banned: an add-wins set holding `0` while banned.
    Ban(PlayerId),
    /// A player's friend list.
    Friends(PlayerId),
    /// A player's profile.
    Profile(PlayerId),
    /// A player's score in one game mode.
    Score(GameMode, PlayerId),
    /// An application-defined object of any [`Value`] kind.
    Custom(u64),
}

/// Classes of data, each with its own [`Strategy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DataClass {
    /// The ban list ([`Key::Ban`]); STRONG by default.
    Bans,
    /// Friend lists.
    Friends,
    /// Profiles.
    Profiles,
    /// Leaderboard scores.
    Scores,
    /// [`Key::Custom`] objects.
    Custom,
}

impl Key {
    /// The key's data class.
    pub const fn class(&self) -> DataClass {
        match self {
            Self::Ban(_) => DataClass::Bans,
            Self::Friends(_) => DataClass::Friends,
            Self::Profile(_) => DataClass::Profiles,
            Self::Score(..) => DataClass::Scores,
            Self::Custom(_) => DataClass::Custom,
        }
    }

    /// Whether `v` is a kind of value this key may hold.
    pub const fn accepts(&self, v: &Value) -> bool {
        matches!(
            (self, v),
            (Self::Ban(_) | Self::Friends(_), Value::Set(_))
                | (Self::Profile(_), Value::Profile(_))
                | (Self::Score(..), Value::Score(_))
                | (Self::Custom(_), _)
        )
    }
}

/// A replicated value: one of the CRDTs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// Last-writer-wins scalar.
    Register(LwwRegister<Scalar>),
    /// Counter.
    Counter(PnCounter),
    /// Add-wins set of ids.
    Set(OrSet<u64>),
    /// Player profile.
    Profile(Profile),
    /// Leaderboard score.
    Score(ScoreCell),
}

impl Value {
    const fn rank(&self) -> u8 {
        match self {
            Self::Register(_) => 0,
            Self::Counter(_) => 1,
            Self::Set(_) => 2,
            Self::Profile(_) => 3,
            Self::Score(_) => 4,
        }
    }

    /// Whether a received value is acceptable: texts at most [`MAX_TEXT`] bytes and field names
    /// at most [`MAX_FIELD_NAME`] (each came from one validated write). Set and profile sizes
    /// are not checked here, since merges of concurrent writes legitimately exceed the per-write
    /// limits; the message size bounds them.
    pub fn is_valid(&self) -> bool {
        let scalar_ok = |s: &Scalar| !matches!(s, Scalar::Text(t) if t.len() > MAX_TEXT);
        match self {
            Self::Register(r) => scalar_ok(r.value()),
            Self::Profile(p) => p.iter().all(|(k, f)| {
                k.len() <= MAX_FIELD_NAME && !matches!(f, ProfileField::Register(r) if !scalar_ok(r.value()))
            }),
            Self::Set(_) | Self::Counter(_) | Self::Score(_) => true,
        }
    }

    /// The latest HLC stamp inside the value (LWW registers), if any.
    pub fn max_stamp(&self) -> Option<HlcStamp> {
        match self {
            Self::Register(r) => Some(r.stamp()),
            Self::Score(ScoreCell::Set(r)) => Some(r.stamp()),
            Self::Profile(p) => p
                .iter()
                .filter_map(|(_, f)| match f {
                    ProfileField::Register(r) => Some(r.stamp()),
                    _ => None,
                })
                .max(),
            _ => None,
        }
    }

    pub(crate) fn normalize(&mut self) {
        match self {
            Self::Register(_) => {}
            Self::Counter(c) => c.normalize(),
            Self::Set(s) => s.normalize(),
            Self::Profile(p) => p.values_mut().for_each(ProfileField::normalize),
            Self::Score(s) => s.normalize(),
        }
    }
}

impl Crdt for Value {
    fn merge(&mut self, other: &Self) {
        match (self, other) {
            (Self::Register(a), Self::Register(b)) => a.merge(b),
            (Self::Counter(a), Self::Counter(b)) => a.merge(b),
            (Self::Set(a), Self::Set(b)) => a.merge(b),
            (Self::Profile(a), Self::Profile(b)) => a.merge(b),
            (Self::Score(a), Self::Score(b)) => a.merge(b),
            (me, o) => {
                if o.rank() > me.rank() {
                    *me = o.clone();
                }
            }
        }
    }
}

/// How a write reaches the other regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Batched deltas; the call returns at once.
    Eventual,
    /// Done only once a majority of regions applied it.
    Strong,
}

/// A write to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Add an id to a set.
    SetAdd(u64),
    /// Remove an id from a set (the adds this region has seen).
    SetRemove(u64),
    /// Add to a counter (negative subtracts).
    CounterAdd(i64),
    /// Set a register.
    RegisterSet(Scalar),
    /// Set a profile field register.
    ProfileSet {
        /// Field name, at most [`MAX_FIELD_NAME`] bytes.
        field: String,
        /// New value.
        value: Scalar,
    },
    /// Add to a profile field counter.
    ProfileAdd {
        /// Field name.
        field: String,
        /// Amount (negative subtracts).
        delta: i64,
    },
    /// Submit a leaderboard score, combined by the mode's operator.
    Score(i64),
}

/// What a write returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteReceipt {
    /// Applied locally and queued for the other regions (EVENTUAL), or a no-op (removing an
    /// absent element) that has nothing to replicate.
    Applied,
    /// Applied locally; STRONG completion pending: watch [`SyncNode::poll_event`] or
    /// [`SyncNode::strong_status`].
    Pending(StrongId),
}

/// Id of a STRONG write, unique within one node.
pub type StrongId = u64;

/// State of a STRONG write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrongStatus {
    /// Waiting for a majority.
    Pending,
    /// A majority of regions applied it.
    Committed,
    /// It failed (see the error); it stays applied locally and propagates eventually.
    Failed(SyncError),
    /// No such write (or its outcome is older than the retained history).
    Unknown,
}

/// Outcomes reported by [`SyncNode::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEvent {
    /// A STRONG write reached a majority.
    StrongCommitted {
        /// The write.
        id: StrongId,
    },
    /// A STRONG write failed.
    StrongFailed {
        /// The write.
        id: StrongId,
        /// Why.
        error: SyncError,
    },
}

/// Errors of the sync API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// The key holds (or must hold) another kind of value than the write needs.
    #[error("key {0:?} does not hold the kind of value this write needs")]
    TypeMismatch(Key),
    /// The game mode was never defined.
    #[error("game mode {0:?} is not defined")]
    UnknownMode(GameMode),
    /// The mode exists with another operator.
    #[error("game mode {mode:?} already uses {existing:?}")]
    ModeConflict {
        /// The mode.
        mode: GameMode,
        /// Its operator.
        existing: ScoreOperator,
    },
    /// The write would exceed a size limit (text, set or profile size).
    #[error("value too large for key {0:?}")]
    TooLarge(Key),
    /// A STRONG write did not reach a majority in time.
    #[error("STRONG write timed out: {acked} of {needed} regions acknowledged")]
    StrongTimeout {
        /// Regions (this one included) that applied it in time.
        acked: usize,
        /// Regions needed for a majority.
        needed: usize,
    },
    /// Too many STRONG writes are pending.
    #[error("too many STRONG writes pending ({0})")]
    StrongBacklogFull(usize),
}

/// Invalid [`SyncConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A peer is listed twice or is the region itself.
    #[error("peer {0} listed twice or equal to the local region")]
    BadPeer(RegionId),
    /// A duration or size is zero or out of range.
    #[error("config field `{0}` is out of range")]
    OutOfRange(&'static str),
}

/// Settings of one region's [`SyncNode`]. Build with [`SyncConfig::new`], then adjust fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SyncConfig {
    /// This region.
    pub region: RegionId,
    /// The other regions.
    pub peers: Vec<RegionId>,
    /// How often EVENTUAL deltas are batched and sent (default 20 ms).
    pub flush_interval: Duration,
    /// Resend unacknowledged deltas after this long (default 150 ms).
    pub retransmit_after: Duration,
    /// How often digests are exchanged (default 1 s).
    pub anti_entropy_interval: Duration,
    /// How long a STRONG write may wait for a majority (default 2 s).
    pub strong_timeout: Duration,
    /// How often an unacknowledged STRONG write is resent (default 50 ms).
    pub strong_retry: Duration,
    /// Most STRONG writes pending at once (default 4096).
    pub max_pending_strong: usize,
    /// Largest datagram sent or accepted (default 60,000 bytes). Anti-entropy ships a key's
    /// whole state in one datagram, so a key larger than this is not repaired (counted in
    /// [`SyncStats::oversized_entries`]): a full [`MAX_SET_LEN`] set takes roughly 10-25 kB.
    pub max_message_bytes: usize,
    /// Most deltas kept for unacknowledged peers; past it a peer is repaired by anti-entropy
    /// instead (default 65,536).
    pub max_delta_log: usize,
    /// Incoming stamps further ahead of local time are refused (default 1 s).
    pub max_clock_drift: Duration,
    /// Baseline for benchmarks: ship each touched key's full state instead of its delta,
    /// fire-and-forget, with anti-entropy as the only repair (default false).
    pub full_state_shipping: bool,
    strategies: [Strategy; 5],
}

impl SyncConfig {
    /// Defaults for `region` syncing with `peers`: bans STRONG, everything else EVENTUAL.
    pub fn new(region: RegionId, peers: Vec<RegionId>) -> Result<Self, ConfigError> {
        let cfg = Self {
            region,
            peers,
            flush_interval: Duration::from_millis(20),
            retransmit_after: Duration::from_millis(150),
            anti_entropy_interval: Duration::from_secs(1),
            strong_timeout: Duration::from_secs(2),
            strong_retry: Duration::from_millis(50),
            max_pending_strong: 4096,
            max_message_bytes: 60_000,
            max_delta_log: 65_536,
            max_clock_drift: Duration::from_secs(1),
            full_state_shipping: false,
            strategies: [
                Strategy::Strong,
                Strategy::Eventual,
                Strategy::Eventual,
                Strategy::Eventual,
                Strategy::Eventual,
            ],
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = BTreeSet::new();
        for p in &self.peers {
            if *p == self.region || !seen.insert(*p) {
                return Err(ConfigError::BadPeer(*p));
            }
        }
        let nonzero = [
            (self.flush_interval, "flush_interval"),
            (self.retransmit_after, "retransmit_after"),
            (self.anti_entropy_interval, "anti_entropy_interval"),
            (self.strong_timeout, "strong_timeout"),
            (self.strong_retry, "strong_retry"),
        ];
        for (d, name) in nonzero {
            if d.is_zero() {
                return Err(ConfigError::OutOfRange(name));
            }
        }
        if self.max_message_bytes < 4096 || self.max_message_bytes > 65_000 {
            return Err(ConfigError::OutOfRange("max_message_bytes"));
        }
        if self.max_delta_log == 0 {
            return Err(ConfigError::OutOfRange("max_delta_log"));
        }
        if self.max_pending_strong == 0 {
            return Err(ConfigError::OutOfRange("max_pending_strong"));
        }
        Ok(())
    }

    /// The strategy of `class`.
    pub const fn strategy(&self, class: DataClass) -> Strategy {
        self.strategies[class as usize]
    }

    /// Sets the strategy of `class`.
    pub fn set_strategy(&mut self, class: DataClass, s: Strategy) -> &mut Self {
        self.strategies[class as usize] = s;
        self
    }
}

/// A datagram for the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination region.
    pub to: RegionId,
    /// Encoded [`Message`].
    pub payload: Vec<u8>,
}

/// How far one peer has received this replica's local writes: what a caught-up check (e.g.
/// failover's gate before a returning region takes matches again) reads. Plain data, so a
/// region can report it to whoever decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PeerProgress {
    /// The peer.
    pub peer: RegionId,
    /// Sequence number of this replica's latest local write (0: none yet).
    pub head: u64,
    /// Every local write up to this sequence number has reached the peer (it acknowledged
    /// them, or they were handed to anti-entropy, see `repair_pending`).
    pub acked: u64,
    /// An anti-entropy repair of the peer is owed or not yet confirmed: a digest is owed and
    /// not yet sent (the peer lagged past the delta log, restarted, was never contacted, or a
    /// repair was asked for with [`SyncNode::request_anti_entropy`]), or writes were handed to
    /// anti-entropy (the peer lagged past the delta log or restarted) and no digest from the
    /// peer has matched this replica's since (a digest or a repair may have been lost).
    pub repair_pending: bool,
}

impl PeerProgress {
    /// Local writes the peer has not acknowledged yet.
    pub const fn unacked(&self) -> u64 {
        self.head.saturating_sub(self.acked)
    }

    /// Whether every local write up to `watermark` has reached the peer and no repair is
    /// owed to it.
    pub const fn delivered(&self, watermark: u64) -> bool {
        self.acked >= watermark && !self.repair_pending
    }
}

/// Counters of one [`SyncNode`]. Also reported through the `metrics` facade as
/// `pvp_global_sync_*`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncStats {
    /// Local writes applied.
    pub writes: u64,
    /// Datagrams handed to the transport.
    pub messages_sent: u64,
    /// Their total bytes.
    pub bytes_sent: u64,
    /// Delta entries sent (after per-key joining), retransmits included.
    pub delta_entries_sent: u64,
    /// Bytes of `Deltas` messages sent.
    pub delta_bytes_sent: u64,
    /// Datagrams accepted.
    pub messages_received: u64,
    /// Datagrams dropped as malformed.
    pub malformed_dropped: u64,
    /// Datagrams dropped as oversized.
    pub oversized_dropped: u64,
    /// Datagrams dropped for an unknown protocol version.
    pub version_dropped: u64,
    /// Datagrams dropped because the sender is not a configured peer (or claims another name).
    pub unknown_peer_dropped: u64,
    /// Datagrams dropped because a stamp was too far in the future.
    pub clock_rejected: u64,
    /// Datagrams from an older incarnation of a peer, dropped.
    pub stale_dropped: u64,
    /// Delta windows resent after `retransmit_after`.
    pub retransmits: u64,
    /// Digests sent.
    pub digests_sent: u64,
    /// Key states sent in `Repair` messages.
    pub repair_entries_sent: u64,
    /// Entries too large for one message, skipped. Deltas are small and always fit; a key's
    /// full state (an anti-entropy repair, or full-state shipping) may not when
    /// `max_message_bytes` is set low: such a key is then not repaired by anti-entropy, only by
    /// deltas. With the default size it stays 0 unless a profile holds many large set fields.
    pub oversized_entries: u64,
    /// Deltas dropped from the log because a peer lagged past `max_delta_log`.
    pub log_overflows: u64,
    /// STRONG writes committed.
    pub strong_committed: u64,
    /// STRONG writes failed.
    pub strong_failed: u64,
    /// Datagrams dropped because the outbox was full (the driver is not draining it).
    pub outbox_dropped: u64,
    /// Events dropped because nobody polled them.
    pub events_dropped: u64,
}

#[derive(Debug, Clone)]
struct PeerState {
    region: RegionId,
    /// Highest of our sequence numbers the peer acknowledged.
    acked: u64,
    /// Highest sequence number sent to it in the current window.
    sent_upto: u64,
    /// When the current unacknowledged window started or last made progress.
    window_at: Duration,
    /// The peer's incarnation we know.
    their_incarnation: u64,
    /// Highest contiguous sequence number of theirs we applied.
    received_upto: u64,
    /// Send a digest at the next chance (it lagged past our log, or restarted).
    needs_repair: bool,
    /// Buckets not yet seen equal in a digest from the peer since writes were handed to
    /// anti-entropy (it lagged past our log or restarted): until this is empty those writes may
    /// not have reached it (a digest or a repair may have been lost).
    unconfirmed: BTreeSet<u16>,
    /// When we last sent it a digest.
    last_digest_at: Option<Duration>,
    /// Consecutive retransmissions without progress (doubles the wait, up to 8x).
    backoff: u32,
}

#[derive(Debug, Clone)]
struct PendingStrong {
    entries: Vec<(Key, Value)>,
    acks: BTreeSet<RegionId>,
    deadline: Duration,
    next_retry: Duration,
}

const MAX_STRONG_HISTORY: usize = 4096;
/// Events kept for [`SyncNode::poll_event`]; older ones are dropped (their outcome stays
/// readable through [`SyncNode::strong_status`] for [`MAX_STRONG_HISTORY`] writes).
const MAX_EVENTS: usize = 4096;
/// Datagrams queued for [`SyncNode::poll_transmit`]; past it new ones are dropped and counted
/// (the protocol retransmits what matters).
const MAX_OUTBOX: usize = 65_536;
const MAX_BATCHES_PER_TICK: usize = 32;
/// Most key states sent in answer to one digest or repair request (bounds a burst).
const MAX_REPAIR_ENTRIES: usize = 20_000;

/// One region's replica and sync protocol state (sans-IO). See the [module docs](self).
#[derive(Debug)]
pub struct SyncNode {
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

fn fnv(bytes: &[u8]) -> u64 {
    let mut h = fnv::FnvHasher::default();
    h.write(bytes);
    h.finish()
}

fn all_buckets() -> BTreeSet<u16> {
    (0..DIGEST_BUCKETS as u16).collect()
}

fn bucket_of(key: &Key) -> usize {
    let mut buf = [0u8; 32];
    let bytes = postcard::to_slice(key, &mut buf).map_or(&[][..], |b| &*b);
    (fnv(bytes) % DIGEST_BUCKETS as u64) as usize
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn count(name: &'static str, n: u64) {
    metrics::counter!(name).increment(n);
}

impl SyncNode {
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
        let peers = cfg
            .peers
            .iter()
            .map(|&region| PeerState {
                region,
                acked: 0,
                sent_upto: 0,
                window_at: now,
                their_incarnation: 0,
                received_upto: 0,
                needs_repair: true,
                unconfirmed: BTreeSet::new(),
                last_digest_at: None,
                backoff: 0,
            })
            .collect();
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

    /// Bans `player` (STRONG by default).
    pub fn ban(&mut self, player: PlayerId, now: Duration) -> Result<WriteReceipt, SyncError> {
        self.write(Key::Ban(player), WriteOp::SetAdd(0), now)
    }

    /// Lifts `player`'s ban (the bans this region has seen; a concurrent new ban wins).
    pub fn unban(&mut self, player: PlayerId, now: Duration) -> Result<WriteReceipt, SyncError> {
        self.write(Key::Ban(player), WriteOp::SetRemove(0), now)
    }

    /// Adds `friend` to `player`'s friends.
    pub fn add_friend(
        &mut self,
        player: PlayerId,
        friend: PlayerId,
        now: Duration,
    ) -> Result<WriteReceipt, SyncError> {
        self.write(Key::Friends(player), WriteOp::SetAdd(friend.get()), now)
    }

    /// Removes `friend` from `player`'s friends.
    pub fn remove_friend(
        &mut self,
        player: PlayerId,
        friend: PlayerId,
        now: Duration,
    ) -> Result<WriteReceipt, SyncError> {
        self.write(Key::Friends(player), WriteOp::SetRemove(friend.get()), now)
    }

    /// Submits `score` for `player` in `mode`, combined by the mode's operator.
    pub fn submit_score(
        &mut self,
        mode: GameMode,
        player: PlayerId,
        score: i64,
        now: Duration,
    ) -> Result<WriteReceipt, SyncError> {
        self.write(Key::Score(mode, player), WriteOp::Score(score), now)
    }

    /// Applies `op` to `key` locally and replicates it with the key class's strategy.
    pub fn write(&mut self, key: Key, op: WriteOp, now: Duration) -> Result<WriteReceipt, SyncError> {
        let stamp = self.hlc.now(ms(now));
        let actor = self.actor;
        let current = self.get(&key);
        let delta =
            match (&key, op) {
                (Key::Score(mode, _), WriteOp::Score(v)) => {
                    let op = self.boards.operator(*mode).ok_or(SyncError::UnknownMode(*mode))?;
                    let cur = match current {
                        Some(Value::Score(c)) if c.fits(op) => Some(c),
                        Some(_) => return Err(SyncError::TypeMismatch(key)),
                        None => None,
                    };
                    Value::Score(ScoreCell::submit(cur, op, v, actor, stamp).0)
                }
                (Key::Score(..), _) => return Err(SyncError::TypeMismatch(key)),
                (Key::Ban(_) | Key::Friends(_) | Key::Custom(_), WriteOp::SetAdd(e)) => match current {
                    Some(Value::Set(s)) => {
                        if !s.contains(&e) && s.len() >= MAX_SET_LEN {
                            return Err(SyncError::TooLarge(key));
                        }
                        Value::Set(s.add_delta(actor, e))
                    }
                    None => Value::Set(OrSet::new().add_delta(actor, e)),
                    Some(_) => return Err(SyncError::TypeMismatch(key)),
                },
                (Key::Ban(_) | Key::Friends(_) | Key::Custom(_), WriteOp::SetRemove(e)) => match current {
                    Some(Value::Set(s)) => match s.remove_delta(&e) {
                        Some(d) => Value::Set(d),
                        None => return Ok(WriteReceipt::Applied),
                    },
                    None => return Ok(WriteReceipt::Applied),
                    Some(_) => return Err(SyncError::TypeMismatch(key)),
                },
                (Key::Custom(_), WriteOp::CounterAdd(d)) => match current {
                    Some(Value::Counter(c)) => Value::Counter(c.clone().add(actor, d)),
                    None => Value::Counter(PnCounter::new().add(actor, d)),
                    Some(_) => return Err(SyncError::TypeMismatch(key)),
                },
                (Key::Custom(_), WriteOp::RegisterSet(v)) => {
                    if matches!(&v, Scalar::Text(t) if t.len() > MAX_TEXT) {
                        return Err(SyncError::TooLarge(key));
                    }
                    match current {
                        Some(Value::Register(_)) | None => Value::Register(LwwRegister::new(v, stamp)),
                        Some(_) => return Err(SyncError::TypeMismatch(key)),
                    }
                }
                (Key::Profile(_), WriteOp::ProfileSet { field, value }) => {
                    if matches!(&value, Scalar::Text(t) if t.len() > MAX_TEXT) {
                        return Err(SyncError::TooLarge(key));
                    }
                    let f = ProfileField::Register(LwwRegister::new(value, stamp));
                    Value::Profile(self.profile_delta(key, current, field, f, |cur| {
                        matches!(cur, ProfileField::Register(_))
                    })?)
                }
                (Key::Profile(_), WriteOp::ProfileAdd { field, delta }) => {
                    let counter = match current {
                        Some(Value::Profile(p)) => match p.get(&field) {
                            Some(ProfileField::Counter(c)) => c.clone(),
                            Some(_) => return Err(SyncError::TypeMismatch(key)),
                            None => PnCounter::new(),
                        },
                        _ => PnCounter::new(),
                    };
                    let mut c = counter;
                    let f = ProfileField::Counter(c.add(actor, delta));
                    Value::Profile(self.profile_delta(key, current, field, f, |cur| {
                        matches!(cur, ProfileField::Counter(_))
                    })?)
                }
                _ => return Err(SyncError::TypeMismatch(key)),
            };
        let strategy = self.cfg.strategy(key.class());
        if strategy == Strategy::Strong && self.strong.len() >= self.cfg.max_pending_strong {
            return Err(SyncError::StrongBacklogFull(self.strong.len()));
        }
        self.merge_entry(key, &delta);
        self.stats.writes += 1;
        count("pvp_global_sync_writes", 1);
        self.push_log(key, delta.clone());
        if strategy == Strategy::Eventual {
            return Ok(WriteReceipt::Applied);
        }
        let id = self.next_strong;
        self.next_strong += 1;
        let entries = vec![(key, delta)];
        let pending = PendingStrong {
            entries: entries.clone(),
            acks: BTreeSet::new(),
            deadline: now.saturating_add(self.cfg.strong_timeout),
            next_retry: now.saturating_add(self.cfg.strong_retry),
        };
        self.strong.insert(id, pending);
        self.check_strong(id);
        if self.strong.contains_key(&id) {
            for i in 0..self.peers.len() {
                let to = self.peers[i].region;
                self.send(to, Body::Strong { id, entries: entries.clone() });
            }
        }
        Ok(WriteReceipt::Pending(id))
    }

    fn profile_delta(
        &self,
        key: Key,
        current: Option<&Value>,
        field: String,
        f: ProfileField,
        same_kind: impl Fn(&ProfileField) -> bool,
    ) -> Result<Profile, SyncError> {
        if field.len() > MAX_FIELD_NAME {
            return Err(SyncError::TooLarge(key));
        }
        match current {
            Some(Value::Profile(p)) => match p.get(&field) {
                Some(cur) if !same_kind(cur) => return Err(SyncError::TypeMismatch(key)),
                None if p.len() >= MAX_PROFILE_FIELDS => return Err(SyncError::TooLarge(key)),
                _ => {}
            },
            Some(_) => return Err(SyncError::TypeMismatch(key)),
            None => {}
        }
        let mut d = Profile::new();
        d.apply(field, f);
        Ok(d)
    }

    /// Outcome of a STRONG write.
    pub fn strong_status(&self, id: StrongId) -> StrongStatus {
        if self.strong.contains_key(&id) {
            return StrongStatus::Pending;
        }
        self.strong_done.get(&id).cloned().unwrap_or(StrongStatus::Unknown)
    }

    /// Regions needed for a majority (this one included).
    pub fn majority(&self) -> usize {
        self.peers.len().div_ceil(2) + 1
    }

    fn check_strong(&mut self, id: StrongId) {
        let need = self.majority();
        let Some(p) = self.strong.get(&id) else {
            return;
        };
        if p.acks.len() + 1 >= need {
            self.strong.remove(&id);
            self.finish_strong(id, StrongStatus::Committed);
            self.stats.strong_committed += 1;
            count("pvp_global_sync_strong_committed", 1);
            self.push_event(SyncEvent::StrongCommitted { id });
        }
    }

    fn push_event(&mut self, ev: SyncEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(ev);
    }

    fn finish_strong(&mut self, id: StrongId, status: StrongStatus) {
        self.strong_done.insert(id, status);
        while self.strong_done.len() > MAX_STRONG_HISTORY {
            self.strong_done.pop_first();
        }
    }

    fn push_log(&mut self, key: Key, delta: Value) {
        self.log.push_back((self.next_seq, key, delta));
        self.next_seq += 1;
        if self.log.len() > self.cfg.max_delta_log {
            self.log.pop_front();
            self.stats.log_overflows += 1;
        }
    }

    /// Joins `v` into the replica under `key`.
    fn merge_entry(&mut self, key: Key, v: &Value) {
        let b = bucket_of(&key);
        // Every merge counts as a change: detecting a no-op would need a copy of the value,
        // and re-hashing / re-indexing an unchanged key is harmless.
        match self.buckets[b].get_mut(&key) {
            Some(cur) => cur.merge(v),
            None => {
                self.buckets[b].insert(key, v.clone());
                self.key_hashes.insert(key, 0);
            }
        }
        {
            self.dirty.insert(key);
            if let (Key::Score(mode, player), Some(Value::Score(cell))) = (key, self.buckets[b].get(&key)) {
                let op = match cell {
                    ScoreCell::Best(_) => ScoreOperator::Best,
                    ScoreCell::Set(_) => ScoreOperator::Set,
                    ScoreCell::Counter(_) => ScoreOperator::Incr,
                };
                let score = cell.score();
                self.boards.index(mode, player, score, op);
            }
        }
    }

    fn refresh_hashes(&mut self) {
        let mut buf = Vec::new();
        for key in std::mem::take(&mut self.dirty) {
            let b = bucket_of(&key);
            let Some(v) = self.buckets[b].get(&key) else {
                continue;
            };
            buf.clear();
            let ok = postcard::to_io(&(key, v), &mut buf).is_ok();
            let h = if ok { fnv(&buf) } else { 0 };
            let old = self.key_hashes.insert(key, h).unwrap_or(0);
            self.bucket_hashes[b] ^= old ^ h;
        }
    }

    /// Per-bucket state hashes (what a digest carries).
    pub fn digest(&mut self) -> Vec<u64> {
        self.refresh_hashes();
        self.bucket_hashes.clone()
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
            self.stats.oversized_entries += 1;
            return;
        }
        if self.outbox.len() >= MAX_OUTBOX {
            self.stats.outbox_dropped += 1;
            count("pvp_global_sync_outbox_dropped", 1);
            return;
        }
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += payload.len() as u64;
        if is_delta {
            self.stats.delta_bytes_sent += payload.len() as u64;
        }
        count("pvp_global_sync_messages_sent", 1);
        count("pvp_global_sync_bytes_sent", payload.len() as u64);
        self.outbox.push_back(Transmit { to, payload });
    }

    /// Feeds one datagram received from `from` at `now`. Malformed, oversized, stale or
    /// unauthenticated-looking datagrams are counted in [`SyncStats`] and dropped, never applied.
    pub fn handle_datagram(&mut self, from: RegionId, bytes: &[u8], now: Duration) {
        let msg = match msg::decode(bytes, self.cfg.max_message_bytes) {
            Ok(m) => m,
            Err(e) => {
                let (field, name) = match e {
                    DecodeError::Oversized { .. } => {
                        (&mut self.stats.oversized_dropped, "pvp_global_sync_oversized_dropped")
                    }
                    DecodeError::Version(_) => {
                        (&mut self.stats.version_dropped, "pvp_global_sync_version_dropped")
                    }
                    DecodeError::Malformed => {
                        (&mut self.stats.malformed_dropped, "pvp_global_sync_malformed_dropped")
                    }
                };
                *field += 1;
                count(name, 1);
                return;
            }
        };
        let Some(pi) = self.peer_index(from).filter(|_| msg.from == from) else {
            self.stats.unknown_peer_dropped += 1;
            count("pvp_global_sync_unknown_peer_dropped", 1);
            return;
        };
        if let Err(HlcError::TooFarInFuture { .. } | HlcError::LogicalOverflow) = self.check_clock(&msg, now)
        {
            self.stats.clock_rejected += 1;
            count("pvp_global_sync_clock_rejected", 1);
            return;
        }
        // Incarnations: a newer one means the peer restarted; an older one is a stale datagram.
        let peer = &mut self.peers[pi];
        if msg.incarnation < peer.their_incarnation {
            self.stats.stale_dropped += 1;
            return;
        }
        if msg.incarnation > peer.their_incarnation {
            let first_contact = peer.their_incarnation == 0;
            peer.their_incarnation = msg.incarnation;
            peer.received_upto = 0;
            if !first_contact {
                // It lost what we sent it since its snapshot: continue from our log head and
                // let anti-entropy fill in the rest.
                let head = self.next_seq - 1;
                peer.acked = head;
                peer.sent_upto = head;
                peer.window_at = now;
                peer.unconfirmed = all_buckets();
            }
            peer.needs_repair = true;
        }
        let _ = self.hlc.update(msg.stamp, ms(now));
        self.stats.messages_received += 1;
        count("pvp_global_sync_messages_received", 1);
        match msg.body {
            Body::Deltas { floor, first, last, entries } => {
                for (k, v) in &entries {
                    self.merge_entry(*k, v);
                }
                let peer = &mut self.peers[pi];
                peer.received_upto = peer.received_upto.max(floor.saturating_sub(1));
                // `last` is the sender's word (up to u64::MAX): never overflow on it.
                if first <= peer.received_upto.saturating_add(1) {
                    peer.received_upto = peer.received_upto.max(last);
                }
                let upto = peer.received_upto;
                self.send(from, Body::DeltaAck { incarnation: msg.incarnation, upto });
            }
            Body::DeltaAck { incarnation, upto } => {
                if incarnation == self.actor.incarnation {
                    let head = self.next_seq - 1;
                    let peer = &mut self.peers[pi];
                    let upto = upto.min(head);
                    if upto > peer.acked {
                        peer.acked = upto;
                        peer.window_at = now;
                        peer.backoff = 0;
                    }
                    self.trim_log();
                }
            }
            Body::Digest { buckets } => {
                let mine = self.digest();
                let diff: Vec<u16> =
                    (0..DIGEST_BUCKETS).filter(|&b| mine[b] != buckets[b]).map(|b| b as u16).collect();
                // A bucket the peer holds exactly as we do (our state only grows) has every
                // write we handed to anti-entropy: that part of its repair is done.
                let peer = &mut self.peers[pi];
                peer.unconfirmed.retain(|&b| mine[usize::from(b)] != buckets[usize::from(b)]);
                // Answer with our digest (at most once per interval) so that the peer can
                // confirm its own repairs of us even while it is never quiet.
                let recent = peer
                    .last_digest_at
                    .is_some_and(|t| now.saturating_sub(t) < self.cfg.anti_entropy_interval);
                if !recent {
                    peer.last_digest_at = Some(now);
                    self.stats.digests_sent += 1;
                    self.send(from, Body::Digest { buckets: mine });
                }
                if !diff.is_empty() {
                    self.send_buckets(from, &diff);
                    self.send(from, Body::RepairRequest { buckets: diff });
                }
            }
            Body::RepairRequest { buckets } => {
                let b: Vec<u16> = buckets.into_iter().take(DIGEST_BUCKETS).collect();
                self.send_buckets(from, &b);
            }
            Body::Repair { entries } => {
                for (k, v) in &entries {
                    self.merge_entry(*k, v);
                }
            }
            Body::Strong { id, entries } => {
                for (k, v) in &entries {
                    self.merge_entry(*k, v);
                }
                self.send(from, Body::StrongAck { id, incarnation: msg.incarnation });
            }
            Body::StrongAck { id, incarnation } => {
                if incarnation == self.actor.incarnation {
                    if let Some(p) = self.strong.get_mut(&id) {
                        p.acks.insert(from);
                    }
                    self.check_strong(id);
                }
            }
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

    fn send_buckets(&mut self, to: RegionId, buckets: &[u16]) {
        let budget = self.cfg.max_message_bytes.saturating_sub(256);
        let mut batch: Vec<(Key, Value)> = Vec::new();
        let mut size = 0usize;
        let mut out: Vec<Vec<(Key, Value)>> = Vec::new();
        let mut total = 0usize;
        'outer: for &b in buckets {
            for (k, v) in &self.buckets[usize::from(b)] {
                if total >= MAX_REPAIR_ENTRIES {
                    break 'outer;
                }
                total += 1;
                let n = postcard::experimental::serialized_size(&(k, v)).unwrap_or(usize::MAX);
                if n > budget {
                    self.stats.oversized_entries += 1;
                    continue;
                }
                if size + n > budget {
                    out.push(std::mem::take(&mut batch));
                    size = 0;
                }
                batch.push((*k, v.clone()));
                size += n;
            }
        }
        if !batch.is_empty() {
            out.push(batch);
        }
        for entries in out {
            self.stats.repair_entries_sent += entries.len() as u64;
            self.send(to, Body::Repair { entries });
        }
    }

    fn trim_log(&mut self) {
        let min_acked = self.peers.iter().map(|p| p.acked).min().unwrap_or(self.next_seq - 1);
        while self.log.front().is_some_and(|(s, _, _)| *s <= min_acked) {
            self.log.pop_front();
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Duration {
        let mut t = self.next_flush.min(self.next_anti_entropy);
        for p in self.strong.values() {
            t = t.min(p.next_retry).min(p.deadline);
        }
        t
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
            self.next_anti_entropy = now.saturating_add(self.cfg.anti_entropy_interval);
            let head = self.next_seq - 1;
            let digest = self.digest();
            for i in 0..self.peers.len() {
                let p = &mut self.peers[i];
                if p.acked >= head || p.needs_repair || !p.unconfirmed.is_empty() {
                    p.needs_repair = false;
                    p.last_digest_at = Some(now);
                    let to = p.region;
                    self.stats.digests_sent += 1;
                    self.send(to, Body::Digest { buckets: digest.clone() });
                }
            }
        }
    }

    fn strong_timers(&mut self, now: Duration) {
        let mut failed = Vec::new();
        let mut retry = Vec::new();
        for (&id, p) in &mut self.strong {
            if now >= p.deadline {
                failed.push((id, p.acks.len() + 1));
            } else if now >= p.next_retry {
                p.next_retry = now.saturating_add(self.cfg.strong_retry);
                let missing: Vec<RegionId> =
                    self.cfg.peers.iter().filter(|r| !p.acks.contains(r)).copied().collect();
                retry.push((id, p.entries.clone(), missing));
            }
        }
        let needed = self.majority();
        for (id, acked) in failed {
            self.strong.remove(&id);
            let error = SyncError::StrongTimeout { acked, needed };
            self.finish_strong(id, StrongStatus::Failed(error.clone()));
            self.stats.strong_failed += 1;
            count("pvp_global_sync_strong_failed", 1);
            self.push_event(SyncEvent::StrongFailed { id, error });
        }
        for (id, entries, missing) in retry {
            for to in missing {
                self.send(to, Body::Strong { id, entries: entries.clone() });
            }
        }
    }

    fn flush(&mut self, now: Duration) {
        let head = self.next_seq - 1;
        let log_first = self.log.front().map_or(self.next_seq, |e| e.0);
        let budget = self.cfg.max_message_bytes.saturating_sub(256);
        for pi in 0..self.peers.len() {
            let p = &mut self.peers[pi];
            if p.acked < p.sent_upto && now.saturating_sub(p.window_at) >= self.cfg.retransmit_after {
                p.sent_upto = p.acked;
                p.window_at = now;
                self.stats.retransmits += 1;
                count("pvp_global_sync_retransmits", 1);
            }
            if p.sent_upto + 1 < log_first {
                // The log no longer holds what it is missing: anti-entropy takes over.
                p.sent_upto = log_first - 1;
                p.acked = p.acked.max(log_first - 1);
                p.needs_repair = true;
                p.unconfirmed = all_buckets();
                self.next_anti_entropy = self.next_anti_entropy.min(now);
            }
            p.sent_upto = p.sent_upto.max(p.acked);
            if p.acked >= p.sent_upto {
                p.window_at = now;
            }
            let to = p.region;
            let floor = p.acked + 1;
            for _ in 0..MAX_BATCHES_PER_TICK {
                let p = &self.peers[pi];
                if p.sent_upto >= head {
                    break;
                }
                let start = usize::try_from(p.sent_upto + 1 - log_first).unwrap_or(usize::MAX);
                let mut joined: BTreeMap<Key, Value> = BTreeMap::new();
                let mut size = 0usize;
                let mut last = p.sent_upto;
                for (seq, k, v) in self.log.iter().skip(start) {
                    let n = postcard::experimental::serialized_size(&(k, v)).unwrap_or(usize::MAX);
                    if size + n > budget && !joined.is_empty() {
                        break;
                    }
                    size += n;
                    last = *seq;
                    match joined.get_mut(k) {
                        Some(cur) => cur.merge(v),
                        None => {
                            let v = if self.cfg.full_state_shipping {
                                self.get(k).cloned().unwrap_or_else(|| v.clone())
                            } else {
                                v.clone()
                            };
                            joined.insert(*k, v);
                        }
                    }
                }
                let entries: Vec<(Key, Value)> = joined.into_iter().collect();
                self.stats.delta_entries_sent += entries.len() as u64;
                let first = self.peers[pi].sent_upto + 1;
                self.send(to, Body::Deltas { floor: floor.min(first), first, last, entries });
                let p = &mut self.peers[pi];
                p.sent_upto = last;
                if self.cfg.full_state_shipping {
                    p.acked = last; // fire and forget
                }
            }
        }
        if self.cfg.full_state_shipping {
            self.trim_log();
        }
    }

    /// Sequence number of this replica's latest local write (0: none yet). Compare with a
    /// peer's [`PeerProgress::acked`] to know whether writes made up to now have reached it.
    pub const fn head_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Replication progress towards `peer`, or `None` if it is not a configured peer.
    pub fn peer_progress(&self, peer: RegionId) -> Option<PeerProgress> {
        self.peer_index(peer).map(|i| self.progress_of(i))
    }

    /// Replication progress towards every peer, in configuration order.
    pub fn peers_progress(&self) -> impl Iterator<Item = PeerProgress> + '_ {
        (0..self.peers.len()).map(|i| self.progress_of(i))
    }

    fn progress_of(&self, i: usize) -> PeerProgress {
        let p = &self.peers[i];
        let head = self.next_seq - 1;
        PeerProgress {
            peer: p.region,
            head,
            acked: p.acked.min(head),
            repair_pending: p.needs_repair || !p.unconfirmed.is_empty(),
        }
    }

    /// Asks for an anti-entropy round with `peer` at the next [`handle_timeout`](Self::handle_timeout)
    /// at or after `now` (a digest even if the peer is busy), e.g. when a region returns after a
    /// partition. Returns `false` if `peer` is not a configured peer.
    pub fn request_anti_entropy(&mut self, peer: RegionId, now: Duration) -> bool {
        let Some(i) = self.peer_index(peer) else {
            return false;
        };
        self.peers[i].needs_repair = true;
        self.next_anti_entropy = self.next_anti_entropy.min(now);
        true
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
