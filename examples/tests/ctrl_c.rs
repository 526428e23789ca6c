//! Ctrl-C (SIGINT) drains, snapshots and exits 0.

use std::io::{BufRead, BufReader};
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
