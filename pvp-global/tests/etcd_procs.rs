//! The kr failover scenario once with each region in its own OS process (this test binary
//! re-executed as a region), on a real 3-member etcd cluster on loopback. Skips itself (with a
//! note) when no etcd binary is installed. The scenario is `pvp_global::failover::sim::procs`
//! (features `etcd` and `sim`). Its own test binary: it re-executes itself as the region
//! processes (`region_process_entry`), and it needs a real etcd.
#![cfg(all(feature = "etcd", feature = "sim"))]

use std::process::Command;
use std::time::Duration;

use pvp_global::coord::LoopbackEtcdCluster;
use pvp_global::failover::sim::procs;

const GOAL: Duration = Duration::from_secs(5);
const ROLE_ENV: &str = "PVP_ETCD_PROCS_REGION";

/// Not a test of its own: the entry point of a region process when re-executed with
/// `PVP_ETCD_PROCS_REGION` set; a no-op otherwise.
#[test]
fn region_process_entry() {
    let Ok(args) = std::env::var(ROLE_ENV) else {
        return;
    };
    let args: Vec<String> = args.split(' ').map(str::to_owned).collect();
    let region = procs::RegionArgs::parse(&args).expect("region args");
    procs::region_main(region).expect("region process");
}

fn start_cluster() -> Option<LoopbackEtcdCluster> {
    if !LoopbackEtcdCluster::available() {
        eprintln!("NOTE: skipping etcd process test, no etcd binary (apt-get install etcd-server)");
        return None;
    }
    let cluster = LoopbackEtcdCluster::start(3).expect("start etcd");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(LoopbackEtcdCluster::wait_healthy(&cluster.client_urls(), Duration::from_secs(30)))
        .expect("etcd healthy");
    Some(cluster)
}

fn scenario(fault: procs::Fault) {
    let Some(cluster) = start_cluster() else {
        return;
    };
    let exe = std::env::current_exe().expect("test binary");
    let command = |a: &procs::RegionArgs| {
        let mut c = Command::new(&exe);
        c.args(["--exact", "region_process_entry", "--nocapture", "--test-threads", "1"])
            .env(ROLE_ENV, a.to_args().join(" "));
        c
    };
    let r = procs::run_once(&command, &cluster.client_urls(), 0, fault).expect("scenario");
    let ctx = format!("{fault:?}: {r:#?}");
    let detection = r.detection.unwrap_or_else(|| panic!("kr's lease expiry never seen; {ctx}"));
    let reroute = r.reroute.unwrap_or_else(|| panic!("never rerouted; {ctx}"));
    let takeover = r.takeover.unwrap_or_else(|| panic!("no leader takeover; {ctx}"));
    assert!(detection <= GOAL, "detection {detection:?} > 5 s; {ctx}");
    assert!(reroute <= GOAL, "reroute {reroute:?} > 5 s; {ctx}");
    assert!(takeover <= GOAL, "takeover {takeover:?} > 5 s; {ctx}");
    let gap = r.client_gap.unwrap_or_else(|| panic!("client never saw a new route; {ctx}"));
    assert!(gap <= GOAL, "client gap {gap:?} > 5 s; {ctx}");
    assert!(r.client_queries > 0, "client asked nothing; {ctx}");
    assert!(r.route_back.is_some(), "routing never returned to kr; {ctx}");
}

#[test]
fn three_region_processes_kr_killed_detected_and_rerouted_within_5s() {
    scenario(procs::Fault::Crash);
}

#[test]
fn three_region_processes_kr_frozen_detected_rerouted_and_rejoins() {
    scenario(procs::Fault::Freeze);
}
