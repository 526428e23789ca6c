//! Datagrams between regions' sync nodes (serde + postcard; every decode of received bytes
//! returns a typed error, never panics). Bots and game servers speak netcode 1.02 with the
//! [`arena`](crate::arena) game's payloads; servers heartbeat with
//! [`fleet::Heartbeat`](crate::fleet::Heartbeat).

use pvp_core::ids::{MatchId, PlayerId, RegionId};
use serde::{Deserialize, Serialize};

/// Largest sync datagram a node sends.
pub const MAX_DATAGRAM: usize = 1_400;

/// Why received bytes were refused.
#[derive(Debug, thiserror::Error)]
#[error("malformed datagram: {0}")]
pub struct WireError(#[from] postcard::Error);

/// [`SyncOp::MatchResult`]'s winner for a draw.
pub const DRAW: u8 = 2;

/// One replicated write, as its origin region logged it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SyncOp {
    /// A finished match: its players by team and the winning team.
    MatchResult {
        /// The match.
        match_id: MatchId,
        /// Where it was played.
        region: RegionId,
        /// Team 0.
        team_a: Vec<PlayerId>,
        /// Team 1.
        team_b: Vec<PlayerId>,
        /// The winning team (0 or 1); [`DRAW`] for a draw.
        winner: u8,
    },
    /// A player banned.
    Ban {
        /// The player.
        player: PlayerId,
    },
}

/// An op with its place in the origin's log and its write time (Unix ms, for the sync lag).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedOp {
    /// Position in the origin's log, from 1.
    pub seq: u64,
    /// When the origin wrote it (Unix ms).
    pub written_unix_ms: u64,
    /// The write.
    pub op: SyncOp,
}

/// A sync-link datagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SyncMessage {
    /// Ops of `origin`'s log, in order, starting right after what the receiver acked; an
    /// empty one is a heartbeat.
    Ops {
        /// The sender (and origin of the ops).
        origin: RegionId,
        /// The origin's incarnation (its start time, Unix ms): a restarted process numbers
        /// its log afresh, and a receiver that sees a newer incarnation starts over with it.
        incarnation: u64,
        /// Every seq up to here the receiver holds or needs no more (the sender's view of the
        /// receiver's ack, or where a state re-log for a restarted receiver begins).
        floor: u64,
        /// The ops.
        ops: Vec<LoggedOp>,
    },
    /// The receiver has applied `origin`'s ops up to `upto` (go-back-N ack).
    Ack {
        /// The region acking.
        from: RegionId,
        /// The acking region's incarnation.
        from_incarnation: u64,
        /// The region whose log is acked.
        origin: RegionId,
        /// The incarnation of the origin whose log is acked (acks of an older one are stale).
        origin_incarnation: u64,
        /// Highest contiguous seq applied.
        upto: u64,
    },
}

impl SyncMessage {
    /// Encodes to bytes.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        Ok(postcard::to_allocvec(self)?)
    }
    /// Decodes received bytes (the whole datagram: trailing bytes make it malformed).
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        exact(postcard::take_from_bytes(bytes)?)
    }
}

/// A decoded value, refused when bytes are left over after it.
fn exact<T>((value, rest): (T, &[u8])) -> Result<T, WireError> {
    if rest.is_empty() { Ok(value) } else { Err(WireError(postcard::Error::DeserializeBadEncoding)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_an_error() {
        assert!(SyncMessage::decode(&[200, 1, 2]).is_err());
        let m = SyncMessage::Ack {
            from: "kr".parse().unwrap(),
            from_incarnation: 1,
            origin: "jp".parse().unwrap(),
            origin_incarnation: 2,
            upto: 7,
        };
        assert_eq!(SyncMessage::decode(&m.encode().unwrap()).unwrap(), m);
        assert!(SyncMessage::decode(&[9, 9, 9]).is_err());
    }
}
