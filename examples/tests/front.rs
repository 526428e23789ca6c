//! The matchmaking front over HTTP/JSON, used the way an outside game client would: create a
//! ticket, watch it for the assignment, connect to the assigned game server with the netcode
//! token it carries, play the arena game to its end; cancel a ticket; and every bad request
//! is a 4xx with a JSON error, counted as dropped input.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pvp_examples::arena::{Input, ServerMsg};
use pvp_examples::front::EXTERNAL_PLAYERS;
use pvp_examples::{RunningSession, SessionConfig};
use pvp_net::game::GameClient;
use pvp_net::netcode::{ClientConfig, ConnectToken};
use serde_json::{Value, json};

fn call(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let req = ureq::request(method, &format!("http://{addr}{path}")).timeout(Duration::from_secs(15));
    let r = match body {
        Some(b) => req.send_string(&b.to_string()),
        None => req.call(),
    };
    match r {
        Ok(resp) => (resp.status(), resp.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex")).collect()
}

#[test]
fn an_outside_client_queues_connects_plays_and_bad_requests_are_refused() {
    let config = SessionConfig {
        players: 300,
        duration_secs: 0.0,
        progress_interval_secs: 0.0,
        think_time_ms: 100,
        metrics_addr: String::new(),
        ..SessionConfig::default()
    };
    let session = RunningSession::start(config).expect("session starts");
    let front = session.front_addr().expect("front served");
    let p = |k: u64| EXTERNAL_PLAYERS + k;

    // Bad requests: typed errors, never a 5xx.
    let bad = [
        ("POST", "/v1/tickets", Some(json!("not an object")), 400),
        ("POST", "/v1/tickets", Some(json!({"player": 5, "region": "kr"})), 400),
        ("POST", "/v1/tickets", Some(json!({"player": p(9), "region": "xx"})), 400),
        (
            "POST",
            "/v1/tickets",
            Some(json!({"player": p(9), "region": "kr", "latency_ms": {"kr": 99_999}})),
            400,
        ),
        ("POST", "/v1/tickets", Some(json!({"player": p(9), "region": "kr", "extra": 1})), 400),
        ("GET", "/v1/tickets/12345", None, 404),
        ("GET", "/v1/nothing", None, 404),
    ];
    for (m, path, body, want) in bad {
        let (code, v) = call(front, m, path, body.clone());
        assert_eq!(code, want, "{m} {path} {body:?}: {v}");
        assert!(v["error"].is_string(), "a JSON error: {v}");
    }

    // Cancel.
    let (code, _) = call(front, "POST", "/v1/tickets", Some(json!({"player": p(3), "region": "jp"})));
    assert_eq!(code, 201);
    let (code, v) = call(front, "DELETE", &format!("/v1/tickets/{}", p(3)), None);
    assert_eq!((code, v["status"].as_str()), (200, Some("cancelled")), "{v}");

    // Two players queue in kr, a duplicate is refused, both are assigned.
    for k in [1, 2] {
        let (code, v) = call(
            front,
            "POST",
            "/v1/tickets",
            Some(json!({"player": p(k), "region": "kr", "latency_ms": {"kr": 6, "jp": 35}})),
        );
        assert_eq!((code, v["status"].as_str()), (201, Some("queued")), "{v}");
    }
    let (code, _) = call(front, "POST", "/v1/tickets", Some(json!({"player": p(1), "region": "kr"})));
    assert_eq!(code, 409, "one live ticket per player");
    let mut clients = Vec::new();
    for k in [1, 2] {
        let mut assignment = Value::Null;
        for _ in 0..5 {
            let (code, v) = call(front, "GET", &format!("/v1/tickets/{}?wait_ms=3000", p(k)), None);
            assert_eq!(code, 200);
            if v["status"] == "assigned" {
                assignment = v["assignment"].clone();
                break;
            }
            assert_eq!(v["status"], "queued", "{v}");
        }
        assert!(assignment.is_object(), "player {k} assigned");
        let token = ConnectToken::from_bytes(&unhex(assignment["connect_token"].as_str().unwrap())).unwrap();
        let server: SocketAddr = assignment["server"].as_str().unwrap().parse().unwrap();
        assert_eq!(token.server_addresses, vec![server], "the token names the assigned server");
        let mut cc = ClientConfig::default();
        cc.layered = false;
        let mut c = GameClient::new(token, cc).unwrap();
        c.connect_blocking(Duration::from_secs(5)).expect("the game server admits the token");
        clients.push(c);
    }
    // Play: answer every snapshot until the server ends the fight.
    let mut ended = [false; 2];
    let mut buf = [0u8; 32];
    let deadline = Instant::now() + Duration::from_secs(15);
    while ended.iter().any(|e| !e) && Instant::now() < deadline {
        for (i, c) in clients.iter_mut().enumerate() {
            if ended[i] {
                continue;
            }
            if let Some(n) = c.recv_payload_timeout(&mut buf, Duration::from_millis(5)).unwrap() {
                match ServerMsg::decode(&buf[..n]) {
                    Some(ServerMsg::Snapshot { tick, .. }) => {
                        c.send(&Input { tick, aim: 700, guard: 700 }.encode()).unwrap();
                    }
                    Some(ServerMsg::End { .. }) => ended[i] = true,
                    None => {}
                }
            }
            if !c.is_connected() {
                // The server's goodbye after the End (the End itself may be lost).
                ended[i] = true;
            }
        }
    }
    assert_eq!(ended, [true, true], "both fights ended");
    let report = session.finish();
    println!("{report}");
    assert_eq!(report.front_tickets, 3);
    assert!(report.dropped_input >= 8, "every bad request counted: {}", report.dropped_input);
    assert_eq!(report.errors, 0, "bad requests are not service errors");
    for s in &report.snapshots {
        let _ = std::fs::remove_file(s);
    }
}
