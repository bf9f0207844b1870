//! The scenarios: each builds a world from the seed, plays an operator script and a fault
//! schedule, and checks the properties at the end (and wherever a property must hold on the
//! way). Names say what a scenario proves.

use dyad_engine::replica::Command;
use dyad_wire::{Role, SoftwareVersion, Version};

use crate::checks::{self, Violation};
use crate::world::World;

/// What a scenario run produced besides pass or fail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub notes: Vec<String>,
}

type ScenarioFn = fn(&mut World) -> Result<Outcome, Violation>;

/// A named, seeded test of the engine.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub run: ScenarioFn,
}

/// Every scenario, in the order `--list` prints them.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "establish_first_sync_after_delay",
        about: "establish; nothing moves before the first-sync delay; then the backup holds everything",
        run: establish_first_sync_after_delay,
    },
    Scenario {
        name: "sync_now_during_link_resets",
        about: "Sync Now while the network resets connections; it finishes once they stop",
        run: sync_now_during_link_resets,
    },
    Scenario {
        name: "periodic_sync_under_partitions",
        about: "sessions and writes keep coming; partitions come and go; periodic sync catches up",
        run: periodic_sync_under_partitions,
    },
    Scenario {
        name: "break_sessions_both_sides_reestablish",
        about: "break; sessions and writes on both sides; re-establish either way round: union on both",
        run: break_sessions_both_sides_reestablish,
    },
    Scenario {
        name: "async_upgrade_old_backup_becomes_primary",
        about: "break; sessions and writes on both; the old backup establishes as primary: union, its config, a conflict record",
        run: crate::scenarios_roles::async_upgrade_old_backup_becomes_primary,
    },
    Scenario {
        name: "planned_role_swap_under_faults",
        about: "promote the backup (final sync, then swap) while connections reset; only the new primary writes",
        run: crate::scenarios_roles::planned_role_swap_under_faults,
    },
    Scenario {
        name: "forced_promotion_split_brain_then_demote",
        about: "forced promotion in a partition; both primary; split brain reported, nothing overwritten; demote resolves",
        run: crate::scenarios_roles::forced_promotion_split_brain_then_demote,
    },
    Scenario {
        name: "stale_dns_sessions_on_old_primary_after_swing",
        about: "after a swap, stale-DNS clients complete sessions on the old primary; they reach the new one",
        run: crate::scenarios_roles::stale_dns_sessions_on_old_primary_after_swing,
    },
    Scenario {
        name: "crash_mid_transfer_resumes_without_resending",
        about: "crash either appliance during a transfer; the transfer resumes, re-sending at most one window",
        run: crash_mid_transfer_resumes_without_resending,
    },
];

pub(crate) const MINUTE_MS: u64 = 60_000;
const KIB: u64 = 1024;

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

/// Runs Sync Now on `index` until it completes; returns whether it succeeded.
pub(crate) fn sync_now(world: &mut World, index: usize, limit_ms: u64) -> Result<bool, Violation> {
    let id = world.command(index, Command::SyncNow);
    world
        .run_until_true(limit_ms, |world| world.outcome(id).is_some())
        .map_err(|error| violation("liveness", format!("{error:?}")))?;
    Ok(matches!(world.outcome(id), Some(Ok(_))))
}

/// Property 5: once faults stop, a Sync Now succeeds within 10 minutes plus the transfer time.
pub(crate) fn converge(world: &mut World, primary: usize, backup: usize) -> Result<(), Violation> {
    world.network.reset_per_mille = 0;
    world.network.partitioned.clear();
    for index in [primary, backup] {
        world.start(index);
    }
    let missing_bytes: u64 = 64 * 1024 * 1024;
    let transfer_ms = missing_bytes / world.network.rate_bytes_per_ms.max(1);
    let deadline = world.now_ms + 10 * MINUTE_MS + transfer_ms;
    loop {
        if world.now_ms > deadline {
            let describe = |index: usize| {
                world.status(index).map_or("down".to_string(), |status| {
                    format!(
                        "{} {:?} epoch {} link {} problem {:?} last sync {:?}",
                        status.node_name,
                        status.role,
                        status.epoch,
                        status.link.is_some(),
                        status.link_problem,
                        status.last_sync.map(|sync| sync.text)
                    )
                })
            };
            return Err(violation(
                "liveness",
                format!(
                    "the pair did not converge within the bound once faults stopped: {} / {}",
                    describe(primary),
                    describe(backup)
                ),
            ));
        }
        if sync_now(world, backup, 10 * MINUTE_MS)? {
            break;
        }
        world
            .run_for(5_000)
            .map_err(|error| violation("liveness", format!("{error:?}")))?;
    }
    Ok(())
}

pub(crate) fn final_checks(world: &World, primary: usize, backup: usize) -> Result<(), Violation> {
    checks::paired(world, primary, backup)?;
    checks::no_session_lost(world, &[primary, backup])?;
    checks::config_follows_primary(world, primary, backup)?;
    checks::one_writer_per_epoch(world)?;
    checks::nothing_unverified_visible(world)
}

fn establish_first_sync_after_delay(world: &mut World) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    let sessions = world.rng.between(5, 40);
    add_sessions(world, a, sessions);
    add_config(world, a, 20, "site");
    establish(world, a, b)?;
    // Before the first-sync delay nothing has been pulled.
    world
        .run_for(50_000)
        .map_err(|error| violation("liveness", format!("{error:?}")))?;
    let early = world
        .replica(b)
        .map_or(0, |replica| replica.store().catalog_len().unwrap_or(0));
    if early != 0 {
        return Err(violation(
            "first_sync_delay",
            format!("the backup pulled {early} sessions before the first-sync delay"),
        ));
    }
    let synced = world
        .run_until_true(10 * MINUTE_MS, |world| {
            world
                .status(b)
                .and_then(|status| status.last_sync)
                .is_some_and(|sync| sync.succeeded)
        })
        .map_err(|error| violation("liveness", format!("{error:?}")))?;
    if !synced {
        return Err(violation(
            "liveness",
            "the first sync did not succeed".into(),
        ));
    }
    final_checks(world, a, b)?;
    Ok(Outcome {
        notes: vec![format!("{sessions} sessions replicated by the first sync")],
    })
}

fn sync_now_during_link_resets(world: &mut World) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    establish(world, a, b)?;
    {
        let count = world.rng.between(10, 30);
        add_sessions(world, a, count)
    };
    add_config(world, a, 10, "policy");
    world.network.reset_per_mille = world.rng.between(1, 20);
    let id = world.command(b, Command::SyncNow);
    world
        .run_for(2 * MINUTE_MS)
        .map_err(|error| violation("liveness", format!("{error:?}")))?;
    let during = world.outcome(id).cloned();
    converge(world, a, b)?;
    final_checks(world, a, b)?;
    Ok(Outcome {
        notes: vec![format!("Sync Now under resets: {during:?}")],
    })
}

fn periodic_sync_under_partitions(world: &mut World) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    establish(world, a, b)?;
    for round in 0..6 {
        {
            let count = world.rng.between(1, 6);
            add_sessions(world, a, count)
        };
        add_config(world, a, 3, &format!("round{round}"));
        if world.rng.chance(1, 2) {
            world.partition(a, b);
            {
                let duration = world.rng.between(MINUTE_MS, 8 * MINUTE_MS);
                world.run_for(duration)
            }
            .map_err(|error| violation("liveness", format!("{error:?}")))?;
            world.heal(a, b);
        }
        {
            let duration = world.rng.between(MINUTE_MS, 10 * MINUTE_MS);
            world.run_for(duration)
        }
        .map_err(|error| violation("liveness", format!("{error:?}")))?;
    }
    // Periodic sync alone (no Sync Now) must catch up once the network is healthy.
    let interval = world.appliances[b].config.sync_interval_ms;
    let caught_up = world
        .run_until_true(3 * interval + 5 * MINUTE_MS, |world| {
            checks::no_session_lost(world, &[a, b]).is_ok()
        })
        .map_err(|error| violation("liveness", format!("{error:?}")))?;
    if !caught_up {
        return Err(violation(
            "liveness",
            "periodic sync did not catch up after the partitions healed".into(),
        ));
    }
    converge(world, a, b)?;
    final_checks(world, a, b)?;
    Ok(Outcome::default())
}

fn break_sessions_both_sides_reestablish(world: &mut World) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    {
        let count = world.rng.between(3, 10);
        add_sessions(world, a, count)
    };
    establish(world, a, b)?;
    converge(world, a, b)?;
    let breaker = if world.rng.chance(1, 2) { a } else { b };
    let id = world.command(breaker, Command::Break);
    world
        .run_for(MINUTE_MS)
        .map_err(|error| violation("liveness", format!("{error:?}")))?;
    if !matches!(world.outcome(id), Some(Ok(_))) {
        return Err(violation(
            "break",
            format!("break failed: {:?}", world.outcome(id)),
        ));
    }
    for index in [a, b] {
        if world.replica(index).map(|replica| replica.state().role) != Some(Role::Standalone) {
            return Err(violation(
                "break",
                format!("appliance {index} is not standalone after the break"),
            ));
        }
    }
    // While broken, both serve sessions and take configuration writes.
    {
        let count = world.rng.between(1, 8);
        add_sessions(world, a, count)
    };
    {
        let count = world.rng.between(1, 8);
        add_sessions(world, b, count)
    };
    add_config(world, a, 4, "a-side");
    add_config(world, b, 4, "b-side");
    world
        .run_for(10 * MINUTE_MS)
        .map_err(|error| violation("liveness", format!("{error:?}")))?;
    // Re-establish either way round.
    let (primary, backup) = if world.rng.chance(1, 2) {
        (a, b)
    } else {
        (b, a)
    };
    establish(world, primary, backup)?;
    converge(world, primary, backup)?;
    final_checks(world, primary, backup)?;
    let conflicts = world.replica(backup).map_or(0, |replica| {
        dyad_engine::replica::ReplicaStore::conflicts(replica.store()).map_or(0, |list| list.len())
    });
    if conflicts == 0 {
        return Err(violation(
            "config_conflict_recorded",
            "the backup's differing configuration was replaced without a conflict record".into(),
        ));
    }
    Ok(Outcome {
        notes: vec![format!("primary {primary}, {conflicts} conflict record(s)")],
    })
}

fn crash_mid_transfer_resumes_without_resending(world: &mut World) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    establish(world, a, b)?;
    for _ in 0..3 {
        let size = world.rng.between(4 * 1024 * KIB, 8 * 1024 * KIB);
        world.complete_session(a, size);
    }
    let total: u64 = 0;
    let _ = total;
    let id = world.command(b, Command::SyncNow);
    let mut crashes = 0u64;
    for _ in 0..world.rng.between(1, 3) {
        // Let some chunks land, then pull the plug on one side.
        {
            let duration = world.rng.between(50, 400);
            world.run_for(duration)
        }
        .map_err(|error| violation("liveness", format!("{error:?}")))?;
        let victim = if world.rng.chance(1, 2) { a } else { b };
        let tear = world.rng.chance(1, 2);
        world.crash(victim, tear);
        crashes += 1;
        {
            let duration = world.rng.between(1_000, 30_000);
            world.run_for(duration)
        }
        .map_err(|error| violation("liveness", format!("{error:?}")))?;
        world.start(victim);
    }
    let _ = world.outcome(id);
    converge(world, a, b)?;
    final_checks(world, a, b)?;
    // Bytes re-sent: at most one window (plus in-flight slack) per interruption.
    let window_bytes = world.appliances[b].config.window_chunks as u64 * 1024 * 1024;
    let sent = world.chunk_bytes_sent[a];
    let recorded: u64 = world.replica(a).map_or(0, |replica| {
        replica
            .store()
            .catalog_list()
            .map_or(0, |list| list.iter().map(|meta| meta.size_bytes).sum())
    });
    let allowed = recorded + (crashes + 1) * window_bytes;
    if sent > allowed {
        return Err(violation(
            "resume_resends_at_most_one_window",
            format!("primary sent {sent} bytes for {recorded} bytes of recordings with {crashes} interruptions (allowed {allowed})"),
        ));
    }
    Ok(Outcome {
        notes: vec![format!(
            "{crashes} crashes; sent {sent} bytes for {recorded}"
        )],
    })
}
