//! Hosts on a shaped router: addresses per host, delay on the path, one-way cuts, process
//! kill/freeze/restart, the fault injector, and clean-up.
//!
//! The processes started in the hosts are this test binary again, running one of the
//! `helper_*` functions below (picked by `PVP_HOSTS_HELPER`; they return at once otherwise).

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvp_ops::FaultInjector;
use pvp_ops::chaos::{Fault, FaultKind};
use pvp_ops::hosts::{HostFaults, HostNet, LinkShape, ProcState};

/// Skips (with a note) where hosts cannot be made, unless `PVP_REQUIRE_HOSTS=1` (CI sets it).
fn hosts_or_skip() -> bool {
    match HostNet::check() {
        Ok(()) => true,
        Err(e) if std::env::var("PVP_REQUIRE_HOSTS").as_deref() == Ok("1") => panic!("hosts required: {e}"),
        Err(e) => {
            eprintln!("skipped: {e}");
            false
        }
    }
}

fn helper() -> Option<String> {
    std::env::var("PVP_HOSTS_HELPER").ok()
}

/// Echoes datagrams on `PVP_LISTEN` for at most 60 s, printing a line per datagram.
#[test]
fn helper_echo() {
    if helper().as_deref() != Some("echo") {
        return;
    }
    let s = UdpSocket::bind(std::env::var("PVP_LISTEN").unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 1500];
    let mut got = 0;
    while Instant::now() < end {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            got += 1;
            println!("got {got}");
            let _ = s.send_to(&buf[..n], from);
        }
    }
}

/// Sends `PVP_COUNT` pings to `PVP_TARGET` one at a time (300 ms for each answer); prints
/// `replies N min_us X`.
#[test]
fn helper_ping() {
    if helper().as_deref() != Some("ping") {
        return;
    }
    let target = std::env::var("PVP_TARGET").unwrap();
    let count: u32 = std::env::var("PVP_COUNT").unwrap().parse().unwrap();
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let (mut replies, mut min_us) = (0u32, u128::MAX);
    let mut buf = [0u8; 64];
    for i in 0..count {
        let t = Instant::now();
        let _ = s.send_to(&i.to_le_bytes(), &target);
        let deadline = t + Duration::from_millis(300);
        while Instant::now() < deadline {
            match s.recv(&mut buf) {
                Ok(4) if buf[..4] == i.to_le_bytes() => {
                    replies += 1;
                    min_us = min_us.min(t.elapsed().as_micros());
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    println!("replies {replies} min_us {min_us}");
}

fn me() -> std::path::PathBuf {
    std::env::current_exe().unwrap()
}

fn spawn_echo(net: &HostNet, label: &str, host: &str) {
    let listen = format!("{}:7000", net.host(host).unwrap().addr());
    let args = ["--exact", "helper_echo", "--nocapture", "--test-threads=1"];
    net.spawn_with_env(
        label,
        host,
        me(),
        args,
        [("PVP_HOSTS_HELPER", "echo"), ("PVP_LISTEN", listen.as_str())],
    )
    .unwrap();
}

/// Pings `to`'s echo from `from`: `(replies, min rtt)`.
fn ping(net: &HostNet, label: &str, from: &str, to: &str, count: u32) -> (u32, Duration) {
    let target = format!("{}:7000", net.host(to).unwrap().addr());
    let args = ["--exact", "helper_ping", "--nocapture", "--test-threads=1"];
    let env =
        [("PVP_HOSTS_HELPER", "ping"), ("PVP_TARGET", target.as_str()), ("PVP_COUNT", &count.to_string())];
    // A fresh label per ping: a restart would reuse the first call's count.
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let label = &format!("{label}-{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    net.spawn_with_env(label, from, me(), args, env).unwrap();
    let status = net.wait(label, Duration::from_secs(30)).unwrap().expect("ping ends");
    assert!(status.success(), "{}", net.log(label).unwrap());
    let log = net.log(label).unwrap();
    // libtest prints `test helper_ping ... ` before the helper's own line.
    let line = log.rsplit("replies ").next().filter(|_| log.contains("replies ")).expect("a result line");
    let line = format!("replies {line}");
    let mut it = line.split_whitespace();
    let replies: u32 = it.nth(1).unwrap().parse().unwrap();
    let min_us: u128 = it.nth(1).unwrap().parse().unwrap();
    (replies, Duration::from_micros(min_us.min(u128::from(u64::MAX)) as u64))
}

/// Datagrams the echo process `label` received so far.
fn echoed(net: &HostNet, label: &str) -> usize {
    net.log(label).unwrap().matches("got ").count()
}

/// Waits (bounded) until the echo process prints that it listens... it prints nothing until a
/// datagram comes, so the first ping may race its bind: ping until one reply (at most 5 s).
fn until_up(net: &HostNet, from: &str, to: &str) {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if ping(net, &format!("probe-{from}-{to}"), from, to, 1).0 == 1 {
            return;
        }
    }
    panic!("echo on {to} never answered {from}");
}

#[test]
fn hosts_delay_cut_freeze_kill_and_clean_up() {
    if helper().is_some() || !hosts_or_skip() {
        return;
    }
    let net = HostNet::create(&["a", "b", "c"]).unwrap();
    let tag = net.tag().to_owned();
    assert_eq!(net.host("a").unwrap().addr().octets(), [10, 77, 0, 10]);
    assert!(matches!(
        net.set_link("a", "b", LinkShape { loss: 2.0, ..LinkShape::default() }),
        Err(pvp_ops::hosts::HostError::BadShape(_))
    ));
    assert!(net.host("zz").is_err());
    spawn_echo(&net, "echo-a", "a");
    spawn_echo(&net, "echo-b", "b");
    until_up(&net, "a", "b");
    until_up(&net, "b", "a");

    // Unshaped: well under a millisecond. Shaped: at least the RTT, on every packet.
    let (replies, fast) = ping(&net, "ping-ab", "a", "b", 20);
    assert_eq!(replies, 20);
    assert!(fast < Duration::from_millis(20), "unshaped rtt {fast:?}");
    net.set_rtt("a", "b", Duration::from_millis(60)).unwrap();
    let (replies, slow) = ping(&net, "ping-ab", "a", "b", 10);
    assert_eq!(replies, 10);
    assert!(
        slow >= Duration::from_millis(60) && slow < Duration::from_millis(160),
        "shaped rtt {slow:?} {:?} {:?} {:?}",
        net.stats(),
        net.link("a", "b"),
        net.link("b", "a")
    );
    // c's links are untouched by a-b's shape.
    let (replies, c_rtt) = ping(&net, "ping-cb", "c", "b", 5);
    assert_eq!(replies, 5);
    assert!(c_rtt < Duration::from_millis(40), "c-b rtt {c_rtt:?}");

    // One way: a->b cut. a's pings never reach b; b's pings reach a, but a's answers don't return.
    let before_b = echoed(&net, "echo-b");
    let before_a = echoed(&net, "echo-a");
    net.set_link("a", "b", LinkShape { cut: true, ..net.link("a", "b").unwrap() }).unwrap();
    assert_eq!(ping(&net, "ping-ab", "a", "b", 5).0, 0);
    assert_eq!(ping(&net, "ping-ba", "b", "a", 5).0, 0);
    assert_eq!(echoed(&net, "echo-b"), before_b, "nothing from a reached b");
    assert_eq!(echoed(&net, "echo-a"), before_a + 5, "b's pings reached a");
    assert!(net.stats().dropped_cut >= 10);
    net.set_link("a", "b", LinkShape::delay(Duration::from_millis(30))).unwrap();
    assert_eq!(ping(&net, "ping-ab", "a", "b", 5).0, 5);

    // Frozen: alive but silent; thawed: answers again; killed: gone; restarted: answers.
    net.freeze("echo-b").unwrap();
    assert_eq!(net.state("echo-b").unwrap(), ProcState::Frozen);
    assert_eq!(ping(&net, "ping-ab", "a", "b", 3).0, 0);
    net.thaw("echo-b").unwrap();
    assert_eq!(net.state("echo-b").unwrap(), ProcState::Running);
    assert!(ping(&net, "ping-ab", "a", "b", 3).0 >= 1, "thawed echo answers (late replies may be lost)");
    net.kill("echo-b").unwrap();
    assert_eq!(net.state("echo-b").unwrap(), ProcState::Killed);
    assert!(net.freeze("echo-b").is_err(), "a killed process cannot be frozen");
    net.restart("echo-b").unwrap();
    assert_eq!(net.starts("echo-b").unwrap(), 2);
    until_up(&net, "a", "b");

    // The injector: faults by target, reverted to exactly what was there before.
    let net = Arc::new(net);
    let mut faults = HostFaults::new(net.clone(), Duration::from_millis(100));
    let slow = Fault::new(FaultKind::NetworkLatency, "a<->b", Duration::from_secs(1), 0.5).unwrap();
    assert!(faults.supports(&slow));
    faults.inject(&slow).unwrap();
    assert_eq!(net.link("a", "b").unwrap().delay, Duration::from_millis(80));
    assert_eq!(net.link("b", "a").unwrap().delay, Duration::from_millis(80));
    assert!(faults.inject(&slow).is_err(), "already active");
    faults.revert(&slow).unwrap();
    assert_eq!(net.link("a", "b").unwrap().delay, Duration::from_millis(30));
    assert_eq!(net.link("b", "a").unwrap().delay, Duration::from_millis(30));
    let isolate = Fault::new(FaultKind::NetworkPartition, "b", Duration::from_secs(1), 1.0).unwrap();
    faults.inject(&isolate).unwrap();
    assert_eq!(ping(&net, "ping-cb", "c", "b", 3).0, 0, "b is cut off from c too");
    faults.revert(&isolate).unwrap();
    assert_eq!(ping(&net, "ping-cb", "c", "b", 3).0, 3);
    let crash = Fault::new(FaultKind::ServerCrash, "echo-b", Duration::from_secs(1), 1.0).unwrap();
    let freeze = Fault::new(FaultKind::ProcessFreeze, "echo-a", Duration::from_secs(1), 1.0).unwrap();
    assert!(faults.supports(&crash) && faults.supports(&freeze));
    assert!(!faults.supports(&Fault::new(FaultKind::ServerCrash, "nobody", Duration::ZERO, 1.0).unwrap()));
    assert!(!faults.supports(&Fault::new(FaultKind::NetworkPartition, "a->a", Duration::ZERO, 1.0).unwrap()));
    faults.inject(&crash).unwrap();
    assert_eq!(net.state("echo-b").unwrap(), ProcState::Killed);
    faults.revert(&crash).unwrap();
    assert_eq!(net.starts("echo-b").unwrap(), 3);
    faults.inject(&freeze).unwrap();
    assert_eq!(net.state("echo-a").unwrap(), ProcState::Frozen);
    faults.revert(&freeze).unwrap();
    assert_eq!(net.state("echo-a").unwrap(), ProcState::Running);
    assert_eq!(net.stats().write_errors, 0);
    drop(faults);

    // Dropped: every namespace it made is gone, and its processes with them.
    let pid = net.pid("echo-a").unwrap();
    drop(Arc::into_inner(net).expect("the last handle"));
    let list =
        String::from_utf8(std::process::Command::new("ip").args(["netns", "list"]).output().unwrap().stdout)
            .unwrap();
    assert!(!list.contains(&tag), "namespaces left: {list}");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "process {pid} left running");
}

#[test]
fn bad_host_lists_are_typed_errors() {
    if helper().is_some() || !hosts_or_skip() {
        return;
    }
    assert!(HostNet::create::<&str>(&[]).is_err());
    assert!(HostNet::create(&["a", "a"]).is_err());
    assert!(HostNet::create(&["a b"]).is_err());
    assert!(HostNet::create(&["x".repeat(17)]).is_err());
}
