//! Issue 16, as an operator meets it: a recording damaged on an appliance that no peer can
//! repair (standalone). `session verify` must keep it listed as damaged, not make it vanish;
//! `session list`, `--json` and `status` show it; `session damaged export` saves its bytes as
//! they are and `forget` (only with `--yes`) removes it. Real `dyad` processes on a temporary
//! folder; the commands answer offline (no `dyad serve`), as the operator guide says they do.

mod common;

use std::path::Path;

use serde_json::Value;

use common::{keygen, path_str, write_recording, Appliance};

fn damage_one_byte(store: &Path, offset: u64) -> String {
    let name = std::fs::read_dir(store)
        .expect("store folder")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("rec-"))
        .expect("a recording file");
    let path = store.join(&name);
    let mut bytes = std::fs::read(&path).expect("read the recording");
    bytes[offset as usize] ^= 0x40;
    std::fs::write(&path, &bytes).expect("write it back damaged");
    name
}

#[test]
fn verify_on_a_standalone_appliance_keeps_the_damaged_recording_listed_and_exportable() {
    let root = tempfile::tempdir().expect("temporary folder");
    let key = root.path().join("pair.key");
    keygen(&key);
    let appliance = Appliance::init(root.path(), "solo", &key, &[]);
    let source = root.path().join("session.bin");
    let size = 3 * 1024 * 1024 + 77;
    write_recording(&source, size, 7);
    appliance
        .run(&["session", "import"], &["--file", path_str(&source)])
        .ok("dyad session import");
    let listed = appliance.session_list();
    assert_eq!(listed.lines().count(), 1, "{listed}");
    let session = listed.split_whitespace().next().expect("an id").to_string();
    damage_one_byte(&appliance.dir.join("store"), 2 * 1024 * 1024 + 5);

    let verify = appliance.run(&["session", "verify"], &[]);
    let stderr = verify.failed("dyad session verify on a damaged recording");
    assert!(stderr.contains("damaged"), "{stderr}");
    assert!(!stderr.contains("withdrawn"), "{stderr}");

    let listed = appliance.session_list();
    assert!(
        listed.contains(&session) && listed.contains("DAMAGED"),
        "the only copy vanished from session list:\n{listed}"
    );
    let json: Value = serde_json::from_str(
        &appliance
            .run(&["session", "list"], &["--json"])
            .ok("dyad session list --json")
            .stdout,
    )
    .expect("JSON");
    assert_eq!(json[0]["state"], "damaged", "{json}");
    assert_eq!(json[0]["bad_chunks"], serde_json::json!([2]), "{json}");
    let status = appliance.status();
    assert_eq!(status["recordings"]["damaged"], 1, "{status}");
    assert_eq!(status["recordings"]["complete"], 0, "{status}");
    let damaged = appliance
        .run(&["session", "damaged", "list"], &[])
        .ok("dyad session damaged list")
        .stdout;
    assert!(
        damaged.contains(&session) && damaged.contains("1 of 4 chunks bad (2)"),
        "{damaged}"
    );

    let out = root.path().join("saved.bin");
    let export = appliance
        .run(
            &["session", "damaged", "export"],
            &["--session", &session, "--out", path_str(&out)],
        )
        .ok("dyad session damaged export")
        .stdout;
    assert!(
        export.contains("do not verify (as they are): [2]"),
        "{export}"
    );
    let mut expected = std::fs::read(&source).expect("source");
    expected[2 * 1024 * 1024 + 5] ^= 0x40;
    assert!(
        std::fs::read(&out).expect("export") == expected,
        "the export is not the bytes as they are"
    );
    let again = appliance.run(
        &["session", "damaged", "export"],
        &["--session", &session, "--out", path_str(&out)],
    );
    assert!(
        again
            .failed("export over an existing file")
            .contains("new file"),
        "an export overwrote a file"
    );

    let refused = appliance.run(&["session", "damaged", "forget"], &["--session", &session]);
    let stderr = refused.failed("forget without --yes");
    assert!(stderr.contains("--yes"), "{stderr}");
    assert!(appliance.session_list().contains("DAMAGED"));
    let bad_id = appliance.run(
        &["session", "damaged", "forget"],
        &["--session", "not-an-id", "--yes"],
    );
    assert!(bad_id
        .failed("forget a malformed id")
        .contains("<node id>#<number>"));
    appliance
        .run(
            &["session", "damaged", "forget"],
            &["--session", &session, "--yes"],
        )
        .ok("dyad session damaged forget --yes");
    assert_eq!(appliance.session_list().trim(), "", "forgotten");
    assert_eq!(appliance.status()["recordings"]["damaged"], 0);
}
