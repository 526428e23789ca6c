//! Load generator for netcode 1.02 sessions: N sessions (each its own connect token, full
//! encrypted handshake, its own source address) against a netcode game server in a child
//! process; each session sends at R Hz and the server echoes on the session. Reports
//! p50/p99/p99.9 round-trip time, packets/s, loss, server CPU per payload and server memory
//! per session. The same measurement as `loadgen` (today's plaintext protocol), so the two
//! run back to back give the netcode cost: `scripts/bench-netcode.sh`.
//!
//! ```text
//! cargo run --release -p pvp-net --example netcode_loadgen -- --sessions 100000 --rate 2 --duration 5
//! ```
//!
//! netcode keys a session by the client's address, so every session needs its own: the
//! client side gives session `i` the source address 127.a.b.c on one of `--sockets`
//! wildcard-bound sockets (`BatchSocket::bind_multi_source`, `IP_PKTINFO`), all on loopback.
//!
//! Flags: `--sessions N` (100000), `--rate HZ` per session (2), `--duration S` (5),
//! `--sockets K` (8), `--workers W` (1), `--driver auto|io_uring|epoll`, `--server-cpu C` (0),
//! `--client-cpu C` (1), `--ramp PER_S` handshakes per second (10000), `--server inline|game`
//! (inline: the protocol and echo on the worker; game: `GameServer`, echo from a game thread
//! through its event and command queues), `--layered` (payload layer on).

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use pvp_core::{MatchId, PlayerId};
use pvp_net::DriverChoice;
use pvp_net::endpoint::{BatchSocket, DatagramHandler, Outbox, UdpServer, UdpServerConfig};
use pvp_net::game::{GameEvent, GameServer, GameServerConfig};
use pvp_net::netcode::{
    self, ClientConfig, IssuerConfig, Key, MAX_PACKET_BYTES, SessionGrant, SessionLedger, SessionUserData,
    TokenIssuer,
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
    server: String,
    layered: bool,
    role_server: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        sessions: 100_000,
        rate: 2.0,
        duration: 5.0,
        sockets: 8,
        workers: 1,
        driver: "auto".into(),
        server_cpu: 0,
        client_cpu: 1,
        ramp: 10_000.0,
        server: "inline".into(),
        layered: false,
        role_server: false,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).cloned().unwrap_or_default();
        let bad = |f: &str| format!("{f} needs a number, got {val:?}");
        let mut step = 2;
        match v[i].as_str() {
            "--sessions" => a.sessions = val.parse().map_err(|_| bad("--sessions"))?,
            "--rate" => a.rate = val.parse().map_err(|_| bad("--rate"))?,
            "--duration" => a.duration = val.parse().map_err(|_| bad("--duration"))?,
            "--sockets" => a.sockets = val.parse::<usize>().map_err(|_| bad("--sockets"))?.max(1),
            "--workers" => a.workers = val.parse::<usize>().map_err(|_| bad("--workers"))?.max(1),
            "--driver" => a.driver = val,
            "--server-cpu" => a.server_cpu = val.parse().map_err(|_| bad("--server-cpu"))?,
            "--client-cpu" => a.client_cpu = val.parse().map_err(|_| bad("--client-cpu"))?,
            "--ramp" => a.ramp = val.parse().map_err(|_| bad("--ramp"))?,
            "--server" if val == "inline" || val == "game" => a.server = val,
            "--layered" => {
                a.layered = true;
                step = 1;
            }
            "--role-server" => {
                a.role_server = true;
                step = 1;
            }
            other => return Err(format!("unknown flag or value: {other} {val}")),
        }
        i += step;
    }
    if a.sessions == 0 || a.sessions / a.sockets > 250 * 250 * 200 {
        return Err("--sessions must be 1 to 12,500,000 x --sockets".into());
    }
    Ok(a)
}

const KEY: [u8; 32] = [0x42; 32];
const PID: u64 = 0x7076_706c_6f61_6467;

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Session `j` of a socket's share gets 127.(1 + j / 62,500).(j / 250 % 250).(1 + j % 250).
fn source_ip(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 1 + (j / 62_500) as u8, (j / 250 % 250) as u8, 1 + (j % 250) as u8)
}

fn source_index(ip: Ipv4Addr) -> Option<usize> {
    let o = ip.octets();
    if o[0] != 127 || o[1] == 0 || o[3] == 0 {
        return None;
    }
    Some(usize::from(o[1] - 1) * 62_500 + usize::from(o[2]) * 250 + usize::from(o[3] - 1))
}

/// The inline server worker: netcode + echo on the worker thread.
struct Echo {
    server: netcode::Server,
    buf: Box<[u8; MAX_PACKET_BYTES]>,
    payload: Vec<u8>,
}

impl DatagramHandler for Echo {
    fn on_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8], out: &mut Outbox) {
        let id = match self.server.handle_datagram(now, from, data) {
            Some(r) => {
                self.payload.clear();
                self.payload.extend_from_slice(r.payload);
                Some(r.client_id)
            }
            None => None,
        };
        if let Some(id) = id {
            let server = &mut self.server;
            let p = &self.payload;
            let _ = out.send_with(from, |b| server.send(now, id, p, b).map_or(0, |t| t.len));
        }
        self.flush(now, out);
    }

    fn on_tick(&mut self, now: Instant, out: &mut Outbox) {
        self.server.handle_timeout(now);
        self.flush(now, out);
        while self.server.poll_event().is_some() {}
    }
}

impl Echo {
    fn flush(&mut self, now: Instant, out: &mut Outbox) {
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
    }
}

fn driver_choice(s: &str) -> DriverChoice {
    match s {
        "epoll" => DriverChoice::Epoll,
        "io_uring" => DriverChoice::IoUring,
        _ => DriverChoice::Auto,
    }
}

fn serve_stats(local: SocketAddr, driver: &str, stats: impl Fn() -> (u64, u64)) {
    let rss0 = pvp_net::resident_bytes().unwrap_or(0);
    println!("LISTEN {local} {driver} {rss0}");
    let _ = std::io::stdout().flush();
    let stdin = std::io::stdin();
    let mut line = String::new();
    while stdin.lock().read_line(&mut line).unwrap_or(0) > 0 {
        if line.trim() == "quit" {
            break;
        }
        let (rx, tx) = stats();
        let cpu = pvp_net::process_cpu_time().unwrap_or_default();
        println!("STATS {} {} {rx} {tx}", pvp_net::resident_bytes().unwrap_or(0), cpu.as_nanos());
        let _ = std::io::stdout().flush();
        line.clear();
    }
}

fn run_server(a: &Args) {
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = probe.local_addr().expect("addr");
    drop(probe);
    let mut cfg = UdpServerConfig::new(addr);
    cfg.driver = driver_choice(&a.driver);
    cfg.workers = a.workers;
    cfg.cpus = (0..a.workers).map(|i| a.server_cpu + i).collect();
    cfg.socket_buffer = 32 << 20;
    let sessions = a.sessions;
    if a.server == "game" {
        let mut c = GameServerConfig::new(addr, PID, Key::from_bytes(KEY));
        c.udp = cfg;
        c.max_sessions = sessions + 1024 * a.workers;
        c.max_pending = 16_384;
        c.token_history = sessions * 2;
        c.keepalive_interval = Duration::from_secs(3);
        c.event_queue = 1 << 18;
        c.command_queue = 1 << 18;
        let server = GameServer::bind(c).expect("server start");
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                // The game loop, on the server's core: echo every payload through the sender,
                // draining the queue in batches and sleeping 0.5 ms when it is empty (a
                // spinning loop would take the worker's core).
                let _ = pvp_net::pin_to_cpu(a.server_cpu);
                let sender = server.sender();
                let mut ev = Vec::with_capacity(4096);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if server.poll_events(&mut ev, 4096) == 0 {
                        std::thread::sleep(Duration::from_micros(500));
                    }
                    for e in ev.drain(..) {
                        if let GameEvent::Payload { session, payload } = e {
                            let _ = sender.send(session, payload.as_slice());
                        }
                    }
                }
            });
            serve_stats(server.local_addr(), server.driver().as_str(), || {
                let st = server.endpoint_stats();
                (st.rx_packets, st.tx_packets)
            });
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        return;
    }
    let ledger = SessionLedger::new(sessions * 2);
    let server = UdpServer::bind_with(cfg, move |info| {
        let mut sc = netcode::ServerConfig::new(PID, Key::from_bytes(KEY), info.local_addr);
        sc.ledger = Some(ledger.clone());
        sc.max_clients = sessions + 1024;
        sc.max_pending = 16_384;
        sc.token_history = sessions * 2;
        // Keep-alives every 3 s (as loadgen): at 100,000 sessions netcode's 10 Hz alone is
        // 1,000,000 packets/s.
        sc.keepalive_interval = Duration::from_secs(3);
        sc.timer_granularity = Duration::from_millis(50);
        Echo {
            server: netcode::Server::new(sc, Instant::now(), unix_now()).expect("server config"),
            buf: Box::new([0; MAX_PACKET_BYTES]),
            payload: Vec::with_capacity(MAX_PACKET_BYTES),
        }
    })
    .expect("server start");
    serve_stats(server.local_addr(), server.driver().as_str(), || {
        let st = server.stats();
        (st.rx_packets, st.tx_packets)
    });
}

struct StatsLine {
    rss: u64,
    cpu_ns: u128,
    rx: u64,
    tx: u64,
}

fn parse_stats(line: &str) -> Option<StatsLine> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.first() != Some(&"STATS") {
        return None;
    }
    Some(StatsLine {
        rss: f.get(1)?.parse().ok()?,
        cpu_ns: f.get(2)?.parse().ok()?,
        rx: f.get(3)?.parse().ok()?,
        tx: f.get(4)?.parse().ok()?,
    })
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if a.role_server {
        let _ = pvp_net::pin_to_cpu(a.server_cpu);
        run_server(&a);
        return;
    }
    let exe = std::env::current_exe().expect("exe");
    let mut args = vec![
        "--role-server".to_string(),
        "--sessions".into(),
        a.sessions.to_string(),
        "--workers".into(),
        a.workers.to_string(),
        "--driver".into(),
        a.driver.clone(),
        "--server-cpu".into(),
        a.server_cpu.to_string(),
        "--server".into(),
        a.server.clone(),
    ];
    if a.layered {
        args.push("--layered".into());
    }
    let mut child =
        Command::new(exe).args(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("spawn");
    let mut cin = child.stdin.take().expect("stdin");
    let mut cout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    cout.read_line(&mut line).expect("LISTEN line");
    let f: Vec<&str> = line.split_whitespace().collect();
    let server_addr: SocketAddr = f[1].parse().expect("addr");
    let driver = f[2].to_string();
    let mut query = |cin: &mut std::process::ChildStdin| {
        writeln!(cin, "stats").ok();
        cin.flush().ok();
        let mut l = String::new();
        cout.read_line(&mut l).ok();
        parse_stats(&l)
    };
    let _ = pvp_net::pin_to_cpu(a.client_cpu);
    let base = query(&mut cin).expect("server stats");

    let issuer = {
        let mut c = IssuerConfig::new(PID, Key::from_bytes(KEY));
        c.token_lifetime = Duration::from_secs(600);
        c.timeout_seconds = 15;
        TokenIssuer::new(c)
    };
    let k = a.sockets;
    let mut socks: Vec<BatchSocket> = (0..k)
        .map(|_| BatchSocket::bind_multi_source("0.0.0.0:0".parse().expect("addr"), 64).expect("bind"))
        .collect();
    let start = Instant::now();
    let mut clients: Vec<netcode::Client> = Vec::with_capacity(a.sessions);
    let mut hist = Histogram::<u64>::new_with_bounds(1_000, 10_000_000_000, 3).expect("hist");
    let mut cc = ClientConfig::default();
    cc.layered = a.layered;
    cc.handshake_send_interval = Duration::from_millis(1000);
    cc.handshake_timeout = Duration::from_secs(60);
    cc.keepalive_interval = Duration::from_secs(3);
    let src = |i: usize| source_ip(i / k);
    // Queues what session `i` has to send now, from its own address.
    fn queue_poll(c: &mut netcode::Client, sock: &mut BatchSocket, ip: Ipv4Addr, now: Instant) {
        let to = c.server_addr();
        while sock.queue_from(ip, to, |b| c.poll_transmit(now, b).map_or(0, |t| t.len)).unwrap_or(0) > 0 {}
    }
    let index_of = |sock: usize, dst: Option<Ipv4Addr>| dst.and_then(source_index).map(|j| j * k + sock);

    // Phase 1: handshakes, ramped, at most 4,000 in flight.
    let ramp_start = Instant::now();
    let mut connected = 0usize;
    let ramp_deadline = ramp_start + Duration::from_secs_f64(a.sessions as f64 / a.ramp * 3.0 + 30.0);
    let mut last_sweep = Instant::now();
    let mut was_connected = vec![false; a.sessions];
    while connected < a.sessions && Instant::now() < ramp_deadline {
        let now = Instant::now();
        let target = ((now - ramp_start).as_secs_f64() * a.ramp) as usize;
        while clients.len() < a.sessions.min(target) && clients.len() - connected < 4_000 {
            let i = clients.len();
            let grant = SessionGrant {
                client_id: i as u64 + 1,
                server_addresses: vec![server_addr],
                user_data: SessionUserData {
                    match_id: MatchId::new(i as u64 / 10),
                    player: PlayerId::new(i as u64 + 1),
                    team: (i % 2) as u8,
                    layered: a.layered,
                    game_data: vec![],
                },
            };
            let token = issuer.token(unix_now(), &grant).expect("token");
            let mut c = netcode::Client::new(token, cc.clone(), now, unix_now()).expect("client");
            queue_poll(&mut c, &mut socks[i % k], src(i), now);
            clients.push(c);
        }
        for s in socks.iter_mut() {
            let _ = s.flush();
        }
        for (si, sock) in socks.iter_mut().enumerate() {
            for _ in 0..16 {
                let n = sock.recv_batch(Duration::ZERO).unwrap_or(0);
                if n == 0 {
                    break;
                }
                for d in 0..n {
                    let Some(idx) = index_of(si, sock.destination(d)).filter(|&i| i < clients.len()) else {
                        continue;
                    };
                    let Some((from, data)) = sock.datagram(d) else { continue };
                    let data = data.to_vec();
                    let c = &mut clients[idx];
                    c.handle_datagram(now, from, &data);
                    if c.is_connected() && !was_connected[idx] {
                        was_connected[idx] = true;
                        connected += 1;
                    }
                    queue_poll(c, sock, src(idx), now);
                }
                let _ = sock.flush();
            }
        }
        if now - last_sweep > Duration::from_millis(500) {
            last_sweep = now;
            for (i, c) in clients.iter_mut().enumerate() {
                queue_poll(c, &mut socks[i % k], src(i), now);
            }
        }
    }
    let handshake_secs = ramp_start.elapsed().as_secs_f64();
    let held = query(&mut cin).expect("server stats");
    println!(
        "netcode ({} server, {driver}{}): {connected}/{} sessions connected in {handshake_secs:.1} s",
        a.server,
        if a.layered { ", payload layer" } else { "" },
        a.sessions
    );

    // Phase 2: every session sends its send time at `rate` Hz; the server echoes.
    let live: Vec<usize> = (0..clients.len()).filter(|&i| clients[i].is_connected()).collect();
    let total_rate = a.rate * live.len() as f64;
    let (mut cursor, mut sent) = (0usize, 0u64);
    let phase_start = Instant::now();
    let warmup = Duration::from_secs(1);
    let end = phase_start + warmup + Duration::from_secs_f64(a.duration);
    let (mut msent, mut mrecv, mut measuring, mut m0) = (0u64, 0u64, false, None);
    let mut last_sweep = Instant::now();
    let mut sweep_from = 0usize;
    while Instant::now() < end && !live.is_empty() {
        let now = Instant::now();
        if !measuring && now - phase_start >= warmup {
            measuring = true;
            hist.reset();
            m0 = Some((now, query(&mut cin).expect("stats")));
        }
        let due = ((now - phase_start).as_secs_f64() * total_rate) as u64;
        let mut burst = 0;
        while sent < due && burst < 512 {
            let idx = live[cursor % live.len()];
            cursor += 1;
            let ts = (now - start).as_nanos() as u64;
            let c = &mut clients[idx];
            let to = c.server_addr();
            let _ = socks[idx % k]
                .queue_from(src(idx), to, |b| c.send(now, &ts.to_le_bytes(), b).map_or(0, |t| t.len));
            sent += 1;
            burst += 1;
            if measuring {
                msent += 1;
            }
        }
        // Keep-alives and acks: a slice of the sessions per pass, all of them every ~0.5 s.
        if now - last_sweep > Duration::from_millis(10) {
            last_sweep = now;
            let n = (clients.len() / 50).max(1);
            for _ in 0..n {
                let i = sweep_from % clients.len();
                sweep_from += 1;
                queue_poll(&mut clients[i], &mut socks[i % k], src(i), now);
            }
        }
        for s in socks.iter_mut() {
            let _ = s.flush();
        }
        for (si, sock) in socks.iter_mut().enumerate() {
            for _ in 0..64 {
                let n = sock.recv_batch(Duration::ZERO).unwrap_or(0);
                if n == 0 {
                    break;
                }
                let now = Instant::now();
                for d in 0..n {
                    let Some(idx) = index_of(si, sock.destination(d)).filter(|&i| i < clients.len()) else {
                        continue;
                    };
                    let Some((from, data)) = sock.datagram(d) else { continue };
                    if let Some(p) = clients[idx].handle_datagram(now, from, data) {
                        if let Ok(b) = <[u8; 8]>::try_from(p) {
                            let rtt = ((now - start).as_nanos() as u64).saturating_sub(u64::from_le_bytes(b));
                            if measuring {
                                mrecv += 1;
                                let _ = hist.record(rtt.max(1_000));
                            }
                        }
                    }
                }
            }
        }
    }
    let m1 = (Instant::now(), query(&mut cin).expect("stats"));
    writeln!(cin, "quit").ok();
    cin.flush().ok();
    let _ = child.wait();
    let Some((t0, s0)) = m0 else {
        println!("no measurement window");
        return;
    };
    let secs = (m1.0 - t0).as_secs_f64();
    let cpu = (m1.1.cpu_ns - s0.cpu_ns) as f64 / 1e9;
    let echoed = (m1.1.tx - s0.tx).max(1);
    let per_session = held.rss.saturating_sub(base.rss) as f64 / connected.max(1) as f64;
    println!(
        "offered {total_rate:.0} sends/s ({} sessions x {} Hz); measured {secs:.1} s",
        live.len(),
        a.rate
    );
    println!(
        "client: sent {msent}, echoed {mrecv}, lost {} ({:.3}%)",
        msent.saturating_sub(mrecv),
        100.0 * msent.saturating_sub(mrecv) as f64 / msent.max(1) as f64
    );
    println!(
        "server: {:.0} pkts/s in+out, cpu {:.0}% of one core, {:.0} ns cpu per packet out",
        ((m1.1.rx - s0.rx) + (m1.1.tx - s0.tx)) as f64 / secs,
        100.0 * cpu / secs,
        cpu * 1e9 / echoed as f64
    );
    println!(
        "server memory: {per_session:.0} B/session ({connected} sessions; RSS {} MiB -> {} MiB)",
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
}
