//! Any bytes given to the id parsers either parse to a name that round-trips or give an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvp_core::ids::{RegionId, ZoneId};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(id) = RegionId::new(s) {
            assert_eq!(id.as_str(), s);
            assert_eq!(id.to_string().parse::<RegionId>().ok(), Some(id));
        }
        if let Ok(z) = ZoneId::new(s) {
            assert_eq!(z.as_str(), s);
        }
    }
});
