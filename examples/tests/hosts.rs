//! Regions on their own hosts (network namespaces on a shaped router), the main job's binary
//! in each, under bot load, through a fault schedule: kill -9 and restart, freeze and thaw,
//! a host cut off, a link cut one way. The leader notices each outage, a restarted region
//! serves again, and every replica ends equal.
//!
//! Needs root (CI is); skips itself elsewhere unless `PVP_REQUIRE_HOSTS=1`.

use std::process::Command;

fn secs_after(line: &str, key: &str) -> Option<f64> {
    line.split(key).nth(1)?.split(" s").next()?.trim().parse().ok()
}

#[test]
fn regions_on_their_own_hosts_survive_host_faults() {
    if let Err(e) = pvp_ops::hosts::HostNet::check() {
        assert!(std::env::var("PVP_REQUIRE_HOSTS").as_deref() != Ok("1"), "hosts required: {e}");
        eprintln!("skipped: {e}");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_multi-host"))
        .args([
            "--players",
            "150",
            "--duration",
            "38",
            "--seed",
            "11",
            "--plan",
            "kill,freeze,isolate,oneway",
        ])
        .output()
        .expect("multi-host runs");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "multi-host failed");
    assert!(text.contains("verdict: passed"), "every process exited 0 with 0 errors and converged replicas");
    // The history checker read every process's log and found nothing wrong: no result lost
    // (beyond the RPO allowance) or written twice, no player in two matches at once, no two
    // leaders in one term.
    assert!(text.contains("history: 0 violations"), "the history checker passed");
    assert!(!text.contains("history: 0 entries"), "the processes logged their history");

    // The kill: the leader sees the region unhealthy within 5 s, and the restarted process
    // (a new incarnation with an empty replica) hosts matches again within 30 s.
    let kill = text.lines().find(|l| l.starts_with("kill -9 ")).expect("a kill line");
    let noticed = secs_after(kill, "unhealthy after ").expect("the leader noticed the kill");
    assert!(noticed <= 5.0, "noticed after {noticed} s");
    let serving =
        secs_after(kill, "serving again (first match finished there) after ").expect("serving again");
    assert!(serving <= 30.0, "serving again after {serving} s");

    // A frozen process and a host cut off both ways are seen as outages.
    for kind in ["ProcessFreeze on ", "NetworkPartition on jp for", "NetworkPartition on sg for"] {
        if let Some(l) = text.lines().find(|l| l.starts_with(kind)) {
            assert!(l.ends_with("unhealthy: true"), "{l}");
        }
    }
    assert!(text.lines().any(|l| l.starts_with("ProcessFreeze on ")), "the freeze ran");
    // The cuts dropped real packets on the router.
    let shaper = text.lines().find(|l| l.starts_with("shaper: ")).expect("shaper line");
    let cut: u64 = shaper
        .split("dropped ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("dropped count");
    assert!(cut > 0, "{shaper}");
}
