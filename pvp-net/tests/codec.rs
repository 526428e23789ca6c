//! The session protocol's packet codec: every packet type round-trips, arbitrary bytes never
//! panic the decoder, short, long and garbage input gets its typed error, and encoding refuses
//! what does not fit.

mod common;

use proptest::prelude::*;
use pvp_core::{MatchId, PlayerId};
use pvp_net::proto::packet::{AckHeader, ReliableFrame, ReliableFrames};
use pvp_net::proto::*;

use common::{claims, connect_request, key};

fn token_strategy() -> impl Strategy<Value = ConnectToken> {
    (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<[u8; 16]>(), any::<u16>(), any::<bool>())
        .prop_map(|(id, m, p, exp, ip, port, v6)| {
            let addr = if v6 {
                std::net::SocketAddr::new(std::net::Ipv6Addr::from(ip).into(), port)
            } else {
                std::net::SocketAddr::new(std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).into(), port)
            };
            TokenKey::from_bytes([9; 32]).issue(&TokenClaims {
                token_id: id,
                match_id: MatchId::new(m),
                player_id: PlayerId::new(p),
                expires_at_unix_ms: exp,
                server_addr: addr,
            })
        })
}

#[derive(Debug, Clone)]
enum Owned {
    Connect(ConnectToken),
    Challenge(u64, [u8; 16]),
    Response(u64, [u8; 16]),
    Accepted(u64, u64),
    Denied(u64, bool),
    Data(u64, u32, (u32, u32, u32), Vec<(u32, Vec<u8>)>, Vec<u8>),
    Disconnect(u64),
}

fn owned_strategy() -> impl Strategy<Value = Owned> {
    prop_oneof![
        token_strategy().prop_map(Owned::Connect),
        (any::<u64>(), any::<[u8; 16]>()).prop_map(|(a, b)| Owned::Challenge(a, b)),
        (any::<u64>(), any::<[u8; 16]>()).prop_map(|(a, b)| Owned::Response(a, b)),
        (any::<u64>(), any::<u64>()).prop_map(|(a, b)| Owned::Accepted(a, b)),
        (any::<u64>(), any::<bool>()).prop_map(|(a, b)| Owned::Denied(a, b)),
        (
            any::<u64>(),
            any::<u32>(),
            any::<(u32, u32, u32)>(),
            prop::collection::vec((any::<u32>(), prop::collection::vec(any::<u8>(), 0..60)), 0..=8),
            prop::collection::vec(any::<u8>(), 0..600),
        )
            .prop_map(|(c, s, a, r, p)| Owned::Data(c, s, a, r, p)),
        any::<u64>().prop_map(Owned::Disconnect),
    ]
}

fn with_packet<R>(o: &Owned, f: impl FnOnce(Packet<'_>) -> R) -> R {
    match o {
        Owned::Connect(t) => f(Packet::ConnectRequest { token: &t.0 }),
        Owned::Challenge(t, c) => f(Packet::Challenge { token_id: *t, challenge: *c }),
        Owned::Response(t, c) => f(Packet::ChallengeResponse { token_id: *t, challenge: *c }),
        Owned::Accepted(t, c) => f(Packet::Accepted { token_id: *t, connection_id: *c }),
        Owned::Denied(t, full) => f(Packet::Denied {
            token_id: *t,
            reason: if *full { DenyReason::ServerFull } else { DenyReason::ShuttingDown },
        }),
        Owned::Data(c, s, (a, b, r), rel, p) => {
            let mut frames = ReliableFrames::new();
            for (id, bytes) in rel {
                frames.push(ReliableFrame { id: *id, bytes }).unwrap();
            }
            f(Packet::Data {
                connection_id: *c,
                seq: *s,
                ack: AckHeader { ack: *a, ack_bits: *b, reliable_ack: *r },
                reliable: frames,
                payload: p,
            })
        }
        Owned::Disconnect(c) => f(Packet::Disconnect { connection_id: *c }),
    }
}

proptest! {
    #[test]
    fn every_packet_round_trips(o in owned_strategy()) {
        let mut buf = [0u8; MAX_PACKET_LEN];
        with_packet(&o, |p| {
            let n = p.encode(&mut buf).unwrap();
            prop_assert_eq!(Packet::decode(&buf[..n]), Ok(p));
            // Every strict prefix is refused, never misread.
            for cut in [0, 1, n / 2, n.saturating_sub(1)] {
                if cut < n {
                    let d = Packet::decode(&buf[..cut]);
                    if let Ok(q) = d {
                        // Only a data packet can be cut inside its payload and stay valid.
                        let is_data = matches!(q, Packet::Data { .. });
                        prop_assert!(is_data, "cut prefix decoded as {:?}", q);
                    }
                }
            }
            Ok(())
        })?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1400)) {
        if let Ok(p) = Packet::decode(&bytes) {
            let mut buf = [0u8; MAX_PACKET_LEN];
            let n = p.encode(&mut buf).unwrap();
            prop_assert_eq!(&buf[..n], &bytes[..]);
        }
    }

    #[test]
    fn tokens_round_trip(t in token_strategy()) {
        let claims = TokenKey::from_bytes([9; 32]).open(&t.0).unwrap();
        prop_assert_eq!(claims.token_id, t.token_id());
        prop_assert_eq!(Some(claims.server_addr), t.server_addr());
        prop_assert_eq!(TokenKey::from_bytes([8; 32]).open(&t.0), Err(TokenError::BadSignature));
    }
}

#[test]
fn decode_never_panics_on_short_or_garbage_input() {
    assert_eq!(Packet::decode(&[]), Err(DecodeError::Truncated));
    assert_eq!(Packet::decode(&[PROTOCOL_VERSION]), Err(DecodeError::Truncated));
    assert_eq!(
        Packet::decode(&[PROTOCOL_VERSION + 1, 6]),
        Err(DecodeError::WrongVersion(PROTOCOL_VERSION + 1))
    );
    assert_eq!(Packet::decode(&[PROTOCOL_VERSION, 0]), Err(DecodeError::Malformed));
    assert_eq!(Packet::decode(&[PROTOCOL_VERSION, 200]), Err(DecodeError::Malformed));
    assert_eq!(Packet::decode(&vec![0u8; MAX_PACKET_LEN + 1]), Err(DecodeError::Oversized));
    // Every prefix of a valid data packet with reliable frames is refused, never a panic.
    let mut frames = ReliableFrames::new();
    frames.push(ReliableFrame { id: 0, bytes: b"abc" }).unwrap();
    let p = Packet::Data {
        connection_id: 5,
        seq: 1,
        ack: AckHeader::default(),
        reliable: frames,
        payload: b"zz",
    };
    let mut buf = [0u8; MAX_PACKET_LEN];
    let n = p.encode(&mut buf).unwrap();
    assert_eq!(Packet::decode(&buf[..n]), Ok(p));
    let header = 2 + 8 + 4 + 4 + 4 + 4 + 1;
    for cut in 0..header + 6 + 3 {
        assert!(Packet::decode(&buf[..cut]).is_err(), "prefix {cut} decoded");
    }
    // Reliable count above the per-packet maximum.
    let mut bad = buf[..n].to_vec();
    bad[header - 1] = 9;
    assert_eq!(Packet::decode(&bad), Err(DecodeError::Malformed));
    // Fixed-size packets with a trailing byte.
    let n = Packet::Disconnect { connection_id: 1 }.encode(&mut buf).unwrap();
    let mut long = buf[..n].to_vec();
    long.push(0);
    assert_eq!(Packet::decode(&long), Err(DecodeError::Oversized));
    // Unknown deny reason.
    let n = Packet::Denied { token_id: 1, reason: DenyReason::ServerFull }.encode(&mut buf).unwrap();
    let mut d = buf[..n].to_vec();
    d[n - 1] = 0;
    assert_eq!(Packet::decode(&d), Err(DecodeError::Malformed));
}

#[test]
fn connect_request_must_be_exact_length_with_zero_padding() {
    let token = key().issue(&claims(1));
    let req = connect_request(&token);
    assert_eq!(req.len(), CONNECT_REQUEST_LEN);
    assert_eq!(Packet::decode(&req), Ok(Packet::ConnectRequest { token: &token.0 }));
    assert_eq!(Packet::decode(&req[..CONNECT_REQUEST_LEN - 1]), Err(DecodeError::Truncated));
    let mut long = req.clone();
    long.push(0);
    assert_eq!(Packet::decode(&long), Err(DecodeError::Oversized));
    let mut smuggle = req.clone();
    smuggle[CONNECT_REQUEST_LEN - 1] = 1;
    assert_eq!(Packet::decode(&smuggle), Err(DecodeError::Malformed));
    // Encoding into a buffer one byte short is refused with the buffer's size.
    let mut small = [0u8; CONNECT_REQUEST_LEN - 1];
    assert_eq!(
        Packet::ConnectRequest { token: &token.0 }.encode(&mut small),
        Err(EncodeError::TooLarge(CONNECT_REQUEST_LEN - 1))
    );
}

#[test]
fn encode_refuses_packets_beyond_max_len_and_oversized_frames() {
    let mut buf = vec![0u8; MAX_PACKET_LEN * 2];
    let payload = vec![7u8; MAX_PAYLOAD_LEN];
    let ok = Packet::Data {
        connection_id: 1,
        seq: 1,
        ack: AckHeader::default(),
        reliable: ReliableFrames::new(),
        payload: &payload,
    };
    assert_eq!(ok.encode(&mut buf), Ok(MAX_PACKET_LEN));
    let big = vec![7u8; MAX_PAYLOAD_LEN + 1];
    let too_big = Packet::Data {
        connection_id: 1,
        seq: 1,
        ack: AckHeader::default(),
        reliable: ReliableFrames::new(),
        payload: &big,
    };
    assert_eq!(too_big.encode(&mut buf), Err(EncodeError::TooLarge(MAX_PACKET_LEN)));
    let huge = vec![1u8; u16::MAX as usize + 1];
    let mut frames = ReliableFrames::new();
    frames.push(ReliableFrame { id: 0, bytes: &huge }).unwrap();
    let p =
        Packet::Data { connection_id: 1, seq: 1, ack: AckHeader::default(), reliable: frames, payload: &[] };
    assert_eq!(p.encode(&mut buf), Err(EncodeError::TooManyReliable));
}

#[test]
fn reliable_frames_hand_back_the_ninth() {
    let mut f = ReliableFrames::new();
    assert!(f.is_empty());
    for i in 0..8 {
        f.push(ReliableFrame { id: i, bytes: b"ab" }).unwrap();
    }
    let extra = ReliableFrame { id: 8, bytes: b"x" };
    assert_eq!(f.push(extra), Err(extra));
    assert_eq!(f.len(), 8);
    assert_eq!(f.wire_len(), 8 * (6 + 2));
    assert_eq!(f.iter().map(|fr| fr.id).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>());
}

#[test]
fn peek_connection_id_only_for_session_packets() {
    let mut buf = [0u8; MAX_PACKET_LEN];
    let n = Packet::Disconnect { connection_id: 0xdead_beef }.encode(&mut buf).unwrap();
    assert_eq!(Packet::peek_connection_id(&buf[..n]), Some(0xdead_beef));
    let n = Packet::Data {
        connection_id: u64::MAX,
        seq: 1,
        ack: AckHeader::default(),
        reliable: ReliableFrames::new(),
        payload: &[],
    }
    .encode(&mut buf)
    .unwrap();
    assert_eq!(Packet::peek_connection_id(&buf[..n]), Some(u64::MAX));
    assert_eq!(Packet::peek_connection_id(&buf[..9]), None);
    assert_eq!(Packet::peek_connection_id(&[]), None);
    let n = Packet::Accepted { token_id: 1, connection_id: 2 }.encode(&mut buf).unwrap();
    assert_eq!(Packet::peek_connection_id(&buf[..n]), None);
    let mut wrong_version = buf;
    let n = Packet::Disconnect { connection_id: 4 }.encode(&mut wrong_version).unwrap();
    wrong_version[0] = PROTOCOL_VERSION + 1;
    assert_eq!(Packet::peek_connection_id(&wrong_version[..n]), None);
}
