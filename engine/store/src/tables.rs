//! The metadata database's tables (see `docs/storage.md` for what each holds).
//!
//! In a leaf module so that opening the store and every part that reads or writes a table
//! name them here, not through the crate root (the layering rule allows no module cycles).

use redb::TableDefinition;

pub(crate) const FORMAT: TableDefinition<&str, u64> = TableDefinition::new("format");
pub(crate) const LOCAL: TableDefinition<&str, &[u8]> = TableDefinition::new("local");
pub(crate) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
pub(crate) const CONFIG: TableDefinition<&str, &[u8]> = TableDefinition::new("config");
pub(crate) const CONFIG_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("config_state");
pub(crate) const CONFIG_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("config_log");
/// The chain after each logged change, by sequence (32 bytes; `config::config_chain`).
pub(crate) const CONFIG_CHAINS: TableDefinition<u64, &[u8]> = TableDefinition::new("config_chains");
pub(crate) const CONFLICTS: TableDefinition<u64, &[u8]> = TableDefinition::new("conflicts");
pub(crate) const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
pub(crate) const SESSION_CVS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("session_cvs");
pub(crate) const PARTIALS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("partials");
pub(crate) const PARTIAL_CHUNKS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("partial_chunks");
/// Format 2: completed sessions by end time (`catalog::end_index_key`).
pub(crate) const SESSIONS_BY_END: TableDefinition<&[u8], ()> =
    TableDefinition::new("sessions_by_end");
