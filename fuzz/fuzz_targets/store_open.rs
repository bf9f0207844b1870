//! A data folder whose metadata database holds arbitrary bytes (a damaged or hostile file):
//! opening the store must fail cleanly or open a usable store, never panic.
#![no_main]

use std::sync::Arc;

use dyad_store::disk::sim::SimDisk;
use dyad_store::disk::Disk;
use dyad_store::{Store, META_FILE_NAME};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let disk = SimDisk::new(0);
    disk.put_file(META_FILE_NAME, data).expect("a valid name");
    if let Ok(store) = Store::open(Arc::clone(&disk) as Arc<dyn Disk>) {
        let _ = store.catalog_list();
        let _ = store.config_snapshot();
        let _ = store.list_partials();
        let _ = store.verify_all();
    }
});
