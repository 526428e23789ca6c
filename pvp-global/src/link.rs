//! Authenticated, encrypted datagrams between regions: [`SealedLinks`].
//!
//! Each pair of regions shares a 32-byte [`LinkKey`] (provisioned per pair, or derived per
//! pair and per channel from a deployment secret with [`LinkKey::derive`]); a peer is known
//! by the key it holds, nothing else. Every datagram is sealed with XChaCha20-Poly1305 under
//! a key for its direction (derived from the pair's key and both names, so the two
//! directions never share a nonce space), and carries the sender's name, its *epoch* (the
//! Unix millisecond its `SealedLinks` was made: it grows across restarts) and a sequence
//! number. The receiver refuses what it cannot open (unknown sender, bad tag, malformed) and
//! what it has already taken (a 64-datagram replay window per peer, and any epoch older than
//! the newest it opened), each counted in [`LinkStats`] and as
//! `pvp_global_link_refused_total{reason}`: an outsider's bytes are dropped input, never a
//! state change.
//!
//! Sans-IO like the rest of the crate: `seal` and `open` take and return bytes; the caller
//! owns the socket. Why not QUIC: the sync protocol already does its own acks, retries and
//! ordering over datagrams (and the fault proxies between regions act on datagrams), so a
//! sealing layer under it costs one AEAD per datagram and no second congestion controller;
//! BENCHMARKS.md ("inter-region links sealed") has its measured cost.
//!
//! ```
//! use pvp_core::ids::RegionId;
//! use pvp_global::link::{LinkError, LinkKey, SealedLinks};
//!
//! let (kr, jp): (RegionId, RegionId) = ("kr".parse().unwrap(), "jp".parse().unwrap());
//! let key = LinkKey::derive(b"deployment secret", kr, jp, "sync");
//! let mut a = SealedLinks::new(kr, 1_000);
//! let mut b = SealedLinks::new(jp, 2_000);
//! a.add_peer(jp, key.clone());
//! b.add_peer(kr, key);
//! let mut wire = Vec::new();
//! a.seal(jp, b"deltas", &mut wire).unwrap();
//! let mut plain = Vec::new();
//! assert_eq!(b.open(&wire, &mut plain), Ok(kr));
//! assert_eq!(plain, b"deltas");
//! // The same datagram again is a replay; a flipped bit fails the tag.
//! assert_eq!(b.open(&wire, &mut plain), Err(LinkError::Replayed));
//! a.seal(jp, b"more", &mut wire).unwrap();
//! wire[22] ^= 1;
//! assert_eq!(b.open(&wire, &mut plain), Err(LinkError::BadTag));
//! ```

use std::collections::HashMap;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
use pvp_core::ids::{MAX_NAME_LEN, RegionId};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Version byte of the sealed format.
const VERSION: u8 = 1;
/// Tag bytes after the ciphertext.
const TAG_BYTES: usize = 16;
/// Bytes a sealed datagram adds to its plaintext at most (header with the longest name, tag).
pub const OVERHEAD: usize = 2 + MAX_NAME_LEN + 8 + 8 + TAG_BYTES;
/// Datagrams behind the newest one a receiver still takes (each once).
pub const REPLAY_WINDOW: u64 = 64;

/// A pair of regions' shared secret.
#[derive(Clone)]
pub struct LinkKey([u8; 32]);

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(..)")
    }
}

impl LinkKey {
    /// A key from its bytes (as provisioned for the pair).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        LinkKey(bytes)
    }

    /// The key of the pair `a`–`b` (either order) on `channel` ("sync", "bridge", ...),
    /// derived from a deployment secret: every pair and every channel gets its own key, so
    /// two channels between the same regions never share nonces.
    pub fn derive(secret: &[u8], a: RegionId, b: RegionId, channel: &str) -> Self {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let mut h = Sha256::new();
        h.update(b"pvp-link pair key v1\0");
        h.update((secret.len() as u64).to_le_bytes());
        h.update(secret);
        for part in [lo.as_str(), hi.as_str(), channel] {
            h.update([part.len() as u8]);
            h.update(part.as_bytes());
        }
        LinkKey(h.finalize().into())
    }

    /// The key for datagrams from `from` to `to`.
    fn direction(&self, from: RegionId, to: RegionId) -> XChaCha20Poly1305 {
        let mut h = Sha256::new();
        h.update(b"pvp-link direction v1\0");
        h.update(self.0);
        for part in [from.as_str(), to.as_str()] {
            h.update([part.len() as u8]);
            h.update(part.as_bytes());
        }
        let k: [u8; 32] = h.finalize().into();
        XChaCha20Poly1305::new(&k.into())
    }
}

/// Why a datagram was not sealed or not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LinkError {
    /// Too short, wrong version, or a sender name that is not a region id.
    #[error("malformed sealed datagram")]
    Malformed,
    /// The sender (or, sealing, the destination) is not a configured peer.
    #[error("unknown peer")]
    UnknownPeer,
    /// The tag did not verify: wrong key, or bytes changed on the way.
    #[error("authentication failed")]
    BadTag,
    /// Opened before, or older than the replay window.
    #[error("replayed datagram")]
    Replayed,
    /// From an epoch older than the newest opened from that peer (a process since restarted).
    #[error("stale epoch")]
    Stale,
    /// The sender's sequence numbers ran out (2^64 datagrams in one epoch).
    #[error("sequence exhausted")]
    Exhausted,
}

/// What a [`SealedLinks`] sealed, opened and refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkStats {
    /// Datagrams sealed.
    pub sealed: u64,
    /// Datagrams opened.
    pub opened: u64,
    /// Refused: malformed.
    pub malformed: u64,
    /// Refused: sender unknown.
    pub unknown_peer: u64,
    /// Refused: tag did not verify.
    pub bad_tag: u64,
    /// Refused: replayed, or from a stale epoch.
    pub replayed: u64,
}

impl LinkStats {
    /// Every datagram refused.
    pub fn refused(&self) -> u64 {
        self.malformed + self.unknown_peer + self.bad_tag + self.replayed
    }
}

struct Peer {
    tx: XChaCha20Poly1305,
    rx: XChaCha20Poly1305,
    next_seq: u64,
    /// Newest epoch opened from the peer, its highest sequence, and which of the
    /// [`REPLAY_WINDOW`] below it were seen (bit i: `high - i`).
    rx_epoch: u64,
    rx_high: u64,
    rx_seen: u64,
    rx_any: bool,
}

/// One region's end of its sealed links to its peers. Make one per socket-level channel and
/// process: two `SealedLinks` sealing under the same key with the same epoch would reuse
/// nonces (use [`LinkKey::derive`]'s channel for a second channel).
pub struct SealedLinks {
    local: RegionId,
    epoch: u64,
    peers: HashMap<RegionId, Peer>,
    stats: LinkStats,
}

impl std::fmt::Debug for SealedLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedLinks")
            .field("local", &self.local)
            .field("epoch", &self.epoch)
            .field("peers", &self.peers.keys().collect::<Vec<_>>())
            .field("stats", &self.stats)
            .finish()
    }
}

impl SealedLinks {
    /// `local`'s end, sealing in `epoch`: the Unix time in ms when it starts (it must grow
    /// across restarts of the region, so a peer can tell old datagrams from new ones).
    pub fn new(local: RegionId, epoch: u64) -> Self {
        SealedLinks { local, epoch, peers: HashMap::new(), stats: LinkStats::default() }
    }

    /// This end's region.
    pub fn local(&self) -> RegionId {
        self.local
    }

    /// Trusts `peer` with `key` (replacing its key and replay state if it was known).
    pub fn add_peer(&mut self, peer: RegionId, key: LinkKey) {
        let p = Peer {
            tx: key.direction(self.local, peer),
            rx: key.direction(peer, self.local),
            next_seq: 0,
            rx_epoch: 0,
            rx_high: 0,
            rx_seen: 0,
            rx_any: false,
        };
        self.peers.insert(peer, p);
    }

    /// Counters so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Seals `plaintext` for `to` into `out` (cleared first; `plaintext.len() + OVERHEAD`
    /// bytes at most).
    pub fn seal(&mut self, to: RegionId, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), LinkError> {
        let p = self.peers.get_mut(&to).ok_or(LinkError::UnknownPeer)?;
        let seq = p.next_seq;
        p.next_seq = seq.checked_add(1).ok_or(LinkError::Exhausted)?;
        out.clear();
        let name = self.local.as_str().as_bytes();
        out.push(VERSION);
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
        let header = out.len();
        out.extend_from_slice(plaintext);
        let (aad, body) = out.split_at_mut(header);
        let tag =
            p.tx.encrypt_in_place_detached(&nonce(self.epoch, seq), aad, body)
                .map_err(|_| LinkError::Malformed)?;
        out.extend_from_slice(&tag);
        self.stats.sealed += 1;
        Ok(())
    }

    /// Opens a received datagram into `out` (cleared first) and names its sender; anything
    /// refused is counted and leaves every state as it was.
    pub fn open(&mut self, datagram: &[u8], out: &mut Vec<u8>) -> Result<RegionId, LinkError> {
        let r = self.open_inner(datagram, out);
        if let Err(e) = r {
            out.clear();
            let reason = match e {
                LinkError::Malformed | LinkError::Exhausted => {
                    self.stats.malformed += 1;
                    "malformed"
                }
                LinkError::UnknownPeer => {
                    self.stats.unknown_peer += 1;
                    "unknown_peer"
                }
                LinkError::BadTag => {
                    self.stats.bad_tag += 1;
                    "bad_tag"
                }
                LinkError::Replayed | LinkError::Stale => {
                    self.stats.replayed += 1;
                    "replayed"
                }
            };
            metrics::counter!("pvp_global_link_refused_total", "reason" => reason).increment(1);
        } else {
            self.stats.opened += 1;
        }
        r
    }

    fn open_inner(&mut self, d: &[u8], out: &mut Vec<u8>) -> Result<RegionId, LinkError> {
        let (&version, rest) = d.split_first().ok_or(LinkError::Malformed)?;
        let (&len, rest) = rest.split_first().ok_or(LinkError::Malformed)?;
        let len = usize::from(len);
        if version != VERSION || len == 0 || len > MAX_NAME_LEN || rest.len() < len + 16 + TAG_BYTES {
            return Err(LinkError::Malformed);
        }
        let name = std::str::from_utf8(&rest[..len]).map_err(|_| LinkError::Malformed)?;
        let from = RegionId::new(name).map_err(|_| LinkError::Malformed)?;
        let u64_at = |i: usize| u64::from_le_bytes(rest[i..i + 8].try_into().unwrap_or([0; 8]));
        let (epoch, seq) = (u64_at(len), u64_at(len + 8));
        let header = 2 + len + 16;
        let p = self.peers.get_mut(&from).ok_or(LinkError::UnknownPeer)?;
        // Cheap refusals first (no state changes until the tag verifies).
        if p.rx_any {
            if epoch < p.rx_epoch {
                return Err(LinkError::Stale);
            }
            if epoch == p.rx_epoch && !window_allows(p.rx_high, p.rx_seen, seq) {
                return Err(LinkError::Replayed);
            }
        }
        let (body, tag) = d[header..].split_at(d.len() - header - TAG_BYTES);
        out.clear();
        out.extend_from_slice(body);
        p.rx.decrypt_in_place_detached(&nonce(epoch, seq), &d[..header], out, Tag::from_slice(tag))
            .map_err(|_| LinkError::BadTag)?;
        if !p.rx_any || epoch > p.rx_epoch {
            (p.rx_any, p.rx_epoch, p.rx_high, p.rx_seen) = (true, epoch, seq, 1);
        } else if seq > p.rx_high {
            let shift = seq - p.rx_high;
            p.rx_seen = if shift >= REPLAY_WINDOW { 1 } else { (p.rx_seen << shift) | 1 };
            p.rx_high = seq;
        } else {
            p.rx_seen |= 1 << (p.rx_high - seq);
        }
        Ok(from)
    }
}

/// Whether `seq` is new for a window whose newest is `high` with `seen` below it.
fn window_allows(high: u64, seen: u64, seq: u64) -> bool {
    if seq > high {
        return true;
    }
    let back = high - seq;
    back < REPLAY_WINDOW && seen & (1 << back) == 0
}

fn nonce(epoch: u64, seq: u64) -> XNonce {
    let mut n = [0u8; 24];
    n[..8].copy_from_slice(&epoch.to_le_bytes());
    n[8..16].copy_from_slice(&seq.to_le_bytes());
    n.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> RegionId {
        s.parse().unwrap()
    }

    fn pair(secret: &[u8]) -> (SealedLinks, SealedLinks) {
        let mut a = SealedLinks::new(id("kr"), 10);
        let mut b = SealedLinks::new(id("jp"), 20);
        a.add_peer(id("jp"), LinkKey::derive(secret, id("kr"), id("jp"), "sync"));
        b.add_peer(id("kr"), LinkKey::derive(secret, id("jp"), id("kr"), "sync"));
        (a, b)
    }

    #[test]
    fn both_directions_open_and_out_of_order_within_the_window_is_taken_once() {
        let (mut a, mut b) = pair(b"s");
        let mut w = Vec::new();
        let mut p = Vec::new();
        let sealed: Vec<Vec<u8>> = (0..10u8)
            .map(|i| {
                a.seal(id("jp"), &[i; 5], &mut w).unwrap();
                w.clone()
            })
            .collect();
        for i in [3usize, 0, 9, 1, 2, 8, 4, 5, 7, 6] {
            assert_eq!(b.open(&sealed[i], &mut p), Ok(id("kr")));
            assert_eq!(p, [i as u8; 5]);
        }
        for s in &sealed {
            assert_eq!(b.open(s, &mut p), Err(LinkError::Replayed));
        }
        b.seal(id("kr"), b"back", &mut w).unwrap();
        assert_eq!(a.open(&w, &mut p), Ok(id("jp")));
        assert_eq!(p, b"back");
        assert_eq!(b.stats().opened, 10);
        assert_eq!(b.stats().replayed, 10);
    }

    #[test]
    fn wrong_keys_unknown_peers_garbage_and_old_epochs_are_refused_and_counted() {
        let (mut a, mut b) = pair(b"right");
        let (mut evil, _) = pair(b"wrong");
        let mut w = Vec::new();
        let mut p = Vec::new();
        evil.seal(id("jp"), b"x", &mut w).unwrap();
        assert_eq!(b.open(&w, &mut p), Err(LinkError::BadTag));
        let mut stranger = SealedLinks::new(id("sg"), 5);
        stranger.add_peer(id("jp"), LinkKey::from_bytes([7; 32]));
        stranger.seal(id("jp"), b"x", &mut w).unwrap();
        assert_eq!(b.open(&w, &mut p), Err(LinkError::UnknownPeer));
        for junk in [
            &[][..],
            &[1],
            &[1, 2, b'k', b'r'],
            &[9; 60],
            &[
                1, 2, b'K', b'R', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, 0, 0, 0, 0, 0, 0,
            ],
        ] {
            assert_eq!(b.open(junk, &mut p), Err(LinkError::Malformed), "{junk:?}");
        }
        let before = b.stats();
        assert_eq!((before.bad_tag, before.unknown_peer, before.malformed), (1, 1, 5));
        // Every truncation of a good datagram is refused, and none changes the window.
        a.seal(id("jp"), b"payload", &mut w).unwrap();
        for cut in 0..w.len() {
            assert!(b.open(&w[..cut], &mut p).is_err());
        }
        assert_eq!(b.stats().refused(), before.refused() + w.len() as u64);
        assert_eq!(b.open(&w, &mut p), Ok(id("kr")));
        // A restarted kr (newer epoch) is taken; the old incarnation's datagrams no longer are.
        let old = w.clone();
        let mut a2 = SealedLinks::new(id("kr"), 11);
        a2.add_peer(id("jp"), LinkKey::derive(b"right", id("kr"), id("jp"), "sync"));
        a2.seal(id("jp"), b"new", &mut w).unwrap();
        assert_eq!(b.open(&w, &mut p), Ok(id("kr")));
        a.seal(id("jp"), b"late", &mut w).unwrap();
        assert_eq!(b.open(&w, &mut p), Err(LinkError::Stale));
        assert_eq!(b.open(&old, &mut p), Err(LinkError::Stale));
        let s = b.stats();
        assert_eq!((s.opened, s.unknown_peer, s.replayed), (2, 1, 2));
        assert_eq!(a.seal(id("sg"), b"x", &mut w), Err(LinkError::UnknownPeer));
    }

    #[test]
    fn far_ahead_sequences_slide_the_window() {
        let (mut a, mut b) = pair(b"s");
        let mut w = Vec::new();
        let mut p = Vec::new();
        let mut all = Vec::new();
        for _ in 0..200 {
            a.seal(id("jp"), b"d", &mut w).unwrap();
            all.push(w.clone());
        }
        assert!(b.open(&all[199], &mut p).is_ok());
        // 199 - 64 = 135 is the oldest still inside the window.
        assert!(b.open(&all[136], &mut p).is_ok());
        assert_eq!(b.open(&all[135], &mut p), Err(LinkError::Replayed));
        assert_eq!(b.open(&all[10], &mut p), Err(LinkError::Replayed));
    }

    #[test]
    fn keys_differ_per_pair_and_channel_and_agree_in_either_order() {
        let k = |a: &str, b: &str, c: &str| LinkKey::derive(b"s", id(a), id(b), c).0;
        assert_eq!(k("kr", "jp", "sync"), k("jp", "kr", "sync"));
        assert_ne!(k("kr", "jp", "sync"), k("kr", "sg", "sync"));
        assert_ne!(k("kr", "jp", "sync"), k("kr", "jp", "bridge"));
        let (mut a, _) = pair(b"s");
        let mut w = Vec::new();
        a.seal(id("jp"), &[0; 100], &mut w).unwrap();
        assert!(w.len() <= 100 + OVERHEAD, "{}", w.len());
    }
}
