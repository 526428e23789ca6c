//! One matchmaking pass over 100,000 queued 1v1 tickets across kr / jp / sg, ours
//! (`GlobalMatchmaking::tick`: sort by rating, nearest feasible neighbours, region by min-max
//! latency, server allocation, handle delivery) against the seed's approach (for each ticket,
//! a pairwise scan of the queue for the first one within a fixed rating window that shares a
//! region within both latency limits) on the same tickets.
//!
//! Before measuring, prints a quality report for both: share of matched players within their
//! latency limit, mean / p99 rating spread, and p50 / p99 wait in a simulated stream.
//!
//! `cargo bench -p pvp-benches --bench matchmaking`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use pvp_core::ids::{PlayerId, RegionId};
use pvp_global::cluster::{FleetConfig, JP, KR, SG};
use pvp_global::matchmaking::{GameMode, GameModeId, GlobalMatchmaking, MatchRequest, MatchmakingConfig};

const REGIONS: [RegionId; 3] = [KR, JP, SG];
/// Inter-region RTT (ms), the reference matrix.
const RTT: [[u32; 3]; 3] = [[0, 30, 70], [30, 0, 70], [70, 70, 0]];
const TICKETS: usize = 100_000;
/// The seed's fixed rating window.
const SEED_WINDOW: f64 = 100.0;

#[derive(Debug, Clone, Copy)]
struct Player {
    id: u64,
    rating: f64,
    home: usize,
    lat_ms: [u32; 3],
    max_ms: u32,
    arrival: Duration,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        // Box-Muller.
        let (u, v) = (self.unit(), self.unit());
        mean + sd * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Ratings ~ N(1500, 300); home region kr 45% / jp 35% / sg 20%; latency to home 5..40 ms,
/// to another region home + RTT +-10 ms; limits 60..120 ms. Arrivals spread over `span`.
fn players(n: usize, seed: u64, span: Duration) -> Vec<Player> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let rating = rng.normal(1500.0, 300.0).max(0.0);
            let pick = rng.next() % 100;
            let home = if pick < 45 {
                0
            } else if pick < 80 {
                1
            } else {
                2
            };
            let base = 5 + (rng.next() % 36) as u32;
            let mut lat_ms = [0; 3];
            for (r, l) in lat_ms.iter_mut().enumerate() {
                let jitter = if r == home { 0 } else { (rng.next() % 21) as u32 };
                *l = (base + RTT[home][r] + jitter).saturating_sub(if r == home { 0 } else { 10 });
            }
            let max_ms = 60 + (rng.next() % 61) as u32;
            let arrival = span.mul_f64(i as f64 / n as f64);
            Player { id: i as u64 + 1, rating, home, lat_ms, max_ms, arrival }
        })
        .collect()
}

fn request(p: &Player, mode: GameModeId) -> MatchRequest {
    let mut req = MatchRequest::new(PlayerId::new(p.id), p.rating, REGIONS[p.home], mode)
        .max_latency(Duration::from_millis(u64::from(p.max_ms)));
    for (r, l) in REGIONS.iter().zip(p.lat_ms) {
        req = req.latency(*r, Duration::from_millis(u64::from(l)));
    }
    req
}

fn matchmaker() -> GlobalMatchmaking {
    let mut fleet = FleetConfig::reference();
    for r in &mut fleet.regions {
        // 100 slots per server: 600 servers per region hold every player in one region.
        r.min_servers = 600;
    }
    let config = MatchmakingConfig { queue_timeout: None, ..MatchmakingConfig::default() };
    let mut mm = GlobalMatchmaking::new(fleet, config, Duration::ZERO).expect("reference fleet");
    mm.heartbeat_all(Duration::ZERO);
    mm.reserve(TICKETS);
    mm
}

fn queued(ps: &[Player], mode: GameModeId) -> GlobalMatchmaking {
    let mut mm = matchmaker();
    for p in ps {
        // Results reach the driver through poll_match; handles are not needed here.
        drop(mm.find_match(request(p, mode), Duration::ZERO).expect("valid request"));
    }
    mm
}

/// The seed's pass: for each unmatched ticket, scan the rest of the queue for the first
/// unmatched ticket within the window that shares a region within both limits; host in the
/// shared region with the lowest worst latency. Returns (i, j, region) triples.
fn seed_pass(queue: &[Player], matched: &mut [bool], out: &mut Vec<(usize, usize, usize)>) {
    for i in 0..queue.len() {
        if matched[i] {
            continue;
        }
        let a = &queue[i];
        for j in i + 1..queue.len() {
            if matched[j] {
                continue;
            }
            let b = &queue[j];
            if (a.rating - b.rating).abs() > SEED_WINDOW {
                continue;
            }
            let mut best: Option<(u32, usize)> = None;
            for r in 0..3 {
                if a.lat_ms[r] <= a.max_ms && b.lat_ms[r] <= b.max_ms {
                    let worst = a.lat_ms[r].max(b.lat_ms[r]);
                    if best.is_none_or(|(w, _)| worst < w) {
                        best = Some((worst, r));
                    }
                }
            }
            if let Some((_, r)) = best {
                matched[i] = true;
                matched[j] = true;
                out.push((i, j, r));
                break;
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize - 1;
    sorted[rank.min(sorted.len() - 1)]
}

fn mean_of(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Quality on one 100k pass, and waits in a stream of 100k arrivals over 60 s with a pass
/// every 500 ms, for both approaches.
fn quality_report() {
    let ps = players(TICKETS, 42, Duration::ZERO);

    // One pass, ours.
    let mut mm = queued(&ps, GameMode::ONE_V_ONE);
    mm.tick(Duration::ZERO);
    let (mut within, mut total, mut spreads) = (0u64, 0u64, Vec::new());
    while let Some(m) = mm.poll_match() {
        spreads.push(m.rating_spread());
        for p in m.players() {
            total += 1;
            let asked = &ps[(p.player().get() - 1) as usize];
            within += u64::from(p.latency() <= Duration::from_millis(u64::from(asked.max_ms)));
        }
    }
    let spreads = sorted(spreads);
    let mean = spreads.iter().sum::<f64>() / spreads.len().max(1) as f64;
    println!(
        "quality, one pass over {TICKETS} tickets, ours: matched {total} ({:.1}%), within latency limit {:.2}%, \
         rating spread mean {mean:.1} p99 {:.1}",
        100.0 * total as f64 / TICKETS as f64,
        100.0 * within as f64 / total.max(1) as f64,
        percentile(&spreads, 99.0)
    );

    // One pass, seed.
    let mut matched = vec![false; ps.len()];
    let mut out = Vec::new();
    seed_pass(&ps, &mut matched, &mut out);
    let mut within = 0u64;
    let mut spreads = Vec::new();
    for &(i, j, r) in &out {
        spreads.push((ps[i].rating - ps[j].rating).abs());
        within += u64::from(ps[i].lat_ms[r] <= ps[i].max_ms) + u64::from(ps[j].lat_ms[r] <= ps[j].max_ms);
    }
    let spreads = sorted(spreads);
    let mean = spreads.iter().sum::<f64>() / spreads.len().max(1) as f64;
    println!(
        "quality, one pass over {TICKETS} tickets, seed: matched {} ({:.1}%), within latency limit {:.2}%, \
         rating spread mean {mean:.1} p99 {:.1}",
        2 * out.len(),
        100.0 * (2 * out.len()) as f64 / TICKETS as f64,
        100.0 * within as f64 / (2 * out.len()).max(1) as f64,
        percentile(&spreads, 99.0)
    );

    // Simulated stream: 100k arrivals over 60 s, a pass every 500 ms, until 120 s.
    let stream = players(TICKETS, 43, Duration::from_secs(60));
    let step = Duration::from_millis(500);
    let end = Duration::from_secs(120);

    let mut mm = matchmaker();
    let mut waits = Vec::with_capacity(TICKETS);
    let mut stream_spreads = Vec::new();
    let (mut next, mut now) = (0, Duration::ZERO);
    while now <= end {
        while next < stream.len() && stream[next].arrival <= now {
            // Queued at its arrival time, so waits count from arrival as for the seed.
            let p = &stream[next];
            drop(mm.find_match(request(p, GameMode::ONE_V_ONE), p.arrival).expect("valid"));
            next += 1;
        }
        mm.heartbeat_all(now);
        mm.tick(now);
        while let Some(m) = mm.poll_match() {
            stream_spreads.push(m.rating_spread());
            for p in m.players() {
                waits.push(p.waited().as_secs_f64());
            }
            let _ = mm.release_match(m.region(), m.match_id());
        }
        now += step;
    }
    let n = waits.len();
    let waits = sorted(waits);
    println!(
        "simulated stream, ours: {n} of {TICKETS} matched by {}s, wait p50 {:.2}s p99 {:.2}s, \
         rating spread mean {:.1} p99 {:.1}",
        end.as_secs(),
        percentile(&waits, 50.0),
        percentile(&waits, 99.0),
        mean_of(&stream_spreads),
        percentile(&sorted(stream_spreads.clone()), 99.0)
    );

    let mut queue: Vec<Player> = Vec::new();
    let mut waits = Vec::with_capacity(TICKETS);
    let mut stream_spreads = Vec::new();
    let (mut next, mut now) = (0, Duration::ZERO);
    let mut out = Vec::new();
    while now <= end {
        while next < stream.len() && stream[next].arrival <= now {
            queue.push(stream[next]);
            next += 1;
        }
        let mut matched = vec![false; queue.len()];
        out.clear();
        seed_pass(&queue, &mut matched, &mut out);
        for &(i, j, _) in &out {
            stream_spreads.push((queue[i].rating - queue[j].rating).abs());
            waits.push((now - queue[i].arrival).as_secs_f64());
            waits.push((now - queue[j].arrival).as_secs_f64());
        }
        let mut k = 0;
        queue.retain(|_| {
            k += 1;
            !matched[k - 1]
        });
        now += step;
    }
    let n = waits.len();
    let waits = sorted(waits);
    println!(
        "simulated stream, seed: {n} of {TICKETS} matched by {}s, wait p50 {:.2}s p99 {:.2}s, \
         rating spread mean {:.1} p99 {:.1}",
        end.as_secs(),
        percentile(&waits, 50.0),
        percentile(&waits, 99.0),
        mean_of(&stream_spreads),
        percentile(&sorted(stream_spreads.clone()), 99.0)
    );
}

/// What a measurement counts: wall-clock time, or the CPU time of this thread (from
/// `/proc/thread-self/schedstat`), which a shared, oversubscribed machine does not inflate
/// with time spent waiting for a core.
#[derive(Clone, Copy)]
enum Clock {
    Wall,
    ThreadCpu,
}

fn thread_cpu() -> Duration {
    let ns = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

struct Stopwatch(Clock, Instant, Duration);

impl Stopwatch {
    fn start(clock: Clock) -> Self {
        Self(clock, Instant::now(), thread_cpu())
    }
    fn elapsed(&self) -> Duration {
        match self.0 {
            Clock::Wall => self.1.elapsed(),
            Clock::ThreadCpu => thread_cpu().saturating_sub(self.2),
        }
    }
}

/// Steady state: one warmed matchmaker; each iteration queues the tickets (not timed), runs
/// one pass (timed), then ends every match so the fleet is empty again (not timed). The
/// first pass grows the buffers and is not timed.
fn steady_pass(ps: &[Player], mode: GameModeId, iters: u64, clock: Clock) -> Duration {
    let mut mm = matchmaker();
    let mut total = Duration::ZERO;
    // Waiting clients hold their handles across the pass, as in a server.
    let mut handles = Vec::with_capacity(ps.len());
    for i in 0..=iters {
        handles.clear();
        for p in ps {
            let mut p = *p;
            p.id += i * ps.len() as u64;
            handles.push(mm.find_match(request(&p, mode), Duration::ZERO).expect("valid request"));
        }
        let watch = Stopwatch::start(clock);
        black_box(mm.tick(Duration::ZERO));
        // Iteration 0 warms the buffers up and is not counted.
        if i > 0 {
            total += watch.elapsed();
        }
        while let Some(m) = mm.poll_match() {
            let _ = mm.release_match(m.region(), m.match_id());
        }
        for p in ps {
            mm.cancel(PlayerId::new(p.id + i * ps.len() as u64));
        }
    }
    total
}

fn seed_passes(ps: &[Player], iters: u64, clock: Clock) -> Duration {
    let mut matched = vec![false; ps.len()];
    let mut out = Vec::with_capacity(ps.len() / 2);
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        matched.fill(false);
        out.clear();
        let watch = Stopwatch::start(clock);
        seed_pass(ps, &mut matched, &mut out);
        black_box(out.len());
        total += watch.elapsed();
    }
    total
}

fn bench(c: &mut Criterion) {
    quality_report();
    let ps = players(TICKETS, 42, Duration::ZERO);
    for (group, clock) in
        [("matchmaking_pass_100k", Clock::Wall), ("matchmaking_pass_100k_cpu", Clock::ThreadCpu)]
    {
        let mut g = c.benchmark_group(group);
        g.sample_size(10);
        g.bench_function("ours_1v1", |b| {
            b.iter_custom(|iters| steady_pass(&ps, GameMode::ONE_V_ONE, iters, clock))
        });
        g.bench_function("ours_5v5", |b| {
            b.iter_custom(|iters| steady_pass(&ps, GameMode::FIVE_V_FIVE, iters, clock))
        });
        g.bench_function("seed_pairwise_scan_1v1", |b| b.iter_custom(|iters| seed_passes(&ps, iters, clock)));
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = pvp_benches::quick_criterion();
    targets = bench
}
criterion_main!(benches);
