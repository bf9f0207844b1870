//! The shared harness of the scenarios: what a run produces ([`Outcome`]), and the pieces every
//! scenario family and the swarm build from: a pair of appliances, sessions and configuration
//! writes, an operator command run to its end, an establish, and the end of a run (let faults
//! stop and the pair converge, then check every property).
//!
//! It depends on the world and the checkers only; the scenario families (`scenarios_*`) and
//! the swarm depend on it, and the registry (`crate::scenarios`) on them: nothing here knows
//! which scenarios exist.

use dyad_core::replica::Command;
use dyad_wire::{SoftwareVersion, Version};

use crate::checks;
use crate::violation::Violation;
use crate::world::World;

/// What a scenario run produced besides pass or fail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub notes: Vec<String>,
}

pub(crate) const MINUTE_MS: u64 = 60_000;
pub(crate) const KIB: u64 = 1024;

pub(crate) fn software() -> SoftwareVersion {
    SoftwareVersion {
        app: Version {
            major: 7,
            minor: 3,
            patch: 0,
        },
        base: Version {
            major: 3,
            minor: 2,
            patch: 0,
        },
    }
}

pub(crate) fn violation(property: &'static str, details: String) -> Violation {
    Violation { property, details }
}

/// Two appliances with the same key and version, named a and b.
pub(crate) fn pair(world: &mut World) -> (usize, usize) {
    let mut psk = [0u8; 32];
    world.rng.fill(&mut psk);
    let a = world.add_appliance("appliance-a", psk, software());
    let b = world.add_appliance("appliance-b", psk, software());
    (a, b)
}

pub(crate) fn recording_size(world: &mut World) -> u64 {
    // Mostly small, sometimes several chunks, sometimes empty: all shapes the tree handles.
    match world.rng.below(10) {
        0 => 0,
        1..=6 => world.rng.between(1, 300 * KIB),
        _ => world.rng.between(1024 * KIB, 3 * 1024 * KIB),
    }
}

pub(crate) fn add_sessions(world: &mut World, index: usize, count: u64) {
    for _ in 0..count {
        let size = recording_size(world);
        world.complete_session(index, size);
    }
}

pub(crate) fn add_config(world: &mut World, index: usize, count: u64, prefix: &str) {
    for n in 0..count {
        let key = format!("{prefix}/{n}");
        let value = world.rng.next_u64().to_le_bytes();
        world.write_config(index, &key, Some(&value));
    }
}

/// Runs an establish from `primary` to `backup` to completion.
pub(crate) fn establish(world: &mut World, primary: usize, backup: usize) -> Result<(), Violation> {
    let command = Command::Establish {
        backup_address: world.appliances[backup].address.clone(),
        reverse_address: world.appliances[primary].address.clone(),
    };
    let id = world.command(primary, command);
    let done = world
        .run_until_true(5 * MINUTE_MS, |world| world.outcome(id).is_some())
        .map_err(|error| violation("liveness", format!("{error:?}")))?;
    match world.outcome(id) {
        Some(Ok(_)) if done => Ok(()),
        other => Err(violation(
            "establish",
            format!("establish did not succeed: {other:?}"),
        )),
    }
}

/// Runs the world on, mapping a step-budget overrun to a liveness violation.
pub(crate) fn run(world: &mut World, duration_ms: u64) -> Result<(), Violation> {
    world
        .run_for(duration_ms)
        .map_err(|error| violation("liveness", format!("{error:?}")))
}

/// Property 5: once faults stop, the pair converges (the union of sessions on both, the
/// backup's configuration equal to the primary's) by itself, within 10 simulated minutes plus
/// the transfer time of the bytes still missing at the simulated link rate. No operator help:
/// periodic sync alone must get there. Client sessions still running are let finish first
/// (they are new work, not faults).
pub(crate) fn settle(world: &mut World, primary: usize, backup: usize) -> Result<(), Violation> {
    world.stop_faults();
    world
        .run_until_true(60 * MINUTE_MS, |world| world.sessions_in_progress() == 0)
        .map_err(|error| violation("liveness", format!("{error:?}")))?;
    world.stop_faults();
    let missing_bytes = world.missing_bytes(&[primary, backup]);
    let transfer_ms = missing_bytes / world.network.rate_bytes_per_ms.max(1);
    let bound_ms = 10 * MINUTE_MS + transfer_ms;
    let started_ms = world.now_ms;
    let mut seen = u64::MAX;
    let converged = world
        .run_until_true(bound_ms, |world| {
            // Convergence can only change when a sync finishes; skip the scan otherwise.
            if world.sync_completions == seen {
                return false;
            }
            seen = world.sync_completions;
            checks::converged(world, primary, backup)
        })
        .map_err(|error| violation("liveness", format!("{error:?}")))?;
    if !converged {
        // A property already broken on the way is the cause to report, not its consequence.
        checks::found_on_the_way(world)?;
        let why = checks::paired(world, primary, backup)
            .and_then(|()| checks::no_session_lost(world, &[primary, backup]))
            .and_then(|()| checks::config_follows_primary(world, primary, backup))
            .err()
            .map_or("recordings still waiting to be imported".to_string(), |v| {
                format!("{}: {}", v.property, v.details)
            });
        let describe = |index: usize| {
            world.status(index).map_or("down".to_string(), |status| {
                format!(
                    "{} {:?} in {}, link {}, problem {:?}, next sync {:?}, last sync {:?}",
                    status.node_name,
                    status.role,
                    status.epoch,
                    if status.link.is_some() { "up" } else { "down" },
                    status.link_problem,
                    status
                        .next_sync_unix_ms
                        .map(|at| at.saturating_sub(world.now_ms)),
                    status.last_sync.map(|sync| sync.text)
                )
            })
        };
        return Err(violation(
            "liveness",
            format!(
                "not converged {} s after faults stopped (bound {} s: 10 min + {missing_bytes} missing bytes at the link rate): {why} [{} / {}]",
                (world.now_ms - started_ms) / 1000,
                bound_ms / 1000,
                describe(primary),
                describe(backup)
            ),
        ));
    }
    Ok(())
}

/// Every safety property at the end of a run: what the world found on the way, the roles,
/// properties 1 to 4.
pub(crate) fn final_checks(world: &World, primary: usize, backup: usize) -> Result<(), Violation> {
    checks::found_on_the_way(world)?;
    checks::paired(world, primary, backup)?;
    checks::no_session_lost(world, &[primary, backup])?;
    checks::config_follows_primary(world, primary, backup)?;
    checks::one_writer_per_epoch(world)?;
    checks::nothing_unverified_visible(world)
}

/// Runs operator command `command` on appliance `index` until it finishes (or `limit_ms`
/// passed): its outcome's text, or why it failed.
pub(crate) fn command(
    world: &mut World,
    index: usize,
    command: Command,
    limit_ms: u64,
) -> Result<Result<String, String>, Violation> {
    let id = world.command(index, command);
    world
        .run_until_true(limit_ms, |world| world.outcome(id).is_some())
        .map_err(|error| violation("liveness", format!("{error:?}")))?;
    Ok(match world.outcome(id) {
        Some(Ok(text)) => Ok(text.clone()),
        Some(Err(error)) => Err(error.to_string()),
        None => Err("the command did not finish".into()),
    })
}
