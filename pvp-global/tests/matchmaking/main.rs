//! GlobalMatchmaking through the public API, sans-IO (`now` is always passed): configs and
//! requests, tickets and their handles, the matching rules, backfill, results and counters,
//! ratings, and random properties; one submodule each. The request builders they share are
//! here.

mod backfill;
#[path = "../common/mod.rs"]
mod common;
mod handles;
mod properties;
mod ratings;
mod requests;
mod results;
mod rules;

use pvp_core::ids::{PlayerId, RegionId};
use pvp_global::cluster::{JP, KR, SG};
use pvp_global::matchmaking::{
    GameMode, GlobalMatchmaking, MatchHandle, MatchRequest, MatchResult, MatchmakingConfig,
};

use common::{T0, ms, secs, tick};

fn region(name: &str) -> RegionId {
    RegionId::new(name).unwrap()
}

/// A 1v1 request with latencies (kr, jp, sg) in ms and a 100 ms limit.
fn duel(id: u64, rating: f64, lat: [u64; 3]) -> MatchRequest {
    MatchRequest::new(PlayerId::new(id), rating, KR, GameMode::ONE_V_ONE)
        .max_latency(ms(100))
        .latency(KR, ms(lat[0]))
        .latency(JP, ms(lat[1]))
        .latency(SG, ms(lat[2]))
}

fn five(id: u64, rating: f64) -> MatchRequest {
    MatchRequest::new(PlayerId::new(id), rating, KR, GameMode::FIVE_V_FIVE)
        .max_latency(ms(100))
        .latency(KR, ms(10))
        .latency(JP, ms(30))
        .latency(SG, ms(70))
}

fn matched(h: &MatchHandle) -> MatchResult {
    match h.try_result() {
        Some(Ok(m)) => m,
        other => panic!("expected a match, got {other:?}"),
    }
}

/// Two equal 1v1 players (1 and 2) queued and matched at `T0`: their match.
fn one_v_one_match(mm: &mut GlobalMatchmaking) -> MatchResult {
    let a = mm.find_match(duel(1, 1500.0, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel(2, 1500.0, [10, 40, 80]), T0).unwrap();
    tick(mm, T0);
    matched(&a)
}

fn ids(m: &MatchResult) -> Vec<u64> {
    let mut v: Vec<u64> = m.players().iter().map(|p| p.player().get()).collect();
    v.sort_unstable();
    v
}

fn five_v_five_match(mm: &mut GlobalMatchmaking) -> MatchResult {
    let first = mm.find_match(five(1, 1500.0), T0).unwrap();
    for id in 2..=10 {
        mm.find_match(five(id, 1500.0), T0).unwrap();
    }
    assert_eq!(tick(mm, T0).matches, 1);
    assert!(mm.poll_match().is_some());
    matched(&first)
}

fn window_config() -> MatchmakingConfig {
    MatchmakingConfig {
        skill_window: 100.0,
        skill_window_step: 50.0,
        skill_window_max: 400.0,
        expansion_interval: secs(5),
        queue_timeout: None,
        ..MatchmakingConfig::default()
    }
}

/// A 1v1 request with latencies (kr, jp, sg) in ms and a 100 ms limit.
fn duel_from(id: u64, rating: f64, home: RegionId, lat: [u64; 3]) -> MatchRequest {
    MatchRequest::new(PlayerId::new(id), rating, home, GameMode::ONE_V_ONE)
        .max_latency(ms(100))
        .latency(KR, ms(lat[0]))
        .latency(JP, ms(lat[1]))
        .latency(SG, ms(lat[2]))
}

/// A 1v1 request measured to every reference region.
fn duel_default_limit(id: u64, rating: f64, lat: [u64; 3]) -> MatchRequest {
    MatchRequest::new(PlayerId::new(id), rating, KR, GameMode::ONE_V_ONE)
        .latency(KR, ms(lat[0]))
        .latency(JP, ms(lat[1]))
        .latency(SG, ms(lat[2]))
}
