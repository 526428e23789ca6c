//! `GameClient`: the netcode client on a std `UdpSocket`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
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
#[derive(Debug)]
pub struct GameClient {
    socket: UdpSocket,
    client: Client,
    tx: Box<[u8; MAX_PACKET_BYTES]>,
    rx: Box<[u8; 2048]>,
}

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
        Ok(GameClient { socket, client, tx: Box::new([0; MAX_PACKET_BYTES]), rx: Box::new([0; 2048]) })
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
            send_ignoring_refused(&self.socket, &self.tx[..t.len], t.destination)?;
        }
        Ok(())
    }

    /// Reads every waiting datagram, runs the timers and sends what is due; payloads that
    /// arrive are dropped (use [`recv_payload`](Self::recv_payload) to read them).
    pub fn update(&mut self) -> io::Result<()> {
        let mut sink = [0u8; 0];
        while self.read_one(&mut sink)?.is_some() {}
        self.flush(Instant::now())
    }

    /// Reads one datagram if one is waiting; returns `Some(Some(n))` for a payload copied
    /// into `buf` (cut to its length), `Some(None)` for anything else, `None` when nothing
    /// waits.
    fn read_one(&mut self, buf: &mut [u8]) -> io::Result<Option<Option<usize>>> {
        match self.socket.recv_from(&mut self.rx[..]) {
            Ok((n, from)) => {
                let now = Instant::now();
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

    /// The next payload already waiting, copied into `buf`; `None` when none waits. Runs the
    /// timers and sends what is due.
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
            self.wait_readable(deadline.min(now + Duration::from_millis(10)) - now)?;
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
            let next = self.client.poll_timeout().unwrap_or(deadline).min(deadline);
            self.wait_readable(next.saturating_duration_since(now))?;
        }
    }

    /// Sends an unreliable payload now.
    pub fn send(&mut self, payload: &[u8]) -> Result<(), GameClientError> {
        let t = self.client.send(Instant::now(), payload, &mut self.tx[..])?;
        send_ignoring_refused(&self.socket, &self.tx[..t.len], t.destination)?;
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
