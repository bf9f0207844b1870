//! A partial recording with its open file: the part of the recordings' state that lives in
//! the store's locked state ([`Inner`](crate::store::Inner)).
//!
//! In a leaf module so that the store's state can hold it without importing `recordings`,
//! which works on it (and imports the store, so importing it would be a module cycle).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::disk::DiskFile;
use crate::records::PartialRecord;

/// A partial recording with its open file.
pub(crate) struct OpenPartial {
    pub(crate) record: PartialRecord,
    pub(crate) file: Arc<dyn DiskFile>,
    /// Verified and durable (persisted bitmap).
    pub(crate) durable: Vec<bool>,
    /// Verified and written since the last sync; not durable yet.
    pub(crate) written: Vec<bool>,
    pub(crate) unsynced: u64,
    /// Chunks handed to a sync that runs off the caller's thread ([`Store::begin_sync`]), by
    /// ticket; durable once [`Store::finish_sync`] reports that sync done.
    ///
    /// [`Store::begin_sync`]: crate::Store::begin_sync
    /// [`Store::finish_sync`]: crate::Store::finish_sync
    pub(crate) syncing: BTreeMap<u64, Vec<u64>>,
    /// Held across every fsync of this file and the commit that follows it: at most one
    /// fsync in flight per file, so the one that Linux reports a writeback error to is the
    /// one whose chunks it concerns, and it poisons the store before any other may commit.
    pub(crate) sync_lock: Arc<Mutex<()>>,
    /// A damaged recording whose chunks not known to be bad were kept without re-reading
    /// them (the withdrawal had found one bad chunk): they are checked, off the store's lock,
    /// before it can be published again ([`Store::recheck_damaged`]).
    ///
    /// [`Store::recheck_damaged`]: crate::Store::recheck_damaged
    pub(crate) unchecked: bool,
}

impl OpenPartial {
    pub(crate) fn new(
        record: PartialRecord,
        file: Arc<dyn DiskFile>,
        durable: Vec<bool>,
    ) -> OpenPartial {
        let count = durable.len();
        OpenPartial {
            record,
            file,
            durable,
            written: vec![false; count],
            unsynced: 0,
            syncing: BTreeMap::new(),
            sync_lock: Arc::new(Mutex::new(())),
            unchecked: false,
        }
    }

    pub(crate) fn missing(&self) -> u64 {
        self.durable.iter().filter(|bit| !**bit).count() as u64
    }
}
