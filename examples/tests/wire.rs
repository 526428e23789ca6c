//! What crosses the network: every sync datagram round-trips and every truncation, trailing
//! byte or garbage input is an error (never a panic or a huge allocation); the arena's inputs
//! and server messages and the fleet's heartbeats decode only what their encoders write.

use std::net::{Ipv4Addr, SocketAddrV4};

use pvp_core::ids::{MatchId, PlayerId, RegionId, ServerId};
use pvp_examples::arena::{ArenaError, Input, MAX_STAT, ServerMsg};
use pvp_examples::fleet::{Heartbeat, ServerPhase};
use pvp_examples::wire::{LoggedOp, SyncMessage, SyncOp};

fn sample_sync() -> Vec<SyncMessage> {
    let kr: RegionId = "kr".parse().unwrap();
    let jp: RegionId = "jp".parse().unwrap();
    vec![
        SyncMessage::Ops { origin: kr, incarnation: 1, floor: 0, ops: Vec::new() },
        SyncMessage::Ops {
            origin: kr,
            incarnation: u64::MAX,
            floor: 7,
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
        SyncMessage::Ack { from: jp, from_incarnation: 3, origin: kr, origin_incarnation: 4, upto: u64::MAX },
    ]
}

#[test]
fn every_message_round_trips_and_every_truncation_is_an_error() {
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
        assert!(SyncMessage::decode(b).is_err(), "{b:?}");
        assert!(pvp_examples::lobby::LobbyMsg::decode(b).is_err(), "{b:?}");
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
            if let Ok(i) = Input::decode(&bytes) {
                assert_eq!(i.encode()[..], bytes[..]);
            }
            if let Some(m) = ServerMsg::decode(&bytes) {
                let mut b = [0u8; ServerMsg::MAX_BYTES];
                let n = m.encode(&mut b);
                assert_eq!(b[..n], bytes[..]);
            }
            if let Some(h) = Heartbeat::decode(&bytes) {
                assert_eq!(h.encode()[..], bytes[..]);
            }
            if let Ok(m) = SyncMessage::decode(&bytes) {
                assert_eq!(m.encode().unwrap(), bytes);
            }
            if let Ok(m) = pvp_examples::lobby::LobbyMsg::decode(&bytes) {
                assert_eq!(m.encode().unwrap(), bytes);
            }
        }
    }
}

#[test]
fn game_payloads_and_heartbeats_round_trip_and_refuse_every_cut_and_bad_field() {
    let inputs = [Input { tick: 1, aim: 0, guard: MAX_STAT }, Input { tick: u32::MAX, aim: 500, guard: 1 }];
    for i in inputs {
        let b = i.encode();
        assert_eq!(Input::decode(&b), Ok(i));
        for cut in 0..b.len() {
            assert_eq!(Input::decode(&b[..cut]), Err(ArenaError::Malformed), "cut at {cut}");
        }
        let mut long = b.to_vec();
        long.push(0);
        assert_eq!(Input::decode(&long), Err(ArenaError::Malformed));
    }
    let mut over = Input { tick: 1, aim: 0, guard: 0 }.encode();
    over[7..9].copy_from_slice(&(MAX_STAT + 1).to_le_bytes());
    assert_eq!(Input::decode(&over), Err(ArenaError::OutOfRange));
    for m in [ServerMsg::Snapshot { tick: 9, hp: i16::MIN, foes_hp: i16::MAX }, ServerMsg::End { result: 0 }]
    {
        let mut b = [0u8; ServerMsg::MAX_BYTES];
        let n = m.encode(&mut b);
        assert_eq!(ServerMsg::decode(&b[..n]), Some(m));
        for cut in 0..n {
            assert_eq!(ServerMsg::decode(&b[..cut]), None);
        }
    }
    assert_eq!(ServerMsg::decode(&[3, 3]), None, "no result 3");
    let hb = Heartbeat {
        region: 2,
        server: ServerId::new(u64::MAX),
        phase: ServerPhase::Draining,
        fights: 7,
        players: 14,
        addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 65_535),
    };
    let b = hb.encode();
    assert_eq!(Heartbeat::decode(&b), Some(hb));
    for cut in 0..b.len() {
        assert_eq!(Heartbeat::decode(&b[..cut]), None);
    }
    for i in 0..b.len() {
        let mut bad = b;
        bad[i] ^= 0xff;
        // Every byte matters except the payload fields, which may take any value.
        let field = (4..24).contains(&i) && i != 13;
        assert_eq!(Heartbeat::decode(&bad).is_some(), field, "byte {i}");
    }
}

#[test]
fn sealed_heartbeats_open_only_with_the_fleet_key_and_every_changed_byte_is_refused() {
    use pvp_examples::fleet::{FleetKey, HeartbeatError};
    let hb = Heartbeat {
        region: 1,
        server: ServerId::new(42),
        phase: ServerPhase::Ready,
        fights: 0,
        players: 0,
        addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4_000),
    };
    let key = FleetKey::derive(b"deployment");
    let b = hb.seal(&key, 1_700_000_000_123);
    assert_eq!(Heartbeat::open(&b, &key), Ok((hb, 1_700_000_000_123)));
    // A stranger's key, or the plain heartbeat, announces nothing.
    assert_eq!(Heartbeat::open(&b, &FleetKey::derive(b"other")), Err(HeartbeatError::BadTag));
    assert_eq!(Heartbeat::open(&hb.encode(), &key), Err(HeartbeatError::Malformed));
    for cut in 0..b.len() {
        assert_eq!(Heartbeat::open(&b[..cut], &key), Err(HeartbeatError::Malformed));
    }
    for i in 0..b.len() {
        let mut bad = b;
        bad[i] ^= 0x01;
        // The address, the time, any byte: changed on the way means refused.
        assert_eq!(Heartbeat::open(&bad, &key), Err(HeartbeatError::BadTag), "byte {i}");
    }
}
