//! The game the servers run: an arena fight between two teams (a duel at `team_size = 1`),
//! decided by the players' inputs and nothing else, so that ratings built on its results
//! track how well players play.
//!
//! Each tick the server sends every player a [`ServerMsg::Snapshot`]; the player answers with an
//! [`Input`] for that tick: how well it aims and how well it guards (0 to [`MAX_STAT`]).
//! When the server resolves the tick, every fighter that answered in time strikes the weakest
//! standing opponent for `(aim - guard/2) / 100` hit points, where `guard` is the target's
//! guard that tick (a fighter that did not answer neither strikes nor guards). A team wins
//! when the other has no fighter standing, or, at the tick limit, with more hit points left
//! (then with more damage dealt; a full tie is a draw).
//!
//! Bots have a hidden skill that shapes their inputs ([`skilled_input`]); the server never
//! sees it. Inputs are checked before they count (range, tick, seat), and a bad one is a
//! typed [`ArenaError`] the server counts as dropped input.
//!
//! ```
//! use pvp_core::ids::PlayerId;
//! use pvp_examples::arena::{Arena, Input, Step};
//!
//! let (a, b) = (PlayerId::new(1), PlayerId::new(2));
//! let mut fight = Arena::new(&[(a, 0), (b, 1)], 100)?;
//! let outcome = loop {
//!     let t = fight.tick();
//!     fight.handle_input(a, Input { tick: t, aim: 900, guard: 900 })?;
//!     fight.handle_input(b, Input { tick: t, aim: 400, guard: 300 })?;
//!     if let Step::Over { winner } = fight.step() {
//!         break winner;
//!     }
//! };
//! assert_eq!(outcome, Some(0)); // the better inputs win
//! # Ok::<(), pvp_examples::arena::ArenaError>(())
//! ```

use pvp_core::ids::PlayerId;
use rand::Rng;

/// The largest aim or guard value.
pub const MAX_STAT: u16 = 1_000;
/// Hit points a fighter starts with.
pub const START_HP: i32 = 100;
/// Most fighters in one arena.
pub const MAX_FIGHTERS: usize = 64;

/// Datagram kinds (first byte of a payload).
const KIND_SNAPSHOT: u8 = 1;
const KIND_INPUT: u8 = 2;
const KIND_END: u8 = 3;

/// Why an input or an arena was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArenaError {
    /// The bytes are not an input (wrong kind or length).
    #[error("not an input datagram")]
    Malformed,
    /// Aim or guard above [`MAX_STAT`].
    #[error("aim or guard out of range")]
    OutOfRange,
    /// The input answers another tick than the one in play (late, or from the future).
    #[error("input for tick {got}, the arena is at {now}")]
    WrongTick {
        /// The input's tick.
        got: u32,
        /// The arena's.
        now: u32,
    },
    /// The player has no seat in this arena.
    #[error("player has no seat here")]
    NotSeated,
    /// The fighter already answered this tick.
    #[error("second input for the same tick")]
    Duplicate,
    /// An arena needs both teams (0 and 1) seated, at most [`MAX_FIGHTERS`], no player twice.
    #[error("an arena needs both teams and distinct players")]
    BadSeats,
    /// The fight is over.
    #[error("the fight is over")]
    Over,
}

/// What a player does in one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Input {
    /// The tick it answers (the latest snapshot's).
    pub tick: u32,
    /// How well the strike is aimed, 0 to [`MAX_STAT`].
    pub aim: u16,
    /// How well the fighter guards, 0 to [`MAX_STAT`].
    pub guard: u16,
}

impl Input {
    /// Encoded length.
    pub const BYTES: usize = 9;

    /// The datagram.
    pub fn encode(&self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        b[0] = KIND_INPUT;
        b[1..5].copy_from_slice(&self.tick.to_le_bytes());
        b[5..7].copy_from_slice(&self.aim.to_le_bytes());
        b[7..9].copy_from_slice(&self.guard.to_le_bytes());
        b
    }

    /// Reads and checks a datagram.
    pub fn decode(b: &[u8]) -> Result<Self, ArenaError> {
        if b.len() != Self::BYTES || b[0] != KIND_INPUT {
            return Err(ArenaError::Malformed);
        }
        let tick = u32::from_le_bytes([b[1], b[2], b[3], b[4]]);
        let aim = u16::from_le_bytes([b[5], b[6]]);
        let guard = u16::from_le_bytes([b[7], b[8]]);
        if aim > MAX_STAT || guard > MAX_STAT {
            return Err(ArenaError::OutOfRange);
        }
        Ok(Input { tick, aim, guard })
    }
}

/// What the server tells a player each tick (and the client's cue to answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerMsg {
    /// The state at the start of `tick`: answer with an [`Input`] for it.
    Snapshot {
        /// The tick in play.
        tick: u32,
        /// The player's hit points.
        hp: i16,
        /// The opposing team's hit points, summed.
        foes_hp: i16,
    },
    /// The fight ended.
    End {
        /// 1 when the player's team won, 0 when it lost, 2 for a draw.
        result: u8,
    },
}

impl ServerMsg {
    /// The most bytes a message takes.
    pub const MAX_BYTES: usize = 9;

    /// Writes the message into `out`; returns the length.
    pub fn encode(&self, out: &mut [u8; Self::MAX_BYTES]) -> usize {
        match *self {
            ServerMsg::Snapshot { tick, hp, foes_hp } => {
                out[0] = KIND_SNAPSHOT;
                out[1..5].copy_from_slice(&tick.to_le_bytes());
                out[5..7].copy_from_slice(&hp.to_le_bytes());
                out[7..9].copy_from_slice(&foes_hp.to_le_bytes());
                9
            }
            ServerMsg::End { result } => {
                out[0] = KIND_END;
                out[1] = result;
                2
            }
        }
    }

    /// Reads a message; `None` for anything else.
    pub fn decode(b: &[u8]) -> Option<Self> {
        match (b.first(), b.len()) {
            (Some(&KIND_SNAPSHOT), 9) => Some(ServerMsg::Snapshot {
                tick: u32::from_le_bytes([b[1], b[2], b[3], b[4]]),
                hp: i16::from_le_bytes([b[5], b[6]]),
                foes_hp: i16::from_le_bytes([b[7], b[8]]),
            }),
            (Some(&KIND_END), 2) if b[1] <= 2 => Some(ServerMsg::End { result: b[1] }),
            _ => None,
        }
    }
}

/// What resolving a tick gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The fight goes on at the next tick.
    Continue,
    /// The fight ended: the winning team, `None` for a draw.
    Over {
        /// Team 0 or 1, or `None`.
        winner: Option<u8>,
    },
}

#[derive(Debug, Clone)]
struct Fighter {
    player: PlayerId,
    team: u8,
    hp: i32,
    dealt: u32,
    input: Option<Input>,
}

/// One fight, authoritative: inputs in, resolved ticks out. Sans-IO: the server's game loop
/// calls [`step`](Self::step) at its tick rate.
#[derive(Debug, Clone)]
pub struct Arena {
    fighters: Vec<Fighter>,
    tick: u32,
    max_ticks: u32,
    over: Option<Option<u8>>,
}

impl Arena {
    /// An arena for `seats` (player, team 0 or 1) that ends at `max_ticks` at the latest.
    pub fn new(seats: &[(PlayerId, u8)], max_ticks: u32) -> Result<Self, ArenaError> {
        let both = seats.iter().any(|s| s.1 == 0) && seats.iter().any(|s| s.1 == 1);
        let valid = seats.iter().all(|s| s.1 <= 1);
        let mut ids: Vec<PlayerId> = seats.iter().map(|s| s.0).collect();
        ids.sort_unstable();
        ids.dedup();
        if !both || !valid || ids.len() != seats.len() || seats.len() > MAX_FIGHTERS || max_ticks == 0 {
            return Err(ArenaError::BadSeats);
        }
        let fighters = seats
            .iter()
            .map(|&(player, team)| Fighter { player, team, hp: START_HP, dealt: 0, input: None })
            .collect();
        Ok(Arena { fighters, tick: 1, max_ticks, over: None })
    }

    /// The tick in play (inputs must name it).
    pub fn tick(&self) -> u32 {
        self.tick
    }

    /// The result once over: `Some(winner)` (`None` inside: a draw).
    pub fn result(&self) -> Option<Option<u8>> {
        self.over
    }

    /// Takes `player`'s input for the tick in play.
    pub fn handle_input(&mut self, player: PlayerId, input: Input) -> Result<(), ArenaError> {
        if self.over.is_some() {
            return Err(ArenaError::Over);
        }
        if input.aim > MAX_STAT || input.guard > MAX_STAT {
            return Err(ArenaError::OutOfRange);
        }
        if input.tick != self.tick {
            return Err(ArenaError::WrongTick { got: input.tick, now: self.tick });
        }
        let f = self.fighters.iter_mut().find(|f| f.player == player).ok_or(ArenaError::NotSeated)?;
        if f.input.is_some() {
            return Err(ArenaError::Duplicate);
        }
        f.input = Some(input);
        Ok(())
    }

    fn team_hp(&self, team: u8) -> i32 {
        self.fighters.iter().filter(|f| f.team == team).map(|f| f.hp.max(0)).sum()
    }

    /// What `player` sees now.
    pub fn snapshot(&self, player: PlayerId) -> Option<ServerMsg> {
        let f = self.fighters.iter().find(|f| f.player == player)?;
        if let Some(w) = self.over {
            let result = match w {
                None => 2,
                Some(t) => u8::from(t == f.team),
            };
            return Some(ServerMsg::End { result });
        }
        let clamp = |v: i32| v.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
        Some(ServerMsg::Snapshot {
            tick: self.tick,
            hp: clamp(f.hp),
            foes_hp: clamp(self.team_hp(1 - f.team)),
        })
    }

    /// The seated players with their teams.
    pub fn seats(&self) -> impl Iterator<Item = (PlayerId, u8)> + '_ {
        self.fighters.iter().map(|f| (f.player, f.team))
    }

    /// Resolves the tick in play: strikes land, the fallen fall, the tick advances.
    pub fn step(&mut self) -> Step {
        if let Some(w) = self.over {
            return Step::Over { winner: w };
        }
        let n = self.fighters.len();
        let mut damage = [0i32; MAX_FIGHTERS];
        for i in 0..n {
            let f = &self.fighters[i];
            let Some(inp) = f.input.filter(|_| f.hp > 0) else { continue };
            // The weakest standing opponent (lowest hit points, then seat order).
            let target = (0..n)
                .filter(|&j| self.fighters[j].team != f.team && self.fighters[j].hp > 0)
                .min_by_key(|&j| (self.fighters[j].hp, j));
            let Some(j) = target else { continue };
            let guard = self.fighters[j].input.map_or(0, |g| i32::from(g.guard));
            let d = (i32::from(inp.aim) - guard / 2).max(0) / 100;
            damage[j] += d;
            self.fighters[i].dealt += d as u32;
        }
        for (f, d) in self.fighters.iter_mut().zip(damage.iter()) {
            f.hp -= d;
            f.input = None;
        }
        let (a, b) = (self.team_hp(0), self.team_hp(1));
        let ended = a == 0 || b == 0 || self.tick >= self.max_ticks;
        if !ended {
            self.tick += 1;
            return Step::Continue;
        }
        let dealt =
            |t: u8| self.fighters.iter().filter(|f| f.team == t).map(|f| u64::from(f.dealt)).sum::<u64>();
        let winner = match a.cmp(&b).then(dealt(0).cmp(&dealt(1))) {
            std::cmp::Ordering::Greater => Some(0),
            std::cmp::Ordering::Less => Some(1),
            std::cmp::Ordering::Equal => None,
        };
        self.over = Some(winner);
        Step::Over { winner }
    }
}

/// The input a player of hidden `skill` (0.0 to 1.0) gives for `tick`: better players aim and
/// guard better on average, everyone has good and bad ticks.
pub fn skilled_input(skill: f64, tick: u32, rng: &mut impl Rng) -> Input {
    let mean = 200.0 + 700.0 * skill.clamp(0.0, 1.0);
    let mut stat = || {
        // A triangular spread of +-150 around the mean (sum of two uniforms).
        let noise = rng.random_range(-75.0..75.0) + rng.random_range(-75.0..75.0);
        (mean + noise).clamp(0.0, f64::from(MAX_STAT)) as u16
    };
    Input { tick, aim: stat(), guard: stat() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn p(i: u64) -> PlayerId {
        PlayerId::new(i)
    }

    fn fight(skills: &[(f64, u8)], rng: &mut SmallRng) -> Option<u8> {
        let seats: Vec<(PlayerId, u8)> =
            skills.iter().enumerate().map(|(i, s)| (p(i as u64 + 1), s.1)).collect();
        let mut a = Arena::new(&seats, 200).unwrap();
        loop {
            let t = a.tick();
            for (i, s) in skills.iter().enumerate() {
                a.handle_input(p(i as u64 + 1), skilled_input(s.0, t, rng)).unwrap();
            }
            if let Step::Over { winner } = a.step() {
                return winner;
            }
        }
    }

    #[test]
    fn the_better_player_wins_most_and_close_fights_are_close() {
        let mut rng = SmallRng::seed_from_u64(7);
        let wide = (0..200).filter(|_| fight(&[(0.8, 0), (0.3, 1)], &mut rng) == Some(0)).count();
        assert!(wide >= 195, "a wide gap decides nearly every fight: {wide}/200");
        let close = (0..400).filter(|_| fight(&[(0.52, 0), (0.48, 1)], &mut rng) == Some(0)).count();
        assert!((220..400).contains(&close), "a small edge wins more, not always: {close}/400");
        let team = (0..100)
            .filter(|_| fight(&[(0.7, 0), (0.7, 0), (0.4, 1), (0.4, 1)], &mut rng) == Some(0))
            .count();
        assert!(team >= 95, "team fights follow skill too: {team}/100");
    }

    #[test]
    fn a_silent_player_loses_to_one_that_plays() {
        let mut a = Arena::new(&[(p(1), 0), (p(2), 1)], 50).unwrap();
        let w = loop {
            let t = a.tick();
            a.handle_input(p(2), Input { tick: t, aim: 300, guard: 0 }).unwrap();
            if let Step::Over { winner } = a.step() {
                break winner;
            }
        };
        assert_eq!(w, Some(1));
        assert_eq!(a.snapshot(p(1)), Some(ServerMsg::End { result: 0 }));
        assert_eq!(a.snapshot(p(2)), Some(ServerMsg::End { result: 1 }));
        assert_eq!(a.handle_input(p(1), Input { tick: 1, aim: 0, guard: 0 }), Err(ArenaError::Over));
    }

    #[test]
    fn bad_inputs_are_typed_errors_and_change_nothing() {
        let mut a = Arena::new(&[(p(1), 0), (p(2), 1)], 5).unwrap();
        let before = format!("{a:?}");
        assert_eq!(Input::decode(&[2, 0, 0]), Err(ArenaError::Malformed));
        assert_eq!(Input::decode(&[9; 9]), Err(ArenaError::Malformed));
        let mut big = Input { tick: 1, aim: 1_001, guard: 0 }.encode();
        assert_eq!(Input::decode(&big), Err(ArenaError::OutOfRange));
        big[5..7].copy_from_slice(&500u16.to_le_bytes());
        assert_eq!(Input::decode(&big), Ok(Input { tick: 1, aim: 500, guard: 0 }));
        let ok = Input { tick: 1, aim: 10, guard: 10 };
        assert_eq!(a.handle_input(p(9), ok), Err(ArenaError::NotSeated));
        assert_eq!(
            a.handle_input(p(1), Input { tick: 2, ..ok }),
            Err(ArenaError::WrongTick { got: 2, now: 1 })
        );
        assert_eq!(a.handle_input(p(1), Input { aim: 1_001, ..ok }), Err(ArenaError::OutOfRange));
        assert_eq!(format!("{a:?}"), before, "refused inputs leave no trace");
        a.handle_input(p(1), ok).unwrap();
        assert_eq!(a.handle_input(p(1), ok), Err(ArenaError::Duplicate));
        assert!(Arena::new(&[(p(1), 0), (p(2), 0)], 5).is_err());
        assert!(Arena::new(&[(p(1), 0), (p(1), 1)], 5).is_err());
        assert!(Arena::new(&[(p(1), 0), (p(2), 3)], 5).is_err());
        assert!(Arena::new(&[(p(1), 0), (p(2), 1)], 0).is_err());
    }

    #[test]
    fn messages_round_trip_and_junk_is_refused() {
        let mut b = [0u8; ServerMsg::MAX_BYTES];
        for m in [ServerMsg::Snapshot { tick: 7, hp: -3, foes_hp: 200 }, ServerMsg::End { result: 2 }] {
            let n = m.encode(&mut b);
            assert_eq!(ServerMsg::decode(&b[..n]), Some(m));
        }
        assert_eq!(ServerMsg::decode(&[3, 9]), None);
        assert_eq!(ServerMsg::decode(&[]), None);
        let i = Input { tick: u32::MAX, aim: MAX_STAT, guard: 0 };
        assert_eq!(Input::decode(&i.encode()), Ok(i));
    }

    #[test]
    fn the_tick_limit_decides_by_hit_points() {
        let mut a = Arena::new(&[(p(1), 0), (p(2), 1)], 3).unwrap();
        for _ in 0..2 {
            let t = a.tick();
            a.handle_input(p(1), Input { tick: t, aim: 400, guard: 400 }).unwrap();
            a.handle_input(p(2), Input { tick: t, aim: 360, guard: 400 }).unwrap();
            assert_eq!(a.step(), Step::Continue);
        }
        assert_eq!(a.step(), Step::Over { winner: Some(0) });
        // Nobody plays at all: a draw at the limit.
        let mut d = Arena::new(&[(p(1), 0), (p(2), 1)], 2).unwrap();
        assert_eq!(d.step(), Step::Continue);
        assert_eq!(d.step(), Step::Over { winner: None });
        assert_eq!(d.result(), Some(None));
    }
}
