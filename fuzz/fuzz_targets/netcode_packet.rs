//! Every netcode decoder on arbitrary bytes: packet headers and bodies, connection requests,
//! connect tokens (public and sealed private part), challenge tokens, the payload layer and
//! the user-data layout. None panics; whatever decodes re-encodes to the same value.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pvp_net::netcode::layer::Layered;
use pvp_net::netcode::packet::{
    ConnectRequest, Packet, decode_header, decode_packet, encode_packet, open_challenge,
};
use pvp_net::netcode::{ConnectToken, Key, MAX_PACKET_BYTES, PrivateToken, SessionUserData};

#[derive(Debug, Arbitrary)]
struct Input {
    data: Vec<u8>,
    sequence: u64,
    payload: Vec<u8>,
    user_data: Vec<u8>,
}

const KEY: Key = Key::from_bytes([9; 32]);

fuzz_target!(|input: Input| {
    let data = &input.data;
    if let Ok(h) = decode_header(data) {
        let mut copy = data.clone();
        let _ = decode_packet(&h, &mut copy, 1, &KEY);
    }
    let _ = ConnectRequest::decode(data, 1);
    if let Ok(t) = ConnectToken::from_bytes(data) {
        let again =
            ConnectToken::from_bytes(&t.to_bytes().expect("a read token writes")[..]).expect("reads back");
        assert_eq!(again, t);
    }
    if let Ok(sealed) = <[u8; 1024]>::try_from(&data[..data.len().min(1024)]) {
        let _ = PrivateToken::open(&sealed, 1, 2, &[0; 24], &KEY);
    }
    if let Ok(t) = <[u8; 300]>::try_from(&data[..data.len().min(300)]) {
        let _ = open_challenge(&t, input.sequence, &KEY);
    }
    if let Ok(l) = Layered::decode(data) {
        let mut out = vec![0u8; data.len() + 64];
        let n = l.encode(&mut out).expect("fits");
        assert_eq!(Layered::decode(&out[..n]).expect("reads back"), l);
    }
    let ud = <[u8; 256]>::try_from(&input.user_data[..input.user_data.len().min(256)]).ok();
    if let Some(s) = ud.and_then(|ud| SessionUserData::decode(&ud)) {
        assert_eq!(SessionUserData::decode(&s.encode().expect("fits")), Some(s));
    }
    // A payload packet sealed here opens to the same bytes, whatever the sequence.
    let mut buf = [0u8; MAX_PACKET_BYTES];
    if let Ok(n) = encode_packet(&Packet::Payload(&input.payload), input.sequence, 1, &KEY, &mut buf) {
        let h = decode_header(&buf[..n]).expect("own header");
        assert_eq!(h.sequence, input.sequence);
        assert_eq!(decode_packet(&h, &mut buf[..n], 1, &KEY), Ok(Packet::Payload(&input.payload[..])));
    }
});
