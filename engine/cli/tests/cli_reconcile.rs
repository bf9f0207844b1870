//! The reconciliation of an asynchronous upgrade with real processes, then both kinds of role
//! swap, driven only through the `dyad` binary against two `dyad serve` processes on 127.0.0.1.
//!
//! A pair is established A→B and synced, then broken. While broken, each appliance takes its
//! own recordings (`DYAD_ITEST_RECONCILE_BYTES` on each side) and configuration that differs
//! from the other's. The old backup B then establishes as primary with A as its backup (the
//! shape of an asynchronous upgrade). The sync moves recordings both ways at once; B is
//! SIGKILLed once both directions have started, restarted, and Sync Now is repeated until it
//! completes. Both must then hold the union of the sessions and B's configuration, A's replaced
//! configuration must be in its conflict record, and each side must have sent little more than
//! what the other lacked: at most 1.05 × the missing recording bytes + 64 KiB + 1 KiB per
//! missing session + one transfer window for the interruption, counted both as recording bytes
//! (`bytes_sent`) and as every frame byte (`wire_bytes_sent`).
//!
//! Then a planned swap (`dyad promote` on A), and a forced one: A stopped, `dyad promote
//! --force` on B, A restarted while it still believes it is primary. Both must report the split
//! brain with both epochs, change neither configuration, and after `dyad demote` on A and a Sync
//! Now, A is B's backup with the union of the sessions and its own differing configuration in
//! its conflict record.
//!
//! `DYAD_ITEST_RECONCILE_BYTES` accepts `1073741824`, `512M`, `4G`; at least `256M`, so that
//! the kill falls in the middle of both transfers.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{
    conflict_has, env_bytes, keygen, mib, number, path_str, spawn_sync_now, wait_until,
    window_bytes, Appliance, Server,
};

/// The recordings each side takes while the relationship is broken.
const DEFAULT_SIDE_BYTES: u64 = 500 << 20;
/// Sessions are about this large (the last one of a side takes the remainder).
const SESSION_BYTES: u64 = 64 << 20;
/// A sync of the whole data set finishes within this, even on a slow CI machine.
const SYNC_TIMEOUT: Duration = Duration::from_secs(900);
/// A role change or a link coming up or down is seen within this.
const ROLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Sync Now is repeated at most this many times after the interruption.
const SYNC_ATTEMPTS_MAX: u32 = 5;
/// The allowance for metadata over the missing recording bytes.
const METADATA_BYTES: u64 = 64 << 10;
const METADATA_PER_SESSION_BYTES: u64 = 1 << 10;
/// Configuration both hold from the first sync.
const SHARED_CONFIG: [(&str, &str); 3] = [
    ("site/name", "Reconcile Site"),
    ("site/retention_days", "90"),
    ("policy/recording", "all"),
];

/// Session sizes adding up to `total`, none a whole number of chunks except by accident.
fn session_sizes(total: u64) -> Vec<u64> {
    let count = (total / SESSION_BYTES).clamp(2, 64);
    let each = total / count - 4321;
    let mut sizes = vec![each; count as usize - 1];
    sizes.push(total - each * (count - 1));
    sizes
}

fn lines(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(str::to_string)
        .collect()
}

fn timed<T>(what: &str, run: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let value = run();
    eprintln!(
        "[cli_reconcile] {what}: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    value
}

/// `dyad sync-now` until one run completes (a link may still be coming up after a restart).
fn sync_now_until_complete(appliance: &Appliance) -> String {
    let mut failures = Vec::new();
    for _ in 0..SYNC_ATTEMPTS_MAX {
        let output = appliance.run_within(&["sync-now"], &[], SYNC_TIMEOUT);
        if output.status.success() && output.stdout.contains("sync complete") {
            return output.stdout;
        }
        failures.push(format!(
            "{}: {}{}",
            output.status, output.stdout, output.stderr
        ));
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!(
        "Sync Now on {} did not complete in {SYNC_ATTEMPTS_MAX} attempts:\n{}",
        appliance.name,
        failures.join("\n")
    );
}

fn conflicts(appliance: &Appliance) -> Value {
    let output = appliance
        .run(&["conflicts", "export"], &[])
        .ok("dyad conflicts export");
    serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("conflicts export is not JSON ({error}): {}", output.stdout))
}

/// Both send counters of a running server, read from its admin socket.
fn counters(appliance: &Appliance) -> (u64, u64) {
    let status = appliance
        .status_from_socket()
        .unwrap_or_else(|| panic!("{} answers on its admin socket", appliance.name));
    (
        number(&status, "/bytes_sent"),
        number(&status, "/wire_bytes_sent"),
    )
}

fn text(status: &Value, pointer: &str) -> String {
    status
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// Waits until `appliance` runs in `role` with its link to the peer up.
fn wait_role_linked(appliance: &Appliance, role: &str, peer_role: &str) {
    wait_role_linked_within(appliance, role, peer_role, ROLE_TIMEOUT);
}

fn wait_role_linked_within(appliance: &Appliance, role: &str, peer_role: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let status = appliance.status_from_socket();
        if let Some(status) = &status {
            if text(status, "/role") == role && text(status, "/link/peer_role") == peer_role {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} did not become {role} linked to a {peer_role} within {timeout:?}; last status: {status:#?}",
            appliance.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What one side sent, against what its peer lacked.
struct Sent {
    name: String,
    recording_bytes: u64,
    wire_bytes: u64,
    missing_bytes: u64,
    missing_sessions: u64,
}

impl Sent {
    fn allowance_bytes(&self) -> u64 {
        self.missing_bytes
            + self.missing_bytes / 20
            + METADATA_BYTES
            + METADATA_PER_SESSION_BYTES * self.missing_sessions
            + window_bytes()
    }

    fn check(&self) {
        eprintln!(
            "[cli_reconcile] {} sent {} recording bytes ({:.2} MiB over the {} missing), {} frame bytes ({:.2} MiB over), allowance {}",
            self.name,
            self.recording_bytes,
            mib(self.recording_bytes) - mib(self.missing_bytes),
            self.missing_bytes,
            self.wire_bytes,
            mib(self.wire_bytes) - mib(self.missing_bytes),
            self.allowance_bytes()
        );
        assert!(
            self.recording_bytes >= self.missing_bytes,
            "{} sent every missing recording byte at least once",
            self.name
        );
        for (what, bytes) in [
            ("recording bytes", self.recording_bytes),
            ("frame bytes", self.wire_bytes),
        ] {
            assert!(
                bytes <= self.allowance_bytes(),
                "{} sent {bytes} {what} for {} missing bytes in {} sessions: over the allowance of {}",
                self.name,
                self.missing_bytes,
                self.missing_sessions,
                self.allowance_bytes()
            );
        }
    }
}

#[test]
fn asynchronous_upgrade_reconciles_both_ways_then_roles_swap_and_split_brain_resolves() {
    let test_started = Instant::now();
    let side_bytes = env_bytes("DYAD_ITEST_RECONCILE_BYTES", DEFAULT_SIDE_BYTES);
    assert!(
        side_bytes >= 256 << 20,
        "DYAD_ITEST_RECONCILE_BYTES must be at least 256M"
    );
    let temp = tempfile::Builder::new()
        .prefix("dyad-itest-reconcile-")
        .tempdir()
        .expect("a temporary folder");
    let root = temp.path();
    let key = root.join("pair.key");
    keygen(&key);
    let a = Appliance::init(root, "itest-a", &key, &[]);
    let b = Appliance::init(root, "itest-b", &key, &[]);

    // The first relationship, A→B, with a little data, synced.
    for (name, value) in SHARED_CONFIG {
        a.config_set(name, value);
    }
    a.import_recording(root, (3 << 20) + 5, 1);
    a.import_recording(root, (1 << 20) + 9, 2);
    let server_a = a.serve();
    let server_b = b.serve();
    a.run(
        &["establish"],
        &["--backup", &b.address(), "--reverse", &a.address()],
    )
    .ok("dyad establish A→B");
    sync_now_until_complete(&b);
    let shared_sessions = lines(&a.session_list());
    assert_eq!(shared_sessions.len(), 2);
    assert_eq!(lines(&b.session_list()), shared_sessions);

    // Broken: each side takes its own recordings and configuration.
    a.run(&["break"], &[]).ok("dyad break");
    wait_until("B to hear of the break", ROLE_TIMEOUT, || {
        (b.role() == "standalone").then_some(())
    });
    let sizes_a = session_sizes(side_bytes);
    let sizes_b = session_sizes(side_bytes + 12345);
    timed(
        &format!(
            "importing {} + {} sessions, {:.0} + {:.0} MiB",
            sizes_a.len(),
            sizes_b.len(),
            mib(sizes_a.iter().sum()),
            mib(sizes_b.iter().sum())
        ),
        || {
            for (index, size) in sizes_a.iter().enumerate() {
                a.import_recording(root, *size, 100 + index as u64);
            }
            for (index, size) in sizes_b.iter().enumerate() {
                b.import_recording(root, *size, 200 + index as u64);
            }
        },
    );
    a.config_set("site/retention_days", "30");
    a.config_set("site/a_only", "from A");
    b.config_set("site/retention_days", "45");
    b.config_set("site/b_only", "from B");
    b.run(&["config", "delete"], &["policy/recording"])
        .ok("dyad config delete on B");
    let config_a_before = a.config_list();
    let config_b = b.config_list();
    assert_ne!(config_a_before, config_b);
    let sessions_a_before = lines(&a.session_list());
    let sessions_b_before = lines(&b.session_list());
    let union: BTreeSet<String> = sessions_a_before
        .union(&sessions_b_before)
        .cloned()
        .collect();
    assert_eq!(union.len(), 2 + sizes_a.len() + sizes_b.len());

    // The old backup establishes as primary, with the old primary as its backup.
    let (a_recording_base, a_wire_base) = counters(&a);
    let (b_recording_base, b_wire_base) = counters(&b);
    timed("establish B→A", || {
        b.run(
            &["establish"],
            &["--backup", &a.address(), "--reverse", &b.address()],
        )
        .ok("dyad establish B→A")
    });
    wait_role_linked(&b, "primary", "backup");
    wait_role_linked(&a, "backup", "primary");

    // Sync Now on A pulls from B while B pulls from A. B is killed once both have sent two
    // windows, so that both directions are interrupted in the middle.
    let sync_started = Instant::now();
    let mut sync_now = spawn_sync_now(&a, root);
    let threshold = 2 * window_bytes();
    let (a_sent_at_kill, b_recording_before_kill, b_wire_before_kill) = wait_until(
        "both directions to have sent two windows",
        SYNC_TIMEOUT,
        || {
            let (a_sent, _) = counters(&a);
            let (b_sent, b_wire) = counters(&b);
            (a_sent - a_recording_base >= threshold && b_sent - b_recording_base >= threshold)
                .then_some((a_sent, b_sent, b_wire))
        },
    );
    server_b.kill();
    eprintln!(
        "[cli_reconcile] killed B after {:.1} s: A had sent {:.0} MiB, B {:.0} MiB",
        sync_started.elapsed().as_secs_f64(),
        mib(a_sent_at_kill - a_recording_base),
        mib(b_recording_before_kill - b_recording_base)
    );
    assert!(
        a_sent_at_kill - a_recording_base < side_bytes
            && b_recording_before_kill - b_recording_base < side_bytes,
        "the kill came before either direction finished"
    );
    let interrupted = sync_now.wait_exit(ROLE_TIMEOUT);
    assert!(
        !interrupted.success(),
        "Sync Now cannot succeed when its peer was killed in the middle"
    );

    let server_b = b.serve();
    let completed = timed("Sync Now after the restart", || sync_now_until_complete(&a));
    eprintln!(
        "[cli_reconcile] reconciliation, kill included: {:.1} s; {}",
        sync_started.elapsed().as_secs_f64(),
        completed.lines().last().unwrap_or("")
    );

    let sessions_a = lines(&a.session_list());
    assert_eq!(sessions_a, union, "A holds the union");
    assert_eq!(lines(&b.session_list()), union, "B holds the union");
    assert_eq!(
        b.config_list(),
        config_b,
        "the new primary kept its configuration"
    );
    assert_eq!(
        a.config_list(),
        config_b,
        "the backup follows the new primary"
    );
    let a_conflicts = conflicts(&a);
    for (key, local, incoming) in [
        ("site/retention_days", Some("30"), Some("45")),
        ("site/a_only", Some("from A"), None),
        ("site/b_only", None, Some("from B")),
        ("policy/recording", Some("all"), None),
    ] {
        assert!(
            conflict_has(&a_conflicts, key, local, incoming),
            "A's replaced {key} is in its conflict record: {a_conflicts:#}"
        );
    }

    // The bytes each side sent against what the other lacked. B's counters restarted at 0.
    let (a_recording_end, a_wire_end) = counters(&a);
    let (b_recording_end, b_wire_end) = counters(&b);
    let sent_by_a = Sent {
        name: "A".into(),
        recording_bytes: a_recording_end - a_recording_base,
        wire_bytes: a_wire_end - a_wire_base,
        missing_bytes: sizes_a.iter().sum(),
        missing_sessions: sizes_a.len() as u64,
    };
    let sent_by_b = Sent {
        name: "B (before the kill + after the restart)".into(),
        recording_bytes: b_recording_before_kill - b_recording_base + b_recording_end,
        wire_bytes: b_wire_before_kill - b_wire_base + b_wire_end,
        missing_bytes: sizes_b.iter().sum(),
        missing_sessions: sizes_b.len() as u64,
    };
    sent_by_a.check();
    sent_by_b.check();

    // A planned swap: A (the backup) becomes primary again.
    let promoted = timed("planned promote on A", || {
        a.run_within(&["promote"], &[], SYNC_TIMEOUT)
            .ok("dyad promote on A")
    });
    eprintln!("[cli_reconcile] {}", promoted.stdout.trim());
    wait_role_linked(&a, "primary", "backup");
    wait_role_linked(&b, "backup", "primary");
    let config_before_refusal = b.config_list();
    let refused = b
        .run(&["config", "set"], &["site/retention_days", "1"])
        .failed("config set on B, now the backup");
    assert!(
        refused.contains("backup"),
        "the refusal says why: {refused}"
    );
    assert_eq!(b.config_list(), config_before_refusal);
    a.config_set("site/after_swap", "from A");

    // A forced promotion: A stops; B is promoted on the operator's word.
    server_a.kill();
    wait_until("B to see the link drop", ROLE_TIMEOUT, || {
        b.status_from_socket()?
            .get("link")
            .is_some_and(Value::is_null)
            .then_some(())
    });
    let refused = b
        .run(&["promote"], &[])
        .failed("promote without --force while A is down");
    assert!(
        refused.contains("--force"),
        "the refusal names --force: {refused}"
    );
    let forced = b.run(&["promote"], &["--force"]).ok("dyad promote --force");
    eprintln!("[cli_reconcile] {}", forced.stdout.trim());
    let b_status = b.status();
    assert_eq!(text(&b_status, "/role"), "primary");
    assert_eq!(b_status["forced_promotion_unresolved"], Value::Bool(true));
    let b_epoch = text(&b_status, "/epoch");

    // Meanwhile A, down and unaware, still believes it is primary: a session and a write
    // taken offline, as a partitioned primary would.
    a.import_recording(root, (2 << 20) + 3, 300);
    a.config_set("site/retention_days", "7");
    a.config_set("site/a_split", "from A");
    b.import_recording(root, (1 << 20) + 1, 400);
    b.config_set("site/b_forced", "from B");
    let a_epoch = text(&a.status(), "/epoch");
    assert_ne!(a_epoch, b_epoch);
    let config_a_split = a.config_list();
    let config_b_split = b.config_list();
    let union_after_split: BTreeSet<String> = lines(&a.session_list())
        .union(&lines(&b.session_list()))
        .cloned()
        .collect();
    assert_eq!(union_after_split.len(), union.len() + 2);

    // A comes back: both are primary, and both say so with both epochs.
    let server_a = a.serve();
    for (appliance, this, peer) in [(&a, &a_epoch, &b_epoch), (&b, &b_epoch, &a_epoch)] {
        let split = wait_until(
            &format!("{} to report the split brain", appliance.name),
            ROLE_TIMEOUT,
            || {
                let status = appliance.status_from_socket()?;
                let split = status.get("split_brain").filter(|split| !split.is_null())?;
                split.get("peer_config_version")?.as_str()?;
                Some(split.clone())
            },
        );
        assert_eq!(text(&split, "/this_epoch"), *this, "{split:#}");
        assert_eq!(text(&split, "/peer_epoch"), *peer, "{split:#}");
        assert_eq!(text(&split, "/peer_role"), "primary", "{split:#}");
    }
    // Nothing is synced while split, not even on request.
    let refused = b
        .run_within(&["sync-now"], &[], SYNC_TIMEOUT)
        .failed("Sync Now while split");
    eprintln!("[cli_reconcile] Sync Now while split: {}", refused.trim());
    assert!(
        refused.contains("split brain"),
        "the refusal says why: {refused}"
    );
    assert_eq!(
        a.config_list(),
        config_a_split,
        "A's configuration is untouched"
    );
    assert_eq!(
        b.config_list(),
        config_b_split,
        "B's configuration is untouched"
    );

    // A gives way.
    let demoted = timed("demote on A", || {
        a.run_within(&["demote"], &[], SYNC_TIMEOUT)
            .ok("dyad demote on A")
    });
    eprintln!("[cli_reconcile] {}", demoted.stdout.trim());
    // Usually at once; when the peer redialled into the moment of the demotion, one side
    // classified the new link from a Hello sent just before it, and the pair rejoins after
    // the reconnect delay.
    timed("the pair rejoining after the demotion", || {
        wait_role_linked_within(&a, "backup", "primary", ROLE_TIMEOUT);
        wait_role_linked_within(&b, "primary", "backup", ROLE_TIMEOUT);
    });
    timed("Sync Now after the demotion", || {
        sync_now_until_complete(&a)
    });
    assert_eq!(
        lines(&a.session_list()),
        union_after_split,
        "A holds the union"
    );
    assert_eq!(
        lines(&b.session_list()),
        union_after_split,
        "B holds the union"
    );
    assert_eq!(
        a.config_list(),
        config_b_split,
        "A follows B's configuration"
    );
    assert_eq!(b.config_list(), config_b_split, "B's configuration is kept");
    let a_conflicts = conflicts(&a);
    assert!(
        conflict_has(&a_conflicts, "site/a_split", Some("from A"), None)
            && conflict_has(&a_conflicts, "site/retention_days", Some("7"), Some("45")),
        "A's configuration from the split is in its conflict record: {a_conflicts:#}"
    );
    assert_eq!(
        b.status()["forced_promotion_unresolved"],
        Value::Bool(false),
        "the old primary is back as the backup: nothing left to resolve"
    );
    for appliance in [&a, &b] {
        let status = appliance.status();
        assert!(
            status["split_brain"].is_null(),
            "{} no longer reports a split brain: {status:#}",
            appliance.name
        );
    }

    drop::<Server>(server_b);
    drop::<Server>(server_a);
    eprintln!(
        "[cli_reconcile] whole test: {:.1} s (data folder {})",
        test_started.elapsed().as_secs_f64(),
        path_str(root)
    );
}
