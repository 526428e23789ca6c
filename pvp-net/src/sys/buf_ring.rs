//! A provided-buffer ring for io_uring's multishot receives: ring slots the kernel reads
//! (page-aligned, shared with it) and one buffer per slot the kernel writes into.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::mem::size_of;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::Submitter;
use io_uring::types::BufRingEntry;

/// Each provided buffer: the kernel's `io_uring_recvmsg_out` header, an IPv6 socket address,
/// then the payload.
pub(super) const BUF_SIZE: usize = 2048;

/// A provided-buffer ring: `entries` ring slots (page-aligned, shared with the kernel) and one
/// buffer per slot.
pub(super) struct BufRing {
    ring: *mut BufRingEntry,
    layout: Layout,
    entries: u16,
    bufs: Box<[u8]>,
    tail: u16,
}

impl BufRing {
    /// A ring of `entries` (a power of two) buffers, all handed to the kernel.
    pub(super) fn new(entries: u16) -> io::Result<Self> {
        if !entries.is_power_of_two() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let layout = Layout::from_size_align(usize::from(entries) * size_of::<BufRingEntry>(), 4096)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: layout has non-zero size (entries >= 1, checked above).
        let ring = unsafe { alloc_zeroed(layout) }.cast::<BufRingEntry>();
        if ring.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut r = BufRing {
            ring,
            layout,
            entries,
            bufs: vec![0u8; usize::from(entries) * BUF_SIZE].into_boxed_slice(),
            tail: 0,
        };
        for bid in 0..entries {
            r.push(bid);
        }
        r.publish();
        Ok(r)
    }

    /// Registers the ring with `submitter`'s io_uring as buffer group `bgid`.
    ///
    /// # Safety
    ///
    /// `self` must stay alive (neither dropped nor leaked into reuse) until that io_uring is
    /// dropped or `bgid` is unregistered: the kernel reads the ring slots and writes into the
    /// buffers until then.
    pub(super) unsafe fn register(&self, submitter: &Submitter<'_>, bgid: u16) -> io::Result<()> {
        // SAFETY: the ring memory holds `entries` slots (allocated in `new`, page-aligned as
        // the kernel requires) and each slot names a buffer of BUF_SIZE bytes inside `bufs`;
        // the caller keeps both alive for as long as the registration.
        unsafe { submitter.register_buf_ring_with_flags(self.ring as u64, self.entries, bgid, 0) }
    }

    /// Hands buffer `bid` back to the kernel (visible after [`publish`](Self::publish)).
    #[inline]
    pub(super) fn push(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (self.entries - 1));
        let addr = self.bufs[usize::from(bid) * BUF_SIZE..].as_mut_ptr() as u64;
        // SAFETY: idx < entries, inside the allocation; the kernel only reads entries between
        // its head and the published tail, and this one is past the published tail.
        let e = unsafe { &mut *self.ring.add(idx) };
        e.set_addr(addr);
        e.set_len(BUF_SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every [`push`](Self::push)ed buffer visible to the kernel.
    #[inline]
    pub(super) fn publish(&self) {
        // SAFETY: the tail field lives in the first entry, inside our allocation, and the
        // kernel reads it atomically; a release store orders the entry writes before it.
        unsafe {
            let tail = BufRingEntry::tail(self.ring).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// Buffer `bid` (the kernel's until its completion names it, then ours until pushed back).
    #[inline]
    pub(super) fn buf(&self, bid: u16) -> Option<&[u8]> {
        let start = usize::from(bid) * BUF_SIZE;
        self.bufs.get(start..start + BUF_SIZE)
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; whoever registered the ring (see
        // `register`) drops it only after the io_uring is gone, or leaks it.
        unsafe { dealloc(self.ring.cast(), self.layout) };
    }
}
