//! The session catalog: completed sessions, per-origin high-water marks, this appliance's
//! session id allocation, the catalog summary used to find differences with the peer, and
//! (from store format 2) the index of sessions by end time.
//!
//! The end-time index answers "which sessions ended in this interval" (retention, the oldest
//! data an appliance holds) without reading the whole catalog. Format 1 stores have no index
//! and answer the same question by a scan; `migrate_1_to_2` builds the index from the catalog
//! in the same transaction that bumps the format, so a crash leaves format 1 or format 2, never
//! a half-built index.

use std::collections::BTreeMap;

use dyad_wire::{NodeId, SessionId};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::error::{corrupt, db_error, StoreError};
use super::records::{decode_session_key, decode_session_meta, session_key, SessionMeta};
use super::store::{Inner, Store};
use super::summary::{self, Reconciler, SummaryIndex, SummaryRequest, SummaryResponse};
use super::tables::{COUNTERS, FORMAT, SESSIONS, SESSIONS_BY_END};

/// The next sequence this appliance may give one of its own sessions.
pub(super) const LOCAL_FLOOR_KEY: &str = "local_sequence_floor";

/// Allocates this appliance's next session id inside `write`: above the persisted floor and
/// above every known session of `origin` (complete or partial), and moves the floor past it,
/// so no id is handed out twice even if the catalog is later restored from an older backup.
pub(crate) fn allocate_local_id(
    inner: &Inner,
    write: &WriteTransaction,
    origin: NodeId,
) -> Result<SessionId, StoreError> {
    let mut counters = write.open_table(COUNTERS).map_err(db_error)?;
    let floor = counters
        .get(LOCAL_FLOOR_KEY)
        .map_err(db_error)?
        .map_or(1, |value| value.value());
    let above_catalog = inner
        .summary
        .high_water_marks()
        .get(&origin)
        .map_or(0, |high| high.saturating_add(1));
    let above_partials = inner
        .partials
        .keys()
        .filter(|id| id.origin == origin)
        .map(|id| id.sequence.saturating_add(1))
        .max()
        .unwrap_or(0);
    let sequence = floor.max(above_catalog).max(above_partials);
    if sequence == u64::MAX {
        return Err(StoreError::InvalidInput {
            problem: "this appliance has used every session sequence number".to_string(),
        });
    }
    counters
        .insert(LOCAL_FLOOR_KEY, sequence + 1)
        .map_err(db_error)?;
    Ok(SessionId { origin, sequence })
}

/// Key of the end-time index: `ended_unix_ms` (big-endian, so keys sort by time), then the
/// session key.
pub(crate) fn end_index_key(meta: &SessionMeta) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&meta.ended_unix_ms.to_be_bytes());
    key[8..].copy_from_slice(&session_key(&meta.id));
    key
}

/// Lists `meta` in the end-time index inside `write`, when the store's format has one.
pub(crate) fn index_insert(
    format: u64,
    write: &WriteTransaction,
    meta: &SessionMeta,
) -> Result<(), StoreError> {
    if format < 2 {
        return Ok(());
    }
    let mut table = write.open_table(SESSIONS_BY_END).map_err(db_error)?;
    table
        .insert(end_index_key(meta).as_slice(), ())
        .map_err(db_error)?;
    Ok(())
}

/// Removes `meta` from the end-time index inside `write`, when the store's format has one.
pub(crate) fn index_remove(
    format: u64,
    write: &WriteTransaction,
    meta: &SessionMeta,
) -> Result<(), StoreError> {
    if format < 2 {
        return Ok(());
    }
    let mut table = write.open_table(SESSIONS_BY_END).map_err(db_error)?;
    table
        .remove(end_index_key(meta).as_slice())
        .map_err(db_error)?;
    Ok(())
}

/// Store format 1 to 2: builds the end-time index from the catalog and records format 2, in
/// one transaction (all or nothing across a crash). Returns the number of sessions indexed.
pub(crate) fn migrate_1_to_2(inner: &mut Inner) -> Result<u64, StoreError> {
    let write = inner.db.begin_write().map_err(db_error)?;
    let mut indexed = 0u64;
    {
        let sessions = write.open_table(SESSIONS).map_err(db_error)?;
        let mut index = write.open_table(SESSIONS_BY_END).map_err(db_error)?;
        for entry in sessions.iter().map_err(db_error)? {
            let (_, value) = entry.map_err(db_error)?;
            let meta = decode_session_meta(value.value()).map_err(corrupt)?;
            index
                .insert(end_index_key(&meta).as_slice(), ())
                .map_err(db_error)?;
            indexed += 1;
        }
        let mut format = write.open_table(FORMAT).map_err(db_error)?;
        format.insert("format_version", 2).map_err(db_error)?;
    }
    write.commit().map_err(db_error)?;
    inner.format = 2;
    Ok(indexed)
}

impl Store {
    /// Completed sessions that ended in `[from_unix_ms, to_unix_ms)`, oldest first (ties by
    /// id), at most `limit`. Uses the end-time index on format 2 stores, a catalog scan on
    /// format 1 stores; both give the same answer.
    pub fn sessions_ended_between(
        &self,
        from_unix_ms: u64,
        to_unix_ms: u64,
        limit: usize,
    ) -> Result<Vec<SessionMeta>, StoreError> {
        self.run(|inner| {
            let read = inner.db.begin_read().map_err(db_error)?;
            let sessions = read.open_table(SESSIONS).map_err(db_error)?;
            if inner.format < 2 {
                let mut found = Vec::new();
                for entry in sessions.iter().map_err(db_error)? {
                    let (_, value) = entry.map_err(db_error)?;
                    let meta = decode_session_meta(value.value()).map_err(corrupt)?;
                    if (from_unix_ms..to_unix_ms).contains(&meta.ended_unix_ms) {
                        found.push(meta);
                    }
                }
                found.sort_by_key(end_index_key);
                found.truncate(limit);
                return Ok(found);
            }
            let index = read.open_table(SESSIONS_BY_END).map_err(db_error)?;
            let start = from_unix_ms.to_be_bytes();
            let mut found = Vec::new();
            for entry in index.range(start.as_slice()..).map_err(db_error)? {
                if found.len() >= limit {
                    break;
                }
                let (key, _) = entry.map_err(db_error)?;
                let key = key.value();
                let ended = key
                    .get(..8)
                    .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| StoreError::CorruptRecord {
                        problem: "an end-time index key is too short".to_string(),
                    })?;
                if ended >= to_unix_ms {
                    break;
                }
                let id = decode_session_key(&key[8..]).map_err(corrupt)?;
                let Some(value) = sessions
                    .get(session_key(&id).as_slice())
                    .map_err(db_error)?
                else {
                    return Err(StoreError::CorruptRecord {
                        problem: format!(
                            "the end-time index lists session {}:{} which the catalog lacks",
                            id.origin, id.sequence
                        ),
                    });
                };
                found.push(decode_session_meta(value.value()).map_err(corrupt)?);
            }
            Ok(found)
        })
    }

    /// A completed session's metadata.
    pub fn catalog_get(&self, id: &SessionId) -> Result<Option<SessionMeta>, StoreError> {
        self.run(|inner| {
            let read = inner.db.begin_read().map_err(db_error)?;
            let table = read.open_table(SESSIONS).map_err(db_error)?;
            let value = table.get(session_key(id).as_slice()).map_err(db_error)?;
            value
                .map(|bytes| decode_session_meta(bytes.value()).map_err(corrupt))
                .transpose()
        })
    }

    /// Every completed session, sorted by id.
    pub fn catalog_list(&self) -> Result<Vec<SessionMeta>, StoreError> {
        self.run(|inner| {
            let read = inner.db.begin_read().map_err(db_error)?;
            let table = read.open_table(SESSIONS).map_err(db_error)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(db_error)? {
                let (key, value) = entry.map_err(db_error)?;
                let meta = decode_session_meta(value.value()).map_err(corrupt)?;
                if decode_session_key(key.value()).map_err(corrupt)? != meta.id {
                    return Err(StoreError::CorruptRecord {
                        problem: "a session is filed under another session's id".to_string(),
                    });
                }
                out.push(meta);
            }
            Ok(out)
        })
    }

    /// Number of completed sessions.
    pub fn catalog_len(&self) -> Result<u64, StoreError> {
        self.run(|inner| {
            let read = inner.db.begin_read().map_err(db_error)?;
            let table = read.open_table(SESSIONS).map_err(db_error)?;
            table.len().map_err(db_error)
        })
    }

    /// Highest completed sequence per origin.
    pub fn high_water_marks(&self) -> Result<BTreeMap<NodeId, u64>, StoreError> {
        self.run(|inner| Ok(inner.summary.high_water_marks()))
    }

    /// A fresh id for a session completed on this appliance (`origin` is this appliance's
    /// node id). Never returns an id it returned before, also across restarts.
    pub fn next_local_session_id(&self, origin: NodeId) -> Result<SessionId, StoreError> {
        self.run(|inner| {
            let write = inner.db.begin_write().map_err(db_error)?;
            let id = allocate_local_id(inner, &write, origin)?;
            write.commit().map_err(db_error)?;
            Ok(id)
        })
    }

    /// The lowest sequence [`Store::next_local_session_id`] may return next.
    pub fn local_sequence_floor(&self) -> Result<u64, StoreError> {
        self.run(|inner| {
            let read = inner.db.begin_read().map_err(db_error)?;
            let counters = read.open_table(COUNTERS).map_err(db_error)?;
            Ok(counters
                .get(LOCAL_FLOOR_KEY)
                .map_err(db_error)?
                .map_or(1, |value| value.value()))
        })
    }

    /// Raises the floor of local sequences (a settings restore carries the old appliance's
    /// high-water mark). Never lowers it.
    pub fn set_local_sequence_floor(&self, floor: u64) -> Result<(), StoreError> {
        self.run(|inner| {
            let write = inner.db.begin_write().map_err(db_error)?;
            {
                let mut counters = write.open_table(COUNTERS).map_err(db_error)?;
                let current = counters
                    .get(LOCAL_FLOOR_KEY)
                    .map_err(db_error)?
                    .map_or(1, |value| value.value());
                counters
                    .insert(LOCAL_FLOOR_KEY, current.max(floor))
                    .map_err(db_error)?;
            }
            write.commit().map_err(db_error)
        })
    }

    /// A copy of the catalog summary index (for a [`Reconciler`] run elsewhere).
    pub fn summary_index(&self) -> Result<SummaryIndex, StoreError> {
        self.run(|inner| Ok(inner.summary.clone()))
    }

    /// Answers the peer's catalog summary request.
    pub fn summary_answer(&self, request: &SummaryRequest) -> Result<SummaryResponse, StoreError> {
        self.run(|inner| {
            summary::answer(&inner.summary, request).map_err(|error| StoreError::Protocol {
                problem: error.to_string(),
            })
        })
    }

    /// Feeds the peer's answer to `reconciler`, against this catalog.
    pub fn summary_step(
        &self,
        reconciler: &mut Reconciler,
        response: &SummaryResponse,
    ) -> Result<Option<SummaryRequest>, StoreError> {
        self.run(|inner| {
            reconciler
                .handle_response(&inner.summary, response)
                .map_err(|error| StoreError::Protocol {
                    problem: error.to_string(),
                })
        })
    }
}

#[cfg(test)]
mod migration_tests {
    use std::sync::Arc;

    use dyad_wire::NodeId;

    use crate::disk::sim::{Ratio, SimDisk, SimFaults};
    use crate::disk::Disk;
    use crate::{ImportInfo, Store, FORMAT_VERSION};

    fn format_1_store_with_sessions(disk: &Arc<SimDisk>, sessions: u64) -> Vec<super::SessionMeta> {
        let store = Store::open_or_create_with_format(disk.clone() as Arc<dyn Disk>, 1)
            .expect("a new format 1 store");
        for index in 0..sessions {
            store
                .import_recording(
                    &vec![index as u8; 10 + index as usize][..],
                    ImportInfo {
                        origin: NodeId([3; 16]),
                        started_unix_ms: index,
                        // Several sessions share an end time: ties are ordered by id.
                        ended_unix_ms: 500 - (index % 7) * 10,
                        ended_normally: true,
                        expected_len: None,
                        expected_root: None,
                    },
                )
                .expect("import");
        }
        store
            .sessions_ended_between(0, u64::MAX, 1000)
            .expect("scan")
    }

    #[test]
    fn format_1_stores_stay_format_1_until_migrated_and_answer_the_same() {
        let disk = SimDisk::new(1);
        let scanned = format_1_store_with_sessions(&disk, 30);
        assert_eq!(scanned.len(), 30);
        assert!(scanned
            .windows(2)
            .all(|pair| pair[0].ended_unix_ms <= pair[1].ended_unix_ms));
        let store = Store::open(disk.clone()).expect("reopen");
        assert_eq!(store.format_version(), Ok(1), "opening never migrates");
        let report = store.migrate_to(FORMAT_VERSION).expect("migrate");
        assert_eq!(
            (
                report.from_format,
                report.to_format,
                report.sessions_indexed
            ),
            (1, 2, 30)
        );
        assert_eq!(
            store.sessions_ended_between(0, u64::MAX, 1000),
            Ok(scanned.clone())
        );
        assert_eq!(
            store.sessions_ended_between(440, 471, 1000),
            Ok(scanned
                .iter()
                .filter(|meta| (440..471).contains(&meta.ended_unix_ms))
                .cloned()
                .collect())
        );
        assert_eq!(
            store
                .sessions_ended_between(0, u64::MAX, 4)
                .expect("limit")
                .len(),
            4
        );
        drop(store);
        let store = Store::open(disk).expect("reopen");
        assert_eq!(store.format_version(), Ok(2));
        assert_eq!(store.migrate_to(2).expect("no-op").sessions_indexed, 0);
        assert!(store.migrate_to(FORMAT_VERSION + 1).is_err());
    }

    /// Write and sync failures at random points of the migration, then a power loss: the
    /// store reopens as format 1 or as format 2 with the whole index, never in between, and a
    /// second migration completes.
    #[test]
    fn a_crash_during_the_migration_leaves_format_1_or_format_2() {
        let mut outcomes = [0u32; 2];
        for seed in 0..40u64 {
            let disk = SimDisk::new(seed);
            let scanned = format_1_store_with_sessions(&disk, 25);
            let store = Store::open(disk.clone()).expect("reopen");
            disk.set_faults(SimFaults {
                write_error: Ratio::new(1, 1 + (seed % 5) as u32),
                sync_error: Ratio::new(1, 2 + (seed % 3) as u32),
                ..SimFaults::default()
            });
            let _ = store.migrate_to(2);
            drop(store);
            disk.set_faults(SimFaults::default());
            disk.crash(seed % 2 == 0);
            let store = Store::open(disk.clone()).expect("a crashed migration reopens");
            let format = store.format_version().expect("format");
            assert!(format == 1 || format == 2, "seed {seed}: format {format}");
            outcomes[(format - 1) as usize] += 1;
            assert_eq!(
                store.sessions_ended_between(0, u64::MAX, 1000),
                Ok(scanned.clone()),
                "seed {seed}"
            );
            store.migrate_to(2).expect("the second migration completes");
            assert_eq!(
                store.sessions_ended_between(0, u64::MAX, 1000),
                Ok(scanned),
                "seed {seed}"
            );
        }
        assert!(outcomes[0] > 0, "no crash left format 1: {outcomes:?}");
    }
}
