//! A simulated network with virtual time that drives [`Client`]s and a [`Server`] in one
//! thread, repeatably: the same seed gives the same run.
//!
//! ```
//! use std::time::Duration;
//! use pvp_net::sim::{Harness, LinkConditions};
//!
//! let mut h = Harness::new(42, LinkConditions::lossy(Duration::from_millis(20), 0.1));
//! let c = h.add_client(7);
//! assert!(h.run_until(Duration::from_secs(5), |h| h.client(c).is_connected()));
//! // Unreliable: send until one copy gets through the 10% loss.
//! let got = (0..50).any(|_| {
//!     h.client_send(c, b"hello");
//!     h.advance(Duration::from_millis(50));
//!     !h.server_payloads.is_empty()
//! });
//! assert!(got);
//! assert_eq!(h.server_payloads[0].1, b"hello");
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use pvp_core::{MatchId, PlayerId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::proto::{
    Client, ClientConfig, ClientEvent, ConnectionId, MAX_PACKET_LEN, Server, ServerConfig, ServerEvent,
    TokenClaims, TokenKey,
};

/// How the simulated network treats each datagram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConditions {
    /// One-way delay.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` (reorders datagrams).
    pub jitter: Duration,
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
}

impl LinkConditions {
    /// A perfect link with this latency.
    pub fn clean(latency: Duration) -> Self {
        LinkConditions { latency, jitter: Duration::ZERO, loss: 0.0, duplicate: 0.0 }
    }

    /// Latency, `loss`, jitter of half the latency, and 5% duplication.
    pub fn lossy(latency: Duration, loss: f64) -> Self {
        LinkConditions { latency, jitter: latency / 2, loss, duplicate: 0.05 }
    }
}

/// A datagram on the simulated wire.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Datagram {
    /// Sender.
    pub from: SocketAddr,
    /// Receiver.
    pub to: SocketAddr,
    /// Bytes.
    pub bytes: Vec<u8>,
}

/// Datagrams in flight, delivered in order of arrival time.
#[derive(Debug)]
pub struct SimNetwork {
    rng: StdRng,
    conditions: LinkConditions,
    in_flight: BinaryHeap<Reverse<(Instant, u64, Datagram)>>,
    order: u64,
    /// Datagrams sent into the network.
    pub sent: u64,
    /// Datagrams the network lost.
    pub lost: u64,
    /// Extra copies the network made.
    pub duplicated: u64,
}

impl SimNetwork {
    /// A network with a seeded generator.
    pub fn new(seed: u64, conditions: LinkConditions) -> Self {
        SimNetwork {
            rng: StdRng::seed_from_u64(seed),
            conditions,
            in_flight: BinaryHeap::new(),
            order: 0,
            sent: 0,
            lost: 0,
            duplicated: 0,
        }
    }

    /// Changes the conditions for datagrams sent from now on.
    pub fn set_conditions(&mut self, conditions: LinkConditions) {
        self.conditions = conditions;
    }

    /// Sends a datagram at `now`.
    pub fn send(&mut self, now: Instant, d: Datagram) {
        self.sent += 1;
        if self.rng.random_bool(probability(self.conditions.loss)) {
            self.lost += 1;
            return;
        }
        let copies = if self.rng.random_bool(probability(self.conditions.duplicate)) {
            self.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter_ns = u64::try_from(self.conditions.jitter.as_nanos()).unwrap_or(u64::MAX);
            let extra = Duration::from_nanos(self.rng.random_range(0..=jitter_ns));
            self.order += 1;
            let at = crate::proto::later(crate::proto::later(now, self.conditions.latency), extra);
            self.in_flight.push(Reverse((at, self.order, d.clone())));
        }
    }

    /// When the next datagram arrives.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse((t, _, _))| *t)
    }

    /// The next datagram due at or before `now`, with its arrival time.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, Datagram)> {
        if self.next_arrival()? <= now { self.in_flight.pop().map(|Reverse((t, _, d))| (t, d)) } else { None }
    }
}

/// `p` clamped to `0..=1`; NaN counts as 0 (the generator panics on anything else).
fn probability(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}

/// One server and many clients on a [`SimNetwork`], with virtual time.
#[derive(Debug)]
pub struct Harness {
    /// The network.
    pub net: SimNetwork,
    /// The server state machine.
    pub server: Server,
    /// The server's address.
    pub server_addr: SocketAddr,
    /// The token key the "matchmaker" signs with.
    pub key: TokenKey,
    /// Virtual now.
    pub now: Instant,
    start: Instant,
    unix_start: Duration,
    clients: Vec<(SocketAddr, Client)>,
    /// Server events, in order.
    pub server_events: Vec<ServerEvent>,
    /// Unreliable payloads the server received.
    pub server_payloads: Vec<(ConnectionId, Vec<u8>)>,
    /// Per client: events, in order.
    pub client_events: Vec<Vec<ClientEvent>>,
    /// Per client: unreliable payloads received.
    pub client_payloads: Vec<Vec<Vec<u8>>>,
    next_token: u64,
    /// Simulation step: the most virtual time between two timer checks (zero counts as
    /// 1 ms).
    pub step: Duration,
    buf: Box<[u8; MAX_PACKET_LEN]>,
}

impl Harness {
    /// A harness with default server settings.
    pub fn new(seed: u64, conditions: LinkConditions) -> Self {
        let key = TokenKey::from_bytes([0x5a; 32]);
        let server_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 7000);
        let mut cfg = ServerConfig::new(key.clone(), server_addr);
        cfg.secret = [seed as u8; 32];
        Self::with_server_config(seed, conditions, cfg)
    }

    /// A harness with the given server settings (its key signs the tokens).
    ///
    /// # Panics
    ///
    /// If the server refuses `cfg` (see [`Server::new`]); a test harness has no caller to
    /// hand the error to.
    pub fn with_server_config(seed: u64, conditions: LinkConditions, cfg: ServerConfig) -> Self {
        let now = Instant::now();
        let unix_start = Duration::from_secs(1_700_000_000);
        let key = cfg.key.clone();
        let server_addr = cfg.server_addr;
        let server = match Server::new(cfg, now, unix_start) {
            Ok(s) => s,
            Err(e) => panic!("harness given an invalid server config: {e}"),
        };
        Harness {
            net: SimNetwork::new(seed, conditions),
            server,
            server_addr,
            key,
            now,
            start: now,
            unix_start,
            clients: Vec::new(),
            server_events: Vec::new(),
            server_payloads: Vec::new(),
            client_events: Vec::new(),
            client_payloads: Vec::new(),
            next_token: 1,
            step: Duration::from_millis(5),
            buf: Box::new([0; MAX_PACKET_LEN]),
        }
    }

    /// Virtual Unix time now, in milliseconds.
    pub fn unix_ms(&self) -> u64 {
        let d = self.unix_start + (self.now - self.start);
        d.as_millis() as u64
    }

    /// Token claims for `player`, valid 60 s, for this server.
    pub fn claims(&mut self, player: u64) -> TokenClaims {
        self.next_token += 1;
        TokenClaims {
            token_id: self.next_token,
            match_id: MatchId::new(1),
            player_id: PlayerId::new(player),
            expires_at_unix_ms: self.unix_ms() + 60_000,
            server_addr: self.server_addr,
        }
    }

    /// Adds a client for `player` with a fresh valid token; returns its index.
    pub fn add_client(&mut self, player: u64) -> usize {
        let claims = self.claims(player);
        self.add_client_with(ClientConfig::default(), &claims)
    }

    /// Adds a client whose token has these claims.
    ///
    /// # Panics
    ///
    /// If the claims' server address cannot be encoded (never for `SocketAddr`s).
    pub fn add_client_with(&mut self, cfg: ClientConfig, claims: &TokenClaims) -> usize {
        let token = self.key.issue(claims);
        let i = self.clients.len();
        let addr = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8)),
            10_000 + (i % 50_000) as u16,
        );
        let client = match Client::new(cfg, token, self.now) {
            Ok(c) => c,
            Err(e) => panic!("harness token unreadable: {e}"),
        };
        self.clients.push((addr, client));
        self.client_events.push(Vec::new());
        self.client_payloads.push(Vec::new());
        i
    }

    /// A client. Panics if `i` is not an index [`add_client`](Self::add_client) returned.
    pub fn client(&self, i: usize) -> &Client {
        &self.clients[i].1
    }

    /// A client, mutably. Panics if `i` is not a client index.
    pub fn client_mut(&mut self, i: usize) -> &mut Client {
        &mut self.clients[i].1
    }

    /// A client's address. Panics if `i` is not a client index.
    pub fn client_addr(&self, i: usize) -> SocketAddr {
        self.clients[i].0
    }

    /// Number of clients.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Injects raw bytes as if `from` sent them to the server now.
    pub fn inject_to_server(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.net.send(self.now, Datagram { from, to: self.server_addr, bytes: bytes.to_vec() });
    }

    /// Client `i` sends an unreliable payload now (false if not connected or the payload is
    /// refused). Panics if `i` is not a client index.
    pub fn client_send(&mut self, i: usize, payload: &[u8]) -> bool {
        let (addr, c) = &mut self.clients[i];
        match c.send(self.now, payload, &mut self.buf[..]) {
            Ok(t) => {
                let d = Datagram { from: *addr, to: t.destination, bytes: self.buf[..t.len].to_vec() };
                self.net.send(self.now, d);
                true
            }
            Err(_) => false,
        }
    }

    /// The server sends an unreliable payload to a session now (false if no such session).
    pub fn server_send(&mut self, conn: ConnectionId, payload: &[u8]) -> bool {
        match self.server.send(self.now, conn, payload, &mut self.buf[..]) {
            Ok(t) => {
                let d =
                    Datagram { from: self.server_addr, to: t.destination, bytes: self.buf[..t.len].to_vec() };
                self.net.send(self.now, d);
                true
            }
            Err(_) => false,
        }
    }

    fn flush(&mut self) {
        while let Some(t) = self.server.poll_transmit(self.now, &mut self.buf[..]) {
            let d = Datagram { from: self.server_addr, to: t.destination, bytes: self.buf[..t.len].to_vec() };
            self.net.send(self.now, d);
        }
        while let Some(e) = self.server.poll_event() {
            self.server_events.push(e);
        }
        for (i, (addr, c)) in self.clients.iter_mut().enumerate() {
            while let Some(t) = c.poll_transmit(self.now, &mut self.buf[..]) {
                let d = Datagram { from: *addr, to: t.destination, bytes: self.buf[..t.len].to_vec() };
                self.net.send(self.now, d);
            }
            while let Some(e) = c.poll_event() {
                self.client_events[i].push(e);
            }
        }
    }

    fn deliver(&mut self, d: Datagram) {
        if d.to == self.server_addr {
            if let Some(r) = self.server.handle_datagram(self.now, d.from, &d.bytes) {
                self.server_payloads.push((r.connection, r.payload.to_vec()));
            }
        } else if let Some(i) = self.clients.iter().position(|(a, _)| *a == d.to) {
            let (_, c) = &mut self.clients[i];
            if let Some(p) = c.handle_datagram(self.now, d.from, &d.bytes) {
                self.client_payloads[i].push(p.to_vec());
            }
        }
    }

    fn effective_step(&self) -> Duration {
        if self.step.is_zero() { Duration::from_millis(1) } else { self.step }
    }

    /// Advances virtual time by `dt`, delivering datagrams in arrival order and running every
    /// endpoint's timers at least every [`step`](Self::step).
    pub fn advance(&mut self, dt: Duration) {
        let target = self.now + dt;
        loop {
            self.flush();
            let step_end = (self.now + self.effective_step()).min(target);
            while let Some((t, d)) = self.net.pop_due(step_end) {
                self.now = self.now.max(t);
                self.deliver(d);
                self.flush();
            }
            self.now = step_end;
            self.server.handle_timeout(self.now);
            for (_, c) in self.clients.iter_mut() {
                c.handle_timeout(self.now);
            }
            self.flush();
            if self.now >= target {
                break;
            }
        }
    }

    /// Advances in steps until `done` holds or `limit` of virtual time passed; returns
    /// whether `done` held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            self.advance(self.effective_step());
        }
        done(self)
    }
}
