//! The server side: a bounded session table, bounded pending handshakes, single-use tokens.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use pvp_core::{MatchId, PlayerId};
use sha2::Sha256;
use thiserror::Error;

use super::link::Link;
use super::packet::{CHALLENGE_LEN, DenyReason, Packet, ReliableFrames};
use super::token::{TOKEN_LEN, TokenClaims, TokenKey};
use super::{ConnectionId, DisconnectReason, DropCounters, DropReason, SendError, Transmit};

/// Server settings. Build with [`ServerConfig::new`], then adjust fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Key shared with the matchmaker; tokens signed with another key are refused.
    pub key: TokenKey,
    /// The address tokens must name (the address clients reach this server at); IP and port
    /// are compared, an IPv6 flow info or scope id is not.
    pub server_addr: SocketAddr,
    /// Most sessions held at once; further handshakes are denied with `ServerFull`. Used
    /// tokens are remembered until they expire, at most `2 * max_sessions + max_pending` of
    /// them; beyond that handshakes are dropped as [`DropReason::TokenTableFull`].
    pub max_sessions: usize,
    /// Most handshakes in progress at once; further connect requests are dropped and counted
    /// as [`DropReason::PendingFull`].
    pub max_pending: usize,
    /// A handshake not completed in this time is forgotten.
    pub handshake_timeout: Duration,
    /// A session that hears nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A session that sent nothing for this long gets a keep-alive.
    pub keepalive_interval: Duration,
    /// Unacknowledged reliable messages are resent after this long.
    pub reliable_resend: Duration,
    /// How often [`Server::handle_timeout`] sweeps the session table.
    pub timer_granularity: Duration,
    /// Secret for challenges and connection ids (random by default).
    pub secret: [u8; 32],
    /// A ledger of used tokens shared by several servers (one per worker thread), so a token
    /// is single-use across all of them; `None`: this server's own table only.
    pub ledger: Option<TokenLedger>,
}

/// Used token ids shared by the servers of several worker threads (a mutex-guarded map; taken
/// once per completed handshake). Bounded: entries leave at their token's expiry.
#[derive(Debug, Clone)]
pub struct TokenLedger {
    inner: std::sync::Arc<std::sync::Mutex<HashMap<u64, u64>>>,
    capacity: usize,
}

impl TokenLedger {
    /// A ledger holding at most `capacity` unexpired tokens.
    pub fn new(capacity: usize) -> Self {
        TokenLedger { inner: std::sync::Arc::default(), capacity }
    }

    /// Marks `token_id` used until `expires_at_unix_ms`; fails with
    /// [`DropReason::TokenReplayed`] if it is marked and that mark has not expired at
    /// `unix_now_ms`, or with [`DropReason::TokenTableFull`] if the ledger is full of
    /// unexpired tokens.
    pub fn try_use(
        &self,
        token_id: u64,
        expires_at_unix_ms: u64,
        unix_now_ms: u64,
    ) -> Result<(), DropReason> {
        let mut map = self.lock();
        if map.get(&token_id).is_some_and(|&exp| exp > unix_now_ms) {
            return Err(DropReason::TokenReplayed);
        }
        // An expired mark no longer counts (and is overwritten below).
        map.remove(&token_id);
        if map.len() >= self.capacity {
            map.retain(|_, &mut exp| exp > unix_now_ms);
            if map.len() >= self.capacity {
                return Err(DropReason::TokenTableFull);
            }
        }
        map.insert(token_id, expires_at_unix_ms);
        Ok(())
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// The map, even if a thread panicked holding it (each update leaves it consistent).
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ServerConfig {
    /// Defaults: 131,072 sessions, 4,096 pending handshakes, 5 s handshake, 10 s idle
    /// timeout, 1 s keep-alive, 100 ms reliable resend, 50 ms timer granularity, random secret,
    /// no shared ledger.
    pub fn new(key: TokenKey, server_addr: SocketAddr) -> Self {
        let mut secret = [0u8; 32];
        {
            use rand::RngCore;
            rand::rng().fill_bytes(&mut secret);
        }
        ServerConfig {
            key,
            server_addr,
            max_sessions: 131_072,
            max_pending: 4_096,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(1),
            reliable_resend: Duration::from_millis(100),
            timer_granularity: Duration::from_millis(50),
            secret,
            ledger: None,
        }
    }
}

/// A configuration the server cannot run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_sessions` or `max_pending` is zero, or `max_sessions` exceeds `u32::MAX`.
    #[error("session or pending-handshake bound out of range")]
    BadBound,
    /// `idle_timeout`, `handshake_timeout` or `timer_granularity` is zero, or the keep-alive
    /// interval is not shorter than the idle timeout.
    #[error("timeouts inconsistent")]
    BadTimeouts,
}

/// What the server tells the game.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A player finished the handshake.
    Connected {
        /// The new session.
        connection: ConnectionId,
        /// The player its token named.
        player: PlayerId,
        /// The match its token named.
        match_id: MatchId,
        /// The player's address.
        addr: SocketAddr,
    },
    /// A session ended.
    Disconnected {
        /// The session.
        connection: ConnectionId,
        /// Its player.
        player: PlayerId,
        /// Why.
        reason: DisconnectReason,
    },
    /// A reliable message, delivered once and in order.
    Message {
        /// The session.
        connection: ConnectionId,
        /// The message.
        bytes: Vec<u8>,
    },
}

/// An unreliable payload that arrived, borrowing from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received<'a> {
    /// The session.
    pub connection: ConnectionId,
    /// Its player.
    pub player: PlayerId,
    /// The payload bytes.
    pub payload: &'a [u8],
}

/// A session as the game sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// Connection id.
    pub connection: ConnectionId,
    /// Player.
    pub player: PlayerId,
    /// Match.
    pub match_id: MatchId,
    /// Peer address.
    pub addr: SocketAddr,
    /// When the last valid packet arrived.
    pub last_recv: Instant,
    /// Reliable messages sent and not yet acknowledged.
    pub reliable_in_flight: usize,
}

/// Server counters (drops by reason: [`Server::drops`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ServerStats {
    /// Sessions open now.
    pub sessions: usize,
    /// Handshakes in progress now.
    pub pending: usize,
    /// Datagrams handed to `handle_datagram`.
    pub datagrams_in: u64,
    /// Datagrams written by `send` and `poll_transmit`.
    pub datagrams_out: u64,
    /// Sessions opened.
    pub sessions_opened: u64,
    /// Sessions closed for any reason.
    pub sessions_closed: u64,
    /// Handshakes denied because the table was full.
    pub denied_full: u64,
    /// Sessions closed by the idle timeout.
    pub timeouts: u64,
    /// Outgoing control packets not queued because the queue was full.
    pub transmit_dropped: u64,
    /// Incoming datagrams dropped, all reasons.
    pub dropped: u64,
}

#[derive(Debug)]
struct Pending {
    addr: SocketAddr,
    claims: TokenClaims,
    challenge: [u8; CHALLENGE_LEN],
    created: Instant,
}

/// A handshake that completed recently: kept so a lost `Accepted` can be sent again.
#[derive(Debug)]
struct Recent {
    addr: SocketAddr,
    challenge: [u8; CHALLENGE_LEN],
    created: Instant,
    conn: u64,
}

#[derive(Debug)]
struct Session {
    id: u64,
    addr: SocketAddr,
    player: PlayerId,
    match_id: MatchId,
    link: Link,
    flush_queued: bool,
}

#[derive(Debug, Clone, Copy)]
enum Control {
    Challenge { addr: SocketAddr, token_id: u64, challenge: [u8; CHALLENGE_LEN] },
    Accepted { addr: SocketAddr, token_id: u64, conn: u64 },
    Denied { addr: SocketAddr, token_id: u64, reason: DenyReason },
    Disconnect { addr: SocketAddr, conn: u64 },
    Flush { slot: u32, conn: u64 },
}

/// The server state machine. See the [module docs](super) for the call order.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    start: Instant,
    unix_at_start: Duration,
    slots: Vec<Option<Session>>,
    free: Vec<u32>,
    by_conn: HashMap<u64, u32>,
    pending: HashMap<u64, Pending>,
    recent: HashMap<u64, Recent>,
    /// Used token id -> (expiry, the connection it opened).
    used_tokens: HashMap<u64, (u64, u64)>,
    max_used_tokens: usize,
    control: VecDeque<Control>,
    max_control: usize,
    events: VecDeque<ServerEvent>,
    max_events: usize,
    drops: DropCounters,
    stats: ServerStats,
    next_sweep: Instant,
    next_token_purge: Instant,
    id_counter: u64,
}

type HmacSha256 = Hmac<Sha256>;

/// `t + d`; when that overflows, `t` plus a year (or `t` itself): a huge duration means
/// "not in this process's lifetime" rather than a panic.
pub(crate) fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).or_else(|| t.checked_add(Duration::from_secs(365 * 24 * 3600))).unwrap_or(t)
}

impl Server {
    /// A server at time `now`, whose wall clock reads `unix_now` (since the Unix epoch) at
    /// that instant; token expiry is judged on `unix_now + (later now - now)`.
    pub fn new(config: ServerConfig, now: Instant, unix_now: Duration) -> Result<Self, ConfigError> {
        if config.max_sessions == 0 || config.max_pending == 0 || u32::try_from(config.max_sessions).is_err()
        {
            return Err(ConfigError::BadBound);
        }
        if config.idle_timeout.is_zero()
            || config.handshake_timeout.is_zero()
            || config.timer_granularity.is_zero()
            || config.keepalive_interval >= config.idle_timeout
        {
            return Err(ConfigError::BadTimeouts);
        }
        // Saturating: huge bounds are allowed (the tables grow lazily) and must not overflow.
        let max_control =
            config.max_sessions.saturating_add(config.max_pending.saturating_mul(2)).saturating_add(1024);
        Ok(Server {
            max_used_tokens: config.max_sessions.saturating_mul(2).saturating_add(config.max_pending),
            max_events: config.max_sessions.saturating_mul(2).saturating_add(1024),
            max_control,
            start: now,
            unix_at_start: unix_now,
            slots: Vec::new(),
            free: Vec::new(),
            by_conn: HashMap::new(),
            pending: HashMap::new(),
            recent: HashMap::new(),
            used_tokens: HashMap::new(),
            control: VecDeque::new(),
            events: VecDeque::new(),
            drops: DropCounters::default(),
            stats: ServerStats::default(),
            next_sweep: later(now, config.timer_granularity),
            next_token_purge: now,
            id_counter: 0,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            sessions: self.by_conn.len(),
            pending: self.pending.len(),
            dropped: self.drops.total(),
            ..self.stats
        }
    }

    /// Drops by reason.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// Open sessions.
    pub fn session_count(&self) -> usize {
        self.by_conn.len()
    }

    /// One session's details.
    pub fn session(&self, connection: ConnectionId) -> Option<SessionInfo> {
        let s = self.lookup(connection.0)?;
        Some(SessionInfo {
            connection,
            player: s.player,
            match_id: s.match_id,
            addr: s.addr,
            last_recv: s.link.last_recv,
            reliable_in_flight: s.link.reliable_in_flight(),
        })
    }

    fn lookup(&self, conn: u64) -> Option<&Session> {
        let &slot = self.by_conn.get(&conn)?;
        self.slots.get(slot as usize)?.as_ref()
    }

    fn unix_ms(&self, now: Instant) -> u64 {
        let d = self.unix_at_start.saturating_add(now.saturating_duration_since(self.start));
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    fn drop_packet(&mut self, reason: DropReason) {
        self.drops.count(reason);
    }

    fn push_control(&mut self, c: Control) {
        self.try_push_control(c);
    }

    /// Queues a control datagram; false (and counted) when the queue is full.
    fn try_push_control(&mut self, c: Control) -> bool {
        if self.control.len() >= self.max_control {
            self.stats.transmit_dropped += 1;
            false
        } else {
            self.control.push_back(c);
            true
        }
    }

    fn keyed(&self, label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = match HmacSha256::new_from_slice(&self.config.secret) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(label);
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// Feeds one datagram from `from`. Returns the unreliable payload of a valid data packet
    /// (`None` for an empty one, i.e. a keep-alive or an ack); everything else (handshakes,
    /// reliable messages, disconnects) surfaces through [`poll_event`](Self::poll_event) and
    /// [`poll_transmit`](Self::poll_transmit). Invalid datagrams are counted by reason in
    /// [`drops`](Self::drops) and ignored.
    pub fn handle_datagram<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &'a [u8],
    ) -> Option<Received<'a>> {
        self.stats.datagrams_in += 1;
        let packet = match Packet::decode(data) {
            Ok(p) => p,
            Err(e) => {
                self.drop_packet(e.into());
                return None;
            }
        };
        match packet {
            Packet::ConnectRequest { token } => {
                self.on_connect_request(now, from, token);
                None
            }
            Packet::ChallengeResponse { token_id, challenge } => {
                self.on_challenge_response(now, from, token_id, challenge);
                None
            }
            Packet::Data { connection_id, seq, ack, reliable, payload } => {
                self.on_data(now, from, connection_id, seq, ack, reliable, payload)
            }
            Packet::Disconnect { connection_id } => {
                match self.by_conn.get(&connection_id).copied() {
                    None => self.drop_packet(DropReason::UnknownConnection),
                    Some(slot) => {
                        if self.slots[slot as usize].as_ref().map(|s| s.addr) != Some(from) {
                            self.drop_packet(DropReason::WrongAddress);
                        } else {
                            self.remove_session(slot, DisconnectReason::Peer);
                        }
                    }
                }
                None
            }
            Packet::Challenge { .. } | Packet::Accepted { .. } | Packet::Denied { .. } => {
                self.drop_packet(DropReason::Unexpected);
                None
            }
        }
    }

    fn on_connect_request(&mut self, now: Instant, from: SocketAddr, token: &[u8; TOKEN_LEN]) {
        let claims = match self.config.key.open(token) {
            Ok(c) => c,
            Err(_) => return self.drop_packet(DropReason::BadToken),
        };
        if claims.expires_at_unix_ms <= self.unix_ms(now) {
            return self.drop_packet(DropReason::TokenExpired);
        }
        // Tokens carry no IPv6 flow info or scope id: compare what they do carry.
        if claims.server_addr.ip() != self.config.server_addr.ip()
            || claims.server_addr.port() != self.config.server_addr.port()
        {
            return self.drop_packet(DropReason::TokenWrongServer);
        }
        // A resend: answer again (the reply is smaller than the request).
        if let Some(p) = self.pending.get(&claims.token_id) {
            if p.addr != from {
                return self.drop_packet(DropReason::TokenReplayed);
            }
            return self.push_control(Control::Challenge {
                addr: from,
                token_id: claims.token_id,
                challenge: p.challenge,
            });
        }
        if let Some(r) = self.recent.get(&claims.token_id) {
            // Only while the session it opened is alive: after it closed, this is a replay.
            if r.addr != from || self.lookup(r.conn).is_none_or(|s| s.addr != from) {
                return self.drop_packet(DropReason::TokenReplayed);
            }
            return self.push_control(Control::Accepted {
                addr: from,
                token_id: claims.token_id,
                conn: r.conn,
            });
        }
        if let Some(&(_, conn)) = self.used_tokens.get(&claims.token_id) {
            // The client that opened the session lost every `Accepted` and started over:
            // tell it again (smaller than the request). Anyone else is replaying.
            if self.lookup(conn).is_some_and(|s| s.addr == from) {
                return self.push_control(Control::Accepted { addr: from, token_id: claims.token_id, conn });
            }
            return self.drop_packet(DropReason::TokenReplayed);
        }
        if self.pending.len() >= self.config.max_pending {
            let timeout = self.config.handshake_timeout;
            self.pending.retain(|_, p| now.saturating_duration_since(p.created) < timeout);
            if self.pending.len() >= self.config.max_pending {
                return self.drop_packet(DropReason::PendingFull);
            }
        }
        self.id_counter += 1;
        let addr_bytes = from.to_string();
        let full = self.keyed(
            b"challenge",
            &[&claims.token_id.to_le_bytes(), addr_bytes.as_bytes(), &self.id_counter.to_le_bytes()],
        );
        let mut challenge = [0u8; CHALLENGE_LEN];
        challenge.copy_from_slice(&full[..CHALLENGE_LEN]);
        self.pending.insert(claims.token_id, Pending { addr: from, claims, challenge, created: now });
        self.push_control(Control::Challenge { addr: from, token_id: claims.token_id, challenge });
    }

    fn on_challenge_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        token_id: u64,
        challenge: [u8; CHALLENGE_LEN],
    ) {
        if let Some(r) = self.recent.get(&token_id) {
            let alive = self.lookup(r.conn).is_some_and(|s| s.addr == from);
            if alive && r.addr == from && r.challenge == challenge {
                return self.push_control(Control::Accepted { addr: from, token_id, conn: r.conn });
            }
            return self.drop_packet(DropReason::BadChallenge);
        }
        let Some(p) = self.pending.get(&token_id) else {
            return self.drop_packet(DropReason::BadChallenge);
        };
        let diff = p.challenge.iter().zip(challenge.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if p.addr != from || diff != 0 {
            return self.drop_packet(DropReason::BadChallenge);
        }
        if now.saturating_duration_since(p.created) >= self.config.handshake_timeout {
            self.pending.remove(&token_id);
            return self.drop_packet(DropReason::BadChallenge);
        }
        let claims = p.claims;
        if self.by_conn.len() >= self.config.max_sessions {
            self.pending.remove(&token_id);
            self.stats.denied_full += 1;
            metrics::counter!("pvp_net_handshakes_denied_total").increment(1);
            return self.push_control(Control::Denied {
                addr: from,
                token_id,
                reason: DenyReason::ServerFull,
            });
        }
        if self.used_tokens.len() >= self.max_used_tokens {
            let unix = self.unix_ms(now);
            self.used_tokens.retain(|_, &mut (exp, _)| exp > unix);
            if self.used_tokens.len() >= self.max_used_tokens {
                self.pending.remove(&token_id);
                return self.drop_packet(DropReason::TokenTableFull);
            }
        }
        if let Some(ledger) = &self.config.ledger {
            let unix = self.unix_ms(now);
            if let Err(r) = ledger.try_use(token_id, claims.expires_at_unix_ms, unix) {
                self.pending.remove(&token_id);
                return self.drop_packet(r);
            }
        }
        let conn = self.new_connection_id();
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                // max_sessions <= u32::MAX (checked in new) and slots never exceed it.
                let s = self.slots.len() as u32;
                self.slots.push(None);
                s
            }
        };
        self.slots[slot as usize] = Some(Session {
            id: conn,
            addr: from,
            player: claims.player_id,
            match_id: claims.match_id,
            link: Link::new(now),
            flush_queued: false,
        });
        self.by_conn.insert(conn, slot);
        self.used_tokens.insert(token_id, (claims.expires_at_unix_ms, conn));
        if self.pending.remove(&token_id).is_some() {
            self.remember_recent(now, token_id, from, challenge, conn);
        }
        self.stats.sessions_opened += 1;
        metrics::counter!("pvp_net_sessions_opened_total").increment(1);
        metrics::gauge!("pvp_net_sessions").increment(1.0);
        self.events.push_back(ServerEvent::Connected {
            connection: ConnectionId(conn),
            player: claims.player_id,
            match_id: claims.match_id,
            addr: from,
        });
        self.push_control(Control::Accepted { addr: from, token_id, conn });
    }

    fn remember_recent(
        &mut self,
        now: Instant,
        token_id: u64,
        addr: SocketAddr,
        challenge: [u8; CHALLENGE_LEN],
        conn: u64,
    ) {
        if self.recent.len() >= self.config.max_pending {
            let hs = self.config.handshake_timeout;
            self.recent.retain(|_, r| now.saturating_duration_since(r.created) < hs);
            if self.recent.len() >= self.config.max_pending {
                // Forgetting one only costs that client a resend of `Accepted`.
                if let Some(&k) = self.recent.keys().next() {
                    self.recent.remove(&k);
                }
            }
        }
        self.recent.insert(token_id, Recent { addr, challenge, created: now, conn });
    }

    fn new_connection_id(&mut self) -> u64 {
        loop {
            self.id_counter += 1;
            let full = self.keyed(b"connection", &[&self.id_counter.to_le_bytes()]);
            let mut b = [0u8; 8];
            b.copy_from_slice(&full[..8]);
            let id = u64::from_le_bytes(b);
            if id != 0 && !self.by_conn.contains_key(&id) {
                return id;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_data<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        conn: u64,
        seq: u32,
        ack: super::packet::AckHeader,
        reliable: ReliableFrames<'_>,
        payload: &'a [u8],
    ) -> Option<Received<'a>> {
        let Some(&slot) = self.by_conn.get(&conn) else {
            self.drop_packet(DropReason::UnknownConnection);
            return None;
        };
        let room = self.max_events.saturating_sub(self.events.len());
        let events = &mut self.events;
        let Some(s) = self.slots.get_mut(slot as usize).and_then(|s| s.as_mut()) else {
            self.drops.count(DropReason::UnknownConnection);
            return None;
        };
        if s.addr != from {
            self.drops.count(DropReason::WrongAddress);
            return None;
        }
        if let Err(r) = s.link.accept_seq(seq) {
            self.drops.count(r);
            return None;
        }
        s.link.last_recv = now;
        s.link.on_ack(&ack);
        s.link.on_reliable(&reliable, room, |bytes| {
            events.push_back(ServerEvent::Message { connection: ConnectionId(conn), bytes })
        });
        let player = s.player;
        if s.link.ack_due && !s.flush_queued {
            s.flush_queued = true;
            if !self.try_push_control(Control::Flush { slot, conn }) {
                self.unqueue_flush(slot);
            }
        }
        if payload.is_empty() {
            None
        } else {
            Some(Received { connection: ConnectionId(conn), player, payload })
        }
    }

    /// A flush could not be queued: let the next sweep or packet try again.
    fn unqueue_flush(&mut self, slot: u32) {
        if let Some(s) = self.slots.get_mut(slot as usize).and_then(|s| s.as_mut()) {
            s.flush_queued = false;
        }
    }

    fn remove_session(&mut self, slot: u32, reason: DisconnectReason) -> Option<Session> {
        let s = self.slots.get_mut(slot as usize)?.take()?;
        self.by_conn.remove(&s.id);
        self.free.push(slot);
        self.stats.sessions_closed += 1;
        if reason == DisconnectReason::TimedOut {
            self.stats.timeouts += 1;
        }
        metrics::gauge!("pvp_net_sessions").decrement(1.0);
        self.events.push_back(ServerEvent::Disconnected {
            connection: ConnectionId(s.id),
            player: s.player,
            reason,
        });
        Some(s)
    }

    /// Encodes an unreliable `payload` for a session into `buf` (give it
    /// [`MAX_PACKET_LEN`](super::MAX_PACKET_LEN) bytes); due reliable messages ride along.
    pub fn send(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        payload: &[u8],
        buf: &mut [u8],
    ) -> Result<Transmit, SendError> {
        let &slot = self.by_conn.get(&connection.0).ok_or(SendError::NotConnected)?;
        let resend = self.config.reliable_resend;
        let s = self.slots.get_mut(slot as usize).and_then(|s| s.as_mut()).ok_or(SendError::NotConnected)?;
        let len = s.link.encode_data(now, resend, connection.0, payload, buf)?;
        self.stats.datagrams_out += 1;
        Ok(Transmit { destination: s.addr, len })
    }

    /// Queues a reliable-ordered message for a session; it goes out with the next
    /// [`poll_transmit`](Self::poll_transmit) or [`send`](Self::send) and is resent until
    /// acknowledged.
    pub fn send_reliable(&mut self, connection: ConnectionId, message: &[u8]) -> Result<(), SendError> {
        let &slot = self.by_conn.get(&connection.0).ok_or(SendError::NotConnected)?;
        let s = self.slots.get_mut(slot as usize).and_then(|s| s.as_mut()).ok_or(SendError::NotConnected)?;
        s.link.queue_reliable(message)?;
        if !s.flush_queued {
            s.flush_queued = true;
            if !self.try_push_control(Control::Flush { slot, conn: connection.0 }) {
                self.unqueue_flush(slot);
            }
        }
        Ok(())
    }

    /// Closes a session: the peer is told, and a `Disconnected { reason: Local }` event
    /// follows; reliable messages not yet acknowledged (either way) are discarded. Returns
    /// false if there was no such session.
    pub fn disconnect(&mut self, connection: ConnectionId) -> bool {
        let Some(&slot) = self.by_conn.get(&connection.0) else {
            return false;
        };
        match self.remove_session(slot, DisconnectReason::Local) {
            Some(s) => {
                self.push_control(Control::Disconnect { addr: s.addr, conn: s.id });
                true
            }
            None => false,
        }
    }

    /// The next event for the game, if any.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Writes the next control datagram (handshake replies, keep-alives, acks, reliable
    /// resends, disconnects) into `buf` and says where it goes. Call until `None`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(c) = self.control.pop_front() {
            let (destination, packet) = match c {
                Control::Challenge { addr, token_id, challenge } => {
                    (addr, Packet::Challenge { token_id, challenge })
                }
                Control::Accepted { addr, token_id, conn } => {
                    (addr, Packet::Accepted { token_id, connection_id: conn })
                }
                Control::Denied { addr, token_id, reason } => (addr, Packet::Denied { token_id, reason }),
                Control::Disconnect { addr, conn } => (addr, Packet::Disconnect { connection_id: conn }),
                Control::Flush { slot, conn } => {
                    let resend = self.config.reliable_resend;
                    let Some(s) = self.slots.get_mut(slot as usize).and_then(|s| s.as_mut()) else {
                        continue;
                    };
                    if s.id != conn {
                        continue;
                    }
                    match s.link.encode_data(now, resend, conn, &[], buf) {
                        Ok(len) => {
                            let destination = s.addr;
                            self.stats.datagrams_out += 1;
                            // One packet carries a few messages: send the rest of the newly
                            // queued ones with the next call rather than at the next sweep.
                            if s.link.has_unsent_reliable() {
                                self.control.push_front(c);
                            } else {
                                s.flush_queued = false;
                            }
                            return Some(Transmit { destination, len });
                        }
                        Err(SendError::BufferTooSmall) => {
                            self.control.push_front(c);
                            return None;
                        }
                        Err(_) => {
                            self.remove_session(slot, DisconnectReason::SequenceExhausted);
                            continue;
                        }
                    }
                }
            };
            match packet.encode(buf) {
                Ok(len) => {
                    self.stats.datagrams_out += 1;
                    return Some(Transmit { destination, len });
                }
                Err(_) => {
                    self.control.push_front(c);
                    return None;
                }
            }
        }
        None
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to run next (`None`: nothing to
    /// time).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.by_conn.is_empty() && self.pending.is_empty() && self.recent.is_empty() {
            None
        } else {
            Some(self.next_sweep)
        }
    }

    /// Runs timers: forgets stale handshakes, closes idle sessions, queues keep-alives and
    /// reliable resends. Cheap to call early; the sweep runs once per `timer_granularity`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = later(now, self.config.timer_granularity);
        let hs = self.config.handshake_timeout;
        self.pending.retain(|_, p| now.saturating_duration_since(p.created) < hs);
        self.recent.retain(|_, r| now.saturating_duration_since(r.created) < hs);
        if now >= self.next_token_purge {
            self.next_token_purge = later(now, Duration::from_secs(1));
            let unix = self.unix_ms(now);
            self.used_tokens.retain(|_, &mut (exp, _)| exp > unix);
        }
        let idle = self.config.idle_timeout;
        let keepalive = self.config.keepalive_interval;
        let resend = self.config.reliable_resend;
        for i in 0..self.slots.len() {
            let Some(s) = self.slots[i].as_mut() else {
                continue;
            };
            // slot indexes stay below max_sessions <= u32::MAX.
            let slot = i as u32;
            if now.saturating_duration_since(s.link.last_recv) >= idle {
                self.remove_session(slot, DisconnectReason::TimedOut);
                continue;
            }
            let due = s.link.ack_due
                || now.saturating_duration_since(s.link.last_send) >= keepalive
                || s.link.reliable_due(now, resend);
            if due && !s.flush_queued {
                s.flush_queued = true;
                let conn = s.id;
                if !self.try_push_control(Control::Flush { slot, conn }) {
                    self.unqueue_flush(slot);
                }
            }
        }
    }
}
