//! The multi-region example: Korea, Japan and Singapore on loopback with built-in bots.
//!
//! `cargo run --release -p pvp-examples --bin multi-region -- --duration 30`
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pvp_examples::cli::{Command, HELP, parse};
use pvp_examples::{Deployment, RunningSession};

fn main() -> ExitCode {
    let (config, topology) = match parse(std::env::args().skip(1)) {
        Ok(Command::Run(c, t)) => (*c, t),
        Ok(_) => {
            println!("multi-region: three regions on loopback with load bots\n{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("multi-region: {e}");
            return ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    if let Err(e) = ctrlc::set_handler(move || flag.store(true, Ordering::Release)) {
        eprintln!("multi-region: cannot handle Ctrl-C: {e}");
    }
    let regions: Vec<String> = match &topology {
        Deployment::OneRegion(role) => {
            vec![format!("{} (one region of a multi-process session)", role.region)]
        }
        _ => config.regions.iter().map(|r| r.id.to_string()).collect(),
    };
    println!(
        "multi-region: {} bots over {} for {}",
        config.players,
        regions.join(", "),
        if config.duration_secs > 0.0 {
            format!("{} s", config.duration_secs)
        } else {
            "ever (Ctrl-C stops)".into()
        }
    );
    let mut session = match RunningSession::start_with(config, topology) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("multi-region: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(a) = session.metrics_addr() {
        println!("metrics: http://{a}/metrics");
    }
    if let Some(a) = session.front_addr() {
        println!("matchmaking front: http://{a}/v1/tickets");
    }
    session.run_until(&stop, |p| println!("{p}"));
    if stop.load(Ordering::Acquire) {
        println!("Ctrl-C: draining, snapshotting, stopping");
    }
    let report = session.finish();
    println!("{report}");
    ExitCode::SUCCESS
}
