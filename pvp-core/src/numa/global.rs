//! [`NumaGlobalAlloc`]: the node pools behind `#[global_allocator]`.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use super::AllocatorStats;
use super::cache::CACHES;
use super::classes::{class_of, small_class_fast};
use super::pool::{MAX_NODES, Policy, Shared};
use crate::sys;
use crate::topology::NodeId;

/// The process-wide allocator state; `BUSY` while one thread builds it.
static GLOBAL: AtomicPtr<Shared> = AtomicPtr::new(ptr::null_mut());
const BUSY: *mut Shared = ptr::dangling_mut();

/// A [`GlobalAlloc`] serving every Rust allocation of the process from NUMA-node pools: small
/// blocks from the calling thread's node through a per-thread cache, large ones mapped with
/// `MPOL_PREFERRED` for that node. Nodes come from `/sys/devices/system/node/online` (one node 0
/// when that is missing).
///
/// ```
/// use pvp_core::numa::NumaGlobalAlloc;
///
/// #[global_allocator]
/// static ALLOC: NumaGlobalAlloc = NumaGlobalAlloc::new();
///
/// let v: Vec<u64> = (0..1000).collect();
/// assert_eq!(v.iter().sum::<u64>(), 499_500);
/// assert!(ALLOC.stats().is_some_and(|s| s.nodes[0].segments > 0));
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct NumaGlobalAlloc {
    _private: (),
}

impl NumaGlobalAlloc {
    /// The allocator handle (all handles share one process-wide state).
    pub const fn new() -> Self {
        Self { _private: () }
    }

    /// The counters of the process-wide state; `None` before the first allocation through it.
    pub fn stats(&self) -> Option<AllocatorStats> {
        let p = GLOBAL.load(Ordering::Acquire);
        if p.is_null() || p == BUSY {
            return None;
        }
        // SAFETY: a published global state is never freed.
        let shared = unsafe { &*p };
        Some(AllocatorStats::collect(shared, |i| NodeId::new(shared.os_id(i))))
    }
}

/// The global state, built on first use. `None` only when the kernel gives no memory for it.
#[inline(always)]
fn shared() -> Option<&'static Shared> {
    let p = GLOBAL.load(Ordering::Acquire);
    if p.is_null() || p == BUSY {
        return init();
    }
    // SAFETY: a published global state is never freed.
    Some(unsafe { &*p })
}

#[cold]
fn init() -> Option<&'static Shared> {
    loop {
        match GLOBAL.compare_exchange(ptr::null_mut(), BUSY, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => {
                let mut ids = [0u32; MAX_NODES];
                let n = online_nodes(&mut ids);
                let s = Shared::create(&ids[..n], false);
                // A failed build publishes null again, so a later call retries.
                GLOBAL.store(s, Ordering::Release);
                // SAFETY: a published global state is never freed.
                return (!s.is_null()).then(|| unsafe { &*s });
            }
            Err(p) if p == BUSY => crate::primitive::spin_loop(),
            // SAFETY: as above.
            Err(p) => return Some(unsafe { &*p }),
        }
    }
}

/// Fills `ids` from sysfs without touching the heap; returns how many (at least 1).
fn online_nodes(ids: &mut [u32; MAX_NODES]) -> usize {
    let mut buf = [0u8; 512];
    let Ok(len) = sys::read_small_file(c"/sys/devices/system/node/online", &mut buf) else {
        ids[0] = 0;
        return 1;
    };
    let mut n = 0;
    for part in buf[..len].split(|&b| b == b',') {
        let part = trim(part);
        let (a, b) = match part.iter().position(|&c| c == b'-') {
            Some(i) => (parse(&part[..i]), parse(&part[i + 1..])),
            None => (parse(part), parse(part)),
        };
        let (Some(a), Some(b)) = (a, b) else { continue };
        let mut id = a;
        while id <= b && id < 1024 && n < MAX_NODES {
            ids[n] = id;
            n += 1;
            id += 1;
        }
    }
    if n == 0 {
        ids[0] = 0;
        n = 1;
    }
    n
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &s[start..end]
}

fn parse(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 9 {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0')))
}

/// The node index of the CPU the calling thread runs on.
pub(crate) fn default_home(shared: &Shared) -> usize {
    match sys::getcpu() {
        Ok((_, node)) => shared.index_of_os(node).unwrap_or(0),
        Err(_) => 0,
    }
}

fn home(shared: &'static Shared) -> usize {
    CACHES
        .try_with(|c| c.global_slot(shared).map(|s| s.home()))
        .ok()
        .flatten()
        .unwrap_or_else(|| default_home(shared))
}

// SAFETY: blocks are handed out once until freed, aligned per `class_of`/`alloc_large`, and
// freed into the pool (or unmapped) they came from; no method unwinds.
unsafe impl GlobalAlloc for NumaGlobalAlloc {
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(class) = small_class_fast(layout) {
            let p = GLOBAL.load(Ordering::Acquire);
            if !p.is_null() && p != BUSY {
                // SAFETY: a published global state is never freed.
                let shared = unsafe { &*p };
                if let Ok(Some(block)) = CACHES.try_with(|c| {
                    c.global_slot_if_attached()
                        // SAFETY: slot 0 belongs to the global state; the class is in range.
                        .map(|slot| unsafe { slot.try_pop_home(shared, class) })
                }) {
                    if !block.is_null() {
                        return block;
                    }
                }
            }
        }
        // SAFETY: forwarded.
        unsafe { alloc_slow(layout) }
    }

    #[inline(always)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(class) = small_class_fast(layout) {
            let p = GLOBAL.load(Ordering::Acquire);
            if !p.is_null() && p != BUSY {
                // SAFETY: a published global state is never freed.
                let shared = unsafe { &*p };
                let pushed = CACHES.try_with(|c| match c.global_slot_if_attached() {
                    // SAFETY: GlobalAlloc's contract: a block of ours with this layout.
                    Some(slot) => unsafe { slot.try_push(shared, ptr, class) },
                    None => false,
                });
                if pushed == Ok(true) {
                    return;
                }
            }
        }
        // SAFETY: forwarded.
        unsafe { dealloc_slow(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old_class = class_of(layout);
        // SAFETY: GlobalAlloc's contract makes the new layout valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if old_class.is_some() && old_class == class_of(new_layout) {
            return ptr;
        }
        // SAFETY: forwarded contract.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller size and do not overlap.
            unsafe {
                ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[inline(never)]
unsafe fn alloc_slow(layout: Layout) -> *mut u8 {
    let Some(shared) = shared() else {
        return ptr::null_mut();
    };
    let Some(class) = class_of(layout) else {
        let node = home(shared);
        return shared.alloc_large(layout, Policy::Preferred(node), node);
    };
    CACHES
        .try_with(|c| {
            c.global_slot(shared)
                // SAFETY: slot 0 belongs to the global state.
                .map(|slot| unsafe { slot.alloc(shared, slot.home(), class) })
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| shared.alloc_uncached(default_home(shared), class))
}

#[inline(never)]
unsafe fn dealloc_slow(ptr: *mut u8, layout: Layout) {
    let Some(shared) = shared() else {
        return;
    };
    let Some(class) = class_of(layout) else {
        // SAFETY: GlobalAlloc's contract: a block of ours with this layout.
        unsafe { shared.free_large(ptr, layout) };
        return;
    };
    let done = CACHES.try_with(|c| match c.global_slot(shared) {
        Some(slot) => {
            // SAFETY: as above; slot 0 belongs to the global state.
            unsafe { slot.free(shared, ptr, class) };
            true
        }
        None => false,
    });
    if done != Ok(true) {
        shared.debug_track(ptr, class, false);
        // SAFETY: as above.
        unsafe { shared.free_uncached(ptr, class) };
    }
}
