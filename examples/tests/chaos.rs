//! The failover run, shortened: kr cut off under a few hundred bots, healed, servers crashed.

use std::time::Duration;

use pvp_examples::SessionConfig;
use pvp_examples::chaos::{FailoverConfig, run_failover};

#[test]
fn partition_reroutes_and_heals_without_losing_writes() {
    let session = SessionConfig {
        players: 300,
        progress_interval_secs: 0.0,
        think_time_ms: 100,
        metrics_addr: String::new(),
        ..SessionConfig::default()
    };
    let mut cfg = FailoverConfig::new(session);
    cfg.warmup = Duration::from_millis(1_500);
    cfg.partition = Duration::from_secs(4);
    let outcome = run_failover(cfg).expect("the run completes");
    println!("{outcome}");
    assert!(outcome.partition.recovery_time.is_some(), "recovered after the heal");
    assert!(outcome.reroute_time.is_some_and(|t| t <= Duration::from_secs(5)), "rerouted within 5 s");
    assert!(
        outcome.transitions.iter().any(|t| t.3 == pvp_global::failover::RegionHealth::Down),
        "kr was marked Down"
    );
    assert_eq!(outcome.report.lost_results, 0);
    assert!(outcome.report.converged);
    assert!(outcome.report.crashed_matches > 0);
    for t in &outcome.targets {
        assert!(t.met, "target missed: {} ({})", t.what, t.measured);
    }
    assert!(outcome.passed());
    for s in &outcome.report.snapshots {
        let _ = std::fs::remove_file(s);
    }
}
