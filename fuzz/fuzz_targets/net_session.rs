//! The server and client state machines fed arbitrary datagrams, sends and clock steps, mixed
//! with valid handshakes: never a panic, bounds always hold.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pvp_core::{MatchId, PlayerId};
use pvp_net::proto::*;

#[derive(Debug, Arbitrary)]
enum Op {
    /// Raw bytes to the server from one of a few addresses.
    ToServer {
        from: u8,
        bytes: Vec<u8>,
    },
    /// Raw bytes to the client.
    ToClient {
        bytes: Vec<u8>,
    },
    /// A valid connect request with token `id` from address `from`.
    Connect {
        from: u8,
        id: u8,
    },
    /// Deliver what the client and server want to send to each other.
    Exchange,
    /// Server or client sends data / reliable / disconnects.
    ServerSend {
        reliable: bool,
        len: u8,
    },
    ClientSend {
        reliable: bool,
        len: u8,
    },
    ServerDisconnect,
    ClientDisconnect,
    /// Advance the clock.
    Tick {
        ms: u16,
    },
}

fuzz_target!(|ops: Vec<Op>| {
    let start = Instant::now();
    let mut now = start;
    let key = TokenKey::from_bytes([1; 32]);
    let server_addr: SocketAddr = "10.0.0.1:7000".parse().unwrap();
    let client_addr: SocketAddr = "10.0.0.2:5000".parse().unwrap();
    let mut cfg = ServerConfig::new(key.clone(), server_addr);
    cfg.max_sessions = 4;
    cfg.max_pending = 4;
    cfg.secret = [2; 32];
    let mut server = Server::new(cfg, now, Duration::from_secs(1_000)).unwrap();
    let claims = |id: u8| TokenClaims {
        token_id: u64::from(id),
        match_id: MatchId::new(1),
        player_id: PlayerId::new(u64::from(id)),
        expires_at_unix_ms: 1_000_000 + 20_000,
        server_addr,
    };
    let mut client = Client::new(ClientConfig::default(), key.issue(&claims(0)), now).unwrap();
    let mut buf = [0u8; MAX_PACKET_LEN];
    let mut buf2 = [0u8; MAX_PACKET_LEN];
    let addr = |i: u8| SocketAddr::new([10, 0, 1, i % 8].into(), 4000);
    for op in ops.into_iter().take(256) {
        match op {
            Op::ToServer { from, bytes } => {
                server.handle_datagram(now, addr(from), &bytes);
            }
            Op::ToClient { bytes } => {
                client.handle_datagram(now, server_addr, &bytes);
            }
            Op::Connect { from, id } => {
                let t = key.issue(&claims(id));
                let n = Packet::ConnectRequest { token: &t.0 }.encode(&mut buf).unwrap();
                server.handle_datagram(now, addr(from), &buf[..n]);
            }
            Op::Exchange => {
                for _ in 0..16 {
                    let Some(t) = client.poll_transmit(now, &mut buf) else {
                        break;
                    };
                    server.handle_datagram(now, client_addr, &buf[..t.len]);
                }
                for _ in 0..64 {
                    let Some(t) = server.poll_transmit(now, &mut buf) else {
                        break;
                    };
                    assert!(t.len <= MAX_PACKET_LEN);
                    if t.destination == client_addr {
                        client.handle_datagram(now, server_addr, &buf[..t.len]);
                    }
                }
            }
            Op::ServerSend { reliable, len } => {
                let payload = vec![7u8; usize::from(len)];
                if let Some(c) = client.connection_id() {
                    if reliable {
                        let _ = server.send_reliable(c, &payload);
                    } else if let Ok(t) = server.send(now, c, &payload, &mut buf2) {
                        client.handle_datagram(now, server_addr, &buf2[..t.len]);
                    }
                }
            }
            Op::ClientSend { reliable, len } => {
                let payload = vec![9u8; usize::from(len)];
                if reliable {
                    let _ = client.send_reliable(&payload);
                } else if let Ok(t) = client.send(now, &payload, &mut buf2) {
                    server.handle_datagram(now, client_addr, &buf2[..t.len]);
                }
            }
            Op::ServerDisconnect => {
                if let Some(c) = client.connection_id() {
                    server.disconnect(c);
                }
            }
            Op::ClientDisconnect => client.disconnect(),
            Op::Tick { ms } => {
                now += Duration::from_millis(u64::from(ms));
                server.handle_timeout(now);
                client.handle_timeout(now);
            }
        }
        while server.poll_event().is_some() {}
        while client.poll_event().is_some() {}
        let s = server.stats();
        assert!(s.sessions <= 4);
        assert!(s.pending <= 4);
    }
});
