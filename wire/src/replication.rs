//! Messages of the replication protocol: relationship changes, configuration sync, catalog
//! comparison and recording transfer.
//!
//! Who sends what is described in `docs/wire.md` and `docs/architecture.md`; this module only
//! fixes the shapes and the limits a receiver checks before allocating.

use rkyv::{Archive, Deserialize, Serialize};

use crate::control::ControlMessage;
use crate::error::{EncodeError, Malformed};
use crate::frame::MessageKind;
use crate::ids::{Epoch, NodeId, SessionId};
use crate::limits::{
    MAX_ADDRESS_BYTES, MAX_CATALOG_ORIGINS, MAX_CATALOG_RANGES, MAX_CHUNKS_PER_FETCH,
    MAX_CHUNKS_PER_RECORDING, MAX_CONFIG_KEY_BYTES, MAX_CONFIG_VALUE_BYTES, MAX_LIST_LEN,
    MAX_NODE_NAME_BYTES, MAX_PREDECESSORS, MAX_RANGE_ANSWER_LEN, MAX_TEXT_BYTES,
};

/// The version of a site configuration: the epoch and sequence of its last write, and the
/// running hash chained over every change up to it (see the store's `config_chain`). Two
/// configurations are at the same version only if their chains agree too: continuity is
/// proven by content, never by the numbers alone.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub struct ConfigVersion {
    pub epoch: Epoch,
    pub sequence: u64,
    pub chain: [u8; 32],
}

impl ConfigVersion {
    /// The first bytes of the chain, as status shows them beside `epoch#sequence`.
    pub fn chain_prefix(&self) -> String {
        self.chain[..4]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

impl std::fmt::Display for ConfigVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}#{} ({})",
            self.epoch,
            self.sequence,
            self.chain_prefix()
        )
    }
}

/// One configuration key as of `version`; `value: None` is a deletion.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ConfigEntry {
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub version: ConfigVersion,
}

/// What a completed session is, without its recording bytes.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionMeta {
    pub id: SessionId,
    pub started_unix_ms: u64,
    pub ended_unix_ms: u64,
    pub size_bytes: u64,
    /// BLAKE3 of the whole recording.
    pub root: [u8; 32],
    pub chunk_size_bytes: u32,
    /// `false` for a session cut off by a crash or an install.
    pub ended_normally: bool,
}

/// The primary asks the receiver to become its backup under `epoch`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Establish {
    pub epoch: Epoch,
    /// The address by which the backup must reach the primary (validated by the backup).
    pub reverse_address: String,
    /// The address by which the primary reached the backup.
    pub backup_address: String,
}

/// The backup's answer to [`Establish`], after it validated the reverse address.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EstablishReply {
    pub epoch: Epoch,
    /// 0 when accepted, else a [`crate::ReasonCode`] value.
    pub refusal_code: u16,
    pub text: String,
}

/// The sender left the relationship; `epoch` is its new standalone epoch.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Break {
    pub epoch: Epoch,
}

/// Start (or join) a sync now. `request` lets the asker match the [`SyncDone`].
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncNow {
    pub request: u64,
}

/// A sync the peer asked for finished; `refusal_code` 0 means it succeeded.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SyncDone {
    pub request: u64,
    pub refusal_code: u16,
    pub text: String,
    pub sessions_pulled: u64,
    pub bytes_pulled: u64,
}

/// The backup asks for the configuration changes after `since`.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigPull {
    pub epoch: Epoch,
    pub since: ConfigVersion,
}

/// The answer to [`ConfigPull`]: either the changes after the asked version, or (`full`) the
/// whole configuration, which replaces the receiver's. One page at a time: `last_page`
/// says whether more follow for the same pull.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ConfigUpdate {
    pub epoch: Epoch,
    pub full: bool,
    pub snapshot_version: ConfigVersion,
    pub entries: Vec<ConfigEntry>,
    pub last_page: bool,
}

/// The range `[start, start + 16^level)` of one origin's session sequence numbers.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CatalogRange {
    pub origin: NodeId,
    pub start: u64,
    pub level: u8,
}

/// An order-independent summary of the sessions in a range: their count and the XOR of their
/// leaf hashes.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeSummary {
    pub count: u64,
    pub hash: [u8; 32],
}

/// One origin's sessions, summarized, and its highest sequence.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginSummary {
    pub origin: NodeId,
    pub max_sequence: u64,
    pub summary: RangeSummary,
}

/// A session in a range answered item by item: its sequence and content hash.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CatalogItem {
    pub sequence: u64,
    pub root: [u8; 32],
}

/// The answer about one range: its children's summaries, or (when small) its sessions.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    Children(Vec<RangeSummary>),
    Items(Vec<CatalogItem>),
}

/// Asks for the summary of every origin (`origins`), or about `ranges`. A question too large
/// for one frame is sent in `parts` parts, each answered on its own.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CatalogQuery {
    pub query: u64,
    pub part: u32,
    pub parts: u32,
    pub origins: bool,
    pub ranges: Vec<CatalogRange>,
}

/// The answer to one part of a [`CatalogQuery`]: origin summaries, or one answer per range
/// asked, in order.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CatalogAnswer {
    pub query: u64,
    pub part: u32,
    pub parts: u32,
    pub origins: Vec<OriginSummary>,
    pub ranges: Vec<RangeAnswer>,
}

/// Asks for a session's metadata and chunk chaining values.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchSession {
    pub id: SessionId,
}

/// A session's metadata and the BLAKE3 chaining value of each of its chunks, which together
/// authenticate to `meta.root` so that each chunk can be verified on arrival.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SessionHeader {
    pub meta: SessionMeta,
    pub chunk_chaining_values: Vec<[u8; 32]>,
}

/// Asks for these chunks of a session; they come back as chunk frames.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FetchChunks {
    pub id: SessionId,
    pub chunk_indexes: Vec<u32>,
}

/// The sender cannot serve this session (absent, or failed verification on its disk).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SessionUnavailable {
    pub id: SessionId,
    pub text: String,
}

/// The sender, the backup, takes over as primary in `epoch`; the receiver is asked to step
/// down to backup. `config_version` is the sender's configuration after its final sync: the
/// receiver refuses if its own moved on since, so no write is lost in the swap.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleSwap {
    pub epoch: Epoch,
    pub config_version: ConfigVersion,
}

/// The answer to [`RoleSwap`]: 0 when the receiver stepped down, else a reason code.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RoleSwapReply {
    pub epoch: Epoch,
    pub refusal_code: u16,
    pub text: String,
}

/// The primary asks its backup to take over (a planned demotion of the sender).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromotePeer {
    pub request: u64,
}

/// The sender was restored from a settings backup onto new hardware: it took the new node id
/// `node_id` and succeeds `predecessors` (nearest first). Sent first on every link to its
/// peer, so that the peer, which pinned one of the predecessors, re-pins the successor and
/// refuses the old hardware from then on.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Successor {
    pub node_id: NodeId,
    pub predecessors: Vec<NodeId>,
}

/// What the sender is, sent when the two appliances disagree about the relationship (for
/// example both are primary) so that each operator sees both sides.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateReport {
    pub role: crate::ids::Role,
    pub epoch: Epoch,
    pub config_version: ConfigVersion,
    pub sessions_held: u64,
}

fn limit(field: &'static str, len: usize, max: usize) -> Result<(), Malformed> {
    if len > max {
        return Err(Malformed::FieldTooLarge { field, len, max });
    }
    Ok(())
}

fn encodable(result: Result<(), Malformed>) -> Result<(), EncodeError> {
    result.map_err(|why| match why {
        Malformed::FieldTooLarge { field, len, max } => {
            EncodeError::FieldTooLarge { field, len, max }
        }
        other => EncodeError::Archive(other.to_string()),
    })
}

/// Declares a control message's kind and how to check its limits on both the archived form
/// (before deserializing) and the native form (before encoding). `$check` is written once
/// against accessors shared by both forms.
macro_rules! control_message {
    ($ty:ident, $archived:ident, $kind:expr, |$m:ident| $check:block) => {
        impl ControlMessage for $ty {
            const KIND: MessageKind = $kind;

            #[allow(unused_variables)]
            fn check_archived($m: &$archived) -> Result<(), Malformed> $check

            #[allow(unused_variables)]
            fn check_encodable(&self) -> Result<(), EncodeError> {
                fn check($m: &$ty) -> Result<(), Malformed> $check
                encodable(check(self))
            }
        }
    };
}

control_message!(Establish, ArchivedEstablish, MessageKind::Establish, |m| {
    limit(
        "reverse_address",
        m.reverse_address.len(),
        MAX_ADDRESS_BYTES,
    )?;
    limit("backup_address", m.backup_address.len(), MAX_ADDRESS_BYTES)
});
control_message!(
    EstablishReply,
    ArchivedEstablishReply,
    MessageKind::EstablishReply,
    |m| { limit("text", m.text.len(), MAX_TEXT_BYTES) }
);
control_message!(Break, ArchivedBreak, MessageKind::Break, |m| { Ok(()) });
control_message!(SyncNow, ArchivedSyncNow, MessageKind::SyncNow, |m| {
    Ok(())
});
control_message!(SyncDone, ArchivedSyncDone, MessageKind::SyncDone, |m| {
    limit("text", m.text.len(), MAX_TEXT_BYTES)
});
control_message!(
    ConfigPull,
    ArchivedConfigPull,
    MessageKind::ConfigPull,
    |m| { Ok(()) }
);
control_message!(
    ConfigUpdate,
    ArchivedConfigUpdate,
    MessageKind::ConfigUpdate,
    |m| {
        limit("entries", m.entries.len(), MAX_LIST_LEN)?;
        for entry in m.entries.iter() {
            limit("key", entry.key.len(), MAX_CONFIG_KEY_BYTES)?;
            if let Some(value) = entry.value.as_ref() {
                limit("value", value.len(), MAX_CONFIG_VALUE_BYTES)?;
            }
        }
        Ok(())
    }
);
control_message!(
    CatalogQuery,
    ArchivedCatalogQuery,
    MessageKind::CatalogQuery,
    |m| { limit("ranges", m.ranges.len(), MAX_CATALOG_RANGES) }
);
control_message!(
    CatalogAnswer,
    ArchivedCatalogAnswer,
    MessageKind::CatalogAnswer,
    |m| {
        limit("origins", m.origins.len(), MAX_CATALOG_ORIGINS)?;
        limit("ranges", m.ranges.len(), MAX_CATALOG_RANGES)?;
        for answer in m.ranges.iter() {
            limit("range answer", answer.len(), MAX_RANGE_ANSWER_LEN)?;
        }
        Ok(())
    }
);

impl RangeAnswer {
    /// Children or items in this answer.
    pub fn len(&self) -> usize {
        match self {
            RangeAnswer::Children(children) => children.len(),
            RangeAnswer::Items(items) => items.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ArchivedRangeAnswer {
    /// Children or items in this answer, read from the validated archive.
    pub fn len(&self) -> usize {
        match self {
            ArchivedRangeAnswer::Children(children) => children.len(),
            ArchivedRangeAnswer::Items(items) => items.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
control_message!(
    FetchSession,
    ArchivedFetchSession,
    MessageKind::FetchSession,
    |m| { Ok(()) }
);
control_message!(
    SessionHeader,
    ArchivedSessionHeader,
    MessageKind::SessionHeader,
    |m| {
        limit(
            "chunk_chaining_values",
            m.chunk_chaining_values.len(),
            MAX_CHUNKS_PER_RECORDING,
        )
    }
);
control_message!(
    FetchChunks,
    ArchivedFetchChunks,
    MessageKind::FetchChunks,
    |m| { limit("chunk_indexes", m.chunk_indexes.len(), MAX_CHUNKS_PER_FETCH) }
);
control_message!(
    SessionUnavailable,
    ArchivedSessionUnavailable,
    MessageKind::SessionUnavailable,
    |m| { limit("text", m.text.len(), MAX_TEXT_BYTES) }
);

const _: () = assert!(MAX_NODE_NAME_BYTES <= MAX_ADDRESS_BYTES);
control_message!(RoleSwap, ArchivedRoleSwap, MessageKind::RoleSwap, |m| {
    Ok(())
});
control_message!(
    RoleSwapReply,
    ArchivedRoleSwapReply,
    MessageKind::RoleSwapReply,
    |m| { limit("text", m.text.len(), MAX_TEXT_BYTES) }
);
control_message!(
    PromotePeer,
    ArchivedPromotePeer,
    MessageKind::PromotePeer,
    |m| { Ok(()) }
);
control_message!(
    StateReport,
    ArchivedStateReport,
    MessageKind::StateReport,
    |m| { Ok(()) }
);
control_message!(Successor, ArchivedSuccessor, MessageKind::Successor, |m| {
    limit("predecessors", m.predecessors.len(), MAX_PREDECESSORS)
});
