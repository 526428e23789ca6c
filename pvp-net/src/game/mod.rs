//! The session server a backend embeds, and the client that joins it: netcode 1.02 on
//! [`UdpServer`](crate::UdpServer) workers.
//!
//! - [`GameServer`]: thread per core over io_uring (epoll fallback); each worker runs the
//!   netcode [`Server`](crate::netcode::Server) inline on its own socket (no queue hop on
//!   the receive path), hands events to the game loop in batches through pvp-core's
//!   `BoundedQueue`, and takes sends from any thread ([`GameSender`]); or runs the game loop
//!   itself, inline on the worker that owns the sessions ([`GameHandler`],
//!   [`GameServer::bind_inline`]).
//! - [`GameClient`]: the netcode [`Client`](crate::netcode::Client) on a blocking-capable std
//!   `UdpSocket`, for bots, tests and Rust game clients.
//!
//! The crate's front page ([`crate`]) shows a complete game server and client in one
//! screen.

mod client;
mod server;

pub use client::{GameClient, GameClientError};
pub use server::{
    GameEvent, GameHandler, GameIo, GameSendError, GameSender, GameServer, GameServerConfig, GameServerError,
    GameServerStats, PAYLOAD_INLINE, Payload, SessionId,
};
