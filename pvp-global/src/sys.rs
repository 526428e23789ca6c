//! The crate's only `unsafe`: cache prefetch hints for the matchmaking pass (measured in
//! `benches/benches/matchmaking.rs`: the pass visits tickets in rating order, which is random
//! in memory, so it asks for them a few matches ahead).

/// Hints the CPU to load the cache line holding `p`. Any address is fine: a prefetch never
/// faults and never changes memory.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has (it is in the x86_64
    // baseline target features); a prefetch does not dereference `p` in the Rust sense, it
    // cannot fault and has no effect but on caches, so any pointer value is sound.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
