//! The global layer of pvp: region fleets, cross-region matchmaking, coordination and
//! failover.
//!
//! - [`cluster`]: one region's game-server fleet ([`RegionCluster`]): Agones-like lifecycle,
//!   scaling within min/max over zones, bin-packing allocation, health and the summary it
//!   exchanges with the global layer; [`RegionConfig`] / [`FleetConfig`] load from TOML.
//! - [`matchmaking`]: [`GlobalMatchmaking`]: tickets in, balanced matches on allocated
//!   servers out, with ratings from `skillratings`.
//! - [`coord`]: what regions must agree on (membership leases, leader election for global jobs,
//!   compare-and-set control records, watches), in-process ([`coord::LocalCoordinator`]) or on
//!   etcd (`coord::EtcdCoordinator`, feature `etcd`).
//! - [`failover`]: region health from leases and data-plane signals, and the failover planner
//!   that reroutes players when a region is down and brings it back once it has caught up.
//!
//! Everything that decides is sans-IO: time is an argument, decisions are returned as data;
//! nothing spawns threads, opens sockets or sleeps except the etcd client and its test cluster.
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod cluster;
pub mod coord;
pub mod failover;
pub mod matchmaking;
mod sys;

pub use cluster::{FleetConfig, RegionCluster, RegionConfig, RegionHealth, RegionSummary};
pub use coord::{Coordinator, LocalCoordinator};
pub use matchmaking::{GlobalMatchmaking, MatchHandle, MatchRequest, MatchResult, MatchmakingConfig};
