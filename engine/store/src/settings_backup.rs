//! The store's part of a settings backup: what [`Store::settings_read`] returns, decoded and
//! checked, its JSON document, and the restore step that writes it into the fresh store of the
//! restored appliance. The node seals it into the backup file with the appliance's own parts;
//! the simulator's hardware migration runs the same decoding and restore.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use dyad_core::replica::state::{parse_node_id, ReplicaState};
use dyad_wire::{Epoch, NodeId};

use crate::error::StoreError;
use crate::local_keys::REPLICA_STATE_KEY;
use crate::records::{
    ConfigSnapshot, ConfigVersion, ConflictEntry, ConflictRecord, CONFIG_CHAIN_ZERO,
    MAX_CONFIG_KEY_BYTES, MAX_CONFIG_VALUE_BYTES,
};
use crate::settings_read::SettingsRead;
use crate::store::Store;

/// Most conflict records a backup carries (the newest are kept).
pub const CONFLICTS_MAX: usize = 1_000;
/// Most configuration entries a backup may hold.
pub const CONFIG_ENTRIES_MAX: usize = 100_000;
/// Most origins with a high-water mark.
pub const HIGH_WATER_MARKS_MAX: usize = 10_000;
/// The longest text field (PEM, settings, replica state).
pub const TEXT_FIELD_BYTES_MAX: usize = 256 * 1024;

/// The store's part of a backup: what [`Store::settings_read`] returns, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSettings {
    pub config: ConfigSnapshot,
    /// The failover settings (role, epoch, peer with its pinned certificate); `None` on an
    /// appliance whose replica never ran.
    pub replica_state: Option<ReplicaState>,
    pub local_sequence_floor: u64,
    pub high_water_marks: BTreeMap<NodeId, u64>,
    /// The appliance's conflict records, oldest first.
    pub conflicts: Vec<ConflictRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigDocument {
    epoch_counter: u64,
    epoch_node: String,
    sequence: u64,
    /// The version's chain as hex (format 2; absent in format 1: the zero anchor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain: Option<String>,
    /// `[key, value as hex]`, sorted by key.
    entries: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionDocument {
    epoch_counter: u64,
    epoch_node: String,
    sequence: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConflictDocument {
    recorded_unix_ms: u64,
    local_version: VersionDocument,
    incoming_version: VersionDocument,
    /// `[key, this appliance's value, the incoming value]`, values as hex, absent as null.
    entries: Vec<(String, Option<String>, Option<String>)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkDocument {
    origin: String,
    sequence: u64,
}

/// The store part as JSON: also what the admin socket's `backup-snapshot` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreDocument {
    config: ConfigDocument,
    replica_state: Option<String>,
    local_sequence_floor: u64,
    high_water_marks: Vec<MarkDocument>,
    /// Format 2.
    #[serde(default)]
    conflicts: Vec<ConflictDocument>,
}

fn version_document(version: &ConfigVersion) -> VersionDocument {
    VersionDocument {
        epoch_counter: version.epoch.counter,
        epoch_node: version.epoch.node.to_string(),
        sequence: version.sequence,
    }
}

fn version_from(document: &VersionDocument) -> Result<ConfigVersion, String> {
    Ok(ConfigVersion {
        epoch: Epoch {
            counter: document.epoch_counter,
            node: parse_node_id(&document.epoch_node)?,
        },
        sequence: document.sequence,
        chain: CONFIG_CHAIN_ZERO,
    })
}

fn checked_value(key: &str, text: &str) -> Result<Vec<u8>, String> {
    if text.len() > MAX_CONFIG_VALUE_BYTES * 2 {
        return Err(format!("configuration value of {key:?} is too large"));
    }
    unhex(text).map_err(|why| format!("configuration {key:?}: {why}"))
}

pub fn check_text(field: &str, text: &str) -> Result<(), String> {
    if text.len() > TEXT_FIELD_BYTES_MAX {
        return Err(format!(
            "{field} of {} bytes is above the limit of {TEXT_FIELD_BYTES_MAX}",
            text.len()
        ));
    }
    Ok(())
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err("a hex value has an odd length".into());
    }
    (0..text.len())
        .step_by(2)
        .map(|index| {
            text.get(index..index + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| "a value is not hex".to_string())
        })
        .collect()
}

impl StoreSettings {
    /// Decodes what the store read (the replica state is parsed, so a damaged one is refused
    /// when the backup is taken, not when it is restored).
    pub fn from_read(read: &SettingsRead) -> Result<StoreSettings, String> {
        let replica_state = match read.local.get(REPLICA_STATE_KEY) {
            Some(bytes) => Some(ReplicaState::from_json(bytes)?),
            None => None,
        };
        let skip = read.conflicts.len().saturating_sub(CONFLICTS_MAX);
        Ok(StoreSettings {
            config: read.config.clone(),
            replica_state,
            local_sequence_floor: read.local_sequence_floor,
            high_water_marks: read.high_water_marks.clone(),
            conflicts: read.conflicts[skip..].to_vec(),
        })
    }

    pub fn to_document(&self) -> StoreDocument {
        StoreDocument {
            config: ConfigDocument {
                epoch_counter: self.config.version.epoch.counter,
                epoch_node: self.config.version.epoch.node.to_string(),
                sequence: self.config.version.sequence,
                chain: Some(dyad_wire::hex::encode(&self.config.version.chain)),
                entries: self
                    .config
                    .entries
                    .iter()
                    .map(|(key, value)| (key.clone(), dyad_wire::hex::encode(value)))
                    .collect(),
            },
            replica_state: self
                .replica_state
                .as_ref()
                .map(|state| String::from_utf8_lossy(&state.to_json()).into_owned()),
            local_sequence_floor: self.local_sequence_floor,
            high_water_marks: self
                .high_water_marks
                .iter()
                .map(|(origin, sequence)| MarkDocument {
                    origin: origin.to_string(),
                    sequence: *sequence,
                })
                .collect(),
            conflicts: self
                .conflicts
                .iter()
                .map(|record| ConflictDocument {
                    recorded_unix_ms: record.recorded_unix_ms,
                    local_version: version_document(&record.local_version),
                    incoming_version: version_document(&record.incoming_version),
                    entries: record
                        .entries
                        .iter()
                        .map(|entry| {
                            (
                                entry.key.clone(),
                                entry.local.as_deref().map(dyad_wire::hex::encode),
                                entry.incoming.as_deref().map(dyad_wire::hex::encode),
                            )
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    pub fn from_document(document: StoreDocument) -> Result<StoreSettings, String> {
        let config = document.config;
        if config.entries.len() > CONFIG_ENTRIES_MAX {
            return Err(format!(
                "{} configuration entries is above the limit of {CONFIG_ENTRIES_MAX}",
                config.entries.len()
            ));
        }
        let mut entries = Vec::with_capacity(config.entries.len());
        for (key, value) in config.entries {
            if key.len() > MAX_CONFIG_KEY_BYTES {
                return Err(format!(
                    "configuration key of {} bytes is too long",
                    key.len()
                ));
            }
            if entries
                .last()
                .is_some_and(|(previous, _): &(String, Vec<u8>)| *previous >= key)
            {
                return Err(format!(
                    "configuration key {key:?} is out of order or repeated"
                ));
            }
            let value = checked_value(&key, &value)?;
            entries.push((key, value));
        }
        let chain = match &config.chain {
            Some(text) => unhex(text)
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| "the configuration chain is not 32 bytes of hex".to_string())?,
            None => CONFIG_CHAIN_ZERO,
        };
        let version = ConfigVersion {
            epoch: Epoch {
                counter: config.epoch_counter,
                node: parse_node_id(&config.epoch_node)?,
            },
            sequence: config.sequence,
            chain,
        };
        let replica_state = match document.replica_state {
            Some(text) => {
                check_text("replica state", &text)?;
                Some(ReplicaState::from_json(text.as_bytes())?)
            }
            None => None,
        };
        if document.high_water_marks.len() > HIGH_WATER_MARKS_MAX {
            return Err(format!(
                "{} origins is above the limit of {HIGH_WATER_MARKS_MAX}",
                document.high_water_marks.len()
            ));
        }
        let mut high_water_marks = BTreeMap::new();
        for mark in document.high_water_marks {
            let origin = parse_node_id(&mark.origin)?;
            if high_water_marks.insert(origin, mark.sequence).is_some() {
                return Err(format!("origin {origin} has two high-water marks"));
            }
        }
        if document.conflicts.len() > CONFLICTS_MAX {
            return Err(format!(
                "{} conflict records is above the limit of {CONFLICTS_MAX}",
                document.conflicts.len()
            ));
        }
        let mut conflicts = Vec::with_capacity(document.conflicts.len());
        for record in &document.conflicts {
            if record.entries.len() > crate::records::MAX_CONFLICT_ENTRIES {
                return Err("a conflict record has more entries than the limit".into());
            }
            let mut entries = Vec::with_capacity(record.entries.len());
            for (key, local, incoming) in &record.entries {
                if key.len() > MAX_CONFIG_KEY_BYTES {
                    return Err(format!("conflict key of {} bytes is too long", key.len()));
                }
                let value = |text: &Option<String>| {
                    text.as_deref()
                        .map(|text| checked_value(key, text))
                        .transpose()
                };
                entries.push(ConflictEntry {
                    key: key.clone(),
                    local: value(local)?,
                    incoming: value(incoming)?,
                });
            }
            conflicts.push(ConflictRecord {
                recorded_unix_ms: record.recorded_unix_ms,
                local_version: version_from(&record.local_version)?,
                incoming_version: version_from(&record.incoming_version)?,
                entries,
            });
        }
        Ok(StoreSettings {
            config: ConfigSnapshot { version, entries },
            replica_state,
            local_sequence_floor: document.local_sequence_floor,
            high_water_marks,
            conflicts,
        })
    }

    /// Reads the store's part of a settings backup from `store`, in one transaction (what the
    /// running server answers to `backup-snapshot`).
    pub fn read_from(store: &Store) -> Result<StoreSettings, String> {
        let read = store
            .settings_read(&[REPLICA_STATE_KEY])
            .map_err(|error| error.to_string())?;
        StoreSettings::from_read(&read)
    }

    /// Writes this backup's store part into the fresh store of the restored appliance, which
    /// has the new node id `node` (never the old one: see `docs/architecture.md`, *Identity
    /// after a restore*): the configuration snapshot, the conflict history, and the failover
    /// settings as the new hardware must hold them ([`ReplicaState::restored_as`]). Its own
    /// sessions are numbered from [`RESTORED_SEQUENCE_FLOOR`] under its new id, so none can
    /// collide with the old hardware's. Returns that floor. The restore of a data folder and
    /// the simulator's hardware migration both use it.
    pub fn restore_into(
        &self,
        store: &Store,
        old_node: NodeId,
        node: NodeId,
    ) -> Result<u64, StoreError> {
        if node == old_node {
            return Err(StoreError::InvalidInput {
                problem: format!(
                    "a restore must take a new node id, and {node} is the backed-up appliance's"
                ),
            });
        }
        for record in &self.conflicts {
            store.config_save_conflict(record)?;
        }
        store.config_apply_snapshot(&self.config)?;
        // An appliance whose replica never saved a state was standalone in its first epoch.
        // Either way the restored state must know the configuration's epoch, so that the
        // restored writer's own epoch goes above it (a write below it would be refused).
        let mut state = self
            .replica_state
            .clone()
            .unwrap_or_else(|| ReplicaState::initial(old_node));
        state.observe_epoch(self.config.version.epoch);
        store.local_set(REPLICA_STATE_KEY, &state.restored_as(node).to_json())?;
        store.set_local_sequence_floor(RESTORED_SEQUENCE_FLOOR)?;
        Ok(RESTORED_SEQUENCE_FLOOR)
    }
}

/// Where a restored appliance's own sessions start under its new node id.
pub const RESTORED_SEQUENCE_FLOOR: u64 = 1;
