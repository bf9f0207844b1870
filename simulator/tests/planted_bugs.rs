//! The planted-bug test: with `--features planted-bugs` (debug builds only; a release build
//! refuses to compile with it) the backup writes chunks without verifying them, so a bad chunk
//! from a faulty sender gets published. The sweep must catch that within 200 seeds, and by a
//! property check (no session lost, or nothing unverified visible), not by a panic.
//!
//! Run: `cargo test -p dyad-sim --features planted-bugs --test planted_bugs` (`.ci/run` does).

use dyad_sim::runner;
use dyad_sim::SCENARIOS;

#[test]
fn the_sweep_catches_a_backup_that_publishes_unverified_chunks_within_200_seeds() {
    dyad_engine::planted::select(Some(dyad_engine::planted::PlantedBug::PublishUnverified));
    for seed in 0..200u64 {
        let scenario = &SCENARIOS[(seed % SCENARIOS.len() as u64) as usize];
        let report = runner::run(scenario, seed);
        if let Err(violation) = &report.result {
            assert!(
                matches!(
                    violation.property,
                    "nothing_unverified_visible" | "no_session_lost"
                ),
                "seed {seed} ({}) failed, but on {} rather than a data property: {}\n  replay: {}",
                scenario.name,
                violation.property,
                violation.details,
                report.replay_command()
            );
            eprintln!(
                "caught at seed {seed} ({}): {}: {}",
                scenario.name, violation.property, violation.details
            );
            return;
        }
    }
    panic!("200 seeds ran without noticing a backup that publishes unverified chunks");
}
