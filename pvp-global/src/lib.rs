//! The multi-region layer of pvp.
//!
//! - [`crdt`]: the replicated data types (LWW register, max register, G-/PN-counter, add-wins
//!   OR-set, maps and player profiles).
//! - [`sync`]: CrossRegionSync, the sans-IO delta-state replication protocol with EVENTUAL and
//!   STRONG strategies, anti-entropy, transports (simulated and UDP) and snapshots.
//! - [`leaderboard`]: the global leaderboard per game mode with `O(log n)` rank queries.
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

pub mod crdt;
pub mod leaderboard;
pub mod sync;

pub use leaderboard::{GameMode, GlobalLeaderboard, Leaderboard, ScoreOperator};
pub use sync::{SyncConfig, SyncNode};
