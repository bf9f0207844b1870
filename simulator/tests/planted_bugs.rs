//! The planted-bug tests: with `--features planted-bugs` (debug builds only; a release build
//! refuses to compile with it) the engine can play one known defect at a time
//! (`dyad_core::planted`). For each, the sweep (seed `s` on scenario `s mod N`, as
//! `dyad-sim --seeds` runs them) must catch it within 200 seeds, on a property that names the
//! damage, never by a panic. A shrink of a swarm seed that catches one must come down to at
//! most 10 steps and write a replay file that fails the same way when read back.
//!
//! Run: `cargo test -p dyad-sim --features planted-bugs --test planted_bugs` (`.ci/run` does).

use std::time::Duration;

use dyad_core::planted::{self, PlantedBug};
use dyad_sim::replay::Replay;
use dyad_sim::runner::{self, RunReport};
use dyad_sim::swarm::SwarmPlan;
use dyad_sim::SCENARIOS;

/// The first seed of 0..200 whose run fails, with its report.
fn first_caught(bug: PlantedBug, accept: &[&str]) -> RunReport {
    planted::select(Some(bug));
    for seed in 0..200u64 {
        let scenario = &SCENARIOS[(seed % SCENARIOS.len() as u64) as usize];
        let report = runner::run(scenario, seed);
        if let Err(violation) = &report.result {
            planted::select(None);
            assert!(
                accept.contains(&violation.property),
                "{}: seed {seed} ({}) failed, but on {} rather than {accept:?}: {}\n  replay: {}",
                bug.name(),
                scenario.name,
                violation.property,
                violation.details,
                report.replay_command()
            );
            eprintln!(
                "{} caught at seed {seed} ({}): {}: {}",
                bug.name(),
                scenario.name,
                violation.property,
                violation.details
            );
            return report;
        }
    }
    planted::select(None);
    panic!(
        "200 seeds ran without noticing the planted bug {}",
        bug.name()
    );
}

#[test]
fn the_sweep_catches_a_backup_that_publishes_unverified_chunks_within_200_seeds() {
    first_caught(
        PlantedBug::PublishUnverified,
        &["nothing_unverified_visible", "no_session_lost"],
    );
}

#[test]
fn the_sweep_catches_reconciliation_that_skips_the_primarys_pull_within_200_seeds() {
    first_caught(
        PlantedBug::ReconcileOneWay,
        &["no_session_lost", "liveness"],
    );
}

#[test]
fn the_sweep_catches_a_primary_following_a_stale_epoch_within_200_seeds() {
    first_caught(
        PlantedBug::FollowStaleEpoch,
        &["epochs_only_move_forward", "split_brain_detected"],
    );
}

#[test]
fn a_swarm_run_catching_a_planted_bug_shrinks_to_at_most_10_steps_and_replays() {
    planted::select(Some(PlantedBug::ReconcileOneWay));
    let seed = (0..400u64)
        .find(|seed| {
            runner::run_plan(*seed, &SwarmPlan::draw(*seed))
                .result
                .is_err()
        })
        .expect("some swarm seed of 400 catches reconciliation that skips one direction");
    let plan = SwarmPlan::draw(seed);
    let report = dyad_sim::shrink::shrink(seed, plan.clone(), Duration::from_secs(240), |line| {
        eprintln!("  {line}")
    })
    .expect("the run fails, so it shrinks");
    eprintln!(
        "seed {seed}: {} steps shrunk to {} on {} in {} runs ({:.1} s)",
        plan.steps.len(),
        report.replay.plan.steps.len(),
        report.property,
        report.runs,
        report.elapsed.as_secs_f64()
    );
    assert!(
        report.replay.plan.steps.len() <= 10,
        "seed {seed} shrank only to {} steps:\n{}",
        report.replay.plan.steps.len(),
        report.replay.plan
    );
    let text = report.replay.to_text();
    let read = Replay::parse(&text).expect("a written replay file parses");
    assert_eq!(read, report.replay);
    let again = runner::run_plan(read.seed, &read.plan);
    planted::select(None);
    match again.result {
        Err(found) => assert_eq!(Some(found.property.to_string()), read.expect),
        Ok(_) => panic!("the replay of the shrunk run passed:\n{text}"),
    }
}

#[test]
fn the_swarm_alone_catches_every_planted_bug_within_200_seeds() {
    for bug in PlantedBug::ALL {
        planted::select(Some(bug));
        let caught = (0..200u64).find_map(|seed| {
            let report = runner::run_plan(seed, &SwarmPlan::draw(seed));
            report.result.err().map(|found| (seed, found))
        });
        planted::select(None);
        let (seed, found) =
            caught.unwrap_or_else(|| panic!("200 swarm seeds ran without noticing {}", bug.name()));
        assert_ne!(
            found.property,
            "no_panic",
            "{}: {}",
            bug.name(),
            found.details
        );
        eprintln!(
            "{} caught by swarm seed {seed}: {}: {}",
            bug.name(),
            found.property,
            found.details
        );
    }
}
