//! ChaosEngine: experiments, reverts on end/abort/panic, and the stress injectors.

#[path = "shared_support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pvp_ops::FaultInjector;
use pvp_ops::chaos::{
    AbortCondition, ChaosEngine, ChaosError, CpuStressInjector, DiskFillInjector, ExperimentConfig, Fault,
    FaultError, FaultKind, MemoryPressureInjector,
};
use pvp_ops::slo::{MonitorConfig, Sli, SliReading, Slo, SloMonitor};
use support::{Servers, crash_engine};

fn fast() -> ExperimentConfig {
    ExperimentConfig {
        check_interval: Duration::from_millis(5),
        recovery_timeout: Duration::from_secs(5),
        ..ExperimentConfig::default()
    }
}

fn crash(target: &str, ms: u64) -> Fault {
    Fault::new(FaultKind::ServerCrash, target, Duration::from_millis(ms), 1.0).unwrap()
}

#[test]
fn faults_are_validated() {
    assert_eq!(
        Fault::new(FaultKind::CpuStress, "x", Duration::ZERO, 1.5).unwrap_err(),
        FaultError::Intensity(1.5)
    );
    assert!(matches!(
        Fault::new(FaultKind::CpuStress, "x", Duration::ZERO, f64::NAN),
        Err(FaultError::Intensity(_))
    ));
    assert_eq!(
        Fault::new(FaultKind::CpuStress, "", Duration::ZERO, 0.5).unwrap_err(),
        FaultError::EmptyTarget
    );
    let f = crash("gs-1", 10).with_description("kill gs-1");
    assert_eq!(f.description(), "kill gs-1");
}

#[test]
fn experiment_reverts_each_fault_at_its_end_and_measures_recovery() {
    let servers = Servers::only_gs();
    let mut engine = crash_engine(fast(), &servers);
    let probe = servers.clone();
    // The hypothesis: one server down does not break the steady state (at most one down).
    let report = engine
        .run_experiment(
            "losing one server is fine",
            vec![crash("gs-1", 300), crash("gs-2", 600)],
            move || probe.down.lock().unwrap().len() <= 1,
        )
        .unwrap();
    assert!(servers.down.lock().unwrap().is_empty());
    assert_eq!(servers.restores.load(Ordering::SeqCst), 2);
    assert!(!report.passed, "two servers were down together for 300 ms");
    assert!(report.failed_checks >= 1 && report.checks >= report.failed_checks);
    assert!(report.recovery_time.unwrap() < Duration::from_secs(5));
    assert!(report.observations.iter().any(|o| o.what.starts_with("reverted")));
    assert!(report.recommendations.iter().any(|r| r.contains("crash")));
    let s = engine.stats();
    assert_eq!((s.injected, s.reverted, s.experiments), (2, 2, 1));
}

#[test]
fn passing_experiment() {
    let servers = Servers::only_gs();
    let mut engine = crash_engine(fast(), &servers);
    let report = engine.run_experiment("gs-1 is not needed", vec![crash("gs-1", 20)], || true).unwrap();
    assert!(report.passed);
    assert_eq!(report.failed_checks, 0);
    assert!(report.recommendations.iter().any(|r| r.contains("held")));
}

#[test]
fn errors_before_any_fault() {
    let servers = Servers::only_gs();
    let mut engine = crash_engine(fast(), &servers);
    assert_eq!(engine.run_experiment("h", vec![], || true).unwrap_err(), ChaosError::NoFaults);
    assert!(matches!(
        engine.run_experiment("h", vec![crash("db-1", 10)], || true),
        Err(ChaosError::NoInjector(FaultKind::ServerCrash, _))
    ));
    assert_eq!(
        engine.run_experiment("h", vec![crash("gs-1", 10)], || false).unwrap_err(),
        ChaosError::NotSteadyBefore
    );
    assert!(servers.down.lock().unwrap().is_empty());
    assert_eq!(engine.stats().injected, 0);
}

#[test]
fn a_failed_injection_reverts_the_ones_before_it() {
    let servers = Servers::only_gs();
    let mut engine = crash_engine(fast(), &servers);
    // The second fault hits the same target: AlreadyActive.
    let err =
        engine.run_experiment("h", vec![crash("gs-1", 1000), crash("gs-1", 1000)], || true).unwrap_err();
    assert!(matches!(err, ChaosError::Inject { source: FaultError::AlreadyActive(_), .. }), "{err:?}");
    assert!(servers.down.lock().unwrap().is_empty());
    assert_eq!(servers.restores.load(Ordering::SeqCst), 1);
}

#[test]
fn panicking_steady_state_check_still_reverts() {
    let servers = Servers::only_gs();
    let mut engine = crash_engine(fast(), &servers);
    let calls = AtomicU32::new(0);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        engine.run_experiment("h", vec![crash("gs-1", 60_000)], || {
            // First call is the pre-check; the second, under the fault, panics.
            assert!(calls.fetch_add(1, Ordering::SeqCst) == 0, "probe exploded");
            true
        })
    }));
    assert!(r.is_err());
    assert!(servers.down.lock().unwrap().is_empty(), "the guard reverted during unwinding");
    assert_eq!(servers.restores.load(Ordering::SeqCst), 1);
}

#[test]
fn guard_drop_reverts() {
    let servers = Servers::only_gs();
    let engine = crash_engine(fast(), &servers);
    let g = engine.inject(crash("gs-9", 0)).unwrap();
    assert_eq!(servers.down.lock().unwrap().as_slice(), ["gs-9"]);
    drop(g);
    assert!(servers.down.lock().unwrap().is_empty());
}

#[test]
fn burn_rate_abort_stops_the_experiment_early() {
    // The SLI the "system" reports: each check, 1000 more requests; while the server is down
    // 20 % of them fail.
    struct Traffic {
        servers: Servers,
        total: f64,
        bad: f64,
    }
    impl pvp_ops::SliSource for Traffic {
        fn read_sli(&mut self, _: &Sli) -> Result<SliReading, pvp_ops::SourceError> {
            self.total += 1000.0;
            if !self.servers.down.lock().unwrap().is_empty() {
                self.bad += 200.0;
            }
            Ok(SliReading::Events { bad: self.bad, total: self.total })
        }
    }
    let servers = Servers::only_gs();
    let slo = Slo::new("errors", Sli::events("bad", "total"), 0.999, Duration::from_secs(86_400)).unwrap();
    let mut mon = SloMonitor::new(MonitorConfig { resolution: Duration::ZERO, ..MonitorConfig::default() });
    mon.add_slo(slo).unwrap();
    let monitor = Arc::new(Mutex::new(mon));
    let mut engine = crash_engine(
        ExperimentConfig {
            abort_conditions: vec![AbortCondition::BurnRateAbove {
                monitor: monitor.clone(),
                source: Some(Box::new(Traffic { servers: servers.clone(), total: 0.0, bad: 0.0 })),
                slo: "errors".into(),
                window: Duration::from_secs(300),
                max: 10.0,
            }],
            ..fast()
        },
        &servers,
    );
    let started = Instant::now();
    let report = engine.run_experiment("h", vec![crash("gs-1", 60_000)], || true).unwrap();
    assert!(started.elapsed() < Duration::from_secs(30), "aborted long before the 60 s fault ended");
    let reason = report.aborted.as_deref().unwrap();
    assert!(reason.contains("burning"), "{reason}");
    assert!(!report.passed);
    assert!(servers.down.lock().unwrap().is_empty());
    assert_eq!(engine.stats().aborted, 1);
    assert!(
        monitor.lock().unwrap().burn_rate("errors", Duration::from_secs(300), Instant::now()).unwrap() > 10.0
    );
}

#[test]
fn custom_and_failed_check_aborts() {
    let servers = Servers::only_gs();
    let mut engine = crash_engine(
        ExperimentConfig { abort_conditions: vec![AbortCondition::FailedChecks(3)], ..fast() },
        &servers,
    );
    let probe = servers.clone();
    let report = engine
        .run_experiment("h", vec![crash("gs-1", 60_000)], move || probe.down.lock().unwrap().is_empty())
        .unwrap();
    assert_eq!(report.failed_checks, 3);
    assert!(report.aborted.is_some());
    assert!(report.recovery_time.is_some());

    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    *engine.config_mut() = ExperimentConfig {
        abort_conditions: vec![AbortCondition::Custom(Box::new(move || {
            s2.swap(true, Ordering::SeqCst).then(|| "operator said stop".to_string())
        }))],
        ..fast()
    };
    let report = engine.run_experiment("h", vec![crash("gs-1", 60_000)], || true).unwrap();
    assert_eq!(report.aborted.as_deref(), Some("operator said stop"));
    assert!(servers.down.lock().unwrap().is_empty());
}

#[test]
fn cpu_stress_runs_threads_and_stops_them() {
    let mut cpu = CpuStressInjector::new(2);
    let f = Fault::new(FaultKind::CpuStress, "host", Duration::from_secs(1), 0.5).unwrap();
    assert!(cpu.supports(&f));
    cpu.inject(&f).unwrap();
    assert_eq!(cpu.running_threads(), 2);
    assert_eq!(cpu.inject(&f).unwrap_err(), FaultError::AlreadyActive("host".into()));
    // Bounded wait for the threads to show they ran.
    let end = Instant::now() + Duration::from_secs(10);
    while cpu.busy_slices() < 4 && Instant::now() < end {
        std::thread::yield_now();
    }
    assert!(cpu.busy_slices() >= 4);
    cpu.revert(&f).unwrap();
    assert_eq!(cpu.running_threads(), 0);
    let after = cpu.busy_slices();
    assert_eq!(cpu.busy_slices(), after, "threads joined: nothing spins any more");
    assert_eq!(cpu.revert(&f).unwrap_err(), FaultError::NotActive("host".into()));
}

#[test]
fn memory_pressure_is_bounded_and_freed() {
    let mut mem = MemoryPressureInjector::new(8 << 20);
    let f = Fault::new(FaultKind::MemoryPressure, "host", Duration::from_secs(1), 0.5).unwrap();
    mem.inject(&f).unwrap();
    assert_eq!(mem.held_bytes(), 4 << 20);
    mem.revert(&f).unwrap();
    assert_eq!(mem.held_bytes(), 0);
    // A bound the allocator cannot meet is a typed error, not an abort.
    let mut huge = MemoryPressureInjector::new(usize::MAX);
    let f = Fault::new(FaultKind::MemoryPressure, "host", Duration::from_secs(1), 1.0).unwrap();
    assert!(matches!(huge.inject(&f), Err(FaultError::OutOfMemory(_))));
    assert_eq!(huge.held_bytes(), 0);
}

#[test]
fn disk_fill_writes_up_to_the_bound_and_frees() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().to_str().unwrap().to_string();
    let mut disk = DiskFillInjector::new(dir.path(), 3 << 20);
    let f = Fault::new(FaultKind::DiskFull, target.clone(), Duration::from_secs(1), 1.0).unwrap();
    assert!(disk.supports(&f));
    assert!(!disk.supports(&Fault::new(FaultKind::DiskFull, "/elsewhere", Duration::ZERO, 1.0).unwrap()));
    disk.inject(&f).unwrap();
    let path = disk.fill_path().unwrap().to_path_buf();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 << 20);
    assert_eq!(disk.filled_bytes(), 3 << 20);
    assert!(!disk.hit_enospc());
    disk.revert(&f).unwrap();
    assert!(!path.exists());
}

#[test]
fn disk_fill_stops_at_enospc() {
    // /dev/full answers every write with ENOSPC: make the injector's fill file a link to it.
    if !std::path::Path::new("/dev/full").exists() {
        eprintln!("note: /dev/full missing; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fill = dir.path().join(format!(".pvp-chaos-fill-{}", std::process::id()));
    std::os::unix::fs::symlink("/dev/full", &fill).unwrap();
    let mut disk = DiskFillInjector::new(dir.path(), 1 << 30);
    let f = Fault::new(FaultKind::DiskFull, dir.path().to_str().unwrap(), Duration::ZERO, 1.0).unwrap();
    disk.inject(&f).unwrap();
    assert!(disk.hit_enospc());
    assert_eq!(disk.filled_bytes(), 0);
    disk.revert(&f).unwrap();
    assert!(std::fs::symlink_metadata(&fill).is_err(), "the fill entry is gone");
}

#[test]
fn engine_routes_to_the_right_injector() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = ChaosEngine::new(fast());
    engine.register(MemoryPressureInjector::new(1 << 20));
    engine.register(DiskFillInjector::new(dir.path(), 1 << 20));
    engine.register(CpuStressInjector::new(1));
    let faults = vec![
        Fault::new(FaultKind::MemoryPressure, "host", Duration::from_millis(20), 1.0).unwrap(),
        Fault::new(FaultKind::DiskFull, dir.path().to_str().unwrap(), Duration::from_millis(20), 0.5)
            .unwrap(),
        Fault::new(FaultKind::CpuStress, "host", Duration::from_millis(20), 0.2).unwrap(),
    ];
    let d = dir.path().to_path_buf();
    let report = engine.run_experiment("host survives stress", faults, || true).unwrap();
    assert!(report.passed, "{report:?}");
    assert_eq!(engine.stats().reverted, 3);
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "fill file removed");
}
