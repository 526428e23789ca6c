//! The queue throughput targets measured as paired rounds: each round moves the same messages
//! through our queue and its peer back to back, and the report gives the median (with the
//! quartiles) of the per-round ratios. On a small VM whose cores change speed from one second
//! to the next (the 2-vCPU dev box flips between a fast and a slow cross-core mode), a ratio
//! taken inside one round is far steadier than two criterion groups measured a minute apart.
//!
//! `cargo bench -p pvp-benches --bench queue_ab -- [ROUNDS] [PAIRS]`
//! (defaults: 101 rounds, pairs `1,2`; each round moves 1,000,000 u64 values per queue).

// Shared with the criterion bench, which uses the parts this report does not.
#[allow(dead_code)]
mod queue_common;

use std::time::Duration;

use pvp_core::queue::{BoundedQueue, UnboundedQueue};
use queue_common::{CAP, Queue, transfer, transfer_batched};

/// Values moved per queue per round: long enough that thread start-up is noise.
const MSGS: u64 = 1_000_000;

/// Millions of values per second.
fn rate(d: Duration) -> f64 {
    MSGS as f64 / d.as_secs_f64() / 1e6
}

/// `(p25, p50, p75)` of `v`.
fn quartiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (v[n / 4], v[n / 2], v[(3 * n) / 4])
}

/// One comparison: a name, and a closure that runs one round of (ours, peer) and returns both
/// rates.
struct Pairing<'a> {
    name: &'static str,
    round: Box<dyn FnMut() -> (f64, f64) + 'a>,
}

fn pair<'a, A: Queue, B: Queue>(name: &'static str, a: &'a A, b: &'a B, p: usize) -> Pairing<'a> {
    Pairing { name, round: Box::new(move || (rate(transfer(a, MSGS, p, p)), rate(transfer(b, MSGS, p, p)))) }
}

/// Parses `[ROUNDS] [PAIRS]` (flags such as cargo's `--bench` are skipped): a positive round
/// count and a comma-separated list of positive pair counts.
fn parse_args(args: &[String]) -> Result<(usize, Vec<usize>), String> {
    let positive = |a: &str| a.trim().parse::<usize>().ok().filter(|&n| n > 0);
    let rounds = match args.first() {
        None => 101,
        Some(a) => positive(a).ok_or_else(|| format!("ROUNDS must be a positive number, not {a:?}"))?,
    };
    let pairs = match args.get(1) {
        None => vec![1, 2],
        Some(a) => a
            .split(',')
            .map(|p| {
                positive(p).ok_or_else(|| format!("PAIRS must be positive numbers like 1,2,4, not {a:?}"))
            })
            .collect::<Result<_, _>>()?,
    };
    if args.len() > 2 {
        return Err(format!("unexpected argument {:?}", args[2]));
    }
    Ok((rounds, pairs))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let (rounds, pairs) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!(
                "queue_ab: {e}\nusage: cargo bench -p pvp-benches --bench queue_ab -- [ROUNDS] [PAIRS]"
            );
            std::process::exit(2);
        }
    };
    println!("queue_ab: {rounds} paired rounds of {MSGS} values; ratio = ours / peer, p25 / p50 / p75");
    for p in pairs {
        let ours = BoundedQueue::<u64>::new(CAP).expect("capacity");
        let array = crossbeam_queue::ArrayQueue::<u64>::new(CAP);
        let unbounded = UnboundedQueue::<u64>::new();
        let seg = crossbeam_queue::SegQueue::<u64>::new();
        let mut comparisons = [
            pair("BoundedQueue / crossbeam ArrayQueue", &ours, &array, p),
            Pairing {
                name: "BoundedQueue batch32 / BoundedQueue single",
                round: Box::new(|| {
                    (rate(transfer_batched(&ours, MSGS, p, p)), rate(transfer(&ours, MSGS, p, p)))
                }),
            },
            pair("UnboundedQueue / crossbeam SegQueue", &unbounded, &seg, p),
        ];
        let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::with_capacity(rounds); comparisons.len()];
        for _ in 0..rounds {
            for (c, r) in comparisons.iter_mut().zip(results.iter_mut()) {
                r.push((c.round)());
            }
        }
        for (c, r) in comparisons.iter().zip(results) {
            let (a25, a50, a75) = quartiles(r.iter().map(|x| x.0).collect());
            let (_, b50, _) = quartiles(r.iter().map(|x| x.1).collect());
            let (q25, q50, q75) = quartiles(r.iter().map(|x| x.0 / x.1).collect());
            println!(
                "{p}P{p}C {:<46} ratio {q25:.2} / {q50:.2} / {q75:.2}   ours {a50:.1} M/s ({a25:.1}-{a75:.1}), peer {b50:.1} M/s",
                c.name
            );
        }
    }
}
