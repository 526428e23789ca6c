//! Chaos experiments: faults, injectors, guards that always revert, and
//! [`ChaosEngine::run_experiment`].
//!
//! A [`Fault`] names its kind, target, duration and intensity (0–1). An engine holds
//! [`FaultInjector`]s; [`ChaosEngine::inject`] starts a fault and returns a [`FaultGuard`] that
//! reverts it when dropped (also while a panic unwinds). [`ChaosEngine::run_experiment`]
//! checks the steady state, injects the faults, reverts each when its duration ends (or all of
//! them on abort), measures recovery and reports.
//!
//! ```
//! use std::sync::{Arc, atomic::{AtomicBool, Ordering}};
//! use std::time::Duration;
//! use pvp_ops::chaos::{ChaosEngine, CrashInjector, CrashTarget, ExperimentConfig, Fault, FaultError, FaultKind};
//!
//! struct Server(Arc<AtomicBool>);
//! impl CrashTarget for Server {
//!     fn crash(&mut self, _: &str) -> Result<(), FaultError> { self.0.store(false, Ordering::SeqCst); Ok(()) }
//!     fn restore(&mut self, _: &str) -> Result<(), FaultError> { self.0.store(true, Ordering::SeqCst); Ok(()) }
//! }
//! let up = Arc::new(AtomicBool::new(true));
//! let mut engine = ChaosEngine::new(ExperimentConfig {
//!     check_interval: Duration::from_millis(5),
//!     ..ExperimentConfig::default()
//! });
//! engine.register(CrashInjector::new(Server(up.clone())));
//! let fault = Fault::new(FaultKind::ServerCrash, "gs-1", Duration::from_millis(30), 1.0).unwrap();
//! let probe = up.clone();
//! let report = engine
//!     .run_experiment("a crashed server comes back", vec![fault], move || probe.load(Ordering::SeqCst))
//!     .unwrap();
//! assert!(up.load(Ordering::SeqCst), "reverted");
//! assert!(!report.passed, "the steady state broke while the server was down");
//! assert!(report.recovery_time.is_some());
//! ```

mod crash;
pub mod proxy;
mod stress;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use crash::{CrashInjector, CrashTarget};
pub use proxy::LinkFaultInjector;
pub use stress::{CpuStressInjector, DiskFillInjector, MemoryPressureInjector};

use crate::slo::SloMonitor;
use crate::{FaultInjector, SliSource};

/// The kinds of fault (the seed's six, plus packet loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultKind {
    /// Added network latency (intensity scales the injector's maximum delay).
    NetworkLatency,
    /// Network partition (intensity 1 = every packet dropped; less = that loss rate).
    NetworkPartition,
    /// Packet loss at rate `intensity`.
    PacketLoss,
    /// A target stops (a game server, a region's process).
    ServerCrash,
    /// A process freezes (SIGSTOP) and thaws (SIGCONT) at revert: alive, silent, then back
    /// with stale leases and timers.
    ProcessFreeze,
    /// CPU-burning threads, busy `intensity` of the time.
    CpuStress,
    /// Memory allocated and touched: `intensity` × the injector's bound.
    MemoryPressure,
    /// A directory filled: `intensity` × the injector's bound, or until the disk is full.
    DiskFull,
}

/// One fault to inject.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    kind: FaultKind,
    target: String,
    duration: Duration,
    intensity: f64,
    description: String,
}

impl Fault {
    /// A fault; `intensity` must be within 0..=1 and `target` non-empty.
    pub fn new(
        kind: FaultKind,
        target: impl Into<String>,
        duration: Duration,
        intensity: f64,
    ) -> Result<Self, FaultError> {
        let target = target.into();
        if !(0.0..=1.0).contains(&intensity) {
            return Err(FaultError::Intensity(intensity));
        }
        if target.is_empty() {
            return Err(FaultError::EmptyTarget);
        }
        let description = format!("{kind:?} on {target} at {intensity} for {duration:?}");
        Ok(Self { kind, target, duration, intensity, description })
    }
    /// Replaces the description.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }
    /// The kind.
    pub fn kind(&self) -> FaultKind {
        self.kind
    }
    /// The target (a link, server, directory ... as the injector understands it).
    pub fn target(&self) -> &str {
        &self.target
    }
    /// How long it lasts in an experiment.
    pub fn duration(&self) -> Duration {
        self.duration
    }
    /// The intensity, 0..=1.
    pub fn intensity(&self) -> f64 {
        self.intensity
    }
    /// The description.
    pub fn description(&self) -> &str {
        &self.description
    }
}

/// Why a fault could not be made, injected or reverted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FaultError {
    /// Intensity outside 0..=1.
    #[error("intensity {0} is outside 0..=1")]
    Intensity(f64),
    /// The target is empty.
    #[error("empty fault target")]
    EmptyTarget,
    /// The injector does not know this target.
    #[error("unknown target `{0}`")]
    UnknownTarget(String),
    /// The same fault is already active on this target.
    #[error("a fault is already active on `{0}`")]
    AlreadyActive(String),
    /// The fault is not active (revert without inject).
    #[error("no active fault on `{0}`")]
    NotActive(String),
    /// Memory could not be reserved.
    #[error("could not reserve {0} bytes")]
    OutOfMemory(usize),
    /// An I/O operation failed.
    #[error("I/O error: {0}")]
    Io(String),
    /// The user's target failed.
    #[error("target failed: {0}")]
    Target(String),
}

/// Why an experiment could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ChaosError {
    /// The steady state did not hold before any fault was injected.
    #[error("the steady state does not hold before the experiment")]
    NotSteadyBefore,
    /// No registered injector supports this fault.
    #[error("no injector for {0:?} on `{1}`")]
    NoInjector(FaultKind, String),
    /// Injecting a fault failed (every fault injected before it was reverted).
    #[error("injecting `{description}` failed: {source}")]
    Inject {
        /// The fault's description.
        description: String,
        /// Why.
        source: FaultError,
    },
    /// An experiment needs at least one fault.
    #[error("no faults given")]
    NoFaults,
}

type CustomAbort = Box<dyn FnMut() -> Option<String> + Send>;

/// When to stop an experiment early (every fault is reverted at once).
#[non_exhaustive]
pub enum AbortCondition {
    /// The SLO's burn rate over `window` exceeds `max`. If `source` is given, the engine
    /// evaluates the monitor from it at every check; otherwise someone else feeds the monitor.
    BurnRateAbove {
        /// The monitor.
        monitor: Arc<Mutex<SloMonitor>>,
        /// Where to read SLIs from at each check, if anywhere.
        source: Option<Box<dyn SliSource + Send>>,
        /// The SLO's name.
        slo: String,
        /// The burn-rate window.
        window: Duration,
        /// The largest tolerated burn rate.
        max: f64,
    },
    /// This many failed steady-state checks (in total) abort.
    FailedChecks(u32),
    /// A user's check: `Some(reason)` aborts.
    Custom(CustomAbort),
}

impl fmt::Debug for AbortCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbortCondition::BurnRateAbove { slo, window, max, .. } => f
                .debug_struct("BurnRateAbove")
                .field("slo", slo)
                .field("window", window)
                .field("max", max)
                .finish_non_exhaustive(),
            AbortCondition::FailedChecks(n) => f.debug_tuple("FailedChecks").field(n).finish(),
            AbortCondition::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl AbortCondition {
    fn check(&mut self, failed: u32) -> Option<String> {
        match self {
            AbortCondition::BurnRateAbove { monitor, source, slo, window, max } => {
                let now = Instant::now();
                let mut m = monitor.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(src) = source {
                    m.evaluate(now, src.as_mut());
                }
                let rate = m.burn_rate(slo, *window, now)?;
                (rate > *max).then(|| {
                    format!("error budget of `{slo}` burning at {rate:.1}x over {window:?} (limit {max}x)")
                })
            }
            AbortCondition::FailedChecks(n) => {
                (failed >= *n).then(|| format!("{failed} steady-state checks failed (limit {n})"))
            }
            AbortCondition::Custom(f) => f(),
        }
    }
}

/// How experiments run.
#[derive(Debug)]
pub struct ExperimentConfig {
    /// Time between steady-state checks (default 100 ms).
    pub check_interval: Duration,
    /// How long to wait for the steady state after the faults end (default 30 s).
    pub recovery_timeout: Duration,
    /// A recovery slower than this earns a recommendation (default 5 s).
    pub recovery_target: Duration,
    /// Failed checks during the faults that still let the experiment pass (default 0).
    pub tolerated_failures: u32,
    /// Conditions that stop the experiment early.
    pub abort_conditions: Vec<AbortCondition>,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        Self {
            check_interval: Duration::from_millis(100),
            recovery_timeout: Duration::from_secs(30),
            recovery_target: Duration::from_secs(5),
            tolerated_failures: 0,
            abort_conditions: Vec::new(),
        }
    }
}

/// Something seen during an experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Time since the experiment started.
    pub at: Duration,
    /// What happened.
    pub what: String,
}

/// The outcome of [`ChaosEngine::run_experiment`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ExperimentReport {
    /// The hypothesis tested.
    pub hypothesis: String,
    /// The hypothesis held: no abort, steady state held during the faults (within
    /// `tolerated_failures`) and came back within `recovery_timeout`.
    pub passed: bool,
    /// From the start of the last fault's revert to the end of the first good steady-state check;
    /// `None` if the steady state did not come back within `recovery_timeout`.
    pub recovery_time: Option<Duration>,
    /// Steady-state checks made while faults were active.
    pub checks: u32,
    /// Of which failed.
    pub failed_checks: u32,
    /// Why the experiment was aborted, if it was.
    pub aborted: Option<String>,
    /// What happened, in order.
    pub observations: Vec<Observation>,
    /// What to do about it.
    pub recommendations: Vec<String>,
}

/// Counters the engine keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChaosStats {
    /// Faults injected.
    pub injected: u64,
    /// Faults reverted.
    pub reverted: u64,
    /// Reverts that returned an error.
    pub revert_failures: u64,
    /// Experiments run.
    pub experiments: u64,
    /// Experiments aborted.
    pub aborted: u64,
}

#[derive(Debug, Default)]
struct Counters {
    injected: AtomicU64,
    reverted: AtomicU64,
    revert_failures: AtomicU64,
    experiments: AtomicU64,
    aborted: AtomicU64,
}

type SharedInjector = Arc<Mutex<dyn FaultInjector>>;

/// An active fault; reverts it when dropped (also during a panic) or on [`revert`](Self::revert).
#[must_use = "dropping the guard reverts the fault at once"]
pub struct FaultGuard {
    injector: SharedInjector,
    fault: Fault,
    active: bool,
    counters: Arc<Counters>,
}

impl fmt::Debug for FaultGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultGuard").field("fault", &self.fault).field("active", &self.active).finish()
    }
}

impl FaultGuard {
    /// The fault.
    pub fn fault(&self) -> &Fault {
        &self.fault
    }
    /// Reverts now, returning the injector's answer.
    pub fn revert(mut self) -> Result<(), FaultError> {
        self.revert_inner()
    }
    fn revert_inner(&mut self) -> Result<(), FaultError> {
        if !self.active {
            return Ok(());
        }
        self.active = false;
        let r = self.injector.lock().unwrap_or_else(PoisonError::into_inner).revert(&self.fault);
        self.counters.reverted.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("pvp_ops_faults_reverted_total").increment(1);
        if r.is_err() {
            self.counters.revert_failures.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl Drop for FaultGuard {
    fn drop(&mut self) {
        let _ = self.revert_inner();
    }
}

/// Runs chaos experiments through registered [`FaultInjector`]s.
#[derive(Debug)]
pub struct ChaosEngine {
    injectors: Vec<SharedInjector>,
    config: ExperimentConfig,
    counters: Arc<Counters>,
}

impl fmt::Debug for dyn FaultInjector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultInjector({})", self.name())
    }
}

/// `at + d`, or about a century later when that overflows (a fault "forever").
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d).or_else(|| at.checked_add(Duration::from_secs(100 * 365 * 86_400))).unwrap_or(at)
}

fn recommendation(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::NetworkLatency => {
            "latency broke the steady state: add deadlines, retries with backoff and hedged requests on cross-region calls"
        }
        FaultKind::NetworkPartition | FaultKind::PacketLoss => {
            "a partition or loss broke the steady state: make cross-region sync and matchmaking degrade to region-local operation"
        }
        FaultKind::ServerCrash => {
            "a crash broke the steady state: keep spare Ready servers and fail sessions over faster"
        }
        FaultKind::ProcessFreeze => {
            "a frozen process broke the steady state: fence stale leaders and expire leases on the coordinator's clock, not the holder's"
        }
        FaultKind::CpuStress => "CPU stress broke the steady state: keep CPU headroom or scale on CPU sooner",
        FaultKind::MemoryPressure => {
            "memory pressure broke the steady state: bound caches and queues, and alert before memory runs out"
        }
        FaultKind::DiskFull => {
            "a full disk broke the steady state: rotate logs, alert on disk use and keep serving when writes fail"
        }
    }
}

impl ChaosEngine {
    /// An engine with no injectors.
    pub fn new(config: ExperimentConfig) -> Self {
        Self { injectors: Vec::new(), config, counters: Arc::default() }
    }

    /// Adds an injector; faults go to the first registered injector that supports them.
    pub fn register(&mut self, injector: impl FaultInjector + 'static) {
        self.injectors.push(Arc::new(Mutex::new(injector)));
    }

    /// The config, to change between experiments.
    pub fn config_mut(&mut self) -> &mut ExperimentConfig {
        &mut self.config
    }

    /// Counters about the engine.
    pub fn stats(&self) -> ChaosStats {
        let c = &self.counters;
        ChaosStats {
            injected: c.injected.load(Ordering::Relaxed),
            reverted: c.reverted.load(Ordering::Relaxed),
            revert_failures: c.revert_failures.load(Ordering::Relaxed),
            experiments: c.experiments.load(Ordering::Relaxed),
            aborted: c.aborted.load(Ordering::Relaxed),
        }
    }

    fn injector_for(&self, fault: &Fault) -> Option<SharedInjector> {
        self.injectors
            .iter()
            .find(|i| i.lock().unwrap_or_else(PoisonError::into_inner).supports(fault))
            .cloned()
    }

    /// Injects `fault` now; the returned guard reverts it when dropped. The fault's duration
    /// is not enforced here (it is in [`run_experiment`](Self::run_experiment)).
    pub fn inject(&self, fault: Fault) -> Result<FaultGuard, ChaosError> {
        crate::fail_point!("pvp-ops/fault-inject", |_| Err(ChaosError::Inject {
            description: fault.description.clone(),
            source: FaultError::Target("fail point pvp-ops/fault-inject".into()),
        }));
        let injector = self
            .injector_for(&fault)
            .ok_or_else(|| ChaosError::NoInjector(fault.kind, fault.target.clone()))?;
        injector
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .inject(&fault)
            .map_err(|source| ChaosError::Inject { description: fault.description.clone(), source })?;
        self.counters.injected.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("pvp_ops_faults_injected_total").increment(1);
        Ok(FaultGuard { injector, fault, active: true, counters: self.counters.clone() })
    }

    /// Runs an experiment: checks `steady_state_check` holds, injects every fault, checks the
    /// steady state every `check_interval` while reverting each fault when its duration ends
    /// (all at once on an abort condition), then waits for the steady state to come back.
    ///
    /// Every fault is reverted before this returns, and also if `steady_state_check` panics.
    pub fn run_experiment(
        &mut self,
        hypothesis: &str,
        faults: Vec<Fault>,
        mut steady_state_check: impl FnMut() -> bool,
    ) -> Result<ExperimentReport, ChaosError> {
        if faults.is_empty() {
            return Err(ChaosError::NoFaults);
        }
        for f in &faults {
            if self.injector_for(f).is_none() {
                return Err(ChaosError::NoInjector(f.kind, f.target.clone()));
            }
        }
        if !steady_state_check() {
            return Err(ChaosError::NotSteadyBefore);
        }
        self.counters.experiments.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let mut obs = Vec::new();
        let mut note = |what: String| obs.push(Observation { at: start.elapsed(), what });
        // Guards live in this frame: a panic below drops (reverts) them.
        let mut active: Vec<(Instant, FaultGuard)> = Vec::with_capacity(faults.len());
        for f in faults {
            let end = later(Instant::now(), f.duration);
            let desc = f.description.clone();
            let g = self.inject(f)?;
            note(format!("injected: {desc}"));
            active.push((end, g));
        }
        let mut checks = 0u32;
        let mut failed = 0u32;
        let mut broke_under: Vec<FaultKind> = Vec::new();
        let mut aborted = None;
        let mut last_revert = Instant::now();
        while !active.is_empty() {
            let now = Instant::now();
            let next_end = active.iter().map(|(e, _)| *e).min().unwrap_or(now);
            let wake = later(now, self.config.check_interval).min(next_end);
            if wake > now {
                std::thread::sleep(wake - now);
            }
            let now = Instant::now();
            let (done, rest): (Vec<_>, Vec<_>) = active.into_iter().partition(|(e, _)| *e <= now);
            active = rest;
            for (_, g) in done {
                let desc = g.fault.description.clone();
                // Recovery counts from the moment the revert starts: the system may be back
                // before the revert call returns, and time spent reverting is recovery time.
                last_revert = Instant::now();
                match g.revert() {
                    Ok(()) => note(format!("reverted: {desc}")),
                    Err(e) => note(format!("revert of {desc} failed: {e}")),
                }
            }
            if active.is_empty() {
                break;
            }
            checks += 1;
            if !steady_state_check() {
                failed += 1;
                if failed == 1 {
                    note("steady state broken".to_string());
                }
                for (_, g) in &active {
                    if !broke_under.contains(&g.fault.kind) {
                        broke_under.push(g.fault.kind);
                    }
                }
            }
            if let Some(reason) = self.config.abort_conditions.iter_mut().find_map(|c| c.check(failed)) {
                note(format!("abort: {reason}"));
                last_revert = Instant::now();
                for (_, g) in active.drain(..) {
                    let desc = g.fault.description.clone();
                    match g.revert() {
                        Ok(()) => note(format!("reverted: {desc}")),
                        Err(e) => note(format!("revert of {desc} failed: {e}")),
                    }
                }
                self.counters.aborted.fetch_add(1, Ordering::Relaxed);
                aborted = Some(reason);
            }
        }
        // Recovery: from the last revert to the first good check.
        let mut recovery_time = None;
        let deadline = later(last_revert, self.config.recovery_timeout);
        loop {
            if steady_state_check() {
                recovery_time = Some(last_revert.elapsed());
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::sleep(self.config.check_interval.min(deadline - now));
        }
        match recovery_time {
            Some(t) => note(format!("steady state back {t:?} after the last revert")),
            None => note(format!("steady state not back within {:?}", self.config.recovery_timeout)),
        }
        let passed = aborted.is_none() && failed <= self.config.tolerated_failures && recovery_time.is_some();
        let mut recs: Vec<String> = broke_under.iter().map(|k| recommendation(*k).to_string()).collect();
        match recovery_time {
            Some(t) if t > self.config.recovery_target => recs.push(format!(
                "recovery took {t:?}, above the {:?} target: speed up health checks and failover",
                self.config.recovery_target
            )),
            None => recs.push(
                "the system did not recover by itself: add automatic remediation before re-running".into(),
            ),
            _ => {}
        }
        if aborted.is_some() {
            recs.push(
                "the experiment was aborted: fix the weakness, then re-run at a lower intensity".into(),
            );
        }
        if passed {
            recs.push("the hypothesis held: raise the intensity or duration, or combine faults".into());
        }
        Ok(ExperimentReport {
            hypothesis: hypothesis.to_string(),
            passed,
            recovery_time,
            checks,
            failed_checks: failed,
            aborted,
            observations: obs,
            recommendations: recs,
        })
    }
}
