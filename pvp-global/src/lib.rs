//! The global layer of pvp: region fleets, cross-region matchmaking, CRDT sync, the global
//! leaderboard, coordination and failover.
//!
//! - [`cluster`]: one region's game-server fleet ([`RegionCluster`]): Agones-like lifecycle,
//!   scaling within min/max over zones, bin-packing allocation, health and the summary it
//!   exchanges with the global layer; [`RegionConfig`] / [`FleetConfig`] load from TOML.
//! - [`matchmaking`]: [`GlobalMatchmaking`]: tickets in, balanced matches on allocated
//!   servers out, with ratings from `skillratings`.
//! - [`crdt`]: the replicated data types (LWW register, max register, G-/PN-counter, add-wins
//!   OR-set, maps and player profiles).
//! - [`sync`]: CrossRegionSync, the sans-IO delta-state replication protocol with EVENTUAL and
//!   STRONG strategies, anti-entropy, transports (simulated and UDP) and snapshots.
//! - [`leaderboard`]: the global leaderboard per game mode with `O(log n)` rank queries.
//! - [`link`]: [`link::SealedLinks`]: inter-region datagrams authenticated and encrypted
//!   (XChaCha20-Poly1305, a key per pair of regions, replay window); anything else is dropped
//!   and counted.
//! - [`coord`]: what regions must agree on (membership leases, leader election for global jobs,
//!   compare-and-set control records, watches), in-process ([`coord::LocalCoordinator`]) or on
//!   etcd (`coord::EtcdCoordinator`, feature `etcd`).
//! - [`failover`]: region health from leases and data-plane signals, and the failover planner
//!   that reroutes players when a region is down and brings it back once it has caught up;
//!   [`failover::RegionFailover`] wires both to [`GlobalMatchmaking`] and to sync progress.
//!
//! Everything that decides is sans-IO: time is an argument, decisions are returned as data;
//! nothing spawns threads, opens sockets or sleeps except the thin drivers (`sync::SyncDriver`,
//! the UDP transport, the etcd client and its test cluster).
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod cluster;
pub mod coord;
pub mod crdt;
pub mod failover;
pub mod leaderboard;
pub mod link;
pub mod matchmaking;
pub mod sync;
#[allow(unsafe_code)]
mod sys;

pub use cluster::{FleetConfig, RegionCluster, RegionConfig, RegionHealth, RegionSummary};
pub use coord::{Coordinator, LocalCoordinator};
pub use leaderboard::{GameMode, GlobalLeaderboard, Leaderboard, ScoreOperator};
pub use matchmaking::{GlobalMatchmaking, MatchHandle, MatchRequest, MatchResult, MatchmakingConfig};
#[allow(deprecated)]
pub use sync::SyncNode;
pub use sync::{CrossRegionSync, SyncConfig};
