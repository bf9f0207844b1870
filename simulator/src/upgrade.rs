//! Software upgrades and hardware migrations in the world.
//!
//! An upgrade installs new software on a stopped appliance, as `dyad update install` does: the
//! install journal is written first, the store is migrated with the engine's own step
//! ([`Store::migrate_if_older`], which runs [`Store::migrate_to`] on the appliance's
//! `SimDisk`), then the new versions are recorded, then the journal is removed. A crash at any
//! point leaves the journal ([`InstallJournal`], a world field); the next start
//! ([`World::start`]) decides with the engine's own rule
//! ([`dyad_core::install::recovery_decision`]) whether to complete or roll back. What is modelled rather
//! than run: the package itself (its signature and payload are tested in the engine) and the
//! data folder's files: the journal and `appliance.json` are world fields (each written
//! atomically by the real install, so a crash leaves either the old or the new one). The
//! install takes [`INSTALL_BASE_MS`] plus the data stored at [`INSTALL_RATE_BYTES_PER_MS`].
//!
//! A hardware migration takes the store part of a settings backup with the engine's own read
//! ([`StoreSettings::read_from`]), passes it through the backup file's document encoding, then
//! discards the old appliance's disk and restores onto a fresh `SimDisk` with the engine's
//! restore step ([`StoreSettings::restore_into`]); the new hardware keeps the name, address,
//! certificate and key, as the restored identity does, and takes a new node id that names the
//! old one as its predecessor, as `dyad backup restore` does.
//!
//! These are operator procedures carried out on the world: this module builds on
//! `crate::world` (and the clock of the hardware it brings in), and the world never calls it.

use std::sync::Arc;

use dyad_core::replica::ReplicaState;
use dyad_store::disk::sim::{Ratio, SimDisk, SimFaults};
use dyad_store::settings_backup::{StoreDocument, StoreSettings};
use dyad_store::Store;
use dyad_wire::{NodeId, Role, SessionId, SoftwareVersion};

use crate::clock::SimClock;
use crate::coverage::CoverageEvent;
use crate::violation::Violation;
use crate::world::{Appliance, InstallJournal, World};

/// The fixed part of an install: unpacking, the appliance's own services restarting.
pub const INSTALL_BASE_MS: u64 = 5 * 60_000;
/// How fast the install works through the data stored (the appliance's own migration of its
/// databases and recordings): 256 KiB/s, slow enough that the simulator's few MiB to tens of
/// MiB show as minutes, as an appliance's gigabytes do in the field.
pub const INSTALL_RATE_BYTES_PER_MS: u64 = 256;

/// Where a crash cuts an install short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallCrash {
    /// No crash.
    Never,
    /// After the journal, before the migration.
    AfterJournal,
    /// During the migration: writes and syncs fail at random, then the power goes.
    DuringMigration,
    /// After the migration, before the new versions are recorded.
    AfterMigration,
    /// After the new versions are recorded, before the journal is removed.
    AfterSettings,
}

impl InstallCrash {
    pub const ALL: [InstallCrash; 5] = [
        InstallCrash::Never,
        InstallCrash::AfterJournal,
        InstallCrash::DuringMigration,
        InstallCrash::AfterMigration,
        InstallCrash::AfterSettings,
    ];
}

/// What one install did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstallRun {
    /// The modelled duration, from the data stored.
    pub duration_ms: u64,
    pub stored_bytes: u64,
    /// Whether it ran to the end (false: a crash cut it short; recovery runs at the next start).
    pub finished: bool,
}

fn violation(property: &'static str, details: String) -> Violation {
    Violation { property, details }
}

/// The modelled duration of an install on an appliance holding `stored_bytes`.
pub fn install_duration_ms(stored_bytes: u64) -> u64 {
    INSTALL_BASE_MS + stored_bytes / INSTALL_RATE_BYTES_PER_MS
}

impl World {
    /// Installs `to` (needing store format `to_store_format`) on stopped appliance `index`,
    /// taking the modelled time; `crash` may cut it short. Refused, like the real install,
    /// while the appliance is in a relationship or running.
    pub fn install(
        &mut self,
        index: usize,
        to: SoftwareVersion,
        to_store_format: u64,
        crash: InstallCrash,
    ) -> Result<InstallRun, Violation> {
        if self.appliances[index].is_up() {
            return Err(violation(
                "install_refused",
                "installs run with the appliance stopped".into(),
            ));
        }
        let store = self.open_stopped_store(index)?;
        let state = store
            .local_get(dyad_store::local_keys::REPLICA_STATE_KEY)
            .ok()
            .flatten()
            .and_then(|bytes| ReplicaState::from_json(&bytes).ok());
        if state.is_some_and(|state| state.role != Role::Standalone) {
            return Err(violation(
                "install_refused",
                format!(
                    "{} is in a relationship: break it first",
                    self.appliances[index].name
                ),
            ));
        }
        let from_store_format = store
            .format_version()
            .map_err(|error| violation("install_atomic", format!("reading the format: {error}")))?;
        let stored_bytes = self.appliances[index].disk.used_bytes();
        let duration_ms = install_duration_ms(stored_bytes);
        let journal = InstallJournal {
            from: self.appliances[index].software,
            to,
            from_store_format,
            to_store_format: from_store_format.max(to_store_format),
        };
        self.install_journals.insert(index, journal);
        self.trace_event("install-start", &[index as u64, duration_ms]);
        let crash_now = |world: &mut World, store: Store, point: u64| {
            drop(store);
            let tear = world.rng.chance(1, 2);
            let disk = Arc::clone(&world.appliances[index].disk);
            disk.set_faults(SimFaults::default());
            disk.crash(tear);
            world.trace_event("install-crash", &[index as u64, point]);
        };
        // The payload's own work takes the first half; the store's migration and the
        // appliance's services the second.
        self.run_for(duration_ms / 2)
            .map_err(|error| violation("liveness", format!("{error:?}")))?;
        if crash == InstallCrash::AfterJournal {
            crash_now(self, store, 1);
            return Ok(InstallRun {
                duration_ms,
                stored_bytes,
                finished: false,
            });
        }
        if crash == InstallCrash::DuringMigration {
            let one_in = self.rng.between(1, 4) as u32;
            self.appliances[index].disk.set_faults(SimFaults {
                write_error: Ratio::new(1, one_in),
                sync_error: Ratio::new(1, one_in + 1),
                ..SimFaults::default()
            });
            // Power goes while the migration runs; if the disk's failures stopped it short,
            // the crash really cut a migration in the middle.
            let migrated = store.migrate_if_older(journal.to_store_format);
            if migrated.is_err() {
                self.coverage.note(CoverageEvent::CrashDuringStoreMigration);
            }
            crash_now(self, store, 2);
            return Ok(InstallRun {
                duration_ms,
                stored_bytes,
                finished: false,
            });
        }
        store
            .migrate_if_older(journal.to_store_format)
            .map_err(|error| violation("install_atomic", format!("migration: {error}")))?;
        self.run_for(duration_ms - duration_ms / 2)
            .map_err(|error| violation("liveness", format!("{error:?}")))?;
        if crash == InstallCrash::AfterMigration {
            crash_now(self, store, 3);
            return Ok(InstallRun {
                duration_ms,
                stored_bytes,
                finished: false,
            });
        }
        self.appliances[index].software = to;
        if crash == InstallCrash::AfterSettings {
            crash_now(self, store, 4);
            return Ok(InstallRun {
                duration_ms,
                stored_bytes,
                finished: false,
            });
        }
        drop(store);
        self.install_journals.remove(&index);
        self.trace_event("install-done", &[index as u64]);
        Ok(InstallRun {
            duration_ms,
            stored_bytes,
            finished: true,
        })
    }

    /// The store part of a settings backup of appliance `index`, as the file would carry it.
    pub fn take_settings_backup(&mut self, index: usize) -> Result<StoreSettings, Violation> {
        let Some(replica) = self.replica(index) else {
            return Err(violation("settings_backup", "the appliance is down".into()));
        };
        let settings = StoreSettings::read_from(replica.store())
            .map_err(|why| violation("settings_backup", why))?;
        // Through the file's encoding, as `dyad backup create` and `restore` do.
        let document: StoreDocument = settings.to_document();
        let text = serde_json::to_vec(&document)
            .map_err(|error| violation("settings_backup", format!("encoding: {error}")))?;
        let document: StoreDocument = serde_json::from_slice(&text)
            .map_err(|error| violation("settings_backup", format!("decoding: {error}")))?;
        let settings = StoreSettings::from_document(document)
            .map_err(|why| violation("settings_backup", why))?;
        self.trace_event("settings-backup", &[index as u64]);
        Ok(settings)
    }

    /// Appliance `index`'s hardware dies and is thrown away with its disk; new hardware with
    /// its identity (node id, name, address, certificate, key, software) is restored from
    /// `backup` onto a fresh disk and started. Sessions that only the old disk (or its
    /// recorder) held are gone with it: they move to [`World::lost_with_hardware`].
    pub fn replace_hardware(
        &mut self,
        index: usize,
        backup: &StoreSettings,
    ) -> Result<u64, Violation> {
        self.crash(index, false);
        // What exists intact elsewhere survives; what only the old disk held does not (nor
        // what the other copies' media damaged meanwhile).
        let mut elsewhere = std::collections::BTreeSet::<SessionId>::new();
        for other in (0..self.appliances.len()).filter(|other| *other != index) {
            let corrupt: std::collections::BTreeSet<SessionId> = self
                .listed_but_corrupt(other)
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            let listed = self
                .replica(other)
                .and_then(|replica| replica.store().catalog_list().ok())
                .unwrap_or_default();
            elsewhere.extend(
                listed
                    .into_iter()
                    .map(|meta| meta.id)
                    .filter(|id| !corrupt.contains(id)),
            );
        }
        let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.completed_sessions)
            .into_iter()
            .partition(|(id, _)| elsewhere.contains(id));
        self.completed_sessions = kept.into_iter().collect();
        for (id, root) in gone {
            self.completed_sizes.remove(&id);
            self.lost_with_hardware.insert(id, root);
        }
        self.discard_pending_imports(index);
        self.damaged_files.retain(|(owner, _)| *owner != index);
        let floor = self.restore_onto_fresh_disk(index, backup)?;
        self.appliances[index].hardware += 1;
        self.trace_event("hardware-replaced", &[index as u64, floor]);
        self.start(index);
        Ok(floor)
    }

    /// Restores `backup` onto a fresh disk for slot `index` (down), with the engine's restore
    /// step, as `dyad backup restore` builds a new data folder.
    fn restore_onto_fresh_disk(
        &mut self,
        index: usize,
        backup: &StoreSettings,
    ) -> Result<u64, Violation> {
        let disk = SimDisk::sharing_pages(self.rng.next_u64(), Arc::clone(&self.page_pool));
        let store = Store::open(disk.clone())
            .map_err(|error| violation("restore", format!("a fresh store: {error}")))?;
        store.set_clock(self.store_clock(index));
        // New hardware is a new node succeeding the old one, as `dyad backup restore` makes it.
        let mut node = [0u8; 16];
        self.rng.fill(&mut node);
        let old = self.appliances[index].node_id;
        let new = NodeId(node);
        let floor = backup
            .restore_into(&store, old, new)
            .map_err(|error| violation("restore", error.to_string()))?;
        drop(store);
        let appliance = &mut self.appliances[index];
        appliance.node_id = new;
        appliance.predecessors.insert(0, old);
        appliance
            .predecessors
            .truncate(dyad_wire::limits::MAX_PREDECESSORS);
        appliance.disk = disk;
        appliance.store_format_new = dyad_store::FORMAT_VERSION;
        Ok(floor)
    }

    /// The old hardware of slot `index` was not dead, only unreachable: it keeps running at
    /// another address (`-old` added to its name), while new hardware restored from `backup`
    /// takes its name and address in a new slot, which this returns. Nothing is lost with the
    /// old hardware: it still holds its disk.
    pub fn restore_beside(
        &mut self,
        index: usize,
        backup: &StoreSettings,
    ) -> Result<usize, Violation> {
        let old = &self.appliances[index];
        let (name, address) = (old.name.clone(), old.address.clone());
        let copy = Appliance {
            name: name.clone(),
            node_id: old.node_id,
            predecessors: old.predecessors.clone(),
            address: address.clone(),
            disk: Arc::clone(&old.disk),
            node: None,
            psk: old.psk,
            software: old.software,
            certificate_fingerprint: old.certificate_fingerprint,
            clock: SimClock {
                anchor_ms: self.now_ms,
                ..SimClock::default()
            },
            paused_since_ms: None,
            site_hostname: old.site_hostname.clone(),
            config: old.config.clone(),
            incarnation: 0,
            store_format_new: old.store_format_new,
            hardware: old.hardware + 1,
        };
        self.appliances[index].address = format!("{name}-old:7400");
        let new = self.push_appliance(copy);
        let floor = self.restore_onto_fresh_disk(new, backup)?;
        self.trace_event("restored-beside", &[index as u64, new as u64, floor]);
        self.start(new);
        Ok(new)
    }
}
