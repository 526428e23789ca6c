//! Autoscaling: threshold steps, Kubernetes HPA-style target tracking, Agones-style Ready
//! buffers, and a forecasting [`PredictiveScaler`]; all sans-IO.
//!
//! Every scaler is aware of game-server states: a decision never goes below the fleet's
//! Allocated plus starting servers, and when it shrinks the fleet it names how many **Ready**
//! servers to remove ([`ScaleDecision::remove_ready`]); a [`ScaleTarget`] never removes an
//! Allocated server.
//!
//! ```
//! use std::time::Instant;
//! use pvp_ops::scale::{AutoScaler, FleetStatus, ScalingPolicy, TargetTracking};
//!
//! // 100 players per server at target; 10 servers are running 150 players each.
//! let mut hpa = AutoScaler::new(ScalingPolicy::TargetTracking(TargetTracking::new(100.0)), 1, 50).unwrap();
//! let fleet = FleetStatus::new(2, 8, 0);
//! let d = hpa.handle_sample(Instant::now(), 150.0, fleet).unwrap().unwrap();
//! assert_eq!((d.from, d.to), (10, 15));
//! ```

pub mod backtest;
mod forecast;
mod predictive;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use forecast::HoltWinters;
pub use predictive::{PredictiveConfig, PredictiveScaler};

use crate::{MetricSource, ScaleTarget, SourceError};

/// A fleet's game servers by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetStatus {
    /// Ready: running, holding no match; these may be removed.
    pub ready: u32,
    /// Allocated: hosting a match; never removed by a scaler.
    pub allocated: u32,
    /// Starting: asked for, not Ready yet.
    pub starting: u32,
}

impl FleetStatus {
    /// A fleet status.
    pub const fn new(ready: u32, allocated: u32, starting: u32) -> Self {
        Self { ready, allocated, starting }
    }
    /// All servers: Ready + Allocated + starting.
    pub const fn replicas(&self) -> u32 {
        self.ready.saturating_add(self.allocated).saturating_add(self.starting)
    }
    /// The fewest servers the fleet can shrink to without removing an Allocated or starting one.
    pub const fn floor(&self) -> u32 {
        self.allocated.saturating_add(self.starting)
    }
}

/// Why the scaler decided what it did.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum ScaleReason {
    /// The metric crossed the scale-up threshold.
    ThresholdUp,
    /// The metric crossed the scale-down threshold.
    ThresholdDown,
    /// Target tracking: metric / target ratio.
    TargetTracking {
        /// `value / target`.
        ratio: f64,
    },
    /// Keeping the Ready buffer.
    ReadyBuffer,
    /// The forecast over the lead time asked for more.
    Forecast {
        /// The largest forecast value over the lead time.
        forecast: f64,
    },
    /// Brought back within min/max.
    Bounds,
}

/// A resize of the fleet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleDecision {
    /// Servers before.
    pub from: u32,
    /// Servers wanted.
    pub to: u32,
    /// When shrinking: how many Ready servers to remove (`from - to`); 0 when growing.
    pub remove_ready: u32,
    /// Why.
    pub reason: ScaleReason,
}

/// Why a scaler call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ScaleError {
    /// The configuration is invalid.
    #[error("invalid scaling config: {0}")]
    InvalidConfig(&'static str),
    /// The metric value is NaN, infinite or negative.
    #[error("metric value {0} is not a finite non-negative number")]
    BadMetric(f64),
    /// A sample's time is before the previous one's.
    #[error("sample time goes back")]
    TimeWentBack,
    /// The metric source failed.
    #[error("metric source: {0}")]
    Source(#[from] SourceError),
    /// The scale target refused the decision.
    #[error("scale target: {0}")]
    Target(String),
}

/// The seed's threshold policy: step up above one threshold, step down below another,
/// at most once per cooldown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdPolicy {
    /// Scale up when the metric is above this.
    pub scale_up_threshold: f64,
    /// Scale down when the metric is below this.
    pub scale_down_threshold: f64,
    /// The least time between two scaling actions.
    pub cooldown: Duration,
    /// Servers added per step.
    pub step_up: u32,
    /// Servers removed per step.
    pub step_down: u32,
}

/// A rate limit on how much one direction may change within a period (HPA `HPAScalingPolicy`).
///
/// The period is the last `period` before `now`, start excluded as in HPA: a change made exactly
/// `period` ago no longer counts. Percentages round in the permissive direction (up by
/// `ceil(start × percent / 100)`, down to `floor(start × (100 - percent) / 100)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateLimit {
    /// At most this many servers per period.
    Pods {
        /// Servers.
        count: u32,
        /// Period.
        period: Duration,
    },
    /// At most this percentage of the servers at the period's start, per period.
    Percent {
        /// Percent (100 = double / remove all).
        percent: u32,
        /// Period.
        period: Duration,
    },
}

impl RateLimit {
    fn period(&self) -> Duration {
        match self {
            RateLimit::Pods { period, .. } | RateLimit::Percent { period, .. } => *period,
        }
    }
}

/// One direction's behaviour (HPA `HPAScalingRules`): a stabilisation window and rate limits;
/// the most permissive limit applies (HPA's `selectPolicy: Max`). No limits: unlimited.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingRules {
    /// Recommendations made less than this long ago are considered, with the newest one
    /// (scale-up takes their minimum, scale-down their maximum); as in HPA, one made exactly
    /// `stabilization` ago has left the window.
    pub stabilization: Duration,
    /// Rate limits.
    pub limits: Vec<RateLimit>,
}

/// Target tracking as Kubernetes' HPA does it: `desired = ceil(current × value / target)`,
/// no change within the tolerance band, then stabilisation windows and rate limits.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetTracking {
    /// The wanted per-server value of the metric.
    pub target: f64,
    /// No change while `|value / target - 1| <= tolerance` (HPA default 0.1).
    pub tolerance: f64,
    /// Scale-up behaviour (HPA default: no stabilisation, max(4 pods, 100 %) per 15 s).
    pub scale_up: ScalingRules,
    /// Scale-down behaviour (HPA default: 300 s stabilisation, 100 % per 15 s).
    pub scale_down: ScalingRules,
}

impl TargetTracking {
    /// Target tracking to `target` per server with HPA's default behaviour.
    pub fn new(target: f64) -> Self {
        let p15 = Duration::from_secs(15);
        Self {
            target,
            tolerance: 0.1,
            scale_up: ScalingRules {
                stabilization: Duration::ZERO,
                limits: vec![
                    RateLimit::Pods { count: 4, period: p15 },
                    RateLimit::Percent { percent: 100, period: p15 },
                ],
            },
            scale_down: ScalingRules {
                stabilization: Duration::from_secs(300),
                limits: vec![RateLimit::Percent { percent: 100, period: p15 }],
            },
        }
    }
}

/// How big the Ready buffer is (Agones FleetAutoscaler `bufferSize`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadyBuffer {
    /// Keep this many Ready servers.
    Count(u32),
    /// Keep this percentage (1..=99) of the fleet Ready.
    Percent(u32),
}

/// What a scaler scales on.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ScalingPolicy {
    /// The seed's thresholds and steps.
    Threshold(ThresholdPolicy),
    /// HPA target tracking on a per-server metric.
    TargetTracking(TargetTracking),
    /// Agones-style buffer of Ready servers over the Allocated ones (the metric is ignored).
    ReadyBuffer(ReadyBuffer),
}

/// Counters the scaler keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScalerStats {
    /// Samples handled.
    pub samples: u64,
    /// Scale-up decisions.
    pub scale_ups: u64,
    /// Scale-down decisions.
    pub scale_downs: u64,
    /// Samples refused (bad value, time going back).
    pub rejected: u64,
    /// Times a scale-down was held back to spare Allocated or starting servers.
    pub allocated_protected: u64,
}

/// A sans-IO autoscaler: [`handle_sample`](Self::handle_sample) takes the time, the metric and
/// the fleet and returns a decision to apply (or none).
#[derive(Debug, Clone)]
pub struct AutoScaler {
    policy: ScalingPolicy,
    min: u32,
    max: u32,
    recommendations: VecDeque<(Instant, u32)>,
    events: VecDeque<(Instant, i64)>,
    last_action: Option<Instant>,
    pub(crate) last_sample: Option<Instant>,
    pub(crate) stats: ScalerStats,
}

impl AutoScaler {
    /// A scaler keeping the fleet within `min..=max` servers (Allocated servers can hold it above
    /// `max`: they are never removed).
    pub fn new(policy: ScalingPolicy, min: u32, max: u32) -> Result<Self, ScaleError> {
        if min > max {
            return Err(ScaleError::InvalidConfig("min > max"));
        }
        match &policy {
            ScalingPolicy::Threshold(t) => {
                if !(t.scale_up_threshold.is_finite() && t.scale_down_threshold.is_finite())
                    || t.scale_down_threshold >= t.scale_up_threshold
                {
                    return Err(ScaleError::InvalidConfig("need finite down < up thresholds"));
                }
                if t.step_up == 0 || t.step_down == 0 {
                    return Err(ScaleError::InvalidConfig("steps must be >= 1"));
                }
            }
            ScalingPolicy::TargetTracking(t) => {
                if !(t.target.is_finite() && t.target > 0.0) {
                    return Err(ScaleError::InvalidConfig("target must be finite and > 0"));
                }
                if !(t.tolerance.is_finite() && (0.0..1.0).contains(&t.tolerance)) {
                    return Err(ScaleError::InvalidConfig("tolerance must be in [0, 1)"));
                }
                let bad = |r: &ScalingRules| {
                    r.limits.iter().any(|l| {
                        l.period().is_zero()
                            || matches!(
                                l,
                                RateLimit::Pods { count: 0, .. } | RateLimit::Percent { percent: 0, .. }
                            )
                    })
                };
                if bad(&t.scale_up) || bad(&t.scale_down) {
                    return Err(ScaleError::InvalidConfig("rate limits need a period and a non-zero amount"));
                }
            }
            ScalingPolicy::ReadyBuffer(b) => {
                if matches!(b, ReadyBuffer::Percent(p) if *p == 0 || *p >= 100) {
                    return Err(ScaleError::InvalidConfig("buffer percent must be 1..=99"));
                }
            }
        }
        Ok(Self {
            policy,
            min,
            max,
            recommendations: VecDeque::new(),
            events: VecDeque::new(),
            last_action: None,
            last_sample: None,
            stats: ScalerStats::default(),
        })
    }

    /// The policy.
    pub fn policy(&self) -> &ScalingPolicy {
        &self.policy
    }

    /// Counters about this scaler.
    pub fn stats(&self) -> ScalerStats {
        self.stats
    }

    /// Handles one metric sample at `now`. For target tracking `value` is the per-server
    /// average (as HPA's); for thresholds it is compared to the thresholds; a Ready buffer
    /// ignores it. Returns the decision to apply, if any; the scaler assumes it is applied.
    pub fn handle_sample(
        &mut self,
        now: Instant,
        value: f64,
        fleet: FleetStatus,
    ) -> Result<Option<ScaleDecision>, ScaleError> {
        let total = value * f64::from(fleet.replicas());
        self.decide(now, value, total, fleet, None)
    }

    /// Like [`handle_sample`](Self::handle_sample) with the metric's fleet-wide total (target
    /// tracking computes `ceil(total / target)`, which also works for an empty fleet).
    pub fn handle_total(
        &mut self,
        now: Instant,
        total: f64,
        fleet: FleetStatus,
    ) -> Result<Option<ScaleDecision>, ScaleError> {
        let avg = if fleet.replicas() == 0 { total } else { total / f64::from(fleet.replicas()) };
        self.decide(now, avg, total, fleet, None)
    }

    pub(crate) fn decide(
        &mut self,
        now: Instant,
        value: f64,
        total: f64,
        fleet: FleetStatus,
        floor: Option<(u32, f64)>,
    ) -> Result<Option<ScaleDecision>, ScaleError> {
        if !(value.is_finite() && value >= 0.0 && total.is_finite()) {
            self.stats.rejected += 1;
            return Err(ScaleError::BadMetric(value));
        }
        if self.last_sample.is_some_and(|t| now < t) {
            self.stats.rejected += 1;
            return Err(ScaleError::TimeWentBack);
        }
        self.last_sample = Some(now);
        self.stats.samples += 1;
        let current = fleet.replicas();
        let (mut desired, mut reason) = match &self.policy {
            ScalingPolicy::Threshold(t) => {
                let cooled = self.last_action.is_none_or(|l| now.duration_since(l) >= t.cooldown);
                if !cooled {
                    (current, ScaleReason::Bounds)
                } else if value > t.scale_up_threshold {
                    (current.saturating_add(t.step_up), ScaleReason::ThresholdUp)
                } else if value < t.scale_down_threshold {
                    (current.saturating_sub(t.step_down), ScaleReason::ThresholdDown)
                } else {
                    (current, ScaleReason::Bounds)
                }
            }
            ScalingPolicy::TargetTracking(t) => {
                let tt = t.clone();
                self.track(now, &tt, total, current)
            }
            ScalingPolicy::ReadyBuffer(b) => {
                let want = match b {
                    ReadyBuffer::Count(n) => fleet.allocated.saturating_add(*n),
                    ReadyBuffer::Percent(p) => {
                        let a = f64::from(fleet.allocated);
                        (a * 100.0 / f64::from(100 - p)).ceil() as u32
                    }
                };
                (want, ScaleReason::ReadyBuffer)
            }
        };
        if let Some((f, forecast)) = floor {
            // A forecast may raise the fleet; it never lowers what the reactive part wants.
            // Small raises are batched (the tolerance band) so the fleet does not grow one
            // server a minute.
            let tol = match &self.policy {
                ScalingPolicy::TargetTracking(t) => t.tolerance,
                _ => 0.0,
            };
            let worth = desired != current || f64::from(f) > f64::from(current) * (1.0 + tol);
            if f > desired && worth {
                desired = f;
                reason = ScaleReason::Forecast { forecast };
            }
        }
        if let ScalingPolicy::TargetTracking(t) = &self.policy {
            desired = rate_limit(&mut self.events, now, t, current, desired);
        }
        let clamped = desired.clamp(self.min, self.max);
        if clamped != desired {
            desired = clamped;
            if desired == current {
                reason = ScaleReason::Bounds;
            }
        }
        if desired < fleet.floor() {
            self.stats.allocated_protected += 1;
            desired = fleet.floor();
        }
        if desired == current {
            return Ok(None);
        }
        self.last_action = Some(now);
        self.events.push_back((now, i64::from(desired) - i64::from(current)));
        if desired > current {
            self.stats.scale_ups += 1;
            metrics::counter!("pvp_ops_scale_decisions_total", "direction" => "up").increment(1);
        } else {
            self.stats.scale_downs += 1;
            metrics::counter!("pvp_ops_scale_decisions_total", "direction" => "down").increment(1);
        }
        Ok(Some(ScaleDecision {
            from: current,
            to: desired,
            remove_ready: current.saturating_sub(desired),
            reason,
        }))
    }

    fn track(&mut self, now: Instant, t: &TargetTracking, total: f64, current: u32) -> (u32, ScaleReason) {
        let ratio = if current == 0 { f64::INFINITY } else { total / (f64::from(current) * t.target) };
        // A hair of slack so a ratio exactly on the band's edge (110 / 100 with 0.1) counts as
        // inside despite `1.1 - 1.0 > 0.1` in floats.
        let raw = if current > 0 && (ratio - 1.0).abs() <= t.tolerance + 1e-9 {
            current
        } else {
            let d = (total / t.target).ceil();
            if d >= f64::from(u32::MAX) { u32::MAX } else { d as u32 }
        };
        // Stabilisation: the newest recommendation with the window's history.
        let keep = t.scale_up.stabilization.max(t.scale_down.stabilization);
        while self.recommendations.front().is_some_and(|(at, _)| now.duration_since(*at) >= keep) {
            self.recommendations.pop_front();
        }
        self.recommendations.push_back((now, raw));
        let (mut up, mut down) = (raw, raw);
        for (at, r) in &self.recommendations {
            let age = now.duration_since(*at);
            if age < t.scale_up.stabilization {
                up = up.min(*r);
            }
            if age < t.scale_down.stabilization {
                down = down.max(*r);
            }
        }
        let mut desired = current;
        if desired < up {
            desired = up;
        }
        if desired > down {
            desired = down;
        }
        let ratio = if ratio.is_finite() { ratio } else { 0.0 };
        (desired, ScaleReason::TargetTracking { ratio })
    }
}

fn rate_limit(
    events: &mut VecDeque<(Instant, i64)>,
    now: Instant,
    t: &TargetTracking,
    current: u32,
    desired: u32,
) -> u32 {
    let longest =
        t.scale_up.limits.iter().chain(&t.scale_down.limits).map(RateLimit::period).max().unwrap_or_default();
    while events.front().is_some_and(|(at, _)| now.duration_since(*at) >= longest) {
        events.pop_front();
    }
    let changed = |period: Duration, up: bool| -> i64 {
        events
            .iter()
            .filter(|(at, d)| now.duration_since(*at) < period && ((*d > 0) == up))
            .map(|(_, d)| d.abs())
            .sum()
    };
    let cur = i64::from(current);
    if desired > current && !t.scale_up.limits.is_empty() {
        let limit = t
            .scale_up
            .limits
            .iter()
            .map(|l| {
                let start = (cur - changed(l.period(), true)).max(0);
                match l {
                    RateLimit::Pods { count, .. } => start + i64::from(*count),
                    // Integer maths: `start * 1.12` in floats can land just above a whole
                    // number and let one server too many through.
                    RateLimit::Percent { percent, .. } => {
                        start.saturating_mul(100 + i64::from(*percent)).saturating_add(99) / 100
                    }
                }
            })
            .max()
            .unwrap_or(i64::MAX)
            .max(cur);
        return desired.min(u32::try_from(limit).unwrap_or(u32::MAX));
    }
    if desired < current && !t.scale_down.limits.is_empty() {
        let limit = t
            .scale_down
            .limits
            .iter()
            .map(|l| {
                let start = cur + changed(l.period(), false);
                match l {
                    RateLimit::Pods { count, .. } => start - i64::from(*count),
                    RateLimit::Percent { percent, .. } => {
                        (start * (100 - i64::from(*percent).min(100))).div_euclid(100)
                    }
                }
            })
            .min()
            .unwrap_or(0)
            .clamp(0, cur);
        return desired.max(u32::try_from(limit).unwrap_or(0));
    }
    desired
}

impl AutoScaler {
    /// A thin driver: reads `metric` from `source` (as a per-server value), decides, and applies
    /// the decision to `target`.
    ///
    /// A source error changes nothing. When `target` refuses the decision the error
    /// ([`ScaleError::Target`]) is returned, and the scaler still counts the decision as taken
    /// (its cooldown and rate limits include it), as with [`handle_sample`](Self::handle_sample).
    pub fn drive(
        &mut self,
        now: Instant,
        metric: &str,
        source: &mut dyn MetricSource,
        target: &mut dyn ScaleTarget,
    ) -> Result<Option<ScaleDecision>, ScaleError> {
        let value = source.metric_value(metric)?;
        let fleet = target.fleet();
        let d = self.handle_sample(now, value, fleet)?;
        if let Some(d) = &d {
            target.apply(d)?;
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_tolerance_and_scale_down_window() {
        let mut s =
            AutoScaler::new(ScalingPolicy::TargetTracking(TargetTracking::new(100.0)), 1, 100).unwrap();
        let t0 = Instant::now();
        // within 10 %: nothing
        assert_eq!(s.handle_sample(t0, 105.0, FleetStatus::new(10, 0, 0)).unwrap(), None);
        // load drops: the 300 s window still holds the earlier recommendation (10)
        assert_eq!(
            s.handle_sample(t0 + Duration::from_secs(60), 50.0, FleetStatus::new(10, 0, 0)).unwrap(),
            None
        );
        let d = s
            .handle_sample(t0 + Duration::from_secs(400), 50.0, FleetStatus::new(10, 0, 0))
            .unwrap()
            .unwrap();
        assert_eq!(d.to, 5);
        assert_eq!(d.remove_ready, 5);
    }

    #[test]
    fn scale_up_rate_limited() {
        let mut s =
            AutoScaler::new(ScalingPolicy::TargetTracking(TargetTracking::new(10.0)), 0, 1000).unwrap();
        let t0 = Instant::now();
        let d = s.handle_sample(t0, 100.0, FleetStatus::new(2, 0, 0)).unwrap().unwrap();
        // max(2 + 4, 2 * 2) = 6 within 15 s
        assert_eq!(d.to, 6);
        assert_eq!(
            s.handle_sample(t0 + Duration::from_secs(5), 100.0, FleetStatus::new(6, 0, 0)).unwrap(),
            None
        );
    }

    #[test]
    fn never_removes_allocated() {
        let p = ThresholdPolicy {
            scale_up_threshold: 0.8,
            scale_down_threshold: 0.3,
            cooldown: Duration::ZERO,
            step_up: 2,
            step_down: 10,
        };
        let mut s = AutoScaler::new(ScalingPolicy::Threshold(p), 0, 100).unwrap();
        let d = s.handle_sample(Instant::now(), 0.1, FleetStatus::new(3, 7, 0)).unwrap().unwrap();
        assert_eq!(d.to, 7);
        assert_eq!(d.remove_ready, 3);
        assert_eq!(s.handle_sample(Instant::now(), 0.1, FleetStatus::new(0, 7, 0)).unwrap(), None);
    }
}
