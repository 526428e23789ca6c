//! Tickets and their handles: a result delivered exactly once, cancel from either side and of a
//! whole party, dropped handles, handles outliving the matchmaker, queue timeouts, re-queueing
//! after every end, blocking waits across threads and async waits.

use std::time::Duration;

use pvp_core::ids::PlayerId;
use pvp_global::cluster::{ClusterError, KR};
use pvp_global::matchmaking::{GameMode, MatchError, MatchRequest, MatchmakingConfig, RequestError};

use super::{duel, duel_default_limit, duel_from, five, ids, matched, region};
use crate::common::{T0, mm, mm_with, ms, secs, tick};

#[test]
fn cancel_through_handle_or_matchmaker() {
    let mut mm = mm();
    let a = mm.find_match(duel_from(1, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    assert!(a.cancel());
    assert!(!a.cancel());
    assert_eq!(a.try_result(), Some(Err(MatchError::Cancelled)));
    let b = mm.find_match(duel_from(2, 1500.0, KR, [10, 40, 80]), T0).unwrap();
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
    let again = mm.find_match(duel_from(2, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    assert!(again.cancel());
    let again = mm.find_match(duel_from(2, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    assert!(again.cancel());
    tick(&mut mm, T0);
    assert_eq!(mm.queued_players(), 0);
    assert_eq!(mm.stats().cancelled, 4);
    // A matched ticket can no longer be cancelled.
    let c = mm.find_match(duel_from(3, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel_from(4, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    tick(&mut mm, T0);
    assert!(!c.cancel());
    assert!(c.try_result().unwrap().is_ok());
}

#[test]
fn tickets_time_out_and_drop_ends_the_rest() {
    let mut mm = mm_with(MatchmakingConfig { queue_timeout: Some(secs(30)), ..MatchmakingConfig::default() });
    let a = mm.find_match(duel_from(1, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    tick(&mut mm, secs(30));
    assert!(a.try_result().is_none());
    assert_eq!(tick(&mut mm, secs(31)).timed_out, 1);
    assert_eq!(a.wait(), Err(MatchError::TimedOut));
    let b = mm.find_match(duel_from(2, 1500.0, KR, [10, 40, 80]), secs(31)).unwrap();
    drop(mm);
    assert_eq!(b.wait(), Err(MatchError::Shutdown));
}

#[test]
fn blocking_wait_across_threads() {
    let mut mm = mm();
    let a = mm.find_match(duel_from(1, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    let b = mm.find_match(duel_from(2, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    let waiter = std::thread::spawn(move || a.wait());
    tick(&mut mm, T0);
    let got = waiter.join().unwrap().unwrap();
    assert_eq!(Some(got.match_id()), b.wait_timeout(secs(5)).and_then(|r| r.ok()).map(|m| m.match_id()));
    let c = mm.find_match(duel_from(3, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    assert!(c.wait_timeout(ms(1)).is_none());
}

#[cfg(feature = "tokio")]
#[tokio::test]
async fn await_with_tokio() {
    let mut mm = mm();
    let a = mm.find_match(duel_from(1, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    mm.find_match(duel_from(2, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    let (res, report) = tokio::join!(a.wait_async(), async { tick(&mut mm, T0) });
    assert_eq!(report.matches, 1);
    assert_eq!(res.unwrap().players().len(), 2);
    let c = mm.find_match(duel_from(3, 1500.0, KR, [10, 40, 80]), T0).unwrap();
    assert!(c.wait_timeout_async(ms(1)).await.is_none());
}

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

#[test]
fn cancel_is_idempotent_from_both_sides() {
    let mut mm = mm();
    let p = PlayerId::new(1);
    assert!(!mm.cancel(p)); // never queued
    let h = mm.find_match(duel_default_limit(1, 1500.0, [10, 40, 90]), T0).unwrap();
    assert_eq!(h.player(), Some(p));
    assert!(mm.is_queued(p));
    assert!(h.cancel());
    assert!(!mm.is_queued(p));
    assert!(!h.cancel());
    assert!(!mm.cancel(p));
    assert_eq!(h.try_result(), Some(Err(MatchError::Cancelled)));
    assert!(h.is_finished());
    assert_eq!(h.wait(), Err(MatchError::Cancelled));
    assert_eq!(h.wait_timeout(Duration::ZERO), Some(Err(MatchError::Cancelled)));
    let report = mm.tick(T0);
    assert_eq!(report.cancelled, 1);
    assert_eq!(mm.stats().cancelled, 1);
    assert_eq!(mm.queued_players(), 0);
    // Queue again, cancel through the matchmaker this time.
    let h2 = mm.find_match(duel_default_limit(1, 1500.0, [10, 40, 90]), T0).unwrap();
    assert!(mm.cancel(p));
    assert!(!mm.cancel(p));
    assert!(!h2.cancel());
    assert_eq!(h2.try_result(), Some(Err(MatchError::Cancelled)));
    assert_eq!(mm.stats().cancelled, 2);
    assert_eq!(mm.queued_players(), 0);
    // The old handle is not affected by the new ticket.
    assert_eq!(h.try_result(), Some(Err(MatchError::Cancelled)));
}

#[test]
fn a_party_member_cancels_the_whole_party() {
    let mut mm = mm();
    let req = MatchRequest::new(PlayerId::new(1), 1500.0, KR, GameMode::FIVE_V_FIVE)
        .latency(KR, ms(10))
        .party_member(PlayerId::new(2), 1400.0)
        .party_member(PlayerId::new(3), 1600.0);
    let h = mm.find_match(req, T0).unwrap();
    assert_eq!(mm.queued_players(), 3);
    assert!(mm.is_queued(PlayerId::new(3)));
    assert!(mm.cancel(PlayerId::new(3)));
    assert_eq!(mm.queued_players(), 0);
    for p in 1..=3 {
        assert!(!mm.is_queued(PlayerId::new(p)));
    }
    assert_eq!(h.try_result(), Some(Err(MatchError::Cancelled)));
}

#[test]
fn a_matched_ticket_cannot_be_cancelled_and_results_poll_once() {
    let mut mm = mm();
    let a = mm.find_match(duel_default_limit(1, 1500.0, [10, 40, 90]), T0).unwrap();
    let b = mm.find_match(duel_default_limit(2, 1550.0, [10, 40, 90]), T0).unwrap();
    let report = mm.tick(T0);
    assert_eq!((report.matches, report.matched_players, report.tickets), (1, 2, 2));
    assert!(!a.cancel());
    assert!(!mm.cancel(PlayerId::new(2)));
    let m = b.try_result().unwrap().unwrap();
    assert_eq!(a.try_result().unwrap().unwrap(), m);
    assert_eq!(m.region(), KR);
    assert_eq!(m.players().len(), 2);
    assert_eq!(m.team(0).count(), 1);
    assert_eq!(m.team(1).count(), 1);
    assert!(!m.is_backfill());
    assert_eq!(mm.poll_match().as_ref(), Some(&m));
    assert_eq!(mm.poll_match(), None);
    assert_eq!(mm.queued_players(), 0);
    // The players may queue again at once.
    mm.find_match(duel_default_limit(1, 1500.0, [10, 40, 90]), T0).unwrap();
    // The match holds server slots until released; releasing twice is refused.
    assert_eq!(mm.cluster(KR).unwrap().current_player_count(), 2);
    mm.release_match(KR, m.match_id()).unwrap();
    assert_eq!(mm.release_match(KR, m.match_id()), Err(ClusterError::UnknownMatch(m.match_id())));
    assert_eq!(mm.release_match(region("us"), m.match_id()), Err(ClusterError::UnknownMatch(m.match_id())));
    assert_eq!(mm.cluster(KR).unwrap().current_player_count(), 0);
}

#[test]
fn queue_timeout_is_exclusive_and_counted() {
    let mut mm =
        mm_with(MatchmakingConfig { queue_timeout: Some(ms(1_000)), ..MatchmakingConfig::default() });
    let h = mm.find_match(duel_default_limit(1, 1500.0, [10, 40, 90]), T0).unwrap();
    mm.heartbeat_all(ms(1_000));
    assert_eq!(mm.tick(ms(1_000)).timed_out, 0);
    assert!(h.try_result().is_none());
    mm.heartbeat_all(ms(1_001));
    assert_eq!(mm.tick(ms(1_001)).timed_out, 1);
    assert_eq!(h.try_result(), Some(Err(MatchError::TimedOut)));
    assert!(!h.cancel());
    assert_eq!(mm.stats().timed_out, 1);
    assert_eq!(mm.queued_players(), 0);
    assert!(!mm.is_queued(PlayerId::new(1)));
}

#[test]
fn dropping_the_matchmaker_ends_waiting_tickets() {
    let mut mm = mm();
    let h = mm.find_match(duel_default_limit(1, 1500.0, [10, 40, 90]), T0).unwrap();
    drop(mm);
    assert_eq!(h.try_result(), Some(Err(MatchError::Shutdown)));
    assert_eq!(h.wait(), Err(MatchError::Shutdown));
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
