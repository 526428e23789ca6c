//! `GameClient`: the netcode client on a std `UdpSocket`.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use thiserror::Error;

use crate::netcode::{
    Client, ClientConfig, ClientEvent, ClientState, ConnectToken, MAX_PACKET_BYTES, SendError, TokenError,
};

/// Why a `GameClient` call failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GameClientError {
    /// The token is unusable.
    #[error("connect token: {0}")]
    Token(#[from] TokenError),
    /// The socket failed.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    /// The send was refused.
    #[error("send: {0}")]
    Send(#[from] SendError),
    /// The connection attempt ended in this state (denied, timed out, token expired).
    #[error("connection failed: {0:?}")]
    Failed(ClientState),
    /// `connect_blocking` ran out of time while still connecting.
    #[error("connection still in progress at the deadline")]
    Timeout,
}

/// A netcode client on its own UDP socket: the sans-IO [`Client`] plus a small driver.
/// Call [`update`](Self::update) (non-blocking) or one of the waiting calls regularly: they
/// read the socket, run the timers and send what is due.
///
/// A driver that runs many clients on one thread registers each client's socket with its
/// poller (the client is [`AsRawFd`]) and calls [`update`](Self::update) or
/// [`recv_payload`](Self::recv_payload) when the socket is readable or
/// [`next_wakeup`](Self::next_wakeup) is due.
///
/// # Link delay
///
/// [`set_link_delay`](Self::set_link_delay) holds every datagram this client sends and every
/// one it receives for a fixed time before it leaves or is handled, so that a bot on
/// loopback experiences the latency of a player far away: the delay is on the path, and the
/// round trips both ends measure include it. It is user space because kernels without the
/// `netem` qdisc (and unprivileged containers) cannot delay traffic themselves.
#[derive(Debug)]
pub struct GameClient {
    socket: UdpSocket,
    client: Client,
    tx: Box<[u8; MAX_PACKET_BYTES]>,
    rx: Box<[u8; RX_BYTES]>,
    delay: Duration,
    /// Datagrams received, handled when due (arrival + delay), in arrival order.
    inbound: VecDeque<Held>,
    /// Datagrams sent, put on the socket when due (send + delay), in send order.
    outbound: VecDeque<Held>,
    /// Buffers of held datagrams that left, reused so a steady state allocates nothing.
    spare: Vec<Vec<u8>>,
}

/// Receive buffer: larger than any netcode packet, so a longer datagram is seen whole and
/// dropped by the protocol rather than cut.
const RX_BYTES: usize = 2048;

/// A datagram held by the link delay.
#[derive(Debug)]
struct Held {
    due: Instant,
    addr: SocketAddr,
    bytes: Vec<u8>,
}

/// Held datagrams per direction at most; past it the oldest would have to wait behind a
/// burst no real link carries, so new ones are dropped (counted as lost by the protocol).
const MAX_HELD: usize = 256;

impl GameClient {
    /// A client on a fresh socket (an ephemeral port on the wildcard address of the first
    /// server's family) that will connect with `token`.
    pub fn new(token: ConnectToken, config: ClientConfig) -> Result<Self, GameClientError> {
        let bind: SocketAddr = match token.server_addresses.first() {
            Some(SocketAddr::V6(_)) => "[::]:0".parse().map_err(|_| TokenError::BadAddressType)?,
            _ => "0.0.0.0:0".parse().map_err(|_| TokenError::BadAddressType)?,
        };
        Self::with_socket(token, config, UdpSocket::bind(bind)?)
    }

    /// A client on `socket` (for example one bound to a chosen local address).
    pub fn with_socket(
        token: ConnectToken,
        config: ClientConfig,
        socket: UdpSocket,
    ) -> Result<Self, GameClientError> {
        socket.set_nonblocking(true)?;
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let client = Client::new(token, config, Instant::now(), unix)?;
        Ok(GameClient {
            socket,
            client,
            tx: Box::new([0; MAX_PACKET_BYTES]),
            rx: Box::new([0; RX_BYTES]),
            delay: Duration::ZERO,
            inbound: VecDeque::new(),
            outbound: VecDeque::new(),
            spare: Vec::new(),
        })
    }

    /// Holds every datagram for `one_way` in each direction (see [Link delay](Self#link-delay));
    /// the round trip grows by twice `one_way`. Zero (the default) turns it off; datagrams
    /// already held keep their due times.
    pub fn set_link_delay(&mut self, one_way: Duration) {
        self.delay = one_way;
    }

    /// The one-way link delay in force.
    pub fn link_delay(&self) -> Duration {
        self.delay
    }

    /// When this client next needs a call even if its socket stays quiet: the protocol's next
    /// timer (resend, keep-alive, timeout) or the next held datagram's due time.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let held = [self.inbound.front(), self.outbound.front()].into_iter().flatten().map(|h| h.due).min();
        match (self.client.poll_timeout(), held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Puts held datagrams that are due on the socket.
    fn send_due(&mut self, now: Instant) -> io::Result<()> {
        while self.outbound.front().is_some_and(|h| h.due <= now) {
            let Some(h) = self.outbound.pop_front() else { break };
            let r = send_ignoring_refused(&self.socket, &h.bytes, h.addr);
            self.spare.push(h.bytes);
            r?;
        }
        Ok(())
    }

    /// Sends one datagram now, or holds it for the link delay.
    fn transmit(&mut self, now: Instant, len: usize, to: SocketAddr) -> io::Result<()> {
        if self.delay.is_zero() && self.outbound.is_empty() {
            return send_ignoring_refused(&self.socket, &self.tx[..len], to);
        }
        let mut b = self.spare.pop().unwrap_or_default();
        b.clear();
        b.extend_from_slice(&self.tx[..len]);
        if self.outbound.len() < MAX_HELD {
            self.outbound.push_back(Held { due: now + self.delay, addr: to, bytes: b });
        }
        self.send_due(now)
    }

    /// The sans-IO client, for state, counters and events.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The state.
    pub fn state(&self) -> ClientState {
        self.client.state()
    }

    /// True while connected.
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The next event (connected, disconnected, reliable message).
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.client.poll_event()
    }

    fn flush(&mut self, now: Instant) -> io::Result<()> {
        while let Some(t) = self.client.poll_transmit(now, &mut self.tx[..]) {
            self.transmit(now, t.len, t.destination)?;
        }
        self.send_due(now)
    }

    /// Reads every waiting datagram, runs the timers and sends what is due; payloads that
    /// arrive are dropped (use [`recv_payload`](Self::recv_payload) to read them).
    pub fn update(&mut self) -> io::Result<()> {
        let mut sink = [0u8; 0];
        while self.read_one(&mut sink)?.is_some() {}
        self.flush(Instant::now())
    }

    /// Handles the next held datagram that is due; `None` when none is.
    fn handle_due(&mut self, now: Instant, buf: &mut [u8]) -> Option<Option<usize>> {
        if self.inbound.front().is_none_or(|h| h.due > now) {
            return None;
        }
        let h = self.inbound.pop_front()?;
        let got = self.client.handle_datagram(now, h.addr, &h.bytes).map(|p| {
            let k = p.len().min(buf.len());
            buf[..k].copy_from_slice(&p[..k]);
            k
        });
        self.spare.push(h.bytes);
        Some(got)
    }

    /// Handles one datagram if one is due or waiting (datagrams read while a link delay is set
    /// are held, not handled); returns `Some(Some(n))` for a payload copied into `buf` (cut
    /// to its length), `Some(None)` for anything else, `None` when nothing is due or waits.
    fn read_one(&mut self, buf: &mut [u8]) -> io::Result<Option<Option<usize>>> {
        if let Some(got) = self.handle_due(Instant::now(), buf) {
            return Ok(Some(got));
        }
        match self.socket.recv_from(&mut self.rx[..]) {
            Ok((n, from)) => {
                let now = Instant::now();
                if !self.delay.is_zero() {
                    if self.inbound.len() < MAX_HELD {
                        let mut b = self.spare.pop().unwrap_or_default();
                        b.clear();
                        b.extend_from_slice(&self.rx[..n]);
                        self.inbound.push_back(Held { due: now + self.delay, addr: from, bytes: b });
                    }
                    return Ok(Some(None));
                }
                let got = self.client.handle_datagram(now, from, &self.rx[..n]).map(|p| {
                    let k = p.len().min(buf.len());
                    buf[..k].copy_from_slice(&p[..k]);
                    k
                });
                Ok(Some(got))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            // A signal arrived mid-call: nothing was read; the caller's loop tries again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Some(None)),
            // A previous send drew an ICMP port-unreachable: the server is not there (yet).
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(Some(None)),
            Err(e) => Err(e),
        }
    }

    /// The next payload already waiting (or, with a link delay, due), copied into `buf`;
    /// `None` when none is. Runs the timers and sends what is due.
    pub fn recv_payload(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let r = loop {
            match self.read_one(buf)? {
                Some(Some(n)) => break Some(n),
                Some(None) => continue,
                None => break None,
            }
        };
        self.flush(Instant::now())?;
        Ok(r)
    }

    /// Like [`recv_payload`](Self::recv_payload), without reading the socket: handles the
    /// held datagrams that are due, runs the timers and sends what is due. For a driver that
    /// reads the socket when its poller says it is readable and calls this at
    /// [`next_wakeup`](Self::next_wakeup), so a timer costs no receive call.
    pub fn recv_due_payload(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let now = Instant::now();
        let r = loop {
            match self.handle_due(now, buf) {
                Some(Some(n)) => break Some(n),
                Some(None) => continue,
                None => break None,
            }
        };
        self.flush(now)?;
        Ok(r)
    }

    /// Waits up to `timeout` for a payload (driving the protocol meanwhile); `None` if none
    /// came, or the session ended.
    pub fn recv_payload_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(n) = self.recv_payload(buf)? {
                return Ok(Some(n));
            }
            if self.client.state().is_final() {
                return Ok(None);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let wake = self.next_wakeup().map_or(deadline, |w| w.min(deadline));
            self.wait_readable(wake.min(now + Duration::from_millis(10)).saturating_duration_since(now))?;
        }
    }

    /// Blocks until the socket is readable or `d` passes.
    fn wait_readable(&self, d: Duration) -> io::Result<()> {
        let d = d.max(Duration::from_micros(100));
        self.socket.set_nonblocking(false)?;
        self.socket.set_read_timeout(Some(d))?;
        let mut probe = [0u8; 1];
        let r = self.socket.peek_from(&mut probe);
        self.socket.set_nonblocking(true)?;
        match r {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Drives the handshake until connected, failed, or `timeout` passes.
    pub fn connect_blocking(&mut self, timeout: Duration) -> Result<(), GameClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.update()?;
            match self.client.state() {
                ClientState::Connected => return Ok(()),
                s if s.is_final() => return Err(GameClientError::Failed(s)),
                _ => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(GameClientError::Timeout);
            }
            let next = self.next_wakeup().unwrap_or(deadline).min(deadline);
            self.wait_readable(next.saturating_duration_since(now))?;
        }
    }

    /// Sends an unreliable payload now.
    pub fn send(&mut self, payload: &[u8]) -> Result<(), GameClientError> {
        let now = Instant::now();
        let t = self.client.send(now, payload, &mut self.tx[..])?;
        self.transmit(now, t.len, t.destination)?;
        Ok(())
    }

    /// Queues a reliable message; it leaves now (with acks) and is resent by later calls
    /// until acknowledged.
    pub fn send_reliable(&mut self, msg: &[u8]) -> Result<(), GameClientError> {
        self.client.send_reliable(msg)?;
        self.flush(Instant::now())?;
        Ok(())
    }

    /// Leaves: sends the redundant disconnect packets.
    pub fn disconnect(&mut self) {
        let now = Instant::now();
        self.client.disconnect(now);
        let _ = self.flush(now);
        // Leaving: what the link still holds goes now (nobody is left to call again).
        let _ = self.send_due(now + self.delay);
    }
}

impl AsRawFd for GameClient {
    /// The socket's descriptor, to register with a poller (epoll, mio's `SourceFd`); read
    /// and write it only through this client.
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsFd for GameClient {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl Drop for GameClient {
    fn drop(&mut self) {
        if self.client.is_connected() {
            self.disconnect();
        }
    }
}

fn send_ignoring_refused(socket: &UdpSocket, data: &[u8], to: SocketAddr) -> io::Result<()> {
    match socket.send_to(data, to) {
        Ok(_) => Ok(()),
        // Datagrams are best effort: a full socket buffer or an ICMP error from an earlier
        // datagram or a signal mid-call is a lost packet, which the protocol already survives.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock
                    | io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}
