//! Garbage sync datagrams: a node must count and drop them, or apply them, never panic; a
//! datagram that decodes re-encodes to a datagram that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvp_core::RegionId;
use pvp_global::sync::{CrossRegionSync, SyncConfig, msg};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let (Ok(kr), Ok(jp), Ok(sg)) = (RegionId::new("kr"), RegionId::new("jp"), RegionId::new("sg")) else {
        return;
    };
    let Ok(cfg) = SyncConfig::new(kr, vec![jp, sg]) else {
        return;
    };
    let max = cfg.max_message_bytes;
    let now = Duration::from_secs(1_700_000_000);
    let mut node = CrossRegionSync::new(cfg, now);
    // Split the input into several datagrams so that sequences of messages are explored too.
    for (i, chunk) in data.split(|&b| b == 0xFE).enumerate() {
        let from = if i % 2 == 0 { jp } else { sg };
        node.handle_datagram(now + Duration::from_millis(i as u64), from, chunk);
        node.handle_timeout(now + Duration::from_millis(i as u64 * 30));
        while node.poll_transmit().is_some() {}
        if let Ok(m) = msg::decode(chunk, max) {
            let mut buf = Vec::new();
            if msg::encode(&m, &mut buf).is_ok() {
                assert_eq!(msg::decode(&buf, usize::MAX).ok().as_ref(), Some(&m));
            }
        }
    }
    let s = node.stats();
    assert!(
        s.messages_received
            + s.malformed_dropped
            + s.oversized_dropped
            + s.version_dropped
            + s.unknown_peer_dropped
            + s.clock_rejected
            + s.stale_dropped
            <= data.len() as u64 + 1
    );
});
