//! A `GameServer`'s metrics reach the pvp-ops registry (installed as the global `metrics`
//! recorder, so this test has its own binary) and render as Prometheus text: sessions opened
//! and closed, drops by reason, payloads in.

use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pvp_net::game::{GameClient, GameServer, GameServerConfig};
use pvp_net::netcode::{ClientConfig, IssuerConfig, Key, TokenIssuer};
use pvp_ops::metrics::MetricsRegistry;

mod common;

#[test]
fn game_server_metrics_land_in_the_registry() {
    let registry = MetricsRegistry::new();
    registry.install().expect("first recorder in this binary");
    let key = Key::random();
    let server =
        GameServer::bind(GameServerConfig::new("127.0.0.1:0".parse().unwrap(), 3, key.clone())).unwrap();
    let issuer = TokenIssuer::new(IssuerConfig::new(3, key));
    let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let token = issuer.token_with_user_data(unix, 1, &[server.public_address()], [0; 256]).unwrap();
    let mut cc = ClientConfig::default();
    cc.layered = false;
    let mut client = GameClient::new(token, cc).unwrap();
    client.connect_blocking(Duration::from_secs(5)).unwrap();
    for _ in 0..5 {
        client.send(b"input").unwrap();
    }
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..7 {
        junk.send_to(&[0xFF; 40], server.local_addr()).unwrap();
    }
    client.disconnect();
    // Workers publish their counts every 100 ms; wait (bounded) until they have.
    let deadline = Instant::now() + Duration::from_secs(5);
    let get = |n: &str| registry.counter_total(n).unwrap_or(0);
    while (get("pvp_net_netcode_sessions_closed_total") < 1
        || get("pvp_net_packets_dropped_total") < 16
        || get("pvp_net_game_payloads_in_total") < 5)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(get("pvp_net_netcode_sessions_opened_total"), 1);
    assert_eq!(get("pvp_net_netcode_sessions_closed_total"), 1);
    assert_eq!(get("pvp_net_game_payloads_in_total"), 5);
    // The 7 junk datagrams, plus the client's redundant disconnect packets after the first
    // (9 of 10, from an address that no longer has a session).
    assert_eq!(get("pvp_net_packets_dropped_total"), 16);
    let text = registry.render();
    assert!(text.contains("pvp_net_packets_dropped_total{reason=\"malformed\"} 7"), "{text}");
    assert!(text.contains("pvp_net_packets_dropped_total{reason=\"unknown_connection\"} 9"), "{text}");
    assert!(text.contains("pvp_net_netcode_sessions_closed_total{reason=\"peer\"} 1"), "{text}");
    // The exposition is valid Prometheus text.
    common::promtool_check(&text);
    server.shutdown().unwrap();
}
