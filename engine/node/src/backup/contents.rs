//! What a settings backup holds once decrypted, and its versioned encoding.
//!
//! The payload is JSON: small, readable when debugging a restore, and with a decoder that
//! refuses unknown fields. It only ever exists inside the sealed part of the envelope, because
//! it carries the private key and the inter-appliance key. Decoding checks every part the way
//! the data folder's own loaders do (settings, identity, key, replica state, configuration
//! limits), so a restore never writes something the appliance would refuse to open.

use serde::{Deserialize, Serialize};

use dyad_store::settings_backup::check_text;
pub use dyad_store::settings_backup::{
    StoreDocument, StoreSettings, CONFIG_ENTRIES_MAX, CONFLICTS_MAX, HIGH_WATER_MARKS_MAX,
    RESTORED_SEQUENCE_FLOOR, TEXT_FIELD_BYTES_MAX,
};

use crate::appliance::ApplianceSettings;
use crate::transport::{Identity, InterApplianceKey};
use crate::update::VendorPublicKey;

/// Bumped when the payload's meaning changes; older payloads are migrated on decode.
///
/// Format 2 adds the configuration chain, the conflict history and the trusted vendor key.
/// A format-1 payload decodes with the configuration anchored at the zero chain (the restored
/// appliance's first sync then proves continuity by a full comparison), no conflicts and no
/// vendor key.
pub const CONTENTS_FORMAT: u32 = 2;
/// The appliance-local key holding the replica's state (failover settings).
pub use dyad_store::local_keys::REPLICA_STATE_KEY;

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
    use dyad_core::replica::state::ReplicaState;
    use dyad_store::{
        ConfigSnapshot, ConfigVersion, ConflictEntry, ConflictRecord, CONFIG_CHAIN_ZERO,
    };
    use dyad_wire::Role;
    use dyad_wire::{Epoch, NodeId};
    use std::collections::BTreeMap;

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
        let chain = format!(",\"chain\":\"{}\"", dyad_wire::hex::encode(&[0x5c; 32]));
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
