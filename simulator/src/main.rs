//! `dyad-sim`: list and run simulator scenarios.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--list") => {
            for scenario in dyad_sim::SCENARIOS {
                println!("{:40} {}", scenario.name, scenario.about);
            }
            if dyad_sim::SCENARIOS.is_empty() {
                eprintln!("no scenarios are registered yet");
            }
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: dyad-sim --list");
            eprintln!("(running scenarios needs the replication engine; none is registered yet)");
            ExitCode::from(2)
        }
    }
}
