//! Site configuration: a versioned key/value map with a bounded history of changes.
//!
//! Every write is stamped `(epoch, sequence)`; the sequence grows by one per change across
//! epochs, so a backup that is `k` changes behind can catch up with exactly those `k` changes.
//! The history is bounded ([`CONFIG_HISTORY_MAX_ENTRIES`]); a peer further behind, or one whose
//! history diverged, gets `None` from [`Store::config_changes_since`] and needs a snapshot.
//! Each operation is one redb transaction, so after a crash the configuration is as before or
//! as after each write.
//!
//! Every version also carries a **chain**: a running BLAKE3 hash over every change up to it
//! ([`config_chain`]). Two stores agree at a version only if their chains agree, so a backup
//! whose history forked from the primary's at the same numbers (old and new hardware after a
//! restore) is found by content and replaced in full, its values kept in a conflict record.
//! Chains live in their own table and keys, beside the stamp layouts of format 1; a store made
//! before chains were kept is anchored at [`CONFIG_CHAIN_ZERO`] where it stood.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::error::{corrupt, db_error, StoreError};
use super::records::{
    decode_config_change, decode_config_version, decode_conflict, encode_config_change,
    encode_config_version, encode_conflict, ConfigChange, ConfigSnapshot, ConfigVersion,
    ConflictRecord, CONFIG_CHAIN_ZERO, CONFIG_VERSION_ZERO,
};
use super::store::{check_key, check_value, Store};
use super::tables::{CONFIG, CONFIG_CHAINS, CONFIG_LOG, CONFIG_STATE, CONFLICTS};
use dyad_wire::Epoch;

/// Changes kept for [`Store::config_changes_since`]; older ones are compacted away.
pub const CONFIG_HISTORY_MAX_ENTRIES: u64 = 10_000;
/// Most changes [`Store::config_apply_changes`] takes at once.
pub const MAX_CONFIG_CHANGES_PER_APPLY: usize = 100_000;

pub(super) const VERSION_KEY: &str = "version";
/// The version from which the kept history starts (changes after it are all kept).
const FLOOR_KEY: &str = "history_floor";

/// The chain after one change: BLAKE3, in its key-derivation mode with a context of its own,
/// over the previous chain, the change's stamp, key and value (a deletion and an empty value
/// differ). Everything is length-prefixed, so no two changes hash alike by shifting bytes.
pub fn config_chain(
    previous: &[u8; 32],
    version: &ConfigVersion,
    key: &str,
    value: Option<&[u8]>,
) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key("dyad 2026-12 site configuration chain v1");
    hasher.update(previous);
    hasher.update(&version.epoch.counter.to_le_bytes());
    hasher.update(&version.epoch.node.0);
    hasher.update(&version.sequence.to_le_bytes());
    hasher.update(&(key.len() as u64).to_le_bytes());
    hasher.update(key.as_bytes());
    match value {
        None => {
            hasher.update(&[0]);
        }
        Some(value) => {
            hasher.update(&[1]);
            hasher.update(&(value.len() as u64).to_le_bytes());
            hasher.update(value);
        }
    }
    *hasher.finalize().as_bytes()
}

/// The key beside `key` in the state table that holds its version's chain.
fn chain_key(key: &str) -> String {
    format!("{key}_chain")
}

fn decode_chain(bytes: &[u8]) -> Result<[u8; 32], StoreError> {
    bytes.try_into().map_err(|_| StoreError::CorruptRecord {
        problem: format!(
            "a configuration chain has {} bytes instead of 32",
            bytes.len()
        ),
    })
}

/// The version stored under `key`, with its chain.
pub(super) fn read_state(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<ConfigVersion, StoreError> {
    let mut version = match table.get(key).map_err(db_error)? {
        Some(bytes) => decode_config_version(bytes.value()).map_err(corrupt)?,
        None => return Ok(CONFIG_VERSION_ZERO),
    };
    version.chain = match table.get(chain_key(key).as_str()).map_err(db_error)? {
        Some(bytes) => decode_chain(bytes.value())?,
        None => CONFIG_CHAIN_ZERO,
    };
    Ok(version)
}

fn set_state(
    write: &WriteTransaction,
    key: &str,
    version: &ConfigVersion,
) -> Result<(), StoreError> {
    let mut table = write.open_table(CONFIG_STATE).map_err(db_error)?;
    table
        .insert(key, encode_config_version(version).as_slice())
        .map_err(db_error)?;
    table
        .insert(chain_key(key).as_str(), version.chain.as_slice())
        .map_err(db_error)?;
    Ok(())
}

/// Where the time of the last change to the site configuration is kept (8 bytes, little-endian
/// milliseconds since the Unix epoch by the store's clock), written in the transaction of the
/// change itself: the install's settings-backup check reads it (`update::check_backup`).
const CHANGED_KEY: &str = "changed_unix_ms";

/// Records the change's time, or, for a store given no clock, removes any older time (so
/// that no stale time claims the configuration unchanged since).
fn note_changed(write: &WriteTransaction, now_unix_ms: Option<u64>) -> Result<(), StoreError> {
    let mut table = write.open_table(CONFIG_STATE).map_err(db_error)?;
    match now_unix_ms {
        Some(now_unix_ms) => {
            table
                .insert(CHANGED_KEY, now_unix_ms.to_le_bytes().as_slice())
                .map_err(db_error)?;
        }
        None => {
            table.remove(CHANGED_KEY).map_err(db_error)?;
        }
    }
    Ok(())
}

/// A logged change with its chain; `None` when the store logged it before chains were kept.
fn read_logged(
    chains: &impl ReadableTable<u64, &'static [u8]>,
    bytes: &[u8],
) -> Result<Option<ConfigChange>, StoreError> {
    let mut change = decode_config_change(bytes).map_err(corrupt)?;
    match chains.get(change.version.sequence).map_err(db_error)? {
        Some(chain) => {
            change.version.chain = decode_chain(chain.value())?;
            Ok(Some(change))
        }
        None => Ok(None),
    }
}

/// Applies one change inside `write`: value, version, history and chain.
fn apply_change(write: &WriteTransaction, change: &ConfigChange) -> Result<(), StoreError> {
    {
        let mut config = write.open_table(CONFIG).map_err(db_error)?;
        match &change.value {
            Some(value) => {
                config
                    .insert(change.key.as_str(), value.as_slice())
                    .map_err(db_error)?;
            }
            None => {
                config.remove(change.key.as_str()).map_err(db_error)?;
            }
        }
    }
    {
        let mut log = write.open_table(CONFIG_LOG).map_err(db_error)?;
        log.insert(
            change.version.sequence,
            encode_config_change(change).as_slice(),
        )
        .map_err(db_error)?;
        let mut chains = write.open_table(CONFIG_CHAINS).map_err(db_error)?;
        chains
            .insert(change.version.sequence, change.version.chain.as_slice())
            .map_err(db_error)?;
    }
    set_state(write, VERSION_KEY, &change.version)
}

/// Drops the oldest history beyond the limit, moving the floor up to the last dropped change.
fn compact(write: &WriteTransaction) -> Result<(), StoreError> {
    let mut log = write.open_table(CONFIG_LOG).map_err(db_error)?;
    let len = log.len().map_err(db_error)?;
    if len <= CONFIG_HISTORY_MAX_ENTRIES {
        return Ok(());
    }
    let mut chains = write.open_table(CONFIG_CHAINS).map_err(db_error)?;
    let mut floor = None;
    for _ in 0..(len - CONFIG_HISTORY_MAX_ENTRIES) {
        if let Some((_, bytes)) = log.pop_first().map_err(db_error)? {
            let mut version = decode_config_change(bytes.value())
                .map_err(corrupt)?
                .version;
            version.chain = match chains.remove(version.sequence).map_err(db_error)? {
                Some(chain) => decode_chain(chain.value())?,
                None => CONFIG_CHAIN_ZERO,
            };
            floor = Some(version);
        }
    }
    drop(log);
    drop(chains);
    if let Some(floor) = floor {
        set_state(write, FLOOR_KEY, &floor)?;
    }
    Ok(())
}

impl Store {
    /// The configuration's current version.
    pub fn config_version(&self) -> Result<ConfigVersion, StoreError> {
        self.run(|inner| {
            let read = inner.db.begin_read().map_err(db_error)?;
            let state = read.open_table(CONFIG_STATE).map_err(db_error)?;
            read_state(&state, VERSION_KEY)
        })
    }

    /// One configuration value.
    /// When the site configuration last changed here (a write, or changes or a snapshot
    /// applied from the peer), by the store's clock; `None` if never since this was recorded.
    pub fn config_changed_unix_ms(&self) -> Result<Option<u64>, StoreError> {
        self.run(|inner| {
            let read = inner.db.begin_read().map_err(db_error)?;
            let state = read.open_table(CONFIG_STATE).map_err(db_error)?;
            let Some(bytes) = state.get(CHANGED_KEY).map_err(db_error)? else {
                return Ok(None);
            };
            let bytes: [u8; 8] =
                bytes
                    .value()
                    .try_into()
                    .map_err(|_| StoreError::CorruptRecord {
                        problem: "the configuration's change time is not 8 bytes".to_string(),
                    })?;
            Ok(Some(u64::from_le_bytes(bytes)))
        })
    }

    pub fn config_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_key(key)?;
        self.run(|inner| {
            let read = inner.db.begin_read().map_err(db_error)?;
            let table = read.open_table(CONFIG).map_err(db_error)?;
            let value = table.get(key).map_err(db_error)?;
            Ok(value.map(|value| value.value().to_vec()))
        })
    }

    /// Sets `key` in `epoch`, durably; returns the new version `(epoch, previous sequence + 1)`.
    /// Refused when `epoch` is older than the configuration's current epoch.
    pub fn config_set(
        &self,
        key: &str,
        value: &[u8],
        epoch: Epoch,
    ) -> Result<ConfigVersion, StoreError> {
        check_key(key)?;
        check_value(value)?;
        self.write_change(key, Some(value), epoch)
            .map(|version| version.expect("a set always makes a change"))
    }

    /// Deletes `key` in `epoch`; returns the new version, or `None` when the key was absent
    /// (nothing changes then).
    pub fn config_delete(
        &self,
        key: &str,
        epoch: Epoch,
    ) -> Result<Option<ConfigVersion>, StoreError> {
        check_key(key)?;
        self.write_change(key, None, epoch)
    }

    fn write_change(
        &self,
        key: &str,
        value: Option<&[u8]>,
        epoch: Epoch,
    ) -> Result<Option<ConfigVersion>, StoreError> {
        self.run(|inner| {
            let write = inner.db.begin_write().map_err(db_error)?;
            let current = {
                let state = write.open_table(CONFIG_STATE).map_err(db_error)?;
                read_state(&state, VERSION_KEY)?
            };
            if epoch < current.epoch {
                return Err(StoreError::StaleEpoch {
                    current: current.epoch,
                    given: epoch,
                });
            }
            if value.is_none() {
                let config = write.open_table(CONFIG).map_err(db_error)?;
                if config.get(key).map_err(db_error)?.is_none() {
                    return Ok(None);
                }
            }
            let mut version = ConfigVersion {
                epoch,
                sequence: current.sequence + 1,
                chain: CONFIG_CHAIN_ZERO,
            };
            version.chain = config_chain(&current.chain, &version, key, value);
            apply_change(
                &write,
                &ConfigChange {
                    version,
                    key: key.to_string(),
                    value: value.map(<[u8]>::to_vec),
                },
            )?;
            compact(&write)?;
            note_changed(&write, inner.now_unix_ms())?;
            write.commit().map_err(db_error)?;
            Ok(Some(version))
        })
    }

    /// Entries whose key starts with `prefix`, sorted by key.
    pub fn config_list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.run(|inner| {
            let read = inner.db.begin_read().map_err(db_error)?;
            let table = read.open_table(CONFIG).map_err(db_error)?;
            let mut out = Vec::new();
            for entry in table.range(prefix..).map_err(db_error)? {
                let (key, value) = entry.map_err(db_error)?;
                if !key.value().starts_with(prefix) {
                    break;
                }
                out.push((key.value().to_string(), value.value().to_vec()));
            }
            Ok(out)
        })
    }

    /// The changes after `since`, oldest first; `None` when they are no longer all kept or
    /// `since` is not a version of this configuration's history (a snapshot is needed then).
    pub fn config_changes_since(
        &self,
        since: ConfigVersion,
    ) -> Result<Option<Vec<ConfigChange>>, StoreError> {
        self.run(|inner| {
            let read = inner.db.begin_read().map_err(db_error)?;
            let state = read.open_table(CONFIG_STATE).map_err(db_error)?;
            let current = read_state(&state, VERSION_KEY)?;
            let floor = read_state(&state, FLOOR_KEY)?;
            if since == current {
                return Ok(Some(Vec::new()));
            }
            if since.sequence > current.sequence || since.sequence < floor.sequence {
                return Ok(None);
            }
            let log = read.open_table(CONFIG_LOG).map_err(db_error)?;
            let chains = read.open_table(CONFIG_CHAINS).map_err(db_error)?;
            // `since` must be a version of this history by its chain, not only its numbers.
            let known = if since.sequence == floor.sequence {
                since == floor
            } else {
                match log.get(since.sequence).map_err(db_error)? {
                    Some(bytes) => read_logged(&chains, bytes.value())?
                        .is_some_and(|change| change.version == since),
                    None => false,
                }
            };
            if !known {
                return Ok(None);
            }
            let mut changes = Vec::new();
            for entry in log.range(since.sequence + 1..).map_err(db_error)? {
                let (_, bytes) = entry.map_err(db_error)?;
                match read_logged(&chains, bytes.value())? {
                    Some(change) => changes.push(change),
                    // Logged before chains were kept: only a snapshot carries a chain on.
                    None => return Ok(None),
                }
            }
            Ok(Some(changes))
        })
    }

    /// The whole configuration and its version, read in one transaction.
    pub fn config_snapshot(&self) -> Result<ConfigSnapshot, StoreError> {
        self.run(|inner| {
            let read = inner.db.begin_read().map_err(db_error)?;
            let state = read.open_table(CONFIG_STATE).map_err(db_error)?;
            let version = read_state(&state, VERSION_KEY)?;
            let table = read.open_table(CONFIG).map_err(db_error)?;
            let mut entries = Vec::new();
            for entry in table.iter().map_err(db_error)? {
                let (key, value) = entry.map_err(db_error)?;
                entries.push((key.value().to_string(), value.value().to_vec()));
            }
            Ok(ConfigSnapshot { version, entries })
        })
    }

    /// Replaces the whole configuration with `snapshot`, atomically. The history restarts at
    /// the snapshot's version (and chain). Use [`Store::config_replace`] when the replaced
    /// configuration may differ: it keeps a conflict record in the same transaction.
    pub fn config_apply_snapshot(&self, snapshot: &ConfigSnapshot) -> Result<(), StoreError> {
        self.config_replace(snapshot, None).map(|_| ())
    }

    /// Replaces the whole configuration with `snapshot` and saves `conflict` (what the
    /// replaced configuration held that differs), in one transaction: after a crash both
    /// happened or neither. Returns the conflict record's number.
    pub fn config_replace(
        &self,
        snapshot: &ConfigSnapshot,
        conflict: Option<&ConflictRecord>,
    ) -> Result<Option<u64>, StoreError> {
        for (key, value) in &snapshot.entries {
            check_key(key)?;
            check_value(value)?;
        }
        if let Some(record) = conflict {
            check_conflict(record)?;
        }
        self.run(|inner| {
            let write = inner.db.begin_write().map_err(db_error)?;
            let number = match conflict {
                Some(record) => Some(insert_conflict(&write, record)?),
                None => None,
            };
            {
                let mut config = write.open_table(CONFIG).map_err(db_error)?;
                config.retain(|_, _| false).map_err(db_error)?;
                for (key, value) in &snapshot.entries {
                    config
                        .insert(key.as_str(), value.as_slice())
                        .map_err(db_error)?;
                }
                let mut log = write.open_table(CONFIG_LOG).map_err(db_error)?;
                log.retain(|_, _| false).map_err(db_error)?;
                let mut chains = write.open_table(CONFIG_CHAINS).map_err(db_error)?;
                chains.retain(|_, _| false).map_err(db_error)?;
            }
            set_state(&write, VERSION_KEY, &snapshot.version)?;
            set_state(&write, FLOOR_KEY, &snapshot.version)?;
            note_changed(&write, inner.now_unix_ms())?;
            write.commit().map_err(db_error)?;
            Ok(number)
        })
    }

    /// Applies `changes` (as from the primary's [`Store::config_changes_since`]) atomically:
    /// all or none. They must continue this configuration's sequence without a gap.
    pub fn config_apply_changes(&self, changes: &[ConfigChange]) -> Result<(), StoreError> {
        if changes.len() > MAX_CONFIG_CHANGES_PER_APPLY {
            return Err(StoreError::InvalidInput {
                problem: format!(
                    "{} configuration changes at once is above the limit of {MAX_CONFIG_CHANGES_PER_APPLY}",
                    changes.len()
                ),
            });
        }
        for change in changes {
            check_key(&change.key)?;
            if let Some(value) = &change.value {
                check_value(value)?;
            }
        }
        let Some(first) = changes.first() else {
            return Ok(());
        };
        self.run(|inner| {
            let write = inner.db.begin_write().map_err(db_error)?;
            let current = {
                let state = write.open_table(CONFIG_STATE).map_err(db_error)?;
                read_state(&state, VERSION_KEY)?
            };
            let mut previous = current;
            for change in changes {
                // Each change must continue this history by content: its chain is the one
                // this store computes from its own chain and the change.
                let chain = config_chain(
                    &previous.chain,
                    &change.version,
                    &change.key,
                    change.value.as_deref(),
                );
                if change.version.sequence != previous.sequence + 1
                    || change.version.epoch < previous.epoch
                    || change.version.chain != chain
                {
                    return Err(StoreError::ChangesOutOfOrder {
                        current: Box::new(current),
                        first: Box::new(first.version),
                    });
                }
                previous = change.version;
            }
            for change in changes {
                apply_change(&write, change)?;
            }
            compact(&write)?;
            note_changed(&write, inner.now_unix_ms())?;
            write.commit().map_err(db_error)
        })
    }

    /// Saves a conflict record durably; returns its number. (A restore carries an
    /// appliance's conflict history over with it.)
    pub fn config_save_conflict(&self, record: &ConflictRecord) -> Result<u64, StoreError> {
        check_conflict(record)?;
        self.run(|inner| {
            let write = inner.db.begin_write().map_err(db_error)?;
            let number = insert_conflict(&write, record)?;
            write.commit().map_err(db_error)?;
            Ok(number)
        })
    }

    /// All conflict records, oldest first, with their numbers.
    pub fn conflicts_list(&self) -> Result<Vec<(u64, ConflictRecord)>, StoreError> {
        self.run(|inner| {
            let read = inner.db.begin_read().map_err(db_error)?;
            let table = read.open_table(CONFLICTS).map_err(db_error)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(db_error)? {
                let (key, bytes) = entry.map_err(db_error)?;
                out.push((
                    key.value(),
                    decode_conflict(bytes.value()).map_err(corrupt)?,
                ));
            }
            Ok(out)
        })
    }
}

fn check_conflict(record: &ConflictRecord) -> Result<(), StoreError> {
    if record.entries.len() > super::records::MAX_CONFLICT_ENTRIES {
        return Err(StoreError::InvalidInput {
            problem: "conflict record has more entries than the limit".to_string(),
        });
    }
    for entry in &record.entries {
        check_key(&entry.key)?;
        for value in [&entry.local, &entry.incoming].into_iter().flatten() {
            check_value(value)?;
        }
    }
    Ok(())
}

/// Adds `record` as the next conflict inside `write`; returns its number.
fn insert_conflict(write: &WriteTransaction, record: &ConflictRecord) -> Result<u64, StoreError> {
    let mut table = write.open_table(CONFLICTS).map_err(db_error)?;
    let number = match table.last().map_err(db_error)? {
        Some((key, _)) => key.value() + 1,
        None => 1,
    };
    table
        .insert(number, encode_conflict(record).as_slice())
        .map_err(db_error)?;
    Ok(number)
}
