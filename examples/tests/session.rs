//! A short multi-region session on loopback, asserted on its report.

use std::sync::atomic::AtomicBool;

use pvp_examples::{RunningSession, SessionConfig};

#[test]
fn short_session_matches_everywhere_and_converges() {
    let config = SessionConfig {
        players: 300,
        duration_secs: 4.0,
        progress_interval_secs: 0.0,
        think_time_ms: 100,
        ..SessionConfig::default()
    };
    let mut session = RunningSession::start(config).expect("session starts");
    let addr = session.metrics_addr().expect("metrics served");
    session.run_until(&AtomicBool::new(false), |_| {});
    let scrape = std::net::TcpStream::connect(addr).is_ok();
    let report = session.finish();
    println!("{report}");
    assert!(scrape, "/metrics reachable");
    for r in &report.regions {
        assert!(r.matches_finished > 0, "matches finished in {}", r.region);
        assert!(r.matches_made > 0, "matches made in {}", r.region);
    }
    assert_eq!(report.over_latency_limit, 0, "nobody over their latency limit");
    assert!(report.converged, "replicas converged");
    assert_eq!(report.lost_results, 0);
    assert_eq!(report.errors, 0, "no errors");
    assert!(report.drained);
    assert!(report.cross_region_matches > 0, "kr and jp players meet");
    assert!(report.net_rtt_p99_us.is_some());
    assert!(report.sync_lag_p50_ms.is_some_and(|l| l >= 15), "sync goes through the delayed proxies");
    for s in &report.snapshots {
        assert!(std::fs::metadata(s).is_ok_and(|m| m.len() > 0));
        let _ = std::fs::remove_file(s);
    }
}
