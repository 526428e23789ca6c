//! Handshakes and the session table: replayed and duplicate handshake packets, the pending and
//! session bounds (the default table of 131,072), denials, and replies never larger than their
//! request.

use std::net::SocketAddr;
use std::time::Instant;

use pvp_net::proto::*;

use super::exact;
use crate::common::{
    MS, UNIX, claims, client_addr, connect_request, connected_pair, key, pump, request_and_answer_challenge,
    server, server_addr,
};

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
fn pending_bound_counts_each_refused_request_once() {
    let now = Instant::now();
    let mut cfg = exact::config();
    cfg.max_pending = 3;
    let mut s = Server::new(cfg, now, UNIX).unwrap();
    for id in 0..10u64 {
        s.handle_datagram(
            now,
            exact::client_addr(),
            &connect_request(&exact::key().issue(&exact::claims(100 + id))),
        );
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
    s.handle_datagram(
        later,
        exact::client_addr(),
        &connect_request(&exact::key().issue(&exact::claims(200))),
    );
    assert_eq!(s.stats().pending, 1);
    assert_eq!(s.drops().get(DropReason::PendingFull), 7);
}

#[test]
fn full_table_denial_is_counted_once_and_is_no_larger_than_its_request() {
    let now = Instant::now();
    let mut cfg = exact::config();
    cfg.max_sessions = 1;
    let mut s = Server::new(cfg, now, UNIX).unwrap();
    let mut c1 = Client::new(ClientConfig::default(), exact::key().issue(&exact::claims(1)), now).unwrap();
    pump(now, &mut s, &mut c1, exact::client_addr());
    assert!(c1.is_connected());
    let other: SocketAddr = "127.0.0.1:6300".parse().unwrap();
    let mut c2 = Client::new(ClientConfig::default(), exact::key().issue(&exact::claims(2)), now).unwrap();
    let mut buf = [0u8; MAX_PACKET_LEN];
    let mut reply = [0u8; MAX_PACKET_LEN];
    for _ in 0..4 {
        let Some(t) = c2.poll_transmit(now, &mut buf) else { break };
        s.handle_datagram(now, other, &buf[..t.len]);
        while let Some(r) = s.poll_transmit(now, &mut reply) {
            assert!(r.len <= t.len, "reply {} > request {}", r.len, t.len);
            c2.handle_datagram(now, exact::server_addr(), &reply[..r.len]);
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
    let mut s = Server::new(exact::config(), now, UNIX).unwrap();
    let mut c = Client::new(ClientConfig::default(), exact::key().issue(&exact::claims(3)), now).unwrap();
    let mut buf = [0u8; MAX_PACKET_LEN];
    let mut reply = [0u8; MAX_PACKET_LEN];
    let mut t = now;
    let mut replies = 0;
    // Resend every handshake packet several times (answers dropped half the time).
    for i in 0..30 {
        t += ClientConfig::default().handshake_resend;
        while let Some(req) = c.poll_transmit(t, &mut buf) {
            s.handle_datagram(t, exact::client_addr(), &buf[..req.len]);
            while let Some(r) = s.poll_transmit(t, &mut reply) {
                replies += 1;
                assert!(r.len <= req.len, "reply {} > request {}", r.len, req.len);
                if i % 2 == 1 {
                    c.handle_datagram(t, exact::server_addr(), &reply[..r.len]);
                }
            }
        }
        // Resend a stale connect request too, after the session opened.
        if c.is_connected() {
            let req = connect_request(&exact::key().issue(&exact::claims(3)));
            s.handle_datagram(t, exact::client_addr(), &req);
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

#[test]
fn data_before_the_handshake_completes_gets_no_reply() {
    let now = Instant::now();
    let mut s = Server::new(exact::config(), now, UNIX).unwrap();
    let req = connect_request(&exact::key().issue(&exact::claims(9)));
    s.handle_datagram(now, exact::client_addr(), &req);
    let mut buf = [0u8; MAX_PACKET_LEN];
    assert!(s.poll_transmit(now, &mut buf).is_some());
    // A guessed connection id while the handshake is pending.
    for guess in [0u64, 1, 9, u64::MAX] {
        s.handle_datagram(now, exact::client_addr(), &exact::data(ConnectionId(guess), 1, b"x"));
        assert!(s.poll_transmit(now, &mut buf).is_none());
    }
    assert_eq!(s.drops().get(DropReason::UnknownConnection) + s.drops().get(DropReason::Malformed), 4);
    assert_eq!(s.session_count(), 0);
    assert_eq!(s.poll_event(), None);
}

#[test]
fn the_default_table_holds_131072_sessions_and_denies_one_more_then_frees_a_slot() {
    let now = Instant::now();
    let cfg = ServerConfig::new(exact::key(), exact::server_addr());
    assert_eq!(cfg.max_sessions, 131_072, "documented default");
    let n = cfg.max_sessions as u64;
    let mut s = Server::new(cfg, now, UNIX).unwrap();
    let mut buf = [0u8; MAX_PACKET_LEN];
    let mut first = None;
    let open = |s: &mut Server, i: u64| -> Packet<'static> {
        let mut buf = [0u8; MAX_PACKET_LEN];
        let from = SocketAddr::new(std::net::Ipv4Addr::from(0x0a00_0000 + i as u32).into(), 2000);
        request_and_answer_challenge(now, s, from, &exact::key().issue(&exact::claims(10_000 + i)));
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
