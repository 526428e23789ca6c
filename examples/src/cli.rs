//! Command-line arguments of the binaries.

use std::path::PathBuf;

use crate::config::{ConfigError, SessionConfig};

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
    /// Run with this config.
    Run(SessionConfig),
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
  -h, --help         this text";

/// Parses `args` (without the program name): `--config` first, then the other options
/// override the file's values.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, CliError> {
    let args: Vec<String> = args.into_iter().collect();
    let mut config = SessionConfig::default();
    if let Some(i) = args.iter().position(|a| a == "--config") {
        let path = args.get(i + 1).ok_or(CliError::MissingValue("--config"))?;
        config = SessionConfig::from_file(&PathBuf::from(path))?;
    }
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = |option: &'static str| it.next().ok_or(CliError::MissingValue(option));
        match a.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--config" => {
                value("--config")?;
            }
            "--duration" => config.duration_secs = num("--duration", value("--duration")?)?,
            "--players" => config.players = num("--players", value("--players")?)?,
            "--seed" => config.seed = num("--seed", value("--seed")?)?,
            "--metrics" => config.metrics_addr = value("--metrics")?,
            "--progress" => config.progress_interval_secs = num("--progress", value("--progress")?)?,
            _ => return Err(CliError::Unknown(a)),
        }
    }
    config.validate()?;
    Ok(Command::Run(config))
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
        let Command::Run(c) = parse(args(&["--players", "100000", "--duration", "30"])).unwrap() else {
            panic!("expected a run");
        };
        assert_eq!(c.players, 100_000);
        assert_eq!(c.duration_secs, 30.0);
        assert_eq!(parse(args(&["--help"])).unwrap(), Command::Help);
        assert!(matches!(parse(args(&["--players", "x"])), Err(CliError::BadValue { .. })));
        assert!(matches!(parse(args(&["--players"])), Err(CliError::MissingValue(_))));
        assert!(matches!(parse(args(&["--frob"])), Err(CliError::Unknown(_))));
        assert!(matches!(parse(args(&["--players", "0"])), Err(CliError::Config(_))));
    }
}
