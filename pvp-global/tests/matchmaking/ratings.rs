//! Ratings: every system rates wins, losses and draws through `report_outcome` (Elo by K = 32
//! against the other team's mean, a party's rating its members' mean, the matchmaking rating
//! from mu), bad input and refused outcomes leave the book and the server unchanged.

use pvp_core::ids::PlayerId;
use pvp_global::cluster::{ClusterError, KR};
use pvp_global::matchmaking::{
    GameMode, MatchOutcome, MatchRequest, MatchmakingConfig, PlayerRating, RatingBook, RatingError,
    RatingSystem,
};

use super::{
    duel_default_limit, duel_from, five, five_v_five_match, ids, matched, one_v_one_match, window_config,
};
use crate::common::{T0, backfill_of, mm, mm_with, ms, tick};

#[test]
fn outcomes_update_ratings_in_every_system() {
    for system in [RatingSystem::Elo, RatingSystem::Glicko2, RatingSystem::TrueSkill, RatingSystem::WengLin] {
        let mut mm = mm_with(MatchmakingConfig { rating_system: system, ..MatchmakingConfig::default() });
        let r0 = mm.ratings().matchmaking_rating(PlayerId::new(1));
        let a = mm.find_match(duel_from(1, r0, KR, [10, 40, 80]), T0).unwrap();
        mm.find_match(duel_from(2, r0, KR, [10, 40, 80]), T0).unwrap();
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
fn ratings_refuse_bad_input_without_changing_the_book() {
    let mut book = RatingBook::new(RatingSystem::Glicko2);
    let p = PlayerId::new(1);
    let default = book.rating(p);
    assert_eq!(book.default_rating(), default);
    assert!(matches!(
        book.set(p, PlayerRating::Elo(skillratings::elo::EloRating { rating: 1600.0 })),
        Err(RatingError::WrongSystem { book: RatingSystem::Glicko2, given: RatingSystem::Elo })
    ));
    let g = |rating: f64, deviation: f64, volatility: f64| {
        PlayerRating::Glicko2(skillratings::glicko2::Glicko2Rating { rating, deviation, volatility })
    };
    for bad in [g(f64::NAN, 350.0, 0.06), g(1500.0, f64::NAN, 0.06), g(1500.0, 350.0, f64::INFINITY)] {
        assert_eq!(book.set(p, bad), Err(RatingError::NotFinite));
    }
    assert_eq!(book.rating(p), default);
    let q = PlayerId::new(2);
    assert_eq!(book.record(&[], &[q], MatchOutcome::Draw), Err(RatingError::EmptyTeam));
    assert_eq!(book.record(&[p], &[], MatchOutcome::Draw), Err(RatingError::EmptyTeam));
    assert_eq!(book.record(&[p, q], &[p], MatchOutcome::Draw), Err(RatingError::DuplicatePlayer(p)));
    assert_eq!(book.rating(p), default);
    assert_eq!(book.rating(q), default);
    book.record(&[p], &[q], MatchOutcome::FirstTeamWon).unwrap();
    assert!(book.matchmaking_rating(p) > book.matchmaking_rating(q));
    for system in [RatingSystem::Elo, RatingSystem::TrueSkill, RatingSystem::WengLin] {
        let mut b = RatingBook::new(system);
        b.record(&[p], &[q], MatchOutcome::SecondTeamWon).unwrap();
        assert!(b.matchmaking_rating(q) > b.matchmaking_rating(p), "{system:?}");
        let before = (b.rating(p), b.rating(q));
        assert!(b.record(&[q], &[q], MatchOutcome::Draw).is_err());
        assert_eq!((b.rating(p), b.rating(q)), before);
    }
}

#[test]
fn report_outcome_updates_ratings_and_frees_the_server() {
    let mut mm = mm();
    let a = mm.find_match(duel_default_limit(1, 1500.0, [10, 40, 90]), T0).unwrap();
    mm.find_match(duel_default_limit(2, 1500.0, [10, 40, 90]), T0).unwrap();
    mm.tick(T0);
    let m = a.try_result().unwrap().unwrap();
    let winner = m.team(0).next().unwrap().player();
    let loser = m.team(1).next().unwrap().player();
    mm.report_outcome(&m, MatchOutcome::FirstTeamWon).unwrap();
    assert!(mm.ratings().matchmaking_rating(winner) > mm.ratings().matchmaking_rating(loser));
    assert_eq!(mm.cluster(m.region()).unwrap().current_player_count(), 0);
    assert_eq!(mm.release_match(m.region(), m.match_id()), Err(ClusterError::UnknownMatch(m.match_id())));
}

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
