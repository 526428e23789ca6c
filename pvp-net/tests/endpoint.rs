//! UdpServer on loopback under both drivers: echo through the queues and through inline
//! handlers, several workers on one port, truncation, bad configs refused before anything is
//! allocated, start / stop / drop releasing the port, `BatchSocket`, the CPU and memory helpers,
//! and the session protocol end to end.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pvp_core::{MatchId, PlayerId};
use pvp_net::driver::{DRIVER_ENV, io_uring_unavailable};
use pvp_net::endpoint::{
    Datagram, DatagramHandler, EndpointError, MAX_DATAGRAM, Outbox, UdpServer, UdpServerConfig,
};
use pvp_net::proto::{Client, ClientConfig, MAX_PACKET_LEN, Server, ServerConfig, TokenClaims, TokenKey};
use pvp_net::{DriverChoice, DriverKind};

/// The drivers to test here: epoll always; io_uring when the kernel has it and the
/// environment does not force epoll (CI's second pass).
fn drivers() -> Vec<(DriverChoice, bool)> {
    let mut v = vec![(DriverChoice::Epoll, true)];
    let forced_epoll = std::env::var(DRIVER_ENV).as_deref() == Ok("epoll");
    match io_uring_unavailable() {
        None if !forced_epoll => {
            v.push((DriverChoice::IoUring, true));
            v.push((DriverChoice::IoUring, false));
        }
        None => {}
        Some(e) => eprintln!("note: skipping io_uring cases: {e}"),
    }
    v
}

fn config(driver: DriverChoice, multishot: bool) -> UdpServerConfig {
    let mut c = UdpServerConfig::new("127.0.0.1:0".parse().unwrap());
    c.driver = driver;
    c.uring_multishot = multishot;
    c
}

fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// `recv_from`, retrying when a signal interrupts it.
fn recv(c: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    loop {
        match c.recv_from(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Polls `f` until it holds or 5 s pass (counters are updated just after the kernel acts).
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::yield_now();
    }
    f()
}

fn expected_kind(choice: DriverChoice) -> DriverKind {
    if std::env::var(DRIVER_ENV).as_deref() == Ok("epoll") {
        return DriverKind::Epoll;
    }
    match choice {
        DriverChoice::Epoll => DriverKind::Epoll,
        _ => DriverKind::IoUring,
    }
}

#[test]
fn queue_echo_on_every_driver() {
    for (driver, multishot) in drivers() {
        let server = UdpServer::bind(config(driver, multishot)).unwrap();
        assert_eq!(server.driver(), expected_kind(driver));
        let c = client();
        let n = 200u32;
        let mut got = 0;
        let mut buf = [0u8; 64];
        // Send in bursts of 10 so the socket buffers never overflow; echo each back.
        for burst in 0..(n / 10) {
            for i in 0..10 {
                c.send_to(&(burst * 10 + i).to_le_bytes(), server.local_addr()).unwrap();
            }
            let mut echoed = 0;
            let deadline = Instant::now() + Duration::from_secs(5);
            while echoed < 10 && Instant::now() < deadline {
                match server.recv() {
                    Some(d) => {
                        server.send(d.reply(d.payload()).unwrap()).unwrap();
                        echoed += 1;
                    }
                    None => std::thread::yield_now(),
                }
            }
            assert_eq!(echoed, 10, "{driver:?} burst {burst}");
            for _ in 0..10 {
                let (len, from) = recv(&c, &mut buf).unwrap();
                assert_eq!(from, server.local_addr());
                assert_eq!(len, 4);
                got += 1;
            }
        }
        assert_eq!(got, n);
        assert!(eventually(|| server.stats().tx_packets == u64::from(n)), "{driver:?}");
        assert_eq!(server.stats().rx_packets, u64::from(n), "{driver:?}");
        server.shutdown().unwrap_or_else(|e| panic!("{driver:?} {multishot}: {e}"));
    }
}

struct Echo;

impl DatagramHandler for Echo {
    fn on_datagram(&mut self, _now: Instant, from: SocketAddr, data: &[u8], out: &mut Outbox) {
        let _ = out.send(from, data);
    }
}

#[test]
fn inline_handler_echo_with_several_workers_on_one_port() {
    for (driver, multishot) in drivers() {
        let mut cfg = config(driver, multishot);
        cfg.workers = 2;
        cfg.cpus = pvp_net::allowed_cpus();
        let server = UdpServer::bind_with(cfg, |_| Echo).unwrap();
        assert_eq!(server.workers(), 2);
        // Many client sockets: SO_REUSEPORT spreads them over both workers.
        let clients: Vec<UdpSocket> = (0..16).map(|_| client()).collect();
        let mut buf = [0u8; 64];
        for round in 0..20u8 {
            for (i, c) in clients.iter().enumerate() {
                c.send_to(&[round, i as u8], server.local_addr()).unwrap();
            }
            for (i, c) in clients.iter().enumerate() {
                let (len, _) = recv(c, &mut buf).unwrap();
                assert_eq!(&buf[..len], &[round, i as u8], "{driver:?}");
            }
        }
        assert!(eventually(|| server.stats().tx_packets == 16 * 20), "{driver:?}");
    }
}

#[test]
fn oversized_datagrams_are_counted_not_delivered() {
    for (driver, multishot) in drivers() {
        let server = UdpServer::bind(config(driver, multishot)).unwrap();
        let c = client();
        c.send_to(&[7u8; 3000], server.local_addr()).unwrap();
        c.send_to(b"ok", server.local_addr()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let d = loop {
            if let Some(d) = server.recv() {
                break Some(d);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::yield_now();
        };
        assert_eq!(d.map(|d| d.payload().to_vec()), Some(b"ok".to_vec()));
        assert!(eventually(|| server.stats().rx_truncated == 1), "{driver:?} multishot {multishot}");
    }
}

#[test]
fn bad_configs_are_refused() {
    let mut c = config(DriverChoice::Epoll, true);
    c.workers = 0;
    assert!(matches!(UdpServer::bind(c), Err(EndpointError::Config(_))));
    let mut c = config(DriverChoice::Epoll, true);
    c.ring_buffers = 1000;
    assert!(matches!(UdpServer::bind(c), Err(EndpointError::Config(_))));
    let mut c = config(DriverChoice::Epoll, true);
    c.queue_capacity = 0;
    assert!(matches!(UdpServer::bind(c), Err(EndpointError::Config(_))));
    // A thread name the OS cannot take is a typed error, not a panic in spawn.
    let mut c = config(DriverChoice::Epoll, true);
    c.thread_name = "bad\0name".into();
    assert!(matches!(UdpServer::bind(c), Err(EndpointError::Config(_))));
    // Workers carry the name given.
    let mut c = config(DriverChoice::Epoll, true);
    c.thread_name = "named".into();
    let s = UdpServer::bind(c).unwrap();
    let names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .collect();
    assert!(names.iter().any(|n| n.trim() == "named-0"), "{names:?}");
    s.shutdown().unwrap();
    assert!(Datagram::new("127.0.0.1:1".parse().unwrap(), &[0; 1501]).is_err());
}

#[test]
fn auto_driver_follows_kernel_and_environment() {
    let server = UdpServer::bind(config(DriverChoice::Auto, true)).unwrap();
    let forced = std::env::var(DRIVER_ENV).as_deref() == Ok("epoll");
    let expected =
        if forced || io_uring_unavailable().is_some() { DriverKind::Epoll } else { DriverKind::IoUring };
    assert_eq!(server.driver(), expected, "reason: {}", server.driver_reason());
}

/// A game server worker: the sans-IO session server behind the inline handler.
struct Game {
    server: Server,
    buf: Box<[u8; MAX_PACKET_LEN]>,
}

impl DatagramHandler for Game {
    fn on_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8], out: &mut Outbox) {
        let conn = self.server.handle_datagram(now, from, data).map(|r| (r.connection, r.payload.to_vec()));
        if let Some((conn, payload)) = conn {
            // Echo game data back on the session.
            let server = &mut self.server;
            let _ = out.send_with(from, |b| server.send(now, conn, &payload, b).map_or(0, |t| t.len));
        }
        self.on_tick(now, out);
    }

    fn on_tick(&mut self, now: Instant, out: &mut Outbox) {
        self.server.handle_timeout(now);
        while out.free_slots() > 0 {
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

#[test]
fn session_protocol_end_to_end_over_sockets() {
    for (driver, multishot) in drivers() {
        let key = TokenKey::generate();
        // Bind first to learn the port, then let the workers build servers that know it.
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let mut cfg = config(driver, multishot);
        cfg.bind = addr;
        let k = key.clone();
        let server = UdpServer::bind_with(cfg, move |_| Game {
            server: Server::new(
                ServerConfig::new(k.clone(), addr),
                Instant::now(),
                SystemTime::now().duration_since(UNIX_EPOCH).unwrap(),
            )
            .unwrap(),
            buf: Box::new([0; MAX_PACKET_LEN]),
        })
        .unwrap();
        let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let token = key.issue(&TokenClaims {
            token_id: 1,
            match_id: MatchId::new(5),
            player_id: PlayerId::new(6),
            expires_at_unix_ms: unix_ms + 30_000,
            server_addr: addr,
        });
        let sock = client();
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut c = Client::new(ClientConfig::default(), token, Instant::now()).unwrap();
        let mut buf = [0u8; MAX_PACKET_LEN];
        let mut echoed = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while echoed.is_none() && Instant::now() < deadline {
            let now = Instant::now();
            c.handle_timeout(now);
            while let Some(t) = c.poll_transmit(now, &mut buf) {
                sock.send_to(&buf[..t.len], t.destination).unwrap();
            }
            if c.is_connected() {
                let t = c.send(now, b"state", &mut buf).unwrap();
                sock.send_to(&buf[..t.len], t.destination).unwrap();
            }
            if let Ok((n, from)) = recv(&sock, &mut buf) {
                let data = buf[..n].to_vec();
                if let Some(p) = c.handle_datagram(Instant::now(), from, &data) {
                    echoed = Some(p.to_vec());
                }
            }
        }
        assert_eq!(echoed.as_deref(), Some(&b"state"[..]), "{driver:?}");
        drop(server);
    }
}

#[test]
fn ipv6_loopback_echo() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("note: skipping: no IPv6 loopback");
        return;
    }
    for (driver, multishot) in drivers() {
        let mut cfg = config(driver, multishot);
        cfg.bind = "[::1]:0".parse().unwrap();
        let server = UdpServer::bind_with(cfg, |_| Echo).unwrap();
        let c = UdpSocket::bind("[::1]:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.send_to(b"v6", server.local_addr()).unwrap();
        let mut buf = [0u8; 8];
        let (n, from) = recv(&c, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"v6", "{driver:?}");
        assert_eq!(from, server.local_addr());
    }
}

/// Replies to an address the socket cannot reach (IPv6 from an IPv4 socket) as well as to
/// the sender: the bad send is counted and the good one still goes out.
struct EchoAndBadSend;

impl DatagramHandler for EchoAndBadSend {
    fn on_datagram(&mut self, _now: Instant, from: SocketAddr, data: &[u8], out: &mut Outbox) {
        let _ = out.send("[::1]:9".parse().unwrap(), data);
        let _ = out.send(from, data);
    }
}

#[test]
fn failed_sends_are_counted_and_do_not_stall_the_worker() {
    for (driver, multishot) in drivers() {
        let server = UdpServer::bind_with(config(driver, multishot), |_| EchoAndBadSend).unwrap();
        let c = client();
        let mut buf = [0u8; 8];
        for i in 0..5u8 {
            c.send_to(&[i], server.local_addr()).unwrap();
            let (n, _) = recv(&c, &mut buf).unwrap();
            assert_eq!(&buf[..n], &[i], "{driver:?}");
        }
        assert!(eventually(|| server.stats().tx_errors == 5), "{driver:?}: {:?}", server.stats());
    }
}

#[test]
fn a_multi_source_socket_sends_from_and_tells_apart_loopback_addresses() {
    use pvp_net::endpoint::BatchSocket;
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
    let mut s = BatchSocket::bind_multi_source("0.0.0.0:0".parse().unwrap(), 8).unwrap();
    let port = s.local_addr().unwrap().port();
    for last in [5u8, 6] {
        let src = std::net::Ipv4Addr::new(127, 0, 3, last);
        s.queue_from(src, peer.local_addr().unwrap(), |b| {
            b[0] = last;
            1
        })
        .unwrap();
    }
    s.flush().unwrap();
    let mut buf = [0u8; 16];
    for last in [5u8, 6] {
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((n, buf[0]), (1, last));
        assert_eq!(from, std::net::SocketAddr::from(([127, 0, 3, last], port)));
        peer.send_to(&[last + 100], from).unwrap();
    }
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while got.len() < 2 && std::time::Instant::now() < deadline {
        let n = s.recv_batch(std::time::Duration::from_millis(50)).unwrap();
        for i in 0..n {
            let (_, d) = s.datagram(i).unwrap();
            got.push((s.destination(i), d[0]));
        }
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            (Some(std::net::Ipv4Addr::new(127, 0, 3, 5)), 105),
            (Some(std::net::Ipv4Addr::new(127, 0, 3, 6)), 106)
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Datagrams, configs and sockets

#[test]
fn datagram_bounds_and_reply() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let d = Datagram::new(addr, &[1; MAX_DATAGRAM]).unwrap();
    assert_eq!(d.payload().len(), MAX_DATAGRAM);
    assert_eq!(d.worker(), 0);
    assert!(Datagram::new(addr, &[1; MAX_DATAGRAM + 1]).is_err());
    let e = Datagram::new(addr, &[]).unwrap();
    assert!(e.payload().is_empty());
    let r = d.reply(b"pong").unwrap();
    assert_eq!(r.addr, addr);
    assert_eq!(r.payload(), b"pong");
    assert!(d.reply(&[0; MAX_DATAGRAM + 1]).is_err());
}

#[test]
fn udp_server_refuses_bad_configs_before_allocating() {
    let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut c = UdpServerConfig::new(bind);
    c.workers = usize::MAX;
    assert!(matches!(UdpServer::bind(c), Err(EndpointError::Config(_))));
    let mut c = UdpServerConfig::new(bind);
    c.queue_capacity = 0;
    assert!(matches!(UdpServer::bind(c), Err(EndpointError::Config(_))));
    let mut c = UdpServerConfig::new(bind);
    c.queue_capacity = usize::MAX;
    assert!(matches!(UdpServer::bind(c), Err(EndpointError::Config(_))));
    let mut c = UdpServerConfig::new(bind);
    c.queue_capacity = 1 << 40;
    assert!(matches!(UdpServer::bind(c), Err(EndpointError::Config(_))));
    let mut c = UdpServerConfig::new(bind);
    c.batch = 0;
    assert!(matches!(UdpServer::bind(c), Err(EndpointError::Config(_))));
    let mut c = UdpServerConfig::new(bind);
    c.ring_buffers = 3;
    assert!(matches!(UdpServer::bind(c), Err(EndpointError::Config(_))));
    let mut c = UdpServerConfig::new(bind);
    c.ring_buffers = 0;
    assert!(matches!(UdpServer::bind(c), Err(EndpointError::Config(_))));
}

#[test]
fn batch_socket_round_trip_and_oversize_is_not_handed_out() {
    use pvp_net::endpoint::BatchSocket;
    let mut a = BatchSocket::bind("127.0.0.1:0".parse().unwrap(), 0).unwrap();
    let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let a_addr = a.local_addr().unwrap();
    let b_addr = b.local_addr().unwrap();
    // batch 0 is taken as 1: queueing two sends the first on the way.
    assert_eq!(
        a.queue_with(b_addr, |buf| {
            buf[..3].copy_from_slice(b"one");
            3
        })
        .unwrap(),
        3
    );
    assert_eq!(
        a.queue_with(b_addr, |buf| {
            buf[..3].copy_from_slice(b"two");
            3
        })
        .unwrap(),
        3
    );
    assert_eq!(a.flush().unwrap(), 1);
    // A fill of 0 queues nothing.
    assert_eq!(a.queue_with(b_addr, |_| 0).unwrap(), 0);
    assert_eq!(a.flush().unwrap(), 0);
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = [0u8; 16];
    for want in [&b"one"[..], b"two"] {
        let (n, from) = b.recv_from(&mut got).unwrap();
        assert_eq!((&got[..n], from), (want, a_addr));
    }
    // Exactly MAX_DATAGRAM is handed out; one byte more is not.
    for len in [MAX_DATAGRAM, MAX_DATAGRAM + 1, MAX_DATAGRAM + 2, 0] {
        b.send_to(&vec![7u8; len], a_addr).unwrap();
        let mut n = 0;
        for _ in 0..50 {
            n = a.recv_batch(Duration::from_millis(100)).unwrap();
            if n > 0 {
                break;
            }
        }
        assert_eq!(n, 1, "len {len}");
        match a.datagram(0) {
            Some((from, d)) => {
                assert!(len <= MAX_DATAGRAM, "{len} bytes handed out");
                assert_eq!((from, d.len()), (b_addr, len));
            }
            None => assert!(len > MAX_DATAGRAM, "{len} bytes refused"),
        }
        assert!(a.datagram(1).is_none());
    }
}

#[test]
fn bind_with_server_has_no_queues() {
    use pvp_net::endpoint::{DatagramHandler, Outbox};
    struct Nop;
    impl DatagramHandler for Nop {
        fn on_datagram(&mut self, _: Instant, _: SocketAddr, _: &[u8], _: &mut Outbox) {}
    }
    let mut c = UdpServerConfig::new("127.0.0.1:0".parse().unwrap());
    c.driver = pvp_net::DriverChoice::Epoll;
    let s = UdpServer::bind_with(c, |_| Nop).unwrap();
    assert_ne!(s.local_addr().port(), 0);
    assert_eq!(s.workers(), 1);
    assert!(s.recv().is_none());
    let mut out = Vec::new();
    assert_eq!(s.recv_batch(&mut out, 10), 0);
    let d = Datagram::new(s.local_addr(), b"x").unwrap();
    assert_eq!(s.send(d).map_err(|d| d.payload().to_vec()), Err(b"x".to_vec()));
    s.shutdown().unwrap();
}

#[test]
fn datagrams_just_over_max_are_counted_not_delivered_on_every_driver() {
    use pvp_net::DriverChoice;
    let mut drivers = vec![(DriverChoice::Epoll, false)];
    if pvp_net::driver::io_uring_unavailable().is_none() {
        drivers.push((DriverChoice::IoUring, true));
        drivers.push((DriverChoice::IoUring, false));
    }
    for (driver, multishot) in drivers {
        let mut c = UdpServerConfig::new("127.0.0.1:0".parse().unwrap());
        c.driver = driver;
        c.uring_multishot = multishot;
        let server = UdpServer::bind(c).unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for len in [MAX_DATAGRAM + 1, MAX_DATAGRAM + 200] {
            client.send_to(&vec![1u8; len], server.local_addr()).unwrap();
        }
        client.send_to(&[2u8; MAX_DATAGRAM], server.local_addr()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let got = loop {
            if let Some(d) = server.recv() {
                break Some(d);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::yield_now();
        };
        let got = got.expect("the full-size datagram arrives");
        assert_eq!(got.payload(), &[2u8; MAX_DATAGRAM][..], "{driver:?} multishot {multishot}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.stats().rx_truncated < 2 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(server.stats().rx_truncated, 2, "{driver:?} multishot {multishot}");
        assert!(server.recv().is_none());
    }
}

#[test]
fn cpu_and_memory_helpers_report_sensibly() {
    let cpus = pvp_net::allowed_cpus();
    assert!(!cpus.is_empty());
    assert!(cpus.windows(2).all(|w| w[0] < w[1]));
    assert!(pvp_net::pin_to_cpu(usize::MAX).is_err());
    let first = cpus[0];
    let pinned = std::thread::spawn(move || pvp_net::pin_to_cpu(first).is_ok()).join().unwrap();
    assert!(pinned);
    assert!(pvp_net::resident_bytes().is_some_and(|b| b > 0));
    assert!(pvp_net::process_cpu_time().is_some());
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

fn driver_choices() -> Vec<DriverChoice> {
    let mut v = vec![DriverChoice::Epoll];
    let mut c = UdpServerConfig::new("127.0.0.1:0".parse().unwrap());
    c.driver = DriverChoice::IoUring;
    if std::env::var_os("PVP_NET_DRIVER").is_none() && UdpServer::bind(c).is_ok() {
        v.push(DriverChoice::IoUring);
    }
    v
}

fn echo_once(server: &UdpServer) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = [0u8; 64];
    loop {
        assert!(Instant::now() < deadline, "no echo");
        sock.send_to(b"ping", server.local_addr()).unwrap();
        let mut spins = 0;
        while spins < 100_000 {
            if let Some(d) = server.recv() {
                assert_eq!(d.payload(), b"ping");
                server.send(d.reply(b"pong").unwrap()).unwrap();
            }
            if let Ok((n, from)) = sock.recv_from(&mut got) {
                assert_eq!((&got[..n], from), (&b"pong"[..], server.local_addr()));
                return;
            }
            spins += 1;
            std::thread::yield_now();
        }
    }
}

#[test]
fn udp_server_starts_and_stops_repeatedly_on_every_driver() {
    for driver in driver_choices() {
        for round in 0..3 {
            let mut c = UdpServerConfig::new("127.0.0.1:0".parse().unwrap());
            c.driver = driver;
            c.workers = 1 + round % 2;
            let s = UdpServer::bind(c).unwrap();
            assert_eq!(s.workers(), 1 + round % 2);
            echo_once(&s);
            let st = s.stats();
            assert!(st.rx_packets >= 1 && st.tx_packets <= st.rx_packets);
            s.shutdown().unwrap();
        }
    }
}

#[test]
fn udp_server_dropped_without_shutdown_releases_its_port() {
    for driver in driver_choices() {
        let mut c = UdpServerConfig::new("127.0.0.1:0".parse().unwrap());
        c.driver = driver;
        let s = UdpServer::bind(c.clone()).unwrap();
        let addr = s.local_addr();
        echo_once(&s);
        drop(s);
        // The workers are joined by drop: the same port binds again.
        c.bind = addr;
        let again = UdpServer::bind(c).unwrap();
        assert_eq!(again.local_addr(), addr);
        echo_once(&again);
        again.shutdown().unwrap();
    }
}

#[test]
fn handler_mode_runs_one_handler_per_worker_ticks_while_idle_and_drops_them_on_stop() {
    use pvp_net::endpoint::{DatagramHandler, Outbox, WorkerInfo};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Echo {
        ticks: Arc<AtomicUsize>,
        dropped: Arc<AtomicUsize>,
    }
    impl DatagramHandler for Echo {
        fn on_datagram(&mut self, _: Instant, from: SocketAddr, data: &[u8], out: &mut Outbox) {
            let _ = out.send(from, data);
        }
        fn on_tick(&mut self, _: Instant, _: &mut Outbox) {
            self.ticks.fetch_add(1, Ordering::Relaxed);
        }
    }
    impl Drop for Echo {
        fn drop(&mut self) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    for driver in driver_choices() {
        for explicit_shutdown in [true, false] {
            let made = Arc::new(AtomicUsize::new(0));
            let ticks = Arc::new(AtomicUsize::new(0));
            let dropped = Arc::new(AtomicUsize::new(0));
            let mut c = UdpServerConfig::new("127.0.0.1:0".parse().unwrap());
            c.driver = driver;
            c.workers = 2;
            let (m, t, d) = (made.clone(), ticks.clone(), dropped.clone());
            let s = UdpServer::bind_with(c, move |info: WorkerInfo| {
                assert!(info.index < 2);
                m.fetch_add(1, Ordering::Relaxed);
                Echo { ticks: t.clone(), dropped: d.clone() }
            })
            .unwrap();
            assert_eq!(made.load(Ordering::Relaxed), 2, "factory ran once per worker before bind returned");
            // Ticks arrive with no traffic at all.
            let deadline = Instant::now() + Duration::from_secs(10);
            while ticks.load(Ordering::Relaxed) < 4 {
                assert!(Instant::now() < deadline, "no ticks while idle");
                std::thread::yield_now();
            }
            // Echo through the handler.
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            let mut got = [0u8; 16];
            let mut echoed = false;
            for _ in 0..50 {
                sock.send_to(b"hi", s.local_addr()).unwrap();
                if let Ok((n, from)) = sock.recv_from(&mut got) {
                    assert_eq!((&got[..n], from), (&b"hi"[..], s.local_addr()));
                    echoed = true;
                    break;
                }
            }
            assert!(echoed, "{driver:?}: no echo");
            assert!(s.stats().rx_packets >= 1);
            assert_eq!(dropped.load(Ordering::Relaxed), 0);
            if explicit_shutdown {
                s.shutdown().unwrap();
            } else {
                drop(s);
            }
            assert_eq!(dropped.load(Ordering::Relaxed), 2, "{driver:?}: workers joined, handlers dropped");
        }
    }
}
