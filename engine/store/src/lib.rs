//! The appliance's persistent state: settings, site configuration, session catalog and
//! recordings, crash-safe on any [`Disk`](disk::Disk).
//!
//! One [`Store`] holds all of it in one data folder: a redb database (`meta.redb`) for
//! everything small and transactional, and one plain file per recording. Opening the store
//! checks the format version and repairs whatever a crash left half done (see
//! `docs/storage.md` for the layout and the crash-safety argument). Any failed write or sync
//! makes the store refuse all further work with that error: after an I/O failure nobody knows
//! what reached the disk, so the only safe way on is to reopen, which recovers from what is
//! durable.
//!
//! # Layout
//!
//! This root only declares the modules and re-exports the public API. Every module names what
//! it uses where it is defined, never through this root, so that no module imports one that
//! imports it back: plain leaves at the bottom (`error`, `tables`, `records`, `summary`,
//! `partial`, `disk`, `backend`), the [`Store`] handle and its locked state above them
//! (`store`), the parts that work on a `Store` above that (`catalog`, `config`, `recordings`,
//! `settings_read`, `replica_port`, `settings_backup`), and `open`, which opens a store and
//! calls into those parts, at the top.

mod backend;
mod catalog;
pub(crate) mod config;
pub mod disk;
mod error;
pub mod local_keys;
mod open;
mod partial;
mod recordings;
pub mod records;
pub mod replica_port;
pub mod settings_backup;
mod settings_read;
mod store;
pub mod summary;
mod tables;
pub use dyad_core::tree;

pub use config::config_chain;
pub use error::StoreError;
pub use open::{
    set_format_version_for_tests, MigrationReport, FORMAT_VERSION, FORMAT_VERSION_MIN,
    META_FILE_NAME,
};
pub use recordings::{
    recording_file_name, BadChunk, BeginOutcome, ChunkOutcome, DamagedExport, DamagedInfo,
    ImportInfo, PartialInfo, RecordingCounts, SyncWork, VerifyReport,
};
pub use records::{
    ConfigChange, ConfigSnapshot, ConfigVersion, ConflictEntry, ConflictRecord, SessionMeta,
    CONFIG_CHAIN_ZERO, CONFIG_VERSION_ZERO,
};
pub use settings_read::SettingsRead;
pub use store::{OpenReport, Store, StoreClock};
pub use summary::{Differences, Reconciler, SummaryIndex, SummaryRequest, SummaryResponse};
pub use tree::{TreeError, CHUNK_SIZE_BYTES, MAX_RECORDING_BYTES};
