//! Convergence report: kr, jp, sg (RTT kr-jp 30 ms, kr-sg 70 ms, jp-sg 70 ms), 1% loss, 1%
//! duplication, 3 ms jitter; 100 friend-list writes per second spread over the three regions
//! for 20 virtual seconds. For every write: the time until all three regions hold it. Delta-state
//! sync (ours) side by side with full-state shipping (each touched key's whole state, no acks,
//! anti-entropy as the only repair), same seed, same writes.
//!
//! `cargo run --release -p pvp-global --example convergence [seed] [loss]`

use hdrhistogram::Histogram;
use pvp_core::{PlayerId, RegionId};
use pvp_global::sync::{Key, LinkConfig, SimCluster, Value};
use std::time::Duration;

const PLAYERS: u64 = 500;
const PREFILL: u64 = 100;

struct Report {
    hist: Histogram<u64>,
    bytes: u64,
    writes: u64,
    unconverged: u64,
}

fn run(seed: u64, loss: f64, full_state: bool) -> Report {
    let r = |s: &str| RegionId::new(s).expect("valid region");
    let (kr, jp, sg) = (r("kr"), r("jp"), r("sg"));
    let link = LinkConfig::new(Duration::from_millis(35))
        .jitter(Duration::from_millis(3))
        .loss(loss)
        .duplicate(0.01);
    let t0 = Duration::from_secs(1_700_000_000);
    let mut c = SimCluster::new(seed, &[kr, jp, sg], link, t0, |cfg| cfg.full_state_shipping = full_state)
        .expect("valid config");
    c.net().set_rtt(kr, jp, Duration::from_millis(30));
    c.net().set_rtt(kr, sg, Duration::from_millis(70));
    c.net().set_rtt(jp, sg, Duration::from_millis(70));

    // Every player starts with PREFILL friends, spread over the regions, fully synced.
    for p in 0..PLAYERS {
        for f in 0..PREFILL {
            let now = c.now();
            let node = c.node_mut((f % 3) as usize).expect("running");
            node.add_friend(PlayerId::new(p), PlayerId::new(1_000_000 + f), now).expect("write");
        }
        if p % 50 == 49 {
            c.run_for(Duration::from_millis(200));
        }
    }
    c.run_for(Duration::from_secs(3));
    let bytes_before = c.net().stats().bytes;

    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000, 3).expect("histogram bounds");
    let mut pending: Vec<(Duration, PlayerId, u64)> = Vec::new();
    let mut rng = seed | 1;
    let mut writes = 0;
    let start = c.now();
    let end_writes = start + Duration::from_secs(20);
    let end = end_writes + Duration::from_secs(5);
    let mut next_write = start;
    while c.now() < end {
        if c.now() >= next_write && c.now() < end_writes {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let player = PlayerId::new((rng >> 33) % PLAYERS);
            let friend = 2_000_000 + writes;
            let region = ((rng >> 20) % 3) as usize;
            let now = c.now();
            c.node_mut(region)
                .expect("running")
                .add_friend(player, PlayerId::new(friend), now)
                .expect("write");
            pending.push((now, player, friend));
            writes += 1;
            next_write += Duration::from_millis(10);
        }
        c.run_for(Duration::from_millis(1));
        let now = c.now();
        pending.retain(|(at, player, friend)| {
            let everywhere = (0..3).all(|i| {
                matches!(c.node(i).and_then(|n| n.get(&Key::Friends(*player))), Some(Value::Set(s)) if s.contains(friend))
            });
            if everywhere {
                let ms = u64::try_from((now - *at).as_millis()).unwrap_or(u64::MAX).max(1);
                let _ = hist.record(ms);
            }
            !everywhere
        });
    }
    Report { hist, bytes: c.net().stats().bytes - bytes_before, writes, unconverged: pending.len() as u64 }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seed = args.next().and_then(|s| s.parse().ok()).unwrap_or(42);
    let loss = args.next().and_then(|s| s.parse().ok()).unwrap_or(0.01);
    println!("convergence across kr/jp/sg, loss {:.1}%, seed {seed}", loss * 100.0);
    println!(
        "{:<22} {:>7} {:>7} {:>7} {:>7} {:>12} {:>11}",
        "strategy", "p50 ms", "p99 ms", "max ms", "writes", "bytes/write", "unconverged"
    );
    let mut rows = Vec::new();
    for (name, full) in [("delta-state (pvp)", false), ("full-state shipping", true)] {
        let r = run(seed, loss, full);
        println!(
            "{:<22} {:>7} {:>7} {:>7} {:>7} {:>12} {:>11}",
            name,
            r.hist.value_at_quantile(0.5),
            r.hist.value_at_quantile(0.99),
            r.hist.max(),
            r.writes,
            r.bytes / r.writes.max(1),
            r.unconverged
        );
        rows.push(r);
    }
    if let [d, f] = &rows[..] {
        println!(
            "ratio full/delta: p99 {:.2}x, bytes/write {:.1}x",
            f.hist.value_at_quantile(0.99) as f64 / d.hist.value_at_quantile(0.99).max(1) as f64,
            f.bytes as f64 / d.bytes.max(1) as f64
        );
    }
}
