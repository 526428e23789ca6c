//! One UDP server API over two drivers (io_uring, epoll + recvmmsg/sendmmsg), thread per
//! core.
//!
//! Each worker owns one `SO_REUSEPORT` socket on the shared port and one ring (or epoll
//! instance), pinned to its own CPU when asked. The kernel hashes each flow to one socket, so a
//! client always reaches the same worker and per-worker session state needs no locks.
//!
//! Two ways to reach game logic:
//! - [`UdpServer::bind`]: datagrams go through bounded lock-free queues; the game calls
//!   [`UdpServer::recv`] / [`UdpServer::send`] from any thread;
//! - [`UdpServer::bind_with`]: each worker runs a [`DatagramHandler`] inline (no queue hop);
//!   replies go into the worker's [`Outbox`] and leave in one batched submit.
//!
//! ```
//! use std::net::UdpSocket;
//! use pvp_net::endpoint::{UdpServer, UdpServerConfig};
//!
//! let server = UdpServer::bind(UdpServerConfig::new("127.0.0.1:0".parse().unwrap())).unwrap();
//! println!("driver: {:?}", server.driver());
//! let client = UdpSocket::bind("127.0.0.1:0").unwrap();
//! client.send_to(b"ping", server.local_addr()).unwrap();
//! // Poll the queue (a game loop would do this once per tick).
//! let d = loop {
//!     if let Some(d) = server.recv() { break d; }
//!     std::thread::yield_now();
//! };
//! assert_eq!(d.payload(), b"ping");
//! server.send(d.reply(b"pong").unwrap()).unwrap();
//! let mut buf = [0u8; 16];
//! let (n, _) = client.recv_from(&mut buf).unwrap();
//! assert_eq!(&buf[..n], b"pong");
//! ```

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::driver::{self, DriverChoice, DriverKind};
use crate::sys::{self, OutMsg};

/// The largest datagram the drivers receive or send.
pub const MAX_DATAGRAM: usize = 1500;

/// The largest [`UdpServerConfig::queue_capacity`]: each slot holds a whole [`Datagram`]
/// (about 1.5 KiB), so this is about 1.5 GiB per queue.
pub const MAX_QUEUE_CAPACITY: usize = 1 << 20;

/// The bounded MPMC queue between workers and game logic.
type PacketQueue<T> = pvp_core::queue::BoundedQueue<T>;

/// UDP server settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UdpServerConfig {
    /// Address to bind (port 0: the kernel picks one, shared by all workers).
    pub bind: SocketAddr,
    /// Worker threads, each with its own socket and ring / epoll.
    pub workers: usize,
    /// Which driver; `PVP_NET_DRIVER=epoll|io_uring` in the environment overrides it.
    pub driver: DriverChoice,
    /// CPUs to pin worker `i` to (`cpus[i % len]`); empty: no pinning.
    pub cpus: Vec<usize>,
    /// Datagrams received per syscall (recvmmsg batch) and send slots per worker.
    pub batch: usize,
    /// Provided buffers in each io_uring buffer ring (power of two, <= 32768).
    pub ring_buffers: u16,
    /// Capacity of the inbound queue and each worker's outbound queue ([`UdpServer::bind`]);
    /// 1..=[`MAX_QUEUE_CAPACITY`].
    pub queue_capacity: usize,
    /// Socket send/receive buffer size to ask the kernel for.
    pub socket_buffer: usize,
    /// Longest a worker waits before calling [`DatagramHandler::on_tick`] again.
    pub tick: Duration,
    /// io_uring: use multishot `RecvMsgMulti` with a provided buffer ring where the kernel has
    /// it (false: single-shot `RecvMsg` on owned buffers, as on kernels before 5.19).
    pub uring_multishot: bool,
    /// UDP GSO: consecutive outgoing datagrams to the same peer with the same size (the last
    /// may be shorter) leave as one `sendmsg` with a `UDP_SEGMENT` control message (up to 64
    /// datagrams, 64 KiB). Used only where the kernel supports it (Linux >= 4.18, probed at
    /// start-up); if a GSO send fails with `EIO` (no segmentation on the route's device) the
    /// worker turns it off and resends the datagrams one by one.
    pub gso: bool,
    /// io_uring: single datagrams of at least this many bytes leave by zero-copy
    /// `SendMsgZc` where the kernel has it (probed at start-up; otherwise plain `SendMsg`);
    /// the slot stays owned by the kernel until its notification completion. GSO runs always
    /// use plain `SendMsg` (zero-copy over up to 64 slot buffers needs more page fragments
    /// than the kernel allows). `None` (the default): off. Ignored by the epoll driver.
    pub uring_send_zc: Option<usize>,
    /// Worker threads are named `{thread_name}-{index}` (Linux shows the first 15 bytes), so
    /// `top -H` and profilers tell one server's workers from another's.
    pub thread_name: String,
}

impl UdpServerConfig {
    /// One worker, automatic driver, no pinning, batch 64, 1024 ring buffers, 4096-deep
    /// queues, 4 MiB socket buffers, 1 ms tick, multishot receives, GSO on, threads named
    /// `pvp-net-{index}`.
    pub fn new(bind: SocketAddr) -> Self {
        UdpServerConfig {
            bind,
            workers: 1,
            driver: DriverChoice::Auto,
            cpus: Vec::new(),
            batch: 64,
            ring_buffers: 1024,
            queue_capacity: 4096,
            socket_buffer: 4 << 20,
            tick: Duration::from_millis(1),
            uring_multishot: true,
            gso: true,
            uring_send_zc: None,
            thread_name: "pvp-net".to_string(),
        }
    }
}

/// Why a server could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// A setting is out of range (workers not 1..=65535, batch not 1..=1024, queue capacity not
    /// 1..=[`MAX_QUEUE_CAPACITY`], ring size not a power of two up to 32768).
    #[error("invalid endpoint config: {0}")]
    Config(&'static str),
    /// io_uring was required but the kernel refused it.
    #[error("io_uring unavailable: {0}")]
    IoUringUnavailable(io::Error),
    /// A socket or thread could not be set up.
    #[error("endpoint I/O: {0}")]
    Io(#[from] io::Error),
}

/// One datagram with its peer, moved through the queues without allocation.
#[derive(Clone)]
pub struct Datagram {
    /// The peer: sender of a received datagram, destination of one to send.
    pub addr: SocketAddr,
    worker: u16,
    len: u16,
    data: [u8; MAX_DATAGRAM],
}

impl std::fmt::Debug for Datagram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datagram")
            .field("addr", &self.addr)
            .field("worker", &self.worker)
            .field("len", &self.len)
            .finish()
    }
}

/// A payload longer than [`MAX_DATAGRAM`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("datagram longer than {MAX_DATAGRAM} bytes")]
pub struct TooLarge;

impl Datagram {
    /// A datagram to `addr` (sent by worker 0 unless made with [`reply`](Self::reply)).
    pub fn new(addr: SocketAddr, payload: &[u8]) -> Result<Self, TooLarge> {
        Self::with_worker(addr, 0, payload)
    }

    fn with_worker(addr: SocketAddr, worker: u16, payload: &[u8]) -> Result<Self, TooLarge> {
        if payload.len() > MAX_DATAGRAM {
            return Err(TooLarge);
        }
        let mut data = [0u8; MAX_DATAGRAM];
        data[..payload.len()].copy_from_slice(payload);
        Ok(Datagram {
            addr,
            worker,
            // <= MAX_DATAGRAM (1500) fits u16.
            len: payload.len() as u16,
            data,
        })
    }

    /// A reply to this datagram's sender, sent by the worker that received it.
    pub fn reply(&self, payload: &[u8]) -> Result<Self, TooLarge> {
        Self::with_worker(self.addr, self.worker, payload)
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }

    /// Index of the worker that received it (or will send it).
    pub fn worker(&self) -> usize {
        usize::from(self.worker)
    }
}

/// What a worker knows about itself, given to a handler factory.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// Worker index.
    pub index: usize,
    /// The CPU it is pinned to, if any.
    pub cpu: Option<usize>,
    /// The driver it runs.
    pub driver: DriverKind,
    /// The shared local address.
    pub local_addr: SocketAddr,
}

/// Game logic run inline on a worker thread.
pub trait DatagramHandler {
    /// One datagram arrived; replies go into `out`.
    fn on_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8], out: &mut Outbox);

    /// Called after each batch and at least every `tick`: timers, queued sends.
    fn on_tick(&mut self, _now: Instant, _out: &mut Outbox) {}
}

/// Outgoing datagrams of one worker: fixed slots whose buffers the driver owns from the moment
/// they are queued until the kernel reports them sent.
pub struct Outbox {
    pub(crate) slots: sys::SendSlots,
    free: Vec<u32>,
    pub(crate) queued: VecDeque<u32>,
    dropped: u64,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("slots", &self.slots.count())
            .field("free", &self.free.len())
            .field("queued", &self.queued.len())
            .finish()
    }
}

/// The outbox has no free slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("outbox full")]
pub struct OutboxFull;

impl Outbox {
    pub(crate) fn new(slots: usize) -> Self {
        let slots = sys::SendSlots::new(slots);
        Outbox { free: (0..slots.count() as u32).rev().collect(), slots, queued: VecDeque::new(), dropped: 0 }
    }

    /// Queues a copy of `data` to `to`. Refused with [`OutboxFull`] (and counted in
    /// [`dropped`](Self::dropped)) when every slot is busy or `data` is longer than
    /// [`MAX_DATAGRAM`].
    pub fn send(&mut self, to: SocketAddr, data: &[u8]) -> Result<(), OutboxFull> {
        if data.len() > MAX_DATAGRAM {
            self.dropped += 1;
            return Err(OutboxFull);
        }
        self.send_with(to, |buf| {
            buf[..data.len()].copy_from_slice(data);
            data.len()
        })
        .map(drop)
    }

    /// Queues a datagram written in place by `fill` (given [`MAX_DATAGRAM`] bytes, returns
    /// the length; 0 sends nothing, a length above [`MAX_DATAGRAM`] is cut to it) — e.g.
    /// `|b| server.send(now, conn, payload, b)`. Returns the length queued.
    pub fn send_with(
        &mut self,
        to: SocketAddr,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<usize, OutboxFull> {
        let Some(idx) = self.free.pop() else {
            self.dropped += 1;
            return Err(OutboxFull);
        };
        let len = fill(self.slots.buf_mut(idx)).min(MAX_DATAGRAM);
        if len == 0 {
            self.free.push(idx);
            return Ok(0);
        }
        self.slots.set(idx, &to, len);
        self.queued.push_back(idx);
        Ok(len)
    }

    /// Queues a datagram whose destination is known only once it is written (a sans-IO
    /// `poll_transmit`): `fill` writes into the slot's [`MAX_DATAGRAM`] bytes and returns the
    /// destination and length, or `None` for nothing to send. Returns the length queued;
    /// `None` when `fill` had nothing or no slot was free (then `fill` is not called).
    pub fn send_with_dest(
        &mut self,
        fill: impl FnOnce(&mut [u8]) -> Option<(SocketAddr, usize)>,
    ) -> Option<usize> {
        let idx = self.free.pop()?;
        let Some((to, len)) =
            fill(self.slots.buf_mut(idx)).map(|(a, l)| (a, l.min(MAX_DATAGRAM))).filter(|&(_, l)| l > 0)
        else {
            self.free.push(idx);
            return None;
        };
        self.slots.set(idx, &to, len);
        self.queued.push_back(idx);
        Some(len)
    }

    /// Slots in all (a handler that queues many datagrams from `on_tick` should leave some
    /// free for replies in `on_datagram`).
    pub fn capacity(&self) -> usize {
        self.slots.count()
    }

    /// Slots free now.
    pub fn free_slots(&self) -> usize {
        self.free.len()
    }

    /// Sends refused because every slot was busy (or the payload too large).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub(crate) fn release(&mut self, idx: u32) {
        self.free.push(idx);
    }
}

/// Counters of one server, all workers together.
#[derive(Debug, Default)]
pub(crate) struct SharedStats {
    pub(crate) rx_packets: AtomicU64,
    pub(crate) tx_packets: AtomicU64,
    pub(crate) rx_truncated: AtomicU64,
    pub(crate) rx_queue_full: AtomicU64,
    pub(crate) tx_dropped: AtomicU64,
    pub(crate) tx_errors: AtomicU64,
    pub(crate) rx_syscalls: AtomicU64,
    pub(crate) tx_syscalls: AtomicU64,
    pub(crate) tx_gso_sends: AtomicU64,
    pub(crate) tx_gso_segments: AtomicU64,
    pub(crate) tx_zc_sends: AtomicU64,
}

/// A snapshot of a server's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct EndpointStats {
    /// Datagrams received.
    pub rx_packets: u64,
    /// Datagrams the kernel took for sending.
    pub tx_packets: u64,
    /// Datagrams dropped for exceeding [`MAX_DATAGRAM`].
    pub rx_truncated: u64,
    /// Datagrams dropped because the inbound queue was full.
    pub rx_queue_full: u64,
    /// Sends dropped because the outbox or outbound queue was full.
    pub tx_dropped: u64,
    /// Sends the kernel failed.
    pub tx_errors: u64,
    /// Receive syscalls (or ring submits that carried receives).
    pub rx_syscalls: u64,
    /// Send syscalls (or ring submits that carried sends).
    pub tx_syscalls: u64,
    /// Coalesced GSO sends (each carried two or more datagrams).
    pub tx_gso_sends: u64,
    /// Datagrams that left inside GSO sends (also counted in `tx_packets`).
    pub tx_gso_segments: u64,
    /// io_uring zero-copy sends completed (see [`UdpServerConfig::uring_send_zc`]).
    pub tx_zc_sends: u64,
}

pub(crate) struct WorkerCtx {
    pub(crate) info: WorkerInfo,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) stats: Arc<SharedStats>,
    pub(crate) config: UdpServerConfig,
}

/// A running UDP server. Dropping it stops and joins the workers.
#[derive(Debug)]
pub struct UdpServer {
    local_addr: SocketAddr,
    driver: DriverKind,
    driver_reason: String,
    stop: Arc<AtomicBool>,
    stats: Arc<SharedStats>,
    workers: Vec<JoinHandle<io::Result<()>>>,
    inbound: Option<Arc<PacketQueue<Datagram>>>,
    outbound: Vec<Arc<PacketQueue<Datagram>>>,
}

struct QueueHandler {
    worker: u16,
    inbound: Arc<PacketQueue<Datagram>>,
    outbound: Arc<PacketQueue<Datagram>>,
    stats: Arc<SharedStats>,
}

impl DatagramHandler for QueueHandler {
    fn on_datagram(&mut self, _now: Instant, from: SocketAddr, data: &[u8], _out: &mut Outbox) {
        if let Ok(d) = Datagram::with_worker(from, self.worker, data) {
            if self.inbound.push(d).is_err() {
                self.stats.rx_queue_full.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn on_tick(&mut self, _now: Instant, out: &mut Outbox) {
        while out.free_slots() > 0 {
            let Some(d) = self.outbound.pop() else { break };
            let _ = out.send(d.addr, d.payload());
        }
    }
}

impl UdpServer {
    /// Starts a server whose datagrams reach the game through queues
    /// ([`recv`](Self::recv) / [`send`](Self::send)).
    pub fn bind(config: UdpServerConfig) -> Result<Self, EndpointError> {
        // Before the queues are allocated: a bad worker count or capacity must not allocate.
        validate(&config)?;
        if config.queue_capacity == 0 || config.queue_capacity > MAX_QUEUE_CAPACITY {
            return Err(EndpointError::Config("queue_capacity must be 1..=1048576"));
        }
        let queue = || {
            PacketQueue::new(config.queue_capacity)
                .map(Arc::new)
                .map_err(|_| EndpointError::Config("queue_capacity is too large"))
        };
        let inbound = queue()?;
        let outbound = (0..config.workers).map(|_| queue()).collect::<Result<Vec<_>, _>>()?;
        let stats = Arc::new(SharedStats::default());
        let (inb, outb, st) = (inbound.clone(), outbound.clone(), stats.clone());
        let mut server = Self::start(config, stats, move |info: WorkerInfo| QueueHandler {
            // workers <= u16::MAX is checked in start().
            worker: info.index as u16,
            inbound: inb.clone(),
            outbound: outb[info.index].clone(),
            stats: st.clone(),
        })?;
        server.inbound = Some(inbound);
        server.outbound = outbound;
        Ok(server)
    }

    /// Starts a server whose workers each run a handler made by `factory` (called once per
    /// worker, on that worker's thread).
    pub fn bind_with<H, F>(config: UdpServerConfig, factory: F) -> Result<Self, EndpointError>
    where
        H: DatagramHandler + 'static,
        F: Fn(WorkerInfo) -> H + Send + Sync + 'static,
    {
        Self::start(config, Arc::new(SharedStats::default()), factory)
    }

    fn start<H, F>(
        config: UdpServerConfig,
        stats: Arc<SharedStats>,
        factory: F,
    ) -> Result<Self, EndpointError>
    where
        H: DatagramHandler + 'static,
        F: Fn(WorkerInfo) -> H + Send + Sync + 'static,
    {
        validate(&config)?;
        let (driver, reason) = driver::choose(config.driver)?;
        tracing::info!(driver = driver.as_str(), reason = %reason, "pvp-net driver selected");
        metrics::gauge!("pvp_net_driver", "driver" => driver.as_str()).set(1.0);

        let mut sockets: Vec<UdpSocket> = Vec::with_capacity(config.workers);
        let first = sys::udp_socket(config.bind, config.workers > 1, config.socket_buffer)?;
        let local_addr = first.local_addr()?;
        sockets.push(first);
        for _ in 1..config.workers {
            sockets.push(sys::udp_socket(local_addr, true, config.socket_buffer)?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let factory = Arc::new(factory);
        let mut workers = Vec::with_capacity(config.workers);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        for (index, socket) in sockets.into_iter().enumerate() {
            let cpu = (!config.cpus.is_empty()).then(|| config.cpus[index % config.cpus.len()]);
            let ctx = WorkerCtx {
                info: WorkerInfo { index, cpu, driver, local_addr },
                stop: stop.clone(),
                stats: stats.clone(),
                config: config.clone(),
            };
            let factory = factory.clone();
            let ready = ready_tx.clone();
            let handle = std::thread::Builder::new().name(format!("{}-{index}", config.thread_name)).spawn(
                move || {
                    if let Some(cpu) = ctx.info.cpu {
                        if let Err(e) = sys::pin_to_cpu(cpu) {
                            tracing::warn!(cpu, error = %e, "could not pin worker");
                        }
                    }
                    let handler = factory(ctx.info);
                    match ctx.info.driver {
                        DriverKind::IoUring => driver::uring::run(socket, handler, ctx, ready),
                        DriverKind::Epoll => driver::epoll::run(socket, handler, ctx, ready),
                    }
                },
            )?;
            workers.push(handle);
        }
        drop(ready_tx);
        let mut server = UdpServer {
            local_addr,
            driver,
            driver_reason: reason,
            stop,
            stats,
            workers,
            inbound: None,
            outbound: Vec::new(),
        };
        // Every worker reports once that its ring / epoll is set up (or why not).
        for _ in 0..server.workers.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let _ = server.stop_workers();
                    return Err(EndpointError::Io(e));
                }
                Err(_) => {
                    let _ = server.stop_workers();
                    return Err(EndpointError::Io(io::Error::other("worker exited during setup")));
                }
            }
        }
        Ok(server)
    }

    /// The bound address (all workers share it).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The driver chosen at start-up (also logged, and exported as the `pvp_net_driver` gauge).
    pub fn driver(&self) -> DriverKind {
        self.driver
    }

    /// Why that driver was chosen.
    pub fn driver_reason(&self) -> &str {
        &self.driver_reason
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The next received datagram, if any (servers made with [`bind`](Self::bind); always
    /// `None` for [`bind_with`](Self::bind_with)).
    pub fn recv(&self) -> Option<Datagram> {
        self.inbound.as_ref()?.pop()
    }

    /// Moves up to `max` received datagrams into `out`; returns how many.
    pub fn recv_batch(&self, out: &mut Vec<Datagram>, max: usize) -> usize {
        // One synchronisation per run of ready datagrams, not one per datagram.
        self.inbound.as_ref().map_or(0, |q| q.pop_batch(out, max))
    }

    /// Queues a datagram on the worker it names ([`Datagram::reply`] keeps the receiving
    /// worker); hands it back when that queue is full or the server has no queues.
    // A failed push hands the value back (no allocation per packet, so no boxing).
    #[allow(clippy::result_large_err)]
    pub fn send(&self, d: Datagram) -> Result<(), Datagram> {
        match self.outbound.get(d.worker() % self.outbound.len().max(1)) {
            Some(q) => q.push(d).inspect_err(|_| {
                self.stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
            }),
            None => Err(d),
        }
    }

    /// Counters, all workers together.
    pub fn stats(&self) -> EndpointStats {
        let s = &self.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EndpointStats {
            rx_packets: l(&s.rx_packets),
            tx_packets: l(&s.tx_packets),
            rx_truncated: l(&s.rx_truncated),
            rx_queue_full: l(&s.rx_queue_full),
            tx_dropped: l(&s.tx_dropped),
            tx_errors: l(&s.tx_errors),
            rx_syscalls: l(&s.rx_syscalls),
            tx_syscalls: l(&s.tx_syscalls),
            tx_gso_sends: l(&s.tx_gso_sends),
            tx_gso_segments: l(&s.tx_gso_segments),
            tx_zc_sends: l(&s.tx_zc_sends),
        }
    }

    fn stop_workers(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::Release);
        let mut first_err = Ok(());
        for w in self.workers.drain(..) {
            let r = w.join().unwrap_or_else(|_| Err(io::Error::other("worker panicked")));
            if first_err.is_ok() {
                first_err = r;
            }
        }
        first_err
    }

    /// Stops the workers and reports the first worker error, if any.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop_workers()
    }
}

fn validate(config: &UdpServerConfig) -> Result<(), EndpointError> {
    if config.workers == 0 || config.workers > usize::from(u16::MAX) {
        return Err(EndpointError::Config("workers must be 1..=65535"));
    }
    if config.batch == 0 || config.batch > 1024 {
        return Err(EndpointError::Config("batch must be 1..=1024"));
    }
    if !config.ring_buffers.is_power_of_two() || config.ring_buffers > 32768 {
        return Err(EndpointError::Config("ring_buffers must be a power of two <= 32768"));
    }
    if config.thread_name.contains('\0') {
        return Err(EndpointError::Config("thread_name must not contain a NUL byte"));
    }
    Ok(())
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        let _ = self.stop_workers();
    }
}

pub(crate) fn count_tx(stats: &SharedStats, out: &mut Outbox) {
    let d = out.dropped;
    if d > 0 {
        stats.tx_dropped.fetch_add(d, Ordering::Relaxed);
        out.dropped = 0;
    }
}

/// A plain non-blocking UDP socket that sends and receives in batches (`sendmmsg` /
/// `recvmmsg`), for clients and load generators.
pub struct BatchSocket {
    socket: UdpSocket,
    recv: sys::MmsgRecv,
    out: Outbox,
    mm: sys::MmsgSend,
    received: usize,
}

impl std::fmt::Debug for BatchSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSocket").field("local_addr", &self.socket.local_addr().ok()).finish()
    }
}

impl BatchSocket {
    /// Binds a socket that moves up to `batch` datagrams per system call (`batch` is taken
    /// as 1..=1024).
    pub fn bind(addr: SocketAddr, batch: usize) -> io::Result<Self> {
        let batch = batch.clamp(1, 1024);
        Ok(BatchSocket {
            socket: sys::udp_socket(addr, false, 4 << 20)?,
            recv: sys::MmsgRecv::new(batch, MAX_DATAGRAM + 1),
            out: Outbox::new(batch),
            mm: sys::MmsgSend::with_capacity(batch),
            received: 0,
        })
    }

    /// Binds an IPv4 socket that can send from, and tell apart, many local source addresses
    /// on its port (`IP_PKTINFO`): with a wildcard bind, a load generator gives every client
    /// its own address in 127.0.0.0/8 over one socket ([`queue_from`](Self::queue_from),
    /// [`destination`](Self::destination)).
    pub fn bind_multi_source(addr: SocketAddr, batch: usize) -> io::Result<Self> {
        let batch = batch.clamp(1, 1024);
        let socket = sys::udp_socket(addr, false, 16 << 20)?;
        sys::enable_pktinfo(socket.as_raw_fd_())?;
        Ok(BatchSocket {
            socket,
            recv: sys::MmsgRecv::with_pktinfo(batch, MAX_DATAGRAM + 1),
            out: Outbox::new(batch),
            mm: sys::MmsgSend::with_capacity(batch),
            received: 0,
        })
    }

    /// Queues a datagram that leaves from local address `src` (sockets made with
    /// [`bind_multi_source`](Self::bind_multi_source)); otherwise as
    /// [`queue_with`](Self::queue_with).
    pub fn queue_from(
        &mut self,
        src: std::net::Ipv4Addr,
        to: SocketAddr,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> io::Result<usize> {
        if self.out.free_slots() == 0 {
            self.flush()?;
        }
        let Ok(n) = self.out.send_with(to, fill) else { return Ok(0) };
        if n > 0 {
            if let Some(&idx) = self.out.queued.back() {
                self.out.slots.set_source(idx, src);
            }
        }
        Ok(n)
    }

    /// The local address datagram `i` of the last [`recv_batch`](Self::recv_batch) was sent
    /// to (sockets made with [`bind_multi_source`](Self::bind_multi_source)).
    pub fn destination(&self, i: usize) -> Option<std::net::Ipv4Addr> {
        if i >= self.received {
            return None;
        }
        self.recv.destination(i)
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Queues a datagram written in place by `fill` (see [`Outbox::send_with`]); when the
    /// batch is full it is sent first.
    pub fn queue_with(&mut self, to: SocketAddr, fill: impl FnOnce(&mut [u8]) -> usize) -> io::Result<usize> {
        if self.out.free_slots() == 0 {
            self.flush()?;
        }
        Ok(self.out.send_with(to, fill).unwrap_or(0))
    }

    /// Sends everything queued; returns how many the kernel took (the rest are dropped when
    /// its buffer is full, as UDP would).
    pub fn flush(&mut self) -> io::Result<usize> {
        let mut sent = 0;
        while !self.out.queued.is_empty() {
            let msgs = self.out.queued.iter().map(|&idx| OutMsg::Slot(idx));
            let n = match self.mm.send(self.socket.as_raw_fd_(), &self.out.slots, &mut [], msgs) {
                Ok(0) | Err(_) => 1, // full buffer or a bad destination: drop one, go on
                Ok(n) => {
                    sent += n;
                    n
                }
            };
            for _ in 0..n {
                if let Some(idx) = self.out.queued.pop_front() {
                    self.out.release(idx);
                }
            }
        }
        Ok(sent)
    }

    /// Receives a batch, waiting up to `timeout` for the first datagram; returns how many
    /// (read them with [`datagram`](Self::datagram)).
    pub fn recv_batch(&mut self, timeout: Duration) -> io::Result<usize> {
        let fd = self.socket.as_raw_fd_();
        let mut n = self.recv.recv(fd)?;
        if n == 0 && !timeout.is_zero() {
            let ms = i32::try_from(timeout.as_millis().max(1)).unwrap_or(i32::MAX);
            if sys::poll_readable(fd, ms)? {
                n = self.recv.recv(fd)?;
            }
        }
        self.received = n;
        Ok(n)
    }

    /// Datagram `i` of the last [`recv_batch`](Self::recv_batch) (`None` past the end or
    /// for one longer than [`MAX_DATAGRAM`]).
    pub fn datagram(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        if i >= self.received {
            return None;
        }
        // The slots hold one byte more than MAX_DATAGRAM so that a longer datagram shows.
        match self.recv.get(i) {
            (Some(a), d, false) if d.len() <= MAX_DATAGRAM => Some((a, d)),
            _ => None,
        }
    }
}

trait RawFdExt {
    fn as_raw_fd_(&self) -> i32;
}

impl RawFdExt for UdpSocket {
    fn as_raw_fd_(&self) -> i32 {
        std::os::fd::AsRawFd::as_raw_fd(self)
    }
}
