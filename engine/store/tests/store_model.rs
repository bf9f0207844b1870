//! Model test: random store operations against an in-memory model, on a simulated disk that
//! fails writes and syncs at random and loses every unsynced write at each crash.
//!
//! After every crash the reopened store must agree with the model: configuration exactly as
//! acknowledged (or, for the one operation a fault interrupted, as before or after it); every
//! acknowledged recording complete and byte-identical; nothing else complete; every partial
//! resumable to the right content.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use dyad_store::disk::sim::{Ratio, SimDisk, SimFaults};
use dyad_store::disk::Disk;
use dyad_store::tree::chunk_chaining_values;
use dyad_store::{ImportInfo, SessionMeta, Store, StoreError, CHUNK_SIZE_BYTES};
use dyad_wire::{Epoch, NodeId, SessionId};
use proptest::prelude::*;

const LOCAL: NodeId = NodeId([1; 16]);
const PEER: NodeId = NodeId([2; 16]);
const POOL_LENS: [usize; 6] = [
    0,
    1,
    1000,
    CHUNK_SIZE_BYTES,
    CHUNK_SIZE_BYTES + 1,
    2 * CHUNK_SIZE_BYTES + 7,
];

fn content(index: usize) -> Vec<u8> {
    let len = POOL_LENS[index];
    (0..len)
        .map(|i| (i as u8) ^ (i >> 9) as u8 ^ (index as u8 * 37))
        .collect()
}

fn epoch() -> Epoch {
    Epoch {
        counter: 1,
        node: LOCAL,
    }
}

#[derive(Clone, Debug)]
enum Op {
    Set(u8, u8),
    Delete(u8),
    Import(usize),
    Begin(usize),
    Write(usize, u64),
    Sync(usize),
    Publish(usize),
    Crash(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..6, any::<u8>()).prop_map(|(k, v)| Op::Set(k, v)),
        1 => (0u8..6).prop_map(Op::Delete),
        2 => (0..POOL_LENS.len()).prop_map(Op::Import),
        2 => (0..POOL_LENS.len()).prop_map(Op::Begin),
        5 => (0..POOL_LENS.len(), 0u64..3).prop_map(|(p, c)| Op::Write(p, c)),
        1 => (0..POOL_LENS.len()).prop_map(Op::Sync),
        2 => (0..POOL_LENS.len()).prop_map(Op::Publish),
        2 => any::<bool>().prop_map(Op::Crash),
    ]
}

struct Pool {
    contents: Vec<Vec<u8>>,
    metas: Vec<SessionMeta>,
    cvs: Vec<Vec<[u8; 32]>>,
}

fn pool() -> Pool {
    let contents: Vec<Vec<u8>> = (0..POOL_LENS.len()).map(content).collect();
    let mut metas = Vec::new();
    let mut cvs = Vec::new();
    for (index, data) in contents.iter().enumerate() {
        let (list, len, root) = chunk_chaining_values(&data[..]).expect("in memory");
        metas.push(SessionMeta {
            id: SessionId {
                origin: PEER,
                sequence: index as u64 + 1,
            },
            started_unix_ms: 10,
            ended_unix_ms: 20,
            size_bytes: len,
            root: *root.as_bytes(),
            chunk_size_bytes: CHUNK_SIZE_BYTES as u32,
            ended_normally: true,
        });
        cvs.push(list);
    }
    Pool {
        contents,
        metas,
        cvs,
    }
}

#[derive(Clone, Default, PartialEq, Debug)]
struct Model {
    config: BTreeMap<String, Vec<u8>>,
    /// Complete sessions and the pool index of their content.
    complete: BTreeMap<SessionId, usize>,
    /// Pool indexes of received recordings that were begun.
    begun: BTreeSet<usize>,
}

/// What a failed operation may or may not have done.
enum Uncertain {
    Config(BTreeMap<String, Vec<u8>>),
    Complete(SessionId, usize),
    /// An import's id is not known when it fails: any new local session with this content.
    Import(usize),
}

fn read_all(store: &Store, meta: &SessionMeta) -> Vec<u8> {
    let count = meta.size_bytes.div_ceil(CHUNK_SIZE_BYTES as u64);
    let mut out = Vec::new();
    for index in 0..count {
        out.extend_from_slice(
            &store
                .read_chunk(&meta.id, index)
                .expect("complete recordings read"),
        );
    }
    out
}

fn reopen(disk: &Arc<SimDisk>, tear: bool) -> Store {
    disk.crash(tear);
    let faults = SimFaults::default();
    disk.set_faults(faults);
    Store::open(Arc::clone(disk) as Arc<dyn Disk>).expect("a crashed store reopens")
}

fn check(store: &Store, model: &mut Model, uncertain: Option<Uncertain>, pool: &Pool) {
    let config: BTreeMap<String, Vec<u8>> =
        store.config_list("").expect("list").into_iter().collect();
    match &uncertain {
        Some(Uncertain::Config(after)) if config == *after => model.config = after.clone(),
        _ => {}
    }
    assert_eq!(config, model.config, "configuration after reopen");
    let catalog = store.catalog_list().expect("catalog");
    let listed: BTreeSet<SessionId> = catalog.iter().map(|meta| meta.id).collect();
    let expected: BTreeSet<SessionId> = model.complete.keys().copied().collect();
    let extra: Vec<&SessionId> = listed.difference(&expected).collect();
    for id in &extra {
        let meta = catalog.iter().find(|m| m.id == **id).expect("listed");
        let index = match &uncertain {
            Some(Uncertain::Complete(uid, index)) if uid == *id => *index,
            Some(Uncertain::Import(index)) if id.origin == LOCAL => *index,
            // A received recording whose every chunk was durable is published on reopen.
            _ if id.origin == PEER && model.begun.contains(&((id.sequence - 1) as usize)) => {
                (id.sequence - 1) as usize
            }
            _ => panic!("session {id:?} is complete but was never acknowledged"),
        };
        assert_eq!(read_all(store, meta), pool.contents[index]);
        model.complete.insert(**id, index);
    }
    for (id, index) in &model.complete {
        let meta = catalog
            .iter()
            .find(|meta| meta.id == *id)
            .unwrap_or_else(|| panic!("acknowledged session {id:?} lost"));
        assert_eq!(read_all(store, meta), pool.contents[*index], "{id:?}");
    }
    let report = store.verify_all().expect("verify");
    assert!(report.bad_chunks.is_empty(), "{:?}", report.bad_chunks);
    for partial in store.list_partials().expect("partials") {
        assert_eq!(
            partial.meta.id.origin, PEER,
            "only received recordings are partial"
        );
        assert!(!listed.contains(&partial.meta.id));
    }
}

fn run(ops: Vec<Op>, seed: u64, faulty: bool) {
    let pool = pool();
    let disk = SimDisk::new(seed);
    let faults = if faulty {
        SimFaults {
            write_error: Ratio::new(1, 40),
            sync_error: Ratio::new(1, 15),
            sync_dir_error: Ratio::new(1, 20),
            quota_bytes: None,
        }
    } else {
        SimFaults::default()
    };
    let mut store = Store::open(Arc::clone(&disk) as Arc<dyn Disk>).expect("fresh store");
    disk.set_faults(faults);
    let mut model = Model::default();
    let mut issued_local: BTreeSet<u64> = BTreeSet::new();
    for op in ops {
        let before = model.config.clone();
        let result: Result<Option<Uncertain>, StoreError> = match &op {
            Op::Set(key, value) => {
                let mut after = before.clone();
                after.insert(format!("k{key}"), vec![*value]);
                match store.config_set(&format!("k{key}"), &[*value], epoch()) {
                    Ok(_) => {
                        model.config = after;
                        Ok(None)
                    }
                    Err(e) if e.is_terminal() => Ok(Some(Uncertain::Config(after))),
                    Err(e) => Err(e),
                }
            }
            Op::Delete(key) => {
                let mut after = before.clone();
                after.remove(&format!("k{key}"));
                match store.config_delete(&format!("k{key}"), epoch()) {
                    Ok(_) => {
                        model.config = after;
                        Ok(None)
                    }
                    Err(e) if e.is_terminal() => Ok(Some(Uncertain::Config(after))),
                    Err(e) => Err(e),
                }
            }
            Op::Import(index) => {
                let info = ImportInfo {
                    origin: LOCAL,
                    started_unix_ms: 1,
                    ended_unix_ms: 2,
                    ended_normally: true,
                    expected_len: None,
                    expected_root: None,
                };
                match store.import_recording(&pool.contents[*index][..], info) {
                    Ok(meta) => {
                        assert!(issued_local.insert(meta.id.sequence), "local id reused");
                        assert!(!model.complete.contains_key(&meta.id));
                        model.complete.insert(meta.id, *index);
                        Ok(None)
                    }
                    Err(e) if e.is_terminal() => Ok(Some(Uncertain::Import(*index))),
                    Err(e) => Err(e),
                }
            }
            Op::Begin(index) => {
                model.begun.insert(*index);
                match store.begin_incoming(&pool.metas[*index], pool.cvs[*index].clone()) {
                    Ok(_) => Ok(None),
                    Err(e) if e.is_terminal() => Ok(Some(Uncertain::Config(before.clone()))),
                    Err(e) => Err(e),
                }
            }
            Op::Write(index, chunk) => {
                let id = pool.metas[*index].id;
                let data = &pool.contents[*index];
                let start = (*chunk as usize * CHUNK_SIZE_BYTES).min(data.len());
                let end = (start + CHUNK_SIZE_BYTES).min(data.len());
                match store.write_chunk(&id, *chunk, &data[start..end]) {
                    Ok(_) => Ok(None),
                    Err(StoreError::NotFound { .. }) | Err(StoreError::InvalidRecording { .. }) => {
                        Ok(None)
                    }
                    Err(e) if e.is_terminal() => Ok(Some(Uncertain::Config(before.clone()))),
                    Err(e) => Err(e),
                }
            }
            Op::Sync(index) => match store.sync_chunks(&pool.metas[*index].id) {
                Ok(()) | Err(StoreError::NotFound { .. }) => Ok(None),
                Err(e) if e.is_terminal() => Ok(Some(Uncertain::Config(before.clone()))),
                Err(e) => Err(e),
            },
            Op::Publish(index) => {
                let id = pool.metas[*index].id;
                match store.publish(&id) {
                    Ok(meta) => {
                        assert_eq!(meta, pool.metas[*index]);
                        model.complete.insert(id, *index);
                        Ok(None)
                    }
                    Err(StoreError::NotFound { .. }) | Err(StoreError::Incomplete { .. }) => {
                        Ok(None)
                    }
                    Err(e) if e.is_terminal() => Ok(Some(Uncertain::Complete(id, *index))),
                    Err(e) => Err(e),
                }
            }
            Op::Crash(tear) => {
                drop(std::mem::replace(&mut store, reopen(&disk, *tear)));
                check(&store, &mut model, None, &pool);
                disk.set_faults(faults);
                Ok(None)
            }
        };
        match result {
            Ok(None) => {}
            Ok(Some(uncertain)) => {
                // The store stopped; every later call must say so until it is reopened.
                assert!(store.config_version().expect_err("stopped").is_terminal());
                drop(std::mem::replace(
                    &mut store,
                    reopen(&disk, seed.is_multiple_of(2)),
                ));
                check(&store, &mut model, Some(uncertain), &pool);
                disk.set_faults(faults);
            }
            Err(error) => panic!("{op:?} failed unexpectedly: {error}"),
        }
    }
    drop(std::mem::replace(&mut store, reopen(&disk, true)));
    check(&store, &mut model, None, &pool);
    // Every partial left must be resumable to its exact content.
    for partial in store.list_partials().expect("partials") {
        let index = (partial.meta.id.sequence - 1) as usize;
        let durable = store.durable_chunks(&partial.meta.id).expect("durable");
        for (chunk, data) in pool.contents[index].chunks(CHUNK_SIZE_BYTES).enumerate() {
            if !durable[chunk] {
                store
                    .write_chunk(&partial.meta.id, chunk as u64, data)
                    .expect("resume");
            }
        }
        store.publish(&partial.meta.id).expect("publish resumed");
        let meta = store
            .catalog_get(&partial.meta.id)
            .expect("get")
            .expect("listed");
        assert_eq!(read_all(&store, &meta), pool.contents[index]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 200, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_model_across_crashes(ops in proptest::collection::vec(op(), 1..40), seed: u64) {
        run(ops, seed, false);
    }

    #[test]
    fn store_matches_model_across_faults_and_crashes(ops in proptest::collection::vec(op(), 1..40), seed: u64) {
        run(ops, seed, true);
    }
}
