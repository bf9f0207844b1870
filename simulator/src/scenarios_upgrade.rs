//! Upgrade scenarios: the synchronous flow (primary first, the site down during its install)
//! and the asynchronous flow (backup first, then the traffic moves to it by a shared IP switch,
//! a DNS swing or a NAT swing), a crash during an install or its store migration, and the
//! install time growing with the data stored.
//!
//! A seed's *workload* (the sessions and configuration before the upgrade, the clients arriving
//! at the site address during it, the network's faults) is drawn from the seed alone, so the
//! two flows can run it in two worlds made from the same seed and their site downtimes compared
//! (`docs/simulator.md`).

use dyad_core::replica::Command;
use dyad_store::FORMAT_VERSION;
use dyad_wire::{Role, SoftwareVersion, Version};

use crate::harness::{
    command, establish, final_checks, run, settle, software, violation, Outcome, MINUTE_MS,
};
use crate::rng::SimRng;
use crate::upgrade::{InstallCrash, InstallRun, INSTALL_RATE_BYTES_PER_MS};
use crate::violation::Violation;
use crate::world::{Swing, World};

const KIB: u64 = 1024;
/// The store format the old release wrote.
pub(crate) const OLD_STORE_FORMAT: u64 = 1;

/// The software every upgrade installs: a newer application and base.
pub(crate) fn new_software() -> SoftwareVersion {
    let old = software();
    SoftwareVersion {
        app: Version {
            minor: old.app.minor + 1,
            ..old.app
        },
        base: Version {
            minor: old.base.minor + 1,
            ..old.base
        },
    }
}

/// What a seed asks of an upgrade, whichever flow runs it.
#[derive(Clone, Debug)]
pub(crate) struct Workload {
    /// Recordings completed on the primary before the upgrade starts.
    initial_sizes: Vec<u64>,
    config_writes: u64,
    /// Clients arriving at the site address: (offset from the upgrade's start, size, length).
    clients: Vec<(u64, u64, u64)>,
    horizon_ms: u64,
    reset_per_mille: u64,
    delay_spike_per_mille: u64,
}

impl Workload {
    /// The workload of `seed`; `data_factor` multiplies the recordings stored before the upgrade.
    pub(crate) fn draw(seed: u64, data_factor: u64) -> Workload {
        let mut rng = SimRng::new(seed ^ 0x7570_6772_6164_6521);
        let size = |rng: &mut SimRng| match rng.below(10) {
            0 => 0,
            1..=6 => rng.between(1, 300 * KIB),
            _ => rng.between(1024 * KIB, 3 * 1024 * KIB),
        };
        let initial = rng.between(5, 20);
        let initial_sizes = (0..initial).map(|_| size(&mut rng) * data_factor).collect();
        let horizon_ms = rng.between(30, 45) * MINUTE_MS;
        let count = rng.between(10, 40);
        let clients = (0..count)
            .map(|_| {
                let at = rng.below(horizon_ms - 10 * MINUTE_MS);
                let length = rng.between(MINUTE_MS / 2, 8 * MINUTE_MS);
                (at, size(&mut rng) / 4, length)
            })
            .collect();
        Workload {
            initial_sizes,
            config_writes: rng.between(3, 12),
            clients,
            horizon_ms,
            reset_per_mille: rng.between(0, 10),
            delay_spike_per_mille: rng.between(0, 30),
        }
    }
}

/// What one upgrade flow measured.
#[derive(Clone, Debug, Default)]
pub(crate) struct FlowReport {
    pub downtime_ms: u64,
    pub refused: u64,
    pub installs: Vec<InstallRun>,
}

/// A pair on the old software and store format, `a` primary with the site, in sync, with the
/// workload's clients scheduled and its faults on. Returns `(a, b)`.
fn prepare(world: &mut World, workload: &Workload) -> Result<(usize, usize), Violation> {
    let mut psk = [0u8; 32];
    world.rng.fill(&mut psk);
    let a = world.add_appliance_with_format("appliance-a", psk, software(), OLD_STORE_FORMAT);
    let b = world.add_appliance_with_format("appliance-b", psk, software(), OLD_STORE_FORMAT);
    world.site_target = a;
    for size in &workload.initial_sizes {
        world.complete_session(a, *size);
    }
    for n in 0..workload.config_writes {
        let value = world.rng.next_u64().to_le_bytes();
        world.write_config(a, &format!("site/{n}"), Some(&value));
    }
    establish(world, a, b)?;
    settle(world, a, b)?;
    let start = world.now_ms;
    for (at, size, length) in &workload.clients {
        world.schedule_client(start + at, *size, *length);
    }
    world.network.reset_per_mille = workload.reset_per_mille;
    world.network.delay_spike_per_mille = workload.delay_spike_per_mille;
    world.site_downtime_ms = 0;
    world.sessions_refused = 0;
    Ok((a, b))
}

/// Operator step 1 and 2 of both flows: a last sync, then break (retried as the operator
/// would until both sides are standalone).
pub(crate) fn sync_and_break(world: &mut World, a: usize, b: usize) -> Result<(), Violation> {
    let _ = command(world, b, Command::SyncNow, 10 * MINUTE_MS)?;
    for attempt in 0..6 {
        let side = if attempt % 2 == 0 { a } else { b };
        let role = |world: &World, index| world.replica(index).map(|r| r.state().role);
        if role(world, side) != Some(Role::Standalone) {
            let _ = command(world, side, Command::Break, 2 * MINUTE_MS)?;
        }
        run(world, 5_000)?;
        if role(world, a) == Some(Role::Standalone) && role(world, b) == Some(Role::Standalone) {
            return Ok(());
        }
    }
    Err(violation(
        "break",
        "the pair did not become two standalone appliances".into(),
    ))
}

/// Establish as an operator does on a network that resets connections: a failed attempt is
/// retried, after breaking whatever half of a relationship it made.
pub(crate) fn establish_retrying(
    world: &mut World,
    primary: usize,
    backup: usize,
) -> Result<(), Violation> {
    let mut last = None;
    for _ in 0..5 {
        match establish(world, primary, backup) {
            Ok(()) => return Ok(()),
            Err(failed) => last = Some(failed),
        }
        run(world, 10_000)?;
        if crate::checks::paired(world, primary, backup).is_ok() {
            return Ok(());
        }
        for index in [primary, backup] {
            if world.replica(index).map(|r| r.state().role) != Some(Role::Standalone) {
                let _ = command(world, index, Command::Break, 2 * MINUTE_MS)?;
            }
        }
        run(world, 10_000)?;
    }
    Err(last.unwrap_or_else(|| violation("establish", "no attempt ran".into())))
}

/// Stop, install (maybe crashing), start; a rolled-back install is installed again.
pub(crate) fn upgrade_one(
    world: &mut World,
    index: usize,
    crash: InstallCrash,
    report: &mut FlowReport,
) -> Result<(), Violation> {
    world.stop(index);
    let installed = world.install(index, new_software(), FORMAT_VERSION, crash)?;
    report.installs.push(installed);
    if !installed.finished {
        // The machine comes back after a while; `dyad serve` recovers the install.
        let down = world.rng.between(10_000, 3 * MINUTE_MS);
        run(world, down)?;
    }
    world.start(index);
    let upgraded = world.appliances[index].software == new_software();
    if !upgraded {
        // Rolled back: the old version works; the operator installs the package again.
        world.stop(index);
        let again = world.install(index, new_software(), FORMAT_VERSION, InstallCrash::Never)?;
        report.installs.push(again);
        world.start(index);
    }
    let format = world
        .replica(index)
        .and_then(|replica| replica.store().format_version().ok());
    if world.appliances[index].software != new_software() || format != Some(FORMAT_VERSION) {
        return Err(violation(
            "install_atomic",
            format!(
                "{} runs {} on store format {format:?} after its upgrade",
                world.appliances[index].name, world.appliances[index].software
            ),
        ));
    }
    Ok(())
}

/// The end of both flows: the workload's clients all came, the pair converges, every property
/// holds, and both run the new software on the new store format.
fn finish(
    world: &mut World,
    primary: usize,
    backup: usize,
    workload: &Workload,
    start_ms: u64,
) -> Result<(), Violation> {
    let end = start_ms + workload.horizon_ms;
    if world.now_ms < end {
        run(world, end - world.now_ms)?;
    }
    settle(world, primary, backup)?;
    final_checks(world, primary, backup)
}

/// Synchronous: the primary is upgraded first and keeps its role; the site is down during its
/// install. `crash` cuts one install short: `(0 = the primary's, 1 = the backup's, where)`.
pub(crate) fn sync_flow(
    world: &mut World,
    workload: &Workload,
    crash: Option<(usize, InstallCrash)>,
) -> Result<FlowReport, Violation> {
    let (a, b) = prepare(world, workload)?;
    let start = world.now_ms;
    let crash_at = |n: usize| match crash {
        Some((which, point)) if which == n => point,
        _ => InstallCrash::Never,
    };
    let mut report = FlowReport::default();
    sync_and_break(world, a, b)?;
    upgrade_one(world, a, crash_at(0), &mut report)?;
    upgrade_one(world, b, crash_at(1), &mut report)?;
    establish_retrying(world, a, b)?;
    report.downtime_ms = world.site_downtime_ms;
    report.refused = world.sessions_refused;
    finish(world, a, b, workload, start)?;
    Ok(report)
}

/// Asynchronous: the backup is upgraded while the primary serves, the traffic moves to it by
/// `swing`, the old primary is upgraded and becomes its backup.
pub(crate) fn async_flow(
    world: &mut World,
    workload: &Workload,
    swing: Swing,
    crash: Option<(usize, InstallCrash)>,
) -> Result<FlowReport, Violation> {
    let (a, b) = prepare(world, workload)?;
    let start = world.now_ms;
    let crash_at = |n: usize| match crash {
        Some((which, point)) if which == n => point,
        _ => InstallCrash::Never,
    };
    let mut report = FlowReport::default();
    sync_and_break(world, a, b)?;
    upgrade_one(world, b, crash_at(0), &mut report)?;
    // Appliances on different versions never form a relationship.
    let backup_address = world.appliances[a].address.clone();
    let reverse_address = world.appliances[b].address.clone();
    let refused = command(
        world,
        b,
        Command::Establish {
            backup_address,
            reverse_address,
        },
        5 * MINUTE_MS,
    )?;
    if refused.is_ok() {
        return Err(violation(
            "versions_must_match",
            "an upgraded appliance established a relationship with one on the old version".into(),
        ));
    }
    match swing {
        Swing::Nat => {
            // The firewall's rule is changed as a separate step, after the install.
            let ticket = world.rng.between(MINUTE_MS, 10 * MINUTE_MS);
            run(world, ticket)?;
            world.swing_site(b, swing);
        }
        Swing::SharedIp | Swing::Dns { .. } => world.swing_site(b, swing),
    }
    // The operator waits a little before stopping the old primary (not always the whole TTL).
    let wait = match swing {
        Swing::Dns { ttl_ms } => world.rng.below(2 * ttl_ms),
        Swing::SharedIp | Swing::Nat => world.rng.below(2 * MINUTE_MS),
    };
    run(world, wait)?;
    upgrade_one(world, a, crash_at(1), &mut report)?;
    establish_retrying(world, b, a)?;
    report.downtime_ms = world.site_downtime_ms;
    report.refused = world.sessions_refused;
    finish(world, b, a, workload, start)?;
    Ok(report)
}

/// Runs the synchronous flow on the same seed's workload in a second world, folded into this
/// world's trace; its failures are reported as such.
fn sync_flow_elsewhere(world: &mut World, workload: &Workload) -> Result<FlowReport, Violation> {
    let mut other = World::new(world.seed);
    let result = sync_flow(&mut other, workload, None);
    world.absorb(&other);
    result.map_err(|found| Violation {
        property: found.property,
        details: format!("in the synchronous flow's world: {}", found.details),
    })
}

fn dns_ttl(world: &mut World) -> u64 {
    world.rng.between(30, 300) * 1000
}

fn compare_async_with_sync(world: &mut World, swing: Swing) -> Result<Outcome, Violation> {
    let workload = Workload::draw(world.seed, 1);
    let asynchronous = async_flow(world, &workload, swing, None)?;
    let synchronous = sync_flow_elsewhere(world, &workload)?;
    if asynchronous.downtime_ms >= synchronous.downtime_ms {
        return Err(violation(
            "async_downtime_below_sync",
            format!(
                "asynchronous ({swing:?}) downtime {} ms is not below the synchronous flow's {} ms for the same workload",
                asynchronous.downtime_ms, synchronous.downtime_ms
            ),
        ));
    }
    Ok(Outcome {
        notes: vec![format!(
            "site downtime: asynchronous ({swing:?}) {:.1} s, {} clients refused; synchronous {:.1} s, {} clients refused",
            asynchronous.downtime_ms as f64 / 1000.0,
            asynchronous.refused,
            synchronous.downtime_ms as f64 / 1000.0,
            synchronous.refused
        )],
    })
}

pub(crate) fn sync_upgrade_primary_first_site_down_during_its_install(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let workload = Workload::draw(world.seed, 1);
    let report = sync_flow(world, &workload, None)?;
    let primary_install = report.installs[0].duration_ms;
    // The site is down exactly while the primary installs (its stop and start are instants).
    if report.downtime_ms != primary_install {
        return Err(violation(
            "sync_downtime_is_the_primary_install",
            format!(
                "site downtime {} ms, but the primary's install took {primary_install} ms",
                report.downtime_ms
            ),
        ));
    }
    Ok(Outcome {
        notes: vec![format!(
            "site downtime {:.1} s ({} clients refused)",
            report.downtime_ms as f64 / 1000.0,
            report.refused
        )],
    })
}

pub(crate) fn async_upgrade_shared_ip_less_downtime_than_sync(
    world: &mut World,
) -> Result<Outcome, Violation> {
    compare_async_with_sync(world, Swing::SharedIp)
}

pub(crate) fn async_upgrade_dns_swing_stale_clients_less_downtime_than_sync(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let ttl_ms = dns_ttl(world);
    compare_async_with_sync(world, Swing::Dns { ttl_ms })
}

pub(crate) fn async_upgrade_nat_swing_less_downtime_than_sync(
    world: &mut World,
) -> Result<Outcome, Violation> {
    compare_async_with_sync(world, Swing::Nat)
}

/// A crash (power loss) at a random point of one install, including in the middle of the store
/// migration with failing writes: the next start completes or rolls back (never a mix), a
/// rolled-back install is run again, and the flow ends with every property holding.
pub(crate) fn crash_during_install_or_migration_recovers_old_or_new(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let workload = Workload::draw(world.seed, 1);
    let point =
        InstallCrash::ALL[world.rng.between(1, InstallCrash::ALL.len() as u64 - 1) as usize];
    let which = world.rng.below(2) as usize;
    let synchronous = world.rng.chance(1, 2);
    let report = if synchronous {
        sync_flow(world, &workload, Some((which, point)))?
    } else {
        let ttl_ms = dns_ttl(world);
        async_flow(
            world,
            &workload,
            Swing::Dns { ttl_ms },
            Some((which, point)),
        )?
    };
    if world.install_recoveries.is_empty() {
        return Err(violation(
            "install_atomic",
            "an install was cut short but no recovery ran at the next start".into(),
        ));
    }
    Ok(Outcome {
        notes: vec![format!(
            "{} flow, install {which} crashed {point:?}: recovery {:?}; {} installs run; downtime {:.1} s",
            if synchronous { "synchronous" } else { "asynchronous" },
            world.install_recoveries,
            report.installs.len(),
            report.downtime_ms as f64 / 1000.0
        )],
    })
}

/// The same workload with its stored recordings doubled: the synchronous flow's downtime (the
/// primary's install) grows by the extra data at the install rate.
pub(crate) fn upgrade_time_proportional_to_data_stored(
    world: &mut World,
) -> Result<Outcome, Violation> {
    let small = Workload::draw(world.seed, 1);
    let large = Workload::draw(world.seed, 2);
    let first = sync_flow(world, &small, None)?;
    let mut other = World::new(world.seed);
    let second = sync_flow(&mut other, &large, None);
    world.absorb(&other);
    let second = second?;
    let (stored_small, stored_large) = (
        first.installs[0].stored_bytes,
        second.installs[0].stored_bytes,
    );
    let expected = (stored_large - stored_small.min(stored_large)) / INSTALL_RATE_BYTES_PER_MS;
    let grew = second.downtime_ms.saturating_sub(first.downtime_ms);
    if stored_large <= stored_small || grew.abs_diff(expected) > expected / 100 + 1 {
        return Err(violation(
            "install_time_proportional_to_data",
            format!(
                "stored {stored_small} then {stored_large} bytes; downtime {} then {} ms (grew {grew} ms, expected {expected} ms)",
                first.downtime_ms, second.downtime_ms
            ),
        ));
    }
    Ok(Outcome {
        notes: vec![format!(
            "stored {:.1} MiB: downtime {:.1} s; stored {:.1} MiB: downtime {:.1} s",
            stored_small as f64 / 1048576.0,
            first.downtime_ms as f64 / 1000.0,
            stored_large as f64 / 1048576.0,
            second.downtime_ms as f64 / 1000.0
        )],
    })
}
