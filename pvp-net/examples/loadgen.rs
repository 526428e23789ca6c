//! Load generator: N game sessions (full handshake with connect tokens) against a pvp-net game
//! server in a child process, each session sending at R Hz over a few client sockets; the
//! server echoes each payload on the session. Reports p50/p99/p99.9 round-trip time,
//! packets/s, drops, server CPU and server memory per session.
//!
//! ```text
//! cargo run --release -p pvp-net --example loadgen -- --sessions 100000 --rate 10 --duration 10
//! ```
//!
//! Flags: `--sessions N` (100000), `--rate HZ` per session (10), `--duration S` (10),
//! `--sockets K` client sockets (8), `--workers W` server workers (1), `--driver
//! auto|io_uring|epoll`, `--server-cpu C` (0), `--client-cpu C` (1), `--ramp PER_S` handshakes
//! per second (10000).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use pvp_core::{MatchId, PlayerId};
use pvp_net::DriverChoice;
use pvp_net::endpoint::{BatchSocket, DatagramHandler, Outbox, UdpServer, UdpServerConfig};
use pvp_net::proto::{
    Client, ClientConfig, ConnectionId, MAX_PACKET_LEN, Packet, Server, ServerConfig, TokenClaims, TokenKey,
    TokenLedger,
};

#[derive(Debug, Clone)]
struct Args {
    sessions: usize,
    rate: f64,
    duration: f64,
    sockets: usize,
    workers: usize,
    driver: String,
    server_cpu: usize,
    client_cpu: usize,
    ramp: f64,
    role_server: bool,
    server_seconds: f64,
}

fn parse() -> Args {
    let mut a = Args {
        sessions: 100_000,
        rate: 10.0,
        duration: 10.0,
        sockets: 8,
        workers: 1,
        driver: "auto".into(),
        server_cpu: 0,
        client_cpu: 1,
        ramp: 10_000.0,
        role_server: false,
        server_seconds: 0.0,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).cloned().unwrap_or_default();
        let mut step = 2;
        match v[i].as_str() {
            "--sessions" => a.sessions = val.parse().unwrap_or(a.sessions),
            "--rate" => a.rate = val.parse().unwrap_or(a.rate),
            "--duration" => a.duration = val.parse().unwrap_or(a.duration),
            "--sockets" => a.sockets = val.parse().unwrap_or(a.sockets),
            "--workers" => a.workers = val.parse().unwrap_or(a.workers),
            "--driver" => a.driver = val,
            "--server-cpu" => a.server_cpu = val.parse().unwrap_or(a.server_cpu),
            "--client-cpu" => a.client_cpu = val.parse().unwrap_or(a.client_cpu),
            "--ramp" => a.ramp = val.parse().unwrap_or(a.ramp),
            "--server-seconds" => a.server_seconds = val.parse().unwrap_or(0.0),
            "--role-server" => {
                a.role_server = true;
                step = 1;
            }
            other => {
                eprintln!("unknown flag {other}");
                step = 1;
            }
        }
        i += step;
    }
    a
}

const KEY: [u8; 32] = [0x42; 32];

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// The game server worker: session protocol + echo.
struct Game {
    server: Server,
    buf: Box<[u8; MAX_PACKET_LEN]>,
    payload: Vec<u8>,
}

impl DatagramHandler for Game {
    fn on_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8], out: &mut Outbox) {
        let conn = match self.server.handle_datagram(now, from, data) {
            Some(r) => {
                self.payload.clear();
                self.payload.extend_from_slice(r.payload);
                Some(r.connection)
            }
            None => None,
        };
        if let Some(conn) = conn {
            let server = &mut self.server;
            let p = &self.payload;
            let _ = out.send_with(from, |b| server.send(now, conn, p, b).map_or(0, |t| t.len));
        }
    }

    fn on_tick(&mut self, now: Instant, out: &mut Outbox) {
        self.server.handle_timeout(now);
        // Keep a quarter of the slots for echoes: keep-alive bursts must not starve them.
        let reserve = out.capacity() / 4;
        while out.free_slots() > reserve {
            match self.server.poll_transmit(now, &mut self.buf[..]) {
                Some(t) => {
                    let _ = out.send(t.destination, &self.buf[..t.len]);
                }
                None => break,
            }
        }
        while self.server.poll_event().is_some() {}
    }
}

fn run_server(a: &Args) {
    let driver = match a.driver.as_str() {
        "epoll" => DriverChoice::Epoll,
        "io_uring" => DriverChoice::IoUring,
        _ => DriverChoice::Auto,
    };
    // Bind a probe to learn a free port the tokens can name.
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = probe.local_addr().expect("addr");
    drop(probe);
    let mut cfg = UdpServerConfig::new(addr);
    cfg.driver = driver;
    cfg.workers = a.workers;
    cfg.cpus = (0..a.workers).map(|i| a.server_cpu + i).collect();
    cfg.socket_buffer = 32 << 20;
    let sessions = a.sessions;
    let ledger = TokenLedger::new(sessions * 2);
    let server = UdpServer::bind_with(cfg, move |_| {
        let mut sc = ServerConfig::new(TokenKey::from_bytes(KEY), addr);
        sc.ledger = Some(ledger.clone());
        sc.max_sessions = sessions + 1024;
        sc.max_pending = 16_384;
        // Keep-alives every 3 s rather than 1 s: at 100,000 sessions the 1 s default alone is
        // up to 100,000 packets/s.
        sc.keepalive_interval = Duration::from_secs(3);
        sc.idle_timeout = Duration::from_secs(15);
        Game {
            server: Server::new(sc, Instant::now(), unix_now()).expect("server config"),
            buf: Box::new([0; MAX_PACKET_LEN]),
            payload: Vec::with_capacity(MAX_PACKET_LEN),
        }
    })
    .expect("server start");
    let rss0 = pvp_net::resident_bytes().unwrap_or(0);
    println!("LISTEN {} {} {}", server.local_addr(), server.driver().as_str(), rss0);
    let _ = std::io::stdout().flush();
    let stdin = std::io::stdin();
    let mut line = String::new();
    // The parent writes one line per query: "stats" → one line back; "quit" → exit.
    while stdin.lock().read_line(&mut line).unwrap_or(0) > 0 {
        if line.trim() == "quit" {
            break;
        }
        let st = server.stats();
        let cpu = pvp_net::process_cpu_time().unwrap_or_default();
        println!(
            "STATS {} {} {} {} {} {}",
            pvp_net::resident_bytes().unwrap_or(0),
            cpu.as_nanos(),
            st.rx_packets,
            st.tx_packets,
            st.tx_dropped,
            st.rx_truncated
        );
        let _ = std::io::stdout().flush();
        line.clear();
    }
}

struct ServerStatsLine {
    rss: u64,
    cpu_ns: u128,
    rx: u64,
    tx: u64,
    tx_dropped: u64,
}

fn parse_stats(line: &str) -> Option<ServerStatsLine> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.first() != Some(&"STATS") {
        return None;
    }
    Some(ServerStatsLine {
        rss: f.get(1)?.parse().ok()?,
        cpu_ns: f.get(2)?.parse().ok()?,
        rx: f.get(3)?.parse().ok()?,
        tx: f.get(4)?.parse().ok()?,
        tx_dropped: f.get(5)?.parse().ok()?,
    })
}

struct Session {
    client: Client,
    socket: usize,
}

/// Queues whatever `client` has to send now straight into `sock`'s next slot (a client only
/// ever sends to its server).
fn queue_poll(client: &mut Client, sock: &mut BatchSocket, now: Instant) {
    let to = client.server_addr();
    let _ = sock.queue_with(to, |b| client.poll_transmit(now, b).map_or(0, |t| t.len));
}

fn main() {
    let a = parse();
    if a.role_server {
        let _ = pvp_net::pin_to_cpu(a.server_cpu);
        run_server(&a);
        return;
    }
    let exe = std::env::current_exe().expect("exe");
    let mut child = Command::new(exe)
        .args([
            "--role-server",
            "--sessions",
            &a.sessions.to_string(),
            "--workers",
            &a.workers.to_string(),
            "--driver",
            &a.driver,
            "--server-cpu",
            &a.server_cpu.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let mut child_in = child.stdin.take().expect("stdin");
    let mut child_out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    child_out.read_line(&mut line).expect("server LISTEN line");
    let f: Vec<&str> = line.split_whitespace().collect();
    let server_addr: SocketAddr = f[1].parse().expect("addr");
    let driver = f[2].to_string();
    let mut query = |child_in: &mut std::process::ChildStdin| {
        writeln!(child_in, "stats").ok();
        child_in.flush().ok();
        let mut l = String::new();
        child_out.read_line(&mut l).ok();
        parse_stats(&l)
    };
    let _ = pvp_net::pin_to_cpu(a.client_cpu);
    let base = query(&mut child_in).expect("server stats");

    let key = TokenKey::from_bytes(KEY);
    let mut socks: Vec<BatchSocket> = (0..a.sockets)
        .map(|_| BatchSocket::bind("127.0.0.1:0".parse().unwrap(), 64).expect("bind"))
        .collect();
    let start = Instant::now();
    let expiry = unix_now().as_millis() as u64 + 600_000;
    let mut sessions: Vec<Session> = Vec::with_capacity(a.sessions);
    let mut by_token: HashMap<u64, usize> = HashMap::with_capacity(a.sessions);
    let mut by_conn: HashMap<u64, usize> = HashMap::with_capacity(a.sessions);
    let mut hist = Histogram::<u64>::new_with_bounds(1_000, 10_000_000_000, 3).expect("hist");

    // Phase 1: handshakes, ramped.
    let mut next_new = 0usize;
    let ramp_start = Instant::now();
    let mut connected = 0usize;
    let ramp_deadline = ramp_start + Duration::from_secs_f64(a.sessions as f64 / a.ramp * 3.0 + 30.0);
    let mut last_resend = Instant::now();
    while connected < a.sessions && Instant::now() < ramp_deadline {
        let now = Instant::now();
        let target = ((now - ramp_start).as_secs_f64() * a.ramp) as usize;
        // Closed-loop ramp: at most 4,000 handshakes in flight, so a slow (or shared) machine
        // is not flooded with resends.
        while next_new < a.sessions.min(target) && next_new - connected < 4_000 {
            let i = next_new;
            let token = key.issue(&TokenClaims {
                token_id: i as u64 + 1,
                match_id: MatchId::new(i as u64 / 10),
                player_id: PlayerId::new(i as u64),
                expires_at_unix_ms: expiry,
                server_addr,
            });
            let mut cc = ClientConfig::default();
            cc.handshake_timeout = Duration::from_secs(60);
            cc.handshake_resend = Duration::from_millis(1000);
            cc.idle_timeout = Duration::from_secs(30);
            cc.keepalive_interval = Duration::from_secs(3);
            let mut client = Client::new(cc, token, now).expect("token");
            let s = i % a.sockets;
            queue_poll(&mut client, &mut socks[s], now);
            by_token.insert(i as u64 + 1, i);
            sessions.push(Session { client, socket: s });
            next_new += 1;
        }
        for s in socks.iter_mut() {
            let _ = s.flush();
        }
        for sock in socks.iter_mut() {
            for _ in 0..16 {
                let n = sock.recv_batch(Duration::ZERO).unwrap_or(0);
                if n == 0 {
                    break;
                }
                for k in 0..n {
                    let Some((from, data)) = sock.datagram(k) else {
                        continue;
                    };
                    let idx = match Packet::decode(data) {
                        Ok(Packet::Challenge { token_id, .. })
                        | Ok(Packet::Accepted { token_id, .. })
                        | Ok(Packet::Denied { token_id, .. }) => by_token.get(&token_id).copied(),
                        _ => None,
                    };
                    let Some(idx) = idx else { continue };
                    let data = data.to_vec();
                    let c = &mut sessions[idx].client;
                    let was = c.is_connected();
                    c.handle_datagram(now, from, &data);
                    if !was && c.is_connected() {
                        connected += 1;
                        if let Some(ConnectionId(id)) = c.connection_id() {
                            by_conn.insert(id, idx);
                        }
                    }
                    queue_poll(c, sock, now);
                }
                let _ = sock.flush();
            }
        }
        if now - last_resend > Duration::from_millis(500) {
            last_resend = now;
            // Handshake resends, and keep-alives for sessions already open (the server
            // closes sessions idle for 10 s, and a 100,000-session ramp takes longer).
            for s in sessions.iter_mut() {
                s.client.handle_timeout(now);
                queue_poll(&mut s.client, &mut socks[s.socket], now);
            }
        }
    }
    let handshake_secs = ramp_start.elapsed().as_secs_f64();
    let held = query(&mut child_in).expect("server stats");
    println!("driver {driver}; {connected}/{} sessions connected in {handshake_secs:.1} s", a.sessions);

    // Phase 2: every session sends at `rate` Hz, payload = send time; the server echoes.
    let total_rate = a.rate * connected as f64;
    let mut cursor = 0usize;
    let mut sent = 0u64;
    let mut received = 0u64;
    let phase_start = Instant::now();
    let warmup = Duration::from_secs(1);
    let end = phase_start + warmup + Duration::from_secs_f64(a.duration);
    let mut measured_sent = 0u64;
    let mut measured_recv = 0u64;
    let mut measuring = false;
    let mut m0 = None;
    let live: Vec<usize> = (0..sessions.len()).filter(|&i| sessions[i].client.is_connected()).collect();
    while Instant::now() < end && !live.is_empty() {
        let now = Instant::now();
        if !measuring && now - phase_start >= warmup {
            measuring = true;
            hist.reset();
            m0 = Some((now, query(&mut child_in).expect("stats")));
        }
        let due = ((now - phase_start).as_secs_f64() * total_rate) as u64;
        let mut burst = 0;
        while sent < due && burst < 512 {
            let idx = live[cursor % live.len()];
            cursor += 1;
            let s = &mut sessions[idx];
            let ts = (now - start).as_nanos() as u64;
            let sock = s.socket;
            let c = &mut s.client;
            let _ = socks[sock]
                .queue_with(c.server_addr(), |b| c.send(now, &ts.to_le_bytes(), b).map_or(0, |t| t.len));
            sent += 1;
            burst += 1;
            if measuring {
                measured_sent += 1;
            }
        }
        for s in socks.iter_mut() {
            let _ = s.flush();
        }
        for sock in socks.iter_mut() {
            for _ in 0..64 {
                let n = sock.recv_batch(Duration::ZERO).unwrap_or(0);
                if n == 0 {
                    break;
                }
                for k in 0..n {
                    let Some((from, data)) = sock.datagram(k) else {
                        continue;
                    };
                    let Some(conn) = Packet::peek_connection_id(data) else {
                        continue;
                    };
                    let Some(&idx) = by_conn.get(&conn) else {
                        continue;
                    };
                    let now = Instant::now();
                    if let Some(p) = sessions[idx].client.handle_datagram(now, from, data) {
                        if let Ok(b) = <[u8; 8]>::try_from(p) {
                            let ts = u64::from_le_bytes(b);
                            let rtt = (now - start).as_nanos() as u64 - ts;
                            received += 1;
                            if measuring {
                                measured_recv += 1;
                                let _ = hist.record(rtt.max(1_000));
                            }
                        }
                    }
                }
            }
        }
    }
    let m1 = (Instant::now(), query(&mut child_in).expect("stats"));
    writeln!(child_in, "quit").ok();
    let _ = child.wait();
    let Some((t0, s0)) = m0 else {
        println!("no measurement window");
        return;
    };
    let secs = (m1.0 - t0).as_secs_f64();
    let server_cpu = (m1.1.cpu_ns - s0.cpu_ns) as f64 / 1e9 / secs;
    let srv_pps = ((m1.1.rx - s0.rx) + (m1.1.tx - s0.tx)) as f64 / secs;
    let per_session = (held.rss.saturating_sub(base.rss)) as f64 / connected.max(1) as f64;
    println!(
        "offered {:.0} sends/s ({} sessions x {} Hz); measured {:.1} s",
        total_rate, connected, a.rate, secs
    );
    println!(
        "client: sent {measured_sent}, echoed {measured_recv}, lost {} ({:.3}%)",
        measured_sent.saturating_sub(measured_recv),
        100.0 * measured_sent.saturating_sub(measured_recv) as f64 / measured_sent.max(1) as f64
    );
    println!(
        "server: {:.0} pkts/s in+out ({:.0} in/s), tx dropped {}, cpu {:.0}% of one core",
        srv_pps,
        (m1.1.rx - s0.rx) as f64 / secs,
        m1.1.tx_dropped - s0.tx_dropped,
        server_cpu * 100.0
    );
    println!(
        "server memory: {:.0} B/session ({} sessions; RSS {} MiB -> {} MiB)",
        per_session,
        connected,
        base.rss >> 20,
        held.rss >> 20
    );
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1e6;
    println!(
        "RTT ms: p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (n = {})",
        q(0.5),
        q(0.99),
        q(0.999),
        hist.max() as f64 / 1e6,
        hist.len()
    );
    let _ = received;
}
