//! The real disk: files in one directory, reached with positional reads and writes.
//!
//! Positional I/O (`pread`/`pwrite`) lets the metadata database and the recording store share
//! one open file handle between threads without a seek position to fight over. A received
//! recording's synced bytes are dropped from the page cache (`posix_fadvise(DONTNEED)`): a backup
//! rarely reads them back soon, and the freed pages serve the next chunks.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{check_file_name, Disk, DiskFile, OpenMode};

/// Files under a root directory on the machine's file system.
#[derive(Debug)]
pub struct RealDisk {
    root: PathBuf,
}

impl RealDisk {
    /// Uses `root` as the data folder, creating it when it does not exist.
    pub fn new(root: impl AsRef<Path>) -> io::Result<RealDisk> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(&root)?;
        Ok(RealDisk { root })
    }

    /// The data folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        check_file_name(name)?;
        Ok(self.root.join(name))
    }
}

impl Disk for RealDisk {
    fn open(&self, name: &str, mode: OpenMode) -> io::Result<Arc<dyn DiskFile>> {
        let path = self.path(name)?;
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        match mode {
            OpenMode::Existing => {}
            OpenMode::CreateIfMissing => {
                options.create(true);
            }
            OpenMode::CreateTruncate => {
                options.create(true).truncate(true);
            }
        }
        let file = options.open(path)?;
        Ok(Arc::new(RealFile { file }))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path(from)?, self.path(to)?)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.path(name)?)
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            // Names the stores cannot have written (not UTF-8, odd characters) are left alone.
            if let Some(name) = entry.file_name().to_str() {
                if check_file_name(name).is_ok() {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.root)?.sync_all()
    }
}

#[derive(Debug)]
struct RealFile {
    file: File,
}

impl DiskFile for RealFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(out, offset)
    }

    fn read_vec_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        // Straight into the buffer's spare capacity: a buffer read whole need not be zeroed
        // first (which cost a pass over every chunk served).
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let at = offset + out.len() as u64;
            let read = rustix::io::pread(&self.file, rustix::buffer::spare_capacity(&mut out), at)
                .map_err(io::Error::from)?;
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ends before the bytes asked for",
                ));
            }
        }
        out.truncate(len);
        Ok(out)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn drop_cached(&self) {
        // Only advice: a failure changes nothing that matters, so it is ignored.
        let _ = rustix::fs::fadvise(&self.file, 0, None, rustix::fs::Advice::DontNeed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_and_rename_replaces() {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let disk = RealDisk::new(dir.path()).expect("root exists");
        let a = disk.open("a", OpenMode::CreateIfMissing).expect("create a");
        a.write_at(3, b"xyz").expect("write");
        assert_eq!(a.len().expect("len"), 6);
        let mut out = [9u8; 6];
        a.read_at(0, &mut out).expect("read");
        assert_eq!(&out, b"\0\0\0xyz");
        assert_eq!(a.read_vec_at(2, 4).expect("read"), b"\0xyz");
        assert_eq!(
            a.read_vec_at(4, 3).expect_err("past the end").kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert!(a.read_at(4, &mut out).is_err());
        a.sync().expect("sync");
        disk.open("b", OpenMode::CreateIfMissing).expect("create b");
        disk.rename("a", "b").expect("rename");
        disk.sync_dir().expect("sync dir");
        assert_eq!(disk.list().expect("list"), vec!["b".to_string()]);
        assert!(disk.open("a", OpenMode::Existing).is_err());
        disk.remove("b").expect("remove");
        assert!(disk.list().expect("list").is_empty());
    }
}
