//! One region's fleet of game servers: lifecycle, scaling, allocation and health.
//!
//! [`RegionCluster`] is a sans-IO state machine. The driver feeds it server heartbeats
//! ([`RegionCluster::heartbeat`]) and calls [`RegionCluster::tick`] with the current time; the
//! cluster answers with decisions (which servers to start and stop) and keeps the state the
//! global layer reads ([`RegionCluster::summary`], [`RegionCluster::health`]).
//!
//! Server lifecycle (like Agones' `GameServer`):
//!
//! ```text
//! Starting --heartbeat--> Ready --allocate--> Allocated --last match ends--> Ready
//!     |                     |                    |
//!     |                     +--scale_down--> Shutdown   +--drain--> Draining --empty--> Shutdown
//!     +--no heartbeat within startup_timeout / heartbeat_timeout--> Unhealthy --tick--> Shutdown
//! ```
//!
//! ```
//! use std::time::Duration;
//! use pvp_core::ids::MatchId;
//! use pvp_global::cluster::{RegionCluster, RegionConfig, RegionHealth, ServerState};
//!
//! let t0 = Duration::ZERO;
//! let mut kr = RegionCluster::new(RegionConfig::reference_kr(), t0)?;
//! assert_eq!(kr.servers().count(), 3); // min_servers, one per zone
//! assert_eq!(kr.health(), RegionHealth::Down); // nothing Ready yet
//! let ids: Vec<_> = kr.servers().map(|s| s.id()).collect();
//! for id in &ids {
//!     kr.heartbeat(*id, t0)?;
//! }
//! assert_eq!(kr.health(), RegionHealth::Healthy);
//! let placed = kr.allocate(MatchId::new(1), 2, Duration::from_millis(60), t0)?;
//! assert_eq!(kr.server(placed.id).map(|s| s.state()), Some(ServerState::Allocated));
//! assert_eq!(kr.current_player_count(), 2);
//! assert_eq!(kr.average_latency(), Some(Duration::from_millis(30)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;

pub use config::{
    ConfigError, FleetConfig, JP, KR, MAX_PLAYERS_PER_SERVER, RESERVED_HOSTS, RegionConfig, SG,
};

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use pvp_core::ids::{MatchId, RegionId, ServerId, ZoneId};
use serde::{Deserialize, Serialize};

/// Where a game server is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServerState {
    /// Started, no heartbeat yet; takes no matches.
    Starting,
    /// Healthy and empty: takes matches, may be scaled down.
    Ready,
    /// Hosts at least one match; may take more while it has room; never scaled down.
    Allocated,
    /// Finishes its matches, takes no new ones, shuts down when empty.
    Draining,
    /// Missed its heartbeats; takes nothing; removed on the next tick.
    Unhealthy,
    /// Gone. Only reported in [`ClusterTick`]; shut-down servers leave the fleet.
    Shutdown,
}

/// A region's health as the global layer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RegionHealth {
    /// Every server heartbeats and there is spare room.
    Healthy,
    /// Usable, but some servers are unhealthy or spare room is short.
    Degraded,
    /// Takes no matches: no usable server, or marked down by the global layer.
    Down,
}

/// Why a cluster call was refused. The cluster is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The server is not (or no longer) part of this fleet.
    #[error("server {0} is not part of this fleet")]
    UnknownServer(ServerId),
    /// The server missed its heartbeats and must be replaced, not revived.
    #[error("server {0} is unhealthy and cannot be revived")]
    ServerUnhealthy(ServerId),
    /// No usable server has room for the match.
    #[error("no server has room for {players} players")]
    NoCapacity {
        /// Players the match needs.
        players: u32,
    },
    /// The match needs no player slot or more than one server holds.
    #[error("a match of {players} players does not fit a server of {per_server}")]
    BadMatchSize {
        /// Players asked for.
        players: u32,
        /// Slots per server.
        per_server: u32,
    },
    /// The match is already placed in this region.
    #[error("match {0} is already placed")]
    DuplicateMatch(MatchId),
    /// The match is not placed in this region.
    #[error("match {0} is not placed here")]
    UnknownMatch(MatchId),
    /// The region is marked down.
    #[error("region is down")]
    RegionDown,
}

/// A server chosen for a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AllocatedServer {
    /// The server.
    pub id: ServerId,
    /// Its zone.
    pub zone: ZoneId,
    /// Where players connect.
    pub addr: SocketAddr,
}

/// One game server as the cluster tracks it.
#[derive(Debug, Clone)]
pub struct GameServer {
    id: ServerId,
    zone: ZoneId,
    addr: SocketAddr,
    state: ServerState,
    players: u32,
    matches: u32,
    started_at: Duration,
    last_heartbeat: Option<Duration>,
    /// Index in `free_buckets[free]`, when allocatable.
    bucket_pos: Option<u32>,
}

impl GameServer {
    /// The server's id.
    pub fn id(&self) -> ServerId {
        self.id
    }
    /// Its zone.
    pub fn zone(&self) -> ZoneId {
        self.zone
    }
    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// Its lifecycle state.
    pub fn state(&self) -> ServerState {
        self.state
    }
    /// Players on it.
    pub fn players(&self) -> u32 {
        self.players
    }
    /// Matches on it.
    pub fn matches(&self) -> u32 {
        self.matches
    }
    /// Last heartbeat time, if any arrived.
    pub fn last_heartbeat(&self) -> Option<Duration> {
        self.last_heartbeat
    }
    fn allocatable(&self) -> bool {
        matches!(self.state, ServerState::Ready | ServerState::Allocated)
    }
}

/// What one [`RegionCluster::tick`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterTick {
    /// Servers that turned Unhealthy.
    pub became_unhealthy: u32,
    /// Servers shut down (Unhealthy removed, Draining emptied).
    pub shut_down: u32,
    /// Servers started to keep `min_servers` usable ones.
    pub started: u32,
    /// Matches lost with an unhealthy server.
    pub matches_lost: u32,
}

/// Server counts by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerCounts {
    /// Starting servers.
    pub starting: u32,
    /// Ready servers.
    pub ready: u32,
    /// Allocated servers.
    pub allocated: u32,
    /// Draining servers.
    pub draining: u32,
    /// Unhealthy servers.
    pub unhealthy: u32,
}

/// The state a region exchanges with the global layer (serde: TOML, JSON, postcard, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RegionSummary {
    /// The region.
    pub region: RegionId,
    /// Its health (including any override).
    pub health: RegionHealth,
    /// Servers by state.
    pub servers: ServerCounts,
    /// Player slots on Ready and Allocated servers.
    pub capacity: u64,
    /// Players in matches.
    pub players: u64,
    /// Free slots on Ready and Allocated servers.
    pub free_slots: u64,
    /// Running matches.
    pub matches: u64,
    /// Mean measured latency of players in matches, in microseconds.
    pub average_latency_us: Option<u64>,
    /// When the summary was taken (the driver's clock).
    pub at: Duration,
}

/// Counters of a cluster's refusals and decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Matches placed.
    pub allocations: u64,
    /// Allocations refused for lack of room.
    pub allocation_failures: u64,
    /// Heartbeats refused (unknown or unhealthy server).
    pub rejected_heartbeats: u64,
    /// Servers that turned unhealthy.
    pub unhealthy: u64,
    /// Servers started.
    pub started: u64,
    /// Servers shut down.
    pub shut_down: u64,
}

#[derive(Debug, Clone, Copy)]
struct Placement {
    slot: u32,
    players: u32,
    /// `u128`: sums of caller-given latencies (up to `u64::MAX` µs each) never overflow.
    latency_sum_us: u128,
}

/// One region's fleet. See the [module docs](self).
#[derive(Debug)]
pub struct RegionCluster {
    config: RegionConfig,
    first_host: u32,
    slots: Vec<Option<GameServer>>,
    free_slots_list: Vec<u32>,
    by_id: HashMap<ServerId, u32>,
    /// `free_buckets[k]` holds the slots of allocatable servers with exactly `k` free places.
    free_buckets: Vec<Vec<u32>>,
    /// Bit `k` set when `free_buckets[k]` is not empty.
    nonempty: Vec<u64>,
    free_total: u64,
    placements: HashMap<MatchId, Placement, foldhash::fast::FixedState>,
    next_seq: u64,
    id_prefix: u64,
    players: u64,
    latency_sum_us: u128,
    capacity: u64,
    counts: ServerCounts,
    health_override: Option<RegionHealth>,
    stats: ClusterStats,
}

impl RegionCluster {
    /// Validates `config` and starts `min_servers` servers spread over the zones.
    pub fn new(config: RegionConfig, now: Duration) -> Result<Self, ConfigError> {
        config.validate()?;
        let (first_host, _) = config.parse_cidr()?;
        let per = config.players_per_server as usize;
        // Server ids are fleet-unique: a 16-bit hash of the region name above a sequence number.
        let id_prefix = config
            .id
            .as_str()
            .bytes()
            .fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
        let mut cluster = Self {
            first_host,
            // Reserve for a typical fleet only: max_servers may be far larger than what runs.
            slots: Vec::with_capacity(config.max_servers.min(4096) as usize),
            free_slots_list: Vec::new(),
            by_id: HashMap::with_capacity(config.max_servers.min(4096) as usize),
            free_buckets: vec![Vec::new(); per + 1],
            nonempty: vec![0; per / 64 + 1],
            free_total: 0,
            placements: HashMap::default(),
            next_seq: 1,
            id_prefix: u64::from(id_prefix & 0xffff) << 48,
            players: 0,
            latency_sum_us: 0,
            capacity: 0,
            counts: ServerCounts::default(),
            health_override: None,
            stats: ClusterStats::default(),
            config,
        };
        let min = cluster.config.min_servers;
        cluster.scale_up(min, now);
        Ok(cluster)
    }

    /// The region's id.
    pub fn region(&self) -> RegionId {
        self.config.id
    }

    /// The configuration in force.
    pub fn config(&self) -> &RegionConfig {
        &self.config
    }

    /// Every live (not shut-down) server.
    pub fn servers(&self) -> impl Iterator<Item = &GameServer> {
        self.slots.iter().flatten()
    }

    /// One server, if part of the fleet.
    pub fn server(&self, id: ServerId) -> Option<&GameServer> {
        self.by_id.get(&id).and_then(|&i| self.slots.get(i as usize)).and_then(Option::as_ref)
    }

    /// Servers that take matches now (Ready or Allocated with room).
    pub fn available_servers(&self) -> impl Iterator<Item = &GameServer> {
        self.servers().filter(|s| s.allocatable() && s.players < self.config.players_per_server)
    }

    /// Server counts by state.
    pub fn server_counts(&self) -> ServerCounts {
        self.counts
    }

    /// Counters.
    pub fn stats(&self) -> ClusterStats {
        self.stats
    }

    fn live(&self) -> u32 {
        let c = self.counts;
        c.starting + c.ready + c.allocated + c.draining + c.unhealthy
    }

    fn count_mut(&mut self, state: ServerState) -> Option<&mut u32> {
        let c = &mut self.counts;
        match state {
            ServerState::Starting => Some(&mut c.starting),
            ServerState::Ready => Some(&mut c.ready),
            ServerState::Allocated => Some(&mut c.allocated),
            ServerState::Draining => Some(&mut c.draining),
            ServerState::Unhealthy => Some(&mut c.unhealthy),
            ServerState::Shutdown => None,
        }
    }

    fn free_of(&self, s: &GameServer) -> usize {
        self.config.players_per_server.saturating_sub(s.players) as usize
    }

    fn bucket_remove(&mut self, slot: u32) {
        let Some(Some(server)) = self.slots.get(slot as usize) else {
            return;
        };
        let Some(pos) = server.bucket_pos else { return };
        let free = self.free_of(server);
        let bucket = &mut self.free_buckets[free];
        bucket.swap_remove(pos as usize);
        if bucket.is_empty() {
            self.nonempty[free / 64] &= !(1u64 << (free % 64));
        }
        if let Some(&moved) = bucket.get(pos as usize) {
            if let Some(Some(m)) = self.slots.get_mut(moved as usize) {
                m.bucket_pos = Some(pos);
            }
        }
        self.free_total -= free as u64;
        if let Some(Some(server)) = self.slots.get_mut(slot as usize) {
            server.bucket_pos = None;
        }
        self.capacity -= u64::from(self.config.players_per_server);
    }

    fn bucket_insert(&mut self, slot: u32) {
        let Some(Some(server)) = self.slots.get(slot as usize) else {
            return;
        };
        if server.bucket_pos.is_some() || !server.allocatable() {
            return;
        }
        let free = self.free_of(server);
        let bucket = &mut self.free_buckets[free];
        let pos = bucket.len() as u32;
        bucket.push(slot);
        self.nonempty[free / 64] |= 1u64 << (free % 64);
        self.free_total += free as u64;
        if let Some(Some(server)) = self.slots.get_mut(slot as usize) {
            server.bucket_pos = Some(pos);
        }
        self.capacity += u64::from(self.config.players_per_server);
    }

    /// Moves a server to `state`, keeping counts and allocation buckets right.
    fn set_state(&mut self, slot: u32, state: ServerState) {
        let Some(Some(server)) = self.slots.get(slot as usize) else {
            return;
        };
        let old = server.state;
        if old == state {
            return;
        }
        self.bucket_remove(slot);
        if let Some(c) = self.count_mut(old) {
            *c -= 1;
        }
        if let Some(c) = self.count_mut(state) {
            *c += 1;
        }
        if let Some(Some(server)) = self.slots.get_mut(slot as usize) {
            server.state = state;
        }
        if state == ServerState::Shutdown {
            if let Some(Some(server)) = self.slots.get_mut(slot as usize).map(Option::take) {
                self.by_id.remove(&server.id);
                self.free_slots_list.push(slot);
                self.stats.shut_down += 1;
            }
        } else {
            self.bucket_insert(slot);
        }
    }

    /// Starts up to `n` servers (never beyond `max_servers`), each in the zone that has the
    /// fewest. Returns how many started; they are Starting until their first heartbeat.
    pub fn scale_up(&mut self, n: u32, now: Duration) -> u32 {
        let room = self.config.max_servers.saturating_sub(self.live());
        let n = n.min(room);
        let zones = self.config.zones.len();
        let mut per_zone = vec![0u32; zones];
        for s in self.servers() {
            if let Some(i) = self.config.zones.iter().position(|z| *z == s.zone) {
                per_zone[i] += 1;
            }
        }
        for _ in 0..n {
            // The zone with the fewest servers; the first such zone on ties.
            let zi = (0..zones).min_by_key(|&i| per_zone[i]).unwrap_or(0);
            per_zone[zi] += 1;
            let zone = self.config.zones[zi];
            let slot = match self.free_slots_list.pop() {
                Some(s) => s,
                None => {
                    self.slots.push(None);
                    (self.slots.len() - 1) as u32
                }
            };
            let id = ServerId::new(self.id_prefix | self.next_seq);
            self.next_seq += 1;
            let ip = Ipv4Addr::from(self.first_host.wrapping_add(slot));
            let addr = SocketAddr::V4(SocketAddrV4::new(ip, self.config.game_port));
            self.slots[slot as usize] = Some(GameServer {
                id,
                zone,
                addr,
                state: ServerState::Starting,
                players: 0,
                matches: 0,
                started_at: now,
                last_heartbeat: None,
                bucket_pos: None,
            });
            self.by_id.insert(id, slot);
            self.counts.starting += 1;
            self.stats.started += 1;
        }
        n
    }

    /// Stops up to `n` servers without going below `min_servers`: Unhealthy first, then
    /// Starting, then empty Ready ones, each from the zone that has the most. Allocated and
    /// Draining servers are never stopped. Returns how many stopped.
    pub fn scale_down(&mut self, n: u32) -> u32 {
        let mut stopped = 0;
        while stopped < n && self.live() > self.config.min_servers {
            let mut zone_n: [u32; 16] = [0; 16];
            for s in self.servers() {
                if let Some(i) = self.config.zones.iter().position(|z| *z == s.zone) {
                    if let Some(c) = zone_n.get_mut(i) {
                        *c += 1;
                    }
                }
            }
            let rank = |s: &GameServer| -> Option<(u8, u32)> {
                let class = match s.state {
                    ServerState::Unhealthy => 0,
                    ServerState::Starting => 1,
                    ServerState::Ready if s.players == 0 => 2,
                    _ => return None,
                };
                let zi = self.config.zones.iter().position(|z| *z == s.zone).unwrap_or(0);
                Some((class, u32::MAX - zone_n.get(zi).copied().unwrap_or(0)))
            };
            let victim = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.as_ref().and_then(|s| rank(s).map(|r| (r, i))))
                .min();
            let Some((_, slot)) = victim else { break };
            self.set_state(slot as u32, ServerState::Shutdown);
            stopped += 1;
        }
        stopped
    }

    /// Stops taking matches on `server`; it shuts down once empty (at once when empty now, or
    /// when Unhealthy: its matches were already counted lost).
    pub fn drain(&mut self, server: ServerId) -> Result<(), ClusterError> {
        let slot = *self.by_id.get(&server).ok_or(ClusterError::UnknownServer(server))?;
        let (players, state) = self
            .slots
            .get(slot as usize)
            .and_then(Option::as_ref)
            .map_or((0, ServerState::Shutdown), |s| (s.players, s.state));
        if players == 0 || state == ServerState::Unhealthy {
            self.set_state(slot, ServerState::Shutdown);
        } else {
            self.set_state(slot, ServerState::Draining);
        }
        Ok(())
    }

    /// Records a heartbeat: a Starting server becomes Ready.
    pub fn heartbeat(&mut self, server: ServerId, now: Duration) -> Result<(), ClusterError> {
        let Some(&slot) = self.by_id.get(&server) else {
            self.stats.rejected_heartbeats += 1;
            return Err(ClusterError::UnknownServer(server));
        };
        let Some(Some(s)) = self.slots.get_mut(slot as usize) else {
            self.stats.rejected_heartbeats += 1;
            return Err(ClusterError::UnknownServer(server));
        };
        if s.state == ServerState::Unhealthy {
            self.stats.rejected_heartbeats += 1;
            return Err(ClusterError::ServerUnhealthy(server));
        }
        s.last_heartbeat = Some(s.last_heartbeat.map_or(now, |t| t.max(now)));
        if s.state == ServerState::Starting {
            self.set_state(slot, ServerState::Ready);
        }
        Ok(())
    }

    /// Advances time: servers that missed heartbeats turn Unhealthy (their matches are counted
    /// lost), Unhealthy ones from the previous tick shut down, and servers start to keep
    /// `min_servers` usable ones.
    pub fn tick(&mut self, now: Duration) -> ClusterTick {
        let mut out = ClusterTick::default();
        let hb = self.config.heartbeat_timeout();
        let st = self.config.startup_timeout();
        for slot in 0..self.slots.len() as u32 {
            let Some(Some(s)) = self.slots.get(slot as usize) else {
                continue;
            };
            match s.state {
                ServerState::Unhealthy => {
                    self.set_state(slot, ServerState::Shutdown);
                    out.shut_down += 1;
                }
                ServerState::Draining if s.players == 0 => {
                    self.set_state(slot, ServerState::Shutdown);
                    out.shut_down += 1;
                }
                state => {
                    let stale = match s.last_heartbeat {
                        Some(t) => now.saturating_sub(t) > hb,
                        None => state == ServerState::Starting && now.saturating_sub(s.started_at) > st,
                    };
                    if stale {
                        self.set_state(slot, ServerState::Unhealthy);
                        out.became_unhealthy += 1;
                        self.stats.unhealthy += 1;
                    }
                }
            }
        }
        if out.became_unhealthy > 0 {
            let lost: Vec<MatchId> = self
                .placements
                .iter()
                .filter(|(_, p)| {
                    matches!(self.slots.get(p.slot as usize), Some(Some(s)) if s.state == ServerState::Unhealthy)
                })
                .map(|(m, _)| *m)
                .collect();
            for m in lost {
                if let Some(p) = self.placements.remove(&m) {
                    self.players -= u64::from(p.players);
                    self.latency_sum_us -= p.latency_sum_us;
                    out.matches_lost += 1;
                }
            }
        }
        let usable = self.counts.starting + self.counts.ready + self.counts.allocated;
        if usable < self.config.min_servers {
            out.started = self.scale_up(self.config.min_servers - usable, now);
        }
        out
    }

    /// Whether some usable server has `players` free slots.
    pub fn can_fit(&self, players: u32) -> bool {
        players > 0 && self.best_fit_bucket(players as usize).is_some()
    }

    /// The smallest non-empty bucket with at least `need` free slots.
    fn best_fit_bucket(&self, need: usize) -> Option<usize> {
        let mut word = need / 64;
        let mut bits = *self.nonempty.get(word)? & (u64::MAX << (need % 64));
        loop {
            if bits != 0 {
                return Some(word * 64 + bits.trailing_zeros() as usize);
            }
            word += 1;
            bits = *self.nonempty.get(word)?;
        }
    }

    /// Places a match of `players` on the fullest usable server that has room (best-fit bin
    /// packing, so that empty servers stay empty and can be scaled down).
    /// `latency_sum` is the sum of the players' latencies to this region.
    pub fn allocate(
        &mut self,
        match_id: MatchId,
        players: u32,
        latency_sum: Duration,
        _now: Duration,
    ) -> Result<AllocatedServer, ClusterError> {
        if self.health_override == Some(RegionHealth::Down) {
            self.stats.allocation_failures += 1;
            return Err(ClusterError::RegionDown);
        }
        let per = self.config.players_per_server;
        if players == 0 || players > per {
            return Err(ClusterError::BadMatchSize { players, per_server: per });
        }
        if self.placements.contains_key(&match_id) {
            return Err(ClusterError::DuplicateMatch(match_id));
        }
        let Some(free) = self.best_fit_bucket(players as usize) else {
            self.stats.allocation_failures += 1;
            return Err(ClusterError::NoCapacity { players });
        };
        let slot = self.free_buckets[free][0];
        self.bucket_remove(slot);
        let Some(Some(s)) = self.slots.get_mut(slot as usize) else {
            return Err(ClusterError::NoCapacity { players });
        };
        s.players += players;
        s.matches += 1;
        let placed = AllocatedServer { id: s.id, zone: s.zone, addr: s.addr };
        let state = s.state;
        let lat = latency_sum.as_micros();
        self.placements.insert(match_id, Placement { slot, players, latency_sum_us: lat });
        self.players += u64::from(players);
        self.latency_sum_us += lat;
        if state == ServerState::Ready {
            self.set_state(slot, ServerState::Allocated);
        } else {
            self.bucket_insert(slot);
        }
        self.stats.allocations += 1;
        Ok(placed)
    }

    /// Adds `players` to a placed match (backfill), if its server has room.
    pub fn add_players(
        &mut self,
        match_id: MatchId,
        players: u32,
        latency_sum: Duration,
    ) -> Result<(), ClusterError> {
        let p = *self.placements.get(&match_id).ok_or(ClusterError::UnknownMatch(match_id))?;
        let Some(Some(s)) = self.slots.get(p.slot as usize) else {
            return Err(ClusterError::UnknownMatch(match_id));
        };
        if u64::from(s.players) + u64::from(players) > u64::from(self.config.players_per_server) {
            return Err(ClusterError::NoCapacity { players });
        }
        let allocatable = s.allocatable();
        if allocatable {
            self.bucket_remove(p.slot);
        }
        let lat = latency_sum.as_micros();
        if let Some(Some(s)) = self.slots.get_mut(p.slot as usize) {
            s.players += players;
        }
        if let Some(pl) = self.placements.get_mut(&match_id) {
            pl.players += players;
            pl.latency_sum_us += lat;
        }
        self.players += u64::from(players);
        self.latency_sum_us += lat;
        if allocatable {
            self.bucket_insert(p.slot);
        }
        Ok(())
    }

    /// Ends a match: frees its slots; an emptied Allocated server turns Ready, an emptied
    /// Draining server shuts down.
    pub fn release(&mut self, match_id: MatchId) -> Result<(), ClusterError> {
        let p = self.placements.remove(&match_id).ok_or(ClusterError::UnknownMatch(match_id))?;
        self.players -= u64::from(p.players);
        self.latency_sum_us -= p.latency_sum_us;
        let Some(Some(s)) = self.slots.get(p.slot as usize) else {
            return Ok(());
        };
        let allocatable = s.allocatable();
        if allocatable {
            self.bucket_remove(p.slot);
        }
        let (players, state) = {
            let Some(Some(s)) = self.slots.get_mut(p.slot as usize) else {
                return Ok(());
            };
            s.players = s.players.saturating_sub(p.players);
            s.matches = s.matches.saturating_sub(1);
            (s.players, s.state)
        };
        if allocatable {
            self.bucket_insert(p.slot);
        }
        if players == 0 {
            match state {
                ServerState::Allocated => self.set_state(p.slot, ServerState::Ready),
                ServerState::Draining => self.set_state(p.slot, ServerState::Shutdown),
                _ => {}
            }
        }
        Ok(())
    }

    /// The server hosting `match_id`, if placed here.
    pub fn match_server(&self, match_id: MatchId) -> Option<AllocatedServer> {
        let p = self.placements.get(&match_id)?;
        self.slots.get(p.slot as usize)?.as_ref().map(|s| AllocatedServer {
            id: s.id,
            zone: s.zone,
            addr: s.addr,
        })
    }

    /// Players in matches.
    pub fn current_player_count(&self) -> u64 {
        self.players
    }

    /// Free slots on usable servers.
    pub fn free_slots(&self) -> u64 {
        self.free_total
    }

    /// Mean measured latency of the players in matches, `None` when nobody plays.
    pub fn average_latency(&self) -> Option<Duration> {
        (self.players > 0).then(|| {
            let mean = self.latency_sum_us / u128::from(self.players);
            Duration::from_micros(u64::try_from(mean).unwrap_or(u64::MAX))
        })
    }

    /// Overrides the computed health (`Some(RegionHealth::Down)` routes every match away from
    /// this region); `None` returns to the computed health.
    pub fn set_health_override(&mut self, health: Option<RegionHealth>) {
        self.health_override = health;
    }

    /// The override in force, if any.
    pub fn health_override(&self) -> Option<RegionHealth> {
        self.health_override
    }

    /// Health: the override if set; else Down without a usable server, Degraded with unhealthy
    /// servers or free slots under `degraded_spare_ratio` of capacity, else Healthy.
    pub fn health(&self) -> RegionHealth {
        if let Some(h) = self.health_override {
            return h;
        }
        if self.counts.ready + self.counts.allocated == 0 {
            return RegionHealth::Down;
        }
        let free = self.free_slots() as f64;
        if self.counts.unhealthy > 0 || free < self.capacity as f64 * self.config.degraded_spare_ratio {
            return RegionHealth::Degraded;
        }
        RegionHealth::Healthy
    }

    /// The summary the region sends to the global layer.
    pub fn summary(&self, now: Duration) -> RegionSummary {
        RegionSummary {
            region: self.config.id,
            health: self.health(),
            servers: self.counts,
            capacity: self.capacity,
            players: self.players,
            free_slots: self.free_slots(),
            matches: self.placements.len() as u64,
            average_latency_us: self.average_latency().map(|d| d.as_micros() as u64),
            at: now,
        }
    }
}
