//! [`MatchmakingConfig`](super::MatchmakingConfig): game modes, region objective, windows and their widening, bounds.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::request::{GameMode, MAX_MATCH_PLAYERS};
use super::skill::RatingSystem;
use crate::cluster::ConfigError;

/// How the region of a match is chosen among those every member accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub enum RegionObjective {
    /// Lowest worst-player latency (the default: nobody is badly off).
    #[default]
    MinMax,
    /// Lowest mean latency.
    Average,
    /// Lowest latency at this percentile of the match's players (1..=100).
    Percentile(u8),
}

/// Matchmaking settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MatchmakingConfig {
    /// Game modes requests may name.
    pub modes: Vec<GameMode>,
    /// How the match's region is chosen.
    pub objective: RegionObjective,
    /// Whether players whose preferred regions differ may meet (in any region they all
    /// accept). When off, each region's queue matches alone and hosts its own matches.
    pub cross_region: bool,
    /// Rating window at enqueue: members' ratings differ by at most this.
    pub skill_window: f64,
    /// Added to the window every `expansion_interval` of waiting.
    pub skill_window_step: f64,
    /// Widest window.
    pub skill_window_max: f64,
    /// Waiting time between two expansions (of skill window and latency limit).
    pub expansion_interval: Duration,
    /// Added to a request's latency limit every interval, up to its ceiling
    /// ([`MatchRequest::widen_latency_to`](super::MatchRequest::widen_latency_to)); requests without a ceiling never widen.
    pub latency_step: Duration,
    /// Tickets older than this end with [`MatchError::TimedOut`](super::MatchError::TimedOut); `None` waits forever.
    pub queue_timeout: Option<Duration>,
    /// Most queued players (parties count each member); more are refused. A ticket cancelled
    /// through its handle gives its place back at once.
    pub max_queued_players: usize,
    /// How far ahead in rating order a ticket looks for partners.
    pub lookahead: usize,
    /// How long a connect grant stays valid after the match forms.
    pub grant_ttl: Duration,
    /// Rating system of [`GlobalMatchmaking::ratings`](super::GlobalMatchmaking::ratings).
    pub rating_system: RatingSystem,
    /// Match ids are `match_id_base + n`; give each matchmaker instance its own base.
    pub match_id_base: u64,
    /// Most results kept for [`GlobalMatchmaking::poll_match`](super::GlobalMatchmaking::poll_match); older ones are dropped
    /// (counted) when the driver does not poll. `0` keeps none: every result is dropped (and
    /// counted), and only the handles carry matches.
    pub max_pending_results: usize,
}

impl MatchmakingConfig {
    /// Checks ranges and game modes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field| Err(ConfigError::InvalidMatchmaking { field });
        let ok = |x: f64| x.is_finite() && x >= 0.0;
        if !ok(self.skill_window) {
            return bad("skill_window");
        }
        if !ok(self.skill_window_step) {
            return bad("skill_window_step");
        }
        if !ok(self.skill_window_max) {
            return bad("skill_window_max");
        }
        if self.expansion_interval.is_zero() {
            return bad("expansion_interval");
        }
        if self.lookahead == 0 {
            return bad("lookahead");
        }
        if self.max_queued_players == 0 {
            return bad("max_queued_players");
        }
        if self.modes.is_empty() || self.modes.len() > 255 {
            return bad("modes");
        }
        if let RegionObjective::Percentile(p) = self.objective {
            if p == 0 || p > 100 {
                return bad("objective");
            }
        }
        for (i, m) in self.modes.iter().enumerate() {
            let malformed = m.team_size == 0 || m.teams < 2 || m.players() > MAX_MATCH_PLAYERS;
            if malformed || self.modes[..i].iter().any(|o| o.id == m.id) {
                return Err(ConfigError::InvalidGameMode { mode: m.id.0 });
            }
        }
        Ok(())
    }
}

impl Default for MatchmakingConfig {
    fn default() -> Self {
        Self {
            modes: vec![GameMode::one_v_one(), GameMode::five_v_five()],
            objective: RegionObjective::MinMax,
            cross_region: true,
            skill_window: 100.0,
            skill_window_step: 50.0,
            skill_window_max: 400.0,
            expansion_interval: Duration::from_secs(5),
            latency_step: Duration::from_millis(10),
            queue_timeout: Some(Duration::from_secs(300)),
            max_queued_players: 1_000_000,
            lookahead: 64,
            grant_ttl: Duration::from_secs(30),
            rating_system: RatingSystem::Elo,
            match_id_base: 0,
            max_pending_results: 1_000_000,
        }
    }
}
