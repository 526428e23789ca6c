//! Regions on their own hosts with the matchmaking leader elected on a 3-member etcd
//! cluster whose members have hosts of their own (`multi-host --leader elected`), under bot
//! load, through a schedule aimed at the control plane: the leader's process is killed -9
//! (and restarted), the next leader is frozen past its lease (and thawed), an etcd member is
//! killed (and restarted). Each time another region takes over (the verdict asks for it
//! within 5 s), a thawed leader finds its lease gone and stops by itself, losing one etcd
//! member of three leaves matchmaking led (or led again within 5 s), and every replica ends
//! equal with no errors.
//!
//! Needs root (CI is); skips itself elsewhere unless `PVP_REQUIRE_HOSTS=1`.

use std::process::Command;

#[test]
fn an_elected_leader_is_replaced_when_its_host_is_killed_or_frozen() {
    if let Err(e) = pvp_ops::hosts::HostNet::check() {
        assert!(std::env::var("PVP_REQUIRE_HOSTS").as_deref() != Ok("1"), "hosts required: {e}");
        eprintln!("skipped: {e}");
        return;
    }
    if !pvp_global::coord::LoopbackEtcdCluster::available() {
        assert!(std::env::var("PVP_REQUIRE_HOSTS").as_deref() != Ok("1"), "etcd required with hosts");
        eprintln!("skipped: no etcd binary");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_multi-host"))
        .args(["--players", "150", "--duration", "38", "--seed", "11", "--leader", "elected"])
        .args(["--plan", "killleader,freezeleader,etcdkill"])
        .output()
        .expect("multi-host runs");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "multi-host failed");
    assert!(text.contains("verdict: passed"), "the verdict holds");
    // The history checker read every process's log and found nothing wrong: no result lost
    // (beyond the RPO allowance) or written twice, no player in two matches at once, no two
    // leaders in one term.
    assert!(text.contains("history: 0 violations"), "the history checker passed");
    assert!(!text.contains("history: 0 entries"), "the processes logged their history");
    // Each leader fault found its leader and was followed by another region's term.
    let takeovers: Vec<&str> = text.lines().filter(|l| l.contains(" took over after ")).collect();
    assert_eq!(takeovers.len(), 2, "{takeovers:?}");
    for l in &takeovers {
        assert!(!l.ends_with("never"), "{l}");
    }
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("thawed ") && l.ends_with("by itself: true")),
        "the thawed leader stopped on its own"
    );
    // Losing one etcd member of three: the leader keeps leading, or (its renewals failed while
    // the cluster elected a new etcd leader) stops and another term is led within 5 s.
    let etcd = text.lines().find(|l| l.starts_with("kill -9 etcd member ")).expect("the etcd kill ran");
    if let Some(gap) = etcd.split("no leader for ").nth(1) {
        let gap: f64 = gap.trim_end_matches(" s").parse().expect("a gap in seconds");
        assert!(gap <= 5.0, "{etcd}");
    } else {
        assert!(etcd.ends_with("leadership changed: false"), "{etcd}");
    }
    // Terms are handed out once each, in order: every term led had one leader.
    let terms: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("election: "))
        .filter_map(|l| l.split("leads term ").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert!(terms.len() >= 3, "a first leader and two takeovers: {terms:?}");
    assert!(terms.windows(2).all(|w| w[0] < w[1]), "each term led once, in order: {terms:?}");
}
