//! What the replica state machine needs from persistent storage, in the protocol's own terms.
//!
//! The replica never touches a disk: it asks a [`ReplicaStore`]. The real implementation is the
//! crash-safe [`crate::store::Store`] (on a real disk for the tokio driver, on a simulated disk
//! for the simulator); the trait keeps the state machine's needs in one place and speaks wire
//! types, so no conversion logic leaks into the protocol code.

use std::fmt;

use bytes::Bytes;
use dyad_wire::{
    CatalogAnswer, CatalogQuery, ConfigEntry, ConfigVersion, Epoch, SessionHeader, SessionId,
    SessionMeta,
};

/// A local storage failure. `terminal` failures (a failed write or fsync) mean the store
/// refuses all further work until the appliance restarts and reopens it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreFault {
    pub message: String,
    pub terminal: bool,
}

impl fmt::Display for StoreFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terminal {
            write!(
                f,
                "local storage failed and is stopped until restart: {}",
                self.message
            )
        } else {
            write!(f, "local storage error: {}", self.message)
        }
    }
}

/// A configuration replaced by the primary's, saved first so nothing is dropped silently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictRecord {
    pub recorded_unix_ms: u64,
    pub local_version: ConfigVersion,
    pub incoming_version: ConfigVersion,
    /// Every key whose value differs.
    pub differing: Vec<DifferingKey>,
}

/// One key of a [`ConflictRecord`] with both values (`None`: absent on that side).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DifferingKey {
    pub key: String,
    pub local: Option<Vec<u8>>,
    pub incoming: Option<Vec<u8>>,
}

/// What comparing the peer's catalog with the local one found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatalogComparison {
    /// Sessions the peer holds and this appliance lacks.
    pub missing_here: Vec<SessionId>,
    /// Sessions both hold under the same id with different content: refused, reported.
    pub conflicting: Vec<SessionId>,
}

/// Why an incoming recording could not be started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IncomingRefusal {
    /// The id is already present with a different content hash.
    IdConflict {
        local_root: [u8; 32],
    },
    /// The chunk chaining values do not authenticate to the session's root (a peer fault).
    BadChainingValues(String),
    /// The metadata is impossible (sizes, chunk size); a peer fault.
    BadMeta(String),
    Fault(StoreFault),
}

/// Why a chunk was not written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkRefusal {
    /// The data does not hash to the chunk's chaining value (or the index is out of range):
    /// the peer sent bad bytes; nothing was written.
    Rejected(String),
    /// No partial recording with that id is open.
    Unknown,
    Fault(StoreFault),
}

/// Why a chunk could not be read for sending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadRefusal {
    /// The recording is absent here.
    Absent,
    /// The bytes on disk no longer verify; the recording is marked for re-fetch.
    Corrupt(String),
    Fault(StoreFault),
}

/// The replica's view of persistent storage. All methods are synchronous; the tokio driver
/// calls the replica from a thread where blocking on the disk is acceptable.
pub trait ReplicaStore {
    /// The failure that stopped the store, if one did, including in work the replica did not
    /// route (an import of a local session): status shows it at once, not at the next sync.
    fn stopped(&self) -> Option<StoreFault>;
    /// The replica's own persisted state (role, epoch, peer, last sync), opaque bytes.
    fn load_replica_state(&self) -> Result<Option<Vec<u8>>, StoreFault>;
    /// Replaces the replica's persisted state durably.
    fn save_replica_state(&mut self, bytes: &[u8]) -> Result<(), StoreFault>;

    fn config_version(&self) -> Result<ConfigVersion, StoreFault>;
    fn config_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreFault>;
    /// Sets (`Some`) or deletes (`None`) a key under `epoch`, returning the new version.
    fn config_write(
        &mut self,
        key: &str,
        value: Option<&[u8]>,
        epoch: Epoch,
    ) -> Result<ConfigVersion, StoreFault>;
    /// The changes after `since`, oldest first, if `since` is a version this store's history
    /// holds (or the initial version); `None` when only a full snapshot can bring a replica at
    /// `since` up to date.
    fn config_changes_since(
        &self,
        since: ConfigVersion,
    ) -> Result<Option<Vec<ConfigEntry>>, StoreFault>;
    /// Every key with its value, and the version they are as of.
    fn config_snapshot(&self) -> Result<(ConfigVersion, Vec<ConfigEntry>), StoreFault>;
    /// Applies changes received from the primary, atomically.
    fn config_apply_changes(&mut self, changes: &[ConfigEntry]) -> Result<(), StoreFault>;
    /// Replaces the whole configuration with `entries` as of `version`, atomically, saving
    /// `conflict` first in the same transaction when given.
    fn config_replace(
        &mut self,
        version: ConfigVersion,
        entries: &[ConfigEntry],
        conflict: Option<&ConflictRecord>,
    ) -> Result<(), StoreFault>;
    fn conflicts(&self) -> Result<Vec<ConflictRecord>, StoreFault>;

    /// The state of one catalog comparison driven by this appliance.
    type CatalogDiff: Default;

    /// Answers (one part of) a peer's catalog question from the local catalog.
    fn catalog_answer(&self, query: &CatalogQuery) -> Result<CatalogAnswer, StoreFault>;
    /// The first question of a comparison (its `query` and `part` fields are the caller's).
    fn catalog_start(&self, diff: &mut Self::CatalogDiff) -> CatalogQuery;
    /// Takes the peer's whole answer to the last question (all parts joined, in order) and
    /// returns the next question, or `None` when the comparison is complete. A non-terminal
    /// fault means the peer's answer broke the protocol.
    fn catalog_step(
        &self,
        diff: &mut Self::CatalogDiff,
        answer: &CatalogAnswer,
    ) -> Result<Option<CatalogQuery>, StoreFault>;
    /// What a complete comparison found.
    fn catalog_finish(&self, diff: Self::CatalogDiff) -> CatalogComparison;
    fn session_count(&self) -> Result<u64, StoreFault>;

    /// A complete, verified session's metadata and chunk chaining values.
    fn session_header(&self, id: SessionId) -> Result<Option<SessionHeader>, StoreFault>;
    /// Reads one chunk of a complete recording, verified against its chaining value.
    fn read_chunk(&self, id: SessionId, index: u32) -> Result<Bytes, ReadRefusal>;

    /// Starts (or resumes) receiving a recording; returns which chunks are already durable.
    fn begin_incoming(&mut self, header: &SessionHeader) -> Result<Vec<bool>, IncomingRefusal>;
    /// Verifies one chunk against the recording's chaining values, then writes it.
    /// `subtree_cv`, when given, is the chunk's `store::tree::chunk_subtree_cv`, computed
    /// locally by the driver from these very bytes (never a peer's claim): the store then
    /// compares it instead of hashing the chunk again.
    fn write_chunk(
        &mut self,
        id: SessionId,
        index: u32,
        data: &[u8],
        subtree_cv: Option<[u8; 32]>,
    ) -> Result<(), ChunkRefusal>;
    /// Hands the chunks written so far for `id` to a sync the driver runs off the replica's
    /// thread ([`super::Action::SyncIncoming`]); returns its ticket, or `None` when no chunk
    /// is waiting. Until [`ReplicaStore::finish_sync`] they may be lost by a crash.
    fn begin_sync(&mut self, id: SessionId) -> Result<Option<u64>, StoreFault>;
    /// Takes the outcome of the sync of `ticket` ([`super::Event::Synced`]): its chunks are
    /// durable, or the store stops on the failure.
    fn finish_sync(
        &mut self,
        id: SessionId,
        ticket: u64,
        outcome: Result<(), StoreFault>,
    ) -> Result<(), StoreFault>;
    /// Makes a fully received recording durable and visible, atomically.
    fn publish(&mut self, id: SessionId) -> Result<SessionMeta, StoreFault>;
}
