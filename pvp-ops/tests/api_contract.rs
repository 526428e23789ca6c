//! API contract: every public item of pvp-ops does what its rustdoc says, including on bad
//! input (typed errors, no panics, no state changed by a refused call).

#[path = "shared_support/mod.rs"]
mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pvp_ops::chaos::proxy::{Direction, FaultProxy, LinkConditions, ProxyError};
use pvp_ops::chaos::{
    ChaosEngine, ChaosError, CrashInjector, ExperimentConfig, Fault, FaultError, FaultKind, LinkFaultInjector,
};
use pvp_ops::metrics::{MetricsRegistry, RegistryConfig, RegistryError};
use pvp_ops::scale::{
    AutoScaler, FleetStatus, HoltWinters, PredictiveConfig, PredictiveScaler, RateLimit, ReadyBuffer,
    ScaleError, ScalingPolicy, TargetTracking, ThresholdPolicy,
};
use pvp_ops::slo::{
    BurnRateRule, MonitorConfig, RulesError, Sli, SliReading, Slo, SloError, SloEvent, SloMonitor,
    prometheus_rules,
};
use pvp_ops::{FaultInjector, MetricSource, SourceError};
use support::{Servers, crash_engine};

const DAY: Duration = Duration::from_secs(86_400);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ---------------------------------------------------------------------------------------------
// Chaos

fn quick() -> ExperimentConfig {
    ExperimentConfig {
        check_interval: Duration::from_millis(1),
        recovery_timeout: Duration::from_secs(2),
        ..ExperimentConfig::default()
    }
}

#[test]
fn fault_intensity_bounds_are_inclusive_and_everything_else_is_refused() {
    for ok in [0.0, 1.0, 0.5, f64::MIN_POSITIVE] {
        let f = Fault::new(FaultKind::PacketLoss, "l", Duration::ZERO, ok).unwrap();
        assert_eq!(f.intensity(), ok);
        assert_eq!(f.kind(), FaultKind::PacketLoss);
        assert_eq!(f.target(), "l");
        assert_eq!(f.duration(), Duration::ZERO);
    }
    for bad in [-f64::MIN_POSITIVE, 1.0 + f64::EPSILON, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(
            matches!(Fault::new(FaultKind::PacketLoss, "l", secs(1), bad), Err(FaultError::Intensity(_))),
            "{bad}"
        );
    }
    assert_eq!(Fault::new(FaultKind::ServerCrash, "", secs(1), 1.0), Err(FaultError::EmptyTarget));
    // A huge duration is a valid fault (the engine caps it, it does not overflow).
    assert!(Fault::new(FaultKind::ServerCrash, "gs", Duration::MAX, 1.0).is_ok());
}

#[test]
fn inject_without_an_injector_is_a_typed_error_and_counts_nothing() {
    let engine = ChaosEngine::new(quick());
    let f = Fault::new(FaultKind::CpuStress, "cpu", secs(1), 0.1).unwrap();
    assert_eq!(engine.inject(f).unwrap_err(), ChaosError::NoInjector(FaultKind::CpuStress, "cpu".into()));
    let s = engine.stats();
    assert_eq!((s.injected, s.reverted, s.experiments), (0, 0, 0));
}

#[test]
fn guard_reverts_once_and_counts_a_failed_revert() {
    let servers = Servers { fail_restore: true, ..Servers::default() };
    let engine = crash_engine(quick(), &servers);
    let g = engine.inject(Fault::new(FaultKind::ServerCrash, "gs-1", secs(60), 1.0).unwrap()).unwrap();
    assert_eq!(g.fault().target(), "gs-1");
    assert_eq!(*servers.down.lock().unwrap(), ["gs-1"]);
    assert_eq!(g.revert(), Err(FaultError::Target("restore refused".into())));
    let s = engine.stats();
    assert_eq!((s.injected, s.reverted, s.revert_failures), (1, 1, 1));
    assert_eq!(servers.restores.load(Ordering::SeqCst), 1, "revert ran exactly once");
}

#[test]
fn same_target_twice_is_already_active_and_the_first_stays_revertible() {
    let servers = Servers::default();
    let engine = crash_engine(quick(), &servers);
    let f = Fault::new(FaultKind::ServerCrash, "gs-1", secs(60), 1.0).unwrap();
    let g = engine.inject(f.clone()).unwrap();
    match engine.inject(f) {
        Err(ChaosError::Inject { source: FaultError::AlreadyActive(t), .. }) => assert_eq!(t, "gs-1"),
        other => panic!("{other:?}"),
    }
    assert_eq!(engine.stats().injected, 1);
    drop(g);
    assert!(servers.down.lock().unwrap().is_empty());
    assert_eq!(engine.stats().reverted, 1);
}

#[test]
fn experiment_with_a_duplicate_fault_reverts_the_first_and_reports_inject() {
    let servers = Servers::default();
    let mut engine = crash_engine(quick(), &servers);
    let f = Fault::new(FaultKind::ServerCrash, "gs-1", secs(60), 1.0).unwrap();
    let r = engine.run_experiment("dup", vec![f.clone(), f], || true);
    assert!(matches!(r, Err(ChaosError::Inject { source: FaultError::AlreadyActive(_), .. })), "{r:?}");
    assert!(servers.down.lock().unwrap().is_empty(), "the first fault was reverted");
    assert_eq!(servers.restores.load(Ordering::SeqCst), 1);
}

#[test]
fn experiment_errors_before_any_fault_inject_nothing() {
    let servers = Servers::default();
    let mut engine = crash_engine(quick(), &servers);
    assert_eq!(engine.run_experiment("none", vec![], || true).unwrap_err(), ChaosError::NoFaults);
    let f = Fault::new(FaultKind::ServerCrash, "gs-1", Duration::from_millis(5), 1.0).unwrap();
    assert_eq!(
        engine.run_experiment("broken", vec![f.clone()], || false).unwrap_err(),
        ChaosError::NotSteadyBefore
    );
    let cpu = Fault::new(FaultKind::CpuStress, "cpu", secs(1), 0.5).unwrap();
    assert!(matches!(
        engine.run_experiment("no inj", vec![f, cpu], || true),
        Err(ChaosError::NoInjector(..))
    ));
    assert_eq!(engine.stats().injected, 0);
    assert_eq!(servers.restores.load(Ordering::SeqCst), 0);
}

#[test]
fn zero_duration_fault_is_injected_and_reverted() {
    let servers = Servers::default();
    let mut engine = crash_engine(quick(), &servers);
    let f = Fault::new(FaultKind::ServerCrash, "gs-9", Duration::ZERO, 1.0).unwrap();
    let report = engine.run_experiment("instant", vec![f], || true).unwrap();
    assert!(report.passed, "{report:?}");
    assert_eq!(report.hypothesis, "instant");
    assert!(report.recovery_time.is_some());
    assert_eq!(servers.restores.load(Ordering::SeqCst), 1);
    let s = engine.stats();
    assert_eq!((s.injected, s.reverted, s.experiments, s.aborted), (1, 1, 1, 0));
}

fn link_proxy() -> FaultProxy {
    // Nothing is sent through it: the proxy only supplies a LinkControl.
    FaultProxy::udp("127.0.0.1:0".parse().unwrap(), "127.0.0.1:9".parse().unwrap(), 1).unwrap()
}

#[test]
fn invalid_link_conditions_are_refused_and_change_nothing() {
    let p = link_proxy();
    let link = p.control();
    let good = LinkConditions { latency: Duration::from_millis(5), loss: 0.25, ..LinkConditions::default() };
    link.set(Direction::Forward, good).unwrap();
    let bads = [
        LinkConditions { loss: f64::NAN, ..good },
        LinkConditions { loss: 1.5, ..good },
        LinkConditions { loss: -0.1, ..good },
        LinkConditions { duplicate: 2.0, ..good },
        LinkConditions { duplicate: f64::NAN, ..good },
        LinkConditions { bandwidth: Some(0), ..good },
        LinkConditions { latency: secs(3601), ..good },
        LinkConditions { jitter: secs(3601), ..good },
    ];
    for bad in bads {
        assert!(
            matches!(link.set(Direction::Forward, bad), Err(ProxyError::InvalidConditions(_))),
            "{bad:?}"
        );
        assert!(matches!(link.set_both(bad), Err(ProxyError::InvalidConditions(_))), "{bad:?}");
        assert_eq!(link.conditions(Direction::Forward), good);
        assert_eq!(link.conditions(Direction::Backward), LinkConditions::default());
    }
    // The bounds themselves are fine.
    let edge = LinkConditions { loss: 1.0, duplicate: 0.0, latency: secs(3600), bandwidth: Some(1), ..good };
    link.set_both(edge).unwrap();
    assert_eq!(link.conditions(Direction::Backward), edge);
}

#[test]
fn link_injector_refuses_overlapping_faults_and_reverts_only_its_direction() {
    let p = link_proxy();
    let link = p.control();
    let base = LinkConditions::delay(Duration::from_millis(2));
    link.set_both(base).unwrap();
    let mut inj = LinkFaultInjector::new(Duration::from_millis(100)).with_link("kr-jp", link.clone());
    let whole = Fault::new(FaultKind::PacketLoss, "kr-jp", secs(1), 0.5).unwrap();
    let fwd = Fault::new(FaultKind::NetworkPartition, "kr-jp/forward", secs(1), 1.0).unwrap();
    let back = Fault::new(FaultKind::NetworkLatency, "kr-jp/backward", secs(1), 1.0).unwrap();

    // The whole link, then one of its directions: refused, nothing changed.
    inj.inject(&whole).unwrap();
    assert_eq!(inj.inject(&fwd), Err(FaultError::AlreadyActive("kr-jp/forward".into())));
    assert!(!link.conditions(Direction::Forward).blocked);
    inj.revert(&whole).unwrap();
    assert_eq!(link.conditions(Direction::Forward), base);
    assert_eq!(link.conditions(Direction::Backward), base);

    // Two different directions at once: each revert restores only its own direction.
    inj.inject(&fwd).unwrap();
    inj.inject(&back).unwrap();
    assert_eq!(inj.inject(&whole), Err(FaultError::AlreadyActive("kr-jp".into())));
    assert!(link.conditions(Direction::Forward).blocked);
    assert_eq!(link.conditions(Direction::Backward).latency, Duration::from_millis(100));
    inj.revert(&fwd).unwrap();
    assert_eq!(link.conditions(Direction::Forward), base);
    assert_eq!(
        link.conditions(Direction::Backward).latency,
        Duration::from_millis(100),
        "the backward fault is still active"
    );
    inj.revert(&back).unwrap();
    assert_eq!(link.conditions(Direction::Forward), base);
    assert_eq!(link.conditions(Direction::Backward), base);

    // Reverting twice, or an unknown link.
    assert_eq!(inj.revert(&back), Err(FaultError::NotActive("kr-jp/backward".into())));
    let unknown = Fault::new(FaultKind::PacketLoss, "kr-us", secs(1), 0.5).unwrap();
    assert!(!inj.supports(&unknown));
    assert_eq!(inj.inject(&unknown), Err(FaultError::UnknownTarget("kr-us".into())));
}

// ---------------------------------------------------------------------------------------------
// Scaling

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

// ---------------------------------------------------------------------------------------------
// SLOs

fn events_slo(objective: f64) -> Slo {
    Slo::new("errors", Sli::events("bad_total", "all_total"), objective, 30 * DAY).unwrap()
}

fn ev(bad: f64, total: f64) -> SliReading {
    SliReading::Events { bad, total }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[test]
fn slo_objectives_outside_the_open_unit_interval_are_refused() {
    let sli = Sli::events("b", "t");
    for o in [0.0, 1.0, -0.0, -1.0, 2.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(matches!(Slo::new("s", sli.clone(), o, DAY), Err(SloError::ObjectiveOutOfRange(_))), "{o}");
    }
    for o in [f64::MIN_POSITIVE, 0.5, 0.999, 1.0 - f64::EPSILON] {
        let s = Slo::new("s", sli.clone(), o, DAY).unwrap();
        assert_eq!(s.objective(), o);
        assert!(close(s.error_budget(), 1.0 - o));
        assert!(s.error_budget() > 0.0);
    }
    for name in ["", "a b", "ü", "x.y", "a/b", "a\n"] {
        assert!(matches!(Slo::new(name, sli.clone(), 0.9, DAY), Err(SloError::BadName(_))), "{name:?}");
    }
    assert!(Slo::new("Aa_0-z", sli.clone(), 0.9, DAY).is_ok());
    assert_eq!(Slo::new("s", sli.clone(), 0.9, Duration::ZERO), Err(SloError::EmptyWindow));
    assert_eq!(Slo::new("s", Sli::events("b", ""), 0.9, DAY), Err(SloError::EmptyMetric));
    assert_eq!(Slo::new("s", Sli::quantile_below("", 0.5, 1.0), 0.9, DAY), Err(SloError::EmptyMetric));
    for q in [0.0, 1.0, f64::NAN, -0.5] {
        assert!(
            matches!(
                Slo::new("s", Sli::quantile_below("h", q, 1.0), 0.9, DAY),
                Err(SloError::QuantileOutOfRange(_))
            ),
            "{q}"
        );
    }
    for t in [-1.0, f64::NAN, f64::INFINITY] {
        assert!(
            matches!(
                Slo::new("s", Sli::quantile_below("h", 0.5, t), 0.9, DAY),
                Err(SloError::BadThreshold(_))
            ),
            "{t}"
        );
    }
    assert!(Slo::new("s", Sli::quantile_below("h", 0.5, 0.0), 0.9, DAY).is_ok());
}

#[test]
fn monitor_without_data_reports_nothing_and_unknown_slos_are_typed_errors() {
    let mut m = SloMonitor::new(MonitorConfig::default());
    m.add_slo(events_slo(0.999)).unwrap();
    let t0 = Instant::now();
    let st = m.status("errors", t0).unwrap();
    assert_eq!(st.slo, "errors");
    assert_eq!(st.error_ratio, None);
    assert_eq!(st.budget_remaining, None);
    assert_eq!(st.burn_rates.len(), BurnRateRule::workbook().len());
    assert!(st.burn_rates.iter().all(|b| *b == (None, None)));
    assert!(st.firing.is_empty());
    assert_eq!(st.coverage, Duration::ZERO);
    assert_eq!(st.stale, None);
    assert_eq!(m.burn_rate("errors", secs(3600), t0), None);
    assert_eq!(m.status("nope", t0), None);
    assert_eq!(m.burn_rate("nope", secs(3600), t0), None);
    assert_eq!(m.handle_reading("nope", t0, ev(0.0, 1.0)), Err(SloError::UnknownSlo("nope".into())));
    assert_eq!(
        m.handle_source_error("nope", t0, SourceError::NoData("x".into())),
        Err(SloError::UnknownSlo("nope".into()))
    );
    // One reading gives a baseline, still no events.
    m.handle_reading("errors", t0, ev(5.0, 100.0)).unwrap();
    assert_eq!(m.status("errors", t0).unwrap().error_ratio, None);
    assert_eq!(m.poll_event(), None);
    assert_eq!(m.stats().readings, 1);
    assert_eq!(m.stats().rejected_readings, 0);
}

#[test]
fn bad_readings_are_refused_counted_and_change_nothing() {
    let mut m = SloMonitor::new(MonitorConfig { resolution: Duration::ZERO, ..MonitorConfig::default() });
    m.add_slo(events_slo(0.99)).unwrap();
    let t0 = Instant::now();
    m.handle_reading("errors", t0, ev(0.0, 0.0)).unwrap();
    m.handle_reading("errors", t0 + secs(60), ev(10.0, 1000.0)).unwrap();
    let before = m.status("errors", t0 + secs(60)).unwrap();
    assert!(close(before.error_ratio.unwrap(), 0.01));
    let t1 = t0 + secs(120);
    let bad = [
        ev(f64::NAN, 2000.0),
        ev(10.0, f64::INFINITY),
        ev(-1.0, 2000.0),
        ev(3000.0, 2000.0),
        SliReading::Quantile(Some(0.5)),
        SliReading::Quantile(None),
    ];
    for r in bad {
        assert_eq!(m.handle_reading("errors", t1, r), Err(SloError::BadReading("errors".into())), "{r:?}");
    }
    assert_eq!(
        m.handle_reading("errors", t0 + secs(30), ev(20.0, 2000.0)),
        Err(SloError::TimeWentBack("errors".into()))
    );
    assert_eq!(m.stats().rejected_readings, 7);
    assert_eq!(m.stats().readings, 2);
    assert_eq!(m.status("errors", t0 + secs(60)).unwrap(), before);
    // The next good reading continues from the last good one.
    m.handle_reading("errors", t1, ev(10.0, 2000.0)).unwrap();
    assert!(close(m.status("errors", t1).unwrap().error_ratio.unwrap(), 10.0 / 2000.0));

    // A quantile SLO refuses negative/NaN quantiles and event readings.
    let q = Slo::new("lat", Sli::quantile_below("h", 0.99, 0.02), 0.99, DAY).unwrap();
    m.add_slo(q).unwrap();
    for r in [SliReading::Quantile(Some(-0.1)), SliReading::Quantile(Some(f64::NAN)), ev(1.0, 2.0)] {
        assert_eq!(m.handle_reading("lat", t0, r), Err(SloError::BadReading("lat".into())));
    }
    assert_eq!(m.add_slo(events_slo(0.5)), Err(SloError::Duplicate("errors".into())));
    assert_eq!(m.slos().count(), 2);
}

#[test]
fn error_budget_and_burn_rate_maths() {
    let mut m = SloMonitor::new(MonitorConfig { resolution: Duration::ZERO, ..MonitorConfig::default() });
    m.add_slo(events_slo(0.999)).unwrap();
    let t0 = Instant::now();
    m.handle_reading("errors", t0, ev(0.0, 0.0)).unwrap();
    // First hour: 1,000,000 requests, 500 bad: half the budget rate.
    m.handle_reading("errors", t0 + secs(3600), ev(500.0, 1e6)).unwrap();
    let now = t0 + secs(3600);
    let st = m.status("errors", now).unwrap();
    assert!(close(st.error_ratio.unwrap(), 0.0005));
    assert!(close(st.budget_remaining.unwrap(), 0.5));
    assert!(close(m.burn_rate("errors", secs(3600), now).unwrap(), 0.5));
    // A window longer than the history uses all of it.
    assert!(close(m.burn_rate("errors", 365 * DAY, now).unwrap(), 0.5));
    assert_eq!(st.coverage, secs(3600));
    // Second hour: 1,000,000 more, 2,500 bad: overspent.
    m.handle_reading("errors", t0 + secs(7200), ev(3000.0, 2e6)).unwrap();
    let now = t0 + secs(7200);
    let st = m.status("errors", now).unwrap();
    assert!(close(st.error_ratio.unwrap(), 0.0015));
    assert!(close(st.budget_remaining.unwrap(), -0.5), "{:?}", st.budget_remaining);
    assert!(close(m.burn_rate("errors", secs(3600), now).unwrap(), 2.5));
    // Every threshold at or above -0.5 was crossed once, in order.
    let crossed: Vec<f64> = std::iter::from_fn(|| m.poll_event())
        .filter_map(|e| match e {
            SloEvent::BudgetThreshold { threshold, .. } => Some(threshold),
            _ => None,
        })
        .collect();
    assert_eq!(crossed, [0.5, 0.25, 0.1, 0.0]);
    // A counter reset counts from zero instead of going negative.
    m.handle_reading("errors", t0 + secs(10_800), ev(0.0, 1e6)).unwrap();
    let st = m.status("errors", t0 + secs(10_800)).unwrap();
    assert!(close(st.error_ratio.unwrap(), 3000.0 / 3e6));
}

#[test]
fn monitor_config_validation() {
    let with = |f: &dyn Fn(&mut MonitorConfig)| {
        let mut c = MonitorConfig::default();
        f(&mut c);
        c
    };
    let bad_configs = [
        with(&|c| {
            c.rules.push(BurnRateRule { factor: f64::NAN, long: secs(60), short: secs(5), page: true })
        }),
        with(&|c| {
            c.rules.push(BurnRateRule { factor: f64::INFINITY, long: secs(60), short: secs(5), page: true })
        }),
        with(&|c| c.rules.push(BurnRateRule { factor: -1.0, long: secs(60), short: secs(5), page: true })),
        with(&|c| {
            c.rules.push(BurnRateRule { factor: 2.0, long: Duration::ZERO, short: secs(5), page: true })
        }),
        with(&|c| {
            c.rules.push(BurnRateRule { factor: 2.0, long: secs(60), short: Duration::ZERO, page: true })
        }),
        with(&|c| c.budget_thresholds.push(f64::NAN)),
        with(&|c| c.budget_thresholds.push(1.5)),
        with(&|c| c.budget_thresholds.push(-0.1)),
        with(&|c| c.max_samples = 1),
        with(&|c| c.max_events = 0),
    ];
    for c in bad_configs {
        assert!(matches!(SloMonitor::try_new(c.clone()), Err(SloError::BadConfig(_))), "{c:?}");
        // `new` drops what is invalid instead.
        let m = SloMonitor::new(c);
        assert!(m.config().rules.iter().all(|r| r.factor.is_finite() && r.factor > 0.0));
        assert!(m.config().budget_thresholds.iter().all(|t| (0.0..=1.0).contains(t)));
        assert_eq!(m.config().rules.len(), BurnRateRule::workbook().len());
    }
    assert!(SloMonitor::try_new(MonitorConfig::default()).is_ok());
    assert!(
        SloMonitor::try_new(MonitorConfig {
            rules: vec![],
            budget_thresholds: vec![],
            ..MonitorConfig::default()
        })
        .is_ok()
    );
}

#[test]
fn undrained_events_are_bounded_and_counted() {
    let mut m = SloMonitor::try_new(MonitorConfig { max_events: 2, ..MonitorConfig::default() }).unwrap();
    m.add_slo(events_slo(0.999)).unwrap();
    let t0 = Instant::now();
    for i in 0..5u64 {
        m.handle_source_error("errors", t0 + secs(i * 2), SourceError::Unreachable("down".into())).unwrap();
        m.handle_reading("errors", t0 + secs(i * 2 + 1), ev(0.0, 10.0 * i as f64)).unwrap();
    }
    // 5 stale + 5 recovered events, 2 kept.
    assert_eq!(m.stats().events, 10);
    assert_eq!(m.stats().dropped_events, 8);
    assert_eq!(m.stats().source_errors, 5);
    let kept: Vec<_> = std::iter::from_fn(|| m.poll_event()).collect();
    assert_eq!(kept.len(), 2);
    assert!(matches!(&kept[1], SloEvent::SourceRecovered { slo } if slo == "errors"));
}

#[test]
fn tiny_history_cap_still_gives_whole_window_numbers() {
    let mut m = SloMonitor::try_new(MonitorConfig {
        resolution: Duration::ZERO,
        max_samples: 2,
        rules: vec![],
        ..MonitorConfig::default()
    })
    .unwrap();
    m.add_slo(events_slo(0.99)).unwrap();
    let t0 = Instant::now();
    for i in 0..=100u64 {
        m.handle_reading("errors", t0 + secs(i), ev(i as f64, 100.0 * i as f64)).unwrap();
    }
    let st = m.status("errors", t0 + secs(100)).unwrap();
    assert!(close(st.error_ratio.unwrap(), 0.01), "{st:?}");
    assert_eq!(st.coverage, secs(100), "the oldest sample is kept");
}

#[test]
fn prometheus_rules_refuse_what_promql_cannot_say() {
    let slo = events_slo(0.999);
    assert_eq!(prometheus_rules("svc", std::slice::from_ref(&slo), &[]), Err(RulesError::NoRules));
    let frac = BurnRateRule { factor: 2.0, long: Duration::from_millis(1500), short: secs(1), page: true };
    assert_eq!(
        prometheus_rules("svc", std::slice::from_ref(&slo), &[frac]),
        Err(RulesError::FractionalWindow(Duration::from_millis(1500)))
    );
    let y = prometheus_rules("svc", &[slo], &BurnRateRule::workbook()).unwrap();
    assert!(y.starts_with("groups:\n"));
    assert!(y.contains("ErrorsPageBurnRate"));
    assert!(y.contains("ErrorsTicketBurnRate"));
    assert!(y.contains("slo:sli_error:ratio_rate30d"));
    assert_eq!(prometheus_rules("svc", &[], &BurnRateRule::workbook()).unwrap(), "groups:\n");
}

// ---------------------------------------------------------------------------------------------
// Metrics

#[test]
fn registry_config_is_validated() {
    for r in [0.0, -1e-6, f64::NAN, f64::INFINITY] {
        let c = RegistryConfig { histogram_resolution: r, ..RegistryConfig::default() };
        assert_eq!(MetricsRegistry::with_config(c).unwrap_err(), RegistryError::BadResolution, "{r}");
    }
    for b in [vec![1.0, 1.0], vec![2.0, 1.0], vec![0.1, f64::NAN], vec![f64::INFINITY]] {
        let c = RegistryConfig { buckets: b.clone(), ..RegistryConfig::default() };
        assert_eq!(MetricsRegistry::with_config(c).unwrap_err(), RegistryError::BadBuckets, "{b:?}");
    }
    assert!(
        MetricsRegistry::with_config(RegistryConfig { buckets: vec![], ..RegistryConfig::default() }).is_ok()
    );
}

#[test]
fn rendering_escapes_labels_and_help_and_sanitises_names() {
    let r = MetricsRegistry::new();
    metrics::with_local_recorder(&r, || {
        metrics::describe_counter!("pvp_test_total", "line one\nback\\slash");
        metrics::counter!("pvp_test_total", "path" => "C:\\x\"y\"\nz").increment(2);
        metrics::counter!("9lives.count", "bad key!" => "v").increment(1);
        metrics::gauge!("pvp_g").set(-1.5);
        metrics::gauge!("pvp_nan").set(f64::NAN);
    });
    let text = r.render();
    assert!(text.contains("# HELP pvp_test_total line one\\nback\\\\slash\n"), "{text}");
    assert!(text.contains("# TYPE pvp_test_total counter\n"), "{text}");
    assert!(text.contains("pvp_test_total{path=\"C:\\\\x\\\"y\\\"\\nz\"} 2\n"), "{text}");
    assert!(text.contains("_lives_count{bad_key_=\"v\"} 1\n"), "{text}");
    assert!(text.contains("pvp_g -1.5\n"), "{text}");
    assert!(text.contains("pvp_nan NaN\n"), "{text}");
    // Every line is a comment or `name[{labels}] value`: no raw newline inside a series.
    for line in text.lines() {
        assert!(line.starts_with('#') || line.rsplit_once(' ').is_some_and(|(_, v)| !v.is_empty()), "{line}");
    }
    assert_eq!(r.counter_total("pvp_test_total"), Some(2));
    assert_eq!(r.counter_total("9lives.count"), Some(1), "found by the recorded name");
    assert_eq!(r.counter_total("_lives_count"), Some(1), "and by the rendered one");
    assert_eq!(r.counter_total("missing"), None);
    assert_eq!(r.gauge_total("pvp_g"), Some(-1.5));
}

#[test]
fn histograms_reject_bad_values_and_bucket_on_the_bounds() {
    let r = MetricsRegistry::with_config(RegistryConfig {
        histogram_resolution: 1e-3,
        buckets: vec![0.01, 0.1, 1.0],
    })
    .unwrap();
    metrics::with_local_recorder(&r, || {
        let h = metrics::histogram!("pvp_h_seconds");
        for v in [f64::NAN, -0.5, f64::INFINITY, f64::NEG_INFINITY] {
            h.record(v);
        }
        for v in [0.01, 0.1, 0.5, 2.0] {
            h.record(v);
        }
    });
    assert_eq!(r.stats().rejected_values, 4);
    let text = r.render();
    assert!(text.contains("pvp_h_seconds_bucket{le=\"0.01\"} 1\n"), "{text}");
    assert!(text.contains("pvp_h_seconds_bucket{le=\"0.1\"} 2\n"), "{text}");
    assert!(text.contains("pvp_h_seconds_bucket{le=\"1\"} 3\n"), "{text}");
    assert!(text.contains("pvp_h_seconds_bucket{le=\"+Inf\"} 4\n"), "{text}");
    assert!(text.contains("pvp_h_seconds_count 4\n"), "{text}");
    let snap = r.histogram("pvp_h_seconds").unwrap();
    assert_eq!(snap.count(), 4);
    assert!(close(snap.sum(), 2.61));
    assert_eq!(snap.quantile(f64::NAN), None);
    assert_eq!(snap.quantile(-3.0), snap.quantile(0.0));
    assert_eq!(snap.quantile(7.0), snap.quantile(1.0));
    assert_eq!(snap.count_at_most(-1.0), 0);
    assert_eq!(snap.count_at_most(f64::NAN), 0);
    assert_eq!(snap.count_at_most(f64::INFINITY), 4);
    // `since` a later snapshot (a reset) returns self unchanged.
    metrics::with_local_recorder(&r, || metrics::histogram!("pvp_h_seconds").record(0.2));
    let later = r.histogram("pvp_h_seconds").unwrap();
    assert_eq!(later.since(&snap).count(), 1);
    assert_eq!(snap.since(&later).count(), snap.count());
    assert!(r.histogram("missing").is_none());
}

#[test]
fn registry_as_metric_source() {
    let mut r = MetricsRegistry::new();
    assert_eq!(r.metric_value("players"), Err(SourceError::NoData("players".into())));
    metrics::with_local_recorder(&r, || {
        metrics::gauge!("players", "region" => "kr").set(10.0);
        metrics::gauge!("players", "region" => "jp").set(5.0);
        metrics::counter!("joins").increment(7);
    });
    assert_eq!(r.metric_value("players"), Ok(15.0));
    assert_eq!(r.metric_value("joins"), Ok(7.0));
    let s = r.stats();
    assert_eq!((s.counters, s.gauges, s.histograms), (1, 2, 0));
}

#[test]
fn a_histogram_whose_series_names_are_taken_is_left_out_and_counted() {
    let r = MetricsRegistry::new();
    metrics::with_local_recorder(&r, || {
        metrics::counter!("pvp_rtt_count").increment(3);
        metrics::histogram!("pvp_rtt").record(0.5);
        metrics::histogram!("pvp_ok").record(0.5);
    });
    let text = r.render();
    assert_eq!(
        text.matches("\npvp_rtt_count ").count() + usize::from(text.starts_with("pvp_rtt_count ")),
        1,
        "{text}"
    );
    assert!(text.contains("pvp_rtt_count 3\n"), "{text}");
    assert!(!text.contains("# TYPE pvp_rtt histogram"), "{text}");
    assert!(text.contains("# TYPE pvp_ok histogram"), "{text}");
    assert_eq!(r.stats().name_conflicts, 1);
    // Every series name appears under one family only.
    let mut seen = std::collections::HashSet::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        assert!(seen.insert(line.split(' ').nth(2).unwrap().to_string()), "{line}");
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus query client

use pvp_ops::SliSource;
use pvp_ops::prom::{PromClient, parse_query_answer};

#[test]
fn query_answers_parse_or_give_typed_errors() {
    let ok = r#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{"region":"kr"},"value":[1700000000.5,"3.25"]},
        {"metric":{},"value":[1700000000.5,"+Inf"]},
        {"value":[1700000000.5,"NaN"]}]}}"#;
    let v = parse_query_answer(ok).unwrap();
    assert_eq!(v.len(), 3);
    assert_eq!(v[0].labels.get("region").map(String::as_str), Some("kr"));
    assert_eq!((v[0].timestamp, v[0].value), (1_700_000_000.5, 3.25));
    assert_eq!(v[1].value, f64::INFINITY);
    assert!(v[2].value.is_nan());
    let scalar =
        parse_query_answer(r#"{"status":"success","data":{"resultType":"scalar","result":[1,"-Inf"]}}"#)
            .unwrap();
    assert_eq!(scalar.len(), 1);
    assert_eq!(scalar[0].value, f64::NEG_INFINITY);
    assert!(
        parse_query_answer(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#)
            .unwrap()
            .is_empty()
    );
    match parse_query_answer(r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#) {
        Err(SourceError::Query { kind, message }) => {
            assert_eq!((kind.as_str(), message.as_str()), ("bad_data", "parse error"))
        }
        other => panic!("{other:?}"),
    }
    for bad in [
        "",
        "not json",
        "{}",
        r#"{"status":"success"}"#,
        r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
        r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"abc"]}]}}"#,
        r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1]}]}}"#,
        r#"{"status":"success","data":{"resultType":"scalar","result":"x"}}"#,
    ] {
        assert!(matches!(parse_query_answer(bad), Err(SourceError::Malformed(_))), "{bad}");
    }
}

/// A loopback HTTP server answering each request with the next scripted (status, body).
fn scripted_prometheus(answers: Vec<(u16, &'static str)>) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let addr = server.server_addr().to_ip().unwrap();
    let t = std::thread::spawn(move || {
        let mut urls = Vec::new();
        for (status, body) in answers {
            let Ok(Some(req)) = server.recv_timeout(Duration::from_secs(10)) else { break };
            urls.push(req.url().to_string());
            let _ = req.respond(tiny_http::Response::from_string(body).with_status_code(status));
        }
        urls
    });
    (format!("http://{addr}/"), t)
}

const ONE: &str =
    r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"42"]}]}}"#;
const TWO: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}}"#;
const EMPTY: &str = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
const NAN: &str =
    r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#;
const BAD_QUERY: &str = r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error"}"#;

#[test]
fn prom_client_maps_every_answer_to_a_value_or_a_typed_error() {
    let (url, server) = scripted_prometheus(vec![
        (200, ONE),
        (200, TWO),
        (200, EMPTY),
        (400, BAD_QUERY),
        (503, "overloaded"),
        (200, "garbage"),
        (200, EMPTY),
        (200, NAN),
    ]);
    let mut c = PromClient::new(url).with_timeout(Duration::from_secs(10));
    assert_eq!(c.metric_value("players_online"), Ok(42.0));
    assert_eq!(c.query_scalar("x"), Err(SourceError::Ambiguous(2)));
    assert_eq!(c.metric_value("missing"), Err(SourceError::NoData("missing".into())));
    assert!(matches!(c.query("1 +"), Err(SourceError::Query { kind, .. }) if kind == "bad_data"));
    assert!(matches!(c.query("up"), Err(SourceError::Http { status: 503, .. })));
    assert!(matches!(c.query("up"), Err(SourceError::Malformed(_))));
    // An events SLI without a total series has no data yet.
    assert_eq!(
        c.read_sli(&Sli::events("bad_total", "all_total")),
        Err(SourceError::NoData("all_total".into()))
    );
    // A quantile over an empty range is NaN in PromQL: no value, not a bad one.
    assert_eq!(c.read_sli(&Sli::quantile_below("rtt", 0.99, 0.02)), Ok(SliReading::Quantile(None)));
    let s = c.stats();
    assert_eq!(s.queries, 8);
    // Ambiguous and empty answers are answers: only the three failed round trips count.
    assert_eq!(s.failures, 3);
    let urls = server.join().unwrap();
    assert_eq!(urls.len(), 8);
    assert!(urls.iter().all(|u| u.starts_with("/api/v1/query?query=")), "{urls:?}");
}

#[test]
fn prom_client_without_a_server_is_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut c = PromClient::new(format!("http://127.0.0.1:{port}")).with_timeout(Duration::from_secs(5));
    assert!(matches!(c.query("up"), Err(SourceError::Unreachable(_))));
    let mut bad_url = PromClient::new("not a url");
    assert!(matches!(bad_url.query("up"), Err(SourceError::Unreachable(_) | SourceError::Malformed(_))));
    assert_eq!(c.stats().failures, 1);
}

#[test]
fn metrics_server_serves_only_get_metrics_and_refuses_a_taken_port() {
    use pvp_ops::metrics::{MetricsServer, ServerError};
    let r = MetricsRegistry::new();
    metrics::with_local_recorder(&r, || metrics::counter!("pvp_scraped_total").increment(5));
    let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), r.clone()).unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
    let resp = agent.get(&format!("http://{addr}/metrics?x=1")).call().unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.header("Content-Type").unwrap_or("").starts_with("text/plain; version=0.0.4"));
    assert!(resp.into_string().unwrap().contains("pvp_scraped_total 5\n"));
    for path in ["/", "/metricsx", "/api/v1/query"] {
        match agent.get(&format!("http://{addr}{path}")).call() {
            Err(ureq::Error::Status(404, _)) => {}
            other => panic!("{path}: {:?}", other.map(|r| r.status())),
        }
    }
    assert!(matches!(agent.post(&format!("http://{addr}/metrics")).call(), Err(ureq::Error::Status(404, _))));
    assert_eq!(server.scrapes(), 1);
    assert!(matches!(MetricsServer::bind(addr, r), Err(ServerError::Bind(_))));
    server.shutdown();
}

#[test]
fn injectors_called_directly_refuse_targets_they_do_not_handle() {
    let servers = Servers::only_gs();
    let mut crash = CrashInjector::new(servers.clone());
    let db = Fault::new(FaultKind::ServerCrash, "db-1", secs(1), 1.0).unwrap();
    assert!(!crash.supports(&db));
    assert_eq!(crash.inject(&db), Err(FaultError::UnknownTarget("db-1".into())));
    assert!(servers.down.lock().unwrap().is_empty(), "nothing crashed");
    assert!(crash.crashed().is_empty());
    assert_eq!(crash.revert(&db), Err(FaultError::NotActive("db-1".into())));

    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let mut fill = pvp_ops::chaos::DiskFillInjector::new(dir.path(), 4096);
    let wrong = Fault::new(FaultKind::DiskFull, other.path().to_str().unwrap(), secs(1), 1.0).unwrap();
    assert!(!fill.supports(&wrong));
    assert!(matches!(fill.inject(&wrong), Err(FaultError::UnknownTarget(_))));
    assert_eq!(fill.filled_bytes(), 0);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let right = Fault::new(FaultKind::DiskFull, dir.path().to_str().unwrap(), secs(1), 0.5).unwrap();
    fill.inject(&right).unwrap();
    assert_eq!(fill.filled_bytes(), 2048);
    fill.revert(&right).unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
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

#[test]
fn installing_a_second_global_recorder_is_a_typed_error() {
    let first = MetricsRegistry::new();
    // Nothing else in this test binary installs a global recorder.
    first.install().unwrap();
    assert_eq!(MetricsRegistry::new().install(), Err(RegistryError::AlreadyInstalled));
    assert_eq!(first.install(), Err(RegistryError::AlreadyInstalled));
    metrics::counter!("pvp_global_total").increment(2);
    assert_eq!(first.counter_total("pvp_global_total"), Some(2));
}
