//! Shared pieces of the real-process tests: run the built `dyad` binary with a time limit,
//! initialise appliances in temporary folders on 127.0.0.1 with ephemeral ports, start
//! `dyad serve` under a guard that kills it whatever happens, poll for a condition with a
//! deadline, and write incompressible recordings quickly.
//!
//! Every wait here is bounded: a hang fails the test with what was seen so far instead of
//! stalling CI. Each test binary uses only some of these helpers.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const DYAD: &str = env!("CARGO_BIN_EXE_dyad");
/// The site's shared hostname every test appliance is given (refused as a peer address).
pub const SITE_HOSTNAME: &str = "recordings.itest.invalid";
/// A quick command (status, config, init) finishes well within this.
pub const QUICK_TIMEOUT: Duration = Duration::from_secs(60);
/// A freshly started `dyad serve` answers on its admin socket within this.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// The transfer window of the default replica configuration (chunks × chunk size): the most a
/// single interruption may make the primary send again.
pub fn window_bytes() -> u64 {
    dyad_core::replica::ReplicaConfig::default().window_chunks as u64
        * dyad_store::CHUNK_SIZE_BYTES as u64
}
/// Pause between two looks at a polled condition.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Panics (with everything printed) unless the command succeeded.
    pub fn ok(self, what: &str) -> Output {
        assert!(
            self.status.success(),
            "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless the command failed; returns its stderr.
    pub fn failed(self, what: &str) -> String {
        assert!(
            !self.status.success(),
            "{what} should have failed but succeeded:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self.stderr
    }

    /// Panics unless the command failed with exit code `code` (who is at fault: 64 the
    /// operator, 69 the network, 70 a defect, 74 local storage, 76 the peer); returns stderr.
    pub fn failed_with(self, what: &str, code: i32) -> String {
        assert_eq!(
            self.status.code(),
            Some(code),
            "{what} should have failed with exit code {code}:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self.stderr
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Kills a child process (SIGKILL) and reaps it when dropped, so that no test leaves a
/// process behind, whether it passes or panics.
pub struct ChildGuard {
    pub child: Child,
    pub what: String,
}

impl ChildGuard {
    pub fn spawn(mut command: Command, what: &str) -> ChildGuard {
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {what}: {error}"));
        ChildGuard {
            child,
            what: what.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .unwrap_or_else(|error| panic!("waiting for {}: {error}", self.what))
    }

    /// Waits at most `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}",
                self.what
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `dyad ARGS` and waits for it at most `timeout` (then kills it and fails).
pub fn dyad_within(args: &[&str], timeout: Duration) -> Output {
    let mut command = Command::new(DYAD);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("dyad {}", args.join(" "));
    let mut guard = ChildGuard::spawn(command, &what);
    let stdout = read_all(guard.child.stdout.take().expect("stdout is piped"));
    let stderr = read_all(guard.child.stderr.take().expect("stderr is piped"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = guard.exited() {
            break status;
        }
        if Instant::now() >= deadline {
            guard.kill();
            let stdout = stdout.join().unwrap_or_default();
            let stderr = stderr.join().unwrap_or_default();
            panic!(
                "{what} did not finish within {timeout:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Runs a quick `dyad` command.
pub fn dyad(args: &[&str]) -> Output {
    dyad_within(args, QUICK_TIMEOUT)
}

/// A local TCP port nobody listens on right now, never handed out twice by this process (so
/// that two appliances of one test cannot be given the same port).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = listener.local_addr().expect("a bound address").port();
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if given.insert(port) {
            return port;
        }
    }
    panic!("no fresh ephemeral port after 100 tries");
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// Writes a new inter-appliance key with `dyad keygen` into `path`.
pub fn keygen(path: &Path) {
    let output = dyad(&["keygen"]).ok("dyad keygen");
    std::fs::write(path, output.stdout).expect("write the key file");
}

/// One appliance's data folder and failover port.
#[derive(Clone, Debug)]
pub struct Appliance {
    pub name: String,
    pub dir: PathBuf,
    pub port: u16,
}

impl Appliance {
    /// `dyad init` in `root/name` with the key in `key_file`, listening on a fresh port.
    pub fn init(root: &Path, name: &str, key_file: &Path, extra: &[&str]) -> Appliance {
        let appliance = Appliance {
            name: name.to_string(),
            dir: root.join(name),
            port: free_port(),
        };
        let listen = appliance.address();
        let mut args = vec![
            "init",
            "--data-dir",
            appliance.dir_str(),
            "--name",
            name,
            "--listen",
            &listen,
            "--site-hostname",
            SITE_HOSTNAME,
            "--psk-file",
            path_str(key_file),
        ];
        args.extend_from_slice(extra);
        dyad(&args).ok("dyad init");
        appliance
    }

    pub fn dir_str(&self) -> &str {
        path_str(&self.dir)
    }

    /// `127.0.0.1:PORT` of its failover port.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Runs `dyad COMMAND... --data-dir DIR REST...` (the data folder flag goes after the
    /// subcommand words, before the rest).
    pub fn run(&self, words: &[&str], rest: &[&str]) -> Output {
        self.run_within(words, rest, QUICK_TIMEOUT)
    }

    pub fn run_within(&self, words: &[&str], rest: &[&str], timeout: Duration) -> Output {
        let mut args: Vec<&str> = words.to_vec();
        args.extend(["--data-dir", self.dir_str()]);
        args.extend_from_slice(rest);
        dyad_within(&args, timeout)
    }

    /// `dyad status --json`, parsed.
    pub fn status(&self) -> Value {
        let output = self.run(&["status"], &["--json"]).ok("dyad status --json");
        serde_json::from_str(&output.stdout)
            .unwrap_or_else(|error| panic!("status is not JSON ({error}): {}", output.stdout))
    }

    /// The running server's status straight from its admin socket (one JSON request, one
    /// JSON answer), without starting a process: cheap enough to poll every few
    /// milliseconds. `None` when no server answers.
    pub fn status_from_socket(&self) -> Option<Value> {
        use std::io::{BufRead, BufReader};
        let mut stream =
            std::os::unix::net::UnixStream::connect(self.dir.join("admin.sock")).ok()?;
        stream.set_read_timeout(Some(QUICK_TIMEOUT)).ok()?;
        stream.write_all(b"{\"op\":\"status\"}\n").ok()?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).ok()?;
        let reply: Value = serde_json::from_str(&line).ok()?;
        reply.get("ok").cloned()
    }

    pub fn role(&self) -> String {
        self.status()["role"].as_str().unwrap_or("?").to_string()
    }

    pub fn session_list(&self) -> String {
        self.run(&["session", "list"], &[])
            .ok("dyad session list")
            .stdout
    }

    pub fn config_list(&self) -> String {
        self.run(&["config", "list"], &[])
            .ok("dyad config list")
            .stdout
    }

    pub fn config_set(&self, key: &str, value: &str) {
        self.run(&["config", "set"], &[key, value])
            .ok("dyad config set");
    }

    /// Imports `size_bytes` of fresh incompressible bytes as a session (through the running
    /// server if there is one), removing the file afterwards.
    pub fn import_recording(&self, scratch: &Path, size_bytes: u64, seed: u64) {
        let file = scratch.join(format!("{}-{seed}.rec", self.name));
        write_recording(&file, size_bytes, seed);
        self.run_within(
            &["session", "import"],
            &["--file", path_str(&file)],
            Duration::from_secs(300),
        )
        .ok("dyad session import");
        std::fs::remove_file(&file).expect("remove the imported recording file");
    }

    /// Starts `dyad serve` on this folder (the first automatic sync pushed an hour away, so
    /// that the tests decide when syncs run) and waits until it answers.
    pub fn serve(&self) -> Server {
        let mut server = self.spawn_serve();
        server.wait_ready();
        server
    }

    /// Starts `dyad serve` without waiting for it.
    pub fn spawn_serve(&self) -> Server {
        let log = self.dir.with_extension(format!(
            "serve-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_nanos())
        ));
        let log_file = File::create(&log).expect("create the serve log");
        let mut command = Command::new(DYAD);
        command
            .args([
                "serve",
                "--data-dir",
                self.dir_str(),
                "--first-sync-delay-s",
                "3600",
            ])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        Server {
            guard: ChildGuard::spawn(command, &format!("dyad serve ({})", self.name)),
            appliance: self.clone(),
            log,
        }
    }
}

/// A running `dyad serve`, killed when dropped.
pub struct Server {
    pub guard: ChildGuard,
    pub appliance: Appliance,
    pub log: PathBuf,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the server answers on its admin socket. The socket is probed directly:
    /// a `dyad status` while no server runs would open the folder offline and hold its lock,
    /// which would make a server starting at that moment refuse to run.
    pub fn wait_ready(&mut self) {
        let socket = self.appliance.dir.join("admin.sock");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return;
            }
            if let Some(status) = self.guard.exited() {
                panic!(
                    "dyad serve ({}) exited ({status}) while starting:\n{}",
                    self.appliance.name,
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "dyad serve ({}) did not answer within {STARTUP_TIMEOUT:?}:\n{}",
                self.appliance.name,
                self.log_text()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The process's peak resident set size (VmHWM), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        peak_rss_bytes(self.pid())
    }

    /// SIGKILL.
    pub fn kill(mut self) {
        self.guard.kill();
    }
}

/// VmHWM of a process, from `/proc/PID/status`, in bytes.
pub fn peak_rss_bytes(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|error| panic!("cannot read /proc/{pid}/status: {error}"));
    let line = text
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .unwrap_or_else(|| panic!("no VmHWM line in /proc/{pid}/status"));
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or_else(|error| panic!("unreadable VmHWM line {line:?}: {error}"));
    kib * 1024
}

/// Polls `probe` until it returns `Some`, for at most `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Writes `size_bytes` of incompressible bytes (BLAKE3's output stream keyed by `seed`), fast.
pub fn write_recording(path: &Path, size_bytes: u64, seed: u64) {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"dyad itest recording");
    hasher.update(&seed.to_le_bytes());
    let mut stream = hasher.finalize_xof();
    let mut file = File::create(path).expect("create a recording file");
    let mut buffer = vec![0u8; 1 << 20];
    let mut left = size_bytes;
    while left > 0 {
        let take = left.min(buffer.len() as u64) as usize;
        stream.fill(&mut buffer[..take]);
        file.write_all(&buffer[..take])
            .expect("write a recording file");
        left -= take as u64;
    }
}

/// A byte count from the environment (`NAME=1073741824`, or with a `M`/`G` suffix for MiB and
/// GiB), or `default`.
pub fn env_bytes(name: &str, default: u64) -> u64 {
    let Ok(text) = std::env::var(name) else {
        return default;
    };
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((at, 'G' | 'g')) => (&text[..at], 1u64 << 30),
        Some((at, 'M' | 'm')) => (&text[..at], 1u64 << 20),
        _ => (text, 1),
    };
    number
        .trim()
        .parse::<u64>()
        .map(|value| value * unit)
        .unwrap_or_else(|_| panic!("{name}={text:?} is not a byte count like 1073741824 or 1G"))
}

/// A number from a JSON value (0 when absent), for status fields.
pub fn number(value: &Value, pointer: &str) -> u64 {
    value.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

/// `dyad sync-now` on `appliance`, started in the background with its output in files under
/// `scratch`.
pub fn spawn_sync_now(appliance: &Appliance, scratch: &Path) -> ChildGuard {
    let stdout = File::create(scratch.join("sync-now.out")).expect("create output file");
    let stderr = File::create(scratch.join("sync-now.err")).expect("create output file");
    let mut command = Command::new(DYAD);
    command
        .args(["sync-now", "--data-dir", appliance.dir_str()])
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));
    ChildGuard::spawn(command, &format!("dyad sync-now ({})", appliance.name))
}

/// Whether `dyad conflicts export` output records `key` with these local and incoming values.
pub fn conflict_has(
    conflicts: &Value,
    key: &str,
    local: Option<&str>,
    incoming: Option<&str>,
) -> bool {
    conflicts.as_array().into_iter().flatten().any(|record| {
        record["differing"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|entry| {
                entry["key"].as_str() == Some(key)
                    && entry["local"].as_str() == local
                    && entry["incoming"].as_str() == incoming
            })
    })
}
