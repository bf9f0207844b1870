//! The state that role changes leave in the replica between messages: a promotion waiting
//! for the old primary's answer, and what the peer said about itself when the two appliances
//! disagree (split brain).
//!
//! Plain data, in a module of its own so that [`Replica`](super::Replica) can hold it without
//! importing `roles`, the module that acts on it (which implements `Replica`, so importing it
//! would be a module cycle).

use dyad_wire::{ConfigVersion, Epoch, Role};

use super::types::CommandId;

/// What the other appliance said about itself when the two disagreed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disagreement {
    pub peer_name: String,
    pub peer_role: Role,
    pub peer_epoch: Epoch,
    /// Known once the peer's state report arrived.
    pub peer_config_version: Option<ConfigVersion>,
    pub peer_sessions_held: Option<u64>,
    pub detected_unix_ms: u64,
}

/// A promotion waiting for the old primary's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PendingSwap {
    pub(super) origin: PromoteOrigin,
    pub(super) epoch: Epoch,
    pub(super) sent_unix_ms: u64,
}

/// Who asked for a promotion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PromoteOrigin {
    /// The operator, on this appliance.
    Command(CommandId),
    /// The primary, demoting itself (`PromotePeer`).
    Peer { request: u64 },
}
