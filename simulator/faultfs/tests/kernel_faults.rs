//! The filesystem through the real kernel: plain I/O passes through to the backing folder,
//! and the rules make `read(2)` and `fsync(2)` fail with `EIO` exactly where they say.
//! Needs root and `/dev/fuse`; without them it says why and skips, unless
//! `DYAD_REQUIRE_FUSE` is set (CI), where it fails instead.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;

use dyad_faultfs::{mount, unavailable, Faults};

const EIO: i32 = 5;

#[test]
fn reads_and_fsyncs_fail_where_the_rules_say_and_nowhere_else() {
    if let Some(why) = unavailable() {
        assert!(
            std::env::var_os("DYAD_REQUIRE_FUSE").is_none(),
            "FUSE is required here but unavailable: {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let backing = tempfile::tempdir().expect("backing folder");
    let mountpoint = tempfile::tempdir().expect("mount point");
    let mounted = mount(backing.path(), mountpoint.path(), Faults::default()).expect("mount");
    let faults = mounted.faults.clone();
    let path = mountpoint.path().join("part-1.tmp");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("create through FUSE");
    file.write_all(&vec![7u8; 64 * 1024]).expect("write");
    file.sync_data().expect("fsync");
    assert_eq!(
        std::fs::read(backing.path().join("part-1.tmp"))
            .expect("backing")
            .len(),
        64 * 1024,
        "writes pass through"
    );
    file.set_len(100 * 1024).expect("extend");
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), 100 * 1024);

    faults.fail_reads("part-*", Some((4096, 8192)));
    let mut buffer = vec![0u8; 4096];
    file.read_exact_at(&mut buffer, 0)
        .expect("before the bad range");
    let error = file
        .read_exact_at(&mut buffer, 4096)
        .expect_err("the bad range");
    assert_eq!(error.raw_os_error(), Some(EIO));
    file.read_exact_at(&mut buffer, 16 * 1024)
        .expect("after it");

    faults.fail_fsyncs("part-*", true);
    file.write_all_at(b"x", 0).expect("write");
    let error = file.sync_data().expect_err("the failed writeback");
    assert_eq!(error.raw_os_error(), Some(EIO));
    file.sync_data().expect("reported once");

    std::fs::rename(&path, mountpoint.path().join("rec-1.dat")).expect("rename");
    let renamed = OpenOptions::new()
        .read(true)
        .open(mountpoint.path().join("rec-1.dat"))
        .expect("open the new name");
    renamed
        .read_exact_at(&mut buffer, 4096)
        .expect("the rule named the old name only");
    let names: Vec<String> = std::fs::read_dir(mountpoint.path())
        .expect("list")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, vec!["rec-1.dat".to_string()]);
    let folder = std::fs::File::open(mountpoint.path()).expect("open the folder");
    folder.sync_all().expect("fsync the folder");
    std::fs::remove_file(mountpoint.path().join("rec-1.dat")).expect("unlink");
    assert!(std::fs::read_dir(backing.path())
        .expect("list")
        .next()
        .is_none());
    let counts = faults.counts();
    assert_eq!((counts.reads_failed, counts.fsyncs_failed), (1, 1));
    drop((file, renamed, folder));
    mounted.unmount().expect("unmount");
}
