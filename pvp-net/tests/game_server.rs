//! `GameServer` and `GameClient` over real loopback sockets, on both drivers: many clients
//! on several workers, match broadcasts, reliable messages, the session bound, junk from
//! outside, shutdown. Every loop is bounded by a deadline.

use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pvp_core::{MatchId, PlayerId};
use pvp_net::DriverChoice;
use pvp_net::game::{GameClient, GameEvent, GameServer, GameServerConfig};
use pvp_net::netcode::{
    ClientConfig, ClientEvent, ClientState, IssuerConfig, Key, SessionGrant, SessionUserData, TokenIssuer,
};
use pvp_net::proto::DropReason;

const PID: u64 = 0xFEED;

fn unix() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

struct Setup {
    server: GameServer,
    issuer: TokenIssuer,
}

fn setup(driver: DriverChoice, workers: usize, max_sessions: usize) -> Option<Setup> {
    let key = Key::random();
    let mut c = GameServerConfig::new("127.0.0.1:0".parse().unwrap(), PID, key.clone());
    c.udp.driver = driver;
    c.udp.workers = workers;
    c.max_sessions = max_sessions;
    let server = match GameServer::bind(c) {
        Ok(s) => s,
        // io_uring may be forbidden (containers, seccomp): that driver's run skips itself.
        Err(e) if driver == DriverChoice::IoUring => {
            eprintln!("io_uring unavailable, skipped: {e}");
            return None;
        }
        Err(e) => panic!("{e}"),
    };
    Some(Setup { server, issuer: TokenIssuer::new(IssuerConfig::new(PID, key)) })
}

impl Setup {
    fn client(&self, id: u64, match_id: u64) -> GameClient {
        let grant = SessionGrant {
            client_id: id,
            server_addresses: vec![self.server.public_address()],
            user_data: SessionUserData {
                match_id: MatchId::new(match_id),
                player: PlayerId::new(id),
                team: (id % 2) as u8,
                layered: true,
                game_data: vec![],
            },
        };
        GameClient::new(self.issuer.token(unix(), &grant).unwrap(), ClientConfig::default()).unwrap()
    }
}

fn many_clients_on_several_workers(driver: DriverChoice) {
    let Some(s) = setup(driver, 2, 64) else { return };
    let mut clients: Vec<GameClient> = (0..40).map(|i| s.client(i, i % 4)).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while clients.iter().any(|c| !c.is_connected()) && Instant::now() < deadline {
        for c in &mut clients {
            c.update().unwrap();
        }
        std::thread::sleep(Duration::from_millis(1)); // pacing only; the loop checks state
    }
    assert!(clients.iter().all(|c| c.is_connected()), "all 40 connected");
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(format!("input {i}").as_bytes()).unwrap();
        c.send_reliable(format!("chat {i}").as_bytes()).unwrap();
    }
    let mut events = Vec::new();
    let (mut connected, mut inputs, mut chats) = (0, 0, 0);
    let mut workers_seen = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (connected < 40 || inputs < 40 || chats < 40) && Instant::now() < deadline {
        for c in &mut clients {
            c.update().unwrap();
        }
        s.server.poll_events(&mut events, 1024);
        for e in events.drain(..) {
            match e {
                GameEvent::Connected { session, seat, .. } => {
                    let seat = seat.expect("our layout");
                    assert_eq!(seat.player.get(), session.client_id());
                    workers_seen.insert(session.worker());
                    connected += 1;
                }
                GameEvent::Payload { session, payload } => {
                    assert_eq!(payload.as_slice(), format!("input {}", session.client_id()).as_bytes());
                    inputs += 1;
                }
                GameEvent::Message { session, bytes } => {
                    assert_eq!(bytes, format!("chat {}", session.client_id()).as_bytes());
                    chats += 1;
                }
                GameEvent::Disconnected { .. } => panic!("nobody left"),
            }
        }
    }
    assert_eq!((connected, inputs, chats), (40, 40, 40));
    // Match 2 gets a reliable broadcast; exactly its 10 members receive it.
    s.server.sender().send_to_match(MatchId::new(2), b"round over", true).unwrap();
    let mut got = [false; 40];
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.iter().filter(|g| **g).count() < 10 && Instant::now() < deadline {
        for (i, c) in clients.iter_mut().enumerate() {
            c.update().unwrap();
            while let Some(e) = c.poll_event() {
                if let ClientEvent::Message(m) = e {
                    assert_eq!(m, b"round over");
                    assert!(!got[i], "delivered once");
                    got[i] = true;
                }
            }
        }
    }
    for (i, g) in got.iter().enumerate() {
        assert_eq!(*g, i % 4 == 2, "client {i}");
    }
    let st = s.server.stats();
    assert_eq!(st.sessions, 40);
    assert_eq!(st.events_dropped, 0);
    // Nothing bad arrived. Under load a client may resend its challenge response after the
    // server opened its session (the keep-alive was still on its way); the standard ignores
    // those, counted as `unexpected`. Every other reason stays at zero.
    let bad: Vec<_> =
        s.server.drops().into_iter().filter(|&(r, n)| n > 0 && r != DropReason::Unexpected).collect();
    assert!(bad.is_empty(), "{bad:?}");
    // Shutdown sends each client its disconnect packets.
    s.server.shutdown().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while clients.iter().any(|c| c.state() != ClientState::Disconnected) && Instant::now() < deadline {
        for c in &mut clients {
            c.update().unwrap();
        }
    }
    assert!(clients.iter().all(|c| c.state() == ClientState::Disconnected));
}

#[test]
fn many_clients_on_several_workers_epoll() {
    many_clients_on_several_workers(DriverChoice::Epoll);
}

#[test]
fn many_clients_on_several_workers_io_uring() {
    many_clients_on_several_workers(DriverChoice::IoUring);
}

#[test]
fn sessions_past_the_bound_are_denied_and_junk_is_dropped_input() {
    let Some(s) = setup(DriverChoice::Auto, 1, 3) else { return };
    let mut clients: Vec<GameClient> = (0..4).map(|i| s.client(i, 1)).collect();
    let results: Vec<_> =
        clients[..3].iter_mut().map(|c| c.connect_blocking(Duration::from_secs(5))).collect();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let r = clients[3].connect_blocking(Duration::from_secs(5));
    assert!(matches!(r, Err(pvp_net::game::GameClientError::Failed(ClientState::ConnectionDenied))), "{r:?}");
    // Junk from an outside socket: counted as dropped input, never an event.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..500u32 {
        let mut d = vec![(i % 7) as u8; (i as usize * 13) % 1400 + 1];
        d[0] = (i % 16) as u8;
        junk.send_to(&d, s.server.local_addr()).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.server.stats().dropped < 500 && Instant::now() < deadline {
        for c in &mut clients[..3] {
            c.update().unwrap();
        }
    }
    let st = s.server.stats();
    assert_eq!(st.dropped, 500, "{:?}", s.server.drops());
    assert_eq!(st.denied_full, 1);
    let mut events = Vec::new();
    s.server.poll_events(&mut events, 100);
    assert_eq!(events.iter().filter(|e| matches!(e, GameEvent::Connected { .. })).count(), 3);
    assert!(events.iter().all(|e| matches!(e, GameEvent::Connected { .. })));
    // Every junk datagram is under some reason; prefix bytes below 16 name no sequence length.
    let drops = s.server.drops();
    assert_eq!(drops.iter().map(|(_, n)| n).sum::<u64>(), 500);
    let malformed = drops.iter().find(|(r, _)| *r == DropReason::Malformed).map_or(0, |(_, n)| *n);
    assert!(malformed > 0, "{drops:?}");
}

#[test]
fn bad_configs_are_refused() {
    let key = Key::random();
    let mut c = GameServerConfig::new("127.0.0.1:0".parse().unwrap(), PID, key.clone());
    c.udp.workers = 4;
    c.max_sessions = 2;
    assert!(matches!(GameServer::bind(c), Err(pvp_net::game::GameServerError::Bound(_))));
    let mut c = GameServerConfig::new("127.0.0.1:0".parse().unwrap(), PID, key);
    c.event_queue = 0;
    assert!(matches!(GameServer::bind(c), Err(pvp_net::game::GameServerError::Bound(_))));
}

#[test]
fn ipv6_loopback_sessions_work_end_to_end() {
    let key = Key::random();
    let c = GameServerConfig::new("[::1]:0".parse().unwrap(), PID, key.clone());
    let server = match GameServer::bind(c) {
        Ok(s) => s,
        Err(e) => {
            // A machine without IPv6 on loopback cannot run this; say so rather than pass.
            eprintln!("no IPv6 loopback, skipped: {e}");
            return;
        }
    };
    let issuer = TokenIssuer::new(IssuerConfig::new(PID, key));
    let token = issuer.token_with_user_data(unix(), 5, &[server.public_address()], [0; 256]).unwrap();
    let mut cc = ClientConfig::default();
    cc.layered = false;
    let mut client = GameClient::new(token, cc).unwrap();
    client.connect_blocking(Duration::from_secs(5)).unwrap();
    assert!(client.local_addr().unwrap().is_ipv6());
    client.send(b"v6").unwrap();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut echoed = false;
    while !echoed && Instant::now() < deadline {
        client.update().unwrap();
        server.poll_events(&mut events, 16);
        for e in events.drain(..) {
            if let GameEvent::Payload { session, payload } = e {
                assert_eq!(payload.as_slice(), b"v6");
                server.sender().send(session, b"back").unwrap();
                echoed = true;
            }
        }
    }
    let mut buf = [0u8; 16];
    let n = client.recv_payload_timeout(&mut buf, Duration::from_secs(5)).unwrap().expect("echo over IPv6");
    assert_eq!(&buf[..n], b"back");
}

#[test]
fn oversized_sends_are_refused_before_they_reach_a_worker() {
    let Some(s) = setup(DriverChoice::Auto, 1, 4) else { return };
    let mut c = s.client(1, 9);
    c.connect_blocking(Duration::from_secs(5)).unwrap();
    c.send(b"hi").unwrap();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut session = None;
    while session.is_none() && Instant::now() < deadline {
        c.update().unwrap();
        s.server.poll_events(&mut events, 16);
        session = events.iter().find_map(|e| match e {
            GameEvent::Payload { session, .. } => Some(*session),
            _ => None,
        });
    }
    let session = session.expect("payload arrived");
    let sender = s.server.sender();
    let huge = vec![0u8; pvp_net::netcode::MAX_PAYLOAD_BYTES + 1];
    assert_eq!(sender.send(session, &huge), Err(pvp_net::game::GameSendError::TooLarge));
    assert_eq!(sender.send_reliable(session, &huge), Err(pvp_net::game::GameSendError::TooLarge));
    assert_eq!(
        sender.send_to_match(MatchId::new(9), &huge, false),
        Err(pvp_net::game::GameSendError::TooLarge)
    );
    assert!(pvp_net::game::Payload::new(&huge).is_none());
    assert_eq!(s.server.stats().sends_failed, 0, "refused sends never reached a worker");
}

/// The link delay is on the path: the round trip the client sees (payload out, echo back)
/// grows by twice the one-way delay, and nothing is lost or reordered by holding.
#[test]
fn link_delay_puts_latency_on_the_path() {
    let Some(s) = setup(DriverChoice::Epoll, 1, 8) else { return };
    let mut c = s.client(1, 1);
    c.connect_blocking(Duration::from_secs(5)).unwrap();
    let one_way = Duration::from_millis(25);
    c.set_link_delay(one_way);
    assert_eq!(c.link_delay(), one_way);
    let sender = s.server.sender();
    let mut events = Vec::new();
    let mut buf = [0u8; 64];
    let mut rtts = Vec::new();
    for i in 0u8..5 {
        let sent = Instant::now();
        c.send(&[i]).unwrap();
        // The datagram is held, not sent: a wakeup is due no later than the delay.
        let wake = c.next_wakeup().expect("a held datagram");
        assert!(wake <= sent + one_way + Duration::from_millis(1));
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut echoed = false;
        while !echoed && Instant::now() < deadline {
            c.update().unwrap();
            s.server.poll_events(&mut events, 64);
            for e in events.drain(..) {
                if let GameEvent::Payload { session, payload } = e {
                    assert_eq!(payload.as_slice(), [i], "in order, none lost");
                    sender.send(session, payload.as_slice()).unwrap();
                    echoed = true;
                }
            }
            std::thread::sleep(Duration::from_millis(1)); // pacing only; the loop checks state
        }
        assert!(echoed, "the server got payload {i}");
        let n = c.recv_payload_timeout(&mut buf, Duration::from_secs(5)).unwrap().expect("echo");
        assert_eq!(&buf[..n], [i]);
        rtts.push(sent.elapsed());
    }
    let min = rtts.iter().min().copied().unwrap();
    assert!(min >= one_way * 2, "every round trip includes both delays: {rtts:?}");
    c.set_link_delay(Duration::ZERO);
    assert_eq!(c.link_delay(), Duration::ZERO);
}

/// `abort` is a crash: the client hears no disconnect, and only its own timeout ends the
/// session; `shutdown` (the orderly way) tells it at once.
#[test]
fn abort_says_nothing_and_shutdown_says_goodbye() {
    for orderly in [false, true] {
        let key = Key::random();
        let mut c = GameServerConfig::new("127.0.0.1:0".parse().unwrap(), PID, key.clone());
        c.udp.driver = DriverChoice::Epoll;
        let server = GameServer::bind(c).unwrap();
        let mut ic = IssuerConfig::new(PID, key);
        ic.timeout_seconds = 1;
        let issuer = TokenIssuer::new(ic);
        let grant = SessionGrant {
            client_id: 5,
            server_addresses: vec![server.public_address()],
            user_data: SessionUserData {
                match_id: MatchId::new(1),
                player: PlayerId::new(5),
                team: 0,
                layered: false,
                game_data: vec![],
            },
        };
        let mut client =
            GameClient::new(issuer.token(unix(), &grant).unwrap(), ClientConfig::default()).unwrap();
        client.connect_blocking(Duration::from_secs(5)).unwrap();
        let ended_at = Instant::now();
        if orderly {
            server.shutdown().unwrap()
        } else {
            server.abort().unwrap()
        }
        let mut buf = [0u8; 16];
        let deadline = Instant::now() + Duration::from_secs(5);
        while client.is_connected() && Instant::now() < deadline {
            let _ = client.recv_payload_timeout(&mut buf, Duration::from_millis(20)).unwrap();
        }
        let took = ended_at.elapsed();
        if orderly {
            assert_eq!(client.state(), ClientState::Disconnected);
            assert!(took < Duration::from_millis(900), "told at once: {took:?}");
        } else {
            assert_eq!(client.state(), ClientState::ConnectionTimedOut);
            assert!(took >= Duration::from_millis(900), "only the timeout ended it: {took:?}");
        }
    }
}

/// An inline handler on two workers: it sees each of its worker's sessions connect, answers
/// every payload in the same pass (the reply carries the worker index), broadcasts to a
/// match, is refused a send to another worker's session, and a full backlog says so.
fn inline_handler_answers_on_its_worker(driver: DriverChoice) {
    use pvp_net::game::{GameHandler, GameIo, GameSendError, SessionId};
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Seen {
        connected: Vec<SessionId>,
        disconnected: usize,
        foreign_refused: usize,
        full_refused: usize,
    }
    struct Echo {
        worker: usize,
        seen: Arc<Mutex<Seen>>,
    }
    impl GameHandler for Echo {
        fn on_event(&mut self, _now: Instant, e: GameEvent, io: &mut GameIo<'_>) {
            assert_eq!(io.worker(), self.worker);
            let mut seen = self.seen.lock().unwrap();
            match e {
                GameEvent::Connected { session, .. } => {
                    assert_eq!(session.worker(), self.worker, "a handler sees only its worker's sessions");
                    // A session of some other worker cannot be reached from here.
                    if let Some(other) = seen.connected.iter().find(|s| s.worker() != self.worker) {
                        assert_eq!(io.send(*other, b"x"), Err(GameSendError::NoSuchWorker));
                        seen.foreign_refused += 1;
                    }
                    seen.connected.push(session);
                }
                GameEvent::Payload { session, payload } => {
                    let mut reply = payload.as_slice().to_vec();
                    reply.push(self.worker as u8);
                    io.send(session, &reply).unwrap();
                    // Oversized sends are typed errors here too, never queued.
                    assert_eq!(io.send(session, &[0; 4_096]), Err(GameSendError::TooLarge));
                    assert_eq!(io.send_reliable(session, &[0; 4_096]), Err(GameSendError::TooLarge));
                    assert_eq!(
                        io.send_to_match(MatchId::new(7), &[0; 4_096], false),
                        Err(GameSendError::TooLarge)
                    );
                    if payload.as_slice() == b"all" {
                        io.send_to_match(MatchId::new(7), b"match", false).unwrap();
                    }
                    if payload.as_slice() == b"flood" {
                        // The backlog holds command_queue (64) commands, then refuses.
                        let mut refused = 0;
                        for _ in 0..100 {
                            if io.send(session, b"f") == Err(GameSendError::QueueFull) {
                                refused += 1;
                            }
                        }
                        assert!(refused >= 100 - 64, "refused {refused}");
                        seen.full_refused += refused;
                    }
                }
                GameEvent::Disconnected { .. } => seen.disconnected += 1,
                GameEvent::Message { .. } => {}
            }
        }
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let key = Key::random();
    let mut c = GameServerConfig::new("127.0.0.1:0".parse().unwrap(), PID, key.clone());
    c.udp.driver = driver;
    c.udp.workers = 2;
    c.max_sessions = 64;
    c.command_queue = 64;
    let seen2 = seen.clone();
    let server = match GameServer::bind_inline(c, move |worker| Echo { worker, seen: seen2.clone() }) {
        Ok(s) => s,
        Err(e) if driver == DriverChoice::IoUring => {
            eprintln!("io_uring unavailable, skipped: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let s = Setup { server, issuer: TokenIssuer::new(IssuerConfig::new(PID, key)) };
    let mut clients: Vec<GameClient> = (0..16).map(|i| s.client(i, 7)).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while clients.iter().any(|c| !c.is_connected()) && Instant::now() < deadline {
        for c in &mut clients {
            c.update().unwrap();
        }
        std::thread::sleep(Duration::from_millis(1)); // pacing only; the loop checks state
    }
    assert!(clients.iter().all(|c| c.is_connected()), "all 16 connected");
    let mut events = Vec::new();
    assert_eq!(s.server.poll_events(&mut events, 64), 0, "inline: nothing reaches the queue");
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(format!("in {i}").as_bytes()).unwrap();
    }
    clients[0].send(b"all").unwrap();
    let mut buf = [0u8; 64];
    let mut echoed = vec![None; 16];
    let mut broadcast = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    let on_worker_of_0 = |e: &[Option<usize>]| e.iter().filter(|w| e[0].is_some() && **w == e[0]).count();
    while (echoed.iter().any(Option::is_none) || broadcast < on_worker_of_0(&echoed))
        && Instant::now() < deadline
    {
        for (i, c) in clients.iter_mut().enumerate() {
            while let Some(n) = c.recv_payload(&mut buf).unwrap() {
                let got = &buf[..n];
                if got == b"match" {
                    broadcast += 1;
                } else if got.starts_with(format!("in {i}").as_bytes()) {
                    echoed[i] = Some(usize::from(got[n - 1]));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1)); // pacing only; the loop checks state
    }
    assert!(echoed.iter().all(Option::is_some), "every payload answered: {echoed:?}");
    // The broadcast went to the match's sessions on the first client's worker only.
    let w0 = echoed[0].unwrap();
    assert_eq!(broadcast, on_worker_of_0(&echoed), "a handler's broadcast reaches its own worker's seats");
    clients[1].send(b"flood").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().full_refused == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1)); // pacing only; the loop checks state
    }
    s.server.shutdown().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.connected.len(), 16);
    assert!(seen.full_refused >= 36);
    assert_eq!(seen.disconnected, 16, "shutdown closed every session through the handler");
    if echoed.iter().any(|w| *w != Some(w0)) {
        assert!(seen.foreign_refused > 0, "sessions on both workers, and a cross-worker send was refused");
    }
}

#[test]
fn inline_handler_answers_on_its_worker_epoll() {
    inline_handler_answers_on_its_worker(DriverChoice::Epoll);
}

#[test]
fn inline_handler_answers_on_its_worker_io_uring() {
    inline_handler_answers_on_its_worker(DriverChoice::IoUring);
}
