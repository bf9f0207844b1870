//! Opening a data folder (checking or creating its format and tables, then recovering from
//! whatever a crash left half done) and migrating it from one format to the next.
//!
//! Above the parts it calls (`recordings` recovers, `catalog` migrates) and `store`, whose
//! [`Store`] it builds, none of which import it: the layering rule allows no module cycles.
//! Re-exported from the crate root.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase};

use crate::backend;
use crate::catalog;
use crate::disk::{Disk, OpenMode};
use crate::error::{db_error, StoreError};
use crate::recordings;
use crate::store::{FailureSlot, Inner, Store};
use crate::summary::SummaryIndex;
use crate::tables::{
    CONFIG, CONFIG_CHAINS, CONFIG_LOG, CONFIG_STATE, CONFLICTS, COUNTERS, FORMAT, LOCAL, PARTIALS,
    PARTIAL_CHUNKS, SESSIONS, SESSIONS_BY_END, SESSION_CVS,
};

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

/// What [`Store::migrate_to`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationReport {
    pub from_format: u64,
    pub to_format: u64,
    /// Sessions entered into the end-time index (format 1 to 2).
    pub sessions_indexed: u64,
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
        Ok(Store::from_parts(inner, failure, open_report))
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
