//! The matchmaking leader elected on a real 3-member etcd cluster: three processes, one
//! region each, elect one leader that places matches in every region; one etcd member dies
//! and the election carries on; the leader's process is killed (-9) and another process takes
//! the next term and places matches again (in every surviving region: their servers were
//! started afresh for the new leader and report to it), while the third follows it.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pvp_global::coord::LoopbackEtcdCluster;

/// A loopback port free for TCP and UDP both (a control address takes both; a sync address
/// needs UDP).
fn free_port() -> String {
    loop {
        let t = TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("a free TCP port");
        if UdpSocket::bind(t).is_ok() {
            return t.to_string();
        }
    }
}

/// `--peers` for region `me`: every other region's sync address.
fn peer_list(regions: &[&str], sync: &[String], me: usize) -> String {
    let mut out = Vec::new();
    for (j, (r, a)) in regions.iter().zip(sync).enumerate() {
        if j != me {
            out.push(format!("{r}={a}"));
        }
    }
    out.join(",")
}

/// One process and the lines it printed so far (a reader thread collects them).
struct Proc {
    region: &'static str,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Proc {
    fn has(&self, needle: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits for the process at most `limit` (killing it after that), and for its output.
    fn finish(&mut self, limit: Duration) {
        let end = Instant::now() + limit;
        while Instant::now() < end && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until `cond` holds; false if it never did.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// `matches made` of `region` in a report (the leader's region lines).
fn made_in(out: &str, region: &str) -> u64 {
    out.lines()
        .find(|l| l.starts_with(&format!("region {region} ")))
        .and_then(|l| l.split("made ").nth(1))
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_killed_leader_is_replaced_by_an_elected_one_that_places_matches() {
    if !LoopbackEtcdCluster::available() {
        eprintln!("NOTE: skipping, no etcd binary (apt-get install etcd-server)");
        return;
    }
    let mut etcd = LoopbackEtcdCluster::start(3).expect("etcd starts");
    let urls = etcd.client_urls();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(LoopbackEtcdCluster::wait_healthy(&urls, Duration::from_secs(30))).expect("etcd healthy");
    let regions = ["kr", "jp", "sg"];
    let sync: Vec<String> = regions.iter().map(|_| free_port()).collect();
    let mut procs: Vec<Proc> = Vec::new();
    for (i, r) in regions.iter().enumerate() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_multi-region"))
            .args([
                "--players",
                "300",
                "--duration",
                "16",
                "--progress",
                "0",
                "--metrics",
                "",
                "--seed",
                "21",
            ])
            .args([
                "--region",
                r,
                "--sync",
                &sync[i],
                "--control",
                &free_port(),
                "--peers",
                &peer_list(&regions, &sync, i),
            ])
            .args(["--etcd", &urls.join(",")])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("process starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        procs.push(Proc { region: r, child, lines, reader: Some(reader) });
    }
    // One leader for term 1, and the two others follow it.
    assert!(
        wait_for(Duration::from_secs(30), || procs.iter().any(|p| p.has("leads term 1"))),
        "a process leads term 1"
    );
    let first = procs.iter().position(|p| p.has("leads term 1")).expect("the first leader");
    let leader1 = procs[first].region;
    assert!(
        wait_for(Duration::from_secs(10), || procs
            .iter()
            .enumerate()
            .all(|(i, p)| i == first || p.has(&format!("follows {leader1} (term 1)")))),
        "the others follow {leader1}"
    );
    assert_eq!(procs.iter().filter(|p| p.has("leads term 1")).count(), 1, "one leader per term");
    // An etcd member dies: two of three keep the quorum and nothing changes hands.
    etcd.kill(2).expect("kill an etcd member");
    std::thread::sleep(Duration::from_secs(3));
    assert!(!procs.iter().any(|p| p.has("term 2")), "losing one etcd member of three changes no leader");
    // The leader's process dies without a word.
    procs[first].child.kill().expect("kill the leader");
    let killed = Instant::now();
    assert!(
        wait_for(Duration::from_secs(15), || procs.iter().any(|p| p.has("leads term 2"))),
        "another process leads term 2"
    );
    let took = killed.elapsed();
    let second = procs.iter().position(|p| p.has("leads term 2")).expect("the second leader");
    assert_ne!(second, first);
    let leader2 = procs[second].region;
    let third = (0..3).find(|&i| i != first && i != second).expect("a third process");
    assert!(
        wait_for(Duration::from_secs(10), || procs[third].has(&format!("follows {leader2} (term 2)"))),
        "the third process follows the new leader"
    );
    println!("takeover: {leader2} led term 2 {:.2} s after {leader1} was killed", took.as_secs_f64());
    for p in &mut procs {
        p.finish(Duration::from_secs(60));
    }
    for p in &procs {
        println!("---- {}\n{}", p.region, p.text());
    }
    let report = procs[second].text();
    // The new leader's report is its term's: it placed matches in both surviving regions
    // (the follower's servers of term 2 reported to it over the network).
    for r in [leader2, procs[third].region] {
        assert!(made_in(&report, r) > 0, "term 2 placed matches in {r}");
    }
    assert_eq!(made_in(&report, leader1), 0, "no match is placed in the dead region after the takeover");
    for p in [&procs[second], &procs[third]] {
        assert!(p.has("newest term 2"), "{} knows term 2", p.region);
        assert!(p.has("errors              0;"), "{} had no errors", p.region);
    }
}
