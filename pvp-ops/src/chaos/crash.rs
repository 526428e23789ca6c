use super::{Fault, FaultError, FaultKind};
use crate::FaultInjector;

/// Something that can be crashed and brought back: a game server, a region's process.
/// Implemented by the code that owns the servers.
pub trait CrashTarget: Send {
    /// Whether `target` names something this can crash (default: everything).
    fn knows(&self, target: &str) -> bool {
        let _ = target;
        true
    }
    /// Stops `target` abruptly.
    fn crash(&mut self, target: &str) -> Result<(), FaultError>;
    /// Brings `target` back.
    fn restore(&mut self, target: &str) -> Result<(), FaultError>;
}

/// Injects [`FaultKind::ServerCrash`] through a [`CrashTarget`]; revert restores the target.
#[derive(Debug)]
pub struct CrashInjector<T> {
    target: T,
    down: Vec<String>,
}

impl<T: CrashTarget> CrashInjector<T> {
    /// An injector crashing through `target`.
    pub fn new(target: T) -> Self {
        Self { target, down: Vec::new() }
    }
    /// The targets crashed now.
    pub fn crashed(&self) -> &[String] {
        &self.down
    }
}

impl<T: CrashTarget> FaultInjector for CrashInjector<T> {
    fn name(&self) -> &str {
        "crash"
    }
    fn supports(&self, fault: &Fault) -> bool {
        fault.kind() == FaultKind::ServerCrash && self.target.knows(fault.target())
    }
    fn inject(&mut self, fault: &Fault) -> Result<(), FaultError> {
        if !self.target.knows(fault.target()) {
            return Err(FaultError::UnknownTarget(fault.target().to_string()));
        }
        if self.down.iter().any(|t| t == fault.target()) {
            return Err(FaultError::AlreadyActive(fault.target().to_string()));
        }
        self.target.crash(fault.target())?;
        self.down.push(fault.target().to_string());
        Ok(())
    }
    fn revert(&mut self, fault: &Fault) -> Result<(), FaultError> {
        let i = self
            .down
            .iter()
            .position(|t| t == fault.target())
            .ok_or_else(|| FaultError::NotActive(fault.target().to_string()))?;
        self.down.swap_remove(i);
        self.target.restore(fault.target())
    }
}
