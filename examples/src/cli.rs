//! Command-line arguments of the binaries.

use std::path::PathBuf;

use std::net::SocketAddr;

use pvp_core::ids::RegionId;

use crate::config::{ConfigError, SessionConfig};
use crate::session::{Deployment, ProcessRole};

/// Why the arguments were refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// An argument this binary does not know.
    #[error("unknown argument `{0}` (try --help)")]
    Unknown(String),
    /// An option without its value.
    #[error("`{0}` needs a value")]
    MissingValue(&'static str),
    /// A value that does not parse.
    #[error("bad value `{value}` for `{option}`")]
    BadValue {
        /// The option.
        option: &'static str,
        /// The value given.
        value: String,
    },
    /// The config file or the resulting config was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// What the arguments asked for.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Command {
    /// Run with this config, in this topology.
    Run(Box<SessionConfig>, Deployment),
    /// Print the help text.
    Help,
}

/// The options every binary takes.
pub const HELP: &str = "\
options:
  --config PATH      TOML config (see examples/multi-region.toml; defaults apply without it)
  --duration SECS    how long to run (0 = until Ctrl-C)
  --players N        bots in the whole session (default 10000)
  --seed N           seed of every random choice
  --metrics ADDR     serve /metrics here (default 127.0.0.1:0; \"\" = off)
  --progress SECS    time between progress lines (0 = none)
  --history DIR      log every assignment, result, ban and term to DIR for the checker
  -h, --help         this text
multi-process mode (one region per process; all processes use the same config):
  --region ID        the region this process runs (kr, jp, sg)
  --sync ADDR        where its sync node listens, such as 127.0.0.1:7101
  --peers LIST       the other regions' sync addresses: jp=127.0.0.1:7102,sg=127.0.0.1:7103
  --control ADDR     where the matchmaking leader listens (TCP), such as 127.0.0.1:7100
  --leader           this process is the matchmaking leader
  --etcd URLS        elect the matchmaking leader on this etcd cluster instead of --leader
                     (http://10.0.0.1:2379,...); --control is then this process's own
                     control address, where it listens while it leads
  --end-at SECS      stop at this wall-clock time (seconds since the Unix epoch) instead
                     of after --duration (processes restarted by a fault schedule)
  --net-delay        the network between the processes already carries the backbone
                     latency (hosts on a shaped router): the sync proxies add none";

/// Parses `args` (without the program name): `-h`/`--help` anywhere asks for the help text;
/// else `--config` (at most once) first, then the other options override the file's values.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, CliError> {
    let args: Vec<String> = args.into_iter().collect();
    // Help wins over every other argument, even a config file that would be refused.
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Command::Help);
    }
    let mut config = SessionConfig::default();
    let mut configs = args.iter().enumerate().filter(|(_, a)| *a == "--config").map(|(i, _)| i);
    if let Some(i) = configs.next() {
        let path = args.get(i + 1).ok_or(CliError::MissingValue("--config"))?;
        if let Some(j) = configs.next() {
            // A second file would be ignored: say so rather than run with the first.
            let value = args.get(j + 1).cloned().unwrap_or_default();
            return Err(CliError::BadValue { option: "--config (given twice)", value });
        }
        config = SessionConfig::from_file(&PathBuf::from(path))?;
    }
    let mut region: Option<RegionId> = None;
    let mut sync: Option<SocketAddr> = None;
    let mut peers: Vec<(RegionId, SocketAddr)> = Vec::new();
    let mut control: Option<SocketAddr> = None;
    let mut leader = false;
    let mut net_delay = false;
    let mut etcd = false;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = |option: &'static str| it.next().ok_or(CliError::MissingValue(option));
        match a.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--config" => {
                value("--config")?;
            }
            "--duration" => config.duration_secs = num("--duration", value("--duration")?)?,
            "--end-at" => {
                // A wall-clock end (seconds since the Unix epoch): a process restarted by a
                // fault schedule ends with the others, not a whole duration later.
                let v = value("--end-at")?;
                let at: f64 = num("--end-at", v.clone())?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                if !at.is_finite() || at <= now {
                    return Err(CliError::BadValue { option: "--end-at (a time in the future)", value: v });
                }
                config.duration_secs = at - now;
            }
            "--players" => config.players = num("--players", value("--players")?)?,
            "--seed" => config.seed = num("--seed", value("--seed")?)?,
            "--metrics" => config.metrics_addr = value("--metrics")?,
            "--history" => config.history_dir = PathBuf::from(value("--history")?),
            "--progress" => config.progress_interval_secs = num("--progress", value("--progress")?)?,
            "--region" => region = Some(num("--region", value("--region")?)?),
            "--sync" => sync = Some(num("--sync", value("--sync")?)?),
            "--control" => control = Some(num("--control", value("--control")?)?),
            "--leader" => leader = true,
            "--etcd" => {
                etcd = true;
                config.etcd_endpoints =
                    value("--etcd")?.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
            }
            "--net-delay" => net_delay = true,
            "--peers" => {
                let list = value("--peers")?;
                for item in list.split(',').filter(|s| !s.is_empty()) {
                    let bad = || CliError::BadValue { option: "--peers", value: item.to_string() };
                    let (r, a) = item.split_once('=').ok_or_else(bad)?;
                    peers.push((r.parse().map_err(|_| bad())?, a.parse().map_err(|_| bad())?));
                }
            }
            _ => return Err(CliError::Unknown(a)),
        }
    }
    config.validate()?;
    if leader && !config.etcd_endpoints.is_empty() {
        // Elected or fixed: not both.
        return Err(CliError::BadValue { option: "--leader (with --etcd)", value: "--leader".into() });
    }
    let topology = match (region, sync, control) {
        (None, None, None) if peers.is_empty() && !leader && !net_delay && !etcd => Deployment::InProcess,
        (Some(region), Some(sync_addr), Some(control_addr)) => {
            if config.region_index(region).is_none() {
                return Err(CliError::BadValue { option: "--region", value: region.to_string() });
            }
            for (i, p) in peers.iter().enumerate() {
                // A peer in no region of the config, in this process's own region, or named
                // twice is a typo that would otherwise be ignored without a word.
                if p.0 == region
                    || config.region_index(p.0).is_none()
                    || peers[..i].iter().any(|q| q.0 == p.0)
                {
                    return Err(CliError::BadValue { option: "--peers", value: format!("{}={}", p.0, p.1) });
                }
            }
            for r in &config.regions {
                if r.id != region && !peers.iter().any(|p| p.0 == r.id) {
                    return Err(CliError::MissingValue("--peers (every other region's sync address)"));
                }
            }
            Deployment::OneRegion(ProcessRole { region, sync_addr, peers, control_addr, leader, net_delay })
        }
        _ => return Err(CliError::MissingValue("--region, --sync and --control (multi-process mode)")),
    };
    Ok(Command::Run(Box::new(config), topology))
}

fn num<T: std::str::FromStr>(option: &'static str, value: String) -> Result<T, CliError> {
    value.parse().map_err(|_| CliError::BadValue { option, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options_override_defaults() {
        let Command::Run(c, Deployment::InProcess) =
            parse(args(&["--players", "100000", "--duration", "30"])).unwrap()
        else {
            panic!("expected a run");
        };
        assert_eq!(c.players, 100_000);
        assert_eq!(c.duration_secs, 30.0);
        assert_eq!(parse(args(&["--help"])).unwrap(), Command::Help);
        assert!(matches!(parse(args(&["--players", "x"])), Err(CliError::BadValue { .. })));
        assert!(matches!(parse(args(&["--players"])), Err(CliError::MissingValue(_))));
        assert!(matches!(parse(args(&["--frob"])), Err(CliError::Unknown(_))));
        assert!(matches!(parse(args(&["--players", "0"])), Err(CliError::Config(_))));
        let multi = args(&[
            "--region",
            "jp",
            "--sync",
            "127.0.0.1:7102",
            "--control",
            "127.0.0.1:7100",
            "--peers",
            "kr=127.0.0.1:7101,sg=127.0.0.1:7103",
        ]);
        let Command::Run(_, Deployment::OneRegion(role)) = parse(multi).unwrap() else {
            panic!("multi-process")
        };
        assert_eq!(role.peers.len(), 2);
        assert!(!role.leader);
        let missing = args(&["--region", "jp", "--sync", "127.0.0.1:7102", "--control", "127.0.0.1:7100"]);
        assert!(matches!(parse(missing), Err(CliError::MissingValue(_))));
        assert!(matches!(parse(args(&["--leader"])), Err(CliError::MissingValue(_))));
    }
}
