//! `dyad demo`: two appliances on loopback in a temporary folder, end to end.
//!
//! It does what an operator would: generate a key, initialise both appliances with it, put
//! sample configuration and recordings on the primary (and one recording on the backup, to
//! show that nothing on either side is lost), start both, establish, run Sync Now with
//! progress, print both statuses and the throughput, and check that the two stores hold the
//! same sessions and configuration. Everything runs in this process and is removed at the end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::{self, CliError};
use dyad_core::replica::ReplicaConfig;
use dyad_node::admin::{admin_call, AdminCallError};
use dyad_node::admin::{AdminReply, AdminRequest};
use dyad_node::appliance::{build_software_version, Appliance, DataDir, InitOptions};
use dyad_node::driver;
use dyad_node::transport;

/// How long the demo waits for a server to come up.
const STARTUP_WAIT: Duration = Duration::from_secs(20);

fn free_port() -> Result<u16, CliError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Incompressible bytes from a seed, written in 1 MiB pieces.
fn write_recording(path: &Path, size_bytes: u64, seed: u64) -> Result<(), CliError> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut state = seed | 1;
    let mut buffer = vec![0u8; 1 << 20];
    let mut left = size_bytes;
    while left > 0 {
        for word in buffer.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let take = left.min(buffer.len() as u64) as usize;
        file.write_all(&buffer[..take])?;
        left -= take as u64;
    }
    file.flush()?;
    Ok(())
}

fn offline(dir: &DataDir, request: AdminRequest) -> Result<Value, CliError> {
    match driver::answer_offline(dir, request)? {
        AdminReply::Ok(value) => Ok(value),
        AdminReply::Failed(failure) => Err(failure.into()),
        AdminReply::Progress(_) => Err(CliError::internal("unexpected progress")),
    }
}

fn online(dir: &DataDir, request: AdminRequest) -> Result<Value, CliError> {
    match admin_call(dir, &request, |_| {}) {
        Ok(AdminReply::Ok(value)) => Ok(value),
        Ok(AdminReply::Failed(failure)) => Err(failure.into()),
        Ok(AdminReply::Progress(_)) => Err(CliError::internal("unexpected progress")),
        Err(error) => Err(error.into()),
    }
}

fn wait_for_server(dir: &DataDir) -> Result<(), CliError> {
    let deadline = Instant::now() + STARTUP_WAIT;
    loop {
        match admin_call(dir, &AdminRequest::Status, |_| {}) {
            Ok(_) => return Ok(()),
            Err(AdminCallError::NotRunning(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(error) => {
                return Err(CliError::operator(format!(
                    "the demo appliance did not start: {error}"
                )))
            }
        }
    }
}

struct Running {
    shutdown: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<Result<(), driver::ServeError>>,
}

fn start(dir: &DataDir) -> Result<Running, CliError> {
    let (shutdown, receiver) = tokio::sync::oneshot::channel();
    let serve_dir = dir.clone();
    let thread = std::thread::spawn(move || {
        driver::serve(serve_dir, ReplicaConfig::default(), Some(receiver))
    });
    wait_for_server(dir)?;
    Ok(Running { shutdown, thread })
}

fn stop(running: Running) -> Result<(), CliError> {
    let _ = running.shutdown.send(());
    match running.thread.join() {
        Ok(result) => result.map_err(CliError::from),
        Err(_) => Err(CliError::internal("a demo appliance panicked")),
    }
}

fn init(root: &Path, name: &str, port: u16, key_text: &str) -> Result<DataDir, CliError> {
    let dir = DataDir::new(root.join(name));
    dyad_node::appliance::ensure_folder(&dir.root)?;
    Appliance::init(
        dir.clone(),
        InitOptions {
            name: name.to_string(),
            listen: format!("127.0.0.1:{port}"),
            site_hostname: Some("recordings.demo.invalid".into()),
            psk_text: Some(key_text.to_string()),
            software: build_software_version(),
            identity_pem: None,
            vendor_public_key: None,
            store_format: None,
        },
    )?;
    Ok(dir)
}

/// Runs the demo with `size_mb` MiB of recordings split into `sessions` sessions.
pub fn run(size_mb: u64, sessions: u64) -> Result<(), CliError> {
    let sessions = sessions.max(1);
    let temp = tempfile::Builder::new().prefix("dyad-demo-").tempdir()?;
    let root: PathBuf = temp.path().to_path_buf();
    println!("dyad demo in {}", root.display());

    let key = transport::keygen()?;
    let key_text = key.reveal_printable();
    let (port_a, port_b) = (free_port()?, free_port()?);
    let a = init(&root, "appliance-a", port_a, &key_text)?;
    let b = init(&root, "appliance-b", port_b, &key_text)?;
    println!("initialised appliance-a (127.0.0.1:{port_a}) and appliance-b (127.0.0.1:{port_b}); key fingerprint {}", key.fingerprint());

    for (key, value) in [
        ("site/name", "Demo Site"),
        ("site/retention_days", "90"),
        ("policy/recording", "all"),
        ("policy/max_session_hours", "8"),
    ] {
        offline(
            &a,
            AdminRequest::ConfigSet {
                key: key.into(),
                value: value.into(),
            },
        )?;
    }
    let total_bytes = size_mb * 1024 * 1024;
    let per_session = total_bytes / sessions;
    let recordings = root.join("recordings");
    std::fs::create_dir_all(&recordings)?;
    for index in 0..sessions {
        let path = recordings.join(format!("a-{index}.rec"));
        let size = if index + 1 == sessions {
            total_bytes - per_session * (sessions - 1)
        } else {
            per_session
        };
        write_recording(&path, size, 1000 + index)?;
        offline(
            &a,
            AdminRequest::SessionImport {
                path: path.display().to_string(),
                started_unix_ms: None,
                ended_unix_ms: None,
            },
        )?;
        std::fs::remove_file(&path)?;
    }
    let b_recording = recordings.join("b-0.rec");
    write_recording(&b_recording, 3 * 1024 * 1024 + 17, 7)?;
    offline(
        &b,
        AdminRequest::SessionImport {
            path: b_recording.display().to_string(),
            started_unix_ms: None,
            ended_unix_ms: None,
        },
    )?;
    println!("appliance-a holds {sessions} sessions ({size_mb} MiB) and 4 configuration keys; appliance-b holds 1 session of its own");

    let running_a = start(&a)?;
    let running_b = match start(&b) {
        Ok(running) => running,
        Err(error) => {
            let _ = stop(running_a);
            return Err(error);
        }
    };
    let outcome = drive(&a, &b, port_a, port_b, total_bytes);
    let stopped_b = stop(running_b);
    let stopped_a = stop(running_a);
    outcome?;
    stopped_a?;
    stopped_b?;
    println!("demo finished; removed {}", root.display());
    Ok(())
}

fn drive(
    a: &DataDir,
    b: &DataDir,
    port_a: u16,
    port_b: u16,
    total_bytes: u64,
) -> Result<(), CliError> {
    println!("\n$ dyad establish --backup 127.0.0.1:{port_b} --reverse 127.0.0.1:{port_a}   (on appliance-a)");
    let established = online(
        a,
        AdminRequest::Establish {
            backup: format!("127.0.0.1:{port_b}"),
            reverse: format!("127.0.0.1:{port_a}"),
        },
    )?;
    println!("{}", established.as_str().unwrap_or_default());

    println!("\n$ dyad sync-now   (on appliance-b; the first sync would otherwise start in 60 s)");
    let started = Instant::now();
    cli::sync_now(&b.root)?;
    let elapsed = started.elapsed().as_secs_f64().max(0.001);
    println!(
        "replicated {:.1} MiB in {elapsed:.2} s: {:.1} MiB/s",
        total_bytes as f64 / 1048576.0,
        total_bytes as f64 / 1048576.0 / elapsed
    );

    for (name, dir) in [("appliance-a", a), ("appliance-b", b)] {
        println!("\n$ dyad status   (on {name})");
        cli::status(&dir.root, false)?;
    }

    let sessions_a = online(a, AdminRequest::SessionList)?;
    let sessions_b = online(b, AdminRequest::SessionList)?;
    let config_a = online(
        a,
        AdminRequest::ConfigList {
            prefix: String::new(),
        },
    )?;
    let config_b = online(
        b,
        AdminRequest::ConfigList {
            prefix: String::new(),
        },
    )?;
    let count = sessions_a.as_array().map_or(0, Vec::len);
    if sessions_a != sessions_b || config_a != config_b {
        return Err(CliError::operator(format!(
            "the stores differ after the sync: {} vs {} sessions, configuration {}",
            count,
            sessions_b.as_array().map_or(0, Vec::len),
            if config_a == config_b {
                "equal"
            } else {
                "different"
            }
        )));
    }
    println!("\nboth appliances hold the same {count} sessions (same content hashes) and the same configuration");
    Ok(())
}
