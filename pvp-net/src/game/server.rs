//! `GameServer`: netcode sessions on `UdpServer` workers, events to the game loop through a
//! lock-free queue, sends from any thread; or the game loop inline on the worker thread
//! ([`GameHandler`]).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pvp_core::MatchId;
use pvp_core::queue::BoundedQueue;
use thiserror::Error;

use crate::endpoint::{DatagramHandler, EndpointError, Outbox, UdpServer, UdpServerConfig, WorkerInfo};
use crate::netcode::{
    ConfigError, DisconnectReason, Key, MAX_PAYLOAD_BYTES, Server, ServerConfig, ServerEvent, SessionLedger,
    SessionUserData, USER_DATA_BYTES,
};
use crate::proto::{DropCounters, DropReason};

/// Payload bytes an event or command holds without allocating; longer ones are boxed.
pub const PAYLOAD_INLINE: usize = 112;

/// A payload moved through the queues: inline up to [`PAYLOAD_INLINE`] bytes (no
/// allocation), boxed above.
#[derive(Clone)]
pub struct Payload {
    len: u16,
    inline: [u8; PAYLOAD_INLINE],
    heap: Option<Box<[u8]>>,
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload").field("len", &self.len).finish()
    }
}

impl Payload {
    /// A copy of `bytes`; `None` above [`MAX_PAYLOAD_BYTES`].
    pub fn new(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_PAYLOAD_BYTES {
            return None;
        }
        let mut p = Payload { len: bytes.len() as u16, inline: [0; PAYLOAD_INLINE], heap: None };
        if bytes.len() <= PAYLOAD_INLINE {
            p.inline[..bytes.len()].copy_from_slice(bytes);
        } else {
            p.heap = Some(bytes.into());
        }
        Some(p)
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.heap {
            Some(h) => h,
            None => &self.inline[..usize::from(self.len)],
        }
    }

    /// Its length.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A session on a [`GameServer`]: the client id from its token and the worker that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId {
    client_id: u64,
    worker: u16,
}

impl SessionId {
    /// The netcode client id (unique among this server's open sessions).
    pub fn client_id(self) -> u64 {
        self.client_id
    }
    /// The worker that owns it.
    pub fn worker(self) -> usize {
        usize::from(self.worker)
    }
}

/// What the game loop receives.
#[derive(Debug, Clone)]
pub enum GameEvent {
    /// A client finished the handshake.
    Connected {
        /// The session.
        session: SessionId,
        /// Its address.
        addr: SocketAddr,
        /// The token's user data, as issued.
        user_data: Box<[u8; USER_DATA_BYTES]>,
        /// The seat, when the user data is in this crate's layout ([`SessionUserData`]).
        seat: Option<SessionUserData>,
    },
    /// An unreliable payload.
    Payload {
        /// The session.
        session: SessionId,
        /// The bytes (without the payload layer's header).
        payload: Payload,
    },
    /// A reliable message, once and in order (layered sessions).
    Message {
        /// The session.
        session: SessionId,
        /// The message.
        bytes: Vec<u8>,
    },
    /// A session ended.
    Disconnected {
        /// The session.
        session: SessionId,
        /// Why.
        reason: DisconnectReason,
    },
}

/// `GameServer` settings. Build with [`GameServerConfig::new`], then adjust fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GameServerConfig {
    /// Socket settings (bind address, workers, driver, CPUs, batch sizes).
    pub udp: UdpServerConfig,
    /// The game's protocol id.
    pub protocol_id: u64,
    /// The private key shared with the token issuer.
    pub private_key: Key,
    /// The address tokens name; `None`: the bound address (wrong for a wildcard bind).
    pub public_address: Option<SocketAddr>,
    /// Sessions held at once, all workers together (each worker gets an equal share);
    /// handshakes past it are answered with a denied packet and counted.
    pub max_sessions: usize,
    /// Handshakes in progress per worker.
    pub max_pending: usize,
    /// Used tokens remembered (shared by the workers).
    pub token_history: usize,
    /// Keep-alive interval for idle sessions.
    pub keepalive_interval: Duration,
    /// Reliable resend interval.
    pub reliable_resend: Duration,
    /// Capacity of the event queue to the game loop; events past it are dropped and counted
    /// ([`GameServerStats::events_dropped`]).
    pub event_queue: usize,
    /// Capacity of each worker's command queue (sends from the game).
    pub command_queue: usize,
    /// Redundant disconnect packets sent when the server closes a session (the reference
    /// implementation sends 10; a server that ends many short sessions a second, whose
    /// clients also learn the end in-game, can send fewer).
    pub disconnect_packets: u8,
}

impl GameServerConfig {
    /// One worker, 1,024 sessions, 1,024 pending handshakes per worker, token history of
    /// 4x the sessions, 100 ms keep-alive and reliable resend, 65,536-deep event queue,
    /// 16,384-deep command queues and 10 disconnect packets.
    pub fn new(bind: SocketAddr, protocol_id: u64, private_key: Key) -> Self {
        GameServerConfig {
            udp: UdpServerConfig::new(bind),
            protocol_id,
            private_key,
            public_address: None,
            max_sessions: 1024,
            max_pending: 1024,
            token_history: 4096,
            keepalive_interval: Duration::from_millis(100),
            reliable_resend: Duration::from_millis(100),
            event_queue: 65_536,
            command_queue: 16_384,
            disconnect_packets: 10,
        }
    }
}

/// Why a `GameServer` could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GameServerError {
    /// The socket layer refused (bad worker count, bind failed, ...).
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// A netcode setting is out of range.
    #[error("netcode config: {0}")]
    Config(#[from] ConfigError),
    /// `max_sessions` is smaller than the number of workers, or a queue capacity is 0 or too
    /// large for pvp-core's queue.
    #[error("game server config: {0}")]
    Bound(&'static str),
}

/// Why a send was not queued. Errors that only the worker can see (session gone, reliable
/// queue full) are counted in [`GameServerStats::sends_failed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum GameSendError {
    /// The worker's command queue is full.
    #[error("command queue full")]
    QueueFull,
    /// Longer than [`MAX_PAYLOAD_BYTES`].
    #[error("payload too large")]
    TooLarge,
    /// The session names no worker of this server.
    #[error("no such worker")]
    NoSuchWorker,
}

#[derive(Debug)]
enum Command {
    Send { client_id: u64, payload: Payload },
    Reliable { client_id: u64, bytes: Box<[u8]> },
    Match { match_id: MatchId, payload: Payload, reliable: bool },
    Disconnect { client_id: u64 },
    Shutdown,
}

#[derive(Debug, Default)]
struct Shared {
    sessions: AtomicUsize,
    connected: AtomicU64,
    disconnected: AtomicU64,
    payloads_in: AtomicU64,
    payloads_out: AtomicU64,
    messages_in: AtomicU64,
    events_dropped: AtomicU64,
    sends_failed: AtomicU64,
    denied_full: AtomicU64,
    commands_dropped: AtomicU64,
    drained: AtomicUsize,
}

/// A snapshot of a `GameServer`'s counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct GameServerStats {
    /// Sessions open now.
    pub sessions: usize,
    /// Sessions opened.
    pub connected: u64,
    /// Sessions closed.
    pub disconnected: u64,
    /// Unreliable payloads delivered to the game.
    pub payloads_in: u64,
    /// Payload packets sent (unreliable sends and layer flushes).
    pub payloads_out: u64,
    /// Reliable messages delivered to the game.
    pub messages_in: u64,
    /// Events dropped because the event queue was full.
    pub events_dropped: u64,
    /// Sends the worker could not make (session gone, reliable queue full, outbox full).
    pub sends_failed: u64,
    /// Handshakes answered with a denied packet (server full).
    pub denied_full: u64,
    /// Incoming datagrams dropped as bad input, all reasons (see [`GameServer::drops`]).
    pub dropped: u64,
}

/// Sends to sessions from any thread; cheap to clone.
#[derive(Debug, Clone)]
pub struct GameSender {
    commands: Arc<[BoundedQueue<Command>]>,
    shared: Arc<Shared>,
}

impl GameSender {
    fn push(&self, worker: usize, c: Command) -> Result<(), GameSendError> {
        let q = self.commands.get(worker).ok_or(GameSendError::NoSuchWorker)?;
        q.push(c).map_err(|_| {
            self.shared.commands_dropped.fetch_add(1, Ordering::Relaxed);
            GameSendError::QueueFull
        })
    }

    /// An unreliable payload to one session.
    pub fn send(&self, session: SessionId, payload: &[u8]) -> Result<(), GameSendError> {
        self.push(session.worker(), Command::send(session, payload)?)
    }

    /// A reliable, ordered message to one session (layered sessions; on a plain one it is
    /// counted in `sends_failed`).
    pub fn send_reliable(&self, session: SessionId, bytes: &[u8]) -> Result<(), GameSendError> {
        self.push(session.worker(), Command::reliable(session, bytes)?)
    }

    /// A payload to every session whose seat names `match_id` (unreliable, or reliable on
    /// layered sessions), on every worker. On [`GameSendError::QueueFull`] the workers before
    /// the full one have it queued already; a retry may reach their sessions twice.
    pub fn send_to_match(
        &self,
        match_id: MatchId,
        payload: &[u8],
        reliable: bool,
    ) -> Result<(), GameSendError> {
        let payload = match_payload(payload, reliable)?;
        for w in 0..self.commands.len() {
            self.push(w, Command::Match { match_id, payload: payload.clone(), reliable })?;
        }
        Ok(())
    }

    /// Closes a session (the client gets redundant disconnect packets).
    pub fn disconnect(&self, session: SessionId) -> Result<(), GameSendError> {
        self.push(session.worker(), Command::Disconnect { client_id: session.client_id })
    }
}

/// A game loop that runs on the worker thread that owns its sessions
/// ([`GameServer::bind_inline`]): events reach it as the worker decodes them and its sends go
/// out in the same pass, with no queue hop and no thread of its own in between.
///
/// This is the shape of a dedicated game server process (one loop per endpoint, as in
/// renet or the netcode reference server), where [`GameServer::bind`] suits a game loop that
/// runs elsewhere and gathers many workers' sessions. A handler sees only the sessions of
/// its own worker; with one worker (the usual choice for a fight server) that is all of
/// them. Handlers must not block: while one runs, its worker receives nothing.
pub trait GameHandler: 'static {
    /// A session event. `now` is when the worker took the datagram that caused it from the
    /// socket (one instant per receive batch), so round trips measured from it leave out
    /// any wait in a game loop.
    fn on_event(&mut self, now: Instant, event: GameEvent, io: &mut GameIo<'_>);

    /// Called after every batch of datagrams and at least every
    /// [`UdpServerConfig::tick`](crate::UdpServerConfig::tick): game ticks, timers.
    fn on_tick(&mut self, now: Instant, io: &mut GameIo<'_>) {
        let _ = (now, io);
    }
}

/// Sends from inside a [`GameHandler`]: queued on the worker (up to
/// [`GameServerConfig::command_queue`] commands) and sent when the handler returns, in order,
/// before anything from [`GameSender`]s.
pub struct GameIo<'a> {
    backlog: &'a mut VecDeque<Command>,
    cap: usize,
    worker: u16,
    shared: &'a Shared,
}

impl std::fmt::Debug for GameIo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GameIo").field("worker", &self.worker).field("queued", &self.backlog.len()).finish()
    }
}

impl GameIo<'_> {
    /// The worker this handler runs on.
    pub fn worker(&self) -> usize {
        usize::from(self.worker)
    }

    /// Commands queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.backlog.len()
    }

    fn push(&mut self, worker: usize, c: Command) -> Result<(), GameSendError> {
        if worker != usize::from(self.worker) {
            return Err(GameSendError::NoSuchWorker);
        }
        if self.backlog.len() >= self.cap {
            self.shared.commands_dropped.fetch_add(1, Ordering::Relaxed);
            return Err(GameSendError::QueueFull);
        }
        self.backlog.push_back(c);
        Ok(())
    }

    /// An unreliable payload to one session of this worker.
    pub fn send(&mut self, session: SessionId, payload: &[u8]) -> Result<(), GameSendError> {
        self.push(session.worker(), Command::send(session, payload)?)
    }

    /// A reliable, ordered message to one session of this worker (layered sessions; on a
    /// plain one it is counted in `sends_failed`).
    pub fn send_reliable(&mut self, session: SessionId, bytes: &[u8]) -> Result<(), GameSendError> {
        self.push(session.worker(), Command::reliable(session, bytes)?)
    }

    /// A payload to every session of this worker whose seat names `match_id`.
    pub fn send_to_match(
        &mut self,
        match_id: MatchId,
        payload: &[u8],
        reliable: bool,
    ) -> Result<(), GameSendError> {
        let payload = match_payload(payload, reliable)?;
        self.push(usize::from(self.worker), Command::Match { match_id, payload, reliable })
    }

    /// Closes a session of this worker (the client gets redundant disconnect packets).
    pub fn disconnect(&mut self, session: SessionId) -> Result<(), GameSendError> {
        self.push(session.worker(), Command::Disconnect { client_id: session.client_id })
    }
}

/// Where a worker's events go: the queue to a game loop elsewhere, or a handler inline.
trait EventSink {
    /// False: the event was dropped (queue full).
    fn deliver(&mut self, now: Instant, e: GameEvent, io: &mut GameIo<'_>) -> bool;
    fn tick(&mut self, now: Instant, io: &mut GameIo<'_>);
}

struct QueueSink(Arc<BoundedQueue<GameEvent>>);

impl EventSink for QueueSink {
    fn deliver(&mut self, _now: Instant, e: GameEvent, _io: &mut GameIo<'_>) -> bool {
        self.0.push(e).is_ok()
    }

    fn tick(&mut self, _now: Instant, _io: &mut GameIo<'_>) {}
}

struct InlineSink<H>(H);

impl<H: GameHandler> EventSink for InlineSink<H> {
    fn deliver(&mut self, now: Instant, e: GameEvent, io: &mut GameIo<'_>) -> bool {
        self.0.on_event(now, e, io);
        true
    }

    fn tick(&mut self, now: Instant, io: &mut GameIo<'_>) {
        self.0.on_tick(now, io);
    }
}

impl Command {
    /// An unreliable payload to `session`, checked against its bound (both send paths).
    fn send(session: SessionId, payload: &[u8]) -> Result<Self, GameSendError> {
        let payload = Payload::new(payload).ok_or(GameSendError::TooLarge)?;
        Ok(Command::Send { client_id: session.client_id, payload })
    }

    /// A reliable message to `session`, checked against its bound (both send paths).
    fn reliable(session: SessionId, bytes: &[u8]) -> Result<Self, GameSendError> {
        if bytes.len() > crate::netcode::layer::MAX_RELIABLE_MESSAGE {
            return Err(GameSendError::TooLarge);
        }
        Ok(Command::Reliable { client_id: session.client_id, bytes: bytes.into() })
    }
}

/// A match broadcast's payload, checked against the bound of its kind.
fn match_payload(payload: &[u8], reliable: bool) -> Result<Payload, GameSendError> {
    let max = if reliable { crate::netcode::layer::MAX_RELIABLE_MESSAGE } else { MAX_PAYLOAD_BYTES };
    if payload.len() > max {
        return Err(GameSendError::TooLarge);
    }
    Payload::new(payload).ok_or(GameSendError::TooLarge)
}

/// The session server a backend embeds: netcode 1.02, any netcode client can join.
/// Dropping it closes every session and stops the workers.
#[derive(Debug)]
pub struct GameServer {
    udp: Option<UdpServer>,
    public_address: SocketAddr,
    events: Arc<BoundedQueue<GameEvent>>,
    sender: GameSender,
    drops: Arc<DropCounters>,
}

struct Worker<S> {
    index: u16,
    server: Server,
    sink: S,
    /// Commands from an inline handler, sent before the shared queue's.
    backlog: VecDeque<Command>,
    backlog_cap: usize,
    commands: Arc<[BoundedQueue<Command>]>,
    shared: Arc<Shared>,
    matches: HashMap<MatchId, Vec<u64>>,
    seats: HashMap<u64, MatchId>,
    local: LocalCounts,
    unreported: LocalCounts,
    next_publish: Instant,
    denied_reported: u64,
    draining: bool,
}

#[derive(Default)]
struct LocalCounts {
    payloads_in: u64,
    payloads_out: u64,
    messages_in: u64,
}

impl<S: EventSink> Worker<S> {
    fn session(&self, client_id: u64) -> SessionId {
        SessionId { client_id, worker: self.index }
    }

    fn io(&mut self) -> (&mut S, GameIo<'_>) {
        let io = GameIo {
            backlog: &mut self.backlog,
            cap: self.backlog_cap,
            worker: self.index,
            shared: &self.shared,
        };
        (&mut self.sink, io)
    }

    fn emit(&mut self, now: Instant, e: GameEvent) {
        let (sink, mut io) = self.io();
        if !sink.deliver(now, e, &mut io) {
            self.shared.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn pump(&mut self, now: Instant, out: &mut Outbox) {
        while let Some(e) = self.server.poll_event() {
            match e {
                ServerEvent::Connected { client_id, addr, user_data, .. } => {
                    let seat = SessionUserData::decode(&user_data);
                    if let Some(s) = &seat {
                        self.matches.entry(s.match_id).or_default().push(client_id);
                        self.seats.insert(client_id, s.match_id);
                    }
                    self.shared.sessions.fetch_add(1, Ordering::Relaxed);
                    self.shared.connected.fetch_add(1, Ordering::Relaxed);
                    let session = self.session(client_id);
                    self.emit(now, GameEvent::Connected { session, addr, user_data, seat });
                }
                ServerEvent::Disconnected { client_id, reason } => {
                    if let Some(m) = self.seats.remove(&client_id) {
                        if let Some(v) = self.matches.get_mut(&m) {
                            v.retain(|&c| c != client_id);
                            if v.is_empty() {
                                self.matches.remove(&m);
                            }
                        }
                    }
                    self.shared.sessions.fetch_sub(1, Ordering::Relaxed);
                    self.shared.disconnected.fetch_add(1, Ordering::Relaxed);
                    let session = self.session(client_id);
                    self.emit(now, GameEvent::Disconnected { session, reason });
                }
                ServerEvent::Message { client_id, bytes } => {
                    self.local.messages_in += 1;
                    let session = self.session(client_id);
                    self.emit(now, GameEvent::Message { session, bytes });
                }
            }
        }
        self.flush(now, out);
    }

    fn flush(&mut self, now: Instant, out: &mut Outbox) {
        while out.free_slots() > 0 {
            let server = &mut self.server;
            match out.send_with_dest(|buf| server.poll_transmit(now, buf).map(|t| (t.destination, t.len))) {
                Some(_) => {}
                None => break,
            }
        }
    }

    fn send_one(&mut self, now: Instant, client_id: u64, payload: &[u8], out: &mut Outbox) {
        let server = &mut self.server;
        // One session lookup: the send names the destination (`None`: no session, a refused
        // payload, or no free outbox slot).
        let sent = out.send_with_dest(|buf| {
            server.send(now, client_id, payload, buf).ok().map(|t| (t.destination, t.len))
        });
        if sent.is_some() {
            self.local.payloads_out += 1;
        } else {
            self.shared.sends_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn reliable_one(&mut self, client_id: u64, bytes: &[u8]) {
        if self.server.send_reliable(client_id, bytes).is_err() {
            self.shared.sends_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn run_commands(&mut self, now: Instant, out: &mut Outbox) {
        let commands = self.commands.clone();
        let q = &commands[usize::from(self.index)];
        // Leave slots for the control packets the timers make.
        while out.free_slots() > out.capacity() / 4 {
            let Some(c) = self.backlog.pop_front().or_else(|| q.pop()) else { break };
            match c {
                Command::Send { client_id, payload } => {
                    self.send_one(now, client_id, payload.as_slice(), out)
                }
                Command::Reliable { client_id, bytes } => self.reliable_one(client_id, &bytes),
                Command::Match { match_id, payload, reliable } => {
                    // Taken out and put back (sends change no membership), so a broadcast copies
                    // no member list.
                    let Some(members) = self.matches.remove(&match_id) else { continue };
                    for &client_id in &members {
                        if reliable {
                            self.reliable_one(client_id, payload.as_slice());
                        } else {
                            self.send_one(now, client_id, payload.as_slice(), out);
                        }
                    }
                    self.matches.insert(match_id, members);
                }
                Command::Disconnect { client_id } => {
                    self.server.disconnect(client_id);
                }
                Command::Shutdown => {
                    self.server.disconnect_all();
                    self.draining = true;
                }
            }
            self.pump(now, out);
        }
    }

    fn publish(&mut self, now: Instant) {
        let l = std::mem::take(&mut self.local);
        self.shared.payloads_in.fetch_add(l.payloads_in, Ordering::Relaxed);
        self.shared.payloads_out.fetch_add(l.payloads_out, Ordering::Relaxed);
        self.shared.messages_in.fetch_add(l.messages_in, Ordering::Relaxed);
        let denied = self.server.stats().denied_full;
        if denied > self.denied_reported {
            self.shared.denied_full.fetch_add(denied - self.denied_reported, Ordering::Relaxed);
            self.denied_reported = denied;
        }
        // The `metrics` facade costs a recorder lookup per call: counts go to it in one step
        // every 100 ms, not per packet.
        self.unreported.payloads_in += l.payloads_in;
        self.unreported.payloads_out += l.payloads_out;
        self.unreported.messages_in += l.messages_in;
        if now >= self.next_publish {
            self.next_publish = now + Duration::from_millis(100);
            let u = std::mem::take(&mut self.unreported);
            metrics::counter!("pvp_net_game_payloads_in_total").increment(u.payloads_in);
            metrics::counter!("pvp_net_game_payloads_out_total").increment(u.payloads_out);
            metrics::counter!("pvp_net_game_messages_in_total").increment(u.messages_in);
            metrics::gauge!("pvp_net_game_sessions").set(self.shared.sessions.load(Ordering::Relaxed) as f64);
        }
    }
}

impl<S: EventSink> DatagramHandler for Worker<S> {
    fn on_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8], out: &mut Outbox) {
        // r.payload <= MAX_PAYLOAD_BYTES, so `new` succeeds.
        let got = self.server.handle_datagram(now, from, data).and_then(|r| {
            Some((SessionId { client_id: r.client_id, worker: self.index }, Payload::new(r.payload)?))
        });
        if let Some((session, payload)) = got {
            self.local.payloads_in += 1;
            self.emit(now, GameEvent::Payload { session, payload });
        }
        self.pump(now, out);
        if !self.backlog.is_empty() {
            // An inline handler answered: out in this pass.
            self.run_commands(now, out);
        }
    }

    fn on_tick(&mut self, now: Instant, out: &mut Outbox) {
        self.run_commands(now, out);
        self.server.handle_timeout(now);
        self.pump(now, out);
        {
            let (sink, mut io) = self.io();
            sink.tick(now, &mut io);
        }
        if !self.backlog.is_empty() {
            // What an inline handler's tick queued: out in this pass.
            self.run_commands(now, out);
        }
        // Drained once every disconnect packet left the server and the kernel took it (a
        // slot is free again only after its send completed).
        if self.draining && !self.server.has_queued_transmits() && out.free_slots() == out.capacity() {
            self.draining = false;
            self.shared.drained.fetch_add(1, Ordering::Release);
        }
        self.publish(now);
    }
}

impl GameServer {
    /// Binds and starts the workers; the game loop takes events with
    /// [`poll_events`](Self::poll_events) and sends with a [`GameSender`].
    pub fn bind(config: GameServerConfig) -> Result<Self, GameServerError> {
        Self::bind_sink(config, |_, events| QueueSink(events.clone()))
    }

    /// Binds and starts the workers, each running a [`GameHandler`] made by `factory` (called
    /// once per worker with its index, on that worker's thread). Events go to the handler,
    /// not to [`poll_events`](Self::poll_events); [`sender`](Self::sender) still works from
    /// other threads.
    ///
    /// ```
    /// use std::time::Instant;
    /// use pvp_net::game::{GameEvent, GameHandler, GameIo, GameServer, GameServerConfig};
    /// use pvp_net::netcode::Key;
    ///
    /// /// Echoes every payload back to its sender.
    /// struct Echo;
    /// impl GameHandler for Echo {
    ///     fn on_event(&mut self, _now: Instant, e: GameEvent, io: &mut GameIo<'_>) {
    ///         if let GameEvent::Payload { session, payload } = e {
    ///             let _ = io.send(session, payload.as_slice());
    ///         }
    ///     }
    /// }
    /// let config = GameServerConfig::new("127.0.0.1:0".parse().unwrap(), 0x5056_5031, Key::random());
    /// let server = GameServer::bind_inline(config, |_worker| Echo).unwrap();
    /// assert_ne!(server.local_addr().port(), 0);
    /// server.shutdown().unwrap();
    /// ```
    pub fn bind_inline<H, F>(config: GameServerConfig, factory: F) -> Result<Self, GameServerError>
    where
        H: GameHandler,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        Self::bind_sink(config, move |worker, _| InlineSink(factory(worker)))
    }

    fn bind_sink<S, F>(config: GameServerConfig, make_sink: F) -> Result<Self, GameServerError>
    where
        S: EventSink + 'static,
        F: Fn(usize, &Arc<BoundedQueue<GameEvent>>) -> S + Send + Sync + 'static,
    {
        let workers = config.udp.workers.max(1);
        if config.max_sessions < workers {
            return Err(GameServerError::Bound("max_sessions must be at least the number of workers"));
        }
        fn queue<T>(n: usize) -> Result<BoundedQueue<T>, GameServerError> {
            BoundedQueue::new(n).map_err(|_| GameServerError::Bound("queue capacity out of range"))
        }
        let events = Arc::new(queue(config.event_queue)?);
        let commands: Arc<[BoundedQueue<Command>]> =
            (0..workers).map(|_| queue(config.command_queue)).collect::<Result<Vec<_>, _>>()?.into();
        let shared = Arc::new(Shared::default());
        let drops = Arc::new(DropCounters::default());
        let ledger = SessionLedger::new(config.token_history);
        let per_worker = config.max_sessions / workers;
        // Validate the netcode settings here, where an error can be returned.
        let template = {
            let mut c = ServerConfig::new(config.protocol_id, config.private_key.clone(), config.udp.bind);
            c.max_clients = per_worker;
            c.max_pending = config.max_pending;
            c.token_history = config.token_history;
            c.keepalive_interval = config.keepalive_interval;
            c.reliable_resend = config.reliable_resend;
            c.disconnect_packets = config.disconnect_packets;
            c.ledger = Some(ledger);
            c.max_clients_reported = u32::try_from(config.max_sessions).unwrap_or(u32::MAX);
            c
        };
        Server::new(template.clone(), Instant::now(), Duration::ZERO)?;
        let public = config.public_address;
        let (ev, cmd, sh, dr) = (events.clone(), commands.clone(), shared.clone(), drops.clone());
        let backlog_cap = config.command_queue;
        let udp = UdpServer::bind_with(config.udp.clone(), move |info: WorkerInfo| {
            let mut c = template.clone();
            c.public_addresses = vec![public.unwrap_or(info.local_addr)];
            c.client_index_base = u32::try_from(info.index * per_worker).unwrap_or(u32::MAX);
            let now = Instant::now();
            let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            // Validated above with the same bounds; only the addresses and index base differ.
            let mut server = Server::new_clamped(c, now, unix);
            server.set_drop_counters(dr.clone());
            Worker {
                // workers <= u16::MAX (checked by UdpServer).
                index: info.index as u16,
                server,
                sink: make_sink(info.index, &ev),
                backlog: VecDeque::new(),
                backlog_cap,
                commands: cmd.clone(),
                shared: sh.clone(),
                matches: HashMap::new(),
                seats: HashMap::new(),
                local: LocalCounts::default(),
                unreported: LocalCounts::default(),
                next_publish: now,
                denied_reported: 0,
                draining: false,
            }
        })?;
        let public_address = public.unwrap_or(udp.local_addr());
        Ok(GameServer {
            udp: Some(udp),
            public_address,
            events,
            sender: GameSender { commands, shared },
            drops,
        })
    }

    /// The address tokens must name.
    pub fn public_address(&self) -> SocketAddr {
        self.public_address
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.udp.as_ref().map_or(self.public_address, |u| u.local_addr())
    }

    /// The driver the workers run (io_uring or epoll).
    pub fn driver(&self) -> crate::DriverKind {
        self.udp.as_ref().map_or(crate::DriverKind::Epoll, |u| u.driver())
    }

    /// Moves up to `max` events into `out` (one synchronisation per run); returns how many.
    pub fn poll_events(&self, out: &mut Vec<GameEvent>, max: usize) -> usize {
        self.events.pop_batch(out, max)
    }

    /// A handle for sending from any thread.
    pub fn sender(&self) -> GameSender {
        self.sender.clone()
    }

    /// Incoming datagrams dropped as bad input, by reason (all workers).
    pub fn drops(&self) -> Vec<(DropReason, u64)> {
        self.drops.snapshot()
    }

    /// The socket layer's counters.
    pub fn endpoint_stats(&self) -> crate::endpoint::EndpointStats {
        self.udp.as_ref().map(|u| u.stats()).unwrap_or_default()
    }

    /// Counters, all workers together.
    pub fn stats(&self) -> GameServerStats {
        let s = &self.sender.shared;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        GameServerStats {
            sessions: s.sessions.load(Ordering::Relaxed),
            connected: l(&s.connected),
            disconnected: l(&s.disconnected),
            payloads_in: l(&s.payloads_in),
            payloads_out: l(&s.payloads_out),
            messages_in: l(&s.messages_in),
            events_dropped: l(&s.events_dropped),
            sends_failed: l(&s.sends_failed),
            denied_full: l(&s.denied_full),
            dropped: self.drops.total(),
        }
    }

    fn stop(&mut self) -> std::io::Result<()> {
        let Some(udp) = self.udp.take() else { return Ok(()) };
        let workers = self.sender.commands.len();
        let mut asked = 0;
        for w in 0..workers {
            if self.sender.push(w, Command::Shutdown).is_ok() {
                asked += 1;
            }
        }
        // Each worker sends its disconnect packets, then reports; bounded so a wedged worker
        // cannot hang shutdown.
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.sender.shared.drained.load(Ordering::Acquire) < asked && Instant::now() < deadline {
            std::thread::yield_now();
        }
        udp.shutdown()
    }

    /// Closes every session (each client gets disconnect packets) and stops the workers.
    pub fn shutdown(mut self) -> std::io::Result<()> {
        self.stop()
    }

    /// Stops the workers at once and closes the socket without a word to the sessions: what
    /// a crashed server process looks like from outside (clients time out). For fault
    /// injection and tests of what notices a dead server; [`shutdown`](Self::shutdown) is
    /// the orderly way out.
    pub fn abort(mut self) -> std::io::Result<()> {
        match self.udp.take() {
            Some(udp) => udp.shutdown(),
            None => Ok(()),
        }
    }
}

impl Drop for GameServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
