//! netcode 1.02 interop against a client and a server this project did not write:
//! `renetcode` 2.x (crates.io). Loopback only; every loop is bounded by a deadline.
//!
//! `renetcode::ConnectToken::{read, write}` frame the standard 2048-byte token with the
//! client id in front (8 bytes, its own addition) and without the zero padding; the token
//! bytes in between are the standard's, which is what these tests hand across.

use std::io::Cursor;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pvp_net::game::{GameClient, GameEvent, GameServer, GameServerConfig};
use pvp_net::netcode::{
    ClientConfig, ClientState, ConnectToken, DisconnectReason, IssuerConfig, Key, TokenIssuer,
};
use renetcode::{ClientAuthentication, NetcodeClient, NetcodeServer, ServerAuthentication, ServerResult};

const PROTOCOL_ID: u64 = 0x7076_7000_0000_0102;

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

/// Our 2048 bytes, framed the way `renetcode::ConnectToken::read` expects.
fn to_renetcode(client_id: u64, ours: &[u8; 2048]) -> renetcode::ConnectToken {
    let mut framed = client_id.to_le_bytes().to_vec();
    framed.extend_from_slice(ours);
    renetcode::ConnectToken::read(&mut Cursor::new(&framed[..])).expect("renetcode reads our token")
}

/// renetcode's token as the standard's 2048 bytes.
fn from_renetcode(t: &renetcode::ConnectToken) -> [u8; 2048] {
    let mut framed = Vec::new();
    t.write(&mut framed).unwrap();
    let mut out = [0u8; 2048];
    out[..framed.len() - 8].copy_from_slice(&framed[8..]);
    out
}

#[test]
fn renetcode_client_joins_our_game_server_and_exchanges_payloads() {
    let key = Key::random();
    let server =
        GameServer::bind(GameServerConfig::new("127.0.0.1:0".parse().unwrap(), PROTOCOL_ID, key.clone()))
            .unwrap();
    let issuer = TokenIssuer::new(IssuerConfig::new(PROTOCOL_ID, key));
    // A plain netcode client: user data in no layout of ours, so no payload layer.
    let user_data = [0xAB; 256];
    let ours = issuer.token_with_user_data(unix_now(), 4242, &[server.public_address()], user_data).unwrap();
    let token = to_renetcode(4242, &ours.to_bytes().unwrap());
    // renetcode read what we issued, field by field.
    assert_eq!(token.protocol_id, PROTOCOL_ID);
    assert_eq!(token.expire_timestamp, ours.expire_timestamp);
    assert_eq!(token.server_addresses[0], Some(server.public_address()));
    assert_eq!(&token.client_to_server_key, ours.client_to_server_key.as_bytes());
    assert_eq!(&token.server_to_client_key, ours.server_to_client_key.as_bytes());

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    let mut client =
        NetcodeClient::new(unix_now(), ClientAuthentication::Secure { connect_token: token }).unwrap();
    let mut last = Instant::now();
    let mut buf = [0u8; 1500];
    let mut events = Vec::new();
    let mut session = None;
    let mut server_got = Vec::new();
    let mut client_got = Vec::new();
    let mut sent = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && (server_got.is_empty() || client_got.is_empty()) {
        let now = Instant::now();
        if let Some((packet, addr)) = client.update(now - last) {
            socket.send_to(packet, addr).unwrap();
        }
        last = now;
        while let Ok((n, _)) = socket.recv_from(&mut buf) {
            if let Some(p) = client.process_packet(&mut buf[..n]) {
                client_got.push(p.to_vec());
            }
        }
        if client.is_connected() && !sent {
            let (addr, packet) = client.generate_payload_packet(b"hello from renetcode").unwrap();
            socket.send_to(packet, addr).unwrap();
            sent = true;
        }
        server.poll_events(&mut events, 64);
        for e in events.drain(..) {
            match e {
                GameEvent::Connected { session: s, user_data: ud, seat, .. } => {
                    assert_eq!(*ud, user_data, "user data reached the server as issued");
                    assert!(seat.is_none());
                    assert_eq!(s.client_id(), 4242);
                    session = Some(s);
                }
                GameEvent::Payload { session: s, payload } => {
                    server_got.push(payload.as_slice().to_vec());
                    server.sender().send(s, b"hello from pvp").unwrap();
                }
                other => panic!("unexpected event {other:?}"),
            }
        }
    }
    assert!(session.is_some(), "renetcode client connected");
    assert_eq!(server_got, vec![b"hello from renetcode".to_vec()]);
    assert_eq!(client_got, vec![b"hello from pvp".to_vec()]);

    let (addr, packet) = client.disconnect().unwrap();
    socket.send_to(packet, addr).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut reason = None;
    while reason.is_none() && Instant::now() < deadline {
        server.poll_events(&mut events, 64);
        for e in events.drain(..) {
            if let GameEvent::Disconnected { reason: r, .. } = e {
                reason = Some(r);
            }
        }
        std::thread::yield_now();
    }
    assert_eq!(reason, Some(DisconnectReason::Peer));
    assert_eq!(server.stats().sessions, 0);
    assert_eq!(server.stats().dropped, 0, "{:?}", server.drops());
}

#[test]
fn our_game_client_joins_a_renetcode_server_with_its_token() {
    let private_key = renetcode::generate_random_bytes::<32>();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
    let addr: SocketAddr = socket.local_addr().unwrap();
    let mut server = NetcodeServer::new(renetcode::ServerConfig {
        current_time: unix_now(),
        max_clients: 16,
        protocol_id: PROTOCOL_ID,
        public_addresses: vec![addr],
        authentication: ServerAuthentication::Secure { private_key },
    });
    let user_data = [0x5A; 256];
    let theirs = renetcode::ConnectToken::generate(
        unix_now(),
        PROTOCOL_ID,
        30,
        77,
        10,
        vec![addr],
        Some(&user_data),
        &private_key,
    )
    .unwrap();
    let token = ConnectToken::from_bytes(&from_renetcode(&theirs)).expect("we read renetcode's token");
    assert_eq!(token.protocol_id, PROTOCOL_ID);
    assert_eq!(token.server_addresses, vec![addr]);
    assert_eq!(token.timeout_seconds, 10);
    assert_eq!(token.client_to_server_key.as_bytes(), &theirs.client_to_server_key);

    let mut config = ClientConfig::default();
    config.layered = false; // renetcode delivers payloads as they are
    let mut client = GameClient::new(token, config).unwrap();
    let mut buf = [0u8; 1500];
    let mut last = Instant::now();
    let mut connected_id = None;
    let mut server_got = Vec::new();
    let mut client_got = Vec::new();
    let mut sent = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && (server_got.is_empty() || client_got.is_empty()) {
        let mut cbuf = [0u8; 1500];
        if let Some(n) = client.recv_payload(&mut cbuf).unwrap() {
            client_got.push(cbuf[..n].to_vec());
        }
        if client.is_connected() && !sent {
            client.send(b"hello from pvp").unwrap();
            sent = true;
        }
        let now = Instant::now();
        server.update(now - last);
        last = now;
        for id in server.clients_id() {
            if let ServerResult::PacketToSend { addr, payload } = server.update_client(id) {
                socket.send_to(payload, addr).unwrap();
            }
        }
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            match server.process_packet(from, &mut buf[..n]) {
                ServerResult::PacketToSend { addr, payload } => {
                    socket.send_to(payload, addr).unwrap();
                }
                ServerResult::ClientConnected { client_id, addr, user_data: ud, payload } => {
                    assert_eq!(*ud, user_data);
                    connected_id = Some(client_id);
                    socket.send_to(payload, addr).unwrap();
                }
                ServerResult::Payload { client_id, payload } => {
                    server_got.push(payload.to_vec());
                    let (to, p) = server.generate_payload_packet(client_id, b"hello from renetcode").unwrap();
                    socket.send_to(p, to).unwrap();
                }
                ServerResult::ClientDisconnected { .. } => panic!("disconnected early"),
                ServerResult::None => {}
            }
        }
    }
    assert_eq!(connected_id, Some(77));
    assert_eq!(server_got, vec![b"hello from pvp".to_vec()]);
    assert_eq!(client_got, vec![b"hello from renetcode".to_vec()]);

    client.disconnect();
    assert_eq!(client.state(), ClientState::Disconnected);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut gone = false;
    while !gone && Instant::now() < deadline {
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if let ServerResult::ClientDisconnected { client_id, .. } =
                server.process_packet(from, &mut buf[..n])
            {
                assert_eq!(client_id, 77);
                gone = true;
            }
        }
    }
    assert!(gone, "renetcode saw our disconnect packets");
    assert_eq!(server.connected_clients(), 0);
}
