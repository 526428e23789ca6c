//! A short multi-region session on loopback (with an outsider sending junk and forged
//! datagrams to the sync links), asserted on its report and on its whole
//! `/metrics` exposition, scraped over HTTP and linted by `promtool check metrics` (valid text
//! format; counters end in `_total`; every family has help text).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use pvp_core::ids::RegionId;
use pvp_examples::{RunningSession, SessionConfig};
use pvp_global::link::{LinkKey, SealedLinks};

mod common;

/// The body of `GET /metrics` at `addr`.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read /metrics");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.") && head.contains(" 200 "), "{head}");
    body.to_owned()
}

#[test]
fn short_session_matches_everywhere_and_converges() {
    let config = SessionConfig {
        players: 300,
        duration_secs: 4.0,
        progress_interval_secs: 0.0,
        think_time_ms: 100,
        ..SessionConfig::default()
    };
    let mut session = RunningSession::start(config).expect("session starts");
    let addr = session.metrics_addr().expect("metrics served");
    // An outsider on the sync links: junk, and datagrams in the sealed format from a "jp"
    // that holds the wrong key. Each is refused and counted as dropped input, never applied
    // and never a service error.
    let outsider = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut forger = SealedLinks::new("jp".parse().unwrap(), 1);
    let mut sent = 0u64;
    for (i, &to) in session.sync_addrs().iter().enumerate() {
        let region: RegionId = session.config().regions[i].id;
        forger.add_peer(region, LinkKey::from_bytes([i as u8 + 1; 32]));
        let mut forged = Vec::new();
        forger.seal(region, &[0, 1, 2, 3], &mut forged).unwrap();
        for d in [&[0u8, 1, 2][..], &[1; 200][..], &forged[..]] {
            outsider.send_to(d, to).unwrap();
            sent += 1;
        }
    }
    session.run_until(&AtomicBool::new(false), |_| {});
    let text = scrape(addr);
    let report = session.finish();
    println!("{report}");
    // Every layer reported: matchmaking, sync, the game servers' network.
    for family in ["pvp_global_mm_matches_total", "pvp_global_sync_messages_sent_total", "pvp_net_"] {
        assert!(text.contains(family), "{family} missing from\n{text}");
    }
    // No counter without the `_total` suffix, whatever promtool's version checks.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ") && l.ends_with(" counter")) {
        let name = line.split_whitespace().nth(2).unwrap_or_default();
        assert!(name.ends_with("_total"), "counter {name} lacks the _total suffix");
    }
    common::promtool_check(&text);
    for r in &report.regions {
        assert!(r.matches_finished > 0, "matches finished in {}", r.region);
        assert!(r.matches_made > 0, "matches made in {}", r.region);
    }
    assert_eq!(report.over_latency_limit, 0, "nobody over their latency limit");
    assert!(report.converged, "replicas converged");
    assert_eq!(report.lost_results, 0);
    assert_eq!(report.errors, 0, "no errors");
    assert!(report.drained);
    assert!(report.cross_region_matches > 0, "kr and jp players meet");
    // Round trips are measured through the path: at least the profile's in-region RTT.
    let profile_ms = u64::from(SessionConfig::default().regions[0].player_rtt_ms[&"kr".parse().unwrap()]);
    assert!(report.in_region_rtt_p50_us.is_some_and(|us| us >= profile_ms * 1_000), "{report}");
    assert!(report.cross_region_rtt_p99_us.is_some(), "cross-region players measured too");
    assert!(report.connect_p99_ms.is_some(), "bots did netcode handshakes");
    assert_eq!(report.sync_links_refused, sent, "every outsider datagram refused");
    assert_eq!(report.dropped_input, sent, "and counted as dropped input, nothing else was junk");
    assert!(report.sync_links_opened > 0, "the regions' own datagrams opened");
    let seats = u64::from(SessionConfig::default().match_players());
    for r in &report.regions {
        assert!(r.servers_started >= 1, "{}: the fleet controller started real endpoints", r.region);
        // Profiles, the leaderboard and presence flow through CrossRegionSync to every region.
        let s = r.replica.expect("a local replica");
        assert_eq!(
            s.profile_games,
            report.matches_finished * seats,
            "{}: every match in the profiles",
            r.region
        );
        assert!(s.profiles > 0 && s.online > 0, "{}: profiles and presence arrived", r.region);
    }
    assert!(report.sync_lag_p50_ms.is_some_and(|l| l >= 15), "sync goes through the delayed proxies");
    for s in &report.snapshots {
        assert!(std::fs::metadata(s).is_ok_and(|m| m.len() > 0));
        let _ = std::fs::remove_file(s);
    }
}
