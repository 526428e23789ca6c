//! The payload layer: acks and a reliable-ordered channel carried inside netcode payloads.
//!
//! A session uses it only when both ends agreed at token time (bit 0 of the flags in
//! [`SessionUserData`](super::SessionUserData)); a plain netcode client's payloads are
//! delivered as they are. Every layered payload is, little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | layer version, [`LAYER_VERSION`] |
//! | 4 | sequence `u32` of this layered payload (from 1; the ack space, separate from netcode's) |
//! | 4 | ack: newest layered sequence received from the peer (0: none) |
//! | 4 | ack bits: bit `i` set means `ack - 1 - i` arrived too |
//! | 4 | reliable ack: the next reliable message id this end expects (cumulative) |
//! | 1 | reliable message count, at most 8 |
//! | 6 + n each | reliable message: id `u32`, length `u16`, bytes |
//! | rest | the unreliable payload (may be empty) |
//!
//! Reliable messages are resent, in every payload that has room, until the cumulative ack
//! covers them; at most [`RELIABLE_WINDOW`](crate::proto::RELIABLE_WINDOW) wait unacknowledged.

use std::time::{Duration, Instant};

use crate::proto::link::Link;
use crate::proto::packet::{
    AckHeader, MAX_RELIABLE_PER_PACKET, RELIABLE_HEADER_LEN, ReliableFrame, ReliableFrames,
};
use crate::proto::{DropReason, SendError as LinkSendError};

use super::token::Reader;
use super::{MAX_PAYLOAD_BYTES, SendError};

/// The first byte of every layered payload.
pub const LAYER_VERSION: u8 = 1;
/// Bytes of the layer header before reliable messages and payload.
pub const LAYER_HEADER_BYTES: usize = 1 + 4 + 4 + 4 + 4 + 1;
/// The largest unreliable payload a layered session sends in one packet.
pub const MAX_LAYERED_PAYLOAD: usize = MAX_PAYLOAD_BYTES - LAYER_HEADER_BYTES;
/// The largest reliable message.
pub const MAX_RELIABLE_MESSAGE: usize = crate::proto::MAX_RELIABLE_LEN;

/// One layered payload, borrowed from the decrypted packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layered<'a> {
    /// Its layer sequence.
    pub seq: u32,
    /// The sender's acks.
    pub ack: AckHeader,
    /// Reliable messages it carries.
    pub reliable: ReliableFrames<'a>,
    /// The unreliable payload.
    pub payload: &'a [u8],
}

/// Why a layered payload could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// Shorter than its header or its declared messages.
    #[error("layered payload truncated")]
    Truncated,
    /// Unknown version or more than 8 reliable messages.
    #[error("layered payload malformed")]
    Malformed,
}

impl From<LayerError> for DropReason {
    fn from(e: LayerError) -> Self {
        match e {
            LayerError::Truncated => DropReason::Truncated,
            LayerError::Malformed => DropReason::Malformed,
        }
    }
}

impl<'a> Layered<'a> {
    /// Reads one layered payload. Never panics.
    pub fn decode(buf: &'a [u8]) -> Result<Self, LayerError> {
        let mut r = Reader { buf };
        let t = |_| LayerError::Truncated;
        if r.u8().map_err(t)? != LAYER_VERSION {
            return Err(LayerError::Malformed);
        }
        let seq = r.u32().map_err(t)?;
        let ack = AckHeader {
            ack: r.u32().map_err(t)?,
            ack_bits: r.u32().map_err(t)?,
            reliable_ack: r.u32().map_err(t)?,
        };
        let count = usize::from(r.u8().map_err(t)?);
        if count > MAX_RELIABLE_PER_PACKET {
            return Err(LayerError::Malformed);
        }
        let mut reliable = ReliableFrames::new();
        for _ in 0..count {
            let id = r.u32().map_err(t)?;
            let len = usize::from(r.u16().map_err(t)?);
            let bytes = r.take(len).map_err(t)?;
            reliable.push(ReliableFrame { id, bytes }).map_err(|_| LayerError::Malformed)?;
        }
        Ok(Layered { seq, ack, reliable, payload: r.buf })
    }

    /// Writes it into `out`; returns the length, or `None` if it does not fit.
    pub fn encode(&self, out: &mut [u8]) -> Option<usize> {
        let need = LAYER_HEADER_BYTES
            + self.reliable.iter().map(|f| RELIABLE_HEADER_LEN + f.bytes.len()).sum::<usize>()
            + self.payload.len();
        if need > out.len() || self.reliable.len() > MAX_RELIABLE_PER_PACKET {
            return None;
        }
        let mut pos = 0;
        let mut put = |b: &[u8]| {
            out[pos..pos + b.len()].copy_from_slice(b);
            pos += b.len();
        };
        put(&[LAYER_VERSION]);
        put(&self.seq.to_le_bytes());
        put(&self.ack.ack.to_le_bytes());
        put(&self.ack.ack_bits.to_le_bytes());
        put(&self.ack.reliable_ack.to_le_bytes());
        // len() <= 8 fits u8.
        put(&[self.reliable.len() as u8]);
        for f in self.reliable.iter() {
            put(&f.id.to_le_bytes());
            put(&u16::try_from(f.bytes.len()).ok()?.to_le_bytes());
            put(f.bytes);
        }
        put(self.payload);
        Some(pos)
    }
}

/// One end's layer state: the session protocol's ack window and reliable channel.
#[derive(Debug)]
pub(crate) struct LayerState {
    link: Link,
}

impl LayerState {
    pub(crate) fn new(now: Instant) -> Self {
        LayerState { link: Link::new(now) }
    }

    /// Wraps `payload` (with due reliable messages and acks) into `out`.
    pub(crate) fn wrap(
        &mut self,
        now: Instant,
        resend: Duration,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, SendError> {
        if payload.len() > MAX_LAYERED_PAYLOAD {
            return Err(SendError::TooLarge);
        }
        let room = MAX_LAYERED_PAYLOAD - payload.len();
        self.link
            .encode_with(now, resend, room, |seq, ack, reliable| {
                Layered { seq, ack, reliable, payload }.encode(out).ok_or(LinkSendError::BufferTooSmall)
            })
            .map_err(SendError::from)
    }

    /// Takes a received layered payload: acks, reliable messages (to `deliver`, once and in
    /// order); returns the unreliable part.
    pub(crate) fn unwrap<'a>(
        &mut self,
        now: Instant,
        data: &'a [u8],
        deliver: impl FnMut(Vec<u8>),
    ) -> Result<&'a [u8], DropReason> {
        let l = Layered::decode(data)?;
        let link = &mut self.link;
        // The netcode layer already refused duplicates; a stale layer sequence only means no ack bit.
        let _ = link.accept_seq(l.seq);
        link.last_recv = now;
        link.on_ack(&l.ack);
        // Messages go straight to the caller's event queue (drained after every datagram), so
        // the link's back-pressure check never refuses them.
        link.on_reliable(&l.reliable, usize::MAX / 2, deliver);
        Ok(l.payload)
    }

    pub(crate) fn queue_reliable(&mut self, msg: &[u8]) -> Result<(), SendError> {
        self.link.queue_reliable(msg).map_err(SendError::from)
    }

    /// True when an ack or a reliable (re)send is owed at `now`.
    pub(crate) fn due(&self, now: Instant, resend: Duration) -> bool {
        let l = &self.link;
        l.ack_due || l.reliable_due(now, resend)
    }

    /// When an ack or a reliable (re)send is next owed (`None`: neither is pending).
    pub(crate) fn next_due(&self, resend: Duration) -> Option<Instant> {
        self.link.next_reliable_due(resend)
    }

    /// Nothing owed: no unacknowledged reliable message and no ack due.
    pub(crate) fn idle(&self) -> bool {
        !self.link.ack_due && self.link.reliable_in_flight() == 0
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.link.reliable_in_flight()
    }
}
