//! The replica's vocabulary: what a driver hands in and gets out (ids, the local node, the
//! tunables, events, commands, actions and their errors, counters, a sync's progress).
//!
//! Plain data, in a module of its own so that the state machine in the parent module and its
//! parts (`roles`, `sync`, `serve`, `status`) all use it without importing each other: the
//! layering rule allows no module cycles. Re-exported from [`crate::replica`].

use std::fmt;

use dyad_wire::{ErrorMessage, Hello, Message, NodeId, SoftwareVersion};

use super::ports::StoreFault;

/// Identifies one authenticated connection for as long as it is open (chosen by the driver).
pub type ConnId = u64;
/// Identifies one operator command until it completes (chosen by the driver).
pub type CommandId = u64;

/// Who this appliance is; fixed for the life of a [`Replica`](super::Replica).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalNode {
    pub node_id: NodeId,
    /// The node ids of the hardware this appliance replaced (restores from a settings
    /// backup), nearest first: announced to the peer so that it re-pins this appliance.
    pub predecessors: Vec<NodeId>,
    pub name: String,
    pub software: SoftwareVersion,
    /// The site's shared hostname, refused as a peer address.
    pub site_hostname: Option<String>,
}

/// Tunables, with the defaults an operator gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// Delay between establishing and the first sync.
    pub first_sync_delay_ms: u64,
    /// Time between periodic syncs.
    pub sync_interval_ms: u64,
    /// Recording chunks requested but not yet received, at most (the transfer window).
    pub window_chunks: usize,
    /// Recordings being transferred at once, at most.
    pub concurrent_transfers_max: usize,
    /// Wait between attempts to reach the peer.
    pub reconnect_delay_ms: u64,
    /// How long Sync Now waits for the link to the peer to come up.
    pub sync_now_link_wait_ms: u64,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            first_sync_delay_ms: 60_000,
            sync_interval_ms: 300_000,
            window_chunks: 32,
            concurrent_transfers_max: 4,
            reconnect_delay_ms: 5_000,
            sync_now_link_wait_ms: 15_000,
        }
    }
}

/// What the transport established about a connection before handing it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerHandshake {
    pub hello: Hello,
    pub certificate_fingerprint: [u8; 32],
    /// Peer clock minus local clock, in milliseconds.
    pub clock_offset_ms: i64,
}

/// Why the replica asked for a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// This appliance is establishing a relationship with the backup at `backup_address`.
    Establish {
        command: CommandId,
        backup_address: String,
        reverse_address: String,
    },
    /// This appliance, asked to become a backup over `request`, checks that it can reach the
    /// primary at the reverse address.
    VerifyReverse { request: ConnId, address: String },
    /// The relationship's own link to the peer.
    Peer,
}

/// Something that happened to the replica's connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A connection finished authenticating. `outbound` is the purpose of a connection this
    /// replica asked for; `None` for one the peer opened.
    Connected {
        conn: ConnId,
        handshake: PeerHandshake,
        outbound: Option<Purpose>,
    },
    /// A requested connection could not be made (unreachable, refused, authentication failed).
    ConnectFailed {
        purpose: Purpose,
        reason: String,
    },
    Received {
        conn: ConnId,
        message: Message,
    },
    Disconnected {
        conn: ConnId,
        reason: String,
    },
    /// A chunk, with its `store::tree::chunk_subtree_cv` computed by the driver from these
    /// bytes on the task that decoded it (so the replica's thread does not hash it again).
    /// Otherwise the same as [`Event::Received`] with [`Message::Chunk`].
    ChunkReceived {
        conn: ConnId,
        chunk: dyad_wire::Chunk,
        subtree_cv: [u8; 32],
    },
    /// The sync asked for by [`Action::SyncIncoming`] finished.
    Synced {
        session: dyad_wire::SessionId,
        ticket: u64,
        outcome: Result<(), StoreFault>,
    },
}

/// Operator commands that take time (the quick ones are methods).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Establish {
        backup_address: String,
        reverse_address: String,
    },
    SyncNow,
    Break,
    /// On the backup: take over as primary; planned (final sync, then swap) unless `force`,
    /// which promotes without the primary when it is unreachable.
    Promote {
        force: bool,
    },
    /// On the primary: hand over to the backup, or give way to the other primary in a split
    /// brain.
    Demote,
}

/// Why a command failed, split by who can fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// The operator asked for something the current state does not allow.
    Refused(String),
    /// The peer refused or could not be reached.
    Peer(String),
    /// Local storage failed.
    Local(String),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Refused(text) | CommandError::Peer(text) | CommandError::Local(text) => {
                f.write_str(text)
            }
        }
    }
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Connect {
        address: String,
        purpose: Purpose,
        /// Refuse the connection unless the peer presents this certificate.
        pinned_fingerprint: Option<[u8; 32]>,
    },
    Send {
        conn: ConnId,
        message: Message,
    },
    /// Send `error` (if any), then close the connection.
    Close {
        conn: ConnId,
        error: Option<ErrorMessage>,
    },
    /// Make the chunks of `session` written so far durable, off the replica's thread (it
    /// blocks on the disk): run the store's sync work for `ticket`, then report
    /// [`Event::Synced`]. Syncs must run in the order they are asked for. Until then the
    /// replica counts those chunks against its window, so a crash costs at most one window.
    SyncIncoming {
        session: dyad_wire::SessionId,
        ticket: u64,
    },
    Progress {
        command: CommandId,
        progress: SyncProgress,
    },
    Completed {
        command: CommandId,
        outcome: Result<String, CommandError>,
    },
}

/// Why a configuration write was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigWriteError {
    /// This appliance is the backup; writes go to the primary.
    ReadOnlyBackup {
        primary: String,
    },
    Store(StoreFault),
}

impl fmt::Display for ConfigWriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigWriteError::ReadOnlyBackup { primary } => write!(
                f,
                "this appliance is the backup and its site configuration is read-only; \
                 make the change on the primary, {primary}"
            ),
            ConfigWriteError::Store(fault) => write!(f, "{fault}"),
        }
    }
}

/// Counters kept since the replica started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransferCounters {
    /// Recording bytes this appliance sent to its peer.
    pub bytes_sent: u64,
    /// Of those, bytes of chunks this appliance had already sent once before.
    pub bytes_resent: u64,
}

/// How far a running sync has come.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncProgress {
    pub phase: &'static str,
    pub started_unix_ms: u64,
    pub sessions_done: u64,
    pub sessions_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Configuration entries received (changes, or the whole configuration).
    pub config_entries: u64,
    pub conflicts_recorded: u64,
}
