//! Helpers shared by the pvp-net test binaries: the sans-IO session fixture most tests use
//! (addresses, key, claims, a server, a connected pair), handshake helpers that take their own
//! addresses, key and claims as arguments, and the io_uring helpers in [`uring`].
// Each test binary includes this module but uses only a subset of it.
#![allow(dead_code)]

pub(crate) mod uring;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pvp_core::{MatchId, PlayerId};
use pvp_net::proto::*;

/// The wall clock (time since the Unix epoch) the servers under test start at.
pub(crate) const UNIX: Duration = Duration::from_secs(1_700_000_000);

/// One millisecond, the unit most sans-IO tests step time in.
pub(crate) const MS: Duration = Duration::from_millis(1);

/// The server address of the shared fixture.
pub(crate) fn server_addr() -> SocketAddr {
    "127.0.0.1:7000".parse().unwrap()
}

/// The client address of the shared fixture.
pub(crate) fn client_addr() -> SocketAddr {
    "127.0.0.1:5555".parse().unwrap()
}

/// The token key of the shared fixture.
pub(crate) fn key() -> TokenKey {
    TokenKey::from_bytes([9; 32])
}

/// Claims of the shared fixture for `token_id` (match 3, player `token_id + 100`).
pub(crate) fn claims(token_id: u64) -> TokenClaims {
    claims_for(token_id, MatchId::new(3), PlayerId::new(token_id.wrapping_add(100)), server_addr())
}

/// A server with the default configuration at [`server_addr`].
pub(crate) fn server(now: Instant) -> Server {
    Server::new(ServerConfig::new(key(), server_addr()), now, UNIX).unwrap()
}

/// A [`server`] and a client (at [`client_addr`], token `token_id`) after their handshake.
pub(crate) fn connected_pair(now: Instant, token_id: u64) -> (Server, Client, ConnectionId) {
    let mut s = server(now);
    let mut c = Client::new(ClientConfig::default(), key().issue(&claims(token_id)), now).unwrap();
    let conn = handshake(now, &mut s, &mut c, client_addr());
    (s, c, conn)
}

/// Claims for `token_id` that stay valid for a minute past [`UNIX`].
pub(crate) fn claims_for(
    token_id: u64,
    match_id: MatchId,
    player_id: PlayerId,
    server_addr: SocketAddr,
) -> TokenClaims {
    TokenClaims {
        token_id,
        match_id,
        player_id,
        expires_at_unix_ms: UNIX.as_millis() as u64 + 60_000,
        server_addr,
    }
}

/// A `ConnectRequest` datagram carrying `token`.
pub(crate) fn connect_request(token: &ConnectToken) -> Vec<u8> {
    let mut buf = [0u8; MAX_PACKET_LEN];
    let n = Packet::ConnectRequest { token: &token.0 }.encode(&mut buf).unwrap();
    buf[..n].to_vec()
}

/// Shuttles datagrams between one client (at `from`) and the server at `now` until both are
/// quiet, or 16 rounds.
pub(crate) fn pump(now: Instant, server: &mut Server, client: &mut Client, from: SocketAddr) {
    let mut buf = [0u8; MAX_PACKET_LEN];
    for _ in 0..16 {
        let mut moved = false;
        while let Some(t) = client.poll_transmit(now, &mut buf) {
            moved = true;
            server.handle_datagram(now, from, &buf[..t.len]);
        }
        while let Some(t) = server.poll_transmit(now, &mut buf) {
            moved = true;
            if t.destination == from {
                client.handle_datagram(now, server.config().server_addr, &buf[..t.len]);
            }
        }
        if !moved {
            return;
        }
    }
}

/// Runs the handshake of a fresh `client` (at `from`) with `server`, asserts both ends see it
/// connect (the server's next event is `Connected` for it) and returns the connection id.
pub(crate) fn handshake(
    now: Instant,
    server: &mut Server,
    client: &mut Client,
    from: SocketAddr,
) -> ConnectionId {
    pump(now, server, client, from);
    assert!(client.is_connected());
    let conn = client.connection_id().unwrap();
    assert!(
        matches!(server.poll_event(), Some(ServerEvent::Connected { connection, .. }) if connection == conn)
    );
    conn
}

/// Sends a `ConnectRequest` carrying `token` to `server` from `from` and answers the challenge
/// it replies with; the server's reply to the answer is left queued.
pub(crate) fn request_and_answer_challenge(
    now: Instant,
    server: &mut Server,
    from: SocketAddr,
    token: &ConnectToken,
) {
    let mut buf = [0u8; MAX_PACKET_LEN];
    server.handle_datagram(now, from, &connect_request(token));
    let t = server.poll_transmit(now, &mut buf).unwrap();
    let Ok(Packet::Challenge { token_id, challenge }) = Packet::decode(&buf[..t.len]) else {
        panic!("expected a challenge")
    };
    let n = Packet::ChallengeResponse { token_id, challenge }.encode(&mut buf).unwrap();
    let resp = buf[..n].to_vec();
    server.handle_datagram(now, from, &resp);
}

/// Hands every datagram `client` has queued at `now` to `server` (as from `from`), asserting
/// there are at most `max`; returns how many there were.
pub(crate) fn flush_client(
    now: Instant,
    client: &mut Client,
    server: &mut Server,
    from: SocketAddr,
    max: usize,
) -> usize {
    let mut buf = [0u8; MAX_PACKET_LEN];
    let mut sent = 0;
    while let Some(t) = client.poll_transmit(now, &mut buf) {
        sent += 1;
        assert!(sent <= max);
        server.handle_datagram(now, from, &buf[..t.len]);
    }
    sent
}
