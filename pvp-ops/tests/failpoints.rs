//! Fault points (`--features failpoints`). In their own test binary, as fail-rs advises: the
//! fail-point registry is process-wide.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pvp_ops::SourceError;
use pvp_ops::chaos::{
    ChaosEngine, ChaosError, CrashInjector, CrashTarget, ExperimentConfig, Fault, FaultError, FaultKind,
};
use pvp_ops::prom::PromClient;
use pvp_ops::slo::{MonitorConfig, Sli, Slo, SloMonitor};

#[derive(Clone, Default)]
struct Servers {
    crashed: Arc<AtomicU32>,
    restored: Arc<AtomicU32>,
}
impl CrashTarget for Servers {
    fn crash(&mut self, _: &str) -> Result<(), FaultError> {
        self.crashed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn restore(&mut self, _: &str) -> Result<(), FaultError> {
        self.restored.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

// One test function: fail points are global, so the scenarios run in sequence.
#[test]
fn fault_points() {
    let scenario = fail::FailScenario::setup();

    // A query fails before any I/O: the monitor marks the SLO stale.
    fail::cfg("pvp-ops/prom-query", "return").unwrap();
    let mut client = PromClient::new("http://127.0.0.1:9");
    assert_eq!(
        client.query("up").unwrap_err(),
        SourceError::Unreachable("fail point pvp-ops/prom-query".into())
    );
    assert_eq!(client.stats().failures, 1);
    let mut mon = SloMonitor::new(MonitorConfig::default());
    mon.add_slo(Slo::new("e", Sli::events("b", "t"), 0.99, Duration::from_secs(60)).unwrap()).unwrap();
    let st = mon.evaluate(std::time::Instant::now(), &mut client);
    assert!(st[0].stale.is_some());
    fail::remove("pvp-ops/prom-query");

    // The second of two injections fails: the first is reverted, nothing stays broken.
    let servers = Servers::default();
    let mut engine = ChaosEngine::new(ExperimentConfig {
        check_interval: Duration::from_millis(5),
        ..ExperimentConfig::default()
    });
    engine.register(CrashInjector::new(servers.clone()));
    fail::cfg("pvp-ops/fault-inject", "1*off->return").unwrap();
    let faults = vec![
        Fault::new(FaultKind::ServerCrash, "gs-1", Duration::from_secs(60), 1.0).unwrap(),
        Fault::new(FaultKind::ServerCrash, "gs-2", Duration::from_secs(60), 1.0).unwrap(),
    ];
    let err = engine.run_experiment("h", faults, || true).unwrap_err();
    assert!(matches!(err, ChaosError::Inject { .. }), "{err:?}");
    assert_eq!(servers.crashed.load(Ordering::SeqCst), 1);
    assert_eq!(servers.restored.load(Ordering::SeqCst), 1);
    fail::remove("pvp-ops/fault-inject");

    scenario.teardown();
}
