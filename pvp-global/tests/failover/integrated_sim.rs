//! The integrated simulation (`failover::sim::integrated`): the real matchmaking, sync and
//! coordination layers driven by `RegionFailover` in virtual time. kr is partitioned under
//! match load and healed; no match result is lost, routing returns only after catch-up, every
//! seed replays exactly, and a failing seed is printed with its whole report.

use std::time::Duration;

use pvp_global::failover::sim::integrated as sim;

const GOAL: Duration = Duration::from_secs(5);

/// Seeds per test; two tests run them on two threads.
const SEEDS: u64 = 10;

fn check(seed: u64) -> sim::IntegratedReport {
    let r = sim::run(seed);
    let ctx = format!("seed {seed}: {r:#?}");
    let detection = r.detection.unwrap_or_else(|| panic!("kr never detected down; {ctx}"));
    let reroute = r.reroute.unwrap_or_else(|| panic!("matchmaking never skipped kr; {ctx}"));
    assert!(detection <= GOAL, "detection {detection:?} > 5 s; {ctx}");
    assert!(reroute <= GOAL, "reroute {reroute:?} > 5 s; {ctx}");
    let first = r.first_rerouted_match.unwrap_or_else(|| panic!("no Korean match rerouted; {ctx}"));
    assert!(first <= GOAL, "first rerouted Korean match after {first:?}; {ctx}");
    assert!(r.korean_matches_rerouted > 10, "too few Korean matches rerouted; {ctx}");
    assert_eq!(r.kr_matches_while_out, 0, "kr took a match while out; {ctx}");
    assert!(r.matches > 500 && r.no_capacity == 0, "load did not run as meant; {ctx}");
    assert_eq!(r.over_limit, 0, "a player was placed over their latency limit; {ctx}");
    assert_eq!(r.offers_over_limit, 0, "a reconnect offer broke a latency limit; {ctx}");
    // No match result lost: results recorded in kr while it was cut off, and everywhere else,
    // are in every replica after the heal.
    assert!(r.results_recorded_in_kr_while_cut > 0, "no result recorded in cut-off kr; {ctx}");
    assert_eq!(r.lost_results, 0, "match results lost; {ctx}");
    assert!(r.converged, "replicas did not converge; {ctx}");
    assert_eq!(r.log_overflows, 0, "delta log overflowed (gate is exact only without); {ctx}");
    // Routing returns to kr only after it caught up.
    let started = r.catch_up_started.unwrap_or_else(|| panic!("kr never came back; {ctx}"));
    let restored = r.restored_at.unwrap_or_else(|| panic!("routing never returned to kr; {ctx}"));
    assert!(started >= r.heal_at && restored >= started, "restored before its return; {ctx}");
    assert!(restored >= r.sync_heal_at, "restored while its sync was still cut; {ctx}");
    assert_eq!(r.missing_at_restore, 0, "kr restored before it caught up; {ctx}");
    assert!(r.kr_matches_after_restore > 0, "kr took no match after its restore; {ctx}");
    assert!(r.reconnect_offers + r.stranded > 0, "kr players were never moved or told; {ctx}");
    r
}

fn check_seeds(seeds: std::ops::Range<u64>) {
    let mut detections = Vec::new();
    let mut waited = 0;
    for seed in seeds {
        let r = check(seed);
        detections.push(r.detection.unwrap_or_default());
        // The sync path healed after kr's health recovered: the gate held routing back.
        if r.catch_up_started.is_some_and(|s| s < r.sync_heal_at) {
            waited += 1;
        }
    }
    // Seeds partition at different heartbeat phases: detection times must vary.
    detections.sort();
    assert!(detections.first() < detections.last(), "{detections:?}");
    assert!(waited > 0, "no seed made the catch-up gate wait");
}

#[test]
fn partition_kr_under_load_reroutes_within_5s_loses_no_result_and_returns_after_catch_up() {
    check_seeds(0..SEEDS);
}

#[test]
fn more_seeds() {
    check_seeds(SEEDS..2 * SEEDS);
}

#[test]
fn same_seed_replays_exactly() {
    let (a, b) = (sim::run(3), sim::run(3));
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}
