//! The replica state machine: one appliance's side of a failover pair.
//!
//! [`Replica`] is sans-IO. It owns the appliance's [`ReplicaStore`] and its persisted
//! relationship state, takes [`Event`]s (connections authenticated by the transport, messages,
//! disconnections), operator [`Command`]s and timeouts, and answers with [`Action`]s (connect,
//! send, close, report a command's progress or completion). It never reads a clock, opens a
//! socket or draws a random number: time is passed in with every call. The tokio driver and the
//! simulator drive the very same code.
//!
//! # Driving it
//!
//! 1. Deliver each input as it happens: [`Replica::handle_event`], [`Replica::handle_command`],
//!    and, whenever the wall clock reaches [`Replica::next_timeout`], [`Replica::handle_timeout`].
//! 2. After every such call, drain [`Replica::poll_action`] until it returns `None` and carry the
//!    actions out in order. Actions for one connection must be carried out in order.
//! 3. Re-read [`Replica::next_timeout`]; it may have moved earlier or later.
//! 4. Carry out [`Action::SyncIncoming`] off the thread that runs the replica (it blocks on the
//!    disk), one after the other in the order asked, and hand each outcome back as
//!    [`Event::Synced`]. Chunks may be hashed where they are decoded and handed in as
//!    [`Event::ChunkReceived`], so that this thread only compares hashes.
//! 5. If the wall clock steps backwards, call [`Replica::handle_timeout`] at once: the replica
//!    moves its timers back by the same amount (otherwise a clock set back an hour would delay
//!    the next sync by an hour).
//!
//! Connections reach the replica only after the transport authenticated them (TLS, the
//! inter-appliance key proof and the version exchange). `Action::Connect` asks the driver to
//! open one; the outcome comes back as [`Event::Connected`] or [`Event::ConnectFailed`] with
//! the same [`Purpose`].
//!
//! # Layout
//!
//! This module holds [`Replica`] and its core (commands, connections, establish, break); the
//! other parts implement `Replica` in their own modules: `roles` (promotion, demotion, split
//! brain), `sync` (pulling), `serve` (answering the peer) and `status`. What they share is
//! plain data in leaf modules that import none of them (`types`, `job`, `role_state`,
//! `report`, `state`, `ports`), so that no module imports one that imports it back.

mod job;
pub mod ports;
mod report;
mod role_state;
mod roles;
mod serve;
pub mod state;
mod status;
mod sync;
mod types;

use std::collections::{BTreeMap, VecDeque};

use dyad_wire::{
    Break, ConfigVersion, Epoch, ErrorMessage, Establish, EstablishReply, Message, ReasonCode,
    Role, Successor, SyncNow,
};

pub use crate::handshake::CLOCK_OFFSET_WARNING_MS;
pub use ports::{
    CatalogComparison, ChunkRefusal, ConflictRecord, DifferingKey, IncomingRefusal, ReadRefusal,
    ReplicaStore, StoreFault,
};
pub use report::{Lag, LinkStatus, RunningSync, Status};
pub use role_state::Disagreement;
pub use state::{PeerRecord, ReplicaState, SyncRecord};
pub use types::{
    Action, Command, CommandError, CommandId, ConfigWriteError, ConnId, Event, LocalNode,
    PeerHandshake, Purpose, ReplicaConfig, SyncProgress, TransferCounters,
};

use job::{SyncJob, Waiter};
use report::LagKnowledge;
use role_state::{PendingSwap, PromoteOrigin};

/// An authenticated connection and what it is for.
#[derive(Clone, Debug)]
struct Link {
    handshake: PeerHandshake,
    kind: LinkKind,
    /// Whether this side opened it.
    outbound: bool,
    /// Whether this appliance (restored onto new hardware) told the peer on this link whom it
    /// succeeds. Once per link: a link is classified again whenever a `Successor` arrives, and
    /// two restored appliances would otherwise echo the notice for ever.
    successor_sent: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum LinkKind {
    /// Authenticated, but not (yet) part of the relationship: may carry `Establish`.
    Unbound,
    Establishing {
        command: CommandId,
        backup_address: String,
        epoch: Epoch,
    },
    Verifying {
        request: ConnId,
    },
    Peer,
    /// The paired appliance, but the two disagree about the relationship (split brain): kept
    /// open so that both statuses show it and a demotion can act on it; nothing is synced.
    Disagreement,
}

/// A backup-side establish waiting for the reverse address check.
#[derive(Clone, Debug)]
struct PendingEstablish {
    epoch: Epoch,
    reverse_address: String,
}

/// Sync Now issued here: done when the local sync and the peer's sync have both finished.
#[derive(Clone, Debug)]
struct SyncNowCommand {
    request: u64,
    issued_unix_ms: u64,
    local: Option<Result<String, CommandError>>,
    remote: Option<Result<String, CommandError>>,
    /// Set while waiting for the link; the command fails if it is not up by then.
    link_deadline_unix_ms: Option<u64>,
}

/// A Sync Now the peer asked for, whose own part the peer has not reported finished yet:
/// if the link is lost meanwhile, the Sync Now was cut off on the peer's side too.
#[derive(Clone, Debug)]
struct PeerSyncNow {
    conn: ConnId,
    received_unix_ms: u64,
}

/// One appliance's replication logic. See the module documentation for how to drive it.
pub struct Replica<S: ReplicaStore> {
    store: S,
    node: LocalNode,
    config: ReplicaConfig,
    state: ReplicaState,
    /// The state as last saved: a failed save puts `state` back to it, so what status shows
    /// is what a restart would find, never a role or epoch that never reached the disk.
    saved_state: ReplicaState,
    links: BTreeMap<ConnId, Link>,
    pending_establish: BTreeMap<ConnId, PendingEstablish>,
    dialing_peer: bool,
    next_dial_unix_ms: u64,
    next_sync_unix_ms: Option<u64>,
    job: Option<SyncJob<S::CatalogDiff>>,
    sync_now_commands: BTreeMap<CommandId, SyncNowCommand>,
    /// Sync Nows the peer asked for, by its request number, until it reports its part done.
    peer_sync_nows: BTreeMap<u64, PeerSyncNow>,
    next_request: u64,
    counters: TransferCounters,
    /// For each recording served, which chunks were already sent (to count re-sent bytes).
    chunks_sent: BTreeMap<dyad_wire::SessionId, Vec<bool>>,
    actions: VecDeque<Action>,
    /// A terminal storage failure: the replica stops replicating and says so in status.
    failed: Option<StoreFault>,
    last_refusal: Option<String>,
    /// The peer's old hardware connected after its successor took over, and was refused.
    old_hardware_refused: Option<String>,
    lag: LagKnowledge,
    /// The wall clock at the current call (commands complete with it).
    now_unix_ms: u64,
    next_internal_command: CommandId,
    /// Final syncs of promotions in progress, by their internal command id.
    promotions: BTreeMap<CommandId, PromoteOrigin>,
    pending_swap: Option<PendingSwap>,
    /// A demotion waiting for the backup to take over: the command and its request.
    pending_demote: Option<(CommandId, u64)>,
    disagreement: Option<Disagreement>,
    /// The latest wall-clock reading handed in, to notice the clock stepping backwards.
    clock_seen_unix_ms: u64,
    /// The driver's hash of the chunk being handled ([`Event::ChunkReceived`]): session,
    /// index, subtree chaining value.
    received_chunk_cv: Option<(dyad_wire::SessionId, u32, [u8; 32])>,
}

/// Commands the replica issues to itself (a promotion's final sync) are numbered from here, far
/// above any id a driver hands out.
const INTERNAL_COMMAND_BASE: CommandId = 1 << 62;

impl<S: ReplicaStore> Replica<S> {
    /// Opens the replica over `store`, loading its persisted state (or starting standalone).
    pub fn open(
        store: S,
        node: LocalNode,
        config: ReplicaConfig,
        now_unix_ms: u64,
    ) -> Result<Self, StoreFault> {
        let state = match store.load_replica_state()? {
            Some(bytes) => ReplicaState::from_json(&bytes).map_err(|why| StoreFault {
                message: format!("{why}; the data folder's replica state is damaged"),
                terminal: true,
            })?,
            None => ReplicaState::initial(node.node_id),
        };
        let next_sync_unix_ms =
            match state.role {
                Role::Standalone => None,
                _ => Some(state.first_sync_due_unix_ms.unwrap_or(
                    now_unix_ms + config.sync_interval_ms.min(config.first_sync_delay_ms),
                )),
            };
        Ok(Replica {
            store,
            node,
            config,
            saved_state: state.clone(),
            state,
            links: BTreeMap::new(),
            pending_establish: BTreeMap::new(),
            dialing_peer: false,
            next_dial_unix_ms: now_unix_ms,
            next_sync_unix_ms,
            job: None,
            sync_now_commands: BTreeMap::new(),
            peer_sync_nows: BTreeMap::new(),
            next_request: 1,
            counters: TransferCounters::default(),
            chunks_sent: BTreeMap::new(),
            received_chunk_cv: None,
            actions: VecDeque::new(),
            failed: None,
            last_refusal: None,
            old_hardware_refused: None,
            lag: LagKnowledge::default(),
            now_unix_ms,
            next_internal_command: INTERNAL_COMMAND_BASE,
            promotions: BTreeMap::new(),
            pending_swap: None,
            pending_demote: None,
            disagreement: None,
            clock_seen_unix_ms: now_unix_ms,
        })
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Mutable access for operations that do not concern replication (importing a session).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Moves to `epoch`, never an older one: epochs only grow, except when an operator's demote
    /// gives way to the other primary (which sets the epoch itself) or a settings restore
    /// writes the state (outside the replica).
    pub(crate) fn advance_epoch(&mut self, epoch: Epoch) {
        debug_assert!(
            epoch >= self.state.epoch,
            "epochs only grow: {epoch} after {}",
            self.state.epoch
        );
        self.state.epoch = epoch;
    }

    pub fn state(&self) -> &ReplicaState {
        &self.state
    }

    pub fn node(&self) -> &LocalNode {
        &self.node
    }

    pub fn counters(&self) -> &TransferCounters {
        &self.counters
    }

    /// The next action for the driver, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Replica::handle_timeout`] must next be called (wall clock, ms), if ever.
    pub fn next_timeout(&self) -> Option<u64> {
        let mut next: Option<u64> = None;
        let mut consider = |at: Option<u64>| {
            if let Some(at) = at {
                next = Some(next.map_or(at, |current| current.min(at)));
            }
        };
        for command in self.sync_now_commands.values() {
            consider(command.link_deadline_unix_ms);
        }
        // A replica stopped by a storage failure does nothing on its timers (only waiting
        // commands still fail); reporting them would make the driver spin.
        if self.failed.is_some() {
            return next;
        }
        consider(self.next_sync_unix_ms);
        if self.wants_peer_link() && !self.peer_connected() && !self.dialing_peer {
            consider(Some(self.next_dial_unix_ms));
        }
        next
    }

    /// A site-configuration write by the operator or the application.
    pub fn write_config(
        &mut self,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<ConfigVersion, ConfigWriteError> {
        if self.state.role == Role::Backup {
            let primary = match &self.state.peer {
                Some(peer) => format!("{} at {}", peer.name, peer.address),
                None => "the primary".to_string(),
            };
            return Err(ConfigWriteError::ReadOnlyBackup { primary });
        }
        if let Some(fault) = &self.failed {
            return Err(ConfigWriteError::Store(fault.clone()));
        }
        let epoch = self.state.epoch;
        self.store.config_write(key, value, epoch).map_err(|fault| {
            self.note_fault(&fault);
            ConfigWriteError::Store(fault)
        })
    }

    /// Delivers an operator command; its outcome arrives as `Action::Completed`.
    pub fn handle_command(&mut self, now_unix_ms: u64, id: CommandId, command: Command) {
        self.now_unix_ms = now_unix_ms;
        self.observe_clock(now_unix_ms);
        if let Some(fault) = &self.failed {
            let text = format!("{fault}");
            self.complete(id, Err(CommandError::Local(text)));
            return;
        }
        match command {
            Command::Establish {
                backup_address,
                reverse_address,
            } => self.command_establish(id, backup_address, reverse_address),
            Command::SyncNow => self.command_sync_now(now_unix_ms, id),
            Command::Break => self.command_break(now_unix_ms, id),
            Command::Promote { force } => self.command_promote(now_unix_ms, id, force),
            Command::Demote => self.command_demote(now_unix_ms, id),
        }
    }

    /// Delivers a connection event.
    pub fn handle_event(&mut self, now_unix_ms: u64, event: Event) {
        self.now_unix_ms = now_unix_ms;
        self.observe_clock(now_unix_ms);
        match event {
            Event::Connected {
                conn,
                handshake,
                outbound,
            } => self.on_connected(now_unix_ms, conn, handshake, outbound),
            Event::ConnectFailed { purpose, reason } => {
                self.on_connect_failed(now_unix_ms, purpose, reason)
            }
            Event::Received { conn, message } => self.on_message(now_unix_ms, conn, message),
            Event::Disconnected { conn, reason } => self.on_disconnected(now_unix_ms, conn, reason),
            Event::ChunkReceived {
                conn,
                chunk,
                subtree_cv,
            } => {
                self.received_chunk_cv = Some((chunk.session, chunk.chunk_index, subtree_cv));
                self.on_message(now_unix_ms, conn, Message::Chunk(chunk));
                self.received_chunk_cv = None;
            }
            Event::Synced {
                session,
                ticket,
                outcome,
            } => self.on_synced(now_unix_ms, session, ticket, outcome),
        }
    }

    /// Notices the wall clock stepping backwards and moves every timer back by the same
    /// amount, so that intervals keep their length in real time.
    fn observe_clock(&mut self, now_unix_ms: u64) {
        let back = self.clock_seen_unix_ms.saturating_sub(now_unix_ms);
        self.clock_seen_unix_ms = now_unix_ms;
        if back == 0 {
            return;
        }
        let earlier = |at: u64| at.saturating_sub(back);
        self.next_sync_unix_ms = self.next_sync_unix_ms.map(earlier);
        self.next_dial_unix_ms = earlier(self.next_dial_unix_ms);
        for command in self.sync_now_commands.values_mut() {
            command.link_deadline_unix_ms = command.link_deadline_unix_ms.map(earlier);
        }
        if let Some(due) = self.state.first_sync_due_unix_ms {
            self.state.first_sync_due_unix_ms = Some(earlier(due));
        }
    }

    /// Runs whatever is due at `now_unix_ms`.
    pub fn handle_timeout(&mut self, now_unix_ms: u64) {
        self.now_unix_ms = now_unix_ms;
        self.observe_clock(now_unix_ms);
        let expired: Vec<CommandId> = self
            .sync_now_commands
            .iter()
            .filter(|(_, command)| {
                command
                    .link_deadline_unix_ms
                    .is_some_and(|at| at <= now_unix_ms)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.sync_now_commands.remove(&id);
            let text = self.unreachable_text();
            self.complete(id, Err(CommandError::Peer(text)));
        }
        if self.failed.is_some() {
            return;
        }
        if self.wants_peer_link()
            && !self.peer_connected()
            && !self.dialing_peer
            && now_unix_ms >= self.next_dial_unix_ms
        {
            if let Some(peer) = &self.state.peer {
                self.dialing_peer = true;
                self.actions.push_back(Action::Connect {
                    address: peer.address.clone(),
                    purpose: Purpose::Peer,
                    pinned_fingerprint: Some(peer.certificate_fingerprint),
                });
            }
        }
        if let Some(due) = self.next_sync_unix_ms {
            if now_unix_ms >= due {
                if self.state.first_sync_due_unix_ms.take().is_some() {
                    self.persist();
                }
                self.next_sync_unix_ms = Some(now_unix_ms + self.config.sync_interval_ms);
                if self.job.is_none() {
                    if let Some(conn) = self.peer_link() {
                        self.start_job(now_unix_ms, conn, None);
                    }
                }
            }
        }
    }

    // ----- commands -----

    fn command_establish(
        &mut self,
        id: CommandId,
        backup_address: String,
        reverse_address: String,
    ) {
        if self.state.role != Role::Standalone {
            let peer = self
                .state
                .peer
                .as_ref()
                .map_or("its peer".to_string(), |peer| peer.name.clone());
            self.complete(
                id,
                Err(CommandError::Refused(format!(
                    "this appliance is already {} in a relationship with {peer}; run `dyad break` first",
                    dyad_wire::Role::name(self.state.role)
                ))),
            );
            return;
        }
        for (what, address) in [("backup", &backup_address), ("reverse", &reverse_address)] {
            if let Err(why) = check_peer_address(address, self.node.site_hostname.as_deref()) {
                self.complete(
                    id,
                    Err(CommandError::Refused(format!(
                        "the {what} address is refused: {why}"
                    ))),
                );
                return;
            }
        }
        self.actions.push_back(Action::Connect {
            address: backup_address.clone(),
            purpose: Purpose::Establish {
                command: id,
                backup_address,
                reverse_address,
            },
            pinned_fingerprint: None,
        });
    }

    fn command_sync_now(&mut self, now_unix_ms: u64, id: CommandId) {
        if self.state.role == Role::Standalone {
            self.complete(
                id,
                Err(CommandError::Refused(
                    "this appliance is standalone; there is no peer to sync with (run `dyad establish` on the primary)".into(),
                )),
            );
            return;
        }
        if self.disagreement.is_some() {
            let text = self.unreachable_text();
            self.complete(id, Err(CommandError::Refused(text)));
            return;
        }
        let request = self.next_request();
        self.sync_now_commands.insert(
            id,
            SyncNowCommand {
                request,
                issued_unix_ms: now_unix_ms,
                local: None,
                remote: None,
                link_deadline_unix_ms: None,
            },
        );
        match self.peer_link() {
            Some(conn) => self.run_sync_now(now_unix_ms, id, conn),
            None => {
                if let Some(command) = self.sync_now_commands.get_mut(&id) {
                    command.link_deadline_unix_ms =
                        Some(now_unix_ms + self.config.sync_now_link_wait_ms);
                }
                // Dial at once rather than at the next retry.
                self.next_dial_unix_ms = now_unix_ms;
                self.handle_timeout(now_unix_ms);
            }
        }
    }

    fn run_sync_now(&mut self, now_unix_ms: u64, id: CommandId, conn: ConnId) {
        let Some(command) = self.sync_now_commands.get_mut(&id) else {
            return;
        };
        command.link_deadline_unix_ms = None;
        let request = command.request;
        self.send(conn, Message::SyncNow(SyncNow { request }));
        match &mut self.job {
            Some(job) if job.conn == conn => job.waiters.push(Waiter::Command(id)),
            _ => self.start_job(now_unix_ms, conn, Some(Waiter::Command(id))),
        }
    }

    fn command_break(&mut self, now_unix_ms: u64, id: CommandId) {
        if self.state.role == Role::Standalone {
            self.complete(
                id,
                Err(CommandError::Refused(
                    "this appliance is not in a relationship; nothing to break".into(),
                )),
            );
            return;
        }
        let epoch = self.state.next_epoch(self.node.node_id);
        let former = self
            .state
            .peer
            .as_ref()
            .map_or("the peer".to_string(), |peer| peer.name.clone());
        let link = self.peer_link();
        // Save the break before anything acts on it: a failed save puts the relationship back
        // as the disk holds it, so telling the peer (or the operator) it was broken would leave
        // the peer standalone while this appliance comes back as before.
        self.state.role = Role::Standalone;
        self.advance_epoch(epoch);
        self.state.forced_promotion_unresolved = false;
        self.state.first_sync_due_unix_ms = None;
        self.state.break_unannounced = link.is_none();
        if let Err(fault) = self.save_state() {
            self.complete(
                id,
                Err(CommandError::Local(format!(
                    "the break could not be saved, so the relationship with {former} is unchanged and {former} was not told: {fault}"
                ))),
            );
            return;
        }
        self.become_standalone(
            now_unix_ms,
            epoch,
            "the relationship was broken by the operator",
        );
        if let Some(conn) = link {
            self.send(conn, Message::Break(Break { epoch }));
            self.close(conn, None);
        }
        let told = if link.is_some() {
            format!("{former} was told")
        } else {
            format!("{former} is unreachable and will be told when it is next reachable")
        };
        self.complete(
            id,
            Ok(format!(
                "relationship broken; this appliance is standalone in epoch {epoch}; {told}"
            )),
        );
    }

    // ----- connections -----

    fn on_connected(
        &mut self,
        now_unix_ms: u64,
        conn: ConnId,
        handshake: PeerHandshake,
        outbound: Option<Purpose>,
    ) {
        self.state.observe_epoch(handshake.hello.epoch);
        let is_outbound = outbound.is_some();
        match outbound {
            Some(Purpose::Establish {
                command,
                backup_address,
                reverse_address,
            }) => {
                self.establish_connected(conn, handshake, command, backup_address, reverse_address)
            }
            Some(Purpose::VerifyReverse { request, .. }) => {
                self.links.insert(
                    conn,
                    Link {
                        handshake: handshake.clone(),
                        kind: LinkKind::Verifying { request },
                        outbound: true,
                        successor_sent: false,
                    },
                );
                self.verify_connected(now_unix_ms, conn, request, handshake)
            }
            Some(Purpose::Peer) | None => {
                if matches!(outbound, Some(Purpose::Peer)) {
                    self.dialing_peer = false;
                }
                self.links.insert(
                    conn,
                    Link {
                        handshake,
                        kind: LinkKind::Unbound,
                        outbound: is_outbound,
                        successor_sent: false,
                    },
                );
                self.classify_link(now_unix_ms, conn);
            }
        }
    }

    /// Decides whether an authenticated connection is the relationship's link, a stale or
    /// departed peer to be told about a break, or a stranger that may still send `Establish`.
    fn classify_link(&mut self, now_unix_ms: u64, conn: ConnId) {
        let Some(link) = self.links.get(&conn) else {
            return;
        };
        let hello = link.handshake.hello.clone();
        let fingerprint = link.handshake.certificate_fingerprint;
        let Some(peer) = self.state.peer.clone() else {
            return;
        };
        if hello.node_id != peer.node_id {
            if self.state.superseded.contains(&hello.node_id) {
                self.refuse_superseded(conn, &hello, &peer);
            }
            // Otherwise a stranger, or the peer's successor whose `Successor` follows.
            return;
        }
        if fingerprint != peer.certificate_fingerprint {
            let text = format!(
                "{} presented certificate {} but this appliance is paired with certificate {}; \
                 if the peer's certificate was replaced on purpose, break and re-establish",
                peer.name,
                dyad_wire::hex::encode(&fingerprint[..8]),
                dyad_wire::hex::encode(&peer.certificate_fingerprint[..8])
            );
            self.last_refusal = Some(text.clone());
            self.close(
                conn,
                Some(ErrorMessage::new(ReasonCode::UnexpectedPeer, text)),
            );
            return;
        }
        let tell_successor = !self.node.predecessors.is_empty()
            && self
                .links
                .get_mut(&conn)
                .is_some_and(|link| !std::mem::replace(&mut link.successor_sent, true));
        if tell_successor {
            // Restored onto new hardware: first of all, tell the peer whom this succeeds, so
            // it re-pins before anything else on this link reaches it.
            self.send(
                conn,
                Message::Successor(Successor {
                    node_id: self.node.node_id,
                    predecessors: self.node.predecessors.clone(),
                }),
            );
        }
        match self.state.role {
            Role::Standalone => {
                if self.state.break_unannounced && hello.role != Role::Standalone {
                    self.send(
                        conn,
                        Message::Break(Break {
                            epoch: self.state.epoch,
                        }),
                    );
                    self.state.break_unannounced = false;
                    self.persist();
                    self.close(conn, None);
                }
            }
            Role::Primary | Role::Backup => {
                let ours = self.state.role;
                let epoch = self.state.epoch;
                let complementary = matches!(
                    (ours, hello.role),
                    (Role::Primary, Role::Backup) | (Role::Backup, Role::Primary)
                );
                if hello.epoch == epoch && complementary {
                    self.bind_peer_link(now_unix_ms, conn);
                } else if ours == Role::Backup && hello.role == Role::Primary && hello.epoch > epoch
                {
                    // The primary moved on to a newer epoch of this same relationship (a swap
                    // whose end we missed): follow it.
                    self.advance_epoch(hello.epoch);
                    self.persist();
                    self.bind_peer_link(now_unix_ms, conn);
                } else if ours == Role::Backup
                    && hello.role == Role::Backup
                    && hello.epoch > epoch
                    && self.complete_lost_swap(now_unix_ms, hello.epoch)
                {
                    // The peer classified this link with our old Hello: reconnect so that
                    // both sides see each other's current roles.
                    self.close(conn, None);
                    self.next_dial_unix_ms = now_unix_ms;
                } else if ours == Role::Backup
                    && hello.role == Role::Backup
                    && hello.epoch < epoch
                    && epoch.node == hello.node_id
                {
                    // We stepped down for the peer's swap and its answer was lost: the peer
                    // completes the swap when it sees our Hello and then reconnects.
                    self.close(conn, None);
                } else if ours == Role::Primary
                    && hello.role == Role::Backup
                    && hello.epoch < epoch
                    && self.node.predecessors.contains(&hello.epoch.node)
                {
                    // The backup still follows the epoch of the hardware this appliance
                    // replaced; the `Successor` just sent makes it follow ours before it sends
                    // anything else on this link.
                    self.bind_peer_link(now_unix_ms, conn);
                } else if hello.role == Role::Standalone && hello.epoch > epoch {
                    let epoch = self.state.next_epoch(self.node.node_id);
                    let why = format!(
                        "{} left the relationship while unreachable (it is now standalone in epoch {})",
                        peer.name, hello.epoch
                    );
                    self.become_standalone(now_unix_ms, epoch, &why);
                    self.persist();
                    self.close(conn, None);
                } else if crate::planted_bug!(FollowStaleEpoch)
                    && ours == Role::Primary
                    && hello.role == Role::Primary
                    && hello.epoch < epoch
                {
                    // Planted bug (test builds only, see `planted`): instead of reporting the
                    // split brain, this primary follows the stale one as its backup.
                    self.state.role = Role::Backup;
                    self.state.epoch = hello.epoch;
                    self.state.forced_promotion_unresolved = false;
                    self.persist();
                    self.bind_peer_link(now_unix_ms, conn);
                } else if hello.epoch > epoch
                    && hello.epoch.node != self.node.node_id
                    && hello.epoch.node != hello.node_id
                    && !matches!(hello.role, Role::Standalone)
                {
                    // The peer follows an epoch that neither appliance started: a third
                    // appliance's, most likely the successor restored from this one's settings
                    // backup. Name it, so that this hardware's operator can tell.
                    let text = format!(
                        "{} is {} in epoch {}, started by node {}, not by this appliance ({}): \
                         if this appliance's settings backup was restored onto new hardware, \
                         node {} is its successor and this hardware is superseded (retire it \
                         with `dyad factory-reset`); otherwise break the relationship on the \
                         stale side and re-establish",
                        peer.name,
                        dyad_wire::Role::name(hello.role),
                        hello.epoch,
                        hello.epoch.node,
                        self.node.node_id,
                        hello.epoch.node
                    );
                    self.last_refusal = Some(text.clone());
                    self.close(conn, Some(ErrorMessage::new(ReasonCode::StaleEpoch, text)));
                } else if hello.role == ours {
                    // Both primary (a forced promotion, or both forced in a partition) or both
                    // backup: report it on both sides; an operator decides.
                    self.enter_disagreement(now_unix_ms, conn);
                } else {
                    let text = format!(
                        "{} is {} in epoch {}, but this appliance is {} in epoch {}; \
                         break the relationship on the stale side and re-establish",
                        peer.name,
                        dyad_wire::Role::name(hello.role),
                        hello.epoch,
                        dyad_wire::Role::name(self.state.role),
                        self.state.epoch
                    );
                    self.last_refusal = Some(text.clone());
                    self.close(conn, Some(ErrorMessage::new(ReasonCode::StaleEpoch, text)));
                }
            }
        }
    }

    /// The peer's old hardware, replaced by its successor, connected: refuse it, naming the
    /// successor, so that its operator learns it must not serve; nothing it holds is merged.
    fn refuse_superseded(&mut self, conn: ConnId, hello: &dyad_wire::Hello, peer: &PeerRecord) {
        let text = format!(
            "{} (node {}) was replaced by its successor, node {} restored from its settings \
             backup, which {} now pairs with; the old hardware must not serve or sync: retire \
             it with `dyad factory-reset`",
            hello.node_name, hello.node_id, peer.node_id, self.node.name
        );
        tracing::warn!(
            old = %hello.node_id,
            successor = %peer.node_id,
            "refused the old hardware of the peer, replaced by its successor"
        );
        self.old_hardware_refused = Some(format!(
            "the old hardware of {} (node {}) connected and was refused; it was replaced by \
             node {}: retire it",
            hello.node_name, hello.node_id, peer.node_id
        ));
        self.close(conn, Some(ErrorMessage::new(ReasonCode::Superseded, text)));
    }

    /// A `Successor` on a link not yet bound: if the sender proved (by the handshake) the
    /// pinned certificate and names the pinned peer among its predecessors, it is that peer on
    /// new hardware: re-pin its node id, refuse the old one from now on, and classify the link
    /// again.
    fn on_successor(&mut self, now_unix_ms: u64, conn: ConnId, kind: &LinkKind, notice: Successor) {
        if *kind != LinkKind::Unbound {
            return;
        }
        let Some(link) = self.links.get(&conn) else {
            return;
        };
        let hello_node = link.handshake.hello.node_id;
        let fingerprint = link.handshake.certificate_fingerprint;
        let Some(mut peer) = self.state.peer.clone() else {
            return;
        };
        if hello_node == peer.node_id && notice.node_id == hello_node {
            // Re-pinned meanwhile through another link: this one was classified with the old
            // pin, so classify it again.
            self.classify_link(now_unix_ms, conn);
            return;
        }
        if notice.node_id != hello_node
            || hello_node == self.node.node_id
            || !notice.predecessors.contains(&peer.node_id)
            || self.state.superseded.contains(&hello_node)
            || fingerprint != peer.certificate_fingerprint
        {
            return;
        }
        tracing::warn!(
            old = %peer.node_id,
            successor = %hello_node,
            "the peer was restored onto new hardware; pairing with its successor"
        );
        let mut superseded = vec![peer.node_id];
        superseded.extend(
            self.state
                .superseded
                .iter()
                .copied()
                .filter(|node| *node != peer.node_id),
        );
        superseded.truncate(dyad_wire::limits::MAX_PREDECESSORS);
        self.state.superseded = superseded;
        peer.node_id = hello_node;
        self.state.peer = Some(peer);
        if self.persist() {
            self.classify_link(now_unix_ms, conn);
        } else {
            self.close(conn, None);
        }
    }

    fn bind_peer_link(&mut self, now_unix_ms: u64, conn: ConnId) {
        if let Some(existing) = self.peer_link() {
            if existing == conn {
                return;
            }
            // Both sides may dial at once; both keep the link opened by the smaller node id,
            // so they agree without a round trip.
            let keep_new = {
                let new_outbound = self.links.get(&conn).is_some_and(|link| link.outbound);
                let peer_is_smaller = self
                    .state
                    .peer
                    .as_ref()
                    .is_some_and(|peer| peer.node_id < self.node.node_id);
                // The new link was opened by us if outbound, else by the peer.
                new_outbound != peer_is_smaller
            };
            if keep_new {
                self.unbind(now_unix_ms, existing, "replaced by a newer link");
                self.close(existing, None);
            } else {
                self.close(conn, None);
                self.links.remove(&conn);
                return;
            }
        }
        if let Some(link) = self.links.get_mut(&conn) {
            link.kind = LinkKind::Peer;
        }
        self.last_refusal = None;
        self.disagreement = None;
        if self.state.forced_promotion_unresolved && self.state.role == Role::Primary {
            // The old primary is back, as this appliance's backup: nothing left to resolve.
            self.state.forced_promotion_unresolved = false;
            self.persist();
        }
        let waiting: Vec<CommandId> = self
            .sync_now_commands
            .iter()
            .filter(|(_, command)| command.link_deadline_unix_ms.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.run_sync_now(now_unix_ms, id, conn);
        }
        if self.job.is_none() && self.next_sync_unix_ms.is_some_and(|due| due <= now_unix_ms) {
            self.next_sync_unix_ms = Some(now_unix_ms + self.config.sync_interval_ms);
            self.start_job(now_unix_ms, conn, None);
        }
    }

    fn on_connect_failed(&mut self, now_unix_ms: u64, purpose: Purpose, reason: String) {
        match purpose {
            Purpose::Establish {
                command,
                backup_address,
                ..
            } => {
                self.complete(
                    command,
                    Err(CommandError::Peer(format!(
                        "could not establish with the backup at {backup_address}: {reason}"
                    ))),
                );
            }
            Purpose::VerifyReverse { request, address } => {
                if self.pending_establish.remove(&request).is_some() {
                    let text = format!(
                        "the backup could not reach the primary over the reverse address {address}: {reason}; \
                         check the reverse address and the firewall between the appliances"
                    );
                    self.reply_establish_refused(
                        request,
                        ReasonCode::ReverseAddressUnreachable,
                        text,
                    );
                }
            }
            Purpose::Peer => {
                self.dialing_peer = false;
                self.next_dial_unix_ms = now_unix_ms + self.config.reconnect_delay_ms;
                self.last_refusal = Some(reason);
            }
        }
    }

    fn on_disconnected(&mut self, now_unix_ms: u64, conn: ConnId, reason: String) {
        self.unbind(now_unix_ms, conn, &reason);
        if let Some(link) = self.links.remove(&conn) {
            if let LinkKind::Establishing {
                command,
                backup_address,
                ..
            } = link.kind
            {
                self.complete(
                    command,
                    Err(CommandError::Peer(format!(
                        "the backup at {backup_address} closed the connection before answering: {reason}"
                    ))),
                );
            }
        }
        self.pending_establish.remove(&conn);
    }

    /// Ends everything that ran over `conn` as the relationship's link.
    fn unbind(&mut self, now_unix_ms: u64, conn: ConnId, reason: &str) {
        let is_peer_link = self
            .links
            .get(&conn)
            .is_some_and(|link| link.kind == LinkKind::Peer);
        // A Sync Now cut off here is cut off on both sides, whichever side's part was still
        // running: the peer's part of one it asked for, or of one issued here.
        let served: Vec<u64> = self
            .peer_sync_nows
            .iter()
            .filter(|(_, asked)| asked.conn == conn)
            .map(|(request, _)| *request)
            .collect();
        let mut cut_since: Option<u64> = None;
        for request in served {
            if let Some(asked) = self.peer_sync_nows.remove(&request) {
                cut_since = Some(cut_since.map_or(asked.received_unix_ms, |since| {
                    since.min(asked.received_unix_ms)
                }));
            }
        }
        if is_peer_link {
            for command in self.sync_now_commands.values() {
                if command.remote.is_none() && command.link_deadline_unix_ms.is_none() {
                    cut_since = Some(cut_since.map_or(command.issued_unix_ms, |since| {
                        since.min(command.issued_unix_ms)
                    }));
                }
            }
        }
        if self.job.as_ref().is_some_and(|job| job.conn == conn) {
            self.interrupt_job(
                now_unix_ms,
                CommandError::Peer(format!(
                    "the link to the peer was lost during the sync: {reason}"
                )),
            );
        } else if let Some(since) = cut_since {
            self.record_cut_sync_now(now_unix_ms, since, reason);
        }
        let request_ids: Vec<CommandId> = self
            .sync_now_commands
            .iter()
            .filter(|(_, command)| {
                command.remote.is_none() && command.link_deadline_unix_ms.is_none()
            })
            .map(|(id, _)| *id)
            .collect();
        if is_peer_link {
            for id in request_ids {
                self.resolve_sync_now(
                    id,
                    None,
                    Some(Err(CommandError::Peer(format!(
                        "the link to the peer was lost: {reason}"
                    )))),
                );
            }
            if let Some(link) = self.links.get_mut(&conn) {
                link.kind = LinkKind::Unbound;
            }
            self.next_dial_unix_ms = now_unix_ms + self.config.reconnect_delay_ms;
        }
    }

    fn on_message(&mut self, now_unix_ms: u64, conn: ConnId, message: Message) {
        let Some(link) = self.links.get(&conn) else {
            return;
        };
        let kind = link.kind.clone();
        match message {
            Message::KeepAlive(_) => {}
            Message::Error(error) => self.on_peer_error(now_unix_ms, conn, kind, error),
            Message::Establish(request) => self.on_establish_request(now_unix_ms, conn, request),
            Message::EstablishReply(reply) => {
                self.on_establish_reply(now_unix_ms, conn, kind, reply)
            }
            Message::Break(notice) => self.on_break_notice(now_unix_ms, conn, notice),
            Message::Successor(notice) => self.on_successor(now_unix_ms, conn, &kind, notice),
            Message::Hello(_) | Message::KeyProof(_) => {
                self.close(
                    conn,
                    Some(ErrorMessage::new(
                        ReasonCode::Malformed,
                        "handshake message after the handshake",
                    )),
                );
                self.on_disconnected(now_unix_ms, conn, "peer repeated the handshake".into());
            }
            Message::StateReport(report) => match kind {
                LinkKind::Disagreement => self.on_state_report(report),
                LinkKind::Peer => {
                    // The peer reports a disagreement on a link this side thinks agreed: one
                    // of the two classified it from a Hello sent just before a role change
                    // (a connection accepted as `dyad demote` ran). Neither would ever redial
                    // over an open link, so close it: both dial again with current Hellos.
                    tracing::info!(conn, "the peer disagrees about this link; reconnecting");
                    self.close(conn, None);
                }
                _ => {}
            },
            other => {
                if kind != LinkKind::Peer {
                    self.refuse_outside_relationship(conn);
                    return;
                }
                match other {
                    Message::RoleSwap(swap) => self.on_role_swap(now_unix_ms, conn, swap),
                    Message::RoleSwapReply(reply) => self.on_role_swap_reply(now_unix_ms, reply),
                    Message::PromotePeer(request) => self.on_promote_peer(now_unix_ms, request),
                    other => self.on_peer_message(now_unix_ms, conn, other),
                }
            }
        }
    }

    fn on_peer_error(
        &mut self,
        now_unix_ms: u64,
        conn: ConnId,
        kind: LinkKind,
        error: ErrorMessage,
    ) {
        let text = format!("peer refused ({:?}): {}", error.reason(), error.text);
        match kind {
            LinkKind::Establishing { command, .. } => {
                self.links.remove(&conn);
                self.close(conn, None);
                self.complete(command, Err(CommandError::Peer(text)));
            }
            _ => {
                self.last_refusal = Some(text.clone());
                if self.job.as_ref().is_some_and(|job| job.conn == conn) {
                    self.finish_job(now_unix_ms, Err(CommandError::Peer(text)));
                }
            }
        }
    }

    // ----- establish -----

    fn establish_connected(
        &mut self,
        conn: ConnId,
        handshake: PeerHandshake,
        command: CommandId,
        backup_address: String,
        reverse_address: String,
    ) {
        let hello = handshake.hello.clone();
        if hello.node_id == self.node.node_id {
            self.close(conn, None);
            self.complete(
                command,
                Err(CommandError::Refused(format!(
                    "{backup_address} is this appliance itself; give the backup's address"
                ))),
            );
            return;
        }
        if hello.role != Role::Standalone {
            self.close(conn, None);
            self.complete(
                command,
                Err(CommandError::Refused(format!(
                    "{} at {backup_address} is {} of another relationship; run `dyad break` there first",
                    hello.node_name,
                    dyad_wire::Role::name(hello.role)
                ))),
            );
            return;
        }
        self.state.observe_epoch(hello.epoch);
        let epoch = self.state.next_epoch(self.node.node_id);
        self.links.insert(
            conn,
            Link {
                handshake,
                kind: LinkKind::Establishing {
                    command,
                    backup_address: backup_address.clone(),
                    epoch,
                },
                outbound: true,
                successor_sent: false,
            },
        );
        self.send(
            conn,
            Message::Establish(Establish {
                epoch,
                reverse_address,
                backup_address,
            }),
        );
    }

    fn on_establish_request(&mut self, _now_unix_ms: u64, conn: ConnId, request: Establish) {
        let Some(link) = self.links.get(&conn) else {
            return;
        };
        let requester = link.handshake.hello.clone();
        if self.state.role != Role::Standalone {
            let text = format!(
                "{} is already {} in a relationship; run `dyad break` on it first",
                self.node.name,
                dyad_wire::Role::name(self.state.role)
            );
            self.send(
                conn,
                Message::EstablishReply(EstablishReply {
                    epoch: request.epoch,
                    refusal_code: ReasonCode::RelationshipState.as_u16(),
                    text,
                }),
            );
            return;
        }
        if request.epoch.node != requester.node_id
            || request.epoch.counter <= self.state.epoch.counter
        {
            let text = format!(
                "the proposed epoch {} is not above this appliance's epoch {}; retry the establish",
                request.epoch, self.state.epoch
            );
            self.send(
                conn,
                Message::EstablishReply(EstablishReply {
                    epoch: request.epoch,
                    refusal_code: ReasonCode::StaleEpoch.as_u16(),
                    text,
                }),
            );
            return;
        }
        if let Err(why) =
            check_peer_address(&request.reverse_address, self.node.site_hostname.as_deref())
        {
            let text = format!("the reverse address is refused: {why}");
            self.send(
                conn,
                Message::EstablishReply(EstablishReply {
                    epoch: request.epoch,
                    refusal_code: ReasonCode::SharedHostname.as_u16(),
                    text,
                }),
            );
            return;
        }
        self.pending_establish.insert(
            conn,
            PendingEstablish {
                epoch: request.epoch,
                reverse_address: request.reverse_address.clone(),
            },
        );
        self.actions.push_back(Action::Connect {
            address: request.reverse_address.clone(),
            purpose: Purpose::VerifyReverse {
                request: conn,
                address: request.reverse_address,
            },
            pinned_fingerprint: Some(link.handshake.certificate_fingerprint),
        });
    }

    fn verify_connected(
        &mut self,
        now_unix_ms: u64,
        conn: ConnId,
        request: ConnId,
        handshake: PeerHandshake,
    ) {
        self.links.remove(&conn);
        self.close(conn, None);
        let Some(pending) = self.pending_establish.remove(&request) else {
            return;
        };
        let Some(requester) = self.links.get(&request).map(|link| link.handshake.clone()) else {
            return;
        };
        if handshake.hello.node_id != requester.hello.node_id {
            let text = format!(
                "the reverse address {} reaches {} ({}), not the appliance asking to establish ({}); give the primary's own address",
                pending.reverse_address, handshake.hello.node_name, handshake.hello.node_id, requester.hello.node_name
            );
            self.reply_establish_refused(request, ReasonCode::ReverseAddressUnreachable, text);
            return;
        }
        if self.state.role != Role::Standalone {
            self.reply_establish_refused(
                request,
                ReasonCode::RelationshipState,
                "this appliance joined another relationship meanwhile".into(),
            );
            return;
        }
        self.state.observe_epoch(pending.epoch);
        self.state.role = Role::Backup;
        self.advance_epoch(pending.epoch);
        self.state.peer = Some(PeerRecord {
            node_id: requester.hello.node_id,
            name: requester.hello.node_name.clone(),
            certificate_fingerprint: requester.certificate_fingerprint,
            address: pending.reverse_address,
        });
        self.state.break_unannounced = false;
        let first_sync = now_unix_ms + self.config.first_sync_delay_ms;
        self.state.first_sync_due_unix_ms = Some(first_sync);
        self.next_sync_unix_ms = Some(first_sync);
        if !self.persist() {
            return;
        }
        self.send(
            request,
            Message::EstablishReply(EstablishReply {
                epoch: pending.epoch,
                refusal_code: 0,
                text: String::new(),
            }),
        );
        self.bind_peer_link(now_unix_ms, request);
    }

    fn reply_establish_refused(&mut self, conn: ConnId, code: ReasonCode, text: String) {
        let epoch = self.state.epoch;
        self.send(
            conn,
            Message::EstablishReply(EstablishReply {
                epoch,
                refusal_code: code.as_u16(),
                text,
            }),
        );
    }

    fn on_establish_reply(
        &mut self,
        now_unix_ms: u64,
        conn: ConnId,
        kind: LinkKind,
        reply: EstablishReply,
    ) {
        let LinkKind::Establishing {
            command,
            backup_address,
            epoch,
        } = kind
        else {
            return;
        };
        if reply.refusal_code != 0 || reply.epoch != epoch {
            self.links.remove(&conn);
            self.close(conn, None);
            let reason = ReasonCode::from_u16(reply.refusal_code);
            self.complete(
                command,
                Err(CommandError::Peer(format!(
                    "the backup refused ({reason:?}): {}",
                    reply.text
                ))),
            );
            return;
        }
        let Some(handshake) = self.links.get(&conn).map(|link| link.handshake.clone()) else {
            return;
        };
        self.state.role = Role::Primary;
        self.advance_epoch(epoch);
        self.state.peer = Some(PeerRecord {
            node_id: handshake.hello.node_id,
            name: handshake.hello.node_name.clone(),
            certificate_fingerprint: handshake.certificate_fingerprint,
            address: backup_address.clone(),
        });
        self.state.break_unannounced = false;
        let first_sync = now_unix_ms + self.config.first_sync_delay_ms;
        self.state.first_sync_due_unix_ms = Some(first_sync);
        self.next_sync_unix_ms = Some(first_sync);
        if let Err(fault) = self.save_state() {
            self.complete(
                command,
                Err(CommandError::Local(format!(
                    "{} accepted, but this appliance could not save the relationship, so it stays standalone: {fault}; \
                     after the restart, break the relationship on {} and establish again",
                    handshake.hello.node_name, handshake.hello.node_name
                ))),
            );
            return;
        }
        if let Some(link) = self.links.get_mut(&conn) {
            link.kind = LinkKind::Unbound;
        }
        self.bind_peer_link(now_unix_ms, conn);
        self.complete(
            command,
            Ok(format!(
                "established: this appliance is the primary and {} at {backup_address} its backup, epoch {epoch}; \
                 the first sync starts in {} s",
                handshake.hello.node_name,
                self.config.first_sync_delay_ms / 1000
            )),
        );
    }

    // ----- break -----

    fn on_break_notice(&mut self, now_unix_ms: u64, conn: ConnId, notice: Break) {
        let Some(link) = self.links.get(&conn) else {
            return;
        };
        let sender = link.handshake.hello.node_id;
        let ours = self
            .state
            .peer
            .as_ref()
            .is_some_and(|peer| peer.node_id == sender);
        if !ours || self.state.role == Role::Standalone {
            return;
        }
        self.state.observe_epoch(notice.epoch);
        let epoch = self.state.next_epoch(self.node.node_id);
        self.become_standalone(now_unix_ms, epoch, "the peer broke the relationship");
        self.persist();
        self.close(conn, None);
    }

    fn become_standalone(&mut self, now_unix_ms: u64, epoch: Epoch, why: &str) {
        if let Some(conn) = self.peer_link() {
            if let Some(link) = self.links.get_mut(&conn) {
                link.kind = LinkKind::Unbound;
            }
        }
        if self.job.is_some() {
            self.finish_job(
                now_unix_ms,
                Err(CommandError::Refused(format!("sync stopped: {why}"))),
            );
        }
        // The peer's part of a Sync Now it asked for stops too: it hears of the break.
        self.peer_sync_nows.clear();
        let ids: Vec<CommandId> = self.sync_now_commands.keys().copied().collect();
        for id in ids {
            self.sync_now_commands.remove(&id);
            self.complete(
                id,
                Err(CommandError::Refused(format!("sync stopped: {why}"))),
            );
        }
        self.state.role = Role::Standalone;
        self.advance_epoch(epoch);
        self.state.forced_promotion_unresolved = false;
        self.disagreement = None;
        if let Some(pending) = self.pending_swap.take() {
            self.promotion_failed(pending.origin, format!("promotion stopped: {why}"));
        }
        if let Some((command, _)) = self.pending_demote.take() {
            self.complete(
                command,
                Err(CommandError::Refused(format!("demotion stopped: {why}"))),
            );
        }
        self.state.first_sync_due_unix_ms = None;
        self.next_sync_unix_ms = None;
        self.last_refusal = Some(why.to_string());
    }

    // ----- helpers -----

    fn wants_peer_link(&self) -> bool {
        self.state.peer.is_some()
            && (self.state.role != Role::Standalone || self.state.break_unannounced)
    }

    /// Whether some link to the paired appliance is open (agreed or not): no need to dial.
    fn peer_connected(&self) -> bool {
        self.links
            .values()
            .any(|link| matches!(link.kind, LinkKind::Peer | LinkKind::Disagreement))
    }

    fn peer_link(&self) -> Option<ConnId> {
        self.links
            .iter()
            .find(|(_, link)| link.kind == LinkKind::Peer)
            .map(|(conn, _)| *conn)
    }

    fn next_request(&mut self) -> u64 {
        let request = self.next_request;
        self.next_request += 1;
        request
    }

    fn send(&mut self, conn: ConnId, message: Message) {
        self.actions.push_back(Action::Send { conn, message });
    }

    fn close(&mut self, conn: ConnId, error: Option<ErrorMessage>) {
        self.actions.push_back(Action::Close { conn, error });
    }

    fn complete(&mut self, command: CommandId, outcome: Result<String, CommandError>) {
        if command >= INTERNAL_COMMAND_BASE {
            let now = self.now_unix_ms;
            self.final_sync_done(now, command, outcome);
            return;
        }
        self.actions
            .push_back(Action::Completed { command, outcome });
    }

    fn next_internal_command(&mut self) -> CommandId {
        let id = self.next_internal_command;
        self.next_internal_command += 1;
        id
    }

    /// Saves the replica state; on failure the replica stops (a terminal storage fault).
    fn persist(&mut self) -> bool {
        self.save_state().is_ok()
    }

    /// [`Replica::persist`] with the fault, for commands: their error must say why.
    fn save_state(&mut self) -> Result<(), StoreFault> {
        let bytes = self.state.to_json();
        match self.store.save_replica_state(&bytes) {
            Ok(()) => {
                self.saved_state = self.state.clone();
                Ok(())
            }
            Err(fault) => {
                self.state = self.saved_state.clone();
                self.note_fault(&fault);
                Err(fault)
            }
        }
    }

    fn note_fault(&mut self, fault: &StoreFault) {
        if fault.terminal && self.failed.is_none() {
            self.failed = Some(fault.clone());
            let conns: Vec<ConnId> = self.links.keys().copied().collect();
            for conn in conns {
                self.close(
                    conn,
                    Some(ErrorMessage::new(
                        ReasonCode::Internal,
                        "the peer's storage failed; it stopped replicating",
                    )),
                );
            }
            self.links.clear();
            self.job = None;
            self.peer_sync_nows.clear();
            // Nothing will finish now: every Sync Now still waiting gets the failure, rather
            // than an answer that never comes.
            let waiting: Vec<CommandId> = std::mem::take(&mut self.sync_now_commands)
                .into_keys()
                .collect();
            for id in waiting {
                self.complete(id, Err(CommandError::Local(fault.to_string())));
            }
        }
    }

    fn unreachable_text(&self) -> String {
        if let Some(disagreement) = &self.disagreement {
            return format!(
                "nothing is synced during a split brain: {} is {} in epoch {} while this appliance is {} in epoch {}; \
                 demote one (`dyad demote`) or break and re-establish",
                disagreement.peer_name,
                dyad_wire::Role::name(disagreement.peer_role),
                disagreement.peer_epoch,
                dyad_wire::Role::name(self.state.role),
                self.state.epoch
            );
        }
        match &self.state.peer {
            Some(peer) => format!(
                "the peer {} at {} is not reachable{}; Sync Now needs the link to be up",
                peer.name,
                peer.address,
                self.last_refusal
                    .as_ref()
                    .map(|why| format!(" ({why})"))
                    .unwrap_or_default()
            ),
            None => "there is no peer".into(),
        }
    }

    fn resolve_sync_now(
        &mut self,
        id: CommandId,
        local: Option<Result<String, CommandError>>,
        remote: Option<Result<String, CommandError>>,
    ) {
        let Some(command) = self.sync_now_commands.get_mut(&id) else {
            return;
        };
        if local.is_some() {
            command.local = local;
        }
        if remote.is_some() {
            command.remote = remote;
        }
        if let (Some(local), Some(remote)) = (command.local.clone(), command.remote.clone()) {
            self.sync_now_commands.remove(&id);
            let outcome = match (local, remote) {
                (Ok(here), Ok(there)) => Ok(format!("sync complete: {here}; on the peer: {there}")),
                (Err(error), _) | (_, Err(error)) => Err(error),
            };
            self.complete(id, outcome);
        }
    }
}

/// Refuses an address that is not `host:port`, and the site's shared hostname (which follows
/// whichever appliance is primary, so pairing with it would pair an appliance with itself after
/// a role swap).
pub fn check_peer_address(address: &str, site_hostname: Option<&str>) -> Result<(), String> {
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("{address:?} is not host:port"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("{address:?} is not host:port with a port number"));
    }
    if let Some(site) = site_hostname {
        crate::handshake::check_not_shared_hostname(address, site)
            .map_err(|refusal| refusal.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_are_checked() {
        assert!(check_peer_address("10.0.0.2:7400", Some("site.example")).is_ok());
        assert!(
            check_peer_address("Site.Example.:7400", Some("site.example"))
                .unwrap_err()
                .contains("shared hostname")
        );
        assert!(check_peer_address("10.0.0.2", None).is_err());
        assert!(check_peer_address(":7400", None).is_err());
        assert!(check_peer_address("host:notaport", None).is_err());
        assert!(check_peer_address("[::1]:7400", Some("::1")).is_err());
        assert!(check_peer_address("[::1]:7400", Some("site.example")).is_ok());
    }
}
