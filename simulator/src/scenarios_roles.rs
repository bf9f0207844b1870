//! Scenarios of role changes and reconciliation: the asynchronous-upgrade shape (the old
//! backup becomes primary and re-establishes with the old primary as its backup), planned and
//! forced role swaps, split brain, and clients with stale DNS answers.

use std::collections::BTreeMap;

use dyad_core::replica::{Command, ReplicaStore};
use dyad_wire::{Role, SessionId};

use crate::checks;
use crate::harness::{
    add_config, add_sessions, command, establish, final_checks, pair, run, settle, violation,
    Outcome, MINUTE_MS,
};
use crate::violation::Violation;
use crate::world::World;

fn role(world: &World, index: usize) -> Option<Role> {
    world.replica(index).map(|replica| replica.state().role)
}

fn sizes(world: &World, index: usize) -> BTreeMap<SessionId, u64> {
    world
        .replica(index)
        .and_then(|replica| replica.store().catalog_list().ok())
        .map(|list| {
            list.into_iter()
                .map(|meta| (meta.id, meta.size_bytes))
                .collect()
        })
        .unwrap_or_default()
}

fn conflicts(world: &World, index: usize) -> usize {
    world.replica(index).map_or(0, |replica| {
        ReplicaStore::conflicts(replica.store()).map_or(0, |list| list.len())
    })
}

/// The asynchronous upgrade: sync, break, both sides take sessions and configuration writes,
/// the site moves to the old backup, which establishes with the old primary as its backup.
/// Afterwards both hold the union, the configuration is the new primary's, the old primary's
/// differing writes are in its conflict record, and the bytes sent are close to the bytes
/// actually missing.
pub(crate) fn async_upgrade_old_backup_becomes_primary(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    let count = world.rng.between(3, 12);
    add_sessions(world, a, count);
    add_config(world, a, 6, "site");
    establish(world, a, b)?;
    settle(world, a, b)?;
    match command(world, b, Command::Break, 2 * MINUTE_MS)? {
        Ok(_) => {}
        Err(text) => return Err(violation("break", text)),
    }
    // The backup is upgraded while the old primary keeps serving; then the site moves.
    let count = world.rng.between(1, 10);
    add_sessions(world, a, count);
    add_config(world, a, 3, "site");
    run(world, 20 * MINUTE_MS)?;
    let count = world.rng.between(1, 10);
    add_sessions(world, b, count);
    add_config(world, b, 3, "after-upgrade");
    let before_a = sizes(world, a);
    let before_b = sizes(world, b);
    let sent_before: u64 = world.frame_bytes_sent.iter().sum();
    establish(world, b, a)?;
    settle(world, b, a)?;
    final_checks(world, b, a)?;
    if conflicts(world, a) == 0 {
        return Err(violation(
            "config_conflict_recorded",
            "the old primary's differing configuration was replaced without a record".into(),
        ));
    }
    // Bytes on the wire: at most 1.05x the recording bytes missing on each side, plus 64 KiB
    // and 1 KiB per missing session of metadata.
    let missing: Vec<u64> = before_a
        .iter()
        .filter(|(id, _)| !before_b.contains_key(id))
        .chain(before_b.iter().filter(|(id, _)| !before_a.contains_key(id)))
        .map(|(_, size)| *size)
        .collect();
    let missing_bytes: u64 = missing.iter().sum();
    let allowed = missing_bytes + missing_bytes / 20 + 64 * 1024 + 1024 * missing.len() as u64;
    let sent: u64 = world.frame_bytes_sent.iter().sum::<u64>() - sent_before;
    if sent > allowed {
        return Err(violation(
            "catch_up_bytes_close_to_missing",
            format!("{sent} bytes sent to reconcile {missing_bytes} missing bytes in {} sessions (allowed {allowed})", missing.len()),
        ));
    }
    Ok(Outcome {
        notes: vec![format!(
            "reconciled {} sessions ({missing_bytes} bytes) with {sent} bytes on the wire",
            missing.len()
        )],
    })
}

/// A planned swap while the network resets connections: the backup becomes primary after a
/// final sync; nothing completed before the swap is lost; only the new primary takes writes.
pub(crate) fn planned_role_swap_under_faults(world: &mut World) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    establish(world, a, b)?;
    let count = world.rng.between(2, 10);
    add_sessions(world, a, count);
    add_config(world, a, 4, "site");
    world.network.reset_per_mille = world.rng.between(0, 10);
    let mut outcome = Err(String::new());
    for _ in 0..5 {
        outcome = command(world, b, Command::Promote { force: false }, 10 * MINUTE_MS)?;
        if outcome.is_ok() || role(world, b) == Some(Role::Primary) {
            break;
        }
        run(world, 10_000)?;
    }
    world.network.reset_per_mille = 0;
    if role(world, b) != Some(Role::Primary) {
        // Every attempt was cut by the network: settle and promote once more on a calm link.
        run(world, MINUTE_MS)?;
        outcome = command(world, b, Command::Promote { force: false }, 10 * MINUTE_MS)?;
    }
    if role(world, b) != Some(Role::Primary) {
        return Err(violation(
            "planned_swap",
            format!("the backup did not become primary: {outcome:?}"),
        ));
    }
    run(world, MINUTE_MS)?;
    if world.write_config(a, "site/after-swap", Some(b"old")) {
        return Err(violation(
            "one_writer_per_epoch",
            "the old primary accepted a write after the swap".into(),
        ));
    }
    if !world.write_config(b, "site/after-swap", Some(b"new")) {
        return Err(violation(
            "planned_swap",
            "the new primary refused a write".into(),
        ));
    }
    let count = world.rng.between(1, 4);
    add_sessions(world, b, count);
    settle(world, b, a)?;
    final_checks(world, b, a)?;
    Ok(Outcome {
        notes: vec![format!("{outcome:?}")],
    })
}

/// A forced promotion during a partition: both appliances are primary and take writes; when
/// the partition heals the split brain is reported on both sides and nothing is overwritten;
/// the operator demotes the old primary, whose configuration goes to the conflict record, and
/// both end with every session.
pub(crate) fn forced_promotion_split_brain_then_demote(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    establish(world, a, b)?;
    let count = world.rng.between(1, 6);
    add_sessions(world, a, count);
    settle(world, a, b)?;
    world.partition(a, b);
    run(world, 2 * MINUTE_MS)?;
    if let Err(text) = command(world, b, Command::Promote { force: false }, 2 * MINUTE_MS)? {
        if !text.contains("--force") {
            return Err(violation(
                "forced_promotion",
                format!("an unreachable primary should suggest --force: {text}"),
            ));
        }
    }
    match command(world, b, Command::Promote { force: true }, MINUTE_MS)? {
        Ok(_) => {}
        Err(text) => return Err(violation("forced_promotion", text)),
    }
    if !world
        .status(b)
        .is_some_and(|status| status.forced_promotion_unresolved)
    {
        return Err(violation(
            "forced_promotion",
            "status does not warn about the old primary".into(),
        ));
    }
    // Both serve the site for a while: stale DNS answers keep some clients on the old one.
    let count = world.rng.between(1, 5);
    add_sessions(world, a, count);
    let count = world.rng.between(1, 5);
    add_sessions(world, b, count);
    add_config(world, a, 2, "old-primary");
    add_config(world, b, 2, "new-primary");
    run(world, 5 * MINUTE_MS)?;
    world.heal(a, b);
    let detected = world
        .run_until_true(3 * MINUTE_MS, |world| {
            world.status(a).is_some_and(|s| s.disagreement.is_some())
                && world.status(b).is_some_and(|s| s.disagreement.is_some())
        })
        .map_err(|error| violation("liveness", format!("{error:?}")))?;
    if !detected {
        return Err(violation(
            "split_brain_detected",
            "both primaries talked but the split brain was not reported on both".into(),
        ));
    }
    let a_config = world
        .replica(a)
        .and_then(|replica| replica.store().config_get("old-primary/0").ok().flatten());
    run(world, 10 * MINUTE_MS)?;
    // Neither side overwrote the other while the split brain lasted.
    if world
        .replica(a)
        .and_then(|replica| replica.store().config_get("old-primary/0").ok().flatten())
        != a_config
    {
        return Err(violation(
            "split_brain_no_overwrite",
            "the old primary's configuration changed during the split brain".into(),
        ));
    }
    match command(world, a, Command::Demote, 2 * MINUTE_MS)? {
        Ok(_) => {}
        Err(text) => return Err(violation("demote", text)),
    }
    settle(world, b, a)?;
    final_checks(world, b, a)?;
    if conflicts(world, a) == 0 {
        return Err(violation(
            "config_conflict_recorded",
            "the demoted primary's configuration was replaced without a record".into(),
        ));
    }
    if world
        .status(b)
        .is_some_and(|status| status.forced_promotion_unresolved)
    {
        return Err(violation(
            "forced_promotion",
            "the warning stayed after the old primary came back as backup".into(),
        ));
    }
    Ok(Outcome::default())
}

/// After a planned swap, clients with stale DNS answers still complete sessions on the old
/// primary (now the backup); those sessions reach the new primary.
pub(crate) fn stale_dns_sessions_on_old_primary_after_swing(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let (a, b) = pair(world);
    establish(world, a, b)?;
    let count = world.rng.between(1, 5);
    add_sessions(world, a, count);
    match command(world, b, Command::Promote { force: false }, 10 * MINUTE_MS)? {
        Ok(_) => {}
        Err(text) => return Err(violation("planned_swap", text)),
    }
    // Until the TTL expires some clients still reach the old primary.
    let stale = world.rng.between(1, 6);
    add_sessions(world, a, stale);
    let count = world.rng.between(1, 4);
    add_sessions(world, b, count);
    let interval = world.appliances[a].config.sync_interval_ms;
    let arrived = world
        .run_until_true(2 * interval + 5 * MINUTE_MS, |world| {
            checks::no_session_lost(world, &[a, b]).is_ok()
        })
        .map_err(|error| violation("liveness", format!("{error:?}")))?;
    if !arrived {
        return Err(violation(
            "no_session_lost",
            "sessions completed on the old primary after the swing did not reach the new primary"
                .into(),
        ));
    }
    settle(world, b, a)?;
    final_checks(world, b, a)?;
    Ok(Outcome {
        notes: vec![format!(
            "{stale} sessions completed on the old primary after the swing"
        )],
    })
}
