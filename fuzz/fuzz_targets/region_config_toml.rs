//! Region and fleet configs from arbitrary TOML text: never panic; whatever validates
//! round-trips through TOML and starts a cluster.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvp_global::cluster::{FleetConfig, RegionCluster, RegionConfig};

fuzz_target!(|text: &str| {
    if let Ok(region) = RegionConfig::from_toml_str(text) {
        let again = toml::to_string(&region).expect("a valid config serializes");
        assert_eq!(RegionConfig::from_toml_str(&again).as_ref(), Ok(&region));
        // Small fleets only: the fuzzer may ask for millions of servers.
        if region.min_servers <= 64 {
            assert!(RegionCluster::new(region, std::time::Duration::ZERO).is_ok());
        }
    }
    let _ = FleetConfig::from_toml_str(text);
});
