//! The kr failover scenario on a real 3-member etcd cluster on loopback, measured.
//!
//! Three regions (kr, jp, sg), each its own `EtcdCoordinator` client with a 2 s lease kept
//! alive every 500 ms and a data-plane heartbeat every 250 ms. kr is cut off (its keep-alives
//! and heartbeats stop); jp observes through an etcd watch plus heartbeats, runs the
//! `RegionHealthTracker` and `FailoverPlanner`, and campaigns for the global job kr led.
//! Then the etcd leader member is killed while a client keeps writing, to show what a client
//! sees during an etcd leader failover.
//!
//! `cargo run --release -p pvp-global --features etcd --example etcd_failover -- [runs]`

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pvp_core::ids::RegionId;
use pvp_global::coord::{
    CasOutcome, ChangeFeed, ChangeKind, CoordError, Coordinator, EtcdCoordinator, EtcdCoordinatorConfig,
    Expected, LeaseId, LoopbackEtcdCluster, WatchScope,
};
use pvp_global::failover::{
    FailoverDecision, FailoverPlanner, HealthPolicy, LatencyMatrix, PlannerConfig, RegionHealthTracker,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const TTL: Duration = Duration::from_secs(2);
const JOB: &str = "leaderboard";

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Region {
    coord: std::sync::Arc<EtcdCoordinator>,
    lease: LeaseId,
    tasks: Vec<JoinHandle<()>>,
}

async fn start_region(
    urls: &[String],
    ns: &str,
    id: RegionId,
    heartbeats: mpsc::UnboundedSender<RegionId>,
) -> Result<Region> {
    let config = EtcdCoordinatorConfig::new(urls.to_vec())
        .with_namespace(ns)
        .with_op_timeout(Duration::from_millis(500));
    let coord = std::sync::Arc::new(EtcdCoordinator::connect(config).await?);
    let lease = coord.grant_lease(TTL).await?;
    coord.announce_region(id, lease).await?;
    let c = coord.clone();
    let keep_alive = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let _ = c.keep_alive(lease).await;
        }
    });
    let heartbeat = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            if heartbeats.send(id).is_err() {
                return;
            }
        }
    });
    Ok(Region { coord, lease, tasks: vec![keep_alive, heartbeat] })
}

struct RunResult {
    lease_detection: Duration,
    planner_down: Duration,
    reroute: Duration,
    leader_takeover: Duration,
}

async fn one_run(urls: &[String], run: u32) -> Result<RunResult> {
    let ns = format!("/bench{run}/");
    let [kr, jp, sg] = ["kr", "jp", "sg"].map(|r| RegionId::new(r).expect("valid"));
    let (hb_tx, mut hb_rx) = mpsc::unbounded_channel();
    let mut regions = Vec::new();
    for id in [kr, jp, sg] {
        regions.push(start_region(urls, &ns, id, hb_tx.clone()).await?);
    }
    drop(hb_tx);
    assert!(regions[0].coord.campaign(JOB, kr, regions[0].lease).await?.won);

    let observer = regions[1].coord.clone();
    let mut feed = observer.watch(WatchScope::Regions).await?;
    let start = Instant::now();
    let mut health = RegionHealthTracker::new(HealthPolicy::default())?;
    let mut latency = LatencyMatrix::default();
    for r in [kr, jp, sg] {
        latency.set(r, r, Duration::from_millis(8));
    }
    latency.set_symmetric(kr, jp, Duration::from_millis(35));
    latency.set_symmetric(kr, sg, Duration::from_millis(75));
    latency.set_symmetric(jp, sg, Duration::from_millis(70));
    let mut planner = FailoverPlanner::new(PlannerConfig::default(), latency);
    for r in [kr, jp, sg] {
        health.add_region(start.elapsed(), r)?;
        planner.add_region(r)?;
    }

    // Let the steady state settle for a second, then cut kr off.
    let settle = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < settle {
        if let Ok(Some(r)) = tokio::time::timeout_at(settle, hb_rx.recv()).await {
            health.handle_heartbeat(start.elapsed(), r)?;
        }
    }
    for t in regions[0].tasks.drain(..) {
        t.abort();
    }
    let cut = Instant::now();

    let mut lease_detection = None;
    let mut planner_down = None;
    let mut reroute = None;
    let mut leader_takeover = None;
    let deadline = cut + Duration::from_secs(15);
    let jp_coord = regions[1].coord.clone();
    let jp_lease = regions[1].lease;
    let mut next_campaign = Instant::now();
    while lease_detection.is_none() || planner_down.is_none() || leader_takeover.is_none() {
        if Instant::now() > deadline {
            return Err("kr failure not detected within 15 s".into());
        }
        tokio::select! {
            hb = hb_rx.recv() => {
                if let Some(r) = hb { health.handle_heartbeat(start.elapsed(), r)?; }
            }
            change = feed.next_change() => {
                let change = change?;
                if change.kind == ChangeKind::RegionDown(kr) && lease_detection.is_none() {
                    lease_detection = Some(cut.elapsed());
                }
                health.handle_change(start.elapsed(), &change);
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        health.handle_timeout(start.elapsed());
        while let Some(t) = health.poll_transition() {
            planner.handle_health(start.elapsed(), t.region, t.to)?;
        }
        while let Some(d) = planner.poll_decision() {
            match d {
                FailoverDecision::RegionDown { region, .. } if region == kr => {
                    planner_down.get_or_insert(cut.elapsed());
                }
                FailoverDecision::RouteChanged { origin, to } if origin == kr && to != Some(kr) => {
                    reroute.get_or_insert(cut.elapsed());
                }
                _ => {}
            }
        }
        if leader_takeover.is_none() && Instant::now() >= next_campaign {
            next_campaign = Instant::now() + Duration::from_millis(100);
            if jp_coord.campaign(JOB, jp, jp_lease).await?.won {
                leader_takeover = Some(cut.elapsed());
            }
        }
    }
    for r in &mut regions {
        for t in r.tasks.drain(..) {
            t.abort();
        }
        let _ = r.coord.revoke_lease(r.lease).await;
    }
    Ok(RunResult {
        lease_detection: lease_detection.unwrap_or_default(),
        planner_down: planner_down.unwrap_or_default(),
        reroute: reroute.unwrap_or_default(),
        leader_takeover: leader_takeover.unwrap_or_default(),
    })
}

async fn etcd_leader_index(urls: &[String]) -> Option<usize> {
    let mut ids = Vec::new();
    let mut leader = None;
    for url in urls {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(300))
            .with_timeout(Duration::from_millis(300));
        let status = async {
            let mut c = etcd_client::Client::connect([url.as_str()], Some(opts)).await?;
            c.status().await
        };
        match tokio::time::timeout(Duration::from_millis(600), status).await {
            Ok(Ok(s)) => {
                ids.push(s.header().map(|h| h.member_id()));
                leader = Some(s.leader());
            }
            _ => ids.push(None),
        }
    }
    ids.iter().position(|id| id.is_some() && *id == leader)
}

/// Kills the etcd leader member while a client writes every 20 ms; returns the longest time
/// between two successful writes and how the failed ones failed.
async fn leader_kill_window(cluster: &mut LoopbackEtcdCluster, run: u32) -> Result<(Duration, u64, u64)> {
    let urls = cluster.client_urls();
    let config = EtcdCoordinatorConfig::new(urls.clone())
        .with_namespace(format!("/kill{run}/"))
        .with_op_timeout(Duration::from_millis(500));
    let c = EtcdCoordinator::connect(config).await?;
    let Some(leader) = etcd_leader_index(&urls).await else {
        return Err("no etcd leader found".into());
    };
    let mut version = None;
    let mut last_ok = Instant::now();
    let mut worst = Duration::ZERO;
    let (mut no_quorum, mut other) = (0, 0);
    let end = Instant::now() + Duration::from_secs(6);
    let kill_at = Instant::now() + Duration::from_millis(500);
    let mut killed = false;
    while Instant::now() < end {
        if !killed && Instant::now() >= kill_at {
            cluster.kill(leader)?;
            killed = true;
        }
        let expected = version.map_or(Expected::Absent, Expected::Version);
        match c.compare_and_set("routing", expected, b"kr=jp".to_vec()).await {
            Ok(CasOutcome::Applied { version: v }) => {
                version = Some(v);
                worst = worst.max(last_ok.elapsed());
                last_ok = Instant::now();
            }
            Ok(CasOutcome::Conflict { current }) => version = current.map(|r| r.version),
            Err(CoordError::NoQuorum { .. }) => no_quorum += 1,
            Err(e) => {
                if other == 0 {
                    println!("  first non-NoQuorum write error while the etcd leader died: {e:?}");
                }
                other += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.restart(leader)?;
    LoopbackEtcdCluster::wait_healthy(&urls, Duration::from_secs(30)).await?;
    Ok((worst, no_quorum, other))
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let runs: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    if !LoopbackEtcdCluster::available() {
        println!("NOTE: no etcd binary found (apt-get install etcd-server); nothing measured");
        return Ok(());
    }
    let mut cluster = LoopbackEtcdCluster::start(3)?;
    LoopbackEtcdCluster::wait_healthy(&cluster.client_urls(), Duration::from_secs(30)).await?;
    let urls = cluster.client_urls();
    let names = [
        "lease detection (cut -> etcd watch RegionDown)",
        "planner RegionDown (heartbeats + lease)",
        "reroute (cut -> kr route moved)",
        "leader takeover (cut -> jp wins global job)",
    ];
    let mut hists: Vec<Histogram<u64>> = (0..4).map(|_| Histogram::new(3).expect("hist")).collect();
    for run in 0..runs {
        let r = one_run(&urls, run).await?;
        for (h, v) in hists.iter_mut().zip([r.lease_detection, r.planner_down, r.reroute, r.leader_takeover])
        {
            h.record(ms(v))?;
        }
    }
    println!("etcd coordinator, 3-member etcd cluster on loopback, {runs} runs, lease TTL 2 s,");
    println!("keep-alive 500 ms, heartbeats 250 ms (seed goal 30 s, target <= 5 s)");
    println!("{:<50} {:>8} {:>8} {:>8}", "", "p50 ms", "p99 ms", "max ms");
    for (name, h) in names.iter().zip(&hists) {
        println!(
            "{name:<50} {:>8} {:>8} {:>8}",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max()
        );
    }
    let kills = (runs / 4).clamp(1, 5);
    let mut window = Histogram::<u64>::new(3)?;
    let (mut nq, mut other) = (0, 0);
    for k in 0..kills {
        let (w, a, b) = leader_kill_window(&mut cluster, k).await?;
        window.record(ms(w))?;
        nq += a;
        other += b;
    }
    println!(
        "etcd leader member killed ({kills} times): longest gap between successful writes \
         p50 {} ms, max {} ms; failed writes: {nq} NoQuorum, {other} other",
        window.value_at_quantile(0.5),
        window.max()
    );
    Ok(())
}
