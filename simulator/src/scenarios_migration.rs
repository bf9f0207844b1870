//! Hardware migration scenarios: a settings backup of one appliance, its hardware dies, new
//! hardware restored from the backup takes its place (same identity, fresh disk), rejoins, and
//! the recordings arrive by sync, while the site's sessions continue and the network and
//! machines fail on the way. Nothing completed may be lost (except what only the discarded
//! disk held), and no session id may be given twice (`no_session_id_reused`, checked at every
//! import).

use dyad_core::replica::Command;
use dyad_wire::Role;

use crate::checks;
use crate::harness::{
    add_config, add_sessions, command, establish, final_checks, pair, run, settle, violation,
    Outcome, MINUTE_MS,
};
use crate::violation::Violation;
use crate::world::{Swing, World};

/// Clients at the site address for the next `horizon_ms`.
fn schedule_clients(world: &mut World, horizon_ms: u64) {
    let count = world.rng.between(10, 30);
    for _ in 0..count {
        let at = world.now_ms + world.rng.below(horizon_ms);
        let size = match world.rng.below(10) {
            0 => 0,
            1..=7 => world.rng.between(1, 200 * 1024),
            _ => world.rng.between(1024 * 1024, 2 * 1024 * 1024),
        };
        let length = world.rng.between(MINUTE_MS / 2, 6 * MINUTE_MS);
        world.schedule_client(at, size, length);
    }
}

fn faults_on(world: &mut World) {
    world.network.reset_per_mille = world.rng.between(0, 10);
    world.network.delay_spike_per_mille = world.rng.between(0, 30);
}

fn role(world: &World, index: usize) -> Option<Role> {
    world.replica(index).map(|replica| replica.state().role)
}

/// Own sessions of `index` that `peer` holds.
fn held_by(world: &World, index: usize, peer: usize) -> usize {
    let origin = world.appliances[index].node_id;
    world
        .replica(peer)
        .and_then(|replica| replica.store().catalog_list().ok())
        .map_or(0, |list| {
            list.iter().filter(|meta| meta.id.origin == origin).count()
        })
}

/// A crash of `index` (power loss) at a random moment of the next `within_ms`, back after a
/// short while.
fn maybe_crash(world: &mut World, index: usize, within_ms: u64) -> Result<bool, Violation> {
    if !world.rng.chance(1, 2) {
        return Ok(false);
    }
    let lead = world.rng.below(within_ms);
    run(world, lead)?;
    let tear = world.rng.chance(1, 2);
    world.crash(index, tear);
    let down = world.rng.between(5_000, 2 * MINUTE_MS);
    run(world, down)?;
    world.start(index);
    Ok(true)
}

/// Moves `moved` (in a relationship with `peer`) to new hardware, the backup procedure of the
/// operator guide (section 9): a settings backup, the old hardware keeps working a while (its
/// own sessions reach the peer by sync, or die with it), it is switched off, the new one is
/// restored and started, takes sessions at once, and Sync Now brings the recordings.
pub(crate) fn migrate(
    world: &mut World,
    moved: usize,
    peer: usize,
) -> Result<Vec<String>, Violation> {
    let mut notes = Vec::new();
    // Clients addressing this appliance directly (stale answers, integrations) make sessions
    // of its own origin, before and after the backup.
    let before = world.rng.between(0, 3);
    add_sessions(world, moved, before);
    let backup = world.take_settings_backup(moved)?;
    let after = world.rng.between(1, 4);
    add_sessions(world, moved, after);
    if maybe_crash(world, moved, 2 * MINUTE_MS)? {
        notes.push("the old hardware crashed after its backup".into());
    }
    // A sync carries what the old hardware completed after its backup to the peer (retried
    // through the network's resets, as an operator would until it succeeds).
    let origin_sessions = world
        .completed_sessions
        .keys()
        .filter(|id| id.origin == world.appliances[moved].node_id)
        .count();
    for _ in 0..5 {
        let _ = command(world, moved, Command::SyncNow, 10 * MINUTE_MS)?;
        if held_by(world, moved, peer) >= origin_sessions {
            break;
        }
        run(world, 30_000)?;
    }
    // Sometimes one more session that never reaches the peer: it goes with the old disk.
    if world.rng.chance(1, 3) {
        add_sessions(world, moved, 1);
    }
    let offline = world.rng.between(MINUTE_MS, 10 * MINUTE_MS);
    let tear = world.rng.chance(1, 2);
    world.crash(moved, tear);
    run(world, offline)?;
    let floor = world.replace_hardware(moved, &backup)?;
    notes.push(format!(
        "restored with session floor {floor}; {} sessions went with the old disk",
        world.lost_with_hardware.len()
    ));
    // The new hardware serves at once, before any sync told it anything.
    let fresh = world.rng.between(1, 4);
    add_sessions(world, moved, fresh);
    if maybe_crash(world, moved, 5 * MINUTE_MS)? {
        notes.push("the new hardware crashed before it caught up".into());
    }
    let _ = command(world, moved, Command::SyncNow, 10 * MINUTE_MS)?;
    Ok(notes)
}

pub(crate) fn hardware_migration_of_backup_sessions_continue_no_id_reused(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    world.site_target = a;
    let count = world.rng.between(3, 10);
    add_sessions(world, a, count);
    add_config(world, a, 5, "site");
    establish(world, a, b)?;
    settle(world, a, b)?;
    schedule_clients(world, 60 * MINUTE_MS);
    faults_on(world);
    let lead = world.rng.between(5 * MINUTE_MS, 15 * MINUTE_MS);
    run(world, lead)?;
    let notes = migrate(world, b, a)?;
    add_config(world, a, 3, "after-move");
    run(world, 60 * MINUTE_MS)?;
    settle(world, a, b)?;
    final_checks(world, a, b)?;
    Ok(Outcome { notes })
}

/// Promote `to` (planned: a final sync, then the swap), retried through the network's resets.
pub(crate) fn planned_swap(world: &mut World, to: usize) -> Result<(), Violation> {
    let mut last = Ok(String::new());
    for _ in 0..6 {
        last = command(world, to, Command::Promote { force: false }, 10 * MINUTE_MS)?;
        if role(world, to) == Some(Role::Primary) {
            return Ok(());
        }
        run(world, 20_000)?;
    }
    Err(violation(
        "planned_swap",
        format!("the backup did not become primary: {last:?}"),
    ))
}

/// Moving the primary, each way the operator guide allows (chosen by the seed): swap roles,
/// move it as the backup, swap back; or switch it off with the site down and bring the new
/// hardware up as the primary; or break, move it standalone, re-establish.
pub(crate) fn hardware_migration_of_primary_sessions_continue_no_id_reused(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    world.site_target = a;
    let count = world.rng.between(3, 10);
    add_sessions(world, a, count);
    add_config(world, a, 5, "site");
    establish(world, a, b)?;
    settle(world, a, b)?;
    schedule_clients(world, 60 * MINUTE_MS);
    faults_on(world);
    let lead = world.rng.between(5 * MINUTE_MS, 15 * MINUTE_MS);
    run(world, lead)?;
    let way = world.rng.below(3);
    let mut notes = match way {
        0 => {
            planned_swap(world, b)?;
            world.swing_site(b, Swing::SharedIp);
            let notes = migrate(world, a, b)?;
            run(world, 2 * MINUTE_MS)?;
            planned_swap(world, a)?;
            world.swing_site(a, Swing::SharedIp);
            notes
        }
        1 => {
            // The site stays on the primary: it is down from the switch-off until the new
            // hardware is up, and comes back as the primary with the same identity.
            migrate(world, a, b)?
        }
        _ => {
            for index in [a, b] {
                if role(world, index) != Some(Role::Standalone) {
                    let _ = command(world, index, Command::Break, 2 * MINUTE_MS)?;
                }
            }
            run(world, 30_000)?;
            if role(world, a) != Some(Role::Standalone) || role(world, b) != Some(Role::Standalone)
            {
                return Err(violation("break", "the break did not take".into()));
            }
            let notes = migrate(world, a, b)?;
            let mut established = establish(world, a, b);
            for _ in 0..4 {
                if established.is_ok() || checks::paired(world, a, b).is_ok() {
                    break;
                }
                for index in [a, b] {
                    if role(world, index) != Some(Role::Standalone) {
                        let _ = command(world, index, Command::Break, 2 * MINUTE_MS)?;
                    }
                }
                run(world, 10_000)?;
                established = establish(world, a, b);
            }
            notes
        }
    };
    notes.insert(
        0,
        [
            "swap, move, swap back",
            "switched off, restored as primary",
            "break, move, re-establish",
        ][way as usize]
            .to_string(),
    );
    add_config(world, a, 3, "after-move");
    run(world, 60 * MINUTE_MS)?;
    settle(world, a, b)?;
    final_checks(world, a, b)?;
    notes.push(format!(
        "site downtime {:.1} s, {} clients refused",
        world.site_downtime_ms as f64 / 1000.0,
        world.sessions_refused
    ));
    Ok(Outcome { notes })
}

/// The appliance's site configuration, sorted by key.
fn config_of(world: &World, index: usize) -> Vec<(String, Vec<u8>)> {
    world
        .replica(index)
        .and_then(|replica| replica.store().config_list("").ok())
        .unwrap_or_default()
}

/// Sync Now on `backup`, retried through resets, until its configuration equals `primary`'s.
fn sync_config_to(world: &mut World, primary: usize, backup: usize) -> Result<(), Violation> {
    let mut last = Ok(String::new());
    for _ in 0..6 {
        last = command(world, backup, Command::SyncNow, 10 * MINUTE_MS)?;
        if config_of(world, backup) == config_of(world, primary) {
            return Ok(());
        }
        run(world, 20_000)?;
    }
    Err(violation(
        "config_follows_primary",
        format!("the backup's configuration did not follow after six syncs: {last:?}"),
    ))
}

/// Writes that must be accepted (the appliance is primary or standalone and up).
fn write_accepted(
    world: &mut World,
    index: usize,
    writes: &[(&str, &str)],
) -> Result<(), Violation> {
    for (key, value) in writes {
        if !world.write_config(index, key, Some(value.as_bytes())) {
            return Err(violation(
                "config_write",
                format!(
                    "{} refused the write of {key:?}",
                    world.appliances[index].name
                ),
            ));
        }
    }
    Ok(())
}

/// The issue-15 story: a settings backup of the primary at `#3`; it writes `x` and `y` after
/// the backup and the backup follows; it dies; new hardware restored from the backup writes
/// `x`, `y` and `z`. The old and new hardware must never stamp writes alike, and the backup
/// must end with the new primary's configuration, keeping every value it replaced in a
/// conflict record.
pub(crate) fn restored_primary_writes_config_backup_follows_or_records_conflict(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    world.site_target = a;
    let count = world.rng.between(1, 5);
    add_sessions(world, a, count);
    add_config(world, a, 3, "site");
    establish(world, a, b)?;
    settle(world, a, b)?;
    let backup = world.take_settings_backup(a)?;
    write_accepted(world, a, &[("x", "old-x"), ("y", "old-y")])?;
    if world.rng.chance(1, 2) {
        let extra = world.rng.between(1, 4);
        add_config(world, a, extra, "after-backup");
    }
    sync_config_to(world, a, b)?;
    let held_by_backup = config_of(world, b);
    faults_on(world);
    let offline = world.rng.between(MINUTE_MS, 10 * MINUTE_MS);
    let tear = world.rng.chance(1, 2);
    world.crash(a, tear);
    run(world, offline)?;
    world.replace_hardware(a, &backup)?;
    write_accepted(world, a, &[("x", "new-x"), ("y", "new-y"), ("z", "new-z")])?;
    let fresh = world.rng.between(0, 3);
    add_sessions(world, a, fresh);
    let mut notes = Vec::new();
    if maybe_crash(world, b, 3 * MINUTE_MS)? {
        notes.push("the backup crashed after the restore".into());
    }
    let _ = command(world, b, Command::SyncNow, 10 * MINUTE_MS)?;
    settle(world, a, b)?;
    final_checks(world, a, b)?;
    checks::replaced_values_recorded(world, b, &held_by_backup)?;
    Ok(Outcome { notes })
}

/// The old primary was not dead, only unreachable, and went on accepting writes; a settings
/// backup of it was restored onto new hardware meanwhile. When the old hardware is reachable
/// again, the backup (following the new hardware) refuses it, its status names the successor,
/// and nothing it wrote reaches the pair.
pub(crate) fn old_hardware_returns_after_restore_is_refused_not_merged(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    world.site_target = a;
    add_config(world, a, 3, "site");
    establish(world, a, b)?;
    settle(world, a, b)?;
    let backup = world.take_settings_backup(a)?;
    write_accepted(world, a, &[("x", "old-x")])?;
    sync_config_to(world, a, b)?;
    // The old hardware drops off the network; it still runs and accepts writes.
    world.partition(a, b);
    let away = world.rng.between(MINUTE_MS, 5 * MINUTE_MS);
    run(world, away)?;
    write_accepted(world, a, &[("x", "stray-x"), ("stray", "stray")])?;
    let a2 = world.restore_beside(a, &backup)?;
    world.partition(a, a2);
    world.site_target = a2;
    write_accepted(world, a2, &[("x", "new-x"), ("z", "new-z")])?;
    sync_config_to(world, a2, b)?;
    // The old hardware is reachable again (at another address) and dials its old peer.
    world.heal(a, b);
    faults_on(world);
    let back = world.rng.between(5 * MINUTE_MS, 15 * MINUTE_MS);
    run(world, back)?;
    settle(world, a2, b)?;
    final_checks(world, a2, b)?;
    let stray = config_of(world, b)
        .into_iter()
        .find(|(key, value)| key == "stray" || value.as_slice() == b"stray-x");
    if let Some((key, _)) = stray {
        return Err(violation(
            "old_hardware_refused",
            format!("the backup took {key:?} from the old hardware"),
        ));
    }
    let successor = world.appliances[a2].node_id.to_string();
    let told = world
        .status(a)
        .and_then(|status| status.link_problem)
        .unwrap_or_default();
    if !told.contains(&successor) {
        return Err(violation(
            "old_hardware_refused",
            format!("the old hardware's status does not name its successor {successor}: {told:?}"),
        ));
    }
    Ok(Outcome { notes: Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15: the world once keyed writers by slot, so old and new hardware in one slot
    /// counted as one writer and a restore that wrote in the old hardware's epoch passed. Writes
    /// by two hardware generations of one slot in one epoch must be a violation.
    #[test]
    fn old_and_new_hardware_of_one_slot_are_two_writers() {
        let mut world = World::new(7);
        let (a, _) = pair(&mut world);
        assert!(world.write_config(a, "x", Some(b"old-x")));
        checks::one_writer_per_epoch(&world).expect("one writer so far");
        let epoch = world.replica(a).expect("up").state().epoch;
        // The same epoch written by the next machine in the slot (what the engine let a restore
        // do before restores took new node ids).
        world.appliances[a].hardware += 1;
        let hardware = world.hardware(a);
        world
            .writers_by_epoch
            .entry(epoch)
            .or_default()
            .insert(hardware);
        let violation = checks::one_writer_per_epoch(&world).expect_err("two writers");
        assert_eq!(violation.property, "one_writer_per_epoch");
    }

    /// And the engine now makes that impossible: after a restore, the slot's writes carry a
    /// new epoch of the new node id, and no stamp is ever given twice.
    #[test]
    fn a_restored_writer_never_reuses_the_old_hardwares_stamps() {
        for seed in 0..5 {
            let mut world = World::new(seed);
            let (a, _) = pair(&mut world);
            add_config(&mut world, a, 3, "site");
            let backup = world.take_settings_backup(a).expect("backup");
            assert!(world.write_config(a, "x", Some(b"old-x")));
            world.replace_hardware(a, &backup).expect("restore");
            assert!(world.write_config(a, "x", Some(b"new-x")));
            assert!(
                world.violations.is_empty(),
                "seed {seed}: {:?}",
                world.violations
            );
            checks::one_writer_per_epoch(&world).expect("one writer per epoch");
            let epoch = world.replica(a).expect("up").state().epoch;
            assert_eq!(epoch.node, world.appliances[a].node_id, "seed {seed}");
        }
    }
}
