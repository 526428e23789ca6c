//! Delta replication: every `flush_interval` the delta log is batched per peer (deltas of one
//! key joined), sent, acknowledged and resent after `retransmit_after` without an ack; a peer
//! that lags past the log is handed to anti-entropy. Also what each peer has acknowledged
//! ([`PeerProgress`](super::PeerProgress)) and how a peer's restart is noticed (its incarnation).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pvp_core::RegionId;
use serde::{Deserialize, Serialize};

use super::CrossRegionSync;
use super::anti_entropy::all_buckets;
use super::model::{Key, Value};
use super::msg::Body;
use super::stats::Counter;
use crate::crdt::Crdt;

/// Most delta batches sent to one peer per flush.
const MAX_BATCHES_PER_TICK: usize = 32;

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
    /// repair was asked for with [`CrossRegionSync::request_anti_entropy`](super::CrossRegionSync::request_anti_entropy)), or writes were handed to
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

/// What this replica tracks of one peer, both ways.
#[derive(Debug, Clone)]
pub(super) struct PeerState {
    pub(super) region: RegionId,
    /// Highest of our sequence numbers the peer acknowledged.
    pub(super) acked: u64,
    /// Highest sequence number sent to it in the current window.
    pub(super) sent_upto: u64,
    /// When the current unacknowledged window started or last made progress.
    pub(super) window_at: Duration,
    /// The peer's incarnation we know.
    pub(super) their_incarnation: u64,
    /// Highest contiguous sequence number of theirs we applied.
    pub(super) received_upto: u64,
    /// Send a digest at the next chance (it lagged past our log, or restarted).
    pub(super) needs_repair: bool,
    /// Buckets not yet seen equal in a digest from the peer since writes were handed to
    /// anti-entropy (it lagged past our log or restarted): until this is empty those writes may
    /// not have reached it (a digest or a repair may have been lost).
    pub(super) unconfirmed: BTreeSet<u16>,
    /// When we last sent it a digest.
    pub(super) last_digest_at: Option<Duration>,
}

impl PeerState {
    /// A peer not heard from yet: owed a digest at the first chance.
    pub(super) fn new(region: RegionId, now: Duration) -> Self {
        Self {
            region,
            acked: 0,
            sent_upto: 0,
            window_at: now,
            their_incarnation: 0,
            received_upto: 0,
            needs_repair: true,
            unconfirmed: BTreeSet::new(),
            last_digest_at: None,
        }
    }
}

impl CrossRegionSync {
    /// Tracks the incarnation of peer `pi` seen in a datagram: a newer one means the peer
    /// restarted, and lost what we sent it since its snapshot; an older one marks a stale
    /// datagram (false: drop it).
    pub(super) fn on_incarnation(&mut self, pi: usize, incarnation: u64, now: Duration) -> bool {
        let head = self.head_seq();
        let peer = &mut self.peers[pi];
        if incarnation < peer.their_incarnation {
            return false;
        }
        if incarnation > peer.their_incarnation {
            let first_contact = peer.their_incarnation == 0;
            peer.their_incarnation = incarnation;
            peer.received_upto = 0;
            if !first_contact {
                // Continue from our log head and let anti-entropy fill in the rest.
                peer.acked = head;
                peer.sent_upto = head;
                peer.window_at = now;
                peer.unconfirmed = all_buckets();
            }
            peer.needs_repair = true;
        }
        true
    }

    /// A peer's delta batch (sequence numbers `first..=last` of its log, everything below
    /// `floor` already acknowledged by us or handed to anti-entropy): joined, then the highest
    /// contiguous sequence received is acknowledged to the peer's incarnation.
    pub(super) fn on_deltas(
        &mut self,
        pi: usize,
        incarnation: u64,
        seqs: (u64, u64, u64),
        entries: &[(Key, Value)],
    ) {
        let (floor, first, last) = seqs;
        for (k, v) in entries {
            self.merge_entry(*k, v);
        }
        let peer = &mut self.peers[pi];
        peer.received_upto = peer.received_upto.max(floor.saturating_sub(1));
        // `last` is the sender's word (up to u64::MAX): never overflow on it.
        if first <= peer.received_upto.saturating_add(1) {
            peer.received_upto = peer.received_upto.max(last);
        }
        let (to, upto) = (peer.region, peer.received_upto);
        self.send(to, Body::DeltaAck { incarnation, upto });
    }

    /// A peer acknowledged our deltas up to `upto` (of this incarnation; older acks are
    /// ignored): its window moves on and the log is trimmed to the slowest peer.
    pub(super) fn on_delta_ack(&mut self, pi: usize, incarnation: u64, upto: u64, now: Duration) {
        if incarnation != self.actor.incarnation {
            return;
        }
        let head = self.head_seq();
        let peer = &mut self.peers[pi];
        let upto = upto.min(head);
        if upto > peer.acked {
            peer.acked = upto;
            peer.window_at = now;
        }
        self.trim_log();
    }

    pub(super) fn trim_log(&mut self) {
        let min_acked = self.peers.iter().map(|p| p.acked).min().unwrap_or(self.next_seq - 1);
        while self.log.front().is_some_and(|(s, _, _)| *s <= min_acked) {
            self.log.pop_front();
        }
    }

    pub(super) fn flush(&mut self, now: Duration) {
        let head = self.next_seq - 1;
        let log_first = self.log.front().map_or(self.next_seq, |e| e.0);
        let budget = self.cfg.max_message_bytes.saturating_sub(256);
        for pi in 0..self.peers.len() {
            let p = &mut self.peers[pi];
            if p.acked < p.sent_upto && now.saturating_sub(p.window_at) >= self.cfg.retransmit_after {
                p.sent_upto = p.acked;
                p.window_at = now;
                self.stats.add(Counter::Retransmits, 1);
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
                self.stats.add(Counter::DeltaEntriesSent, entries.len() as u64);
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
    /// peer's [`PeerProgress::acked`](super::PeerProgress::acked) to know whether writes made up to now have reached it.
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
}
