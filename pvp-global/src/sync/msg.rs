//! The sync wire format: one datagram is `[PROTOCOL_VERSION][postcard(Message)]`, at most
//! [`SyncConfig::max_message_bytes`](super::SyncConfig::max_message_bytes) long.

use super::{Key, Value};
use pvp_core::RegionId;
use pvp_core::hlc::HlcStamp;
use serde::{Deserialize, Serialize};

/// Version byte that starts every sync datagram.
pub const PROTOCOL_VERSION: u8 = 1;

/// Number of digest buckets a region's state is hashed into for anti-entropy.
pub const DIGEST_BUCKETS: usize = 256;

/// One sync message between regions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Sending region.
    pub from: RegionId,
    /// Sender's incarnation (changes when it restarts).
    pub incarnation: u64,
    /// Sender's clock when it sent this (lets receivers keep their HLC ahead).
    pub stamp: HlcStamp,
    /// What it carries.
    pub body: Body,
}

/// The payload of a [`Message`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// Eventual deltas with sequence numbers `first..=last` of the sender's delta log.
    Deltas {
        /// Everything below `floor` was acknowledged by the receiver (or handed to
        /// anti-entropy), so it may count it as received.
        floor: u64,
        /// First sequence number carried.
        first: u64,
        /// Last sequence number carried.
        last: u64,
        /// Deltas, joined per key.
        entries: Vec<(Key, Value)>,
    },
    /// All deltas up to `upto` (of the receiver's log, in the acker's `incarnation` view) arrived.
    DeltaAck {
        /// The sender incarnation the ack is for.
        incarnation: u64,
        /// Highest contiguous sequence number received.
        upto: u64,
    },
    /// Hashes of the sender's state per bucket, for anti-entropy.
    Digest {
        /// One hash per bucket, [`DIGEST_BUCKETS`] of them.
        buckets: Vec<u64>,
    },
    /// "Send me your state of these buckets."
    RepairRequest {
        /// Bucket numbers.
        buckets: Vec<u16>,
    },
    /// Full states of some keys, answering a digest mismatch or a repair request.
    Repair {
        /// Key states.
        entries: Vec<(Key, Value)>,
    },
    /// A STRONG write: apply and acknowledge at once.
    Strong {
        /// Write id, unique per sender incarnation.
        id: u64,
        /// The deltas of the write.
        entries: Vec<(Key, Value)>,
    },
    /// A STRONG write was applied.
    StrongAck {
        /// The acknowledged write's id.
        id: u64,
        /// The writer's incarnation it belongs to.
        incarnation: u64,
    },
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Longer than the configured limit.
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    Oversized {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Empty, or a version this build does not speak.
    #[error("unsupported protocol version {0:?}")]
    Version(Option<u8>),
    /// Not a valid message.
    #[error("malformed message")]
    Malformed,
}

/// Encodes `msg` into `buf` (cleared first).
pub fn encode(msg: &Message, buf: &mut Vec<u8>) -> Result<(), postcard::Error> {
    buf.clear();
    buf.push(PROTOCOL_VERSION);
    let body = postcard::to_stdvec(msg)?;
    buf.extend_from_slice(&body);
    Ok(())
}

/// Size of `msg` once encoded.
pub fn encoded_len(msg: &Message) -> usize {
    postcard::experimental::serialized_size(msg).map_or(usize::MAX, |n| n + 1)
}

/// Decodes one datagram, checking size and version. Values are normalized so untrusted input
/// cannot leave a CRDT in a non-canonical shape.
pub fn decode(bytes: &[u8], max: usize) -> Result<Message, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::Oversized { len: bytes.len(), max });
    }
    match bytes.first() {
        Some(&PROTOCOL_VERSION) => {}
        other => return Err(DecodeError::Version(other.copied())),
    }
    let (mut msg, rest): (Message, &[u8]) =
        postcard::take_from_bytes(&bytes[1..]).map_err(|_| DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed);
    }
    match &mut msg.body {
        Body::Deltas { entries, floor, first, last } => {
            if first > last || floor > first {
                return Err(DecodeError::Malformed);
            }
            check_entries(entries)?;
        }
        Body::Repair { entries } | Body::Strong { entries, .. } => check_entries(entries)?,
        Body::Digest { buckets } if buckets.len() != DIGEST_BUCKETS => {
            return Err(DecodeError::Malformed);
        }
        Body::RepairRequest { buckets } if buckets.iter().any(|&b| usize::from(b) >= DIGEST_BUCKETS) => {
            return Err(DecodeError::Malformed);
        }
        _ => {}
    }
    Ok(msg)
}

fn check_entries(entries: &mut [(Key, Value)]) -> Result<(), DecodeError> {
    for (k, v) in entries.iter_mut() {
        if !k.accepts(v) || !v.is_valid() {
            return Err(DecodeError::Malformed);
        }
        v.normalize();
    }
    Ok(())
}
