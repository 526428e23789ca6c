//! An in-process fault proxy for UDP and TCP between two loopback (or any) endpoints.
//!
//! Clients talk to the proxy's [`local_addr`](FaultProxy::local_addr); it forwards to the
//! upstream address and back, applying each direction's [`LinkConditions`]: latency and jitter,
//! loss and duplication (UDP), a bandwidth cap, and one-way or full partitions. Conditions can
//! be changed at any time through a [`LinkControl`]. (This replaces `tc netem`, which the
//! kernel here lacks.)
//!
//! For TCP, loss and duplication do not apply (the kernel's TCP would retransmit and
//! de-duplicate); a partition stalls the stream, as a real one does, and it resumes intact on
//! heal. UDP datagrams with jitter may be reordered; TCP bytes never are.
//!
//! ```
//! use std::net::UdpSocket;
//! use std::time::Duration;
//! use pvp_ops::chaos::proxy::{Direction, FaultProxy, LinkConditions};
//!
//! let server = UdpSocket::bind("127.0.0.1:0").unwrap();
//! let proxy = FaultProxy::udp("127.0.0.1:0".parse().unwrap(), server.local_addr().unwrap(), 1).unwrap();
//! let link = proxy.control();
//! link.set(Direction::Forward, LinkConditions { latency: Duration::from_millis(20), ..LinkConditions::default() }).unwrap();
//! let client = UdpSocket::bind("127.0.0.1:0").unwrap();
//! let sent = std::time::Instant::now();
//! client.send_to(b"ping", proxy.local_addr()).unwrap();
//! let mut buf = [0u8; 16];
//! server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
//! let (n, _) = server.recv_from(&mut buf).unwrap();
//! assert_eq!(&buf[..n], b"ping");
//! assert!(sent.elapsed() >= Duration::from_millis(20));
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{Fault, FaultError, FaultKind};
use crate::FaultInjector;

/// A direction through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → upstream.
    Forward,
    /// Upstream → client.
    Backward,
}

impl Direction {
    fn idx(self) -> usize {
        match self {
            Direction::Forward => 0,
            Direction::Backward => 1,
        }
    }
}

/// What one direction of a link does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkConditions {
    /// Added one-way delay.
    pub latency: Duration,
    /// Uniform jitter: each packet's delay is `latency ± jitter` (never below zero).
    pub jitter: Duration,
    /// Probability of dropping a datagram (UDP), 0..=1.
    pub loss: f64,
    /// Probability of delivering a datagram twice (UDP), 0..=1.
    pub duplicate: f64,
    /// Bandwidth cap in bytes per second; `None` is unlimited. Traffic beyond one second of
    /// queue is dropped (UDP) or held back (TCP).
    pub bandwidth: Option<u64>,
    /// Partitioned: nothing passes.
    pub blocked: bool,
}

impl LinkConditions {
    /// A link with only a fixed delay.
    pub fn delay(latency: Duration) -> Self {
        Self { latency, ..Self::default() }
    }
    fn validate(&self) -> Result<(), ProxyError> {
        if !(0.0..=1.0).contains(&self.loss) || !(0.0..=1.0).contains(&self.duplicate) {
            return Err(ProxyError::InvalidConditions("loss and duplicate must be within 0..=1"));
        }
        if self.latency > MAX_DELAY || self.jitter > MAX_DELAY {
            return Err(ProxyError::InvalidConditions("latency and jitter must be at most one hour"));
        }
        if self.bandwidth == Some(0) {
            return Err(ProxyError::InvalidConditions("bandwidth must be > 0 (use blocked to cut a link)"));
        }
        Ok(())
    }
}

/// Which way a partition cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionMode {
    /// Both directions.
    Full,
    /// Client → upstream only.
    ForwardOnly,
    /// Upstream → client only.
    BackwardOnly,
}

/// Why a proxy call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// A socket operation failed.
    #[error("proxy I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The conditions are invalid.
    #[error("invalid link conditions: {0}")]
    InvalidConditions(&'static str),
}

/// Per-direction counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirectionStats {
    /// Datagrams or stream chunks delivered.
    pub delivered: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// Datagrams dropped (loss, partition, bandwidth queue full).
    pub dropped: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
}

/// Counters of a proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyStats {
    /// Client → upstream.
    pub forward: DirectionStats,
    /// Upstream → client.
    pub backward: DirectionStats,
    /// UDP client associations or TCP connections opened.
    pub sessions: u64,
    /// Sessions refused at the bound.
    pub refused_sessions: u64,
}

#[derive(Default)]
struct DirCounters {
    delivered: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
}

impl DirCounters {
    fn snapshot(&self) -> DirectionStats {
        DirectionStats {
            delivered: self.delivered.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            duplicated: self.duplicated.load(Ordering::Relaxed),
        }
    }
}

struct Pending {
    at: Instant,
    seq: u64,
    data: Vec<u8>,
    sock: Arc<UdpSocket>,
    dest: Option<SocketAddr>,
    dir: usize,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

struct Shared {
    cond: Mutex<[LinkConditions; 2]>,
    pacing: Mutex<[Instant; 2]>,
    rng: Mutex<SmallRng>,
    stop: AtomicBool,
    dirs: [DirCounters; 2],
    sessions: AtomicU64,
    refused: AtomicU64,
    queue: Mutex<BinaryHeap<Reverse<Pending>>>,
    wake: Condvar,
    seq: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

const MAX_SESSIONS: usize = 256;
const MAX_DELAY: Duration = Duration::from_secs(3600);
const MAX_QUEUED: usize = 65_536;
const POLL: Duration = Duration::from_millis(20);

impl Shared {
    fn new(seed: u64) -> Self {
        let now = Instant::now();
        Self {
            cond: Mutex::new([LinkConditions::default(); 2]),
            pacing: Mutex::new([now; 2]),
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
            stop: AtomicBool::new(false),
            dirs: Default::default(),
            sessions: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            queue: Mutex::new(BinaryHeap::new()),
            wake: Condvar::new(),
            seq: AtomicU64::new(0),
        }
    }

    fn blocked(&self, dir: usize) -> bool {
        lock(&self.cond)[dir].blocked
    }

    /// The delay for one packet of `len` bytes: pacing (bandwidth) plus latency ± jitter.
    /// `None` when the bandwidth queue is more than a second deep.
    fn delay(&self, dir: usize, len: usize, c: &LinkConditions, now: Instant) -> Option<Instant> {
        let mut at = now;
        if let Some(bw) = c.bandwidth {
            let mut pacing = lock(&self.pacing);
            let start = pacing[dir].max(now);
            if start > now + Duration::from_secs(1) {
                return None;
            }
            let end = start + Duration::from_secs_f64(len as f64 / bw as f64);
            pacing[dir] = end;
            at = end;
        }
        let mut d = c.latency.as_secs_f64();
        if !c.jitter.is_zero() {
            let j = c.jitter.as_secs_f64();
            d += lock(&self.rng).random_range(-j..=j);
        }
        Some(at + Duration::from_secs_f64(d.max(0.0)))
    }

    /// Datagram: returns the delivery times (0, 1 or 2 of them).
    fn plan_datagram(&self, dir: usize, len: usize) -> Vec<Instant> {
        let c = lock(&self.cond)[dir];
        let now = Instant::now();
        let (lost, dup) = {
            let mut rng = lock(&self.rng);
            (
                c.blocked || (c.loss > 0.0 && rng.random::<f64>() < c.loss),
                c.duplicate > 0.0 && rng.random::<f64>() < c.duplicate,
            )
        };
        if lost {
            self.dirs[dir].dropped.fetch_add(1, Ordering::Relaxed);
            return Vec::new();
        }
        let Some(at) = self.delay(dir, len, &c, now) else {
            self.dirs[dir].dropped.fetch_add(1, Ordering::Relaxed);
            return Vec::new();
        };
        let mut v = vec![at];
        if dup {
            if let Some(at2) = self.delay(dir, len, &c, now) {
                self.dirs[dir].duplicated.fetch_add(1, Ordering::Relaxed);
                v.push(at2);
            }
        }
        v
    }

    fn enqueue(&self, p: Pending) {
        let mut q = lock(&self.queue);
        if q.len() >= MAX_QUEUED {
            self.dirs[p.dir].dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.push(Reverse(p));
        self.wake.notify_one();
    }

    fn deliver_loop(&self) {
        let mut q = lock(&self.queue);
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            match q.peek() {
                Some(Reverse(p)) if p.at <= now => {
                    let Some(Reverse(p)) = q.pop() else { continue };
                    drop(q);
                    let r = match p.dest {
                        Some(d) => p.sock.send_to(&p.data, d),
                        None => p.sock.send(&p.data),
                    };
                    let c = &self.dirs[p.dir];
                    if r.is_ok() {
                        c.delivered.fetch_add(1, Ordering::Relaxed);
                        c.bytes.fetch_add(p.data.len() as u64, Ordering::Relaxed);
                    } else {
                        c.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    q = lock(&self.queue);
                }
                Some(Reverse(p)) => {
                    let wait = p.at - now;
                    q = self.wake.wait_timeout(q, wait).unwrap_or_else(PoisonError::into_inner).0;
                }
                None => {
                    q = self.wake.wait_timeout(q, POLL * 5).unwrap_or_else(PoisonError::into_inner).0;
                }
            }
        }
    }
}

/// Changes a proxy's conditions at run time; cheap to clone and `Send`.
#[derive(Clone)]
pub struct LinkControl {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LinkControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkControl").field("conditions", &*lock(&self.shared.cond)).finish()
    }
}

impl LinkControl {
    /// Sets one direction's conditions.
    pub fn set(&self, dir: Direction, c: LinkConditions) -> Result<(), ProxyError> {
        c.validate()?;
        lock(&self.shared.cond)[dir.idx()] = c;
        Ok(())
    }
    /// Sets both directions' conditions.
    pub fn set_both(&self, c: LinkConditions) -> Result<(), ProxyError> {
        c.validate()?;
        *lock(&self.shared.cond) = [c; 2];
        Ok(())
    }
    /// One direction's conditions.
    pub fn conditions(&self, dir: Direction) -> LinkConditions {
        lock(&self.shared.cond)[dir.idx()]
    }
    /// Cuts the link (other conditions stay as they are).
    pub fn partition(&self, mode: PartitionMode) {
        let mut c = lock(&self.shared.cond);
        match mode {
            PartitionMode::Full => {
                c[0].blocked = true;
                c[1].blocked = true;
            }
            PartitionMode::ForwardOnly => c[0].blocked = true,
            PartitionMode::BackwardOnly => c[1].blocked = true,
        }
    }
    /// Ends any partition.
    pub fn heal(&self) {
        let mut c = lock(&self.shared.cond);
        c[0].blocked = false;
        c[1].blocked = false;
    }
    /// Both directions back to a clean link.
    pub fn reset(&self) {
        *lock(&self.shared.cond) = [LinkConditions::default(); 2];
    }
    /// The proxy's counters.
    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            forward: self.shared.dirs[0].snapshot(),
            backward: self.shared.dirs[1].snapshot(),
            sessions: self.shared.sessions.load(Ordering::Relaxed),
            refused_sessions: self.shared.refused.load(Ordering::Relaxed),
        }
    }
}

/// The fault proxy: threads forwarding between clients and one upstream address. Stops and
/// joins its threads when dropped; open TCP connections through it are closed.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy").field("addr", &self.addr).finish_non_exhaustive()
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.to_string()).spawn(f)
}

/// Where an upstream socket binds: loopback for a loopback upstream, else the unspecified
/// address (a socket bound to loopback cannot reach another host: connect fails with EINVAL).
fn unspecified_like(addr: SocketAddr) -> SocketAddr {
    match (addr.is_ipv4(), addr.ip().is_loopback()) {
        (true, true) => SocketAddr::from(([127, 0, 0, 1], 0)),
        (true, false) => SocketAddr::from(([0, 0, 0, 0], 0)),
        (false, true) => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0)),
        (false, false) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    }
}

impl FaultProxy {
    /// A UDP proxy listening on `listen` and forwarding to `upstream`; `seed` drives loss,
    /// duplication and jitter. Each client address gets its own upstream socket, so replies
    /// find their way back (at most 256 clients).
    pub fn udp(listen: SocketAddr, upstream: SocketAddr, seed: u64) -> Result<Self, ProxyError> {
        let sock = Arc::new(UdpSocket::bind(listen)?);
        sock.set_read_timeout(Some(POLL))?;
        let addr = sock.local_addr()?;
        let shared = Arc::new(Shared::new(seed));
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let s2 = shared.clone();
        let deliver = spawn("pvp-proxy-deliver", move || s2.deliver_loop())?;
        lock(&threads).push(deliver);
        let (s2, t2) = (shared.clone(), threads.clone());
        let rx = spawn("pvp-proxy-udp", move || udp_forward(&sock, upstream, &s2, &t2))?;
        lock(&threads).push(rx);
        Ok(Self { addr, shared, threads })
    }

    /// A TCP proxy listening on `listen`; each accepted connection gets its own connection to
    /// `upstream` (at most 256 at once).
    pub fn tcp(listen: SocketAddr, upstream: SocketAddr, seed: u64) -> Result<Self, ProxyError> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(seed));
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (s2, t2) = (shared.clone(), threads.clone());
        let t = spawn("pvp-proxy-tcp", move || tcp_accept(&listener, upstream, &s2, &t2))?;
        lock(&threads).push(t);
        Ok(Self { addr, shared, threads })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle to change the conditions.
    pub fn control(&self) -> LinkControl {
        LinkControl { shared: self.shared.clone() }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
        // A forwarding thread may start another (a session) until it sees `stop`: join
        // until none is left.
        loop {
            let threads = std::mem::take(&mut *lock(&self.threads));
            if threads.is_empty() {
                break;
            }
            for t in threads {
                let _ = t.join();
            }
        }
    }
}

fn udp_forward(
    listen: &Arc<UdpSocket>,
    upstream: SocketAddr,
    shared: &Arc<Shared>,
    threads: &Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let mut assoc: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    while !shared.stop.load(Ordering::Relaxed) {
        let (n, client) = match listen.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue,
        };
        let up = match assoc.get(&client) {
            Some(s) => s.clone(),
            None => {
                if assoc.len() >= MAX_SESSIONS {
                    shared.refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let Ok(s) = UdpSocket::bind(unspecified_like(upstream)) else {
                    continue;
                };
                if s.connect(upstream).is_err() || s.set_read_timeout(Some(POLL)).is_err() {
                    continue;
                }
                let s = Arc::new(s);
                let (s2, l2, sh) = (s.clone(), listen.clone(), shared.clone());
                match spawn("pvp-proxy-udp-back", move || udp_backward(&s2, &l2, client, &sh)) {
                    Ok(t) => lock(threads).push(t),
                    Err(_) => continue,
                }
                shared.sessions.fetch_add(1, Ordering::Relaxed);
                assoc.insert(client, s.clone());
                s
            }
        };
        for at in shared.plan_datagram(0, n) {
            let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
            shared.enqueue(Pending {
                at,
                seq,
                data: buf[..n].to_vec(),
                sock: up.clone(),
                dest: None,
                dir: 0,
            });
        }
    }
}

fn udp_backward(up: &Arc<UdpSocket>, listen: &Arc<UdpSocket>, client: SocketAddr, shared: &Shared) {
    let mut buf = vec![0u8; 65_536];
    while !shared.stop.load(Ordering::Relaxed) {
        let n = match up.recv(&mut buf) {
            Ok(n) => n,
            Err(_) => continue,
        };
        for at in shared.plan_datagram(1, n) {
            let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
            shared.enqueue(Pending {
                at,
                seq,
                data: buf[..n].to_vec(),
                sock: listen.clone(),
                dest: Some(client),
                dir: 1,
            });
        }
    }
}

fn tcp_accept(
    listener: &TcpListener,
    upstream: SocketAddr,
    shared: &Arc<Shared>,
    threads: &Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let live = Arc::new(AtomicU64::new(0));
    while !shared.stop.load(Ordering::Relaxed) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => continue,
        };
        if live.load(Ordering::Relaxed) >= MAX_SESSIONS as u64 {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(2)) else {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        shared.sessions.fetch_add(1, Ordering::Relaxed);
        let _ = client.set_nonblocking(false);
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        for (src, dst, dir) in
            [(client.try_clone(), server.try_clone(), 0), (server.try_clone(), client.try_clone(), 1)]
        {
            let (Ok(src), Ok(dst)) = (src, dst) else {
                continue;
            };
            let (tx, rx) = sync_channel::<(Instant, Option<Vec<u8>>)>(256);
            let (s1, s2) = (shared.clone(), shared.clone());
            live.fetch_add(1, Ordering::Relaxed);
            let l2 = live.clone();
            let rd = spawn("pvp-proxy-tcp-rd", move || tcp_read(src, dir, &s1, &tx));
            let wr = spawn("pvp-proxy-tcp-wr", move || {
                tcp_write(dst, dir, &s2, &rx);
                l2.fetch_sub(1, Ordering::Relaxed);
            });
            let mut t = lock(threads);
            t.retain(|h| !h.is_finished());
            t.extend(rd.into_iter().chain(wr));
        }
    }
}

fn tcp_read(mut src: TcpStream, dir: usize, shared: &Shared, tx: &SyncSender<(Instant, Option<Vec<u8>>)>) {
    let _ = src.set_read_timeout(Some(POLL));
    let mut buf = vec![0u8; 16 * 1024];
    let mut last = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        // A partition stalls the stream: stop reading, the sender's window fills up.
        if shared.blocked(dir) {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let c = lock(&shared.cond)[dir];
                let now = Instant::now();
                // Never reorder a byte stream; a full pacing queue waits instead of dropping.
                let at = loop {
                    if shared.stop.load(Ordering::Relaxed) {
                        break None;
                    }
                    match shared.delay(dir, n, &c, Instant::now()) {
                        Some(at) => break Some(at),
                        None => std::thread::sleep(Duration::from_millis(5)),
                    }
                };
                let Some(at) = at else { break };
                let at = at.max(last).max(now);
                last = at;
                if tx.send((at, Some(buf[..n].to_vec()))).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    if shared.stop.load(Ordering::Relaxed) {
        // The proxy is going away: close this side now, which also wakes a writer blocked on
        // it, so every connection thread ends and can be joined.
        let _ = src.shutdown(Shutdown::Both);
    }
    let _ = tx.send((last, None));
}

fn tcp_write(mut dst: TcpStream, dir: usize, shared: &Shared, rx: &Receiver<(Instant, Option<Vec<u8>>)>) {
    while let Ok((at, data)) = rx.recv() {
        loop {
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            let now = Instant::now();
            if at > now {
                std::thread::sleep((at - now).min(POLL));
                continue;
            }
            if shared.blocked(dir) {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            break;
        }
        match data {
            Some(d) => {
                if dst.write_all(&d).is_err() {
                    let _ = dst.shutdown(Shutdown::Both);
                    return;
                }
                let c = &shared.dirs[dir];
                c.delivered.fetch_add(1, Ordering::Relaxed);
                c.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
            None => {
                let _ = dst.shutdown(Shutdown::Write);
                return;
            }
        }
    }
}

/// Injects network faults on named links through [`LinkControl`]s:
/// [`FaultKind::NetworkLatency`] (delay `intensity × max_latency`, jitter a tenth of it),
/// [`FaultKind::PacketLoss`] (loss rate `intensity`) and [`FaultKind::NetworkPartition`]
/// (intensity 1: cut; less: that loss rate). A target is `link`, `link/forward` or
/// `link/backward` (one direction only). Revert restores the conditions from before. One
/// fault at a time per link direction: a fault on `link` while `link/forward` is active (or
/// the reverse) is refused with [`FaultError::AlreadyActive`].
#[derive(Debug)]
pub struct LinkFaultInjector {
    max_latency: Duration,
    links: HashMap<String, Vec<LinkControl>>,
    saved: HashMap<String, Vec<[LinkConditions; 2]>>,
}

impl LinkFaultInjector {
    /// An injector whose full-intensity latency is `max_latency`.
    pub fn new(max_latency: Duration) -> Self {
        Self { max_latency, links: HashMap::new(), saved: HashMap::new() }
    }
    /// Adds `control` under `name` (several proxies may share a name: UDP and TCP of one link).
    pub fn with_link(mut self, name: impl Into<String>, control: LinkControl) -> Self {
        self.links.entry(name.into()).or_default().push(control);
        self
    }

    fn parse<'a>(&self, target: &'a str) -> Option<(&'a str, [bool; 2])> {
        let (link, dirs) = match target.rsplit_once('/') {
            // A link may itself be named `x/forward`: the whole name wins.
            _ if self.links.contains_key(target) => (target, [true, true]),
            Some((l, "forward")) => (l, [true, false]),
            Some((l, "backward")) => (l, [false, true]),
            _ => (target, [true, true]),
        };
        self.links.contains_key(link).then_some((link, dirs))
    }
}

impl FaultInjector for LinkFaultInjector {
    fn name(&self) -> &str {
        "link"
    }
    fn supports(&self, fault: &Fault) -> bool {
        matches!(
            fault.kind(),
            FaultKind::NetworkLatency | FaultKind::PacketLoss | FaultKind::NetworkPartition
        ) && self.parse(fault.target()).is_some()
    }
    fn inject(&mut self, fault: &Fault) -> Result<(), FaultError> {
        let (link, dirs) =
            self.parse(fault.target()).ok_or_else(|| FaultError::UnknownTarget(fault.target().into()))?;
        // One fault per link direction: overlapping faults (`link` and `link/forward`) would
        // each restore the other's conditions on revert.
        let overlaps = self
            .saved
            .keys()
            .filter_map(|k| self.parse(k))
            .any(|(l, d)| l == link && ((d[0] && dirs[0]) || (d[1] && dirs[1])));
        if overlaps {
            return Err(FaultError::AlreadyActive(fault.target().into()));
        }
        let controls = &self.links[link];
        let saved: Vec<[LinkConditions; 2]> = controls
            .iter()
            .map(|c| [c.conditions(Direction::Forward), c.conditions(Direction::Backward)])
            .collect();
        let i = fault.intensity();
        for (c, old) in controls.iter().zip(&saved) {
            for (d, dir) in [Direction::Forward, Direction::Backward].into_iter().enumerate() {
                if !dirs[d] {
                    continue;
                }
                let mut n = old[d];
                match fault.kind() {
                    FaultKind::NetworkLatency => {
                        n.latency = self.max_latency.mul_f64(i);
                        n.jitter = n.latency / 10;
                    }
                    FaultKind::PacketLoss => n.loss = i,
                    _ if i >= 1.0 => n.blocked = true,
                    _ => n.loss = i,
                }
                if let Err(e) = c.set(dir, n) {
                    // Leave nothing half-applied.
                    for (c, old) in controls.iter().zip(&saved) {
                        let _ = c.set(Direction::Forward, old[0]);
                        let _ = c.set(Direction::Backward, old[1]);
                    }
                    return Err(FaultError::Target(e.to_string()));
                }
            }
        }
        self.saved.insert(fault.target().to_string(), saved);
        Ok(())
    }
    fn revert(&mut self, fault: &Fault) -> Result<(), FaultError> {
        let saved =
            self.saved.remove(fault.target()).ok_or_else(|| FaultError::NotActive(fault.target().into()))?;
        let (link, dirs) =
            self.parse(fault.target()).ok_or_else(|| FaultError::UnknownTarget(fault.target().into()))?;
        for (c, old) in self.links[link].iter().zip(saved) {
            // Only the directions this fault changed: the other one may carry another fault.
            // The saved conditions passed validation before.
            if dirs[0] {
                let _ = c.set(Direction::Forward, old[0]);
            }
            if dirs[1] {
                let _ = c.set(Direction::Backward, old[1]);
            }
        }
        Ok(())
    }
}
