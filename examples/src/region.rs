//! One region's data plane: its game servers (each its own endpoint, see [`crate::fleet`])
//! and its sync node. The region starts and stops servers when the control plane says so,
//! hands each allocated match to its server, turns the results its servers decide into
//! replicated writes, and crashes servers for the chaos engine; it never tells the control
//! plane that a server died (the fleet controller learns that from missing heartbeats).

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::history::Event;
use hdrhistogram::Histogram;
use pvp_core::ids::{PlayerId, ServerId};
use pvp_core::queue::UnboundedQueue;
use pvp_global::link::{LinkKey, SealedLinks};

use crate::crdt::{RegionSync, TAG_CRDT, TAG_RESULTS};
use crate::fleet::{RttSplit, RunningServer, ServerCommand, ServerReport, ServerSpec};
use crate::replica::Replica;
use crate::session::{ControlEvent, RegionCommand, Shared, lock};
use crate::wire::{DRAW, SyncOp};

/// Sockets a region thread owns.
#[derive(Debug)]
pub(crate) struct RegionSockets {
    pub(crate) sync: UdpSocket,
}

impl RegionSockets {
    pub(crate) fn bind() -> std::io::Result<Self> {
        Self::bind_sync(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub(crate) fn bind_sync(sync: SocketAddr) -> std::io::Result<Self> {
        let sync = UdpSocket::bind(sync)?;
        sync.set_nonblocking(true)?;
        Ok(Self { sync })
    }
}

pub(crate) fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).unwrap_or_else(|_| unreachable!("valid bounds"))
}

fn home_region(p: PlayerId) -> usize {
    crate::bots::home_of(p).0
}

pub(crate) fn run_region(
    shared: Arc<Shared>,
    idx: usize,
    sockets: RegionSockets,
    peer_addrs: Vec<(pvp_core::ids::RegionId, SocketAddr)>,
    mut replica: Replica,
    mut crdt: RegionSync,
) {
    let cfg = &shared.config;
    let region = cfg.regions[idx].id;
    let mut servers: HashMap<ServerId, RunningServer> = HashMap::new();
    let mut stopping: Vec<RunningServer> = Vec::new();
    let reports: Arc<UnboundedQueue<(ServerId, ServerReport)>> = Arc::new(UnboundedQueue::new());
    let rtt = Arc::new(Mutex::new(RttSplit { home: hist(), away: hist() }));
    let mut sync_buf = vec![0u8; 65_536];
    let mut cmds = Vec::new();
    let mut got = Vec::new();
    let mut presence = Vec::new();
    // Friend lists: each bot befriends the next bot of its region (a ring), once at start.
    {
        let wall = Duration::from_millis(shared.unix_ms(Instant::now()));
        let bots = cfg.bots_per_region().get(idx).copied().unwrap_or(0) as usize;
        for i in 0..bots.saturating_sub(1) {
            crdt.befriend(crate::bots::player_id(idx, i), crate::bots::player_id(idx, i + 1), wall);
        }
    }
    let mut sync_out = Vec::new();
    // Every sync datagram is sealed for its peer and opened from it: a datagram from anyone
    // without the pair's key (or a replay) is dropped and counted, never applied.
    let mut links = SealedLinks::new(region, shared.unix_ms(Instant::now()));
    for (peer, _) in &peer_addrs {
        links.add_peer(*peer, LinkKey::derive(&shared.link_secret, region, *peer, "sync"));
    }
    let mut plain = Vec::with_capacity(65_536);
    let mut sealed = Vec::with_capacity(65_536);
    let mut last_merge = Instant::now();
    let mut merges = 0u64;
    let stats = &shared.regions[idx];
    let matches_metric =
        metrics::counter!("pvp_examples_matches_finished_total", "region" => region.to_string());
    let spec = |server: ServerId| ServerSpec {
        region: idx,
        region_name: region.to_string(),
        server,
        protocol_id: shared.protocol_id,
        key: shared.server_key.clone(),
        tick: cfg.tick_interval(),
        max_ticks: cfg.match_ticks,
        connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
        max_players: cfg.players_per_server as usize,
        heartbeat_to: *lock(&shared.fleet_addr),
        bind_ip: shared.bind_ip,
        fleet_key: crate::fleet::FleetKey::derive(&shared.link_secret),
        heartbeat_every: Duration::from_millis(cfg.heartbeat_ms),
        history: shared.history.clone(),
        driver: pvp_net::DriverChoice::Auto,
    };

    loop {
        if shared.region_stop.load(Ordering::Acquire) {
            break;
        }
        let now = Instant::now();
        let elapsed = now.duration_since(shared.start);
        let unix_ms = shared.unix_ms(now);
        let wall = Duration::from_millis(unix_ms);
        let mut busy = false;

        cmds.clear();
        shared.to_region[idx].pop_batch(&mut cmds, 4_096);
        for c in cmds.drain(..) {
            busy = true;
            match c {
                RegionCommand::StartServer { server } => {
                    if servers.contains_key(&server) {
                        continue;
                    }
                    match RunningServer::launch(
                        spec(server),
                        reports.clone(),
                        rtt.clone(),
                        stats.game.clone(),
                        shared.banned[idx].clone(),
                        home_region,
                    ) {
                        Ok(s) => {
                            if lock(&shared.driver).is_none() {
                                *lock(&shared.driver) = Some(
                                    "pvp-net GameServer (netcode 1.02), one endpoint per game server".into(),
                                );
                            }
                            servers.insert(server, s);
                        }
                        Err(_) => {
                            // The controller sees no heartbeat and replaces it.
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                RegionCommand::StopServer { server } => {
                    if let Some(s) = servers.remove(&server) {
                        s.commands.push(ServerCommand::Drain);
                        stopping.push(s);
                        stats.servers_stopped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                RegionCommand::Host { term, match_id, .. } if term < shared.term.load(Ordering::Acquire) => {
                    // Made by a leader that has been replaced: never hosted (its players were
                    // told to queue with the new leader).
                    stats.fenced_hosts.fetch_add(1, Ordering::Relaxed);
                    shared.record(Event::Aborted { match_id: match_id.get() });
                }
                RegionCommand::NewLeader { term } => {
                    shared.term.fetch_max(term, Ordering::AcqRel);
                    for (_, s) in servers.drain() {
                        s.commands.push(ServerCommand::Drain);
                        stopping.push(s);
                        stats.servers_stopped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                RegionCommand::Host { match_id, server, players, .. } => {
                    let seats: Vec<(PlayerId, u8)> = players.iter().map(|p| (p.0, p.1)).collect();
                    match servers.get(&server) {
                        Some(s) => {
                            shared.record(Event::Hosted {
                                region: region.to_string(),
                                match_id: match_id.get(),
                            });
                            s.commands.push(ServerCommand::Host { match_id, seats });
                        }
                        None => {
                            shared.record(Event::Aborted { match_id: match_id.get() });
                            // Placed on a server that is gone (crashed before the controller
                            // noticed): lost like the rest of its matches.
                            stats.crashed_matches.fetch_add(1, Ordering::Relaxed);
                            shared.to_control.push(ControlEvent::MatchAborted {
                                region: idx,
                                match_id,
                                crashed: true,
                            });
                        }
                    }
                }
                RegionCommand::CrashServers { count } => {
                    // The busiest servers die: the experiment wants matches in flight.
                    let mut ids: Vec<(u64, ServerId)> =
                        servers.values().map(|s| (s.fights.load(Ordering::Relaxed), s.id)).collect();
                    ids.sort_unstable_by(|a, b| b.cmp(a));
                    for (_, id) in ids.into_iter().take(count) {
                        if let Some(s) = servers.remove(&id) {
                            stats.servers_crashed.fetch_add(1, Ordering::Relaxed);
                            s.crash();
                        }
                    }
                }
                RegionCommand::Ban { player } => {
                    shared.record(Event::Ban { region: region.to_string(), player: player.get() });
                    crdt.ban(player, wall);
                }
                RegionCommand::Ratings { players } => {
                    if shared.history.is_some() {
                        for (p, rating) in &players {
                            shared.record(Event::Rating {
                                region: region.to_string(),
                                player: p.get(),
                                rating: *rating,
                            });
                        }
                    }
                    crdt.set_ratings(&players, wall);
                }
            }
        }

        presence.clear();
        shared.presence[idx].pop_batch(&mut presence, 4_096);
        for p in presence.drain(..) {
            crdt.mark_online(p, unix_ms + crate::lobby::PRESENCE_TTL.as_millis() as u64, wall);
        }

        got.clear();
        reports.pop_batch(&mut got, 4_096);
        for (_, r) in got.drain(..) {
            busy = true;
            match r {
                ServerReport::Finished { match_id, winner, seats } => {
                    let team = |t: u8| seats.iter().filter(|s| s.1 == t).map(|s| s.0).collect::<Vec<_>>();
                    if let Some(w) = winner {
                        crdt.record_wins(&team(w), wall);
                    }
                    crdt.record_profiles(&seats, winner, wall);
                    let op = SyncOp::MatchResult {
                        match_id,
                        region,
                        team_a: team(0),
                        team_b: team(1),
                        winner: winner.unwrap_or(DRAW),
                    };
                    if replica.write(op, unix_ms).is_err() {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                    } else {
                        shared.record(Event::Result { region: region.to_string(), match_id: match_id.get() });
                    }
                    stats.finished.fetch_add(1, Ordering::Relaxed);
                    matches_metric.increment(1);
                    shared.to_control.push(ControlEvent::MatchFinished { match_id, winner });
                }
                ServerReport::NoShow { match_id } => {
                    shared.record(Event::Aborted { match_id: match_id.get() });
                    stats.no_show_matches.fetch_add(1, Ordering::Relaxed);
                    shared.to_control.push(ControlEvent::MatchAborted {
                        region: idx,
                        match_id,
                        crashed: false,
                    });
                }
                ServerReport::Refused { match_id } => {
                    shared.record(Event::Aborted { match_id: match_id.get() });
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    shared.to_control.push(ControlEvent::MatchAborted {
                        region: idx,
                        match_id,
                        crashed: false,
                    });
                }
            }
        }
        stopping.retain(|s| !s.finished());

        // Sync.
        for _ in 0..1_024 {
            let (n, _) = match sockets.sync.recv_from(&mut sync_buf) {
                Ok(v) => v,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            };
            busy = true;
            if links.open(&sync_buf[..n], &mut plain).is_err() {
                stats.link_refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match plain.split_first() {
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
                if links.seal(to, &bytes, &mut sealed).is_ok() {
                    let _ = sockets.sync.send_to(&sealed, *addr);
                }
            }
        }
        for (j, heard) in shared.heard_ms[idx].iter().enumerate() {
            if let Some(t) = replica.last_heard(shared.config.regions[j].id) {
                heard.store(t.as_millis() as u64 + 1, Ordering::Relaxed);
            }
        }

        if now.duration_since(last_merge) >= Duration::from_millis(250) {
            last_merge = now;
            let fights: u64 = servers.values().map(|s| s.fights.load(Ordering::Relaxed)).sum();
            stats.hosted.store(fights, Ordering::Relaxed);
            stats.running_servers.store(servers.len() as u64, Ordering::Relaxed);
            stats.link_opened.store(links.stats().opened, Ordering::Relaxed);
            let progress = pvp_global::failover::SyncProgress::of(crdt.node(), wall);
            shared.to_control.push(ControlEvent::SyncProgress(progress));
            let mut split = lock(&rtt);
            // Round trips every 250 ms; the replica summary (a pass over every key) every 1 s.
            merges += 1;
            // While the session drains, every 250 ms: the convergence wait reads these.
            let summary = merges % 4 == 1 || shared.draining.load(Ordering::Acquire);
            shared.merge_region(idx, &mut split, &replica, &mut crdt, summary);
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // Orderly: every server drains what it hosts and leaves.
    for (_, s) in servers.drain() {
        s.commands.push(ServerCommand::Drain);
        stopping.push(s);
    }
    drop(stopping);
    let mut split = lock(&rtt);
    shared.merge_region(idx, &mut split, &replica, &mut crdt, true);
    drop(split);
    shared.finish_region(idx, replica, crdt);
}
