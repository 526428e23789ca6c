//! The replicated data model: keys, their values (CRDTs), data classes and their strategies,
//! the writes a region may make and what it is told about them.

use serde::{Deserialize, Serialize};

use pvp_core::PlayerId;
use pvp_core::RegionId;
use pvp_core::hlc::HlcStamp;

use super::error::SyncError;
use crate::crdt::{Crdt, LwwRegister, MAX_FIELD_NAME, OrSet, PnCounter, Profile, ProfileField, Scalar};
use crate::leaderboard::{GameMode, ScoreCell};

/// Longest text a [`Scalar::Text`] may hold, in bytes.
pub const MAX_TEXT: usize = 256;
/// Most elements a local write may grow one replicated set (friends, a profile set) to.
/// Concurrent adds in several regions can overshoot it after a merge; received values are not
/// refused for that (refusing them would stop convergence), only bounded by the message size.
pub const MAX_SET_LEN: usize = 512;
/// Most fields a local write may grow a profile to (overshoot as for [`MAX_SET_LEN`](super::MAX_SET_LEN)).
pub const MAX_PROFILE_FIELDS: usize = 64;

/// The address of one replicated object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Key {
    /// Whether a player is banned: an add-wins set holding `0` while banned.
    Ban(PlayerId),
    /// A player's friend list.
    Friends(PlayerId),
    /// A player's profile.
    Profile(PlayerId),
    /// A player's score in one game mode.
    Score(GameMode, PlayerId),
    /// An application-defined object of any [`Value`](super::Value) kind.
    Custom(u64),
}

/// Classes of data, each with its own [`Strategy`](super::Strategy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DataClass {
    /// The ban list ([`Key::Ban`](super::Key::Ban)); STRONG by default.
    Bans,
    /// Friend lists.
    Friends,
    /// Profiles.
    Profiles,
    /// Leaderboard scores.
    Scores,
    /// [`Key::Custom`](super::Key::Custom) objects.
    Custom,
}

impl Key {
    /// The key's data class.
    pub const fn class(&self) -> DataClass {
        match self {
            Self::Ban(_) => DataClass::Bans,
            Self::Friends(_) => DataClass::Friends,
            Self::Profile(_) => DataClass::Profiles,
            Self::Score(..) => DataClass::Scores,
            Self::Custom(_) => DataClass::Custom,
        }
    }

    /// Whether `v` is a kind of value this key may hold.
    pub const fn accepts(&self, v: &Value) -> bool {
        matches!(
            (self, v),
            (Self::Ban(_) | Self::Friends(_), Value::Set(_))
                | (Self::Profile(_), Value::Profile(_))
                | (Self::Score(..), Value::Score(_))
                | (Self::Custom(_), _)
        )
    }
}

/// A replicated value: one of the CRDTs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// Last-writer-wins scalar.
    Register(LwwRegister<Scalar>),
    /// Counter.
    Counter(PnCounter),
    /// Add-wins set of ids.
    Set(OrSet<u64>),
    /// Player profile.
    Profile(Profile),
    /// Leaderboard score.
    Score(ScoreCell),
}

impl Value {
    const fn rank(&self) -> u8 {
        match self {
            Self::Register(_) => 0,
            Self::Counter(_) => 1,
            Self::Set(_) => 2,
            Self::Profile(_) => 3,
            Self::Score(_) => 4,
        }
    }

    /// Whether a received value is acceptable: texts at most [`MAX_TEXT`](super::MAX_TEXT) bytes and field names
    /// at most [`MAX_FIELD_NAME`] (each came from one validated write). Set and profile sizes
    /// are not checked here, since merges of concurrent writes legitimately exceed the per-write
    /// limits; the message size bounds them.
    pub fn is_valid(&self) -> bool {
        let scalar_ok = |s: &Scalar| !matches!(s, Scalar::Text(t) if t.len() > MAX_TEXT);
        match self {
            Self::Register(r) => scalar_ok(r.value()),
            Self::Profile(p) => p.iter().all(|(k, f)| {
                k.len() <= MAX_FIELD_NAME && !matches!(f, ProfileField::Register(r) if !scalar_ok(r.value()))
            }),
            Self::Set(_) | Self::Counter(_) | Self::Score(_) => true,
        }
    }

    /// The latest HLC stamp inside the value (LWW registers), if any.
    pub fn max_stamp(&self) -> Option<HlcStamp> {
        match self {
            Self::Register(r) => Some(r.stamp()),
            Self::Score(ScoreCell::Set(r)) => Some(r.stamp()),
            Self::Profile(p) => p
                .iter()
                .filter_map(|(_, f)| match f {
                    ProfileField::Register(r) => Some(r.stamp()),
                    _ => None,
                })
                .max(),
            _ => None,
        }
    }

    pub(crate) fn normalize(&mut self) {
        match self {
            Self::Register(_) => {}
            Self::Counter(c) => c.normalize(),
            Self::Set(s) => s.normalize(),
            Self::Profile(p) => p.values_mut().for_each(ProfileField::normalize),
            Self::Score(s) => s.normalize(),
        }
    }
}

impl Crdt for Value {
    fn merge(&mut self, other: &Self) {
        match (self, other) {
            (Self::Register(a), Self::Register(b)) => a.merge(b),
            (Self::Counter(a), Self::Counter(b)) => a.merge(b),
            (Self::Set(a), Self::Set(b)) => a.merge(b),
            (Self::Profile(a), Self::Profile(b)) => a.merge(b),
            (Self::Score(a), Self::Score(b)) => a.merge(b),
            (me, o) => {
                if o.rank() > me.rank() {
                    *me = o.clone();
                }
            }
        }
    }
}

/// How a write reaches the other regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Batched deltas; the call returns at once.
    Eventual,
    /// Done only once a majority of regions applied it.
    Strong,
}

/// A write to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Add an id to a set.
    SetAdd(u64),
    /// Remove an id from a set (the adds this region has seen).
    SetRemove(u64),
    /// Add to a counter (negative subtracts).
    CounterAdd(i64),
    /// Set a register.
    RegisterSet(Scalar),
    /// Set a profile field register.
    ProfileSet {
        /// Field name, at most [`MAX_FIELD_NAME`] bytes.
        field: String,
        /// New value.
        value: Scalar,
    },
    /// Add to a profile field counter.
    ProfileAdd {
        /// Field name.
        field: String,
        /// Amount (negative subtracts).
        delta: i64,
    },
    /// Submit a leaderboard score, combined by the mode's operator.
    Score(i64),
}

/// What a write returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteReceipt {
    /// Applied locally and queued for the other regions (EVENTUAL), or a no-op (removing an
    /// absent element) that has nothing to replicate.
    Applied,
    /// Applied locally; STRONG completion pending: watch [`CrossRegionSync::poll_event`](super::CrossRegionSync::poll_event) or
    /// [`CrossRegionSync::strong_status`](super::CrossRegionSync::strong_status).
    Pending(StrongId),
}

/// Id of a STRONG write, unique within one node.
pub type StrongId = u64;

/// State of a STRONG write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrongStatus {
    /// Waiting for a majority.
    Pending,
    /// A majority of regions applied it.
    Committed,
    /// It failed (see the error); it stays applied locally and propagates eventually.
    Failed(SyncError),
    /// No such write (or its outcome is older than the retained history).
    Unknown,
}

/// Outcomes reported by [`CrossRegionSync::poll_event`](super::CrossRegionSync::poll_event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEvent {
    /// A STRONG write reached a majority.
    StrongCommitted {
        /// The write.
        id: StrongId,
    },
    /// A STRONG write failed.
    StrongFailed {
        /// The write.
        id: StrongId,
        /// Why.
        error: SyncError,
    },
}

/// A datagram for the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination region.
    pub to: RegionId,
    /// Encoded [`Message`](super::Message).
    pub payload: Vec<u8>,
}
