//! `dyad-sim`: list, run, sweep and replay simulator scenarios.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use dyad_sim::cost::{measure, Cost};
use dyad_sim::replay::Replay;
use dyad_sim::runner::{self, RunReport};
use dyad_sim::swarm::SwarmPlan;
use dyad_sim::SCENARIOS;

const USAGE: &str = "usage:
  dyad-sim --list
  dyad-sim --scenario NAME --seed N [--check-determinism] [-v]
  dyad-sim --seeds COUNT [--first-seed N] [--determinism-every K] [--only NAME] [--require-coverage]
  dyad-sim --shrink --scenario swarm --seed N [--out FILE] [--budget-s SECONDS]
  dyad-sim --replay FILE [--check-determinism]";

/// How long a shrink may take by default.
const SHRINK_BUDGET_S: u64 = 300;

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
        if report.scenario == "swarm" {
            eprintln!(
                "  shrink: cargo run --release -p dyad-sim -- --shrink --scenario swarm --seed {}",
                report.seed
            );
        }
    }
}

/// Prints one run's result line, its notes and coverage, and its failure; with
/// `check_determinism`, runs it again through `again` and compares. Returns whether it failed.
fn report_run(
    report: &RunReport,
    cost: Cost,
    check_determinism: bool,
    again: impl FnOnce() -> RunReport,
) -> bool {
    println!(
        "{} seed {}: {} | trace {} | {} steps | {:.1} simulated s in {} ms{} ({}x)",
        report.scenario,
        report.seed,
        if report.result.is_ok() {
            "ok"
        } else {
            "FAILED"
        },
        dyad_wire::hex::encode(&report.trace_hash),
        report.steps,
        report.simulated_ms as f64 / 1000.0,
        cost.wall_ms,
        cost.cpu_ms
            .map_or(String::new(), |cpu_ms| format!(", {cpu_ms} ms CPU")),
        report.simulated_ms / cost.wall_ms.max(1)
    );
    if let Ok(notes) = &report.result {
        for note in notes {
            println!("  {note}");
        }
    }
    let reached: Vec<&str> = dyad_sim::coverage::CoverageEvent::ALL
        .into_iter()
        .filter(|event| report.coverage.count(*event) > 0)
        .map(|event| event.name())
        .collect();
    if !reached.is_empty() {
        println!("  rare events reached: {}", reached.join(", "));
    }
    print_failure(report);
    let mut failed = report.result.is_err();
    if check_determinism {
        let second = again();
        if second.trace_hash != report.trace_hash {
            eprintln!(
                "FAILED determinism: seed {} gave trace {} then {}",
                report.seed,
                dyad_wire::hex::encode(&report.trace_hash),
                dyad_wire::hex::encode(&second.trace_hash)
            );
            failed = true;
        } else {
            println!("determinism: the same trace twice");
        }
    }
    failed
}

fn exit(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
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
    let flag = |name: &str| args.iter().any(|arg| arg == name);
    let check_determinism = flag("--check-determinism");
    if let Some(path) = value(args, "--replay") {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read the replay file {path}: {error}"))?;
        let replay = Replay::parse(&text).map_err(|problem| format!("{path}: {problem}"))?;
        print!("{}", replay.plan);
        let (report, cost) = measure(|| runner::run_plan(replay.seed, &replay.plan));
        let failed = report_run(&report, cost, check_determinism, || {
            runner::run_plan(replay.seed, &replay.plan)
        });
        if let (Some(expect), Err(found)) = (&replay.expect, &report.result) {
            if expect != found.property {
                println!(
                    "note: the file expected a failure on {expect}, this run failed on {}",
                    found.property
                );
            }
        }
        return Ok(exit(failed));
    }
    if flag("--shrink") {
        let name = value(args, "--scenario").unwrap_or("swarm");
        if name != "swarm" {
            return Err(format!(
                "only swarm runs are explicit plans of steps that can be shrunk; {name:?} is a hand-written script (run its failure with --scenario {name} --seed N)"
            ));
        }
        let seed = number(args, "--seed")?.ok_or("--shrink needs --seed N")?;
        let budget_s = number(args, "--budget-s")?.unwrap_or(SHRINK_BUDGET_S);
        let out = value(args, "--out")
            .map(str::to_string)
            .unwrap_or_else(|| format!("swarm-{seed}.replay"));
        let plan = SwarmPlan::draw(seed);
        println!("shrinking swarm seed {seed}: {}", plan.mix());
        let report = dyad_sim::shrink::shrink(
            seed,
            plan,
            std::time::Duration::from_secs(budget_s),
            |line| println!("  {line}"),
        )?;
        std::fs::write(&out, report.replay.to_text())
            .map_err(|error| format!("cannot write {out}: {error}"))?;
        println!(
            "{} steps shrunk to {} still failing on {} ({} runs, {:.1} s{}); written to {out}\n  replay: cargo run --release -p dyad-sim -- --replay {out}",
            report.steps_before,
            report.replay.plan.steps.len(),
            report.property,
            report.runs,
            report.elapsed.as_secs_f64(),
            if report.out_of_time { ", stopped by the time budget" } else { "" }
        );
        print!("{}", report.replay.plan);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(name) = value(args, "--scenario") {
        let scenario =
            runner::find(name).ok_or_else(|| format!("no scenario named {name:?} (see --list)"))?;
        let seed = number(args, "--seed")?.ok_or("--scenario needs --seed N")?;
        if name == "swarm" && flag("-v") {
            print!("{}", SwarmPlan::draw(seed));
        }
        let (report, cost) = measure(|| runner::run(scenario, seed));
        let failed = report_run(&report, cost, check_determinism, || {
            runner::run(scenario, seed)
        });
        return Ok(exit(failed));
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
        println!("rare events (times reached):\n{}", report.coverage);
        let mut failed = !report.failures.is_empty() || !report.determinism_failures.is_empty();
        let missing = report.coverage.missing();
        if flag("--require-coverage") && !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|event| event.name()).collect();
            eprintln!(
                "FAILED coverage: never reached in this sweep: {}",
                names.join(", ")
            );
            failed = true;
        }
        return Ok(exit(failed));
    }
    Err("nothing to do".into())
}
