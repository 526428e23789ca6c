//! What a player (or party) asks for, and why a request can be refused.

use std::time::Duration;

use pvp_core::ids::{PlayerId, RegionId};
use serde::{Deserialize, Serialize};

/// Most regions the matchmaker tracks (and latencies a request carries).
pub const MAX_REGIONS: usize = 8;
/// Most players in one party (leader included).
pub const MAX_PARTY_SIZE: usize = 8;
/// Most players in one match (all teams together): 6v6 at most. Results hold their players
/// inline, so this bounds the bytes copied into each member's handle.
pub const MAX_MATCH_PLAYERS: usize = 12;

/// A game mode's id, as requests name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GameModeId(pub u16);

/// A game mode: how many teams of how many players.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GameMode {
    /// The id requests use.
    pub id: GameModeId,
    /// Human-readable name, such as `"5v5"`.
    pub name: String,
    /// Players per team.
    pub team_size: u8,
    /// Teams per match (at least 2).
    pub teams: u8,
}

impl GameMode {
    /// Id of [`GameMode::one_v_one`].
    pub const ONE_V_ONE: GameModeId = GameModeId(1);
    /// Id of [`GameMode::five_v_five`].
    pub const FIVE_V_FIVE: GameModeId = GameModeId(5);

    /// Duel: two teams of one.
    pub fn one_v_one() -> Self {
        Self { id: Self::ONE_V_ONE, name: "1v1".to_owned(), team_size: 1, teams: 2 }
    }

    /// Two teams of five.
    pub fn five_v_five() -> Self {
        Self { id: Self::FIVE_V_FIVE, name: "5v5".to_owned(), team_size: 5, teams: 2 }
    }

    /// Players in a full match.
    pub fn players(&self) -> usize {
        usize::from(self.team_size) * usize::from(self.teams)
    }
}

/// A player's ask: who, how good, where, how much latency, which mode, with whom.
///
/// Built with chained setters; checked when submitted to
/// [`GlobalMatchmaking::find_match`](super::GlobalMatchmaking::find_match).
///
/// ```
/// use std::time::Duration;
/// use pvp_core::ids::PlayerId;
/// use pvp_global::cluster::{JP, KR, SG};
/// use pvp_global::matchmaking::{GameMode, MatchRequest};
///
/// let req = MatchRequest::new(PlayerId::new(1), 1500.0, KR, GameMode::ONE_V_ONE)
///     .max_latency(Duration::from_millis(60))
///     .latency(KR, Duration::from_millis(8))
///     .latency(JP, Duration::from_millis(35))
///     .latency(SG, Duration::from_millis(80));
/// assert_eq!(req.latency_to(JP), Some(Duration::from_millis(35)));
/// assert_eq!(req.latency_to(pvp_core::ids::RegionId::new("us")?), None);
/// # Ok::<(), pvp_core::ids::IdError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MatchRequest {
    pub(crate) player: PlayerId,
    pub(crate) rating: f64,
    pub(crate) preferred_region: RegionId,
    pub(crate) max_latency: Duration,
    pub(crate) max_latency_ceiling: Option<Duration>,
    pub(crate) mode: GameModeId,
    pub(crate) latencies: [(RegionId, Duration); MAX_REGIONS],
    pub(crate) latency_len: usize,
    pub(crate) latency_overflow: bool,
    pub(crate) party: [(PlayerId, f64); MAX_PARTY_SIZE],
    pub(crate) party_len: usize,
    /// Members given beyond what a request holds.
    pub(crate) party_overflow: usize,
}

impl MatchRequest {
    /// A solo request with a 100 ms latency limit and no measured latency yet.
    pub fn new(player: PlayerId, rating: f64, preferred_region: RegionId, mode: GameModeId) -> Self {
        Self {
            player,
            rating,
            preferred_region,
            max_latency: Duration::from_millis(100),
            max_latency_ceiling: None,
            mode,
            latencies: [(preferred_region, Duration::ZERO); MAX_REGIONS],
            latency_len: 0,
            latency_overflow: false,
            party: [(player, rating); MAX_PARTY_SIZE],
            party_len: 0,
            party_overflow: 0,
        }
    }

    /// Highest acceptable latency to the match's region (for every party member).
    pub fn max_latency(mut self, limit: Duration) -> Self {
        self.max_latency = limit;
        self
    }

    /// Lets the latency limit widen with waiting time, up to `ceiling`.
    pub fn widen_latency_to(mut self, ceiling: Duration) -> Self {
        self.max_latency_ceiling = Some(ceiling);
        self
    }

    /// Records the measured round-trip time to `region` (the last value for a region wins).
    /// A region without a measured latency is never chosen for this request.
    pub fn latency(mut self, region: RegionId, rtt: Duration) -> Self {
        if let Some(e) = self.latencies[..self.latency_len].iter_mut().find(|e| e.0 == region) {
            e.1 = rtt;
        } else if self.latency_len < MAX_REGIONS {
            self.latencies[self.latency_len] = (region, rtt);
            self.latency_len += 1;
        } else {
            self.latency_overflow = true;
        }
        self
    }

    /// Adds a party member who plays on the same team. The party's latencies are the
    /// request's (measure the worst member's); its rating is the members' mean.
    pub fn party_member(mut self, player: PlayerId, rating: f64) -> Self {
        if self.party_len < MAX_PARTY_SIZE - 1 {
            self.party[self.party_len] = (player, rating);
            self.party_len += 1;
        } else {
            self.party_overflow = self.party_overflow.saturating_add(1);
        }
        self
    }

    /// The requesting player (party leader).
    pub fn player(&self) -> PlayerId {
        self.player
    }

    /// The requesting player's rating.
    pub fn rating(&self) -> f64 {
        self.rating
    }

    /// The preferred region.
    pub fn preferred_region(&self) -> RegionId {
        self.preferred_region
    }

    /// The game mode.
    pub fn mode(&self) -> GameModeId {
        self.mode
    }

    /// The latency limit at enqueue time.
    pub fn max_latency_limit(&self) -> Duration {
        self.max_latency
    }

    /// The measured latency to `region`, if any.
    pub fn latency_to(&self, region: RegionId) -> Option<Duration> {
        self.latencies[..self.latency_len].iter().find(|e| e.0 == region).map(|e| e.1)
    }

    /// Party members besides the leader, with their ratings.
    pub fn party(&self) -> &[(PlayerId, f64)] {
        &self.party[..self.party_len]
    }

    /// Players in the request (leader included).
    pub fn size(&self) -> usize {
        1 + self.party_len
    }
}

/// Why a request was refused; the queue is unchanged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// A rating is NaN, infinite or negative.
    #[error("player {player} has an invalid rating {rating}")]
    InvalidRating {
        /// The player.
        player: PlayerId,
        /// The rating.
        rating: f64,
    },
    /// The preferred region or a latency entry names a region the matchmaker does not know.
    #[error("unknown region {0}")]
    UnknownRegion(RegionId),
    /// The latency limit is zero.
    #[error("the latency limit must be > 0")]
    ZeroMaxLatency,
    /// The widening ceiling is below the latency limit.
    #[error("the latency ceiling {ceiling:?} is below the limit {limit:?}")]
    CeilingBelowLimit {
        /// The limit.
        limit: Duration,
        /// The ceiling.
        ceiling: Duration,
    },
    /// The request names no registered game mode.
    #[error("unknown game mode {0:?}")]
    UnknownMode(GameModeId),
    /// A player of the request is already queued.
    #[error("player {0} is already queued")]
    AlreadyQueued(PlayerId),
    /// A player appears twice in the party.
    #[error("player {0} appears twice in the party")]
    DuplicatePartyMember(PlayerId),
    /// The party holds more players than one team.
    #[error("party of {size} does not fit a team of {team_size}")]
    PartyTooLarge {
        /// Players in the party.
        size: usize,
        /// Players per team.
        team_size: usize,
    },
    /// More than [`MAX_REGIONS`] latencies were given.
    #[error("more than {MAX_REGIONS} region latencies")]
    TooManyLatencies,
    /// The queue is full.
    #[error("the queue is full ({0} players)")]
    QueueFull(usize),
    /// The match to backfill is unknown.
    #[error("unknown match to backfill")]
    UnknownMatch,
    /// The backfill asks for no slot or more than the mode's teams hold.
    #[error("invalid backfill slots")]
    BadBackfill,
}
