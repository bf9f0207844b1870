//! Installing update packages on a real data folder: refusals that change nothing, dependency
//! order, the settings-backup check, the store migration from format 1, the download key, and
//! SIGKILL at random points of a real `dyad update install` process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dyad_core::replica::state::{PeerRecord, ReplicaState};
use dyad_node::appliance::{Appliance, DataDir, InitOptions};
use dyad_node::update::{
    self, build_package, download_key, InstallOptions, PackageKind, UpdateError, VendorSecretKey,
    LAST_BACKUP_TAKEN_KEY,
};
use dyad_store::disk::real::RealDisk;
use dyad_store::replica_port::REPLICA_STATE_KEY;
use dyad_store::{ImportInfo, Store};
use dyad_wire::{Epoch, NodeId, Role, SoftwareVersion, Version};

const SESSIONS: u64 = 12;

fn v(text: &str) -> Version {
    dyad_node::appliance::parse_version(text).expect("version")
}

fn vendor() -> VendorSecretKey {
    VendorSecretKey::from_seed([5; 32])
}

fn old_software() -> SoftwareVersion {
    SoftwareVersion {
        app: v("1.0.0"),
        base: v("3.1.0"),
    }
}

/// A format-1 appliance at app 1.0.0 / base 3.1.0 with `sessions` sessions.
fn appliance(root: &Path, sessions: u64) -> DataDir {
    let dir = DataDir::new(root);
    Appliance::init(
        dir.clone(),
        InitOptions {
            name: "a".into(),
            listen: "127.0.0.1:7400".into(),
            site_hostname: None,
            psk_text: None,
            software: old_software(),
            identity_pem: None,
            vendor_public_key: Some(vendor().public_key()),
            store_format: Some(1),
        },
    )
    .expect("init");
    let store = open_store(&dir);
    assert_eq!(store.format_version(), Ok(1));
    for index in 0..sessions {
        let content = vec![index as u8; 100 + index as usize];
        store
            .import_recording(
                &content[..],
                ImportInfo {
                    origin: NodeId([1; 16]),
                    started_unix_ms: 1_000 * index,
                    ended_unix_ms: 1_000_000 - 1_000 * index,
                    ended_normally: true,
                    expected_len: None,
                    expected_root: None,
                },
            )
            .expect("import");
    }
    dir
}

fn open_store(dir: &DataDir) -> Store {
    Store::open(Arc::new(RealDisk::new(dir.store()).expect("store folder"))).expect("store opens")
}

fn package(
    folder: &Path,
    name: &str,
    kind: PackageKind,
    version: &str,
    format: u64,
    requires: &[&str],
) -> PathBuf {
    let bytes = build_package(
        &vendor(),
        name,
        kind,
        v(version),
        format,
        requires
            .iter()
            .map(|text| text.parse().expect("requirement"))
            .collect(),
        format!("the software of {name} {version}").as_bytes(),
    )
    .expect("package");
    let path = folder.join(format!("{name}-{version}.dyadpkg"));
    std::fs::write(&path, bytes).expect("write package");
    path
}

/// Base 3.2.0 (needs store format 2) and app 2.0.0 (needs base >= 3.2).
fn packages(folder: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(folder).expect("folder");
    let base = package(folder, "base", PackageKind::Base, "3.2.0", 2, &[]);
    let app = package(
        folder,
        "app",
        PackageKind::App,
        "2.0.0",
        2,
        &["base >= 3.2"],
    );
    (base, app)
}

fn skip() -> InstallOptions {
    InstallOptions {
        skip_backup_check: true,
    }
}

fn snapshot(dir: &DataDir) -> (Vec<u8>, u64, u64) {
    let settings = std::fs::read(dir.settings()).expect("settings");
    let store = open_store(dir);
    (
        settings,
        store.format_version().expect("format"),
        store.catalog_len().expect("len"),
    )
}

#[test]
fn bad_packages_are_refused_and_change_nothing() {
    let temp = tempfile::tempdir().expect("temp");
    let dir = appliance(&temp.path().join("a"), 3);
    let (base, _) = packages(&temp.path().join("pkgs"));
    let good = std::fs::read(&base).expect("read");
    let before = snapshot(&dir);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() - 5].to_vec()),
        ("tampered payload", {
            let mut bytes = good.clone();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            bytes
        }),
        ("tampered manifest", {
            let mut bytes = good.clone();
            bytes[20] ^= 1;
            bytes
        }),
        ("unsigned", {
            let mut bytes = good.clone();
            let manifest_len =
                u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]) as usize;
            for byte in &mut bytes[14 + manifest_len..14 + manifest_len + 64] {
                *byte = 0;
            }
            bytes
        }),
        (
            "another vendor's",
            build_package(
                &VendorSecretKey::from_seed([6; 32]),
                "base",
                PackageKind::Base,
                v("3.2.0"),
                2,
                Vec::new(),
                b"x",
            )
            .expect("package"),
        ),
        ("not a package", b"#!/bin/sh\necho hello\n".to_vec()),
    ];
    for (what, bytes) in cases {
        let path = temp.path().join("bad.dyadpkg");
        std::fs::write(&path, bytes).expect("write");
        let error = update::install_file(&dir, &path, skip(), 1).expect_err(what);
        assert!(
            matches!(error, UpdateError::Package { .. }),
            "{what}: {error}"
        );
        assert!(
            error.to_string().contains("nothing was changed"),
            "{what}: {error}"
        );
        assert_eq!(snapshot(&dir), before, "{what} changed something");
        assert!(!dir.install_journal().exists());
    }
}

#[test]
fn dependency_order_check_and_install_from_a_folder() {
    let temp = tempfile::tempdir().expect("temp");
    let dir = appliance(&temp.path().join("a"), SESSIONS);
    let folder = temp.path().join("pkgs");
    let (_, app) = packages(&folder);
    // An older app package and a package of another vendor are not offered.
    package(&folder, "app", PackageKind::App, "0.9.0", 1, &[]);

    // The app alone: refused, naming the base package to install first.
    let error = update::install_file(&dir, &app, skip(), 1).expect_err("needs base");
    let text = error.to_string();
    assert!(
        text.contains("base >= 3.2") && text.contains("base 3.2.0"),
        "{text}"
    );
    assert!(text.contains("base-3.2.0.dyadpkg"), "{text}");

    let check = update::check(&dir, &folder).expect("check");
    let offered: Vec<String> = check
        .applicable
        .iter()
        .map(|c| c.manifest.label())
        .collect();
    assert_eq!(offered, vec!["base 3.2.0", "app 2.0.0"]);

    let outcomes = update::install_from(&dir, &folder, skip(), 1).expect("install");
    assert_eq!(outcomes.len(), 2);
    assert_eq!(outcomes[0].to.base, v("3.2.0"));
    let migration = outcomes[0].migration.as_ref().expect("base needs format 2");
    assert_eq!(
        (
            migration.from_format,
            migration.to_format,
            migration.sessions_indexed
        ),
        (1, 2, SESSIONS)
    );
    assert_eq!(
        outcomes[1].to,
        SoftwareVersion {
            app: v("2.0.0"),
            base: v("3.2.0")
        }
    );
    let installed = update::installed(&dir).expect("installed");
    assert_eq!(installed.software, outcomes[1].to);
    assert_eq!(installed.store_format, 2);
    // Installed packages no longer appear; installing again does nothing.
    assert!(update::check(&dir, &folder)
        .expect("check")
        .applicable
        .is_empty());
    assert!(update::install_from(&dir, &folder, skip(), 2)
        .expect("nothing")
        .is_empty());
    assert_eq!(
        update::last_install_report(&dir).expect("report").outcome,
        "installed"
    );

    // An app needing a base that is neither installed nor available.
    let lone = temp.path().join("lone");
    std::fs::create_dir_all(&lone).expect("folder");
    package(&lone, "app", PackageKind::App, "3.0.0", 2, &["base >= 4.0"]);
    let error = update::install_from(&dir, &lone, skip(), 3).expect_err("needs base 4");
    assert!(error.to_string().contains("base >= 4.0.0"), "{error}");
}

#[test]
fn the_migration_keeps_every_session_and_indexes_them_by_end_time() {
    let temp = tempfile::tempdir().expect("temp");
    let dir = appliance(&temp.path().join("a"), SESSIONS);
    let before_scan = open_store(&dir)
        .sessions_ended_between(0, u64::MAX, 1000)
        .expect("scan");
    let middle = open_store(&dir)
        .sessions_ended_between(990_000, 996_000, 1000)
        .expect("scan");
    assert_eq!(before_scan.len() as u64, SESSIONS);
    let folder = temp.path().join("pkgs");
    let (base, _) = packages(&folder);
    update::install_file(&dir, &base, skip(), 1).expect("install");
    let store = open_store(&dir);
    assert_eq!(store.format_version(), Ok(2));
    assert_eq!(
        store
            .sessions_ended_between(0, u64::MAX, 1000)
            .expect("index"),
        before_scan
    );
    assert_eq!(
        store
            .sessions_ended_between(990_000, 996_000, 1000)
            .expect("index"),
        middle
    );
    assert_eq!(store.verify_all().expect("verify").bad_chunks.len(), 0);
    // New sessions go into the index too.
    let meta = store
        .import_recording(
            &b"after the upgrade"[..],
            ImportInfo {
                origin: NodeId([1; 16]),
                started_unix_ms: 1,
                ended_unix_ms: 5,
                ended_normally: true,
                expected_len: None,
                expected_root: None,
            },
        )
        .expect("import");
    assert_eq!(
        store.sessions_ended_between(0, 6, 10).expect("index"),
        vec![meta]
    );
}

#[test]
fn a_relationship_a_running_serve_a_missing_backup_or_vendor_key_refuse() {
    let temp = tempfile::tempdir().expect("temp");
    let dir = appliance(&temp.path().join("a"), 1);
    let (base, _) = packages(&temp.path().join("pkgs"));

    // In a relationship.
    {
        let store = open_store(&dir);
        let mut state = ReplicaState::initial(NodeId([1; 16]));
        state.role = Role::Backup;
        state.epoch = Epoch {
            counter: 5,
            node: NodeId([2; 16]),
        };
        state.peer = Some(PeerRecord {
            node_id: NodeId([2; 16]),
            name: "b".into(),
            certificate_fingerprint: [0; 32],
            address: "127.0.0.1:7401".into(),
        });
        store
            .local_set(REPLICA_STATE_KEY, &state.to_json())
            .expect("state");
    }
    let error = update::install_file(&dir, &base, skip(), 1).expect_err("in a relationship");
    assert!(
        error.to_string().contains("break the relationship first"),
        "{error}"
    );
    {
        let store = open_store(&dir);
        store
            .local_set(
                REPLICA_STATE_KEY,
                &ReplicaState::initial(NodeId([1; 16])).to_json(),
            )
            .expect("standalone");
    }

    // A running serve holds the lock.
    {
        let _lock = dyad_node::appliance::lock_data_dir(&dir).expect("lock");
        let error = update::install_file(&dir, &base, skip(), 1).expect_err("serve runs");
        assert!(error.to_string().contains("stop `dyad serve`"), "{error}");
    }

    // The configuration changed and no backup was taken since.
    {
        let store = open_store(&dir);
        // The store records the change's time in the change's own transaction.
        store.set_clock(std::sync::Arc::new(|| 1_000));
        store
            .config_set(
                "site/retention_days",
                b"90",
                Epoch {
                    counter: 1,
                    node: NodeId([1; 16]),
                },
            )
            .expect("config");
        assert_eq!(store.config_changed_unix_ms().expect("read"), Some(1_000));
    }
    let no_check = InstallOptions {
        skip_backup_check: false,
    };
    let error = update::install_file(&dir, &base, no_check, 2_000).expect_err("no backup");
    assert!(error.to_string().contains("--skip-backup-check"), "{error}");
    // A backup older than the change does not count; a newer one (text or JSON) does.
    open_store(&dir)
        .local_set(LAST_BACKUP_TAKEN_KEY, b"999")
        .expect("old backup");
    assert!(update::install_file(&dir, &base, no_check, 2_000).is_err());
    open_store(&dir)
        .local_set(LAST_BACKUP_TAKEN_KEY, b" 1500\n")
        .expect("new backup");
    assert_eq!(snapshot(&dir).1, 1);

    // No vendor key configured.
    std::fs::rename(dir.vendor_public_key(), temp.path().join("saved.pub")).expect("move key");
    let error = update::install_file(&dir, &base, no_check, 2_000).expect_err("no vendor key");
    assert!(
        error.to_string().contains("no vendor key is configured"),
        "{error}"
    );
    std::fs::rename(temp.path().join("saved.pub"), dir.vendor_public_key()).expect("key back");

    update::install_file(&dir, &base, no_check, 2_000).expect("backup taken after the change");
    assert_eq!(snapshot(&dir).1, 2);
}

#[test]
fn download_key_identifies_the_appliance_and_fetch_copies_what_it_needs() {
    let temp = tempfile::tempdir().expect("temp");
    let dir = appliance(&temp.path().join("a"), 0);
    let folder = temp.path().join("vendor");
    packages(&folder);
    package(&folder, "app", PackageKind::App, "1.0.0", 1, &[]);
    let now = 1_700_000_000_000;
    let key = update::download_key(&dir, now).expect("key");
    let out = temp.path().join("usb");
    let report = update::fetch(
        key.as_bytes(),
        &folder,
        &out,
        Some(&vendor().public_key()),
        now + 3_600_000,
    )
    .expect("fetch");
    let appliance = Appliance::open(dir.clone()).expect("open");
    assert_eq!(report.key.node_id, appliance.settings.node_id);
    assert_eq!(report.key.software, old_software());
    assert_eq!(report.key.store_format, 1);
    assert_eq!(
        report.key.certificate_fingerprint(),
        appliance.identity.fingerprint()
    );
    let mut copied: Vec<String> = report
        .copied
        .iter()
        .map(|path| {
            path.file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    copied.sort();
    assert_eq!(copied, vec!["app-2.0.0.dyadpkg", "base-3.2.0.dyadpkg"]);
    // The fetched files install on the appliance.
    assert_eq!(
        update::install_from(&dir, &out, skip(), now)
            .expect("install")
            .len(),
        2
    );

    // A clock off by more than the tolerance.
    let late = now + download_key::DOWNLOAD_KEY_CLOCK_TOLERANCE_MS + 1;
    let error = update::fetch(key.as_bytes(), &folder, &out, None, late).expect_err("skew");
    assert!(error.to_string().contains("NTP"), "{error}");
    // Any altered field breaks the signature.
    let altered = key.replace("\"app_version\": \"1.0.0\"", "\"app_version\": \"0.1.0\"");
    assert_ne!(altered, key);
    let error = update::fetch(altered.as_bytes(), &folder, &out, None, now).expect_err("altered");
    assert!(error.to_string().contains("altered or forged"), "{error}");
    assert!(update::fetch(b"{}", &folder, &out, None, now).is_err());
}

fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_folder(&entry.path(), &target);
        } else if entry.file_name() != "serve.lock" {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn dyad(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dyad"))
        .args(args)
        .output()
        .expect("run dyad")
}

/// SIGKILL of a real `dyad update install --from` (base with a migration, then app) at random
/// moments: afterwards the appliance always reports and recovers to the old or the new
/// version, with a consistent store holding every session, and a new install completes.
#[test]
fn sigkill_at_random_points_of_an_install_always_recovers() {
    let temp = tempfile::tempdir().expect("temp");
    let template = appliance(&temp.path().join("template"), 150);
    let folder = temp.path().join("pkgs");
    packages(&folder);
    let folder_text = folder.to_str().expect("utf-8").to_string();
    let install = |data: &Path| {
        Command::new(env!("CARGO_BIN_EXE_dyad"))
            .args([
                "update",
                "install",
                "--skip-backup-check",
                "--from",
                &folder_text,
                "--data-dir",
            ])
            .arg(data)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn dyad")
    };
    // How long an uninterrupted install takes here.
    let timing = temp.path().join("timing");
    copy_folder(&template.root, &timing);
    let started = Instant::now();
    assert!(install(&timing).wait().expect("wait").success());
    let full_us = started.elapsed().as_micros().max(1) as u64;

    let old = old_software();
    let new = SoftwareVersion {
        app: v("2.0.0"),
        base: v("3.2.0"),
    };
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut interrupted = 0;
    for round in 0..10 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let data = temp.path().join(format!("round-{round}"));
        copy_folder(&template.root, &data);
        let mut child = install(&data);
        std::thread::sleep(Duration::from_micros(seed % (full_us + full_us / 5)));
        let _ = child.kill();
        let _ = child.wait();
        let dir = DataDir::new(&data);
        let had_journal = dir.install_journal().exists();
        let status = dyad(&[
            "update",
            "status",
            "--data-dir",
            data.to_str().expect("utf-8"),
        ]);
        assert!(
            status.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let text = String::from_utf8_lossy(&status.stdout).into_owned();
        assert!(
            !dir.install_journal().exists(),
            "round {round}: journal left"
        );
        if had_journal {
            interrupted += 1;
            assert!(text.contains("was interrupted"), "round {round}: {text}");
        }
        let installed = update::installed(&dir).expect("installed");
        let base_new = installed.software.base == new.base;
        assert!(
            installed.software == old
                || installed.software
                    == SoftwareVersion {
                        app: old.app,
                        base: new.base
                    }
                || installed.software == new,
            "round {round}: {:?}",
            installed.software
        );
        assert_eq!(
            installed.store_format,
            if base_new { 2 } else { 1 },
            "round {round}"
        );
        let store = open_store(&dir);
        assert_eq!(store.catalog_len(), Ok(150), "round {round}");
        assert_eq!(
            store
                .sessions_ended_between(0, u64::MAX, 1000)
                .expect("list")
                .len(),
            150
        );
        drop(store);
        // Installing again finishes the job.
        assert!(
            install(&data).wait().expect("wait").success(),
            "round {round}"
        );
        let installed = update::installed(&dir).expect("installed");
        assert_eq!(
            (installed.software, installed.store_format),
            (new, 2),
            "round {round}"
        );
    }
    eprintln!(
        "{interrupted} of 10 kills interrupted an install in progress (full install {full_us} µs)"
    );
}
