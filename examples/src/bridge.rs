//! Multi-process mode: one region per process. The matchmaking leader (the process started
//! with `--leader`) runs the control plane for every region; the others connect to it over TCP
//! and forward their bots' tickets and their servers' match events, and receive the matches
//! to host and the assignments of their bots. Each process also reports its replica and what
//! its sync node heard, so every process can see the others' health and convergence.
//!
//! Frames: a u32 little-endian length, then a postcard-encoded [`BridgeMsg`] sealed for the
//! peer region ([`SealedLinks`] under the pair's "bridge" key): a connection from anyone
//! without the key is dropped at its first frame and counted, a frame altered or replayed on
//! the way ends the connection.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pvp_core::ids::{MatchId, PlayerId, RegionId};
use pvp_global::link::{LinkKey, SealedLinks};
use serde::{Deserialize, Serialize};

use crate::replica::ReplicaSummary;
use crate::session::{BotCommand, ControlEvent, RegionCommand, Shared, lock};

/// One region's status row: its replica summary, its hosted matches, and ms since it heard
/// each region (`None`: never).
type StatusRow = (usize, Option<ReplicaSummary>, u64, Vec<Option<u64>>);

/// What the leader hands back once every region joined.
type Joined = (Vec<SocketAddr>, Vec<std::thread::JoinHandle<()>>, Vec<TcpStream>);

/// Largest frame accepted.
const MAX_FRAME: usize = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum BridgeMsg {
    Hello {
        region: usize,
        game_addr: SocketAddr,
    },
    Control(ControlEvent),
    Region(RegionCommand),
    Assigned {
        player: PlayerId,
        match_id: MatchId,
        region: usize,
        server: SocketAddr,
        token: Vec<u8>,
    },
    TicketFailed {
        player: PlayerId,
    },
    AssignmentVoid {
        player: PlayerId,
        match_id: MatchId,
    },
    /// Per region: replica summary, hosted matches, and ms since it heard each region (None:
    /// never).
    Status(Vec<StatusRow>),
}

/// This process's sealed bridge ends: `own` with every other region as a peer, on the
/// "bridge" channel (its own keys: the sync channel's nonces are never reused here). One
/// instance seals (the writer thread), others only open (one per reader).
fn bridge_links(sh: &Shared, own: usize) -> SealedLinks {
    let ids: Vec<RegionId> = sh.config.regions.iter().map(|r| r.id).collect();
    let me = ids[own];
    let mut l = SealedLinks::new(me, sh.unix_ms(Instant::now()));
    for &p in ids.iter().filter(|&&p| p != me) {
        l.add_peer(p, LinkKey::derive(&sh.link_secret, me, p, "bridge"));
    }
    l
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

fn write_msg(w: &mut impl Write, seal: &mut SealedLinks, to: RegionId, m: &BridgeMsg) -> std::io::Result<()> {
    let b = postcard::to_allocvec(m).map_err(std::io::Error::other)?;
    let mut sealed = Vec::with_capacity(b.len() + pvp_global::link::OVERHEAD);
    seal.seal(to, &b, &mut sealed).map_err(invalid)?;
    w.write_all(&(sealed.len() as u32).to_le_bytes())?;
    w.write_all(&sealed)
}

/// The leader's first words on a connection: its region's name, unsealed.
fn write_preamble(w: &mut impl Write, me: RegionId) -> std::io::Result<()> {
    let name = me.as_str().as_bytes();
    w.write_all(&[name.len() as u8])?;
    w.write_all(name)?;
    w.flush()
}

fn read_preamble(r: &mut impl Read, ids: &[RegionId], own: usize) -> std::io::Result<RegionId> {
    let mut len = [0u8; 1];
    r.read_exact(&mut len)?;
    let mut name = vec![0u8; usize::from(len[0]).min(pvp_core::ids::MAX_NAME_LEN)];
    r.read_exact(&mut name)?;
    let id = std::str::from_utf8(&name)
        .ok()
        .and_then(|n| RegionId::new(n).ok())
        .ok_or_else(|| invalid("bad preamble"))?;
    if !ids.contains(&id) || ids.get(own) == Some(&id) {
        return Err(invalid("the leader named no other region"));
    }
    Ok(id)
}

/// The next frame, opened: its sender and message.
fn read_msg(r: &mut impl Read, open: &mut SealedLinks) -> std::io::Result<(RegionId, BridgeMsg)> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(invalid("frame too large"));
    }
    let mut b = vec![0u8; len];
    r.read_exact(&mut b)?;
    let mut plain = Vec::with_capacity(len);
    let from = open.open(&b, &mut plain).map_err(invalid)?;
    Ok((from, postcard::from_bytes(&plain).map_err(invalid)?))
}

/// The status rows this process knows: its own region, plus (leader) what others sent.
fn status(sh: &Shared, regions: &[usize]) -> BridgeMsg {
    let now = sh.start.elapsed().as_millis() as u64 + 1;
    let view = lock(&sh.replica_view).clone();
    let rows = regions
        .iter()
        // A row this process only relays goes on only while its region keeps reporting: a
        // dead process's last row must not keep the others waiting on its matches.
        .filter(|&&i| sh.status_fresh(i, now))
        .map(|&i| {
            let heard = sh.heard_ms[i]
                .iter()
                .map(|h| {
                    let h = h.load(Ordering::Relaxed);
                    (h > 0).then(|| now.saturating_sub(h))
                })
                .collect();
            (i, view.get(i).copied().flatten(), sh.regions[i].hosted.load(Ordering::Relaxed), heard)
        })
        .collect();
    BridgeMsg::Status(rows)
}

fn apply_status(sh: &Shared, rows: Vec<StatusRow>, own: usize) {
    let now = sh.start.elapsed().as_millis() as u64 + 1;
    for (i, summary, hosted, heard) in rows {
        if i == own || i >= sh.regions.len() {
            continue;
        }
        if let Some(v) = lock(&sh.replica_view).get_mut(i) {
            *v = summary;
        }
        if let Some(t) = sh.status_ms.get(i) {
            t.store(now, Ordering::Relaxed);
        }
        sh.regions[i].hosted.store(hosted, Ordering::Relaxed);
        for (j, age) in heard.into_iter().enumerate().take(sh.regions.len()) {
            if let Some(age) = age {
                sh.heard_ms[i][j].store(now.saturating_sub(age).max(1), Ordering::Relaxed);
            }
        }
    }
}

fn stopped(sh: &Shared) -> bool {
    sh.region_stop.load(Ordering::Acquire)
}

/// A connection's end: the session stops, or (`quit`) the leadership it serves ended.
fn over(sh: &Shared, quit: &AtomicBool) -> bool {
    stopped(sh) || quit.load(Ordering::Acquire)
}

/// One follower admitted: its region, its game address, its reader and writer threads.
type Admitted = (usize, SocketAddr, Vec<std::thread::JoinHandle<()>>);

/// Reads a follower's sealed hello on a fresh connection and, if it is one, starts the
/// connection's reader and writer. A stranger (or a stalled peer) is dropped and counted.
fn admit(
    sh: &Arc<Shared>,
    stream: TcpStream,
    own: usize,
    quit: &Arc<AtomicBool>,
) -> std::io::Result<Option<Admitted>> {
    let n = sh.regions.len();
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    // A stranger (or a stalled peer) must not hold up the others' joins.
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut opener = bridge_links(sh, own);
    if write_preamble(&mut (&stream), sh.config.regions[own].id).is_err() {
        return Ok(None);
    }
    let hello = read_msg(&mut reader, &mut opener);
    let Ok((from, BridgeMsg::Hello { region, game_addr })) = hello else {
        // Not sealed with a region's key, or not a hello: dropped input.
        sh.regions[own].link_refused.fetch_add(1, Ordering::Relaxed);
        return Ok(None);
    };
    if region >= n || region == own || sh.config.regions[region].id != from {
        sh.regions[own].bad_packets.fetch_add(1, Ordering::Relaxed);
        return Ok(None);
    }
    stream.set_read_timeout(None)?;
    // A re-join (the region's process restarted) replaces the old connection: its writer
    // stops at the next command, so commands never split over two connections.
    let generation = sh.bridge_gen[region].fetch_add(1, Ordering::AcqRel) + 1;
    lock(&sh.bridge_streams).push(stream.try_clone()?);
    let (sh_r, sh_w) = (sh.clone(), sh.clone());
    let (quit_r, quit_w) = (quit.clone(), quit.clone());
    sh.followers_open.fetch_add(1, Ordering::AcqRel);
    let rx = std::thread::Builder::new().name(format!("bridge-rx-{region}")).spawn(move || {
        while let Ok((peer, m)) = read_msg(&mut reader, &mut opener) {
            if peer != from {
                // Sealed by another region on this region's connection.
                break;
            }
            match m {
                BridgeMsg::Control(e) => sh_r.to_control.push(e),
                BridgeMsg::Status(rows) => apply_status(&sh_r, rows, own),
                _ => {}
            }
            if over(&sh_r, &quit_r) {
                break;
            }
        }
        sh_r.followers_open.fetch_sub(1, Ordering::AcqRel);
    })?;
    let mut writer = BufWriter::new(stream);
    let tx = std::thread::Builder::new().name(format!("bridge-tx-{region}")).spawn(move || {
        let all: Vec<usize> = (0..n).collect();
        let mut seal = bridge_links(&sh_w, own);
        serve_writer(&sh_w, &mut writer, &mut seal, region, &all, generation, &quit_w);
    })?;
    Ok(Some((region, game_addr, vec![rx, tx])))
}

/// Leader: accepts one connection per other region, then keeps accepting re-joins (a
/// region's process that was killed and started again) until the session stops. Returns
/// each region's game address once every region said hello (or an error after `wait`).
pub(crate) fn lead(
    sh: Arc<Shared>,
    listener: TcpListener,
    own: usize,
    own_game: SocketAddr,
    wait: Duration,
) -> std::io::Result<Joined> {
    let n = sh.regions.len();
    let mut addrs: Vec<Option<SocketAddr>> = vec![None; n];
    addrs[own] = Some(own_game);
    let mut threads = Vec::new();
    let deadline = Instant::now() + wait;
    listener.set_nonblocking(true)?;
    // A fixed leader leads until the session stops.
    let quit = Arc::new(AtomicBool::new(false));
    while addrs.iter().any(Option::is_none) {
        if Instant::now() > deadline {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "not every region connected"));
        }
        let (stream, _) = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some((region, game_addr, t)) = admit(&sh, stream, own, &quit)? {
            addrs[region] = Some(game_addr);
            threads.extend(t);
        }
    }
    threads.push(accept_loop(sh, listener, own, quit)?);
    Ok((addrs.into_iter().map(|a| a.unwrap_or(own_game)).collect(), threads, Vec::new()))
}

/// Keeps admitting followers (joins and re-joins) until the session stops or `quit` is
/// raised (an elected leader's term ended); then waits for the connections' threads, which
/// end with it.
pub(crate) fn accept_loop(
    sh: Arc<Shared>,
    listener: TcpListener,
    own: usize,
    quit: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new().name("bridge-accept".into()).spawn(move || {
        let mut admitted = Vec::new();
        while !over(&sh, &quit) {
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Ok(Some((_, _, t))) = admit(&sh, stream, own, &quit) {
                        admitted.extend(t);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        drop(listener);
        for t in admitted {
            let _ = t.join();
        }
    })
}

/// Forwards what the control plane queued for `region` (leader side).
fn serve_writer(
    sh: &Shared,
    w: &mut impl Write,
    seal: &mut SealedLinks,
    region: usize,
    status_rows: &[usize],
    generation: u64,
    quit: &AtomicBool,
) {
    let to = sh.config.regions[region].id;
    let mut regions = Vec::new();
    let mut bots = Vec::new();
    let mut last_status = Instant::now();
    while !over(sh, quit) && sh.bridge_gen[region].load(Ordering::Acquire) == generation {
        let mut busy = false;
        regions.clear();
        sh.to_region[region].pop_batch(&mut regions, 4_096);
        for c in regions.drain(..) {
            busy = true;
            if write_msg(w, seal, to, &BridgeMsg::Region(c)).is_err() {
                return;
            }
        }
        bots.clear();
        sh.to_bots[region].pop_batch(&mut bots, 4_096);
        for c in bots.drain(..) {
            busy = true;
            let m = match c {
                BotCommand::Assigned { player, match_id, region, server, token } => {
                    BridgeMsg::Assigned { player, match_id, region, server, token: token.into_vec() }
                }
                BotCommand::TicketFailed { player } => BridgeMsg::TicketFailed { player },
                BotCommand::AssignmentVoid { player, match_id } => {
                    BridgeMsg::AssignmentVoid { player, match_id }
                }
            };
            if write_msg(w, seal, to, &m).is_err() {
                return;
            }
        }
        if last_status.elapsed() >= Duration::from_millis(200) {
            last_status = Instant::now();
            if write_msg(w, seal, to, &status(sh, status_rows)).is_err() {
                return;
            }
        }
        if w.flush().is_err() {
            return;
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Follower: connects to the leader (retrying until `wait`), says hello, then forwards its
/// control events and takes its commands until the session stops or `quit` is raised (an
/// elected session follows another leader).
pub(crate) fn follow(
    sh: Arc<Shared>,
    leader: SocketAddr,
    own: usize,
    own_game: SocketAddr,
    wait: Duration,
    quit: Arc<AtomicBool>,
) -> std::io::Result<Follower> {
    let deadline = Instant::now() + wait;
    let attempt = wait.clamp(Duration::from_millis(100), Duration::from_secs(1));
    let stream = loop {
        match TcpStream::connect_timeout(&leader, attempt) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    stream.set_nodelay(true)?;
    // The leader's preamble must come soon; once joined, reads block until the stream shuts.
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut seal = bridge_links(&sh, own);
    let mut opener = bridge_links(&sh, own);
    let mut writer = BufWriter::new(stream.try_clone()?);
    let handle = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let sh_r = sh.clone();
    let ids: Vec<RegionId> = sh.config.regions.iter().map(|r| r.id).collect();
    // The leader names itself first (in the clear: a false name only makes this process
    // seal for a region the speaker cannot open, and the leader's own frames must then open
    // under that region's key).
    let leader_id = read_preamble(&mut reader, &ids, own)?;
    write_msg(&mut writer, &mut seal, leader_id, &BridgeMsg::Hello { region: own, game_addr: own_game })?;
    writer.flush()?;
    reader.get_ref().set_read_timeout(None)?;
    let quit_r = quit.clone();
    let rx = std::thread::Builder::new().name("bridge-rx".into()).spawn(move || {
        while let Ok((from, m)) = read_msg(&mut reader, &mut opener) {
            if from != leader_id {
                break;
            }
            match m {
                BridgeMsg::Region(c) => sh_r.to_region[own].push(c),
                BridgeMsg::Assigned { player, match_id, region, server, token } => {
                    sh_r.to_bots[own].push(BotCommand::Assigned {
                        player,
                        match_id,
                        region,
                        server,
                        token: token.into_boxed_slice(),
                    });
                }
                BridgeMsg::TicketFailed { player } => {
                    sh_r.to_bots[own].push(BotCommand::TicketFailed { player })
                }
                BridgeMsg::AssignmentVoid { player, match_id } => {
                    sh_r.to_bots[own].push(BotCommand::AssignmentVoid { player, match_id })
                }
                BridgeMsg::Status(rows) => apply_status(&sh_r, rows, own),
                _ => {}
            }
            if over(&sh_r, &quit_r) {
                break;
            }
        }
    })?;
    let tx = std::thread::Builder::new().name("bridge-tx".into()).spawn(move || {
        let mut events = Vec::new();
        let mut last_status = Instant::now();
        while !over(&sh, &quit) {
            events.clear();
            sh.to_control.pop_batch(&mut events, 4_096);
            let busy = !events.is_empty();
            for e in events.drain(..) {
                if write_msg(&mut writer, &mut seal, leader_id, &BridgeMsg::Control(e)).is_err() {
                    return;
                }
            }
            if last_status.elapsed() >= Duration::from_millis(200) {
                last_status = Instant::now();
                if write_msg(&mut writer, &mut seal, leader_id, &status(&sh, &[own])).is_err() {
                    return;
                }
            }
            if writer.flush().is_err() {
                return;
            }
            if !busy {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // The last word: this region's final summary. Without it the leader (and through it
        // every other region) keeps the one sent up to 200 ms before this process saw its
        // replicas converge, and reports them unconverged after this process is gone. It is
        // the region thread's last summary, taken after its last write: wait (bounded) for
        // that thread to finish (not when this bridge is only replaced by another leader's).
        if stopped(&sh) {
            let deadline = Instant::now() + Duration::from_millis(1_500);
            while lock(&sh.finished_replicas).get(own).is_some_and(Option::is_none)
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = write_msg(&mut writer, &mut seal, leader_id, &status(&sh, &[own]));
        let _ = writer.flush();
    })?;
    Ok(Follower { reader: rx, writer: tx, stream: handle })
}

/// A follower's bridge connection: its reader and writer threads, and the stream to shut.
pub(crate) struct Follower {
    pub(crate) reader: std::thread::JoinHandle<()>,
    /// Ends when the session stops, after sending the final status.
    pub(crate) writer: std::thread::JoinHandle<()>,
    pub(crate) stream: TcpStream,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversize_is_refused() {
        let (kr, jp): (RegionId, RegionId) = ("kr".parse().unwrap(), "jp".parse().unwrap());
        let key = LinkKey::derive(b"t", kr, jp, "bridge");
        let (mut a, mut b) = (SealedLinks::new(kr, 1), SealedLinks::new(jp, 2));
        a.add_peer(jp, key.clone());
        b.add_peer(kr, key);
        let mut buf = Vec::new();
        write_msg(&mut buf, &mut a, jp, &BridgeMsg::TicketFailed { player: PlayerId::new(3) }).unwrap();
        let (from, m) = read_msg(&mut buf.as_slice(), &mut b).unwrap();
        assert_eq!(from, kr);
        assert!(matches!(m, BridgeMsg::TicketFailed { player } if player == PlayerId::new(3)));
        // The same frame again (a replay), or with any byte changed: refused.
        assert!(read_msg(&mut buf.as_slice(), &mut b).is_err());
        buf.clear();
        write_msg(&mut buf, &mut a, jp, &BridgeMsg::TicketFailed { player: PlayerId::new(4) }).unwrap();
        for i in 4..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 1;
            assert!(read_msg(&mut bad.as_slice(), &mut b).is_err(), "byte {i}");
        }
        assert!(read_msg(&mut buf.as_slice(), &mut b).is_ok(), "refusals changed nothing");
        // An unsealed frame (what the bridge spoke before) is refused.
        let plain = postcard::to_allocvec(&BridgeMsg::TicketFailed { player: PlayerId::new(5) }).unwrap();
        let mut raw = (plain.len() as u32).to_le_bytes().to_vec();
        raw.extend_from_slice(&plain);
        assert!(read_msg(&mut raw.as_slice(), &mut b).is_err());
        let huge = (MAX_FRAME as u32 + 1).to_le_bytes();
        assert!(read_msg(&mut huge.as_slice(), &mut b).is_err());
        assert!(read_msg(&mut [1u8, 0, 0, 0, 200].as_slice(), &mut b).is_err());
        // The preamble names another region of the config, never this one.
        let ids = [kr, jp];
        let mut p = Vec::new();
        write_preamble(&mut p, kr).unwrap();
        assert_eq!(read_preamble(&mut p.as_slice(), &ids, 1).unwrap(), kr);
        assert!(read_preamble(&mut p.as_slice(), &ids, 0).is_err());
        assert!(read_preamble(&mut [2u8, b'X', b'Y'].as_slice(), &ids, 1).is_err());
    }
}
