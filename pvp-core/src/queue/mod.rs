//! Lock-free queues for handing work between threads.
//!
//! - [`BoundedQueue`]: bounded MPMC ring, no allocation after construction, single and batch
//!   operations. The queue between network threads and the game loop (the plan's
//!   `LockFreeQueue`; that name stays as a deprecated alias).
//! - [`UnboundedQueue`]: unbounded MPMC list of blocks with safe reclamation, for producers
//!   that must never block or drop.
//!
//! Both are checked with loom (`RUSTFLAGS="--cfg pvp_loom" cargo test -p pvp-core --test
//! loom`) and a multi-producer, multi-consumer stress test that checks no value is lost or
//! duplicated and each producer's values come out in order.

mod bounded;
mod unbounded;

pub use bounded::BoundedQueue;
pub use unbounded::UnboundedQueue;

/// The name [`BoundedQueue`] had before 0.2: both queues are lock-free, what tells them apart
/// is the bound.
#[deprecated(
    since = "0.2.0",
    note = "renamed to `BoundedQueue` (both queues are lock-free; this one is bounded)"
)]
pub type LockFreeQueue<T> = BoundedQueue<T>;

/// Why a queue could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// A bounded queue needs room for at least one value.
    #[error("a bounded queue needs a capacity of at least 1")]
    ZeroCapacity,
    /// The requested capacity does not fit in memory addressing.
    #[error("a capacity of {requested} values is too large")]
    CapacityTooLarge {
        /// The capacity that was asked for.
        requested: usize,
    },
}
