//! Disconnects: idempotent on both ends, exactly one event on each side, and nothing sent by a
//! client that never connected.

use std::time::Instant;

use pvp_core::PlayerId;
use pvp_net::proto::*;

use super::exact;
use crate::common::{claims, client_addr, connected_pair, flush_client, key};

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
fn client_disconnect_gives_exactly_one_event_on_each_side() {
    let now = Instant::now();
    let (mut s, mut c, conn) = exact::pair(now);
    c.disconnect();
    c.disconnect();
    let sent = flush_client(now, &mut c, &mut s, exact::client_addr(), 2);
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
