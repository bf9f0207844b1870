//! The crash-safe [`Store`] as the replica's [`ReplicaStore`]: the translation between the
//! store's own calls and the protocol's terms, in one place.
//!
//! Errors are mapped by who is at fault: the store's terminal I/O failures become terminal
//! [`StoreFault`]s, a peer's bad bytes become refusals the replica reports against the peer.

use bytes::Bytes;
use dyad_wire::{
    CatalogAnswer, CatalogItem, CatalogQuery, CatalogRange, ConfigEntry, ConfigVersion, Epoch,
    OriginSummary as WireOrigin, RangeAnswer as WireAnswer, RangeSummary as WireSummary,
    SessionHeader, SessionId, SessionMeta,
};

use super::config::MAX_CONFIG_CHANGES_PER_APPLY;
use super::error::StoreError;
use super::recordings::BeginOutcome;
use super::records::{
    ConfigChange, ConfigSnapshot, ConflictEntry, ConflictRecord as StoredConflict,
};
use super::store::Store;
use super::summary::{
    OriginSummary, RangeAnswer, RangeQuery, RangeSummary, Reconciler, SummaryRequest,
    SummaryResponse,
};
use dyad_core::replica::ports::{
    CatalogComparison, ChunkRefusal, ConflictRecord, DifferingKey, IncomingRefusal, ReadRefusal,
    ReplicaStore, StoreFault,
};

pub use super::local_keys::REPLICA_STATE_KEY;

fn fault(error: StoreError) -> StoreFault {
    StoreFault {
        message: error.to_string(),
        terminal: error.is_terminal(),
    }
}

impl From<StoreError> for StoreFault {
    /// For drivers reporting the outcome of store work they ran for the replica (a
    /// [`super::SyncWork`]).
    fn from(error: StoreError) -> StoreFault {
        fault(error)
    }
}

fn entry(change: ConfigChange) -> ConfigEntry {
    ConfigEntry {
        key: change.key,
        value: change.value,
        version: change.version,
    }
}

fn summary_to_wire(summary: RangeSummary) -> WireSummary {
    WireSummary {
        count: summary.count,
        hash: summary.hash,
    }
}

fn summary_from_wire(summary: &WireSummary) -> RangeSummary {
    RangeSummary {
        count: summary.count,
        hash: summary.hash,
    }
}

fn request_to_wire(request: SummaryRequest) -> CatalogQuery {
    let (origins, ranges) = match request {
        SummaryRequest::Origins => (true, Vec::new()),
        SummaryRequest::Ranges(queries) => (
            false,
            queries
                .into_iter()
                .map(|q| CatalogRange {
                    origin: q.origin,
                    start: q.start,
                    level: q.level,
                })
                .collect(),
        ),
    };
    CatalogQuery {
        query: 0,
        part: 0,
        parts: 1,
        origins,
        ranges,
    }
}

fn request_from_wire(query: &CatalogQuery) -> SummaryRequest {
    if query.origins {
        SummaryRequest::Origins
    } else {
        SummaryRequest::Ranges(
            query
                .ranges
                .iter()
                .map(|r| RangeQuery {
                    origin: r.origin,
                    start: r.start,
                    level: r.level,
                })
                .collect(),
        )
    }
}

fn response_to_wire(response: SummaryResponse) -> (Vec<WireOrigin>, Vec<WireAnswer>) {
    match response {
        SummaryResponse::Origins(origins) => (
            origins
                .into_iter()
                .map(|o| WireOrigin {
                    origin: o.origin,
                    max_sequence: o.max_sequence,
                    summary: summary_to_wire(o.summary),
                })
                .collect(),
            Vec::new(),
        ),
        SummaryResponse::Ranges(answers) => (
            Vec::new(),
            answers
                .into_iter()
                .map(|answer| match answer {
                    RangeAnswer::Children(children) => {
                        WireAnswer::Children(children.into_iter().map(summary_to_wire).collect())
                    }
                    RangeAnswer::Items(items) => WireAnswer::Items(
                        items
                            .into_iter()
                            .map(|(sequence, root)| CatalogItem { sequence, root })
                            .collect(),
                    ),
                })
                .collect(),
        ),
    }
}

fn response_from_wire(answer: &CatalogAnswer, asked_origins: bool) -> SummaryResponse {
    if asked_origins {
        SummaryResponse::Origins(
            answer
                .origins
                .iter()
                .map(|o| OriginSummary {
                    origin: o.origin,
                    max_sequence: o.max_sequence,
                    summary: summary_from_wire(&o.summary),
                })
                .collect(),
        )
    } else {
        SummaryResponse::Ranges(
            answer
                .ranges
                .iter()
                .map(|range| match range {
                    WireAnswer::Children(children) => {
                        RangeAnswer::Children(children.iter().map(summary_from_wire).collect())
                    }
                    WireAnswer::Items(items) => {
                        RangeAnswer::Items(items.iter().map(|i| (i.sequence, i.root)).collect())
                    }
                })
                .collect(),
        )
    }
}

/// A catalog comparison in progress: the store's reconciler and what it asked last.
#[derive(Debug, Default)]
pub struct CatalogDiff {
    reconciler: Reconciler,
    asked_origins: bool,
}

impl ReplicaStore for Store {
    fn stopped(&self) -> Option<StoreFault> {
        self.failure().map(fault)
    }

    type CatalogDiff = CatalogDiff;

    fn load_replica_state(&self) -> Result<Option<Vec<u8>>, StoreFault> {
        self.local_get(REPLICA_STATE_KEY).map_err(fault)
    }

    fn save_replica_state(&mut self, bytes: &[u8]) -> Result<(), StoreFault> {
        self.local_set(REPLICA_STATE_KEY, bytes).map_err(fault)
    }

    fn config_version(&self) -> Result<ConfigVersion, StoreFault> {
        Store::config_version(self).map_err(fault)
    }

    fn config_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreFault> {
        Store::config_get(self, key).map_err(fault)
    }

    fn config_write(
        &mut self,
        key: &str,
        value: Option<&[u8]>,
        epoch: Epoch,
    ) -> Result<ConfigVersion, StoreFault> {
        match value {
            Some(value) => self.config_set(key, value, epoch).map_err(fault),
            None => match self.config_delete(key, epoch).map_err(fault)? {
                Some(version) => Ok(version),
                None => Store::config_version(self).map_err(fault),
            },
        }
    }

    fn config_changes_since(
        &self,
        since: ConfigVersion,
    ) -> Result<Option<Vec<ConfigEntry>>, StoreFault> {
        Ok(Store::config_changes_since(self, since)
            .map_err(fault)?
            .map(|changes| changes.into_iter().map(entry).collect()))
    }

    fn config_snapshot(&self) -> Result<(ConfigVersion, Vec<ConfigEntry>), StoreFault> {
        let snapshot = Store::config_snapshot(self).map_err(fault)?;
        let version = snapshot.version;
        let entries = snapshot
            .entries
            .into_iter()
            .map(|(key, value)| ConfigEntry {
                key,
                value: Some(value),
                version,
            })
            .collect();
        Ok((version, entries))
    }

    fn config_apply_changes(&mut self, changes: &[ConfigEntry]) -> Result<(), StoreFault> {
        // Each batch continues the sequence, so applying a long page batch by batch passes
        // through consistent versions only.
        for batch in changes.chunks(MAX_CONFIG_CHANGES_PER_APPLY) {
            let batch: Vec<ConfigChange> = batch
                .iter()
                .map(|entry| ConfigChange {
                    version: entry.version,
                    key: entry.key.clone(),
                    value: entry.value.clone(),
                })
                .collect();
            Store::config_apply_changes(self, &batch).map_err(fault)?;
        }
        Ok(())
    }

    fn config_replace(
        &mut self,
        version: ConfigVersion,
        entries: &[ConfigEntry],
        conflict: Option<&ConflictRecord>,
    ) -> Result<(), StoreFault> {
        // The conflict record and the replacement are one transaction: never a replaced
        // configuration without its record, nor a record of a replacement that did not happen.
        let record = conflict.map(|conflict| StoredConflict {
            recorded_unix_ms: conflict.recorded_unix_ms,
            local_version: conflict.local_version,
            incoming_version: conflict.incoming_version,
            entries: conflict
                .differing
                .iter()
                .map(|key| ConflictEntry {
                    key: key.key.clone(),
                    local: key.local.clone(),
                    incoming: key.incoming.clone(),
                })
                .collect(),
        });
        let snapshot = ConfigSnapshot {
            version,
            entries: entries
                .iter()
                .filter_map(|entry| entry.value.clone().map(|value| (entry.key.clone(), value)))
                .collect(),
        };
        Store::config_replace(self, &snapshot, record.as_ref())
            .map(|_| ())
            .map_err(fault)
    }

    fn conflicts(&self) -> Result<Vec<ConflictRecord>, StoreFault> {
        Ok(self
            .conflicts_list()
            .map_err(fault)?
            .into_iter()
            .map(|(_, record)| ConflictRecord {
                recorded_unix_ms: record.recorded_unix_ms,
                local_version: record.local_version,
                incoming_version: record.incoming_version,
                differing: record
                    .entries
                    .into_iter()
                    .map(|entry| DifferingKey {
                        key: entry.key,
                        local: entry.local,
                        incoming: entry.incoming,
                    })
                    .collect(),
            })
            .collect())
    }

    fn catalog_answer(&self, query: &CatalogQuery) -> Result<CatalogAnswer, StoreFault> {
        let response = self
            .summary_answer(&request_from_wire(query))
            .map_err(fault)?;
        let (origins, ranges) = response_to_wire(response);
        Ok(CatalogAnswer {
            query: query.query,
            part: query.part,
            parts: query.parts,
            origins,
            ranges,
        })
    }

    fn catalog_start(&self, diff: &mut CatalogDiff) -> CatalogQuery {
        let request = diff.reconciler.start();
        diff.asked_origins = matches!(request, SummaryRequest::Origins);
        request_to_wire(request)
    }

    fn catalog_step(
        &self,
        diff: &mut CatalogDiff,
        answer: &CatalogAnswer,
    ) -> Result<Option<CatalogQuery>, StoreFault> {
        let response = response_from_wire(answer, diff.asked_origins);
        let next = self
            .summary_step(&mut diff.reconciler, &response)
            .map_err(fault)?;
        Ok(next.map(|request| {
            diff.asked_origins = matches!(request, SummaryRequest::Origins);
            request_to_wire(request)
        }))
    }

    fn catalog_finish(&self, diff: CatalogDiff) -> CatalogComparison {
        let (differences, _) = diff.reconciler.finish();
        CatalogComparison {
            missing_here: differences.only_theirs,
            conflicting: differences.different_roots,
        }
    }

    fn session_count(&self) -> Result<u64, StoreFault> {
        self.catalog_len().map_err(fault)
    }

    fn session_header(&self, id: SessionId) -> Result<Option<SessionHeader>, StoreFault> {
        let Some(meta) = self.catalog_get(&id).map_err(fault)? else {
            return Ok(None);
        };
        let chunk_chaining_values = self.chunk_chaining_values(&id).map_err(fault)?;
        Ok(Some(SessionHeader {
            meta,
            chunk_chaining_values,
        }))
    }

    fn read_chunk(&self, id: SessionId, index: u32) -> Result<Bytes, ReadRefusal> {
        Store::read_chunk(self, &id, u64::from(index)).map_err(|error| match error {
            StoreError::NotFound { .. } | StoreError::InvalidInput { .. } => ReadRefusal::Absent,
            StoreError::ChunkCorrupt { .. }
            | StoreError::CorruptRecord { .. }
            | StoreError::InvalidRecording { .. } => ReadRefusal::Corrupt(error.to_string()),
            other if other.is_terminal() => ReadRefusal::Fault(fault(other)),
            other => ReadRefusal::Corrupt(other.to_string()),
        })
    }

    fn begin_incoming(&mut self, header: &SessionHeader) -> Result<Vec<bool>, IncomingRefusal> {
        let id = header.meta.id;
        let outcome =
            Store::begin_incoming(self, &header.meta, header.chunk_chaining_values.clone())
                .map_err(|error| match error {
                    StoreError::IdConflict { existing_root, .. } => IncomingRefusal::IdConflict {
                        local_root: existing_root,
                    },
                    StoreError::InvalidRecording { problem, .. } => {
                        IncomingRefusal::BadChainingValues(problem)
                    }
                    other if other.is_terminal() => IncomingRefusal::Fault(fault(other)),
                    other => IncomingRefusal::BadMeta(other.to_string()),
                })?;
        match outcome {
            BeginOutcome::AlreadyComplete => Ok(vec![true; header.chunk_chaining_values.len()]),
            BeginOutcome::Started | BeginOutcome::Resumed { .. } => {
                self.durable_chunks(&id).map_err(|error| {
                    if error.is_terminal() {
                        IncomingRefusal::Fault(fault(error))
                    } else {
                        IncomingRefusal::BadMeta(error.to_string())
                    }
                })
            }
        }
    }

    fn write_chunk(
        &mut self,
        id: SessionId,
        index: u32,
        data: &[u8],
        subtree_cv: Option<[u8; 32]>,
    ) -> Result<(), ChunkRefusal> {
        Store::write_chunk_hashed(self, &id, u64::from(index), data, subtree_cv)
            .map(|_| ())
            .map_err(|error| match error {
                StoreError::NotFound { .. } => ChunkRefusal::Unknown,
                other if other.is_terminal() => ChunkRefusal::Fault(fault(other)),
                other => ChunkRefusal::Rejected(other.to_string()),
            })
    }

    fn begin_sync(&mut self, id: SessionId) -> Result<Option<u64>, StoreFault> {
        match Store::begin_sync(self, &id) {
            Ok(ticket) => Ok(ticket),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(error) => Err(fault(error)),
        }
    }

    fn finish_sync(
        &mut self,
        id: SessionId,
        ticket: u64,
        outcome: Result<(), StoreFault>,
    ) -> Result<(), StoreFault> {
        // A sync that failed stops the store like any failed fsync; the fault came from this
        // store's own work, so it is terminal whatever its flag says.
        let outcome = outcome.map_err(|fault| StoreError::Io {
            context: "syncing a recording".to_string(),
            kind: std::io::ErrorKind::Other,
            message: fault.message,
        });
        Store::finish_sync(self, &id, ticket, outcome).map_err(fault)
    }

    fn publish(&mut self, id: SessionId) -> Result<SessionMeta, StoreFault> {
        match Store::publish(self, &id) {
            Ok(meta) => Ok(meta),
            // Already complete (found complete when the transfer began, or published by a
            // reopen): nothing left to do.
            Err(StoreError::NotFound { .. }) => match self.catalog_get(&id).map_err(fault)? {
                Some(meta) => Ok(meta),
                None => Err(StoreFault {
                    message: format!(
                        "session {}#{} vanished before publishing",
                        id.origin, id.sequence
                    ),
                    terminal: false,
                }),
            },
            Err(error) => Err(fault(error)),
        }
    }
}
