//! One region's data plane: its game servers (one UDP socket hosts every server of the
//! region, told apart by server id in the connect token) and its sync node.
//!
//! The game-server side is the seam where pvp-net's `UdpServer` and session protocol plug in;
//! until pvp-net is on main it speaks the small [`GamePacket`](crate::wire::GamePacket)
//! protocol over a non-blocking std `UdpSocket`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pvp_core::ids::{MatchId, PlayerId, RegionId, ServerId};
use pvp_net::endpoint::Datagram;
use pvp_net::{UdpServer, UdpServerConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::crdt::{RegionSync, TAG_CRDT, TAG_RESULTS};
use crate::replica::Replica;
use crate::session::{ControlEvent, RegionCommand, Shared, lock};
use crate::wire::{GamePacket, MAX_DATAGRAM, SyncOp};

/// A match hosted here.
#[derive(Debug)]
struct Hosted {
    server: ServerId,
    players: Vec<Seat>,
    tick: u32,
    tick_sent: Instant,
    playing: bool,
    connect_deadline: Instant,
}

#[derive(Debug)]
struct Seat {
    player: PlayerId,
    team: u8,
    addr: Option<SocketAddr>,
    base_rtt: Duration,
    answered: u32,
}

/// Sockets a region thread owns.
#[derive(Debug)]
pub(crate) struct RegionSockets {
    /// The game servers' endpoint: pvp-net's UdpServer (io_uring, or epoll where forbidden).
    pub(crate) game: UdpServer,
    pub(crate) sync: UdpSocket,
}

fn game_server() -> std::io::Result<UdpServer> {
    let mut cfg = UdpServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    // Deep queues: a tick sends a state to every player of every match due at once.
    cfg.queue_capacity = 1 << 16;
    UdpServer::bind(cfg).map_err(std::io::Error::other)
}

impl RegionSockets {
    pub(crate) fn bind() -> std::io::Result<Self> {
        Self::bind_sync(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub(crate) fn bind_sync(sync: SocketAddr) -> std::io::Result<Self> {
        let sync = UdpSocket::bind(sync)?;
        sync.set_nonblocking(true)?;
        Ok(Self { game: game_server()?, sync })
    }
}

/// Local histograms merged into the shared ones every so often.
#[derive(Debug)]
struct Local {
    net_rtt_us: Histogram<u64>,
    player_rtt_us: Histogram<u64>,
}

pub(crate) fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).unwrap_or_else(|_| unreachable!("valid bounds"))
}

pub(crate) fn run_region(
    shared: Arc<Shared>,
    idx: usize,
    sockets: RegionSockets,
    peer_addrs: Vec<(RegionId, SocketAddr)>,
    mut replica: Replica,
    mut crdt: RegionSync,
) {
    let region = shared.config.regions[idx].id;
    let cfg = &shared.config;
    let tick_every = cfg.tick_interval();
    let connect_timeout = Duration::from_millis(cfg.connect_timeout_ms);
    let mut rng = SmallRng::seed_from_u64(cfg.seed ^ ((idx as u64 + 1) * 0x9e37));
    let mut matches: HashMap<MatchId, Hosted> = HashMap::new();
    let mut timers: BinaryHeap<Reverse<(Instant, MatchId)>> = BinaryHeap::new();
    let mut crashed: HashSet<ServerId> = HashSet::new();
    let mut sync_buf = vec![0u8; 65_536];
    let mut out = [0u8; MAX_DATAGRAM];
    let mut cmds = Vec::new();
    let mut sync_out = Vec::new();
    let mut local = Local { net_rtt_us: hist(), player_rtt_us: hist() };
    let mut last_merge = Instant::now();
    let stats = &shared.regions[idx];
    let rtt_metric =
        metrics::histogram!(pvp_ops::slo::names::LATENCY_SECONDS, "region" => region.to_string());
    let req_total = metrics::counter!(pvp_ops::slo::names::REQUESTS_TOTAL, "region" => region.to_string());
    let req_failed = metrics::counter!(pvp_ops::slo::names::REQUESTS_FAILED, "region" => region.to_string());
    let matches_metric =
        metrics::counter!("pvp_examples_matches_finished_total", "region" => region.to_string());

    let game_addr = sockets.game.local_addr();
    *lock(&shared.driver) = Some(format!(
        "pvp-net UdpServer, {:?} driver ({})",
        sockets.game.driver(),
        sockets.game.driver_reason()
    ));
    let tx_dropped = &stats.errors;
    let send = |srv: &UdpServer, to: SocketAddr, p: &GamePacket<'_>, out: &mut [u8]| {
        let sent = p.encode(out).ok().and_then(|b| Datagram::new(to, b).ok()).map(|d| srv.send(d).is_ok());
        if sent != Some(true) {
            tx_dropped.fetch_add(1, Ordering::Relaxed);
        }
    };
    let mut inbound: Vec<Datagram> = Vec::with_capacity(2_048);

    loop {
        if shared.region_stop.load(Ordering::Acquire) {
            break;
        }
        let now = Instant::now();
        let elapsed = now.duration_since(shared.start);
        let unix_ms = shared.unix_ms(now);
        let wall = Duration::from_millis(unix_ms);
        let mut busy = false;

        // Commands from the control plane.
        cmds.clear();
        shared.to_region[idx].pop_batch(&mut cmds, 4_096);
        for c in cmds.drain(..) {
            busy = true;
            match c {
                RegionCommand::Host { match_id, server, players } => {
                    if crashed.contains(&server) {
                        // Placed on a dead server before the fleet noticed: lost like the rest.
                        stats.crashed_matches.fetch_add(1, Ordering::Relaxed);
                        shared.to_control.push(ControlEvent::MatchAborted {
                            region: idx,
                            match_id,
                            crashed: true,
                        });
                        continue;
                    }
                    let seats = players
                        .into_iter()
                        .map(|(player, team, base_rtt)| Seat {
                            player,
                            team,
                            addr: None,
                            base_rtt,
                            answered: 0,
                        })
                        .collect();
                    matches.insert(
                        match_id,
                        Hosted {
                            server,
                            players: seats,
                            tick: 0,
                            tick_sent: now,
                            playing: false,
                            connect_deadline: now + connect_timeout,
                        },
                    );
                    timers.push(Reverse((now + connect_timeout, match_id)));
                }
                RegionCommand::CrashServers { count } => {
                    let mut servers: Vec<ServerId> = matches.values().map(|m| m.server).collect();
                    servers.sort_unstable();
                    servers.dedup();
                    servers.truncate(count);
                    let mut lost = Vec::new();
                    matches.retain(|id, m| {
                        if servers.contains(&m.server) {
                            lost.push(*id);
                            false
                        } else {
                            true
                        }
                    });
                    crashed.extend(servers.iter().copied());
                    stats.crashed_matches.fetch_add(lost.len() as u64, Ordering::Relaxed);
                    shared.to_control.push(ControlEvent::ServersCrashed {
                        region: idx,
                        servers,
                        matches: lost,
                    });
                }
                RegionCommand::Ban { player } => crdt.ban(player, wall),
            }
        }

        // Game datagrams.
        inbound.clear();
        sockets.game.recv_batch(&mut inbound, 2_048);
        for d in &inbound {
            let from = d.addr;
            busy = true;
            let Ok(p) = GamePacket::decode(d.payload()) else {
                stats.bad_packets.fetch_add(1, Ordering::Relaxed);
                req_failed.increment(1);
                continue;
            };
            match p {
                GamePacket::Connect { token } => {
                    let claims = match shared.token_key.open(token, unix_ms, game_addr) {
                        Ok(c) => c,
                        Err(_) => {
                            stats.bad_tokens.fetch_add(1, Ordering::Relaxed);
                            req_failed.increment(1);
                            continue;
                        }
                    };
                    let deny = GamePacket::Denied { match_id: claims.match_id, player: claims.player };
                    let Some(m) = matches.get_mut(&claims.match_id) else {
                        // The Host command may still be on its way; the bot retries.
                        send(&sockets.game, from, &deny, &mut out);
                        continue;
                    };
                    if m.server != claims.server {
                        stats.bad_tokens.fetch_add(1, Ordering::Relaxed);
                        send(&sockets.game, from, &deny, &mut out);
                        continue;
                    }
                    let Some(seat) = m.players.iter_mut().find(|s| s.player == claims.player) else {
                        stats.bad_tokens.fetch_add(1, Ordering::Relaxed);
                        send(&sockets.game, from, &deny, &mut out);
                        continue;
                    };
                    seat.addr = Some(from);
                    req_total.increment(1);
                    let ok = GamePacket::Accepted { match_id: claims.match_id, player: claims.player };
                    send(&sockets.game, from, &ok, &mut out);
                    if !m.playing && m.players.iter().all(|s| s.addr.is_some()) {
                        m.playing = true;
                        timers.push(Reverse((now, claims.match_id)));
                    }
                }
                GamePacket::Input { match_id, player, tick } => {
                    let Some(m) = matches.get_mut(&match_id) else { continue };
                    let Some(seat) = m.players.iter_mut().find(|s| s.player == player) else { continue };
                    req_total.increment(1);
                    if tick == m.tick && seat.answered < tick {
                        seat.answered = tick;
                        let rtt = now.duration_since(m.tick_sent);
                        let us = rtt.as_micros().max(1) as u64;
                        let _ = local.net_rtt_us.record(us.min(3_600_000_000));
                        let _ = local
                            .player_rtt_us
                            .record((us + seat.base_rtt.as_micros() as u64).min(3_600_000_000));
                        rtt_metric.record(rtt.as_secs_f64());
                    }
                }
                _ => {
                    stats.bad_packets.fetch_add(1, Ordering::Relaxed);
                }
            }
        }

        // Match timers: connect deadlines and ticks.
        while let Some(Reverse((at, id))) = timers.peek().copied() {
            if at > now {
                break;
            }
            timers.pop();
            busy = true;
            let Some(m) = matches.get_mut(&id) else { continue };
            if !m.playing {
                if now >= m.connect_deadline {
                    for s in &m.players {
                        if let Some(a) = s.addr {
                            send(
                                &sockets.game,
                                a,
                                &GamePacket::Denied { match_id: id, player: s.player },
                                &mut out,
                            );
                        }
                    }
                    matches.remove(&id);
                    stats.no_show_matches.fetch_add(1, Ordering::Relaxed);
                    shared.to_control.push(ControlEvent::MatchAborted {
                        region: idx,
                        match_id: id,
                        crashed: false,
                    });
                }
                continue;
            }
            if m.tick >= cfg.match_ticks {
                let winner = u8::from(rng.random_bool(0.5));
                for s in &m.players {
                    if let Some(a) = s.addr {
                        let p = GamePacket::End { match_id: id, player: s.player, won: s.team == winner };
                        send(&sockets.game, a, &p, &mut out);
                    }
                }
                let team =
                    |t: u8| m.players.iter().filter(|s| s.team == t).map(|s| s.player).collect::<Vec<_>>();
                crdt.record_wins(&team(winner), wall);
                let op =
                    SyncOp::MatchResult { match_id: id, region, team_a: team(0), team_b: team(1), winner };
                if replica.write(op, unix_ms).is_err() {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                }
                matches.remove(&id);
                stats.finished.fetch_add(1, Ordering::Relaxed);
                matches_metric.increment(1);
                shared.to_control.push(ControlEvent::MatchFinished { match_id: id, winner });
                continue;
            }
            m.tick += 1;
            m.tick_sent = now;
            for s in &m.players {
                if let Some(a) = s.addr {
                    send(
                        &sockets.game,
                        a,
                        &GamePacket::State { match_id: id, player: s.player, tick: m.tick },
                        &mut out,
                    );
                }
            }
            timers.push(Reverse((now + tick_every, id)));
        }

        // Sync.
        for _ in 0..1_024 {
            let (n, _) = match sockets.sync.recv_from(&mut sync_buf) {
                Ok(v) => v,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            };
            busy = true;
            match sync_buf[..n].split_first() {
                Some((&TAG_RESULTS, rest)) => replica.handle_datagram(elapsed, unix_ms, rest),
                Some((&TAG_CRDT, rest)) => crdt.handle_datagram(wall, rest),
                _ => {
                    stats.bad_packets.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        sync_out.clear();
        replica.poll_transmit(elapsed, &mut sync_out);
        for (_, b) in sync_out.iter_mut() {
            b.insert(0, TAG_RESULTS);
        }
        crdt.poll(wall, &mut sync_out);
        for (to, bytes) in sync_out.drain(..) {
            if let Some((_, addr)) = peer_addrs.iter().find(|(r, _)| *r == to) {
                let _ = sockets.sync.send_to(&bytes, *addr);
            }
        }
        for (j, heard) in shared.heard_ms[idx].iter().enumerate() {
            if let Some(t) = replica.last_heard(shared.config.regions[j].id) {
                heard.store(t.as_millis() as u64 + 1, Ordering::Relaxed);
            }
        }
        stats.hosted.store(matches.len() as u64, Ordering::Relaxed);

        if now.duration_since(last_merge) >= Duration::from_millis(250) {
            last_merge = now;
            let progress = pvp_global::failover::SyncProgress::of(crdt.node(), wall);
            shared.to_control.push(ControlEvent::SyncProgress(progress));
            shared.merge_region(idx, &mut local.net_rtt_us, &mut local.player_rtt_us, &replica, &mut crdt);
        }
        if !busy {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    shared.merge_region(idx, &mut local.net_rtt_us, &mut local.player_rtt_us, &replica, &mut crdt);
    shared.finish_region(idx, replica, crdt);
}
