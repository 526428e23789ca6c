//! The traits other pvp crates implement so ops can drive them.

use std::time::Duration;

use crate::chaos::{Fault, FaultError};
use crate::scale::{FleetStatus, ScaleDecision, ScaleError};
use crate::slo::{Sli, SliReading};

/// Something that can inject one or more kinds of [`Fault`] and revert them.
///
/// The [`ChaosEngine`](crate::chaos::ChaosEngine) calls [`inject`](Self::inject) once per fault
/// and [`revert`](Self::revert) exactly once for every successful `inject`, even on abort or
/// panic. `revert` must leave the system as it was before `inject`.
pub trait FaultInjector: Send {
    /// A short name for reports.
    fn name(&self) -> &str;
    /// Whether this injector handles `fault` (its kind and target).
    fn supports(&self, fault: &Fault) -> bool;
    /// Starts the fault.
    fn inject(&mut self, fault: &Fault) -> Result<(), FaultError>;
    /// Stops the fault and restores the previous state.
    fn revert(&mut self, fault: &Fault) -> Result<(), FaultError>;
}

/// A fleet of game servers that an [`AutoScaler`](crate::scale::AutoScaler) resizes.
pub trait ScaleTarget {
    /// The fleet's current state: how many servers are Ready, Allocated and starting.
    fn fleet(&self) -> FleetStatus;
    /// Applies a decision. When it shrinks the fleet, the target removes
    /// [`ScaleDecision::remove_ready`] Ready servers and never an Allocated one.
    fn apply(&mut self, decision: &ScaleDecision) -> Result<(), ScaleError>;
}

/// Where an autoscaler reads the metric it scales on.
pub trait MetricSource {
    /// The metric's current value (a gauge's value or a counter's total).
    fn metric_value(&mut self, metric: &str) -> Result<f64, SourceError>;
}

/// Where an [`SloMonitor`](crate::slo::SloMonitor) reads its SLIs.
pub trait SliSource {
    /// Reads `sli` now: cumulative event counts, or the quantile of the latest interval.
    fn read_sli(&mut self, sli: &Sli) -> Result<SliReading, SourceError>;
}

/// Why a [`MetricSource`] or [`SliSource`] could not answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The source has no series of that name (yet).
    #[error("no data for `{0}`")]
    NoData(String),
    /// The source could not be reached (connection refused, timeout, ...).
    #[error("source unreachable: {0}")]
    Unreachable(String),
    /// The source answered with an HTTP error status.
    #[error("source answered HTTP {status}: {message}")]
    Http {
        /// The HTTP status.
        status: u16,
        /// The error text the source gave.
        message: String,
    },
    /// The source answered something that is not a well-formed reply.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The query itself was refused (bad PromQL, ...).
    #[error("query failed ({kind}): {message}")]
    Query {
        /// Prometheus' `errorType`.
        kind: String,
        /// Prometheus' `error`.
        message: String,
    },
    /// The answer held several series where one was expected.
    #[error("ambiguous answer: {0} series where one was expected")]
    Ambiguous(usize),
    /// The source did not answer in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}
