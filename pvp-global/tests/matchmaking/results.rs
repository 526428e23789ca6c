//! What a result reports (each player's wait and latency, ratings to seven significant digits,
//! the connect-grant material), dropped results counted even when none are kept, and the
//! counters moving exactly when documented.

use std::time::Duration;

use pvp_core::ids::PlayerId;
use pvp_global::cluster::KR;
use pvp_global::matchmaking::MatchmakingConfig;

use super::{duel, duel_from, matched};
use crate::common::{T0, mm, mm_with, ms, secs, tick};

#[test]
fn connect_grant_material() {
    let mut mm = mm();
    let a = mm.find_match(duel_from(1, 1500.0, KR, [10, 40, 80]), secs(2)).unwrap();
    mm.find_match(duel_from(2, 1500.0, KR, [10, 40, 80]), secs(2)).unwrap();
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
