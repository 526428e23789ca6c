//! Backfill: filling the open slots of a running match from the queue, ticket by ticket, each
//! within its window of the match's rating and able to reach the match's region.

use std::sync::Arc;
use std::time::Duration;

use pvp_core::ids::{MatchId, RegionId};

use super::handle::{MatchError, MatchHandle, Slot};
use super::pass::QueueKey;
use super::request::{GameModeId, RequestError};
use super::result::{MatchResult, MatchedPlayer};
use super::{GlobalMatchmaking, TickReport};

/// A request to fill open slots of a running match.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackfillRequest {
    /// The running match.
    pub match_id: MatchId,
    /// Its region.
    pub region: RegionId,
    /// Its mode.
    pub mode: GameModeId,
    /// The team with open slots.
    pub team: u8,
    /// Open slots on that team.
    pub slots: u8,
    /// The match's mean rating: newcomers must be within their window of it.
    pub rating: f64,
}

#[derive(Debug)]
pub(super) struct Backfill {
    req: BackfillRequest,
    mode: u8,
    region: u8,
    remaining: u8,
    pub(super) slot: Arc<Slot>,
    result: MatchResult,
}

impl GlobalMatchmaking {
    /// Asks to fill `slots` open places of `team` in a running match placed by this
    /// matchmaker. Each tick places fitting queued tickets; the returned handle completes,
    /// with every newcomer listed, once all slots are filled, or with
    /// [`MatchError::Cancelled`] if the match ends first.
    pub fn backfill(&mut self, req: BackfillRequest, _now: Duration) -> Result<MatchHandle, RequestError> {
        let checked = (|| {
            let mode = self.mode_index(req.mode)?;
            let region = self.region_index(req.region).ok_or(RequestError::UnknownRegion(req.region))?;
            let m = &self.config.modes[mode];
            if req.slots == 0 || req.slots > m.team_size || req.team >= m.teams {
                return Err(RequestError::BadBackfill);
            }
            if !req.rating.is_finite() || req.rating < 0.0 {
                return Err(RequestError::BadBackfill);
            }
            let server = self.regions[region].match_server(req.match_id).ok_or(RequestError::UnknownMatch)?;
            Ok((mode, region, server))
        })();
        let (mode, region, server) = match checked {
            Ok(v) => v,
            Err(e) => return Err(self.reject(e)),
        };
        let slot = Slot::new();
        let expires = _now.saturating_add(self.config.grant_ttl);
        let result = MatchResult::new(req.match_id, req.mode, req.region, server, _now, expires, true);
        self.backfills.push(Backfill {
            req,
            mode: mode as u8,
            region: region as u8,
            remaining: req.slots,
            slot: slot.clone(),
            result,
        });
        Ok(MatchHandle::new_backfill(slot, self.cancels.clone()))
    }

    pub(super) fn run_backfills(&mut self, now: Duration, report: &mut TickReport) {
        if self.backfills.is_empty() {
            return;
        }
        let mut backfills = std::mem::take(&mut self.backfills);
        let mut cands = std::mem::take(&mut self.cands);
        for bf in &mut backfills {
            if self.regions[usize::from(bf.region)].match_server(bf.req.match_id).is_none() {
                // The match ended (or its server was lost): nothing left to fill.
                bf.slot.fail(MatchError::Cancelled);
                continue;
            }
            let queue = QueueKey::new(bf.mode, (!self.config.cross_region).then_some(bf.region));
            // The widest window any ticket can have (`skill_window` wins over a smaller max).
            let widest = self.config.skill_window_max.max(self.config.skill_window);
            let lo_rating = bf.req.rating - widest;
            let start = cands.partition_point(|c| (c.queue, c.rating) < (queue, lo_rating));
            let end = start.saturating_add(self.config.lookahead.max(1).saturating_mul(4)).min(cands.len());
            for cand in &mut cands[start..end] {
                if bf.remaining == 0 {
                    break;
                }
                let c = *cand;
                if c.queue != queue || c.rating > bf.req.rating + widest {
                    break;
                }
                if c.used || c.size > bf.remaining || c.mask & (1 << bf.region) == 0 {
                    continue;
                }
                if (c.rating - bf.req.rating).abs() > c.window {
                    continue;
                }
                let Some(t) = self.tickets[c.idx as usize].as_ref() else {
                    continue;
                };
                let lat = t.lat_us[usize::from(bf.region)];
                let lat_sum = Duration::from_micros(u64::from(lat) * u64::from(t.size));
                if !t.slot.claim() {
                    cand.used = true;
                    continue;
                }
                let (slot, player, leader_rating, party, party_len, enqueued) =
                    (t.slot.clone(), t.player, t.leader_rating, t.party, t.party_len, t.enqueued);
                if self.regions[usize::from(bf.region)]
                    .add_players(bf.req.match_id, u32::from(c.size), lat_sum)
                    .is_err()
                {
                    slot.unclaim();
                    continue;
                }
                let mut own = MatchResult::new(
                    bf.req.match_id,
                    bf.req.mode,
                    bf.req.region,
                    bf.result.server,
                    now,
                    now.saturating_add(self.config.grant_ttl),
                    true,
                );
                let waited = now.saturating_sub(enqueued);
                let lat_d = Duration::from_micros(u64::from(lat));
                let mut add = |p: MatchedPlayer| {
                    own.push(p);
                    bf.result.push(p);
                };
                add(MatchedPlayer::new(player, bf.req.team, leader_rating, lat_d, waited));
                for (p, r) in &party[..usize::from(party_len)] {
                    add(MatchedPlayer::new(*p, bf.req.team, *r, lat_d, waited));
                }
                slot.deliver(Ok(own.clone()));
                self.push_result(own);
                bf.remaining -= c.size;
                cand.used = true;
                report.backfilled_players += u32::from(c.size);
                self.stats.backfilled_players += u64::from(c.size);
                self.remove_ticket(c.idx);
            }
            if bf.remaining == 0 && bf.slot.claim() {
                bf.slot.deliver(Ok(bf.result.clone()));
            }
        }
        backfills.retain(|b| b.remaining > 0 && b.slot.is_queued());
        self.backfills = backfills;
        self.cands = cands;
    }
}
