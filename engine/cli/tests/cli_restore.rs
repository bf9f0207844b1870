//! Issue 15: an appliance restored from a settings backup onto new hardware must not silently
//! diverge from its peer, nor lose what it trusted, nor report the old hardware's syncs as its
//! own. Real processes only: `dyad serve` on 127.0.0.1 in temporary folders, driven through the
//! `dyad` binary as an operator follows the operator guide's hardware-migration section
//! (`dyad backup create`, SIGKILL and discard the old folder, `dyad backup restore` into a new
//! one, `dyad serve`).
//!
//! - The primary is restored from a backup older than the configuration its backup holds, and
//!   writes new values of the same keys: after a Sync Now the backup must hold exactly the
//!   restored primary's configuration, with every value it replaced in its conflict record.
//! - An appliance that trusted a vendor key must still trust it once restored: installing a
//!   package signed with that key must not be refused for want of a vendor key.
//! - A restored appliance has never synced: `status --json` must not show the old hardware's
//!   last sync (checked on a restored primary and on a restored backup).
//!
//! Configuration values are a few bytes and there are no recordings, so each test takes a few
//! seconds; every wait is bounded.

mod common;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{conflict_has, dyad, keygen, path_str, Appliance};

/// A role change or a link coming up is seen within this.
const LINK_TIMEOUT: Duration = Duration::from_secs(60);
/// Sync Now is repeated until it completes, at most this long (the link must come up first).
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// Configuration the primary holds when its settings backup is taken (version E#3).
const BACKED_UP_CONFIG: [(&str, &str); 3] = [
    ("site/name", "Restore Site"),
    ("site/retention_days", "90"),
    ("policy/recording", "all"),
];

fn temp_root(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("a temporary folder")
}

/// A private (0600) passphrase file, as `dyad backup` requires.
fn passphrase_file(root: &Path) -> PathBuf {
    let path = root.join("backup.pass");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("create the passphrase file");
    file.write_all(b"a passphrase kept apart from the file\n")
        .expect("write the passphrase file");
    path
}

/// `dyad backup create` of `appliance` (running or not) into `root/NAME.dyadbackup`.
fn backup_create(appliance: &Appliance, root: &Path, passphrase: &Path) -> PathBuf {
    let out = root.join(format!("{}.dyadbackup", appliance.name));
    let output = appliance
        .run(
            &["backup", "create"],
            &[
                "--out",
                path_str(&out),
                "--passphrase-file",
                path_str(passphrase),
            ],
        )
        .ok("dyad backup create");
    eprintln!("[cli_restore] {}", output.stdout.trim_end());
    out
}

/// `dyad backup restore` of `backup` into the new folder `root/name`; the restored appliance
/// keeps the backed-up failover address, `port`.
fn backup_restore(
    root: &Path,
    name: &str,
    port: u16,
    backup: &Path,
    passphrase: &Path,
) -> Appliance {
    let restored = Appliance {
        name: name.to_string(),
        dir: root.join(name),
        port,
    };
    let output = dyad(&[
        "backup",
        "restore",
        "--data-dir",
        restored.dir_str(),
        "--in",
        path_str(backup),
        "--passphrase-file",
        path_str(passphrase),
    ])
    .ok("dyad backup restore");
    eprintln!("[cli_restore] {}", output.stdout.trim_end());
    restored
}

fn text(status: &Value, pointer: &str) -> String {
    status
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// Waits until `appliance`'s server runs in `role` with its link to a `peer_role` up.
fn wait_role_linked(appliance: &Appliance, role: &str, peer_role: &str) {
    let deadline = Instant::now() + LINK_TIMEOUT;
    loop {
        let status = appliance.status_from_socket();
        if let Some(status) = &status {
            if text(status, "/role") == role && text(status, "/link/peer_role") == peer_role {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} did not become {role} linked to a {peer_role} within {LINK_TIMEOUT:?}; last \
             status: {status:#?}",
            appliance.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `dyad sync-now` on `appliance` until one run completes, for at most [`SYNC_TIMEOUT`] (after
/// a restart or a restore the link may still be coming up).
fn sync_now_until_complete(appliance: &Appliance) -> String {
    let deadline = Instant::now() + SYNC_TIMEOUT;
    let mut failures = Vec::new();
    loop {
        let output = appliance.run_within(&["sync-now"], &[], SYNC_TIMEOUT);
        if output.status.success() && output.stdout.contains("sync complete") {
            return output.stdout;
        }
        failures.push(format!(
            "{}: {}{}",
            output.status,
            output.stdout.trim_end(),
            output.stderr.trim_end()
        ));
        assert!(
            Instant::now() < deadline,
            "Sync Now on {} did not complete within {SYNC_TIMEOUT:?} ({} attempts):\n{}",
            appliance.name,
            failures.len(),
            failures.join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `dyad conflicts export`, parsed, and `dyad conflicts list` for messages.
fn conflicts(appliance: &Appliance) -> (Value, String) {
    let export = appliance
        .run(&["conflicts", "export"], &[])
        .ok("dyad conflicts export");
    let parsed = serde_json::from_str(&export.stdout).unwrap_or_else(|error| {
        panic!("conflicts export is not JSON ({error}): {}", export.stdout)
    });
    let list = appliance
        .run(&["conflicts", "list"], &[])
        .ok("dyad conflicts list")
        .stdout;
    (parsed, list)
}

/// Why the `last_sync` of a `status --json` is wrong for a freshly restored appliance, which
/// has never synced, if it is.
fn inherited_last_sync(status: &Value, who: &str) -> Option<String> {
    let last_sync = status.get("last_sync").cloned().unwrap_or(Value::Null);
    (!last_sync.is_null()).then(|| {
        format!(
            "{who} was just restored onto new hardware and has never synced, but `status \
             --json` reports the old hardware's last sync as its own: \"last_sync\": \
             {last_sync:#}"
        )
    })
}

fn assert_no_inherited_last_sync(status: &Value, who: &str) {
    if let Some(problem) = inherited_last_sync(status, who) {
        panic!("{problem}");
    }
}

#[test]
fn restored_primary_writes_config_backup_follows_or_records_conflict() {
    let temp = temp_root("dyad-itest-restore-");
    let root = temp.path();
    let key = root.join("pair.key");
    keygen(&key);
    let passphrase = passphrase_file(root);
    let a = Appliance::init(root, "itest-a", &key, &[]);
    let b = Appliance::init(root, "itest-b", &key, &[]);

    // 1. A pair A→B, synced at E#3; a settings backup of A.
    let server_a = a.serve();
    let _server_b = b.serve();
    a.run(
        &["establish"],
        &["--backup", &b.address(), "--reverse", &a.address()],
    )
    .ok("dyad establish");
    wait_role_linked(&a, "primary", "backup");
    wait_role_linked(&b, "backup", "primary");
    for (name, value) in BACKED_UP_CONFIG {
        a.config_set(name, value);
    }
    sync_now_until_complete(&b);
    let version_at_backup = text(&a.status(), "/config_version");
    let backup = backup_create(&a, root, &passphrase);

    // 2. Newer configuration after the backup; B holds it.
    a.config_set("site/x", "old-x");
    a.config_set("site/y", "old-y");
    sync_now_until_complete(&b);
    let b_before_restore = b.config_list();
    assert_eq!(
        b_before_restore,
        a.config_list(),
        "B holds A's configuration before the hardware change"
    );
    let version_before_restore = text(&b.status(), "/config_version");

    // 3. The old hardware dies; its replacement is restored from the (older) backup.
    server_a.kill();
    std::fs::remove_dir_all(&a.dir).expect("discard the old hardware's data folder");
    let a2 = backup_restore(root, "itest-a2", a.port, &backup, &passphrase);
    let restored_status = a2.status();
    assert_eq!(
        text(&restored_status, "/listen"),
        a.address(),
        "the restored appliance takes the old one's failover address"
    );
    assert_eq!(text(&restored_status, "/role"), "primary");
    // Every way the pair is wrong after the restore is collected and reported together, so
    // that one does not hide another.
    let mut problems: Vec<String> = Vec::new();
    problems.extend(inherited_last_sync(
        &restored_status,
        "A2 (offline, right after the restore)",
    ));
    let _server_a2 = a2.serve();
    let served_status = a2
        .status_from_socket()
        .expect("A2's server answers on its admin socket");
    problems.extend(inherited_last_sync(
        &served_status,
        "A2 (served, before any sync)",
    ));

    // 4. The restored primary writes the same keys again, and one more.
    a2.config_set("site/x", "new-x");
    a2.config_set("site/y", "new-y");
    a2.config_set("site/z", "new-z");
    let a2_config = a2.config_list();
    for needle in ["new-x", "new-y", "new-z", "Restore Site"] {
        assert!(
            a2_config.contains(needle),
            "A2 holds its own writes and the backed-up configuration ({needle}):\n{a2_config}"
        );
    }

    // 5. Sync Now on B, once the link to the restored primary is up.
    let synced = sync_now_until_complete(&b);
    let b_config = b.config_list();
    let a2_config = a2.config_list();
    let (conflicts_json, conflicts_list) = conflicts(&b);
    let versions = format!(
        "A's config version at the backup: {version_at_backup}; B's before the restore: \
         {version_before_restore}; A2's now: {}; B's now: {}",
        text(&a2.status(), "/config_version"),
        text(&b.status(), "/config_version"),
    );
    let picture = format!(
        "{versions}\nB's Sync Now said: {}\n--- A2 `config list` ---\n{a2_config}--- B \
         `config list` ---\n{b_config}--- B before the restore ---\n{b_before_restore}--- B \
         `conflicts list` ---\n{conflicts_list}--- B `conflicts export` ---\n{conflicts_json:#}",
        synced.trim_end()
    );
    eprintln!("[cli_restore] after the sync:\n{picture}");
    if b_config != a2_config {
        problems.push(
            "after Sync Now with the restored primary (which reported success), B's `config \
             list` differs from A2's"
                .to_string(),
        );
    }
    let missing: Vec<&str> = [("site/x", "old-x", "new-x"), ("site/y", "old-y", "new-y")]
        .into_iter()
        .filter(|(key, local, incoming)| {
            !conflict_has(&conflicts_json, key, Some(local), Some(incoming))
        })
        .map(|(key, _, _)| key)
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "B's conflict records hold no entry for {missing:?} with B's old value as local \
             and A2's new value as incoming"
        ));
    }
    let z_claimed_local = conflicts_json
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|record| record["differing"].as_array().into_iter().flatten())
        .any(|entry| entry["key"] == "site/z" && !entry["local"].is_null());
    if z_claimed_local {
        problems.push("B never held site/z, yet a conflict record says it had a value".into());
    }
    assert!(
        problems.is_empty(),
        "issue 15: the restored primary and its backup diverge:\n- {}\n{picture}",
        problems.join("\n- ")
    );
}

#[test]
fn restored_backup_reports_no_last_sync_from_the_old_hardware() {
    let temp = temp_root("dyad-itest-restore-sync-");
    let root = temp.path();
    let key = root.join("pair.key");
    keygen(&key);
    let passphrase = passphrase_file(root);
    let a = Appliance::init(root, "itest-a", &key, &[]);
    let b = Appliance::init(root, "itest-b", &key, &[]);
    let _server_a = a.serve();
    let server_b = b.serve();
    a.run(
        &["establish"],
        &["--backup", &b.address(), "--reverse", &a.address()],
    )
    .ok("dyad establish");
    wait_role_linked(&b, "backup", "primary");
    a.config_set("site/name", "Restore Site");
    sync_now_until_complete(&b);
    let old_status = b.status();
    assert!(
        old_status["last_sync"]["succeeded"].as_bool() == Some(true),
        "the old backup hardware records its successful sync: {old_status:#}"
    );
    let backup = backup_create(&b, root, &passphrase);

    server_b.kill();
    std::fs::remove_dir_all(&b.dir).expect("discard the old hardware's data folder");
    let b2 = backup_restore(root, "itest-b2", b.port, &backup, &passphrase);
    let restored_status = b2.status();
    assert_eq!(text(&restored_status, "/role"), "backup");
    assert_no_inherited_last_sync(&restored_status, "B2 (offline, right after the restore)");
    let _server_b2 = b2.serve();
    let served_status = b2
        .status_from_socket()
        .expect("B2's server answers on its admin socket");
    assert_no_inherited_last_sync(&served_status, "B2 (served, before any sync)");
}

#[test]
fn restored_appliance_keeps_the_trusted_vendor_key() {
    let temp = temp_root("dyad-itest-restore-vendor-");
    let root = temp.path();
    let key = root.join("pair.key");
    keygen(&key);
    let passphrase = passphrase_file(root);
    let vendor_secret = root.join("vendor.sec");
    let vendor_public = root.join("vendor.pub");
    dyad(&[
        "update",
        "vendor-keygen",
        "--secret-out",
        path_str(&vendor_secret),
        "--public-out",
        path_str(&vendor_public),
    ])
    .ok("dyad update vendor-keygen");
    let packages = root.join("packages");
    std::fs::create_dir(&packages).expect("create the package folder");
    let payload = root.join("payload.bin");
    std::fs::write(&payload, b"the new application").expect("write the payload");
    let package = packages.join("app-99.0.0.dyadpkg");
    dyad(&[
        "update",
        "make-package",
        "--vendor-key",
        path_str(&vendor_secret),
        "--name",
        "app",
        "--kind",
        "app",
        "--version",
        "99.0.0",
        "--payload",
        path_str(&payload),
        "--out",
        path_str(&package),
    ])
    .ok("dyad update make-package");

    let a = Appliance::init(root, "itest-a", &key, &[]);
    a.run(
        &["update", "trust-vendor-key"],
        &["--vendor-public-key", path_str(&vendor_public)],
    )
    .ok("dyad update trust-vendor-key");
    let checked = a
        .run(&["update", "check"], &["--from", path_str(&packages)])
        .ok("dyad update check on the original appliance");
    assert!(
        checked.stdout.contains("99.0.0"),
        "the original appliance sees the signed package: {}",
        checked.stdout
    );
    let backup = backup_create(&a, root, &passphrase);
    std::fs::remove_dir_all(&a.dir).expect("discard the old hardware's data folder");
    let a2 = backup_restore(root, "itest-a2", a.port, &backup, &passphrase);

    let update_status = a2
        .run(&["update", "status"], &[])
        .ok("dyad update status on the restored appliance");
    let check = a2.run(&["update", "check"], &["--from", path_str(&packages)]);
    assert!(
        check.status.success() && check.stdout.contains("99.0.0"),
        "issue 15: the restored appliance lost the vendor key the old one trusted; `dyad \
         update check` ({}):\nstdout:\n{}\nstderr:\n{}\n`dyad update status`:\n{}",
        check.status,
        check.stdout,
        check.stderr,
        update_status.stdout
    );
    let install = a2.run(
        &["update", "install"],
        &["--skip-backup-check", path_str(&package)],
    );
    assert!(
        install.status.success() && !install.stderr.contains("no vendor key is configured"),
        "issue 15: installing a package signed with the trusted vendor key on the restored \
         appliance failed ({}):\nstdout:\n{}\nstderr:\n{}",
        install.status,
        install.stdout,
        install.stderr
    );
}
