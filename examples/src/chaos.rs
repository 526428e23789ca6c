//! The failover experiment: under bot load, cut one region's backbone (every sync link to and
//! from it, through the fault proxies) with the [`ChaosEngine`], write bans on both sides of
//! the cut, heal, and check the targets; then crash game servers mid-match and check their
//! players are placed again.
//!
//! What the partition does here: the region's game servers keep running and its players keep
//! reaching the matchmaking front over their own internet paths; what is cut is the backbone
//! between regions, so the control plane stops hearing the region (a region is heard when any
//! other region's sync node heard it), marks it Down after the health policy's silence
//! (1.5 s), and new matches of its players go to the next region within their latency limit.

use std::time::{Duration, Instant};

use pvp_core::ids::{PlayerId, RegionId};
use pvp_ops::chaos::{
    ChaosEngine, ChaosError, CrashInjector, CrashTarget, ExperimentConfig, ExperimentReport, Fault,
    FaultError, FaultKind, LinkFaultInjector,
};

use crate::SessionConfig;
use crate::report::Report;
use crate::session::{RunningSession, SessionError, SessionHandle};

/// Settings of the failover run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FailoverConfig {
    /// The session under load (its `duration_secs` is ignored: the run takes as long as the
    /// experiments).
    pub session: SessionConfig,
    /// The region cut off.
    pub region: RegionId,
    /// Load before the first fault.
    pub warmup: Duration,
    /// How long the partition lasts.
    pub partition: Duration,
    /// Most time allowed between the cut and the first match of the region's players placed
    /// elsewhere.
    pub reroute_target: Duration,
    /// Bans written on each side of the cut while it lasts.
    pub bans_per_side: u32,
    /// Game servers crashed (those hosting matches) in the crash experiment.
    pub crash_servers: usize,
}

impl FailoverConfig {
    /// Korea cut for 10 s after 3 s of load, 5 s reroute target, 5 bans per side, 2 servers
    /// crashed.
    pub fn new(session: SessionConfig) -> Self {
        let region = session
            .regions
            .first()
            .map_or_else(|| RegionId::new("kr").unwrap_or_else(|_| unreachable!()), |r| r.id);
        Self {
            session,
            region,
            warmup: Duration::from_secs(3),
            partition: Duration::from_secs(10),
            reroute_target: Duration::from_secs(5),
            bans_per_side: 5,
            crash_servers: 2,
        }
    }
}

/// Why the run could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FailoverError {
    /// The session did not start.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// An experiment could not run.
    #[error(transparent)]
    Chaos(#[from] ChaosError),
    /// The config names no region to cut, or one with no peer.
    #[error("the cut region must be one of at least two regions")]
    BadRegion,
    /// The load never reached a steady state (no match finished during the warm-up).
    #[error("no match finished during the warm-up")]
    NoLoad,
}

/// One target of the run and whether it was met.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Target {
    /// What was required.
    pub what: String,
    /// What was measured.
    pub measured: String,
    /// Met.
    pub met: bool,
}

/// The outcome of the failover run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FailoverOutcome {
    /// The partition experiment as the ChaosEngine reports it.
    pub partition: ExperimentReport,
    /// The crash experiment.
    pub crash: ExperimentReport,
    /// Time from the cut to the first match of the region's players placed elsewhere.
    pub reroute_time: Option<Duration>,
    /// Health transitions the control plane made.
    pub transitions:
        Vec<(Duration, RegionId, pvp_global::failover::RegionHealth, pvp_global::failover::RegionHealth)>,
    /// The failover's decisions (time since the session started, what).
    pub decisions: Vec<(Duration, String)>,
    /// Every target.
    pub targets: Vec<Target>,
    /// The session's final report.
    pub report: Report,
}

impl FailoverOutcome {
    /// Every target met and both experiments passed.
    pub fn passed(&self) -> bool {
        self.partition.passed && self.crash.passed && self.targets.iter().all(|t| t.met)
    }
}

fn print_experiment(f: &mut std::fmt::Formatter<'_>, name: &str, r: &ExperimentReport) -> std::fmt::Result {
    writeln!(f, "== experiment: {name} ==")?;
    writeln!(f, "hypothesis     {}", r.hypothesis)?;
    writeln!(
        f,
        "passed         {} (checks {}, failed {}, recovery time {})",
        r.passed,
        r.checks,
        r.failed_checks,
        r.recovery_time.map_or_else(|| "none".to_string(), |t| format!("{:.2} s", t.as_secs_f64()))
    )?;
    if let Some(a) = &r.aborted {
        writeln!(f, "aborted        {a}")?;
    }
    for o in &r.observations {
        writeln!(f, "  {:>7.2} s    {}", o.at.as_secs_f64(), o.what)?;
    }
    for rec in &r.recommendations {
        writeln!(f, "  recommend    {rec}")?;
    }
    Ok(())
}

impl std::fmt::Display for FailoverOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        print_experiment(f, "partition", &self.partition)?;
        for (at, r, from, to) in &self.transitions {
            writeln!(
                f,
                "  health       {r}: {from:?} -> {to:?} at {:.2} s of the session",
                at.as_secs_f64()
            )?;
        }
        for (at, what) in &self.decisions {
            writeln!(f, "  failover     {what} at {:.2} s of the session", at.as_secs_f64())?;
        }
        print_experiment(f, "server crash", &self.crash)?;
        writeln!(f, "== targets ==")?;
        for t in &self.targets {
            writeln!(f, "[{}] {}: {}", if t.met { "met" } else { "MISSED" }, t.what, t.measured)?;
        }
        writeln!(f, "{}", self.report)?;
        write!(f, "failover run {}", if self.passed() { "PASSED" } else { "FAILED" })
    }
}

struct Crasher {
    handle: SessionHandle,
    region: RegionId,
    count: usize,
}

impl CrashTarget for Crasher {
    fn knows(&self, target: &str) -> bool {
        target == format!("{}-servers", self.region)
    }
    fn crash(&mut self, _: &str) -> Result<(), FaultError> {
        if self.handle.crash_servers(self.region, self.count) {
            Ok(())
        } else {
            Err(FaultError::UnknownTarget(self.region.to_string()))
        }
    }
    fn restore(&mut self, _: &str) -> Result<(), FaultError> {
        // Crashed servers stay dead; the fleet starts replacements by itself.
        Ok(())
    }
}

fn wait_until(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Runs the partition and crash experiments under load and checks the targets.
pub fn run_failover(cfg: FailoverConfig) -> Result<FailoverOutcome, FailoverError> {
    let cut = cfg.region;
    if cfg.session.regions.len() < 2 || cfg.session.region_index(cut).is_none() {
        return Err(FailoverError::BadRegion);
    }
    let others: Vec<RegionId> = cfg.session.regions.iter().map(|r| r.id).filter(|r| *r != cut).collect();
    let mut session_cfg = cfg.session.clone();
    session_cfg.duration_secs = 0.0;
    let session = RunningSession::start(session_cfg)?;
    let handle = session.handle();
    std::thread::sleep(cfg.warmup);
    if !wait_until(Duration::from_secs(10), || {
        handle.matches_finished() > 0 && session.sync_links_fresh(Duration::from_secs(1))
    }) {
        let _ = session.finish();
        return Err(FailoverError::NoLoad);
    }

    // Partition: every sync link to or from the region, both directions.
    let mut links = LinkFaultInjector::new(Duration::from_millis(500));
    for l in session.sync_links() {
        if l.from == cut || l.to == cut {
            links = links.with_link(cut.to_string(), l.control.clone());
        }
    }
    let mut engine = ChaosEngine::new(ExperimentConfig {
        check_interval: Duration::from_millis(100),
        recovery_timeout: Duration::from_secs(20),
        recovery_target: Duration::from_secs(5),
        // Every check states the hypothesis for its phase (see the closures below): a single
        // failed check fails the experiment.
        tolerated_failures: 0,
        abort_conditions: Vec::new(),
    });
    engine.register(links);
    engine.register(CrashInjector::new(Crasher {
        handle: handle.clone(),
        region: cut,
        count: cfg.crash_servers,
    }));
    let fault = Fault::new(FaultKind::NetworkPartition, cut.to_string(), cfg.partition, 1.0)
        .map_err(|e| ChaosError::Inject { description: "partition".into(), source: e })?
        .with_description(format!("partition {cut} from {others:?} for {:?}", cfg.partition));
    let mut written_bans: Vec<PlayerId> = Vec::new();
    let mut bans_left = cfg.bans_per_side;
    let started = Instant::now();
    let mut watching = false;
    let mut injected_at = Instant::now();
    let mut progress = (Instant::now(), handle.matches_finished());
    let ban_side = others.first().copied().unwrap_or(cut);
    let other_idx: Vec<RegionId> = others.clone();
    let partition = engine.run_experiment(
        &format!(
            "with {cut} cut off, its players' new matches move to another region within {:?}; after the heal every region hears every other and {cut}, caught up, serves again",
            cfg.reroute_target
        ),
        vec![fault],
        || {
            if !watching {
                // The first check runs right before the injection.
                watching = true;
                injected_at = Instant::now();
                session.watch_reroute(cut);
            } else if started.elapsed() > Duration::from_millis(200) && bans_left > 0 {
                // Write bans on both sides of the cut while it lasts.
                let k = u64::from(cfg.bans_per_side - bans_left);
                let a = PlayerId::new(900_000_000 + k);
                let b = PlayerId::new(950_000_000 + k);
                handle.ban(cut, a);
                handle.ban(ban_side, b);
                written_bans.extend([a, b]);
                bans_left -= 1;
            }
            // Matches keep finishing somewhere, at every moment of the run.
            let now = (Instant::now(), handle.matches_finished());
            let finishing = now.1 > progress.1 || now.0.duration_since(progress.0) < Duration::from_millis(1_500);
            if now.1 > progress.1 {
                progress = now;
            }
            let others_serve = other_idx.iter().all(|r| session.region_serving(*r));
            let since = injected_at.elapsed();
            if since < cfg.partition {
                // Cut off: the other regions serve, and once the reroute deadline passed, the
                // cut region's players have been placed elsewhere.
                finishing && others_serve && (since < cfg.reroute_target || session.reroute_time().is_some())
            } else {
                // Healed: every region hears every other, and the cut region serves again.
                finishing
                    && others_serve
                    && session.region_serving(cut)
                    && handle.sync_links_fresh(Duration::from_secs(1))
            }
        },
    );
    let partition = partition?;
    let reroute_time = session.reroute_time();
    let transitions = session.health_transitions();
    let decisions = session.failover_decisions();

    // Crash game servers mid-match, once the region hosts matches again.
    wait_until(Duration::from_secs(10), || handle.hosted_matches(cut) >= cfg.crash_servers as u64);
    let replaced_before = handle.players_replaced();
    let finished_before = handle.matches_finished();
    let crash_fault =
        Fault::new(FaultKind::ServerCrash, format!("{cut}-servers"), Duration::from_secs(1), 1.0)
            .map_err(|e| ChaosError::Inject { description: "crash".into(), source: e })?
            .with_description(format!("crash {} game servers of {cut} mid-match", cfg.crash_servers));
    let h2 = handle.clone();
    let mut last = (Instant::now(), h2.matches_finished());
    let crash = engine.run_experiment(
        "players of crashed game servers are placed in new matches; matches keep finishing",
        vec![crash_fault],
        || {
            let now = (Instant::now(), h2.matches_finished());
            let ok = now.1 > last.1 || now.0.duration_since(last.0) < Duration::from_millis(1_500);
            if now.1 > last.1 {
                last = now;
            }
            ok
        },
    )?;
    // Players of the lost matches notice the silence after the connect timeout, then play again.
    let per_match = u64::from(cfg.session.match_players());
    let replaced_ok = wait_until(Duration::from_millis(cfg.session.connect_timeout_ms * 3), || {
        let lost = handle.crashed_matches();
        lost > 0 && handle.players_replaced() - replaced_before >= lost * per_match
    });
    let replaced = handle.players_replaced() - replaced_before;
    let replayed = wait_until(Duration::from_secs(5), || handle.matches_finished() > finished_before + 10);
    let report = session.finish();

    let bans_ok =
        report.regions.iter().all(|r| r.replica.is_some_and(|s| s.bans >= written_bans.len() as u64));
    let targets = vec![
        Target {
            what: format!("new matches of {cut} players rerouted within {:?}", cfg.reroute_target),
            measured: reroute_time.map_or_else(|| "never".into(), |t| format!("{:.2} s", t.as_secs_f64())),
            met: reroute_time.is_some_and(|t| t <= cfg.reroute_target),
        },
        Target {
            what: "0 lost match results".into(),
            measured: format!(
                "{} lost, {} results in every replica",
                report.lost_results, report.matches_finished
            ),
            met: report.lost_results == 0 && report.converged,
        },
        Target {
            what: "0 lost bans".into(),
            measured: format!(
                "{} written during the cut; held: {}",
                written_bans.len(),
                report
                    .regions
                    .iter()
                    .map(|r| format!("{} {}", r.region, r.replica.map_or(0, |s| s.bans)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            met: bans_ok && !written_bans.is_empty(),
        },
        Target {
            what: "leaderboard converged after the heal".into(),
            measured: if report.converged {
                "every replica's digest equal".into()
            } else {
                "digests differ".into()
            },
            met: report.converged,
        },
        Target {
            what: "players of crashed servers re-placed".into(),
            measured: format!(
                "{} matches lost ({} players), {} players queued again, matches kept finishing: {}",
                report.crashed_matches,
                report.crashed_matches * per_match,
                replaced,
                replayed
            ),
            met: report.crashed_matches > 0 && replaced_ok && replayed,
        },
    ];
    Ok(FailoverOutcome { partition, crash, reroute_time, transitions, decisions, targets, report })
}
