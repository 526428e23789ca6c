//! A throwaway etcd cluster on loopback, for tests, examples and benchmarks.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Why a [`LoopbackEtcdCluster`] could not be started or driven.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoopbackEtcdError {
    /// No `etcd` binary was found (`$ETCD_BIN`, `/usr/bin/etcd`, `$PATH`).
    #[error("no etcd binary found")]
    NotInstalled,
    /// Spawning, killing or preparing a member failed.
    #[error("etcd member i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A member index outside the cluster.
    #[error("no member {0}")]
    NoSuchMember(usize),
    /// The cluster did not become healthy in time.
    #[error("etcd cluster not healthy within {0:?}")]
    NotHealthy(Duration),
}

#[derive(Debug)]
struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    child: Option<Child>,
}

/// Members of one etcd cluster running as child processes on 127.0.0.1, each in its own
/// temporary data directory; members are killed and directories removed on drop.
///
/// Election timings are etcd's defaults (heartbeat 100 ms, election timeout 1 s). Meant for
/// tests, examples and benchmarks, not production.
#[derive(Debug)]
pub struct LoopbackEtcdCluster {
    binary: PathBuf,
    root: PathBuf,
    initial_cluster: String,
    members: Vec<Member>,
}

/// Finds the etcd binary: `$ETCD_BIN`, then `/usr/bin/etcd`, then `etcd` on `$PATH`.
pub(crate) fn find_etcd() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ETCD_BIN").map(PathBuf::from) {
        return p.is_file().then_some(p);
    }
    let std_path = PathBuf::from("/usr/bin/etcd");
    if std_path.is_file() {
        return Some(std_path);
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("etcd")).find(|p| p.is_file()))
}

fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    // Hold every listener until all ports are known so that no port is handed out twice.
    let listeners =
        (0..n).map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0))).collect::<std::io::Result<Vec<_>>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect()
}

impl LoopbackEtcdCluster {
    /// Whether an etcd binary is available (tests skip themselves when it is not).
    pub fn available() -> bool {
        find_etcd().is_some()
    }

    /// Starts `size` members (1 to 7) on free loopback ports. Does not wait for health: see
    /// [`LoopbackEtcdCluster::wait_healthy`].
    pub fn start(size: usize) -> Result<Self, LoopbackEtcdError> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let binary = find_etcd().ok_or(LoopbackEtcdError::NotInstalled)?;
        if !(1..=7).contains(&size) {
            return Err(LoopbackEtcdError::NoSuchMember(size));
        }
        let root = std::env::temp_dir().join(format!(
            "pvp-etcd-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&root)?;
        let ports = free_ports(2 * size)?;
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", ports[2 * i]),
                peer_url: format!("http://127.0.0.1:{}", ports[2 * i + 1]),
                data_dir: root.join(format!("m{i}")),
                child: None,
            })
            .collect();
        let initial_cluster =
            members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect::<Vec<_>>().join(",");
        let mut cluster = Self { binary, root, initial_cluster, members };
        for i in 0..size {
            cluster.restart(i)?;
        }
        Ok(cluster)
    }

    /// Client URLs of all members (dead ones included).
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Number of members.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Kills member `i` (SIGKILL) and waits for it to exit; a dead member stays dead.
    pub fn kill(&mut self, i: usize) -> Result<(), LoopbackEtcdError> {
        let m = self.members.get_mut(i).ok_or(LoopbackEtcdError::NoSuchMember(i))?;
        if let Some(mut child) = m.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// (Re)starts member `i` with its data directory; a running member is left alone.
    pub fn restart(&mut self, i: usize) -> Result<(), LoopbackEtcdError> {
        let binary = self.binary.clone();
        let initial_cluster = self.initial_cluster.clone();
        let root = self.root.clone();
        let m = self.members.get_mut(i).ok_or(LoopbackEtcdError::NoSuchMember(i))?;
        if m.child.is_some() {
            return Ok(());
        }
        let log =
            fs::OpenOptions::new().create(true).append(true).open(root.join(format!("{}.log", m.name)))?;
        let child = Command::new(binary)
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--listen-client-urls")
            .arg(&m.client_url)
            .arg("--advertise-client-urls")
            .arg(&m.client_url)
            .arg("--listen-peer-urls")
            .arg(&m.peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&m.peer_url)
            .arg("--initial-cluster")
            .arg(initial_cluster)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg(root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        m.child = Some(child);
        Ok(())
    }

    /// Where the members keep their data and logs.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Waits until a linearizable read through `endpoints` succeeds, retrying every 50 ms for
    /// at most `timeout`.
    pub async fn wait_healthy(endpoints: &[String], timeout: Duration) -> Result<(), LoopbackEtcdError> {
        let deadline = Instant::now() + timeout;
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(500))
            .with_timeout(Duration::from_millis(500))
            .with_require_leader(true);
        // Bounded retry loop: each try is bounded by the timeouts above.
        while Instant::now() < deadline {
            let attempt = async {
                let mut c = etcd_client::Client::connect(endpoints.to_vec(), Some(options.clone())).await?;
                c.get("/pvp-health", None).await
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), attempt).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(LoopbackEtcdError::NotHealthy(timeout))
    }
}

impl Drop for LoopbackEtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            let _ = self.kill(i);
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}
