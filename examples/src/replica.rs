//! A region's replica of the shared state (match results, bans, the leaderboard) and the
//! sans-IO log replication that keeps the regions' replicas in step.
//!
//! This is the seam where pvp-global's `CrossRegionSync` plugs in. Until it is on main, each
//! region keeps a log of its own writes; every flush it sends each peer the ops after the
//! peer's ack (go-back-N, resent after `retransmit` without ack progress), and applies each
//! origin's ops in order, exactly once. Every write is commutative (a set insert, a win
//! count), so replicas that applied the same ops hold the same state, whatever the order of
//! origins: that is what [`ReplicaSummary::digest`] compares.
//!
//! A region's process that restarts (killed, then started again) comes back with a new
//! incarnation and an empty replica. Its peers notice the newer incarnation on its first
//! datagram, drop whatever its previous life still has in flight, and re-log every op they
//! hold for it, so it gets the whole state back; what the dead process wrote and never sent
//! is lost (the recovery point is one flush plus a round trip).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::time::Duration;

use hdrhistogram::Histogram;
use pvp_core::ids::{MatchId, PlayerId, RegionId};
use serde::{Deserialize, Serialize};

use crate::wire::{LoggedOp, MAX_DATAGRAM, SyncMessage, SyncOp};

/// Ops kept in a log before writes are refused (a peer cut off for very long).
pub const MAX_LOG: usize = 4_000_000;

/// Ops past a gap kept per peer until the gap is filled; more are dropped (and resent).
pub const MAX_PENDING: usize = 65_536;

/// Why a write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaError {
    /// The log holds [`MAX_LOG`] ops that some peer has not acked.
    #[error("replication log full ({MAX_LOG} unacked ops)")]
    LogFull,
}

/// The replicated state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicaState {
    /// Every finished match, with the region that hosted it.
    pub results: BTreeMap<MatchId, RegionId>,
    /// Banned players.
    pub bans: BTreeSet<PlayerId>,
    /// Leaderboard: (wins, losses) per player.
    pub scores: HashMap<PlayerId, (u32, u32)>,
    /// Every op applied here, once each, in the order applied: what a restarted peer is sent
    /// again (the state is exactly these ops, so re-sending them rebuilds it).
    pub history: Vec<SyncOp>,
}

impl ReplicaState {
    fn apply(&mut self, op: &SyncOp) {
        match op {
            SyncOp::MatchResult { match_id, region, team_a, team_b, winner } => {
                if self.results.insert(*match_id, *region).is_some() {
                    return;
                }
                self.history.push(op.clone());
                let (won, lost) = match *winner {
                    0 => (team_a, team_b),
                    1 => (team_b, team_a),
                    // A draw: the match is recorded, nobody's score moves.
                    _ => return,
                };
                for p in won {
                    self.scores.entry(*p).or_default().0 += 1;
                }
                for p in lost {
                    self.scores.entry(*p).or_default().1 += 1;
                }
            }
            SyncOp::Ban { player } => {
                if self.bans.insert(*player) {
                    self.history.push(op.clone());
                }
            }
        }
    }

    /// The `n` players with the most wins (ties by id), best first.
    pub fn top(&self, n: usize) -> Vec<(PlayerId, u32)> {
        let mut v: Vec<(PlayerId, u32)> = self.scores.iter().map(|(p, s)| (*p, s.0)).collect();
        v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// An order-independent hash of the whole state: equal states have equal digests.
    pub fn digest(&self) -> u64 {
        let s = foldhash::quality::FixedState::with_seed(0x5eed);
        let mut d = s.hash_one(("results", self.results.len(), self.bans.len(), self.scores.len()));
        for (m, r) in &self.results {
            d = d.rotate_left(5) ^ s.hash_one((m.get(), r.as_str()));
        }
        for b in &self.bans {
            d = d.rotate_left(5) ^ s.hash_one(b.get());
        }
        // HashMap order differs between replicas: combine commutatively.
        d.wrapping_add(
            self.scores.iter().map(|(p, sc)| s.hash_one((p.get(), sc.0, sc.1))).fold(0u64, u64::wrapping_add),
        )
    }
}

/// A replica's numbers, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReplicaSummary {
    /// Match results held.
    pub results: u64,
    /// Bans held.
    pub bans: u64,
    /// Players on the leaderboard.
    pub players: u64,
    /// Profiles held (CrossRegionSync, EVENTUAL).
    pub profiles: u64,
    /// Matches those profiles count, summed over players.
    pub profile_games: u64,
    /// Players whose presence says online now (CrossRegionSync register with a TTL).
    pub online: u64,
    /// [`ReplicaState::digest`].
    pub digest: u64,
    /// Own ops not yet acked by every peer.
    pub unacked: u64,
}

#[derive(Debug, Clone)]
struct Peer {
    id: RegionId,
    /// Highest own seq the peer acked.
    acked: u64,
    /// Next own seq to send.
    next: u64,
    /// When `acked` last moved (or a resend started).
    progress_at: Duration,
    /// Highest contiguous seq of the peer's log applied here.
    applied: u64,
    /// The peer's incarnation as last heard (0: not heard yet).
    incarnation: u64,
    /// Whether an ack of `applied` is owed.
    ack_due: bool,
    /// Ops received past a gap, applied once the gap is filled (bounded by [`MAX_PENDING`]).
    pending: BTreeMap<u64, LoggedOp>,
    last_heard: Option<Duration>,
    last_sent: Option<Duration>,
}

/// Counters of a replica.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicaStats {
    /// Ops applied from peers.
    pub applied: u64,
    /// Ops received twice or out of order (dropped; go-back-N resends them).
    pub out_of_order: u64,
    /// Datagrams refused (malformed, unknown peer).
    pub rejected: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Peers seen restarted (a newer incarnation): each was sent the whole state again.
    pub peer_restarts: u64,
    /// Datagrams of a peer's older incarnation (in flight across its restart), dropped.
    pub stale: u64,
    /// Resends after `retransmit` without ack progress.
    pub resends: u64,
}

/// One region's replica and its replication state machine. See the [module docs](self).
#[derive(Debug)]
pub struct Replica {
    region: RegionId,
    incarnation: u64,
    state: ReplicaState,
    log: Vec<LoggedOp>,
    /// Seq of `log[0]` minus one (ops acked by everyone are dropped).
    base: u64,
    peers: Vec<Peer>,
    flush: Duration,
    heartbeat: Duration,
    retransmit: Duration,
    next_flush: Duration,
    lag_ms: Histogram<u64>,
    stats: ReplicaStats,
}

impl Replica {
    /// A replica of `region` replicating to `peers`, flushing every `flush` and sending a
    /// heartbeat to a quiet peer every `heartbeat`. `incarnation` tells this process's life
    /// from an earlier one of the same region (its start time in Unix ms; it must grow from
    /// one start to the next): peers that knew an older incarnation send it their whole
    /// state again, and drop what the older one still has in flight.
    pub fn new(
        region: RegionId,
        peers: &[RegionId],
        flush: Duration,
        heartbeat: Duration,
        incarnation: u64,
    ) -> Self {
        let peers = peers
            .iter()
            .filter(|p| **p != region)
            .map(|&id| Peer {
                id,
                acked: 0,
                next: 1,
                progress_at: Duration::ZERO,
                applied: 0,
                incarnation: 0,
                ack_due: false,
                pending: BTreeMap::new(),
                last_heard: None,
                last_sent: None,
            })
            .collect();
        Self {
            region,
            incarnation: incarnation.max(1),
            state: ReplicaState::default(),
            log: Vec::new(),
            base: 0,
            peers,
            flush,
            heartbeat,
            retransmit: Duration::from_millis(250).max(flush * 4),
            next_flush: Duration::ZERO,
            lag_ms: Histogram::new_with_bounds(1, 3_600_000, 2)
                .unwrap_or_else(|_| unreachable!("valid bounds")),
            stats: ReplicaStats::default(),
        }
    }

    /// The region.
    pub fn region(&self) -> RegionId {
        self.region
    }

    /// The state.
    pub fn state(&self) -> &ReplicaState {
        &self.state
    }

    /// Counters.
    pub fn stats(&self) -> ReplicaStats {
        self.stats
    }

    /// Sync lag (write at the origin → applied here) of every op applied from peers, in ms.
    pub fn lag_ms(&self) -> &Histogram<u64> {
        &self.lag_ms
    }

    /// When this replica last heard from `peer` (any datagram), on the driver's clock.
    pub fn last_heard(&self, peer: RegionId) -> Option<Duration> {
        self.peers.iter().find(|p| p.id == peer).and_then(|p| p.last_heard)
    }

    /// The numbers for reports.
    pub fn summary(&self) -> ReplicaSummary {
        let min_acked = self.peers.iter().map(|p| p.acked).min().unwrap_or(self.base + self.log.len() as u64);
        ReplicaSummary {
            results: self.state.results.len() as u64,
            bans: self.state.bans.len() as u64,
            players: self.state.scores.len() as u64,
            // CrossRegionSync's part, filled in by the region (see `Shared::merge_region`).
            profiles: 0,
            profile_games: 0,
            online: 0,
            digest: self.state.digest(),
            unacked: (self.base + self.log.len() as u64).saturating_sub(min_acked),
        }
    }

    /// Writes `op` here at once and logs it for the peers.
    pub fn write(&mut self, op: SyncOp, now_unix_ms: u64) -> Result<(), ReplicaError> {
        if self.log.len() >= MAX_LOG {
            return Err(ReplicaError::LogFull);
        }
        self.state.apply(&op);
        let seq = self.base + self.log.len() as u64 + 1;
        self.log.push(LoggedOp { seq, written_unix_ms: now_unix_ms, op });
        Ok(())
    }

    /// Handles one datagram from a peer; malformed ones are counted and dropped.
    pub fn handle_datagram(&mut self, now: Duration, now_unix_ms: u64, bytes: &[u8]) {
        let Ok(msg) = SyncMessage::decode(bytes) else {
            self.stats.rejected += 1;
            return;
        };
        match msg {
            SyncMessage::Ops { origin, incarnation, floor, ops } => {
                let Some(i) = self.peers.iter().position(|p| p.id == origin) else {
                    self.stats.rejected += 1;
                    return;
                };
                if !self.meet(i, incarnation, now, now_unix_ms) {
                    return;
                }
                self.peers[i].last_heard = Some(now);
                let p = &mut self.peers[i];
                if floor > p.applied {
                    // The sender starts this receiver past `floor` (a re-log for a restart).
                    p.applied = floor;
                    p.pending.retain(|&seq, _| seq > floor);
                    let mut next = p.pending.remove(&(p.applied + 1));
                    while let Some(op) = next {
                        self.state.apply(&op.op);
                        p.applied = op.seq;
                        self.stats.applied += 1;
                        next = p.pending.remove(&(p.applied + 1));
                    }
                }
                for lop in ops {
                    let p = &mut self.peers[i];
                    if lop.seq <= p.applied || p.pending.contains_key(&lop.seq) {
                        self.stats.out_of_order += 1;
                        continue;
                    }
                    if lop.seq > p.applied + 1 {
                        if p.pending.len() < MAX_PENDING {
                            p.pending.insert(lop.seq, lop);
                        }
                        self.stats.out_of_order += 1;
                        continue;
                    }
                    let mut next = Some(lop);
                    while let Some(op) = next {
                        self.state.apply(&op.op);
                        p.applied = op.seq;
                        self.stats.applied += 1;
                        let lag = now_unix_ms.saturating_sub(op.written_unix_ms).max(1);
                        let _ = self.lag_ms.record(lag.min(3_600_000));
                        next = p.pending.remove(&(p.applied + 1));
                    }
                }
                self.peers[i].ack_due = true;
            }
            SyncMessage::Ack { from, from_incarnation, origin, origin_incarnation, upto } => {
                let Some(i) = self.peers.iter().position(|p| p.id == from) else {
                    self.stats.rejected += 1;
                    return;
                };
                if origin != self.region {
                    self.stats.rejected += 1;
                    return;
                }
                if !self.meet(i, from_incarnation, now, now_unix_ms) {
                    return;
                }
                let p = &mut self.peers[i];
                p.last_heard = Some(now);
                if origin_incarnation != self.incarnation {
                    // An ack of this region's previous life: its seqs mean other ops.
                    self.stats.stale += 1;
                    return;
                }
                let end = self.base + self.log.len() as u64;
                let upto = upto.min(end);
                if upto > p.acked {
                    p.acked = upto;
                    p.progress_at = now;
                    p.next = p.next.max(upto + 1);
                }
                self.compact();
            }
        }
    }

    /// Notes peer `i`'s incarnation; false if the datagram is from an older one (dropped).
    /// A newer incarnation than the one known is a restart: the peer lost what it held, so it
    /// starts over on both sides, and gets this replica's whole state again (re-logged).
    fn meet(&mut self, i: usize, incarnation: u64, now: Duration, now_unix_ms: u64) -> bool {
        let known = self.peers[i].incarnation;
        if incarnation < known {
            self.stats.stale += 1;
            return false;
        }
        if incarnation == known {
            return true;
        }
        let p = &mut self.peers[i];
        p.incarnation = incarnation;
        p.applied = 0;
        p.pending.clear();
        if known == 0 {
            // First contact: nothing was sent to an older life of this peer.
            return true;
        }
        self.stats.peer_restarts += 1;
        let end = self.base + self.log.len() as u64;
        for op in self.state.history.clone() {
            if self.log.len() >= MAX_LOG {
                break;
            }
            let seq = self.base + self.log.len() as u64 + 1;
            self.log.push(LoggedOp { seq, written_unix_ms: now_unix_ms, op });
        }
        // The restarted peer needs only the re-log (it holds every op this replica holds);
        // the other peers get it too and apply nothing new (every op is idempotent).
        let p = &mut self.peers[i];
        p.acked = end;
        p.next = end + 1;
        p.progress_at = now;
        p.last_sent = None;
        true
    }

    fn compact(&mut self) {
        let min_acked = self.peers.iter().map(|p| p.acked).min().unwrap_or(self.base + self.log.len() as u64);
        let drop = min_acked.saturating_sub(self.base) as usize;
        // Compact in large steps: draining the front is O(n).
        if drop > 4_096 || (drop > 0 && drop == self.log.len()) {
            self.log.drain(..drop);
            self.base += drop as u64;
        }
    }

    /// When [`poll_transmit`](Self::poll_transmit) next has something to send.
    pub fn poll_timeout(&self) -> Duration {
        self.next_flush
    }

    /// Datagrams due at `now`, each with the peer it goes to; call until `None`.
    pub fn poll_transmit(&mut self, now: Duration, out: &mut Vec<(RegionId, Vec<u8>)>) {
        if now < self.next_flush {
            return;
        }
        self.next_flush = now + self.flush;
        let end = self.base + self.log.len() as u64;
        for i in 0..self.peers.len() {
            let region = self.region;
            let p = &mut self.peers[i];
            if p.ack_due {
                p.ack_due = false;
                let m = SyncMessage::Ack {
                    from: region,
                    from_incarnation: self.incarnation,
                    origin: p.id,
                    origin_incarnation: p.incarnation,
                    upto: p.applied,
                };
                if let Ok(b) = m.encode() {
                    out.push((p.id, b));
                    self.stats.sent += 1;
                }
            }
            if p.acked < end && now.saturating_sub(p.progress_at) >= self.retransmit && p.next > p.acked + 1 {
                // No ack progress for a while: go back to the first unacked op.
                p.next = p.acked + 1;
                p.progress_at = now;
                self.stats.resends += 1;
            }
            if p.next <= p.acked {
                p.next = p.acked + 1;
            }
            // Send at most a window of datagrams per flush.
            let mut datagrams = 0;
            while p.next <= end && datagrams < 64 {
                let mut ops = Vec::new();
                let mut size = 16;
                while p.next <= end {
                    let idx = (p.next - self.base - 1) as usize;
                    let Some(lop) = self.log.get(idx) else { break };
                    let len = postcard::experimental::serialized_size(lop).unwrap_or(64);
                    if !ops.is_empty() && size + len > MAX_DATAGRAM {
                        break;
                    }
                    size += len;
                    ops.push(lop.clone());
                    p.next += 1;
                }
                if ops.is_empty() {
                    break;
                }
                let (incarnation, floor) = (self.incarnation, p.acked);
                if let Ok(b) = (SyncMessage::Ops { origin: region, incarnation, floor, ops }).encode() {
                    out.push((p.id, b));
                    self.stats.sent += 1;
                }
                datagrams += 1;
                p.last_sent = Some(now);
            }
            if p.last_sent.is_none_or(|t| now.saturating_sub(t) >= self.heartbeat) {
                let (incarnation, floor) = (self.incarnation, p.acked);
                if let Ok(b) =
                    (SyncMessage::Ops { origin: region, incarnation, floor, ops: Vec::new() }).encode()
                {
                    out.push((p.id, b));
                    self.stats.sent += 1;
                }
                p.last_sent = Some(now);
            }
            if p.progress_at == Duration::ZERO {
                p.progress_at = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> RegionId {
        s.parse().unwrap()
    }

    /// Shuttles datagrams between replicas, dropping every `drop_every`-th one.
    fn pump(nodes: &mut [Replica], steps: u32, drop_every: u32) {
        let mut n = 0u32;
        for step in 0..steps {
            let now = Duration::from_millis(u64::from(step) * 10);
            let mut out = Vec::new();
            let mut mail = Vec::new();
            for node in nodes.iter_mut() {
                out.clear();
                node.poll_transmit(now, &mut out);
                mail.append(&mut out);
            }
            for (to, bytes) in mail {
                n += 1;
                if drop_every > 0 && n % drop_every == 0 {
                    continue;
                }
                if let Some(dst) = nodes.iter_mut().find(|x| x.region() == to) {
                    dst.handle_datagram(now, now.as_millis() as u64, &bytes);
                }
            }
        }
    }

    #[test]
    fn replicas_converge_despite_loss() {
        let ids = [r("kr"), r("jp"), r("sg")];
        let mut nodes: Vec<Replica> = ids
            .iter()
            .map(|id| Replica::new(*id, &ids, Duration::from_millis(10), Duration::from_millis(50), 1))
            .collect();
        for (i, node) in nodes.iter_mut().enumerate() {
            for k in 0..500u64 {
                let m = MatchId::new(i as u64 * 1_000 + k);
                let op = SyncOp::MatchResult {
                    match_id: m,
                    region: node.region(),
                    team_a: vec![PlayerId::new(k)],
                    team_b: vec![PlayerId::new(k + 1)],
                    winner: (k % 2) as u8,
                };
                node.write(op, 0).unwrap();
            }
            node.write(SyncOp::Ban { player: PlayerId::new(i as u64) }, 0).unwrap();
        }
        pump(&mut nodes, 400, 7);
        let d = nodes[0].summary();
        assert_eq!(d.results, 1_500);
        assert_eq!(d.bans, 3);
        for n in &nodes {
            assert_eq!(n.summary().digest, d.digest);
            assert_eq!(n.summary().unacked, 0);
        }
        assert!(nodes.iter().any(|n| n.stats().resends > 0), "loss forced resends");
    }

    fn result(i: u64, region: RegionId) -> SyncOp {
        SyncOp::MatchResult {
            match_id: MatchId::new(i),
            region,
            team_a: vec![PlayerId::new(i)],
            team_b: vec![PlayerId::new(i + 1)],
            winner: (i % 2) as u8,
        }
    }

    #[test]
    fn a_restarted_region_gets_everything_back_and_its_new_writes_spread() {
        let ids = [r("kr"), r("jp"), r("sg")];
        let mk = |id: RegionId, inc: u64| {
            Replica::new(id, &ids, Duration::from_millis(10), Duration::from_millis(50), inc)
        };
        let mut nodes: Vec<Replica> = ids.iter().map(|id| mk(*id, 1)).collect();
        for (i, node) in nodes.iter_mut().enumerate() {
            for k in 0..300u64 {
                let op = result(i as u64 * 1_000 + k, node.region());
                node.write(op, 0).unwrap();
            }
        }
        pump(&mut nodes, 200, 0);
        let before = nodes[0].summary();
        assert_eq!(before.results, 900);
        // jp's process dies with a datagram in flight; a new one starts with nothing.
        let mut stale = Vec::new();
        nodes[1].write(result(5_000, r("jp")), 0).unwrap();
        nodes[1].poll_transmit(Duration::from_secs(10), &mut stale);
        nodes[1] = mk(r("jp"), 2);
        assert_eq!(nodes[1].summary().results, 0);
        for k in 0..50u64 {
            nodes[1].write(result(7_000 + k, r("jp")), 0).unwrap();
        }
        pump(&mut nodes, 300, 5);
        // The old life's datagram arrives late: dropped, nothing changes.
        for (to, b) in stale {
            if let Some(n) = nodes.iter_mut().find(|n| n.region() == to) {
                n.handle_datagram(Duration::from_secs(20), 0, &b);
            }
        }
        let d = nodes[0].summary();
        assert_eq!(d.results, 950, "the old 900 and the new life's 50 (the unsent one is lost)");
        for n in &nodes {
            assert_eq!(n.summary().digest, d.digest, "{} converged", n.region());
        }
        assert!(nodes[0].stats().peer_restarts == 1 && nodes[2].stats().peer_restarts == 1);
        assert!(nodes[0].stats().stale + nodes[2].stats().stale >= 1, "the stale datagram was dropped");
    }

    #[test]
    fn garbage_is_counted() {
        let mut a =
            Replica::new(r("kr"), &[r("jp")], Duration::from_millis(10), Duration::from_millis(50), 1);
        a.handle_datagram(Duration::ZERO, 0, &[1, 2, 3, 4, 5]);
        assert_eq!(a.stats().rejected, 1);
        assert_eq!(a.summary().results, 0);
    }
}
