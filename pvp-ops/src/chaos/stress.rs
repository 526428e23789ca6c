//! CPU, memory and disk stress injectors.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Fault, FaultError, FaultKind};
use crate::FaultInjector;

struct Spinners {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Injects [`FaultKind::CpuStress`]: `threads` threads, each busy `intensity` of every 10 ms
/// slice and asleep the rest. Any target name is accepted (it labels the fault).
pub struct CpuStressInjector {
    threads: usize,
    active: HashMap<String, Spinners>,
    spins: Arc<AtomicU64>,
}

impl std::fmt::Debug for CpuStressInjector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuStressInjector")
            .field("threads", &self.threads)
            .field("active", &self.active.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl CpuStressInjector {
    /// Stress with `threads` threads (at least 1).
    pub fn new(threads: usize) -> Self {
        Self { threads: threads.max(1), active: HashMap::new(), spins: Arc::default() }
    }
    /// Stress with one thread per available core.
    pub fn all_cores() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
    /// Threads running now.
    pub fn running_threads(&self) -> usize {
        self.active.values().map(|s| s.threads.len()).sum()
    }
    /// Busy slices completed by all stress threads so far (shows they ran).
    pub fn busy_slices(&self) -> u64 {
        self.spins.load(Ordering::Relaxed)
    }
}

impl FaultInjector for CpuStressInjector {
    fn name(&self) -> &str {
        "cpu-stress"
    }
    fn supports(&self, fault: &Fault) -> bool {
        fault.kind() == FaultKind::CpuStress
    }
    fn inject(&mut self, fault: &Fault) -> Result<(), FaultError> {
        if self.active.contains_key(fault.target()) {
            return Err(FaultError::AlreadyActive(fault.target().to_string()));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let slice = Duration::from_millis(10);
        let busy = slice.mul_f64(fault.intensity());
        let mut threads = Vec::with_capacity(self.threads);
        for i in 0..self.threads {
            let (stop2, spins) = (stop.clone(), self.spins.clone());
            let t = std::thread::Builder::new().name(format!("pvp-chaos-cpu-{i}")).spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let mut x = 0u64;
                    while start.elapsed() < busy {
                        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                    }
                    spins.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(slice.saturating_sub(busy));
                }
            });
            match t {
                Ok(t) => threads.push(t),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(FaultError::Io(e.to_string()));
                }
            }
        }
        self.active.insert(fault.target().to_string(), Spinners { stop, threads });
        Ok(())
    }
    fn revert(&mut self, fault: &Fault) -> Result<(), FaultError> {
        let s = self
            .active
            .remove(fault.target())
            .ok_or_else(|| FaultError::NotActive(fault.target().to_string()))?;
        s.stop.store(true, Ordering::Relaxed);
        for t in s.threads {
            let _ = t.join();
        }
        Ok(())
    }
}

impl Drop for CpuStressInjector {
    fn drop(&mut self) {
        for (_, s) in self.active.drain() {
            s.stop.store(true, Ordering::Relaxed);
            for t in s.threads {
                let _ = t.join();
            }
        }
    }
}

/// Injects [`FaultKind::MemoryPressure`]: allocates `intensity × max_bytes` and touches every
/// page, so the memory is resident; revert frees it. Any target name is accepted.
#[derive(Debug)]
pub struct MemoryPressureInjector {
    max_bytes: usize,
    held: HashMap<String, Vec<u8>>,
}

impl MemoryPressureInjector {
    /// Pressure up to `max_bytes` per fault.
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes, held: HashMap::new() }
    }
    /// Bytes held now.
    pub fn held_bytes(&self) -> usize {
        self.held.values().map(Vec::len).sum()
    }
}

impl FaultInjector for MemoryPressureInjector {
    fn name(&self) -> &str {
        "memory-pressure"
    }
    fn supports(&self, fault: &Fault) -> bool {
        fault.kind() == FaultKind::MemoryPressure
    }
    fn inject(&mut self, fault: &Fault) -> Result<(), FaultError> {
        if self.held.contains_key(fault.target()) {
            return Err(FaultError::AlreadyActive(fault.target().to_string()));
        }
        let n = (self.max_bytes as f64 * fault.intensity()) as usize;
        let mut v: Vec<u8> = Vec::new();
        v.try_reserve_exact(n).map_err(|_| FaultError::OutOfMemory(n))?;
        v.resize(n, 0);
        // Zeroed pages may be mapped lazily; writing one byte per page makes them resident.
        for i in (0..n).step_by(4096) {
            v[i] = 1;
        }
        std::hint::black_box(&v);
        self.held.insert(fault.target().to_string(), v);
        Ok(())
    }
    fn revert(&mut self, fault: &Fault) -> Result<(), FaultError> {
        self.held
            .remove(fault.target())
            .map(drop)
            .ok_or_else(|| FaultError::NotActive(fault.target().to_string()))
    }
}

/// Injects [`FaultKind::DiskFull`] into one directory: writes a file of `intensity ×
/// max_bytes`, stopping early (without error) when the disk is full; revert deletes it. The
/// fault's target must be the directory's path as given to [`new`](Self::new).
#[derive(Debug)]
pub struct DiskFillInjector {
    dir: PathBuf,
    max_bytes: u64,
    file: Option<(PathBuf, u64, bool)>,
}

impl DiskFillInjector {
    /// Fills `dir` with at most `max_bytes` per fault.
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Self { dir: dir.into(), max_bytes, file: None }
    }
    /// Bytes written by the active fault (0 when none).
    pub fn filled_bytes(&self) -> u64 {
        self.file.as_ref().map_or(0, |f| f.1)
    }
    /// Whether the active fault stopped because the disk was full.
    pub fn hit_enospc(&self) -> bool {
        self.file.as_ref().is_some_and(|f| f.2)
    }
    /// The fill file's path while a fault is active.
    pub fn fill_path(&self) -> Option<&Path> {
        self.file.as_ref().map(|f| f.0.as_path())
    }
}

impl FaultInjector for DiskFillInjector {
    fn name(&self) -> &str {
        "disk-fill"
    }
    fn supports(&self, fault: &Fault) -> bool {
        fault.kind() == FaultKind::DiskFull && Path::new(fault.target()) == self.dir
    }
    fn inject(&mut self, fault: &Fault) -> Result<(), FaultError> {
        if Path::new(fault.target()) != self.dir {
            return Err(FaultError::UnknownTarget(fault.target().to_string()));
        }
        if self.file.is_some() {
            return Err(FaultError::AlreadyActive(fault.target().to_string()));
        }
        let want = (self.max_bytes as f64 * fault.intensity()) as u64;
        let path = self.dir.join(format!(".pvp-chaos-fill-{}", std::process::id()));
        let mut f = File::create(&path).map_err(|e| FaultError::Io(e.to_string()))?;
        let chunk = vec![0xA5u8; 1 << 20];
        let mut written = 0u64;
        let mut full = false;
        while written < want {
            let n = (want - written).min(chunk.len() as u64) as usize;
            match f.write(&chunk[..n]) {
                Ok(0) => {
                    full = true;
                    break;
                }
                Ok(k) => written += k as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                    full = true;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    drop(f);
                    let _ = std::fs::remove_file(&path);
                    return Err(FaultError::Io(e.to_string()));
                }
            }
        }
        // Push it to the file system so the space is really taken.
        if let Err(e) = f.sync_all() {
            if e.kind() == std::io::ErrorKind::StorageFull {
                full = true;
            }
        }
        self.file = Some((path, written, full));
        Ok(())
    }
    fn revert(&mut self, fault: &Fault) -> Result<(), FaultError> {
        let (path, _, _) =
            self.file.take().ok_or_else(|| FaultError::NotActive(fault.target().to_string()))?;
        std::fs::remove_file(&path).map_err(|e| FaultError::Io(e.to_string()))
    }
}

impl Drop for DiskFillInjector {
    fn drop(&mut self) {
        if let Some((p, _, _)) = self.file.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}
