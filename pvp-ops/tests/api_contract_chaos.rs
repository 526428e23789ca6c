//! API-contract audit of the chaos module: experiment report semantics, guards and the
//! fault proxy over 127.0.0.1 (lower bounds only on time).

#[path = "shared_support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pvp_ops::chaos::proxy::{Direction, FaultProxy, LinkConditions, PartitionMode};
use pvp_ops::chaos::{
    AbortCondition, ChaosEngine, ChaosError, CrashInjector, CrashTarget, ExperimentConfig, Fault, FaultError,
    FaultKind,
};
use support::{Servers, crash_engine};

fn fast() -> ExperimentConfig {
    ExperimentConfig {
        check_interval: Duration::from_millis(2),
        recovery_timeout: Duration::from_secs(10),
        ..ExperimentConfig::default()
    }
}

fn crash(target: &str, d: Duration) -> Fault {
    Fault::new(FaultKind::ServerCrash, target, d, 1.0).unwrap()
}

#[test]
fn guard_reverts_exactly_once_when_a_panic_unwinds() {
    let servers = Servers::default();
    let engine = crash_engine(fast(), &servers);
    let r = catch_unwind(AssertUnwindSafe(|| {
        let _g = engine.inject(crash("gs-1", Duration::from_secs(60))).unwrap();
        assert_eq!(*servers.down.lock().unwrap(), vec!["gs-1".to_string()]);
        panic!("boom");
    }));
    assert!(r.is_err());
    assert!(servers.down.lock().unwrap().is_empty());
    assert_eq!(servers.restores.load(Ordering::SeqCst), 1);
    let s = engine.stats();
    assert_eq!((s.injected, s.reverted, s.revert_failures), (1, 1, 0));
}

#[test]
fn overlapping_guards_revert_independently_and_the_same_target_is_refused_while_active() {
    let servers = Servers::default();
    let engine = crash_engine(fast(), &servers);
    let a = engine.inject(crash("gs-1", Duration::ZERO)).unwrap();
    let b = engine.inject(crash("gs-2", Duration::ZERO)).unwrap();
    match engine.inject(crash("gs-1", Duration::ZERO)) {
        Err(ChaosError::Inject { source: FaultError::AlreadyActive(t), .. }) => assert_eq!(t, "gs-1"),
        other => panic!("expected AlreadyActive, got {other:?}"),
    }
    drop(b);
    assert_eq!(*servers.down.lock().unwrap(), vec!["gs-1".to_string()]);
    a.revert().unwrap();
    assert!(servers.down.lock().unwrap().is_empty());
    assert_eq!(servers.restores.load(Ordering::SeqCst), 2);
    // Reverted: the same target can be injected again.
    let c = engine.inject(crash("gs-1", Duration::ZERO)).unwrap();
    drop(c);
    assert_eq!(engine.stats().injected, 3);
    assert_eq!(engine.stats().reverted, 3);
}

#[test]
fn failed_checks_abort_at_exactly_the_limit_and_revert_every_fault() {
    let servers = Servers::default();
    let mut cfg = fast();
    cfg.abort_conditions = vec![AbortCondition::FailedChecks(3)];
    let mut engine = crash_engine(cfg, &servers);
    let probe = servers.down.clone();
    let t0 = Instant::now();
    let report = engine
        .run_experiment(
            "survives two crashes",
            vec![crash("gs-1", Duration::from_secs(60)), crash("gs-2", Duration::from_secs(60))],
            move || probe.lock().unwrap().is_empty(),
        )
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(60), "aborted before the faults' end");
    assert_eq!(report.failed_checks, 3);
    assert_eq!(report.checks, 3, "every check while the servers were down failed");
    assert!(report.aborted.is_some());
    assert!(!report.passed);
    assert!(report.recovery_time.is_some());
    assert!(servers.down.lock().unwrap().is_empty());
    assert_eq!(servers.restores.load(Ordering::SeqCst), 2, "each fault reverted exactly once");
    let s = engine.stats();
    assert_eq!((s.experiments, s.aborted, s.injected, s.reverted), (1, 1, 2, 2));
    assert_eq!(report.hypothesis, "survives two crashes");
    let noted = |p: &str| report.observations.iter().filter(|o| o.what.starts_with(p)).count();
    assert_eq!(noted("injected: "), 2, "{:?}", report.observations);
    assert_eq!(noted("reverted: "), 2, "each revert on abort is observed: {:?}", report.observations);
    assert_eq!(noted("abort: "), 1);
    let ats: Vec<Duration> = report.observations.iter().map(|o| o.at).collect();
    assert!(ats.windows(2).all(|w| w[0] <= w[1]), "observations in order: {ats:?}");
}

#[test]
fn tolerated_failures_decide_pass_and_checks_count_only_during_faults() {
    for (tolerated, expect_pass) in [(u32::MAX, true), (0, false)] {
        let servers = Servers::default();
        let mut cfg = fast();
        cfg.tolerated_failures = tolerated;
        let mut engine = crash_engine(cfg, &servers);
        let probe = servers.down.clone();
        let report = engine
            .run_experiment("h", vec![crash("gs-1", Duration::from_millis(30))], move || {
                probe.lock().unwrap().is_empty()
            })
            .unwrap();
        assert!(report.checks >= 1);
        assert_eq!(
            report.failed_checks, report.checks,
            "the server was down at every check during the fault"
        );
        assert_eq!(report.passed, expect_pass, "tolerated {tolerated}");
        assert!(report.aborted.is_none());
        assert!(report.recovery_time.is_some());
    }
}

/// A crash target that remembers when it was restored.
#[derive(Clone, Default)]
struct Timed {
    restored_at: Arc<Mutex<Option<Instant>>>,
}

impl CrashTarget for Timed {
    fn crash(&mut self, _: &str) -> Result<(), FaultError> {
        *self.restored_at.lock().unwrap() = None;
        Ok(())
    }
    fn restore(&mut self, _: &str) -> Result<(), FaultError> {
        *self.restored_at.lock().unwrap() = Some(Instant::now());
        Ok(())
    }
}

#[test]
fn recovery_time_runs_from_the_last_revert_to_the_first_good_check() {
    let target = Timed::default();
    let mut engine = ChaosEngine::new(fast());
    engine.register(CrashInjector::new(target.clone()));
    let lag = Duration::from_millis(40);
    let at = target.restored_at.clone();
    let mut first = true;
    let report = engine
        .run_experiment("recovers", vec![crash("gs-1", Duration::from_millis(10))], move || {
            if std::mem::take(&mut first) {
                return true; // the check before any fault
            }
            at.lock().unwrap().is_some_and(|t| t.elapsed() >= lag)
        })
        .unwrap();
    let since_revert = target.restored_at.lock().unwrap().expect("reverted").elapsed();
    let rt = report.recovery_time.expect("recovered");
    assert!(rt >= lag, "recovery {rt:?} counts from the revert, the system needed {lag:?}");
    assert!(rt <= since_revert, "recovery {rt:?} cannot exceed the time since the revert {since_revert:?}");
}

#[test]
fn no_recovery_within_the_timeout_fails_with_none() {
    let servers = Servers::default();
    let mut cfg = fast();
    cfg.recovery_timeout = Duration::from_millis(20);
    cfg.tolerated_failures = u32::MAX;
    let mut engine = crash_engine(cfg, &servers);
    let mut calls = 0u32;
    let report = engine
        .run_experiment("never recovers", vec![crash("gs-1", Duration::from_millis(5))], move || {
            calls += 1;
            calls == 1
        })
        .unwrap();
    assert_eq!(report.recovery_time, None);
    assert!(!report.passed);
    assert!(servers.down.lock().unwrap().is_empty(), "reverted although the steady state never came back");
}

// ---------------------------------------------------------------- fault proxy (UDP)

fn lo() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

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
    let mut engine = ChaosEngine::new(fast());
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
