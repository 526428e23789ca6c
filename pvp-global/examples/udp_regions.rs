//! kr, jp and sg as three threads, each a `SyncDriver` over a UDP socket on loopback: kr bans a
//! player (STRONG: returns once 2 of 3 regions enforce it), jp and sg submit leaderboard scores
//! (EVENTUAL), and every region prints the same top 3.
//!
//! `cargo run -p pvp-global --example udp_regions`

use pvp_core::{PlayerId, RegionId};
use pvp_global::leaderboard::{GameMode, ScoreOperator};
use pvp_global::sync::driver::wall_now;
use pvp_global::sync::{CrossRegionSync, Key, SyncConfig, SyncDriver, UdpTransport, WriteOp};
use std::sync::Barrier;
use std::time::{Duration, Instant};

const MODE: GameMode = GameMode(1);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let regions = [RegionId::new("kr")?, RegionId::new("jp")?, RegionId::new("sg")?];
    let mut transports = Vec::new();
    for _ in &regions {
        transports.push(UdpTransport::bind("127.0.0.1:0".parse()?)?);
    }
    let addrs: Vec<_> = transports.iter().map(UdpTransport::local_addr).collect::<Result<_, _>>()?;
    for (i, t) in transports.iter_mut().enumerate() {
        for (j, r) in regions.iter().enumerate() {
            if i != j {
                t.add_peer(*r, addrs[j]);
            }
        }
    }
    let barrier = Barrier::new(3);
    std::thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
        let mut handles = Vec::new();
        for (i, t) in transports.into_iter().enumerate() {
            let barrier = &barrier;
            let region = regions[i];
            let peers: Vec<_> = regions.iter().copied().filter(|r| *r != region).collect();
            handles.push(s.spawn(move || -> Result<String, String> {
                let cfg = SyncConfig::new(region, peers).map_err(|e| e.to_string())?;
                let mut node = CrossRegionSync::new(cfg, wall_now());
                node.define_mode(MODE, ScoreOperator::Best).map_err(|e| e.to_string())?;
                let mut d = SyncDriver::new(node, t);
                barrier.wait();
                let started = Instant::now();
                match i {
                    0 => d
                        .write_blocking(Key::Ban(PlayerId::new(666)), WriteOp::SetAdd(0))
                        .map_err(|e| e.to_string())?,
                    _ => {
                        for p in 0..5u64 {
                            let score = (p * 37 + i as u64 * 11) % 100;
                            d.write_blocking(
                                Key::Score(MODE, PlayerId::new(p)),
                                WriteOp::Score(score as i64),
                            )
                            .map_err(|e| e.to_string())?;
                        }
                    }
                }
                let ban_took = started.elapsed();
                // Run until this region has everything (5 players ranked, the ban), bounded.
                let ok = d
                    .run_until(Duration::from_secs(10), |n| {
                        n.is_banned(PlayerId::new(666))
                            && n.leaderboards().mode(MODE).is_some_and(|b| b.len() == 5)
                    })
                    .map_err(|e| e.to_string())?;
                // Keep serving a little so the others get their acks.
                let _ = d.run_until(Duration::from_millis(300), |_| false);
                let top: Vec<String> = d
                    .node()
                    .leaderboards()
                    .mode(MODE)
                    .map(|b| {
                        b.top(3).iter().map(|e| format!("#{} p{}={}", e.rank, e.player, e.score)).collect()
                    })
                    .unwrap_or_default();
                Ok(format!(
                    "{region}: converged={ok} banned(666)={} first write done in {:?}; top3 {}",
                    d.node().is_banned(PlayerId::new(666)),
                    ban_took,
                    top.join(", ")
                ))
            }));
        }
        for h in handles {
            match h.join() {
                Ok(Ok(line)) => println!("{line}"),
                Ok(Err(e)) => println!("region failed: {e}"),
                Err(_) => println!("region thread panicked"),
            }
        }
        Ok(())
    })
}
