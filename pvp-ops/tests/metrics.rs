//! The metrics registry and server: configs validated, Prometheus text rendering (escaped labels
//! and help, sanitised names), histogram buckets on their bounds, a histogram whose series names
//! are taken, the registry as a metric source, the `/metrics` server, and installing the global
//! recorder. That last test installs the process-wide `metrics` recorder: nothing else in this
//! test binary may install one.

use std::time::Duration;

use pvp_ops::metrics::{MetricsRegistry, RegistryConfig, RegistryError};
use pvp_ops::{MetricSource, SourceError};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

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
fn installing_a_second_global_recorder_is_a_typed_error() {
    let first = MetricsRegistry::new();
    // Nothing else in this test binary installs a global recorder.
    first.install().unwrap();
    assert_eq!(MetricsRegistry::new().install(), Err(RegistryError::AlreadyInstalled));
    assert_eq!(first.install(), Err(RegistryError::AlreadyInstalled));
    metrics::counter!("pvp_global_total").increment(2);
    assert_eq!(first.counter_total("pvp_global_total"), Some(2));
}
