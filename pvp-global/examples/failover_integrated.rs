//! Detection and reroute times of `RegionFailover` driving the real matchmaking and sync layers
//! (the integrated deterministic simulation, virtual time) over many seeds, against the seed
//! design's 30 s failover.
//!
//! `cargo run --release -p pvp-global --features sim --example failover_integrated -- [runs]`

use std::time::Duration;

use hdrhistogram::Histogram;
use pvp_global::failover::sim::integrated as sim;

const SEED_FAILOVER: Duration = Duration::from_secs(30);

fn main() {
    let runs: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let mut hists: Vec<(&str, Histogram<u64>)> = [
        "detection (partition -> RegionDown(kr))",
        "reroute (partition -> matchmaking skips kr)",
        "return gate (kr health back -> restored)",
        "return (heal -> routing back to kr)",
    ]
    .into_iter()
    .map(|n| (n, Histogram::new(3).expect("histogram")))
    .collect();
    let never = Duration::from_secs(3600);
    let (mut matches, mut over_limit, mut lost, mut missing, mut while_out) = (0, 0, 0, 0, 0);
    let (mut rerouted, mut results, mut cut_results, mut not_converged) = (0, 0, 0, 0);
    let (mut blind, mut offers, mut stranded, mut overflows) = (0, 0, 0, 0);
    for seed in 0..runs {
        let r = sim::run(seed);
        let gate = match (r.catch_up_started, r.restored_at) {
            (Some(s), Some(e)) => Some(e.saturating_sub(s)),
            _ => None,
        };
        let values = [r.detection, r.reroute, gate, r.restored_at.map(|t| t.saturating_sub(r.heal_at))];
        for ((_, h), v) in hists.iter_mut().zip(values) {
            h.record(v.unwrap_or(never).as_millis() as u64).expect("in range");
        }
        matches += r.matches;
        over_limit += r.over_limit + r.offers_over_limit;
        lost += r.lost_results;
        missing += r.missing_at_restore;
        while_out += r.kr_matches_while_out;
        rerouted += r.korean_matches_rerouted;
        results += r.results_recorded;
        cut_results += r.results_recorded_in_kr_while_cut;
        not_converged += u64::from(!r.converged);
        blind += r.kr_matches_before_reroute;
        offers += r.reconnect_offers;
        stranded += r.stranded;
        overflows += r.log_overflows;
    }
    println!(
        "integrated failover simulation: {runs} seeded runs (RegionFailover + GlobalMatchmaking + \
         CrossRegionSync on SimNetwork + LocalCoordinator), lease TTL 2 s, heartbeats 250 ms"
    );
    println!("{:<46} {:>8} {:>8} {:>8} {:>12}", "", "p50 ms", "p99 ms", "max ms", "p99 / 30 s");
    for (name, h) in &hists {
        let p99 = h.value_at_quantile(0.99);
        println!(
            "{name:<46} {:>8} {:>8} {:>8} {:>12.3}",
            h.value_at_quantile(0.5),
            p99,
            h.max(),
            p99 as f64 / SEED_FAILOVER.as_millis() as f64
        );
    }
    println!(
        "matches {matches}, Korean matches rerouted {rerouted}, kr matches while out {while_out}, \
         players placed or offered over their latency limit {over_limit}"
    );
    println!(
        "kr matches formed between partition and reroute {blind}; players on kr servers when it \
         went Down: {offers} reconnect offers, {stranded} stranded notices"
    );
    println!(
        "results recorded {results} ({cut_results} in cut-off kr), lost after heal {lost}, \
         missing in a replica at restore {missing}, runs not converged {not_converged}, \
         delta-log overflows {overflows}"
    );
}
