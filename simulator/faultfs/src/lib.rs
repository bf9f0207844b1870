//! A passthrough FUSE filesystem that fails on demand, so that real-process tests see storage
//! faults as the kernel delivers them: `EIO` from `read(2)` on chosen byte ranges of chosen
//! files (a bad sector) and from `fsync(2)`/`fdatasync(2)` (a failed writeback), while every
//! other operation goes through to a backing folder unchanged.
//!
//! It serves one flat folder (Dyad's store folder holds no subfolders), which keeps it small:
//! inodes are file names, handles are open files of the backing folder. All I/O bypasses the
//! kernel's page cache (`FOPEN_DIRECT_IO`), so a read the rules fail always reaches us.
//! Mounting needs root and `/dev/fuse` (fuser then calls `mount(2)` itself; without root it
//! would need `fusermount3`, package `fuse3`).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};

/// Attributes are never cached by the kernel: every look sees the backing folder as it is.
const ATTR_TTL: Duration = Duration::ZERO;

/// Which operations fail, changed at any time through [`Faults`].
#[derive(Debug, Default)]
struct Rules {
    /// Reads of files whose name matches, touching `[start, end)` (all of it when `None`).
    read_errors: Vec<(String, Option<(u64, u64)>)>,
    /// Fsyncs of files whose name matches; `once` rules are removed when they fire.
    fsync_errors: Vec<(String, bool)>,
    reads_failed: u64,
    fsyncs_failed: u64,
}

/// The handle a test holds to change the faults of a mounted [`FaultFs`].
#[derive(Clone, Debug, Default)]
pub struct Faults {
    rules: Arc<Mutex<Rules>>,
}

/// What has been injected so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub reads_failed: u64,
    pub fsyncs_failed: u64,
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, Rules> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads of files named like `pattern` (`*` matches any run of characters) fail with
    /// `EIO` where they touch `range` (`None`: anywhere), until [`Faults::clear`].
    pub fn fail_reads(&self, pattern: &str, range: Option<(u64, u64)>) {
        self.lock().read_errors.push((pattern.to_string(), range));
    }

    /// The next fsync of a file named like `pattern` fails with `EIO` (every one, unless
    /// `once`), as a failed writeback does.
    pub fn fail_fsyncs(&self, pattern: &str, once: bool) {
        self.lock().fsync_errors.push((pattern.to_string(), once));
    }

    /// Removes every rule.
    pub fn clear(&self) {
        let mut rules = self.lock();
        rules.read_errors.clear();
        rules.fsync_errors.clear();
    }

    pub fn counts(&self) -> FaultCounts {
        let rules = self.lock();
        FaultCounts {
            reads_failed: rules.reads_failed,
            fsyncs_failed: rules.fsyncs_failed,
        }
    }

    fn read_fails(&self, name: &OsStr, offset: u64, len: u64) -> bool {
        let mut rules = self.lock();
        let end = offset.saturating_add(len);
        let fails = rules.read_errors.iter().any(|(pattern, range)| {
            matches(pattern, name.as_bytes())
                && range.is_none_or(|(start, stop)| offset < stop && start < end)
        });
        if fails {
            rules.reads_failed += 1;
        }
        fails
    }

    fn fsync_fails(&self, name: &OsStr) -> bool {
        let mut rules = self.lock();
        let Some(position) = rules
            .fsync_errors
            .iter()
            .position(|(pattern, _)| matches(pattern, name.as_bytes()))
        else {
            return false;
        };
        if rules.fsync_errors[position].1 {
            rules.fsync_errors.remove(position);
        }
        rules.fsyncs_failed += 1;
        true
    }
}

/// Glob matching with `*` only.
pub fn matches(pattern: &str, name: &[u8]) -> bool {
    fn go(pattern: &[u8], name: &[u8]) -> bool {
        match pattern.split_first() {
            None => name.is_empty(),
            Some((b'*', rest)) => (0..=name.len()).any(|skip| go(rest, &name[skip..])),
            Some((byte, rest)) => name.first() == Some(byte) && go(rest, &name[1..]),
        }
    }
    go(pattern.as_bytes(), name)
}

/// Names ↔ inode numbers, and open handles.
#[derive(Default)]
struct Table {
    inodes: BTreeMap<OsString, u64>,
    names: HashMap<u64, OsString>,
    next_inode: u64,
    handles: HashMap<u64, (File, OsString)>,
    next_handle: u64,
}

impl Table {
    fn inode(&mut self, name: &OsStr) -> u64 {
        if let Some(inode) = self.inodes.get(name) {
            return *inode;
        }
        // Inode 1 is the folder itself.
        self.next_inode = self.next_inode.max(1) + 1;
        self.inodes.insert(name.to_os_string(), self.next_inode);
        self.names.insert(self.next_inode, name.to_os_string());
        self.next_inode
    }

    fn forget_name(&mut self, name: &OsStr) {
        if let Some(inode) = self.inodes.remove(name) {
            self.names.remove(&inode);
        }
    }
}

/// The filesystem: a passthrough of `backing` with [`Faults`].
pub struct FaultFs {
    backing: PathBuf,
    faults: Faults,
    table: Mutex<Table>,
}

fn errno(error: &io::Error) -> Errno {
    Errno::from_i32(error.raw_os_error().unwrap_or(libc_eio()))
}

fn libc_eio() -> i32 {
    rustix::io::Errno::IO.raw_os_error()
}

fn time(seconds: i64, nanos: i64) -> SystemTime {
    let since = Duration::new(seconds.unsigned_abs(), nanos.clamp(0, 999_999_999) as u32);
    if seconds >= 0 {
        UNIX_EPOCH + since
    } else {
        UNIX_EPOCH - since
    }
}

fn attr(inode: u64, metadata: &Metadata) -> FileAttr {
    let kind = if metadata.is_dir() {
        FileType::Directory
    } else {
        FileType::RegularFile
    };
    FileAttr {
        ino: INodeNo(inode),
        size: metadata.len(),
        blocks: metadata.blocks(),
        atime: time(metadata.atime(), metadata.atime_nsec()),
        mtime: time(metadata.mtime(), metadata.mtime_nsec()),
        ctime: time(metadata.ctime(), metadata.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind,
        perm: (metadata.mode() & 0o7777) as u16,
        nlink: metadata.nlink() as u32,
        uid: metadata.uid(),
        gid: metadata.gid(),
        rdev: metadata.rdev() as u32,
        blksize: metadata.blksize() as u32,
        flags: 0,
    }
}

impl FaultFs {
    pub fn new(backing: &Path, faults: Faults) -> FaultFs {
        FaultFs {
            backing: backing.to_path_buf(),
            faults,
            table: Mutex::new(Table::default()),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The backing path of a name in the folder; `None` for anything that is not one plain
    /// name (the folder is flat).
    fn path(&self, name: &OsStr) -> Option<PathBuf> {
        let bytes = name.as_bytes();
        let plain = !bytes.is_empty() && bytes != b"." && bytes != b".." && !bytes.contains(&b'/');
        plain.then(|| self.backing.join(name))
    }

    fn name_of(&self, inode: INodeNo) -> Option<OsString> {
        self.table().names.get(&inode.0).cloned()
    }

    fn metadata_of(&self, inode: INodeNo) -> Result<(u64, Metadata), Errno> {
        if inode == INodeNo::ROOT {
            let metadata = std::fs::metadata(&self.backing).map_err(|e| errno(&e))?;
            return Ok((1, metadata));
        }
        let name = self.name_of(inode).ok_or(Errno::ENOENT)?;
        let path = self.path(&name).ok_or(Errno::ENOENT)?;
        let metadata = std::fs::symlink_metadata(path).map_err(|e| errno(&e))?;
        Ok((inode.0, metadata))
    }

    fn open_handle(&self, file: File, name: OsString) -> u64 {
        let mut table = self.table();
        table.next_handle += 1;
        let handle = table.next_handle;
        table.handles.insert(handle, (file, name));
        handle
    }

    /// Runs `work` on an open handle's file (a clone of it, so no lock is held over I/O).
    fn with_handle<T>(
        &self,
        handle: FileHandle,
        work: impl FnOnce(&File, &OsStr) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let (file, name) = {
            let table = self.table();
            let (file, name) = table.handles.get(&handle.0).ok_or(Errno::EBADF)?;
            (file.try_clone().map_err(|e| errno(&e))?, name.clone())
        };
        work(&file, &name)
    }
}

fn open_options(flags: i32) -> OpenOptions {
    let mut options = OpenOptions::new();
    match flags & rustix::fs::OFlags::ACCMODE.bits() as i32 {
        mode if mode == rustix::fs::OFlags::WRONLY.bits() as i32 => options.write(true),
        mode if mode == rustix::fs::OFlags::RDWR.bits() as i32 => options.read(true).write(true),
        _ => options.read(true),
    };
    if flags & rustix::fs::OFlags::APPEND.bits() as i32 != 0 {
        options.append(true);
    }
    if flags & rustix::fs::OFlags::TRUNC.bits() as i32 != 0 {
        options.truncate(true);
    }
    options
}

impl Filesystem for FaultFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(path) = self.path(name).filter(|_| parent == INodeNo::ROOT) else {
            return reply.error(Errno::ENOENT);
        };
        match std::fs::symlink_metadata(path) {
            Ok(metadata) => {
                let inode = self.table().inode(name);
                reply.entry(&ATTR_TTL, &attr(inode, &metadata), Generation(0));
            }
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.metadata_of(ino) {
            Ok((inode, metadata)) => reply.attr(&ATTR_TTL, &attr(inode, &metadata)),
            Err(error) => reply.error(error),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let path = match self.name_of(ino).and_then(|name| self.path(&name)) {
            Some(path) => path,
            None if ino == INodeNo::ROOT => self.backing.clone(),
            None => return reply.error(Errno::ENOENT),
        };
        let result = (|| -> Result<(), Errno> {
            if let Some(size) = size {
                match fh {
                    Some(fh) => {
                        self.with_handle(fh, |file, _| file.set_len(size).map_err(|e| errno(&e)))?
                    }
                    None => OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|file| file.set_len(size))
                        .map_err(|e| errno(&e))?,
                }
            }
            if let Some(mode) = mode {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(|e| errno(&e))?;
            }
            Ok(())
        })();
        match result.and_then(|()| self.metadata_of(ino)) {
            Ok((inode, metadata)) => reply.attr(&ATTR_TTL, &attr(inode, &metadata)),
            Err(error) => reply.error(error),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(path) = self.path(name).filter(|_| parent == INodeNo::ROOT) else {
            return reply.error(Errno::ENOENT);
        };
        match std::fs::remove_file(path) {
            Ok(()) => {
                self.table().forget_name(name);
                reply.ok();
            }
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (Some(from), Some(to)) = (self.path(name), self.path(newname)) else {
            return reply.error(Errno::ENOENT);
        };
        if parent != INodeNo::ROOT || newparent != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        match std::fs::rename(from, to) {
            Ok(()) => {
                let mut table = self.table();
                table.forget_name(newname);
                if let Some(inode) = table.inodes.remove(name) {
                    table.inodes.insert(newname.to_os_string(), inode);
                    table.names.insert(inode, newname.to_os_string());
                }
                for (_, open_name) in table.handles.values_mut() {
                    if open_name == name {
                        *open_name = newname.to_os_string();
                    }
                }
                reply.ok();
            }
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(name) = self.name_of(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let Some(path) = self.path(&name) else {
            return reply.error(Errno::ENOENT);
        };
        match open_options(flags.0).open(path) {
            Ok(file) => {
                let handle = self.open_handle(file, name);
                reply.opened(FileHandle(handle), FopenFlags::FOPEN_DIRECT_IO);
            }
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let Some(path) = self.path(name).filter(|_| parent == INodeNo::ROOT) else {
            return reply.error(Errno::ENOENT);
        };
        let mut options = open_options(flags);
        options.read(true).write(true).mode(mode & !umask & 0o7777);
        if flags & rustix::fs::OFlags::EXCL.bits() as i32 != 0 {
            options.create_new(true);
        } else {
            options.create(true);
        }
        let opened = options.open(&path).and_then(|file| {
            let metadata = file.metadata()?;
            Ok((file, metadata))
        });
        match opened {
            Ok((file, metadata)) => {
                let inode = self.table().inode(name);
                let handle = self.open_handle(file, name.to_os_string());
                reply.created(
                    &ATTR_TTL,
                    &attr(inode, &metadata),
                    Generation(0),
                    FileHandle(handle),
                    FopenFlags::FOPEN_DIRECT_IO,
                );
            }
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let result = self.with_handle(fh, |file, name| {
            if self.faults.read_fails(name, offset, u64::from(size)) {
                return Err(Errno::EIO);
            }
            let mut buffer = vec![0u8; size as usize];
            let mut filled = 0;
            while filled < buffer.len() {
                match file.read_at(&mut buffer[filled..], offset + filled as u64) {
                    Ok(0) => break,
                    Ok(read) => filled += read,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(errno(&error)),
                }
            }
            buffer.truncate(filled);
            Ok(buffer)
        });
        match result {
            Ok(data) => reply.data(&data),
            Err(error) => reply.error(error),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let result = self.with_handle(fh, |file, _| {
            file.write_all_at(data, offset).map_err(|e| errno(&e))
        });
        match result {
            Ok(()) => reply.written(data.len() as u32),
            Err(error) => reply.error(error),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.table().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let result = self.with_handle(fh, |file, name| {
            if self.faults.fsync_fails(name) {
                return Err(Errno::EIO);
            }
            if datasync {
                file.sync_data()
            } else {
                file.sync_all()
            }
            .map_err(|e| errno(&e))
        });
        match result {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let mut names: Vec<OsString> = match std::fs::read_dir(&self.backing) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|entry| entry.file_name())
                .collect(),
            Err(error) => return reply.error(errno(&error)),
        };
        names.sort();
        let mut entries = vec![
            (1, FileType::Directory, OsString::from(".")),
            (1, FileType::Directory, OsString::from("..")),
        ];
        {
            let mut table = self.table();
            for name in names {
                let inode = table.inode(&name);
                entries.push((inode, FileType::RegularFile, name));
            }
        }
        for (index, (inode, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(inode), index as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match File::open(&self.backing).and_then(|folder| folder.sync_all()) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match rustix::fs::statvfs(&self.backing) {
            Ok(stat) => reply.statfs(
                stat.f_blocks,
                stat.f_bfree,
                stat.f_bavail,
                stat.f_files,
                stat.f_ffree,
                stat.f_bsize as u32,
                stat.f_namemax as u32,
                stat.f_frsize as u32,
            ),
            Err(error) => reply.error(Errno::from_i32(error.raw_os_error())),
        }
    }
}

/// A mounted [`FaultFs`]; unmounted when dropped.
pub struct Mounted {
    session: Option<BackgroundSession>,
    pub faults: Faults,
    pub mountpoint: PathBuf,
}

impl Mounted {
    /// Unmounts, waiting for the session to end.
    pub fn unmount(mut self) -> io::Result<()> {
        match self.session.take() {
            Some(session) => session.umount_and_join(),
            None => Ok(()),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}

/// Why FUSE cannot be used here, if it cannot: not root, or no `/dev/fuse`. (As root, fuser
/// opens `/dev/fuse` and calls `mount(2)` itself; `fusermount3` is not needed.)
pub fn unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not running as root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is absent".into());
    }
    None
}

/// Mounts a passthrough of `backing` at `mountpoint` (both existing folders), served on a
/// background thread, with `faults` deciding what fails.
pub fn mount(backing: &Path, mountpoint: &Path, faults: Faults) -> io::Result<Mounted> {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("dyad-faultfs".into()),
        MountOption::DefaultPermissions,
    ];
    config.acl = fuser::SessionACL::All;
    let filesystem = FaultFs::new(backing, faults.clone());
    let session = fuser::spawn_mount(filesystem, mountpoint, &config)?;
    Ok(Mounted {
        session: Some(session),
        faults,
        mountpoint: mountpoint.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_with_stars() {
        assert!(matches("rec-*", b"rec-00-1.dat"));
        assert!(matches("*.tmp", b"part-1.tmp"));
        assert!(matches("meta.redb", b"meta.redb"));
        assert!(!matches("rec-*", b"part-1.tmp"));
        assert!(matches("*", b""));
        assert!(!matches("a*b", b"ac"));
    }
}
