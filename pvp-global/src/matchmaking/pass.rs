//! One matchmaking pass: every queued ticket becomes a [`Candidate`] (window, latency limit
//! and accepted regions at `now`), candidates are sorted by queue and rating, and a sweep in
//! rating order forms each match from a ticket and its nearest feasible neighbours: teams
//! balanced, region chosen by the objective, a server allocated, every handle completed.

use std::sync::Arc;
use std::time::Duration;

use pvp_core::ids::{MatchId, PlayerId};

use super::handle::{MatchError, Slot};
use super::request::{MAX_MATCH_PLAYERS, MAX_PARTY_SIZE, MAX_REGIONS};
use super::result::{MatchResult, MatchedPlayer};
use super::{GlobalMatchmaking, MatchmakingConfig, RegionObjective, TickReport};
use crate::cluster::AllocatedServer;

/// A queued request. `repr(C)` keeps what forming a match reads (the first 88 bytes) ahead of
/// the party list, so the pass prefetches two cache lines per ticket.
#[derive(Debug)]
#[repr(C)]
pub(super) struct Ticket {
    pub(super) slot: Arc<Slot>,
    pub(super) player: PlayerId,
    pub(super) rating: f64,
    pub(super) leader_rating: f64,
    pub(super) enqueued: Duration,
    pub(super) lat_us: [u32; MAX_REGIONS],
    pub(super) max_lat_us: u32,
    pub(super) ceiling_us: u32,
    pub(super) size: u8,
    pub(super) mode: u8,
    pub(super) home: u8,
    pub(super) party_len: u8,
    pub(super) party: [(PlayerId, f64); MAX_PARTY_SIZE],
}

/// Bytes at the front of a [`Ticket`] that forming a match reads.
pub(super) const TICKET_HOT_BYTES: usize = std::mem::offset_of!(Ticket, party);

/// A queued ticket as one pass sees it: where it queues, its rating and current window, the
/// regions it accepts now. 32 bytes, sorted and walked in rating order.
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate {
    /// The queue it waits in.
    pub(super) queue: QueueKey,
    /// Mean rating of the ticket's players.
    pub(super) rating: f64,
    /// Its skill window now.
    pub(super) window: f64,
    /// Its index in the ticket slab.
    pub(super) idx: u32,
    /// Regions it accepts now (bit per region index).
    pub(super) mask: u8,
    /// Players on the ticket.
    pub(super) size: u8,
    /// Matched, cancelled or unplaceable in this pass.
    pub(super) used: bool,
}

/// The queue a ticket waits in: its game mode and, when cross-region matching is off, its
/// home region. Tickets of different queues never meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct QueueKey(u16);

impl QueueKey {
    /// The queue of game mode index `mode`, for home region index `home` when queues are per
    /// region.
    pub(super) fn new(mode: u8, home: Option<u8>) -> Self {
        Self(u16::from(mode) << 8 | u16::from(home.map_or(0, |h| h + 1)))
    }

    /// The index of its game mode in [`MatchmakingConfig::modes`](super::MatchmakingConfig::modes).
    pub(super) fn mode(self) -> usize {
        usize::from(self.0 >> 8)
    }
}

/// How windows widen with waiting time (the scalar part of the config, copied per pass).
#[derive(Debug, Clone, Copy)]
pub(super) struct Expansion {
    window: f64,
    step: f64,
    max: f64,
    interval_ns: u128,
    latency_step_us: u32,
}

impl Expansion {
    pub(super) fn of(cfg: &MatchmakingConfig) -> Self {
        Self {
            window: cfg.skill_window,
            step: cfg.skill_window_step,
            max: cfg.skill_window_max,
            interval_ns: cfg.expansion_interval.as_nanos().max(1),
            latency_step_us: dur_us(cfg.latency_step),
        }
    }

    /// A ticket's skill window and latency limit (µs) at `now`.
    pub(super) fn at(&self, t: &Ticket, now: Duration) -> (f64, u32) {
        let waited = now.saturating_sub(t.enqueued);
        let steps = (waited.as_nanos() / self.interval_ns).min(u128::from(u32::MAX)) as u32;
        let window = (self.window + f64::from(steps) * self.step).min(self.max.max(self.window));
        let limit = t
            .max_lat_us
            .saturating_add(self.latency_step_us.saturating_mul(steps))
            .min(t.ceiling_us.max(t.max_lat_us));
        (window, limit)
    }
}

pub(super) fn dur_us(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX - 1)) as u32
}

/// Sorts candidates by queue, then rating, then ticket index: the order the sweep walks.
///
/// A comparison sort of 100,000 candidates was the largest part of the pass besides forming
/// matches (see BENCHMARKS.md, "matchmaking pass"). Instead: a stable split into one run per
/// queue, then a bucket sort of each run on its ratings (about one bucket per candidate, spread
/// over the run's rating range, then each small bucket sorted on its own). Candidates arrive in
/// index order and every step keeps it for ties, so the order is exactly that of sorting by
/// `(queue, rating.total_cmp, idx)`, whatever the ratings.
pub(super) fn sort_candidates(cands: &mut [Candidate], scratch: &mut SortScratch) {
    let by_key = |c: &Candidate| (c.queue, total_order(c.rating), c.idx);
    if cands.len() < 64 {
        cands.sort_unstable_by_key(by_key);
        return;
    }
    // Runs per queue. Queues are few (modes x regions at most); past 64 distinct ones a
    // stable sort by queue does the split.
    let first = cands[0].queue;
    if cands.iter().any(|c| c.queue != first) {
        cands.sort_by_key(|c| c.queue);
    }
    let mut start = 0;
    while start < cands.len() {
        let queue = cands[start].queue;
        let len = cands[start..].iter().position(|c| c.queue != queue).unwrap_or(cands.len() - start);
        bucket_sort(&mut cands[start..start + len], scratch, by_key);
        start += len;
    }
}

/// Buffers [`sort_candidates`] reuses from pass to pass.
#[derive(Debug, Default)]
pub(super) struct SortScratch {
    out: Vec<Candidate>,
    starts: Vec<u32>,
}

/// Sorts one queue's run by rating (then index) with about one bucket per candidate.
fn bucket_sort<K: Ord>(
    run: &mut [Candidate],
    scratch: &mut SortScratch,
    by_key: impl Fn(&Candidate) -> K + Copy,
) {
    let (lo, hi) = run
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), c| (lo.min(c.rating), hi.max(c.rating)));
    let span = hi - lo;
    if !(span.is_finite() && span > 0.0) {
        // One rating for all, or a range too wide to divide: a plain sort.
        run.sort_unstable_by_key(by_key);
        return;
    }
    let buckets = run.len();
    let scale = buckets as f64 / span;
    let bucket = |c: &Candidate| (((c.rating - lo) * scale) as usize).min(buckets - 1);
    let starts = &mut scratch.starts;
    starts.clear();
    starts.resize(buckets + 1, 0);
    for c in run.iter() {
        starts[bucket(c) + 1] += 1;
    }
    for b in 0..buckets {
        starts[b + 1] += starts[b];
    }
    let out = &mut scratch.out;
    out.clear();
    out.extend_from_slice(run);
    for c in out.iter() {
        let b = bucket(c);
        run[starts[b] as usize] = *c;
        starts[b] += 1;
    }
    // `starts[b]` is now the end of bucket b, the start of bucket b + 1.
    let mut begin = 0;
    for &end in &starts[..buckets] {
        let end = end as usize;
        if end - begin > 1 {
            run[begin..end].sort_unstable_by_key(by_key);
        }
        begin = end;
    }
}

/// `f64::total_cmp`'s order as an integer key.
fn total_order(x: f64) -> u64 {
    let bits = x.to_bits();
    // Negative numbers: flip every bit; positive ones: flip the sign bit.
    if bits >> 63 == 1 { !bits } else { bits | 1 << 63 }
}

impl GlobalMatchmaking {
    pub(super) fn build_candidates(&mut self, now: Duration, report: &mut TickReport) {
        let exp = Expansion::of(&self.config);
        let (cross_region, queue_timeout) = (self.config.cross_region, self.config.queue_timeout);
        let n_regions = self.regions.len();
        let mut cands = std::mem::take(&mut self.cands);
        cands.clear();
        let mut expired = 0u32;
        for idx in 0..self.tickets.len() {
            // A ticket cancelled through its handle since the inbox drained fails its claim
            // below; not reading its slot here spares the pass a cache miss per ticket.
            let Some(t) = &self.tickets[idx] else {
                continue;
            };
            let waited = now.saturating_sub(t.enqueued);
            if queue_timeout.is_some_and(|limit| waited > limit) {
                if t.slot.fail(MatchError::TimedOut) {
                    expired += 1;
                    self.remove_ticket(idx as u32);
                }
                continue;
            }
            let (window, limit) = exp.at(t, now);
            let mut mask = 0u8;
            for r in 0..n_regions {
                let allowed = cross_region || r == usize::from(t.home);
                if allowed && self.available[r] && t.lat_us[r] <= limit {
                    mask |= 1 << r;
                }
            }
            let queue = QueueKey::new(t.mode, (!cross_region).then_some(t.home));
            cands.push(Candidate {
                queue,
                rating: t.rating,
                window,
                idx: idx as u32,
                mask,
                size: t.size,
                used: mask == 0,
            });
        }
        sort_candidates(&mut cands, &mut self.sort_scratch);
        report.tickets = cands.len() as u32;
        report.timed_out = expired;
        self.stats.timed_out += u64::from(expired);
        self.cands = cands;
    }

    pub(super) fn sweep(&mut self, now: Duration, report: &mut TickReport) {
        let mut cands = std::mem::take(&mut self.cands);
        let mut group = std::mem::take(&mut self.group);
        let lookahead = self.config.lookahead.max(1);
        let n = cands.len();
        for a in 0..n {
            // Tickets are visited in rating order, random in memory: fetch the ticket 16
            // candidates ahead, and the handle slot of the one 8 ahead (its ticket is cached
            // by now), so forming a match rarely waits on memory.
            if let Some(c) = cands.get(a + 16) {
                let t = self.tickets.as_ptr().wrapping_add(c.idx as usize).cast::<u8>();
                // The hot bytes span at most two cache lines: the first and the last byte's.
                crate::sys::prefetch(t);
                crate::sys::prefetch(t.wrapping_add(TICKET_HOT_BYTES - 1));
            }
            if let Some(Some(t)) = cands.get(a + 8).and_then(|c| self.tickets.get(c.idx as usize)) {
                crate::sys::prefetch(Arc::as_ptr(&t.slot));
            }
            if cands[a].used {
                continue;
            }
            let head = cands[a];
            let Some(mode) = self.config.modes.get(head.queue.mode()) else {
                continue;
            };
            let need = mode.players();
            group.clear();
            group.push(a);
            let mut total = usize::from(head.size);
            let mut mask = head.mask;
            let mut window = head.window;
            let end = (a + 1).saturating_add(lookahead).min(n);
            for (b, c) in cands.iter().enumerate().take(end).skip(a + 1) {
                if total == need {
                    break;
                }
                if c.queue != head.queue || c.rating - head.rating > window {
                    break;
                }
                if c.used || c.rating - head.rating > c.window || total + usize::from(c.size) > need {
                    continue;
                }
                let m = mask & c.mask;
                if m == 0 {
                    continue;
                }
                group.push(b);
                total += usize::from(c.size);
                mask = m;
                window = window.min(c.window);
            }
            if total != need {
                continue;
            }
            if self.form_match(&mut cands, &group, mask, mode.team_size, mode.teams, now) {
                report.matches += 1;
                report.matched_players += need as u32;
            }
        }
        self.group = group;
        self.cands = cands;
    }

    /// Balances, claims, places and delivers one match; false (nothing changed but `used`
    /// marks of cancelled tickets) when it cannot be formed.
    pub(super) fn form_match(
        &mut self,
        cands: &mut [Candidate],
        group: &[usize],
        mask: u8,
        team_size: u8,
        teams: u8,
        now: Duration,
    ) -> bool {
        let Some(team_of) = Self::balance(cands, group, team_size, teams) else {
            return false;
        };
        // Claim every member: a ticket cancelled through its handle fails the claim.
        for (k, &ci) in group.iter().enumerate() {
            let claimed = self.tickets[cands[ci].idx as usize].as_ref().is_some_and(|t| t.slot.claim());
            if !claimed {
                cands[ci].used = true;
                for &cj in &group[..k] {
                    if let Some(t) = &self.tickets[cands[cj].idx as usize] {
                        t.slot.unclaim();
                    }
                }
                return false;
            }
        }
        let Some((region, server, match_id)) = self.place(cands, group, mask, now) else {
            for &ci in group {
                if let Some(t) = &self.tickets[cands[ci].idx as usize] {
                    t.slot.unclaim();
                }
            }
            self.stats.no_capacity += 1;
            return false;
        };
        let mut result = MatchResult::new(
            match_id,
            self.config.modes[cands[group[0]].queue.mode()].id,
            self.regions[region].region(),
            server,
            now,
            now.saturating_add(self.config.grant_ttl),
            false,
        );
        for (k, &ci) in group.iter().enumerate() {
            let Some(t) = &self.tickets[cands[ci].idx as usize] else {
                continue;
            };
            let lat = Duration::from_micros(u64::from(t.lat_us[region]));
            let waited = now.saturating_sub(t.enqueued);
            let team = team_of[k];
            result.push(MatchedPlayer::new(t.player, team, t.leader_rating, lat, waited));
            for (p, r) in &t.party[..usize::from(t.party_len)] {
                result.push(MatchedPlayer::new(*p, team, *r, lat, waited));
            }
        }
        for &ci in group {
            cands[ci].used = true;
            let idx = cands[ci].idx;
            if let Some(t) = &self.tickets[idx as usize] {
                t.slot.deliver(Ok(result.clone()));
            }
            self.remove_ticket(idx);
        }
        self.stats.matches += 1;
        self.stats.matched_players += u64::from(result.len);
        self.push_result(result);
        true
    }

    /// Picks the region by the objective (ties: more members preferring it, then more free
    /// slots) and allocates a server there.
    fn place(
        &mut self,
        cands: &[Candidate],
        group: &[usize],
        mask: u8,
        _now: Duration,
    ) -> Option<(usize, AllocatedServer, MatchId)> {
        let players: u32 = group.iter().map(|&ci| u32::from(cands[ci].size)).sum();
        let mut best: Option<(u64, u32, u64, usize)> = None;
        for r in 0..self.regions.len() {
            if mask & (1 << r) == 0 || !self.regions[r].can_fit(players) {
                continue;
            }
            let mut lats = [0u32; MAX_MATCH_PLAYERS];
            let mut n = 0;
            let mut prefer = 0u32;
            for &ci in group {
                let Some(t) = &self.tickets[cands[ci].idx as usize] else {
                    continue;
                };
                for _ in 0..t.size {
                    if let Some(l) = lats.get_mut(n) {
                        *l = t.lat_us[r];
                        n += 1;
                    }
                }
                if usize::from(t.home) == r {
                    prefer += u32::from(t.size);
                }
            }
            let lats = &mut lats[..n];
            let score = match self.config.objective {
                RegionObjective::MinMax => u64::from(lats.iter().copied().max().unwrap_or(0)),
                RegionObjective::Average => lats.iter().map(|&l| u64::from(l)).sum::<u64>() / n.max(1) as u64,
                RegionObjective::Percentile(p) => {
                    lats.sort_unstable();
                    let p = usize::from(p.clamp(1, 100));
                    let rank = (p * n).div_ceil(100).max(1) - 1;
                    u64::from(lats.get(rank).copied().unwrap_or(0))
                }
            };
            let free = self.regions[r].free_slots();
            let better = match best {
                None => true,
                Some((s, pr, f, _)) => {
                    (score, std::cmp::Reverse(prefer), std::cmp::Reverse(free))
                        < (s, std::cmp::Reverse(pr), std::cmp::Reverse(f))
                }
            };
            if better {
                best = Some((score, prefer, free, r));
            }
        }
        let (_, _, _, region) = best?;
        let match_id = MatchId::new(self.config.match_id_base.wrapping_add(self.next_match));
        let lat_sum: u64 = group
            .iter()
            .filter_map(|&ci| self.tickets[cands[ci].idx as usize].as_ref())
            .map(|t| u64::from(t.lat_us[region]) * u64::from(t.size))
            .sum();
        let server =
            self.regions[region].allocate(match_id, players, Duration::from_micros(lat_sum), _now).ok()?;
        self.next_match += 1;
        Some((region, server, match_id))
    }

    /// Splits the group's tickets into teams (parties whole), balancing rating sums.
    /// Returns each group member's team.
    fn balance(
        cands: &[Candidate],
        group: &[usize],
        team_size: u8,
        teams: u8,
    ) -> Option<[u8; MAX_MATCH_PLAYERS]> {
        let mut team_of = [0u8; MAX_MATCH_PLAYERS];
        let n = group.len();
        let mut sizes = [0u8; MAX_MATCH_PLAYERS];
        let mut sums = [0f64; MAX_MATCH_PLAYERS];
        for (k, &ci) in group.iter().enumerate() {
            sizes[k] = cands[ci].size;
            sums[k] = cands[ci].rating * f64::from(cands[ci].size);
        }
        if n == 2 && teams == 2 {
            // Two units filling two teams exactly (a duel, or two full parties).
            team_of[1] = 1;
            return (sizes[0] == team_size && sizes[1] == team_size).then_some(team_of);
        }
        if teams == 2 && n <= 12 {
            // Exhaustive: member 0 on team 0; every subset of the others filling team 0.
            let total: f64 = sums[..n].iter().sum();
            let mut best: Option<(f64, u32)> = None;
            for subset in 0u32..(1 << (n - 1)) {
                let set = subset << 1 | 1;
                let mut size = 0u32;
                let mut sum = 0.0;
                for k in 0..n {
                    if set & (1 << k) != 0 {
                        size += u32::from(sizes[k]);
                        sum += sums[k];
                    }
                }
                if size != u32::from(team_size) {
                    continue;
                }
                let diff = (total - 2.0 * sum).abs();
                if best.is_none_or(|(d, _)| diff < d) {
                    best = Some((diff, set));
                }
            }
            let (_, set) = best?;
            for (k, t) in team_of.iter_mut().enumerate().take(n) {
                *t = u8::from(set & (1 << k) == 0);
            }
            return Some(team_of);
        }
        // Greedy: largest units first, each to the team with the lowest sum that has room.
        let mut order = [0usize; MAX_MATCH_PLAYERS];
        for (k, o) in order.iter_mut().enumerate().take(n) {
            *o = k;
        }
        order[..n].sort_unstable_by(|&x, &y| sizes[y].cmp(&sizes[x]).then(sums[y].total_cmp(&sums[x])));
        let mut fill = [0u8; MAX_MATCH_PLAYERS];
        let mut tsum = [0f64; MAX_MATCH_PLAYERS];
        for &k in &order[..n] {
            let t = (0..usize::from(teams))
                .filter(|&t| fill[t] + sizes[k] <= team_size)
                .min_by(|&x, &y| tsum[x].total_cmp(&tsum[y]))?;
            fill[t] += sizes[k];
            tsum[t] += sums[k];
            team_of[k] = t as u8;
        }
        Some(team_of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(queue: QueueKey, rating: f64, idx: u32) -> Candidate {
        Candidate { queue, rating, window: 0.0, idx, mask: 1, size: 1, used: false }
    }

    /// The bucket sort gives exactly the comparison sort's order, on spread, clustered,
    /// equal, signed-zero and huge ratings, over one queue and several.
    #[test]
    fn sort_matches_the_comparison_order() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let shapes: [fn(u64) -> f64; 5] = [
            |r| 900.0 + (r % 1_200) as f64 + (r % 7) as f64 / 7.0,
            |r| 1_500.0 + (r % 3) as f64,
            |_| 1_234.5,
            |r| if r % 2 == 0 { 0.0 } else { -0.0 },
            |r| if r % 5 == 0 { f64::MAX } else { (r % 100) as f64 },
        ];
        let mut scratch = SortScratch::default();
        for shape in shapes {
            for queues in [1u8, 3] {
                for n in [0usize, 1, 63, 64, 65, 1_000, 5_000] {
                    let mut cands: Vec<Candidate> = (0..n as u32)
                        .map(|i| {
                            let r = next();
                            cand(QueueKey::new((r % u64::from(queues)) as u8, None), shape(r >> 8), i)
                        })
                        .collect();
                    let mut want = cands.clone();
                    want.sort_unstable_by(|a, b| {
                        a.queue.cmp(&b.queue).then(a.rating.total_cmp(&b.rating)).then(a.idx.cmp(&b.idx))
                    });
                    sort_candidates(&mut cands, &mut scratch);
                    let ids = |v: &[Candidate]| v.iter().map(|c| c.idx).collect::<Vec<_>>();
                    assert_eq!(ids(&cands), ids(&want), "n {n}, {queues} queues");
                }
            }
        }
    }

    #[test]
    fn queue_keys_name_their_mode() {
        assert_eq!(QueueKey::new(3, None).mode(), 3);
        assert_eq!(QueueKey::new(3, Some(7)).mode(), 3);
        assert_ne!(QueueKey::new(3, Some(0)), QueueKey::new(3, None));
        assert!(QueueKey::new(1, Some(7)) < QueueKey::new(2, None));
    }
}
