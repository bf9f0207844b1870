//! An appliance's data folder: what `dyad init` creates and every other command opens.
//!
//! ```text
//! D/appliance.json        identity and settings of this appliance (never replicated)
//! D/identity/cert.pem     its TLS certificate chain (0644)
//! D/identity/key.pem      its TLS private key (0600)
//! D/psk.key               the inter-appliance key (0600)
//! D/store/                the crash-safe store (metadata database and recording files)
//! D/admin.sock            the running `dyad serve`'s command socket (0600)
//! D/serve.lock            held by the running `dyad serve`
//! D/vendor.pub            the vendor public key update packages are verified with (optional)
//! D/install-journal.json  only while an install runs or after one was interrupted
//! D/install-report.json   what the last install (or its recovery) did
//! ```
//!
//! The settings file is small JSON an operator can read; its decoder refuses unknown fields
//! and names what is wrong. This module is the one door to the folder: its lock, its store
//! (opened on the real disk with the wall clock), its vendor key.

use std::fmt;
use std::fs;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use dyad_store::disk::real::RealDisk;
use dyad_store::Store;
use dyad_wire::{NodeId, SoftwareVersion, Version};

use crate::transport::{Identity, InterApplianceKey};
use dyad_core::replica::state::{parse_lineage, parse_node_id};

/// Bumped when the settings file's meaning changes.
pub const APPLIANCE_FORMAT: u32 = 1;
/// Settings files are tiny; anything larger is not one of ours.
const SETTINGS_BYTES_MAX: u64 = 64 * 1024;

/// The software version of this build, used when `init` is not told otherwise.
pub fn build_software_version() -> SoftwareVersion {
    let parse = |text: &str| text.parse::<u16>().unwrap_or(0);
    SoftwareVersion {
        app: Version {
            major: parse(env!("CARGO_PKG_VERSION_MAJOR")),
            minor: parse(env!("CARGO_PKG_VERSION_MINOR")),
            patch: parse(env!("CARGO_PKG_VERSION_PATCH")),
        },
        base: Version {
            major: 1,
            minor: 0,
            patch: 0,
        },
    }
}

/// Parses `7.3.0` (or `7.3`): [`Version`]'s own `FromStr`, with the error as text.
pub fn parse_version(text: &str) -> Result<Version, String> {
    text.parse::<Version>().map_err(|error| error.to_string())
}

/// Where each file of a data folder lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }
    pub fn settings(&self) -> PathBuf {
        self.root.join("appliance.json")
    }
    pub fn cert(&self) -> PathBuf {
        self.root.join("identity").join("cert.pem")
    }
    pub fn private_key(&self) -> PathBuf {
        self.root.join("identity").join("key.pem")
    }
    pub fn psk(&self) -> PathBuf {
        self.root.join("psk.key")
    }
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }
    pub fn admin_socket(&self) -> PathBuf {
        self.root.join("admin.sock")
    }
    pub fn lock(&self) -> PathBuf {
        self.root.join("serve.lock")
    }
    /// The vendor public key packages are verified with (`update::trust_vendor_key`).
    pub fn vendor_public_key(&self) -> PathBuf {
        self.root.join("vendor.pub")
    }
    /// Present only while an install runs (or after one was interrupted).
    pub fn install_journal(&self) -> PathBuf {
        self.root.join("install-journal.json")
    }
    /// What the last install did.
    pub fn install_report(&self) -> PathBuf {
        self.root.join("install-report.json")
    }
}

/// This appliance's own settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplianceSettings {
    pub node_id: NodeId,
    /// The node ids of the hardware this appliance replaced, nearest first: each restore of a
    /// settings backup takes a new node id and adds the old one here (at most
    /// [`dyad_wire::limits::MAX_PREDECESSORS`]). Its peer accepts it as the successor of the
    /// appliance it pinned, and refuses the old hardware from then on.
    pub predecessors: Vec<NodeId>,
    pub name: String,
    /// `host:port` the failover port listens on.
    pub listen: String,
    pub site_hostname: Option<String>,
    pub software: SoftwareVersion,
}

/// Why a data folder could not be created or opened: always the operator's to fix.
#[derive(Debug)]
pub enum ApplianceError {
    NotInitialised(PathBuf),
    AlreadyInitialised(PathBuf),
    Settings(String),
    Io {
        context: String,
        source: std::io::Error,
    },
    Key(String),
    Identity(String),
}

impl fmt::Display for ApplianceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplianceError::NotInitialised(path) => write!(
                f,
                "{} is not an initialised data folder; run `dyad init --data-dir {}` first",
                path.display(),
                path.display()
            ),
            ApplianceError::AlreadyInitialised(path) => write!(
                f,
                "{} already holds an appliance; choose an empty folder (nothing was changed)",
                path.display()
            ),
            ApplianceError::Settings(why) => write!(f, "appliance settings: {why}"),
            ApplianceError::Io { context, source } => write!(f, "{context}: {source}"),
            ApplianceError::Key(why) => write!(f, "inter-appliance key: {why}"),
            ApplianceError::Identity(why) => write!(f, "appliance identity: {why}"),
        }
    }
}

impl std::error::Error for ApplianceError {}

fn io_context(context: String) -> impl FnOnce(std::io::Error) -> ApplianceError {
    move |source| ApplianceError::Io { context, source }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsDocument {
    format: u32,
    node_id: String,
    /// Absent in folders written before restores took new node ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    predecessors: Vec<String>,
    name: String,
    listen: String,
    site_hostname: Option<String>,
    app_version: String,
    base_version: String,
}

impl ApplianceSettings {
    /// These settings on new hardware restored from a backup of them: the node id `node`,
    /// succeeding this one (nearest first, the oldest forgotten past the limit).
    pub fn successor(&self, node: NodeId) -> ApplianceSettings {
        let mut settings = self.clone();
        settings.node_id = node;
        settings.predecessors = std::iter::once(self.node_id)
            .chain(self.predecessors.iter().copied())
            .take(dyad_wire::limits::MAX_PREDECESSORS)
            .collect();
        settings
    }

    pub fn to_json(&self) -> Vec<u8> {
        let document = SettingsDocument {
            format: APPLIANCE_FORMAT,
            node_id: self.node_id.to_string(),
            predecessors: self.predecessors.iter().map(NodeId::to_string).collect(),
            name: self.name.clone(),
            listen: self.listen.clone(),
            site_hostname: self.site_hostname.clone(),
            app_version: self.software.app.to_string(),
            base_version: self.software.base.to_string(),
        };
        let mut bytes =
            serde_json::to_vec_pretty(&document).expect("a struct of strings serializes");
        bytes.push(b'\n');
        bytes
    }

    pub fn from_json(bytes: &[u8]) -> Result<ApplianceSettings, String> {
        let document: SettingsDocument =
            serde_json::from_slice(bytes).map_err(|error| format!("not valid: {error}"))?;
        if document.format != APPLIANCE_FORMAT {
            return Err(format!(
                "format {} is not the {APPLIANCE_FORMAT} this build reads",
                document.format
            ));
        }
        let predecessors = parse_lineage("predecessors", &document.predecessors)?;
        Ok(ApplianceSettings {
            node_id: parse_node_id(&document.node_id)?,
            predecessors,
            name: document.name,
            listen: document.listen,
            site_hostname: document.site_hostname,
            software: SoftwareVersion {
                app: parse_version(&document.app_version)?,
                base: parse_version(&document.base_version)?,
            },
        })
    }
}

/// A node id no appliance has had: 128 bits from the system's secure random generator. Node
/// ids are never derived from another's (a counter or a hash of the old id), so two restores of
/// one backup onto two machines still get two ids.
pub fn new_node_id() -> Result<NodeId, String> {
    let mut node = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut node)
        .map_err(|_| "the system random generator failed".to_string())?;
    Ok(NodeId(node))
}

/// What `dyad init` needs.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub name: String,
    pub listen: String,
    pub site_hostname: Option<String>,
    /// The key text to use; `None` generates a new key.
    pub psk_text: Option<String>,
    pub software: SoftwareVersion,
    /// Operator-provided certificate chain and key (PEM); `None` generates an identity.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// The vendor key update packages must be signed with; `None`: installs are refused until
    /// one is given (`dyad update trust-vendor-key`).
    pub vendor_public_key: Option<crate::vendor_key::VendorPublicKey>,
    /// The store format to create (default: the newest); older formats make the data folder an
    /// older release would have made, for labs and upgrade tests.
    pub store_format: Option<u64>,
}

/// An opened data folder: settings, identity and key.
pub struct Appliance {
    pub dir: DataDir,
    pub settings: ApplianceSettings,
    pub identity: Identity,
    pub psk: InterApplianceKey,
}

impl Appliance {
    /// Creates a new appliance in `dir` (which must not hold one). Nothing is left behind on
    /// failure except the folder itself.
    pub fn init(dir: DataDir, options: InitOptions) -> Result<Appliance, ApplianceError> {
        if dir.settings().exists() {
            return Err(ApplianceError::AlreadyInitialised(dir.root.clone()));
        }
        if options.name.is_empty() || options.name.len() > dyad_wire::limits::MAX_NODE_NAME_BYTES {
            return Err(ApplianceError::Settings(format!(
                "the name must be 1 to {} bytes",
                dyad_wire::limits::MAX_NODE_NAME_BYTES
            )));
        }
        dyad_core::replica::check_peer_address(&options.listen, None)
            .map_err(|why| ApplianceError::Settings(format!("--listen: {why}")))?;
        let psk = match &options.psk_text {
            Some(text) => InterApplianceKey::parse(text)
                .map_err(|error| ApplianceError::Key(error.to_string()))?,
            None => crate::transport::keygen()
                .map_err(|error| ApplianceError::Key(error.to_string()))?,
        };
        let identity = match &options.identity_pem {
            Some((cert, key)) => Identity::from_pem(cert, key),
            None => Identity::generate(&options.name),
        }
        .map_err(|error| ApplianceError::Identity(error.to_string()))?;
        let settings = ApplianceSettings {
            node_id: new_node_id().map_err(ApplianceError::Identity)?,
            predecessors: Vec::new(),
            name: options.name,
            listen: options.listen,
            site_hostname: options.site_hostname,
            software: options.software,
        };
        fs::create_dir_all(dir.root.join("identity"))
            .map_err(io_context(format!("creating {}", dir.root.display())))?;
        fs::create_dir_all(dir.store())
            .map_err(io_context(format!("creating {}", dir.store().display())))?;
        identity
            .save(&dir.cert(), &dir.private_key())
            .map_err(|error| ApplianceError::Identity(error.to_string()))?;
        psk.save(&dir.psk())
            .map_err(|error| ApplianceError::Key(error.to_string()))?;
        if let Some(key) = &options.vendor_public_key {
            save_vendor_key(&dir, key)
                .map_err(|error| ApplianceError::Settings(error.to_string()))?;
        }
        {
            let disk = dyad_store::disk::real::RealDisk::new(dir.store())
                .map_err(io_context(format!("opening {}", dir.store().display())))?;
            dyad_store::Store::open_or_create_with_format(
                std::sync::Arc::new(disk),
                options.store_format.unwrap_or(dyad_store::FORMAT_VERSION),
            )
            .map_err(|error| ApplianceError::Settings(format!("creating the store: {error}")))?;
        }
        // The settings file is written last: its presence is what makes the folder initialised.
        crate::transport::write_atomically(&dir.settings(), &settings.to_json(), 0o644)
            .map_err(|error| ApplianceError::Settings(error.to_string()))?;
        Ok(Appliance {
            dir,
            settings,
            identity,
            psk,
        })
    }

    /// Opens an initialised data folder.
    pub fn open(dir: DataDir) -> Result<Appliance, ApplianceError> {
        let path = dir.settings();
        if !path.exists() {
            return Err(ApplianceError::NotInitialised(dir.root.clone()));
        }
        let bytes = crate::transport::read_limited(&path, SETTINGS_BYTES_MAX, false)
            .map_err(|error| ApplianceError::Settings(error.to_string()))?;
        let settings = ApplianceSettings::from_json(&bytes)
            .map_err(|why| ApplianceError::Settings(format!("{}: {why}", path.display())))?;
        let identity = Identity::load(&dir.cert(), &dir.private_key())
            .map_err(|error| ApplianceError::Identity(error.to_string()))?;
        let psk = InterApplianceKey::load(&dir.psk())
            .map_err(|error| ApplianceError::Key(error.to_string()))?;
        Ok(Appliance {
            dir,
            settings,
            identity,
            psk,
        })
    }

    pub fn certificate_fingerprint_hex(&self) -> String {
        dyad_wire::hex::encode(&self.identity.fingerprint().0)
    }
}

/// Checks that `path` is where a data folder could be (used before creating one).
pub fn ensure_folder(path: &Path) -> Result<(), ApplianceError> {
    fs::create_dir_all(path).map_err(io_context(format!("creating {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_refuse_damage() {
        let settings = ApplianceSettings {
            node_id: NodeId([4; 16]),
            predecessors: Vec::new(),
            name: "a".into(),
            listen: "127.0.0.1:7400".into(),
            site_hostname: Some("site.example".into()),
            software: build_software_version(),
        };
        assert_eq!(
            ApplianceSettings::from_json(&settings.to_json()),
            Ok(settings.clone())
        );
        let text = String::from_utf8(settings.to_json()).expect("utf-8");
        assert!(ApplianceSettings::from_json(
            text.replace("\"format\": 1", "\"format\": 9").as_bytes()
        )
        .is_err());
        assert!(ApplianceSettings::from_json(b"[]").is_err());
    }

    #[test]
    fn versions_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_version("7.3.1"),
            Ok(Version {
                major: 7,
                minor: 3,
                patch: 1
            })
        );
        assert_eq!(
            parse_version("7.3"),
            Ok(Version {
                major: 7,
                minor: 3,
                patch: 0
            })
        );
        assert!(parse_version("seven").unwrap_err().contains("seven"));
        assert!(parse_version("1.2.3.4").is_err());
    }
}

// ----- the folder's lock, store, clock and vendor key -----

/// The data folder could not be locked, or its store opened.
#[derive(Debug)]
pub struct DataDirError(pub String);

impl fmt::Display for DataDirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DataDirError {}

/// The wall clock as the store's clock ([`dyad_store::StoreClock`]): every store the
/// operator's processes open is given it.
pub fn wall_store_clock() -> dyad_store::StoreClock {
    Arc::new(wall_clock_ms)
}

/// The wall clock, in milliseconds since the Unix epoch.
pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Holds the data folder's lock for as long as the process serves it.
pub struct ServeLock {
    _file: File,
}

/// Takes the data folder's serve lock, refusing if another `dyad serve` holds it.
pub fn lock_data_dir(dir: &DataDir) -> Result<ServeLock, DataDirError> {
    try_lock_data_dir(dir)?.ok_or_else(|| {
        DataDirError(format!(
            "another `dyad serve` is already running on {}; stop it first (nothing was changed)",
            dir.root.display()
        ))
    })
}

/// The serve lock, or `None` while someone else holds it.
pub fn try_lock_data_dir(dir: &DataDir) -> Result<Option<ServeLock>, DataDirError> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.lock())
        .map_err(|error| DataDirError(format!("cannot open {}: {error}", dir.lock().display())))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(ServeLock { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(error)) => Err(DataDirError(format!(
            "cannot lock {}: {error}",
            dir.lock().display()
        ))),
    }
}

/// Opens the appliance's store on the real disk.
pub fn open_store(dir: &DataDir) -> Result<Store, DataDirError> {
    let disk = RealDisk::new(dir.store()).map_err(|error| {
        DataDirError(format!(
            "cannot open the store folder {}: {error}",
            dir.store().display()
        ))
    })?;
    let store = Store::open(Arc::new(disk))
        .map_err(|error| DataDirError(format!("cannot open the store: {error}")))?;
    store.set_clock(wall_store_clock());
    Ok(store)
}

/// Stores the vendor key packages are verified with (at init, or later with
/// `dyad update trust-vendor-key`).
pub fn save_vendor_key(
    dir: &DataDir,
    key: &crate::vendor_key::VendorPublicKey,
) -> Result<(), crate::transport::FileError> {
    crate::transport::write_atomically(&dir.vendor_public_key(), key.to_text().as_bytes(), 0o644)
}

/// Imports a recording file as a completed local session (used by the admin socket and by the
/// offline `session import`).
pub fn import_session(
    store: &Store,
    appliance: &Appliance,
    path: &std::path::Path,
    started_unix_ms: Option<u64>,
    ended_unix_ms: Option<u64>,
) -> Result<dyad_store::SessionMeta, dyad_store::StoreError> {
    let now = wall_clock_ms();
    let info = dyad_store::ImportInfo {
        origin: appliance.settings.node_id,
        started_unix_ms: started_unix_ms.unwrap_or(now),
        ended_unix_ms: ended_unix_ms.unwrap_or(now),
        ended_normally: true,
        expected_len: None,
        expected_root: None,
    };
    store.import_recording_file(path, info)
}
