//! The properties every run must keep, checked against the world's final (or current) state.
//!
//! Each check returns a [`Violation`] naming the property; the runner adds the seed, the
//! scenario and the step, and the one command that replays the run.

use std::collections::BTreeMap;

use dyad_core::replica::ReplicaStore;
use dyad_store::Store;
use dyad_wire::{Role, SessionId};

use crate::world::World;

/// A broken property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub property: &'static str,
    pub details: String,
}

impl Violation {
    pub fn new(property: &'static str, details: String) -> Violation {
        Violation { property, details }
    }
}

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
/// be left.
pub fn nothing_unverified_on(world: &World, index: usize, strict: bool) -> Result<(), Violation> {
    for (id, name) in world.listed_but_corrupt(index) {
        if !strict && world.damaged_files.contains(&(index, name.clone())) {
            continue;
        }
        return Err(Violation::new(
            "nothing_unverified_visible",
            format!(
                "{} lists session {}#{} as complete but its file {name} does not hash to its root{}",
                world.appliances[index].name,
                id.origin,
                id.sequence,
                if strict { "" } else { " (and the world never damaged it)" }
            ),
        ));
    }
    Ok(())
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
