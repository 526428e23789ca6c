//! The final report of a session.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use pvp_core::ids::RegionId;

use crate::replica::ReplicaSummary;

/// One SLO's state at the end.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SloLine {
    /// The SLO.
    pub name: String,
    /// Error budget left (1 = untouched), `None` without data.
    pub budget_remaining: Option<f64>,
    /// Burn-rate alerts firing.
    pub firing: usize,
}

/// One region's figures.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RegionReport {
    /// The region.
    pub region: RegionId,
    /// Matches the matchmaker placed here.
    pub matches_made: u64,
    /// Matches its servers finished.
    pub matches_finished: u64,
    /// Autoscaler scale-ups applied.
    pub scale_up_actions: u64,
    /// Autoscaler scale-downs applied.
    pub scale_down_actions: u64,
    /// Live servers at the end.
    pub servers: u32,
    /// Its replica at the end.
    pub replica: Option<ReplicaSummary>,
    /// p99 sync lag of ops applied here, ms.
    pub sync_lag_p99_ms: Option<u64>,
    /// Its sync node's address.
    pub sync_addr: SocketAddr,
    /// Game-server endpoints the fleet controller started here.
    pub servers_started: u64,
    /// Endpoints it stopped (scaled down, or replaced after they died).
    pub servers_stopped: u64,
    /// Endpoints the chaos engine killed here.
    pub servers_crashed: u64,
}

/// Everything a session measured. `Display` prints the human report.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Report {
    /// How long the session ran (before draining).
    pub duration: Duration,
    /// Bots.
    pub players: u32,
    /// The game-server network driver.
    pub driver: String,
    /// Per-region figures.
    pub regions: Vec<RegionReport>,
    /// Matches formed.
    pub matches_made: u64,
    /// Matches finished with a result.
    pub matches_finished: u64,
    /// Matches whose players came from more than one home region.
    pub cross_region_matches: u64,
    /// Round trip of players in their home region p50, µs: measured at the game server
    /// (snapshot out, the input answering it in), through the bots' link delay, so it is
    /// the latency the players experience.
    pub in_region_rtt_p50_us: Option<u64>,
    /// The same, p99.
    pub in_region_rtt_p99_us: Option<u64>,
    /// Round trip of players placed in another region p50, µs.
    pub cross_region_rtt_p50_us: Option<u64>,
    /// The same, p99.
    pub cross_region_rtt_p99_us: Option<u64>,
    /// Time from a bot's assignment to its netcode session being connected, p50, ms.
    pub connect_p50_ms: Option<u64>,
    /// The same, p99.
    pub connect_p99_ms: Option<u64>,
    /// Time in the matchmaking queue p50, ms.
    pub mm_wait_p50_ms: Option<u64>,
    /// Time in the matchmaking queue p99, ms.
    pub mm_wait_p99_ms: Option<u64>,
    /// Sync lag (write → applied in another region) p50, ms.
    pub sync_lag_p50_ms: Option<u64>,
    /// Sync lag p99, ms.
    pub sync_lag_p99_ms: Option<u64>,
    /// Players placed in a region above their latency limit.
    pub over_latency_limit: u64,
    /// SLO states.
    pub slo: Vec<SloLine>,
    /// Every replica holds the same state, with every finished match's result.
    pub converged: bool,
    /// Results some replica lacks at the end (the most any replica lacks).
    pub lost_results: u64,
    /// Matches lost with crashed servers.
    pub crashed_matches: u64,
    /// Players whose match was lost and who queued again.
    pub players_replaced: u64,
    /// Rating updates applied.
    pub ratings_updated: u64,
    /// Times the top 10 of the leaderboard changed (checked once a second).
    pub leaderboard_moves: u64,
    /// Errors of the service itself: refused tickets, dropped results, replication or
    /// snapshot failures, inputs the failover refused, servers that failed to start. Junk
    /// from outside is never one (see [`dropped_input`](Self::dropped_input)).
    pub errors: u64,
    /// Input dropped as bad: malformed or out-of-range game inputs, sessions whose token named
    /// a seat the server does not host, datagrams on the sync and fleet sockets that were
    /// not ours.
    pub dropped_input: u64,
    /// The latency SLO seen slice by slice (1 s each): slices with data, slices whose in-region
    /// p99 went over 20 ms, and the worst slice's p99 (µs) and its time (s into the session).
    pub latency_slices: (u64, u64, Option<(u64, f64)>),
    /// Of `dropped_input`, by where it was dropped: the lobbies, the game servers (inputs,
    /// seats), the sync and bridge links (refused by their seals), the fleet controller
    /// (heartbeats), other (what bots were sent that was not ours, unknown sync tags, bridge
    /// hellos naming the wrong region), the HTTP front.
    pub dropped_by_place: [u64; 6],
    /// Inputs that arrived after their tick was resolved (the player lagged).
    pub late_inputs: u64,
    /// Lobby sessions held at once, at the peak (all regions; sampled once a second).
    pub lobby_sessions_peak: u64,
    /// Lobby sessions the bots lost and logged in again.
    pub lobby_lost: u64,
    /// Assignments that reached a lobby after their player logged out.
    pub lobby_undelivered: u64,
    /// Sync datagrams opened from peers (each sealed with the pair's key).
    pub sync_links_opened: u64,
    /// Sync datagrams and bridge frames refused: no peer's key, altered, replayed (also in
    /// `dropped_input`).
    pub sync_links_refused: u64,
    /// Tickets outside clients created through the HTTP front.
    pub front_tickets: u64,
    /// Spearman correlation between the bots' hidden skill and their final rating, over
    /// every bot that finished a match.
    pub skill_spearman: Option<f64>,
    /// Bots that could not connect to their server in time.
    pub connect_failures: u64,
    /// Matches dropped because a player never connected.
    pub no_show_matches: u64,
    /// Every running match finished before the session stopped.
    pub drained: bool,
    /// Snapshot files written.
    pub snapshots: Vec<PathBuf>,
    /// [`errors`](Self::errors) by where they happened: regions (replica writes, server
    /// starts), lobby sends, game-server sends, matchmaker results dropped, tickets the
    /// control plane could not place, snapshots, sync writes, failover.
    pub errors_by_place: [u64; 8],
    /// The newest matchmaking leader term this process saw (0: no election; see
    /// [`crate::election`]).
    pub leader_term: u64,
    /// Matches this process's regions refused to host because an older term made them.
    pub fenced_matches: u64,
    /// What the election did here, with the session time: terms led, ended, followed.
    pub election: Vec<(Duration, String)>,
    /// The global wins leaderboard's top 10 at the end (CrossRegionSync), as the first local
    /// region sees it.
    pub leaderboard_top: Vec<(pvp_core::ids::PlayerId, i64)>,
    /// Reconnect offers the failover planner made (players on a region that went Down).
    pub reconnect_offers: u64,
    /// Offers acted on: the player's seat voided, the bot left and queued again (routed to a
    /// serving region).
    pub reconnects_acted: u64,
    /// Bans (STRONG writes) committed by a majority of regions.
    pub bans_committed: u64,
    /// Tickets the matchmaking front refused because the player is banned.
    pub bans_refused_tickets: u64,
    /// Sessions game servers refused (disconnected at connect) because the player is banned.
    pub bans_refused_connects: u64,
    /// Bans whose STRONG commit timed out (cut off from the majority); they stay applied and
    /// spread after the heal.
    pub bans_failed: u64,
}

impl Report {
    /// Matches finished per second of the session.
    pub fn matches_per_sec(&self) -> f64 {
        self.matches_finished as f64 / self.duration.as_secs_f64().max(1e-9)
    }
}

fn ms(v: Option<u64>, div: f64) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{:.2} ms", v as f64 / div))
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "== multi-region report ==")?;
        writeln!(
            f,
            "duration            {:.1} s, {} bots, game transport: {}",
            self.duration.as_secs_f64(),
            self.players,
            self.driver
        )?;
        writeln!(
            f,
            "matches             made {}, finished {} ({:.1}/s), cross-region {}",
            self.matches_made,
            self.matches_finished,
            self.matches_per_sec(),
            self.cross_region_matches
        )?;
        writeln!(
            f,
            "in-region RTT       p50 {}, p99 {} (measured at the servers, through the path)",
            ms(self.in_region_rtt_p50_us, 1000.0),
            ms(self.in_region_rtt_p99_us, 1000.0)
        )?;
        writeln!(
            f,
            "cross-region RTT    p50 {}, p99 {}",
            ms(self.cross_region_rtt_p50_us, 1000.0),
            ms(self.cross_region_rtt_p99_us, 1000.0)
        )?;
        writeln!(
            f,
            "connect time        p50 {}, p99 {} (assignment to netcode session up)",
            ms(self.connect_p50_ms, 1.0),
            ms(self.connect_p99_ms, 1.0)
        )?;
        writeln!(
            f,
            "matchmaking time    p50 {}, p99 {}",
            ms(self.mm_wait_p50_ms, 1.0),
            ms(self.mm_wait_p99_ms, 1.0)
        )?;
        writeln!(
            f,
            "sync lag            p50 {}, p99 {}",
            ms(self.sync_lag_p50_ms, 1.0),
            ms(self.sync_lag_p99_ms, 1.0)
        )?;
        for r in &self.regions {
            writeln!(
                f,
                "region {:<4}         made {}, finished {}, servers {} (started {}, stopped {}, crashed {}), scaling +{} / -{}, sync lag p99 {}, replica {}",
                r.region.to_string(),
                r.matches_made,
                r.matches_finished,
                r.servers,
                r.servers_started,
                r.servers_stopped,
                r.servers_crashed,
                r.scale_up_actions,
                r.scale_down_actions,
                ms(r.sync_lag_p99_ms, 1.0),
                r.replica.map_or_else(
                    || "-".to_string(),
                    |s| format!(
                        "{} results, {} bans, {} players, {} profiles ({} games), {} online, digest {:016x}, unacked {}",
                        s.results, s.bans, s.players, s.profiles, s.profile_games, s.online, s.digest, s.unacked
                    )
                ),
            )?;
        }
        let (total, bad, worst) = self.latency_slices;
        writeln!(
            f,
            "latency slices      {bad} of {total} 1-s slices over 20 ms at p99{}",
            worst.map_or(String::new(), |(us, at)| format!("; worst {:.2} ms at {at:.0} s", us as f64 / 1e3))
        )?;
        for s in &self.slo {
            writeln!(
                f,
                "SLO {:<16} budget left {}, alerts firing {}",
                s.name,
                s.budget_remaining.map_or_else(|| "no data".to_string(), |b| format!("{:.1} %", b * 100.0)),
                s.firing
            )?;
        }
        writeln!(
            f,
            "replicas            {}; lost results {}",
            if self.converged { "converged" } else { "NOT converged" },
            self.lost_results
        )?;
        writeln!(
            f,
            "players             over latency limit {}, ratings updated {}, leaderboard top-10 moves {}, skill/rating Spearman {}",
            self.over_latency_limit,
            self.ratings_updated,
            self.leaderboard_moves,
            self.skill_spearman.map_or_else(|| "-".to_string(), |r| format!("{r:.3}"))
        )?;
        writeln!(
            f,
            "faults              crashed matches {}, players re-placed {}, connect failures {}, no-show matches {}, reconnect offers {} (acted on {})",
            self.crashed_matches,
            self.players_replaced,
            self.connect_failures,
            self.no_show_matches,
            self.reconnect_offers,
            self.reconnects_acted
        )?;
        if !self.leaderboard_top.is_empty() {
            let top: Vec<String> =
                self.leaderboard_top.iter().take(5).map(|(p, w)| format!("{p} {w}")).collect();
            writeln!(f, "leaderboard top 5   {} (wins)", top.join(", "))?;
        }
        writeln!(
            f,
            "bans (STRONG)       committed {}, commit timed out {}; enforced: {} tickets refused, {} sessions refused at connect",
            self.bans_committed, self.bans_failed, self.bans_refused_tickets, self.bans_refused_connects
        )?;
        writeln!(
            f,
            "lobby               sessions held at peak {}, lost {}, assignments undelivered {}",
            self.lobby_sessions_peak, self.lobby_lost, self.lobby_undelivered
        )?;
        writeln!(
            f,
            "sync links          sealed (XChaCha20-Poly1305, a key per region pair): {} opened, {} refused",
            self.sync_links_opened, self.sync_links_refused
        )?;
        writeln!(
            f,
            "errors              {}; dropped input {} (lobby {}, game {}, links {}, fleet {}, other {}, front {}), late inputs {}; drained {}; front tickets {}",
            self.errors,
            self.dropped_input,
            self.dropped_by_place[0],
            self.dropped_by_place[1],
            self.dropped_by_place[2],
            self.dropped_by_place[3],
            self.dropped_by_place[4],
            self.dropped_by_place[5],
            self.late_inputs,
            self.drained,
            self.front_tickets
        )?;
        if self.errors > 0 {
            let e = &self.errors_by_place;
            writeln!(
                f,
                "  errors by place   regions {}, lobby sends {}, game sends {}, matchmaker {}, tickets {}, snapshots {}, sync {}, failover {}",
                e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]
            )?;
        }
        if self.leader_term > 0 {
            writeln!(
                f,
                "election            newest term {}; {} matches of older terms refused",
                self.leader_term, self.fenced_matches
            )?;
            for (at, what) in &self.election {
                writeln!(f, "  [{:>6.1}s] {what}", at.as_secs_f64())?;
            }
        }
        for s in &self.snapshots {
            writeln!(f, "snapshot            {}", s.display())?;
        }
        Ok(())
    }
}

/// Spearman's rank correlation of `x` and `y` (ties share their mean rank); `None` for fewer
/// than two pairs, unequal lengths, or a constant series.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    fn ranks(v: &[f64]) -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            let mean = (i + j) as f64 / 2.0 + 1.0;
            for k in &idx[i..=j] {
                r[*k] = mean;
            }
            i = j + 1;
        }
        r
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let n = rx.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_ranks_with_ties() {
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), Some(1.0));
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        // Monotone but not linear: still 1.
        assert_eq!(spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 8.0, 27.0, 64.0]), Some(1.0));
        let r = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!((r - 0.9487).abs() < 1e-3, "{r}");
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), None);
        assert_eq!(spearman(&[1.0], &[1.0]), None);
        assert_eq!(spearman(&[1.0, 2.0], &[1.0]), None);
    }

    #[test]
    fn an_empty_run_formats_without_figures() {
        let r = Report {
            duration: Duration::ZERO,
            players: 0,
            driver: "epoll".into(),
            regions: Vec::new(),
            matches_made: 0,
            matches_finished: 0,
            cross_region_matches: 0,
            in_region_rtt_p50_us: None,
            in_region_rtt_p99_us: None,
            cross_region_rtt_p50_us: None,
            cross_region_rtt_p99_us: None,
            connect_p50_ms: None,
            connect_p99_ms: None,
            mm_wait_p50_ms: None,
            mm_wait_p99_ms: None,
            sync_lag_p50_ms: None,
            sync_lag_p99_ms: None,
            over_latency_limit: 0,
            slo: vec![SloLine { name: "availability".into(), budget_remaining: None, firing: 0 }],
            converged: true,
            lost_results: 0,
            crashed_matches: 0,
            players_replaced: 0,
            ratings_updated: 0,
            leaderboard_moves: 0,
            errors: 0,
            dropped_input: 0,
            late_inputs: 0,
            dropped_by_place: [0; 6],
            latency_slices: (0, 0, None),
            lobby_sessions_peak: 0,
            lobby_lost: 0,
            lobby_undelivered: 0,
            sync_links_opened: 0,
            sync_links_refused: 0,
            front_tickets: 0,
            skill_spearman: None,
            connect_failures: 0,
            no_show_matches: 0,
            drained: true,
            snapshots: Vec::new(),
            errors_by_place: [0; 8],
            leader_term: 0,
            fenced_matches: 0,
            election: Vec::new(),
            leaderboard_top: Vec::new(),
            reconnect_offers: 0,
            reconnects_acted: 0,
            bans_committed: 0,
            bans_refused_tickets: 0,
            bans_refused_connects: 0,
            bans_failed: 0,
        };
        assert_eq!(r.matches_per_sec(), 0.0);
        let text = r.to_string();
        assert!(text.contains("made 0, finished 0 (0.0/s)"), "{text}");
        assert!(text.contains("in-region RTT       p50 -, p99 -"), "{text}");
        assert!(text.contains("budget left no data"), "{text}");
        assert!(
            !text.contains("NaN") && !text.contains("inf") && !text.contains("leaderboard top 5"),
            "{text}"
        );
    }
}
