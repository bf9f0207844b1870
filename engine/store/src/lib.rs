//! The appliance's persistent state: settings, site configuration, session catalog and
//! recordings, crash-safe on any [`Disk`].
//!
//! One [`Store`] holds all of it in one data folder: a redb database (`meta.redb`) for
//! everything small and transactional, and one plain file per recording. Opening the store
//! checks the format version and repairs whatever a crash left half done (see
//! `docs/storage.md` for the layout and the crash-safety argument). Any failed write or sync
//! makes the store refuse all further work with that error: after an I/O failure nobody knows
//! what reached the disk, so the only safe way on is to reopen, which recovers from what is
//! durable.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use dyad_wire::{Epoch, SessionId};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::disk::{Disk, OpenMode};

mod backend;
mod catalog;
pub(crate) mod config;
pub mod disk;
pub mod local_keys;
mod recordings;
pub mod records;
pub mod replica_port;
pub mod settings_backup;
mod settings_read;
pub mod summary;
pub use dyad_core::tree;

pub use config::config_chain;
pub use recordings::{
    recording_file_name, BadChunk, BeginOutcome, ChunkOutcome, DamagedExport, DamagedInfo,
    ImportInfo, PartialInfo, RecordingCounts, SyncWork, VerifyReport,
};
pub use records::{
    ConfigChange, ConfigSnapshot, ConfigVersion, ConflictEntry, ConflictRecord, SessionMeta,
    CONFIG_CHAIN_ZERO, CONFIG_VERSION_ZERO,
};
pub use settings_read::SettingsRead;
pub use summary::{Differences, Reconciler, SummaryIndex, SummaryRequest, SummaryResponse};
pub use tree::{TreeError, CHUNK_SIZE_BYTES, MAX_RECORDING_BYTES};

/// The newest on-disk format this code reads and writes, and the one new stores get. Format 1
/// stores (no end-time index) are still read and written as format 1 until an update that
/// needs format 2 migrates them ([`Store::migrate_to`]); see `docs/storage.md`.
pub const FORMAT_VERSION: u64 = 2;
/// The oldest format this code still opens.
pub const FORMAT_VERSION_MIN: u64 = 1;

/// Name of the metadata database in the data folder.
pub const META_FILE_NAME: &str = "meta.redb";

/// redb's page cache: the metadata is small; recordings never pass through it.
const META_CACHE_BYTES: usize = 16 * 1024 * 1024;

pub(crate) const FORMAT: TableDefinition<&str, u64> = TableDefinition::new("format");
pub(crate) const LOCAL: TableDefinition<&str, &[u8]> = TableDefinition::new("local");
pub(crate) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
pub(crate) const CONFIG: TableDefinition<&str, &[u8]> = TableDefinition::new("config");
pub(crate) const CONFIG_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("config_state");
pub(crate) const CONFIG_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("config_log");
/// The chain after each logged change, by sequence (32 bytes; `config::config_chain`).
pub(crate) const CONFIG_CHAINS: TableDefinition<u64, &[u8]> = TableDefinition::new("config_chains");
pub(crate) const CONFLICTS: TableDefinition<u64, &[u8]> = TableDefinition::new("conflicts");
pub(crate) const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
pub(crate) const SESSION_CVS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("session_cvs");
pub(crate) const PARTIALS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("partials");
pub(crate) const PARTIAL_CHUNKS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("partial_chunks");
/// Format 2: completed sessions by end time (`catalog::end_index_key`).
pub(crate) const SESSIONS_BY_END: TableDefinition<&[u8], ()> =
    TableDefinition::new("sessions_by_end");

/// What went wrong, split by who can fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    // --- Local I/O: terminal; the store refuses further work until reopened. ---
    /// A disk operation failed. Check the disk (space, health), then restart the service.
    Io {
        context: String,
        kind: io::ErrorKind,
        message: String,
    },
    /// The metadata database failed.
    Database { message: String },
    /// An earlier failure stopped the store; reopen it.
    Failed { first: Box<StoreError> },

    // --- Local space: not terminal; nothing was written, the work can be retried. ---
    /// A write was refused because the disk is full (a synchronous `ENOSPC`): nothing of it
    /// reached the file, so the store goes on; the work succeeds once space is freed.
    DiskFull { context: String },

    // --- Local data: found on disk, not caused by the caller. ---
    /// The data folder was written by a newer version of Dyad; run that version (or newer).
    NewerFormat { found: u64, supported: u64 },
    /// The data folder's format is older than any this version can open or migrate.
    OlderFormat { found: u64, oldest: u64 },
    /// A stored record does not follow its layout (disk corruption or tampering).
    CorruptRecord { problem: String },
    /// A chunk of a stored recording failed verification or could not be read; the recording
    /// was withdrawn from the catalog and is listed as damaged, to be fetched again from a
    /// peer that holds it.
    ChunkCorrupt { id: SessionId, index: u64 },

    // --- Caller or peer input: nothing was changed. ---
    /// The same session id is already known with different content.
    IdConflict {
        id: SessionId,
        existing_root: [u8; 32],
        incoming_root: [u8; 32],
    },
    /// A recording's chunk list, size or chunk does not match its root.
    InvalidRecording {
        id: Option<SessionId>,
        problem: String,
    },
    /// A configuration write from an epoch older than the configuration's own.
    StaleEpoch { current: Epoch, given: Epoch },
    /// Configuration changes that do not continue this configuration's history, by number or
    /// by chain (boxed: versions carry their 32-byte chains).
    ChangesOutOfOrder {
        current: Box<ConfigVersion>,
        first: Box<ConfigVersion>,
    },
    /// An argument is outside its limits.
    InvalidInput { problem: String },
    /// No such session (complete or partial, as the call requires).
    NotFound { id: SessionId },
    /// `publish` was called before every chunk was durable.
    Incomplete { id: SessionId, missing_chunks: u64 },
    /// Reading the file to import failed (the source, not the store's disk).
    ImportSource { message: String },
    /// The peer broke the catalog summary protocol.
    Protocol { problem: String },
}

impl StoreError {
    /// Whether this error stops the store (local I/O failures).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            StoreError::Io { .. } | StoreError::Database { .. } | StoreError::Failed { .. }
        )
    }

    pub(crate) fn io(context: impl Into<String>, error: io::Error) -> StoreError {
        StoreError::Io {
            context: context.into(),
            kind: error.kind(),
            message: error.to_string(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io {
                context, message, ..
            } => write!(
                f,
                "disk error while {context}: {message}; check the disk and restart the service"
            ),
            StoreError::Database { message } => write!(
                f,
                "metadata database error: {message}; check the disk and restart the service"
            ),
            StoreError::Failed { first } => write!(
                f,
                "the store stopped after an earlier failure ({first}); restart the service"
            ),
            StoreError::DiskFull { context } => write!(
                f,
                "the disk is full while {context}; free space in the data folder's file \
                 system, then sync again (nothing was lost)"
            ),
            StoreError::NewerFormat { found, supported } => write!(
                f,
                "the data folder has format {found}, this version reads up to {supported}; \
                 install the newer Dyad version that wrote it"
            ),
            StoreError::OlderFormat { found, oldest } => write!(
                f,
                "the data folder has format {found}, older than the oldest this version opens \
                 ({oldest}); install an intermediate Dyad version first"
            ),
            StoreError::CorruptRecord { problem } => {
                write!(f, "the metadata database holds a damaged record: {problem}")
            }
            StoreError::ChunkCorrupt { id, index } => write!(
                f,
                "chunk {index} of recording {}:{} is damaged on disk (it does not verify or \
                 cannot be read); the recording is listed as damaged and fetched again from the \
                 peer if it holds it",
                id.origin, id.sequence
            ),
            StoreError::IdConflict { id, .. } => write!(
                f,
                "session {}:{} already exists with different content; refused, not merged",
                id.origin, id.sequence
            ),
            StoreError::InvalidRecording { id, problem } => match id {
                Some(id) => write!(
                    f,
                    "recording {}:{} refused: {problem}",
                    id.origin, id.sequence
                ),
                None => write!(f, "recording refused: {problem}"),
            },
            StoreError::StaleEpoch { current, given } => write!(
                f,
                "configuration write from epoch {given} refused: the configuration is already at \
                 epoch {current}"
            ),
            StoreError::ChangesOutOfOrder { current, first } => write!(
                f,
                "configuration changes starting at {first} do not continue this configuration's \
                 history at {current}; a full snapshot is needed"
            ),
            StoreError::InvalidInput { problem } => write!(f, "{problem}"),
            StoreError::NotFound { id } => {
                write!(f, "no session {}:{}", id.origin, id.sequence)
            }
            StoreError::Incomplete { id, missing_chunks } => write!(
                f,
                "recording {}:{} still misses {missing_chunks} durable chunks",
                id.origin, id.sequence
            ),
            StoreError::ImportSource { message } => {
                write!(f, "cannot read the recording to import: {message}")
            }
            StoreError::Protocol { problem } => write!(f, "{problem}"),
        }
    }
}

impl std::error::Error for StoreError {}

pub(crate) fn db_error(error: impl Into<redb::Error>) -> StoreError {
    let error: redb::Error = error.into();
    if let redb::Error::Io(io_error) = error {
        return StoreError::io("using the metadata database", io_error);
    }
    StoreError::Database {
        message: error.to_string(),
    }
}

pub(crate) fn corrupt(error: records::RecordError) -> StoreError {
    StoreError::CorruptRecord {
        problem: error.to_string(),
    }
}

/// Where the store reads the time it stamps on what it records (when a recording was found
/// damaged, when the configuration changed): wall-clock milliseconds since the Unix epoch.
/// The store never reads a clock itself: the driver gives the wall clock
/// (`driver::wall_store_clock`), the simulator its world's time.
pub type StoreClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The store's failure slot, shared by everything that commits (the syncer thread included).
pub(crate) type FailureSlot = Arc<Mutex<Option<StoreError>>>;

/// Records `error` as the store's failure unless one is recorded already; returns it.
pub(crate) fn poison(slot: &FailureSlot, error: StoreError) -> StoreError {
    let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_none() {
        *slot = Some(error.clone());
    }
    error
}

/// `Err(Failed)` when the store has failed: checked before every commit.
pub(crate) fn check_not_failed(slot: &FailureSlot) -> Result<(), StoreError> {
    match slot.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        Some(first) => Err(StoreError::Failed {
            first: Box::new(first.clone()),
        }),
        None => Ok(()),
    }
}

impl Inner {
    /// The store's clock's time, if it was given one.
    pub(crate) fn now_unix_ms(&self) -> Option<u64> {
        self.clock.as_ref().map(|clock| clock())
    }
}

/// The state behind the store's lock.
pub(crate) struct Inner {
    pub(crate) disk: Arc<dyn Disk>,
    /// The same slot as [`Store`]'s: an fsync failure poisons it at once, before the lock
    /// on the file's syncs is released.
    pub(crate) failure: FailureSlot,
    /// `None` until given ([`Store::set_clock`]): damage is then found at an unknown time (0)
    /// and configuration changes leave no time (the install then asks for a backup).
    pub(crate) clock: Option<StoreClock>,
    /// Shared with the sync work that runs off the caller's thread ([`SyncWork`]).
    pub(crate) db: Arc<Database>,
    pub(crate) summary: SummaryIndex,
    /// By session id, so that every walk over them (verify, listings) has one order, the
    /// same in every process and in the simulator's replays.
    pub(crate) partials: BTreeMap<SessionId, recordings::OpenPartial>,
    pub(crate) import_counter: u64,
    /// Numbers the syncs handed out by [`Store::begin_sync`].
    pub(crate) next_sync_ticket: u64,
    /// The store's on-disk format (`FORMAT_VERSION_MIN..=FORMAT_VERSION`).
    pub(crate) format: u64,
}

/// Everything an appliance persists. Methods take `&self`; calls are serialized inside.
pub struct Store {
    inner: Mutex<Inner>,
    /// Shared with the sync work running off the caller's thread, which poisons the store at
    /// once when its fsync fails and checks it before it commits anything.
    failure: FailureSlot,
    open_report: OpenReport,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// What [`Store::migrate_to`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationReport {
    pub from_format: u64,
    pub to_format: u64,
    /// Sessions entered into the end-time index (format 1 to 2).
    pub sessions_indexed: u64,
}

/// What [`Store::open`] found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Files that no record referred to (interrupted imports or receptions), removed.
    pub orphan_files_removed: Vec<String>,
    /// Partial recordings whose publication a crash interrupted, completed now.
    pub publications_completed: Vec<SessionId>,
    /// Completed recordings whose file was missing or had the wrong length: withdrawn from
    /// the catalog and marked for re-fetch.
    pub recordings_withdrawn: Vec<SessionId>,
    /// Chunks of partial recordings whose durable bit was set but which did not verify when
    /// recovery re-read them (a sync whose failure was never seen, a bad sector): forgotten,
    /// to be fetched again.
    pub partial_chunks_forgotten: u64,
}

impl Store {
    /// Opens the store in `disk`'s folder, creating it (in [`FORMAT_VERSION`]) when empty, and
    /// recovers from any crash.
    pub fn open(disk: Arc<dyn Disk>) -> Result<Store, StoreError> {
        Store::open_or_create_with_format(disk, FORMAT_VERSION)
    }

    /// Like [`Store::open`], but a store created now gets `new_format` (an existing store
    /// keeps its own). Lets `dyad init --store-format 1` and tests make the stores an older
    /// release made, which this code still reads and migrates.
    pub fn open_or_create_with_format(
        disk: Arc<dyn Disk>,
        new_format: u64,
    ) -> Result<Store, StoreError> {
        if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&new_format) {
            return Err(StoreError::InvalidInput {
                problem: format!(
                    "store format {new_format} is not one this version writes \
                     ({FORMAT_VERSION_MIN} to {FORMAT_VERSION})"
                ),
            });
        }
        let file = disk
            .open(META_FILE_NAME, OpenMode::CreateIfMissing)
            .map_err(|error| StoreError::io("opening the metadata database", error))?;
        // After a failed fsync (the previous process stopped on it), Linux keeps the pages it
        // failed to write in the cache, marked clean: the database must be read from the
        // medium, not from them, or it would trust commits that never reached the disk.
        file.drop_cached();
        // The database's file name must be durable before anything in it counts.
        disk.sync_dir()
            .map_err(|error| StoreError::io("syncing the data folder", error))?;
        let db = redb::Builder::new()
            .set_cache_size(META_CACHE_BYTES)
            .set_check_integrity_on_open(true)
            .create_with_backend(backend::DiskBackend::new(file))
            .map_err(db_error)?;
        let format = init_tables(&db, new_format)?;
        let failure: FailureSlot = Arc::new(Mutex::new(None));
        let mut inner = Inner {
            disk,
            failure: Arc::clone(&failure),
            clock: None,
            db: Arc::new(db),
            summary: SummaryIndex::default(),
            partials: BTreeMap::new(),
            import_counter: 0,
            next_sync_ticket: 1,
            format,
        };
        let open_report = recordings::recover(&mut inner)?;
        Ok(Store {
            inner: Mutex::new(inner),
            failure,
            open_report,
        })
    }

    /// Replaces the clock the store stamps its findings with (the simulator's virtual time).
    pub fn set_clock(&self, clock: StoreClock) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clock = Some(clock);
    }

    /// What opening found and repaired.
    pub fn open_report(&self) -> &OpenReport {
        &self.open_report
    }

    /// The store's on-disk format.
    pub fn format_version(&self) -> Result<u64, StoreError> {
        self.run(|inner| Ok(inner.format))
    }

    /// Migrates the store up to `target` format, one step per transaction (each step is all
    /// or nothing across a crash). Already at or above `target`: nothing to do.
    pub fn migrate_to(&self, target: u64) -> Result<MigrationReport, StoreError> {
        if target > FORMAT_VERSION {
            return Err(StoreError::NewerFormat {
                found: target,
                supported: FORMAT_VERSION,
            });
        }
        self.run(|inner| {
            let from_format = inner.format;
            let mut sessions_indexed = 0;
            while inner.format < target {
                match inner.format {
                    1 => sessions_indexed += catalog::migrate_1_to_2(inner)?,
                    other => {
                        return Err(StoreError::OlderFormat {
                            found: other,
                            oldest: FORMAT_VERSION_MIN,
                        })
                    }
                }
            }
            Ok(MigrationReport {
                from_format,
                to_format: inner.format,
                sessions_indexed,
            })
        })
    }

    /// An install's store step: migrates up to `target` when the store is older, and says what
    /// it did (`None`: already there). Used by an install, and by recovery to complete one.
    pub fn migrate_if_older(&self, target: u64) -> Result<Option<MigrationReport>, StoreError> {
        if self.format_version()? < target {
            return self.migrate_to(target).map(Some);
        }
        Ok(None)
    }

    /// Runs `operation` unless the store has failed; a terminal error stops the store.
    pub(crate) fn run<T>(
        &self,
        operation: impl FnOnce(&mut Inner) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Some(first) = self.failure_slot().as_ref() {
            return Err(StoreError::Failed {
                first: Box::new(first.clone()),
            });
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let result = operation(&mut inner);
        drop(inner);
        self.note(result)
    }

    /// Stops the store if `result` is a terminal error (work done outside the lock).
    pub(crate) fn note<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(error) = &result {
            if error.is_terminal() {
                let mut slot = self.failure_slot();
                if slot.is_none() {
                    *slot = Some(error.clone());
                }
            }
        }
        result
    }

    fn failure_slot(&self) -> MutexGuard<'_, Option<StoreError>> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The failure slot itself, for work that runs outside the store's calls.
    pub(crate) fn failure_handle(&self) -> FailureSlot {
        Arc::clone(&self.failure)
    }

    /// The error that stopped the store, if one did.
    pub fn failure(&self) -> Option<StoreError> {
        self.failure_slot().clone()
    }

    /// An appliance-local setting (never replicated).
    pub fn local_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_key(key)?;
        self.run(|inner| {
            let read = inner.db.begin_read().map_err(db_error)?;
            let table = read.open_table(LOCAL).map_err(db_error)?;
            let value = table.get(key).map_err(db_error)?;
            Ok(value.map(|value| value.value().to_vec()))
        })
    }

    /// Sets an appliance-local setting, durably.
    pub fn local_set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        check_key(key)?;
        check_value(value)?;
        self.run(|inner| {
            let write = inner.db.begin_write().map_err(db_error)?;
            {
                let mut table = write.open_table(LOCAL).map_err(db_error)?;
                table.insert(key, value).map_err(db_error)?;
            }
            write.commit().map_err(db_error)
        })
    }

    /// Removes an appliance-local setting; returns whether it existed.
    pub fn local_delete(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        self.run(|inner| {
            let write = inner.db.begin_write().map_err(db_error)?;
            let existed = {
                let mut table = write.open_table(LOCAL).map_err(db_error)?;
                let removed = table.remove(key).map_err(db_error)?;
                removed.is_some()
            };
            write.commit().map_err(db_error)?;
            Ok(existed)
        })
    }

    /// All appliance-local settings, sorted by key.
    pub fn local_list(&self) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
        self.run(|inner| {
            let read = inner.db.begin_read().map_err(db_error)?;
            let table = read.open_table(LOCAL).map_err(db_error)?;
            let mut out = BTreeMap::new();
            for entry in table.iter().map_err(db_error)? {
                let (key, value) = entry.map_err(db_error)?;
                out.insert(key.value().to_string(), value.value().to_vec());
            }
            Ok(out)
        })
    }
}

pub(crate) fn check_key(key: &str) -> Result<(), StoreError> {
    if key.len() > records::MAX_CONFIG_KEY_BYTES {
        return Err(StoreError::InvalidInput {
            problem: format!(
                "key of {} bytes is longer than the limit of {}",
                key.len(),
                records::MAX_CONFIG_KEY_BYTES
            ),
        });
    }
    Ok(())
}

pub(crate) fn check_value(value: &[u8]) -> Result<(), StoreError> {
    if value.len() > records::MAX_CONFIG_VALUE_BYTES {
        return Err(StoreError::InvalidInput {
            problem: format!(
                "value of {} bytes is larger than the limit of {}",
                value.len(),
                records::MAX_CONFIG_VALUE_BYTES
            ),
        });
    }
    Ok(())
}

/// Creates every table and checks (or writes) the format version, in one transaction; returns
/// the store's format.
fn init_tables(db: &Database, new_format: u64) -> Result<u64, StoreError> {
    let (found, chains_table) = {
        let read = db.begin_read().map_err(db_error)?;
        let found = match read.open_table(FORMAT) {
            Ok(table) => table
                .get("format_version")
                .map_err(db_error)?
                .map(|value| value.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(error) => return Err(db_error(error)),
        };
        let chains_table = match read.open_table(CONFIG_CHAINS) {
            Ok(_) => true,
            Err(redb::TableError::TableDoesNotExist(_)) => false,
            Err(error) => return Err(db_error(error)),
        };
        (found, chains_table)
    };
    if let Some(found) = found {
        if found > FORMAT_VERSION {
            return Err(StoreError::NewerFormat {
                found,
                supported: FORMAT_VERSION,
            });
        }
        if found < FORMAT_VERSION_MIN {
            return Err(StoreError::OlderFormat {
                found,
                oldest: FORMAT_VERSION_MIN,
            });
        }
        // Older formats stay as they are until an update migrates them (`migrate_to`). The
        // chain table is an addition every format has (absent chains read as the zero
        // anchor), made here for stores created before it existed.
        if !chains_table {
            let write = db.begin_write().map_err(db_error)?;
            write.open_table(CONFIG_CHAINS).map_err(db_error)?;
            write.commit().map_err(db_error)?;
        }
        return Ok(found);
    }
    let write = db.begin_write().map_err(db_error)?;
    {
        write.open_table(LOCAL).map_err(db_error)?;
        write.open_table(COUNTERS).map_err(db_error)?;
        write.open_table(CONFIG).map_err(db_error)?;
        write.open_table(CONFIG_STATE).map_err(db_error)?;
        write.open_table(CONFIG_LOG).map_err(db_error)?;
        write.open_table(CONFIG_CHAINS).map_err(db_error)?;
        write.open_table(CONFLICTS).map_err(db_error)?;
        write.open_table(SESSIONS).map_err(db_error)?;
        write.open_table(SESSION_CVS).map_err(db_error)?;
        write.open_table(PARTIALS).map_err(db_error)?;
        write.open_table(PARTIAL_CHUNKS).map_err(db_error)?;
        if new_format >= 2 {
            write.open_table(SESSIONS_BY_END).map_err(db_error)?;
        }
        let mut format = write.open_table(FORMAT).map_err(db_error)?;
        format
            .insert("format_version", new_format)
            .map_err(db_error)?;
    }
    write.commit().map_err(db_error)?;
    Ok(new_format)
}

/// Overwrites the stored format version; lets tests check that a newer format is refused.
#[doc(hidden)]
pub fn set_format_version_for_tests(disk: Arc<dyn Disk>, version: u64) -> Result<(), StoreError> {
    let store = Store::open(disk)?;
    store.run(|inner| {
        let write = inner.db.begin_write().map_err(db_error)?;
        {
            let mut format = write.open_table(FORMAT).map_err(db_error)?;
            format.insert("format_version", version).map_err(db_error)?;
        }
        write.commit().map_err(db_error)
    })
}
