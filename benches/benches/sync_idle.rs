//! Sync Now with nothing to do, on catalogs of 10,000 and 100,000 sessions.
//!
//! Two `dyad serve` drivers run in this process over loopback mutual TLS, already paired and
//! holding the same sessions and configuration. Each iteration is one Sync Now (both
//! directions: configuration pull, catalog comparison, nothing to transfer). Targets: under
//! 50 ms, and the bytes both sides put on the wire at 100k at most 1.5x those at 10k; the
//! bytes are printed after the criterion group. `DYAD_BENCH_IDLE_SIZES` (comma separated)
//! changes the catalog sizes.
//!
//! The stores are built in a memory-backed folder (`/dev/shm` when present, so that creating
//! 100,000 sessions does not cost 100,000 fsyncs of the real disk) and then copied to real
//! data folders, which the drivers open as usual.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use dyad_benches::appliances::{admin, free_port, start, stop, Running};
use dyad_node::admin::AdminRequest;
use dyad_node::appliance::{build_software_version, Appliance, DataDir, InitOptions};
use dyad_node::transport::keygen;
use dyad_store::disk::real::RealDisk;
use dyad_store::{ImportInfo, Store};
use dyad_wire::NodeId;
use std::sync::Arc;

/// A store holding `sessions` small sessions of one origin, copied into `into`.
fn build_store(sessions: u64, into: &Path) {
    let scratch_base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let scratch = tempfile::Builder::new()
        .prefix("dyad-bench-store-")
        .tempdir_in(scratch_base)
        .expect("a scratch folder");
    let disk = RealDisk::new(scratch.path()).expect("a disk in the scratch folder");
    let store = Store::open(Arc::new(disk)).expect("a store in the scratch folder");
    let origin = NodeId([0x5a; 16]);
    for index in 0..sessions {
        let content = dyad_benches::synthetic_bytes(64, index);
        let info = ImportInfo {
            origin,
            started_unix_ms: 1_800_000_000_000 + index,
            ended_unix_ms: 1_800_000_000_000 + index + 1,
            ended_normally: true,
            expected_len: Some(64),
            expected_root: None,
        };
        store
            .import_recording(&content[..], info)
            .expect("import a small session");
    }
    drop(store);
    copy_folder(scratch.path(), into);
}

fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create");
    for entry in std::fs::read_dir(from).expect("read a folder") {
        let entry = entry.expect("an entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

fn wire_bytes(dir: &DataDir) -> u64 {
    admin(dir, AdminRequest::Status)
        .get("wire_bytes_sent")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

/// A paired primary and backup holding the same `sessions` sessions.
struct Pair {
    _root: tempfile::TempDir,
    primary: DataDir,
    backup: DataDir,
    running: Vec<Running>,
}

impl Pair {
    fn new(sessions: u64) -> Pair {
        let base = std::env::var("DYAD_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| std::env::temp_dir());
        let root = tempfile::Builder::new()
            .prefix("dyad-bench-idle-")
            .tempdir_in(base)
            .expect("a bench folder");
        let template = root.path().join("template");
        build_store(sessions, &template);
        let key = keygen().expect("a key").reveal_printable();
        let mut dirs = Vec::new();
        let mut ports = Vec::new();
        for name in ["primary", "backup"] {
            let dir = DataDir::new(root.path().join(name));
            let port = free_port();
            std::fs::create_dir_all(&dir.root).expect("a data folder");
            Appliance::init(
                dir.clone(),
                InitOptions {
                    name: format!("idle-{name}"),
                    listen: format!("127.0.0.1:{port}"),
                    site_hostname: None,
                    psk_text: Some(key.clone()),
                    software: build_software_version(),
                    identity_pem: None,
                    vendor_public_key: None,
                    store_format: None,
                },
            )
            .expect("init");
            std::fs::remove_dir_all(dir.store()).expect("clear the new store");
            copy_folder(&template, &dir.store());
            dirs.push(dir);
            ports.push(port);
        }
        let running = dirs.iter().map(start).collect();
        let (primary, backup) = (dirs[0].clone(), dirs[1].clone());
        admin(
            &primary,
            AdminRequest::Establish {
                backup: format!("127.0.0.1:{}", ports[1]),
                reverse: format!("127.0.0.1:{}", ports[0]),
            },
        );
        // A first sync settles anything the establish left to do.
        admin(&backup, AdminRequest::SyncNow);
        Pair {
            _root: root,
            primary,
            backup,
            running,
        }
    }

    /// One Sync Now: its duration and the bytes both sides sent.
    fn sync_now(&self) -> (Duration, u64) {
        let before = wire_bytes(&self.primary) + wire_bytes(&self.backup);
        let started = Instant::now();
        admin(&self.backup, AdminRequest::SyncNow);
        let elapsed = started.elapsed();
        let after = wire_bytes(&self.primary) + wire_bytes(&self.backup);
        (elapsed, after - before)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for running in self.running.drain(..) {
            stop(running);
        }
    }
}

fn sync_idle(c: &mut Criterion) {
    let sizes: Vec<u64> = std::env::var("DYAD_BENCH_IDLE_SIZES")
        .ok()
        .map(|text| {
            text.split(',')
                .filter_map(|part| part.trim().parse().ok())
                .collect()
        })
        .unwrap_or_else(|| vec![10_000, 100_000]);
    let mut group = c.benchmark_group("sync_idle");
    group.sample_size(20);
    let mut bytes_by_size = Vec::new();
    for &size in &sizes {
        let pair = Pair::new(size);
        group.bench_function(format!("sync_now_{size}_sessions"), |b| {
            b.iter_custom(|iterations| (0..iterations).map(|_| pair.sync_now().0).sum())
        });
        let mut samples: Vec<(Duration, u64)> = (0..5).map(|_| pair.sync_now()).collect();
        samples.sort();
        bytes_by_size.push((size, samples[2].0, samples[2].1));
    }
    group.finish();
    for (size, time, bytes) in &bytes_by_size {
        println!("sync_idle: {size} sessions: median {:.1} ms, {bytes} bytes on the wire (both directions)", time.as_secs_f64() * 1000.0);
    }
    if let (Some(first), Some(last)) = (bytes_by_size.first(), bytes_by_size.last()) {
        if first.0 != last.0 {
            println!(
                "sync_idle: bytes at {} sessions = {:.2}x those at {} (target at most 1.5x)",
                last.0,
                last.2 as f64 / first.2.max(1) as f64,
                first.0
            );
        }
    }
}

criterion_group!(benches, sync_idle);
criterion_main!(benches);
