//! The matchmaking leader elected on etcd (multi-process mode with
//! [`etcd_endpoints`](crate::SessionConfig::etcd_endpoints)).
//!
//! Every process runs one election thread. It holds a lease on the etcd cluster
//! ([`LEASE_TTL`], renewed every [`TICK`]), announces its region under it, and campaigns for
//! the [`JOB`] job. The winner:
//!
//! 1. takes the next **term** by compare-and-set on the record `matchmaking/term` (terms
//!    only grow, and no two winners get the same one);
//! 2. publishes the record `matchmaking/leader` (`{"region", "term", "control", "fleet"}`),
//!    written only over a record of an older term;
//! 3. listens on its own control address (TCP, the bridge) and on a fresh UDP port for the
//!    servers' heartbeats, and runs a control plane whose commands carry the term. Its match
//!    ids start at `term << 40`, so no two terms ever use the same one.
//!
//! The others read the leader record every tick. On a newer term they re-point their bridge
//! and their servers' heartbeats at the new leader, drain the servers the old leader started
//! (their matches finish and are recorded; the new leader's fleet controller starts its own)
//! and tell their queued players to ask again.
//!
//! **Fencing.** A leader acts only while its lease cannot yet have expired at the cluster
//! ([`lease_believed_valid`](pvp_global::coord::Coordinator::lease_believed_valid):
//! measured from the *sending* of the last renewal). Its control plane checks that before
//! every pass and again before it hands out seats, and stops at the first failure. A region
//! refuses to host a match whose term is older than the newest it knows, so even a leader
//! frozen mid-pass and thawed after a takeover cannot seat anyone.
//!
//! What this does not do yet (issue 15): the ratings book, the routing table, drain records
//! and the failover state are not kept in etcd. A new leader starts them afresh (ratings from
//! the players' replicated profiles are not read back), so a takeover resets the autoscaler
//! and the failover planner's view.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pvp_core::ids::RegionId;
use pvp_global::coord::{
    CasOutcome, CoordError, Coordinator, EtcdCoordinator, EtcdCoordinatorConfig, Expected, LeaseId,
};
use serde::{Deserialize, Serialize};

use crate::bridge::Follower;
use crate::control::{ControlOutcome, ControlPlane};
use crate::session::{RegionCommand, Shared, lock};

/// The lease every process holds: a leader whose process dies (or loses the cluster) is
/// replaced about this long after its last renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(2);

/// How often the election thread renews its lease, campaigns and reads the leader record.
pub const TICK: Duration = Duration::from_millis(200);

/// The etcd job the processes campaign for.
pub const JOB: &str = "matchmaking";

const TERM_RECORD: &str = "matchmaking/term";
const LEADER_RECORD: &str = "matchmaking/leader";

/// The leader record: who leads, in which term, where it listens for the bridge (TCP), and
/// where its fleet controller takes heartbeats (UDP, a fresh port each term: a server of an
/// earlier term, draining, still heartbeats to the old one and never reaches this term's
/// controller, whose server ids start over).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LeaderRecord {
    region: String,
    term: u64,
    control: SocketAddr,
    fleet: SocketAddr,
}

/// An elected leader's right to act: its term, and until when its lease is believed valid
/// (extended by the election thread after each acknowledged renewal).
#[derive(Debug)]
pub(crate) struct Fence {
    term: u64,
    origin: Instant,
    /// µs after `origin` until which the lease is believed valid.
    valid_until_us: AtomicU64,
    stop: AtomicBool,
}

impl Fence {
    fn new(term: u64, valid_until: Instant) -> Self {
        let origin = Instant::now();
        let f = Fence { term, origin, valid_until_us: AtomicU64::new(0), stop: AtomicBool::new(false) };
        f.extend(valid_until);
        f
    }

    /// The term this leadership holds.
    pub(crate) fn term(&self) -> u64 {
        self.term
    }

    /// Whether the leader may still act: not stopped, and its lease still believed valid.
    pub(crate) fn holds(&self) -> bool {
        let now = self.origin.elapsed().as_micros() as u64;
        !self.stop.load(Ordering::Acquire) && now < self.valid_until_us.load(Ordering::Acquire)
    }

    fn extend(&self, valid_until: Instant) {
        let us = valid_until.saturating_duration_since(self.origin).as_micros() as u64;
        self.valid_until_us.fetch_max(us, Ordering::AcqRel);
    }

    fn end(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// What the election thread hands back at the end of the session.
pub(crate) struct Ended {
    /// The control plane's outcome of this process's last term as leader, if it led.
    pub(crate) outcome: Option<ControlOutcome>,
    /// The bridge to the leader this process follows at the end, if any.
    pub(crate) following: Option<Follower>,
}

/// This process's part in the election.
struct Candidate {
    sh: Arc<Shared>,
    own: usize,
    me: RegionId,
    /// Where this process listens while it leads.
    control: SocketAddr,
    /// This region's sync address (its hello to a leader).
    own_sync: SocketAddr,
}

struct Leading {
    fence: Arc<Fence>,
    control: JoinHandle<ControlOutcome>,
    accept: JoinHandle<()>,
    quit: Arc<AtomicBool>,
}

struct Following {
    term: u64,
    record: LeaderRecord,
    bridge: Option<(Follower, Arc<AtomicBool>)>,
}

/// Starts the election thread of a multi-process session with `etcd_endpoints`.
pub(crate) fn spawn(
    sh: Arc<Shared>,
    own: usize,
    control: SocketAddr,
    own_sync: SocketAddr,
) -> std::io::Result<JoinHandle<Ended>> {
    let me = sh.config.regions[own].id;
    let c = Candidate { sh, own, me, control, own_sync };
    std::thread::Builder::new().name("election".into()).spawn(move || {
        // One worker runs the etcd client's background tasks while this thread blocks (in
        // joins, connects) between its awaits.
        let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
            Ok(rt) => rt,
            Err(_) => {
                c.sh.regions[own].errors.fetch_add(1, Ordering::Relaxed);
                return Ended { outcome: None, following: None };
            }
        };
        rt.block_on(c.run())
    })
}

impl Candidate {
    fn log(&self, what: String) {
        // The fault schedules measure takeovers from these lines (wall clock: hosts share it).
        println!("election: {what} at unix_ms {}", crate::history::unix_ms());
        lock(&self.sh.election_log).push((self.sh.start.elapsed(), what));
    }

    fn ending(&self) -> bool {
        self.sh.control_stop.load(Ordering::Acquire)
    }

    async fn connect(&self) -> Option<EtcdCoordinator> {
        let cfg = EtcdCoordinatorConfig::new(self.sh.config.etcd_endpoints.clone())
            .with_namespace(format!("pvp/{}/", self.sh.config.seed))
            .with_connect_timeout(Duration::from_secs(2))
            .with_op_timeout(Duration::from_millis(800));
        while !self.ending() {
            match EtcdCoordinator::connect(cfg.clone()).await {
                Ok(c) => return Some(c),
                Err(_) => tokio::time::sleep(TICK).await,
            }
        }
        None
    }

    async fn run(self) -> Ended {
        let Some(coord) = self.connect().await else { return Ended { outcome: None, following: None } };
        let mut lease: Option<LeaseId> = None;
        let mut leading: Option<Leading> = None;
        let mut following: Option<Following> = None;
        let mut outcome = None;
        while !self.ending() {
            let tick = Instant::now();
            lease = self.renew(&coord, lease).await;
            if let Some(l) = &leading {
                let valid = lease.is_some_and(|id| coord.lease_believed_valid(id));
                if let (true, Some(until)) = (valid, lease.and_then(|id| coord.lease_valid_until(id))) {
                    l.fence.extend(until);
                }
                // (At the session's end the control plane stops too: that is no demotion.)
                if !valid || (l.control.is_finished() && !self.ending()) {
                    let term = l.fence.term();
                    let why =
                        if valid { "its control plane stopped" } else { "lease no longer believed valid" };
                    let ended = self.demote(leading.take());
                    let why = if ended.is_none() { "its control plane panicked" } else { why };
                    outcome = ended.or(outcome);
                    self.log(format!("{} ends term {term} ({why})", self.me));
                }
            } else if let Some(id) = lease.filter(|id| coord.lease_believed_valid(*id)) {
                // A session that drains does not take over: it is ending.
                if !self.sh.draining.load(Ordering::Acquire) {
                    if let Ok(won) = coord.campaign(JOB, self.me, id).await {
                        if won.won {
                            leading = self.take_over(&coord, id, &mut following).await;
                        }
                    }
                }
            }
            if leading.is_none() {
                self.follow(&coord, &mut following).await;
            }
            tokio::time::sleep(TICK.saturating_sub(tick.elapsed())).await;
        }
        if let Some(l) = leading.take() {
            outcome = self.demote(Some(l)).or(outcome);
        }
        if let Some(id) = lease {
            let _ = coord.revoke_lease(id).await;
        }
        Ended { outcome, following: following.and_then(|f| f.bridge).map(|(b, _)| b) }
    }

    /// Keeps the lease alive, or gets (and announces under) a new one when it is gone.
    async fn renew(&self, coord: &EtcdCoordinator, lease: Option<LeaseId>) -> Option<LeaseId> {
        if let Some(id) = lease {
            match coord.keep_alive(id).await {
                Ok(_) => return Some(id),
                // Expired: everything under it is gone; start over with a new one.
                Err(CoordError::LeaseNotFound(_)) => {}
                // No quorum or unreachable: keep trying; the belief runs out by itself.
                Err(_) => return Some(id),
            }
        }
        let id = coord.grant_lease(LEASE_TTL).await.ok()?;
        if coord.announce_region(self.me, id).await.is_err() {
            let _ = coord.revoke_lease(id).await;
            return None;
        }
        Some(id)
    }

    /// The next term, by compare-and-set (a few tries when others race for it).
    async fn next_term(&self, coord: &EtcdCoordinator) -> Option<u64> {
        for _ in 0..5 {
            let current = coord.read_record(TERM_RECORD).await.ok()?;
            let (expected, term) = match &current {
                None => (Expected::Absent, 1),
                Some(r) => {
                    let t: u64 = std::str::from_utf8(&r.value).ok()?.parse().ok()?;
                    (Expected::Version(r.version), t + 1)
                }
            };
            if let CasOutcome::Applied { .. } =
                coord.compare_and_set(TERM_RECORD, expected, term.to_string().into_bytes()).await.ok()?
            {
                return Some(term);
            }
        }
        None
    }

    async fn read_leader(coord: &EtcdCoordinator) -> Option<(LeaderRecord, u64)> {
        let r = coord.read_record(LEADER_RECORD).await.ok()??;
        Some((serde_json::from_slice(&r.value).ok()?, r.version))
    }

    /// Won the campaign: takes a term, publishes the leader record and starts leading.
    async fn take_over(
        &self,
        coord: &EtcdCoordinator,
        lease: LeaseId,
        following: &mut Option<Following>,
    ) -> Option<Leading> {
        // A win on a lease about to run out (renewals failing while the cluster elects its own
        // leader) would end at once: wait for a renewal instead of burning a term.
        let left = coord.lease_valid_until(lease)?.saturating_duration_since(Instant::now());
        if left < LEASE_TTL / 2 {
            return None;
        }
        let term = self.next_term(coord).await?;
        // The fleet socket first: its port goes into the record.
        let fleet = match UdpSocket::bind(SocketAddr::new(self.control.ip(), 0)) {
            Ok(f) => f,
            Err(_) => {
                self.sh.regions[self.own].errors.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        let fleet_addr = fleet.local_addr().ok()?;
        let record =
            LeaderRecord { region: self.me.to_string(), term, control: self.control, fleet: fleet_addr };
        let value = serde_json::to_vec(&record).ok()?;
        let expected = match Self::read_leader(coord).await {
            // A newer leader published already: this win is stale.
            Some((r, _)) if r.term > term => return None,
            Some((_, version)) => Expected::Version(version),
            None => match coord.read_record(LEADER_RECORD).await.ok()? {
                // A record that does not decode is replaced.
                Some(r) => Expected::Version(r.version),
                None => Expected::Absent,
            },
        };
        if !matches!(
            coord.compare_and_set(LEADER_RECORD, expected, value).await.ok()?,
            CasOutcome::Applied { .. }
        ) {
            return None;
        }
        let valid_until = coord.lease_valid_until(lease).filter(|_| coord.lease_believed_valid(lease))?;
        // The old leader's bridge would take this process's control events: it goes first.
        if let Some(f) = following.take() {
            close_bridge(f.bridge);
        }
        match self.promote(term, valid_until, fleet) {
            Ok(l) => {
                self.sh.record(crate::history::Event::Leads { term });
                self.log(format!("{} leads term {term}", self.me));
                Some(l)
            }
            Err(e) => {
                self.sh.regions[self.own].errors.fetch_add(1, Ordering::Relaxed);
                self.log(format!("{} won term {term} but cannot lead: {e}", self.me));
                let _ = coord.resign(JOB, lease).await;
                None
            }
        }
    }

    fn promote(
        &self,
        term: u64,
        valid_until: Instant,
        fleet: UdpSocket,
    ) -> Result<Leading, crate::session::SessionError> {
        let sh = &self.sh;
        let listener = TcpListener::bind(self.control)?;
        self.new_leader(term, fleet.local_addr()?);
        // What an earlier term of this process left for the other regions is void.
        for j in (0..sh.regions.len()).filter(|&j| j != self.own) {
            let mut stale = Vec::new();
            sh.to_region[j].pop_batch(&mut stale, usize::MAX);
            let mut stale = Vec::new();
            sh.to_bots[j].pop_batch(&mut stale, usize::MAX);
        }
        let fence = Arc::new(Fence::new(term, valid_until));
        let mm = crate::session::matchmaker(&sh.config, term)?;
        let plane = ControlPlane::new(sh.clone(), mm, fleet, crate::session::metrics_registry())
            .with_fence(fence.clone());
        let control = std::thread::Builder::new().name("control".into()).spawn(move || plane.run())?;
        let quit = Arc::new(AtomicBool::new(false));
        let accept = crate::bridge::accept_loop(sh.clone(), listener, self.own, quit.clone())?;
        Ok(Leading { fence, control, accept, quit })
    }

    /// Ends a leadership: the control plane stops (its outcome is kept), the bridge stops
    /// accepting and its connections close (the followers find the next leader).
    fn demote(&self, leading: Option<Leading>) -> Option<ControlOutcome> {
        let l = leading?;
        l.fence.end();
        l.quit.store(true, Ordering::Release);
        let outcome = l.control.join().ok();
        for s in lock(&self.sh.bridge_streams).drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        let _ = l.accept.join();
        outcome
    }

    /// What every process does when a new term starts (led by itself or another): newer
    /// terms fence older ones, the servers report to the new fleet controller, and the
    /// region's servers and queued tickets of the old term go.
    fn new_leader(&self, term: u64, fleet: SocketAddr) {
        let sh = &self.sh;
        sh.term.fetch_max(term, Ordering::AcqRel);
        *lock(&sh.fleet_addr) = fleet;
        sh.to_region[self.own].push(RegionCommand::NewLeader { term });
        sh.requeue[self.own].fetch_add(1, Ordering::AcqRel);
    }

    /// Follows the leader record: a newer term re-points this process; a broken bridge is
    /// connected again.
    async fn follow(&self, coord: &EtcdCoordinator, following: &mut Option<Following>) {
        let Some((record, _)) = Self::read_leader(coord).await else { return };
        if record.region == self.me.as_str() {
            // This process's own record of a term it no longer leads: wait for the next.
            return;
        }
        let newer = following.as_ref().is_none_or(|f| record.term > f.term);
        if newer && record.term >= self.sh.term.load(Ordering::Acquire) {
            if let Some(f) = following.take() {
                close_bridge(f.bridge);
            }
            self.new_leader(record.term, record.fleet);
            self.log(format!("{} follows {} (term {})", self.me, record.region, record.term));
            *following = Some(Following { term: record.term, record: record.clone(), bridge: None });
        }
        let Some(f) = following.as_mut() else { return };
        let broken = f.bridge.as_ref().is_none_or(|(b, _)| b.reader.is_finished());
        if broken && !self.ending() {
            close_bridge(f.bridge.take());
            let quit = Arc::new(AtomicBool::new(false));
            let to = f.record.control;
            let (sh, own, sync) = (self.sh.clone(), self.own, self.own_sync);
            // A blocking connect (bounded): the runtime's worker runs the etcd client meanwhile.
            if let Ok(b) = crate::bridge::follow(sh, to, own, sync, Duration::from_millis(300), quit.clone())
            {
                f.bridge = Some((b, quit));
            }
        }
    }
}

/// Closes a follower bridge: its threads stop, the connection shuts.
fn close_bridge(bridge: Option<(Follower, Arc<AtomicBool>)>) {
    if let Some((b, quit)) = bridge {
        quit.store(true, Ordering::Release);
        let _ = b.stream.shutdown(std::net::Shutdown::Both);
        let _ = b.reader.join();
        let _ = b.writer.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_holds_until_its_lease_belief_runs_out_or_it_ends() {
        let f = Fence::new(3, Instant::now() + Duration::from_secs(60));
        assert_eq!(f.term(), 3);
        assert!(f.holds());
        // A later renewal never shortens the belief.
        f.extend(Instant::now());
        assert!(f.holds());
        f.end();
        assert!(!f.holds());
        let past = Fence::new(1, Instant::now());
        assert!(!past.holds(), "a belief that already ran out never holds");
    }

    #[test]
    fn leader_records_round_trip_as_json() {
        let r = LeaderRecord {
            region: "kr".into(),
            term: 7,
            control: "127.0.0.1:7301".parse().unwrap(),
            fleet: "127.0.0.1:40001".parse().unwrap(),
        };
        let b = serde_json::to_vec(&r).unwrap();
        assert_eq!(serde_json::from_slice::<LeaderRecord>(&b).unwrap(), r);
        assert!(serde_json::from_slice::<LeaderRecord>(b"{\"region\":1}").is_err());
    }
}
