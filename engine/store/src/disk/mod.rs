//! The one small door between Dyad's stores and a disk.
//!
//! Everything the stores persist (the metadata database and the recording files) goes through
//! [`Disk`], a flat folder of named files. The tokio driver uses [`real::RealDisk`] (plain
//! `std::fs` under a root directory); the engine's tests and the simulator use
//! [`sim::SimDisk`], which keeps unsynced writes apart from synced ones so that a simulated
//! power loss can drop them, and which injects I/O errors, a full disk and flipped bits. Both
//! run the very same store code.

use std::fmt;
use std::io;
use std::sync::Arc;

pub mod real;
#[cfg(any(test, feature = "sim"))]
pub mod sim;

/// Longest file name the stores use; names are checked against it before use.
pub const MAX_FILE_NAME_BYTES: usize = 128;

/// How [`Disk::open`] treats a file that does or does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// The file must exist.
    Existing,
    /// Open the file, creating it empty when it does not exist.
    CreateIfMissing,
    /// Create the file, truncating it to zero length when it exists.
    CreateTruncate,
}

/// A folder of named files. Names are flat (no directories), checked by [`check_file_name`].
///
/// Durability follows POSIX: data written to a file is durable after [`DiskFile::sync`];
/// creating, renaming or removing a name is durable after [`Disk::sync_dir`].
pub trait Disk: Send + Sync + fmt::Debug + 'static {
    /// Opens (or creates) the file `name`.
    fn open(&self, name: &str, mode: OpenMode) -> io::Result<Arc<dyn DiskFile>>;
    /// Atomically gives the file `from` the name `to`, replacing any file named `to`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes the name `name`. Removing a missing name is an error of kind `NotFound`.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// The names of all files in the folder, sorted.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Makes every create, rename and remove so far durable.
    fn sync_dir(&self) -> io::Result<()>;
}

/// An open file of a [`Disk`].
pub trait DiskFile: Send + Sync + fmt::Debug {
    /// The current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file holds no bytes.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Fills `out` from `offset`; reading past the end is an error of kind `UnexpectedEof`.
    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()>;
    /// Reads `len` bytes from `offset` into a new buffer, like [`DiskFile::read_at`].
    fn read_vec_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut out = vec![0u8; len];
        self.read_at(offset, &mut out)?;
        Ok(out)
    }
    /// Writes all of `data` at `offset`, extending the file (with zeros before it) as needed.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Truncates or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data and length durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
    /// A hint that the file's bytes will not be read again soon: the system may free their
    /// cache (synced bytes) and start writing the rest. Never changes the file's content or
    /// what is durable; the default does nothing.
    fn drop_cached(&self) {}
}

/// Refuses names that could leave the data folder or that the stores never produce.
pub fn check_file_name(name: &str) -> io::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_FILE_NAME_BYTES
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid file name {name:?} for the data folder (use [A-Za-z0-9._-], at most {MAX_FILE_NAME_BYTES} bytes)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_escape_the_folder() {
        assert!(check_file_name("meta.redb").is_ok());
        for bad in ["", ".", "..", "a/b", "../x", "a\0b", "é"] {
            assert!(check_file_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_file_name(&"a".repeat(MAX_FILE_NAME_BYTES + 1)).is_err());
    }
}
