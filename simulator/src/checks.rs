//! The properties every run must keep, checked against the world's final (or current) state.
//!
//! The checkers observe the world from outside it: they depend on `crate::world`, and the
//! world never calls them. What the world itself finds broken on the way it records as
//! [`Violation`] values (`crate::violation`), which [`found_on_the_way`] reports here.
//! Each check returns a [`Violation`] naming the property; the runner adds the seed, the
//! scenario and the step, and the one command that replays the run.

use std::collections::BTreeMap;

use dyad_core::clients::{max_concurrent_from_config, MAX_CONCURRENT_UPGRADES_KEY};
use dyad_core::replica::ReplicaStore;
use dyad_store::Store;
use dyad_wire::{Role, SessionId};

use crate::violation::Violation;
use crate::world::World;

fn catalog_of(store: &Store) -> BTreeMap<SessionId, [u8; 32]> {
    match store.catalog_list() {
        Ok(list) => list.into_iter().map(|meta| (meta.id, meta.root)).collect(),
        Err(_) => BTreeMap::new(),
    }
}

/// Property 1: both appliances hold every session completed anywhere, with the same content.
pub fn no_session_lost(world: &World, appliances: &[usize]) -> Result<(), Violation> {
    for &index in appliances {
        let Some(replica) = world.replica(index) else {
            return Err(Violation::new(
                "no_session_lost",
                format!("appliance {index} is down at the end"),
            ));
        };
        let held = catalog_of(replica.store());
        for (id, root) in &world.completed_sessions {
            match held.get(id) {
                None => {
                    return Err(Violation::new(
                        "no_session_lost",
                        format!(
                            "{} lacks session {}#{}",
                            world.appliances[index].name, id.origin, id.sequence
                        ),
                    ))
                }
                Some(held_root) if held_root != root => {
                    return Err(Violation::new(
                        "no_session_lost",
                        format!(
                            "{} holds session {}#{} with other content",
                            world.appliances[index].name, id.origin, id.sequence
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// Property 2: the backup's configuration equals the primary's.
pub fn config_follows_primary(
    world: &World,
    primary: usize,
    backup: usize,
) -> Result<(), Violation> {
    let (Some(p), Some(b)) = (world.replica(primary), world.replica(backup)) else {
        return Err(Violation::new(
            "config_follows_primary",
            "an appliance is down at the end".into(),
        ));
    };
    let entries = |store: &Store| {
        ReplicaStore::config_snapshot(store)
            .map(|(_, entries)| entries)
            .unwrap_or_default()
    };
    let (primary_entries, backup_entries) = (entries(p.store()), entries(b.store()));
    let strip = |entries: Vec<dyad_wire::ConfigEntry>| -> Vec<(String, Option<Vec<u8>>)> {
        entries
            .into_iter()
            .map(|entry| (entry.key, entry.value))
            .collect()
    };
    if strip(primary_entries) != strip(backup_entries) {
        return Err(Violation::new(
            "config_follows_primary",
            "the backup's configuration differs from the primary's after a successful sync".into(),
        ));
    }
    Ok(())
}

/// Nothing is dropped silently: every value appliance `index` held in `before` that its
/// configuration no longer holds is kept, as this appliance's side, in one of its conflict
/// records.
pub fn replaced_values_recorded(
    world: &World,
    index: usize,
    before: &[(String, Vec<u8>)],
) -> Result<(), Violation> {
    let Some(replica) = world.replica(index) else {
        return Err(Violation::new(
            "replaced_values_recorded",
            format!("{} is down", world.appliances[index].name),
        ));
    };
    let store = replica.store();
    let now: BTreeMap<String, Vec<u8>> = store
        .config_list("")
        .map_err(|error| Violation::new("replaced_values_recorded", error.to_string()))?
        .into_iter()
        .collect();
    let conflicts = store
        .conflicts_list()
        .map_err(|error| Violation::new("replaced_values_recorded", error.to_string()))?;
    for (key, value) in before {
        if now.get(key) == Some(value) {
            continue;
        }
        let kept = conflicts.iter().any(|(_, record)| {
            record
                .entries
                .iter()
                .any(|entry| entry.key == *key && entry.local.as_ref() == Some(value))
        });
        if !kept {
            return Err(Violation::new(
                "replaced_values_recorded",
                format!(
                    "{} held {key:?} = {:?}, now {:?}, and no conflict record keeps it ({} records)",
                    world.appliances[index].name,
                    String::from_utf8_lossy(value),
                    now.get(key).map(|value| String::from_utf8_lossy(value).into_owned()),
                    conflicts.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Property 3: at most one physical appliance accepted configuration writes in any epoch (old
/// and new hardware after a restore are two).
pub fn one_writer_per_epoch(world: &World) -> Result<(), Violation> {
    for (epoch, writers) in &world.writers_by_epoch {
        if writers.len() > 1 {
            return Err(Violation::new(
                "one_writer_per_epoch",
                format!("epoch {epoch} had writers {writers:?}"),
            ));
        }
    }
    Ok(())
}

/// Property 4 on one appliance: every recording it lists is complete and verified, judged by
/// hashing its file straight off the simulated disk (not by the store's own reads). A file the
/// world damaged at rest (a bit flip on the medium) is the disk's doing, not the store's,
/// unless `strict`: once faults stopped and the damage was found and re-fetched, nothing may
/// be left. The finding is the world's ([`World::unverified_listed`]), which it also records at
/// each start.
pub fn nothing_unverified_on(world: &World, index: usize, strict: bool) -> Result<(), Violation> {
    match world.unverified_listed(index, strict) {
        Some(violation) => Err(violation),
        None => Ok(()),
    }
}

/// Property 4 on every appliance that is up.
pub fn nothing_unverified_visible(world: &World) -> Result<(), Violation> {
    for index in 0..world.appliances.len() {
        nothing_unverified_on(world, index, false)?;
    }
    Ok(())
}

/// Property 4, strict: after faults stopped and every listed recording was read (damage found
/// and re-fetched), every listed recording is intact, and every read serves verified bytes.
pub fn nothing_corrupt_served(world: &World) -> Result<(), Violation> {
    for (index, appliance) in world.appliances.iter().enumerate() {
        nothing_unverified_on(world, index, true)?;
        let Some(replica) = appliance.replica() else {
            continue;
        };
        let store = replica.store();
        let Ok(list) = store.catalog_list() else {
            continue;
        };
        for meta in list {
            let Ok(Some(header)) = ReplicaStore::session_header(store, meta.id) else {
                return Err(Violation::new(
                    "nothing_unverified_visible",
                    format!(
                        "{} lists {}#{} but cannot describe it",
                        appliance.name, meta.id.origin, meta.id.sequence
                    ),
                ));
            };
            let mut hasher = blake3::Hasher::new();
            for chunk_index in 0..header.chunk_chaining_values.len() as u32 {
                match ReplicaStore::read_chunk(store, meta.id, chunk_index) {
                    Ok(bytes) => {
                        hasher.update(&bytes);
                    }
                    Err(refusal) => {
                        return Err(Violation::new(
                            "nothing_unverified_visible",
                            format!(
                            "{} lists {}#{} but refuses to serve chunk {chunk_index}: {refusal:?}",
                            appliance.name, meta.id.origin, meta.id.sequence
                        ),
                        ))
                    }
                }
            }
            if *hasher.finalize().as_bytes() != meta.root {
                return Err(Violation::new(
                    "nothing_unverified_visible",
                    format!(
                        "{} served session {}#{} with bytes that do not hash to its root",
                        appliance.name, meta.id.origin, meta.id.sequence
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Violations the world found on the way (property 2 at each sync, property 4 at each start).
pub fn found_on_the_way(world: &World) -> Result<(), Violation> {
    match world.violations.first() {
        Some(violation) => Err(violation.clone()),
        None => Ok(()),
    }
}

/// The roles after a scenario that should end in a relationship.
pub fn paired(world: &World, primary: usize, backup: usize) -> Result<(), Violation> {
    let role = |index: usize| world.replica(index).map(|replica| replica.state().role);
    if role(primary) != Some(Role::Primary) || role(backup) != Some(Role::Backup) {
        return Err(Violation::new(
            "paired",
            format!(
                "expected primary/backup, found {:?}/{:?}",
                role(primary),
                role(backup)
            ),
        ));
    }
    Ok(())
}

/// Whether the pair holds the union of all sessions, byte-identical, and the backup's
/// configuration is the primary's: the state property 5 says must be reached.
pub fn converged(world: &World, primary: usize, backup: usize) -> bool {
    let up = |index: usize| world.appliances[index].is_up() && !world.appliances[index].is_paused();
    if !up(primary) || !up(backup) || world.pending_imports() != 0 {
        return false;
    }
    paired(world, primary, backup).is_ok()
        && no_session_lost(world, &[primary, backup]).is_ok()
        && config_follows_primary(world, primary, backup).is_ok()
}

/// Deployed clients not yet running the site's application version.
pub fn clients_outdated(world: &World) -> usize {
    world
        .clients
        .outdated(world.appliances[world.site_target].software.app)
}

/// How long, once the pair runs one version and faults stopped, every deployed client may take
/// to update ([`crate::clients::ClientPopulation::update_bound_ms`]), with the limit of
/// concurrent updates the site's configuration sets now.
pub fn clients_update_bound_ms(world: &World) -> u64 {
    let limit = world
        .replica(world.site_target)
        .and_then(|replica| {
            ReplicaStore::config_snapshot(replica.store())
                .ok()
                .and_then(|(_, entries)| {
                    entries
                        .into_iter()
                        .find(|entry| entry.key == MAX_CONCURRENT_UPGRADES_KEY)
                        .and_then(|entry| entry.value)
                })
        })
        .and_then(|value| max_concurrent_from_config(Some(&value)).ok())
        .unwrap_or(dyad_core::clients::MAX_CONCURRENT_UPGRADES_DEFAULT)
        .max(1) as u64;
    world.clients.update_bound_ms(limit)
}

/// Property: every deployed client updates within the bound once the pair is settled. A
/// liveness property: the world runs on (nothing else is done to it) until the clients are
/// updated or the bound passed.
pub fn clients_updated_in_time(world: &mut World) -> Result<(), Violation> {
    if world.clients.clients.is_empty() {
        return Ok(());
    }
    let bound_ms = clients_update_bound_ms(world);
    let started = world.now_ms;
    let done = world
        .run_until_true(bound_ms, |world| clients_outdated(world) == 0)
        .map_err(|error| Violation::new("liveness", format!("{error:?}")))?;
    if !done {
        return Err(Violation::new(
            "clients_updated_in_time",
            format!(
                "{} of {} clients still run an old version {} s after the pair settled (bound {} s)",
                clients_outdated(world),
                world.clients.clients.len(),
                (world.now_ms - started) / 1000,
                bound_ms / 1000
            ),
        ));
    }
    Ok(())
}
