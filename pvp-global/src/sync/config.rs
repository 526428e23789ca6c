//! [`SyncConfig`](super::SyncConfig): one region's sync settings and the strategy of each data class.

use std::collections::BTreeSet;
use std::time::Duration;

use pvp_core::RegionId;

use super::error::ConfigError;
use super::model::{DataClass, Strategy};

/// Settings of one region's [`CrossRegionSync`](super::CrossRegionSync). Build with [`SyncConfig::new`](super::SyncConfig::new), then adjust fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SyncConfig {
    /// This region.
    pub region: RegionId,
    /// The other regions.
    pub peers: Vec<RegionId>,
    /// How often EVENTUAL deltas are batched and sent (default 20 ms).
    pub flush_interval: Duration,
    /// Resend unacknowledged deltas after this long (default 150 ms).
    pub retransmit_after: Duration,
    /// How often digests are exchanged (default 1 s).
    pub anti_entropy_interval: Duration,
    /// How long a STRONG write may wait for a majority (default 2 s).
    pub strong_timeout: Duration,
    /// How often an unacknowledged STRONG write is resent (default 50 ms).
    pub strong_retry: Duration,
    /// Most STRONG writes pending at once (default 4096).
    pub max_pending_strong: usize,
    /// Largest datagram sent or accepted (default 60,000 bytes). Anti-entropy ships a key's
    /// whole state in one datagram, so a key larger than this is not repaired (counted in
    /// [`SyncStats::oversized_entries`](super::SyncStats::oversized_entries)): a full [`MAX_SET_LEN`](super::MAX_SET_LEN) set takes roughly 10-25 kB.
    pub max_message_bytes: usize,
    /// Most deltas kept for unacknowledged peers; past it a peer is repaired by anti-entropy
    /// instead (default 65,536).
    pub max_delta_log: usize,
    /// Incoming stamps further ahead of local time are refused (default 1 s).
    pub max_clock_drift: Duration,
    /// Baseline for benchmarks: ship each touched key's full state instead of its delta,
    /// fire-and-forget, with anti-entropy as the only repair (default false).
    pub full_state_shipping: bool,
    strategies: [Strategy; 5],
}

impl SyncConfig {
    /// Defaults for `region` syncing with `peers`: bans STRONG, everything else EVENTUAL.
    pub fn new(region: RegionId, peers: Vec<RegionId>) -> Result<Self, ConfigError> {
        let cfg = Self {
            region,
            peers,
            flush_interval: Duration::from_millis(20),
            retransmit_after: Duration::from_millis(150),
            anti_entropy_interval: Duration::from_secs(1),
            strong_timeout: Duration::from_secs(2),
            strong_retry: Duration::from_millis(50),
            max_pending_strong: 4096,
            max_message_bytes: 60_000,
            max_delta_log: 65_536,
            max_clock_drift: Duration::from_secs(1),
            full_state_shipping: false,
            strategies: [
                Strategy::Strong,
                Strategy::Eventual,
                Strategy::Eventual,
                Strategy::Eventual,
                Strategy::Eventual,
            ],
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = BTreeSet::new();
        for p in &self.peers {
            if *p == self.region || !seen.insert(*p) {
                return Err(ConfigError::BadPeer(*p));
            }
        }
        let nonzero = [
            (self.flush_interval, "flush_interval"),
            (self.retransmit_after, "retransmit_after"),
            (self.anti_entropy_interval, "anti_entropy_interval"),
            (self.strong_timeout, "strong_timeout"),
            (self.strong_retry, "strong_retry"),
        ];
        for (d, name) in nonzero {
            if d.is_zero() {
                return Err(ConfigError::OutOfRange(name));
            }
        }
        if self.max_message_bytes < 4096 || self.max_message_bytes > 65_000 {
            return Err(ConfigError::OutOfRange("max_message_bytes"));
        }
        if self.max_delta_log == 0 {
            return Err(ConfigError::OutOfRange("max_delta_log"));
        }
        if self.max_pending_strong == 0 {
            return Err(ConfigError::OutOfRange("max_pending_strong"));
        }
        Ok(())
    }

    /// The strategy of `class`.
    pub const fn strategy(&self, class: DataClass) -> Strategy {
        self.strategies[class as usize]
    }

    /// Sets the strategy of `class`.
    pub fn set_strategy(&mut self, class: DataClass, s: Strategy) -> &mut Self {
        self.strategies[class as usize] = s;
        self
    }
}
