//! pvp-global's CrossRegionSync ([`CrossRegionSync`]) in the region thread: it replicates the ban
//! list (STRONG: committed once a majority of regions has it), the global leaderboard
//! (wins per player, an `Incr` score CRDT), players' profiles (games, wins, losses counters
//! after every match, EVENTUAL), friend lists and friends' online status (a presence register
//! per player holding "online until", refreshed while the player is online: a presence TTL,
//! EVENTUAL). Match results stay in the exactly-once
//! [`Replica`](crate::replica::Replica) log, which also measures the sync lag.
//!
//! Both share the region's sync socket and the fault proxies: a datagram's first byte says
//! which (0: results log, 1: CrossRegionSync), and a CrossRegionSync datagram's second byte is
//! the sender's region index (the proxy hides the source address).

use std::hash::BuildHasher;
use std::time::Duration;

use pvp_core::ids::{PlayerId, RegionId};
use pvp_global::crdt::{ProfileField, Scalar};
use pvp_global::leaderboard::{GameMode, ScoreOperator};
use pvp_global::sync::{CrossRegionSync, Key, SnapshotStore, SyncConfig, SyncEvent, Value, WriteOp};

/// Tag of a results-log datagram.
pub const TAG_RESULTS: u8 = 0;
/// Tag of a CrossRegionSync datagram.
pub const TAG_CRDT: u8 = 1;
/// The leaderboard mode the bots' wins go to.
pub const WINS: GameMode = GameMode(1);
/// `Key::Custom` ids at or above this are presence registers (`PRESENCE | player id`).
pub const PRESENCE: u64 = 1 << 62;

/// Counters of the CrossRegionSync side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CrdtStats {
    /// STRONG writes (bans) committed by a majority.
    pub strong_committed: u64,
    /// STRONG writes that timed out (they stay applied and still spread, as the sync docs say).
    pub strong_failed: u64,
    /// Writes refused by the node.
    pub write_errors: u64,
    /// Datagrams refused before reaching the node (no sender byte, unknown region).
    pub rejected: u64,
}

/// What a region's node holds, counted in one pass ([`RegionSync::census`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Census {
    /// Players banned here.
    pub banned: Vec<PlayerId>,
    /// Profiles held.
    pub profiles: u64,
    /// Matches those profiles count (wins + losses + draws), summed over players.
    pub games: u64,
    /// Players whose presence says online.
    pub online: u64,
}

/// One region's CrossRegionSync node.
#[derive(Debug)]
pub struct RegionSync {
    node: CrossRegionSync,
    ids: Vec<RegionId>,
    own: u8,
    stats: CrdtStats,
}

impl RegionSync {
    /// A node for `ids[own]`, syncing with every other region, flushing every `flush`.
    pub fn new(
        ids: &[RegionId],
        own: usize,
        flush: Duration,
        now: Duration,
    ) -> Result<Self, pvp_global::sync::ConfigError> {
        let peers = ids.iter().enumerate().filter(|(i, _)| *i != own).map(|(_, r)| *r).collect();
        let mut cfg = SyncConfig::new(ids[own], peers)?;
        cfg.flush_interval = flush;
        cfg.max_message_bytes = 16_000;
        let mut node = CrossRegionSync::new(cfg, now);
        // Every region declares the mode the same way, so this cannot conflict.
        let _ = node.define_mode(WINS, ScoreOperator::Incr);
        Ok(Self { node, ids: ids.to_vec(), own: own as u8, stats: CrdtStats::default() })
    }

    /// Counters.
    pub fn stats(&self) -> CrdtStats {
        self.stats
    }

    /// The node.
    pub fn node(&self) -> &CrossRegionSync {
        &self.node
    }

    /// Adds a win to each of `winners` on the global leaderboard.
    pub fn record_wins(&mut self, winners: &[PlayerId], now: Duration) {
        for p in winners {
            if self.node.submit_score(WINS, *p, 1, now).is_err() {
                self.stats.write_errors += 1;
            }
        }
    }

    /// Counts a finished match in each player's profile: one write per player, to `wins`,
    /// `losses` or `draws` (games played is their sum).
    pub fn record_profiles(&mut self, seats: &[(PlayerId, u8)], winner: Option<u8>, now: Duration) {
        for &(p, team) in seats {
            let field = match winner {
                Some(w) if w == team => "wins",
                Some(_) => "losses",
                None => "draws",
            };
            let op = WriteOp::ProfileAdd { field: field.to_owned(), delta: 1 };
            if self.node.write(Key::Profile(p), op, now).is_err() {
                self.stats.write_errors += 1;
            }
        }
    }

    /// Sets each player's `rating` profile field (last writer wins).
    pub fn set_ratings(&mut self, players: &[(PlayerId, i64)], now: Duration) {
        for &(p, rating) in players {
            let op = WriteOp::ProfileSet { field: "rating".to_owned(), value: Scalar::Int(rating) };
            if self.node.write(Key::Profile(p), op, now).is_err() {
                self.stats.write_errors += 1;
            }
        }
    }

    /// Marks `player` online until `until_unix_ms` (the presence TTL runs from the write).
    pub fn mark_online(&mut self, player: PlayerId, until_unix_ms: u64, now: Duration) {
        let op = WriteOp::RegisterSet(Scalar::Int(i64::try_from(until_unix_ms).unwrap_or(i64::MAX)));
        if self.node.write(Key::Custom(PRESENCE | player.get()), op, now).is_err() {
            self.stats.write_errors += 1;
        }
    }

    /// Makes `a` and `b` friends (both lists).
    pub fn befriend(&mut self, a: PlayerId, b: PlayerId, now: Duration) {
        if self.node.add_friend(a, b, now).is_err() || self.node.add_friend(b, a, now).is_err() {
            self.stats.write_errors += 1;
        }
    }

    /// One pass over the node: bans, profiles and the games they count, presence online at
    /// `unix_ms`.
    pub fn census(&self, unix_ms: u64) -> Census {
        let now = i64::try_from(unix_ms).unwrap_or(i64::MAX);
        let mut c = Census::default();
        let (wins, losses, draws) = ("wins".to_owned(), "losses".to_owned(), "draws".to_owned());
        for (k, v) in self.node.iter() {
            match (k, v) {
                (Key::Ban(p), _) if self.node.is_banned(*p) => c.banned.push(*p),
                (Key::Profile(_), Value::Profile(p)) => {
                    c.profiles += 1;
                    for f in [&wins, &losses, &draws] {
                        if let Some(ProfileField::Counter(n)) = p.get(f) {
                            c.games += n.value().max(0) as u64;
                        }
                    }
                }
                (Key::Custom(id), Value::Register(r)) if *id >= PRESENCE => {
                    if matches!(r.value(), Scalar::Int(t) if *t > now) {
                        c.online += 1;
                    }
                }
                _ => {}
            }
        }
        c
    }

    /// Bans `player` (STRONG).
    pub fn ban(&mut self, player: PlayerId, now: Duration) {
        if self.node.ban(player, now).is_err() {
            self.stats.write_errors += 1;
        }
    }

    /// Handles a CrossRegionSync datagram (without its tag byte).
    pub fn handle_datagram(&mut self, now: Duration, bytes: &[u8]) {
        let Some((&from, payload)) = bytes.split_first() else {
            self.stats.rejected += 1;
            return;
        };
        let Some(region) = self.ids.get(usize::from(from)).copied() else {
            self.stats.rejected += 1;
            return;
        };
        self.node.handle_datagram(now, region, payload);
    }

    /// Runs due timers and appends the datagrams to send (tagged) to `out`.
    pub fn poll(&mut self, now: Duration, out: &mut Vec<(RegionId, Vec<u8>)>) {
        if now >= self.node.poll_timeout() {
            self.node.handle_timeout(now);
        }
        while let Some(t) = self.node.poll_transmit() {
            let mut b = Vec::with_capacity(t.payload.len() + 2);
            b.push(TAG_CRDT);
            b.push(self.own);
            b.extend_from_slice(&t.payload);
            out.push((t.to, b));
        }
        while let Some(e) = self.node.poll_event() {
            match e {
                SyncEvent::StrongCommitted { .. } => self.stats.strong_committed += 1,
                SyncEvent::StrongFailed { .. } => self.stats.strong_failed += 1,
            }
        }
    }

    /// Players banned here.
    pub fn bans(&self) -> u64 {
        self.node.iter().filter(|(k, _)| matches!(k, Key::Ban(p) if self.node.is_banned(*p))).count() as u64
    }

    /// The players banned here (applied, committed or not).
    pub fn banned_players(&self) -> Vec<PlayerId> {
        self.node
            .iter()
            .filter_map(|(k, _)| match k {
                Key::Ban(p) if self.node.is_banned(*p) => Some(*p),
                _ => None,
            })
            .collect()
    }

    /// Players on the wins leaderboard.
    pub fn leaderboard_players(&self) -> u64 {
        self.node.leaderboards().mode(WINS).map_or(0, |b| b.len() as u64)
    }

    /// The top `n` of the wins leaderboard: (player, wins).
    pub fn top(&self, n: usize) -> Vec<(PlayerId, i64)> {
        self.node
            .leaderboards()
            .mode(WINS)
            .map_or_else(Vec::new, |b| b.top(n).into_iter().map(|e| (e.player, e.score)).collect())
    }

    /// A hash of the node's per-bucket digest: equal states, equal hashes.
    pub fn digest(&mut self) -> u64 {
        let s = foldhash::quality::FixedState::with_seed(0xc0de);
        s.hash_one(self.node.digest())
    }

    /// Writes the node's snapshot under `dir` (pvp-global's snapshot format).
    pub fn save_snapshot(
        &self,
        dir: &std::path::Path,
    ) -> Result<std::path::PathBuf, pvp_global::sync::SnapshotError> {
        let store = SnapshotStore::new(dir, self.node.config().region)?;
        store.save_node(&self.node)?;
        Ok(store.path())
    }
}
