//! The sans-IO session protocol (`pvp_net::proto`): end to end over the simulated network here
//! (handshake, data, reliability, tokens, bounds, timeouts, bad input), and `Server` / `Client`
//! driven by hand in the submodules, held to their rustdoc at the edges: configs, tokens and the
//! replay ledger, handshakes and the session table, data and the reliable channel, timers at
//! their exact boundaries, counted drops, and disconnects. Sans-IO: `now` is always passed.

#[path = "../common/mod.rs"]
mod common;
mod config;
mod data;
mod disconnects;
mod drops;
mod exact;
mod handshakes;
mod timers;
mod tokens;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pvp_core::{MatchId, PlayerId};
use pvp_net::proto::*;
use pvp_net::sim::{Harness, LinkConditions};

use common::{MS, connect_request, request_and_answer_challenge};

fn connect_all(h: &mut Harness) -> bool {
    h.run_until(Duration::from_secs(5), |h| (0..h.client_count()).all(|i| h.client(i).is_connected()))
}

/// The key and server address the handshake tests below share.
fn key_and_addr() -> (TokenKey, SocketAddr) {
    (TokenKey::from_bytes([3; 32]), "127.0.0.1:7000".parse().unwrap())
}

/// A token for match 1, valid until Unix ms 2,000,000, for the server at `addr`.
fn issue(key: &TokenKey, addr: SocketAddr, token_id: u64, player: u64) -> ConnectToken {
    key.issue(&TokenClaims {
        token_id,
        match_id: MatchId::new(1),
        player_id: PlayerId::new(player),
        expires_at_unix_ms: 2_000_000,
        server_addr: addr,
    })
}

#[test]
fn handshake_and_data_on_clean_link() {
    let mut h = Harness::new(1, LinkConditions::clean(10 * MS));
    let c = h.add_client(77);
    assert!(connect_all(&mut h));
    let conn = h.client(c).connection_id().unwrap();
    match &h.server_events[0] {
        ServerEvent::Connected { connection, player, match_id, addr } => {
            assert_eq!(*connection, conn);
            assert_eq!(*player, PlayerId::new(77));
            assert_eq!(*match_id, MatchId::new(1));
            assert_eq!(*addr, h.client_addr(c));
        }
        e => panic!("unexpected {e:?}"),
    }
    assert!(h.client_send(c, b"up"));
    assert!(h.server_send(conn, b"down"));
    h.advance(50 * MS);
    assert_eq!(h.server_payloads, vec![(conn, b"up".to_vec())]);
    assert_eq!(h.client_payloads[c], vec![b"down".to_vec()]);
    assert_eq!(h.server.drops().total(), 0);
    // The server's next packet acks "up": an RTT sample of at least the 20 ms round trip.
    assert!(h.client_send(c, b"up2"));
    h.advance(10 * MS);
    assert!(h.server_send(conn, b"down2"));
    h.advance(20 * MS);
    let rtt = h.client(c).rtt().unwrap();
    assert!(rtt >= 20 * MS && rtt <= 40 * MS, "{rtt:?}");
}

#[test]
fn same_seed_same_run() {
    let run = |seed| {
        let mut h = Harness::new(seed, LinkConditions::lossy(20 * MS, 0.3));
        for p in 0..10 {
            h.add_client(p);
        }
        h.advance(Duration::from_secs(2));
        (h.net.sent, h.net.lost, h.server.session_count())
    };
    assert_eq!(run(9), run(9));
}

#[test]
fn handshake_and_reliable_order_under_loss_reorder_duplication() {
    for seed in 0..8 {
        let mut h = Harness::new(seed, LinkConditions::lossy(15 * MS, 0.2));
        let clients: Vec<usize> = (0..5).map(|p| h.add_client(p)).collect();
        assert!(connect_all(&mut h), "seed {seed}: handshake");
        assert_eq!(h.server.session_count(), 5);
        // 40 reliable messages each way per client, more than the window: queue as room frees.
        let total = 40u32;
        let mut next_up = vec![0u32; clients.len()];
        let mut next_down = vec![0u32; clients.len()];
        let mut ok = false;
        for _ in 0..3000 {
            if ok {
                break;
            }
            for &c in &clients {
                while next_up[c] < total && h.client_mut(c).send_reliable(&next_up[c].to_le_bytes()).is_ok() {
                    next_up[c] += 1;
                }
                let conn = h.client(c).connection_id().unwrap();
                while next_down[c] < total
                    && h.server.send_reliable(conn, &next_down[c].to_le_bytes()).is_ok()
                {
                    next_down[c] += 1;
                }
            }
            h.advance(10 * MS);
            let server_msgs =
                h.server_events.iter().filter(|e| matches!(e, ServerEvent::Message { .. })).count();
            let client_msgs: usize = h
                .client_events
                .iter()
                .map(|v| v.iter().filter(|e| matches!(e, ClientEvent::Message(_))).count())
                .sum();
            ok = server_msgs == 5 * total as usize && client_msgs == 5 * total as usize;
        }
        assert!(ok, "seed {seed}: reliable delivery incomplete");
        for &c in &clients {
            let conn = h.client(c).connection_id().unwrap();
            let up: Vec<u32> = h
                .server_events
                .iter()
                .filter_map(|e| match e {
                    ServerEvent::Message { connection, bytes } if *connection == conn => {
                        Some(u32::from_le_bytes(bytes[..4].try_into().unwrap()))
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(up, (0..total).collect::<Vec<_>>(), "seed {seed} up order");
            let down: Vec<u32> = h.client_events[c]
                .iter()
                .filter_map(|e| match e {
                    ClientEvent::Message(b) => Some(u32::from_le_bytes(b[..4].try_into().unwrap())),
                    _ => None,
                })
                .collect();
            assert_eq!(down, (0..total).collect::<Vec<_>>(), "seed {seed} down order");
        }
        assert!(h.net.lost > 0 && h.net.duplicated > 0, "conditions exercised");
    }
}

#[test]
fn token_checks_and_single_use() {
    let mut h = Harness::new(3, LinkConditions::clean(5 * MS));
    let a = h.add_client(1);
    assert!(connect_all(&mut h));
    let from: SocketAddr = "10.9.9.9:9999".parse().unwrap();

    // Expired.
    let mut claims = h.claims(2);
    claims.expires_at_unix_ms = h.unix_ms();
    h.inject_to_server(from, &connect_request(&h.key.issue(&claims)));
    // Wrong server.
    let mut claims = h.claims(3);
    claims.server_addr = "10.0.0.2:7000".parse().unwrap();
    h.inject_to_server(from, &connect_request(&h.key.issue(&claims)));
    // Wrong key.
    let claims = h.claims(4);
    let forged = TokenKey::from_bytes([1; 32]).issue(&claims);
    h.inject_to_server(from, &connect_request(&forged));
    h.advance(20 * MS);
    assert_eq!(h.server.drops().get(DropReason::TokenExpired), 1);
    assert_eq!(h.server.drops().get(DropReason::TokenWrongServer), 1);
    assert_eq!(h.server.drops().get(DropReason::BadToken), 1);
    assert_eq!(h.server.stats().pending, 0);

    // A used token: a second client with the same claims is refused.
    let used = h.claims(5);
    let b = h.add_client_with(ClientConfig::default(), &used);
    assert!(h.run_until(Duration::from_secs(2), |h| h.client(b).is_connected()));
    let b2 = h.add_client_with(ClientConfig::default(), &used);
    h.advance(Duration::from_millis(500));
    assert!(!h.client(b2).is_connected());
    assert!(h.server.drops().get(DropReason::TokenReplayed) >= 1);
    assert_eq!(h.server.session_count(), 2);
    assert!(h.client(a).is_connected());
}

#[test]
fn token_in_handshake_from_another_address_is_refused() {
    let mut h = Harness::new(4, LinkConditions::clean(5 * MS));
    let claims = h.claims(1);
    let token = h.key.issue(&claims);
    h.inject_to_server("10.7.0.1:1".parse().unwrap(), &connect_request(&token));
    h.advance(MS);
    h.inject_to_server("10.7.0.2:1".parse().unwrap(), &connect_request(&token));
    h.advance(20 * MS);
    assert_eq!(h.server.drops().get(DropReason::TokenReplayed), 1);
    assert_eq!(h.server.stats().pending, 1);
}

#[test]
fn no_reply_before_handshake_is_larger_than_its_request() {
    let now = Instant::now();
    let (key, addr) = key_and_addr();
    let mut cfg = ServerConfig::new(key.clone(), addr);
    cfg.max_sessions = 1;
    let mut s = Server::new(cfg, now, Duration::from_secs(1_000)).unwrap();
    let mut buf = [0u8; MAX_PACKET_LEN];
    let mut max_reply = 0;
    let mut min_request = usize::MAX;
    for i in 0..3u64 {
        let from: SocketAddr = format!("10.0.0.{}:1", i + 1).parse().unwrap();
        let token = issue(&key, addr, i, i);
        let req = connect_request(&token);
        min_request = min_request.min(req.len());
        s.handle_datagram(now, from, &req);
        s.handle_datagram(now, from, &req); // resend
        while let Some(t) = s.poll_transmit(now, &mut buf) {
            max_reply = max_reply.max(t.len);
            if let Ok(Packet::Challenge { token_id, challenge }) = Packet::decode(&buf[..t.len]) {
                let mut rb = [0u8; MAX_PACKET_LEN];
                let n = Packet::ChallengeResponse { token_id, challenge }.encode(&mut rb).unwrap();
                min_request = min_request.min(n);
                s.handle_datagram(now, from, &rb[..n]);
            }
        }
    }
    assert!(max_reply > 0);
    assert!(max_reply <= min_request, "reply {max_reply} > request {min_request}");
    // Third-party short garbage gets no reply at all.
    s.handle_datagram(now, "10.0.0.99:1".parse().unwrap(), &[1, 1, 0]);
    assert!(s.poll_transmit(now, &mut buf).is_none());
    assert_eq!(s.stats().denied_full, 2);
}

#[test]
fn pending_handshakes_are_bounded_and_expire() {
    let now = Instant::now();
    let (key, addr) = key_and_addr();
    let mut cfg = ServerConfig::new(key.clone(), addr);
    cfg.max_pending = 4;
    cfg.handshake_timeout = Duration::from_secs(1);
    let mut s = Server::new(cfg, now, Duration::from_secs(1_000)).unwrap();
    let send = |s: &mut Server, t: Instant, i: u64| {
        let token = issue(&key, addr, i, i);
        let from: SocketAddr = format!("10.0.{}.{}:1", i / 200, i % 200 + 1).parse().unwrap();
        s.handle_datagram(t, from, &connect_request(&token));
    };
    for i in 0..10 {
        send(&mut s, now, i);
    }
    assert_eq!(s.stats().pending, 4);
    assert_eq!(s.drops().get(DropReason::PendingFull), 6);
    let later = now + Duration::from_secs(2);
    s.handle_timeout(later);
    assert_eq!(s.stats().pending, 0);
    send(&mut s, later, 100);
    assert_eq!(s.stats().pending, 1);
}

#[test]
fn full_table_denies_and_client_learns_why() {
    let key = TokenKey::from_bytes([0x5a; 32]);
    let mut cfg = ServerConfig::new(key, "10.0.0.1:7000".parse().unwrap());
    cfg.max_sessions = 3;
    let mut h = Harness::with_server_config(5, LinkConditions::clean(5 * MS), cfg);
    for p in 0..4 {
        h.add_client(p);
    }
    h.advance(Duration::from_secs(1));
    assert_eq!(h.server.session_count(), 3);
    assert_eq!(h.server.stats().denied_full, 1);
    let denied = (0..4)
        .filter(|&i| {
            h.client(i).state() == ClientState::Disconnected(DisconnectReason::Denied(DenyReason::ServerFull))
        })
        .count();
    assert_eq!(denied, 1);
}

#[test]
fn keepalives_hold_idle_sessions_and_timeouts_close_cut_ones() {
    let mut h = Harness::new(6, LinkConditions::clean(10 * MS));
    let c = h.add_client(1);
    assert!(connect_all(&mut h));
    // 30 s with no game data: keep-alives hold the 10 s idle timeout off.
    h.advance(Duration::from_secs(30));
    assert!(h.client(c).is_connected());
    assert_eq!(h.server.session_count(), 1);
    // Cut the link: both ends time out.
    h.net.set_conditions(LinkConditions { loss: 1.0, ..LinkConditions::clean(10 * MS) });
    h.advance(Duration::from_secs(11));
    assert_eq!(h.client(c).state(), ClientState::Disconnected(DisconnectReason::TimedOut));
    assert_eq!(h.server.session_count(), 0);
    assert_eq!(h.server.stats().timeouts, 1);
    assert!(
        h.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Disconnected { reason: DisconnectReason::TimedOut, .. }))
    );
}

#[test]
fn handshake_times_out_without_server() {
    let mut h = Harness::new(7, LinkConditions { loss: 1.0, ..LinkConditions::clean(10 * MS) });
    let c = h.add_client(1);
    h.advance(Duration::from_secs(6));
    assert_eq!(h.client(c).state(), ClientState::Disconnected(DisconnectReason::HandshakeTimedOut));
}

#[test]
fn clean_disconnect_both_ways() {
    let mut h = Harness::new(8, LinkConditions::clean(10 * MS));
    let a = h.add_client(1);
    let b = h.add_client(2);
    assert!(connect_all(&mut h));
    h.client_mut(a).disconnect();
    h.advance(100 * MS);
    assert!(h.server_events.iter().any(|e| matches!(
        e,
        ServerEvent::Disconnected {
            player,
            reason: DisconnectReason::Peer,
            ..
        } if *player == PlayerId::new(1)
    )));
    let conn_b = h.client(b).connection_id().unwrap();
    assert!(h.server.disconnect(conn_b));
    assert!(!h.server.disconnect(conn_b));
    h.advance(100 * MS);
    assert_eq!(h.client(b).state(), ClientState::Disconnected(DisconnectReason::Peer));
    assert_eq!(h.server.session_count(), 0);
}

#[test]
fn bad_packets_are_counted_by_reason_and_dropped() {
    let mut h = Harness::new(9, LinkConditions::clean(MS));
    let c = h.add_client(1);
    assert!(connect_all(&mut h));
    let from = h.client_addr(c);
    let conn = h.client(c).connection_id().unwrap();
    // A valid data packet, then a replay of it.
    let mut buf = [0u8; MAX_PACKET_LEN];
    let now = h.now;
    let t = h.client_mut(c).send(now, b"x", &mut buf).unwrap();
    let pkt = buf[..t.len].to_vec();
    h.inject_to_server(from, &pkt);
    h.inject_to_server(from, &pkt);
    // Same packet from another address.
    h.inject_to_server("10.3.3.3:3".parse().unwrap(), &pkt);
    // Unknown connection.
    let mut other = pkt.clone();
    other[2] ^= 0xff;
    h.inject_to_server(from, &other);
    // Truncated, oversized, wrong version, garbage kind, server-only kind.
    h.inject_to_server(from, &pkt[..5]);
    h.inject_to_server(from, &vec![1u8; MAX_PACKET_LEN + 1]);
    let mut wrong_version = pkt.clone();
    wrong_version[0] = 99;
    h.inject_to_server(from, &wrong_version);
    h.inject_to_server(from, &[PROTOCOL_VERSION, 200, 1, 2, 3]);
    let n = Packet::Accepted { token_id: 1, connection_id: conn.0 }.encode(&mut buf).unwrap();
    h.inject_to_server(from, &buf[..n]);
    h.advance(10 * MS);
    let d = h.server.drops();
    assert_eq!(d.get(DropReason::Replayed), 1);
    assert_eq!(d.get(DropReason::WrongAddress), 1);
    assert_eq!(d.get(DropReason::UnknownConnection), 1);
    assert_eq!(d.get(DropReason::Truncated), 1);
    assert_eq!(d.get(DropReason::Oversized), 1);
    assert_eq!(d.get(DropReason::WrongVersion), 1);
    assert_eq!(d.get(DropReason::Malformed), 1);
    assert_eq!(d.get(DropReason::Unexpected), 1);
    assert_eq!(h.server_payloads.len(), 1);
    assert!(h.client(c).is_connected());
}

#[test]
fn hundred_thousand_sessions_fit_and_the_bound_holds() {
    let now = Instant::now();
    let (key, addr) = key_and_addr();
    let mut cfg = ServerConfig::new(key.clone(), addr);
    let n = 100_000u64;
    cfg.max_sessions = n as usize;
    cfg.max_pending = 1024;
    let mut s = Server::new(cfg, now, Duration::from_secs(1_000)).unwrap();
    let mut buf = [0u8; MAX_PACKET_LEN];
    for i in 0..=n {
        let from = SocketAddr::new(std::net::Ipv4Addr::from(0x0a00_0000 + i as u32).into(), 1000);
        let token = issue(&key, addr, i, i);
        request_and_answer_challenge(now, &mut s, from, &token);
        while s.poll_transmit(now, &mut buf).is_some() {}
        while s.poll_event().is_some() {}
    }
    assert_eq!(s.session_count(), n as usize);
    assert_eq!(s.stats().denied_full, 1);
    assert!(s.stats().pending <= 1024);
}

#[test]
fn a_shared_ledger_makes_tokens_single_use_across_servers() {
    let now = Instant::now();
    let (key, addr) = key_and_addr();
    let ledger = TokenLedger::new(16);
    let mk = || {
        let mut cfg = ServerConfig::new(key.clone(), addr);
        cfg.ledger = Some(ledger.clone());
        Server::new(cfg, now, Duration::from_secs(1_000)).unwrap()
    };
    let (mut w1, mut w2) = (mk(), mk());
    let token = issue(&key, addr, 42, 1);
    let handshake = |s: &mut Server, from: SocketAddr| {
        request_and_answer_challenge(now, s, from, &token);
        s.session_count()
    };
    assert_eq!(handshake(&mut w1, "10.0.0.1:1".parse().unwrap()), 1);
    assert_eq!(handshake(&mut w2, "10.0.0.2:2".parse().unwrap()), 0);
    assert_eq!(w2.drops().get(DropReason::TokenReplayed), 1);
    assert_eq!(ledger.len(), 1);
}

#[test]
fn client_restarts_a_handshake_the_server_forgot() {
    let key = TokenKey::from_bytes([0x5a; 32]);
    let mut cfg = ServerConfig::new(key, "10.0.0.1:7000".parse().unwrap());
    cfg.handshake_timeout = Duration::from_millis(300);
    let mut h = Harness::with_server_config(11, LinkConditions::clean(5 * MS), cfg);
    let c = h.add_client(1);
    // Let the challenge arrive, then lose everything the client sends for a while: the
    // server's pending entry expires.
    assert!(h.run_until(Duration::from_secs(1), |h| h.client(c).state() == ClientState::Challenged));
    h.net.set_conditions(LinkConditions { loss: 1.0, ..LinkConditions::clean(5 * MS) });
    h.advance(Duration::from_millis(350));
    assert_eq!(h.server.stats().pending, 0);
    h.net.set_conditions(LinkConditions::clean(5 * MS));
    let ok = h.run_until(Duration::from_secs(3), |h| h.client(c).is_connected());
    assert!(ok, "{:?} {:?} {:?}", h.client(c).state(), h.server.drops().snapshot(), h.server.stats());
    assert!(h.server.drops().get(DropReason::BadChallenge) >= 1);
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
