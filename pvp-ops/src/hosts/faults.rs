//! Host-level faults as a [`FaultInjector`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{HostError, HostNet, LinkShape};
use crate::FaultInjector;
use crate::chaos::{Fault, FaultError, FaultKind};

/// Injects faults into a [`HostNet`]'s processes and links.
///
/// | kind | target | inject | revert |
/// |---|---|---|---|
/// | `ServerCrash` | a process label | SIGKILL | start it again (same command) |
/// | `ProcessFreeze` | a process label | SIGSTOP | SIGCONT |
/// | `NetworkPartition` | a link | intensity 1: cut; less: that loss rate | the link as it was |
/// | `PacketLoss` | a link | loss at `intensity` | the link as it was |
/// | `NetworkLatency` | a link | `intensity` x the maximum delay added | the link as it was |
///
/// A link target is `a->b` (packets from host `a` to host `b` only), `a<->b` (both
/// directions), or a host name `a` (every link into and out of `a`: the host is cut off).
#[derive(Debug)]
pub struct HostFaults {
    net: Arc<HostNet>,
    max_delay: Duration,
    saved: HashMap<String, Vec<(String, String, LinkShape)>>,
}

fn host_error(e: HostError) -> FaultError {
    match e {
        HostError::NoSuchHost(t) | HostError::NoSuchProcess(t) => FaultError::UnknownTarget(t),
        e => FaultError::Target(e.to_string()),
    }
}

impl HostFaults {
    /// An injector for `net`; latency faults add up to `max_delay` (at intensity 1).
    pub fn new(net: Arc<HostNet>, max_delay: Duration) -> Self {
        Self { net, max_delay, saved: HashMap::new() }
    }

    /// The directed links a target names, or `None` if it names none.
    fn links(&self, target: &str) -> Option<Vec<(String, String)>> {
        let known = |h: &str| self.net.host(h).is_ok();
        if let Some((a, b)) = target.split_once("<->") {
            return (known(a) && known(b) && a != b)
                .then(|| vec![(a.to_owned(), b.to_owned()), (b.to_owned(), a.to_owned())]);
        }
        if let Some((a, b)) = target.split_once("->") {
            return (known(a) && known(b) && a != b).then(|| vec![(a.to_owned(), b.to_owned())]);
        }
        known(target).then(|| {
            self.net
                .hosts()
                .iter()
                .filter(|h| h.name() != target)
                .flat_map(|h| {
                    [(target.to_owned(), h.name().to_owned()), (h.name().to_owned(), target.to_owned())]
                })
                .collect()
        })
    }

    fn is_process(&self, label: &str) -> bool {
        self.net.starts(label).is_ok()
    }
}

impl FaultInjector for HostFaults {
    fn name(&self) -> &str {
        "hosts"
    }

    fn supports(&self, fault: &Fault) -> bool {
        match fault.kind() {
            FaultKind::ServerCrash | FaultKind::ProcessFreeze => self.is_process(fault.target()),
            FaultKind::NetworkPartition | FaultKind::PacketLoss | FaultKind::NetworkLatency => {
                self.links(fault.target()).is_some()
            }
            _ => false,
        }
    }

    fn inject(&mut self, fault: &Fault) -> Result<(), FaultError> {
        let target = fault.target();
        match fault.kind() {
            FaultKind::ServerCrash => self.net.kill(target).map_err(host_error),
            FaultKind::ProcessFreeze => self.net.freeze(target).map_err(host_error),
            kind @ (FaultKind::NetworkPartition | FaultKind::PacketLoss | FaultKind::NetworkLatency) => {
                if self.saved.contains_key(target) {
                    return Err(FaultError::AlreadyActive(target.to_owned()));
                }
                let links = self.links(target).ok_or_else(|| FaultError::UnknownTarget(target.to_owned()))?;
                let mut before = Vec::with_capacity(links.len());
                for (a, b) in &links {
                    before.push((a.clone(), b.clone(), self.net.link(a, b).map_err(host_error)?));
                }
                let x = fault.intensity();
                for (a, b, was) in &before {
                    let shape = match kind {
                        FaultKind::NetworkPartition if x >= 1.0 => LinkShape { cut: true, ..*was },
                        FaultKind::NetworkPartition | FaultKind::PacketLoss => LinkShape { loss: x, ..*was },
                        _ => LinkShape { delay: was.delay + self.max_delay.mul_f64(x), ..*was },
                    };
                    self.net.set_link(a, b, shape).map_err(host_error)?;
                }
                self.saved.insert(target.to_owned(), before);
                Ok(())
            }
            _ => Err(FaultError::UnknownTarget(target.to_owned())),
        }
    }

    fn revert(&mut self, fault: &Fault) -> Result<(), FaultError> {
        let target = fault.target();
        match fault.kind() {
            FaultKind::ServerCrash => self.net.restart(target).map(|_| ()).map_err(host_error),
            FaultKind::ProcessFreeze => self.net.thaw(target).map_err(host_error),
            FaultKind::NetworkPartition | FaultKind::PacketLoss | FaultKind::NetworkLatency => {
                let before =
                    self.saved.remove(target).ok_or_else(|| FaultError::NotActive(target.to_owned()))?;
                for (a, b, was) in before {
                    self.net.set_link(&a, &b, was).map_err(host_error)?;
                }
                Ok(())
            }
            _ => Err(FaultError::NotActive(target.to_owned())),
        }
    }
}
