//! STRONG writes: sent to every peer at once, committed when a majority of regions (this one
//! included) has applied them, retried until then, failed after `strong_timeout`.

use std::collections::BTreeSet;
use std::time::Duration;

use pvp_core::RegionId;

use super::CrossRegionSync;
use super::error::SyncError;
use super::model::{Key, StrongId, StrongStatus, SyncEvent, Value};
use super::msg::Body;
use super::stats::Counter;

/// A STRONG write waiting for a majority.
#[derive(Debug, Clone)]
pub(super) struct PendingStrong {
    entries: Vec<(Key, Value)>,
    acks: BTreeSet<RegionId>,
    deadline: Duration,
    next_retry: Duration,
}

/// Outcomes of finished STRONG writes kept for [`CrossRegionSync::strong_status`](super::CrossRegionSync::strong_status).
const MAX_STRONG_HISTORY: usize = 4096;
/// Events kept for [`CrossRegionSync::poll_event`](super::CrossRegionSync::poll_event); older ones are dropped (their outcome stays
/// readable through [`CrossRegionSync::strong_status`](super::CrossRegionSync::strong_status) for [`MAX_STRONG_HISTORY`] writes).
const MAX_EVENTS: usize = 4096;

impl CrossRegionSync {
    /// Outcome of a STRONG write.
    pub fn strong_status(&self, id: StrongId) -> StrongStatus {
        if self.strong.contains_key(&id) {
            return StrongStatus::Pending;
        }
        self.strong_done.get(&id).cloned().unwrap_or(StrongStatus::Unknown)
    }

    /// Regions needed for a majority (this one included).
    pub fn majority(&self) -> usize {
        self.peers.len().div_ceil(2) + 1
    }

    /// Registers a STRONG write already applied locally, sends it to every peer and returns
    /// its id (committed at once when this region alone is a majority).
    pub(super) fn start_strong(&mut self, key: Key, delta: Value, now: Duration) -> StrongId {
        let id = self.next_strong;
        self.next_strong += 1;
        let entries = vec![(key, delta)];
        let pending = PendingStrong {
            entries: entries.clone(),
            acks: BTreeSet::new(),
            deadline: now.saturating_add(self.cfg.strong_timeout),
            next_retry: now.saturating_add(self.cfg.strong_retry),
        };
        self.strong.insert(id, pending);
        self.check_strong(id);
        if self.strong.contains_key(&id) {
            for i in 0..self.peers.len() {
                let to = self.peers[i].region;
                self.send(to, Body::Strong { id, entries: entries.clone() });
            }
        }
        id
    }

    /// The earliest STRONG retry or deadline, if any write is pending.
    pub(super) fn next_strong_timer(&self) -> Option<Duration> {
        self.strong.values().map(|p| p.next_retry.min(p.deadline)).min()
    }

    fn check_strong(&mut self, id: StrongId) {
        let need = self.majority();
        let Some(p) = self.strong.get(&id) else {
            return;
        };
        if p.acks.len() + 1 >= need {
            self.strong.remove(&id);
            self.finish_strong(id, StrongStatus::Committed);
            self.stats.add(Counter::StrongCommitted, 1);
            self.push_event(SyncEvent::StrongCommitted { id });
        }
    }

    fn push_event(&mut self, ev: SyncEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.stats.add(Counter::EventsDropped, 1);
        }
        self.events.push_back(ev);
    }

    fn finish_strong(&mut self, id: StrongId, status: StrongStatus) {
        self.strong_done.insert(id, status);
        while self.strong_done.len() > MAX_STRONG_HISTORY {
            self.strong_done.pop_first();
        }
    }

    pub(super) fn strong_timers(&mut self, now: Duration) {
        let mut failed = Vec::new();
        let mut retry = Vec::new();
        for (&id, p) in &mut self.strong {
            if now >= p.deadline {
                failed.push((id, p.acks.len() + 1));
            } else if now >= p.next_retry {
                p.next_retry = now.saturating_add(self.cfg.strong_retry);
                let missing: Vec<RegionId> =
                    self.cfg.peers.iter().filter(|r| !p.acks.contains(r)).copied().collect();
                retry.push((id, p.entries.clone(), missing));
            }
        }
        let needed = self.majority();
        for (id, acked) in failed {
            self.strong.remove(&id);
            let error = SyncError::StrongTimeout { acked, needed };
            self.finish_strong(id, StrongStatus::Failed(error.clone()));
            self.stats.add(Counter::StrongFailed, 1);
            self.push_event(SyncEvent::StrongFailed { id, error });
        }
        for (id, entries, missing) in retry {
            for to in missing {
                self.send(to, Body::Strong { id, entries: entries.clone() });
            }
        }
    }

    /// A peer's STRONG write: applied, then acknowledged to its incarnation.
    pub(super) fn on_strong(&mut self, pi: usize, incarnation: u64, id: StrongId, entries: &[(Key, Value)]) {
        for (k, v) in entries {
            self.merge_entry(*k, v);
        }
        let to = self.peers[pi].region;
        self.send(to, Body::StrongAck { id, incarnation });
    }

    /// A peer applied one of our STRONG writes (of this incarnation; older ones are ignored).
    pub(super) fn on_strong_ack(&mut self, pi: usize, id: StrongId, incarnation: u64) {
        if incarnation != self.actor.incarnation {
            return;
        }
        let from = self.peers[pi].region;
        if let Some(p) = self.strong.get_mut(&id) {
            p.acks.insert(from);
        }
        self.check_strong(id);
    }
}
