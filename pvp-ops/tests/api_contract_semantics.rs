//! API contract, semantics: the SLO maths, burn-rate alerts, rules export, autoscaling
//! decisions and forecasts do exactly what their rustdoc says, including on the documented
//! boundaries (exactly at a threshold, exactly at a window's edge).

use std::time::{Duration, Instant};

use pvp_ops::SourceError;
use pvp_ops::scale::{
    AutoScaler, FleetStatus, HoltWinters, PredictiveConfig, PredictiveScaler, RateLimit, ReadyBuffer,
    ScaleReason, ScalingPolicy, TargetTracking, ThresholdPolicy,
};
use pvp_ops::slo::{
    BurnRateRule, MonitorConfig, Sli, SliReading, Slo, SloEvent, SloMonitor, prometheus_rules,
};

const DAY: Duration = Duration::from_secs(86_400);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn events_slo(objective: f64) -> Slo {
    Slo::new("errors", Sli::events("bad_total", "req_total"), objective, 30 * DAY).unwrap()
}

fn ev(bad: f64, total: f64) -> SliReading {
    SliReading::Events { bad, total }
}

fn drain(m: &mut SloMonitor) -> Vec<SloEvent> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

// ---------------------------------------------------------------------------------------------
// SLOs

#[test]
fn budget_remaining_is_exactly_one_zero_and_negative() {
    let objective = 0.999;
    let budget = 1.0 - objective;
    let mut m = SloMonitor::new(MonitorConfig { resolution: Duration::ZERO, ..MonitorConfig::default() });
    m.add_slo(events_slo(objective)).unwrap();
    let t0 = Instant::now();
    m.handle_reading("errors", t0, ev(0.0, 0.0)).unwrap();
    // No bad events: budget untouched.
    m.handle_reading("errors", t0 + secs(60), ev(0.0, 1e6)).unwrap();
    let st = m.status("errors", t0 + secs(60)).unwrap();
    assert_eq!(st.error_ratio, Some(0.0));
    assert_eq!(st.budget_remaining, Some(1.0));
    assert!(drain(&mut m).is_empty());
    // Exactly the budget spent: error ratio == 1 - objective over the window.
    let bad = 2e6 * budget;
    m.handle_reading("errors", t0 + secs(120), ev(bad.round(), 2e6)).unwrap();
    let st = m.status("errors", t0 + secs(120)).unwrap();
    let ratio = st.error_ratio.unwrap();
    assert!((ratio - 2000.0 / 2e6).abs() < 1e-15);
    let rem = st.budget_remaining.unwrap();
    assert!(rem.abs() < 1e-9, "exactly spent: {rem}");
    // The 0 % threshold fires at exactly zero budget ("fell to or below").
    let crossed: Vec<f64> = drain(&mut m)
        .into_iter()
        .filter_map(|e| match e {
            SloEvent::BudgetThreshold { threshold, .. } => Some(threshold),
            _ => None,
        })
        .collect();
    assert_eq!(crossed, [0.5, 0.25, 0.1, 0.0]);
    // Twice the budget: -100 %.
    m.handle_reading("errors", t0 + secs(180), ev(2000.0 + 4000.0, 3e6)).unwrap();
    let st = m.status("errors", t0 + secs(180)).unwrap();
    let want = 1.0 - (6000.0 / 3e6) / budget;
    assert!((st.budget_remaining.unwrap() - want).abs() < 1e-9);
    assert!(st.budget_remaining.unwrap() < 0.0);
    // Already below every threshold: nothing fires again.
    assert!(drain(&mut m).iter().all(|e| !matches!(e, SloEvent::BudgetThreshold { .. })));
}

/// Feeds `minutes` one-minute readings of 10,000 requests with `bad_per_min` bad ones.
fn feed(
    m: &mut SloMonitor,
    t0: Instant,
    from_min: u64,
    minutes: u64,
    bad_per_min: f64,
    acc: &mut (f64, f64),
) {
    for k in 1..=minutes {
        acc.0 += bad_per_min;
        acc.1 += 10_000.0;
        m.handle_reading("errors", t0 + secs(60 * (from_min + k)), ev(acc.0, acc.1)).unwrap();
    }
}

#[test]
fn burn_rate_alert_fires_at_exactly_the_factor_and_resolves_on_the_short_window() {
    let objective = 0.999;
    let budget = 1.0 - objective;
    let rules = vec![BurnRateRule { factor: 14.4, long: secs(3600), short: secs(300), page: true }];
    let mut m = SloMonitor::new(MonitorConfig { rules, ..MonitorConfig::default() });
    m.add_slo(events_slo(objective)).unwrap();
    let t0 = Instant::now();
    m.handle_reading("errors", t0, ev(0.0, 0.0)).unwrap();
    let mut acc = (0.0, 0.0);
    // 14.4x the budget rate: 0.0144 of 10,000 = 144 bad a minute, for an hour.
    let bad = (14.4 * budget * 10_000.0_f64).round();
    assert_eq!(bad, 144.0);
    feed(&mut m, t0, 0, 60, bad, &mut acc);
    let now = t0 + secs(3600);
    let long = m.burn_rate("errors", secs(3600), now).unwrap();
    let short = m.burn_rate("errors", secs(300), now).unwrap();
    assert!((long - 14.4).abs() < 1e-9 && (short - 14.4).abs() < 1e-9, "{long} {short}");
    let fired = drain(&mut m);
    assert!(
        fired.iter().any(|e| matches!(e, SloEvent::BurnRateFiring(a) if a.factor == 14.4 && a.page)),
        "exactly 14.4x over both windows must fire: {fired:?}"
    );
    assert_eq!(m.status("errors", now).unwrap().firing.len(), 1);
    // One good minute: the 5-minute window falls to 14.4 * 4/5 (the hour to 14.4 * 59/60)
    // and the alert resolves.
    feed(&mut m, t0, 60, 1, 0.0, &mut acc);
    let ev = drain(&mut m);
    let resolved = ev
        .iter()
        .find_map(|e| match e {
            SloEvent::BurnRateResolved(a) => Some(a.clone()),
            _ => None,
        })
        .expect("resolves once the short window drops");
    assert!((resolved.short_burn - 14.4 * 4.0 / 5.0).abs() < 1e-9, "{resolved:?}");
    assert!((resolved.long_burn - 14.4 * 59.0 / 60.0).abs() < 1e-9, "{resolved:?}");
    assert!(m.status("errors", t0 + secs(61 * 60)).unwrap().firing.is_empty());
}

#[test]
fn burn_rate_just_below_the_factor_does_not_fire_but_the_slower_rule_does() {
    let budget = 1.0 - 0.999;
    let mut m = SloMonitor::new(MonitorConfig::default());
    m.add_slo(events_slo(0.999)).unwrap();
    let t0 = Instant::now();
    m.handle_reading("errors", t0, ev(0.0, 0.0)).unwrap();
    let mut acc = (0.0, 0.0);
    // 14.3x: under 14.4, over 6 (the 6h window uses the hour of history there is).
    let bad = (14.3 * budget * 10_000.0_f64).round();
    feed(&mut m, t0, 0, 60, bad, &mut acc);
    let factors: Vec<f64> = drain(&mut m)
        .into_iter()
        .filter_map(|e| match e {
            SloEvent::BurnRateFiring(a) => Some(a.factor),
            _ => None,
        })
        .collect();
    assert!(!factors.contains(&14.4), "{factors:?}");
    assert!(factors.contains(&6.0), "{factors:?}");
}

#[test]
fn a_sample_exactly_at_the_window_start_is_the_window_start() {
    let mut m = SloMonitor::new(MonitorConfig { resolution: Duration::ZERO, ..MonitorConfig::default() });
    m.add_slo(events_slo(0.99)).unwrap();
    let t0 = Instant::now();
    m.handle_reading("errors", t0, ev(0.0, 0.0)).unwrap();
    m.handle_reading("errors", t0 + secs(300), ev(10.0, 1000.0)).unwrap();
    m.handle_reading("errors", t0 + secs(600), ev(10.0, 2000.0)).unwrap();
    let now = t0 + secs(600);
    // The 300 s window starts at the sample taken at t0 + 300: no bad events since.
    assert_eq!(m.burn_rate("errors", secs(300), now), Some(0.0));
    // One second longer: the window starts at t0 (the newest sample at or before its start).
    let want = (10.0 / 2000.0) / (1.0 - 0.99);
    assert!((m.burn_rate("errors", secs(301), now).unwrap() - want).abs() < 1e-9);
    // Ending at t0 + 300 (the later sample is not yet seen): 10 of 1000.
    let want = (10.0 / 1000.0) / (1.0 - 0.99);
    assert!((m.burn_rate("errors", secs(300), t0 + secs(300)).unwrap() - want).abs() < 1e-9);
}

#[test]
fn counter_reset_of_both_counters_counts_from_zero() {
    let mut m = SloMonitor::new(MonitorConfig { resolution: Duration::ZERO, ..MonitorConfig::default() });
    m.add_slo(events_slo(0.99)).unwrap();
    let t0 = Instant::now();
    m.handle_reading("errors", t0, ev(100.0, 10_000.0)).unwrap();
    m.handle_reading("errors", t0 + secs(60), ev(150.0, 20_000.0)).unwrap();
    // Process restarted: both counters start again from zero.
    m.handle_reading("errors", t0 + secs(120), ev(30.0, 1_000.0)).unwrap();
    let st = m.status("errors", t0 + secs(120)).unwrap();
    // The first reading is the baseline: 50 + 30 bad of 10,000 + 1,000.
    let want = (50.0 + 30.0) / (10_000.0 + 1_000.0);
    assert!((st.error_ratio.unwrap() - want).abs() < 1e-12, "{:?}", st.error_ratio);
}

#[test]
fn time_slice_sli_counts_seconds_and_the_threshold_itself_is_good() {
    let slo = Slo::new("lat", Sli::quantile_below("lat_seconds", 0.99, 0.020), 0.9, 30 * DAY).unwrap();
    let mut m = SloMonitor::new(MonitorConfig { resolution: Duration::ZERO, ..MonitorConfig::default() });
    m.add_slo(slo).unwrap();
    let t0 = Instant::now();
    m.handle_reading("lat", t0, SliReading::Quantile(Some(0.5))).unwrap();
    // Exactly the threshold is good (p99 <= 20 ms).
    m.handle_reading("lat", t0 + secs(60), SliReading::Quantile(Some(0.020))).unwrap();
    assert_eq!(m.status("lat", t0 + secs(60)).unwrap().error_ratio, Some(0.0));
    // 30 bad seconds, then 30 seconds without values (neither good nor bad), then 90 good.
    m.handle_reading("lat", t0 + secs(90), SliReading::Quantile(Some(0.021))).unwrap();
    m.handle_reading("lat", t0 + secs(120), SliReading::Quantile(None)).unwrap();
    m.handle_reading("lat", t0 + secs(210), SliReading::Quantile(Some(0.001))).unwrap();
    let st = m.status("lat", t0 + secs(210)).unwrap();
    let want = 30.0 / (60.0 + 30.0 + 90.0);
    assert!((st.error_ratio.unwrap() - want).abs() < 1e-12, "{:?}", st.error_ratio);
    assert!((st.budget_remaining.unwrap() - (1.0 - want / (1.0 - 0.9))).abs() < 1e-9);
}

#[test]
fn stale_source_keeps_alerts_and_numbers_until_a_good_reading() {
    let mut m = SloMonitor::new(MonitorConfig::default());
    m.add_slo(events_slo(0.999)).unwrap();
    let t0 = Instant::now();
    m.handle_reading("errors", t0, ev(0.0, 0.0)).unwrap();
    let mut acc = (0.0, 0.0);
    feed(&mut m, t0, 0, 60, 500.0, &mut acc);
    let before = m.status("errors", t0 + secs(3600)).unwrap();
    assert!(!before.firing.is_empty());
    drain(&mut m);
    for k in 1..=3u64 {
        m.handle_source_error("errors", t0 + secs(3600 + 60 * k), SourceError::NoData("x".into())).unwrap();
    }
    let st = m.status("errors", t0 + secs(3600 + 180)).unwrap();
    let stale = st.stale.clone().expect("stale");
    assert_eq!(stale.failures, 3);
    assert_eq!(stale.since, t0 + secs(3660));
    assert_eq!(st.firing, before.firing, "alerts keep their state while stale");
    assert_eq!(st.error_ratio, before.error_ratio, "numbers come from the last good data");
    let evs = drain(&mut m);
    assert_eq!(evs.iter().filter(|e| matches!(e, SloEvent::SourceStale { .. })).count(), 1);
    feed(&mut m, t0, 63, 1, 500.0, &mut acc);
    assert!(drain(&mut m).iter().any(|e| matches!(e, SloEvent::SourceRecovered { .. })));
    assert!(m.status("errors", t0 + secs(64 * 60)).unwrap().stale.is_none());
}

#[test]
fn exported_alerts_use_the_same_at_least_comparison_as_the_monitor() {
    let slo = events_slo(0.999);
    let y = prometheus_rules("pvp", &[slo], &BurnRateRule::workbook()).unwrap();
    // In-process: fire when burn >= factor on both windows; the export must agree at the edge.
    for (f, l, s) in [("14.4", "1h", "5m"), ("6", "6h", "30m"), ("3", "1d", "2h"), ("1", "3d", "6h")] {
        let long = format!(
            "slo:sli_error:ratio_rate{l}{{service=\\\"pvp\\\", slo=\\\"errors\\\"}} >= ({f} * (1 - 0.999))"
        );
        let short = format!(
            "slo:sli_error:ratio_rate{s}{{service=\\\"pvp\\\", slo=\\\"errors\\\"}} >= ({f} * (1 - 0.999))"
        );
        assert!(y.contains(&long), "missing {long}\n{y}");
        assert!(y.contains(&short), "missing {short}");
    }
    // Every window a rule uses, and the SLO period, is recorded.
    for w in ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"] {
        assert!(y.contains(&format!("slo:sli_error:ratio_rate{w}\"")), "no recording for {w}");
    }
}

// ---------------------------------------------------------------------------------------------
// AutoScaler

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

// ---------------------------------------------------------------------------------------------
// Forecasting

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

#[test]
fn budget_threshold_fires_again_after_the_budget_recovers_and_falls_again() {
    let slo = Slo::new("errors", Sli::events("b", "t"), 0.99, secs(600)).unwrap();
    let cfg = MonitorConfig {
        resolution: Duration::ZERO,
        budget_thresholds: vec![0.5],
        ..MonitorConfig::default()
    };
    let mut m = SloMonitor::try_new(cfg).unwrap();
    m.add_slo(slo).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    m.on_event(move |e| s2.lock().unwrap().push(e.clone()));
    let t0 = Instant::now();
    m.handle_reading("errors", t0, ev(0.0, 0.0)).unwrap();
    // 0.6 % errors: 60 % of the 1 % budget spent, 40 % left: crosses 0.5.
    m.handle_reading("errors", t0 + secs(60), ev(6.0, 1000.0)).unwrap();
    // The bad minute leaves the 600 s window: budget back to 100 %.
    m.handle_reading("errors", t0 + secs(700), ev(6.0, 101_000.0)).unwrap();
    let st = m.status("errors", t0 + secs(700)).unwrap();
    assert_eq!(st.budget_remaining, Some(1.0));
    // And falls again (0.6 % over the window from t0 + 60): a second crossing, a second event.
    m.handle_reading("errors", t0 + secs(760), ev(6.0 + 1200.0, 201_000.0)).unwrap();
    let polled = drain(&mut m);
    let th: Vec<f64> = polled
        .iter()
        .filter_map(|e| match e {
            SloEvent::BudgetThreshold { threshold, remaining, .. } => {
                assert!(*remaining <= *threshold);
                Some(*threshold)
            }
            _ => None,
        })
        .collect();
    assert_eq!(th, [0.5, 0.5]);
    // Callbacks saw the very events that were queued, in order.
    assert_eq!(*seen.lock().unwrap(), polled);
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
