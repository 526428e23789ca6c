//! The seven netcode 1.02 packets on the wire (STANDARD.md, "Packets"), sealed and opened
//! with ChaCha20-Poly1305.
//!
//! | type | packet | per-packet data (encrypted, then a 16-byte tag) |
//! |---|---|---|
//! | 0 | connection request | not encrypted: version info, protocol id, token expiry, token nonce, sealed private token (1078 bytes in all) |
//! | 1 | connection denied | none |
//! | 2 | connection challenge | challenge token sequence `u64`, sealed challenge token (300 bytes) |
//! | 3 | connection response | challenge token sequence `u64`, sealed challenge token (300 bytes) |
//! | 4 | keep-alive | client index `u32`, max clients `u32` |
//! | 5 | payload | 1 to [`MAX_PAYLOAD_BYTES`] bytes |
//! | 6 | disconnect | none |
//!
//! Types 1-6 start with a prefix byte `(sequence bytes << 4) | type` and the sequence number
//! in 1-8 little-endian bytes; the nonce is four zero bytes then the sequence as a `u64` LE
//! (`IMPLEMENTERS.md` §2), the associated data version info, protocol id and prefix byte.

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, Tag};
use thiserror::Error;

use super::token::{ConnectToken, Key, Reader, Writer};
use super::{MAC_BYTES, PRIVATE_TOKEN_BYTES, USER_DATA_BYTES, VERSION_INFO};

/// The exact size of a connection request.
pub const CONNECT_REQUEST_BYTES: usize = 1 + 13 + 8 + 8 + 24 + PRIVATE_TOKEN_BYTES;
/// The largest payload one packet carries.
pub const MAX_PAYLOAD_BYTES: usize = 1200;
/// The largest packet either side sends: a full payload with an 8-byte sequence and its tag.
pub const MAX_PACKET_BYTES: usize = 1 + 8 + MAX_PAYLOAD_BYTES + MAC_BYTES;
/// Size of a sealed challenge token.
pub const CHALLENGE_TOKEN_BYTES: usize = 300;
/// Below this no encrypted packet can be valid (STANDARD.md, "Reading Encrypted Packets").
const MIN_ENCRYPTED_BYTES: usize = 18;

/// The packet type in the prefix byte's low four bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// Connection request (0).
    Request = 0,
    /// Connection denied (1).
    Denied = 1,
    /// Connection challenge (2).
    Challenge = 2,
    /// Connection response (3).
    Response = 3,
    /// Keep-alive (4).
    KeepAlive = 4,
    /// Payload (5).
    Payload = 5,
    /// Disconnect (6).
    Disconnect = 6,
}

impl PacketType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => PacketType::Request,
            1 => PacketType::Denied,
            2 => PacketType::Challenge,
            3 => PacketType::Response,
            4 => PacketType::KeepAlive,
            5 => PacketType::Payload,
            6 => PacketType::Disconnect,
            _ => return None,
        })
    }

    /// Whether replay protection applies (keep-alive, payload, disconnect).
    pub fn replay_protected(self) -> bool {
        matches!(self, PacketType::KeepAlive | PacketType::Payload | PacketType::Disconnect)
    }
}

/// Why a datagram is not a packet this end accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PacketError {
    /// Shorter than any valid packet of its type.
    #[error("packet too small")]
    Truncated,
    /// Longer than [`MAX_PACKET_BYTES`], or a request not exactly 1078 bytes.
    #[error("packet too large")]
    Oversized,
    /// Prefix byte names no packet type, or a sequence length above 8.
    #[error("malformed prefix byte")]
    BadPrefix,
    /// Version info is not `"NETCODE 1.02\0"`.
    #[error("wrong netcode version")]
    WrongVersion,
    /// Another game's protocol id.
    #[error("wrong protocol id")]
    WrongProtocol,
    /// The tag did not verify (wrong key, tampered, or forged).
    #[error("packet does not decrypt")]
    Decrypt,
    /// Decrypted data of the wrong size for its type.
    #[error("decrypted data has the wrong size for its type")]
    BadLength,
    /// The output buffer is too small, or a payload is empty or too long.
    #[error("packet does not fit")]
    DoesNotFit,
}

/// An encrypted packet's contents, borrowed from the opened datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// The server refuses (full).
    Denied,
    /// The server's challenge.
    Challenge {
        /// Sequence the challenge token was sealed with.
        token_sequence: u64,
        /// The sealed challenge token (opaque to the client).
        token: &'a [u8; CHALLENGE_TOKEN_BYTES],
    },
    /// The client's answer: the challenge echoed.
    Response {
        /// Sequence the challenge token was sealed with.
        token_sequence: u64,
        /// The sealed challenge token.
        token: &'a [u8; CHALLENGE_TOKEN_BYTES],
    },
    /// Keep-alive; from the server it tells the client its slot.
    KeepAlive {
        /// The client's slot on the server.
        client_index: u32,
        /// Slots on the server.
        max_clients: u32,
    },
    /// Application data.
    Payload(&'a [u8]),
    /// The sender is leaving.
    Disconnect,
}

impl Packet<'_> {
    /// The type byte this packet goes out with.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Denied => PacketType::Denied,
            Packet::Challenge { .. } => PacketType::Challenge,
            Packet::Response { .. } => PacketType::Response,
            Packet::KeepAlive { .. } => PacketType::KeepAlive,
            Packet::Payload(_) => PacketType::Payload,
            Packet::Disconnect => PacketType::Disconnect,
        }
    }
}

/// A connection request's fields, borrowed from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectRequest<'a> {
    /// Protocol id (checked).
    pub protocol_id: u64,
    /// The token's expiry, unix seconds (authenticated by the private part).
    pub expire_timestamp: u64,
    /// The private part's nonce.
    pub nonce: &'a [u8; 24],
    /// The sealed private token.
    pub private_data: &'a [u8; PRIVATE_TOKEN_BYTES],
}

impl<'a> ConnectRequest<'a> {
    /// Reads a request, checking size, prefix, version and `protocol_id` (in the standard's
    /// order); the token is not opened here.
    pub fn decode(buf: &'a [u8], protocol_id: u64) -> Result<Self, PacketError> {
        if buf.len() != CONNECT_REQUEST_BYTES {
            return Err(if buf.len() > CONNECT_REQUEST_BYTES {
                PacketError::Oversized
            } else {
                PacketError::Truncated
            });
        }
        if buf[0] != 0 {
            return Err(PacketError::BadPrefix);
        }
        let mut r = Reader { buf: &buf[1..] };
        let map = |_| PacketError::Truncated;
        if r.take(13).map_err(map)? != VERSION_INFO {
            return Err(PacketError::WrongVersion);
        }
        let pid = r.u64().map_err(map)?;
        if pid != protocol_id {
            return Err(PacketError::WrongProtocol);
        }
        let expire_timestamp = r.u64().map_err(map)?;
        let nonce = r.take(24).map_err(map)?.try_into().map_err(|_| PacketError::Truncated)?;
        let private_data =
            r.take(PRIVATE_TOKEN_BYTES).map_err(map)?.try_into().map_err(|_| PacketError::Truncated)?;
        Ok(ConnectRequest { protocol_id: pid, expire_timestamp, nonce, private_data })
    }
}

/// Writes the connection request for `token` into `out` (at least 1078 bytes).
pub fn encode_request(token: &ConnectToken, out: &mut [u8]) -> Result<usize, PacketError> {
    let mut w = Writer { buf: out, pos: 0 };
    let f = |_| PacketError::DoesNotFit;
    w.put(&[0]).map_err(f)?;
    w.put(VERSION_INFO).map_err(f)?;
    w.put(&token.protocol_id.to_le_bytes()).map_err(f)?;
    w.put(&token.expire_timestamp.to_le_bytes()).map_err(f)?;
    w.put(&token.nonce).map_err(f)?;
    w.put(&token.private_data[..]).map_err(f)?;
    Ok(w.pos)
}

/// The 12-byte nonce: four zero bytes, then `sequence` little-endian.
fn nonce(sequence: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&sequence.to_le_bytes());
    Nonce::from(n)
}

fn packet_aad(protocol_id: u64, prefix: u8) -> [u8; 22] {
    let mut aad = [0u8; 22];
    aad[..13].copy_from_slice(VERSION_INFO);
    aad[13..21].copy_from_slice(&protocol_id.to_le_bytes());
    aad[21] = prefix;
    aad
}

/// Bytes needed for `sequence` with high zero bytes left out (at least 1).
fn sequence_bytes(sequence: u64) -> usize {
    (8 - (sequence.leading_zeros() as usize / 8)).max(1)
}

/// Seals `packet` with `sequence` and `key` into `out`; returns its length.
pub fn encode_packet(
    packet: &Packet<'_>,
    sequence: u64,
    protocol_id: u64,
    key: &Key,
    out: &mut [u8],
) -> Result<usize, PacketError> {
    let seq_len = sequence_bytes(sequence);
    // seq_len <= 8: fits the high nibble.
    let prefix = ((seq_len as u8) << 4) | packet.packet_type() as u8;
    let start = 1 + seq_len;
    let body_len = match packet {
        Packet::Denied | Packet::Disconnect => 0,
        Packet::Challenge { .. } | Packet::Response { .. } => 8 + CHALLENGE_TOKEN_BYTES,
        Packet::KeepAlive { .. } => 8,
        Packet::Payload(p) => {
            if p.is_empty() || p.len() > MAX_PAYLOAD_BYTES {
                return Err(PacketError::DoesNotFit);
            }
            p.len()
        }
    };
    let total = start + body_len + MAC_BYTES;
    if out.len() < total {
        return Err(PacketError::DoesNotFit);
    }
    out[0] = prefix;
    out[1..start].copy_from_slice(&sequence.to_le_bytes()[..seq_len]);
    let body = &mut out[start..start + body_len];
    match packet {
        Packet::Denied | Packet::Disconnect => {}
        Packet::Challenge { token_sequence, token } | Packet::Response { token_sequence, token } => {
            body[..8].copy_from_slice(&token_sequence.to_le_bytes());
            body[8..].copy_from_slice(&token[..]);
        }
        Packet::KeepAlive { client_index, max_clients } => {
            body[..4].copy_from_slice(&client_index.to_le_bytes());
            body[4..].copy_from_slice(&max_clients.to_le_bytes());
        }
        Packet::Payload(p) => body.copy_from_slice(p),
    }
    let cipher = ChaCha20Poly1305::new(key.as_bytes().into());
    let tag = cipher
        .encrypt_in_place_detached(&nonce(sequence), &packet_aad(protocol_id, prefix), body)
        .map_err(|_| PacketError::DoesNotFit)?;
    out[start + body_len..total].copy_from_slice(&tag);
    Ok(total)
}

/// An encrypted packet's header, read before anything is decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Its type.
    pub packet_type: PacketType,
    /// Its sequence number.
    pub sequence: u64,
    prefix: u8,
    start: usize,
}

/// Reads the prefix and sequence of an encrypted packet (types 1-6), with the standard's
/// cheap checks: size at least 18 and at most [`MAX_PACKET_BYTES`], a known type, a sequence
/// length in 1..=8, room for the tag.
pub fn decode_header(buf: &[u8]) -> Result<Header, PacketError> {
    if buf.len() > MAX_PACKET_BYTES {
        return Err(PacketError::Oversized);
    }
    if buf.len() < MIN_ENCRYPTED_BYTES {
        return Err(PacketError::Truncated);
    }
    let prefix = buf[0];
    let packet_type = match PacketType::from_u8(prefix & 0x0f) {
        Some(PacketType::Request) | None => return Err(PacketError::BadPrefix),
        Some(t) => t,
    };
    let seq_len = usize::from(prefix >> 4);
    // The standard says 1..=8; renetcode (2.0 and earlier) writes sequence 0 with no bytes
    // at all. Reading 0 bytes as sequence 0 is safe (the prefix byte is authenticated) and
    // saves every renetcode peer a resend of its first packet; we always write at least one.
    if seq_len > 8 {
        return Err(PacketError::BadPrefix);
    }
    if buf.len() < 1 + seq_len + MAC_BYTES {
        return Err(PacketError::Truncated);
    }
    let mut s = [0u8; 8];
    s[..seq_len].copy_from_slice(&buf[1..1 + seq_len]);
    Ok(Header { packet_type, sequence: u64::from_le_bytes(s), prefix, start: 1 + seq_len })
}

/// Opens a packet whose header [`decode_header`] read, decrypting in place; checks the
/// decrypted size for its type.
pub fn decode_packet<'a>(
    header: &Header,
    buf: &'a mut [u8],
    protocol_id: u64,
    key: &Key,
) -> Result<Packet<'a>, PacketError> {
    if buf.len() < header.start + MAC_BYTES {
        return Err(PacketError::Truncated);
    }
    let tag_at = buf.len() - MAC_BYTES;
    let (head, tag) = buf.split_at_mut(tag_at);
    let body = &mut head[header.start..];
    let cipher = ChaCha20Poly1305::new(key.as_bytes().into());
    cipher
        .decrypt_in_place_detached(
            &nonce(header.sequence),
            &packet_aad(protocol_id, header.prefix),
            body,
            Tag::from_slice(tag),
        )
        .map_err(|_| PacketError::Decrypt)?;
    let body: &'a [u8] = body;
    let fixed = |n: usize| if body.len() == n { Ok(()) } else { Err(PacketError::BadLength) };
    Ok(match header.packet_type {
        PacketType::Denied => fixed(0).map(|_| Packet::Denied)?,
        PacketType::Disconnect => fixed(0).map(|_| Packet::Disconnect)?,
        PacketType::Challenge | PacketType::Response => {
            fixed(8 + CHALLENGE_TOKEN_BYTES)?;
            let token_sequence =
                u64::from_le_bytes(body[..8].try_into().map_err(|_| PacketError::BadLength)?);
            let token = body[8..].try_into().map_err(|_| PacketError::BadLength)?;
            if header.packet_type == PacketType::Challenge {
                Packet::Challenge { token_sequence, token }
            } else {
                Packet::Response { token_sequence, token }
            }
        }
        PacketType::KeepAlive => {
            fixed(8)?;
            let word = |i: usize| u32::from_le_bytes(body[i..i + 4].try_into().unwrap_or([0; 4]));
            Packet::KeepAlive { client_index: word(0), max_clients: word(4) }
        }
        PacketType::Payload => {
            if body.is_empty() || body.len() > MAX_PAYLOAD_BYTES {
                return Err(PacketError::BadLength);
            }
            Packet::Payload(body)
        }
        PacketType::Request => return Err(PacketError::BadPrefix),
    })
}

/// Seals a challenge token: client id and user data, zero padded, ChaCha20-Poly1305 with no
/// associated data under the server's challenge key.
pub fn seal_challenge(
    client_id: u64,
    user_data: &[u8; USER_DATA_BYTES],
    sequence: u64,
    key: &Key,
) -> [u8; CHALLENGE_TOKEN_BYTES] {
    let mut t = [0u8; CHALLENGE_TOKEN_BYTES];
    t[..8].copy_from_slice(&client_id.to_le_bytes());
    t[8..8 + USER_DATA_BYTES].copy_from_slice(user_data);
    let (body, tag) = t.split_at_mut(CHALLENGE_TOKEN_BYTES - MAC_BYTES);
    let cipher = ChaCha20Poly1305::new(key.as_bytes().into());
    // Encryption of a fixed 284-byte buffer cannot fail (the AEAD's length limit is 256 GiB).
    if let Ok(tg) = cipher.encrypt_in_place_detached(&nonce(sequence), &[], body) {
        tag.copy_from_slice(&tg);
    }
    t
}

/// Opens a challenge token; `None` if it was not sealed by `key` with `sequence`.
pub fn open_challenge(
    token: &[u8; CHALLENGE_TOKEN_BYTES],
    sequence: u64,
    key: &Key,
) -> Option<(u64, [u8; USER_DATA_BYTES])> {
    let mut t = *token;
    let (body, tag) = t.split_at_mut(CHALLENGE_TOKEN_BYTES - MAC_BYTES);
    let cipher = ChaCha20Poly1305::new(key.as_bytes().into());
    cipher.decrypt_in_place_detached(&nonce(sequence), &[], body, Tag::from_slice(tag)).ok()?;
    let client_id = u64::from_le_bytes(body[..8].try_into().ok()?);
    let user_data = body[8..8 + USER_DATA_BYTES].try_into().ok()?;
    Some((client_id, user_data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_packet_round_trips_and_a_flipped_bit_fails() {
        let key = Key::random();
        let tok = [5u8; CHALLENGE_TOKEN_BYTES];
        let packets = [
            Packet::Denied,
            Packet::Challenge { token_sequence: 9, token: &tok },
            Packet::Response { token_sequence: 9, token: &tok },
            Packet::KeepAlive { client_index: 3, max_clients: 64 },
            Packet::Payload(b"hello"),
            Packet::Disconnect,
        ];
        for (i, p) in packets.iter().enumerate() {
            for seq in [0u64, 1000, 1 << 63, u64::MAX] {
                let mut buf = [0u8; MAX_PACKET_BYTES];
                let n = encode_packet(p, seq, 42, &key, &mut buf).unwrap();
                let h = decode_header(&buf[..n]).unwrap();
                assert_eq!((h.packet_type, h.sequence), (p.packet_type(), seq));
                let mut copy = buf;
                assert_eq!(decode_packet(&h, &mut copy[..n], 42, &key).unwrap(), *p);
                let mut copy = buf;
                assert_eq!(decode_packet(&h, &mut copy[..n], 43, &key), Err(PacketError::Decrypt));
                let mut copy = buf;
                copy[n - 1 - i] ^= 1;
                assert_eq!(decode_packet(&h, &mut copy[..n], 42, &key), Err(PacketError::Decrypt));
            }
        }
    }

    #[test]
    fn sequence_is_written_without_high_zero_bytes() {
        let key = Key::random();
        let mut buf = [0u8; 64];
        encode_packet(&Packet::Disconnect, 1000, 0, &key, &mut buf).unwrap();
        assert_eq!(&buf[..3], &[0x26, 0xE8, 0x03]);
        encode_packet(&Packet::Disconnect, 0, 0, &key, &mut buf).unwrap();
        assert_eq!(buf[0], 0x16);
    }

    #[test]
    fn bad_headers_are_refused_cheaply() {
        assert_eq!(decode_header(&[0x15; 10]), Err(PacketError::Truncated));
        assert_eq!(decode_header(&[0x17; 40]), Err(PacketError::BadPrefix));
        assert_eq!(decode_header(&[0x10; 40]), Err(PacketError::BadPrefix));
        // renetcode's zero-byte sequence 0 reads as sequence 0.
        assert_eq!(decode_header(&[0x05; 40]).map(|h| h.sequence), Ok(0));
        assert_eq!(decode_header(&[0x95; 40]), Err(PacketError::BadPrefix));
        assert_eq!(decode_header(&[0x15; MAX_PACKET_BYTES + 1]), Err(PacketError::Oversized));
    }

    #[test]
    fn challenge_tokens_open_only_with_their_key_and_sequence() {
        let key = Key::random();
        let ud = [7u8; USER_DATA_BYTES];
        let t = seal_challenge(11, &ud, 4, &key);
        assert_eq!(open_challenge(&t, 4, &key), Some((11, ud)));
        assert_eq!(open_challenge(&t, 5, &key), None);
        assert_eq!(open_challenge(&t, 4, &Key::random()), None);
    }
}
