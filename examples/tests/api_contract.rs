//! The public API's contract on bad input: configs, command lines, datagrams and tokens give
//! typed errors (and the binaries a non-zero exit with a message), never a panic or a hang.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command as Proc, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use pvp_core::ids::{MatchId, PlayerId, RegionId, ServerId};
use pvp_examples::cli::{self, CliError, Command};
use pvp_examples::config::{ConfigError, MAX_PLAYERS};
use pvp_examples::token::{TOKEN_LEN, TokenClaims, TokenError, TokenKey};
use pvp_examples::wire::{GamePacket, LoggedOp, MAX_DATAGRAM, SyncMessage, SyncOp};
use pvp_examples::{SessionConfig, Topology};

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

// ---- config -------------------------------------------------------------------------------

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

// ---- command line -------------------------------------------------------------------------

#[test]
fn duration_flag_edge_cases() {
    let Command::Run(c, Topology::InProcess) = cli::parse(args(&["--duration", "0"])).unwrap() else {
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
    let Command::Run(_, Topology::OneRegion(role)) =
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

// ---- wire ---------------------------------------------------------------------------------

fn sample_packets(token: &[u8]) -> Vec<GamePacket<'_>> {
    let (m, p) = (MatchId::new(77), PlayerId::new(100_000_123));
    vec![
        GamePacket::Connect { token },
        GamePacket::Accepted { match_id: m, player: p },
        GamePacket::Denied { match_id: m, player: p },
        GamePacket::State { match_id: m, player: p, tick: u32::MAX },
        GamePacket::Input { match_id: m, player: p, tick: 3 },
        GamePacket::End { match_id: m, player: p, won: true },
    ]
}

fn sample_sync() -> Vec<SyncMessage> {
    let kr: RegionId = "kr".parse().unwrap();
    let jp: RegionId = "jp".parse().unwrap();
    vec![
        SyncMessage::Ops { origin: kr, ops: Vec::new() },
        SyncMessage::Ops {
            origin: kr,
            ops: vec![
                LoggedOp {
                    seq: 1,
                    written_unix_ms: 1_700_000_000_000,
                    op: SyncOp::MatchResult {
                        match_id: MatchId::new(5),
                        region: kr,
                        team_a: vec![PlayerId::new(1)],
                        team_b: vec![PlayerId::new(2)],
                        winner: 1,
                    },
                },
                LoggedOp { seq: 2, written_unix_ms: 1, op: SyncOp::Ban { player: PlayerId::new(9) } },
            ],
        },
        SyncMessage::Ack { from: jp, origin: kr, upto: u64::MAX },
    ]
}

#[test]
fn every_packet_round_trips_and_every_truncation_is_an_error() {
    let token = [7u8; TOKEN_LEN];
    for p in sample_packets(&token) {
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = p.encode(&mut buf).unwrap().len();
        assert_eq!(GamePacket::decode(&buf[..n]).unwrap(), p);
        for cut in 0..n {
            assert!(GamePacket::decode(&buf[..cut]).is_err(), "{p:?} cut at {cut}");
        }
    }
    for m in sample_sync() {
        let bytes = m.encode().unwrap();
        assert_eq!(SyncMessage::decode(&bytes).unwrap(), m);
        for cut in 0..bytes.len() {
            assert!(SyncMessage::decode(&bytes[..cut]).is_err(), "{m:?} cut at {cut}");
        }
    }
}

#[test]
fn trailing_bytes_make_a_datagram_malformed() {
    let token = [1u8; TOKEN_LEN];
    for p in sample_packets(&token) {
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = p.encode(&mut buf).unwrap().len();
        assert!(GamePacket::decode(&buf[..n + 1]).is_err(), "{p:?} with a trailing byte");
    }
    for m in sample_sync() {
        let mut bytes = m.encode().unwrap();
        bytes.extend_from_slice(&[0xff, 0x00]);
        assert!(SyncMessage::decode(&bytes).is_err(), "{m:?} with trailing bytes");
    }
}

#[test]
fn garbage_datagrams_are_errors_not_panics_or_huge_allocations() {
    // Unknown variant tags, and length prefixes far beyond the bytes present.
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![6],
        vec![0xff; 16],
        vec![0, 0xff, 0xff, 0xff, 0xff, 0x0f],
        vec![0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
        vec![0, 2, b'k', b'r', 0xff, 0xff, 0xff, 0xff, 0x0f],
        vec![0, 2, b'K', b'R', 0],
        vec![0, 40, b'a', b'b'],
    ];
    for b in &cases {
        assert!(GamePacket::decode(b).is_err(), "{b:?}");
        assert!(SyncMessage::decode(b).is_err(), "{b:?}");
    }
    // A deterministic sweep of pseudo-random bytes: decoding never panics, and whatever
    // decodes re-encodes to the same bytes (decode accepts only canonical datagrams).
    let mut x: u64 = 0x243f_6a88_85a3_08d3;
    for len in 0..64usize {
        for _ in 0..64 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 9) as u8
                })
                .collect();
            if let Ok(p) = GamePacket::decode(&bytes) {
                let mut buf = [0u8; MAX_DATAGRAM];
                assert_eq!(p.encode(&mut buf).unwrap(), &bytes[..]);
            }
            if let Ok(m) = SyncMessage::decode(&bytes) {
                assert_eq!(m.encode().unwrap(), bytes);
            }
        }
    }
}

#[test]
fn encode_into_a_small_buffer_is_an_error() {
    let token = [0u8; TOKEN_LEN];
    let p = GamePacket::Connect { token: &token };
    let mut small = [0u8; 8];
    let e = p.encode(&mut small).unwrap_err();
    assert!(e.to_string().contains("malformed datagram") || !e.to_string().is_empty());
}

// ---- tokens -------------------------------------------------------------------------------

fn claims(addr: SocketAddr) -> TokenClaims {
    TokenClaims {
        match_id: MatchId::new(u64::MAX),
        player: PlayerId::new(200_000_001),
        server: ServerId::new(42),
        server_addr: addr,
        expires_unix_ms: 1_700_000_000_000,
    }
}

#[test]
fn tokens_round_trip_for_v4_and_v6_and_expire_after_their_time() {
    let key = TokenKey::from_bytes([3; 32]);
    for addr in ["127.0.0.1:7000", "[::1]:65535"] {
        let addr: SocketAddr = addr.parse().unwrap();
        let c = claims(addr);
        let t = key.issue(&c);
        assert_eq!(t.len(), TOKEN_LEN);
        assert_eq!(key.open(&t, 0, addr), Ok(c));
        // "after which the token is void": valid at its expiry ms, void one ms later.
        assert_eq!(key.open(&t, c.expires_unix_ms, addr), Ok(c));
        assert_eq!(key.open(&t, c.expires_unix_ms + 1, addr), Err(TokenError::Expired));
        assert_eq!(key.open(&t, u64::MAX, addr), Err(TokenError::Expired));
    }
    // Same seed, same key; another seed, another key.
    let a = TokenKey::from_seed(11);
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let t = a.issue(&claims(addr));
    assert!(TokenKey::from_seed(11).open(&t, 0, addr).is_ok());
    assert!(matches!(TokenKey::from_seed(12).open(&t, 0, addr), Err(TokenError::Net(_))));
}

#[test]
fn every_tampered_byte_and_every_wrong_length_is_refused() {
    let key = TokenKey::from_seed(5);
    let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
    let t = key.issue(&claims(addr));
    for i in 0..TOKEN_LEN {
        for bit in [0x01u8, 0x80] {
            let mut bad = t;
            bad[i] ^= bit;
            assert!(key.open(&bad, 0, addr).is_err(), "byte {i} bit {bit:#x} accepted");
        }
    }
    for len in [0, 1, TOKEN_LEN - 1, TOKEN_LEN + 1, 4 * TOKEN_LEN] {
        let mut v = t.to_vec();
        v.resize(len, 0);
        assert_eq!(key.open(&v, 0, addr), Err(TokenError::Length), "length {len}");
    }
    assert_eq!(key.open(&t, 0, "127.0.0.2:7000".parse().unwrap()), Err(TokenError::WrongServer));
}

// ---- binaries -----------------------------------------------------------------------------

/// Runs a binary with `args`, killing it if it outlives `limit`; returns (exit code, stdout,
/// stderr).
fn run_bin(bin: &str, a: &[&str], limit: Duration) -> (Option<i32>, String, String) {
    let mut child = Proc::new(bin)
        .args(a)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let (mut o, mut e) = (String::new(), String::new());
        let _ = out.read_to_string(&mut o);
        let _ = err.read_to_string(&mut e);
        let _ = tx.send((o, e));
    });
    let got = rx.recv_timeout(limit);
    if got.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().expect("waits");
    let _ = reader.join();
    let (o, e) = got.unwrap_or_else(|_| panic!("{bin} {a:?} still running after {limit:?}"));
    (status.code(), o, e)
}

const MR: &str = env!("CARGO_BIN_EXE_multi-region");
const CF: &str = env!("CARGO_BIN_EXE_chaos-failover");

#[test]
fn binaries_refuse_bad_flags_with_a_message_and_exit_2() {
    let quick = Duration::from_secs(30);
    for bin in [MR, CF] {
        let cases: &[(&[&str], &str)] = &[
            (&["--frobnicate"], "--frobnicate"),
            (&["--duration", "-1"], "duration_secs"),
            (&["--duration", "abc"], "--duration"),
            (&["--duration", "1e300"], "duration_secs"),
            (&["--players", "0"], "players"),
            (&["--players", "4294967295"], "players"),
            (&["--players"], "--players"),
            (&["--config", "/nonexistent/pvp.toml"], "config file"),
            (&["--metrics", "nope"], "metrics_addr"),
        ];
        for (a, says) in cases {
            let (code, out, err) = run_bin(bin, a, quick);
            assert_eq!(code, Some(2), "{bin} {a:?}: stdout {out} stderr {err}");
            assert!(err.contains(says), "{bin} {a:?}: stderr {err:?} names {says}");
            assert!(!err.contains("panicked"), "{err}");
        }
        let (code, out, _) = run_bin(bin, &["--help"], quick);
        assert_eq!(code, Some(0));
        assert!(out.contains("--duration") && out.contains("--players"), "{out}");
    }
    // chaos-failover runs every region itself.
    let (code, _, err) = run_bin(
        CF,
        &[
            "--region",
            "kr",
            "--sync",
            "127.0.0.1:1",
            "--control",
            "127.0.0.1:2",
            "--peers",
            "jp=127.0.0.1:3,sg=127.0.0.1:4",
        ],
        quick,
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("one process"), "{err}");
}

#[test]
fn a_tiny_run_exits_zero_with_a_report() {
    let (code, out, err) = run_bin(
        MR,
        &["--players", "12", "--duration", "1", "--progress", "0", "--metrics", ""],
        Duration::from_secs(90),
    );
    assert_eq!(code, Some(0), "stdout {out}\nstderr {err}");
    assert!(out.contains("multi-region: 12 bots over kr, jp, sg for 1 s"), "{out}");
    assert!(out.contains("== multi-region report =="), "{out}");
    assert!(!out.contains("metrics: http"), "metrics off: {out}");
    for s in out.lines().filter_map(|l| l.strip_prefix("snapshot            ")) {
        let _ = std::fs::remove_file(s);
    }
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
