//! The errors of the sync API and of its configuration.

use pvp_core::RegionId;

use super::model::Key;
use crate::leaderboard::{GameMode, ScoreOperator};

/// Errors of the sync API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// The key holds (or must hold) another kind of value than the write needs.
    #[error("key {0:?} does not hold the kind of value this write needs")]
    TypeMismatch(Key),
    /// The game mode was never defined.
    #[error("game mode {0:?} is not defined")]
    UnknownMode(GameMode),
    /// The mode exists with another operator.
    #[error("game mode {mode:?} already uses {existing:?}")]
    ModeConflict {
        /// The mode.
        mode: GameMode,
        /// Its operator.
        existing: ScoreOperator,
    },
    /// The write would exceed a size limit (text, set or profile size).
    #[error("value too large for key {0:?}")]
    TooLarge(Key),
    /// A STRONG write did not reach a majority in time.
    #[error("STRONG write timed out: {acked} of {needed} regions acknowledged")]
    StrongTimeout {
        /// Regions (this one included) that applied it in time.
        acked: usize,
        /// Regions needed for a majority.
        needed: usize,
    },
    /// Too many STRONG writes are pending.
    #[error("too many STRONG writes pending ({0})")]
    StrongBacklogFull(usize),
}

/// Invalid [`SyncConfig`](super::SyncConfig).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A peer is listed twice or is the region itself.
    #[error("peer {0} listed twice or equal to the local region")]
    BadPeer(RegionId),
    /// A duration or size is zero or out of range.
    #[error("config field `{0}` is out of range")]
    OutOfRange(&'static str),
}
