//! What the matchmaker counts: refusals by reason, totals, and what one pass did.

use super::request::RequestError;

/// Refused requests, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejections {
    /// NaN, infinite or negative ratings.
    pub invalid_rating: u64,
    /// Unknown regions.
    pub unknown_region: u64,
    /// Zero latency limit or a ceiling below it.
    pub bad_latency_limit: u64,
    /// Unknown game modes.
    pub unknown_mode: u64,
    /// Players already queued (or twice in a party).
    pub already_queued: u64,
    /// Parties larger than a team.
    pub party_too_large: u64,
    /// Too many region latencies.
    pub too_many_latencies: u64,
    /// Full queue.
    pub queue_full: u64,
    /// Bad backfill requests.
    pub bad_backfill: u64,
}

/// Matchmaker counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MatchmakingStats {
    /// Players queued now.
    pub queued_players: u64,
    /// Tickets accepted.
    pub accepted: u64,
    /// Refused requests.
    pub rejected: Rejections,
    /// Matches formed.
    pub matches: u64,
    /// Players placed in new matches.
    pub matched_players: u64,
    /// Players placed by backfill.
    pub backfilled_players: u64,
    /// Tickets (and backfill requests) cancelled.
    pub cancelled: u64,
    /// Tickets timed out.
    pub timed_out: u64,
    /// Groups that found no region with room.
    pub no_capacity: u64,
    /// Results dropped because the driver did not poll.
    pub results_dropped: u64,
    /// Passes run.
    pub passes: u64,
}

/// What one [`GlobalMatchmaking::tick`](super::GlobalMatchmaking::tick) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TickReport {
    /// Tickets considered.
    pub tickets: u32,
    /// Matches formed.
    pub matches: u32,
    /// Players placed in new matches.
    pub matched_players: u32,
    /// Players placed by backfill.
    pub backfilled_players: u32,
    /// Tickets timed out.
    pub timed_out: u32,
    /// Tickets (and backfill requests) removed after cancellation through their handles.
    pub cancelled: u32,
}

impl Rejections {
    /// Counts a refused request under its reason, in these counters and in the metric
    /// `pvp_global_mm_rejected_total{reason}`.
    pub(super) fn count(&mut self, err: &RequestError) {
        let r = self;
        let reason = match err {
            RequestError::InvalidRating { .. } => {
                r.invalid_rating += 1;
                "invalid_rating"
            }
            RequestError::UnknownRegion(_) => {
                r.unknown_region += 1;
                "unknown_region"
            }
            RequestError::ZeroMaxLatency | RequestError::CeilingBelowLimit { .. } => {
                r.bad_latency_limit += 1;
                "bad_latency_limit"
            }
            RequestError::UnknownMode(_) => {
                r.unknown_mode += 1;
                "unknown_mode"
            }
            RequestError::AlreadyQueued(_) | RequestError::DuplicatePartyMember(_) => {
                r.already_queued += 1;
                "already_queued"
            }
            RequestError::PartyTooLarge { .. } => {
                r.party_too_large += 1;
                "party_too_large"
            }
            RequestError::TooManyLatencies => {
                r.too_many_latencies += 1;
                "too_many_latencies"
            }
            RequestError::QueueFull(_) => {
                r.queue_full += 1;
                "queue_full"
            }
            RequestError::UnknownMatch | RequestError::BadBackfill => {
                r.bad_backfill += 1;
                "bad_backfill"
            }
        };
        metrics::counter!("pvp_global_mm_rejected_total", "reason" => reason).increment(1);
    }
}
