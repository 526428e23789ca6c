//! Hosts on one Linux machine, for tests and chaos at the host level (feature `hosts`).
//!
//! A [`HostNet`] gives every host its own network namespace with its own address
//! (`10.77.0.10`, `10.77.0.11`, ...), all joined to one router namespace that the harness also
//! creates. No address is ever added outside those namespaces, and dropping the `HostNet` (also
//! while a test panics) kills what it started and deletes every namespace; a harness whose
//! process died without that (`kill -9`, a CI timeout) is cleaned up by the next one.
//!
//! Traffic between hosts crosses the router through a TUN device that the harness reads in
//! user space (this kernel has no `netem`): every packet from one host to another is delayed,
//! dropped at a loss rate, or dropped outright per directed link ([`LinkShape`]), so each
//! direction of each link can be slowed, made lossy or cut on its own. Traffic inside a host
//! (its loopback and its own address) never leaves the host and is never shaped.
//!
//! Processes are started in a host with [`HostNet::spawn`] (their output goes to a log the
//! harness keeps), then killed with SIGKILL, frozen with SIGSTOP, thawed, and restarted with
//! the same command. [`HostFaults`] puts all of this behind the [`FaultInjector`](crate::FaultInjector) trait so a
//! [`ChaosEngine`](crate::chaos::ChaosEngine) can drive it from a schedule.
//!
//! ```no_run
//! use std::time::Duration;
//! use pvp_ops::hosts::{HostNet, LinkShape};
//!
//! let net = HostNet::create(&["kr", "jp"])?;
//! net.set_rtt("kr", "jp", Duration::from_millis(33))?;
//! let jp = net.host("jp")?.addr();
//! net.spawn("server", "jp", "my-server", [format!("--listen={jp}:7000")])?;
//! net.spawn("client", "kr", "my-client", [format!("--connect={jp}:7000")])?;
//! // Packets from kr to jp are dropped; jp to kr still flows.
//! net.set_link("kr", "jp", LinkShape { cut: true, ..LinkShape::default() })?;
//! net.kill("server")?;
//! net.restart("server")?;
//! # Ok::<(), pvp_ops::hosts::HostError>(())
//! ```
//!
//! Needs root, the `ip` tool (iproute2) and `/dev/net/tun`; [`HostNet::check`] says which
//! is missing.

mod faults;
mod shaper;

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use faults::HostFaults;
pub use shaper::ShaperStats;

/// The router's address on every host link; hosts are `10.77.0.10` onwards.
pub const ROUTER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// Most hosts one [`HostNet`] holds.
pub const MAX_HOSTS: usize = 64;

/// Longest delay a link accepts (a typo such as seconds for milliseconds is refused).
pub const MAX_LINK_DELAY: Duration = Duration::from_secs(10);

/// Why a [`HostNet`] could not be made or driven.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// Not running as root (namespaces and TUN devices need it).
    #[error("hosts need root (CAP_NET_ADMIN, CAP_SYS_ADMIN)")]
    NotRoot,
    /// The `ip` tool (iproute2) is not installed.
    #[error("the `ip` tool (iproute2) is not installed")]
    NoIpTool,
    /// `/dev/net/tun` is missing.
    #[error("/dev/net/tun is missing")]
    NoTun,
    /// A host list that is empty, too long, or names a host twice or badly.
    #[error("bad host list: {0}")]
    BadHosts(String),
    /// No host of that name.
    #[error("no host `{0}`")]
    NoSuchHost(String),
    /// No process of that label.
    #[error("no process `{0}`")]
    NoSuchProcess(String),
    /// A process label used twice.
    #[error("a process `{0}` already exists")]
    DuplicateProcess(String),
    /// The process is not running (it exited or was killed).
    #[error("process `{0}` is not running")]
    NotRunning(String),
    /// A link shape out of range (loss outside 0..=1, delay over [`MAX_LINK_DELAY`]).
    #[error("bad link shape: {0}")]
    BadShape(String),
    /// An `ip` or `sysctl` command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The TUN device could not be made.
    #[error("TUN device: {0}")]
    Tun(String),
    /// Other I/O.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// How one direction of a link treats packets.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkShape {
    /// Added one-way delay (half the round trip when both ways have it).
    pub delay: Duration,
    /// Share of packets dropped, 0..=1.
    pub loss: f64,
    /// Every packet dropped.
    pub cut: bool,
}

impl LinkShape {
    /// A link that only delays.
    pub fn delay(delay: Duration) -> Self {
        Self { delay, ..Self::default() }
    }

    fn check(&self) -> Result<(), HostError> {
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(HostError::BadShape(format!("loss {} is outside 0..=1", self.loss)));
        }
        if self.delay > MAX_LINK_DELAY {
            return Err(HostError::BadShape(format!("delay {:?} is over {MAX_LINK_DELAY:?}", self.delay)));
        }
        Ok(())
    }
}

/// One host: a network namespace with one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    name: String,
    netns: String,
    addr: Ipv4Addr,
}

impl Host {
    /// The name it was created with.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its network namespace (for `ip netns exec`).
    pub fn netns(&self) -> &str {
        &self.netns
    }
    /// Its address, reachable from every other host of the [`HostNet`].
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }
}

/// What a started process is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    /// Running (or runnable).
    Running,
    /// Stopped by [`HostNet::freeze`].
    Frozen,
    /// Exited by itself with this status.
    Exited(ExitStatus),
    /// Killed by [`HostNet::kill`] (or a signal from elsewhere).
    Killed,
}

#[derive(Debug)]
struct Proc {
    label: String,
    host: usize,
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    log: PathBuf,
    child: Option<Child>,
    frozen: bool,
    killed: bool,
    exited: Option<ExitStatus>,
    starts: u32,
}

/// A set of hosts (network namespaces) on a shaped router; see the [module docs](self).
#[derive(Debug)]
pub struct HostNet {
    tag: String,
    router_ns: String,
    hosts: Vec<Host>,
    links: Arc<Mutex<Vec<LinkShape>>>,
    stats: Arc<shaper::Counters>,
    stop: Arc<AtomicBool>,
    shaper: Option<JoinHandle<()>>,
    procs: Mutex<Vec<Proc>>,
    log_dir: PathBuf,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs a command to completion; a non-zero exit is [`HostError::Command`].
fn run(program: &str, args: &[&str]) -> Result<String, HostError> {
    let out = Command::new(program).args(args).stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(HostError::Command {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

fn ip(args: &[&str]) -> Result<String, HostError> {
    run("ip", args)
}

/// Writes sysctls inside a namespace (`/proc/sys` shows the reader's namespace).
fn sysctl_in(netns: &str, settings: &[&str]) -> Result<(), HostError> {
    let mut args = vec!["netns", "exec", netns, "sysctl", "-q", "-w"];
    args.extend_from_slice(settings);
    ip(&args).map(|_| ())
}

/// Kills every process left in a namespace, then deletes it.
fn remove_netns(name: &str) {
    if let Ok(pids) = ip(&["netns", "pids", name]) {
        for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
    let _ = ip(&["netns", "delete", name]);
}

/// Namespaces of harnesses whose process is gone (names `pvp-<pid>-<seq>-...`).
fn remove_stale() {
    let Ok(list) = ip(&["netns", "list"]) else { return };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(rest) = name.strip_prefix("pvp-") else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            remove_netns(name);
        }
    }
}

impl HostNet {
    /// Whether hosts can be made here: root, `ip` and `/dev/net/tun`.
    pub fn check() -> Result<(), HostError> {
        if !rustix::process::geteuid().is_root() {
            return Err(HostError::NotRoot);
        }
        if Command::new("ip").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            return Err(HostError::NoIpTool);
        }
        if !Path::new("/dev/net/tun").exists() {
            return Err(HostError::NoTun);
        }
        Ok(())
    }

    /// Makes one host per name (1 to [`MAX_HOSTS`] names of letters, digits, `-` and `_`, at
    /// most 16 bytes each), addresses `10.77.0.10` onwards in that order, every link unshaped.
    pub fn create<S: AsRef<str>>(names: &[S]) -> Result<Self, HostError> {
        Self::check()?;
        let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
        if names.is_empty() || names.len() > MAX_HOSTS {
            return Err(HostError::BadHosts(format!("{} hosts (1 to {MAX_HOSTS})", names.len())));
        }
        for (i, n) in names.iter().enumerate() {
            let ok = !n.is_empty()
                && n.len() <= 16
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(HostError::BadHosts(format!("bad host name `{n}`")));
            }
            if names[..i].contains(n) {
                return Err(HostError::BadHosts(format!("host `{n}` named twice")));
            }
        }
        remove_stale();
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("pvp-{pid}-{seq}");
        let log_dir = std::env::temp_dir().join(&tag);
        std::fs::create_dir_all(&log_dir)?;
        let mut net = Self {
            router_ns: format!("{tag}-router"),
            hosts: names
                .iter()
                .enumerate()
                .map(|(i, n)| Host {
                    name: (*n).to_owned(),
                    netns: format!("{tag}-{n}"),
                    addr: Ipv4Addr::new(10, 77, 0, 10 + i as u8),
                })
                .collect(),
            tag,
            links: Arc::new(Mutex::new(vec![LinkShape::default(); names.len() * names.len()])),
            stats: Arc::default(),
            stop: Arc::new(AtomicBool::new(false)),
            shaper: None,
            procs: Mutex::new(Vec::new()),
            log_dir,
        };
        // On any error from here, dropping `net` removes what was made.
        net.build(pid, seq)?;
        Ok(net)
    }

    fn build(&mut self, pid: u32, seq: u32) -> Result<(), HostError> {
        let r = self.router_ns.clone();
        ip(&["netns", "add", &r])?;
        sysctl_in(
            &r,
            &["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"],
        )?;
        ip(&["-n", &r, "link", "set", "lo", "up"])?;
        let router = ROUTER_ADDR.to_string();
        for (i, h) in self.hosts.iter().enumerate() {
            let (ns, addr) = (h.netns.as_str(), h.addr.to_string());
            let port = format!("h{i}");
            ip(&["netns", "add", ns])?;
            ip(&["link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", &port, "netns", &r])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "addr", "add", &format!("{addr}/32"), "dev", "eth0"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", ns, "route", "add", &router, "dev", "eth0", "scope", "link"])?;
            ip(&["-n", ns, "route", "add", "10.77.0.0/24", "via", &router, "dev", "eth0", "src", &addr])?;
            ip(&["-n", &r, "addr", "add", &format!("{router}/32"), "dev", &port])?;
            ip(&["-n", &r, "link", "set", &port, "up"])?;
            ip(&["-n", &r, "route", "add", &format!("{addr}/32"), "dev", &port, "scope", "link"])?;
            // Everything a host sends to another goes to the shaper first.
            ip(&["-n", &r, "rule", "add", "iif", &port, "lookup", "100"])?;
        }
        // The TUN device is made here (no address, down) and moved into the router at once;
        // its descriptor keeps working across the move.
        let tun_name = format!("pvt{}x{seq}", pid % 100_000);
        let mut cfg = tun::Configuration::default();
        cfg.tun_name(&tun_name);
        cfg.platform_config(|p| {
            p.ensure_root_privileges(false);
        });
        let dev = tun::create(&cfg).map_err(|e| HostError::Tun(e.to_string()))?;
        ip(&["link", "set", &tun_name, "netns", &r])?;
        sysctl_in(
            &r,
            &[
                &format!("net.ipv4.conf.{tun_name}.rp_filter=0"),
                &format!("net.ipv6.conf.{tun_name}.disable_ipv6=1"),
            ],
        )?;
        ip(&["-n", &r, "link", "set", &tun_name, "up"])?;
        ip(&["-n", &r, "route", "add", "default", "dev", &tun_name, "table", "100"])?;
        dev.set_nonblock()?;
        let addrs: Vec<Ipv4Addr> = self.hosts.iter().map(|h| h.addr).collect();
        let (links, stats, stop) = (self.links.clone(), self.stats.clone(), self.stop.clone());
        let seed = u64::from(pid) << 32 | u64::from(seq);
        self.shaper = Some(
            std::thread::Builder::new()
                .name(format!("shaper-{seq}"))
                .spawn(move || shaper::run(dev, addrs, links, stats, stop, seed))?,
        );
        Ok(())
    }

    /// The hosts, in creation order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> Result<&Host, HostError> {
        self.hosts.iter().find(|h| h.name == name).ok_or_else(|| HostError::NoSuchHost(name.to_owned()))
    }

    fn index(&self, name: &str) -> Result<usize, HostError> {
        self.hosts.iter().position(|h| h.name == name).ok_or_else(|| HostError::NoSuchHost(name.to_owned()))
    }

    /// Sets how packets from `from` to `to` are treated (one direction only).
    pub fn set_link(&self, from: &str, to: &str, shape: LinkShape) -> Result<(), HostError> {
        shape.check()?;
        let (a, b) = (self.index(from)?, self.index(to)?);
        let n = self.hosts.len();
        lock(&self.links)[a * n + b] = shape;
        Ok(())
    }

    /// How packets from `from` to `to` are treated now.
    pub fn link(&self, from: &str, to: &str) -> Result<LinkShape, HostError> {
        let (a, b) = (self.index(from)?, self.index(to)?);
        Ok(lock(&self.links)[a * self.hosts.len() + b])
    }

    /// Delays both directions between `a` and `b` by half of `rtt` (loss and cuts unchanged).
    pub fn set_rtt(&self, a: &str, b: &str, rtt: Duration) -> Result<(), HostError> {
        let one_way = rtt / 2;
        for (x, y) in [(a, b), (b, a)] {
            let shape = LinkShape { delay: one_way, ..self.link(x, y)? };
            self.set_link(x, y, shape)?;
        }
        Ok(())
    }

    /// What the shaper has done so far.
    pub fn stats(&self) -> ShaperStats {
        self.stats.snapshot()
    }

    /// Starts `program` with `args` in `host` as the process `label` (unique in this
    /// `HostNet`); its stdout and stderr go to its log ([`HostNet::log`]). Returns its pid.
    pub fn spawn<I, A>(
        &self,
        label: &str,
        host: &str,
        program: impl AsRef<OsStr>,
        args: I,
    ) -> Result<u32, HostError>
    where
        I: IntoIterator<Item = A>,
        A: AsRef<OsStr>,
    {
        self.spawn_with_env(label, host, program, args, std::iter::empty::<(OsString, OsString)>())
    }

    /// Like [`spawn`](Self::spawn), with extra environment variables.
    pub fn spawn_with_env<I, A, E, K, V>(
        &self,
        label: &str,
        host: &str,
        program: impl AsRef<OsStr>,
        args: I,
        env: E,
    ) -> Result<u32, HostError>
    where
        I: IntoIterator<Item = A>,
        A: AsRef<OsStr>,
        E: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let host = self.index(host)?;
        let ok = !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            return Err(HostError::BadHosts(format!("bad process label `{label}`")));
        }
        let mut procs = lock(&self.procs);
        if procs.iter().any(|p| p.label == label) {
            return Err(HostError::DuplicateProcess(label.to_owned()));
        }
        let mut p = Proc {
            label: label.to_owned(),
            host,
            program: program.as_ref().to_owned(),
            args: args.into_iter().map(|a| a.as_ref().to_owned()).collect(),
            env: env.into_iter().map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned())).collect(),
            log: self.log_dir.join(format!("{label}.log")),
            child: None,
            frozen: false,
            killed: false,
            exited: None,
            starts: 0,
        };
        let pid = self.start(&mut p)?;
        procs.push(p);
        Ok(pid)
    }

    fn start(&self, p: &mut Proc) -> Result<u32, HostError> {
        let log = OpenOptions::new().create(true).append(true).open(&p.log)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hosts[p.host].netns])
            .arg(&p.program)
            .args(&p.args)
            .envs(p.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // `ip netns exec` execs the program: the child's pid is the program's.
        let child = cmd.spawn()?;
        let pid = child.id();
        p.child = Some(child);
        p.frozen = false;
        p.killed = false;
        p.exited = None;
        p.starts += 1;
        Ok(pid)
    }

    fn with_proc<T>(
        &self,
        label: &str,
        f: impl FnOnce(&mut Proc) -> Result<T, HostError>,
    ) -> Result<T, HostError> {
        let mut procs = lock(&self.procs);
        let p = procs
            .iter_mut()
            .find(|p| p.label == label)
            .ok_or_else(|| HostError::NoSuchProcess(label.to_owned()))?;
        f(p)
    }

    fn signal(p: &mut Proc, sig: rustix::process::Signal) -> Result<(), HostError> {
        Self::reap(p);
        let child = p.child.as_ref().ok_or_else(|| HostError::NotRunning(p.label.clone()))?;
        let pid = rustix::process::Pid::from_raw(child.id() as i32)
            .ok_or_else(|| HostError::NotRunning(p.label.clone()))?;
        rustix::process::kill_process(pid, sig).map_err(|e| HostError::Io(e.into()))
    }

    /// Notes an exit that already happened.
    fn reap(p: &mut Proc) {
        if let Some(c) = p.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                p.exited = Some(status);
                p.child = None;
            }
        }
    }

    /// The pid of a running (or frozen) process.
    pub fn pid(&self, label: &str) -> Result<u32, HostError> {
        self.with_proc(label, |p| {
            Self::reap(p);
            p.child.as_ref().map(Child::id).ok_or_else(|| HostError::NotRunning(label.to_owned()))
        })
    }

    /// What the process is doing now.
    pub fn state(&self, label: &str) -> Result<ProcState, HostError> {
        self.with_proc(label, |p| {
            Self::reap(p);
            Ok(match (&p.child, p.exited) {
                (Some(_), _) if p.frozen => ProcState::Frozen,
                (Some(_), _) => ProcState::Running,
                (None, _) if p.killed => ProcState::Killed,
                (None, Some(s)) if std::os::unix::process::ExitStatusExt::signal(&s).is_some() => {
                    ProcState::Killed
                }
                (None, Some(s)) => ProcState::Exited(s),
                (None, None) => ProcState::Killed,
            })
        })
    }

    /// Kills the process with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill(&self, label: &str) -> Result<(), HostError> {
        self.with_proc(label, |p| {
            Self::signal(p, rustix::process::Signal::KILL)?;
            if let Some(mut c) = p.child.take() {
                p.exited = c.wait().ok();
            }
            p.killed = true;
            p.frozen = false;
            Ok(())
        })
    }

    /// Freezes the process with SIGSTOP: it stays alive and holds its sockets, but runs no
    /// code, so its peers see silence and its leases lapse.
    pub fn freeze(&self, label: &str) -> Result<(), HostError> {
        self.with_proc(label, |p| {
            Self::signal(p, rustix::process::Signal::STOP)?;
            p.frozen = true;
            Ok(())
        })
    }

    /// Thaws a frozen process with SIGCONT.
    pub fn thaw(&self, label: &str) -> Result<(), HostError> {
        self.with_proc(label, |p| {
            Self::signal(p, rustix::process::Signal::CONT)?;
            p.frozen = false;
            Ok(())
        })
    }

    /// Starts the process again with the same command, host and environment (killing it
    /// first if it still runs); its log continues. Returns the new pid.
    pub fn restart(&self, label: &str) -> Result<u32, HostError> {
        self.with_proc(label, |p| {
            Self::reap(p);
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            self.start(p)
        })
    }

    /// How many times the process was started (1 after `spawn`, +1 per restart).
    pub fn starts(&self, label: &str) -> Result<u32, HostError> {
        self.with_proc(label, |p| Ok(p.starts))
    }

    /// Waits at most `limit` for the process to exit; `None` if it still runs after that.
    /// Polls every 20 ms: a bounded wait for a child, not a synchronisation point.
    pub fn wait(&self, label: &str, limit: Duration) -> Result<Option<ExitStatus>, HostError> {
        let end = Instant::now() + limit;
        loop {
            let done = self.with_proc(label, |p| {
                Self::reap(p);
                Ok(if p.child.is_none() { p.exited } else { None })
            })?;
            if done.is_some() || Instant::now() >= end {
                return Ok(done);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process printed so far (over all its starts).
    pub fn log(&self, label: &str) -> Result<String, HostError> {
        let path = self.with_proc(label, |p| Ok(p.log.clone()))?;
        Ok(String::from_utf8_lossy(&std::fs::read(path)?).into_owned())
    }

    /// Runs `program` in `host` to completion (at most `limit`, then it is killed) and
    /// returns its exit status and stdout.
    pub fn exec<I, A>(
        &self,
        host: &str,
        program: impl AsRef<OsStr>,
        args: I,
        limit: Duration,
    ) -> Result<(ExitStatus, String), HostError>
    where
        I: IntoIterator<Item = A>,
        A: AsRef<OsStr>,
    {
        let host = self.host(host)?;
        let out_path = self.log_dir.join(format!("exec-{}.out", unique()));
        let out = File::create(&out_path)?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &host.netns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()?;
        let end = Instant::now() + limit;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if Instant::now() >= end {
                let _ = child.kill();
                break child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let text = String::from_utf8_lossy(&std::fs::read(&out_path)?).into_owned();
        let _ = std::fs::remove_file(out_path);
        Ok((status, text))
    }

    /// The prefix of every namespace this harness made (`pvp-<pid>-<seq>`).
    pub fn tag(&self) -> &str {
        &self.tag
    }
}

fn unique() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

impl Drop for HostNet {
    fn drop(&mut self) {
        for p in lock(&self.procs).iter_mut() {
            if let Some(mut c) = p.child.take() {
                if let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32) {
                    // A frozen process dies of SIGKILL too; SIGCONT first lets it be reaped at once.
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::CONT);
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.shaper.take() {
            let _ = t.join();
        }
        for h in &self.hosts {
            remove_netns(&h.netns);
        }
        remove_netns(&self.router_ns);
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}
