//! The matching rules: skill windows and latency limits widening step by step with waiting (each
//! member's own, up to their ceilings), the region by objective (worst, average, percentile,
//! every party member counted), ties to the preferred region, Down and full regions, no cross
//! region, teams and parties kept whole, and nobody ever in two matches.

use std::collections::HashSet;
use std::time::Duration;

use pvp_core::ids::{PlayerId, RegionId};
use pvp_global::cluster::{FleetConfig, JP, KR, RegionConfig, RegionHealth, SG};
use pvp_global::matchmaking::{
    GameMode, GlobalMatchmaking, MatchRequest, MatchmakingConfig, RegionObjective, RequestError,
};

use super::{duel, duel_default_limit, duel_from, five, ids, matched, region, window_config};
use crate::common::{T0, mm, mm_with, ms, secs, small, tick};

#[test]
fn region_minimises_the_worst_latency_and_never_picks_a_down_region() {
    let mut mm = mm();
    // kr: worst 50, jp: worst 40 (chosen), sg: 90.
    let a = mm.find_match(duel_from(1, 1500.0, KR, [10, 40, 90]), T0).unwrap();
    let _b = mm.find_match(duel_from(2, 1510.0, KR, [50, 20, 90]), T0).unwrap();
    tick(&mut mm, T0);
    let m = a.try_result().unwrap().unwrap();
    assert_eq!(m.region(), JP);
    assert!(m.players().iter().all(|p| p.latency() <= ms(40)));

    mm.mark_region_down(JP).unwrap();
    assert_eq!(mm.region_health(JP), Some(RegionHealth::Down));
    let a = mm.find_match(duel_from(3, 1500.0, KR, [10, 40, 90]), T0).unwrap();
    let _b = mm.find_match(duel_from(4, 1510.0, KR, [50, 20, 90]), T0).unwrap();
    tick(&mut mm, T0);
    assert_eq!(a.try_result().unwrap().unwrap().region(), KR);

    // Only jp is acceptable to both and jp is down: no match.
    let a = mm.find_match(duel_from(5, 1500.0, KR, [150, 40, 150]), T0).unwrap();
    let b = mm.find_match(duel_from(6, 1510.0, SG, [150, 20, 150]), T0).unwrap();
    tick(&mut mm, T0);
    assert!(a.try_result().is_none() && b.try_result().is_none());
    mm.mark_region_up(JP).unwrap();
    tick(&mut mm, T0);
    assert_eq!(a.try_result().unwrap().unwrap().region(), JP);
    assert!(mm.mark_region_down(RegionId::new("us").unwrap()).is_err());
}

#[test]
fn average_and_percentile_objectives() {
    // Two players: kr (10, 60) avg 35 worst 60; jp (45, 45) avg 45 worst 45.
    let run = |objective| {
        let mut mm = mm_with(MatchmakingConfig { objective, ..MatchmakingConfig::default() });
        let a = mm.find_match(duel_from(1, 1500.0, KR, [10, 45, 99]), T0).unwrap();
        mm.find_match(duel_from(2, 1500.0, KR, [60, 45, 99]), T0).unwrap();
        tick(&mut mm, T0);
        a.try_result().unwrap().unwrap().region()
    };
    assert_eq!(run(RegionObjective::MinMax), JP);
    assert_eq!(run(RegionObjective::Average), KR);
    assert_eq!(run(RegionObjective::Percentile(50)), KR);
    assert_eq!(run(RegionObjective::Percentile(100)), JP);
}

#[test]
fn ties_go_to_the_preferred_region() {
    let mut mm = mm();
    let a = mm.find_match(duel_from(1, 1500.0, SG, [30, 30, 30]), T0).unwrap();
    mm.find_match(duel_from(2, 1500.0, SG, [30, 30, 30]), T0).unwrap();
    tick(&mut mm, T0);
    assert_eq!(a.try_result().unwrap().unwrap().region(), SG);
}

#[test]
fn without_cross_region_each_region_matches_alone() {
    let mut mm = mm_with(MatchmakingConfig { cross_region: false, ..MatchmakingConfig::default() });
    let a = mm.find_match(duel_from(1, 1500.0, KR, [10, 20, 80]), T0).unwrap();
    let b = mm.find_match(duel_from(2, 1500.0, JP, [10, 20, 80]), T0).unwrap();
    tick(&mut mm, T0);
    assert!(a.try_result().is_none() && b.try_result().is_none());
    let c = mm.find_match(duel_from(3, 1500.0, JP, [10, 20, 80]), T0).unwrap();
    tick(&mut mm, T0);
    let m = b.try_result().unwrap().unwrap();
    assert_eq!(m.region(), JP, "hosted in the shared home region, though kr is closer");
    assert_eq!(c.try_result().unwrap().unwrap().match_id(), m.match_id());
}

#[test]
fn skill_window_and_latency_widen_with_waiting() {
    let mut mm = mm();
    // 250 apart: window 100 at t0, +50 every 5 s -> 250 at 15 s.
    let a = mm.find_match(duel_from(1, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel_from(2, 1750.0, KR, [10, 40, 80]), T0).unwrap();
    for t in [0, 5, 10] {
        tick(&mut mm, secs(t));
        assert!(a.try_result().is_none(), "matched too early at {t} s");
    }
    tick(&mut mm, secs(15));
    let m = a.try_result().unwrap().unwrap();
    assert!((m.rating_spread() - 250.0).abs() < 1e-9);
    assert_eq!(m.players()[0].waited(), secs(15));

    // Latency 120 ms > limit 100 ms, ceiling 130: +10 ms every 5 s -> fits at 10 s.
    let c =
        mm.find_match(duel_from(3, 1500.0, KR, [120, 150, 150]).widen_latency_to(ms(130)), secs(20)).unwrap();
    mm.find_match(duel_from(4, 1500.0, KR, [10, 150, 150]), secs(20)).unwrap();
    tick(&mut mm, secs(25));
    assert!(c.try_result().is_none());
    tick(&mut mm, secs(30));
    assert_eq!(c.try_result().unwrap().unwrap().region(), KR);
}

#[test]
fn five_v_five_keeps_parties_together_and_balances_teams() {
    let mut mm = mm();
    let five = |id: u64, rating: f64| {
        MatchRequest::new(PlayerId::new(id), rating, KR, GameMode::FIVE_V_FIVE)
            .max_latency(ms(80))
            .latency(KR, ms(10))
            .latency(JP, ms(40))
    };
    // A party of 3 (ids 100..=102), a party of 2 (200, 201), five solos.
    let party3 = mm
        .find_match(
            five(100, 1600.0)
                .party_member(PlayerId::new(101), 1580.0)
                .party_member(PlayerId::new(102), 1590.0),
            T0,
        )
        .unwrap();
    mm.find_match(five(200, 1520.0).party_member(PlayerId::new(201), 1530.0), T0).unwrap();
    let solos: Vec<_> = [1540.0, 1550.0, 1560.0, 1570.0, 1575.0]
        .iter()
        .enumerate()
        .map(|(i, r)| mm.find_match(five(i as u64 + 1, *r), T0).unwrap())
        .collect();
    assert_eq!(mm.queued_players(), 10);
    let report = tick(&mut mm, T0);
    assert_eq!(report.matches, 1);
    let m = party3.try_result().unwrap().unwrap();
    assert_eq!(m.players().len(), 10);
    let team_of = |id: u64| m.players().iter().find(|p| p.player() == PlayerId::new(id)).unwrap().team();
    assert_eq!(team_of(100), team_of(101));
    assert_eq!(team_of(100), team_of(102));
    assert_eq!(team_of(200), team_of(201));
    assert_eq!(m.team(0).count(), 5);
    assert_eq!(m.team(1).count(), 5);
    let sum = |t| m.team(t).map(|p| p.rating()).sum::<f64>();
    // Best split of these ratings differs by at most one solo step.
    assert!((sum(0) - sum(1)).abs() <= 30.0, "{} vs {}", sum(0), sum(1));
    for s in &solos {
        assert_eq!(s.try_result().unwrap().unwrap().match_id(), m.match_id());
    }
    assert_eq!(mm.queued_players(), 0);
    assert!(!mm.is_queued(PlayerId::new(101)));
}

#[test]
fn down_regions_are_avoided_and_tickets_wait_for_a_usable_region() {
    let mut mm = mm();
    assert_eq!(mm.mark_region_down(region("us")), Err(RequestError::UnknownRegion(region("us"))));
    assert_eq!(mm.region_health(region("us")), None);
    for r in [KR, JP, SG] {
        mm.mark_region_down(r).unwrap();
        assert_eq!(mm.region_health(r), Some(RegionHealth::Down));
    }
    let a = mm.find_match(duel_default_limit(1, 1500.0, [10, 40, 90]), T0).unwrap();
    let b = mm.find_match(duel_default_limit(2, 1500.0, [10, 40, 90]), T0).unwrap();
    assert_eq!(mm.tick(T0).matches, 0);
    assert!(a.try_result().is_none());
    assert_eq!(mm.queued_players(), 2);
    mm.mark_region_up(SG).unwrap();
    mm.heartbeat_all(ms(1));
    assert_eq!(mm.tick(ms(1)).matches, 1);
    assert_eq!(a.try_result().unwrap().unwrap().region(), SG);
    assert_eq!(b.try_result().unwrap().unwrap().region(), SG);
    assert_eq!(mm.region_summaries(ms(1)).len(), 3);
}

#[test]
fn full_regions_count_no_capacity_and_keep_the_tickets() {
    let fleet =
        FleetConfig { regions: vec![RegionConfig { latency_ms: Default::default(), ..small(1, 1, 2) }] };
    let mut mm = GlobalMatchmaking::new(fleet, MatchmakingConfig::default(), T0).unwrap();
    mm.heartbeat_all(T0);
    let ask = |id| MatchRequest::new(PlayerId::new(id), 1500.0, KR, GameMode::ONE_V_ONE).latency(KR, ms(10));
    let a = mm.find_match(ask(1), T0).unwrap();
    mm.find_match(ask(2), T0).unwrap();
    assert_eq!(mm.tick(T0).matches, 1);
    let c = mm.find_match(ask(3), T0).unwrap();
    let d = mm.find_match(ask(4), T0).unwrap();
    mm.heartbeat_all(ms(1));
    assert_eq!(mm.tick(ms(1)).matches, 0);
    assert_eq!(mm.stats().no_capacity, 1);
    assert!(c.try_result().is_none() && d.try_result().is_none());
    assert_eq!(mm.queued_players(), 2);
    // Free the server: the waiting pair is placed on the next tick.
    let m = a.try_result().unwrap().unwrap();
    mm.release_match(KR, m.match_id()).unwrap();
    mm.heartbeat_all(ms(2));
    assert_eq!(mm.tick(ms(2)).matches, 1);
    assert!(c.try_result().unwrap().is_ok());
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
