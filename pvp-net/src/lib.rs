//! pvp-net: the network layer of the pvp game backend.
//!
//! - [`game`]: [`GameServer`](game::GameServer), the session server a backend embeds, and
//!   [`GameClient`](game::GameClient): netcode 1.02, so any netcode client (the C reference,
//!   renetcode, the C#/Go/TypeScript ports) can join.
//! - [`netcode`]: netcode 1.02 as sans-IO state machines: connect tokens and their issuer,
//!   the seven encrypted packet types, replay protection, server and client, and the payload
//!   layer (acks, reliable-ordered messages) inside netcode payloads.
//! - [`proto`]: the earlier plaintext session protocol (kept as the baseline the netcode
//!   benchmarks compare against, and for the code that still speaks it).
//! - [`endpoint`]: [`UdpServer`], thread per core, over the io_uring or the epoll
//!   [`driver`], chosen at start-up.
//! - [`uring`]: [`IoUringNetwork`], a low-level io_uring wrapper for TCP and UDP that owns
//!   every buffer while the kernel uses it.
//! - `tokio_adapter` (feature `tokio`): the same state machines on a tokio `UdpSocket`.
//! - [`sim`]: a simulated network with virtual time (latency, loss, reordering, duplication;
//!   seeded) that drives clients and a server for tests.
//!
//! A complete game server (bind, accept, tick, send) and one client, in one screen:
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

//!
//! Performance note: ChaCha20-Poly1305 from RustCrypto picks poly1305's AVX2 backend at run
//! time, which is several times slower than its portable backend on game-sized packets
//! (see BENCHMARKS.md, "netcode AEAD backend (`--cfg poly1305_force_soft`)"); build with
//! `--cfg poly1305_force_soft` (this workspace's `.cargo/config.toml` does; see
//! `docs/ARCHITECTURE.md`).
#![deny(missing_docs)]
// Every `unsafe` block of this crate is in `sys` (see its module doc); nowhere else.
#![deny(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

pub mod driver;
pub mod endpoint;
pub mod game;
mod gso;
pub mod netcode;
pub mod proto;
pub mod sim;
#[allow(unsafe_code)]
mod sys;
#[cfg(feature = "tokio")]
pub mod tokio_adapter;
pub mod uring;

pub use driver::{DriverChoice, DriverKind};
pub use endpoint::{UdpServer, UdpServerConfig};
pub use sys::{allowed_cpus, pin_to_cpu, process_cpu_time, resident_bytes};
pub use uring::IoUringNetwork;
