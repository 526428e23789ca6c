//! Every packet type round-trips through the codec; arbitrary bytes never panic the decoder.

use proptest::prelude::*;
use pvp_core::{MatchId, PlayerId};
use pvp_net::proto::packet::{AckHeader, ReliableFrame, ReliableFrames};
use pvp_net::proto::*;

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
