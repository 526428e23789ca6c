//! Prometheus: the query client (`pvp_ops::prom`) against scripted answers (every answer a value
//! or a typed error, no server unreachable), and real Prometheus parts: `promtool check metrics`
//! on our `/metrics`, `promtool check rules` on the exported rules, and a real Prometheus on
//! loopback scraping a registry while an SloMonitor reads SLIs through the query API and fires a
//! burn-rate alert on injected errors. The real-Prometheus tests skip (with a note) when the
//! binaries are missing; CI installs them.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pvp_ops::metrics::{MetricsRegistry, MetricsServer};
use pvp_ops::prom::{PromClient, parse_query_answer};
use pvp_ops::slo::{
    BurnRateRule, MonitorConfig, Sli, SliReading, Slo, SloEvent, SloMonitor, names, prometheus_rules,
    seed_slos,
};
use pvp_ops::{MetricSource, SliSource, SourceError};

fn have(bin: &str) -> bool {
    let ok = Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("note: `{bin}` not found; skipping (CI installs Debian's prometheus package)");
    }
    ok
}

fn record_traffic(reg: &MetricsRegistry, requests: u64, failures: u64) {
    metrics::with_local_recorder(reg, || {
        metrics::describe_counter!(names::REQUESTS_TOTAL, "Requests handled.");
        metrics::describe_counter!(names::REQUESTS_FAILED, "Requests that failed.");
        metrics::describe_histogram!(names::LATENCY_SECONDS, metrics::Unit::Seconds, "Request latency.");
        metrics::counter!(names::REQUESTS_TOTAL, "region" => "kr").increment(requests);
        metrics::counter!(names::REQUESTS_FAILED, "region" => "kr").increment(failures);
        for i in 0..requests {
            metrics::histogram!(names::LATENCY_SECONDS, "region" => "kr")
                .record(0.002 + (i % 10) as f64 * 0.001);
        }
    });
}

fn fetch(url: &str) -> String {
    ureq::get(url).call().expect("GET").into_string().expect("body")
}

#[test]
fn promtool_accepts_metrics_and_rules() {
    if !have("promtool") {
        return;
    }
    let reg = MetricsRegistry::new();
    record_traffic(&reg, 100, 3);
    metrics::with_local_recorder(&reg, || {
        metrics::describe_gauge!("pvp_ops_players_online", "Players online.");
        metrics::gauge!("pvp_ops_players_online", "region" => "kr", "note" => "quote\"d").set(42.0);
    });
    let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), reg).unwrap();
    let text = fetch(&format!("http://{}/metrics", server.local_addr()));
    assert!(text.contains("pvp_net_requests_total{region=\"kr\"} 100"), "{text}");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let rules = prometheus_rules("pvp", &seed_slos(), &BurnRateRule::workbook()).unwrap();
    let path = dir.path().join("slo-rules.yml");
    std::fs::write(&path, &rules).unwrap();
    let out = Command::new("promtool").args(["check", "rules"]).arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "promtool check rules failed:\n{}{}\n---\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // 3 SLOs x (8 windows + 4 meta) recordings and 2 alerts each.
    assert_eq!(rules.matches("- record:").count(), 3 * 12);
    assert_eq!(rules.matches("- alert:").count(), 3 * 2);
}

/// Kills Prometheus when the test ends, however it ends.
struct Prom(Child);

impl Drop for Prom {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_prometheus(dir: &Path, target: SocketAddr) -> (Prom, String) {
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: pvp\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.join("prometheus.log")).unwrap()))
        .spawn()
        .expect("start prometheus");
    (Prom(child), format!("http://127.0.0.1:{port}"))
}

/// Polls `cond` every 100 ms until it holds or `limit` passes.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn real_prometheus_feeds_the_slo_monitor_and_a_burn_rate_alert_fires() {
    if !have("prometheus") {
        return;
    }
    let reg = MetricsRegistry::new();
    record_traffic(&reg, 1000, 0);
    let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), reg.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_prom, url) = start_prometheus(dir.path(), server.local_addr());
    let mut client = PromClient::new(url.clone()).with_timeout(Duration::from_secs(2));
    let log = dir.path().join("prometheus.log");

    let total_is = |client: &mut PromClient, want: f64| matches!(client.query_scalar(&format!("sum({})", names::REQUESTS_TOTAL)), Ok(Some(v)) if v == want);
    assert!(
        wait_for(Duration::from_secs(60), || total_is(&mut client, 1000.0)),
        "prometheus never scraped us; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let window = Duration::from_secs(30 * 86_400);
    let slo =
        Slo::new("error-rate", Sli::events(names::REQUESTS_FAILED, names::REQUESTS_TOTAL), 0.999, window)
            .unwrap();
    let fired = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut mon = SloMonitor::new(MonitorConfig { resolution: Duration::ZERO, ..MonitorConfig::default() });
    mon.add_slo(slo).unwrap();
    let f2 = fired.clone();
    mon.on_event(move |e| f2.lock().unwrap().push(e.clone()));

    let status = mon.evaluate(Instant::now(), &mut client);
    assert!(status[0].stale.is_none(), "{status:?}");

    // Healthy traffic: no alert.
    record_traffic(&reg, 1000, 0);
    assert!(wait_for(Duration::from_secs(30), || total_is(&mut client, 2000.0)));
    let status = mon.evaluate(Instant::now(), &mut client);
    assert_eq!(status[0].error_ratio, Some(0.0));
    assert!(status[0].firing.is_empty());

    // Inject errors: 10 % of requests fail, 100x the budget rate.
    record_traffic(&reg, 1000, 100);
    assert!(wait_for(Duration::from_secs(30), || total_is(&mut client, 3000.0)));
    let status = mon.evaluate(Instant::now(), &mut client);
    let ratio = status[0].error_ratio.unwrap();
    assert!((ratio - 0.05).abs() < 1e-9, "100 bad of 2000 counted events: {ratio}");
    let events = fired.lock().unwrap().clone();
    assert!(
        events.iter().any(|e| matches!(e, SloEvent::BurnRateFiring(a) if a.factor == 14.4 && a.page)),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| matches!(e, SloEvent::BudgetThreshold { threshold, .. } if *threshold == 0.0))
    );

    // Quantile SLIs through histogram_quantile over our buckets.
    let lat = Sli::quantile_below(names::LATENCY_SECONDS, 0.99, 0.020);
    let mut q = None;
    assert!(wait_for(Duration::from_secs(30), || {
        q = match client.read_sli(&lat) {
            Ok(SliReading::Quantile(Some(v))) => Some(v),
            _ => None,
        };
        q.is_some()
    }));
    let q = q.unwrap();
    assert!(q > 0.005 && q <= 0.02, "p99 of 2..11 ms samples, bucketed: {q}");

    // Prometheus goes away: the monitor keeps its last good data and says it is stale.
    let before = mon.status("error-rate", Instant::now()).unwrap();
    let mut dead =
        PromClient::new(format!("http://127.0.0.1:{}", free_port())).with_timeout(Duration::from_secs(1));
    let after = mon.evaluate(Instant::now(), &mut dead);
    let stale = after[0].stale.as_ref().expect("stale");
    assert!(matches!(stale.error, SourceError::Unreachable(_) | SourceError::Timeout(_)), "{stale:?}");
    assert_eq!(after[0].error_ratio, before.error_ratio);
    assert!(!after[0].firing.is_empty(), "alerts keep their state while stale");

    // A malformed query is a typed error too.
    assert!(matches!(client.query("sum(("), Err(SourceError::Query { .. })));
    assert!(server.scrapes() >= 3);
}

// ---------------------------------------------------------------------------------------------
// The query client against scripted answers

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
