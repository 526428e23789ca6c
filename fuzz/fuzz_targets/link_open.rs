//! Garbage on a sealed inter-region link: `SealedLinks::open` refuses it with a typed error
//! (never panics) and a refused datagram changes nothing: the peer's next real datagram
//! still opens, and a replay of an opened one is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvp_core::RegionId;
use pvp_global::link::{LinkError, LinkKey, SealedLinks};

fuzz_target!(|data: &[u8]| {
    let (Ok(kr), Ok(jp)) = (RegionId::new("kr"), RegionId::new("jp")) else { return };
    let key = LinkKey::derive(b"fuzz", kr, jp, "sync");
    let mut a = SealedLinks::new(kr, 5);
    let mut b = SealedLinks::new(jp, 6);
    a.add_peer(jp, key.clone());
    b.add_peer(kr, key);
    let (mut wire, mut out) = (Vec::new(), Vec::new());
    for chunk in data.split(|&x| x == 0xFE) {
        // Any bytes: opened only if sealed with the pair's key, which fuzz input cannot be.
        assert!(b.open(chunk, &mut out).is_err());
        // A real datagram after the garbage opens once, then is a replay.
        if a.seal(jp, chunk, &mut wire).is_ok() {
            assert_eq!(b.open(&wire, &mut out), Ok(kr));
            assert_eq!(out, chunk);
            assert_eq!(b.open(&wire, &mut out), Err(LinkError::Replayed));
        }
    }
});
