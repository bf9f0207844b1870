//! Hardware migration scenarios: a settings backup of one appliance, its hardware dies, new
//! hardware restored from the backup takes its place (same identity, fresh disk), rejoins, and
//! the recordings arrive by sync, while the site's sessions continue and the network and
//! machines fail on the way. Nothing completed may be lost (except what only the discarded
//! disk held), and no session id may be given twice (`no_session_id_reused`, checked at every
//! import).

use dyad_engine::replica::Command;
use dyad_wire::Role;

use crate::checks::{self, Violation};
use crate::scenarios::{
    add_config, add_sessions, establish, final_checks, pair, run, settle, violation, Outcome,
    MINUTE_MS,
};
use crate::scenarios_roles::command;
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
