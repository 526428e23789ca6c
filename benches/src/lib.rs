//! Shared helpers for the pvp criterion benchmarks.
//!
//! Each file in `benches/benches/` measures one component against the peers a user would pick
//! instead, under the same inputs. Run them all with `cargo bench -p pvp-benches`, or one with
//! `cargo bench -p pvp-benches --bench <name>`.
#![deny(missing_docs)]

use std::time::Duration;

/// A criterion configuration sized for a 2-core CI machine: short warm-up and measurement, so
/// the whole suite finishes in minutes. `PVP_BENCH_LONG=1` restores criterion's defaults.
pub fn quick_criterion() -> criterion::Criterion {
    let c = criterion::Criterion::default();
    if std::env::var_os("PVP_BENCH_LONG").is_some() {
        c
    } else {
        c.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(20)
    }
}
