//! Seeds on which the simulator found engine bugs, kept so each bug stays fixed. Each test
//! names the scenario and seed, what went wrong, and the fix.

use dyad_sim::runner;

fn passes(scenario: &str, seed: u64) {
    let scenario = runner::find(scenario).expect("the scenario exists");
    let report = runner::run(scenario, seed);
    if let Err(violation) = &report.result {
        panic!(
            "{} seed {seed}: {} violated: {}\n  replay: {}",
            scenario.name,
            violation.property,
            violation.details,
            report.replay_command()
        );
    }
}

/// A replica whose store failed (fsync error, terminal) kept reporting its sync and dial
/// timers as due but did nothing on them, so its driver spun on `handle_timeout` forever (the
/// world's step budget ran out at the same instant). Fix: `next_timeout` reports only waiting
/// commands' deadlines once the store has failed.
#[test]
fn fsync_error_on_the_backup_does_not_spin_the_driver() {
    passes("backup_fsync_errors_stop_the_store_restart_converges", 1);
}

/// The same spin, reached through a full disk; and then Sync Now never returned: a terminal
/// storage failure dropped the running sync without telling the commands waiting on it. Fix:
/// the failure completes every waiting Sync Now with the storage error (which says the disk is
/// full).
#[test]
fn full_disk_on_the_backup_does_not_spin_the_driver() {
    passes(
        "backup_disk_full_sync_fails_clearly_then_space_freed_converges",
        1,
    );
}

/// A wall clock set back by hours delayed the next periodic sync by as much, so the pair did
/// not converge within the liveness bound. Fix: the driver hands a backwards step to the
/// replica at once, and the replica moves its timers back by the same amount.
#[test]
fn a_clock_set_back_does_not_delay_periodic_sync() {
    passes("clock_skew_drift_and_jumps_do_not_break_sync", 1);
}

/// A recording with two damaged chunks: a read found the first and withdrew the recording for
/// re-fetch, but kept every other chunk as good, so after re-fetching one chunk it was listed
/// again with the second still damaged. Fix: a withdrawal re-verifies the chunks it keeps.
#[test]
fn a_withdrawn_recording_is_repaired_whole() {
    passes("backup_bit_flips_detected_by_reads_and_refetched", 76);
}

/// A planned swap whose answer was lost: the old primary had stepped down (backup in the new
/// epoch) while the promoting backup had not heard so. On the next link each side classified
/// it with the other's stale Hello: the promoting side completed the swap and bound the link,
/// the old primary took it for a disagreement (both backups) and refused the new primary's
/// requests forever. Fix: completing a lost swap reconnects, and the side that stepped down
/// closes such a link instead of reporting a disagreement.
#[test]
fn a_lost_swap_answer_completes_and_both_sides_reconnect() {
    passes("planned_role_swap_under_faults", 320);
}

/// New hardware restored from a settings backup gave its first sessions the ids the old
/// hardware had already used after the backup was taken (sessions that had reached the peer):
/// the same id with two contents, refused by the peer, so neither side ever held the union.
/// First fix: a restore continued 2^20 above everything the backup knew. Now (issue 15) the
/// restored hardware takes a new node id, so its session ids cannot collide at all.
#[test]
fn restored_backup_hardware_never_reuses_a_session_id() {
    passes(
        "hardware_migration_of_backup_sessions_continue_no_id_reused",
        53,
    );
}

/// The same reuse on a restored primary: its site sessions after the backup reached the backup
/// by sync, and the new hardware numbered its next sessions from the backup's floor.
#[test]
fn restored_primary_hardware_never_reuses_a_session_id() {
    passes(
        "hardware_migration_of_primary_sessions_continue_no_id_reused",
        46,
    );
}

/// Runs a replay file kept in `tests/replays/`; it must pass.
fn replay_passes(file: &str) {
    let path = format!("{}/tests/replays/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("the replay file is in the repository");
    let replay = dyad_sim::replay::Replay::parse(&text).expect("the kept replay file parses");
    let report = runner::run_plan(replay.seed, &replay.plan);
    if let Err(violation) = &report.result {
        panic!(
            "{file}: {} violated: {}\n  replay: cargo run --release -p dyad-sim -- --replay {path}",
            violation.property, violation.details
        );
    }
}

/// Swarm seed 1871, shrunk: fsync errors stopped the store of the appliance that then
/// established as primary; its new role was never saved, and the swarm's heal never restarted
/// a store that stopped after the faults ended, so the pair stayed stale. Fix (the heal): every
/// round restarts a stopped store, as its status tells the operator.
#[test]
fn swarm_heal_restarts_a_store_that_stopped_late() {
    replay_passes("swarm-1871-heal-restarts-stopped-store.replay");
}

/// Swarm seed 5940, shrunk: a store stopped by fsync errors without its status showing it yet
/// listed nothing, so the heal's reads found no damage; restarted later, it listed a recording
/// with flipped bits that nobody read again. Fix (the heal): recordings are read once the
/// stores are healthy and the pair is linked.
#[test]
fn swarm_heal_reads_recordings_once_the_stores_are_healthy() {
    replay_passes("swarm-5940-reads-after-stores-healthy.replay");
}

/// Swarm seed 1000254, shrunk: bad sectors under the primary's copies of sessions the backup
/// held, then the backup moved to new hardware. The world counted the primary's unreadable
/// copies as intact (their bytes still hashed to the root), so it expected sessions that only
/// damaged media held; and a bad range reaching past a file's end was never written over, so
/// it counted as damage forever. Fix (the world): unreadable files are not intact, and only
/// unreadable bytes inside the file count.
#[test]
fn swarm_unreadable_copies_are_not_counted_as_surviving() {
    replay_passes("swarm-1000254-bad-sector-only-copy-after-migration.replay");
}

/// Swarm seed 1004325, shrunk: both appliances moved to new hardware (each restored from its
/// settings backup, each with a predecessor), with a forced promotion and a break between.
/// Each side sent `Successor` whenever it classified a link, and re-classified a link whenever
/// a `Successor` arrived from an already re-pinned peer: on a link neither could bind (the
/// roles did not match), the two echoed `Successor` at the same instant for ever, on every new
/// link, and the run never advanced. Fix (the replica): `Successor` is sent once per link.
#[test]
fn two_restored_appliances_do_not_echo_successor_notices() {
    replay_passes("swarm-1004325-two-restored-appliances-successor-echo.replay");
}
