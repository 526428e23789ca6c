//! Per-session state both ends share: sequence numbers, the replay window and acks, and the
//! optional reliable-ordered channel.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::packet::{
    AckHeader, DATA_HEADER_LEN, MAX_PACKET_LEN, MAX_RELIABLE_PER_PACKET, Packet, RELIABLE_HEADER_LEN,
    ReliableFrame, ReliableFrames,
};
use super::{DropReason, SendError};

/// Reliable messages a session keeps unacknowledged per direction; more are refused with
/// [`SendError::ReliableQueueFull`]. The receiver buffers at most this many out of order.
pub const RELIABLE_WINDOW: usize = 32;
/// The largest reliable message.
pub const MAX_RELIABLE_LEN: usize = MAX_PACKET_LEN - DATA_HEADER_LEN - RELIABLE_HEADER_LEN;
/// The largest unreliable payload a data packet carries.
pub const MAX_PAYLOAD_LEN: usize = MAX_PACKET_LEN - DATA_HEADER_LEN;

#[derive(Debug)]
pub(crate) struct OutMsg {
    id: u32,
    bytes: Vec<u8>,
    last_sent: Option<Instant>,
}

#[derive(Debug, Default)]
pub(crate) struct Reliable {
    next_send_id: u32,
    unacked: VecDeque<OutMsg>,
    next_recv_id: u32,
    /// Index `i` holds message `next_recv_id + i` when it arrived early.
    early: VecDeque<Option<Vec<u8>>>,
}

/// Sequencing and ack state of one session, one end.
#[derive(Debug)]
pub(crate) struct Link {
    /// Next sequence number to send; starts at 1 so `ack == 0` means "nothing received".
    next_seq: u32,
    recv_latest: u32,
    recv_bits: u32,
    pub(crate) last_recv: Instant,
    pub(crate) last_send: Instant,
    /// Something arrived that the peer wants acknowledged soon (a reliable message).
    pub(crate) ack_due: bool,
    reliable: Option<Box<Reliable>>,
}

impl Link {
    pub(crate) fn new(now: Instant) -> Self {
        Link {
            next_seq: 1,
            recv_latest: 0,
            recv_bits: 0,
            last_recv: now,
            last_send: now,
            ack_due: false,
            reliable: None,
        }
    }

    pub(crate) fn ack_header(&self) -> AckHeader {
        AckHeader {
            ack: self.recv_latest,
            ack_bits: self.recv_bits,
            reliable_ack: self.reliable.as_ref().map_or(0, |r| r.next_recv_id),
        }
    }

    /// The sequence number of the newest packet sent (0: none yet).
    pub(crate) fn last_seq(&self) -> u32 {
        self.next_seq - 1
    }

    /// Takes the next sequence number, or fails when the session used all
    /// 2^32 - 2 (1 to `u32::MAX - 1`).
    pub(crate) fn take_seq(&mut self) -> Result<u32, SendError> {
        let seq = self.peek_seq()?;
        self.next_seq += 1;
        Ok(seq)
    }

    /// The sequence number the next packet will take, without taking it.
    fn peek_seq(&self) -> Result<u32, SendError> {
        if self.next_seq == u32::MAX { Err(SendError::SequenceExhausted) } else { Ok(self.next_seq) }
    }

    /// Records `seq` in the replay window; duplicates and packets older than the window are
    /// refused.
    pub(crate) fn accept_seq(&mut self, seq: u32) -> Result<(), DropReason> {
        if seq == 0 {
            return Err(DropReason::Malformed);
        }
        if seq > self.recv_latest {
            let shift = seq - self.recv_latest;
            self.recv_bits = if self.recv_latest == 0 || shift > 32 {
                0
            } else {
                self.recv_bits.checked_shl(shift).unwrap_or(0) | (1u32 << (shift - 1))
            };
            self.recv_latest = seq;
            Ok(())
        } else if seq == self.recv_latest {
            Err(DropReason::Replayed)
        } else {
            let d = self.recv_latest - seq;
            if d > 32 {
                return Err(DropReason::Stale);
            }
            let bit = 1u32 << (d - 1);
            if self.recv_bits & bit != 0 {
                return Err(DropReason::Replayed);
            }
            self.recv_bits |= bit;
            Ok(())
        }
    }

    /// Applies the peer's cumulative reliable ack.
    pub(crate) fn on_ack(&mut self, ack: &AckHeader) {
        if let Some(r) = self.reliable.as_mut() {
            // Only ids we sent can be acked; a larger value is a lie and ignored.
            if ack.reliable_ack <= r.next_send_id {
                while r.unacked.front().is_some_and(|m| m.id < ack.reliable_ack) {
                    r.unacked.pop_front();
                }
            }
        }
    }

    /// Takes the reliable frames of a received packet; complete in-order messages go to
    /// `deliver`. Returns false (and takes nothing) when `can_deliver` says there is no room,
    /// so the peer resends later.
    pub(crate) fn on_reliable(
        &mut self,
        frames: &ReliableFrames<'_>,
        room: usize,
        mut deliver: impl FnMut(Vec<u8>),
    ) -> bool {
        if frames.is_empty() {
            return true;
        }
        if room < frames.len() + RELIABLE_WINDOW {
            return false;
        }
        self.ack_due = true;
        let r = self.reliable.get_or_insert_with(Box::default);
        for f in frames.iter() {
            if f.id < r.next_recv_id {
                continue; // already delivered; the ack we send covers it
            }
            let Ok(idx) = usize::try_from(f.id - r.next_recv_id) else {
                continue;
            };
            if idx >= RELIABLE_WINDOW {
                continue; // beyond the window: the sender never does this
            }
            while r.early.len() <= idx {
                r.early.push_back(None);
            }
            if r.early[idx].is_none() {
                r.early[idx] = Some(f.bytes.to_vec());
            }
        }
        while let Some(Some(_)) = r.early.front() {
            if let Some(Some(msg)) = r.early.pop_front() {
                deliver(msg);
                r.next_recv_id = r.next_recv_id.wrapping_add(1);
            }
        }
        true
    }

    pub(crate) fn queue_reliable(&mut self, msg: &[u8]) -> Result<(), SendError> {
        if msg.len() > MAX_RELIABLE_LEN {
            return Err(SendError::TooLarge);
        }
        let r = self.reliable.get_or_insert_with(Box::default);
        if r.unacked.len() >= RELIABLE_WINDOW {
            return Err(SendError::ReliableQueueFull);
        }
        r.unacked.push_back(OutMsg { id: r.next_send_id, bytes: msg.to_vec(), last_sent: None });
        r.next_send_id = r.next_send_id.wrapping_add(1);
        Ok(())
    }

    /// True when a reliable message waits for its first send or a resend.
    pub(crate) fn reliable_due(&self, now: Instant, resend: Duration) -> bool {
        let resend = at_least_a_tick(resend);
        self.reliable.as_ref().is_some_and(|r| {
            r.unacked.iter().any(|m| m.last_sent.is_none_or(|t| now.saturating_duration_since(t) >= resend))
        })
    }

    /// When an ack or a reliable (re)send is next owed: an instant not after the last packet
    /// sent or received when one is owed already; `None` when neither is pending.
    pub(crate) fn next_reliable_due(&self, resend: Duration) -> Option<Instant> {
        let resend = at_least_a_tick(resend);
        let past = self.last_send.min(self.last_recv);
        let mut due = self.ack_due.then_some(past);
        if let Some(r) = self.reliable.as_ref() {
            for m in &r.unacked {
                let t = m.last_sent.map_or(past, |t| super::server::later(t, resend));
                due = Some(due.map_or(t, |d: Instant| d.min(t)));
            }
        }
        due
    }

    /// True when a queued reliable message was never sent.
    pub(crate) fn has_unsent_reliable(&self) -> bool {
        self.reliable.as_ref().is_some_and(|r| r.unacked.iter().any(|m| m.last_sent.is_none()))
    }

    /// Unacknowledged reliable messages waiting.
    pub(crate) fn reliable_in_flight(&self) -> usize {
        self.reliable.as_ref().map_or(0, |r| r.unacked.len())
    }

    /// Encodes a data packet: due reliable frames, then `payload`. Returns its length.
    pub(crate) fn encode_data(
        &mut self,
        now: Instant,
        resend: Duration,
        connection_id: u64,
        payload: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, SendError> {
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(SendError::TooLarge);
        }
        self.encode_with(
            now,
            resend,
            MAX_PACKET_LEN - DATA_HEADER_LEN - payload.len(),
            |seq, ack, reliable| {
                Packet::Data { connection_id, seq, ack, reliable, payload }
                    .encode(buf)
                    .map_err(|_| SendError::BufferTooSmall)
            },
        )
    }

    /// Picks the due reliable frames that fit in `room` bytes and hands them, with the next
    /// sequence number and the ack state, to `write`; on success takes the sequence number
    /// and marks the frames sent. Shared by the data packet and the netcode payload layer.
    pub(crate) fn encode_with(
        &mut self,
        now: Instant,
        resend: Duration,
        mut room: usize,
        write: impl FnOnce(u32, AckHeader, ReliableFrames<'_>) -> Result<usize, SendError>,
    ) -> Result<usize, SendError> {
        // Taken for real only once the packet is written: a failed encode burns nothing.
        let seq = self.peek_seq()?;
        let resend = at_least_a_tick(resend);
        let ack = self.ack_header();
        let mut picked = [usize::MAX; MAX_RELIABLE_PER_PACKET];
        let mut n = 0;
        if let Some(r) = self.reliable.as_ref() {
            for (i, m) in r.unacked.iter().enumerate() {
                if n == MAX_RELIABLE_PER_PACKET {
                    break;
                }
                let due = m.last_sent.is_none_or(|t| now.saturating_duration_since(t) >= resend);
                let need = RELIABLE_HEADER_LEN + m.bytes.len();
                if due && need <= room {
                    picked[n] = i;
                    n += 1;
                    room -= need;
                }
            }
        }
        let len = {
            let mut frames = ReliableFrames::new();
            if let Some(r) = self.reliable.as_ref() {
                for &i in &picked[..n] {
                    if let Some(m) = r.unacked.get(i) {
                        let _ = frames.push(ReliableFrame { id: m.id, bytes: &m.bytes });
                    }
                }
            }
            write(seq, ack, frames)?
        };
        self.take_seq()?;
        if let Some(r) = self.reliable.as_mut() {
            for &i in &picked[..n] {
                if let Some(m) = r.unacked.get_mut(i) {
                    m.last_sent = Some(now);
                }
            }
        }
        self.last_send = now;
        self.ack_due = false;
        Ok(len)
    }
}

/// A resend or keep-alive interval of zero means "whenever time has moved on": sending again
/// at the same `now` would never let a `poll_transmit` loop end.
pub(crate) fn at_least_a_tick(d: Duration) -> Duration {
    d.max(Duration::from_nanos(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_window() {
        let mut l = Link::new(Instant::now());
        assert_eq!(l.accept_seq(5), Ok(()));
        assert_eq!(l.accept_seq(5), Err(DropReason::Replayed));
        assert_eq!(l.accept_seq(3), Ok(()));
        assert_eq!(l.accept_seq(3), Err(DropReason::Replayed));
        assert_eq!(l.ack_header().ack, 5);
        assert_eq!(l.ack_header().ack_bits, 0b10);
        assert_eq!(l.accept_seq(40), Ok(()));
        assert_eq!(l.accept_seq(7), Err(DropReason::Stale));
        assert_eq!(l.accept_seq(8), Ok(()));
        assert_eq!(l.accept_seq(0), Err(DropReason::Malformed));
        assert_eq!(l.accept_seq(u32::MAX), Ok(()));
        assert_eq!(l.accept_seq(40), Err(DropReason::Stale));
    }
}
