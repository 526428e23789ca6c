//! The matchmaking front over HTTP/JSON, shaped like Open Match's frontend: create a ticket,
//! watch it for its assignment, cancel it. Tools, tests and game clients we did not write use
//! it; the built-in bots still hand their tickets to the control plane in-process (the lobby
//! session that would carry them over the network at scale is not built yet).
//!
//! | call | body / answer |
//! |---|---|
//! | `POST /v1/tickets` | `{"player": 1099511627777, "region": "kr", "latency_ms": {"kr": 8, "jp": 35}}` → `201 {"id": "1099511627777", "status": "queued"}` |
//! | `GET /v1/tickets/{id}?wait_ms=N` | waits up to N ms (at most 10 s) while queued → `200 {"id", "status", "assignment"?}` |
//! | `DELETE /v1/tickets/{id}` | `200 {"id", "status": "cancelled"}` |
//!
//! `status` is `queued`, `assigned`, `failed` (refused: banned, draining, the matchmaker's
//! bounds), `void` (the assigned match was dropped: create a new ticket) or `cancelled`. An
//! assignment names the match, its region, the game server's address and the netcode 1.02
//! connect token (2,048 bytes, hex) that server admits; the player connects with any netcode
//! client and plays the [`arena`](crate::arena) game. Player ids from
//! [`EXTERNAL_PLAYERS`] up belong to outside clients (lower ones are the bots').
//!
//! Bad requests get a 4xx answer with `{"error": "..."}` (a [`FrontError`]) and are counted
//! as dropped input, never as service errors.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pvp_core::ids::{MatchId, PlayerId};
use serde::{Deserialize, Serialize};

use crate::session::{BotCommand, ControlEvent, Shared, TicketAsk, lock};

/// Player ids at or above this are outside clients of the front.
pub const EXTERNAL_PLAYERS: u64 = 1 << 40;
/// Largest request body read.
const MAX_BODY: usize = 4_096;
/// Longest watch.
const MAX_WAIT: Duration = Duration::from_secs(10);
/// Request threads (a watch holds one while it waits).
const THREADS: usize = 4;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrontError {
    /// The body is not the expected JSON.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The body is longer than 4 KiB.
    #[error("request body too large")]
    TooLarge,
    /// The player id belongs to the built-in bots.
    #[error("player ids below {EXTERNAL_PLAYERS} are reserved")]
    ReservedPlayer,
    /// A region the session does not run.
    #[error("unknown region {0}")]
    UnknownRegion(String),
    /// A latency above 10 s.
    #[error("latency out of range")]
    BadLatency,
    /// The player already holds a live ticket.
    #[error("player already has a ticket")]
    Duplicate,
    /// No such ticket.
    #[error("no such ticket")]
    NotFound,
    /// No such call.
    #[error("no such call")]
    NoRoute,
}

impl FrontError {
    fn status(&self) -> u16 {
        match self {
            FrontError::Malformed(_) | FrontError::ReservedPlayer | FrontError::UnknownRegion(_) => 400,
            FrontError::BadLatency => 400,
            FrontError::TooLarge => 413,
            FrontError::Duplicate => 409,
            FrontError::NotFound | FrontError::NoRoute => 404,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTicket {
    player: u64,
    region: String,
    #[serde(default)]
    latency_ms: BTreeMap<String, u32>,
}

/// Where a ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Queued,
    Assigned,
    Failed,
    Void,
    Cancelled,
}

/// A seat, as the front hands it out.
#[derive(Debug, Clone, Serialize)]
struct Assignment {
    match_id: u64,
    region: String,
    server: SocketAddr,
    /// The netcode connect token, hex.
    connect_token: String,
}

#[derive(Debug, Clone, Serialize)]
struct TicketView {
    id: String,
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    assignment: Option<Assignment>,
}

#[derive(Debug)]
struct Ticket {
    status: Status,
    assignment: Option<(MatchId, Assignment)>,
}

/// The front's ticket book, shared by its request threads and the control plane.
#[derive(Debug, Default)]
pub(crate) struct Frontend {
    tickets: Mutex<HashMap<PlayerId, Ticket>>,
    changed: Condvar,
    /// Requests refused as bad input.
    pub(crate) dropped: AtomicU64,
    /// Tickets created.
    pub(crate) created: AtomicU64,
}

/// Whether `player` is an outside client of the front.
pub(crate) fn is_external(player: PlayerId) -> bool {
    player.get() >= EXTERNAL_PLAYERS
}

fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(char::from(D[usize::from(x >> 4)]));
        s.push(char::from(D[usize::from(x & 15)]));
    }
    s
}

impl Frontend {
    /// What the control plane would tell a bot, told to the ticket instead.
    pub(crate) fn deliver(&self, regions: &[String], cmd: BotCommand) {
        let mut t = lock(&self.tickets);
        match cmd {
            BotCommand::Assigned { player, match_id, region, server, token } => {
                if let Some(k) = t.get_mut(&player).filter(|k| k.status == Status::Queued) {
                    k.status = Status::Assigned;
                    let a = Assignment {
                        match_id: match_id.get(),
                        region: regions.get(region).cloned().unwrap_or_default(),
                        server,
                        connect_token: hex(&token),
                    };
                    k.assignment = Some((match_id, a));
                }
            }
            BotCommand::TicketFailed { player } => {
                if let Some(k) = t.get_mut(&player).filter(|k| k.status == Status::Queued) {
                    k.status = Status::Failed;
                }
            }
            BotCommand::AssignmentVoid { player, match_id } => {
                if let Some(k) = t.get_mut(&player) {
                    if k.assignment.as_ref().is_some_and(|a| a.0 == match_id) {
                        k.status = Status::Void;
                    }
                }
            }
        }
        drop(t);
        self.changed.notify_all();
    }

    fn view(&self, player: PlayerId) -> Option<TicketView> {
        let t = lock(&self.tickets);
        t.get(&player).map(|k| TicketView {
            id: player.get().to_string(),
            status: k.status,
            assignment: k.assignment.as_ref().map(|a| a.1.clone()).filter(|_| k.status == Status::Assigned),
        })
    }
}

/// The HTTP server of the front.
pub(crate) struct FrontServer {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for FrontServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl FrontServer {
    /// Binds `addr` and serves the front of `sh` on a few threads.
    pub(crate) fn bind(addr: SocketAddr, sh: Arc<Shared>) -> std::io::Result<Self> {
        let server =
            Arc::new(tiny_http::Server::http(addr).map_err(|e| std::io::Error::other(e.to_string()))?);
        let addr = server.server_addr().to_ip().ok_or_else(|| std::io::Error::other("not an IP listener"))?;
        let mut threads = Vec::with_capacity(THREADS);
        for i in 0..THREADS {
            let (server, sh) = (server.clone(), sh.clone());
            threads.push(
                std::thread::Builder::new().name(format!("front-{i}")).spawn(move || serve(&server, &sh))?,
            );
        }
        Ok(FrontServer { addr, server, threads })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for FrontServer {
    fn drop(&mut self) {
        for _ in 0..self.threads.len() {
            self.server.unblock();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve(server: &tiny_http::Server, sh: &Shared) {
    while let Ok(mut req) = server.recv() {
        let (status, body) = match handle(sh, &mut req) {
            Ok((code, v)) => (code, serde_json::to_string(&v).unwrap_or_default()),
            Err(e) => {
                sh.front.dropped.fetch_add(1, Ordering::Relaxed);
                (e.status(), serde_json::json!({ "error": e.to_string() }).to_string())
            }
        };
        let mut r = tiny_http::Response::from_string(body).with_status_code(status);
        if let Ok(h) = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]) {
            r.add_header(h);
        }
        let _ = req.respond(r);
    }
}

fn ticket_id(path: &str) -> Result<PlayerId, FrontError> {
    let id = path.strip_prefix("/v1/tickets/").ok_or(FrontError::NoRoute)?;
    id.parse::<u64>().map(PlayerId::new).map_err(|_| FrontError::NotFound)
}

fn handle(sh: &Shared, req: &mut tiny_http::Request) -> Result<(u16, TicketView), FrontError> {
    let url = req.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    let front = &sh.front;
    match (req.method(), path) {
        (tiny_http::Method::Post, "/v1/tickets") => {
            let mut body = Vec::new();
            let mut r = req.as_reader().take(MAX_BODY as u64 + 1);
            r.read_to_end(&mut body).map_err(|e| FrontError::Malformed(e.to_string()))?;
            if body.len() > MAX_BODY {
                return Err(FrontError::TooLarge);
            }
            let c: CreateTicket =
                serde_json::from_slice(&body).map_err(|e| FrontError::Malformed(e.to_string()))?;
            let player = PlayerId::new(c.player);
            if !is_external(player) {
                return Err(FrontError::ReservedPlayer);
            }
            let region_of = |name: &str| {
                sh.config
                    .regions
                    .iter()
                    .position(|r| r.id.to_string() == name)
                    .ok_or(FrontError::UnknownRegion(name.into()))
            };
            let home = region_of(&c.region)?;
            let mut rtt = Vec::with_capacity(c.latency_ms.len());
            for (name, ms) in &c.latency_ms {
                let i = region_of(name)?;
                if *ms > 10_000 {
                    return Err(FrontError::BadLatency);
                }
                rtt.push((sh.config.regions[i].id, Duration::from_millis(u64::from(*ms))));
            }
            {
                let mut t = lock(&front.tickets);
                if t.get(&player).is_some_and(|k| matches!(k.status, Status::Queued | Status::Assigned)) {
                    return Err(FrontError::Duplicate);
                }
                t.insert(player, Ticket { status: Status::Queued, assignment: None });
            }
            front.created.fetch_add(1, Ordering::Relaxed);
            sh.to_control.push(ControlEvent::Ticket(TicketAsk { player, home, rtt }));
            Ok((201, TicketView { id: player.get().to_string(), status: Status::Queued, assignment: None }))
        }
        (tiny_http::Method::Get, p) => {
            let player = ticket_id(p)?;
            let wait = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("wait_ms="))
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(Duration::ZERO, |ms| Duration::from_millis(ms).min(MAX_WAIT));
            let deadline = Instant::now() + wait;
            let mut t = lock(&front.tickets);
            loop {
                let status = t.get(&player).map(|k| k.status).ok_or(FrontError::NotFound)?;
                let now = Instant::now();
                if status != Status::Queued || now >= deadline {
                    break;
                }
                t = front.changed.wait_timeout(t, deadline - now).map_or_else(|e| e.into_inner().0, |r| r.0);
            }
            drop(t);
            front.view(player).map(|v| (200, v)).ok_or(FrontError::NotFound)
        }
        (tiny_http::Method::Delete, p) => {
            let player = ticket_id(p)?;
            let was = {
                let mut t = lock(&front.tickets);
                let k = t.get_mut(&player).ok_or(FrontError::NotFound)?;
                let was = k.status;
                k.status = Status::Cancelled;
                was
            };
            if was == Status::Queued {
                sh.to_control.push(ControlEvent::Cancel { player });
            }
            front.changed.notify_all();
            front.view(player).map(|v| (200, v)).ok_or(FrontError::NotFound)
        }
        _ => Err(FrontError::NoRoute),
    }
}
