//! Recording bytes: plain files, visible only once every chunk verified and the file is
//! durable under its final name.
//!
//! A recording being received is a *partial*: its metadata and chunk chaining values sit in
//! the database (authenticated against the root before anything is written), its bytes in
//! `part-<id>.tmp`, and a bitmap in the database says which chunks are verified *and durable*
//! (a chunk's bit is committed only after the file was synced). Publishing runs: every chunk
//! durable → rename to `rec-<id>.dat` → sync the folder → move the record from the partials
//! to the catalog in one transaction. Opening the store reconciles files and records (see
//! [`recover`]), so a crash at any step leaves each recording complete, absent, or partial and
//! resumable. Reads verify every chunk; a chunk that fails verification or cannot be read
//! (a bad sector) makes the recording *damaged*: it leaves the catalog, is listed as damaged
//! with its bytes kept, is never served as complete, and is fetched again from a peer that
//! holds it (see [`DamagedInfo`]). Storage errors are classed in `docs/storage.md`: a failed
//! fsync poisons the store, a full disk refuses the write, a read error damages one recording.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dyad_wire::{NodeId, SessionId};
use redb::{ReadableDatabase, ReadableTable};

use super::catalog::allocate_local_id;
use super::error::{corrupt, db_error, StoreError};
use super::partial::OpenPartial;
use super::records::{
    decode_bitmap, decode_chaining_values, decode_partial, decode_session_key, decode_session_meta,
    encode_bitmap, encode_chaining_values, encode_partial, encode_session_meta, session_key,
    PartialRecord, SessionMeta,
};
use super::store::{check_not_failed, poison, FailureSlot, Inner, OpenReport, Store};
use super::tables::{PARTIALS, PARTIAL_CHUNKS, SESSIONS, SESSION_CVS};
use crate::disk::{DiskFile, OpenMode};
#[cfg(doc)]
use dyad_core::tree::chunk_subtree_cv;
use dyad_core::tree::{
    check_chaining_values, chunk_chaining_value, chunk_count, chunk_len, read_full,
    root_from_chaining_values, verify_chunk, verify_chunk_hashed, CHUNK_SIZE_BYTES,
    MAX_RECORDING_BYTES,
};

/// Chunks written to a partial before it is synced and their bits committed on its own;
/// bounds what a crash can make the peer send again.
pub const SYNC_EVERY_CHUNKS: u64 = 32;

impl OpenPartial {
    /// What an off-lock re-check of its durable chunks needs.
    fn snapshot(&self) -> PartialSnapshot {
        PartialSnapshot {
            file: Arc::clone(&self.file),
            cvs: self.record.cvs.clone(),
            size_bytes: self.record.meta.size_bytes,
            durable: self.durable.clone(),
        }
    }
}

/// A partial's file and chunk list at one moment, to re-read its durable chunks without the
/// store's lock (durable chunks are never rewritten, so the read races with nothing).
struct PartialSnapshot {
    file: Arc<dyn DiskFile>,
    cvs: Vec<[u8; 32]>,
    size_bytes: u64,
    durable: Vec<bool>,
}

impl PartialSnapshot {
    /// The durable chunks that fail to verify, and the bytes read.
    fn check_durable(&self) -> (BTreeSet<u64>, u64) {
        let durable = (0..self.durable.len() as u64).filter(|index| self.durable[*index as usize]);
        check_chunks(self.file.as_ref(), &self.cvs, self.size_bytes, durable)
    }
}

/// What reading one stored chunk found.
enum ChunkRead {
    Data(Vec<u8>),
    /// The file ends before the chunk does.
    Short,
    /// The disk refused the read (`EIO` from a bad sector): damage to this recording.
    Unreadable,
}

/// Re-reads and verifies the given chunks of a recording's file; returns those that fail
/// (unreadable, short or not matching) and the bytes read. Takes no lock: callers hold a
/// handle and chunks that are durable, which no one rewrites.
fn check_chunks(
    file: &dyn DiskFile,
    cvs: &[[u8; 32]],
    size_bytes: u64,
    chunks: impl Iterator<Item = u64>,
) -> (BTreeSet<u64>, u64) {
    let mut bad = BTreeSet::new();
    let mut bytes_checked = 0;
    for index in chunks {
        let good = match read_chunk_bytes(file, index, size_bytes) {
            ChunkRead::Data(data) => {
                bytes_checked += data.len() as u64;
                verify_chunk(index, &data, &cvs[index as usize], size_bytes).is_ok()
            }
            ChunkRead::Short | ChunkRead::Unreadable => false,
        };
        if !good {
            bad.insert(index);
        }
    }
    (bad, bytes_checked)
}

/// What [`Store::begin_incoming`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeginOutcome {
    /// A new partial recording was created.
    Started,
    /// A partial with the same root existed; this many chunks are already durable.
    Resumed { durable_chunks: u64 },
    /// The same recording is already complete; nothing to do.
    AlreadyComplete,
}

/// What [`Store::write_chunk`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Verified and written (durable after the next sync).
    Written,
    /// The chunk was durable already; nothing written.
    AlreadyDurable,
}

/// A sync of a partial recording's chunks, detached from the store so that it can run on
/// another thread ([`Store::sync_work`]): fsync the file, then commit the chunks' durable
/// bits, in that order, so the bitmap never claims a chunk that could still be lost.
#[derive(Debug)]
pub struct SyncWork {
    id: SessionId,
    file: Arc<dyn DiskFile>,
    db: Arc<redb::Database>,
    chunks: Vec<u64>,
    chunk_count: u64,
    /// The store's failure slot: Linux reports an fsync error once and then marks the pages
    /// clean, so after any failed fsync no later sync may commit durable bits.
    poison: FailureSlot,
    /// The partial's one-fsync-at-a-time lock ([`OpenPartial`]).
    sync_lock: Arc<Mutex<()>>,
}

impl SyncWork {
    /// The recording being synced.
    pub fn session(&self) -> SessionId {
        self.id
    }

    /// Blocks on the disk: fsyncs the partial, then durably adds the chunks to its bitmap.
    /// The bitmap is read and updated in one transaction, so syncs and the store's own
    /// commits never undo each other's bits.
    pub fn run(self) -> Result<(), StoreError> {
        let _one_fsync_per_file = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
        fsync_or_poison(self.file.as_ref(), &self.poison)?;
        // The synced chunks are not read again before publication; their page cache is
        // better spent on the next chunks (and writing those back starts now).
        self.file.drop_cached();
        let key = session_key(&self.id);
        let write = self.db.begin_write().map_err(db_error)?;
        {
            let partials = write.open_table(PARTIALS).map_err(db_error)?;
            if partials.get(key.as_slice()).map_err(db_error)?.is_none() {
                // Published meanwhile (after its own sync): there is no bitmap to update.
                return Ok(());
            }
            let mut table = write.open_table(PARTIAL_CHUNKS).map_err(db_error)?;
            let mut bits = match table.get(key.as_slice()).map_err(db_error)? {
                Some(bytes) => decode_bitmap(bytes.value(), self.chunk_count).map_err(corrupt)?,
                None => vec![false; self.chunk_count as usize],
            };
            for index in &self.chunks {
                if let Some(bit) = bits.get_mut(*index as usize) {
                    *bit = true;
                }
            }
            table
                .insert(key.as_slice(), encode_bitmap(&bits).as_slice())
                .map_err(db_error)?;
        }
        check_not_failed(&self.poison)?;
        write.commit().map_err(db_error)
    }
}

/// Fsyncs a recording file, to be called with its sync lock held: refuses if the store has
/// failed, poisons it at once if this fsync fails, and refuses if it failed meanwhile (then
/// this fsync's success proves nothing). Returns Ok only when the caller may commit.
fn fsync_or_poison(file: &dyn DiskFile, failure: &FailureSlot) -> Result<(), StoreError> {
    check_not_failed(failure)?;
    if let Err(error) = file.sync() {
        return Err(poison(
            failure,
            StoreError::io("syncing a recording", error),
        ));
    }
    check_not_failed(failure)
}

/// A partial recording, for listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartialInfo {
    pub meta: SessionMeta,
    pub chunk_count: u64,
    pub durable_chunks: u64,
    /// When the recording, complete once, was found damaged (`Some(0)`: before times were
    /// recorded); `None` for a recording still being received for the first time.
    pub damaged_since_unix_ms: Option<u64>,
}

impl PartialInfo {
    /// Whether this is a damaged recording (complete once) rather than one being received.
    pub fn is_damaged(&self) -> bool {
        self.damaged_since_unix_ms.is_some()
    }
}

/// A damaged recording, as `dyad session damaged list` shows it: never served, its bytes
/// kept, fetched again once a linked peer holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedInfo {
    pub meta: SessionMeta,
    pub chunk_count: u64,
    /// The chunks not (yet) verified and durable: the damaged ones, less any re-fetched.
    pub bad_chunks: Vec<u64>,
    /// When it was found damaged (0: before times were recorded).
    pub since_unix_ms: u64,
}

/// How many recordings a store holds in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordingCounts {
    /// Verified and listed in the catalog; served.
    pub complete: u64,
    /// Complete once, then found damaged; listed as damaged, never served.
    pub damaged: u64,
    /// Being received; never listed.
    pub partial: u64,
}

/// What [`Store::export_damaged`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DamagedExport {
    pub bytes_written: u64,
    /// Chunks that did not verify: written as they are on disk.
    pub unverified_chunks: Vec<u64>,
    /// Chunks the disk refused to read: written as zeros.
    pub unreadable_chunks: Vec<u64>,
}

/// A chunk that failed verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadChunk {
    pub id: SessionId,
    pub index: u64,
    /// Whether the recording was complete (and is now listed as damaged).
    pub was_complete: bool,
}

/// The result of [`Store::verify_all`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub recordings_checked: u64,
    pub bytes_checked: u64,
    pub bad_chunks: Vec<BadChunk>,
}

/// The metadata of a session imported from a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportInfo {
    /// This appliance's node id (the new session's origin).
    pub origin: NodeId,
    pub started_unix_ms: u64,
    pub ended_unix_ms: u64,
    pub ended_normally: bool,
    /// When given, a source of another length is refused (truncated file).
    pub expected_len: Option<u64>,
    /// When given, content with another BLAKE3 root is refused.
    pub expected_root: Option<[u8; 32]>,
}

pub(crate) fn complete_name(id: &SessionId) -> String {
    format!(
        "rec-{}-{:016x}.dat",
        dyad_wire::hex::encode(&id.origin.0),
        id.sequence
    )
}

/// The file name a complete recording has in the data folder (for checkers that read the
/// files directly, such as the simulator's "nothing unverified is visible" property).
pub fn recording_file_name(id: &SessionId) -> String {
    complete_name(id)
}

pub(crate) fn partial_name(id: &SessionId) -> String {
    format!(
        "part-{}-{:016x}.tmp",
        dyad_wire::hex::encode(&id.origin.0),
        id.sequence
    )
}

fn is_store_file(name: &str) -> bool {
    name.starts_with("rec-") || name.starts_with("part-") || name.starts_with("import-")
}

fn io_error(context: &str) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |error| StoreError::io(context, error)
}

/// For a write to a recording file: a full disk refuses the write (nothing of it reached the
/// file, so the store goes on); any other error is terminal.
fn write_error(context: &str) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |error| {
        if error.kind() == std::io::ErrorKind::StorageFull {
            StoreError::DiskFull {
                context: context.to_string(),
            }
        } else {
            StoreError::io(context, error)
        }
    }
}

fn not_damaged(id: &SessionId) -> StoreError {
    StoreError::InvalidInput {
        problem: format!(
            "no damaged recording {}:{}; `dyad session damaged list` shows them",
            id.origin, id.sequence
        ),
    }
}

fn invalid(id: Option<SessionId>, problem: impl ToString) -> StoreError {
    StoreError::InvalidRecording {
        id,
        problem: problem.to_string(),
    }
}

/// Commits the durable-chunk bitmap of a partial.
fn commit_bitmap(inner: &Inner, id: &SessionId, bits: &[bool]) -> Result<(), StoreError> {
    let write = inner.db.begin_write().map_err(db_error)?;
    {
        let mut table = write.open_table(PARTIAL_CHUNKS).map_err(db_error)?;
        table
            .insert(session_key(id).as_slice(), encode_bitmap(bits).as_slice())
            .map_err(db_error)?;
    }
    check_not_failed(&inner.failure)?;
    write.commit().map_err(db_error)
}

/// Makes the chunks written to a partial durable, then records them as such.
fn sync_partial(inner: &mut Inner, id: &SessionId) -> Result<(), StoreError> {
    let partial = inner
        .partials
        .get(id)
        .ok_or(StoreError::NotFound { id: *id })?;
    if partial.unsynced == 0 {
        return Ok(());
    }
    let sync_lock = Arc::clone(&partial.sync_lock);
    let _one_fsync_per_file = sync_lock.lock().unwrap_or_else(|p| p.into_inner());
    fsync_or_poison(partial.file.as_ref(), &inner.failure)?;
    // The sync covers every chunk written so far, those handed to a pending background sync
    // included.
    let mut bits: Vec<bool> = partial
        .durable
        .iter()
        .zip(&partial.written)
        .map(|(durable, written)| *durable || *written)
        .collect();
    for index in partial.syncing.values().flatten() {
        bits[*index as usize] = true;
    }
    commit_bitmap(inner, id, &bits)?;
    let partial = inner
        .partials
        .get_mut(id)
        .expect("the partial was found above under the same lock");
    partial.durable = bits;
    partial.written.iter_mut().for_each(|bit| *bit = false);
    partial.unsynced = 0;
    Ok(())
}

/// Publishes a partial whose chunks are all durable: rename, sync the folder, then move the
/// record into the catalog. `renamed` says the file already has its final name.
fn publish_partial(inner: &mut Inner, id: &SessionId, renamed: bool) -> Result<(), StoreError> {
    if inner
        .partials
        .get(id)
        .is_some_and(|partial| !partial.syncing.is_empty())
    {
        // Its sync would write the bitmap of a recording that is no longer partial.
        return Err(StoreError::InvalidInput {
            problem: format!(
                "recording {}:{} cannot be published while a sync of it is running",
                id.origin, id.sequence
            ),
        });
    }
    sync_partial(inner, id)?;
    if inner
        .partials
        .get(id)
        .is_some_and(|partial| partial.unchecked)
    {
        // Rare: a re-fetch finished before the check of the chunks a withdrawal kept (which
        // runs off the lock) did; checked here, so nothing unverified is ever published.
        recheck_locked(inner, id)?;
    }
    let partial = inner
        .partials
        .get(id)
        .ok_or(StoreError::NotFound { id: *id })?;
    let missing = partial.missing();
    if missing > 0 {
        return Err(StoreError::Incomplete {
            id: *id,
            missing_chunks: missing,
        });
    }
    debug_assert!(
        partial.durable.iter().all(|bit| *bit) && partial.syncing.is_empty() && !partial.unchecked,
        "a recording is published only with every chunk verified and durable"
    );
    let record = partial.record.clone();
    if !renamed {
        inner
            .disk
            .rename(&partial_name(id), &complete_name(id))
            .map_err(io_error("publishing a recording"))?;
    }
    inner
        .disk
        .sync_dir()
        .map_err(io_error("syncing the data folder"))?;
    let key = session_key(id);
    let write = inner.db.begin_write().map_err(db_error)?;
    {
        let mut partials = write.open_table(PARTIALS).map_err(db_error)?;
        partials.remove(key.as_slice()).map_err(db_error)?;
        let mut chunks = write.open_table(PARTIAL_CHUNKS).map_err(db_error)?;
        chunks.remove(key.as_slice()).map_err(db_error)?;
        let mut sessions = write.open_table(SESSIONS).map_err(db_error)?;
        sessions
            .insert(key.as_slice(), encode_session_meta(&record.meta).as_slice())
            .map_err(db_error)?;
        super::catalog::index_insert(inner.format, &write, &record.meta)?;
        let mut cvs = write.open_table(SESSION_CVS).map_err(db_error)?;
        cvs.insert(
            key.as_slice(),
            encode_chaining_values(&record.cvs).as_slice(),
        )
        .map_err(db_error)?;
    }
    write.commit().map_err(db_error)?;
    inner.partials.remove(id);
    inner.summary.insert(*id, record.meta.root);
    Ok(())
}

/// Withdraws a complete recording whose chunks `bad` failed verification or could not be
/// read (or whose file is gone): it leaves the catalog and becomes a damaged partial, listed
/// as damaged, keeping its bytes and the bits of the chunks not known to be bad. O(1) in the
/// folder's size, and it hashes nothing under the store's lock: unless `rest_checked` (the
/// caller verified every chunk), the kept chunks are re-checked later, off the lock
/// ([`Store::recheck_damaged`]), and in any case before the recording is published again.
fn withdraw(
    inner: &mut Inner,
    id: &SessionId,
    bad: &BTreeSet<u64>,
    rest_checked: bool,
) -> Result<(), StoreError> {
    let key = session_key(id);
    let (meta, cvs) = read_cvs(inner, id)?.ok_or(StoreError::NotFound { id: *id })?;
    let old_file = open_complete(inner, id)?;
    let old_len = match &old_file {
        Some(file) => Some(
            file.len()
                .map_err(io_error("reading a recording's length"))?,
        ),
        None => None,
    };
    // Chunks past the file's end (a truncated file) are gone whatever was claimed.
    let bits: Vec<bool> = (0..cvs.len() as u64)
        .map(|index| {
            let end = ((index + 1) * CHUNK_SIZE_BYTES as u64).min(meta.size_bytes);
            !bad.contains(&index) && old_len.is_some_and(|len| end <= len)
        })
        .collect();
    drop(old_file);
    let record = PartialRecord {
        meta,
        cvs,
        damaged_since_unix_ms: Some(inner.now_unix_ms().unwrap_or(0)),
    };
    let write = inner.db.begin_write().map_err(db_error)?;
    {
        let mut sessions = write.open_table(SESSIONS).map_err(db_error)?;
        sessions.remove(key.as_slice()).map_err(db_error)?;
        super::catalog::index_remove(inner.format, &write, &record.meta)?;
        let mut cvs = write.open_table(SESSION_CVS).map_err(db_error)?;
        cvs.remove(key.as_slice()).map_err(db_error)?;
        let mut partials = write.open_table(PARTIALS).map_err(db_error)?;
        partials
            .insert(key.as_slice(), encode_partial(&record).as_slice())
            .map_err(db_error)?;
        let mut chunks = write.open_table(PARTIAL_CHUNKS).map_err(db_error)?;
        chunks
            .insert(key.as_slice(), encode_bitmap(&bits).as_slice())
            .map_err(db_error)?;
    }
    check_not_failed(&inner.failure)?;
    write.commit().map_err(db_error)?;
    inner.summary.remove(id);
    let file = match old_len {
        Some(len) => {
            inner
                .disk
                .rename(&complete_name(id), &partial_name(id))
                .map_err(io_error("withdrawing a damaged recording"))?;
            let file = inner
                .disk
                .open(&partial_name(id), OpenMode::Existing)
                .map_err(io_error("opening a partial recording"))?;
            if len != record.meta.size_bytes {
                file.set_len(record.meta.size_bytes)
                    .map_err(write_error("sizing a partial recording"))?;
                file.sync()
                    .map_err(io_error("syncing a partial recording"))?;
            }
            file
        }
        None => create_partial_file(inner, &record.meta)?,
    };
    inner
        .disk
        .sync_dir()
        .map_err(io_error("syncing the data folder"))?;
    let mut partial = OpenPartial::new(record, file, bits);
    partial.unchecked = !rest_checked && old_len.is_some();
    inner.partials.insert(*id, partial);
    Ok(())
}

/// Checks the kept chunks of a damaged partial under the lock (see [`publish_partial`]).
fn recheck_locked(inner: &mut Inner, id: &SessionId) -> Result<(), StoreError> {
    let Some(partial) = inner.partials.get(id) else {
        return Ok(());
    };
    let (bad, _) = partial.snapshot().check_durable();
    forget_chunks(inner, id, &bad)?;
    if let Some(partial) = inner.partials.get_mut(id) {
        partial.unchecked = false;
    }
    Ok(())
}

/// Clears the durable bits of chunks `bad` of a partial (found bad by a re-read), so they
/// are fetched again.
fn forget_chunks(inner: &mut Inner, id: &SessionId, bad: &BTreeSet<u64>) -> Result<(), StoreError> {
    let Some(partial) = inner.partials.get(id) else {
        return Ok(());
    };
    if !bad.iter().any(|index| partial.durable[*index as usize]) {
        return Ok(());
    }
    let mut bits = partial.durable.clone();
    for index in bad {
        bits[*index as usize] = false;
    }
    commit_bitmap(inner, id, &bits)?;
    if let Some(partial) = inner.partials.get_mut(id) {
        partial.durable = bits;
    }
    Ok(())
}

fn create_partial_file(inner: &Inner, meta: &SessionMeta) -> Result<Arc<dyn DiskFile>, StoreError> {
    let file = inner
        .disk
        .open(&partial_name(&meta.id), OpenMode::CreateTruncate)
        .map_err(io_error("creating a partial recording"))?;
    file.set_len(meta.size_bytes)
        .map_err(write_error("sizing a partial recording"))?;
    file.sync()
        .map_err(io_error("syncing a partial recording"))?;
    Ok(file)
}

/// Brings files and records into agreement after whatever happened before (see module doc).
pub(crate) fn recover(inner: &mut Inner) -> Result<OpenReport, StoreError> {
    let mut report = OpenReport::default();
    let mut sessions = Vec::new();
    let mut partials = Vec::new();
    {
        let read = inner.db.begin_read().map_err(db_error)?;
        let table = read.open_table(SESSIONS).map_err(db_error)?;
        for entry in table.iter().map_err(db_error)? {
            let (key, value) = entry.map_err(db_error)?;
            let meta = decode_session_meta(value.value()).map_err(corrupt)?;
            if decode_session_key(key.value()).map_err(corrupt)? != meta.id {
                return Err(StoreError::CorruptRecord {
                    problem: "a session is filed under another session's id".to_string(),
                });
            }
            sessions.push(meta);
        }
        let table = read.open_table(PARTIALS).map_err(db_error)?;
        let chunks = read.open_table(PARTIAL_CHUNKS).map_err(db_error)?;
        for entry in table.iter().map_err(db_error)? {
            let (key, value) = entry.map_err(db_error)?;
            let record = decode_partial(value.value()).map_err(corrupt)?;
            if decode_session_key(key.value()).map_err(corrupt)? != record.meta.id {
                return Err(StoreError::CorruptRecord {
                    problem: "a partial recording is filed under another id".to_string(),
                });
            }
            let count = record.cvs.len() as u64;
            let bits = match chunks.get(key.value()).map_err(db_error)? {
                Some(bytes) => decode_bitmap(bytes.value(), count).map_err(corrupt)?,
                None => vec![false; count as usize],
            };
            partials.push((record, bits));
        }
    }
    let files: BTreeSet<String> = inner
        .disk
        .list()
        .map_err(io_error("listing the data folder"))?
        .into_iter()
        .collect();
    let mut expected = BTreeSet::new();
    for meta in &sessions {
        inner.summary.insert(meta.id, meta.root);
    }
    for (record, mut bits) in partials {
        let id = record.meta.id;
        let (part, rec) = (partial_name(&id), complete_name(&id));
        expected.insert(part.clone());
        let all_durable = bits.iter().all(|bit| *bit);
        let mut renamed = false;
        let file = if files.contains(&part) {
            inner
                .disk
                .open(&part, OpenMode::Existing)
                .map_err(io_error("opening a partial recording"))?
        } else if files.contains(&rec) && all_durable {
            // A crash hit publication after the rename; finish it below.
            renamed = true;
            inner
                .disk
                .open(&rec, OpenMode::Existing)
                .map_err(io_error("opening a recording"))?
        } else if files.contains(&rec) {
            // A crash hit a withdrawal after its commit; finish the rename.
            inner
                .disk
                .rename(&rec, &part)
                .map_err(io_error("withdrawing a recording"))?;
            inner
                .disk
                .sync_dir()
                .map_err(io_error("syncing the data folder"))?;
            inner
                .disk
                .open(&part, OpenMode::Existing)
                .map_err(io_error("opening a partial recording"))?
        } else {
            // The file never became durable: start it again. The cleared bits are committed
            // before the file is made, so a crash in between never leaves bits over zeros.
            bits.iter_mut().for_each(|bit| *bit = false);
            commit_bitmap(inner, &id, &bits)?;
            let file = create_partial_file(inner, &record.meta)?;
            inner
                .disk
                .sync_dir()
                .map_err(io_error("syncing the data folder"))?;
            file
        };
        // Read what the medium holds, not pages a failed writeback left in the cache.
        file.drop_cached();
        let len = file
            .len()
            .map_err(io_error("reading a recording's length"))?;
        if len != record.meta.size_bytes {
            // Chunks reaching past the durable end of the file cannot be durable; their bits
            // are cleared durably before the file is extended with zeros.
            let mut changed = false;
            for (index, bit) in bits.iter_mut().enumerate() {
                let end = (index as u64 + 1) * CHUNK_SIZE_BYTES as u64;
                if *bit && end.min(record.meta.size_bytes) > len {
                    *bit = false;
                    changed = true;
                }
            }
            if changed {
                commit_bitmap(inner, &id, &bits)?;
            }
            file.set_len(record.meta.size_bytes)
                .map_err(write_error("sizing a partial recording"))?;
            file.sync()
                .map_err(io_error("syncing a partial recording"))?;
        }
        // A set bit proves only that a sync returned success, and Linux reports a failed
        // writeback once: a process that died before it saw the error (or an older release)
        // may have committed bits over chunks that never reached the disk. Every durable
        // chunk of a partial is re-verified before it counts, or is published.
        let claimed = (0..bits.len() as u64).filter(|index| bits[*index as usize]);
        let (bad, _) = check_chunks(file.as_ref(), &record.cvs, record.meta.size_bytes, claimed);
        if !bad.is_empty() {
            for index in &bad {
                bits[*index as usize] = false;
            }
            commit_bitmap(inner, &id, &bits)?;
            report.partial_chunks_forgotten += bad.len() as u64;
        }
        inner
            .partials
            .insert(id, OpenPartial::new(record, file, bits));
        if inner.partials[&id].missing() == 0 {
            publish_partial(inner, &id, renamed)?;
            // The published file must not be mistaken for an orphan below.
            expected.insert(rec);
            report.publications_completed.push(id);
        }
    }
    for meta in &sessions {
        let name = complete_name(&meta.id);
        expected.insert(name.clone());
        let intact = files.contains(&name)
            && inner
                .disk
                .open(&name, OpenMode::Existing)
                .and_then(|file| file.len())
                .map_err(io_error("opening a recording"))?
                == meta.size_bytes;
        if !intact {
            let bad = (0..chunk_count(meta.size_bytes)).collect();
            withdraw(inner, &meta.id, &bad, true)?;
            expected.insert(partial_name(&meta.id));
            report.recordings_withdrawn.push(meta.id);
        }
    }
    let orphans: Vec<String> = files
        .into_iter()
        .filter(|name| is_store_file(name) && !expected.contains(name))
        .collect();
    for name in &orphans {
        inner
            .disk
            .remove(name)
            .map_err(io_error("removing an orphan file"))?;
    }
    if !orphans.is_empty() {
        inner
            .disk
            .sync_dir()
            .map_err(io_error("syncing the data folder"))?;
    }
    report.orphan_files_removed = orphans;
    Ok(report)
}

/// A complete recording's metadata and chunk chaining values.
type StoredRecording = (SessionMeta, Vec<[u8; 32]>);

fn read_cvs(inner: &Inner, id: &SessionId) -> Result<Option<StoredRecording>, StoreError> {
    let key = session_key(id);
    let read = inner.db.begin_read().map_err(db_error)?;
    let sessions = read.open_table(SESSIONS).map_err(db_error)?;
    let Some(meta) = sessions.get(key.as_slice()).map_err(db_error)? else {
        return Ok(None);
    };
    let meta = decode_session_meta(meta.value()).map_err(corrupt)?;
    let table = read.open_table(SESSION_CVS).map_err(db_error)?;
    let Some(bytes) = table.get(key.as_slice()).map_err(db_error)? else {
        return Err(StoreError::CorruptRecord {
            problem: "a session has no chunk hash list".to_string(),
        });
    };
    let cvs = decode_chaining_values(bytes.value(), meta.size_bytes).map_err(corrupt)?;
    Ok(Some((meta, cvs)))
}

/// Opens a complete recording's file; `None` when it is gone (damage, not an I/O failure).
fn open_complete(inner: &Inner, id: &SessionId) -> Result<Option<Arc<dyn DiskFile>>, StoreError> {
    match inner.disk.open(&complete_name(id), OpenMode::Existing) {
        Ok(file) => Ok(Some(file)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(StoreError::io("opening a recording", error)),
    }
}

/// Reads chunk `index` of `file` (an index the caller checked against the chunk list). A
/// read error is damage to this recording, never a failure of the store: on Linux a bad
/// sector reads as `EIO` again and again until the chunk is written anew.
fn read_chunk_bytes(file: &dyn DiskFile, index: u64, size_bytes: u64) -> ChunkRead {
    let Ok(len) = chunk_len(index, size_bytes) else {
        return ChunkRead::Short;
    };
    match file.read_vec_at(index * CHUNK_SIZE_BYTES as u64, len as usize) {
        Ok(data) => ChunkRead::Data(data),
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => ChunkRead::Short,
        Err(_) => ChunkRead::Unreadable,
    }
}

impl Store {
    /// Starts (or resumes) receiving a recording. `chunk_cvs` must authenticate to
    /// `meta.root`; the same id with another root is an [`StoreError::IdConflict`].
    pub fn begin_incoming(
        &self,
        meta: &SessionMeta,
        chunk_cvs: Vec<[u8; 32]>,
    ) -> Result<BeginOutcome, StoreError> {
        let id = meta.id;
        if meta.chunk_size_bytes as usize != CHUNK_SIZE_BYTES {
            return Err(invalid(
                Some(id),
                format!(
                    "chunk size {} is not this store's {CHUNK_SIZE_BYTES}",
                    meta.chunk_size_bytes
                ),
            ));
        }
        check_chaining_values(&chunk_cvs, meta.size_bytes, &meta.root)
            .map_err(|error| invalid(Some(id), error))?;
        self.run(|inner| {
            let conflict = |existing_root: [u8; 32]| StoreError::IdConflict {
                id,
                existing_root,
                incoming_root: meta.root,
            };
            if let Some((existing, _)) = read_cvs(inner, &id)? {
                return if existing.root == meta.root {
                    Ok(BeginOutcome::AlreadyComplete)
                } else {
                    Err(conflict(existing.root))
                };
            }
            if let Some(partial) = inner.partials.get(&id) {
                return if partial.record.meta.root == meta.root {
                    Ok(BeginOutcome::Resumed {
                        durable_chunks: partial.durable.iter().filter(|bit| **bit).count() as u64,
                    })
                } else {
                    Err(conflict(partial.record.meta.root))
                };
            }
            let record = PartialRecord {
                meta: *meta,
                cvs: chunk_cvs,
                damaged_since_unix_ms: None,
            };
            let count = record.cvs.len();
            let key = session_key(&id);
            let write = inner.db.begin_write().map_err(db_error)?;
            {
                let mut partials = write.open_table(PARTIALS).map_err(db_error)?;
                partials
                    .insert(key.as_slice(), encode_partial(&record).as_slice())
                    .map_err(db_error)?;
                let mut chunks = write.open_table(PARTIAL_CHUNKS).map_err(db_error)?;
                chunks
                    .insert(
                        key.as_slice(),
                        encode_bitmap(&vec![false; count]).as_slice(),
                    )
                    .map_err(db_error)?;
            }
            write.commit().map_err(db_error)?;
            let file = create_partial_file(inner, meta)?;
            inner
                .disk
                .sync_dir()
                .map_err(io_error("syncing the data folder"))?;
            inner
                .partials
                .insert(id, OpenPartial::new(record, file, vec![false; count]));
            Ok(BeginOutcome::Started)
        })
    }

    /// Which chunks of a partial recording are verified and durable.
    pub fn durable_chunks(&self, id: &SessionId) -> Result<Vec<bool>, StoreError> {
        self.run(|inner| {
            inner
                .partials
                .get(id)
                .map(|partial| partial.durable.clone())
                .ok_or(StoreError::NotFound { id: *id })
        })
    }

    /// Verifies chunk `index` of a partial recording and writes it. A chunk that does not
    /// verify is refused and not written. Every [`SYNC_EVERY_CHUNKS`] chunks the partial is
    /// synced; call [`Store::sync_chunks`] to make the rest durable sooner.
    pub fn write_chunk(
        &self,
        id: &SessionId,
        index: u64,
        data: &[u8],
    ) -> Result<ChunkOutcome, StoreError> {
        self.write_chunk_hashed(id, index, data, None)
    }

    /// [`Store::write_chunk`] for a caller that already computed `subtree_cv`, the chunk's
    /// [`chunk_subtree_cv`] (a driver hashes each chunk on the task that decoded it, so the
    /// thread that writes only compares 32 bytes). It must be computed locally from `data`,
    /// never taken from a peer. A recording of one chunk is verified here in full, since its
    /// chunk hashes as the root, not as a subtree.
    pub fn write_chunk_hashed(
        &self,
        id: &SessionId,
        index: u64,
        data: &[u8],
        subtree_cv: Option<[u8; 32]>,
    ) -> Result<ChunkOutcome, StoreError> {
        self.run(|inner| {
            let partial = inner
                .partials
                .get_mut(id)
                .ok_or(StoreError::NotFound { id: *id })?;
            let size = partial.record.meta.size_bytes;
            let cv = partial
                .record
                .cvs
                .get(index as usize)
                .ok_or_else(|| invalid(Some(*id), format!("chunk {index} is past the end")))?;
            if partial.durable[index as usize] {
                return Ok(ChunkOutcome::AlreadyDurable);
            }
            // Planted bug (test builds only, see `planted`): the chunk is written unverified,
            // so a bad chunk from the peer ends up published.
            if !dyad_core::planted_bug!(PublishUnverified) {
                match subtree_cv {
                    Some(subtree_cv) if size > CHUNK_SIZE_BYTES as u64 => {
                        verify_chunk_hashed(index, data.len() as u64, &subtree_cv, cv, size)
                    }
                    _ => verify_chunk(index, data, cv, size),
                }
                .map_err(|error| invalid(Some(*id), error))?;
            }
            partial
                .file
                .write_at(index * CHUNK_SIZE_BYTES as u64, data)
                .map_err(write_error("writing a recording"))?;
            if !partial.written[index as usize] {
                partial.written[index as usize] = true;
                partial.unsynced += 1;
            }
            if partial.unsynced >= SYNC_EVERY_CHUNKS {
                sync_partial(inner, id)?;
            }
            Ok(ChunkOutcome::Written)
        })
    }

    /// Makes every chunk written so far to a partial durable.
    pub fn sync_chunks(&self, id: &SessionId) -> Result<(), StoreError> {
        self.run(|inner| sync_partial(inner, id))
    }

    /// Hands the chunks written so far to a partial to a sync that runs off the caller's
    /// thread: returns its ticket (`None` when nothing is waiting), for [`Store::sync_work`]
    /// and then [`Store::finish_sync`]. Until finished, those chunks are not durable.
    pub fn begin_sync(&self, id: &SessionId) -> Result<Option<u64>, StoreError> {
        self.run(|inner| {
            let ticket = inner.next_sync_ticket;
            let partial = inner
                .partials
                .get_mut(id)
                .ok_or(StoreError::NotFound { id: *id })?;
            if partial.unsynced == 0 {
                return Ok(None);
            }
            let chunks: Vec<u64> = partial
                .written
                .iter_mut()
                .enumerate()
                .filter(|(_, written)| **written)
                .map(|(index, written)| {
                    *written = false;
                    index as u64
                })
                .collect();
            partial.unsynced = 0;
            partial.syncing.insert(ticket, chunks);
            inner.next_sync_ticket += 1;
            Ok(Some(ticket))
        })
    }

    /// What a sync handed out by [`Store::begin_sync`] must do, to run on any thread: the
    /// caller's thread goes on writing chunks meanwhile.
    pub fn sync_work(&self, id: &SessionId, ticket: u64) -> Result<SyncWork, StoreError> {
        self.run(|inner| {
            let partial = inner
                .partials
                .get(id)
                .ok_or(StoreError::NotFound { id: *id })?;
            let chunks =
                partial
                    .syncing
                    .get(&ticket)
                    .cloned()
                    .ok_or_else(|| StoreError::InvalidInput {
                        problem: format!(
                            "no sync {ticket} is pending for {}:{}",
                            id.origin, id.sequence
                        ),
                    })?;
            Ok(SyncWork {
                id: *id,
                file: Arc::clone(&partial.file),
                db: Arc::clone(&inner.db),
                chunks,
                chunk_count: partial.record.cvs.len() as u64,
                poison: self.failure_handle(),
                sync_lock: Arc::clone(&partial.sync_lock),
            })
        })
    }

    /// Takes the outcome of the [`SyncWork`] of `ticket`: its chunks are durable now (and
    /// their bits committed), or the store stops on the failure like on any failed fsync.
    pub fn finish_sync(
        &self,
        id: &SessionId,
        ticket: u64,
        outcome: Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.note(outcome)?;
        self.run(|inner| {
            // A partial published or withdrawn meanwhile has nothing left to update.
            if let Some(partial) = inner.partials.get_mut(id) {
                for index in partial.syncing.remove(&ticket).unwrap_or_default() {
                    partial.durable[index as usize] = true;
                }
            }
            Ok(())
        })
    }

    /// Publishes a partial recording whose every chunk is written: sync, rename, sync the
    /// folder, list it in the catalog.
    pub fn publish(&self, id: &SessionId) -> Result<SessionMeta, StoreError> {
        self.run(|inner| {
            publish_partial(inner, id, false)?;
            read_cvs(inner, id)?
                .map(|(meta, _)| meta)
                .ok_or(StoreError::NotFound { id: *id })
        })
    }

    /// Partial recordings (being received, or re-fetched after damage), sorted by id.
    pub fn list_partials(&self) -> Result<Vec<PartialInfo>, StoreError> {
        self.run(|inner| {
            Ok(inner
                .partials
                .values()
                .map(|partial| PartialInfo {
                    meta: partial.record.meta,
                    chunk_count: partial.record.cvs.len() as u64,
                    durable_chunks: partial.durable.iter().filter(|bit| **bit).count() as u64,
                    damaged_since_unix_ms: partial.record.damaged_since_unix_ms,
                })
                .collect())
        })
    }

    /// The chunk chaining values of a complete or partial recording (sent ahead of chunks so
    /// the receiver can verify each one).
    pub fn chunk_chaining_values(&self, id: &SessionId) -> Result<Vec<[u8; 32]>, StoreError> {
        self.run(|inner| {
            if let Some(partial) = inner.partials.get(id) {
                return Ok(partial.record.cvs.clone());
            }
            read_cvs(inner, id)?
                .map(|(_, cvs)| cvs)
                .ok_or(StoreError::NotFound { id: *id })
        })
    }

    /// Reads and verifies chunk `index` of a complete recording. A damaged chunk (one that
    /// does not verify, or that the disk cannot read) is never returned: the recording is
    /// withdrawn as damaged and [`StoreError::ChunkCorrupt`] returned. The read and the
    /// hashing run off the store's lock.
    pub fn read_chunk(&self, id: &SessionId, index: u64) -> Result<Bytes, StoreError> {
        let found = self.run(|inner| {
            let (meta, cvs) = read_cvs(inner, id)?.ok_or(StoreError::NotFound { id: *id })?;
            let cv = *cvs
                .get(index as usize)
                .ok_or_else(|| invalid(Some(*id), format!("chunk {index} is past the end")))?;
            match open_complete(inner, id)? {
                Some(file) => Ok(Some((meta, cv, file))),
                None => {
                    let all = (0..cvs.len() as u64).collect();
                    withdraw(inner, id, &all, true)?;
                    Ok(None)
                }
            }
        })?;
        let Some((meta, cv, file)) = found else {
            return Err(StoreError::ChunkCorrupt { id: *id, index });
        };
        if let ChunkRead::Data(data) = read_chunk_bytes(file.as_ref(), index, meta.size_bytes) {
            if verify_chunk(index, &data, &cv, meta.size_bytes).is_ok() {
                return Ok(Bytes::from(data));
            }
        }
        drop(file);
        self.run(|inner| {
            // Still the recording that was read (not withdrawn or replaced meanwhile).
            if read_cvs(inner, id)?.is_some_and(|(listed, _)| listed.root == meta.root) {
                withdraw(inner, id, &BTreeSet::from([index]), false)?;
            }
            Ok(())
        })?;
        self.recheck_damaged(id)?;
        Err(StoreError::ChunkCorrupt { id: *id, index })
    }

    /// Re-verifies the chunks a withdrawal kept without reading them (damage rarely comes
    /// alone), off the store's lock, and forgets those that fail so the re-fetch repairs the
    /// whole recording. Nothing to do for other recordings.
    pub fn recheck_damaged(&self, id: &SessionId) -> Result<(), StoreError> {
        let snapshot = self.run(|inner| {
            Ok(inner
                .partials
                .get(id)
                .filter(|partial| partial.unchecked)
                .map(OpenPartial::snapshot))
        })?;
        let Some(snapshot) = snapshot else {
            return Ok(());
        };
        let (bad, _) = snapshot.check_durable();
        drop(snapshot);
        self.run(|inner| {
            if !inner
                .partials
                .get(id)
                .is_some_and(|partial| partial.unchecked)
            {
                return Ok(());
            }
            forget_chunks(inner, id, &bad)?;
            if let Some(partial) = inner.partials.get_mut(id) {
                partial.unchecked = false;
            }
            Ok(())
        })
    }

    /// Re-hashes every stored chunk (complete recordings and the durable chunks of partials)
    /// and reports each bad one (failing verification or unreadable). Damaged complete
    /// recordings are withdrawn and listed as damaged; bad chunks of partials are forgotten
    /// so they are fetched again. Runs recording by recording, reading off the store's lock,
    /// so replication and status go on meanwhile.
    pub fn verify_all(&self) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        let ids: Vec<SessionId> = self.run(|inner| {
            let read = inner.db.begin_read().map_err(db_error)?;
            let table = read.open_table(SESSIONS).map_err(db_error)?;
            let mut ids = Vec::new();
            for entry in table.iter().map_err(db_error)? {
                let (key, _) = entry.map_err(db_error)?;
                ids.push(decode_session_key(key.value()).map_err(corrupt)?);
            }
            Ok(ids)
        })?;
        for id in ids {
            let found = self.run(|inner| match read_cvs(inner, &id)? {
                Some((meta, cvs)) => Ok(Some((meta, cvs, open_complete(inner, &id)?))),
                // Withdrawn meanwhile.
                None => Ok(None),
            })?;
            let Some((meta, cvs, file)) = found else {
                continue;
            };
            report.recordings_checked += 1;
            let all = 0..cvs.len() as u64;
            let (bad, bytes) = match &file {
                Some(file) => check_chunks(file.as_ref(), &cvs, meta.size_bytes, all),
                None => (all.collect(), 0),
            };
            drop(file);
            report.bytes_checked += bytes;
            if bad.is_empty() {
                continue;
            }
            report.bad_chunks.extend(bad.iter().map(|index| BadChunk {
                id,
                index: *index,
                was_complete: true,
            }));
            self.run(|inner| {
                if read_cvs(inner, &id)?.is_some_and(|(listed, _)| listed.root == meta.root) {
                    withdraw(inner, &id, &bad, true)?;
                }
                Ok(())
            })?;
        }
        // In session id order (a BTreeMap), like the catalog above: the bitmap writes and
        // the report are the same in every process and every replay.
        let partial_ids: Vec<SessionId> =
            self.run(|inner| Ok(inner.partials.keys().copied().collect()))?;
        for id in partial_ids {
            let snapshot = self.run(|inner| {
                if !inner.partials.contains_key(&id) {
                    return Ok(None);
                }
                sync_partial(inner, &id)?;
                Ok(Some(inner.partials[&id].snapshot()))
            })?;
            let Some(snapshot) = snapshot else {
                continue;
            };
            report.recordings_checked += 1;
            let (bad, bytes) = snapshot.check_durable();
            drop(snapshot);
            report.bytes_checked += bytes;
            report.bad_chunks.extend(bad.iter().map(|index| BadChunk {
                id,
                index: *index,
                was_complete: false,
            }));
            self.run(|inner| {
                forget_chunks(inner, &id, &bad)?;
                if let Some(partial) = inner.partials.get_mut(&id) {
                    // Every chunk it held durable at the snapshot was just checked.
                    partial.unchecked = false;
                }
                Ok(())
            })?;
        }
        Ok(report)
    }

    /// The damaged recordings (complete once, then found damaged), sorted by id.
    pub fn list_damaged(&self) -> Result<Vec<DamagedInfo>, StoreError> {
        self.run(|inner| {
            Ok(inner
                .partials
                .values()
                .filter_map(|partial| {
                    let since_unix_ms = partial.record.damaged_since_unix_ms?;
                    Some(DamagedInfo {
                        meta: partial.record.meta,
                        chunk_count: partial.record.cvs.len() as u64,
                        bad_chunks: (0..partial.durable.len() as u64)
                            .filter(|index| !partial.durable[*index as usize])
                            .collect(),
                        since_unix_ms,
                    })
                })
                .collect())
        })
    }

    /// How many recordings are complete, damaged and being received.
    pub fn recording_counts(&self) -> Result<RecordingCounts, StoreError> {
        let complete = self.catalog_len()?;
        self.run(|inner| {
            let damaged = inner
                .partials
                .values()
                .filter(|partial| partial.record.damaged_since_unix_ms.is_some())
                .count() as u64;
            Ok(RecordingCounts {
                complete,
                damaged,
                partial: inner.partials.len() as u64 - damaged,
            })
        })
    }

    /// Writes the bytes of damaged recording `id` as they are on disk to `out`, so the
    /// operator keeps what is left when no peer holds a copy: chunks that do not verify are
    /// written as they are, chunks the disk cannot read as zeros; the report names both.
    /// Reads off the store's lock.
    pub fn export_damaged(
        &self,
        id: &SessionId,
        out: &mut dyn std::io::Write,
    ) -> Result<DamagedExport, StoreError> {
        let (file, cvs, size_bytes) = self.run(|inner| {
            let partial = inner
                .partials
                .get(id)
                .filter(|partial| partial.record.damaged_since_unix_ms.is_some())
                .ok_or_else(|| not_damaged(id))?;
            Ok((
                Arc::clone(&partial.file),
                partial.record.cvs.clone(),
                partial.record.meta.size_bytes,
            ))
        })?;
        let mut export = DamagedExport::default();
        for (index, cv) in cvs.iter().enumerate() {
            let index = index as u64;
            let len = chunk_len(index, size_bytes).map_err(|error| invalid(Some(*id), error))?;
            let data = match read_chunk_bytes(file.as_ref(), index, size_bytes) {
                ChunkRead::Data(data) => {
                    if verify_chunk(index, &data, cv, size_bytes).is_err() {
                        export.unverified_chunks.push(index);
                    }
                    data
                }
                ChunkRead::Short | ChunkRead::Unreadable => {
                    export.unreadable_chunks.push(index);
                    vec![0u8; len as usize]
                }
            };
            out.write_all(&data)
                .map_err(|error| StoreError::InvalidInput {
                    problem: format!("cannot write the export: {error}"),
                })?;
            export.bytes_written += data.len() as u64;
        }
        Ok(export)
    }

    /// Forgets damaged recording `id`: its record and its bytes are removed. For a recording
    /// no peer holds (export it first); if a peer does hold it, the next sync fetches it anew.
    pub fn forget_damaged(&self, id: &SessionId) -> Result<SessionMeta, StoreError> {
        self.run(|inner| {
            let partial = inner
                .partials
                .get(id)
                .filter(|partial| partial.record.damaged_since_unix_ms.is_some())
                .ok_or_else(|| not_damaged(id))?;
            if !partial.syncing.is_empty() {
                return Err(StoreError::InvalidInput {
                    problem: format!(
                        "recording {}:{} is being fetched again right now; try again when the \
                         sync has ended",
                        id.origin, id.sequence
                    ),
                });
            }
            let meta = partial.record.meta;
            let key = session_key(id);
            let write = inner.db.begin_write().map_err(db_error)?;
            {
                let mut partials = write.open_table(PARTIALS).map_err(db_error)?;
                partials.remove(key.as_slice()).map_err(db_error)?;
                let mut chunks = write.open_table(PARTIAL_CHUNKS).map_err(db_error)?;
                chunks.remove(key.as_slice()).map_err(db_error)?;
            }
            check_not_failed(&inner.failure)?;
            write.commit().map_err(db_error)?;
            inner.partials.remove(id);
            match inner.disk.remove(&partial_name(id)) {
                Ok(()) => {}
                // A file with no record is an orphan the next open removes anyway.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(StoreError::io("removing a damaged recording", error)),
            }
            inner
                .disk
                .sync_dir()
                .map_err(io_error("syncing the data folder"))?;
            Ok(meta)
        })
    }

    /// Imports a completed local session from a file outside the data folder.
    pub fn import_recording_file(
        &self,
        path: &Path,
        mut info: ImportInfo,
    ) -> Result<SessionMeta, StoreError> {
        let file = std::fs::File::open(path).map_err(|error| StoreError::ImportSource {
            message: format!("{}: {error}", path.display()),
        })?;
        let len = file
            .metadata()
            .map_err(|error| StoreError::ImportSource {
                message: format!("{}: {error}", path.display()),
            })?
            .len();
        info.expected_len = Some(info.expected_len.unwrap_or(len));
        self.import_recording(file, info)
    }

    /// Imports a completed local session from `source`: read, hash, write, sync, publish,
    /// with a fresh local id. Memory stays at one chunk whatever the size. On any problem
    /// with the source nothing changes in the store.
    pub fn import_recording(
        &self,
        mut source: impl Read,
        info: ImportInfo,
    ) -> Result<SessionMeta, StoreError> {
        // The copy runs outside the store's lock (it can take seconds); only naming the
        // temporary file and publishing take the lock.
        let (disk, temp) = self.run(|inner| {
            inner.import_counter += 1;
            Ok((
                Arc::clone(&inner.disk),
                format!("import-{}.tmp", inner.import_counter),
            ))
        })?;
        let result = self
            .note(import_copy(disk.as_ref(), &temp, &mut source, &info))
            .and_then(|copied| self.run(|inner| import_publish(inner, copied, &temp, &info)));
        if result.is_err() {
            // Leave nothing behind; the failure itself is reported through the result.
            let _ = disk.remove(&temp);
        }
        result
    }
}

/// Buffers in flight during an import: memory stays at this many chunks whatever the size.
const IMPORT_BUFFERS: usize = 4;

/// Copies `source` into `file` while a second thread hashes each chunk, so reading and
/// writing on one core overlap with hashing on the other. Returns the chunk chaining values
/// and the length.
fn copy_and_hash(
    file: &dyn DiskFile,
    source: &mut impl Read,
    info: &ImportInfo,
) -> Result<(Vec<[u8; 32]>, u64), StoreError> {
    if let Some(expected_len) = info.expected_len {
        if expected_len <= CHUNK_SIZE_BYTES as u64 {
            return copy_and_hash_one_chunk(file, source, expected_len);
        }
    }
    let (to_hasher, chunks) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>, usize)>(2);
    let (return_buffer, free_buffers) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || {
            let mut cvs = Vec::new();
            let mut first: Option<(Vec<u8>, usize)> = None;
            for (index, chunk, filled) in chunks {
                if index == 0 {
                    // Whether chunk 0 is the whole recording (then its value is the root) is
                    // only known when chunk 1 arrives or the input ends.
                    first = Some((chunk, filled));
                    continue;
                }
                if let Some((first, first_len)) = first.take() {
                    cvs.push(chunk_chaining_value(0, &first[..first_len], u64::MAX));
                    let _ = return_buffer.send(first);
                }
                cvs.push(chunk_chaining_value(index, &chunk[..filled], u64::MAX));
                // The reader may have finished already; a buffer nobody wants is just dropped.
                let _ = return_buffer.send(chunk);
            }
            (cvs, first)
        });
        let copied = copy_chunks(file, source, info, &to_hasher, &free_buffers);
        drop(to_hasher);
        let (mut cvs, first) = hasher.join().expect("hashing does not panic");
        let total_len = copied?;
        if let Some((first, first_len)) = first {
            cvs.push(chunk_chaining_value(0, &first[..first_len], total_len));
        }
        Ok((cvs, total_len))
    })
}

/// A recording of at most one chunk gains nothing from a hashing thread (its one chunk can
/// only be hashed once the input has ended, as only then is it known to be the root), so it
/// is copied and hashed in place, sparing a thread start for every small session.
fn copy_and_hash_one_chunk(
    file: &dyn DiskFile,
    source: &mut impl Read,
    expected_len: u64,
) -> Result<(Vec<[u8; 32]>, u64), StoreError> {
    // One byte more than expected, to notice a longer source.
    let mut buffer = vec![0u8; expected_len as usize + 1];
    let filled = read_full(source, &mut buffer).map_err(|error| StoreError::ImportSource {
        message: error.to_string(),
    })?;
    if filled as u64 > expected_len {
        return Err(StoreError::ImportSource {
            message: format!("the source is longer than {expected_len} bytes"),
        });
    }
    if filled == 0 {
        return Ok((Vec::new(), 0));
    }
    file.write_at(0, &buffer[..filled])
        .map_err(write_error("writing an imported recording"))?;
    let cv = chunk_chaining_value(0, &buffer[..filled], filled as u64);
    Ok((vec![cv], filled as u64))
}

fn copy_chunks(
    file: &dyn DiskFile,
    source: &mut impl Read,
    info: &ImportInfo,
    to_hasher: &std::sync::mpsc::SyncSender<(u64, Vec<u8>, usize)>,
    free_buffers: &std::sync::mpsc::Receiver<Vec<u8>>,
) -> Result<u64, StoreError> {
    let mut allocated = 0;
    let mut total_len = 0u64;
    // A recording known to be shorter than a chunk gets buffers its size (one byte more, to
    // notice a longer source): most sessions are small, and a chunk-sized buffer for each would
    // cost more than the copy.
    let buffer_len = info.expected_len.map_or(CHUNK_SIZE_BYTES, |len| {
        usize::try_from(len)
            .unwrap_or(usize::MAX)
            .saturating_add(1)
            .min(CHUNK_SIZE_BYTES)
    });
    loop {
        let mut buffer = match free_buffers.try_recv() {
            Ok(buffer) => buffer,
            Err(_) if allocated < IMPORT_BUFFERS => {
                allocated += 1;
                vec![0u8; buffer_len]
            }
            Err(_) => free_buffers
                .recv()
                .expect("the hasher returns buffers while it runs"),
        };
        let filled = read_full(source, &mut buffer).map_err(|error| StoreError::ImportSource {
            message: error.to_string(),
        })?;
        if filled == 0 {
            return Ok(total_len);
        }
        let index = total_len / CHUNK_SIZE_BYTES as u64;
        file.write_at(total_len, &buffer[..filled])
            .map_err(write_error("writing an imported recording"))?;
        total_len += filled as u64;
        if total_len > MAX_RECORDING_BYTES || info.expected_len.is_some_and(|len| total_len > len) {
            return Err(StoreError::ImportSource {
                message: format!(
                    "the source is longer than {} bytes",
                    info.expected_len.unwrap_or(MAX_RECORDING_BYTES)
                ),
            });
        }
        to_hasher
            .send((index, buffer, filled))
            .expect("the hasher runs until the sender is dropped");
    }
}

/// A copied recording: chunk chaining values, length, root.
type Copied = (Vec<[u8; 32]>, u64, [u8; 32]);

/// Copies and hashes the source into `temp` and syncs it; returns the chunk chaining values,
/// the length and the root.
fn import_copy(
    disk: &dyn crate::disk::Disk,
    temp: &str,
    source: &mut impl Read,
    info: &ImportInfo,
) -> Result<Copied, StoreError> {
    let file = disk
        .open(temp, OpenMode::CreateTruncate)
        .map_err(io_error("creating an import file"))?;
    let (cvs, total_len) = copy_and_hash(file.as_ref(), source, info)?;
    if let Some(expected) = info.expected_len {
        if total_len != expected {
            return Err(StoreError::ImportSource {
                message: format!("the source ended after {total_len} of {expected} bytes"),
            });
        }
    }
    let root = *root_from_chaining_values(&cvs, total_len)
        .map_err(|error| invalid(None, error))?
        .as_bytes();
    if info.expected_root.is_some_and(|expected| expected != root) {
        return Err(invalid(
            None,
            "the content does not match the expected BLAKE3 root",
        ));
    }
    file.sync()
        .map_err(io_error("syncing an imported recording"))?;
    Ok((cvs, total_len, root))
}

/// Gives a copied recording its id and final name, and lists it.
fn import_publish(
    inner: &mut Inner,
    (cvs, total_len, root): Copied,
    temp: &str,
    info: &ImportInfo,
) -> Result<SessionMeta, StoreError> {
    let write = inner.db.begin_write().map_err(db_error)?;
    let id = allocate_local_id(inner, &write, info.origin)?;
    let meta = SessionMeta {
        id,
        started_unix_ms: info.started_unix_ms,
        ended_unix_ms: info.ended_unix_ms,
        size_bytes: total_len,
        root,
        chunk_size_bytes: CHUNK_SIZE_BYTES as u32,
        ended_normally: info.ended_normally,
    };
    inner
        .disk
        .rename(temp, &complete_name(&id))
        .map_err(io_error("publishing an imported recording"))?;
    inner
        .disk
        .sync_dir()
        .map_err(io_error("syncing the data folder"))?;
    {
        let key = session_key(&id);
        let mut sessions = write.open_table(SESSIONS).map_err(db_error)?;
        sessions
            .insert(key.as_slice(), encode_session_meta(&meta).as_slice())
            .map_err(db_error)?;
        super::catalog::index_insert(inner.format, &write, &meta)?;
        let mut table = write.open_table(SESSION_CVS).map_err(db_error)?;
        table
            .insert(key.as_slice(), encode_chaining_values(&cvs).as_slice())
            .map_err(db_error)?;
    }
    write.commit().map_err(db_error)?;
    inner.summary.insert(id, root);
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::sim::SimDisk;
    use crate::disk::Disk;
    use crate::tree::chunk_chaining_values;

    /// `verify_all` reported the damaged chunks of partials in the order of a `HashMap`, which
    /// differs between processes (and so did the order of its bitmap writes): two runs over
    /// the same store must give the same report: complete recordings by session id, then
    /// partials by session id.
    #[test]
    fn verify_reports_damaged_partials_in_session_id_order() {
        let disk = SimDisk::new(5);
        let store = Store::open(Arc::clone(&disk) as Arc<dyn Disk>).expect("a fresh store");
        let content: Vec<u8> = (0..2 * CHUNK_SIZE_BYTES).map(|i| (i % 251) as u8).collect();
        let (cvs, size_bytes, root) = chunk_chaining_values(&content[..]).expect("hash");
        let mut partial_ids = Vec::new();
        for k in 0..40u64 {
            // Origins and sequences out of order, so insertion order is not the sorted order.
            let id = SessionId {
                origin: NodeId([(k % 3) as u8 + 1; 16]),
                sequence: k * 7919 % 101,
            };
            let meta = SessionMeta {
                id,
                started_unix_ms: 1,
                ended_unix_ms: 2,
                size_bytes,
                root: *root.as_bytes(),
                chunk_size_bytes: CHUNK_SIZE_BYTES as u32,
                ended_normally: true,
            };
            store.begin_incoming(&meta, cvs.clone()).expect("begin");
            store
                .write_chunk(&id, 0, &content[..CHUNK_SIZE_BYTES])
                .expect("write");
            store.sync_chunks(&id).expect("sync");
            disk.flip_bit(&partial_name(&id), 3).expect("flip");
            partial_ids.push(id);
        }
        // Complete recordings, damaged too: verifying withdraws them into partials, whose
        // damaged chunks are then not reported twice.
        let mut complete_ids = Vec::new();
        for k in 0..3u8 {
            let info = ImportInfo {
                origin: NodeId([2; 16]),
                started_unix_ms: 1,
                ended_unix_ms: 2,
                ended_normally: true,
                expected_len: None,
                expected_root: None,
            };
            let meta = store
                .import_recording(&content[usize::from(k)..], info)
                .expect("import");
            disk.flip_bit(&complete_name(&meta.id), 3).expect("flip");
            complete_ids.push(meta.id);
        }
        let report = store.verify_all().expect("verify");
        let reported = |complete: bool| -> Vec<SessionId> {
            report
                .bad_chunks
                .iter()
                .filter(|bad| bad.was_complete == complete)
                .map(|bad| bad.id)
                .collect()
        };
        complete_ids.sort();
        partial_ids.sort();
        assert_eq!(reported(true), complete_ids, "complete ones by session id");
        assert_eq!(reported(false), partial_ids, "partial ones by session id");
        assert!(
            report.bad_chunks[..complete_ids.len()]
                .iter()
                .all(|bad| bad.was_complete),
            "complete recordings first"
        );
    }
}
