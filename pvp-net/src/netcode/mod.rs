//! netcode 1.02, wire-exact: connect tokens, the seven encrypted packet types, and the server
//! and client state machines (sans-IO: `now` and bytes in, bytes and events out).
//!
//! Any netcode 1.02 client (the C reference, `renetcode`, netcode.io ports in C#, Go,
//! TypeScript) can join a [`Server`]; our [`Client`] can join any netcode 1.02 server.
//! The standard is `STANDARD.md` in the mas-bandwidth/netcode repository; this module follows
//! its corrected text (`IMPLEMENTERS.md`): the replay check is written subtraction-side, the
//! server's global sequence starts at 2^63 for every server value, nonces are four zero bytes
//! then the sequence little-endian.
//!
//! - [`TokenIssuer`]: the matchmaker's call, a [`SessionGrant`] in, 2048 token bytes out.
//! - [`Server`] / [`Client`]: the protocol. Payloads of sessions whose token says so carry
//!   the [payload layer](layer) (acks, reliable-ordered messages); others are plain.
//! - [`crate::game`]: `GameServer` / `GameClient`, the drivers a backend embeds.
//!
//! ```
//! use std::time::{Instant, SystemTime, UNIX_EPOCH};
//! use pvp_core::{MatchId, PlayerId};
//! use pvp_net::netcode::*;
//!
//! let (now, unix) = (Instant::now(), SystemTime::now().duration_since(UNIX_EPOCH).unwrap());
//! let server_addr = "127.0.0.1:40000".parse().unwrap();
//! let client_addr = "127.0.0.1:50000".parse().unwrap();
//! let key = Key::random();
//! let issuer = TokenIssuer::new(IssuerConfig::new(0xC0FFEE, key.clone()));
//! let grant = SessionGrant {
//!     client_id: 7,
//!     server_addresses: vec![server_addr],
//!     user_data: SessionUserData {
//!         match_id: MatchId::new(1), player: PlayerId::new(7), team: 0, layered: true,
//!         game_data: vec![],
//!     },
//! };
//! let token = issuer.token(unix, &grant).unwrap();
//! let mut server = Server::new(ServerConfig::new(0xC0FFEE, key, server_addr), now, unix).unwrap();
//! let mut client = Client::new(token, ClientConfig::default(), now, unix).unwrap();
//!
//! // Shuttle datagrams until the handshake completes (a real driver uses sockets).
//! let mut buf = [0u8; MAX_PACKET_BYTES];
//! for _ in 0..3 {
//!     while let Some(t) = client.poll_transmit(now, &mut buf) {
//!         server.handle_datagram(now, client_addr, &buf[..t.len]);
//!     }
//!     while let Some(t) = server.poll_transmit(now, &mut buf) {
//!         client.handle_datagram(now, server_addr, &buf[..t.len]);
//!     }
//! }
//! assert!(client.is_connected());
//! assert!(matches!(server.poll_event(), Some(ServerEvent::Connected { client_id: 7, .. })));
//!
//! let t = client.send(now, b"move 1 2", &mut buf).unwrap();
//! let got = server.handle_datagram(now, client_addr, &buf[..t.len]).unwrap();
//! assert_eq!(got.payload, b"move 1 2");
//! ```

use std::net::SocketAddr;

use thiserror::Error;

mod client;
pub mod layer;
pub mod packet;
mod replay;
mod server;
mod token;

pub use client::{Client, ClientConfig, ClientEvent, ClientState};
pub use packet::{CONNECT_REQUEST_BYTES, MAX_PACKET_BYTES, MAX_PAYLOAD_BYTES, PacketError, PacketType};
pub use replay::{REPLAY_WINDOW, ReplayWindow};
pub use server::{
    ConfigError, Received, SESSION_BYTES_BOUND, Server, ServerConfig, ServerEvent, ServerStats, SessionLedger,
};
pub use token::{
    ConnectToken, IssuerConfig, Key, KeyError, PrivateToken, SessionGrant, SessionUserData, TokenError,
    TokenIssuer,
};

/// `"NETCODE 1.02"` with its terminating zero: the first 13 bytes of tokens and requests.
pub const VERSION_INFO: &[u8; 13] = b"NETCODE 1.02\0";
/// Size of a connect token.
pub const CONNECT_TOKEN_BYTES: usize = 2048;
/// Size of the sealed private part of a connect token.
pub const PRIVATE_TOKEN_BYTES: usize = 1024;
/// Bytes of user data a token carries to the server.
pub const USER_DATA_BYTES: usize = 256;
/// Size of every key.
pub const KEY_BYTES: usize = 32;
/// The most server addresses one token names.
pub const MAX_SERVER_ADDRESSES: usize = 32;
/// Size of a Poly1305 tag.
pub const MAC_BYTES: usize = 16;

pub use crate::proto::Transmit;

/// Why a send was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SendError {
    /// No such session (or the client is not connected).
    #[error("not connected")]
    NotConnected,
    /// Payload empty or longer than the session allows ([`MAX_PAYLOAD_BYTES`] plain,
    /// [`layer::MAX_LAYERED_PAYLOAD`] layered), or a reliable message longer than
    /// [`layer::MAX_RELIABLE_MESSAGE`].
    #[error("payload empty or too large")]
    TooLarge,
    /// The caller's buffer cannot hold the packet; give [`MAX_PACKET_BYTES`].
    #[error("buffer too small")]
    BufferTooSmall,
    /// [`RELIABLE_WINDOW`](crate::proto::RELIABLE_WINDOW) reliable messages are already
    /// unacknowledged.
    #[error("reliable queue full")]
    ReliableQueueFull,
    /// The session's layer used every sequence number; open a new one.
    #[error("sequence numbers exhausted")]
    SequenceExhausted,
    /// The session's client does not speak the payload layer, so reliable messages cannot
    /// reach it.
    #[error("session has no payload layer (plain netcode client)")]
    NoPayloadLayer,
}

impl From<crate::proto::SendError> for SendError {
    fn from(e: crate::proto::SendError) -> Self {
        use crate::proto::SendError as E;
        match e {
            E::NotConnected => SendError::NotConnected,
            E::TooLarge => SendError::TooLarge,
            E::BufferTooSmall => SendError::BufferTooSmall,
            E::ReliableQueueFull => SendError::ReliableQueueFull,
            E::SequenceExhausted => SendError::SequenceExhausted,
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The peer sent disconnect packets.
    Peer,
    /// This end closed it.
    Local,
    /// Nothing heard for the token's timeout.
    TimedOut,
    /// The server was shutting down.
    ShuttingDown,
}

impl DisconnectReason {
    /// A stable snake_case name (metric label).
    pub const fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::Peer => "peer",
            DisconnectReason::Local => "local",
            DisconnectReason::TimedOut => "timed_out",
            DisconnectReason::ShuttingDown => "shutting_down",
        }
    }
}

impl From<PacketError> for crate::proto::DropReason {
    fn from(e: PacketError) -> Self {
        use crate::proto::DropReason as D;
        match e {
            PacketError::Truncated | PacketError::BadLength => D::Truncated,
            PacketError::Oversized => D::Oversized,
            PacketError::BadPrefix | PacketError::DoesNotFit => D::Malformed,
            PacketError::WrongVersion => D::WrongVersion,
            PacketError::WrongProtocol => D::WrongProtocol,
            PacketError::Decrypt => D::DecryptFailed,
        }
    }
}

/// `a == b` as netcode compares addresses: IP and port.
fn same_addr(a: &SocketAddr, b: &SocketAddr) -> bool {
    token::same_endpoint(a, b)
}
