//! Swarm testing: each seed draws its own mix of fault classes, their rates, and an operator
//! script, runs them against a pair, then heals and checks every property.
//!
//! A hand-written scenario tests the mix its author thought of; a swarm seed switches most
//! fault classes off and turns the rest up, so that combinations nobody wrote down (a torn
//! write during a forced promotion, a full disk during an asynchronous upgrade) get their turn.
//! A run is an explicit [`SwarmPlan`]: the classes on with their rates, and a list of
//! [`Step`]s (a wait, then one action), all drawn from the seed before the world runs, from a
//! generator of its own. The world keeps its own generator from the same seed, so a plan with
//! steps removed still runs deterministically: that is what shrinking (`crate::shrink`)
//! relies on, and what a replay file records (`crate::replay`, which also prints a plan). The
//! actions reuse the world's operations and the scenarios' operator procedures (the harness's
//! establish and commands, the upgrade and migration families' swaps, upgrades and migrations):
//! the swarm depends on them, and only the registry (`crate::scenarios`) depends on the swarm.

use dyad_core::clients::MAX_CONCURRENT_UPGRADES_KEY;
use dyad_core::replica::Command;
use dyad_store::disk::sim::{Ratio, SimFaults};
use dyad_wire::Role;

use crate::checks;
use crate::harness::{
    add_config, add_sessions, command, establish, final_checks, run, settle, software, violation,
    Outcome, MINUTE_MS,
};
use crate::rng::SimRng;
use crate::scenarios_upgrade::{
    establish_retrying, new_software, sync_and_break, upgrade_one, FlowReport, OLD_STORE_FORMAT,
};
use crate::upgrade::InstallCrash;
use crate::violation::Violation;
use crate::world::{Swing, World};

/// The fault classes a seed switches on or off, each with its own rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultClass {
    /// Connections reset by the network (per mille of frames).
    NetworkResets,
    /// Loss, duplication and reordering below TCP, seen above it as delay spikes.
    DelaySpikes,
    /// A sender whose chunks leave with a flipped bit.
    FaultySender,
    /// Both directions cut for a while.
    Partitions,
    /// One direction cut for a while.
    OneWayPartitions,
    /// Every open connection reset at once.
    LinkBlips,
    /// A clock set hours off at the start.
    ClockOffset,
    /// A clock gaining or losing time.
    ClockDrift,
    /// A clock stepped forwards or backwards.
    ClockJumps,
    /// Power loss, unsynced writes lost.
    Crashes,
    /// Power loss tearing the last unsynced write of each file.
    TornWrites,
    /// Power loss while chunks are moving (Sync Now, then the crash).
    CrashesMidTransfer,
    /// A frozen process (its peers' idle timeouts fire).
    Pauses,
    /// The service restarted without power loss.
    ServiceRestarts,
    /// Writes failing on a disk.
    DiskWriteErrors,
    /// fsync failing on a disk as Linux fails it: reported once, the pages never written
    /// (terminal for the store until it restarts).
    FsyncErrors,
    /// Bad sectors under stored recordings: reads of them fail with EIO.
    ReadErrors,
    /// Power lost inside a store operation (between two of its disk operations).
    CrashesInsideOperations,
    /// Power lost inside recovery, as the appliance restarts after a crash.
    CrashesInsideRecovery,
    /// A disk running out of space.
    DiskFull,
    /// Bits rotting in stored recordings.
    BitFlips,
    /// A software upgrade (synchronous or asynchronous).
    Upgrades,
    /// Power loss in the middle of an install or its store migration.
    CrashesDuringUpgrade,
    /// A planned role swap, the site following by shared IP, DNS or NAT.
    RoleSwaps,
    /// A forced promotion in a partition (a split brain when it heals).
    ForcedPromotions,
    /// The relationship broken and re-established, either way round.
    BreaksAndReestablish,
    /// An appliance moved to new hardware from a settings backup.
    HardwareMigrations,
}

/// How a fault class acts on a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acts {
    /// Through the network's standing rates, for the whole faulty phase.
    Rate,
    /// Once, as the world is set up.
    Setup,
    /// As steps of the plan, at random moments.
    Steps,
}

/// One fault class: its name in plans and replay files, and how it acts.
#[derive(Clone, Copy, Debug)]
pub struct ClassRow {
    pub class: FaultClass,
    pub name: &'static str,
    pub acts: Acts,
}

/// Every fault class, one row each, in the enum's order. A new class is a variant, a row here
/// and its effect (a rate in `SwarmPlan::draw`, or its steps in `SwarmPlan::draw_fault`).
pub const CLASSES: [ClassRow; 27] = [
    ClassRow {
        class: FaultClass::NetworkResets,
        name: "network-resets",
        acts: Acts::Rate,
    },
    ClassRow {
        class: FaultClass::DelaySpikes,
        name: "delay-spikes",
        acts: Acts::Rate,
    },
    ClassRow {
        class: FaultClass::FaultySender,
        name: "faulty-sender",
        acts: Acts::Rate,
    },
    ClassRow {
        class: FaultClass::Partitions,
        name: "partitions",
        acts: Acts::Steps,
    },
    ClassRow {
        class: FaultClass::OneWayPartitions,
        name: "one-way-partitions",
        acts: Acts::Steps,
    },
    ClassRow {
        class: FaultClass::LinkBlips,
        name: "link-blips",
        acts: Acts::Steps,
    },
    ClassRow {
        class: FaultClass::ClockOffset,
        name: "clock-offset",
        acts: Acts::Setup,
    },
    ClassRow {
        class: FaultClass::ClockDrift,
        name: "clock-drift",
        acts: Acts::Steps,
    },
    ClassRow {
        class: FaultClass::ClockJumps,
        name: "clock-jumps",
        acts: Acts::Steps,
    },
    ClassRow {
        class: FaultClass::Crashes,
        name: "crashes",
        acts: Acts::Steps,
    },
    ClassRow {
        class: FaultClass::TornWrites,
        name: "torn-writes",
        acts: Acts::Steps,
    },
    ClassRow {
        class: FaultClass::CrashesMidTransfer,
        name: "crashes-mid-transfer",
        acts: Acts::Steps,
    },
    ClassRow {
        class: FaultClass::Pauses,
        name: "pauses",
        acts: Acts::Steps,
    },
    ClassRow {
        class: FaultClass::ServiceRestarts,
        name: "service-restarts",
        acts: Acts::Steps,
    },
    ClassRow {
        class: FaultClass::DiskWriteErrors,
        name: "disk-write-errors",
        acts: Acts::Steps,
    },
    ClassRow {
        class: FaultClass::FsyncErrors,
        name: "fsync-errors",
        acts: Acts::Steps,
    },
    ClassRow {
        class: FaultClass::ReadErrors,
        name: "read-errors",
        acts: Acts::Steps,
    },
    ClassRow {
        class: FaultClass::CrashesInsideOperations,
        name: "crashes-inside-operations",
        acts: Acts::Steps,
    },
    ClassRow {
        class: FaultClass::CrashesInsideRecovery,
        name: "crashes-inside-recovery",
        acts: Acts::Steps,
    },
    ClassRow {
        class: FaultClass::DiskFull,
        name: "disk-full",
        acts: Acts::Steps,
    },
    ClassRow {
        class: FaultClass::BitFlips,
        name: "bit-flips",
        acts: Acts::Steps,
    },
    ClassRow {
        class: FaultClass::Upgrades,
        name: "upgrades",
        acts: Acts::Steps,
    },
    ClassRow {
        class: FaultClass::CrashesDuringUpgrade,
        name: "crashes-during-upgrade",
        acts: Acts::Steps,
    },
    ClassRow {
        class: FaultClass::RoleSwaps,
        name: "role-swaps",
        acts: Acts::Steps,
    },
    ClassRow {
        class: FaultClass::ForcedPromotions,
        name: "forced-promotions",
        acts: Acts::Steps,
    },
    ClassRow {
        class: FaultClass::BreaksAndReestablish,
        name: "breaks-and-reestablish",
        acts: Acts::Steps,
    },
    ClassRow {
        class: FaultClass::HardwareMigrations,
        name: "hardware-migrations",
        acts: Acts::Steps,
    },
];

impl FaultClass {
    pub const ALL: [FaultClass; CLASSES.len()] = {
        let mut all = [FaultClass::NetworkResets; CLASSES.len()];
        let mut index = 0;
        while index < CLASSES.len() {
            all[index] = CLASSES[index].class;
            index += 1;
        }
        all
    };

    fn row(self) -> &'static ClassRow {
        let row = &CLASSES[self as usize];
        debug_assert_eq!(row.class, self, "CLASSES is in the enum's order");
        row
    }

    pub fn name(self) -> &'static str {
        self.row().name
    }

    /// Whether the class acts through the network's standing rates rather than as steps.
    fn is_rate(self) -> bool {
        self.row().acts == Acts::Rate
    }
}

/// How the site address follows a swap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwingKind {
    SharedIp,
    Dns,
    Nat,
}

/// One thing the world or an operator does. Appliances are numbered 0 (a) and 1 (b); an action
/// that needs a role (the backup, the primary) finds it when it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Sessions completed on appliance `on` at once.
    Sessions {
        on: usize,
        count: u64,
    },
    /// Clients arriving at the site address over the next `over_ms`.
    Clients {
        count: u64,
        over_ms: u64,
    },
    /// Configuration writes on appliance `on` (refused unless it may write).
    ConfigWrites {
        on: usize,
        count: u64,
    },
    /// The client-update limit written on the primary.
    ClientLimit {
        limit: u64,
    },
    SyncNow {
        on: usize,
    },
    /// The network's standing fault rates (per mille).
    Network {
        resets: u64,
        spikes: u64,
        corrupt: u64,
    },
    /// Both directions cut for `ms`; with `sync_first`, just after a Sync Now on the backup.
    Partition {
        ms: u64,
        sync_first: bool,
    },
    OneWay {
        from: usize,
        ms: u64,
        sync_first: bool,
    },
    Blip,
    ClockJump {
        on: usize,
        delta_ms: i64,
    },
    ClockDrift {
        on: usize,
        ppm: i64,
    },
    Crash {
        on: usize,
        tear: bool,
        down_ms: u64,
    },
    /// Sync Now on the backup, then `on` loses power `lead_ms` later.
    CrashMidSync {
        on: usize,
        lead_ms: u64,
        tear: bool,
        down_ms: u64,
    },
    Pause {
        on: usize,
        ms: u64,
    },
    Restart {
        on: usize,
    },
    /// One write in `one_in` fails on `on`'s disk, for `ms`.
    WriteErrors {
        on: usize,
        one_in: u64,
        ms: u64,
    },
    /// One fsync in `one_in` fails on `on`'s disk, for `ms`.
    FsyncErrors {
        on: usize,
        one_in: u64,
        ms: u64,
    },
    /// `on`'s disk has `room_kib` KiB left, for `ms`.
    DiskFull {
        on: usize,
        room_kib: u64,
        ms: u64,
    },
    BitFlips {
        on: usize,
        files: u64,
    },
    /// Bad sectors under `files` recordings of `on` that the other appliance holds.
    ReadErrors {
        on: usize,
        files: u64,
    },
    /// `on` loses power after `operations` more disk operations (Sync Now first, so that
    /// they are likely a transfer's).
    CrashInside {
        on: usize,
        operations: u64,
        tear: bool,
    },
    /// `on` crashes and loses power again `operations` disk operations into recovery.
    CrashInsideRecovery {
        on: usize,
        operations: u64,
        tear: bool,
    },
    Break {
        on: usize,
    },
    /// Whatever relationship is left is broken, and `primary` establishes with the other.
    Reestablish {
        primary: usize,
    },
    /// The backup is promoted (planned) and the site follows.
    Swap {
        swing: SwingKind,
        ttl_ms: u64,
    },
    /// A partition, the backup forced to primary, the site moved by DNS, sessions on both.
    ForcedPromotion {
        ms: u64,
    },
    /// An upgrade of both appliances; `crash` is `(install 0 or 1, InstallCrash index)`.
    Upgrade {
        asynchronous: bool,
        crash_install: u64,
        crash_point: u64,
    },
    /// Appliance `on` moves to new hardware from a settings backup.
    Migration {
        on: usize,
    },
}

/// One step of a plan: wait `wait_ms`, then act. The world's generator is reseeded from the
/// seed and `salt` as the step begins, so what a step draws does not depend on the steps
/// before it: removing one while shrinking leaves the others' randomness as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub wait_ms: u64,
    pub salt: u64,
    pub action: Action,
}

/// A whole swarm run: which classes are on (with their drawn rate), whether the pair starts on
/// the old software (so that an upgrade has something to do), the clients, and the steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwarmPlan {
    pub classes: Vec<(FaultClass, u64)>,
    pub old_software: bool,
    /// Deployed active, deployed passive and integration clients.
    pub clients: [u64; 3],
    pub steps: Vec<Step>,
}

/// Operator procedures that may fail under faults without anything being wrong: the operator
/// just goes on, and the heal at the end repairs the relationship.
const OPERATOR_SETBACKS: &[&str] = &[
    "establish",
    "break",
    "planned_swap",
    "install_refused",
    "forced_promotion",
    "demote",
    "settings_backup",
];

fn other(index: usize) -> usize {
    1 - index
}

impl SwarmPlan {
    /// The plan of `seed`, drawn from a generator of its own (the world's is left untouched).
    pub fn draw(seed: u64) -> SwarmPlan {
        let mut rng = SimRng::new(seed ^ 0x7377_6172_6d21_7377);
        let mut classes = Vec::new();
        // Each class is on with a chance of its own for this seed, so that some seeds run
        // with few classes at high rates and others with many.
        let on_per_16 = rng.between(3, 9);
        for class in FaultClass::ALL {
            if rng.chance(on_per_16, 16) {
                classes.push((class, rng.between(1, 100)));
            }
        }
        let on = |class: FaultClass| classes.iter().any(|(c, _)| *c == class);
        let old_software = on(FaultClass::Upgrades) || on(FaultClass::CrashesDuringUpgrade);
        let clients = if old_software {
            [rng.between(0, 12), rng.between(1, 20), rng.between(0, 3)]
        } else {
            [0; 3]
        };
        let mut steps = Vec::new();
        let rate = |class: FaultClass| {
            classes
                .iter()
                .find(|(c, _)| *c == class)
                .map_or(0, |(_, rate)| *rate)
        };
        if classes.iter().any(|(class, _)| class.is_rate()) {
            steps.push(Step {
                wait_ms: 0,
                salt: 0,
                action: Action::Network {
                    resets: rate(FaultClass::NetworkResets) / 5,
                    spikes: rate(FaultClass::DelaySpikes) / 2,
                    corrupt: rate(FaultClass::FaultySender) / 2,
                },
            });
        }
        if old_software && clients.iter().sum::<u64>() > 0 {
            steps.push(Step {
                wait_ms: 0,
                salt: 0,
                action: Action::ClientLimit {
                    limit: rng.between(1, 4),
                },
            });
        }
        if on(FaultClass::ClockOffset) {
            for side in 0..2 {
                let hours = rng.between(0, 4 * 60 * MINUTE_MS) as i64 - 2 * 60 * MINUTE_MS as i64;
                steps.push(Step {
                    wait_ms: 0,
                    salt: 0,
                    action: Action::ClockJump {
                        on: side,
                        delta_ms: hours,
                    },
                });
            }
        }
        let actives: Vec<FaultClass> = classes
            .iter()
            .map(|(class, _)| *class)
            .filter(|class| class.row().acts == Acts::Steps)
            .collect();
        let mut upgraded = false;
        for _ in 0..rng.between(6, 18) {
            let wait_ms = rng.between(10_000, 8 * MINUTE_MS);
            let action = if actives.is_empty() || rng.chance(2, 5) {
                Self::draw_workload(&mut rng)
            } else {
                let class = actives[rng.below(actives.len() as u64) as usize];
                match Self::draw_fault(&mut rng, class, rate(class), &mut upgraded) {
                    Some(action) => action,
                    None => Self::draw_workload(&mut rng),
                }
            };
            steps.push(Step {
                wait_ms,
                salt: 0,
                action,
            });
        }
        if old_software && !upgraded {
            let crash = on(FaultClass::CrashesDuringUpgrade);
            steps.push(Step {
                wait_ms: rng.between(10_000, 5 * MINUTE_MS),
                salt: 0,
                action: Self::draw_upgrade(&mut rng, crash),
            });
        }
        for (n, step) in steps.iter_mut().enumerate() {
            step.salt = n as u64 + 1;
        }
        SwarmPlan {
            classes,
            old_software,
            clients,
            steps,
        }
    }

    fn draw_workload(rng: &mut SimRng) -> Action {
        let on = rng.below(2) as usize;
        match rng.below(4) {
            0 => Action::Sessions {
                on,
                count: rng.between(1, 8),
            },
            1 => Action::Clients {
                count: rng.between(1, 12),
                over_ms: rng.between(MINUTE_MS, 20 * MINUTE_MS),
            },
            2 => Action::ConfigWrites {
                on,
                count: rng.between(1, 5),
            },
            _ => Action::SyncNow { on },
        }
    }

    fn draw_upgrade(rng: &mut SimRng, crash: bool) -> Action {
        Action::Upgrade {
            asynchronous: rng.chance(1, 2),
            crash_install: rng.below(2),
            crash_point: if crash {
                rng.between(1, InstallCrash::ALL.len() as u64 - 1)
            } else {
                0
            },
        }
    }

    fn draw_fault(
        rng: &mut SimRng,
        class: FaultClass,
        rate: u64,
        upgraded: &mut bool,
    ) -> Option<Action> {
        let on = rng.below(2) as usize;
        let length = |rng: &mut SimRng| rng.between(5_000, 2 * MINUTE_MS + rate * 3_000);
        Some(match class {
            FaultClass::Partitions => Action::Partition {
                ms: length(rng),
                sync_first: rng.chance(1, 2),
            },
            FaultClass::OneWayPartitions => Action::OneWay {
                from: on,
                ms: length(rng),
                sync_first: rng.chance(1, 2),
            },
            FaultClass::LinkBlips => Action::Blip,
            FaultClass::ClockDrift => Action::ClockDrift {
                on,
                ppm: rng.between(0, 2 * rate * 10) as i64 - rate as i64 * 10,
            },
            FaultClass::ClockJumps => {
                let size = rng.between(MINUTE_MS, 3 * 60 * MINUTE_MS) as i64;
                Action::ClockJump {
                    on,
                    delta_ms: if rng.chance(1, 2) { size } else { -size },
                }
            }
            FaultClass::Crashes | FaultClass::TornWrites => Action::Crash {
                on,
                tear: class == FaultClass::TornWrites,
                down_ms: rng.between(1_000, 3 * MINUTE_MS),
            },
            FaultClass::CrashesMidTransfer => Action::CrashMidSync {
                on,
                lead_ms: rng.between(20, 2_000),
                tear: rng.chance(1, 2),
                down_ms: rng.between(1_000, 2 * MINUTE_MS),
            },
            FaultClass::Pauses => Action::Pause {
                on,
                ms: rng.between(5_000, 5 * MINUTE_MS),
            },
            FaultClass::ServiceRestarts => Action::Restart { on },
            FaultClass::DiskWriteErrors => Action::WriteErrors {
                on,
                one_in: 101 - rate.min(98),
                ms: length(rng),
            },
            FaultClass::FsyncErrors => Action::FsyncErrors {
                on,
                one_in: (101 - rate.min(98)) / 3 + 2,
                ms: length(rng),
            },
            FaultClass::DiskFull => Action::DiskFull {
                on,
                room_kib: rng.between(0, 4 * 1024),
                ms: length(rng),
            },
            FaultClass::BitFlips => Action::BitFlips {
                on,
                files: rng.between(1, 3),
            },
            FaultClass::ReadErrors => Action::ReadErrors {
                on,
                files: rng.between(1, 3),
            },
            FaultClass::CrashesInsideOperations => Action::CrashInside {
                on,
                operations: rng.between(0, 40 + rate * 20),
                tear: rng.chance(1, 2),
            },
            FaultClass::CrashesInsideRecovery => Action::CrashInsideRecovery {
                on,
                operations: rng.between(0, 30 + rate),
                tear: rng.chance(1, 2),
            },
            FaultClass::Upgrades | FaultClass::CrashesDuringUpgrade => {
                if *upgraded {
                    return None;
                }
                *upgraded = true;
                Self::draw_upgrade(rng, class == FaultClass::CrashesDuringUpgrade)
            }
            FaultClass::RoleSwaps => Action::Swap {
                swing: [SwingKind::SharedIp, SwingKind::Dns, SwingKind::Nat][rng.below(3) as usize],
                ttl_ms: rng.between(30, 300) * 1000,
            },
            FaultClass::ForcedPromotions => Action::ForcedPromotion {
                ms: rng.between(MINUTE_MS, 10 * MINUTE_MS),
            },
            FaultClass::BreaksAndReestablish => {
                if rng.chance(1, 2) {
                    Action::Break { on }
                } else {
                    Action::Reestablish { primary: on }
                }
            }
            FaultClass::HardwareMigrations => Action::Migration { on },
            FaultClass::NetworkResets
            | FaultClass::DelaySpikes
            | FaultClass::FaultySender
            | FaultClass::ClockOffset => return None,
        })
    }

    /// The mix in one line: the classes on with their rates, the clients, the step count.
    pub fn mix(&self) -> String {
        let classes: Vec<String> = self
            .classes
            .iter()
            .map(|(class, rate)| format!("{}:{rate}", class.name()))
            .collect();
        format!(
            "{} of {} classes on [{}]; {}; clients {}/{}/{}; {} steps",
            self.classes.len(),
            FaultClass::ALL.len(),
            classes.join(" "),
            if self.old_software {
                "starts on the old software"
            } else {
                "current software"
            },
            self.clients[0],
            self.clients[1],
            self.clients[2],
            self.steps.len()
        )
    }
}

/// The `swarm` scenario: the plan drawn from the world's seed.
pub(crate) fn swarm_scenario(world: &mut World) -> Result<Outcome, Violation> {
    let plan = SwarmPlan::draw(world.seed);
    run_plan(world, &plan)
}

/// Runs `plan`; a failure's details end with the plan's mix, so the seed's draw is on record.
pub fn run_plan(world: &mut World, plan: &SwarmPlan) -> Result<Outcome, Violation> {
    play(world, plan).map_err(|found| Violation {
        property: found.property,
        details: format!("{} [swarm {}]", found.details, plan.mix()),
    })
}

/// An operator procedure's failure is a setback the operator lives with; anything else is a
/// property broken.
fn tolerate(result: Result<(), Violation>) -> Result<(), Violation> {
    match result {
        Err(found) if OPERATOR_SETBACKS.contains(&found.property) => Ok(()),
        other => other,
    }
}

fn role(world: &World, index: usize) -> Option<Role> {
    world.replica(index).map(|replica| replica.state().role)
}

/// The appliance in the backup role, if one is.
fn backup_of(world: &World) -> Option<usize> {
    (0..2).find(|index| role(world, *index) == Some(Role::Backup))
}

fn primary_of(world: &World) -> Option<usize> {
    (0..2).find(|index| role(world, *index) == Some(Role::Primary))
}

fn play(world: &mut World, plan: &SwarmPlan) -> Result<Outcome, Violation> {
    let mut psk = [0u8; 32];
    world.rng.fill(&mut psk);
    let format = if plan.old_software {
        OLD_STORE_FORMAT
    } else {
        dyad_store::FORMAT_VERSION
    };
    let a = world.add_appliance_with_format("appliance-a", psk, software(), format);
    let b = world.add_appliance_with_format("appliance-b", psk, software(), format);
    world.site_target = a;
    let count = world.rng.between(2, 10);
    add_sessions(world, a, count);
    add_config(world, a, 5, "site");
    establish(world, a, b)?;
    if plan.clients.iter().sum::<u64>() > 0 {
        world.add_clients(
            plan.clients[0],
            plan.clients[1],
            plan.clients[2],
            software().app,
        );
    }
    let mut notes = Vec::new();
    for step in &plan.steps {
        world.rng = SimRng::new(world.seed ^ step.salt.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        run(world, step.wait_ms)?;
        if let Some(note) = act(world, &step.action)? {
            notes.push(note);
        }
    }
    let (primary, backup) = heal(world)?;
    settle(world, primary, backup)?;
    final_checks(world, primary, backup)?;
    checks::nothing_corrupt_served(world)?;
    checks::clients_updated_in_time(world)?;
    notes.push(format!(
        "ended with {} primary; {} sessions; {} client updates granted, {} told to retry (at most {} at once)",
        world.appliances[primary].name,
        world.completed_sessions.len(),
        world.clients.grants,
        world.clients.retries_told,
        world.clients.most_concurrent
    ));
    Ok(Outcome { notes })
}

fn disk_faults(world: &mut World, on: usize, faults: SimFaults, ms: u64) -> Result<(), Violation> {
    world.appliances[on].disk.set_faults(faults);
    run(world, ms)?;
    world.appliances[on].disk.set_faults(SimFaults::default());
    // The operator restarts a store that stopped on the failure, as status tells them.
    if world.storage_failed(on) {
        world.restart(on);
    }
    Ok(())
}

/// With `sync_first`, new sessions on the primary and a Sync Now on the backup just before a
/// cut, so that the cut may land while it runs.
fn sync_before_cut(world: &mut World, sync_first: bool) -> Result<(), Violation> {
    if !sync_first {
        return Ok(());
    }
    let Some(backup) = backup_of(world) else {
        return Ok(());
    };
    add_sessions(world, other(backup), 2);
    world.command(backup, Command::SyncNow);
    let lead = world.rng.between(0, 500);
    run(world, lead)
}

fn swing_of(kind: SwingKind, ttl_ms: u64) -> Swing {
    match kind {
        SwingKind::SharedIp => Swing::SharedIp,
        SwingKind::Dns => Swing::Dns { ttl_ms },
        SwingKind::Nat => Swing::Nat,
    }
}

/// Carries out one action. Returns a note for the run's outcome, if any.
fn act(world: &mut World, action: &Action) -> Result<Option<String>, Violation> {
    match *action {
        Action::Sessions { on, count } => add_sessions(world, on, count),
        Action::Clients { count, over_ms } => {
            for _ in 0..count {
                let at = world.now_ms + world.rng.below(over_ms.max(1));
                let size = crate::harness::recording_size(world) / 2;
                let length = world.rng.between(MINUTE_MS / 2, 6 * MINUTE_MS);
                world.schedule_client(at, size, length);
            }
        }
        Action::ConfigWrites { on, count } => {
            let prefix = format!("swarm-{}", world.steps);
            add_config(world, on, count, &prefix);
        }
        Action::ClientLimit { limit } => {
            let on = primary_of(world).unwrap_or(world.site_target);
            world.write_config(
                on,
                MAX_CONCURRENT_UPGRADES_KEY,
                Some(limit.to_string().as_bytes()),
            );
        }
        Action::SyncNow { on } => {
            world.command(on, Command::SyncNow);
        }
        Action::Network {
            resets,
            spikes,
            corrupt,
        } => {
            world.network.reset_per_mille = resets;
            world.network.delay_spike_per_mille = spikes;
            world.network.corrupt_chunk_per_mille = corrupt;
        }
        Action::Partition { ms, sync_first } => {
            sync_before_cut(world, sync_first)?;
            world.partition(0, 1);
            run(world, ms)?;
            world.heal(0, 1);
        }
        Action::OneWay {
            from,
            ms,
            sync_first,
        } => {
            sync_before_cut(world, sync_first)?;
            world.partition_one_way(from, other(from));
            run(world, ms)?;
            world.heal_one_way(from, other(from));
        }
        Action::Blip => world.reset_all_links(),
        Action::ClockJump { on, delta_ms } => world.jump_clock(on, delta_ms),
        Action::ClockDrift { on, ppm } => world.set_clock_drift(on, ppm),
        Action::Crash { on, tear, down_ms } => {
            world.crash(on, tear);
            run(world, down_ms)?;
            world.start(on);
        }
        Action::CrashMidSync {
            on,
            lead_ms,
            tear,
            down_ms,
        } => {
            let puller = backup_of(world).unwrap_or(other(on));
            add_sessions(world, other(puller), 2);
            world.command(puller, Command::SyncNow);
            run(world, lead_ms)?;
            world.crash(on, tear);
            run(world, down_ms)?;
            world.start(on);
        }
        Action::Pause { on, ms } => {
            world.pause(on);
            run(world, ms)?;
            world.resume(on);
        }
        Action::Restart { on } => world.restart(on),
        Action::WriteErrors { on, one_in, ms } => {
            let faults = SimFaults {
                write_error: Ratio::new(1, one_in.clamp(2, 1000) as u32),
                ..SimFaults::default()
            };
            disk_faults(world, on, faults, ms)?;
        }
        Action::FsyncErrors { on, one_in, ms } => {
            let one_in = one_in.clamp(2, 1000) as u32;
            let faults = SimFaults {
                sync_error: Ratio::new(1, one_in),
                sync_dir_error: Ratio::new(1, one_in),
                ..SimFaults::default()
            };
            disk_faults(world, on, faults, ms)?;
        }
        Action::DiskFull { on, room_kib, ms } => {
            let used = world.appliances[on].disk.used_bytes();
            let faults = SimFaults {
                quota_bytes: Some(used + room_kib * 1024),
                ..SimFaults::default()
            };
            disk_faults(world, on, faults, ms)?;
        }
        Action::BitFlips { on, files } => {
            for _ in 0..files {
                let bits = world.rng.between(1, 3);
                world.flip_replicated_recording_bits(on, bits);
            }
            // Clients play some recordings back: reads find the damage.
            world.play_back_some(on, 2);
        }
        Action::ReadErrors { on, files } => {
            for _ in 0..files {
                world.fail_replicated_recording_reads(on);
            }
            world.play_back_some(on, 2);
            // Now and then the damage hits a session's only copy (not synced yet).
            if files == 3 {
                world.damage_only_copy(on)?;
            }
        }
        Action::CrashInside {
            on,
            operations,
            tear,
        } => {
            if let Some(backup) = backup_of(world) {
                world.command(backup, Command::SyncNow);
            }
            world.arm_power_loss(on, operations, tear);
            run(world, 30_000)?;
            // Not struck within the while (an idle appliance): disarmed.
            world.appliances[on].disk.disarm_crash();
        }
        Action::CrashInsideRecovery {
            on,
            operations,
            tear,
        } => world.crash_inside_recovery(on, operations, tear),
        Action::Break { on } => {
            tolerate(command(world, on, Command::Break, 2 * MINUTE_MS).map(|_| ()))?;
        }
        Action::Reestablish { primary } => {
            for index in [primary, other(primary)] {
                if role(world, index).is_some_and(|role| role != Role::Standalone) {
                    let _ = command(world, index, Command::Break, 2 * MINUTE_MS)?;
                }
            }
            run(world, 30_000)?;
            tolerate(establish(world, primary, other(primary)))?;
            world.swing_site(primary, Swing::SharedIp);
        }
        Action::Swap { swing, ttl_ms } => {
            let Some(to) = backup_of(world) else {
                return Ok(Some("swap skipped: no backup".into()));
            };
            tolerate(crate::scenarios_migration::planned_swap(world, to))?;
            if role(world, to) == Some(Role::Primary) {
                world.swing_site(to, swing_of(swing, ttl_ms));
            }
        }
        Action::ForcedPromotion { ms } => {
            let Some(to) = backup_of(world) else {
                return Ok(Some("forced promotion skipped: no backup".into()));
            };
            world.partition(0, 1);
            run(world, 2 * MINUTE_MS)?;
            let forced = command(world, to, Command::Promote { force: true }, MINUTE_MS)?;
            if forced.is_ok() {
                let ttl_ms = world.rng.between(60, 600) * 1000;
                world.swing_site(to, Swing::Dns { ttl_ms });
                for _ in 0..world.rng.between(2, 6) {
                    let size = crate::harness::recording_size(world) / 2;
                    world.start_client_session(size, MINUTE_MS);
                }
                add_config(world, to, 2, "forced");
                add_config(world, other(to), 2, "stale");
            }
            run(world, ms)?;
            world.heal(0, 1);
        }
        Action::Upgrade {
            asynchronous,
            crash_install,
            crash_point,
        } => return upgrade(world, asynchronous, crash_install, crash_point),
        Action::Migration { on } => {
            let notes = crate::scenarios_migration::migrate(world, on, other(on));
            match notes {
                Ok(notes) => return Ok(Some(notes.join("; "))),
                Err(found) => tolerate(Err(found))?,
            }
        }
    }
    Ok(None)
}

/// Both appliances upgraded, the synchronous or the asynchronous way, from whatever roles they
/// hold now; `crash_point` (an [`InstallCrash`] index, 0 for none) cuts install
/// `crash_install` short.
fn upgrade(
    world: &mut World,
    asynchronous: bool,
    crash_install: u64,
    crash_point: u64,
) -> Result<Option<String>, Violation> {
    if (0..2).all(|index| world.appliances[index].software == new_software()) {
        return Ok(Some("upgrade skipped: both run the new software".into()));
    }
    let primary = primary_of(world).unwrap_or(world.site_target);
    let backup = other(primary);
    let point = InstallCrash::ALL[(crash_point as usize).min(InstallCrash::ALL.len() - 1)];
    let crash_at = |n: u64| {
        if n == crash_install {
            point
        } else {
            InstallCrash::Never
        }
    };
    let mut report = FlowReport::default();
    tolerate(sync_and_break(world, primary, backup))?;
    let order = if asynchronous {
        [backup, primary]
    } else {
        [primary, backup]
    };
    for (n, index) in order.into_iter().enumerate() {
        if world.appliances[index].software == new_software() {
            continue;
        }
        tolerate(upgrade_one(world, index, crash_at(n as u64), &mut report))?;
        if asynchronous && n == 0 {
            world.swing_site(index, Swing::SharedIp);
        }
    }
    let new_primary = if asynchronous { backup } else { primary };
    tolerate(establish_retrying(world, new_primary, other(new_primary)))?;
    Ok(Some(format!(
        "{} upgrade, {} installs, crash {point:?} in install {crash_install}",
        if asynchronous {
            "asynchronous"
        } else {
            "synchronous"
        },
        report.installs.len()
    )))
}

/// Faults stop; the operator finishes what is half done (an upgrade that reached one side, a
/// stopped store, a split brain, a broken or half-made relationship) and the pair is a pair
/// again; clients read every recording once (finding damage at rest). Returns
/// `(primary, backup)`.
fn heal(world: &mut World) -> Result<(usize, usize), Violation> {
    world.stop_faults();
    // Versions must match to pair: finish an upgrade that reached only one side.
    let new = (0..2).filter(|index| world.appliances[*index].software == new_software());
    if new.count() == 1 {
        let old = (0..2)
            .find(|index| world.appliances[*index].software != new_software())
            .expect("exactly one appliance runs the new software, so one runs the old");
        if role(world, old).is_some_and(|role| role != Role::Standalone) {
            let _ = command(world, old, Command::Break, 2 * MINUTE_MS)?;
            run(world, 10_000)?;
        }
        let mut report = FlowReport::default();
        tolerate(upgrade_one(world, old, InstallCrash::Never, &mut report))?;
    }
    for _ in 0..5 {
        run(world, MINUTE_MS)?;
        // A store that stopped on a failure (it may only show once the appliance next
        // writes) is restarted, as its status tells the operator.
        for index in 0..2 {
            if world.storage_failed(index) {
                world.restart(index);
            }
        }
        let roles = (role(world, 0), role(world, 1));
        let pair = match roles {
            (Some(Role::Primary), Some(Role::Backup)) => Some((0, 1)),
            (Some(Role::Backup), Some(Role::Primary)) => Some((1, 0)),
            _ => None,
        };
        if let Some((primary, backup)) = pair {
            let linked = world
                .run_until_true(2 * MINUTE_MS, |world| world.link_up(primary))
                .map_err(|error| violation("liveness", format!("{error:?}")))?;
            // Recordings damaged at rest are found by reading them (then fetched again); a
            // store that stopped unnoticed shows here, and is restarted next round.
            for index in 0..2 {
                world.play_back_all(index);
            }
            if linked && !(0..2).any(|index| world.storage_failed(index)) {
                return Ok((primary, backup));
            }
        }
        match roles {
            (Some(Role::Primary), Some(Role::Primary)) => {
                // A split brain: the operator demotes the primary of the older epoch.
                let epoch = |index: usize| world.replica(index).map(|r| r.state().epoch);
                let stale = if epoch(0) < epoch(1) { 0 } else { 1 };
                let _ = command(world, stale, Command::Demote, 2 * MINUTE_MS)?;
            }
            _ => {
                for index in 0..2 {
                    if role(world, index).is_some_and(|role| role != Role::Standalone) {
                        let _ = command(world, index, Command::Break, 2 * MINUTE_MS)?;
                    }
                }
                run(world, 30_000)?;
                let primary = world.site_target;
                let _ = establish(world, primary, other(primary));
            }
        }
    }
    let primary = primary_of(world).unwrap_or(world.site_target);
    Err(violation(
        "liveness",
        format!(
            "the operator could not make a pair again after the faults stopped: roles {:?}/{:?}, primary {primary}",
            role(world, 0),
            role(world, 1)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn seeds_draw_every_class_every_action_and_different_mixes() {
        let mut classes = BTreeSet::new();
        let mut actions = BTreeSet::new();
        let mut mixes = BTreeSet::new();
        for seed in 0..300 {
            let plan = SwarmPlan::draw(seed);
            assert_eq!(
                plan,
                SwarmPlan::draw(seed),
                "a plan depends on its seed only"
            );
            classes.extend(plan.classes.iter().map(|(class, _)| *class));
            for step in &plan.steps {
                let text = crate::replay::action_text(&step.action);
                actions.insert(text.split(' ').next().unwrap_or_default().to_string());
            }
            mixes.insert(plan.mix());
        }
        assert_eq!(classes.len(), FaultClass::ALL.len());
        let names: BTreeSet<&str> = FaultClass::ALL.iter().map(|class| class.name()).collect();
        assert_eq!(
            names.len(),
            FaultClass::ALL.len(),
            "class names are distinct"
        );
        for (index, row) in CLASSES.iter().enumerate() {
            assert_eq!(
                row.class as usize, index,
                "{} is out of the enum's order",
                row.name
            );
        }
        // Every action the plans can hold, by its replay name.
        assert_eq!(actions.len(), 28, "{actions:?}");
        assert_eq!(mixes.len(), 300);
    }
}
