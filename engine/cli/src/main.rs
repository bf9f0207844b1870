//! `dyad`: the operator's command for one appliance of a failover pair.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use dyad::cli::{self, CliError};

#[derive(Parser)]
#[command(
    name = "dyad",
    version,
    about = "Failover replication between a pair of appliances"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Args, Clone)]
struct DataDirArg {
    /// The appliance's data folder.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
enum Commands {
    /// Create a new appliance in an empty data folder.
    Init(cli::InitArgs),
    /// Print a new inter-appliance key.
    Keygen,
    /// Show or replace the inter-appliance key.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Run the appliance (foreground, logs to stderr).
    Serve {
        #[command(flatten)]
        dir: DataDirArg,
        /// Seconds between establishing and the first sync.
        #[arg(long, default_value_t = 60)]
        first_sync_delay_s: u64,
        /// Seconds between periodic syncs.
        #[arg(long, default_value_t = 300)]
        sync_interval_s: u64,
        /// After a storage failure (a failed write or fsync stops the store), keep answering
        /// status this many seconds, then exit with code 75 so the service manager restarts
        /// dyad and recovery runs; 0 keeps it running until stopped.
        #[arg(long, default_value_t = 60)]
        storage_failure_exit_s: u64,
    },
    /// On the appliance meant to be primary: pair with a backup.
    Establish {
        #[command(flatten)]
        dir: DataDirArg,
        /// host:port of the backup's failover port.
        #[arg(long, value_name = "HOST:PORT")]
        backup: String,
        /// host:port by which the backup reaches this appliance.
        #[arg(long, value_name = "HOST:PORT")]
        reverse: String,
    },
    /// Sync with the peer now and wait until done.
    SyncNow {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Show the relationship, the link, the last sync and the lag.
    Status {
        #[command(flatten)]
        dir: DataDirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Leave the relationship; both appliances become standalone and keep their data.
    Break {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Site configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Completed sessions and their recordings.
    Session {
        #[command(subcommand)]
        action: SessionAction,
    },
    /// On the backup: become the primary (a final sync, then the swap).
    Promote {
        #[command(flatten)]
        dir: DataDirArg,
        /// Promote although the primary is unreachable (the operator's word that it is down).
        #[arg(long)]
        force: bool,
    },
    /// On the primary: hand over to the backup, or give way to the other primary in a split brain.
    Demote {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Configurations replaced by the primary's, saved before they were replaced.
    Conflicts {
        #[command(subcommand)]
        action: ConflictsAction,
    },
    /// Settings backup: create, restore onto new hardware, inspect.
    Backup {
        #[command(subcommand)]
        action: BackupAction,
    },
    /// Export or import the appliance's certificate chain and private key.
    Cert {
        #[command(subcommand)]
        action: CertAction,
    },
    /// Erase this appliance's data, key and identity (refused in a failover relationship).
    FactoryReset {
        #[command(flatten)]
        dir: DataDirArg,
        /// Confirm the erasure; without it, only say what would be erased.
        #[arg(long)]
        yes: bool,
        /// New hardware restored from this appliance's settings backup has taken its place in
        /// the relationship: reset it although its state still names the relationship.
        #[arg(long)]
        replaced: bool,
    },
    /// Deployed clients after an application upgrade: check-in and progress.
    Client {
        #[command(subcommand)]
        action: ClientAction,
    },
    /// Software updates: check, install, download key, and the vendor's package tools.
    Update {
        #[command(subcommand)]
        action: UpdateAction,
    },
    /// Two appliances on loopback in a temporary folder: establish, sync, compare.
    Demo {
        /// Megabytes of synthetic recordings on the primary.
        #[arg(long, default_value_t = 256)]
        size_mb: u64,
        /// Number of sessions they are split into.
        #[arg(long, default_value_t = 16)]
        sessions: u64,
    },
}

#[derive(Args, Clone)]
struct PassphraseArg {
    /// File holding the passphrase (one line, mode 0600).
    #[arg(long, value_name = "FILE")]
    passphrase_file: PathBuf,
}

#[derive(Subcommand)]
enum BackupAction {
    /// Write a settings backup (no recordings), encrypted with the passphrase.
    Create {
        #[command(flatten)]
        dir: DataDirArg,
        /// The backup file to write (must not exist).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        passphrase: PassphraseArg,
    },
    /// Restore a settings backup into a new, empty data folder (new hardware; no `init`).
    Restore {
        #[command(flatten)]
        dir: DataDirArg,
        /// The backup file.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        #[command(flatten)]
        passphrase: PassphraseArg,
        /// Application version the new hardware runs (default: the backup's; never older).
        #[arg(long, value_name = "X.Y.Z")]
        app_version: Option<String>,
        /// Base-software version the new hardware runs (default: the backup's; never older).
        #[arg(long, value_name = "X.Y.Z")]
        base_version: Option<String>,
    },
    /// Show what a backup holds (fingerprints, no secrets); with --data-dir, a restore dry run.
    Inspect {
        /// The backup file.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        #[command(flatten)]
        passphrase: PassphraseArg,
        /// Show what restoring onto this data folder would change.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CertAction {
    /// Write the certificate chain and the private key (encrypted with the passphrase).
    Export {
        #[command(flatten)]
        dir: DataDirArg,
        /// The file to write (must not exist).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        passphrase: PassphraseArg,
    },
    /// Install an exported certificate and key as this appliance's identity (serve stopped).
    Import {
        #[command(flatten)]
        dir: DataDirArg,
        /// The file from `dyad cert export`.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        #[command(flatten)]
        passphrase: PassphraseArg,
    },
}

#[derive(Subcommand)]
enum UpdateAction {
    /// List the packages in DIR newer than what is installed, with their requirements.
    Check {
        #[command(flatten)]
        dir: DataDirArg,
        /// Folder of packages (stands in for the vendor's update server).
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
    },
    /// Install a package FILE, or what applies from --from DIR (base before application).
    /// Run with `dyad serve` stopped, outside any failover relationship.
    Install {
        #[command(flatten)]
        dir: DataDirArg,
        /// The package file.
        #[arg(
            value_name = "FILE",
            conflicts_with = "from",
            required_unless_present = "from"
        )]
        file: Option<PathBuf>,
        /// Install everything that applies from this folder, in dependency order.
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        /// Install although no settings backup was taken since the last configuration change.
        #[arg(long)]
        skip_backup_check: bool,
    },
    /// Installed versions, store format, vendor key and the last install's outcome.
    Status {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Print (or write) this appliance's signed, time-stamped download key.
    DownloadKey {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Vendor side: check a download key and copy the packages it needs from DIR to DIR2.
    Fetch {
        /// The download key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        #[arg(long, value_name = "DIR2")]
        out: PathBuf,
        /// Also verify the packages' signatures with this vendor public key.
        #[arg(long, value_name = "FILE")]
        vendor_public_key: Option<PathBuf>,
    },
    /// Trust this vendor public key for update packages (if `init` was not given one).
    TrustVendorKey {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long, value_name = "FILE")]
        vendor_public_key: PathBuf,
    },
    /// Vendor tool: make a vendor key pair.
    VendorKeygen {
        #[arg(long, value_name = "FILE")]
        secret_out: PathBuf,
        #[arg(long, value_name = "FILE")]
        public_out: PathBuf,
    },
    /// Vendor tool: make a signed package around a payload file.
    MakePackage(dyad::update_commands::MakePackageArgs),
}

#[derive(Subcommand)]
enum ConflictsAction {
    /// One line per conflict record.
    List {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// One record with both values of every key that differed.
    Show {
        #[command(flatten)]
        dir: DataDirArg,
        /// The record's number from `list`.
        number: usize,
    },
    /// Every record as JSON.
    Export {
        #[command(flatten)]
        dir: DataDirArg,
        /// Write to FILE instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ClientAction {
    /// A client checks in; prints whether it should update now, retry later, or be reinstalled.
    CheckIn {
        #[command(flatten)]
        dir: DataDirArg,
        /// The client's id.
        #[arg(long)]
        id: String,
        /// `deployed` (updates itself) or `integration` (reinstalled by an operator).
        #[arg(long, default_value = "deployed")]
        kind: String,
        /// The application version the client runs.
        #[arg(long, value_name = "X.Y.Z")]
        version: String,
    },
    /// Updated, updating, waiting, and clients needing a manual reinstall.
    Progress {
        #[command(flatten)]
        dir: DataDirArg,
    },
}

#[derive(Subcommand)]
enum KeyAction {
    /// Print the key's fingerprint (compare it between the two appliances).
    Show {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Replace the key with the one in FILE.
    Set {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long, value_name = "FILE")]
        psk_file: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Set KEY to VALUE (on the primary or a standalone appliance).
    Set {
        #[command(flatten)]
        dir: DataDirArg,
        key: String,
        value: String,
    },
    /// Print KEY's value.
    Get {
        #[command(flatten)]
        dir: DataDirArg,
        key: String,
    },
    /// Delete KEY.
    Delete {
        #[command(flatten)]
        dir: DataDirArg,
        key: String,
    },
    /// Print every key under PREFIX.
    List {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(default_value = "")]
        prefix: String,
    },
}

#[derive(Subcommand)]
enum SessionAction {
    /// Import a recording file as a completed session of this appliance.
    Import {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        #[arg(long)]
        started_unix_ms: Option<u64>,
        #[arg(long)]
        ended_unix_ms: Option<u64>,
    },
    /// One line per session (id and content hash), sorted, to diff between appliances;
    /// damaged recordings follow, marked DAMAGED.
    List {
        #[command(flatten)]
        dir: DataDirArg,
        /// Print JSON objects with each session's state (complete or damaged).
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every recording from disk and report bad chunks.
    Verify {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Recordings found damaged: kept, never served, fetched again once a linked peer holds
    /// them. Without a peer that does, export what is left or forget them.
    Damaged {
        #[command(subcommand)]
        action: DamagedAction,
    },
}

#[derive(Subcommand)]
enum DamagedAction {
    /// The damaged recordings, their bad chunks and when they were found.
    List {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        json: bool,
    },
    /// Write a damaged recording's bytes as they are on disk to a new file (unreadable
    /// chunks as zeros; both kinds of bad chunk are named).
    Export {
        #[command(flatten)]
        dir: DataDirArg,
        /// The session, as `session damaged list` prints it (`<node id>#<number>`).
        #[arg(long)]
        session: String,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Remove a damaged recording and its bytes for good (export it first if no peer holds it).
    Forget {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        session: String,
        /// Confirms that the recording's bytes are to be deleted.
        #[arg(long)]
        yes: bool,
    },
}

fn run_update(action: UpdateAction) -> Result<(), CliError> {
    use dyad::update_commands as update;
    match action {
        UpdateAction::Check { dir, from } => update::check(&dir.data_dir, &from),
        UpdateAction::Install {
            dir,
            file,
            from,
            skip_backup_check,
        } => update::install(
            &dir.data_dir,
            file.as_deref(),
            from.as_deref(),
            skip_backup_check,
        ),
        UpdateAction::Status { dir } => update::status(&dir.data_dir),
        UpdateAction::DownloadKey { dir, out } => {
            update::download_key(&dir.data_dir, out.as_deref())
        }
        UpdateAction::Fetch {
            key,
            from,
            out,
            vendor_public_key,
        } => update::fetch(&key, &from, &out, vendor_public_key.as_deref()),
        UpdateAction::TrustVendorKey {
            dir,
            vendor_public_key,
        } => update::trust_vendor_key(&dir.data_dir, &vendor_public_key),
        UpdateAction::VendorKeygen {
            secret_out,
            public_out,
        } => update::vendor_keygen(&secret_out, &public_out),
        UpdateAction::MakePackage(args) => update::make_package(args),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Commands::Init(args) => cli::init(args),
        Commands::Keygen => cli::keygen(),
        Commands::Key {
            action: KeyAction::Show { dir },
        } => cli::key_show(&dir.data_dir),
        Commands::Key {
            action: KeyAction::Set { dir, psk_file },
        } => cli::key_set(&dir.data_dir, &psk_file),
        Commands::Serve {
            dir,
            first_sync_delay_s,
            sync_interval_s,
            storage_failure_exit_s,
        } => cli::serve(
            &dir.data_dir,
            first_sync_delay_s,
            sync_interval_s,
            storage_failure_exit_s,
        ),
        Commands::Establish {
            dir,
            backup,
            reverse,
        } => cli::establish(&dir.data_dir, backup, reverse),
        Commands::SyncNow { dir } => cli::sync_now(&dir.data_dir),
        Commands::Status { dir, json } => cli::status(&dir.data_dir, json),
        Commands::Break { dir } => cli::break_relationship(&dir.data_dir),
        Commands::Config { action } => match action {
            ConfigAction::Set { dir, key, value } => {
                cli::config_write(&dir.data_dir, key, Some(value))
            }
            ConfigAction::Delete { dir, key } => cli::config_write(&dir.data_dir, key, None),
            ConfigAction::Get { dir, key } => cli::config_get(&dir.data_dir, key),
            ConfigAction::List { dir, prefix } => cli::config_list(&dir.data_dir, prefix),
        },
        Commands::Session { action } => match action {
            SessionAction::Import {
                dir,
                file,
                started_unix_ms,
                ended_unix_ms,
            } => cli::session_import(&dir.data_dir, file, started_unix_ms, ended_unix_ms),
            SessionAction::List { dir, json } => cli::session_list(&dir.data_dir, json),
            SessionAction::Verify { dir } => cli::session_verify(&dir.data_dir),
            SessionAction::Damaged { action } => match action {
                DamagedAction::List { dir, json } => cli::damaged_list(&dir.data_dir, json),
                DamagedAction::Export { dir, session, out } => {
                    cli::damaged_export(&dir.data_dir, session, out)
                }
                DamagedAction::Forget { dir, session, yes } => {
                    cli::damaged_forget(&dir.data_dir, session, yes)
                }
            },
        },
        Commands::Promote { dir, force } => cli::promote(&dir.data_dir, force),
        Commands::Demote { dir } => cli::demote(&dir.data_dir),
        Commands::Conflicts { action } => match action {
            ConflictsAction::List { dir } => cli::conflicts_list(&dir.data_dir),
            ConflictsAction::Show { dir, number } => cli::conflicts_show(&dir.data_dir, number),
            ConflictsAction::Export { dir, out } => {
                cli::conflicts_export(&dir.data_dir, out.as_deref())
            }
        },
        Commands::Backup { action } => match action {
            BackupAction::Create {
                dir,
                out,
                passphrase,
            } => cli::backup_create(&dir.data_dir, &out, &passphrase.passphrase_file),
            BackupAction::Restore {
                dir,
                input,
                passphrase,
                app_version,
                base_version,
            } => cli::backup_restore(
                &dir.data_dir,
                &input,
                &passphrase.passphrase_file,
                app_version.as_deref(),
                base_version.as_deref(),
            ),
            BackupAction::Inspect {
                input,
                passphrase,
                data_dir,
            } => cli::backup_inspect(&input, &passphrase.passphrase_file, data_dir.as_deref()),
        },
        Commands::Cert { action } => match action {
            CertAction::Export {
                dir,
                out,
                passphrase,
            } => cli::cert_export(&dir.data_dir, &out, &passphrase.passphrase_file),
            CertAction::Import {
                dir,
                input,
                passphrase,
            } => cli::cert_import(&dir.data_dir, &input, &passphrase.passphrase_file),
        },
        Commands::FactoryReset { dir, yes, replaced } => {
            cli::factory_reset(&dir.data_dir, yes, replaced)
        }
        Commands::Client { action } => match action {
            ClientAction::CheckIn {
                dir,
                id,
                kind,
                version,
            } => cli::client_check_in(&dir.data_dir, id, kind, version),
            ClientAction::Progress { dir } => cli::client_progress(&dir.data_dir),
        },
        Commands::Update { action } => run_update(action),
        Commands::Demo { size_mb, sessions } => dyad::demo::run(size_mb, sessions),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dyad: {}", error.message);
            ExitCode::from(error.exit_code())
        }
    }
}
