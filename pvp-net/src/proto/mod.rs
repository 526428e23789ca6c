//! The game-session protocol as sans-IO state machines: bytes and `now` in, bytes and events
//! out. No sockets, threads or clocks inside; the drivers and [`crate::sim`]
//! drive them.
//!
//! A session starts with a [`ConnectToken`] the matchmaker issued:
//!
//! 1. client → `ConnectRequest` (the token, padded to [`CONNECT_REQUEST_LEN`] bytes);
//! 2. server checks signature, expiry, address and single use, then → `Challenge` (smaller);
//! 3. client → `ChallengeResponse` (proves it receives at its source address);
//! 4. server opens the session → `Accepted` with a connection id;
//! 5. both send `Data` packets (sequence number, ack + ack bitfield, optional reliable-ordered
//!    messages, unreliable payload); an empty one is a keep-alive;
//! 6. either end sends `Disconnect`, or the other times out.
//!
//! Call order for either side: feed every datagram to `handle_datagram`, then drain
//! `poll_event` and `poll_transmit`; when `poll_timeout` passes, call `handle_timeout`.
//!
//! ```
//! use std::time::{Instant, SystemTime, UNIX_EPOCH};
//! use pvp_core::{MatchId, PlayerId};
//! use pvp_net::proto::*;
//!
//! let now = Instant::now();
//! let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
//! let server_addr = "127.0.0.1:7000".parse().unwrap();
//! let client_addr = "127.0.0.1:5555".parse().unwrap();
//! let key = TokenKey::from_bytes([7; 32]);
//! let token = key.issue(&TokenClaims {
//!     token_id: 1,
//!     match_id: MatchId::new(10),
//!     player_id: PlayerId::new(20),
//!     expires_at_unix_ms: unix.as_millis() as u64 + 30_000,
//!     server_addr,
//! });
//! let mut server = Server::new(ServerConfig::new(key, server_addr), now, unix).unwrap();
//! let mut client = Client::new(ClientConfig::default(), token, now).unwrap();
//!
//! // Shuttle datagrams until the handshake completes (a real driver uses sockets).
//! let mut buf = [0u8; MAX_PACKET_LEN];
//! for _ in 0..3 {
//!     while let Some(t) = client.poll_transmit(now, &mut buf) {
//!         server.handle_datagram(now, client_addr, &buf[..t.len]);
//!     }
//!     while let Some(t) = server.poll_transmit(now, &mut buf) {
//!         client.handle_datagram(now, server_addr, &buf[..t.len]);
//!     }
//! }
//! assert!(client.is_connected());
//! assert!(matches!(server.poll_event(), Some(ServerEvent::Connected { .. })));
//!
//! // Unreliable game data, encoded straight into the caller's buffer.
//! let t = client.send(now, b"move 1 2", &mut buf).unwrap();
//! let got = server.handle_datagram(now, client_addr, &buf[..t.len]).unwrap();
//! assert_eq!(got.payload, b"move 1 2");
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

mod client;
pub(crate) mod link;
pub mod packet;
mod server;
pub mod token;

pub use client::{Client, ClientConfig, ClientEvent, ClientState};
pub use link::{MAX_PAYLOAD_LEN, MAX_RELIABLE_LEN, RELIABLE_WINDOW};
pub use packet::{
    CONNECT_REQUEST_LEN, DecodeError, DenyReason, EncodeError, MAX_PACKET_LEN, PROTOCOL_VERSION, Packet,
};
pub(crate) use server::later;
pub use server::{
    ConfigError, Received, Server, ServerConfig, ServerEvent, ServerStats, SessionInfo, TokenLedger,
};
pub use token::{ConnectToken, TOKEN_LEN, TokenClaims, TokenError, TokenKey};

/// A session's connection id, chosen by the server, carried by every data packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// A datagram a state machine wrote into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// How many bytes of the buffer it took.
    pub len: usize,
}

/// Why a send was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SendError {
    /// No such session (or the client is not connected).
    #[error("not connected")]
    NotConnected,
    /// Payload longer than [`MAX_PAYLOAD_LEN`] (or a reliable message than [`MAX_RELIABLE_LEN`]).
    #[error("payload too large")]
    TooLarge,
    /// The caller's buffer cannot hold the packet; give [`MAX_PACKET_LEN`] bytes.
    #[error("buffer too small")]
    BufferTooSmall,
    /// [`RELIABLE_WINDOW`] reliable messages are already unacknowledged.
    #[error("reliable queue full")]
    ReliableQueueFull,
    /// The session used every sequence number (1 to 2^32 - 2, one per packet); open a new
    /// one.
    #[error("sequence numbers exhausted")]
    SequenceExhausted,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The peer sent a disconnect.
    Peer,
    /// This end asked for it.
    Local,
    /// Nothing heard for the idle timeout.
    TimedOut,
    /// The handshake did not finish in time.
    HandshakeTimedOut,
    /// The server refused the connect request.
    Denied(DenyReason),
    /// A sequence space ran out.
    SequenceExhausted,
}

macro_rules! drop_reasons {
    ($($(#[$m:meta])* $name:ident => $s:literal,)*) => {
        /// Why an incoming datagram was dropped; each is counted in the stats.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum DropReason { $($(#[$m])* $name,)* }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            /// A stable snake_case name (the `reason` label of the drop metric).
            pub const fn as_str(self) -> &'static str {
                match self { $(DropReason::$name => $s,)* }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than its header or declared contents.
    Truncated => "truncated",
    /// Longer than allowed.
    Oversized => "oversized",
    /// Unknown protocol version.
    WrongVersion => "wrong_version",
    /// Unknown kind or impossible field.
    Malformed => "malformed",
    /// Connect token signature invalid or token unreadable.
    BadToken => "bad_token",
    /// Connect token past its expiry.
    TokenExpired => "token_expired",
    /// Connect token names another server.
    TokenWrongServer => "token_wrong_server",
    /// Connect token already used (or in use from another address).
    TokenReplayed => "token_replayed",
    /// A packet kind this end never receives, or one out of handshake order.
    Unexpected => "unexpected",
    /// Challenge response that does not match the pending handshake.
    BadChallenge => "bad_challenge",
    /// Pending-handshake table full.
    PendingFull => "pending_full",
    /// Used-token table full of unexpired tokens.
    TokenTableFull => "token_table_full",
    /// No session with that connection id.
    UnknownConnection => "unknown_connection",
    /// Session exists but the packet came from another address.
    WrongAddress => "wrong_address",
    /// Sequence number already received.
    Replayed => "replayed",
    /// Sequence number older than the replay window.
    Stale => "stale",
    /// netcode: the packet's tag did not verify under the session's key (forged, tampered
    /// or sealed for another session).
    DecryptFailed => "decrypt_failed",
    /// netcode: another game's protocol id.
    WrongProtocol => "wrong_protocol",
    /// netcode: a session from that address is already open.
    AddressInUse => "address_in_use",
    /// netcode: a session with that client id is already open.
    ClientIdInUse => "client_id_in_use",
}

/// Per-reason drop counters; cheap to share between a driver's threads.
#[derive(Debug, Default)]
pub struct DropCounters {
    counts: [AtomicU64; DROP_REASONS],
}

const DROP_REASONS: usize = 20;
const _: () = assert!(DropReason::ALL.len() == DROP_REASONS);

impl DropCounters {
    /// Counts one drop (and reports it to the `metrics` facade).
    pub fn count(&self, reason: DropReason) {
        self.counts[reason as usize].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("pvp_net_packets_dropped_total", "reason" => reason.as_str()).increment(1);
    }
    /// Drops counted for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason as usize].load(Ordering::Relaxed)
    }
    /// Drops counted for all reasons.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
    /// A copy as `(reason, count)` pairs.
    pub fn snapshot(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL.iter().map(|&r| (r, self.get(r))).collect()
    }
}

impl From<DecodeError> for DropReason {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Truncated => DropReason::Truncated,
            DecodeError::Oversized => DropReason::Oversized,
            DecodeError::WrongVersion(_) => DropReason::WrongVersion,
            DecodeError::Malformed => DropReason::Malformed,
        }
    }
}
