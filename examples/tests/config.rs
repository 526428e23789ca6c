//! How a run is configured: `SessionConfig` from TOML (defaults, overrides, unknown and
//! mistyped fields, out-of-range values naming their field, regions and latency tables that must
//! know each other, config files) and the command line (`cli::parse`: flag edge cases, unknown
//! flags, help, the multi-process flags). Bad input gets a typed error, never a panic or a
//! huge allocation.

use std::net::SocketAddr;
use std::time::Duration;

use pvp_core::ids::RegionId;
use pvp_examples::cli::{self, CliError, Command};
use pvp_examples::config::{ConfigError, MAX_PLAYERS};
use pvp_examples::{Deployment, SessionConfig};

fn args(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| x.to_string()).collect()
}

fn invalid_field(r: Result<SessionConfig, ConfigError>) -> &'static str {
    match r {
        Err(ConfigError::Invalid { field, .. }) => field,
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

fn cli_invalid_field(r: Result<Command, CliError>) -> &'static str {
    match r {
        Err(CliError::Config(ConfigError::Invalid { field, .. })) => field,
        other => panic!("expected a config Invalid error, got {other:?}"),
    }
}

#[test]
fn empty_toml_is_the_defaults_and_fields_override() {
    assert_eq!(SessionConfig::from_toml_str("").unwrap(), SessionConfig::default());
    let c = SessionConfig::from_toml_str("players = 42\nduration_secs = 0.0\nseed = 9").unwrap();
    assert_eq!((c.players, c.duration_secs, c.seed), (42, 0.0, 9));
    assert_eq!(c.regions, SessionConfig::default().regions);
}

#[test]
fn unknown_and_mistyped_fields_are_toml_errors() {
    for text in [
        "playerz = 1",
        "players = \"many\"",
        "players = -1",
        "players = 1.5",
        "duration_secs = \"30\"",
        "team_size = 300",
        "[[regions]]\nid = \"kr\"",
        "this is not toml",
        "[[regions]]\nid = \"kr\"\ndisplay_name = \"K\"\nbot_share = 1.0\nbackbone_rtt_ms = {}\nplayer_rtt_ms = { kr = 1 }\ncolour = \"red\"",
        "[[regions]]\nid = \"NOT A REGION ID\"\ndisplay_name = \"K\"\nbot_share = 1.0\nbackbone_rtt_ms = {}\nplayer_rtt_ms = {}",
    ] {
        let r = SessionConfig::from_toml_str(text);
        assert!(matches!(r, Err(ConfigError::Toml(_))), "{text:?} -> {r:?}");
        // The message names the problem.
        assert!(!r.unwrap_err().to_string().is_empty());
    }
}

#[test]
fn out_of_range_values_name_their_field() {
    let cases: &[(&str, &str)] = &[
        ("players = 0", "players"),
        ("players = 1", "players"),
        ("players = 9\nteam_size = 5", "players"),
        ("duration_secs = -1.0", "duration_secs"),
        ("duration_secs = nan", "duration_secs"),
        ("duration_secs = inf", "duration_secs"),
        ("duration_secs = 1e300", "duration_secs"),
        ("progress_interval_secs = -0.5", "progress_interval_secs"),
        ("progress_interval_secs = 1e300", "progress_interval_secs"),
        ("tick_rate_hz = 0", "tick_rate_hz"),
        ("tick_rate_hz = 1001", "tick_rate_hz"),
        ("match_ticks = 0", "match_ticks"),
        ("team_size = 0", "team_size"),
        ("team_size = 7", "team_size"),
        ("connect_timeout_ms = 0", "connect_timeout_ms"),
        ("connect_timeout_ms = 18446744073709551615", "connect_timeout_ms"),
        ("max_latency_ms = 0", "max_latency_ms"),
        ("metrics_addr = \"localhost\"", "metrics_addr"),
        ("target_players_per_server = 0.0", "target_players_per_server"),
        ("target_players_per_server = nan", "target_players_per_server"),
        ("regions = []", "regions"),
    ];
    for (text, field) in cases {
        assert_eq!(invalid_field(SessionConfig::from_toml_str(text)), *field, "{text}");
    }
}

#[test]
fn huge_bot_counts_are_refused_not_allocated() {
    let huge = format!("players = {}", u32::MAX);
    assert_eq!(invalid_field(SessionConfig::from_toml_str(&huge)), "players");
    let over = format!("players = {}", MAX_PLAYERS + 1);
    assert_eq!(invalid_field(SessionConfig::from_toml_str(&over)), "players");
    let max = SessionConfig { players: MAX_PLAYERS, ..SessionConfig::default() };
    max.validate().unwrap();
    assert_eq!(max.bots_per_region().iter().sum::<u32>(), MAX_PLAYERS);
}

#[test]
fn regions_must_know_each_other() {
    let mut c = SessionConfig::default();
    c.regions[1].player_rtt_ms.clear();
    assert!(matches!(c.validate(), Err(ConfigError::Invalid { field: "regions.player_rtt_ms", .. })));
    let mut c = SessionConfig::default();
    c.regions[0].bot_share = -1.0;
    assert!(matches!(c.validate(), Err(ConfigError::Invalid { field: "regions.bot_share", .. })));
    let mut c = SessionConfig::default();
    for r in &mut c.regions {
        r.bot_share = 0.0;
    }
    assert!(matches!(c.validate(), Err(ConfigError::Invalid { field: "regions.bot_share", .. })));
    // The same region twice is refused (by the fleet or the config), never a silent merge.
    let mut c = SessionConfig::default();
    let dup = c.regions[0].clone();
    c.regions.push(dup);
    assert!(c.validate().is_err());
}

#[test]
fn bots_split_sums_to_players_for_odd_shares() {
    for players in [2, 3, 7, 1_000, 99_999] {
        for shares in [[1.0, 1.0, 1.0], [0.0, 0.0, 5.0], [1e-300, 1.0, 1e300], [0.1, 0.2, 0.3]] {
            let mut c = SessionConfig { players, ..SessionConfig::default() };
            for (r, s) in c.regions.iter_mut().zip(shares) {
                r.bot_share = s;
            }
            if c.validate().is_err() {
                continue;
            }
            let split = c.bots_per_region();
            assert_eq!(split.len(), 3);
            assert_eq!(split.iter().sum::<u32>(), players, "{players} bots, shares {shares:?}");
        }
    }
}

#[test]
fn config_file_errors_are_typed() {
    let missing = std::env::temp_dir().join("pvp-api-contract-no-such-file.toml");
    assert!(matches!(SessionConfig::from_file(&missing), Err(ConfigError::Io(_))));
    let r = cli::parse(args(&["--config", missing.to_str().unwrap()]));
    assert!(matches!(r, Err(CliError::Config(ConfigError::Io(_)))), "{r:?}");
    let bad = std::env::temp_dir().join(format!("pvp-api-contract-{}.toml", std::process::id()));
    std::fs::write(&bad, "players = 10\nfrobnicate = true\n").unwrap();
    let r = cli::parse(args(&["--config", bad.to_str().unwrap()]));
    let _ = std::fs::remove_file(&bad);
    assert!(matches!(r, Err(CliError::Config(ConfigError::Toml(_)))), "{r:?}");
    // Help wins over a config that would be refused; a second config is refused, not ignored.
    assert_eq!(cli::parse(args(&["--config", missing.to_str().unwrap(), "--help"])).unwrap(), Command::Help);
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/multi-region.toml");
    let Command::Run(c, _) = cli::parse(args(&["--config", shipped])).unwrap() else { panic!("a run") };
    assert_eq!(*c, SessionConfig::default());
    let r = cli::parse(args(&["--config", shipped, "--config", "other.toml"]));
    assert!(matches!(&r, Err(CliError::BadValue { value, .. }) if value == "other.toml"), "{r:?}");
}

#[test]
fn derived_settings_match_their_docs() {
    let c = SessionConfig { team_size: 5, tick_rate_hz: 20, ..SessionConfig::default() };
    assert_eq!(c.match_players(), 10);
    assert_eq!(c.tick_interval(), Duration::from_millis(50));
    assert_eq!(c.region_index("jp".parse().unwrap()), Some(1));
    assert_eq!(c.region_index("us".parse().unwrap()), None);
    let fleet = c.fleet().unwrap();
    assert_eq!(fleet.regions.len(), 3);
    // A config built by hand (fields are public) never makes these panic.
    let zero = SessionConfig { tick_rate_hz: 0, ..SessionConfig::default() };
    assert!(zero.validate().is_err());
    assert!(zero.tick_interval() > Duration::ZERO);
}

#[test]
fn latency_tables_name_only_known_regions_and_cover_every_peer() {
    let us: RegionId = "us".parse().unwrap();
    let mut c = SessionConfig::default();
    c.regions[0].player_rtt_ms.insert(us, 150);
    assert!(
        matches!(c.validate(), Err(ConfigError::Invalid { field: "regions.player_rtt_ms", .. })),
        "{c:?}"
    );
    let mut c = SessionConfig::default();
    c.regions[0].backbone_rtt_ms.insert(us, 150);
    assert!(matches!(c.validate(), Err(ConfigError::Invalid { field: "regions.backbone_rtt_ms", .. })));
    let mut c = SessionConfig::default();
    let kr = c.regions[0].id;
    c.regions[0].backbone_rtt_ms.insert(kr, 1);
    assert!(matches!(c.validate(), Err(ConfigError::Invalid { field: "regions.backbone_rtt_ms", .. })));
    let mut c = SessionConfig::default();
    c.regions[2].backbone_rtt_ms.clear();
    assert!(matches!(c.validate(), Err(ConfigError::Invalid { field: "regions.backbone_rtt_ms", .. })));
    // One region needs no backbone at all.
    let mut c = SessionConfig::default();
    c.regions.truncate(1);
    c.regions[0].backbone_rtt_ms.clear();
    c.regions[0].player_rtt_ms.retain(|id, _| *id == kr);
    c.validate().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Command line

#[test]
fn duration_flag_edge_cases() {
    let Command::Run(c, Deployment::InProcess) = cli::parse(args(&["--duration", "0"])).unwrap() else {
        panic!("a run")
    };
    assert_eq!(c.duration_secs, 0.0);
    for v in ["-1", "nan", "inf", "1e300"] {
        assert_eq!(cli_invalid_field(cli::parse(args(&["--duration", v]))), "duration_secs", "{v}");
    }
    for v in ["abc", "", "30s", "1,5"] {
        let r = cli::parse(args(&["--duration", v]));
        assert!(
            matches!(&r, Err(CliError::BadValue { option: "--duration", value }) if value == v),
            "{v}: {r:?}"
        );
    }
    assert!(matches!(cli::parse(args(&["--duration"])), Err(CliError::MissingValue("--duration"))));
}

#[test]
fn players_flag_edge_cases() {
    for v in ["-1", "x", "1e3", "4294967296"] {
        let r = cli::parse(args(&["--players", v]));
        assert!(matches!(r, Err(CliError::BadValue { option: "--players", .. })), "{v}: {r:?}");
    }
    assert_eq!(cli_invalid_field(cli::parse(args(&["--players", "0"]))), "players");
    assert_eq!(cli_invalid_field(cli::parse(args(&["--players", "4294967295"]))), "players");
    // Fewer bots than one duel could never play.
    assert_eq!(cli_invalid_field(cli::parse(args(&["--players", "1"]))), "players");
    let Command::Run(c, _) = cli::parse(args(&["--players", "2"])).unwrap() else { panic!("a run") };
    assert_eq!(c.players, 2);
}

#[test]
fn unknown_flags_and_help() {
    let r = cli::parse(args(&["--frobnicate"]));
    assert!(matches!(&r, Err(CliError::Unknown(a)) if a == "--frobnicate"));
    assert!(r.unwrap_err().to_string().contains("--frobnicate"));
    assert!(matches!(cli::parse(args(&["extra"])), Err(CliError::Unknown(_))));
    assert_eq!(cli::parse(args(&["-h"])).unwrap(), Command::Help);
    assert_eq!(cli::parse(args(&["--players", "5", "--help"])).unwrap(), Command::Help);
    assert!(cli::HELP.contains("--duration") && cli::HELP.contains("--peers"));
    assert_eq!(cli_invalid_field(cli::parse(args(&["--metrics", "nope"]))), "metrics_addr");
    let Command::Run(c, _) = cli::parse(args(&["--metrics", ""])).unwrap() else { panic!("a run") };
    assert!(c.metrics_addr.is_empty());
    assert!(matches!(cli::parse(args(&["--seed", "-3"])), Err(CliError::BadValue { option: "--seed", .. })));
    assert!(matches!(cli::parse(args(&["--progress", "x"])), Err(CliError::BadValue { .. })));
    assert_eq!(cli_invalid_field(cli::parse(args(&["--progress", "-1"]))), "progress_interval_secs");
}

fn multi(extra: &[&str]) -> Result<Command, CliError> {
    let mut a = args(&["--region", "kr", "--sync", "127.0.0.1:7101", "--control", "127.0.0.1:7100"]);
    a.extend(args(extra));
    cli::parse(a)
}

#[test]
fn multi_process_flags_refuse_unknown_regions_and_bad_peers() {
    let Command::Run(_, Deployment::OneRegion(role)) =
        multi(&["--peers", "jp=127.0.0.1:7102,sg=127.0.0.1:7103", "--leader"]).unwrap()
    else {
        panic!("one region")
    };
    assert!(role.leader);
    assert_eq!(role.region, "kr".parse::<RegionId>().unwrap());
    let addr: SocketAddr = "127.0.0.1:7102".parse().unwrap();
    assert!(role.peers.contains(&("jp".parse().unwrap(), addr)));

    // A region the config does not have.
    let r = cli::parse(args(&[
        "--region",
        "us",
        "--sync",
        "127.0.0.1:7101",
        "--control",
        "127.0.0.1:7100",
        "--peers",
        "jp=127.0.0.1:7102,sg=127.0.0.1:7103,kr=127.0.0.1:7101",
    ]));
    assert!(matches!(r, Err(CliError::BadValue { option: "--region", .. })), "{r:?}");
    // Not a region id at all.
    let r = cli::parse(args(&[
        "--region",
        "THIS IS NOT AN ID",
        "--sync",
        "127.0.0.1:1",
        "--control",
        "127.0.0.1:2",
    ]));
    assert!(matches!(r, Err(CliError::BadValue { option: "--region", .. })), "{r:?}");
    // Garbage peer lists.
    for p in ["jp", "jp=", "jp=nowhere", "=127.0.0.1:1", "jp=127.0.0.1:7102;sg=127.0.0.1:7103"] {
        assert!(matches!(multi(&["--peers", p]), Err(CliError::BadValue { option: "--peers", .. })), "{p}");
    }
    // A peer in a region the config does not have, this process's own region, or a region
    // named twice is refused rather than silently ignored.
    for p in [
        "jp=127.0.0.1:7102,sg=127.0.0.1:7103,us=127.0.0.1:7104",
        "jp=127.0.0.1:7102,sg=127.0.0.1:7103,kr=127.0.0.1:7109",
        "jp=127.0.0.1:7102,sg=127.0.0.1:7103,jp=127.0.0.1:7105",
    ] {
        let r = multi(&["--peers", p]);
        assert!(matches!(r, Err(CliError::BadValue { option: "--peers", .. })), "{p}: {r:?}");
    }
    // Missing pieces of the multi-process set.
    assert!(matches!(multi(&["--peers", "jp=127.0.0.1:7102"]), Err(CliError::MissingValue(_))));
    assert!(matches!(cli::parse(args(&["--sync", "127.0.0.1:1"])), Err(CliError::MissingValue(_))));
    assert!(matches!(
        cli::parse(args(&["--sync", "nope"])),
        Err(CliError::BadValue { option: "--sync", .. })
    ));
    assert!(matches!(
        cli::parse(args(&["--control", "127.0.0.1"])),
        Err(CliError::BadValue { option: "--control", .. })
    ));
}

#[test]
fn etcd_endpoints_must_be_http_client_urls() {
    let ok = SessionConfig::from_toml_str(r#"etcd_endpoints = ["http://127.0.0.1:2379", "http://e2:2379"]"#)
        .unwrap();
    assert_eq!(ok.etcd_endpoints.len(), 2);
    ok.validate().unwrap();
    for bad in [
        r#"etcd_endpoints = ["127.0.0.1:2379"]"#,
        r#"etcd_endpoints = ["https://127.0.0.1:2379"]"#,
        r#"etcd_endpoints = ["http://127.0.0.1"]"#,
        r#"etcd_endpoints = ["http://127.0.0.1:0"]"#,
        r#"etcd_endpoints = ["http://127.0.0.1:99999"]"#,
        r#"etcd_endpoints = ["http://:2379"]"#,
        r#"etcd_endpoints = ["http://a b:2379"]"#,
        r#"etcd_endpoints = [""]"#,
    ] {
        assert_eq!(invalid_field(SessionConfig::from_toml_str(bad)), "etcd_endpoints", "{bad}");
    }
    let many: Vec<String> = (0..17).map(|i| format!("\"http://10.0.0.{i}:2379\"")).collect();
    let toml = format!("etcd_endpoints = [{}]", many.join(","));
    assert_eq!(invalid_field(SessionConfig::from_toml_str(&toml)), "etcd_endpoints");
    // The command line's list goes through the same check.
    let multi = |extra: &[&str]| {
        let mut a = vec![
            "--region",
            "kr",
            "--sync",
            "127.0.0.1:7101",
            "--control",
            "127.0.0.1:7301",
            "--peers",
            "jp=127.0.0.1:7102,sg=127.0.0.1:7103",
        ];
        a.extend_from_slice(extra);
        cli::parse(args(&a))
    };
    let Command::Run(c, Deployment::OneRegion(role)) =
        multi(&["--etcd", "http://127.0.0.1:2379,http://127.0.0.1:2381"]).unwrap()
    else {
        panic!("multi-process run expected")
    };
    assert_eq!(c.etcd_endpoints, ["http://127.0.0.1:2379", "http://127.0.0.1:2381"]);
    assert!(!role.leader, "an elected session has no fixed leader");
    assert_eq!(cli_invalid_field(multi(&["--etcd", "ftp://x:1"])), "etcd_endpoints");
    // --leader and --etcd contradict each other; --etcd needs multi-process mode.
    assert!(matches!(
        multi(&["--etcd", "http://127.0.0.1:2379", "--leader"]),
        Err(CliError::BadValue { .. })
    ));
    assert!(matches!(cli::parse(args(&["--etcd", "http://127.0.0.1:2379"])), Err(CliError::MissingValue(_))));
}
