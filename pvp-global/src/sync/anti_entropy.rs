//! Anti-entropy: every `anti_entropy_interval` a region sends each quiet peer a digest (a hash
//! per bucket of keys); the peer answers mismatched buckets with their states and asks for
//! ours, so a region that was cut off, restarted or lost its snapshot catches up without
//! shipping the whole state.

use std::collections::BTreeSet;
use std::hash::Hasher;
use std::time::Duration;

use pvp_core::RegionId;

use super::CrossRegionSync;
use super::model::{Key, Value};
use super::msg::{Body, DIGEST_BUCKETS};
use super::stats::Counter;

/// Most key states sent in answer to one digest or repair request (bounds a burst).
const MAX_REPAIR_ENTRIES: usize = 20_000;

pub(super) fn fnv(bytes: &[u8]) -> u64 {
    let mut h = fnv::FnvHasher::default();
    h.write(bytes);
    h.finish()
}

/// Every bucket: what a peer that lost writes must confirm.
pub(super) fn all_buckets() -> BTreeSet<u16> {
    (0..DIGEST_BUCKETS as u16).collect()
}

/// The digest bucket of `key`.
pub(super) fn bucket_of(key: &Key) -> usize {
    let mut buf = [0u8; 32];
    let bytes = postcard::to_slice(key, &mut buf).map_or(&[][..], |b| &*b);
    (fnv(bytes) % DIGEST_BUCKETS as u64) as usize
}

impl CrossRegionSync {
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

    /// Sends a digest to every peer that is quiet (has acknowledged every write) or owes a
    /// repair, and schedules the next round.
    pub(super) fn anti_entropy_round(&mut self, now: Duration) {
        self.next_anti_entropy = now.saturating_add(self.cfg.anti_entropy_interval);
        let head = self.next_seq - 1;
        let digest = self.digest();
        for i in 0..self.peers.len() {
            let p = &mut self.peers[i];
            if p.acked >= head || p.needs_repair || !p.unconfirmed.is_empty() {
                p.needs_repair = false;
                p.last_digest_at = Some(now);
                let to = p.region;
                self.stats.add(Counter::DigestsSent, 1);
                self.send(to, Body::Digest { buckets: digest.clone() });
            }
        }
    }

    /// A peer's digest: confirms the buckets it holds as we do, answers with our digest (at
    /// most once per interval), ships our state of the buckets that differ and asks for theirs.
    pub(super) fn on_digest(&mut self, pi: usize, theirs: &[u64], now: Duration) {
        let from = self.peers[pi].region;
        let mine = self.digest();
        let diff: Vec<u16> =
            (0..DIGEST_BUCKETS).filter(|&b| mine[b] != theirs[b]).map(|b| b as u16).collect();
        // A bucket the peer holds exactly as we do (our state only grows) has every
        // write we handed to anti-entropy: that part of its repair is done.
        let peer = &mut self.peers[pi];
        peer.unconfirmed.retain(|&b| mine[usize::from(b)] != theirs[usize::from(b)]);
        // Answer with our digest (at most once per interval) so that the peer can
        // confirm its own repairs of us even while it is never quiet.
        let recent =
            peer.last_digest_at.is_some_and(|t| now.saturating_sub(t) < self.cfg.anti_entropy_interval);
        if !recent {
            peer.last_digest_at = Some(now);
            self.stats.add(Counter::DigestsSent, 1);
            self.send(from, Body::Digest { buckets: mine });
        }
        if !diff.is_empty() {
            self.send_buckets(from, &diff);
            self.send(from, Body::RepairRequest { buckets: diff });
        }
    }

    /// A peer asks for our state of some buckets.
    pub(super) fn on_repair_request(&mut self, pi: usize, buckets: &[u16]) {
        let to = self.peers[pi].region;
        self.send_buckets(to, &buckets[..buckets.len().min(DIGEST_BUCKETS)]);
    }

    /// A peer's state of some buckets: joined into ours.
    pub(super) fn on_repair(&mut self, entries: &[(Key, Value)]) {
        for (k, v) in entries {
            self.merge_entry(*k, v);
        }
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
                    self.stats.add(Counter::OversizedEntries, 1);
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
            self.stats.add(Counter::RepairEntriesSent, entries.len() as u64);
            self.send(to, Body::Repair { entries });
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
}
