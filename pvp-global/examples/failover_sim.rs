//! Detection and failover times of the local coordinator + failover planner, measured on the
//! deterministic simulation (virtual time) over many seeds.
//!
//! `cargo run --release -p pvp-global --features sim --example failover_sim -- [runs]`

use std::time::Duration;

use hdrhistogram::Histogram;
use pvp_global::failover::sim::planner as sim;

fn main() {
    let runs: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(500);
    let mut hists: Vec<(&str, Histogram<u64>)> = [
        "detection (partition -> RegionDown)",
        "reroute (partition -> kr route moved)",
        "evacuation (partition -> last kr player offered)",
        "return (heal -> routing back to kr)",
    ]
    .into_iter()
    .map(|n| (n, Histogram::new(3).expect("histogram")))
    .collect();
    let mut over_limit = 0;
    let mut split_brain = 0;
    let mut kr_before_catch_up = 0;
    let mut placements = 0;
    let mut stranded = 0;
    let mut offers = 0;
    for seed in 0..runs {
        let r = sim::run(seed);
        let values =
            [r.detection, r.reroute, r.evacuation, r.restored_at.map(|t| t.saturating_sub(r.heal_at))];
        for ((_, h), v) in hists.iter_mut().zip(values) {
            let v = v.unwrap_or(Duration::from_secs(3600));
            h.record(v.as_millis() as u64).expect("in range");
        }
        over_limit += r.over_limit + r.offers_over_limit;
        split_brain += r.split_brain_steps;
        kr_before_catch_up += r.kr_placements_while_unavailable;
        placements += r.placements;
        stranded += r.stranded;
        offers += r.offers;
    }
    println!("local coordinator simulation: {runs} seeded runs, lease TTL 2 s, heartbeats 250 ms");
    println!("{:<52} {:>8} {:>8} {:>8}   (seed goal 30 s, target <= 5 s)", "", "p50 ms", "p99 ms", "max ms");
    for (name, h) in &hists {
        println!(
            "{name:<52} {:>8} {:>8} {:>8}",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max()
        );
    }
    println!(
        "placements {placements}, reconnect offers {offers}, stranded {stranded}, \
         over latency limit {over_limit}, kr placements before catch-up {kr_before_catch_up}, \
         split-brain steps {split_brain}"
    );
}
