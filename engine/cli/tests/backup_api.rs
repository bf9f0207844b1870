//! Settings backup through the library and the command functions, without servers: round trip,
//! wrong passphrase, every truncation, bit flips, newer formats, older target software, and no
//! session id reused after a restore.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use dyad::cli;
use dyad_node::appliance::{build_software_version, Appliance, DataDir, InitOptions};
use dyad_node::backup::{
    self, envelope, BackupError, EnvelopeError, KdfParams, OpenError, TargetVersion,
};
use dyad_store::ImportInfo;

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("dyad-backup-api-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch folder");
        Scratch(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn passphrase_file(path: &Path, text: &str) -> PathBuf {
    fs::write(path, format!("{text}\n")).expect("write passphrase");
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod");
    path.to_path_buf()
}

/// An appliance with configuration and `sessions` of its own sessions.
fn appliance_with_data(root: &Path, sessions: u64) -> Appliance {
    fs::create_dir_all(root).expect("folder");
    let appliance = Appliance::init(
        DataDir::new(root),
        InitOptions {
            name: "b".into(),
            listen: "127.0.0.1:7411".into(),
            site_hostname: Some("site.example".into()),
            psk_text: None,
            software: build_software_version(),
            identity_pem: None,
            vendor_public_key: None,
            store_format: None,
        },
    )
    .expect("init");
    cli::config_write(root, "site/name".into(), Some("north".into())).expect("config");
    let store = dyad_node::appliance::open_store(&DataDir::new(root)).expect("store");
    for index in 0..sessions {
        let info = ImportInfo {
            origin: appliance.settings.node_id,
            started_unix_ms: 1,
            ended_unix_ms: 2,
            ended_normally: true,
            expected_len: None,
            expected_root: None,
        };
        let data = format!("recording {index}").repeat(100);
        store
            .import_recording(data.as_bytes(), info)
            .expect("import");
    }
    appliance
}

fn create_backup(scratch: &Scratch, root: &Path) -> (PathBuf, PathBuf) {
    let pass = passphrase_file(&scratch.path("pass"), "a long enough passphrase");
    let out = scratch.path("settings.dyadbackup");
    cli::backup_create_with(root, &out, &pass, KdfParams::INSECURE_FOR_TESTS).expect("create");
    (out, pass)
}

#[test]
fn backup_round_trips_and_records_when_it_was_taken() {
    let scratch = Scratch::new("round-trip");
    let old = scratch.path("old");
    let appliance = appliance_with_data(&old, 2);
    let (file, pass) = create_backup(&scratch, &old);
    let mode = fs::metadata(&file).expect("file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let store = dyad_node::appliance::open_store(&DataDir::new(&old)).expect("store");
    let taken = store
        .local_get(backup::LAST_BACKUP_TAKEN_KEY)
        .expect("read")
        .expect("the time of the backup is recorded");
    assert!(
        String::from_utf8(taken)
            .expect("text")
            .parse::<u64>()
            .expect("number")
            > 0
    );
    drop(store);

    let new = scratch.path("new");
    cli::backup_restore(&new, &file, &pass, None, None).expect("restore");
    let restored = Appliance::open(DataDir::new(&new)).expect("open");
    // The same appliance on new hardware: everything but the node id, which is new and names
    // the old one as its predecessor.
    assert_ne!(restored.settings.node_id, appliance.settings.node_id);
    assert_eq!(
        restored.settings,
        appliance.settings.successor(restored.settings.node_id)
    );
    assert_eq!(
        restored.identity.fingerprint(),
        appliance.identity.fingerprint()
    );
    assert_eq!(restored.psk.fingerprint(), appliance.psk.fingerprint());
    let store = dyad_node::appliance::open_store(&DataDir::new(&new)).expect("store");
    assert_eq!(
        store.config_get("site/name").expect("get").as_deref(),
        Some(&b"north"[..])
    );
    assert_eq!(
        store.catalog_len().expect("len"),
        0,
        "recordings are not in a backup"
    );
    // Inspect with and without a dry run works on the file.
    drop(store);
    cli::backup_inspect(&file, &pass, None).expect("inspect");
    cli::backup_inspect(&file, &pass, Some(&new)).expect("dry run against an appliance");
    cli::backup_inspect(&file, &pass, Some(&scratch.path("empty"))).expect("dry run, fresh");
}

/// A restored appliance is a new node: its own sessions are numbered under its new node id,
/// so no id the old hardware gave (before or after the backup) can come again.
#[test]
fn restored_appliance_never_reuses_a_session_id() {
    let scratch = Scratch::new("ids");
    let old = scratch.path("old");
    let appliance = appliance_with_data(&old, 3);
    let (file, pass) = create_backup(&scratch, &old);
    let high = dyad_node::appliance::open_store(&DataDir::new(&old))
        .expect("store")
        .high_water_marks()
        .expect("marks")[&appliance.settings.node_id];
    assert_eq!(high, 3);
    let new = scratch.path("new");
    cli::backup_restore(&new, &file, &pass, None, None).expect("restore");
    let recording = scratch.path("recording.bin");
    fs::write(&recording, vec![7u8; 50_000]).expect("recording");
    cli::session_import(&new, recording, None, None).expect("import on the restored appliance");
    let store = dyad_node::appliance::open_store(&DataDir::new(&new)).expect("store");
    let sessions = store.catalog_list().expect("list");
    assert_eq!(sessions.len(), 1);
    let restored = Appliance::open(DataDir::new(&new)).expect("open");
    assert_ne!(sessions[0].id.origin, appliance.settings.node_id);
    assert_eq!(sessions[0].id.origin, restored.settings.node_id);
    assert_eq!(
        restored.settings.predecessors,
        vec![appliance.settings.node_id]
    );
}

#[test]
fn wrong_passphrase_truncation_and_bit_flips_are_refused_and_write_nothing() {
    let scratch = Scratch::new("damage");
    let old = scratch.path("old");
    appliance_with_data(&old, 1);
    let (file, _pass) = create_backup(&scratch, &old);
    let bytes = fs::read(&file).expect("read");
    let target = scratch.path("new");

    let wrong = passphrase_file(&scratch.path("wrong"), "not the passphrase at all");
    let error = cli::backup_restore(&target, &file, &wrong, None, None).expect_err("wrong");
    assert!(
        error.message.contains("passphrase is wrong"),
        "{}",
        error.message
    );
    // The operator's to fix, and the exit code says so.
    assert_eq!(error.blame, dyad_core::blame::Blame::Operator);
    assert_eq!(error.exit_code(), 64);
    assert!(!target.exists());

    for len in 0..bytes.len() {
        match backup::restore(
            &bytes[..len],
            b"a long enough passphrase",
            &target,
            TargetVersion::default(),
        ) {
            Err(BackupError::Envelope(EnvelopeError::Truncated { .. })) => {}
            other => panic!("truncated to {len} bytes: {other:?}"),
        }
    }
    // One flipped bit per byte, everywhere: header, public section, ciphertext and tag.
    for index in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[index] ^= 1 << (index % 8);
        let result = backup::restore(
            &damaged,
            b"a long enough passphrase",
            &target,
            TargetVersion::default(),
        );
        assert!(result.is_err(), "flipped byte {index} was accepted");
    }
    assert!(!target.exists(), "a refused restore writes nothing");
    let leftovers: Vec<_> = fs::read_dir(&scratch.0)
        .expect("list")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.contains("restoring"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A tampered ciphertext byte is reported as such.
    let mut tampered = bytes.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_eq!(
        backup::restore(
            &tampered,
            b"a long enough passphrase",
            &target,
            TargetVersion::default()
        ),
        Err(BackupError::Open(OpenError::WrongPassphraseOrTampered))
    );
}

#[test]
fn newer_format_and_older_target_software_are_refused_by_name() {
    let scratch = Scratch::new("versions");
    let old = scratch.path("old");
    let appliance = appliance_with_data(&old, 0);
    let (file, pass) = create_backup(&scratch, &old);
    let bytes = fs::read(&file).expect("read");
    let target = scratch.path("new");

    let mut newer = bytes.clone();
    newer[8..10].copy_from_slice(&(envelope::ENVELOPE_FORMAT + 1).to_le_bytes());
    let newer_file = scratch.path("newer.dyadbackup");
    fs::write(&newer_file, &newer).expect("write");
    let error = cli::backup_restore(&target, &newer_file, &pass, None, None).expect_err("newer");
    assert!(
        error.message.contains("newer version of dyad"),
        "{}",
        error.message
    );

    let software = appliance.settings.software;
    assert!(
        software.app
            > dyad_wire::Version {
                major: 0,
                minor: 0,
                patch: 0
            },
        "this build's version is above 0.0.0"
    );
    let error = cli::backup_restore(&target, &file, &pass, Some("0.0.0"), None)
        .expect_err("older software");
    assert!(
        error.message.contains(&software.to_string()),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("same or a newer"),
        "{}",
        error.message
    );
    let error = cli::backup_restore(&target, &file, &pass, None, Some("0.1.0"))
        .expect_err("older base software");
    assert!(error.message.contains("(base 0.1.0)"), "{}", error.message);
    assert!(!target.exists());
    cli::backup_restore(&target, &file, &pass, None, Some("99.0.0")).expect("newer base");
    let restored = Appliance::open(DataDir::new(&target)).expect("open");
    assert_eq!(restored.settings.software.base.major, 99);
}

#[test]
fn certificate_export_and_import_between_appliances() {
    let scratch = Scratch::new("cert");
    let a = scratch.path("a");
    let b = scratch.path("b");
    let first = appliance_with_data(&a, 0);
    fs::create_dir_all(&b).expect("folder");
    Appliance::init(
        DataDir::new(&b),
        InitOptions {
            name: "c".into(),
            listen: "127.0.0.1:7412".into(),
            site_hostname: None,
            psk_text: None,
            software: build_software_version(),
            identity_pem: None,
            vendor_public_key: None,
            store_format: None,
        },
    )
    .expect("init");
    let pass = passphrase_file(&scratch.path("cert-pass"), "certificate passphrase");
    let out = scratch.path("cert.dyadcert");
    cli::cert_export_with(&a, &out, &pass, KdfParams::INSECURE_FOR_TESTS).expect("export");
    assert!(
        DataDir::new(&a).private_key().exists(),
        "export removes nothing"
    );
    let again = cli::cert_export_with(&a, &out, &pass, KdfParams::INSECURE_FOR_TESTS);
    assert!(again.is_err(), "an existing file is not overwritten");
    // A settings backup is not a certificate export.
    let (backup_file, _) = create_backup(&scratch, &a);
    let error = cli::cert_import(&b, &backup_file, &pass).expect_err("wrong kind");
    assert!(
        error.message.contains("not a certificate export"),
        "{}",
        error.message
    );
    cli::cert_import(&b, &out, &pass).expect("import");
    let imported = Appliance::open(DataDir::new(&b)).expect("open");
    assert_eq!(
        imported.identity.fingerprint(),
        first.identity.fingerprint()
    );
}
