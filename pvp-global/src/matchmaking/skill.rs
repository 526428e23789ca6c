//! Player ratings with the `skillratings` crate: Elo (default), Glicko-2, TrueSkill, Weng-Lin.

use std::collections::HashMap;

use pvp_core::ids::PlayerId;
use serde::{Deserialize, Serialize};
use skillratings::Outcomes;
use skillratings::elo::{EloConfig, EloRating, elo};
use skillratings::glicko2::{Glicko2Config, Glicko2Rating, glicko2};
use skillratings::trueskill::{TrueSkillConfig, TrueSkillRating, trueskill_two_teams};
use skillratings::weng_lin::{WengLinConfig, WengLinRating, weng_lin_two_teams};

/// Which rating system the [`RatingBook`] keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RatingSystem {
    /// Elo (K = 32), the default.
    #[default]
    Elo,
    /// Glicko-2.
    Glicko2,
    /// TrueSkill.
    TrueSkill,
    /// Weng-Lin (OpenSkill).
    WengLin,
}

/// One player's rating in the book's system.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PlayerRating {
    /// An Elo rating.
    Elo(EloRating),
    /// A Glicko-2 rating.
    Glicko2(Glicko2Rating),
    /// A TrueSkill rating.
    TrueSkill(TrueSkillRating),
    /// A Weng-Lin rating.
    WengLin(WengLinRating),
}

/// Scale from TrueSkill / Weng-Lin `mu` (default 25, sigma 25/3) to the Elo-like matchmaking
/// scale (default 1500, spread ~300): one default sigma maps to 300 points.
const MU_TO_ELO: f64 = 300.0 / (25.0 / 3.0);

impl PlayerRating {
    /// The rating on the Elo-like scale the matchmaker compares (about 1500 for a newcomer).
    /// TrueSkill and Weng-Lin map `mu` linearly: `1500 + (mu - 25) * 36`.
    pub fn matchmaking_rating(&self) -> f64 {
        match self {
            Self::Elo(r) => r.rating,
            Self::Glicko2(r) => r.rating,
            Self::TrueSkill(r) => 1500.0 + (r.rating - 25.0) * MU_TO_ELO,
            Self::WengLin(r) => 1500.0 + (r.rating - 25.0) * MU_TO_ELO,
        }
    }

    /// Whether every component (rating, deviation, volatility, uncertainty) is finite.
    fn is_finite(&self) -> bool {
        match self {
            Self::Elo(r) => r.rating.is_finite(),
            Self::Glicko2(r) => r.rating.is_finite() && r.deviation.is_finite() && r.volatility.is_finite(),
            Self::TrueSkill(r) => r.rating.is_finite() && r.uncertainty.is_finite(),
            Self::WengLin(r) => r.rating.is_finite() && r.uncertainty.is_finite(),
        }
    }

    fn system(&self) -> RatingSystem {
        match self {
            Self::Elo(_) => RatingSystem::Elo,
            Self::Glicko2(_) => RatingSystem::Glicko2,
            Self::TrueSkill(_) => RatingSystem::TrueSkill,
            Self::WengLin(_) => RatingSystem::WengLin,
        }
    }
}

/// How a two-team match ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MatchOutcome {
    /// Team 0 won.
    FirstTeamWon,
    /// Team 1 won.
    SecondTeamWon,
    /// A draw.
    Draw,
}

impl MatchOutcome {
    fn to_outcomes(self) -> Outcomes {
        match self {
            Self::FirstTeamWon => Outcomes::WIN,
            Self::SecondTeamWon => Outcomes::LOSS,
            Self::Draw => Outcomes::DRAW,
        }
    }
}

/// Why a rating update was refused; the book is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RatingError {
    /// The rating belongs to another system than the book's.
    #[error("rating of {given:?} given to a {book:?} book")]
    WrongSystem {
        /// The book's system.
        book: RatingSystem,
        /// The rating's system.
        given: RatingSystem,
    },
    /// A team is empty.
    #[error("a team is empty")]
    EmptyTeam,
    /// A player is on both teams (or twice on one).
    #[error("player {0} appears twice")]
    DuplicatePlayer(PlayerId),
    /// A rating (or its deviation, volatility or uncertainty) is not finite.
    #[error("rating is not finite")]
    NotFinite,
}

/// Every player's rating in one system; unknown players have the system's default rating.
///
/// ```
/// use pvp_core::ids::PlayerId;
/// use pvp_global::matchmaking::{MatchOutcome, RatingBook, RatingSystem};
///
/// let mut book = RatingBook::new(RatingSystem::Elo);
/// let (a, b) = (PlayerId::new(1), PlayerId::new(2));
/// book.record(&[a], &[b], MatchOutcome::FirstTeamWon)?;
/// assert!(book.matchmaking_rating(a) > 1500.0);
/// assert!(book.matchmaking_rating(b) < 1500.0);
/// # Ok::<(), pvp_global::matchmaking::RatingError>(())
/// ```
#[derive(Debug, Clone)]
pub struct RatingBook {
    system: RatingSystem,
    ratings: HashMap<PlayerId, PlayerRating>,
}

impl RatingBook {
    /// An empty book.
    pub fn new(system: RatingSystem) -> Self {
        Self { system, ratings: HashMap::new() }
    }

    /// The system in use.
    pub fn system(&self) -> RatingSystem {
        self.system
    }

    /// The default rating of a newcomer.
    pub fn default_rating(&self) -> PlayerRating {
        match self.system {
            // Newcomers start at 1500 on every Elo-like scale.
            RatingSystem::Elo => PlayerRating::Elo(EloRating { rating: 1500.0 }),
            RatingSystem::Glicko2 => PlayerRating::Glicko2(Glicko2Rating::new()),
            RatingSystem::TrueSkill => PlayerRating::TrueSkill(TrueSkillRating::new()),
            RatingSystem::WengLin => PlayerRating::WengLin(WengLinRating::new()),
        }
    }

    /// A player's rating.
    pub fn rating(&self, player: PlayerId) -> PlayerRating {
        self.ratings.get(&player).copied().unwrap_or_else(|| self.default_rating())
    }

    /// A player's rating on the matchmaking scale.
    pub fn matchmaking_rating(&self, player: PlayerId) -> f64 {
        self.rating(player).matchmaking_rating()
    }

    /// Sets a player's rating (e.g. loaded from storage).
    pub fn set(&mut self, player: PlayerId, rating: PlayerRating) -> Result<(), RatingError> {
        if rating.system() != self.system {
            return Err(RatingError::WrongSystem { book: self.system, given: rating.system() });
        }
        if !rating.is_finite() {
            return Err(RatingError::NotFinite);
        }
        self.ratings.insert(player, rating);
        Ok(())
    }

    /// Updates every player's rating from a two-team result. Elo and Glicko-2 rate each player
    /// against the other team's mean; TrueSkill and Weng-Lin use their team models.
    pub fn record(
        &mut self,
        team_a: &[PlayerId],
        team_b: &[PlayerId],
        outcome: MatchOutcome,
    ) -> Result<(), RatingError> {
        if team_a.is_empty() || team_b.is_empty() {
            return Err(RatingError::EmptyTeam);
        }
        let all: Vec<PlayerId> = team_a.iter().chain(team_b).copied().collect();
        for (i, p) in all.iter().enumerate() {
            if all[..i].contains(p) {
                return Err(RatingError::DuplicatePlayer(*p));
            }
        }
        let out = outcome.to_outcomes();
        let mut updates: Vec<(PlayerId, PlayerRating)> = Vec::with_capacity(all.len());
        match self.system {
            RatingSystem::Elo => {
                let get = |p: &PlayerId| match self.rating(*p) {
                    PlayerRating::Elo(r) => r,
                    _ => EloRating { rating: 1500.0 },
                };
                let ra: Vec<EloRating> = team_a.iter().map(get).collect();
                let rb: Vec<EloRating> = team_b.iter().map(get).collect();
                let mean = |v: &[EloRating]| EloRating {
                    rating: v.iter().map(|r| r.rating).sum::<f64>() / v.len() as f64,
                };
                let (ma, mb) = (mean(&ra), mean(&rb));
                let cfg = EloConfig::new();
                for (p, r) in team_a.iter().zip(&ra) {
                    updates.push((*p, PlayerRating::Elo(elo(r, &mb, &out, &cfg).0)));
                }
                for (p, r) in team_b.iter().zip(&rb) {
                    updates.push((*p, PlayerRating::Elo(elo(&ma, r, &out, &cfg).1)));
                }
            }
            RatingSystem::Glicko2 => {
                let get = |p: &PlayerId| match self.rating(*p) {
                    PlayerRating::Glicko2(r) => r,
                    _ => Glicko2Rating::new(),
                };
                let ra: Vec<Glicko2Rating> = team_a.iter().map(get).collect();
                let rb: Vec<Glicko2Rating> = team_b.iter().map(get).collect();
                let mean = |v: &[Glicko2Rating]| Glicko2Rating {
                    rating: v.iter().map(|r| r.rating).sum::<f64>() / v.len() as f64,
                    deviation: v.iter().map(|r| r.deviation).sum::<f64>() / v.len() as f64,
                    volatility: v.iter().map(|r| r.volatility).sum::<f64>() / v.len() as f64,
                };
                let (ma, mb) = (mean(&ra), mean(&rb));
                let cfg = Glicko2Config::new();
                for (p, r) in team_a.iter().zip(&ra) {
                    updates.push((*p, PlayerRating::Glicko2(glicko2(r, &mb, &out, &cfg).0)));
                }
                for (p, r) in team_b.iter().zip(&rb) {
                    updates.push((*p, PlayerRating::Glicko2(glicko2(&ma, r, &out, &cfg).1)));
                }
            }
            RatingSystem::TrueSkill => {
                let get = |p: &PlayerId| match self.rating(*p) {
                    PlayerRating::TrueSkill(r) => r,
                    _ => TrueSkillRating::new(),
                };
                let ra: Vec<TrueSkillRating> = team_a.iter().map(get).collect();
                let rb: Vec<TrueSkillRating> = team_b.iter().map(get).collect();
                let (na, nb) = trueskill_two_teams(&ra, &rb, &out, &TrueSkillConfig::new());
                updates.extend(team_a.iter().copied().zip(na.into_iter().map(PlayerRating::TrueSkill)));
                updates.extend(team_b.iter().copied().zip(nb.into_iter().map(PlayerRating::TrueSkill)));
            }
            RatingSystem::WengLin => {
                let get = |p: &PlayerId| match self.rating(*p) {
                    PlayerRating::WengLin(r) => r,
                    _ => WengLinRating::new(),
                };
                let ra: Vec<WengLinRating> = team_a.iter().map(get).collect();
                let rb: Vec<WengLinRating> = team_b.iter().map(get).collect();
                let (na, nb) = weng_lin_two_teams(&ra, &rb, &out, &WengLinConfig::new());
                updates.extend(team_a.iter().copied().zip(na.into_iter().map(PlayerRating::WengLin)));
                updates.extend(team_b.iter().copied().zip(nb.into_iter().map(PlayerRating::WengLin)));
            }
        }
        if updates.iter().any(|(_, r)| !r.is_finite()) {
            return Err(RatingError::NotFinite);
        }
        self.ratings.extend(updates);
        Ok(())
    }
}
