//! The fault proxy over real loopback sockets (UDP and TCP): latency as a lower bound, loss,
//! duplication, one-way and two-way partitions, bandwidth caps, seeded loss patterns, control
//! changes applying to later packets, drop closing everything; link conditions validated, and
//! the link injector applying, refusing overlaps and restoring conditions, also from an
//! experiment.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use pvp_ops::FaultInjector;
use pvp_ops::chaos::proxy::{Direction, FaultProxy, LinkConditions, PartitionMode, ProxyError};
use pvp_ops::chaos::{ChaosEngine, Fault, FaultError, FaultKind, LinkFaultInjector};

use common::fast_long_recovery;

fn lo() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// An echo server on UDP.
fn udp_echo() -> (SocketAddr, std::thread::JoinHandle<()>) {
    let s = UdpSocket::bind(lo()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let addr = s.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            if &buf[..n] == b"quit" {
                break;
            }
            let _ = s.send_to(&buf[..n], from);
        }
    });
    (addr, t)
}

fn client() -> UdpSocket {
    let c = UdpSocket::bind(lo()).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    c
}

fn rtt(c: &UdpSocket, to: SocketAddr, msg: &[u8]) -> Option<Duration> {
    let t = Instant::now();
    c.send_to(msg, to).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = c.recv_from(&mut buf).ok()?;
    assert_eq!(&buf[..n], msg);
    Some(t.elapsed())
}

#[test]
fn udp_latency_each_way_adds_up() {
    let (echo, t) = udp_echo();
    let p = FaultProxy::udp(lo(), echo, 1).unwrap();
    let link = p.control();
    let c = client();
    assert!(rtt(&c, p.local_addr(), b"warm").is_some());
    link.set(Direction::Forward, LinkConditions::delay(Duration::from_millis(30))).unwrap();
    link.set(Direction::Backward, LinkConditions::delay(Duration::from_millis(20))).unwrap();
    let r = rtt(&c, p.local_addr(), b"hello").unwrap();
    assert!(r >= Duration::from_millis(50), "{r:?}");
    assert!(r < Duration::from_millis(290), "{r:?}");
    link.reset();
    c.send_to(b"quit", echo).unwrap();
    t.join().unwrap();
}

#[test]
fn udp_loss_duplication_and_partitions() {
    let (echo, t) = udp_echo();
    let p = FaultProxy::udp(lo(), echo, 42).unwrap();
    let link = p.control();
    let c = client();
    assert!(rtt(&c, p.local_addr(), b"warm").is_some());

    // One-way partition: requests get through, replies do not.
    link.partition(PartitionMode::BackwardOnly);
    assert!(rtt(&c, p.local_addr(), b"one-way").is_none());
    let s = link.stats();
    assert!(s.backward.dropped >= 1);
    link.heal();
    assert!(rtt(&c, p.local_addr(), b"healed").is_some());

    // Full partition.
    link.partition(PartitionMode::Full);
    assert!(rtt(&c, p.local_addr(), b"cut").is_none());
    link.heal();

    // 50 % loss forward: of 200 datagrams, clearly some but not all arrive.
    link.set(Direction::Forward, LinkConditions { loss: 0.5, ..Default::default() }).unwrap();
    let before = link.stats().forward;
    for i in 0..200u32 {
        c.send_to(&i.to_be_bytes(), p.local_addr()).unwrap();
    }
    let mut got = 0;
    let mut buf = [0u8; 16];
    while c.recv_from(&mut buf).is_ok() {
        got += 1;
    }
    let after = link.stats().forward;
    let dropped = after.dropped - before.dropped;
    assert_eq!(got + dropped, 200, "every datagram was either delivered or counted as dropped");
    assert!((50..=150).contains(&dropped), "{dropped}");

    // Duplication: every datagram twice.
    link.set(Direction::Forward, LinkConditions { duplicate: 1.0, ..Default::default() }).unwrap();
    c.send_to(b"dup", p.local_addr()).unwrap();
    let mut n = 0;
    while c.recv_from(&mut buf).is_ok() {
        n += 1;
    }
    assert_eq!(n, 2);
    assert!(link.stats().forward.duplicated >= 1);

    assert!(matches!(
        link.set(Direction::Forward, LinkConditions { loss: 2.0, ..Default::default() }),
        Err(ProxyError::InvalidConditions(_))
    ));
    link.reset();
    c.send_to(b"quit", echo).unwrap();
    t.join().unwrap();
}

#[test]
fn udp_bandwidth_cap_paces_datagrams() {
    let (echo, t) = udp_echo();
    let p = FaultProxy::udp(lo(), echo, 3).unwrap();
    let link = p.control();
    let c = client();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    // 100 kB/s forward; 20 datagrams of 1000 bytes need about 200 ms.
    link.set(Direction::Forward, LinkConditions { bandwidth: Some(100_000), ..Default::default() }).unwrap();
    let start = Instant::now();
    for _ in 0..20 {
        c.send_to(&[7u8; 1000], p.local_addr()).unwrap();
    }
    let mut buf = [0u8; 2048];
    for _ in 0..20 {
        c.recv_from(&mut buf).unwrap();
    }
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(190), "{took:?}");
    link.reset();
    c.send_to(b"quit", echo).unwrap();
    t.join().unwrap();
}

fn tcp_echo() -> SocketAddr {
    let l = TcpListener::bind(lo()).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    addr
}

fn read_exact_timeout(s: &mut TcpStream, n: usize) -> std::io::Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    s.read_exact(&mut v)?;
    Ok(v)
}

#[test]
fn tcp_latency_partition_stall_and_heal_keep_the_stream_intact() {
    let p = FaultProxy::tcp(lo(), tcp_echo(), 5).unwrap();
    let link = p.control();
    let mut s = TcpStream::connect(p.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(400))).unwrap();
    s.write_all(b"abc").unwrap();
    assert_eq!(read_exact_timeout(&mut s, 3).unwrap(), b"abc");

    link.set_both(LinkConditions {
        latency: Duration::from_millis(25),
        jitter: Duration::from_millis(10),
        ..Default::default()
    })
    .unwrap();
    let t = Instant::now();
    let msg: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
    for chunk in msg.chunks(100) {
        s.write_all(chunk).unwrap();
    }
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(read_exact_timeout(&mut s, msg.len()).unwrap(), msg, "jitter never reorders a stream");
    assert!(t.elapsed() >= Duration::from_millis(30));

    link.reset();
    link.partition(PartitionMode::Full);
    s.write_all(b"held").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    assert!(read_exact_timeout(&mut s, 4).is_err(), "nothing passes a partition");
    link.heal();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(read_exact_timeout(&mut s, 4).unwrap(), b"held", "the stream resumes intact");
    assert_eq!(link.stats().sessions, 1);
}

#[test]
fn link_injector_applies_and_restores_conditions() {
    let (echo, t) = udp_echo();
    let p = FaultProxy::udp(lo(), echo, 9).unwrap();
    let link = p.control();
    link.set(Direction::Forward, LinkConditions::delay(Duration::from_millis(3))).unwrap();
    let mut inj = LinkFaultInjector::new(Duration::from_millis(200)).with_link("kr-us", link.clone());
    let lat = Fault::new(FaultKind::NetworkLatency, "kr-us", Duration::from_secs(1), 0.5).unwrap();
    assert!(inj.supports(&lat));
    assert!(!inj.supports(&Fault::new(FaultKind::NetworkLatency, "kr-eu", Duration::ZERO, 0.5).unwrap()));
    inj.inject(&lat).unwrap();
    assert_eq!(link.conditions(Direction::Forward).latency, Duration::from_millis(100));
    assert_eq!(link.conditions(Direction::Backward).jitter, Duration::from_millis(10));
    inj.revert(&lat).unwrap();
    assert_eq!(link.conditions(Direction::Forward), LinkConditions::delay(Duration::from_millis(3)));
    assert_eq!(link.conditions(Direction::Backward), LinkConditions::default());

    let one_way =
        Fault::new(FaultKind::NetworkPartition, "kr-us/forward", Duration::from_secs(1), 1.0).unwrap();
    inj.inject(&one_way).unwrap();
    assert!(link.conditions(Direction::Forward).blocked);
    assert!(!link.conditions(Direction::Backward).blocked);
    let c = client();
    assert!(rtt(&c, p.local_addr(), b"x").is_none());
    inj.revert(&one_way).unwrap();
    assert!(!link.conditions(Direction::Forward).blocked);
    assert!(rtt(&c, p.local_addr(), b"y").is_some());
    c.send_to(b"quit", echo).unwrap();
    t.join().unwrap();
}

#[test]
fn tcp_bandwidth_cap_paces_the_stream() {
    let p = FaultProxy::tcp(lo(), tcp_echo(), 6).unwrap();
    let link = p.control();
    // 200 kB/s each way: 50 kB there and back needs at least ~0.25 s one way.
    link.set_both(LinkConditions { bandwidth: Some(200_000), ..Default::default() }).unwrap();
    let mut s = TcpStream::connect(p.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let msg = vec![3u8; 50_000];
    let t = Instant::now();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&msg).map(|_| msg));
    let got = read_exact_timeout(&mut s, 50_000).unwrap();
    let msg = writer.join().unwrap().unwrap();
    assert_eq!(got, msg);
    assert!(t.elapsed() >= Duration::from_millis(240), "{:?}", t.elapsed());
    assert_eq!(link.stats().forward.bytes, 50_000);
}

// ---------------------------------------------------------------------------------------------
// Link conditions and the link injector

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn link_proxy() -> FaultProxy {
    // Nothing is sent through it: the proxy only supplies a LinkControl.
    FaultProxy::udp("127.0.0.1:0".parse().unwrap(), "127.0.0.1:9".parse().unwrap(), 1).unwrap()
}

#[test]
fn invalid_link_conditions_are_refused_and_change_nothing() {
    let p = link_proxy();
    let link = p.control();
    let good = LinkConditions { latency: Duration::from_millis(5), loss: 0.25, ..LinkConditions::default() };
    link.set(Direction::Forward, good).unwrap();
    let bads = [
        LinkConditions { loss: f64::NAN, ..good },
        LinkConditions { loss: 1.5, ..good },
        LinkConditions { loss: -0.1, ..good },
        LinkConditions { duplicate: 2.0, ..good },
        LinkConditions { duplicate: f64::NAN, ..good },
        LinkConditions { bandwidth: Some(0), ..good },
        LinkConditions { latency: secs(3601), ..good },
        LinkConditions { jitter: secs(3601), ..good },
    ];
    for bad in bads {
        assert!(
            matches!(link.set(Direction::Forward, bad), Err(ProxyError::InvalidConditions(_))),
            "{bad:?}"
        );
        assert!(matches!(link.set_both(bad), Err(ProxyError::InvalidConditions(_))), "{bad:?}");
        assert_eq!(link.conditions(Direction::Forward), good);
        assert_eq!(link.conditions(Direction::Backward), LinkConditions::default());
    }
    // The bounds themselves are fine.
    let edge = LinkConditions { loss: 1.0, duplicate: 0.0, latency: secs(3600), bandwidth: Some(1), ..good };
    link.set_both(edge).unwrap();
    assert_eq!(link.conditions(Direction::Backward), edge);
}

#[test]
fn link_injector_refuses_overlapping_faults_and_reverts_only_its_direction() {
    let p = link_proxy();
    let link = p.control();
    let base = LinkConditions::delay(Duration::from_millis(2));
    link.set_both(base).unwrap();
    let mut inj = LinkFaultInjector::new(Duration::from_millis(100)).with_link("kr-jp", link.clone());
    let whole = Fault::new(FaultKind::PacketLoss, "kr-jp", secs(1), 0.5).unwrap();
    let fwd = Fault::new(FaultKind::NetworkPartition, "kr-jp/forward", secs(1), 1.0).unwrap();
    let back = Fault::new(FaultKind::NetworkLatency, "kr-jp/backward", secs(1), 1.0).unwrap();

    // The whole link, then one of its directions: refused, nothing changed.
    inj.inject(&whole).unwrap();
    assert_eq!(inj.inject(&fwd), Err(FaultError::AlreadyActive("kr-jp/forward".into())));
    assert!(!link.conditions(Direction::Forward).blocked);
    inj.revert(&whole).unwrap();
    assert_eq!(link.conditions(Direction::Forward), base);
    assert_eq!(link.conditions(Direction::Backward), base);

    // Two different directions at once: each revert restores only its own direction.
    inj.inject(&fwd).unwrap();
    inj.inject(&back).unwrap();
    assert_eq!(inj.inject(&whole), Err(FaultError::AlreadyActive("kr-jp".into())));
    assert!(link.conditions(Direction::Forward).blocked);
    assert_eq!(link.conditions(Direction::Backward).latency, Duration::from_millis(100));
    inj.revert(&fwd).unwrap();
    assert_eq!(link.conditions(Direction::Forward), base);
    assert_eq!(
        link.conditions(Direction::Backward).latency,
        Duration::from_millis(100),
        "the backward fault is still active"
    );
    inj.revert(&back).unwrap();
    assert_eq!(link.conditions(Direction::Forward), base);
    assert_eq!(link.conditions(Direction::Backward), base);

    // Reverting twice, or an unknown link.
    assert_eq!(inj.revert(&back), Err(FaultError::NotActive("kr-jp/backward".into())));
    let unknown = Fault::new(FaultKind::PacketLoss, "kr-us", secs(1), 0.5).unwrap();
    assert!(!inj.supports(&unknown));
    assert_eq!(inj.inject(&unknown), Err(FaultError::UnknownTarget("kr-us".into())));
}

// ---------------------------------------------------------------------------------------------
// UDP

fn sock(timeout_ms: u64) -> UdpSocket {
    let s = UdpSocket::bind(lo()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(timeout_ms))).unwrap();
    s
}

/// Receives up to `max` datagrams until the read timeout passes with nothing new; returns the
/// payloads and the last sender.
fn drain(s: &UdpSocket, max: usize) -> (Vec<Vec<u8>>, Option<SocketAddr>) {
    let mut out = Vec::new();
    let mut from = None;
    let mut buf = [0u8; 2048];
    while out.len() < max {
        match s.recv_from(&mut buf) {
            Ok((n, f)) => {
                out.push(buf[..n].to_vec());
                from = Some(f);
            }
            Err(_) => break,
        }
    }
    (out, from)
}

struct Rig {
    proxy: FaultProxy,
    upstream: UdpSocket,
    client: UdpSocket,
}

fn rig(seed: u64) -> Rig {
    let upstream = sock(300);
    let proxy = FaultProxy::udp(lo(), upstream.local_addr().unwrap(), seed).unwrap();
    Rig { proxy, upstream, client: sock(300) }
}

impl Rig {
    fn send(&self, msg: &[u8]) {
        self.client.send_to(msg, self.proxy.local_addr()).unwrap();
    }
    /// One delivered datagram forward; returns the proxy's upstream-side address.
    fn open(&self) -> SocketAddr {
        self.send(b"hello");
        let (got, from) = drain(&self.upstream, 1);
        assert_eq!(got, vec![b"hello".to_vec()]);
        from.unwrap()
    }
}

#[test]
fn udp_loss_one_drops_everything_and_zero_nothing() {
    let r = rig(7);
    let ctl = r.proxy.control();
    ctl.set_both(LinkConditions { loss: 1.0, ..LinkConditions::default() }).unwrap();
    for i in 0..20u8 {
        r.send(&[i]);
    }
    let (got, _) = drain(&r.upstream, 20);
    assert!(got.is_empty(), "loss 1.0 let {} through", got.len());
    let deadline = Instant::now() + Duration::from_secs(5);
    while ctl.stats().forward.dropped < 20 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(ctl.stats().forward.dropped, 20);
    ctl.set_both(LinkConditions { loss: 0.0, ..LinkConditions::default() }).unwrap();
    for i in 0..20u8 {
        r.send(&[i]);
    }
    let (mut got, _) = drain(&r.upstream, 20);
    got.sort();
    assert_eq!(got, (0..20u8).map(|i| vec![i]).collect::<Vec<_>>());
    assert_eq!(ctl.stats().forward.dropped, 20, "nothing dropped at loss 0");
}

#[test]
fn udp_duplicate_one_delivers_every_datagram_twice() {
    let r = rig(1);
    let ctl = r.proxy.control();
    ctl.set(Direction::Forward, LinkConditions { duplicate: 1.0, ..LinkConditions::default() }).unwrap();
    for i in 0..5u8 {
        r.send(&[i]);
    }
    let (mut got, _) = drain(&r.upstream, 10);
    got.sort();
    let want: Vec<Vec<u8>> = (0..5u8).flat_map(|i| [vec![i], vec![i]]).collect();
    assert_eq!(got, want);
    assert_eq!(ctl.stats().forward.duplicated, 5);
}

#[test]
fn udp_partitions_cut_one_way_or_both_and_heal() {
    let r = rig(3);
    let ctl = r.proxy.control();
    let back = r.open();
    let reply = |m: &[u8]| r.upstream.send_to(m, back).unwrap();

    ctl.partition(PartitionMode::ForwardOnly);
    assert!(ctl.conditions(Direction::Forward).blocked && !ctl.conditions(Direction::Backward).blocked);
    r.send(b"f1");
    reply(b"b1");
    assert_eq!(drain(&r.client, 1).0, vec![b"b1".to_vec()], "backward still open");
    assert!(drain(&r.upstream, 1).0.is_empty(), "forward cut");

    ctl.heal();
    ctl.partition(PartitionMode::BackwardOnly);
    r.send(b"f2");
    reply(b"b2");
    assert_eq!(drain(&r.upstream, 1).0, vec![b"f2".to_vec()], "forward open");
    assert!(drain(&r.client, 1).0.is_empty(), "backward cut");

    ctl.partition(PartitionMode::Full);
    r.send(b"f3");
    reply(b"b3");
    assert!(drain(&r.upstream, 1).0.is_empty());
    assert!(drain(&r.client, 1).0.is_empty());

    ctl.heal();
    r.send(b"f4");
    assert_eq!(drain(&r.upstream, 1).0, vec![b"f4".to_vec()]);
    reply(b"b4");
    assert_eq!(drain(&r.client, 1).0, vec![b"b4".to_vec()]);
}

#[test]
fn udp_latency_is_a_lower_bound_and_control_changes_apply_to_later_packets() {
    let r = rig(9);
    let ctl = r.proxy.control();
    r.open();
    let d = Duration::from_millis(60);
    ctl.set(Direction::Forward, LinkConditions::delay(d)).unwrap();
    let t = Instant::now();
    r.send(b"slow");
    r.upstream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    assert_eq!(drain(&r.upstream, 1).0, vec![b"slow".to_vec()]);
    assert!(t.elapsed() >= d, "delivered after {:?}, configured {d:?}", t.elapsed());
    // A later change (loss) applies to the next packet.
    ctl.set(Direction::Forward, LinkConditions { loss: 1.0, ..LinkConditions::default() }).unwrap();
    r.upstream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    r.send(b"gone");
    assert!(drain(&r.upstream, 1).0.is_empty());
    ctl.reset();
    assert_eq!(ctl.conditions(Direction::Forward), LinkConditions::default());
    r.send(b"back");
    assert_eq!(drain(&r.upstream, 1).0, vec![b"back".to_vec()]);
}

#[test]
fn udp_same_seed_same_loss_pattern() {
    let pattern = |seed: u64| {
        let r = rig(seed);
        let ctl = r.proxy.control();
        ctl.set(Direction::Forward, LinkConditions { loss: 0.5, ..LinkConditions::default() }).unwrap();
        let mut got = Vec::new();
        for i in 0..32u8 {
            r.send(&[i]);
            // One at a time so the random draws happen in send order.
            let deadline = Instant::now() + Duration::from_secs(5);
            let seen = |s: pvp_ops::chaos::proxy::DirectionStats| s.delivered + s.dropped;
            while seen(ctl.stats().forward) <= u64::from(i) && Instant::now() < deadline {
                std::thread::yield_now();
            }
        }
        got.extend(drain(&r.upstream, 32).0);
        got.sort();
        got
    };
    let a = pattern(42);
    assert!(!a.is_empty() && a.len() < 32, "loss 0.5 over 32 datagrams: {} through", a.len());
    assert_eq!(a, pattern(42));
}

#[test]
fn dropped_proxy_forwards_nothing() {
    let r = rig(5);
    r.open();
    let addr = r.proxy.local_addr();
    drop(r.proxy);
    r.client.send_to(b"after", addr).unwrap();
    assert!(drain(&r.upstream, 1).0.is_empty());
}

// ---------------------------------------------------------------------------------------------
// TCP

// ---------------------------------------------------------------- fault proxy (TCP)

/// An upstream that echoes one connection until it closes.
fn tcp_echo_once() -> (SocketAddr, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind(lo()).unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    (addr, t)
}

#[test]
fn dropping_a_tcp_proxy_closes_its_connections_even_with_a_backlogged_bandwidth_cap() {
    let (up, echo) = tcp_echo_once();
    let proxy = FaultProxy::tcp(lo(), up, 11).unwrap();
    let ctl = proxy.control();
    let mut c = TcpStream::connect(proxy.local_addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"a").unwrap();
    let mut one = [0u8; 1];
    c.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"a");
    // 1 byte/s: the proxy reads at most a few KiB at a time, so the first read books the
    // pacing queue hours ahead and the proxy holds back every later read.
    ctl.set(Direction::Forward, LinkConditions { bandwidth: Some(1), ..LinkConditions::default() }).unwrap();
    c.write_all(&[7u8; 64 * 1024]).unwrap();
    drop(proxy);
    let mut buf = [0u8; 16];
    // Dropped means joined: no connection thread of this (the binary's only TCP) proxy is left.
    #[cfg(target_os = "linux")]
    {
        let names: Vec<String> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
            .collect();
        assert!(!names.iter().any(|n| n.starts_with("pvp-proxy-tcp")), "threads left: {names:?}");
    }
    match c.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0, "nothing held back is delivered after the proxy is gone"),
        Err(e) => assert!(
            !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            "the connection was left open after the proxy was dropped: {e}"
        ),
    }
    echo.join().unwrap();
}

// ---------------------------------------------------------------------------------------------
// An experiment over a real link

#[test]
fn experiment_partitions_a_real_link_and_restores_its_conditions() {
    let upstream = sock(5000);
    let proxy = FaultProxy::udp(lo(), upstream.local_addr().unwrap(), 21).unwrap();
    let ctl = proxy.control();
    let before = LinkConditions::delay(Duration::from_millis(1));
    ctl.set_both(before).unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = upstream.recv_from(&mut buf) {
            if &buf[..n] == b"quit" {
                break;
            }
            let _ = upstream.send_to(&buf[..n], from);
        }
    });
    let mut engine = ChaosEngine::new(fast_long_recovery());
    engine.register(
        pvp_ops::chaos::LinkFaultInjector::new(Duration::from_millis(100)).with_link("kr-us", ctl.clone()),
    );
    let client = sock(100);
    let to = proxy.local_addr();
    let mut seq = 0u32;
    let ping = move || {
        seq += 1;
        client.send_to(&seq.to_be_bytes(), to).unwrap();
        let mut buf = [0u8; 64];
        // Skip late replies to earlier pings; a bounded number of reads.
        for _ in 0..8 {
            match client.recv_from(&mut buf) {
                Ok((4, _)) if buf[..4] == seq.to_be_bytes() => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    };
    let fault =
        Fault::new(FaultKind::NetworkPartition, "kr-us/forward", Duration::from_millis(150), 1.0).unwrap();
    let report = engine.run_experiment("pings survive a one-way cut", vec![fault], ping).unwrap();
    assert!(report.failed_checks >= 1, "the cut broke the steady state: {report:?}");
    assert_eq!(report.failed_checks, report.checks, "no ping passes a forward cut");
    assert!(!report.passed);
    assert!(report.recovery_time.is_some());
    assert_eq!(ctl.conditions(Direction::Forward), before, "revert restores the conditions from before");
    assert_eq!(ctl.conditions(Direction::Backward), before);
    UdpSocket::bind(lo()).unwrap().send_to(b"quit", to).unwrap();
    echo.join().unwrap();
}
