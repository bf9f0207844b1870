//! `dyad factory-reset`: erase an appliance's data, key and identity, for returning or
//! disposing of the hardware.
//!
//! Resetting one appliance of a pair would leave its peer pinned to a certificate that no
//! longer exists, and a primary's reset would lose whatever the backup lacks, so a reset is
//! refused while the replica state names a relationship. The one exception is hardware that
//! was replaced by a restore of its own settings backup: the relationship then lives on in
//! the new hardware, and the old one must be wiped *because* it still holds the same identity.
//! The operator says so with `--replaced`, which is accepted only on an appliance that took
//! a settings backup.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use dyad_wire::Role;

use crate::appliance::{Appliance, DataDir};
use dyad_core::replica::state::ReplicaState;

use super::{BackupError, LAST_BACKUP_TAKEN_KEY, REPLICA_STATE_KEY};

/// What a reset is asked to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResetOptions {
    /// The operator confirmed the erasure.
    pub confirmed: bool,
    /// The appliance was replaced by new hardware restored from its settings backup.
    pub replaced: bool,
}

/// What was (or would be) erased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResetReport {
    pub name: String,
    pub node_id: String,
    pub sessions: u64,
    pub config_entries: usize,
    pub paths: Vec<PathBuf>,
}

impl ResetReport {
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "appliance {} (node id {}): {} session recording(s), {} site configuration key(s), \
             its identity (certificate and private key) and its inter-appliance key",
            self.name, self.node_id, self.sessions, self.config_entries
        )];
        lines.extend(
            self.paths
                .iter()
                .map(|path| format!("  {}", path.display())),
        );
        lines
    }
}

/// Overwrites a small secret file with zeros before it is removed, so that its bytes are not
/// left in the freed blocks of a plain file system (journals and SSD remapping may still hold
/// copies: wipe the disk to dispose of the hardware).
fn scrub(path: &Path) -> Result<(), BackupError> {
    let Ok(metadata) = fs::metadata(path) else {
        return Ok(());
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|error| BackupError::Io(format!("opening {}: {error}", path.display())))?;
    let zeros = vec![0u8; usize::try_from(metadata.len()).unwrap_or(0).min(1 << 20)];
    file.write_all(&zeros)
        .and_then(|()| file.sync_all())
        .map_err(|error| BackupError::Io(format!("overwriting {}: {error}", path.display())))
}

/// Erases the appliance in `dir` (or, unconfirmed, says what would be erased and refuses).
pub fn factory_reset(dir: &DataDir, options: ResetOptions) -> Result<ResetReport, BackupError> {
    let lock = crate::appliance::lock_data_dir(dir)
        .map_err(|error| BackupError::Refused(error.to_string()))?;
    let appliance =
        Appliance::open(dir.clone()).map_err(|error| BackupError::Refused(error.to_string()))?;
    let (state, last_backup, sessions, config_entries) = {
        let store = crate::appliance::open_store(dir).map_err(|error| BackupError::Io(error.0))?;
        let store_error = |error: dyad_store::StoreError| BackupError::Io(error.to_string());
        let state = store
            .local_get(REPLICA_STATE_KEY)
            .map_err(store_error)?
            .map(|bytes| ReplicaState::from_json(&bytes))
            .transpose()
            .map_err(BackupError::Io)?;
        let last_backup = store
            .local_get(LAST_BACKUP_TAKEN_KEY)
            .map_err(store_error)?;
        let sessions = store.catalog_len().map_err(store_error)?;
        let config_entries = store.config_list("").map_err(store_error)?.len();
        (state, last_backup, sessions, config_entries)
    };
    let report = ResetReport {
        name: appliance.settings.name.clone(),
        node_id: appliance.settings.node_id.to_string(),
        sessions,
        config_entries,
        paths: vec![
            dir.settings(),
            dir.private_key(),
            dir.cert(),
            dir.psk(),
            dir.store(),
        ],
    };
    if let Some(state) = state
        .as_ref()
        .filter(|state| state.role != Role::Standalone)
    {
        let peer = state.peer.as_ref().map_or("its peer".to_string(), |peer| {
            format!("{} at {}", peer.name, peer.address)
        });
        if !options.replaced {
            return Err(BackupError::Refused(format!(
                "this appliance is the {} in a failover relationship with {peer}; run `dyad \
                 break` first (both appliances running), or, if new hardware restored from this \
                 appliance's settings backup has taken its place, add --replaced; nothing was \
                 erased",
                dyad_wire::Role::name(state.role)
            )));
        }
        if last_backup.is_none() {
            return Err(BackupError::Refused(format!(
                "--replaced: no settings backup was ever taken on this appliance, so no new \
                 hardware can have been restored from it; it is still the {} of the \
                 relationship with {peer}; run `dyad break` first; nothing was erased",
                dyad_wire::Role::name(state.role)
            )));
        }
    }
    if !options.confirmed {
        let mut text = String::from("factory reset refused without --yes; it would erase:\n");
        text.push_str(&report.lines().join("\n"));
        return Err(BackupError::Refused(text));
    }
    // The settings file goes first: without it the folder is no longer an appliance, so an
    // interrupted reset cannot leave a half-erased appliance that still starts.
    fs::remove_file(dir.settings()).map_err(|error| {
        BackupError::Io(format!("removing {}: {error}", dir.settings().display()))
    })?;
    for secret in [dir.private_key(), dir.psk()] {
        scrub(&secret)?;
    }
    for path in [dir.root.join("identity"), dir.store()] {
        if path.exists() {
            fs::remove_dir_all(&path).map_err(|error| {
                BackupError::Io(format!("removing {}: {error}", path.display()))
            })?;
        }
    }
    if dir.psk().exists() {
        fs::remove_file(dir.psk()).map_err(|error| {
            BackupError::Io(format!("removing {}: {error}", dir.psk().display()))
        })?;
    }
    let _ = fs::remove_file(dir.admin_socket());
    drop(lock);
    let _ = fs::remove_file(dir.lock());
    fs::File::open(&dir.root)
        .and_then(|root| root.sync_all())
        .map_err(|error| BackupError::Io(format!("syncing {}: {error}", dir.root.display())))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::appliance::{build_software_version, ensure_folder, InitOptions};
    use dyad_wire::NodeId;

    fn init(dir: &Path) -> Appliance {
        let _ = fs::remove_dir_all(dir);
        ensure_folder(dir).expect("folder");
        Appliance::init(
            DataDir::new(dir),
            InitOptions {
                name: "old".into(),
                listen: "127.0.0.1:7498".into(),
                site_hostname: None,
                psk_text: None,
                software: build_software_version(),
                identity_pem: None,
                vendor_public_key: None,
                store_format: None,
            },
        )
        .expect("init")
    }

    fn set_state(dir: &DataDir, role: Role) {
        let store = crate::appliance::open_store(dir).expect("store");
        let mut state = ReplicaState::initial(NodeId([1; 16]));
        state.role = role;
        state.peer = Some(dyad_core::replica::PeerRecord {
            node_id: NodeId([2; 16]),
            name: "primary".into(),
            certificate_fingerprint: [3; 32],
            address: "127.0.0.1:7497".into(),
        });
        store
            .local_set(REPLICA_STATE_KEY, &state.to_json())
            .expect("state");
    }

    #[test]
    fn a_member_of_a_pair_is_not_reset_unless_replaced_after_a_backup() {
        let root = std::env::temp_dir().join(format!("dyad-reset-{}", std::process::id()));
        init(&root);
        let dir = DataDir::new(&root);
        set_state(&dir, Role::Backup);
        let confirmed = ResetOptions {
            confirmed: true,
            replaced: false,
        };
        let refused = factory_reset(&dir, confirmed).expect_err("in a relationship");
        assert!(refused
            .to_string()
            .contains("backup in a failover relationship"));
        let replaced = ResetOptions {
            confirmed: true,
            replaced: true,
        };
        let refused = factory_reset(&dir, replaced).expect_err("never backed up");
        assert!(refused.to_string().contains("no settings backup"));
        crate::appliance::open_store(&dir)
            .expect("store")
            .local_set(LAST_BACKUP_TAKEN_KEY, b"1")
            .expect("mark");
        let unconfirmed = ResetOptions {
            confirmed: false,
            replaced: true,
        };
        let refused = factory_reset(&dir, unconfirmed).expect_err("needs --yes");
        assert!(refused.to_string().contains("psk.key"), "{refused}");
        assert!(dir.settings().exists());
        factory_reset(&dir, replaced).expect("reset");
        let left: Vec<_> = fs::read_dir(&root).expect("list").collect();
        assert!(left.is_empty(), "{left:?}");
        assert!(Appliance::open(dir).is_err());
        fs::remove_dir_all(&root).expect("cleanup");
    }
}
