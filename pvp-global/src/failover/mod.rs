//! Region failure detection and failover, sans-IO.
//!
//! - [`RegionHealthTracker`] turns lease liveness (a coordinator watch) and data-plane signals
//!   (heartbeats, request outcomes) into [`RegionHealth`] per region, with hysteresis.
//! - [`FailoverPlanner`] turns health into routing: while a region is Down it routes new matches
//!   to the next-best region within each player's latency limit ([`FailoverPlanner::route`]),
//!   offers players on the lost region's servers a reconnect elsewhere
//!   ([`FailoverDecision::OfferReconnect`]), and when the region returns it asks for an
//!   anti-entropy catch-up ([`FailoverDecision::AwaitingCatchUp`]) and routes to it again only
//!   after [`FailoverPlanner::handle_caught_up`].
//!
//! - [`RegionFailover`] drives both together and wires them to the rest of the global layer:
//!   it marks non-serving regions Down in [`GlobalMatchmaking`](crate::GlobalMatchmaking)
//!   ([`RegionFailover::apply_to`]) and opens the catch-up gate of a returning region from
//!   cross-region sync progress ([`SyncProgress`], read from each region's
//!   [`CrossRegionSync`](crate::CrossRegionSync)).
//!
//! - `sim` (feature `sim`): deterministic kr / jp / sg simulations of a region failing under
//!   match load, against the bare planner and against the real layers (and, with `etcd`, as
//!   three OS processes on a real etcd): what the failover tests assert and the examples measure.
//!
//! Inputs and outputs are plain data, so that matchmaking (which places players), cross-region
//! sync (which reports catch-up) and the connect-token issuer can be wired to it by the
//! assembling code.
//!
//! ```
//! use std::time::Duration;
//! use pvp_core::ids::{PlayerId, RegionId, ServerId};
//! use pvp_global::failover::*;
//!
//! let [kr, jp, sg] = ["kr", "jp", "sg"].map(|r| RegionId::new(r).unwrap());
//! let ms = Duration::from_millis;
//! let mut latency = LatencyMatrix::default();
//! latency.set_symmetric(kr, jp, ms(35));
//! latency.set_symmetric(kr, sg, ms(75));
//! latency.set_symmetric(jp, sg, ms(70));
//! for r in [kr, jp, sg] { latency.set(r, r, ms(5)); }
//!
//! let mut planner = FailoverPlanner::new(PlannerConfig::default(), latency);
//! for r in [kr, jp, sg] { planner.add_region(r)?; }
//! planner.handle_session_placed(PlayerSession {
//!     player: PlayerId::new(1), server: ServerId::new(10), region: kr, origin: kr,
//!     latency_limit: ms(60),
//! })?;
//! assert_eq!(planner.route(kr, ms(60)), Some(kr));
//!
//! planner.handle_health(ms(1000), kr, RegionHealth::Down)?;
//! assert_eq!(planner.route(kr, ms(60)), Some(jp));   // next best within 60 ms
//! assert_eq!(planner.route(kr, ms(20)), None);       // nothing within 20 ms: wait
//! let decisions: Vec<_> = std::iter::from_fn(|| planner.poll_decision()).collect();
//! assert!(decisions.contains(&FailoverDecision::OfferReconnect {
//!     player: PlayerId::new(1), from_server: ServerId::new(10), from: kr, to: jp,
//! }));
//!
//! // kr is back, but takes matches only once it has caught up.
//! planner.handle_health(ms(9000), kr, RegionHealth::Healthy)?;
//! assert_eq!(planner.route(kr, ms(60)), Some(jp));
//! planner.handle_caught_up(ms(9500), kr)?;
//! assert_eq!(planner.route(kr, ms(60)), Some(kr));
//! # Ok::<(), FailoverError>(())
//! ```

mod controller;
mod health;
mod planner;
#[cfg(feature = "sim")]
pub mod sim;

use pvp_core::ids::{PlayerId, RegionId};

pub use controller::{CatchUpStatus, RegionFailover, RegionFailoverStats, SyncProgress};
pub use health::{
    HealthPolicy, HealthStats, HealthTransition, MAX_REGIONS, RegionHealth, RegionHealthTracker,
};
pub use planner::{
    FailoverDecision, FailoverPlanner, LatencyMatrix, PlannerConfig, PlannerStats, PlayerSession,
    RegionAvailability, RoutingTable,
};

/// Why a failover input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FailoverError {
    /// The region was never added.
    #[error("region {0} is not tracked")]
    UnknownRegion(RegionId),
    /// More than [`MAX_REGIONS`] regions.
    #[error("too many regions")]
    TooManyRegions,
    /// A [`HealthPolicy`] that [`HealthPolicy::validate`] refuses (unordered, zero or NaN).
    #[error("invalid health policy")]
    InvalidPolicy,
    /// The session table is full ([`PlannerConfig::max_sessions`]).
    #[error("session table full")]
    TooManySessions,
    /// The player has no session.
    #[error("player {0} has no session")]
    UnknownPlayer(PlayerId),
    /// A catch-up report for a region that is not waiting for one.
    #[error("region {0} is not waiting for a catch-up")]
    NotCatchingUp(RegionId),
    /// Bytes that are not an encoded [`RoutingTable`].
    #[error("routing table does not decode")]
    BadRoutingTable,
}
