//! A thin blocking driver: puts a [`CrossRegionSync`] on a [`Transport`] with the system clock, and
//! optionally snapshots it to disk.

use super::snapshot::{SnapshotError, SnapshotStore};
use super::transport::{Transport, TransportError};
use super::{CrossRegionSync, Key, StrongStatus, SyncError, WriteOp, WriteReceipt};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a driver call failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The write was refused or a STRONG write failed.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Saving a snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// Time since the UNIX epoch (what [`CrossRegionSync`] expects as `now` in production).
pub fn wall_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO)
}

/// Runs a [`CrossRegionSync`] over a transport with the system clock.
#[derive(Debug)]
pub struct SyncDriver<T> {
    node: CrossRegionSync,
    transport: T,
    buf: Vec<u8>,
    snapshots: Option<(SnapshotStore, Duration, Duration)>,
}

impl<T: Transport> SyncDriver<T> {
    /// Drives `node` over `transport`.
    pub fn new(node: CrossRegionSync, transport: T) -> Self {
        Self { node, transport, buf: Vec::new(), snapshots: None }
    }

    /// Saves a snapshot to `store` every `interval` (500 ms keeps the loss at a crash under 1 s).
    pub fn with_snapshots(mut self, store: SnapshotStore, interval: Duration) -> Self {
        self.snapshots = Some((store, interval, wall_now() + interval));
        self
    }

    /// The node.
    pub const fn node(&self) -> &CrossRegionSync {
        &self.node
    }

    /// The node, mutably (for writes that need no waiting).
    pub fn node_mut(&mut self) -> &mut CrossRegionSync {
        &mut self.node
    }

    /// The transport.
    pub const fn transport(&self) -> &T {
        &self.transport
    }

    /// One round: receive everything waiting, run due timers, send everything queued, snapshot
    /// if due. Does not block.
    pub fn poll(&mut self) -> Result<(), DriverError> {
        let now = wall_now();
        while let Some(from) = self.transport.recv(now, &mut self.buf)? {
            self.node.handle_datagram(now, from, &self.buf);
        }
        if now >= self.node.poll_timeout() {
            self.node.handle_timeout(now);
        }
        while let Some(t) = self.node.poll_transmit() {
            self.transport.send(now, t.to, &t.payload)?;
        }
        if let Some((store, interval, next)) = &mut self.snapshots {
            if now >= *next {
                *next = now.saturating_add(*interval);
                store.save_node(&self.node)?;
            }
        }
        Ok(())
    }

    /// Polls, then blocks until the next timer or datagram (at most `max_wait`).
    pub fn step(&mut self, max_wait: Duration) -> Result<(), DriverError> {
        self.poll()?;
        let until = self.node.poll_timeout().saturating_sub(wall_now()).min(max_wait);
        self.transport.wait(until)?;
        Ok(())
    }

    /// Steps until `done` holds or `timeout` passes; returns whether `done` held.
    pub fn run_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&CrossRegionSync) -> bool,
    ) -> Result<bool, DriverError> {
        let deadline = wall_now() + timeout;
        loop {
            self.poll()?;
            if done(&self.node) {
                return Ok(true);
            }
            let now = wall_now();
            if now >= deadline {
                return Ok(false);
            }
            self.step((deadline - now).min(Duration::from_millis(10)))?;
        }
    }

    /// Writes and, for a STRONG write, blocks until a majority applied it or it timed out.
    pub fn write_blocking(&mut self, key: Key, op: WriteOp) -> Result<(), DriverError> {
        let receipt = self.node.write(key, op, wall_now())?;
        let WriteReceipt::Pending(id) = receipt else {
            self.poll()?;
            return Ok(());
        };
        // The node times the write out itself; the extra second only guards a stuck clock.
        let limit = self.node.config().strong_timeout + Duration::from_secs(1);
        self.run_until(limit, |n| n.strong_status(id) != StrongStatus::Pending)?;
        match self.node.strong_status(id) {
            StrongStatus::Committed => Ok(()),
            StrongStatus::Failed(e) => Err(e.into()),
            StrongStatus::Pending | StrongStatus::Unknown => {
                Err(SyncError::StrongTimeout { acked: 0, needed: self.node.majority() }.into())
            }
        }
    }
}
