//! Any bytes given to the packet decoder decode to a packet that re-encodes to the same bytes,
//! or give an error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvp_net::proto::{MAX_PACKET_LEN, Packet};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::decode(data) {
        let mut buf = [0u8; MAX_PACKET_LEN];
        let n = p.encode(&mut buf).expect("a decoded packet encodes");
        assert_eq!(&buf[..n], data);
    }
    let _ = Packet::peek_connection_id(data);
});
