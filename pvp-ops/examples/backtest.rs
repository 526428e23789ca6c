//! Replays a synthetic 7-day diurnal player trace (noise + a surprise spike) against fixed,
//! reactive (HPA target tracking) and predictive (Holt-Winters + HPA) capacity and prints
//! minutes under demand, instance-hours and scaling actions.
//!
//! `cargo run --release -p pvp-ops --example backtest [seed] [target-utilisation]`

use pvp_ops::scale::PredictiveConfig;
use pvp_ops::scale::TargetTracking;
use pvp_ops::scale::backtest::{Backtest, BacktestReport, TraceConfig, synthetic_trace};

fn main() {
    let seed = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(7u64);
    let cfg = TraceConfig { seed, ..TraceConfig::default() };
    let trace = synthetic_trace(&cfg);
    let capacity = 1000.0; // players per server
    let boot = 10; // minutes from asking for a server to Ready
    let util: f64 = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(0.85);
    let target = capacity * util; // keep servers this full
    let bt = Backtest::new(capacity, boot);

    let mut sorted = trace.clone();
    sorted.sort_by(f64::total_cmp);
    let p99 = sorted[sorted.len() * 99 / 100];
    let fixed_n = (p99 / target).ceil() as u32;

    let fixed = bt.run_fixed(&trace, fixed_n);
    let reactive = bt.run_reactive(&trace, TargetTracking::new(target), 1000).expect("valid config");
    let predictive = bt
        .run_predictive(
            &trace,
            PredictiveConfig {
                lead: std::time::Duration::from_secs(60 * (boot as u64 + 5)),
                ..PredictiveConfig::new(target)
            },
            1000,
        )
        .expect("valid config");

    println!(
        "trace: {} days, {} minutes, seed {seed}, peak {:.0} players, surprise spike x{:.1} for {} min",
        cfg.days,
        trace.len(),
        sorted.last().copied().unwrap_or(0.0),
        cfg.spike.map_or(1.0, |s| s.2),
        cfg.spike.map_or(0, |s| s.1)
    );
    println!("servers: {capacity} players each, {boot} min boot, target {:.0} % full\n", util * 100.0);
    println!(
        "{:<36} {:>12} {:>16} {:>12} {:>10} {:>8}",
        "strategy", "under-demand", "unserved", "instance-h", "actions", "peak"
    );
    println!("{:<36} {:>12} {:>16} {:>12} {:>10} {:>8}", "", "minutes", "player-min", "", "", "servers");
    for r in [&fixed, &reactive, &predictive] {
        row(r);
    }
    let extra = predictive.instance_hours / reactive.instance_hours - 1.0;
    println!(
        "\npredictive vs reactive: under-demand minutes {} vs {} ({:.2}x), instance-hours {:+.1} %",
        predictive.under_demand_minutes,
        reactive.under_demand_minutes,
        predictive.under_demand_minutes as f64 / reactive.under_demand_minutes.max(1) as f64,
        extra * 100.0
    );
    // The same week without the surprise spike: what the daily ramps alone cost.
    let calm = synthetic_trace(&TraceConfig { spike: None, ..cfg.clone() });
    let r2 = bt.run_reactive(&calm, TargetTracking::new(target), 1000).expect("valid config");
    let p2 = bt.run_predictive(&calm, predictive_cfg(target, boot), 1000).expect("valid config");
    println!(
        "without the spike: under-demand minutes reactive {} vs predictive {}, instance-hours {:.1} vs {:.1}",
        r2.under_demand_minutes, p2.under_demand_minutes, r2.instance_hours, p2.instance_hours
    );
    let goal = predictive.under_demand_minutes < reactive.under_demand_minutes && extra <= 0.10;
    println!(
        "goal (fewer under-demand minutes at <= 10 % extra instance-hours): {}",
        if goal { "met" } else { "NOT met" }
    );
}

/// Provision ahead by the boot time plus five minutes.
fn predictive_cfg(target: f64, boot: usize) -> PredictiveConfig {
    PredictiveConfig {
        lead: std::time::Duration::from_secs(60 * (boot as u64 + 5)),
        ..PredictiveConfig::new(target)
    }
}

fn row(r: &BacktestReport) {
    println!(
        "{:<36} {:>12} {:>16.0} {:>12.1} {:>10} {:>8}",
        r.strategy,
        r.under_demand_minutes,
        r.unserved_player_minutes,
        r.instance_hours,
        r.scaling_actions,
        r.peak_servers
    );
}
