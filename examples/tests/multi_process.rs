//! Three processes, one region each, on loopback: they match players across regions and their
//! replicas converge; the bridge between them is sealed, and a stranger on it is dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_udp() -> String {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.to_string())
        .expect("a free UDP port")
}

fn free_tcp() -> String {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.to_string())
        .expect("a free TCP port")
}

/// Waits for `child` at most `limit`, killing it after that; returns its stdout.
fn output(mut child: Child, limit: Duration) -> String {
    let end = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
        }
    }
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    out
}

/// `(made, finished, digest)` of `region`'s report line.
fn region_line(out: &str, region: &str) -> (u64, u64, Option<String>) {
    let line = out.lines().find(|l| l.starts_with(&format!("region {region} "))).unwrap_or("");
    let num = |key: &str| {
        line.split(key)
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
    };
    let digest = line.split("digest ").nth(1).map(|d| d.trim().to_string());
    (num("made ").unwrap_or(0), num("finished ").unwrap_or(0), digest)
}

#[test]
fn three_processes_match_across_regions_and_converge() {
    let regions = ["kr", "jp", "sg"];
    let sync: Vec<String> = regions.iter().map(|_| free_udp()).collect();
    let control = free_tcp();
    let mut children = Vec::new();
    let mut stranger = None;
    for (i, r) in regions.iter().enumerate() {
        let peers: Vec<String> = regions
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, p)| format!("{p}={}", sync[j]))
            .collect();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_multi-region"));
        cmd.args(["--players", "300", "--duration", "4", "--progress", "0", "--metrics", ""])
            .args(["--region", r, "--sync", &sync[i], "--control", &control, "--peers", &peers.join(",")])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if i == 0 {
            cmd.arg("--leader");
        }
        children.push(cmd.spawn().expect("process starts"));
        if i == 0 {
            // The leader listens before the others try to join (they retry for 30 s anyway).
            std::thread::sleep(Duration::from_millis(100));
            // A stranger on the leader's bridge port, speaking the old unsealed frames: it
            // is dropped at its first frame and the regions still join.
            stranger = std::net::TcpStream::connect(control.as_str()).ok();
            if let Some(s) = stranger.as_mut() {
                let _ = s.write_all(&[5, 0, 0, 0, 1, 2, 3, 4, 5]);
            }
        }
    }
    let outs: Vec<String> = children.into_iter().map(|c| output(c, Duration::from_secs(40))).collect();
    for o in &outs {
        println!("{o}");
    }
    // The leader matched players of every region, across regions.
    let leader = &outs[0];
    for r in regions {
        assert!(region_line(leader, r).0 > 0, "leader made matches in {r}");
    }
    let cross: u64 = leader
        .lines()
        .find(|l| l.starts_with("matches "))
        .and_then(|l| l.split("cross-region ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(cross > 0, "players of different regions met");
    // Every process hosted matches and ended with the same replica.
    let digests: Vec<String> = regions
        .iter()
        .zip(&outs)
        .map(|(r, o)| {
            let (_, finished, digest) = region_line(o, r);
            assert!(finished > 0, "{r} finished matches");
            digest.expect("own replica digest")
        })
        .collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "replicas converged: {digests:?}");
    drop(stranger);
    let links_dropped: u64 = leader
        .split(", links ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(links_dropped >= 1, "the stranger's frame counted as dropped input on the links");
    for o in &outs {
        assert!(o.contains("errors              0;"), "no errors");
        assert!(o.contains("replicas            converged"), "every process saw the replicas converge");
    }
}
