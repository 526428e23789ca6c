//! Game servers: each one its own pvp-net [`GameServer`] endpoint (netcode 1.02, own port)
//! with an authoritative [`arena`](crate::arena) game loop at the session's tick rate.
//!
//! The game loop runs inline on the endpoint's own thread ([`GameHandler`]): one thread per
//! server, inputs handled in the pass that reads them, snapshots sent in the same pass.
//!
//! Lifecycle as in Agones: a server starts (Starting), tells the fleet controller it is Ready
//! by heartbeat, is Allocated while it hosts fights (many at once: a high-density server),
//! drains when told to and shuts down when empty. The controller learns all of it from
//! [`Heartbeat`]s sent over UDP, never from a shared record: a server that crashes
//! (the chaos engine's crash, which stops its threads and closes its socket without a word)
//! simply falls silent, and the controller marks it Unhealthy on its own.
//!
//! Heartbeats are sealed ([`Heartbeat::seal`]: HMAC-SHA256 under the region's [`FleetKey`],
//! with the send time): a datagram from anyone without the key cannot announce a server or
//! move players to another address, and the controller refuses replays by their time.
//!
//! The server checks every seat: a session's token names a match and a seat, and the session
//! is only seated when this server hosts that match with that player on that team; netcode
//! binds the session to the address that did the handshake, so inputs come from the seat's
//! address or not at all. Inputs that fail the arena's checks are counted as dropped input.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use pvp_core::ids::{MatchId, PlayerId, ServerId};
use pvp_core::queue::UnboundedQueue;
use pvp_net::DriverChoice;

use crate::history::Event;
use pvp_net::game::{GameEvent, GameHandler, GameIo, GameServer, GameServerConfig, SessionId};
use pvp_net::netcode::Key;
use sha2::{Digest, Sha256};

use crate::arena::{Arena, ArenaError, Input, ServerMsg, Step};

/// Heartbeat datagram magic.
const HB_MAGIC: &[u8; 4] = b"PVHB";

/// A server's lifecycle state as its heartbeat reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerPhase {
    /// Bound and running, hosting nothing.
    Ready,
    /// Hosting at least one fight.
    Allocated,
    /// Finishing its fights, taking no new ones.
    Draining,
    /// Leaving (the last heartbeat of an orderly stop).
    Shutdown,
}

/// What a game server tells the fleet controller, a few times a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// The server's region (index in the session's regions).
    pub region: u8,
    /// The server.
    pub server: ServerId,
    /// Its state.
    pub phase: ServerPhase,
    /// Fights it hosts.
    pub fights: u16,
    /// Players seated.
    pub players: u16,
    /// Where players connect (IPv4).
    pub addr: SocketAddrV4,
}

impl Heartbeat {
    /// Encoded length.
    pub const BYTES: usize = 26;

    /// The datagram.
    pub fn encode(&self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        b[..4].copy_from_slice(HB_MAGIC);
        b[4] = self.region;
        b[5..13].copy_from_slice(&self.server.get().to_le_bytes());
        b[13] = match self.phase {
            ServerPhase::Ready => 1,
            ServerPhase::Allocated => 2,
            ServerPhase::Draining => 3,
            ServerPhase::Shutdown => 4,
        };
        b[14..16].copy_from_slice(&self.fights.to_le_bytes());
        b[16..18].copy_from_slice(&self.players.to_le_bytes());
        b[18..22].copy_from_slice(&self.addr.ip().octets());
        b[22..24].copy_from_slice(&self.addr.port().to_le_bytes());
        b
    }

    /// Reads a heartbeat; `None` for anything else (counted as dropped input by the caller).
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != Self::BYTES || &b[..4] != HB_MAGIC || b[24..] != [0, 0] {
            return None;
        }
        let phase = match b[13] {
            1 => ServerPhase::Ready,
            2 => ServerPhase::Allocated,
            3 => ServerPhase::Draining,
            4 => ServerPhase::Shutdown,
            _ => return None,
        };
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let server = ServerId::new(u64::from_le_bytes(b[5..13].try_into().ok()?));
        let ip = Ipv4Addr::new(b[18], b[19], b[20], b[21]);
        Some(Heartbeat {
            region: b[4],
            server,
            phase,
            fights: u16_at(14),
            players: u16_at(16),
            addr: SocketAddrV4::new(ip, u16_at(22)),
        })
    }
}

/// The key a region's fleet controller and its game servers share for heartbeats.
#[derive(Clone)]
pub struct FleetKey([u8; 32]);

impl std::fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetKey(..)")
    }
}

impl FleetKey {
    /// The fleet key of a deployment secret.
    pub fn derive(secret: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"pvp fleet heartbeat key v1\0");
        h.update(secret);
        FleetKey(h.finalize().into())
    }

    fn hmac(&self, body: &[u8]) -> Hmac<Sha256> {
        let mut m =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!("any key length"));
        m.update(body);
        m
    }

    fn mac(&self, body: &[u8]) -> [u8; SEAL_TAG] {
        let full = self.hmac(body).finalize().into_bytes();
        let mut t = [0u8; SEAL_TAG];
        t.copy_from_slice(&full[..SEAL_TAG]);
        t
    }
}

/// Bytes of a sealed heartbeat's tag (HMAC-SHA256, truncated).
const SEAL_TAG: usize = 16;

/// Why a sealed heartbeat was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeartbeatError {
    /// Not a heartbeat (length, magic, a field out of range).
    #[error("malformed heartbeat")]
    Malformed,
    /// The tag did not verify: not sealed with the fleet's key.
    #[error("heartbeat not sealed with the fleet key")]
    BadTag,
}

impl Heartbeat {
    /// Sealed length: the heartbeat, its send time, the tag.
    pub const SEALED_BYTES: usize = Self::BYTES + 8 + SEAL_TAG;

    /// The datagram a server sends: the heartbeat and its send time (Unix ms), under an
    /// HMAC-SHA256 tag with the fleet key, so that nobody without the key can announce a
    /// server (or point players at another address) and a replay is told by its time.
    pub fn seal(&self, key: &FleetKey, sent_unix_ms: u64) -> [u8; Self::SEALED_BYTES] {
        let mut b = [0u8; Self::SEALED_BYTES];
        b[..Self::BYTES].copy_from_slice(&self.encode());
        b[Self::BYTES..Self::BYTES + 8].copy_from_slice(&sent_unix_ms.to_le_bytes());
        let tag = key.mac(&b[..Self::BYTES + 8]);
        b[Self::BYTES + 8..].copy_from_slice(&tag);
        b
    }

    /// Opens a sealed heartbeat: the heartbeat and its send time.
    pub fn open(b: &[u8], key: &FleetKey) -> Result<(Self, u64), HeartbeatError> {
        if b.len() != Self::SEALED_BYTES {
            return Err(HeartbeatError::Malformed);
        }
        let (body, tag) = b.split_at(Self::BYTES + 8);
        // Constant time: the truncated tag is checked by `hmac` itself.
        key.hmac(body).verify_truncated_left(tag).map_err(|_| HeartbeatError::BadTag)?;
        let hb = Self::decode(&body[..Self::BYTES]).ok_or(HeartbeatError::Malformed)?;
        let mut t = [0u8; 8];
        t.copy_from_slice(&body[Self::BYTES..]);
        Ok((hb, u64::from_le_bytes(t)))
    }
}

/// How a server is built.
#[derive(Debug, Clone)]
pub(crate) struct ServerSpec {
    pub(crate) region: usize,
    /// The region's name, for metric labels.
    pub(crate) region_name: String,
    pub(crate) server: ServerId,
    pub(crate) protocol_id: u64,
    pub(crate) key: Key,
    pub(crate) tick: Duration,
    pub(crate) max_ticks: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_players: usize,
    pub(crate) heartbeat_to: SocketAddr,
    /// The IP the server and its heartbeat socket bind (other hosts must reach both).
    pub(crate) bind_ip: std::net::IpAddr,
    /// Seals the heartbeats.
    pub(crate) fleet_key: FleetKey,
    pub(crate) heartbeat_every: Duration,
    pub(crate) driver: DriverChoice,
    /// The session's history log, if kept: players joining and leaving their seats.
    pub(crate) history: Option<Arc<crate::history::HistoryLog>>,
}

/// What the region hands a server.
#[derive(Debug)]
pub(crate) enum ServerCommand {
    /// Host a fight for these seats (player, team).
    Host { match_id: MatchId, seats: Vec<(PlayerId, u8)> },
    /// Take no new fights; shut down once empty.
    Drain,
}

/// What a server reports to its region.
#[derive(Debug)]
pub(crate) enum ServerReport {
    /// A fight ended: the result the server decided.
    Finished { match_id: MatchId, winner: Option<u8>, seats: Vec<(PlayerId, u8)> },
    /// Not every player connected in time.
    NoShow { match_id: MatchId },
    /// A Host the server refused (draining, or the fight's seats are invalid).
    Refused { match_id: MatchId },
}

/// Counters the game loops of a region's servers share.
#[derive(Debug, Default)]
pub(crate) struct ServerCounters {
    /// Inputs that failed the arena's checks, datagrams that were not inputs, sessions whose
    /// token named a seat this server does not host.
    pub(crate) dropped_input: AtomicU64,
    /// Inputs that came after their tick was resolved or their fight ended, and sessions
    /// whose fight never came (stale assignments).
    pub(crate) late_inputs: AtomicU64,
    /// Inputs that counted.
    pub(crate) inputs: AtomicU64,
    /// Sends the endpoint refused (queue full).
    pub(crate) send_failures: AtomicU64,
    /// Sessions refused at connect because the player is banned.
    pub(crate) bans_refused: AtomicU64,
}

/// Round trips measured at a server (snapshot out to the answering input in), µs, split by
/// whether the player plays in its home region.
#[derive(Debug)]
pub(crate) struct RttSplit {
    pub(crate) home: Histogram<u64>,
    pub(crate) away: Histogram<u64>,
}

/// A started server, as its region holds it.
#[derive(Debug)]
pub(crate) struct RunningServer {
    pub(crate) id: ServerId,
    pub(crate) commands: Arc<UnboundedQueue<ServerCommand>>,
    /// Fights it hosts now.
    pub(crate) fights: Arc<AtomicU64>,
    /// Set by the game loop once it drained and said Shutdown.
    done: Arc<AtomicBool>,
    server: Option<GameServer>,
    /// Longest an orderly stop waits for the fights in play to end.
    drain_bound: Duration,
}

/// A seat of a hosted fight.
#[derive(Debug)]
struct Seat {
    player: PlayerId,
    team: u8,
    session: Option<SessionId>,
    home: bool,
}

#[derive(Debug)]
struct Fight {
    arena: Arena,
    seats: Vec<Seat>,
    started: bool,
    /// The first snapshot went out (later passes resolve a tick before sending).
    sent_first: bool,
    connect_deadline: Instant,
    next_tick: Instant,
    tick_sent: Instant,
}

/// A session that connected before its fight was hosted (the Host and the player's
/// assignment travel separately).
#[derive(Debug, Clone, Copy)]
struct Early {
    session: SessionId,
    player: PlayerId,
    team: u8,
    at: Instant,
}

impl RunningServer {
    /// Binds the server's endpoint on loopback with its game loop inline on the endpoint's
    /// thread (a [`GameHandler`]: one thread per server, inputs handled as they are read,
    /// snapshots sent in the same pass). `home_of` tells the region index a player lives in
    /// (for the in-region / cross-region round-trip split); `rtt` receives the loop's round
    /// trips every 250 ms.
    pub(crate) fn launch(
        spec: ServerSpec,
        reports: Arc<UnboundedQueue<(ServerId, ServerReport)>>,
        rtt: Arc<std::sync::Mutex<RttSplit>>,
        counters: Arc<ServerCounters>,
        banned: Arc<std::sync::Mutex<std::collections::HashSet<PlayerId>>>,
        home_of: fn(PlayerId) -> usize,
    ) -> std::io::Result<Self> {
        let mut c =
            GameServerConfig::new(SocketAddr::new(spec.bind_ip, 0), spec.protocol_id, spec.key.clone());
        c.udp.driver = spec.driver;
        // Sized for one high-density server, not the library's defaults (which suit a server
        // per machine): the session's memory per player depends on it.
        c.udp.ring_buffers = 256;
        c.udp.queue_capacity = 2_048;
        c.udp.socket_buffer = 1 << 20;
        // Send slots: a tick that sends many fights' snapshots at once needs fewer loop turns.
        c.udp.batch = 256;
        c.udp.thread_name = format!("game-{}", spec.region_name);
        // The game's timers (10 Hz fight ticks, heartbeats) need no finer grain; every batch
        // of datagrams runs the loop too.
        c.udp.tick = Duration::from_millis(2);
        c.max_sessions = spec.max_players.max(1);
        c.max_pending = spec.max_players.max(16);
        c.token_history = spec.max_players.max(16) * 4;
        c.event_queue = 16;
        c.command_queue = 8_192;
        // Players learn the end from the End message; the goodbye only frees their session.
        c.disconnect_packets = 3;
        let commands = Arc::new(UnboundedQueue::new());
        let fights = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let hb = Arc::new(UdpSocket::bind(SocketAddr::new(spec.bind_ip, 0))?);
        let addr = Arc::new(OnceLock::new());
        let id = spec.server;
        let drain_bound = spec.connect_timeout + spec.tick * (spec.max_ticks + 2) + Duration::from_secs(1);
        let region_name = spec.region_name.clone();
        let (cmds, fights2, done2, addr2) = (commands.clone(), fights.clone(), done.clone(), addr.clone());
        let make = move |_worker: usize| Game {
            spec: spec.clone(),
            addr: addr2.clone(),
            commands: cmds.clone(),
            scratch: Vec::new(),
            counters: counters.clone(),
            banned: banned.clone(),
            fights_now: fights2.clone(),
            done: done2.clone(),
            reports: reports.clone(),
            rtt: rtt.clone(),
            home_of,
            hb: hb.clone(),
            fights: HashMap::new(),
            by_session: HashMap::new(),
            early: Vec::new(),
            draining: false,
            stopped: false,
            last_hb: None,
            last_merge: Instant::now(),
            fights_due: None,
            local: RttSplit { home: crate::region::hist(), away: crate::region::hist() },
            latency: metrics::histogram!(pvp_ops::slo::names::LATENCY_SECONDS, "region" => region_name.clone()),
            requests: metrics::counter!(pvp_ops::slo::names::REQUESTS_TOTAL, "region" => region_name.clone()),
            failed: metrics::counter!(pvp_ops::slo::names::REQUESTS_FAILED, "region" => region_name.clone()),
        };
        let server = GameServer::bind_inline(c, make).map_err(std::io::Error::other)?;
        let _ = addr.set(server.public_address());
        Ok(RunningServer { id, commands, fights, done, server: Some(server), drain_bound })
    }

    /// Kills the server: its endpoint's thread stops at once and its socket closes without
    /// telling a session, no further heartbeat leaves. Players time out; the controller
    /// notices the silence.
    pub(crate) fn crash(mut self) {
        if let Some(s) = self.server.take() {
            let _ = s.abort();
        }
    }

    /// Whether the server is gone (drained and shut down, or crashed).
    pub(crate) fn finished(&self) -> bool {
        self.server.is_none() || self.done.load(Ordering::Acquire)
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let Some(server) = self.server.take() else { return };
        if !self.done.load(Ordering::Acquire) {
            // Dropped without a crash: an orderly stop (drain what is left, then leave),
            // bounded by the longest a fight can still take.
            self.commands.push(ServerCommand::Drain);
            let deadline = Instant::now() + self.drain_bound;
            while !self.done.load(Ordering::Acquire) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let _ = server.shutdown();
    }
}

/// A server's game loop: a [`GameHandler`] on its endpoint's thread.
struct Game {
    spec: ServerSpec,
    /// Where players connect (set once the endpoint is bound).
    addr: Arc<OnceLock<SocketAddr>>,
    commands: Arc<UnboundedQueue<ServerCommand>>,
    scratch: Vec<ServerCommand>,
    counters: Arc<ServerCounters>,
    /// The region's applied ban list.
    banned: Arc<std::sync::Mutex<std::collections::HashSet<PlayerId>>>,
    fights_now: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    reports: Arc<UnboundedQueue<(ServerId, ServerReport)>>,
    rtt: Arc<std::sync::Mutex<RttSplit>>,
    home_of: fn(PlayerId) -> usize,
    hb: Arc<UdpSocket>,
    fights: HashMap<MatchId, Fight>,
    by_session: HashMap<SessionId, MatchId>,
    early: Vec<Early>,
    draining: bool,
    /// Drained and said Shutdown: the loop does nothing more.
    stopped: bool,
    last_hb: Option<Instant>,
    last_merge: Instant,
    /// When a fight is next due (`None`: look at them all on the next pass).
    fights_due: Option<Instant>,
    local: RttSplit,
    /// In-region round trips, the series the latency SLO reads.
    latency: metrics::Histogram,
    /// Requests served (inputs taken, sessions seated) and those the service failed (sends
    /// it could not queue): the error-rate SLO's series. Bad input is neither.
    requests: metrics::Counter,
    failed: metrics::Counter,
}

impl GameHandler for Game {
    fn on_event(&mut self, now: Instant, e: GameEvent, io: &mut GameIo<'_>) {
        if !self.stopped {
            self.handle_event(now, e, io);
        }
    }

    fn on_tick(&mut self, now: Instant, io: &mut GameIo<'_>) {
        if self.stopped {
            return;
        }
        let Some(&addr) = self.addr.get() else { return };
        let mut cmds = std::mem::take(&mut self.scratch);
        self.commands.pop_batch(&mut cmds, 256);
        for c in cmds.drain(..) {
            match c {
                ServerCommand::Host { match_id, seats } => self.host(now, match_id, seats),
                ServerCommand::Drain => self.draining = true,
            }
        }
        self.scratch = cmds;
        self.run_fights(now, io);
        if self.last_hb.is_none_or(|t| now.duration_since(t) >= self.spec.heartbeat_every) {
            self.last_hb = Some(now);
            let phase = if self.draining {
                ServerPhase::Draining
            } else if self.fights.is_empty() {
                ServerPhase::Ready
            } else {
                ServerPhase::Allocated
            };
            self.heartbeat(phase, addr);
            self.fights_now.store(self.fights.len() as u64, Ordering::Relaxed);
            // Sessions that connected for a fight never hosted here: let them go.
            let stale = self.spec.connect_timeout;
            let (keep, gone): (Vec<Early>, Vec<Early>) =
                self.early.drain(..).partition(|e| now.duration_since(e.at) < stale);
            self.early = keep;
            for e in gone {
                // A valid token for a fight this server never got (its Host was lost with a
                // crash or overtaken by a cancel): stale, not junk.
                self.counters.late_inputs.fetch_add(1, Ordering::Relaxed);
                let _ = io.disconnect(e.session);
            }
        }
        if now.duration_since(self.last_merge) >= Duration::from_millis(250) {
            self.last_merge = now;
            self.merge_rtt();
        }
        if self.draining && self.fights.is_empty() {
            self.merge_rtt();
            self.heartbeat(ServerPhase::Shutdown, addr);
            self.stopped = true;
            self.done.store(true, Ordering::Release);
        }
    }
}

impl Game {
    fn report(&self, r: ServerReport) {
        self.reports.push((self.spec.server, r));
    }

    fn heartbeat(&self, phase: ServerPhase, addr: SocketAddr) {
        let SocketAddr::V4(addr) = addr else { return };
        let players = self.fights.values().map(|f| f.seats.len()).sum::<usize>();
        let hb = Heartbeat {
            region: self.spec.region as u8,
            server: self.spec.server,
            phase,
            fights: self.fights.len().min(usize::from(u16::MAX)) as u16,
            players: players.min(usize::from(u16::MAX)) as u16,
            addr,
        };
        // Best effort, like any heartbeat: the controller tolerates missed ones.
        let sent = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let _ = self.hb.send_to(&hb.seal(&self.spec.fleet_key, sent), self.spec.heartbeat_to);
    }

    fn merge_rtt(&mut self) {
        if let Ok(mut g) = self.rtt.lock() {
            let _ = g.home.add(&self.local.home);
            let _ = g.away.add(&self.local.away);
        }
        self.local.home.reset();
        self.local.away.reset();
    }

    fn host(&mut self, now: Instant, match_id: MatchId, seats: Vec<(PlayerId, u8)>) {
        self.fights_due = None;
        if self.draining || self.fights.contains_key(&match_id) {
            self.report(ServerReport::Refused { match_id });
            return;
        }
        let Ok(arena) = Arena::new(&seats, self.spec.max_ticks) else {
            self.report(ServerReport::Refused { match_id });
            return;
        };
        let region = self.spec.region;
        let home_of = self.home_of;
        let mut fight = Fight {
            arena,
            seats: seats
                .iter()
                .map(|&(player, team)| Seat { player, team, session: None, home: home_of(player) == region })
                .collect(),
            started: false,
            sent_first: false,
            connect_deadline: now + self.spec.connect_timeout,
            next_tick: now,
            tick_sent: now,
        };
        let early = std::mem::take(&mut self.early);
        for e in early {
            match fight.seats.iter_mut().find(|s| s.player == e.player && s.team == e.team) {
                Some(seat) if seat.session.is_none() => {
                    seat.session = Some(e.session);
                    self.by_session.insert(e.session, match_id);
                    if let Some(h) = &self.spec.history {
                        h.record(Event::Joined { match_id: match_id.get(), player: e.player.get() });
                    }
                }
                _ => self.early.push(e),
            }
        }
        self.fights.insert(match_id, fight);
    }

    fn handle_event(&mut self, now: Instant, e: GameEvent, io: &mut GameIo<'_>) {
        match e {
            GameEvent::Connected { session, seat, .. } => {
                // A seat may complete a fight: look at the fights on the next pass.
                self.fights_due = None;
                let Some(seat) = seat else {
                    self.counters.dropped_input.fetch_add(1, Ordering::Relaxed);
                    let _ = io.disconnect(session);
                    return;
                };
                if self.banned.lock().is_ok_and(|b| b.contains(&seat.player)) {
                    // Banned after the ticket was taken: refused at the door.
                    self.counters.bans_refused.fetch_add(1, Ordering::Relaxed);
                    let _ = io.disconnect(session);
                    return;
                }
                let Some(f) = self.fights.get_mut(&seat.match_id) else {
                    self.early.push(Early { session, player: seat.player, team: seat.team, at: now });
                    return;
                };
                match f.seats.iter_mut().find(|s| s.player == seat.player && s.team == seat.team) {
                    Some(s) => {
                        self.requests.increment(1);
                        if let Some(old) = s.session.replace(session) {
                            self.by_session.remove(&old);
                        } else if let Some(h) = &self.spec.history {
                            h.record(Event::Joined {
                                match_id: seat.match_id.get(),
                                player: seat.player.get(),
                            });
                        }
                        self.by_session.insert(session, seat.match_id);
                    }
                    None => {
                        // A token for a seat this fight does not have.
                        self.counters.dropped_input.fetch_add(1, Ordering::Relaxed);
                        let _ = io.disconnect(session);
                    }
                }
            }
            GameEvent::Payload { session, payload } => {
                let Some(f) = self.by_session.get(&session).and_then(|m| self.fights.get_mut(m)) else {
                    // A seated player whose fight just ended (or is not hosted yet): late.
                    self.counters.late_inputs.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let Some(seat) = f.seats.iter().find(|s| s.session == Some(session)) else { return };
                let r = Input::decode(payload.as_slice()).and_then(|i| f.arena.handle_input(seat.player, i));
                match r {
                    Ok(()) => {
                        self.counters.inputs.fetch_add(1, Ordering::Relaxed);
                        self.requests.increment(1);
                        let us = now.duration_since(f.tick_sent).as_micros().max(1) as u64;
                        let h = if seat.home { &mut self.local.home } else { &mut self.local.away };
                        let _ = h.record(us.min(3_600_000_000));
                        if seat.home {
                            self.latency.record(us as f64 / 1e6);
                        }
                    }
                    Err(ArenaError::WrongTick { .. } | ArenaError::Duplicate | ArenaError::Over) => {
                        self.counters.late_inputs.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        self.counters.dropped_input.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            GameEvent::Message { .. } => {
                self.counters.dropped_input.fetch_add(1, Ordering::Relaxed);
            }
            GameEvent::Disconnected { session, .. } => {
                if let Some(m) = self.by_session.remove(&session) {
                    if let Some(f) = self.fights.get_mut(&m) {
                        for s in f.seats.iter_mut().filter(|s| s.session == Some(session)) {
                            s.session = None;
                            if let Some(h) = &self.spec.history {
                                h.record(Event::Left { match_id: m.get(), player: s.player.get() });
                            }
                        }
                    }
                }
                self.early.retain(|e| e.session != session);
            }
        }
    }

    fn run_fights(&mut self, now: Instant, io: &mut GameIo<'_>) {
        // The loop runs after every batch of datagrams; the fights only when one is due (a
        // tick, a connect deadline) or a seat or fight arrived since (`fights_due` = None).
        if self.fights_due.is_some_and(|d| now < d) {
            return;
        }
        let mut due: Option<Instant> = None;
        let mut ended: Vec<(MatchId, Option<Option<u8>>)> = Vec::new();
        for (id, f) in self.fights.iter_mut() {
            if !f.started {
                if f.seats.iter().all(|s| s.session.is_some()) {
                    f.started = true;
                    f.next_tick = now;
                } else if now >= f.connect_deadline {
                    ended.push((*id, None));
                    continue;
                } else {
                    due = Some(due.map_or(f.connect_deadline, |d| d.min(f.connect_deadline)));
                    continue;
                }
            }
            if now >= f.next_tick {
                let over = step_fight(id, f, now, self.spec.tick, io, &self.counters, &self.failed);
                if over.is_some() {
                    ended.extend(over);
                    continue;
                }
            }
            due = Some(due.map_or(f.next_tick, |d| d.min(f.next_tick)));
        }
        self.fights_due = due;
        for (id, result) in ended {
            let Some(f) = self.fights.remove(&id) else { continue };
            for s in &f.seats {
                if let Some(sess) = s.session {
                    self.by_session.remove(&sess);
                    if result.is_none() {
                        let _ = io.disconnect(sess);
                    }
                }
            }
            match result {
                Some(winner) => {
                    // The End went out first; the goodbye behind it frees the sessions.
                    for s in f.seats.iter().filter_map(|s| s.session) {
                        let _ = io.disconnect(s);
                    }
                    let seats = f.seats.iter().map(|s| (s.player, s.team)).collect();
                    self.report(ServerReport::Finished { match_id: id, winner, seats });
                }
                None => self.report(ServerReport::NoShow { match_id: id }),
            }
        }
    }
}

/// One due tick of a started fight: resolve the tick in play (unless this is the first
/// pass), then send the next snapshot, or the end. Returns the fight's result once over.
fn step_fight(
    id: &MatchId,
    f: &mut Fight,
    now: Instant,
    tick: Duration,
    io: &mut GameIo<'_>,
    counters: &ServerCounters,
    failed: &metrics::Counter,
) -> Option<(MatchId, Option<Option<u8>>)> {
    let mut send = |session: SessionId, msg: ServerMsg| {
        let mut b = [0u8; ServerMsg::MAX_BYTES];
        let n = msg.encode(&mut b);
        if io.send(session, &b[..n]).is_err() {
            counters.send_failures.fetch_add(1, Ordering::Relaxed);
            failed.increment(1);
        }
    };
    let mut over = None;
    if f.sent_first {
        if let Step::Over { winner } = f.arena.step() {
            over = Some(winner);
        }
    }
    for s in &f.seats {
        if let (Some(sess), Some(msg)) = (s.session, f.arena.snapshot(s.player)) {
            send(sess, msg);
        }
    }
    f.sent_first = true;
    f.tick_sent = now;
    f.next_tick += tick;
    if f.next_tick < now {
        // The loop fell behind: keep the rate, skip the backlog.
        f.next_tick = now + tick;
    }
    over.map(|w| (*id, Some(w)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvp_net::game::GameClient;
    use pvp_net::netcode::{ClientConfig, IssuerConfig, SessionGrant, SessionUserData, TokenIssuer};
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::time::SystemTime;

    const PID: u64 = 77;

    fn unix() -> Duration {
        SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
    }

    fn heartbeats(
        sock: &UdpSocket,
        within: Duration,
        until: impl Fn(&Heartbeat) -> bool,
    ) -> Option<Heartbeat> {
        let mut b = [0u8; 64];
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok((n, _)) = sock.recv_from(&mut b) {
                if let Some(h) = Heartbeat::open(&b[..n], &FleetKey::derive(b"test"))
                    .ok()
                    .map(|h| h.0)
                    .filter(|h| until(h))
                {
                    return Some(h);
                }
            }
        }
        None
    }

    /// A real server on loopback: it reports Ready then Allocated by heartbeat, seats a
    /// player whose token names a hosted seat and plays the fight to its end, refuses a banned
    /// player at connect, and after a crash sends nothing more.
    #[test]
    fn a_server_hosts_refuses_bans_reports_and_dies_silently() {
        let hb = UdpSocket::bind("127.0.0.1:0").unwrap();
        hb.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let key = Key::random();
        let spec = ServerSpec {
            region: 0,
            region_name: "kr".into(),
            server: ServerId::new(9),
            protocol_id: PID,
            key: key.clone(),
            tick: Duration::from_millis(20),
            max_ticks: 5,
            connect_timeout: Duration::from_secs(3),
            max_players: 16,
            heartbeat_to: hb.local_addr().unwrap(),
            bind_ip: std::net::IpAddr::from([127, 0, 0, 1]),
            fleet_key: FleetKey::derive(b"test"),
            heartbeat_every: Duration::from_millis(20),
            history: None,
            driver: DriverChoice::Epoll,
        };
        let reports = Arc::new(UnboundedQueue::new());
        let rtt = Arc::new(std::sync::Mutex::new(RttSplit {
            home: crate::region::hist(),
            away: crate::region::hist(),
        }));
        let counters = Arc::new(ServerCounters::default());
        let banned = Arc::new(Mutex::new(HashSet::from([PlayerId::new(3)])));
        let server =
            RunningServer::launch(spec, reports.clone(), rtt, counters.clone(), banned, |_| 0).unwrap();
        let ready = heartbeats(&hb, Duration::from_secs(5), |h| h.phase == ServerPhase::Ready)
            .expect("Ready heartbeat");
        assert_eq!(ready.server, ServerId::new(9));
        let issuer = TokenIssuer::new(IssuerConfig::new(PID, key));
        let client = |player: u64, team: u8| {
            let grant = SessionGrant {
                client_id: player,
                server_addresses: vec![SocketAddr::V4(ready.addr)],
                user_data: SessionUserData {
                    match_id: MatchId::new(1),
                    player: PlayerId::new(player),
                    team,
                    layered: false,
                    game_data: vec![],
                },
            };
            let mut cc = ClientConfig::default();
            cc.layered = false;
            GameClient::new(issuer.token(unix(), &grant).unwrap(), cc).unwrap()
        };
        server.commands.push(ServerCommand::Host {
            match_id: MatchId::new(1),
            seats: vec![(PlayerId::new(1), 0), (PlayerId::new(2), 1)],
        });
        let mut a = client(1, 0);
        let mut b = client(2, 1);
        let mut banned_client = client(3, 1);
        a.connect_blocking(Duration::from_secs(5)).unwrap();
        b.connect_blocking(Duration::from_secs(5)).unwrap();
        let _ = banned_client.connect_blocking(Duration::from_secs(5));
        let allocated = heartbeats(&hb, Duration::from_secs(5), |h| h.phase == ServerPhase::Allocated)
            .expect("Allocated heartbeat");
        assert_eq!(allocated.fights, 1);
        // Both play until the End; the banned one is sent away.
        let mut buf = [0u8; 32];
        let mut ended = [false; 2];
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(ended[0] && ended[1]) && Instant::now() < deadline {
            for (i, c) in [&mut a, &mut b].into_iter().enumerate() {
                while let Some(n) = c.recv_payload(&mut buf).unwrap() {
                    match ServerMsg::decode(&buf[..n]) {
                        Some(ServerMsg::Snapshot { tick, .. }) => {
                            let aim = if i == 0 { 900 } else { 100 };
                            c.send(&Input { tick, aim, guard: 500 }.encode()).unwrap();
                        }
                        Some(ServerMsg::End { .. }) => ended[i] = true,
                        None => {}
                    }
                }
            }
            let _ = banned_client.update();
            std::thread::sleep(Duration::from_millis(1)); // pacing only; the loop checks state
        }
        assert_eq!(ended, [true, true], "the fight ended for both");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while got.is_empty() && Instant::now() < deadline {
            reports.pop_batch(&mut got, 8);
            std::thread::sleep(Duration::from_millis(5)); // pacing only; the loop checks state
        }
        match got.pop() {
            Some((_, ServerReport::Finished { winner, seats, .. })) => {
                assert_eq!(winner, Some(0), "the better inputs won");
                assert_eq!(seats.len(), 2);
            }
            other => panic!("expected a result, got {other:?}"),
        }
        assert!(!banned_client.is_connected(), "the banned player was refused");
        assert_eq!(counters.bans_refused.load(Ordering::Relaxed), 1);
        assert!(counters.inputs.load(Ordering::Relaxed) >= 4);
        // A crash: no heartbeat after it.
        server.crash();
        while hb.recv_from(&mut buf).is_ok() {}
        // 25 heartbeat intervals of silence.
        assert!(heartbeats(&hb, Duration::from_millis(500), |_| true).is_none(), "a dead server is silent");
    }
}
