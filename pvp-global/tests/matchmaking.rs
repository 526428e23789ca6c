//! GlobalMatchmaking through the public API.

#[path = "shared_support/mod.rs"]
mod support;

use std::time::Duration;

use pvp_core::ids::{MatchId, PlayerId, RegionId};
use pvp_global::cluster::{FleetConfig, JP, KR, RegionHealth, SG};
use pvp_global::matchmaking::{
    BackfillRequest, GameMode, GameModeId, GlobalMatchmaking, MatchError, MatchOutcome, MatchRequest,
    MatchmakingConfig, RatingSystem, RegionObjective, RequestError,
};
use support::{T0, backfill_of, mm, mm_with, ms, secs, tick};

/// A 1v1 request with latencies (kr, jp, sg) in ms and a 100 ms limit.
fn duel(id: u64, rating: f64, home: RegionId, lat: [u64; 3]) -> MatchRequest {
    MatchRequest::new(PlayerId::new(id), rating, home, GameMode::ONE_V_ONE)
        .max_latency(ms(100))
        .latency(KR, ms(lat[0]))
        .latency(JP, ms(lat[1]))
        .latency(SG, ms(lat[2]))
}

/// A bad request and the error it must get.
type Case = (MatchRequest, fn(&RequestError) -> bool);

#[test]
fn bad_input_is_refused_typed_counted_and_leaves_the_queue_unchanged() {
    let mut mm = mm();
    let ok = mm.find_match(duel(1, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    let before = mm.queued_players();
    let cases: Vec<Case> = vec![
        (duel(2, f64::NAN, KR, [1, 1, 1]), |e| matches!(e, RequestError::InvalidRating { .. })),
        (duel(2, -1.0, KR, [1, 1, 1]), |e| matches!(e, RequestError::InvalidRating { .. })),
        (duel(2, f64::INFINITY, KR, [1, 1, 1]), |e| matches!(e, RequestError::InvalidRating { .. })),
        (duel(2, 1500.0, RegionId::new("us").unwrap(), [1, 1, 1]), |e| {
            matches!(e, RequestError::UnknownRegion(_))
        }),
        (duel(2, 1500.0, KR, [1, 1, 1]).latency(RegionId::new("eu").unwrap(), ms(5)), |e| {
            matches!(e, RequestError::UnknownRegion(_))
        }),
        (duel(2, 1500.0, KR, [1, 1, 1]).max_latency(Duration::ZERO), |e| {
            matches!(e, RequestError::ZeroMaxLatency)
        }),
        (duel(2, 1500.0, KR, [1, 1, 1]).widen_latency_to(ms(50)), |e| {
            matches!(e, RequestError::CeilingBelowLimit { .. })
        }),
        (MatchRequest::new(PlayerId::new(2), 1500.0, KR, GameModeId(77)), |e| {
            matches!(e, RequestError::UnknownMode(_))
        }),
        (duel(1, 1500.0, KR, [1, 1, 1]), |e| matches!(e, RequestError::AlreadyQueued(_))),
        (duel(2, 1500.0, KR, [1, 1, 1]).party_member(PlayerId::new(3), 1500.0), |e| {
            matches!(e, RequestError::PartyTooLarge { size: 2, team_size: 1 })
        }),
        (
            MatchRequest::new(PlayerId::new(2), 1500.0, KR, GameMode::FIVE_V_FIVE)
                .party_member(PlayerId::new(1), 1500.0),
            |e| matches!(e, RequestError::AlreadyQueued(_)),
        ),
        (
            MatchRequest::new(PlayerId::new(2), 1500.0, KR, GameMode::FIVE_V_FIVE)
                .party_member(PlayerId::new(3), 1500.0)
                .party_member(PlayerId::new(3), 1500.0),
            |e| matches!(e, RequestError::DuplicatePartyMember(_)),
        ),
        (
            MatchRequest::new(PlayerId::new(2), 1500.0, KR, GameMode::FIVE_V_FIVE)
                .party_member(PlayerId::new(3), f64::NAN),
            |e| matches!(e, RequestError::InvalidRating { .. }),
        ),
        (
            (3..8).fold(MatchRequest::new(PlayerId::new(2), 1500.0, KR, GameMode::FIVE_V_FIVE), |r, i| {
                r.party_member(PlayerId::new(i), 1500.0)
            }),
            |e| matches!(e, RequestError::PartyTooLarge { size: 6, team_size: 5 }),
        ),
    ];
    let n = cases.len() as u64;
    for (req, is_expected) in cases {
        let err = mm.find_match(req.clone(), T0).unwrap_err();
        assert!(is_expected(&err), "{req:?} gave {err:?}");
        assert_eq!(mm.queued_players(), before);
        assert!(!mm.is_queued(PlayerId::new(2)));
    }
    let r = mm.stats().rejected;
    let total = r.invalid_rating
        + r.unknown_region
        + r.bad_latency_limit
        + r.unknown_mode
        + r.already_queued
        + r.party_too_large
        + r.too_many_latencies
        + r.queue_full;
    assert_eq!(total, n);
    assert_eq!(r.invalid_rating, 4);
    assert_eq!(r.already_queued, 3);
    assert!(ok.try_result().is_none());
}

#[test]
fn queue_bound_is_enforced() {
    let mut mm = mm_with(MatchmakingConfig { max_queued_players: 2, ..MatchmakingConfig::default() });
    mm.find_match(duel(1, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel(2, 2500.0, KR, [10, 40, 80]), T0).unwrap();
    let err = mm.find_match(duel(3, 1500.0, KR, [10, 40, 80]), T0).unwrap_err();
    assert_eq!(err, RequestError::QueueFull(2));
    assert_eq!(mm.stats().rejected.queue_full, 1);
}

#[test]
fn region_minimises_the_worst_latency_and_never_picks_a_down_region() {
    let mut mm = mm();
    // kr: worst 50, jp: worst 40 (chosen), sg: 90.
    let a = mm.find_match(duel(1, 1500.0, KR, [10, 40, 90]), T0).unwrap();
    let _b = mm.find_match(duel(2, 1510.0, KR, [50, 20, 90]), T0).unwrap();
    tick(&mut mm, T0);
    let m = a.try_result().unwrap().unwrap();
    assert_eq!(m.region(), JP);
    assert!(m.players().iter().all(|p| p.latency() <= ms(40)));

    mm.mark_region_down(JP).unwrap();
    assert_eq!(mm.region_health(JP), Some(RegionHealth::Down));
    let a = mm.find_match(duel(3, 1500.0, KR, [10, 40, 90]), T0).unwrap();
    let _b = mm.find_match(duel(4, 1510.0, KR, [50, 20, 90]), T0).unwrap();
    tick(&mut mm, T0);
    assert_eq!(a.try_result().unwrap().unwrap().region(), KR);

    // Only jp is acceptable to both and jp is down: no match.
    let a = mm.find_match(duel(5, 1500.0, KR, [150, 40, 150]), T0).unwrap();
    let b = mm.find_match(duel(6, 1510.0, SG, [150, 20, 150]), T0).unwrap();
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
        let a = mm.find_match(duel(1, 1500.0, KR, [10, 45, 99]), T0).unwrap();
        mm.find_match(duel(2, 1500.0, KR, [60, 45, 99]), T0).unwrap();
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
    let a = mm.find_match(duel(1, 1500.0, SG, [30, 30, 30]), T0).unwrap();
    mm.find_match(duel(2, 1500.0, SG, [30, 30, 30]), T0).unwrap();
    tick(&mut mm, T0);
    assert_eq!(a.try_result().unwrap().unwrap().region(), SG);
}

#[test]
fn without_cross_region_each_region_matches_alone() {
    let mut mm = mm_with(MatchmakingConfig { cross_region: false, ..MatchmakingConfig::default() });
    let a = mm.find_match(duel(1, 1500.0, KR, [10, 20, 80]), T0).unwrap();
    let b = mm.find_match(duel(2, 1500.0, JP, [10, 20, 80]), T0).unwrap();
    tick(&mut mm, T0);
    assert!(a.try_result().is_none() && b.try_result().is_none());
    let c = mm.find_match(duel(3, 1500.0, JP, [10, 20, 80]), T0).unwrap();
    tick(&mut mm, T0);
    let m = b.try_result().unwrap().unwrap();
    assert_eq!(m.region(), JP, "hosted in the shared home region, though kr is closer");
    assert_eq!(c.try_result().unwrap().unwrap().match_id(), m.match_id());
}

#[test]
fn skill_window_and_latency_widen_with_waiting() {
    let mut mm = mm();
    // 250 apart: window 100 at t0, +50 every 5 s -> 250 at 15 s.
    let a = mm.find_match(duel(1, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel(2, 1750.0, KR, [10, 40, 80]), T0).unwrap();
    for t in [0, 5, 10] {
        tick(&mut mm, secs(t));
        assert!(a.try_result().is_none(), "matched too early at {t} s");
    }
    tick(&mut mm, secs(15));
    let m = a.try_result().unwrap().unwrap();
    assert!((m.rating_spread() - 250.0).abs() < 1e-9);
    assert_eq!(m.players()[0].waited(), secs(15));

    // Latency 120 ms > limit 100 ms, ceiling 130: +10 ms every 5 s -> fits at 10 s.
    let c = mm.find_match(duel(3, 1500.0, KR, [120, 150, 150]).widen_latency_to(ms(130)), secs(20)).unwrap();
    mm.find_match(duel(4, 1500.0, KR, [10, 150, 150]), secs(20)).unwrap();
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
fn backfill_fills_a_running_match() {
    let mut mm = mm();
    let a = mm.find_match(duel(1, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel(2, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    tick(&mut mm, T0);
    let m = a.try_result().unwrap().unwrap();
    // Player 2 left; find a replacement for team 1.
    let req = backfill_of(&m, GameMode::ONE_V_ONE, 1, 1, 1500.0);
    let bf = mm.backfill(req, secs(1)).unwrap();
    let far = mm.find_match(duel(3, 1900.0, KR, [10, 40, 80]), secs(1)).unwrap();
    let near = mm.find_match(duel(4, 1520.0, KR, [10, 40, 80]), secs(1)).unwrap();
    tick(&mut mm, secs(1));
    let joined = near.try_result().unwrap().unwrap();
    assert!(joined.is_backfill());
    assert_eq!(joined.match_id(), m.match_id());
    assert_eq!(joined.server(), m.server());
    assert_eq!(joined.players()[0].team(), 1);
    assert!(far.try_result().is_none());
    let done = bf.try_result().unwrap().unwrap();
    assert_eq!(done.players().len(), 1);
    assert_eq!(mm.stats().backfilled_players, 1);
    assert_eq!(mm.cluster(m.region()).unwrap().current_player_count(), 3);
    // A backfill of a match that ends is cancelled.
    let open = mm.backfill(req, secs(2)).unwrap();
    mm.release_match(m.region(), m.match_id()).unwrap();
    tick(&mut mm, secs(2));
    assert_eq!(open.try_result(), Some(Err(MatchError::Cancelled)));
    assert!(far.try_result().is_none(), "nobody joins an ended match");
    let bad = BackfillRequest { match_id: MatchId::new(999), ..req };
    assert_eq!(mm.backfill(bad, secs(1)).unwrap_err(), RequestError::UnknownMatch);
    let bad = BackfillRequest { slots: 2, ..req };
    assert_eq!(mm.backfill(bad, secs(1)).unwrap_err(), RequestError::BadBackfill);
}

#[test]
fn cancel_through_handle_or_matchmaker() {
    let mut mm = mm();
    let a = mm.find_match(duel(1, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    assert!(a.cancel());
    assert!(!a.cancel());
    assert_eq!(a.try_result(), Some(Err(MatchError::Cancelled)));
    let b = mm.find_match(duel(2, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    let report = tick(&mut mm, T0);
    assert_eq!(report.cancelled, 1);
    assert_eq!(report.matches, 0);
    assert!(!mm.is_queued(PlayerId::new(1)));
    assert!(mm.cancel(PlayerId::new(2)));
    assert!(!mm.cancel(PlayerId::new(2)));
    assert_eq!(b.wait(), Err(MatchError::Cancelled));
    assert_eq!(mm.queued_players(), 0);
    assert_eq!(mm.stats().cancelled, 2);
    // Cancelled through the handle, queued again before any tick: accepted.
    let again = mm.find_match(duel(2, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    assert!(again.cancel());
    let again = mm.find_match(duel(2, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    assert!(again.cancel());
    tick(&mut mm, T0);
    assert_eq!(mm.queued_players(), 0);
    assert_eq!(mm.stats().cancelled, 4);
    // A matched ticket can no longer be cancelled.
    let c = mm.find_match(duel(3, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel(4, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    tick(&mut mm, T0);
    assert!(!c.cancel());
    assert!(c.try_result().unwrap().is_ok());
}

#[test]
fn tickets_time_out_and_drop_ends_the_rest() {
    let mut mm = mm_with(MatchmakingConfig { queue_timeout: Some(secs(30)), ..MatchmakingConfig::default() });
    let a = mm.find_match(duel(1, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    tick(&mut mm, secs(30));
    assert!(a.try_result().is_none());
    assert_eq!(tick(&mut mm, secs(31)).timed_out, 1);
    assert_eq!(a.wait(), Err(MatchError::TimedOut));
    let b = mm.find_match(duel(2, 1500.0, KR, [10, 40, 80]), secs(31)).unwrap();
    drop(mm);
    assert_eq!(b.wait(), Err(MatchError::Shutdown));
}

#[test]
fn blocking_wait_across_threads() {
    let mut mm = mm();
    let a = mm.find_match(duel(1, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    let b = mm.find_match(duel(2, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    let waiter = std::thread::spawn(move || a.wait());
    tick(&mut mm, T0);
    let got = waiter.join().unwrap().unwrap();
    assert_eq!(Some(got.match_id()), b.wait_timeout(secs(5)).and_then(|r| r.ok()).map(|m| m.match_id()));
    let c = mm.find_match(duel(3, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    assert!(c.wait_timeout(ms(1)).is_none());
}

#[cfg(feature = "tokio")]
#[tokio::test]
async fn await_with_tokio() {
    let mut mm = mm();
    let a = mm.find_match(duel(1, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel(2, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    let (res, report) = tokio::join!(a.wait_async(), async { tick(&mut mm, T0) });
    assert_eq!(report.matches, 1);
    assert_eq!(res.unwrap().players().len(), 2);
    let c = mm.find_match(duel(3, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    assert!(c.wait_timeout_async(ms(1)).await.is_none());
}

#[test]
fn connect_grant_material() {
    let mut mm = mm();
    let a = mm.find_match(duel(1, 1500.0, KR, [10, 40, 80]), secs(2)).unwrap();
    mm.find_match(duel(2, 1500.0, KR, [10, 40, 80]), secs(2)).unwrap();
    tick(&mut mm, secs(3));
    let m = a.try_result().unwrap().unwrap();
    let g = m.connect_grant();
    assert_eq!(g.match_id, m.match_id());
    assert_eq!(g.server_id, m.server().id);
    assert_eq!(g.server_addr, m.server().addr);
    assert_eq!(g.players.len(), 2);
    assert_eq!(g.expires_at, secs(3) + mm.config().grant_ttl);
    assert!(serde_json::to_string(&g).unwrap().contains("server_addr"));
    let cluster = mm.cluster(m.region()).unwrap();
    assert_eq!(cluster.server(g.server_id).unwrap().addr(), g.server_addr);
}

#[test]
fn outcomes_update_ratings_in_every_system() {
    for system in [RatingSystem::Elo, RatingSystem::Glicko2, RatingSystem::TrueSkill, RatingSystem::WengLin] {
        let mut mm = mm_with(MatchmakingConfig { rating_system: system, ..MatchmakingConfig::default() });
        let r0 = mm.ratings().matchmaking_rating(PlayerId::new(1));
        let a = mm.find_match(duel(1, r0, KR, [10, 40, 80]), T0).unwrap();
        mm.find_match(duel(2, r0, KR, [10, 40, 80]), T0).unwrap();
        tick(&mut mm, T0);
        let m = a.wait().unwrap();
        let region = m.region();
        assert_eq!(mm.cluster(region).unwrap().current_player_count(), 2);
        let winner_team = m.players().iter().find(|p| p.player() == PlayerId::new(1)).unwrap().team();
        let outcome = if winner_team == 0 { MatchOutcome::FirstTeamWon } else { MatchOutcome::SecondTeamWon };
        mm.report_outcome(&m, outcome).unwrap();
        assert!(mm.ratings().matchmaking_rating(PlayerId::new(1)) > r0, "{system:?}");
        assert!(mm.ratings().matchmaking_rating(PlayerId::new(2)) < r0, "{system:?}");
        assert_eq!(mm.cluster(region).unwrap().current_player_count(), 0, "server freed");
    }
}

#[test]
fn bad_matchmaking_config_is_refused() {
    use pvp_global::cluster::ConfigError;
    let bad = |c: MatchmakingConfig| GlobalMatchmaking::new(FleetConfig::reference(), c, T0).unwrap_err();
    let d = MatchmakingConfig::default;
    assert!(matches!(
        bad(MatchmakingConfig { skill_window: f64::NAN, ..d() }),
        ConfigError::InvalidMatchmaking { .. }
    ));
    assert!(matches!(bad(MatchmakingConfig { lookahead: 0, ..d() }), ConfigError::InvalidMatchmaking { .. }));
    assert!(matches!(
        bad(MatchmakingConfig { objective: RegionObjective::Percentile(0), ..d() }),
        ConfigError::InvalidMatchmaking { .. }
    ));
    let huge = GameMode { id: GameModeId(9), name: "9v9".into(), team_size: 9, teams: 2 };
    assert!(matches!(
        bad(MatchmakingConfig { modes: vec![huge], ..d() }),
        ConfigError::InvalidGameMode { mode: 9 }
    ));
    let dup = vec![GameMode::one_v_one(), GameMode::one_v_one()];
    assert!(matches!(bad(MatchmakingConfig { modes: dup, ..d() }), ConfigError::InvalidGameMode { mode: 1 }));
}
