//! Replays a demand trace against reactive, predictive and fixed capacity.
//!
//! The simulated fleet: each server holds `capacity` players; a server asked for becomes Ready
//! `boot_delay` later; a removed server goes at once (only Ready, unallocated ones are removed).
//! Every minute the scaler sees the fleet-wide player count. A minute is *under demand* when
//! players exceed the Ready+Allocated capacity; starting servers cost instance-hours too.
//!
//! ```
//! use pvp_ops::scale::backtest::{synthetic_trace, Backtest, TraceConfig};
//!
//! let trace = synthetic_trace(&TraceConfig { days: 2, ..TraceConfig::default() });
//! assert_eq!(trace.len(), 2 * 1440);
//! let bt = Backtest::new(1000.0, 5);
//! let fixed = bt.run_fixed(&trace, 100);
//! assert_eq!(fixed.scaling_actions, 0);
//! assert!((fixed.instance_hours - 100.0 * 48.0).abs() < 1e-6);
//! ```

use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{
    AutoScaler, FleetStatus, PredictiveConfig, PredictiveScaler, ScaleDecision, ScaleError, ScalingPolicy,
    TargetTracking,
};

/// The shape of a synthetic diurnal player-count trace (one sample a minute).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// Days.
    pub days: usize,
    /// Players at the daily low.
    pub low: f64,
    /// Players at the daily peak.
    pub peak: f64,
    /// Minute of the day of the peak (default 21:00).
    pub peak_minute: usize,
    /// Multiplicative Gaussian-ish noise, standard deviation as a fraction (default 0.03).
    pub noise: f64,
    /// Weekend days get this factor on top (default 1.15; days 5 and 6).
    pub weekend_factor: f64,
    /// A surprise spike: (start minute, length in minutes, factor), `None` for none.
    pub spike: Option<(usize, usize, f64)>,
    /// RNG seed.
    pub seed: u64,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            days: 7,
            low: 20_000.0,
            peak: 100_000.0,
            peak_minute: 21 * 60,
            noise: 0.03,
            weekend_factor: 1.15,
            spike: Some((4 * 1440 + 14 * 60, 90, 1.8)),
            seed: 7,
        }
    }
}

/// A synthetic trace: a daily cosine between `low` and `peak`, weekend uplift, noise and a
/// surprise spike that ramps in over 10 minutes.
pub fn synthetic_trace(c: &TraceConfig) -> Vec<f64> {
    let mut rng = SmallRng::seed_from_u64(c.seed);
    let n = c.days * 1440;
    (0..n)
        .map(|i| {
            let day = i / 1440;
            let m = (i % 1440) as f64;
            let phase = (m - c.peak_minute as f64) / 1440.0 * std::f64::consts::TAU;
            let shape = 0.5 * (1.0 + phase.cos()); // 1 at the peak, 0 twelve hours away
            let mut v = c.low + (c.peak - c.low) * shape.powf(1.5);
            if day % 7 >= 5 {
                v *= c.weekend_factor;
            }
            // Sum of uniforms: a cheap bell-shaped noise with the given standard deviation.
            let u: f64 = (0..3).map(|_| rng.random::<f64>() - 0.5).sum::<f64>() * 2.0;
            v *= 1.0 + c.noise * u;
            if let Some((start, len, factor)) = c.spike {
                if i >= start && i < start + len {
                    let ramp = ((i - start) as f64 / 10.0).min(1.0);
                    v *= 1.0 + (factor - 1.0) * ramp;
                }
            }
            v.max(0.0)
        })
        .collect()
}

/// What one strategy did over a trace.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BacktestReport {
    /// The strategy's name.
    pub strategy: String,
    /// Minutes in which demand exceeded running capacity.
    pub under_demand_minutes: u64,
    /// Player-minutes not served (the depth of the shortfall).
    pub unserved_player_minutes: f64,
    /// Instance-hours paid for (starting, Ready and Allocated servers).
    pub instance_hours: f64,
    /// Scaling actions taken.
    pub scaling_actions: u64,
    /// The most servers at once.
    pub peak_servers: u32,
}

/// The simulated fleet and its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backtest {
    capacity: f64,
    boot_minutes: usize,
}

struct Sim {
    ready: u32,
    starting: Vec<usize>,
}

impl Backtest {
    /// Servers holding `capacity` players each, Ready `boot_minutes` after being asked for.
    pub fn new(capacity: f64, boot_minutes: usize) -> Self {
        Self { capacity: capacity.max(1.0), boot_minutes }
    }

    fn run(
        &self,
        name: &str,
        trace: &[f64],
        initial: u32,
        mut step: impl FnMut(Instant, f64, FleetStatus) -> Result<Option<ScaleDecision>, ScaleError>,
    ) -> BacktestReport {
        let t0 = Instant::now();
        let mut sim = Sim { ready: initial, starting: Vec::new() };
        let mut r = BacktestReport {
            strategy: name.to_string(),
            under_demand_minutes: 0,
            unserved_player_minutes: 0.0,
            instance_hours: 0.0,
            scaling_actions: 0,
            peak_servers: initial,
        };
        for (minute, &demand) in trace.iter().enumerate() {
            let booted = sim.starting.iter().filter(|&&at| at <= minute).count() as u32;
            sim.starting.retain(|&at| at > minute);
            sim.ready += booted;
            let cap = f64::from(sim.ready) * self.capacity;
            if demand > cap {
                r.under_demand_minutes += 1;
                r.unserved_player_minutes += demand - cap;
            }
            let allocated = ((demand / self.capacity).ceil() as u32).min(sim.ready);
            let fleet = FleetStatus::new(sim.ready - allocated, allocated, sim.starting.len() as u32);
            let now = t0 + Duration::from_secs(60 * minute as u64);
            if let Ok(Some(d)) = step(now, demand, fleet) {
                r.scaling_actions += 1;
                if d.to > d.from {
                    for _ in 0..(d.to - d.from) {
                        sim.starting.push(minute + self.boot_minutes);
                    }
                } else {
                    sim.ready -= d.remove_ready.min(sim.ready - allocated);
                }
            }
            let servers = sim.ready + sim.starting.len() as u32;
            r.peak_servers = r.peak_servers.max(servers);
            r.instance_hours += f64::from(servers) / 60.0;
        }
        r
    }

    /// Fixed capacity: `servers` all the time.
    pub fn run_fixed(&self, trace: &[f64], servers: u32) -> BacktestReport {
        self.run(&format!("fixed ({servers} servers)"), trace, servers, |_, _, _| Ok(None))
    }

    /// Reactive HPA target tracking at `tracking`.
    pub fn run_reactive(
        &self,
        trace: &[f64],
        tracking: TargetTracking,
        max: u32,
    ) -> Result<BacktestReport, ScaleError> {
        let mut s = AutoScaler::new(ScalingPolicy::TargetTracking(tracking), 1, max)?;
        let initial = self.initial(trace);
        Ok(self.run("reactive (HPA target tracking)", trace, initial, |now, d, f| s.handle_total(now, d, f)))
    }

    /// The predictive scaler.
    pub fn run_predictive(
        &self,
        trace: &[f64],
        config: PredictiveConfig,
        max: u32,
    ) -> Result<BacktestReport, ScaleError> {
        let mut s = PredictiveScaler::new(config, 1, max)?;
        let initial = self.initial(trace);
        Ok(self.run("predictive (Holt-Winters + HPA)", trace, initial, |now, d, f| s.handle_total(now, d, f)))
    }

    fn initial(&self, trace: &[f64]) -> u32 {
        trace.first().map_or(1, |d| ((d / self.capacity).ceil() as u32).max(1) * 2)
    }
}
