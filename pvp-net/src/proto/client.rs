//! The client side: handshake with resends, then one session.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::link::{Link, at_least_a_tick};
use super::packet::{CHALLENGE_LEN, Packet};
use super::server::later;
use super::token::{ConnectToken, TokenError};
use super::{ConnectionId, DisconnectReason, DropCounters, DropReason, SendError, Transmit};

/// Client settings. Durations need no validation: a zero resend or keep-alive interval means
/// "again whenever `now` has moved on" (never twice at one instant), and a huge one means
/// "never".
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Handshake packets are resent this often until answered.
    pub handshake_resend: Duration,
    /// The handshake gives up after this long.
    pub handshake_timeout: Duration,
    /// The session closes when nothing is heard for this long.
    pub idle_timeout: Duration,
    /// A keep-alive goes out when nothing was sent for this long.
    pub keepalive_interval: Duration,
    /// Unacknowledged reliable messages are resent after this long.
    pub reliable_resend: Duration,
}

impl Default for ClientConfig {
    /// 100 ms handshake resend, 5 s handshake timeout, 10 s idle timeout, 1 s keep-alive,
    /// 100 ms reliable resend.
    fn default() -> Self {
        ClientConfig {
            handshake_resend: Duration::from_millis(100),
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(1),
            reliable_resend: Duration::from_millis(100),
        }
    }
}

/// Where the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Sending connect requests.
    Connecting,
    /// Answering the server's challenge.
    Challenged,
    /// Session open.
    Connected,
    /// Session over (or never opened).
    Disconnected(DisconnectReason),
}

/// What the client tells the game.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The handshake completed.
    Connected(ConnectionId),
    /// The session ended.
    Disconnected(DisconnectReason),
    /// A reliable message, once and in order.
    Message(Vec<u8>),
}

const RTT_RING: usize = 64;
/// Challenge responses sent without an answer before the client starts the handshake over.
const CHALLENGE_RESPONSES_BEFORE_RESTART: u8 = 5;

/// The client state machine. Call order as for the [server](super::Server).
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    token: ConnectToken,
    token_id: u64,
    server_addr: SocketAddr,
    state: ClientState,
    challenge: [u8; CHALLENGE_LEN],
    conn: u64,
    link: Link,
    started: Instant,
    next_handshake_send: Instant,
    events: VecDeque<ClientEvent>,
    drops: DropCounters,
    sent_at: [(u32, Option<Instant>); RTT_RING],
    newest_acked: u32,
    rtt: Option<Duration>,
    disconnect_sends_left: u8,
    challenge_sends: u8,
}

impl Client {
    /// A client that will connect with `token` to the server the token names.
    pub fn new(config: ClientConfig, token: ConnectToken, now: Instant) -> Result<Self, TokenError> {
        let server_addr = token.server_addr().ok_or(TokenError::Malformed)?;
        Ok(Client {
            config,
            token_id: token.token_id(),
            token,
            server_addr,
            state: ClientState::Connecting,
            challenge: [0; CHALLENGE_LEN],
            conn: 0,
            link: Link::new(now),
            started: now,
            next_handshake_send: now,
            events: VecDeque::new(),
            drops: DropCounters::default(),
            sent_at: [(0, None); RTT_RING],
            newest_acked: 0,
            rtt: None,
            disconnect_sends_left: 0,
            challenge_sends: 0,
        })
    }

    /// Current state.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// True once the handshake completed and until the session ends.
    pub fn is_connected(&self) -> bool {
        self.state == ClientState::Connected
    }

    /// The server this client talks to.
    pub fn server_addr(&self) -> SocketAddr {
        self.server_addr
    }

    /// The session's connection id, once connected (still given after the session ended).
    pub fn connection_id(&self) -> Option<ConnectionId> {
        (self.conn != 0).then_some(ConnectionId(self.conn))
    }

    /// Smoothed round-trip time from acked packets, once one was acked.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Drops by reason.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    fn close(&mut self, reason: DisconnectReason) {
        if !matches!(self.state, ClientState::Disconnected(_)) {
            self.state = ClientState::Disconnected(reason);
            self.events.push_back(ClientEvent::Disconnected(reason));
        }
    }

    /// Feeds one datagram. Returns the unreliable payload of a valid data packet (`None` for
    /// an empty one, i.e. a keep-alive or an ack); invalid datagrams are counted by reason in
    /// [`drops`](Self::drops) and ignored.
    pub fn handle_datagram<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &'a [u8],
    ) -> Option<&'a [u8]> {
        if from != self.server_addr {
            self.drops.count(DropReason::WrongAddress);
            return None;
        }
        let packet = match Packet::decode(data) {
            Ok(p) => p,
            Err(e) => {
                self.drops.count(e.into());
                return None;
            }
        };
        let handshaking = matches!(self.state, ClientState::Connecting | ClientState::Challenged);
        match packet {
            Packet::Challenge { token_id, challenge } if handshaking && token_id == self.token_id => {
                if self.state != ClientState::Challenged || self.challenge != challenge {
                    self.challenge_sends = 0;
                }
                self.state = ClientState::Challenged;
                self.challenge = challenge;
                self.next_handshake_send = now;
            }
            Packet::Accepted { token_id, connection_id }
                if handshaking && token_id == self.token_id && connection_id != 0 =>
            {
                self.state = ClientState::Connected;
                self.conn = connection_id;
                self.link = Link::new(now);
                self.events.push_back(ClientEvent::Connected(ConnectionId(connection_id)));
            }
            Packet::Accepted { token_id, connection_id }
                if token_id == self.token_id && connection_id == self.conn =>
            {
                // A duplicate of the accept we already took.
            }
            Packet::Denied { token_id, reason } if handshaking && token_id == self.token_id => {
                self.close(DisconnectReason::Denied(reason));
            }
            Packet::Data { connection_id, seq, ack, reliable, payload }
                if self.state == ClientState::Connected =>
            {
                if connection_id != self.conn {
                    self.drops.count(DropReason::UnknownConnection);
                    return None;
                }
                if let Err(r) = self.link.accept_seq(seq) {
                    self.drops.count(r);
                    return None;
                }
                self.link.last_recv = now;
                self.link.on_ack(&ack);
                if ack.ack > self.newest_acked {
                    self.newest_acked = ack.ack;
                    let (s, t) = self.sent_at[ack.ack as usize % RTT_RING];
                    if s == ack.ack {
                        if let Some(t) = t {
                            let sample = now.saturating_duration_since(t);
                            self.rtt = Some(match self.rtt {
                                None => sample,
                                Some(r) => (r * 7 + sample) / 8,
                            });
                        }
                    }
                }
                let events = &mut self.events;
                self.link.on_reliable(&reliable, usize::MAX, |m| events.push_back(ClientEvent::Message(m)));
                if !payload.is_empty() {
                    return Some(payload);
                }
            }
            Packet::Disconnect { connection_id }
                if self.state == ClientState::Connected && connection_id == self.conn =>
            {
                self.close(DisconnectReason::Peer);
            }
            _ => self.drops.count(DropReason::Unexpected),
        }
        None
    }

    fn note_sent(&mut self, now: Instant) {
        let sent = self.link.last_seq();
        self.sent_at[sent as usize % RTT_RING] = (sent, Some(now));
    }

    /// Encodes an unreliable payload into `buf` (give it
    /// [`MAX_PACKET_LEN`](super::MAX_PACKET_LEN) bytes); due reliable messages ride along.
    pub fn send(&mut self, now: Instant, payload: &[u8], buf: &mut [u8]) -> Result<Transmit, SendError> {
        if self.state != ClientState::Connected {
            return Err(SendError::NotConnected);
        }
        let len = self.link.encode_data(now, self.config.reliable_resend, self.conn, payload, buf)?;
        self.note_sent(now);
        Ok(Transmit { destination: self.server_addr, len })
    }

    /// Queues a reliable-ordered message; it is resent until acknowledged.
    pub fn send_reliable(&mut self, message: &[u8]) -> Result<(), SendError> {
        if self.state != ClientState::Connected {
            return Err(SendError::NotConnected);
        }
        self.link.queue_reliable(message)
    }

    /// Ends the session: a connected client tells the server (twice, in case one is lost).
    /// Reliable messages not yet acknowledged (either way) are discarded.
    pub fn disconnect(&mut self) {
        if self.state == ClientState::Connected {
            self.disconnect_sends_left = 2;
        }
        self.close(DisconnectReason::Local);
    }

    /// Writes the next datagram due (handshake, keep-alive, ack, reliable resend,
    /// disconnect) into `buf`. Call until `None`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let packet = match self.state {
            ClientState::Connecting if now >= self.next_handshake_send => {
                Packet::ConnectRequest { token: &self.token.0 }
            }
            ClientState::Challenged
                if now >= self.next_handshake_send
                    && self.challenge_sends >= CHALLENGE_RESPONSES_BEFORE_RESTART =>
            {
                // The server forgot the handshake (it expired, or the answer was lost with
                // the pending entry): start over with the token, which is still unused.
                self.state = ClientState::Connecting;
                self.challenge_sends = 0;
                Packet::ConnectRequest { token: &self.token.0 }
            }
            ClientState::Challenged if now >= self.next_handshake_send => {
                self.challenge_sends += 1;
                Packet::ChallengeResponse { token_id: self.token_id, challenge: self.challenge }
            }
            ClientState::Connected => {
                let due = self.link.ack_due
                    || now.saturating_duration_since(self.link.last_send)
                        >= at_least_a_tick(self.config.keepalive_interval)
                    || self.link.reliable_due(now, self.config.reliable_resend);
                if !due {
                    return None;
                }
                return match self.link.encode_data(now, self.config.reliable_resend, self.conn, &[], buf) {
                    Ok(len) => {
                        self.note_sent(now);
                        Some(Transmit { destination: self.server_addr, len })
                    }
                    Err(SendError::SequenceExhausted) => {
                        self.close(DisconnectReason::SequenceExhausted);
                        None
                    }
                    Err(_) => None,
                };
            }
            ClientState::Disconnected(_) if self.disconnect_sends_left > 0 => {
                Packet::Disconnect { connection_id: self.conn }
            }
            _ => return None,
        };
        let len = packet.encode(buf).ok()?;
        match self.state {
            ClientState::Disconnected(_) => self.disconnect_sends_left -= 1,
            _ => self.next_handshake_send = later(now, at_least_a_tick(self.config.handshake_resend)),
        }
        Some(Transmit { destination: self.server_addr, len })
    }

    /// When [`handle_timeout`](Self::handle_timeout) or [`poll_transmit`](Self::poll_transmit)
    /// next has work (`None`: nothing left to do).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ClientState::Connecting | ClientState::Challenged => {
                Some(self.next_handshake_send.min(later(self.started, self.config.handshake_timeout)))
            }
            ClientState::Connected => {
                let mut t = later(self.link.last_recv, self.config.idle_timeout)
                    .min(later(self.link.last_send, at_least_a_tick(self.config.keepalive_interval)));
                if let Some(r) = self.link.next_reliable_due(self.config.reliable_resend) {
                    t = t.min(r);
                }
                Some(t)
            }
            ClientState::Disconnected(_) if self.disconnect_sends_left > 0 => Some(self.started),
            ClientState::Disconnected(_) => None,
        }
    }

    /// Runs timers: handshake and idle timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            ClientState::Connecting | ClientState::Challenged => {
                if now.saturating_duration_since(self.started) >= self.config.handshake_timeout {
                    self.close(DisconnectReason::HandshakeTimedOut);
                }
            }
            ClientState::Connected => {
                if now.saturating_duration_since(self.link.last_recv) >= self.config.idle_timeout {
                    self.close(DisconnectReason::TimedOut);
                }
            }
            ClientState::Disconnected(_) => {}
        }
    }
}
