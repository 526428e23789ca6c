//! Second API-contract audit of `GlobalMatchmaking`: handle semantics (exactly-once delivery,
//! cancel, drop, outliving the matchmaker, re-queueing), the documented matching rules
//! (windows widening in steps, latency limits, region objectives, parties, Down regions,
//! backfill), ratings per system and the counters. Sans-IO: `now` is always passed.

#[path = "shared_support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::time::Duration;

use pvp_core::ids::{PlayerId, RegionId};
use pvp_global::cluster::{JP, KR, SG};
use pvp_global::matchmaking::{
    GameMode, GlobalMatchmaking, MatchError, MatchHandle, MatchOutcome, MatchRequest, MatchResult,
    MatchmakingConfig, PlayerRating, RatingBook, RatingSystem, RegionObjective, RequestError,
};
use support::{T0, backfill_of, mm, mm_with, ms, secs, tick};

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

// ---------------------------------------------------------------------------------------------
// MatchHandle

#[test]
fn a_result_is_delivered_once_and_every_accessor_agrees() {
    let mut mm = mm();
    let a = mm.find_match(duel(1, 1500.0, [10, 40, 80]), T0).unwrap();
    let b = mm.find_match(duel(2, 1500.0, [10, 40, 80]), T0).unwrap();
    assert_eq!(a.player(), Some(PlayerId::new(1)));
    assert!(!a.is_finished());
    assert_eq!(a.try_result(), None);
    assert_eq!(a.wait_timeout(Duration::ZERO), None);
    let r = tick(&mut mm, T0);
    assert_eq!((r.matches, r.matched_players, r.tickets), (1, 2, 2));
    assert!(a.is_finished() && b.is_finished());
    let m = matched(&a);
    assert_eq!(a.wait(), Ok(m.clone()));
    assert_eq!(a.wait_timeout(Duration::ZERO), Some(Ok(m.clone())));
    assert_eq!(b.wait(), Ok(m.clone()), "both players get the same match");
    assert_eq!(ids(&m), vec![1, 2]);
    // poll_match hands the match out once.
    assert_eq!(mm.poll_match(), Some(m.clone()));
    assert_eq!(mm.poll_match(), None);
    // Later ticks neither re-deliver nor change the handles.
    let r = tick(&mut mm, secs(1));
    assert_eq!((r.matches, r.tickets), (0, 0));
    assert_eq!(mm.poll_match(), None);
    assert_eq!(a.try_result(), Some(Ok(m)));
    assert!(!a.cancel(), "a matched ticket cannot be cancelled");
    assert_eq!(mm.stats().matches, 1);
    assert_eq!(mm.stats().queued_players, 0);
}

#[test]
fn after_a_handle_cancel_the_ticket_is_never_matched() {
    let mut mm = mm();
    let a = mm.find_match(duel(1, 1500.0, [10, 40, 80]), T0).unwrap();
    let b = mm.find_match(duel(2, 1500.0, [10, 40, 80]), T0).unwrap();
    assert!(a.cancel());
    assert!(!a.cancel(), "second cancel");
    assert_eq!(a.try_result(), Some(Err(MatchError::Cancelled)));
    assert!(!mm.is_queued(PlayerId::new(1)));
    assert_eq!(mm.queued_players(), 2, "counted until the next tick");
    assert!(!mm.cancel(PlayerId::new(1)), "already cancelled through the handle");
    let r = tick(&mut mm, T0);
    assert_eq!((r.matches, r.cancelled), (0, 1));
    assert_eq!(mm.stats().cancelled, 1);
    assert_eq!(mm.queued_players(), 1);
    assert_eq!(b.try_result(), None);
    let c = mm.find_match(duel(3, 1500.0, [10, 40, 80]), T0).unwrap();
    tick(&mut mm, T0);
    let m = matched(&c);
    assert_eq!(ids(&m), vec![2, 3]);
    assert_eq!(a.try_result(), Some(Err(MatchError::Cancelled)));
    assert_eq!(mm.stats().cancelled, 1, "not counted twice");
}

#[test]
fn a_dropped_handle_does_not_cancel_and_its_match_still_polls() {
    let mut mm = mm();
    drop(mm.find_match(duel(1, 1500.0, [10, 40, 80]), T0).unwrap());
    assert!(mm.is_queued(PlayerId::new(1)));
    let b = mm.find_match(duel(2, 1510.0, [10, 40, 80]), T0).unwrap();
    assert_eq!(tick(&mut mm, T0).matches, 1);
    let m = matched(&b);
    assert_eq!(ids(&m), vec![1, 2]);
    assert_eq!(mm.poll_match().map(|r| r.match_id()), Some(m.match_id()));
    assert!(!mm.is_queued(PlayerId::new(1)));
}

#[test]
fn handles_outlive_the_matchmaker() {
    let mut mm = mm();
    let a = mm.find_match(duel(1, 1500.0, [10, 40, 80]), T0).unwrap();
    let b = mm.find_match(duel(2, 1500.0, [10, 40, 80]), T0).unwrap();
    tick(&mut mm, T0);
    let c = mm.find_match(duel(3, 1500.0, [10, 40, 80]), T0).unwrap();
    let d = mm.find_match(duel(4, 1500.0, [10, 40, 80]), T0).unwrap();
    assert!(d.cancel());
    drop(mm);
    let m = matched(&a);
    assert_eq!(b.wait(), Ok(m), "a finished match survives the matchmaker");
    assert_eq!(c.wait(), Err(MatchError::Shutdown));
    assert_eq!(c.wait_timeout(Duration::ZERO), Some(Err(MatchError::Shutdown)));
    assert!(!c.cancel());
    assert_eq!(d.try_result(), Some(Err(MatchError::Cancelled)), "a cancelled ticket stays cancelled");
}

#[test]
fn queueing_twice_is_a_typed_error_and_requeueing_works_after_every_end() {
    let mut mm = mm();
    let p1 = PlayerId::new(1);
    let a = mm.find_match(duel(1, 1500.0, [10, 40, 80]), T0).unwrap();
    assert_eq!(
        mm.find_match(duel(1, 1500.0, [10, 40, 80]), T0).unwrap_err(),
        RequestError::AlreadyQueued(p1)
    );
    // As a party member of someone else's 5v5 request too, in another mode.
    let party = five(9, 1500.0).party_member(p1, 1500.0);
    assert_eq!(mm.find_match(party, T0).unwrap_err(), RequestError::AlreadyQueued(p1));
    assert_eq!(mm.stats().rejected.already_queued, 2);
    assert_eq!(mm.stats().accepted, 1);
    assert!(!mm.is_queued(PlayerId::new(9)), "the refused party leader was not queued");

    // After a matchmaker cancel.
    assert!(mm.cancel(p1));
    assert_eq!(a.try_result(), Some(Err(MatchError::Cancelled)));
    let a2 = mm.find_match(duel(1, 1500.0, [10, 40, 80]), T0).unwrap();
    // After a handle cancel, before any tick: the stale ticket gives way.
    assert!(a2.cancel());
    let a3 = mm.find_match(duel(1, 1500.0, [10, 40, 80]), T0).unwrap();
    assert_eq!(mm.queued_players(), 1);
    assert_eq!(mm.stats().cancelled, 2);
    let r = tick(&mut mm, T0);
    assert_eq!(r.cancelled, 0, "the stale ticket was already dropped");
    assert!(mm.is_queued(p1), "the draining of the old cancel leaves the new ticket alone");
    // After a match.
    let b = mm.find_match(duel(2, 1500.0, [10, 40, 80]), T0).unwrap();
    tick(&mut mm, T0);
    assert_eq!(matched(&a3).match_id(), matched(&b).match_id());
    assert_eq!(a2.try_result(), Some(Err(MatchError::Cancelled)));
    let a4 = mm.find_match(duel(1, 1500.0, [10, 40, 80]), secs(1)).unwrap();
    assert!(mm.is_queued(p1));
    assert_eq!(a4.try_result(), None);
    assert_eq!(mm.stats().accepted, 5);
}

#[test]
fn a_party_cancelled_through_its_handle_frees_every_member() {
    let mut mm = mm();
    let h = mm
        .find_match(
            five(1, 1500.0).party_member(PlayerId::new(2), 1500.0).party_member(PlayerId::new(3), 1500.0),
            T0,
        )
        .unwrap();
    assert_eq!(mm.queued_players(), 3);
    assert!(h.cancel());
    for p in 1..=3 {
        assert!(!mm.is_queued(PlayerId::new(p)));
    }
    // A member queues alone before the tick: the whole stale party ticket gives way.
    mm.find_match(five(2, 1500.0), T0).unwrap();
    assert_eq!(mm.queued_players(), 1);
    tick(&mut mm, T0);
    assert_eq!(mm.queued_players(), 1);
    assert!(mm.is_queued(PlayerId::new(2)));
    assert!(!mm.is_queued(PlayerId::new(1)));
}

#[cfg(feature = "tokio")]
#[tokio::test]
async fn async_waits_agree_with_the_blocking_ones() {
    let mut mm = mm();
    let a = mm.find_match(duel(1, 1500.0, [10, 40, 80]), T0).unwrap();
    let b = mm.find_match(duel(2, 1500.0, [10, 40, 80]), T0).unwrap();
    let c = mm.find_match(duel(3, 5000.0, [10, 40, 80]), T0).unwrap();
    assert_eq!(a.wait_timeout_async(Duration::ZERO).await, None);
    tick(&mut mm, T0);
    let m = a.wait_async().await.unwrap();
    assert_eq!(b.wait_async().await, Ok(m.clone()));
    assert_eq!(a.wait_timeout_async(Duration::ZERO).await, Some(Ok(m)));
    let waiter = tokio::spawn(async move { c.wait_async().await });
    // The spawned task may or may not have polled yet; cancelling wakes it either way.
    mm.cancel(PlayerId::new(3));
    assert_eq!(waiter.await.unwrap(), Err(MatchError::Cancelled));
}

// ---------------------------------------------------------------------------------------------
// Matching rules

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

#[test]
fn the_skill_window_widens_one_step_per_interval_up_to_its_maximum() {
    // Spread 140: window 100 at enqueue, 150 after one interval.
    let mut mm = mm_with(window_config());
    let a = mm.find_match(duel(1, 1500.0, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel(2, 1640.0, [10, 40, 80]), T0).unwrap();
    assert_eq!(tick(&mut mm, T0).matches, 0);
    assert_eq!(tick(&mut mm, secs(5) - Duration::from_nanos(1)).matches, 0);
    assert_eq!(tick(&mut mm, secs(5)).matches, 1);
    assert_eq!(matched(&a).rating_spread(), 140.0);

    // Spread exactly 100 matches at once (the window is inclusive).
    let mut mm = mm_with(window_config());
    mm.find_match(duel(1, 1500.0, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel(2, 1600.0, [10, 40, 80]), T0).unwrap();
    assert_eq!(tick(&mut mm, T0).matches, 1);

    // Spread 400 needs six steps; 401 never matches (the window stops at the maximum).
    let mut mm = mm_with(window_config());
    mm.find_match(duel(1, 1000.0, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel(2, 1400.0, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel(3, 3000.0, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel(4, 3401.0, [10, 40, 80]), T0).unwrap();
    assert_eq!(tick(&mut mm, secs(30) - ms(1)).matches, 0);
    assert_eq!(tick(&mut mm, secs(30)).matches, 1);
    assert!(!mm.is_queued(PlayerId::new(1)));
    assert_eq!(tick(&mut mm, secs(100_000)).matches, 0);
    assert!(mm.is_queued(PlayerId::new(3)) && mm.is_queued(PlayerId::new(4)));
}

#[test]
fn every_member_s_own_window_applies() {
    // The later ticket's narrower window holds the match back.
    let mut mm = mm_with(window_config());
    mm.find_match(duel(1, 1500.0, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel(2, 1640.0, [10, 40, 80]), secs(3)).unwrap();
    assert_eq!(tick(&mut mm, secs(5)).matches, 0);
    assert_eq!(tick(&mut mm, secs(8) - ms(1)).matches, 0);
    assert_eq!(tick(&mut mm, secs(8)).matches, 1);
}

#[test]
fn the_latency_limit_widens_to_its_ceiling_only() {
    let cfg = MatchmakingConfig { latency_step: ms(10), ..window_config() };
    let only_sg = |id, ceiling: Option<u64>| {
        let r = MatchRequest::new(PlayerId::new(id), 1500.0, KR, GameMode::ONE_V_ONE)
            .max_latency(ms(30))
            .latency(SG, ms(45));
        match ceiling {
            Some(c) => r.widen_latency_to(ms(c)),
            None => r,
        }
    };
    let mut mm = mm_with(cfg.clone());
    let a = mm.find_match(only_sg(1, Some(50)), T0).unwrap();
    mm.find_match(only_sg(2, Some(50)), T0).unwrap();
    // 30 ms, then 40 ms after one interval: 45 ms is still too far.
    assert_eq!(tick(&mut mm, secs(10) - ms(1)).matches, 0);
    assert_eq!(tick(&mut mm, secs(10)).matches, 1);
    assert_eq!(matched(&a).region(), SG);

    // A ceiling below the measured latency caps the widening.
    let mut mm = mm_with(cfg.clone());
    mm.find_match(only_sg(1, Some(44)), T0).unwrap();
    mm.find_match(only_sg(2, Some(44)), T0).unwrap();
    assert_eq!(tick(&mut mm, secs(10_000)).matches, 0);

    // Without a ceiling the limit never widens.
    let mut mm = mm_with(cfg);
    mm.find_match(only_sg(1, None), T0).unwrap();
    mm.find_match(only_sg(2, None), T0).unwrap();
    assert_eq!(tick(&mut mm, secs(10_000)).matches, 0);
}

#[test]
fn each_player_s_latency_limit_is_respected_and_inclusive() {
    let mut mm = mm();
    // kr is best for both on worst latency, but player 2's limit is 40 ms: kr (50) is out.
    let a = mm.find_match(duel(1, 1500.0, [5, 60, 200]).max_latency(ms(100)), T0).unwrap();
    mm.find_match(duel(2, 1500.0, [50, 40, 200]).max_latency(ms(40)), T0).unwrap();
    tick(&mut mm, T0);
    let m = matched(&a);
    assert_eq!(m.region(), JP, "exactly at the limit is acceptable");
    for p in m.players() {
        let limit = if p.player() == PlayerId::new(2) { ms(40) } else { ms(100) };
        assert!(p.latency() <= limit);
    }
    let lat2 = m.players().iter().find(|p| p.player() == PlayerId::new(2)).unwrap().latency();
    assert_eq!(lat2, ms(40), "the player's own measured latency to the match region");

    // No region within both limits: no match.
    let mut mm = mm_with(MatchmakingConfig::default());
    mm.find_match(duel(1, 1500.0, [5, 60, 200]).max_latency(ms(20)), T0).unwrap();
    mm.find_match(duel(2, 1500.0, [50, 10, 200]).max_latency(ms(20)), T0).unwrap();
    assert_eq!(tick(&mut mm, T0).matches, 0);
}

fn region_with(objective: RegionObjective) -> RegionId {
    let mut mm = mm_with(MatchmakingConfig { objective, ..MatchmakingConfig::default() });
    // kr: 10 / 80 (worst 80, mean 45); jp: 50 / 50 (worst 50, mean 50); sg: 90 / 90.
    let a = mm.find_match(duel(1, 1500.0, [10, 50, 90]), T0).unwrap();
    mm.find_match(duel(2, 1500.0, [80, 50, 90]), T0).unwrap();
    tick(&mut mm, T0);
    matched(&a).region()
}

#[test]
fn the_region_follows_the_objective() {
    assert_eq!(region_with(RegionObjective::MinMax), JP);
    assert_eq!(region_with(RegionObjective::Average), KR);
    // Nearest rank: the 50th percentile of two players is the lower latency.
    assert_eq!(region_with(RegionObjective::Percentile(50)), KR);
    assert_eq!(region_with(RegionObjective::Percentile(51)), JP);
    assert_eq!(region_with(RegionObjective::Percentile(100)), JP);
}

#[test]
fn down_regions_are_never_chosen_and_come_back_when_marked_up() {
    let mut mm = mm();
    mm.mark_region_down(KR).unwrap();
    for round in 0..3u64 {
        let a = mm.find_match(duel(10 * round + 1, 1500.0, [5, 60, 70]), T0).unwrap();
        mm.find_match(duel(10 * round + 2, 1500.0, [5, 60, 70]), T0).unwrap();
        tick(&mut mm, T0);
        assert_eq!(matched(&a).region(), JP);
    }
    // Only kr acceptable: the pair waits while kr is Down.
    let only_kr =
        |id| MatchRequest::new(PlayerId::new(id), 1500.0, KR, GameMode::ONE_V_ONE).latency(KR, ms(5));
    let a = mm.find_match(only_kr(100), T0).unwrap();
    mm.find_match(only_kr(101), T0).unwrap();
    assert_eq!(tick(&mut mm, secs(1)).matches, 0);
    assert_eq!(a.try_result(), None);
    mm.mark_region_up(KR).unwrap();
    assert_eq!(tick(&mut mm, secs(2)).matches, 1);
    assert_eq!(matched(&a).region(), KR);
}

#[test]
fn five_v_five_keeps_parties_whole_and_teams_full() {
    let mut mm = mm();
    let p = PlayerId::new;
    let lead3 =
        mm.find_match(five(1, 1500.0).party_member(p(2), 1520.0).party_member(p(3), 1480.0), T0).unwrap();
    mm.find_match(five(4, 1500.0).party_member(p(5), 1500.0), T0).unwrap();
    for id in 6..=10 {
        mm.find_match(five(id, 1490.0 + id as f64), T0).unwrap();
    }
    assert_eq!(mm.queued_players(), 10);
    let r = tick(&mut mm, T0);
    assert_eq!((r.matches, r.matched_players), (1, 10));
    let m = matched(&lead3);
    assert_eq!(ids(&m), (1..=10).collect::<Vec<_>>());
    assert_eq!(m.team(0).count(), 5);
    assert_eq!(m.team(1).count(), 5);
    let team = |id| m.players().iter().find(|x| x.player() == p(id)).unwrap().team();
    assert_eq!(team(1), team(2));
    assert_eq!(team(1), team(3));
    assert_eq!(team(4), team(5));
    // Party members keep their own ratings in the result.
    let rating = |id| m.players().iter().find(|x| x.player() == p(id)).unwrap().rating();
    assert_eq!((rating(2), rating(3)), (1520.0, 1480.0));
    assert_eq!(mm.stats().matched_players, 10);
    assert_eq!(mm.queued_players(), 0);

    // Nine players never make a 5v5.
    let mut mm = mm_with(MatchmakingConfig::default());
    for id in 1..=9 {
        mm.find_match(five(id, 1500.0), T0).unwrap();
    }
    assert_eq!(tick(&mut mm, T0).matches, 0);
    assert_eq!(mm.queued_players(), 9);
}

#[test]
fn nobody_is_ever_in_two_matches() {
    let mut mm = mm();
    let mut handles = Vec::new();
    for id in 0..60u64 {
        let rating = 1500.0 + ((id * 37) % 200) as f64;
        handles.push(mm.find_match(duel(id, rating, [10 + id % 7, 40, 80]), T0).unwrap());
    }
    for round in 0..5 {
        tick(&mut mm, secs(round));
    }
    let mut seen = HashSet::new();
    let mut matches = 0;
    while let Some(m) = mm.poll_match() {
        matches += 1;
        assert_eq!(m.players().len(), 2);
        for p in m.players() {
            assert!(seen.insert(p.player()), "{} placed twice", p.player());
        }
    }
    assert_eq!(matches, 30);
    assert_eq!(seen.len(), 60);
    for h in &handles {
        assert!(matched(h).players().iter().any(|p| Some(p.player()) == h.player()));
    }
}

#[test]
fn a_result_reports_each_player_s_wait_and_latency() {
    let mut mm = mm();
    let a = mm.find_match(duel(1, 1500.0, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel(2, 1500.0, [20, 40, 80]), ms(1500)).unwrap();
    tick(&mut mm, ms(2750));
    let m = matched(&a);
    assert_eq!(m.formed_at(), ms(2750));
    let get = |id| *m.players().iter().find(|p| p.player() == PlayerId::new(id)).unwrap();
    assert_eq!(get(1).waited(), ms(2750));
    assert_eq!(get(2).waited(), ms(1250));
    assert_eq!(m.region(), KR);
    assert_eq!((get(1).latency(), get(2).latency()), (ms(10), ms(20)));
}

#[test]
fn matched_ratings_keep_seven_significant_digits() {
    let mut mm = mm();
    let a = mm.find_match(duel(1, 1500.3, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel(2, 1500.0, [10, 40, 80]), T0).unwrap();
    tick(&mut mm, T0);
    let r = matched(&a).players().iter().find(|p| p.player() == PlayerId::new(1)).unwrap().rating();
    assert!((r - 1500.3).abs() < 1e-3, "{r}");
}

#[test]
fn backfill_accepts_a_window_wider_than_the_maximum() {
    // skill_window above skill_window_max: the window stays at skill_window (the widest of
    // the two), for backfill as for new matches.
    let cfg = MatchmakingConfig { skill_window: 500.0, skill_window_max: 100.0, ..window_config() };
    let mut mm = mm_with(cfg);
    let a = mm.find_match(duel(1, 1500.0, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel(2, 1950.0, [10, 40, 80]), T0).unwrap();
    assert_eq!(tick(&mut mm, T0).matches, 1, "spread 450 within a 500 window");
    let m = matched(&a);
    mm.find_match(duel(3, 2200.0, [10, 40, 80]), T0).unwrap();
    let bf = mm.backfill(backfill_of(&m, GameMode::ONE_V_ONE, 0, 1, 1725.0), T0).unwrap();
    assert_eq!(bf.player(), None);
    let r = tick(&mut mm, T0);
    assert_eq!(r.backfilled_players, 1, "rating 2200 is 475 from 1725, within 500");
    let got = matched(&bf);
    assert!(got.is_backfill());
    assert_eq!(ids(&got), vec![3]);
}

#[test]
fn dropped_results_are_counted_even_when_none_are_kept() {
    let cfg = MatchmakingConfig { max_pending_results: 0, ..MatchmakingConfig::default() };
    let mut mm = mm_with(cfg);
    let a = mm.find_match(duel(1, 1500.0, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel(2, 1500.0, [10, 40, 80]), T0).unwrap();
    tick(&mut mm, T0);
    assert!(matched(&a).players().len() == 2, "the handles still get the match");
    assert_eq!(mm.poll_match(), None);
    assert_eq!(mm.stats().results_dropped, 1);

    let cfg = MatchmakingConfig { max_pending_results: 1, ..MatchmakingConfig::default() };
    let mut mm = mm_with(cfg);
    for id in 1..=4 {
        mm.find_match(duel(id, 1500.0, [10, 40, 80]), T0).unwrap();
    }
    tick(&mut mm, T0);
    assert_eq!(mm.stats().results_dropped, 1);
    assert!(mm.poll_match().is_some());
    assert_eq!(mm.poll_match(), None);
}

// ---------------------------------------------------------------------------------------------
// Counters

#[test]
fn counters_move_exactly_when_documented() {
    let cfg = MatchmakingConfig { queue_timeout: Some(secs(10)), ..MatchmakingConfig::default() };
    let mut mm = mm_with(cfg);
    let s = mm.stats();
    assert_eq!((s.accepted, s.matches, s.passes, s.queued_players), (0, 0, 0, 0));
    mm.find_match(duel(1, 1500.0, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel(2, 1500.0, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel(3, 9000.0, [10, 40, 80]), T0).unwrap();
    let h4 = mm.find_match(duel(4, 5000.0, [10, 40, 80]), T0).unwrap();
    assert!(mm.find_match(duel(5, f64::NAN, [10, 40, 80]), T0).is_err());
    let s = mm.stats();
    assert_eq!((s.accepted, s.queued_players, s.rejected.invalid_rating), (4, 4, 1));
    assert_eq!(s.passes, 0, "queueing runs no pass");
    let r = tick(&mut mm, T0);
    assert_eq!((r.tickets, r.matches, r.matched_players, r.timed_out, r.cancelled), (4, 1, 2, 0, 0));
    let s = mm.stats();
    assert_eq!((s.matches, s.matched_players, s.queued_players, s.passes), (1, 2, 2, 1));
    assert!(h4.cancel());
    let r = tick(&mut mm, secs(10));
    assert_eq!((r.tickets, r.cancelled, r.timed_out), (1, 1, 0), "10 s is not older than 10 s");
    let r = tick(&mut mm, secs(10) + Duration::from_nanos(1));
    assert_eq!((r.tickets, r.timed_out), (0, 1));
    let s = mm.stats();
    assert_eq!((s.cancelled, s.timed_out, s.queued_players, s.passes, s.accepted), (1, 1, 0, 3, 4));
    assert!(!mm.is_queued(PlayerId::new(3)));
}

// ---------------------------------------------------------------------------------------------
// Ratings

#[test]
fn elo_moves_by_k_32_and_draws_between_equals_change_nothing() {
    let mut book = RatingBook::new(RatingSystem::Elo);
    let (a, b, c) = (PlayerId::new(1), PlayerId::new(2), PlayerId::new(3));
    book.record(&[a], &[b], MatchOutcome::FirstTeamWon).unwrap();
    assert!((book.matchmaking_rating(a) - 1516.0).abs() < 1e-9);
    assert!((book.matchmaking_rating(b) - 1484.0).abs() < 1e-9);
    // Second team winning mirrors it.
    let mut other = RatingBook::new(RatingSystem::Elo);
    other.record(&[a], &[b], MatchOutcome::SecondTeamWon).unwrap();
    assert!((other.matchmaking_rating(b) - 1516.0).abs() < 1e-9);
    // Unknown players start at the default.
    assert_eq!(book.rating(c), book.default_rating());
    assert_eq!(book.matchmaking_rating(c), 1500.0);
    let mut draw = RatingBook::new(RatingSystem::Elo);
    draw.record(&[a], &[c], MatchOutcome::Draw).unwrap();
    assert!((draw.matchmaking_rating(a) - 1500.0).abs() < 1e-9);
    // A draw moves the favourite down and the underdog up.
    book.record(&[a], &[b], MatchOutcome::Draw).unwrap();
    assert!(book.matchmaking_rating(a) < 1516.0);
    assert!(book.matchmaking_rating(b) > 1484.0);
}

#[test]
fn every_system_rates_wins_losses_and_draws_through_report_outcome() {
    for system in [RatingSystem::Elo, RatingSystem::Glicko2, RatingSystem::TrueSkill, RatingSystem::WengLin] {
        let cfg = MatchmakingConfig { rating_system: system, ..MatchmakingConfig::default() };
        let mut mm = mm_with(cfg);
        assert_eq!(mm.ratings().system(), system);
        let m = one_v_one_match(&mut mm);
        let region = m.region();
        let free_before = mm.cluster(region).unwrap().free_slots();
        let winner = m.team(0).next().unwrap().player();
        let loser = m.team(1).next().unwrap().player();
        mm.report_outcome(&m, MatchOutcome::FirstTeamWon).unwrap();
        assert!(mm.ratings().matchmaking_rating(winner) > 1500.0, "{system:?}");
        assert!(mm.ratings().matchmaking_rating(loser) < 1500.0, "{system:?}");
        assert!(mm.cluster(region).unwrap().free_slots() > free_before, "the server is freed");
        assert!(mm.cluster(region).unwrap().match_server(m.match_id()).is_none());
        // Reporting again still rates (the release is best effort) and never panics.
        let w = mm.ratings().matchmaking_rating(winner);
        mm.report_outcome(&m, MatchOutcome::FirstTeamWon).unwrap();
        assert!(mm.ratings().matchmaking_rating(winner) > w, "{system:?}");
        // A draw between two newcomers leaves them equal.
        let mut book = RatingBook::new(system);
        let (x, y) = (PlayerId::new(10), PlayerId::new(11));
        book.record(&[x], &[y], MatchOutcome::Draw).unwrap();
        let (rx, ry) = (book.matchmaking_rating(x), book.matchmaking_rating(y));
        assert!((rx - ry).abs() < 1e-6, "{system:?}: {rx} vs {ry}");
        assert!((rx - 1500.0).abs() < 1e-6, "{system:?}: {rx}");
    }
}

#[test]
fn matchmaking_rating_maps_mu_as_documented() {
    let mut book = RatingBook::new(RatingSystem::TrueSkill);
    let p = PlayerId::new(1);
    let r = match book.default_rating() {
        PlayerRating::TrueSkill(mut r) => {
            r.rating = 30.0;
            PlayerRating::TrueSkill(r)
        }
        other => panic!("{other:?}"),
    };
    book.set(p, r).unwrap();
    assert!((book.matchmaking_rating(p) - (1500.0 + 5.0 * 36.0)).abs() < 1e-9);
}

#[test]
fn a_ticket_cancelled_through_its_handle_frees_its_queue_place_at_once() {
    let cfg = MatchmakingConfig { max_queued_players: 2, ..MatchmakingConfig::default() };
    let mut mm = mm_with(cfg);
    let a = mm.find_match(duel(1, 1500.0, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel(2, 9000.0, [10, 40, 80]), T0).unwrap();
    assert_eq!(mm.find_match(duel(3, 1500.0, [10, 40, 80]), T0).unwrap_err(), RequestError::QueueFull(2));
    assert!(a.cancel());
    // Player 1 is no longer queued, so the queue has room for player 3 without a tick.
    let c = mm.find_match(duel(3, 1500.0, [10, 40, 80]), T0).unwrap();
    assert_eq!(mm.queued_players(), 2);
    assert_eq!(mm.stats().cancelled, 1);
    assert_eq!(mm.stats().rejected.queue_full, 1);
    tick(&mut mm, T0);
    assert_eq!(c.try_result(), None, "1500 and 9000 do not meet");
    assert_eq!(a.try_result(), Some(Err(MatchError::Cancelled)));
    assert_eq!(mm.stats().cancelled, 1, "counted once");
}

#[test]
fn a_cancelled_backfill_is_counted_like_a_cancelled_ticket() {
    let mut mm = mm();
    let m = one_v_one_match(&mut mm);
    let req = backfill_of(&m, GameMode::ONE_V_ONE, 1, 1, 1500.0);
    let bf = mm.backfill(req, T0).unwrap();
    assert!(bf.cancel());
    assert!(!bf.cancel());
    let r = tick(&mut mm, T0);
    assert_eq!(r.cancelled, 1);
    assert_eq!(mm.stats().cancelled, 1, "the counter agrees with the tick reports");
    // Nobody is placed into a cancelled backfill.
    let c = mm.find_match(duel(3, 1500.0, [10, 40, 80]), T0).unwrap();
    let r = tick(&mut mm, T0);
    assert_eq!(r.backfilled_players, 0);
    assert_eq!(c.try_result(), None);
    assert_eq!(bf.try_result(), Some(Err(MatchError::Cancelled)));
}

#[test]
fn a_party_s_rating_is_its_members_mean() {
    let two =
        GameMode { id: pvp_global::matchmaking::GameModeId(2), name: "2v2".into(), team_size: 2, teams: 2 };
    let cfg = MatchmakingConfig { modes: vec![two.clone()], ..window_config() };
    let mut mm = mm_with(cfg);
    let req = |id, r1, mate, r2| {
        MatchRequest::new(PlayerId::new(id), r1, KR, two.id)
            .latency(KR, ms(10))
            .party_member(PlayerId::new(mate), r2)
    };
    // Means 1500 and 1550: within the 100 window although single ratings differ by 1000.
    let a = mm.find_match(req(1, 1000.0, 2, 2000.0), T0).unwrap();
    mm.find_match(req(3, 1550.0, 4, 1550.0), T0).unwrap();
    // Mean 1700: 200 from the first party, too far at enqueue.
    let far = mm.find_match(req(5, 1700.0, 6, 1700.0), T0).unwrap();
    assert_eq!(tick(&mut mm, T0).matches, 1);
    let m = matched(&a);
    assert_eq!(ids(&m), vec![1, 2, 3, 4]);
    assert_eq!(m.rating_spread(), 1000.0);
    assert_eq!(far.try_result(), None);
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

#[test]
fn backfill_completes_once_every_slot_is_filled_and_lists_every_newcomer() {
    let mut mm = mm();
    let m = five_v_five_match(&mut mm);
    let req = backfill_of(&m, GameMode::FIVE_V_FIVE, 1, 2, 1500.0);
    let bf = mm.backfill(req, T0).unwrap();
    // A party of three never fits two slots.
    let trio = mm
        .find_match(
            five(20, 1500.0).party_member(PlayerId::new(21), 1500.0).party_member(PlayerId::new(22), 1500.0),
            T0,
        )
        .unwrap();
    let n1 = mm.find_match(five(11, 1500.0), T0).unwrap();
    let r = tick(&mut mm, secs(1));
    assert_eq!(r.backfilled_players, 1);
    assert!(!bf.is_finished(), "one slot still open");
    let own = matched(&n1);
    assert!(own.is_backfill());
    assert_eq!((own.match_id(), own.server(), own.region()), (m.match_id(), m.server(), m.region()));
    assert_eq!(ids(&own), vec![11]);
    assert_eq!(own.players()[0].team(), 1);
    assert_eq!(mm.poll_match().map(|r| ids(&r)), Some(vec![11]));
    assert_eq!(trio.try_result(), None);

    let n2 = mm.find_match(five(12, 1500.0), secs(1)).unwrap();
    let r = tick(&mut mm, secs(2));
    assert_eq!((r.backfilled_players, r.matches), (1, 0));
    let all = matched(&bf);
    assert!(all.is_backfill());
    assert_eq!(ids(&all), vec![11, 12]);
    assert_eq!(matched(&n2).match_id(), m.match_id());
    assert_eq!(mm.stats().backfilled_players, 2);
    // Filled: later players are not added.
    mm.find_match(five(13, 1500.0), secs(2)).unwrap();
    assert_eq!(tick(&mut mm, secs(3)).backfilled_players, 0);
    assert_eq!(bf.try_result(), Some(Ok(all)));
}

#[test]
fn a_backfill_ends_cancelled_when_its_match_ends_first() {
    let mut mm = mm();
    let m = five_v_five_match(&mut mm);
    let req = backfill_of(&m, GameMode::FIVE_V_FIVE, 0, 1, 1500.0);
    let bf = mm.backfill(req, T0).unwrap();
    mm.release_match(m.region(), m.match_id()).unwrap();
    let late = mm.find_match(five(11, 1500.0), T0).unwrap();
    let r = tick(&mut mm, secs(1));
    assert_eq!(r.backfilled_players, 0);
    assert_eq!(bf.try_result(), Some(Err(MatchError::Cancelled)));
    assert_eq!(late.try_result(), None, "not placed into an ended match");
    assert!(mm.is_queued(PlayerId::new(11)));
}

#[test]
fn backfill_and_new_matches_in_one_tick_never_share_a_player() {
    let mut mm = mm();
    let m = one_v_one_match(&mut mm);
    let bf = mm.backfill(backfill_of(&m, GameMode::ONE_V_ONE, 0, 1, 1500.0), T0).unwrap();
    let hs: Vec<_> = (3..=5).map(|id| mm.find_match(duel(id, 1500.0, [10, 40, 80]), T0).unwrap()).collect();
    let r = tick(&mut mm, T0);
    assert_eq!((r.backfilled_players, r.matches, r.matched_players), (1, 1, 2));
    let filled = matched(&bf);
    let newcomer = filled.players()[0].player();
    let fresh: Vec<MatchResult> = hs.iter().map(matched).filter(|r| !r.is_backfill()).collect();
    assert_eq!(fresh.len(), 2);
    assert!(fresh.iter().all(|r| r.players().iter().all(|p| p.player() != newcomer)));
    assert_eq!(mm.queued_players(), 0);
}

#[test]
fn a_timed_out_player_may_queue_again() {
    let cfg = MatchmakingConfig { queue_timeout: Some(secs(2)), ..MatchmakingConfig::default() };
    let mut mm = mm_with(cfg);
    let p = PlayerId::new(1);
    let h = mm.find_match(five(1, 1500.0).party_member(PlayerId::new(2), 1500.0), T0).unwrap();
    let r = tick(&mut mm, secs(3));
    assert_eq!(r.timed_out, 1, "a party is one ticket");
    assert_eq!(h.try_result(), Some(Err(MatchError::TimedOut)));
    assert!(!h.cancel());
    assert!(!mm.is_queued(p) && !mm.is_queued(PlayerId::new(2)));
    assert_eq!(mm.queued_players(), 0);
    let again = mm.find_match(five(1, 1500.0), secs(3)).unwrap();
    // The clock restarts at the new enqueue time.
    assert_eq!(tick(&mut mm, secs(5)).timed_out, 0);
    assert_eq!(again.try_result(), None);
    assert_eq!(tick(&mut mm, secs(5) + ms(1)).timed_out, 1);
    assert_eq!(mm.stats().timed_out, 2);
}

/// A 5v5 of a party of four (kr 10 ms, jp 40 ms) and six solos (kr 40 ms, jp 25 ms).
fn party_region(objective: RegionObjective) -> RegionId {
    let mut mm = mm_with(MatchmakingConfig { objective, ..MatchmakingConfig::default() });
    let at = |id, kr, jp| {
        MatchRequest::new(PlayerId::new(id), 1500.0, SG, GameMode::FIVE_V_FIVE)
            .latency(KR, ms(kr))
            .latency(JP, ms(jp))
    };
    let mut party = at(1, 10, 40);
    for id in 2..=4 {
        party = party.party_member(PlayerId::new(id), 1500.0);
    }
    let h = mm.find_match(party, T0).unwrap();
    for id in 5..=10 {
        mm.find_match(at(id, 40, 25), T0).unwrap();
    }
    assert_eq!(tick(&mut mm, T0).matches, 1);
    let m = matched(&h);
    assert_eq!(m.players().len(), 10);
    m.region()
}

#[test]
fn objectives_count_every_party_member_as_a_player() {
    // Per player: kr mean 28 ms, jp 31 ms; as seven units it would be kr 35.7, jp 27.1.
    assert_eq!(party_region(RegionObjective::Average), KR);
    // 40th percentile of ten players is the 4th lowest: kr 10 ms, jp 25 ms.
    assert_eq!(party_region(RegionObjective::Percentile(40)), KR);
    // 50th: kr 40 ms, jp 25 ms.
    assert_eq!(party_region(RegionObjective::Percentile(50)), JP);
}

#[test]
fn wait_timeout_of_zero_returns_a_decided_result() {
    let mut mm = mm();
    let a = mm.find_match(duel(1, 1500.0, [10, 40, 80]), T0).unwrap();
    assert_eq!(a.wait_timeout(Duration::ZERO), None);
    assert!(mm.cancel(PlayerId::new(1)));
    assert_eq!(a.wait_timeout(Duration::ZERO), Some(Err(MatchError::Cancelled)));
    assert_eq!(a.wait_timeout(Duration::MAX), Some(Err(MatchError::Cancelled)));
    assert_eq!(a.wait(), Err(MatchError::Cancelled));
    assert_eq!(mm.queued_players(), 0, "a matchmaker cancel drops the ticket at once");
    assert_eq!(tick(&mut mm, T0).cancelled, 0, "nothing left for the tick to drop");
}

#[test]
fn elo_rates_each_player_against_the_other_team_s_mean() {
    let mut book = RatingBook::new(RatingSystem::Elo);
    let p = PlayerId::new;
    let set = |book: &mut RatingBook, id, r| book.set(p(id), PlayerRating::Elo(skill_elo(r))).unwrap();
    set(&mut book, 1, 1600.0);
    set(&mut book, 2, 1400.0);
    set(&mut book, 3, 1500.0);
    book.record(&[p(1), p(2)], &[p(3)], MatchOutcome::FirstTeamWon).unwrap();
    let expected = |own: f64, other: f64| 1.0 / (1.0 + 10f64.powf((other - own) / 400.0));
    let want1 = 1600.0 + 32.0 * (1.0 - expected(1600.0, 1500.0));
    let want2 = 1400.0 + 32.0 * (1.0 - expected(1400.0, 1500.0));
    // Team one's mean is 1500: player 3 loses 16 against it.
    let want3 = 1500.0 - 32.0 * expected(1500.0, 1500.0);
    assert!((book.matchmaking_rating(p(1)) - want1).abs() < 1e-9);
    assert!((book.matchmaking_rating(p(2)) - want2).abs() < 1e-9);
    assert!((book.matchmaking_rating(p(3)) - want3).abs() < 1e-9);
}

fn skill_elo(rating: f64) -> skillratings::elo::EloRating {
    skillratings::elo::EloRating { rating }
}

#[test]
fn report_outcome_rates_every_player_of_a_five_v_five() {
    let mut mm = mm();
    let m = five_v_five_match(&mut mm);
    mm.report_outcome(&m, MatchOutcome::SecondTeamWon).unwrap();
    for pl in m.players() {
        let r = mm.ratings().matchmaking_rating(pl.player());
        if pl.team() == 1 {
            assert!(r > 1500.0, "{}: {r}", pl.player());
        } else {
            assert!(r < 1500.0, "{}: {r}", pl.player());
        }
    }
    assert!(mm.cluster(m.region()).unwrap().match_server(m.match_id()).is_none());
}

#[test]
fn a_refused_outcome_keeps_the_book_and_the_server() {
    let mut mm = mm();
    let m = five_v_five_match(&mut mm);
    let bf = mm.backfill(backfill_of(&m, GameMode::FIVE_V_FIVE, 0, 1, 1500.0), T0).unwrap();
    mm.find_match(five(11, 1500.0), T0).unwrap();
    tick(&mut mm, T0);
    let newcomers = matched(&bf);
    assert_eq!(
        mm.report_outcome(&newcomers, MatchOutcome::FirstTeamWon),
        Err(pvp_global::matchmaking::RatingError::EmptyTeam)
    );
    assert_eq!(mm.ratings().matchmaking_rating(PlayerId::new(11)), 1500.0);
    assert!(mm.cluster(m.region()).unwrap().match_server(m.match_id()).is_some());
}
