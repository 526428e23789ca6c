//! Configs and requests: every out-of-range config field refused, extreme but valid settings
//! never panic, bad requests typed, counted and leaving the queue unchanged, the queue bound,
//! and latencies (last value wins, unmeasured regions never chosen).

use std::time::Duration;

use pvp_core::ids::{PlayerId, RegionId};
use pvp_global::cluster::{ConfigError, FleetConfig, JP, KR, SG};
use pvp_global::matchmaking::{
    GameMode, GameModeId, GlobalMatchmaking, MatchRequest, MatchmakingConfig, RegionObjective, RequestError,
};

use super::{duel_default_limit, duel_from, region};
use crate::common::{T0, backfill_of, mm, mm_with, ms};

/// A bad request and the error it must get.
type Case = (MatchRequest, fn(&RequestError) -> bool);

#[test]
fn bad_input_is_refused_typed_counted_and_leaves_the_queue_unchanged() {
    let mut mm = mm();
    let ok = mm.find_match(duel_from(1, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    let before = mm.queued_players();
    let cases: Vec<Case> = vec![
        (duel_from(2, f64::NAN, KR, [1, 1, 1]), |e| matches!(e, RequestError::InvalidRating { .. })),
        (duel_from(2, -1.0, KR, [1, 1, 1]), |e| matches!(e, RequestError::InvalidRating { .. })),
        (duel_from(2, f64::INFINITY, KR, [1, 1, 1]), |e| matches!(e, RequestError::InvalidRating { .. })),
        (duel_from(2, 1500.0, RegionId::new("us").unwrap(), [1, 1, 1]), |e| {
            matches!(e, RequestError::UnknownRegion(_))
        }),
        (duel_from(2, 1500.0, KR, [1, 1, 1]).latency(RegionId::new("eu").unwrap(), ms(5)), |e| {
            matches!(e, RequestError::UnknownRegion(_))
        }),
        (duel_from(2, 1500.0, KR, [1, 1, 1]).max_latency(Duration::ZERO), |e| {
            matches!(e, RequestError::ZeroMaxLatency)
        }),
        (duel_from(2, 1500.0, KR, [1, 1, 1]).widen_latency_to(ms(50)), |e| {
            matches!(e, RequestError::CeilingBelowLimit { .. })
        }),
        (MatchRequest::new(PlayerId::new(2), 1500.0, KR, GameModeId(77)), |e| {
            matches!(e, RequestError::UnknownMode(_))
        }),
        (duel_from(1, 1500.0, KR, [1, 1, 1]), |e| matches!(e, RequestError::AlreadyQueued(_))),
        (duel_from(2, 1500.0, KR, [1, 1, 1]).party_member(PlayerId::new(3), 1500.0), |e| {
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
    mm.find_match(duel_from(1, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel_from(2, 2500.0, KR, [10, 40, 80]), T0).unwrap();
    let err = mm.find_match(duel_from(3, 1500.0, KR, [10, 40, 80]), T0).unwrap_err();
    assert_eq!(err, RequestError::QueueFull(2));
    assert_eq!(mm.stats().rejected.queue_full, 1);
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

#[test]
fn matchmaking_config_rejects_every_out_of_range_field() {
    let check = |f: &dyn Fn(&mut MatchmakingConfig), field: &str| {
        let mut c = MatchmakingConfig::default();
        f(&mut c);
        let err = c.validate().unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidMatchmaking { field: got } if *got == field),
            "{field}: {err:?}"
        );
        assert!(GlobalMatchmaking::new(FleetConfig::reference(), c, T0).is_err());
    };
    for v in [f64::NAN, -1.0, f64::INFINITY] {
        check(&|c| c.skill_window = v, "skill_window");
        check(&|c| c.skill_window_step = v, "skill_window_step");
        check(&|c| c.skill_window_max = v, "skill_window_max");
    }
    check(&|c| c.expansion_interval = Duration::ZERO, "expansion_interval");
    check(&|c| c.lookahead = 0, "lookahead");
    check(&|c| c.max_queued_players = 0, "max_queued_players");
    check(&|c| c.modes.clear(), "modes");
    check(&|c| c.objective = RegionObjective::Percentile(0), "objective");
    check(&|c| c.objective = RegionObjective::Percentile(101), "objective");
    let mode = |id: u16, team_size: u8, teams: u8| GameMode {
        id: GameModeId(id),
        name: "m".into(),
        team_size,
        teams,
    };
    for (m, id) in
        [(mode(9, 0, 2), 9), (mode(9, 1, 1), 9), (mode(9, 7, 2), 9), (mode(9, 3, 5), 9), (mode(1, 2, 2), 1)]
    {
        let c = MatchmakingConfig { modes: vec![GameMode::one_v_one(), m], ..MatchmakingConfig::default() };
        assert!(matches!(c.validate(), Err(ConfigError::InvalidGameMode { mode }) if mode == id));
    }
    // Boundaries that are fine: 6v6, 3 teams of 4, percentile 1 and 100, zero windows.
    for objective in
        [RegionObjective::Percentile(1), RegionObjective::Percentile(100), RegionObjective::Average]
    {
        let c = MatchmakingConfig {
            modes: vec![mode(6, 6, 2), mode(3, 4, 3)],
            objective,
            skill_window: 0.0,
            skill_window_step: 0.0,
            skill_window_max: 0.0,
            ..MatchmakingConfig::default()
        };
        c.validate().unwrap();
    }
}

#[test]
fn extreme_but_valid_settings_never_panic() {
    let config = MatchmakingConfig {
        lookahead: usize::MAX,
        grant_ttl: Duration::MAX,
        queue_timeout: None,
        expansion_interval: Duration::MAX,
        latency_step: Duration::MAX,
        match_id_base: u64::MAX,
        max_queued_players: usize::MAX,
        ..MatchmakingConfig::default()
    };
    let mut mm = mm_with(config);
    let a = mm.find_match(duel_default_limit(1, 1500.0, [10, 40, 90]), T0).unwrap();
    let b = mm
        .find_match(duel_default_limit(2, 1500.0, [10, 40, 90]).widen_latency_to(Duration::MAX), T0)
        .unwrap();
    let far = Duration::MAX - Duration::from_secs(1);
    mm.heartbeat_all(far);
    let report = mm.tick(far);
    assert_eq!(report.matches, 1);
    let m = a.try_result().unwrap().unwrap();
    assert_eq!(b.try_result().unwrap().unwrap().match_id(), m.match_id());
    assert!(m.connect_grant().expires_at >= m.formed_at());
    // Backfill with a huge lookahead and TTL.
    let bf = backfill_of(&m, GameMode::ONE_V_ONE, 0, 1, 1500.0);
    let h = mm.backfill(bf, far).unwrap();
    mm.tick(far);
    assert!(h.try_result().is_none());
    assert!(h.cancel());
}

#[test]
fn requests_with_bad_input_are_typed_counted_and_leave_the_queue_unchanged() {
    let mut mm = mm();
    let regions = ["aa", "ab", "ac", "ad", "ae", "af", "ag", "ah", "ai"];
    let nine =
        regions.iter().fold(MatchRequest::new(PlayerId::new(2), 1500.0, KR, GameMode::ONE_V_ONE), |r, n| {
            r.latency(region(n), ms(5))
        });
    assert!(matches!(mm.find_match(nine, T0), Err(RequestError::TooManyLatencies)));
    // The leader listed in their own party.
    let own = MatchRequest::new(PlayerId::new(3), 1500.0, KR, GameMode::FIVE_V_FIVE)
        .latency(KR, ms(5))
        .party_member(PlayerId::new(3), 1500.0);
    assert_eq!(mm.find_match(own, T0).unwrap_err(), RequestError::DuplicatePartyMember(PlayerId::new(3)));
    // A party of ten (leader + 9) reports its real size.
    let ten = (10..19)
        .fold(MatchRequest::new(PlayerId::new(4), 1500.0, KR, GameMode::FIVE_V_FIVE), |r, i| {
            r.party_member(PlayerId::new(i), 1500.0)
        });
    assert_eq!(mm.find_match(ten, T0).unwrap_err(), RequestError::PartyTooLarge { size: 10, team_size: 5 });
    assert_eq!(
        mm.find_match(duel_default_limit(5, -0.0001, [1, 1, 1]), T0).unwrap_err(),
        RequestError::InvalidRating { player: PlayerId::new(5), rating: -0.0001 }
    );
    // Rating zero and a latency limit equal to the ceiling are accepted.
    mm.find_match(duel_default_limit(6, 0.0, [1, 1, 1]).max_latency(ms(50)).widen_latency_to(ms(50)), T0)
        .unwrap();
    let r = mm.stats().rejected;
    assert_eq!(r.too_many_latencies, 1);
    assert_eq!(r.already_queued, 1);
    assert_eq!(r.party_too_large, 1);
    assert_eq!(r.invalid_rating, 1);
    assert_eq!(mm.stats().accepted, 1);
    assert_eq!(mm.queued_players(), 1);
    for p in [2, 3, 4, 5, 10, 18] {
        assert!(!mm.is_queued(PlayerId::new(p)), "player {p}");
    }
}

#[test]
fn latencies_are_last_value_wins_and_unmeasured_regions_are_never_chosen() {
    let req = duel_default_limit(1, 1500.0, [10, 40, 90]).latency(KR, ms(99)).latency(KR, ms(80));
    assert_eq!(req.latency_to(KR), Some(ms(80)));
    assert_eq!(req.latency_to(JP), Some(ms(40)));
    assert_eq!(req.size(), 1);
    assert_eq!(req.party(), &[]);
    let mut mm = mm();
    // Neither player measured anything: they never meet, and stay queued.
    let a = mm.find_match(MatchRequest::new(PlayerId::new(1), 1500.0, KR, GameMode::ONE_V_ONE), T0).unwrap();
    let b = mm.find_match(MatchRequest::new(PlayerId::new(2), 1500.0, KR, GameMode::ONE_V_ONE), T0).unwrap();
    assert_eq!(mm.tick(T0).matches, 0);
    assert!(a.try_result().is_none() && b.try_result().is_none());
    assert_eq!(mm.queued_players(), 2);
    // Measured only to sg, both meet in sg even though they prefer kr.
    assert!(mm.cancel(PlayerId::new(1)));
    assert!(mm.cancel(PlayerId::new(2)));
    let a = mm.find_match(
        MatchRequest::new(PlayerId::new(1), 1500.0, KR, GameMode::ONE_V_ONE).latency(SG, ms(90)),
        T0,
    );
    let b = mm.find_match(
        MatchRequest::new(PlayerId::new(2), 1500.0, KR, GameMode::ONE_V_ONE).latency(SG, ms(80)),
        T0,
    );
    mm.tick(T0);
    let m = a.unwrap().try_result().unwrap().unwrap();
    assert_eq!(m.region(), SG);
    assert_eq!(b.unwrap().try_result().unwrap().unwrap().region(), SG);
}
