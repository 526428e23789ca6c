//! Bans are enforced, not only replicated: a ban written in one region refuses the player's
//! tickets at the matchmaking front (every region applies it through STRONG sync), and the
//! banned players stop finishing matches.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use pvp_examples::bots::player_id;
use pvp_examples::{RunningSession, SessionConfig};

#[test]
fn a_ban_written_in_jp_refuses_kr_players_tickets() {
    let config = SessionConfig {
        players: 300,
        duration_secs: 5.0,
        progress_interval_secs: 0.0,
        think_time_ms: 100,
        metrics_addr: String::new(),
        ..SessionConfig::default()
    };
    let mut session = RunningSession::start(config).expect("session starts");
    let handle = session.handle();
    let jp = "jp".parse().unwrap();
    // kr's first 20 bots (home region index 0), banned from Japan.
    for i in 0..20 {
        assert!(handle.ban(jp, player_id(0, i)));
    }
    // Bounded wait for the bans to commit, then let the session run its course.
    let deadline = Instant::now() + Duration::from_secs(5);
    while handle.matches_finished() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20)); // pacing only; the loop checks state
    }
    session.run_until(&AtomicBool::new(false), |_| {});
    let report = session.finish();
    println!("{report}");
    assert_eq!(report.bans_committed, 20, "every ban committed by a majority");
    assert!(report.bans_refused_tickets >= 20, "each banned player was refused at least once");
    for r in &report.regions {
        assert_eq!(r.replica.map(|s| s.bans), Some(20), "{} applied every ban", r.region);
    }
    assert_eq!(report.errors, 0);
    for s in &report.snapshots {
        let _ = std::fs::remove_file(s);
    }
}
