//! Server and client configs: out-of-range values are typed errors, huge and zero intervals
//! neither panic nor loop.

use std::time::{Duration, Instant};

use pvp_net::proto::*;

use crate::common::{MS, UNIX, claims, client_addr, connect_request, key, pump, server, server_addr};

#[test]
fn server_config_bounds_are_refused_with_typed_errors() {
    let now = Instant::now();
    let base = ServerConfig::new(key(), server_addr());
    let mut c = base.clone();
    c.max_sessions = 0;
    assert_eq!(Server::new(c, now, UNIX).err(), Some(ConfigError::BadBound));
    let mut c = base.clone();
    c.max_pending = 0;
    assert_eq!(Server::new(c, now, UNIX).err(), Some(ConfigError::BadBound));
    let mut c = base.clone();
    c.max_sessions = u32::MAX as usize + 1;
    assert_eq!(Server::new(c, now, UNIX).err(), Some(ConfigError::BadBound));
    let mut c = base.clone();
    c.idle_timeout = Duration::ZERO;
    assert_eq!(Server::new(c, now, UNIX).err(), Some(ConfigError::BadTimeouts));
    let mut c = base.clone();
    c.handshake_timeout = Duration::ZERO;
    assert_eq!(Server::new(c, now, UNIX).err(), Some(ConfigError::BadTimeouts));
    let mut c = base.clone();
    c.timer_granularity = Duration::ZERO;
    assert_eq!(Server::new(c, now, UNIX).err(), Some(ConfigError::BadTimeouts));
    let mut c = base.clone();
    c.keepalive_interval = c.idle_timeout;
    assert_eq!(Server::new(c, now, UNIX).err(), Some(ConfigError::BadTimeouts));
    // The largest allowed bound is accepted (tables grow lazily).
    let mut c = base;
    c.max_sessions = u32::MAX as usize;
    assert!(Server::new(c, now, UNIX).is_ok());
}

#[test]
fn huge_server_config_values_do_not_panic() {
    let now = Instant::now();
    let mut c = ServerConfig::new(key(), server_addr());
    c.max_pending = usize::MAX;
    c.max_sessions = u32::MAX as usize;
    let mut s = Server::new(c, now, UNIX).unwrap();
    s.handle_datagram(now, client_addr(), &connect_request(&key().issue(&claims(1))));
    assert_eq!(s.stats().pending, 1);

    let mut c = ServerConfig::new(key(), server_addr());
    c.timer_granularity = Duration::MAX;
    c.handshake_timeout = Duration::MAX;
    c.idle_timeout = Duration::MAX;
    c.keepalive_interval = Duration::MAX / 2;
    c.reliable_resend = Duration::MAX;
    let mut s = Server::new(c, now, UNIX).unwrap();
    s.handle_datagram(now, client_addr(), &connect_request(&key().issue(&claims(2))));
    s.handle_timeout(now + Duration::from_secs(3600));
    assert_eq!(s.stats().pending, 1);
    assert!(s.poll_timeout().is_some());

    // A wall clock at the end of time: every token is expired, nothing panics.
    let mut s = Server::new(ServerConfig::new(key(), server_addr()), now, Duration::MAX).unwrap();
    s.handle_datagram(now + MS, client_addr(), &connect_request(&key().issue(&claims(3))));
    assert_eq!(s.drops().get(DropReason::TokenExpired), 1);
}

#[test]
fn client_with_zero_intervals_does_not_loop_forever() {
    let now = Instant::now();
    let mut s = server(now);
    let mut cfg = ClientConfig::default();
    cfg.handshake_resend = Duration::ZERO;
    cfg.keepalive_interval = Duration::ZERO;
    cfg.reliable_resend = Duration::ZERO;
    let mut c = Client::new(cfg, key().issue(&claims(1)), now).unwrap();
    let mut buf = [0u8; MAX_PACKET_LEN];
    // At one instant, a zero resend interval still sends each packet once.
    let mut n = 0;
    while let Some(t) = c.poll_transmit(now, &mut buf) {
        n += 1;
        assert!(n < 100, "poll_transmit never returned None");
        s.handle_datagram(now, client_addr(), &buf[..t.len]);
    }
    assert_eq!(n, 1);
    pump(now, &mut s, &mut c, client_addr());
    assert!(c.is_connected());
    c.send_reliable(b"r").unwrap();
    let later = now + MS;
    let mut n = 0;
    while c.poll_transmit(later, &mut buf).is_some() {
        n += 1;
        assert!(n < 100, "poll_transmit never returned None");
    }
    assert_eq!(n, 1);
}

#[test]
fn client_with_huge_intervals_does_not_panic() {
    let now = Instant::now();
    let mut s = server(now);
    let mut cfg = ClientConfig::default();
    cfg.handshake_resend = Duration::MAX;
    cfg.handshake_timeout = Duration::MAX;
    cfg.idle_timeout = Duration::MAX;
    cfg.keepalive_interval = Duration::MAX;
    cfg.reliable_resend = Duration::MAX;
    let mut c = Client::new(cfg, key().issue(&claims(1)), now).unwrap();
    assert!(c.poll_timeout().is_some());
    pump(now, &mut s, &mut c, client_addr());
    assert!(c.is_connected());
    let t = c.poll_timeout().unwrap();
    assert!(t > now);
    c.send_reliable(b"x").unwrap();
    assert!(c.poll_timeout().is_some());
    c.handle_timeout(now + Duration::from_secs(1_000_000));
    assert!(c.is_connected());
}
