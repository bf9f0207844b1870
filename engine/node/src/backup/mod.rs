//! Settings backup and restore, certificate export and import, and factory reset: what an
//! operator needs to move an appliance to new hardware and to retire the old one.
//!
//! A settings backup is one file holding everything that makes an appliance *this* appliance
//! except its recordings (which come back by sync): its settings and node id, its identity
//! (certificate and private key), the inter-appliance key, the site configuration, the failover
//! settings and the session high-water marks. Secrets make the file sensitive, so everything
//! but a small header is sealed with a key derived from an operator's passphrase by a
//! memory-hard KDF ([`envelope`]). A restore checks the whole file before it writes anything,
//! builds the new data folder under a temporary name and renames it into place, so a failed
//! restore leaves nothing behind.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dyad_wire::{SoftwareVersion, Version};

use crate::appliance::{Appliance, DataDir};
use crate::transport::{self, PUBLIC_FILE_MODE, SECRET_FILE_MODE};
use dyad_store::disk::real::RealDisk;
use dyad_store::Store;

pub mod cert;
pub mod contents;
pub mod envelope;
pub mod inspect;
pub mod reset;

pub use contents::{
    BackupContents, StoreDocument, StoreSettings, REPLICA_STATE_KEY, RESTORED_SEQUENCE_FLOOR,
};
pub use envelope::{Envelope, EnvelopeError, FileKind, KdfParams, OpenError};

pub use dyad_store::local_keys::LAST_BACKUP_TAKEN_KEY;
/// A passphrase file, at most.
pub const PASSPHRASE_FILE_BYTES_MAX: u64 = 4096;
/// The shortest passphrase a new file is sealed with.
pub const PASSPHRASE_BYTES_MIN: usize = 8;

/// Why a backup, restore, export, import or reset did not happen. Nothing was changed.
#[derive(Debug, PartialEq, Eq)]
pub enum BackupError {
    // --- The file: damaged, cut short, from elsewhere or from a newer build. ---
    Envelope(EnvelopeError),
    /// Wrong passphrase or tampered file, or the KDF failed.
    Open(OpenError),
    /// The file authenticated but its contents make no sense to this build.
    Contents(String),
    WrongKind {
        expected: FileKind,
        found: FileKind,
    },
    // --- The operator's choices. ---
    /// Restoring would move the appliance to older software.
    NewerSoftware {
        backup: SoftwareVersion,
        target: SoftwareVersion,
    },
    /// The target folder, the output file or the appliance's state does not allow it.
    Refused(String),
    // --- Local I/O. ---
    Io(String),
}

impl fmt::Display for BackupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupError::Envelope(error) => write!(f, "{error} (nothing was changed)"),
            BackupError::Open(error) => write!(f, "{error} (nothing was changed)"),
            BackupError::Contents(why) => write!(
                f,
                "the file decrypted but its contents are not usable: {why} (nothing was changed)"
            ),
            BackupError::WrongKind { expected, found } => write!(
                f,
                "the file is {found}, not {expected} (nothing was changed)"
            ),
            BackupError::NewerSoftware { backup, target } => write!(
                f,
                "the backup was written by software {backup}, but the restored appliance would \
                 run {target}: restore only onto the same or a newer version (install it, then \
                 pass --app-version/--base-version naming what runs); nothing was changed"
            ),
            BackupError::Refused(why) => write!(f, "{why}"),
            BackupError::Io(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for BackupError {}

impl From<EnvelopeError> for BackupError {
    fn from(error: EnvelopeError) -> Self {
        BackupError::Envelope(error)
    }
}

impl From<OpenError> for BackupError {
    fn from(error: OpenError) -> Self {
        BackupError::Open(error)
    }
}

fn io(context: impl fmt::Display) -> impl FnOnce(std::io::Error) -> BackupError {
    move |error| BackupError::Io(format!("{context}: {error}"))
}

/// Reads a passphrase file: private (0600), small, one line; a trailing newline is not part
/// of the passphrase.
pub fn read_passphrase(path: &Path) -> Result<Vec<u8>, BackupError> {
    let mut bytes = transport::read_limited(path, PASSPHRASE_FILE_BYTES_MAX, true)
        .map_err(|error| BackupError::Refused(format!("--passphrase-file: {error}")))?;
    while matches!(bytes.last(), Some(b'\n' | b'\r')) {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(BackupError::Refused(format!(
            "--passphrase-file {} is empty",
            path.display()
        )));
    }
    Ok(bytes)
}

/// Reads a backup or export file, refusing one above the envelope's size limit unread.
pub fn read_file(path: &Path) -> Result<Vec<u8>, BackupError> {
    transport::read_limited(path, envelope::ENVELOPE_BYTES_MAX, false).map_err(
        |error| match error {
            transport::FileError::TooLarge { max_bytes, .. } => {
                BackupError::Envelope(EnvelopeError::TooLarge {
                    field: "size",
                    bytes: fs::metadata(path).map_or(max_bytes + 1, |meta| meta.len()),
                    max_bytes,
                })
            }
            other => BackupError::Io(other.to_string()),
        },
    )
}

/// Writes a new secret file (0600), refusing to replace an existing one.
pub fn write_new_file(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    if path.exists() {
        return Err(BackupError::Refused(format!(
            "{} already exists; choose a new file name (nothing was written)",
            path.display()
        )));
    }
    transport::write_atomically(path, bytes, SECRET_FILE_MODE)
        .map_err(|error| BackupError::Io(error.to_string()))
}

/// Seals a settings backup of `appliance` with the store part `store` (read in one
/// transaction, locally or by the running server).
pub fn seal_backup(
    appliance: &Appliance,
    store: StoreSettings,
    passphrase: &[u8],
    kdf: KdfParams,
    now_unix_ms: u64,
) -> Result<Vec<u8>, BackupError> {
    if passphrase.len() < PASSPHRASE_BYTES_MIN {
        return Err(BackupError::Refused(format!(
            "the passphrase must be at least {PASSPHRASE_BYTES_MIN} bytes; a backup holds the \
             appliance's private key and inter-appliance key"
        )));
    }
    let vendor_public_key = if appliance.dir.vendor_public_key().exists() {
        Some(
            crate::update::load_vendor_key(&appliance.dir)
                .map_err(|error| BackupError::Io(error.to_string()))?,
        )
    } else {
        None
    };
    let contents = BackupContents {
        taken_unix_ms: now_unix_ms,
        settings: appliance.settings.clone(),
        identity: appliance.identity.clone(),
        psk: appliance.psk.clone(),
        store,
        vendor_public_key,
    };
    let envelope = Envelope::seal(
        FileKind::SettingsBackup,
        appliance.settings.software,
        kdf,
        passphrase,
        Vec::new(),
        &contents.encode(),
    )?;
    Ok(envelope.encode())
}

/// Parses, decrypts and decodes a settings backup.
pub fn open_backup(
    bytes: &[u8],
    passphrase: &[u8],
) -> Result<(Envelope, BackupContents), BackupError> {
    let envelope = Envelope::parse(bytes)?;
    expect_kind(&envelope, FileKind::SettingsBackup)?;
    let plaintext = envelope.open(passphrase)?;
    let contents = decode_contents(&envelope, &plaintext)?;
    Ok((envelope, contents))
}

fn decode_contents(envelope: &Envelope, plaintext: &[u8]) -> Result<BackupContents, BackupError> {
    let contents = BackupContents::decode(plaintext).map_err(BackupError::Contents)?;
    if contents.settings.software != envelope.software {
        return Err(BackupError::Contents(format!(
            "the header names software {} but the settings inside name {}",
            envelope.software, contents.settings.software
        )));
    }
    Ok(contents)
}

pub(crate) fn expect_kind(envelope: &Envelope, expected: FileKind) -> Result<(), BackupError> {
    if envelope.kind != expected {
        return Err(BackupError::WrongKind {
            expected,
            found: envelope.kind,
        });
    }
    Ok(())
}

/// The software the restored appliance runs: the backup's, unless the operator says the new
/// hardware runs something else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetVersion {
    pub app: Option<Version>,
    pub base: Option<Version>,
}

impl TargetVersion {
    pub fn resolve(&self, backup: SoftwareVersion) -> SoftwareVersion {
        SoftwareVersion {
            app: self.app.unwrap_or(backup.app),
            base: self.base.unwrap_or(backup.base),
        }
    }
}

/// Refuses to move an appliance to older software: its data may use what the older one
/// cannot read.
pub fn check_target_version(
    backup: SoftwareVersion,
    target: SoftwareVersion,
) -> Result<(), BackupError> {
    if target.app < backup.app || target.base < backup.base {
        return Err(BackupError::NewerSoftware { backup, target });
    }
    Ok(())
}

/// Why `path` cannot receive a restored appliance, if it cannot.
pub fn check_fresh_folder(path: &Path) -> Result<(), BackupError> {
    let dir = DataDir::new(path);
    if dir.settings().exists() {
        return Err(BackupError::Refused(format!(
            "{} already holds an appliance; restore onto an empty or new folder (on the new \
             hardware, do not run `dyad init` first); nothing was changed",
            path.display()
        )));
    }
    match fs::read_dir(path) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::Refused(format!(
                    "{} is not empty; restore onto an empty or new folder; nothing was changed",
                    path.display()
                )));
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(BackupError::Io(format!(
            "cannot read {}: {error}",
            path.display()
        ))),
    }
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreReport {
    pub name: String,
    /// The restored appliance's new node id, and the backed-up appliance's it succeeds.
    pub node_id: String,
    pub predecessor_node_id: String,
    pub software: SoftwareVersion,
    pub backup_software: SoftwareVersion,
    pub certificate_fingerprint: String,
    pub key_fingerprint: String,
    pub config_entries: usize,
    pub local_sequence_floor: u64,
    pub conflicts: usize,
    pub vendor_key: bool,
    /// `role` and peer name, when the backup held a relationship.
    pub relationship: Option<(String, String)>,
}

/// Restores the backup in `bytes` into the fresh folder `target`.
pub fn restore(
    bytes: &[u8],
    passphrase: &[u8],
    target: &Path,
    version: TargetVersion,
) -> Result<RestoreReport, BackupError> {
    let envelope = Envelope::parse(bytes)?;
    expect_kind(&envelope, FileKind::SettingsBackup)?;
    // Cheap checks first: a refusal should not wait for the KDF.
    let software = version.resolve(envelope.software);
    check_target_version(envelope.software, software)?;
    check_fresh_folder(target)?;
    let plaintext = envelope.open(passphrase)?;
    let contents = decode_contents(&envelope, &plaintext)?;

    let name = target.file_name().ok_or_else(|| {
        BackupError::Refused(format!(
            "{} names no folder; give the new data folder's path",
            target.display()
        ))
    })?;
    let parent = match target.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io(format!("creating {}", parent.display())))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".restoring-{}", std::process::id()));
    let temp = parent.join(temp_name);
    if temp.exists() {
        fs::remove_dir_all(&temp).map_err(io(format!("removing {}", temp.display())))?;
    }
    let result = build_folder(&temp, &contents, software).and_then(|report| {
        check_fresh_folder(target)?;
        // Renaming onto an empty folder replaces it; the folder appears whole or not at all.
        fs::rename(&temp, target).map_err(io(format!(
            "moving the restored folder into place at {}",
            target.display()
        )))?;
        fs::File::open(&parent)
            .and_then(|dir| dir.sync_all())
            .map_err(io(format!("syncing {}", parent.display())))?;
        Ok(report)
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&temp);
    }
    let mut report = result?;
    report.backup_software = envelope.software;
    Ok(report)
}

fn build_folder(
    root: &Path,
    contents: &BackupContents,
    software: SoftwareVersion,
) -> Result<RestoreReport, BackupError> {
    let dir = DataDir::new(root);
    fs::create_dir_all(root.join("identity"))
        .map_err(io(format!("creating {}", root.display())))?;
    contents
        .identity
        .save(&dir.cert(), &dir.private_key())
        .map_err(|error| BackupError::Io(error.to_string()))?;
    contents
        .psk
        .save(&dir.psk())
        .map_err(|error| BackupError::Io(error.to_string()))?;
    if let Some(key) = &contents.vendor_public_key {
        crate::update::trust_vendor_key(&dir, key)
            .map_err(|error| BackupError::Io(error.to_string()))?;
    }
    // New hardware is a new node: see `docs/architecture.md`, *Identity after a restore*.
    let old_node = contents.settings.node_id;
    let node = crate::appliance::new_node_id().map_err(BackupError::Io)?;
    let floor = {
        let disk = RealDisk::new(dir.store())
            .map_err(io(format!("creating {}", dir.store().display())))?;
        let store =
            Store::open(Arc::new(disk)).map_err(|error| BackupError::Io(error.to_string()))?;
        store.set_clock(crate::appliance::wall_store_clock());
        contents
            .store
            .restore_into(&store, old_node, node)
            .map_err(|error| BackupError::Io(error.to_string()))?
    };
    let mut settings = contents.settings.successor(node);
    settings.software = software;
    // Written last, as `init` does: its presence is what makes the folder an appliance.
    transport::write_atomically(&dir.settings(), &settings.to_json(), PUBLIC_FILE_MODE)
        .map_err(|error| BackupError::Io(error.to_string()))?;
    Ok(RestoreReport {
        name: settings.name.clone(),
        node_id: node.to_string(),
        predecessor_node_id: old_node.to_string(),
        software,
        backup_software: contents.settings.software,
        certificate_fingerprint: dyad_wire::hex::encode(&contents.identity.fingerprint().0),
        key_fingerprint: contents.psk.fingerprint().to_string(),
        config_entries: contents.store.config.entries.len(),
        local_sequence_floor: floor,
        conflicts: contents.store.conflicts.len(),
        vendor_key: contents.vendor_public_key.is_some(),
        relationship: contents.store.replica_state.as_ref().and_then(|state| {
            state.peer.as_ref().map(|peer| {
                (
                    dyad_wire::Role::name(state.role).to_string(),
                    peer.name.clone(),
                )
            })
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dyad_wire::NodeId;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dyad-backup-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn sealed(contents: &BackupContents) -> Vec<u8> {
        Envelope::seal(
            FileKind::SettingsBackup,
            contents.settings.software,
            KdfParams::INSECURE_FOR_TESTS,
            b"passphrase",
            Vec::new(),
            &contents.encode(),
        )
        .expect("seal")
        .encode()
    }

    #[test]
    fn restore_builds_a_successor_with_the_same_identity_and_a_new_node_id() {
        let dir = temp_dir("restore");
        let node = NodeId([5; 16]);
        let contents = contents::tests::sample(node);
        let bytes = sealed(&contents);
        let target = dir.join("new");
        let report =
            restore(&bytes, b"passphrase", &target, TargetVersion::default()).expect("restore");
        assert_eq!(report.local_sequence_floor, RESTORED_SEQUENCE_FLOOR);
        assert_eq!(report.predecessor_node_id, node.to_string());
        let appliance = Appliance::open(DataDir::new(&target)).expect("opens");
        let new_node = appliance.settings.node_id;
        assert_ne!(new_node, node, "new hardware is a new node");
        assert_eq!(report.node_id, new_node.to_string());
        assert_eq!(appliance.settings, contents.settings.successor(new_node));
        assert_eq!(appliance.settings.predecessors, vec![node, NodeId([6; 16])]);
        assert_eq!(
            appliance.identity.fingerprint(),
            contents.identity.fingerprint()
        );
        assert_eq!(
            crate::update::load_vendor_key(&DataDir::new(&target)).ok(),
            contents.vendor_public_key
        );
        let store = crate::appliance::open_store(&DataDir::new(&target)).expect("store");
        assert_eq!(
            store.config_snapshot().expect("snapshot"),
            contents.store.config
        );
        let conflicts: Vec<_> = store
            .conflicts_list()
            .expect("conflicts")
            .into_iter()
            .map(|(_, record)| record)
            .collect();
        assert_eq!(conflicts, contents.store.conflicts);
        assert_eq!(
            store.next_local_session_id(new_node).expect("id").sequence,
            RESTORED_SEQUENCE_FLOOR
        );
        drop(store);
        // A second restore onto the same folder is refused; so is a wrong passphrase, and
        // neither leaves anything behind.
        assert!(matches!(
            restore(&bytes, b"passphrase", &target, TargetVersion::default()),
            Err(BackupError::Refused(_))
        ));
        let other = dir.join("other");
        assert_eq!(
            restore(
                &bytes,
                b"wrong passphrase",
                &other,
                TargetVersion::default()
            ),
            Err(BackupError::Open(OpenError::WrongPassphraseOrTampered))
        );
        assert!(!other.exists());
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .expect("list")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("new")]);
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn restore_onto_older_software_is_refused_and_newer_is_taken() {
        let dir = temp_dir("versions");
        let contents = contents::tests::sample(NodeId([6; 16]));
        let bytes = sealed(&contents);
        let backup = contents.settings.software;
        let older = TargetVersion {
            app: Some(Version {
                major: backup.app.major,
                minor: backup.app.minor,
                patch: 0,
            })
            .filter(|_| backup.app.patch > 0)
            .or(Some(Version {
                major: 0,
                minor: 0,
                patch: 0,
            })),
            base: None,
        };
        let refused = restore(&bytes, b"passphrase", &dir.join("a"), older);
        assert!(
            matches!(refused, Err(BackupError::NewerSoftware { .. })),
            "{refused:?}"
        );
        let text = refused.expect_err("refused").to_string();
        assert!(text.contains(&backup.to_string()), "{text}");
        let newer_base = Version {
            major: backup.base.major + 1,
            minor: 0,
            patch: 0,
        };
        let report = restore(
            &bytes,
            b"passphrase",
            &dir.join("b"),
            TargetVersion {
                app: None,
                base: Some(newer_base),
            },
        )
        .expect("newer base is fine");
        assert_eq!(report.software.base, newer_base);
        let appliance = Appliance::open(DataDir::new(dir.join("b"))).expect("opens");
        assert_eq!(appliance.settings.software.base, newer_base);
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
