//! Software updates: verifying vendor packages, installing them atomically (with the store
//! migration a package may need), recovering from an interrupted install, the appliance
//! download key for restricted networks, and the gate that paces client updates afterwards.
//!
//! An install runs with `dyad serve` stopped (it takes the serve lock): stopping the service
//! ends running syncs and cuts off sessions in progress, which is what an install must do
//! anyway, and it means nothing else writes the data folder while versions and formats change.
//! The install is made atomic by a journal (`D/install-journal.json`), written before anything
//! changes and removed last:
//!
//! 1. verify the package completely (signature, payload length and hash) and every
//!    precondition (standalone, requirements, store format, settings backup): any refusal
//!    changes nothing;
//! 2. write the journal (old and new versions and store formats);
//! 3. migrate the store if the package needs a newer format (one redb transaction per step);
//! 4. write the new installed versions to `appliance.json` (atomic rename);
//! 5. write the install report, remove the journal.
//!
//! On the next start (`dyad serve`, or any `dyad update` command), [`recover`] finds a journal
//! left by a crash and finishes the job: if the store was already migrated, the install is
//! completed (the package was verified before the journal was written); otherwise nothing had
//! changed and the install is rolled back. Either way the report says what happened and
//! `dyad status` shows it. See `docs/operator-guide.md` and `docs/storage.md`.

pub mod download_key;
pub mod package;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use dyad_wire::{Role, SoftwareVersion};

use crate::appliance::{parse_version, Appliance, DataDir};
use dyad_core::replica::state::ReplicaState;
use dyad_store::disk::real::RealDisk;
use dyad_store::replica_port::REPLICA_STATE_KEY;
use dyad_store::{Store, StoreError, CONFIG_VERSION_ZERO, FORMAT_VERSION};

pub use dyad_core::install::{recovery_decision, RecoveryDecision};
pub use package::{
    build_package, verify_package, verify_package_file, Manifest, PackageError, PackageKind,
    Requirement, VendorPublicKey, VendorSecretKey,
};

/// File name suffix of update packages in a folder.
pub const PACKAGE_SUFFIX: &str = ".dyadpkg";
pub use dyad_store::local_keys::{LAST_BACKUP_TAKEN_KEY, LEGACY_CONFIG_CHANGED_KEY};
/// Most package files looked at in one folder.
pub const FOLDER_PACKAGES_MAX: usize = 1000;
/// Largest journal or report file read.
const SMALL_FILE_BYTES_MAX: u64 = 64 * 1024;
const JOURNAL_FORMAT: u32 = 1;

/// Why an update command did not do what was asked; who must act is in the variant.
#[derive(Debug)]
pub enum UpdateError {
    /// The package file is bad (tampered, truncated, unsigned, another vendor's).
    Package { path: PathBuf, error: PackageError },
    /// A precondition the operator must fix (relationship, backup, requirements, serve).
    Refused(String),
    /// The local disk or data folder failed.
    Local(String),
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateError::Package { path, error } => write!(
                f,
                "{} refused: {error}; nothing was changed",
                path.display()
            ),
            UpdateError::Refused(text) => write!(f, "{text}"),
            UpdateError::Local(text) => write!(f, "{text}"),
        }
    }
}

impl std::error::Error for UpdateError {}

fn local(context: &str) -> impl FnOnce(String) -> UpdateError + '_ {
    move |why| UpdateError::Local(format!("{context}: {why}"))
}

fn store_error(error: StoreError) -> UpdateError {
    UpdateError::Local(format!("the store: {error}"))
}

/// What an install must know: the installed software and the store's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Installed {
    pub software: SoftwareVersion,
    pub store_format: u64,
}

/// A package found in a folder, its signature verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub path: PathBuf,
    pub manifest: Manifest,
}

/// The packages of a folder: those that verified and those that did not.
#[derive(Debug, Default)]
pub struct FolderScan {
    pub packages: Vec<Candidate>,
    pub refused: Vec<(PathBuf, PackageError)>,
}

/// Reads every `*.dyadpkg` in `folder`: manifests and signatures only (fast), checked with
/// `vendor` when given (the appliance always gives it; the vendor's fetch may not).
pub fn scan_folder(
    folder: &Path,
    vendor: Option<&VendorPublicKey>,
) -> Result<FolderScan, UpdateError> {
    let entries = std::fs::read_dir(folder).map_err(|error| {
        UpdateError::Refused(format!(
            "cannot read the folder {}: {error}",
            folder.display()
        ))
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.is_file()
                && path
                    .file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.ends_with(PACKAGE_SUFFIX))
        })
        .collect();
    paths.sort();
    if paths.len() > FOLDER_PACKAGES_MAX {
        return Err(UpdateError::Refused(format!(
            "{} holds {} packages, more than the {FOLDER_PACKAGES_MAX} looked at; keep only the \
             current ones",
            folder.display(),
            paths.len()
        )));
    }
    let mut scan = FolderScan::default();
    for path in paths {
        let read = match vendor {
            Some(vendor) => package::read_manifest_file(&path, vendor),
            None => package::read_manifest_file_unverified(&path),
        };
        match read {
            Ok(manifest) => scan.packages.push(Candidate { path, manifest }),
            Err(error) => scan.refused.push((path, error)),
        }
    }
    Ok(scan)
}

/// The packages newer than what is installed, for their kind, base packages first, then by
/// version.
pub fn applicable(software: &SoftwareVersion, packages: &[Candidate]) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = packages
        .iter()
        .filter(|candidate| {
            candidate.manifest.version > candidate.manifest.kind.installed(software)
        })
        .cloned()
        .collect();
    out.sort_by(|a, b| {
        (a.manifest.kind, a.manifest.version, &a.path).cmp(&(
            b.manifest.kind,
            b.manifest.version,
            &b.path,
        ))
    });
    out
}

/// Why `manifest` cannot be installed on `software` now, if it cannot.
fn unmet(manifest: &Manifest, software: &SoftwareVersion) -> Option<Requirement> {
    manifest
        .requirements
        .iter()
        .find(|requirement| !requirement.satisfied_by(software))
        .copied()
}

/// What to install from a folder, in order: the newest base package that applies, then the
/// newest application package whose requirements the (new) base meets. An application package
/// that needs a base neither installed nor available is refused, naming what is missing.
pub fn plan(
    software: SoftwareVersion,
    packages: &[Candidate],
) -> Result<Vec<Candidate>, UpdateError> {
    let newer = applicable(&software, packages);
    let mut plan = Vec::new();
    let mut after = software;
    let bases: Vec<&Candidate> = newer
        .iter()
        .filter(|candidate| candidate.manifest.kind == PackageKind::Base)
        .collect();
    if let Some(base) = bases
        .iter()
        .rev()
        .find(|candidate| unmet(&candidate.manifest, &after).is_none())
    {
        after.base = base.manifest.version;
        plan.push((*base).clone());
    } else if let Some(newest) = bases.last() {
        let requirement = unmet(&newest.manifest, &after).expect("no base met its requirements");
        return Err(UpdateError::Refused(format!(
            "{} needs {requirement} (installed: app {}, base {}); install a package providing \
             it first",
            newest.manifest.label(),
            software.app,
            software.base
        )));
    }
    let apps: Vec<&Candidate> = newer
        .iter()
        .filter(|candidate| candidate.manifest.kind == PackageKind::App)
        .collect();
    if let Some(app) = apps
        .iter()
        .rev()
        .find(|candidate| unmet(&candidate.manifest, &after).is_none())
    {
        plan.push((*app).clone());
    } else if let Some(newest) = apps.last() {
        let requirement = unmet(&newest.manifest, &after).expect("no app met its requirements");
        return Err(UpdateError::Refused(format!(
            "{} needs {requirement}, which is neither installed (base {}) nor among the \
             packages available; get the base package providing {requirement} from your vendor \
             and install it first",
            newest.manifest.label(),
            software.base
        )));
    }
    Ok(plan)
}

/// The vendor key this appliance trusts packages by.
pub fn load_vendor_key(dir: &DataDir) -> Result<VendorPublicKey, UpdateError> {
    let path = dir.vendor_public_key();
    if !path.exists() {
        return Err(UpdateError::Refused(format!(
            "no vendor key is configured on this appliance, so no package can be verified; \
             install the vendor's public key with `dyad update trust-vendor-key --data-dir {} \
             --vendor-public-key FILE` (or give --vendor-public-key to `dyad init`)",
            dir.root.display()
        )));
    }
    let bytes = crate::transport::read_limited(&path, SMALL_FILE_BYTES_MAX, false)
        .map_err(|error| UpdateError::Local(error.to_string()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| UpdateError::Local(format!("{} is not text", path.display())))?;
    VendorPublicKey::parse(&text)
        .map_err(|why| UpdateError::Local(format!("{}: {why}", path.display())))
}

/// Stores the vendor key (at init or later).
pub fn trust_vendor_key(dir: &DataDir, key: &VendorPublicKey) -> Result<(), UpdateError> {
    crate::transport::write_atomically(&dir.vendor_public_key(), key.to_text().as_bytes(), 0o644)
        .map_err(|error| UpdateError::Local(error.to_string()))
}

fn open_store(dir: &DataDir) -> Result<Store, UpdateError> {
    let disk = RealDisk::new(dir.store()).map_err(|error| {
        UpdateError::Local(format!("cannot open {}: {error}", dir.store().display()))
    })?;
    let store = Store::open(Arc::new(disk)).map_err(store_error)?;
    store.set_clock(crate::appliance::wall_store_clock());
    Ok(store)
}

fn lock(dir: &DataDir) -> Result<crate::appliance::ServeLock, UpdateError> {
    crate::appliance::lock_data_dir(dir).map_err(|error| {
        UpdateError::Refused(format!(
            "{error}. Updates install with the appliance stopped: stop `dyad serve` (this ends \
             running syncs and cuts off sessions in progress, which stay resumable), install, \
             then start it again"
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// Settings-backup check

/// What an older release noted under [`LEGACY_CONFIG_CHANGED_KEY`] (read for stores it wrote).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigChanged {
    version: String,
    unix_ms: u64,
}

/// When the last settings backup was taken, if ever. Accepts decimal text or a JSON number;
/// anything else counts as no backup.
pub fn last_backup_unix_ms(store: &Store) -> Result<Option<u64>, StoreError> {
    Ok(store.local_get(LAST_BACKUP_TAKEN_KEY)?.and_then(|bytes| {
        let text = std::str::from_utf8(&bytes).ok()?.trim();
        text.parse::<u64>().ok().or_else(|| {
            serde_json::from_str::<serde_json::Value>(text)
                .ok()?
                .as_u64()
        })
    }))
}

/// When the site configuration last changed: recorded by the store in the transaction of the
/// change; for a store from before that, the time an older release noted under
/// [`LEGACY_CONFIG_CHANGED_KEY`]; for a written configuration with neither, `now_unix_ms` (so that a
/// backup is asked for). `None` when the configuration was never written.
fn last_config_change_unix_ms(store: &Store, now_unix_ms: u64) -> Result<Option<u64>, StoreError> {
    if let Some(changed) = store.config_changed_unix_ms()? {
        return Ok(Some(changed));
    }
    if store.config_version()? == CONFIG_VERSION_ZERO {
        return Ok(None);
    }
    let noted = store
        .local_get(LEGACY_CONFIG_CHANGED_KEY)?
        .and_then(|bytes| serde_json::from_slice::<ConfigChanged>(&bytes).ok())
        .map(|record| record.unix_ms);
    Ok(Some(noted.unwrap_or(now_unix_ms)))
}

/// Refuses unless a settings backup was taken since the last configuration change.
pub fn check_backup(store: &Store, now_unix_ms: u64) -> Result<(), UpdateError> {
    let Some(changed) = last_config_change_unix_ms(store, now_unix_ms).map_err(store_error)? else {
        return Ok(()); // the configuration was never written: nothing to lose
    };
    let backup = last_backup_unix_ms(store).map_err(store_error)?;
    if backup.is_some_and(|taken| taken >= changed) {
        return Ok(());
    }
    Err(UpdateError::Refused(format!(
        "no settings backup was taken since the last configuration change (changed at {changed} \
         ms since the epoch; last backup: {}): take one with `dyad backup create` first and keep \
         it off the appliance, or pass --skip-backup-check to install without one",
        backup.map_or("never".to_string(), |taken| format!("{taken}"))
    )))
}

// ---------------------------------------------------------------------------------------------
// Journal and report

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Journal {
    format: u32,
    package: String,
    file: String,
    from_app: String,
    from_base: String,
    to_app: String,
    to_base: String,
    from_store_format: u64,
    to_store_format: u64,
    started_unix_ms: u64,
}

/// The outcome of the last install, kept in `D/install-report.json` and shown by status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallReport {
    /// `installed`, `interrupted-completed` or `interrupted-rolled-back`.
    pub outcome: String,
    pub package: String,
    pub from: String,
    pub to: String,
    pub store_format: u64,
    pub unix_ms: u64,
    /// One sentence for the operator.
    pub message: String,
}

fn software_text(software: &SoftwareVersion) -> String {
    format!("app {} base {}", software.app, software.base)
}

fn write_report(dir: &DataDir, report: &InstallReport) -> Result<(), UpdateError> {
    let bytes = serde_json::to_vec_pretty(report).expect("a plain struct serializes");
    crate::transport::write_atomically(&dir.install_report(), &bytes, 0o644)
        .map_err(|error| UpdateError::Local(error.to_string()))
}

/// The last install's report, if any.
pub fn last_install_report(dir: &DataDir) -> Option<InstallReport> {
    let bytes =
        crate::transport::read_limited(&dir.install_report(), SMALL_FILE_BYTES_MAX, false).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn remove_journal(dir: &DataDir) -> Result<(), UpdateError> {
    match std::fs::remove_file(dir.install_journal()) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(UpdateError::Local(format!(
                "removing the install journal: {error}"
            )))
        }
    }
    std::fs::File::open(&dir.root)
        .and_then(|folder| folder.sync_all())
        .map_err(|error| UpdateError::Local(format!("syncing {}: {error}", dir.root.display())))
}

/// Finishes or rolls back an install a crash interrupted. Call with the serve lock held.
/// Returns the report when there was something to recover.
pub fn recover_locked(
    dir: &DataDir,
    now_unix_ms: u64,
) -> Result<Option<InstallReport>, UpdateError> {
    let path = dir.install_journal();
    if !path.exists() {
        return Ok(None);
    }
    let bytes = crate::transport::read_limited(&path, SMALL_FILE_BYTES_MAX, false)
        .map_err(|error| UpdateError::Local(error.to_string()))?;
    let mut appliance =
        Appliance::open(dir.clone()).map_err(|error| UpdateError::Local(error.to_string()))?;
    let store = open_store(dir)?;
    let format_now = store.format_version().map_err(store_error)?;
    let journal = match serde_json::from_slice::<Journal>(&bytes) {
        Ok(journal) if journal.format == JOURNAL_FORMAT => journal,
        // The journal is written atomically, so a damaged one was damaged after the fact; the
        // data folder itself is consistent either way (each step is atomic).
        _ => {
            let report = InstallReport {
                outcome: "interrupted-unknown".into(),
                package: "unknown".into(),
                from: software_text(&appliance.settings.software),
                to: software_text(&appliance.settings.software),
                store_format: format_now,
                unix_ms: now_unix_ms,
                message: format!(
                    "an install was interrupted and its journal is unreadable; this appliance \
                     runs {} with store format {format_now}; run the install again",
                    software_text(&appliance.settings.software)
                ),
            };
            write_report(dir, &report)?;
            remove_journal(dir)?;
            return Ok(Some(report));
        }
    };
    let parse = |text: &str| parse_version(text).map_err(local("the install journal"));
    let to = SoftwareVersion {
        app: parse(&journal.to_app)?,
        base: parse(&journal.to_base)?,
    };
    let settings_written = appliance.settings.software == to;
    let decision = recovery_decision(
        journal.from_store_format,
        journal.to_store_format,
        format_now,
        appliance.settings.software,
        to,
    );
    let (outcome, message) = if decision == RecoveryDecision::Complete {
        store
            .migrate_if_older(journal.to_store_format)
            .map_err(store_error)?;
        if !settings_written {
            appliance.settings.software = to;
            crate::transport::write_atomically(
                &dir.settings(),
                &appliance.settings.to_json(),
                0o644,
            )
            .map_err(|error| UpdateError::Local(error.to_string()))?;
        }
        (
            "interrupted-completed",
            format!(
                "an install of {} was interrupted; it was completed on restart: this appliance \
                 now runs {}",
                journal.package,
                software_text(&to)
            ),
        )
    } else {
        (
            "interrupted-rolled-back",
            format!(
                "an install of {} was interrupted before it changed anything; it was rolled \
                 back: this appliance still runs {}; install the package again",
                journal.package,
                software_text(&appliance.settings.software)
            ),
        )
    };
    let report = InstallReport {
        outcome: outcome.into(),
        package: journal.package.clone(),
        from: format!("app {} base {}", journal.from_app, journal.from_base),
        to: software_text(&to),
        store_format: store.format_version().map_err(store_error)?,
        unix_ms: now_unix_ms,
        message,
    };
    drop(store);
    write_report(dir, &report)?;
    remove_journal(dir)?;
    Ok(Some(report))
}

/// [`recover_locked`], taking the serve lock.
pub fn recover(dir: &DataDir, now_unix_ms: u64) -> Result<Option<InstallReport>, UpdateError> {
    let _lock = lock(dir)?;
    recover_locked(dir, now_unix_ms)
}

// ---------------------------------------------------------------------------------------------
// Check and install

/// What `dyad update check` shows.
#[derive(Debug)]
pub struct CheckReport {
    pub installed: Installed,
    /// Newer than installed, base first; with what each needs.
    pub applicable: Vec<Candidate>,
    pub refused: Vec<(PathBuf, PackageError)>,
}

/// The installed versions and store format of a data folder (asking the running `dyad serve`
/// for the store format when one holds the store).
pub fn installed(dir: &DataDir) -> Result<Installed, UpdateError> {
    let appliance =
        Appliance::open(dir.clone()).map_err(|error| UpdateError::Local(error.to_string()))?;
    let store_format = match crate::appliance::lock_data_dir(dir) {
        Ok(_lock) => open_store(dir)?.format_version().map_err(store_error)?,
        Err(_) => {
            let request = crate::admin::AdminRequest::Status;
            match crate::admin::admin_call(dir, &request, |_| {}) {
                Ok(crate::admin::AdminReply::Ok(value)) => value
                    .get("store_format")
                    .and_then(serde_json::Value::as_u64)
                    .ok_or_else(|| {
                        UpdateError::Local("dyad serve did not say its store format".into())
                    })?,
                Ok(other) => {
                    return Err(UpdateError::Local(format!("dyad serve answered {other:?}")))
                }
                Err(error) => return Err(UpdateError::Local(error.to_string())),
            }
        }
    };
    Ok(Installed {
        software: appliance.settings.software,
        store_format,
    })
}

/// Lists the packages in `folder` that would update this appliance.
pub fn check(dir: &DataDir, folder: &Path) -> Result<CheckReport, UpdateError> {
    let vendor = load_vendor_key(dir)?;
    let appliance =
        Appliance::open(dir.clone()).map_err(|error| UpdateError::Local(error.to_string()))?;
    let store_format = match crate::appliance::lock_data_dir(dir) {
        Ok(_lock) => open_store(dir)?.format_version().map_err(store_error)?,
        // A running serve holds the store; the format is only for display here.
        Err(_) => 0,
    };
    let scan = scan_folder(folder, Some(&vendor))?;
    Ok(CheckReport {
        installed: Installed {
            software: appliance.settings.software,
            store_format,
        },
        applicable: applicable(&appliance.settings.software, &scan.packages),
        refused: scan.refused,
    })
}

/// Options of an install.
#[derive(Clone, Copy, Debug, Default)]
pub struct InstallOptions {
    /// Install even without a settings backup since the last configuration change.
    pub skip_backup_check: bool,
}

/// One completed install step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallOutcome {
    pub package: String,
    pub from: SoftwareVersion,
    pub to: SoftwareVersion,
    pub migration: Option<dyad_store::MigrationReport>,
}

/// Everything checked before an install changes anything (the serve lock is held).
fn preconditions(
    appliance: &Appliance,
    store: &Store,
    manifest: &Manifest,
    options: InstallOptions,
    now_unix_ms: u64,
) -> Result<(), UpdateError> {
    if let Some(bytes) = store.local_get(REPLICA_STATE_KEY).map_err(store_error)? {
        let state = ReplicaState::from_json(&bytes).map_err(local("the replica state"))?;
        if state.role != Role::Standalone {
            let peer = state.peer.as_ref().map_or("its peer".to_string(), |peer| {
                format!("{} at {}", peer.name, peer.address)
            });
            return Err(UpdateError::Refused(format!(
                "this appliance is the {} of a failover relationship with {peer}: break the \
                 relationship first (`dyad break`), since both appliances of a relationship \
                 must run the same version; re-establish once both are updated",
                dyad_wire::Role::name(state.role)
            )));
        }
    }
    let software = appliance.settings.software;
    let installed = manifest.kind.installed(&software);
    if manifest.version <= installed {
        return Err(UpdateError::Refused(format!(
            "{} is not newer than the installed {} {installed}; nothing to do",
            manifest.label(),
            manifest.kind
        )));
    }
    if manifest.store_format > FORMAT_VERSION {
        return Err(UpdateError::Refused(format!(
            "{} needs store format {}, but this Dyad migrates stores up to format \
             {FORMAT_VERSION}; install the Dyad version shipped for it first",
            manifest.label(),
            manifest.store_format
        )));
    }
    if !options.skip_backup_check {
        check_backup(store, now_unix_ms)?;
    }
    Ok(())
}

fn requirement_refusal(
    manifest: &Manifest,
    requirement: Requirement,
    software: &SoftwareVersion,
    beside: Option<&Path>,
    vendor: &VendorPublicKey,
) -> UpdateError {
    let mut after = *software;
    let provider = beside
        .and_then(|folder| scan_folder(folder, Some(vendor)).ok())
        .and_then(|scan| {
            scan.packages.into_iter().rev().find(|candidate| {
                candidate.manifest.kind == requirement.kind && {
                    match requirement.kind {
                        PackageKind::Base => after.base = candidate.manifest.version,
                        PackageKind::App => after.app = candidate.manifest.version,
                    }
                    requirement.satisfied_by(&after)
                }
            })
        });
    let hint = match provider {
        Some(candidate) => format!(
            "install {} ({}) first",
            candidate.manifest.label(),
            candidate.path.display()
        ),
        None => format!(
            "get a {} package providing {requirement} from your vendor and install it first",
            requirement.kind
        ),
    };
    UpdateError::Refused(format!(
        "{} needs {requirement}, but this appliance runs {}: {hint}",
        manifest.label(),
        software_text(software)
    ))
}

/// Installs one verified package (the serve lock is held; preconditions were checked).
fn install_verified(
    dir: &DataDir,
    appliance: &mut Appliance,
    store: &Store,
    candidate: &Candidate,
    now_unix_ms: u64,
) -> Result<InstallOutcome, UpdateError> {
    let manifest = &candidate.manifest;
    let from = appliance.settings.software;
    let mut to = from;
    match manifest.kind {
        PackageKind::Base => to.base = manifest.version,
        PackageKind::App => to.app = manifest.version,
    }
    let from_format = store.format_version().map_err(store_error)?;
    let to_format = from_format.max(manifest.store_format);
    let journal = Journal {
        format: JOURNAL_FORMAT,
        package: manifest.label(),
        file: candidate.path.display().to_string(),
        from_app: from.app.to_string(),
        from_base: from.base.to_string(),
        to_app: to.app.to_string(),
        to_base: to.base.to_string(),
        from_store_format: from_format,
        to_store_format: to_format,
        started_unix_ms: now_unix_ms,
    };
    let bytes = serde_json::to_vec_pretty(&journal).expect("a plain struct serializes");
    crate::transport::write_atomically(&dir.install_journal(), &bytes, 0o644)
        .map_err(|error| UpdateError::Local(error.to_string()))?;
    let migration = store.migrate_if_older(to_format).map_err(store_error)?;
    let mut settings = appliance.settings.clone();
    settings.software = to;
    crate::transport::write_atomically(&dir.settings(), &settings.to_json(), 0o644)
        .map_err(|error| UpdateError::Local(error.to_string()))?;
    appliance.settings = settings;
    write_report(
        dir,
        &InstallReport {
            outcome: "installed".into(),
            package: manifest.label(),
            from: software_text(&from),
            to: software_text(&to),
            store_format: to_format,
            unix_ms: now_unix_ms,
            message: format!(
                "installed {}: this appliance now runs {}",
                manifest.label(),
                software_text(&to)
            ),
        },
    )?;
    remove_journal(dir)?;
    Ok(InstallOutcome {
        package: manifest.label(),
        from,
        to,
        migration,
    })
}

/// `dyad update install FILE`: verifies the whole file, checks everything, installs it.
pub fn install_file(
    dir: &DataDir,
    path: &Path,
    options: InstallOptions,
    now_unix_ms: u64,
) -> Result<InstallOutcome, UpdateError> {
    let _lock = lock(dir)?;
    recover_locked(dir, now_unix_ms)?;
    let vendor = load_vendor_key(dir)?;
    let manifest = verify_package_file(path, &vendor).map_err(|error| UpdateError::Package {
        path: path.to_path_buf(),
        error,
    })?;
    let mut appliance =
        Appliance::open(dir.clone()).map_err(|error| UpdateError::Local(error.to_string()))?;
    let store = open_store(dir)?;
    if let Some(requirement) = unmet(&manifest, &appliance.settings.software) {
        return Err(requirement_refusal(
            &manifest,
            requirement,
            &appliance.settings.software,
            path.parent(),
            &vendor,
        ));
    }
    preconditions(&appliance, &store, &manifest, options, now_unix_ms)?;
    let candidate = Candidate {
        path: path.to_path_buf(),
        manifest,
    };
    install_verified(dir, &mut appliance, &store, &candidate, now_unix_ms)
}

/// `dyad update install --from DIR`: installs what applies, base before application.
pub fn install_from(
    dir: &DataDir,
    folder: &Path,
    options: InstallOptions,
    now_unix_ms: u64,
) -> Result<Vec<InstallOutcome>, UpdateError> {
    let _lock = lock(dir)?;
    recover_locked(dir, now_unix_ms)?;
    let vendor = load_vendor_key(dir)?;
    let mut appliance =
        Appliance::open(dir.clone()).map_err(|error| UpdateError::Local(error.to_string()))?;
    let scan = scan_folder(folder, Some(&vendor))?;
    let steps = plan(appliance.settings.software, &scan.packages)?;
    if steps.is_empty() {
        return Ok(Vec::new());
    }
    // Verify every payload before the first step changes anything.
    for step in &steps {
        let manifest =
            verify_package_file(&step.path, &vendor).map_err(|error| UpdateError::Package {
                path: step.path.clone(),
                error,
            })?;
        if manifest != step.manifest {
            return Err(UpdateError::Package {
                path: step.path.clone(),
                error: PackageError::PayloadMismatch("the file changed while it was read".into()),
            });
        }
    }
    let store = open_store(dir)?;
    let mut outcomes = Vec::new();
    for step in &steps {
        preconditions(&appliance, &store, &step.manifest, options, now_unix_ms)?;
        outcomes.push(install_verified(
            dir,
            &mut appliance,
            &store,
            step,
            now_unix_ms,
        )?);
    }
    Ok(outcomes)
}

/// `dyad update download-key`: this appliance's signed download key.
pub fn download_key(dir: &DataDir, now_unix_ms: u64) -> Result<String, UpdateError> {
    let appliance =
        Appliance::open(dir.clone()).map_err(|error| UpdateError::Local(error.to_string()))?;
    let store_format = match crate::appliance::lock_data_dir(dir) {
        Ok(_lock) => open_store(dir)?.format_version().map_err(store_error)?,
        Err(_) => {
            return Err(UpdateError::Refused(
                "stop `dyad serve` first: the download key records the store format, which is \
                 read with the appliance stopped (updates install with it stopped anyway)"
                    .into(),
            ))
        }
    };
    download_key::make_download_key(&appliance, store_format, now_unix_ms)
        .map_err(|error| UpdateError::Local(error.to_string()))
}

/// What `dyad update fetch` did.
#[derive(Debug)]
pub struct FetchReport {
    pub key: download_key::DownloadKey,
    pub copied: Vec<PathBuf>,
}

/// `dyad update fetch`: the vendor's side. Checks the key (signature, time) and copies the
/// packages newer than the appliance's versions from `from` to `out`.
pub fn fetch(
    key_bytes: &[u8],
    from: &Path,
    out: &Path,
    vendor: Option<&VendorPublicKey>,
    now_unix_ms: u64,
) -> Result<FetchReport, UpdateError> {
    let key = download_key::verify_download_key(key_bytes)
        .map_err(|error| UpdateError::Refused(error.to_string()))?;
    download_key::check_key_time(&key, now_unix_ms)
        .map_err(|error| UpdateError::Refused(error.to_string()))?;
    let scan = scan_folder(from, vendor)?;
    let matching = applicable(&key.software, &scan.packages);
    std::fs::create_dir_all(out)
        .map_err(|error| UpdateError::Local(format!("creating {}: {error}", out.display())))?;
    let mut copied = Vec::new();
    for candidate in matching {
        let name = candidate
            .path
            .file_name()
            .expect("scanned paths name files");
        let target = out.join(name);
        std::fs::copy(&candidate.path, &target).map_err(|error| {
            UpdateError::Local(format!("copying to {}: {error}", target.display()))
        })?;
        copied.push(target);
    }
    Ok(FetchReport { key, copied })
}
