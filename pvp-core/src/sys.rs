//! Every raw syscall and every raw memory mapping of pvp-core, and nothing else.
//!
//! The NUMA allocator and the topology reader call only these wrappers. Each wrapper returns the
//! kernel's `errno` as an [`Errno`] instead of a sentinel value, so callers decide what a refusal
//! means (a container forbidding `mbind` is a counted fallback, not an abort).
//!
//! No function here allocates from the Rust heap: the global allocator calls them while it is
//! itself serving an allocation.

use core::ptr;

/// A raw `errno` value returned by a failed syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Errno(pub(crate) i32);

impl Errno {
    fn last() -> Self {
        // SAFETY: `__errno_location` returns the calling thread's errno slot, always valid.
        Self(unsafe { *libc::__errno_location() })
    }

    /// The `std::io::Error` for this errno (for error messages).
    pub(crate) fn io(self) -> std::io::Error {
        std::io::Error::from_raw_os_error(self.0)
    }
}

/// The page size of the running kernel.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v <= 0 { 4096 } else { v as usize }
}

/// Maps `len` bytes (a multiple of the page size) of private, zeroed, anonymous memory.
pub(crate) fn map(len: usize) -> Result<*mut u8, Errno> {
    // SAFETY: an anonymous private mapping at a kernel-chosen address touches no existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED { Err(Errno::last()) } else { Ok(p.cast()) }
}

/// Maps `len` bytes aligned to `align` (a power of two, at least the page size; `len` a multiple
/// of the page size) by over-mapping and trimming both ends.
pub(crate) fn map_aligned(len: usize, align: usize) -> Result<*mut u8, Errno> {
    let page = page_size();
    if align <= page {
        return map(len);
    }
    let total = len.checked_add(align).ok_or(Errno(libc::ENOMEM))?;
    let raw = map(total)? as usize;
    let start = (raw + align - 1) & !(align - 1);
    let head = start - raw;
    let tail = total - head - len;
    // SAFETY: both trimmed pieces lie inside the mapping made just above and are not handed out.
    unsafe {
        if head > 0 {
            unmap(raw as *mut u8, head);
        }
        if tail > 0 {
            unmap((start + len) as *mut u8, tail);
        }
    }
    Ok(start as *mut u8)
}

/// Unmaps `[ptr, ptr + len)`.
///
/// # Safety
/// The range must have come from [`map`] / [`map_aligned`] and nothing may use it afterwards.
pub(crate) unsafe fn unmap(ptr: *mut u8, len: usize) {
    // SAFETY: the caller hands over a range it mapped and no longer uses.
    let rc = unsafe { libc::munmap(ptr.cast(), len) };
    debug_assert_eq!(rc, 0, "munmap of a range pvp-core did not map");
}

/// `MPOL_PREFERRED`: allocate on the node, fall back to others when it is full.
pub(crate) const MPOL_PREFERRED: i32 = 1;
/// `MPOL_BIND`: allocate only on the nodes of the mask.
pub(crate) const MPOL_BIND: i32 = 2;
/// `MPOL_INTERLEAVE`: spread pages round-robin over the mask.
pub(crate) const MPOL_INTERLEAVE: i32 = 3;
const MPOL_F_NODE: libc::c_ulong = 1;
const MPOL_F_ADDR: libc::c_ulong = 2;

/// Words in the node masks handed to the kernel: room for 1024 node numbers.
pub(crate) const NODE_MASK_WORDS: usize = 16;

/// A bit mask of OS node numbers as `mbind` takes it.
pub(crate) type NodeMask = [libc::c_ulong; NODE_MASK_WORDS];

/// Sets memory policy `mode` with `mask` on `[addr, addr + len)` (page aligned).
pub(crate) fn mbind(addr: *mut u8, len: usize, mode: i32, mask: &NodeMask) -> Result<(), Errno> {
    let maxnode = (NODE_MASK_WORDS * 64) as libc::c_ulong;
    // SAFETY: mbind only changes the policy of pages in a range the caller mapped; the mask
    // pointer is valid for `maxnode` bits.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            addr as libc::c_ulong,
            len as libc::c_ulong,
            mode as libc::c_ulong,
            mask.as_ptr(),
            maxnode,
            0 as libc::c_ulong,
        )
    };
    if rc == 0 { Ok(()) } else { Err(Errno::last()) }
}

/// The OS node number holding the page at `addr` (faulting it in if needed), as reported by
/// `get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR)`.
pub(crate) fn node_of_address(addr: *const u8) -> Result<u32, Errno> {
    let mut node: libc::c_int = -1;
    // SAFETY: get_mempolicy writes one int to `node`; no mask is asked for.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_mempolicy,
            &mut node as *mut libc::c_int,
            ptr::null_mut::<libc::c_ulong>(),
            0 as libc::c_ulong,
            addr as libc::c_ulong,
            MPOL_F_NODE | MPOL_F_ADDR,
        )
    };
    if rc == 0 && node >= 0 { Ok(node as u32) } else { Err(Errno::last()) }
}

/// Queries with `move_pages` (moving nothing) which OS node holds each page in `pages`;
/// `status[i]` receives the node or a negative errno (`-ENOENT`: not yet faulted in).
pub(crate) fn query_page_nodes(pages: &[*const u8], status: &mut [i32]) -> Result<(), Errno> {
    assert_eq!(pages.len(), status.len());
    // SAFETY: with a null `nodes` array move_pages only reads the page pointers and writes one
    // int per page into `status`, both valid for `pages.len()` entries.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_pages,
            0 as libc::c_int,
            pages.len() as libc::c_ulong,
            pages.as_ptr(),
            ptr::null::<libc::c_int>(),
            status.as_mut_ptr(),
            0 as libc::c_int,
        )
    };
    if rc < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// The CPU and OS NUMA node the calling thread runs on now (`getcpu`).
pub(crate) fn getcpu() -> Result<(u32, u32), Errno> {
    let mut cpu: libc::c_uint = 0;
    let mut node: libc::c_uint = 0;
    // SAFETY: getcpu writes one unsigned int to each pointer; the cache argument may be null.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_getcpu,
            &mut cpu as *mut libc::c_uint,
            &mut node as *mut libc::c_uint,
            ptr::null_mut::<libc::c_void>(),
        )
    };
    if rc == 0 { Ok((cpu, node)) } else { Err(Errno::last()) }
}

/// Restricts the calling thread to the CPUs in `cpus`.
pub(crate) fn set_thread_affinity(cpus: &[usize]) -> Result<(), Errno> {
    // SAFETY: cpu_set_t is plain bits; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    let max = 8 * core::mem::size_of::<libc::cpu_set_t>();
    for &cpu in cpus {
        if cpu >= max {
            return Err(Errno(libc::EINVAL));
        }
        // SAFETY: `cpu` is below the set's capacity (checked above).
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; the set is valid for its size.
    let rc = unsafe { libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 { Ok(()) } else { Err(Errno::last()) }
}

/// Reads a small file into `buf` without touching the Rust heap; returns the bytes read.
pub(crate) fn read_small_file(path: &core::ffi::CStr, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: `path` is NUL-terminated; O_RDONLY|O_CLOEXEC opens without side effects.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Errno::last());
    }
    let mut filled = 0;
    let result = loop {
        if filled == buf.len() {
            break Ok(filled);
        }
        // SAFETY: the destination is the unfilled tail of `buf`.
        let n = unsafe { libc::read(fd, buf[filled..].as_mut_ptr().cast(), buf.len() - filled) };
        if n < 0 {
            let e = Errno::last();
            if e.0 == libc::EINTR {
                continue;
            }
            break Err(e);
        }
        if n == 0 {
            break Ok(filled);
        }
        filled += n as usize;
    };
    // SAFETY: `fd` was opened above and is closed exactly once.
    unsafe { libc::close(fd) };
    result
}

/// Resident set size of this process in bytes (from `/proc/self/statm`).
pub(crate) fn resident_bytes() -> Result<u64, Errno> {
    let mut buf = [0u8; 256];
    let n = read_small_file(c"/proc/self/statm", &mut buf)?;
    let text = core::str::from_utf8(&buf[..n]).map_err(|_| Errno(libc::EINVAL))?;
    let pages: u64 =
        text.split_whitespace().nth(1).and_then(|f| f.parse().ok()).ok_or(Errno(libc::EINVAL))?;
    Ok(pages * page_size() as u64)
}

/// Whether the page at `addr` (page aligned) is mapped in this process (`mincore`).
#[cfg(debug_assertions)]
pub(crate) fn is_mapped(addr: *const u8) -> bool {
    let mut vec = 0u8;
    // SAFETY: mincore only reads the page tables for one page and writes one byte to `vec`.
    let rc = unsafe { libc::mincore(addr as *mut libc::c_void, 1, &mut vec) };
    rc == 0
}
