//! Running scenarios by seed: one run, a sweep, and the determinism check.

use std::time::Instant;

use crate::coverage::Coverage;
use crate::harness::Outcome;
use crate::scenarios::{Scenario, SCENARIOS};
use crate::swarm::SwarmPlan;
use crate::violation::Violation;
use crate::world::World;

/// The result of one scenario run with one seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunReport {
    pub scenario: &'static str,
    pub seed: u64,
    pub result: Result<Vec<String>, Violation>,
    /// The hash of the whole event trace and of the final stores (property 6).
    pub trace_hash: [u8; 32],
    pub simulated_ms: u64,
    /// Steps run; for a failure, the step at which the run stopped.
    pub steps: u64,
    /// The rare events the run reached.
    pub coverage: Coverage,
}

impl RunReport {
    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run --release -p dyad-sim -- --scenario {} --seed {}",
            self.scenario, self.seed
        )
    }
}

pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|scenario| scenario.name == name)
}

/// Runs `scenario` with `seed`. A panic inside the engine or the world is reported as a
/// violation of the "no panic" property, with the seed, rather than aborting a sweep.
pub fn run(scenario: &'static Scenario, seed: u64) -> RunReport {
    run_with(scenario.name, seed, scenario.run)
}

/// Runs a swarm plan (drawn from a seed, shrunk, or read from a replay file) in the world of
/// `seed`.
pub fn run_plan(seed: u64, plan: &SwarmPlan) -> RunReport {
    run_with("swarm", seed, |world| crate::swarm::run_plan(world, plan))
}

fn run_with(
    name: &'static str,
    seed: u64,
    body: impl FnOnce(&mut World) -> Result<Outcome, Violation> + std::panic::UnwindSafe,
) -> RunReport {
    let outcome = std::panic::catch_unwind(|| {
        let mut world = World::new(seed);
        let start_ms = world.now_ms;
        let result = body(&mut world).map(|outcome| outcome.notes);
        (
            result,
            world.final_hash(),
            world.now_ms - start_ms + world.simulated_elsewhere_ms,
            world.steps,
            world.coverage.clone(),
        )
    });
    match outcome {
        Ok((result, trace_hash, simulated_ms, steps, coverage)) => RunReport {
            scenario: name,
            seed,
            result,
            trace_hash,
            simulated_ms,
            steps,
            coverage,
        },
        Err(panic) => {
            let details = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_else(|| "a panic without a message".into());
            RunReport {
                scenario: name,
                seed,
                result: Err(Violation {
                    property: "no_panic",
                    details,
                }),
                trace_hash: [0; 32],
                simulated_ms: 0,
                steps: 0,
                coverage: Coverage::default(),
            }
        }
    }
}

/// Totals of a sweep.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub runs: u64,
    pub failures: Vec<RunReport>,
    pub determinism_failures: Vec<(String, u64)>,
    pub simulated_ms: u64,
    pub wall_ms: u64,
    /// The rare events reached, summed over every run.
    pub coverage: Coverage,
}

/// Runs seeds `first..first + count`, each on the next scenario in turn; every
/// `determinism_every`-th run is repeated and its trace compared.
/// With `only`, every seed runs that scenario.
pub fn sweep(
    first: u64,
    count: u64,
    determinism_every: u64,
    only: Option<&'static Scenario>,
    mut on_failure: impl FnMut(&RunReport),
) -> SweepReport {
    let started = Instant::now();
    let mut report = SweepReport::default();
    for offset in 0..count {
        let seed = first + offset;
        let scenario = only.unwrap_or_else(|| &SCENARIOS[(seed % SCENARIOS.len() as u64) as usize]);
        let run_report = run(scenario, seed);
        report.runs += 1;
        report.simulated_ms += run_report.simulated_ms;
        report.coverage.add(&run_report.coverage);
        if run_report.result.is_err() {
            on_failure(&run_report);
            report.failures.push(run_report);
            continue;
        }
        if determinism_every > 0 && offset % determinism_every == 0 {
            let again = run(scenario, seed);
            if again.trace_hash != run_report.trace_hash {
                report
                    .determinism_failures
                    .push((scenario.name.to_string(), seed));
            }
        }
    }
    report.wall_ms = started.elapsed().as_millis() as u64;
    report
}
