//! Recovery report (RPO/RTO): a region holding `N` players' profiles, scores and friend lists
//! saves a snapshot, restarts from it (wall time of load + restore measured), and, side by
//! side, a region whose snapshot is corrupt recovers from its peers over the simulated
//! kr/jp/sg network (virtual time until it equals the others).
//!
//! `cargo run --release -p pvp-global --example recovery [players]`

use pvp_core::{PlayerId, RegionId};
use pvp_global::leaderboard::{GameMode, ScoreOperator};
use pvp_global::sync::{CrossRegionSync, Key, LinkConfig, SimCluster, SnapshotStore, WriteOp};
use std::time::{Duration, Instant};

fn main() {
    let players: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let r = |s: &str| RegionId::new(s).expect("valid region");
    let (kr, jp, sg) = (r("kr"), r("jp"), r("sg"));
    let t0 = Duration::from_secs(1_700_000_000);
    let mut c =
        SimCluster::new(1, &[kr, jp, sg], LinkConfig::new(Duration::from_millis(35)).loss(0.01), t0, |_| {})
            .expect("config");
    c.net().set_rtt(kr, jp, Duration::from_millis(30));
    c.net().set_rtt(kr, sg, Duration::from_millis(70));
    c.net().set_rtt(jp, sg, Duration::from_millis(70));
    for i in 0..3 {
        c.node_mut(i).expect("running").define_mode(GameMode(1), ScoreOperator::Best).expect("mode");
    }
    for p in 0..players {
        let now = c.now();
        let n = c.node_mut((p % 3) as usize).expect("running");
        let pid = PlayerId::new(p);
        n.write(Key::Profile(pid), WriteOp::ProfileAdd { field: "wins".into(), delta: 3 }, now)
            .expect("write");
        n.submit_score(GameMode(1), pid, (p * 7919 % 10_000) as i64, now).expect("write");
        n.add_friend(pid, PlayerId::new(p + 1), now).expect("write");
        if p % 2_000 == 1_999 {
            c.run_for(Duration::from_millis(100));
        }
    }
    c.run_for(Duration::from_secs(5));
    assert!(c.converged(), "cluster must be in sync before the crash");
    let keys = c.node(0).expect("running").len();

    let dir = tempfile_dir();
    let store = SnapshotStore::new(&dir, kr).expect("store");
    let t = Instant::now();
    let bytes = store.save_node(c.node(0).expect("running")).expect("save");
    let save = t.elapsed();
    let t = Instant::now();
    let encoded = postcard::to_stdvec(&c.node(0).expect("running").snapshot()).map_or(0, |v| v.len());
    let encode_only = t.elapsed();
    let cfg = c.node(0).expect("running").config().clone();
    let t = Instant::now();
    let snap = store.load().expect("load").expect("present");
    let restored = CrossRegionSync::restore(cfg, snap, c.now());
    let restore = t.elapsed();
    assert_eq!(restored.len(), keys);
    assert!(encoded > 0);

    // Corrupt snapshot: recover from peers instead, in virtual time.
    c.crash(0);
    c.restart(0, None);
    let start = c.now();
    let mut waited = Duration::ZERO;
    while !c.converged() && waited < Duration::from_secs(600) {
        c.run_for(Duration::from_millis(100));
        waited = c.now() - start;
    }
    println!("recovery of a region holding {keys} keys ({players} players)");
    println!("{:<34} {:>14}", "snapshot size", format!("{} KiB", bytes / 1024));
    println!("{:<34} {:>14.1?}", "snapshot save_node (encode+fsync)", save);
    println!("{:<34} {:>14.1?}", "copy + encode only (in RAM)", encode_only);
    println!("{:<34} {:>14.1?}", "restart from snapshot (load+merge)", restore);
    println!("{:<34} {:>14.1?}", "recover from peers (virtual time)", waited);
    println!("converged after peer recovery: {}", c.converged());
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("pvp-recovery-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&d);
    d
}
