//! The multi-region layer of pvp.
//!
//! - [`coord`]: what regions must agree on (membership leases, leader election for global jobs,
//!   compare-and-set control records, watches), in-process ([`coord::LocalCoordinator`]) or on
//!   etcd (`coord::EtcdCoordinator`, feature `etcd`).
//! - [`failover`]: region health from leases and data-plane signals, and the failover planner
//!   that reroutes players when a region is down and brings it back once it has caught up.
//!
//! Both are sans-IO where they decide: time is an argument, decisions are returned as data.
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod coord;
pub mod failover;

pub use coord::{Coordinator, LocalCoordinator};
