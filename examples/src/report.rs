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
    /// Where its game servers listened.
    pub game_addr: SocketAddr,
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
    /// Network RTT (loopback, measured per tick) p50, µs.
    pub net_rtt_p50_us: Option<u64>,
    /// Network RTT p99, µs.
    pub net_rtt_p99_us: Option<u64>,
    /// Player RTT (latency profile + measured) p50, µs.
    pub player_rtt_p50_us: Option<u64>,
    /// Player RTT p99, µs.
    pub player_rtt_p99_us: Option<u64>,
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
    /// Errors: malformed datagrams, refused tokens, refused tickets, dropped results,
    /// replication or snapshot failures, inputs the failover refused, datagrams the game
    /// servers could not queue.
    pub errors: u64,
    /// Bots that could not connect to their server in time.
    pub connect_failures: u64,
    /// Matches dropped because a player never connected.
    pub no_show_matches: u64,
    /// Every running match finished before the session stopped.
    pub drained: bool,
    /// Snapshot files written.
    pub snapshots: Vec<PathBuf>,
    /// The global wins leaderboard's top 10 at the end (CrossRegionSync), as the first local
    /// region sees it.
    pub leaderboard_top: Vec<(pvp_core::ids::PlayerId, i64)>,
    /// Reconnect offers the failover planner made (players on a region that went Down).
    pub reconnect_offers: u64,
    /// Bans (STRONG writes) committed by a majority of regions.
    pub bans_committed: u64,
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
            "network RTT         p50 {}, p99 {}",
            ms(self.net_rtt_p50_us, 1000.0),
            ms(self.net_rtt_p99_us, 1000.0)
        )?;
        writeln!(
            f,
            "player RTT          p50 {}, p99 {} (latency profile + network)",
            ms(self.player_rtt_p50_us, 1000.0),
            ms(self.player_rtt_p99_us, 1000.0)
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
                "region {:<4}         made {}, finished {}, servers {}, scaling +{} / -{}, sync lag p99 {}, replica {}",
                r.region.to_string(),
                r.matches_made,
                r.matches_finished,
                r.servers,
                r.scale_up_actions,
                r.scale_down_actions,
                ms(r.sync_lag_p99_ms, 1.0),
                r.replica.map_or_else(
                    || "-".to_string(),
                    |s| format!(
                        "{} results, {} bans, {} players, digest {:016x}",
                        s.results, s.bans, s.players, s.digest
                    )
                ),
            )?;
        }
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
            "players             over latency limit {}, ratings updated {}, leaderboard top-10 moves {}",
            self.over_latency_limit, self.ratings_updated, self.leaderboard_moves
        )?;
        writeln!(
            f,
            "faults              crashed matches {}, players re-placed {}, connect failures {}, no-show matches {}, reconnect offers {}",
            self.crashed_matches,
            self.players_replaced,
            self.connect_failures,
            self.no_show_matches,
            self.reconnect_offers
        )?;
        if !self.leaderboard_top.is_empty() {
            let top: Vec<String> =
                self.leaderboard_top.iter().take(5).map(|(p, w)| format!("{p} {w}")).collect();
            writeln!(f, "leaderboard top 5   {} (wins)", top.join(", "))?;
        }
        writeln!(
            f,
            "bans (STRONG)       committed {}, commit timed out {}",
            self.bans_committed, self.bans_failed
        )?;
        writeln!(f, "errors              {}; drained {}", self.errors, self.drained)?;
        for s in &self.snapshots {
            writeln!(f, "snapshot            {}", s.display())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            net_rtt_p50_us: None,
            net_rtt_p99_us: None,
            player_rtt_p50_us: None,
            player_rtt_p99_us: None,
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
            connect_failures: 0,
            no_show_matches: 0,
            drained: true,
            snapshots: Vec::new(),
            leaderboard_top: Vec::new(),
            reconnect_offers: 0,
            bans_committed: 0,
            bans_failed: 0,
        };
        assert_eq!(r.matches_per_sec(), 0.0);
        let text = r.to_string();
        assert!(text.contains("made 0, finished 0 (0.0/s)"), "{text}");
        assert!(text.contains("network RTT         p50 -, p99 -"), "{text}");
        assert!(text.contains("budget left no data"), "{text}");
        assert!(
            !text.contains("NaN") && !text.contains("inf") && !text.contains("leaderboard top 5"),
            "{text}"
        );
    }
}
