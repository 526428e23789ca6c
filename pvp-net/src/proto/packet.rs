//! The wire format: one versioned header, six packet types.
//!
//! Every packet starts with `[version: u8, kind: u8]`. Integers are little-endian.
//!
//! | kind | packet | body |
//! |---|---|---|
//! | 1 | [`Packet::ConnectRequest`] | sealed connect token ([`TOKEN_LEN`] bytes), zero padding to [`CONNECT_REQUEST_LEN`] |
//! | 2 | [`Packet::Challenge`] | token id `u64`, challenge `[u8; 16]` |
//! | 3 | [`Packet::ChallengeResponse`] | token id `u64`, challenge `[u8; 16]` |
//! | 4 | [`Packet::Accepted`] | token id `u64`, connection id `u64` |
//! | 5 | [`Packet::Denied`] | token id `u64`, reason `u8` |
//! | 6 | [`Packet::Data`] | connection id `u64`, seq `u32`, ack `u32`, ack bits `u32`, reliable ack `u32`, reliable count `u8`, reliable messages (`id u32, len u16, bytes`), unreliable payload (the rest) |
//! | 7 | [`Packet::Disconnect`] | connection id `u64` |
//!
//! The connect request is padded so that it is the largest packet a client sends before the
//! handshake completes; every reply a server gives before that is smaller (no amplification).

use thiserror::Error;

use super::token::TOKEN_LEN;

/// The protocol version this crate speaks; packets with another version are dropped.
pub const PROTOCOL_VERSION: u8 = 1;
/// The largest datagram either side sends or accepts.
pub const MAX_PACKET_LEN: usize = 1200;
/// The exact length of a connect request (token plus padding).
pub const CONNECT_REQUEST_LEN: usize = 128;
/// Length of a handshake challenge.
pub const CHALLENGE_LEN: usize = 16;
/// Bytes of a data packet before its reliable messages and payload.
pub const DATA_HEADER_LEN: usize = 2 + 8 + 4 + 4 + 4 + 4 + 1;
/// Bytes each reliable message adds before its own bytes.
pub const RELIABLE_HEADER_LEN: usize = 4 + 2;
/// The most reliable messages one data packet carries.
pub const MAX_RELIABLE_PER_PACKET: usize = 8;

const KIND_CONNECT_REQUEST: u8 = 1;
const KIND_CHALLENGE: u8 = 2;
const KIND_CHALLENGE_RESPONSE: u8 = 3;
const KIND_ACCEPTED: u8 = 4;
const KIND_DENIED: u8 = 5;
const KIND_DATA: u8 = 6;
const KIND_DISCONNECT: u8 = 7;

/// Why a datagram could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Shorter than its header or its declared contents.
    #[error("packet truncated")]
    Truncated,
    /// Longer than [`MAX_PACKET_LEN`] or its fixed size.
    #[error("packet oversized")]
    Oversized,
    /// Version byte differs from [`PROTOCOL_VERSION`].
    #[error("wrong protocol version {0}")]
    WrongVersion(u8),
    /// Unknown packet kind, or a field with a value no sender writes.
    #[error("malformed packet")]
    Malformed,
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The output buffer (or [`MAX_PACKET_LEN`]) is too small for the packet.
    #[error("packet does not fit in {0} bytes")]
    TooLarge(usize),
    /// More than [`MAX_RELIABLE_PER_PACKET`] reliable messages, or one longer than `u16::MAX`.
    #[error("too many or too large reliable messages")]
    TooManyReliable,
}

/// Why a server refused a connect request; sent in [`Packet::Denied`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DenyReason {
    /// The session table is full.
    ServerFull,
    /// The server was shutting down.
    ShuttingDown,
}

impl DenyReason {
    fn to_u8(self) -> u8 {
        match self {
            DenyReason::ServerFull => 1,
            DenyReason::ShuttingDown => 2,
        }
    }
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(DenyReason::ServerFull),
            2 => Some(DenyReason::ShuttingDown),
            _ => None,
        }
    }
}

/// One reliable-ordered message inside a data packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReliableFrame<'a> {
    /// Message id: consecutive from 0 per direction of a session.
    pub id: u32,
    /// The message bytes.
    pub bytes: &'a [u8],
}

/// Reliable messages carried by a data packet (at most [`MAX_RELIABLE_PER_PACKET`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReliableFrames<'a> {
    frames: [Option<ReliableFrame<'a>>; MAX_RELIABLE_PER_PACKET],
    len: usize,
}

impl<'a> ReliableFrames<'a> {
    /// No reliable messages.
    pub const fn new() -> Self {
        ReliableFrames { frames: [None; MAX_RELIABLE_PER_PACKET], len: 0 }
    }
    /// Adds a frame; hands it back when [`MAX_RELIABLE_PER_PACKET`] are already held.
    pub fn push(&mut self, frame: ReliableFrame<'a>) -> Result<(), ReliableFrame<'a>> {
        if self.len == MAX_RELIABLE_PER_PACKET {
            return Err(frame);
        }
        self.frames[self.len] = Some(frame);
        self.len += 1;
        Ok(())
    }
    /// Number of frames.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The frames in order.
    pub fn iter(&self) -> impl Iterator<Item = ReliableFrame<'a>> + '_ {
        self.frames[..self.len].iter().flatten().copied()
    }
    /// Bytes these frames take on the wire.
    pub fn wire_len(&self) -> usize {
        self.iter().map(|f| RELIABLE_HEADER_LEN + f.bytes.len()).sum()
    }
}

/// The ack state a data packet carries: the newest sequence number seen from the peer and a
/// bitfield where bit `i` set means `ack - 1 - i` was received too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct AckHeader {
    /// Newest sequence number received from the peer; sequence numbers start at 1, so 0
    /// means nothing received yet.
    pub ack: u32,
    /// Bit `i` set: `ack - 1 - i` received as well.
    pub ack_bits: u32,
    /// Next reliable message id the sender of this packet expects (cumulative ack).
    pub reliable_ack: u32,
}

/// A decoded packet, borrowing from the datagram it came from.
// A packet lives on the stack for one decode or encode; boxing the frames would allocate per
// packet.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Client → server: a sealed connect token ([`TOKEN_LEN`] bytes).
    ConnectRequest {
        /// The sealed token as the matchmaker issued it.
        token: &'a [u8; TOKEN_LEN],
    },
    /// Server → client: prove you receive at the address you claim.
    Challenge {
        /// The token id this challenge answers.
        token_id: u64,
        /// Random-looking bytes the client must echo.
        challenge: [u8; CHALLENGE_LEN],
    },
    /// Client → server: the echoed challenge.
    ChallengeResponse {
        /// The token id of the handshake.
        token_id: u64,
        /// The challenge as received.
        challenge: [u8; CHALLENGE_LEN],
    },
    /// Server → client: the session is open.
    Accepted {
        /// The token id of the handshake.
        token_id: u64,
        /// The connection id every later packet carries.
        connection_id: u64,
    },
    /// Server → client: the session was refused.
    Denied {
        /// The token id of the handshake.
        token_id: u64,
        /// Why.
        reason: DenyReason,
    },
    /// Either way, after the handshake: acks, reliable messages and an unreliable payload. A
    /// data packet with neither is a keep-alive.
    Data {
        /// The session's connection id.
        connection_id: u64,
        /// This packet's sequence number.
        seq: u32,
        /// What the sender has received.
        ack: AckHeader,
        /// Reliable-ordered messages (possibly resent).
        reliable: ReliableFrames<'a>,
        /// Unreliable payload (possibly empty).
        payload: &'a [u8],
    },
    /// Either way: the sender closes the session.
    Disconnect {
        /// The session's connection id.
        connection_id: u64,
    },
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() { Ok(()) } else { Err(DecodeError::Oversized) }
    }
}

struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self.pos + bytes.len();
        let cap = self.buf.len();
        let dst = self.buf.get_mut(self.pos..end).ok_or(EncodeError::TooLarge(cap))?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }
}

impl<'a> Packet<'a> {
    /// Decodes one datagram. Never panics; every malformed input is an error.
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        if buf.len() > MAX_PACKET_LEN {
            return Err(DecodeError::Oversized);
        }
        let mut r = Reader { buf };
        let version = r.u8()?;
        let kind = r.u8()?;
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::WrongVersion(version));
        }
        let packet = match kind {
            KIND_CONNECT_REQUEST => {
                if buf.len() > CONNECT_REQUEST_LEN {
                    return Err(DecodeError::Oversized);
                }
                if buf.len() < CONNECT_REQUEST_LEN {
                    return Err(DecodeError::Truncated);
                }
                let token: &[u8; TOKEN_LEN] =
                    r.take(TOKEN_LEN)?.try_into().map_err(|_| DecodeError::Truncated)?;
                // Padding must be zero so a request cannot smuggle data.
                if r.take(r.buf.len())?.iter().any(|&b| b != 0) {
                    return Err(DecodeError::Malformed);
                }
                Packet::ConnectRequest { token }
            }
            KIND_CHALLENGE | KIND_CHALLENGE_RESPONSE => {
                let token_id = r.u64()?;
                let challenge = r.array()?;
                r.finish()?;
                if kind == KIND_CHALLENGE {
                    Packet::Challenge { token_id, challenge }
                } else {
                    Packet::ChallengeResponse { token_id, challenge }
                }
            }
            KIND_ACCEPTED => {
                let token_id = r.u64()?;
                let connection_id = r.u64()?;
                r.finish()?;
                Packet::Accepted { token_id, connection_id }
            }
            KIND_DENIED => {
                let token_id = r.u64()?;
                let reason = DenyReason::from_u8(r.u8()?).ok_or(DecodeError::Malformed)?;
                r.finish()?;
                Packet::Denied { token_id, reason }
            }
            KIND_DATA => {
                let connection_id = r.u64()?;
                let seq = r.u32()?;
                let ack = AckHeader { ack: r.u32()?, ack_bits: r.u32()?, reliable_ack: r.u32()? };
                let count = usize::from(r.u8()?);
                if count > MAX_RELIABLE_PER_PACKET {
                    return Err(DecodeError::Malformed);
                }
                let mut reliable = ReliableFrames::new();
                for _ in 0..count {
                    let id = r.u32()?;
                    let len = usize::from(r.u16()?);
                    let bytes = r.take(len)?;
                    reliable.push(ReliableFrame { id, bytes }).map_err(|_| DecodeError::Malformed)?;
                }
                let payload = r.take(r.buf.len())?;
                Packet::Data { connection_id, seq, ack, reliable, payload }
            }
            KIND_DISCONNECT => {
                let connection_id = r.u64()?;
                r.finish()?;
                Packet::Disconnect { connection_id }
            }
            _ => return Err(DecodeError::Malformed),
        };
        Ok(packet)
    }

    /// Encodes into `buf`, returning the number of bytes written.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let limit = buf.len().min(MAX_PACKET_LEN);
        let mut w = Writer { buf: &mut buf[..limit], pos: 0 };
        match *self {
            Packet::ConnectRequest { token } => {
                w.put(&[PROTOCOL_VERSION, KIND_CONNECT_REQUEST])?;
                w.put(token)?;
                w.put(&[0u8; CONNECT_REQUEST_LEN - 2 - TOKEN_LEN])?;
            }
            Packet::Challenge { token_id, challenge } => {
                w.put(&[PROTOCOL_VERSION, KIND_CHALLENGE])?;
                w.put(&token_id.to_le_bytes())?;
                w.put(&challenge)?;
            }
            Packet::ChallengeResponse { token_id, challenge } => {
                w.put(&[PROTOCOL_VERSION, KIND_CHALLENGE_RESPONSE])?;
                w.put(&token_id.to_le_bytes())?;
                w.put(&challenge)?;
            }
            Packet::Accepted { token_id, connection_id } => {
                w.put(&[PROTOCOL_VERSION, KIND_ACCEPTED])?;
                w.put(&token_id.to_le_bytes())?;
                w.put(&connection_id.to_le_bytes())?;
            }
            Packet::Denied { token_id, reason } => {
                w.put(&[PROTOCOL_VERSION, KIND_DENIED])?;
                w.put(&token_id.to_le_bytes())?;
                w.put(&[reason.to_u8()])?;
            }
            Packet::Data { connection_id, seq, ack, reliable, payload } => {
                if reliable.len() > MAX_RELIABLE_PER_PACKET {
                    return Err(EncodeError::TooManyReliable);
                }
                w.put(&[PROTOCOL_VERSION, KIND_DATA])?;
                w.put(&connection_id.to_le_bytes())?;
                w.put(&seq.to_le_bytes())?;
                w.put(&ack.ack.to_le_bytes())?;
                w.put(&ack.ack_bits.to_le_bytes())?;
                w.put(&ack.reliable_ack.to_le_bytes())?;
                // len() <= MAX_RELIABLE_PER_PACKET (8) fits a u8.
                w.put(&[reliable.len() as u8])?;
                for f in reliable.iter() {
                    let len = u16::try_from(f.bytes.len()).map_err(|_| EncodeError::TooManyReliable)?;
                    w.put(&f.id.to_le_bytes())?;
                    w.put(&len.to_le_bytes())?;
                    w.put(f.bytes)?;
                }
                w.put(payload)?;
            }
            Packet::Disconnect { connection_id } => {
                w.put(&[PROTOCOL_VERSION, KIND_DISCONNECT])?;
                w.put(&connection_id.to_le_bytes())?;
            }
        }
        Ok(w.pos)
    }

    /// The connection id of a post-handshake packet, read without decoding the rest; drivers
    /// use it to steer a datagram to the worker that owns the session.
    pub fn peek_connection_id(buf: &[u8]) -> Option<u64> {
        match buf {
            [PROTOCOL_VERSION, KIND_DATA | KIND_DISCONNECT, rest @ ..] => {
                let id: [u8; 8] = rest.get(..8)?.try_into().ok()?;
                Some(u64::from_le_bytes(id))
            }
            _ => None,
        }
    }
}
