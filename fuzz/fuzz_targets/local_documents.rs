//! Arbitrary bytes through the decoders of this appliance's own documents: the replica state
//! (kept in the store), the settings file (`appliance.json`) and the admin socket's requests
//! and replies. A damaged file or a stray client must get an error, never a panic; whatever
//! decodes must survive its own encoding unchanged.
//!
//! Random bytes seldom spell a field name, so each input is also applied as an overwrite to a
//! valid document of each kind: that reaches the checks behind the JSON syntax (node ids,
//! hex fingerprints, versions, formats) without a committed corpus.
#![no_main]

use std::sync::OnceLock;

use dyad_node::appliance::ApplianceSettings;
use dyad_node::admin::{AdminReply, AdminRequest};
use dyad_core::replica::state::{PeerRecord, ReplicaState, SyncRecord};
use dyad_wire::{NodeId, Role, SoftwareVersion, Version};
use libfuzzer_sys::fuzz_target;

fn decode_all(data: &[u8]) {
    if let Ok(state) = ReplicaState::from_json(data) {
        assert_eq!(ReplicaState::from_json(&state.to_json()), Ok(state));
    }
    if let Ok(settings) = ApplianceSettings::from_json(data) {
        assert_eq!(
            ApplianceSettings::from_json(&settings.to_json()),
            Ok(settings)
        );
    }
    if let Ok(request) = serde_json::from_slice::<AdminRequest>(data) {
        let encoded = serde_json::to_vec(&request).expect("a decoded request encodes");
        let again: AdminRequest = serde_json::from_slice(&encoded).expect("its encoding decodes");
        assert_eq!(again, request);
    }
    // Replies carry free-form JSON values (numbers may not round-trip exactly): decode only.
    let _ = serde_json::from_slice::<AdminReply>(data);
}

/// One valid document of each kind.
fn templates() -> &'static [Vec<u8>] {
    static TEMPLATES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let mut state = ReplicaState::initial(NodeId([7; 16]));
        state.role = Role::Backup;
        state.peer = Some(PeerRecord {
            node_id: NodeId([9; 16]),
            name: "appliance-a".into(),
            certificate_fingerprint: [0xab; 32],
            address: "10.0.0.1:7400".into(),
        });
        state.last_sync = Some(SyncRecord {
            finished_unix_ms: 1_700_000_000_000,
            succeeded: false,
            interrupted: true,
            text: "the link was lost".into(),
            sessions_pulled: 3,
            bytes_pulled: 12_345,
            last_success_unix_ms: Some(1_600_000_000_000),
        });
        state.first_sync_due_unix_ms = Some(1_700_000_060_000);
        state.superseded = vec![NodeId([5; 16])];
        let version = Version {
            major: 7,
            minor: 3,
            patch: 1,
        };
        let settings = ApplianceSettings {
            node_id: NodeId([7; 16]),
            predecessors: vec![NodeId([6; 16])],
            name: "appliance-b".into(),
            listen: "10.0.0.2:7400".into(),
            site_hostname: Some("recordings.example.com".into()),
            software: SoftwareVersion {
                app: version,
                base: version,
            },
        };
        let request = AdminRequest::SessionImport {
            path: "/var/tmp/r.bin".into(),
            started_unix_ms: Some(1),
            ended_unix_ms: None,
        };
        vec![
            state.to_json(),
            settings.to_json(),
            serde_json::to_vec(&request).expect("a request encodes"),
            br#"{"progress":{"phase":"chunks","bytes_done":5}}"#.to_vec(),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    decode_all(data);
    // data[0] picks a template, data[1..3] where to overwrite it, the rest what to write.
    if data.len() >= 3 {
        let templates = templates();
        let template = &templates[usize::from(data[0]) % templates.len()];
        let at = usize::from(u16::from_le_bytes([data[1], data[2]])) % (template.len() + 1);
        let patch = &data[3..];
        let mut document = template[..at].to_vec();
        document.extend_from_slice(patch);
        document.extend_from_slice(template.get(at + patch.len()..).unwrap_or_default());
        decode_all(&document);
    }
});
