//! The fixture of the session tests that probe exact timer boundaries, ack bitfields and the
//! reliable channel: a server that fires its timers at their exact deadline (1 ns timer
//! granularity) at 127.0.0.1:7100, its client at 127.0.0.1:6100, and their own key and claims
//! (the shared fixture in `common` keeps the default granularity). Used qualified
//! (`exact::pair(now)`) so that it never mixes with `common`'s helpers of the same name.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pvp_core::{MatchId, PlayerId};
use pvp_net::proto::packet::{AckHeader, ReliableFrames};
use pvp_net::proto::*;

use crate::common::{UNIX, claims_for, handshake};

/// One nanosecond: the fixture's timer granularity, so deadlines can be probed exactly.
pub(crate) const NS: Duration = Duration::from_nanos(1);

/// The fixture's server address.
pub(crate) fn server_addr() -> SocketAddr {
    "127.0.0.1:7100".parse().unwrap()
}

/// The fixture's client address.
pub(crate) fn client_addr() -> SocketAddr {
    "127.0.0.1:6100".parse().unwrap()
}

/// The fixture's token key.
pub(crate) fn key() -> TokenKey {
    TokenKey::from_bytes([4; 32])
}

/// Claims for `token_id` (match 8, player `token_id + 1000`).
pub(crate) fn claims(token_id: u64) -> TokenClaims {
    claims_for(token_id, MatchId::new(8), PlayerId::new(token_id + 1000), server_addr())
}

/// The server configuration: timers fire at their exact deadline (1 ns granularity).
pub(crate) fn config() -> ServerConfig {
    let mut c = ServerConfig::new(key(), server_addr());
    c.timer_granularity = NS;
    c
}

/// A server and a client after their handshake, each having reported only `Connected`.
pub(crate) fn pair_with(
    now: Instant,
    cfg: ServerConfig,
    ccfg: ClientConfig,
) -> (Server, Client, ConnectionId) {
    let mut s = Server::new(cfg, now, UNIX).unwrap();
    let mut c = Client::new(ccfg, key().issue(&claims(1)), now).unwrap();
    let conn = handshake(now, &mut s, &mut c, client_addr());
    assert_eq!(s.poll_event(), None);
    assert_eq!(c.poll_event(), Some(ClientEvent::Connected(conn)));
    assert_eq!(c.poll_event(), None);
    (s, c, conn)
}

/// [`pair_with`] the fixture's [`config`] and a default client.
pub(crate) fn pair(now: Instant) -> (Server, Client, ConnectionId) {
    pair_with(now, config(), ClientConfig::default())
}

/// A data packet of `conn` with sequence `seq` carrying `payload`.
pub(crate) fn data(conn: ConnectionId, seq: u32, payload: &[u8]) -> Vec<u8> {
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

/// The ack header of an encoded data packet.
pub(crate) fn ack_of(bytes: &[u8]) -> AckHeader {
    match Packet::decode(bytes).unwrap() {
        Packet::Data { ack, .. } => ack,
        p => panic!("not data: {p:?}"),
    }
}
