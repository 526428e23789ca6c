//! Korea, Japan and Singapore on their own hosts: one network namespace each on a router
//! whose user-space shaper carries the backbone round trips (`pvp_ops::hosts`), the main
//! job's `multi-region` binary in each (one region per process, `--net-delay`), bots on load,
//! and a seeded schedule of host-level faults: kill -9 and restart, SIGSTOP and SIGCONT, a
//! host cut off, a link cut one way, added delay, loss.
//!
//! `cargo run --release -p pvp-examples --bin multi-host -- --seed 7` (root: it makes
//! network namespaces; needs `ip` and /dev/net/tun).
//!
//! With `--leader elected` a 3-member etcd cluster runs too, each member on its own host
//! (e1 beside kr, e2 beside jp, e3 beside sg: their links carry the backbone RTTs), the
//! regions elect the matchmaking leader on it (`--etcd`), and the schedule can also kill or
//! freeze whichever region leads at that moment and kill an etcd member. With the default
//! `--leader fixed`, kr leads (`--leader`) and is never faulted.
//!
//! Not built yet (issue 15): a killed region restarts with an empty replica that its peers
//! repair (no snapshot is read back).
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pvp_examples::SessionConfig;
use pvp_ops::FaultInjector;
use pvp_ops::chaos::{Fault, FaultKind};
use pvp_ops::hosts::{HostFaults, HostNet};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const HELP: &str = "multi-host: kr, jp and sg on their own hosts with a seeded fault schedule

  --players N     bots over the three regions (default 900)
  --duration S    seconds of load (default 40)
  --faults K      faults in the schedule, one after another (default 4)
  --seed N        the schedule's seed (default 1)
  --plan LIST     these faults in this order instead of drawn ones (targets still drawn):
                  kill,freeze,isolate,oneway,delay,loss; with --leader elected also
                  killleader,freezeleader,etcdkill
  --leader MODE   fixed (kr, the default) or elected (on etcd members on their own hosts)
  --bin PATH      the multi-region binary (default: next to this one)
  --verbose 1     print every process's whole output at the end";

/// The fault kinds a schedule draws from, by `--plan` name (the last three only with an
/// elected leader).
const FAULTS: [&str; 9] =
    ["kill", "freeze", "isolate", "oneway", "delay", "loss", "killleader", "freezeleader", "etcdkill"];

/// Fault kinds of a fixed-leader schedule (the first six).
const FIXED_FAULTS: usize = 6;

/// A fault's target resolved when it is injected: the region that leads then.
const CURRENT_LEADER: &str = "leader";

/// The etcd members' hosts, each beside a region (its links carry that region's RTTs).
const ETCD: [(&str, &str); 3] = [("e1", "kr"), ("e2", "jp"), ("e3", "sg")];
const ETCD_CLIENT_PORT: u16 = 2379;
const ETCD_PEER_PORT: u16 = 2380;

const REGIONS: [&str; 3] = ["kr", "jp", "sg"];
const LEADER: &str = "kr";
const SYNC_PORT: u16 = 7101;
const CONTROL_PORT: u16 = 7100;

struct Args {
    players: u32,
    duration: f64,
    faults: usize,
    seed: u64,
    bin: std::path::PathBuf,
    verbose: bool,
    plan: Option<Vec<usize>>,
    elected: bool,
}

fn parse() -> Result<Option<Args>, String> {
    let mut a = Args {
        players: 900,
        duration: 40.0,
        faults: 4,
        seed: 1,
        bin: std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("multi-region"),
        verbose: false,
        plan: None,
        elected: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "-h" || k == "--help" {
            return Ok(None);
        }
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        let bad = |_: std::num::ParseIntError| format!("bad value for {k}: {v}");
        match k.as_str() {
            "--players" => a.players = v.parse().map_err(bad)?,
            "--duration" => a.duration = v.parse().map_err(|_| format!("bad value for {k}: {v}"))?,
            "--faults" => a.faults = v.parse().map_err(bad)?,
            "--seed" => a.seed = v.parse().map_err(bad)?,
            "--bin" => a.bin = v.into(),
            "--verbose" => a.verbose = v == "1",
            "--leader" => {
                a.elected = match v.as_str() {
                    "fixed" => false,
                    "elected" => true,
                    _ => return Err(format!("--leader is fixed or elected, not {v}")),
                }
            }
            "--plan" => {
                let kinds = v
                    .split(',')
                    .map(|k| {
                        FAULTS
                            .iter()
                            .position(|f| *f == k)
                            .ok_or_else(|| format!("unknown fault `{k}` in --plan"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                a.faults = kinds.len();
                a.plan = Some(kinds);
            }
            _ => return Err(format!("unknown option {k}")),
        }
    }
    if !a.elected && a.plan.as_ref().is_some_and(|p| p.iter().any(|k| *k >= FIXED_FAULTS)) {
        return Err("killleader, freezeleader and etcdkill need --leader elected".into());
    }
    if !(10.0..=3600.0).contains(&a.duration) {
        return Err("--duration must be within 10..=3600 s".into());
    }
    Ok(Some(a))
}

/// One scheduled fault: what, when (from the start of load), for how long.
struct Planned {
    fault: Fault,
    at: Duration,
    hold: Duration,
}

/// `k` faults one after another from 6 s in, each followed by 4 s of quiet, all done 8 s
/// before the end. With a fixed leader (kr) they hit the followers only; with an elected
/// one, also whichever region leads when the fault comes, and the etcd members.
fn schedule(
    seed: u64,
    k: usize,
    plan: Option<&[usize]>,
    duration: Duration,
    elected: bool,
) -> Result<Vec<Planned>, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut at = Duration::from_secs(6);
    let mut out = Vec::new();
    for n in 0..k {
        let f = ["jp", "sg"][rng.random_range(0..2)];
        let other = if f == "jp" { "sg" } else { "jp" };
        let drawn = rng.random_range(0..if elected { FAULTS.len() } else { FIXED_FAULTS });
        let member = ETCD[rng.random_range(0..ETCD.len())].0;
        let (kind, target, hold, x) = match plan.map_or(drawn, |p| p[n]) {
            6 => (FaultKind::ServerCrash, CURRENT_LEADER.to_owned(), 3, 1.0),
            // Longer than the lease: the others take over while it is frozen.
            7 => (FaultKind::ProcessFreeze, CURRENT_LEADER.to_owned(), 4, 1.0),
            8 => (FaultKind::ServerCrash, member.to_owned(), 3, 1.0),
            0 => (FaultKind::ServerCrash, f.to_owned(), 3, 1.0),
            1 => (FaultKind::ProcessFreeze, f.to_owned(), 2, 1.0),
            2 => (FaultKind::NetworkPartition, f.to_owned(), 3, 1.0),
            3 => (FaultKind::NetworkPartition, format!("{LEADER}->{f}"), 3, 1.0),
            4 => (FaultKind::NetworkLatency, format!("{LEADER}<->{f}"), 4, 1.0),
            _ => (FaultKind::PacketLoss, format!("{f}<->{other}"), 4, 0.2),
        };
        let hold = Duration::from_secs(hold);
        if at + hold + Duration::from_secs(8) > duration {
            if plan.is_some() {
                return Err(format!(
                    "the plan does not fit in {duration:?} (each fault takes its hold and 4 s after)"
                ));
            }
            // A drawn schedule stops where the run ends.
            break;
        }
        let fault = Fault::new(kind, target, hold, x).map_err(|e| e.to_string())?;
        out.push(Planned { fault, at, hold });
        at += hold + Duration::from_secs(4);
    }
    Ok(out)
}

/// `[t s]` of each progress line, with the line.
fn progress_lines(log: &str) -> Vec<(f64, &str)> {
    log.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix('[')?;
            let (t, _) = rest.split_once("s]")?;
            Some((t.trim().parse().ok()?, l))
        })
        .collect()
}

fn finished(line: &str) -> u64 {
    line.split("finished ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("multi-host: {e}\n{HELP}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("multi-host: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The region that leads the newest term its log shows, and that term (elected mode).
fn current_leader(net: &HostNet) -> Option<(String, u64)> {
    REGIONS
        .iter()
        .filter_map(|r| {
            let log = net.log(r).ok()?;
            let term = log.lines().filter_map(|l| term_of(l, "leads term ")).max()?;
            Some((r.to_string(), term))
        })
        .max_by_key(|(_, t)| *t)
}

/// The number after `key` in `line`.
fn term_of(line: &str, key: &str) -> Option<u64> {
    line.split(key).nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The Unix ms of an election line (`... at unix_ms N`).
fn unix_ms_of(line: &str) -> Option<u64> {
    line.split("at unix_ms ").nth(1)?.trim().parse().ok()
}

/// Starts the etcd members on their hosts; returns the client URLs and the data directory.
fn start_etcd(net: &HostNet) -> Result<(Vec<String>, std::path::PathBuf), String> {
    let etcd = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .ok_or("no etcd binary (apt-get install etcd-server)")?;
    let dir = std::env::temp_dir().join(format!("pvp-multi-host-etcd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let addr = |h: &str| net.host(h).map(|h| h.addr()).map_err(|e| e.to_string());
    let mut cluster = Vec::new();
    let mut urls = Vec::new();
    for (e, _) in ETCD {
        cluster.push(format!("{e}=http://{}:{ETCD_PEER_PORT}", addr(e)?));
        urls.push(format!("http://{}:{ETCD_CLIENT_PORT}", addr(e)?));
    }
    for (i, (e, _)) in ETCD.iter().enumerate() {
        let a = addr(e)?;
        let args: Vec<String> = vec![
            "--name".into(),
            (*e).into(),
            "--data-dir".into(),
            dir.join(e).display().to_string(),
            "--listen-client-urls".into(),
            urls[i].clone(),
            "--advertise-client-urls".into(),
            urls[i].clone(),
            "--listen-peer-urls".into(),
            format!("http://{a}:{ETCD_PEER_PORT}"),
            "--initial-advertise-peer-urls".into(),
            format!("http://{a}:{ETCD_PEER_PORT}"),
            "--initial-cluster".into(),
            cluster.join(","),
            "--initial-cluster-state".into(),
            "new".into(),
            "--initial-cluster-token".into(),
            format!("pvp-{}", std::process::id()),
            "--logger".into(),
            "zap".into(),
            "--log-level".into(),
            "warn".into(),
        ];
        net.spawn(e, e, etcd, &args).map_err(|e| e.to_string())?;
    }
    Ok((urls, dir))
}

fn run(args: &Args) -> Result<bool, String> {
    let mut names: Vec<&str> = REGIONS.to_vec();
    if args.elected {
        names.extend(ETCD.iter().map(|(e, _)| *e));
    }
    let net = Arc::new(HostNet::create(&names).map_err(|e| e.to_string())?);
    let cfg = SessionConfig::default();
    // An etcd member sits beside its region: its links have that region's round trips.
    let beside =
        |h: &'static str| -> &'static str { ETCD.iter().find(|(e, _)| *e == h).map_or(h, |(_, r)| *r) };
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            let (ra, rb) = (beside(a), beside(b));
            let rtt = cfg
                .regions
                .iter()
                .find(|r| r.id.as_str() == ra)
                .and_then(|r| r.backbone_rtt_ms.iter().find(|(p, _)| p.as_str() == rb))
                .map_or(0, |(_, ms)| *ms);
            // A member and its region: the same data centre, 1 ms.
            let rtt = if ra == rb { 1 } else { rtt };
            net.set_rtt(a, b, Duration::from_millis(u64::from(rtt))).map_err(|e| e.to_string())?;
        }
    }
    let addr = |r: &str| net.host(r).map(|h| h.addr()).map_err(|e| e.to_string());
    let duration = Duration::from_secs_f64(args.duration);
    let plan = schedule(args.seed, args.faults, args.plan.as_deref(), duration, args.elected)?;
    let etcd = if args.elected { Some(start_etcd(&net)?) } else { None };
    // Every process logs its history here for the checker (pvp_examples::history).
    let history = std::env::temp_dir().join(format!("pvp-multi-host-history-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&history);
    let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?;
    // Every process (also one restarted by the schedule) ends at the same wall-clock time.
    let end_at = (unix_now + duration + Duration::from_secs(2)).as_secs_f64();
    let control = format!("{}:{CONTROL_PORT}", addr(LEADER)?);
    println!(
        "multi-host: {} bots on {} hosts ({}), {:.0} s, fault seed {}",
        args.players,
        REGIONS.len(),
        REGIONS
            .iter()
            .map(|r| Ok(format!("{r} {}", addr(r)?)))
            .collect::<Result<Vec<_>, String>>()?
            .join(", "),
        args.duration,
        args.seed
    );
    let started = Instant::now();
    for r in REGIONS {
        let peers: Vec<String> = REGIONS
            .iter()
            .filter(|p| **p != r)
            .map(|p| Ok(format!("{p}={}:{SYNC_PORT}", addr(p)?)))
            .collect::<Result<_, String>>()?;
        let mut a: Vec<String> = [
            "--players",
            &args.players.to_string(),
            "--end-at",
            &format!("{end_at:.3}"),
            "--progress",
            "0.5",
            "--metrics",
            "",
            "--seed",
            &args.seed.to_string(),
            "--region",
            r,
            "--sync",
            &format!("{}:{SYNC_PORT}", addr(r)?),
            "--control",
            // Elected: each process's own control address, where it listens while it leads.
            &if args.elected { format!("{}:{CONTROL_PORT}", addr(r)?) } else { control.clone() },
            "--peers",
            &peers.join(","),
            "--net-delay",
            "--history",
            &history.display().to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if let Some((urls, _)) = &etcd {
            a.extend(["--etcd".to_owned(), urls.join(",")]);
        } else if r == LEADER {
            a.push("--leader".into());
        }
        net.spawn(r, r, &args.bin, &a).map_err(|e| e.to_string())?;
    }
    let mut faults = HostFaults::new(net.clone(), Duration::from_millis(100));
    let mut timeline = Vec::new();
    // Per fault: the leader (and its term) when it came, and the Unix ms it came at.
    let mut context: Vec<(Option<(String, u64)>, u64)> = Vec::new();
    for p in &plan {
        // Bounded waits on the schedule's own clock (this is the schedule, not a sync point).
        while started.elapsed() < p.at {
            std::thread::sleep(Duration::from_millis(10));
        }
        let leader = if args.elected { current_leader(&net) } else { Some((LEADER.to_owned(), 0)) };
        let fault = if p.fault.target() == CURRENT_LEADER {
            let Some((l, _)) = &leader else { return Err("no region leads: nothing to fault".into()) };
            Fault::new(p.fault.kind(), l.clone(), p.hold, p.fault.intensity()).map_err(|e| e.to_string())?
        } else {
            p.fault.clone()
        };
        if !faults.supports(&fault) {
            return Err(format!("no injector for {}", fault.description()));
        }
        let t0 = started.elapsed();
        let at_ms = pvp_examples::history::unix_ms();
        faults.inject(&fault).map_err(|e| format!("inject {}: {e}", fault.description()))?;
        while started.elapsed() < p.at + p.hold {
            std::thread::sleep(Duration::from_millis(10));
        }
        let t1 = started.elapsed();
        faults.revert(&fault).map_err(|e| format!("revert {}: {e}", fault.description()))?;
        timeline.push((t0, t1, fault));
        context.push((leader, at_ms));
    }
    let mut exited_ok = true;
    for r in REGIONS {
        let status = net.wait(r, duration + Duration::from_secs(60)).map_err(|e| e.to_string())?;
        exited_ok &= status.is_some_and(|s| s.success());
        if status.is_none() {
            let _ = net.kill(r);
        }
    }
    if let Some((_, dir)) = &etcd {
        for (e, _) in ETCD {
            let _ = net.kill(e);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
    let logs: Vec<(String, String)> = REGIONS
        .iter()
        .map(|r| Ok((r.to_string(), net.log(r).map_err(|e| e.to_string())?)))
        .collect::<Result<_, String>>()?;
    if args.verbose {
        for (r, log) in &logs {
            println!("\n== {r}'s output ==\n{log}");
        }
    }
    println!("\n== fault timeline (s from start) ==");
    for ((t0, t1, f), (leader, _)) in timeline.iter().zip(&context) {
        println!(
            "{:>6.1} .. {:>6.1}  {:?} on {} (intensity {}){}",
            t0.as_secs_f64(),
            t1.as_secs_f64(),
            f.kind(),
            f.target(),
            f.intensity(),
            match leader {
                Some((l, t)) if args.elected && l == f.target() => format!(", the leader (term {t})"),
                _ => String::new(),
            }
        );
    }
    let log_of = |r: &str| logs.iter().find(|(x, _)| x == r).map_or("", |(_, l)| l.as_str());
    // Every election line of every process: (unix ms, line).
    let mut elections: Vec<(u64, String)> = logs
        .iter()
        .flat_map(|(_, l)| l.lines().filter(|l| l.starts_with("election: ")))
        .filter_map(|l| Some((unix_ms_of(l)?, l.to_owned())))
        .collect();
    elections.sort();
    println!("\n== measured ==");
    let mut ok = exited_ok;
    for ((t0, t1, f), (leader, at_ms)) in timeline.iter().zip(&context) {
        let region = f.target().rsplit(['>', '-']).next().unwrap_or(f.target());
        let (lead, term) = leader.clone().unwrap_or_else(|| (LEADER.to_owned(), 0));
        // The leader's progress clock starts a little after `started`; its lines are compared
        // with the fault times on that clock (an over-estimate of each delay by that offset).
        let lead_lines = progress_lines(log_of(&lead));
        let hits_leader = args.elected && f.target() == lead;
        if hits_leader {
            // The next term's first leader (while the fault lasted or soon after), and how
            // long after the fault it led.
            let until = at_ms + (*t1 - *t0).as_millis() as u64 + 5_000;
            let next = elections.iter().find(|(ms, l)| {
                (*at_ms..until).contains(ms) && term_of(l, "leads term ").is_some_and(|t| t > term)
            });
            let took = next.map(|(ms, _)| (*ms - *at_ms) as f64 / 1000.0);
            let by = next.and_then(|(_, l)| l.split_whitespace().nth(1)).unwrap_or("nobody");
            let what = match f.kind() {
                FaultKind::ServerCrash => "kill -9".to_owned(),
                FaultKind::ProcessFreeze => "freeze".to_owned(),
                FaultKind::NetworkPartition => "cut-off".to_owned(),
                k => format!("{k:?}"),
            };
            // Did the old leader's term end? A killed one's did; a frozen or cut-off one's
            // only if its lease ran out (it logs the end when it can act again).
            let ended = f.kind() == FaultKind::ServerCrash
                || log_of(&lead).lines().any(|l| l.contains(&format!("ends term {term} ")));
            println!(
                "{what} of leader {lead} (term {term}) at {:.1} s: {}",
                t0.as_secs_f64(),
                match (ended, took) {
                    (true, Some(d)) => format!("{by} took over after {d:.2} s"),
                    (true, None) => "nobody took over".to_owned(),
                    (false, _) => "it kept its lease (no takeover needed)".to_owned(),
                }
            );
            // The hypothesis: matchmaking is led again within 5 s (the takeover target)
            // whenever the fault ended the leader's term.
            ok &= !ended || took.is_some_and(|d| d <= 5.0);
            if f.kind() == FaultKind::ProcessFreeze && took.is_some() {
                // A newer term began: thawed, the old leader must find its lease gone and stop
                // acting by itself.
                println!("  thawed {lead} ended term {term} by itself: {ended}");
                ok &= ended;
            }
            continue;
        }
        if ETCD.iter().any(|(e, _)| *e == f.target()) {
            // The leader may lose its lease belief while the cluster elects a new etcd leader
            // (renewals fail meanwhile): it then stops acting, and the gap until the next
            // term's leader is what matchmaking lost.
            let until = at_ms + (*t1 - *t0).as_millis() as u64 + 4_000;
            let ended = elections
                .iter()
                .find(|(ms, l)| (*at_ms..until).contains(ms) && l.contains(&format!("ends term {term} ")));
            let next = elections
                .iter()
                .find(|(ms, l)| *ms >= *at_ms && term_of(l, "leads term ").is_some_and(|t| t > term));
            let gap = ended.map(|(e, _)| next.map(|(n, _)| n.saturating_sub(*e) as f64 / 1000.0));
            println!(
                "kill -9 etcd member {} at {:.1} s (restarted at {:.1} s): leadership changed: {}{}",
                f.target(),
                t0.as_secs_f64(),
                t1.as_secs_f64(),
                ended.is_some(),
                match gap {
                    Some(Some(g)) => format!(", no leader for {g:.2} s"),
                    Some(None) => ", no leader since".into(),
                    None => String::new(),
                }
            );
            // The hypothesis: matchmaking is led again within 5 s if it stopped at all.
            ok &= gap.is_none_or(|g| g.is_some_and(|g| g <= 5.0));
            continue;
        }
        match f.kind() {
            FaultKind::ServerCrash => {
                let noticed = lead_lines
                    .iter()
                    .find(|(t, l)| *t >= t0.as_secs_f64() && l.contains(&format!("| {region} ")))
                    .map(|(t, _)| t - t0.as_secs_f64());
                // The restarted process's own progress clock starts at the restart.
                let log = log_of(region);
                let last_start = log.rfind("multi-region: ").map_or("", |i| &log[i..]);
                let serving =
                    progress_lines(last_start).into_iter().find(|(_, l)| finished(l) > 0).map(|(t, _)| t);
                println!(
                    "kill -9 {region} at {:.1} s: leader saw it unhealthy after {}; restarted at {:.1} s, serving again (first match finished there) after {}",
                    t0.as_secs_f64(),
                    noticed.map_or("never".into(), |d| format!("{d:.1} s")),
                    t1.as_secs_f64(),
                    serving.map_or("never".into(), |d| format!("{d:.1} s")),
                );
            }
            _ => {
                let during = lead_lines
                    .iter()
                    .filter(|(t, _)| *t >= t0.as_secs_f64() && *t <= t1.as_secs_f64() + 3.0)
                    .any(|(_, l)| l.contains(&format!("| {region} ")));
                println!(
                    "{:?} on {} for {:.1} s: leader saw {region} unhealthy: {during}",
                    f.kind(),
                    f.target(),
                    (*t1 - *t0).as_secs_f64()
                );
            }
        }
    }
    if args.elected {
        println!("\n== elections ==");
        for (_, l) in &elections {
            println!("{l}");
        }
    }
    let s = net.stats();
    println!(
        "shaper: {} packets forwarded ({} delayed), dropped {} on cuts, {} at loss rates, {} over full links",
        s.forwarded, s.delayed, s.dropped_cut, s.dropped_loss, s.dropped_full
    );
    // The history checker over every process's log: kills are the ServerCrash faults on regions.
    let deaths: Vec<(String, u64)> = timeline
        .iter()
        .zip(&context)
        .filter(|((_, _, f), _)| f.kind() == FaultKind::ServerCrash && REGIONS.contains(&f.target()))
        .map(|((_, _, f), (_, at))| (f.target().to_owned(), *at))
        .collect();
    println!("\n== history check ==");
    match pvp_examples::history::read_dir(&history) {
        Ok(entries) => {
            let verdict = pvp_examples::history::check(&entries, &deaths);
            println!("{verdict}");
            ok &= verdict.violations.is_empty() && verdict.entries > 0;
        }
        Err(e) => {
            println!("history: cannot read it: {e}");
            ok = false;
        }
    }
    let _ = std::fs::remove_dir_all(&history);
    println!("\n== reports ==");
    for (r, log) in &logs {
        let report = log.rfind("== multi-region report ==").map_or("", |i| &log[i..]);
        let line = |key: &str| report.lines().find(|l| l.starts_with(key)).unwrap_or("(missing)").to_owned();
        let errors = line("errors ");
        let replicas = line("replicas ");
        println!("{r}: {}", line("matches "));
        println!("{r}: {}", line(&format!("region {r} ")));
        println!("{r}: {replicas}");
        println!("{r}: {errors}");
        ok &= errors.starts_with("errors              0;")
            && replicas.starts_with("replicas            converged");
    }
    println!(
        "\nverdict: {} (every process exited 0, reported 0 errors and converged replicas, 0 history violations{})",
        if ok { "passed" } else { "FAILED" },
        if args.elected {
            "; a new leader within 5 s of each leader fault and of any leader an etcd fault stopped, a thawed leader stopped"
        } else {
            ""
        }
    );
    Ok(ok)
}
