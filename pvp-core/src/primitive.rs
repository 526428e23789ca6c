//! The atomics and cells the lock-free code is written against.
//!
//! Under `--cfg pvp_loom` these are loom's model-checked versions, otherwise the standard ones
//! at zero cost. Lock-free code in this crate imports only from here, never from `core::sync`
//! directly, so every interleaving loom explores is one the real code can take.

#[cfg(pvp_loom)]
pub(crate) mod sync {
    pub(crate) use loom::sync::atomic;
}

#[cfg(not(pvp_loom))]
pub(crate) mod sync {
    pub(crate) use core::sync::atomic;
}

/// Spin-wait hint. Loom must be told to run another thread instead, or a spin never ends.
#[inline(always)]
pub(crate) fn spin_loop() {
    #[cfg(pvp_loom)]
    loom::thread::yield_now();
    #[cfg(not(pvp_loom))]
    core::hint::spin_loop();
}

/// Waiting on another thread that is in the middle of an operation: spin a little (it is
/// usually a few instructions from done), then give the core away (it may be descheduled).
#[derive(Debug, Default)]
pub(crate) struct Backoff(u32);

impl Backoff {
    const SPIN_LIMIT: u32 = 6;

    /// After a lost race (a failed CAS): spin 1, 2, 4, ... 64 times, so that threads hammering
    /// the same cache line spread out instead of retrying in lock-step.
    #[inline]
    pub(crate) fn spin(&mut self) {
        #[cfg(pvp_loom)]
        loom::thread::yield_now();
        #[cfg(not(pvp_loom))]
        for _ in 0..1u32 << self.0.min(Self::SPIN_LIMIT) {
            spin_loop();
        }
        if self.0 <= Self::SPIN_LIMIT {
            self.0 += 1;
        }
    }

    #[inline]
    pub(crate) fn snooze(&mut self) {
        if self.0 <= Self::SPIN_LIMIT {
            for _ in 0..1u32 << self.0 {
                spin_loop();
            }
            self.0 += 1;
        } else {
            #[cfg(pvp_loom)]
            loom::thread::yield_now();
            #[cfg(not(pvp_loom))]
            std::thread::yield_now();
        }
    }
}

/// A sequentially consistent fence.
///
/// On x86-64 a locked read-modify-write of a private stack word is a full barrier, like
/// `mfence`, but cheaper on the queues' empty and full paths (see docs/ARCHITECTURE.md,
/// "`primitive`: the loom seam").
#[inline(always)]
pub(crate) fn full_fence() {
    #[cfg(all(target_arch = "x86_64", not(pvp_loom), not(miri)))]
    {
        let mut word = 0usize;
        // SAFETY: the instruction reads and writes only `word`, a live, aligned stack local
        // this function owns; it touches no other memory, stack pointer or flags.
        unsafe {
            core::arch::asm!(
                "lock not qword ptr [{0}]",
                in(reg) core::ptr::addr_of_mut!(word),
                options(nostack, preserves_flags)
            );
        }
    }
    #[cfg(not(all(target_arch = "x86_64", not(pvp_loom), not(miri))))]
    sync::atomic::fence(sync::atomic::Ordering::SeqCst);
}

#[cfg(pvp_loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `core::cell::UnsafeCell` with loom's `with`/`with_mut` interface, so loom can track every
/// access to the cell's contents.
#[cfg(not(pvp_loom))]
#[derive(Debug)]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(pvp_loom))]
#[allow(dead_code)]
impl<T> UnsafeCell<T> {
    #[inline(always)]
    pub(crate) const fn new(value: T) -> Self {
        Self(core::cell::UnsafeCell::new(value))
    }

    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
