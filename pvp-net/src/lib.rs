//! pvp-net: the network layer of the pvp game backend.
//!
//! - [`proto`]: the game-session protocol as sans-IO state machines (connect tokens,
//!   challenge/response handshake, sequence numbers and acks, reliable-ordered messages,
//!   keep-alives, timeouts), with no sockets, threads or clocks inside.
//! - [`endpoint`]: [`UdpServer`], thread per core, over the io_uring or the epoll
//!   [`driver`], chosen at start-up.
//! - [`uring`]: [`IoUringNetwork`], a low-level io_uring wrapper for TCP and UDP that owns
//!   every buffer while the kernel uses it.
//! - `tokio_adapter` (feature `tokio`): the session server on a tokio `UdpSocket`.
//! - [`sim`]: a simulated network with virtual time (latency, loss, reordering, duplication;
//!   seeded) that drives clients and a server for tests.
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

pub mod driver;
pub mod endpoint;
pub mod game;
pub mod netcode;
mod gso;
pub mod proto;
pub mod sim;
mod sys;
#[cfg(feature = "tokio")]
pub mod tokio_adapter;
pub mod uring;

pub use driver::{DriverChoice, DriverKind};
pub use endpoint::{UdpServer, UdpServerConfig};
pub use sys::{allowed_cpus, pin_to_cpu, process_cpu_time, resident_bytes};
pub use uring::IoUringNetwork;
