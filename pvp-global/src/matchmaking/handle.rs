//! The handle a queued player gets: wait (blocking), poll, await (feature `tokio`), cancel.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use pvp_core::ids::PlayerId;

use super::result::MatchResult;

/// Why a ticket ended without a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MatchError {
    /// The ticket was cancelled.
    #[error("the ticket was cancelled")]
    Cancelled,
    /// The ticket waited longer than the matchmaker's queue timeout.
    #[error("no match within the queue timeout")]
    TimedOut,
    /// The matchmaker was dropped while the ticket was queued.
    #[error("the matchmaker shut down")]
    Shutdown,
}

const QUEUED: u8 = 0;
const CLAIMED: u8 = 1;
const DONE: u8 = 2;

#[derive(Debug, Default)]
struct SlotInner {
    outcome: Option<Result<MatchResult, MatchError>>,
    waiters: u32,
    waker: Option<Waker>,
}

/// Shared between a handle and the matchmaker's ticket. `repr(C)` keeps the claim state and
/// the mutex at the front, where the pass prefetches them.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Slot {
    state: AtomicU8,
    inner: Mutex<SlotInner>,
    cv: Condvar,
}

/// Players whose tickets were cancelled through their handle; drained by the matchmaker.
pub(crate) type CancelInbox = Arc<Mutex<Vec<PlayerId>>>;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep going with it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Slot {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: AtomicU8::new(QUEUED),
            inner: Mutex::new(SlotInner::default()),
            cv: Condvar::new(),
        })
    }

    /// Reserves the ticket for a match being formed; false if it was cancelled or finished.
    pub(crate) fn claim(&self) -> bool {
        self.state.compare_exchange(QUEUED, CLAIMED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Gives a claim back (the match was not formed).
    pub(crate) fn unclaim(&self) {
        self.state.store(QUEUED, Ordering::Release);
    }

    pub(crate) fn is_queued(&self) -> bool {
        self.state.load(Ordering::Acquire) == QUEUED
    }

    /// Completes a claimed ticket with a match.
    pub(crate) fn deliver(&self, outcome: Result<MatchResult, MatchError>) {
        self.finish(outcome);
    }

    /// Completes a queued ticket with an error; false if it was already finished.
    pub(crate) fn fail(&self, err: MatchError) -> bool {
        if self.state.compare_exchange(QUEUED, CLAIMED, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return false;
        }
        self.finish(Err(err));
        true
    }

    fn finish(&self, outcome: Result<MatchResult, MatchError>) {
        let mut inner = lock(&self.inner);
        inner.outcome = Some(outcome);
        self.state.store(DONE, Ordering::Release);
        let wake = inner.waiters > 0;
        let waker = inner.waker.take();
        drop(inner);
        // Notifying costs a syscall; skip it when nobody blocks.
        if wake {
            self.cv.notify_all();
        }
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A queued ticket's result: wait for it, poll it, await it, or cancel the ticket.
///
/// Dropping the handle does not cancel the ticket.
#[derive(Debug)]
pub struct MatchHandle {
    /// `None` for a backfill request's handle.
    player: Option<PlayerId>,
    slot: Arc<Slot>,
    cancels: CancelInbox,
}

impl MatchHandle {
    pub(crate) fn new(player: PlayerId, slot: Arc<Slot>, cancels: CancelInbox) -> Self {
        Self { player: Some(player), slot, cancels }
    }

    pub(crate) fn new_backfill(slot: Arc<Slot>, cancels: CancelInbox) -> Self {
        Self { player: None, slot, cancels }
    }

    /// The requesting player; `None` for a backfill request.
    pub fn player(&self) -> Option<PlayerId> {
        self.player
    }

    /// The result if the ticket has finished, without blocking.
    pub fn try_result(&self) -> Option<Result<MatchResult, MatchError>> {
        lock(&self.slot.inner).outcome.clone()
    }

    /// Whether the ticket has finished.
    pub fn is_finished(&self) -> bool {
        self.slot.state.load(Ordering::Acquire) == DONE
    }

    /// Blocks until the ticket finishes (the driver must keep calling
    /// [`GlobalMatchmaking::tick`](super::GlobalMatchmaking::tick) on another thread).
    pub fn wait(&self) -> Result<MatchResult, MatchError> {
        let mut inner = lock(&self.slot.inner);
        loop {
            if let Some(o) = &inner.outcome {
                return o.clone();
            }
            inner.waiters += 1;
            inner = self.slot.cv.wait(inner).unwrap_or_else(std::sync::PoisonError::into_inner);
            inner.waiters -= 1;
        }
    }

    /// Blocks until the ticket finishes or `timeout` passes (`None`).
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<MatchResult, MatchError>> {
        let deadline = Instant::now().checked_add(timeout);
        let mut inner = lock(&self.slot.inner);
        loop {
            if let Some(o) = &inner.outcome {
                return Some(o.clone());
            }
            let left = match deadline {
                Some(d) => d.checked_duration_since(Instant::now())?,
                None => Duration::from_secs(3600),
            };
            inner.waiters += 1;
            let (guard, _) =
                self.slot.cv.wait_timeout(inner, left).unwrap_or_else(std::sync::PoisonError::into_inner);
            inner = guard;
            inner.waiters -= 1;
        }
    }

    /// Cancels the ticket. True if it was still queued (its result is then
    /// [`MatchError::Cancelled`] and the matchmaker drops it on its next tick); false if it had
    /// already finished.
    pub fn cancel(&self) -> bool {
        // A claim lasts only while the matchmaker forms one match; wait it out (bounded by that).
        loop {
            match self.slot.state.compare_exchange(QUEUED, CLAIMED, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(DONE) => return false,
                Err(_) => std::thread::yield_now(),
            }
        }
        self.slot.finish(Err(MatchError::Cancelled));
        if let Some(p) = self.player {
            lock(&self.cancels).push(p);
        }
        true
    }

    /// Waits for the result on an async runtime (tokio or any other executor). One async
    /// waiter per handle: if several tasks await the same handle, the last to poll is woken.
    #[cfg(feature = "tokio")]
    pub async fn wait_async(&self) -> Result<MatchResult, MatchError> {
        WaitFuture { slot: &self.slot }.await
    }

    /// Waits for the result on tokio, giving up after `timeout` (`None`).
    #[cfg(feature = "tokio")]
    pub async fn wait_timeout_async(&self, timeout: Duration) -> Option<Result<MatchResult, MatchError>> {
        tokio::time::timeout(timeout, self.wait_async()).await.ok()
    }
}

#[cfg(feature = "tokio")]
struct WaitFuture<'a> {
    slot: &'a Slot,
}

#[cfg(feature = "tokio")]
impl std::future::Future for WaitFuture<'_> {
    type Output = Result<MatchResult, MatchError>;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let mut inner = lock(&self.slot.inner);
        if let Some(o) = &inner.outcome {
            return std::task::Poll::Ready(o.clone());
        }
        match &inner.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => inner.waker = Some(cx.waker().clone()),
        }
        std::task::Poll::Pending
    }
}
