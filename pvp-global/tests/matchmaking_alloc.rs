//! A matchmaking pass allocates nothing per ticket once its buffers have grown: a counting
//! global allocator measures the allocations of `tick` in the steady state.
//! Only the measuring thread's allocations count (a thread-local flag): the test harness's
//! thread allocates while it waits for the result, and that must not race into the window.
//! Its own test binary: the counting allocator is the process's `#[global_allocator]`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pvp_core::ids::PlayerId;
use pvp_global::cluster::{FleetConfig, JP, KR, SG};
use pvp_global::matchmaking::{GameMode, GlobalMatchmaking, MatchRequest, MatchmakingConfig};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the measuring thread (const-initialised: reading it never allocates).
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn enqueue(mm: &mut GlobalMatchmaking, first: u64, n: u64, now: Duration, seed: &mut u64) {
    let mut next = || {
        *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for i in 0..n {
        let rating = 900.0 + (next() % 1200) as f64;
        let home = [KR, JP, SG][(next() % 3) as usize];
        let req = MatchRequest::new(PlayerId::new(first + i), rating, home, GameMode::ONE_V_ONE)
            .max_latency(Duration::from_millis(100))
            .latency(KR, Duration::from_millis(5 + next() % 60))
            .latency(JP, Duration::from_millis(5 + next() % 60))
            .latency(SG, Duration::from_millis(5 + next() % 90));
        // Handles are dropped: results reach the driver through poll_match.
        drop(mm.find_match(req, now).expect("valid request"));
    }
}

#[test]
fn steady_state_pass_allocates_nothing_per_ticket() {
    const N: u64 = 20_000;
    let mut fleet = FleetConfig::reference();
    for r in &mut fleet.regions {
        r.min_servers = 300;
    }
    let mut mm = GlobalMatchmaking::new(fleet, MatchmakingConfig::default(), Duration::ZERO).unwrap();
    mm.reserve(2 * N as usize);
    let mut seed = 7;
    let mut now = Duration::ZERO;
    let mut allocs = Vec::new();
    let mut matched = Vec::new();
    for round in 0..4u64 {
        mm.heartbeat_all(now);
        enqueue(&mut mm, 1 + round * N, N, now, &mut seed);
        ALLOCS.store(0, Ordering::Relaxed);
        COUNTING.with(|c| c.set(true));
        let report = mm.tick(now);
        COUNTING.with(|c| c.set(false));
        allocs.push(ALLOCS.load(Ordering::Relaxed));
        matched.push(report.matched_players);
        // End every match so the fleet has room for the next round.
        while let Some(m) = mm.poll_match() {
            mm.release_match(m.region(), m.match_id()).unwrap();
        }
        now += Duration::from_secs(1);
    }
    assert!(matched.iter().all(|&m| m > (N as u32) / 2), "rounds matched {matched:?}");
    // Round 0 grows the buffers; later rounds, each over at least 20,000 tickets, must not
    // allocate per ticket (a handful of allocations at most, whatever the queue size).
    assert!(allocs[1..].iter().all(|&a| a <= 8), "allocations per pass: {allocs:?}");
    eprintln!("allocations per pass: {allocs:?}, players matched: {matched:?}");
}
