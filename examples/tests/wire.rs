//! What crosses the network: every game and sync datagram round-trips and every truncation,
//! trailing byte or garbage input is an error (never a panic or a huge allocation), encoding into
//! a small buffer is an error, and connect tokens round-trip for IPv4 and IPv6, expire after
//! their time and refuse every tampered byte and wrong length.

use std::net::SocketAddr;

use pvp_core::ids::{MatchId, PlayerId, RegionId, ServerId};
use pvp_examples::token::{TOKEN_LEN, TokenClaims, TokenError, TokenKey};
use pvp_examples::wire::{GamePacket, LoggedOp, MAX_DATAGRAM, SyncMessage, SyncOp};

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

// ---------------------------------------------------------------------------------------------
// Connect tokens

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
