//! Hybrid logical clock (HLC): timestamps that follow physical time, never go backwards, and
//! order causally related events across regions even when wall clocks drift a little.
//!
//! A [`HlcStamp`] is `(wall_ms, logical, region)`, compared in that order, so two regions that
//! stamp in the same millisecond with the same counter are still ordered, by region id. The
//! clock is sans-IO: every call takes the physical time (milliseconds since an epoch shared by
//! all regions, normally the UNIX epoch) as an argument.
//!
//! ```
//! use pvp_core::hlc::{Hlc, HlcError};
//! use pvp_core::RegionId;
//!
//! let kr = RegionId::new("kr")?;
//! let jp = RegionId::new("jp")?;
//! let mut kr_clock = Hlc::new(kr, 500);
//! let mut jp_clock = Hlc::new(jp, 500);
//!
//! let a = kr_clock.now(1_000);
//! let b = kr_clock.now(1_000); // same millisecond: the logical counter moves on
//! assert!(b > a);
//!
//! // jp's wall clock lags, but after seeing kr's stamp its next stamp is later anyway.
//! jp_clock.update(b, 990)?;
//! assert!(jp_clock.now(990) > b);
//!
//! // A stamp more than 500 ms ahead of our wall clock is refused.
//! let far = kr_clock.now(10_000);
//! assert!(matches!(jp_clock.update(far, 1_000), Err(HlcError::TooFarInFuture { .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::ids::RegionId;
use core::cmp::Ordering;
use core::fmt;

/// One hybrid-logical-clock timestamp. Ordered by wall time, then logical counter, then region.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HlcStamp {
    /// Physical part: milliseconds since the shared epoch.
    pub wall_ms: u64,
    /// Logical counter that orders stamps within one millisecond.
    pub logical: u32,
    /// The region that issued the stamp; breaks ties between regions.
    pub region: RegionId,
}

impl HlcStamp {
    /// A stamp at `wall_ms` with logical counter `logical`, issued by `region`.
    pub const fn new(wall_ms: u64, logical: u32, region: RegionId) -> Self {
        Self { wall_ms, logical, region }
    }
}

impl Ord for HlcStamp {
    fn cmp(&self, other: &Self) -> Ordering {
        self.wall_ms
            .cmp(&other.wall_ms)
            .then(self.logical.cmp(&other.logical))
            .then_with(|| self.region.cmp(&other.region))
    }
}

impl PartialOrd for HlcStamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for HlcStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.wall_ms, self.logical, self.region)
    }
}

/// Why an incoming stamp was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HlcError {
    /// The stamp is further ahead of the local wall clock than the allowed drift.
    #[error("stamp {stamp_ms} ms is {ahead_ms} ms ahead of local time; at most {max_drift_ms} allowed")]
    TooFarInFuture {
        /// Wall part of the refused stamp.
        stamp_ms: u64,
        /// How far ahead of the local wall clock it was.
        ahead_ms: u64,
        /// The configured limit.
        max_drift_ms: u64,
    },
    /// The logical counter would overflow (more than 2^32 events in one millisecond).
    #[error("logical counter overflow")]
    LogicalOverflow,
}

/// A hybrid logical clock owned by one region.
#[derive(Debug, Clone)]
pub struct Hlc {
    region: RegionId,
    last: HlcStamp,
    max_drift_ms: u64,
}

impl Hlc {
    /// A clock for `region` that refuses incoming stamps more than `max_drift_ms` ahead.
    pub const fn new(region: RegionId, max_drift_ms: u64) -> Self {
        Self { region, last: HlcStamp::new(0, 0, region), max_drift_ms }
    }

    /// A clock that continues after `last` (e.g. restored from a snapshot), so it never issues a
    /// stamp at or below one it issued before.
    pub fn resume(region: RegionId, max_drift_ms: u64, last: HlcStamp) -> Self {
        Self { region, last: HlcStamp::new(last.wall_ms, last.logical, region), max_drift_ms }
    }

    /// The region this clock stamps for.
    pub const fn region(&self) -> RegionId {
        self.region
    }

    /// The latest stamp issued or observed.
    pub const fn last(&self) -> HlcStamp {
        self.last
    }

    /// The configured maximum forward drift of incoming stamps.
    pub const fn max_drift_ms(&self) -> u64 {
        self.max_drift_ms
    }

    /// A new stamp for a local event at physical time `wall_ms`; strictly greater than every
    /// stamp this clock issued or observed. Saturates the counter rather than wrapping: after
    /// 2^32 events in one millisecond the wall part is advanced by one.
    ///
    /// The one exception is the very end of the stamp space (`wall_ms == u64::MAX` with the
    /// counter at `u32::MAX`), which has no greater stamp: there the clock stays put and returns
    /// that last stamp again (never a smaller one).
    pub fn now(&mut self, wall_ms: u64) -> HlcStamp {
        if wall_ms > self.last.wall_ms {
            self.last = HlcStamp::new(wall_ms, 0, self.region);
        } else if let Some(l) = self.last.logical.checked_add(1) {
            self.last = HlcStamp::new(self.last.wall_ms, l, self.region);
        } else if let Some(w) = self.last.wall_ms.checked_add(1) {
            self.last = HlcStamp::new(w, 0, self.region);
        } else {
            self.last = HlcStamp::new(self.last.wall_ms, self.last.logical, self.region);
        }
        self.last
    }

    /// Observes a stamp received from another region at local physical time `wall_ms`, so that
    /// later local stamps order after it. Refuses (and ignores) a stamp more than the allowed
    /// drift ahead of `wall_ms`.
    ///
    /// # Errors
    /// [`HlcError::TooFarInFuture`] for a stamp beyond the allowed drift, and
    /// [`HlcError::LogicalOverflow`] when ordering after `incoming` would need a logical counter
    /// above `u32::MAX`; in both cases the clock is left unchanged.
    pub fn update(&mut self, incoming: HlcStamp, wall_ms: u64) -> Result<(), HlcError> {
        self.check(incoming, wall_ms)?;
        let max_wall = wall_ms.max(self.last.wall_ms).max(incoming.wall_ms);
        let logical = if max_wall == self.last.wall_ms && max_wall == incoming.wall_ms {
            self.last.logical.max(incoming.logical).checked_add(1)
        } else if max_wall == self.last.wall_ms {
            self.last.logical.checked_add(1)
        } else if max_wall == incoming.wall_ms {
            incoming.logical.checked_add(1)
        } else {
            Some(0)
        };
        let logical = logical.ok_or(HlcError::LogicalOverflow)?;
        self.last = HlcStamp::new(max_wall, logical, self.region);
        Ok(())
    }

    /// Checks, without observing it, that `incoming` is not too far ahead of `wall_ms`.
    pub fn check(&self, incoming: HlcStamp, wall_ms: u64) -> Result<(), HlcError> {
        let ahead = incoming.wall_ms.saturating_sub(wall_ms);
        if ahead > self.max_drift_ms {
            return Err(HlcError::TooFarInFuture {
                stamp_ms: incoming.wall_ms,
                ahead_ms: ahead,
                max_drift_ms: self.max_drift_ms,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> RegionId {
        RegionId::new(s).unwrap()
    }

    #[test]
    fn ties_break_by_region() {
        assert!(HlcStamp::new(5, 1, r("jp")) < HlcStamp::new(5, 1, r("kr")));
        assert!(HlcStamp::new(5, 2, r("jp")) > HlcStamp::new(5, 1, r("kr")));
        assert!(HlcStamp::new(6, 0, r("jp")) > HlcStamp::new(5, 9, r("sg")));
    }

    #[test]
    fn clock_never_goes_backwards() {
        let mut c = Hlc::new(r("kr"), 100);
        let a = c.now(100);
        let b = c.now(50); // wall clock stepped back
        assert!(b > a);
        c.update(HlcStamp::new(180, 7, r("jp")), 100).unwrap();
        let d = c.now(100);
        assert!(d > HlcStamp::new(180, 7, r("jp")));
        assert!(c.update(HlcStamp::new(201, 0, r("jp")), 100).is_err());
        assert_eq!(c.last(), d, "a refused stamp is not observed");
    }

    #[test]
    fn resume_continues_after_last() {
        let mut c = Hlc::new(r("kr"), 100);
        let a = c.now(1000);
        let mut c2 = Hlc::resume(r("kr"), 100, a);
        assert!(c2.now(10) > a);
    }

    proptest::proptest! {
        #[test]
        fn stamps_strictly_increase(walls in proptest::collection::vec(0u64..1000, 1..50)) {
            let mut c = Hlc::new(r("sg"), 10);
            let mut prev = c.last();
            for w in walls {
                let s = c.now(w);
                proptest::prop_assert!(s > prev);
                prev = s;
            }
        }
    }
}
