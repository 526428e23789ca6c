//! netcode 1.02 benchmark report: our `netcode::Server` against renetcode's `NetcodeServer`
//! (and against today's plaintext `proto::Server`), side by side in one run.
//!
//! ```text
//! cargo run --release -p pvp-net --example netcode_bench -- [--rounds 5] [--handshakes 4000] [--payloads 200000]
//!     [--hold 100000] [--socket-seconds 3] [--skip-sockets]
//! ```
//!
//! 1. Handshakes, server CPU only (sans-IO): each round runs `--handshakes` full handshakes
//!    through each server, clients driven in the same thread; only the server's calls are
//!    timed. Ratio: renetcode's ns per handshake / ours.
//! 2. Handshakes over loopback UDP, one server core: the server runs in a child process pinned
//!    to CPU 0 (ours: `GameServer`, 1 io_uring/epoll worker; renetcode: `NetcodeServer` on a
//!    std `UdpSocket`, the loop its docs show), clients on CPU 1 (our netcode client, 256
//!    sockets, a fresh token per handshake). Handshakes per second of server CPU.
//! 3. Payloads, server CPU only: 1,000 sessions (renetcode's maximum is 1,024), each payload
//!    16 bytes received and echoed; ns per payload for plaintext `proto`, netcode plain,
//!    netcode with the payload layer, and renetcode.
//! 4. Memory: `--hold` sessions opened through the real handshake on one `netcode::Server`
//!    (clients dropped once connected); resident bytes per session.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pvp_core::{MatchId, PlayerId};
use pvp_net::game::{GameServer, GameServerConfig};
use pvp_net::netcode::{self, ClientConfig, IssuerConfig, Key, MAX_PACKET_BYTES, TokenIssuer};
use pvp_net::proto;

const PID: u64 = 0x7076_7062_656e_6368;
const KEY: [u8; 32] = [0x42; 32];

fn unix() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

#[derive(Debug, Clone)]
struct Args {
    rounds: usize,
    handshakes: usize,
    payloads: usize,
    hold: usize,
    socket_seconds: f64,
    skip_sockets: bool,
    role: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        rounds: 5,
        handshakes: 4000,
        payloads: 200_000,
        hold: 100_000,
        socket_seconds: 3.0,
        skip_sockets: false,
        role: None,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).cloned().unwrap_or_default();
        let num = |s: &str| s.parse::<usize>().map_err(|_| format!("{} needs a number, got {s:?}", v[i]));
        match v[i].as_str() {
            "--rounds" => a.rounds = num(&val)?.max(1),
            "--handshakes" => a.handshakes = num(&val)?.max(1),
            "--payloads" => a.payloads = num(&val)?.max(1),
            "--hold" => a.hold = num(&val)?,
            "--socket-seconds" => {
                a.socket_seconds = val.parse().map_err(|_| "--socket-seconds needs seconds")?
            }
            "--role" => a.role = Some(val),
            "--skip-sockets" => {
                a.skip_sockets = true;
                i += 1;
                continue;
            }
            other => return Err(format!("unknown flag {other}")),
        }
        i += 2;
    }
    Ok(a)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn client_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 40_000 + (i % 1000) as u16))
}

// ---------------------------------------------------------------- sans-IO handshakes

/// Drives `c` through its handshake: each datagram it sends goes to `exchange`, whose replies
/// come back to it. Panics if it does not connect (a figure from a broken handshake is void).
fn handshake(
    c: &mut netcode::Client,
    now: Instant,
    server_addr: SocketAddr,
    mut exchange: impl FnMut(&[u8]) -> Vec<Vec<u8>>,
) {
    let mut buf = [0u8; MAX_PACKET_BYTES];
    for _ in 0..3 {
        while let Some(t) = c.poll_transmit(now, &mut buf) {
            for r in exchange(&buf[..t.len]) {
                c.handle_datagram(now, server_addr, &r);
            }
        }
    }
    assert!(c.is_connected(), "handshake failed: {:?}", c.state());
}

/// One datagram into our server; its replies (copied, as renetcode's are).
fn ours_exchange(server: &mut netcode::Server, now: Instant, from: SocketAddr, data: &[u8]) -> Vec<Vec<u8>> {
    let mut sbuf = [0u8; MAX_PACKET_BYTES];
    server.handle_datagram(now, from, data);
    std::iter::from_fn(|| server.poll_transmit(now, &mut sbuf).map(|t| sbuf[..t.len].to_vec())).collect()
}

/// One datagram into renetcode's server; its reply.
fn renet_exchange(server: &mut renetcode::NetcodeServer, from: SocketAddr, data: &[u8]) -> Vec<Vec<u8>> {
    let mut pkt = data.to_vec();
    match server.process_packet(from, &mut pkt) {
        renetcode::ServerResult::PacketToSend { payload, .. }
        | renetcode::ServerResult::ClientConnected { payload, .. } => vec![payload.to_vec()],
        _ => Vec::new(),
    }
}

fn renet_server(server_addr: SocketAddr) -> renetcode::NetcodeServer {
    renetcode::NetcodeServer::new(renetcode::ServerConfig {
        current_time: unix(),
        max_clients: 1024,
        protocol_id: PID,
        public_addresses: vec![server_addr],
        authentication: renetcode::ServerAuthentication::Secure { private_key: KEY },
    })
}

/// A client whose token carries our user-data layout (match, player, `layered`).
fn seat_client(
    issuer: &TokenIssuer,
    i: usize,
    layered: bool,
    server_addr: SocketAddr,
    now: Instant,
) -> netcode::Client {
    let grant = netcode::SessionGrant {
        client_id: i as u64,
        server_addresses: vec![server_addr],
        user_data: netcode::SessionUserData {
            match_id: MatchId::new(i as u64 / 10),
            player: PlayerId::new(i as u64),
            team: 0,
            layered,
            game_data: vec![],
        },
    };
    let mut cc = ClientConfig::default();
    cc.layered = layered;
    netcode::Client::new(issuer.token(unix(), &grant).expect("token"), cc, now, unix()).expect("client")
}

/// A plain (no payload layer) client with a fresh token for `client_id`.
fn plain_client(
    issuer: &TokenIssuer,
    client_id: u64,
    server_addr: SocketAddr,
    now: Instant,
) -> netcode::Client {
    let mut cc = ClientConfig::default();
    cc.layered = false;
    cc.disconnect_packets = 1;
    let token = issuer.token_with_user_data(unix(), client_id, &[server_addr], [0; 256]).expect("token");
    netcode::Client::new(token, cc, now, unix()).expect("client")
}

/// ns of server work per handshake, ours.
fn handshakes_ours(n: usize, server_addr: SocketAddr) -> f64 {
    let now = Instant::now();
    let key = Key::from_bytes(KEY);
    let mut sc = netcode::ServerConfig::new(PID, key.clone(), server_addr);
    sc.max_clients = n + 1;
    sc.max_pending = n + 1;
    sc.token_history = 2 * n + 1;
    let mut server = netcode::Server::new(sc, now, unix()).expect("config");
    let issuer = TokenIssuer::new(IssuerConfig::new(PID, key));
    let mut timed = Duration::ZERO;
    for i in 0..n {
        let mut c = plain_client(&issuer, i as u64, server_addr, now);
        handshake(&mut c, now, server_addr, |d| {
            let t0 = Instant::now();
            let r = ours_exchange(&mut server, now, client_addr(i), d);
            timed += t0.elapsed();
            r
        });
    }
    while server.poll_event().is_some() {}
    timed.as_nanos() as f64 / n as f64
}

/// ns of server work per handshake, renetcode. It holds at most 1,024 clients, so each is
/// disconnected once connected; that call is not timed (nor is anything but the handshake
/// for ours).
fn handshakes_renet(n: usize, server_addr: SocketAddr) -> f64 {
    let mut server = renet_server(server_addr);
    let now = Instant::now();
    let issuer = TokenIssuer::new(IssuerConfig::new(PID, Key::from_bytes(KEY)));
    let mut timed = Duration::ZERO;
    for i in 0..n {
        let mut c = plain_client(&issuer, i as u64, server_addr, now);
        handshake(&mut c, now, server_addr, |d| {
            let t0 = Instant::now();
            let r = renet_exchange(&mut server, client_addr(i), d);
            timed += t0.elapsed();
            r
        });
        let _ = server.disconnect(i as u64);
    }
    timed.as_nanos() as f64 / n as f64
}

// ---------------------------------------------------------------- sans-IO payloads

const SESSIONS: usize = 1000;

/// `n` 16-byte payload packets from the clients in turn, encoded ahead of the timed part
/// (client cost untimed): (source, client id, bytes).
fn pre_encode(
    clients: &mut [(netcode::Client, SocketAddr)],
    n: usize,
    now: Instant,
) -> Vec<(SocketAddr, u64, Vec<u8>)> {
    let mut buf = [0u8; MAX_PACKET_BYTES];
    (0..n)
        .map(|k| {
            let (c, from) = &mut clients[k % clients.len()];
            let t = c.send(now, &(k as u64).to_le_bytes().repeat(2), &mut buf).expect("send");
            (*from, (k % SESSIONS) as u64, buf[..t.len].to_vec())
        })
        .collect()
}

fn payloads_netcode(n: usize, layered: bool, server_addr: SocketAddr) -> f64 {
    let now = Instant::now();
    let key = Key::from_bytes(KEY);
    let mut sc = netcode::ServerConfig::new(PID, key.clone(), server_addr);
    sc.max_clients = SESSIONS;
    let mut server = netcode::Server::new(sc, now, unix()).expect("config");
    let issuer = TokenIssuer::new(IssuerConfig::new(PID, key));
    let mut sbuf = [0u8; MAX_PACKET_BYTES];
    let mut clients = Vec::with_capacity(SESSIONS);
    for i in 0..SESSIONS {
        let mut c = seat_client(&issuer, i, layered, server_addr, now);
        handshake(&mut c, now, server_addr, |d| ours_exchange(&mut server, now, client_addr(i), d));
        clients.push((c, client_addr(i)));
    }
    while server.poll_event().is_some() {}
    let packets = pre_encode(&mut clients, n, now);
    let t0 = Instant::now();
    let mut echoed = 0usize;
    for (from, id, p) in &packets {
        let mut echo = [0u8; 16];
        if let Some(r) = server.handle_datagram(now, *from, p) {
            echo.copy_from_slice(r.payload);
            if server.send(now, *id, &echo, &mut sbuf).is_ok() {
                echoed += 1;
            }
        }
    }
    let ns = t0.elapsed().as_nanos() as f64 / n as f64;
    assert_eq!(echoed, n, "every payload echoed");
    ns
}

fn payloads_plain(n: usize, server_addr: SocketAddr) -> f64 {
    let now = Instant::now();
    let key = proto::TokenKey::from_bytes(KEY);
    let mut sc = proto::ServerConfig::new(key.clone(), server_addr);
    sc.max_sessions = SESSIONS;
    let mut server = proto::Server::new(sc, now, unix()).expect("config");
    let mut buf = [0u8; proto::MAX_PACKET_LEN];
    let mut sbuf = [0u8; proto::MAX_PACKET_LEN];
    let mut clients = Vec::with_capacity(SESSIONS);
    let expires = unix().as_millis() as u64 + 600_000;
    for i in 0..SESSIONS {
        let token = key.issue(&proto::TokenClaims {
            token_id: i as u64 + 1,
            match_id: MatchId::new(1),
            player_id: PlayerId::new(i as u64),
            expires_at_unix_ms: expires,
            server_addr,
        });
        let mut c = proto::Client::new(proto::ClientConfig::default(), token, now).expect("client");
        let from = client_addr(i);
        for _ in 0..3 {
            while let Some(t) = c.poll_transmit(now, &mut buf) {
                server.handle_datagram(now, from, &buf[..t.len]);
                while let Some(r) = server.poll_transmit(now, &mut sbuf) {
                    c.handle_datagram(now, server_addr, &sbuf[..r.len]);
                }
            }
        }
        assert!(c.is_connected());
        clients.push((c, from));
    }
    let mut packets = Vec::with_capacity(n);
    for k in 0..n {
        let (c, from) = &mut clients[k % SESSIONS];
        let t = c.send(now, &(k as u64).to_le_bytes().repeat(2), &mut buf).expect("send");
        packets.push((*from, buf[..t.len].to_vec()));
    }
    let t0 = Instant::now();
    let mut echoed = 0usize;
    for (from, p) in &packets {
        let mut echo = [0u8; 16];
        let conn = match server.handle_datagram(now, *from, p) {
            Some(r) => {
                echo.copy_from_slice(r.payload);
                Some(r.connection)
            }
            None => None,
        };
        if let Some(conn) = conn {
            if server.send(now, conn, &echo, &mut sbuf).is_ok() {
                echoed += 1;
            }
        }
    }
    let ns = t0.elapsed().as_nanos() as f64 / n as f64;
    assert_eq!(echoed, n);
    ns
}

fn payloads_renet(n: usize, server_addr: SocketAddr) -> f64 {
    let mut server = renet_server(server_addr);
    let now = Instant::now();
    let issuer = TokenIssuer::new(IssuerConfig::new(PID, Key::from_bytes(KEY)));
    let mut clients = Vec::with_capacity(SESSIONS);
    for i in 0..SESSIONS {
        let mut c = plain_client(&issuer, i as u64, server_addr, now);
        handshake(&mut c, now, server_addr, |d| renet_exchange(&mut server, client_addr(i), d));
        clients.push((c, client_addr(i)));
    }
    let mut packets = pre_encode(&mut clients, n, now);
    let t0 = Instant::now();
    let mut echoed = 0usize;
    for (from, _, p) in packets.iter_mut() {
        let mut echo = [0u8; 16];
        let id = match server.process_packet(*from, p) {
            renetcode::ServerResult::Payload { client_id, payload } => {
                echo.copy_from_slice(payload);
                Some(client_id)
            }
            _ => None,
        };
        if let Some(id) = id {
            if server.generate_payload_packet(id, &echo).is_ok() {
                echoed += 1;
            }
        }
    }
    let ns = t0.elapsed().as_nanos() as f64 / n as f64;
    assert_eq!(echoed, n);
    ns
}

// ---------------------------------------------------------------- memory

fn hold(n: usize, server_addr: SocketAddr) -> (usize, f64) {
    // Measured from before the server exists: its slot table is allocated up front.
    let before = pvp_net::resident_bytes().unwrap_or(0);
    let now = Instant::now();
    let key = Key::from_bytes(KEY);
    let mut sc = netcode::ServerConfig::new(PID, key.clone(), server_addr);
    sc.max_clients = n;
    sc.max_pending = 1024;
    sc.token_history = 1024;
    let mut server = netcode::Server::new(sc, now, unix()).expect("config");
    let issuer = TokenIssuer::new(IssuerConfig::new(PID, key));
    for i in 0..n {
        let mut c = seat_client(&issuer, i, true, server_addr, now);
        handshake(&mut c, now, server_addr, |d| ours_exchange(&mut server, now, client_addr(i), d));
        while server.poll_event().is_some() {}
    }
    let after = pvp_net::resident_bytes().unwrap_or(0);
    (server.session_count(), after.saturating_sub(before) as f64 / n.max(1) as f64)
}

// ---------------------------------------------------------------- sockets

/// Child process: one server pinned to CPU 0. Prints `LISTEN addr`, answers `stats` with
/// `STATS cpu_ns`, exits on `quit`.
fn run_server(role: &str) {
    let _ = pvp_net::pin_to_cpu(0);
    match role {
        "pvp" => {
            let mut c =
                GameServerConfig::new("127.0.0.1:0".parse().expect("addr"), PID, Key::from_bytes(KEY));
            c.max_sessions = 4096;
            c.max_pending = 4096;
            c.token_history = 65_536;
            c.udp.cpus = vec![0];
            let server = GameServer::bind(c).expect("bind");
            println!("LISTEN {} {}", server.local_addr(), server.driver().as_str());
            let _ = std::io::stdout().flush();
            // The game loop drains events (connects, disconnects) as a real one would.
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let s2 = stop.clone();
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    let _ = pvp_net::pin_to_cpu(0);
                    let mut ev = Vec::new();
                    while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                        if server.poll_events(&mut ev, 1024) == 0 {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        ev.clear();
                    }
                });
                answer_stats();
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            });
        }
        _ => {
            let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
            let addr = socket.local_addr().expect("addr");
            socket.set_read_timeout(Some(Duration::from_millis(1))).expect("timeout");
            println!("LISTEN {addr} std-udp");
            let _ = std::io::stdout().flush();
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let s2 = stop.clone();
            std::thread::scope(|scope| {
                scope.spawn(move || {
                    let _ = pvp_net::pin_to_cpu(0);
                    let mut server = renetcode::NetcodeServer::new(renetcode::ServerConfig {
                        current_time: unix(),
                        max_clients: 1024,
                        protocol_id: PID,
                        public_addresses: vec![addr],
                        authentication: renetcode::ServerAuthentication::Secure { private_key: KEY },
                    });
                    let mut buf = [0u8; 1500];
                    let mut last = Instant::now();
                    // The loop renetcode's docs show: update, update each client, receive.
                    while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                        let now = Instant::now();
                        server.update(now - last);
                        last = now;
                        for id in server.clients_id() {
                            if let renetcode::ServerResult::PacketToSend { addr, payload } =
                                server.update_client(id)
                            {
                                let _ = socket.send_to(payload, addr);
                            }
                        }
                        while let Ok((n, from)) = socket.recv_from(&mut buf) {
                            match server.process_packet(from, &mut buf[..n]) {
                                renetcode::ServerResult::PacketToSend { addr, payload }
                                | renetcode::ServerResult::ClientConnected { addr, payload, .. } => {
                                    let _ = socket.send_to(payload, addr);
                                }
                                _ => {}
                            }
                        }
                    }
                });
                answer_stats();
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            });
        }
    }
}

/// The child's side of the stats protocol: each `stats` line on stdin is answered with
/// `STATS <process cpu ns>`; `quit` or end of input returns.
fn answer_stats() {
    let stdin = std::io::stdin();
    let mut line = String::new();
    while stdin.lock().read_line(&mut line).unwrap_or(0) > 0 {
        if line.trim() == "quit" {
            break;
        }
        println!("STATS {}", pvp_net::process_cpu_time().unwrap_or_default().as_nanos());
        let _ = std::io::stdout().flush();
        line.clear();
    }
}

/// Handshakes against a server child for `secs`; returns (handshakes, server CPU seconds,
/// wall seconds, driver).
fn socket_handshakes(role: &str, secs: f64) -> (u64, f64, f64, String) {
    let exe = std::env::current_exe().expect("exe");
    let mut child = Command::new(exe)
        .args(["--role", role])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let mut cin = child.stdin.take().expect("stdin");
    let mut cout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    cout.read_line(&mut line).expect("LISTEN");
    let f: Vec<&str> = line.split_whitespace().collect();
    let server: SocketAddr = f.get(1).and_then(|s| s.parse().ok()).expect("server address");
    let driver = f.get(2).unwrap_or(&"?").to_string();
    let mut cpu = |cin: &mut std::process::ChildStdin| -> f64 {
        let _ = writeln!(cin, "stats");
        let _ = cin.flush();
        let mut l = String::new();
        let _ = cout.read_line(&mut l);
        l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 1e9
    };
    let _ = pvp_net::pin_to_cpu(1);
    let issuer = TokenIssuer::new(IssuerConfig::new(PID, Key::from_bytes(KEY)));
    let mut cc = ClientConfig::default();
    cc.layered = false;
    cc.disconnect_packets = 1;
    cc.handshake_send_interval = Duration::from_millis(200);
    const WINDOW: usize = 256;
    let sockets: Vec<UdpSocket> = (0..WINDOW)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    let mut next_id = 0u64;
    let mut fresh = |now: Instant| {
        next_id += 1;
        let t = issuer.token_with_user_data(unix(), next_id, &[server], [0; 256]).expect("token");
        netcode::Client::new(t, cc.clone(), now, unix()).expect("client")
    };
    let now = Instant::now();
    let mut clients: Vec<netcode::Client> = (0..WINDOW).map(|_| fresh(now)).collect();
    let mut buf = [0u8; MAX_PACKET_BYTES];
    let mut rx = [0u8; 1500];
    // Warm-up second, then the measured window.
    let start = Instant::now();
    let warm = start + Duration::from_secs(1);
    let end = warm + Duration::from_secs_f64(secs);
    let (mut done, mut cpu0, mut measuring) = (0u64, 0.0, false);
    let mut t0 = warm;
    while Instant::now() < end {
        let now = Instant::now();
        if !measuring && now >= warm {
            measuring = true;
            cpu0 = cpu(&mut cin);
            t0 = Instant::now();
            done = 0;
        }
        for (i, s) in sockets.iter().enumerate() {
            let c = &mut clients[i];
            while let Some(t) = c.poll_transmit(now, &mut buf) {
                let _ = s.send_to(&buf[..t.len], t.destination);
            }
            while let Ok((n, from)) = s.recv_from(&mut rx) {
                c.handle_datagram(now, from, &rx[..n]);
            }
            while let Some(t) = c.poll_transmit(now, &mut buf) {
                let _ = s.send_to(&buf[..t.len], t.destination);
            }
            if c.is_connected() {
                done += 1;
                c.disconnect(now);
                while let Some(t) = c.poll_transmit(now, &mut buf) {
                    let _ = s.send_to(&buf[..t.len], t.destination);
                }
                *c = fresh(now);
            } else if c.state().is_final() {
                *c = fresh(now);
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = cpu(&mut cin);
    let _ = writeln!(cin, "quit");
    let _ = cin.flush();
    let _ = child.wait();
    (done, cpu1 - cpu0, wall, driver)
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "{e}\nusage: netcode_bench [--rounds N] [--handshakes N] [--payloads N] [--hold N] [--socket-seconds S] [--skip-sockets]"
            );
            std::process::exit(2);
        }
    };
    if let Some(role) = &a.role {
        if role == "hold" {
            // A fresh process, so the heap holds nothing from the other sections.
            let (held, per) = hold(a.hold, "10.255.0.1:40000".parse().expect("addr"));
            println!("HOLD {held} {per:.0}");
        } else {
            run_server(role);
        }
        return;
    }
    let server_addr: SocketAddr = "10.255.0.1:40000".parse().expect("addr");
    println!(
        "# netcode_bench: rounds {}, handshakes/round {}, payloads/round {}",
        a.rounds, a.handshakes, a.payloads
    );

    println!("\n## 1. handshakes, server CPU only (sans-IO), ns per handshake");
    let (mut ours, mut theirs, mut ratio) = (vec![], vec![], vec![]);
    for r in 0..a.rounds {
        let (o, t) = if r % 2 == 0 {
            let o = handshakes_ours(a.handshakes, server_addr);
            (o, handshakes_renet(a.handshakes, server_addr))
        } else {
            let t = handshakes_renet(a.handshakes, server_addr);
            (handshakes_ours(a.handshakes, server_addr), t)
        };
        println!("round {r}: pvp {o:.0} ns, renetcode {t:.0} ns, renetcode/pvp {:.2}x", t / o);
        ours.push(o);
        theirs.push(t);
        ratio.push(t / o);
    }
    println!(
        "median: pvp {:.0} ns ({:.0}/s per core), renetcode {:.0} ns ({:.0}/s per core); ratio {:.2}x",
        median(ours.clone()),
        1e9 / median(ours),
        median(theirs.clone()),
        1e9 / median(theirs),
        median(ratio)
    );

    if !a.skip_sockets {
        println!("\n## 2. handshakes over loopback UDP, server pinned to CPU 0, clients on CPU 1");
        let mut ratio = vec![];
        for r in 0..a.rounds.min(3) {
            let (po, pc, pw, driver) = socket_handshakes("pvp", a.socket_seconds);
            let (ro, rc, rw, _) = socket_handshakes("renet", a.socket_seconds);
            let p = po as f64 / pc.max(1e-9);
            let q = ro as f64 / rc.max(1e-9);
            println!(
                "round {r}: pvp ({driver}) {po} in {pw:.1} s, server cpu {pc:.2} s -> {p:.0}/s per core; \
                 renetcode {ro} in {rw:.1} s, server cpu {rc:.2} s -> {q:.0}/s per core; pvp/renetcode {:.2}x",
                p / q
            );
            ratio.push(p / q);
        }
        println!("median pvp/renetcode handshakes per server-core second: {:.2}x", median(ratio));
    }

    println!(
        "\n## 3. payloads, server CPU only (sans-IO): receive + echo, {SESSIONS} sessions, 16-byte payloads, ns per payload"
    );
    let (mut plain, mut nc, mut ncl, mut rn) = (vec![], vec![], vec![], vec![]);
    for r in 0..a.rounds {
        let p = payloads_plain(a.payloads, server_addr);
        let n = payloads_netcode(a.payloads, false, server_addr);
        let l = payloads_netcode(a.payloads, true, server_addr);
        let q = payloads_renet(a.payloads, server_addr);
        println!(
            "round {r}: plaintext proto {p:.0} ns, netcode {n:.0} ns ({:.2}x plaintext), netcode+layer {l:.0} ns ({:.2}x), renetcode {q:.0} ns (renetcode/netcode {:.2}x)",
            n / p,
            l / p,
            q / n
        );
        plain.push(p);
        nc.push(n);
        ncl.push(l);
        rn.push(q);
    }
    let (p, n, l, q) = (median(plain), median(nc), median(ncl), median(rn));
    println!(
        "median: plaintext {p:.0} ns, netcode {n:.0} ns ({:.2}x), netcode+layer {l:.0} ns ({:.2}x), renetcode {q:.0} ns; \
         per core: netcode {:.0}/s vs renetcode {:.0}/s ({:.2}x)",
        n / p,
        l / p,
        1e9 / n,
        1e9 / q,
        q / n
    );

    if a.hold > 0 {
        println!("\n## 4. memory: {} sessions held on one netcode::Server (layered)", a.hold);
        let out = Command::new(std::env::current_exe().expect("exe"))
            .args(["--role", "hold", "--hold", &a.hold.to_string()])
            .output()
            .expect("spawn hold");
        let text = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = text.split_whitespace().collect();
        match (f.first(), f.get(1), f.get(2)) {
            (Some(&"HOLD"), Some(held), Some(per)) => {
                println!("held {held} sessions; resident growth {per} bytes per session (target <= 1024)")
            }
            _ => println!("hold run failed: {text}"),
        }
    }
}
