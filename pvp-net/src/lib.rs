//! pvp-net: the network layer of the pvp game backend.
//!
//! - [`proto`]: the game-session protocol as sans-IO state machines (connect tokens,
//!   challenge/response handshake, sequence numbers and acks, reliable-ordered messages,
//!   keep-alives, timeouts), with no sockets, threads or clocks inside.
//! - [`sim`]: a simulated network with virtual time (latency, loss, reordering, duplication;
//!   seeded) that drives clients and a server for tests.
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

pub mod proto;
pub mod sim;
