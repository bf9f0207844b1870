//! Store benchmarks, each beside its baseline from the same run.
//!
//! - `import/*`: importing a recording file into the store (read, hash, write, fsync,
//!   publish) beside a plain copy of the same file with the same 1 MiB buffer and one fsync
//!   at the end. Target: import throughput >= 0.8x the copy's. Size from
//!   `DYAD_BENCH_IMPORT_BYTES` (default 1 GiB). The disk's speed drifts during a run (other
//!   work, page reclaim), so besides criterion's two series the ratio is also measured over
//!   `DYAD_BENCH_IMPORT_PAIRS` (default 6) back-to-back copy/import pairs (in alternating
//!   order) and its median printed; set `DYAD_BENCH_DIR` to put the files on the disk to measure.
//! - `catalog_diff/*`: finding the differences between two catalogs that differ in 10
//!   sessions, at `DYAD_BENCH_CATALOG_SMALL` (default 10,000) and `DYAD_BENCH_CATALOG_LARGE`
//!   (default 100,000) sessions. Messages and bytes are counted, printed, and the large
//!   catalog's must be at most 1.5x the small one's (at the default sizes the bench fails
//!   otherwise; the unit test `cost_grows_with_log_of_catalog_size` checks it too).

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dyad_store::disk::real::RealDisk;
use dyad_store::summary::{reconcile_locally, ExchangeStats, SummaryIndex};
use dyad_store::{ImportInfo, Store, CHUNK_SIZE_BYTES};
use dyad_wire::{NodeId, SessionId};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn write_source(path: &Path, len: usize) {
    let mut file = File::create(path).expect("create the source file");
    let mut written = 0;
    let mut seed = 1;
    while written < len {
        let block = dyad_benches::synthetic_bytes((len - written).min(CHUNK_SIZE_BYTES), seed);
        file.write_all(&block).expect("write the source file");
        written += block.len();
        seed += 1;
    }
    file.sync_all().expect("sync the source file");
}

fn plain_copy(source: &Path, dest: &Path) {
    let mut input = File::open(source).expect("open source");
    let mut output = File::create(dest).expect("create copy");
    let mut buffer = vec![0u8; CHUNK_SIZE_BYTES];
    loop {
        let n = input.read(&mut buffer).expect("read");
        if n == 0 {
            break;
        }
        output.write_all(&buffer[..n]).expect("write");
    }
    output.sync_data().expect("sync");
}

fn median(samples: &Mutex<Vec<Duration>>) -> Duration {
    let mut samples = samples.lock().expect("no panics while held").clone();
    samples.sort();
    samples[samples.len() / 2]
}

fn import(c: &mut Criterion) {
    let len = env_usize("DYAD_BENCH_IMPORT_BYTES", 1 << 30);
    // By default on the disk holding the build's target directory (not /tmp, which may be
    // memory).
    let base = std::env::var("DYAD_BENCH_DIR").unwrap_or_else(|_| {
        option_env!("CARGO_TARGET_TMPDIR")
            .unwrap_or(".")
            .to_string()
    });
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let source = dir.path().join("source.bin");
    write_source(&source, len);
    let copies = Arc::new(Mutex::new(Vec::new()));
    let imports = Arc::new(Mutex::new(Vec::new()));
    let mut group = c.benchmark_group("import");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes(len as u64));
    let samples = Arc::clone(&copies);
    group.bench_function("plain_copy_baseline", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let dest = dir.path().join("copy.bin");
                let started = Instant::now();
                plain_copy(&source, &dest);
                let took = started.elapsed();
                samples.lock().expect("not poisoned").push(took);
                total += took;
                std::fs::remove_file(&dest).expect("remove copy");
            }
            total
        })
    });
    let samples = Arc::clone(&imports);
    group.bench_function("store_import", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let data = dir.path().join("store");
                let store = Store::open(Arc::new(RealDisk::new(&data).expect("data folder")))
                    .expect("open store");
                let started = Instant::now();
                store
                    .import_recording_file(&source, import_info())
                    .expect("import");
                let took = started.elapsed();
                samples.lock().expect("not poisoned").push(took);
                total += took;
                drop(store);
                std::fs::remove_dir_all(&data).expect("remove store");
            }
            total
        })
    });
    group.finish();
    let copy = median(&copies);
    let store = median(&imports);
    let gbps = |d: Duration| len as f64 / d.as_secs_f64() / 1e9;
    println!(
        "import {len} bytes (criterion series medians): plain copy {:.2} GB/s, store import {:.2} GB/s, ratio {:.2}",
        gbps(copy),
        gbps(store),
        copy.as_secs_f64() / store.as_secs_f64()
    );
    let pairs = env_usize("DYAD_BENCH_IMPORT_PAIRS", 6).max(1);
    let mut ratios = Vec::new();
    let time_copy = || {
        let dest = dir.path().join("copy.bin");
        let started = Instant::now();
        plain_copy(&source, &dest);
        let took = started.elapsed();
        std::fs::remove_file(&dest).expect("remove copy");
        took
    };
    let time_import = || {
        let data = dir.path().join("store");
        let store =
            Store::open(Arc::new(RealDisk::new(&data).expect("data folder"))).expect("open store");
        let started = Instant::now();
        store
            .import_recording_file(&source, import_info())
            .expect("import");
        let took = started.elapsed();
        drop(store);
        std::fs::remove_dir_all(&data).expect("remove store");
        took
    };
    for pair in 0..pairs {
        // Deleting a large file costs the next writer, so the order alternates.
        let (copy, import) = if pair % 2 == 0 {
            let copy = time_copy();
            (copy, time_import())
        } else {
            let import = time_import();
            (time_copy(), import)
        };
        println!(
            "  pair: plain copy {:.2} GB/s, store import {:.2} GB/s",
            gbps(copy),
            gbps(import)
        );
        ratios.push(copy.as_secs_f64() / import.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "import {len} bytes: median ratio over {pairs} back-to-back pairs {:.2} (target >= 0.80)",
        ratios[ratios.len() / 2]
    );
}

fn import_info() -> ImportInfo {
    ImportInfo {
        origin: NodeId([1; 16]),
        started_unix_ms: 0,
        ended_unix_ms: 0,
        ended_normally: true,
        expected_len: None,
        expected_root: None,
    }
}

fn catalogs(n: u64, differences: u64) -> (SummaryIndex, SummaryIndex) {
    let origins = [NodeId([1; 16]), NodeId([2; 16])];
    let mut a = SummaryIndex::default();
    let mut b = SummaryIndex::default();
    for k in 0..n {
        let id = SessionId {
            origin: origins[(k % 2) as usize],
            sequence: k / 2 + 1,
        };
        let root = *blake3::hash(&k.to_le_bytes()).as_bytes();
        a.insert(id, root);
        b.insert(id, root);
    }
    let step = n / (differences + 1);
    for d in 0..differences {
        let k = step * (d + 1);
        let id = SessionId {
            origin: origins[(k % 2) as usize],
            sequence: k / 2 + 1,
        };
        if d % 2 == 0 {
            b.remove(&id);
        } else {
            a.remove(&id);
        }
    }
    (a, b)
}

fn catalog_diff(c: &mut Criterion) {
    let small = env_usize("DYAD_BENCH_CATALOG_SMALL", 10_000) as u64;
    let large = env_usize("DYAD_BENCH_CATALOG_LARGE", 100_000) as u64;
    let mut group = c.benchmark_group("catalog_diff");
    group.sample_size(10);
    let mut stats: Vec<(u64, ExchangeStats)> = Vec::new();
    for n in [small, large] {
        let (a, b) = catalogs(n, 10);
        let (found, exchange) = reconcile_locally(&a, &b).expect("honest peers");
        assert_eq!(
            found.only_ours.len() + found.only_theirs.len(),
            10,
            "all ten differences found"
        );
        stats.push((n, exchange));
        group.bench_function(format!("{n}_sessions_10_differences"), |bench| {
            bench.iter(|| reconcile_locally(&a, &b).expect("honest peers"))
        });
    }
    group.finish();
    for (n, exchange) in &stats {
        println!(
            "catalog_diff {n} sessions, 10 differences: {} messages, {} bytes, {} rounds",
            exchange.messages, exchange.bytes, exchange.rounds
        );
    }
    let (small_stats, large_stats) = (stats[0].1, stats[1].1);
    let message_ratio = large_stats.messages as f64 / small_stats.messages as f64;
    let byte_ratio = large_stats.bytes as f64 / small_stats.bytes as f64;
    println!(
        "catalog_diff {large} vs {small}: messages x{message_ratio:.2}, bytes x{byte_ratio:.2} (limit 1.5)"
    );
    // The requirement is stated for 10,000 vs 100,000 sessions; other sizes (CI runs them
    // small) can straddle a tree level differently, so they are reported, not judged.
    if (small, large) == (10_000, 100_000) {
        assert!(
            message_ratio <= 1.5 && byte_ratio <= 1.5,
            "difference cost grows too fast"
        );
    }
}

criterion_group!(benches, catalog_diff, import);
criterion_main!(benches);
