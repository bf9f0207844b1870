//! What each `dyad update …` command prints, kept in the library so tests can call it (the
//! binary only parses flags). The work itself is in the parent module.

use std::path::{Path, PathBuf};

use crate::error::{CliError, CliResult};
use dyad_node::appliance::wall_clock_ms;
use dyad_node::appliance::{parse_version, DataDir};

use dyad_node::update::package::{PackageKind, Requirement, VendorPublicKey, VendorSecretKey};
use dyad_node::update::{InstallOptions, InstallOutcome};

fn read_text(path: &Path, what: &str) -> Result<String, CliError> {
    let bytes = dyad_node::transport::read_limited(path, 64 * 1024, false)
        .map_err(|error| CliError::operator(format!("{what} {}: {error}", path.display())))?;
    String::from_utf8(bytes)
        .map_err(|_| CliError::operator(format!("{what} {} is not text", path.display())))
}

/// Reads a vendor public key file (`--vendor-public-key`).
pub fn load_vendor_public_key(path: &Path) -> Result<VendorPublicKey, CliError> {
    VendorPublicKey::parse(&read_text(path, "--vendor-public-key")?)
        .map_err(|why| CliError::operator(format!("--vendor-public-key {}: {why}", path.display())))
}

/// `dyad update vendor-keygen --secret-out FILE --public-out FILE`.
pub fn vendor_keygen(secret_out: &Path, public_out: &Path) -> CliResult {
    if secret_out.exists() {
        return Err(CliError::operator(format!(
            "{} exists; refusing to overwrite a vendor secret key",
            secret_out.display()
        )));
    }
    let key = VendorSecretKey::generate().map_err(CliError::local)?;
    dyad_node::transport::write_atomically(secret_out, key.to_text().as_bytes(), 0o600)?;
    dyad_node::transport::write_atomically(
        public_out,
        key.public_key().to_text().as_bytes(),
        0o644,
    )?;
    println!(
        "vendor key pair written: secret {} (keep it off appliances), public {} (give it to \
         `dyad init --vendor-public-key`)",
        secret_out.display(),
        public_out.display()
    );
    Ok(())
}

/// `dyad update make-package` arguments: the binary's flags are derived from this struct.
#[derive(clap::Args, Clone, Debug)]
pub struct MakePackageArgs {
    /// The vendor secret key (from `vendor-keygen`).
    #[arg(long, value_name = "FILE")]
    pub vendor_key: PathBuf,
    #[arg(long)]
    pub name: String,
    /// base or app.
    #[arg(long)]
    pub kind: String,
    #[arg(long, value_name = "X.Y.Z")]
    pub version: String,
    /// The store format the new software needs.
    #[arg(long, default_value_t = 1)]
    pub store_format: u64,
    /// A requirement like "base >= 3.2" (repeatable).
    #[arg(long, value_name = "REQ")]
    pub requires: Vec<String>,
    #[arg(long, value_name = "FILE")]
    pub payload: PathBuf,
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `dyad update make-package`: the vendor's tool (and the labs' and tests').
pub fn make_package(args: MakePackageArgs) -> CliResult {
    let secret = std::fs::read_to_string(&args.vendor_key).map_err(|error| {
        CliError::operator(format!(
            "--vendor-key {}: {error}",
            args.vendor_key.display()
        ))
    })?;
    let key = VendorSecretKey::parse(&secret).map_err(|why| {
        CliError::operator(format!("--vendor-key {}: {why}", args.vendor_key.display()))
    })?;
    let kind: PackageKind = args
        .kind
        .parse()
        .map_err(|why| CliError::operator(format!("--kind: {why}")))?;
    let version = parse_version(&args.version)
        .map_err(|why| CliError::operator(format!("--version: {why}")))?;
    let requirements = args
        .requires
        .iter()
        .map(|text| text.parse::<Requirement>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|why| CliError::operator(format!("--requires: {why}")))?;
    let metadata = std::fs::metadata(&args.payload).map_err(|error| {
        CliError::operator(format!("--payload {}: {error}", args.payload.display()))
    })?;
    if metadata.len() > dyad_node::update::package::PACKAGE_PAYLOAD_BYTES_MAX {
        return Err(CliError::operator(format!(
            "--payload is above the limit of {} bytes",
            dyad_node::update::package::PACKAGE_PAYLOAD_BYTES_MAX
        )));
    }
    let payload = std::fs::read(&args.payload).map_err(|error| {
        CliError::operator(format!("--payload {}: {error}", args.payload.display()))
    })?;
    let bytes = dyad_node::update::build_package(
        &key,
        &args.name,
        kind,
        version,
        args.store_format,
        requirements,
        &payload,
    )
    .map_err(CliError::operator)?;
    dyad_node::transport::write_atomically(&args.out, &bytes, 0o644)?;
    println!("wrote {} ({} bytes)", args.out.display(), bytes.len());
    Ok(())
}

/// `dyad update trust-vendor-key`.
pub fn trust_vendor_key(data_dir: &Path, public_key: &Path) -> CliResult {
    let dir = DataDir::new(data_dir);
    dyad_node::appliance::Appliance::open(dir.clone())?;
    let key = load_vendor_public_key(public_key)?;
    dyad_node::update::trust_vendor_key(&dir, &key)?;
    println!("packages will be verified with {}", key.to_text().trim());
    Ok(())
}

fn requirements_text(requirements: &[Requirement]) -> String {
    if requirements.is_empty() {
        return "no requirements".into();
    }
    let parts: Vec<String> = requirements.iter().map(|r| r.to_string()).collect();
    format!("requires {}", parts.join(", "))
}

/// `dyad update check --from DIR`.
pub fn check(data_dir: &Path, from: &Path) -> CliResult {
    let dir = DataDir::new(data_dir);
    let report = dyad_node::update::check(&dir, from)?;
    println!(
        "installed: app {}, base {}",
        report.installed.software.app, report.installed.software.base
    );
    if report.applicable.is_empty() {
        println!(
            "no package in {} applies: this appliance is up to date",
            from.display()
        );
    }
    for candidate in &report.applicable {
        let manifest = &candidate.manifest;
        println!(
            "{} {} {}  store format {}  {}  ({})",
            manifest.kind,
            manifest.name,
            manifest.version,
            manifest.store_format,
            requirements_text(&manifest.requirements),
            candidate.path.display()
        );
    }
    for (path, error) in &report.refused {
        println!("refused {}: {error}", path.display());
    }
    Ok(())
}

fn print_outcome(outcome: &InstallOutcome) {
    println!(
        "installed {}: app {} base {} -> app {} base {}",
        outcome.package, outcome.from.app, outcome.from.base, outcome.to.app, outcome.to.base
    );
    if let Some(migration) = &outcome.migration {
        println!(
            "  store migrated from format {} to {} ({} sessions indexed)",
            migration.from_format, migration.to_format, migration.sessions_indexed
        );
    }
}

fn say_recovered(dir: &DataDir) -> Result<(), CliError> {
    if let Some(report) = dyad_node::update::recover(dir, wall_clock_ms())? {
        println!("{}", report.message);
    }
    Ok(())
}

/// `dyad update install FILE` or `--from DIR`.
pub fn install(
    data_dir: &Path,
    file: Option<&Path>,
    from: Option<&Path>,
    skip_backup_check: bool,
) -> CliResult {
    let dir = DataDir::new(data_dir);
    say_recovered(&dir)?;
    let options = InstallOptions { skip_backup_check };
    match (file, from) {
        (Some(file), None) => print_outcome(&dyad_node::update::install_file(
            &dir,
            file,
            options,
            wall_clock_ms(),
        )?),
        (None, Some(from)) => {
            let outcomes = dyad_node::update::install_from(&dir, from, options, wall_clock_ms())?;
            if outcomes.is_empty() {
                println!(
                    "nothing to install: no package in {} applies",
                    from.display()
                );
            }
            outcomes.iter().for_each(print_outcome);
        }
        _ => {
            return Err(CliError::operator(
                "give either a package FILE or --from DIR",
            ))
        }
    }
    println!(
        "start the appliance again with `dyad serve --data-dir {}`",
        data_dir.display()
    );
    Ok(())
}

/// `dyad update status`: installed versions, store format, last install.
pub fn status(data_dir: &Path) -> CliResult {
    let dir = DataDir::new(data_dir);
    match dyad_node::update::recover(&dir, wall_clock_ms()) {
        Ok(Some(report)) => println!("{}", report.message),
        // A running `dyad serve` recovered on its start already.
        Ok(None) | Err(dyad_node::update::UpdateError::Refused(_)) => {}
        Err(error) => return Err(error.into()),
    }
    let installed = dyad_node::update::installed(&dir)?;
    println!(
        "installed: app {}, base {}; store format {}",
        installed.software.app, installed.software.base, installed.store_format
    );
    match dyad_node::update::load_vendor_key(&dir) {
        Ok(key) => println!("vendor key: {}", key.to_text().trim()),
        Err(_) => println!("vendor key: none configured (installs are refused)"),
    }
    match dyad_node::update::last_install_report(&dir) {
        Some(report) => println!("last install: {}", report.message),
        None => println!("last install: none"),
    }
    Ok(())
}

/// `dyad update download-key [--out FILE]`.
pub fn download_key(data_dir: &Path, out: Option<&Path>) -> CliResult {
    let dir = DataDir::new(data_dir);
    let text = dyad_node::update::download_key(&dir, wall_clock_ms())?;
    match out {
        Some(path) => {
            dyad_node::transport::write_atomically(path, text.as_bytes(), 0o644)?;
            println!("download key written to {}; take it to a machine with internet access and run `dyad update fetch --key {} --from … --out …`", path.display(), path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// `dyad update fetch --key K --from DIR --out DIR2`.
pub fn fetch(key: &Path, from: &Path, out: &Path, vendor_public_key: Option<&Path>) -> CliResult {
    let bytes = dyad_node::transport::read_limited(
        key,
        dyad_node::update::download_key::DOWNLOAD_KEY_BYTES_MAX as u64,
        false,
    )
    .map_err(|error| CliError::operator(format!("--key {}: {error}", key.display())))?;
    let vendor = vendor_public_key.map(load_vendor_public_key).transpose()?;
    let report = dyad_node::update::fetch(&bytes, from, out, vendor.as_ref(), wall_clock_ms())?;
    println!(
        "key of {} (node {}, certificate {}), running app {} base {}",
        report.key.name,
        report.key.node_id,
        report.key.certificate_fingerprint(),
        report.key.software.app,
        report.key.software.base
    );
    if report.copied.is_empty() {
        println!(
            "no newer package in {}: the appliance is up to date",
            from.display()
        );
    }
    for path in &report.copied {
        println!("copied {}", path.display());
    }
    Ok(())
}
