//! Data packets and the reliable channel: payload bounds, sequence numbers, ack bitfields,
//! cumulative reliable acks, the reliable window, resends, buffering out of order, delivery
//! exactly once and in order on a hostile link, and back-pressure instead of loss.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use pvp_core::PlayerId;
use pvp_net::proto::packet::{AckHeader, ReliableFrames};
use pvp_net::proto::*;

use super::exact::{self, NS};
use crate::common::{MS, client_addr, connected_pair, pump, server_addr};

#[test]
fn unreliable_payload_boundaries_both_ways() {
    let now = Instant::now();
    let (mut s, mut c, conn) = connected_pair(now, 1);
    let mut buf = [0u8; MAX_PACKET_LEN];
    let max = vec![0xabu8; MAX_PAYLOAD_LEN];
    let t = c.send(now, &max, &mut buf).unwrap();
    assert_eq!(t.len, MAX_PACKET_LEN);
    assert_eq!(t.destination, server_addr());
    let got = s.handle_datagram(now, client_addr(), &buf[..t.len]).unwrap();
    assert_eq!(got.payload, &max[..]);
    assert_eq!(got.connection, conn);
    assert_eq!(got.player, PlayerId::new(101));
    let over = vec![0u8; MAX_PAYLOAD_LEN + 1];
    assert_eq!(c.send(now, &over, &mut buf), Err(SendError::TooLarge));
    assert_eq!(s.send(now, conn, &over, &mut buf), Err(SendError::TooLarge));
    // Empty payload: a keep-alive, accepted but nothing handed to the game.
    let t = c.send(now, &[], &mut buf).unwrap();
    assert!(s.handle_datagram(now, client_addr(), &buf[..t.len]).is_none());
    assert_eq!(s.drops().total(), 0);
    let t = s.send(now, conn, &max, &mut buf).unwrap();
    assert_eq!(t.destination, client_addr());
    assert_eq!(c.handle_datagram(now, server_addr(), &buf[..t.len]), Some(&max[..]));
    assert_eq!(s.send(now, ConnectionId(conn.0 ^ 1), b"x", &mut buf), Err(SendError::NotConnected));
}

#[test]
fn small_buffer_send_fails_without_burning_state() {
    let now = Instant::now();
    let (mut s, mut c, _conn) = connected_pair(now, 1);
    let mut small = [0u8; 8];
    let mut buf = [0u8; MAX_PACKET_LEN];
    for _ in 0..3 {
        assert_eq!(c.send(now, b"hello", &mut small), Err(SendError::BufferTooSmall));
    }
    // The next packet is the next sequence number: no gap the server sees as loss.
    let t = c.send(now, b"hello", &mut buf).unwrap();
    match Packet::decode(&buf[..t.len]).unwrap() {
        Packet::Data { seq, .. } => assert_eq!(seq, 1),
        p => panic!("not data: {p:?}"),
    }
    assert_eq!(s.handle_datagram(now, client_addr(), &buf[..t.len]).map(|r| r.payload), Some(&b"hello"[..]));
}

// ---------------------------------------------------------------------------------------------
// Sequence numbers and acks

#[test]
fn server_ack_bitfield_names_exactly_the_received_sequences() {
    let now = Instant::now();
    let (mut s, _c, conn) = exact::pair(now);
    let received = [2u32, 5, 9, 30, 40, 41];
    for &seq in &[9u32, 2, 5, 30, 41, 40] {
        s.handle_datagram(now, exact::client_addr(), &exact::data(conn, seq, b"p")).unwrap();
    }
    let mut buf = [0u8; MAX_PACKET_LEN];
    let t = s.send(now, conn, b"x", &mut buf).unwrap();
    let ack = exact::ack_of(&buf[..t.len]);
    assert_eq!(ack.ack, 41);
    // Exactly the documented set: bit i <=> ack - 1 - i received (within 32 back).
    for i in 0..32u32 {
        let seq = 41 - 1 - i;
        let set = ack.ack_bits & (1 << i) != 0;
        assert_eq!(set, received.contains(&seq), "bit {i} (seq {seq})");
    }
    // 2 and 5 are more than 32 behind 41: a late copy is stale, not replayed.
    let before = s.drops().get(DropReason::Stale);
    assert!(s.handle_datagram(now, exact::client_addr(), &exact::data(conn, 3, b"p")).is_none());
    assert_eq!(s.drops().get(DropReason::Stale), before + 1);
    // 39 is inside the window and new: accepted, and the bit appears.
    assert!(s.handle_datagram(now, exact::client_addr(), &exact::data(conn, 39, b"p")).is_some());
    let t = s.send(now, conn, b"x", &mut buf).unwrap();
    let ack = exact::ack_of(&buf[..t.len]);
    assert_eq!((ack.ack, ack.ack_bits & 0b11), (41, 0b11));
}

#[test]
fn a_jump_of_exactly_32_keeps_the_old_newest_as_the_top_bit() {
    let now = Instant::now();
    let (mut s, _c, conn) = exact::pair(now);
    s.handle_datagram(now, exact::client_addr(), &exact::data(conn, 1, b"p")).unwrap();
    s.handle_datagram(now, exact::client_addr(), &exact::data(conn, 33, b"p")).unwrap();
    let mut buf = [0u8; MAX_PACKET_LEN];
    let t = s.send(now, conn, b"x", &mut buf).unwrap();
    let ack = exact::ack_of(&buf[..t.len]);
    assert_eq!((ack.ack, ack.ack_bits), (33, 1 << 31));
    // A jump of 33 forgets it.
    s.handle_datagram(now, exact::client_addr(), &exact::data(conn, 66, b"p")).unwrap();
    let t = s.send(now, conn, b"x", &mut buf).unwrap();
    assert_eq!(exact::ack_of(&buf[..t.len]).ack_bits, 0);
}

#[test]
fn data_sequences_start_at_one_and_a_zero_sequence_is_malformed() {
    let now = Instant::now();
    let (mut s, mut c, conn) = exact::pair(now);
    let mut buf = [0u8; MAX_PACKET_LEN];
    let t = c.send(now, b"a", &mut buf).unwrap();
    match Packet::decode(&buf[..t.len]).unwrap() {
        Packet::Data { seq, .. } => assert_eq!(seq, 1),
        p => panic!("{p:?}"),
    }
    let total = s.drops().total();
    assert!(s.handle_datagram(now, exact::client_addr(), &exact::data(conn, 0, b"p")).is_none());
    assert_eq!(s.drops().get(DropReason::Malformed), 1);
    assert_eq!(s.drops().total(), total + 1);
}

// ---------------------------------------------------------------------------------------------
// Reliable channel

#[test]
fn reliable_queue_bounds_and_ordered_delivery() {
    let now = Instant::now();
    let (mut s, mut c, conn) = connected_pair(now, 1);
    let max = vec![5u8; MAX_RELIABLE_LEN];
    assert_eq!(c.send_reliable(&vec![0u8; MAX_RELIABLE_LEN + 1]), Err(SendError::TooLarge));
    assert_eq!(s.send_reliable(conn, &vec![0u8; MAX_RELIABLE_LEN + 1]), Err(SendError::TooLarge));
    c.send_reliable(&max).unwrap();
    c.send_reliable(&[]).unwrap();
    for i in 2..RELIABLE_WINDOW {
        c.send_reliable(&(i as u32).to_le_bytes()).unwrap();
    }
    assert_eq!(c.send_reliable(b"over"), Err(SendError::ReliableQueueFull));
    assert_eq!(s.send_reliable(ConnectionId(1), b"x"), Err(SendError::NotConnected));
    let mut t = now;
    for _ in 0..50 {
        t += 200 * MS;
        pump(t, &mut s, &mut c, client_addr());
        s.handle_timeout(t);
        c.handle_timeout(t);
    }
    let msgs: Vec<Vec<u8>> = std::iter::from_fn(|| s.poll_event())
        .filter_map(|e| match e {
            ServerEvent::Message { connection, bytes } if connection == conn => Some(bytes),
            _ => None,
        })
        .collect();
    assert_eq!(msgs.len(), RELIABLE_WINDOW);
    assert_eq!(msgs[0], max);
    assert!(msgs[1].is_empty());
    for (i, m) in msgs.iter().enumerate().skip(2) {
        assert_eq!(m, &(i as u32).to_le_bytes());
    }
    assert_eq!(s.session(conn).unwrap().reliable_in_flight, 0);
    // Acked: the window has room again.
    c.send_reliable(b"again").unwrap();
}

/// A deterministic hostile link: loss, duplication and reordering from a fixed seed.
struct Lossy {
    rng: u64,
    q: VecDeque<(u32, SocketAddr, Vec<u8>)>,
}

impl Lossy {
    fn new(seed: u64) -> Self {
        Lossy { rng: seed, q: VecDeque::new() }
    }
    fn next(&mut self) -> u32 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 32) as u32
    }
    fn push(&mut self, to: SocketAddr, bytes: &[u8]) {
        let r = self.next() % 100;
        if r < 25 {
            return; // lost
        }
        let delay = self.next() % 4;
        self.q.push_back((delay, to, bytes.to_vec()));
        if r > 85 {
            let delay = self.next() % 6;
            self.q.push_back((delay, to, bytes.to_vec())); // duplicated
        }
    }
    /// Datagrams whose delay ran out this step, in an order the delays scramble.
    fn due(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        let mut keep = VecDeque::new();
        while let Some((d, to, b)) = self.q.pop_back() {
            if d == 0 { out.push((to, b)) } else { keep.push_front((d - 1, to, b)) }
        }
        self.q = keep;
        out
    }
}

#[test]
fn reliable_messages_arrive_exactly_once_in_order_both_ways_on_a_hostile_link() {
    const N: usize = 400;
    let mut now = Instant::now();
    let (mut s, mut c, conn) = exact::pair(now);
    let mut link = Lossy::new(0x9E37_79B9_7F4A_7C15);
    let (mut c_sent, mut s_sent) = (0usize, 0usize);
    let (mut at_server, mut at_client) = (Vec::new(), Vec::new());
    let mut buf = [0u8; MAX_PACKET_LEN];
    let mut full_seen = false;
    for _step in 0..20_000 {
        now += 5 * MS;
        while c_sent < N {
            match c.send_reliable(format!("c{c_sent}").as_bytes()) {
                Ok(()) => c_sent += 1,
                Err(SendError::ReliableQueueFull) => {
                    full_seen = true;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        while s_sent < N {
            match s.send_reliable(conn, format!("s{s_sent}").as_bytes()) {
                Ok(()) => s_sent += 1,
                Err(SendError::ReliableQueueFull) => break,
                Err(e) => panic!("{e}"),
            }
        }
        while let Some(t) = c.poll_transmit(now, &mut buf) {
            link.push(t.destination, &buf[..t.len]);
        }
        s.handle_timeout(now);
        while let Some(t) = s.poll_transmit(now, &mut buf) {
            link.push(t.destination, &buf[..t.len]);
        }
        for (to, bytes) in link.due() {
            if to == exact::server_addr() {
                s.handle_datagram(now, exact::client_addr(), &bytes);
            } else {
                c.handle_datagram(now, exact::server_addr(), &bytes);
            }
        }
        c.handle_timeout(now);
        while let Some(e) = s.poll_event() {
            match e {
                ServerEvent::Message { connection, bytes } => {
                    assert_eq!(connection, conn);
                    at_server.push(String::from_utf8(bytes).unwrap());
                }
                e => panic!("unexpected {e:?}"),
            }
        }
        while let Some(e) = c.poll_event() {
            match e {
                ClientEvent::Message(bytes) => at_client.push(String::from_utf8(bytes).unwrap()),
                e => panic!("unexpected {e:?}"),
            }
        }
        if at_server.len() == N && at_client.len() == N && s.session(conn).unwrap().reliable_in_flight == 0 {
            break;
        }
    }
    assert!(full_seen, "the window was never reached; the test is too gentle");
    let want_s: Vec<String> = (0..N).map(|i| format!("c{i}")).collect();
    let want_c: Vec<String> = (0..N).map(|i| format!("s{i}")).collect();
    assert_eq!(at_server, want_s);
    assert_eq!(at_client, want_c);
    assert!(c.is_connected());
    assert!(s.drops().get(DropReason::Replayed) > 0, "duplicates were injected");
}

#[test]
fn a_peer_that_never_acks_fills_the_window_and_gets_resends_at_the_interval() {
    let now = Instant::now();
    let (mut s, _c, conn) = exact::pair(now);
    for i in 0..RELIABLE_WINDOW {
        s.send_reliable(conn, &[i as u8]).unwrap();
    }
    assert_eq!(s.send_reliable(conn, b"one more"), Err(SendError::ReliableQueueFull));
    assert_eq!(s.session(conn).unwrap().reliable_in_flight, RELIABLE_WINDOW);
    let mut buf = [0u8; MAX_PACKET_LEN];
    let count_frames = |s: &mut Server, at: Instant, buf: &mut [u8; MAX_PACKET_LEN]| {
        let mut n = 0;
        while let Some(t) = s.poll_transmit(at, buf) {
            if let Packet::Data { reliable, .. } = Packet::decode(&buf[..t.len]).unwrap() {
                n += reliable.len();
            }
        }
        n
    };
    // First sends: one flush carries at most 8, the rest wait for the next flush.
    let first = count_frames(&mut s, now, &mut buf);
    assert!(first >= 1);
    let resend = s.config().reliable_resend;
    let mut sent = first;
    let mut t = now;
    for _ in 0..8 {
        t += NS;
        s.handle_timeout(t);
        sent += count_frames(&mut s, t, &mut buf);
    }
    assert_eq!(sent, RELIABLE_WINDOW, "every message goes out once before any resend is due");
    // Just before the interval nothing is resent; at it, messages are.
    s.handle_timeout(now + resend - MS);
    assert_eq!(count_frames(&mut s, now + resend - MS, &mut buf), 0);
    s.handle_timeout(now + resend);
    assert!(count_frames(&mut s, now + resend, &mut buf) > 0);
    assert_eq!(s.session(conn).unwrap().reliable_in_flight, RELIABLE_WINDOW);
    assert_eq!(s.send_reliable(conn, b"still full"), Err(SendError::ReliableQueueFull));
}

#[test]
fn unacked_reliable_messages_are_discarded_on_disconnect() {
    let now = Instant::now();
    let (mut s, mut c, conn) = exact::pair(now);
    s.send_reliable(conn, b"never acked").unwrap();
    c.send_reliable(b"also never acked").unwrap();
    assert!(s.disconnect(conn));
    assert_eq!(s.session(conn), None);
    assert_eq!(s.send_reliable(conn, b"x"), Err(SendError::NotConnected));
    // The queued flush for the closed session writes nothing; only the disconnect goes out.
    let mut buf = [0u8; MAX_PACKET_LEN];
    let mut kinds = Vec::new();
    while let Some(t) = s.poll_transmit(now, &mut buf) {
        kinds.push(matches!(Packet::decode(&buf[..t.len]).unwrap(), Packet::Disconnect { .. }));
        c.handle_datagram(now, exact::server_addr(), &buf[..t.len]);
    }
    assert_eq!(kinds, vec![true]);
    assert_eq!(c.poll_event(), Some(ClientEvent::Disconnected(DisconnectReason::Peer)));
    assert_eq!(c.poll_event(), None, "the unacked message is not delivered late");
    assert_eq!(c.send_reliable(b"x"), Err(SendError::NotConnected));
    assert!(matches!(
        s.poll_event(),
        Some(ServerEvent::Disconnected { connection, reason: DisconnectReason::Local, .. }) if connection == conn
    ));
    assert_eq!(s.poll_event(), None);
}

#[test]
fn server_send_reliable_goes_out_with_the_next_poll_transmit_even_beyond_one_packet() {
    let now = Instant::now();
    // Default timer granularity: no sweep is needed to send what was queued.
    let (mut s, mut c, conn) =
        exact::pair_with(now, ServerConfig::new(exact::key(), exact::server_addr()), ClientConfig::default());
    for i in 0..RELIABLE_WINDOW {
        s.send_reliable(conn, &[i as u8; 100]).unwrap();
    }
    let mut buf = [0u8; MAX_PACKET_LEN];
    let mut frames = 0;
    let mut packets = 0;
    while let Some(t) = s.poll_transmit(now, &mut buf) {
        packets += 1;
        assert!(packets <= RELIABLE_WINDOW, "bounded");
        if let Packet::Data { reliable, .. } = Packet::decode(&buf[..t.len]).unwrap() {
            frames += reliable.len();
        }
        c.handle_datagram(now, exact::server_addr(), &buf[..t.len]);
    }
    assert_eq!(frames, RELIABLE_WINDOW);
    let mut got = 0;
    while let Some(ClientEvent::Message(m)) = c.poll_event() {
        assert_eq!(m, vec![got as u8; 100]);
        got += 1;
    }
    assert_eq!(got, RELIABLE_WINDOW);
}

fn reliable_data(conn: ConnectionId, seq: u32, reliable_ack: u32, frames: &[(u32, &[u8])]) -> Vec<u8> {
    use pvp_net::proto::packet::ReliableFrame;
    let mut rf = ReliableFrames::new();
    for &(id, bytes) in frames {
        rf.push(ReliableFrame { id, bytes }).unwrap();
    }
    let mut buf = [0u8; MAX_PACKET_LEN];
    let ack = AckHeader { ack: 0, ack_bits: 0, reliable_ack };
    let n = Packet::Data { connection_id: conn.0, seq, ack, reliable: rf, payload: &[] }
        .encode(&mut buf)
        .unwrap();
    buf[..n].to_vec()
}

fn messages(s: &mut Server) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    while let Some(e) = s.poll_event() {
        match e {
            ServerEvent::Message { bytes, .. } => v.push(bytes),
            e => panic!("{e:?}"),
        }
    }
    v
}

#[test]
fn receiver_buffers_the_window_out_of_order_and_ignores_frames_beyond_it() {
    let now = Instant::now();
    let (mut s, _c, conn) = exact::pair(now);
    let last = RELIABLE_WINDOW as u32 - 1;
    let beyond = RELIABLE_WINDOW as u32;
    // The last id inside the window is held; the first id beyond it is not.
    s.handle_datagram(now, exact::client_addr(), &reliable_data(conn, 1, 0, &[(last, b"L"), (beyond, b"B")]));
    assert!(messages(&mut s).is_empty());
    // Duplicate frames in one packet and across packets deliver once.
    s.handle_datagram(
        now,
        exact::client_addr(),
        &reliable_data(conn, 2, 0, &[(1, b"1"), (1, b"1"), (0, b"0")]),
    );
    assert_eq!(messages(&mut s), vec![b"0".to_vec(), b"1".to_vec()]);
    s.handle_datagram(now, exact::client_addr(), &reliable_data(conn, 3, 0, &[(0, b"0"), (1, b"1")]));
    assert!(messages(&mut s).is_empty());
    let mut seq = 4;
    for chunk in (2..last).collect::<Vec<_>>().chunks(8) {
        let bodies: Vec<Vec<u8>> = chunk.iter().map(|i| i.to_string().into_bytes()).collect();
        let frames: Vec<(u32, &[u8])> = chunk.iter().zip(&bodies).map(|(&i, b)| (i, &b[..])).collect();
        s.handle_datagram(now, exact::client_addr(), &reliable_data(conn, seq, 0, &frames));
        seq += 1;
    }
    let got = messages(&mut s);
    assert_eq!(got.len(), RELIABLE_WINDOW - 2);
    assert_eq!(got.last().unwrap(), b"L");
    // The one beyond was dropped, so it must be resent, and then it is delivered.
    s.handle_datagram(now, exact::client_addr(), &reliable_data(conn, seq, 0, &[(beyond, b"B")]));
    assert_eq!(messages(&mut s), vec![b"B".to_vec()]);
    // The server's cumulative ack says so.
    let mut buf = [0u8; MAX_PACKET_LEN];
    let t = s.send(now, conn, b"", &mut buf).unwrap();
    assert_eq!(exact::ack_of(&buf[..t.len]).reliable_ack, beyond + 1);
}

#[test]
fn a_cumulative_ack_beyond_what_was_sent_is_ignored() {
    let now = Instant::now();
    let (mut s, _c, conn) = exact::pair(now);
    for m in [b"a", b"b", b"c"] {
        s.send_reliable(conn, m).unwrap();
    }
    s.handle_datagram(now, exact::client_addr(), &reliable_data(conn, 1, 4, &[]));
    assert_eq!(s.session(conn).unwrap().reliable_in_flight, 3, "ack of 4 > 3 sent is a lie");
    s.handle_datagram(now, exact::client_addr(), &reliable_data(conn, 2, 2, &[]));
    assert_eq!(s.session(conn).unwrap().reliable_in_flight, 1);
    s.handle_datagram(now, exact::client_addr(), &reliable_data(conn, 3, 3, &[]));
    assert_eq!(s.session(conn).unwrap().reliable_in_flight, 0);
    // An older ack arriving late changes nothing.
    s.handle_datagram(now, exact::client_addr(), &reliable_data(conn, 4, 1, &[]));
    assert_eq!(s.session(conn).unwrap().reliable_in_flight, 0);
}

#[test]
fn a_game_that_does_not_drain_events_loses_no_reliable_message() {
    let mut now = Instant::now();
    let mut cfg = exact::config();
    cfg.max_sessions = 1; // smallest event bound: 2 * 1 + 1024
    let (mut s, mut c, _conn) = exact::pair_with(now, cfg, ClientConfig::default());
    const N: usize = 1500;
    let mut sent = 0;
    let mut buf = [0u8; MAX_PACKET_LEN];
    let mut got = Vec::new();
    let mut stalled = false;
    for round in 0..2000 {
        now += 5 * MS;
        while sent < N && c.send_reliable(&(sent as u32).to_le_bytes()).is_ok() {
            sent += 1;
        }
        while let Some(t) = c.poll_transmit(now, &mut buf) {
            s.handle_datagram(now, exact::client_addr(), &buf[..t.len]);
        }
        s.handle_timeout(now);
        while let Some(t) = s.poll_transmit(now, &mut buf) {
            c.handle_datagram(now, exact::server_addr(), &buf[..t.len]);
        }
        // The game drains only after the event queue filled up.
        if round == 600 {
            // Held back, not dropped: the sender could not queue everything.
            stalled = sent < N;
            assert!(s.stats().sessions == 1);
        }
        if round >= 600 {
            got.extend(messages(&mut s));
        }
        if got.len() == N {
            break;
        }
    }
    assert!(stalled, "the sender felt the back-pressure");
    assert_eq!(got.len(), N);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m[..], (i as u32).to_le_bytes()[..], "message {i}");
    }
}
