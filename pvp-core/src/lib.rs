//! Primitives every pvp layer uses.
//!
//! - [`ids`]: players, matches, servers, regions and zones.
//! - [`topology`]: NUMA nodes, cores and PUs, from the machine or a synthetic description.
//! - [`numa`]: NUMA-aware allocator, node-local containers and a global allocator.
//!
//! `pvp-core` depends on no other pvp crate; `pvp-net`, `pvp-global` and `pvp-ops` build on it.
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

pub mod ids;
pub mod numa;
mod primitive;
mod sys;
pub mod topology;

pub use ids::{MatchId, PlayerId, RegionId, ServerId, ZoneId};
pub use numa::{NodeBox, NumaAllocator, NumaGlobalAlloc};
pub use topology::{NodeId, Topology};
