//! Conflict-free replicated data types: every region applies writes locally, ships them as
//! small deltas, and [`Crdt::merge`] folds any state or delta into any other. Merges are
//! commutative, associative and idempotent, so replicas that saw the same writes in any order,
//! any number of times, hold equal state.
//!
//! | type | use in the game | merge |
//! |---|---|---|
//! | [`LwwRegister`] | rating, a profile setting, a `set` leaderboard score | newest [`HlcStamp`] wins, ties by region |
//! | [`MaxRegister`] | `best` leaderboard score | maximum |
//! | [`GCounter`] | matches played | per-[`Actor`] maximum |
//! | [`PnCounter`] | `incr`/`decr` scores, wins minus losses | two G-counters |
//! | [`OrSet`] | ban list, friends | add-wins observed-remove with a causal context |
//! | [`CrdtMap`] / [`Profile`] | player profile | per-key merge |
//!
//! Every mutating method applies the write to `self` and returns the *delta*: the smallest
//! state that carries the write, ready to ship to other regions.
//!
//! ```
//! use pvp_global::crdt::{Actor, Crdt, OrSet};
//! use pvp_core::RegionId;
//!
//! let kr = Actor::new(RegionId::new("kr")?, 1);
//! let mut bans_kr = OrSet::new();
//! let mut bans_jp = OrSet::new();
//! bans_jp.merge(&bans_kr.add(kr, 42u64));
//! // jp lifts the ban while kr, concurrently, bans again: the unseen add wins.
//! let lift = bans_jp.remove(&42).expect("42 was banned");
//! let again = bans_kr.add(kr, 42);
//! bans_kr.merge(&lift);
//! bans_jp.merge(&again);
//! assert!(bans_kr.contains(&42) && bans_jp.contains(&42));
//! assert_eq!(bans_kr, bans_jp);
//! # Ok::<(), pvp_core::ids::IdError>(())
//! ```

use pvp_core::RegionId;
use pvp_core::hlc::HlcStamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A state-based CRDT: a join-semilattice whose `merge` is the join.
pub trait Crdt {
    /// Folds `other` (a full state or a delta) into `self`. Commutative, associative and
    /// idempotent.
    fn merge(&mut self, other: &Self);
}

/// Who made a write: a region in one incarnation. A region takes a new incarnation each time it
/// starts, so a restart that lost a few of its own writes never reuses their counters or dots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// The region.
    pub region: RegionId,
    /// Its incarnation (e.g. the start time in milliseconds).
    pub incarnation: u64,
}

impl Actor {
    /// An actor for `region` in `incarnation`.
    pub const fn new(region: RegionId, incarnation: u64) -> Self {
        Self { region, incarnation }
    }
}

// ---------------------------------------------------------------------------------------------
// Registers

/// Last-writer-wins register stamped with a hybrid logical clock. Equal stamps (only possible
/// from a misbehaving writer) fall back to the larger value, so the merge stays deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwwRegister<T> {
    stamp: HlcStamp,
    value: T,
}

impl<T: Clone + Ord> LwwRegister<T> {
    /// A register holding `value` written at `stamp`.
    pub const fn new(value: T, stamp: HlcStamp) -> Self {
        Self { stamp, value }
    }

    /// The current value.
    pub const fn value(&self) -> &T {
        &self.value
    }

    /// The stamp of the current value.
    pub const fn stamp(&self) -> HlcStamp {
        self.stamp
    }

    /// Writes `value` at `stamp` (ignored if an equal or newer write is already held) and returns
    /// the delta.
    pub fn set(&mut self, value: T, stamp: HlcStamp) -> Self {
        let delta = Self::new(value, stamp);
        self.merge(&delta);
        delta
    }
}

impl<T: Clone + Ord> Crdt for LwwRegister<T> {
    #[inline]
    fn merge(&mut self, other: &Self) {
        match other.stamp.cmp(&self.stamp) {
            core::cmp::Ordering::Greater => self.clone_from(other),
            core::cmp::Ordering::Equal if other.value > self.value => self.value.clone_from(&other.value),
            _ => {}
        }
    }
}

/// A register that only moves up: merge keeps the maximum (Nakama's `best` operator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MaxRegister<T>(T);

impl<T: Ord + Copy> MaxRegister<T> {
    /// A register holding `value`.
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    /// The current (largest seen) value.
    pub const fn value(&self) -> T {
        self.0
    }

    /// Offers `value`; returns the delta.
    pub fn offer(&mut self, value: T) -> Self {
        let d = Self(value);
        self.merge(&d);
        d
    }
}

impl<T: Ord + Copy> Crdt for MaxRegister<T> {
    #[inline]
    fn merge(&mut self, other: &Self) {
        if other.0 > self.0 {
            self.0 = other.0;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Counters

/// Grow-only counter: one monotone count per [`Actor`], the value is their sum.
///
/// Entries live in a small sorted vector: a counter is touched by a handful of regions, where a
/// vector beats a tree map in both speed and bytes.
///
/// Deserializing sorts and de-duplicates the entries (keeping each actor's largest count), so
/// untrusted input cannot leave a counter whose merges and lookups miss entries.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "GCounterRepr")]
pub struct GCounter {
    entries: Vec<(Actor, u64)>,
}

/// The shipped form of a [`GCounter`] (same field, not yet canonical).
#[derive(Deserialize)]
struct GCounterRepr {
    entries: Vec<(Actor, u64)>,
}

impl From<GCounterRepr> for GCounter {
    fn from(r: GCounterRepr) -> Self {
        let mut g = Self { entries: r.entries };
        g.normalize();
        g
    }
}

impl GCounter {
    /// An empty counter (value 0).
    pub const fn new() -> Self {
        Self { entries: Vec::new() }
    }

    /// The sum of all actors' counts, saturating at `u64::MAX`.
    pub fn value(&self) -> u64 {
        self.entries.iter().fold(0u64, |acc, (_, v)| acc.saturating_add(*v))
    }

    /// The count contributed by `actor`.
    pub fn count_of(&self, actor: &Actor) -> u64 {
        self.entries.binary_search_by(|(a, _)| a.cmp(actor)).map_or(0, |i| self.entries[i].1)
    }

    /// Adds `n` for `actor` (saturating) and returns the delta.
    pub fn incr(&mut self, actor: Actor, n: u64) -> Self {
        let v = match self.entries.binary_search_by(|(a, _)| a.cmp(&actor)) {
            Ok(i) => {
                self.entries[i].1 = self.entries[i].1.saturating_add(n);
                self.entries[i].1
            }
            Err(i) => {
                self.entries.insert(i, (actor, n));
                n
            }
        };
        Self { entries: vec![(actor, v)] }
    }

    /// The actors that contributed and their counts, in actor order.
    pub fn entries(&self) -> &[(Actor, u64)] {
        &self.entries
    }

    /// Rebuilds the sorted, de-duplicated form after deserializing untrusted input.
    pub(crate) fn normalize(&mut self) {
        if self.entries.windows(2).all(|w| w[0].0 < w[1].0) {
            return;
        }
        self.entries.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        self.entries.dedup_by(|b, a| a.0 == b.0);
    }
}

impl Crdt for GCounter {
    #[inline]
    fn merge(&mut self, other: &Self) {
        // Fast path: same actors in the same order (the steady state between regions).
        if self.entries.len() == other.entries.len()
            && self.entries.iter().zip(&other.entries).all(|(a, b)| a.0 == b.0)
        {
            for (a, b) in self.entries.iter_mut().zip(&other.entries) {
                if b.1 > a.1 {
                    a.1 = b.1;
                }
            }
            return;
        }
        for &(actor, v) in &other.entries {
            match self.entries.binary_search_by(|(a, _)| a.cmp(&actor)) {
                Ok(i) => {
                    if v > self.entries[i].1 {
                        self.entries[i].1 = v;
                    }
                }
                Err(i) => self.entries.insert(i, (actor, v)),
            }
        }
    }
}

/// Positive-negative counter: increments and decrements as two [`GCounter`]s.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PnCounter {
    p: GCounter,
    n: GCounter,
}

impl PnCounter {
    /// An empty counter (value 0).
    pub const fn new() -> Self {
        Self { p: GCounter::new(), n: GCounter::new() }
    }

    /// Increments minus decrements, clamped to the `i64` range.
    pub fn value(&self) -> i64 {
        let v = i128::from(self.p.value()) - i128::from(self.n.value());
        v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// Adds `delta` (negative decrements) for `actor`; returns the delta state.
    pub fn add(&mut self, actor: Actor, delta: i64) -> Self {
        let mut d = Self::new();
        if delta >= 0 {
            d.p = self.p.incr(actor, delta.unsigned_abs());
        } else {
            d.n = self.n.incr(actor, delta.unsigned_abs());
        }
        d
    }

    pub(crate) fn normalize(&mut self) {
        self.p.normalize();
        self.n.normalize();
    }
}

impl Crdt for PnCounter {
    #[inline]
    fn merge(&mut self, other: &Self) {
        self.p.merge(&other.p);
        self.n.merge(&other.n);
    }
}

// ---------------------------------------------------------------------------------------------
// OR-set

/// One unique write event: the `seq`-th event of `actor` on one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// Who made the event.
    pub actor: Actor,
    /// Its sequence number, from 1.
    pub seq: u64,
}

/// The set of events a replica has seen: a version vector for the contiguous prefix of each
/// actor plus a "cloud" of events seen out of order. Kept compact (canonical), so equal
/// knowledge gives equal bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CausalContext {
    vv: BTreeMap<Actor, u64>,
    cloud: BTreeSet<Dot>,
}

impl CausalContext {
    /// Whether the event `dot` has been seen.
    pub fn contains(&self, dot: &Dot) -> bool {
        self.vv.get(&dot.actor).is_some_and(|&s| dot.seq <= s) || self.cloud.contains(dot)
    }

    fn next_dot(&self, actor: Actor) -> Dot {
        let base = self.vv.get(&actor).copied().unwrap_or(0);
        let cloud_max = self
            .cloud
            .range(Dot { actor, seq: 0 }..=Dot { actor, seq: u64::MAX })
            .next_back()
            .map_or(0, |d| d.seq);
        Dot { actor, seq: base.max(cloud_max).saturating_add(1) }
    }

    fn insert(&mut self, dot: Dot) {
        if !self.contains(&dot) {
            self.cloud.insert(dot);
        }
    }

    fn merge(&mut self, other: &Self) {
        for (a, &s) in &other.vv {
            let e = self.vv.entry(*a).or_insert(0);
            if s > *e {
                *e = s;
            }
        }
        for d in &other.cloud {
            // The common case (the next event of an actor) extends the prefix in place.
            let e = self.vv.entry(d.actor).or_insert(0);
            if d.seq == e.saturating_add(1) {
                *e = d.seq;
            } else if d.seq > *e {
                self.cloud.insert(*d);
            }
        }
        self.vv.retain(|_, s| *s > 0);
        if !self.cloud.is_empty() {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let mut keep = BTreeSet::new();
        for d in std::mem::take(&mut self.cloud) {
            let e = self.vv.entry(d.actor).or_insert(0);
            if d.seq == e.saturating_add(1) {
                *e = d.seq;
            } else if d.seq > *e {
                keep.insert(d);
            }
        }
        // Dots are visited in (actor, seq) order, so one pass absorbs every contiguous run;
        // what remains in `keep` is strictly above its actor's prefix.
        self.vv.retain(|_, s| *s > 0);
        self.cloud = keep;
    }
}

/// Add-wins observed-remove set (the ban list, friend lists). A remove only takes away the adds
/// it has seen, so an add concurrent with a remove survives the merge.
///
/// A dot → element index (rebuilt on deserialization, never shipped) lets a merge touch only
/// the dots the other side mentions, so joining a small delta into a large set costs
/// `O(delta · log n)` instead of `O(n)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    bound(serialize = "E: Serialize + Ord", deserialize = "E: Deserialize<'de> + Ord + Clone"),
    from = "OrSetRepr<E>"
)]
pub struct OrSet<E> {
    entries: BTreeMap<E, BTreeSet<Dot>>,
    ctx: CausalContext,
    #[serde(skip)]
    index: BTreeMap<Dot, E>,
}

/// The shipped form of an [`OrSet`] (same fields, no index).
#[derive(Deserialize)]
#[serde(bound(deserialize = "E: Deserialize<'de> + Ord"))]
struct OrSetRepr<E> {
    entries: BTreeMap<E, BTreeSet<Dot>>,
    ctx: CausalContext,
}

impl<E: Ord + Clone> From<OrSetRepr<E>> for OrSet<E> {
    fn from(r: OrSetRepr<E>) -> Self {
        let mut s = Self { entries: r.entries, ctx: r.ctx, index: BTreeMap::new() };
        s.rebuild_index();
        s
    }
}

impl<E: Ord> Default for OrSet<E> {
    fn default() -> Self {
        Self { entries: BTreeMap::new(), ctx: CausalContext::default(), index: BTreeMap::new() }
    }
}

impl<E: Ord + Clone> OrSet<E> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `e` is in the set.
    pub fn contains(&self, e: &E) -> bool {
        self.entries.contains_key(e)
    }

    /// Rebuilds the dot index; a dot claimed by two elements (only possible in hostile input)
    /// stays with the first.
    fn rebuild_index(&mut self) {
        self.index.clear();
        let mut dup = Vec::new();
        for (e, dots) in &self.entries {
            for d in dots {
                if self.index.contains_key(d) {
                    dup.push((e.clone(), *d));
                } else {
                    self.index.insert(*d, e.clone());
                }
            }
        }
        for (e, d) in dup {
            if let Some(ds) = self.entries.get_mut(&e) {
                ds.remove(&d);
            }
        }
        self.entries.retain(|_, d| !d.is_empty());
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The elements in order.
    pub fn iter(&self) -> impl Iterator<Item = &E> {
        self.entries.keys()
    }

    /// Adds `e` as `actor`; returns the delta (the new dot, and the old dots it supersedes).
    pub fn add(&mut self, actor: Actor, e: E) -> Self {
        let delta = self.add_delta(actor, e);
        self.merge(&delta);
        delta
    }

    /// The delta that adding `e` as `actor` would produce, without applying it.
    pub fn add_delta(&self, actor: Actor, e: E) -> Self {
        let dot = self.ctx.next_dot(actor);
        let mut delta = Self::new();
        if let Some(old) = self.entries.get(&e) {
            for d in old {
                delta.ctx.insert(*d);
            }
        }
        delta.ctx.insert(dot);
        delta.ctx.compact();
        delta.index.insert(dot, e.clone());
        delta.entries.insert(e, BTreeSet::from([dot]));
        delta
    }

    /// Removes `e`; returns the delta, or `None` when `e` was not in the set.
    pub fn remove(&mut self, e: &E) -> Option<Self> {
        let delta = self.remove_delta(e)?;
        self.merge(&delta);
        Some(delta)
    }

    /// The delta that removing `e` would produce (`None` if absent), without applying it.
    pub fn remove_delta(&self, e: &E) -> Option<Self> {
        let dots = self.entries.get(e)?;
        let mut delta = Self::new();
        for d in dots {
            delta.ctx.insert(*d);
        }
        delta.ctx.compact();
        Some(delta)
    }

    /// Number of dots held in the causal context's out-of-order cloud (diagnostics).
    pub fn cloud_len(&self) -> usize {
        self.ctx.cloud.len()
    }

    pub(crate) fn normalize(&mut self) {
        self.entries.retain(|_, d| !d.is_empty());
        self.rebuild_index();
        for dots in self.entries.values() {
            for d in dots {
                self.ctx.insert(*d);
            }
        }
        self.ctx.compact();
    }
}

impl<E: Ord + Clone> Crdt for OrSet<E> {
    fn merge(&mut self, other: &Self) {
        // Our dots that the other side has seen but no longer holds were removed there.
        let mut seen: Vec<Dot> = Vec::new();
        for (&actor, &upto) in &other.ctx.vv {
            seen.extend(self.index.range(Dot { actor, seq: 0 }..=Dot { actor, seq: upto }).map(|(d, _)| *d));
        }
        seen.extend(other.ctx.cloud.iter().filter(|d| self.index.contains_key(d)));
        for d in seen {
            let Some(e) = self.index.get(&d) else {
                continue;
            };
            if other.entries.get(e).is_some_and(|t| t.contains(&d)) {
                continue;
            }
            if let Some(e) = self.index.remove(&d) {
                if let Some(dots) = self.entries.get_mut(&e) {
                    dots.remove(&d);
                    if dots.is_empty() {
                        self.entries.remove(&e);
                    }
                }
            }
        }
        // Their dots come in unless we have seen (and so removed) them.
        for (e, odots) in &other.entries {
            for d in odots {
                if !self.ctx.contains(d) && !self.index.contains_key(d) {
                    self.entries.entry(e.clone()).or_default().insert(*d);
                    self.index.insert(*d, e.clone());
                }
            }
        }
        self.ctx.merge(&other.ctx);
    }
}

// ---------------------------------------------------------------------------------------------
// Maps and profiles

/// A map whose values are CRDTs, merged key by key. Keys are never removed (a profile's fields
/// are a fixed schema); a value can be reset only through its own CRDT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize + Ord, V: Serialize",
    deserialize = "K: Deserialize<'de> + Ord, V: Deserialize<'de>"
))]
pub struct CrdtMap<K, V> {
    entries: BTreeMap<K, V>,
}

impl<K: Ord, V> Default for CrdtMap<K, V> {
    fn default() -> Self {
        Self { entries: BTreeMap::new() }
    }
}

impl<K: Ord + Clone, V: Crdt + Clone> CrdtMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value under `k`.
    pub fn get(&self, k: &K) -> Option<&V> {
        self.entries.get(k)
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Merges the value delta `v` under `k`; returns the map delta.
    pub fn apply(&mut self, k: K, v: V) -> Self {
        match self.entries.get_mut(&k) {
            Some(cur) => cur.merge(&v),
            None => {
                self.entries.insert(k.clone(), v.clone());
            }
        }
        let mut d = Self::new();
        d.entries.insert(k, v);
        d
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.values_mut()
    }
}

impl<K: Ord + Clone, V: Crdt + Clone> Crdt for CrdtMap<K, V> {
    fn merge(&mut self, other: &Self) {
        for (k, v) in &other.entries {
            match self.entries.get_mut(k) {
                Some(cur) => cur.merge(v),
                None => {
                    self.entries.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// A scalar held by an [`LwwRegister`] in a profile or a custom key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scalar {
    /// An integer (rating, level, ...).
    Int(i64),
    /// Short text (title, region preference, ...).
    Text(String),
}

/// One field of a [`Profile`].
///
/// Two replicas that (wrongly) used different kinds for one field still converge: the variant
/// later in this list wins and the other is dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProfileField {
    /// A last-writer-wins scalar (rating, display settings).
    Register(LwwRegister<Scalar>),
    /// A counter (wins, losses, matches played).
    Counter(PnCounter),
    /// A set of ids (achievements, owned items).
    Set(OrSet<u64>),
}

impl ProfileField {
    const fn rank(&self) -> u8 {
        match self {
            Self::Register(_) => 0,
            Self::Counter(_) => 1,
            Self::Set(_) => 2,
        }
    }

    pub(crate) fn normalize(&mut self) {
        match self {
            Self::Register(_) => {}
            Self::Counter(c) => c.normalize(),
            Self::Set(s) => s.normalize(),
        }
    }
}

impl Crdt for ProfileField {
    fn merge(&mut self, other: &Self) {
        match (self, other) {
            (Self::Register(a), Self::Register(b)) => a.merge(b),
            (Self::Counter(a), Self::Counter(b)) => a.merge(b),
            (Self::Set(a), Self::Set(b)) => a.merge(b),
            (me, o) => {
                if o.rank() > me.rank() {
                    *me = o.clone();
                }
            }
        }
    }
}

/// A player profile: named fields, each its own CRDT.
pub type Profile = CrdtMap<String, ProfileField>;

/// Longest profile field name, in bytes.
pub const MAX_FIELD_NAME: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(r: &str, i: u64) -> Actor {
        Actor::new(RegionId::new(r).unwrap(), i)
    }

    #[test]
    fn orset_add_wins_over_concurrent_remove() {
        let (kr, jp) = (actor("kr", 1), actor("jp", 1));
        let mut a = OrSet::new();
        let d = a.add(kr, 7u64);
        let mut b = OrSet::new();
        b.merge(&d);
        let rm = b.remove(&7).unwrap();
        let re_add = a.add(kr, 7);
        let _ = jp;
        a.merge(&rm);
        b.merge(&re_add);
        assert!(a.contains(&7) && b.contains(&7));
        assert_eq!(a, b);
    }

    #[test]
    fn orset_out_of_order_deltas_compact() {
        let kr = actor("kr", 1);
        let mut src = OrSet::new();
        let deltas: Vec<_> = (0..10u64).map(|i| src.add(kr, i)).collect();
        let mut dst = OrSet::new();
        for d in deltas.iter().rev() {
            dst.merge(d);
        }
        assert_eq!(dst, src);
        assert_eq!(dst.cloud_len(), 0);
    }

    #[test]
    fn orset_round_trips_through_postcard_with_its_index() {
        let (kr, jp) = (actor("kr", 1), actor("jp", 2));
        let mut a = OrSet::new();
        for e in 0..20u64 {
            a.add(if e % 2 == 0 { kr } else { jp }, e);
        }
        a.remove(&4);
        let bytes = postcard::to_stdvec(&a).unwrap();
        let mut b: OrSet<u64> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(a, b);
        let rm = a.remove(&6).unwrap();
        b.merge(&rm);
        assert!(!b.contains(&6));
        assert_eq!(a, b);
    }

    #[test]
    fn gcounter_normalize_dedups() {
        let kr = actor("kr", 1);
        let mut g = GCounter { entries: vec![(kr, 3), (kr, 5)] };
        g.normalize();
        assert_eq!(g.value(), 5);
    }
}
