//! Global leaderboards: one per game mode, replicated across regions through the score CRDTs
//! in [`ScoreCell`], indexed locally by an order-statistics treap so that rank, top-N and
//! "players around me" queries are `O(log n)` (plus the size of the answer) at millions of
//! players.
//!
//! # Score operators (as Nakama names them)
//! | [`ScoreOperator`] | a submission of `v` | CRDT | after a partition heals |
//! |---|---|---|---|
//! | `Best` | keeps `max(score, v)` | [`MaxRegister`] | the best score of any region |
//! | `Set` | replaces the score | [`LwwRegister`] | the newest write ([`HlcStamp`] order) |
//! | `Incr` | adds `v` | [`PnCounter`] | the sum of every region's increments, each once |
//! | `Decr` | subtracts `v` | [`PnCounter`] | as `Incr` |
//!
//! # Tie policy
//! Higher scores rank first. Players with equal scores are ordered by ascending [`PlayerId`]:
//! every region sees the same order (a submission time would differ between regions), and
//! ranks are distinct positions `1..=n`.
//!
//! ```
//! use pvp_global::leaderboard::Leaderboard;
//! use pvp_core::PlayerId;
//!
//! let mut board = Leaderboard::new();
//! board.update(PlayerId::new(1), 50);
//! board.update(PlayerId::new(2), 80);
//! board.update(PlayerId::new(3), 50);
//! assert_eq!(board.rank(PlayerId::new(2)), Some(1));
//! assert_eq!(board.rank(PlayerId::new(1)), Some(2)); // ties: lower id first
//! assert_eq!(board.rank(PlayerId::new(3)), Some(3));
//! let top: Vec<_> = board.top(2).into_iter().map(|e| e.player.get()).collect();
//! assert_eq!(top, [2, 1]);
//! ```

use crate::crdt::{Actor, Crdt, LwwRegister, MaxRegister, PnCounter};
use pvp_core::PlayerId;
use pvp_core::hlc::HlcStamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// A game mode's leaderboard id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GameMode(pub u32);

/// How submissions combine into a score (Nakama's leaderboard operators).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ScoreOperator {
    /// Keep the best (largest) score submitted.
    Best,
    /// The newest submission replaces the score.
    Set,
    /// Each submission adds to the score.
    Incr,
    /// Each submission subtracts from the score.
    Decr,
}

/// A player's replicated score in one mode: the CRDT matching the mode's operator.
///
/// Replicas that disagree on the variant (a misconfigured mode) still converge: the variant
/// later in this list wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScoreCell {
    /// `Best`: maximum.
    Best(MaxRegister<i64>),
    /// `Set`: last writer wins.
    Set(LwwRegister<i64>),
    /// `Incr` / `Decr`: sum of increments minus decrements.
    Counter(PnCounter),
}

impl ScoreCell {
    /// The score this cell stands for.
    pub fn score(&self) -> i64 {
        match self {
            Self::Best(m) => m.value(),
            Self::Set(r) => *r.value(),
            Self::Counter(c) => c.value(),
        }
    }

    /// A new cell for `op` holding the submission `value`, or the delta of applying it to
    /// `current`. Returns `(delta, merged state)`.
    pub fn submit(
        current: Option<&Self>,
        op: ScoreOperator,
        value: i64,
        actor: Actor,
        stamp: HlcStamp,
    ) -> (Self, Self) {
        let delta = match (op, current) {
            (ScoreOperator::Best, _) => Self::Best(MaxRegister::new(value)),
            (ScoreOperator::Set, _) => Self::Set(LwwRegister::new(value, stamp)),
            (ScoreOperator::Incr | ScoreOperator::Decr, cur) => {
                let signed = if op == ScoreOperator::Decr { value.saturating_neg() } else { value };
                let mut c = match cur {
                    Some(Self::Counter(c)) => c.clone(),
                    _ => PnCounter::new(),
                };
                Self::Counter(c.add(actor, signed))
            }
        };
        let mut merged = current.cloned().unwrap_or_else(|| delta.clone());
        merged.merge(&delta);
        (delta, merged)
    }

    const fn rank(&self) -> u8 {
        match self {
            Self::Best(_) => 0,
            Self::Set(_) => 1,
            Self::Counter(_) => 2,
        }
    }

    pub(crate) fn normalize(&mut self) {
        if let Self::Counter(c) = self {
            c.normalize();
        }
    }

    /// Whether a submission with `op` fits this cell.
    pub const fn fits(&self, op: ScoreOperator) -> bool {
        matches!(
            (self, op),
            (Self::Best(_), ScoreOperator::Best)
                | (Self::Set(_), ScoreOperator::Set)
                | (Self::Counter(_), ScoreOperator::Incr | ScoreOperator::Decr)
        )
    }
}

impl Crdt for ScoreCell {
    fn merge(&mut self, other: &Self) {
        match (self, other) {
            (Self::Best(a), Self::Best(b)) => a.merge(b),
            (Self::Set(a), Self::Set(b)) => a.merge(b),
            (Self::Counter(a), Self::Counter(b)) => a.merge(b),
            (me, o) => {
                if o.rank() > me.rank() {
                    *me = o.clone();
                }
            }
        }
    }
}

/// One row of a leaderboard answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankedEntry {
    /// 1-based rank.
    pub rank: u64,
    /// The player.
    pub player: PlayerId,
    /// Their score.
    pub score: i64,
}

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Node {
    key: u128,
    prio: u64,
    left: u32,
    right: u32,
    size: u32,
}

/// Sort key: descending score, then ascending player id, as one `u128`.
#[inline]
fn sort_key(player: PlayerId, score: i64) -> u128 {
    let ordered = (score as u64) ^ (1 << 63); // i64 order -> u64 order
    (u128::from(!ordered) << 64) | u128::from(player.get())
}

#[inline]
fn key_parts(key: u128) -> (PlayerId, i64) {
    let score = ((!((key >> 64) as u64)) ^ (1 << 63)) as i64;
    (PlayerId::new(key as u64), score)
}

#[inline]
fn priority(player: u64) -> u64 {
    // splitmix64: deterministic, well-spread treap priorities.
    let mut z = player.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One mode's ranking: an order-statistics treap (arena-allocated, sizes in every node) plus a
/// player → score map. Updates, removals and rank queries are `O(log n)` expected.
#[derive(Debug, Clone, Default)]
pub struct Leaderboard {
    nodes: Vec<Node>,
    free: Vec<u32>,
    root: u32,
    scores: HashMap<PlayerId, i64>,
}

impl Leaderboard {
    /// An empty leaderboard.
    pub fn new() -> Self {
        Self { nodes: Vec::new(), free: Vec::new(), root: NIL, scores: HashMap::new() }
    }

    /// An empty leaderboard with room for `players` without reallocating.
    pub fn with_capacity(players: usize) -> Self {
        Self {
            nodes: Vec::with_capacity(players),
            free: Vec::new(),
            root: NIL,
            scores: HashMap::with_capacity(players),
        }
    }

    /// Number of ranked players.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// Whether nobody is ranked.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// The player's score, if ranked.
    pub fn score(&self, player: PlayerId) -> Option<i64> {
        self.scores.get(&player).copied()
    }

    /// Sets `player`'s score (inserting them if new). Returns the new 1-based rank.
    /// The arena holds up to `u32::MAX - 1` players; past that a new player is not ranked and
    /// `None` is returned.
    pub fn update(&mut self, player: PlayerId, score: i64) -> Option<u64> {
        if self.set_score(player, score) { self.rank(player) } else { None }
    }

    /// Sets `player`'s score (inserting them if new) without computing the new rank. Returns
    /// `false` only when a new player does not fit the arena (`u32::MAX - 1` players).
    pub fn set_score(&mut self, player: PlayerId, score: i64) -> bool {
        if let Some(old) = self.scores.get(&player).copied() {
            if old == score {
                return true;
            }
            self.root = Self::erase(&mut self.nodes, &mut self.free, self.root, sort_key(player, old));
        }
        let key = sort_key(player, score);
        let node = Node { key, prio: priority(player.get()), left: NIL, right: NIL, size: 1 };
        let idx = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                let Some(i) = u32::try_from(self.nodes.len()).ok().filter(|&i| i != NIL) else {
                    self.scores.remove(&player);
                    return false;
                };
                self.nodes.push(node);
                i
            }
        };
        self.root = Self::insert(&mut self.nodes, self.root, idx);
        self.scores.insert(player, score);
        true
    }

    /// Inserts node `idx` into the treap `t`: descends by key while the path's priorities are
    /// higher, then splits only the subtree it takes the place of.
    fn insert(nodes: &mut [Node], t: u32, idx: u32) -> u32 {
        if t == NIL {
            return idx;
        }
        let new = nodes[idx as usize];
        let n = nodes[t as usize];
        if new.prio > n.prio {
            let (l, r) = Self::split(nodes, t, new.key);
            nodes[idx as usize].left = l;
            nodes[idx as usize].right = r;
            Self::fix(nodes, idx);
            return idx;
        }
        if new.key < n.key {
            let c = Self::insert(nodes, n.left, idx);
            nodes[t as usize].left = c;
        } else {
            let c = Self::insert(nodes, n.right, idx);
            nodes[t as usize].right = c;
        }
        nodes[t as usize].size += 1;
        t
    }

    /// Removes `player`; returns their last score.
    pub fn remove(&mut self, player: PlayerId) -> Option<i64> {
        let old = self.scores.remove(&player)?;
        self.root = Self::erase(&mut self.nodes, &mut self.free, self.root, sort_key(player, old));
        Some(old)
    }

    /// 1-based rank of `player` (see the tie policy in the module docs).
    pub fn rank(&self, player: PlayerId) -> Option<u64> {
        let key = sort_key(player, *self.scores.get(&player)?);
        let mut below = 0u64;
        let mut t = self.root;
        while t != NIL {
            let n = &self.nodes[t as usize];
            if key < n.key {
                t = n.left;
            } else {
                below += u64::from(self.size(n.left));
                if key == n.key {
                    return Some(below + 1);
                }
                below += 1;
                t = n.right;
            }
        }
        None
    }

    /// The best `n` players.
    pub fn top(&self, n: usize) -> Vec<RankedEntry> {
        self.range(0, n)
    }

    /// Up to `before` players ranked just above `player`, the player, and up to `after` ranked
    /// just below. Empty if the player is not ranked.
    pub fn around(&self, player: PlayerId, before: usize, after: usize) -> Vec<RankedEntry> {
        let Some(rank) = self.rank(player) else {
            return Vec::new();
        };
        let pos = usize::try_from(rank - 1).unwrap_or(usize::MAX);
        let start = pos.saturating_sub(before);
        self.range(start, (pos - start).saturating_add(1).saturating_add(after))
    }

    /// `count` entries starting at 0-based position `start`.
    pub fn range(&self, start: usize, count: usize) -> Vec<RankedEntry> {
        let mut out = Vec::with_capacity(count.min(self.len().saturating_sub(start)));
        if count > 0 {
            self.collect(self.root, start, count, 0, &mut out);
        }
        out
    }

    fn collect(&self, t: u32, start: usize, count: usize, offset: usize, out: &mut Vec<RankedEntry>) {
        if t == NIL || out.len() >= count {
            return;
        }
        let n = self.nodes[t as usize];
        let left_size = self.size(n.left) as usize;
        let my_pos = offset + left_size;
        if start < my_pos {
            self.collect(n.left, start, count, offset, out);
        }
        if out.len() < count && my_pos >= start {
            let (player, score) = key_parts(n.key);
            out.push(RankedEntry { rank: my_pos as u64 + 1, player, score });
        }
        if out.len() < count {
            self.collect(n.right, start, count, my_pos + 1, out);
        }
    }

    #[inline]
    fn size(&self, t: u32) -> u32 {
        if t == NIL { 0 } else { self.nodes[t as usize].size }
    }

    fn fix(nodes: &mut [Node], t: u32) {
        let n = nodes[t as usize];
        let s = |c: u32| if c == NIL { 0 } else { nodes[c as usize].size };
        let size = 1 + s(n.left) + s(n.right);
        nodes[t as usize].size = size;
    }

    /// Splits `t` into keys `< key` and keys `>= key`.
    fn split(nodes: &mut [Node], t: u32, key: u128) -> (u32, u32) {
        if t == NIL {
            return (NIL, NIL);
        }
        let n = nodes[t as usize];
        if n.key < key {
            let (l, r) = Self::split(nodes, n.right, key);
            nodes[t as usize].right = l;
            Self::fix(nodes, t);
            (t, r)
        } else {
            let (l, r) = Self::split(nodes, n.left, key);
            nodes[t as usize].left = r;
            Self::fix(nodes, t);
            (l, t)
        }
    }

    /// Joins two treaps where every key of `a` is below every key of `b`.
    fn join(nodes: &mut [Node], a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if nodes[a as usize].prio > nodes[b as usize].prio {
            let r = nodes[a as usize].right;
            let j = Self::join(nodes, r, b);
            nodes[a as usize].right = j;
            Self::fix(nodes, a);
            a
        } else {
            let l = nodes[b as usize].left;
            let j = Self::join(nodes, a, l);
            nodes[b as usize].left = j;
            Self::fix(nodes, b);
            b
        }
    }

    fn erase(nodes: &mut [Node], free: &mut Vec<u32>, t: u32, key: u128) -> u32 {
        if t == NIL {
            return NIL;
        }
        let n = nodes[t as usize];
        if key == n.key {
            free.push(t);
            return Self::join(nodes, n.left, n.right);
        }
        if key < n.key {
            let l = Self::erase(nodes, free, n.left, key);
            nodes[t as usize].left = l;
        } else {
            let r = Self::erase(nodes, free, n.right, key);
            nodes[t as usize].right = r;
        }
        Self::fix(nodes, t);
        t
    }
}

/// Leaderboards of every game mode, with the operator each mode uses.
#[derive(Debug, Clone, Default)]
pub struct GlobalLeaderboard {
    modes: BTreeMap<GameMode, ModeBoard>,
}

#[derive(Debug, Clone)]
struct ModeBoard {
    op: ScoreOperator,
    /// `false` while the operator is only guessed from scores that came from peers.
    declared: bool,
    board: Leaderboard,
}

impl GlobalLeaderboard {
    /// No modes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares `mode` with `op`; returns `false` (and changes nothing) if it was already
    /// declared with another operator. A mode first seen in scores from peers takes the
    /// declared operator.
    pub fn define(&mut self, mode: GameMode, op: ScoreOperator) -> bool {
        match self.modes.get_mut(&mode) {
            Some(m) if m.declared => m.op == op,
            Some(m) => {
                m.op = op;
                m.declared = true;
                true
            }
            None => {
                self.modes.insert(mode, ModeBoard { op, declared: true, board: Leaderboard::new() });
                true
            }
        }
    }

    /// The operator of `mode`.
    pub fn operator(&self, mode: GameMode) -> Option<ScoreOperator> {
        self.modes.get(&mode).map(|m| m.op)
    }

    /// The board of `mode`.
    pub fn mode(&self, mode: GameMode) -> Option<&Leaderboard> {
        self.modes.get(&mode).map(|m| &m.board)
    }

    /// Updates `player`'s score in `mode`, creating an index for a mode seen only from peers
    /// (its operator guessed from the score's CRDT until declared).
    pub(crate) fn index(&mut self, mode: GameMode, player: PlayerId, score: i64, op: ScoreOperator) {
        let entry = self.modes.entry(mode).or_insert_with(|| ModeBoard {
            op,
            declared: false,
            board: Leaderboard::new(),
        });
        entry.board.set_score(player, score);
    }

    /// Declared modes and their operators, in order.
    pub fn modes(&self) -> impl Iterator<Item = (GameMode, ScoreOperator)> + '_ {
        self.modes.iter().filter(|(_, m)| m.declared).map(|(mode, m)| (*mode, m.op))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_declared_operator_replaces_a_guess() {
        let mut g = GlobalLeaderboard::new();
        g.index(GameMode(4), PlayerId::new(1), -3, ScoreOperator::Incr);
        assert!(g.define(GameMode(4), ScoreOperator::Decr));
        assert_eq!(g.operator(GameMode(4)), Some(ScoreOperator::Decr));
        assert!(!g.define(GameMode(4), ScoreOperator::Best));
        assert_eq!(g.mode(GameMode(4)).and_then(|b| b.score(PlayerId::new(1))), Some(-3));
    }

    #[test]
    fn key_round_trip() {
        for s in [i64::MIN, -1, 0, 1, i64::MAX] {
            let (p, sc) = key_parts(sort_key(PlayerId::new(9), s));
            assert_eq!((p.get(), sc), (9, s));
        }
        assert!(sort_key(PlayerId::new(1), 10) < sort_key(PlayerId::new(0), 9));
        assert!(sort_key(PlayerId::new(1), 10) < sort_key(PlayerId::new(2), 10));
    }

    proptest! {
        #[test]
        fn matches_a_sorted_vector(ops in proptest::collection::vec((0u64..40, -50i64..50, any::<bool>()), 1..300)) {
            let mut b = Leaderboard::new();
            let mut model: HashMap<u64, i64> = HashMap::new();
            for (p, s, rm) in ops {
                if rm {
                    prop_assert_eq!(b.remove(PlayerId::new(p)), model.remove(&p));
                } else {
                    b.update(PlayerId::new(p), s);
                    model.insert(p, s);
                }
            }
            let mut sorted: Vec<(u64, i64)> = model.iter().map(|(p, s)| (*p, *s)).collect();
            sorted.sort_by(|a, c| c.1.cmp(&a.1).then(a.0.cmp(&c.0)));
            prop_assert_eq!(b.len(), sorted.len());
            for (i, (p, s)) in sorted.iter().enumerate() {
                prop_assert_eq!(b.rank(PlayerId::new(*p)), Some(i as u64 + 1));
                prop_assert_eq!(b.score(PlayerId::new(*p)), Some(*s));
            }
            let all = b.top(usize::MAX);
            let got: Vec<(u64, i64)> = all.iter().map(|e| (e.player.get(), e.score)).collect();
            prop_assert_eq!(got, sorted.clone());
            if let Some((p, _)) = sorted.get(sorted.len() / 2) {
                let around = b.around(PlayerId::new(*p), 2, 3);
                let mid = sorted.len() / 2;
                let lo = mid.saturating_sub(2);
                let hi = (mid + 4).min(sorted.len());
                let want: Vec<u64> = sorted[lo..hi].iter().map(|x| x.0).collect();
                let got: Vec<u64> = around.iter().map(|e| e.player.get()).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
