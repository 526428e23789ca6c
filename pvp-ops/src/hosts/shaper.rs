//! The router's user-space shaper: reads every packet one host sends another from the TUN
//! device, holds it for its link's delay (or drops it), and writes it back for the kernel to
//! forward.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{LinkShape, lock};

/// Packets held on one directed link before more are dropped (and counted).
const MAX_HELD: usize = 65_536;

/// Longest wait for a packet before the stop flag and the due packets are looked at again.
const IDLE_WAIT: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
pub(super) struct Counters {
    forwarded: AtomicU64,
    delayed: AtomicU64,
    dropped_cut: AtomicU64,
    dropped_loss: AtomicU64,
    dropped_full: AtomicU64,
    dropped_other: AtomicU64,
    write_errors: AtomicU64,
}

/// What the shaper did so far, from [`HostNet::stats`](super::HostNet::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShaperStats {
    /// Packets passed on to their host.
    pub forwarded: u64,
    /// Of those, packets held for a delay first.
    pub delayed: u64,
    /// Packets dropped on a cut link.
    pub dropped_cut: u64,
    /// Packets dropped at a link's loss rate.
    pub dropped_loss: u64,
    /// Packets dropped because a link already held 65,536 packets.
    pub dropped_full: u64,
    /// Packets that were not IPv4 between two hosts of the net.
    pub dropped_other: u64,
    /// Packets the TUN device refused to take back.
    pub write_errors: u64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> ShaperStats {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ShaperStats {
            forwarded: l(&self.forwarded),
            delayed: l(&self.delayed),
            dropped_cut: l(&self.dropped_cut),
            dropped_loss: l(&self.dropped_loss),
            dropped_full: l(&self.dropped_full),
            dropped_other: l(&self.dropped_other),
            write_errors: l(&self.write_errors),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The source and destination host of an IPv4 packet, if both are hosts of the net.
fn route(pkt: &[u8], addrs: &[Ipv4Addr]) -> Option<(usize, usize)> {
    if pkt.len() < 20 || pkt[0] >> 4 != 4 {
        return None;
    }
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
    let a = addrs.iter().position(|&x| x == src)?;
    let b = addrs.iter().position(|&x| x == dst)?;
    Some((a, b))
}

pub(super) fn run(
    dev: tun::Device,
    addrs: Vec<Ipv4Addr>,
    links: Arc<Mutex<Vec<LinkShape>>>,
    stats: Arc<Counters>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let n = addrs.len();
    let mut held: Vec<VecDeque<(Instant, Vec<u8>)>> = (0..n * n).map(|_| VecDeque::new()).collect();
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        let next_due = held.iter().filter_map(|q| q.front().map(|p| p.0)).min();
        let wait = next_due.map_or(IDLE_WAIT, |d| d.saturating_duration_since(now).min(IDLE_WAIT));
        let mut first = true;
        // Read what is there (waiting for the first packet at most until the next one is due).
        for _ in 0..1_024 {
            let got = if first { dev.recv_timeout(&mut buf, wait) } else { dev.recv(&mut buf) };
            first = false;
            let len = match got {
                Ok(len) => len,
                Err(_) => break,
            };
            let Some((a, b)) = route(&buf[..len], &addrs) else {
                bump(&stats.dropped_other);
                continue;
            };
            // Read per packet: a change applies from the next packet on.
            let shape = lock(&links)[a * n + b];
            if shape.cut {
                bump(&stats.dropped_cut);
                continue;
            }
            if shape.loss > 0.0 && rng.random::<f64>() < shape.loss {
                bump(&stats.dropped_loss);
                continue;
            }
            let q = &mut held[a * n + b];
            if shape.delay.is_zero() && q.is_empty() {
                if dev.send(&buf[..len]).is_ok() {
                    bump(&stats.forwarded);
                } else {
                    bump(&stats.write_errors);
                }
                continue;
            }
            if q.len() >= MAX_HELD {
                bump(&stats.dropped_full);
                continue;
            }
            let mut p = spare.pop().unwrap_or_default();
            p.clear();
            p.extend_from_slice(&buf[..len]);
            // FIFO per link: a packet never overtakes one sent before it on the same link.
            let due = (Instant::now() + shape.delay).max(q.back().map_or(now, |b| b.0));
            q.push_back((due, p));
        }
        let now = Instant::now();
        for q in &mut held {
            while q.front().is_some_and(|p| p.0 <= now) {
                let Some((_, p)) = q.pop_front() else { break };
                if dev.send(&p).is_ok() {
                    bump(&stats.forwarded);
                    bump(&stats.delayed);
                } else {
                    bump(&stats.write_errors);
                }
                spare.push(p);
            }
        }
        spare.truncate(4_096);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_only_ipv4_between_known_hosts() {
        let addrs = [Ipv4Addr::new(10, 77, 0, 10), Ipv4Addr::new(10, 77, 0, 11)];
        let mut p = [0u8; 20];
        p[0] = 0x45;
        p[12..16].copy_from_slice(&[10, 77, 0, 11]);
        p[16..20].copy_from_slice(&[10, 77, 0, 10]);
        assert_eq!(route(&p, &addrs), Some((1, 0)));
        p[19] = 99;
        assert_eq!(route(&p, &addrs), None, "unknown destination");
        p[19] = 10;
        p[0] = 0x60;
        assert_eq!(route(&p, &addrs), None, "IPv6");
        assert_eq!(route(&p[..19], &addrs), None, "short");
    }
}
