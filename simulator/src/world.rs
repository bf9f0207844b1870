//! The simulated world: appliances on simulated disks and clocks, the network between them,
//! the site's clients and the operators, all driven by one seed.
//!
//! Simulated time jumps from one event to the next, so an hour of simulated time costs what its
//! events cost. The world drives the engine's real [`Replica`] and real [`Store`] (on a
//! [`SimDisk`]); every message crosses the real wire codec as bytes. What is modelled instead
//! of run: TLS itself (the key proof and the version check are evaluated with the transport's
//! own rules), and sockets (a link is a pair of FIFO byte streams with latency and bandwidth,
//! as TCP presents them: loss, duplication and reordering below TCP surface only as delay
//! spikes, stalls and resets). `docs/simulator.md` lists what is and is not simulated.
//!
//! The world keeps its own true time (`now_ms`); each appliance sees it through its own
//! [`SimClock`] (offset, drift, jumps), and every time handed to the engine is that local time.
//!
//! Layering: the world is built from parts that know nothing of it (`crate::clock`, the site's
//! `crate::clients` population, `crate::rng`, `crate::coverage`), and what it finds broken on
//! the way (property 2 at each sync, property 4 at each start, the client-update limit, an
//! interrupted install) it records as [`Violation`] values (`crate::violation`). Everything
//! that judges or drives it from outside (the checkers in `crate::checks`, the operator
//! procedures in `crate::upgrade`, the scenarios and the swarm) depends on the world, never
//! the reverse.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use dyad_core::clients::{CheckInAnswer, ClientKind};
use dyad_core::handshake::{
    check_not_shared_hostname, handshake_outcome, HandshakeFailure, HandshakeSide, LocalHello,
};
use dyad_core::install::RecoveryDecision;
use dyad_core::node::Node;
use dyad_core::replica::ports::StoreFault;
use dyad_core::replica::{
    Action, Command, CommandError, CommandId, ConnId, LocalNode, PeerHandshake, Purpose, Replica,
    ReplicaConfig, ReplicaStore, SyncRecord,
};
use dyad_store::disk::sim::{PagePool, SimDisk};
use dyad_store::disk::Disk;
use dyad_store::{recording_file_name, ImportInfo, Store, SyncWork, FORMAT_VERSION};
use dyad_wire::{
    decode_frame, encode_frame, Chunk, ConfigVersion, Epoch, Hello, Message, NodeId, ReasonCode,
    Role, SessionId, SoftwareVersion, Version,
};

use crate::clients::{
    ClientPopulation, Habit, DAILY_MS, UNREACHABLE_RETRY_MS, UPDATE_DURATION_MAX_MS,
};
use crate::clock::{SimClock, DRIFT_PPM_MAX};
use crate::coverage::{Coverage, CoverageEvent};
use crate::rng::SimRng;
use crate::violation::Violation;

/// True time when every world begins.
pub const WORLD_START_MS: u64 = 1_800_000_000_000;
/// How long a connection attempt to an unreachable address takes to fail.
pub const CONNECT_TIMEOUT_MS: u64 = 3_000;
/// Frames larger than this are traced by length and their two ends only: they are chunk
/// payloads, whose content the final-store hash pins through the recordings' roots.
/// How long after a replica asks for a sync the driver's syncer reports it done.
const SYNC_LATENCY_MS: u64 = 1;
const TRACE_FRAME_FULL_BYTES: usize = 4096;
const TRACE_FRAME_END_BYTES: usize = 512;

/// One appliance of the world.
pub struct Appliance {
    pub name: String,
    pub node_id: NodeId,
    /// The node ids of the hardware this one replaced, nearest first (as `appliance.json`).
    pub predecessors: Vec<NodeId>,
    pub address: String,
    pub disk: Arc<SimDisk>,
    /// The engine's node (its replica and the rules around it, as `dyad serve` runs them);
    /// `None` while the appliance is down (crashed, or not yet started).
    pub node: Option<Node<Store>>,
    pub psk: [u8; 32],
    pub software: SoftwareVersion,
    pub certificate_fingerprint: [u8; 32],
    pub clock: SimClock,
    /// Paused (a hung process, a VM snapshot): it handles nothing until resumed; everything
    /// addressed to it waits, in order.
    pub paused_since_ms: Option<u64>,
    pub site_hostname: Option<String>,
    pub config: ReplicaConfig,
    /// Counts process lifetimes; a client session belongs to one.
    pub incarnation: u64,
    /// The format a store created on this appliance's (empty) disk gets: an older release's
    /// format for appliances that an upgrade scenario starts on the old software.
    pub store_format_new: u64,
    /// Which physical machine fills this slot: 0 for the first, one more at each hardware
    /// replacement. Properties about writers key by it, not by the slot or the node id, so old
    /// and new hardware count as two writers whatever identity the engine gives them.
    pub hardware: u32,
}

/// Who wrote what under one configuration stamp: the hardware, the key and the value.
pub type StampedWrite = (Hardware, String, Option<Vec<u8>>);

/// One physical appliance: its slot in the world and which hardware fills the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hardware {
    pub slot: usize,
    pub generation: u32,
}

impl Appliance {
    pub fn is_up(&self) -> bool {
        self.node.is_some()
    }

    pub fn replica(&self) -> Option<&Replica<Store>> {
        self.node.as_ref().map(Node::replica)
    }

    pub fn is_paused(&self) -> bool {
        self.paused_since_ms.is_some()
    }
}

/// The install journal (`D/install-journal.json`) an install leaves on a stopped appliance
/// until it finishes: what the next start needs to complete or roll back an interrupted one
/// (`crate::upgrade` writes it, [`World::start`] recovers from it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstallJournal {
    pub from: SoftwareVersion,
    pub to: SoftwareVersion,
    pub from_store_format: u64,
    pub to_store_format: u64,
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
    /// Chance that a frame is held up (per mille): what loss, duplication and reordering below
    /// TCP look like from above it (retransmission, head-of-line blocking).
    pub delay_spike_per_mille: u64,
    pub delay_spike_max_ms: u64,
    /// Chance that a chunk leaves a *faulty sender* with one bit flipped (per mille). TLS
    /// protects the bytes it is given, not a sender's bad memory or bug: this is what the
    /// receiver's verification is for.
    pub corrupt_chunk_per_mille: u64,
    /// Directed pairs `(from, to)` whose packets are dropped, with the time they started.
    pub partitioned: BTreeMap<(usize, usize), u64>,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            latency_min_ms: 1,
            latency_max_ms: 5,
            rate_bytes_per_ms: 100 * 1024,
            reset_per_mille: 0,
            delay_spike_per_mille: 0,
            delay_spike_max_ms: 2_000,
            corrupt_chunk_per_mille: 0,
            partitioned: BTreeMap::new(),
        }
    }
}

impl Network {
    fn dropped(&self, from: usize, to: usize) -> bool {
        self.partitioned.contains_key(&(from, to))
    }
}

/// The world's name for a link; each end's node knows it by its own [`ConnId`].
pub(crate) type LinkId = u64;

/// A connection between two appliances: end 0 dialed, end 1 accepted.
#[derive(Debug)]
struct SimLink {
    ends: [usize; 2],
    /// Each end's connection id, given by its node once the end was told it is connected.
    conns: [Option<ConnId>; 2],
    /// Why the dialer asked for it: an attempt that ends before it connected is reported to
    /// the dialer as failed (every connect ends in exactly one outcome, as in the driver).
    purpose: Purpose,
    /// Torn down by the network or a crash: nothing more is delivered either way.
    reset: bool,
    /// Closed by that side: it sends and receives nothing more; frames it sent before still
    /// reach the other side, then the other side learns of the close.
    closed_by: [bool; 2],
    /// Whether each side was told the link ended (exactly once).
    notified: [bool; 2],
    /// When the last frame to each side arrives; keeps delivery FIFO.
    last_arrival_ms: [u64; 2],
    /// Frames to each side held up by a dropped direction (TCP keeps retransmitting them).
    stalled: [VecDeque<Bytes>; 2],
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
pub(crate) enum WorldEvent {
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
        link: LinkId,
        side: usize,
        handshake: PeerHandshake,
        purpose: Option<Purpose>,
    },
    Deliver {
        link: LinkId,
        side: usize,
        frame: Bytes,
    },
    /// Frames held up by a dropped direction arrive after it healed.
    Flush {
        link: LinkId,
        side: usize,
    },
    Closed {
        link: LinkId,
        side: usize,
        reason: String,
    },
    SessionEnd {
        session: u64,
    },
    Command {
        appliance: usize,
        id: CommandId,
        command: Command,
    },
    /// A client arrives at the site address (routed when it arrives).
    /// A deployed client checks in with the site (`crate::clients`).
    ClientCheckIn {
        client: usize,
    },
    /// A deployed client finished installing the update it was granted.
    ClientUpdateDone {
        client: usize,
    },
    ClientArrival {
        size_bytes: u64,
        duration_ms: u64,
    },
    /// The driver's syncer of `appliance` runs the sync it was asked for
    /// (`Action::SyncIncoming`), unless the process it belonged to ended meanwhile.
    /// The store sync work an appliance's node asked for, taken when it asked, runs.
    Synced {
        appliance: usize,
        incarnation: u64,
        work: SyncWork,
        ticket: u64,
    },
}

/// How the site address moves from one appliance to another (`World::swing_site`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Swing {
    /// The shared IP moves to the other appliance at once; connections to the old one break
    /// (sessions in progress there are cut off, kept with what was recorded).
    SharedIp,
    /// The DNS name now answers with the other appliance; clients that resolved it earlier
    /// keep the old answer until its TTL expires. Sessions in progress are unaffected.
    Dns { ttl_ms: u64 },
    /// The firewall's NAT rule now forwards to the other appliance: new connections go there at
    /// once, established ones stay with the old one (connection tracking).
    Nat,
}

/// Old DNS answers still cached by clients after a DNS swing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaleAnswer {
    pub target: usize,
    pub since_ms: u64,
    pub ttl_ms: u64,
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

/// A client's session in progress on an appliance.
#[derive(Clone, Debug)]
struct ClientSession {
    appliance: usize,
    started_ms: u64,
    started_local_ms: u64,
    duration_ms: u64,
    size_bytes: u64,
    content_seed: u64,
    /// The client reached this appliance through a stale DNS answer.
    stale_dns: bool,
}

/// A recording the appliance's recorder holds but the store has not taken yet: a session cut
/// off by a crash (imported when the appliance is back), or one whose import failed.
#[derive(Clone, Debug)]
struct PendingImport {
    appliance: usize,
    content_seed: u64,
    len: u64,
    started_local_ms: u64,
    ended_local_ms: u64,
    ended_normally: bool,
}

/// A configuration as key/value pairs (`None`: deleted), for comparisons.
type ConfigEntries = Vec<(String, Option<Vec<u8>>)>;

/// A configuration the primary served, as of its snapshot point (property 2).
#[derive(Clone, Debug)]
struct ServedConfig {
    version: ConfigVersion,
    entries: ConfigEntries,
}

/// The whole simulated world.
pub struct World {
    pub now_ms: u64,
    pub rng: SimRng,
    pub appliances: Vec<Appliance>,
    /// Equal pages shared by every appliance's simulated disk (a pair holds the same
    /// recordings twice); invisible to the files, it only saves memory and copies.
    pub page_pool: Arc<PagePool>,
    pub network: Network,
    /// The appliance the site's address points at: where new client sessions land.
    pub site_target: usize,
    /// After a DNS swing, the old answer clients may still hold.
    pub dns_stale: Option<StaleAnswer>,
    /// Simulated time during which some client of the site would have been refused: the site
    /// address (or a stale DNS answer still cached) led to an appliance that was down or frozen.
    pub site_downtime_ms: u64,
    /// The seed the world was made from (a scenario may build a second world from it).
    pub seed: u64,
    /// Sessions that only an appliance whose hardware was discarded held: gone with its disk,
    /// by the operator's doing, so no longer expected anywhere (property 1).
    pub lost_with_hardware: BTreeMap<SessionId, [u8; 32]>,
    /// Install journals left on stopped appliances (`D/install-journal.json`).
    pub install_journals: BTreeMap<usize, InstallJournal>,
    /// What each recovery of an interrupted install decided.
    pub install_recoveries: Vec<RecoveryDecision>,
    /// Simulated time spent in other worlds a scenario ran beside this one ([`World::absorb`]).
    pub simulated_elsewhere_ms: u64,
    links: BTreeMap<LinkId, SimLink>,
    events: BTreeMap<(u64, u64), WorldEvent>,
    /// Events for each paused appliance, in the order they became due.
    deferred: Vec<Vec<WorldEvent>>,
    event_sequence: u64,
    next_link: LinkId,
    next_command: CommandId,
    /// The world's id of each command a node is running, by (appliance, incarnation, the
    /// node's own id).
    node_commands: BTreeMap<(usize, u64, CommandId), CommandId>,
    pub commands: BTreeMap<CommandId, CommandRecord>,
    /// Which physical appliances accepted a configuration write in each epoch (property 3).
    pub writers_by_epoch: BTreeMap<Epoch, BTreeSet<Hardware>>,
    /// Every accepted configuration write by its stamp `(epoch, sequence)`: who wrote what
    /// (property 7: no two writes ever share a stamp).
    pub config_stamps: BTreeMap<(Epoch, u64), StampedWrite>,
    /// Every session completed anywhere, with its content hash (property 1).
    pub completed_sessions: BTreeMap<SessionId, [u8; 32]>,
    pub completed_sizes: BTreeMap<SessionId, u64>,
    client_sessions: BTreeMap<u64, ClientSession>,
    next_client_session: u64,
    pending_imports: Vec<PendingImport>,
    /// Client sessions refused because the site address pointed at an appliance that was down.
    pub sessions_refused: u64,
    /// Sessions cut off by a crash and kept with what was recorded.
    pub sessions_cut_off: u64,
    /// Recording files the world damaged at rest: a corrupt file there is the disk's doing.
    pub damaged_files: BTreeSet<(usize, String)>,
    /// Recording bytes sent over the simulated network, per appliance.
    pub chunk_bytes_sent: Vec<u64>,
    /// Every byte of every frame sent, per appliance (recordings and metadata).
    pub frame_bytes_sent: Vec<u64>,
    /// Chunks the faulty-sender fault corrupted.
    pub chunks_corrupted: u64,
    served_config: BTreeMap<usize, ServedConfig>,
    last_sync_seen: Vec<Option<SyncRecord>>,
    /// Counts sync completions anywhere; cheap to poll for "something may have converged".
    pub sync_completions: u64,
    /// Properties found broken on the way (with the step), reported at the end.
    pub violations: Vec<Violation>,
    /// Rare events that happened in this run.
    pub coverage: Coverage,
    /// The deployed clients and each appliance's client-update gate.
    pub clients: ClientPopulation,
    /// The lowest epoch each appliance may be in during its current process lifetime: epochs
    /// only move forward, except by an operator's demote or a restore from a settings backup.
    epoch_floor: Vec<Option<Epoch>>,
    /// Torn writes each disk had when its appliance last started.
    torn_seen: Vec<u64>,
    /// Each appliance's disk counters when last looked at, to notice the storage faults that
    /// fired since (for the coverage the sweep requires).
    disk_stats_seen: Vec<dyad_store::disk::sim::SimDiskStats>,
    /// True time, shared with the stores' clocks (they stamp what they find with it).
    time_cell: Arc<std::sync::atomic::AtomicU64>,
    /// Recordings a read found damaged (appliance, session), not yet seen intact again.
    damage_found: BTreeSet<(usize, SessionId)>,
    /// Sessions a corrupt chunk was sent for (receiver, session), not yet seen intact there.
    corrupt_sent: BTreeSet<(usize, SessionId)>,
    trace: blake3::Hasher,
    pub steps: u64,
    pub step_budget: u64,
}

impl World {
    pub fn new(seed: u64) -> World {
        World {
            now_ms: WORLD_START_MS,
            rng: SimRng::new(seed),
            appliances: Vec::new(),
            page_pool: PagePool::new(),
            network: Network::default(),
            site_target: 0,
            dns_stale: None,
            site_downtime_ms: 0,
            seed,
            lost_with_hardware: BTreeMap::new(),
            install_journals: BTreeMap::new(),
            install_recoveries: Vec::new(),
            simulated_elsewhere_ms: 0,
            links: BTreeMap::new(),
            events: BTreeMap::new(),
            deferred: Vec::new(),
            event_sequence: 0,
            next_link: 1,
            next_command: 1,
            node_commands: BTreeMap::new(),
            commands: BTreeMap::new(),
            writers_by_epoch: BTreeMap::new(),
            config_stamps: BTreeMap::new(),
            completed_sessions: BTreeMap::new(),
            completed_sizes: BTreeMap::new(),
            client_sessions: BTreeMap::new(),
            next_client_session: 1,
            pending_imports: Vec::new(),
            sessions_refused: 0,
            sessions_cut_off: 0,
            damaged_files: BTreeSet::new(),
            chunk_bytes_sent: Vec::new(),
            frame_bytes_sent: Vec::new(),
            chunks_corrupted: 0,
            served_config: BTreeMap::new(),
            last_sync_seen: Vec::new(),
            sync_completions: 0,
            violations: Vec::new(),
            coverage: Coverage::default(),
            clients: ClientPopulation::default(),
            epoch_floor: Vec::new(),
            torn_seen: Vec::new(),
            disk_stats_seen: Vec::new(),
            time_cell: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            damage_found: BTreeSet::new(),
            corrupt_sent: BTreeSet::new(),
            trace: blake3::Hasher::new(),
            steps: 0,
            step_budget: 2_000_000,
        }
    }

    /// Adds an appliance (initialised, standalone, up) and returns its index.
    pub fn add_appliance(&mut self, name: &str, psk: [u8; 32], software: SoftwareVersion) -> usize {
        self.add_appliance_with_format(name, psk, software, FORMAT_VERSION)
    }

    /// [`World::add_appliance`] with a store created in `store_format` (an older release's).
    pub fn add_appliance_with_format(
        &mut self,
        name: &str,
        psk: [u8; 32],
        software: SoftwareVersion,
        store_format: u64,
    ) -> usize {
        let mut node_bytes = [0u8; 16];
        self.rng.fill(&mut node_bytes);
        let mut fingerprint = [0u8; 32];
        self.rng.fill(&mut fingerprint);
        let disk = SimDisk::sharing_pages(self.rng.next_u64(), Arc::clone(&self.page_pool));
        let index = self.push_appliance(Appliance {
            name: name.to_string(),
            node_id: NodeId(node_bytes),
            predecessors: Vec::new(),
            address: format!("{name}:7400"),
            disk,
            node: None,
            psk,
            software,
            certificate_fingerprint: fingerprint,
            clock: SimClock {
                anchor_ms: self.now_ms,
                ..SimClock::default()
            },
            paused_since_ms: None,
            site_hostname: Some("site.example".into()),
            config: ReplicaConfig::default(),
            incarnation: 0,
            store_format_new: store_format,
            hardware: 0,
        });
        self.start(index);
        index
    }

    /// Adds `appliance` in a new slot (down) with the world's per-slot records; returns it.
    pub(crate) fn push_appliance(&mut self, appliance: Appliance) -> usize {
        self.appliances.push(appliance);
        self.chunk_bytes_sent.push(0);
        self.frame_bytes_sent.push(0);
        self.deferred.push(Vec::new());
        self.last_sync_seen.push(None);
        self.epoch_floor.push(None);
        self.torn_seen.push(0);
        self.disk_stats_seen.push(Default::default());
        self.appliances.len() - 1
    }

    /// Folds a second world a scenario ran (the same seed's workload under another flow) into
    /// this one: its whole trace and final stores enter this trace hash (property 6 covers
    /// both), its steps and simulated time count here.
    pub fn absorb(&mut self, other: &World) {
        self.trace.update(&other.final_hash());
        self.steps += other.steps;
        self.simulated_elsewhere_ms += other.now_ms - WORLD_START_MS + other.simulated_elsewhere_ms;
    }

    /// What appliance `index`'s wall clock reads now.
    pub fn local_now(&self, index: usize) -> u64 {
        self.appliances[index].clock.local(self.now_ms)
    }

    pub(crate) fn trace_event(&mut self, what: &str, details: &[u64]) {
        self.trace(what, details);
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

    /// The trace hash extended with the final state of every store (catalog with content
    /// roots, configuration, role and epoch): property 6 compares this across two runs.
    pub fn final_hash(&self) -> [u8; 32] {
        let mut hasher = self.trace.clone();
        for appliance in &self.appliances {
            let Some(replica) = appliance.replica() else {
                hasher.update(b"down");
                continue;
            };
            let store = replica.store();
            if let Ok(list) = store.catalog_list() {
                for meta in list {
                    hasher.update(&meta.id.origin.0);
                    hasher.update(&meta.id.sequence.to_le_bytes());
                    hasher.update(&meta.root);
                }
            }
            if let Ok((version, entries)) = ReplicaStore::config_snapshot(store) {
                hasher.update(format!("{version:?}").as_bytes());
                for entry in entries {
                    hasher.update(entry.key.as_bytes());
                    hasher.update(entry.value.as_deref().unwrap_or(b"-"));
                }
            }
            hasher
                .update(format!("{:?}{}", replica.state().role, replica.state().epoch).as_bytes());
        }
        *hasher.finalize().as_bytes()
    }

    fn record_violation(&mut self, property: &'static str, details: String) {
        let details = format!("{details} (at step {}, t={} ms)", self.steps, self.now_ms);
        self.violations.push(Violation { property, details });
    }

    // ----- appliances -----

    /// Starts (or restarts) appliance `index` on its disk as it is, then hands the store the
    /// recordings its recorder kept while it was down (sessions cut off by the crash).
    pub fn start(&mut self, index: usize) {
        if self.appliances[index].node.is_some() {
            return;
        }
        // `dyad serve` first finishes or rolls back an install a crash interrupted.
        self.recover_install(index);
        let now = self.local_now(index);
        let mut power_losses = 0;
        let replica = loop {
            let appliance = &self.appliances[index];
            let disk = appliance.disk.clone();
            // Power lost inside recovery (opening the store, or the replica's first reads and
            // writes): the next start recovers from what is durable.
            let mut lost_power = |world: &mut World, what: String| {
                if disk.is_halted() && power_losses < 3 {
                    power_losses += 1;
                    disk.power_on();
                    world.coverage.note(CoverageEvent::CrashInsideRecovery);
                    world.trace("power-lost-in-recovery", &[index as u64]);
                } else {
                    panic!(
                        "appliance {} could not start: {what}",
                        world.appliances[index].name
                    );
                }
            };
            let store = match Store::open_or_create_with_format(
                appliance.disk.clone(),
                appliance.store_format_new,
            ) {
                Ok(store) => store,
                Err(error) => {
                    lost_power(self, format!("its store did not open: {error}"));
                    continue;
                }
            };
            store.set_clock(self.store_clock(index));
            let node = LocalNode {
                node_id: appliance.node_id,
                predecessors: appliance.predecessors.clone(),
                name: appliance.name.clone(),
                software: appliance.software,
                site_hostname: appliance.site_hostname.clone(),
            };
            match Replica::open(store, node, appliance.config.clone(), now) {
                Ok(replica) => break replica,
                Err(fault) => lost_power(self, format!("its replica did not open: {fault}")),
            }
        };
        let appliance = &mut self.appliances[index];
        let torn = appliance.disk.torn_files();
        let epoch = replica.state().epoch;
        let client_app_version = appliance.software.app;
        // The steady clock is the world's true time: the appliance's clock steps never move it.
        let time_cell = Arc::clone(&self.time_cell);
        let steady: dyad_core::node::SteadyClock =
            Arc::new(move || time_cell.load(std::sync::atomic::Ordering::Relaxed));
        appliance.node = Some(Node::new(replica, client_app_version, now, steady));
        // A crash tore a write since the last start, and the store opened on it (the
        // database checks its integrity on open; recovery below must find nothing listed
        // unverified).
        let torn_now = torn.len() as u64 > self.torn_seen[index];
        self.torn_seen[index] = torn.len() as u64;
        self.epoch_floor[index] = Some(epoch);
        self.last_sync_seen[index] = self.appliances[index]
            .replica()
            .and_then(|replica| replica.state().last_sync.clone());
        self.trace("start", &[index as u64]);
        // Recovery after whatever happened must leave nothing unverified listed (property 4,
        // found on the way: the world records it, the checkers report it at the end).
        match self.unverified_listed(index, false) {
            Some(violation) => self.record_violation(violation.property, violation.details),
            None if torn_now => self
                .coverage
                .note(CoverageEvent::TornWriteDetectedOnRestart),
            None => {}
        }
        self.import_pending(index);
        self.clients_on_start(index);
    }

    /// Opens the store of stopped appliance `index` as an install's own steps do (not as a
    /// node): for the install (`crate::upgrade`) and for the recovery of an interrupted one.
    pub(crate) fn open_stopped_store(&self, index: usize) -> Result<Store, Violation> {
        let appliance = &self.appliances[index];
        let store =
            Store::open_or_create_with_format(appliance.disk.clone(), appliance.store_format_new)
                .map_err(|error| {
                Violation::new(
                    "install_atomic",
                    format!("{}'s store does not open: {error}", appliance.name),
                )
            })?;
        store.set_clock(self.store_clock(index));
        Ok(store)
    }

    /// What the next start of appliance `index` does first when an install journal is left:
    /// complete or roll back the interrupted install, by the engine's rule. Afterwards the
    /// appliance runs the old software on the old format or the new on the new, never a mix.
    fn recover_install(&mut self, index: usize) {
        let Some(journal) = self.install_journals.remove(&index) else {
            return;
        };
        let store = match self.open_stopped_store(index) {
            Ok(store) => store,
            Err(found) => return self.violations.push(found),
        };
        let Ok(format_now) = store.format_version() else {
            return self.violations.push(Violation::new(
                "install_atomic",
                "the store's format cannot be read after a crashed install".into(),
            ));
        };
        let installed = self.appliances[index].software;
        let decision = dyad_core::install::recovery_decision(
            journal.from_store_format,
            journal.to_store_format,
            format_now,
            installed,
            journal.to,
        );
        if decision == RecoveryDecision::Complete {
            if let Err(error) = store.migrate_if_older(journal.to_store_format) {
                return self.violations.push(Violation::new(
                    "install_atomic",
                    format!("completing an interrupted migration failed: {error}"),
                ));
            }
            self.appliances[index].software = journal.to;
        }
        let format = store.format_version().unwrap_or(0);
        let software = self.appliances[index].software;
        let consistent = (software == journal.to && format == journal.to_store_format)
            || (software == journal.from && format == journal.from_store_format);
        if !consistent {
            let name = self.appliances[index].name.clone();
            self.violations.push(Violation::new(
                "install_atomic",
                format!(
                    "after recovering an interrupted install {name} runs {software} on store format {format} (journal: {:?})",
                    journal
                ),
            ));
        }
        self.coverage
            .note(if decision == RecoveryDecision::Complete {
                CoverageEvent::InstallCompletedByRecovery
            } else {
                CoverageEvent::InstallRolledBack
            });
        self.install_recoveries.push(decision);
        self.trace_event(
            "install-recovered",
            &[
                index as u64,
                u64::from(decision == RecoveryDecision::Complete),
            ],
        );
    }

    /// Ends appliance `index`'s process: its connections drop and its client sessions in
    /// progress are cut off with what was recorded.
    fn stop_process(&mut self, index: usize, why: &str) -> bool {
        if self.appliances[index].node.take().is_none() {
            return false;
        }
        self.appliances[index].incarnation += 1;
        self.appliances[index].paused_since_ms = None;
        self.deferred[index].clear();
        let links: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, link)| !link.reset && link.ends.contains(&index))
            .map(|(id, _)| *id)
            .collect();
        for id in links {
            self.reset_link(id, why);
        }
        // The process is gone: nobody on its side is told, and a node started later (whose
        // connection ids start again from 1) must never hear of these links.
        for link in self.links.values_mut() {
            for side in 0..2 {
                if link.ends[side] == index {
                    link.conns[side] = None;
                    link.notified[side] = true;
                }
            }
        }
        self.links.retain(|_, link| link.notified != [true, true]);
        self.node_commands
            .retain(|(appliance, _, _), _| *appliance != index);
        self.cut_off_sessions(index);
        true
    }

    /// Cuts off the client sessions in progress on appliance `index` (their connections
    /// broke): each is kept with what was recorded, imported now if the appliance is up.
    fn cut_off_sessions(&mut self, index: usize) {
        let cut: Vec<u64> = self
            .client_sessions
            .iter()
            .filter(|(_, session)| session.appliance == index)
            .map(|(id, _)| *id)
            .collect();
        let ended_local_ms = self.local_now(index);
        for id in cut {
            let Some(session) = self.client_sessions.remove(&id) else {
                continue;
            };
            let elapsed = self.now_ms.saturating_sub(session.started_ms);
            let recorded = (u128::from(session.size_bytes) * u128::from(elapsed)
                / u128::from(session.duration_ms.max(1))) as u64;
            self.sessions_cut_off += 1;
            self.trace("cut-off", &[index as u64, id, recorded]);
            self.pending_imports.push(PendingImport {
                appliance: index,
                content_seed: session.content_seed,
                len: recorded.min(session.size_bytes),
                started_local_ms: session.started_local_ms,
                ended_local_ms,
                ended_normally: false,
            });
        }
        if self.appliances[index].is_up() {
            self.import_pending(index);
        }
    }

    /// Power loss: the process dies and unsynced writes are lost (optionally torn).
    pub fn crash(&mut self, index: usize, tear: bool) {
        if self.chunks_moving(index) {
            self.coverage.note(CoverageEvent::CrashDuringChunkTransfer);
        }
        if !self.stop_process(index, "peer crashed") {
            return;
        }
        self.appliances[index].disk.crash(tear);
        self.trace("crash", &[index as u64, u64::from(tear)]);
    }

    /// Whether a sync is in its transfer phase on appliance `index`, or on a peer pulling from
    /// it over an open link.
    fn chunks_moving(&self, index: usize) -> bool {
        let transferring = |at: usize| {
            self.status(at).is_some_and(|status| {
                status
                    .running
                    .is_some_and(|running| running.progress.phase == "transfer")
            })
        };
        transferring(index)
            || self
                .links
                .values()
                .filter(|link| !link.reset && link.ends.contains(&index))
                .any(|link| transferring(link.ends[0] + link.ends[1] - index))
    }

    /// The operator stops the service (no power loss): sessions in progress are cut off.
    pub fn stop(&mut self, index: usize) {
        if self.stop_process(index, "the peer's service stopped") {
            self.trace("stop", &[index as u64]);
        }
    }

    /// The operator restarts the service (no power loss: the disk keeps what was written).
    pub fn restart(&mut self, index: usize) {
        self.stop_process(index, "the peer's service restarted");
        self.trace("restart", &[index as u64]);
        self.start(index);
    }

    /// Freezes appliance `index`: it handles nothing until [`World::resume`]. Its peers hear
    /// nothing from it, and their drivers drop the connection after the idle timeout.
    pub fn pause(&mut self, index: usize) {
        if !self.appliances[index].is_up() || self.appliances[index].is_paused() {
            return;
        }
        self.appliances[index].paused_since_ms = Some(self.now_ms);
        self.trace("pause", &[index as u64]);
        // Its peers' nodes hear nothing more from it and close the links after their idle
        // timeout.
    }

    /// Lets a paused appliance run again; what waited for it arrives in order.
    pub fn resume(&mut self, index: usize) {
        if self.appliances[index].paused_since_ms.take().is_none() {
            return;
        }
        self.trace("resume", &[index as u64]);
        let now = self.local_now(index);
        if let Some(replica) = self.appliances[index].node.as_mut() {
            replica.handle_timeout(now);
            self.drain(index);
        }
        let waiting = std::mem::take(&mut self.deferred[index]);
        let now = self.now_ms;
        for event in waiting {
            self.schedule(now, event);
        }
    }

    /// Moves appliance `index`'s clock by `delta_ms` at once (an operator or NTP step).
    pub fn jump_clock(&mut self, index: usize, delta_ms: i64) {
        self.appliances[index].clock.offset_ms += delta_ms;
        self.trace("clock-jump", &[index as u64, delta_ms as u64]);
        // The driver notices a clock stepped backwards on its next tick and tells the replica
        // (a forward step needs nothing: timers just fall due).
        if delta_ms < 0 && !self.appliances[index].is_paused() {
            let now = self.local_now(index);
            if let Some(replica) = self.appliances[index].node.as_mut() {
                replica.handle_timeout(now);
                self.drain(index);
            }
        }
    }

    /// Sets appliance `index`'s clock drift from now on.
    pub fn set_clock_drift(&mut self, index: usize, drift_ppm: i64) {
        let now = self.now_ms;
        let clock = &mut self.appliances[index].clock;
        let local = clock.local(now);
        clock.offset_ms = local as i64 - now as i64;
        clock.anchor_ms = now;
        clock.drift_ppm = drift_ppm.clamp(-DRIFT_PPM_MAX, DRIFT_PPM_MAX);
        self.trace("clock-drift", &[index as u64, drift_ppm as u64]);
    }

    pub fn replica(&self, index: usize) -> Option<&Replica<Store>> {
        self.appliances[index].replica()
    }

    /// Whether appliance `index` stopped on a terminal storage failure.
    pub fn storage_failed(&self, index: usize) -> bool {
        self.status(index)
            .is_some_and(|status| status.storage_failure.is_some())
    }

    // ----- site and operators -----

    /// A client completes a session on appliance `index` at once, with a recording of
    /// `size_bytes` synthetic bytes. Returns its id, or `None` if the appliance is down.
    pub fn complete_session(&mut self, index: usize, size_bytes: u64) -> Option<SessionId> {
        if !self.appliances[index].is_up() {
            return None;
        }
        let now = self.local_now(index);
        let content_seed = self.rng.next_u64();
        self.import_session(PendingImport {
            appliance: index,
            content_seed,
            len: size_bytes,
            started_local_ms: now.saturating_sub(60_000),
            ended_local_ms: now,
            ended_normally: true,
        })
    }

    /// A client starts a session on whichever appliance the site address points at; it ends
    /// after `duration_ms` with `size_bytes` recorded. Returns false if nobody answered.
    pub fn start_client_session(&mut self, size_bytes: u64, duration_ms: u64) -> bool {
        let target = self.route_client();
        let stale = target != self.site_target;
        let started = self.start_client_session_on(target, size_bytes, duration_ms);
        if started && stale {
            if let Some(session) = self.client_sessions.values_mut().next_back() {
                session.stale_dns = true;
            }
        }
        started
    }

    /// Where a client arriving now reaches the site: the current target, or, within a DNS
    /// swing's TTL, the old one for the clients still holding the old answer (those that
    /// resolved late in the last TTL: the share falls linearly to zero as the TTL runs out).
    pub fn route_client(&mut self) -> usize {
        if let Some(stale) = self.dns_stale {
            let end = stale.since_ms + stale.ttl_ms;
            if self.now_ms >= end {
                self.dns_stale = None;
            } else if self.rng.chance(end - self.now_ms, stale.ttl_ms.max(1)) {
                return stale.target;
            }
        }
        self.site_target
    }

    /// A client arrives at the site address at true time `at_ms` and runs a session there.
    pub fn schedule_client(&mut self, at_ms: u64, size_bytes: u64, duration_ms: u64) {
        self.schedule(
            at_ms,
            WorldEvent::ClientArrival {
                size_bytes,
                duration_ms,
            },
        );
    }

    /// Moves the site address to appliance `to` by `swing`.
    pub fn swing_site(&mut self, to: usize, swing: Swing) {
        let from = self.site_target;
        self.trace("swing", &[from as u64, to as u64]);
        if from == to {
            return;
        }
        self.site_target = to;
        match swing {
            Swing::SharedIp => {
                self.dns_stale = None;
                self.cut_off_sessions(from);
            }
            Swing::Dns { ttl_ms } => {
                self.dns_stale = Some(StaleAnswer {
                    target: from,
                    since_ms: self.now_ms,
                    ttl_ms,
                });
            }
            Swing::Nat => self.dns_stale = None,
        }
    }

    /// Whether appliance `index` takes new client sessions now.
    pub fn accepts_sessions(&self, index: usize) -> bool {
        self.appliances
            .get(index)
            .is_some_and(|appliance| appliance.is_up() && !appliance.is_paused())
    }

    /// Moves true time to `at_ms`, counting the site's downtime on the way (nothing changes
    /// between two instants the world handles, except a DNS TTL running out).
    fn advance_to(&mut self, at_ms: u64) {
        if at_ms <= self.now_ms {
            return;
        }
        let from = self.now_ms;
        if !self.accepts_sessions(self.site_target) {
            self.site_downtime_ms += at_ms - from;
        } else if let Some(stale) = self.dns_stale {
            let end = (stale.since_ms + stale.ttl_ms).min(at_ms);
            if end > from && !self.accepts_sessions(stale.target) {
                self.site_downtime_ms += end - from;
            }
        }
        self.now_ms = at_ms;
        self.time_cell
            .store(at_ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// A client that addresses appliance `index` directly (not through the site address).
    pub fn start_client_session_on(
        &mut self,
        index: usize,
        size_bytes: u64,
        duration_ms: u64,
    ) -> bool {
        let appliance = &self.appliances[index];
        if !appliance.is_up() || appliance.is_paused() {
            self.sessions_refused += 1;
            self.trace("session-refused", &[index as u64]);
            return false;
        }
        let id = self.next_client_session;
        self.next_client_session += 1;
        let content_seed = self.rng.next_u64();
        let session = ClientSession {
            appliance: index,
            started_ms: self.now_ms,
            started_local_ms: self.local_now(index),
            duration_ms: duration_ms.max(1),
            size_bytes,
            content_seed,
            stale_dns: false,
        };
        let at = self.now_ms + session.duration_ms;
        self.client_sessions.insert(id, session);
        self.schedule(at, WorldEvent::SessionEnd { session: id });
        self.trace("session-start", &[index as u64, id, size_bytes]);
        true
    }

    /// Client sessions still running.
    pub fn sessions_in_progress(&self) -> usize {
        self.client_sessions.len()
    }

    /// Recordings waiting to be imported (cut off by a crash, or whose import failed).
    pub fn pending_imports(&self) -> usize {
        self.pending_imports.len()
    }

    fn import_session(&mut self, pending: PendingImport) -> Option<SessionId> {
        let index = pending.appliance;
        let mut content_rng = SimRng::new(pending.content_seed);
        let appliance = &mut self.appliances[index];
        let Some(replica) = appliance.node.as_mut() else {
            self.pending_imports.push(pending);
            return None;
        };
        let source = SyntheticReader {
            rng: &mut content_rng,
            remaining: pending.len,
        };
        let info = ImportInfo {
            origin: appliance.node_id,
            started_unix_ms: pending.started_local_ms,
            ended_unix_ms: pending.ended_local_ms,
            ended_normally: pending.ended_normally,
            expected_len: Some(pending.len),
            expected_root: None,
        };
        match replica
            .replica_mut()
            .store_mut()
            .import_recording(source, info)
        {
            Ok(meta) => {
                // A session id is never reused: the same id with other content as any session
                // that exists somewhere is a violation. (A session that went with discarded
                // hardware before reaching anyone exists nowhere, so nobody could know its id.)
                let earlier = self.completed_sessions.get(&meta.id).copied();
                if earlier.is_some_and(|root| root != meta.root) {
                    let name = self.appliances[index].name.clone();
                    self.record_violation(
                        "no_session_id_reused",
                        format!(
                            "{name} completed session {}#{} but an earlier session with that id has other content",
                            meta.id.origin, meta.id.sequence
                        ),
                    );
                }
                self.completed_sessions.insert(meta.id, meta.root);
                self.completed_sizes.insert(meta.id, meta.size_bytes);
                self.trace(
                    "session",
                    &[
                        index as u64,
                        meta.id.sequence,
                        pending.len,
                        u64::from(pending.ended_normally),
                    ],
                );
                Some(meta.id)
            }
            Err(_) => {
                // The recorder still holds the file; the import is retried later.
                self.trace("session-import-failed", &[index as u64]);
                self.pending_imports.push(pending);
                None
            }
        }
    }

    /// Drops the recordings waiting on appliance `index` (its hardware was thrown away).
    pub(crate) fn discard_pending_imports(&mut self, index: usize) {
        self.pending_imports
            .retain(|pending| pending.appliance != index);
    }

    /// Retries the imports waiting on appliance `index`.
    pub fn import_pending(&mut self, index: usize) {
        if !self.appliances[index].is_up() {
            return;
        }
        let (mine, others): (Vec<PendingImport>, Vec<PendingImport>) =
            std::mem::take(&mut self.pending_imports)
                .into_iter()
                .partition(|pending| pending.appliance == index);
        self.pending_imports = others;
        for pending in mine {
            self.import_session(pending);
        }
    }

    /// The physical appliance in slot `index` now.
    pub fn hardware(&self, index: usize) -> Hardware {
        Hardware {
            slot: index,
            generation: self.appliances[index].hardware,
        }
    }

    /// A configuration write on appliance `index`; records which physical appliance wrote in
    /// which epoch, and under which stamp.
    pub fn write_config(&mut self, index: usize, key: &str, value: Option<&[u8]>) -> bool {
        if self.appliances[index].is_paused() {
            return false;
        }
        let Some(replica) = self.appliances[index].node.as_mut() else {
            return false;
        };
        let epoch = replica.replica().state().epoch;
        let now = self.appliances[index].clock.local(self.now_ms);
        let Some(replica) = self.appliances[index].node.as_mut() else {
            return false;
        };
        let written = replica.write_config(now, key, value).ok();
        let accepted = written.is_some();
        let hardware = self.hardware(index);
        if let Some(version) = written {
            self.writers_by_epoch
                .entry(epoch)
                .or_default()
                .insert(hardware);
            let write = (hardware, key.to_string(), value.map(<[u8]>::to_vec));
            match self.config_stamps.get(&(version.epoch, version.sequence)) {
                // A delete of an absent key changes nothing and answers the current version.
                Some(earlier) if *earlier != write && value.is_some() => {
                    let details = format!(
                        "{} wrote {key:?} stamped {}#{}, a stamp {:?} already gave to {:?}",
                        self.appliances[index].name,
                        version.epoch,
                        version.sequence,
                        earlier.0,
                        earlier.1
                    );
                    self.record_violation("no_config_stamp_reused", details);
                }
                Some(_) => {}
                None => {
                    self.config_stamps
                        .insert((version.epoch, version.sequence), write);
                }
            }
        }
        self.trace("config-write", &[index as u64, u64::from(accepted)]);
        self.drain(index);
        accepted
    }

    /// Issues an operator command on appliance `index` (it waits while the appliance is paused).
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
        let now = self.now_ms;
        self.schedule(
            now,
            WorldEvent::Command {
                appliance: index,
                id,
                command,
            },
        );
        id
    }

    pub fn outcome(&self, id: CommandId) -> Option<&Result<String, CommandError>> {
        self.commands
            .get(&id)
            .and_then(|record| record.outcome.as_ref())
    }

    /// Flips `count` random bits of one random complete recording file on appliance `index`,
    /// as a failing medium would. Returns false if it holds none.
    pub fn flip_recording_bits(&mut self, index: usize, count: u64) -> bool {
        self.flip_bits_where(index, count, |_, _| true)
    }

    /// [`World::flip_recording_bits`] on a recording that another appliance holds intact
    /// (listed, and its file undamaged): a medium failing where another copy exists. Damage to
    /// the only copy of a session loses it by the hardware's doing, which no engine can undo.
    pub fn flip_replicated_recording_bits(&mut self, index: usize, count: u64) -> bool {
        let intact_elsewhere = self.intact_elsewhere(index);
        self.flip_bits_where(index, count, |_, name| intact_elsewhere.contains(name))
    }

    /// A recording file of appliance `index` that another appliance holds intact, drawn.
    fn replicated_recording_file(&mut self, index: usize) -> Option<String> {
        let intact_elsewhere = self.intact_elsewhere(index);
        let names: Vec<String> = self.appliances[index]
            .disk
            .list()
            .ok()?
            .into_iter()
            .filter(|name| name.starts_with("rec-") && intact_elsewhere.contains(name))
            .collect();
        if names.is_empty() {
            return None;
        }
        let pick = self.rng.below(names.len() as u64) as usize;
        Some(names[pick].clone())
    }

    /// The recording files other appliances list and the world never damaged there.
    fn intact_elsewhere(&self, index: usize) -> BTreeSet<String> {
        let mut intact_elsewhere = BTreeSet::new();
        for other in (0..self.appliances.len()).filter(|other| *other != index) {
            let listed = self
                .replica(other)
                .and_then(|replica| replica.store().catalog_list().ok())
                .unwrap_or_default();
            for meta in listed {
                let name = recording_file_name(&meta.id);
                if !self.damaged_files.contains(&(other, name.clone())) {
                    intact_elsewhere.insert(name);
                }
            }
        }
        intact_elsewhere
    }

    fn flip_bits_where(
        &mut self,
        index: usize,
        count: u64,
        eligible: impl Fn(usize, &str) -> bool,
    ) -> bool {
        let disk = Arc::clone(&self.appliances[index].disk);
        let Ok(names) = disk.list() else { return false };
        let candidates: Vec<(String, u64)> = names
            .into_iter()
            .filter(|name| name.starts_with("rec-") && eligible(index, name))
            .filter_map(|name| {
                let len = disk.file_len(&name).unwrap_or(0);
                (len > 0).then_some((name, len))
            })
            .collect();
        if candidates.is_empty() {
            return false;
        }
        let pick = self.rng.below(candidates.len() as u64) as usize;
        let (name, len) = candidates[pick].clone();
        for _ in 0..count {
            let bit = self.rng.below(len * 8);
            if disk.flip_bit(&name, bit).is_ok() {
                self.trace("bit-flip", &[index as u64, bit]);
            }
        }
        self.damaged_files.insert((index, name));
        true
    }

    /// A client plays session `id` back from appliance `index`: every chunk is read through
    /// the store (which verifies it). Returns false if a read was refused.
    pub fn play_back(&mut self, index: usize, id: SessionId) -> bool {
        if self.appliances[index].is_paused() {
            return false;
        }
        let Some(replica) = self.replica(index) else {
            return false;
        };
        let store = replica.store();
        let Ok(Some(header)) = ReplicaStore::session_header(store, id) else {
            return false;
        };
        let mut served = true;
        for chunk in 0..header.chunk_chaining_values.len() as u32 {
            if ReplicaStore::read_chunk(store, id, chunk).is_err() {
                served = false;
                break;
            }
        }
        self.trace("playback", &[index as u64, id.sequence, u64::from(served)]);
        if !served {
            self.damage_found.insert((index, id));
        }
        served
    }

    /// Clients play back each session appliance `index` lists with a chance of one in
    /// `one_in`; returns how many were refused (a read that found damage withdraws it).
    pub fn play_back_some(&mut self, index: usize, one_in: u64) -> u64 {
        let ids: Vec<SessionId> = self
            .replica(index)
            .and_then(|replica| replica.store().catalog_list().ok())
            .unwrap_or_default()
            .into_iter()
            .map(|meta| meta.id)
            .collect();
        ids.into_iter()
            .filter(|id| self.rng.chance(1, one_in) && !self.play_back(index, *id))
            .count() as u64
    }

    /// Plays back every session appliance `index` lists; returns how many were refused.
    pub fn play_back_all(&mut self, index: usize) -> u64 {
        let ids: Vec<SessionId> = self
            .replica(index)
            .and_then(|replica| replica.store().catalog_list().ok())
            .map(|list| list.into_iter().map(|meta| meta.id).collect())
            .unwrap_or_default();
        ids.into_iter()
            .filter(|id| !self.play_back(index, *id))
            .count() as u64
    }

    // ----- the site's clients (`crate::clients` holds the population) -----

    /// Deploys clients running `app`: `active` and `passive` deployed ones and `integrations`.
    /// Passive clients get their first daily check-in, a boot and some console connections
    /// at random times of the next day.
    pub fn add_clients(&mut self, active: u64, passive: u64, integrations: u64, app: Version) {
        let kinds = (0..active)
            .map(|_| (ClientKind::Deployed, Habit::Active))
            .chain((0..passive).map(|_| (ClientKind::Deployed, Habit::Passive)))
            .chain((0..integrations).map(|_| (ClientKind::Integration, Habit::Passive)));
        for (kind, habit) in kinds {
            let client = self.clients.deploy(kind, habit, app);
            let first_daily = self.now_ms + self.rng.below(DAILY_MS);
            self.schedule(first_daily, WorldEvent::ClientCheckIn { client });
            if habit == Habit::Passive {
                for _ in 0..self.rng.between(1, 3) {
                    // A boot or a console connection.
                    let at = self.now_ms + self.rng.below(DAILY_MS);
                    self.schedule(at, WorldEvent::ClientCheckIn { client });
                }
            }
        }
    }

    /// An appliance process started: its gate is new; if it now runs another application
    /// version than at its last start (it was upgraded), active clients check in at once.
    fn clients_on_start(&mut self, index: usize) {
        let app = self.appliances[index].software.app;
        for client in self.clients.appliance_started(index, app) {
            let at = self.now_ms + self.rng.between(1_000, 60_000);
            self.schedule(at, WorldEvent::ClientCheckIn { client });
        }
    }

    /// Client `client` checks in at the site address.
    fn client_check_in(&mut self, client: usize) {
        let Some(record) = self.clients.clients.get(client) else {
            return;
        };
        if record.is_installing() {
            // Busy installing; it reports when done.
            return;
        }
        let target = self.route_client();
        // The driver hands the gate its process's steady clock, which the appliance's wall
        // clock steps do not move: true time serves (drift is too small to matter here).
        let steady_ms = self.now_ms;
        if !self.accepts_sessions(target) {
            let at = self.now_ms + UNREACHABLE_RETRY_MS;
            self.schedule(at, WorldEvent::ClientCheckIn { client });
            return;
        }
        let request = self.clients.clients[client].check_in();
        // The appliance's node answers, as `dyad serve` does: its gate, with the limit read
        // afresh from the site configuration (a value it refuses keeps the limit in force).
        let Some(node) = self.appliances[target].node.as_mut() else {
            return;
        };
        let (answer, _refused_limit) = node.client_check_in(steady_ms, &request);
        let limit = u64::from(node.clients().max_concurrent());
        self.trace("client-check-in", &[client as u64, target as u64]);
        match answer {
            Ok(CheckInAnswer::UpdateNow { target: version }) => {
                let gate = (target, self.appliances[target].incarnation);
                let installing = self.clients.grant(client, gate, version);
                if installing > limit {
                    self.violations.push(Violation::new(
                        "client_updates_within_limit",
                        format!(
                            "{} clients install an update granted by {} at once, above the limit of {limit} (t={} ms)",
                            installing, self.appliances[target].name, self.now_ms
                        ),
                    ));
                }
                let duration = self.rng.between(60_000, UPDATE_DURATION_MAX_MS);
                let at = self.now_ms + duration;
                self.schedule(at, WorldEvent::ClientUpdateDone { client });
            }
            Ok(CheckInAnswer::RetryLater { after_ms }) => {
                self.clients.retries_told += 1;
                self.coverage.note(CoverageEvent::ClientGateRefusedCheckIn);
                let at = self.now_ms + after_ms + self.rng.below(after_ms / 2 + 1);
                self.schedule(at, WorldEvent::ClientCheckIn { client });
            }
            Ok(CheckInAnswer::UpToDate) | Ok(CheckInAnswer::ManualReinstall { .. }) => {
                let at = self.now_ms + DAILY_MS;
                self.schedule(at, WorldEvent::ClientCheckIn { client });
            }
            Err(error) => panic!("the gate refused a well-formed check-in: {error}"),
        }
    }

    /// Client `client` finished its install (or died in it, one time in ten: it stays on its
    /// version and checks in at its next boot).
    fn client_update_done(&mut self, client: usize) {
        if client >= self.clients.clients.len() {
            return;
        }
        let died = self.rng.chance(1, 10);
        self.clients.install_ended(client, !died);
        let at = if died {
            self.now_ms + self.rng.between(30 * 60_000, 90 * 60_000)
        } else {
            self.now_ms
        };
        self.trace("client-updated", &[client as u64, u64::from(died)]);
        self.schedule(at, WorldEvent::ClientCheckIn { client });
    }

    // ----- the event loop -----

    pub(crate) fn schedule(&mut self, at_ms: u64, event: WorldEvent) {
        self.event_sequence += 1;
        self.events.insert((at_ms, self.event_sequence), event);
    }

    fn latency(&mut self) -> u64 {
        let (low, high) = (self.network.latency_min_ms, self.network.latency_max_ms);
        let mut latency = self.rng.between(low, high);
        if self.network.delay_spike_per_mille > 0
            && self.rng.chance(self.network.delay_spike_per_mille, 1000)
        {
            latency += self
                .rng
                .between(100, self.network.delay_spike_max_ms.max(100));
        }
        latency
    }

    /// Whether a new connection from `from` to `to` can complete its handshakes.
    fn reachable(&self, from: usize, to: usize) -> bool {
        self.appliances[to].is_up()
            && !self.appliances[to].is_paused()
            && !self.network.dropped(from, to)
            && !self.network.dropped(to, from)
    }

    /// When appliance `index`'s replica wants its next timeout, in true time.
    fn timeout_due(&self, index: usize) -> Option<u64> {
        let appliance = &self.appliances[index];
        if appliance.is_paused() {
            return None;
        }
        let node = appliance.node.as_ref()?;
        // The replica's timers run on the appliance's wall clock; the node's keep-alive and
        // idle deadlines on its steady clock, which is the world's true time.
        let wall = node
            .next_timeout()
            .map(|local| appliance.clock.true_time_of(local));
        let due = match (wall, node.next_steady_timeout()) {
            (Some(wall), Some(steady)) => wall.min(steady),
            (wall, steady) => wall.or(steady)?,
        };
        Some(due.max(self.now_ms))
    }

    /// The time of the next thing that will happen, if anything will.
    fn next_event_time(&self) -> Option<u64> {
        let mut next = self.events.keys().next().map(|(at, _)| *at);
        for index in 0..self.appliances.len() {
            if let Some(at) = self.timeout_due(index) {
                next = Some(next.map_or(at, |current| current.min(at)));
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
                    self.advance_to(until_ms);
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
                    self.advance_to(deadline);
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
        self.advance_to(at_ms);
        // Timeouts first, in appliance order, then at most one scheduled event.
        for index in 0..self.appliances.len() {
            if self.timeout_due(index).is_some_and(|at| at <= self.now_ms) {
                let now = self.local_now(index);
                self.trace("timeout", &[index as u64]);
                if let Some(replica) = self.appliances[index].node.as_mut() {
                    replica.handle_timeout(now);
                }
                self.drain(index);
            }
        }
        let key = self.events.keys().next().copied();
        if let Some(key) = key {
            if key.0 <= self.now_ms {
                if let Some(event) = self.events.remove(&key) {
                    match self.target_of(&event) {
                        Some(index) if self.appliances[index].is_paused() => {
                            self.deferred[index].push(event);
                        }
                        _ => self.dispatch(event),
                    }
                }
            }
        }
        self.notice_storage_faults();
        Ok(())
    }

    /// Appliance `index`'s clock as its stores' clock (the world's time as that appliance's
    /// clock reads it): every store the world opens is given it, as the driver gives the wall
    /// clock.
    pub(crate) fn store_clock(&self, index: usize) -> dyad_store::StoreClock {
        let clock = self.appliances[index].clock;
        let time_cell = Arc::clone(&self.time_cell);
        Arc::new(move || clock.local(time_cell.load(std::sync::atomic::Ordering::Relaxed)))
    }

    /// Restarts every appliance whose disk lost power inside an operation (its process is
    /// gone), and notes the storage faults that fired since the last look.
    fn notice_storage_faults(&mut self) {
        for index in 0..self.appliances.len() {
            let disk = Arc::clone(&self.appliances[index].disk);
            if disk.is_halted() {
                self.stop_process(index, "peer lost power");
                disk.power_on();
                self.trace("power-lost-inside-an-operation", &[index as u64]);
                self.start(index);
            }
            let stats = disk.stats();
            let seen = std::mem::replace(&mut self.disk_stats_seen[index], stats);
            if stats.crashes_inside_operations > seen.crashes_inside_operations {
                self.coverage.note(CoverageEvent::CrashInsideStoreOperation);
            }
            let fired = stats.failed_syncs > seen.failed_syncs
                || stats.read_errors > seen.read_errors
                || stats.full_disk_refusals > seen.full_disk_refusals;
            if !fired {
                // The store's status is not cheap; it is only asked when a fault fired.
                continue;
            }
            let failed = self.storage_failed(index);
            if stats.failed_syncs > seen.failed_syncs && failed {
                self.coverage.note(CoverageEvent::FsyncErrorStoppedTheStore);
            }
            if stats.read_errors > seen.read_errors && !failed && self.appliances[index].is_up() {
                self.coverage
                    .note(CoverageEvent::ReadErrorDamagedOneRecording);
            }
            if stats.full_disk_refusals > seen.full_disk_refusals && !failed {
                self.coverage
                    .note(CoverageEvent::FullDiskRefusedWithoutStopping);
            }
        }
    }

    /// Arms a power loss on appliance `index` after `operations` more disk operations: it
    /// strikes inside whatever store operation runs then (a sync, a publication, an import).
    pub fn arm_power_loss(&mut self, index: usize, operations: u64, tear: bool) {
        self.trace("power-loss-armed", &[index as u64, operations]);
        self.appliances[index]
            .disk
            .crash_after_operations(operations, tear);
    }

    /// Appliance `index` loses power, and loses it again after `operations` disk operations
    /// of the restart: inside recovery.
    pub fn crash_inside_recovery(&mut self, index: usize, operations: u64, tear: bool) {
        if !self.appliances[index].is_up() {
            return;
        }
        self.crash(index, tear);
        self.arm_power_loss(index, operations, tear);
        self.start(index);
        // An armed loss recovery did not reach is not left to strike later.
        self.appliances[index].disk.disarm_crash();
    }

    /// A client completes a session on appliance `index`, and at once, before any sync could
    /// copy it, its only copy is damaged and an operator runs `session verify`. It must stay
    /// listed as damaged with its bytes (the session itself is lost by the hardware's doing
    /// and leaves the world's list of sessions that must survive). Returns whether it was.
    pub fn damage_only_copy(&mut self, index: usize) -> Result<bool, Violation> {
        let size = self.rng.between(1, 3 * 1024 * 1024);
        let Some(id) = self.complete_session(index, size) else {
            return Ok(false);
        };
        let name = recording_file_name(&id);
        let disk = Arc::clone(&self.appliances[index].disk);
        let Some(len) = disk.file_len(&name).filter(|len| *len > 0) else {
            return Ok(false);
        };
        let bit = self.rng.below(len * 8);
        if disk.flip_bit(&name, bit).is_err() {
            return Ok(false);
        }
        self.trace("only-copy-damaged", &[index as u64, id.sequence, bit]);
        let Some(store) = self.replica(index).map(|replica| replica.store()) else {
            return Ok(false);
        };
        if store.verify_all().is_err() {
            return Ok(false);
        }
        let kept = store
            .list_damaged()
            .map(|damaged| damaged.iter().any(|entry| entry.meta.id == id))
            .unwrap_or(false);
        if !kept {
            return Err(Violation::new(
                "damaged_recordings_listed",
                format!(
                    "{} found its only copy of {}#{} damaged but does not list it as damaged",
                    self.appliances[index].name, id.origin, id.sequence
                ),
            ));
        }
        self.coverage
            .note(CoverageEvent::DamagedRecordingKeptWithoutPeer);
        if let Some(root) = self.completed_sessions.remove(&id) {
            self.completed_sizes.remove(&id);
            self.lost_with_hardware.insert(id, root);
        }
        Ok(true)
    }

    /// Makes a stretch of a recording that another appliance holds intact unreadable on
    /// appliance `index` (a bad sector). Returns whether one was found.
    pub fn fail_replicated_recording_reads(&mut self, index: usize) -> bool {
        let Some(name) = self.replicated_recording_file(index) else {
            return false;
        };
        let disk = Arc::clone(&self.appliances[index].disk);
        let len = disk.file_len(&name).unwrap_or(0);
        if len == 0 {
            return false;
        }
        let offset = self.rng.below(len);
        let span = self.rng.between(1, 64 * 1024);
        if disk.fail_reads(&name, offset, span).is_err() {
            return false;
        }
        self.trace("bad-sector", &[index as u64, offset, span]);
        self.damaged_files.insert((index, name));
        true
    }

    /// The appliance whose process handles `event`.
    fn target_of(&self, event: &WorldEvent) -> Option<usize> {
        match event {
            WorldEvent::Connect { from, .. } => Some(*from),
            WorldEvent::ConnectFailed { to, .. } => Some(*to),
            WorldEvent::Connected { link, side, .. }
            | WorldEvent::Deliver { link, side, .. }
            | WorldEvent::Flush { link, side }
            | WorldEvent::Closed { link, side, .. } => {
                self.links.get(link).map(|link| link.ends[*side])
            }
            WorldEvent::SessionEnd { session } => self
                .client_sessions
                .get(session)
                .map(|session| session.appliance),
            WorldEvent::Command { appliance, .. } => Some(*appliance),
            WorldEvent::ClientArrival { .. }
            | WorldEvent::ClientCheckIn { .. }
            | WorldEvent::ClientUpdateDone { .. } => None,
            WorldEvent::Synced { appliance, .. } => Some(*appliance),
        }
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
                self.deliver_connect_failed(to, purpose, reason);
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
                    let split_before = self
                        .status(index)
                        .is_some_and(|status| status.disagreement.is_some());
                    let now = self.local_now(index);
                    if let Some(node) = self.appliances[index].node.as_mut() {
                        let conn = node.connected(now, handshake, purpose);
                        if let Some(sim_link) = self.links.get_mut(&link) {
                            sim_link.conns[side] = Some(conn);
                        }
                        self.drain(index);
                    }
                    let split_after = self
                        .status(index)
                        .is_some_and(|status| status.disagreement.is_some());
                    if split_after && !split_before {
                        self.coverage.note(CoverageEvent::SplitBrainDetected);
                    }
                }
            }
            WorldEvent::Deliver { link, side, frame } => {
                let Some(sim_link) = self.links.get_mut(&link) else {
                    return;
                };
                if !sim_link.can_receive(side) {
                    return;
                }
                let from = sim_link.ends[1 - side];
                let to = sim_link.ends[side];
                // A dropped direction, or frames still held up ahead of this one: TCP keeps it
                // until the path heals (or the connection times out).
                if self.network.dropped(from, to) || !sim_link.stalled[side].is_empty() {
                    sim_link.stalled[side].push_back(frame);
                    return;
                }
                self.deliver_frame(link, side, frame);
            }
            WorldEvent::Flush { link, side } => loop {
                let Some(sim_link) = self.links.get_mut(&link) else {
                    return;
                };
                if !sim_link.can_receive(side)
                    || self
                        .network
                        .dropped(sim_link.ends[1 - side], sim_link.ends[side])
                {
                    return;
                }
                let Some(frame) = sim_link.stalled[side].pop_front() else {
                    return;
                };
                self.deliver_frame(link, side, frame);
            },
            WorldEvent::Closed { link, side, reason } => {
                let Some(sim_link) = self.links.get_mut(&link) else {
                    return;
                };
                if sim_link.notified[side] {
                    return;
                }
                sim_link.notified[side] = true;
                let index = sim_link.ends[side];
                let conn = sim_link.conns[side];
                let purpose = sim_link.purpose.clone();
                if sim_link.notified == [true, true] {
                    self.links.remove(&link);
                }
                self.trace("closed", &[link, side as u64]);
                let now = self.local_now(index);
                let Some(node) = self.appliances[index].node.as_mut() else {
                    return;
                };
                match conn {
                    Some(conn) => node.disconnected(now, conn, reason),
                    // The dialer never heard it was connected: its attempt failed.
                    None if side == 0 => node.connect_failed(now, purpose, reason),
                    None => return,
                }
                self.drain(index);
            }
            WorldEvent::SessionEnd { session } => {
                let Some(session) = self.client_sessions.remove(&session) else {
                    return;
                };
                let index = session.appliance;
                let ended_local_ms = self.local_now(index);
                let imported = self.import_session(PendingImport {
                    appliance: index,
                    content_seed: session.content_seed,
                    len: session.size_bytes,
                    started_local_ms: session.started_local_ms,
                    ended_local_ms,
                    ended_normally: true,
                });
                if imported.is_some() && session.stale_dns && index != self.site_target {
                    self.coverage
                        .note(CoverageEvent::StaleDnsSessionOnOldPrimary);
                }
            }
            WorldEvent::ClientArrival {
                size_bytes,
                duration_ms,
            } => {
                self.start_client_session(size_bytes, duration_ms);
            }
            WorldEvent::ClientCheckIn { client } => self.client_check_in(client),
            WorldEvent::ClientUpdateDone { client } => self.client_update_done(client),
            WorldEvent::Synced {
                appliance: index,
                incarnation,
                work,
                ticket,
            } => {
                // A crash lost the sync (and the chunks it would have made durable).
                if self.appliances[index].incarnation != incarnation
                    || !self.appliances[index].is_up()
                {
                    return;
                }
                // What the tokio driver's syncer thread does with the work it was handed.
                let session = work.session();
                let outcome = work.run().map_err(StoreFault::from);
                self.trace(
                    "synced",
                    &[index as u64, ticket, u64::from(outcome.is_ok())],
                );
                let now = self.local_now(index);
                if let Some(node) = self.appliances[index].node.as_mut() {
                    node.synced(now, session, ticket, outcome);
                    self.drain(index);
                }
            }
            WorldEvent::Command {
                appliance: index,
                id,
                command,
            } => {
                let now = self.local_now(index);
                match self.appliances[index].node.as_mut() {
                    Some(node) => {
                        let node_id = node.command(now, command);
                        let incarnation = self.appliances[index].incarnation;
                        self.node_commands.insert((index, incarnation, node_id), id);
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
            }
        }
    }

    /// Hands one frame to side `side` of `link`, decoding it with the real codec.
    fn deliver_frame(&mut self, link: LinkId, side: usize, frame: Bytes) {
        let Some((index, conn)) = self
            .links
            .get(&link)
            .and_then(|l| Some((l.ends[side], l.conns[side]?)))
        else {
            return;
        };
        if !self.appliances[index].is_up() {
            return;
        }
        if self.network.reset_per_mille > 0 && self.rng.chance(self.network.reset_per_mille, 1000) {
            self.reset_link(link, "connection reset by the network");
            return;
        }
        if frame.len() <= TRACE_FRAME_FULL_BYTES {
            self.trace.update(&frame);
        } else {
            self.trace.update(&(frame.len() as u64).to_le_bytes());
            self.trace.update(&frame[..TRACE_FRAME_END_BYTES]);
            self.trace
                .update(&frame[frame.len() - TRACE_FRAME_END_BYTES..]);
        }
        // The frame's buffer is not shared (it was frozen from the sender's), so this takes it
        // back without copying: chunk data then reaches the store as the same bytes.
        let mut buffer = BytesMut::from(frame);
        let message = match decode_frame(&mut buffer) {
            Ok(message) if buffer.is_empty() => message,
            other => panic!("the world delivered a frame the codec refuses: {other:?}"),
        };
        self.trace("deliver", &[link, side as u64]);
        // Property 2's second half: a full replacement that changes the backup's configuration
        // must leave the replaced values in a conflict record.
        let replacing =
            matches!(&message, Message::ConfigUpdate(update) if update.full && update.last_page);
        let before = if replacing {
            self.config_and_conflicts(index)
        } else {
            None
        };
        let now = self.local_now(index);
        if let Some(node) = self.appliances[index].node.as_mut() {
            node.received(now, conn, message);
            self.drain(index);
        }
        if let Some((before_entries, before_conflicts)) = before {
            self.check_conflict_recorded(index, before_entries, before_conflicts);
        }
    }

    fn config_and_conflicts(&self, index: usize) -> Option<(ConfigEntries, usize)> {
        let store = self.replica(index)?.store();
        let (_, entries) = ReplicaStore::config_snapshot(store).ok()?;
        let conflicts = ReplicaStore::conflicts(store).ok()?.len();
        Some((
            entries.into_iter().map(|e| (e.key, e.value)).collect(),
            conflicts,
        ))
    }

    fn check_conflict_recorded(
        &mut self,
        index: usize,
        before: ConfigEntries,
        conflicts_before: usize,
    ) {
        let Some((after, _)) = self.config_and_conflicts(index) else {
            return;
        };
        if after == before {
            return;
        }
        let old: BTreeMap<&String, &Option<Vec<u8>>> = before.iter().map(|(k, v)| (k, v)).collect();
        let new: BTreeMap<&String, &Option<Vec<u8>>> = after.iter().map(|(k, v)| (k, v)).collect();
        let keys: BTreeSet<&String> = old.keys().chain(new.keys()).copied().collect();
        let differing: BTreeMap<String, Option<Vec<u8>>> = keys
            .into_iter()
            .filter(|key| {
                old.get(key).copied().cloned().flatten() != new.get(key).copied().cloned().flatten()
            })
            .map(|key| (key.clone(), old.get(key).copied().cloned().flatten()))
            .collect();
        let records = self
            .replica(index)
            .and_then(|replica| ReplicaStore::conflicts(replica.store()).ok())
            .unwrap_or_default();
        let recorded = records.len() > conflicts_before
            && records.iter().skip(conflicts_before).any(|record| {
                let saved: BTreeMap<String, Option<Vec<u8>>> = record
                    .differing
                    .iter()
                    .map(|key| (key.key.clone(), key.local.clone()))
                    .collect();
                saved == differing
            });
        if !recorded {
            let name = self.appliances[index].name.clone();
            self.record_violation(
                "config_follows_primary",
                format!(
                    "{name}'s configuration was replaced ({} keys differed) without a conflict record holding the replaced values",
                    differing.len()
                ),
            );
        }
    }

    fn deliver_connect_failed(&mut self, index: usize, purpose: Purpose, reason: String) {
        let now = self.local_now(index);
        if let Some(node) = self.appliances[index].node.as_mut() {
            node.connect_failed(now, purpose, reason);
            self.drain(index);
        }
    }

    fn hello_of(&self, index: usize, now_local_ms: u64) -> Option<Hello> {
        let appliance = &self.appliances[index];
        let replica = appliance.replica()?;
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
        let replica = appliance.replica()?;
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
        // As the transport does before resolving anything.
        if let Some(site) = &self.appliances[from].site_hostname {
            if let Err(refusal) = check_not_shared_hostname(&address, site) {
                return fail(self, 0, refusal.to_string());
            }
        }
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
        let (from_now, to_now) = (self.local_now(from), self.local_now(to));
        let (Some(from_hello), Some(to_hello)) =
            (self.hello_of(from, from_now), self.hello_of(to, to_now))
        else {
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
        // The transport's checks, in its order, with its texts (the core's handshake rules).
        let key_fingerprints = [from, to].map(|index| key_fingerprint(&self.appliances[index].psk));
        let dialer = HandshakeSide {
            local: &from_local,
            hello: &from_hello,
            certificate: self.appliances[from].certificate_fingerprint,
            key_fingerprint: &key_fingerprints[0],
            pinned_peer: pin,
        };
        let acceptor = HandshakeSide {
            local: &to_local,
            hello: &to_hello,
            certificate: self.appliances[to].certificate_fingerprint,
            key_fingerprint: &key_fingerprints[1],
            pinned_peer: None,
        };
        let keys_match = self.appliances[from].psk == self.appliances[to].psk;
        if let Err(failure) = handshake_outcome(&dialer, &acceptor, keys_match) {
            // A pin or key refusal comes after the proofs (two round trips), a Hello refusal
            // after the Hellos (three).
            let hello_step = matches!(
                &failure,
                HandshakeFailure::RefusedByDialer(refusal) | HandshakeFailure::RefusedByAcceptor(refusal)
                    if !matches!(refusal.reason, ReasonCode::KeyMismatch | ReasonCode::UnexpectedPeer)
            );
            let delay = round_trip * if hello_step { 3 } else { 2 };
            return fail(self, delay, failure.dialer_text());
        }
        let link = self.next_link;
        self.next_link += 1;
        let ready = self.now_ms + round_trip * 3;
        self.links.insert(
            link,
            SimLink {
                ends: [from, to],
                conns: [None, None],
                purpose: purpose.clone(),
                reset: false,
                closed_by: [false; 2],
                notified: [false; 2],
                last_arrival_ms: [ready, ready],
                stalled: [VecDeque::new(), VecDeque::new()],
            },
        );
        let offset = to_now as i64 - from_now as i64;
        let dialer_sees = PeerHandshake {
            hello: to_hello,
            certificate_fingerprint: self.appliances[to].certificate_fingerprint,
            clock_offset_ms: offset,
        };
        let acceptor_sees = PeerHandshake {
            hello: from_hello,
            certificate_fingerprint: self.appliances[from].certificate_fingerprint,
            clock_offset_ms: -offset,
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
    fn reset_link(&mut self, link: LinkId, reason: &str) {
        let Some(sim_link) = self.links.get_mut(&link) else {
            return;
        };
        if sim_link.reset {
            return;
        }
        sim_link.reset = true;
        sim_link.stalled = [VecDeque::new(), VecDeque::new()];
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

    /// Carries out everything appliance `index` asked for, then looks at what its last sync
    /// did (property 2 is checked as each sync completes).
    fn drain(&mut self, index: usize) {
        loop {
            let Some(action) = self.appliances[index]
                .node
                .as_mut()
                .and_then(|node| node.poll_action())
            else {
                break;
            };
            self.perform(index, action);
        }
        self.check_epoch_forward(index);
        let changed = match self.replica(index) {
            Some(replica) => {
                replica.state().last_sync.as_ref() != self.last_sync_seen[index].as_ref()
            }
            None => false,
        };
        if changed {
            self.on_sync_finished(index);
        }
    }

    /// Epochs only move forward: an appliance never goes back to an older epoch by itself
    /// (only an operator's demote or a restore from a settings backup may set an older one).
    fn check_epoch_forward(&mut self, index: usize) {
        let Some(epoch) = self.replica(index).map(|replica| replica.state().epoch) else {
            return;
        };
        match self.epoch_floor[index] {
            Some(floor) if epoch < floor => {
                let name = self.appliances[index].name.clone();
                self.record_violation(
                    "epochs_only_move_forward",
                    format!("{name} went back from epoch {floor} to epoch {epoch} by itself"),
                );
                self.epoch_floor[index] = Some(epoch);
            }
            _ => self.epoch_floor[index] = Some(epoch),
        }
    }

    /// Refreshes what the coverage of re-fetches waits for, after a sync finished.
    fn note_refetches(&mut self) {
        if self.damage_found.is_empty() && self.corrupt_sent.is_empty() {
            return;
        }
        let damage_found = std::mem::take(&mut self.damage_found);
        self.damage_found =
            self.still_damaged(damage_found, CoverageEvent::BitFlipDetectedAndRefetched);
        let corrupt_sent = std::mem::take(&mut self.corrupt_sent);
        self.corrupt_sent =
            self.still_damaged(corrupt_sent, CoverageEvent::CorruptChunkRefusedAndRefetched);
    }

    /// The sessions of `waiting` not yet intact again; each one that is counts as `repaired`.
    fn still_damaged(
        &mut self,
        waiting: BTreeSet<(usize, SessionId)>,
        repaired: CoverageEvent,
    ) -> BTreeSet<(usize, SessionId)> {
        waiting
            .into_iter()
            .filter(|&(index, id)| {
                let intact = self.holds_intact(index, id);
                if intact {
                    self.coverage.note(repaired);
                }
                !intact
            })
            .collect()
    }

    /// Whether appliance `index` lists session `id` with its original root and its file, read
    /// straight off the disk, hashes to it.
    fn holds_intact(&self, index: usize, id: SessionId) -> bool {
        let Some(root) = self.completed_sessions.get(&id) else {
            return false;
        };
        let listed = self
            .replica(index)
            .and_then(|replica| replica.store().catalog_list().ok())
            .is_some_and(|list| list.iter().any(|meta| meta.id == id && meta.root == *root));
        listed
            && self.appliances[index]
                .disk
                .file_hash(&recording_file_name(&id))
                .is_some_and(|hash| hash == *root)
    }

    fn on_sync_finished(&mut self, index: usize) {
        let Some(replica) = self.replica(index) else {
            return;
        };
        let record = replica.state().last_sync.clone();
        let is_backup = replica.state().role == Role::Backup;
        self.last_sync_seen[index] = record.clone();
        self.sync_completions += 1;
        self.note_refetches();
        let Some(record) = record else { return };
        if !record.succeeded || !is_backup {
            return;
        }
        // Property 2: the backup's configuration equals what the primary served, as of the
        // snapshot point its sync started from.
        let Some(served) = self.served_config.get(&index).cloned() else {
            self.record_violation(
                "config_follows_primary",
                format!(
                    "{} finished a sync without being served a configuration",
                    self.appliances[index].name
                ),
            );
            return;
        };
        let Some(replica) = self.replica(index) else {
            return;
        };
        let store = replica.store();
        let (version, entries) = match ReplicaStore::config_snapshot(store) {
            Ok(snapshot) => snapshot,
            Err(_) => return,
        };
        let entries: ConfigEntries = entries.into_iter().map(|e| (e.key, e.value)).collect();
        if version != served.version || entries != served.entries {
            let name = self.appliances[index].name.clone();
            self.record_violation(
                "config_follows_primary",
                format!(
                    "after a successful sync {name} holds configuration {version:?} ({} keys) but the primary served {:?} ({} keys)",
                    entries.len(),
                    served.version,
                    served.entries.len()
                ),
            );
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
            Action::Send { conn, message } => self.send(index, conn, message),
            Action::Close { conn, error } => {
                if let Some(error) = error {
                    self.send(index, conn, Message::Error(error));
                }
                self.close(index, conn);
            }
            Action::SyncIncoming { session, ticket } => {
                // As the driver does: the work is taken when the action arrives, and runs
                // beside the replica a moment later; a crash before then loses it.
                let Some(replica) = self.replica(index) else {
                    return;
                };
                match replica.store().sync_work(&session, ticket) {
                    Ok(work) => {
                        let at = self.now_ms + SYNC_LATENCY_MS;
                        let incarnation = self.appliances[index].incarnation;
                        self.schedule(
                            at,
                            WorldEvent::Synced {
                                appliance: index,
                                incarnation,
                                work,
                                ticket,
                            },
                        );
                    }
                    Err(error) => {
                        let now = self.local_now(index);
                        if let Some(node) = self.appliances[index].node.as_mut() {
                            node.synced(now, session, ticket, Err(StoreFault::from(error)));
                        }
                    }
                }
            }
            Action::Progress { .. } => {}
            Action::Completed { command, outcome } => {
                let incarnation = self.appliances[index].incarnation;
                let Some(command) = self.node_commands.remove(&(index, incarnation, command))
                else {
                    return;
                };
                self.trace("completed", &[command, u64::from(outcome.is_ok())]);
                if outcome.is_ok() {
                    self.note_command_done(index, command);
                }
                if let Some(record) = self.commands.get_mut(&command) {
                    record.outcome = Some(outcome);
                    record.finished_ms = Some(self.now_ms);
                }
            }
        }
    }

    /// What a successful command tells the coverage, and a demote's epoch (the operator's
    /// choice, so the epoch floor follows it).
    fn note_command_done(&mut self, index: usize, command: CommandId) {
        let Some(record) = self.commands.get(&command) else {
            return;
        };
        match &record.command {
            Command::Promote { force: true } => {
                self.coverage.note(CoverageEvent::ForcedPromotion);
            }
            Command::Demote => {
                self.epoch_floor[index] = None;
            }
            Command::Establish { backup_address, .. } => {
                let backup = self
                    .appliances
                    .iter()
                    .position(|appliance| &appliance.address == backup_address);
                let held = |world: &World, at: usize| -> BTreeSet<SessionId> {
                    world
                        .replica(at)
                        .and_then(|replica| replica.store().catalog_list().ok())
                        .map(|list| list.into_iter().map(|meta| meta.id).collect())
                        .unwrap_or_default()
                };
                if let Some(backup) = backup {
                    let (mine, theirs) = (held(self, index), held(self, backup));
                    if !mine.is_subset(&theirs) && !theirs.is_subset(&mine) {
                        self.coverage
                            .note(CoverageEvent::SessionsOnBothSidesAtReconciliation);
                    }
                }
            }
            _ => {}
        }
    }

    /// The link appliance `index`'s node calls `conn`, and which end of it that node is.
    fn link_of(&self, index: usize, conn: ConnId) -> Option<(LinkId, usize)> {
        self.links.iter().find_map(|(id, link)| {
            let side =
                (0..2).find(|side| link.ends[*side] == index && link.conns[*side] == Some(conn))?;
            Some((*id, side))
        })
    }

    fn send(&mut self, index: usize, conn: ConnId, message: Message) {
        let Some((link_id, side)) = self.link_of(index, conn) else {
            return;
        };
        let Some(link) = self.links.get(&link_id) else {
            return;
        };
        if !link.can_send() {
            return;
        }
        let receiver = link.ends[1 - side];
        if let Message::ConfigUpdate(update) = &message {
            // The primary builds every page in one call, so its configuration now is the
            // snapshot the pages describe.
            if update.last_page {
                if let Some((entries, _)) = self.config_and_conflicts(index) {
                    let served = ServedConfig {
                        version: update.snapshot_version,
                        entries,
                    };
                    self.served_config.insert(receiver, served);
                }
            }
        }
        let message = match message {
            Message::Chunk(chunk) => {
                self.chunk_bytes_sent[index] += chunk.data.len() as u64;
                if !chunk.data.is_empty()
                    && self.network.corrupt_chunk_per_mille > 0
                    && self.rng.chance(self.network.corrupt_chunk_per_mille, 1000)
                {
                    let mut data = chunk.data.to_vec();
                    let bit = self.rng.below(data.len() as u64 * 8);
                    data[(bit / 8) as usize] ^= 1 << (bit % 8);
                    self.chunks_corrupted += 1;
                    self.corrupt_sent.insert((receiver, chunk.session));
                    self.trace("chunk-corrupted", &[index as u64, bit]);
                    Message::Chunk(Chunk {
                        data: Bytes::from(data),
                        ..chunk
                    })
                } else {
                    Message::Chunk(chunk)
                }
            }
            other => other,
        };
        let mut frame = BytesMut::new();
        if let Err(error) = encode_frame(&message, &mut frame) {
            panic!("appliance {index} built a message the codec refuses: {error}");
        }
        self.frame_bytes_sent[index] += frame.len() as u64;
        let latency = self.latency();
        let transfer_ms = frame.len() as u64 / self.network.rate_bytes_per_ms.max(1);
        let Some(link) = self.links.get_mut(&link_id) else {
            return;
        };
        let to_side = 1 - side;
        let arrival = (self.now_ms + latency).max(link.last_arrival_ms[to_side]) + transfer_ms;
        link.last_arrival_ms[to_side] = arrival;
        self.schedule(
            arrival,
            WorldEvent::Deliver {
                link: link_id,
                side: to_side,
                frame: frame.freeze(),
            },
        );
    }

    /// An orderly close by appliance `index`: the peer sees it after the frames already sent,
    /// and the closer is told at once.
    fn close(&mut self, index: usize, conn: ConnId) {
        let Some((link_id, side)) = self.link_of(index, conn) else {
            return;
        };
        let Some(link) = self.links.get_mut(&link_id) else {
            return;
        };
        if link.closed_by[side] || link.reset {
            return;
        }
        link.closed_by[side] = true;
        // The node told its replica already (a local close); only the peer is left to learn.
        link.notified[side] = true;
        let arrival = link.last_arrival_ms[1 - side].max(self.now_ms) + 1;
        self.trace("close", &[link_id, side as u64]);
        self.schedule(
            arrival,
            WorldEvent::Closed {
                link: link_id,
                side: 1 - side,
                reason: "closed by the peer".into(),
            },
        );
    }
}

/// A label for an inter-appliance key, in the spirit of `dyad key show` (the world's keys are
/// bare bytes): four groups of four hex digits of its hash.
fn key_fingerprint(psk: &[u8; 32]) -> String {
    let hash = blake3::hash(psk);
    hash.as_bytes()[..8]
        .chunks(2)
        .map(|pair| format!("{:02x}{:02x}", pair[0], pair[1]))
        .collect::<Vec<_>>()
        .join("-")
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
    /// Drops the network between `a` and `b` both ways. Open connections stall (nothing gets
    /// through either way) until the drivers' idle timeouts drop them.
    pub fn partition(&mut self, a: usize, b: usize) {
        self.partition_one_way(a, b);
        self.partition_one_way(b, a);
    }

    /// Drops packets from `from` to `to` only. New connections cannot complete a handshake;
    /// open ones stall in that direction, and `to`'s driver drops them after its idle timeout.
    pub fn partition_one_way(&mut self, from: usize, to: usize) {
        if self.network.partitioned.contains_key(&(from, to)) {
            return;
        }
        let now = self.now_ms;
        self.network.partitioned.insert((from, to), now);
        self.trace("partition", &[from as u64, to as u64]);
        let sync_now_running = self.commands.values().any(|record| {
            record.outcome.is_none()
                && matches!(record.command, Command::SyncNow)
                && self.appliances[record.appliance].is_up()
        });
        if sync_now_running {
            self.coverage.note(CoverageEvent::PartitionDuringSyncNow);
        }
        // The receiving side's node hears nothing more and closes the link after its idle
        // timeout.
    }

    /// Restores the network between `a` and `b` both ways.
    pub fn heal(&mut self, a: usize, b: usize) {
        self.heal_one_way(a, b);
        self.heal_one_way(b, a);
    }

    /// Restores packets from `from` to `to`; what TCP held up arrives now, in order.
    pub fn heal_one_way(&mut self, from: usize, to: usize) {
        if self.network.partitioned.remove(&(from, to)).is_none() {
            return;
        }
        self.trace("heal", &[from as u64, to as u64]);
        let flushes: Vec<(LinkId, usize)> = self
            .links
            .iter()
            .filter_map(|(id, link)| {
                let side = link.ends.iter().position(|end| *end == to)?;
                (link.ends[1 - side] == from && !link.stalled[side].is_empty())
                    .then_some((*id, side))
            })
            .collect();
        for (link, side) in flushes {
            let at = self.now_ms + self.latency();
            self.schedule(at, WorldEvent::Flush { link, side });
        }
    }

    /// Heals every partition.
    pub fn heal_all(&mut self) {
        let cut: Vec<(usize, usize)> = self.network.partitioned.keys().copied().collect();
        for (from, to) in cut {
            self.heal_one_way(from, to);
        }
    }

    /// Resets every open connection (a network blip).
    pub fn reset_all_links(&mut self) {
        let open: Vec<LinkId> = self
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
    pub fn status(&self, index: usize) -> Option<dyad_core::replica::Status> {
        self.replica(index)
            .map(|replica| replica.status(self.local_now(index)))
    }

    /// Stops every fault: the network is healthy, disks behave, paused appliances resume,
    /// appliances that are down are started and any whose storage stopped on a failure are
    /// restarted (what the operator does when status says so), waiting recordings imported.
    pub fn stop_faults(&mut self) {
        self.trace("faults-stop", &[]);
        self.network.reset_per_mille = 0;
        self.network.delay_spike_per_mille = 0;
        self.network.corrupt_chunk_per_mille = 0;
        self.heal_all();
        for index in 0..self.appliances.len() {
            self.appliances[index]
                .disk
                .set_faults(dyad_store::disk::sim::SimFaults::default());
            self.resume(index);
            if !self.appliances[index].is_up() {
                self.start(index);
            } else if self.storage_failed(index) {
                self.restart(index);
            }
            self.import_pending(index);
        }
    }

    /// Recording bytes some appliance of `appliances` still lacks: what must still cross the
    /// network for the pair to hold the union (property 5's transfer term).
    pub fn missing_bytes(&self, appliances: &[usize]) -> u64 {
        let mut missing = 0;
        for &index in appliances {
            let held: BTreeSet<SessionId> = self
                .replica(index)
                .and_then(|replica| replica.store().catalog_list().ok())
                .map(|list| list.into_iter().map(|meta| meta.id).collect())
                .unwrap_or_default();
            missing += self
                .completed_sizes
                .iter()
                .filter(|(id, _)| !held.contains(id))
                .map(|(_, size)| *size)
                .sum::<u64>();
        }
        let pending: u64 = self.pending_imports.iter().map(|pending| pending.len).sum();
        missing + pending * appliances.len() as u64
    }

    /// Recording files of appliance `index` whose content, read straight off the disk, does
    /// not hash to the root its catalog lists (checked without the store's own code).
    pub fn listed_but_corrupt(&self, index: usize) -> Vec<(SessionId, String)> {
        let Some(replica) = self.replica(index) else {
            return Vec::new();
        };
        let Ok(list) = replica.store().catalog_list() else {
            return Vec::new();
        };
        let disk = &self.appliances[index].disk;
        list.into_iter()
            .filter_map(|meta| {
                let name = recording_file_name(&meta.id);
                // Unreadable bytes are as bad as wrong ones: nobody can serve them.
                let good =
                    disk.file_hash(&name) == Some(meta.root) && !disk.has_unreadable_ranges(&name);
                (!good).then_some((meta.id, name))
            })
            .collect()
    }

    /// Property 4 on appliance `index`, as the world finds it: the first recording it lists as
    /// complete whose file, read straight off the simulated disk, does not hash to its root.
    /// A file the world damaged at rest (a bit flip on the medium) is the disk's doing, not the
    /// store's, unless `strict`: once faults stopped and the damage was found and re-fetched,
    /// nothing may be left. The world records this at each start; `crate::checks` asks for it
    /// at the end.
    pub fn unverified_listed(&self, index: usize, strict: bool) -> Option<Violation> {
        for (id, name) in self.listed_but_corrupt(index) {
            if !strict && self.damaged_files.contains(&(index, name.clone())) {
                continue;
            }
            return Some(Violation::new(
                "nothing_unverified_visible",
                format!(
                    "{} lists session {}#{} as complete but its file {name} does not hash to its root{}",
                    self.appliances[index].name,
                    id.origin,
                    id.sequence,
                    if strict { "" } else { " (and the world never damaged it)" }
                ),
            ));
        }
        None
    }
}
