//! Operations for pvp: chaos experiments, autoscaling and SLO monitoring.
//!
//! - [`chaos`]: the [`ChaosEngine`](chaos::ChaosEngine) runs experiments
//!   ([`run_experiment`](chaos::ChaosEngine::run_experiment)) that inject faults through
//!   [`FaultInjector`]s and revert every one of them when its duration ends, when the experiment
//!   ends or aborts, and when a guard is dropped during a panic. It ships injectors for CPU
//!   stress, memory pressure, disk fill, crashes (through a user's [`chaos::CrashTarget`]) and
//!   network faults through an in-process UDP/TCP [`FaultProxy`](chaos::proxy::FaultProxy).
//! - [`scale`]: a sans-IO [`AutoScaler`](scale::AutoScaler) (threshold steps or Kubernetes
//!   HPA-style target tracking, aware of Allocated/Ready game servers), a
//!   [`PredictiveScaler`](scale::PredictiveScaler) (Holt-Winters, daily season) and a
//!   [`backtest`](scale::backtest) harness.
//! - [`slo`]: a sans-IO [`SloMonitor`](slo::SloMonitor) with error budgets, multi-window
//!   multi-burn-rate alerts and Prometheus rule export.
//! - [`metrics`]: an in-process registry ([`MetricsRegistry`](metrics::MetricsRegistry)) that
//!   is a `metrics` 0.24 facade recorder, rendered in the Prometheus text format and served at
//!   `/metrics` by [`MetricsServer`](metrics::MetricsServer).
//! - `hosts` (feature `hosts`, Linux, root): hosts as network namespaces on a router whose
//!   user-space shaper delays, drops or cuts each direction of each link, processes started,
//!   killed, frozen and restarted in them, and [`HostFaults`](hosts::HostFaults), the
//!   injector for all of that.
//! - [`prom`]: a client for a Prometheus server's HTTP query API, usable as an [`SliSource`]
//!   and a [`MetricSource`].
//!
//! Other pvp crates implement [`FaultInjector`], [`ScaleTarget`], [`MetricSource`] and
//! [`SliSource`] behind a feature or in the assembling code; this crate depends on no pvp crate
//! but `pvp-core`.
//!
//! # Fault points
//!
//! [`fail_point!`] marks a place where a test may inject a failure. Without the `failpoints`
//! feature it expands to nothing; with it, it is the `fail` crate's `fail_point!`.
//!
//! ```
//! fn load_config() -> Result<u32, String> {
//!     pvp_ops::fail_point!("load-config", |_| Err("injected".to_string()));
//!     Ok(7)
//! }
//! assert_eq!(load_config(), Ok(7));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

pub mod chaos;
#[cfg(feature = "hosts")]
pub mod hosts;
pub mod metrics;
pub mod prom;
pub mod scale;
pub mod slo;
mod traits;

pub use traits::{FaultInjector, MetricSource, ScaleTarget, SliSource, SourceError};

#[cfg(feature = "failpoints")]
#[doc(hidden)]
pub use fail as __fail;

/// A fault point: live with the `failpoints` feature (the `fail` crate's `fail_point!`),
/// nothing at all without it.
///
/// Takes the same forms as `fail::fail_point!`: `fail_point!("name")`,
/// `fail_point!("name", |arg| return_expr)` and `fail_point!("name", cond, |arg| expr)`.
#[cfg(feature = "failpoints")]
#[macro_export]
macro_rules! fail_point {
    ($($t:tt)*) => { $crate::__fail::fail_point!($($t)*) };
}

/// A fault point: live with the `failpoints` feature (the `fail` crate's `fail_point!`),
/// nothing at all without it.
///
/// Takes the same forms as `fail::fail_point!`: `fail_point!("name")`,
/// `fail_point!("name", |arg| return_expr)` and `fail_point!("name", cond, |arg| expr)`.
#[cfg(not(feature = "failpoints"))]
#[macro_export]
macro_rules! fail_point {
    ($($t:tt)*) => {};
}
