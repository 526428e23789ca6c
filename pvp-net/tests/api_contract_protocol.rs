//! A second, deeper audit of the sans-IO session protocol and the UDP server's lifecycle:
//! exact timer boundaries, ack bitfields, reliable delivery under a hostile link, single
//! events, counted drops, and start / stop of the real server on loopback.

#[path = "shared_support/mod.rs"]
mod support;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pvp_core::{MatchId, PlayerId};
use pvp_net::DriverChoice;
use pvp_net::endpoint::{UdpServer, UdpServerConfig};
use pvp_net::proto::packet::{AckHeader, ReliableFrames};
use pvp_net::proto::*;
use support::{
    UNIX, claims_for, connect_request, flush_client, handshake, pump, request_and_answer_challenge,
};

const MS: Duration = Duration::from_millis(1);
const NS: Duration = Duration::from_nanos(1);

fn server_addr() -> SocketAddr {
    "127.0.0.1:7100".parse().unwrap()
}

fn client_addr() -> SocketAddr {
    "127.0.0.1:6100".parse().unwrap()
}

fn key() -> TokenKey {
    TokenKey::from_bytes([4; 32])
}

fn claims(token_id: u64) -> TokenClaims {
    claims_for(token_id, MatchId::new(8), PlayerId::new(token_id + 1000), server_addr())
}

fn config() -> ServerConfig {
    let mut c = ServerConfig::new(key(), server_addr());
    c.timer_granularity = NS;
    c
}

fn pair_with(now: Instant, cfg: ServerConfig, ccfg: ClientConfig) -> (Server, Client, ConnectionId) {
    let mut s = Server::new(cfg, now, UNIX).unwrap();
    let mut c = Client::new(ccfg, key().issue(&claims(1)), now).unwrap();
    let conn = handshake(now, &mut s, &mut c, client_addr());
    assert_eq!(s.poll_event(), None);
    assert_eq!(c.poll_event(), Some(ClientEvent::Connected(conn)));
    assert_eq!(c.poll_event(), None);
    (s, c, conn)
}

fn pair(now: Instant) -> (Server, Client, ConnectionId) {
    pair_with(now, config(), ClientConfig::default())
}

fn data(conn: ConnectionId, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut buf = [0u8; MAX_PACKET_LEN];
    let n = Packet::Data {
        connection_id: conn.0,
        seq,
        ack: AckHeader::default(),
        reliable: ReliableFrames::new(),
        payload,
    }
    .encode(&mut buf)
    .unwrap();
    buf[..n].to_vec()
}

fn ack_of(bytes: &[u8]) -> AckHeader {
    match Packet::decode(bytes).unwrap() {
        Packet::Data { ack, .. } => ack,
        p => panic!("not data: {p:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Acks

#[test]
fn server_ack_bitfield_names_exactly_the_received_sequences() {
    let now = Instant::now();
    let (mut s, _c, conn) = pair(now);
    let received = [2u32, 5, 9, 30, 40, 41];
    for &seq in &[9u32, 2, 5, 30, 41, 40] {
        s.handle_datagram(now, client_addr(), &data(conn, seq, b"p")).unwrap();
    }
    let mut buf = [0u8; MAX_PACKET_LEN];
    let t = s.send(now, conn, b"x", &mut buf).unwrap();
    let ack = ack_of(&buf[..t.len]);
    assert_eq!(ack.ack, 41);
    // Exactly the documented set: bit i <=> ack - 1 - i received (within 32 back).
    for i in 0..32u32 {
        let seq = 41 - 1 - i;
        let set = ack.ack_bits & (1 << i) != 0;
        assert_eq!(set, received.contains(&seq), "bit {i} (seq {seq})");
    }
    // 2 and 5 are more than 32 behind 41: a late copy is stale, not replayed.
    let before = s.drops().get(DropReason::Stale);
    assert!(s.handle_datagram(now, client_addr(), &data(conn, 3, b"p")).is_none());
    assert_eq!(s.drops().get(DropReason::Stale), before + 1);
    // 39 is inside the window and new: accepted, and the bit appears.
    assert!(s.handle_datagram(now, client_addr(), &data(conn, 39, b"p")).is_some());
    let t = s.send(now, conn, b"x", &mut buf).unwrap();
    let ack = ack_of(&buf[..t.len]);
    assert_eq!((ack.ack, ack.ack_bits & 0b11), (41, 0b11));
}

#[test]
fn a_jump_of_exactly_32_keeps_the_old_newest_as_the_top_bit() {
    let now = Instant::now();
    let (mut s, _c, conn) = pair(now);
    s.handle_datagram(now, client_addr(), &data(conn, 1, b"p")).unwrap();
    s.handle_datagram(now, client_addr(), &data(conn, 33, b"p")).unwrap();
    let mut buf = [0u8; MAX_PACKET_LEN];
    let t = s.send(now, conn, b"x", &mut buf).unwrap();
    let ack = ack_of(&buf[..t.len]);
    assert_eq!((ack.ack, ack.ack_bits), (33, 1 << 31));
    // A jump of 33 forgets it.
    s.handle_datagram(now, client_addr(), &data(conn, 66, b"p")).unwrap();
    let t = s.send(now, conn, b"x", &mut buf).unwrap();
    assert_eq!(ack_of(&buf[..t.len]).ack_bits, 0);
}

#[test]
fn data_sequences_start_at_one_and_a_zero_sequence_is_malformed() {
    let now = Instant::now();
    let (mut s, mut c, conn) = pair(now);
    let mut buf = [0u8; MAX_PACKET_LEN];
    let t = c.send(now, b"a", &mut buf).unwrap();
    match Packet::decode(&buf[..t.len]).unwrap() {
        Packet::Data { seq, .. } => assert_eq!(seq, 1),
        p => panic!("{p:?}"),
    }
    let total = s.drops().total();
    assert!(s.handle_datagram(now, client_addr(), &data(conn, 0, b"p")).is_none());
    assert_eq!(s.drops().get(DropReason::Malformed), 1);
    assert_eq!(s.drops().total(), total + 1);
}

// ---------------------------------------------------------------------------------------------
// Reliable channel

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
    let (mut s, mut c, conn) = pair(now);
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
            if to == server_addr() {
                s.handle_datagram(now, client_addr(), &bytes);
            } else {
                c.handle_datagram(now, server_addr(), &bytes);
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
    let (mut s, _c, conn) = pair(now);
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
    let (mut s, mut c, conn) = pair(now);
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
        c.handle_datagram(now, server_addr(), &buf[..t.len]);
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

// ---------------------------------------------------------------------------------------------
// Client timers

#[test]
fn client_poll_timeout_is_due_when_an_ack_or_a_first_reliable_send_is_owed() {
    let now = Instant::now();
    let (mut s, mut c, conn) = pair(now);
    let mut buf = [0u8; MAX_PACKET_LEN];
    // The client just sent (the handshake's last packet); now it queues a reliable message.
    let t1 = now + 10 * MS;
    c.send(t1, b"", &mut buf).unwrap();
    c.send_reliable(b"hello").unwrap();
    let due = c.poll_timeout().unwrap();
    assert!(due <= t1, "a first send is due now, poll_timeout said {:?} later", due - t1);
    assert!(c.poll_transmit(t1, &mut buf).is_some());

    // An ack is owed after a reliable message arrives.
    let t2 = t1 + 20 * MS;
    c.send(t2, b"", &mut buf).unwrap();
    s.send_reliable(conn, b"to client").unwrap();
    let t = s.poll_transmit(t2, &mut buf).unwrap();
    c.handle_datagram(t2, server_addr(), &buf[..t.len]);
    assert_eq!(c.poll_event(), Some(ClientEvent::Message(b"to client".to_vec())));
    let due = c.poll_timeout().unwrap();
    assert!(due <= t2, "an ack is owed now, poll_timeout said {:?} later", due - t2);
    let t = c.poll_transmit(t2, &mut buf).unwrap();
    assert_eq!(ack_of(&buf[..t.len]).reliable_ack, 1);
}

#[test]
fn client_poll_timeout_names_the_resend_of_the_oldest_message() {
    let now = Instant::now();
    let (_s, mut c, _conn) = pair(now);
    let mut buf = [0u8; MAX_PACKET_LEN];
    let resend = ClientConfig::default().reliable_resend;
    c.send_reliable(b"m").unwrap();
    assert!(c.poll_transmit(now, &mut buf).is_some());
    // An unreliable send later moves `last_send`, but the message is still due at now+resend.
    c.send(now + 50 * MS, b"u", &mut buf).unwrap();
    let due = c.poll_timeout().unwrap();
    assert!(due <= now + resend, "resend due at +100ms, poll_timeout said +{:?}", due - now);
    assert!(c.poll_transmit(now + resend - NS, &mut buf).is_none());
    assert!(c.poll_transmit(now + resend, &mut buf).is_some());
}

#[test]
fn client_keepalive_and_idle_timeout_at_the_exact_boundary() {
    let now = Instant::now();
    let cfg = ClientConfig::default();
    let (_s, mut c, _conn) = pair(now);
    let mut buf = [0u8; MAX_PACKET_LEN];
    assert!(c.poll_transmit(now + cfg.keepalive_interval - NS, &mut buf).is_none());
    let t = c.poll_transmit(now + cfg.keepalive_interval, &mut buf).unwrap();
    match Packet::decode(&buf[..t.len]).unwrap() {
        Packet::Data { payload, reliable, .. } => assert!(payload.is_empty() && reliable.is_empty()),
        p => panic!("{p:?}"),
    }
    assert!(c.poll_transmit(now + cfg.keepalive_interval, &mut buf).is_none(), "one keep-alive");
    c.handle_timeout(now + cfg.idle_timeout - NS);
    assert!(c.is_connected());
    c.handle_timeout(now + cfg.idle_timeout);
    assert_eq!(c.state(), ClientState::Disconnected(DisconnectReason::TimedOut));
    assert_eq!(c.poll_event(), Some(ClientEvent::Disconnected(DisconnectReason::TimedOut)));
    c.handle_timeout(now + cfg.idle_timeout * 2);
    assert_eq!(c.poll_event(), None, "one event");
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn client_handshake_timeout_at_the_exact_boundary_and_resends_at_the_interval() {
    let now = Instant::now();
    let cfg = ClientConfig::default();
    let mut c = Client::new(cfg.clone(), key().issue(&claims(5)), now).unwrap();
    let mut buf = [0u8; MAX_PACKET_LEN];
    assert!(c.poll_transmit(now, &mut buf).is_some());
    assert!(c.poll_transmit(now, &mut buf).is_none());
    assert!(c.poll_transmit(now + cfg.handshake_resend - NS, &mut buf).is_none());
    assert!(c.poll_transmit(now + cfg.handshake_resend, &mut buf).is_some());
    c.handle_timeout(now + cfg.handshake_timeout - NS);
    assert_eq!(c.state(), ClientState::Connecting);
    c.handle_timeout(now + cfg.handshake_timeout);
    assert_eq!(c.poll_event(), Some(ClientEvent::Disconnected(DisconnectReason::HandshakeTimedOut)));
    assert_eq!(c.poll_event(), None);
    assert!(c.poll_transmit(now + cfg.handshake_timeout, &mut buf).is_none());
}

// ---------------------------------------------------------------------------------------------
// Server timers

#[test]
fn server_keepalive_and_idle_timeout_at_the_exact_boundary() {
    let now = Instant::now();
    let (mut s, _c, conn) = pair(now);
    let ka = s.config().keepalive_interval;
    let idle = s.config().idle_timeout;
    let mut buf = [0u8; MAX_PACKET_LEN];
    // The handshake's Accepted is a control packet; the session's last data send is `now`.
    s.handle_timeout(now + ka - NS);
    assert!(s.poll_transmit(now + ka - NS, &mut buf).is_none());
    s.handle_timeout(now + ka);
    let t = s.poll_transmit(now + ka, &mut buf).unwrap();
    assert!(matches!(Packet::decode(&buf[..t.len]).unwrap(), Packet::Data { payload: [], .. }));
    assert!(s.poll_transmit(now + ka, &mut buf).is_none(), "one keep-alive");
    s.handle_timeout(now + idle - NS);
    assert_eq!(s.session_count(), 1);
    s.handle_timeout(now + idle);
    assert_eq!(s.session_count(), 0);
    assert!(matches!(
        s.poll_event(),
        Some(ServerEvent::Disconnected { connection, reason: DisconnectReason::TimedOut, .. }) if connection == conn
    ));
    assert_eq!(s.poll_event(), None);
    assert_eq!((s.stats().timeouts, s.stats().sessions_closed), (1, 1));
    s.handle_timeout(now + idle * 3);
    assert_eq!(s.poll_event(), None);
}

#[test]
fn a_valid_packet_pushes_the_idle_deadline() {
    let now = Instant::now();
    let (mut s, _c, conn) = pair(now);
    let idle = s.config().idle_timeout;
    let t = now + idle - MS;
    s.handle_datagram(t, client_addr(), &data(conn, 1, b"")).ok_or(()).unwrap_err();
    s.handle_timeout(now + idle);
    assert_eq!(s.session_count(), 1);
    assert_eq!(s.session(conn).unwrap().last_recv, t);
    // A replayed packet does not.
    s.handle_datagram(t + idle - MS, client_addr(), &data(conn, 1, b""));
    s.handle_timeout(t + idle);
    assert_eq!(s.session_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Tokens and handshakes

#[test]
fn token_expiry_boundary_follows_the_server_clock() {
    let now = Instant::now();
    let mut s = Server::new(config(), now, UNIX).unwrap();
    let mut cl = claims(7);
    cl.expires_at_unix_ms = UNIX.as_millis() as u64 + 1000;
    let req = connect_request(&key().issue(&cl));
    let mut buf = [0u8; MAX_PACKET_LEN];
    s.handle_datagram(now + 1000 * MS, client_addr(), &req);
    assert_eq!(s.drops().get(DropReason::TokenExpired), 1);
    assert!(s.poll_transmit(now, &mut buf).is_none());
    s.handle_datagram(now + 999 * MS, client_addr(), &req);
    assert_eq!(s.drops().total(), 1);
    assert_eq!(s.stats().pending, 1);
    assert!(s.poll_transmit(now, &mut buf).is_some());
}

#[test]
fn a_token_for_the_same_ip_but_another_port_is_refused() {
    let now = Instant::now();
    let mut s = Server::new(config(), now, UNIX).unwrap();
    let mut cl = claims(8);
    cl.server_addr = "127.0.0.1:7101".parse().unwrap();
    s.handle_datagram(now, client_addr(), &connect_request(&key().issue(&cl)));
    cl.server_addr = "127.0.0.2:7100".parse().unwrap();
    s.handle_datagram(now, client_addr(), &connect_request(&key().issue(&cl)));
    assert_eq!(s.drops().get(DropReason::TokenWrongServer), 2);
    assert_eq!(s.drops().total(), 2);
    assert_eq!(s.stats().pending, 0);
}

#[test]
fn shared_ledger_counts_one_replay_and_opens_one_session_in_all() {
    let now = Instant::now();
    let ledger = TokenLedger::new(16);
    let mk = || {
        let mut c = config();
        c.ledger = Some(ledger.clone());
        Server::new(c, now, UNIX).unwrap()
    };
    let (mut a, mut b) = (mk(), mk());
    let token = key().issue(&claims(11));
    let mut ca = Client::new(ClientConfig::default(), token, now).unwrap();
    let mut cb = Client::new(ClientConfig::default(), token, now).unwrap();
    let other: SocketAddr = "127.0.0.1:6200".parse().unwrap();
    // Both handshakes get as far as the challenge before either completes.
    let mut buf = [0u8; MAX_PACKET_LEN];
    let t = ca.poll_transmit(now, &mut buf).unwrap();
    a.handle_datagram(now, client_addr(), &buf[..t.len]);
    let t = cb.poll_transmit(now, &mut buf).unwrap();
    b.handle_datagram(now, other, &buf[..t.len]);
    pump(now, &mut a, &mut ca, client_addr());
    pump(now, &mut b, &mut cb, other);
    assert!(ca.is_connected());
    assert!(!cb.is_connected());
    assert_eq!(b.drops().get(DropReason::TokenReplayed), 1);
    assert_eq!(b.stats().sessions_opened + a.stats().sessions_opened, 1);
    assert_eq!(ledger.len(), 1);
    assert_eq!(b.stats().pending, 0, "the refused handshake is forgotten");
}

#[test]
fn pending_bound_counts_each_refused_request_once() {
    let now = Instant::now();
    let mut cfg = config();
    cfg.max_pending = 3;
    let mut s = Server::new(cfg, now, UNIX).unwrap();
    for id in 0..10u64 {
        s.handle_datagram(now, client_addr(), &connect_request(&key().issue(&claims(100 + id))));
    }
    assert_eq!(s.stats().pending, 3);
    assert_eq!(s.drops().get(DropReason::PendingFull), 7);
    assert_eq!(s.drops().total(), 7);
    let mut buf = [0u8; MAX_PACKET_LEN];
    let mut challenges = 0;
    while s.poll_transmit(now, &mut buf).is_some() {
        challenges += 1;
    }
    assert_eq!(challenges, 3);
    // Once the handshakes expire, room returns.
    let later = now + s.config().handshake_timeout;
    s.handle_datagram(later, client_addr(), &connect_request(&key().issue(&claims(200))));
    assert_eq!(s.stats().pending, 1);
    assert_eq!(s.drops().get(DropReason::PendingFull), 7);
}

#[test]
fn full_table_denial_is_counted_once_and_is_no_larger_than_its_request() {
    let now = Instant::now();
    let mut cfg = config();
    cfg.max_sessions = 1;
    let mut s = Server::new(cfg, now, UNIX).unwrap();
    let mut c1 = Client::new(ClientConfig::default(), key().issue(&claims(1)), now).unwrap();
    pump(now, &mut s, &mut c1, client_addr());
    assert!(c1.is_connected());
    let other: SocketAddr = "127.0.0.1:6300".parse().unwrap();
    let mut c2 = Client::new(ClientConfig::default(), key().issue(&claims(2)), now).unwrap();
    let mut buf = [0u8; MAX_PACKET_LEN];
    let mut reply = [0u8; MAX_PACKET_LEN];
    for _ in 0..4 {
        let Some(t) = c2.poll_transmit(now, &mut buf) else { break };
        s.handle_datagram(now, other, &buf[..t.len]);
        while let Some(r) = s.poll_transmit(now, &mut reply) {
            assert!(r.len <= t.len, "reply {} > request {}", r.len, t.len);
            c2.handle_datagram(now, server_addr(), &reply[..r.len]);
        }
    }
    assert_eq!(c2.state(), ClientState::Disconnected(DisconnectReason::Denied(DenyReason::ServerFull)));
    assert_eq!(s.stats().denied_full, 1);
    assert_eq!(s.session_count(), 1);
    assert_eq!(
        c2.poll_event(),
        Some(ClientEvent::Disconnected(DisconnectReason::Denied(DenyReason::ServerFull)))
    );
    assert_eq!(c2.poll_event(), None);
}

#[test]
fn every_handshake_reply_is_no_larger_than_its_request_including_resends() {
    let now = Instant::now();
    let mut s = Server::new(config(), now, UNIX).unwrap();
    let mut c = Client::new(ClientConfig::default(), key().issue(&claims(3)), now).unwrap();
    let mut buf = [0u8; MAX_PACKET_LEN];
    let mut reply = [0u8; MAX_PACKET_LEN];
    let mut t = now;
    let mut replies = 0;
    // Resend every handshake packet several times (answers dropped half the time).
    for i in 0..30 {
        t += ClientConfig::default().handshake_resend;
        while let Some(req) = c.poll_transmit(t, &mut buf) {
            s.handle_datagram(t, client_addr(), &buf[..req.len]);
            while let Some(r) = s.poll_transmit(t, &mut reply) {
                replies += 1;
                assert!(r.len <= req.len, "reply {} > request {}", r.len, req.len);
                if i % 2 == 1 {
                    c.handle_datagram(t, server_addr(), &reply[..r.len]);
                }
            }
        }
        // Resend a stale connect request too, after the session opened.
        if c.is_connected() {
            let req = connect_request(&key().issue(&claims(3)));
            s.handle_datagram(t, client_addr(), &req);
            while let Some(r) = s.poll_transmit(t, &mut reply) {
                assert!(r.len <= req.len());
                assert!(matches!(Packet::decode(&reply[..r.len]).unwrap(), Packet::Accepted { .. }));
            }
            break;
        }
    }
    assert!(c.is_connected());
    assert!(replies >= 2);
    assert_eq!(s.stats().sessions_opened, 1);
}

// ---------------------------------------------------------------------------------------------
// Drops and events

#[test]
fn each_bad_packet_is_counted_once_under_its_reason_and_nothing_else_changes() {
    let now = Instant::now();
    let (mut s, mut c, conn) = pair(now);
    let stranger: SocketAddr = "127.0.0.1:6999".parse().unwrap();
    let mut challenge = [0u8; MAX_PACKET_LEN];
    let n = Packet::Challenge { token_id: 1, challenge: [0; 16] }.encode(&mut challenge).unwrap();
    let mut resp = [0u8; MAX_PACKET_LEN];
    let rn = Packet::ChallengeResponse { token_id: 77, challenge: [0; 16] }.encode(&mut resp).unwrap();
    let mut forged = connect_request(&key().issue(&claims(50)));
    forged[20] ^= 1;
    let cases: Vec<(Vec<u8>, SocketAddr, DropReason)> = vec![
        (vec![], client_addr(), DropReason::Truncated),
        (vec![0u8; MAX_PACKET_LEN + 1], client_addr(), DropReason::Oversized),
        (challenge[..n].to_vec(), client_addr(), DropReason::Unexpected),
        (resp[..rn].to_vec(), client_addr(), DropReason::BadChallenge),
        (forged, client_addr(), DropReason::BadToken),
        (data(ConnectionId(conn.0 ^ 1), 1, b"x"), client_addr(), DropReason::UnknownConnection),
        (data(conn, 1, b"x"), stranger, DropReason::WrongAddress),
    ];
    for (bytes, from, reason) in cases {
        let before = s.drops().snapshot();
        let stats = s.stats();
        assert!(s.handle_datagram(now, from, &bytes).is_none());
        let after = s.drops().snapshot();
        for ((r, b), (_, a)) in before.iter().zip(after.iter()) {
            let want = if *r == reason { b + 1 } else { *b };
            assert_eq!(*a, want, "{reason:?}: counter {r:?}");
        }
        assert_eq!(s.stats().sessions, stats.sessions);
        assert_eq!(s.stats().pending, stats.pending);
        assert_eq!(s.stats().datagrams_in, stats.datagrams_in + 1);
        let mut buf = [0u8; MAX_PACKET_LEN];
        assert!(s.poll_transmit(now, &mut buf).is_none(), "{reason:?}: no reply");
        assert_eq!(s.poll_event(), None);
    }
    assert_eq!(s.stats().dropped, s.drops().total());
    // The session still works.
    assert!(s.handle_datagram(now, client_addr(), &data(conn, 1, b"ok")).is_some());
    let mut buf = [0u8; MAX_PACKET_LEN];
    let t = c.send(now, b"fine", &mut buf).unwrap();
    // seq 1 was already used by the hand-made packet above: counted as a replay, once.
    assert!(s.handle_datagram(now, client_addr(), &buf[..t.len]).is_none());
    assert_eq!(s.drops().get(DropReason::Replayed), 1);
    // A disconnect from a stranger is refused and counted; the session stays.
    let mut d = [0u8; MAX_PACKET_LEN];
    let dn = Packet::Disconnect { connection_id: conn.0 }.encode(&mut d).unwrap();
    s.handle_datagram(now, stranger, &d[..dn]);
    assert_eq!(s.drops().get(DropReason::WrongAddress), 2);
    assert_eq!(s.session_count(), 1);
}

#[test]
fn client_disconnect_gives_exactly_one_event_on_each_side() {
    let now = Instant::now();
    let (mut s, mut c, conn) = pair(now);
    c.disconnect();
    c.disconnect();
    let sent = flush_client(now, &mut c, &mut s, client_addr(), 2);
    assert_eq!(sent, 2, "told twice");
    assert_eq!(c.poll_event(), Some(ClientEvent::Disconnected(DisconnectReason::Local)));
    assert_eq!(c.poll_event(), None);
    assert!(matches!(
        s.poll_event(),
        Some(ServerEvent::Disconnected { connection, reason: DisconnectReason::Peer, .. }) if connection == conn
    ));
    assert_eq!(s.poll_event(), None);
    assert_eq!(s.drops().get(DropReason::UnknownConnection), 1, "the second copy");
    assert_eq!((s.stats().sessions_opened, s.stats().sessions_closed), (1, 1));
    assert_eq!(c.poll_timeout(), None);
}

// ---------------------------------------------------------------------------------------------
// UdpServer lifecycle (loopback only)

fn drivers() -> Vec<DriverChoice> {
    let mut v = vec![DriverChoice::Epoll];
    let mut c = UdpServerConfig::new("127.0.0.1:0".parse().unwrap());
    c.driver = DriverChoice::IoUring;
    if std::env::var_os("PVP_NET_DRIVER").is_none() && UdpServer::bind(c).is_ok() {
        v.push(DriverChoice::IoUring);
    }
    v
}

fn echo_once(server: &UdpServer) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = [0u8; 64];
    loop {
        assert!(Instant::now() < deadline, "no echo");
        sock.send_to(b"ping", server.local_addr()).unwrap();
        let mut spins = 0;
        while spins < 100_000 {
            if let Some(d) = server.recv() {
                assert_eq!(d.payload(), b"ping");
                server.send(d.reply(b"pong").unwrap()).unwrap();
            }
            if let Ok((n, from)) = sock.recv_from(&mut got) {
                assert_eq!((&got[..n], from), (&b"pong"[..], server.local_addr()));
                return;
            }
            spins += 1;
            std::thread::yield_now();
        }
    }
}

#[test]
fn udp_server_starts_and_stops_repeatedly_on_every_driver() {
    for driver in drivers() {
        for round in 0..3 {
            let mut c = UdpServerConfig::new("127.0.0.1:0".parse().unwrap());
            c.driver = driver;
            c.workers = 1 + round % 2;
            let s = UdpServer::bind(c).unwrap();
            assert_eq!(s.workers(), 1 + round % 2);
            echo_once(&s);
            let st = s.stats();
            assert!(st.rx_packets >= 1 && st.tx_packets <= st.rx_packets);
            s.shutdown().unwrap();
        }
    }
}

#[test]
fn udp_server_dropped_without_shutdown_releases_its_port() {
    for driver in drivers() {
        let mut c = UdpServerConfig::new("127.0.0.1:0".parse().unwrap());
        c.driver = driver;
        let s = UdpServer::bind(c.clone()).unwrap();
        let addr = s.local_addr();
        echo_once(&s);
        drop(s);
        // The workers are joined by drop: the same port binds again.
        c.bind = addr;
        let again = UdpServer::bind(c).unwrap();
        assert_eq!(again.local_addr(), addr);
        echo_once(&again);
        again.shutdown().unwrap();
    }
}

#[test]
fn server_send_reliable_goes_out_with_the_next_poll_transmit_even_beyond_one_packet() {
    let now = Instant::now();
    // Default timer granularity: no sweep is needed to send what was queued.
    let (mut s, mut c, conn) =
        pair_with(now, ServerConfig::new(key(), server_addr()), ClientConfig::default());
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
        c.handle_datagram(now, server_addr(), &buf[..t.len]);
    }
    assert_eq!(frames, RELIABLE_WINDOW);
    let mut got = 0;
    while let Some(ClientEvent::Message(m)) = c.poll_event() {
        assert_eq!(m, vec![got as u8; 100]);
        got += 1;
    }
    assert_eq!(got, RELIABLE_WINDOW);
}

#[test]
fn ledger_marks_a_token_used_only_until_its_expiry() {
    let ledger = TokenLedger::new(4);
    assert_eq!(ledger.try_use(1, 100, 50), Ok(()));
    assert_eq!(ledger.try_use(1, 300, 99), Err(DropReason::TokenReplayed));
    assert_eq!(ledger.try_use(1, 300, 100), Ok(()), "the mark ended at 100");
    assert_eq!(ledger.try_use(1, 400, 299), Err(DropReason::TokenReplayed));
    assert_eq!(ledger.len(), 1);
}

#[test]
fn handler_mode_runs_one_handler_per_worker_ticks_while_idle_and_drops_them_on_stop() {
    use pvp_net::endpoint::{DatagramHandler, Outbox, WorkerInfo};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Echo {
        ticks: Arc<AtomicUsize>,
        dropped: Arc<AtomicUsize>,
    }
    impl DatagramHandler for Echo {
        fn on_datagram(&mut self, _: Instant, from: SocketAddr, data: &[u8], out: &mut Outbox) {
            let _ = out.send(from, data);
        }
        fn on_tick(&mut self, _: Instant, _: &mut Outbox) {
            self.ticks.fetch_add(1, Ordering::Relaxed);
        }
    }
    impl Drop for Echo {
        fn drop(&mut self) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    for driver in drivers() {
        for explicit_shutdown in [true, false] {
            let made = Arc::new(AtomicUsize::new(0));
            let ticks = Arc::new(AtomicUsize::new(0));
            let dropped = Arc::new(AtomicUsize::new(0));
            let mut c = UdpServerConfig::new("127.0.0.1:0".parse().unwrap());
            c.driver = driver;
            c.workers = 2;
            let (m, t, d) = (made.clone(), ticks.clone(), dropped.clone());
            let s = UdpServer::bind_with(c, move |info: WorkerInfo| {
                assert!(info.index < 2);
                m.fetch_add(1, Ordering::Relaxed);
                Echo { ticks: t.clone(), dropped: d.clone() }
            })
            .unwrap();
            assert_eq!(made.load(Ordering::Relaxed), 2, "factory ran once per worker before bind returned");
            // Ticks arrive with no traffic at all.
            let deadline = Instant::now() + Duration::from_secs(10);
            while ticks.load(Ordering::Relaxed) < 4 {
                assert!(Instant::now() < deadline, "no ticks while idle");
                std::thread::yield_now();
            }
            // Echo through the handler.
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            let mut got = [0u8; 16];
            let mut echoed = false;
            for _ in 0..50 {
                sock.send_to(b"hi", s.local_addr()).unwrap();
                if let Ok((n, from)) = sock.recv_from(&mut got) {
                    assert_eq!((&got[..n], from), (&b"hi"[..], s.local_addr()));
                    echoed = true;
                    break;
                }
            }
            assert!(echoed, "{driver:?}: no echo");
            assert!(s.stats().rx_packets >= 1);
            assert_eq!(dropped.load(Ordering::Relaxed), 0);
            if explicit_shutdown {
                s.shutdown().unwrap();
            } else {
                drop(s);
            }
            assert_eq!(dropped.load(Ordering::Relaxed), 2, "{driver:?}: workers joined, handlers dropped");
        }
    }
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
    let (mut s, _c, conn) = pair(now);
    let last = RELIABLE_WINDOW as u32 - 1;
    let beyond = RELIABLE_WINDOW as u32;
    // The last id inside the window is held; the first id beyond it is not.
    s.handle_datagram(now, client_addr(), &reliable_data(conn, 1, 0, &[(last, b"L"), (beyond, b"B")]));
    assert!(messages(&mut s).is_empty());
    // Duplicate frames in one packet and across packets deliver once.
    s.handle_datagram(now, client_addr(), &reliable_data(conn, 2, 0, &[(1, b"1"), (1, b"1"), (0, b"0")]));
    assert_eq!(messages(&mut s), vec![b"0".to_vec(), b"1".to_vec()]);
    s.handle_datagram(now, client_addr(), &reliable_data(conn, 3, 0, &[(0, b"0"), (1, b"1")]));
    assert!(messages(&mut s).is_empty());
    let mut seq = 4;
    for chunk in (2..last).collect::<Vec<_>>().chunks(8) {
        let bodies: Vec<Vec<u8>> = chunk.iter().map(|i| i.to_string().into_bytes()).collect();
        let frames: Vec<(u32, &[u8])> = chunk.iter().zip(&bodies).map(|(&i, b)| (i, &b[..])).collect();
        s.handle_datagram(now, client_addr(), &reliable_data(conn, seq, 0, &frames));
        seq += 1;
    }
    let got = messages(&mut s);
    assert_eq!(got.len(), RELIABLE_WINDOW - 2);
    assert_eq!(got.last().unwrap(), b"L");
    // The one beyond was dropped, so it must be resent, and then it is delivered.
    s.handle_datagram(now, client_addr(), &reliable_data(conn, seq, 0, &[(beyond, b"B")]));
    assert_eq!(messages(&mut s), vec![b"B".to_vec()]);
    // The server's cumulative ack says so.
    let mut buf = [0u8; MAX_PACKET_LEN];
    let t = s.send(now, conn, b"", &mut buf).unwrap();
    assert_eq!(ack_of(&buf[..t.len]).reliable_ack, beyond + 1);
}

#[test]
fn a_cumulative_ack_beyond_what_was_sent_is_ignored() {
    let now = Instant::now();
    let (mut s, _c, conn) = pair(now);
    for m in [b"a", b"b", b"c"] {
        s.send_reliable(conn, m).unwrap();
    }
    s.handle_datagram(now, client_addr(), &reliable_data(conn, 1, 4, &[]));
    assert_eq!(s.session(conn).unwrap().reliable_in_flight, 3, "ack of 4 > 3 sent is a lie");
    s.handle_datagram(now, client_addr(), &reliable_data(conn, 2, 2, &[]));
    assert_eq!(s.session(conn).unwrap().reliable_in_flight, 1);
    s.handle_datagram(now, client_addr(), &reliable_data(conn, 3, 3, &[]));
    assert_eq!(s.session(conn).unwrap().reliable_in_flight, 0);
    // An older ack arriving late changes nothing.
    s.handle_datagram(now, client_addr(), &reliable_data(conn, 4, 1, &[]));
    assert_eq!(s.session(conn).unwrap().reliable_in_flight, 0);
}

#[test]
fn a_game_that_does_not_drain_events_loses_no_reliable_message() {
    let mut now = Instant::now();
    let mut cfg = config();
    cfg.max_sessions = 1; // smallest event bound: 2 * 1 + 1024
    let (mut s, mut c, _conn) = pair_with(now, cfg, ClientConfig::default());
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
            s.handle_datagram(now, client_addr(), &buf[..t.len]);
        }
        s.handle_timeout(now);
        while let Some(t) = s.poll_transmit(now, &mut buf) {
            c.handle_datagram(now, server_addr(), &buf[..t.len]);
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

#[test]
fn client_counts_each_bad_datagram_once_under_its_reason() {
    let now = Instant::now();
    let (mut s, mut c, conn) = pair(now);
    let mut buf = [0u8; MAX_PACKET_LEN];
    let mut server_data = |seq_skip: usize| {
        let mut last = Vec::new();
        for _ in 0..=seq_skip {
            let t = s.send(now, conn, b"d", &mut buf).unwrap();
            last = buf[..t.len].to_vec();
        }
        last
    };
    let d1 = server_data(0); // seq 1
    let d40 = server_data(38); // seq 40
    let mut req = [0u8; MAX_PACKET_LEN];
    let rn = Packet::ConnectRequest { token: &key().issue(&claims(1)).0 }.encode(&mut req).unwrap();
    let mut other_conn = d1.clone();
    // The connection id follows the 2-byte header.
    other_conn[2] ^= 0xFF;
    let stranger: SocketAddr = "127.0.0.1:7999".parse().unwrap();
    assert_eq!(c.handle_datagram(now, server_addr(), &d40), Some(&b"d"[..]));
    let cases: Vec<(Vec<u8>, SocketAddr, DropReason)> = vec![
        (d1.clone(), stranger, DropReason::WrongAddress),
        (vec![1], server_addr(), DropReason::Truncated),
        (req[..rn].to_vec(), server_addr(), DropReason::Unexpected),
        (other_conn, server_addr(), DropReason::UnknownConnection),
        (d40.clone(), server_addr(), DropReason::Replayed),
        (d1, server_addr(), DropReason::Stale),
    ];
    for (bytes, from, reason) in cases {
        let before = c.drops().snapshot();
        assert_eq!(c.handle_datagram(now, from, &bytes), None, "{reason:?}");
        for ((r, b), (_, a)) in before.iter().zip(c.drops().snapshot().iter()) {
            assert_eq!(*a, if *r == reason { b + 1 } else { *b }, "{reason:?}: counter {r:?}");
        }
        assert_eq!(c.poll_event(), None);
        assert!(c.is_connected());
    }
}

#[test]
fn data_before_the_handshake_completes_gets_no_reply() {
    let now = Instant::now();
    let mut s = Server::new(config(), now, UNIX).unwrap();
    let req = connect_request(&key().issue(&claims(9)));
    s.handle_datagram(now, client_addr(), &req);
    let mut buf = [0u8; MAX_PACKET_LEN];
    assert!(s.poll_transmit(now, &mut buf).is_some());
    // A guessed connection id while the handshake is pending.
    for guess in [0u64, 1, 9, u64::MAX] {
        s.handle_datagram(now, client_addr(), &data(ConnectionId(guess), 1, b"x"));
        assert!(s.poll_transmit(now, &mut buf).is_none());
    }
    assert_eq!(s.drops().get(DropReason::UnknownConnection) + s.drops().get(DropReason::Malformed), 4);
    assert_eq!(s.session_count(), 0);
    assert_eq!(s.poll_event(), None);
}

#[test]
fn the_default_table_holds_131072_sessions_and_denies_one_more_then_frees_a_slot() {
    let now = Instant::now();
    let cfg = ServerConfig::new(key(), server_addr());
    assert_eq!(cfg.max_sessions, 131_072, "documented default");
    let n = cfg.max_sessions as u64;
    let mut s = Server::new(cfg, now, UNIX).unwrap();
    let mut buf = [0u8; MAX_PACKET_LEN];
    let mut first = None;
    let open = |s: &mut Server, i: u64| -> Packet<'static> {
        let mut buf = [0u8; MAX_PACKET_LEN];
        let from = SocketAddr::new(std::net::Ipv4Addr::from(0x0a00_0000 + i as u32).into(), 2000);
        request_and_answer_challenge(now, s, from, &key().issue(&claims(10_000 + i)));
        let t = s.poll_transmit(now, &mut buf).unwrap();
        assert!(s.poll_transmit(now, &mut buf).is_none());
        match Packet::decode(&buf[..t.len]).unwrap() {
            Packet::Accepted { token_id, connection_id } => Packet::Accepted { token_id, connection_id },
            Packet::Denied { token_id, reason } => Packet::Denied { token_id, reason },
            p => panic!("{p:?}"),
        }
    };
    for i in 0..n {
        let p = open(&mut s, i);
        assert!(matches!(p, Packet::Accepted { .. }), "session {i}");
        if first.is_none() {
            if let Packet::Accepted { connection_id, .. } = p {
                first = Some(ConnectionId(connection_id));
            }
        }
    }
    let mut connected = 0;
    while let Some(e) = s.poll_event() {
        assert!(matches!(e, ServerEvent::Connected { .. }));
        connected += 1;
    }
    assert_eq!(connected, n);
    assert_eq!(s.session_count(), n as usize);
    assert!(matches!(open(&mut s, n), Packet::Denied { reason: DenyReason::ServerFull, .. }));
    assert_eq!(s.stats().denied_full, 1);
    assert_eq!(s.session_count(), n as usize);
    assert_eq!(s.poll_event(), None);
    // Closing one makes room for exactly one more.
    assert!(s.disconnect(first.unwrap()));
    while s.poll_transmit(now, &mut buf).is_some() {}
    assert!(matches!(s.poll_event(), Some(ServerEvent::Disconnected { .. })));
    assert!(matches!(open(&mut s, n + 1), Packet::Accepted { .. }));
    assert!(matches!(open(&mut s, n + 2), Packet::Denied { reason: DenyReason::ServerFull, .. }));
    assert_eq!(s.stats().denied_full, 2);
    assert_eq!(s.stats().sessions_opened, n + 1);
}

#[test]
fn a_token_used_on_one_server_stays_used_on_another_after_the_session_ends() {
    let now = Instant::now();
    let ledger = TokenLedger::new(8);
    let mk = || {
        let mut c = config();
        c.ledger = Some(ledger.clone());
        Server::new(c, now, UNIX).unwrap()
    };
    let (mut a, mut b) = (mk(), mk());
    let token = key().issue(&claims(21));
    let mut c1 = Client::new(ClientConfig::default(), token, now).unwrap();
    pump(now, &mut a, &mut c1, client_addr());
    assert!(c1.is_connected());
    c1.disconnect();
    pump(now, &mut a, &mut c1, client_addr());
    assert_eq!(a.session_count(), 0);
    // Same token, same address, other server sharing the ledger: refused once, no session.
    let mut c2 = Client::new(ClientConfig::default(), token, now).unwrap();
    pump(now, &mut b, &mut c2, client_addr());
    assert!(!c2.is_connected());
    assert_eq!(b.drops().get(DropReason::TokenReplayed), 1);
    assert_eq!(b.stats().sessions_opened, 0);
    // And on the first server too.
    let mut c3 = Client::new(ClientConfig::default(), token, now).unwrap();
    pump(now, &mut a, &mut c3, client_addr());
    assert!(!c3.is_connected());
    assert_eq!(a.drops().get(DropReason::TokenReplayed), 1);
}
