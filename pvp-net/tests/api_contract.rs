//! The public API held to its docs, as an outside game backend would use it: boundary values,
//! bad input, state after errors, idempotent calls and round trips. Sans-IO unless the item
//! under test is a socket; `now` is passed explicitly.

#[path = "shared_support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pvp_core::{MatchId, PlayerId};
use pvp_net::endpoint::{Datagram, EndpointError, MAX_DATAGRAM, UdpServer, UdpServerConfig};
use pvp_net::proto::packet::{AckHeader, ReliableFrame, ReliableFrames};
use pvp_net::proto::*;
use pvp_net::sim::{Harness, LinkConditions};
use support::{UNIX, claims_for, connect_request, flush_client, handshake, pump};

const MS: Duration = Duration::from_millis(1);

fn server_addr() -> SocketAddr {
    "127.0.0.1:7000".parse().unwrap()
}

fn client_addr() -> SocketAddr {
    "127.0.0.1:5555".parse().unwrap()
}

fn key() -> TokenKey {
    TokenKey::from_bytes([9; 32])
}

fn claims(token_id: u64) -> TokenClaims {
    claims_for(token_id, MatchId::new(3), PlayerId::new(token_id.wrapping_add(100)), server_addr())
}

fn server(now: Instant) -> Server {
    Server::new(ServerConfig::new(key(), server_addr()), now, UNIX).unwrap()
}

fn connected_pair(now: Instant, token_id: u64) -> (Server, Client, ConnectionId) {
    let mut s = server(now);
    let mut c = Client::new(ClientConfig::default(), key().issue(&claims(token_id)), now).unwrap();
    let conn = handshake(now, &mut s, &mut c, client_addr());
    (s, c, conn)
}

// ---------------------------------------------------------------------------------------------
// Config validation

#[test]
fn server_config_bounds_are_refused_with_typed_errors() {
    let now = Instant::now();
    let base = ServerConfig::new(key(), server_addr());
    let mut c = base.clone();
    c.max_sessions = 0;
    assert_eq!(Server::new(c, now, UNIX).err(), Some(ConfigError::BadBound));
    let mut c = base.clone();
    c.max_pending = 0;
    assert_eq!(Server::new(c, now, UNIX).err(), Some(ConfigError::BadBound));
    let mut c = base.clone();
    c.max_sessions = u32::MAX as usize + 1;
    assert_eq!(Server::new(c, now, UNIX).err(), Some(ConfigError::BadBound));
    let mut c = base.clone();
    c.idle_timeout = Duration::ZERO;
    assert_eq!(Server::new(c, now, UNIX).err(), Some(ConfigError::BadTimeouts));
    let mut c = base.clone();
    c.handshake_timeout = Duration::ZERO;
    assert_eq!(Server::new(c, now, UNIX).err(), Some(ConfigError::BadTimeouts));
    let mut c = base.clone();
    c.timer_granularity = Duration::ZERO;
    assert_eq!(Server::new(c, now, UNIX).err(), Some(ConfigError::BadTimeouts));
    let mut c = base.clone();
    c.keepalive_interval = c.idle_timeout;
    assert_eq!(Server::new(c, now, UNIX).err(), Some(ConfigError::BadTimeouts));
    // The largest allowed bound is accepted (tables grow lazily).
    let mut c = base;
    c.max_sessions = u32::MAX as usize;
    assert!(Server::new(c, now, UNIX).is_ok());
}

#[test]
fn huge_server_config_values_do_not_panic() {
    let now = Instant::now();
    let mut c = ServerConfig::new(key(), server_addr());
    c.max_pending = usize::MAX;
    c.max_sessions = u32::MAX as usize;
    let mut s = Server::new(c, now, UNIX).unwrap();
    s.handle_datagram(now, client_addr(), &connect_request(&key().issue(&claims(1))));
    assert_eq!(s.stats().pending, 1);

    let mut c = ServerConfig::new(key(), server_addr());
    c.timer_granularity = Duration::MAX;
    c.handshake_timeout = Duration::MAX;
    c.idle_timeout = Duration::MAX;
    c.keepalive_interval = Duration::MAX / 2;
    c.reliable_resend = Duration::MAX;
    let mut s = Server::new(c, now, UNIX).unwrap();
    s.handle_datagram(now, client_addr(), &connect_request(&key().issue(&claims(2))));
    s.handle_timeout(now + Duration::from_secs(3600));
    assert_eq!(s.stats().pending, 1);
    assert!(s.poll_timeout().is_some());

    // A wall clock at the end of time: every token is expired, nothing panics.
    let mut s = Server::new(ServerConfig::new(key(), server_addr()), now, Duration::MAX).unwrap();
    s.handle_datagram(now + MS, client_addr(), &connect_request(&key().issue(&claims(3))));
    assert_eq!(s.drops().get(DropReason::TokenExpired), 1);
}

#[test]
fn client_with_zero_intervals_does_not_loop_forever() {
    let now = Instant::now();
    let mut s = server(now);
    let mut cfg = ClientConfig::default();
    cfg.handshake_resend = Duration::ZERO;
    cfg.keepalive_interval = Duration::ZERO;
    cfg.reliable_resend = Duration::ZERO;
    let mut c = Client::new(cfg, key().issue(&claims(1)), now).unwrap();
    let mut buf = [0u8; MAX_PACKET_LEN];
    // At one instant, a zero resend interval still sends each packet once.
    let mut n = 0;
    while let Some(t) = c.poll_transmit(now, &mut buf) {
        n += 1;
        assert!(n < 100, "poll_transmit never returned None");
        s.handle_datagram(now, client_addr(), &buf[..t.len]);
    }
    assert_eq!(n, 1);
    pump(now, &mut s, &mut c, client_addr());
    assert!(c.is_connected());
    c.send_reliable(b"r").unwrap();
    let later = now + MS;
    let mut n = 0;
    while c.poll_transmit(later, &mut buf).is_some() {
        n += 1;
        assert!(n < 100, "poll_transmit never returned None");
    }
    assert_eq!(n, 1);
}

#[test]
fn client_with_huge_intervals_does_not_panic() {
    let now = Instant::now();
    let mut s = server(now);
    let mut cfg = ClientConfig::default();
    cfg.handshake_resend = Duration::MAX;
    cfg.handshake_timeout = Duration::MAX;
    cfg.idle_timeout = Duration::MAX;
    cfg.keepalive_interval = Duration::MAX;
    cfg.reliable_resend = Duration::MAX;
    let mut c = Client::new(cfg, key().issue(&claims(1)), now).unwrap();
    assert!(c.poll_timeout().is_some());
    pump(now, &mut s, &mut c, client_addr());
    assert!(c.is_connected());
    let t = c.poll_timeout().unwrap();
    assert!(t > now);
    c.send_reliable(b"x").unwrap();
    assert!(c.poll_timeout().is_some());
    c.handle_timeout(now + Duration::from_secs(1_000_000));
    assert!(c.is_connected());
}

// ---------------------------------------------------------------------------------------------
// Packets

#[test]
fn decode_never_panics_on_short_or_garbage_input() {
    assert_eq!(Packet::decode(&[]), Err(DecodeError::Truncated));
    assert_eq!(Packet::decode(&[PROTOCOL_VERSION]), Err(DecodeError::Truncated));
    assert_eq!(
        Packet::decode(&[PROTOCOL_VERSION + 1, 6]),
        Err(DecodeError::WrongVersion(PROTOCOL_VERSION + 1))
    );
    assert_eq!(Packet::decode(&[PROTOCOL_VERSION, 0]), Err(DecodeError::Malformed));
    assert_eq!(Packet::decode(&[PROTOCOL_VERSION, 200]), Err(DecodeError::Malformed));
    assert_eq!(Packet::decode(&vec![0u8; MAX_PACKET_LEN + 1]), Err(DecodeError::Oversized));
    // Every prefix of a valid data packet with reliable frames is refused, never a panic.
    let mut frames = ReliableFrames::new();
    frames.push(ReliableFrame { id: 0, bytes: b"abc" }).unwrap();
    let p = Packet::Data {
        connection_id: 5,
        seq: 1,
        ack: AckHeader::default(),
        reliable: frames,
        payload: b"zz",
    };
    let mut buf = [0u8; MAX_PACKET_LEN];
    let n = p.encode(&mut buf).unwrap();
    assert_eq!(Packet::decode(&buf[..n]), Ok(p));
    let header = 2 + 8 + 4 + 4 + 4 + 4 + 1;
    for cut in 0..header + 6 + 3 {
        assert!(Packet::decode(&buf[..cut]).is_err(), "prefix {cut} decoded");
    }
    // Reliable count above the per-packet maximum.
    let mut bad = buf[..n].to_vec();
    bad[header - 1] = 9;
    assert_eq!(Packet::decode(&bad), Err(DecodeError::Malformed));
    // Fixed-size packets with a trailing byte.
    let n = Packet::Disconnect { connection_id: 1 }.encode(&mut buf).unwrap();
    let mut long = buf[..n].to_vec();
    long.push(0);
    assert_eq!(Packet::decode(&long), Err(DecodeError::Oversized));
    // Unknown deny reason.
    let n = Packet::Denied { token_id: 1, reason: DenyReason::ServerFull }.encode(&mut buf).unwrap();
    let mut d = buf[..n].to_vec();
    d[n - 1] = 0;
    assert_eq!(Packet::decode(&d), Err(DecodeError::Malformed));
}

#[test]
fn connect_request_must_be_exact_length_with_zero_padding() {
    let token = key().issue(&claims(1));
    let req = connect_request(&token);
    assert_eq!(req.len(), CONNECT_REQUEST_LEN);
    assert_eq!(Packet::decode(&req), Ok(Packet::ConnectRequest { token: &token.0 }));
    assert_eq!(Packet::decode(&req[..CONNECT_REQUEST_LEN - 1]), Err(DecodeError::Truncated));
    let mut long = req.clone();
    long.push(0);
    assert_eq!(Packet::decode(&long), Err(DecodeError::Oversized));
    let mut smuggle = req.clone();
    smuggle[CONNECT_REQUEST_LEN - 1] = 1;
    assert_eq!(Packet::decode(&smuggle), Err(DecodeError::Malformed));
    // Encoding into a buffer one byte short is refused with the buffer's size.
    let mut small = [0u8; CONNECT_REQUEST_LEN - 1];
    assert_eq!(
        Packet::ConnectRequest { token: &token.0 }.encode(&mut small),
        Err(EncodeError::TooLarge(CONNECT_REQUEST_LEN - 1))
    );
}

#[test]
fn encode_refuses_packets_beyond_max_len_and_oversized_frames() {
    let mut buf = vec![0u8; MAX_PACKET_LEN * 2];
    let payload = vec![7u8; MAX_PAYLOAD_LEN];
    let ok = Packet::Data {
        connection_id: 1,
        seq: 1,
        ack: AckHeader::default(),
        reliable: ReliableFrames::new(),
        payload: &payload,
    };
    assert_eq!(ok.encode(&mut buf), Ok(MAX_PACKET_LEN));
    let big = vec![7u8; MAX_PAYLOAD_LEN + 1];
    let too_big = Packet::Data {
        connection_id: 1,
        seq: 1,
        ack: AckHeader::default(),
        reliable: ReliableFrames::new(),
        payload: &big,
    };
    assert_eq!(too_big.encode(&mut buf), Err(EncodeError::TooLarge(MAX_PACKET_LEN)));
    let huge = vec![1u8; u16::MAX as usize + 1];
    let mut frames = ReliableFrames::new();
    frames.push(ReliableFrame { id: 0, bytes: &huge }).unwrap();
    let p =
        Packet::Data { connection_id: 1, seq: 1, ack: AckHeader::default(), reliable: frames, payload: &[] };
    assert_eq!(p.encode(&mut buf), Err(EncodeError::TooManyReliable));
}

#[test]
fn reliable_frames_hand_back_the_ninth() {
    let mut f = ReliableFrames::new();
    assert!(f.is_empty());
    for i in 0..8 {
        f.push(ReliableFrame { id: i, bytes: b"ab" }).unwrap();
    }
    let extra = ReliableFrame { id: 8, bytes: b"x" };
    assert_eq!(f.push(extra), Err(extra));
    assert_eq!(f.len(), 8);
    assert_eq!(f.wire_len(), 8 * (6 + 2));
    assert_eq!(f.iter().map(|fr| fr.id).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>());
}

#[test]
fn peek_connection_id_only_for_session_packets() {
    let mut buf = [0u8; MAX_PACKET_LEN];
    let n = Packet::Disconnect { connection_id: 0xdead_beef }.encode(&mut buf).unwrap();
    assert_eq!(Packet::peek_connection_id(&buf[..n]), Some(0xdead_beef));
    let n = Packet::Data {
        connection_id: u64::MAX,
        seq: 1,
        ack: AckHeader::default(),
        reliable: ReliableFrames::new(),
        payload: &[],
    }
    .encode(&mut buf)
    .unwrap();
    assert_eq!(Packet::peek_connection_id(&buf[..n]), Some(u64::MAX));
    assert_eq!(Packet::peek_connection_id(&buf[..9]), None);
    assert_eq!(Packet::peek_connection_id(&[]), None);
    let n = Packet::Accepted { token_id: 1, connection_id: 2 }.encode(&mut buf).unwrap();
    assert_eq!(Packet::peek_connection_id(&buf[..n]), None);
    let mut wrong_version = buf;
    let n = Packet::Disconnect { connection_id: 4 }.encode(&mut wrong_version).unwrap();
    wrong_version[0] = PROTOCOL_VERSION + 1;
    assert_eq!(Packet::peek_connection_id(&wrong_version[..n]), None);
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[test]
fn tokens_round_trip_for_v4_and_v6_and_refuse_tampering() {
    let k = key();
    for addr in ["127.0.0.1:1", "[::1]:65535", "[2001:db8::7]:0"] {
        let mut c = claims(u64::MAX);
        c.server_addr = addr.parse().unwrap();
        c.expires_at_unix_ms = u64::MAX;
        let t = k.issue(&c);
        assert_eq!(t.token_id(), u64::MAX);
        assert_eq!(t.server_addr(), Some(c.server_addr));
        assert_eq!(k.open(&t.0), Ok(c));
        assert_eq!(TokenKey::from_bytes([8; 32]).open(&t.0), Err(TokenError::BadSignature));
    }
    // An all-zero token: unreadable address, refused by the client; bad signature at the key.
    let zero = ConnectToken([0; TOKEN_LEN]);
    assert_eq!(zero.server_addr(), None);
    assert_eq!(Client::new(ClientConfig::default(), zero, Instant::now()).err(), Some(TokenError::Malformed));
    assert_eq!(k.open(&zero.0), Err(TokenError::BadSignature));
    // Debug output never shows secrets.
    assert_eq!(format!("{k:?}"), "TokenKey(..)");
    let g1 = TokenKey::generate();
    let g2 = TokenKey::generate();
    let t = g1.issue(&claims(1));
    assert!(g1.open(&t.0).is_ok());
    assert_eq!(g2.open(&t.0), Err(TokenError::BadSignature));
}

#[test]
fn server_refuses_expired_wrong_server_and_forged_tokens_without_state() {
    let now = Instant::now();
    let mut s = server(now);
    let mut c = claims(1);
    c.expires_at_unix_ms = UNIX.as_millis() as u64; // expires exactly now
    s.handle_datagram(now, client_addr(), &connect_request(&key().issue(&c)));
    let mut c = claims(2);
    c.server_addr = "127.0.0.1:7001".parse().unwrap();
    s.handle_datagram(now, client_addr(), &connect_request(&key().issue(&c)));
    s.handle_datagram(now, client_addr(), &connect_request(&TokenKey::from_bytes([1; 32]).issue(&claims(3))));
    assert_eq!(s.drops().get(DropReason::TokenExpired), 1);
    assert_eq!(s.drops().get(DropReason::TokenWrongServer), 1);
    assert_eq!(s.drops().get(DropReason::BadToken), 1);
    let st = s.stats();
    assert_eq!(st.pending, 0);
    assert_eq!(st.datagrams_in, 3);
    assert_eq!(st.dropped, 3);
    let mut buf = [0u8; MAX_PACKET_LEN];
    assert!(s.poll_transmit(now, &mut buf).is_none());
    // Expiry follows the server's clock: valid now, expired 61 s later.
    s.handle_datagram(
        now + Duration::from_secs(61),
        client_addr(),
        &connect_request(&key().issue(&claims(4))),
    );
    assert_eq!(s.drops().get(DropReason::TokenExpired), 2);
}

#[test]
fn token_for_an_ipv6_server_with_a_scope_is_accepted() {
    let now = Instant::now();
    let addr: SocketAddr = "[fe80::1%3]:7000".parse().unwrap();
    let mut s = Server::new(ServerConfig::new(key(), addr), now, UNIX).unwrap();
    let mut c = claims(1);
    c.server_addr = addr;
    s.handle_datagram(now, "[fe80::2%3]:5000".parse().unwrap(), &connect_request(&key().issue(&c)));
    assert_eq!(s.drops().get(DropReason::TokenWrongServer), 0);
    assert_eq!(s.stats().pending, 1);
}

#[test]
fn ledger_is_single_use_bounded_and_purges_expired() {
    let l = TokenLedger::new(2);
    assert!(l.is_empty());
    assert_eq!(l.try_use(1, 100, 0), Ok(()));
    assert_eq!(l.try_use(1, 100, 0), Err(DropReason::TokenReplayed));
    assert_eq!(l.try_use(2, 200, 0), Ok(()));
    assert_eq!(l.try_use(3, 300, 50), Err(DropReason::TokenTableFull));
    assert_eq!(l.len(), 2);
    // Token 1 expired at 100: its room is reused.
    assert_eq!(l.try_use(3, 300, 150), Ok(()));
    assert_eq!(l.len(), 2);
    // Clones share the table.
    let l2 = l.clone();
    assert_eq!(l2.try_use(3, 300, 150), Err(DropReason::TokenReplayed));
    let zero = TokenLedger::new(0);
    assert_eq!(zero.try_use(1, 10, 0), Err(DropReason::TokenTableFull));
    assert!(zero.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Handshake and sessions

#[test]
fn replayed_connect_request_after_disconnect_is_refused() {
    let now = Instant::now();
    let token = key().issue(&claims(1));
    let (mut s, mut c, conn) = connected_pair(now, 1);
    // The client leaves; its old connect request is replayed from the same address.
    c.disconnect();
    pump(now, &mut s, &mut c, client_addr());
    assert_eq!(s.session_count(), 0);
    assert!(s.session(conn).is_none());
    while s.poll_event().is_some() {}
    let mut buf = [0u8; MAX_PACKET_LEN];
    s.handle_datagram(now + MS, client_addr(), &connect_request(&token));
    while let Some(t) = s.poll_transmit(now + MS, &mut buf) {
        let p = Packet::decode(&buf[..t.len]).unwrap();
        assert!(!matches!(p, Packet::Accepted { .. }), "accepted a dead session: {p:?}");
    }
    assert_eq!(s.drops().get(DropReason::TokenReplayed), 1);
    assert_eq!(s.session_count(), 0);
    assert!(s.poll_event().is_none());
}

#[test]
fn replayed_challenge_response_after_server_disconnect_gets_no_accept() {
    let now = Instant::now();
    let mut s = server(now);
    let mut c = Client::new(ClientConfig::default(), key().issue(&claims(1)), now).unwrap();
    let mut buf = [0u8; MAX_PACKET_LEN];
    let t = c.poll_transmit(now, &mut buf).unwrap();
    s.handle_datagram(now, client_addr(), &buf[..t.len]);
    let t = s.poll_transmit(now, &mut buf).unwrap();
    c.handle_datagram(now, server_addr(), &buf[..t.len]);
    let t = c.poll_transmit(now, &mut buf).unwrap();
    let response = buf[..t.len].to_vec();
    s.handle_datagram(now, client_addr(), &response);
    let Some(ServerEvent::Connected { connection, .. }) = s.poll_event() else { panic!("no session") };
    assert!(s.disconnect(connection));
    assert!(!s.disconnect(connection), "second disconnect must report no session");
    while s.poll_transmit(now, &mut buf).is_some() {}
    s.handle_datagram(now + MS, client_addr(), &response);
    while let Some(t) = s.poll_transmit(now + MS, &mut buf) {
        let p = Packet::decode(&buf[..t.len]).unwrap();
        assert!(!matches!(p, Packet::Accepted { .. }), "accepted a dead session: {p:?}");
    }
    assert_eq!(s.drops().get(DropReason::BadChallenge), 1);
}

#[test]
fn duplicate_connect_and_response_keep_one_session() {
    let now = Instant::now();
    let (mut s, mut c, conn) = connected_pair(now, 1);
    // A resent connect request and a duplicate accept are harmless.
    s.handle_datagram(now, client_addr(), &connect_request(&key().issue(&claims(1))));
    pump(now, &mut s, &mut c, client_addr());
    assert_eq!(s.session_count(), 1);
    assert_eq!(c.connection_id(), Some(conn));
    assert!(c.is_connected());
    assert!(s.poll_event().is_none());
    assert_eq!(s.stats().sessions_opened, 1);
}

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

#[test]
fn replayed_and_stale_data_are_counted_and_do_not_deliver() {
    let now = Instant::now();
    let (mut s, mut c, _conn) = connected_pair(now, 1);
    let mut buf = [0u8; MAX_PACKET_LEN];
    let t = c.send(now, b"a", &mut buf).unwrap();
    let first = buf[..t.len].to_vec();
    assert!(s.handle_datagram(now, client_addr(), &first).is_some());
    assert!(s.handle_datagram(now, client_addr(), &first).is_none());
    assert_eq!(s.drops().get(DropReason::Replayed), 1);
    for _ in 0..40 {
        let t = c.send(now, b"b", &mut buf).unwrap();
        assert!(s.handle_datagram(now, client_addr(), &buf[..t.len]).is_some());
    }
    // Packet 1 is now older than the replay window.
    assert!(s.handle_datagram(now, client_addr(), &first).is_none());
    assert_eq!(s.drops().get(DropReason::Stale), 1);
    // From another address: refused, session kept.
    let t = c.send(now, b"c", &mut buf).unwrap();
    assert!(s.handle_datagram(now, "127.0.0.1:6666".parse().unwrap(), &buf[..t.len]).is_none());
    assert_eq!(s.drops().get(DropReason::WrongAddress), 1);
    assert_eq!(s.session_count(), 1);
    // Unknown connection id.
    let n = Packet::Disconnect { connection_id: 12345 }.encode(&mut buf).unwrap();
    assert!(s.handle_datagram(now, client_addr(), &buf[..n]).is_none());
    assert_eq!(s.drops().get(DropReason::UnknownConnection), 1);
    assert_eq!(s.session_count(), 1);
    // Server-only packet kinds from a client are unexpected.
    let n = Packet::Accepted { token_id: 1, connection_id: 2 }.encode(&mut buf).unwrap();
    s.handle_datagram(now, client_addr(), &buf[..n]);
    assert_eq!(s.drops().get(DropReason::Unexpected), 1);
    assert_eq!(s.stats().dropped, s.drops().total());
}

#[test]
fn client_drops_foreign_and_garbage_datagrams() {
    let now = Instant::now();
    let (_s, mut c, _conn) = connected_pair(now, 1);
    assert!(c.handle_datagram(now, "127.0.0.1:1".parse().unwrap(), b"junk").is_none());
    assert_eq!(c.drops().get(DropReason::WrongAddress), 1);
    assert!(c.handle_datagram(now, server_addr(), &[PROTOCOL_VERSION]).is_none());
    assert_eq!(c.drops().get(DropReason::Truncated), 1);
    let mut buf = [0u8; MAX_PACKET_LEN];
    let n = Packet::Disconnect { connection_id: 77 }.encode(&mut buf).unwrap();
    c.handle_datagram(now, server_addr(), &buf[..n]);
    assert!(c.is_connected());
    assert_eq!(c.drops().total(), 3);
}

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

#[test]
fn disconnect_is_idempotent_on_both_ends() {
    let now = Instant::now();
    let (mut s, mut c, conn) = connected_pair(now, 1);
    c.disconnect();
    c.disconnect();
    assert_eq!(c.state(), ClientState::Disconnected(DisconnectReason::Local));
    let evs: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
    assert_eq!(evs.iter().filter(|e| matches!(e, ClientEvent::Disconnected(_))).count(), 1);
    let sent = flush_client(now, &mut c, &mut s, client_addr(), 2);
    assert_eq!(sent, 2);
    // The second copy finds no session: counted, not a second event.
    assert_eq!(s.drops().get(DropReason::UnknownConnection), 1);
    let evs: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
    assert_eq!(
        evs,
        vec![ServerEvent::Disconnected {
            connection: conn,
            player: PlayerId::new(101),
            reason: DisconnectReason::Peer
        }]
    );
    assert!(!s.disconnect(conn));
    let mut buf = [0u8; MAX_PACKET_LEN];
    assert_eq!(c.send(now, b"x", &mut buf), Err(SendError::NotConnected));
    assert_eq!(c.send_reliable(b"x"), Err(SendError::NotConnected));
    assert_eq!(s.stats().sessions_closed, 1);
    assert!(c.poll_timeout().is_none());
}

#[test]
fn client_disconnect_before_connecting_sends_nothing() {
    let now = Instant::now();
    let mut c = Client::new(ClientConfig::default(), key().issue(&claims(1)), now).unwrap();
    c.disconnect();
    let mut buf = [0u8; MAX_PACKET_LEN];
    assert!(c.poll_transmit(now, &mut buf).is_none());
    assert_eq!(c.poll_event(), Some(ClientEvent::Disconnected(DisconnectReason::Local)));
    assert!(c.connection_id().is_none());
}

#[test]
fn timeouts_close_sessions_and_handshakes() {
    let now = Instant::now();
    let (mut s, mut c, conn) = connected_pair(now, 1);
    let later = now + Duration::from_secs(11);
    s.handle_timeout(later);
    c.handle_timeout(later);
    assert_eq!(c.state(), ClientState::Disconnected(DisconnectReason::TimedOut));
    assert!(s.session(conn).is_none());
    let st = s.stats();
    assert_eq!(st.timeouts, 1);
    assert_eq!(st.sessions_closed, 1);
    assert!(matches!(
        s.poll_event(),
        Some(ServerEvent::Disconnected { reason: DisconnectReason::TimedOut, .. })
    ));
    let mut c2 = Client::new(ClientConfig::default(), key().issue(&claims(2)), now).unwrap();
    c2.handle_timeout(now + Duration::from_secs(5));
    assert_eq!(c2.state(), ClientState::Disconnected(DisconnectReason::HandshakeTimedOut));
}

#[test]
fn full_server_denies_and_frees_nothing_it_should_keep() {
    let now = Instant::now();
    let mut cfg = ServerConfig::new(key(), server_addr());
    cfg.max_sessions = 1;
    let mut s = Server::new(cfg, now, UNIX).unwrap();
    let mut a = Client::new(ClientConfig::default(), key().issue(&claims(1)), now).unwrap();
    pump(now, &mut s, &mut a, client_addr());
    assert!(a.is_connected());
    let other: SocketAddr = "127.0.0.1:5556".parse().unwrap();
    let mut b = Client::new(ClientConfig::default(), key().issue(&claims(2)), now).unwrap();
    pump(now, &mut s, &mut b, other);
    assert_eq!(b.state(), ClientState::Disconnected(DisconnectReason::Denied(DenyReason::ServerFull)));
    assert_eq!(s.stats().denied_full, 1);
    assert_eq!(s.session_count(), 1);
    assert!(a.is_connected());
}

#[test]
fn sim_harness_with_zero_step_or_nan_loss_does_not_hang_or_panic() {
    let mut h = Harness::new(1, LinkConditions::clean(5 * MS));
    h.step = Duration::ZERO;
    let c = h.add_client(1);
    assert!(h.run_until(Duration::from_secs(2), |h| h.client(c).is_connected()));
    let mut h =
        Harness::new(2, LinkConditions { loss: f64::NAN, duplicate: f64::NAN, ..LinkConditions::clean(MS) });
    let c = h.add_client(1);
    assert!(h.run_until(Duration::from_secs(2), |h| h.client(c).is_connected()));
}

// ---------------------------------------------------------------------------------------------
// Endpoint

#[test]
fn datagram_bounds_and_reply() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let d = Datagram::new(addr, &[1; MAX_DATAGRAM]).unwrap();
    assert_eq!(d.payload().len(), MAX_DATAGRAM);
    assert_eq!(d.worker(), 0);
    assert!(Datagram::new(addr, &[1; MAX_DATAGRAM + 1]).is_err());
    let e = Datagram::new(addr, &[]).unwrap();
    assert!(e.payload().is_empty());
    let r = d.reply(b"pong").unwrap();
    assert_eq!(r.addr, addr);
    assert_eq!(r.payload(), b"pong");
    assert!(d.reply(&[0; MAX_DATAGRAM + 1]).is_err());
}

#[test]
fn udp_server_refuses_bad_configs_before_allocating() {
    let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut c = UdpServerConfig::new(bind);
    c.workers = usize::MAX;
    assert!(matches!(UdpServer::bind(c), Err(EndpointError::Config(_))));
    let mut c = UdpServerConfig::new(bind);
    c.queue_capacity = 0;
    assert!(matches!(UdpServer::bind(c), Err(EndpointError::Config(_))));
    let mut c = UdpServerConfig::new(bind);
    c.queue_capacity = usize::MAX;
    assert!(matches!(UdpServer::bind(c), Err(EndpointError::Config(_))));
    let mut c = UdpServerConfig::new(bind);
    c.queue_capacity = 1 << 40;
    assert!(matches!(UdpServer::bind(c), Err(EndpointError::Config(_))));
    let mut c = UdpServerConfig::new(bind);
    c.batch = 0;
    assert!(matches!(UdpServer::bind(c), Err(EndpointError::Config(_))));
    let mut c = UdpServerConfig::new(bind);
    c.ring_buffers = 3;
    assert!(matches!(UdpServer::bind(c), Err(EndpointError::Config(_))));
    let mut c = UdpServerConfig::new(bind);
    c.ring_buffers = 0;
    assert!(matches!(UdpServer::bind(c), Err(EndpointError::Config(_))));
}

#[test]
fn batch_socket_round_trip_and_oversize_is_not_handed_out() {
    use pvp_net::endpoint::BatchSocket;
    let mut a = BatchSocket::bind("127.0.0.1:0".parse().unwrap(), 0).unwrap();
    let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let a_addr = a.local_addr().unwrap();
    let b_addr = b.local_addr().unwrap();
    // batch 0 is taken as 1: queueing two sends the first on the way.
    assert_eq!(
        a.queue_with(b_addr, |buf| {
            buf[..3].copy_from_slice(b"one");
            3
        })
        .unwrap(),
        3
    );
    assert_eq!(
        a.queue_with(b_addr, |buf| {
            buf[..3].copy_from_slice(b"two");
            3
        })
        .unwrap(),
        3
    );
    assert_eq!(a.flush().unwrap(), 1);
    // A fill of 0 queues nothing.
    assert_eq!(a.queue_with(b_addr, |_| 0).unwrap(), 0);
    assert_eq!(a.flush().unwrap(), 0);
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = [0u8; 16];
    for want in [&b"one"[..], b"two"] {
        let (n, from) = b.recv_from(&mut got).unwrap();
        assert_eq!((&got[..n], from), (want, a_addr));
    }
    // Exactly MAX_DATAGRAM is handed out; one byte more is not.
    for len in [MAX_DATAGRAM, MAX_DATAGRAM + 1, MAX_DATAGRAM + 2, 0] {
        b.send_to(&vec![7u8; len], a_addr).unwrap();
        let mut n = 0;
        for _ in 0..50 {
            n = a.recv_batch(Duration::from_millis(100)).unwrap();
            if n > 0 {
                break;
            }
        }
        assert_eq!(n, 1, "len {len}");
        match a.datagram(0) {
            Some((from, d)) => {
                assert!(len <= MAX_DATAGRAM, "{len} bytes handed out");
                assert_eq!((from, d.len()), (b_addr, len));
            }
            None => assert!(len > MAX_DATAGRAM, "{len} bytes refused"),
        }
        assert!(a.datagram(1).is_none());
    }
}

#[test]
fn bind_with_server_has_no_queues() {
    use pvp_net::endpoint::{DatagramHandler, Outbox};
    struct Nop;
    impl DatagramHandler for Nop {
        fn on_datagram(&mut self, _: Instant, _: SocketAddr, _: &[u8], _: &mut Outbox) {}
    }
    let mut c = UdpServerConfig::new("127.0.0.1:0".parse().unwrap());
    c.driver = pvp_net::DriverChoice::Epoll;
    let s = UdpServer::bind_with(c, |_| Nop).unwrap();
    assert_ne!(s.local_addr().port(), 0);
    assert_eq!(s.workers(), 1);
    assert!(s.recv().is_none());
    let mut out = Vec::new();
    assert_eq!(s.recv_batch(&mut out, 10), 0);
    let d = Datagram::new(s.local_addr(), b"x").unwrap();
    assert_eq!(s.send(d).map_err(|d| d.payload().to_vec()), Err(b"x".to_vec()));
    s.shutdown().unwrap();
}

#[test]
fn io_uring_network_refuses_a_zero_sized_ring_and_an_empty_recv_buffer() {
    if pvp_net::driver::io_uring_unavailable().is_some() {
        return;
    }
    assert!(pvp_net::IoUringNetwork::new(0).is_err());
    let mut net = pvp_net::IoUringNetwork::new(4).unwrap();
    assert_eq!(net.in_flight(), 0);
    assert_eq!(net.stats().prepared, 0);
    // A buffer with capacity but no length: refused, handed back, nothing queued.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let e = net.prepare_recv(&stream, Vec::with_capacity(64), 1).unwrap_err();
    assert_eq!(e.error.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(e.buf.map(|b| b.capacity() >= 64), Some(true));
    assert_eq!(net.in_flight(), 0);
    assert_eq!(net.stats().prepared, 0);
    // Waiting with nothing in flight returns instead of blocking forever.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = net.submit_and_wait(1, None).map_err(|e| e.kind());
        let _ = tx.send(r);
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(Ok(0)));
}

#[test]
fn datagrams_just_over_max_are_counted_not_delivered_on_every_driver() {
    use pvp_net::DriverChoice;
    let mut drivers = vec![(DriverChoice::Epoll, false)];
    if pvp_net::driver::io_uring_unavailable().is_none() {
        drivers.push((DriverChoice::IoUring, true));
        drivers.push((DriverChoice::IoUring, false));
    }
    for (driver, multishot) in drivers {
        let mut c = UdpServerConfig::new("127.0.0.1:0".parse().unwrap());
        c.driver = driver;
        c.uring_multishot = multishot;
        let server = UdpServer::bind(c).unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for len in [MAX_DATAGRAM + 1, MAX_DATAGRAM + 200] {
            client.send_to(&vec![1u8; len], server.local_addr()).unwrap();
        }
        client.send_to(&[2u8; MAX_DATAGRAM], server.local_addr()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let got = loop {
            if let Some(d) = server.recv() {
                break Some(d);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::yield_now();
        };
        let got = got.expect("the full-size datagram arrives");
        assert_eq!(got.payload(), &[2u8; MAX_DATAGRAM][..], "{driver:?} multishot {multishot}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.stats().rx_truncated < 2 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(server.stats().rx_truncated, 2, "{driver:?} multishot {multishot}");
        assert!(server.recv().is_none());
    }
}

#[test]
fn a_full_control_queue_is_counted_and_sessions_recover_after_it_drains() {
    let now = Instant::now();
    let mut cfg = ServerConfig::new(key(), server_addr());
    cfg.max_sessions = 1;
    cfg.max_pending = 1;
    let mut s = Server::new(cfg, now, UNIX).unwrap();
    let mut c = Client::new(ClientConfig::default(), key().issue(&claims(1)), now).unwrap();
    pump(now, &mut s, &mut c, client_addr());
    assert!(c.is_connected());
    // Another peer resends its connect request without the game draining replies.
    let spam = connect_request(&key().issue(&claims(2)));
    let other: SocketAddr = "127.0.0.1:5999".parse().unwrap();
    for _ in 0..1100 {
        s.handle_datagram(now, other, &spam);
    }
    assert!(s.stats().transmit_dropped > 0);
    // A reliable message arrives while the queue is full: its ack cannot be queued now.
    c.send_reliable(b"hi").unwrap();
    let mut buf = [0u8; MAX_PACKET_LEN];
    let t = c.send(now, &[], &mut buf).unwrap();
    s.handle_datagram(now, client_addr(), &buf[..t.len]);
    let conn = c.connection_id().unwrap();
    assert!(
        std::iter::from_fn(|| s.poll_event())
            .any(|e| e == ServerEvent::Message { connection: conn, bytes: b"hi".to_vec() })
    );
    while s.poll_transmit(now, &mut buf).is_some() {}
    // Once drained, the next sweep sends the ack and the client's window empties.
    let later = now + 100 * MS;
    s.handle_timeout(later);
    let mut to_client = 0;
    while let Some(t) = s.poll_transmit(later, &mut buf) {
        if t.destination == client_addr() {
            to_client += 1;
            c.handle_datagram(later, server_addr(), &buf[..t.len]);
        }
    }
    assert_eq!(to_client, 1);
    assert!(c.is_connected());
    // Acked: the full window is free again.
    for i in 0..RELIABLE_WINDOW {
        assert_eq!(c.send_reliable(&[i as u8]), Ok(()), "message {i}");
    }
}

#[test]
fn cpu_and_memory_helpers_report_sensibly() {
    let cpus = pvp_net::allowed_cpus();
    assert!(!cpus.is_empty());
    assert!(cpus.windows(2).all(|w| w[0] < w[1]));
    assert!(pvp_net::pin_to_cpu(usize::MAX).is_err());
    let first = cpus[0];
    let pinned = std::thread::spawn(move || pvp_net::pin_to_cpu(first).is_ok()).join().unwrap();
    assert!(pinned);
    assert!(pvp_net::resident_bytes().is_some_and(|b| b > 0));
    assert!(pvp_net::process_cpu_time().is_some());
}

#[test]
fn token_server_address_keeps_ip_and_port_only() {
    let addr: SocketAddr = "[fe80::1%3]:7000".parse().unwrap();
    let mut c = claims(1);
    c.server_addr = addr;
    let t = key().issue(&c);
    let opened = key().open(&t.0).unwrap();
    assert_eq!(opened.server_addr.ip(), addr.ip());
    assert_eq!(opened.server_addr.port(), addr.port());
    assert_eq!(opened.server_addr, "[fe80::1]:7000".parse::<SocketAddr>().unwrap());
    assert_eq!(t.server_addr(), Some(opened.server_addr));
}

#[cfg(feature = "tokio")]
mod tokio_contract {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use pvp_core::{MatchId, PlayerId};
    use pvp_net::proto::*;
    use pvp_net::tokio_adapter::{Incoming, SessionSocket};

    /// A silent session times out even while other peers keep the socket busy.
    #[tokio::test]
    async fn idle_sessions_time_out_under_steady_traffic() {
        let key = TokenKey::generate();
        let k = key.clone();
        let mut server = SessionSocket::bind("127.0.0.1:0".parse().unwrap(), move |a| {
            let mut c = ServerConfig::new(k, a);
            c.idle_timeout = Duration::from_millis(300);
            c.keepalive_interval = Duration::from_millis(100);
            c.timer_granularity = Duration::from_millis(10);
            c
        })
        .await
        .unwrap();
        let addr = server.local_addr().unwrap();
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let token = key.issue(&TokenClaims {
            token_id: 1,
            match_id: MatchId::new(1),
            player_id: PlayerId::new(2),
            expires_at_unix_ms: unix + 30_000,
            server_addr: addr,
        });
        let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
        let server_task = tokio::spawn(async move {
            let mut connected_tx = Some(connected_tx);
            loop {
                match server.next().await.unwrap() {
                    Incoming::Event(ServerEvent::Connected { .. }) => {
                        if let Some(tx) = connected_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Incoming::Event(ServerEvent::Disconnected { reason, .. }) => return reason,
                    _ => {}
                }
            }
        });
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut c = Client::new(ClientConfig::default(), token, Instant::now()).unwrap();
        let mut buf = [0u8; MAX_PACKET_LEN];
        let mut rx = [0u8; MAX_PACKET_LEN];
        for _ in 0..200 {
            if c.is_connected() {
                break;
            }
            while let Some(t) = c.poll_transmit(Instant::now(), &mut buf) {
                sock.send_to(&buf[..t.len], t.destination).await.unwrap();
            }
            if let Ok(Ok((n, from))) =
                tokio::time::timeout(Duration::from_millis(50), sock.recv_from(&mut rx)).await
            {
                c.handle_datagram(Instant::now(), from, &rx[..n]);
            }
        }
        assert!(c.is_connected());
        tokio::time::timeout(Duration::from_secs(5), connected_rx).await.unwrap().unwrap();
        // The client goes silent; a third party floods the server with garbage.
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let spammer = std::thread::spawn(move || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !s2.load(Ordering::Relaxed) && Instant::now() < deadline {
                let _ = s.send_to(&[9u8; 3], addr);
            }
        });
        let reason = tokio::time::timeout(Duration::from_secs(5), server_task).await;
        stop.store(true, Ordering::Relaxed);
        spammer.join().unwrap();
        assert_eq!(reason.expect("no timeout under traffic").unwrap(), DisconnectReason::TimedOut);
    }
}
