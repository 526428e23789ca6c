//! The kr failover scenario with each region (kr, jp, sg) in its own OS process, on a real
//! 3-member etcd cluster on loopback, measured over many runs against the seed's 30 s.
//!
//! Each region process is this binary re-executed with `--role region --region kr
//! --endpoints ...`: `EtcdCoordinator` with a 2 s lease kept alive every 500 ms, a membership
//! watch, UDP heartbeats every 250 ms, `RegionHealthTracker` + `FailoverPlanner`, a campaign for
//! the global job, and a route service a client polls. kr is killed (SIGKILL) and restarted,
//! then (second table) frozen (SIGSTOP) past its lease and resumed (SIGCONT).
//!
//! `cargo run --release -p pvp-global --features etcd,sim --example etcd_failover_procs -- [runs]`

use std::process::Command;
use std::time::Duration;

use hdrhistogram::Histogram;
use pvp_global::coord::LoopbackEtcdCluster;
use pvp_global::failover::sim::procs;

const SEED_FAILOVER: Duration = Duration::from_secs(30);

fn main() -> procs::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(region) = procs::RegionArgs::parse(&args) {
        return procs::region_main(region);
    }
    let runs: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    if !LoopbackEtcdCluster::available() {
        println!("NOTE: no etcd binary found (apt-get install etcd-server); nothing measured");
        return Ok(());
    }
    let cluster = LoopbackEtcdCluster::start(3)?;
    let urls = cluster.client_urls();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(LoopbackEtcdCluster::wait_healthy(&urls, Duration::from_secs(30)))?;
    let exe = std::env::current_exe()?;
    let command = |a: &procs::RegionArgs| {
        let mut c = Command::new(&exe);
        c.args(a.to_args());
        c
    };
    for fault in [procs::Fault::Crash, procs::Fault::Freeze] {
        measure(&command, &urls, runs, fault)?;
    }
    Ok(())
}

fn measure(
    command: &dyn Fn(&procs::RegionArgs) -> Command,
    urls: &[String],
    runs: u32,
    fault: procs::Fault,
) -> procs::Result<()> {
    let (what, back) = match fault {
        procs::Fault::Crash => ("SIGKILLed, then a fresh kr process started", "restart"),
        procs::Fault::Freeze => ("SIGSTOPped (frozen past its lease), then SIGCONTed", "SIGCONT"),
    };
    let names = [
        "detection (fault -> jp and sg see kr's lease expire)".to_owned(),
        "planner Down (fault -> both planners mark kr Down)".to_owned(),
        "reroute (fault -> both route Korean players away)".to_owned(),
        "leader takeover (fault -> jp/sg wins kr's global job)".to_owned(),
        "client gap (fault -> client last told 'kr')".to_owned(),
        format!("return ({back} -> both route Korean players to kr)"),
        format!("client return ({back} -> client told 'kr')"),
    ];
    let mut hists: Vec<Histogram<u64>> = (0..names.len()).map(|_| Histogram::new(3).expect("hist")).collect();
    let (mut queries, mut stale, mut errors, mut failed) = (0, 0, 0, 0);
    for run in 0..runs {
        let run_id = run + if fault == procs::Fault::Freeze { 10_000 } else { 0 };
        let r = match procs::run_once(command, urls, run_id, fault) {
            Ok(r) => r,
            Err(e) => {
                println!("run {run} failed: {e}");
                failed += 1;
                continue;
            }
        };
        let values =
            [r.detection, r.planner_down, r.reroute, r.takeover, r.client_gap, r.route_back, r.client_back];
        for (h, v) in hists.iter_mut().zip(values) {
            if let Some(v) = v {
                h.record(v.as_millis() as u64)?;
            }
        }
        queries += r.client_queries;
        stale += r.client_stale;
        errors += r.client_errors;
    }
    println!();
    println!("three region processes + 3-member etcd on loopback, {runs} runs ({failed} failed): kr {what}");
    println!("lease TTL 2 s, keep-alive 500 ms, heartbeats 250 ms; seed failover 30 s");
    println!("{:<58} {:>7} {:>7} {:>7} {:>9}", "", "p50 ms", "p99 ms", "max ms", "p99/30 s");
    for (name, h) in names.iter().zip(&hists) {
        let p99 = h.value_at_quantile(0.99);
        println!(
            "{name:<58} {:>7} {:>7} {:>7} {:>9.3}",
            h.value_at_quantile(0.5),
            p99,
            h.max(),
            p99 as f64 / SEED_FAILOVER.as_millis() as f64
        );
    }
    println!(
        "client (polls jp and sg every 20 ms for a Korean player's route) between fault and {back}: \
         {queries} queries, {stale} answered 'kr' (dead region), {errors} unanswered"
    );
    Ok(())
}
