//! The netcode server and client fed a mix of real handshake traffic and arbitrary datagrams
//! (from the client's address and from strangers), with time moving on: no panic, the slot
//! and pending bounds hold, garbage alone never opens a session, and a payload is only ever
//! delivered for a connected client.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pvp_net::netcode::{
    Client, ClientConfig, IssuerConfig, Key, MAX_PACKET_BYTES, Server, ServerConfig, TokenIssuer,
};

#[derive(Debug, Arbitrary)]
enum Op {
    /// Deliver the client's next packets to the server and back.
    Pump,
    /// A datagram to the server from the client's address.
    FromClient(Vec<u8>),
    /// A datagram to the server from a stranger.
    FromStranger(u8, Vec<u8>),
    /// A datagram to the client from the server's address.
    ToClient(Vec<u8>),
    /// Replay the last packet the client sent.
    Replay,
    Advance(u16),
    ServerSend(Vec<u8>),
    ClientSend(Vec<u8>),
    Reliable(Vec<u8>),
    Disconnect,
}

const UNIX: Duration = Duration::from_secs(1_800_000_000);

fuzz_target!(|ops: Vec<Op>| {
    let server_addr: SocketAddr = "10.0.0.1:1000".parse().expect("addr");
    let client_addr: SocketAddr = "10.0.0.2:2000".parse().expect("addr");
    let key = Key::from_bytes([3; 32]);
    let mut now = Instant::now();
    let mut sc = ServerConfig::new(7, key.clone(), server_addr);
    sc.max_clients = 2;
    sc.max_pending = 2;
    let mut server = Server::new(sc, now, UNIX).expect("config");
    let issuer = TokenIssuer::new(IssuerConfig::new(7, key));
    let token = issuer.token_with_user_data(UNIX, 1, &[server_addr], [0; 256]).expect("token");
    let mut cc = ClientConfig::default();
    cc.layered = false;
    let mut client = Client::new(token, cc, now, UNIX).expect("client");
    let mut buf = [0u8; MAX_PACKET_BYTES];
    let mut last: Vec<u8> = Vec::new();
    let mut real_traffic = false;
    for op in ops.into_iter().take(200) {
        match op {
            Op::Pump => {
                real_traffic = true;
                while let Some(t) = client.poll_transmit(now, &mut buf) {
                    last = buf[..t.len].to_vec();
                    if server.handle_datagram(now, client_addr, &buf[..t.len]).is_some() {
                        assert!(server.is_connected(1));
                    }
                }
                while let Some(t) = server.poll_transmit(now, &mut buf) {
                    if t.destination == client_addr {
                        let _ = client.handle_datagram(now, server_addr, &buf[..t.len]);
                    }
                }
            }
            Op::FromClient(d) => {
                if server.handle_datagram(now, client_addr, &d).is_some() {
                    assert!(server.is_connected(1));
                }
            }
            Op::FromStranger(i, d) => {
                let from = SocketAddr::from(([10, 9, 9, i], 3000));
                assert!(server.handle_datagram(now, from, &d).is_none(), "strangers have no session");
            }
            Op::ToClient(d) => {
                let _ = client.handle_datagram(now, server_addr, &d);
            }
            Op::Replay => {
                let _ = server.handle_datagram(now, client_addr, &last);
            }
            Op::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms));
                server.handle_timeout(now);
                client.handle_timeout(now);
            }
            Op::ServerSend(p) => {
                let _ = server.send(now, 1, &p, &mut buf);
            }
            Op::ClientSend(p) => {
                if let Ok(t) = client.send(now, &p, &mut buf) {
                    last = buf[..t.len].to_vec();
                }
            }
            Op::Reliable(p) => {
                let _ = server.send_reliable(1, &p);
                let _ = client.send_reliable(&p);
            }
            Op::Disconnect => client.disconnect(now),
        }
        let st = server.stats();
        assert!(st.sessions <= 2 && st.pending <= 2);
        if !real_traffic {
            assert_eq!(st.sessions, 0, "garbage alone opened a session");
        }
        while server.poll_event().is_some() {}
        while client.poll_event().is_some() {}
    }
});
