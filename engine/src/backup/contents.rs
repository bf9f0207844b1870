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
use crate::store::{
    ConfigSnapshot, ConfigVersion, ConflictEntry, ConflictRecord, SettingsRead, Store, StoreError,
    CONFIG_CHAIN_ZERO,
};
use crate::transport::{Identity, InterApplianceKey};
use crate::update::VendorPublicKey;

/// Bumped when the payload's meaning changes; older payloads are migrated on decode.
///
/// Format 2 adds the configuration chain, the conflict history and the trusted vendor key.
/// A format-1 payload decodes with the configuration anchored at the zero chain (the restored
/// appliance's first sync then proves continuity by a full comparison), no conflicts and no
/// vendor key.
pub const CONTENTS_FORMAT: u32 = 2;
/// Most conflict records a backup carries (the newest are kept).
pub const CONFLICTS_MAX: usize = 1_000;
/// Most configuration entries a backup may hold.
pub const CONFIG_ENTRIES_MAX: usize = 100_000;
/// Most origins with a high-water mark.
pub const HIGH_WATER_MARKS_MAX: usize = 10_000;
/// The longest text field (PEM, settings, replica state).
pub const TEXT_FIELD_BYTES_MAX: usize = 256 * 1024;
/// The appliance-local key holding the replica's state (failover settings).
pub use crate::store::local_keys::REPLICA_STATE_KEY;

/// The store's part of a backup: what [`crate::store::Store::settings_read`] returns, decoded.
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

/// A decoded settings backup.
#[derive(Clone, Debug)]
pub struct BackupContents {
    pub taken_unix_ms: u64,
    pub settings: ApplianceSettings,
    pub identity: Identity,
    pub psk: InterApplianceKey,
    pub store: StoreSettings,
    /// The vendor public key the appliance trusted packages by (format 2).
    pub vendor_public_key: Option<VendorPublicKey>,
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
    /// Format 2: the trusted vendor public key file's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vendor_public_key: Option<String>,
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
                chain: Some(hex(&self.config.version.chain)),
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
                                entry.local.as_deref().map(hex),
                                entry.incoming.as_deref().map(hex),
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
            if record.entries.len() > crate::store::records::MAX_CONFLICT_ENTRIES {
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
            vendor_public_key: self
                .vendor_public_key
                .as_ref()
                .map(VendorPublicKey::to_text),
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
        let vendor_public_key = match document.vendor_public_key {
            Some(text) => {
                check_text("vendor public key", &text)?;
                Some(
                    VendorPublicKey::parse(&text)
                        .map_err(|why| format!("the backup's vendor public key: {why}"))?,
                )
            }
            None => None,
        };
        Ok(BackupContents {
            taken_unix_ms: document.taken_unix_ms,
            settings,
            identity,
            psk,
            store,
            vendor_public_key,
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
                predecessors: vec![NodeId([6; 16])],
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
                        chain: [0x5c; 32],
                    },
                    entries: vec![
                        ("a".into(), b"\x00\xff".to_vec()),
                        ("site/name".into(), b"north".to_vec()),
                    ],
                },
                replica_state: Some(state),
                local_sequence_floor: 4,
                high_water_marks: BTreeMap::from([(node, 7), (NodeId([9; 16]), 30)]),
                conflicts: vec![ConflictRecord {
                    recorded_unix_ms: 1_699_999_000_000,
                    local_version: ConfigVersion {
                        epoch: Epoch {
                            counter: 1,
                            node: NodeId([9; 16]),
                        },
                        sequence: 3,
                        chain: CONFIG_CHAIN_ZERO,
                    },
                    incoming_version: ConfigVersion {
                        epoch: Epoch {
                            counter: 2,
                            node: NodeId([9; 16]),
                        },
                        sequence: 4,
                        chain: CONFIG_CHAIN_ZERO,
                    },
                    entries: vec![
                        ConflictEntry {
                            key: "site/x".into(),
                            local: Some(b"old".to_vec()),
                            incoming: Some(b"new".to_vec()),
                        },
                        ConflictEntry {
                            key: "site/z".into(),
                            local: None,
                            incoming: Some(Vec::new()),
                        },
                    ],
                }],
            },
            vendor_public_key: Some(crate::update::VendorPublicKey([7; 32])),
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
        assert_eq!(decoded.vendor_public_key, contents.vendor_public_key);
    }

    /// A format-1 payload (before chains, conflicts and the vendor key were carried) still
    /// decodes: the configuration at the zero anchor, no conflicts, no vendor key.
    #[test]
    fn format_1_contents_decode_with_the_zero_anchor() {
        let mut contents = sample(NodeId([1; 16]));
        contents.store.conflicts.clear();
        contents.vendor_public_key = None;
        let text = String::from_utf8(contents.encode()).expect("utf-8");
        let chain = format!(",\"chain\":\"{}\"", hex(&[0x5c; 32]));
        assert!(text.contains(&chain));
        let old = text
            .replacen("\"format\":2", "\"format\":1", 1)
            .replacen(&chain, "", 1)
            .replacen(",\"conflicts\":[]", "", 1);
        let decoded = BackupContents::decode(old.as_bytes()).expect("format 1 decodes");
        assert_eq!(decoded.store.config.version.chain, CONFIG_CHAIN_ZERO);
        assert_eq!(decoded.store.config.entries, contents.store.config.entries);
        assert!(decoded.store.conflicts.is_empty());
        assert_eq!(decoded.vendor_public_key, None);
    }

    #[test]
    fn damaged_contents_are_refused_with_a_reason() {
        let contents = sample(NodeId([1; 16]));
        let text = String::from_utf8(contents.encode()).expect("utf-8");
        for (from, to) in [
            ("\"format\":2", "\"format\":3"),
            ("\"format\":2", "\"format\":0"),
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
