//! The shared id types and the hybrid logical clock through their public API, held to their
//! rustdoc at the edges and on bad input: name ids refuse empty, long and foreign names and
//! round-trip through `Display` / `FromStr` / serde; HLC stamps order by wall time, logical
//! counter and region, `now` is strictly monotonic, and `update` refuses drift and overflow
//! without moving the clock (typed errors, never a panic).

use pvp_core::hlc::{Hlc, HlcError, HlcStamp};
use pvp_core::ids::{IdError, MAX_NAME_LEN, MatchId, PlayerId, RegionId, ServerId, ZoneId};

fn region(s: &str) -> RegionId {
    RegionId::new(s).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Ids

#[test]
fn name_ids_refuse_empty_long_and_foreign_bytes() {
    assert_eq!(RegionId::new(""), Err(IdError::Empty));
    assert_eq!(ZoneId::new(""), Err(IdError::Empty));
    let max = "a".repeat(MAX_NAME_LEN);
    assert_eq!(RegionId::new(&max).unwrap().as_str(), max);
    let long = "a".repeat(MAX_NAME_LEN + 1);
    assert_eq!(RegionId::new(&long), Err(IdError::TooLong { len: MAX_NAME_LEN + 1, max: MAX_NAME_LEN }));
    assert_eq!(ZoneId::new(&"z".repeat(1000)), Err(IdError::TooLong { len: 1000, max: MAX_NAME_LEN }));
    let cases: [(&str, u8, usize); 8] = [
        (" kr", b' ', 0),
        ("kr ", b' ', 2),
        ("k r", b' ', 1),
        ("KR", b'K', 0),
        ("kr\n", b'\n', 2),
        ("kr\0", 0, 2),
        ("ü", 0xC3, 0),
        ("kr.a", b'.', 2),
    ];
    for (name, byte, index) in cases {
        assert_eq!(RegionId::new(name), Err(IdError::InvalidByte { byte, index }), "{name:?}");
        assert_eq!(name.parse::<ZoneId>(), Err(IdError::InvalidByte { byte, index }), "{name:?}");
        assert_eq!(RegionId::try_from(name), Err(IdError::InvalidByte { byte, index }), "{name:?}");
    }
    // Multi-byte text: the length is counted in bytes.
    let wide = "é".repeat(8);
    assert_eq!(RegionId::new(&wide), Err(IdError::TooLong { len: 16, max: MAX_NAME_LEN }));
    // Errors render as text.
    assert!(IdError::Empty.to_string().contains("empty"));
}

#[test]
fn name_ids_round_trip_through_display_fromstr_and_asref() {
    for name in ["kr", "kr-a", "a", "0", "-", "_", "us-east_1", "abcdefghijklmno"] {
        let r: RegionId = name.parse().unwrap();
        assert_eq!(r.as_str(), name);
        assert_eq!(r.as_ref(), name);
        assert_eq!(r.to_string(), name);
        assert_eq!(r.to_string().parse::<RegionId>().unwrap(), r);
        assert_eq!(format!("{r:?}"), format!("RegionId({name:?})"));
        let z = ZoneId::try_from(name).unwrap();
        assert_eq!(z.to_string(), name);
        assert_eq!(format!("{z:?}"), format!("ZoneId({name:?})"));
    }
    // Usable in const context.
    const KR: Result<RegionId, IdError> = RegionId::new("kr");
    assert_eq!(KR.unwrap(), region("kr"));
}

#[test]
fn name_ids_order_hash_and_compare_like_their_strings() {
    let names = ["kr-a", "kr", "a", "zz", "kr-", "k", "jp_1", "0"];
    let mut ids: Vec<RegionId> = names.iter().map(|n| region(n)).collect();
    let mut strs = names.to_vec();
    ids.sort();
    strs.sort();
    assert_eq!(ids.iter().map(|r| r.as_str()).collect::<Vec<_>>(), strs);
    let set: std::collections::HashSet<RegionId> = ["kr", "kr", "jp"].iter().map(|n| region(n)).collect();
    assert_eq!(set.len(), 2);
    assert_ne!(region("kr"), region("kr-a"));
}

#[test]
fn numeric_ids_round_trip_through_display_and_fromstr() {
    for raw in [0, 1, 7, u64::MAX] {
        let p = PlayerId::new(raw);
        assert_eq!(p.get(), raw);
        assert_eq!(u64::from(p), raw);
        assert_eq!(PlayerId::from(raw), p);
        assert_eq!(p.to_string(), raw.to_string());
        assert_eq!(p.to_string().parse::<PlayerId>().unwrap(), p);
        assert_eq!(MatchId::new(raw).to_string().parse::<MatchId>().unwrap(), MatchId::new(raw));
        assert_eq!(ServerId::new(raw).to_string().parse::<ServerId>().unwrap(), ServerId::new(raw));
    }
    for bad in ["", "-1", " 1", "1 ", "18446744073709551616", "0x10", "one"] {
        assert!(bad.parse::<PlayerId>().is_err(), "{bad:?}");
        assert!(bad.parse::<MatchId>().is_err(), "{bad:?}");
        assert!(bad.parse::<ServerId>().is_err(), "{bad:?}");
    }
    assert!(PlayerId::new(1) < PlayerId::new(2));
    assert_eq!(PlayerId::default().get(), 0);
}

#[cfg(feature = "serde")]
#[test]
fn serde_uses_plain_strings_and_numbers_and_validates_names() {
    let r = region("kr-a");
    assert_eq!(serde_json::to_string(&r).unwrap(), "\"kr-a\"");
    assert_eq!(serde_json::from_str::<RegionId>("\"kr-a\"").unwrap(), r);
    assert_eq!(serde_json::from_str::<ZoneId>("\"kr-a\"").unwrap(), ZoneId::new("kr-a").unwrap());
    for bad in ["\"\"", "\"KR\"", "\"abcdefghijklmnop\"", "7", "null", "[\"kr\"]", "\"k r\""] {
        assert!(serde_json::from_str::<RegionId>(bad).is_err(), "{bad}");
        assert!(serde_json::from_str::<ZoneId>(bad).is_err(), "{bad}");
    }
    // An owned (escaped) string takes the same path as a borrowed one.
    assert_eq!(serde_json::from_str::<RegionId>("\"k\\u0072\"").unwrap(), region("kr"));
    assert_eq!(serde_json::to_string(&PlayerId::new(42)).unwrap(), "42");
    assert_eq!(serde_json::from_str::<MatchId>("42").unwrap(), MatchId::new(42));
    assert!(serde_json::from_str::<ServerId>("-1").is_err());
    let s = HlcStamp::new(123, 4, r);
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<HlcStamp>(&json).unwrap(), s);
}

// ---------------------------------------------------------------------------------------------
// Hybrid logical clock

#[test]
fn stamps_keep_their_fields_and_order_by_wall_logical_region() {
    let s = HlcStamp::new(5, 9, region("kr"));
    assert_eq!((s.wall_ms, s.logical, s.region), (5, 9, region("kr")));
    assert_eq!(format!("{s:?}"), "5.9@kr");
    assert!(HlcStamp::new(5, 9, region("kr")) < HlcStamp::new(6, 0, region("a")));
    assert!(HlcStamp::new(5, 9, region("kr")) < HlcStamp::new(5, 10, region("a")));
    assert!(HlcStamp::new(5, 9, region("jp")) < HlcStamp::new(5, 9, region("kr")));
    assert_eq!(HlcStamp::new(5, 9, region("kr")).cmp(&s), core::cmp::Ordering::Equal);
}

#[test]
fn now_is_strictly_monotonic_whatever_the_wall_clock_does() {
    let mut c = Hlc::new(region("kr"), 100);
    assert_eq!(c.region(), region("kr"));
    assert_eq!(c.max_drift_ms(), 100);
    let mut prev = c.last();
    for wall in [0, 0, 10, 5, 5, 1_000, 0, u64::MAX - 1, 3, u64::MAX, u64::MAX, 0] {
        let s = c.now(wall);
        assert!(s > prev, "{s:?} after {prev:?} at wall {wall}");
        assert_eq!(s.region, region("kr"));
        assert_eq!(c.last(), s);
        prev = s;
    }
    // The wall part follows a wall clock that moves forward, with a fresh counter.
    let mut c = Hlc::new(region("kr"), 100);
    c.now(10);
    c.now(10);
    assert_eq!(c.now(11), HlcStamp::new(11, 0, region("kr")));
}

#[test]
fn a_full_logical_counter_moves_the_wall_part_on() {
    let mut c = Hlc::resume(region("kr"), 100, HlcStamp::new(1_000, u32::MAX, region("jp")));
    assert_eq!(c.last(), HlcStamp::new(1_000, u32::MAX, region("kr")), "resume takes our own region");
    let s = c.now(1_000);
    assert_eq!(s, HlcStamp::new(1_001, 0, region("kr")));
    // At the very end of the stamp space the clock stays put rather than going back.
    let end = HlcStamp::new(u64::MAX, u32::MAX, region("kr"));
    let mut c = Hlc::resume(region("kr"), 100, end);
    assert_eq!(c.now(u64::MAX), end);
    assert_eq!(c.now(0), end);
    assert!(c.last() >= end);
}

#[test]
fn update_refuses_stamps_beyond_the_drift_and_leaves_the_clock_alone() {
    let mut c = Hlc::new(region("kr"), 50);
    let before = c.now(1_000);
    let far = HlcStamp::new(1_051, 0, region("jp"));
    assert_eq!(
        c.update(far, 1_000),
        Err(HlcError::TooFarInFuture { stamp_ms: 1_051, ahead_ms: 51, max_drift_ms: 50 })
    );
    assert_eq!(c.check(far, 1_000), c.update(far, 1_000));
    assert_eq!(c.last(), before);
    // Exactly at the drift limit is fine, and later stamps order after it.
    let edge = HlcStamp::new(1_050, 3, region("jp"));
    assert_eq!(c.check(edge, 1_000), Ok(()));
    assert_eq!(c.last(), before, "check does not observe");
    c.update(edge, 1_000).unwrap();
    assert!(c.last() > edge);
    assert!(c.now(1_000) > edge);
    // A stamp from the past is observed without moving the clock back.
    let last = c.last();
    c.update(HlcStamp::new(1, 0, region("sg")), 1_000).unwrap();
    assert!(c.last() > last);
    // Zero drift: only stamps at or behind our wall clock.
    let mut strict = Hlc::new(region("kr"), 0);
    assert!(strict.update(HlcStamp::new(11, 0, region("jp")), 10).is_err());
    assert!(strict.update(HlcStamp::new(10, 0, region("jp")), 10).is_ok());
    // Huge stamps against a huge drift do not overflow.
    let mut lax = Hlc::new(region("kr"), u64::MAX);
    lax.update(HlcStamp::new(u64::MAX, 0, region("jp")), 0).unwrap();
    assert_eq!(lax.last(), HlcStamp::new(u64::MAX, 1, region("kr")));
}

#[test]
fn update_reports_a_logical_overflow_and_leaves_the_clock_alone() {
    let mut c = Hlc::new(region("kr"), 100);
    let before = c.now(1_000);
    let full = HlcStamp::new(1_000, u32::MAX, region("jp"));
    assert_eq!(c.update(full, 1_000), Err(HlcError::LogicalOverflow));
    assert_eq!(c.last(), before);
    // A later wall clock makes room again.
    c.update(full, 1_001).unwrap();
    assert_eq!(c.last(), HlcStamp::new(1_001, 0, region("kr")));
}
