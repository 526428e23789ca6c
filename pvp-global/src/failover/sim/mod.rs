//! Deterministic failover simulations (feature `sim`): the kr / jp / sg scenarios that the
//! failover tests assert on and the `failover_sim`, `failover_integrated` and
//! `etcd_failover_procs` examples measure over many seeds.
//!
//! - [`planner`]: region agents on `LocalCoordinator` leases feeding a
//!   [`RegionHealthTracker`](super::RegionHealthTracker) and a
//!   [`FailoverPlanner`](super::FailoverPlanner), players placed by the planner's routes.
//! - [`integrated`]: the same fault against the real layers: [`RegionFailover`](super::RegionFailover)
//!   steering `GlobalMatchmaking`, one `CrossRegionSync` per region on a simulated network,
//!   and the catch-up gate reading sync progress.
//! - `procs` (with feature `etcd` as well): the scenario with each region in its own OS
//!   process on a real etcd cluster on loopback, wall-clock time.
//!
//! kr is cut off under match load and healed; each run reports detection, reroute and return
//! times and every count the tests hold to zero. The in-process simulations run on virtual
//! time: one seed is one run, and the same seed replays exactly.

pub mod integrated;
pub mod planner;
#[cfg(feature = "etcd")]
pub mod procs;
