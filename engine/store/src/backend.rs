//! redb's storage backend on top of a [`DiskFile`], so the metadata database runs on the real
//! disk and on the simulated one alike, and sees the simulated one's crashes and faults.

use std::io;
use std::sync::Arc;

use crate::disk::DiskFile;

#[derive(Debug)]
pub(crate) struct DiskBackend {
    file: Arc<dyn DiskFile>,
}

impl DiskBackend {
    pub(crate) fn new(file: Arc<dyn DiskFile>) -> DiskBackend {
        DiskBackend { file }
    }
}

impl redb::StorageBackend for DiskBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.file.read_at(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.file.sync()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.file.write_at(offset, data)
    }
}
