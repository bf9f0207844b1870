//! A simulated disk for tests and the simulator: deterministic, in memory, and faulty on demand.
//!
//! It models what a power loss does to a POSIX file system: each file keeps the bytes that
//! reached stable storage (made durable by [`DiskFile::sync`]) apart from the bytes written
//! since, and the folder keeps its durable names (made durable by [`Disk::sync_dir`]) apart
//! from the current ones. [`SimDisk::crash`] throws away everything not durable, optionally
//! tearing the last unsynced write of each file at a seeded point, and invalidates every open
//! handle so the process that "died" cannot keep writing. Faults are drawn from a seeded
//! generator (never a global RNG), so a seed replays the same run bit for bit.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{check_file_name, Disk, DiskFile, OpenMode};

/// How many bytes of the last unsynced write of a file are remembered for tearing it at a
/// crash. Longer writes tear within this prefix, which is where a tear can land anyway.
const TEAR_PREFIX_MAX_BYTES: usize = 64 * 1024;

/// A probability as an integer ratio, `numerator` in `denominator`; zero never fires.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ratio {
    pub numerator: u32,
    pub denominator: u32,
}

impl Ratio {
    /// Never fires.
    pub const NEVER: Ratio = Ratio {
        numerator: 0,
        denominator: 1,
    };

    /// `numerator` in `denominator`.
    pub fn new(numerator: u32, denominator: u32) -> Ratio {
        Ratio {
            numerator,
            denominator,
        }
    }
}

/// Faults a [`SimDisk`] injects at random (from its seed) until changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimFaults {
    /// Chance that a write fails (and writes nothing).
    pub write_error: Ratio,
    /// Chance that a file sync fails (its unsynced data stays unsynced).
    pub sync_error: Ratio,
    /// Chance that a directory sync fails.
    pub sync_dir_error: Ratio,
    /// Total bytes all files may hold; a write that would exceed it fails as a full disk.
    pub quota_bytes: Option<u64>,
}

/// Counters a test can assert on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimDiskStats {
    pub bytes_written: u64,
    pub file_syncs: u64,
    pub dir_syncs: u64,
    pub crashes: u64,
    pub faults_injected: u64,
    /// Unsynced writes a crash left in part (torn), over the disk's life.
    pub torn_writes: u64,
}

/// The simulated disk. Share it as `Arc<SimDisk>`; clones of the `Arc` see the same files.
pub struct SimDisk {
    state: Arc<Mutex<SimState>>,
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimDisk").finish_non_exhaustive()
    }
}

struct SimState {
    rng_state: u64,
    generation: u64,
    next_inode: u64,
    inodes: HashMap<u64, Inode>,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    faults: SimFaults,
    fail_next_write: bool,
    fail_next_sync: bool,
    stats: SimDiskStats,
    /// The files whose last unsynced write a crash tore, in order, over the disk's life.
    torn_files: Vec<String>,
}

#[derive(Default)]
struct Inode {
    /// The bytes as the process sees them. Shared with `durable` (copy on write) until the
    /// next write after a sync: a sync makes every byte durable, so it only shares the buffer,
    /// and a file written once is never copied.
    current: Arc<Vec<u8>>,
    durable: Arc<Vec<u8>>,
    /// The offset and first bytes of the last write since the last sync.
    last_unsynced_write: Option<(u64, Vec<u8>)>,
    open_handles: u64,
}

impl SimDisk {
    /// An empty disk whose random choices (faults, tear points) all come from `seed`.
    pub fn new(seed: u64) -> Arc<SimDisk> {
        Arc::new(SimDisk {
            state: Arc::new(Mutex::new(SimState {
                rng_state: seed,
                generation: 0,
                next_inode: 0,
                inodes: HashMap::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                faults: SimFaults::default(),
                fail_next_write: false,
                fail_next_sync: false,
                stats: SimDiskStats::default(),
                torn_files: Vec::new(),
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        lock_state(&self.state)
    }

    /// Replaces the random faults.
    pub fn set_faults(&self, faults: SimFaults) {
        self.lock().faults = faults;
    }

    /// Makes the next write (of any file) fail.
    pub fn fail_next_write(&self) {
        self.lock().fail_next_write = true;
    }

    /// Makes the next file or directory sync fail.
    pub fn fail_next_sync(&self) {
        self.lock().fail_next_sync = true;
    }

    /// Simulated power loss: every write, create, rename and remove that was not made durable
    /// is lost; with `tear`, the last unsynced write of each file survives in part (a prefix of
    /// seeded length). Every handle opened before the crash fails from now on.
    pub fn crash(&self, tear: bool) {
        let mut state = self.lock();
        state.generation += 1;
        state.stats.crashes += 1;
        state.names = state.durable_names.clone();
        let inode_ids: Vec<u64> = state.inodes.keys().copied().collect();
        let mut tears = Vec::new();
        for id in &inode_ids {
            let has_tear = state.inodes[id].last_unsynced_write.is_some();
            let point = if tear && has_tear {
                Some(state.next_random())
            } else {
                None
            };
            tears.push((*id, point));
        }
        let mut torn = Vec::new();
        for (id, point) in tears {
            let inode = state
                .inodes
                .get_mut(&id)
                .expect("id was just read from the map");
            inode.current = Arc::clone(&inode.durable);
            inode.open_handles = 0;
            if let (Some(point), Some((offset, prefix))) = (point, inode.last_unsynced_write.take())
            {
                let keep = (point % (prefix.len() as u64 + 1)) as usize;
                write_into(Arc::make_mut(&mut inode.current), offset, &prefix[..keep]);
                inode.durable = Arc::clone(&inode.current);
                torn.push(id);
            }
            inode.last_unsynced_write = None;
        }
        state.stats.torn_writes += torn.len() as u64;
        for id in torn {
            let names: Vec<String> = state
                .names
                .iter()
                .filter(|(_, inode)| **inode == id)
                .map(|(name, _)| name.clone())
                .collect();
            state.torn_files.extend(names);
        }
        state.collect_garbage();
    }

    /// Flips one bit of the file `name` on the medium (durable and current bytes alike), as a
    /// failing disk would. `bit_index` counts from the start of the file.
    pub fn flip_bit(&self, name: &str, bit_index: u64) -> io::Result<()> {
        let mut state = self.lock();
        let id = *state.names.get(name).ok_or_else(|| not_found(name))?;
        let inode = state
            .inodes
            .get_mut(&id)
            .expect("every name points at a live inode");
        let byte = usize::try_from(bit_index / 8).map_err(|_| past_end())?;
        let mask = 1u8 << (bit_index % 8);
        if byte >= inode.current.len() {
            return Err(past_end());
        }
        let shared = Arc::ptr_eq(&inode.current, &inode.durable);
        Arc::make_mut(&mut inode.current)[byte] ^= mask;
        if shared {
            inode.durable = Arc::clone(&inode.current);
        } else if byte < inode.durable.len() {
            Arc::make_mut(&mut inode.durable)[byte] ^= mask;
        }
        Ok(())
    }

    /// The current bytes of file `name`, for checks in tests.
    pub fn file_bytes(&self, name: &str) -> Option<Vec<u8>> {
        let state = self.lock();
        let id = state.names.get(name)?;
        Some(state.inodes[id].current.to_vec())
    }

    /// Runs `read` over the current bytes of file `name` without copying them (checkers that
    /// hash whole files).
    pub fn with_file_bytes<R>(&self, name: &str, read: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let state = self.lock();
        let id = state.names.get(name)?;
        Some(read(&state.inodes[id].current))
    }

    /// Overwrites file `name` with `bytes`, durably, as if written by another program.
    pub fn put_file(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        check_file_name(name)?;
        let mut state = self.lock();
        let id = state.name_or_create(name);
        let inode = state.inodes.get_mut(&id).expect("name_or_create made it");
        inode.current = Arc::new(bytes.to_vec());
        inode.durable = Arc::clone(&inode.current);
        inode.last_unsynced_write = None;
        state.durable_names.insert(name.to_string(), id);
        Ok(())
    }

    /// Counters so far.
    /// The files whose last unsynced write a crash tore, in order, over the disk's life.
    pub fn torn_files(&self) -> Vec<String> {
        self.lock().torn_files.clone()
    }

    pub fn stats(&self) -> SimDiskStats {
        self.lock().stats
    }

    /// The sum of the current lengths of all named files.
    pub fn used_bytes(&self) -> u64 {
        self.lock().used_bytes()
    }
}

fn lock_state(state: &Mutex<SimState>) -> MutexGuard<'_, SimState> {
    // A panic while holding the lock leaves plain data behind; the state stays usable.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file named {name:?}"))
}

fn past_end() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "past the end of the file")
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("simulated {what} error"))
}

fn write_into(buffer: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = offset as usize;
    let end = start + data.len();
    if buffer.len() < end {
        buffer.resize(end, 0);
    }
    buffer[start..end].copy_from_slice(data);
}

impl SimState {
    /// splitmix64: small, good enough for fault draws, and fully determined by the seed.
    fn next_random(&mut self) -> u64 {
        self.rng_state = self.rng_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fires(&mut self, ratio: Ratio) -> bool {
        if ratio.numerator == 0 || ratio.denominator == 0 {
            return false;
        }
        let fired = self.next_random() % u64::from(ratio.denominator) < u64::from(ratio.numerator);
        if fired {
            self.stats.faults_injected += 1;
        }
        fired
    }

    fn used_bytes(&self) -> u64 {
        self.names
            .values()
            .map(|id| self.inodes[id].current.len() as u64)
            .sum()
    }

    fn name_or_create(&mut self, name: &str) -> u64 {
        if let Some(id) = self.names.get(name) {
            return *id;
        }
        let id = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(id, Inode::default());
        self.names.insert(name.to_string(), id);
        id
    }

    fn collect_garbage(&mut self) {
        // One pass over the names, not one per inode: the simulator keeps hundreds of files.
        let named: std::collections::HashSet<u64> = self
            .names
            .values()
            .chain(self.durable_names.values())
            .copied()
            .collect();
        self.inodes
            .retain(|id, inode| inode.open_handles > 0 || named.contains(id));
    }

    fn live_inode(&mut self, generation: u64, id: u64) -> io::Result<&mut Inode> {
        if generation != self.generation {
            return Err(io::Error::other(
                "simulated disk crashed since this file was opened; reopen the store",
            ));
        }
        self.inodes
            .get_mut(&id)
            .ok_or_else(|| io::Error::other("simulated file vanished"))
    }
}

impl Disk for SimDisk {
    fn open(&self, name: &str, mode: OpenMode) -> io::Result<Arc<dyn DiskFile>> {
        check_file_name(name)?;
        let mut state = self.lock();
        let id = match (mode, state.names.get(name).copied()) {
            (OpenMode::Existing, None) => return Err(not_found(name)),
            (_, Some(id)) => id,
            (_, None) => state.name_or_create(name),
        };
        let generation = state.generation;
        let inode = state
            .inodes
            .get_mut(&id)
            .expect("names point at live inodes");
        inode.open_handles += 1;
        if mode == OpenMode::CreateTruncate && !inode.current.is_empty() {
            inode.current = Arc::new(Vec::new());
            inode.last_unsynced_write = None;
        }
        Ok(Arc::new(SimFile {
            state: Arc::clone(&self.state),
            inode: id,
            generation,
        }))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        check_file_name(from)?;
        check_file_name(to)?;
        let mut state = self.lock();
        let id = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_string(), id);
        state.collect_garbage();
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        check_file_name(name)?;
        let mut state = self.lock();
        state.names.remove(name).ok_or_else(|| not_found(name))?;
        state.collect_garbage();
        Ok(())
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.lock().names.keys().cloned().collect())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut state = self.lock();
        let sync_dir_error = state.faults.sync_dir_error;
        if std::mem::take(&mut state.fail_next_sync) || state.fires(sync_dir_error) {
            return Err(injected("directory sync"));
        }
        state.stats.dir_syncs += 1;
        state.durable_names = state.names.clone();
        state.collect_garbage();
        Ok(())
    }
}

struct SimFile {
    state: Arc<Mutex<SimState>>,
    inode: u64,
    generation: u64,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("inode", &self.inode)
            .finish()
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut state = lock_state(&self.state);
        if state.generation != self.generation {
            return;
        }
        if let Some(inode) = state.inodes.get_mut(&self.inode) {
            inode.open_handles = inode.open_handles.saturating_sub(1);
        }
        state.collect_garbage();
    }
}

impl DiskFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        let mut state = lock_state(&self.state);
        Ok(state.live_inode(self.generation, self.inode)?.current.len() as u64)
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let mut state = lock_state(&self.state);
        let inode = state.live_inode(self.generation, self.inode)?;
        let end = offset.checked_add(out.len() as u64).ok_or_else(past_end)?;
        if end > inode.current.len() as u64 {
            return Err(past_end());
        }
        out.copy_from_slice(&inode.current[offset as usize..end as usize]);
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = lock_state(&self.state);
        state.live_inode(self.generation, self.inode)?;
        let write_error = state.faults.write_error;
        if std::mem::take(&mut state.fail_next_write) || state.fires(write_error) {
            return Err(injected("write"));
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset overflow"))?;
        if let Some(quota) = state.faults.quota_bytes {
            let current_len = state.inodes[&self.inode].current.len() as u64;
            let growth = end.saturating_sub(current_len);
            if state.used_bytes() + growth > quota {
                state.stats.faults_injected += 1;
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "simulated disk is full",
                ));
            }
        }
        state.stats.bytes_written += data.len() as u64;
        let inode = state.live_inode(self.generation, self.inode)?;
        write_into(Arc::make_mut(&mut inode.current), offset, data);
        let prefix_len = data.len().min(TEAR_PREFIX_MAX_BYTES);
        inode.last_unsynced_write = Some((offset, data[..prefix_len].to_vec()));
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = lock_state(&self.state);
        let current_len = state.live_inode(self.generation, self.inode)?.current.len() as u64;
        if let Some(quota) = state.faults.quota_bytes {
            if state.used_bytes() + len.saturating_sub(current_len) > quota {
                state.stats.faults_injected += 1;
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "simulated disk is full",
                ));
            }
        }
        let new_len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
        let inode = state.live_inode(self.generation, self.inode)?;
        Arc::make_mut(&mut inode.current).resize(new_len, 0);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut state = lock_state(&self.state);
        state.live_inode(self.generation, self.inode)?;
        let sync_error = state.faults.sync_error;
        if std::mem::take(&mut state.fail_next_sync) || state.fires(sync_error) {
            return Err(injected("fsync"));
        }
        state.stats.file_syncs += 1;
        let inode = state.live_inode(self.generation, self.inode)?;
        inode.durable = Arc::clone(&inode.current);
        inode.last_unsynced_write = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_drops_unsynced_writes_and_names() {
        let disk = SimDisk::new(1);
        let a = disk.open("a", OpenMode::CreateIfMissing).expect("create");
        a.write_at(0, b"durable").expect("write");
        a.sync().expect("sync");
        disk.sync_dir().expect("sync dir");
        a.write_at(0, b"LOST").expect("write");
        disk.open("b", OpenMode::CreateIfMissing).expect("create b");
        disk.crash(false);
        assert!(a.len().is_err(), "a handle from before the crash must fail");
        assert_eq!(disk.list().expect("list"), vec!["a".to_string()]);
        assert_eq!(disk.file_bytes("a").expect("a exists"), b"durable");
    }

    #[test]
    fn synced_data_under_an_unsynced_name_is_lost() {
        let disk = SimDisk::new(2);
        let a = disk.open("a", OpenMode::CreateIfMissing).expect("create");
        a.write_at(0, b"data").expect("write");
        a.sync().expect("sync");
        disk.crash(false);
        assert!(disk.list().expect("list").is_empty());
    }

    #[test]
    fn unsynced_rename_reverts() {
        let disk = SimDisk::new(3);
        let a = disk.open("tmp", OpenMode::CreateIfMissing).expect("create");
        a.write_at(0, b"x").expect("write");
        a.sync().expect("sync");
        disk.sync_dir().expect("sync dir");
        disk.rename("tmp", "final").expect("rename");
        disk.crash(false);
        assert_eq!(disk.list().expect("list"), vec!["tmp".to_string()]);
    }

    #[test]
    fn tearing_keeps_a_prefix_of_the_last_write() {
        for seed in 0..20 {
            let disk = SimDisk::new(seed);
            let a = disk.open("a", OpenMode::CreateIfMissing).expect("create");
            a.write_at(0, &[0u8; 100]).expect("write");
            a.sync().expect("sync");
            disk.sync_dir().expect("sync dir");
            a.write_at(0, &[1u8; 100]).expect("write");
            disk.crash(true);
            let bytes = disk.file_bytes("a").expect("a exists");
            assert_eq!(bytes.len(), 100);
            let ones = bytes.iter().take_while(|b| **b == 1).count();
            assert!(
                bytes[ones..].iter().all(|b| *b == 0),
                "not a prefix: {bytes:?}"
            );
        }
    }

    #[test]
    fn faults_fire_and_quota_refuses() {
        let disk = SimDisk::new(4);
        let a = disk.open("a", OpenMode::CreateIfMissing).expect("create");
        disk.fail_next_write();
        assert!(a.write_at(0, b"x").is_err());
        assert_eq!(a.len().expect("len"), 0, "a failed write writes nothing");
        disk.fail_next_sync();
        assert!(a.sync().is_err());
        disk.set_faults(SimFaults {
            quota_bytes: Some(10),
            ..SimFaults::default()
        });
        a.write_at(0, &[7; 10]).expect("fits");
        let full = a.write_at(10, b"y").expect_err("over quota");
        assert_eq!(full.kind(), io::ErrorKind::StorageFull);
        disk.flip_bit("a", 3).expect("flip");
        assert_eq!(disk.file_bytes("a").expect("a")[0], 7 ^ 8);
    }

    #[test]
    fn same_seed_same_faults() {
        let run = |seed| {
            let disk = SimDisk::new(seed);
            disk.set_faults(SimFaults {
                write_error: Ratio::new(1, 3),
                ..SimFaults::default()
            });
            let a = disk.open("a", OpenMode::CreateIfMissing).expect("create");
            (0..64)
                .map(|i| a.write_at(i, b"z").is_ok())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert!(run(9).contains(&false));
    }
}
