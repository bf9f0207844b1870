//! The hardware migration of docs/operator-guide.md with real `dyad` processes: a pair syncs,
//! the backup appliance's settings are backed up while it runs, it is switched off, the backup
//! is restored into a new data folder (new hardware, same address), the new appliance rejoins
//! the pair with the same identity, the recordings arrive by sync, a session completed on it
//! gets a fresh id, and the old folder is factory-reset the documented way.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DYAD: &str = env!("CARGO_BIN_EXE_dyad");
const STARTUP_WAIT: Duration = Duration::from_secs(30);

struct Servers {
    children: Vec<(String, Child)>,
    root: PathBuf,
}

impl Servers {
    fn stop(&mut self, name: &str) {
        if let Some(index) = self.children.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.children.remove(index);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(DYAD)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("dyad runs")
}

fn ok(args: &[&str]) -> String {
    let output = run(args);
    assert!(
        output.status.success(),
        "dyad {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn refused(args: &[&str]) -> String {
    let output = run(args);
    assert!(!output.status.success(), "dyad {args:?} should have failed");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn start(servers: &mut Servers, name: &str, dir: &Path) {
    let log = fs::File::create(servers.root.join(format!("{name}.log"))).expect("log");
    let child = Command::new(DYAD)
        .args([
            "serve",
            "--data-dir",
            dir.to_str().expect("utf-8 path"),
            "--first-sync-delay-s",
            "3600",
            "--sync-interval-s",
            "3600",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("serve starts");
    servers.children.push((name.to_string(), child));
    let started = Instant::now();
    // Only once the socket exists: a status without a server would take the serve lock
    // (answering offline) and could make the starting server refuse to run.
    while !dir.join("admin.sock").exists()
        || !run(&["status", "--data-dir", dir.to_str().expect("utf-8")])
            .status
            .success()
    {
        assert!(started.elapsed() < STARTUP_WAIT, "{name} did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn recording(path: &Path, size: usize, seed: u8) -> String {
    let data: Vec<u8> = (0..size)
        .map(|index| (index as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    fs::write(path, data).expect("recording");
    path.to_str().expect("utf-8").to_string()
}

#[test]
fn backup_appliance_moves_to_new_hardware_and_rejoins_its_pair() {
    let root = std::env::temp_dir().join(format!("dyad-migration-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).expect("root");
    let mut servers = Servers {
        children: Vec::new(),
        root: root.clone(),
    };
    let path = |name: &str| root.join(name).to_str().expect("utf-8").to_string();
    let (a, b, new_b) = (path("a"), path("b"), path("new-b"));
    let (port_a, port_b) = (free_port(), free_port());
    let (listen_a, listen_b) = (format!("127.0.0.1:{port_a}"), format!("127.0.0.1:{port_b}"));

    fs::write(root.join("pair.key"), ok(&["keygen"])).expect("key file");
    let key = path("pair.key");
    ok(&[
        "init",
        "--data-dir",
        &a,
        "--name",
        "a",
        "--listen",
        &listen_a,
        "--psk-file",
        &key,
    ]);
    ok(&[
        "init",
        "--data-dir",
        &b,
        "--name",
        "b",
        "--listen",
        &listen_b,
        "--psk-file",
        &key,
    ]);
    start(&mut servers, "a", Path::new(&a));
    start(&mut servers, "b", Path::new(&b));
    ok(&[
        "establish",
        "--data-dir",
        &a,
        "--backup",
        &listen_b,
        "--reverse",
        &listen_a,
    ]);
    ok(&["config", "set", "--data-dir", &a, "site/name", "north"]);
    for index in 0..3u8 {
        let file = recording(&root.join(format!("a{index}.rec")), 200_000, index);
        ok(&["session", "import", "--data-dir", &a, "--file", &file]);
    }
    // A session completed on the backup itself: its id is the one the new hardware must
    // never hand out again.
    let file = recording(&root.join("b0.rec"), 150_000, 40);
    ok(&["session", "import", "--data-dir", &b, "--file", &file]);
    ok(&["sync-now", "--data-dir", &a]);
    let sessions_a = ok(&["session", "list", "--data-dir", &a]);
    assert_eq!(sessions_a.lines().count(), 4, "{sessions_a}");
    assert_eq!(ok(&["session", "list", "--data-dir", &b]), sessions_a);

    // The settings backup, taken while b serves (no downtime).
    let pass = root.join("pass");
    fs::write(&pass, "migration passphrase\n").expect("passphrase");
    fs::set_permissions(&pass, fs::Permissions::from_mode(0o600)).expect("chmod");
    let pass = pass.to_str().expect("utf-8").to_string();
    let backup_file = path("b.dyadbackup");
    ok(&[
        "backup",
        "create",
        "--data-dir",
        &b,
        "--out",
        &backup_file,
        "--passphrase-file",
        &pass,
    ]);
    let inspected = ok(&[
        "backup",
        "inspect",
        "--in",
        &backup_file,
        "--passphrase-file",
        &pass,
    ]);
    assert!(inspected.contains("backup in epoch"), "{inspected}");
    assert!(
        !inspected.contains("dyad-psk-1"),
        "no key in the inspection"
    );

    // The old hardware is switched off.
    servers.stop("b");

    // Refusals first: each changes nothing.
    let wrong = root.join("wrong");
    fs::write(&wrong, "not the passphrase\n").expect("wrong");
    fs::set_permissions(&wrong, fs::Permissions::from_mode(0o600)).expect("chmod");
    let error = refused(&[
        "backup",
        "restore",
        "--data-dir",
        &new_b,
        "--in",
        &backup_file,
        "--passphrase-file",
        wrong.to_str().expect("utf-8"),
    ]);
    assert!(error.contains("passphrase is wrong"), "{error}");
    let mut tampered = fs::read(&backup_file).expect("read");
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x10;
    fs::write(root.join("tampered"), &tampered).expect("write");
    let error = refused(&[
        "backup",
        "restore",
        "--data-dir",
        &new_b,
        "--in",
        &path("tampered"),
        "--passphrase-file",
        &pass,
    ]);
    assert!(error.contains("changed or damaged"), "{error}");
    let error = refused(&[
        "backup",
        "restore",
        "--data-dir",
        &new_b,
        "--in",
        &backup_file,
        "--passphrase-file",
        &pass,
        "--app-version",
        "0.0.1",
    ]);
    assert!(error.contains("same or a newer version"), "{error}");
    assert!(
        !Path::new(&new_b).exists(),
        "refused restores wrote nothing"
    );
    let error = refused(&[
        "backup",
        "restore",
        "--data-dir",
        &a,
        "--in",
        &backup_file,
        "--passphrase-file",
        &pass,
    ]);
    assert!(error.contains("already holds an appliance"), "{error}");

    // The new hardware: restore (no init), start, sync.
    let dry_run = ok(&[
        "backup",
        "inspect",
        "--in",
        &backup_file,
        "--passphrase-file",
        &pass,
        "--data-dir",
        &new_b,
    ]);
    assert!(dry_run.contains("would create appliance b"), "{dry_run}");
    ok(&[
        "backup",
        "restore",
        "--data-dir",
        &new_b,
        "--in",
        &backup_file,
        "--passphrase-file",
        &pass,
    ]);
    assert_eq!(
        ok(&["session", "list", "--data-dir", &new_b]),
        "",
        "recordings come by sync, not in the backup"
    );
    start(&mut servers, "new-b", Path::new(&new_b));
    let file = recording(&root.join("a3.rec"), 120_000, 9);
    ok(&["session", "import", "--data-dir", &a, "--file", &file]);
    ok(&["sync-now", "--data-dir", &new_b]);
    let sessions_a = ok(&["session", "list", "--data-dir", &a]);
    assert_eq!(sessions_a.lines().count(), 5, "{sessions_a}");
    assert_eq!(ok(&["session", "list", "--data-dir", &new_b]), sessions_a);
    assert_eq!(
        ok(&["config", "get", "--data-dir", &new_b, "site/name"]).trim(),
        "north"
    );
    let status = ok(&["status", "--data-dir", &new_b]);
    assert!(status.contains("b (backup)"), "{status}");

    // The new hardware is a new node succeeding the old one: a session completed on it is
    // numbered from 1 under its own node id, which the old hardware can never use.
    let node_of = |dir: &str| -> serde_json::Value {
        let text = fs::read_to_string(Path::new(dir).join("appliance.json")).expect("settings");
        serde_json::from_str(&text).expect("json")
    };
    let (old_settings, new_settings) = (node_of(&b), node_of(&new_b));
    let node_b = old_settings["node_id"]
        .as_str()
        .expect("node id")
        .to_string();
    let node_new_b = new_settings["node_id"]
        .as_str()
        .expect("node id")
        .to_string();
    assert_ne!(node_new_b, node_b, "a restore takes a new node id");
    assert_eq!(
        new_settings["predecessors"],
        serde_json::json!([node_b]),
        "and names the old one as its predecessor"
    );
    let file = recording(&root.join("b1.rec"), 100_000, 41);
    let imported = ok(&["session", "import", "--data-dir", &new_b, "--file", &file]);
    assert!(imported.contains(&format!("{node_new_b}#1 ")), "{imported}");
    ok(&["sync-now", "--data-dir", &a]);
    let sessions_a = ok(&["session", "list", "--data-dir", &a]);
    assert_eq!(sessions_a.lines().count(), 6, "{sessions_a}");
    assert_eq!(ok(&["session", "list", "--data-dir", &new_b]), sessions_a);

    // The old appliance: a plain reset is refused (its state still says backup); the
    // documented way names the replacement.
    let error = refused(&["factory-reset", "--data-dir", &b, "--yes"]);
    assert!(
        error.contains("backup in a failover relationship"),
        "{error}"
    );
    let error = refused(&["factory-reset", "--data-dir", &b, "--replaced"]);
    assert!(error.contains("without --yes"), "{error}");
    ok(&["factory-reset", "--data-dir", &b, "--yes", "--replaced"]);
    assert_eq!(fs::read_dir(&b).expect("folder").count(), 0);
    // While a server runs, a reset is refused whatever the flags.
    let error = refused(&["factory-reset", "--data-dir", &new_b, "--yes", "--replaced"]);
    assert!(error.contains("already running"), "{error}");
}

/// A settings backup written by the release before restores took new node ids (contents
/// format 1: no configuration chain, conflicts or vendor key; `tests/fixtures/README.md`) still
/// restores with today's code, migrated on decode: the same configuration at the zero anchor,
/// a new node id succeeding the old one, no sync history, and an appliance that serves.
#[test]
fn a_format_1_backup_from_the_previous_release_still_restores() {
    let root = std::env::temp_dir().join(format!("dyad-itest-fixture-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).expect("root");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/settings-backup-format1.dyadbackup");
    let pass = root.join("pass");
    fs::write(&pass, "fixture passphrase\n").expect("pass");
    fs::set_permissions(&pass, fs::Permissions::from_mode(0o600)).expect("chmod");
    let target = root.join("restored");
    let (fixture, pass, target) = (
        fixture.to_str().expect("utf-8"),
        pass.to_str().expect("utf-8"),
        target.to_str().expect("utf-8"),
    );
    let inspected = ok(&[
        "backup",
        "inspect",
        "--in",
        fixture,
        "--passphrase-file",
        pass,
    ]);
    assert!(inspected.contains("fixture-a"), "{inspected}");
    let report = ok(&[
        "backup",
        "restore",
        "--data-dir",
        target,
        "--in",
        fixture,
        "--passphrase-file",
        pass,
    ]);
    const OLD_NODE: &str = "65bd6e84856daeea72fa17109966dfcb";
    assert!(report.contains(&format!("succeeds {OLD_NODE}")), "{report}");
    let settings: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(Path::new(target).join("appliance.json")).expect("settings"),
    )
    .expect("json");
    assert_ne!(settings["node_id"], OLD_NODE);
    assert_eq!(settings["predecessors"], serde_json::json!([OLD_NODE]));
    for (key, value) in [
        ("site/name", "north"),
        ("site/banner", "hello"),
        ("x", "old-x"),
    ] {
        assert_eq!(
            ok(&["config", "get", "--data-dir", target, key]).trim(),
            value,
            "{key}"
        );
    }
    let status = ok(&["status", "--data-dir", target]);
    assert!(status.contains("last sync          never"), "{status}");
    // The restored appliance writes under an epoch of its own (its new node id).
    let set = ok(&["config", "set", "--data-dir", target, "x", "new-x"]);
    let new_node = settings["node_id"].as_str().expect("node id");
    assert!(set.contains(&format!("@{new_node}#4")), "{set}");
    let _ = fs::remove_dir_all(&root);
}
