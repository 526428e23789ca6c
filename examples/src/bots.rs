//! Load bots: every bot is a netcode client of its own. It logs in to its home region's
//! lobby ([`crate::lobby`]: a layered netcode session on its own socket, held while it is
//! online: that session is its presence), creates tickets and receives its assignments
//! there, connects to the server an assignment names with the connect token it carries (a
//! second [`GameClient`], its own socket, the full netcode handshake), answers every
//! snapshot with an input shaped by its hidden skill, and queues again after the fight (or
//! when its server falls silent).
//!
//! Player latency is on the path: each bot's client holds its datagrams for half its
//! profile's round trip to the match's region in each direction ([`GameClient::set_link_delay`];
//! this kernel has no `netem`), so the round trips the servers measure are the ones the
//! players experience (the lobby session carries the home region's delay too). The bots of
//! a region share a thread and a `mio` poller over their sockets; the hidden skill never
//! leaves this module except for the final report.

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
use pvp_net::netcode::{ClientConfig, ClientEvent, ClientState, ConnectToken};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::arena::{ServerMsg, skilled_input};
use crate::lobby::{LOBBY_KEEPALIVE, LobbyMsg};
use crate::session::{Shared, lock};

/// mio token bit of a bot's lobby socket (the game socket's token is the bot's index).
const LOBBY: usize = 1 << 40;

/// A bot whose lobby session ended logs in again after this long.
const RELOGIN: Duration = Duration::from_secs(1);

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
    /// Not logged in (or logged out): log in to the lobby at `until`.
    Offline {
        until: Instant,
    },
    /// Lobby session handshaking.
    LoggingIn,
    Idle {
        until: Instant,
    },
    Queued {
        since: Instant,
    },
    Playing {
        match_id: MatchId,
        assigned: Instant,
        connected: bool,
    },
    Done,
}

#[derive(Debug)]
struct Bot {
    state: BotState,
    /// RTT to each region (same order as the config's regions).
    rtt: Vec<(RegionId, Duration)>,
    skill: f64,
    client: Option<GameClient>,
    /// Its lobby session.
    lobby: Option<GameClient>,
    /// An assignment whose token's tail is still to come.
    pending: Option<(MatchId, usize, Vec<u8>)>,
    /// The wakeup queued for this bot's game client (older heap entries are stale).
    wake: Option<Instant>,
    /// The wakeup queued for its lobby client.
    lobby_wake: Option<Instant>,
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
    let ramp_ms =
        if cfg.duration_secs > 0.0 { (cfg.duration_secs * 250.0).clamp(1.0, 5_000.0) as u64 } else { 5_000 };
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
            // Spread the logins over the first seconds (a quarter of the session, at most
            // 5 s), as players arrive, rather than 10,000 handshakes and tickets at once.
            let until = start + Duration::from_millis(rng.random_range(0..=ramp_ms));
            let skill = hidden_skill(cfg.seed, player_id(idx, i));
            Bot {
                state: BotState::Offline { until },
                rtt,
                skill,
                client: None,
                lobby: None,
                pending: None,
                wake: None,
                lobby_wake: None,
            }
        })
        .collect();
    let think = Duration::from_millis(cfg.think_time_ms);
    let mut client_config = ClientConfig::default();
    client_config.layered = false;
    // The server closes the session after the End; one goodbye is enough.
    client_config.disconnect_packets = 1;
    let mut lobby_config = ClientConfig::default();
    lobby_config.keepalive_interval = LOBBY_KEEPALIVE;
    lobby_config.disconnect_packets = 1;
    let home_rtt = |b: &Bot| b.rtt.get(idx).map_or(Duration::ZERO, |r| r.1);
    let mut events = Events::with_capacity(4_096);
    let mut timers: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    let mut tally = Tally::default();
    let mut last_scan = Instant::now() - Duration::from_secs(1);
    let mut last_publish = Instant::now();
    while !shared.bots_stop.load(Ordering::Acquire) {
        let now = Instant::now();
        let draining = shared.draining.load(Ordering::Acquire);
        // Timers wake the thread on a 100 µs grid: every bot's timer due in the same slot is
        // handled in one wake-up (a held datagram leaves at most 100 µs late, about the
        // kernel's own timer slack).
        let next_timer = timers.peek().map(|Reverse((t, _))| on_grid(start, *t));
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
        let mut cx = Cx {
            poll: &poll,
            timers: &mut timers,
            rng: &mut rng,
            shared: &shared,
            idx,
            think,
            draining,
            tally: &mut tally,
            client_config: &client_config,
        };
        for ev in events.iter() {
            let t = ev.token().0;
            let (i, lobby) = (t & !LOBBY, t & LOBBY != 0);
            let Some(b) = bots.get_mut(i) else { continue };
            if lobby {
                drive_lobby(b, i, true, &mut cx);
            } else {
                drive(b, i, true, &mut cx);
            }
        }
        let now = Instant::now();
        while let Some(&Reverse((t, key))) = cx.timers.peek() {
            if on_grid(start, t) > now {
                break;
            }
            cx.timers.pop();
            let (i, lobby) = (key & !LOBBY, key & LOBBY != 0);
            let Some(b) = bots.get_mut(i) else { continue };
            if lobby && b.lobby_wake == Some(t) {
                b.lobby_wake = None;
                drive_lobby(b, i, false, &mut cx);
            } else if !lobby && b.wake == Some(t) {
                b.wake = None;
                drive(b, i, false, &mut cx);
            }
        }
        if now.duration_since(last_scan) >= Duration::from_millis(10) {
            last_scan = now;
            let mut online = 0u64;
            for (i, b) in bots.iter_mut().enumerate() {
                match b.state {
                    BotState::Offline { until } if !draining && now >= until => {
                        // Log in: a lobby token for this player, a session on its own socket.
                        let client = crate::lobby::lobby_addr(&shared, idx)
                            .and_then(|addr| shared.lobby_login.token(player_id(idx, i), addr))
                            .map(|t| GameClient::new(t, lobby_config.clone()));
                        let Some(Ok(mut client)) = client else {
                            stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                            b.state = BotState::Offline { until: now + RELOGIN };
                            continue;
                        };
                        client.set_link_delay(home_rtt(b) / 2);
                        let fd = client.as_raw_fd();
                        if poll
                            .registry()
                            .register(&mut SourceFd(&fd), Token(i | LOBBY), Interest::READABLE)
                            .is_err()
                        {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                            b.state = BotState::Offline { until: now + RELOGIN };
                            continue;
                        }
                        b.lobby = Some(client);
                        b.state = BotState::LoggingIn;
                        drive_lobby(b, i, false, &mut cx);
                    }
                    BotState::Idle { until } if !draining && now >= until => {
                        let rtt_ms =
                            b.rtt.iter().map(|(r, d)| (*r, d.as_millis().min(60_000) as u32)).collect();
                        let sent = LobbyMsg::CreateTicket { rtt_ms }
                            .encode()
                            .ok()
                            .zip(b.lobby.as_mut())
                            .is_some_and(|(m, l)| l.send_reliable(&m).is_ok());
                        if sent {
                            b.state = BotState::Queued { since: now };
                            drive_lobby(b, i, false, &mut cx);
                        } else {
                            b.state = BotState::Idle { until: now + think };
                        }
                        online += 1;
                    }
                    BotState::Queued { since } => {
                        online += 1;
                        // The matchmaker times tickets out after 60 s without telling: ask again.
                        if now.duration_since(since) >= QUEUE_GIVE_UP {
                            b.state = BotState::Idle { until: now };
                        }
                    }
                    BotState::Playing { .. } | BotState::Idle { .. } => online += 1,
                    BotState::Offline { .. } | BotState::LoggingIn | BotState::Done => {}
                }
            }
            stats.bots_online.store(online, Ordering::Relaxed);
        }
        if now.duration_since(last_publish) >= Duration::from_millis(250) && !cx.tally.connect_ms.is_empty() {
            last_publish = now;
            let mut h = lock(&shared.hists);
            for ms in cx.tally.connect_ms.drain(..) {
                let _ = h.connect_ms.record(ms.max(1));
            }
        }
    }
    for b in &mut bots {
        if let Some(mut l) = b.lobby.take() {
            l.disconnect();
        }
    }
    let mut h = lock(&shared.hists);
    for ms in tally.connect_ms.drain(..) {
        let _ = h.connect_ms.record(ms.max(1));
    }
}

/// Timer wake-ups are rounded up to this grid.
const TIMER_GRID: Duration = Duration::from_micros(100);

/// `t` rounded up to the [`TIMER_GRID`] counted from `start`.
fn on_grid(start: Instant, t: Instant) -> Instant {
    let since = t.saturating_duration_since(start).as_nanos();
    let grid = TIMER_GRID.as_nanos();
    let up = since.div_ceil(grid) * grid;
    start + Duration::from_nanos(u64::try_from(up).unwrap_or(u64::MAX))
}

/// Queues a client's next wakeup `w` under `key` unless one at least as early is queued
/// (`slot` holds the queued one; older heap entries are stale and skipped).
fn schedule(
    timers: &mut BinaryHeap<Reverse<(Instant, usize)>>,
    slot: &mut Option<Instant>,
    w: Option<Instant>,
    key: usize,
) {
    let Some(w) = w else { return };
    let now = Instant::now();
    if slot.is_none_or(|s| w < s || s <= now) {
        *slot = Some(w);
        timers.push(Reverse((w, key)));
    }
}

/// Deregisters and disconnects a client, and forgets its queued wakeup.
fn close(poll: &Poll, client: &mut Option<GameClient>, wake: &mut Option<Instant>) {
    if let Some(mut c) = client.take() {
        let fd = c.as_raw_fd();
        let _ = poll.registry().deregister(&mut SourceFd(&fd));
        c.disconnect();
    }
    *wake = None;
}

/// What driving a bot needs from its thread.
struct Cx<'a> {
    poll: &'a Poll,
    timers: &'a mut BinaryHeap<Reverse<(Instant, usize)>>,
    rng: &'a mut SmallRng,
    shared: &'a Shared,
    idx: usize,
    think: Duration,
    draining: bool,
    tally: &'a mut Tally,
    client_config: &'a ClientConfig,
}

/// Runs bot `i`'s lobby session: reads it (when `readable`) and what is due, acts on what the
/// lobby says (an assignment starts the game client), notices a lost session, and queues the
/// lobby client's next wakeup.
fn drive_lobby(b: &mut Bot, i: usize, readable: bool, cx: &mut Cx<'_>) {
    let stats = &cx.shared.regions[cx.idx];
    let Some(l) = b.lobby.as_mut() else { return };
    let mut sink = [0u8; 0];
    let mut failed = false;
    loop {
        let got = if readable { l.recv_payload(&mut sink) } else { l.recv_due_payload(&mut sink) };
        match got {
            // The lobby sends messages, not payloads.
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    let mut msgs = Vec::new();
    while let Some(e) = l.poll_event() {
        if let ClientEvent::Message(m) = e {
            msgs.push(m);
        }
    }
    if matches!(b.state, BotState::LoggingIn) && l.is_connected() {
        b.state = BotState::Idle { until: Instant::now() };
    }
    let over = failed || l.state().is_final();
    if !over {
        schedule(cx.timers, &mut b.lobby_wake, l.next_wakeup(), i | LOBBY);
    }
    for m in msgs {
        match LobbyMsg::decode(&m) {
            Ok(m) => on_lobby_msg(b, i, m, cx),
            Err(_) => {
                stats.bad_packets.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if over {
        // The lobby session is gone (lobby restarted, timed out): log in again. A fight in
        // progress goes on; its result does not depend on the lobby.
        close(cx.poll, &mut b.lobby, &mut b.lobby_wake);
        b.pending = None;
        stats.lobby_lost.fetch_add(1, Ordering::Relaxed);
        if !matches!(b.state, BotState::Playing { .. }) {
            let now = Instant::now();
            b.state = if cx.draining { BotState::Done } else { BotState::Offline { until: now + RELOGIN } };
        }
    }
}

fn on_lobby_msg(b: &mut Bot, i: usize, m: LobbyMsg, cx: &mut Cx<'_>) {
    let stats = &cx.shared.regions[cx.idx];
    let now = Instant::now();
    match m {
        LobbyMsg::Assigned { match_id, region, token_head, .. } => {
            b.pending = Some((match_id, usize::from(region), token_head));
        }
        LobbyMsg::TokenTail { match_id, bytes } => {
            let Some((m, region, mut token)) = b.pending.take() else { return };
            if m != match_id || b.client.is_some() {
                // Still in another match: the assignment is stale; the server's connect
                // deadline frees the seat.
                return;
            }
            token.extend_from_slice(&bytes);
            let client = ConnectToken::from_bytes(&token)
                .map_err(pvp_net::game::GameClientError::from)
                .and_then(|t| GameClient::new(t, cx.client_config.clone()));
            let Ok(mut client) = client else {
                stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                b.state = BotState::Idle { until: now + cx.think };
                return;
            };
            let rtt = b.rtt.get(region).map_or(Duration::ZERO, |r| r.1);
            client.set_link_delay(rtt / 2);
            let fd = client.as_raw_fd();
            if cx.poll.registry().register(&mut SourceFd(&fd), Token(i), Interest::READABLE).is_err() {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                b.state = BotState::Idle { until: now + cx.think };
                return;
            }
            b.client = Some(client);
            b.state = BotState::Playing { match_id, assigned: now, connected: false };
            drive(b, i, true, cx);
        }
        LobbyMsg::AssignmentVoid { match_id } => {
            if !matches!(b.state, BotState::Playing { match_id: m, .. } if m == match_id) {
                return;
            }
            close(cx.poll, &mut b.client, &mut b.wake);
            stats.replaced.fetch_add(1, Ordering::Relaxed);
            cx.shared.record(crate::history::Event::Left {
                match_id: match_id.get(),
                player: player_id(cx.idx, i).get(),
            });
            b.state = if cx.draining { BotState::Done } else { BotState::Idle { until: now } };
        }
        LobbyMsg::TicketFailed => {
            if matches!(b.state, BotState::Queued { .. }) {
                b.state = BotState::Idle { until: now + cx.think };
            }
        }
        // Client-to-server messages from the lobby: not ours to act on.
        LobbyMsg::CreateTicket { .. } | LobbyMsg::CancelTicket => {
            stats.bad_packets.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs bot `i`'s client: reads its socket (when `readable`) and what is due, answers
/// snapshots, notices the end of the fight or of the session, and queues the client's next
/// wakeup.
fn drive(b: &mut Bot, i: usize, readable: bool, cx: &mut Cx<'_>) {
    let stats = &cx.shared.regions[cx.idx];
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
                    let input = skilled_input(b.skill, tick, cx.rng);
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
        cx.tally.connect_ms.push(now.duration_since(assigned).as_millis() as u64);
    }
    let state = c.state();
    let over = ended || failed || state.is_final();
    if !over {
        b.state = BotState::Playing { match_id, assigned, connected };
        schedule(cx.timers, &mut b.wake, c.next_wakeup(), i);
        return;
    }
    // The fight is over for this bot, one way or another.
    if ended || (connected && state == ClientState::Disconnected) {
        // The server ended it (the End, or its goodbye when the End was lost).
        stats.bot_matches.fetch_add(1, Ordering::Relaxed);
    } else if connected {
        // The session died mid-fight (server crashed or silent): queue again at once. The
        // player has left that match, whatever its (perhaps frozen) server still believes.
        stats.replaced.fetch_add(1, Ordering::Relaxed);
        cx.shared.record(crate::history::Event::Left {
            match_id: match_id.get(),
            player: player_id(cx.idx, i).get(),
        });
    } else {
        stats.connect_failures.fetch_add(1, Ordering::Relaxed);
    }
    close(cx.poll, &mut b.client, &mut b.wake);
    let rest =
        if ended || (connected && state == ClientState::Disconnected) { cx.think } else { Duration::ZERO };
    b.state = if cx.draining {
        BotState::Done
    } else if b.lobby.is_none() {
        // Its lobby session was lost during the fight: log in again first.
        BotState::Offline { until: now + rest }
    } else {
        BotState::Idle { until: now + rest }
    };
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
