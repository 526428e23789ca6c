//! Coordination: what the regions must *agree* on rather than merge.
//!
//! Player data, leaderboards and match results are merged (CRDTs, anti-entropy). A few facts
//! cannot be merged: which regions are alive, which region runs a global job, and small control
//! records such as "kr is drained for maintenance" or the routing table. Those go through a
//! [`Coordinator`]:
//!
//! - **membership and liveness**: a region grants itself a lease with a TTL, keeps it alive and
//!   announces itself under that lease ([`Coordinator::announce_region`]); when the keep-alives
//!   stop, the lease expires and the region leaves [`Coordinator::live_regions`];
//! - **leader election** for global jobs ([`Coordinator::campaign`]): at most one holder per job,
//!   bound to the holder's lease; a holder must stop acting as leader when
//!   [`Coordinator::lease_believed_valid`] turns false, which happens no later than the lease can
//!   expire at the coordinator, so two regions never both believe they lead with valid leases;
//! - **compare-and-set** of small versioned control records ([`Coordinator::compare_and_set`]);
//! - **watching** changes to any of those ([`Coordinator::watch`]).
//!
//! Two implementations:
//!
//! - [`LocalCoordinator`]: in-process, sans-IO, every call takes `now`; the embedded default for a
//!   single machine and the engine of the deterministic simulation. [`SharedLocalCoordinator`]
//!   puts it behind the async [`Coordinator`] trait with a [`Clock`] ([`WallClock`] or the
//!   simulation's [`ManualClock`]).
//! - `EtcdCoordinator` (feature `etcd`): the same contract on an etcd cluster, for deployments
//!   that span machines. Consensus there is etcd's Raft, never ours.
//!
//! ```
//! use std::time::Duration;
//! use pvp_core::ids::RegionId;
//! use pvp_global::coord::{CasOutcome, Expected, LocalCoordinator};
//!
//! let kr = RegionId::new("kr")?;
//! let mut coord = LocalCoordinator::default();
//! let t0 = Duration::ZERO;
//! let lease = coord.grant_lease(t0, Duration::from_secs(2))?;
//! coord.announce_region(t0, kr, lease)?;
//! assert_eq!(coord.live_regions(t0)?, vec![kr]);
//!
//! // kr leads the global leaderboard job while its lease lives.
//! assert!(coord.campaign(t0, "leaderboard", kr, lease)?.won);
//!
//! // A control record, changed by compare-and-set.
//! let v1 = match coord.compare_and_set(t0, "drain/kr", Expected::Absent, b"1".to_vec())? {
//!     CasOutcome::Applied { version } => version,
//!     CasOutcome::Conflict { .. } => unreachable!("the record was absent"),
//! };
//! assert!(matches!(
//!     coord.compare_and_set(t0, "drain/kr", Expected::Absent, b"0".to_vec())?,
//!     CasOutcome::Conflict { .. }
//! ));
//! assert!(matches!(
//!     coord.compare_and_set(t0, "drain/kr", Expected::Version(v1), b"0".to_vec())?,
//!     CasOutcome::Applied { .. }
//! ));
//!
//! // No keep-alive for longer than the TTL: kr is gone, and so is its leadership.
//! let later = Duration::from_secs(3);
//! assert!(coord.live_regions(later)?.is_empty());
//! assert_eq!(coord.leader(later, "leaderboard")?, None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod local;
mod shared;

#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "etcd")]
mod etcd_cluster;

use std::future::Future;
use std::time::Duration;

use pvp_core::ids::RegionId;

pub use local::{LocalCoordinator, LocalCoordinatorConfig, WatchId};
pub use shared::{Clock, LocalChangeFeed, ManualClock, SharedLocalCoordinator, WallClock};

#[cfg(feature = "etcd")]
pub use etcd::{EtcdChangeFeed, EtcdCoordinator, EtcdCoordinatorConfig};
#[cfg(feature = "etcd")]
pub use etcd_cluster::{LoopbackEtcdCluster, LoopbackEtcdError};

/// Longest name of a control record or a global job, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Largest value of a control record, in bytes. Control records are small by design: routing
/// tables and flags, not player data.
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// Shortest lease TTL accepted (etcd refuses shorter ones with its default timings).
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(1);

/// Longest lease TTL accepted.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(3600);

/// A lease: liveness that lasts a TTL unless kept alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub i64);

/// The version of a control record: the coordinator revision of its last change. Versions of
/// one record only grow; a record deleted and created again gets a larger version.
pub type Version = u64;

/// What a [`Coordinator::compare_and_set`] expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// The record must not exist.
    Absent,
    /// The record must exist with exactly this version.
    Version(Version),
}

/// A control record as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedRecord {
    /// The stored bytes.
    pub value: Vec<u8>,
    /// Its version, to pass back as [`Expected::Version`].
    pub version: Version,
}

/// The result of a [`Coordinator::compare_and_set`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The value was stored; this is its new version.
    Applied {
        /// The new version of the record.
        version: Version,
    },
    /// The record did not match the expectation; nothing was stored.
    Conflict {
        /// What the record holds now (`None`: absent).
        current: Option<VersionedRecord>,
    },
}

/// The result of a [`Coordinator::campaign`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    /// The region that leads the job now.
    pub leader: RegionId,
    /// Whether the campaigning region with the campaigning lease is that leader.
    pub won: bool,
}

/// Which keys a [`Coordinator::watch`] follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchScope {
    /// Regions joining and leaving ([`ChangeKind::RegionUp`], [`ChangeKind::RegionDown`]).
    Regions,
    /// Leadership changes of every global job ([`ChangeKind::LeaderChanged`]).
    Leaders,
    /// Control records whose name starts with this prefix ([`ChangeKind::RecordSet`],
    /// [`ChangeKind::RecordDeleted`]); `""` follows them all.
    Records(String),
}

/// One observed change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// A region announced itself.
    RegionUp(RegionId),
    /// A region's announcement went away (lease expired or revoked).
    RegionDown(RegionId),
    /// A job's leader changed (`None`: no leader right now).
    LeaderChanged {
        /// The global job.
        job: String,
        /// The new leader, if any.
        leader: Option<RegionId>,
    },
    /// A control record was written.
    RecordSet {
        /// Record name.
        name: String,
        /// The record as written.
        record: VersionedRecord,
    },
    /// A control record was deleted.
    RecordDeleted {
        /// Record name.
        name: String,
    },
}

/// A change with the coordinator revision at which it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Coordinator revision of the change (grows with every change).
    pub revision: u64,
    /// What changed.
    pub kind: ChangeKind,
}

/// Why a coordination call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordError {
    /// The coordination cluster has no quorum (or did not answer within the operation timeout);
    /// nothing is known to have been applied.
    #[error("coordination cluster has no quorum ({op} timed out or was refused)")]
    NoQuorum {
        /// The operation that failed.
        op: &'static str,
    },
    /// No coordination endpoint could be reached at all.
    #[error("no coordination endpoint reachable ({op})")]
    Unreachable {
        /// The operation that failed.
        op: &'static str,
    },
    /// The lease does not exist (never granted, revoked or expired).
    #[error("lease {0:?} is not alive")]
    LeaseNotFound(LeaseId),
    /// A lease TTL outside [`MIN_LEASE_TTL`]..=[`MAX_LEASE_TTL`].
    #[error("lease TTL {0:?} is outside the accepted range")]
    TtlOutOfRange(Duration),
    /// A record or job name that is empty, longer than [`MAX_NAME_LEN`] or holds a byte other
    /// than `a-z`, `0-9`, `-`, `_`, `.`, `/`.
    #[error("invalid record or job name")]
    InvalidName,
    /// A record value longer than [`MAX_VALUE_LEN`].
    #[error("record value is {0} bytes, at most {MAX_VALUE_LEN} are allowed")]
    ValueTooLarge(usize),
    /// A configured bound (leases, records, watchers) is reached.
    #[error("coordinator capacity reached: {0}")]
    CapacityExceeded(&'static str),
    /// A watcher fell too far behind; changes were dropped. Re-read the state and watch again.
    #[error("watcher fell behind and missed changes")]
    WatchLagged,
    /// The watch is closed (coordinator gone or watch cancelled).
    #[error("watch closed")]
    WatchClosed,
    /// A stored key or value written by someone else does not decode (not a region id).
    #[error("coordination data does not decode")]
    CorruptData,
    /// Any other error from etcd.
    #[cfg(feature = "etcd")]
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
}

/// A stream of [`Change`]s from [`Coordinator::watch`].
pub trait ChangeFeed: Send {
    /// Waits for the next change. `Err(WatchLagged)` means changes were lost: re-read state.
    fn next_change(&mut self) -> impl Future<Output = Result<Change, CoordError>> + Send;
}

/// What needs agreement across regions: membership, leader election, control records.
///
/// Implemented by [`SharedLocalCoordinator`] (in-process) and, with feature `etcd`, by
/// `EtcdCoordinator`. All methods are cancel-safe in the sense that a dropped call either
/// happened or did not; `compare_and_set` is the way to make a write conditional.
pub trait Coordinator: Send + Sync {
    /// The change stream type of [`Coordinator::watch`].
    type Feed: ChangeFeed;

    /// Grants a lease that lives `ttl` unless kept alive.
    fn grant_lease(&self, ttl: Duration) -> impl Future<Output = Result<LeaseId, CoordError>> + Send;

    /// Renews a lease for its full TTL; returns that TTL. Call it several times per TTL.
    fn keep_alive(&self, lease: LeaseId) -> impl Future<Output = Result<Duration, CoordError>> + Send;

    /// Revokes a lease: everything announced or led under it goes away now.
    fn revoke_lease(&self, lease: LeaseId) -> impl Future<Output = Result<(), CoordError>> + Send;

    /// Whether this caller may still rely on `lease`: true only while the lease cannot yet have
    /// expired at the coordinator (measured from the *sending* of the last successful
    /// keep-alive). A leader stops acting as leader as soon as this is false.
    fn lease_believed_valid(&self, lease: LeaseId) -> bool;

    /// Announces `region` as live for as long as `lease` lives.
    fn announce_region(
        &self,
        region: RegionId,
        lease: LeaseId,
    ) -> impl Future<Output = Result<(), CoordError>> + Send;

    /// The regions whose announcements are live, sorted.
    fn live_regions(&self) -> impl Future<Output = Result<Vec<RegionId>, CoordError>> + Send;

    /// Tries (without waiting) to become the leader of `job` under `lease`. Campaigning again
    /// while leading is a no-op that reports `won`.
    fn campaign(
        &self,
        job: &str,
        candidate: RegionId,
        lease: LeaseId,
    ) -> impl Future<Output = Result<Leadership, CoordError>> + Send;

    /// The current leader of `job`, if any.
    fn leader(&self, job: &str) -> impl Future<Output = Result<Option<RegionId>, CoordError>> + Send;

    /// Gives up leadership of `job` if `lease` holds it; returns whether it did.
    fn resign(&self, job: &str, lease: LeaseId) -> impl Future<Output = Result<bool, CoordError>> + Send;

    /// Reads a control record.
    fn read_record(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<VersionedRecord>, CoordError>> + Send;

    /// Stores `value` under `name` if the record matches `expected`.
    fn compare_and_set(
        &self,
        name: &str,
        expected: Expected,
        value: Vec<u8>,
    ) -> impl Future<Output = Result<CasOutcome, CoordError>> + Send;

    /// Deletes a record if it matches `expected`; returns whether it did.
    fn delete_record(
        &self,
        name: &str,
        expected: Expected,
    ) -> impl Future<Output = Result<bool, CoordError>> + Send;

    /// Follows changes in `scope` from now on.
    fn watch(&self, scope: WatchScope) -> impl Future<Output = Result<Self::Feed, CoordError>> + Send;
}

/// Counters of one coordinator, from `stats()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoordStats {
    /// Leases granted.
    pub leases_granted: u64,
    /// Leases that expired (no keep-alive within the TTL).
    pub leases_expired: u64,
    /// Successful compare-and-set writes.
    pub cas_applied: u64,
    /// Compare-and-set calls that found a different version.
    pub cas_conflicts: u64,
    /// Campaigns won (including re-campaigns of the holder).
    pub campaigns_won: u64,
    /// Campaigns lost to another holder.
    pub campaigns_lost: u64,
    /// Calls rejected for bad arguments (names, sizes, TTLs, unknown leases).
    pub rejected: u64,
    /// Calls that failed for lack of quorum or reachability.
    pub unavailable: u64,
    /// Changes dropped because a watcher fell behind.
    pub watch_dropped: u64,
}

pub(crate) const REGIONS_PREFIX: &str = "regions/";
pub(crate) const LEADERS_PREFIX: &str = "leaders/";
pub(crate) const RECORDS_PREFIX: &str = "records/";

pub(crate) fn check_name(name: &str) -> Result<(), CoordError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    if ok { Ok(()) } else { Err(CoordError::InvalidName) }
}

pub(crate) fn check_value(value: &[u8]) -> Result<(), CoordError> {
    if value.len() > MAX_VALUE_LEN { Err(CoordError::ValueTooLarge(value.len())) } else { Ok(()) }
}

pub(crate) fn check_ttl(ttl: Duration) -> Result<(), CoordError> {
    if (MIN_LEASE_TTL..=MAX_LEASE_TTL).contains(&ttl) { Ok(()) } else { Err(CoordError::TtlOutOfRange(ttl)) }
}

/// Maps a raw key (below the namespace) to the change it means.
pub(crate) fn classify(key: &str, value: Option<(&[u8], Version)>, revision: u64) -> Option<Change> {
    let kind = if let Some(region) = key.strip_prefix(REGIONS_PREFIX) {
        let region = RegionId::new(region).ok()?;
        if value.is_some() { ChangeKind::RegionUp(region) } else { ChangeKind::RegionDown(region) }
    } else if let Some(job) = key.strip_prefix(LEADERS_PREFIX) {
        let leader = match value {
            Some((bytes, _)) => Some(decode_region(bytes).ok()?),
            None => None,
        };
        ChangeKind::LeaderChanged { job: job.to_owned(), leader }
    } else if let Some(name) = key.strip_prefix(RECORDS_PREFIX) {
        match value {
            Some((bytes, version)) => ChangeKind::RecordSet {
                name: name.to_owned(),
                record: VersionedRecord { value: bytes.to_vec(), version },
            },
            None => ChangeKind::RecordDeleted { name: name.to_owned() },
        }
    } else {
        return None;
    };
    Some(Change { revision, kind })
}

pub(crate) fn decode_region(bytes: &[u8]) -> Result<RegionId, CoordError> {
    let s = core::str::from_utf8(bytes).map_err(|_| CoordError::CorruptData)?;
    RegionId::new(s).map_err(|_| CoordError::CorruptData)
}

pub(crate) fn scope_prefix(scope: &WatchScope) -> Result<String, CoordError> {
    Ok(match scope {
        WatchScope::Regions => REGIONS_PREFIX.to_owned(),
        WatchScope::Leaders => LEADERS_PREFIX.to_owned(),
        WatchScope::Records(prefix) => {
            if !prefix.is_empty() {
                check_name(prefix)?;
            }
            format!("{RECORDS_PREFIX}{prefix}")
        }
    })
}
