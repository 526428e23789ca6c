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

/// Gives way to another thread after spinning failed for a while.
#[inline]
#[allow(dead_code)]
pub(crate) fn yield_now() {
    #[cfg(pvp_loom)]
    loom::thread::yield_now();
    #[cfg(not(pvp_loom))]
    std::thread::yield_now();
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
