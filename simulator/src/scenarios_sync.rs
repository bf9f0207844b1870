//! The scenarios of the pair syncing, and of the faults a sync lives through: establish and
//! the first-sync delay, Sync Now and periodic sync under link resets, partitions (both ways
//! and one way), frozen processes and clock faults, crashes mid-transfer, during establish and
//! with client sessions running, the backup's disk failing, filling up or rotting, and a
//! break reconciled at scale. Each builds a world from the seed, plays an operator script and
//! a fault schedule, and checks the properties at the end (and wherever a property must hold
//! on the way). Names say what a scenario proves; `crate::scenarios` lists them.

use dyad_core::replica::Command;
use dyad_store::disk::sim::{Ratio, SimFaults};
use dyad_wire::Role;

use crate::checks;
use crate::harness::{
    add_config, add_sessions, establish, final_checks, pair, recording_size, run, settle,
    violation, Outcome, KIB, MINUTE_MS,
};
use crate::violation::Violation;
use crate::world::World;

pub(crate) fn establish_first_sync_after_delay(world: &mut World) -> Result<Outcome, Violation> {
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

pub(crate) fn sync_now_during_link_resets(world: &mut World) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    establish(world, a, b)?;
    {
        let count = world.rng.between(10, 30);
        add_sessions(world, a, count)
    };
    add_config(world, a, 10, "policy");
    world.network.reset_per_mille = world.rng.between(1, 20);
    world.network.delay_spike_per_mille = world.rng.between(0, 50);
    world.network.corrupt_chunk_per_mille = world.rng.between(0, 60);
    let id = world.command(b, Command::SyncNow);
    world
        .run_for(2 * MINUTE_MS)
        .map_err(|error| violation("liveness", format!("{error:?}")))?;
    let during = world.outcome(id).cloned();
    settle(world, a, b)?;
    final_checks(world, a, b)?;
    Ok(Outcome {
        notes: vec![format!("Sync Now under resets: {during:?}")],
    })
}

pub(crate) fn periodic_sync_under_partitions(world: &mut World) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    establish(world, a, b)?;
    world.network.corrupt_chunk_per_mille = world.rng.between(0, 30);
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
    settle(world, a, b)?;
    final_checks(world, a, b)?;
    Ok(Outcome::default())
}

pub(crate) fn break_sessions_both_sides_reestablish(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    {
        let count = world.rng.between(3, 10);
        add_sessions(world, a, count)
    };
    establish(world, a, b)?;
    settle(world, a, b)?;
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
    settle(world, primary, backup)?;
    final_checks(world, primary, backup)?;
    let conflicts = world.replica(backup).map_or(0, |replica| {
        dyad_core::replica::ReplicaStore::conflicts(replica.store()).map_or(0, |list| list.len())
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

pub(crate) fn crash_mid_transfer_resumes_without_resending(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    establish(world, a, b)?;
    for _ in 0..3 {
        let size = world.rng.between(4 * 1024 * KIB, 8 * 1024 * KIB);
        world.complete_session(a, size);
    }
    world.network.corrupt_chunk_per_mille = world.rng.between(0, 40);
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
    settle(world, a, b)?;
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

/// Client sessions on whichever appliance the site address points at, spread over
/// `duration_ms`, each lasting one to ten minutes.
fn clients(world: &mut World, count: u64, duration_ms: u64) -> Result<(), Violation> {
    let gap = duration_ms / count.max(1);
    for _ in 0..count {
        let size = recording_size(world);
        let length = world.rng.between(MINUTE_MS, 10 * MINUTE_MS);
        world.start_client_session(size, length);
        let wait = world.rng.between(gap / 2, gap + gap / 2);
        run(world, wait)?;
    }
    Ok(())
}

fn other(a: usize, b: usize, index: usize) -> usize {
    if index == a {
        b
    } else {
        a
    }
}

pub(crate) fn backup_bit_flips_detected_by_reads_and_refetched(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    let count = world.rng.between(8, 25);
    add_sessions(world, a, count);
    establish(world, a, b)?;
    settle(world, a, b)?;
    // A faulty sender too: a chunk with a flipped bit must be refused and asked for again.
    world.network.corrupt_chunk_per_mille = world.rng.between(10, 80);
    let mut flips = 0;
    let mut refused = 0;
    for _ in 0..world.rng.between(2, 5) {
        for _ in 0..world.rng.between(1, 3) {
            let bits = world.rng.between(1, 3);
            flips += u64::from(world.flip_recording_bits(b, bits));
        }
        let more = world.rng.between(1, 5);
        add_sessions(world, a, more);
        // Some clients play recordings back from the backup: reads find the damage.
        refused += world.play_back_some(b, 2);
        let wait = world.rng.between(MINUTE_MS, 8 * MINUTE_MS);
        run(world, wait)?;
    }
    // Faults stop; clients read everything once more (finding what is left), then the pair
    // must converge and nothing corrupt may be listed or served.
    world.stop_faults();
    refused += world.play_back_all(b);
    settle(world, a, b)?;
    final_checks(world, a, b)?;
    checks::nothing_corrupt_served(world)?;
    Ok(Outcome {
        notes: vec![format!(
            "{flips} damaged files, {refused} playbacks refused, {} chunks corrupted in transit",
            world.chunks_corrupted
        )],
    })
}

pub(crate) fn backup_fsync_errors_stop_the_store_restart_converges(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    let count = world.rng.between(3, 10);
    add_sessions(world, a, count);
    establish(world, a, b)?;
    settle(world, a, b)?;
    let count = world.rng.between(5, 20);
    add_sessions(world, a, count);
    add_config(world, a, 5, "during-faults");
    let one_in = world.rng.between(2, 30) as u32;
    world.appliances[b].disk.set_faults(SimFaults {
        sync_error: Ratio::new(1, one_in),
        sync_dir_error: Ratio::new(1, one_in),
        ..SimFaults::default()
    });
    let id = world.command(b, Command::SyncNow);
    world
        .run_until_true(5 * MINUTE_MS, |world| world.outcome(id).is_some())
        .map_err(|error| violation("liveness", format!("{error:?}")))?;
    let wait = world.rng.between(MINUTE_MS, 10 * MINUTE_MS);
    run(world, wait)?;
    let injected = world.appliances[b].disk.stats().faults_injected;
    let failed = world.storage_failed(b);
    // A failed fsync is terminal: the store must have stopped rather than guess.
    if injected > 0 && !failed {
        return Err(violation(
            "failed_fsync_is_terminal",
            format!("{injected} sync failures were injected but the backup's store kept going"),
        ));
    }
    let outcome = world.outcome(id).cloned();
    if outcome.is_none() {
        return Err(violation(
            "sync_now_returns",
            format!("Sync Now never returned (store stopped: {failed})"),
        ));
    }
    // The operator fixes the disk and restarts the backup (sometimes by power-cycling it).
    world.appliances[b].disk.set_faults(SimFaults::default());
    if world.rng.chance(1, 2) {
        world.restart(b);
    } else {
        let tear = world.rng.chance(1, 2);
        world.crash(b, tear);
        world.start(b);
    }
    settle(world, a, b)?;
    final_checks(world, a, b)?;
    Ok(Outcome {
        notes: vec![format!(
            "1 in {one_in} syncs failed; {injected} injected; store stopped: {failed}; Sync Now: {outcome:?}"
        )],
    })
}

pub(crate) fn backup_disk_full_sync_fails_clearly_then_space_freed_converges(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    let count = world.rng.between(2, 6);
    add_sessions(world, a, count);
    establish(world, a, b)?;
    settle(world, a, b)?;
    let mut incoming = 0;
    for _ in 0..world.rng.between(3, 8) {
        let size = world.rng.between(512 * KIB, 3 * 1024 * KIB);
        if world.complete_session(a, size).is_some() {
            incoming += size;
        }
    }
    let used = world.appliances[b].disk.used_bytes();
    let room = world.rng.below(incoming / 2);
    world.appliances[b].disk.set_faults(SimFaults {
        quota_bytes: Some(used + room),
        ..SimFaults::default()
    });
    let id = world.command(b, Command::SyncNow);
    world
        .run_until_true(5 * MINUTE_MS, |world| world.outcome(id).is_some())
        .map_err(|error| violation("liveness", format!("{error:?}")))?;
    let outcome = world.outcome(id).cloned();
    match &outcome {
        Some(Err(error)) if error.to_string().contains("full") => {}
        other => {
            return Err(violation(
                "disk_full_reported_clearly",
                format!(
                    "Sync Now into a full disk ended with {other:?}, not a clear 'disk is full'"
                ),
            ))
        }
    }
    // Space is freed; the operator restarts the service if the store stopped.
    world.appliances[b].disk.set_faults(SimFaults::default());
    if world.storage_failed(b) {
        world.restart(b);
    }
    settle(world, a, b)?;
    final_checks(world, a, b)?;
    Ok(Outcome {
        notes: vec![format!(
            "{incoming} bytes incoming, room for {room}: {outcome:?}"
        )],
    })
}

pub(crate) fn clock_skew_drift_and_jumps_do_not_break_sync(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    for index in [a, b] {
        let offset = world.rng.between(0, 4 * 60 * MINUTE_MS) as i64 - 2 * 60 * MINUTE_MS as i64;
        world.jump_clock(index, offset);
        let drift = world.rng.between(0, 1000) as i64 - 500;
        world.set_clock_drift(index, drift);
    }
    let count = world.rng.between(3, 10);
    add_sessions(world, a, count);
    establish(world, a, b)?;
    let mut jumps = 0;
    for round in 0..world.rng.between(3, 6) {
        let count = world.rng.between(2, 6);
        clients(world, count, 5 * MINUTE_MS)?;
        add_config(world, a, 2, &format!("round{round}"));
        let victim = if world.rng.chance(1, 2) { a } else { b };
        let size = world.rng.between(MINUTE_MS, 3 * 60 * MINUTE_MS) as i64;
        let delta = if world.rng.chance(1, 2) { size } else { -size };
        world.jump_clock(victim, delta);
        jumps += 1;
        if world.rng.chance(1, 3) {
            world.command(other(a, b, victim), Command::SyncNow);
        }
        let wait = world.rng.between(MINUTE_MS, 6 * MINUTE_MS);
        run(world, wait)?;
    }
    settle(world, a, b)?;
    final_checks(world, a, b)?;
    Ok(Outcome {
        notes: vec![format!("{jumps} clock jumps")],
    })
}

pub(crate) fn pause_either_side_links_time_out_then_recover(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    establish(world, a, b)?;
    settle(world, a, b)?;
    let mut pauses = Vec::new();
    for _ in 0..world.rng.between(1, 3) {
        let count = world.rng.between(2, 8);
        add_sessions(world, a, count);
        add_config(world, a, 2, "pause");
        let size = world.rng.between(1, 500 * KIB);
        world.start_client_session(size, 2 * MINUTE_MS);
        let id = world.command(b, Command::SyncNow);
        let lead = world.rng.between(0, 300);
        run(world, lead)?;
        let victim = if world.rng.chance(1, 2) { a } else { b };
        let length = world.rng.between(5_000, 5 * MINUTE_MS);
        world.pause(victim);
        run(world, length)?;
        world.resume(victim);
        pauses.push((victim, length / 1000, world.outcome(id).is_some()));
        let wait = world.rng.between(10_000, 3 * MINUTE_MS);
        run(world, wait)?;
    }
    settle(world, a, b)?;
    final_checks(world, a, b)?;
    Ok(Outcome {
        notes: vec![format!("pauses (appliance, s, Sync Now done): {pauses:?}")],
    })
}

pub(crate) fn one_way_partition_stalls_then_resets_and_recovers(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    establish(world, a, b)?;
    settle(world, a, b)?;
    let mut cuts = Vec::new();
    for _ in 0..world.rng.between(1, 3) {
        let count = world.rng.between(2, 8);
        add_sessions(world, a, count);
        let count = world.rng.between(0, 3);
        add_sessions(world, b, count);
        let id = world.command(b, Command::SyncNow);
        let lead = world.rng.between(0, 500);
        run(world, lead)?;
        let (from, to) = if world.rng.chance(1, 2) {
            (a, b)
        } else {
            (b, a)
        };
        let length = world.rng.between(5_000, 4 * MINUTE_MS);
        world.partition_one_way(from, to);
        run(world, length)?;
        world.heal_one_way(from, to);
        cuts.push((from, to, length / 1000, world.outcome(id).is_some()));
        let wait = world.rng.between(10_000, 2 * MINUTE_MS);
        run(world, wait)?;
    }
    settle(world, a, b)?;
    final_checks(world, a, b)?;
    Ok(Outcome {
        notes: vec![format!(
            "one-way cuts (from, to, s, Sync Now done): {cuts:?}"
        )],
    })
}

pub(crate) fn crash_during_establish_then_retry_converges(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    let count = world.rng.between(2, 10);
    add_sessions(world, a, count);
    add_config(world, a, 5, "site");
    let count = world.rng.between(0, 4);
    add_sessions(world, b, count);
    let command = Command::Establish {
        backup_address: world.appliances[b].address.clone(),
        reverse_address: world.appliances[a].address.clone(),
    };
    let id = world.command(a, command);
    let lead = world.rng.between(0, 120);
    run(world, lead)?;
    let victim = if world.rng.chance(1, 2) { a } else { b };
    let tear = world.rng.chance(1, 2);
    world.crash(victim, tear);
    let down = world.rng.between(1_000, 30_000);
    run(world, down)?;
    world.start(victim);
    run(world, MINUTE_MS)?;
    let first = world.outcome(id).cloned();
    // The operator looks at both sides: if the relationship is not whole, break whatever half
    // was made and establish again.
    let mut attempts = 0;
    while checks::paired(world, a, b).is_err() && attempts < 3 {
        attempts += 1;
        for index in [a, b] {
            let role = world.replica(index).map(|replica| replica.state().role);
            if role.is_some_and(|role| role != Role::Standalone) {
                world.command(index, Command::Break);
            }
        }
        run(world, MINUTE_MS)?;
        if checks::paired(world, a, b).is_err() {
            let _ = establish(world, a, b);
        }
    }
    settle(world, a, b)?;
    final_checks(world, a, b)?;
    Ok(Outcome {
        notes: vec![format!(
            "crashed appliance {victim} (tear {tear}); first establish: {first:?}; {attempts} repair(s)"
        )],
    })
}

pub(crate) fn both_sides_crash_sessions_in_progress_cut_off_kept(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    establish(world, a, b)?;
    settle(world, a, b)?;
    world.site_target = a;
    for _ in 0..world.rng.between(3, 8) {
        let size = world.rng.between(64 * KIB, 4 * 1024 * KIB);
        let length = world.rng.between(MINUTE_MS, 20 * MINUTE_MS);
        world.start_client_session(size, length);
    }
    for _ in 0..world.rng.between(1, 4) {
        let size = world.rng.between(1024 * KIB, 6 * 1024 * KIB);
        world.complete_session(a, size);
    }
    let id = world.command(b, Command::SyncNow);
    let lead = world.rng.between(50, 2_000);
    run(world, lead)?;
    let first = if world.rng.chance(1, 2) { a } else { b };
    let tear = world.rng.chance(1, 2);
    world.crash(first, tear);
    let gap = world.rng.between(0, 500);
    run(world, gap)?;
    let tear = world.rng.chance(1, 2);
    world.crash(other(a, b, first), tear);
    let down = world.rng.between(1_000, 10 * MINUTE_MS);
    run(world, down)?;
    let cut = world.sessions_cut_off;
    world.start(a);
    world.start(b);
    if cut > 0 && world.pending_imports() > 0 {
        return Err(violation(
            "no_session_lost",
            "sessions cut off by the crash were not imported when the appliance came back".into(),
        ));
    }
    settle(world, a, b)?;
    final_checks(world, a, b)?;
    Ok(Outcome {
        notes: vec![format!(
            "{cut} sessions cut off and kept; Sync Now before the crash: {:?}",
            world.outcome(id)
        )],
    })
}

/// The speed target: about one simulated hour, two appliances, a few hundred client
/// sessions holding 64 MiB of recordings in total, a break with sessions on both sides, and a
/// re-establish that reconciles the union.
pub(crate) fn break_reestablish_few_hundred_sessions_64mib(
    world: &mut World,
) -> Result<Outcome, Violation> {
    const TOTAL_BYTES: u64 = 64 * 1024 * KIB;
    let (a, b) = pair(world);
    let sessions = world.rng.between(250, 350);
    let weights: Vec<u64> = (0..sessions).map(|_| world.rng.between(1, 1000)).collect();
    let weight_total: u64 = weights.iter().sum();
    let mut sizes: Vec<u64> = weights
        .iter()
        .map(|weight| weight * TOTAL_BYTES / weight_total)
        .collect();
    let rest = TOTAL_BYTES - sizes.iter().sum::<u64>();
    sizes[0] += rest;
    let (connected, broken) = sizes.split_at(sizes.len() / 4);
    establish(world, a, b)?;
    world.site_target = a;
    // A quarter of the sessions while the pair is healthy (replicated by periodic syncs).
    let gap = 10 * MINUTE_MS / connected.len() as u64;
    for size in connected {
        let length = world.rng.between(MINUTE_MS, 5 * MINUTE_MS);
        world.start_client_session(*size, length);
        run(world, gap)?;
    }
    let breaker = if world.rng.chance(1, 2) { a } else { b };
    world.command(breaker, Command::Break);
    run(world, MINUTE_MS)?;
    // Broken for half an hour: sessions land on both appliances.
    let gap = 30 * MINUTE_MS / broken.len() as u64;
    for size in broken {
        let length = world.rng.between(MINUTE_MS, 5 * MINUTE_MS);
        let index = if world.rng.chance(1, 2) { a } else { b };
        world.start_client_session_on(index, *size, length);
        run(world, gap)?;
    }
    add_config(world, a, 3, "a-side");
    add_config(world, b, 3, "b-side");
    run(world, 5 * MINUTE_MS)?;
    let (primary, backup) = if world.rng.chance(1, 2) {
        (a, b)
    } else {
        (b, a)
    };
    establish(world, primary, backup)?;
    settle(world, primary, backup)?;
    final_checks(world, primary, backup)?;
    Ok(Outcome {
        notes: vec![format!(
            "{} sessions, {} bytes; primary {primary}; {} bytes sent",
            world.completed_sessions.len(),
            world.completed_sizes.values().sum::<u64>(),
            world.chunk_bytes_sent.iter().sum::<u64>()
        )],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dyad_core::replica::CommandError;

    /// A role change whose save failed used to stay in memory: the command failed, yet status
    /// showed the new role until a restart put the saved one back. Now a failed save puts the
    /// replica's state back to what the disk holds, and status shows the storage failure.
    #[test]
    fn a_break_whose_save_fails_leaves_the_role_as_saved() {
        for seed in 0..5 {
            let mut world = World::new(seed);
            let (a, b) = pair(&mut world);
            establish(&mut world, a, b).expect("the pair establishes");
            world.appliances[a].disk.fail_next_sync();
            world.command(a, Command::Break);
            world.run_for(1_000).expect("the world runs");
            let status = world.status(a).expect("appliance a is up");
            assert_eq!(status.role, Role::Primary, "seed {seed}");
            assert!(status.storage_failure.is_some(), "seed {seed}");
        }
    }

    /// A break whose save failed used to report "relationship broken" and tell the peer, which
    /// went standalone, while this appliance came back as primary after its rollback. The save
    /// now comes first: if it fails, the command fails with the storage reason and the peer
    /// hears nothing of a break.
    #[test]
    fn a_break_whose_save_fails_fails_and_is_not_announced() {
        for seed in 0..5 {
            let mut world = World::new(seed);
            let (a, b) = pair(&mut world);
            establish(&mut world, a, b).expect("the pair establishes");
            world.appliances[a].disk.fail_next_sync();
            let id = world.command(a, Command::Break);
            world.run_for(1_000).expect("the world runs");
            match world.outcome(id) {
                Some(Err(CommandError::Local(text))) => {
                    assert!(text.contains("local storage failed"), "seed {seed}: {text}")
                }
                other => panic!("seed {seed}: the break should fail locally, got {other:?}"),
            }
            let peer = world.status(b).expect("appliance b is up");
            assert_eq!(
                peer.role,
                Role::Backup,
                "seed {seed}: b was told of a break"
            );
        }
    }

    /// A pair with `count` one-MiB sessions on the primary `a`, established, the first sync
    /// not yet due.
    fn pair_with_sessions_on_the_primary(seed: u64, count: u64) -> (World, usize, usize) {
        let mut world = World::new(seed);
        let (a, b) = pair(&mut world);
        for _ in 0..count {
            world.complete_session(a, 1024 * KIB);
        }
        establish(&mut world, a, b).expect("the pair establishes");
        (world, a, b)
    }

    /// Runs until appliance `index` has sent `bytes` recording bytes to its peer.
    fn run_until_sent(world: &mut World, index: usize, bytes: u64) {
        let sent = world
            .run_until_true(MINUTE_MS, |world| {
                world
                    .status(index)
                    .is_some_and(|status| status.counters.bytes_sent >= bytes)
            })
            .expect("the world runs");
        assert!(sent, "appliance {index} sent {bytes} bytes within a minute");
    }

    /// The backup killed in the middle of the Sync Now it asked for: the primary, which had
    /// finished its own (empty) half and was serving the backup's, used to say "last sync
    /// succeeded" and "lag 0". It saw the Sync Now cut off, so it says so.
    #[test]
    fn a_sync_now_cut_by_the_backup_crashing_is_interrupted_on_the_primary() {
        for seed in 0..3 {
            let (mut world, a, b) = pair_with_sessions_on_the_primary(seed, 20);
            world.command(b, Command::SyncNow);
            run_until_sent(&mut world, a, 4 * 1024 * KIB);
            world.crash(b, false);
            world.run_for(1_000).expect("the world runs");
            let status = world.status(a).expect("appliance a is up");
            let last = status.last_sync.expect("a saw a sync");
            assert!(!last.succeeded && last.interrupted, "seed {seed}: {last:?}");
            assert_eq!(status.lag, None, "seed {seed}: the lag is not known");
            let since = status
                .lag_unknown_since_unix_ms
                .expect("unknown since the loss");
            assert_eq!(since, last.finished_unix_ms, "seed {seed}");
        }
    }

    /// The link lost in the middle of a Sync Now issued on the primary: the backup, whose job
    /// it interrupted, and the primary, which waited for it, both record the sync as
    /// interrupted and show no lag figure (the backup used to show "lag 0" when its job was
    /// cut off before it had compared catalogs).
    #[test]
    fn a_sync_now_cut_by_a_link_reset_is_interrupted_on_both_sides() {
        for seed in 0..3 {
            let (mut world, a, b) = pair_with_sessions_on_the_primary(seed, 20);
            world.command(a, Command::SyncNow);
            run_until_sent(&mut world, a, 4 * 1024 * KIB);
            world.reset_all_links();
            world.run_for(1_000).expect("the world runs");
            for index in [a, b] {
                let status = world.status(index).expect("both are up");
                let last = status.last_sync.expect("both saw the sync");
                assert!(
                    !last.succeeded && last.interrupted,
                    "seed {seed}, appliance {index}: {last:?}"
                );
                assert_eq!(status.lag, None, "seed {seed}, appliance {index}");
                let since = status
                    .lag_unknown_since_unix_ms
                    .expect("the lag is unknown since the comparison or the loss");
                if index == b {
                    // b's job had compared catalogs before the loss: unknown since then.
                    assert!(
                        since < last.finished_unix_ms,
                        "seed {seed}: {since} {last:?}"
                    );
                } else {
                    assert_eq!(since, last.finished_unix_ms, "seed {seed}: since the loss");
                }
            }
        }
    }

    /// A Sync Now that finished on both sides stays a success when the link drops later: the
    /// side that asked tells the serving side when its part ended, so the serving side does
    /// not take the later loss for a cut-off.
    #[test]
    fn a_finished_sync_now_is_not_marked_interrupted_by_a_later_link_loss() {
        for seed in 0..3 {
            let (mut world, a, b) = pair_with_sessions_on_the_primary(seed, 5);
            let id = world.command(b, Command::SyncNow);
            let done = world
                .run_until_true(MINUTE_MS, |world| world.outcome(id).is_some())
                .expect("the world runs");
            assert!(done, "seed {seed}: Sync Now finishes");
            assert!(
                matches!(world.outcome(id), Some(Ok(_))),
                "seed {seed}: {:?}",
                world.outcome(id)
            );
            // The asking side's word that its part ended is one trip away.
            world.run_for(100).expect("the world runs");
            world.reset_all_links();
            world.run_for(1_000).expect("the world runs");
            for index in [a, b] {
                let status = world.status(index).expect("both are up");
                let last = status.last_sync.expect("both ran a sync");
                assert!(last.succeeded, "seed {seed}, appliance {index}: {last:?}");
                let lag = status.lag.expect("the lag is known");
                assert_eq!(lag.sessions_missing, 0, "seed {seed}, appliance {index}");
                assert_eq!(status.lag_unknown_since_unix_ms, None, "seed {seed}");
            }
        }
    }

    /// A sync cut off before it compared catalogs knows nothing about the lag; it used to
    /// show "0 sessions, 0 bytes missing".
    #[test]
    fn a_sync_cut_before_its_comparison_shows_no_lag_figure() {
        for seed in 0..3 {
            let (mut world, _a, b) = pair_with_sessions_on_the_primary(seed, 5);
            world.command(b, Command::SyncNow);
            let running = world
                .run_until_true(MINUTE_MS, |world| {
                    world
                        .status(b)
                        .is_some_and(|status| status.running.is_some())
                })
                .expect("the world runs");
            assert!(running, "seed {seed}: b's sync starts");
            world.reset_all_links();
            world.run_for(1_000).expect("the world runs");
            let status = world.status(b).expect("appliance b is up");
            let last = status.last_sync.expect("b's sync was recorded");
            assert!(!last.succeeded && last.interrupted, "seed {seed}: {last:?}");
            assert_eq!(status.lag, None, "seed {seed}: the lag is not known");
            assert_eq!(
                status.lag_unknown_since_unix_ms,
                Some(last.finished_unix_ms),
                "seed {seed}: unknown since the link was lost"
            );
        }
    }

    /// A forced promotion whose save failed said only "could not save the new role"; the
    /// operator needs the storage reason to act on it.
    #[test]
    fn a_forced_promotion_whose_save_fails_says_why() {
        for seed in 0..3 {
            let mut world = World::new(seed);
            let (a, b) = pair(&mut world);
            establish(&mut world, a, b).expect("the pair establishes");
            world.partition(a, b);
            world.run_for(2 * MINUTE_MS).expect("the world runs");
            world.appliances[b].disk.fail_next_sync();
            let id = world.command(b, Command::Promote { force: true });
            world.run_for(1_000).expect("the world runs");
            match world.outcome(id) {
                Some(Err(CommandError::Local(text))) => {
                    assert!(text.contains("local storage failed"), "seed {seed}: {text}")
                }
                other => panic!("seed {seed}: the promotion should fail locally, got {other:?}"),
            }
            let status = world.status(b).expect("appliance b is up");
            assert_eq!(status.role, Role::Backup, "seed {seed}");
        }
    }
}
