//! The chaos failover run: under bot load, partition Korea from the other regions, heal, and
//! crash game servers mid-match; prints the ChaosEngine's experiment results and the targets.
//!
//! `cargo run --release -p pvp-examples --bin chaos-failover -- --players 3000`
#![forbid(unsafe_code)]

use std::process::ExitCode;

use pvp_examples::chaos::{FailoverConfig, run_failover};
use pvp_examples::cli::{Command, HELP, parse};

fn main() -> ExitCode {
    let (mut config, topology) = match parse(std::env::args().skip(1)) {
        Ok(Command::Run(c, t)) => (*c, t),
        Ok(_) => {
            println!("chaos-failover: partition kr under bot load, heal, crash servers\n{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("chaos-failover: {e}");
            return ExitCode::from(2);
        }
    };
    if topology != pvp_examples::Deployment::InProcess {
        eprintln!("chaos-failover: runs every region in one process (no --region)");
        return ExitCode::from(2);
    }
    config.progress_interval_secs = 0.0;
    println!("chaos-failover: {} bots; partitioning {} after warm-up", config.players, config.regions[0].id);
    match run_failover(FailoverConfig::new(config)) {
        Ok(outcome) => {
            println!("{outcome}");
            if outcome.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("chaos-failover: {e}");
            ExitCode::FAILURE
        }
    }
}
