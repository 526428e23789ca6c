//! Bad input to sync: garbage datagrams decoded to typed errors, counted and dropped without
//! changing state, hostile delta sequence numbers, bad configs, refused writes leaving state
//! unchanged, and huge timeouts and times that never overflow.

use std::time::Duration;

use pvp_core::hlc::HlcStamp;
use pvp_core::ids::PlayerId;
use pvp_global::cluster::{JP, KR, SG};
use pvp_global::leaderboard::ScoreOperator;
use pvp_global::sync::msg::{self, Body, DecodeError, Message, PROTOCOL_VERSION};
use pvp_global::sync::{CrossRegionSync, SyncConfig};

use crate::common::ms;

fn message(body: Body) -> Message {
    Message { from: KR, incarnation: 1, stamp: HlcStamp::new(1, 0, KR), body }
}

#[test]
fn decode_refuses_garbage_with_typed_errors() {
    assert_eq!(msg::decode(&[], 100), Err(DecodeError::Version(None)));
    assert_eq!(
        msg::decode(&[PROTOCOL_VERSION + 1, 0, 0], 100),
        Err(DecodeError::Version(Some(PROTOCOL_VERSION + 1)))
    );
    assert_eq!(
        msg::decode(&[PROTOCOL_VERSION; 101], 100),
        Err(DecodeError::Oversized { len: 101, max: 100 })
    );
    assert_eq!(msg::decode(&[PROTOCOL_VERSION], 100), Err(DecodeError::Malformed));
    assert_eq!(
        msg::decode(&[PROTOCOL_VERSION, 0xff, 0xff, 0xff, 0xff, 0xff], 100),
        Err(DecodeError::Malformed)
    );
    // Every prefix of a valid message and every one-byte corruption decodes or errs, never panics.
    let mut buf = Vec::new();
    msg::encode(&message(Body::DeltaAck { incarnation: 3, upto: 9 }), &mut buf).unwrap();
    assert_eq!(msg::decode(&buf, 1000), Ok(message(Body::DeltaAck { incarnation: 3, upto: 9 })));
    assert_eq!(msg::encoded_len(&message(Body::DeltaAck { incarnation: 3, upto: 9 })), buf.len());
    for n in 1..buf.len() {
        assert!(msg::decode(&buf[..n], 1000).is_err(), "prefix {n}");
    }
    let mut trailing = buf.clone();
    trailing.push(0);
    assert_eq!(msg::decode(&trailing, 1000), Err(DecodeError::Malformed));
    for i in 1..buf.len() {
        for x in [0u8, 1, 0x7f, 0x80, 0xff] {
            let mut b = buf.clone();
            b[i] = x;
            let _ = msg::decode(&b, 1000);
        }
    }
    // Bodies that parse but break their own rules.
    let bad = [
        Body::Deltas { floor: 0, first: 5, last: 4, entries: vec![] },
        Body::Deltas { floor: 6, first: 5, last: 5, entries: vec![] },
        Body::Digest { buckets: vec![0; 3] },
        Body::RepairRequest { buckets: vec![256] },
    ];
    for body in bad {
        msg::encode(&message(body.clone()), &mut buf).unwrap();
        assert_eq!(msg::decode(&buf, 100_000), Err(DecodeError::Malformed), "{body:?}");
    }
    msg::encode(&message(Body::RepairRequest { buckets: vec![0, 255] }), &mut buf).unwrap();
    assert!(msg::decode(&buf, 100_000).is_ok());
}

#[test]
fn a_node_counts_and_drops_bad_datagrams_without_changing_state() {
    let cfg = SyncConfig::new(KR, vec![JP]).unwrap();
    let mut node = CrossRegionSync::new(cfg, ms(1_000));
    node.add_friend(PlayerId::new(1), PlayerId::new(2), ms(1_000)).unwrap();
    let len = node.len();
    let before = node.stats();
    node.handle_datagram(ms(1_001), JP, &[]);
    node.handle_datagram(ms(1_001), JP, &[9, 9, 9]);
    node.handle_datagram(ms(1_001), JP, &[PROTOCOL_VERSION, 0xff, 0xff]);
    node.handle_datagram(ms(1_001), JP, &vec![PROTOCOL_VERSION; 70_000]);
    let after = node.stats();
    assert_eq!(after.version_dropped, before.version_dropped + 2);
    assert_eq!(after.malformed_dropped, before.malformed_dropped + 1);
    assert_eq!(after.oversized_dropped, before.oversized_dropped + 1);
    assert_eq!(node.len(), len);
    assert_eq!(node.friends(PlayerId::new(1)), [PlayerId::new(2)]);
}

#[test]
fn sync_config_rejects_bad_peers_and_ranges() {
    assert!(SyncConfig::new(KR, vec![KR]).is_err());
    assert!(SyncConfig::new(KR, vec![JP, JP]).is_err());
    let mut cfg = SyncConfig::new(KR, vec![JP, SG]).unwrap();
    cfg.max_message_bytes = 100;
    assert!(cfg.validate().is_err());
    let mut cfg = SyncConfig::new(KR, vec![]).unwrap();
    cfg.strong_timeout = Duration::ZERO;
    assert!(cfg.validate().is_err());
}

#[test]
fn huge_timeouts_and_times_never_overflow_in_sync() {
    let mut cfg = SyncConfig::new(KR, vec![JP]).unwrap();
    cfg.strong_timeout = Duration::MAX;
    cfg.strong_retry = Duration::MAX;
    cfg.flush_interval = Duration::MAX;
    cfg.anti_entropy_interval = Duration::MAX;
    cfg.validate().unwrap();
    let now = ms(1_000);
    let mut node = CrossRegionSync::new(cfg, now);
    node.ban(PlayerId::new(1), now).unwrap();
    assert!(node.is_banned(PlayerId::new(1)));
    node.handle_timeout(now);
    node.handle_timeout(Duration::MAX);
    while node.poll_transmit().is_some() {}
    assert!(node.poll_timeout() >= now);
}

#[test]
fn hostile_delta_sequence_numbers_do_not_panic_the_receiver() {
    let cfg = SyncConfig::new(KR, vec![JP]).unwrap();
    let now = ms(5_000);
    let mut node = CrossRegionSync::new(cfg, now);
    let from_jp = |body: Body| {
        let m = Message { from: JP, incarnation: 7, stamp: HlcStamp::new(5_000, 0, JP), body };
        let mut buf = Vec::new();
        msg::encode(&m, &mut buf).unwrap();
        buf
    };
    let before = node.stats().messages_received;
    for _ in 0..3 {
        let bytes = from_jp(Body::Deltas { floor: 0, first: 0, last: u64::MAX, entries: vec![] });
        node.handle_datagram(now, JP, &bytes);
    }
    let bytes = from_jp(Body::Deltas { floor: u64::MAX, first: u64::MAX, last: u64::MAX, entries: vec![] });
    node.handle_datagram(now, JP, &bytes);
    assert_eq!(node.stats().messages_received, before + 4);
    // A datagram claiming to come from another region than its sender is dropped.
    let bytes = from_jp(Body::DeltaAck { incarnation: 1, upto: u64::MAX });
    node.handle_datagram(now, SG, &bytes);
    assert_eq!(node.stats().messages_received, before + 4);
    assert_eq!(node.stats().unknown_peer_dropped, 1);
    // An ack beyond our log head is harmless.
    let bytes = from_jp(Body::DeltaAck { incarnation: node.actor().incarnation, upto: u64::MAX });
    node.handle_datagram(now, JP, &bytes);
    node.add_friend(PlayerId::new(1), PlayerId::new(2), now).unwrap();
    node.handle_timeout(now + ms(100));
    assert_eq!(node.friends(PlayerId::new(1)), [PlayerId::new(2)]);
}

#[test]
fn sync_writes_refuse_bad_input_without_changing_state() {
    use pvp_global::crdt::Scalar;
    use pvp_global::leaderboard::GameMode as BoardMode;
    use pvp_global::sync::{Key, MAX_SET_LEN, MAX_TEXT, SyncError, WriteOp, WriteReceipt};
    let now = ms(1_000);
    let mut node = CrossRegionSync::new(SyncConfig::new(KR, vec![]).unwrap(), now);
    let p = PlayerId::new(1);
    // Removing what is absent is an applied no-op, twice.
    assert_eq!(node.remove_friend(p, PlayerId::new(2), now), Ok(WriteReceipt::Applied));
    assert_eq!(node.remove_friend(p, PlayerId::new(2), now), Ok(WriteReceipt::Applied));
    assert!(node.is_empty());
    assert_eq!(node.submit_score(BoardMode(3), p, 10, now), Err(SyncError::UnknownMode(BoardMode(3))));
    node.define_mode(BoardMode(3), ScoreOperator::Best).unwrap();
    node.define_mode(BoardMode(3), ScoreOperator::Best).unwrap();
    assert_eq!(
        node.define_mode(BoardMode(3), ScoreOperator::Set),
        Err(SyncError::ModeConflict { mode: BoardMode(3), existing: ScoreOperator::Best })
    );
    node.submit_score(BoardMode(3), p, 10, now).unwrap();
    node.submit_score(BoardMode(3), p, 4, now).unwrap();
    assert_eq!(node.leaderboards().mode(BoardMode(3)).and_then(|b| b.score(p)), Some(10));
    let score_key = Key::Score(BoardMode(3), p);
    assert_eq!(node.write(score_key, WriteOp::SetAdd(1), now), Err(SyncError::TypeMismatch(score_key)));
    node.add_friend(p, PlayerId::new(2), now).unwrap();
    let friends = Key::Friends(p);
    assert_eq!(node.write(friends, WriteOp::CounterAdd(1), now), Err(SyncError::TypeMismatch(friends)));
    assert_eq!(node.write(friends, WriteOp::Score(1), now), Err(SyncError::TypeMismatch(friends)));
    let long = "x".repeat(MAX_TEXT + 1);
    let custom = Key::Custom(9);
    assert_eq!(
        node.write(custom, WriteOp::RegisterSet(Scalar::Text(long.clone())), now),
        Err(SyncError::TooLarge(custom))
    );
    node.write(custom, WriteOp::RegisterSet(Scalar::Text("x".repeat(MAX_TEXT))), now).unwrap();
    let profile = Key::Profile(p);
    let field = "f".repeat(33);
    assert_eq!(
        node.write(profile, WriteOp::ProfileSet { field, value: Scalar::Int(1) }, now),
        Err(SyncError::TooLarge(profile))
    );
    node.write(profile, WriteOp::ProfileAdd { field: "wins".into(), delta: 2 }, now).unwrap();
    assert_eq!(
        node.write(profile, WriteOp::ProfileSet { field: "wins".into(), value: Scalar::Int(1) }, now),
        Err(SyncError::TypeMismatch(profile))
    );
    // A set stops growing at MAX_SET_LEN (re-adding a member still works).
    let big = Key::Custom(10);
    for e in 0..MAX_SET_LEN as u64 {
        node.write(big, WriteOp::SetAdd(e), now).unwrap();
    }
    assert_eq!(node.write(big, WriteOp::SetAdd(u64::MAX), now), Err(SyncError::TooLarge(big)));
    node.write(big, WriteOp::SetAdd(0), now).unwrap();
    assert_eq!(node.friends(p), [PlayerId::new(2)]);
    assert_eq!(node.len(), 5);
}
