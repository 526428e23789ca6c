use std::time::{Duration, Instant};

use super::{AutoScaler, FleetStatus, HoltWinters, ScaleDecision, ScaleError, ScalingPolicy, TargetTracking};

const MAX_PERIOD: usize = 1_000_000;

/// How a [`PredictiveScaler`] forecasts.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictiveConfig {
    /// The reactive target tracking it builds on (`target` is per server).
    pub tracking: TargetTracking,
    /// The time between samples (the forecaster's step; default 1 min).
    pub step: Duration,
    /// The season (default 1 day).
    pub season: Duration,
    /// How far ahead to provision (e.g. a server's boot time plus a margin; default 10 min).
    pub lead: Duration,
    /// Holt-Winters smoothing factors (alpha, beta, gamma).
    pub smoothing: (f64, f64, f64),
    /// Extra forecast margin as a fraction (default 0.05).
    pub margin: f64,
}

impl PredictiveConfig {
    /// Defaults around target tracking to `target` per server.
    pub fn new(target: f64) -> Self {
        Self {
            tracking: TargetTracking::new(target),
            step: Duration::from_secs(60),
            season: Duration::from_secs(86_400),
            lead: Duration::from_secs(600),
            smoothing: (0.2, 0.001, 0.4),
            margin: 0.05,
        }
    }
}

/// Scales ahead of demand: the reactive target tracking of [`AutoScaler`] raised to the
/// largest Holt-Winters forecast over the lead time: `ceil(peak × (1 + margin) / target)`
/// servers. A forecast only ever raises the fleet: scale-in happens only when the reactive part
/// asks for it. When the reactive part wants no change, a forecast raise smaller than the
/// tracking tolerance (`current × (1 + tolerance)`) is held back so the fleet grows in batches;
/// a raise still obeys the scale-up rate limits and `max`.
///
/// Feed one sample per `step` with [`handle_total`](Self::handle_total) (the fleet-wide total
/// of the metric, e.g. players online).
#[derive(Debug, Clone)]
pub struct PredictiveScaler {
    reactive: AutoScaler,
    hw: HoltWinters,
    target: f64,
    lead_steps: usize,
    margin: f64,
    last_forecast: Option<f64>,
}

impl PredictiveScaler {
    /// A predictive scaler within `min..=max` servers.
    pub fn new(config: PredictiveConfig, min: u32, max: u32) -> Result<Self, ScaleError> {
        if config.step.is_zero() || config.step.checked_mul(2).is_none_or(|s| config.season < s) {
            return Err(ScaleError::InvalidConfig("need step > 0 and season >= 2 steps"));
        }
        if config.season.as_secs_f64() / config.step.as_secs_f64() > MAX_PERIOD as f64 {
            return Err(ScaleError::InvalidConfig("season holds too many steps (at most 1 000 000)"));
        }
        if !(config.margin.is_finite() && config.margin >= 0.0) {
            return Err(ScaleError::InvalidConfig("margin must be finite and >= 0"));
        }
        let period = (config.season.as_secs_f64() / config.step.as_secs_f64()).round() as usize;
        let lead_steps =
            ((config.lead.as_secs_f64() / config.step.as_secs_f64()).ceil() as usize).min(period);
        let (a, b, g) = config.smoothing;
        let target = config.tracking.target;
        Ok(Self {
            reactive: AutoScaler::new(ScalingPolicy::TargetTracking(config.tracking), min, max)?,
            hw: HoltWinters::new(period, a, b, g)?,
            target,
            lead_steps: lead_steps.max(1),
            margin: config.margin,
            last_forecast: None,
        })
    }

    /// The largest forecast over the lead time made at the latest sample.
    pub fn last_forecast(&self) -> Option<f64> {
        self.last_forecast
    }

    /// The reactive scaler inside (for its stats).
    pub fn reactive(&self) -> &AutoScaler {
        &self.reactive
    }

    /// Handles one sample of the fleet-wide metric `total` at `now`.
    pub fn handle_total(
        &mut self,
        now: Instant,
        total: f64,
        fleet: FleetStatus,
    ) -> Result<Option<ScaleDecision>, ScaleError> {
        if !(total.is_finite() && total >= 0.0) {
            self.reactive.stats.rejected += 1;
            return Err(ScaleError::BadMetric(total));
        }
        if self.reactive.last_sample.is_some_and(|t| now < t) {
            self.reactive.stats.rejected += 1;
            return Err(ScaleError::TimeWentBack);
        }
        self.hw.observe(total);
        let peak = (1..=self.lead_steps).filter_map(|h| self.hw.forecast(h)).reduce(f64::max);
        self.last_forecast = peak;
        let floor = peak.map(|p| {
            let want = (p.max(0.0) * (1.0 + self.margin) / self.target).ceil();
            (if want >= f64::from(u32::MAX) { u32::MAX } else { want as u32 }, p)
        });
        let avg = if fleet.replicas() == 0 { total } else { total / f64::from(fleet.replicas()) };
        self.reactive.decide(now, avg, total, fleet, floor)
    }
}
