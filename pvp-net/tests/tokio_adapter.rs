//! The tokio adapter: a proto Client over a plain socket connects, sends, gets its echo; a
//! netcode socket serves a game client; idle sessions time out while other peers keep the
//! socket busy.
#![cfg(feature = "tokio")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pvp_core::{MatchId, PlayerId};
use pvp_net::proto::*;
use pvp_net::tokio_adapter::{Incoming, SessionSocket};

#[tokio::test]
async fn connect_and_echo() {
    let key = TokenKey::generate();
    let k = key.clone();
    let mut server =
        SessionSocket::bind("127.0.0.1:0".parse().unwrap(), move |a| ServerConfig::new(k, a)).await.unwrap();
    let addr = server.local_addr().unwrap();
    let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let token = key.issue(&TokenClaims {
        token_id: 9,
        match_id: MatchId::new(1),
        player_id: PlayerId::new(2),
        expires_at_unix_ms: unix + 30_000,
        server_addr: addr,
    });
    let server_task = tokio::spawn(async move {
        loop {
            match server.next().await.unwrap() {
                Incoming::Payload { connection, bytes, .. } => {
                    server.send(connection, &bytes).await.unwrap();
                    return server.server().stats().sessions;
                }
                Incoming::Event(_) => {}
                _ => {}
            }
        }
    });
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut c = Client::new(ClientConfig::default(), token, Instant::now()).unwrap();
    let mut buf = [0u8; MAX_PACKET_LEN];
    let mut rx = [0u8; MAX_PACKET_LEN];
    let mut echoed = None;
    for _ in 0..200 {
        let now = Instant::now();
        while let Some(t) = c.poll_transmit(now, &mut buf) {
            sock.send_to(&buf[..t.len], t.destination).await.unwrap();
        }
        if c.is_connected() {
            let t = c.send(now, b"hi", &mut buf).unwrap();
            sock.send_to(&buf[..t.len], t.destination).await.unwrap();
        }
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_millis(50), sock.recv_from(&mut rx)).await
        {
            if let Some(p) = c.handle_datagram(Instant::now(), from, &rx[..n]) {
                echoed = Some(p.to_vec());
                break;
            }
        }
    }
    assert_eq!(echoed.as_deref(), Some(&b"hi"[..]));
    assert_eq!(server_task.await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netcode_socket_serves_a_game_client() {
    use pvp_net::game::GameClient;
    use pvp_net::netcode::{self, IssuerConfig, Key, ServerEvent, TokenIssuer};
    use pvp_net::tokio_adapter::{NetcodeIncoming, NetcodeSocket};

    let key = Key::random();
    let k = key.clone();
    let mut server =
        NetcodeSocket::bind("127.0.0.1:0".parse().unwrap(), move |a| netcode::ServerConfig::new(5, k, a))
            .await
            .unwrap();
    let addr = server.local_addr().unwrap();
    let issuer = TokenIssuer::new(IssuerConfig::new(5, key));
    let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let token = issuer.token_with_user_data(unix, 11, &[addr], [1; 256]).unwrap();
    let server_task = tokio::spawn(async move {
        let mut connected = false;
        loop {
            match server.next().await.unwrap() {
                NetcodeIncoming::Event(ServerEvent::Connected { client_id, .. }) => {
                    assert_eq!(client_id, 11);
                    connected = true;
                }
                NetcodeIncoming::Payload { client_id, bytes } => {
                    assert!(connected);
                    server.send(client_id, &bytes).await.unwrap();
                    return server.server().stats().sessions;
                }
                _ => {}
            }
        }
    });
    let echoed = tokio::task::spawn_blocking(move || {
        let mut cc = netcode::ClientConfig::default();
        cc.layered = false;
        let mut client = GameClient::new(token, cc).unwrap();
        client.connect_blocking(Duration::from_secs(5)).unwrap();
        client.send(b"ping").unwrap();
        let mut buf = [0u8; 64];
        let n = client.recv_payload_timeout(&mut buf, Duration::from_secs(5)).unwrap().expect("echo");
        buf[..n].to_vec()
    })
    .await
    .unwrap();
    assert_eq!(echoed, b"ping");
    assert_eq!(tokio::time::timeout(Duration::from_secs(5), server_task).await.unwrap().unwrap(), 1);
}

/// A silent session times out even while other peers keep the socket busy.
#[tokio::test]
async fn idle_sessions_time_out_under_steady_traffic() {
    let key = TokenKey::generate();
    let k = key.clone();
    let mut server = SessionSocket::bind("127.0.0.1:0".parse().unwrap(), move |a| {
        let mut c = ServerConfig::new(k, a);
        c.idle_timeout = Duration::from_millis(300);
        c.keepalive_interval = Duration::from_millis(100);
        c.timer_granularity = Duration::from_millis(10);
        c
    })
    .await
    .unwrap();
    let addr = server.local_addr().unwrap();
    let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let token = key.issue(&TokenClaims {
        token_id: 1,
        match_id: MatchId::new(1),
        player_id: PlayerId::new(2),
        expires_at_unix_ms: unix + 30_000,
        server_addr: addr,
    });
    let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
    let server_task = tokio::spawn(async move {
        let mut connected_tx = Some(connected_tx);
        loop {
            match server.next().await.unwrap() {
                Incoming::Event(ServerEvent::Connected { .. }) => {
                    if let Some(tx) = connected_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Incoming::Event(ServerEvent::Disconnected { reason, .. }) => return reason,
                _ => {}
            }
        }
    });
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut c = Client::new(ClientConfig::default(), token, Instant::now()).unwrap();
    let mut buf = [0u8; MAX_PACKET_LEN];
    let mut rx = [0u8; MAX_PACKET_LEN];
    for _ in 0..200 {
        if c.is_connected() {
            break;
        }
        while let Some(t) = c.poll_transmit(Instant::now(), &mut buf) {
            sock.send_to(&buf[..t.len], t.destination).await.unwrap();
        }
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_millis(50), sock.recv_from(&mut rx)).await
        {
            c.handle_datagram(Instant::now(), from, &rx[..n]);
        }
    }
    assert!(c.is_connected());
    tokio::time::timeout(Duration::from_secs(5), connected_rx).await.unwrap().unwrap();
    // The client goes silent; a third party floods the server with garbage.
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let spammer = std::thread::spawn(move || {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !s2.load(Ordering::Relaxed) && Instant::now() < deadline {
            let _ = s.send_to(&[9u8; 3], addr);
        }
    });
    let reason = tokio::time::timeout(Duration::from_secs(5), server_task).await;
    stop.store(true, Ordering::Relaxed);
    spammer.join().unwrap();
    assert_eq!(reason.expect("no timeout under traffic").unwrap(), DisconnectReason::TimedOut);
}
