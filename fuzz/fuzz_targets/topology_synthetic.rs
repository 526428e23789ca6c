//! Any text given to the synthetic topology parser either builds a consistent topology or gives
//! a typed error; it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvp_core::topology::Topology;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(t) = Topology::synthetic(s)
    {
        assert!(t.node_count() >= 1);
        assert!(t.core_count() >= 1 && t.core_count() <= t.pu_count());
        let cpus: usize = t.nodes().iter().map(|n| n.cpus().len()).sum();
        assert_eq!(cpus, t.pu_count());
        for n in t.nodes() {
            for &c in n.cpus() {
                assert_eq!(t.node_of_cpu(c), Some(n.id()));
            }
        }
    }
});
