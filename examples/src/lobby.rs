//! A region's lobby: the matchmaking front for clients at scale, over a netcode session.
//!
//! Each region runs one lobby endpoint (a pvp-net [`GameServer`] whose game loop is the
//! `LobbyHandler`, inline on its worker). A player logs in (a lobby connect token for their
//! player id: `LobbyLogin`), holds the session while online (that session *is* its
//! presence: the lobby writes it to CrossRegionSync on connect and every
//! [`PRESENCE_REFRESH`] while it lasts), and speaks Open Match's frontend over reliable
//! messages ([`LobbyMsg`]): create a ticket, watch for its assignment (the server address and
//! the game server's netcode connect token), cancel. The HTTP/JSON front
//! ([`crate::front`]) offers the same for tools and tests.
//!
//! Everything a client sends is checked: a ticket from a session whose player already has
//! one queued, an RTT list naming unknown regions, bytes that are no message: dropped input,
//! counted, never a service error. Bans are checked where the ticket is taken (the control
//! plane refuses a banned player's ticket and the lobby says so).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pvp_core::ids::{MatchId, PlayerId, RegionId};
use pvp_net::game::{GameEvent, GameHandler, GameIo, GameServer, GameServerConfig, SessionId};
use pvp_net::netcode::{ConnectToken, IssuerConfig, Key, SessionGrant, SessionUserData, TokenIssuer};
use serde::{Deserialize, Serialize};

use crate::session::{BotCommand, ControlEvent, Shared, TicketAsk};

/// An online player's presence is written this often while its lobby session lasts...
pub const PRESENCE_REFRESH: Duration = Duration::from_secs(10);
/// ...and says "online" for this long after each write (a player that goes away drops off
/// by itself).
pub const PRESENCE_TTL: Duration = Duration::from_secs(30);

/// Lobby sessions end after this long without a packet (netcode's token timeout).
pub const LOBBY_TIMEOUT_SECONDS: i32 = 10;
/// Keep-alives on an idle lobby session, each way.
pub const LOBBY_KEEPALIVE: Duration = Duration::from_secs(1);

/// The lobby's netcode protocol id: game-server tokens do not open lobby sessions, nor the
/// other way round.
pub const LOBBY_PROTOCOL_ID: u64 = crate::session::PROTOCOL_ID ^ 0x4c_4f_42_42;

/// Connect-token bytes the [`LobbyMsg::Assigned`] message carries; the rest follows in
/// [`LobbyMsg::TokenTail`] (a reliable message holds at most
/// [`MAX_RELIABLE_MESSAGE`](pvp_net::netcode::layer::MAX_RELIABLE_MESSAGE) bytes).
pub const TOKEN_HEAD: usize = 1_024;

/// A lobby reliable message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LobbyMsg {
    /// Client: queue me (Open Match `CreateTicket`), with my measured RTT to each region.
    CreateTicket {
        /// (region, RTT in ms).
        rtt_ms: Vec<(RegionId, u32)>,
    },
    /// Client: leave the queue (`DeleteTicket`).
    CancelTicket,
    /// Server: the ticket was refused (banned, draining, or not valid).
    TicketFailed,
    /// Server: the assignment (`WatchAssignments`): where to play, and the first
    /// [`TOKEN_HEAD`] bytes of the game server's connect token.
    Assigned {
        /// The match.
        match_id: MatchId,
        /// The match's region (index in the session's regions).
        region: u8,
        /// The game server.
        server: SocketAddr,
        /// The token's first bytes.
        token_head: Vec<u8>,
    },
    /// Server: the rest of the token of the assignment just sent.
    TokenTail {
        /// The match.
        match_id: MatchId,
        /// The token's remaining bytes.
        bytes: Vec<u8>,
    },
    /// Server: the seat is void (server died, match dropped, region failed over): queue again.
    AssignmentVoid {
        /// The match.
        match_id: MatchId,
    },
}

/// Why lobby bytes were refused.
#[derive(Debug, thiserror::Error)]
#[error("malformed lobby message: {0}")]
pub struct LobbyError(#[from] postcard::Error);

impl LobbyMsg {
    /// Encodes to bytes.
    pub fn encode(&self) -> Result<Vec<u8>, LobbyError> {
        Ok(postcard::to_allocvec(self)?)
    }

    /// Decodes one whole message (trailing bytes make it malformed).
    pub fn decode(b: &[u8]) -> Result<Self, LobbyError> {
        let (m, rest) = postcard::take_from_bytes(b)?;
        if rest.is_empty() { Ok(m) } else { Err(LobbyError(postcard::Error::DeserializeBadEncoding)) }
    }
}

/// Issues lobby tokens: the login step. The built-in bots log in through it directly (a
/// stand-in for a login service: there are no accounts or passwords here); a token names
/// the player and its home region's lobby.
#[derive(Debug)]
pub(crate) struct LobbyLogin {
    issuer: TokenIssuer,
}

impl LobbyLogin {
    pub(crate) fn new(key: Key) -> Self {
        let mut c = IssuerConfig::new(LOBBY_PROTOCOL_ID, key);
        c.token_lifetime = Duration::from_secs(3_600);
        c.timeout_seconds = LOBBY_TIMEOUT_SECONDS;
        LobbyLogin { issuer: TokenIssuer::new(c) }
    }

    /// A lobby token for `player` at `lobby`.
    pub(crate) fn token(&self, player: PlayerId, lobby: SocketAddr) -> Option<ConnectToken> {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let grant = SessionGrant {
            client_id: player.get(),
            server_addresses: vec![lobby],
            user_data: SessionUserData {
                match_id: MatchId::new(0),
                player,
                team: 0,
                layered: true,
                game_data: vec![],
            },
        };
        self.issuer.token(unix, &grant).ok()
    }
}

/// A region's lobby endpoint.
#[derive(Debug)]
pub(crate) struct Lobby {
    server: Option<GameServer>,
}

impl Lobby {
    /// Binds region `idx`'s lobby on loopback, sized for `players` sessions, and publishes
    /// its address in `shared.lobby_addrs[idx]`.
    pub(crate) fn start(shared: Arc<Shared>, idx: usize, players: usize) -> std::io::Result<Self> {
        let mut c = GameServerConfig::new(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            LOBBY_PROTOCOL_ID,
            shared.server_key.clone(),
        );
        c.max_sessions = players + 1_024;
        c.max_pending = 4_096;
        c.token_history = (players + 1_024) * 2;
        c.keepalive_interval = LOBBY_KEEPALIVE;
        c.event_queue = 16;
        c.command_queue = 65_536;
        c.disconnect_packets = 2;
        c.udp.tick = Duration::from_millis(5);
        c.udp.thread_name = format!("lobby-{}", shared.config.regions[idx].id);
        c.udp.ring_buffers = 1_024;
        c.udp.socket_buffer = 4 << 20;
        let sh = shared.clone();
        let server = GameServer::bind_inline(c, move |_worker| LobbyHandler::new(sh.clone(), idx))
            .map_err(std::io::Error::other)?;
        let _ = shared.lobby_addrs[idx].set(server.public_address());
        Ok(Lobby { server: Some(server) })
    }
}

impl Drop for Lobby {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = s.shutdown();
        }
    }
}

#[derive(Debug)]
struct Online {
    session: SessionId,
    queued: bool,
    presence_at: Instant,
}

/// The lobby's game loop.
pub(crate) struct LobbyHandler {
    sh: Arc<Shared>,
    idx: usize,
    ids: Vec<RegionId>,
    players: HashMap<PlayerId, Online>,
    by_session: HashMap<SessionId, PlayerId>,
    cmds: Vec<BotCommand>,
    last_sweep: Instant,
    /// The region's requeue generation last acted on ([`Shared::requeue`]).
    requeue_seen: u64,
}

impl LobbyHandler {
    fn new(sh: Arc<Shared>, idx: usize) -> Self {
        let ids = sh.config.regions.iter().map(|r| r.id).collect();
        LobbyHandler {
            sh,
            idx,
            ids,
            players: HashMap::new(),
            by_session: HashMap::new(),
            cmds: Vec::new(),
            last_sweep: Instant::now(),
            requeue_seen: 0,
        }
    }

    fn dropped(&self) {
        self.sh.regions[self.idx].lobby_dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn send(&self, io: &mut GameIo<'_>, session: SessionId, m: &LobbyMsg) {
        let ok = m.encode().ok().is_some_and(|b| io.send_reliable(session, &b).is_ok());
        if !ok {
            self.sh.regions[self.idx].lobby_send_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_message(&mut self, session: SessionId, bytes: &[u8]) {
        let Some(&player) = self.by_session.get(&session) else { return };
        let Ok(m) = LobbyMsg::decode(bytes) else { return self.dropped() };
        match m {
            LobbyMsg::CreateTicket { rtt_ms } => {
                let known = rtt_ms.len() <= self.ids.len()
                    && rtt_ms.iter().all(|(r, ms)| self.ids.contains(r) && *ms <= 60_000);
                let Some(o) = self.players.get_mut(&player) else { return };
                if o.queued || !known {
                    // A second ticket while one is queued, or an RTT list we cannot use.
                    return self.dropped();
                }
                o.queued = true;
                let rtt =
                    rtt_ms.into_iter().map(|(r, ms)| (r, Duration::from_millis(u64::from(ms)))).collect();
                self.sh.to_control.push(ControlEvent::Ticket(TicketAsk { player, home: self.idx, rtt }));
            }
            LobbyMsg::CancelTicket => {
                if let Some(o) = self.players.get_mut(&player) {
                    if o.queued {
                        o.queued = false;
                        self.sh.to_control.push(ControlEvent::Cancel { player });
                    }
                }
            }
            // Server-to-client messages from a client.
            _ => self.dropped(),
        }
    }

    fn deliver(&mut self, io: &mut GameIo<'_>, cmd: BotCommand) {
        let player = match &cmd {
            BotCommand::Assigned { player, .. }
            | BotCommand::TicketFailed { player }
            | BotCommand::AssignmentVoid { player, .. } => *player,
        };
        let Some(o) = self.players.get_mut(&player) else {
            // Logged out since: the seat's server gives up on it at its connect deadline.
            self.sh.regions[self.idx].lobby_undelivered.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let session = o.session;
        match cmd {
            BotCommand::Assigned { match_id, region, server, token, .. } => {
                o.queued = false;
                let cut = TOKEN_HEAD.min(token.len());
                let region = u8::try_from(region).unwrap_or(u8::MAX);
                self.send(
                    io,
                    session,
                    &LobbyMsg::Assigned { match_id, region, server, token_head: token[..cut].to_vec() },
                );
                self.send(io, session, &LobbyMsg::TokenTail { match_id, bytes: token[cut..].to_vec() });
            }
            BotCommand::TicketFailed { .. } => {
                o.queued = false;
                self.send(io, session, &LobbyMsg::TicketFailed);
            }
            BotCommand::AssignmentVoid { match_id, .. } => {
                self.send(io, session, &LobbyMsg::AssignmentVoid { match_id });
            }
        }
    }
}

impl GameHandler for LobbyHandler {
    fn on_event(&mut self, now: Instant, e: GameEvent, io: &mut GameIo<'_>) {
        match e {
            GameEvent::Connected { session, seat, .. } => {
                // A lobby token names its player; its home lobby is the only one it joins.
                let Some(seat) = seat.filter(|s| {
                    crate::bots::home_of(s.player).0 == self.idx || crate::front::is_external(s.player)
                }) else {
                    self.dropped();
                    let _ = io.disconnect(session);
                    return;
                };
                if let Some(old) =
                    self.players.insert(seat.player, Online { session, queued: false, presence_at: now })
                {
                    // Logged in again: the older session goes.
                    self.by_session.remove(&old.session);
                    let _ = io.disconnect(old.session);
                }
                self.by_session.insert(session, seat.player);
                if crate::front::is_external(seat.player) {
                    crate::session::lock(&self.sh.lobby_external).insert(seat.player, self.idx);
                }
                self.sh.presence[self.idx].push(seat.player);
            }
            GameEvent::Message { session, bytes } => self.on_message(session, &bytes),
            GameEvent::Payload { .. } => self.dropped(),
            GameEvent::Disconnected { session, .. } => {
                if let Some(p) = self.by_session.remove(&session) {
                    if self.players.get(&p).is_some_and(|o| o.session == session) {
                        if let Some(o) = self.players.remove(&p) {
                            if o.queued {
                                self.sh.to_control.push(ControlEvent::Cancel { player: p });
                            }
                        }
                        if crate::front::is_external(p) {
                            crate::session::lock(&self.sh.lobby_external).remove(&p);
                        }
                    }
                }
            }
        }
    }

    fn on_tick(&mut self, now: Instant, io: &mut GameIo<'_>) {
        let mut cmds = std::mem::take(&mut self.cmds);
        self.sh.to_bots[self.idx].pop_batch(&mut cmds, 4_096);
        for c in cmds.drain(..) {
            self.deliver(io, c);
        }
        self.cmds = cmds;
        // A new matchmaking leader knows none of the old one's tickets: every queued player
        // is told its ticket failed, and asks the new leader.
        let generation = self.sh.requeue[self.idx].load(Ordering::Acquire);
        if generation != self.requeue_seen {
            self.requeue_seen = generation;
            let queued: Vec<SessionId> = self
                .players
                .values_mut()
                .filter(|o| o.queued)
                .map(|o| {
                    o.queued = false;
                    o.session
                })
                .collect();
            for session in queued {
                self.send(io, session, &LobbyMsg::TicketFailed);
            }
        }
        // Every 100 ms, so refreshes leave in small steps rather than a burst a second.
        if now.duration_since(self.last_sweep) >= Duration::from_millis(100) {
            self.last_sweep = now;
            for (p, o) in self.players.iter_mut() {
                if now.duration_since(o.presence_at) >= PRESENCE_REFRESH {
                    o.presence_at = now;
                    self.sh.presence[self.idx].push(*p);
                }
            }
            self.sh.regions[self.idx].lobby_peak.fetch_max(self.players.len() as u64, Ordering::Relaxed);
        }
    }
}

/// Where region `idx`'s lobby listens, once it does.
pub(crate) fn lobby_addr(sh: &Shared, idx: usize) -> Option<SocketAddr> {
    sh.lobby_addrs.get(idx).and_then(OnceLock::get).copied()
}
