//! Backfill: a running match filled, bad backfills typed and counted, a window wider than the
//! maximum, completion once every slot is filled, cancellation (counted like a ticket, or when
//! the match ends first), and backfill and new matches in one tick never sharing a player.

use pvp_core::ids::{MatchId, PlayerId};
use pvp_global::cluster::{JP, KR};
use pvp_global::matchmaking::{
    BackfillRequest, GameMode, GameModeId, MatchError, MatchResult, MatchmakingConfig, RequestError,
};

use super::{
    duel, duel_default_limit, duel_from, five, five_v_five_match, ids, matched, one_v_one_match, region,
    window_config,
};
use crate::common::{T0, backfill_of, mm, mm_with, ms, secs, tick};

#[test]
fn backfill_fills_a_running_match() {
    let mut mm = mm();
    let a = mm.find_match(duel_from(1, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel_from(2, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    tick(&mut mm, T0);
    let m = a.try_result().unwrap().unwrap();
    // Player 2 left; find a replacement for team 1.
    let req = backfill_of(&m, GameMode::ONE_V_ONE, 1, 1, 1500.0);
    let bf = mm.backfill(req, secs(1)).unwrap();
    let far = mm.find_match(duel_from(3, 1900.0, KR, [10, 40, 80]), secs(1)).unwrap();
    let near = mm.find_match(duel_from(4, 1520.0, KR, [10, 40, 80]), secs(1)).unwrap();
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
fn bad_backfills_are_typed_and_counted() {
    let mut mm = mm();
    let a = mm.find_match(duel_default_limit(1, 1500.0, [10, 40, 90]), T0).unwrap();
    mm.find_match(duel_default_limit(2, 1500.0, [10, 40, 90]), T0).unwrap();
    mm.tick(T0);
    let m = a.try_result().unwrap().unwrap();
    let ok = BackfillRequest {
        match_id: m.match_id(),
        region: KR,
        mode: GameMode::ONE_V_ONE,
        team: 1,
        slots: 1,
        rating: 1500.0,
    };
    let cases: Vec<(BackfillRequest, RequestError)> = vec![
        (BackfillRequest { slots: 0, ..ok }, RequestError::BadBackfill),
        (BackfillRequest { slots: 2, ..ok }, RequestError::BadBackfill),
        (BackfillRequest { team: 2, ..ok }, RequestError::BadBackfill),
        (BackfillRequest { rating: f64::NAN, ..ok }, RequestError::BadBackfill),
        (BackfillRequest { rating: -1.0, ..ok }, RequestError::BadBackfill),
        (BackfillRequest { match_id: MatchId::new(999_999), ..ok }, RequestError::UnknownMatch),
        (BackfillRequest { region: JP, ..ok }, RequestError::UnknownMatch),
        (BackfillRequest { region: region("us"), ..ok }, RequestError::UnknownRegion(region("us"))),
        (BackfillRequest { mode: GameModeId(42), ..ok }, RequestError::UnknownMode(GameModeId(42))),
    ];
    for (req, want) in cases {
        assert_eq!(mm.backfill(req, T0).unwrap_err(), want, "{req:?}");
    }
    let r = mm.stats().rejected;
    assert_eq!(r.bad_backfill, 7);
    assert_eq!(r.unknown_region, 1);
    assert_eq!(r.unknown_mode, 1);
    // A valid backfill ends Cancelled when its match is released first.
    let h = mm.backfill(ok, T0).unwrap();
    assert_eq!(h.player(), None);
    mm.release_match(KR, m.match_id()).unwrap();
    mm.heartbeat_all(ms(1));
    mm.tick(ms(1));
    assert_eq!(h.try_result(), Some(Err(MatchError::Cancelled)));
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
