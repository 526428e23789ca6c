//! Chaos-engine fakes and configs shared by several pvp-ops test binaries.
// Each test binary includes this module but uses only a subset of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pvp_ops::chaos::{ChaosEngine, CrashInjector, CrashTarget, ExperimentConfig, FaultError};

/// A fake fleet for the crash injector: records which targets are down and counts restores.
#[derive(Clone, Default)]
pub(crate) struct Servers {
    pub(crate) down: Arc<Mutex<Vec<String>>>,
    pub(crate) restores: Arc<AtomicU32>,
    /// `restore` still brings the target back but reports `FaultError::Target("restore refused")`.
    pub(crate) fail_restore: bool,
    /// Only targets starting with this are known; `None`: every target (the trait's default).
    pub(crate) only_prefix: Option<&'static str>,
}

impl Servers {
    /// A fleet that knows only the `gs-*` targets.
    pub(crate) fn only_gs() -> Self {
        Self { only_prefix: Some("gs-"), ..Self::default() }
    }
}

impl CrashTarget for Servers {
    fn knows(&self, target: &str) -> bool {
        self.only_prefix.is_none_or(|p| target.starts_with(p))
    }
    fn crash(&mut self, target: &str) -> Result<(), FaultError> {
        self.down.lock().unwrap().push(target.to_string());
        Ok(())
    }
    fn restore(&mut self, target: &str) -> Result<(), FaultError> {
        self.down.lock().unwrap().retain(|t| t != target);
        self.restores.fetch_add(1, Ordering::SeqCst);
        if self.fail_restore { Err(FaultError::Target("restore refused".into())) } else { Ok(()) }
    }
}

/// An engine with `config` and one crash injector over `servers`.
pub(crate) fn crash_engine(config: ExperimentConfig, servers: &Servers) -> ChaosEngine {
    let mut engine = ChaosEngine::new(config);
    engine.register(CrashInjector::new(servers.clone()));
    engine
}

/// Checks every 2 ms, with up to 10 s to recover.
pub(crate) fn fast_long_recovery() -> ExperimentConfig {
    ExperimentConfig {
        check_interval: Duration::from_millis(2),
        recovery_timeout: Duration::from_secs(10),
        ..ExperimentConfig::default()
    }
}
