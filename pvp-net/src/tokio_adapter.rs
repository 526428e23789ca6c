//! An async adapter (feature `tokio`): the session [`Server`] on a tokio `UdpSocket`, for
//! services that already run tokio and do not need the io_uring/epoll workers.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use pvp_net::proto::{ServerConfig, TokenKey};
//! use pvp_net::tokio_adapter::SessionSocket;
//!
//! let key = TokenKey::generate();
//! let socket = SessionSocket::bind("127.0.0.1:0".parse().unwrap(), |addr| {
//!     ServerConfig::new(key.clone(), addr)
//! })
//! .await
//! .unwrap();
//! assert_eq!(socket.server().session_count(), 0);
//! # }
//! ```

use std::io;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;

use crate::proto::{ConfigError, ConnectionId, MAX_PACKET_LEN, SendError, Server, ServerConfig, ServerEvent};
use pvp_core::PlayerId;

/// What [`SessionSocket::next`] hands the game.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Incoming {
    /// An unreliable payload on a session.
    Payload {
        /// The session.
        connection: ConnectionId,
        /// Its player.
        player: PlayerId,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// A session event (connected, disconnected, reliable message).
    Event(ServerEvent),
}

/// Why the adapter failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// Socket error.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    /// The server configuration was refused.
    #[error("server config: {0}")]
    Config(#[from] ConfigError),
    /// The session refused the send.
    #[error("send: {0}")]
    Send(#[from] SendError),
}

/// A session [`Server`] driven by a tokio `UdpSocket`.
#[derive(Debug)]
pub struct SessionSocket {
    socket: UdpSocket,
    server: Server,
    buf: Box<[u8; MAX_PACKET_LEN]>,
    rx: Box<[u8; MAX_PACKET_LEN + 1]>,
}

impl SessionSocket {
    /// Binds `addr` and builds the server from `config(local address)`.
    pub async fn bind(
        addr: SocketAddr,
        config: impl FnOnce(SocketAddr) -> ServerConfig,
    ) -> Result<Self, AdapterError> {
        let socket = UdpSocket::bind(addr).await?;
        let local = socket.local_addr()?;
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let server = Server::new(config(local), Instant::now(), unix)?;
        Ok(SessionSocket {
            socket,
            server,
            buf: Box::new([0; MAX_PACKET_LEN]),
            rx: Box::new([0; MAX_PACKET_LEN + 1]),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The session server (stats, sessions).
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The session server, mutably (reliable sends, disconnects; flushed by the next call
    /// to [`next`](Self::next) or [`send`](Self::send)).
    pub fn server_mut(&mut self) -> &mut Server {
        &mut self.server
    }

    async fn flush(&mut self) -> io::Result<()> {
        let now = Instant::now();
        while let Some(t) = self.server.poll_transmit(now, &mut self.buf[..]) {
            self.socket.send_to(&self.buf[..t.len], t.destination).await?;
        }
        Ok(())
    }

    /// Runs the protocol until there is something for the game: a payload or an event.
    /// Handshakes, acks, keep-alives and timeouts happen inside.
    pub async fn next(&mut self) -> Result<Incoming, AdapterError> {
        loop {
            self.flush().await?;
            if let Some(e) = self.server.poll_event() {
                return Ok(Incoming::Event(e));
            }
            let deadline = self.server.poll_timeout();
            let recv = self.socket.recv_from(&mut self.rx[..]);
            let got = match deadline {
                Some(d) => match tokio::time::timeout_at(tokio::time::Instant::from_std(d), recv).await {
                    Ok(r) => Some(r?),
                    Err(_) => None,
                },
                None => Some(recv.await?),
            };
            let now = Instant::now();
            // Timers run on every pass (cheap before they are due): under steady traffic the
            // receive is always ready first, and keep-alives, resends and idle timeouts must
            // still happen.
            self.server.handle_timeout(now);
            if let Some((n, from)) = got {
                if let Some(r) = self.server.handle_datagram(now, from, &self.rx[..n]) {
                    return Ok(Incoming::Payload {
                        connection: r.connection,
                        player: r.player,
                        bytes: r.payload.to_vec(),
                    });
                }
            }
        }
    }

    /// Sends an unreliable payload on a session.
    pub async fn send(&mut self, connection: ConnectionId, payload: &[u8]) -> Result<(), AdapterError> {
        let t = self.server.send(Instant::now(), connection, payload, &mut self.buf[..])?;
        self.socket.send_to(&self.buf[..t.len], t.destination).await?;
        Ok(())
    }
}

/// What [`NetcodeSocket::next`] hands the game.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetcodeIncoming {
    /// An unreliable payload.
    Payload {
        /// The client.
        client_id: u64,
        /// The bytes (without the payload layer's header).
        bytes: Vec<u8>,
    },
    /// A session event (connected, disconnected, reliable message).
    Event(crate::netcode::ServerEvent),
}

/// Why the netcode adapter failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetcodeAdapterError {
    /// Socket error.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    /// The server configuration was refused.
    #[error("server config: {0}")]
    Config(#[from] crate::netcode::ConfigError),
    /// The session refused the send.
    #[error("send: {0}")]
    Send(#[from] crate::netcode::SendError),
}

/// The netcode [`Server`](crate::netcode::Server) on a tokio `UdpSocket`: the same state
/// machine [`GameServer`](crate::game::GameServer) runs on its workers, for services that
/// already run tokio.
#[derive(Debug)]
pub struct NetcodeSocket {
    socket: UdpSocket,
    server: crate::netcode::Server,
    buf: Box<[u8; crate::netcode::MAX_PACKET_BYTES]>,
    rx: Box<[u8; 2048]>,
}

impl NetcodeSocket {
    /// Binds `addr` and builds the server from `config(local address)`.
    pub async fn bind(
        addr: SocketAddr,
        config: impl FnOnce(SocketAddr) -> crate::netcode::ServerConfig,
    ) -> Result<Self, NetcodeAdapterError> {
        let socket = UdpSocket::bind(addr).await?;
        let local = socket.local_addr()?;
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let server = crate::netcode::Server::new(config(local), Instant::now(), unix)?;
        Ok(NetcodeSocket {
            socket,
            server,
            buf: Box::new([0; crate::netcode::MAX_PACKET_BYTES]),
            rx: Box::new([0; 2048]),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The server (stats, sessions, drops).
    pub fn server(&self) -> &crate::netcode::Server {
        &self.server
    }

    /// The server, mutably (reliable sends, disconnects; flushed by the next call to
    /// [`next`](Self::next) or [`send`](Self::send)).
    pub fn server_mut(&mut self) -> &mut crate::netcode::Server {
        &mut self.server
    }

    async fn flush(&mut self) -> io::Result<()> {
        let now = Instant::now();
        while let Some(t) = self.server.poll_transmit(now, &mut self.buf[..]) {
            // A datagram the kernel refuses is a lost packet, which the protocol survives.
            let _ = self.socket.send_to(&self.buf[..t.len], t.destination).await;
        }
        Ok(())
    }

    /// Runs the protocol until there is something for the game: a payload or an event.
    pub async fn next(&mut self) -> Result<NetcodeIncoming, NetcodeAdapterError> {
        loop {
            self.flush().await?;
            if let Some(e) = self.server.poll_event() {
                return Ok(NetcodeIncoming::Event(e));
            }
            let deadline = tokio::time::Instant::from_std(self.server.poll_timeout());
            let got = match tokio::time::timeout_at(deadline, self.socket.recv_from(&mut self.rx[..])).await {
                Ok(Ok(r)) => Some(r),
                // ICMP errors from earlier sends surface here; they are not the server's.
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => None,
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => None,
            };
            let now = Instant::now();
            self.server.handle_timeout(now);
            if let Some((n, from)) = got {
                if let Some(r) = self.server.handle_datagram(now, from, &self.rx[..n]) {
                    return Ok(NetcodeIncoming::Payload {
                        client_id: r.client_id,
                        bytes: r.payload.to_vec(),
                    });
                }
            }
        }
    }

    /// Sends an unreliable payload to a client.
    pub async fn send(&mut self, client_id: u64, payload: &[u8]) -> Result<(), NetcodeAdapterError> {
        let t = self.server.send(Instant::now(), client_id, payload, &mut self.buf[..])?;
        self.socket.send_to(&self.buf[..t.len], t.destination).await?;
        self.flush().await?;
        Ok(())
    }
}
