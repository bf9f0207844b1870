//! A failover pair as an operator runs it: two `dyad serve` processes on 127.0.0.1, driven
//! only through the `dyad` binary.
//!
//! The backup is SIGKILLed in the middle of its first sync (the primary's status must then say
//! the sync was interrupted and the lag unknown) and restarted; Sync Now then completes, and
//! the primary must have sent no more than the recordings plus one transfer window. After a
//! break, both appliances take sessions and differing configuration; a re-establish must leave
//! both with the union of the sessions and record the backup's replaced configuration as a
//! conflict.
//!
//! The recordings total `DYAD_ITEST_BYTES` (default 1 GiB, about 10 s on two cores; accepts
//! `512M`, `4G`; at least `128M`, so that the kill falls in the middle of the transfer).

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;

use common::{
    conflict_has, env_bytes, keygen, mib, number, path_str, spawn_sync_now, wait_until,
    window_bytes, Appliance,
};

const DEFAULT_TOTAL_BYTES: u64 = 1 << 30;
/// Sessions are about this large (the last one takes the remainder).
const SESSION_BYTES: u64 = 64 << 20;
/// A sync of the whole data set finishes within this, even on a slow CI machine.
const SYNC_TIMEOUT: Duration = Duration::from_secs(900);
/// Configuration the primary holds before the pair is established.
const PRIMARY_CONFIG: [(&str, &str); 4] = [
    ("site/name", "Integration Site"),
    ("site/retention_days", "90"),
    ("policy/recording", "all"),
    ("policy/max_session_hours", "8"),
];

/// Session sizes adding up to `total`, none a whole number of chunks except by accident.
fn session_sizes(total: u64) -> Vec<u64> {
    let count = (total / SESSION_BYTES).clamp(2, 64);
    let each = total / count - 4321;
    let mut sizes = vec![each; count as usize - 1];
    sizes.push(total - each * (count - 1));
    sizes
}

fn lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .collect()
}

fn timed<T>(what: &str, run: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let value = run();
    eprintln!(
        "[cli_pair] {what}: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    value
}

#[test]
fn killed_backup_resumes_within_a_window_and_re_establish_keeps_the_union() {
    let test_started = Instant::now();
    let total_bytes = env_bytes("DYAD_ITEST_BYTES", DEFAULT_TOTAL_BYTES);
    assert!(
        total_bytes >= 128 << 20,
        "DYAD_ITEST_BYTES must be at least 128M"
    );
    let temp = tempfile::Builder::new()
        .prefix("dyad-itest-pair-")
        .tempdir()
        .expect("a temporary folder");
    let root = temp.path();
    let key = root.join("pair.key");
    keygen(&key);
    let a = Appliance::init(root, "itest-a", &key, &[]);
    let b = Appliance::init(root, "itest-b", &key, &[]);
    assert_eq!(
        a.run(&["key", "show"], &[]).ok("key show").stdout,
        b.run(&["key", "show"], &[]).ok("key show").stdout,
        "both appliances were given the same key"
    );

    // The primary's data, put in place before either server runs.
    for (name, value) in PRIMARY_CONFIG {
        a.config_set(name, value);
    }
    let sizes = session_sizes(total_bytes);
    timed(
        &format!(
            "writing and importing {} sessions, {:.0} MiB",
            sizes.len(),
            mib(total_bytes)
        ),
        || {
            for (index, size) in sizes.iter().enumerate() {
                a.import_recording(root, *size, index as u64);
            }
        },
    );

    let server_a = a.serve();
    let server_b = b.serve();
    timed("establish", || {
        a.run(
            &["establish"],
            &["--backup", &b.address(), "--reverse", &a.address()],
        )
        .ok("dyad establish")
    });
    assert_eq!(a.role(), "primary");
    assert_eq!(b.role(), "backup");

    // Sync Now on the backup; SIGKILL the backup once the primary has sent a quarter. The
    // primary's admin socket is polled directly: a `dyad status` process per look would be
    // too coarse for a transfer this fast on a small DYAD_ITEST_BYTES.
    let first_sync_started = Instant::now();
    let mut sync_now = spawn_sync_now(&b, root);
    let kill_at_bytes = (total_bytes / 4).max(2 * window_bytes());
    let sent_before_kill = wait_until(
        "the primary to send a quarter of the recordings",
        SYNC_TIMEOUT,
        || {
            let sent = a
                .status_from_socket()
                .map_or(0, |status| number(&status, "/bytes_sent"));
            (sent >= kill_at_bytes).then_some(sent)
        },
    );
    server_b.kill();
    eprintln!(
        "[cli_pair] killed the backup after {:.1} s, with {:.0} MiB sent by the primary",
        first_sync_started.elapsed().as_secs_f64(),
        mib(sent_before_kill)
    );
    let interrupted = sync_now.wait_exit(Duration::from_secs(60));
    assert!(
        !interrupted.success(),
        "Sync Now cannot succeed when its server was killed in the middle"
    );
    // The primary had finished its own (empty) part and was serving the backup's: it saw the
    // Sync Now cut off, so it must say so, and must not claim to know the lag.
    let primary = wait_until(
        "the primary to notice that the backup is gone",
        Duration::from_secs(60),
        || {
            a.status_from_socket()
                .filter(|status| status["link"].is_null())
        },
    );
    assert_eq!(
        (
            &primary["last_sync"]["succeeded"],
            &primary["last_sync"]["interrupted"],
            &primary["lag_known"],
            &primary["lag"],
        ),
        (
            &Value::Bool(false),
            &Value::Bool(true),
            &Value::Bool(false),
            &Value::Null
        ),
        "the primary's status after the kill: {primary:#}"
    );
    assert!(
        primary["lag_unknown_since_unix_ms"].is_u64(),
        "the lag is unknown since the loss: {primary:#}"
    );
    let text = a.run(&["status"], &[]).ok("dyad status").stdout;
    assert!(
        text.contains("last sync          INTERRUPTED")
            && text.contains("lag                unknown since"),
        "dyad status on the primary after the kill:\n{text}"
    );

    let server_b = b.serve();
    let held_after_restart = number(&b.status(), "/sessions_held");
    assert!(
        held_after_restart < sizes.len() as u64,
        "the kill came in the middle of the transfer ({held_after_restart} of {} sessions held)",
        sizes.len()
    );
    let resumed = timed("Sync Now after the restart", || {
        b.run_within(&["sync-now"], &[], SYNC_TIMEOUT)
            .ok("dyad sync-now after the restart")
    });
    assert!(
        resumed.stdout.contains("sync complete"),
        "Sync Now reports completion: {}",
        resumed.stdout
    );

    let primary = a.status();
    let sent = number(&primary, "/bytes_sent");
    eprintln!(
        "[cli_pair] primary sent {sent} bytes ({:.1} MiB over the recordings; re-sent {} bytes) for {total_bytes} bytes of recordings",
        mib(sent.saturating_sub(total_bytes)),
        number(&primary, "/bytes_resent")
    );
    assert!(
        sent >= total_bytes,
        "every recording byte was sent at least once"
    );
    assert!(
        sent <= total_bytes + window_bytes(),
        "one interruption may cost at most one window: sent {sent}, recordings {total_bytes}"
    );
    let sessions_a = a.session_list();
    assert_eq!(lines(&sessions_a).len(), sizes.len());
    assert_eq!(sessions_a, b.session_list(), "both hold the same sessions");
    assert_eq!(
        a.config_list(),
        b.config_list(),
        "both hold the same configuration"
    );
    assert_eq!(lines(&a.config_list()).len(), PRIMARY_CONFIG.len());
    let verified = timed("session verify on the backup", || {
        b.run_within(&["session", "verify"], &[], SYNC_TIMEOUT)
            .ok("dyad session verify")
    });
    assert!(
        verified.stdout.contains("every chunk verified"),
        "{}",
        verified.stdout
    );

    // The backup's site configuration is read-only and says where to go instead.
    let config_before = b.config_list();
    let refused = b
        .run(&["config", "set"], &["site/retention_days", "1"])
        .failed("config set on the backup");
    for needle in ["backup", "read-only", "itest-a", &a.address()] {
        assert!(
            refused.contains(needle),
            "the refusal names {needle:?}: {refused}"
        );
    }
    assert_eq!(
        b.config_list(),
        config_before,
        "the refused write changed nothing"
    );

    // Break: both standalone, each keeps everything.
    a.run(&["break"], &[]).ok("dyad break");
    assert_eq!(a.role(), "standalone");
    wait_until(
        "the backup to hear of the break",
        Duration::from_secs(60),
        || (b.role() == "standalone").then_some(()),
    );
    assert_eq!(
        b.session_list(),
        sessions_a,
        "the break kept the backup's sessions"
    );

    // While broken, both take sessions and differing configuration.
    a.import_recording(root, (2 << 20) + 7, 1001);
    b.import_recording(root, (3 << 20) + 11, 2001);
    a.config_set("site/retention_days", "30");
    b.config_set("site/retention_days", "45");
    b.config_set("site/b_only", "yes");
    let sent_before_re_establish = number(&a.status(), "/bytes_sent");
    let config_a = a.config_list();

    timed("re-establish", || {
        a.run(
            &["establish"],
            &["--backup", &b.address(), "--reverse", &a.address()],
        )
        .ok("dyad establish again")
    });
    timed("Sync Now after re-establishing", || {
        b.run_within(&["sync-now"], &[], SYNC_TIMEOUT)
            .ok("dyad sync-now after re-establishing")
    });
    let union = a.session_list();
    assert_eq!(
        lines(&union).len(),
        sizes.len() + 2,
        "the union of both sides' sessions:\n{union}"
    );
    assert_eq!(union, b.session_list(), "both hold the union");
    let b_node = b.status()["node_id"]
        .as_str()
        .expect("status names the node")
        .to_string();
    assert!(
        union.lines().any(|line| line.starts_with(&b_node)),
        "the session taken on the backup reached the primary:\n{union}"
    );
    assert_eq!(
        a.config_list(),
        config_a,
        "the primary's configuration is kept"
    );
    assert_eq!(b.config_list(), config_a, "the backup follows the primary");
    let sent_for_union = number(&a.status(), "/bytes_sent") - sent_before_re_establish;
    assert!(
        sent_for_union <= (2 << 20) + 7 + window_bytes(),
        "re-establishing sent only what the backup lacked, not {sent_for_union} bytes"
    );
    let conflicts_output = b
        .run(&["conflicts", "export"], &[])
        .ok("dyad conflicts export");
    let conflicts: Value =
        serde_json::from_str(&conflicts_output.stdout).expect("conflicts export is JSON");
    assert!(
        conflict_has(&conflicts, "site/retention_days", Some("45"), Some("30"))
            && conflict_has(&conflicts, "site/b_only", Some("yes"), None),
        "the backup's replaced configuration is in the conflict record: {conflicts:#}"
    );

    // Break from the backup's side this time.
    b.run(&["break"], &[]).ok("dyad break on the backup");
    assert_eq!(b.role(), "standalone");
    wait_until(
        "the primary to hear of the break",
        Duration::from_secs(60),
        || (a.role() == "standalone").then_some(()),
    );
    assert_eq!(a.session_list(), b.session_list());

    drop(server_b);
    drop(server_a);
    eprintln!(
        "[cli_pair] whole test: {:.1} s (data folder {})",
        test_started.elapsed().as_secs_f64(),
        path_str(root)
    );
}
