//! A formed match: who plays where, on which server, and the material for a connect token.

use std::net::SocketAddr;
use std::time::Duration;

use pvp_core::ids::{MatchId, PlayerId, RegionId, ServerId, ZoneId};
use serde::{Deserialize, Serialize};

use super::request::{GameModeId, MAX_MATCH_PLAYERS};
use crate::cluster::AllocatedServer;

/// One player of a match.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MatchedPlayer {
    player: PlayerId,
    // f32 keeps a result small (it is copied into every member's handle); ratings need no
    // more than 7 significant digits.
    rating: f32,
    latency_us: u32,
    waited_ms: u32,
    team: u8,
}

impl MatchedPlayer {
    pub(crate) fn new(player: PlayerId, team: u8, rating: f64, latency: Duration, waited: Duration) -> Self {
        Self {
            player,
            rating: rating as f32,
            latency_us: latency.as_micros().min(u128::from(u32::MAX)) as u32,
            waited_ms: waited.as_millis().min(u128::from(u32::MAX)) as u32,
            team,
        }
    }
    /// The player.
    pub fn player(&self) -> PlayerId {
        self.player
    }
    /// Team index, from 0.
    pub fn team(&self) -> u8 {
        self.team
    }
    /// Matchmaking rating when matched, kept to `f32` precision (about 7 significant digits:
    /// 1500.3 reads back as 1500.30005).
    pub fn rating(&self) -> f64 {
        f64::from(self.rating)
    }
    /// The player's measured latency to the match's region.
    pub fn latency(&self) -> Duration {
        Duration::from_micros(u64::from(self.latency_us))
    }
    /// Time in the queue (millisecond resolution).
    pub fn waited(&self) -> Duration {
        Duration::from_millis(u64::from(self.waited_ms))
    }
}

const EMPTY: MatchedPlayer =
    MatchedPlayer { player: PlayerId::new(0), rating: 0.0, latency_us: 0, waited_ms: 0, team: 0 };

/// A formed match. Stored inline (no heap), so the matchmaking pass allocates nothing per match.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchResult {
    pub(crate) match_id: MatchId,
    pub(crate) mode: GameModeId,
    pub(crate) region: RegionId,
    pub(crate) server: AllocatedServer,
    pub(crate) formed_at: Duration,
    pub(crate) expires_at: Duration,
    pub(crate) backfill: bool,
    pub(crate) players: [MatchedPlayer; MAX_MATCH_PLAYERS],
    pub(crate) len: u8,
}

impl MatchResult {
    pub(crate) fn new(
        match_id: MatchId,
        mode: GameModeId,
        region: RegionId,
        server: AllocatedServer,
        formed_at: Duration,
        expires_at: Duration,
        backfill: bool,
    ) -> Self {
        Self {
            match_id,
            mode,
            region,
            server,
            formed_at,
            expires_at,
            backfill,
            players: [EMPTY; MAX_MATCH_PLAYERS],
            len: 0,
        }
    }

    pub(crate) fn push(&mut self, p: MatchedPlayer) {
        if let Some(slot) = self.players.get_mut(usize::from(self.len)) {
            *slot = p;
            self.len += 1;
        }
    }

    /// The match.
    pub fn match_id(&self) -> MatchId {
        self.match_id
    }
    /// The game mode.
    pub fn mode(&self) -> GameModeId {
        self.mode
    }
    /// The region hosting it.
    pub fn region(&self) -> RegionId {
        self.region
    }
    /// The allocated game server.
    pub fn server(&self) -> AllocatedServer {
        self.server
    }
    /// When the matchmaker formed it.
    pub fn formed_at(&self) -> Duration {
        self.formed_at
    }
    /// Whether these players were added to a running match (backfill); then
    /// [`players`](Self::players) lists only the newcomers.
    pub fn is_backfill(&self) -> bool {
        self.backfill
    }
    /// The players, with their teams.
    pub fn players(&self) -> &[MatchedPlayer] {
        &self.players[..usize::from(self.len)]
    }
    /// Members of team `team`.
    pub fn team(&self, team: u8) -> impl Iterator<Item = &MatchedPlayer> {
        self.players().iter().filter(move |p| p.team == team)
    }
    /// Highest minus lowest rating.
    pub fn rating_spread(&self) -> f64 {
        let (lo, hi) = self
            .players()
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.rating()), hi.max(p.rating())));
        if lo.is_finite() { hi - lo } else { 0.0 }
    }
    /// What a connect token for this match carries; the assembling code signs it (pvp-global
    /// does not depend on pvp-net).
    pub fn connect_grant(&self) -> ConnectGrant<'_> {
        ConnectGrant {
            match_id: self.match_id,
            server_id: self.server.id,
            server_addr: self.server.addr,
            zone: self.server.zone,
            players: self.players(),
            expires_at: self.expires_at,
        }
    }
}

/// Material for a connect token: which players may join which server for which match, until
/// when (the matchmaker's clock).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ConnectGrant<'a> {
    /// The match.
    pub match_id: MatchId,
    /// The server.
    pub server_id: ServerId,
    /// Where to connect.
    pub server_addr: SocketAddr,
    /// The server's zone.
    pub zone: ZoneId,
    /// Who may connect.
    pub players: &'a [MatchedPlayer],
    /// The grant is void after this time.
    pub expires_at: Duration,
}
