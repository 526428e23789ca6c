//! SloMonitor: SLO validation, error budgets (exactly one, zero, negative), budget callbacks
//! firing once per crossing, multi-window burn-rate rules at exactly their factor and window
//! edges, counter resets, bad readings refused without change, stale sources, bounded history
//! and events, the exported Prometheus rules, and the in-process registry as an SLI source.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pvp_ops::metrics::MetricsRegistry;
use pvp_ops::slo::{
    BurnRateRule, MonitorConfig, RegistrySli, RulesError, Sli, SliReading, Slo, SloError, SloEvent,
    SloMonitor, prometheus_rules, seed_slos,
};
use pvp_ops::{SliSource, SourceError};

const DAY_SECS: u64 = 86_400;

fn errors_slo() -> Slo {
    Slo::new("errors", Sli::events("bad_total", "all_total"), 0.999, Duration::from_secs(30 * DAY_SECS))
        .unwrap()
}

#[test]
fn invalid_slos_are_refused() {
    let w = Duration::from_secs(DAY_SECS);
    let sli = Sli::events("b", "t");
    for o in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
        assert!(matches!(Slo::new("x", sli.clone(), o, w), Err(SloError::ObjectiveOutOfRange(_))), "{o}");
    }
    assert_eq!(Slo::new("x", sli.clone(), 0.99, Duration::ZERO), Err(SloError::EmptyWindow));
    assert!(matches!(Slo::new("", sli.clone(), 0.99, w), Err(SloError::BadName(_))));
    assert!(matches!(Slo::new("a b", sli.clone(), 0.99, w), Err(SloError::BadName(_))));
    assert_eq!(Slo::new("x", Sli::events("", "t"), 0.99, w), Err(SloError::EmptyMetric));
    assert!(matches!(
        Slo::new("x", Sli::quantile_below("h", 1.0, 0.02), 0.99, w),
        Err(SloError::QuantileOutOfRange(_))
    ));
    assert!(matches!(
        Slo::new("x", Sli::quantile_below("h", 0.99, -1.0), 0.99, w),
        Err(SloError::BadThreshold(_))
    ));
    let mut m = SloMonitor::new(MonitorConfig::default());
    m.add_slo(errors_slo()).unwrap();
    assert_eq!(m.add_slo(errors_slo()), Err(SloError::Duplicate("errors".into())));
    let bad_rules = MonitorConfig {
        rules: vec![BurnRateRule { factor: 0.0, long: w, short: w, page: true }],
        ..MonitorConfig::default()
    };
    assert!(matches!(SloMonitor::try_new(bad_rules), Err(SloError::BadConfig(_))));
}

#[test]
fn seed_slos_match_the_seed() {
    let s = seed_slos();
    assert_eq!(s.len(), 3);
    assert!(s.iter().all(|s| s.objective() == 0.999 && s.window() == Duration::from_secs(30 * DAY_SECS)));
    assert!(
        matches!(s[0].sli(), Sli::QuantileBelow { quantile, threshold, .. } if *quantile == 0.99 && *threshold == 0.020)
    );
    assert!(
        matches!(s[2].sli(), Sli::QuantileBelow { quantile, threshold, .. } if *quantile == 0.95 && *threshold == 30.0)
    );
}

#[test]
fn budget_thresholds_fire_once_per_crossing() {
    let mut m = SloMonitor::new(MonitorConfig { resolution: Duration::ZERO, ..MonitorConfig::default() });
    m.add_slo(errors_slo()).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    m.on_event(move |e| {
        if let SloEvent::BudgetThreshold { threshold, .. } = e {
            s2.lock().unwrap().push(*threshold);
        }
    });
    let t0 = Instant::now();
    let mut bad = 0.0;
    let mut total = 0.0;
    m.handle_reading("errors", t0, SliReading::Events { bad, total }).unwrap();
    // Each hour 1,000,000 requests; the budget is 0.1 %. Spend ~20 % of budget-at-this-volume each step.
    let mut remaining = Vec::new();
    for h in 1..=6u64 {
        total += 1_000_000.0;
        bad += 600.0;
        m.handle_reading("errors", t0 + Duration::from_secs(3600 * h), SliReading::Events { bad, total })
            .unwrap();
        remaining
            .push(m.status("errors", t0 + Duration::from_secs(3600 * h)).unwrap().budget_remaining.unwrap());
    }
    // 0.06 % errors: 40 % of budget left, steady; only the 0.5 threshold crossed, once.
    assert!((remaining[5] - 0.4).abs() < 1e-9, "{remaining:?}");
    assert_eq!(*seen.lock().unwrap(), vec![0.5]);
    // A bad hour: 5 % errors over the next hour drives the window's budget below 0.
    total += 1_000_000.0;
    bad += 50_000.0;
    m.handle_reading("errors", t0 + Duration::from_secs(3600 * 7), SliReading::Events { bad, total })
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![0.5, 0.25, 0.1, 0.0]);
}

#[test]
fn multiwindow_burn_rates_follow_the_workbook() {
    let mut m = SloMonitor::new(MonitorConfig::default());
    m.add_slo(errors_slo()).unwrap();
    let t0 = Instant::now();
    let mut bad = 0.0;
    let mut total = 0.0;
    let mut t = t0;
    m.handle_reading("errors", t, SliReading::Events { bad, total }).unwrap();
    // 2 hours at 0.7 % errors: 7x. Not enough for 14.4x; 6x needs 6 h of it.
    for _ in 0..120 {
        t += Duration::from_secs(60);
        total += 10_000.0;
        bad += 70.0;
        m.handle_reading("errors", t, SliReading::Events { bad, total }).unwrap();
    }
    let st = m.status("errors", t).unwrap();
    let (l, s) = st.burn_rates[0];
    assert!((l.unwrap() - 7.0).abs() < 1e-6 && (s.unwrap() - 7.0).abs() < 1e-6);
    // Long windows see all 2 h of history: 6x 6h/30m and 3x 1d/2h both fire (partial windows).
    let factors: Vec<f64> = st.firing.iter().map(|a| a.factor).collect();
    assert_eq!(factors, vec![6.0, 3.0, 1.0]);
    // Recovery: errors stop; the short windows drop first and the alerts resolve.
    for _ in 0..40 {
        t += Duration::from_secs(60);
        total += 10_000.0;
        m.handle_reading("errors", t, SliReading::Events { bad, total }).unwrap();
    }
    let st = m.status("errors", t).unwrap();
    let factors: Vec<f64> = st.firing.iter().map(|a| a.factor).collect();
    assert_eq!(factors, vec![3.0, 1.0], "the 30 m window is clean now; 2 h and 6 h are not");
    let mut resolved = 0;
    while let Some(e) = m.poll_event() {
        if let SloEvent::BurnRateResolved(a) = e {
            assert_eq!(a.factor, 6.0);
            resolved += 1;
        }
    }
    assert_eq!(resolved, 1);
}

#[test]
fn page_alert_on_a_fast_burn() {
    let mut m = SloMonitor::new(MonitorConfig::default());
    m.add_slo(errors_slo()).unwrap();
    let t0 = Instant::now();
    m.handle_reading("errors", t0, SliReading::Events { bad: 0.0, total: 0.0 }).unwrap();
    m.handle_reading(
        "errors",
        t0 + Duration::from_secs(600),
        SliReading::Events { bad: 200.0, total: 10_000.0 },
    )
    .unwrap();
    let st = m.status("errors", t0 + Duration::from_secs(600)).unwrap();
    assert!(st.firing.iter().any(|a| a.factor == 14.4 && a.page));
}

#[test]
fn counter_resets_and_bad_readings() {
    let mut m = SloMonitor::new(MonitorConfig { resolution: Duration::ZERO, ..MonitorConfig::default() });
    m.add_slo(errors_slo()).unwrap();
    let t0 = Instant::now();
    let at = |s| t0 + Duration::from_secs(s);
    m.handle_reading("errors", at(0), SliReading::Events { bad: 10.0, total: 1000.0 }).unwrap();
    m.handle_reading("errors", at(60), SliReading::Events { bad: 10.0, total: 2000.0 }).unwrap();
    // The process restarted: counters went back to small values.
    m.handle_reading("errors", at(120), SliReading::Events { bad: 1.0, total: 500.0 }).unwrap();
    let st = m.status("errors", at(120)).unwrap();
    assert!((st.error_ratio.unwrap() - 1.0 / 1500.0).abs() < 1e-12);
    let before = m.stats().rejected_readings;
    for r in [
        SliReading::Events { bad: -1.0, total: 1.0 },
        SliReading::Events { bad: 5.0, total: 1.0 },
        SliReading::Events { bad: f64::NAN, total: 1.0 },
        SliReading::Quantile(Some(0.1)),
    ] {
        assert_eq!(m.handle_reading("errors", at(180), r), Err(SloError::BadReading("errors".into())));
    }
    assert_eq!(
        m.handle_reading("errors", at(10), SliReading::Events { bad: 1.0, total: 600.0 }),
        Err(SloError::TimeWentBack("errors".into()))
    );
    assert_eq!(
        m.handle_reading("nope", at(200), SliReading::Quantile(None)),
        Err(SloError::UnknownSlo("nope".into()))
    );
    assert_eq!(m.stats().rejected_readings, before + 5);
    assert_eq!(m.status("errors", at(120)).unwrap(), st, "refused readings change nothing");
}

#[test]
fn time_slice_quantile_slo() {
    let slo = Slo::new("lat", Sli::quantile_below("rtt", 0.99, 0.020), 0.999, Duration::from_secs(DAY_SECS))
        .unwrap();
    let mut m = SloMonitor::new(MonitorConfig { resolution: Duration::ZERO, ..MonitorConfig::default() });
    m.add_slo(slo).unwrap();
    let t0 = Instant::now();
    for i in 0..=100u64 {
        // Minutes 91..=100 are slow.
        let q = if i > 90 { 0.050 } else { 0.010 };
        m.handle_reading("lat", t0 + Duration::from_secs(60 * i), SliReading::Quantile(Some(q))).unwrap();
    }
    let st = m.status("lat", t0 + Duration::from_secs(6000)).unwrap();
    assert!((st.error_ratio.unwrap() - 0.1).abs() < 1e-9, "{st:?}");
    // Empty intervals count as neither good nor bad.
    m.handle_reading("lat", t0 + Duration::from_secs(6060), SliReading::Quantile(None)).unwrap();
    let st2 = m.status("lat", t0 + Duration::from_secs(6060)).unwrap();
    assert_eq!(st2.error_ratio, st.error_ratio);
}

struct Flaky {
    fail: bool,
    total: f64,
}

impl SliSource for Flaky {
    fn read_sli(&mut self, _: &Sli) -> Result<SliReading, SourceError> {
        if self.fail {
            return Err(SourceError::Malformed("garbage".into()));
        }
        self.total += 100.0;
        Ok(SliReading::Events { bad: self.total / 10.0, total: self.total })
    }
}

#[test]
fn stale_source_keeps_last_good_data_and_says_so() {
    let mut m = SloMonitor::new(MonitorConfig { resolution: Duration::ZERO, ..MonitorConfig::default() });
    m.add_slo(errors_slo()).unwrap();
    let t0 = Instant::now();
    let mut src = Flaky { fail: false, total: 0.0 };
    m.evaluate(t0, &mut src);
    let good = m.evaluate(t0 + Duration::from_secs(60), &mut src);
    assert!(good[0].stale.is_none());
    src.fail = true;
    let s1 = m.evaluate(t0 + Duration::from_secs(120), &mut src);
    let s2 = m.evaluate(t0 + Duration::from_secs(180), &mut src);
    let stale = s2[0].stale.as_ref().unwrap();
    assert_eq!(stale.failures, 2);
    assert_eq!(stale.since, t0 + Duration::from_secs(120));
    assert_eq!(stale.error, SourceError::Malformed("garbage".into()));
    assert_eq!(s1[0].error_ratio, good[0].error_ratio);
    assert_eq!(s2[0].firing, good[0].firing);
    src.fail = false;
    let s3 = m.evaluate(t0 + Duration::from_secs(240), &mut src);
    assert!(s3[0].stale.is_none());
    let events: Vec<_> = std::iter::from_fn(|| m.poll_event()).collect();
    assert_eq!(events.iter().filter(|e| matches!(e, SloEvent::SourceStale { .. })).count(), 1);
    assert_eq!(events.iter().filter(|e| matches!(e, SloEvent::SourceRecovered { .. })).count(), 1);
}

#[test]
fn history_and_event_queue_stay_bounded() {
    let mut m = SloMonitor::new(MonitorConfig {
        resolution: Duration::ZERO,
        max_samples: 64,
        max_events: 4,
        ..MonitorConfig::default()
    });
    m.add_slo(errors_slo()).unwrap();
    let t0 = Instant::now();
    let mut total = 0.0;
    for i in 0..10_000u64 {
        total += 100.0;
        // Alternate good and terrible minutes so alerts flap and events pile up.
        let bad: f64 = if (i / 100) % 2 == 0 { 0.0 } else { total };
        let _ = m.handle_reading(
            "errors",
            t0 + Duration::from_secs(60 * i),
            SliReading::Events { bad: bad.min(total), total },
        );
    }
    let mut n = 0;
    while m.poll_event().is_some() {
        n += 1;
    }
    assert!(n <= 4);
    assert!(m.stats().dropped_events > 0);
}

#[test]
fn in_process_registry_as_sli_source() {
    let reg = MetricsRegistry::new();
    let mut src = RegistrySli::new(reg.clone());
    let errors = Sli::events("pvp_t_failed_total", "pvp_t_requests_total");
    assert!(matches!(src.read_sli(&errors), Err(SourceError::NoData(_))));
    metrics::with_local_recorder(&reg, || {
        metrics::counter!("pvp_t_requests_total").increment(100);
    });
    assert_eq!(src.read_sli(&errors).unwrap(), SliReading::Events { bad: 0.0, total: 100.0 });
    let lat = Sli::quantile_below("pvp_t_rtt_seconds", 0.99, 0.02);
    assert_eq!(src.read_sli(&lat).unwrap(), SliReading::Quantile(None));
    metrics::with_local_recorder(&reg, || {
        for _ in 0..99 {
            metrics::histogram!("pvp_t_rtt_seconds").record(0.005);
        }
        metrics::histogram!("pvp_t_rtt_seconds").record(0.5);
        metrics::histogram!("pvp_t_rtt_seconds").record(0.5);
    });
    let SliReading::Quantile(Some(q)) = src.read_sli(&lat).unwrap() else { panic!() };
    assert!((q - 0.5).abs() < 0.001, "{q}");
    // The next interval only holds new values.
    metrics::with_local_recorder(&reg, || {
        for _ in 0..10 {
            metrics::histogram!("pvp_t_rtt_seconds").record(0.003);
        }
    });
    let SliReading::Quantile(Some(q)) = src.read_sli(&lat).unwrap() else { panic!() };
    assert!((q - 0.003).abs() < 0.0001, "{q}");
    assert_eq!(src.read_sli(&lat).unwrap(), SliReading::Quantile(None));
}

// ---------------------------------------------------------------------------------------------
// Validation, budgets and bad input

const DAY: Duration = Duration::from_secs(86_400);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

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
// Budgets and burn rates at their boundaries

fn requests_slo(objective: f64) -> Slo {
    Slo::new("errors", Sli::events("bad_total", "req_total"), objective, 30 * DAY).unwrap()
}

fn drain(m: &mut SloMonitor) -> Vec<SloEvent> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

#[test]
fn budget_remaining_is_exactly_one_zero_and_negative() {
    let objective = 0.999;
    let budget = 1.0 - objective;
    let mut m = SloMonitor::new(MonitorConfig { resolution: Duration::ZERO, ..MonitorConfig::default() });
    m.add_slo(requests_slo(objective)).unwrap();
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
    m.add_slo(requests_slo(objective)).unwrap();
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
    m.add_slo(requests_slo(0.999)).unwrap();
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
    m.add_slo(requests_slo(0.99)).unwrap();
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
    m.add_slo(requests_slo(0.99)).unwrap();
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
    m.add_slo(requests_slo(0.999)).unwrap();
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
    let slo = requests_slo(0.999);
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
