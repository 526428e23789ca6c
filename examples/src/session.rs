//! A running multi-region session: start it, watch it, fault it, finish it into a [`Report`].

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use pvp_core::ids::{MatchId, PlayerId, RegionId, ServerId};
use pvp_core::queue::UnboundedQueue;
use pvp_global::cluster::ServerCounts;
use pvp_global::failover::{RegionHealth, SyncProgress};
use pvp_global::matchmaking::GlobalMatchmaking;
use pvp_ops::chaos::proxy::{Direction, FaultProxy, LinkConditions, LinkControl};
use pvp_ops::metrics::{MetricsRegistry, MetricsServer};
use serde::{Deserialize, Serialize};

use crate::bots::run_bots;
use crate::config::SessionConfig;
use crate::control::{ControlOutcome, ControlPlane};
use crate::crdt::RegionSync;
use crate::fleet::ServerCounters;
use crate::region::{RegionSockets, hist, run_region};
use crate::replica::{Replica, ReplicaSummary};
use crate::report::{RegionReport, Report};
use pvp_net::netcode::Key;

/// Why a session could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The config was refused.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A socket could not be bound or a thread not started.
    #[error("start-up I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A fault proxy could not start.
    #[error("fault proxy: {0}")]
    Proxy(#[from] pvp_ops::chaos::proxy::ProxyError),
    /// The metrics endpoint could not start.
    #[error("metrics server: {0}")]
    Metrics(#[from] pvp_ops::metrics::ServerError),
    /// The matchmaker refused the fleet.
    #[error("matchmaking: {0}")]
    Matchmaking(#[from] pvp_global::cluster::ConfigError),
    /// The multi-process role names an unknown region, or lacks a peer's address.
    #[error("multi-process role: {0}")]
    Role(&'static str),
}

/// Where the regions of a session run. (Named `Topology` before 0.2, which is also the name of
/// pvp-core's NUMA topology.)
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Deployment {
    /// Every region in this process.
    #[default]
    InProcess,
    /// One region in this process; the others run in other processes (or hosts).
    OneRegion(ProcessRole),
}

/// The name [`Deployment`] had before 0.2.
#[deprecated(since = "0.2.0", note = "renamed to `Deployment` (pvp-core's `Topology` is the NUMA topology)")]
pub type Topology = Deployment;

/// This process's part in a multi-process session.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessRole {
    /// The region this process runs.
    pub region: RegionId,
    /// Where this region's sync node listens (peers send to it).
    pub sync_addr: SocketAddr,
    /// Every other region's sync address.
    pub peers: Vec<(RegionId, SocketAddr)>,
    /// Where the matchmaking leader listens for the other regions (TCP). In an elected
    /// session (`etcd_endpoints` set) it is this process's own control address, where it
    /// listens while it leads; the leader record on etcd tells the others.
    pub control_addr: SocketAddr,
    /// Whether this process is the fixed matchmaking leader (runs the control plane for every
    /// region). Never set in an elected session.
    pub leader: bool,
    /// Whether the network between the processes carries the backbone latency itself (hosts
    /// on a shaped router, `pvp_ops::hosts`): the sync proxies then add none. The process
    /// binds its game servers and heartbeats to the sync address's IP, so other hosts reach
    /// them.
    pub net_delay: bool,
}

/// What a bot asks the matchmaking front.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TicketAsk {
    pub(crate) player: PlayerId,
    pub(crate) home: usize,
    pub(crate) rtt: Vec<(RegionId, Duration)>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ControlEvent {
    Ticket(TicketAsk),
    /// The server decided the fight: team 0 or 1 won, `None` a draw.
    MatchFinished {
        match_id: MatchId,
        winner: Option<u8>,
    },
    MatchAborted {
        region: usize,
        match_id: MatchId,
        crashed: bool,
    },
    SyncProgress(SyncProgress),
    /// An outside client cancelled its queued ticket (the HTTP front).
    Cancel {
        player: PlayerId,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RegionCommand {
    /// Start a game server with this id (the fleet controller's record is Starting).
    StartServer {
        server: ServerId,
    },
    /// Drain it and stop it once empty.
    StopServer {
        server: ServerId,
    },
    Host {
        /// The leader term the match was made in (0: no election). A region refuses a match
        /// from a term older than the newest it knows: an old leader's late words.
        term: u64,
        match_id: MatchId,
        server: ServerId,
        players: Vec<(PlayerId, u8, Duration)>,
    },
    /// A new matchmaking leader (term): its fleet controller knows none of this region's
    /// servers, so they drain (their matches finish and are recorded) and the new leader
    /// starts its own.
    NewLeader {
        term: u64,
    },
    CrashServers {
        count: usize,
    },
    Ban {
        player: PlayerId,
    },
    /// New ratings after a match, for the players' profiles.
    Ratings {
        players: Vec<(PlayerId, i64)>,
    },
}

#[derive(Debug)]
pub(crate) enum BotCommand {
    /// A seat: the server's region and address and the netcode connect token (2,048 bytes).
    Assigned {
        player: PlayerId,
        match_id: MatchId,
        region: usize,
        server: SocketAddr,
        token: Box<[u8]>,
    },
    TicketFailed {
        player: PlayerId,
    },
    /// The seat is void (its server died, the match was dropped, or the player's region went
    /// down and the failover planner moves them): leave and queue again at once.
    AssignmentVoid {
        player: PlayerId,
        match_id: MatchId,
    },
}

/// Per-region counters, written by the region's threads.
#[derive(Debug, Default)]
pub(crate) struct RegionStats {
    pub(crate) hosted: AtomicU64,
    pub(crate) finished: AtomicU64,
    pub(crate) crashed_matches: AtomicU64,
    pub(crate) no_show_matches: AtomicU64,
    pub(crate) bad_packets: AtomicU64,
    /// Lobby input dropped as bad (malformed messages, a second ticket while one is queued,
    /// a token for another region's lobby).
    pub(crate) lobby_dropped: AtomicU64,
    /// Lobby messages the lobby could not queue (its send backlog full): a service error.
    pub(crate) lobby_send_failures: AtomicU64,
    /// Assignments for players no longer logged in.
    pub(crate) lobby_undelivered: AtomicU64,
    /// The most lobby sessions open at once (as of the lobby's sweeps).
    pub(crate) lobby_peak: AtomicU64,
    /// Lobby sessions the bots lost (and logged in again).
    pub(crate) lobby_lost: AtomicU64,
    /// Sync datagrams and bridge frames refused by the sealed links (dropped input).
    pub(crate) link_refused: AtomicU64,
    /// Sync datagrams the sealed links opened.
    pub(crate) link_opened: AtomicU64,
    pub(crate) bad_tokens: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) bot_matches: AtomicU64,
    pub(crate) replaced: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) bots_online: AtomicU64,
    /// The game loops' counters (dropped and late inputs), shared by the region's servers.
    pub(crate) game: Arc<ServerCounters>,
    pub(crate) servers_stopped: AtomicU64,
    pub(crate) servers_crashed: AtomicU64,
    pub(crate) running_servers: AtomicU64,
    /// `Host` commands refused for an older leader term.
    pub(crate) fenced_hosts: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Hists {
    /// Round trips of players in their home region, measured at the server through the path.
    pub(crate) home_rtt_us: Histogram<u64>,
    /// Round trips of players placed in another region.
    pub(crate) away_rtt_us: Histogram<u64>,
    pub(crate) interval_home_rtt_us: Histogram<u64>,
    pub(crate) interval_away_rtt_us: Histogram<u64>,
    pub(crate) sync_lag_ms: Vec<Histogram<u64>>,
    /// Bots' connect times (assignment to netcode connected), ms.
    pub(crate) connect_ms: Histogram<u64>,
}

/// What the control plane shows the outside (progress lines, chaos checks).
#[derive(Debug, Clone, Default)]
pub(crate) struct ControlView {
    pub(crate) servers: Vec<ServerCounts>,
    pub(crate) health: Vec<Option<RegionHealth>>,
    pub(crate) matches_made: Vec<u64>,
    pub(crate) running: u64,
    pub(crate) queued: u64,
    pub(crate) finished_results: u64,
    pub(crate) reroute_watch: Option<(usize, Instant)>,
    pub(crate) reroute_after: Option<Duration>,
    pub(crate) transitions: Vec<(Duration, RegionId, RegionHealth, RegionHealth)>,
    pub(crate) decisions: Vec<(Duration, String)>,
    pub(crate) serving: Vec<bool>,
    /// Matches the controller found lost with their server.
    pub(crate) aborted_crash: u64,
}

pub(crate) struct Shared {
    pub(crate) config: SessionConfig,
    pub(crate) start: Instant,
    unix_start_ms: u64,
    /// The netcode key the matchmaking front (issuer) and the game servers share.
    pub(crate) server_key: Key,
    /// The secret every pair of regions derives its sync-link key from
    /// ([`pvp_global::link::LinkKey::derive`]).
    pub(crate) link_secret: Vec<u8>,
    /// Where each region's lobby listens (set once it is bound).
    pub(crate) lobby_addrs: Vec<OnceLock<SocketAddr>>,
    /// Issues lobby tokens (the login step).
    pub(crate) lobby_login: crate::lobby::LobbyLogin,
    /// Outside players logged in to a lobby, and which region's: their assignments go there.
    pub(crate) lobby_external: Mutex<HashMap<PlayerId, usize>>,
    pub(crate) protocol_id: u64,
    /// Where game servers send their heartbeats (the fleet controller's UDP socket); an
    /// elected session re-points it at each new leader.
    pub(crate) fleet_addr: Mutex<SocketAddr>,
    /// The newest matchmaking leader term this process knows (0: no election).
    pub(crate) term: AtomicU64,
    /// Per region: bumped when the leader changes, so the lobby re-queues its tickets.
    pub(crate) requeue: Vec<AtomicU64>,
    /// What the election did (session time, what), for the report.
    pub(crate) election_log: Mutex<Vec<(Duration, String)>>,
    /// Per region: ms since start + 1 when a bridge last brought its status row (0: never,
    /// as for this process's own regions).
    pub(crate) status_ms: Vec<AtomicU64>,
    /// The history log for the checker (`history_dir`), if kept.
    pub(crate) history: Option<Arc<crate::history::HistoryLog>>,
    /// The IP this process's game servers and heartbeats bind: loopback in one process, the
    /// host's address (its sync address's IP) in multi-process mode.
    pub(crate) bind_ip: std::net::IpAddr,
    /// Per region: the generation of its bridge connection (multi-process leader); a writer
    /// whose connection was replaced by a re-join stops.
    pub(crate) bridge_gen: Vec<AtomicU64>,
    /// The leader's bridge connections (also re-joins), shut down at the end.
    pub(crate) bridge_streams: Mutex<Vec<std::net::TcpStream>>,
    /// Each local region's ban list as its sync node has applied it (refreshed by the region
    /// thread); the matchmaking front refuses tickets and the game servers refuse sessions of
    /// players on it.
    pub(crate) banned: Vec<Arc<Mutex<HashSet<PlayerId>>>>,
    pub(crate) to_region: Vec<UnboundedQueue<RegionCommand>>,
    pub(crate) to_bots: Vec<UnboundedQueue<BotCommand>>,
    /// Players of each region's bots that are online (queued or playing), sent every
    /// [`crate::lobby::PRESENCE_REFRESH`]; the region writes their presence.
    pub(crate) presence: Vec<UnboundedQueue<PlayerId>>,
    /// The HTTP front's tickets (outside clients).
    pub(crate) front: crate::front::Frontend,
    pub(crate) to_control: UnboundedQueue<ControlEvent>,
    pub(crate) regions: Vec<RegionStats>,
    /// `[observer][peer]`: ms since start + 1 when observer last heard peer (0 = never).
    pub(crate) heard_ms: Vec<Vec<AtomicU64>>,
    pub(crate) draining: AtomicBool,
    pub(crate) bots_stop: AtomicBool,
    pub(crate) region_stop: AtomicBool,
    pub(crate) control_stop: AtomicBool,
    /// Follower connections still open (multi-process leader).
    pub(crate) followers_open: AtomicU64,
    pub(crate) hists: Mutex<Hists>,
    pub(crate) replica_view: Mutex<Vec<Option<ReplicaSummary>>>,
    pub(crate) finished_replicas: Mutex<Vec<Option<(Replica, RegionSync)>>>,
    pub(crate) view: Mutex<ControlView>,
    /// The game servers' network driver, as the first region reported it.
    pub(crate) driver: Mutex<Option<String>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Hands `cmd` to whoever holds `player`'s ticket: its bot thread, or the HTTP front for
    /// an outside client.
    pub(crate) fn deliver(&self, player: PlayerId, cmd: BotCommand) {
        if let Some(&i) = lock(&self.lobby_external).get(&player) {
            // An outside player on a lobby session.
            self.to_bots[i].push(cmd);
            return;
        }
        if crate::front::is_external(player) {
            let names: Vec<String> = self.config.regions.iter().map(|r| r.id.to_string()).collect();
            self.front.deliver(&names, cmd);
        } else if let Some(q) = self.to_bots.get(crate::bots::home_of(player).0) {
            q.push(cmd);
        }
    }

    /// Whether region `i`'s status row is current at `now_ms` (ms since start + 1): this
    /// process's own, or brought by a bridge within the last 2 s.
    pub(crate) fn status_fresh(&self, i: usize, now_ms: u64) -> bool {
        self.status_ms.get(i).is_some_and(|t| {
            let t = t.load(Ordering::Relaxed);
            t == 0 || now_ms.saturating_sub(t) <= 2_000
        })
    }

    /// Logs a history event, if the session keeps a history.
    pub(crate) fn record(&self, ev: crate::history::Event) {
        if let Some(h) = &self.history {
            h.record(ev);
        }
    }

    pub(crate) fn unix_ms(&self, now: Instant) -> u64 {
        self.unix_start_ms + now.saturating_duration_since(self.start).as_millis() as u64
    }

    pub(crate) fn merge_region(
        &self,
        idx: usize,
        rtt: &mut crate::fleet::RttSplit,
        replica: &Replica,
        crdt: &mut RegionSync,
        summary: bool,
    ) {
        {
            let mut h = lock(&self.hists);
            let _ = h.home_rtt_us.add(&rtt.home);
            let _ = h.away_rtt_us.add(&rtt.away);
            let _ = h.interval_home_rtt_us.add(&rtt.home);
            let _ = h.interval_away_rtt_us.add(&rtt.away);
            if let Some(s) = h.sync_lag_ms.get_mut(idx) {
                *s = replica.lag_ms().clone();
            }
        }
        rtt.home.reset();
        rtt.away.reset();
        if !summary {
            return;
        }
        let mut summary = replica.summary();
        let census = crdt.census(self.unix_ms(Instant::now()));
        summary.bans = census.banned.len() as u64;
        summary.players = crdt.leaderboard_players();
        summary.profiles = census.profiles;
        summary.profile_games = census.games;
        summary.online = census.online;
        summary.digest ^= crdt.digest().rotate_left(1);
        if let Some(b) = self.banned.get(idx) {
            let mut b = lock(b);
            if b.len() != census.banned.len() {
                b.extend(census.banned);
            }
        }
        if let Some(v) = lock(&self.replica_view).get_mut(idx) {
            *v = Some(summary);
        }
    }

    pub(crate) fn finish_region(&self, idx: usize, replica: Replica, crdt: RegionSync) {
        if let Some(v) = lock(&self.finished_replicas).get_mut(idx) {
            *v = Some((replica, crdt));
        }
    }
}

/// The matchmaker a control plane starts with: the config's fleet, with a warm pool sized for
/// the bots that live in each region (the autoscaler adjusts it). Its match ids start at
/// `term << 40`, so an elected leader's matches never take an id an earlier term used (the
/// replicas keep results by match id).
pub(crate) fn matchmaker(config: &SessionConfig, term: u64) -> Result<GlobalMatchmaking, SessionError> {
    let mut mm_config = config.matchmaking();
    mm_config.match_id_base = term << 40;
    let mut mm = GlobalMatchmaking::new(config.fleet()?, mm_config, Duration::ZERO)?;
    for (r, bots) in config.regions.iter().zip(config.bots_per_region()) {
        let want = (f64::from(bots) / config.target_players_per_server).ceil() as u32;
        if let Some(c) = mm.cluster_mut(r.id) {
            let have = c.server_counts().starting + c.server_counts().ready;
            c.scale_up(want.saturating_sub(have), Duration::ZERO);
        }
    }
    Ok(mm)
}

/// The netcode protocol id of the session's game servers.
pub const PROTOCOL_ID: u64 = 0x7076_7033_0001;

/// The key a session's token issuer and game servers share, derived from the seed so every
/// process of a multi-process session agrees without a secret store (a deployment would
/// distribute a secret: `Key::from_env`).
fn session_key(seed: u64) -> Key {
    let mut k = [0u8; 32];
    for (i, c) in k.chunks_exact_mut(8).enumerate() {
        let v = seed.rotate_left(13 * i as u32) ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1));
        c.copy_from_slice(&v.to_le_bytes());
    }
    Key::from_bytes(k)
}

/// The deployment secret the regions' sync-link keys come from: `PVP_LINK_SECRET` from the
/// environment where set (what a deployment does, from its secret store), else derived from
/// the seed so every process of a session on one machine agrees without one (a stand-in:
/// anyone who knows the seed knows it).
fn link_secret(seed: u64) -> Vec<u8> {
    match std::env::var("PVP_LINK_SECRET") {
        Ok(s) if !s.is_empty() => s.into_bytes(),
        _ => [b"pvp-link seed secret ".as_slice(), &seed.to_le_bytes()].concat(),
    }
}

/// The process-wide metrics registry (a `metrics` recorder can be installed once per process).
pub fn metrics_registry() -> MetricsRegistry {
    static REGISTRY: OnceLock<MetricsRegistry> = OnceLock::new();
    REGISTRY
        .get_or_init(|| {
            let r = MetricsRegistry::new();
            // Another recorder installed first: our series stay empty, the session still runs.
            let _ = r.install();
            r
        })
        .clone()
}

/// Live numbers of a running session, for progress lines and chaos checks.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Progress {
    /// Time since start.
    pub elapsed: Duration,
    /// Bots queued, connecting or playing.
    pub online: u64,
    /// Matches formed so far.
    pub matches_made: u64,
    /// Matches finished so far (results recorded).
    pub matches_finished: u64,
    /// Matches finished per second since the previous call.
    pub matches_per_sec: f64,
    /// p99 round trip of players in their home region since the previous call, µs: measured
    /// at the server (snapshot out, the input answering it in), through the bots' link delay.
    pub p99_in_region_rtt_us: Option<u64>,
    /// The same for players placed in another region.
    pub p99_cross_region_rtt_us: Option<u64>,
    /// p99 of the sync lag over the session, ms (worst region).
    pub p99_sync_lag_ms: Option<u64>,
    /// Live servers per region.
    pub servers: Vec<(RegionId, u32)>,
    /// Each region's health as the control plane sees it.
    pub health: Vec<(RegionId, Option<RegionHealth>)>,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |v: Option<u64>, div: f64| v.map_or("-".to_string(), |v| format!("{:.1}", v as f64 / div));
        write!(
            f,
            "[{:>6.1}s] online {} | matches/s {:.0} (made {}, finished {}) | p99 RTT in-region {} ms, cross-region {} ms | sync lag p99 {} ms | servers",
            self.elapsed.as_secs_f64(),
            self.online,
            self.matches_per_sec,
            self.matches_made,
            self.matches_finished,
            ms(self.p99_in_region_rtt_us, 1000.0),
            ms(self.p99_cross_region_rtt_us, 1000.0),
            ms(self.p99_sync_lag_ms, 1.0),
        )?;
        for (r, n) in &self.servers {
            write!(f, " {r} {n}")?;
        }
        for (r, h) in &self.health {
            if let Some(h) = h {
                if *h != RegionHealth::Healthy {
                    write!(f, " | {r} {h:?}")?;
                }
            }
        }
        Ok(())
    }
}

/// One cross-region sync link (from → to) and the handle that changes its conditions.
#[derive(Debug, Clone)]
pub struct SyncLink {
    /// Sending region.
    pub from: RegionId,
    /// Receiving region.
    pub to: RegionId,
    /// The link's fault proxy control.
    pub control: LinkControl,
}

/// A `Send + Clone` handle on a running session, for fault injectors and other threads.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    shared: Arc<Shared>,
}

impl SessionHandle {
    /// Kills up to `count` game servers of `region`, the busiest first: their threads stop and
    /// their endpoints close without a word. Nothing tells the control plane: the fleet
    /// controller notices the missing heartbeats, counts the matches lost and replaces the
    /// servers; the players' sessions time out and they queue again. False for an unknown
    /// region.
    pub fn crash_servers(&self, region: RegionId, count: usize) -> bool {
        match self.shared.config.region_index(region) {
            Some(i) => {
                self.shared.to_region[i].push(RegionCommand::CrashServers { count });
                true
            }
            None => false,
        }
    }

    /// Bans `player`, written in `region`'s replica (and replicated from there). False for
    /// an unknown region.
    pub fn ban(&self, region: RegionId, player: PlayerId) -> bool {
        match self.shared.config.region_index(region) {
            Some(i) => {
                self.shared.to_region[i].push(RegionCommand::Ban { player });
                true
            }
            None => false,
        }
    }

    /// Whether every region heard from every other region over the sync links within
    /// `within`.
    pub fn sync_links_fresh(&self, within: Duration) -> bool {
        let now = self.shared.start.elapsed().as_millis() as u64 + 1;
        let n = self.shared.heard_ms.len();
        (0..n).all(|i| {
            (0..n).filter(|j| *j != i).all(|j| {
                let h = self.shared.heard_ms[i][j].load(Ordering::Relaxed);
                h > 0 && now.saturating_sub(h) <= within.as_millis() as u64
            })
        })
    }

    /// Matches finished so far (every region).
    pub fn matches_finished(&self) -> u64 {
        self.shared.regions.iter().map(|r| r.finished.load(Ordering::Relaxed)).sum()
    }

    /// Matches `region`'s game servers host now (0 for an unknown region).
    pub fn hosted_matches(&self, region: RegionId) -> u64 {
        self.shared
            .config
            .region_index(region)
            .map_or(0, |i| self.shared.regions[i].hosted.load(Ordering::Relaxed))
    }

    /// Players whose match was lost (their server went silent, or never let them in) and
    /// who queued again.
    pub fn players_replaced(&self) -> u64 {
        self.shared
            .regions
            .iter()
            .map(|r| r.replaced.load(Ordering::Relaxed) + r.connect_failures.load(Ordering::Relaxed))
            .sum()
    }

    /// Matches lost with crashed servers so far, as the fleet controller found them (from
    /// the servers' missing heartbeats, or a match placed on a server already gone).
    pub fn crashed_matches(&self) -> u64 {
        lock(&self.shared.view).aborted_crash
    }
}

/// A running session. Drop it only after [`finish`](Self::finish); dropping it earlier stops
/// the threads without a report.
pub struct RunningSession {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    control: Option<JoinHandle<ControlOutcome>>,
    proxies: Vec<FaultProxy>,
    links: Vec<SyncLink>,
    metrics: Option<MetricsServer>,
    front: Option<crate::front::FrontServer>,
    registry: MetricsRegistry,
    sync_addrs: Vec<SocketAddr>,
    /// The local regions' lobbies (closed after the bots stop).
    lobbies: Vec<crate::lobby::Lobby>,
    /// Connections to the other processes (multi-process mode), shut down at the end.
    bridges: Vec<std::net::TcpStream>,
    /// A follower's bridge writer: waited for (bounded) at the end, so its final status
    /// leaves before the connection is shut.
    bridge_writer: Option<JoinHandle<()>>,
    /// The election thread of a session with `etcd_endpoints` (multi-process mode).
    election: Option<JoinHandle<crate::election::Ended>>,
    last_progress: Option<(Instant, u64)>,
}

impl std::fmt::Debug for RunningSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningSession").field("sync_addrs", &self.sync_addrs).finish_non_exhaustive()
    }
}

fn spawn<T: Send + 'static>(
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<JoinHandle<T>> {
    std::thread::Builder::new().name(name).spawn(f)
}

impl RunningSession {
    /// Brings every region up on loopback: sync sockets behind fault proxies set to the
    /// backbone latencies, game servers, the control plane (matchmaking, health, autoscaling,
    /// SLOs), `/metrics` and the bots.
    pub fn start(config: SessionConfig) -> Result<Self, SessionError> {
        Self::start_with(config, Deployment::InProcess)
    }

    /// Like [`start`](Self::start), for one region of a multi-process session (or all of
    /// them in this process with [`Deployment::InProcess`]). A multi-process session waits up to
    /// 30 s for every region's process to join the leader.
    pub fn start_with(config: SessionConfig, topology: Deployment) -> Result<Self, SessionError> {
        config.validate()?;
        let n = config.regions.len();
        let start = Instant::now();
        let unix_start_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let mm = matchmaker(&config, 0)?;
        let registry = metrics_registry();
        let metrics = if config.metrics_addr.is_empty() {
            None
        } else {
            let addr: SocketAddr = config.metrics_addr.parse().map_err(|_| {
                crate::config::ConfigError::Invalid { field: "metrics_addr", why: "not an address" }
            })?;
            Some(MetricsServer::bind(addr, registry.clone())?)
        };
        let (locals, role): (Vec<usize>, Option<&ProcessRole>) = match &topology {
            Deployment::InProcess => ((0..n).collect(), None),
            Deployment::OneRegion(r) => {
                let i = config.region_index(r.region).ok_or(SessionError::Role("unknown region"))?;
                (vec![i], Some(r))
            }
        };
        // Multi-process with etcd: the leader is elected (crate::election), not fixed.
        let elected = role.is_some() && !config.etcd_endpoints.is_empty();
        if elected && role.is_some_and(|r| r.leader) {
            return Err(SessionError::Role("a fixed leader in an elected session"));
        }
        let mut sockets: Vec<Option<RegionSockets>> = (0..n).map(|_| None).collect();
        for &i in &locals {
            sockets[i] = Some(match role {
                Some(r) => RegionSockets::bind_sync(r.sync_addr)?,
                None => RegionSockets::bind()?,
            });
        }
        let mut sync_addrs = Vec::with_capacity(n);
        for (i, r) in config.regions.iter().enumerate() {
            match (&sockets[i], role) {
                (Some(s), _) => sync_addrs.push(s.sync.local_addr()?),
                (None, Some(role)) => {
                    let a = role
                        .peers
                        .iter()
                        .find(|p| p.0 == r.id)
                        .ok_or(SessionError::Role("a peer lacks an address"))?;
                    sync_addrs.push(a.1);
                }
                (None, None) => return Err(SessionError::Role("no socket for a local region")),
            }
        }
        // The fleet controller's heartbeat socket: where every game server reports. A
        // multi-process leader listens on the control address (UDP; the bridge is TCP).
        let fleet_socket = match role {
            None => Some(std::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?),
            Some(r) if r.leader && !elected => Some(std::net::UdpSocket::bind(r.control_addr)?),
            Some(_) => None,
        };
        let fleet_addr = match (&fleet_socket, role) {
            (Some(s), _) => s.local_addr()?,
            (None, Some(r)) => r.control_addr,
            (None, None) => return Err(SessionError::Role("no fleet controller")),
        };
        // One proxy per directed link from a local region, delaying by half the backbone RTT.
        let mut proxies = Vec::new();
        let mut links = Vec::new();
        let mut peer_addrs: Vec<Vec<(RegionId, SocketAddr)>> = vec![Vec::new(); n];
        for &i in &locals {
            let a = &config.regions[i];
            for (j, b) in config.regions.iter().enumerate() {
                if i == j {
                    continue;
                }
                let seed = config.seed ^ ((i * 16 + j) as u64);
                let p = FaultProxy::udp(SocketAddr::from(([127, 0, 0, 1], 0)), sync_addrs[j], seed)?;
                // Hosts on a shaped router: the network delays the link already.
                let rtt = if role.is_some_and(|r| r.net_delay) {
                    0
                } else {
                    a.backbone_rtt_ms.get(&b.id).copied().unwrap_or(0)
                };
                p.control().set(
                    Direction::Forward,
                    LinkConditions::delay(Duration::from_millis(u64::from(rtt)) / 2),
                )?;
                peer_addrs[i].push((b.id, p.local_addr()));
                links.push(SyncLink { from: a.id, to: b.id, control: p.control() });
                proxies.push(p);
            }
        }
        let ids: Vec<RegionId> = config.regions.iter().map(|r| r.id).collect();
        let history = if config.history_dir.as_os_str().is_empty() {
            None
        } else {
            let process = locals.iter().map(|&i| ids[i].to_string()).collect::<Vec<_>>().join(",");
            Some(Arc::new(crate::history::HistoryLog::open(&config.history_dir, process)?))
        };
        let flush = Duration::from_millis(config.sync_flush_ms);
        let heartbeat = Duration::from_millis(config.heartbeat_ms);
        let bots_per_region = config.bots_per_region();
        let shared = Arc::new(Shared {
            start,
            unix_start_ms,
            // Every process of a session derives the same key from the config; a deployment
            // would distribute a secret instead.
            server_key: session_key(config.seed),
            link_secret: link_secret(config.seed),
            lobby_addrs: (0..n).map(|_| OnceLock::new()).collect(),
            lobby_login: crate::lobby::LobbyLogin::new(session_key(config.seed)),
            lobby_external: Mutex::new(HashMap::new()),
            protocol_id: PROTOCOL_ID,
            fleet_addr: Mutex::new(fleet_addr),
            term: AtomicU64::new(0),
            requeue: (0..n).map(|_| AtomicU64::new(0)).collect(),
            election_log: Mutex::new(Vec::new()),
            history,
            status_ms: (0..n).map(|_| AtomicU64::new(0)).collect(),
            bind_ip: match role.map(|r| r.sync_addr.ip()) {
                Some(ip) if !ip.is_unspecified() => ip,
                _ => std::net::IpAddr::from([127, 0, 0, 1]),
            },
            bridge_gen: (0..n).map(|_| AtomicU64::new(0)).collect(),
            bridge_streams: Mutex::new(Vec::new()),
            banned: (0..n).map(|_| Arc::new(Mutex::new(HashSet::new()))).collect(),
            to_region: (0..n).map(|_| UnboundedQueue::new()).collect(),
            to_bots: (0..n).map(|_| UnboundedQueue::new()).collect(),
            presence: (0..n).map(|_| UnboundedQueue::new()).collect(),
            front: crate::front::Frontend::default(),
            to_control: UnboundedQueue::new(),
            regions: (0..n).map(|_| RegionStats::default()).collect(),
            heard_ms: (0..n).map(|_| (0..n).map(|_| AtomicU64::new(0)).collect()).collect(),
            draining: AtomicBool::new(false),
            bots_stop: AtomicBool::new(false),
            region_stop: AtomicBool::new(false),
            control_stop: AtomicBool::new(false),
            followers_open: AtomicU64::new(0),
            hists: Mutex::new(Hists {
                home_rtt_us: hist(),
                away_rtt_us: hist(),
                interval_home_rtt_us: hist(),
                interval_away_rtt_us: hist(),
                sync_lag_ms: (0..n).map(|_| hist()).collect(),
                connect_ms: hist(),
            }),
            replica_view: Mutex::new(vec![None; n]),
            finished_replicas: Mutex::new((0..n).map(|_| None).collect()),
            view: Mutex::new(ControlView::default()),
            driver: Mutex::new(None),
            config,
        });
        shared.record(crate::history::Event::Start);
        let mut threads = Vec::new();
        for (i, (s, peers)) in sockets.into_iter().zip(peer_addrs).enumerate() {
            let Some(s) = s else { continue };
            let sh = shared.clone();
            // This process's life: a region restarted later has a larger start time.
            let replica = Replica::new(ids[i], &ids, flush, heartbeat, shared.unix_ms(start));
            let wall = Duration::from_millis(shared.unix_ms(Instant::now()));
            let crdt =
                RegionSync::new(&ids, i, flush, wall).map_err(|_| SessionError::Role("bad sync peers"))?;
            threads.push(spawn(format!("region-{}", ids[i]), move || {
                run_region(sh, i, s, peers, replica, crdt)
            })?);
        }
        let mut run_control_here = !elected;
        let mut bridges = Vec::new();
        let mut bridge_writer = None;
        let mut election = None;
        if let (true, Some(role)) = (elected, role) {
            let own = locals[0];
            election = Some(crate::election::spawn(shared.clone(), own, role.control_addr, sync_addrs[own])?);
        } else if let Some(role) = role {
            let own = locals[0];
            let wait = Duration::from_secs(30);
            if role.leader {
                let listener = std::net::TcpListener::bind(role.control_addr)?;
                let (_, t, s) = crate::bridge::lead(shared.clone(), listener, own, sync_addrs[own], wait)?;
                threads.extend(t);
                bridges.extend(s);
            } else {
                run_control_here = false;
                let never = Arc::new(AtomicBool::new(false));
                let f = crate::bridge::follow(
                    shared.clone(),
                    role.control_addr,
                    own,
                    sync_addrs[own],
                    wait,
                    never,
                )?;
                threads.push(f.reader);
                bridge_writer = Some(f.writer);
                bridges.push(f.stream);
            }
        }
        let front = if run_control_here && !shared.config.front_addr.is_empty() {
            let addr: SocketAddr = shared.config.front_addr.parse().map_err(|_| {
                crate::config::ConfigError::Invalid { field: "front_addr", why: "not an address" }
            })?;
            Some(crate::front::FrontServer::bind(addr, shared.clone())?)
        } else {
            None
        };
        let control = if run_control_here {
            let sh = shared.clone();
            let reg = registry.clone();
            let Some(fleet) = fleet_socket else { return Err(SessionError::Role("no fleet controller")) };
            Some(spawn("control".into(), move || ControlPlane::new(sh, mm, fleet, reg).run())?)
        } else {
            None
        };
        let mut lobbies = Vec::new();
        for (i, &count) in bots_per_region.iter().enumerate() {
            if locals.contains(&i) {
                lobbies.push(crate::lobby::Lobby::start(shared.clone(), i, count as usize)?);
            }
        }
        for (i, count) in bots_per_region.into_iter().enumerate() {
            if !locals.contains(&i) {
                continue;
            }
            let sh = shared.clone();
            threads.push(spawn(format!("bots-{}", ids[i]), move || run_bots(sh, i, count as usize))?);
        }
        Ok(Self {
            shared,
            threads,
            control,
            proxies,
            links,
            metrics,
            front,
            registry,
            sync_addrs,
            bridges,
            bridge_writer,
            election,
            lobbies,
            last_progress: None,
        })
    }

    /// The config in force.
    pub fn config(&self) -> &SessionConfig {
        &self.shared.config
    }

    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsServer::local_addr)
    }

    /// Where the matchmaking front's HTTP/JSON API listens, if served (the process that runs
    /// the control plane serves it).
    pub fn front_addr(&self) -> Option<SocketAddr> {
        self.front.as_ref().map(crate::front::FrontServer::local_addr)
    }

    /// The metrics registry the session records into.
    pub fn registry(&self) -> &MetricsRegistry {
        &self.registry
    }

    /// Where `region`'s lobby listens (the matchmaking front over netcode; see
    /// [`crate::lobby`]), in the process that hosts that region.
    pub fn lobby_addr(&self, region: RegionId) -> Option<SocketAddr> {
        self.shared.config.region_index(region).and_then(|i| crate::lobby::lobby_addr(&self.shared, i))
    }

    /// Logs `player` in to `region`'s lobby: a lobby connect token. A stand-in for a login
    /// service (there are no accounts or passwords); outside players must use ids from
    /// [`EXTERNAL_PLAYERS`](crate::front::EXTERNAL_PLAYERS) up (lower ids are the bots').
    pub fn login(&self, player: PlayerId, region: RegionId) -> Option<pvp_net::netcode::ConnectToken> {
        if !crate::front::is_external(player) {
            return None;
        }
        self.shared.lobby_login.token(player, self.lobby_addr(region)?)
    }

    /// Where each region's sync node listens (in config order). Peers reach it through the
    /// fault proxies; anything sent here that is not sealed with a pair's key is refused.
    pub fn sync_addrs(&self) -> &[SocketAddr] {
        &self.sync_addrs
    }

    /// Every directed sync link and its fault proxy control.
    pub fn sync_links(&self) -> &[SyncLink] {
        &self.links
    }

    /// A cheap, `Send` handle for faults and writes from other threads.
    pub fn handle(&self) -> SessionHandle {
        SessionHandle { shared: self.shared.clone() }
    }

    /// See [`SessionHandle::crash_servers`].
    pub fn crash_servers(&self, region: RegionId, count: usize) -> bool {
        self.handle().crash_servers(region, count)
    }

    /// See [`SessionHandle::ban`].
    pub fn ban(&self, region: RegionId, player: PlayerId) -> bool {
        self.handle().ban(region, player)
    }

    /// Whether every region heard from every other region over the sync links within
    /// `within`.
    pub fn sync_links_fresh(&self, within: Duration) -> bool {
        self.handle().sync_links_fresh(within)
    }

    /// Starts measuring how long until a match of only players whose home is `region` is
    /// placed in another region ([`reroute_time`](Self::reroute_time)).
    pub fn watch_reroute(&self, region: RegionId) {
        if let Some(i) = self.shared.config.region_index(region) {
            let mut v = lock(&self.shared.view);
            v.reroute_watch = Some((i, Instant::now()));
            v.reroute_after = None;
        }
    }

    /// Time from [`watch_reroute`](Self::watch_reroute) to the first such match, if any yet.
    pub fn reroute_time(&self) -> Option<Duration> {
        lock(&self.shared.view).reroute_after
    }

    /// The control plane's view of `region`'s health.
    pub fn region_health(&self, region: RegionId) -> Option<RegionHealth> {
        let i = self.shared.config.region_index(region)?;
        lock(&self.shared.view).health.get(i).copied().flatten()
    }

    /// Matches finished so far (every region).
    pub fn matches_finished(&self) -> u64 {
        self.shared.regions.iter().map(|r| r.finished.load(Ordering::Relaxed)).sum()
    }

    /// Matches formed so far in `region`.
    pub fn matches_made_in(&self, region: RegionId) -> u64 {
        let Some(i) = self.shared.config.region_index(region) else { return 0 };
        lock(&self.shared.view).matches_made.get(i).copied().unwrap_or(0)
    }

    /// Whether every replica holds the same state and every write is acked (as last
    /// published by the regions, every 250 ms).
    pub fn replicas_converged(&self) -> bool {
        let v = lock(&self.shared.replica_view);
        let first = v.first().copied().flatten();
        first.is_some()
            && v.iter()
                .all(|s| s.is_some_and(|s| Some(s.digest) == first.map(|f| f.digest) && s.unacked == 0))
    }

    /// Each region's replica summary, as last published.
    pub fn replica_summaries(&self) -> Vec<(RegionId, Option<ReplicaSummary>)> {
        let v = lock(&self.shared.replica_view);
        self.shared.config.regions.iter().zip(v.iter()).map(|(r, s)| (r.id, *s)).collect()
    }

    /// Whether the failover serves `region` (takes new matches): not Down and caught up.
    pub fn region_serving(&self, region: RegionId) -> bool {
        let Some(i) = self.shared.config.region_index(region) else { return false };
        lock(&self.shared.view).serving.get(i).copied().unwrap_or(true)
    }

    /// The failover's decisions so far (time since start, what), reconnect offers left out.
    pub fn failover_decisions(&self) -> Vec<(Duration, String)> {
        lock(&self.shared.view).decisions.clone()
    }

    /// Health transitions the control plane made so far (time since start, region, from, to).
    pub fn health_transitions(&self) -> Vec<(Duration, RegionId, RegionHealth, RegionHealth)> {
        lock(&self.shared.view).transitions.clone()
    }

    /// Live numbers; RTT percentiles cover the time since the previous call.
    pub fn progress(&mut self) -> Progress {
        let sh = &self.shared;
        let online = sh.regions.iter().map(|r| r.bots_online.load(Ordering::Relaxed)).sum();
        let (p99_net, p99_player, lag) = {
            let mut h = lock(&sh.hists);
            let q = |h: &Histogram<u64>| (!h.is_empty()).then(|| h.value_at_quantile(0.99));
            let out = (
                q(&h.interval_home_rtt_us),
                q(&h.interval_away_rtt_us),
                h.sync_lag_ms.iter().filter_map(q).max(),
            );
            h.interval_home_rtt_us.reset();
            h.interval_away_rtt_us.reset();
            out
        };
        let v = lock(&sh.view).clone();
        let made: u64 = v.matches_made.iter().sum();
        let finished = self.matches_finished();
        let now = Instant::now();
        let (t0, f0) = self.last_progress.unwrap_or((sh.start, 0));
        let rate = finished.saturating_sub(f0) as f64 / now.duration_since(t0).as_secs_f64().max(1e-3);
        self.last_progress = Some((now, finished));
        let ids = sh.config.regions.iter().map(|r| r.id);
        Progress {
            elapsed: sh.start.elapsed(),
            online,
            matches_made: made,
            matches_finished: finished,
            matches_per_sec: rate,
            p99_in_region_rtt_us: p99_net,
            p99_cross_region_rtt_us: p99_player,
            p99_sync_lag_ms: lag,
            servers: ids
                .clone()
                .zip(v.servers.iter())
                .map(|(r, c)| (r, c.starting + c.ready + c.allocated + c.draining))
                .collect(),
            health: ids.zip(v.health.iter().copied()).collect(),
        }
    }

    /// Runs until `duration` passed (if set) or `stop` is raised, printing progress lines to
    /// `progress` every `progress_interval_secs`.
    pub fn run_until(&mut self, stop: &AtomicBool, mut progress: impl FnMut(&Progress)) {
        let cfg = &self.shared.config;
        let end =
            (cfg.duration_secs > 0.0).then(|| self.shared.start + Duration::from_secs_f64(cfg.duration_secs));
        let every =
            (cfg.progress_interval_secs > 0.0).then(|| Duration::from_secs_f64(cfg.progress_interval_secs));
        let mut next = every.map(|e| Instant::now() + e);
        loop {
            let now = Instant::now();
            if stop.load(Ordering::Acquire) || end.is_some_and(|e| now >= e) {
                break;
            }
            if let (Some(n), Some(e)) = (next, every) {
                if now >= n {
                    let p = self.progress();
                    progress(&p);
                    next = Some(n + e);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Drains (no new tickets, running matches finish), waits for the replicas to converge,
    /// writes each region's snapshot, stops every thread and reports.
    pub fn finish(mut self) -> Report {
        let sh = self.shared.clone();
        let ran_for = sh.start.elapsed();
        sh.draining.store(true, Ordering::Release);
        let cfg = &sh.config;
        let match_time = cfg.tick_interval() * (cfg.match_ticks + 2);
        let drain_deadline = Instant::now()
            + match_time
            + Duration::from_millis(cfg.connect_timeout_ms * 2)
            + Duration::from_secs(2);
        // Every region's hosted matches (another process's as its bridge status brings them,
        // so a follower waits for the matches elsewhere too: their results must reach it
        // before it stops), and the matches its control plane (if it leads) placed. A region
        // whose status stopped coming (its process died) counts no more.
        let live_hosted = || {
            let now = sh.start.elapsed().as_millis() as u64 + 1;
            (0..sh.regions.len())
                .filter(|&i| sh.status_fresh(i, now))
                .map(|i| sh.regions[i].hosted.load(Ordering::Relaxed))
                .sum::<u64>()
        };
        while Instant::now() < drain_deadline {
            let hosted = live_hosted();
            let running = lock(&sh.view).running;
            if hosted == 0 && running == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let drained = live_hosted() == 0 && lock(&sh.view).running == 0;
        sh.bots_stop.store(true, Ordering::Release);
        // The bots logged out; the lobbies close (after the bot threads ended, below, any
        // straggler's session just times out).
        // Give replication time to converge (published every 250 ms).
        let sync_deadline = Instant::now() + Duration::from_secs(10);
        std::thread::sleep(Duration::from_millis(300));
        while Instant::now() < sync_deadline && !self.replicas_converged() {
            std::thread::sleep(Duration::from_millis(50));
        }
        // A multi-process leader relays every region's status until the followers are done.
        let linger = Instant::now() + Duration::from_secs(15);
        while sh.followers_open.load(Ordering::Acquire) > 0 && Instant::now() < linger {
            std::thread::sleep(Duration::from_millis(50));
        }
        // The front's threads hold the session: stop them first.
        self.front = None;
        sh.control_stop.store(true, Ordering::Release);
        let mut outcome = self.control.take().and_then(|h| h.join().ok());
        if let Some(e) = self.election.take().and_then(|h| h.join().ok()) {
            outcome = outcome.or(e.outcome);
            if let Some(f) = e.following {
                self.threads.push(f.reader);
                self.bridge_writer = Some(f.writer);
                self.bridges.push(f.stream);
            }
        }
        sh.region_stop.store(true, Ordering::Release);
        // A follower's writer sends its final status once it sees the stop; it gets 3 s
        // (a leader that stopped reading must not hold the session up), then the connection
        // is shut, which also ends the reader.
        if let Some(w) = self.bridge_writer.take() {
            let deadline = Instant::now() + Duration::from_secs(3);
            while !w.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            self.threads.push(w);
        }
        for b in self.bridges.drain(..).chain(lock(&sh.bridge_streams).drain(..)) {
            let _ = b.shutdown(std::net::Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.lobbies.clear();
        self.proxies.clear();
        if let Some(m) = self.metrics.take() {
            m.shutdown();
        }
        build_report(&sh, outcome, ran_for, drained, &self.sync_addrs)
    }
}

impl Drop for RunningSession {
    fn drop(&mut self) {
        self.shared.bots_stop.store(true, Ordering::Release);
        self.shared.control_stop.store(true, Ordering::Release);
        self.shared.region_stop.store(true, Ordering::Release);
    }
}

fn q(h: &Histogram<u64>, quantile: f64) -> Option<u64> {
    (!h.is_empty()).then(|| h.value_at_quantile(quantile))
}

fn build_report(
    sh: &Shared,
    outcome: Option<ControlOutcome>,
    ran_for: Duration,
    drained: bool,
    sync_addrs: &[SocketAddr],
) -> Report {
    let cfg = &sh.config;
    let finished_nodes: Vec<Option<(Replica, RegionSync)>> =
        std::mem::take(&mut *lock(&sh.finished_replicas));
    let mut replicas: Vec<Option<Replica>> = Vec::with_capacity(finished_nodes.len());
    let mut crdts: Vec<RegionSync> = Vec::new();
    for n in finished_nodes {
        match n {
            Some((r, c)) => {
                replicas.push(Some(r));
                crdts.push(c);
            }
            None => replicas.push(None),
        }
    }
    let dir =
        if cfg.snapshot_dir.as_os_str().is_empty() { std::env::temp_dir() } else { cfg.snapshot_dir.clone() };
    let mut snapshots: Vec<PathBuf> = Vec::new();
    let mut snapshot_errors = 0u64;
    for r in replicas.iter().flatten() {
        let path = dir.join(format!("pvp-{}-{}.snapshot", r.region(), std::process::id()));
        match postcard::to_allocvec(r.state())
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&path, b))
        {
            Ok(()) => snapshots.push(path),
            Err(_) => snapshot_errors += 1,
        }
    }
    for c in &crdts {
        let d = dir.join(format!("pvp-sync-{}", std::process::id()));
        match std::fs::create_dir_all(&d).map_err(|_| ()).and_then(|()| c.save_snapshot(&d).map_err(|_| ())) {
            Ok(p) => snapshots.push(p),
            Err(()) => snapshot_errors += 1,
        }
    }
    if sh.history.is_some() {
        let view = lock(&sh.replica_view).clone();
        let mut c = crdts.iter();
        for (i, r) in replicas.iter().enumerate() {
            let Some(r) = r else { continue };
            let bans = c.next().map_or_else(Vec::new, |c| {
                let mut b: Vec<u64> =
                    c.census(sh.unix_ms(Instant::now())).banned.iter().map(|p| p.get()).collect();
                b.sort_unstable();
                b
            });
            let mut results: Vec<u64> = r.state().results.keys().map(|m| m.get()).collect();
            results.sort_unstable();
            sh.record(crate::history::Event::Final {
                region: cfg.regions[i].id.to_string(),
                results,
                bans,
                digest: view.get(i).copied().flatten().map_or(0, |s| s.digest),
            });
        }
    }
    let leaderboard_top = crdts.first().map_or_else(Vec::new, |c| c.top(10));
    let strong_committed = crdts.iter().map(|c| c.stats().strong_committed).sum();
    let strong_failed = crdts.iter().map(|c| c.stats().strong_failed).sum();
    let crdt_errors: u64 = crdts.iter().map(|c| c.stats().write_errors + c.stats().rejected).sum();
    let h = lock(&sh.hists);
    let mut lag = hist();
    for l in &h.sync_lag_ms {
        let _ = lag.add(l);
    }
    let o = outcome;
    let all_results: HashSet<MatchId> =
        replicas.iter().flatten().flat_map(|r| r.state().results.keys().copied()).collect();
    let lost_results = replicas
        .iter()
        .flatten()
        .map(|r| all_results.len() as u64 - r.state().results.len() as u64)
        .max()
        .unwrap_or(0);
    let finished: u64 = sh.regions.iter().map(|r| r.finished.load(Ordering::Relaxed)).sum();
    // Every region's last published summary (in multi-process mode the others' come over the
    // bridge): same digest everywhere and nothing left unacked.
    let view = lock(&sh.replica_view).clone();
    let first = view.first().copied().flatten();
    let all_local = replicas.iter().all(Option::is_some);
    // A local region's row is its final state: nothing may be left unacked. Another process's
    // row is the last one its bridge carried, which can be from before that process's own
    // last acks (its final status reaches the leader, not always a follower through the
    // leader's relay): its digest must match, its unacked count is its own report's to check.
    let converged = first.is_some()
        && view.iter().enumerate().all(|(i, v)| {
            v.is_some_and(|v| {
                Some(v.digest) == first.map(|f| f.digest)
                    && (v.unacked == 0 || replicas.get(i).is_some_and(Option::is_none))
            })
        })
        && (!all_local || all_results.len() as u64 == finished);
    let regions = cfg
        .regions
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let st = &sh.regions[i];
            let rep = view.get(i).copied().flatten().filter(|_| replicas.get(i).is_some_and(Option::is_some));
            RegionReport {
                region: r.id,
                matches_made: o.as_ref().map_or(0, |o| o.matches_made[i]),
                matches_finished: st.finished.load(Ordering::Relaxed),
                scale_up_actions: o.as_ref().map_or(0, |o| o.scale_up[i]),
                scale_down_actions: o.as_ref().map_or(0, |o| o.scale_down[i]),
                servers: o
                    .as_ref()
                    .and_then(|o| o.servers.get(i))
                    .map_or(0, |c| c.starting + c.ready + c.allocated + c.draining),
                replica: rep,
                sync_lag_p99_ms: q(&h.sync_lag_ms[i], 0.99),
                sync_addr: sync_addrs[i],
                servers_started: o.as_ref().map_or(0, |o| o.servers_started[i]),
                servers_stopped: o.as_ref().map_or(0, |o| o.servers_stopped[i]),
                servers_crashed: st.servers_crashed.load(Ordering::Relaxed),
            }
        })
        .collect();
    let sum = |f: fn(&RegionStats) -> &AtomicU64| {
        sh.regions.iter().map(|r| f(r).load(Ordering::Relaxed)).sum::<u64>()
    };
    let bad_packets = sum(|r| &r.bad_packets);
    let bad_tokens = sum(|r| &r.bad_tokens);
    let game_dropped: u64 = sh.regions.iter().map(|r| r.game.dropped_input.load(Ordering::Relaxed)).sum();
    let late_inputs: u64 = sh.regions.iter().map(|r| r.game.late_inputs.load(Ordering::Relaxed)).sum();
    let send_failures: u64 = sh.regions.iter().map(|r| r.game.send_failures.load(Ordering::Relaxed)).sum();
    let fleet_dropped = o.as_ref().map_or(0, |o| o.fleet_dropped);
    let replica_errors = sum(|r| &r.errors);
    let connect_failures = sum(|r| &r.connect_failures);
    let mm_dropped = o.as_ref().map_or(0, |o| o.mm.results_dropped);
    let ticket_errors = o.as_ref().map_or(0, |o| o.ticket_errors);
    let no_show = o.as_ref().map_or(0, |o| o.aborted_no_show);
    let failover_rejected = o.as_ref().map_or(0, |o| o.failover_rejected);
    let errors_by_place = [
        replica_errors,
        sum(|r| &r.lobby_send_failures),
        send_failures,
        mm_dropped,
        ticket_errors,
        snapshot_errors,
        crdt_errors,
        failover_rejected,
    ];
    let dropped_by_place = [
        sum(|r| &r.lobby_dropped),
        game_dropped,
        sum(|r| &r.link_refused),
        fleet_dropped,
        bad_packets + bad_tokens,
        sh.front.dropped.load(Ordering::Relaxed),
    ];
    Report {
        duration: ran_for,
        players: cfg.players,
        driver: lock(&sh.driver).clone().unwrap_or_else(|| "-".to_string()),
        regions,
        matches_made: o.as_ref().map_or(0, |o| o.matches_made.iter().sum()),
        matches_finished: finished,
        cross_region_matches: o.as_ref().map_or(0, |o| o.cross_region),
        in_region_rtt_p50_us: q(&h.home_rtt_us, 0.5),
        in_region_rtt_p99_us: q(&h.home_rtt_us, 0.99),
        cross_region_rtt_p50_us: q(&h.away_rtt_us, 0.5),
        cross_region_rtt_p99_us: q(&h.away_rtt_us, 0.99),
        connect_p50_ms: q(&h.connect_ms, 0.5),
        connect_p99_ms: q(&h.connect_ms, 0.99),
        mm_wait_p50_ms: o.as_ref().and_then(|o| q(&o.mm_wait_ms, 0.5)),
        mm_wait_p99_ms: o.as_ref().and_then(|o| q(&o.mm_wait_ms, 0.99)),
        sync_lag_p50_ms: q(&lag, 0.5),
        sync_lag_p99_ms: q(&lag, 0.99),
        over_latency_limit: o.as_ref().map_or(0, |o| o.over_limit),
        slo: o.as_ref().map_or_else(Vec::new, |o| o.slo.clone()),
        converged,
        lost_results,
        crashed_matches: o.as_ref().map_or(0, |o| o.aborted_crash),
        players_replaced: sum(|r| &r.replaced),
        ratings_updated: o.as_ref().map_or(0, |o| o.ratings_updated),
        leaderboard_moves: o.as_ref().map_or(0, |o| o.top_changes),
        lobby_sessions_peak: sum(|r| &r.lobby_peak),
        lobby_lost: sum(|r| &r.lobby_lost),
        lobby_undelivered: sum(|r| &r.lobby_undelivered),
        errors: errors_by_place.iter().sum(),
        errors_by_place,
        dropped_input: dropped_by_place.iter().sum(),
        latency_slices: o.as_ref().map_or((0, 0, None), |o| {
            let (t, b, w) = o.latency_slices;
            (t, b, w.map(|(q, at)| ((q * 1e6) as u64, at)))
        }),
        dropped_by_place,
        front_tickets: sh.front.created.load(Ordering::Relaxed),
        late_inputs,
        sync_links_opened: sum(|r| &r.link_opened),
        sync_links_refused: sum(|r| &r.link_refused),
        skill_spearman: o.as_ref().and_then(|o| o.skill_spearman),
        leaderboard_top,
        reconnect_offers: o.as_ref().map_or(0, |o| o.reconnect_offers),
        reconnects_acted: o.as_ref().map_or(0, |o| o.reconnects_sent),
        bans_committed: strong_committed,
        bans_refused_tickets: o.as_ref().map_or(0, |o| o.bans_refused_tickets),
        bans_refused_connects: sh.regions.iter().map(|r| r.game.bans_refused.load(Ordering::Relaxed)).sum(),
        bans_failed: strong_failed,
        connect_failures,
        no_show_matches: no_show,
        drained,
        snapshots,
        leader_term: sh.term.load(Ordering::Acquire),
        fenced_matches: sum(|r| &r.fenced_hosts),
        election: lock(&sh.election_log).clone(),
    }
}
