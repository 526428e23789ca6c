//! Load bots: every bot of a region lives in one thread with one UDP socket. A bot queues for
//! a match, connects to its assigned server with the connect token, answers every state tick
//! with an input, and requeues after the match (or when its server goes silent).

use std::net::SocketAddr;

use pvp_net::endpoint::BatchSocket;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pvp_core::ids::{MatchId, PlayerId, RegionId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::session::{BotCommand, ControlEvent, Shared, TicketAsk};
use crate::token::TOKEN_LEN;
use crate::wire::GamePacket;

/// A bot queued this long asks again (the matchmaker's queue timeout is 60 s).
const QUEUE_GIVE_UP: Duration = Duration::from_secs(65);

/// Player ids of region `idx` start at `idx * PLAYER_ID_STRIDE + 1`.
pub const PLAYER_ID_STRIDE: u64 = 100_000_000;

/// The player id of bot `i` of region `idx`.
pub fn player_id(idx: usize, i: usize) -> PlayerId {
    PlayerId::new(idx as u64 * PLAYER_ID_STRIDE + i as u64 + 1)
}

/// The home region index of a bot's player id, and its index there.
pub fn home_of(player: PlayerId) -> (usize, usize) {
    let raw = player.get().saturating_sub(1);
    ((raw / PLAYER_ID_STRIDE) as usize, (raw % PLAYER_ID_STRIDE) as usize)
}

#[derive(Debug, Clone, Copy)]
enum BotState {
    Idle { until: Instant },
    Queued { since: Instant },
    Connecting { match_id: MatchId, server: SocketAddr, resend: Instant, deadline: Instant },
    Playing { match_id: MatchId, server: SocketAddr, heard: Instant },
    Done,
}

#[derive(Debug)]
struct Bot {
    state: BotState,
    token: [u8; TOKEN_LEN],
    /// RTT to each region (same order as the config's regions).
    rtt: Vec<(RegionId, Duration)>,
}

/// Queues `p` to `to` on the batch socket (sent on the next flush, or at once when the batch
/// is full).
fn queue(sock: &mut BatchSocket, to: SocketAddr, p: &GamePacket<'_>) {
    let _ = sock.queue_with(to, |buf| p.encode(buf).map_or(0, |b| b.len()));
}

/// A received packet without borrowed bytes (bots never receive `Connect`).
fn owned(p: GamePacket<'_>) -> Option<GamePacket<'static>> {
    Some(match p {
        GamePacket::Accepted { match_id, player } => GamePacket::Accepted { match_id, player },
        GamePacket::Denied { match_id, player } => GamePacket::Denied { match_id, player },
        GamePacket::State { match_id, player, tick } => GamePacket::State { match_id, player, tick },
        GamePacket::Input { match_id, player, tick } => GamePacket::Input { match_id, player, tick },
        GamePacket::End { match_id, player, won } => GamePacket::End { match_id, player, won },
        GamePacket::Connect { .. } => return None,
    })
}

pub(crate) fn run_bots(shared: Arc<Shared>, idx: usize, mut socket: BatchSocket, count: usize) {
    let cfg = &shared.config;
    let mut rng = SmallRng::seed_from_u64(cfg.seed.wrapping_mul(31) ^ (idx as u64 + 7));
    let home = &cfg.regions[idx];
    let start = Instant::now();
    let mut bots: Vec<Bot> = (0..count)
        .map(|_| {
            let rtt = cfg
                .regions
                .iter()
                .map(|r| {
                    let base = home.player_rtt_ms.get(&r.id).copied().unwrap_or(u32::MAX / 2);
                    let jitter =
                        if cfg.player_jitter_ms > 0 { rng.random_range(0..=cfg.player_jitter_ms) } else { 0 };
                    (r.id, Duration::from_millis(u64::from(base) + u64::from(jitter)))
                })
                .collect();
            // Spread the first tickets over the first second.
            let until = start + Duration::from_millis(rng.random_range(0..1_000));
            Bot { state: BotState::Idle { until }, token: [0; TOKEN_LEN], rtt }
        })
        .collect();
    let think = Duration::from_millis(cfg.think_time_ms);
    let connect_timeout = Duration::from_millis(cfg.connect_timeout_ms);
    let resend_every = Duration::from_millis(200);
    let stats = &shared.regions[idx];
    let mut cmds = Vec::new();
    let mut incoming: Vec<GamePacket<'static>> = Vec::with_capacity(1_024);
    let mut last_scan = Instant::now() - Duration::from_secs(1);
    while !shared.bots_stop.load(Ordering::Acquire) {
        let now = Instant::now();
        let draining = shared.draining.load(Ordering::Acquire);
        let mut busy = false;
        cmds.clear();
        shared.to_bots[idx].pop_batch(&mut cmds, 4_096);
        for c in cmds.drain(..) {
            busy = true;
            match c {
                BotCommand::Assigned { player, match_id, server, token } => {
                    let (_, i) = home_of(player);
                    let Some(b) = bots.get_mut(i) else { continue };
                    b.token = token;
                    b.state = BotState::Connecting {
                        match_id,
                        server,
                        resend: now + resend_every,
                        deadline: now + connect_timeout,
                    };
                    queue(&mut socket, server, &GamePacket::Connect { token: &b.token });
                }
                BotCommand::TicketFailed { player } => {
                    let (_, i) = home_of(player);
                    if let Some(b) = bots.get_mut(i) {
                        if matches!(b.state, BotState::Queued { .. }) {
                            b.state = BotState::Idle { until: now + think };
                        }
                    }
                }
            }
        }
        incoming.clear();
        for _ in 0..16 {
            let n = socket.recv_batch(Duration::ZERO).unwrap_or(0);
            if n == 0 {
                break;
            }
            for i in 0..n {
                match socket.datagram(i).map(|(_, d)| GamePacket::decode(d).ok().and_then(owned)) {
                    Some(Some(p)) => incoming.push(p),
                    _ => {
                        stats.bad_packets.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        for p in incoming.drain(..) {
            busy = true;
            let (player, mid) = match p {
                GamePacket::Accepted { match_id, player }
                | GamePacket::Denied { match_id, player }
                | GamePacket::State { match_id, player, .. }
                | GamePacket::End { match_id, player, .. } => (player, match_id),
                _ => {
                    stats.bad_packets.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            let (h, i) = home_of(player);
            let Some(b) = bots.get_mut(i).filter(|_| h == idx) else {
                stats.bad_packets.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            match (b.state, p) {
                (BotState::Connecting { match_id, server, .. }, GamePacket::Accepted { .. })
                    if match_id == mid =>
                {
                    b.state = BotState::Playing { match_id, server, heard: now };
                }
                (BotState::Connecting { match_id, server, .. }, GamePacket::State { tick, .. })
                    if match_id == mid =>
                {
                    b.state = BotState::Playing { match_id, server, heard: now };
                    queue(&mut socket, server, &GamePacket::Input { match_id, player, tick });
                }
                (BotState::Playing { match_id, server, .. }, GamePacket::State { tick, .. })
                    if match_id == mid =>
                {
                    b.state = BotState::Playing { match_id, server, heard: now };
                    queue(&mut socket, server, &GamePacket::Input { match_id, player, tick });
                }
                (BotState::Playing { match_id, .. }, GamePacket::End { .. }) if match_id == mid => {
                    stats.bot_matches.fetch_add(1, Ordering::Relaxed);
                    b.state = if draining { BotState::Done } else { BotState::Idle { until: now + think } };
                }
                (BotState::Playing { match_id, .. }, GamePacket::Denied { .. }) if match_id == mid => {
                    stats.replaced.fetch_add(1, Ordering::Relaxed);
                    b.state = BotState::Idle { until: now };
                }
                _ => {}
            }
        }
        if now.duration_since(last_scan) >= Duration::from_millis(10) {
            last_scan = now;
            let mut online = 0u64;
            for (i, b) in bots.iter_mut().enumerate() {
                match b.state {
                    BotState::Idle { until } if !draining && now >= until => {
                        let ask = TicketAsk { player: player_id(idx, i), home: idx, rtt: b.rtt.clone() };
                        shared.to_control.push(ControlEvent::Ticket(ask));
                        b.state = BotState::Queued { since: now };
                        online += 1;
                    }
                    BotState::Connecting { match_id, server, resend, deadline } => {
                        online += 1;
                        if now >= deadline {
                            stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                            b.state = BotState::Idle { until: now };
                        } else if now >= resend {
                            queue(&mut socket, server, &GamePacket::Connect { token: &b.token });
                            b.state = BotState::Connecting {
                                match_id,
                                server,
                                resend: now + resend_every,
                                deadline,
                            };
                        }
                    }
                    BotState::Playing { heard, .. } => {
                        online += 1;
                        if now.duration_since(heard) >= connect_timeout {
                            // The server went silent (crashed): queue again.
                            stats.replaced.fetch_add(1, Ordering::Relaxed);
                            b.state = if draining { BotState::Done } else { BotState::Idle { until: now } };
                        }
                    }
                    BotState::Queued { since } => {
                        online += 1;
                        // The matchmaker times tickets out after 60 s without telling: ask again.
                        if now.duration_since(since) >= QUEUE_GIVE_UP {
                            b.state = BotState::Idle { until: now };
                        }
                    }
                    BotState::Idle { .. } | BotState::Done => {}
                }
            }
            stats.bots_online.store(online, Ordering::Relaxed);
        }
        let _ = socket.flush();
        if !busy {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn player_ids_round_trip() {
        for (r, i) in [(0, 0), (2, 99_999), (1, 5)] {
            assert_eq!(home_of(player_id(r, i)), (r, i));
        }
    }
}
