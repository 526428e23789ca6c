//! Resident-memory report for the NUMA allocator: RSS before and after 10^8 small-object
//! alloc/free cycles (8-256 bytes, 1024 blocks live at any time), then four rounds of 10^7 blocks
//! allocated on one thread and freed on another.
//!
//! `cargo run --release -p pvp-core --example numa_rss [cycles]`

use core::alloc::Layout;
use core::ptr::NonNull;
use std::sync::mpsc;
use std::time::Instant;

use pvp_core::numa::{NumaAllocator, resident_memory_bytes};

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn layout_for(i: u64) -> Layout {
    // A cheap mix of sizes 8..=256 (xorshift of the index).
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    let size = 8 + (x % 249) as usize;
    Layout::from_size_align(size, 8).expect("valid layout")
}

struct Block(NonNull<u8>, Layout);
// SAFETY: each block is handed to exactly one other thread.
unsafe impl Send for Block {}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cycles: u64 = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 100_000_000,
    };
    let alloc = NumaAllocator::detect()?;
    const LIVE: usize = 1024;
    let mut ring: Vec<Option<(NonNull<u8>, Layout)>> = vec![None; LIVE];

    // Warm-up: reach the steady state (segments mapped, caches filled).
    let mut run = |from: u64, to: u64| -> Result<(), Box<dyn std::error::Error>> {
        for i in from..to {
            let slot = &mut ring[(i as usize) % LIVE];
            if let Some((p, l)) = slot.take() {
                // SAFETY: allocated below with this layout, freed once.
                unsafe { alloc.deallocate(p, l) };
            }
            let l = layout_for(i);
            let p = alloc.allocate_local(l)?;
            // SAFETY: a fresh block of at least one byte.
            unsafe { p.as_ptr().write(i as u8) };
            *slot = Some((p, l));
        }
        Ok(())
    };
    run(0, 1_000_000)?;
    let before = resident_memory_bytes()?;
    let segments_before: u64 = alloc.stats().nodes.iter().map(|n| n.segments).sum();
    let start = Instant::now();
    run(1_000_000, 1_000_000 + cycles)?;
    let elapsed = start.elapsed();
    let after = resident_memory_bytes()?;
    let segments_after: u64 = alloc.stats().nodes.iter().map(|n| n.segments).sum();
    println!(
        "same-thread: {cycles} alloc/free cycles in {elapsed:.2?} ({:.2} ns/cycle)",
        elapsed.as_nanos() as f64 / cycles as f64
    );
    println!(
        "  RSS before {:.2} MiB, after {:.2} MiB, growth {:+.2} MiB",
        mib(before),
        mib(after),
        (after as f64 - before as f64) / (1024.0 * 1024.0)
    );
    println!("  pool segments before {segments_before}, after {segments_after}");

    let cross = (cycles / 10).max(1);
    // Four rounds: the first ones touch the pages the in-flight blocks need; the later ones
    // must not grow.
    for round in 1..=4 {
        let (tx, rx) = mpsc::sync_channel::<Block>(4096);
        let start = Instant::now();
        std::thread::scope(|s| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let consumer = s.spawn(|| {
                for Block(p, l) in rx {
                    // SAFETY: each block arrives once, allocated with this layout.
                    unsafe { alloc.deallocate(p, l) };
                }
            });
            for i in 0..cross {
                let l = layout_for(i);
                let p = alloc.allocate_local(l)?;
                if tx.send(Block(p, l)).is_err() {
                    break;
                }
            }
            drop(tx);
            consumer.join().map_err(|_| "consumer panicked")?;
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        let elapsed = start.elapsed();
        let cross_after = resident_memory_bytes()?;
        let segments_cross: u64 = alloc.stats().nodes.iter().map(|n| n.segments).sum();
        println!(
            "cross-thread round {round}: {cross} blocks allocated on one thread, freed on another, in {elapsed:.2?}"
        );
        println!(
            "  RSS after {:.2} MiB, growth since start {:+.2} MiB; pool segments {segments_cross}",
            mib(cross_after),
            (cross_after as f64 - before as f64) / (1024.0 * 1024.0)
        );
    }
    println!(
        "nodes {}, memory-policy refusals (plain pages used) {}",
        alloc.topology().node_count(),
        alloc.stats().policy_fallbacks()
    );
    for (p, l) in ring.into_iter().flatten() {
        // SAFETY: still-live blocks of the ring.
        unsafe { alloc.deallocate(p, l) };
    }
    Ok(())
}
