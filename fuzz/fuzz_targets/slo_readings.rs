//! Arbitrary readings and clock steps fed to an SloMonitor: refused or accepted, never a panic;
//! ratios stay within 0..=1 and the event queue within its bound.
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pvp_ops::slo::{MonitorConfig, Sli, SliReading, Slo, SloMonitor};

#[derive(Arbitrary, Debug)]
enum Step {
    Events { dt: u32, bad: f64, total: f64 },
    Quantile { dt: u32, q: Option<f64> },
}

fuzz_target!(|steps: Vec<Step>| {
    let t0 = Instant::now();
    let mut m = SloMonitor::new(MonitorConfig { max_samples: 32, max_events: 8, ..MonitorConfig::default() });
    let w = Duration::from_secs(86_400);
    let _ = m.add_slo(Slo::new("e", Sli::events("b", "t"), 0.999, w).unwrap());
    let _ = m.add_slo(Slo::new("q", Sli::quantile_below("h", 0.99, 0.02), 0.99, w).unwrap());
    let mut t = t0;
    for s in steps.into_iter().take(512) {
        let (name, dt, r) = match s {
            Step::Events { dt, bad, total } => ("e", dt, SliReading::Events { bad, total }),
            Step::Quantile { dt, q } => ("q", dt, SliReading::Quantile(q)),
        };
        t += Duration::from_secs(u64::from(dt % 100_000));
        let _ = m.handle_reading(name, t, r);
        for n in ["e", "q"] {
            let st = m.status(n, t).unwrap();
            if let Some(r) = st.error_ratio {
                assert!((0.0..=1.0).contains(&r), "{r}");
            }
        }
    }
    let mut n = 0;
    while m.poll_event().is_some() {
        n += 1;
    }
    assert!(n <= 8);
});
