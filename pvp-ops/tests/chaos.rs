//! ChaosEngine: faults validated (intensity bounds inclusive), experiments and their reports
//! (checks counted only during faults, aborts at exactly the limit, recovery timed from the last
//! revert), reverts on end / abort / panic and by guards (exactly once), the same target refused
//! while active, and the stress injectors.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pvp_ops::FaultInjector;
use pvp_ops::chaos::{
    AbortCondition, ChaosEngine, ChaosError, CpuStressInjector, CrashInjector, CrashTarget, DiskFillInjector,
    ExperimentConfig, Fault, FaultError, FaultKind, MemoryPressureInjector,
};
use pvp_ops::slo::{MonitorConfig, Sli, SliReading, Slo, SloMonitor};

use common::{Servers, crash_engine, fast_long_recovery};

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

// ---------------------------------------------------------------------------------------------
// Faults and guards

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

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

/// A server crash of `target` lasting `d`.
fn crash_for(target: &str, d: Duration) -> Fault {
    Fault::new(FaultKind::ServerCrash, target, d, 1.0).unwrap()
}

#[test]
fn guard_reverts_exactly_once_when_a_panic_unwinds() {
    let servers = Servers::default();
    let engine = crash_engine(fast_long_recovery(), &servers);
    let r = catch_unwind(AssertUnwindSafe(|| {
        let _g = engine.inject(crash_for("gs-1", Duration::from_secs(60))).unwrap();
        assert_eq!(*servers.down.lock().unwrap(), vec!["gs-1".to_string()]);
        panic!("boom");
    }));
    assert!(r.is_err());
    assert!(servers.down.lock().unwrap().is_empty());
    assert_eq!(servers.restores.load(Ordering::SeqCst), 1);
    let s = engine.stats();
    assert_eq!((s.injected, s.reverted, s.revert_failures), (1, 1, 0));
}

#[test]
fn overlapping_guards_revert_independently_and_the_same_target_is_refused_while_active() {
    let servers = Servers::default();
    let engine = crash_engine(fast_long_recovery(), &servers);
    let a = engine.inject(crash_for("gs-1", Duration::ZERO)).unwrap();
    let b = engine.inject(crash_for("gs-2", Duration::ZERO)).unwrap();
    match engine.inject(crash_for("gs-1", Duration::ZERO)) {
        Err(ChaosError::Inject { source: FaultError::AlreadyActive(t), .. }) => assert_eq!(t, "gs-1"),
        other => panic!("expected AlreadyActive, got {other:?}"),
    }
    drop(b);
    assert_eq!(*servers.down.lock().unwrap(), vec!["gs-1".to_string()]);
    a.revert().unwrap();
    assert!(servers.down.lock().unwrap().is_empty());
    assert_eq!(servers.restores.load(Ordering::SeqCst), 2);
    // Reverted: the same target can be injected again.
    let c = engine.inject(crash_for("gs-1", Duration::ZERO)).unwrap();
    drop(c);
    assert_eq!(engine.stats().injected, 3);
    assert_eq!(engine.stats().reverted, 3);
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

// ---------------------------------------------------------------------------------------------
// Experiments

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

#[test]
fn failed_checks_abort_at_exactly_the_limit_and_revert_every_fault() {
    let servers = Servers::default();
    let mut cfg = fast_long_recovery();
    cfg.abort_conditions = vec![AbortCondition::FailedChecks(3)];
    let mut engine = crash_engine(cfg, &servers);
    let probe = servers.down.clone();
    let t0 = Instant::now();
    let report = engine
        .run_experiment(
            "survives two crashes",
            vec![crash_for("gs-1", Duration::from_secs(60)), crash_for("gs-2", Duration::from_secs(60))],
            move || probe.lock().unwrap().is_empty(),
        )
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(60), "aborted before the faults' end");
    assert_eq!(report.failed_checks, 3);
    assert_eq!(report.checks, 3, "every check while the servers were down failed");
    assert!(report.aborted.is_some());
    assert!(!report.passed);
    assert!(report.recovery_time.is_some());
    assert!(servers.down.lock().unwrap().is_empty());
    assert_eq!(servers.restores.load(Ordering::SeqCst), 2, "each fault reverted exactly once");
    let s = engine.stats();
    assert_eq!((s.experiments, s.aborted, s.injected, s.reverted), (1, 1, 2, 2));
    assert_eq!(report.hypothesis, "survives two crashes");
    let noted = |p: &str| report.observations.iter().filter(|o| o.what.starts_with(p)).count();
    assert_eq!(noted("injected: "), 2, "{:?}", report.observations);
    assert_eq!(noted("reverted: "), 2, "each revert on abort is observed: {:?}", report.observations);
    assert_eq!(noted("abort: "), 1);
    let ats: Vec<Duration> = report.observations.iter().map(|o| o.at).collect();
    assert!(ats.windows(2).all(|w| w[0] <= w[1]), "observations in order: {ats:?}");
}

#[test]
fn tolerated_failures_decide_pass_and_checks_count_only_during_faults() {
    for (tolerated, expect_pass) in [(u32::MAX, true), (0, false)] {
        let servers = Servers::default();
        let mut cfg = fast_long_recovery();
        cfg.tolerated_failures = tolerated;
        let mut engine = crash_engine(cfg, &servers);
        let probe = servers.down.clone();
        let report = engine
            .run_experiment("h", vec![crash_for("gs-1", Duration::from_millis(30))], move || {
                probe.lock().unwrap().is_empty()
            })
            .unwrap();
        assert!(report.checks >= 1);
        assert_eq!(
            report.failed_checks, report.checks,
            "the server was down at every check during the fault"
        );
        assert_eq!(report.passed, expect_pass, "tolerated {tolerated}");
        assert!(report.aborted.is_none());
        assert!(report.recovery_time.is_some());
    }
}

/// A crash target that remembers when it was restored.
#[derive(Clone, Default)]
struct Timed {
    restored_at: Arc<Mutex<Option<Instant>>>,
}

impl CrashTarget for Timed {
    fn crash(&mut self, _: &str) -> Result<(), FaultError> {
        *self.restored_at.lock().unwrap() = None;
        Ok(())
    }
    fn restore(&mut self, _: &str) -> Result<(), FaultError> {
        *self.restored_at.lock().unwrap() = Some(Instant::now());
        Ok(())
    }
}

#[test]
fn recovery_time_runs_from_the_last_revert_to_the_first_good_check() {
    let target = Timed::default();
    let mut engine = ChaosEngine::new(fast_long_recovery());
    engine.register(CrashInjector::new(target.clone()));
    let lag = Duration::from_millis(40);
    let at = target.restored_at.clone();
    let mut first = true;
    let report = engine
        .run_experiment("recovers", vec![crash_for("gs-1", Duration::from_millis(10))], move || {
            if std::mem::take(&mut first) {
                return true; // the check before any fault
            }
            at.lock().unwrap().is_some_and(|t| t.elapsed() >= lag)
        })
        .unwrap();
    let since_revert = target.restored_at.lock().unwrap().expect("reverted").elapsed();
    let rt = report.recovery_time.expect("recovered");
    assert!(rt >= lag, "recovery {rt:?} counts from the revert, the system needed {lag:?}");
    assert!(rt <= since_revert, "recovery {rt:?} cannot exceed the time since the revert {since_revert:?}");
}

#[test]
fn no_recovery_within_the_timeout_fails_with_none() {
    let servers = Servers::default();
    let mut cfg = fast_long_recovery();
    cfg.recovery_timeout = Duration::from_millis(20);
    cfg.tolerated_failures = u32::MAX;
    let mut engine = crash_engine(cfg, &servers);
    let mut calls = 0u32;
    let report = engine
        .run_experiment("never recovers", vec![crash_for("gs-1", Duration::from_millis(5))], move || {
            calls += 1;
            calls == 1
        })
        .unwrap();
    assert_eq!(report.recovery_time, None);
    assert!(!report.passed);
    assert!(servers.down.lock().unwrap().is_empty(), "reverted although the steady state never came back");
}
