//! The simulated world: appliances on simulated disks and clocks, the network between them,
//! the site's clients and the operators, all driven by one seed.
//!
//! Simulated time jumps from one event to the next, so an hour of simulated time costs what its
//! events cost. The world drives the engine's real [`Replica`] and real [`Store`] (on a
//! [`SimDisk`]); every message crosses the real wire codec as bytes. What is modelled instead
//! of run: TLS itself (the key proof and the version check are evaluated with the transport's
//! own rules), and sockets (a link is a pair of FIFO queues with latency and bandwidth).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use dyad_engine::disk::sim::SimDisk;
use dyad_engine::replica::{
    Action, Command, CommandError, CommandId, ConnId, Event, LocalNode, PeerHandshake, Purpose,
    Replica, ReplicaConfig,
};
use dyad_engine::store::{ImportInfo, Store};
use dyad_engine::transport::{check_peer_hello, LocalHello};
use dyad_wire::{
    decode_frame, encode_frame, Epoch, Hello, Message, NodeId, SessionId, SoftwareVersion,
};

use crate::rng::SimRng;

/// How long a connection attempt to an unreachable address takes to fail.
pub const CONNECT_TIMEOUT_MS: u64 = 3_000;

/// One appliance of the world.
pub struct Appliance {
    pub name: String,
    pub node_id: NodeId,
    pub address: String,
    pub disk: Arc<SimDisk>,
    /// `None` while the appliance is down (crashed, or not yet started).
    pub replica: Option<Replica<Store>>,
    pub psk: [u8; 32],
    pub software: SoftwareVersion,
    pub certificate_fingerprint: [u8; 32],
    /// This appliance's clock minus true time.
    pub clock_skew_ms: i64,
    pub site_hostname: Option<String>,
    pub config: ReplicaConfig,
}

impl Appliance {
    pub fn is_up(&self) -> bool {
        self.replica.is_some()
    }
}

/// Network conditions; faults are integer ratios.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    pub latency_min_ms: u64,
    pub latency_max_ms: u64,
    /// Bytes per simulated millisecond on each link direction.
    pub rate_bytes_per_ms: u64,
    /// Chance that a frame delivery resets its connection instead (per mille).
    pub reset_per_mille: u64,
    /// Directed pairs `(from, to)` whose packets are dropped.
    pub partitioned: BTreeSet<(usize, usize)>,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            latency_min_ms: 1,
            latency_max_ms: 5,
            rate_bytes_per_ms: 100 * 1024,
            reset_per_mille: 0,
            partitioned: BTreeSet::new(),
        }
    }
}

/// A connection between two appliances: end 0 dialed, end 1 accepted.
#[derive(Debug)]
struct SimLink {
    ends: [usize; 2],
    /// Torn down by the network or a crash: nothing more is delivered either way.
    reset: bool,
    /// Closed by that side: it sends and receives nothing more; frames it sent before still
    /// reach the other side, then the other side learns of the close.
    closed_by: [bool; 2],
    /// Whether each side was told the link ended (exactly once).
    notified: [bool; 2],
    /// When the last frame from each side arrives at the other; keeps delivery FIFO.
    last_arrival_ms: [u64; 2],
}

impl SimLink {
    fn can_send(&self) -> bool {
        !self.reset && !self.closed_by[0] && !self.closed_by[1]
    }

    fn can_receive(&self, side: usize) -> bool {
        !self.reset && !self.closed_by[side]
    }
}

#[derive(Debug)]
enum WorldEvent {
    Connect {
        from: usize,
        address: String,
        purpose: Purpose,
        pin: Option<[u8; 32]>,
    },
    ConnectFailed {
        to: usize,
        purpose: Purpose,
        reason: String,
    },
    Connected {
        link: ConnId,
        side: usize,
        handshake: PeerHandshake,
        purpose: Option<Purpose>,
    },
    Deliver {
        link: ConnId,
        side: usize,
        frame: Bytes,
    },
    Closed {
        link: ConnId,
        side: usize,
        reason: String,
    },
}

/// What happened to an operator command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandRecord {
    pub appliance: usize,
    pub command: Command,
    pub issued_ms: u64,
    pub outcome: Option<Result<String, CommandError>>,
    pub finished_ms: Option<u64>,
}

/// Why a run stopped early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunError {
    StepBudgetExhausted { steps: u64, now_ms: u64 },
}

/// The whole simulated world.
pub struct World {
    pub now_ms: u64,
    pub rng: SimRng,
    pub appliances: Vec<Appliance>,
    pub network: Network,
    links: BTreeMap<ConnId, SimLink>,
    events: BTreeMap<(u64, u64), WorldEvent>,
    event_sequence: u64,
    next_link: ConnId,
    next_command: CommandId,
    pub commands: BTreeMap<CommandId, CommandRecord>,
    /// Which appliances accepted a configuration write in each epoch (property 3).
    pub writers_by_epoch: BTreeMap<Epoch, BTreeSet<usize>>,
    /// Every session completed anywhere, with its content hash (property 1).
    pub completed_sessions: BTreeMap<SessionId, [u8; 32]>,
    /// Recording bytes sent over the simulated network, per appliance.
    pub chunk_bytes_sent: Vec<u64>,
    /// Every byte of every frame sent, per appliance (recordings and metadata).
    pub frame_bytes_sent: Vec<u64>,
    trace: blake3::Hasher,
    pub steps: u64,
    pub step_budget: u64,
}

impl World {
    pub fn new(seed: u64) -> World {
        World {
            now_ms: 1_800_000_000_000,
            rng: SimRng::new(seed),
            appliances: Vec::new(),
            network: Network::default(),
            links: BTreeMap::new(),
            events: BTreeMap::new(),
            event_sequence: 0,
            next_link: 1,
            next_command: 1,
            commands: BTreeMap::new(),
            writers_by_epoch: BTreeMap::new(),
            completed_sessions: BTreeMap::new(),
            chunk_bytes_sent: Vec::new(),
            frame_bytes_sent: Vec::new(),
            trace: blake3::Hasher::new(),
            steps: 0,
            step_budget: 2_000_000,
        }
    }

    /// Adds an appliance (initialised, standalone, up) and returns its index.
    pub fn add_appliance(&mut self, name: &str, psk: [u8; 32], software: SoftwareVersion) -> usize {
        let index = self.appliances.len();
        let mut node_bytes = [0u8; 16];
        self.rng.fill(&mut node_bytes);
        let mut fingerprint = [0u8; 32];
        self.rng.fill(&mut fingerprint);
        let disk = SimDisk::new(self.rng.next_u64());
        self.appliances.push(Appliance {
            name: name.to_string(),
            node_id: NodeId(node_bytes),
            address: format!("{name}:7400"),
            disk,
            replica: None,
            psk,
            software,
            certificate_fingerprint: fingerprint,
            clock_skew_ms: 0,
            site_hostname: Some("site.example".into()),
            config: ReplicaConfig::default(),
        });
        self.chunk_bytes_sent.push(0);
        self.frame_bytes_sent.push(0);
        self.start(index);
        index
    }

    fn local_now(&self, index: usize) -> u64 {
        let skew = self.appliances[index].clock_skew_ms;
        self.now_ms.saturating_add_signed(skew)
    }

    fn trace(&mut self, what: &str, details: &[u64]) {
        self.trace.update(&self.now_ms.to_le_bytes());
        self.trace.update(what.as_bytes());
        for detail in details {
            self.trace.update(&detail.to_le_bytes());
        }
    }

    /// A hash of every event so far: the same seed must give the same value.
    pub fn trace_hash(&self) -> [u8; 32] {
        *self.trace.finalize().as_bytes()
    }

    // ----- appliances -----

    /// Starts (or restarts after a crash) appliance `index` on its disk as it is.
    pub fn start(&mut self, index: usize) {
        let now = self.local_now(index);
        let appliance = &mut self.appliances[index];
        if appliance.replica.is_some() {
            return;
        }
        let store = match Store::open(appliance.disk.clone()) {
            Ok(store) => store,
            Err(error) => panic!(
                "appliance {} could not reopen its store: {error}",
                appliance.name
            ),
        };
        let node = LocalNode {
            node_id: appliance.node_id,
            name: appliance.name.clone(),
            software: appliance.software,
            site_hostname: appliance.site_hostname.clone(),
        };
        let replica = match Replica::open(store, node, appliance.config.clone(), now) {
            Ok(replica) => replica,
            Err(fault) => panic!(
                "appliance {} could not open its replica: {fault}",
                appliance.name
            ),
        };
        appliance.replica = Some(replica);
        self.trace("start", &[index as u64]);
    }

    /// Power loss: the process dies and unsynced writes are lost (optionally torn).
    pub fn crash(&mut self, index: usize, tear: bool) {
        if self.appliances[index].replica.take().is_none() {
            return;
        }
        self.appliances[index].disk.crash(tear);
        self.trace("crash", &[index as u64, u64::from(tear)]);
        let links: Vec<ConnId> = self
            .links
            .iter()
            .filter(|(_, link)| !link.reset && link.ends.contains(&index))
            .map(|(id, _)| *id)
            .collect();
        for id in links {
            self.reset_link(id, "peer crashed");
        }
    }

    pub fn replica(&self, index: usize) -> Option<&Replica<Store>> {
        self.appliances[index].replica.as_ref()
    }

    // ----- site and operators -----

    /// A client completes a session on appliance `index` with a recording of `size_bytes`
    /// synthetic bytes. Returns its id, or `None` if the appliance is down.
    pub fn complete_session(&mut self, index: usize, size_bytes: u64) -> Option<SessionId> {
        let now = self.local_now(index);
        let mut content_rng = self.rng.fork();
        let appliance = &mut self.appliances[index];
        let replica = appliance.replica.as_mut()?;
        let source = SyntheticReader {
            rng: &mut content_rng,
            remaining: size_bytes,
        };
        let info = ImportInfo {
            origin: appliance.node_id,
            started_unix_ms: now.saturating_sub(60_000),
            ended_unix_ms: now,
            ended_normally: true,
            expected_len: Some(size_bytes),
            expected_root: None,
        };
        match replica.store_mut().import_recording(source, info) {
            Ok(meta) => {
                self.completed_sessions.insert(meta.id, meta.root);
                self.trace("session", &[index as u64, meta.id.sequence, size_bytes]);
                Some(meta.id)
            }
            Err(error) => {
                self.trace("session-failed", &[index as u64]);
                let _ = error;
                None
            }
        }
    }

    /// A configuration write on appliance `index`; records which appliance wrote in which epoch.
    pub fn write_config(&mut self, index: usize, key: &str, value: Option<&[u8]>) -> bool {
        let Some(replica) = self.appliances[index].replica.as_mut() else {
            return false;
        };
        let epoch = replica.state().epoch;
        let accepted = replica.write_config(key, value).is_ok();
        if accepted {
            self.writers_by_epoch
                .entry(epoch)
                .or_default()
                .insert(index);
        }
        self.trace("config-write", &[index as u64, u64::from(accepted)]);
        self.drain(index);
        accepted
    }

    /// Issues an operator command on appliance `index`.
    pub fn command(&mut self, index: usize, command: Command) -> CommandId {
        let id = self.next_command;
        self.next_command += 1;
        self.commands.insert(
            id,
            CommandRecord {
                appliance: index,
                command: command.clone(),
                issued_ms: self.now_ms,
                outcome: None,
                finished_ms: None,
            },
        );
        self.trace("command", &[index as u64, id]);
        let now = self.local_now(index);
        match self.appliances[index].replica.as_mut() {
            Some(replica) => {
                replica.handle_command(now, id, command);
                self.drain(index);
            }
            None => {
                if let Some(record) = self.commands.get_mut(&id) {
                    record.outcome =
                        Some(Err(CommandError::Refused("the appliance is down".into())));
                    record.finished_ms = Some(self.now_ms);
                }
            }
        }
        id
    }

    pub fn outcome(&self, id: CommandId) -> Option<&Result<String, CommandError>> {
        self.commands
            .get(&id)
            .and_then(|record| record.outcome.as_ref())
    }

    // ----- the event loop -----

    fn schedule(&mut self, at_ms: u64, event: WorldEvent) {
        self.event_sequence += 1;
        self.events.insert((at_ms, self.event_sequence), event);
    }

    fn latency(&mut self) -> u64 {
        let (low, high) = (self.network.latency_min_ms, self.network.latency_max_ms);
        self.rng.between(low, high)
    }

    fn reachable(&self, from: usize, to: usize) -> bool {
        self.appliances[to].is_up()
            && !self.network.partitioned.contains(&(from, to))
            && !self.network.partitioned.contains(&(to, from))
    }

    /// The time of the next thing that will happen, if anything will.
    fn next_event_time(&self) -> Option<u64> {
        let mut next = self.events.keys().next().map(|(at, _)| *at);
        for (index, appliance) in self.appliances.iter().enumerate() {
            if let Some(replica) = &appliance.replica {
                if let Some(local) = replica.next_timeout() {
                    let at = local
                        .saturating_add_signed(-self.appliances[index].clock_skew_ms)
                        .max(self.now_ms);
                    next = Some(next.map_or(at, |current| current.min(at)));
                }
            }
        }
        next
    }

    /// Runs until simulated time reaches `until_ms` (or nothing is left to happen).
    pub fn run_until(&mut self, until_ms: u64) -> Result<(), RunError> {
        loop {
            match self.next_event_time() {
                Some(at) if at <= until_ms => self.step(at)?,
                _ => {
                    self.now_ms = self.now_ms.max(until_ms);
                    return Ok(());
                }
            }
        }
    }

    /// Runs for `duration_ms` of simulated time.
    pub fn run_for(&mut self, duration_ms: u64) -> Result<(), RunError> {
        self.run_until(self.now_ms + duration_ms)
    }

    /// Runs until `done(world)` holds, or `limit_ms` of simulated time passed (returns false).
    pub fn run_until_true(
        &mut self,
        limit_ms: u64,
        mut done: impl FnMut(&World) -> bool,
    ) -> Result<bool, RunError> {
        let deadline = self.now_ms + limit_ms;
        loop {
            if done(self) {
                return Ok(true);
            }
            match self.next_event_time() {
                Some(at) if at <= deadline => self.step(at)?,
                _ => {
                    self.now_ms = self.now_ms.max(deadline);
                    return Ok(done(self));
                }
            }
        }
    }

    fn step(&mut self, at_ms: u64) -> Result<(), RunError> {
        self.steps += 1;
        if self.steps > self.step_budget {
            return Err(RunError::StepBudgetExhausted {
                steps: self.steps,
                now_ms: self.now_ms,
            });
        }
        self.now_ms = self.now_ms.max(at_ms);
        // Timeouts first, in appliance order, then at most one scheduled event.
        for index in 0..self.appliances.len() {
            let now = self.local_now(index);
            let due = self.appliances[index]
                .replica
                .as_ref()
                .and_then(|replica| replica.next_timeout())
                .is_some_and(|at| at <= now);
            if due {
                self.trace("timeout", &[index as u64]);
                if let Some(replica) = self.appliances[index].replica.as_mut() {
                    replica.handle_timeout(now);
                }
                self.drain(index);
            }
        }
        let key = self.events.keys().next().copied();
        if let Some(key) = key {
            if key.0 <= self.now_ms {
                if let Some(event) = self.events.remove(&key) {
                    self.dispatch(event);
                }
            }
        }
        Ok(())
    }

    fn dispatch(&mut self, event: WorldEvent) {
        match event {
            WorldEvent::Connect {
                from,
                address,
                purpose,
                pin,
            } => self.connect(from, address, purpose, pin),
            WorldEvent::ConnectFailed {
                to,
                purpose,
                reason,
            } => {
                self.trace("connect-failed", &[to as u64]);
                self.deliver_event(to, Event::ConnectFailed { purpose, reason });
            }
            WorldEvent::Connected {
                link,
                side,
                handshake,
                purpose,
            } => {
                let open = self
                    .links
                    .get(&link)
                    .is_some_and(|l| l.can_receive(side) && !l.notified[side]);
                let index = self.links.get(&link).map(|l| l.ends[side]);
                if let (true, Some(index)) = (open, index) {
                    self.trace("connected", &[link, side as u64]);
                    self.deliver_event(
                        index,
                        Event::Connected {
                            conn: link,
                            handshake,
                            outbound: purpose,
                        },
                    );
                }
            }
            WorldEvent::Deliver { link, side, frame } => {
                let Some(sim_link) = self.links.get(&link) else {
                    return;
                };
                if !sim_link.can_receive(side) {
                    return;
                }
                let index = sim_link.ends[side];
                let from = sim_link.ends[1 - side];
                if !self.reachable(from, index)
                    || self.rng.chance(self.network.reset_per_mille, 1000)
                {
                    self.reset_link(link, "connection reset by the network");
                    return;
                }
                self.trace.update(&frame);
                let mut buffer = BytesMut::from(&frame[..]);
                let message = match decode_frame(&mut buffer) {
                    Ok(message) if buffer.is_empty() => message,
                    other => panic!("the world delivered a frame the codec refuses: {other:?}"),
                };
                self.trace("deliver", &[link, side as u64]);
                self.deliver_event(
                    index,
                    Event::Received {
                        conn: link,
                        message,
                    },
                );
            }
            WorldEvent::Closed { link, side, reason } => {
                let Some(sim_link) = self.links.get_mut(&link) else {
                    return;
                };
                if sim_link.notified[side] {
                    return;
                }
                sim_link.notified[side] = true;
                let index = sim_link.ends[side];
                if sim_link.notified == [true, true] {
                    self.links.remove(&link);
                }
                self.trace("closed", &[link, side as u64]);
                self.deliver_event(index, Event::Disconnected { conn: link, reason });
            }
        }
    }

    fn deliver_event(&mut self, index: usize, event: Event) {
        let now = self.local_now(index);
        if let Some(replica) = self.appliances[index].replica.as_mut() {
            replica.handle_event(now, event);
            self.drain(index);
        }
    }

    fn hello_of(&self, index: usize, now_local_ms: u64) -> Option<Hello> {
        let appliance = &self.appliances[index];
        let replica = appliance.replica.as_ref()?;
        let local = self.local_hello(index)?;
        Some(Hello {
            protocol_min: local.protocol_min,
            protocol_max: local.protocol_max,
            software: local.software,
            node_id: local.node_id,
            node_name: local.node_name,
            role: replica.state().role,
            epoch: replica.state().epoch,
            clock_unix_ms: now_local_ms,
        })
    }

    fn local_hello(&self, index: usize) -> Option<LocalHello> {
        let appliance = &self.appliances[index];
        let replica = appliance.replica.as_ref()?;
        Some(LocalHello::new(
            appliance.software,
            appliance.node_id,
            appliance.name.clone(),
            replica.state().role,
            replica.state().epoch,
        ))
    }

    /// Models the transport: reachability, the key proof, the version check and pinning.
    fn connect(&mut self, from: usize, address: String, purpose: Purpose, pin: Option<[u8; 32]>) {
        let target = self
            .appliances
            .iter()
            .position(|appliance| appliance.address == address);
        let fail = |world: &mut World, delay: u64, reason: String| {
            let at = world.now_ms + delay;
            world.schedule(
                at,
                WorldEvent::ConnectFailed {
                    to: from,
                    purpose: purpose.clone(),
                    reason,
                },
            );
        };
        let Some(to) = target else {
            return fail(self, CONNECT_TIMEOUT_MS, format!("{address}: no such host"));
        };
        if !self.reachable(from, to) {
            return fail(
                self,
                CONNECT_TIMEOUT_MS,
                format!("{address}: connection timed out"),
            );
        }
        let round_trip = self.latency() * 2;
        if self.appliances[from].psk != self.appliances[to].psk {
            return fail(
                self,
                round_trip * 2,
                "the inter-appliance keys differ (KeyMismatch)".into(),
            );
        }
        let (Some(from_hello), Some(to_hello)) = (
            self.hello_of(from, self.local_now(from)),
            self.hello_of(to, self.local_now(to)),
        ) else {
            return fail(
                self,
                CONNECT_TIMEOUT_MS,
                format!("{address}: connection refused"),
            );
        };
        let (Some(from_local), Some(to_local)) = (self.local_hello(from), self.local_hello(to))
        else {
            return fail(
                self,
                CONNECT_TIMEOUT_MS,
                format!("{address}: connection refused"),
            );
        };
        if let Err((_, text)) = check_peer_hello(&from_local, &to_hello) {
            return fail(self, round_trip * 3, text);
        }
        if check_peer_hello(&to_local, &from_hello).is_err() {
            return fail(
                self,
                round_trip * 3,
                "the peer refused the handshake".into(),
            );
        }
        if let Some(pin) = pin {
            if pin != self.appliances[to].certificate_fingerprint {
                return fail(
                    self,
                    round_trip * 3,
                    format!("{address} presented an unexpected certificate (UnexpectedPeer)"),
                );
            }
        }
        let link = self.next_link;
        self.next_link += 1;
        let ready = self.now_ms + round_trip * 3;
        self.links.insert(
            link,
            SimLink {
                ends: [from, to],
                reset: false,
                closed_by: [false; 2],
                notified: [false; 2],
                last_arrival_ms: [ready, ready],
            },
        );
        let skew = |index: usize| self.appliances[index].clock_skew_ms;
        let dialer_sees = PeerHandshake {
            hello: to_hello,
            certificate_fingerprint: self.appliances[to].certificate_fingerprint,
            clock_offset_ms: skew(to) - skew(from),
        };
        let acceptor_sees = PeerHandshake {
            hello: from_hello,
            certificate_fingerprint: self.appliances[from].certificate_fingerprint,
            clock_offset_ms: skew(from) - skew(to),
        };
        self.trace("link", &[link, from as u64, to as u64]);
        self.schedule(
            ready,
            WorldEvent::Connected {
                link,
                side: 1,
                handshake: acceptor_sees,
                purpose: None,
            },
        );
        self.schedule(
            ready,
            WorldEvent::Connected {
                link,
                side: 0,
                handshake: dialer_sees,
                purpose: Some(purpose),
            },
        );
    }

    /// Closes a link abruptly: both ends learn of it after a latency.
    fn reset_link(&mut self, link: ConnId, reason: &str) {
        let Some(sim_link) = self.links.get_mut(&link) else {
            return;
        };
        if sim_link.reset {
            return;
        }
        sim_link.reset = true;
        self.trace("reset", &[link]);
        for side in 0..2 {
            let at = self.now_ms + 1;
            self.schedule(
                at,
                WorldEvent::Closed {
                    link,
                    side,
                    reason: reason.to_string(),
                },
            );
        }
    }

    /// Carries out everything appliance `index` asked for.
    fn drain(&mut self, index: usize) {
        loop {
            let Some(action) = self.appliances[index]
                .replica
                .as_mut()
                .and_then(|replica| replica.poll_action())
            else {
                return;
            };
            self.perform(index, action);
        }
    }

    fn perform(&mut self, index: usize, action: Action) {
        match action {
            Action::Connect {
                address,
                purpose,
                pinned_fingerprint,
            } => {
                self.trace("dial", &[index as u64]);
                let at = self.now_ms;
                self.schedule(
                    at,
                    WorldEvent::Connect {
                        from: index,
                        address,
                        purpose,
                        pin: pinned_fingerprint,
                    },
                );
            }
            Action::Send { conn, message } => self.send(index, conn, &message),
            Action::Close { conn, error } => {
                if let Some(error) = error {
                    self.send(index, conn, &Message::Error(error));
                }
                self.close(index, conn);
            }
            Action::Progress { .. } => {}
            Action::Completed { command, outcome } => {
                self.trace("completed", &[command, u64::from(outcome.is_ok())]);
                if let Some(record) = self.commands.get_mut(&command) {
                    record.outcome = Some(outcome);
                    record.finished_ms = Some(self.now_ms);
                }
            }
        }
    }

    fn side_of(&self, index: usize, conn: ConnId) -> Option<usize> {
        let link = self.links.get(&conn)?;
        link.ends.iter().position(|end| *end == index)
    }

    fn send(&mut self, index: usize, conn: ConnId, message: &Message) {
        let Some(side) = self.side_of(index, conn) else {
            return;
        };
        if !self.links.get(&conn).is_some_and(SimLink::can_send) {
            return;
        }
        let mut frame = BytesMut::new();
        if let Err(error) = encode_frame(message, &mut frame) {
            panic!("appliance {index} built a message the codec refuses: {error}");
        }
        if let Message::Chunk(chunk) = message {
            self.chunk_bytes_sent[index] += chunk.data.len() as u64;
        }
        self.frame_bytes_sent[index] += frame.len() as u64;
        let latency = self.latency();
        let transfer_ms = frame.len() as u64 / self.network.rate_bytes_per_ms.max(1);
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        let direction = side;
        let arrival = (self.now_ms + latency).max(link.last_arrival_ms[direction]) + transfer_ms;
        link.last_arrival_ms[direction] = arrival;
        self.schedule(
            arrival,
            WorldEvent::Deliver {
                link: conn,
                side: 1 - side,
                frame: frame.freeze(),
            },
        );
    }

    /// An orderly close by appliance `index`: the peer sees it after the frames already sent,
    /// and the closer is told at once.
    fn close(&mut self, index: usize, conn: ConnId) {
        let Some(side) = self.side_of(index, conn) else {
            return;
        };
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        if link.closed_by[side] || link.reset {
            return;
        }
        link.closed_by[side] = true;
        let arrival = link.last_arrival_ms[side].max(self.now_ms) + 1;
        let now = self.now_ms;
        self.trace("close", &[conn, side as u64]);
        self.schedule(
            arrival,
            WorldEvent::Closed {
                link: conn,
                side: 1 - side,
                reason: "closed by the peer".into(),
            },
        );
        self.schedule(
            now,
            WorldEvent::Closed {
                link: conn,
                side,
                reason: "closed locally".into(),
            },
        );
    }
}

/// A deterministic stream of recording bytes.
struct SyntheticReader<'a> {
    rng: &'a mut SimRng,
    remaining: u64,
}

impl std::io::Read for SyntheticReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let len = (out.len() as u64).min(self.remaining) as usize;
        self.rng.fill(&mut out[..len]);
        self.remaining -= len as u64;
        Ok(len)
    }
}

impl World {
    /// Cuts the network between `a` and `b` both ways; open connections between them break.
    pub fn partition(&mut self, a: usize, b: usize) {
        self.network.partitioned.insert((a, b));
        self.network.partitioned.insert((b, a));
        self.trace("partition", &[a as u64, b as u64]);
        let crossing: Vec<ConnId> = self
            .links
            .iter()
            .filter(|(_, link)| !link.reset && link.ends.contains(&a) && link.ends.contains(&b))
            .map(|(id, _)| *id)
            .collect();
        for id in crossing {
            self.reset_link(id, "network partition");
        }
    }

    /// Restores the network between `a` and `b`.
    pub fn heal(&mut self, a: usize, b: usize) {
        self.network.partitioned.remove(&(a, b));
        self.network.partitioned.remove(&(b, a));
        self.trace("heal", &[a as u64, b as u64]);
    }

    /// Resets every open connection (a network blip).
    pub fn reset_all_links(&mut self) {
        let open: Vec<ConnId> = self
            .links
            .iter()
            .filter(|(_, link)| !link.reset)
            .map(|(id, _)| *id)
            .collect();
        for id in open {
            self.reset_link(id, "connection reset by the network");
        }
    }

    /// Whether appliance `index` currently holds a link to the relationship's peer.
    pub fn link_up(&self, index: usize) -> bool {
        self.replica(index)
            .is_some_and(|replica| replica.status(self.local_now(index)).link.is_some())
    }

    /// Status of appliance `index` as its operator would see it now.
    pub fn status(&self, index: usize) -> Option<dyad_engine::replica::Status> {
        self.replica(index)
            .map(|replica| replica.status(self.local_now(index)))
    }
}
