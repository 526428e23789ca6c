//! The assembled pvp backend: three regions (Korea, Japan, Singapore) on loopback, load bots,
//! and a chaos failover run.
//!
//! - [`config`]: the session's settings from TOML ([`SessionConfig`]).
//! - [`session`]: [`RunningSession`] brings every region up (its sync node behind fault
//!   proxies at the backbone latencies, the control plane with the fleet controller,
//!   matchmaking, failover, autoscaling and SLOs, `/metrics`) and the bots;
//!   [`RunningSession::finish`] drains, snapshots and returns a [`Report`].
//! - `control` (private): the control plane's loop, one method per phase of a pass.
//! - [`fleet`]: the game servers, each its own netcode endpoint running the
//!   [`arena`] game, with an Agones-like lifecycle reported by heartbeats over UDP.
//! - [`arena`]: the game: a fight decided by the players' inputs.
//! - [`bots`]: every bot a netcode `GameClient` on its own socket, with its latency profile
//!   on the path.
//! - [`crdt`]: pvp-global's CrossRegionSync in each region: bans (STRONG) and the global
//!   wins leaderboard.
//! - [`replica`]: each region's exactly-once log of match results, replicated the same way
//!   (it also measures the sync lag).
//! - [`front`]: the matchmaking front over HTTP/JSON (create, watch, cancel tickets) for
//!   outside clients and tools.
//! - [`wire`]: the sync datagrams.
//! - [`chaos`]: the failover experiment of the `chaos-failover` binary.
//! - [`cli`]: argument parsing shared by the binaries.
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use pvp_examples::{RunningSession, SessionConfig};
//!
//! let config = SessionConfig { players: 300, duration_secs: 3.0, ..SessionConfig::default() };
//! let mut session = RunningSession::start(config)?;
//! session.run_until(&AtomicBool::new(false), |p| println!("{p}"));
//! let report = session.finish();
//! assert!(report.converged);
//! # Ok::<(), pvp_examples::session::SessionError>(())
//! ```
//!
//! # Multi-process mode
//!
//! The same binary runs one region per process (on one host or three); every process uses
//! the same config, one of them is the matchmaking leader:
//!
//! ```sh
//! P="--players 10000 --duration 60 --control 127.0.0.1:7100"
//! multi-region $P --region kr --sync 127.0.0.1:7101 --peers jp=127.0.0.1:7102,sg=127.0.0.1:7103 --leader &
//! multi-region $P --region jp --sync 127.0.0.1:7102 --peers kr=127.0.0.1:7101,sg=127.0.0.1:7103 &
//! multi-region $P --region sg --sync 127.0.0.1:7103 --peers kr=127.0.0.1:7101,jp=127.0.0.1:7102 &
//! ```
//!
//! With `--etcd http://10.0.0.1:2379,...` instead of `--leader`, the processes elect the
//! leader on etcd and any of them takes over when it dies ([`election`]); `--control` is then
//! each process's own address. `--history DIR` logs what [`history::check`] verifies.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

pub mod arena;
pub mod bots;
mod bridge;
pub mod chaos;
pub mod cli;
pub mod config;
mod control;
pub mod crdt;
pub mod election;
pub mod fleet;
pub mod front;
pub mod history;
pub mod lobby;
mod region;
pub mod replica;
pub mod report;
pub mod session;
pub mod wire;

pub use config::SessionConfig;
pub use report::Report;
#[allow(deprecated)]
pub use session::Topology;
pub use session::{Deployment, ProcessRole, RunningSession};
