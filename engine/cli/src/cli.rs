//! What each `dyad` command does, kept in the library so that tests can call it.
//!
//! Commands that only read or change this appliance (status, configuration, sessions) talk to
//! the running `dyad serve` through its admin socket, or open the data folder themselves when
//! no server runs. Commands that need the peer (establish, Sync Now, break) need the server.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use serde_json::Value;

use dyad_core::replica::ReplicaConfig;
use dyad_node::admin::{admin_call, AdminCallError};
use dyad_node::admin::{AdminReply, AdminRequest};
use dyad_node::appliance::wall_clock_ms;
use dyad_node::appliance::{
    build_software_version, parse_version, Appliance, DataDir, InitOptions,
};
use dyad_node::driver;
use dyad_node::transport::{self, InterApplianceKey};

pub use crate::error::{CliError, CliResult};

/// `dyad init` arguments: the binary's flags are derived from this very struct.
#[derive(clap::Args, Clone, Debug)]
pub struct InitArgs {
    /// The appliance's data folder.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// This appliance's name, shown to operators.
    #[arg(long)]
    pub name: String,
    /// host:port of this appliance's failover port.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: String,
    /// The site's shared hostname (refused as a peer address).
    #[arg(long, value_name = "HOST")]
    pub site_hostname: Option<String>,
    /// File holding the inter-appliance key (from `dyad keygen`); a new key is made if absent.
    #[arg(long, value_name = "FILE")]
    pub psk_file: Option<PathBuf>,
    /// Installed application version (default: this build's).
    #[arg(long, value_name = "X.Y.Z")]
    pub app_version: Option<String>,
    /// Installed base-software version (default: 1.0.0).
    #[arg(long, value_name = "X.Y.Z")]
    pub base_version: Option<String>,
    /// Operator-provided certificate chain (PEM) instead of a generated identity.
    #[arg(long, value_name = "FILE", requires = "key_pem")]
    pub cert_pem: Option<PathBuf>,
    /// The private key (PEM) of --cert-pem.
    #[arg(long, value_name = "FILE", requires = "cert_pem")]
    pub key_pem: Option<PathBuf>,
    /// The vendor's public key (from `dyad update vendor-keygen`); update packages must be
    /// signed with it. Without it, installs are refused until `dyad update trust-vendor-key`.
    #[arg(long, value_name = "FILE")]
    pub vendor_public_key: Option<PathBuf>,
    /// Store format to create (labs: 1 makes the data folder an older release made).
    #[arg(long, value_name = "N", hide = true)]
    pub store_format: Option<u64>,
}

fn read_small(path: &Path, what: &str) -> Result<Vec<u8>, CliError> {
    transport::read_limited(path, 256 * 1024, false)
        .map_err(|error| CliError::operator(format!("{what} {}: {error}", path.display())))
}

pub fn init(args: InitArgs) -> CliResult {
    let mut software = build_software_version();
    if let Some(text) = &args.app_version {
        software.app = parse_version(text)
            .map_err(|why| CliError::operator(format!("--app-version: {why}")))?;
    }
    if let Some(text) = &args.base_version {
        software.base = parse_version(text)
            .map_err(|why| CliError::operator(format!("--base-version: {why}")))?;
    }
    let psk_text = match &args.psk_file {
        Some(path) => Some(
            String::from_utf8(read_small(path, "--psk-file")?).map_err(|_| {
                CliError::operator(format!(
                    "--psk-file {} is not text from `dyad keygen`",
                    path.display()
                ))
            })?,
        ),
        None => None,
    };
    let identity_pem = match (&args.cert_pem, &args.key_pem) {
        (Some(cert), Some(key)) => Some((
            read_small(cert, "--cert-pem")?,
            read_small(key, "--key-pem")?,
        )),
        _ => None,
    };
    let vendor_public_key = args
        .vendor_public_key
        .as_deref()
        .map(crate::update_commands::load_vendor_public_key)
        .transpose()?;
    let generated_key = psk_text.is_none();
    dyad_node::appliance::ensure_folder(&args.data_dir)?;
    let appliance = Appliance::init(
        DataDir::new(&args.data_dir),
        InitOptions {
            name: args.name,
            listen: args.listen,
            site_hostname: args.site_hostname,
            psk_text,
            software,
            identity_pem,
            vendor_public_key,
            store_format: args.store_format,
        },
    )?;
    println!(
        "initialised appliance {} in {}",
        appliance.settings.name,
        args.data_dir.display()
    );
    println!("  node id          {}", appliance.settings.node_id);
    println!("  failover port    {}", appliance.settings.listen);
    println!("  software         {}", appliance.settings.software);
    println!("  key fingerprint  {}", appliance.psk.fingerprint());
    println!(
        "  certificate      {}",
        appliance.certificate_fingerprint_hex()
    );
    if generated_key {
        println!(
            "a new inter-appliance key was generated in {}; initialise the other appliance with \
             --psk-file pointing at a copy of it, then compare `dyad key show` on both",
            appliance.dir.psk().display()
        );
    }
    Ok(())
}

pub fn keygen() -> CliResult {
    let key = transport::keygen()?;
    println!("{}", key.reveal_printable());
    Ok(())
}

pub fn key_show(data_dir: &Path) -> CliResult {
    let dir = DataDir::new(data_dir);
    // Without this, an uninitialised folder would be reported as a missing key file.
    if !dir.settings().exists() {
        return Err(CliError::from(
            dyad_node::appliance::ApplianceError::NotInitialised(data_dir.to_path_buf()),
        ));
    }
    let fingerprint = transport::key_show(&dir.psk())?;
    println!("{fingerprint}");
    Ok(())
}

pub fn key_set(data_dir: &Path, psk_file: &Path) -> CliResult {
    let text = String::from_utf8(read_small(psk_file, "--psk-file")?).map_err(|_| {
        CliError::operator(format!(
            "{} is not text from `dyad keygen`",
            psk_file.display()
        ))
    })?;
    let dir = DataDir::new(data_dir);
    Appliance::open(dir.clone())?;
    let fingerprint = transport::key_set(&dir.psk(), &text)?;
    println!("key replaced; fingerprint {fingerprint}");
    println!("restart `dyad serve` to use it; until both appliances hold the same key, their links fail with a key mismatch");
    Ok(())
}

pub fn serve(
    data_dir: &Path,
    first_sync_delay_s: u64,
    sync_interval_s: u64,
    storage_failure_exit_s: u64,
) -> CliResult {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let config = ReplicaConfig {
        first_sync_delay_ms: first_sync_delay_s.saturating_mul(1000),
        sync_interval_ms: sync_interval_s.max(1).saturating_mul(1000),
        ..ReplicaConfig::default()
    };
    let options = driver::ServeOptions {
        storage_failure_exit_ms: (storage_failure_exit_s > 0)
            .then(|| storage_failure_exit_s.saturating_mul(1000)),
    };
    match driver::serve_with(DataDir::new(data_dir), config, None, options)? {
        driver::ServeEnd::Shutdown => Ok(()),
        driver::ServeEnd::StorageFailed { message } => {
            eprintln!(
                "dyad: the store stopped after a storage failure ({message}); exiting with code \
                 {} so the service manager restarts dyad and recovery runs; if it fails again, \
                 check the disk (`dmesg`, SMART) before restarting",
                driver::STORAGE_FAILURE_EXIT_CODE
            );
            std::process::exit(i32::from(driver::STORAGE_FAILURE_EXIT_CODE));
        }
    }
}

/// Sends `request` to the running appliance, or answers it offline when none runs.
fn request(
    data_dir: &Path,
    request: AdminRequest,
    on_reply: impl FnMut(&AdminReply),
) -> Result<Value, CliError> {
    let dir = DataDir::new(data_dir);
    if !dir.settings().exists() {
        return Err(CliError::from(
            dyad_node::appliance::ApplianceError::NotInitialised(data_dir.to_path_buf()),
        ));
    }
    let reply = match admin_call(&dir, &request, on_reply) {
        Ok(reply) => reply,
        Err(AdminCallError::NotRunning(_)) => driver::answer_offline(&dir, request)?,
        Err(error @ AdminCallError::Failed(_)) => return Err(error.into()),
    };
    match reply {
        AdminReply::Ok(value) => Ok(value),
        AdminReply::Failed(failure) => Err(failure.into()),
        AdminReply::Progress(_) => Err(CliError::internal(
            "dyad serve ended its answer with a progress line",
        )),
    }
}

/// A string field of an answer, `-` when absent.
fn text(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or("-")
        .to_string()
}

/// A number field of an answer.
fn number(value: &Value, key: &str) -> Option<u64> {
    value.get(key).and_then(Value::as_u64)
}

fn print_text(value: &Value) {
    match value {
        Value::String(text) => println!("{text}"),
        other => println!(
            "{}",
            serde_json::to_string_pretty(other).unwrap_or_default()
        ),
    }
}

pub fn establish(data_dir: &Path, backup: String, reverse: String) -> CliResult {
    let value = request(
        data_dir,
        AdminRequest::Establish { backup, reverse },
        |_| {},
    )?;
    print_text(&value);
    Ok(())
}

pub fn promote(data_dir: &Path, force: bool) -> CliResult {
    let value = request(data_dir, AdminRequest::Promote { force }, |_| {})?;
    print_text(&value);
    Ok(())
}

pub fn demote(data_dir: &Path) -> CliResult {
    let value = request(data_dir, AdminRequest::Demote, |_| {})?;
    print_text(&value);
    Ok(())
}

/// `dyad client check-in`: what the client-update gate tells this client.
pub fn client_check_in(
    data_dir: &Path,
    client_id: String,
    kind: String,
    installed_app: String,
) -> CliResult {
    let value = request(
        data_dir,
        AdminRequest::ClientCheckIn {
            client_id,
            kind,
            installed_app,
        },
        |_| {},
    )?;
    println!("{}", serde_json::to_string(&value).unwrap_or_default());
    Ok(())
}

/// `dyad client progress`: updated, in progress, waiting, needing a manual reinstall.
pub fn client_progress(data_dir: &Path) -> CliResult {
    let value = request(data_dir, AdminRequest::ClientProgress, |_| {})?;
    let number = |key: &str| value.get(key).and_then(Value::as_u64).unwrap_or(0);
    println!(
        "application {}: {} updated, {} updating (at most {} at once), {} waiting, {} need a manual reinstall",
        value.get("application_version").and_then(Value::as_str).unwrap_or("?"),
        number("updated"),
        number("in_progress"),
        number("max_concurrent_upgrades"),
        number("waiting"),
        number("needs_manual_reinstall")
    );
    Ok(())
}

pub fn break_relationship(data_dir: &Path) -> CliResult {
    let value = request(data_dir, AdminRequest::Break, |_| {})?;
    print_text(&value);
    Ok(())
}

/// Shows Sync Now's progress: a bar on a terminal, plain lines otherwise.
pub fn sync_now(data_dir: &Path) -> CliResult {
    let terminal = std::io::stdout().is_terminal();
    let bar = terminal.then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let on_reply = |reply: &AdminReply| {
        if let AdminReply::Progress(progress) = reply {
            let number = |key: &str| progress.get(key).and_then(Value::as_u64).unwrap_or(0);
            let phase = progress
                .get("phase")
                .and_then(Value::as_str)
                .unwrap_or("sync");
            match &bar {
                Some(bar) => {
                    bar.set_length(number("bytes_total"));
                    bar.set_position(number("bytes_done"));
                    bar.set_message(format!(
                        "{phase} {}/{} sessions",
                        number("sessions_done"),
                        number("sessions_total")
                    ));
                }
                None => println!(
                    "{phase}: {}/{} sessions, {}/{} bytes",
                    number("sessions_done"),
                    number("sessions_total"),
                    number("bytes_done"),
                    number("bytes_total")
                ),
            }
        }
    };
    let result = request(data_dir, AdminRequest::SyncNow, on_reply);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    print_text(&result?);
    Ok(())
}

fn format_time(unix_ms: u64) -> String {
    let now = wall_clock_ms();
    let seconds = now.saturating_sub(unix_ms) / 1000;
    format!("{seconds} s ago")
}

pub fn status(data_dir: &Path, json: bool) -> CliResult {
    let value = request(data_dir, AdminRequest::Status, |_| {})?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(());
    }
    println!("{} ({})", text(&value, "name"), text(&value, "role"));
    println!("  epoch              {}", text(&value, "epoch"));
    println!("  software           {}", text(&value, "software"));
    if let Some(install) = value
        .get("last_install")
        .filter(|install| !install.is_null())
    {
        println!("  last install       {}", text(install, "message"));
    }
    println!("  key fingerprint    {}", text(&value, "key_fingerprint"));
    println!(
        "  site address       should point at {}",
        text(&value, "site_address_should_point_at")
    );
    match value.get("peer").filter(|peer| !peer.is_null()) {
        Some(peer) => println!(
            "  peer               {} at {}",
            text(peer, "name"),
            text(peer, "address")
        ),
        None => println!("  peer               none"),
    }
    match value.get("link").filter(|link| !link.is_null()) {
        Some(link) => {
            let offset = link
                .get("clock_offset_ms")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let warning = link
                .get("clock_offset_warning")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            println!(
                "  link               up; peer clock offset {offset} ms{}",
                if warning {
                    " (WARNING: check NTP on both appliances)"
                } else {
                    ""
                }
            );
        }
        None => println!(
            "  link               down{}",
            value
                .get("link_problem")
                .and_then(Value::as_str)
                .map(|why| format!(" ({why})"))
                .unwrap_or_default()
        ),
    }
    if let Some(warning) = value.get("old_hardware_refused").and_then(Value::as_str) {
        println!("  WARNING            {warning}");
    }
    match value.get("last_sync").filter(|sync| !sync.is_null()) {
        Some(sync) => {
            let when = number(sync, "finished_unix_ms")
                .map(format_time)
                .unwrap_or_default();
            let flag = |key: &str| sync.get(key).and_then(Value::as_bool).unwrap_or(false);
            let outcome = if flag("succeeded") {
                "succeeded"
            } else if flag("interrupted") {
                "INTERRUPTED"
            } else {
                "FAILED"
            };
            println!(
                "  last sync          {outcome} {when}: {}",
                text(sync, "result")
            );
            if let Some(success) = number(sync, "last_success_unix_ms") {
                println!("  last success       {}", format_time(success));
            }
        }
        None => println!("  last sync          never"),
    }
    match value.get("lag").filter(|lag| !lag.is_null()) {
        Some(lag) => println!(
            "  lag                {} sessions, {} bytes missing",
            number(lag, "sessions_missing").unwrap_or(0),
            number(lag, "bytes_missing").unwrap_or(0)
        ),
        None => match number(&value, "lag_unknown_since_unix_ms") {
            Some(since) => println!(
                "  lag                unknown since {} (a sync was cut off or failed)",
                format_time(since)
            ),
            None if text(&value, "role") != "standalone" => {
                println!("  lag                unknown: no sync has finished since this appliance started")
            }
            None => {}
        },
    }
    if let Some(running) = value
        .get("running_sync")
        .filter(|running| !running.is_null())
    {
        let progress = running.get("progress").cloned().unwrap_or(Value::Null);
        println!(
            "  running sync       {} {}/{} bytes at {} B/s, eta {} s",
            text(&progress, "phase"),
            number(&progress, "bytes_done").unwrap_or(0),
            number(&progress, "bytes_total").unwrap_or(0),
            number(running, "bytes_per_second").unwrap_or(0),
            number(running, "eta_seconds").map_or("?".to_string(), |eta| eta.to_string())
        );
    }
    println!(
        "  sessions held      {}",
        number(&value, "sessions_held").unwrap_or(0)
    );
    if let Some(recordings) = value.get("recordings").filter(|r| !r.is_null()) {
        let damaged = number(recordings, "damaged").unwrap_or(0);
        println!(
            "  recordings         {} complete, {} damaged, {} being received",
            number(recordings, "complete").unwrap_or(0),
            damaged,
            number(recordings, "partial").unwrap_or(0)
        );
        if damaged > 0 {
            println!("  DAMAGED            {damaged} recording(s) kept but not served; see `dyad session damaged list`");
        }
    }
    println!("  config version     {}", text(&value, "config_version"));
    println!(
        "  bytes sent         {} (re-sent {})",
        number(&value, "bytes_sent").unwrap_or(0),
        number(&value, "bytes_resent").unwrap_or(0)
    );
    if value
        .get("forced_promotion_unresolved")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        println!("  WARNING            promoted without the old primary: demote it (`dyad demote`) or break it off as soon as it is reachable");
    }
    if let Some(split) = value.get("split_brain").filter(|split| !split.is_null()) {
        println!(
            "  SPLIT BRAIN        {} is {} in epoch {} (configuration {}, {} sessions); this appliance: epoch {} (configuration {})",
            text(split, "peer_name"),
            text(split, "peer_role"),
            text(split, "peer_epoch"),
            text(split, "peer_config_version"),
            number(split, "peer_sessions_held").map_or("?".to_string(), |n| n.to_string()),
            text(split, "this_epoch"),
            text(split, "this_config_version")
        );
        println!("                     nothing is synced until an operator demotes one (`dyad demote`) or breaks and re-establishes");
    }
    if let Some(failure) = value.get("storage_failure").and_then(Value::as_str) {
        println!("  STORAGE FAILURE    {failure}");
    }
    Ok(())
}

pub fn config_write(data_dir: &Path, key: String, value: Option<String>) -> CliResult {
    let request_value = match value {
        Some(value) => AdminRequest::ConfigSet { key, value },
        None => AdminRequest::ConfigDelete { key },
    };
    print_text(&request(data_dir, request_value, |_| {})?);
    Ok(())
}

pub fn config_get(data_dir: &Path, key: String) -> CliResult {
    print_text(&request(data_dir, AdminRequest::ConfigGet { key }, |_| {})?);
    Ok(())
}

pub fn config_list(data_dir: &Path, prefix: String) -> CliResult {
    let value = request(data_dir, AdminRequest::ConfigList { prefix }, |_| {})?;
    if let Value::Object(entries) = value {
        for (key, value) in entries {
            println!("{key} = {}", value.as_str().unwrap_or_default());
        }
    }
    Ok(())
}

pub fn session_import(
    data_dir: &Path,
    file: PathBuf,
    started_unix_ms: Option<u64>,
    ended_unix_ms: Option<u64>,
) -> CliResult {
    let path = std::fs::canonicalize(&file)
        .map_err(|error| CliError::operator(format!("--file {}: {error}", file.display())))?;
    let value = request(
        data_dir,
        AdminRequest::SessionImport {
            path: path.display().to_string(),
            started_unix_ms,
            ended_unix_ms,
        },
        |_| {},
    )?;
    println!("imported {}", value.as_str().unwrap_or_default());
    Ok(())
}

pub fn session_list(data_dir: &Path, as_json: bool) -> CliResult {
    if as_json {
        let value = request(data_dir, AdminRequest::SessionDetails, |_| {})?;
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(());
    }
    let value = request(data_dir, AdminRequest::SessionList, |_| {})?;
    for line in value.as_array().into_iter().flatten() {
        println!("{}", line.as_str().unwrap_or_default());
    }
    Ok(())
}

pub fn damaged_list(data_dir: &Path, as_json: bool) -> CliResult {
    let value = request(data_dir, AdminRequest::SessionDamagedList, |_| {})?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(());
    }
    let damaged = value.as_array().cloned().unwrap_or_default();
    if damaged.is_empty() {
        println!("no damaged recordings");
        return Ok(());
    }
    for entry in &damaged {
        let bad: Vec<String> = entry
            .get("bad_chunks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .map(|index| index.to_string())
            .collect();
        let since = number(entry, "damaged_since_unix_ms").unwrap_or(0);
        println!(
            "{} {} bytes, found damaged {}: {} of {} chunks bad ({})",
            text(entry, "id"),
            number(entry, "size_bytes").unwrap_or(0),
            if since == 0 {
                "at an unknown time".to_string()
            } else {
                format_time(since)
            },
            bad.len(),
            number(entry, "chunk_count").unwrap_or(0),
            bad.join(", ")
        );
    }
    println!(
        "{} damaged recording(s): never served; each is fetched again at the next sync if the \
         peer holds it. Without a peer that does: `dyad session damaged export --session ID --out \
         FILE`, then `dyad session damaged forget --session ID --yes`.",
        damaged.len()
    );
    Ok(())
}

pub fn damaged_export(data_dir: &Path, session: String, out: PathBuf) -> CliResult {
    let path = if out.is_absolute() {
        out
    } else {
        std::env::current_dir()
            .map_err(|error| CliError::operator(format!("--out: {error}")))?
            .join(out)
    };
    let value = request(
        data_dir,
        AdminRequest::SessionDamagedExport {
            session,
            path: path.display().to_string(),
        },
        |_| {},
    )?;
    let list = |key: &str| -> String {
        value
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .map(|index| index.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "wrote {} bytes to {}; chunks that do not verify (as they are): [{}]; unreadable chunks \
         (zeros): [{}]",
        number(&value, "bytes_written").unwrap_or(0),
        path.display(),
        list("unverified_chunks"),
        list("unreadable_chunks")
    );
    Ok(())
}

pub fn damaged_forget(data_dir: &Path, session: String, yes: bool) -> CliResult {
    if !yes {
        return Err(CliError::operator(format!(
            "forgetting {session} deletes its bytes for good; export it first if no peer holds \
             it (`dyad session damaged export --session {session} --out FILE`), then add --yes"
        )));
    }
    print_text(&request(
        data_dir,
        AdminRequest::SessionDamagedForget { session },
        |_| {},
    )?);
    Ok(())
}

pub fn session_verify(data_dir: &Path) -> CliResult {
    let value = request(data_dir, AdminRequest::SessionVerify, |_| {})?;
    let bad: Vec<&str> = value
        .get("bad_chunks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!(
        "checked {} recordings ({} bytes)",
        value
            .get("recordings_checked")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        value
            .get("bytes_checked")
            .and_then(Value::as_u64)
            .unwrap_or(0)
    );
    if bad.is_empty() {
        println!("every chunk verified");
        return Ok(());
    }
    for line in &bad {
        println!("BAD {line}");
    }
    Err(CliError::operator(format!(
        "{} bad chunk(s); the recordings are listed as damaged (`dyad session damaged list`), \
         never served, and fetched again from the peer if it holds them",
        bad.len()
    )))
}

fn conflict_records(data_dir: &Path) -> Result<Vec<Value>, CliError> {
    Ok(request(data_dir, AdminRequest::Conflicts, |_| {})?
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn print_conflict(number: usize, record: &Value, with_values: bool) {
    let text = |key: &str| {
        record
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_string()
    };
    let when = record
        .get("recorded_unix_ms")
        .and_then(Value::as_u64)
        .map(format_time)
        .unwrap_or_default();
    let keys = record
        .get("differing")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    println!(
        "conflict {number}: recorded {when} on {}; configuration {} replaced by {}; {} key(s) differed",
        text("appliance"),
        text("local_version"),
        text("incoming_version"),
        keys.len()
    );
    if with_values {
        for key in keys {
            let side = |name: &str| {
                key.get(name)
                    .and_then(Value::as_str)
                    .map_or("(absent)".to_string(), |v| format!("{v:?}"))
            };
            println!(
                "  {}: this appliance had {} / replaced by {}",
                key.get("key").and_then(Value::as_str).unwrap_or("?"),
                side("local"),
                side("incoming")
            );
        }
    }
}

/// `dyad conflicts list`: one line per conflict record.
pub fn conflicts_list(data_dir: &Path) -> CliResult {
    let records = conflict_records(data_dir)?;
    if records.is_empty() {
        println!("no conflicts recorded");
    }
    for (index, record) in records.iter().enumerate() {
        print_conflict(index + 1, record, false);
    }
    Ok(())
}

/// `dyad conflicts show N`: one record with both values of every differing key.
pub fn conflicts_show(data_dir: &Path, number: usize) -> CliResult {
    let records = conflict_records(data_dir)?;
    let Some(record) = number.checked_sub(1).and_then(|index| records.get(index)) else {
        return Err(CliError::operator(format!(
            "there is no conflict {number}; `dyad conflicts list` shows the {} recorded",
            records.len()
        )));
    };
    print_conflict(number, record, true);
    Ok(())
}

/// `dyad conflicts export`: every record as JSON, to a file or standard output.
pub fn conflicts_export(data_dir: &Path, out: Option<&Path>) -> CliResult {
    let records = conflict_records(data_dir)?;
    let text = serde_json::to_string_pretty(&Value::Array(records)).unwrap_or_default();
    match out {
        Some(path) => {
            std::fs::write(path, format!("{text}\n")).map_err(|error| {
                CliError::operator(format!("--out {}: {error}", path.display()))
            })?;
            println!("exported to {}", path.display());
        }
        None => println!("{text}"),
    }
    Ok(())
}

/// Reads a key from a file as `dyad init --psk-file` does (for the demo and tests).
pub fn load_key(path: &Path) -> Result<InterApplianceKey, CliError> {
    Ok(InterApplianceKey::load(path)?)
}

// --- Settings backup, certificates and factory reset (`engine/node/src/backup/`). ---

/// The store's part of a settings backup, from the running server or the data folder.
fn backup_store_settings(data_dir: &Path) -> Result<dyad_node::backup::StoreSettings, CliError> {
    let value = request(data_dir, AdminRequest::BackupSnapshot, |_| {})?;
    let document: dyad_node::backup::StoreDocument =
        serde_json::from_value(value).map_err(|error| {
            CliError::operator(format!(
                "unreadable backup snapshot from dyad serve: {error}"
            ))
        })?;
    dyad_node::backup::StoreSettings::from_document(document).map_err(CliError::operator)
}

/// `dyad backup create`.
pub fn backup_create(data_dir: &Path, out: &Path, passphrase_file: &Path) -> CliResult {
    backup_create_with(
        data_dir,
        out,
        passphrase_file,
        dyad_node::backup::KdfParams::DEFAULT,
    )
}

/// `dyad backup create` with explicit KDF costs (tests pass cheap ones; the command never does).
pub fn backup_create_with(
    data_dir: &Path,
    out: &Path,
    passphrase_file: &Path,
    kdf: dyad_node::backup::KdfParams,
) -> CliResult {
    let passphrase = dyad_node::backup::read_passphrase(passphrase_file).map_err(CliError::from)?;
    if out.exists() {
        return Err(CliError::operator(format!(
            "--out {} already exists; choose a new file name (nothing was written)",
            out.display()
        )));
    }
    let appliance = Appliance::open(DataDir::new(data_dir))?;
    let store = backup_store_settings(data_dir)?;
    let now = wall_clock_ms();
    let bytes = dyad_node::backup::seal_backup(&appliance, store.clone(), &passphrase, kdf, now)
        .map_err(CliError::from)?;
    dyad_node::backup::write_new_file(out, &bytes).map_err(CliError::from)?;
    request(
        data_dir,
        AdminRequest::BackupRecorded { taken_unix_ms: now },
        |_| {},
    )?;
    println!(
        "settings backup of {} written to {} ({} bytes, mode 0600)",
        appliance.settings.name,
        out.display(),
        bytes.len()
    );
    println!(
        "  {} configuration keys, failover: {}, own sessions up to sequence {}",
        store.config.entries.len(),
        store
            .replica_state
            .as_ref()
            .map_or("standalone", |state| { dyad_wire::Role::name(state.role) }),
        store
            .high_water_marks
            .get(&appliance.settings.node_id)
            .copied()
            .unwrap_or(0)
    );
    println!("  recordings are not in the file; keep the passphrase apart from it");
    Ok(())
}

fn parse_target_version(
    app_version: Option<&str>,
    base_version: Option<&str>,
) -> Result<dyad_node::backup::TargetVersion, CliError> {
    Ok(dyad_node::backup::TargetVersion {
        app: app_version
            .map(parse_version)
            .transpose()
            .map_err(|why| CliError::operator(format!("--app-version: {why}")))?,
        base: base_version
            .map(parse_version)
            .transpose()
            .map_err(|why| CliError::operator(format!("--base-version: {why}")))?,
    })
}

/// `dyad backup restore`.
pub fn backup_restore(
    data_dir: &Path,
    input: &Path,
    passphrase_file: &Path,
    app_version: Option<&str>,
    base_version: Option<&str>,
) -> CliResult {
    let version = parse_target_version(app_version, base_version)?;
    let passphrase = dyad_node::backup::read_passphrase(passphrase_file).map_err(CliError::from)?;
    let bytes = dyad_node::backup::read_file(input).map_err(CliError::from)?;
    let report = dyad_node::backup::restore(&bytes, &passphrase, data_dir, version)
        .map_err(CliError::from)?;
    println!(
        "restored appliance {} into {}",
        report.name,
        data_dir.display()
    );
    println!(
        "  node id          {} (new; succeeds {}, which its peer will refuse from now on)",
        report.node_id, report.predecessor_node_id
    );
    println!(
        "  software         {} (backup written by {})",
        report.software, report.backup_software
    );
    println!("  key fingerprint  {}", report.key_fingerprint);
    println!("  certificate      {}", report.certificate_fingerprint);
    println!("  configuration    {} keys", report.config_entries);
    println!(
        "  own sessions     numbered from {} under the new node id",
        report.local_sequence_floor
    );
    println!(
        "  conflicts        {} records carried over; vendor key {}",
        report.conflicts,
        if report.vendor_key {
            "trusted"
        } else {
            "none (run `dyad update trust-vendor-key`)"
        }
    );
    match &report.relationship {
        Some((role, peer)) => println!(
            "  failover         {role} of {peer}: start `dyad serve --data-dir {}` where the old \
             appliance was reachable; the pair re-syncs and the recordings arrive from {peer}",
            data_dir.display()
        ),
        None => println!("  failover         standalone"),
    }
    if report.software != report.backup_software {
        println!(
            "  note             this appliance now runs a newer version than the backup's; its \
             peer must run the same version before the link comes up"
        );
    }
    Ok(())
}

/// `dyad backup inspect`.
pub fn backup_inspect(input: &Path, passphrase_file: &Path, data_dir: Option<&Path>) -> CliResult {
    use dyad_node::backup::inspect::{self, CurrentAppliance, Target};
    let passphrase = dyad_node::backup::read_passphrase(passphrase_file).map_err(CliError::from)?;
    let bytes = dyad_node::backup::read_file(input).map_err(CliError::from)?;
    let (envelope, contents) =
        dyad_node::backup::open_backup(&bytes, &passphrase).map_err(CliError::from)?;
    for line in inspect::describe(&envelope, &contents) {
        println!("{line}");
    }
    let Some(data_dir) = data_dir else {
        return Ok(());
    };
    let target = if DataDir::new(data_dir).settings().exists() {
        let appliance = Appliance::open(DataDir::new(data_dir))?;
        let store = backup_store_settings(data_dir)?;
        Target::Appliance(Box::new(CurrentAppliance {
            certificate_fingerprint: appliance.certificate_fingerprint_hex(),
            key_fingerprint: appliance.psk.fingerprint().to_string(),
            settings: appliance.settings,
            store,
        }))
    } else if dyad_node::backup::check_fresh_folder(data_dir).is_ok() {
        Target::Fresh
    } else {
        Target::NotEmpty
    };
    println!();
    println!("dry run (nothing is changed):");
    for line in inspect::dry_run(&data_dir.display().to_string(), &target, &contents) {
        println!("{line}");
    }
    Ok(())
}

/// `dyad cert export`.
pub fn cert_export(data_dir: &Path, out: &Path, passphrase_file: &Path) -> CliResult {
    cert_export_with(
        data_dir,
        out,
        passphrase_file,
        dyad_node::backup::KdfParams::DEFAULT,
    )
}

/// `dyad cert export` with explicit KDF costs (for tests).
pub fn cert_export_with(
    data_dir: &Path,
    out: &Path,
    passphrase_file: &Path,
    kdf: dyad_node::backup::KdfParams,
) -> CliResult {
    let passphrase = dyad_node::backup::read_passphrase(passphrase_file).map_err(CliError::from)?;
    let appliance = Appliance::open(DataDir::new(data_dir))?;
    let bytes =
        dyad_node::backup::cert::export(&appliance, &passphrase, kdf).map_err(CliError::from)?;
    dyad_node::backup::write_new_file(out, &bytes).map_err(CliError::from)?;
    println!(
        "certificate {} and its private key (encrypted) written to {}; nothing was removed",
        appliance.certificate_fingerprint_hex(),
        out.display()
    );
    Ok(())
}

/// `dyad cert import`.
pub fn cert_import(data_dir: &Path, input: &Path, passphrase_file: &Path) -> CliResult {
    let passphrase = dyad_node::backup::read_passphrase(passphrase_file).map_err(CliError::from)?;
    let bytes = dyad_node::backup::read_file(input).map_err(CliError::from)?;
    let (identity, warnings) =
        dyad_node::backup::cert::open_export(&bytes, &passphrase, wall_clock_ms())
            .map_err(CliError::from)?;
    for warning in &warnings {
        println!("{warning}");
    }
    let notes = dyad_node::backup::cert::install(&DataDir::new(data_dir), &identity)
        .map_err(CliError::from)?;
    for note in notes {
        println!("{note}");
    }
    Ok(())
}

/// `dyad factory-reset`.
pub fn factory_reset(data_dir: &Path, yes: bool, replaced: bool) -> CliResult {
    let report = dyad_node::backup::reset::factory_reset(
        &DataDir::new(data_dir),
        dyad_node::backup::reset::ResetOptions {
            confirmed: yes,
            replaced,
        },
    )
    .map_err(CliError::from)?;
    println!("erased:");
    for line in report.lines() {
        println!("{line}");
    }
    println!(
        "{} no longer holds an appliance; the files were deleted, not overwritten (except the \
         keys): wipe the disk before disposing of the hardware",
        data_dir.display()
    );
    Ok(())
}
