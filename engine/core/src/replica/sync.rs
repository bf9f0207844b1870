//! The pulling side of a sync: configuration (on a backup), then the catalog comparison, then
//! the recordings this appliance lacks, chunk by chunk inside a bounded window.
//!
//! Both appliances pull: the backup pulls configuration and sessions from the primary, and the
//! primary pulls the sessions only the backup holds (completed there while failover was down),
//! so that after a sync both hold the union. Resumption needs no bookkeeping of its own: a
//! transfer asks the store which chunks are already durable and requests only the others, so an
//! interruption costs at most the chunks that were in flight.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use dyad_wire::limits::MAX_CATALOG_RANGES;
use dyad_wire::{
    CatalogAnswer, CatalogQuery, ConfigEntry, ConfigPull, ConfigUpdate, FetchChunks, FetchSession,
    Message, Role, SessionHeader, SessionId, SyncDone,
};

use super::job::{Phase, SyncJob, Transfer, Waiter};
use super::ports::{
    ChunkRefusal, ConflictRecord, DifferingKey, IncomingRefusal, ReplicaStore, StoreFault,
};
use super::report::{Lag, LagKnowledge};
use super::state::SyncRecord;
use super::types::{Action, CommandError, CommandId, ConnId, SyncProgress};
use super::Replica;
use dyad_wire::limits::MAX_CHUNKS_PER_FETCH;

/// A chunk that fails verification is asked for again this many times before the session is
/// given up for this sync (a peer that keeps sending bad bytes is faulty, not unlucky).
const CHUNK_RETRIES_MAX: u32 = 3;
/// Progress is reported to waiting commands at most once per this many bytes.
const PROGRESS_STEP_BYTES: u64 = 8 * 1024 * 1024;

impl<S: ReplicaStore> Replica<S> {
    pub(super) fn start_job(&mut self, now_unix_ms: u64, conn: ConnId, waiter: Option<Waiter>) {
        let pull_config = self.state.role == Role::Backup;
        let mut job = SyncJob {
            conn,
            waiters: waiter.into_iter().collect(),
            phase: Phase::Catalog,
            diff: None,
            query: 0,
            answer_parts: BTreeMap::new(),
            answer_parts_expected: 0,
            full_config: Vec::new(),
            queue: VecDeque::new(),
            transfers: BTreeMap::new(),
            in_flight_chunks: 0,
            progress: SyncProgress {
                phase: "catalog",
                started_unix_ms: now_unix_ms,
                ..SyncProgress::default()
            },
            progress_reported_bytes: 0,
            failures: Vec::new(),
            oldest_missing_unix_ms: None,
            compared_unix_ms: None,
        };
        if pull_config {
            let since = match self.store.config_version() {
                Ok(version) => version,
                Err(fault) => {
                    self.note_fault(&fault);
                    self.job = Some(job);
                    self.finish_job(now_unix_ms, Err(CommandError::Local(fault.to_string())));
                    return;
                }
            };
            job.phase = Phase::Config;
            job.progress.phase = "configuration";
            self.job = Some(job);
            self.send(
                conn,
                Message::ConfigPull(ConfigPull {
                    epoch: self.state.epoch,
                    since,
                }),
            );
        } else {
            self.job = Some(job);
            self.start_catalog(conn);
        }
    }

    fn start_catalog(&mut self, conn: ConnId) {
        let mut diff = S::CatalogDiff::default();
        let question = self.store.catalog_start(&mut diff);
        if let Some(job) = &mut self.job {
            job.phase = Phase::Catalog;
            job.progress.phase = "catalog";
            job.diff = Some(diff);
        }
        self.ask_catalog(conn, question);
    }

    /// Sends a catalog question, in as many parts as the frame limit needs.
    fn ask_catalog(&mut self, conn: ConnId, question: CatalogQuery) {
        let query = self.next_request();
        let pieces: Vec<Vec<dyad_wire::CatalogRange>> = if question.ranges.is_empty() {
            vec![Vec::new()]
        } else {
            question
                .ranges
                .chunks(MAX_CATALOG_RANGES)
                .map(<[_]>::to_vec)
                .collect()
        };
        let parts = pieces.len() as u32;
        if let Some(job) = &mut self.job {
            job.query = query;
            job.answer_parts.clear();
            job.answer_parts_expected = parts;
        }
        for (part, ranges) in pieces.into_iter().enumerate() {
            let message = CatalogQuery {
                query,
                part: part as u32,
                parts,
                origins: question.origins,
                ranges,
            };
            self.send(conn, Message::CatalogQuery(message));
        }
    }

    fn job_on(&self, conn: ConnId, phase: Phase) -> bool {
        self.job
            .as_ref()
            .is_some_and(|job| job.conn == conn && job.phase == phase)
    }

    pub(super) fn on_config_update(
        &mut self,
        now_unix_ms: u64,
        conn: ConnId,
        update: ConfigUpdate,
    ) {
        if !self.job_on(conn, Phase::Config) {
            return;
        }
        if update.epoch != self.state.epoch {
            let text = format!(
                "the primary answered in epoch {} but this backup is in epoch {}; refusing its configuration",
                update.epoch, self.state.epoch
            );
            self.finish_job(now_unix_ms, Err(CommandError::Peer(text)));
            return;
        }
        let count = update.entries.len() as u64;
        if let Some(job) = &mut self.job {
            job.progress.config_entries += count;
        }
        if update.full {
            if let Some(job) = &mut self.job {
                job.full_config.extend(update.entries);
            }
            if !update.last_page {
                return;
            }
            let entries = self
                .job
                .as_mut()
                .map(|job| std::mem::take(&mut job.full_config))
                .unwrap_or_default();
            if let Err(error) = self.replace_config(now_unix_ms, update.snapshot_version, &entries)
            {
                self.finish_job(now_unix_ms, Err(error));
                return;
            }
        } else if let Err(fault) = self.store.config_apply_changes(&update.entries) {
            self.note_fault(&fault);
            self.finish_job(now_unix_ms, Err(CommandError::Local(fault.to_string())));
            return;
        }
        if update.last_page {
            self.start_catalog(conn);
        }
    }

    /// Replaces the local configuration by the primary's, saving a conflict record first when
    /// the two differ, in the same transaction.
    fn replace_config(
        &mut self,
        now_unix_ms: u64,
        version: dyad_wire::ConfigVersion,
        entries: &[ConfigEntry],
    ) -> Result<(), CommandError> {
        let local = self.store.config_snapshot().map_err(|fault| {
            self.note_fault(&fault);
            CommandError::Local(fault.to_string())
        })?;
        let (local_version, local_entries) = local;
        let local_map: BTreeMap<&str, Option<&Vec<u8>>> = local_entries
            .iter()
            .map(|entry| (entry.key.as_str(), entry.value.as_ref()))
            .collect();
        let incoming_map: BTreeMap<&str, Option<&Vec<u8>>> = entries
            .iter()
            .map(|entry| (entry.key.as_str(), entry.value.as_ref()))
            .collect();
        let keys: BTreeSet<&str> = local_map
            .keys()
            .chain(incoming_map.keys())
            .copied()
            .collect();
        let differing: Vec<DifferingKey> = keys
            .into_iter()
            .filter_map(|key| {
                let local_value = local_map.get(key).copied().flatten();
                let incoming_value = incoming_map.get(key).copied().flatten();
                (local_value != incoming_value).then(|| DifferingKey {
                    key: key.to_string(),
                    local: local_value.cloned(),
                    incoming: incoming_value.cloned(),
                })
            })
            .collect();
        let conflict = (!differing.is_empty()).then_some(ConflictRecord {
            recorded_unix_ms: now_unix_ms,
            local_version,
            incoming_version: version,
            differing,
        });
        self.store
            .config_replace(version, entries, conflict.as_ref())
            .map_err(|fault| {
                self.note_fault(&fault);
                CommandError::Local(fault.to_string())
            })?;
        if conflict.is_some() {
            if let Some(job) = &mut self.job {
                job.progress.conflicts_recorded += 1;
            }
        }
        Ok(())
    }

    pub(super) fn on_catalog_answer(
        &mut self,
        now_unix_ms: u64,
        conn: ConnId,
        answer: CatalogAnswer,
    ) {
        if !self.job_on(conn, Phase::Catalog) {
            return;
        }
        let Some(job) = &mut self.job else { return };
        if job.query != answer.query
            || answer.parts != job.answer_parts_expected
            || answer.part >= answer.parts
        {
            return;
        }
        job.answer_parts.insert(answer.part, answer);
        if job.answer_parts.len() < job.answer_parts_expected as usize {
            return;
        }
        let mut whole = CatalogAnswer {
            query: job.query,
            part: 0,
            parts: 1,
            origins: Vec::new(),
            ranges: Vec::new(),
        };
        for (_, part) in std::mem::take(&mut job.answer_parts) {
            whole.origins.extend(part.origins);
            whole.ranges.extend(part.ranges);
        }
        let Some(mut diff) = job.diff.take() else {
            return;
        };
        let step = self.store.catalog_step(&mut diff, &whole);
        match step {
            Ok(Some(question)) => {
                if let Some(job) = &mut self.job {
                    job.diff = Some(diff);
                }
                self.ask_catalog(conn, question);
            }
            Ok(None) => {
                let comparison = self.store.catalog_finish(diff);
                let Some(job) = &mut self.job else { return };
                for id in comparison.conflicting {
                    job.failures.push(format!(
                        "session {}#{} has different content on the two appliances; refused, not merged",
                        id.origin, id.sequence
                    ));
                }
                let mut missing_here = comparison.missing_here;
                // Planted bug (test builds only, see `planted`): the primary skips its half of
                // reconciliation, the sessions only its backup holds.
                if crate::planted_bug!(ReconcileOneWay) && self.state.role == Role::Primary {
                    missing_here.clear();
                }
                let Some(job) = &mut self.job else { return };
                job.compared_unix_ms = Some(now_unix_ms);
                job.progress.sessions_total += missing_here.len() as u64;
                job.queue.extend(missing_here);
                job.phase = Phase::Transfer;
                job.progress.phase = "transfer";
                self.pump(now_unix_ms);
            }
            Err(fault) => {
                self.note_fault(&fault);
                let error = if fault.terminal {
                    CommandError::Local(fault.to_string())
                } else {
                    CommandError::Peer(format!(
                        "the peer's catalog answer was refused: {}",
                        fault.message
                    ))
                };
                self.finish_job(now_unix_ms, Err(error));
            }
        }
    }

    /// Keeps the transfer window full: asks for headers of the next sessions and for chunks of
    /// started ones, and finishes the job when nothing is left.
    fn pump(&mut self, now_unix_ms: u64) {
        let concurrent_max = self.config.concurrent_transfers_max.max(1);
        let window = self.config.window_chunks.clamp(1, MAX_CHUNKS_PER_FETCH);
        let Some(job) = &mut self.job else { return };
        if job.phase != Phase::Transfer {
            return;
        }
        let conn = job.conn;
        let mut messages = Vec::new();
        while job.transfers.len() < concurrent_max {
            let Some(id) = job.queue.pop_front() else {
                break;
            };
            job.transfers.insert(
                id,
                Transfer {
                    pending: VecDeque::new(),
                    in_flight: BTreeSet::new(),
                    remaining: 0,
                    retries: 0,
                    started: false,
                    unsynced: 0,
                    syncing: 0,
                    sync_ticket: None,
                },
            );
            messages.push(Message::FetchSession(FetchSession { id }));
        }
        for (id, transfer) in job.transfers.iter_mut() {
            if !transfer.started || transfer.pending.is_empty() {
                continue;
            }
            let room = window.saturating_sub(job.in_flight_chunks);
            if room == 0 {
                break;
            }
            let take = room.min(transfer.pending.len());
            let chunk_indexes: Vec<u32> = transfer.pending.drain(..take).collect();
            transfer.in_flight.extend(chunk_indexes.iter().copied());
            job.in_flight_chunks += take;
            debug_assert!(
                job.in_flight_chunks <= window,
                "asked for more chunks than the window holds"
            );
            messages.push(Message::FetchChunks(FetchChunks {
                id: *id,
                chunk_indexes,
            }));
        }
        let done = job.queue.is_empty() && job.transfers.is_empty();
        for message in messages {
            self.send(conn, message);
        }
        if done {
            self.finish_job(now_unix_ms, Ok(()));
        }
    }

    pub(super) fn on_session_header(
        &mut self,
        now_unix_ms: u64,
        conn: ConnId,
        header: SessionHeader,
    ) {
        if !self.job_on(conn, Phase::Transfer) {
            return;
        }
        let id = header.meta.id;
        let awaiting = self
            .job
            .as_ref()
            .and_then(|job| job.transfers.get(&id))
            .is_some_and(|transfer| !transfer.started);
        if !awaiting {
            return;
        }
        match self.store.begin_incoming(&header) {
            Ok(durable) => {
                let Some(job) = &mut self.job else { return };
                job.oldest_missing_unix_ms = Some(
                    job.oldest_missing_unix_ms
                        .map_or(header.meta.ended_unix_ms, |oldest| {
                            oldest.min(header.meta.ended_unix_ms)
                        }),
                );
                job.progress.bytes_total += header.meta.size_bytes;
                let Some(transfer) = job.transfers.get_mut(&id) else {
                    return;
                };
                transfer.started = true;
                transfer.pending = durable
                    .iter()
                    .enumerate()
                    .filter(|(_, durable)| !**durable)
                    .map(|(index, _)| index as u32)
                    .collect();
                transfer.remaining = transfer.pending.len();
                // Chunks that were already durable count as done for progress.
                let chunk_size = u64::from(header.meta.chunk_size_bytes.max(1));
                let durable_bytes: u64 = durable
                    .iter()
                    .enumerate()
                    .filter(|(_, durable)| **durable)
                    .map(|(index, _)| {
                        chunk_size.min(
                            header
                                .meta
                                .size_bytes
                                .saturating_sub(index as u64 * chunk_size),
                        )
                    })
                    .sum();
                job.progress.bytes_done += durable_bytes;
                if transfer.remaining == 0 {
                    self.publish_transfer(now_unix_ms, id);
                }
            }
            Err(IncomingRefusal::Fault(fault)) => {
                self.note_fault(&fault);
                self.finish_job(now_unix_ms, Err(CommandError::Local(fault.to_string())));
                return;
            }
            Err(refusal) => {
                let text = match refusal {
                    IncomingRefusal::IdConflict { local_root } => format!(
                        "session {}#{} arrived with content {} but is held here with content {}; refused, not merged",
                        id.origin,
                        id.sequence,
                        dyad_wire::hex::encode(&header.meta.root[..8]),
                        dyad_wire::hex::encode(&local_root[..8])
                    ),
                    IncomingRefusal::BadChainingValues(why) | IncomingRefusal::BadMeta(why) => {
                        format!("the peer sent an invalid header for session {}#{}: {why}", id.origin, id.sequence)
                    }
                    IncomingRefusal::Fault(_) => unreachable!("handled above"),
                };
                self.drop_transfer(id, text);
            }
        }
        self.pump(now_unix_ms);
    }

    pub(super) fn on_session_unavailable(
        &mut self,
        now_unix_ms: u64,
        conn: ConnId,
        id: SessionId,
        text: String,
    ) {
        if !self.job_on(conn, Phase::Transfer) {
            return;
        }
        self.drop_transfer(
            id,
            format!(
                "the peer cannot serve session {}#{}: {text}",
                id.origin, id.sequence
            ),
        );
        self.pump(now_unix_ms);
    }

    fn drop_transfer(&mut self, id: SessionId, why: String) {
        let Some(job) = &mut self.job else { return };
        if let Some(transfer) = job.transfers.remove(&id) {
            job.in_flight_chunks -= transfer.in_flight.len() + transfer.unsynced + transfer.syncing;
            job.failures.push(why);
        }
    }

    pub(super) fn on_chunk(
        &mut self,
        now_unix_ms: u64,
        conn: ConnId,
        id: SessionId,
        index: u32,
        data: Bytes,
    ) {
        if !self.job_on(conn, Phase::Transfer) {
            return;
        }
        let expected = self
            .job
            .as_ref()
            .and_then(|job| job.transfers.get(&id))
            .is_some_and(|transfer| transfer.in_flight.contains(&index));
        if !expected {
            // A late or duplicated chunk: already durable or no longer wanted.
            return;
        }
        let subtree_cv = self
            .received_chunk_cv
            .take()
            .filter(|(session, chunk_index, _)| *session == id && *chunk_index == index)
            .map(|(_, _, cv)| cv);
        let outcome = self.store.write_chunk(id, index, &data, subtree_cv);
        let Some(job) = &mut self.job else { return };
        let Some(transfer) = job.transfers.get_mut(&id) else {
            return;
        };
        transfer.in_flight.remove(&index);
        match outcome {
            Ok(()) => {
                transfer.remaining -= 1;
                transfer.unsynced += 1;
                job.progress.bytes_done += data.len() as u64;
                if !self.plan_syncs(now_unix_ms) {
                    return;
                }
                self.report_progress(false);
            }
            Err(ChunkRefusal::Rejected(why)) => {
                job.in_flight_chunks -= 1;
                transfer.retries += 1;
                if transfer.retries > CHUNK_RETRIES_MAX {
                    let text = format!(
                        "chunk {index} of session {}#{} kept failing verification: {why}",
                        id.origin, id.sequence
                    );
                    self.drop_transfer(id, text);
                } else {
                    transfer.pending.push_back(index);
                }
            }
            Err(ChunkRefusal::Unknown) => {
                job.in_flight_chunks -= 1;
                let text = format!(
                    "session {}#{} vanished from the partial recordings",
                    id.origin, id.sequence
                );
                self.drop_transfer(id, text);
            }
            Err(ChunkRefusal::Fault(fault)) => {
                self.note_fault(&fault);
                self.finish_job(now_unix_ms, Err(CommandError::Local(fault.to_string())));
                return;
            }
        }
        self.pump(now_unix_ms);
    }

    /// Starts the syncs the transfers need, off the replica's thread: a finished transfer's
    /// last chunks, and every transfer's written chunks once half the window waits on them
    /// (a sync frees those slots for new requests). Publishes finished transfers whose every
    /// chunk is durable. Returns false (after ending the job) on a storage fault.
    fn plan_syncs(&mut self, now_unix_ms: u64) -> bool {
        let window = self.config.window_chunks.clamp(1, MAX_CHUNKS_PER_FETCH);
        let Some(job) = &self.job else { return true };
        let unsynced_total: usize = job.transfers.values().map(|t| t.unsynced).sum();
        let pressing = unsynced_total * 2 >= window;
        let to_sync: Vec<SessionId> = job
            .transfers
            .iter()
            .filter(|(_, t)| {
                t.started
                    && t.sync_ticket.is_none()
                    && t.unsynced > 0
                    && (pressing || t.remaining == 0)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in to_sync {
            let begun = self.store.begin_sync(id);
            let Some(job) = &mut self.job else {
                return true;
            };
            let Some(transfer) = job.transfers.get_mut(&id) else {
                continue;
            };
            match begun {
                Ok(Some(ticket)) => {
                    transfer.syncing = transfer.unsynced;
                    transfer.unsynced = 0;
                    transfer.sync_ticket = Some(ticket);
                    self.actions.push_back(Action::SyncIncoming {
                        session: id,
                        ticket,
                    });
                }
                Ok(None) => {
                    // The store made them durable on its own already.
                    job.in_flight_chunks -= transfer.unsynced;
                    transfer.unsynced = 0;
                }
                Err(fault) => {
                    self.note_fault(&fault);
                    self.finish_job(now_unix_ms, Err(CommandError::Local(fault.to_string())));
                    return false;
                }
            }
        }
        let Some(job) = &self.job else { return true };
        let finished: Vec<SessionId> = job
            .transfers
            .iter()
            .filter(|(_, t)| {
                t.started && t.remaining == 0 && t.unsynced == 0 && t.sync_ticket.is_none()
            })
            .map(|(id, _)| *id)
            .collect();
        for id in finished {
            self.publish_transfer(now_unix_ms, id);
            if self.job.is_none() {
                return false;
            }
        }
        true
    }

    /// A sync asked for by [`Action::SyncIncoming`] finished: its chunks are durable, their
    /// window slots free.
    pub(super) fn on_synced(
        &mut self,
        now_unix_ms: u64,
        session: SessionId,
        ticket: u64,
        outcome: Result<(), StoreFault>,
    ) {
        if let Err(fault) = self.store.finish_sync(session, ticket, outcome) {
            self.note_fault(&fault);
            self.finish_job(now_unix_ms, Err(CommandError::Local(fault.to_string())));
            return;
        }
        let Some(job) = &mut self.job else { return };
        // A sync of an earlier job (the link broke meanwhile) frees nothing of this one's.
        if let Some(transfer) = job.transfers.get_mut(&session) {
            if transfer.sync_ticket == Some(ticket) {
                job.in_flight_chunks -= transfer.syncing;
                transfer.syncing = 0;
                transfer.sync_ticket = None;
            }
        }
        if job.phase != Phase::Transfer || !self.plan_syncs(now_unix_ms) {
            return;
        }
        self.report_progress(false);
        self.pump(now_unix_ms);
    }

    fn publish_transfer(&mut self, now_unix_ms: u64, id: SessionId) {
        match self.store.publish(id) {
            Ok(_) => {
                if let Some(job) = &mut self.job {
                    if let Some(transfer) = job.transfers.remove(&id) {
                        job.in_flight_chunks -= transfer.unsynced + transfer.syncing;
                    }
                    job.progress.sessions_done += 1;
                }
            }
            Err(fault) => {
                self.note_fault(&fault);
                if fault.terminal {
                    self.finish_job(now_unix_ms, Err(CommandError::Local(fault.to_string())));
                } else {
                    self.drop_transfer(
                        id,
                        format!(
                            "could not publish session {}#{}: {fault}",
                            id.origin, id.sequence
                        ),
                    );
                }
            }
        }
    }

    fn report_progress(&mut self, force: bool) {
        let Some(job) = &mut self.job else { return };
        if !force && job.progress.bytes_done < job.progress_reported_bytes + PROGRESS_STEP_BYTES {
            return;
        }
        job.progress_reported_bytes = job.progress.bytes_done;
        let progress = job.progress.clone();
        let commands: Vec<CommandId> = job
            .waiters
            .iter()
            .filter_map(|waiter| match waiter {
                Waiter::Command(id) => Some(*id),
                Waiter::Peer { .. } => None,
            })
            .collect();
        for command in commands {
            self.actions.push_back(Action::Progress {
                command,
                progress: progress.clone(),
            });
        }
    }

    /// Ends the running job, records its outcome and tells everyone who waited.
    pub(super) fn finish_job(&mut self, now_unix_ms: u64, result: Result<(), CommandError>) {
        self.end_job(now_unix_ms, result, false);
    }

    /// Ends the running job because its link was lost: recorded as interrupted, and nobody
    /// is told over that link.
    pub(super) fn interrupt_job(&mut self, now_unix_ms: u64, error: CommandError) {
        self.end_job(now_unix_ms, Err(error), true);
    }

    /// On the link's loss, when no job of this appliance's ran on it but a Sync Now did (the
    /// peer's part, of one it asked for since `since_unix_ms` or of one issued here): the sync
    /// is recorded as interrupted, not left as the success of this appliance's part.
    pub(super) fn record_cut_sync_now(&mut self, now_unix_ms: u64, since_unix_ms: u64, why: &str) {
        let previous = self.state.last_sync.clone();
        // This appliance's own part of the same Sync Now, if it finished, pulled these.
        let (sessions_pulled, bytes_pulled) = previous
            .as_ref()
            .filter(|record| record.finished_unix_ms >= since_unix_ms)
            .map_or((0, 0), |record| {
                (record.sessions_pulled, record.bytes_pulled)
            });
        self.state.last_sync = Some(SyncRecord {
            finished_unix_ms: now_unix_ms,
            succeeded: false,
            interrupted: true,
            text: format!(
                "the link to the peer was lost before the peer's part of the Sync Now finished: {why}"
            ),
            sessions_pulled,
            bytes_pulled,
            last_success_unix_ms: previous.and_then(|record| record.last_success_unix_ms),
        });
        self.lose_lag(None, now_unix_ms);
        if self.failed.is_none() {
            self.persist();
        }
    }

    fn end_job(&mut self, now_unix_ms: u64, result: Result<(), CommandError>, interrupted: bool) {
        self.report_progress(true);
        let Some(job) = self.job.take() else { return };
        let progress = job.progress.clone();
        let outcome: Result<String, CommandError> = match result {
            Ok(()) if job.failures.is_empty() => Ok(format!(
                "pulled {} sessions ({} bytes) and {} configuration entries in {} ms",
                progress.sessions_done,
                progress.bytes_done,
                progress.config_entries,
                now_unix_ms.saturating_sub(progress.started_unix_ms)
            )),
            Ok(()) => Err(CommandError::Peer(format!(
                "sync finished with {} problem(s): {}",
                job.failures.len(),
                job.failures.join("; ")
            ))),
            Err(error) => Err(error),
        };
        let last_success = match &outcome {
            Ok(_) => Some(now_unix_ms),
            Err(_) => self
                .state
                .last_sync
                .as_ref()
                .and_then(|record| record.last_success_unix_ms),
        };
        self.state.last_sync = Some(SyncRecord {
            finished_unix_ms: now_unix_ms,
            succeeded: outcome.is_ok(),
            interrupted,
            text: match &outcome {
                Ok(text) => text.clone(),
                Err(error) => error.to_string(),
            },
            sessions_pulled: progress.sessions_done,
            bytes_pulled: progress.bytes_done,
            last_success_unix_ms: last_success,
        });
        if outcome.is_ok() {
            let lag = Lag::after_sync(&job, &progress, now_unix_ms);
            self.lag = LagKnowledge::Known(lag);
        } else {
            self.lose_lag(job.compared_unix_ms, now_unix_ms);
        }
        if self.failed.is_none() {
            self.persist();
        }
        let (refusal_code, text) = match &outcome {
            Ok(text) => (0, text.clone()),
            Err(error) => (dyad_wire::ReasonCode::Internal.as_u16(), error.to_string()),
        };
        let done = |request| {
            Message::SyncDone(SyncDone {
                request,
                refusal_code,
                text: text.clone(),
                sessions_pulled: progress.sessions_done,
                bytes_pulled: progress.bytes_done,
            })
        };
        // The job's link, if it is still the relationship's: an interrupted job's is gone, and
        // a break unbinds it before stopping the job.
        let link = (!interrupted && self.peer_link() == Some(job.conn)).then_some(job.conn);
        for waiter in job.waiters {
            match waiter {
                Waiter::Command(id) => {
                    // The peer serves this Sync Now's part here and waits to hear it ended:
                    // otherwise losing the link later would look like cutting it off.
                    let request = self
                        .sync_now_commands
                        .get(&id)
                        .map(|command| command.request);
                    if let (Some(conn), Some(request)) = (link, request) {
                        self.send(conn, done(request));
                    }
                    self.resolve_sync_now(id, Some(outcome.clone()), None)
                }
                Waiter::Peer { conn, request } => self.send(conn, done(request)),
            }
        }
    }
}
