//! Scenarios of storage faults as Linux delivers them: an fsync error reported once whose
//! pages never reach the disk, bad sectors under recordings, a damaged recording no peer
//! holds, and power lost inside store operations and inside recovery.

use dyad_core::replica::Command;
use dyad_store::disk::Disk;

use crate::checks;
use crate::coverage::CoverageEvent;
use crate::harness::{
    add_sessions, establish, final_checks, pair, run, settle, violation, Outcome, KIB, MINUTE_MS,
};
use crate::violation::Violation;
use crate::world::World;

/// A backup receiving large recordings has one fsync fail (Linux reports it once and marks
/// the pages clean). The store stops; the operator restarts the service without a power
/// loss, so the page cache still holds the failed pages; later the power goes. Nothing the
/// backup lists may fail to verify on the medium, and the pair converges.
pub(crate) fn fsync_error_never_makes_unsynced_chunks_durable(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    establish(world, a, b)?;
    settle(world, a, b)?;
    for _ in 0..world.rng.between(2, 5) {
        let size = world.rng.between(2 * 1024 * KIB, 6 * 1024 * KIB);
        world.complete_session(a, size);
    }
    world.command(b, Command::SyncNow);
    let lead = world.rng.between(5, 400);
    run(world, lead)?;
    world.appliances[b].disk.fail_next_sync();
    let wait = world.rng.between(1_000, 30_000);
    run(world, wait)?;
    let failed_syncs = world.appliances[b].disk.stats().failed_syncs;
    if failed_syncs > 0 && !world.storage_failed(b) {
        return Err(violation(
            "failed_fsync_is_terminal",
            "an fsync failed on the backup but its store kept going".into(),
        ));
    }
    // A service restart: the failed pages are still in the cache.
    world.restart(b);
    let more = world.rng.between(MINUTE_MS, 5 * MINUTE_MS);
    run(world, more)?;
    // Then the power goes: what was never written is gone.
    let tear = world.rng.chance(1, 2);
    world.crash(b, tear);
    world.start(b);
    checks::nothing_unverified_on(world, b, true)?;
    settle(world, a, b)?;
    final_checks(world, a, b)?;
    checks::nothing_corrupt_served(world)?;
    Ok(Outcome {
        notes: vec![format!("{failed_syncs} fsync failure(s) on the backup")],
    })
}

/// Bad sectors under recordings of the backup that the primary holds: reads of them are
/// refused and the recordings listed as damaged, the backup's store keeps serving the others
/// and replicating, and the damaged ones are fetched again, intact.
pub(crate) fn read_errors_damage_one_recording_not_the_store(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    let count = world.rng.between(6, 20);
    add_sessions(world, a, count);
    establish(world, a, b)?;
    settle(world, a, b)?;
    let mut bad = 0;
    for _ in 0..world.rng.between(1, 4) {
        bad += u64::from(world.fail_replicated_recording_reads(b));
    }
    let refused = world.play_back_all(b);
    if world.storage_failed(b) {
        return Err(violation(
            "read_error_is_damage_not_failure",
            "a read error stopped the backup's store".into(),
        ));
    }
    let damaged = world
        .replica(b)
        .and_then(|replica| replica.store().list_damaged().ok())
        .unwrap_or_default();
    if refused > 0 && damaged.is_empty() {
        return Err(violation(
            "damaged_recordings_listed",
            format!("{refused} playbacks were refused but the backup lists nothing damaged"),
        ));
    }
    // The store goes on: new sessions still reach the backup.
    let more = world.rng.between(1, 5);
    add_sessions(world, a, more);
    world.command(b, Command::SyncNow);
    run(world, 2 * MINUTE_MS)?;
    world.stop_faults();
    settle(world, a, b)?;
    world.play_back_all(b);
    settle(world, a, b)?;
    final_checks(world, a, b)?;
    checks::nothing_corrupt_served(world)?;
    Ok(Outcome {
        notes: vec![format!(
            "{bad} bad sectors, {refused} playbacks refused, {} listed damaged",
            damaged.len()
        )],
    })
}

/// A standalone appliance (no peer) finds a recording damaged by `session verify`: it stays
/// listed as damaged with its bytes, is never served or listed as complete, and a backup
/// paired later never receives it as complete.
pub(crate) fn damaged_recording_without_a_peer_is_kept_and_shown(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    let count = world.rng.between(3, 10);
    add_sessions(world, a, count);
    run(world, 10_000)?;
    let bits = world.rng.between(1, 4);
    if !world.flip_recording_bits(a, bits) {
        return Ok(Outcome {
            notes: vec!["no recording to damage".into()],
        });
    }
    let Some(replica) = world.replica(a) else {
        return Err(violation("appliance_up", "appliance a is down".into()));
    };
    let store = replica.store();
    let report = store
        .verify_all()
        .map_err(|error| violation("verify_runs", error.to_string()))?;
    let damaged = store
        .list_damaged()
        .map_err(|error| violation("damaged_recordings_listed", error.to_string()))?;
    let listed = store
        .catalog_list()
        .map_err(|error| violation("catalog_lists", error.to_string()))?;
    if damaged.is_empty() {
        return Err(violation(
            "damaged_recordings_listed",
            format!(
                "verify found {} bad chunks but nothing is listed as damaged: the only copy vanished",
                report.bad_chunks.len()
            ),
        ));
    }
    for entry in &damaged {
        if listed.iter().any(|meta| meta.id == entry.meta.id) {
            return Err(violation(
                "nothing_unverified_visible",
                "a damaged recording is also listed as complete".into(),
            ));
        }
        let part = world.appliances[a]
            .disk
            .list()
            .unwrap_or_default()
            .into_iter()
            .find(|name| {
                name.starts_with("part-")
                    && name.contains(&format!("-{:016x}.", entry.meta.id.sequence))
            });
        let kept = part.and_then(|name| world.appliances[a].disk.file_len(&name));
        if kept != Some(entry.meta.size_bytes) {
            return Err(violation(
                "damaged_bytes_kept",
                format!("the damaged recording's bytes were not kept ({kept:?})"),
            ));
        }
    }
    world
        .coverage
        .note(CoverageEvent::DamagedRecordingKeptWithoutPeer);
    // A backup paired now receives every complete session and never the damaged one (the
    // pair cannot converge on the damaged session: its only copy is damaged, by the
    // hardware's doing, and stays so until the operator acts).
    establish(world, a, b)?;
    world.command(b, Command::SyncNow);
    run(world, 10 * MINUTE_MS)?;
    checks::nothing_unverified_visible(world)?;
    let backup_list = world
        .replica(b)
        .and_then(|replica| replica.store().catalog_list().ok())
        .unwrap_or_default();
    for meta in &listed {
        if !backup_list.iter().any(|held| held.id == meta.id) {
            return Err(violation(
                "no_session_lost",
                format!(
                    "the backup lacks complete session {}#{} after 10 minutes",
                    meta.id.origin, meta.id.sequence
                ),
            ));
        }
    }
    for entry in &damaged {
        if backup_list.iter().any(|meta| meta.id == entry.meta.id) {
            return Err(violation(
                "nothing_unverified_visible",
                "the backup lists a session whose only copy is damaged".into(),
            ));
        }
    }
    let still = world
        .replica(a)
        .and_then(|replica| replica.store().list_damaged().ok())
        .unwrap_or_default();
    if still.len() != damaged.len() {
        return Err(violation(
            "damaged_recordings_listed",
            format!(
                "{} damaged before pairing, {} after",
                damaged.len(),
                still.len()
            ),
        ));
    }
    Ok(Outcome {
        notes: vec![format!(
            "{} damaged recording(s) kept and shown, {} bad chunks",
            damaged.len(),
            report.bad_chunks.len()
        )],
    })
}

/// Power lost between two disk operations of whatever the store does (receiving, publishing,
/// importing), then again inside recovery: nothing completed is lost, nothing unverified is
/// listed, and the pair converges.
pub(crate) fn power_lost_inside_operations_and_recovery(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    let count = world.rng.between(2, 6);
    add_sessions(world, a, count);
    establish(world, a, b)?;
    settle(world, a, b)?;
    let mut strikes = 0;
    for _ in 0..world.rng.between(2, 5) {
        let more = world.rng.between(2, 6);
        add_sessions(world, a, more);
        let victim = if world.rng.chance(1, 2) { a } else { b };
        world.command(b, Command::SyncNow);
        let operations = world.rng.between(0, 400);
        let tear = world.rng.chance(1, 2);
        world.arm_power_loss(victim, operations, tear);
        let wait = world.rng.between(10_000, 2 * MINUTE_MS);
        run(world, wait)?;
        world.appliances[victim].disk.disarm_crash();
        if world.rng.chance(1, 2) {
            let operations = world.rng.between(0, 60);
            world.crash_inside_recovery(victim, operations, tear);
        }
        strikes += world.appliances[victim]
            .disk
            .stats()
            .crashes_inside_operations;
        checks::nothing_unverified_visible(world)?;
    }
    world.stop_faults();
    settle(world, a, b)?;
    final_checks(world, a, b)?;
    checks::nothing_corrupt_served(world)?;
    Ok(Outcome {
        notes: vec![format!("{strikes} power losses inside operations")],
    })
}
