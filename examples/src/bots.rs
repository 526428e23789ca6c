//! Load bots: every bot is a netcode client of its own ([`GameClient`], its own socket). A
//! bot queues for a match, connects to the server its assignment names with the connect
//! token it carries (the full netcode handshake), answers every snapshot with an input shaped
//! by its hidden skill, and queues again after the fight (or when its server falls silent).
//!
//! Player latency is on the path: each bot's client holds its datagrams for half its
//! profile's round trip to the match's region in each direction ([`GameClient::set_link_delay`];
//! this kernel has no `netem`), so the round trips the servers measure are the ones the
//! players experience. The bots of a region share a thread and a `mio` poller over their
//! sockets; the hidden skill never leaves this module except for the final report.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use pvp_core::ids::{MatchId, PlayerId, RegionId};
use pvp_net::game::GameClient;
use pvp_net::netcode::{ClientConfig, ClientState, ConnectToken};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::arena::{ServerMsg, skilled_input};
use crate::session::{BotCommand, ControlEvent, Shared, TicketAsk, lock};

/// An online bot's presence is written this often...
pub const PRESENCE_REFRESH: Duration = Duration::from_secs(10);
/// ...and says "online" for this long after each write (a bot that goes away drops off by
/// itself).
pub const PRESENCE_TTL: Duration = Duration::from_secs(30);

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

/// A bot's hidden skill, 0.0 to 1.0, fixed by the session seed and the player id. Only the
/// bot's inputs carry it to the game; the report compares it with the final ratings.
pub fn hidden_skill(seed: u64, player: PlayerId) -> f64 {
    // splitmix64: a well-spread value per (seed, player).
    let mut z = seed ^ player.get().wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[derive(Debug, Clone, Copy)]
enum BotState {
    Idle { until: Instant },
    Queued { since: Instant },
    Playing { match_id: MatchId, assigned: Instant, connected: bool },
    Done,
}

#[derive(Debug)]
struct Bot {
    state: BotState,
    /// RTT to each region (same order as the config's regions).
    rtt: Vec<(RegionId, Duration)>,
    skill: f64,
    client: Option<GameClient>,
    /// The wakeup queued for this bot's client (older heap entries are stale).
    wake: Option<Instant>,
    /// When its presence was last sent.
    presence_at: Option<Instant>,
}

/// Counters the bot thread publishes.
#[derive(Debug, Default)]
struct Tally {
    connect_ms: Vec<u64>,
}

pub(crate) fn run_bots(shared: Arc<Shared>, idx: usize, count: usize) {
    let cfg = &shared.config;
    let stats = &shared.regions[idx];
    let Ok(mut poll) = Poll::new() else {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut rng = SmallRng::seed_from_u64(cfg.seed.wrapping_mul(31) ^ (idx as u64 + 7));
    let home = &cfg.regions[idx];
    let start = Instant::now();
    let mut bots: Vec<Bot> = (0..count)
        .map(|i| {
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
            let skill = hidden_skill(cfg.seed, player_id(idx, i));
            Bot { state: BotState::Idle { until }, rtt, skill, client: None, wake: None, presence_at: None }
        })
        .collect();
    let think = Duration::from_millis(cfg.think_time_ms);
    let mut client_config = ClientConfig::default();
    client_config.layered = false;
    // The server closes the session after the End; one goodbye is enough.
    client_config.disconnect_packets = 1;
    let mut cmds = Vec::new();
    let mut events = Events::with_capacity(4_096);
    let mut timers: BinaryHeap<Reverse<(Instant, u32)>> = BinaryHeap::new();
    let mut tally = Tally::default();
    let mut last_scan = Instant::now() - Duration::from_secs(1);
    let mut last_publish = Instant::now();
    while !shared.bots_stop.load(Ordering::Acquire) {
        let now = Instant::now();
        let draining = shared.draining.load(Ordering::Acquire);
        cmds.clear();
        shared.to_bots[idx].pop_batch(&mut cmds, 4_096);
        for c in cmds.drain(..) {
            match c {
                BotCommand::Assigned { player, match_id, region, token, .. } => {
                    let (_, i) = home_of(player);
                    let Some(b) = bots.get_mut(i) else { continue };
                    if b.client.is_some() {
                        // Still in another match: the assignment is stale; the server's
                        // connect deadline frees the seat.
                        continue;
                    }
                    let client = ConnectToken::from_bytes(&token)
                        .map_err(pvp_net::game::GameClientError::from)
                        .and_then(|t| GameClient::new(t, client_config.clone()));
                    let Ok(mut client) = client else {
                        stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                        b.state = BotState::Idle { until: now + think };
                        continue;
                    };
                    let rtt = b.rtt.get(region).map_or(Duration::ZERO, |r| r.1);
                    client.set_link_delay(rtt / 2);
                    let fd = client.as_raw_fd();
                    if poll.registry().register(&mut SourceFd(&fd), Token(i), Interest::READABLE).is_err() {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        b.state = BotState::Idle { until: now + think };
                        continue;
                    }
                    b.client = Some(client);
                    b.state = BotState::Playing { match_id, assigned: now, connected: false };
                    drive(
                        &mut bots[i],
                        i,
                        true,
                        &poll,
                        &mut timers,
                        &mut rng,
                        &shared,
                        idx,
                        think,
                        draining,
                        &mut tally,
                    );
                }
                BotCommand::AssignmentVoid { player, match_id } => {
                    let (_, i) = home_of(player);
                    let Some(b) = bots.get_mut(i) else { continue };
                    if !matches!(b.state, BotState::Playing { match_id: m, .. } if m == match_id) {
                        continue;
                    }
                    if let Some(mut c) = b.client.take() {
                        let fd = c.as_raw_fd();
                        let _ = poll.registry().deregister(&mut SourceFd(&fd));
                        c.disconnect();
                    }
                    b.wake = None;
                    stats.replaced.fetch_add(1, Ordering::Relaxed);
                    b.state = if draining { BotState::Done } else { BotState::Idle { until: now } };
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
        let next_timer = timers.peek().map(|Reverse((t, _))| *t);
        let wait = next_timer
            .map_or(Duration::from_millis(5), |t| t.saturating_duration_since(now))
            .min(Duration::from_millis(5));
        // epoll waits in whole milliseconds (mio rounds up): a held datagram would leave up
        // to 1 ms late in each direction, on the path the round trips are measured over. The
        // last sub-millisecond goes by a precise sleep, then a look at the sockets.
        let whole_ms = Duration::from_millis(wait.as_millis() as u64);
        let wait = if whole_ms.is_zero() && !wait.is_zero() {
            std::thread::sleep(wait);
            Duration::ZERO
        } else {
            whole_ms
        };
        if poll.poll(&mut events, Some(wait)).is_err() {
            events.clear();
        }
        for ev in events.iter() {
            let i = ev.token().0;
            if i < bots.len() {
                drive(
                    &mut bots[i],
                    i,
                    true,
                    &poll,
                    &mut timers,
                    &mut rng,
                    &shared,
                    idx,
                    think,
                    draining,
                    &mut tally,
                );
            }
        }
        let now = Instant::now();
        while let Some(&Reverse((t, i))) = timers.peek() {
            if t > now {
                break;
            }
            timers.pop();
            let i = i as usize;
            if bots.get(i).is_some_and(|b| b.wake == Some(t)) {
                bots[i].wake = None;
                drive(
                    &mut bots[i],
                    i,
                    false,
                    &poll,
                    &mut timers,
                    &mut rng,
                    &shared,
                    idx,
                    think,
                    draining,
                    &mut tally,
                );
            }
        }
        if now.duration_since(last_scan) >= Duration::from_millis(10) {
            last_scan = now;
            let mut online = 0u64;
            for (i, b) in bots.iter_mut().enumerate() {
                let online_now = matches!(b.state, BotState::Queued { .. } | BotState::Playing { .. });
                if online_now && b.presence_at.is_none_or(|t| now.duration_since(t) >= PRESENCE_REFRESH) {
                    b.presence_at = Some(now);
                    shared.presence[idx].push(player_id(idx, i));
                }
                match b.state {
                    BotState::Idle { until } if !draining && now >= until => {
                        let ask = TicketAsk { player: player_id(idx, i), home: idx, rtt: b.rtt.clone() };
                        shared.to_control.push(ControlEvent::Ticket(ask));
                        b.state = BotState::Queued { since: now };
                        online += 1;
                    }
                    BotState::Queued { since } => {
                        online += 1;
                        // The matchmaker times tickets out after 60 s without telling: ask again.
                        if now.duration_since(since) >= QUEUE_GIVE_UP {
                            b.state = BotState::Idle { until: now };
                        }
                    }
                    BotState::Playing { .. } => online += 1,
                    BotState::Idle { .. } | BotState::Done => {}
                }
            }
            stats.bots_online.store(online, Ordering::Relaxed);
        }
        if now.duration_since(last_publish) >= Duration::from_millis(250) && !tally.connect_ms.is_empty() {
            last_publish = now;
            let mut h = lock(&shared.hists);
            for ms in tally.connect_ms.drain(..) {
                let _ = h.connect_ms.record(ms.max(1));
            }
        }
    }
    let mut h = lock(&shared.hists);
    for ms in tally.connect_ms.drain(..) {
        let _ = h.connect_ms.record(ms.max(1));
    }
}

/// Runs bot `i`'s client: reads its socket (when `readable`) and what is due, answers
/// snapshots, notices the end of the fight or of the session, and queues the client's next
/// wakeup.
#[allow(clippy::too_many_arguments)]
fn drive(
    b: &mut Bot,
    i: usize,
    readable: bool,
    poll: &Poll,
    timers: &mut BinaryHeap<Reverse<(Instant, u32)>>,
    rng: &mut SmallRng,
    shared: &Shared,
    idx: usize,
    think: Duration,
    draining: bool,
    tally: &mut Tally,
) {
    let stats = &shared.regions[idx];
    let BotState::Playing { match_id, assigned, mut connected } = b.state else { return };
    let Some(c) = b.client.as_mut() else { return };
    let mut buf = [0u8; 64];
    let mut ended = false;
    let mut failed = false;
    loop {
        let got = if readable { c.recv_payload(&mut buf) } else { c.recv_due_payload(&mut buf) };
        match got {
            Ok(Some(n)) => match ServerMsg::decode(&buf[..n]) {
                Some(ServerMsg::Snapshot { tick, .. }) => {
                    let input = skilled_input(b.skill, tick, rng);
                    if c.send(&input.encode()).is_err() {
                        failed = true;
                        break;
                    }
                }
                Some(ServerMsg::End { .. }) => {
                    ended = true;
                    break;
                }
                None => {
                    stats.bad_packets.fetch_add(1, Ordering::Relaxed);
                }
            },
            Ok(None) => break,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    let now = Instant::now();
    if !connected && c.is_connected() {
        connected = true;
        tally.connect_ms.push(now.duration_since(assigned).as_millis() as u64);
    }
    let state = c.state();
    let over = ended || failed || state.is_final();
    if !over {
        b.state = BotState::Playing { match_id, assigned, connected };
        if let Some(w) = c.next_wakeup() {
            if b.wake.is_none_or(|s| w < s || s <= now) {
                b.wake = Some(w);
                timers.push(Reverse((w, i as u32)));
            }
        }
        return;
    }
    // The fight is over for this bot, one way or another.
    if ended || (connected && state == ClientState::Disconnected) {
        // The server ended it (the End, or its goodbye when the End was lost).
        stats.bot_matches.fetch_add(1, Ordering::Relaxed);
    } else if connected {
        // The session died mid-fight (server crashed or silent): queue again at once.
        stats.replaced.fetch_add(1, Ordering::Relaxed);
    } else {
        stats.connect_failures.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(mut c) = b.client.take() {
        let fd = c.as_raw_fd();
        let _ = poll.registry().deregister(&mut SourceFd(&fd));
        c.disconnect();
    }
    b.wake = None;
    let rest =
        if ended || (connected && state == ClientState::Disconnected) { think } else { Duration::ZERO };
    b.state = if draining { BotState::Done } else { BotState::Idle { until: now + rest } };
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

    #[test]
    fn hidden_skills_spread_over_the_range_and_are_fixed() {
        let s: Vec<f64> = (0..10_000).map(|i| hidden_skill(1, player_id(0, i))).collect();
        assert!(s.iter().all(|v| (0.0..1.0).contains(v)));
        let mean = s.iter().sum::<f64>() / s.len() as f64;
        assert!((0.45..0.55).contains(&mean), "uniform-ish: mean {mean}");
        assert_eq!(hidden_skill(1, player_id(0, 3)), s[3]);
        assert_ne!(hidden_skill(2, player_id(0, 3)), s[3]);
    }
}
