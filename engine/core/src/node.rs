//! One appliance's decisions around its replica, for any driver: the counterpart of quinn's
//! `Endpoint`. The tokio driver (`dyad-node`) and the simulator's world both run a [`Node`];
//! their own code only moves bytes, times and faults.
//!
//! Around the [`Replica`] the node owns what each driver used to keep a copy of:
//! - **connection ids**, allocated here per appliance, and the set of open connections, so an
//!   event for a connection already closed is dropped once, here;
//! - **local closes**: when the replica closes a connection, the node tells the replica the
//!   connection is gone within the same drain (the driver only has to close the socket);
//! - **the driving order**: after every input, a wall clock seen to step backwards or a timer
//!   that fell due runs the replica's timeout before its actions are drained;
//! - **chunk hashing on arrival** ([`inbound_event`], callable on any thread);
//! - **the client-update gate**, with its limit refreshed from the configuration before every
//!   check-in;
//! - **command ids** for operator commands;
//! - **idle and keep-alive deadlines**: a connection that heard nothing from its peer for
//!   [`IDLE_TIMEOUT_MS`] is closed, and one this side sent nothing on for
//!   [`KEEPALIVE_INTERVAL_MS`] gets a keep-alive.
//!
//! Time comes in two clocks: `now_unix_ms` with every call (the wall clock, which may step),
//! for the replica; and the driver's steady clock ([`SteadyClock`], which never steps), for
//! connection liveness and client grants.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use dyad_wire::{KeepAlive, Message, Version};

use crate::clients::{
    max_concurrent_from_config, CheckIn, CheckInAnswer, CheckInError, ClientGate, ClientProgress,
    MAX_CONCURRENT_UPGRADES_DEFAULT, MAX_CONCURRENT_UPGRADES_KEY,
};
use crate::replica::ports::ReplicaStore;
use crate::replica::{
    Action, Command, CommandId, ConfigWriteError, ConnId, Event, PeerHandshake, Purpose, Replica,
};
use crate::tree::chunk_subtree_cv;

/// The reason the replica is given for a connection it closed itself.
pub const CLOSED_LOCALLY: &str = "closed locally";
/// A connection this side sent nothing on for this long gets a keep-alive.
pub const KEEPALIVE_INTERVAL_MS: u64 = 10_000;
/// A connection whose peer sent nothing (not even a keep-alive) for this long is closed.
pub const IDLE_TIMEOUT_MS: u64 = 45_000;
/// A node called this late for its own deadline was stalled itself (a frozen process, a disk
/// that blocked its thread): its peers' silence in the meantime is not held against them.
pub const OWN_STALL_MS: u64 = 5_000;

/// The driver's steady clock in milliseconds (never steps; its origin is the driver's).
pub type SteadyClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// What the node knows of an open connection's traffic, on the steady clock.
#[derive(Clone, Copy, Debug)]
struct Liveness {
    received_ms: u64,
    sent_ms: u64,
    keepalives_sent: u64,
}

/// Turns a received message into the replica's event, hashing a chunk's bytes (its
/// [`chunk_subtree_cv`]) so the thread that runs the node does not: a driver calls this on the
/// task that decoded the frame, the simulator where it delivers it.
pub fn inbound_event(conn: ConnId, message: Message) -> Event {
    match message {
        Message::Chunk(chunk) => Event::ChunkReceived {
            subtree_cv: chunk_subtree_cv(u64::from(chunk.chunk_index), &chunk.data),
            conn,
            chunk,
        },
        message => Event::Received { conn, message },
    }
}

/// An appliance's replica and the rules around it. See the module documentation.
pub struct Node<S: ReplicaStore> {
    replica: Replica<S>,
    clients: ClientGate,
    /// Connections the replica knows as open, with their traffic times.
    open: BTreeMap<ConnId, Liveness>,
    steady: SteadyClock,
    /// When the node next wanted to be called for a connection's liveness.
    liveness_due_ms: Option<u64>,
    next_conn: ConnId,
    next_command: CommandId,
    /// The latest wall-clock reading handed in: a smaller one is a clock set back.
    clock_seen_unix_ms: u64,
    /// The replica's actions, with the node's own bookkeeping done, for the driver.
    actions: VecDeque<Action>,
}

impl<S: ReplicaStore> Node<S> {
    /// Wraps an opened replica. `client_app_version` is the application version deployed
    /// clients are brought to (the appliance's installed app).
    pub fn new(
        replica: Replica<S>,
        client_app_version: Version,
        now_unix_ms: u64,
        steady: SteadyClock,
    ) -> Node<S> {
        Node {
            replica,
            clients: ClientGate::new(client_app_version, MAX_CONCURRENT_UPGRADES_DEFAULT),
            open: BTreeMap::new(),
            steady,
            liveness_due_ms: None,
            next_conn: 1,
            next_command: 1,
            clock_seen_unix_ms: now_unix_ms,
            actions: VecDeque::new(),
        }
    }

    pub fn replica(&self) -> &Replica<S> {
        &self.replica
    }

    /// For what changes the store outside the replica's protocol (imports, verification);
    /// follow it with [`Node::handle_timeout`] if the replica may have something to do.
    pub fn replica_mut(&mut self) -> &mut Replica<S> {
        &mut self.replica
    }

    /// The next action for the driver: connect, send, close the socket of a connection the
    /// node already reported closed, run store sync work, or answer a command.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When the replica next wants [`Node::handle_timeout`], on the wall clock. A driver that
    /// cannot see its wall clock step backwards also calls it at least every few tens of
    /// milliseconds, so a step is noticed soon.
    pub fn next_timeout(&self) -> Option<u64> {
        self.replica.next_timeout()
    }

    /// When a connection's keep-alive or idle deadline next falls, on the steady clock.
    pub fn next_steady_timeout(&self) -> Option<u64> {
        self.liveness_due_ms
    }

    /// Whether `conn` is open as far as the replica knows.
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.open.contains_key(&conn)
    }

    /// The connections the replica knows as open.
    pub fn open_connections(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.open.keys().copied()
    }

    // ----- inputs -----

    /// A connection finished its handshake (`outbound`: the purpose this node dialled it for;
    /// `None` for one the peer opened). Returns the id the node gave it.
    pub fn connected(
        &mut self,
        now_unix_ms: u64,
        handshake: PeerHandshake,
        outbound: Option<Purpose>,
    ) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        let now_ms = (self.steady)();
        self.open.insert(
            conn,
            Liveness {
                received_ms: now_ms,
                sent_ms: now_ms,
                keepalives_sent: 0,
            },
        );
        self.input(
            now_unix_ms,
            Event::Connected {
                conn,
                handshake,
                outbound,
            },
        );
        conn
    }

    /// A connection this node asked for could not be made.
    pub fn connect_failed(&mut self, now_unix_ms: u64, purpose: Purpose, reason: String) {
        self.input(now_unix_ms, Event::ConnectFailed { purpose, reason });
    }

    /// A message arrived on `conn` (a chunk is hashed here; a driver that hashes elsewhere
    /// hands in [`inbound_event`]'s result with [`Node::inbound`]).
    pub fn received(&mut self, now_unix_ms: u64, conn: ConnId, message: Message) {
        self.inbound(now_unix_ms, inbound_event(conn, message));
    }

    /// An event from [`inbound_event`]. Dropped if its connection is no longer open.
    pub fn inbound(&mut self, now_unix_ms: u64, event: Event) {
        let conn = match &event {
            Event::Received { conn, .. } | Event::ChunkReceived { conn, .. } => *conn,
            _ => {
                debug_assert!(false, "inbound takes received messages only");
                return;
            }
        };
        if let Some(liveness) = self.open.get_mut(&conn) {
            liveness.received_ms = (self.steady)();
            self.input(now_unix_ms, event);
        } else {
            self.settle(now_unix_ms);
        }
    }

    /// A connection ended (the peer closed it, the network failed, it went silent). Reported
    /// once: a connection the node already closed is not reported again.
    pub fn disconnected(&mut self, now_unix_ms: u64, conn: ConnId, reason: String) {
        if self.open.remove(&conn).is_some() {
            self.input(now_unix_ms, Event::Disconnected { conn, reason });
        } else {
            self.settle(now_unix_ms);
        }
    }

    /// The driver closes `conn` for its own reason (a peer that overran its window): the
    /// replica is told it is gone at once. The driver closes the socket itself.
    pub fn close_locally(&mut self, now_unix_ms: u64, conn: ConnId, reason: &str) {
        self.disconnected(now_unix_ms, conn, reason.to_string());
    }

    /// The store sync work an [`Action::SyncIncoming`] asked for finished (or could not be
    /// started).
    pub fn synced(
        &mut self,
        now_unix_ms: u64,
        session: dyad_wire::SessionId,
        ticket: u64,
        outcome: Result<(), crate::replica::ports::StoreFault>,
    ) {
        self.input(
            now_unix_ms,
            Event::Synced {
                session,
                ticket,
                outcome,
            },
        );
    }

    /// Starts an operator command; its outcome comes as [`Action::Completed`] with the
    /// returned id (progress as [`Action::Progress`]).
    pub fn command(&mut self, now_unix_ms: u64, command: Command) -> CommandId {
        let id = self.next_command;
        self.next_command += 1;
        self.replica.handle_command(now_unix_ms, id, command);
        self.settle(now_unix_ms);
        id
    }

    /// Writes site configuration through the replica (the primary's writes replicate).
    pub fn write_config(
        &mut self,
        now_unix_ms: u64,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<dyad_wire::ConfigVersion, ConfigWriteError> {
        let result = self.replica.write_config(key, value);
        self.settle(now_unix_ms);
        result
    }

    /// Time passed: runs the replica's timers if one fell due or the wall clock stepped back.
    pub fn handle_timeout(&mut self, now_unix_ms: u64) {
        self.settle(now_unix_ms);
    }

    /// A deployed client checks in: the gate answers from its limit, refreshed from the site
    /// configuration first (a value that does not parse keeps the limit in force, and says
    /// why in the returned warning).
    pub fn client_check_in(
        &mut self,
        steady_ms: u64,
        check_in: &CheckIn,
    ) -> (Result<CheckInAnswer, CheckInError>, Option<String>) {
        let warning = self.refresh_client_limit();
        (self.clients.check_in(steady_ms, check_in), warning)
    }

    /// The client-update rollout's progress, with the limit refreshed as for a check-in.
    pub fn client_progress(&mut self, steady_ms: u64) -> (ClientProgress, Option<String>) {
        let warning = self.refresh_client_limit();
        (self.clients.progress(steady_ms), warning)
    }

    pub fn clients(&self) -> &ClientGate {
        &self.clients
    }

    // ----- the driving order -----

    fn input(&mut self, now_unix_ms: u64, event: Event) {
        self.replica.handle_event(now_unix_ms, event);
        self.settle(now_unix_ms);
    }

    /// After every input: a wall clock stepped backwards is handed in at once (the replica
    /// moves its timers back with it), a due timer runs, then the replica's actions are taken,
    /// local closes fed back, until the replica has nothing more to say.
    fn settle(&mut self, now_unix_ms: u64) {
        let stepped_back = now_unix_ms < self.clock_seen_unix_ms;
        self.clock_seen_unix_ms = now_unix_ms;
        if stepped_back
            || self
                .replica
                .next_timeout()
                .is_some_and(|at| at <= now_unix_ms)
        {
            self.replica.handle_timeout(now_unix_ms);
        }
        let steady_ms = (self.steady)();
        let mut closed = self.check_liveness(steady_ms);
        loop {
            while let Some(action) = self.replica.poll_action() {
                match &action {
                    Action::Close { conn, .. } if self.open.remove(conn).is_some() => {
                        closed.push((*conn, CLOSED_LOCALLY.to_string()));
                    }
                    Action::Send { conn, .. } => {
                        if let Some(liveness) = self.open.get_mut(conn) {
                            liveness.sent_ms = steady_ms;
                        }
                    }
                    _ => {}
                }
                self.actions.push_back(action);
            }
            if closed.is_empty() {
                break;
            }
            for (conn, reason) in std::mem::take(&mut closed) {
                self.replica
                    .handle_event(now_unix_ms, Event::Disconnected { conn, reason });
            }
        }
        self.liveness_due_ms = self
            .open
            .values()
            .map(|liveness| {
                (liveness.received_ms + IDLE_TIMEOUT_MS)
                    .min(liveness.sent_ms + KEEPALIVE_INTERVAL_MS)
            })
            .min();
    }

    /// Closes connections whose peer went silent and sends keep-alives on quiet ones; returns
    /// the closed ones with their reason, for the replica.
    fn check_liveness(&mut self, steady_ms: u64) -> Vec<(ConnId, String)> {
        // Called far past our own deadline: this node was stalled, not its peers.
        if self
            .liveness_due_ms
            .is_some_and(|due| steady_ms > due + OWN_STALL_MS)
        {
            for liveness in self.open.values_mut() {
                liveness.received_ms = liveness.received_ms.max(steady_ms - OWN_STALL_MS);
            }
        }
        let mut closed = Vec::new();
        for (conn, liveness) in &mut self.open {
            if steady_ms >= liveness.received_ms + IDLE_TIMEOUT_MS {
                closed.push(*conn);
            } else if steady_ms >= liveness.sent_ms + KEEPALIVE_INTERVAL_MS {
                liveness.keepalives_sent += 1;
                liveness.sent_ms = steady_ms;
                self.actions.push_back(Action::Send {
                    conn: *conn,
                    message: Message::KeepAlive(KeepAlive {
                        sequence: liveness.keepalives_sent,
                    }),
                });
            }
        }
        closed
            .into_iter()
            .map(|conn| {
                self.open.remove(&conn);
                self.actions.push_back(Action::Close { conn, error: None });
                (
                    conn,
                    format!("the peer sent nothing for {} s", IDLE_TIMEOUT_MS / 1000),
                )
            })
            .collect()
    }

    fn refresh_client_limit(&mut self) -> Option<String> {
        let value = match self.replica.store().config_get(MAX_CONCURRENT_UPGRADES_KEY) {
            Ok(value) => value,
            Err(fault) => return Some(format!("reading the client limit: {}", fault.message)),
        };
        match max_concurrent_from_config(value.as_deref()) {
            Ok(limit) => {
                self.clients.set_max_concurrent(limit);
                None
            }
            Err(why) => Some(format!(
                "{MAX_CONCURRENT_UPGRADES_KEY}: {why}; keeping the limit of {}",
                self.clients.max_concurrent()
            )),
        }
    }
}
