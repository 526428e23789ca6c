//! The netcode client state machine (STANDARD.md, "Client State Machine").

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::layer::LayerState;
use super::packet::{
    CHALLENGE_TOKEN_BYTES, MAX_PACKET_BYTES, Packet, PacketType, decode_header, decode_packet, encode_packet,
    encode_request,
};
use super::replay::ReplayWindow;
use super::token::{ConnectToken, TokenError};
use super::{SendError, Transmit, same_addr};
use crate::proto::{DropCounters, DropReason};

/// Client settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Requests and responses are resent this often until answered (the standard's 10 Hz).
    pub handshake_send_interval: Duration,
    /// A keep-alive goes out when nothing was sent for this long.
    pub keepalive_interval: Duration,
    /// Unacknowledged reliable messages are resent after this long.
    pub reliable_resend: Duration,
    /// Whether payloads carry the [payload layer](super::layer); must match what the token's
    /// user data says (a [`SessionUserData`](super::SessionUserData) with `layered`).
    pub layered: bool,
    /// Redundant disconnect packets sent by [`Client::disconnect`].
    pub disconnect_packets: u8,
    /// A handshake step unanswered this long fails (or the token's timeout, if set and
    /// shorter).
    pub handshake_timeout: Duration,
}

impl Default for ClientConfig {
    /// 100 ms handshake resend and keep-alive, 100 ms reliable resend, layered, 10
    /// disconnect packets, 5 s handshake timeout.
    fn default() -> Self {
        ClientConfig {
            handshake_send_interval: Duration::from_millis(100),
            keepalive_interval: Duration::from_millis(100),
            reliable_resend: Duration::from_millis(100),
            layered: true,
            disconnect_packets: 10,
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

/// The client's state, with the standard's numeric codes ([`code`](Self::code)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientState {
    /// The token expired before a connection was made (-6).
    ConnectTokenExpired,
    /// The token was unusable (-5).
    InvalidConnectToken,
    /// The connected session went silent for the token's timeout (-4).
    ConnectionTimedOut,
    /// No keep-alive answered the responses (-3).
    ConnectionResponseTimedOut,
    /// No challenge answered the requests (-2).
    ConnectionRequestTimedOut,
    /// The server refused (full) (-1).
    ConnectionDenied,
    /// Disconnected, by either side (0).
    Disconnected,
    /// Sending connection requests (1).
    SendingConnectionRequest,
    /// Sending challenge responses (2).
    SendingConnectionResponse,
    /// Connected (3).
    Connected,
}

impl ClientState {
    /// The standard's state number.
    pub const fn code(self) -> i8 {
        match self {
            ClientState::ConnectTokenExpired => -6,
            ClientState::InvalidConnectToken => -5,
            ClientState::ConnectionTimedOut => -4,
            ClientState::ConnectionResponseTimedOut => -3,
            ClientState::ConnectionRequestTimedOut => -2,
            ClientState::ConnectionDenied => -1,
            ClientState::Disconnected => 0,
            ClientState::SendingConnectionRequest => 1,
            ClientState::SendingConnectionResponse => 2,
            ClientState::Connected => 3,
        }
    }

    /// True for the final states (error states and disconnected).
    pub const fn is_final(self) -> bool {
        self.code() <= 0
    }
}

/// What the client tells the game.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Connected; the server gave this slot.
    Connected {
        /// The client's slot on the server.
        client_index: u32,
        /// Slots on the server.
        max_clients: u32,
    },
    /// The session is over, or was never made; the state says why.
    Disconnected(ClientState),
    /// A reliable message (layered sessions), once and in order.
    Message(Vec<u8>),
}

/// The netcode client state machine. Same call order as the [server](super::Server):
/// `handle_datagram`, then `poll_event` and `poll_transmit`; `handle_timeout` when
/// `poll_timeout` passes (`poll_transmit` also runs the timers).
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    token: ConnectToken,
    state: ClientState,
    server_index: usize,
    /// When the current server address was first tried.
    step_started: Instant,
    /// When the whole connect attempt must end (the token's lifetime).
    connect_deadline: Instant,
    timeout: Option<Duration>,
    send_seq: u64,
    replay: ReplayWindow,
    challenge: Option<(u64, [u8; CHALLENGE_TOKEN_BYTES])>,
    last_send: Option<Instant>,
    last_recv: Instant,
    client_index: u32,
    max_clients: u32,
    layer: Option<LayerState>,
    pending_disconnects: u8,
    events: VecDeque<ClientEvent>,
    rx: Box<[u8; MAX_PACKET_BYTES]>,
    wrap: Box<[u8; MAX_PACKET_BYTES]>,
    drops: DropCounters,
}

impl Client {
    /// A client at `now` (wall clock `unix_now`) that will connect with `token`. A token that
    /// has expired already still makes a client, in state [`ClientState::ConnectTokenExpired`]
    /// (it sends nothing); a token with no or more than 32 servers, or created after it
    /// expires, is an error.
    pub fn new(
        token: ConnectToken,
        config: ClientConfig,
        now: Instant,
        unix_now: Duration,
    ) -> Result<Self, TokenError> {
        if token.server_addresses.is_empty() || token.server_addresses.len() > super::MAX_SERVER_ADDRESSES {
            return Err(TokenError::BadAddressCount);
        }
        if token.create_timestamp > token.expire_timestamp {
            return Err(TokenError::BadTimestamps);
        }
        let lifetime = Duration::from_secs(token.expire_timestamp - token.create_timestamp);
        let timeout = u64::try_from(token.timeout_seconds).ok().map(Duration::from_secs);
        let expired = token.expire_timestamp <= unix_now.as_secs();
        let mut c = Client {
            state: ClientState::SendingConnectionRequest,
            server_index: 0,
            step_started: now,
            connect_deadline: crate::proto::later(now, lifetime),
            timeout,
            send_seq: 0,
            replay: ReplayWindow::new(),
            challenge: None,
            last_send: None,
            last_recv: now,
            client_index: 0,
            max_clients: 0,
            layer: None,
            pending_disconnects: 0,
            events: VecDeque::new(),
            rx: Box::new([0; MAX_PACKET_BYTES]),
            wrap: Box::new([0; MAX_PACKET_BYTES]),
            drops: DropCounters::default(),
            token,
            config,
        };
        if expired {
            c.fail(ClientState::ConnectTokenExpired);
        }
        Ok(c)
    }

    /// The state now.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// True once connected (until disconnected).
    pub fn is_connected(&self) -> bool {
        self.state == ClientState::Connected
    }

    /// The server address being tried or connected to.
    pub fn server_addr(&self) -> SocketAddr {
        self.token.server_addresses[self.server_index.min(self.token.server_addresses.len() - 1)]
    }

    /// The slot the server gave (valid once connected).
    pub fn client_index(&self) -> u32 {
        self.client_index
    }

    /// Max clients the server reported (valid once connected).
    pub fn max_clients(&self) -> u32 {
        self.max_clients
    }

    /// Incoming datagrams dropped, by reason.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    fn fail(&mut self, state: ClientState) {
        if self.state.is_final() {
            return;
        }
        self.state = state;
        self.layer = None;
        self.events.push_back(ClientEvent::Disconnected(state));
    }

    /// Moves to the next server address, or ends in `state` when none is left.
    fn next_server(&mut self, now: Instant, state: ClientState) {
        if self.server_index + 1 < self.token.server_addresses.len() {
            self.server_index += 1;
            self.state = ClientState::SendingConnectionRequest;
            self.step_started = now;
            self.challenge = None;
            self.last_send = None;
            self.send_seq = 0;
            self.replay = ReplayWindow::new();
        } else {
            self.fail(state);
        }
    }

    fn step_timeout(&self) -> Duration {
        self.timeout.map_or(self.config.handshake_timeout, |t| t.min(self.config.handshake_timeout))
    }

    /// One datagram from `from`; returns an unreliable payload if one arrived. Packets from
    /// anyone but the server being tried are dropped and counted.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> Option<&[u8]> {
        if self.state.is_final() {
            self.drops.count(DropReason::Unexpected);
            return None;
        }
        if !same_addr(&from, &self.server_addr()) {
            self.drops.count(DropReason::WrongAddress);
            return None;
        }
        let header = match decode_header(data) {
            Ok(h) => h,
            Err(e) => {
                self.drops.count(e.into());
                return None;
            }
        };
        let accepted = matches!(
            (self.state, header.packet_type),
            (ClientState::SendingConnectionRequest, PacketType::Challenge | PacketType::Denied)
                | (ClientState::SendingConnectionResponse, PacketType::KeepAlive | PacketType::Denied)
                | (
                    ClientState::Connected,
                    PacketType::KeepAlive | PacketType::Payload | PacketType::Disconnect
                )
        );
        if !accepted {
            self.drops.count(DropReason::Unexpected);
            return None;
        }
        if header.packet_type.replay_protected() && self.replay.already_received(header.sequence) {
            self.drops.count(DropReason::Replayed);
            return None;
        }
        let n = data.len();
        self.rx[..n].copy_from_slice(data);
        let protocol_id = self.token.protocol_id;
        let end = n - super::MAC_BYTES;
        // What to do, with the payload as a range of `rx`, so no borrow of `rx` outlives it.
        enum Next {
            Nothing,
            Deliver(std::ops::Range<usize>),
            Denied,
            Disconnected,
        }
        let next = {
            let packet = match decode_packet(
                &header,
                &mut self.rx[..n],
                protocol_id,
                &self.token.server_to_client_key,
            ) {
                Ok(p) => p,
                Err(e) => {
                    self.drops.count(e.into());
                    return None;
                }
            };
            if header.packet_type.replay_protected() {
                self.replay.advance(header.sequence);
            }
            self.last_recv = now;
            match packet {
                Packet::Challenge { token_sequence, token } => {
                    self.challenge = Some((token_sequence, *token));
                    self.state = ClientState::SendingConnectionResponse;
                    self.step_started = now;
                    self.last_send = None;
                    Next::Nothing
                }
                Packet::Denied => Next::Denied,
                Packet::KeepAlive { client_index, max_clients } => {
                    if self.state == ClientState::SendingConnectionResponse {
                        self.state = ClientState::Connected;
                        self.client_index = client_index;
                        self.max_clients = max_clients;
                        self.challenge = None;
                        if self.config.layered {
                            self.layer = Some(LayerState::new(now));
                        }
                        // Confirm at once, so the server stops prefixing payloads with keep-alives.
                        self.last_send = None;
                        self.events.push_back(ClientEvent::Connected { client_index, max_clients });
                    }
                    Next::Nothing
                }
                Packet::Disconnect => Next::Disconnected,
                Packet::Payload(p) => match self.layer.as_mut() {
                    None => Next::Deliver(end - p.len()..end),
                    Some(layer) => {
                        let events = &mut self.events;
                        match layer.unwrap(now, p, |m| events.push_back(ClientEvent::Message(m))) {
                            Ok([]) => Next::Nothing,
                            Ok(rest) => Next::Deliver(end - rest.len()..end),
                            Err(r) => {
                                self.drops.count(r);
                                Next::Nothing
                            }
                        }
                    }
                },
                Packet::Response { .. } => Next::Nothing,
            }
        };
        match next {
            Next::Nothing => None,
            Next::Deliver(r) => Some(&self.rx[r]),
            Next::Denied => {
                self.next_server(now, ClientState::ConnectionDenied);
                None
            }
            Next::Disconnected => {
                self.fail(ClientState::Disconnected);
                None
            }
        }
    }

    /// Runs the timers: handshake steps, the token's lifetime, the session timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            ClientState::SendingConnectionRequest | ClientState::SendingConnectionResponse => {
                if now >= self.connect_deadline {
                    self.fail(ClientState::ConnectTokenExpired);
                } else if now.saturating_duration_since(self.step_started) >= self.step_timeout() {
                    let s = if self.state == ClientState::SendingConnectionRequest {
                        ClientState::ConnectionRequestTimedOut
                    } else {
                        ClientState::ConnectionResponseTimedOut
                    };
                    self.next_server(now, s);
                }
            }
            ClientState::Connected
                if self.timeout.is_some_and(|t| now.saturating_duration_since(self.last_recv) > t) =>
            {
                self.fail(ClientState::ConnectionTimedOut);
            }
            _ => {}
        }
    }

    /// When the timers or a resend are next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let after =
            |d: Duration| Some(self.last_send.map_or(self.step_started, |t| crate::proto::later(t, d)));
        match self.state {
            ClientState::SendingConnectionRequest | ClientState::SendingConnectionResponse => {
                after(self.config.handshake_send_interval)
            }
            ClientState::Connected => {
                // The keep-alive, or sooner an ack or reliable resend the layer owes: with a
                // keep-alive longer than the resend interval, an idle session must not ask
                // for a call every resend interval that then sends nothing.
                let keep = after(self.config.keepalive_interval);
                let layer = self.layer.as_ref().and_then(|l| l.next_due(self.config.reliable_resend));
                keep.into_iter().chain(layer).min()
            }
            _ if self.pending_disconnects > 0 => Some(self.step_started),
            _ => None,
        }
    }

    /// The next packet to send (request, response, keep-alive, ack, reliable resend, the
    /// disconnect burst), encoded into `buf` (give [`MAX_PACKET_BYTES`]); runs
    /// [`handle_timeout`](Self::handle_timeout) first.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if self.pending_disconnects > 0 {
            self.pending_disconnects -= 1;
            let seq = self.send_seq;
            self.send_seq += 1;
            let len = encode_packet(
                &Packet::Disconnect,
                seq,
                self.token.protocol_id,
                &self.token.client_to_server_key,
                buf,
            )
            .ok()?;
            return Some(Transmit { destination: self.server_addr(), len });
        }
        self.handle_timeout(now);
        let due = |last: Option<Instant>, every: Duration| {
            last.is_none_or(|t| now.saturating_duration_since(t) >= every.max(Duration::from_nanos(1)))
        };
        let dest = self.server_addr();
        let protocol_id = self.token.protocol_id;
        let len = match self.state {
            ClientState::SendingConnectionRequest => {
                if !due(self.last_send, self.config.handshake_send_interval) {
                    return None;
                }
                encode_request(&self.token, buf).ok()?
            }
            ClientState::SendingConnectionResponse => {
                if !due(self.last_send, self.config.handshake_send_interval) {
                    return None;
                }
                let (token_sequence, token) = self.challenge.as_ref()?;
                let p = Packet::Response { token_sequence: *token_sequence, token };
                let r = encode_packet(&p, self.send_seq, protocol_id, &self.token.client_to_server_key, buf)
                    .ok()?;
                self.send_seq += 1;
                r
            }
            ClientState::Connected => {
                if let Some(layer) = self.layer.as_ref() {
                    if layer.due(now, self.config.reliable_resend) {
                        return self.send(now, &[], buf).ok();
                    }
                }
                if !due(self.last_send, self.config.keepalive_interval) {
                    return None;
                }
                let p = Packet::KeepAlive { client_index: self.client_index, max_clients: self.max_clients };
                let r = encode_packet(&p, self.send_seq, protocol_id, &self.token.client_to_server_key, buf)
                    .ok()?;
                self.send_seq += 1;
                r
            }
            _ => return None,
        };
        self.last_send = Some(now);
        Some(Transmit { destination: dest, len })
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Sends an unreliable payload (with due acks and reliable messages on a layered
    /// session), encoded into `buf`. An empty payload is allowed on a layered session (it
    /// carries only acks and reliable messages).
    pub fn send(&mut self, now: Instant, payload: &[u8], buf: &mut [u8]) -> Result<Transmit, SendError> {
        if self.state != ClientState::Connected {
            return Err(SendError::NotConnected);
        }
        let body: &[u8] = match self.layer.as_mut() {
            Some(layer) => {
                let n = layer.wrap(now, self.config.reliable_resend, payload, &mut self.wrap[..])?;
                &self.wrap[..n]
            }
            None => {
                if payload.is_empty() || payload.len() > super::MAX_PAYLOAD_BYTES {
                    return Err(SendError::TooLarge);
                }
                payload
            }
        };
        let len = encode_packet(
            &Packet::Payload(body),
            self.send_seq,
            self.token.protocol_id,
            &self.token.client_to_server_key,
            buf,
        )
        .map_err(|_| SendError::BufferTooSmall)?;
        self.send_seq += 1;
        self.last_send = Some(now);
        Ok(Transmit { destination: self.server_addr(), len })
    }

    /// Queues a reliable message (layered sessions); it leaves with the next payload or from
    /// `poll_transmit`, and is resent until acknowledged.
    pub fn send_reliable(&mut self, msg: &[u8]) -> Result<(), SendError> {
        if self.state != ClientState::Connected {
            return Err(SendError::NotConnected);
        }
        self.layer.as_mut().ok_or(SendError::NoPayloadLayer)?.queue_reliable(msg)
    }

    /// Leaves: the next `poll_transmit` calls give the redundant disconnect packets (when
    /// connected), and the state becomes [`ClientState::Disconnected`].
    pub fn disconnect(&mut self, now: Instant) {
        if self.state == ClientState::Connected {
            self.pending_disconnects = self.config.disconnect_packets;
        }
        self.step_started = now;
        self.fail(ClientState::Disconnected);
    }

    /// Reliable messages waiting for an ack.
    pub fn reliable_in_flight(&self) -> usize {
        self.layer.as_ref().map_or(0, |l| l.in_flight())
    }
}
