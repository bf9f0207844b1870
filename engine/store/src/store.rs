//! The [`Store`] handle, the state behind its lock, its failure slot, and the appliance-local
//! settings.
//!
//! In a module of its own, below every part that implements `Store` (`catalog`, `config`,
//! `recordings`, `settings_read`, `replica_port`, ...) and below `open`, which opens one and
//! calls into those parts: they all import it, and it imports none of them, so there is no
//! module cycle. Re-exported from the crate root.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use dyad_wire::SessionId;
use redb::{Database, ReadableDatabase, ReadableTable};

use crate::disk::Disk;
use crate::error::{db_error, StoreError};
use crate::partial::OpenPartial;
use crate::records;
use crate::summary::SummaryIndex;
use crate::tables::LOCAL;

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
    ///
    /// [`SyncWork`]: crate::SyncWork
    pub(crate) db: Arc<Database>,
    pub(crate) summary: SummaryIndex,
    /// By session id, so that every walk over them (verify, listings) has one order, the
    /// same in every process and in the simulator's replays.
    pub(crate) partials: BTreeMap<SessionId, OpenPartial>,
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
    /// The store over `inner`, which opening recovered; `failure` is `inner`'s failure slot.
    pub(crate) fn from_parts(inner: Inner, failure: FailureSlot, open_report: OpenReport) -> Store {
        Store {
            inner: Mutex::new(inner),
            failure,
            open_report,
        }
    }

    /// Replaces the clock the store stamps its findings with (the simulator's virtual time).
    pub fn set_clock(&self, clock: StoreClock) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clock = Some(clock);
    }

    /// What opening found and repaired.
    pub fn open_report(&self) -> &OpenReport {
        &self.open_report
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
