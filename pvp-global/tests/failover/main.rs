//! Failover through the public API: region health from leases and data-plane signals
//! (`health`), the failover planner (`planner`), `RegionFailover` and its catch-up gate
//! (`controller`), and, with the `sim` feature, the deterministic kr / jp / sg simulations of
//! `pvp_global::failover::sim` (`planner_sim`, `integrated_sim`).

#[path = "../common/mod.rs"]
mod common;
mod controller;
mod health;
#[cfg(feature = "sim")]
mod integrated_sim;
mod planner;
#[cfg(feature = "sim")]
mod planner_sim;

use std::time::Duration;

use pvp_core::ids::RegionId;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn r(s: &str) -> RegionId {
    RegionId::new(s).unwrap()
}
