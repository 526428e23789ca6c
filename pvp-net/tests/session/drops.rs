//! Bad datagrams: each is counted once under its reason and changes nothing else, replayed and
//! stale data never deliver, foreign and garbage datagrams are dropped by the client, and a full
//! control queue is counted and recovers once drained.

use std::net::SocketAddr;
use std::time::Instant;

use pvp_net::proto::*;

use super::exact;
use crate::common::{MS, UNIX, claims, client_addr, connect_request, connected_pair, key, pump, server_addr};

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
fn each_bad_packet_is_counted_once_under_its_reason_and_nothing_else_changes() {
    let now = Instant::now();
    let (mut s, mut c, conn) = exact::pair(now);
    let stranger: SocketAddr = "127.0.0.1:6999".parse().unwrap();
    let mut challenge = [0u8; MAX_PACKET_LEN];
    let n = Packet::Challenge { token_id: 1, challenge: [0; 16] }.encode(&mut challenge).unwrap();
    let mut resp = [0u8; MAX_PACKET_LEN];
    let rn = Packet::ChallengeResponse { token_id: 77, challenge: [0; 16] }.encode(&mut resp).unwrap();
    let mut forged = connect_request(&exact::key().issue(&exact::claims(50)));
    forged[20] ^= 1;
    let cases: Vec<(Vec<u8>, SocketAddr, DropReason)> = vec![
        (vec![], exact::client_addr(), DropReason::Truncated),
        (vec![0u8; MAX_PACKET_LEN + 1], exact::client_addr(), DropReason::Oversized),
        (challenge[..n].to_vec(), exact::client_addr(), DropReason::Unexpected),
        (resp[..rn].to_vec(), exact::client_addr(), DropReason::BadChallenge),
        (forged, exact::client_addr(), DropReason::BadToken),
        (exact::data(ConnectionId(conn.0 ^ 1), 1, b"x"), exact::client_addr(), DropReason::UnknownConnection),
        (exact::data(conn, 1, b"x"), stranger, DropReason::WrongAddress),
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
    assert!(s.handle_datagram(now, exact::client_addr(), &exact::data(conn, 1, b"ok")).is_some());
    let mut buf = [0u8; MAX_PACKET_LEN];
    let t = c.send(now, b"fine", &mut buf).unwrap();
    // seq 1 was already used by the hand-made packet above: counted as a replay, once.
    assert!(s.handle_datagram(now, exact::client_addr(), &buf[..t.len]).is_none());
    assert_eq!(s.drops().get(DropReason::Replayed), 1);
    // A disconnect from a stranger is refused and counted; the session stays.
    let mut d = [0u8; MAX_PACKET_LEN];
    let dn = Packet::Disconnect { connection_id: conn.0 }.encode(&mut d).unwrap();
    s.handle_datagram(now, stranger, &d[..dn]);
    assert_eq!(s.drops().get(DropReason::WrongAddress), 2);
    assert_eq!(s.session_count(), 1);
}

#[test]
fn client_counts_each_bad_datagram_once_under_its_reason() {
    let now = Instant::now();
    let (mut s, mut c, conn) = exact::pair(now);
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
    let rn =
        Packet::ConnectRequest { token: &exact::key().issue(&exact::claims(1)).0 }.encode(&mut req).unwrap();
    let mut other_conn = d1.clone();
    // The connection id follows the 2-byte header.
    other_conn[2] ^= 0xFF;
    let stranger: SocketAddr = "127.0.0.1:7999".parse().unwrap();
    assert_eq!(c.handle_datagram(now, exact::server_addr(), &d40), Some(&b"d"[..]));
    let cases: Vec<(Vec<u8>, SocketAddr, DropReason)> = vec![
        (d1.clone(), stranger, DropReason::WrongAddress),
        (vec![1], exact::server_addr(), DropReason::Truncated),
        (req[..rn].to_vec(), exact::server_addr(), DropReason::Unexpected),
        (other_conn, exact::server_addr(), DropReason::UnknownConnection),
        (d40.clone(), exact::server_addr(), DropReason::Replayed),
        (d1, exact::server_addr(), DropReason::Stale),
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
