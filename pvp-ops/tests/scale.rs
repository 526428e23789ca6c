//! AutoScaler, PredictiveScaler and the backtest through the public API: configs and samples
//! validated (a refused sample changes nothing), target tracking, thresholds, tolerance bands,
//! rate limits, stabilisation windows and cooldowns at their exact boundaries, min / max and the
//! allocated floor, ready buffers like Agones, `drive` passing source and target errors through,
//! and Holt-Winters forecasts.

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

// ---------------------------------------------------------------------------------------------
// Configs, samples and bounds

fn tracking(target: f64) -> ScalingPolicy {
    ScalingPolicy::TargetTracking(TargetTracking::new(target))
}

fn threshold(up: f64, down: f64, step_up: u32, step_down: u32) -> ScalingPolicy {
    ScalingPolicy::Threshold(ThresholdPolicy {
        scale_up_threshold: up,
        scale_down_threshold: down,
        cooldown: Duration::ZERO,
        step_up,
        step_down,
    })
}

#[test]
fn autoscaler_configs_are_validated() {
    let invalid = |p: ScalingPolicy, min, max| {
        matches!(AutoScaler::new(p, min, max), Err(ScaleError::InvalidConfig(_)))
    };
    assert!(invalid(tracking(100.0), 5, 4));
    for t in [0.0, -1.0, f64::NAN, f64::INFINITY, -0.0] {
        assert!(invalid(tracking(t), 1, 10), "target {t}");
    }
    for tol in [1.0, -0.1, f64::NAN] {
        let mut tt = TargetTracking::new(10.0);
        tt.tolerance = tol;
        assert!(invalid(ScalingPolicy::TargetTracking(tt), 1, 10), "tolerance {tol}");
    }
    let mut tt = TargetTracking::new(10.0);
    tt.scale_up.limits.push(RateLimit::Pods { count: 0, period: secs(15) });
    assert!(invalid(ScalingPolicy::TargetTracking(tt), 1, 10));
    let mut tt = TargetTracking::new(10.0);
    tt.scale_down.limits.push(RateLimit::Percent { percent: 10, period: Duration::ZERO });
    assert!(invalid(ScalingPolicy::TargetTracking(tt), 1, 10));
    assert!(invalid(threshold(0.5, 0.5, 1, 1), 1, 10));
    assert!(invalid(threshold(0.5, 0.8, 1, 1), 1, 10));
    assert!(invalid(threshold(f64::NAN, 0.1, 1, 1), 1, 10));
    assert!(invalid(threshold(0.8, f64::NEG_INFINITY, 1, 1), 1, 10));
    assert!(invalid(threshold(0.8, 0.2, 0, 1), 1, 10));
    assert!(invalid(threshold(0.8, 0.2, 1, 0), 1, 10));
    assert!(invalid(ScalingPolicy::ReadyBuffer(ReadyBuffer::Percent(0)), 1, 10));
    assert!(invalid(ScalingPolicy::ReadyBuffer(ReadyBuffer::Percent(100)), 1, 10));
    // Edges that are fine.
    assert!(AutoScaler::new(tracking(f64::MIN_POSITIVE), 0, 0).is_ok());
    assert!(AutoScaler::new(ScalingPolicy::ReadyBuffer(ReadyBuffer::Percent(99)), 3, 3).is_ok());
    assert!(AutoScaler::new(threshold(0.8, 0.2, u32::MAX, u32::MAX), 0, u32::MAX).is_ok());
}

#[test]
fn bad_samples_are_refused_counted_and_leave_the_scaler_as_it_was() {
    let mut s = AutoScaler::new(tracking(100.0), 1, 50).unwrap();
    let t0 = Instant::now();
    let fleet = FleetStatus::new(10, 0, 0);
    for v in [f64::NAN, -1.0, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(matches!(s.handle_sample(t0, v, fleet), Err(ScaleError::BadMetric(_))), "{v}");
        assert!(matches!(s.handle_total(t0, v, fleet), Err(ScaleError::BadMetric(_))), "{v}");
    }
    // A finite per-server value whose fleet total overflows is refused too.
    assert!(matches!(s.handle_sample(t0, f64::MAX, fleet), Err(ScaleError::BadMetric(_))));
    assert_eq!(s.stats().rejected, 9);
    assert_eq!(s.stats().samples, 0);
    // The scaler decides as a fresh one would.
    let d = s.handle_sample(t0 + secs(10), 150.0, fleet).unwrap().unwrap();
    assert_eq!((d.from, d.to, d.remove_ready), (10, 15, 0));
    assert_eq!(s.handle_sample(t0, 150.0, fleet), Err(ScaleError::TimeWentBack));
    assert_eq!(s.stats().rejected, 10);
    assert_eq!(s.stats().samples, 1);
    assert_eq!(s.stats().scale_ups, 1);
    // The same instant again is not going back.
    assert!(s.handle_sample(t0 + secs(10), 100.0, FleetStatus::new(15, 0, 0)).is_ok());
}

#[test]
fn decisions_stay_within_min_and_max_but_never_remove_allocated() {
    let mut s = AutoScaler::new(threshold(0.8, 0.2, 100, 100), 3, 5).unwrap();
    let t0 = Instant::now();
    let d = s.handle_sample(t0, 0.9, FleetStatus::new(4, 0, 0)).unwrap().unwrap();
    assert_eq!(d.to, 5, "clamped to max");
    let d = s.handle_sample(t0 + secs(1), 0.1, FleetStatus::new(5, 0, 0)).unwrap().unwrap();
    assert_eq!((d.to, d.remove_ready), (3, 2), "clamped to min");
    // 8 Allocated servers hold the fleet above max.
    let d = s.handle_sample(t0 + secs(2), 0.1, FleetStatus::new(2, 8, 0)).unwrap().unwrap();
    assert_eq!((d.from, d.to, d.remove_ready), (10, 8, 2));
    assert!(s.stats().allocated_protected >= 1);
    // An empty fleet below min grows to min.
    let d = s.handle_sample(t0 + secs(3), 0.5, FleetStatus::default()).unwrap().unwrap();
    assert_eq!((d.from, d.to), (0, 3));
}

#[test]
fn fleet_status_counts_saturate() {
    let f = FleetStatus::new(u32::MAX, u32::MAX, 1);
    assert_eq!(f.replicas(), u32::MAX);
    assert_eq!(f.floor(), u32::MAX);
    assert_eq!(FleetStatus::new(1, 2, 3).replicas(), 6);
    assert_eq!(FleetStatus::new(1, 2, 3).floor(), 5);
}

#[test]
fn drive_passes_source_and_target_errors_through() {
    struct Src(Result<f64, SourceError>);
    impl MetricSource for Src {
        fn metric_value(&mut self, _: &str) -> Result<f64, SourceError> {
            self.0.clone()
        }
    }
    struct Refusing;
    impl pvp_ops::ScaleTarget for Refusing {
        fn fleet(&self) -> FleetStatus {
            FleetStatus::new(4, 0, 0)
        }
        fn apply(&mut self, _: &pvp_ops::scale::ScaleDecision) -> Result<(), ScaleError> {
            Err(ScaleError::Target("quota".into()))
        }
    }
    let mut s = AutoScaler::new(tracking(10.0), 1, 100).unwrap();
    let t0 = Instant::now();
    let mut down = Src(Err(SourceError::Unreachable("x".into())));
    assert_eq!(
        s.drive(t0, "m", &mut down, &mut Refusing),
        Err(ScaleError::Source(SourceError::Unreachable("x".into())))
    );
    assert_eq!(s.stats().samples, 0, "a source error changes nothing");
    let mut nan = Src(Ok(f64::NAN));
    assert!(matches!(s.drive(t0, "m", &mut nan, &mut Refusing), Err(ScaleError::BadMetric(_))));
    let mut busy = Src(Ok(20.0));
    assert_eq!(s.drive(t0, "m", &mut busy, &mut Refusing), Err(ScaleError::Target("quota".into())));
    assert_eq!(s.stats().scale_ups, 1, "the refused decision still counts as taken");
}

// ---------------------------------------------------------------------------------------------
// Decisions at their boundaries

fn tracking_without_limits(target: f64) -> TargetTracking {
    let mut t = TargetTracking::new(target);
    t.scale_up.limits.clear();
    t.scale_down.limits.clear();
    t.scale_down.stabilization = Duration::ZERO;
    t
}

#[test]
fn target_tracking_desired_is_ceil_of_current_times_ratio_outside_the_band() {
    let t0 = Instant::now();
    for (current, value, target) in
        [(10u32, 150.0, 100.0), (7, 33.0, 10.0), (3, 0.7, 0.5), (10, 111.0, 100.0), (10, 50.0, 100.0)]
    {
        let mut s =
            AutoScaler::new(ScalingPolicy::TargetTracking(tracking_without_limits(target)), 0, 1000).unwrap();
        let want = (f64::from(current) * value / target).ceil() as u32;
        let d = s.handle_sample(t0, value, FleetStatus::new(current, 0, 0)).unwrap().unwrap();
        assert_eq!(d.to, want, "{current} x {value} / {target}");
        assert_eq!(d.remove_ready, current.saturating_sub(want));
        let ScaleReason::TargetTracking { ratio } = d.reason else { panic!("{:?}", d.reason) };
        assert!((ratio - value / target).abs() < 1e-12);
    }
}

#[test]
fn tolerance_band_is_inclusive_at_both_edges() {
    let t0 = Instant::now();
    for value in [110.0, 90.0, 100.0, 105.0] {
        let mut s =
            AutoScaler::new(ScalingPolicy::TargetTracking(tracking_without_limits(100.0)), 0, 1000).unwrap();
        assert_eq!(
            s.handle_sample(t0, value, FleetStatus::new(10, 0, 0)).unwrap(),
            None,
            "|{value}/100 - 1| <= 0.1 means no change"
        );
    }
    let mut s =
        AutoScaler::new(ScalingPolicy::TargetTracking(tracking_without_limits(100.0)), 0, 1000).unwrap();
    assert_eq!(s.handle_sample(t0, 89.0, FleetStatus::new(10, 0, 0)).unwrap().unwrap().to, 9);
}

#[test]
fn percent_rate_limit_is_a_percentage_of_the_period_start() {
    let t0 = Instant::now();
    let mut t = tracking_without_limits(10.0);
    t.scale_up.limits = vec![RateLimit::Percent { percent: 10, period: secs(60) }];
    t.scale_down.limits = vec![RateLimit::Percent { percent: 30, period: secs(60) }];
    let mut s = AutoScaler::new(ScalingPolicy::TargetTracking(t.clone()), 0, 1000).unwrap();
    // 10 % of 10 is one server: 11, not 12.
    let d = s.handle_sample(t0, 100.0, FleetStatus::new(10, 0, 0)).unwrap().unwrap();
    assert_eq!(d.to, 10 + 10 * 10 / 100);
    // Within the period, nothing more.
    assert_eq!(s.handle_sample(t0 + secs(30), 100.0, FleetStatus::new(11, 0, 0)).unwrap(), None);
    // Down by at most 30 % of 10.
    let mut s = AutoScaler::new(ScalingPolicy::TargetTracking(t), 0, 1000).unwrap();
    let d = s.handle_sample(t0, 1.0, FleetStatus::new(10, 0, 0)).unwrap().unwrap();
    assert_eq!(d.to, 10 - 10 * 30 / 100);
    assert_eq!(d.remove_ready, 3);
    // Where floats land beside a whole number: 25 x 1.12 and 5 x (1 - 0.8).
    for (current, up_pct, want_up) in [(25u32, 12u32, 28u32), (100, 7, 107)] {
        let mut t = tracking_without_limits(10.0);
        t.scale_up.limits = vec![RateLimit::Percent { percent: up_pct, period: secs(60) }];
        let mut s = AutoScaler::new(ScalingPolicy::TargetTracking(t), 0, 10_000).unwrap();
        let d = s.handle_sample(t0, 1000.0, FleetStatus::new(current, 0, 0)).unwrap().unwrap();
        assert_eq!(d.to, want_up, "{current} up by {up_pct} %");
        assert_eq!(want_up, (current * (100 + up_pct)).div_ceil(100));
    }
    let mut t = tracking_without_limits(10.0);
    t.scale_down.limits = vec![RateLimit::Percent { percent: 80, period: secs(60) }];
    let mut s = AutoScaler::new(ScalingPolicy::TargetTracking(t), 0, 10_000).unwrap();
    let d = s.handle_sample(t0, 0.0, FleetStatus::new(5, 0, 0)).unwrap().unwrap();
    assert_eq!(d.to, 5 * (100 - 80) / 100, "80 % of 5 is 4 servers: one stays");
}

#[test]
fn a_new_rate_limit_period_starts_exactly_one_period_later() {
    // HPA's defaults: up by max(4, 100 %) per 15 s; one sample every 15 s doubles each time.
    let mut s = AutoScaler::new(ScalingPolicy::TargetTracking(TargetTracking::new(10.0)), 0, 1000).unwrap();
    let t0 = Instant::now();
    let mut current = 5u32;
    for k in 0..4u64 {
        let d = s.handle_sample(t0 + secs(15 * k), 1000.0, FleetStatus::new(current, 0, 0)).unwrap().unwrap();
        assert_eq!(d.to, (current + 4).max(current * 2), "sample {k}");
        current = d.to;
    }
}

#[test]
fn scale_down_stabilisation_window_ends_exactly_after_its_length() {
    let mut t = TargetTracking::new(10.0);
    t.scale_down.limits.clear();
    let mut s = AutoScaler::new(ScalingPolicy::TargetTracking(t), 0, 1000).unwrap();
    let t0 = Instant::now();
    assert_eq!(s.handle_sample(t0, 10.0, FleetStatus::new(10, 0, 0)).unwrap(), None);
    // Load halves: the 300 s window holds the recommendation of 10.
    for k in 1..20u64 {
        assert_eq!(s.handle_sample(t0 + secs(15 * k), 5.0, FleetStatus::new(10, 0, 0)).unwrap(), None);
    }
    // At 300 s the first recommendation has left the window.
    let d = s.handle_sample(t0 + secs(300), 5.0, FleetStatus::new(10, 0, 0)).unwrap().unwrap();
    assert_eq!(d.to, 5);
}

#[test]
fn threshold_cooldown_ends_exactly_at_its_length() {
    let p = ThresholdPolicy {
        scale_up_threshold: 0.8,
        scale_down_threshold: 0.3,
        cooldown: secs(60),
        step_up: 2,
        step_down: 1,
    };
    let mut s = AutoScaler::new(ScalingPolicy::Threshold(p), 1, 100).unwrap();
    let t0 = Instant::now();
    assert_eq!(s.handle_sample(t0, 0.9, FleetStatus::new(4, 0, 0)).unwrap().unwrap().to, 6);
    assert_eq!(s.handle_sample(t0 + secs(59), 0.9, FleetStatus::new(6, 0, 0)).unwrap(), None);
    assert_eq!(s.handle_sample(t0 + secs(60), 0.9, FleetStatus::new(6, 0, 0)).unwrap().unwrap().to, 8);
    // Exactly at a threshold is inside the band (strictly above / below scales).
    assert_eq!(s.handle_sample(t0 + secs(200), 0.8, FleetStatus::new(8, 0, 0)).unwrap(), None);
    assert_eq!(s.handle_sample(t0 + secs(300), 0.3, FleetStatus::new(8, 0, 0)).unwrap(), None);
    let d = s.handle_sample(t0 + secs(400), 0.29, FleetStatus::new(8, 0, 0)).unwrap().unwrap();
    assert_eq!((d.to, d.remove_ready, d.reason), (7, 1, ScaleReason::ThresholdDown));
}

#[test]
fn min_max_clamps_and_allocated_floor() {
    let t0 = Instant::now();
    let mut s = AutoScaler::new(ScalingPolicy::TargetTracking(tracking_without_limits(10.0)), 3, 20).unwrap();
    assert_eq!(s.handle_sample(t0, 1000.0, FleetStatus::new(10, 0, 0)).unwrap().unwrap().to, 20);
    let d = s.handle_sample(t0 + secs(1), 0.0, FleetStatus::new(20, 0, 0)).unwrap().unwrap();
    assert_eq!(d.to, 3);
    // Allocated + starting are never removed, even above max.
    let d = s.handle_sample(t0 + secs(2), 0.0, FleetStatus::new(5, 21, 2)).unwrap().unwrap();
    assert_eq!((d.to, d.remove_ready), (23, 5));
}

#[test]
fn ready_buffer_percent_matches_agones() {
    let t0 = Instant::now();
    for (allocated, pct) in [(9u32, 10u32), (7, 30), (1, 50), (10, 25), (0, 50)] {
        let mut s = AutoScaler::new(ScalingPolicy::ReadyBuffer(ReadyBuffer::Percent(pct)), 0, 1000).unwrap();
        let want = (allocated * 100).div_ceil(100 - pct);
        let fleet = FleetStatus::new(0, allocated, 0);
        let got = s.handle_sample(t0, 0.0, fleet).unwrap().map_or(fleet.replicas(), |d| d.to);
        assert_eq!(got, want, "{allocated} allocated, {pct} %");
    }
}

#[test]
fn scale_up_stabilisation_window_ends_exactly_after_its_length() {
    let mut t = TargetTracking::new(10.0);
    t.scale_up.stabilization = secs(60);
    t.scale_up.limits.clear();
    let mut s = AutoScaler::new(ScalingPolicy::TargetTracking(t), 1, 100).unwrap();
    let t0 = Instant::now();
    assert_eq!(s.handle_sample(t0, 10.0, FleetStatus::new(10, 0, 0)).unwrap(), None);
    assert_eq!(s.handle_sample(t0 + secs(59), 30.0, FleetStatus::new(10, 0, 0)).unwrap(), None);
    let d = s.handle_sample(t0 + secs(60), 30.0, FleetStatus::new(10, 0, 0)).unwrap().unwrap();
    assert_eq!(d.to, 30);
}

#[test]
fn empty_fleet_scales_from_the_total_within_the_rate_limits() {
    let t0 = Instant::now();
    let mut s =
        AutoScaler::new(ScalingPolicy::TargetTracking(tracking_without_limits(10.0)), 0, 100).unwrap();
    let d = s.handle_total(t0, 95.0, FleetStatus::new(0, 0, 0)).unwrap().unwrap();
    assert_eq!(d.to, (95.0_f64 / 10.0).ceil() as u32);
    // HPA's default scale-up limits: max(0 + 4 pods, 0 x 200 %) = 4 from an empty fleet.
    let mut s = AutoScaler::new(ScalingPolicy::TargetTracking(TargetTracking::new(10.0)), 0, 100).unwrap();
    let d = s.handle_total(t0, 95.0, FleetStatus::new(0, 0, 0)).unwrap().unwrap();
    assert_eq!(d.to, 4);
    // handle_sample gives the same answer as handle_total with value x replicas.
    let mut a =
        AutoScaler::new(ScalingPolicy::TargetTracking(tracking_without_limits(10.0)), 0, 100).unwrap();
    let mut b = a.clone();
    let f = FleetStatus::new(3, 4, 1);
    assert_eq!(a.handle_sample(t0, 17.0, f).unwrap(), b.handle_total(t0, 17.0 * 8.0, f).unwrap());
}

// ---------------------------------------------------------------------------------------------
// Forecasting

#[test]
fn holt_winters_rejects_bad_parameters_and_never_panics_on_horizons() {
    assert!(matches!(HoltWinters::new(1, 0.5, 0.5, 0.5), Err(ScaleError::InvalidConfig(_))));
    assert!(matches!(HoltWinters::new(0, 0.5, 0.5, 0.5), Err(ScaleError::InvalidConfig(_))));
    for bad in [-0.1, 1.1, f64::NAN, f64::INFINITY] {
        assert!(HoltWinters::new(4, bad, 0.5, 0.5).is_err(), "{bad}");
        assert!(HoltWinters::new(4, 0.5, bad, 0.5).is_err(), "{bad}");
        assert!(HoltWinters::new(4, 0.5, 0.5, bad).is_err(), "{bad}");
    }
    let mut hw = HoltWinters::new(3, 0.0, 0.0, 0.0).unwrap();
    assert!(!hw.is_ready());
    assert_eq!(hw.forecast(1), None);
    assert!(!hw.observe(f64::NAN));
    assert!(!hw.observe(f64::INFINITY));
    for x in [10.0, 20.0, 30.0] {
        assert!(hw.observe(x));
    }
    assert!(hw.is_ready(), "non-finite values did not count toward the season");
    assert_eq!(hw.forecast(0), None);
    // alpha = beta = gamma = 0: the first season repeats forever.
    assert_eq!(hw.forecast(1), Some(10.0));
    assert_eq!(hw.forecast(2), Some(20.0));
    assert_eq!(hw.forecast(4), Some(10.0));
    hw.observe(10.0);
    hw.observe(20.0);
    // Any horizon is answered (no index overflow), in the season's phase.
    let far = hw.forecast(usize::MAX).unwrap();
    assert_eq!(far, hw.forecast(1 + (usize::MAX - 1) % 3).unwrap());
}

#[test]
fn predictive_configs_are_validated() {
    let bad =
        |c: PredictiveConfig| matches!(PredictiveScaler::new(c, 1, 10), Err(ScaleError::InvalidConfig(_)));
    let mut c = PredictiveConfig::new(100.0);
    c.step = Duration::ZERO;
    assert!(bad(c));
    let mut c = PredictiveConfig::new(100.0);
    c.season = c.step;
    assert!(bad(c));
    let mut c = PredictiveConfig::new(100.0);
    c.step = Duration::from_nanos(1);
    assert!(bad(c), "a season of 86.4e12 steps is too long");
    for m in [f64::NAN, -0.1, f64::INFINITY] {
        let mut c = PredictiveConfig::new(100.0);
        c.margin = m;
        assert!(bad(c), "margin {m}");
    }
    let mut c = PredictiveConfig::new(100.0);
    c.smoothing = (1.5, 0.0, 0.0);
    assert!(bad(c));
    assert!(bad(PredictiveConfig::new(0.0)));
    assert!(bad(PredictiveConfig::new(f64::NAN)));
    assert!(matches!(
        PredictiveScaler::new(PredictiveConfig::new(100.0), 9, 2),
        Err(ScaleError::InvalidConfig(_))
    ));
    let mut c = PredictiveConfig::new(100.0);
    c.lead = Duration::MAX;
    assert!(PredictiveScaler::new(c, 1, 10).is_ok(), "a long lead is capped to one season");
}

#[test]
fn predictive_refusals_are_counted_in_the_reactive_stats() {
    let mut c = PredictiveConfig::new(100.0);
    c.season = secs(240);
    let mut p = PredictiveScaler::new(c, 1, 100).unwrap();
    let t0 = Instant::now();
    let fleet = FleetStatus::new(2, 0, 0);
    assert!(matches!(p.handle_total(t0, f64::NAN, fleet), Err(ScaleError::BadMetric(_))));
    assert!(matches!(p.handle_total(t0, -5.0, fleet), Err(ScaleError::BadMetric(_))));
    p.handle_total(t0 + secs(60), 200.0, fleet).unwrap();
    assert_eq!(p.handle_total(t0, 200.0, fleet), Err(ScaleError::TimeWentBack));
    assert_eq!(p.reactive().stats().rejected, 3);
    assert_eq!(p.reactive().stats().samples, 1);
    assert_eq!(p.last_forecast(), None, "no full season seen yet");
}

fn pattern(i: usize) -> f64 {
    [3.0, 5.0, 11.0, 20.0, 31.0, 40.0, 44.0, 38.0, 25.0, 12.0, 6.0, 4.0][i % 12] * 10.0 + 500.0
}

#[test]
fn holt_winters_forecasts_a_clean_seasonal_series_exactly() {
    let mut hw = HoltWinters::new(12, 0.3, 0.1, 0.3).unwrap();
    for i in 0..11 {
        hw.observe(pattern(i));
        assert_eq!(hw.forecast(1), None);
    }
    for i in 11..36 {
        hw.observe(pattern(i));
        for h in 1..=24 {
            let got = hw.forecast(h).unwrap();
            let want = pattern(i + h);
            assert!((got - want).abs() < 1e-6, "after {i}, h={h}: {got} vs {want}");
        }
    }
}

#[test]
fn predictive_raises_to_the_forecast_peak_with_margin_and_never_lowers() {
    let mut c = PredictiveConfig::new(10.0);
    c.tracking.scale_up.limits.clear();
    c.step = secs(60);
    c.season = secs(24 * 60);
    c.lead = secs(180);
    c.margin = 0.05;
    let mut p = PredictiveScaler::new(c, 1, 10_000).unwrap();
    let t0 = Instant::now();
    let total = |i: usize| if i % 24 >= 20 { 2900.0 } else { 1000.0 };
    let mut raised = Vec::new();
    for i in 0..48usize {
        let x = total(i);
        // The fleet fits the load exactly: the reactive part wants nothing.
        let fleet = FleetStatus::new((x / 10.0) as u32, 0, 0);
        if let Some(d) = p.handle_total(t0 + secs(60 * i as u64), x, fleet).unwrap() {
            assert!(d.to > d.from, "a forecast never lowers the fleet: {d:?}");
            let ScaleReason::Forecast { forecast } = d.reason else { panic!("{d:?}") };
            assert!((forecast - 2900.0).abs() < 1e-6);
            assert_eq!(d.to, (2900.0 * 1.05 / 10.0_f64).ceil() as u32);
            raised.push(i);
        }
        if i >= 23 {
            let peak = (1..=3).map(|h| total(i + h)).fold(f64::MIN, f64::max);
            assert!((p.last_forecast().unwrap() - peak).abs() < 1e-6, "at {i}");
        } else {
            assert_eq!(p.last_forecast(), None);
        }
    }
    // Only when the next 3 steps reach the peak while the fleet is low.
    assert_eq!(raised, [41, 42, 43]);
}

#[test]
fn predictive_never_blocks_reactive_scale_out() {
    let mut c = PredictiveConfig::new(10.0);
    c.step = secs(60);
    c.season = secs(120);
    let mut p = PredictiveScaler::new(c, 1, 10_000).unwrap();
    let t0 = Instant::now();
    // Before any forecast, a surge is handled reactively (HPA default limits: 4 or 100 %).
    let d = p.handle_total(t0, 1000.0, FleetStatus::new(10, 0, 0)).unwrap().unwrap();
    assert_eq!(d.to, 20);
    assert!(matches!(d.reason, ScaleReason::TargetTracking { .. }));
}
