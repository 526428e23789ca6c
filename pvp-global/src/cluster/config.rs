//! Region and fleet configuration: serde-loadable from TOML, validated with typed errors.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use pvp_core::ids::{RegionId, ZoneId};
use serde::{Deserialize, Serialize};

/// Why a [`RegionConfig`] or [`FleetConfig`] was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML text did not parse or did not match the schema.
    #[error("config is not valid TOML for this schema: {0}")]
    Toml(#[from] toml::de::Error),
    /// The region lists no zone.
    #[error("region {region} lists no zone")]
    NoZones {
        /// The region.
        region: RegionId,
    },
    /// A zone does not belong to its region (its name must start with `<region>-`).
    #[error("zone {zone} does not belong to region {region} (expected a name like \"{region}-a\")")]
    UnknownZone {
        /// The region.
        region: RegionId,
        /// The zone that does not belong to it.
        zone: ZoneId,
    },
    /// A zone is listed twice.
    #[error("zone {zone} is listed twice in region {region}")]
    DuplicateZone {
        /// The region.
        region: RegionId,
        /// The repeated zone.
        zone: ZoneId,
    },
    /// `min_servers` is larger than `max_servers`.
    #[error("region {region}: min_servers {min} > max_servers {max}")]
    MinAboveMax {
        /// The region.
        region: RegionId,
        /// Configured minimum.
        min: u32,
        /// Configured maximum.
        max: u32,
    },
    /// `max_servers` or `players_per_server` is zero.
    #[error("region {region}: zero capacity (max_servers and players_per_server must be > 0)")]
    ZeroCapacity {
        /// The region.
        region: RegionId,
    },
    /// `players_per_server` is above [`MAX_PLAYERS_PER_SERVER`].
    #[error("region {region}: players_per_server {value} is above {MAX_PLAYERS_PER_SERVER}")]
    TooManyPlayersPerServer {
        /// The region.
        region: RegionId,
        /// The rejected value.
        value: u32,
    },
    /// A region lists a latency to itself.
    #[error("region {region} lists a latency to itself")]
    LatencyToSelf {
        /// The region.
        region: RegionId,
    },
    /// `vpc_cidr` is not an IPv4 CIDR such as `10.1.0.0/16`.
    #[error("region {region}: {cidr:?} is not an IPv4 CIDR such as \"10.1.0.0/16\"")]
    BadCidr {
        /// The region.
        region: RegionId,
        /// The rejected text.
        cidr: String,
    },
    /// The VPC CIDR has fewer host addresses than `max_servers` needs.
    #[error("region {region}: {cidr} holds {hosts} server addresses, max_servers needs {needed}")]
    CidrTooSmall {
        /// The region.
        region: RegionId,
        /// The CIDR.
        cidr: String,
        /// Addresses it offers to servers.
        hosts: u64,
        /// Addresses `max_servers` needs.
        needed: u64,
    },
    /// A duration that must be positive is zero.
    #[error("region {region}: {field} must be > 0")]
    ZeroDuration {
        /// The region.
        region: RegionId,
        /// The field name.
        field: &'static str,
    },
    /// `degraded_spare_ratio` is outside `0.0..=1.0` (or NaN).
    #[error("region {region}: degraded_spare_ratio {value} is outside 0..=1")]
    BadSpareRatio {
        /// The region.
        region: RegionId,
        /// The rejected value.
        value: f64,
    },
    /// The fleet lists no region.
    #[error("the fleet lists no region")]
    NoRegions,
    /// The fleet lists more regions than the matchmaker can track.
    #[error("the fleet lists {count} regions, at most {max} are supported")]
    TooManyRegions {
        /// Regions listed.
        count: usize,
        /// Most supported.
        max: usize,
    },
    /// A region is listed twice in the fleet.
    #[error("region {region} is listed twice")]
    DuplicateRegion {
        /// The repeated region.
        region: RegionId,
    },
    /// A region lists a latency to a region the fleet does not hold.
    #[error("region {from} lists a latency to unknown region {to}")]
    UnknownRegion {
        /// The region holding the entry.
        from: RegionId,
        /// The unknown region.
        to: RegionId,
    },
    /// A matchmaking setting is out of range (NaN or negative window, zero lookahead, ...).
    #[error("matchmaking setting {field} is out of range")]
    InvalidMatchmaking {
        /// The setting.
        field: &'static str,
    },
    /// A game mode is malformed (team size 0, fewer than 2 teams, more players than a match
    /// holds) or its id is listed twice.
    #[error("game mode {mode} is invalid or listed twice")]
    InvalidGameMode {
        /// The mode's id.
        mode: u16,
    },
    /// Two regions disagree on the round-trip time between them.
    #[error("latency {a}->{b} is {ab} ms but {b}->{a} is {ba} ms")]
    AsymmetricLatency {
        /// One region.
        a: RegionId,
        /// The other region.
        b: RegionId,
        /// RTT listed by `a`.
        ab: u32,
        /// RTT listed by `b`.
        ba: u32,
    },
}

fn default_game_port() -> u16 {
    7777
}
fn default_heartbeat_timeout_ms() -> u64 {
    5_000
}
fn default_startup_timeout_ms() -> u64 {
    60_000
}
fn default_degraded_spare_ratio() -> f64 {
    0.1
}

/// One region's fleet: where it is, how large it may grow and how its servers are watched.
///
/// ```
/// use pvp_global::cluster::RegionConfig;
///
/// let kr = RegionConfig::from_toml_str(r#"
///     id = "kr"
///     display_name = "Korea"
///     zones = ["kr-a", "kr-b", "kr-c"]
///     min_servers = 3
///     max_servers = 30
///     players_per_server = 100
///     vpc_cidr = "10.1.0.0/16"
///     latency_ms = { jp = 30, sg = 70 }
/// "#)?;
/// assert_eq!(kr.zones.len(), 3);
/// assert_eq!(kr.rtt_to("jp".parse()?), Some(std::time::Duration::from_millis(30)));
///
/// // Validation is typed: a zone of another region is rejected.
/// let bad = RegionConfig::from_toml_str(r#"
///     id = "kr"
///     display_name = "Korea"
///     zones = ["jp-a"]
///     min_servers = 1
///     max_servers = 2
///     players_per_server = 10
///     vpc_cidr = "10.1.0.0/16"
/// "#);
/// assert!(matches!(bad, Err(pvp_global::cluster::ConfigError::UnknownZone { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// Region id, such as `kr`.
    pub id: RegionId,
    /// Human-readable name, such as `Korea`.
    pub display_name: String,
    /// Availability zones; each name starts with `<id>-`.
    pub zones: Vec<ZoneId>,
    /// Fewest live game servers the fleet keeps.
    pub min_servers: u32,
    /// Most live game servers the fleet may run.
    pub max_servers: u32,
    /// Player slots per game server (a server hosts several matches).
    pub players_per_server: u32,
    /// The region's VPC, such as `10.1.0.0/16`; servers get addresses from it.
    pub vpc_cidr: String,
    /// UDP port game servers listen on.
    #[serde(default = "default_game_port")]
    pub game_port: u16,
    /// Round-trip time to each other region, in milliseconds.
    #[serde(default)]
    pub latency_ms: BTreeMap<RegionId, u32>,
    /// A Ready or Allocated server whose last heartbeat is older than this is Unhealthy.
    #[serde(default = "default_heartbeat_timeout_ms")]
    pub heartbeat_timeout_ms: u64,
    /// A Starting server that sends no heartbeat within this is Unhealthy.
    #[serde(default = "default_startup_timeout_ms")]
    pub startup_timeout_ms: u64,
    /// The region is Degraded when free slots fall below this share of its capacity.
    #[serde(default = "default_degraded_spare_ratio")]
    pub degraded_spare_ratio: f64,
}

impl RegionConfig {
    /// Parses and validates one region from TOML.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the region on its own (the fleet checks cross-region entries).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let region = self.id;
        if self.zones.is_empty() {
            return Err(ConfigError::NoZones { region });
        }
        for (i, zone) in self.zones.iter().enumerate() {
            let belongs = zone
                .as_str()
                .strip_prefix(region.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.starts_with('-'));
            if !belongs {
                return Err(ConfigError::UnknownZone { region, zone: *zone });
            }
            if self.zones[..i].contains(zone) {
                return Err(ConfigError::DuplicateZone { region, zone: *zone });
            }
        }
        if self.max_servers == 0 || self.players_per_server == 0 {
            return Err(ConfigError::ZeroCapacity { region });
        }
        if self.players_per_server > MAX_PLAYERS_PER_SERVER {
            return Err(ConfigError::TooManyPlayersPerServer { region, value: self.players_per_server });
        }
        if self.min_servers > self.max_servers {
            return Err(ConfigError::MinAboveMax { region, min: self.min_servers, max: self.max_servers });
        }
        if self.latency_ms.contains_key(&region) {
            return Err(ConfigError::LatencyToSelf { region });
        }
        let (_, hosts) = self.parse_cidr()?;
        let needed = u64::from(self.max_servers);
        if hosts < needed {
            return Err(ConfigError::CidrTooSmall { region, cidr: self.vpc_cidr.clone(), hosts, needed });
        }
        if self.heartbeat_timeout_ms == 0 {
            return Err(ConfigError::ZeroDuration { region, field: "heartbeat_timeout_ms" });
        }
        if self.startup_timeout_ms == 0 {
            return Err(ConfigError::ZeroDuration { region, field: "startup_timeout_ms" });
        }
        if !(0.0..=1.0).contains(&self.degraded_spare_ratio) {
            return Err(ConfigError::BadSpareRatio { region, value: self.degraded_spare_ratio });
        }
        Ok(())
    }

    /// Round-trip time to `other`: zero for the region itself, `None` when not listed.
    pub fn rtt_to(&self, other: RegionId) -> Option<Duration> {
        if other == self.id {
            return Some(Duration::ZERO);
        }
        self.latency_ms.get(&other).map(|ms| Duration::from_millis(u64::from(*ms)))
    }

    /// Heartbeat timeout as a `Duration`.
    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(self.heartbeat_timeout_ms)
    }

    /// Startup timeout as a `Duration`.
    pub fn startup_timeout(&self) -> Duration {
        Duration::from_millis(self.startup_timeout_ms)
    }

    /// First server address and how many server addresses the CIDR offers (network address,
    /// broadcast and the first [`RESERVED_HOSTS`] hosts are left out, as clouds reserve them).
    pub(crate) fn parse_cidr(&self) -> Result<(u32, u64), ConfigError> {
        let bad = || ConfigError::BadCidr { region: self.id, cidr: self.vpc_cidr.clone() };
        let (ip, prefix) = self.vpc_cidr.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u32 = prefix.parse().map_err(|_| bad())?;
        if prefix > 30 {
            return Err(bad());
        }
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        let net = u32::from(ip) & mask;
        let size = 1u64 << (32 - prefix);
        let hosts = size.saturating_sub(2 + u64::from(RESERVED_HOSTS));
        // A block at the top of the address space with no server address (e.g.
        // 255.255.255.252/30) must come back as CidrTooSmall, not overflow.
        Ok((net.wrapping_add(1 + RESERVED_HOSTS), hosts))
    }

    /// The reference Korea region: zones kr-a/b/c, RTT 30 ms to jp and 70 ms to sg.
    pub fn reference_kr() -> Self {
        reference(KR, "Korea", KR_ZONES, "10.1.0.0/16", [(JP, 30), (SG, 70)])
    }

    /// The reference Japan region: zones jp-a/c/d, RTT 30 ms to kr and 70 ms to sg.
    pub fn reference_jp() -> Self {
        reference(JP, "Japan", JP_ZONES, "10.2.0.0/16", [(KR, 30), (SG, 70)])
    }

    /// The reference Singapore region: zones sg-a/b/c, RTT 70 ms to kr and jp.
    pub fn reference_sg() -> Self {
        reference(SG, "Singapore", SG_ZONES, "10.3.0.0/16", [(KR, 70), (JP, 70)])
    }
}

/// Most player slots one game server may declare (allocation keeps one bucket per slot count).
pub const MAX_PLAYERS_PER_SERVER: u32 = 65_536;

/// Host addresses at the start of each VPC that servers never get (router, DNS, ...).
pub const RESERVED_HOSTS: u32 = 3;

const fn region(name: &str) -> RegionId {
    match RegionId::new(name) {
        Ok(r) => r,
        Err(_) => panic!("reference region names are valid ids"),
    }
}

const fn zone(name: &str) -> ZoneId {
    match ZoneId::new(name) {
        Ok(z) => z,
        Err(_) => panic!("reference zone names are valid ids"),
    }
}

/// Korea, the reference region `kr`.
pub const KR: RegionId = region("kr");
/// Japan, the reference region `jp`.
pub const JP: RegionId = region("jp");
/// Singapore, the reference region `sg`.
pub const SG: RegionId = region("sg");
const KR_ZONES: [ZoneId; 3] = [zone("kr-a"), zone("kr-b"), zone("kr-c")];
const JP_ZONES: [ZoneId; 3] = [zone("jp-a"), zone("jp-c"), zone("jp-d")];
const SG_ZONES: [ZoneId; 3] = [zone("sg-a"), zone("sg-b"), zone("sg-c")];

fn reference(
    id: RegionId,
    name: &str,
    zones: [ZoneId; 3],
    cidr: &str,
    rtt: [(RegionId, u32); 2],
) -> RegionConfig {
    RegionConfig {
        id,
        display_name: name.to_owned(),
        zones: zones.to_vec(),
        min_servers: 3,
        max_servers: 1_000,
        players_per_server: 100,
        vpc_cidr: cidr.to_owned(),
        game_port: default_game_port(),
        latency_ms: rtt.into_iter().collect(),
        heartbeat_timeout_ms: default_heartbeat_timeout_ms(),
        startup_timeout_ms: default_startup_timeout_ms(),
        degraded_spare_ratio: default_degraded_spare_ratio(),
    }
}

/// Every region of a deployment, with the cross-region latency matrix.
///
/// ```
/// use pvp_global::cluster::FleetConfig;
///
/// let fleet = FleetConfig::from_toml_str(r#"
///     [[regions]]
///     id = "kr"
///     display_name = "Korea"
///     zones = ["kr-a"]
///     min_servers = 1
///     max_servers = 4
///     players_per_server = 10
///     vpc_cidr = "10.1.0.0/24"
///     latency_ms = { jp = 30 }
///
///     [[regions]]
///     id = "jp"
///     display_name = "Japan"
///     zones = ["jp-a"]
///     min_servers = 1
///     max_servers = 4
///     players_per_server = 10
///     vpc_cidr = "10.2.0.0/24"
///     latency_ms = { kr = 30 }
/// "#)?;
/// assert_eq!(fleet.regions.len(), 2);
/// assert_eq!(FleetConfig::reference().regions.len(), 3);
/// # Ok::<(), pvp_global::cluster::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// The regions.
    pub regions: Vec<RegionConfig>,
}

impl FleetConfig {
    /// Parses and validates a fleet from TOML (`[[regions]]` tables).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The reference deployment: Korea, Japan and Singapore.
    pub fn reference() -> Self {
        Self {
            regions: vec![
                RegionConfig::reference_kr(),
                RegionConfig::reference_jp(),
                RegionConfig::reference_sg(),
            ],
        }
    }

    /// Checks every region and the latency matrix (known regions, symmetric RTTs).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.regions.is_empty() {
            return Err(ConfigError::NoRegions);
        }
        if self.regions.len() > crate::matchmaking::MAX_REGIONS {
            return Err(ConfigError::TooManyRegions {
                count: self.regions.len(),
                max: crate::matchmaking::MAX_REGIONS,
            });
        }
        for (i, r) in self.regions.iter().enumerate() {
            r.validate()?;
            if self.regions[..i].iter().any(|o| o.id == r.id) {
                return Err(ConfigError::DuplicateRegion { region: r.id });
            }
        }
        for r in &self.regions {
            for (to, ab) in &r.latency_ms {
                let other = self
                    .regions
                    .iter()
                    .find(|o| o.id == *to)
                    .ok_or(ConfigError::UnknownRegion { from: r.id, to: *to })?;
                if let Some(ba) = other.latency_ms.get(&r.id) {
                    if ba != ab {
                        return Err(ConfigError::AsymmetricLatency { a: r.id, b: *to, ab: *ab, ba: *ba });
                    }
                }
            }
        }
        Ok(())
    }
}
