//! A simulated disk for tests and the simulator: deterministic, in memory, and faulty on demand.
//!
//! It models what a power loss does to a POSIX file system: each file keeps the bytes that
//! reached stable storage (made durable by [`DiskFile::sync`]) apart from the bytes written
//! since, and the folder keeps its durable names (made durable by [`Disk::sync_dir`]) apart
//! from the current ones. [`SimDisk::crash`] throws away everything not durable, optionally
//! tearing the last unsynced write of each file at a seeded point, and invalidates every open
//! handle so the process that "died" cannot keep writing. Faults are drawn from a seeded
//! generator (never a global RNG), so a seed replays the same run bit for bit.
//!
//! It fails the way Linux does, not more kindly:
//! - a failed file sync reports its error **once**; the pages it failed to write stay
//!   readable (the page cache still holds them) until the next crash, but they are marked
//!   clean, so no later sync makes them durable unless they are written again;
//! - chosen ranges of a file can be unreadable (a bad sector: `EIO` on every read that
//!   touches them, until the range is written again);
//! - a full disk is counted in allocated pages, so a sparse `set_len` fills nothing and the
//!   write that needs a page fails with `StorageFull`, writing nothing;
//! - a power loss can be armed to strike after a number of further disk operations
//!   ([`SimDisk::crash_after_operations`]), that is inside a store operation or inside
//!   recovery; the disk then refuses everything until [`SimDisk::power_on`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::{check_file_name, Disk, DiskFile, OpenMode};

/// How many bytes of the last unsynced write of a file are remembered for tearing it at a
/// crash. Longer writes tear within this prefix, which is where a tear can land anyway.
const TEAR_PREFIX_MAX_BYTES: usize = 64 * 1024;

/// The unit of copy-on-write between a file's current and durable bytes. A sync shares every
/// page; the next write copies only the pages it touches, so a database file synced after
/// each small commit is not copied whole each time. The database's own page size, and far
/// below the allocator's mmap threshold, so freed pages are reused instead of faulted in.
const PAGE_BYTES: usize = 16 * 1024;

/// A pool bucket holds the pages whose sampled bytes agree; past this many, a new look-alike
/// is not pooled, so a lookup stays bounded whatever the content.
const POOL_BUCKET_MAX: usize = 4;

/// After this many pages added to a pool, it forgets the pages no file holds any more (a
/// forgotten page's memory is only returned once the pool lets go of it).
const POOL_SWEEP_EVERY: usize = 4096;

/// What a page never written holds.
static ZERO_PAGE: [u8; PAGE_BYTES] = [0; PAGE_BYTES];

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
    /// Total bytes the files' allocated pages may take; a write that needs a page more fails
    /// as a full disk (and writes nothing).
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
    /// File syncs that failed and left pages that will never be durable unless rewritten.
    pub failed_syncs: u64,
    /// Reads refused because they touched an unreadable range.
    pub read_errors: u64,
    /// Power losses struck inside an operation ([`SimDisk::crash_after_operations`]).
    pub crashes_inside_operations: u64,
    /// Listings of the whole folder (work that grows with the folder's size).
    pub folder_lists: u64,
    /// Writes refused because the disk was full.
    pub full_disk_refusals: u64,
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
    /// Ordered, so a crash draws its tear points in the same order in every run.
    inodes: BTreeMap<u64, Inode>,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    /// Changes to `names` since the last directory sync, in order: what a sync makes durable
    /// (cheaper than copying the whole folder at each of the store's many syncs).
    unsynced_name_changes: Vec<(String, Option<u64>)>,
    faults: SimFaults,
    fail_next_write: bool,
    fail_next_sync: bool,
    /// An armed power loss: after this many more disk operations, with or without tearing.
    crash_after: Option<(u64, bool)>,
    /// Set by an armed power loss: every operation fails until [`SimDisk::power_on`], as
    /// the process that was running is gone.
    halted: bool,
    stats: SimDiskStats,
    /// The files whose last unsynced write a crash tore, in order, over the disk's life.
    torn_files: Vec<String>,
    page_pool: Arc<PagePool>,
}

/// Which of a disk's two views of its folder a name change applies to.
#[derive(Clone, Copy)]
enum Folder {
    /// What the running process sees.
    Current,
    /// What survives a power loss.
    Durable,
}

#[derive(Default)]
struct Inode {
    /// The bytes as the process sees them. Shares its pages with `durable` until a write
    /// after a sync copies the pages it touches: a sync makes every byte durable, so it only
    /// shares them.
    current: Pages,
    durable: Pages,
    /// The offset and first bytes of the last write since the last sync.
    last_unsynced_write: Option<(u64, Vec<u8>)>,
    open_handles: u64,
    /// How many current and durable names point here; with no handles and no names the
    /// inode is gone.
    links: u64,
    durable_links: u64,
    /// Pages whose writeback failed at a sync: clean in the page cache (readable), never
    /// durable unless written again. Forgotten at a crash, which drops the cache.
    failed_pages: std::collections::BTreeSet<usize>,
    /// Unreadable byte ranges `[start, end)` of the medium (bad sectors); writing over a
    /// range repairs it (the drive remaps the sector).
    bad_ranges: Vec<(u64, u64)>,
}

/// Whole pages of equal content, shared between the disks of one simulated world: both
/// appliances of a pair hold the same recordings, and the second copy then costs neither
/// memory nor a copy. A shared page is never written in place (a write copies it first), so
/// sharing is invisible to the files; which pages end up shared depends only on content.
#[derive(Default)]
pub struct PagePool {
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    buckets: HashMap<u64, Vec<Weak<[u8]>>>,
    added_since_sweep: usize,
}

impl PagePool {
    /// A pool for the disks of one world.
    pub fn new() -> Arc<PagePool> {
        Arc::new(PagePool::default())
    }

    /// A page holding `bytes` (exactly `PAGE_BYTES`): an equal one already in use, or a new one.
    fn page(&self, bytes: &[u8]) -> Arc<[u8]> {
        let mut pool = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = pool.buckets.entry(sample_key(bytes)).or_default();
        bucket.retain(|page| page.strong_count() > 0);
        if let Some(page) = bucket
            .iter()
            .filter_map(Weak::upgrade)
            .find(|page| **page == *bytes)
        {
            return page;
        }
        let page: Arc<[u8]> = Arc::from(bytes);
        if bucket.len() < POOL_BUCKET_MAX {
            bucket.push(Arc::downgrade(&page));
            pool.added_since_sweep += 1;
            if pool.added_since_sweep >= POOL_SWEEP_EVERY {
                pool.added_since_sweep = 0;
                pool.buckets.retain(|_, bucket| {
                    bucket.retain(|page| page.strong_count() > 0);
                    !bucket.is_empty()
                });
            }
        }
        page
    }
}

/// A cheap key for a page: a mix of a few of its words (start, middle, end). Equal pages get
/// equal keys; the pool compares whole pages before sharing one.
fn sample_key(bytes: &[u8]) -> u64 {
    let word = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    };
    let last = bytes.len() - 8;
    [0, 8, bytes.len() / 2, last - 8, last]
        .into_iter()
        .fold(0x9e37_79b9_7f4a_7c15u64, |key, at| {
            (key ^ word(at))
                .wrapping_mul(0xbf58_476d_1ce4_e5b9)
                .rotate_left(29)
        })
}

/// A file's bytes as shared fixed-size pages; a page never written reads as zeros and holds
/// no memory.
#[derive(Clone, Default)]
struct Pages {
    len: u64,
    /// `ceil(len / PAGE_BYTES)` entries, each page exactly `PAGE_BYTES` long.
    pages: Vec<Option<Arc<[u8]>>>,
    /// How many entries of `pages` hold a page: what the file takes on the disk.
    allocated: u64,
}

impl Pages {
    fn len(&self) -> u64 {
        debug_assert_eq!(
            self.allocated,
            self.pages.iter().filter(|page| page.is_some()).count() as u64,
            "the allocated-page count follows the pages"
        );
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `out.len()` bytes from `offset`; the caller checked the range.
    fn read(&self, offset: u64, out: &mut [u8]) {
        let mut position = offset as usize;
        let mut filled = 0;
        while filled < out.len() {
            let within = position % PAGE_BYTES;
            let take = (PAGE_BYTES - within).min(out.len() - filled);
            let target = &mut out[filled..filled + take];
            match &self.pages[position / PAGE_BYTES] {
                Some(page) => target.copy_from_slice(&page[within..within + take]),
                None => target.fill(0),
            }
            position += take;
            filled += take;
        }
    }

    /// Writes `data` at `offset`, growing the file (with zeros in any gap) as needed. Whole
    /// pages come from `pool` when given.
    fn write(&mut self, offset: u64, data: &[u8], pool: Option<&PagePool>) {
        let end = offset + data.len() as u64;
        if end > self.len {
            self.set_len(end);
        }
        let mut position = offset as usize;
        let mut written = 0;
        while written < data.len() {
            let within = position % PAGE_BYTES;
            let take = (PAGE_BYTES - within).min(data.len() - written);
            let source = &data[written..written + take];
            let slot = &mut self.pages[position / PAGE_BYTES];
            if slot.is_none() {
                self.allocated += 1;
            }
            if take == PAGE_BYTES {
                // A whole page: no need to zero it or to copy the old one first.
                *slot = Some(match pool {
                    Some(pool) => pool.page(source),
                    None => Arc::from(source),
                });
            } else {
                let page = slot.get_or_insert_with(|| Arc::from(&ZERO_PAGE[..]));
                Arc::make_mut(page)[within..within + take].copy_from_slice(source);
            }
            position += take;
            written += take;
        }
    }

    /// Truncates or extends with zeros.
    fn set_len(&mut self, len: u64) {
        let page_count = (len as usize).div_ceil(PAGE_BYTES);
        if len < self.len {
            let freed = self.pages[page_count.min(self.pages.len())..]
                .iter()
                .filter(|page| page.is_some())
                .count() as u64;
            self.allocated -= freed;
            self.pages.truncate(page_count);
            // Bytes past the new end must read as zeros if the file grows again.
            let tail = len as usize % PAGE_BYTES;
            if tail != 0 {
                if let Some(Some(page)) = self.pages.last_mut() {
                    Arc::make_mut(page)[tail..].fill(0);
                }
            }
        } else {
            self.pages.resize(page_count, None);
        }
        self.len = len;
    }

    /// Flips bits of the byte at `index` (< len), in place.
    fn flip(&mut self, index: usize, mask: u8) {
        if self.pages[index / PAGE_BYTES].is_none() {
            self.allocated += 1;
        }
        let page = self.pages[index / PAGE_BYTES].get_or_insert_with(|| Arc::from(&ZERO_PAGE[..]));
        Arc::make_mut(page)[index % PAGE_BYTES] ^= mask;
    }

    /// Whether page `page_index` of both is the same memory (or absent in both).
    fn shares_page(&self, other: &Pages, page_index: usize) -> bool {
        match (self.pages.get(page_index), other.pages.get(page_index)) {
            (Some(Some(a)), Some(Some(b))) => Arc::ptr_eq(a, b),
            (Some(None), Some(None)) => true,
            _ => false,
        }
    }

    /// Each stretch of bytes in order, without copying (absent pages as zeros).
    fn visit(&self, mut visit: impl FnMut(&[u8])) {
        let mut remaining = self.len as usize;
        for page in &self.pages {
            let take = remaining.min(PAGE_BYTES);
            match page {
                Some(page) => visit(&page[..take]),
                None => visit(&ZERO_PAGE[..take]),
            }
            remaining -= take;
        }
    }

    /// Puts `page` in slot `index` (if the file reaches it), keeping the allocated count.
    fn replace_page(&mut self, index: usize, page: Option<Arc<[u8]>>) {
        if let Some(slot) = self.pages.get_mut(index) {
            match (slot.is_some(), page.is_some()) {
                (true, false) => self.allocated -= 1,
                (false, true) => self.allocated += 1,
                _ => {}
            }
            *slot = page;
        }
    }

    /// Pages that differ from `other`'s (by identity: a sync shares them, a write copies).
    fn pages_differing_from(&self, other: &Pages) -> Vec<usize> {
        (0..self.pages.len())
            .filter(|index| !self.shares_page(other, *index))
            .collect()
    }

    fn to_vec(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.len as usize);
        self.visit(|stretch| bytes.extend_from_slice(stretch));
        bytes
    }
}

impl SimDisk {
    /// An empty disk whose random choices (faults, tear points) all come from `seed`.
    pub fn new(seed: u64) -> Arc<SimDisk> {
        SimDisk::sharing_pages(seed, PagePool::new())
    }

    /// An empty disk, as [`SimDisk::new`], that shares equal pages with the other disks of
    /// `pool` (the appliances of one world).
    pub fn sharing_pages(seed: u64, pool: Arc<PagePool>) -> Arc<SimDisk> {
        Arc::new(SimDisk {
            state: Arc::new(Mutex::new(SimState {
                rng_state: seed,
                generation: 0,
                next_inode: 0,
                inodes: BTreeMap::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                unsynced_name_changes: Vec::new(),
                faults: SimFaults::default(),
                fail_next_write: false,
                fail_next_sync: false,
                crash_after: None,
                halted: false,
                stats: SimDiskStats::default(),
                torn_files: Vec::new(),
                page_pool: pool,
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

    /// Whether file `name` has an unreadable range (a bad sector not yet written over).
    pub fn has_unreadable_ranges(&self, name: &str) -> bool {
        let state = self.lock();
        state.names.get(name).is_some_and(|id| {
            let inode = &state.inodes[id];
            let len = inode.current.len();
            inode.bad_ranges.iter().any(|(start, _)| *start < len)
        })
    }

    /// Simulated power loss: every write, create, rename and remove that was not made durable
    /// is lost; with `tear`, the last unsynced write of each file survives in part (a prefix of
    /// seeded length). Every handle opened before the crash fails from now on.
    pub fn crash(&self, tear: bool) {
        self.lock().crash(tear);
    }

    /// Arms a power loss that strikes after `operations` more disk operations (writes,
    /// syncs, renames, removals, creations, length changes; 0: the next one), tearing like
    /// [`SimDisk::crash`] with `tear`. The operation it strikes fails, and so does every
    /// later one until [`SimDisk::power_on`]: the process is gone mid-operation.
    pub fn crash_after_operations(&self, operations: u64, tear: bool) {
        self.lock().crash_after = Some((operations, tear));
    }

    /// Disarms a power loss armed by [`SimDisk::crash_after_operations`] that has not struck.
    pub fn disarm_crash(&self) {
        self.lock().crash_after = None;
    }

    /// Whether an armed power loss struck and the disk waits for [`SimDisk::power_on`].
    pub fn is_halted(&self) -> bool {
        self.lock().halted
    }

    /// Powers the disk on again after an armed power loss struck.
    pub fn power_on(&self) {
        self.lock().halted = false;
    }

    /// Makes `len` bytes from `offset` of file `name` unreadable (a bad sector): every read
    /// that touches them fails with an I/O error until they are written again.
    pub fn fail_reads(&self, name: &str, offset: u64, len: u64) -> io::Result<()> {
        let mut state = self.lock();
        let id = *state.names.get(name).ok_or_else(|| not_found(name))?;
        let inode = state
            .inodes
            .get_mut(&id)
            .expect("every name points at a live inode");
        inode.bad_ranges.push((offset, offset.saturating_add(len)));
        Ok(())
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
        if byte as u64 >= inode.current.len() {
            return Err(past_end());
        }
        let page_index = byte / PAGE_BYTES;
        // A byte past the durable end stays out of the durable bytes even on a shared page.
        let shared = (byte as u64) < inode.durable.len()
            && inode.current.shares_page(&inode.durable, page_index);
        inode.current.flip(byte, mask);
        if shared {
            if inode.durable.pages[page_index].is_none() {
                inode.durable.allocated += 1;
            }
            inode.durable.pages[page_index] = inode.current.pages[page_index].clone();
        } else if (byte as u64) < inode.durable.len() {
            inode.durable.flip(byte, mask);
        }
        Ok(())
    }

    /// The current bytes of file `name`, for checks in tests.
    pub fn file_bytes(&self, name: &str) -> Option<Vec<u8>> {
        let state = self.lock();
        let id = state.names.get(name)?;
        Some(state.inodes[id].current.to_vec())
    }

    /// Runs `visit` over the current bytes of file `name`, stretch by stretch in order,
    /// without copying them (checkers that hash whole files). `None` if there is no such file.
    pub fn visit_file_bytes(&self, name: &str, visit: impl FnMut(&[u8])) -> Option<()> {
        let state = self.lock();
        let id = state.names.get(name)?;
        state.inodes[id].current.visit(visit);
        Some(())
    }

    /// The BLAKE3 hash of file `name`'s current bytes, if it exists (checkers that verify
    /// whole recordings straight off the medium).
    pub fn file_hash(&self, name: &str) -> Option<[u8; 32]> {
        let mut hasher = blake3::Hasher::new();
        self.visit_file_bytes(name, |stretch| {
            hasher.update(stretch);
        })?;
        Some(*hasher.finalize().as_bytes())
    }

    /// The current length of file `name`, if it exists.
    pub fn file_len(&self, name: &str) -> Option<u64> {
        let state = self.lock();
        let id = state.names.get(name)?;
        Some(state.inodes[id].current.len())
    }

    /// Overwrites file `name` with `bytes`, durably, as if written by another program.
    pub fn put_file(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        check_file_name(name)?;
        let mut state = self.lock();
        let id = state.name_or_create(name);
        let inode = state.inodes.get_mut(&id).expect("name_or_create made it");
        inode.current = Pages::default();
        inode.current.write(0, bytes, None);
        inode.durable = inode.current.clone();
        inode.last_unsynced_write = None;
        state.set_durable_name(name, Some(id));
        Ok(())
    }

    /// The files whose last unsynced write a crash tore, in order, over the disk's life.
    pub fn torn_files(&self) -> Vec<String> {
        self.lock().torn_files.clone()
    }

    /// Counters so far.
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

fn powered_off() -> io::Error {
    io::Error::other("simulated power loss: the disk is off until the appliance restarts")
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("simulated {what} error"))
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

    fn crash(&mut self, tear: bool) {
        let state = self;
        state.generation += 1;
        state.stats.crashes += 1;
        state.names = state.durable_names.clone();
        state.unsynced_name_changes.clear();
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
            inode.current = inode.durable.clone();
            inode.open_handles = 0;
            inode.links = inode.durable_links;
            if let (Some(point), Some((offset, prefix))) = (point, inode.last_unsynced_write.take())
            {
                let keep = (point % (prefix.len() as u64 + 1)) as usize;
                inode.current.write(offset, &prefix[..keep], None);
                inode.durable = inode.current.clone();
                torn.push(id);
            }
            inode.last_unsynced_write = None;
            inode.failed_pages.clear();
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
        state
            .inodes
            .retain(|_, inode| inode.links > 0 || inode.durable_links > 0);
    }

    /// Counts one disk operation against an armed power loss, and refuses every operation
    /// once it struck (or while the disk waits to be powered on).
    fn operation(&mut self) -> io::Result<()> {
        if self.halted {
            return Err(powered_off());
        }
        if let Some((left, tear)) = self.crash_after {
            if left == 0 {
                self.crash_after = None;
                self.crash(tear);
                self.halted = true;
                self.stats.crashes_inside_operations += 1;
                return Err(powered_off());
            }
            self.crash_after = Some((left - 1, tear));
        }
        Ok(())
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

    /// Bytes the live files' allocated pages take (an unlinked file still open counts, as
    /// on a real file system).
    fn used_bytes(&self) -> u64 {
        self.inodes
            .values()
            .filter(|inode| inode.links > 0 || inode.open_handles > 0)
            .map(|inode| inode.current.allocated * PAGE_BYTES as u64)
            .sum()
    }

    fn name_or_create(&mut self, name: &str) -> u64 {
        if let Some(id) = self.names.get(name) {
            return *id;
        }
        let id = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(id, Inode::default());
        self.set_name(name, Some(id));
        id
    }

    /// Points `name` at `inode` in the current folder (or removes it), to be made durable by
    /// the next directory sync. Returns whether the name existed.
    fn set_name(&mut self, name: &str, inode: Option<u64>) -> bool {
        self.unsynced_name_changes.push((name.to_string(), inode));
        self.relink(Folder::Current, name, inode)
    }

    /// The durable counterpart of [`SimState::set_name`].
    fn set_durable_name(&mut self, name: &str, inode: Option<u64>) {
        self.relink(Folder::Durable, name, inode);
    }

    /// Points `name` in `folder` at `inode` (or removes it), keeping the link counts and
    /// forgetting an inode that lost its last reference. Returns whether the name existed.
    fn relink(&mut self, folder: Folder, name: &str, inode: Option<u64>) -> bool {
        let names = match folder {
            Folder::Current => &mut self.names,
            Folder::Durable => &mut self.durable_names,
        };
        let previous = match inode {
            Some(id) => names.insert(name.to_string(), id),
            None => names.remove(name),
        };
        fn links(inode: &mut Inode, folder: Folder) -> &mut u64 {
            match folder {
                Folder::Current => &mut inode.links,
                Folder::Durable => &mut inode.durable_links,
            }
        }
        if let Some(target) = inode.and_then(|id| self.inodes.get_mut(&id)) {
            *links(target, folder) += 1;
        }
        if let Some(old) = previous {
            if let Some(target) = self.inodes.get_mut(&old) {
                *links(target, folder) -= 1;
            }
            self.collect(old);
        }
        previous.is_some()
    }

    /// Forgets inode `id` once nothing refers to it: no handle, no name, no durable name.
    fn collect(&mut self, id: u64) {
        if self.inodes.get(&id).is_some_and(|inode| {
            inode.open_handles == 0 && inode.links == 0 && inode.durable_links == 0
        }) {
            self.inodes.remove(&id);
        }
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
        state.operation()?;
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
            inode.current = Pages::default();
            inode.last_unsynced_write = None;
            inode.failed_pages.clear();
            inode.bad_ranges.clear();
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
        state.operation()?;
        let id = *state.names.get(from).ok_or_else(|| not_found(from))?;
        if from == to {
            return Ok(());
        }
        // Link the new name first so the inode is never without one.
        state.set_name(to, Some(id));
        state.set_name(from, None);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        check_file_name(name)?;
        let mut state = self.lock();
        state.operation()?;
        if !state.names.contains_key(name) {
            return Err(not_found(name));
        }
        state.set_name(name, None);
        Ok(())
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut state = self.lock();
        state.operation()?;
        state.stats.folder_lists += 1;
        Ok(state.names.keys().cloned().collect())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut state = self.lock();
        state.operation()?;
        let sync_dir_error = state.faults.sync_dir_error;
        if std::mem::take(&mut state.fail_next_sync) || state.fires(sync_dir_error) {
            return Err(injected("directory sync"));
        }
        state.stats.dir_syncs += 1;
        for (name, inode) in std::mem::take(&mut state.unsynced_name_changes) {
            state.set_durable_name(&name, inode);
        }
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
        state.collect(self.inode);
    }
}

impl DiskFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        let mut state = lock_state(&self.state);
        if state.halted {
            return Err(powered_off());
        }
        Ok(state.live_inode(self.generation, self.inode)?.current.len())
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let mut state = lock_state(&self.state);
        state.operation()?;
        let inode = state.live_inode(self.generation, self.inode)?;
        let end = offset.checked_add(out.len() as u64).ok_or_else(past_end)?;
        if end > inode.current.len() {
            return Err(past_end());
        }
        if inode
            .bad_ranges
            .iter()
            .any(|(start, stop)| offset < *stop && *start < end)
        {
            state.stats.read_errors += 1;
            state.stats.faults_injected += 1;
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        inode.current.read(offset, out);
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = lock_state(&self.state);
        state.operation()?;
        state.live_inode(self.generation, self.inode)?;
        let write_error = state.faults.write_error;
        if std::mem::take(&mut state.fail_next_write) || state.fires(write_error) {
            return Err(injected("write"));
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset overflow"))?;
        if let Some(quota) = state.faults.quota_bytes {
            let pages = &state.inodes[&self.inode].current.pages;
            let first_page = (offset as usize) / PAGE_BYTES;
            let last_page = (end as usize).div_ceil(PAGE_BYTES);
            let growth = (first_page..last_page)
                .filter(|page| pages.get(*page).is_none_or(|slot| slot.is_none()))
                .count() as u64
                * PAGE_BYTES as u64;
            if growth > 0 && state.used_bytes() + growth > quota {
                state.stats.faults_injected += 1;
                state.stats.full_disk_refusals += 1;
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "simulated disk is full",
                ));
            }
        }
        state.stats.bytes_written += data.len() as u64;
        let pool = Arc::clone(&state.page_pool);
        let inode = state.live_inode(self.generation, self.inode)?;
        inode.current.write(offset, data, Some(&pool));
        // Written pages are dirty again (a later sync can make them durable), and a written
        // range is readable again (the drive remaps a bad sector on write).
        let first_page = (offset as usize) / PAGE_BYTES;
        let last_page = (end as usize).div_ceil(PAGE_BYTES);
        inode
            .failed_pages
            .retain(|page| !(first_page..last_page).contains(page));
        inode.bad_ranges = std::mem::take(&mut inode.bad_ranges)
            .into_iter()
            .flat_map(|(start, stop)| {
                // What the write did not cover stays unreadable.
                let before = (start < offset).then_some((start, stop.min(offset)));
                let after = (stop > end).then_some((start.max(end), stop));
                before.into_iter().chain(after)
            })
            .filter(|(start, stop)| start < stop)
            .collect();
        let prefix_len = data.len().min(TEAR_PREFIX_MAX_BYTES);
        inode.last_unsynced_write = Some((offset, data[..prefix_len].to_vec()));
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = lock_state(&self.state);
        state.operation()?;
        // Extending is sparse: it allocates nothing, so it never fills the disk.
        state.live_inode(self.generation, self.inode)?;
        usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
        let inode = state.live_inode(self.generation, self.inode)?;
        inode.current.set_len(len);
        let pages = (len as usize).div_ceil(PAGE_BYTES);
        inode.failed_pages.retain(|page| *page < pages);
        Ok(())
    }

    /// Linux drops clean pages on this advice, and the pages of a failed writeback are clean:
    /// their cached content goes, and reads see what the medium holds.
    fn drop_cached(&self) {
        let mut state = lock_state(&self.state);
        let Ok(inode) = state.live_inode(self.generation, self.inode) else {
            return;
        };
        for page in std::mem::take(&mut inode.failed_pages) {
            let medium = inode.durable.pages.get(page).cloned().flatten();
            inode.current.replace_page(page, medium);
        }
    }

    fn sync(&self) -> io::Result<()> {
        let mut state = lock_state(&self.state);
        state.operation()?;
        state.live_inode(self.generation, self.inode)?;
        let sync_error = state.faults.sync_error;
        if std::mem::take(&mut state.fail_next_sync) || state.fires(sync_error) {
            // Linux: the writeback of every dirty page failed; the error is reported now,
            // once, and the pages are marked clean (still readable from the cache, never
            // written unless written again).
            state.stats.failed_syncs += 1;
            let inode = state.live_inode(self.generation, self.inode)?;
            let dirty = inode.current.pages_differing_from(&inode.durable);
            inode.failed_pages.extend(dirty);
            inode.last_unsynced_write = None;
            return Err(injected("fsync"));
        }
        state.stats.file_syncs += 1;
        let inode = state.live_inode(self.generation, self.inode)?;
        let mut durable = inode.current.clone();
        for page in &inode.failed_pages {
            // What the medium holds there: the last durable content, or nothing.
            let medium = inode.durable.pages.get(*page).cloned().flatten();
            durable.replace_page(*page, medium);
        }
        inode.durable = durable;
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
            quota_bytes: Some(PAGE_BYTES as u64),
            ..SimFaults::default()
        });
        a.write_at(0, &[7; 10]).expect("fits");
        a.write_at(10, &[7; PAGE_BYTES - 10])
            .expect("fits in the same page");
        let full = a.write_at(PAGE_BYTES as u64, b"y").expect_err("over quota");
        assert_eq!(full.kind(), io::ErrorKind::StorageFull);
        assert_eq!(a.len().expect("len"), PAGE_BYTES as u64, "nothing written");
        disk.flip_bit("a", 3).expect("flip");
        assert_eq!(disk.file_bytes("a").expect("a")[0], 7 ^ 8);
    }

    #[test]
    fn a_full_disk_counts_allocated_pages_not_lengths() {
        let disk = SimDisk::new(5);
        disk.set_faults(SimFaults {
            quota_bytes: Some(2 * PAGE_BYTES as u64),
            ..SimFaults::default()
        });
        let a = disk.open("a", OpenMode::CreateIfMissing).expect("create");
        a.set_len(1 << 30).expect("a sparse file fills nothing");
        a.write_at(0, b"x").expect("one page");
        a.write_at(5 * PAGE_BYTES as u64, b"y")
            .expect("a second page");
        let full = a
            .write_at(9 * PAGE_BYTES as u64, b"z")
            .expect_err("a third");
        assert_eq!(full.kind(), io::ErrorKind::StorageFull);
        a.write_at(1, b"same page")
            .expect("rewriting an allocated page");
        a.set_len(PAGE_BYTES as u64).expect("truncate frees a page");
        a.write_at(3 * PAGE_BYTES as u64, b"z").expect("room again");
    }

    /// Linux reports a failed writeback once and marks the pages clean: the next sync
    /// succeeds without writing them, the process still reads its own bytes, and a crash
    /// shows what the medium holds. Writing the pages again makes them durable.
    #[test]
    fn a_failed_sync_reports_once_and_its_pages_never_become_durable() {
        let disk = SimDisk::new(6);
        let a = disk.open("a", OpenMode::CreateIfMissing).expect("create");
        a.write_at(0, &[1; 2 * PAGE_BYTES]).expect("write");
        a.sync().expect("sync");
        disk.sync_dir().expect("sync dir");
        a.write_at(0, &[2; PAGE_BYTES]).expect("write page 0");
        disk.fail_next_sync();
        assert!(a.sync().is_err(), "the error is reported");
        a.write_at(PAGE_BYTES as u64, &[3; PAGE_BYTES])
            .expect("write page 1");
        a.sync().expect("reported once: the next sync succeeds");
        assert_eq!(
            a.read_vec_at(0, 1).expect("read"),
            vec![2],
            "the cache holds it"
        );
        let b = disk.open("b", OpenMode::CreateIfMissing).expect("b");
        b.write_at(0, &[4; PAGE_BYTES]).expect("write b");
        b.sync().expect("other files sync normally");
        disk.crash(false);
        let bytes = disk.file_bytes("a").expect("a");
        assert_eq!(bytes[0], 1, "the failed page never reached the medium");
        assert_eq!(bytes[PAGE_BYTES], 3, "the page written after it did");
        let a = disk.open("a", OpenMode::Existing).expect("reopen");
        a.write_at(0, &[5; PAGE_BYTES]).expect("rewrite");
        a.sync().expect("sync");
        disk.crash(false);
        assert_eq!(
            disk.file_bytes("a").expect("a")[0],
            5,
            "rewritten, it is durable"
        );
        assert_eq!(disk.stats().failed_syncs, 1);
        // Dropping the cache after a failed sync shows the medium without a crash.
        let a = disk.open("a", OpenMode::Existing).expect("reopen");
        a.write_at(0, &[6; PAGE_BYTES]).expect("write");
        disk.fail_next_sync();
        assert!(a.sync().is_err());
        assert_eq!(a.read_vec_at(0, 1).expect("read"), vec![6]);
        a.drop_cached();
        assert_eq!(
            a.read_vec_at(0, 1).expect("read"),
            vec![5],
            "the medium's bytes"
        );
    }

    #[test]
    fn unreadable_ranges_fail_reads_until_written_again() {
        let disk = SimDisk::new(7);
        let a = disk.open("a", OpenMode::CreateIfMissing).expect("create");
        a.write_at(0, &[1; 3000]).expect("write");
        disk.fail_reads("a", 1000, 512).expect("bad sector");
        assert!(a.read_vec_at(0, 1000).is_ok(), "before the range");
        assert!(a.read_vec_at(1512, 100).is_ok(), "after the range");
        let error = a.read_vec_at(900, 200).expect_err("touches the range");
        assert_eq!(error.raw_os_error(), Some(5));
        a.write_at(1000, &[2; 256]).expect("rewrite half the range");
        assert_eq!(a.read_vec_at(1000, 256).expect("readable"), vec![2; 256]);
        assert!(a.read_vec_at(1256, 1).is_err(), "the rest is still bad");
        a.write_at(1200, &[3; 400]).expect("rewrite the rest");
        assert!(a.read_vec_at(0, 3000).is_ok(), "all readable again");
        assert_eq!(disk.stats().read_errors, 2);
    }

    #[test]
    fn an_armed_power_loss_strikes_inside_an_operation_and_halts_the_disk() {
        let disk = SimDisk::new(8);
        let a = disk.open("a", OpenMode::CreateIfMissing).expect("create");
        a.write_at(0, b"durable").expect("write");
        a.sync().expect("sync");
        disk.sync_dir().expect("sync dir");
        disk.crash_after_operations(1, false);
        a.write_at(0, b"LOST").expect("one operation left");
        assert!(a.sync().is_err(), "the power loss strikes the sync");
        assert!(disk.is_halted());
        assert!(
            disk.open("a", OpenMode::Existing).is_err(),
            "off until powered on"
        );
        disk.power_on();
        assert_eq!(disk.file_bytes("a").expect("a"), b"durable");
        assert!(disk.open("a", OpenMode::Existing).is_ok());
        assert_eq!(disk.stats().crashes_inside_operations, 1);
    }

    /// The paged file against a plain byte vector: any mix of writes (across page borders,
    /// past the end), truncations, extensions, syncs, crashes and bit flips reads the same.
    mod pages_model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Op {
            Write { offset: u64, len: usize, byte: u8 },
            SetLen(u64),
            Sync,
            Crash,
            Flip(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            let span = 3 * PAGE_BYTES as u64;
            prop_oneof![
                4 => (0..span, 0..2 * PAGE_BYTES, any::<u8>())
                    .prop_map(|(offset, len, byte)| Op::Write { offset, len, byte }),
                1 => (0..span).prop_map(Op::SetLen),
                1 => Just(Op::Sync),
                1 => Just(Op::Crash),
                1 => (0..span * 8).prop_map(Op::Flip),
            ]
        }

        proptest! {
            #[test]
            fn reads_like_a_vector(ops in proptest::collection::vec(op(), 1..40)) {
                let disk = SimDisk::new(7);
                let mut file = disk.open("f", OpenMode::CreateIfMissing).expect("create");
                disk.sync_dir().expect("sync dir");
                let mut current: Vec<u8> = Vec::new();
                let mut durable: Vec<u8> = Vec::new();
                for op in ops {
                    match op {
                        Op::Write { offset, len, byte } => {
                            let data = vec![byte; len];
                            file.write_at(offset, &data).expect("write");
                            let end = offset as usize + len;
                            if current.len() < end {
                                current.resize(end, 0);
                            }
                            current[offset as usize..end].copy_from_slice(&data);
                        }
                        Op::SetLen(len) => {
                            file.set_len(len).expect("set_len");
                            current.resize(len as usize, 0);
                        }
                        Op::Sync => {
                            file.sync().expect("sync");
                            durable = current.clone();
                        }
                        Op::Crash => {
                            disk.crash(false);
                            file = disk.open("f", OpenMode::Existing).expect("reopen");
                            current = durable.clone();
                        }
                        Op::Flip(bit) => {
                            let flipped = disk.flip_bit("f", bit);
                            let byte = (bit / 8) as usize;
                            prop_assert_eq!(flipped.is_ok(), byte < current.len());
                            if byte < current.len() {
                                current[byte] ^= 1 << (bit % 8);
                                if byte < durable.len() {
                                    durable[byte] ^= 1 << (bit % 8);
                                }
                            }
                        }
                    }
                    prop_assert_eq!(file.len().expect("len"), current.len() as u64);
                    prop_assert_eq!(disk.file_bytes("f").expect("exists"), current.clone());
                    let mut read_back = vec![0xAA; current.len()];
                    file.read_at(0, &mut read_back).expect("read");
                    prop_assert_eq!(&read_back, &current);
                }
                let mut visited = Vec::new();
                disk.visit_file_bytes("f", |stretch| visited.extend_from_slice(stretch));
                prop_assert_eq!(visited, current);
            }
        }
    }

    #[test]
    fn disks_sharing_pages_never_see_each_others_writes() {
        let pool = PagePool::new();
        let a = SimDisk::sharing_pages(1, Arc::clone(&pool));
        let b = SimDisk::sharing_pages(2, Arc::clone(&pool));
        let content: Vec<u8> = (0..3 * PAGE_BYTES).map(|i| (i * 7 % 251) as u8).collect();
        let file_a = a.open("f", OpenMode::CreateIfMissing).expect("create");
        let file_b = b.open("f", OpenMode::CreateIfMissing).expect("create");
        file_a.write_at(0, &content).expect("write");
        file_b.write_at(0, &content).expect("write");
        {
            let state_a = a.lock();
            let state_b = b.lock();
            let page = |state: &SimState| {
                state
                    .inodes
                    .values()
                    .next()
                    .expect("one file")
                    .current
                    .pages[1]
                    .clone()
            };
            let (page_a, page_b) = (page(&state_a), page(&state_b));
            assert!(
                Arc::ptr_eq(&page_a.expect("written"), &page_b.expect("written")),
                "equal whole pages are stored once"
            );
        }
        b.flip_bit("f", 8 * PAGE_BYTES as u64 + 3).expect("flip");
        file_b.write_at(10, b"only b").expect("write");
        file_b.sync().expect("sync");
        b.crash(true);
        assert_eq!(a.file_bytes("f").expect("a's file"), content);
        let mut expected_b = content.clone();
        expected_b[PAGE_BYTES] ^= 1 << 3;
        expected_b[10..16].copy_from_slice(b"only b");
        b.sync_dir().expect("nothing to sync");
        assert_eq!(b.file_bytes("f"), None, "never named durably");
        let file_b = b
            .open("f", OpenMode::CreateIfMissing)
            .expect("create again");
        file_b.write_at(0, &expected_b).expect("write");
        assert_eq!(b.file_bytes("f").expect("b's file"), expected_b);
        assert_eq!(a.file_bytes("f").expect("a's file"), content);
    }

    #[test]
    fn renamed_and_removed_files_free_their_inodes() {
        let disk = SimDisk::new(5);
        let a = disk.open("a", OpenMode::CreateIfMissing).expect("create");
        a.write_at(0, b"x").expect("write");
        disk.rename("a", "a")
            .expect("rename onto itself is a no-op");
        assert_eq!(disk.list().expect("list"), vec!["a".to_string()]);
        disk.rename("a", "b").expect("rename");
        drop(a);
        disk.sync_dir().expect("sync dir");
        disk.remove("b").expect("remove");
        disk.sync_dir().expect("sync dir");
        assert!(disk.list().expect("list").is_empty());
        assert!(
            disk.lock().inodes.is_empty(),
            "nothing refers to the inode any more"
        );
        assert!(disk.remove("b").is_err());
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
