//! One consistent read of everything a settings backup takes from the store.
//!
//! A backup taken while `dyad serve` runs must not mix a configuration from before a write
//! with a replica state or a session floor from after it, so all of it is read in one redb
//! read transaction while the store's lock is held (the high-water marks come from the
//! in-memory summary index, which changes only under that lock).

use std::collections::BTreeMap;

use dyad_wire::NodeId;
use redb::{ReadableDatabase, ReadableTable};

use super::catalog::LOCAL_FLOOR_KEY;
use super::config::{read_state, VERSION_KEY};
use super::error::{corrupt, db_error, StoreError};
use super::records::{decode_conflict, ConfigSnapshot, ConflictRecord};
use super::store::{check_key, Store};
use super::tables::{CONFIG, CONFIG_STATE, CONFLICTS, COUNTERS, LOCAL};

/// The store's part of a settings backup, as of one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingsRead {
    pub config: ConfigSnapshot,
    /// The requested appliance-local keys that exist.
    pub local: BTreeMap<String, Vec<u8>>,
    /// The lowest sequence this appliance may give its next own session.
    pub local_sequence_floor: u64,
    /// The highest sequence held, per origin.
    pub high_water_marks: BTreeMap<NodeId, u64>,
    /// The conflict records, oldest first: a restore carries the history over.
    pub conflicts: Vec<ConflictRecord>,
}

impl Store {
    /// Reads the configuration, the `local_keys` of the appliance-local namespace, the local
    /// sequence floor and the high-water marks in one transaction.
    pub fn settings_read(&self, local_keys: &[&str]) -> Result<SettingsRead, StoreError> {
        for key in local_keys {
            check_key(key)?;
        }
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
            let local_table = read.open_table(LOCAL).map_err(db_error)?;
            let mut local = BTreeMap::new();
            for key in local_keys {
                if let Some(value) = local_table.get(*key).map_err(db_error)? {
                    local.insert((*key).to_string(), value.value().to_vec());
                }
            }
            let conflict_table = read.open_table(CONFLICTS).map_err(db_error)?;
            let mut conflicts = Vec::new();
            for entry in conflict_table.iter().map_err(db_error)? {
                let (_, bytes) = entry.map_err(db_error)?;
                conflicts.push(decode_conflict(bytes.value()).map_err(corrupt)?);
            }
            let counters = read.open_table(COUNTERS).map_err(db_error)?;
            let local_sequence_floor = counters
                .get(LOCAL_FLOOR_KEY)
                .map_err(db_error)?
                .map_or(1, |value| value.value());
            Ok(SettingsRead {
                config: ConfigSnapshot { version, entries },
                local,
                local_sequence_floor,
                high_water_marks: inner.summary.high_water_marks(),
                conflicts,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use dyad_wire::Epoch;

    use super::*;
    use crate::disk::sim::SimDisk;
    use crate::ImportInfo;

    #[test]
    fn reads_configuration_local_keys_floor_and_marks_together() {
        let disk: std::sync::Arc<dyn crate::disk::Disk> = SimDisk::new(1);
        let store = Store::open(disk).expect("open");
        let node = NodeId([3; 16]);
        let epoch = Epoch { counter: 1, node };
        store.config_set("site/name", b"north", epoch).expect("set");
        store.local_set("replica/state", b"{}").expect("local");
        store.local_set("other", b"x").expect("local");
        let info = ImportInfo {
            origin: node,
            started_unix_ms: 1,
            ended_unix_ms: 2,
            ended_normally: true,
            expected_len: None,
            expected_root: None,
        };
        store
            .import_recording(&b"recording"[..], info)
            .expect("import");
        let read = store
            .settings_read(&["replica/state", "absent"])
            .expect("read");
        assert_eq!(read.config, store.config_snapshot().expect("snapshot"));
        assert_eq!(read.local.len(), 1);
        assert_eq!(read.local["replica/state"], b"{}");
        assert_eq!(read.high_water_marks.get(&node), Some(&1));
        assert_eq!(
            read.local_sequence_floor,
            store.local_sequence_floor().expect("floor")
        );
        assert!(read.local_sequence_floor > 1);
    }
}
