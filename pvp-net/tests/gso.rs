//! UDP GSO on the send path, on loopback under both drivers: bursts to one peer arrive whole
//! and in order with GSO on and off, and the GSO counters say which path ran.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use pvp_net::DriverChoice;
use pvp_net::driver::{DRIVER_ENV, io_uring_send_zc_available, io_uring_unavailable, udp_gso_available};
use pvp_net::endpoint::{DatagramHandler, Outbox, UdpServer, UdpServerConfig};

fn drivers() -> Vec<DriverChoice> {
    let mut v = vec![DriverChoice::Epoll];
    let forced_epoll = std::env::var(DRIVER_ENV).as_deref() == Ok("epoll");
    match io_uring_unavailable() {
        None if !forced_epoll => v.push(DriverChoice::IoUring),
        None => eprintln!("note: PVP_NET_DRIVER=epoll; io_uring cases run as epoll"),
        Some(e) => eprintln!("note: skipping io_uring cases: {e}"),
    }
    v
}

/// On a request `[count u16, size u16, last u16]`, replies with `count` datagrams of `size`
/// bytes (the last of `last` bytes, 0: `size`; `size` 0: sizes alternate 200 / 300); each
/// carries its sequence number and a pattern derived from it.
struct Burst;

fn pattern(seq: u32, i: usize) -> u8 {
    (seq as usize * 31 + i * 7) as u8
}

fn expected_len(count: u16, size: u16, last: u16, seq: u32) -> usize {
    if size == 0 {
        return if seq % 2 == 0 { 200 } else { 300 };
    }
    if seq + 1 == u32::from(count) && last != 0 { usize::from(last) } else { usize::from(size) }
}

impl DatagramHandler for Burst {
    fn on_datagram(&mut self, _now: Instant, from: SocketAddr, data: &[u8], out: &mut Outbox) {
        let Some(req) = data.get(..6) else { return };
        let count = u16::from_le_bytes([req[0], req[1]]);
        let size = u16::from_le_bytes([req[2], req[3]]);
        let last = u16::from_le_bytes([req[4], req[5]]);
        for seq in 0..u32::from(count) {
            let len = expected_len(count, size, last, seq);
            let _ = out.send_with(from, |b| {
                b[..4].copy_from_slice(&seq.to_le_bytes());
                for (i, x) in b[4..len].iter_mut().enumerate() {
                    *x = pattern(seq, i);
                }
                len
            });
        }
    }
}

/// Bursts of up to 100 datagrams arrive faster than the test reads them: ask for a 4 MiB
/// receive buffer (the kernel caps it at `net.core.rmem_max`) so none is dropped.
fn big_receive_buffer(s: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4 << 20;
    // SAFETY: `size` is a live c_int and its size is passed; the fd belongs to `s`.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_RCVBUF");
}

fn run(driver: DriverChoice, gso: bool, zc: Option<usize>) {
    let mut c = UdpServerConfig::new("127.0.0.1:0".parse().unwrap());
    c.driver = driver;
    c.gso = gso;
    c.uring_send_zc = zc;
    let server = UdpServer::bind_with(c, |_| Burst).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    big_receive_buffer(&client);
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // (count, size, last): full 64-segment runs, a shorter tail, the 65,000-byte cap, sizes
    // that never coalesce, a single datagram.
    let bursts: [(u16, u16, u16); 5] =
        [(100, 700, 300), (50, 1400, 0), (40, 0, 0), (1, 900, 0), (64, 1000, 4)];
    let mut buf = [0u8; 2048];
    for (count, size, last) in bursts {
        let mut req = Vec::new();
        for v in [count, size, last] {
            req.extend_from_slice(&v.to_le_bytes());
        }
        client.send_to(&req, server.local_addr()).unwrap();
        for seq in 0..u32::from(count) {
            let n = loop {
                match client.recv_from(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    r => {
                        break r
                            .unwrap_or_else(|e| {
                                panic!("{driver:?} gso={gso}: burst {count}x{size}: seq {seq}: {e}")
                            })
                            .0;
                    }
                }
            };
            assert_eq!(n, expected_len(count, size, last, seq), "{driver:?} gso={gso} length of {seq}");
            assert_eq!(u32::from_le_bytes(buf[..4].try_into().unwrap()), seq, "{driver:?} gso={gso} order");
            assert!(
                buf[4..n].iter().enumerate().all(|(i, &x)| x == pattern(seq, i)),
                "{driver:?} gso={gso}: payload of {seq} corrupted"
            );
        }
    }
    // Counters move just after the kernel reports the sends: poll them (bounded).
    let total: u64 = bursts.iter().map(|b| u64::from(b.0)).sum();
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().tx_packets < total && Instant::now() < deadline {
        std::thread::yield_now();
    }
    let st = server.stats();
    assert_eq!(st.tx_packets, total);
    assert_eq!(st.tx_errors, 0);
    if gso && udp_gso_available() {
        assert!(st.tx_gso_sends >= 4, "{driver:?}: expected coalesced sends, got {st:?}");
        assert!(st.tx_gso_segments >= 200, "{driver:?}: {st:?}");
        assert!(st.tx_gso_segments <= st.tx_packets);
    } else {
        if gso {
            eprintln!("note: kernel lacks UDP GSO; checked the fallback path");
        }
        assert_eq!(st.tx_gso_sends, 0);
        assert_eq!(st.tx_gso_segments, 0);
    }
    if let Some(min) = zc {
        // Single datagrams >= `min` exist in these bursts unless GSO packs every large one.
        let used = driver == DriverChoice::IoUring && io_uring_send_zc_available() && (min == 0 || !gso);
        if used {
            assert!(st.tx_zc_sends <= st.tx_packets);
            assert!(st.tx_zc_sends > 0, "zero-copy threshold {min}: {st:?}");
        } else {
            eprintln!("note: no SendMsgZc here; checked the plain-send path");
            assert_eq!(st.tx_zc_sends, 0);
        }
    } else {
        assert_eq!(st.tx_zc_sends, 0);
    }
    server.shutdown().unwrap();
}

#[test]
fn bursts_arrive_whole_and_in_order_with_gso_on_and_off() {
    for driver in drivers() {
        run(driver, true, None);
        run(driver, false, None);
    }
}

#[test]
fn zero_copy_sends_keep_bursts_whole_and_in_order() {
    for driver in drivers() {
        // Every send zero-copy, then only the large ones (GSO runs; single datagrams >= 1,000 B).
        for (gso, min) in [(true, 0), (false, 0), (true, 1_000), (false, 1_000)] {
            run(driver, gso, Some(min));
        }
    }
}
