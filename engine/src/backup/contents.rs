//! What a settings backup holds once decrypted, and its versioned encoding.
//!
//! The payload is JSON: small, readable when debugging a restore, and with a decoder that
//! refuses unknown fields. It only ever exists inside the sealed part of the envelope, because
//! it carries the private key and the inter-appliance key. Decoding checks every part the way
//! the data folder's own loaders do (settings, identity, key, replica state, configuration
//! limits), so a restore never writes something the appliance would refuse to open.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use dyad_wire::{Epoch, NodeId};

use crate::appliance::ApplianceSettings;
use crate::replica::state::{hex, parse_node_id, ReplicaState};
use crate::store::records::{MAX_CONFIG_KEY_BYTES, MAX_CONFIG_VALUE_BYTES};
use crate::store::{ConfigSnapshot, ConfigVersion, SettingsRead, Store, StoreError};
use crate::transport::{Identity, InterApplianceKey};

/// Bumped when the payload's meaning changes; older payloads are migrated on decode.
pub const CONTENTS_FORMAT: u32 = 1;
/// Most configuration entries a backup may hold.
pub const CONFIG_ENTRIES_MAX: usize = 100_000;
/// Most origins with a high-water mark.
pub const HIGH_WATER_MARKS_MAX: usize = 10_000;
/// The longest text field (PEM, settings, replica state).
pub const TEXT_FIELD_BYTES_MAX: usize = 256 * 1024;
/// Sequences a restore skips above everything the backup knew of the appliance's own sessions.
/// The backup cannot know the sessions the old hardware completed after it was taken, and some
/// of those may have reached the peer by sync: numbering on from the backup's marks would give
/// their ids again to other recordings (found by the simulator's hardware migration scenarios).
/// 2^20 is more sessions than a busy appliance records in years; `u64` sequences can afford it
/// at every restore, and nothing assumes an origin's sequences are contiguous.
pub const RESTORE_SEQUENCE_GAP: u64 = 1 << 20;
/// The appliance-local key holding the replica's state (failover settings).
pub const REPLICA_STATE_KEY: &str = crate::store::replica_port::REPLICA_STATE_KEY;

/// The store's part of a backup: what [`crate::store::Store::settings_read`] returns, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSettings {
    pub config: ConfigSnapshot,
    /// The failover settings (role, epoch, peer with its pinned certificate); `None` on an
    /// appliance whose replica never ran.
    pub replica_state: Option<ReplicaState>,
    pub local_sequence_floor: u64,
    pub high_water_marks: BTreeMap<NodeId, u64>,
}

/// A decoded settings backup.
#[derive(Clone, Debug)]
pub struct BackupContents {
    pub taken_unix_ms: u64,
    pub settings: ApplianceSettings,
    pub identity: Identity,
    pub psk: InterApplianceKey,
    pub store: StoreSettings,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigDocument {
    epoch_counter: u64,
    epoch_node: String,
    sequence: u64,
    /// `[key, value as hex]`, sorted by key.
    entries: Vec<(String, String)>,
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
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContentsDocument {
    format: u32,
    taken_unix_ms: u64,
    /// `appliance.json` as written by [`ApplianceSettings::to_json`].
    settings: String,
    cert_chain_pem: String,
    key_pem: String,
    /// The inter-appliance key in its printable form.
    psk: String,
    store: StoreDocument,
}

fn check_text(field: &str, text: &str) -> Result<(), String> {
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
        Ok(StoreSettings {
            config: read.config.clone(),
            replica_state,
            local_sequence_floor: read.local_sequence_floor,
            high_water_marks: read.high_water_marks.clone(),
        })
    }

    pub fn to_document(&self) -> StoreDocument {
        StoreDocument {
            config: ConfigDocument {
                epoch_counter: self.config.version.epoch.counter,
                epoch_node: self.config.version.epoch.node.to_string(),
                sequence: self.config.version.sequence,
                entries: self
                    .config
                    .entries
                    .iter()
                    .map(|(key, value)| (key.clone(), hex(value)))
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
            if value.len() > MAX_CONFIG_VALUE_BYTES * 2 {
                return Err(format!("configuration value of {key:?} is too large"));
            }
            if entries
                .last()
                .is_some_and(|(previous, _): &(String, Vec<u8>)| *previous >= key)
            {
                return Err(format!(
                    "configuration key {key:?} is out of order or repeated"
                ));
            }
            let value = unhex(&value).map_err(|why| format!("configuration {key:?}: {why}"))?;
            entries.push((key, value));
        }
        let version = ConfigVersion {
            epoch: Epoch {
                counter: config.epoch_counter,
                node: parse_node_id(&config.epoch_node)?,
            },
            sequence: config.sequence,
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
        Ok(StoreSettings {
            config: ConfigSnapshot { version, entries },
            replica_state,
            local_sequence_floor: document.local_sequence_floor,
            high_water_marks,
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

    /// Writes this backup's store part into the fresh store of the restored appliance `node`:
    /// the configuration snapshot, the failover settings, and a session floor above every
    /// sequence the old appliance used, as far as the backup knows. Returns that floor. The
    /// restore of a data folder and the simulator's hardware migration both use it.
    pub fn restore_into(&self, store: &Store, node: NodeId) -> Result<u64, StoreError> {
        let floor = self.restored_sequence_floor(node);
        store.config_apply_snapshot(&self.config)?;
        if let Some(state) = &self.replica_state {
            store.local_set(REPLICA_STATE_KEY, &state.to_json())?;
        }
        store.set_local_sequence_floor(floor)?;
        Ok(floor)
    }

    /// The lowest sequence the appliance `node` may give its next own session after a restore:
    /// above the floor it had and above every session of its own that it held, plus
    /// [`RESTORE_SEQUENCE_GAP`] for the sessions it may have completed after the backup.
    pub fn restored_sequence_floor(&self, node: NodeId) -> u64 {
        let above_marks = self
            .high_water_marks
            .get(&node)
            .map_or(1, |high| high.saturating_add(1));
        self.local_sequence_floor
            .max(above_marks)
            .saturating_add(RESTORE_SEQUENCE_GAP)
    }
}

impl BackupContents {
    /// The plaintext that goes inside the envelope.
    pub fn encode(&self) -> Vec<u8> {
        let document = ContentsDocument {
            format: CONTENTS_FORMAT,
            taken_unix_ms: self.taken_unix_ms,
            settings: String::from_utf8_lossy(&self.settings.to_json()).into_owned(),
            cert_chain_pem: self.identity.cert_chain_pem().to_string(),
            key_pem: self.identity.key_pem().to_string(),
            psk: self.psk.reveal_printable(),
            store: self.store.to_document(),
        };
        serde_json::to_vec(&document).expect("a struct of strings and numbers serializes")
    }

    /// Decodes and checks a decrypted payload.
    pub fn decode(bytes: &[u8]) -> Result<BackupContents, String> {
        let document: ContentsDocument = serde_json::from_slice(bytes)
            .map_err(|error| format!("the backup's contents are not valid: {error}"))?;
        if document.format > CONTENTS_FORMAT {
            return Err(format!(
                "the backup's contents have format {}, this build reads {CONTENTS_FORMAT} and \
                 older; use a newer version of dyad",
                document.format
            ));
        }
        if document.format == 0 {
            return Err("the backup's contents have format 0, which does not exist".into());
        }
        for (field, text) in [
            ("settings", &document.settings),
            ("certificate chain", &document.cert_chain_pem),
            ("private key", &document.key_pem),
            ("inter-appliance key", &document.psk),
        ] {
            check_text(field, text)?;
        }
        let settings = ApplianceSettings::from_json(document.settings.as_bytes())
            .map_err(|why| format!("the backup's appliance settings: {why}"))?;
        let identity = Identity::from_pem(
            document.cert_chain_pem.as_bytes(),
            document.key_pem.as_bytes(),
        )
        .map_err(|error| format!("the backup's identity: {error}"))?;
        let psk = InterApplianceKey::parse(&document.psk)
            .map_err(|error| format!("the backup's inter-appliance key: {error}"))?;
        let store = StoreSettings::from_document(document.store)
            .map_err(|why| format!("the backup's store settings: {why}"))?;
        Ok(BackupContents {
            taken_unix_ms: document.taken_unix_ms,
            settings,
            identity,
            psk,
            store,
        })
    }
}

/// Decodes `bytes`; whatever decodes must re-encode to contents that decode to the same
/// facts. For the fuzz target.
#[doc(hidden)]
pub fn check_decode_round_trip(bytes: &[u8]) {
    if let Ok(contents) = BackupContents::decode(bytes) {
        let again = BackupContents::decode(&contents.encode())
            .expect("decoded contents re-encode to decodable contents");
        assert_eq!(again.settings, contents.settings);
        assert_eq!(again.store, contents.store);
        assert_eq!(
            again.identity.fingerprint(),
            contents.identity.fingerprint()
        );
        assert_eq!(again.psk.fingerprint(), contents.psk.fingerprint());
        assert_eq!(again.taken_unix_ms, contents.taken_unix_ms);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::appliance::build_software_version;
    use dyad_wire::Role;

    pub(crate) fn sample(node: NodeId) -> BackupContents {
        let mut state = ReplicaState::initial(node);
        state.role = Role::Backup;
        BackupContents {
            taken_unix_ms: 1_700_000_000_000,
            settings: ApplianceSettings {
                node_id: node,
                name: "b".into(),
                listen: "127.0.0.1:7401".into(),
                site_hostname: None,
                software: build_software_version(),
            },
            identity: Identity::generate("b").expect("generate"),
            psk: crate::transport::keygen().expect("keygen"),
            store: StoreSettings {
                config: ConfigSnapshot {
                    version: ConfigVersion {
                        epoch: Epoch {
                            counter: 2,
                            node: NodeId([9; 16]),
                        },
                        sequence: 5,
                    },
                    entries: vec![
                        ("a".into(), b"\x00\xff".to_vec()),
                        ("site/name".into(), b"north".to_vec()),
                    ],
                },
                replica_state: Some(state),
                local_sequence_floor: 4,
                high_water_marks: BTreeMap::from([(node, 7), (NodeId([9; 16]), 30)]),
            },
        }
    }

    #[test]
    fn contents_round_trip() {
        let node = NodeId([1; 16]);
        let contents = sample(node);
        let decoded = BackupContents::decode(&contents.encode()).expect("decode");
        assert_eq!(decoded.settings, contents.settings);
        assert_eq!(decoded.store, contents.store);
        assert_eq!(
            decoded.identity.fingerprint(),
            contents.identity.fingerprint()
        );
        assert_eq!(decoded.psk.fingerprint(), contents.psk.fingerprint());
        assert_eq!(
            decoded.store.restored_sequence_floor(node),
            8 + RESTORE_SEQUENCE_GAP
        );
        assert_eq!(
            decoded.store.restored_sequence_floor(NodeId([2; 16])),
            4 + RESTORE_SEQUENCE_GAP
        );
    }

    #[test]
    fn damaged_contents_are_refused_with_a_reason() {
        let contents = sample(NodeId([1; 16]));
        let text = String::from_utf8(contents.encode()).expect("utf-8");
        for (from, to) in [
            ("\"format\":1", "\"format\":2"),
            ("\"format\":1", "\"format\":0"),
            ("\"sequence\":5", "\"sequence\":5,\"extra\":1"),
            ("\"00ff\"", "\"0g\""),
        ] {
            assert!(text.contains(from), "{from}");
            let damaged = text.replacen(from, to, 1);
            assert!(BackupContents::decode(damaged.as_bytes()).is_err(), "{to}");
        }
        assert!(BackupContents::decode(b"").is_err());
        assert!(BackupContents::decode(b"{}").is_err());
    }
}
