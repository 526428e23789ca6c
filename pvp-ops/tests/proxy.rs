//! The fault proxy over real loopback sockets (UDP and TCP).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use pvp_ops::FaultInjector;
use pvp_ops::chaos::proxy::{Direction, FaultProxy, LinkConditions, PartitionMode, ProxyError};
use pvp_ops::chaos::{Fault, FaultKind, LinkFaultInjector};

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
