//! Timers: client and server keep-alives, idle and handshake timeouts at their exact
//! boundaries, resend intervals, what `poll_timeout` names, and timeouts closing sessions and
//! handshakes.

use std::time::{Duration, Instant};

use pvp_net::proto::*;

use super::exact::{self, NS};
use crate::common::{MS, claims, connected_pair, key};

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

// ---------------------------------------------------------------------------------------------
// Client

#[test]
fn client_poll_timeout_is_due_when_an_ack_or_a_first_reliable_send_is_owed() {
    let now = Instant::now();
    let (mut s, mut c, conn) = exact::pair(now);
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
    c.handle_datagram(t2, exact::server_addr(), &buf[..t.len]);
    assert_eq!(c.poll_event(), Some(ClientEvent::Message(b"to client".to_vec())));
    let due = c.poll_timeout().unwrap();
    assert!(due <= t2, "an ack is owed now, poll_timeout said {:?} later", due - t2);
    let t = c.poll_transmit(t2, &mut buf).unwrap();
    assert_eq!(exact::ack_of(&buf[..t.len]).reliable_ack, 1);
}

#[test]
fn client_poll_timeout_names_the_resend_of_the_oldest_message() {
    let now = Instant::now();
    let (_s, mut c, _conn) = exact::pair(now);
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
    let (_s, mut c, _conn) = exact::pair(now);
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
    let mut c = Client::new(cfg.clone(), exact::key().issue(&exact::claims(5)), now).unwrap();
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
// Server

#[test]
fn server_keepalive_and_idle_timeout_at_the_exact_boundary() {
    let now = Instant::now();
    let (mut s, _c, conn) = exact::pair(now);
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
    let (mut s, _c, conn) = exact::pair(now);
    let idle = s.config().idle_timeout;
    let t = now + idle - MS;
    s.handle_datagram(t, exact::client_addr(), &exact::data(conn, 1, b"")).ok_or(()).unwrap_err();
    s.handle_timeout(now + idle);
    assert_eq!(s.session_count(), 1);
    assert_eq!(s.session(conn).unwrap().last_recv, t);
    // A replayed packet does not.
    s.handle_datagram(t + idle - MS, exact::client_addr(), &exact::data(conn, 1, b""));
    s.handle_timeout(t + idle);
    assert_eq!(s.session_count(), 0);
}
