//! The global layer of pvp: region fleets, cross-region matchmaking, CRDT sync, leaderboard
//! and coordination.
//!
//! - [`cluster`]: one region's game-server fleet ([`RegionCluster`]): Agones-like lifecycle,
//!   scaling within min/max over zones, bin-packing allocation, health and the summary it
//!   exchanges with the global layer; [`RegionConfig`] / [`FleetConfig`] load from TOML.
//! - [`matchmaking`]: [`GlobalMatchmaking`]: tickets in, balanced matches on allocated
//!   servers out, with ratings from `skillratings`.
//!
//! Everything here is sans-IO: time is an argument (`now: Duration` since the driver's start),
//! nothing spawns threads, opens sockets or sleeps.
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

pub mod cluster;
pub mod matchmaking;
mod sys;

pub use cluster::{FleetConfig, RegionCluster, RegionConfig, RegionHealth, RegionSummary};
pub use matchmaking::{GlobalMatchmaking, MatchHandle, MatchRequest, MatchResult, MatchmakingConfig};
