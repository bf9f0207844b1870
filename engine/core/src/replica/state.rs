//! The replica's durable state: role, epoch, peer and sync history.
//!
//! It is small and changes rarely (on establish, break, role change and at the end of each
//! sync), so it is kept as one JSON document in the store's appliance-local namespace, which
//! is never replicated. JSON keeps it readable for an operator inspecting a data folder; its
//! decoder refuses unknown fields and bad ids with a reason instead of guessing.

use serde::{Deserialize, Serialize};

use dyad_wire::{Epoch, NodeId, Role};

/// Bumped when the document's meaning changes; older documents are migrated on load.
pub const REPLICA_STATE_FORMAT: u32 = 1;

/// Where the relationship stands, as persisted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaState {
    pub role: Role,
    pub epoch: Epoch,
    /// The highest epoch counter this appliance has seen from anyone; new epochs go above it.
    pub epoch_counter_seen_max: u64,
    /// The other appliance of the relationship (or, after a break, the former one).
    pub peer: Option<PeerRecord>,
    /// After a break that the peer did not hear about, tell it when it is next reachable.
    pub break_unannounced: bool,
    pub last_sync: Option<SyncRecord>,
    /// When the first sync after establishing is due (wall clock, ms).
    pub first_sync_due_unix_ms: Option<u64>,
    /// This appliance was promoted without the old primary, which has not been seen since as
    /// a backup: it may still accept writes somewhere.
    pub forced_promotion_unresolved: bool,
    /// Node ids of the peer's old hardware, replaced by the peer's current node id when it
    /// was restored from a settings backup: refused if they ever connect again.
    pub superseded: Vec<NodeId>,
}

/// The paired appliance, pinned by its certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRecord {
    pub node_id: NodeId,
    pub name: String,
    /// BLAKE3 of the peer's certificate; connections presenting another one are refused.
    pub certificate_fingerprint: [u8; 32],
    /// The `host:port` by which this appliance reaches the peer.
    pub address: String,
}

/// The outcome of the last sync this appliance ran or took part in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRecord {
    pub finished_unix_ms: u64,
    pub succeeded: bool,
    /// The link to the peer was lost before the sync finished: this appliance's own job, or
    /// the peer's part of a Sync Now that this appliance was serving or waiting for. Always
    /// with `succeeded` false. Absent from documents written before it existed.
    #[serde(default)]
    pub interrupted: bool,
    pub text: String,
    pub sessions_pulled: u64,
    pub bytes_pulled: u64,
    /// The last successful sync, kept when a later one fails.
    pub last_success_unix_ms: Option<u64>,
}

impl ReplicaState {
    /// A freshly initialised appliance: standalone in its first epoch.
    pub fn initial(node: NodeId) -> ReplicaState {
        ReplicaState {
            role: Role::Standalone,
            epoch: Epoch { counter: 1, node },
            epoch_counter_seen_max: 1,
            peer: None,
            break_unannounced: false,
            last_sync: None,
            first_sync_due_unix_ms: None,
            forced_promotion_unresolved: false,
            superseded: Vec::new(),
        }
    }

    /// The state restored onto new hardware with the new node id `node`. A primary or
    /// standalone appliance writes configuration in its epoch, so it starts one of its own
    /// (`(counter above all seen, node)`): no write of the new hardware can carry the old
    /// hardware's stamps. A backup writes nothing and stays in the primary's epoch. The old
    /// hardware's sync history is not the new hardware's: it starts with none.
    pub fn restored_as(&self, node: NodeId) -> ReplicaState {
        let mut state = self.clone();
        state.last_sync = None;
        if state.role != Role::Backup {
            state.epoch = state.next_epoch(node);
        }
        state
    }

    /// A new epoch of this appliance's, above every epoch seen.
    pub fn next_epoch(&mut self, node: NodeId) -> Epoch {
        self.epoch_counter_seen_max += 1;
        Epoch {
            counter: self.epoch_counter_seen_max,
            node,
        }
    }

    pub fn observe_epoch(&mut self, epoch: Epoch) {
        self.epoch_counter_seen_max = self.epoch_counter_seen_max.max(epoch.counter);
    }

    pub fn to_json(&self) -> Vec<u8> {
        let document = Document {
            format: REPLICA_STATE_FORMAT,
            role: dyad_wire::Role::name(self.role).to_string(),
            epoch_counter: self.epoch.counter,
            epoch_node: self.epoch.node.to_string(),
            epoch_counter_seen_max: self.epoch_counter_seen_max,
            peer: self.peer.as_ref().map(|peer| PeerDocument {
                node_id: peer.node_id.to_string(),
                name: peer.name.clone(),
                certificate_fingerprint: dyad_wire::hex::encode(&peer.certificate_fingerprint),
                address: peer.address.clone(),
            }),
            break_unannounced: self.break_unannounced,
            last_sync: self.last_sync.clone(),
            first_sync_due_unix_ms: self.first_sync_due_unix_ms,
            forced_promotion_unresolved: self.forced_promotion_unresolved,
            superseded: self.superseded.iter().map(NodeId::to_string).collect(),
        };
        serde_json::to_vec_pretty(&document)
            .expect("a plain struct of strings and numbers serializes")
    }

    pub fn from_json(bytes: &[u8]) -> Result<ReplicaState, String> {
        let document: Document = serde_json::from_slice(bytes)
            .map_err(|error| format!("replica state is not valid: {error}"))?;
        if document.format != REPLICA_STATE_FORMAT {
            return Err(format!(
                "replica state has format {}, this build reads format {REPLICA_STATE_FORMAT}",
                document.format
            ));
        }
        let peer = match document.peer {
            None => None,
            Some(peer) => Some(PeerRecord {
                node_id: parse_node_id(&peer.node_id)?,
                name: peer.name,
                certificate_fingerprint: parse_hex32(&peer.certificate_fingerprint)?,
                address: peer.address,
            }),
        };
        let superseded = parse_lineage("superseded node ids", &document.superseded)?;
        Ok(ReplicaState {
            role: document
                .role
                .parse::<Role>()
                .map_err(|error| format!("replica state: {error}"))?,
            epoch: Epoch {
                counter: document.epoch_counter,
                node: parse_node_id(&document.epoch_node)?,
            },
            epoch_counter_seen_max: document.epoch_counter_seen_max.max(document.epoch_counter),
            peer,
            break_unannounced: document.break_unannounced,
            last_sync: document.last_sync,
            first_sync_due_unix_ms: document.first_sync_due_unix_ms,
            forced_promotion_unresolved: document.forced_promotion_unresolved,
            superseded,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    format: u32,
    role: String,
    epoch_counter: u64,
    epoch_node: String,
    epoch_counter_seen_max: u64,
    peer: Option<PeerDocument>,
    break_unannounced: bool,
    last_sync: Option<SyncRecord>,
    first_sync_due_unix_ms: Option<u64>,
    #[serde(default)]
    forced_promotion_unresolved: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    superseded: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerDocument {
    node_id: String,
    name: String,
    certificate_fingerprint: String,
    address: String,
}

/// A node id as written in the state document: [`NodeId`]'s own text form.
pub fn parse_node_id(text: &str) -> Result<NodeId, String> {
    text.parse::<NodeId>().map_err(|error| error.to_string())
}

/// A list of node ids of earlier hardware (`what` names it in errors), at most
/// [`dyad_wire::limits::MAX_PREDECESSORS`].
pub fn parse_lineage(what: &str, texts: &[String]) -> Result<Vec<NodeId>, String> {
    if texts.len() > dyad_wire::limits::MAX_PREDECESSORS {
        return Err(format!(
            "{} {what} is above the limit of {}",
            texts.len(),
            dyad_wire::limits::MAX_PREDECESSORS
        ));
    }
    texts.iter().map(|text| parse_node_id(text)).collect()
}

/// 32 bytes written as hex (certificate fingerprints, chains).
pub fn parse_hex32(text: &str) -> Result<[u8; 32], String> {
    dyad_wire::hex::decode_array::<32>(text).map_err(|why| format!("{text:?}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> ReplicaState {
        let node = NodeId([3; 16]);
        let mut state = ReplicaState::initial(node);
        state.role = Role::Backup;
        state.epoch = Epoch {
            counter: 7,
            node: NodeId([9; 16]),
        };
        state.epoch_counter_seen_max = 7;
        state.peer = Some(PeerRecord {
            node_id: NodeId([9; 16]),
            name: "appliance-a".into(),
            certificate_fingerprint: [0xab; 32],
            address: "10.0.0.1:7400".into(),
        });
        state.last_sync = Some(SyncRecord {
            finished_unix_ms: 5,
            succeeded: true,
            interrupted: false,
            text: "ok".into(),
            sessions_pulled: 2,
            bytes_pulled: 10,
            last_success_unix_ms: Some(5),
        });
        state.superseded = vec![NodeId([8; 16])];
        state
    }

    #[test]
    fn a_restored_writer_starts_an_epoch_of_its_own_and_no_sync_history() {
        let new = NodeId([4; 16]);
        let mut primary = sample();
        primary.role = Role::Primary;
        primary.epoch = Epoch {
            counter: 7,
            node: NodeId([3; 16]),
        };
        let restored = primary.restored_as(new);
        assert_eq!(
            restored.epoch,
            Epoch {
                counter: 8,
                node: new
            }
        );
        assert_eq!(restored.last_sync, None);
        assert_eq!(restored.peer, primary.peer);
        let backup = sample();
        let restored = backup.restored_as(new);
        assert_eq!(
            restored.epoch, backup.epoch,
            "a backup writes nothing: same epoch"
        );
        assert_eq!(restored.last_sync, None);
    }

    #[test]
    fn state_round_trips_through_json() {
        let state = sample();
        assert_eq!(ReplicaState::from_json(&state.to_json()), Ok(state));
    }

    #[test]
    fn a_sync_record_from_before_interruptions_were_recorded_still_loads() {
        let good = String::from_utf8(sample().to_json()).expect("json is utf-8");
        let old = good.replace("\"interrupted\": false,", "");
        assert_ne!(old, good, "the field is written");
        assert_eq!(ReplicaState::from_json(old.as_bytes()), Ok(sample()));
    }

    #[test]
    fn new_epochs_go_above_every_epoch_seen() {
        let node = NodeId([1; 16]);
        let mut state = ReplicaState::initial(node);
        state.observe_epoch(Epoch {
            counter: 41,
            node: NodeId([2; 16]),
        });
        assert_eq!(state.next_epoch(node), Epoch { counter: 42, node });
        assert_eq!(state.next_epoch(node).counter, 43);
    }

    #[test]
    fn damaged_documents_are_refused_with_a_reason() {
        let good = String::from_utf8(sample().to_json()).expect("json is utf-8");
        let bad_role = good.replace("\"backup\"", "\"captain\"");
        assert!(ReplicaState::from_json(bad_role.as_bytes())
            .unwrap_err()
            .contains("captain"));
        let bad_id = good.replace(&NodeId([9; 16]).to_string(), "zz");
        assert!(ReplicaState::from_json(bad_id.as_bytes()).is_err());
        assert!(ReplicaState::from_json(b"{").is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = ReplicaState::from_json(&bytes);
        }
    }
}
