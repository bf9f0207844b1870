//! `dyad-sim`: list, run, sweep and replay simulator scenarios.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use dyad_sim::runner::{self, RunReport};
use dyad_sim::SCENARIOS;

const USAGE: &str = "usage:
  dyad-sim --list
  dyad-sim --scenario NAME --seed N [--check-determinism]
  dyad-sim --seeds COUNT [--first-seed N] [--determinism-every K] [--only NAME]";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn print_failure(report: &RunReport) {
    if let Err(violation) = &report.result {
        eprintln!(
            "FAILED {} seed {} (stopped at step {}): property {} violated: {}\n  replay: {}",
            report.scenario,
            report.seed,
            report.steps,
            violation.property,
            violation.details,
            report.replay_command()
        );
    }
}

fn value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|arg| arg == flag)
        .and_then(|at| args.get(at + 1))
        .map(String::as_str)
}

fn number(args: &[String], flag: &str) -> Result<Option<u64>, String> {
    match value(args, flag) {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| format!("{flag} needs a whole number, got {text:?}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match real_main(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("dyad-sim: {message}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn real_main(args: &[String]) -> Result<ExitCode, String> {
    if args.iter().any(|arg| arg == "--help" || arg == "-h") || args.is_empty() {
        println!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    }
    if args.iter().any(|arg| arg == "--list") {
        for scenario in SCENARIOS {
            println!("{:48} {}", scenario.name, scenario.about);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(name) = value(args, "--scenario") {
        let scenario =
            runner::find(name).ok_or_else(|| format!("no scenario named {name:?} (see --list)"))?;
        let seed = number(args, "--seed")?.ok_or("--scenario needs --seed N")?;
        let started = std::time::Instant::now();
        let report = runner::run(scenario, seed);
        let wall_ms = started.elapsed().as_millis().max(1) as u64;
        println!(
            "{} seed {}: {} | trace {} | {} steps | {:.1} simulated s in {} ms ({}x)",
            report.scenario,
            report.seed,
            if report.result.is_ok() {
                "ok"
            } else {
                "FAILED"
            },
            hex(&report.trace_hash),
            report.steps,
            report.simulated_ms as f64 / 1000.0,
            wall_ms,
            report.simulated_ms / wall_ms
        );
        if let Ok(notes) = &report.result {
            for note in notes {
                println!("  {note}");
            }
        }
        print_failure(&report);
        let mut failed = report.result.is_err();
        if args.iter().any(|arg| arg == "--check-determinism") {
            let again = runner::run(scenario, seed);
            if again.trace_hash != report.trace_hash {
                eprintln!(
                    "FAILED determinism: seed {seed} gave trace {} then {}",
                    hex(&report.trace_hash),
                    hex(&again.trace_hash)
                );
                failed = true;
            } else {
                println!("determinism: the same trace twice");
            }
        }
        return Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    if let Some(count) = number(args, "--seeds")? {
        let first = number(args, "--first-seed")?.unwrap_or(0);
        let every = number(args, "--determinism-every")?.unwrap_or(10);
        let only = match value(args, "--only") {
            Some(name) => Some(
                runner::find(name)
                    .ok_or_else(|| format!("no scenario named {name:?} (see --list)"))?,
            ),
            None => None,
        };
        let report = runner::sweep(first, count, every, only, print_failure);
        for (scenario, seed) in &report.determinism_failures {
            eprintln!(
                "FAILED determinism: {scenario} seed {seed} gave two different traces\n  replay: cargo run --release -p dyad-sim -- --scenario {scenario} --seed {seed} --check-determinism"
            );
        }
        let wall_ms = report.wall_ms.max(1);
        println!(
            "{} runs, {} failed, {} determinism failures; {:.1} seeds/s; {:.0} simulated s in {:.1} s ({}x real time)",
            report.runs,
            report.failures.len(),
            report.determinism_failures.len(),
            report.runs as f64 * 1000.0 / wall_ms as f64,
            report.simulated_ms as f64 / 1000.0,
            wall_ms as f64 / 1000.0,
            report.simulated_ms / wall_ms
        );
        let failed = !report.failures.is_empty() || !report.determinism_failures.is_empty();
        return Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    Err("nothing to do".into())
}
