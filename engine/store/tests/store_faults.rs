//! Storage faults as Linux delivers them, on the simulated disk that models them: a failed
//! fsync reported once, bad sectors, a full disk, power lost inside recovery. Each test names
//! the rule it holds the store to (docs/storage.md, "Error classes").

use std::collections::BTreeSet;
use std::sync::Arc;

use dyad_store::disk::sim::SimDisk;
use dyad_store::disk::Disk;
use dyad_store::tree::chunk_chaining_values;
use dyad_store::{
    recording_file_name, ImportInfo, SessionMeta, Store, StoreError, CHUNK_SIZE_BYTES,
};
use dyad_wire::{Epoch, NodeId, SessionId};

const LOCAL: NodeId = NodeId([1; 16]);
const CHUNK: u64 = CHUNK_SIZE_BYTES as u64;

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 11) as u8)
        .collect()
}

fn info() -> ImportInfo {
    ImportInfo {
        origin: LOCAL,
        started_unix_ms: 100,
        ended_unix_ms: 200,
        ended_normally: true,
        expected_len: None,
        expected_root: None,
    }
}

fn open(disk: &Arc<SimDisk>) -> Store {
    let store = Store::open(Arc::clone(disk) as Arc<dyn Disk>).expect("open");
    store.set_clock(Arc::new(|| 1_800_000_000_000));
    store
}

fn read_all(store: &Store, meta: &SessionMeta) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    for index in 0..meta.size_bytes.div_ceil(CHUNK) {
        out.extend_from_slice(&store.read_chunk(&meta.id, index)?);
    }
    Ok(out)
}

/// A recording arriving from a peer: its metadata, chunk list and content.
fn incoming(sequence: u64, chunks: usize) -> (SessionMeta, Vec<[u8; 32]>, Vec<u8>) {
    let content = data(chunks * CHUNK_SIZE_BYTES - 100, sequence as u8);
    let (cvs, len, root) = chunk_chaining_values(&content[..]).expect("hash");
    let meta = SessionMeta {
        id: SessionId {
            origin: NodeId([9; 16]),
            sequence,
        },
        started_unix_ms: 1,
        ended_unix_ms: 2,
        size_bytes: len,
        root: *root.as_bytes(),
        chunk_size_bytes: CHUNK_SIZE_BYTES as u32,
        ended_normally: true,
    };
    (meta, cvs, content)
}

fn chunk(content: &[u8], index: u64) -> &[u8] {
    let start = (index * CHUNK) as usize;
    &content[start..(start + CHUNK_SIZE_BYTES).min(content.len())]
}

/// Linux reports a writeback error once and marks the pages clean: the second ticket's
/// fsync (and the store's own) returns success over chunks that never reached the disk. The
/// first failure poisons the store before either may commit, and after a power loss none of
/// those chunks counts as durable.
#[test]
fn a_second_sync_after_a_failed_fsync_commits_nothing() {
    let disk = SimDisk::new(1);
    let store = open(&disk);
    let (meta, cvs, content) = incoming(1, 3);
    store.begin_incoming(&meta, cvs).expect("begin");
    store
        .write_chunk(&meta.id, 0, chunk(&content, 0))
        .expect("write");
    let first = store.begin_sync(&meta.id).expect("sync").expect("ticket");
    store
        .write_chunk(&meta.id, 1, chunk(&content, 1))
        .expect("write");
    let second = store.begin_sync(&meta.id).expect("sync").expect("ticket");
    let first_work = store.sync_work(&meta.id, first).expect("work");
    let second_work = store.sync_work(&meta.id, second).expect("work");
    disk.fail_next_sync();
    assert!(first_work.run().is_err());
    assert!(second_work.run().is_err(), "committed after a failed fsync");
    assert!(store.failure().is_some());
    drop(store);
    disk.crash(false);
    let store = open(&disk);
    assert_eq!(
        store.durable_chunks(&meta.id).expect("bits"),
        vec![false; 3]
    );
}

/// A durable bit proves only that a sync returned success. Recovery re-verifies every chunk a
/// partial claims before it counts or is published: a chunk that does not verify (a failed
/// writeback an older process never saw, damage on the medium) is forgotten and fetched
/// again, never published.
#[test]
fn recovery_reverifies_claimed_chunks_before_publishing() {
    let disk = SimDisk::new(2);
    let store = open(&disk);
    let (meta, cvs, content) = incoming(2, 4);
    store.begin_incoming(&meta, cvs).expect("begin");
    for index in 0..4 {
        store
            .write_chunk(&meta.id, index, chunk(&content, index))
            .expect("write");
    }
    store.sync_chunks(&meta.id).expect("every bit committed");
    drop(store);
    let part = disk
        .list()
        .expect("list")
        .into_iter()
        .find(|name| name.starts_with("part-"))
        .expect("partial file");
    disk.flip_bit(&part, (2 * CHUNK + 77) * 8).expect("flip");
    disk.crash(false);
    let store = open(&disk);
    assert!(
        store.open_report().publications_completed.is_empty(),
        "a recording with a bad chunk was published"
    );
    assert_eq!(store.open_report().partial_chunks_forgotten, 1);
    assert_eq!(
        store.durable_chunks(&meta.id).expect("bits"),
        vec![true, true, false, true]
    );
    store
        .write_chunk(&meta.id, 2, chunk(&content, 2))
        .expect("re-fetched");
    store.publish(&meta.id).expect("publish");
    assert_eq!(read_all(&store, &meta).expect("read"), content);
}

/// A bad sector under one recording damages that recording, not the store: the read is
/// refused, the recording is listed as damaged with the chunk and the time, the store goes
/// on serving the others and writing configuration, and after a restart too.
#[test]
fn a_read_error_damages_one_recording_and_the_store_goes_on() {
    let disk = SimDisk::new(3);
    let store = open(&disk);
    let hit = store
        .import_recording(&data(3 * CHUNK_SIZE_BYTES, 7)[..], info())
        .expect("import");
    let other_content = data(2 * CHUNK_SIZE_BYTES + 5, 8);
    let other = store
        .import_recording(&other_content[..], info())
        .expect("import");
    disk.fail_reads(&recording_file_name(&hit.id), CHUNK + 4096, 512)
        .expect("bad sector");
    let lists_before = disk.stats().folder_lists;
    assert!(matches!(
        store.read_chunk(&hit.id, 1),
        Err(StoreError::ChunkCorrupt { index: 1, .. })
    ));
    assert_eq!(
        disk.stats().folder_lists,
        lists_before,
        "withdrawing one recording listed the whole folder"
    );
    assert!(store.failure().is_none(), "a read error poisoned the store");
    assert_eq!(
        read_all(&store, &other).expect("others served"),
        other_content
    );
    store
        .config_set(
            "site/name",
            b"x",
            Epoch {
                counter: 1,
                node: LOCAL,
            },
        )
        .expect("configuration writes go on");
    let damaged = store.list_damaged().expect("damaged");
    assert_eq!(damaged.len(), 1);
    assert_eq!(damaged[0].meta, hit);
    assert_eq!(damaged[0].bad_chunks, vec![1]);
    assert_eq!(damaged[0].since_unix_ms, 1_800_000_000_000);
    let counts = store.recording_counts().expect("counts");
    assert_eq!((counts.complete, counts.damaged, counts.partial), (1, 1, 0));
    assert!(!store
        .catalog_list()
        .expect("catalog")
        .iter()
        .any(|meta| meta.id == hit.id));
    // verify reports the unreadable chunk without stopping either.
    drop(store);
    let store = open(&disk);
    let report = store.verify_all().expect("verify");
    assert!(report.bad_chunks.is_empty(), "{:?}", report.bad_chunks);
    assert_eq!(
        store.list_damaged().expect("damaged").len(),
        1,
        "kept across a restart"
    );
}

/// `session verify` on an appliance with no peer: the damaged recording stays listed as
/// damaged, its bytes can be exported as they are, and only an explicit forget removes it.
#[test]
fn verify_keeps_the_only_copy_listed_as_damaged() {
    let disk = SimDisk::new(4);
    let store = open(&disk);
    let content = data(3 * CHUNK_SIZE_BYTES - 9, 5);
    let meta = store
        .import_recording(&content[..], info())
        .expect("import");
    let bit = (2 * CHUNK + 10) * 8 + 3;
    disk.flip_bit(&recording_file_name(&meta.id), bit)
        .expect("flip");
    disk.fail_reads(&recording_file_name(&meta.id), 0, 100)
        .expect("bad sector");
    let report = store.verify_all().expect("verify");
    let bad: BTreeSet<u64> = report.bad_chunks.iter().map(|bad| bad.index).collect();
    assert_eq!(bad, BTreeSet::from([0, 2]));
    let damaged = store.list_damaged().expect("damaged");
    assert_eq!(
        damaged.len(),
        1,
        "the only copy vanished from every listing"
    );
    assert_eq!(damaged[0].bad_chunks, vec![0, 2]);
    let mut exported = Vec::new();
    let export = store
        .export_damaged(&meta.id, &mut exported)
        .expect("export");
    assert_eq!(export.bytes_written, content.len() as u64);
    assert_eq!(export.unreadable_chunks, vec![0]);
    assert_eq!(export.unverified_chunks, vec![2]);
    let mut expected = content.clone();
    expected[..CHUNK_SIZE_BYTES].fill(0);
    expected[(bit / 8) as usize] ^= 1 << (bit % 8);
    assert_eq!(exported, expected, "the export is the bytes as they are");
    assert!(matches!(
        store.forget_damaged(&SessionId {
            origin: LOCAL,
            sequence: 999
        }),
        Err(StoreError::InvalidInput { .. })
    ));
    store.forget_damaged(&meta.id).expect("forget");
    assert!(store.list_damaged().expect("damaged").is_empty());
    assert!(!disk
        .list()
        .expect("list")
        .iter()
        .any(|name| name.starts_with("part-") || name.starts_with("rec-")));
    drop(store);
    assert!(open(&disk).list_damaged().expect("damaged").is_empty());
}

/// A read that finds one bad chunk withdraws at once, then re-checks the chunks it kept off
/// the store's lock: the re-fetch must repair every damaged chunk, not only the one read.
#[test]
fn a_damaged_read_rechecks_the_rest_before_the_refetch_publishes() {
    let disk = SimDisk::new(5);
    let store = open(&disk);
    let content = data(4 * CHUNK_SIZE_BYTES, 6);
    let meta = store
        .import_recording(&content[..], info())
        .expect("import");
    let name = recording_file_name(&meta.id);
    disk.flip_bit(&name, 8 * 5).expect("flip chunk 0");
    disk.flip_bit(&name, (3 * CHUNK + 9) * 8)
        .expect("flip chunk 3");
    assert!(store.read_chunk(&meta.id, 0).is_err());
    assert_eq!(
        store.durable_chunks(&meta.id).expect("bits"),
        vec![false, true, true, false],
        "the kept chunks were re-checked"
    );
    for index in [0, 3] {
        store
            .write_chunk(&meta.id, index, chunk(&content, index))
            .expect("re-fetch");
    }
    store.publish(&meta.id).expect("publish");
    assert_eq!(read_all(&store, &meta).expect("read"), content);
}

/// The state a crash inside recovery can strike: a partial whose file is shorter than its
/// claimed chunks, a partial whose file never became durable, a complete recording whose
/// file vanished.
fn state_to_recover(seed: u64) -> (Arc<SimDisk>, Vec<(SessionMeta, Vec<u8>)>) {
    let disk = SimDisk::new(seed);
    let store = open(&disk);
    let mut recordings = Vec::new();
    let (short, cvs, content) = incoming(10, 3);
    store.begin_incoming(&short, cvs).expect("begin");
    for index in 0..3 {
        store
            .write_chunk(&short.id, index, chunk(&content, index))
            .expect("write");
    }
    store.sync_chunks(&short.id).expect("sync");
    recordings.push((short, content));
    let (lost, cvs, content) = incoming(11, 2);
    store.begin_incoming(&lost, cvs).expect("begin");
    store
        .write_chunk(&lost.id, 0, chunk(&content, 0))
        .expect("write");
    store.sync_chunks(&lost.id).expect("sync");
    recordings.push((lost, content));
    let vanished_content = data(2 * CHUNK_SIZE_BYTES, 12);
    let vanished = store
        .import_recording(&vanished_content[..], info())
        .expect("import");
    recordings.push((vanished, vanished_content));
    drop(store);
    let names = disk.list().expect("list");
    let short_part = names
        .iter()
        .find(|name| name.contains(&format!("{:016x}", 10)))
        .expect("short partial");
    let bytes = disk.file_bytes(short_part).expect("bytes");
    disk.put_file(short_part, &bytes[..CHUNK_SIZE_BYTES + 50])
        .expect("truncate");
    let lost_part = names
        .iter()
        .find(|name| name.contains(&format!("{:016x}", 11)))
        .expect("lost partial")
        .clone();
    disk.remove(&lost_part).expect("remove");
    disk.remove(&recording_file_name(&recordings[2].0.id))
        .expect("remove");
    disk.sync_dir().expect("sync dir");
    (disk, recordings)
}

/// Power lost at every point inside recovery: the next open still recovers, and no chunk
/// it counts as durable fails to verify (the cleared bits are committed before a file is
/// recreated or extended).
#[test]
fn a_power_loss_at_any_point_inside_recovery_leaves_nothing_unverified_durable() {
    let mut struck = 0;
    for operations in 0.. {
        let (disk, recordings) = state_to_recover(100 + operations);
        disk.crash_after_operations(operations, operations % 2 == 1);
        let first = Store::open(Arc::clone(&disk) as Arc<dyn Disk>);
        let halted = disk.is_halted();
        disk.disarm_crash();
        disk.power_on();
        if !halted {
            first.expect("open without a power loss");
            break;
        }
        struck += 1;
        drop(first);
        let store = open(&disk);
        assert_eq!(store.failure(), None);
        for (meta, content) in &recordings {
            if let Ok(bits) = store.durable_chunks(&meta.id) {
                for (index, durable) in bits.iter().enumerate() {
                    if !*durable {
                        continue;
                    }
                    let file = disk
                        .list()
                        .expect("list")
                        .into_iter()
                        .find(|name| {
                            name.starts_with("part-")
                                && name.contains(&format!("-{:016x}.", meta.id.sequence))
                                && name.contains(&dyad_wire::hex::encode(&meta.id.origin.0))
                        })
                        .expect("a partial's file");
                    let all = disk.file_bytes(&file).expect("bytes");
                    let start = index * CHUNK_SIZE_BYTES;
                    let bytes = &all[start..(start + CHUNK_SIZE_BYTES).min(all.len())];
                    assert!(
                        bytes == chunk(content, index as u64),
                        "power lost after {operations} operations: chunk {index} of {:?} is \
                         claimed durable but holds other bytes",
                        meta.id.sequence
                    );
                }
            }
        }
        assert!(operations < 10_000, "recovery never finished");
    }
    assert!(struck > 5, "only {struck} crash points inside recovery");
}
