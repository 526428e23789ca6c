//! UDP echo on loopback: packets/s of our io_uring driver, our epoll driver and a plain tokio
//! `UdpSocket` echo, side by side in one run. The server is pinned to one CPU, the client
//! (batched sendmmsg/recvmmsg, a window of packets in flight) to another.
//!
//! ```text
//! cargo run --release -p pvp-net --example udp_echo -- --seconds 3 --rounds 3 --server-cpu 0 --client-cpu 1
//! ```
//!
//! `--client-threads N` runs N client threads (CPUs `client-cpu`..`client-cpu + N - 1`), so that
//! on a machine with cores to spare the server, not the client, is the limit.
//!
//! `--burst N`: the server answers each datagram with N datagrams of the same size to the same
//! peer (a snapshot split over N datagrams); the figure is then server CPU per datagram sent.
//! pvp-net always runs twice, with UDP GSO on and off. `--only NAME` runs only the servers whose
//! name contains NAME (`--only "epoll+recvmmsg"`), e.g. under `perf record`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pvp_net::DriverChoice;
use pvp_net::endpoint::{BatchSocket, DatagramHandler, Outbox, UdpServer, UdpServerConfig};

struct Args {
    seconds: f64,
    server_cpu: usize,
    client_cpu: usize,
    window: usize,
    payload: usize,
    sockets: usize,
    rounds: usize,
    burst: usize,
    /// Client threads, pinned to `client_cpu`, `client_cpu + 1`, ...: enough of them saturate
    /// the server, so the figure measures the server rather than the client.
    client_threads: usize,
    /// Run only the servers whose name contains this (e.g. `epoll+recvmmsg`), for profiling.
    only: Option<String>,
}

fn parse() -> Args {
    let mut a = Args {
        seconds: 3.0,
        server_cpu: 0,
        client_cpu: 1,
        window: 256,
        payload: 64,
        sockets: 4,
        rounds: 3,
        burst: 1,
        only: None,
        client_threads: 1,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < v.len() {
        let val = &v[i + 1];
        match v[i].as_str() {
            "--seconds" => a.seconds = val.parse().unwrap_or(a.seconds),
            "--server-cpu" => a.server_cpu = val.parse().unwrap_or(a.server_cpu),
            "--client-cpu" => a.client_cpu = val.parse().unwrap_or(a.client_cpu),
            "--window" => a.window = val.parse().unwrap_or(a.window),
            "--payload" => a.payload = val.parse().unwrap_or(a.payload),
            "--sockets" => a.sockets = val.parse().unwrap_or(a.sockets),
            "--burst" => a.burst = val.parse().unwrap_or(a.burst).clamp(1, 64),
            "--rounds" => a.rounds = val.parse().unwrap_or(a.rounds).max(1),
            "--only" => a.only = Some(val.clone()),
            "--client-threads" => a.client_threads = val.parse().unwrap_or(1).clamp(1, 64),
            other => eprintln!("unknown flag {other}"),
        }
        i += 2;
    }
    a
}

/// CPU time (user + system) of this process's threads whose name starts with `prefix`
/// (from /proc/self/task/*/stat, in clock ticks of 10 ms).
fn thread_cpu(prefix: &str) -> Duration {
    let mut total = 0u64;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            let p = e.path();
            let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
            if !comm.trim().starts_with(prefix) {
                continue;
            }
            let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
            // Fields after the ")" that ends the name: state is field 3; utime 14, stime 15.
            if let Some(rest) = stat.rsplit(')').next() {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let ut: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
                let st: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
                total += ut + st;
            }
        }
    }
    Duration::from_millis(total * 10)
}

struct Echo(usize);
impl DatagramHandler for Echo {
    fn on_datagram(&mut self, _now: Instant, from: SocketAddr, data: &[u8], out: &mut Outbox) {
        for _ in 0..self.0 {
            let _ = out.send(from, data);
        }
    }
}

/// Runs `--client-threads` clients at once against `server`; returns their echoes/s together.
fn client(server: SocketAddr, a: &Args) -> f64 {
    if a.client_threads == 1 {
        return client_thread(server, a, a.client_cpu);
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..a.client_threads)
            .map(|i| s.spawn(move || client_thread(server, a, a.client_cpu + i)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
    })
}

/// Drives `window` packets in flight per socket against `server` for `secs`; returns echoes/s.
fn client_thread(server: SocketAddr, a: &Args, cpu: usize) -> f64 {
    let _ = pvp_net::pin_to_cpu(cpu);
    let mut socks: Vec<BatchSocket> =
        (0..a.sockets).map(|_| BatchSocket::bind("127.0.0.1:0".parse().unwrap(), 64).unwrap()).collect();
    let payload = vec![0xabu8; a.payload];
    let fill = |s: &mut BatchSocket, n: usize| {
        for _ in 0..n {
            let _ = s.queue_with(server, |b| {
                b[..payload.len()].copy_from_slice(&payload);
                payload.len()
            });
        }
        let _ = s.flush();
    };
    for s in socks.iter_mut() {
        fill(s, a.window);
    }
    let warmup = Duration::from_millis(500);
    let start = Instant::now();
    let mut counted = 0u64;
    let mut measuring_since = None;
    let end = start + warmup + Duration::from_secs_f64(a.seconds);
    let mut idle_rounds = 0;
    // Replies not yet answered by a new request (with --burst N, N replies per request).
    let mut acc = vec![0usize; socks.len()];
    while Instant::now() < end {
        let mut got_any = 0;
        for (s, acc) in socks.iter_mut().zip(acc.iter_mut()) {
            let n = s.recv_batch(Duration::ZERO).unwrap_or(0);
            got_any += n;
            *acc += n;
            if *acc >= a.burst {
                fill(s, *acc / a.burst);
                *acc %= a.burst;
            }
            if measuring_since.is_some() {
                counted += n as u64;
            }
        }
        if measuring_since.is_none() && start.elapsed() >= warmup {
            measuring_since = Some(Instant::now());
        }
        if got_any == 0 {
            idle_rounds += 1;
            // Packets lost to full socket buffers: top the window back up.
            if idle_rounds > 20_000 {
                idle_rounds = 0;
                for s in socks.iter_mut() {
                    fill(s, (a.window / 4).max(1));
                }
            }
        } else {
            idle_rounds = 0;
        }
    }
    let secs = measuring_since.map_or(1.0, |t| t.elapsed().as_secs_f64());
    counted as f64 / secs
}

fn run_pvp(driver: DriverChoice, gso: bool, a: &Args) -> Option<(f64, f64)> {
    let mut cfg = UdpServerConfig::new("127.0.0.1:0".parse().unwrap());
    cfg.driver = driver;
    cfg.gso = gso;
    cfg.cpus = vec![a.server_cpu];
    let burst = a.burst;
    let server = match UdpServer::bind_with(cfg, move |_| Echo(burst)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{driver:?}: not available: {e}");
            return None;
        }
    };
    let kind = server.driver();
    let cpu0 = thread_cpu("pvp-net");
    let tx0 = server.stats().tx_packets;
    let pps = client(server.local_addr(), a);
    let cpu = thread_cpu("pvp-net") - cpu0;
    let st = server.stats();
    eprintln!(
        "  {:?} gso={gso}: server cpu {:.2} s for {} packets sent = {:.0} ns/packet; gso sends {} segments {}",
        kind,
        cpu.as_secs_f64(),
        st.tx_packets - tx0,
        cpu.as_nanos() as f64 / (st.tx_packets - tx0).max(1) as f64,
        st.tx_gso_sends,
        st.tx_gso_segments,
    );
    eprintln!(
        "  {:?}: rx {} tx {} rx_syscalls {} tx_syscalls {} ({:.1} pkts/rx call)",
        kind,
        st.rx_packets,
        st.tx_packets,
        st.rx_syscalls,
        st.tx_syscalls,
        st.rx_packets as f64 / st.rx_syscalls.max(1) as f64
    );
    Some((pps, cpu.as_nanos() as f64 / (st.tx_packets - tx0).max(1) as f64))
}

fn run_tokio(a: &Args) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let st = stop.clone();
    let cpu = a.server_cpu;
    let burst = a.burst;
    let h = std::thread::Builder::new()
        .name("tokio-echo".into())
        .spawn(move || {
            let _ = pvp_net::pin_to_cpu(cpu);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                tx.send(sock.local_addr().unwrap()).unwrap();
                let mut buf = [0u8; 2048];
                while !st.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(50), sock.recv_from(&mut buf)).await {
                        Ok(Ok((n, from))) => {
                            for _ in 0..burst {
                                let _ = sock.send_to(&buf[..n], from).await;
                            }
                        }
                        _ => continue,
                    }
                }
            });
        })
        .unwrap();
    let addr = rx.recv().unwrap();
    let cpu0 = thread_cpu("tokio-echo");
    let pps = client(addr, a);
    let cpu = thread_cpu("tokio-echo") - cpu0;
    let total = pps * a.seconds;
    stop.store(true, Ordering::Relaxed);
    let _ = h.join();
    (pps, cpu.as_nanos() as f64 / total.max(1.0))
}

fn main() {
    let a = parse();
    println!(
        "udp echo, loopback, server cpu {}, client cpu {} ({} threads), {} sockets x window {}, {} B payload, burst {}, {} s",
        a.server_cpu, a.client_cpu, a.client_threads, a.sockets, a.window, a.payload, a.burst, a.seconds
    );
    // pvp-net with GSO on and off (even with one reply per request, replies queued together
    // for one client socket coalesce).
    let mut servers: Vec<(&str, Option<(DriverChoice, bool)>)> =
        vec![("pvp-net io_uring", Some((DriverChoice::IoUring, true)))];
    servers.push(("pvp-net io_uring, no GSO", Some((DriverChoice::IoUring, false))));
    servers.push(("pvp-net epoll+recvmmsg", Some((DriverChoice::Epoll, true))));
    servers.push(("pvp-net epoll, no GSO", Some((DriverChoice::Epoll, false))));
    servers.push(("tokio UdpSocket", None));
    if let Some(only) = &a.only {
        servers.retain(|(name, _)| name.contains(only.as_str()));
    }
    // Interleaved rounds, medians: other load on the machine shifts over time, and every
    // server should see the same mix of it.
    let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); servers.len()];
    for round in 0..a.rounds {
        eprintln!("round {round}");
        for (i, (_, s)) in servers.iter().enumerate() {
            let r = match s {
                Some((d, gso)) => run_pvp(*d, *gso, &a),
                None => Some(run_tokio(&a)),
            };
            if let Some(r) = r {
                results[i].push(r);
            }
        }
    }
    let median = |v: &[(f64, f64)]| -> Option<(f64, f64)> {
        if v.is_empty() {
            return None;
        }
        let mut p: Vec<f64> = v.iter().map(|r| r.0).collect();
        let mut c: Vec<f64> = v.iter().map(|r| r.1).collect();
        p.sort_by(f64::total_cmp);
        c.sort_by(f64::total_cmp);
        Some((p[p.len() / 2], c[c.len() / 2]))
    };
    let meds: Vec<Option<(f64, f64)>> = results.iter().map(|v| median(v)).collect();
    println!("medians of {} interleaved rounds:", a.rounds);
    let unit = if a.burst > 1 { "server ns/datagram sent" } else { "server ns/echo" };
    println!("{:<28} {:>14} {:>24}", "server", "datagrams/s", unit);
    for ((name, _), m) in servers.iter().zip(&meds) {
        if let Some(r) = m {
            println!("{:<28} {:>14.0} {:>24.0}", name, r.0, r.1);
        }
    }
    let find = |name: &str| servers.iter().position(|s| s.0 == name).and_then(|i| meds[i]);
    let tokio = find("tokio UdpSocket");
    let (uring, epoll) = (find("pvp-net io_uring"), find("pvp-net epoll+recvmmsg"));
    if let (Some(u), Some(e), Some(t)) = (uring, epoll, tokio) {
        println!(
            "throughput  io_uring/tokio {:.2}x  io_uring/epoll {:.2}x  epoll/tokio {:.2}x",
            u.0 / t.0,
            u.0 / e.0,
            e.0 / t.0
        );
        println!(
            "cpu/packet  tokio/io_uring {:.2}x  epoll/io_uring {:.2}x  tokio/epoll {:.2}x",
            t.1 / u.1,
            e.1 / u.1,
            t.1 / e.1
        );
    }
    for (on, off, name) in [
        ("pvp-net io_uring", "pvp-net io_uring, no GSO", "io_uring"),
        ("pvp-net epoll+recvmmsg", "pvp-net epoll, no GSO", "epoll"),
    ] {
        if let (Some(g), Some(n)) = (find(on), find(off)) {
            println!(
                "GSO effect ({name}): cpu/datagram no-GSO/GSO {:.2}x, throughput GSO/no-GSO {:.2}x",
                n.1 / g.1,
                g.0 / n.0
            );
        }
    }
}
