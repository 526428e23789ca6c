//! The lobby used the way an outside game client would: log in (a lobby connect token), hold
//! the netcode session, create a ticket over it, receive the assignment (the game server's
//! address and connect token, in two reliable messages), connect and play the arena game to
//! its end. A second ticket while one is queued, junk messages and server-side messages from
//! the client are dropped input, never service errors; a banned player's ticket is refused.

use std::time::{Duration, Instant};

use pvp_core::ids::{PlayerId, RegionId};
use pvp_examples::arena::{Input, ServerMsg};
use pvp_examples::front::EXTERNAL_PLAYERS;
use pvp_examples::lobby::LobbyMsg;
use pvp_examples::{RunningSession, SessionConfig};
use pvp_net::game::GameClient;
use pvp_net::netcode::{ClientConfig, ClientEvent, ConnectToken};

/// Drives `c` until a lobby message arrives (or `within` passes).
fn next_msg(c: &mut GameClient, within: Duration) -> Option<LobbyMsg> {
    let deadline = Instant::now() + within;
    let mut sink = [0u8; 0];
    while Instant::now() < deadline {
        let _ = c.recv_payload_timeout(&mut sink, Duration::from_millis(5)).unwrap();
        while let Some(e) = c.poll_event() {
            if let ClientEvent::Message(m) = e {
                return Some(LobbyMsg::decode(&m).expect("the lobby speaks LobbyMsg"));
            }
        }
    }
    None
}

fn login(session: &RunningSession, player: PlayerId, region: RegionId) -> GameClient {
    let token = session.login(player, region).expect("a lobby token");
    let mut c = GameClient::new(token, ClientConfig::default()).unwrap();
    c.connect_blocking(Duration::from_secs(5)).expect("the lobby admits its token");
    c
}

#[test]
fn an_outside_client_queues_over_the_lobby_plays_and_bad_input_is_dropped() {
    let config = SessionConfig {
        players: 300,
        duration_secs: 0.0,
        progress_interval_secs: 0.0,
        think_time_ms: 100,
        metrics_addr: String::new(),
        front_addr: String::new(),
        ..SessionConfig::default()
    };
    let session = RunningSession::start(config).expect("session starts");
    let kr: RegionId = "kr".parse().unwrap();
    let p = |k: u64| PlayerId::new(EXTERNAL_PLAYERS + k);
    assert!(session.login(PlayerId::new(5), kr).is_none(), "bot ids are not for outside players");

    let mut c = login(&session, p(1), kr);
    // Junk first: bytes that are no message, and a server-side message from a client.
    c.send_reliable(&[0xff, 0xff, 0xff]).unwrap();
    c.send_reliable(&LobbyMsg::TicketFailed.encode().unwrap()).unwrap();
    // A ticket, then the same again while the first is queued.
    let ticket = LobbyMsg::CreateTicket { rtt_ms: vec![(kr, 8), ("jp".parse().unwrap(), 35)] };
    c.send_reliable(&ticket.encode().unwrap()).unwrap();
    c.send_reliable(&ticket.encode().unwrap()).unwrap();
    // The assignment: where to play and the token, in two messages.
    let (match_id, server, head) = match next_msg(&mut c, Duration::from_secs(10)) {
        Some(LobbyMsg::Assigned { match_id, server, token_head, .. }) => (match_id, server, token_head),
        other => panic!("expected an assignment, got {other:?}"),
    };
    let tail = match next_msg(&mut c, Duration::from_secs(5)) {
        Some(LobbyMsg::TokenTail { match_id: m, bytes }) if m == match_id => bytes,
        other => panic!("expected the token's tail, got {other:?}"),
    };
    let token = ConnectToken::from_bytes(&[head, tail].concat()).expect("a whole connect token");
    assert_eq!(token.server_addresses, vec![server], "the token names the assigned server");
    let mut cc = ClientConfig::default();
    cc.layered = false;
    let mut g = GameClient::new(token, cc).unwrap();
    g.connect_blocking(Duration::from_secs(5)).expect("the game server admits the token");
    let mut buf = [0u8; 32];
    let mut ended = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ended && Instant::now() < deadline {
        if let Some(n) = g.recv_payload_timeout(&mut buf, Duration::from_millis(5)).unwrap() {
            match ServerMsg::decode(&buf[..n]) {
                Some(ServerMsg::Snapshot { tick, .. }) => {
                    g.send(&Input { tick, aim: 700, guard: 700 }.encode()).unwrap();
                }
                Some(ServerMsg::End { .. }) => ended = true,
                None => {}
            }
        }
        ended |= !g.is_connected();
        // The lobby session stays up meanwhile (its keep-alives flow).
        let _ = c.update();
    }
    assert!(ended, "the fight ended");
    assert!(c.is_connected(), "the lobby session outlived the fight");

    // A banned player: once kr applied the ban (its replica summary counts it), the ticket
    // is refused over the lobby.
    assert!(session.ban(kr, p(2)));
    let deadline = Instant::now() + Duration::from_secs(10);
    let applied =
        || session.replica_summaries().iter().any(|(r, s)| *r == kr && s.is_some_and(|s| s.bans >= 1));
    while !applied() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20)); // pacing only; the loop checks state
    }
    assert!(applied(), "kr applied the ban");
    let mut b = login(&session, p(2), kr);
    b.send_reliable(&ticket.encode().unwrap()).unwrap();
    assert_eq!(next_msg(&mut b, Duration::from_secs(5)), Some(LobbyMsg::TicketFailed), "refused: banned");
    c.disconnect();
    b.disconnect();
    let report = session.finish();
    println!("{report}");
    assert!(
        report.dropped_by_place[0] >= 3,
        "junk, a client-side copy of a server message and the second ticket: {report}"
    );
    assert_eq!(report.errors, 0, "bad lobby input is not a service error");
    assert_eq!(report.bans_refused_tickets, 1, "the ban refused the ticket");
    for s in &report.snapshots {
        let _ = std::fs::remove_file(s);
    }
}
