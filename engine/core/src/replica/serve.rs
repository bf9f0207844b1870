//! The serving side of a sync: answering the peer's configuration pulls, catalog questions and
//! recording fetches from the local store.
//!
//! Serving keeps no per-request state: every answer is computed from the store when asked, and
//! chunks are read (and verified) one by one as requested, so a peer's window bounds what is in
//! memory, and a restart of either side loses nothing but the requests in flight.

use dyad_wire::{
    ConfigEntry, ConfigPull, ConfigUpdate, FetchChunks, FetchSession, Message, ReasonCode, Role,
    SessionUnavailable, SyncDone, SyncNow,
};

use super::job::Waiter;
use super::ports::{ReadRefusal, ReplicaStore, StoreFault};
use super::types::{CommandError, ConnId};
use super::{PeerSyncNow, Replica};

/// Configuration entries are sent in pages of about this many bytes.
const CONFIG_PAGE_BYTES: usize = 1024 * 1024;

impl<S: ReplicaStore> Replica<S> {
    /// A message on the relationship's link.
    pub(super) fn on_peer_message(&mut self, now_unix_ms: u64, conn: ConnId, message: Message) {
        match message {
            Message::ConfigPull(pull) => self.serve_config(conn, pull),
            Message::CatalogQuery(query) => match self.store.catalog_answer(&query) {
                Ok(answer) => self.send(conn, Message::CatalogAnswer(answer)),
                Err(fault) => self.serve_fault(conn, fault),
            },
            Message::FetchSession(fetch) => self.serve_session(conn, fetch),
            Message::FetchChunks(fetch) => self.serve_chunks(conn, fetch),
            Message::SyncNow(SyncNow { request }) => {
                // The peer runs its own part of this Sync Now, pulling from here, and reports
                // it with a SyncDone of the same number.
                self.peer_sync_nows.insert(
                    request,
                    PeerSyncNow {
                        conn,
                        received_unix_ms: now_unix_ms,
                    },
                );
                // Numbers of Sync Nows issued here from now on differ from the peer's so far,
                // so that its SyncDones are rarely ambiguous.
                self.next_request = self.next_request.max(request.saturating_add(1));
                match &mut self.job {
                    Some(job) if job.conn == conn => {
                        job.waiters.push(Waiter::Peer { conn, request })
                    }
                    Some(_) => {
                        // A job on another link cannot exist while this one is the peer link.
                    }
                    None => self.start_job(now_unix_ms, conn, Some(Waiter::Peer { conn, request })),
                }
            }
            Message::SyncDone(done) => self.on_sync_done(conn, done),
            Message::ConfigUpdate(update) => self.on_config_update(now_unix_ms, conn, update),
            Message::CatalogAnswer(answer) => self.on_catalog_answer(now_unix_ms, conn, answer),
            Message::SessionHeader(header) => self.on_session_header(now_unix_ms, conn, header),
            Message::SessionUnavailable(SessionUnavailable { id, text }) => {
                self.on_session_unavailable(now_unix_ms, conn, id, text)
            }
            Message::Chunk(chunk) => self.on_chunk(
                now_unix_ms,
                conn,
                chunk.session,
                chunk.chunk_index,
                chunk.data,
            ),
            // Handled before the link kind is looked at.
            Message::Hello(_)
            | Message::Error(_)
            | Message::KeepAlive(_)
            | Message::KeyProof(_)
            | Message::Establish(_)
            | Message::EstablishReply(_)
            | Message::Break(_)
            | Message::Successor(_)
            | Message::RoleSwap(_)
            | Message::RoleSwapReply(_)
            | Message::PromotePeer(_)
            | Message::StateReport(_) => {}
        }
    }

    /// A SyncDone is either the peer's part of a Sync Now it asked for (sent when that part
    /// ended, before any answer to a Sync Now of ours with the same number could be), or the
    /// answer to one issued here.
    fn on_sync_done(&mut self, conn: ConnId, done: SyncDone) {
        if self
            .peer_sync_nows
            .get(&done.request)
            .is_some_and(|asked| asked.conn == conn)
        {
            self.peer_sync_nows.remove(&done.request);
            return;
        }
        let id = self
            .sync_now_commands
            .iter()
            .find(|(_, command)| command.request == done.request)
            .map(|(id, _)| *id);
        let Some(id) = id else { return };
        let outcome = if done.refusal_code == 0 {
            Ok(done.text)
        } else {
            Err(CommandError::Peer(format!(
                "the peer's sync failed: {}",
                done.text
            )))
        };
        self.resolve_sync_now(id, None, Some(outcome));
    }

    fn serve_config(&mut self, conn: ConnId, pull: ConfigPull) {
        if self.state.role != Role::Primary || pull.epoch != self.state.epoch {
            let text = format!(
                "configuration is served by the primary of epoch {}; this appliance is {} in epoch {}",
                pull.epoch,
                dyad_wire::Role::name(self.state.role),
                self.state.epoch
            );
            self.send(
                conn,
                Message::Error(dyad_wire::ErrorMessage::new(ReasonCode::StaleEpoch, text)),
            );
            return;
        }
        let (full, version, entries) = match self.store.config_changes_since(pull.since) {
            Ok(Some(changes)) => match self.store.config_version() {
                Ok(version) => (false, version, changes),
                Err(fault) => return self.serve_fault(conn, fault),
            },
            Ok(None) => match self.store.config_snapshot() {
                Ok((version, entries)) => (true, version, entries),
                Err(fault) => return self.serve_fault(conn, fault),
            },
            Err(fault) => return self.serve_fault(conn, fault),
        };
        let epoch = self.state.epoch;
        let mut pages: Vec<Vec<ConfigEntry>> = vec![Vec::new()];
        let mut page_bytes = 0usize;
        for entry in entries {
            let entry_bytes = entry.key.len() + entry.value.as_ref().map_or(0, Vec::len) + 64;
            if page_bytes + entry_bytes > CONFIG_PAGE_BYTES
                && !pages.last().is_some_and(Vec::is_empty)
            {
                pages.push(Vec::new());
                page_bytes = 0;
            }
            page_bytes += entry_bytes;
            if let Some(page) = pages.last_mut() {
                page.push(entry);
            }
        }
        let page_count = pages.len();
        for (index, entries) in pages.into_iter().enumerate() {
            self.send(
                conn,
                Message::ConfigUpdate(ConfigUpdate {
                    epoch,
                    full,
                    snapshot_version: version,
                    entries,
                    last_page: index + 1 == page_count,
                }),
            );
        }
    }

    fn serve_session(&mut self, conn: ConnId, fetch: FetchSession) {
        match self.store.session_header(fetch.id) {
            Ok(Some(header)) => self.send(conn, Message::SessionHeader(header)),
            Ok(None) => self.send(
                conn,
                Message::SessionUnavailable(SessionUnavailable {
                    id: fetch.id,
                    text: "not held by this appliance".into(),
                }),
            ),
            Err(fault) => self.serve_fault(conn, fault),
        }
    }

    fn serve_chunks(&mut self, conn: ConnId, fetch: FetchChunks) {
        for index in fetch.chunk_indexes {
            match self.store.read_chunk(fetch.id, index) {
                Ok(data) => {
                    self.count_sent(fetch.id, index, data.len() as u64);
                    self.send(
                        conn,
                        Message::Chunk(dyad_wire::Chunk {
                            session: fetch.id,
                            chunk_index: index,
                            data,
                        }),
                    );
                }
                Err(refusal) => {
                    let text = match refusal {
                        ReadRefusal::Absent => "not held by this appliance".to_string(),
                        ReadRefusal::Corrupt(why) => format!("its recording failed verification here ({why}) and is marked for re-fetch"),
                        ReadRefusal::Fault(fault) => {
                            self.note_fault(&fault);
                            fault.to_string()
                        }
                    };
                    self.send(
                        conn,
                        Message::SessionUnavailable(SessionUnavailable { id: fetch.id, text }),
                    );
                    return;
                }
            }
        }
    }

    fn count_sent(&mut self, id: dyad_wire::SessionId, index: u32, len: u64) {
        self.counters.bytes_sent += len;
        let sent = self.chunks_sent.entry(id).or_default();
        let slot = index as usize;
        if sent.len() <= slot {
            sent.resize(slot + 1, false);
        }
        if sent[slot] {
            self.counters.bytes_resent += len;
        }
        sent[slot] = true;
    }

    fn serve_fault(&mut self, conn: ConnId, fault: StoreFault) {
        self.note_fault(&fault);
        let text = format!("the peer could not read its store: {}", fault.message);
        self.send(
            conn,
            Message::Error(dyad_wire::ErrorMessage::new(ReasonCode::Internal, text)),
        );
    }
}
