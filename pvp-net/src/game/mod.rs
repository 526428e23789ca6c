//! The session server a backend embeds, and the client that joins it: netcode 1.02 on
//! [`UdpServer`](crate::UdpServer) workers.
//!
//! - [`GameServer`]: thread per core over io_uring (epoll fallback); each worker runs the
//!   netcode [`Server`](crate::netcode::Server) inline on its own socket (no queue hop on
//!   the receive path), hands events to the game loop in batches through pvp-core's
//!   `LockFreeQueue`, and takes sends from any thread ([`GameSender`]).
//! - [`GameClient`]: the netcode [`Client`](crate::netcode::Client) on a blocking-capable std
//!   `UdpSocket`, for bots, tests and Rust game clients.
//!
//! A complete game server and one client, in one screen:
//!
//! ```
//! use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
//! use pvp_core::{MatchId, PlayerId};
//! use pvp_net::game::{GameClient, GameEvent, GameServer, GameServerConfig};
//! use pvp_net::netcode::{ClientConfig, IssuerConfig, Key, SessionGrant, SessionUserData, TokenIssuer};
//!
//! // Bind: the key is shared with the matchmaker (from config or the environment in production).
//! let key = Key::random();
//! let server = GameServer::bind(GameServerConfig::new("127.0.0.1:0".parse().unwrap(), 0x5056_5031, key.clone()))
//!     .unwrap();
//!
//! // The matchmaker issues a token for a seat on this server ...
//! let issuer = TokenIssuer::new(IssuerConfig::new(0x5056_5031, key));
//! let grant = SessionGrant {
//!     client_id: 7,
//!     server_addresses: vec![server.public_address()],
//!     user_data: SessionUserData {
//!         match_id: MatchId::new(1), player: PlayerId::new(7), team: 0, layered: true,
//!         game_data: vec![],
//!     },
//! };
//! let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
//! let token = issuer.token(unix, &grant).unwrap();
//!
//! // ... and the client connects with it.
//! let mut client = GameClient::new(token, ClientConfig::default()).unwrap();
//! client.connect_blocking(Duration::from_secs(5)).unwrap();
//! client.send(b"input: jump").unwrap();
//!
//! // Accept and tick: the game loop drains events in batches and sends from its own thread.
//! let sender = server.sender();
//! let mut events = Vec::new();
//! let deadline = Instant::now() + Duration::from_secs(5);
//! let mut got_input = false;
//! while !got_input && Instant::now() < deadline {
//!     client.update().unwrap();
//!     server.poll_events(&mut events, 256);
//!     for e in events.drain(..) {
//!         if let GameEvent::Payload { session, payload } = e {
//!             assert_eq!(payload.as_slice(), b"input: jump");
//!             sender.send(session, b"snapshot 1").unwrap();          // unreliable
//!             sender.send_reliable(session, b"you scored").unwrap(); // reliable, ordered
//!             got_input = true;
//!         }
//!     }
//! }
//! assert!(got_input);
//! let mut buf = [0u8; 1200];
//! let n = client.recv_payload_timeout(&mut buf, Duration::from_secs(5)).unwrap().unwrap();
//! assert_eq!(&buf[..n], b"snapshot 1");
//! client.disconnect();
//! server.shutdown().unwrap();
//! ```

mod client;
mod server;

pub use client::{GameClient, GameClientError};
pub use server::{
    GameEvent, GameSendError, GameSender, GameServer, GameServerConfig, GameServerError, GameServerStats, Payload,
    SessionId, PAYLOAD_INLINE,
};
