//! The main job's whole `/metrics` exposition, scraped over HTTP from a running multi-region
//! session, passes `promtool check metrics` (valid text format, and the lint rules: counters
//! end in `_total`, every family has help text). Its own binary: the session installs the
//! global `metrics` recorder.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use pvp_examples::{RunningSession, SessionConfig};

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
fn main_job_metrics_pass_promtool() {
    let config = SessionConfig {
        players: 300,
        duration_secs: 3.0,
        progress_interval_secs: 0.0,
        think_time_ms: 100,
        ..SessionConfig::default()
    };
    let mut session = RunningSession::start(config).expect("session starts");
    let addr = session.metrics_addr().expect("metrics served");
    session.run_until(&AtomicBool::new(false), |_| {});
    let text = scrape(addr);
    let report = session.finish();
    assert_eq!(report.errors, 0, "{report}");
    // Every layer reported: matchmaking, sync, the game servers' network, ops.
    for family in ["pvp_global_mm_matches_total", "pvp_global_sync_messages_sent_total", "pvp_net_"] {
        assert!(text.contains(family), "{family} missing from\n{text}");
    }
    // No counter without the `_total` suffix, whatever promtool's version checks.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ") && l.ends_with(" counter")) {
        let name = line.split_whitespace().nth(2).unwrap_or_default();
        assert!(name.ends_with("_total"), "counter {name} lacks the _total suffix");
    }
    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // CI installs promtool (scripts/setup.sh); elsewhere the suffix check above still ran.
        Err(e) => eprintln!("promtool not found ({e}); exposition not linted"),
    }
}
