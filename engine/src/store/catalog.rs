//! The session catalog: completed sessions, per-origin high-water marks, this appliance's
//! session id allocation, and the catalog summary used to find differences with the peer.

use std::collections::BTreeMap;

use dyad_wire::{NodeId, SessionId};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::records::{decode_session_key, decode_session_meta, session_key, SessionMeta};
use super::summary::{self, Reconciler, SummaryIndex, SummaryRequest, SummaryResponse};
use super::{corrupt, db_error, Inner, Store, StoreError, COUNTERS, SESSIONS};

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

impl Store {
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
