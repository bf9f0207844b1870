//! Bulk replication beside its physical limits, in the same run.
//!
//! - `replication/dyad_sync_now`: Sync Now of `DYAD_BENCH_REPLICATION_BYTES` (default 2 GiB) of
//!   incompressible recordings in `DYAD_BENCH_REPLICATION_FILES` sessions (default 8) from a
//!   running primary to a fresh backup, both `dyad serve` drivers in this process, over
//!   loopback mutual TLS; every chunk verified and durably written before publishing.
//! - `replication/baseline_raw_tls`: the same bytes, read from the same files, sent over one
//!   rustls TLS 1.3 loopback stream with the same certificates and cipher; nothing hashed or
//!   written (baseline a).
//! - `replication/baseline_raw_tls_write_fsync`: the same stream, the receiver writing each
//!   recording to its own file with one fsync per file (baseline b).
//!
//! Targets: dyad ≥ 0.7x (a) (stretch 0.85x) and ≥ 0.9x (b). After the criterion groups, an
//! interleaved timing of all three prints the ratios. Data lives under `DYAD_BENCH_DIR`
//! (default: the system temp folder) and is removed at the end.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dyad_benches::appliances::{admin, free_port, start, stop, Running};
use dyad_node::admin::AdminRequest;
use dyad_node::appliance::{build_software_version, Appliance, DataDir, InitOptions};
use dyad_node::driver;
use dyad_node::transport::{client_config, keygen, server_config, Identity};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1024 * 1024;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

/// Incompressible bytes from a seed, written 1 MiB at a time.
fn write_recording(path: &Path, size_bytes: u64, seed: u64) {
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(path).expect("create a recording"));
    let mut left = size_bytes;
    let mut piece = 0u64;
    while left > 0 {
        let take = left.min(MIB);
        let bytes = dyad_benches::synthetic_bytes(take as usize, seed * 1_000_003 + piece);
        file.write_all(&bytes).expect("write a recording");
        left -= take;
        piece += 1;
    }
    file.flush().expect("flush a recording");
}

/// A primary holding the recordings, running, and everything needed for fresh backups.
struct Source {
    root: tempfile::TempDir,
    key_text: String,
    primary: DataDir,
    primary_port: u16,
    running: Option<Running>,
    files: Vec<(PathBuf, u64)>,
    total_bytes: u64,
    backups_made: u64,
}

fn init(dir: &DataDir, name: &str, port: u16, key_text: &str) {
    std::fs::create_dir_all(&dir.root).expect("create a data folder");
    Appliance::init(
        dir.clone(),
        InitOptions {
            name: name.into(),
            listen: format!("127.0.0.1:{port}"),
            site_hostname: None,
            psk_text: Some(key_text.into()),
            software: build_software_version(),
            identity_pem: None,
            vendor_public_key: None,
            store_format: None,
        },
    )
    .expect("init an appliance");
}

impl Source {
    fn new() -> Source {
        let total_bytes = env_u64("DYAD_BENCH_REPLICATION_BYTES", 2048 * MIB);
        let file_count = env_u64("DYAD_BENCH_REPLICATION_FILES", 8).max(1);
        let base = std::env::var("DYAD_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| std::env::temp_dir());
        let root = tempfile::Builder::new()
            .prefix("dyad-bench-replication-")
            .tempdir_in(base)
            .expect("a bench folder");
        let key_text = keygen().expect("a key").reveal_printable();
        let primary = DataDir::new(root.path().join("primary"));
        let primary_port = free_port();
        init(&primary, "bench-primary", primary_port, &key_text);
        let mut files = Vec::new();
        for index in 0..file_count {
            let size = total_bytes / file_count
                + if index == 0 {
                    total_bytes % file_count
                } else {
                    0
                };
            let path = root.path().join(format!("recording-{index}.bin"));
            write_recording(&path, size, index + 1);
            driver::answer_offline(
                &primary,
                AdminRequest::SessionImport {
                    path: path.display().to_string(),
                    started_unix_ms: None,
                    ended_unix_ms: None,
                },
            )
            .expect("import a recording");
            files.push((path, size));
        }
        let running = Some(start(&primary));
        Source {
            root,
            key_text,
            primary,
            primary_port,
            running,
            files,
            total_bytes,
            backups_made: 0,
        }
    }

    /// Establishes with a fresh backup, times its Sync Now, then breaks and removes it.
    fn dyad_sync(&mut self) -> Duration {
        self.backups_made += 1;
        let backup = DataDir::new(
            self.root
                .path()
                .join(format!("backup-{}", self.backups_made)),
        );
        let port = free_port();
        init(&backup, "bench-backup", port, &self.key_text);
        let running = start(&backup);
        admin(
            &self.primary,
            AdminRequest::Establish {
                backup: format!("127.0.0.1:{port}"),
                reverse: format!("127.0.0.1:{}", self.primary_port),
            },
        );
        let started = Instant::now();
        admin(&backup, AdminRequest::SyncNow);
        let elapsed = started.elapsed();
        admin(&self.primary, AdminRequest::Break);
        stop(running);
        let _ = std::fs::remove_dir_all(&backup.root);
        elapsed
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            stop(running);
        }
    }
}

/// Sends the recordings over one mutual TLS 1.3 loopback stream; the receiver discards them,
/// or writes each to a file and fsyncs it.
fn raw_tls(files: &[(PathBuf, u64)], write_to: Option<&Path>) -> Duration {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let server_identity = Identity::generate("raw-server").expect("identity");
    let client_identity = Identity::generate("raw-client").expect("identity");
    let server =
        tokio_rustls::TlsAcceptor::from(server_config(&server_identity).expect("server config"));
    let client =
        tokio_rustls::TlsConnector::from(client_config(&client_identity).expect("client config"));
    let files = files.to_vec();
    let write_to = write_to.map(Path::to_path_buf);
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listen");
        let address = listener.local_addr().expect("address");
        let sizes: Vec<u64> = files.iter().map(|(_, size)| *size).collect();
        let receiver = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut tls = server.accept(tcp).await.expect("server handshake");
            let mut buffer = vec![0u8; MIB as usize];
            for (index, size) in sizes.iter().enumerate() {
                let mut file = write_to.as_ref().map(|dir| {
                    std::fs::File::create(dir.join(format!("raw-{index}.bin"))).expect("create")
                });
                let mut left = *size;
                while left > 0 {
                    let want = left.min(buffer.len() as u64) as usize;
                    let read = tls.read(&mut buffer[..want]).await.expect("read");
                    assert!(read > 0, "the sender closed early");
                    if let Some(file) = &mut file {
                        file.write_all(&buffer[..read]).expect("write");
                    }
                    left -= read as u64;
                }
                if let Some(file) = file {
                    file.sync_all().expect("fsync");
                }
            }
            tls.write_all(b"k").await.expect("ack");
            tls.flush().await.expect("flush");
        });
        let started = Instant::now();
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(dyad_node::transport::TLS_SERVER_NAME)
            .expect("a server name")
            .to_owned();
        let mut tls = client.connect(name, tcp).await.expect("client handshake");
        let mut buffer = vec![0u8; MIB as usize];
        for (path, _) in &files {
            let mut file = std::fs::File::open(path).expect("open");
            loop {
                let read = file.read(&mut buffer).expect("read a recording");
                if read == 0 {
                    break;
                }
                tls.write_all(&buffer[..read]).await.expect("send");
            }
        }
        tls.flush().await.expect("flush");
        let mut ack = [0u8; 1];
        tls.read_exact(&mut ack).await.expect("ack");
        let elapsed = started.elapsed();
        receiver.await.expect("the receiver");
        elapsed
    })
}

fn replication(c: &mut Criterion) {
    let mut source = Source::new();
    let sink = tempfile::tempdir_in(source.root.path()).expect("a sink folder");
    let mut group = c.benchmark_group("replication");
    group.throughput(Throughput::Bytes(source.total_bytes));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_secs(env_u64("DYAD_BENCH_MEASUREMENT_S", 30)));
    group.bench_function("dyad_sync_now", |b| {
        b.iter_custom(|iterations| (0..iterations).map(|_| source.dyad_sync()).sum())
    });
    let files = source.files.clone();
    group.bench_function("baseline_raw_tls", |b| {
        b.iter_custom(|iterations| (0..iterations).map(|_| raw_tls(&files, None)).sum())
    });
    group.bench_function("baseline_raw_tls_write_fsync", |b| {
        b.iter_custom(|iterations| {
            (0..iterations)
                .map(|_| raw_tls(&files, Some(sink.path())))
                .sum()
        })
    });
    group.finish();

    // Interleaved runs: each round measures all three back to back, so that a noisy moment
    // of the machine hits all of them.
    let rounds = env_u64("DYAD_BENCH_ROUNDS", 3).max(1);
    let (mut dyad, mut raw, mut raw_fsync) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        dyad.push(source.dyad_sync().as_secs_f64());
        raw.push(raw_tls(&files, None).as_secs_f64());
        raw_fsync.push(raw_tls(&files, Some(sink.path())).as_secs_f64());
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let gb = source.total_bytes as f64 / 1e9;
    let (dyad, raw, raw_fsync) = (median(&mut dyad), median(&mut raw), median(&mut raw_fsync));
    println!(
        "interleaved medians over {rounds} rounds of {gb:.2} GB: dyad {:.2} GB/s, raw TLS {:.2} GB/s, raw TLS + write + fsync {:.2} GB/s; \
         dyad/raw = {:.2}x (target 0.7x), dyad/raw+fsync = {:.2}x (target 0.9x)",
        gb / dyad,
        gb / raw,
        gb / raw_fsync,
        raw / dyad,
        raw_fsync / dyad
    );
}

criterion_group!(benches, replication);
criterion_main!(benches);
