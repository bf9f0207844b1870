//! The registry of scenarios: every named, seeded test the simulator runs, in the order
//! `--list` prints them and a sweep takes them.
//!
//! Only the list lives here. Each family of scenarios has a module of its own
//! (`scenarios_sync`, `scenarios_storage`, `scenarios_roles`, `scenarios_upgrade`,
//! `scenarios_migration`, and the swarm in `crate::swarm`), built on the shared harness
//! (`crate::harness`); the registry depends on them, never the reverse, so adding a scenario
//! is one function in its family and one entry here.

pub use crate::harness::Outcome;
use crate::violation::Violation;
use crate::world::World;

/// A scenario's body: it plays its script on a fresh world made from the seed.
type ScenarioFn = fn(&mut World) -> Result<Outcome, Violation>;

/// A named, seeded test of the engine.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub run: ScenarioFn,
}

/// Every scenario, in the order `--list` prints them.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "establish_first_sync_after_delay",
        about: "establish; nothing moves before the first-sync delay; then the backup holds everything",
        run: crate::scenarios_sync::establish_first_sync_after_delay,
    },
    Scenario {
        name: "sync_now_during_link_resets",
        about: "Sync Now while the network resets connections; it finishes once they stop",
        run: crate::scenarios_sync::sync_now_during_link_resets,
    },
    Scenario {
        name: "periodic_sync_under_partitions",
        about: "sessions and writes keep coming; partitions come and go; periodic sync catches up",
        run: crate::scenarios_sync::periodic_sync_under_partitions,
    },
    Scenario {
        name: "break_sessions_both_sides_reestablish",
        about: "break; sessions and writes on both sides; re-establish either way round: union on both",
        run: crate::scenarios_sync::break_sessions_both_sides_reestablish,
    },
    Scenario {
        name: "crash_mid_transfer_resumes_without_resending",
        about: "crash either appliance during a transfer; the transfer resumes, re-sending at most one window",
        run: crate::scenarios_sync::crash_mid_transfer_resumes_without_resending,
    },
    Scenario {
        name: "fsync_error_never_makes_unsynced_chunks_durable",
        about: "one fsync fails mid-transfer (reported once, pages never written); restart, power loss: nothing unverified listed",
        run: crate::scenarios_storage::fsync_error_never_makes_unsynced_chunks_durable,
    },
    Scenario {
        name: "read_errors_damage_one_recording_not_the_store",
        about: "bad sectors under backup recordings: listed damaged, the store goes on, re-fetched intact",
        run: crate::scenarios_storage::read_errors_damage_one_recording_not_the_store,
    },
    Scenario {
        name: "damaged_recording_without_a_peer_is_kept_and_shown",
        about: "verify on a standalone appliance: the only copy stays listed as damaged with its bytes, never served",
        run: crate::scenarios_storage::damaged_recording_without_a_peer_is_kept_and_shown,
    },
    Scenario {
        name: "power_lost_inside_operations_and_recovery",
        about: "power lost between two disk operations of a store operation, and again inside recovery",
        run: crate::scenarios_storage::power_lost_inside_operations_and_recovery,
    },
    Scenario {
        name: "backup_bit_flips_detected_by_reads_and_refetched",
        about: "bits rot in the backup's recordings and a faulty sender flips chunk bits; reads detect, sync re-fetches, nothing corrupt is served",
        run: crate::scenarios_sync::backup_bit_flips_detected_by_reads_and_refetched,
    },
    Scenario {
        name: "backup_fsync_errors_stop_the_store_restart_converges",
        about: "fsync fails on the backup: its store stops (terminal); the operator restarts it and the pair converges",
        run: crate::scenarios_sync::backup_fsync_errors_stop_the_store_restart_converges,
    },
    Scenario {
        name: "backup_disk_full_sync_fails_clearly_then_space_freed_converges",
        about: "the backup's disk fills: the sync fails saying so; space is freed and the pair converges",
        run: crate::scenarios_sync::backup_disk_full_sync_fails_clearly_then_space_freed_converges,
    },
    Scenario {
        name: "clock_skew_drift_and_jumps_do_not_break_sync",
        about: "clocks hours apart, drifting, jumping both ways during syncs; the pair still converges in time",
        run: crate::scenarios_sync::clock_skew_drift_and_jumps_do_not_break_sync,
    },
    Scenario {
        name: "pause_either_side_links_time_out_then_recover",
        about: "either appliance freezes mid-sync (links idle out after 45 s), resumes, and the pair converges",
        run: crate::scenarios_sync::pause_either_side_links_time_out_then_recover,
    },
    Scenario {
        name: "one_way_partition_stalls_then_resets_and_recovers",
        about: "packets dropped in one direction only: the link stalls, times out, and sync recovers after the heal",
        run: crate::scenarios_sync::one_way_partition_stalls_then_resets_and_recovers,
    },
    Scenario {
        name: "crash_during_establish_then_retry_converges",
        about: "either side loses power during establish; the operator repairs the half-made relationship and the pair converges",
        run: crate::scenarios_sync::crash_during_establish_then_retry_converges,
    },
    Scenario {
        name: "both_sides_crash_sessions_in_progress_cut_off_kept",
        about: "both appliances lose power mid-transfer with client sessions running; cut-off sessions are kept and replicated",
        run: crate::scenarios_sync::both_sides_crash_sessions_in_progress_cut_off_kept,
    },
    Scenario {
        name: "async_upgrade_old_backup_becomes_primary",
        about: "break; sessions and writes on both; the old backup establishes as primary: union, its config, a conflict record",
        run: crate::scenarios_roles::async_upgrade_old_backup_becomes_primary,
    },
    Scenario {
        name: "planned_role_swap_under_faults",
        about: "promote the backup (final sync, then swap) while connections reset; only the new primary writes",
        run: crate::scenarios_roles::planned_role_swap_under_faults,
    },
    Scenario {
        name: "forced_promotion_split_brain_then_demote",
        about: "forced promotion in a partition; both primary; split brain reported, nothing overwritten; demote resolves",
        run: crate::scenarios_roles::forced_promotion_split_brain_then_demote,
    },
    Scenario {
        name: "stale_dns_sessions_on_old_primary_after_swing",
        about: "after a swap, stale-DNS clients complete sessions on the old primary; they reach the new one",
        run: crate::scenarios_roles::stale_dns_sessions_on_old_primary_after_swing,
    },
    Scenario {
        name: "sync_upgrade_primary_first_site_down_during_its_install",
        about: "synchronous upgrade (format 1 to 2): the site is down exactly while the primary installs; every session kept",
        run: crate::scenarios_upgrade::sync_upgrade_primary_first_site_down_during_its_install,
    },
    Scenario {
        name: "async_upgrade_shared_ip_less_downtime_than_sync",
        about: "asynchronous upgrade, shared IP switch: less site downtime than the synchronous flow on the same workload",
        run: crate::scenarios_upgrade::async_upgrade_shared_ip_less_downtime_than_sync,
    },
    Scenario {
        name: "async_upgrade_dns_swing_stale_clients_less_downtime_than_sync",
        about: "asynchronous upgrade, DNS swing (stale answers until the TTL): stale-client sessions kept, less downtime than synchronous",
        run: crate::scenarios_upgrade::async_upgrade_dns_swing_stale_clients_less_downtime_than_sync,
    },
    Scenario {
        name: "async_upgrade_nat_swing_less_downtime_than_sync",
        about: "asynchronous upgrade, NAT swing as a separate step after the install: less downtime than synchronous",
        run: crate::scenarios_upgrade::async_upgrade_nat_swing_less_downtime_than_sync,
    },
    Scenario {
        name: "crash_during_install_or_migration_recovers_old_or_new",
        about: "power loss at any point of an install or its store migration: the next start completes or rolls back, never a mix",
        run: crate::scenarios_upgrade::crash_during_install_or_migration_recovers_old_or_new,
    },
    Scenario {
        name: "upgrade_time_proportional_to_data_stored",
        about: "the same workload with twice the data stored: the synchronous downtime grows by the extra data at the install rate",
        run: crate::scenarios_upgrade::upgrade_time_proportional_to_data_stored,
    },
    Scenario {
        name: "hardware_migration_of_backup_sessions_continue_no_id_reused",
        about: "the backup moves to new hardware from a settings backup while sessions continue, with resets and crashes: nothing lost, no id reused",
        run: crate::scenarios_migration::hardware_migration_of_backup_sessions_continue_no_id_reused,
    },
    Scenario {
        name: "hardware_migration_of_primary_sessions_continue_no_id_reused",
        about: "the primary moves to new hardware (swap first, restored as primary, or break first) with faults: nothing lost, no id reused",
        run: crate::scenarios_migration::hardware_migration_of_primary_sessions_continue_no_id_reused,
    },
    Scenario {
        name: "restored_primary_writes_config_backup_follows_or_records_conflict",
        about: "the primary writes after its settings backup and dies; restored hardware writes again: the backup follows it and keeps every value it replaced in a conflict record",
        run: crate::scenarios_migration::restored_primary_writes_config_backup_follows_or_records_conflict,
    },
    Scenario {
        name: "old_hardware_returns_after_restore_is_refused_not_merged",
        about: "the old primary was only unreachable while its backup was restored elsewhere: when it returns it is refused, told its successor, and nothing it wrote is merged",
        run: crate::scenarios_migration::old_hardware_returns_after_restore_is_refused_not_merged,
    },
    Scenario {
        name: "break_reestablish_few_hundred_sessions_64mib",
        about: "an hour: a few hundred client sessions (64 MiB) on both sides across a break; re-establish reconciles the union",
        run: crate::scenarios_sync::break_reestablish_few_hundred_sessions_64mib,
    },
    Scenario {
        name: "swarm",
        about: "the seed draws which fault classes are on, their rates and an operator script; heal; every property and the clients' updates",
        run: crate::swarm::swarm_scenario,
    },
];
