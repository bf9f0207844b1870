//! Writing and reading the small secret files the transport keeps (the inter-appliance key, the
//! identity's private key).
//!
//! A secret file must never exist, even for an instant, with permissions that let another
//! local user read it, and a crash must leave either the old file or the new one, never a torn
//! mix. So the file is created with mode 0600 from the start (not chmod-ed afterwards), written
//! under a temporary name, fsynced, renamed over the old one, and the directory is fsynced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Permission bits a secret file is created with: read and write for the owner only.
pub const SECRET_FILE_MODE: u32 = 0o600;

/// Permission bits a public file (a certificate) is created with.
pub const PUBLIC_FILE_MODE: u32 = 0o644;

/// Why a secret or identity file could not be used. Always the local operator's (or the local
/// machine's) problem, never the peer's.
#[derive(Debug)]
pub enum FileError {
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    /// A secret file that group or other users can read: its content may have leaked, and we
    /// refuse to use it so that the operator notices.
    TooOpen {
        path: PathBuf,
        mode: u32,
    },
    TooLarge {
        path: PathBuf,
        max_bytes: u64,
    },
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileError::Io {
                path,
                action,
                source,
            } => write!(
                f,
                "cannot {action} {}: {source}; check that the path exists and this service may access it",
                path.display()
            ),
            FileError::TooOpen { path, mode } => write!(
                f,
                "secret file {} has mode {mode:04o}, readable by other users; its content may have \
                 leaked: replace the secret, then make the file private (chmod 600)",
                path.display()
            ),
            FileError::TooLarge { path, max_bytes } => write!(
                f,
                "file {} is larger than {max_bytes} bytes, so it is not what it should be; \
                 check the path",
                path.display()
            ),
        }
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FileError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_error<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> FileError + 'a {
    move |source| FileError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// Replaces `path` with `contents` atomically, the new file carrying `mode` from its creation.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
    let file_name = path.file_name().ok_or_else(|| FileError::Io {
        path: path.to_path_buf(),
        action: "write",
        source: io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
    })?;
    let mut temp_name = file_name.to_os_string();
    temp_name.push(".tmp");
    let temp_path = path.with_file_name(temp_name);
    // A temporary file left by a crash is ours and incomplete; create_new below must not trip
    // over it (and must not reuse its possibly wider permissions).
    match fs::remove_file(&temp_path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error(&temp_path, "remove stale temporary file")(error)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp_path)
        .map_err(io_error(&temp_path, "create"))?;
    file.write_all(contents)
        .map_err(io_error(&temp_path, "write"))?;
    file.sync_all().map_err(io_error(&temp_path, "fsync"))?;
    drop(file);
    fs::rename(&temp_path, path).map_err(io_error(path, "rename temporary file onto"))?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error(dir, "fsync directory"))?;
    Ok(())
}

/// Reads a whole file of at most `max_bytes`; when `secret`, refuses a file other users can read.
pub fn read_limited(path: &Path, max_bytes: u64, secret: bool) -> Result<Vec<u8>, FileError> {
    let file = File::open(path).map_err(io_error(path, "open"))?;
    let metadata = file.metadata().map_err(io_error(path, "inspect"))?;
    let mode = metadata.mode() & 0o7777;
    if secret && mode & 0o077 != 0 {
        return Err(FileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    if metadata.len() > max_bytes {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            max_bytes,
        });
    }
    let mut contents = Vec::new();
    // The length check above can race with a writer; take() keeps the bound regardless.
    file.take(max_bytes + 1)
        .read_to_end(&mut contents)
        .map_err(io_error(path, "read"))?;
    if contents.len() as u64 > max_bytes {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            max_bytes,
        });
    }
    Ok(contents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dyad-files-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("the temp dir is writable");
        dir
    }

    #[test]
    fn secret_files_are_created_0600_and_replaced_whole() {
        let dir = temp_dir("secret");
        let path = dir.join("secret");
        write_atomically(&path, b"first", SECRET_FILE_MODE).expect("write");
        let mode = fs::metadata(&path).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        write_atomically(&path, b"second", SECRET_FILE_MODE).expect("replace");
        assert_eq!(read_limited(&path, 64, true).expect("read"), b"second");
        assert!(!dir.join("secret.tmp").exists());
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_secret_readable_by_others_is_refused() {
        let dir = temp_dir("open");
        let path = dir.join("secret");
        write_atomically(&path, b"x", 0o644).expect("write");
        // The umask may have narrowed the mode; widen it explicitly for the test.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            read_limited(&path, 64, true),
            Err(FileError::TooOpen { mode: 0o644, .. })
        ));
        assert!(read_limited(&path, 64, false).is_ok());
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn an_oversized_file_is_refused() {
        let dir = temp_dir("large");
        let path = dir.join("big");
        write_atomically(&path, &[b'a'; 100], SECRET_FILE_MODE).expect("write");
        assert!(matches!(
            read_limited(&path, 10, true),
            Err(FileError::TooLarge { .. })
        ));
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
