//! The session's settings: loaded from TOML (every field has a default), checked with typed
//! errors, and turned into the fleet and matchmaking configs of `pvp-global`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use pvp_core::ids::{RegionId, ZoneId};
use pvp_global::cluster::{FleetConfig, RegionConfig};
use pvp_global::matchmaking::{GameMode, MatchmakingConfig};
use serde::{Deserialize, Serialize};

/// Why a [`SessionConfig`] was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML text did not parse or did not match the schema.
    #[error("config: {0}")]
    Toml(#[from] toml::de::Error),
    /// The file could not be read.
    #[error("config file: {0}")]
    Io(#[from] std::io::Error),
    /// A setting is out of range.
    #[error("config: `{field}` {why}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The fleet built from the regions was refused by `pvp-global`.
    #[error("fleet: {0}")]
    Fleet(#[from] pvp_global::cluster::ConfigError),
}

/// One region: its backbone latencies and the bots that live near it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSettings {
    /// Region id, such as `kr`.
    pub id: RegionId,
    /// Human-readable name.
    pub display_name: String,
    /// Share of the bots whose home is this region (shares are normalised).
    pub bot_share: f64,
    /// Round-trip time of the backbone to each other region (every one, and only those), in
    /// ms (the sync links' proxies delay each direction by half of it).
    pub backbone_rtt_ms: BTreeMap<RegionId, u32>,
    /// Round-trip time from this region's players to each region's servers (every one, and
    /// only those), in ms.
    pub player_rtt_ms: BTreeMap<RegionId, u32>,
}

/// Every setting of a session. `SessionConfig::default()` is the shipped
/// `examples/multi-region.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Bots (players) in the whole session: at least one match's worth (`2 * team_size`), at
    /// most [`MAX_PLAYERS`].
    pub players: u32,
    /// How long the session runs, in seconds (0 = until Ctrl-C; at most [`MAX_SECS`]).
    pub duration_secs: f64,
    /// Seed of every random choice (bot ratings, jitter, outcomes, proxy loss).
    pub seed: u64,
    /// Game-server simulation rate (state packets per second per player).
    pub tick_rate_hz: u32,
    /// Ticks per match.
    pub match_ticks: u32,
    /// Players per team (1 = duels, 5 = 5v5).
    pub team_size: u8,
    /// Pause of a bot between the end of a match and its next ticket, in ms (at most
    /// [`MAX_MS`]).
    pub think_time_ms: u64,
    /// A player who has not connected this long after the match formed is dropped from it; a
    /// bot that hears nothing from its server this long requeues, in ms (at most [`MAX_MS`]).
    pub connect_timeout_ms: u64,
    /// Highest RTT a player accepts to the match's region, in ms.
    pub max_latency_ms: u32,
    /// Random spread added to each bot's RTT to each region, in ms (0..=jitter).
    pub player_jitter_ms: u32,
    /// Time between two matchmaking passes, in ms.
    pub matchmaking_interval_ms: u64,
    /// Time between two progress lines, in seconds (0 = none; at most [`MAX_SECS`]).
    pub progress_interval_secs: f64,
    /// Where `/metrics` is served (`127.0.0.1:0` picks a free port; empty = not served).
    pub metrics_addr: String,
    /// Where the matchmaking front's HTTP/JSON API is served (`127.0.0.1:0` picks a free port;
    /// empty = not served). See [`crate::front`].
    pub front_addr: String,
    /// Time between two sync flushes to each peer, in ms.
    pub sync_flush_ms: u64,
    /// Time between two region heartbeats (on the sync links), and between two game-server
    /// heartbeats to the fleet controller, in ms.
    pub heartbeat_ms: u64,
    /// Player slots per game server (a high-density server: one endpoint hosts many fights).
    pub players_per_server: u32,
    /// Fewest game servers per region.
    pub min_servers: u32,
    /// Most game servers per region.
    pub max_servers: u32,
    /// The autoscaler's target: players per server.
    pub target_players_per_server: f64,
    /// Where Ctrl-C (or the end of the session) writes each region's snapshot (empty = the
    /// system's temporary directory).
    pub snapshot_dir: PathBuf,
    /// Multi-process mode only: the etcd cluster's client URLs (`http://host:port`, at most
    /// [`MAX_ETCD_ENDPOINTS`]). Empty (the default): the matchmaking leader is the process
    /// started with `--leader`. Set: every process campaigns on etcd for the leadership and
    /// any of them takes over when the leader's lease runs out (see [`crate::election`]).
    pub etcd_endpoints: Vec<String>,
    /// Where each process logs its history for [`crate::history::check`] (empty, the
    /// default: no history).
    pub history_dir: PathBuf,
    /// The regions.
    pub regions: Vec<RegionSettings>,
}

/// Most bots a session runs (each region's player ids live in a block of
/// [`PLAYER_ID_STRIDE`](crate::bots::PLAYER_ID_STRIDE); bots are allocated up front).
pub const MAX_PLAYERS: u32 = 1_000_000;

/// Most etcd endpoints a session lists.
pub const MAX_ETCD_ENDPOINTS: usize = 16;

/// Longest `duration_secs` and `progress_interval_secs`: one year.
pub const MAX_SECS: f64 = 365.0 * 24.0 * 3_600.0;

/// Longest of the `*_ms` intervals and timeouts: one hour.
pub const MAX_MS: u64 = 3_600_000;

/// `http://HOST:PORT` with a host of at most 253 bytes and a port (TLS endpoints are not
/// supported: the control plane's own traffic is not sealed).
fn etcd_url_ok(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let Some((host, port)) = rest.rsplit_once(':') else { return false };
    !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'[' || b == b']' || b == b':'
        })
        && port.parse::<u16>().is_ok_and(|p| p > 0)
}

fn rid(s: &str) -> RegionId {
    // The reference names are valid ids; a bad one would be a bug caught by every test.
    RegionId::new(s).unwrap_or_else(|_| unreachable!("reference region ids are valid"))
}

fn region(
    id: &str,
    name: &str,
    share: f64,
    backbone: [(&str, u32); 2],
    players: [(&str, u32); 3],
) -> RegionSettings {
    RegionSettings {
        id: rid(id),
        display_name: name.to_owned(),
        bot_share: share,
        backbone_rtt_ms: backbone.iter().map(|(r, ms)| (rid(r), *ms)).collect(),
        player_rtt_ms: players.iter().map(|(r, ms)| (rid(r), *ms)).collect(),
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            players: 10_000,
            duration_secs: 60.0,
            seed: 1,
            tick_rate_hz: 10,
            match_ticks: 20,
            team_size: 1,
            think_time_ms: 500,
            connect_timeout_ms: 2_000,
            max_latency_ms: 60,
            player_jitter_ms: 10,
            matchmaking_interval_ms: 100,
            progress_interval_secs: 5.0,
            metrics_addr: "127.0.0.1:0".to_owned(),
            front_addr: "127.0.0.1:0".to_owned(),
            sync_flush_ms: 20,
            heartbeat_ms: 100,
            players_per_server: 1_000,
            min_servers: 3,
            max_servers: 200,
            target_players_per_server: 700.0,
            snapshot_dir: PathBuf::new(),
            etcd_endpoints: Vec::new(),
            history_dir: PathBuf::new(),
            regions: vec![
                region("kr", "Korea", 0.4, [("jp", 30), ("sg", 70)], [("kr", 8), ("jp", 35), ("sg", 75)]),
                region("jp", "Japan", 0.35, [("kr", 30), ("sg", 70)], [("kr", 35), ("jp", 8), ("sg", 75)]),
                region(
                    "sg",
                    "Singapore",
                    0.25,
                    [("kr", 70), ("jp", 70)],
                    [("kr", 75), ("jp", 75), ("sg", 8)],
                ),
            ],
        }
    }
}

impl SessionConfig {
    /// Parses and checks a config from TOML text; missing fields take their defaults.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and checks a TOML config file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        Self::from_toml_str(&std::fs::read_to_string(path)?)
    }

    /// Checks every range and the fleet the regions make.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, why| Err(ConfigError::Invalid { field, why });
        if self.players == 0 || self.players > MAX_PLAYERS {
            return bad("players", "must be within 1..=1000000");
        }
        if !(self.duration_secs.is_finite() && (0.0..=MAX_SECS).contains(&self.duration_secs)) {
            return bad("duration_secs", "must be a number of seconds within 0..=31536000 (one year)");
        }
        if self.tick_rate_hz == 0 || self.tick_rate_hz > 1_000 {
            return bad("tick_rate_hz", "must be within 1..=1000");
        }
        if self.match_ticks == 0 {
            return bad("match_ticks", "must be at least 1");
        }
        if self.team_size == 0 || self.team_size > 6 {
            return bad("team_size", "must be within 1..=6");
        }
        if self.players < self.match_players() {
            // Fewer bots than one match needs: no match could ever form.
            return bad("players", "must be at least the players of one match (2 * team_size)");
        }
        if self.connect_timeout_ms == 0 || self.connect_timeout_ms > MAX_MS {
            return bad("connect_timeout_ms", "must be within 1..=3600000 (one hour)");
        }
        if self.think_time_ms > MAX_MS {
            return bad("think_time_ms", "must be at most 3600000 (one hour)");
        }
        if self.max_latency_ms == 0 {
            return bad("max_latency_ms", "must be positive");
        }
        if [self.matchmaking_interval_ms, self.sync_flush_ms, self.heartbeat_ms]
            .iter()
            .any(|&ms| ms == 0 || ms > MAX_MS)
        {
            return bad(
                "matchmaking_interval_ms / sync_flush_ms / heartbeat_ms",
                "must be within 1..=3600000 (one hour)",
            );
        }
        if !(self.progress_interval_secs.is_finite()
            && (0.0..=MAX_SECS).contains(&self.progress_interval_secs))
        {
            return bad(
                "progress_interval_secs",
                "must be a number of seconds within 0..=31536000 (one year)",
            );
        }
        if !self.metrics_addr.is_empty() && self.metrics_addr.parse::<SocketAddr>().is_err() {
            return bad("metrics_addr", "must be an address such as 127.0.0.1:9464, or empty");
        }
        if !self.front_addr.is_empty() && self.front_addr.parse::<SocketAddr>().is_err() {
            return bad("front_addr", "must be an address such as 127.0.0.1:8080, or empty");
        }
        if !(self.target_players_per_server.is_finite() && self.target_players_per_server > 0.0) {
            return bad("target_players_per_server", "must be a positive number");
        }
        if self.etcd_endpoints.len() > MAX_ETCD_ENDPOINTS {
            return bad("etcd_endpoints", "must list at most 16 client URLs");
        }
        if !self.etcd_endpoints.iter().all(|u| etcd_url_ok(u)) {
            return bad("etcd_endpoints", "must be client URLs such as http://10.0.0.1:2379");
        }
        if self.regions.is_empty() {
            return bad("regions", "must list at least one region");
        }
        for r in &self.regions {
            if !(r.bot_share.is_finite() && r.bot_share >= 0.0) {
                return bad("regions.bot_share", "must be a finite number >= 0");
            }
            for other in &self.regions {
                if !r.player_rtt_ms.contains_key(&other.id) {
                    return bad("regions.player_rtt_ms", "must list every region");
                }
                if other.id != r.id && !r.backbone_rtt_ms.contains_key(&other.id) {
                    return bad("regions.backbone_rtt_ms", "must list every other region");
                }
            }
            // An entry for a region the session lacks is a typo that would be ignored.
            if r.player_rtt_ms.keys().any(|id| self.region_index(*id).is_none()) {
                return bad("regions.player_rtt_ms", "names a region that is not in `regions`");
            }
            if r.backbone_rtt_ms.keys().any(|id| *id == r.id || self.region_index(*id).is_none()) {
                return bad("regions.backbone_rtt_ms", "must name only the other regions of `regions`");
            }
        }
        if self.regions.iter().map(|r| r.bot_share).sum::<f64>() <= 0.0 {
            return bad("regions.bot_share", "shares must not all be zero");
        }
        self.fleet()?.validate()?;
        self.matchmaking().validate()?;
        Ok(())
    }

    /// The fleet: one [`RegionConfig`] per region, zones `<id>-a/b/c`.
    pub fn fleet(&self) -> Result<FleetConfig, ConfigError> {
        let mut regions = Vec::with_capacity(self.regions.len());
        for (i, r) in self.regions.iter().enumerate() {
            let mut zones = Vec::with_capacity(3);
            for z in ["a", "b", "c"] {
                let name = format!("{}-{z}", r.id);
                zones.push(
                    ZoneId::new(&name)
                        .map_err(|_| ConfigError::Invalid { field: "regions.id", why: "too long" })?,
                );
            }
            let mut rc = RegionConfig::reference_kr();
            rc.id = r.id;
            rc.display_name = r.display_name.clone();
            rc.zones = zones;
            rc.min_servers = self.min_servers;
            rc.max_servers = self.max_servers;
            rc.players_per_server = self.players_per_server;
            rc.vpc_cidr = format!("10.{}.0.0/16", (i % 250) + 1);
            rc.latency_ms = r.backbone_rtt_ms.clone();
            // Servers heartbeat through the control plane every matchmaking pass.
            rc.heartbeat_timeout_ms = 1_500;
            rc.startup_timeout_ms = 5_000;
            regions.push(rc);
        }
        Ok(FleetConfig { regions })
    }

    /// Matchmaking settings: one mode (`team_size` per team, two teams), cross-region on.
    pub fn matchmaking(&self) -> MatchmakingConfig {
        let mode = GameMode {
            id: GAME_MODE,
            name: format!("{0}v{0}", self.team_size),
            team_size: self.team_size,
            teams: 2,
        };
        MatchmakingConfig {
            modes: vec![mode],
            queue_timeout: Some(Duration::from_secs(60)),
            grant_ttl: Duration::from_millis(self.connect_timeout_ms.saturating_mul(4)),
            max_queued_players: (self.players as usize).max(1),
            ..MatchmakingConfig::default()
        }
    }

    /// Players in one match.
    pub fn match_players(&self) -> u32 {
        u32::from(self.team_size) * 2
    }

    /// Time between two game ticks (a `tick_rate_hz` of 0, which `validate` refuses, counts
    /// as 1).
    pub fn tick_interval(&self) -> Duration {
        Duration::from_secs(1) / self.tick_rate_hz.max(1)
    }

    /// How many bots live in each region (same order as `regions`), summing to `players`.
    pub fn bots_per_region(&self) -> Vec<u32> {
        let total: f64 = self.regions.iter().map(|r| r.bot_share).sum();
        let mut out: Vec<u32> = self
            .regions
            .iter()
            .map(|r| (f64::from(self.players) * r.bot_share / total).floor() as u32)
            .collect();
        let assigned: u32 = out.iter().sum();
        if let Some(first) = out.iter_mut().find(|_| true) {
            *first += self.players - assigned;
        }
        out
    }

    /// Index of `region` in `regions`.
    pub fn region_index(&self, region: RegionId) -> Option<usize> {
        self.regions.iter().position(|r| r.id == region)
    }
}

/// The one game mode the bots play.
pub const GAME_MODE: pvp_global::matchmaking::GameModeId = pvp_global::matchmaking::GameModeId(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_splits_every_bot() {
        let c = SessionConfig::default();
        c.validate().unwrap();
        assert_eq!(c.bots_per_region().iter().sum::<u32>(), c.players);
    }

    #[test]
    fn shipped_file_parses_to_the_defaults() {
        let text = include_str!("../multi-region.toml");
        assert_eq!(SessionConfig::from_toml_str(text).unwrap(), SessionConfig::default());
    }

    #[test]
    fn bad_values_are_typed_errors() {
        assert!(matches!(
            SessionConfig::from_toml_str("players = 0"),
            Err(ConfigError::Invalid { field: "players", .. })
        ));
        assert!(matches!(SessionConfig::from_toml_str("nonsense = 1"), Err(ConfigError::Toml(_))));
        assert!(matches!(
            SessionConfig::from_toml_str("metrics_addr = \"nope\""),
            Err(ConfigError::Invalid { field: "metrics_addr", .. })
        ));
    }
}
