//! AutoScaler, PredictiveScaler and the backtest through the public API.

use std::time::{Duration, Instant};

use pvp_ops::scale::backtest::{Backtest, TraceConfig, synthetic_trace};
use pvp_ops::scale::{
    AutoScaler, FleetStatus, HoltWinters, PredictiveConfig, PredictiveScaler, RateLimit, ReadyBuffer,
    ScaleDecision, ScaleError, ScaleReason, ScalingPolicy, ScalingRules, TargetTracking, ThresholdPolicy,
};
use pvp_ops::{MetricSource, ScaleTarget, SourceError};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn threshold_policy_steps_with_cooldown_and_bounds() {
    let p = ThresholdPolicy {
        scale_up_threshold: 0.8,
        scale_down_threshold: 0.3,
        cooldown: secs(60),
        step_up: 3,
        step_down: 1,
    };
    let mut s = AutoScaler::new(ScalingPolicy::Threshold(p), 2, 8).unwrap();
    let t0 = Instant::now();
    let d = s.handle_sample(t0, 0.9, FleetStatus::new(4, 0, 0)).unwrap().unwrap();
    assert_eq!((d.from, d.to, d.reason), (4, 7, ScaleReason::ThresholdUp));
    // Cooldown holds the next action.
    assert_eq!(s.handle_sample(t0 + secs(30), 0.95, FleetStatus::new(7, 0, 0)).unwrap(), None);
    // Max caps the step.
    let d = s.handle_sample(t0 + secs(61), 0.95, FleetStatus::new(7, 0, 0)).unwrap().unwrap();
    assert_eq!(d.to, 8);
    let d = s.handle_sample(t0 + secs(200), 0.1, FleetStatus::new(8, 0, 0)).unwrap().unwrap();
    assert_eq!((d.to, d.remove_ready), (7, 1));
    // Min holds.
    assert_eq!(s.handle_sample(t0 + secs(400), 0.1, FleetStatus::new(2, 0, 0)).unwrap(), None);
    assert_eq!(s.stats().scale_ups, 2);
}

#[test]
fn bad_configs_and_samples_are_typed_errors() {
    assert!(matches!(
        AutoScaler::new(ScalingPolicy::TargetTracking(TargetTracking::new(0.0)), 1, 2),
        Err(ScaleError::InvalidConfig(_))
    ));
    assert!(matches!(
        AutoScaler::new(ScalingPolicy::TargetTracking(TargetTracking::new(1.0)), 3, 2),
        Err(ScaleError::InvalidConfig(_))
    ));
    assert!(matches!(
        AutoScaler::new(ScalingPolicy::ReadyBuffer(ReadyBuffer::Percent(100)), 0, 2),
        Err(ScaleError::InvalidConfig(_))
    ));
    let mut s = AutoScaler::new(ScalingPolicy::TargetTracking(TargetTracking::new(1.0)), 1, 10).unwrap();
    let t0 = Instant::now();
    assert!(
        matches!(s.handle_sample(t0, f64::NAN, FleetStatus::new(1, 0, 0)), Err(ScaleError::BadMetric(v)) if v.is_nan())
    );
    assert!(matches!(s.handle_sample(t0, -1.0, FleetStatus::new(1, 0, 0)), Err(ScaleError::BadMetric(_))));
    s.handle_sample(t0 + secs(10), 1.0, FleetStatus::new(1, 0, 0)).unwrap();
    assert_eq!(s.handle_sample(t0, 1.0, FleetStatus::new(1, 0, 0)), Err(ScaleError::TimeWentBack));
    assert_eq!(s.stats().rejected, 3);
    assert!(HoltWinters::new(1, 0.1, 0.1, 0.1).is_err());
    assert!(HoltWinters::new(10, 1.5, 0.1, 0.1).is_err());
}

#[test]
fn hpa_scale_down_rate_limit() {
    let mut tt = TargetTracking::new(10.0);
    tt.scale_down = ScalingRules {
        stabilization: Duration::ZERO,
        limits: vec![RateLimit::Pods { count: 2, period: secs(60) }],
    };
    let mut s = AutoScaler::new(ScalingPolicy::TargetTracking(tt), 1, 100).unwrap();
    let t0 = Instant::now();
    let d = s.handle_sample(t0, 1.0, FleetStatus::new(10, 0, 0)).unwrap().unwrap();
    assert_eq!(d.to, 8, "at most 2 per minute");
    assert_eq!(s.handle_sample(t0 + secs(30), 1.0, FleetStatus::new(8, 0, 0)).unwrap(), None);
    let d = s.handle_sample(t0 + secs(61), 1.0, FleetStatus::new(8, 0, 0)).unwrap().unwrap();
    assert_eq!(d.to, 6);
}

#[test]
fn scale_up_stabilisation_takes_the_window_minimum() {
    let mut tt = TargetTracking::new(10.0);
    tt.scale_up.stabilization = secs(60);
    tt.scale_up.limits.clear();
    let mut s = AutoScaler::new(ScalingPolicy::TargetTracking(tt), 1, 100).unwrap();
    let t0 = Instant::now();
    assert_eq!(s.handle_sample(t0, 10.0, FleetStatus::new(10, 0, 0)).unwrap(), None);
    // A burst to 3x: the window still holds the earlier recommendation of 10.
    assert_eq!(s.handle_sample(t0 + secs(10), 30.0, FleetStatus::new(10, 0, 0)).unwrap(), None);
    let d = s.handle_sample(t0 + secs(71), 30.0, FleetStatus::new(10, 0, 0)).unwrap().unwrap();
    assert_eq!(d.to, 30);
}

#[test]
fn ready_buffer_like_agones() {
    let mut s = AutoScaler::new(ScalingPolicy::ReadyBuffer(ReadyBuffer::Count(5)), 0, 100).unwrap();
    let t0 = Instant::now();
    let d = s.handle_sample(t0, 0.0, FleetStatus::new(2, 10, 0)).unwrap().unwrap();
    assert_eq!(d.to, 15);
    let d = s.handle_sample(t0 + secs(1), 0.0, FleetStatus::new(9, 6, 0)).unwrap().unwrap();
    assert_eq!((d.to, d.remove_ready), (11, 4));
    let mut p = AutoScaler::new(ScalingPolicy::ReadyBuffer(ReadyBuffer::Percent(20)), 0, 100).unwrap();
    let d = p.handle_sample(t0, 0.0, FleetStatus::new(0, 40, 0)).unwrap().unwrap();
    assert_eq!(d.to, 50, "20 % of 50 Ready");
}

#[test]
fn never_removes_allocated_even_above_max() {
    let mut s = AutoScaler::new(ScalingPolicy::ReadyBuffer(ReadyBuffer::Count(0)), 0, 10).unwrap();
    let d = s.handle_sample(Instant::now(), 0.0, FleetStatus::new(5, 20, 2)).unwrap().unwrap();
    assert_eq!(d.to, 22, "Allocated and starting servers stay even though max is 10");
    assert_eq!(d.remove_ready, 5);
    assert!(s.stats().allocated_protected >= 1);
}

struct Fleet {
    status: FleetStatus,
    applied: Vec<ScaleDecision>,
}
impl ScaleTarget for Fleet {
    fn fleet(&self) -> FleetStatus {
        self.status
    }
    fn apply(&mut self, d: &ScaleDecision) -> Result<(), ScaleError> {
        if d.remove_ready > self.status.ready {
            return Err(ScaleError::Target("would remove an Allocated server".into()));
        }
        self.status.ready = self.status.ready + d.to.saturating_sub(d.from) - d.remove_ready;
        self.applied.push(*d);
        Ok(())
    }
}
struct Gauge(Option<f64>);
impl MetricSource for Gauge {
    fn metric_value(&mut self, m: &str) -> Result<f64, SourceError> {
        self.0.ok_or_else(|| SourceError::NoData(m.into()))
    }
}

#[test]
fn drive_reads_decides_and_applies() {
    let mut s = AutoScaler::new(ScalingPolicy::TargetTracking(TargetTracking::new(100.0)), 1, 50).unwrap();
    let mut fleet = Fleet { status: FleetStatus::new(1, 3, 0), applied: Vec::new() };
    let d =
        s.drive(Instant::now(), "players_per_server", &mut Gauge(Some(200.0)), &mut fleet).unwrap().unwrap();
    assert_eq!(d.to, 8);
    assert_eq!(fleet.status.replicas(), 8);
    assert!(matches!(
        s.drive(Instant::now(), "x", &mut Gauge(None), &mut fleet),
        Err(ScaleError::Source(SourceError::NoData(_)))
    ));
}

#[test]
fn predictive_scales_ahead_but_never_in_on_forecast_alone() {
    // A 60-step season: a ramp up then down. After learning it, the scaler should add servers
    // before the ramp, and never remove servers while the current load holds.
    let season = 60;
    let shape = |i: usize| if i % season < 30 { 1000.0 } else { 3000.0 };
    let cfg = PredictiveConfig {
        step: secs(60),
        season: secs(60 * season as u64),
        lead: secs(60 * 5),
        smoothing: (0.3, 0.0, 0.5),
        margin: 0.0,
        ..PredictiveConfig::new(100.0)
    };
    let mut p = PredictiveScaler::new(cfg, 1, 1000).unwrap();
    let t0 = Instant::now();
    let mut replicas = 10u32;
    let mut early = false;
    for i in 0..season * 4 {
        let now = t0 + secs(60 * i as u64);
        let demand = shape(i);
        if let Some(d) = p.handle_total(now, demand, FleetStatus::new(replicas, 0, 0)).unwrap() {
            if d.to < d.from {
                // Scale-in only when the reactive need is below the fleet.
                assert!(demand / 100.0 < f64::from(d.from), "scale-in at {i} without reactive need");
            }
            if i >= season * 2 && i % season >= 25 && i % season < 30 && d.to > d.from {
                assert!(matches!(d.reason, ScaleReason::Forecast { .. }));
                early = true;
            }
            replicas = d.to;
        }
    }
    assert!(early, "scaled up before the ramp");
}

#[test]
fn backtest_meets_the_goal_on_the_synthetic_week() {
    let trace = synthetic_trace(&TraceConfig::default());
    assert_eq!(trace.len(), 7 * 1440);
    let bt = Backtest::new(1000.0, 10);
    let target = 850.0;
    let reactive = bt.run_reactive(&trace, TargetTracking::new(target), 1000).unwrap();
    let predictive = bt
        .run_predictive(
            &trace,
            PredictiveConfig { lead: secs(15 * 60), ..PredictiveConfig::new(target) },
            1000,
        )
        .unwrap();
    assert!(
        predictive.under_demand_minutes < reactive.under_demand_minutes,
        "{predictive:?} vs {reactive:?}"
    );
    assert!(predictive.instance_hours <= reactive.instance_hours * 1.10, "{predictive:?} vs {reactive:?}");
    let fixed = bt.run_fixed(&trace, 150);
    assert!(fixed.instance_hours > reactive.instance_hours);
}

#[test]
fn predictive_refuses_bad_samples_without_learning_them() {
    let cfg = PredictiveConfig { season: secs(600), ..PredictiveConfig::new(100.0) };
    let mut p = PredictiveScaler::new(cfg, 1, 100).unwrap();
    let t0 = Instant::now();
    for i in 0..20u64 {
        p.handle_total(t0 + secs(60 * i), 500.0, FleetStatus::new(5, 0, 0)).unwrap();
    }
    let f = p.last_forecast().unwrap();
    assert!(matches!(
        p.handle_total(t0 + secs(60 * 30), f64::INFINITY, FleetStatus::new(5, 0, 0)),
        Err(ScaleError::BadMetric(_))
    ));
    assert_eq!(p.handle_total(t0, 1e9, FleetStatus::new(5, 0, 0)), Err(ScaleError::TimeWentBack));
    p.handle_total(t0 + secs(60 * 20), 500.0, FleetStatus::new(5, 0, 0)).unwrap();
    assert!((p.last_forecast().unwrap() - f).abs() < 1.0, "the refused 1e9 was not learned");
    assert!(
        PredictiveScaler::new(PredictiveConfig { step: Duration::ZERO, ..PredictiveConfig::new(1.0) }, 1, 2)
            .is_err()
    );
    assert!(
        PredictiveScaler::new(
            PredictiveConfig { step: Duration::from_nanos(1), ..PredictiveConfig::new(1.0) },
            1,
            2
        )
        .is_err()
    );
}
