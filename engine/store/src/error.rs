//! The store's error type, and the conversions from what its dependencies report.
//!
//! In a leaf module (it imports only `records`) so that every part of the store names it
//! directly, and none has to import the crate root, which imports them all: the layering
//! rule allows no module cycles. Re-exported from the crate root.

use std::fmt;
use std::io;

use dyad_wire::{Epoch, SessionId};

use crate::records::{self, ConfigVersion};

/// What went wrong, split by who can fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    // --- Local I/O: terminal; the store refuses further work until reopened. ---
    /// A disk operation failed. Check the disk (space, health), then restart the service.
    Io {
        context: String,
        kind: io::ErrorKind,
        message: String,
    },
    /// The metadata database failed.
    Database { message: String },
    /// An earlier failure stopped the store; reopen it.
    Failed { first: Box<StoreError> },

    // --- Local space: not terminal; nothing was written, the work can be retried. ---
    /// A write was refused because the disk is full (a synchronous `ENOSPC`): nothing of it
    /// reached the file, so the store goes on; the work succeeds once space is freed.
    DiskFull { context: String },

    // --- Local data: found on disk, not caused by the caller. ---
    /// The data folder was written by a newer version of Dyad; run that version (or newer).
    NewerFormat { found: u64, supported: u64 },
    /// The data folder's format is older than any this version can open or migrate.
    OlderFormat { found: u64, oldest: u64 },
    /// A stored record does not follow its layout (disk corruption or tampering).
    CorruptRecord { problem: String },
    /// A chunk of a stored recording failed verification or could not be read; the recording
    /// was withdrawn from the catalog and is listed as damaged, to be fetched again from a
    /// peer that holds it.
    ChunkCorrupt { id: SessionId, index: u64 },

    // --- Caller or peer input: nothing was changed. ---
    /// The same session id is already known with different content.
    IdConflict {
        id: SessionId,
        existing_root: [u8; 32],
        incoming_root: [u8; 32],
    },
    /// A recording's chunk list, size or chunk does not match its root.
    InvalidRecording {
        id: Option<SessionId>,
        problem: String,
    },
    /// A configuration write from an epoch older than the configuration's own.
    StaleEpoch { current: Epoch, given: Epoch },
    /// Configuration changes that do not continue this configuration's history, by number or
    /// by chain (boxed: versions carry their 32-byte chains).
    ChangesOutOfOrder {
        current: Box<ConfigVersion>,
        first: Box<ConfigVersion>,
    },
    /// An argument is outside its limits.
    InvalidInput { problem: String },
    /// No such session (complete or partial, as the call requires).
    NotFound { id: SessionId },
    /// `publish` was called before every chunk was durable.
    Incomplete { id: SessionId, missing_chunks: u64 },
    /// Reading the file to import failed (the source, not the store's disk).
    ImportSource { message: String },
    /// The peer broke the catalog summary protocol.
    Protocol { problem: String },
}

impl StoreError {
    /// Whether this error stops the store (local I/O failures).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            StoreError::Io { .. } | StoreError::Database { .. } | StoreError::Failed { .. }
        )
    }

    pub(crate) fn io(context: impl Into<String>, error: io::Error) -> StoreError {
        StoreError::Io {
            context: context.into(),
            kind: error.kind(),
            message: error.to_string(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io {
                context, message, ..
            } => write!(
                f,
                "disk error while {context}: {message}; check the disk and restart the service"
            ),
            StoreError::Database { message } => write!(
                f,
                "metadata database error: {message}; check the disk and restart the service"
            ),
            StoreError::Failed { first } => write!(
                f,
                "the store stopped after an earlier failure ({first}); restart the service"
            ),
            StoreError::DiskFull { context } => write!(
                f,
                "the disk is full while {context}; free space in the data folder's file \
                 system, then sync again (nothing was lost)"
            ),
            StoreError::NewerFormat { found, supported } => write!(
                f,
                "the data folder has format {found}, this version reads up to {supported}; \
                 install the newer Dyad version that wrote it"
            ),
            StoreError::OlderFormat { found, oldest } => write!(
                f,
                "the data folder has format {found}, older than the oldest this version opens \
                 ({oldest}); install an intermediate Dyad version first"
            ),
            StoreError::CorruptRecord { problem } => {
                write!(f, "the metadata database holds a damaged record: {problem}")
            }
            StoreError::ChunkCorrupt { id, index } => write!(
                f,
                "chunk {index} of recording {}:{} is damaged on disk (it does not verify or \
                 cannot be read); the recording is listed as damaged and fetched again from the \
                 peer if it holds it",
                id.origin, id.sequence
            ),
            StoreError::IdConflict { id, .. } => write!(
                f,
                "session {}:{} already exists with different content; refused, not merged",
                id.origin, id.sequence
            ),
            StoreError::InvalidRecording { id, problem } => match id {
                Some(id) => write!(
                    f,
                    "recording {}:{} refused: {problem}",
                    id.origin, id.sequence
                ),
                None => write!(f, "recording refused: {problem}"),
            },
            StoreError::StaleEpoch { current, given } => write!(
                f,
                "configuration write from epoch {given} refused: the configuration is already at \
                 epoch {current}"
            ),
            StoreError::ChangesOutOfOrder { current, first } => write!(
                f,
                "configuration changes starting at {first} do not continue this configuration's \
                 history at {current}; a full snapshot is needed"
            ),
            StoreError::InvalidInput { problem } => write!(f, "{problem}"),
            StoreError::NotFound { id } => {
                write!(f, "no session {}:{}", id.origin, id.sequence)
            }
            StoreError::Incomplete { id, missing_chunks } => write!(
                f,
                "recording {}:{} still misses {missing_chunks} durable chunks",
                id.origin, id.sequence
            ),
            StoreError::ImportSource { message } => {
                write!(f, "cannot read the recording to import: {message}")
            }
            StoreError::Protocol { problem } => write!(f, "{problem}"),
        }
    }
}

impl std::error::Error for StoreError {}

pub(crate) fn db_error(error: impl Into<redb::Error>) -> StoreError {
    let error: redb::Error = error.into();
    if let redb::Error::Io(io_error) = error {
        return StoreError::io("using the metadata database", io_error);
    }
    StoreError::Database {
        message: error.to_string(),
    }
}

pub(crate) fn corrupt(error: records::RecordError) -> StoreError {
    StoreError::CorruptRecord {
        problem: error.to_string(),
    }
}
