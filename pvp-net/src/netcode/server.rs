//! The netcode server: bounded encryption mappings, bounded token history, a fixed slot
//! table, one session per address and per client id.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::layer::LayerState;
use super::packet::{
    CHALLENGE_TOKEN_BYTES, ConnectRequest, Header, MAX_PACKET_BYTES, Packet, PacketType, decode_header,
    decode_packet, encode_packet, open_challenge, seal_challenge,
};
use super::replay::ReplayWindow;
use super::token::{Key, PrivateToken, SessionUserData, random_bytes};
use super::{DisconnectReason, MAC_BYTES, SendError, Transmit, USER_DATA_BYTES, same_addr};
use crate::proto::{DropCounters, DropReason};

/// An upper bound on the memory one open session takes in a [`Server`] (slot, the two
/// lookup-map entries, the replay bitmap, the payload layer's state without queued reliable
/// messages); `tests` check `size_of` against it.
pub const SESSION_BYTES_BOUND: usize = 1024;

/// Server settings. Build with [`ServerConfig::new`], then adjust fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The game's protocol id; requests for another are dropped.
    pub protocol_id: u64,
    /// The private key shared with the token issuer.
    pub private_key: Key,
    /// The addresses clients reach this server at; a token must name one of them.
    pub public_addresses: Vec<SocketAddr>,
    /// Client slots (sessions held at once); a full server answers with a denied packet.
    pub max_clients: usize,
    /// Encryption mappings for handshakes in progress; more requests are dropped and counted
    /// as [`DropReason::PendingFull`].
    pub max_pending: usize,
    /// Used tokens remembered (oldest forgotten first), so a token cannot be used from a
    /// second address.
    pub token_history: usize,
    /// A handshake not finished in this long (or the token's timeout, if shorter) is
    /// forgotten.
    pub handshake_timeout: Duration,
    /// A session that sent nothing for this long gets a keep-alive (the standard's 10 Hz:
    /// 100 ms).
    pub keepalive_interval: Duration,
    /// Unacknowledged reliable messages are resent after this long.
    pub reliable_resend: Duration,
    /// How often [`Server::handle_timeout`] sweeps the slot table.
    pub timer_granularity: Duration,
    /// Redundant disconnect packets sent when the server closes a session.
    pub disconnect_packets: u8,
    /// Added to slot numbers to make the client index keep-alives report, and
    /// `max_clients_reported` is the max clients they report (for several servers behind one
    /// port, one per worker).
    pub client_index_base: u32,
    /// Max clients reported in keep-alives; 0: `max_clients`.
    pub max_clients_reported: u32,
    /// Used tokens and open client ids shared by the servers of several workers, so that a
    /// token and a client id are single-use across all of them; `None`: this server's own.
    pub ledger: Option<SessionLedger>,
}

impl ServerConfig {
    /// Defaults: 1,024 slots, 1,024 pending, token history of 4x the slots, 5 s handshake,
    /// 100 ms keep-alive, 100 ms reliable resend, 10 ms timer sweep, 10 disconnect packets.
    pub fn new(protocol_id: u64, private_key: Key, public_address: SocketAddr) -> Self {
        ServerConfig {
            protocol_id,
            private_key,
            public_addresses: vec![public_address],
            max_clients: 1024,
            max_pending: 1024,
            token_history: 4096,
            handshake_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_millis(100),
            reliable_resend: Duration::from_millis(100),
            timer_granularity: Duration::from_millis(10),
            disconnect_packets: 10,
            client_index_base: 0,
            max_clients_reported: 0,
            ledger: None,
        }
    }
}

/// A configuration the server cannot run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_clients`, `max_pending` or `token_history` is zero, or `max_clients` exceeds
    /// `u32::MAX`.
    #[error("slot, pending or token-history bound out of range")]
    BadBound,
    /// `handshake_timeout` or `timer_granularity` is zero.
    #[error("timeouts inconsistent")]
    BadTimeouts,
    /// No public address.
    #[error("no public address")]
    NoAddress,
}

/// Used tokens and open client ids, shared by the servers of several workers.
#[derive(Debug, Clone)]
pub struct SessionLedger {
    inner: Arc<Mutex<LedgerState>>,
}

#[derive(Debug)]
struct LedgerState {
    /// Token MAC -> the address that used it.
    tokens: HashMap<[u8; MAC_BYTES], SocketAddr>,
    order: VecDeque<[u8; MAC_BYTES]>,
    capacity: usize,
    clients: HashSet<u64>,
}

impl SessionLedger {
    /// A ledger remembering at most `token_history` used tokens.
    pub fn new(token_history: usize) -> Self {
        SessionLedger {
            inner: Arc::new(Mutex::new(LedgerState {
                tokens: HashMap::new(),
                order: VecDeque::new(),
                capacity: token_history.max(1),
                clients: HashSet::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LedgerState> {
        // Every update leaves the state consistent, so a panic elsewhere cannot poison it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection request: refused with [`DropReason::ClientIdInUse`] while
    /// `client_id` has a session, or [`DropReason::TokenReplayed`] when another address used
    /// the token with `mac` (within the remembered history); otherwise records the use.
    fn admit(&self, client_id: u64, mac: [u8; MAC_BYTES], addr: SocketAddr) -> Result<(), DropReason> {
        let mut s = self.lock();
        if s.clients.contains(&client_id) {
            return Err(DropReason::ClientIdInUse);
        }
        if let Some(prev) = s.tokens.get(&mac) {
            return if same_addr(prev, &addr) { Ok(()) } else { Err(DropReason::TokenReplayed) };
        }
        if s.order.len() >= s.capacity {
            if let Some(old) = s.order.pop_front() {
                s.tokens.remove(&old);
            }
        }
        s.tokens.insert(mac, addr);
        s.order.push_back(mac);
        Ok(())
    }

    fn claim_client(&self, id: u64) -> bool {
        self.lock().clients.insert(id)
    }

    fn release_client(&self, id: u64) {
        self.lock().clients.remove(&id);
    }

    /// Client ids with an open session on any server sharing the ledger.
    pub fn open_clients(&self) -> usize {
        self.lock().clients.len()
    }
}

/// What the server tells the game.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A client finished the handshake.
    Connected {
        /// Its client id (from the token).
        client_id: u64,
        /// Its client index (slot plus the configured base).
        client_index: u32,
        /// Its address.
        addr: SocketAddr,
        /// The token's user data, as issued.
        user_data: Box<[u8; USER_DATA_BYTES]>,
        /// Whether its payloads carry the payload layer.
        layered: bool,
    },
    /// A session ended.
    Disconnected {
        /// The client.
        client_id: u64,
        /// Why.
        reason: DisconnectReason,
    },
    /// A reliable message (layered sessions), delivered once and in order.
    Message {
        /// The client.
        client_id: u64,
        /// The message.
        bytes: Vec<u8>,
    },
}

/// An unreliable payload that arrived, borrowing from the server's receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received<'a> {
    /// The client.
    pub client_id: u64,
    /// The payload bytes (without the layer header).
    pub payload: &'a [u8],
}

/// A snapshot of a server's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ServerStats {
    /// Sessions open now.
    pub sessions: usize,
    /// Encryption mappings (handshakes in progress) now.
    pub pending: usize,
    /// Datagrams handed to `handle_datagram`.
    pub datagrams_in: u64,
    /// Datagrams written by `send` and `poll_transmit`.
    pub datagrams_out: u64,
    /// Challenges sent.
    pub challenges: u64,
    /// Sessions opened.
    pub sessions_opened: u64,
    /// Sessions closed for any reason.
    pub sessions_closed: u64,
    /// Requests or responses answered with a denied packet (server full).
    pub denied_full: u64,
    /// Sessions closed by the timeout.
    pub timeouts: u64,
    /// Control packets not queued because the queue was full.
    pub transmit_dropped: u64,
    /// Incoming datagrams dropped, all reasons.
    pub dropped: u64,
}

#[derive(Debug)]
struct Pending {
    c2s: Key,
    s2c: Key,
    client_id: u64,
    challenge: [u8; CHALLENGE_TOKEN_BYTES],
    challenge_seq: u64,
    expires: Instant,
    timeout: Option<Duration>,
}

#[derive(Debug)]
struct Session {
    client_id: u64,
    addr: SocketAddr,
    c2s: Key,
    s2c: Key,
    send_seq: u64,
    replay: ReplayWindow,
    confirmed: bool,
    layer: Option<Box<LayerState>>,
}

/// A slot's timers, kept apart from the session in a dense array so that the periodic sweep
/// reads 32 bytes a slot (100,000 slots: 3.2 MB) instead of every session.
#[derive(Debug, Clone, Copy, Default)]
struct Timers {
    /// Milliseconds since the server started.
    last_recv: u64,
    last_send: u64,
    /// `u64::MAX`: no timeout.
    timeout: u64,
    open: bool,
    /// The payload layer may owe an ack or a resend (set when it gets work, cleared by the
    /// sweep once it is idle).
    layer_busy: bool,
}

/// Control packets waiting for [`Server::poll_transmit`].
#[derive(Debug)]
enum Outgoing {
    Challenge { addr: SocketAddr },
    Denied { addr: SocketAddr, key: Key },
    KeepAlive { slot: u32, client_id: u64 },
    Layer { slot: u32, client_id: u64 },
    Disconnect { addr: SocketAddr, key: Key, seq: u64 },
}

/// The global packet sequence starts in the top half so that challenge and denied packets,
/// sealed with a token's server-to-client key, never share a nonce with that session's own
/// packets, which count from zero (`IMPLEMENTERS.md` §3).
const GLOBAL_SEQUENCE_START: u64 = 1 << 63;

/// The netcode server state machine.
///
/// Call order: feed every datagram to [`handle_datagram`](Self::handle_datagram) (it returns
/// an unreliable payload, if that is what arrived); then drain [`poll_event`](Self::poll_event)
/// and [`poll_transmit`](Self::poll_transmit); call [`handle_timeout`](Self::handle_timeout)
/// when [`poll_timeout`](Self::poll_timeout) passes. Send with [`send`](Self::send) (encodes
/// straight into the caller's buffer) and [`send_reliable`](Self::send_reliable).
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    ledger: SessionLedger,
    started: Instant,
    unix_at_start: Duration,
    challenge_key: Key,
    challenge_seq: u64,
    global_seq: u64,
    pending: HashMap<SocketAddr, Pending>,
    slots: Vec<Option<Session>>,
    timers: Vec<Timers>,
    free: Vec<u32>,
    by_addr: HashMap<SocketAddr, u32>,
    by_client: HashMap<u64, u32>,
    events: VecDeque<ServerEvent>,
    outgoing: VecDeque<Outgoing>,
    next_sweep: Instant,
    rx: Box<[u8; MAX_PACKET_BYTES]>,
    wrap: Box<[u8; MAX_PACKET_BYTES]>,
    drops: Arc<DropCounters>,
    stats: ServerStats,
}

/// `t + d`, saturating at a year past `t`.
fn later(t: Instant, d: Duration) -> Instant {
    crate::proto::later(t, d)
}

fn token_timeout(seconds: i32) -> Option<Duration> {
    u64::try_from(seconds).ok().map(Duration::from_secs)
}

impl Server {
    /// A server at `now`, whose wall clock reads `unix_now` (since the Unix epoch) then;
    /// token expiry is judged on `unix_now + (later now - now)`.
    pub fn new(config: ServerConfig, now: Instant, unix_now: Duration) -> Result<Self, ConfigError> {
        if config.max_clients == 0
            || config.max_pending == 0
            || config.token_history == 0
            || u32::try_from(config.max_clients).is_err()
        {
            return Err(ConfigError::BadBound);
        }
        if config.handshake_timeout.is_zero() || config.timer_granularity.is_zero() {
            return Err(ConfigError::BadTimeouts);
        }
        if config.public_addresses.is_empty() {
            return Err(ConfigError::NoAddress);
        }
        Ok(Self::new_clamped(config, now, unix_now))
    }

    /// [`new`](Self::new) for a config already validated: out-of-range bounds are raised to
    /// their minimum instead of refused.
    pub(crate) fn new_clamped(mut config: ServerConfig, now: Instant, unix_now: Duration) -> Self {
        config.max_clients = config.max_clients.clamp(1, u32::MAX as usize);
        config.max_pending = config.max_pending.max(1);
        config.token_history = config.token_history.max(1);
        config.handshake_timeout = config.handshake_timeout.max(Duration::from_millis(1));
        config.timer_granularity = config.timer_granularity.max(Duration::from_micros(100));
        let ledger = config.ledger.clone().unwrap_or_else(|| SessionLedger::new(config.token_history));
        let n = config.max_clients;
        Server {
            ledger,
            started: now,
            unix_at_start: unix_now,
            challenge_key: Key::from_bytes(random_bytes()),
            challenge_seq: 0,
            global_seq: GLOBAL_SEQUENCE_START,
            pending: HashMap::new(),
            slots: (0..n).map(|_| None).collect(),
            timers: vec![Timers::default(); n],
            // n fits u32 (checked above); pop() hands out slot 0 first.
            free: (0..n as u32).rev().collect(),
            by_addr: HashMap::new(),
            by_client: HashMap::new(),
            events: VecDeque::new(),
            outgoing: VecDeque::new(),
            next_sweep: now,
            rx: Box::new([0; MAX_PACKET_BYTES]),
            wrap: Box::new([0; MAX_PACKET_BYTES]),
            drops: Arc::new(DropCounters::default()),
            stats: ServerStats::default(),
            config,
        }
    }

    /// Counts drops into `counters` from now on (several servers can share one).
    pub fn set_drop_counters(&mut self, counters: Arc<DropCounters>) {
        self.drops = counters;
    }

    /// The settings.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Drop counters by reason (shareable with a metrics thread).
    pub fn drops(&self) -> &Arc<DropCounters> {
        &self.drops
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            sessions: self.by_client.len(),
            pending: self.pending.len(),
            dropped: self.drops.total(),
            ..self.stats
        }
    }

    /// Open sessions.
    pub fn session_count(&self) -> usize {
        self.by_client.len()
    }

    /// Whether `client_id` has an open session here.
    pub fn is_connected(&self, client_id: u64) -> bool {
        self.by_client.contains_key(&client_id)
    }

    /// The address of `client_id`'s session.
    pub fn client_addr(&self, client_id: u64) -> Option<SocketAddr> {
        self.session(client_id).map(|s| s.addr)
    }

    /// Ids of the open sessions.
    pub fn clients(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_client.keys().copied()
    }

    fn session(&self, client_id: u64) -> Option<&Session> {
        let slot = *self.by_client.get(&client_id)?;
        self.slots.get(slot as usize)?.as_ref()
    }

    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }

    fn unix_secs(&self, now: Instant) -> u64 {
        (self.unix_at_start + now.saturating_duration_since(self.started)).as_secs()
    }

    fn drop_in(&self, r: DropReason) -> Option<Received<'_>> {
        self.drops.count(r);
        None
    }

    fn queue(&mut self, o: Outgoing) {
        // Bounded by the tables that feed it, with room for one round of disconnects.
        let cap = 4 * (self.config.max_clients + self.config.max_pending)
            + self.config.max_clients * usize::from(self.config.disconnect_packets);
        if self.outgoing.len() >= cap {
            self.stats.transmit_dropped += 1;
            return;
        }
        self.outgoing.push_back(o);
    }

    /// One datagram from `from`. Returns the unreliable payload if one arrived; everything
    /// else (handshake steps, reliable messages, disconnects) shows up as events and
    /// transmits. Bad input is dropped and counted by reason in [`drops`](Self::drops).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> Option<Received<'_>> {
        self.stats.datagrams_in += 1;
        let Some(&prefix) = data.first() else {
            return self.drop_in(DropReason::Truncated);
        };
        if prefix == 0 {
            self.on_request(now, from, data);
            return None;
        }
        let header = match decode_header(data) {
            Ok(h) => h,
            Err(e) => return self.drop_in(e.into()),
        };
        if let Some(&slot) = self.by_addr.get(&from) {
            return self.on_session_packet(now, slot, &header, data);
        }
        if self.pending.contains_key(&from) {
            self.on_response(now, from, &header, data);
            return None;
        }
        self.drop_in(DropReason::UnknownConnection)
    }

    fn on_request(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let req = match ConnectRequest::decode(data, self.config.protocol_id) {
            Ok(r) => r,
            Err(e) => {
                self.drops.count(e.into());
                return;
            }
        };
        if req.expire_timestamp <= self.unix_secs(now) {
            self.drops.count(DropReason::TokenExpired);
            return;
        }
        let token = match PrivateToken::open(
            req.private_data,
            self.config.protocol_id,
            req.expire_timestamp,
            req.nonce,
            &self.config.private_key,
        ) {
            Ok(t) => t,
            Err(_) => {
                self.drops.count(DropReason::BadToken);
                return;
            }
        };
        let me = &self.config.public_addresses;
        if !token.server_addresses.iter().any(|a| me.iter().any(|m| same_addr(a, m))) {
            self.drops.count(DropReason::TokenWrongServer);
            return;
        }
        if self.by_addr.contains_key(&from) {
            self.drops.count(DropReason::AddressInUse);
            return;
        }
        let mut mac = [0u8; MAC_BYTES];
        mac.copy_from_slice(&req.private_data[super::PRIVATE_TOKEN_BYTES - MAC_BYTES..]);
        // One lock for both checks; the ledger holds this server's open clients too.
        if let Err(reason) = self.ledger.admit(token.client_id, mac, from) {
            self.drops.count(reason);
            return;
        }
        if self.free.is_empty() {
            self.stats.denied_full += 1;
            self.queue(Outgoing::Denied { addr: from, key: token.server_to_client_key });
            return;
        }
        if !self.pending.contains_key(&from) && self.pending.len() >= self.config.max_pending {
            self.sweep_pending(now);
            if self.pending.len() >= self.config.max_pending {
                self.drops.count(DropReason::PendingFull);
                return;
            }
        }
        let timeout = token_timeout(token.timeout_seconds);
        let handshake =
            timeout.map_or(self.config.handshake_timeout, |t| t.min(self.config.handshake_timeout));
        let challenge_seq = self.challenge_seq;
        self.challenge_seq += 1;
        let challenge = seal_challenge(token.client_id, &token.user_data, challenge_seq, &self.challenge_key);
        self.pending.insert(
            from,
            Pending {
                c2s: token.client_to_server_key,
                s2c: token.server_to_client_key,
                client_id: token.client_id,
                challenge,
                challenge_seq,
                expires: later(now, handshake),
                timeout,
            },
        );
        self.stats.challenges += 1;
        self.queue(Outgoing::Challenge { addr: from });
    }

    fn on_response(&mut self, now: Instant, from: SocketAddr, header: &Header, data: &[u8]) {
        if header.packet_type != PacketType::Response {
            self.drops.count(DropReason::Unexpected);
            return;
        }
        let Some(p) = self.pending.get(&from) else { return };
        let n = data.len();
        self.rx[..n].copy_from_slice(data);
        let (token_sequence, token) =
            match decode_packet(header, &mut self.rx[..n], self.config.protocol_id, &p.c2s) {
                Ok(Packet::Response { token_sequence, token }) => (token_sequence, *token),
                Ok(_) => {
                    self.drops.count(DropReason::Unexpected);
                    return;
                }
                Err(e) => {
                    self.drops.count(e.into());
                    return;
                }
            };
        let Some((client_id, user_data)) = open_challenge(&token, token_sequence, &self.challenge_key) else {
            self.drops.count(DropReason::BadChallenge);
            return;
        };
        if client_id != p.client_id {
            self.drops.count(DropReason::BadChallenge);
            return;
        }
        if self.by_client.contains_key(&client_id) {
            self.drops.count(DropReason::ClientIdInUse);
            return;
        }
        let Some(slot) = self.free.last().copied() else {
            self.stats.denied_full += 1;
            let key = p.s2c.clone();
            self.queue(Outgoing::Denied { addr: from, key });
            return;
        };
        if !self.ledger.claim_client(client_id) {
            self.drops.count(DropReason::ClientIdInUse);
            return;
        }
        self.free.pop();
        let Some(p) = self.pending.remove(&from) else { return };
        let layered = SessionUserData::decode(&user_data).is_some_and(|u| u.layered);
        self.slots[slot as usize] = Some(Session {
            client_id,
            addr: from,
            c2s: p.c2s,
            s2c: p.s2c,
            send_seq: 0,
            replay: ReplayWindow::new(),
            confirmed: false,
            layer: layered.then(|| Box::new(LayerState::new(now))),
        });
        let t = self.ms(now);
        self.timers[slot as usize] = Timers {
            last_recv: t,
            last_send: t,
            timeout: p.timeout.map_or(u64::MAX, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            open: true,
            layer_busy: false,
        };
        self.by_addr.insert(from, slot);
        self.by_client.insert(client_id, slot);
        self.stats.sessions_opened += 1;
        metrics::counter!("pvp_net_netcode_sessions_opened_total").increment(1);
        self.events.push_back(ServerEvent::Connected {
            client_id,
            client_index: self.config.client_index_base.saturating_add(slot),
            addr: from,
            user_data: Box::new(user_data),
            layered,
        });
        self.queue(Outgoing::KeepAlive { slot, client_id });
    }

    fn on_session_packet(
        &mut self,
        now: Instant,
        slot: u32,
        header: &Header,
        data: &[u8],
    ) -> Option<Received<'_>> {
        let now_ms = self.ms(now);
        let protocol_id = self.config.protocol_id;
        let resend = self.config.reliable_resend;
        let Some(s) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            return self.drop_in(DropReason::UnknownConnection);
        };
        if !header.packet_type.replay_protected() {
            // Responses resent before the keep-alive arrived, or packets no client sends.
            return self.drop_in(DropReason::Unexpected);
        }
        if s.replay.already_received(header.sequence) {
            return self.drop_in(DropReason::Replayed);
        }
        let n = data.len();
        self.rx[..n].copy_from_slice(data);
        let timers = &mut self.timers[slot as usize];
        // The payload, as a range of `rx`, so no borrow of `rx` outlives this block.
        let (client_id, range) = {
            let packet = match decode_packet(header, &mut self.rx[..n], protocol_id, &s.c2s) {
                Ok(p) => p,
                Err(e) => {
                    self.drops.count(e.into());
                    return None;
                }
            };
            s.replay.advance(header.sequence);
            timers.last_recv = now_ms;
            let client_id = s.client_id;
            let range = match packet {
                Packet::KeepAlive { .. } => {
                    s.confirmed = true;
                    None
                }
                Packet::Disconnect => Some(None),
                Packet::Payload(p) => {
                    s.confirmed = true;
                    let end = n - MAC_BYTES;
                    match s.layer.as_mut() {
                        None => Some(Some(end - p.len()..end)),
                        Some(layer) => {
                            let events = &mut self.events;
                            let deliver = |bytes| events.push_back(ServerEvent::Message { client_id, bytes });
                            match layer.unwrap(now, p, deliver) {
                                Ok(rest) => {
                                    if layer.due(now, resend) {
                                        self.outgoing.push_back(Outgoing::Layer { slot, client_id });
                                    }
                                    timers.layer_busy |= !layer.idle();
                                    (!rest.is_empty()).then(|| Some(end - rest.len()..end))
                                }
                                Err(r) => {
                                    self.drops.count(r);
                                    None
                                }
                            }
                        }
                    }
                }
                _ => {
                    self.drops.count(DropReason::Unexpected);
                    None
                }
            };
            (client_id, range)
        };
        match range {
            Some(Some(r)) => Some(Received { client_id, payload: &self.rx[r] }),
            Some(None) => {
                self.close(slot, DisconnectReason::Peer, false);
                None
            }
            None => None,
        }
    }

    /// Closes `slot`: event, maps, ledger, and (if `notify`) redundant disconnect packets.
    fn close(&mut self, slot: u32, reason: DisconnectReason, notify: bool) {
        let Some(mut s) = self.slots.get_mut(slot as usize).and_then(Option::take) else { return };
        self.timers[slot as usize] = Timers::default();
        self.by_addr.remove(&s.addr);
        self.by_client.remove(&s.client_id);
        self.ledger.release_client(s.client_id);
        self.free.push(slot);
        if notify {
            for _ in 0..self.config.disconnect_packets {
                let seq = s.send_seq;
                s.send_seq += 1;
                self.queue(Outgoing::Disconnect { addr: s.addr, key: s.s2c.clone(), seq });
            }
        }
        self.stats.sessions_closed += 1;
        if reason == DisconnectReason::TimedOut {
            self.stats.timeouts += 1;
        }
        metrics::counter!("pvp_net_netcode_sessions_closed_total", "reason" => reason.as_str()).increment(1);
        self.events.push_back(ServerEvent::Disconnected { client_id: s.client_id, reason });
    }

    /// Closes `client_id`'s session (with redundant disconnect packets); false if there is
    /// none.
    pub fn disconnect(&mut self, client_id: u64) -> bool {
        match self.by_client.get(&client_id) {
            Some(&slot) => {
                self.close(slot, DisconnectReason::Local, true);
                true
            }
            None => false,
        }
    }

    /// Closes every session (reason [`DisconnectReason::ShuttingDown`]) and forgets every
    /// handshake.
    pub fn disconnect_all(&mut self) {
        let slots: Vec<u32> = self.by_client.values().copied().collect();
        for slot in slots {
            self.close(slot, DisconnectReason::ShuttingDown, true);
        }
        self.pending.clear();
    }

    /// Sends an unreliable payload to `client_id`, encoded into `buf` (give
    /// [`MAX_PACKET_BYTES`]). On a layered session it carries due acks and reliable messages
    /// too.
    pub fn send(
        &mut self,
        now: Instant,
        client_id: u64,
        payload: &[u8],
        buf: &mut [u8],
    ) -> Result<Transmit, SendError> {
        let slot = *self.by_client.get(&client_id).ok_or(SendError::NotConnected)?;
        self.send_slot(now, slot, payload, buf)
    }

    fn send_slot(
        &mut self,
        now: Instant,
        slot: u32,
        payload: &[u8],
        buf: &mut [u8],
    ) -> Result<Transmit, SendError> {
        let t = self.ms(now);
        let protocol_id = self.config.protocol_id;
        let resend = self.config.reliable_resend;
        let s = self.slots.get_mut(slot as usize).and_then(Option::as_mut).ok_or(SendError::NotConnected)?;
        let body: &[u8] = match s.layer.as_mut() {
            Some(layer) => {
                let n = layer.wrap(now, resend, payload, &mut self.wrap[..])?;
                &self.wrap[..n]
            }
            None => {
                if payload.is_empty() || payload.len() > super::MAX_PAYLOAD_BYTES {
                    return Err(SendError::TooLarge);
                }
                payload
            }
        };
        let len = encode_packet(&Packet::Payload(body), s.send_seq, protocol_id, &s.s2c, buf)
            .map_err(|_| SendError::BufferTooSmall)?;
        s.send_seq += 1;
        let (confirmed, client_id, addr) = (s.confirmed, s.client_id, s.addr);
        let timers = &mut self.timers[slot as usize];
        timers.last_send = t;
        if s.layer.as_ref().is_some_and(|l| !l.idle()) {
            timers.layer_busy = true;
        }
        if !confirmed {
            self.queue(Outgoing::KeepAlive { slot, client_id });
        }
        self.stats.datagrams_out += 1;
        Ok(Transmit { destination: addr, len })
    }

    /// Queues a reliable message for `client_id` (layered sessions only); it leaves with the
    /// next payload or keep-alive round and is resent until acknowledged.
    pub fn send_reliable(&mut self, client_id: u64, msg: &[u8]) -> Result<(), SendError> {
        let slot = *self.by_client.get(&client_id).ok_or(SendError::NotConnected)?;
        let s = self.slots.get_mut(slot as usize).and_then(Option::as_mut).ok_or(SendError::NotConnected)?;
        let layer = s.layer.as_mut().ok_or(SendError::NoPayloadLayer)?;
        layer.queue_reliable(msg)?;
        self.timers[slot as usize].layer_busy = true;
        self.outgoing.push_back(Outgoing::Layer { slot, client_id });
        Ok(())
    }

    /// The next event for the game.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// The next control packet (challenge, denied, keep-alive, ack or reliable resend,
    /// disconnect), encoded into `buf` (give [`MAX_PACKET_BYTES`]).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let protocol_id = self.config.protocol_id;
        while let Some(o) = self.outgoing.pop_front() {
            let sent = match o {
                Outgoing::Challenge { addr } => {
                    let Some(p) = self.pending.get(&addr) else { continue };
                    let packet = Packet::Challenge { token_sequence: p.challenge_seq, token: &p.challenge };
                    let r = encode_packet(&packet, self.global_seq, protocol_id, &p.s2c, buf);
                    self.global_seq += 1;
                    r.ok().map(|len| Transmit { destination: addr, len })
                }
                Outgoing::Denied { addr, key } => {
                    let r = encode_packet(&Packet::Denied, self.global_seq, protocol_id, &key, buf);
                    self.global_seq += 1;
                    r.ok().map(|len| Transmit { destination: addr, len })
                }
                Outgoing::Disconnect { addr, key, seq } => {
                    encode_packet(&Packet::Disconnect, seq, protocol_id, &key, buf)
                        .ok()
                        .map(|len| Transmit { destination: addr, len })
                }
                Outgoing::KeepAlive { slot, client_id } => {
                    let index = self.config.client_index_base.saturating_add(slot);
                    let max = match self.config.max_clients_reported {
                        0 => self.config.max_clients as u32,
                        m => m,
                    };
                    let t = self.ms(now);
                    let Some(s) = self.slot_of(slot, client_id) else { continue };
                    let r = encode_packet(
                        &Packet::KeepAlive { client_index: index, max_clients: max },
                        s.send_seq,
                        protocol_id,
                        &s.s2c,
                        buf,
                    );
                    s.send_seq += 1;
                    let addr = s.addr;
                    self.timers[slot as usize].last_send = t;
                    r.ok().map(|len| Transmit { destination: addr, len })
                }
                Outgoing::Layer { slot, client_id } => {
                    let resend = self.config.reliable_resend;
                    let due = self
                        .slot_of(slot, client_id)
                        .and_then(|s| s.layer.as_ref())
                        .is_some_and(|l| l.due(now, resend));
                    if !due {
                        continue;
                    }
                    self.send_slot(now, slot, &[], buf).ok()
                }
            };
            if let Some(t) = sent {
                self.stats.datagrams_out += 1;
                return Some(t);
            }
        }
        None
    }

    /// True while control packets wait for [`poll_transmit`](Self::poll_transmit).
    pub fn has_queued_transmits(&self) -> bool {
        !self.outgoing.is_empty()
    }

    fn slot_of(&mut self, slot: u32, client_id: u64) -> Option<&mut Session> {
        self.slots.get_mut(slot as usize)?.as_mut().filter(|s| s.client_id == client_id)
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_sweep
    }

    /// Timers: sessions silent past their token's timeout close (with disconnect packets),
    /// idle sessions get keep-alives, unacknowledged reliable messages are resent, expired
    /// handshakes are forgotten. Sweeps at most once per `timer_granularity`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = later(now, self.config.timer_granularity);
        self.sweep_pending(now);
        let keepalive = u64::try_from(self.config.keepalive_interval.as_millis()).unwrap_or(u64::MAX);
        let resend = self.config.reliable_resend;
        let t = self.ms(now);
        let mut closing = Vec::new();
        for (i, tm) in self.timers.iter_mut().enumerate() {
            if !tm.open {
                continue;
            }
            // i < max_clients fits u32.
            let slot = i as u32;
            if t.saturating_sub(tm.last_recv) > tm.timeout {
                closing.push(slot);
                continue;
            }
            let mut layer_due = false;
            if tm.layer_busy {
                // Only busy slots are looked up: the sweep stays in the dense array otherwise.
                match self.slots[i].as_ref().and_then(|s| s.layer.as_ref()) {
                    Some(l) if l.due(now, resend) => layer_due = true,
                    Some(l) if l.idle() => tm.layer_busy = false,
                    Some(_) => {}
                    None => tm.layer_busy = false,
                }
            }
            if !layer_due && t.saturating_sub(tm.last_send) < keepalive {
                continue;
            }
            // Only now is the session itself read, for its id.
            let Some(client_id) = self.slots[i].as_ref().map(|s| s.client_id) else { continue };
            if layer_due {
                self.outgoing.push_back(Outgoing::Layer { slot, client_id });
            } else {
                self.outgoing.push_back(Outgoing::KeepAlive { slot, client_id });
            }
        }
        for slot in closing {
            self.close(slot, DisconnectReason::TimedOut, true);
        }
    }

    fn sweep_pending(&mut self, now: Instant) {
        self.pending.retain(|_, p| p.expires > now);
    }

    /// Reliable messages waiting for an ack on `client_id`'s session (0 for plain sessions).
    pub fn reliable_in_flight(&self, client_id: u64) -> usize {
        self.session(client_id).and_then(|s| s.layer.as_ref()).map_or(0, |l| l.in_flight())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_fits_its_memory_bound() {
        // Slot + the by_addr and by_client entries (key, value, control byte, ~1/0.875 load).
        let slot = std::mem::size_of::<Option<Session>>();
        let maps = (std::mem::size_of::<(SocketAddr, u32)>() + std::mem::size_of::<(u64, u32)>() + 2) * 8 / 7;
        let layer = std::mem::size_of::<LayerState>();
        let total = slot + maps + layer + std::mem::size_of::<Timers>() + std::mem::size_of::<u32>();
        assert!(total <= SESSION_BYTES_BOUND, "session takes {total} bytes");
    }
}
