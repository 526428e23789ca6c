//! Connect tokens and the replay ledger: round trips for IPv4 and IPv6 servers, tampered,
//! expired, forged and wrong-server tokens refused without state, the expiry boundary on the
//! server clock, and single use across servers sharing a ledger.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pvp_net::proto::*;

use super::exact;
use crate::common::{MS, UNIX, claims, client_addr, connect_request, key, pump, server};

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

#[test]
fn token_expiry_boundary_follows_the_server_clock() {
    let now = Instant::now();
    let mut s = Server::new(exact::config(), now, UNIX).unwrap();
    let mut cl = exact::claims(7);
    cl.expires_at_unix_ms = UNIX.as_millis() as u64 + 1000;
    let req = connect_request(&exact::key().issue(&cl));
    let mut buf = [0u8; MAX_PACKET_LEN];
    s.handle_datagram(now + 1000 * MS, exact::client_addr(), &req);
    assert_eq!(s.drops().get(DropReason::TokenExpired), 1);
    assert!(s.poll_transmit(now, &mut buf).is_none());
    s.handle_datagram(now + 999 * MS, exact::client_addr(), &req);
    assert_eq!(s.drops().total(), 1);
    assert_eq!(s.stats().pending, 1);
    assert!(s.poll_transmit(now, &mut buf).is_some());
}

#[test]
fn a_token_for_the_same_ip_but_another_port_is_refused() {
    let now = Instant::now();
    let mut s = Server::new(exact::config(), now, UNIX).unwrap();
    let mut cl = exact::claims(8);
    cl.server_addr = "127.0.0.1:7101".parse().unwrap();
    s.handle_datagram(now, exact::client_addr(), &connect_request(&exact::key().issue(&cl)));
    cl.server_addr = "127.0.0.2:7100".parse().unwrap();
    s.handle_datagram(now, exact::client_addr(), &connect_request(&exact::key().issue(&cl)));
    assert_eq!(s.drops().get(DropReason::TokenWrongServer), 2);
    assert_eq!(s.drops().total(), 2);
    assert_eq!(s.stats().pending, 0);
}

#[test]
fn shared_ledger_counts_one_replay_and_opens_one_session_in_all() {
    let now = Instant::now();
    let ledger = TokenLedger::new(16);
    let mk = || {
        let mut c = exact::config();
        c.ledger = Some(ledger.clone());
        Server::new(c, now, UNIX).unwrap()
    };
    let (mut a, mut b) = (mk(), mk());
    let token = exact::key().issue(&exact::claims(11));
    let mut ca = Client::new(ClientConfig::default(), token, now).unwrap();
    let mut cb = Client::new(ClientConfig::default(), token, now).unwrap();
    let other: SocketAddr = "127.0.0.1:6200".parse().unwrap();
    // Both handshakes get as far as the challenge before either completes.
    let mut buf = [0u8; MAX_PACKET_LEN];
    let t = ca.poll_transmit(now, &mut buf).unwrap();
    a.handle_datagram(now, exact::client_addr(), &buf[..t.len]);
    let t = cb.poll_transmit(now, &mut buf).unwrap();
    b.handle_datagram(now, other, &buf[..t.len]);
    pump(now, &mut a, &mut ca, exact::client_addr());
    pump(now, &mut b, &mut cb, other);
    assert!(ca.is_connected());
    assert!(!cb.is_connected());
    assert_eq!(b.drops().get(DropReason::TokenReplayed), 1);
    assert_eq!(b.stats().sessions_opened + a.stats().sessions_opened, 1);
    assert_eq!(ledger.len(), 1);
    assert_eq!(b.stats().pending, 0, "the refused handshake is forgotten");
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
fn a_token_used_on_one_server_stays_used_on_another_after_the_session_ends() {
    let now = Instant::now();
    let ledger = TokenLedger::new(8);
    let mk = || {
        let mut c = exact::config();
        c.ledger = Some(ledger.clone());
        Server::new(c, now, UNIX).unwrap()
    };
    let (mut a, mut b) = (mk(), mk());
    let token = exact::key().issue(&exact::claims(21));
    let mut c1 = Client::new(ClientConfig::default(), token, now).unwrap();
    pump(now, &mut a, &mut c1, exact::client_addr());
    assert!(c1.is_connected());
    c1.disconnect();
    pump(now, &mut a, &mut c1, exact::client_addr());
    assert_eq!(a.session_count(), 0);
    // Same token, same address, other server sharing the ledger: refused once, no session.
    let mut c2 = Client::new(ClientConfig::default(), token, now).unwrap();
    pump(now, &mut b, &mut c2, exact::client_addr());
    assert!(!c2.is_connected());
    assert_eq!(b.drops().get(DropReason::TokenReplayed), 1);
    assert_eq!(b.stats().sessions_opened, 0);
    // And on the first server too.
    let mut c3 = Client::new(ClientConfig::default(), token, now).unwrap();
    pump(now, &mut a, &mut c3, exact::client_addr());
    assert!(!c3.is_connected());
    assert_eq!(a.drops().get(DropReason::TokenReplayed), 1);
}
