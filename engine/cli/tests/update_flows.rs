//! The two upgrade procedures of `docs/operator-guide.md`, end to end with two real
//! `dyad serve` processes on loopback and the exact commands an operator types:
//!
//! - synchronous: break, stop the primary, install, start, verify, (the primary keeps serving
//!   while the backup is upgraded), stop the backup, install, start, re-establish;
//! - asynchronous: Sync Now, break, upgrade the backup first, move traffic to it, upgrade the
//!   old primary, re-establish with the upgraded backup as the primary.
//!
//! Both end in a working relationship where every session (including those made on either side
//! while the relationship was broken) is on both appliances, and both check that establishing
//! between different versions is refused.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn dyad(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dyad"))
        .args(args)
        .output()
        .expect("run dyad")
}

fn ok(args: &[&str]) -> String {
    let output = dyad(args);
    assert!(
        output.status.success(),
        "dyad {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn fails(args: &[&str]) -> String {
    let output = dyad(args);
    assert!(
        !output.status.success(),
        "dyad {} succeeded",
        args.join(" ")
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

struct Node {
    dir: PathBuf,
    address: String,
    serve: Option<Child>,
}

impl Node {
    fn d(&self) -> &str {
        self.dir.to_str().expect("utf-8 path")
    }

    fn start(&mut self) {
        assert!(self.serve.is_none());
        let socket = self.dir.join("admin.sock");
        let _ = std::fs::remove_file(&socket);
        let child = Command::new(env!("CARGO_BIN_EXE_dyad"))
            .args([
                "serve",
                "--data-dir",
                self.d(),
                "--first-sync-delay-s",
                "3600",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve");
        self.serve = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "dyad serve did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the service (as a service manager's kill would).
    fn stop(&mut self) {
        if let Some(mut child) = self.serve.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn session(&self, seed: u8) {
        let file = self.dir.with_extension(format!("rec{seed}"));
        std::fs::write(&file, vec![seed; 200_000 + seed as usize]).expect("recording");
        ok(&[
            "session",
            "import",
            "--data-dir",
            self.d(),
            "--file",
            file.to_str().expect("utf-8"),
        ]);
    }

    fn sessions(&self) -> Vec<String> {
        ok(&["session", "list", "--data-dir", self.d()])
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&ok(&["status", "--data-dir", self.d(), "--json"])).expect("json")
    }

    fn install(&self, packages: &Path) -> String {
        ok(&[
            "update",
            "install",
            "--data-dir",
            self.d(),
            "--from",
            packages.to_str().expect("utf-8"),
            "--skip-backup-check",
        ])
    }

    fn establish_with(&self, backup: &Node) -> Output {
        dyad(&[
            "establish",
            "--data-dir",
            self.d(),
            "--backup",
            &backup.address,
            "--reverse",
            &self.address,
        ])
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Lab {
    _temp: tempfile::TempDir,
    packages: PathBuf,
    a: Node,
    b: Node,
}

/// Two appliances at app 1.0.0 / base 3.1.0 with store format 1 (as the previous release made
/// them), the same key and vendor key, established with `a` as primary, synced; and a folder
/// of packages: base 3.2.0 (needs store format 2) and app 2.0.0 (needs base >= 3.2).
fn lab() -> Lab {
    let temp = tempfile::tempdir().expect("temp");
    let root = temp.path();
    let key = ok(&["keygen"]);
    let key_file = root.join("pair.key");
    std::fs::write(&key_file, key).expect("key");
    let secret = root.join("vendor.secret");
    let public = root.join("vendor.pub");
    ok(&[
        "update",
        "vendor-keygen",
        "--secret-out",
        secret.to_str().expect("utf-8"),
        "--public-out",
        public.to_str().expect("utf-8"),
    ]);
    let packages = root.join("packages");
    std::fs::create_dir_all(&packages).expect("packages");
    let payload = root.join("payload.bin");
    std::fs::write(&payload, b"new appliance software").expect("payload");
    for (name, kind, version, requires) in [
        ("base", "base", "3.2.0", None),
        ("app", "app", "2.0.0", Some("base >= 3.2")),
    ] {
        let out = packages.join(format!("{name}-{version}.dyadpkg"));
        let mut args = vec![
            "update",
            "make-package",
            "--vendor-key",
            secret.to_str().expect("utf-8"),
            "--name",
            name,
            "--kind",
            kind,
            "--version",
            version,
            "--store-format",
            "2",
            "--payload",
            payload.to_str().expect("utf-8"),
            "--out",
            out.to_str().expect("utf-8"),
        ];
        if let Some(requirement) = requires {
            args.extend(["--requires", requirement]);
        }
        ok(&args);
    }
    let mut nodes = Vec::new();
    for name in ["a", "b"] {
        let dir = root.join(name);
        let address = format!("127.0.0.1:{}", free_port());
        ok(&[
            "init",
            "--data-dir",
            dir.to_str().expect("utf-8"),
            "--name",
            name,
            "--listen",
            &address,
            "--psk-file",
            key_file.to_str().expect("utf-8"),
            "--app-version",
            "1.0.0",
            "--base-version",
            "3.1.0",
            "--store-format",
            "1",
            "--vendor-public-key",
            public.to_str().expect("utf-8"),
        ]);
        nodes.push(Node {
            dir,
            address,
            serve: None,
        });
    }
    let b = nodes.pop().expect("b");
    let mut a = nodes.pop().expect("a");
    let mut b = b;
    a.start();
    b.start();
    a.session(1);
    a.session(2);
    b.session(3);
    let output = a.establish_with(&b);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    ok(&["sync-now", "--data-dir", a.d()]);
    assert_eq!(a.sessions().len(), 3);
    assert_eq!(a.sessions(), b.sessions());
    Lab {
        _temp: temp,
        packages,
        a,
        b,
    }
}

/// Waits until the node's status shows the link to its peer up.
fn wait_for_link(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.status()["link"].is_null() {
        assert!(Instant::now() < deadline, "the link did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the node's status shows the given role.
fn wait_for_role(node: &Node, role: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.status()["role"] != role {
        assert!(Instant::now() < deadline, "the role did not become {role}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_upgraded(node: &Node) {
    let text = ok(&["update", "status", "--data-dir", node.d()]);
    assert!(
        text.contains("app 2.0.0, base 3.2.0; store format 2"),
        "{text}"
    );
}

fn assert_mismatch_refused(primary: &Node, backup: &Node) {
    let output = primary.establish_with(backup);
    assert!(
        !output.status.success(),
        "establish across versions succeeded"
    );
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("runs"), "{text}");
}

#[test]
fn synchronous_upgrade_primary_first_keeps_its_role() {
    let Lab {
        _temp,
        packages,
        mut a,
        mut b,
    } = lab();
    // Installing in a relationship is refused (the appliance must be stopped first anyway).
    a.stop();
    let refused = fails(&[
        "update",
        "install",
        "--data-dir",
        a.d(),
        "--from",
        packages.to_str().expect("utf-8"),
        "--skip-backup-check",
    ]);
    assert!(
        refused.contains("break the relationship first"),
        "{refused}"
    );
    a.start();
    // Break while the link is up, so the backup is told at once: `a` is stopped right after,
    // and an appliance told later would still refuse its install (as it should).
    wait_for_link(&a);
    let broken = ok(&["break", "--data-dir", a.d()]);
    assert!(broken.contains("was told"), "{broken}");
    wait_for_role(&b, "standalone");

    // The primary first: stop, install, start, verify.
    a.stop();
    let check = ok(&[
        "update",
        "check",
        "--data-dir",
        a.d(),
        "--from",
        packages.to_str().expect("utf-8"),
    ]);
    assert!(
        check.contains("base base 3.2.0") && check.contains("requires base >= 3.2.0"),
        "{check}"
    );
    let installed = a.install(&packages);
    assert!(
        installed.contains("store migrated from format 1 to 2"),
        "{installed}"
    );
    a.start();
    assert_upgraded(&a);
    let software = a.status()["software"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        software.contains("2.0.0") && software.contains("3.2.0"),
        "{software}"
    );
    // The primary serves again; the backup, still old, keeps its own sessions meanwhile.
    a.session(4);
    b.session(5);
    assert_mismatch_refused(&a, &b);

    // Then the backup.
    b.stop();
    b.install(&packages);
    b.start();
    assert_upgraded(&b);
    let output = a.establish_with(&b);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    ok(&["sync-now", "--data-dir", a.d()]);
    assert_eq!(a.sessions().len(), 5);
    assert_eq!(a.sessions(), b.sessions());
    assert_eq!(a.status()["role"], "primary");
    assert_eq!(b.status()["role"], "backup");
}

#[test]
fn asynchronous_upgrade_backup_first_becomes_primary() {
    let Lab {
        _temp,
        packages,
        mut a,
        mut b,
    } = lab();
    // Last Sync Now before the break, so the backup holds everything.
    a.session(4);
    ok(&["sync-now", "--data-dir", b.d()]);
    assert_eq!(b.sessions().len(), 4);
    let broken = ok(&["break", "--data-dir", b.d()]);
    assert!(broken.contains("was told"), "{broken}");
    wait_for_role(&a, "standalone");

    // Upgrade the backup while the old primary keeps serving the site.
    b.stop();
    a.session(5);
    b.install(&packages);
    b.start();
    assert_upgraded(&b);
    assert_mismatch_refused(&b, &a);

    // Move traffic: the upgraded appliance serves the site now; then upgrade the old primary.
    b.session(6);
    a.stop();
    a.install(&packages);
    a.start();
    assert_upgraded(&a);

    // Re-establish with the upgraded backup as the new primary.
    let output = b.establish_with(&a);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    ok(&["sync-now", "--data-dir", b.d()]);
    assert_eq!(b.sessions().len(), 6);
    assert_eq!(a.sessions(), b.sessions());
    assert_eq!(b.status()["role"], "primary");
    assert_eq!(a.status()["role"], "backup");
}
