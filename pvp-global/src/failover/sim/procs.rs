//! The kr failover scenario with each region (kr, jp, sg) in its own OS process, coordinating
//! through `EtcdCoordinator` on a real etcd cluster on loopback (feature `etcd`). The
//! `etcd_failover_procs` example runs it many times (p50/p99), the `etcd_procs` test once per
//! fault. Each caller supplies how a region process is started ([`run_once`]'s `command`:
//! the example re-executes itself, the test re-executes its test binary) and calls
//! [`region_main`] in that process.
//!
//! A region process: a 2 s lease kept alive every 500 ms, its announcement, an etcd watch on
//! membership, UDP data-plane heartbeats to its peers every 250 ms, `RegionHealthTracker` +
//! `FailoverPlanner`, a campaign for the global job every 100 ms, and a UDP route service that
//! answers "where do new matches of players from origin X go". It reports what it sees as
//! `EV ...` lines on stdout; the driver timestamps them on arrival. A region exits when its
//! stdin closes (the driver died or is done).
//!
//! The driver fails kr ([`Fault::Crash`]: SIGKILL, or [`Fault::Freeze`]: SIGSTOP past its
//! lease), measures detection, reroute, leader takeover and what a client polling the surviving
//! regions' route service sees, then brings kr back (a fresh process, or SIGCONT) and measures
//! routing returning once kr announced itself, caught up (read the routing record) and said so
//! (the `caughtup/kr` record).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::coord::{
    CasOutcome, ChangeFeed, ChangeKind, CoordError, Coordinator, EtcdCoordinator, EtcdCoordinatorConfig,
    Expected, LeaseId, WatchScope,
};
use crate::failover::{
    FailoverDecision, FailoverPlanner, HealthPolicy, LatencyMatrix, PlannerConfig, RegionHealthTracker,
};
use pvp_core::ids::RegionId;

/// What the scenario and a region process return: any error, sendable.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Lease TTL of every region.
pub const TTL: Duration = Duration::from_secs(2);
const KEEP_ALIVE: Duration = Duration::from_millis(500);
const HEARTBEAT: Duration = Duration::from_millis(250);
const JOB: &str = "leaderboard";
const REGIONS: [&str; 3] = ["kr", "jp", "sg"];

fn rid(s: &str) -> Result<RegionId> {
    RegionId::new(s).map_err(|e| format!("bad region {s:?}: {e:?}").into())
}

/// What a region process is told on its command line.
#[derive(Debug, Clone)]
pub struct RegionArgs {
    /// This process's region.
    pub region: String,
    /// The etcd client URLs.
    pub endpoints: Vec<String>,
    /// The etcd key prefix of this run (one per run, so runs never share state).
    pub namespace: String,
    /// UDP port of each region's heartbeat + route socket.
    pub ports: Vec<(String, u16)>,
}

impl RegionArgs {
    /// `--role region --region kr --endpoints a,b,c --ns /p0/ --ports kr=1,jp=2,sg=3`
    pub fn to_args(&self) -> Vec<String> {
        let ports = self.ports.iter().map(|(r, p)| format!("{r}={p}")).collect::<Vec<_>>().join(",");
        [
            "--role",
            "region",
            "--region",
            &self.region,
            "--endpoints",
            &self.endpoints.join(","),
            "--ns",
            &self.namespace,
            "--ports",
            &ports,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Parses [`RegionArgs::to_args`]' output; `None` unless it says `--role region`.
    pub fn parse(args: &[String]) -> Option<Self> {
        let get = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1));
        if get("--role")? != "region" {
            return None;
        }
        let ports = get("--ports")?
            .split(',')
            .map(|kv| {
                let (r, p) = kv.split_once('=')?;
                Some((r.to_owned(), p.parse().ok()?))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            region: get("--region")?.clone(),
            endpoints: get("--endpoints")?.split(',').map(str::to_owned).collect(),
            namespace: get("--ns")?.clone(),
            ports,
        })
    }
}

fn latency() -> Result<LatencyMatrix> {
    let [kr, jp, sg] = [rid("kr")?, rid("jp")?, rid("sg")?];
    let mut m = LatencyMatrix::default();
    for r in [kr, jp, sg] {
        m.set(r, r, Duration::from_millis(8));
    }
    m.set_symmetric(kr, jp, Duration::from_millis(35));
    m.set_symmetric(kr, sg, Duration::from_millis(75));
    m.set_symmetric(jp, sg, Duration::from_millis(70));
    Ok(m)
}

fn ev(line: &str) {
    println!("EV {line}");
}

/// Runs one region process until its stdin closes.
pub fn region_main(args: RegionArgs) -> Result<()> {
    // Exit when the driver goes away.
    std::thread::spawn(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
        std::process::exit(0);
    });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(region_async(args))
}

/// Joins (or re-joins after the lease was lost): a fresh lease kept alive until etcd says it is
/// gone, catch-up (read the routing record the leader keeps), the announcement, then a new
/// version of `caughtup/<me>`.
async fn join(
    coord: &Arc<EtcdCoordinator>,
    me: RegionId,
    lost: &tokio::sync::mpsc::UnboundedSender<()>,
) -> Result<LeaseId> {
    let lease = coord.grant_lease(TTL).await?;
    let _ = coord.read_record("routing").await?;
    coord.announce_region(me, lease).await?;
    let (c, lost) = (coord.clone(), lost.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(KEEP_ALIVE);
        loop {
            tick.tick().await;
            if let Err(CoordError::LeaseNotFound(_)) = c.keep_alive(lease).await {
                let _ = lost.send(());
                return;
            }
        }
    });
    let name = format!("caughtup/{me}");
    for _ in 0..5 {
        let expected = match coord.read_record(&name).await? {
            Some(r) => Expected::Version(r.version),
            None => Expected::Absent,
        };
        if matches!(
            coord.compare_and_set(&name, expected, lease.0.to_le_bytes().to_vec()).await?,
            CasOutcome::Applied { .. }
        ) {
            break;
        }
    }
    Ok(lease)
}

async fn region_async(args: RegionArgs) -> Result<()> {
    let me = rid(&args.region)?;
    let own_port = args.ports.iter().find(|(r, _)| *r == args.region).map(|p| p.1).ok_or("no own port")?;
    let peers: Vec<u16> = args.ports.iter().filter(|(r, _)| *r != args.region).map(|p| p.1).collect();
    let socket = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, own_port))?);
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let routes: Arc<Mutex<HashMap<String, String>>> = Arc::default();

    // Data plane: heartbeats in, route queries answered from the planner's current routes.
    let (hb_tx, mut hb_rx) = tokio::sync::mpsc::unbounded_channel::<RegionId>();
    {
        let (socket, routes) = (socket.clone(), routes.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let parts: Vec<&str> = msg.split_whitespace().collect();
                match parts.as_slice() {
                    ["hb", r] => {
                        if let Ok(r) = RegionId::new(r) {
                            if hb_tx.send(r).is_err() {
                                return;
                            }
                        }
                    }
                    ["q", seq, origin] => {
                        let to = routes
                            .lock()
                            .map(|m| m.get(*origin).cloned().unwrap_or_else(|| "none".into()))
                            .unwrap_or_else(|_| "none".into());
                        let _ = socket.send_to(format!("r {seq} {to}").as_bytes(), from);
                    }
                    _ => {}
                }
            }
        });
    }

    let config = EtcdCoordinatorConfig::new(args.endpoints.clone())
        .with_namespace(args.namespace.clone())
        .with_op_timeout(Duration::from_millis(500));
    let coord = Arc::new(EtcdCoordinator::connect(config).await?);
    let mut feed = coord.watch(WatchScope::Regions).await?;
    let (lost_tx, mut lost_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut lease = join(&coord, me, &lost_tx).await?;
    ev("ready");

    let start = Instant::now();
    let mut health = RegionHealthTracker::new(HealthPolicy::default())?;
    let mut planner = FailoverPlanner::new(PlannerConfig::default(), latency()?);
    for r in REGIONS {
        health.add_region(start.elapsed(), rid(r)?)?;
        planner.add_region(rid(r)?)?;
    }
    let publish_routes = |planner: &FailoverPlanner| {
        let limit = PlannerConfig::default().default_latency_limit;
        if let Ok(mut m) = routes.lock() {
            for o in REGIONS {
                if let Ok(origin) = RegionId::new(o) {
                    let to =
                        planner.route(origin, limit).map_or_else(|| "none".to_owned(), |r| r.to_string());
                    m.insert(o.to_owned(), to);
                }
            }
        }
    };
    publish_routes(&planner);

    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut hb_tick = tokio::time::interval(HEARTBEAT);
    let mut leading = false;
    let mut ticks = 0u64;
    // Regions awaiting catch-up, with the version of their `caughtup` record when they went down.
    let mut baseline: HashMap<RegionId, Option<u64>> = HashMap::new();
    let mut awaiting: Vec<RegionId> = Vec::new();
    let mut routing_dirty = false;
    loop {
        tokio::select! {
            Some(()) = lost_rx.recv() => {
                // Frozen or cut off past the TTL: everything under the old lease is gone.
                ev("lease_lost");
                leading = false;
                lease = join(&coord, me, &lost_tx).await?;
                ev("rejoined");
            }
            Some(r) = hb_rx.recv() => {
                let _ = health.handle_heartbeat(start.elapsed(), r);
            }
            change = feed.next_change() => {
                let change = change?;
                match change.kind {
                    ChangeKind::RegionDown(r) => ev(&format!("lease_down {r}")),
                    ChangeKind::RegionUp(r) => ev(&format!("lease_up {r}")),
                    _ => {}
                }
                health.handle_change(start.elapsed(), &change);
            }
            _ = hb_tick.tick() => {
                for p in &peers {
                    let _ = socket.send_to(format!("hb {me}").as_bytes(), (Ipv4Addr::LOCALHOST, *p));
                }
                let _ = health.handle_heartbeat(start.elapsed(), me);
            }
            _ = tick.tick() => {
                ticks += 1;
                health.handle_timeout(start.elapsed());
                if ticks % 2 == 0 {
                    let won = coord.campaign(JOB, me, lease).await.map(|l| l.won).unwrap_or(false);
                    if won && !leading {
                        ev("leader");
                    }
                    leading = won && coord.lease_believed_valid(lease);
                    for r in std::mem::take(&mut awaiting) {
                        let base = baseline.get(&r).copied().flatten();
                        let now_v = coord.read_record(&format!("caughtup/{r}")).await.ok().flatten().map(|x| x.version);
                        if now_v.is_some() && now_v > base {
                            planner.handle_caught_up(start.elapsed(), r)?;
                        } else {
                            awaiting.push(r);
                        }
                    }
                    if leading && routing_dirty {
                        let table = planner.routing_table().encode();
                        let cur = coord.read_record("routing").await.ok().flatten();
                        let expected = cur.map_or(Expected::Absent, |c| Expected::Version(c.version));
                        routing_dirty = coord.compare_and_set("routing", expected, table).await.is_err();
                    }
                }
            }
        }
        while let Some(t) = health.poll_transition() {
            planner.handle_health(start.elapsed(), t.region, t.to)?;
        }
        let mut changed = false;
        while let Some(d) = planner.poll_decision() {
            match d {
                FailoverDecision::RegionDown { region, .. } => {
                    ev(&format!("planner_down {region}"));
                    let v = coord.read_record(&format!("caughtup/{region}")).await.ok().flatten();
                    baseline.insert(region, v.map(|x| x.version));
                }
                FailoverDecision::RouteChanged { origin, to } => {
                    changed = true;
                    let to = to.map_or_else(|| "none".to_owned(), |r| r.to_string());
                    ev(&format!("route {origin} {to}"));
                }
                FailoverDecision::AwaitingCatchUp { region } => awaiting.push(region),
                FailoverDecision::RegionRestored { region, .. } => ev(&format!("restored {region}")),
                _ => {}
            }
        }
        if changed {
            publish_routes(&planner);
            routing_dirty = true;
        }
    }
}

/// One run's measurements, each from the moment kr was killed (or restarted, for the return).
#[derive(Debug, Clone, Default)]
pub struct ProcsReport {
    /// Both jp and sg saw kr's lease expire (etcd watch `RegionDown(kr)`).
    pub detection: Option<Duration>,
    /// Both planners marked kr Down (heartbeats and lease).
    pub planner_down: Option<Duration>,
    /// Both planners route Korean players away from kr.
    pub reroute: Option<Duration>,
    /// jp or sg won the global job kr led.
    pub takeover: Option<Duration>,
    /// A client asking jp and sg for a Korean player's route got kr (a dead region) until then.
    pub client_gap: Option<Duration>,
    /// Answers naming kr after the kill.
    pub client_stale: u64,
    /// Queries without an answer (200 ms timeout) after the kill.
    pub client_errors: u64,
    /// Queries after the kill.
    pub client_queries: u64,
    /// kr back (restart or SIGCONT) -> both survivors route Korean players to kr again.
    pub route_back: Option<Duration>,
    /// kr back -> the client is first told kr again.
    pub client_back: Option<Duration>,
}

struct Procs {
    children: HashMap<String, Child>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.children.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

type Events = mpsc::Receiver<(Instant, String, String)>;

fn spawn_region(
    procs: &mut Procs,
    command: &dyn Fn(&RegionArgs) -> Command,
    args: &RegionArgs,
    tx: &mpsc::Sender<(Instant, String, String)>,
) -> Result<()> {
    let mut child =
        command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let (tx, name) = (tx.clone(), args.region.clone());
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(std::result::Result::ok) {
            if std::env::var_os("PVP_PROCS_DEBUG").is_some() {
                eprintln!("[{name}] {line}");
            }
            // The test harness may print "test ... " on the same line before the first event.
            if let Some((_, e)) = line.split_once("EV ") {
                if tx.send((Instant::now(), name.clone(), e.to_owned())).is_err() {
                    return;
                }
            }
        }
        let _ = tx.send((Instant::now(), name, "exited".to_owned()));
    });
    procs.children.insert(args.region.clone(), child);
    Ok(())
}

/// Waits (at most `timeout`) until `done` says so, feeding it each event.
fn wait_for(
    events: &Events,
    timeout: Duration,
    mut done: impl FnMut(Instant, &str, &str) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("timed out after {timeout:?}").into());
        }
        match events.recv_timeout(left) {
            Ok((at, who, e)) => {
                if e == "exited" && who != "kr" {
                    return Err(format!("region {who} exited").into());
                }
                if done(at, &who, &e) {
                    return Ok(());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err("event channel closed".into()),
        }
    }
}

fn free_udp_ports(n: usize) -> Result<Vec<u16>> {
    let sockets =
        (0..n).map(|_| UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))).collect::<std::io::Result<Vec<_>>>()?;
    Ok(sockets.iter().map(|s| s.local_addr().map(|a| a.port())).collect::<std::io::Result<Vec<_>>>()?)
}

/// When a query was sent and what came back (`None`: nothing within 200 ms).
type Answer = (Instant, Option<String>);

/// Asks jp and sg in turn, every 20 ms, where a Korean player's new match goes.
fn client(ports: [u16; 2], stop: Arc<AtomicBool>) -> Result<std::thread::JoinHandle<Vec<Answer>>> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 128];
        let mut seq = 0u64;
        while !stop.load(Ordering::Relaxed) {
            seq += 1;
            let port = ports[(seq % 2) as usize];
            let sent = Instant::now();
            let _ = socket.send_to(format!("q {seq} kr").as_bytes(), (Ipv4Addr::LOCALHOST, port));
            let mut answer = None;
            // Skip late answers to earlier queries; bounded by the read timeout.
            while let Ok(n) = socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let parts: Vec<&str> = msg.split_whitespace().collect();
                if let ["r", s, to] = parts.as_slice() {
                    if *s == seq.to_string() {
                        answer = Some((*to).to_owned());
                        break;
                    }
                }
            }
            seen.push((sent, answer));
            std::thread::sleep(Duration::from_millis(20));
        }
        seen
    }))
}

/// How kr fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, then a fresh kr process (a crash and a restart).
    Crash,
    /// SIGSTOP, then SIGCONT (a partition or a long pause: kr comes back with a dead lease and
    /// must notice, re-grant and re-announce).
    Freeze,
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = Command::new("kill").args([sig, &pid.to_string()]).status()?;
    if status.success() { Ok(()) } else { Err(format!("kill {sig} {pid} failed").into()) }
}

/// Runs the scenario once: three region processes made by `command`; kr fails as `fault` says,
/// then comes back.
pub fn run_once(
    command: &dyn Fn(&RegionArgs) -> Command,
    endpoints: &[String],
    run: u32,
    fault: Fault,
) -> Result<ProcsReport> {
    let ports = free_udp_ports(3)?;
    let ports: Vec<(String, u16)> = REGIONS.iter().map(|r| (*r).to_owned()).zip(ports).collect();
    let args_of = |r: &str| RegionArgs {
        region: r.to_owned(),
        endpoints: endpoints.to_vec(),
        namespace: format!("/procs{}-{run}/", std::process::id()),
        ports: ports.clone(),
    };
    let (tx, events) = mpsc::channel();
    let mut procs = Procs { children: HashMap::new() };
    let mut report = ProcsReport::default();

    spawn_region(&mut procs, command, &args_of("kr"), &tx)?;
    wait_for(&events, Duration::from_secs(15), |_, who, e| who == "kr" && e == "leader")?;
    spawn_region(&mut procs, command, &args_of("jp"), &tx)?;
    spawn_region(&mut procs, command, &args_of("sg"), &tx)?;
    let mut ready = 0;
    wait_for(&events, Duration::from_secs(15), |_, _, e| {
        ready += usize::from(e == "ready");
        ready == 2
    })?;
    // Steady state: heartbeats flowing for a while (the driver only waits; regions run).
    let settle = Instant::now() + Duration::from_millis(1500);
    let _ = wait_for(&events, Duration::from_millis(1500), |_, _, _| Instant::now() >= settle);

    let stop = Arc::new(AtomicBool::new(false));
    let client_thread = client([ports[1].1, ports[2].1], stop.clone())?;
    std::thread::sleep(Duration::from_millis(200)); // the client's baseline before the kill
    let cut = Instant::now();
    let kr_pid = procs.children.get("kr").map(Child::id).ok_or("no kr process")?;
    match fault {
        Fault::Crash => {
            if let Some(mut kr) = procs.children.remove("kr") {
                kr.kill()?;
                kr.wait()?;
            }
        }
        Fault::Freeze => signal(kr_pid, "-STOP")?,
    }
    let (mut down, mut pdown, mut away) = (Vec::new(), Vec::new(), Vec::new());
    wait_for(&events, Duration::from_secs(15), |at, who, e| {
        if at < cut {
            return false; // seen during the steady state (e.g. a spurious Degraded under load)
        }
        let since = at.saturating_duration_since(cut);
        match e {
            "lease_down kr" if who != "kr" && !down.contains(&who.to_owned()) => down.push(who.to_owned()),
            "planner_down kr" if who != "kr" && !pdown.contains(&who.to_owned()) => {
                pdown.push(who.to_owned())
            }
            "leader" if who != "kr" => {
                report.takeover.get_or_insert(since);
            }
            _ if e.starts_with("route kr ")
                && e != "route kr kr"
                && who != "kr"
                && !away.contains(&who.to_owned()) =>
            {
                away.push(who.to_owned())
            }
            _ => {}
        }
        if down.len() == 2 {
            report.detection.get_or_insert(since);
        }
        if pdown.len() == 2 {
            report.planner_down.get_or_insert(since);
        }
        if away.len() == 2 {
            report.reroute.get_or_insert(since);
        }
        report.detection.is_some() && report.reroute.is_some() && report.takeover.is_some()
    })?;

    // Bring kr back; wait until both survivors route Korean players back to it.
    let restart = Instant::now();
    match fault {
        Fault::Crash => spawn_region(&mut procs, command, &args_of("kr"), &tx)?,
        Fault::Freeze => signal(kr_pid, "-CONT")?,
    }
    let mut back = Vec::new();
    wait_for(&events, Duration::from_secs(20), |at, who, e| {
        if at >= restart && e == "route kr kr" && who != "kr" && !back.contains(&who.to_owned()) {
            back.push(who.to_owned());
        }
        if back.len() == 2 {
            report.route_back = Some(at.saturating_duration_since(restart));
        }
        back.len() == 2
    })?;
    // Give the client a moment to see it (two polls), then stop it.
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let seen = client_thread.join().map_err(|_| "client panicked")?;
    let after_cut: Vec<&Answer> = seen.iter().filter(|(t, _)| *t >= cut && *t < restart).collect();
    report.client_queries = after_cut.len() as u64;
    report.client_stale = after_cut.iter().filter(|(_, a)| a.as_deref() == Some("kr")).count() as u64;
    report.client_errors = after_cut.iter().filter(|(_, a)| a.is_none()).count() as u64;
    // The gap: until the first of the final run of answers that are neither kr nor missing.
    let last_bad = after_cut.iter().rposition(|(_, a)| a.as_deref().is_none_or(|a| a == "kr"));
    report.client_gap = match last_bad {
        Some(i) => after_cut.get(i + 1).map(|(t, _)| t.saturating_duration_since(cut)),
        None => Some(Duration::ZERO),
    };
    report.client_back = seen
        .iter()
        .find(|(t, a)| *t >= restart && a.as_deref() == Some("kr"))
        .map(|(t, _)| t.saturating_duration_since(restart));
    drop(procs);
    Ok(report)
}
