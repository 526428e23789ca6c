//! The `multi-region` and `chaos-failover` binaries as processes: bad flags exit 2 with a
//! message naming the problem (never a panic), `--help` exits 0, a tiny run exits 0 with a
//! report, and Ctrl-C (SIGINT) drains, snapshots and exits 0.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn sigint_drains_snapshots_and_exits_zero() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_multi-region"))
        .args(["--players", "200", "--duration", "0", "--progress", "0.5", "--metrics", ""])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first progress line says the session is up.
    let mut lines = Vec::new();
    loop {
        let line = rx.recv_timeout(Duration::from_secs(20)).expect("a progress line within 20 s");
        let up = line.starts_with('[');
        lines.push(line);
        if up {
            break;
        }
    }
    let killed = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill runs");
    assert!(killed.success());
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        lines.push(line);
    }
    let status = child.wait().expect("exits");
    let _ = reader.join();
    let out = lines.join("\n");
    assert!(status.success(), "exit 0:\n{out}");
    assert!(out.contains("Ctrl-C: draining"), "{out}");
    assert!(out.contains("replicas            converged"), "{out}");
    assert!(out.contains("drained true"), "{out}");
    let snaps: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("snapshot            ")).collect();
    assert_eq!(snaps.len(), 6, "results and sync snapshots of three regions");
    for s in snaps {
        assert!(std::fs::metadata(s).is_ok_and(|m| m.len() > 0), "{s} written");
        let _ = std::fs::remove_file(s);
    }
}

/// Runs a binary with `args`, killing it if it outlives `limit`; returns (exit code, stdout,
/// stderr).
fn run_bin(bin: &str, a: &[&str], limit: Duration) -> (Option<i32>, String, String) {
    let mut child = Command::new(bin)
        .args(a)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let (mut o, mut e) = (String::new(), String::new());
        let _ = out.read_to_string(&mut o);
        let _ = err.read_to_string(&mut e);
        let _ = tx.send((o, e));
    });
    let got = rx.recv_timeout(limit);
    if got.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().expect("waits");
    let _ = reader.join();
    let (o, e) = got.unwrap_or_else(|_| panic!("{bin} {a:?} still running after {limit:?}"));
    (status.code(), o, e)
}

const MR: &str = env!("CARGO_BIN_EXE_multi-region");

const CF: &str = env!("CARGO_BIN_EXE_chaos-failover");

#[test]
fn binaries_refuse_bad_flags_with_a_message_and_exit_2() {
    let quick = Duration::from_secs(30);
    for bin in [MR, CF] {
        let cases: &[(&[&str], &str)] = &[
            (&["--frobnicate"], "--frobnicate"),
            (&["--duration", "-1"], "duration_secs"),
            (&["--duration", "abc"], "--duration"),
            (&["--duration", "1e300"], "duration_secs"),
            (&["--players", "0"], "players"),
            (&["--players", "4294967295"], "players"),
            (&["--players"], "--players"),
            (&["--config", "/nonexistent/pvp.toml"], "config file"),
            (&["--metrics", "nope"], "metrics_addr"),
        ];
        for (a, says) in cases {
            let (code, out, err) = run_bin(bin, a, quick);
            assert_eq!(code, Some(2), "{bin} {a:?}: stdout {out} stderr {err}");
            assert!(err.contains(says), "{bin} {a:?}: stderr {err:?} names {says}");
            assert!(!err.contains("panicked"), "{err}");
        }
        let (code, out, _) = run_bin(bin, &["--help"], quick);
        assert_eq!(code, Some(0));
        assert!(out.contains("--duration") && out.contains("--players"), "{out}");
    }
    // chaos-failover runs every region itself.
    let (code, _, err) = run_bin(
        CF,
        &[
            "--region",
            "kr",
            "--sync",
            "127.0.0.1:1",
            "--control",
            "127.0.0.1:2",
            "--peers",
            "jp=127.0.0.1:3,sg=127.0.0.1:4",
        ],
        quick,
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("one process"), "{err}");
}

#[test]
fn a_tiny_run_exits_zero_with_a_report() {
    let (code, out, err) = run_bin(
        MR,
        &["--players", "12", "--duration", "1", "--progress", "0", "--metrics", ""],
        Duration::from_secs(90),
    );
    assert_eq!(code, Some(0), "stdout {out}\nstderr {err}");
    assert!(out.contains("multi-region: 12 bots over kr, jp, sg for 1 s"), "{out}");
    assert!(out.contains("== multi-region report =="), "{out}");
    assert!(!out.contains("metrics: http"), "metrics off: {out}");
    for s in out.lines().filter_map(|l| l.strip_prefix("snapshot            ")) {
        let _ = std::fs::remove_file(s);
    }
}
