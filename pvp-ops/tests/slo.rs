//! SloMonitor: SLO validation, budgets, budget callbacks, burn-rate rules, stale sources,
//! the in-process registry as an SLI source.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pvp_ops::metrics::MetricsRegistry;
use pvp_ops::slo::{
    BurnRateRule, MonitorConfig, RegistrySli, Sli, SliReading, Slo, SloError, SloEvent, SloMonitor, seed_slos,
};
use pvp_ops::{SliSource, SourceError};

const DAY: u64 = 86_400;

fn errors_slo() -> Slo {
    Slo::new("errors", Sli::events("bad_total", "all_total"), 0.999, Duration::from_secs(30 * DAY)).unwrap()
}

#[test]
fn invalid_slos_are_refused() {
    let w = Duration::from_secs(DAY);
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
    assert!(s.iter().all(|s| s.objective() == 0.999 && s.window() == Duration::from_secs(30 * DAY)));
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
    let slo =
        Slo::new("lat", Sli::quantile_below("rtt", 0.99, 0.020), 0.999, Duration::from_secs(DAY)).unwrap();
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
