//! Local vs remote memory bandwidth: for every (CPU node, memory node) pair, a thread pinned to
//! the CPU node reads and writes a buffer bound to the memory node (`allocate_on_node`, large
//! block, `MPOL_BIND`). On a one-node machine only the local figure exists.
//!
//! `cargo run --release -p pvp-core --example numa_bandwidth [MiB]`

use core::alloc::Layout;
use std::time::Instant;

use pvp_core::numa::{NumaAllocator, page_node};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 128,
    };
    let alloc = NumaAllocator::detect()?;
    let nodes: Vec<_> = alloc.topology().nodes().iter().map(|n| n.id()).collect();
    let len = mib << 20;
    let layout = Layout::from_size_align(len, 4096)?;
    println!("buffer {mib} MiB, {} node(s)", nodes.len());
    println!("cpu node -> memory node: read GB/s, write GB/s (page found on)");
    for &cpu_node in &nodes {
        for &mem_node in &nodes {
            let alloc = alloc.clone();
            let line = std::thread::spawn(move || -> Result<String, String> {
                if let Err(e) = alloc.bind_thread_to_node(cpu_node) {
                    return Ok(format!("{cpu_node} -> {mem_node}: cannot pin ({e})"));
                }
                let p = alloc.allocate_on_node(mem_node, layout).map_err(|e| e.to_string())?;
                let words = len / 8;
                // SAFETY: a fresh block of `len` bytes, aligned to 4096, ours until freed below.
                let buf = unsafe { std::slice::from_raw_parts_mut(p.as_ptr().cast::<u64>(), words) };
                buf.fill(1);
                let placed = page_node(p.as_ptr()).map_or("?".to_string(), |n| n.to_string());
                let passes = 4;
                let start = Instant::now();
                for pass in 0..passes {
                    buf.fill(pass);
                }
                let write = (len * passes as usize) as f64 / start.elapsed().as_secs_f64() / 1e9;
                let start = Instant::now();
                let mut sum = 0u64;
                for _ in 0..passes {
                    sum = sum.wrapping_add(buf.iter().fold(0u64, |a, &w| a.wrapping_add(w)));
                }
                let read = (len * passes as usize) as f64 / start.elapsed().as_secs_f64() / 1e9;
                std::hint::black_box(sum);
                // SAFETY: allocated above with `layout`, not used after.
                unsafe { alloc.deallocate(p, layout) };
                Ok(format!("{cpu_node} -> {mem_node}: read {read:.1}, write {write:.1} (pages on {placed})"))
            })
            .join()
            .map_err(|_| "measuring thread panicked")??;
            println!("{line}");
        }
    }
    if nodes.len() == 1 {
        println!("one NUMA node: no remote bandwidth to compare");
    }
    Ok(())
}
