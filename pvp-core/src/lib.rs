//! Primitives every pvp layer uses.
//!
//! - [`queue`]: [`BoundedQueue`], a bounded lock-free MPMC ring with batch operations, and
//!   [`UnboundedQueue`], its unbounded sibling with safe memory reclamation.
//! - [`ids`]: players, matches, servers, regions and zones.
//! - [`hlc`]: hybrid logical clock stamps that order events across regions.
//! - [`topology`]: NUMA nodes, cores and PUs, from the machine or a synthetic description.
//! - [`numa`]: NUMA-aware allocator, node-local containers and a global allocator.
//!
//! `pvp-core` depends on no other pvp crate; `pvp-net`, `pvp-global` and `pvp-ops` build on it.
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

pub mod hlc;
pub mod ids;
pub mod numa;
mod primitive;
pub mod queue;
mod sys;
pub mod topology;

pub use ids::{MatchId, PlayerId, RegionId, ServerId, ZoneId};
pub use numa::{NodeBox, NumaAllocator, NumaGlobalAlloc};
#[allow(deprecated)]
pub use queue::LockFreeQueue;
pub use queue::{BoundedQueue, QueueError, UnboundedQueue};
pub use topology::{NodeId, Topology};
