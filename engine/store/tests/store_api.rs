//! The store's operator and engine surface: configuration, catalog, recordings, bad input,
//! corruption and failures, on the simulated and the real disk.

use std::collections::BTreeSet;
use std::sync::Arc;

use dyad_store::disk::real::RealDisk;
use dyad_store::disk::sim::SimDisk;
use dyad_store::disk::Disk;
use dyad_store::records::ConflictRecord;
use dyad_store::tree::chunk_chaining_values;
use dyad_store::{
    set_format_version_for_tests, BeginOutcome, ChunkOutcome, ConfigVersion, ImportInfo,
    Reconciler, SessionMeta, Store, StoreError, CHUNK_SIZE_BYTES, CONFIG_VERSION_ZERO,
    FORMAT_VERSION,
};
use dyad_wire::{Epoch, NodeId, SessionId};

const LOCAL: NodeId = NodeId([1; 16]);

fn epoch(counter: u64) -> Epoch {
    Epoch {
        counter,
        node: LOCAL,
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed) ^ (i >> 10) as u8)
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

fn sim_store(seed: u64) -> (Arc<SimDisk>, Store) {
    let disk = SimDisk::new(seed);
    let store = Store::open(Arc::clone(&disk) as Arc<dyn Disk>).expect("open");
    (disk, store)
}

fn read_all(store: &Store, meta: &SessionMeta) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    for index in 0..meta.size_bytes.div_ceil(CHUNK_SIZE_BYTES as u64) {
        out.extend_from_slice(&store.read_chunk(&meta.id, index)?);
    }
    Ok(out)
}

fn files(disk: &SimDisk) -> Vec<String> {
    disk.list().expect("list")
}

#[test]
fn configuration_versions_history_and_snapshots() {
    let (_, store) = sim_store(1);
    assert_eq!(store.config_version().expect("v"), CONFIG_VERSION_ZERO);
    let v1 = store
        .config_set("net/dns", b"10.0.0.1", epoch(1))
        .expect("set");
    let v2 = store.config_set("net/ntp", b"pool", epoch(1)).expect("set");
    let v3 = store.config_set("site/name", b"hq", epoch(2)).expect("set");
    assert!(v1 < v2 && v2 < v3);
    assert_eq!((v3.epoch, v3.sequence), (epoch(2), 3));
    let stale = store
        .config_set("x", b"y", epoch(1))
        .expect_err("stale epoch");
    assert!(matches!(stale, StoreError::StaleEpoch { .. }));
    assert_eq!(
        store.config_version().expect("v"),
        v3,
        "refused write changed nothing"
    );
    assert_eq!(
        store.config_delete("absent", epoch(2)).expect("delete"),
        None
    );
    let v4 = store
        .config_delete("net/ntp", epoch(2))
        .expect("delete")
        .expect("existed");
    assert_eq!(
        store.config_list("net/").expect("list"),
        vec![("net/dns".to_string(), b"10.0.0.1".to_vec())]
    );
    let changes = store
        .config_changes_since(v1)
        .expect("changes")
        .expect("kept");
    assert_eq!(changes.len(), 3);
    assert_eq!(changes.last().expect("three").version, v4);
    let bogus = ConfigVersion {
        epoch: epoch(9),
        sequence: 2,
        chain: v2.chain,
    };
    assert_eq!(store.config_changes_since(bogus).expect("changes"), None);

    // A backup catches up by changes, then by snapshot, and keeps a conflict record.
    let (_, backup) = sim_store(2);
    backup
        .config_apply_changes(
            &store
                .config_changes_since(CONFIG_VERSION_ZERO)
                .expect("c")
                .expect("all"),
        )
        .expect("apply");
    assert_eq!(
        backup.config_snapshot().expect("s"),
        store.config_snapshot().expect("s")
    );
    let gap = store.config_changes_since(v2).expect("c").expect("kept");
    let err = backup
        .config_apply_changes(&gap)
        .expect_err("already applied: out of order");
    assert!(matches!(err, StoreError::ChangesOutOfOrder { .. }));
    backup
        .config_set("local-only", b"1", epoch(3))
        .expect("set");
    let incoming = store.config_snapshot().expect("s");
    let record = ConflictRecord::between(&backup.config_snapshot().expect("s"), &incoming, 42);
    assert_eq!(record.entries.len(), 1);
    assert_eq!(
        backup
            .config_replace(&incoming, Some(&record))
            .expect("replace"),
        Some(1)
    );
    assert_eq!(backup.config_snapshot().expect("s"), incoming);
    assert_eq!(backup.conflicts_list().expect("list"), vec![(1, record)]);
    assert_eq!(
        backup.config_changes_since(incoming.version).expect("c"),
        Some(vec![])
    );
}

/// Issue 15: two histories with the same stamps `(epoch, sequence)` but other values (old and
/// new hardware after a restore, in the engine before restores took new node ids) are told
/// apart by their chains: the primary offers no incremental changes from the other's version,
/// and a change that does not continue the receiver's chain is refused.
#[test]
fn continuity_is_proven_by_the_chain_not_by_version_numbers() {
    let (_, old) = sim_store(30);
    let (_, new) = sim_store(31);
    for store in [&old, &new] {
        store
            .config_set("site/name", b"north", epoch(2))
            .expect("set");
    }
    assert_eq!(
        old.config_version().expect("v"),
        new.config_version().expect("v"),
        "the same history gives the same chain"
    );
    let forked_old = old.config_set("x", b"old-x", epoch(2)).expect("set");
    let forked_new = new.config_set("x", b"new-x", epoch(2)).expect("set");
    assert_eq!(
        (forked_old.epoch, forked_old.sequence),
        (forked_new.epoch, forked_new.sequence),
        "the same stamps"
    );
    assert_ne!(
        forked_old.chain, forked_new.chain,
        "but not the same content"
    );
    assert_eq!(
        new.config_changes_since(forked_old).expect("changes"),
        None,
        "a backup at the old hardware's #2 needs the full configuration"
    );
    new.config_set("z", b"new-z", epoch(2)).expect("set");
    let changes = new
        .config_changes_since(forked_new)
        .expect("changes")
        .expect("kept");
    assert!(matches!(
        old.config_apply_changes(&changes),
        Err(StoreError::ChangesOutOfOrder { .. })
    ));
    assert_eq!(old.config_get("z").expect("get"), None, "nothing applied");
    // A change whose value was altered on the way does not chain either.
    let (_, follower) = sim_store(32);
    let mut all = new
        .config_changes_since(CONFIG_VERSION_ZERO)
        .expect("c")
        .expect("all");
    all[1].value = Some(b"tampered".to_vec());
    assert!(follower.config_apply_changes(&all).is_err());
    assert_eq!(follower.config_version().expect("v"), CONFIG_VERSION_ZERO);
}

/// The conflict record and the replacement are one transaction: a failed commit leaves
/// neither, and the retry records both.
#[test]
fn a_replacement_and_its_conflict_record_commit_together() {
    let (disk, backup) = sim_store(33);
    backup.config_set("x", b"old-x", epoch(1)).expect("set");
    let (_, primary) = sim_store(34);
    primary.config_set("x", b"new-x", epoch(2)).expect("set");
    let incoming = primary.config_snapshot().expect("s");
    let before = backup.config_snapshot().expect("s");
    let record = ConflictRecord::between(&before, &incoming, 7);
    disk.fail_next_sync();
    assert!(backup.config_replace(&incoming, Some(&record)).is_err());
    drop(backup);
    // A power loss: what the failed sync did not make durable is gone.
    disk.crash(false);
    let backup = Store::open(disk).expect("reopen");
    assert_eq!(backup.config_snapshot().expect("s"), before);
    assert!(backup.conflicts_list().expect("list").is_empty());
    backup
        .config_replace(&incoming, Some(&record))
        .expect("replace");
    assert_eq!(backup.config_snapshot().expect("s"), incoming);
    assert_eq!(backup.conflicts_list().expect("list"), vec![(1, record)]);
}

#[test]
fn local_settings_are_separate_from_site_configuration() {
    let (_, store) = sim_store(3);
    store.local_set("node/id", b"abc").expect("set");
    assert_eq!(
        store.local_get("node/id").expect("get"),
        Some(b"abc".to_vec())
    );
    assert_eq!(store.config_get("node/id").expect("get"), None);
    assert_eq!(store.config_version().expect("v"), CONFIG_VERSION_ZERO);
    assert!(store.local_delete("node/id").expect("delete"));
    assert_eq!(store.local_get("node/id").expect("get"), None);
}

#[test]
fn import_transfer_publish_and_read_back() {
    let (_, a) = sim_store(4);
    let content = data(3 * CHUNK_SIZE_BYTES + 123, 5);
    let meta = a.import_recording(&content[..], info()).expect("import");
    assert_eq!(meta.root, *blake3::hash(&content).as_bytes());
    assert_eq!(a.catalog_list().expect("list"), vec![meta]);
    assert_eq!(read_all(&a, &meta).expect("read"), content);
    assert_eq!(
        a.high_water_marks().expect("hwm").get(&LOCAL),
        Some(&meta.id.sequence)
    );

    // Transfer to b chunk by chunk, out of order, with a bad chunk on the way.
    let (_, b) = sim_store(5);
    let cvs = a.chunk_chaining_values(&meta.id).expect("cvs");
    assert_eq!(
        b.begin_incoming(&meta, cvs.clone()).expect("begin"),
        BeginOutcome::Started
    );
    assert!(
        b.catalog_get(&meta.id).expect("get").is_none(),
        "partials are not listed"
    );
    for index in [3u64, 1, 0] {
        let chunk = a.read_chunk(&meta.id, index).expect("read");
        assert_eq!(
            b.write_chunk(&meta.id, index, &chunk).expect("write"),
            ChunkOutcome::Written
        );
    }
    let mut bad = a.read_chunk(&meta.id, 2).expect("read").to_vec();
    bad[7] ^= 0x40;
    assert!(matches!(
        b.write_chunk(&meta.id, 2, &bad),
        Err(StoreError::InvalidRecording { .. })
    ));
    assert!(matches!(
        b.publish(&meta.id),
        Err(StoreError::Incomplete {
            missing_chunks: 1,
            ..
        })
    ));
    assert!(matches!(
        b.read_chunk(&meta.id, 0),
        Err(StoreError::NotFound { .. })
    ));
    b.write_chunk(&meta.id, 2, &a.read_chunk(&meta.id, 2).expect("read"))
        .expect("write");
    assert_eq!(b.publish(&meta.id).expect("publish"), meta);
    assert_eq!(read_all(&b, &meta).expect("read"), content);
    assert_eq!(
        b.begin_incoming(&meta, cvs).expect("again"),
        BeginOutcome::AlreadyComplete
    );

    // The same id with other content is refused and reported, never merged.
    let other = data(100, 9);
    let (other_cvs, _, other_root) = chunk_chaining_values(&other[..]).expect("hash");
    let conflicting = SessionMeta {
        size_bytes: 100,
        root: *other_root.as_bytes(),
        ..meta
    };
    assert!(matches!(
        b.begin_incoming(&conflicting, other_cvs),
        Err(StoreError::IdConflict { .. })
    ));
    assert_eq!(read_all(&b, &meta).expect("read"), content);
}

#[test]
fn empty_and_single_chunk_recordings() {
    let (_, a) = sim_store(6);
    let (_, b) = sim_store(7);
    for len in [0, 1, CHUNK_SIZE_BYTES] {
        let content = data(len, 1);
        let meta = a.import_recording(&content[..], info()).expect("import");
        assert_eq!(meta.root, *blake3::hash(&content).as_bytes());
        let cvs = a.chunk_chaining_values(&meta.id).expect("cvs");
        b.begin_incoming(&meta, cvs).expect("begin");
        if len > 0 {
            b.write_chunk(&meta.id, 0, &a.read_chunk(&meta.id, 0).expect("read"))
                .expect("write");
        }
        b.publish(&meta.id).expect("publish");
        assert_eq!(read_all(&b, &meta).expect("read"), content);
    }
}

/// Recordings of at most one chunk with a known length are copied and hashed without the
/// hashing thread: same roots, same refusals of a source shorter or longer than announced.
#[test]
fn one_chunk_imports_with_a_known_length() {
    let (disk, store) = sim_store(81);
    for len in [0, 1, 1000, CHUNK_SIZE_BYTES - 1, CHUNK_SIZE_BYTES] {
        let content = data(len, 5);
        let meta = store
            .import_recording(
                &content[..],
                ImportInfo {
                    expected_len: Some(len as u64),
                    ..info()
                },
            )
            .expect("import");
        assert_eq!(meta.size_bytes, len as u64);
        assert_eq!(meta.root, *blake3::hash(&content).as_bytes(), "len {len}");
        assert_eq!(read_all(&store, &meta).expect("read"), content);
    }
    let before = files(&disk);
    let content = data(1000, 6);
    for (announced, what) in [(1001, "shorter"), (999, "longer")] {
        let err = store
            .import_recording(
                &content[..],
                ImportInfo {
                    expected_len: Some(announced),
                    ..info()
                },
            )
            .expect_err(what);
        assert!(
            matches!(err, StoreError::ImportSource { .. }),
            "{what}: {err}"
        );
    }
    assert_eq!(
        files(&disk),
        before,
        "a refused import leaves nothing behind"
    );
}

#[test]
fn bad_input_changes_nothing() {
    let (disk, store) = sim_store(8);
    let content = data(2 * CHUNK_SIZE_BYTES + 5, 2);
    let before_files = files(&disk);
    let floor = store.local_sequence_floor().expect("floor");

    let truncated = ImportInfo {
        expected_len: Some(content.len() as u64 + 1),
        ..info()
    };
    let err = store
        .import_recording(&content[..], truncated)
        .expect_err("truncated");
    assert!(matches!(err, StoreError::ImportSource { .. }), "{err}");
    let wrong_root = ImportInfo {
        expected_root: Some([0; 32]),
        ..info()
    };
    let err = store
        .import_recording(&content[..], wrong_root)
        .expect_err("wrong hash");
    assert!(matches!(err, StoreError::InvalidRecording { .. }), "{err}");
    struct Failing(usize);
    impl std::io::Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("source disk unreadable"));
            }
            let n = buf.len().min(self.0);
            self.0 -= n;
            Ok(n)
        }
    }
    let err = store
        .import_recording(Failing(3 * CHUNK_SIZE_BYTES / 2), info())
        .expect_err("read error");
    assert!(matches!(err, StoreError::ImportSource { .. }));
    let missing = store
        .import_recording_file(std::path::Path::new("/nonexistent/dyad-recording"), info())
        .expect_err("missing file");
    assert!(missing.to_string().contains("nonexistent"), "{missing}");

    // Hostile incoming metadata: chunk list that does not authenticate, wrong count, odd size.
    let (cvs, len, root) = chunk_chaining_values(&content[..]).expect("hash");
    let meta = SessionMeta {
        id: SessionId {
            origin: NodeId([2; 16]),
            sequence: 1,
        },
        started_unix_ms: 0,
        ended_unix_ms: 0,
        size_bytes: len,
        root: *root.as_bytes(),
        chunk_size_bytes: CHUNK_SIZE_BYTES as u32,
        ended_normally: false,
    };
    let mut swapped = cvs.clone();
    swapped.swap(0, 1);
    assert!(store.begin_incoming(&meta, swapped).is_err());
    assert!(store.begin_incoming(&meta, cvs[..2].to_vec()).is_err());
    let odd = SessionMeta {
        chunk_size_bytes: 4096,
        ..meta
    };
    assert!(store.begin_incoming(&odd, cvs.clone()).is_err());
    let huge = SessionMeta {
        size_bytes: u64::MAX,
        ..meta
    };
    assert!(store.begin_incoming(&huge, cvs.clone()).is_err());

    assert!(store.failure().is_none(), "bad input never stops the store");
    assert!(store.catalog_list().expect("list").is_empty());
    assert!(store.list_partials().expect("partials").is_empty());
    assert_eq!(files(&disk), before_files);
    assert_eq!(store.local_sequence_floor().expect("floor"), floor);

    // Chunks of the wrong length or index are refused before writing.
    store.begin_incoming(&meta, cvs).expect("begin");
    assert!(store.write_chunk(&meta.id, 0, &content[..10]).is_err());
    assert!(store.write_chunk(&meta.id, 7, &content[..10]).is_err());
    assert_eq!(
        store.durable_chunks(&meta.id).expect("bits"),
        vec![false; 3]
    );
}

#[test]
fn local_ids_are_never_reused() {
    let disk = SimDisk::new(9);
    let mut seen = BTreeSet::new();
    for _ in 0..3 {
        let store = Store::open(Arc::clone(&disk) as Arc<dyn Disk>).expect("open");
        for _ in 0..3 {
            let id = store.next_local_session_id(LOCAL).expect("id");
            assert!(seen.insert(id.sequence));
        }
        let meta = store.import_recording(&b"x"[..], info()).expect("import");
        assert!(seen.insert(meta.id.sequence));
        drop(store);
        disk.crash(false);
    }
    let store = Store::open(Arc::clone(&disk) as Arc<dyn Disk>).expect("open");
    store.set_local_sequence_floor(1000).expect("raise");
    store.set_local_sequence_floor(5).expect("never lowers");
    assert_eq!(
        store.next_local_session_id(LOCAL).expect("id").sequence,
        1000
    );
}

#[test]
fn newer_format_is_refused() {
    let disk = SimDisk::new(10);
    set_format_version_for_tests(Arc::clone(&disk) as Arc<dyn Disk>, FORMAT_VERSION + 1)
        .expect("write format");
    let err = Store::open(disk as Arc<dyn Disk>).expect_err("newer format");
    assert_eq!(
        err,
        StoreError::NewerFormat {
            found: FORMAT_VERSION + 1,
            supported: FORMAT_VERSION
        }
    );
    assert!(err.to_string().contains("newer"), "{err}");
}

#[test]
fn a_failed_sync_stops_the_store_until_reopened() {
    let (disk, store) = sim_store(11);
    store.config_set("a", b"1", epoch(1)).expect("set");
    disk.fail_next_sync();
    let err = store
        .config_set("a", b"2", epoch(1))
        .expect_err("sync fails");
    assert!(err.is_terminal());
    let later = store.config_get("a").expect_err("stopped");
    assert!(matches!(later, StoreError::Failed { .. }), "{later}");
    assert!(store.import_recording(&b"x"[..], info()).is_err());
    drop(store);
    disk.crash(true);
    let store = Store::open(disk as Arc<dyn Disk>).expect("reopen");
    let value = store.config_get("a").expect("get").expect("present");
    assert!(value == b"1" || value == b"2");
}

/// A synchronous `ENOSPC` refuses the write and nothing more: nothing of it reached the file,
/// so the store is not poisoned, and the same import succeeds once space is freed.
#[test]
fn a_full_disk_refuses_the_write_and_the_store_goes_on() {
    let (disk, store) = sim_store(12);
    let used = disk.used_bytes();
    disk.set_faults(dyad_store::disk::sim::SimFaults {
        quota_bytes: Some(used + CHUNK_SIZE_BYTES as u64),
        ..Default::default()
    });
    let content = data(3 * CHUNK_SIZE_BYTES, 1);
    let err = store
        .import_recording(&content[..], info())
        .expect_err("full");
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err}");
    assert!(!err.is_terminal());
    assert!(err.to_string().contains("disk is full"), "{err}");
    assert!(
        store.failure().is_none(),
        "a full disk does not poison the store"
    );
    assert!(
        !files(&disk).iter().any(|name| name.starts_with("import-")),
        "the refused import left nothing behind: {:?}",
        files(&disk)
    );
    store
        .config_set("still", b"works", epoch(1))
        .expect("store goes on");
    disk.set_faults(Default::default());
    let meta = store
        .import_recording(&content[..], info())
        .expect("space freed");
    assert_eq!(read_all(&store, &meta).expect("read"), content);
}

/// Flips one bit in every one of several chunks across recordings; verify finds each one,
/// reads refuse them, and the damaged recordings leave the catalog for re-fetch.
#[test]
fn every_flipped_bit_is_detected() {
    let (disk, store) = sim_store(13);
    let metas: Vec<SessionMeta> = (0..4)
        .map(|k| {
            store
                .import_recording(
                    &data(2 * CHUNK_SIZE_BYTES + 17 * k + 1, k as u8)[..],
                    info(),
                )
                .expect("import")
        })
        .collect();
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut flipped = BTreeSet::new();
    for meta in &metas[..3] {
        for chunk in 0..3u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let chunk_len =
                (meta.size_bytes - chunk * CHUNK_SIZE_BYTES as u64).min(CHUNK_SIZE_BYTES as u64);
            let bit = chunk * CHUNK_SIZE_BYTES as u64 * 8 + rng % (chunk_len * 8);
            let name = format!(
                "rec-{}-{:016x}.dat",
                meta.id
                    .origin
                    .0
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>(),
                meta.id.sequence
            );
            disk.flip_bit(&name, bit).expect("flip");
            flipped.insert((meta.id, chunk));
        }
    }
    // A read for sending refuses the damaged chunk and withdraws the recording.
    let err = store.read_chunk(&metas[0].id, 1).expect_err("damaged");
    assert_eq!(
        err,
        StoreError::ChunkCorrupt {
            id: metas[0].id,
            index: 1
        }
    );
    assert!(store.catalog_get(&metas[0].id).expect("get").is_none());
    let report = store.verify_all().expect("verify");
    let found: BTreeSet<(SessionId, u64)> = report
        .bad_chunks
        .iter()
        .map(|bad| (bad.id, bad.index))
        .collect();
    // The withdrawal after the failed read already re-verified the rest of that recording and
    // dropped its other damaged chunks; verify finds the damage elsewhere.
    let expected: BTreeSet<(SessionId, u64)> = flipped
        .iter()
        .filter(|(id, _)| *id != metas[0].id)
        .copied()
        .collect();
    assert_eq!(found, expected, "verify reports exactly the damaged chunks");
    assert_eq!(store.catalog_list().expect("list"), vec![metas[3]]);
    let partials = store.list_partials().expect("partials");
    assert_eq!(partials.len(), 3);
    let withdrawn = partials
        .iter()
        .find(|p| p.meta.id == metas[0].id)
        .expect("the recording a read found damaged is a partial");
    assert_eq!(
        withdrawn.durable_chunks, 0,
        "every damaged chunk of it is dropped for re-fetch at once"
    );
    assert!(partials
        .iter()
        .all(|p| p.is_damaged() && p.durable_chunks < p.chunk_count));
    // Re-fetching the damaged chunks from an intact copy restores them.
    let (_, intact) = sim_store(14);
    for partial in &partials {
        let k = metas
            .iter()
            .position(|m| m.id == partial.meta.id)
            .expect("one of ours");
        let meta = intact
            .import_recording(
                &data(2 * CHUNK_SIZE_BYTES + 17 * k + 1, k as u8)[..],
                info(),
            )
            .expect("import");
        let durable = store.durable_chunks(&partial.meta.id).expect("bits");
        for (index, bit) in durable.iter().enumerate() {
            if !bit {
                let chunk = intact.read_chunk(&meta.id, index as u64).expect("read");
                store
                    .write_chunk(&partial.meta.id, index as u64, &chunk)
                    .expect("write");
            }
        }
        store.publish(&partial.meta.id).expect("publish");
    }
    assert!(store.verify_all().expect("verify").bad_chunks.is_empty());
    assert_eq!(store.catalog_len().expect("len"), 4);
}

#[test]
fn real_disk_round_trip_and_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("source.bin");
    let content = data(CHUNK_SIZE_BYTES + 999, 3);
    std::fs::write(&source, &content).expect("write source");
    let data_dir = dir.path().join("data");
    let meta = {
        let store = Store::open(Arc::new(RealDisk::new(&data_dir).expect("disk"))).expect("open");
        store.config_set("k", b"v", epoch(1)).expect("set");
        store
            .import_recording_file(&source, info())
            .expect("import")
    };
    let store = Store::open(Arc::new(RealDisk::new(&data_dir).expect("disk"))).expect("reopen");
    assert_eq!(store.config_get("k").expect("get"), Some(b"v".to_vec()));
    assert_eq!(read_all(&store, &meta).expect("read"), content);
    drop(store);
    let name = std::fs::read_dir(&data_dir)
        .expect("list")
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "dat"))
        .expect("a recording file");
    let mut bytes = std::fs::read(&name).expect("read");
    bytes[CHUNK_SIZE_BYTES + 5] ^= 1;
    std::fs::write(&name, bytes).expect("write");
    let store = Store::open(Arc::new(RealDisk::new(&data_dir).expect("disk"))).expect("reopen");
    let report = store.verify_all().expect("verify");
    assert_eq!(report.bad_chunks.len(), 1);
    assert_eq!(report.bad_chunks[0].index, 1);
    assert!(store.catalog_list().expect("list").is_empty());
}

#[test]
fn two_stores_find_their_differences_through_the_summary() {
    let (_, a) = sim_store(15);
    let (_, b) = sim_store(16);
    let shared = a.import_recording(&b"shared"[..], info()).expect("import");
    b.begin_incoming(&shared, a.chunk_chaining_values(&shared.id).expect("cvs"))
        .expect("begin");
    b.write_chunk(&shared.id, 0, b"shared").expect("write");
    b.publish(&shared.id).expect("publish");
    let only_a = a.import_recording(&b"only a"[..], info()).expect("import");
    let only_b = b
        .import_recording(
            &b"only b"[..],
            ImportInfo {
                origin: NodeId([2; 16]),
                ..info()
            },
        )
        .expect("import");
    let mut reconciler = Reconciler::new();
    let mut request = reconciler.start();
    while let Some(next) = a
        .summary_step(
            &mut reconciler,
            &b.summary_answer(&request).expect("answer"),
        )
        .expect("step")
    {
        request = next;
    }
    let (differences, stats) = reconciler.finish();
    assert_eq!(differences.only_ours, vec![only_a.id]);
    assert_eq!(differences.only_theirs, vec![only_b.id]);
    assert!(differences.different_roots.is_empty());
    assert!(stats.bytes > 0);
}

#[test]
fn a_vanished_recording_file_is_withdrawn_not_served() {
    let (disk, store) = sim_store(17);
    let content = data(CHUNK_SIZE_BYTES + 3, 4);
    let meta = store
        .import_recording(&content[..], info())
        .expect("import");
    let name = disk
        .list()
        .expect("list")
        .into_iter()
        .find(|name| name.ends_with(".dat"))
        .expect("recording file");
    disk.remove(&name).expect("remove");
    assert!(matches!(
        store.read_chunk(&meta.id, 1),
        Err(StoreError::ChunkCorrupt { .. })
    ));
    assert!(store.failure().is_none());
    assert!(store.catalog_list().expect("list").is_empty());
    let partials = store.list_partials().expect("partials");
    assert_eq!(partials.len(), 1);
    assert!(partials[0].is_damaged());
    assert_eq!(partials[0].durable_chunks, 0);
    // A reopen keeps it as a resumable partial.
    drop(store);
    disk.crash(true);
    let store = Store::open(disk as Arc<dyn Disk>).expect("reopen");
    assert_eq!(store.list_partials().expect("partials").len(), 1);
    store
        .write_chunk(&meta.id, 0, &content[..CHUNK_SIZE_BYTES])
        .expect("write");
    store
        .write_chunk(&meta.id, 1, &content[CHUNK_SIZE_BYTES..])
        .expect("write");
    assert_eq!(store.publish(&meta.id).expect("publish"), meta);
}

#[test]
fn a_truncated_recording_file_is_withdrawn_on_open() {
    let (disk, store) = sim_store(18);
    let content = data(2 * CHUNK_SIZE_BYTES, 6);
    let meta = store
        .import_recording(&content[..], info())
        .expect("import");
    drop(store);
    let name = disk
        .list()
        .expect("list")
        .into_iter()
        .find(|name| name.ends_with(".dat"))
        .expect("recording file");
    let bytes = disk.file_bytes(&name).expect("bytes");
    disk.put_file(&name, &bytes[..CHUNK_SIZE_BYTES + 10])
        .expect("truncate");
    let store = Store::open(Arc::clone(&disk) as Arc<dyn Disk>).expect("reopen");
    assert_eq!(store.open_report().recordings_withdrawn, vec![meta.id]);
    assert!(store.catalog_list().expect("list").is_empty());
    let durable = store.durable_chunks(&meta.id).expect("bits");
    assert_eq!(durable, vec![false, false]);
    for (index, chunk) in content.chunks(CHUNK_SIZE_BYTES).enumerate() {
        store
            .write_chunk(&meta.id, index as u64, chunk)
            .expect("write");
    }
    store.publish(&meta.id).expect("publish");
    drop(store);
    let store = Store::open(disk as Arc<dyn Disk>).expect("reopen");
    assert!(store.open_report().recordings_withdrawn.is_empty());
    assert_eq!(read_all(&store, &meta).expect("read"), content);
}

/// A partial on a simulated disk, from 5 chunks of `seed`'s content: (disk, store, meta,
/// chaining values, content).
fn incoming_partial(seed: u8) -> (Arc<SimDisk>, Store, SessionMeta, Vec<[u8; 32]>, Vec<u8>) {
    let content = data(5 * CHUNK_SIZE_BYTES - 77, seed);
    let (cvs, len, root) = chunk_chaining_values(&content[..]).expect("hash");
    let meta = SessionMeta {
        id: SessionId {
            origin: NodeId([9; 16]),
            sequence: u64::from(seed),
        },
        started_unix_ms: 1,
        ended_unix_ms: 2,
        size_bytes: len,
        root: *root.as_bytes(),
        chunk_size_bytes: CHUNK_SIZE_BYTES as u32,
        ended_normally: true,
    };
    let (disk, store) = sim_store(u64::from(seed));
    store.begin_incoming(&meta, cvs.clone()).expect("begin");
    (disk, store, meta, cvs, content)
}

fn chunk(content: &[u8], index: u64) -> &[u8] {
    let start = index as usize * CHUNK_SIZE_BYTES;
    &content[start..(start + CHUNK_SIZE_BYTES).min(content.len())]
}

#[test]
fn a_background_sync_makes_chunks_durable_only_once_it_ran() {
    let (disk, store, meta, _, content) = incoming_partial(21);
    for index in [0u64, 1] {
        store
            .write_chunk(&meta.id, index, chunk(&content, index))
            .expect("write");
    }
    let ticket = store
        .begin_sync(&meta.id)
        .expect("begin sync")
        .expect("two chunks wait");
    assert_eq!(store.begin_sync(&meta.id).expect("again"), None);
    // More chunks arrive while the sync is handed out; they are not part of it.
    store
        .write_chunk(&meta.id, 2, chunk(&content, 2))
        .expect("write during the sync");
    let work = store.sync_work(&meta.id, ticket).expect("work");
    assert_eq!(work.session(), meta.id);
    assert_eq!(
        store.durable_chunks(&meta.id).expect("bits"),
        vec![false; 5]
    );
    // Published only once the sync finished.
    assert!(matches!(
        store.publish(&meta.id),
        Err(StoreError::InvalidInput { .. })
    ));
    std::thread::spawn(move || work.run())
        .join()
        .expect("the sync thread ends")
        .expect("the sync runs");
    store.finish_sync(&meta.id, ticket, Ok(())).expect("finish");
    assert_eq!(
        store.durable_chunks(&meta.id).expect("bits"),
        vec![true, true, false, false, false]
    );
    // Power loss: what the sync covered survives, with its bits; chunk 2 was never synced.
    drop(store);
    disk.crash(false);
    let store = Store::open(Arc::clone(&disk) as Arc<dyn Disk>).expect("reopen");
    assert_eq!(
        store.durable_chunks(&meta.id).expect("bits"),
        vec![true, true, false, false, false]
    );
    for index in 2..5 {
        store
            .write_chunk(&meta.id, index, chunk(&content, index))
            .expect("write the rest");
    }
    let ticket = store.begin_sync(&meta.id).expect("sync").expect("ticket");
    let work = store.sync_work(&meta.id, ticket).expect("work");
    store
        .finish_sync(&meta.id, ticket, work.run())
        .expect("finish");
    store.publish(&meta.id).expect("publish");
    assert_eq!(read_all(&store, &meta).expect("read"), content);
}

#[test]
fn a_sync_lost_to_a_crash_leaves_its_chunks_to_fetch_again() {
    let (disk, store, meta, _, content) = incoming_partial(22);
    for index in 0..3 {
        store
            .write_chunk(&meta.id, index, chunk(&content, index))
            .expect("write");
    }
    let ticket = store.begin_sync(&meta.id).expect("sync").expect("ticket");
    let _never_run = store.sync_work(&meta.id, ticket).expect("work");
    drop(store);
    disk.crash(true);
    let store = Store::open(Arc::clone(&disk) as Arc<dyn Disk>).expect("reopen");
    assert_eq!(
        store.durable_chunks(&meta.id).expect("bits"),
        vec![false; 5]
    );
}

#[test]
fn a_failed_background_sync_stops_the_store() {
    let (disk, store, meta, _, content) = incoming_partial(23);
    store
        .write_chunk(&meta.id, 0, chunk(&content, 0))
        .expect("write");
    let ticket = store.begin_sync(&meta.id).expect("sync").expect("ticket");
    let work = store.sync_work(&meta.id, ticket).expect("work");
    disk.fail_next_sync();
    let outcome = work.run();
    assert!(matches!(outcome, Err(StoreError::Io { .. })));
    assert!(store.finish_sync(&meta.id, ticket, outcome).is_err());
    assert!(matches!(
        store.write_chunk(&meta.id, 1, chunk(&content, 1)),
        Err(StoreError::Failed { .. })
    ));
    assert_eq!(store.durable_chunks(&meta.id).ok(), None);
}

/// Issue 16, item 1: Linux reports an fsync error once and then marks the failed pages clean,
/// so a later fsync of the same file returns 0. A failed sync must poison the store at once:
/// the next sync of the same partial (another ticket, handed out before the failure was
/// reported back) must not commit durable bits, nor may the store's own sync.
#[test]
fn a_failed_fsync_poisons_the_store_before_any_later_commit() {
    let (disk, store, meta, _, content) = incoming_partial(24);
    store
        .write_chunk(&meta.id, 0, chunk(&content, 0))
        .expect("write");
    let first = store.begin_sync(&meta.id).expect("sync").expect("ticket");
    store
        .write_chunk(&meta.id, 1, chunk(&content, 1))
        .expect("write");
    let second = store.begin_sync(&meta.id).expect("sync").expect("ticket");
    let (first_work, second_work) = (
        store.sync_work(&meta.id, first).expect("work"),
        store.sync_work(&meta.id, second).expect("work"),
    );
    disk.fail_next_sync();
    assert!(matches!(first_work.run(), Err(StoreError::Io { .. })));
    // The failure has not been reported to the store yet (the syncer thread runs ahead);
    // the second sync's fsync succeeds, as Linux's would, but must commit nothing.
    assert!(
        second_work.run().is_err(),
        "a sync after a failed fsync committed durable bits"
    );
    assert!(store.failure().is_some(), "the store is poisoned at once");
    assert!(store.sync_chunks(&meta.id).is_err());
    drop(store);
    disk.crash(false);
    let store = Store::open(Arc::clone(&disk) as Arc<dyn Disk>).expect("reopen");
    assert_eq!(
        store.durable_chunks(&meta.id).expect("bits"),
        vec![false; 5],
        "no chunk of a failed sync's file is durable"
    );
}

#[test]
fn chunks_hashed_by_the_caller_are_checked_against_the_chunk_list() {
    use dyad_store::tree::chunk_subtree_cv;
    let (_, store, meta, _, content) = incoming_partial(24);
    let good = chunk(&content, 1);
    let mut bad = good.to_vec();
    bad[100] ^= 1;
    // The hash of the bad bytes, or of the right bytes at another index, is refused.
    for (index, bytes, hashed_index) in [(1u64, &bad[..], 1u64), (1, good, 2)] {
        assert!(matches!(
            store.write_chunk_hashed(
                &meta.id,
                index,
                bytes,
                Some(chunk_subtree_cv(hashed_index, bytes))
            ),
            Err(StoreError::InvalidRecording { .. })
        ));
    }
    assert_eq!(
        store
            .write_chunk_hashed(&meta.id, 1, good, Some(chunk_subtree_cv(1, good)))
            .expect("a good chunk with its own hash"),
        ChunkOutcome::Written
    );
    // A short chunk is refused by its length whatever the hash says.
    let short = &good[..good.len() - 1];
    assert!(store
        .write_chunk_hashed(&meta.id, 3, short, Some(chunk_subtree_cv(3, short)))
        .is_err());

    // One chunk: the chunk hashes as the root; the store verifies those bytes itself.
    let small = data(1000, 25);
    let (small_cvs, small_len, small_root) = chunk_chaining_values(&small[..]).expect("hash");
    let small_meta = SessionMeta {
        id: SessionId {
            origin: NodeId([9; 16]),
            sequence: 99,
        },
        size_bytes: small_len,
        root: *small_root.as_bytes(),
        ..meta
    };
    store.begin_incoming(&small_meta, small_cvs).expect("begin");
    let mut small_bad = small.clone();
    small_bad[0] ^= 1;
    assert!(store
        .write_chunk_hashed(
            &small_meta.id,
            0,
            &small_bad,
            Some(chunk_subtree_cv(0, &small))
        )
        .is_err());
    store
        .write_chunk_hashed(&small_meta.id, 0, &small, Some(chunk_subtree_cv(0, &small)))
        .expect("verified in full");
}

/// The time of the last configuration change is recorded in the change's own transaction,
/// whichever way the change came (a write here, changes or a snapshot from the peer), by the
/// store's clock: the install's settings-backup check needs no polling to know it.
#[test]
fn every_configuration_change_records_its_time() {
    let (_, primary) = sim_store(40);
    let (_, backup) = sim_store(41);
    assert_eq!(primary.config_changed_unix_ms().expect("read"), None);
    primary.set_clock(Arc::new(|| 5_000));
    primary.config_set("a", b"1", epoch(1)).expect("set");
    assert_eq!(primary.config_changed_unix_ms().expect("read"), Some(5_000));
    backup.set_clock(Arc::new(|| 6_000));
    let changes = primary
        .config_changes_since(CONFIG_VERSION_ZERO)
        .expect("changes")
        .expect("continuous");
    backup.config_apply_changes(&changes).expect("apply");
    assert_eq!(backup.config_changed_unix_ms().expect("read"), Some(6_000));
    backup.set_clock(Arc::new(|| 7_000));
    backup
        .config_replace(&primary.config_snapshot().expect("snapshot"), None)
        .expect("replace");
    assert_eq!(backup.config_changed_unix_ms().expect("read"), Some(7_000));
    // A refused write records nothing.
    primary.set_clock(Arc::new(|| 9_000));
    assert!(primary.config_set("a", b"2", epoch(0)).is_err());
    assert_eq!(primary.config_changed_unix_ms().expect("read"), Some(5_000));
}
